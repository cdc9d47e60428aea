"""One story from the grammar, with the probe sites the generator knows the answers to.

A story is a fixed plot (introduction, the hero's object, a habit, meeting a friend, a choice
between two objects, a goal, an obstacle, a resolution or a bad ending, the end) with optional
parts: dialogue, a twist, a moral. Everything random comes from one ``random.Random`` seeded
by the story's content seed, so a story is a pure function of (config, seed).

While writing, the generator records *sites*: a position, the continuation the story has there
and a corrupted continuation of the same length that breaks one rule (``Site.kind``):

    article      a/an before the next word        (agreement)
    number       verb number after its subject    (agreement)
    tense        the story's tense on a verb      (agreement)
    pronoun      a sentence-initial pronoun refers to the previous sentence's subject; the
                 site is taken only where the friend, named last, has the other pronoun
    entity       the friend's name where only the friend fits ("in the end , HERO and" /
                 the hero's "thank you ,"), against the hero's name: both are in context, so
                 the model must track who is who, not copy any name
    consistency  the object the plot follows, at its first mention after both characters'
                 objects were introduced ("... play with the ADJ" -> N), against the other
                 object: each was named once, only one after ADJ
    negation     "not the A N but the B N": B against A

The rules are stated once more, independently, in :mod:`groklab.tasks.story_check`, which the
tests run on every story and every corrupted member.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from groklab.tasks.story_grammar import PRONOUNS, Lexicon, Verb, article, plural

SKILL_OF = {"article": "agreement", "number": "agreement", "tense": "agreement",
            "pronoun": "pronoun", "entity": "entity", "consistency": "consistency",
            "negation": "negation"}
MORALS = ["sharing is good", "friends help each other", "it is good to be kind",
          "you should never give up", "it is important to be patient"]
OBSTACLES = ["be stuck in a tall tree", "fall into the lake", "fly over the wall",
             "be under a big rock", "roll into the river"]
# words the templates write that are no open-class word (the tokenizer adds them)
LITERALS = sorted(set("""once upon a time , there named every day one to the and at two
not but then very together back could can . ! " in end that suddenly big bird away say
thank you oh no wow i like your hello stuck tall tree into lake over wall under rock river
sad happy with an""".split()) | {w for m in MORALS for w in m.split()}
                  | {w for o in OBSTACLES for w in o.split()[1:]})


@dataclass(frozen=True)
class Site:
    pos: int  # index in the story's tokens where the continuation starts
    kind: str
    good: tuple[str, ...]
    bad: tuple[str, ...]


@dataclass
class Story:
    tokens: list[str] = field(default_factory=lambda: ["<s>"])
    sites: list[Site] = field(default_factory=list)
    hero: str = ""
    obj: str = ""
    parts: int = 0  # optional plot parts present (the curriculum's complexity)

    def add(self, text: str) -> None:
        self.tokens.extend(text.split())

    def site(self, kind: str, good, bad) -> None:
        good, bad = tuple(good), tuple(bad)
        if good != bad:
            self.sites.append(Site(len(self.tokens), kind, good, bad))

    def put(self, kind: str, good, bad) -> None:
        """Record a site here, then write its good continuation."""
        self.site(kind, good, bad)
        self.tokens.extend(good)


class Writer:
    def __init__(self, lex: Lexicon, tense: str, rng: random.Random):
        self.lex, self.tense, self.rng = lex, tense, rng
        self.other = "present" if tense == "past" else "past"
        self.s = Story()

    def verb(self, lemma: str | Verb, plural_subject: bool) -> None:
        v = lemma if isinstance(lemma, Verb) else self.lex.plot_verbs[lemma]
        good = v.form(self.tense, plural_subject)
        self.s.site("number", [good], [v.form(self.tense, not plural_subject)])
        self.s.put("tense", [good], [v.form(self.other, plural_subject)])

    def indefinite(self, adj: str, noun: str) -> None:
        art = article(adj)
        self.s.put("article", [art, adj], ["an" if art == "a" else "a", adj])
        self.s.add(noun)


def write_story(lex: Lexicon, tense: str, rng: random.Random, features: dict[str, float]
                ) -> Story:
    """One story; ``features`` maps dialogue/twist/moral/bad_ending to their probabilities."""
    w = Writer(lex, tense, rng)
    s, r = w.s, rng
    names = sorted(lex.names)
    hero = r.choice(names)
    friend = r.choice([n for n in names if n != hero])
    gh, gf = lex.names[hero], lex.names[friend]
    ph, poss = PRONOUNS[gh]
    they_h = gh == "n"
    obj, fobj, obj2 = r.sample(lex.objects, 3)
    oa, fa, a1, a2 = r.sample(lex.obj_adj, 4)
    # the plot follows the hero's or the friend's object: neither position nor frequency
    # says which, only the adjective bound to it
    pa, pobj = r.choice([(oa, obj), (fa, fobj)])
    other = fobj if pobj == obj else obj
    s.hero, s.obj = hero, obj
    dialogue, twist, moral, bad_end = (r.random() < features[k] for k in
                                       ("dialogue", "twist", "moral", "bad_ending"))
    s.parts = int(dialogue) + int(twist) + int(moral) + int(bad_end)

    s.add("once upon a time , there")
    w.verb("be", False)
    w.indefinite(r.choice(lex.char_adj), r.choice(lex.kinds[gh]))
    s.add(f"named {hero} . {hero}")
    w.verb("have", False)
    w.indefinite(oa, obj)
    s.add(f". {ph}")
    w.verb(r.choice(lex.activities), they_h)
    s.add(f"every day . one day , {hero}")
    w.verb("go", False)
    s.add(f"to the {r.choice(lex.places)} and")
    w.verb("meet", False)
    w.indefinite(r.choice(lex.char_adj), r.choice(lex.kinds[gf]))
    s.add(f"named {friend} .")
    s.put("pronoun", [ph], [PRONOUNS[gf][0]] if gf != gh else [ph])
    w.verb("say", they_h)
    s.add(f"hello to {friend} . {friend}")
    w.verb("have", False)
    w.indefinite(fa, fobj)
    s.add(".")
    if dialogue:
        s.add(f"{friend}")
        w.verb("say", False)
        s.add(f', " wow , i like your {obj} ! "')
    s.add(f"{hero} and {friend}")
    w.verb("be", True)
    s.add(f"very {r.choice(lex.feelings)} . they")
    w.verb("want", True)
    s.add(f"to {r.choice(lex.activities).base} with the")
    s.put("consistency", [pa, pobj], [pa, other])
    s.add(f". at the {r.choice(lex.places)} , there")
    w.verb("be", True)
    s.add(f"two {plural(obj2)} ,")
    w.indefinite(a1, obj2)
    s.add("and")
    w.indefinite(a2, obj2)
    s.add(f". {hero}")
    w.verb("choose", False)
    s.add(f"not the {a1} {obj2} but the")
    s.put("negation", [a2, obj2], [a1, obj2])
    s.add(f". but then , the {pa} {pobj}")
    verb, *rest = r.choice(OBSTACLES).split()
    w.verb(verb, False)
    s.add(" ".join(rest) + " .")
    if twist:
        s.add("suddenly , a big bird")
        w.verb("come", False)
        s.add("and")
        w.verb("take", False)
        s.add(f"the {pa} {pobj} away .")
    if bad_end:
        s.add(f"{hero} {'could' if tense == 'past' else 'can'} not get the {pa} {pobj} . {ph}")
        w.verb("be", they_h)
        s.add("very sad .")
    else:
        s.add(f"{friend} and {hero}")
        w.verb("help", True)
        s.add(". they")
        w.verb("get", True)
        s.add(f"the {pa} {pobj} back .")
    if dialogue:
        s.add(hero)
        w.verb("say", False)
        s.add(', " oh no ,' if bad_end else ', " thank you ,')
        s.put("entity", [friend], [hero])
        s.add('! "')
    s.add(f"in the end , {hero} and")
    s.put("entity", [friend], [hero])
    w.verb("be", True)
    s.add(f"{'sad' if bad_end else 'happy'} .")
    if moral:
        s.add(hero)
        w.verb("learn", False)
        s.add(f"that {r.choice(MORALS)} .")
    s.add("</s>")
    return s


"""A recognizer for the stories grammar's rules, written apart from the generator.

It knows the vocabulary's parts of speech (groklab/tasks/story_grammar.py) but none of the
plot templates: it splits a token sequence into sentences and checks, per sentence,

    article      "a" before a consonant-initial word, "an" before a vowel-initial one
    tense        every finite verb is in the story's tense (that of its first finite verb);
                 a base form is finite unless it follows to / could / can / not
    number       finite verbs agree with the sentence's subject (a name, "X and Y", a
                 pronoun, "the/a N", "two Ns", or "there" + the noun phrase after the verb);
                 singular "they" takes the plural form
    pronoun      a subject pronoun refers to the previous sentence's subject characters: he
                 to one male, she to one female, they to several or one "they" character;
                 a possessive (his / her / their) agrees with its own sentence's subject
    entity       a name appears first right after "named"; "X and X" is no pair; a speaker
                 does not address themself by name in their own quote
    consistency  "the (ADJ) N", N an object noun, names an object introduced before with
                 "a/an ADJ N" (the same adjective when one is given)
    negation     "not the A N but the B N" has A != B

Quoted speech and the clause after "that" (a moral) are skipped except for the article rule.
``violations(tokens, lexicon)`` returns the broken rules as short strings (empty: the story
parses).
"""

from __future__ import annotations

from groklab.tasks.story_grammar import VOWELS, Lexicon, plural

MODALS = {"could": "past", "can": "present"}
BASE_AFTER = {"to", "could", "can", "not"}
SUBJ_PRON = {"he": "m", "she": "f", "they": None}
POSS = {"his": "m", "her": "f", "their": None}


class _Lex:
    def __init__(self, lex: Lexicon):
        self.gender = lex.names
        self.objects = set(lex.objects)
        self.plurals = {plural(o) for o in lex.objects}
        # form -> {(tense, number)}: number "sg", "pl" or "any"
        self.verbs: dict[str, set[tuple[str, str]]] = {}
        for v in [*lex.activities, *lex.plot_verbs.values()]:
            for tense in ("past", "present"):
                forms = {v.form(tense, False): "sg", v.form(tense, True): "pl"}
                if len(set(forms)) == 1:
                    forms = {next(iter(forms)): "any"}
                for f, num in forms.items():
                    self.verbs.setdefault(f, set()).add((tense, num))
        self.base = {v.base for v in [*lex.activities, *lex.plot_verbs.values()]}


def _sentences(tokens: list[str]) -> list[list[str]]:
    out, cur, quoted = [], [], False
    for t in tokens:
        if t in ("<s>", "</s>", "<pad>"):
            continue
        cur.append(t)
        if t == '"':
            quoted = not quoted
            if not quoted:  # a closing quote ends the speaking sentence
                out.append(cur)
                cur = []
        elif t == "." and not quoted:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _subject(words: list[str], lx: _Lex) -> tuple[int, str | None, tuple[str, ...] | None, str]:
    """(index after the subject, number or None, its characters or None, pronoun or "")."""
    i = 0
    # a leading adverbial ends at the first comma; conjunctions "but" / "so" before it
    while i < len(words) and words[i] in ("but", "so"):
        i += 1
    if "," in words[i:] and words[i] not in lx.gender and words[i] not in SUBJ_PRON:
        i = words.index(",", i) + 1
    w = words[i:]
    if not w:
        return i, None, None, ""
    if w[0] == "there":
        nxt = w[2] if len(w) > 2 else ""
        chars = (w[w.index("named") + 1],) if "named" in w else None
        return i + 1, "pl" if nxt == "two" else "sg", chars, ""
    if w[0] in SUBJ_PRON:
        return i + 1, "pl" if w[0] == "they" else "sg", None, w[0]
    if w[0] in lx.gender:
        if len(w) > 2 and w[1] == "and" and w[2] in lx.gender:
            return i + 3, "pl", (w[0], w[2]), ""
        return i + 1, "sg", (w[0],), ""
    if w[0] in ("the", "a", "an", "two"):
        j = 1
        while j < len(w) and w[j] not in lx.verbs and w[j] not in MODALS:
            j += 1
        noun = w[j - 1]
        return i + j, "pl" if (noun in lx.plurals or w[0] == "two") else "sg", None, ""
    return i, None, None, ""


def violations(tokens: list[str], lex: Lexicon) -> list[str]:
    lx = _Lex(lex)
    errors: list[str] = []
    tense = None
    prev_chars: tuple[str, ...] | None = None
    introduced: set[tuple[str, str]] = set()
    named: set[str] = set()
    for k, sent in enumerate(_sentences(tokens)):
        where = f"sentence {k}"
        for a, b in zip(sent, sent[1:]):
            if a in ("a", "an") and (b[0] in VOWELS) != (a == "an"):
                errors.append(f"{where}: article '{a} {b}'")
        words, quoted = [], False  # the sentence outside quotes and moral clauses
        for t in sent:
            if t == '"':
                quoted = not quoted
            elif not quoted:
                words.append(t)
        if "that" in words:
            words = words[: words.index("that")]
        for j, t in enumerate(sent):
            if t in lx.gender:
                if j > 0 and sent[j - 1] == "named":
                    named.add(t)
                elif t not in named:
                    errors.append(f"{where}: name '{t}' before it was introduced")
        for a, b, c in zip(sent, sent[1:], sent[2:]):
            if b == "and" and a == c and a in lx.gender:
                errors.append(f"{where}: '{a} and {c}'")
        if '"' in sent and sent[0] in lx.gender and sent[0] in sent[sent.index('"'):]:
            errors.append(f"{where}: {sent[0]} addresses themself")
        start, number, chars, pron = _subject(words, lx)
        if pron:
            if prev_chars is None:
                errors.append(f"{where}: pronoun '{pron}' with no character before")
            else:
                g = {lx.gender[c] for c in prev_chars}
                ok = (len(prev_chars) == 1 and g == {SUBJ_PRON[pron]}) if pron != "they" else (
                    len(prev_chars) > 1 or g == {"n"})
                if not ok:
                    errors.append(f"{where}: pronoun '{pron}' for {'/'.join(prev_chars)}")
            chars = prev_chars
        for j, t in enumerate(words):
            if t in POSS and chars is not None:
                g = {lx.gender[c] for c in chars}
                if not ((len(chars) > 1 or g == {"n"}) if POSS[t] is None
                        else (len(chars) == 1 and g == {POSS[t]})):
                    errors.append(f"{where}: possessive '{t}' for {'/'.join(chars)}")
            if t in MODALS:
                tense = tense or MODALS[t]
                if MODALS[t] != tense:
                    errors.append(f"{where}: '{t}' in a {tense} story")
            if t not in lx.verbs or (j > 0 and words[j - 1] in BASE_AFTER and t in lx.base):
                continue
            analyses = lx.verbs[t]
            tense = tense or next(iter(sorted(analyses)))[0]
            if not any(te == tense for te, _ in analyses):
                errors.append(f"{where}: '{t}' in a {tense} story")
            elif number and not any(te == tense and n in ("any", number) for te, n in analyses):
                errors.append(f"{where}: '{t}' after a {'plural' if number == 'pl' else 'singular'}"
                              " subject")
        for j, t in enumerate(words):
            if t in ("a", "an") and j + 2 < len(words) and words[j + 2] in lx.objects:
                introduced.add((words[j + 1], words[j + 2]))
                introduced.add(("", words[j + 2]))
            if t == "the" and j + 1 < len(words):
                adj, noun = (("", words[j + 1]) if words[j + 1] in lx.objects
                             else (words[j + 1], words[j + 2] if j + 2 < len(words) else ""))
                if noun in lx.objects and (adj, noun) not in introduced:
                    errors.append(f"{where}: 'the {adj} {noun}' was never introduced")
            if words[j:j + 2] == ["not", "the"] and "but" in words[j:]:
                b = words.index("but", j)
                if words[j + 2] == words[b + 2]:
                    errors.append(f"{where}: 'not the {words[j + 2]} but the {words[b + 2]}'")
        if chars is not None or start < len(words):
            prev_chars = chars
    return errors

"""Short stories from a seeded probabilistic grammar: an offline stand-in for TinyStories.

TinyStories (Eldan and Li 2023) trains models under 10M parameters on simple stories written
by GPT-4 and grades them with GPT-4. Here the stories come from a grammar whose rules are
known exactly (groklab/tasks/story_generate.py: plot, agreement, pronouns, names, objects), so
each skill is measured by minimal pairs the generator builds, without a grader.

Rows: one story per row, ``<s> ... </s>`` right-padded with ``<pad>`` to ``max_len``, trained
with next-token loss on every real token (objective ``lm``). Splits:

    train          ``n_train`` stories
    val            ``n_val`` held-out stories (loss, perplexity, next-token accuracy)
    agreement, pronoun, entity, consistency, negation
                   ``n_probe`` minimal pairs each, from val stories (groklab/tasks/pairs.py):
                   ``acc/<skill>`` is the fraction where the right continuation is more probable

Train and val are disjoint by construction: a story's (hero, object) pair decides its split
(a stable hash, ``val_fraction`` of pairs held out), so no val story, and no probe, shares its
hero-object combination with a training story; the build asserts it. ``meta['difficulty']`` on
the training rows (optional plot parts present + length / max_len) is what
``train.curriculum: difficulty`` orders by.
"""

from __future__ import annotations

import random
import zlib
from typing import Literal

import numpy as np
import torch

from groklab.tasks.base import Split, TaskData, TaskError, Vocab
from groklab.tasks.objectives import IGNORE
from groklab.tasks.pairs import PairedLanguageModel, pair_rows
from groklab.tasks.registry import TaskConfig, register
from groklab.tasks.story_generate import LITERALS, SKILL_OF, Story, write_story
from groklab.tasks.story_grammar import PUNCT, SPECIALS, Lexicon, lexicon, plural

SKILLS = ("agreement", "pronoun", "entity", "consistency", "negation")


class StoriesConfig(TaskConfig):
    name: Literal["stories"] = "stories"
    n_train: int = 20000
    n_val: int = 500
    n_probe: int = 300  # minimal pairs per skill
    max_len: int = 192  # tokens per row; longer stories are redrawn
    vocab: Literal["small", "medium", "large"] = "medium"  # ~300 / ~600 / ~1,000 words
    tense: Literal["past", "present"] = "past"
    dialogue: float = 0.5  # probability that a story has each optional part (0: never)
    twist: float = 0.3
    moral: float = 0.3
    bad_ending: float = 0.2
    val_fraction: float = 0.1  # share of (hero, object) pairs held out for val and probes

    def check(self) -> None:
        for k in ("dialogue", "twist", "moral", "bad_ending"):
            if not 0 <= getattr(self, k) <= 1:
                raise TaskError(f"task.{k} is a probability; got {getattr(self, k)}, allowed "
                                "0..1")
        if not 0 < self.val_fraction < 1:
            raise TaskError(f"task.val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.n_train < 1 or self.n_val < 1 or self.n_probe < 1:
            raise TaskError("task.n_train, n_val and n_probe must be >= 1")
        if not 96 <= self.max_len <= 1024:
            raise TaskError(f"task.max_len {self.max_len} is outside 96..1024 (a story with "
                            "every part has up to ~150 tokens)")


def story_vocab(lex: Lexicon) -> Vocab:
    """Every word the grammar can write at this tier, typed by part of speech."""
    typed: dict[str, str] = {}
    for t in SPECIALS + PUNCT:
        typed[t] = "special"
    for w in LITERALS:
        typed.setdefault(w, "special")
    for name in lex.names:
        typed[name] = "entity"
    for w in [*lex.objects, *map(plural, lex.objects), *lex.places,
              *(k for ks in lex.kinds.values() for k in ks)]:
        typed[w] = "value"
    for w in [*lex.char_adj, *lex.obj_adj, *lex.feelings]:
        typed[w] = "attribute"
    # one part of speech per word form: agreement must be decidable from the tokens
    verbs = {f for v in [*lex.activities, *lex.plot_verbs.values()] for f in v.forms()}
    clash = sorted(verbs & {t for t, ty in typed.items() if ty != "special"})
    assert not clash, f"words that are also verb forms: {clash}"
    typed.update({f: "relation" for f in verbs})
    for p in ("he", "she", "they", "his", "her", "their"):
        typed[p] = "special"
    tokens = SPECIALS + PUNCT + sorted(set(typed) - set(SPECIALS) - set(PUNCT))
    return Vocab(tokens=tokens, types=[typed[t] for t in tokens])


def _split_of(cfg: StoriesConfig, story: Story) -> str:
    key = f"{cfg.seed}|{story.hero}|{story.obj}".encode()
    return "val" if zlib.crc32(key) % 10_000 < cfg.val_fraction * 10_000 else "train"


def generate(cfg: StoriesConfig) -> dict[str, list[Story]]:
    """The training and val stories: story i of the stream is a function of (seed, i)."""
    lex = lexicon(cfg.vocab)
    feats = {k: getattr(cfg, k) for k in ("dialogue", "twist", "moral", "bad_ending")}
    want = {"train": cfg.n_train, "val": cfg.n_val}
    out: dict[str, list[Story]] = {"train": [], "val": []}
    i = 0
    while any(len(out[k]) < want[k] for k in out):
        story = write_story(lex, cfg.tense, random.Random(f"{cfg.seed}:{i}"), feats)
        i += 1
        split = _split_of(cfg, story)
        if len(out[split]) < want[split] and len(story.tokens) <= cfg.max_len:
            out[split].append(story)
        if i > 50 * (cfg.n_train + cfg.n_val) + 10_000:
            raise TaskError("could not draw enough stories that fit task.max_len; raise it")
    combos = {split: {(s.hero, s.obj) for s in out[split]} for split in out}
    assert not combos["train"] & combos["val"], "train and val share a hero-object pair"
    return out


def _lm_split(stories: list[Story], vocab: Vocab, max_len: int, positions: bool) -> Split:
    pad = vocab.id("<pad>")
    inputs = np.full((len(stories), max_len), pad, dtype=np.int64)
    for i, s in enumerate(stories):
        inputs[i, : len(s.tokens)] = [vocab.id(t) for t in s.tokens]
    targets = np.full_like(inputs, IGNORE)
    targets[:, :-1] = inputs[:, 1:]
    targets[targets == pad] = IGNORE
    lengths = np.array([len(s.tokens) for s in stories])
    # answer_pos: the last real token, where analyses of single positions look
    pos = torch.from_numpy(lengths - 2) if positions else None
    return Split(torch.from_numpy(inputs), pos, torch.from_numpy(targets),
                 meta={"length": lengths,
                       "difficulty": np.array([s.parts + len(s.tokens) / max_len
                                               for s in stories])})


def _probe_splits(stories: list[Story], vocab: Vocab, cfg: StoriesConfig) -> dict[str, Split]:
    """``n_probe`` pairs per skill, drawn round-robin over the site kinds of each skill."""
    rng = random.Random(f"{cfg.seed}:probes")
    by_kind: dict[str, list] = {}
    for s in stories:
        for site in s.sites:
            by_kind.setdefault(site.kind, []).append((s, site))
    out = {}
    for skill in SKILLS:
        kinds = sorted(k for k, sk in SKILL_OF.items() if sk == skill and by_kind.get(k))
        pools = [rng.sample(by_kind[k], len(by_kind[k])) for k in kinds]
        chosen = []
        while len(chosen) < cfg.n_probe and any(pools):
            for pool in pools:
                if pool and len(chosen) < cfg.n_probe:
                    chosen.append(pool.pop())
        ids = lambda ws: [vocab.id(w) for w in ws]  # noqa: E731
        inputs, targets = pair_rows([ids(s.tokens[: x.pos]) for s, x in chosen],
                                    [ids(x.good) for _, x in chosen],
                                    [ids(x.bad) for _, x in chosen], cfg.max_len,
                                    vocab.id("<pad>"))
        out[skill] = Split(inputs, None, targets,
                           meta={"kind": np.array([x.kind for _, x in chosen])})
    return out


@register("stories", StoriesConfig,
          "short stories from a seeded grammar (TinyStories stand-in): lm with skill probes")
def build(cfg: StoriesConfig) -> TaskData:
    cfg.check()
    stories = generate(cfg)
    vocab = story_vocab(lexicon(cfg.vocab))
    val = _lm_split(stories["val"], vocab, cfg.max_len, True)
    probes = {"val": val, **_probe_splits(stories["val"], vocab, cfg)}
    lengths = val.meta["length"]
    return TaskData(
        name="stories", vocab=vocab, train=_lm_split(stories["train"], vocab, cfg.max_len, False),
        probes=probes, id_split="val", ood_split=None,
        info={"vocab_size": len(vocab), "mean_tokens": round(float(lengths.mean()), 2),
              "max_tokens": int(lengths.max()), "skills": list(SKILLS),
              "probe_kinds": {k: sorted(set(p.meta["kind"].tolist()))
                              for k, p in probes.items() if k in SKILLS}},
        objective=PairedLanguageModel(),
    )

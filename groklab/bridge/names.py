"""Distinct pronounceable names for entities, generated from a seed (no name list to download).

Wang et al. 2024 (App. F) turn entities into random names from the PyPI ``names`` package; any
set of distinct names that are not English words serves the same purpose: the LLM cannot know
anything about them beyond the facts in its prompt.
"""

from __future__ import annotations

import itertools

import numpy as np

_ONSETS = ("b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u")
_CODAS = ("", "n", "r", "s", "l")
# Names that the prompt templates or the answer parser could read as words.
_RESERVED = {"same", "older", "none", "note", "dare", "more", "sure", "here", "ages"}


def names(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct capitalised names, the same for the same (n, seed)."""
    syl = [o + v for o in _ONSETS for v in _VOWELS]
    cands = [a + b + c for a, b in itertools.product(syl, syl) for c in _CODAS]
    cands = [c for c in cands if c not in _RESERVED]
    if n > len(cands):  # three syllables only when two run out
        cands += [a + b + c for a, b, c in itertools.product(syl, syl, syl)]
    if n > len(cands):
        raise ValueError(f"{n} names asked for; at most {len(cands)} can be generated")
    pick = np.random.default_rng(seed).choice(len(cands), size=n, replace=False)
    return [cands[i].capitalize() for i in pick]

"""Positional schemes other than the learned absolute table (``model.positional``).

    learned  a learned row per absolute position (GPT-2, TransformerLens's ``W_pos``), added to
             the token embedding; what every model had before this option
    none     no positional signal at all (NoPE): a causal mask alone tells positions apart
    rotary   queries and keys rotated by an angle proportional to their position (Su et al.
             2021, RoPE) inside every attention layer, so a score depends on the distance
             between query and key, not on where they are; GPT-NeoX's layout (the first and
             second halves of a head's dimensions are the pairs), base 10,000, as
             TransformerLens's ``rotary_dim = d_head``
    abacus   McLeish et al. 2024: every maximal run of digit tokens is numbered 1, 2, 3, ...
             from its first digit (non-digits get 0), a learned row per index is added to the
             embedding; while training one offset k ~ U{0..abacus_max_offset} per forward pass
             is added to every non-zero index (so indices past the training lengths are
             trained too), none at evaluation. With reversed numbers the index says which
             power of ten a digit is, the same for a and b and c, whatever their length.
             Two options, both off by default: ``abacus_offset: row`` draws one offset per
             row instead of per batch (every step then trains many stretches of the table,
             not one); ``abacus_init: sinusoidal`` starts the digit rows as sines and cosines
             of the index (row 0, the non-digits, at zero), still learned: then one linear map
             in the attention shifts every index by one from step 0, so matching digit i of
             the answer with digits i and i+1 of the operands is relative from the start and
             holds for indices that never occurred together in training. A deviation from the
             reference (which draws its table like every matrix), measured in docs/methods.md.
             Two more, off by default: ``abacus_learned: false`` freezes that sinusoidal table
             (frequencies from 1 to 1/FROZEN_SPAN, fixed, so a row's value does not depend on
             the table's size): an index never reached in training is then no untrained row,
             it has the geometry of every other; ``abacus_zero_fraction: p`` draws k = 0 with
             probability p before the uniform draw, so a wide offset range keeps evaluation's
             k = 0 common.
"""

from __future__ import annotations

import math

import torch

SCHEMES = ("learned", "none", "rotary", "abacus")


def abacus_positions(tokens: torch.Tensor, is_digit: torch.Tensor) -> torch.Tensor:
    """[..., pos] long: 1-based index of each digit within its run of digits, 0 elsewhere.
    ``is_digit`` [d_vocab] bool says which token ids are digits. Causal: an index depends
    only on the tokens before it."""
    digit = is_digit[tokens]
    idx = torch.arange(tokens.shape[-1], device=tokens.device).expand_as(tokens)
    # the position of the latest non-digit at or before each position (-1: none yet)
    last_break = torch.where(digit, torch.full_like(idx, -1), idx).cummax(-1).values
    return torch.where(digit, idx - last_break, torch.zeros_like(idx))


def abacus_offset(positions: torch.Tensor, max_offset: int, training: bool,
                  per: str = "batch", zero_fraction: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``positions`` with a random offset added to every digit (training only): one for the
    whole batch (``per="batch"``, the reference's), or one per row (``per="row"``: all the
    numbers of a row share it, so a, b and c stay aligned). k ~ U{0..max_offset}, or 0 with
    probability ``zero_fraction`` first (evaluation's offset kept common while the range
    reaches far indices). Drawn on the positions' device (from the default generator unless
    ``generator``): no host sync."""
    if not training or max_offset <= 0:
        return positions
    shape = positions.shape[:-1] + (1,) if per == "row" else ()
    dev = positions.device
    k = torch.randint(0, max_offset + 1, shape, device=dev, generator=generator)
    if zero_fraction > 0:  # drawn only when asked: the default keeps its random stream
        k = torch.where(torch.rand(shape, device=dev, generator=generator) < zero_fraction, 0, k)
    return torch.where(positions > 0, positions + k, positions)


FROZEN_SPAN = 128  # a frozen table's slowest frequency: 1/128 radians per index


def sinusoidal_rows(n_rows: int, d_model: int, scale: float, span: int | None = None
                    ) -> torch.Tensor:
    """[n_rows, d_model]: row i = scale * sqrt(2) * (sin(i w_1..w_h), cos(i w_1..w_h)), h =
    d_model // 2 frequencies spaced geometrically from 1 down to 1/span radians per index
    (span: n_rows unless given; a fixed span gives every row the same value whatever the
    table's size). Row entries have standard deviation ``scale``, as a normal init's."""
    half = d_model // 2
    freq = torch.logspace(0, -math.log10(span or n_rows), half, dtype=torch.float64)
    angles = torch.arange(n_rows, dtype=torch.float64)[:, None] * freq[None, :]
    table = torch.cat([angles.sin(), angles.cos()], -1) * scale * math.sqrt(2)
    if d_model % 2:
        table = torch.cat([table, torch.zeros(n_rows, 1, dtype=table.dtype)], -1)
    return table.float()


def rotary_tables(n_ctx: int, d_head: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [n_ctx, d_head]: angle pos * base^(-2i / d_head) for pair i, repeated over both
    halves (GPT-NeoX's layout)."""
    half = d_head // 2
    freq = base ** (-torch.arange(half, dtype=torch.float64) * 2 / d_head)
    angles = torch.arange(n_ctx, dtype=torch.float64)[:, None] * freq[None, :]
    angles = torch.cat([angles, angles], -1)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, start: int = 0) -> torch.Tensor:
    """x [batch, pos, n_heads, d_head] rotated by its positions start..start+pos-1."""
    p, half = x.shape[1], x.shape[-1] // 2
    cos = cos[start : start + p, None, :].to(x.dtype)
    sin = sin[start : start + p, None, :].to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def longest_digit_run(data, digits: list[int]) -> int:
    """The longest number (run of digit tokens) in a task: its ``info['longest_number']`` where
    the task states it (it covers rows evaluated later, such as length-grid cells), else the
    longest run in any split."""
    if "longest_number" in data.info:
        return int(data.info["longest_number"])
    is_digit = torch.zeros(len(data.vocab), dtype=torch.bool)
    is_digit[digits] = True
    splits = (data.train, *data.probes.values())
    return max(int(abacus_positions(s.inputs.cpu(), is_digit).max()) for s in splits if len(s))


def for_abacus(cfg, data):
    """``cfg`` (resolved) with the task's digit ids (its ``number`` tokens unless
    ``model.abacus_digits`` names them), checked: the table must hold the longest number plus
    the largest training offset."""
    digits = list(cfg.abacus_digits) or [int(i) for i in data.vocab.ids_of_type("number")]
    if not digits:
        raise ValueError(f"model.positional=abacus numbers runs of digit tokens, but task "
                         f"'{data.name}' has no number tokens; set model.abacus_digits")
    if max(digits) >= len(data.vocab) or min(digits) < 0:
        raise ValueError(f"model.abacus_digits {digits} are not all token ids of task "
                         f"'{data.name}' (0..{len(data.vocab) - 1})")
    need = longest_digit_run(data, digits) + cfg.abacus_max_offset + 1
    if cfg.abacus_table < need:
        raise ValueError(f"model.abacus_table {cfg.abacus_table} is too small: the longest "
                         f"number ({need - cfg.abacus_max_offset - 1} digits) plus "
                         f"model.abacus_max_offset {cfg.abacus_max_offset} needs {need} rows; "
                         "raise abacus_table or lower abacus_max_offset")
    return cfg.model_copy(update={"abacus_digits": digits})

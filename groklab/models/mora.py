"""MoRA's fixed compression and decompression maps (Jiang et al. 2024, arXiv 2405.12130), as
matrices, so the update is a weight delta ``dW = C @ M @ D`` in groklab's ``x @ W`` orientation.

MoRA trains one square ``M`` [r_hat, r_hat] between a fixed compression of the d_in inputs to
r_hat numbers and a fixed decompression of r_hat numbers to d_out outputs. The reference
(``kongds/MoRA``, ``peft-mora``'s LoRA layer, ``_apply_mora`` / ``get_delta_weight``) computes it
on activations; here the same maps are built once as index/rotation tables and applied to ``M``
(the delta of a d_model = 128 layer costs less than one training row's forward):

- ``r_hat``: the LoRA parameter budget r (d_in + d_out) spent on a square,
  ``int(sqrt((d_in + d_out) r) + 0.5)``; rotation (type 6) needs an even size and rounds down.
- sharing (type 1): the input padded to a multiple of r_hat by repeating its own first features
  (index ``p % d_in``), cut into chunks of r_hat and summed; the r_hat outputs of ``M`` tiled
  (output k reads ``k % r_hat``). ``dW[i, k] = sum_{p < n r_hat, p % d_in = i} M[p % r_hat,
  k % r_hat]``.
- rotation (type 6): the same padded chunks are kept apart; chunk c is rotated RoPE-style by
  angles ``c * theta_j``, ``theta_j = 10000^(-2j / r_hat)`` (the rotate-half convention:
  pairs (j, j + r_hat/2)), multiplied by ``M``, and the n r_hat outputs concatenated, then cut
  to d_out (or tiled when shorter): ``dW = fold(blockdiag(R_0 M, ..., R_{n-1} M))``.

Types 2-4 of the reference serve ReMoRA only and are not built here.
"""

from __future__ import annotations

import math

import torch

MORA_TYPES = (1, 6)  # 1: sharing (the reference's advice for large r), 6: rotation (small r)


def mora_rank(d_in: int, d_out: int, r: int, mora_type: int = 1) -> int:
    """r_hat at LoRA rank r's parameter count r (d_in + d_out), as the reference rounds it."""
    r_hat = int(math.sqrt((d_in + d_out) * r) + 0.5)
    if mora_type == 6:
        r_hat -= r_hat % 2  # rotate-half pairs feature j with j + r_hat / 2
    return r_hat


def n_chunks(d_in: int, r_hat: int) -> int:
    return -(-d_in // r_hat)


def fold_index(d_in: int, r_hat: int) -> torch.Tensor:
    """[n_chunks * r_hat]: the input feature each padded position reads (padding wraps)."""
    return torch.arange(n_chunks(d_in, r_hat) * r_hat) % d_in


def rotation_tables(r_hat: int, chunks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [chunks, r_hat] of the RoPE angles ``c * theta_j`` (each half repeats)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0, r_hat, 2, dtype=torch.float64) / r_hat))
    freqs = torch.outer(torch.arange(chunks, dtype=torch.float64), inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotation_matrices(r_hat: int, chunks: int) -> torch.Tensor:
    """[chunks, r_hat, r_hat]: R_c with ``x @ R_c = x * cos_c + rotate_half(x) * sin_c`` for a
    row vector x, where ``rotate_half(x) = cat(-x[h:], x[:h])``, h = r_hat / 2."""
    cos, sin = rotation_tables(r_hat, chunks)
    h = r_hat // 2
    j = torch.arange(r_hat)
    R = torch.zeros(chunks, r_hat, r_hat, dtype=torch.float64)
    R[:, j, j] = cos
    # output j < h reads -x[j + h]; output j >= h reads x[j - h]
    R[:, j[:h] + h, j[:h]] = -sin[:, :h]
    R[:, j[h:] - h, j[h:]] = sin[:, h:]
    return R


class MoraMaps:
    """The fixed tables of one layer's MoRA update; ``delta(M)`` -> dW [d_in, d_out]."""

    def __init__(self, d_in: int, d_out: int, r_hat: int, mora_type: int):
        if mora_type not in MORA_TYPES:
            raise ValueError(f"MoRA type {mora_type} is not built; types: {MORA_TYPES}")
        if mora_type == 6 and r_hat % 2:
            raise ValueError(f"MoRA type 6 needs an even r_hat, got {r_hat}")
        self.d_in, self.d_out, self.r_hat, self.type = d_in, d_out, r_hat, mora_type
        n = n_chunks(d_in, r_hat)
        fold = torch.zeros(d_in, n * r_hat, dtype=torch.float64)
        fold[fold_index(d_in, r_hat), torch.arange(n * r_hat)] = 1.0
        if mora_type == 1:
            # summing the chunks: input i feeds compressed j as often as p % d_in = i, p % r = j
            self.compress = fold.view(d_in, n, r_hat).sum(1)  # [d_in, r_hat]
            self.cols = torch.arange(d_out) % r_hat  # tiling
        else:
            self.fold = fold  # [d_in, n r_hat]
            self.rot = rotation_matrices(r_hat, n)  # [n, r_hat, r_hat]
            self.cos, self.sin = rotation_tables(r_hat, n)  # [n, r_hat] each
            width = n * r_hat  # concatenated outputs, cut to d_out or tiled
            self.cols = torch.arange(d_out) % width
        self.index = fold_index(d_in, r_hat)
        self._cast: dict = {}

    def _tables(self, like: torch.Tensor):
        key = (like.dtype, like.device)
        if key not in self._cast:
            names = ("compress",) if self.type == 1 else ("fold", "rot", "cos", "sin")
            self._cast[key] = {n: getattr(self, n).to(like) for n in names}
            self._cast[key]["cols"] = self.cols.to(like.device)
            self._cast[key]["index"] = self.index.to(like.device)
        return self._cast[key]

    def delta(self, M: torch.Tensor) -> torch.Tensor:
        t = self._tables(M)
        if self.type == 1:
            return (t["compress"] @ M).index_select(1, t["cols"])
        blocks = t["rot"] @ M  # [n, r_hat, r_hat]: R_c M
        full = t["fold"] @ torch.block_diag(*blocks.unbind(0))  # [d_in, n r_hat]
        return full.index_select(1, t["cols"])

    def inner(self, x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """The compressed input times M (or several maps' M side by side, [r_hat, k r_hat]):
        type 1 [N, k r_hat] (the padded chunks summed, then M); type 6 [n, N, k r_hat]
        (chunk c rotated by R_c, then M)."""
        r, d = self.r_hat, self.d_in
        wraps = r - d % r > d if d % r else False  # padding that wraps the input more than once
        if self.type == 1:
            if d < r or wraps:
                s = x.index_select(1, self._tables(x)["index"]).view(-1, len(self.index) // r,
                                                                      r).sum(1)
            else:
                s = _Compress.apply(x, r)
            return s @ M
        # Outputs past d_out are cut, so where the chunks' outputs are not tiled (n r >= d_out)
        # only the first ceil(d_out / r) chunks reach the output: the rest are not computed
        # (a 3072 -> 768 map at r 174: 5 of 18 chunks)
        n = len(self.index) // r
        used = n if n * r < self.d_out else -(-self.d_out // r)
        if wraps:
            chunks = x.index_select(1, self._tables(x)["index"]).view(x.shape[0], -1, r)
            chunks = chunks[:, :used].transpose(0, 1).contiguous()
        else:
            chunks = _Chunks.apply(x, r, used)
        # chunk c rotated (x R_c, elementwise: x cos + rotate_half(x) sin), then all chunks
        # through M as one matmul: n r^2 per row, where forming every R_c M costs n r^3
        t, h = self._tables(M), r // 2
        cos, sin = t["cos"][:used, None], t["sin"][:used, None]
        half = torch.cat([-chunks[..., h:], chunks[..., :h]], -1)
        rotated = torch.addcmul(chunks * cos, half, sin)
        return (rotated.view(-1, r) @ M).view(chunks.shape[0], chunks.shape[1], -1)

    def add_decompressed(self, out: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
        """out [N, k d_out] + the decompressed ``inner`` of k maps, block by block: type 1
        tiles r_hat outputs (output j reads j % r_hat), type 6 concatenates the n chunks' and
        cuts or tiles them. ``out`` must be a temporary: it is written in place."""
        if self.type == 1:
            return _AddTiled.apply(out, y, k, self.r_hat)
        return _AddChunks.apply(out, y, k, self.r_hat, len(self.index))

    def apply(self, x: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
        """``x @ delta(M)`` for x [N, d_in], computed on activations as the reference does
        (what the training path runs: O(N r_hat^2) per chunk sum, not O(N d_in d_out))."""
        out = x.new_zeros(x.shape[0], self.d_out)
        return self.add_decompressed(out, self.inner(x, M), 1)


# The compression and decompression as autograd functions: written with slices and in-place
# adds, autograd's own backward of those (zeros, clones, copy-slices, a concatenation) cost
# MoRA's step more than its matmuls did (bench/adapter_step.py). Each backward reads the
# incoming gradient once. Padding: the last chunk is the input's tail, then its first
# r - tail features again (the reference's ``cat([x, x[..., :pad]])``).


class _Compress(torch.autograd.Function):
    """x [N, d] -> the padded chunks summed, [N, r] (type 1)."""

    @staticmethod
    def forward(ctx, x, r):
        d = x.shape[1]
        full, tail = divmod(d, r)
        ctx.r, ctx.d = r, d
        s = x[:, : full * r].reshape(-1, full, r).sum(1)
        if tail:
            s[:, :tail] += x[:, full * r:]
            s[:, tail:] += x[:, : r - tail]
        return s

    @staticmethod
    def backward(ctx, g):
        r, d = ctx.r, ctx.d
        full, tail = divmod(d, r)
        N = g.shape[0]
        gx = g.new_empty(N, d)
        gx[:, : full * r].view(N, full, r).copy_(g[:, None])
        if tail:
            gx[:, full * r:] = g[:, :tail]
            gx[:, : r - tail] += g[:, tail:]
        return gx, None


class _Chunks(torch.autograd.Function):
    """x [N, d] -> the first ``used`` padded chunks chunk-major, [used, N, r] (type 6's)."""

    @staticmethod
    def forward(ctx, x, r, used):
        N, d = x.shape
        full, tail = divmod(d, r)
        ctx.r, ctx.d, ctx.used = r, d, used
        c = x.new_empty(used, N, r)
        m = min(full, used)
        c[:m].copy_(x[:, : m * r].view(N, m, r).transpose(0, 1))
        if used > full:  # the last chunk: the input's tail, then its first features again
            c[full, :, :tail] = x[:, full * r:]
            c[full, :, tail:] = x[:, : r - tail]
        return c

    @staticmethod
    def backward(ctx, g):
        r, d, used = ctx.r, ctx.d, ctx.used
        full, tail = divmod(d, r)
        N, m = g.shape[1], min(full, used)
        every = used > full or m * r == d  # every input feature gets a gradient written
        gx = g.new_empty(N, d) if every else g.new_zeros(N, d)
        gx[:, : m * r].view(N, m, r).copy_(g[:m].transpose(0, 1))
        if used > full:
            gx[:, full * r:] = g[full, :, :tail]
            gx[:, : r - tail] += g[full, :, tail:]
        return gx, None, None


def _segments(d: int, width: int):
    """(column offset, length) of the tiles a decompressed output of ``width`` fills in d."""
    return [(o, min(width, d - o)) for o in range(0, d, width)]


class _AddTiled(torch.autograd.Function):
    """out [N, k d] += y [N, k r] tiled block by block (type 1)."""

    @staticmethod
    def forward(ctx, out, y, k, r):
        N, d = out.shape[0], out.shape[1] // k
        ctx.k, ctx.r, ctx.d = k, r, d
        o, yv = out.view(N, k, d), y.view(N, k, r)
        full, rest = divmod(d, r)
        if full:
            o[:, :, : full * r].view(N, k, full, r).add_(yv[:, :, None])
        if rest:
            o[:, :, full * r:].add_(yv[:, :, :rest])
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, g):
        k, r, d = ctx.k, ctx.r, ctx.d
        N = g.shape[0]
        gv = g.view(N, k, d)
        full, rest = divmod(d, r)
        gy = gv[:, :, : full * r].reshape(N, k, full, r).sum(2) if full else g.new_zeros(N, k, r)
        if rest:
            gy[:, :, :rest] += gv[:, :, full * r:]
        return g, gy.view(N, k * r), None, None


class _AddChunks(torch.autograd.Function):
    """out [N, k d] += y [used, N, k r]: each block's chunk outputs concatenated (``width`` =
    n r of them, of which the first ``used`` are given: all where the width is tiled), then
    cut to d or tiled (type 6)."""

    @staticmethod
    def forward(ctx, out, y, k, r, width):
        used, N = y.shape[:2]
        d = out.shape[1] // k
        ctx.k, ctx.r, ctx.d, ctx.used, ctx.width = k, r, d, used, width
        o, yv = out.view(N, k, d), y.view(used, N, k, r).permute(1, 2, 0, 3)  # [N, k, used, r]
        for off, m in _segments(d, width):
            c, rest = divmod(m, r)
            if c:
                o[:, :, off : off + c * r].view(N, k, c, r).add_(yv[:, :, :c])
            if rest:
                o[:, :, off + c * r : off + m].add_(yv[:, :, c, :rest])
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, g):
        k, r, d, used, width = ctx.k, ctx.r, ctx.d, ctx.used, ctx.width
        N = g.shape[0]
        gv = g.view(N, k, d)
        gy = g.new_zeros(used, N, k, r)
        gyv = gy.permute(1, 2, 0, 3)  # [N, k, used, r], a view
        for off, m in _segments(d, width):
            c, rest = divmod(m, r)
            if c:
                gyv[:, :, :c] += gv[:, :, off : off + c * r].view(N, k, c, r)
            if rest:
                gyv[:, :, c, :rest] += gv[:, :, off + c * r : off + m]
        return g, gy.view(used, N, k * r), None, None, None


_SHARED: dict[tuple[int, int, int, int], MoraMaps] = {}


def shared_maps(d_in: int, d_out: int, r_hat: int, mora_type: int) -> MoraMaps:
    """One MoraMaps per shape and type: the tables are constants, and maps that share an input
    (q, k and v) can then be recognised by identity and compress it once."""
    key = (d_in, d_out, r_hat, mora_type)
    if key not in _SHARED:
        _SHARED[key] = MoraMaps(*key)
    return _SHARED[key]

"""The MNIST-1D generator, vectorized over samples and equal to the reference's output.

The reference (PyPI ``mnist1d`` 0.0.2.post1, ``mnist1d/data.py : make_dataset`` and
``mnist1d/transform.py``) transforms one sample at a time with scipy's ``interp1d`` and
``gaussian_filter`` (~0.5 ms a sample). Here the random numbers are drawn in the reference's
order from a private legacy ``RandomState(seed)`` (the reference seeds numpy's global one, and
Python's ``random``, from which it draws nothing), so the stream is identical (four draws per
sample, :func:`_draws`), and every transformation runs on all samples at once with the
reference's exact arithmetic:

- ``interp1d(kind="linear")`` on float64 1-D data delegates to ``numpy.interp``, which for each
  output point takes the segment ``xp[j] <= x < xp[j+1]``, returns ``fp[j]`` on an exact hit
  and otherwise ``slope * (x - xp[j]) + fp[j]`` with ``slope = (fp[j+1] - fp[j]) / (xp[j+1] -
  xp[j])``; :func:`_interp` does the same for all rows. The first resampling and the roll
  depend only on the digit, the padding and the shift, so they are computed once per triple.
- ``gaussian_filter(noise, 2)`` is a 17-tap correlation (radius ``int(4 * 2 + 0.5)``) in
  ``reflect`` mode (``d c b a | a b c d | d c b a``), summed by scipy as
  ``x[i] w0 + sum_{j=-8..-1} (x[i+j] + x[i-j]) w_j`` in that order (:func:`_smooth`).

tests/test_mnist1d.py checks the output bitwise against hashes of the package's output
(tests/data/mnist1d_reference.json); ``bench/mnist1d_generate.py`` times both side by side.
"""

from __future__ import annotations

import numpy as np

# ten hand-written 12-point digit curves (mnist1d/data.py : get_templates)
_DIGITS = np.asarray([
    [5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5],
    [5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5],
    [5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5],
    [5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5],
    [5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5],
    [5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5],
    [5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5],
    [5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5],
    [5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5],
])

_CHUNK = 4096  # samples per block of the vectorized transform

DEFAULTS = {  # mnist1d/data.py : get_dataset_args
    "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": (36, 60),
    "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25,
    "iid_noise_scale": 2e-2, "shear_scale": 0.75, "shuffle_seq": False,
    "final_seq_length": 40, "seed": 42,
}


def templates() -> dict[str, np.ndarray]:
    """Standardised curves starting at 0, divided by 6; time grid linspace(-5, 5, 12) / 6."""
    x = _DIGITS.copy()
    x -= x.mean(1, keepdims=True)
    x /= x.std(1, keepdims=True)
    x -= x[:, :1]
    return {"x": x / 6.0, "t": np.linspace(-5, 5, x.shape[1]) / 6.0, "y": np.arange(10)}


def _interp_plan(length: int, n_out: int):
    """Where ``numpy.interp(linspace(0, 1, n_out), linspace(0, 1, length), fp)`` reads fp:
    segment starts j, segment ends j1, exact hits (it returns fp[j] there), x - xp[j] and
    xp[j1] - xp[j] (1 where unused)."""
    x = np.linspace(0, 1, n_out)
    xp = np.linspace(0, 1, length)
    j = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, length - 1)
    hit = (xp[j] == x) | (j == length - 1)
    j1 = np.minimum(j + 1, length - 1)
    return j, j1, hit, x - xp[j], np.where(hit, 1.0, xp[j1] - xp[j])


def _interp(fp: np.ndarray, length: int, n_out: int) -> np.ndarray:
    """``numpy.interp`` of every row of ``fp[:, :length]`` onto ``n_out`` points, with
    numpy's arithmetic (slope first, then slope * offset + fp[j])."""
    j, j1, hit, off, dx = _interp_plan(length, n_out)
    lo = fp[:, j]
    out = fp[:, j1] - lo
    out /= dx
    out *= off
    out += lo
    return np.where(hit, lo, out)


def _gauss_weights(sigma: float, radius: int) -> np.ndarray:
    # scipy.ndimage._filters._gaussian_kernel1d, order 0
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    return phi / phi.sum()


def _smooth(noise: np.ndarray, sigma: float = 2.0, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter`` of each row (mode reflect), in scipy's summation order.
    Works time-major, so every shifted slice is one contiguous block."""
    r = int(truncate * sigma + 0.5)
    w = _gauss_weights(sigma, r)
    n = noise.shape[1]
    p = np.empty((n + 2 * r, noise.shape[0]))
    p[r:r + n] = noise.T
    p[:r] = p[2 * r - 1:r - 1:-1]  # scipy "reflect": d c b a | a b c d | d c b a
    p[r + n:] = p[r + n - 1:n - 1:-1]
    out = p[r:r + n] * w[r]
    tmp = np.empty_like(out)
    for j in range(-r, 0):
        np.add(p[r + j:r + j + n], p[r - j:r - j + n], out=tmp)
        tmp *= w[r + j]
        out += tmp
    return out.T


def _draws(rs: np.random.RandomState, n: int, low: int, high: int, max_translation: int,
           n_mid: int):
    """The reference's random numbers, per sample in its order: pad (rand), scale (rand),
    translation (``choice(max_translation)`` = ``randint(0, max_translation)``), correlated and
    iid noise (``randn(n_mid)`` twice: one ``randn(2 * n_mid)`` is the same stream), shear
    (rand). The stream's consumption varies (rejection sampling), so the draws stay a loop."""
    u = np.empty((n, 3))
    k = np.empty(n, dtype=np.int64)
    g = np.empty((n, 2 * n_mid))
    rand, randint, randn = rs.random_sample, rs.randint, rs.standard_normal
    for i in range(n):
        u[i, :2] = rand(2)
        k[i] = randint(0, max_translation)
        g[i] = randn(2 * n_mid)
        u[i, 2] = rand()
    p = low + (u[:, 0] * (high - low + 1)).astype(np.int64)
    return p, u[:, 1], k, g, u[:, 2]


def make_dataset(num_samples: int = 5000, train_split: float = 0.8, template_len: int = 12,
                 padding: tuple[int, int] = (36, 60), scale_coeff: float = 0.4,
                 max_translation: int = 48, corr_noise_scale: float = 0.25,
                 iid_noise_scale: float = 2e-2, shear_scale: float = 0.75,
                 shuffle_seq: bool = False, final_seq_length: int = 40, seed: int = 42,
                 eps: float = 1e-8) -> dict[str, np.ndarray]:
    """The reference's ``make_dataset(args)`` with the same keys: x [n_train, final],
    x_test, y, y_test, t (the resampled time grid), templates; float64."""
    tpl = templates()
    low, high = padding
    n_mid = template_len + high  # the reference's intermediate length
    per_class = num_samples // len(tpl["y"])
    labels = np.repeat(tpl["y"], per_class)
    n = len(labels)
    rs = np.random.RandomState(seed)
    pad, scale_u, k, g, shear_u = _draws(rs, n, low, high, max_translation, n_mid)

    # 1-2. add eps, append p zeros, resample the 12 + p points to n_mid, (4.) roll right by k:
    # one curve per (digit, p, k), computed once and gathered (a roll commutes with step 3)
    base = tpl["x"].shape[1]
    padded = np.zeros((len(tpl["y"]), base + high))
    padded[:, :base] = tpl["x"] + eps
    curves = np.stack([_interp(padded, base + q, n_mid) for q in range(low, high + 1)], 1)
    cols = (np.arange(n_mid)[None, :] - np.arange(max_translation)[:, None]) % n_mid
    rolled = curves[:, :, cols].reshape(-1, n_mid)  # [(digit, p, k), n_mid]
    row = (labels * (high - low + 1) + pad - low) * max_translation + k
    scale = 1 + scale_coeff * (scale_u - 0.5)
    shear = shear_scale * (shear_u - 0.5)
    ramp = np.linspace(-0.5, 0.5, n_mid)
    x = np.empty((n, final_seq_length))
    for a in range(0, n, _CHUNK):  # chunks that stay in cache
        c = slice(a, a + _CHUNK)
        xc = rolled[row[c]]
        xc *= scale[c, None]  # 3. scale
        # 5-6. exact zeros become correlated noise; iid noise everywhere
        xc = np.where(xc != 0, xc, _smooth(corr_noise_scale * g[c, :n_mid]))
        xc += iid_noise_scale * g[c, n_mid:]
        xc -= shear[c, None] * ramp  # 7. shear
        x[c] = _interp(xc, n_mid, final_seq_length)  # 8. resample
    t = np.interp(np.linspace(0, 1, final_seq_length), np.linspace(0, 1, n_mid),
                  np.interp(np.linspace(0, 1, n_mid), np.linspace(0, 1, base), tpl["t"]))

    order = rs.permutation(n)
    x, y = x[order], labels[order]
    if shuffle_seq:
        x = x[..., rs.permutation(final_seq_length)]
    t = t / x.std()
    x = (x - x.mean()) / x.std()
    split = int(n * train_split)
    return {"x": x[:split], "x_test": x[split:], "y": y[:split], "y_test": y[split:], "t": t,
            "templates": tpl}

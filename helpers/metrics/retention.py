"""Detail retention: how much of the original's fine detail a decoded image keeps. A reported measure, NOT a
quality score.

High-frequency (HF) energy of an image = the variance of ``luma - GaussianBlur(luma, sigma=2 px)``, luma being
BT.601 ``0.299 R + 0.587 G + 0.114 B`` on 0..255 values, the blur separable with a kernel truncated at 4 sigma and
borders mirrored (``scipy.ndimage.gaussian_filter``'s defaults, checked against it in the tests). The retention of
a decoded image is its HF energy divided by the original's: 1 = as much fine detail as the original, < 1 = detail
smoothed away (blur, a codec's low-pass), > 1 = more than the original. It says nothing about whether the detail
is the *right* detail: added noise scores above 1, so it is shown beside the fidelity metrics, never ranked on
its own (the registry marks it ``score=False``: no wins, no BD-rate, no "better" direction).
"""

from __future__ import annotations

import numpy as np

from .classic import ImageLike, _pair

__all__ = ["HF_SIGMA", "LUMA", "detail_retention", "gaussian_blur", "gaussian_kernel", "hf_energy", "luma"]

HF_SIGMA = 2.0
TRUNCATE = 4.0
LUMA = (0.299, 0.587, 0.114)


def luma(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 (uint8 or float, 0..255) -> H x W float64 BT.601 luma."""
    x = np.asarray(rgb, dtype=np.float64)
    return x[..., 0] * LUMA[0] + x[..., 1] * LUMA[1] + x[..., 2] * LUMA[2]


def gaussian_kernel(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian of the blur, truncated at ``TRUNCATE`` sigma (``2 * radius + 1`` taps)."""
    radius = int(TRUNCATE * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: np.ndarray, sigma: float = HF_SIGMA) -> np.ndarray:
    """2-D Gaussian blur of an H x W float array: separable, truncated at 4 sigma, borders mirrored (d c b a | a b c d)
    as scipy.ndimage.gaussian_filter does."""
    k = gaussian_kernel(sigma)
    r = len(k) // 2
    out = np.asarray(x, dtype=np.float64)
    for axis in (0, 1):
        n = out.shape[axis]
        if n == 1:
            continue
        # symmetric padding, repeated for kernels longer than the side (the mirror of a mirror, as scipy does)
        idx = np.arange(-r, n + r)
        period = 2 * n
        idx = np.mod(idx, period)
        idx = np.where(idx >= n, period - 1 - idx, idx)
        padded = np.take(out, idx, axis=axis)
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            sl = [slice(None)] * 2
            sl[axis] = slice(i, i + n)
            acc += w * padded[tuple(sl)]
        out = acc
    return out


def hf_energy(rgb: np.ndarray, sigma: float = HF_SIGMA) -> float:
    """Variance of ``luma - blur(luma)`` (0..255 luma units squared)."""
    y = luma(rgb)
    return float(np.var(y - gaussian_blur(y, sigma)))


def detail_retention(ref: ImageLike, test: ImageLike, sigma: float = HF_SIGMA) -> float | None:
    """HF energy of ``test`` / HF energy of ``ref``; None where the original has no high frequencies (a flat image)."""
    a, b = _pair(ref, test)
    e_ref = hf_energy(a, sigma)
    if e_ref <= 0.0:
        return None
    return hf_energy(b, sigma) / e_ref

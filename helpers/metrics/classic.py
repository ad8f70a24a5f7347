"""Classic full-reference metrics on uint8 RGB images: PSNR, SSIM, MS-SSIM, detail change, bits per pixel.

Inputs are PIL images (converted to RGB) or HxWx3 uint8 numpy arrays; both images of a pair
must have the same size.

* :func:`psnr` -- over all RGB values, peak 255.
* :func:`ssim` -- Wang et al. (2004) SSIM with an 11x11 Gaussian window (sigma 1.5), K1=0.01,
  K2=0.03, data range 255, population (not sample) covariances, computed only where the window
  fits inside the image ("valid" region; identical to scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``,
  which crops that border).  Computed per RGB channel, then averaged over the 3 channels.
* :func:`ms_ssim` -- Wang, Simoncelli & Bovik (2003) 5-scale MS-SSIM with the weights
  0.0448, 0.2856, 0.3001, 0.2363, 0.1333, the same window and constants as :func:`ssim`, and
  2x2 average pooling between scales (an odd trailing row/column is dropped).  The contrast-
  structure terms of scales 1-4 and the SSIM of scale 5 are clamped at 0 before the fractional
  powers (as in ``pytorch_msssim``).  Computed per RGB channel, then averaged.  Needs both
  sides >= 176 pixels (the window must fit at the 5th scale).
  Both filter in float32 (within 1e-6 of a float64 computation, half the time).
* :func:`ssim_ms_ssim` -- both at once (MS-SSIM's first scale is SSIM's computation).
* :func:`detail_change` / :func:`detail_summary` -- invented or lost fine detail per block (Laplacian
  energy ratio); the outermost ring of blocks is not measured by default (``border``, see there).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

from ..errors import ImageInputError, SDCError

__all__ = [
    "MS_SSIM_MIN_SIDE",
    "MS_SSIM_WEIGHTS",
    "DETAIL_BORDER",
    "bpp",
    "detail_change",
    "detail_summary",
    "interior_blocks",
    "ms_ssim",
    "psnr",
    "ssim",
    "ssim_ms_ssim",
]

ImageLike = Image.Image | np.ndarray

_WIN = 11
_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_MIN_SIDE = _WIN * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176


def _to_array(img: ImageLike, name: str) -> np.ndarray:
    """Return ``img`` as an HxWx3 uint8 array."""
    if isinstance(img, Image.Image):
        return np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ImageInputError(
                f"{name} must be an HxWx3 uint8 RGB array, got shape {img.shape} dtype {img.dtype}; "
                "convert it with np.asarray(pil_image.convert('RGB'))"
            )
        return img
    raise ImageInputError(
        f"{name} must be a PIL image or an HxWx3 uint8 array, got {type(img).__name__}; "
        "load it with PIL.Image.open(path)"
    )


def _pair(ref: ImageLike, test: ImageLike) -> tuple[np.ndarray, np.ndarray]:
    a, b = _to_array(ref, "ref"), _to_array(test, "test")
    if a.shape != b.shape:
        raise ImageInputError(
            f"image sizes differ: ref is {a.shape[1]}x{a.shape[0]}, test is {b.shape[1]}x{b.shape[0]}; "
            "compare images of the same size (crop or resize one of them first)"
        )
    return a, b


def psnr(ref: ImageLike, test: ImageLike) -> float:
    """Peak signal-to-noise ratio in dB over all RGB values (peak 255); ``inf`` if identical."""
    a, b = _pair(ref, test)
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_window() -> np.ndarray:
    x = np.arange(_WIN, dtype=np.float64) - (_WIN - 1) / 2
    g = np.exp(-(x**2) / (2 * _SIGMA**2))
    return g / g.sum()


_GAUSS = _gaussian_window()


def _filter_valid(x: np.ndarray) -> np.ndarray:
    """Separable 11x11 Gaussian filter over the last two axes of a (..., H, W) array, keeping only the
    'valid' region (channels-first: both passes run along contiguous or row-contiguous memory)."""
    r = _WIN // 2
    y = correlate1d(x, _GAUSS, axis=-1, mode="nearest")[..., r:-r]
    return correlate1d(y, _GAUSS, axis=-2, mode="nearest")[..., r:-r, :]


def _planes(img: np.ndarray) -> np.ndarray:
    """HxWxC uint8 -> CxHxW float32 (float32 keeps SSIM within 1e-6 of float64 at half the cost)."""
    return np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)


def _ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of two float CxHxW arrays."""
    mu_x, mu_y, xx, yy, xy = _filter_valid(np.stack([x, y, x * x, y * y, x * y]))
    sxx = xx - mu_x * mu_x
    syy = yy - mu_y * mu_y
    sxy = xy - mu_x * mu_y
    cs_map = (2 * sxy + _C2) / (sxx + syy + _C2)
    lum_map = (2 * mu_x * mu_y + _C1) / (mu_x * mu_x + mu_y * mu_y + _C1)
    return (lum_map * cs_map).mean(axis=(1, 2), dtype=np.float64), cs_map.mean(axis=(1, 2), dtype=np.float64)


def ssim(ref: ImageLike, test: ImageLike) -> float:
    """Mean SSIM (Gaussian 11x11, sigma 1.5, range 255), per RGB channel then averaged."""
    a, b = _pair(ref, test)
    if min(a.shape[:2]) < _WIN:
        raise ImageInputError(
            f"SSIM needs images of at least {_WIN}x{_WIN}, got {a.shape[1]}x{a.shape[0]}; use larger images"
        )
    s, _ = _ssim_cs(_planes(a), _planes(b))
    return float(s.mean())


def _downsample2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling over the last two axes (an odd trailing row/column is dropped)."""
    h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
    x = x[..., :h, :w]
    return 0.25 * (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2])


def _ms_ssim_arrays(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(SSIM, MS-SSIM) of two float CxHxW arrays whose sides are >= MS_SSIM_MIN_SIDE."""
    result = np.ones(x.shape[0])
    first = 0.0
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        s, cs = _ssim_cs(x, y)
        if level == 0:
            first = float(s.mean())
        term = s if level == last else cs
        result *= np.maximum(term, 0.0) ** weight
        if level < last:
            x, y = _downsample2(x), _downsample2(y)
    return first, float(result.mean())


def ms_ssim(ref: ImageLike, test: ImageLike) -> float:
    """5-scale MS-SSIM (Wang 2003 weights), per RGB channel then averaged."""
    a, b = _pair(ref, test)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        raise ImageInputError(
            f"MS-SSIM needs both sides >= {MS_SSIM_MIN_SIDE} px (5 scales, 11x11 window), "
            f"got {a.shape[1]}x{a.shape[0]}; use ssim() for small images"
        )
    return _ms_ssim_arrays(_planes(a), _planes(b))[1]


def ssim_ms_ssim(ref: ImageLike, test: ImageLike) -> tuple[float, float | None]:
    """``(ssim, ms_ssim)`` in one pass (the same numbers as :func:`ssim` and :func:`ms_ssim`);
    ``ms_ssim`` is None for images with a side under 176 pixels."""
    a, b = _pair(ref, test)
    if min(a.shape[:2]) < MS_SSIM_MIN_SIDE:
        return ssim(a, b), None
    return _ms_ssim_arrays(_planes(a), _planes(b))


DETAIL_BORDER = 1
"""Blocks of the outermost ring that :func:`detail_change` leaves unmeasured by default (see ``border``)."""


def interior_blocks(shape: tuple[int, int], border: int = DETAIL_BORDER) -> np.ndarray:
    """Boolean mask of the blocks of an (rows, cols) block map that lie at least ``border`` blocks inside the
    image; every block when the map is too small to drop a ring on each side (under ``2 * border + 1``)."""
    if border < 0:
        raise SDCError(f"border must be >= 0 blocks, got {border}; pass 0 to measure every block")
    mask = np.ones(shape, bool)
    if border and min(shape) >= 2 * border + 1:
        mask[:border, :] = mask[-border:, :] = False
        mask[:, :border] = mask[:, -border:] = False
    return mask


def detail_change(
    ref: ImageLike, test: ImageLike, window: int = 16, eps: float = 4.0, border: int = DETAIL_BORDER
) -> np.ndarray:
    """Where a decoder invented or lost fine detail: per ``window`` x ``window`` block,
    ``log2((E_test + eps) / (E_ref + eps))`` with E the mean squared Laplacian of the luma (high-frequency
    energy). > 0: more fine structure than the original (invented texture, ringing, block edges);
    < 0: detail lost (blur). ``eps`` (in squared 8-bit luma units) keeps flat blocks from dominating.
    Returns an (H // window, W // window) float array.

    ``border``: the outermost ``border`` rings of blocks are NaN (not measured), as long as the map keeps
    at least one block between them (else every block is measured). There the Laplacian sees the image
    edge: Kodak's darker first row, which decoders render darker still, scores as "invented detail" in a
    block that shows flat sky (kodim20). ``border=0`` measures every block.
    """
    a, b = _pair(ref, test)

    def energy(x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lap = np.zeros_like(y)
        lap[1:-1, 1:-1] = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1]
        h, w = (y.shape[0] // window) * window, (y.shape[1] // window) * window
        return (lap[:h, :w] ** 2).reshape(h // window, window, w // window, window).mean((1, 3))

    d = np.log2((energy(b) + eps) / (energy(a) + eps))
    d[~interior_blocks(d.shape, border)] = np.nan
    return d


def detail_summary(
    ref: ImageLike, test: ImageLike, window: int = 16, threshold: float = 1.0, border: int = DETAIL_BORDER
) -> dict[str, float]:
    """Share of the measured blocks (:func:`detail_change`, edge ring excluded unless ``border=0``) where the
    test image has at least 2**threshold times more (``invented``) or less (``lost``) high-frequency energy
    than the reference, and the mean log2 ratio (``mean_log2``)."""
    d = detail_change(ref, test, window, border=border)
    d = d[np.isfinite(d)]
    return {
        "invented": float((d >= threshold).mean()),
        "lost": float((d <= -threshold).mean()),
        "mean_log2": float(d.mean()),
    }


def bpp(nbytes: int, width: int, height: int) -> float:
    """Bits per pixel: ``8 * nbytes / (width * height)``."""
    if width <= 0 or height <= 0:
        raise ImageInputError(f"image size must be positive, got {width}x{height}; pass the real image size")
    if nbytes < 0:
        raise SDCError(f"byte count must be >= 0, got {nbytes}; pass the compressed file size")
    return 8.0 * nbytes / (width * height)

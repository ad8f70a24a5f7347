"""Image quality metrics on uint8 RGB images: PSNR, SSIM, MS-SSIM, LPIPS and bits per pixel.

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
* LPIPS -- via the ``lpips`` package.  Its backbone (torchvision's ImageNet AlexNet/VGG16/
  SqueezeNet weights) is read only from the torch hub cache (``$TORCH_HOME/hub/checkpoints``),
  checked against the SHA-256 prefix in its file name, and loaded explicitly; nothing is ever
  downloaded and a randomly initialised backbone is never used.  When the checkpoint is missing
  or broken, LPIPS is reported unavailable (:func:`lpips_status`).
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.ndimage import correlate1d

from .errors import ImageInputError, SDCError, UnavailableError

__all__ = [
    "MS_SSIM_WEIGHTS",
    "LPIPSMetric",
    "all_metrics",
    "bpp",
    "detail_change",
    "detail_summary",
    "lpips_distance",
    "lpips_status",
    "ms_ssim",
    "psnr",
    "ssim",
]

ImageLike = Image.Image | np.ndarray

_WIN = 11
_SIGMA = 1.5
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
_MS_SSIM_MIN_SIDE = _WIN * 2 ** (len(MS_SSIM_WEIGHTS) - 1)  # 176


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
    """Separable 11x11 Gaussian filter of an HxWxC array, keeping only the 'valid' region."""
    r = _WIN // 2
    y = correlate1d(x, _GAUSS, axis=0, mode="nearest")[r:-r]
    return correlate1d(y, _GAUSS, axis=1, mode="nearest")[:, r:-r]


def _ssim_cs(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean SSIM and mean contrast-structure term of two float HxWxC arrays."""
    mu_x, mu_y = _filter_valid(x), _filter_valid(y)
    sxx = _filter_valid(x * x) - mu_x * mu_x
    syy = _filter_valid(y * y) - mu_y * mu_y
    sxy = _filter_valid(x * y) - mu_x * mu_y
    cs_map = (2 * sxy + _C2) / (sxx + syy + _C2)
    lum_map = (2 * mu_x * mu_y + _C1) / (mu_x * mu_x + mu_y * mu_y + _C1)
    return (lum_map * cs_map).mean(axis=(0, 1)), cs_map.mean(axis=(0, 1))


def ssim(ref: ImageLike, test: ImageLike) -> float:
    """Mean SSIM (Gaussian 11x11, sigma 1.5, range 255), per RGB channel then averaged."""
    a, b = _pair(ref, test)
    if min(a.shape[:2]) < _WIN:
        raise ImageInputError(
            f"SSIM needs images of at least {_WIN}x{_WIN}, got {a.shape[1]}x{a.shape[0]}; use larger images"
        )
    s, _ = _ssim_cs(a.astype(np.float64), b.astype(np.float64))
    return float(s.mean())


def _downsample2(x: np.ndarray) -> np.ndarray:
    """2x2 average pooling (an odd trailing row/column is dropped)."""
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    x = x[:h, :w]
    return 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])


def ms_ssim(ref: ImageLike, test: ImageLike) -> float:
    """5-scale MS-SSIM (Wang 2003 weights), per RGB channel then averaged."""
    a, b = _pair(ref, test)
    if min(a.shape[:2]) < _MS_SSIM_MIN_SIDE:
        raise ImageInputError(
            f"MS-SSIM needs both sides >= {_MS_SSIM_MIN_SIDE} px (5 scales, 11x11 window), "
            f"got {a.shape[1]}x{a.shape[0]}; use ssim() for small images"
        )
    x, y = a.astype(np.float64), b.astype(np.float64)
    result = np.ones(a.shape[2])
    last = len(MS_SSIM_WEIGHTS) - 1
    for level, weight in enumerate(MS_SSIM_WEIGHTS):
        s, cs = _ssim_cs(x, y)
        term = s if level == last else cs
        result *= np.maximum(term, 0.0) ** weight
        if level < last:
            x, y = _downsample2(x), _downsample2(y)
    return float(result.mean())


def detail_change(ref: ImageLike, test: ImageLike, window: int = 16, eps: float = 4.0) -> np.ndarray:
    """Where a decoder invented or lost fine detail: per ``window`` x ``window`` block,
    ``log2((E_test + eps) / (E_ref + eps))`` with E the mean squared Laplacian of the luma (high-frequency
    energy). > 0: more fine structure than the original (invented texture, ringing, block edges);
    < 0: detail lost (blur). ``eps`` (in squared 8-bit luma units) keeps flat blocks from dominating.
    Returns an (H // window, W // window) float array.
    """
    a, b = _pair(ref, test)

    def energy(x: np.ndarray) -> np.ndarray:
        y = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        lap = np.zeros_like(y)
        lap[1:-1, 1:-1] = (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4 * y[1:-1, 1:-1])
        h, w = (y.shape[0] // window) * window, (y.shape[1] // window) * window
        return (lap[:h, :w] ** 2).reshape(h // window, window, w // window, window).mean((1, 3))

    return np.log2((energy(b) + eps) / (energy(a) + eps))


def detail_summary(ref: ImageLike, test: ImageLike, window: int = 16, threshold: float = 1.0) -> dict[str, float]:
    """Share of blocks where the test image has at least 2**threshold times more (``invented``) or less
    (``lost``) high-frequency energy than the reference, and the mean log2 ratio (``mean_log2``)."""
    d = detail_change(ref, test, window)
    return {"invented": float((d >= threshold).mean()), "lost": float((d <= -threshold).mean()),
            "mean_log2": float(d.mean())}


def bpp(nbytes: int, width: int, height: int) -> float:
    """Bits per pixel: ``8 * nbytes / (width * height)``."""
    if width <= 0 or height <= 0:
        raise ImageInputError(f"image size must be positive, got {width}x{height}; pass the real image size")
    if nbytes < 0:
        raise SDCError(f"byte count must be >= 0, got {nbytes}; pass the compressed file size")
    return 8.0 * nbytes / (width * height)


# ----------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------

# net -> (torchvision weights enum name, checkpoint file name as published by torchvision)
_LPIPS_BACKBONES: dict[str, tuple[str, str]] = {
    "alex": ("AlexNet_Weights", "alexnet-owt-7be5be79.pth"),
    "vgg": ("VGG16_Weights", "vgg16-397923af.pth"),
    "squeeze": ("SqueezeNet1_1_Weights", "squeezenet1_1-b8a52dc0.pth"),
}

_MODELS: dict[tuple[str, str], Any] = {}  # (net, checkpoint path) -> loaded lpips.LPIPS
_VERIFIED: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose hash matched


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _checkpoint_path(net: str) -> Path:
    """Where torchvision would cache the ImageNet backbone of LPIPS ``net``."""
    import torch.hub

    enum_name, filename = _LPIPS_BACKBONES[net]
    try:
        import torchvision.models as tvm

        filename = Path(getattr(tvm, enum_name).IMAGENET1K_V1.url).name
    except Exception:  # keep the published file name
        pass
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _verify_checkpoint(path: Path) -> None:
    """Check the SHA-256 prefix that torchvision puts in the checkpoint's file name."""
    match = re.search(r"-([a-f0-9]+)\.", path.name)
    if match is None:
        return
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _VERIFIED:
        return
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(match.group(1)):
        raise UnavailableError(
            f"LPIPS backbone checkpoint {path} is corrupt (SHA-256 does not start with "
            f"{match.group(1)}); delete it and copy a complete {path.name} there"
        )
    _VERIFIED.add(key)


def _load_backbone(backbone: Any, state: dict[str, Any], path: Path) -> None:
    """Copy torchvision ``features.N.*`` weights into lpips' ``sliceK.N.*`` modules, strictly."""
    target = backbone.state_dict()
    new_state = {}
    for key, value in target.items():
        match = re.fullmatch(r"slice\d+\.(\d+)\.(.+)", key)
        src = f"features.{match.group(1)}.{match.group(2)}" if match else None
        if src is None or src not in state or tuple(state[src].shape) != tuple(value.shape):
            raise UnavailableError(
                f"LPIPS backbone checkpoint {path} does not match the network (no {src or key} of shape "
                f"{tuple(value.shape)}); replace it with torchvision's {path.name}"
            )
        new_state[key] = state[src]
    backbone.load_state_dict(new_state, strict=True)


def _load_lpips(net: str) -> Any:
    """Return the cached ``lpips.LPIPS`` model for ``net``; raise UnavailableError if impossible."""
    if net not in _LPIPS_BACKBONES:
        raise SDCError(f"unknown LPIPS network {net!r}; use one of: {', '.join(_LPIPS_BACKBONES)}")
    try:
        import lpips
        import torch
    except Exception as exc:
        raise UnavailableError(
            _one_line(f"LPIPS is unavailable: cannot import lpips/torch ({exc}); install lpips and torch")
        ) from None
    path = _checkpoint_path(net)
    key = (net, str(path))
    if key in _MODELS:
        return _MODELS[key]
    if not path.is_file():
        raise UnavailableError(
            f"LPIPS ({net}) is unavailable: the ImageNet backbone {path.name} is not in the torch hub "
            f"cache {path.parent} and is never downloaded here; copy it there (or set TORCH_HOME)"
        )
    try:
        _verify_checkpoint(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # pnet_rand=True: build the backbone without touching the network; the real
            # ImageNet weights are then loaded strictly from the local checkpoint.
            model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
        _load_backbone(model.net, state, path)
    except UnavailableError:
        raise
    except Exception as exc:
        raise UnavailableError(
            _one_line(f"LPIPS ({net}) is unavailable: loading {path} failed ({type(exc).__name__}: {exc}); "
                      "replace the checkpoint with torchvision's original file")
        ) from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    _MODELS[key] = model
    return model


def lpips_status(net: str = "alex") -> tuple[bool, str]:
    """``(True, where the backbone came from)`` if LPIPS can run here, else ``(False, one-line reason)``."""
    try:
        _load_lpips(net)
    except SDCError as exc:
        return False, _one_line(str(exc))
    return True, f"LPIPS ({net}) loaded from {_checkpoint_path(net)}"


class LPIPSMetric:
    """LPIPS distance (lower is more similar) with a model loaded once per process.

    Raises :class:`UnavailableError` on construction when the backbone is not available.
    """

    def __init__(self, net: str = "alex") -> None:
        self.net = net
        self.model = _load_lpips(net)

    def __call__(self, ref: ImageLike, test: ImageLike) -> float:
        import torch

        a, b = _pair(ref, test)

        def to_tensor(x: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(x.astype(np.float32) / 127.5 - 1.0)  # lpips expects [-1, 1]
            return t.permute(2, 0, 1)[None].contiguous()

        with torch.no_grad():
            return float(self.model(to_tensor(a), to_tensor(b)).item())


def lpips_distance(ref: ImageLike, test: ImageLike, net: str = "alex") -> float:
    """LPIPS distance between two images; raises :class:`UnavailableError` when offline."""
    return LPIPSMetric(net)(ref, test)


def all_metrics(ref: ImageLike, test: ImageLike, nbytes: int | None = None,
                lpips: bool = True) -> dict[str, float | int | None]:
    """``psnr``, ``ssim``, ``ms_ssim`` and ``lpips`` (plus ``bytes`` and ``bpp`` if ``nbytes``).

    ``lpips`` is None when LPIPS is unavailable here (see :func:`lpips_status`) or not asked for
    (``lpips=False`` skips the network even where it is available); ``ms_ssim`` is None for images
    with a side under 176 pixels.
    """
    a, b = _pair(ref, test)
    out: dict[str, float | int | None] = {"psnr": psnr(a, b), "ssim": ssim(a, b)}
    out["ms_ssim"] = ms_ssim(a, b) if min(a.shape[:2]) >= _MS_SSIM_MIN_SIDE else None
    out["lpips"] = None
    if lpips:
        try:
            out["lpips"] = lpips_distance(a, b)
        except UnavailableError:
            pass
    if nbytes is not None:
        out["bytes"] = int(nbytes)
        out["bpp"] = bpp(int(nbytes), a.shape[1], a.shape[0])
    return out

"""Classic image codecs (JPEG, WebP, AVIF, JPEG XL) matched to a byte budget.

Every encoder takes an RGB image and an integer quality and returns the compressed file as
bytes; :func:`decode_bytes` turns any of them back into an RGB image.  :func:`match_budget`
searches a codec's quality range for the file that meets a byte budget, under one of two rules:

* ``"ge"`` -- the rule of the 2022 Stable-Diffusion-compression Colab: the smallest file whose
  size is at least the budget (the classic codec gets *at least* as many bytes as the SD file);
* ``"le"`` -- the fairer rule: the largest file whose size is at most the budget.

Encoder settings (fixed so that results are reproducible):

* JPEG: Pillow/libjpeg, ``optimize=True``, 4:2:2 chroma subsampling, then a lossless
  re-optimisation with MozJPEG (``mozjpeg_lossless_optimization``, progressive scans), as in
  the 2022 Colab.  At some mid qualities MozJPEG's progressive stream comes out a few bytes
  *larger*; then the baseline stream is kept.  Both decode to identical pixels.
* WebP: libwebp, ``method=6`` (slowest, best compression).
* AVIF: Pillow's built-in AVIF plugin, ``speed=AVIF_SPEED`` (6, libavif's usual default: about
  0.1-0.3 s for a 512x512 image; speed 4 is ~4-5 % smaller but ~5x slower), 4:2:0.
* JPEG XL: ``pillow_jxl`` plugin, lossy VarDCT, ``effort=JXL_EFFORT`` (7, libjxl's default).
  Quality 100 is not allowed by the lossy encoder, so the range is 0-99.  Note that libjxl's
  size curve is not monotone in quality (around quality 18/19 the size drops by 5-20 %).
"""

from __future__ import annotations

import functools
import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import BudgetError, ImageInputError, SDCError, UnavailableError

try:  # registers the "JXL" format with Pillow
    import pillow_jxl  # noqa: F401

    _JXL_IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    _JXL_IMPORT_ERROR = f"pillow_jxl could not be imported ({type(exc).__name__}: {exc})"

try:
    import mozjpeg_lossless_optimization as _mozjpeg
except Exception:  # pragma: no cover - depends on the environment
    _mozjpeg = None

__all__ = [
    "AVIF_SPEED",
    "JXL_EFFORT",
    "CODECS",
    "BaselineResult",
    "CodecSpec",
    "available_codecs",
    "codec_status",
    "compare_at_budget",
    "decode_bytes",
    "encode_avif",
    "encode_jpeg",
    "encode_jxl",
    "encode_webp",
    "match_budget",
]

AVIF_SPEED = 6
"""libavif speed (0 slowest/best .. 10 fastest) used by :func:`encode_avif`."""

JXL_EFFORT = 7
"""libjxl effort (1 fastest .. 9 slowest/best) used by :func:`encode_jxl`."""

RULES = ("ge", "le")


def _as_rgb(img: Image.Image | np.ndarray) -> Image.Image:
    """Return ``img`` as an RGB PIL image (PIL images of any mode, alpha dropped, or HxWx3 uint8 arrays)."""
    if isinstance(img, Image.Image):
        if img.mode == "RGB":
            return img
        return img.convert("RGB")
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ImageInputError(
                f"expected an HxWx3 uint8 RGB array, got shape {img.shape} dtype {img.dtype}; "
                "convert it with np.asarray(pil_image.convert('RGB'))"
            )
        return Image.fromarray(img, "RGB")
    raise ImageInputError(
        f"expected a PIL image or an HxWx3 uint8 array, got {type(img).__name__}; "
        "load the image with PIL.Image.open(path)"
    )


def _check_quality(quality: int, qrange: tuple[int, int], codec: str) -> int:
    q = int(quality)
    if q != quality or not qrange[0] <= q <= qrange[1]:
        raise SDCError(
            f"{codec} quality must be an integer in {qrange[0]}..{qrange[1]}, got {quality!r}; "
            "pass a quality inside that range"
        )
    return q


def _save(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def encode_jpeg(img: Image.Image, quality: int) -> bytes:
    """JPEG at ``quality`` (1-100): libjpeg ``optimize=True``, 4:2:2, then MozJPEG lossless pass."""
    q = _check_quality(quality, (1, 100), "jpeg")
    if _mozjpeg is None:
        raise UnavailableError(
            "mozjpeg_lossless_optimization is not installed; "
            "install it with `pip install mozjpeg-lossless-optimization`"
        )
    data = _save(_as_rgb(img), "JPEG", quality=q, optimize=True, subsampling=1)
    optimised = _mozjpeg.optimize(data)
    return optimised if len(optimised) <= len(data) else data


def encode_webp(img: Image.Image, quality: int) -> bytes:
    """Lossy WebP at ``quality`` (0-100), ``method=6``."""
    q = _check_quality(quality, (0, 100), "webp")
    return _save(_as_rgb(img), "WEBP", quality=q, method=6)


def encode_avif(img: Image.Image, quality: int) -> bytes:
    """AVIF at ``quality`` (0-100) with Pillow's built-in plugin, ``speed=AVIF_SPEED``."""
    q = _check_quality(quality, (0, 100), "avif")
    return _save(_as_rgb(img), "AVIF", quality=q, speed=AVIF_SPEED)


def encode_jxl(img: Image.Image, quality: int) -> bytes:
    """Lossy JPEG XL at ``quality`` (0-99) with ``pillow_jxl``, ``effort=JXL_EFFORT``."""
    q = _check_quality(quality, (0, 99), "jxl")
    if _JXL_IMPORT_ERROR is not None:
        raise UnavailableError(f"{_JXL_IMPORT_ERROR}; install pillow-jxl-plugin")
    # Copy so that pillow_jxl never takes its lossless JPEG-recompression path for JPEG inputs.
    rgb = _as_rgb(img).copy()
    return _save(rgb, "JXL", quality=q, effort=JXL_EFFORT, lossless=False, lossless_jpeg=False)


def decode_bytes(data: bytes) -> Image.Image:
    """Decode a compressed file (any format Pillow can read, JPEG XL included) to RGB."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageInputError(f"expected bytes, got {type(data).__name__}; pass the file contents")
    raw = bytes(data)
    if not raw:
        raise ImageInputError("cannot decode an empty byte string; pass a complete image file")
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            return im.convert("RGB")
    except UnidentifiedImageError:
        detail = "not a recognised image format"
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        detail = detail if len(detail) <= 80 else detail[:77] + "..."
    raise ImageInputError(
        f"cannot decode {len(raw)} bytes as an image ({detail}); pass a complete JPEG/WebP/AVIF/JXL/PNG file"
    )


class CodecSpec(NamedTuple):
    """A codec's encoder and its inclusive integer quality range."""

    encode: Callable[[Image.Image, int], bytes]
    quality_range: tuple[int, int]


CODECS: dict[str, CodecSpec] = {
    "jpeg": CodecSpec(encode_jpeg, (1, 100)),
    "webp": CodecSpec(encode_webp, (0, 100)),
    "avif": CodecSpec(encode_avif, (0, 100)),
    "jxl": CodecSpec(encode_jxl, (0, 99)),
}


@functools.cache
def codec_status() -> dict[str, str | None]:
    """Probe each codec once (encode+decode a tiny image): name -> None if usable, else the reason."""
    probe = Image.fromarray(
        (np.arange(16 * 16 * 3, dtype=np.uint32).reshape(16, 16, 3) * 7 % 256).astype(np.uint8), "RGB"
    )
    status: dict[str, str | None] = {}
    for name, spec in CODECS.items():
        try:
            out = decode_bytes(spec.encode(probe, (spec.quality_range[0] + spec.quality_range[1]) // 2))
            status[name] = None if out.size == probe.size else f"{name} round trip changed the image size"
        except Exception as exc:  # any failure means "unavailable", never a crash
            status[name] = " ".join(f"{name} is unavailable: {type(exc).__name__}: {exc}".split())
    return status


def available_codecs() -> list[str]:
    """Names of the codecs that can encode and decode in this environment."""
    return [name for name, reason in codec_status().items() if reason is None]


@dataclass
class BaselineResult:
    """A classic-codec file chosen for a byte budget."""

    codec: str
    quality: int
    data: bytes = field(repr=False)
    nbytes: int
    image: Image.Image = field(repr=False)
    rule: str


# Quality sub-ranges within which a codec's file size is (nearly) monotone.  libjxl's size drops
# by 3-20 % from quality 18 to 19 on every Kodak image (distance ~10.0 -> ~9.5), so JPEG XL is
# searched in two pieces.  Codecs not listed are searched over their whole range.
_MONOTONE_SEGMENTS: dict[str, tuple[tuple[int, int], ...]] = {"jxl": ((0, 18), (19, 99))}


def _search_quality(
    size: Callable[[int], int], segments: Iterable[tuple[int, int]], budget: int, rule: str, window: int = 3
) -> int:
    """Quality whose ``size(q)`` best meets ``budget`` under ``rule``.

    ``segments`` are inclusive quality ranges, in increasing order, that together make up the
    codec's range.  ``"ge"``: the smallest size >= budget (the top quality if every size is
    below the budget); ``"le"``: the largest size <= budget (:class:`BudgetError` if every size
    exceeds it).  Within each segment sizes are assumed roughly monotone: a bisection finds the
    crossing, then the ``window`` qualities either side of the best candidate so far are
    checked, repeatedly, so that a small non-monotonicity cannot hide a better file next to the
    crossing.  Ties go to the lower quality for ``"ge"`` and to the higher quality for ``"le"``.
    """
    segments = list(segments)
    lo, hi = segments[0][0], segments[-1][1]
    seen: dict[int, int] = {}

    def s(q: int) -> int:
        if q not in seen:
            seen[q] = size(q)
        return seen[q]

    def fits(q: int) -> bool:
        return s(q) >= budget if rule == "ge" else s(q) <= budget

    for a, b in segments:
        # Invariant: fits(b) for "ge" / fits(a) for "le", and the other end does not fit.
        if rule == "ge" and (s(b) < budget or s(a) >= budget):
            continue
        if rule == "le" and (s(a) > budget or s(b) <= budget):
            continue
        while b - a > 1:
            m = (a + b) // 2
            if fits(m) == (rule == "ge"):
                b = m
            else:
                a = m

    def key(q: int) -> tuple[int, int]:  # smaller is better
        return (s(q), q) if rule == "ge" else (-s(q), -q)

    candidates = [q for q in seen if fits(q)]
    if not candidates:
        if rule == "ge":
            return hi
        raise BudgetError(
            f"a budget of {budget} bytes is below the smallest achievable file "
            f"({min(seen.values())} bytes at the lowest qualities); raise the budget or use rule='ge'"
        )
    best = min(candidates, key=key)
    checked: set[int] = set()
    while best not in checked:
        checked.add(best)
        for q in range(max(lo, best - window), min(hi, best + window) + 1):
            s(q)
        best = min((q for q in seen if fits(q)), key=key)
    return best


def match_budget(
    img: Image.Image,
    codec: str,
    budget_bytes: int,
    rule: str = "ge",
    encodes: dict[int, bytes] | None = None,
    seconds: dict[int, float] | None = None,
) -> BaselineResult:
    """Encode ``img`` with ``codec`` at the quality that meets ``budget_bytes`` under ``rule``.

    ``rule="ge"``: the smallest file of at least ``budget_bytes`` (the 2022 Colab's rule; the
    top quality if even that is smaller).  ``rule="le"``: the largest file of at most
    ``budget_bytes``; raises :class:`BudgetError` if even the lowest quality is larger.
    Encodes are cached within the call; pass ``encodes`` (quality -> bytes, a dict the caller keeps per
    image and codec) to share them across calls, and ``seconds`` to collect each fresh encode's time.
    """
    if codec not in CODECS:
        raise SDCError(f"unknown codec {codec!r}; use one of: {', '.join(CODECS)}")
    if rule not in RULES:
        raise SDCError(f"unknown budget rule {rule!r}; use 'ge' (size >= budget) or 'le' (size <= budget)")
    if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, (int, np.integer)) or budget_bytes <= 0:
        raise BudgetError(f"byte budget must be a positive integer, got {budget_bytes!r}; pass e.g. 5000")
    reason = codec_status().get(codec)
    if reason is not None:
        raise UnavailableError(reason)

    rgb = _as_rgb(img)
    spec = CODECS[codec]
    encoded: dict[int, bytes] = {} if encodes is None else encodes

    def size(q: int) -> int:
        if q not in encoded:
            t0 = time.perf_counter()
            encoded[q] = spec.encode(rgb, q)
            if seconds is not None:
                seconds[q] = time.perf_counter() - t0
        return len(encoded[q])

    segments = _MONOTONE_SEGMENTS.get(codec, (spec.quality_range,))
    try:
        q = _search_quality(size, segments, int(budget_bytes), rule)
    except BudgetError as exc:
        raise BudgetError(f"{codec} on a {rgb.width}x{rgb.height} image: {exc}") from None
    data = encoded[q]
    return BaselineResult(codec=codec, quality=q, data=data, nbytes=len(data), image=decode_bytes(data), rule=rule)


def compare_at_budget(
    img: Image.Image, budget_bytes: int, codecs: Iterable[str] | None = None, rule: str = "ge"
) -> dict[str, BaselineResult]:
    """:func:`match_budget` for several codecs (default: every available one), keyed by name.

    With ``rule="le"`` a codec that cannot go down to the budget raises :class:`BudgetError`.
    """
    names = available_codecs() if codecs is None else list(codecs)
    return {name: match_budget(img, name, budget_bytes, rule=rule) for name in names}

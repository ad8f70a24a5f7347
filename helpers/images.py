"""Image I/O and the resize/crop policy, kept explicit because the latent grid is 8x coarser than pixels.

Policies:
* ``pad8`` (default): keep the image as is, pad right/bottom by edge replication to a multiple of 8,
  crop the padding off after decoding. Any size works, nothing is resampled.
* ``crop512``: the 2022 notebook's input: center-crop to a square, resize to 512x512 (Lanczos) if needed.
  Kodak's 768x512 images become their central 512x512 crop, with no resampling.
* ``none``: the image must already be a multiple of 8 on both sides.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageInputError

MIN_SIDE = 16
MAX_SIDE = 65535  # the .sdc header stores sizes as uint16; the pixel cap (bitstream.Limits) is the real bound
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


def _max_pixels(max_pixels: int | None) -> int:
    from .bitstream import Limits

    return max_pixels if max_pixels is not None else Limits.default().max_pixels


def _parse_background(background) -> tuple[int, int, int]:
    from PIL import ImageColor

    if isinstance(background, (tuple, list)):
        return tuple(int(v) for v in background[:3])
    try:
        return ImageColor.getrgb(str(background))[:3]
    except ValueError:
        raise ImageInputError(f"unknown background colour '{background}': use a name (white) or #rrggbb") from None


def _to_8bit_rgb(im: Image.Image, p: Path) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB without clipping: 16-bit grey is scaled by 1/257 (Pillow's own
    conversion clips it to white); 32-bit integer / float grey is scaled from its evident range."""
    if im.mode in _SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.float64)
        return Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
    if im.mode in ("I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(np.nanmax(arr)) if arr.size else 0.0
        if not np.isfinite(arr).all() or float(arr.min()) < 0 or hi > 65535:
            raise ImageInputError(
                f"{p} holds {im.mode}-mode samples outside 0..65535; convert it to an 8- or 16-bit PNG first"
            )
        scale = 1.0 if hi <= 255 else 1 / 257.0
        return Image.fromarray(np.clip(np.rint(arr * scale), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def load_image(path: str | Path, background=None, max_pixels: int | None = None) -> Image.Image:
    """Open an image file as 8-bit RGB, as a viewer would show it, or fail with a one-line error.

    * EXIF orientation is applied (``ImageOps.exif_transpose``).
    * 16-bit images are scaled to 8 bits (not clipped).
    * Transparency: a fully opaque alpha channel is dropped; real transparency is refused unless
      ``background`` (a colour name or #rrggbb) is given, onto which the image is composited.
    * Animations and multi-page files are refused (camera MPO JPEGs keep their primary picture).
    * Images over the pixel cap (``bitstream.Limits``, default 8192 x 8192) are refused before decoding.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"image not found: {p}; check the path")
    cap = _max_pixels(max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p) as im:
                w, h = im.size
                if w * h > cap:
                    raise ImageInputError(
                        f"{p} is {w}x{h} = {w * h:,} pixels, over the pixel cap of {cap:,}: "
                        f"downscale it, or raise the cap with --max-pixels / SDCOMP_MAX_PIXELS"
                    )
                frames = getattr(im, "n_frames", 1)
                if frames > 1 and im.format != "MPO":
                    raise ImageInputError(
                        f"{p} is animated or has several pages ({frames} frames, {im.format}); "
                        f".sdc stores one still picture: extract a frame first "
                        f"(e.g. `ffmpeg -i in.gif -frames:v 1 frame.png`)"
                    )
                im.load()
                im = ImageOps.exif_transpose(im)
    except ImageInputError:
        raise
    except Image.DecompressionBombError:
        raise ImageInputError(
            f"{p} is larger than the pixel cap: downscale it, or raise the cap with --max-pixels / SDCOMP_MAX_PIXELS"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(
            f"cannot read {p} as an image ({type(exc).__name__}); pass a PNG/JPEG/WebP file"
        ) from None
    has_alpha = im.mode in _ALPHA_MODES or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA") if im.mode not in _SIXTEEN_BIT + ("I", "F") else _to_8bit_rgb(im, p).convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        if int(alpha.min()) < 255:
            if background is None:
                share = float((alpha < 255).mean())
                raise ImageInputError(
                    f"{p} has transparent pixels ({share:.1%} not opaque) and .sdc stores no alpha "
                    f"channel: pass --background white (or #rrggbb) to flatten it onto a colour"
                )
            flat = Image.new("RGBA", rgba.size, _parse_background(background) + (255,))
            flat.alpha_composite(rgba)
            return flat.convert("RGB")
        return rgba.convert("RGB")
    return _to_8bit_rgb(im, p)


def as_pil(img) -> Image.Image:
    """PIL image or HxWx3 uint8 array -> RGB PIL image."""
    if isinstance(img, Image.Image):
        return img.convert("RGB")
    arr = np.asarray(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ImageInputError(f"expected an RGB image or an HxWx3 uint8 array, got {arr.shape} {arr.dtype}")
    return Image.fromarray(arr)


def center_crop_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def apply_policy(
    img, policy: str = "pad8", multiple: int = 8, max_pixels: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Return (model input image, output size): the padded/cropped image and the size decode must restore."""
    img = as_pil(img)
    w, h = img.size
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise ImageInputError(f"image is {w}x{h}; supported sides are {MIN_SIDE}..{MAX_SIDE} pixels: resize it first")
    cap = _max_pixels(max_pixels)
    if w * h > cap:
        raise ImageInputError(
            f"image is {w}x{h} = {w * h:,} pixels, over the pixel cap of {cap:,}: downscale it, "
            f"or raise the cap with --max-pixels / SDCOMP_MAX_PIXELS"
        )
    if policy == "crop512":
        img = center_crop_square(img)
        if img.size != (512, 512):
            img = img.resize((512, 512), Image.Resampling.LANCZOS)
        return img, (512, 512)
    if policy == "none":
        if w % multiple or h % multiple:
            raise ImageInputError(f"image is {w}x{h}, not a multiple of {multiple}: use policy pad8 or crop512")
        return img, (w, h)
    if policy == "pad8":
        pw, ph = -w % multiple, -h % multiple
        if pw or ph:
            arr = np.pad(np.asarray(img), ((0, ph), (0, pw), (0, 0)), mode="edge")
            img = Image.fromarray(arr)
        return img, (w, h)
    raise ImageInputError(f"unknown image policy '{policy}': use pad8, crop512 or none")


def model_input(img, policy: str = "pad8", multiple: int = 8) -> tuple[Image.Image, Image.Image]:
    """(model input image, reference): the policy-applied input and the image the decoder must reproduce
    (the input with any padding cropped off; compare decoded images against this)."""
    model_img, size = apply_policy(img, policy, multiple)
    return model_img, model_img.crop((0, 0, *size))


def to_nchw(img) -> np.ndarray:
    """RGB PIL -> (1, 3, H, W) float32 numpy array in [-1, 1] (``x / 127.5 - 1``; what every runtime gets)."""
    arr = np.asarray(as_pil(img), dtype=np.float32)
    return np.ascontiguousarray((arr / 127.5 - 1.0).transpose(2, 0, 1)[None])


def signed_to_uint8(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(1, 3, H, W) float array in [-1, 1] -> (H, W, 3) uint8: ``round((clamp(x, -1, 1) + 1) * 127.5)`` in float32,
    rounding half to even. ``out``: an (H, W, 3) uint8 array (or a view of one, e.g. one tile of the whole
    image) to write into; tiled decoders convert each tile as it comes, so the same numbers result without a
    full-size float image."""
    y = np.clip(np.asarray(x[0], dtype=np.float32), -1, 1)  # a new array: the ops below work in place
    y += 1
    y *= np.float32(127.5)
    np.rint(y, out=y)
    if out is None:
        return np.ascontiguousarray(y.astype(np.uint8).transpose(1, 2, 0))
    out[...] = y.transpose(1, 2, 0)  # exact: y holds integers 0..255
    return out


def from_nchw(x) -> Image.Image:
    """(1, 3, H, W) float array (or torch tensor) in [-1, 1] -> RGB PIL: ``round((clamp(x, -1, 1) + 1) * 127.5)``
    in float32, rounding half to even (the same numbers as the torch expression it replaced)."""
    if not isinstance(x, np.ndarray):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return Image.fromarray(signed_to_uint8(x))


def to_tensor(img: Image.Image):
    """RGB PIL -> (1, 3, H, W) float32 torch tensor in [-1, 1]."""
    import torch

    return torch.from_numpy(to_nchw(img))


def to_pil(x) -> Image.Image:
    """(1, 3, H, W) tensor (or array) in [-1, 1] -> RGB PIL (clamped, rounded); see :func:`from_nchw`."""
    return from_nchw(x)


def to_array(img) -> np.ndarray:
    return np.asarray(as_pil(img), dtype=np.uint8)


def list_images(folder: str | Path, names: list[str] | None = None, keep_order: bool = False) -> list[Path]:
    """Image files in a folder (sorted), optionally only those whose stem or name is in ``names`` (with
    ``keep_order``: in the order of ``names``, e.g. a notebook's first image is its close look)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageInputError(f"image folder not found: {folder}; pass --data DIR (e.g. ../shared/data/kodak)")
    files = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
    )
    if names:
        wanted = {n for n in names}
        picked = [p for p in files if p.stem in wanted or p.name in wanted]
        missing = wanted - {p.stem for p in picked} - {p.name for p in picked}
        if missing:
            raise ImageInputError(f"images not found in {folder}: {', '.join(sorted(missing))}")
        files = picked
        if keep_order:
            rank = {n: i for i, n in enumerate(names)}
            files.sort(key=lambda p: min(rank.get(p.stem, len(rank)), rank.get(p.name, len(rank))))
    if not files:
        raise ImageInputError(f"no images in {folder}")
    return files


# ------------------------------------------------------------------------------------------
# writing decoded pixels in row bands (no second full-size copy of the image)
# ------------------------------------------------------------------------------------------

PNG_BAND_ROWS = 64  # rows filtered and compressed at a time: ~1.5 MiB of work arrays at 8192 pixels wide


def _png_chunk(fh, kind: bytes, data: bytes) -> None:
    import struct
    import zlib

    fh.write(struct.pack(">I", len(data)) + kind + data)
    fh.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))


def _png_filtered(band: np.ndarray, prev: np.ndarray) -> bytes:
    """PNG scanlines (filter byte + filtered row) for ``band`` (rows, W, 3 uint8) below row ``prev`` (zeros above
    the image), each row with the filter whose output has the smallest sum of absolute signed bytes (the usual
    adaptive heuristic, as libpng's and Pillow's encoders)."""
    rows, w = band.shape[:2]
    x = band.reshape(rows, w * 3).astype(np.int16)
    up = np.concatenate([prev.reshape(1, w * 3).astype(np.int16), x[:-1]])
    left = np.zeros_like(x)
    left[:, 3:] = x[:, :-3]
    upleft = np.zeros_like(x)
    upleft[:, 3:] = up[:, :-3]
    pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
    paeth = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    cands = np.stack([x, x - left, x - up, x - ((left + up) >> 1), x - paeth]) & 0xFF  # filters 0..4
    cost = np.where(cands > 127, 256 - cands, cands).sum(axis=2, dtype=np.int64)  # (5, rows)
    best = cost.argmin(axis=0)
    lines = np.empty((rows, 1 + w * 3), dtype=np.uint8)
    lines[:, 0] = best
    lines[:, 1:] = cands[best, np.arange(rows)]
    return lines.tobytes()


def write_png(path, pixels: np.ndarray, band_rows: int = PNG_BAND_ROWS, level: int = 6) -> None:
    """Write an (H, W, 3) uint8 array as an 8-bit RGB PNG, filtering and compressing ``band_rows`` rows at a
    time: the memory it needs besides ``pixels`` is a few bands, whatever the image size. Lossless (any PNG
    reader returns ``pixels``); zlib level 6 and per-row adaptive filters, as Pillow's default."""
    import struct
    import zlib

    h, w = pixels.shape[:2]
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"write_png takes an (H, W, 3) uint8 array, got {pixels.shape} {pixels.dtype}")
    comp = zlib.compressobj(level)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        _png_chunk(fh, b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        prev = np.zeros((w, 3), dtype=np.uint8)
        for y0 in range(0, h, band_rows):
            band = pixels[y0 : y0 + band_rows]
            data = comp.compress(_png_filtered(band, prev))
            prev = band[-1]
            if data:
                _png_chunk(fh, b"IDAT", data)
        _png_chunk(fh, b"IDAT", comp.flush())
        _png_chunk(fh, b"IEND", b"")


def save_pixels(path, pixels: np.ndarray, fmt: str) -> None:
    """Write decoded pixels: PNG and PPM in row bands (no second copy of the image); BMP and TIFF through
    Pillow (which needs the whole image as one PIL copy)."""
    if fmt == "PNG":
        write_png(path, pixels)
    elif fmt == "PPM":
        h, w = pixels.shape[:2]
        with open(path, "wb") as fh:
            fh.write(f"P6\n{w} {h}\n255\n".encode())
            for y0 in range(0, h, PNG_BAND_ROWS):
                fh.write(np.ascontiguousarray(pixels[y0 : y0 + PNG_BAND_ROWS]).tobytes())
    else:
        Image.fromarray(np.ascontiguousarray(pixels)).save(path, format=fmt)

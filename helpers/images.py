"""Image I/O and the resize/crop policy, kept explicit because the latent grid is 8x coarser than pixels.

Policies:
* ``pad8`` (default): keep the image as is, pad right/bottom by edge replication to a multiple of 8,
  crop the padding off after decoding. Any size works, nothing is resampled.
* ``crop512``: the 2022 notebook's input: center-crop to a square, resize to 512x512 (Lanczos) if needed.
  Kodak's 768x512 images become their central 512x512 crop, with no resampling.
* ``none``: the image must already be a multiple of 8 on both sides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import ImageInputError

MIN_SIDE = 16
MAX_SIDE = 8192


def load_image(path: str | Path) -> Image.Image:
    """Open an image file as RGB, with one-line errors for missing or unreadable files."""
    p = Path(path)
    if not p.is_file():
        raise ImageInputError(f"image not found: {p}; check the path")
    try:
        with Image.open(p) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ImageInputError(f"cannot read {p} as an image ({type(exc).__name__}); pass a PNG/JPEG/WebP file") from None


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


def apply_policy(img, policy: str = "pad8", multiple: int = 8) -> tuple[Image.Image, tuple[int, int]]:
    """Return (model input image, output size): the padded/cropped image and the size decode must restore."""
    img = as_pil(img)
    w, h = img.size
    if min(w, h) < MIN_SIDE or max(w, h) > MAX_SIDE:
        raise ImageInputError(f"image is {w}x{h}; supported sides are {MIN_SIDE}..{MAX_SIDE} pixels: resize it first")
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


def to_tensor(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> (1, 3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(as_pil(img), dtype=np.float32)
    return torch.from_numpy(arr / 127.5 - 1.0).permute(2, 0, 1)[None].contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    """(1, 3, H, W) tensor in [-1, 1] -> RGB PIL (clamped, rounded)."""
    arr = ((x[0].detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy())


def to_array(img) -> np.ndarray:
    return np.asarray(as_pil(img), dtype=np.uint8)


def list_images(folder: str | Path, names: list[str] | None = None) -> list[Path]:
    """Image files in a folder (sorted), optionally only those whose stem or name is in ``names``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageInputError(f"image folder not found: {folder}; pass --data DIR (e.g. ../shared/data/kodak)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"))
    if names:
        wanted = {n for n in names}
        picked = [p for p in files if p.stem in wanted or p.name in wanted]
        missing = wanted - {p.stem for p in picked} - {p.name for p in picked}
        if missing:
            raise ImageInputError(f"images not found in {folder}: {', '.join(sorted(missing))}")
        files = picked
    if not files:
        raise ImageInputError(f"no images in {folder}")
    return files

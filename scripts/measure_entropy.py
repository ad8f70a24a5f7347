"""Measure the lossless palette+index coders of helpers.methods.palette.entropy on Kodak-derived proxies.

The neural autoencoder is not needed: the proxies are dithered palette index maps with the
same shape statistics as the codec's latents.

The 512x512 centre crop of each image (the codec's crop512 policy) stands in for the input.

* ``rgba``  : C=4,  K=256 -- the crop resized to 64x64 RGBA, PIL MEDIANCUT palette (alpha=255),
              Floyd-Steinberg error diffusion over the 4 channels.
* ``proj4`` : C=4,  K=256 -- 8x8 patches of the 512x512 crop randomly projected to 4 channels
              (an SD-like 4-channel, 8x-downsampled latent), k-means palette, error diffusion.
* ``proj32``: C=32, K=64  -- same with a 32-channel projection.

Usage:  python scripts/measure_entropy.py [--kinds rgba,proj4,proj32] [--images 1-24]
The images are read in place from ../shared/data/kodak (or $KODAK_DIR; never copied).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KODAK_DIR = os.environ.get("KODAK_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data", "kodak"))


def kodak_path(i: int) -> str:
    return os.path.join(KODAK_DIR, f"kodim{i:02d}.png")


def load_crop512(i: int) -> Image.Image:
    """The codec's crop512 policy: central 512x512 crop of the Kodak image (no resampling)."""
    im = Image.open(kodak_path(i)).convert("RGB")
    w, h = im.size
    s = min(w, h, 512)
    left, top = (w - s) // 2, (h - s) // 2
    im = im.crop((left, top, left + s, top + s))
    return im if s == 512 else im.resize((512, 512), Image.LANCZOS)


def fs_dither(img: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Floyd-Steinberg error diffusion of an (H, W, C) float image onto a (K, C) palette."""
    h, w, c = img.shape
    work = img.astype(np.float64).copy()
    pal = palette.astype(np.float64)
    out = np.empty((h, w), dtype=np.int64)
    for y in range(h):
        for x in range(w):
            t = np.clip(work[y, x], 0.0, 255.0)
            k = int(np.argmin(((pal - t) ** 2).sum(1)))
            out[y, x] = k
            e = t - pal[k]
            if x + 1 < w:
                work[y, x + 1] += e * (7 / 16)
            if y + 1 < h:
                if x > 0:
                    work[y + 1, x - 1] += e * (3 / 16)
                work[y + 1, x] += e * (5 / 16)
                if x + 1 < w:
                    work[y + 1, x + 1] += e * (1 / 16)
    return out


def kmeans(x: np.ndarray, k: int, iters: int = 15, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cent = x[rng.choice(len(x), size=k, replace=False)].astype(np.float64)
    for _ in range(iters):
        d = (x * x).sum(1)[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None, :]
        lab = d.argmin(1)
        for j in range(k):
            m = lab == j
            if m.any():
                cent[j] = x[m].mean(0)
    return cent


def proxy_rgba(i: int, size: int = 64, k: int = 256):
    """C=4, K=256: PIL palette of the 64x64 image as RGBA (alpha=255) + FS error diffusion.

    PIL's FASTOCTREE on RGBA yields only ~50-190 colours at 64x64, so the palette is PIL's
    MEDIANCUT on the RGB image (256 colours) with a constant alpha channel appended.
    """
    im = load_crop512(i).resize((size, size), Image.LANCZOS)
    q = im.quantize(colors=k, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    rgb = np.array(q.getpalette(rawmode="RGB"), dtype=np.uint8).reshape(-1, 3)[:k]
    pal = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)
    pal = np.unique(pal, axis=0)  # distinct colours only
    img = np.asarray(im.convert("RGBA"), dtype=np.float64)
    idx = fs_dither(img, pal)
    return pal, idx


def patch_latent(i: int, c: int, seed: int = 1234) -> np.ndarray:
    """512x512 crop -> 64x64 grid of 8x8x3 patches -> random projection to c channels, uint8 scaled."""
    a = np.asarray(load_crop512(i), dtype=np.float64) / 255.0
    p = a.reshape(64, 8, 64, 8, 3).transpose(0, 2, 1, 3, 4).reshape(64, 64, 192)
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((192, c)) / np.sqrt(192)
    z = p @ proj
    lo = z.min(axis=(0, 1))
    hi = z.max(axis=(0, 1))
    return np.clip((z - lo) / np.maximum(hi - lo, 1e-9) * 255.0, 0, 255)


def proxy_proj(i: int, c: int, k: int):
    z = patch_latent(i, c)
    cent = kmeans(z.reshape(-1, c), k, seed=i)
    pal = np.unique(np.clip(np.rint(cent), 0, 255).astype(np.uint8), axis=0)
    idx = fs_dither(z, pal)
    return pal, idx


KINDS = {
    "rgba": lambda i: proxy_rgba(i),
    "proj4": lambda i: proxy_proj(i, 4, 256),
    "proj32": lambda i: proxy_proj(i, 32, 64),
}


def make_proxy(kind: str, i: int):
    pal, idx = KINDS[kind](i)
    return np.ascontiguousarray(pal, dtype=np.uint8), np.ascontiguousarray(idx, dtype=np.int64)


def parse_images(s: str):
    out = []
    for part in s.split(","):
        if "-" in part:
            a, b = part.split("-")
            out.extend(range(int(a), int(b) + 1))
        else:
            out.append(int(part))
    return out


def main(argv=None) -> int:
    sys.path.insert(0, ROOT)
    from helpers.methods.palette import entropy

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default="rgba,proj4,proj32")
    ap.add_argument("--images", default="1-24")
    args = ap.parse_args(argv)
    images = parse_images(args.images)
    for kind in args.kinds.split(","):
        rows = []
        print(f"\n== {kind} ==")
        print(
            f"{'image':>8} {'K':>4} {'C':>3} {'zlib':>7} {'lzma':>7} {'arith':>7} {'saved%':>7} "
            f"{'lzma%':>7} {'enc ms':>7} {'dec ms':>7}"
        )
        for i in images:
            pal, idx = make_proxy(kind, i)
            K, C = pal.shape
            H, W = idx.shape
            z = entropy.pack_zlib(pal, idx)
            lz = entropy.pack_lzma(pal, idx)
            t0 = time.perf_counter()
            a = entropy.pack_arith(pal, idx)
            t1 = time.perf_counter()
            pal2, idx2 = entropy.unpack_arith(a, K, C, H, W)
            t2 = time.perf_counter()
            if not np.array_equal(pal2[idx2], pal[idx]):
                raise SystemExit(f"round trip failed on kodim{i:02d} ({kind})")
            saved = 100.0 * (1 - len(a) / len(z))
            lsaved = 100.0 * (1 - len(lz) / len(z))
            rows.append((len(z), len(lz), len(a), saved, lsaved, (t1 - t0) * 1e3, (t2 - t1) * 1e3))
            print(
                f"kodim{i:02d} {K:>4} {C:>3} {len(z):>7} {len(lz):>7} {len(a):>7} {saved:>7.2f} "
                f"{lsaved:>7.2f} {rows[-1][5]:>7.1f} {rows[-1][6]:>7.1f}"
            )
        r = np.array(rows)
        m = r.mean(0)
        print(
            f"{'mean':>8} {'':>4} {'':>3} {m[0]:>7.1f} {m[1]:>7.1f} {m[2]:>7.1f} {m[3]:>7.2f} "
            f"{m[4]:>7.2f} {m[5]:>7.1f} {m[6]:>7.1f}"
        )
        print(
            f"(saved% = mean of per-image savings of arith vs zlib; on total bytes: "
            f"{100 * (1 - r[:, 2].sum() / r[:, 0].sum()):.2f} %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

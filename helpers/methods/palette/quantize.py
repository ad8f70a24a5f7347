"""Latent quantization: the 2022 notebook's 8-bit formula, its libimagequant palette, and our k-means variant.

Shapes: latents are (C, H, W) float32 arrays of *raw* (unscaled) latents; quantized latents are (C, H, W)
uint8; a palette is (K, C) uint8 and an index map is (H, W) uint8 (K <= 256) or uint16.
"""

from __future__ import annotations

import numpy as np

from ...errors import SDCError


def quantize_8bit(z: np.ndarray, span: float) -> np.ndarray:
    """``uint8(clamp(z / span + 0.5, 0, 1) * 255 + 0.5)``; for SD, ``span = 255 * 0.18215``."""
    z = np.asarray(z, dtype=np.float32)
    return (np.clip(z / np.float32(span) + np.float32(0.5), 0, 1) * np.float32(255) + np.float32(0.5)).astype(np.uint8)


def unquantize_8bit(q: np.ndarray, span: float) -> np.ndarray:
    """Inverse of :func:`quantize_8bit`: ``(q / 255 - 0.5) * span`` as float32."""
    return ((np.asarray(q, dtype=np.float32) / np.float32(255) - np.float32(0.5)) * np.float32(span)).astype(np.float32)


def apply_palette(palette: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Palette (K, C) + index map (H, W) -> quantized latent (C, H, W) uint8."""
    if indices.size and int(indices.max()) >= len(palette):
        raise SDCError(f"index map refers to colour {int(indices.max())} but the palette has {len(palette)}")
    return np.ascontiguousarray(palette[indices].transpose(2, 0, 1))


def _index_dtype(k: int):
    return np.uint8 if k <= 256 else np.uint16


# ------------------------------------------------------------------------------------------
# libimagequant on RGBA, exactly as the 2022 notebook did it
# ------------------------------------------------------------------------------------------


def palette_libimagequant(
    q: np.ndarray, colors: int = 256, dither: float = 1.0, speed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Treat a (4, H, W) uint8 latent as an RGBA image and reduce it to ``colors`` with libimagequant.

    ``dither`` is libimagequant's dithering level (0 = none, 1.0 = full Floyd-Steinberg-style error
    diffusion), ``speed`` 1 is its slowest/best setting. Returns (palette (K, 4) uint8, indices (H, W) uint8);
    K may be below ``colors`` when the image has fewer distinct colours.
    """
    import libimagequant as liq

    q = np.asarray(q)
    if q.ndim != 3 or q.shape[0] != 4 or q.dtype != np.uint8:
        raise SDCError(
            f"libimagequant needs a (4, H, W) uint8 latent (RGBA), got {q.shape} {q.dtype}; "
            f"use method 'kmeans' for {q.shape[0] if q.ndim == 3 else '?'} channels"
        )
    if not 2 <= colors <= 256:
        raise SDCError(f"libimagequant palettes hold 2..256 colours, got {colors}")
    _, h, w = q.shape
    attr = liq.Attr()
    attr.speed = speed
    attr.max_colors = colors
    rgba = np.ascontiguousarray(q.transpose(1, 2, 0)).tobytes()
    image = attr.create_rgba(rgba, w, h, 0)
    result = image.quantize(attr)
    result.dithering_level = float(dither)
    indices = np.frombuffer(result.remap_image(image), dtype=np.uint8).reshape(h, w).copy()
    palette = np.array([(c.r, c.g, c.b, c.a) for c in result.get_palette()], dtype=np.uint8)
    return palette, indices


# ------------------------------------------------------------------------------------------
# Our latent-space alternative: k-means over C-dim latent vectors + error-diffusion dithering
# ------------------------------------------------------------------------------------------


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b.T`` for the nearest-colour searches, summed by numpy's own loop rather than BLAS: a threaded BLAS
    matmul may sum in an order that depends on its thread count, so the palette (and the file) would depend on the
    machine's thread setting (seen with OpenBLAS on one CPU: kodim23's 33-colour TAEF2 palette three bytes apart with
    one thread and with two, and Dask's workers run one)."""
    return np.einsum("nc,kc->nk", a, b)


def kmeans(points: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Deterministic k-means (k-means++ init, Lloyd iterations) on (N, C) float32 points -> (k', C) centroids.

    k' = min(k, number of distinct points). Empty clusters are re-seeded at the worst-fit point.
    """
    pts = np.asarray(points, dtype=np.float32)
    uniq = np.unique(pts, axis=0)
    if len(uniq) <= k:
        return uniq
    rng = np.random.default_rng(seed)
    sq = (pts**2).sum(1)
    centers = np.empty((k, pts.shape[1]), np.float32)
    centers[0] = pts[rng.integers(len(pts))]
    d2 = ((pts - centers[0]) ** 2).sum(1)
    for i in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centers[i] = pts[rng.choice(len(pts), p=p)]
        d2 = np.minimum(d2, ((pts - centers[i]) ** 2).sum(1))
    for _ in range(iters):
        dist = sq[:, None] - 2 * _cross(pts, centers) + (centers**2).sum(1)[None]
        assign = dist.argmin(1)
        counts = np.bincount(assign, minlength=k)
        # per-cluster sums as a sparse one-hot product (np.add.at is ~10x slower)
        sums = np.stack([np.bincount(assign, weights=pts[:, j], minlength=k) for j in range(pts.shape[1])], 1).astype(
            np.float32
        )
        new = centers.copy()
        nz = counts > 0
        new[nz] = sums[nz] / counts[nz, None]
        if not nz.all():
            worst = np.argsort(dist[np.arange(len(pts)), assign])[::-1]
            for j, idx in zip(np.flatnonzero(~nz), worst):
                new[j] = pts[idx]
        if np.allclose(new, centers, atol=1e-3):
            centers = new
            break
        centers = new
    return centers


def error_diffusion(values: np.ndarray, palette: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Floyd-Steinberg error diffusion of a (C, H, W) float field onto palette (K, C) -> (H, W) indices.

    ``strength`` scales the diffused error (0 = plain nearest colour, 1 = full Floyd-Steinberg).
    """
    c, h, w = values.shape
    pal = palette.astype(np.float32)
    if strength == 0:
        flat = values.reshape(c, -1).T
        d = (flat**2).sum(1)[:, None] - 2 * _cross(flat, pal) + (pal**2).sum(1)[None]
        return d.argmin(1).reshape(h, w).astype(_index_dtype(len(pal)))
    work = np.ascontiguousarray(values.transpose(1, 2, 0), dtype=np.float32).copy()
    pal_sq = (pal**2).sum(1)
    out = np.empty((h, w), dtype=_index_dtype(len(pal)))
    s = np.float32(strength)
    # Clamp to the palette's bounding box: k-means centroids sit inside the data, so without this the error
    # at extreme values accumulates without bound and smears across the image.
    lo, hi = pal.min(0), pal.max(0)
    for y in range(h):
        row = work[y]
        # nearest colours for a whole row can't be vectorised (each depends on the error to its left),
        # but the distance to all K colours is one small matvec per pixel.
        for x in range(w):
            v = np.clip(row[x], lo, hi)
            j = int(np.argmin(pal_sq - 2 * (pal @ v)))
            out[y, x] = j
            err = (v - pal[j]) * s
            if x + 1 < w:
                row[x + 1] += err * np.float32(7 / 16)
            if y + 1 < h:
                nxt = work[y + 1]
                if x > 0:
                    nxt[x - 1] += err * np.float32(3 / 16)
                nxt[x] += err * np.float32(5 / 16)
                if x + 1 < w:
                    nxt[x + 1] += err * np.float32(1 / 16)
    return out


def palette_kmeans(
    q: np.ndarray, colors: int = 256, dither: float = 1.0, iters: int = 25, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Palette over C-dim latent vectors of a (C, H, W) uint8 latent, any C (4 for SD, 32 for TAEF2).

    k-means in the 8-bit latent space, centroids rounded to uint8, then Floyd-Steinberg error diffusion
    (``dither`` = strength) against the rounded palette. Returns (palette (K, C) uint8, indices (H, W)).
    """
    q = np.asarray(q)
    if q.ndim != 3 or q.dtype != np.uint8:
        raise SDCError(f"palette_kmeans needs a (C, H, W) uint8 latent, got {q.shape} {q.dtype}")
    if not 1 <= colors <= 65535:
        raise SDCError(f"palette size must be 1..65535, got {colors}")
    c, h, w = q.shape
    pts = q.reshape(c, -1).T.astype(np.float32)
    centers = kmeans(pts, colors, iters=iters, seed=seed)
    palette = np.clip(np.rint(centers), 0, 255).astype(np.uint8)
    palette = np.unique(palette, axis=0)  # rounding can merge centroids
    indices = error_diffusion(q.astype(np.float32), palette, dither)
    return palette, indices

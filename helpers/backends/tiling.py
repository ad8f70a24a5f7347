"""Runtime-agnostic tiling: run a fully convolutional network over overlapping tiles of a numpy array.

:func:`tiled_apply` cuts an NCHW array into a grid of *core* tiles, extends each by a *halo* on every
side that has neighbours, calls ``fn`` (any runtime: PyTorch, ONNX Runtime, ...) on the extended tile and
keeps only the output of the core. When the halo is at least the network's receptive-field radius the
result equals the untiled one (up to the runtime's own float summation order), with no blending: every
output sample is computed from exactly the inputs it would see untiled. Memory is bounded by the tile
size and time grows linearly with the number of tiles.

:func:`receptive_radius` works the radius out from a layer list (3x3 convs, stride-2 convs, nearest
upsampling, TAESD-style residual blocks); ``helpers.backends.taef2`` uses it to derive the halos it needs.

Usage with any runtime::

    out = tiled_apply(x, lambda t: session.run(None, {"x": t})[0], scale=Fraction(1, 8), tile=1024,
                      halo=72, align=8)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from fractions import Fraction

import numpy as np


def _splits(n: int, tile: int, align: int) -> list[tuple[int, int]]:
    """Split [0, n) into about equal parts of at most ``tile`` (boundaries on multiples of ``align``)."""
    if n <= tile:
        return [(0, n)]
    parts = math.ceil(n / tile)
    bounds = [0]
    for i in range(1, parts):
        b = (round(i * n / parts) // align) * align
        if b > bounds[-1]:
            bounds.append(b)
    bounds.append(n)
    return list(zip(bounds[:-1], bounds[1:]))


def tile_grid(height: int, width: int, tile: int, align: int = 1) -> list[tuple[int, int, int, int]]:
    """Core tiles (y0, y1, x0, x1) covering an image, in raster order."""
    return [(y0, y1, x0, x1) for y0, y1 in _splits(height, tile, align) for x0, x1 in _splits(width, tile, align)]


def tiled_apply(
    x: np.ndarray,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    scale: Fraction | int | float,
    tile: int,
    halo: int,
    align: int = 1,
    progress: bool | None = False,
    desc: str = "tiles",
    sink: Callable[[tuple[int, int, int, int], np.ndarray], None] | None = None,
) -> np.ndarray | None:
    """Apply ``fn`` (NCHW array -> NCHW array, output size = input size x ``scale``) tile by tile.

    ``tile``: core tile side in input samples; ``halo``: extra input samples on each inner side (at least the
    receptive-field radius for an exact result); ``align``: tile boundaries and halos are multiples of it
    (e.g. 8 for an encoder that downsamples by 8, so every tile sees the global stride grid). One tile
    (the whole array) when it fits. ``progress``: tqdm bar (None = only on a terminal, when > 1 tile).
    ``sink``: instead of assembling a full-size output, call ``sink((y0, y1, x0, x1), core)`` with each tile's
    core output and its place in the output (output samples), and return None; the caller converts each core
    as it comes (e.g. to 8-bit pixels), so no full-size float array is ever allocated.
    """
    scale = Fraction(scale).limit_denominator(1 << 16)
    if x.ndim != 4:
        raise ValueError(f"tiled_apply needs an NCHW array, got shape {x.shape}")
    if tile < 1 or halo < 0 or align < 1 or tile % align or halo % align:
        raise ValueError(f"tile ({tile}) and halo ({halo}) must be multiples of align ({align}), tile >= 1")
    _, _, h, w = x.shape
    for side in (h, w):
        if (side * scale).denominator != 1:
            raise ValueError(f"input side {side} times scale {scale} is not an integer")
    if align * scale.numerator % scale.denominator:
        raise ValueError(f"align {align} must make tile boundaries land on output samples (scale {scale})")
    tiles = tile_grid(h, w, tile, align)
    out = None
    if progress is False or len(tiles) < 2:
        it: Iterable = tiles
    else:
        from tqdm.auto import tqdm

        it = tqdm(tiles, desc=desc, disable=None if progress is None else not progress, leave=False)
    for y0, y1, x0, x1 in it:
        ya, yb = max(0, y0 - halo), min(h, y1 + halo)
        xa, xb = max(0, x0 - halo), min(w, x1 + halo)
        t = np.asarray(fn(np.ascontiguousarray(x[:, :, ya:yb, xa:xb])))
        want = (int((yb - ya) * scale), int((xb - xa) * scale))
        if t.ndim != 4 or t.shape[2:] != want:
            raise ValueError(f"tile function returned {t.shape}, expected (N, C, {want[0]}, {want[1]})")
        oy0, oy1 = int((y0 - ya) * scale), int((y1 - ya) * scale)
        ox0, ox1 = int((x0 - xa) * scale), int((x1 - xa) * scale)
        place = (int(y0 * scale), int(y1 * scale), int(x0 * scale), int(x1 * scale))
        if sink is not None:
            sink(place, t[:, :, oy0:oy1, ox0:ox1])
            continue
        if out is None:
            out = np.empty((t.shape[0], t.shape[1], int(h * scale), int(w * scale)), dtype=t.dtype)
        out[:, :, place[0] : place[1], place[2] : place[3]] = t[:, :, oy0:oy1, ox0:ox1]
    return out


def group_stats(
    sums: np.ndarray, sqsums: np.ndarray, count: int, groups: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (N, C, 1, 1) float32 mean and 1 / sqrt(var + eps) of GroupNorm's groups, from per-channel
    float64 sums and sums of squares over ``count`` positions (population variance, as GroupNorm)."""
    n, c = sums.shape
    per = c // groups
    s = sums.reshape(n, groups, per).sum(axis=2)
    q = sqsums.reshape(n, groups, per).sum(axis=2)
    m = count * per
    mean = s / m
    var = np.maximum(q / m - mean * mean, 0.0)
    rstd = 1.0 / np.sqrt(var + eps)
    expand = lambda a: np.repeat(a, per, axis=1).reshape(n, c, 1, 1).astype(np.float32)  # noqa: E731
    return expand(mean), expand(rstd)


def streamed_global(
    z: np.ndarray, head: Callable, blocks: list, *, tile: int, head_halo: int, block_halo: int, groups: int, eps: float
) -> np.ndarray:
    """Run a chain ``head`` then residual blocks with a GroupNorm branch (``blocks``: (hidden, apply) callables)
    in tiles, at the input's resolution, with memory bounded by two feature maps plus one tile.

    GroupNorm needs statistics over the whole image: for each block a first pass over tiles runs ``hidden``
    (the branch up to the GroupNorm) and sums it per channel in float64; a second pass runs ``apply(tile, mean,
    rstd)`` (the whole block with those statistics) with a halo covering the block's local layers. The result
    equals the untiled chain up to float rounding of the statistics (no tile boundary effects).
    """
    x = tiled_apply(z, head, scale=1, tile=tile, halo=head_halo)
    _, _, h, w = x.shape
    for hidden, apply in blocks:
        sums = sqsums = None
        for y0, y1, x0, x1 in tile_grid(h, w, tile):
            t = np.asarray(hidden(np.ascontiguousarray(x[:, :, y0:y1, x0:x1])))
            s = t.sum(axis=(2, 3), dtype=np.float64)
            t64 = t.astype(np.float64)
            q = np.einsum("nchw,nchw->nc", t64, t64)
            sums, sqsums = (s, q) if sums is None else (sums + s, sqsums + q)
            del t, t64
        mean, rstd = group_stats(sums, sqsums, h * w, groups, eps)
        x = tiled_apply(
            x, lambda t, mean=mean, rstd=rstd, apply=apply: apply(t, mean, rstd), scale=1, tile=tile, halo=block_halo
        )
    return x


def receptive_radius(layers: Iterable, unit: Fraction = Fraction(1)) -> Fraction:
    """Receptive-field radius of a chain of layers, in units of the chain's *input* samples.

    Walks the layers forward keeping the size of one current sample in input units (``jump``): a k x k
    convolution adds (k - 1) / 2 samples, a stride multiplies the jump, nearest x2 upsampling halves it and
    adds half a sample of rounding; residual blocks add the radius of their longest branch (1x1 branches
    add nothing). GroupNorm is global and is refused: run such layers untiled.
    """
    from torch import nn

    r, jump = Fraction(0), Fraction(unit)
    for layer in layers:
        if isinstance(layer, nn.Conv2d):
            k, s, d = layer.kernel_size[0], layer.stride[0], layer.dilation[0]
            r += Fraction(d * (k - 1), 2) * jump
            jump *= s
        elif isinstance(layer, nn.Upsample):
            f = int(layer.scale_factor)
            jump /= f
            r += (f - 1) * jump  # output q reads input floor(q / f): up to (f - 1) / f of an input sample
        elif isinstance(layer, nn.Sequential):
            sub = receptive_radius(layer, jump)
            r += sub
        elif isinstance(layer, nn.GroupNorm):
            raise ValueError("GroupNorm normalises over the whole image: keep it out of tiled layers")
        elif hasattr(layer, "conv") and isinstance(layer.conv, nn.Sequential):  # residual block
            if getattr(layer, "pool", None) is not None:
                raise ValueError("a block with a GroupNorm branch normalises over the whole image: run it untiled")
            r += receptive_radius(layer.conv, jump)
        # ReLU, Tanh-clamp, Identity: pointwise, radius 0
    return r

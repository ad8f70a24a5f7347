"""The procedural test picture of the golden files (no third-party image in the repository)."""

import numpy as np
from PIL import Image


def synthetic(w, h, seed=7):
    """A procedural test picture (gradients, discs, stripes, noise): no third-party image in the repository."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 128 + 100 * np.sin(x / 17.0) * np.cos(y / 23.0)
    g = 255 * x / w
    b = 255 * (1 - y / h)
    im = np.stack([r, g, b], -1)
    for cx, cy, rad, col in [(0.3, 0.4, 0.18, (240, 200, 40)), (0.7, 0.6, 0.22, (30, 60, 200))]:
        m = (x - cx * w) ** 2 + (y - cy * h) ** 2 < (rad * min(w, h)) ** 2
        im[m] = col
    im[(x // 4) % 2 == 0] *= 0.85
    im += rng.normal(0, 6, im.shape)
    return Image.fromarray(np.clip(im, 0, 255).astype(np.uint8))

"""A differentiable detail term for encoder-side optimisation (:mod:`.refine`, :mod:`.enc_train`).

Squared pixel error alone rewards blur: where the detail cannot be afforded exactly, its mean (a flat patch) is
the cheapest answer, and a rate term makes that worse. The benchmark's detail retention
(:mod:`helpers.metrics.retention`) measures the result: high-frequency (HF) energy, the luma minus its Gaussian
blur (sigma 2 px), squared. This module gives the same quantity in PyTorch, per tile, and a two-sided penalty on
the log ratio of decoded to original HF energy in each tile: lost detail costs, and so does invented texture (a
one-sided term taught the trained encoder to add texture). Per tile, not per image, so that detail kept in one
region cannot pay for detail lost in another.
"""

from __future__ import annotations

HF_SIGMA = 2.0  # as helpers.metrics.retention
TILE = 32  # pixels per tile side
EPS = 1e-5  # HF energy floor ([0, 1] luma units squared): flat tiles are left alone


def hf_map(x, tile: int | None = TILE, sigma: float = HF_SIGMA):
    """HF energy of a batch ``x`` (N, 3, H, W) in [0, 1]: the mean square of ``luma - blur(luma)`` per tile
    (N, H // tile, W // tile), or per image (N,) with ``tile=None``. Borders mirrored, kernel truncated at 4 sigma
    (the benchmark's measure, in torch)."""
    import torch
    import torch.nn.functional as F

    from ...metrics.retention import LUMA, gaussian_kernel

    y = (x * torch.tensor(LUMA, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)).sum(1, keepdim=True)
    g = torch.as_tensor(gaussian_kernel(sigma), dtype=x.dtype, device=x.device)
    r = len(g) // 2
    b = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), g.reshape(1, 1, 1, -1))
    b = F.conv2d(F.pad(b, (0, 0, r, r), mode="reflect"), g.reshape(1, 1, -1, 1))
    e = (y - b) ** 2
    if tile is None:
        return e.flatten(1).mean(1)
    return F.avg_pool2d(e, tile)[:, 0]


def detail_loss(x, xh, tile: int | None = TILE):
    """Mean over tiles (and the batch) of ``|log(HF(xh) + EPS) - log(HF(x) + EPS)|``: 0 when every tile of the
    decoded ``xh`` has the original ``x``'s HF energy."""
    import torch

    return (torch.log(hf_map(xh, tile) + EPS) - torch.log(hf_map(x, tile) + EPS).detach()).abs().mean()

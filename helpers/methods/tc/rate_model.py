"""A differentiable rate model of the transform coder (method ``tc``, :mod:`helpers.tcoder`), in PyTorch.

The tc coder codes each quantized coefficient ``q = round(c / delta)`` with a discretized Laplace distribution
whose scale class comes from the band's trained scale and an integer context of already decoded neighbours
(:func:`helpers.tcoder.coefficient_classes`). This module computes the same thing with tensors:

* :func:`analyze` / :func:`synthesize`: the tc transform (CDF 9/7 lifting wavelet + per-band decoder-metric
  channel matrices) on (N, C, h, w) tensors, differentiable, equal to the numpy transform up to float rounding;
* :func:`quantize`: the tc quantizer at a step ``delta`` with a relaxation for gradients: ``"noise"`` (additive
  uniform noise in (-delta/2, delta/2), for training), ``"ste"`` (rounding, gradient of the identity: the
  straight-through estimator, for refinement) or ``"hard"`` (rounding, no gradient);
* :func:`laplace_bits`: code length of a (relaxed) quantized value under a class's discretized Laplace;
* :func:`rate_bits`: bits of every coefficient band of a batch, with the coder's classes computed from the
  rounded coefficients (contexts are discrete; the gradient flows through the values, not the classes).

With hard rounding the model's bytes plus :data:`PAYLOAD_OVERHEAD` match real payload sizes within about 1 %
over 2-30 KB on TAEF2 latents of Kodak crops (``tests/test_rate_model.py``): the integer tables are the
Laplace's probabilities, so what remains is their rounding, escapes and the coder's last word.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from . import tcoder as T

#: pixel squared error ([0, 1] RGB, summed) per unit of tc coefficient squared error, TAEF2 (median of training
#: photos at small steps: 0.5e-5 .. 4e-5); ties the rate weight lambda to the quantizer step
G_PIXEL = 1.5e-5

#: bytes of a tc payload besides the coefficients: head (8), word count (2), check value (4), last word (~2)
PAYLOAD_OVERHEAD = 16
_LOG2 = math.log(2.0)


# ----------------------------------------------------------------------------------------------
# transform
# ----------------------------------------------------------------------------------------------


def _nbr(n_out: int, n_src: int, shift: int, device) -> torch.Tensor:
    return torch.clamp(torch.arange(n_out, device=device) + shift, 0, n_src - 1)


def _lift(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.movedim(dim, -1)
    s, d = x[..., 0::2], x[..., 1::2]
    ns, nd = s.shape[-1], d.shape[-1]
    if nd:
        r, lm, l0 = (_nbr(nd, ns, 1, x.device), _nbr(ns, nd, -1, x.device), _nbr(ns, nd, 0, x.device))
        d = d + T._A1 * (s[..., :nd] + s[..., r])
        s = s + T._A2 * (d[..., lm] + d[..., l0])
        d = d + T._A3 * (s[..., :nd] + s[..., r])
        s = s + T._A4 * (d[..., lm] + d[..., l0])
        s, d = s * T._K, d / T._K
    return s.movedim(-1, dim), d.movedim(-1, dim)


def _unlift(s: torch.Tensor, d: torch.Tensor, dim: int) -> torch.Tensor:
    s, d = s.movedim(dim, -1), d.movedim(dim, -1)
    ns, nd = s.shape[-1], d.shape[-1]
    if nd:
        r, lm, l0 = (_nbr(nd, ns, 1, s.device), _nbr(ns, nd, -1, s.device), _nbr(ns, nd, 0, s.device))
        s, d = s / T._K, d * T._K
        s = s - T._A4 * (d[..., lm] + d[..., l0])
        d = d - T._A3 * (s[..., :nd] + s[..., r])
        s = s - T._A2 * (d[..., lm] + d[..., l0])
        d = d - T._A1 * (s[..., :nd] + s[..., r])
    x = torch.stack([s[..., :nd], d], -1).flatten(-2)
    if ns > nd:
        x = torch.cat([x, s[..., nd:]], -1)
    return x.movedim(-1, dim)


def dwt2(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """(..., h, w) -> bands [LL, HL_L, LH_L, HH_L, ..., HH_1], as :func:`helpers.methods.tc.tcoder.dwt2`."""
    return T.dwt_bands(x, levels, _lift)


def idwt2(bands: list[torch.Tensor]) -> torch.Tensor:
    return T.idwt_bands(bands, _unlift)


def _mats(tables: T.Tables, levels: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    def t(a):
        return torch.as_tensor(np.asarray(a), dtype=x.dtype, device=x.device)

    return t(tables.mu)[:, None, None], t(tables.A[levels]), t(tables.Ai[levels])


def analyze(z: torch.Tensor, tables: T.Tables, levels: int) -> list[torch.Tensor]:
    """Latents (N, C, h, w) -> coefficient bands [(N, C, hb, wb), ...] (:func:`helpers.tcoder.analyze`)."""
    mu, A, _ = _mats(tables, levels, z)
    return [torch.einsum("ij,njyx->niyx", A[b], x) for b, x in enumerate(dwt2(z - mu, levels))]


def synthesize(coeffs: list[torch.Tensor], tables: T.Tables, levels: int) -> torch.Tensor:
    """Inverse of :func:`analyze` -> latents (N, C, h, w)."""
    mu, _, Ai = _mats(tables, levels, coeffs[0])
    return idwt2([torch.einsum("ij,njyx->niyx", Ai[b], x) for b, x in enumerate(coeffs)]) + mu


# ----------------------------------------------------------------------------------------------
# quantizer and code lengths
# ----------------------------------------------------------------------------------------------


def quantize(coeffs: list[torch.Tensor], delta: torch.Tensor | float, mode: str = "ste") -> list[torch.Tensor]:
    """Coefficients -> relaxed quantized values in units of the step (``q``, not ``q * delta``).

    ``delta``: a float or a (N,) tensor (one step per batch item). Modes: ``noise``, ``ste``, ``hard`` and
    ``identity`` (no rounding: ``c / delta``)."""
    out = []
    for c in coeffs:
        d = delta if not torch.is_tensor(delta) else delta.to(c).reshape(-1, *([1] * (c.dim() - 1)))
        y = c / d
        if mode == "noise":
            y = y + torch.rand_like(y) - 0.5
        elif mode == "ste":
            y = y + (torch.round(y) - y).detach()
        elif mode == "hard":
            y = torch.round(y).detach()
        elif mode != "identity":
            raise ValueError(f"quantize mode must be noise, ste, hard or identity, got {mode!r}")
        out.append(y)
    return out


def class_sigma(classes: torch.Tensor) -> torch.Tensor:
    """Laplace scale (in steps) of scale classes: ``2 ** ((s - 40) / 4)``."""
    return torch.exp2((classes.to(torch.float64) - T.CLASS_ZERO) / T.CLASS_PER_OCTAVE)


def laplace_bits(y: torch.Tensor, sigma: torch.Tensor, floor_bits: float = 24.0) -> torch.Tensor:
    """-log2 P(y) under a Laplace(0, sigma) discretized to unit bins (y may be fractional: the relaxed value).

    P(|y| >= 1/2) = exp(-(|y| - 1/2) / sigma) * (1 - exp(-1 / sigma)) / 2; inside the zero bin the mass of
    [y - 1/2, y + 1/2]. Capped at ``floor_bits`` (the tables' smallest frequency is 2**-24)."""
    a = y.abs()
    sigma = sigma.to(y.dtype)
    tail = -(a - 0.5).clamp_min(0) / sigma + torch.log(-torch.expm1(-1 / sigma)) - _LOG2
    inner = torch.log1p(-0.5 * (torch.exp(-(0.5 - a).clamp_min(0) / sigma) + torch.exp(-(0.5 + a) / sigma)))
    logp = torch.where(a >= 0.5, tail, inner)
    return (-logp / _LOG2).clamp(max=floor_bits)


def classes(coeffs: list[torch.Tensor], tables: T.Tables, levels: int, ks: list[int]) -> list[torch.Tensor]:
    """The coder's scale class of every coefficient (bands of (N, C, hb, wb) long tensors), from the rounded
    values at step index ``ks[n]`` for batch item n (numpy, :func:`helpers.tcoder.coefficient_classes`), with the
    per-image scale offsets the coder would choose for those values (:func:`helpers.tcoder.coding_tables`)."""
    per = []
    for n, k in enumerate(ks):
        q = [np.rint(c[n].detach().double().cpu().numpy() / T.step_of(k)).astype(np.int64) for c in coeffs]
        per.append(T.coefficient_classes(q, T.coding_tables(q, tables, levels, int(k)), levels, int(k)))
    return [torch.from_numpy(np.stack([p[b] for p in per])).to(coeffs[0].device) for b in range(len(coeffs))]


def rate_bits(
    coeffs: list[torch.Tensor], tables: T.Tables, levels: int, ks: list[int] | int, mode: str = "ste"
) -> torch.Tensor:
    """Estimated bits of each batch item's tc payload coefficients (N,), differentiable in ``coeffs``.

    ``ks``: the tc step index per batch item (or one for all); the step is ``delta = 2 ** ((k - 32768) / 1024)``
    and the classes are the coder's at that step. Add :data:`PAYLOAD_OVERHEAD` bytes for a payload size.

    Modes: ``ste`` (default): the code length of the rounded values (what the coder spends), with the gradient
    of the code length at the unrounded ``c / delta`` (straight-through on the bits: the slope that pulls a
    coefficient into a cheaper bin is there even when it rounds to zero); ``hard``: the same value, no gradient;
    ``noise``: the code length of ``c / delta + u``, u uniform in (-1/2, 1/2) (the classic training relaxation;
    it overestimates a low-rate payload twofold, since the coder's many near-certain zeros cost about one bit
    each once smeared over the zero bin, so prefer ``ste`` for the rate term)."""
    n = coeffs[0].shape[0]
    ks = [int(ks)] * n if isinstance(ks, (int, np.integer)) else [int(k) for k in ks]
    delta = torch.tensor([T.step_of(k) for k in ks], dtype=coeffs[0].dtype, device=coeffs[0].device)
    ys = quantize(coeffs, delta, "noise" if mode == "noise" else "hard")
    soft = quantize(coeffs, delta, "identity") if mode == "ste" else None
    cls = classes(coeffs, tables, levels, ks)
    total = torch.zeros(n, dtype=coeffs[0].dtype, device=coeffs[0].device)
    for i, (y, s) in enumerate(zip(ys, cls)):
        sigma = class_sigma(s)
        bits = laplace_bits(y, sigma)
        if soft is not None:  # the value of the rounded coefficients, the slope of the code length at c / delta
            b_soft = laplace_bits(soft[i], sigma)
            bits = bits + (b_soft - b_soft.detach())
        total = total + bits.flatten(1).sum(1)
    return total


def payload_bytes(z: np.ndarray | torch.Tensor, fingerprint: int | None, k: int) -> float:
    """Estimated tc payload size in bytes of one latent (C, h, w) at step index ``k`` (hard rounding; with trained
    tables, the scale offsets' bytes counted)."""
    zt = torch.as_tensor(np.asarray(z, np.float64) if not torch.is_tensor(z) else z, dtype=torch.float64)
    levels = T.levels_for(*zt.shape[1:])
    tables = T.tables_for(zt.numpy(), fingerprint, levels)
    bits = rate_bits(analyze(zt[None], tables, levels), tables, levels, k, mode="hard")
    return float(bits[0]) / 8 + PAYLOAD_OVERHEAD + T.offsets_size(tables, levels)

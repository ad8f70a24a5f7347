"""Encoder-side optimisation against decoded pixels (``--effort``).

The autoencoder's encoder is only an approximate inverse of its decoder, and the transform coder's
quantization is not part of its training at all. A few gradient steps on the latent ``z`` fix both: each step
decodes the *quantized* latent ``Q(z)`` (the one the file will carry, at the step the rate control picked),
compares the decoded picture with the original, and moves ``z`` down the gradient of the squared pixel
error, passed through the quantizer as if it were the identity (the straight-through estimator). Between
stages the rate control runs again, since the refined latent costs a different number of bytes.

Measured while designing it, on four licensed holdout photos at 5000 bytes (TAEF2, 512x512): plain 26.90 dB;
3 steps of pixel loss without the quantizer 27.79 dB; 3 straight-through steps 28.40 dB (effort 1); 4 + 4
steps with a rate control between them 28.94 dB (effort 2 then; today's schedules are below). The benchmark's
figures for effort 1 are in results/kodak/summary.md and results/holdout/summary.md (variant ``tc+e1``).
The decoder and the file format do not change: only the encoder works harder.

Rate-distortion refinement: rate-blind steps spend their gain on rate (the refined latent costs more bytes, the
rate control picks a coarser step). Each step therefore minimises ``SSE(pixels) + lambda * bits`` per pixel,
``bits`` from the differentiable rate model of the tc coder (:mod:`helpers.methods.tc.rate_model`, the coder's own classes
and tables at the step the rate control chose), ``lambda = RATE_ALPHA * ln(2) / 6 * g * delta**2``: the
high-rate slope of a uniform quantizer at that step (``g``: pixel squared error per unit of coefficient squared
error, :data:`helpers.methods.tc.rate_model.G_PIXEL`). The step, and with it lambda, is re-fitted by the rate control
before every stage. Effort 3 (ten stages, 30 steps) is the highest effort.

Effort 3's learning rate falls from stage to stage (0.05, 0.015, 0.005). With the earlier (0.05, 0.03, 0.02), Adam's
fixed-size moves kept jittering the latent after the first stage: from tc's trained encoder the long refinement
added texture the original does not have (detail ratio above 1) and lost ColorVideoVDP against effort 1 (Kodak
5000 B: 7.32 against 7.49 JOD). Measured on 4 licensed training photos at 5000 B (tc encoder, means of PSNR dB /
ColorVideoVDP JOD / detail ratio): effort 1 34.18 / 8.997 / 1.00, effort 3 with the old rates 35.36 / 8.941 / 1.10,
with (0.05, 0.02, 0.01) 35.91 / 9.013 / 1.03, with (0.05, 0.015, 0.005) 35.99 / 9.032 / 1.01; a stronger detail term
(beta 3e-3) instead of the decay: 35.49 / 8.982 / 1.06.

Short stages: within a stage the decoded picture improves for the first two or three steps after the rate control
and then drifts (one training photo, 20 + 20 + 20 steps: 22.9 -> 23.6 dB in four steps, then 23.4-23.5 for the
rest of the stage; each new stage jumps again by 0.2-0.3 dB in its first two steps). Re-fitting the step and
lambda and starting Adam afresh every two or three steps is worth more than longer stages
(``scripts/exp_refine_schedule.py``, 4 training photos at 5000 B, results/encoder_training/refine_schedules_train.json;
means of PSNR dB / ColorVideoVDP JOD / SSIMULACRA 2 / Butteraugli / detail ratio, encode seconds with one thread
under load): effort 3 as 10 + 10 + 10 steps 29.95 / 8.480 / 23.7 / 16.5 / 0.82 (160 s); as ten stages of 3 steps,
the learning rate falling from 0.05 to 0.005 (now) 30.02 / 8.524 / 26.4 / 14.7 / 0.82 (142 s; JOD better on 4 of 4);
fifteen stages of 2 steps 30.02 / 8.535 / 24.5 / 16.6 / 0.82; 20 + 20 + 20 steps (2 photos) 0.66 dB *below*
10 + 10 + 10. Effort 2 as 4 + 4 steps at (0.05, 0.03) 29.54 / 8.508 / 22.6 / 16.8 / 0.83 (42 s); at (0.05, 0.015)
29.70 / 8.528 / 24.1 / 16.0 / 0.80; as four stages of 2 steps (now) 29.80 / 8.555 / 25.3 / 15.2 / 0.83 (41 s), the
best ColorVideoVDP of every variant tried, effort 3's included. Also tried there and dropped: twice the rate weight
(alpha 2, 2 photos: effort 3 -0.12 dB, effort 1 -0.03 dB), ending each stage on its lowest-loss iterate (one photo:
no change, its loss fell at every step), and stochastic Gumbel annealing of the rounding (Yang et al.
2020) in place of the straight-through estimator (5 + 5 steps on one photo: 29.13 against 31.40 dB; it needs far
more steps than an encoder can spend).

Effort 1 too: its 3 steps as 2 + 1 with a rate control between (learning rates 0.05, 0.03) instead of one stage of 3
at 0.05, the same number of decoder passes (8 training photos at 5000 B, results/encoder_training/
refine_e1_stages_train.json; means of PSNR dB / ColorVideoVDP JOD / SSIMULACRA 2 / Butteraugli / detail ratio):
3 steps 29.72 / 8.519 / 21.0 / 17.0 / 0.87, 2 + 1 (now) 30.06 / 8.564 / 23.4 / 16.5 / 0.84 (PSNR, MS-SSIM and
ColorVideoVDP better on 8 of 8 photos), 1 + 1 + 1 29.25 / 8.549 / 23.2 / 15.5 / 0.82, 1 + 2 29.80 / 8.572 / 22.9 /
17.3 / 0.88; the second stage at 0.02 instead of 0.03 or the first at 0.07 changed the means by less than 0.1 dB.

Detail: pixel error rewards blur, and the rate term makes it worse (at 5000 B, effort 1 kept 0.60 of the
original's high-frequency energy on 7 training photos and 0.60 on the 8 holdout photos, against about 0.9 for
the stock encoder's latent). Each step therefore adds a weight (:data:`DETAIL_BETAS`) times a per-tile detail term
(:func:`helpers.methods.tc.detail_loss.detail_loss`: the two-sided log ratio of decoded to original HF energy in
32x32 tiles). Measured at 5000 B, effort 1, beta 0 -> 1e-3 -> 4e-3: training photos PSNR 30.43 -> 30.13 -> 29.64
dB, ColorVideoVDP 8.311 -> 8.314 -> 8.261 JOD, SSIMULACRA 2 17.1 -> 16.2 -> 12.8, detail retention 0.61 -> 0.81 ->
0.95; holdout (beta 0 -> 1e-3) 28.43 -> 28.12 dB, 7.983 -> 7.978 JOD, retention 0.60 -> 0.76. The perceptual
metrics barely move, PSNR gives up 0.3 dB, and the picture keeps its texture: beta 1e-3 was the default.

Per effort since 2026-12-07 (results/encoder_training/refine_detail_floor.md): at 1e-3, from tc's trained encoder, the
efforts kept less fine detail than effort 0 (Kodak at 5000 B: 0.72 / 0.73 / 0.74 at efforts 1 / 2 / 3 against 0.80),
below the issue's floor. Each effort's weight is now the one at which it keeps effort 0's detail on 12 training
photos at 5000 B (effort 0: 0.909): effort 1 3e-3 (0.845 -> 0.909, -0.17 dB, -0.041 JOD), efforts 2 and 3 2e-3 (0.866
-> 0.907 and 0.921; -0.21 / -0.20 dB, -0.028 / -0.015 JOD). The perceptual metrics do not reward the detail the term
buys; the floor sets the weight.

Each step is one decoder forward + backward pass (about 2.5 s for 512x512 TAEF2 on 2 CPU cores), so effort
needs PyTorch and an image of at most :data:`MAX_PIXELS` (autograd through the whole decoder).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ...errors import SDCError

#: effort -> stages of (steps, Adam learning rate); the rate control runs before each stage
SCHEDULES: dict[int, tuple[tuple[int, float], ...]] = {
    0: (),
    1: ((2, 0.05), (1, 0.03)),
    2: ((2, 0.05), (2, 0.03), (2, 0.015), (2, 0.008)),
    3: (
        (3, 0.05),
        (3, 0.04),
        (3, 0.03),
        (3, 0.024),
        (3, 0.018),
        (3, 0.014),
        (3, 0.011),
        (3, 0.008),
        (3, 0.0065),
        (3, 0.005),
    ),
}


def schedule_label(effort: int, precision: str = "fp32", detail: float | None = None) -> str | None:
    """``effort``'s recipe as text (``2x0.05+1x0.03@bf16 detail 0.003``: steps x learning rate per stage, ``@bf16``
    where the decoder passes run in bf16, the detail term's weight, by default :func:`detail_weight`), None for effort
    0: what a benchmark record stores, so that a record refined another way is made again."""
    stages = SCHEDULES.get(effort, ())
    label = "+".join(f"{n}x{lr:g}" for n, lr in stages)
    if not label:
        return None
    return label + ("@bf16" if precision == "bf16" else "") + f" detail {detail_weight(effort, detail):g}"


#: rate weight relative to the high-rate slope (0 = rate-blind refinement, as before)
RATE_ALPHA = 1.0
#: effort -> weight of the per-tile detail term (:func:`helpers.methods.tc.detail_loss.detail_loss`; 0 = pixel error
#: only): per effort the weight at which the refined pictures keep as much fine detail as effort 0's (the issue's
#: floor), measured on 12 licensed training photos at 5000 B (results/encoder_training/refine_detail_floor.md)
DETAIL_BETAS: dict[int, float] = {1: 3e-3, 2: 2e-3, 3: 2e-3}


def detail_weight(effort: int, detail: float | None = None) -> float:
    """The detail term's weight a refinement at ``effort`` uses: ``detail`` where one is given (``CodecParams.detail``),
    else the effort's own (:data:`DETAIL_BETAS`; the largest of them for a schedule installed under another number, as
    experiments do)."""
    return detail if detail is not None else DETAIL_BETAS.get(effort, max(DETAIL_BETAS.values()))


MAX_PIXELS = 1024 * 1024


def _pixels(backend):
    """Differentiable decoder: (1, C, h, w) latent -> (1, 3, H, W) RGB in [0, 1]."""
    if getattr(backend, "runtime", "torch") != "torch":
        raise SDCError(
            f"--effort needs a PyTorch decoder; this backend runs on {backend.runtime}: "
            f"use --runtime torch, or --effort 0"
        )
    if backend.kind == "taef2":
        return backend.decoder
    if backend.kind == "sd":
        return lambda z: (backend.vae.decode(z).sample + 1) / 2
    raise SDCError(f"--effort needs a PyTorch decoder; backend '{backend.kind}' has none: use --effort 0")


def tc_state(quant: Callable[[np.ndarray], np.ndarray], z: np.ndarray, fingerprint: int | None):
    """(tables, levels, step index k) of a tc quantizer ``quant`` for latent ``z``, read back from its output (the
    analysed quantized latent is an integer multiple of the step), or None where ``quant`` is no tc quantizer."""
    from . import tcoder as T

    levels = T.levels_for(*z.shape[1:])
    tables = T.tables_for(z, fingerprint, levels)
    c = np.concatenate([x.ravel() for x in T.analyze(quant(z), tables, levels)])
    a = np.abs(c)
    nz = a[a > 1e-4 * max(float(a.max(initial=0)), 1e-30)]
    if nz.size == 0:
        return None
    q = np.rint(c / nz.min())
    k = T.k_of(float((c * q).sum() / (q * q).sum()))
    y = c / T.step_of(k)
    if np.abs(y - np.rint(y)).max() > 0.02:
        return None
    return tables, levels, k


def rate_weight(k: int, alpha: float = RATE_ALPHA) -> float:
    """lambda (pixel squared error, [0, 1] RGB, per bit) at tc step index ``k``: the high-rate slope."""
    import math

    from . import tcoder as T
    from .rate_model import G_PIXEL

    return alpha * math.log(2) / 6 * G_PIXEL * T.step_of(k) ** 2


def refine_latents(
    backend,
    image,
    z: np.ndarray,
    effort: int,
    quantizer_for: Callable[[np.ndarray], Callable[[np.ndarray], np.ndarray]],
    progress: bool = False,
    alpha: float | None = None,
    beta: float | None = None,
    extra_loss: Callable | None = None,
    precision: str = "fp32",
) -> np.ndarray:
    """Return a latent (C, h, w) whose quantized version decodes closer to ``image`` (the policy-applied model
    input) for fewer bits. ``quantizer_for(z)`` runs the rate control for ``z`` and returns ``Q``: latent ->
    quantized latent at the step it chose. ``alpha``: the rate weight (default :data:`RATE_ALPHA`; 0 = rate-blind;
    ignored where ``Q`` is no tc quantizer). ``extra_loss(decoded, target)``, if given, is added to every step's loss
    (both (1, 3, H, W) in [0, 1]; for experiments, e.g. ``gamma=`` of ``scripts/exp_refine_schedule.py``).
    ``precision``: the decoder passes' (:func:`helpers.methods.tc.precision.resolve_precision`; float32 by default;
    bf16 applies to a decoder on the CPU only)."""
    alpha = RATE_ALPHA if alpha is None else alpha
    beta = detail_weight(effort, beta)
    if effort not in SCHEDULES:
        raise SDCError(f"--effort must be one of {sorted(SCHEDULES)}, got {effort}")
    stages = SCHEDULES[effort]
    if not stages:
        return z
    import torch
    from tqdm.auto import tqdm

    from ...images import to_tensor
    from . import rate_model as R
    from .detail_loss import detail_loss
    from .precision import resolve_precision, run

    w, h = image.size
    if w * h > MAX_PIXELS:
        raise SDCError(
            f"--effort {effort} back-propagates through the decoder and is limited to "
            f"{MAX_PIXELS:,} pixels; this image has {w * h:,}: use --effort 0"
        )
    dec = _pixels(backend)
    precision = resolve_precision(precision) if torch.device(backend.device).type == "cpu" else "fp32"
    params = [p for m in backend.components().values() for p in m.parameters()]
    dtype = params[0].dtype if params else torch.float32
    target = ((to_tensor(image) + 1) / 2).to(backend.device, torch.float32)
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    zt = torch.from_numpy(np.array(z, np.float32))  # a copy: Adam must not move the caller's latent
    zt = zt[None].to(backend.device).requires_grad_(True)
    bar = tqdm(
        total=sum(n for n, _ in stages), desc=f"refine latent (effort {effort})", disable=not progress, leave=False
    )
    try:
        with torch.enable_grad():
            for n, lr in stages:
                z0 = zt.detach()[0].cpu().numpy()
                quant = quantizer_for(z0)
                state = tc_state(quant, z0, getattr(backend, "fingerprint", None)) if alpha else None
                lam = rate_weight(state[2], alpha) if state else 0.0
                opt = torch.optim.Adam([zt], lr=lr)
                for _ in range(n):
                    zq = torch.from_numpy(quant(zt.detach()[0].cpu().numpy()))[None].to(zt.device)
                    z_in = zt + (zq - zt).detach()  # straight-through: decode Q(z), differentiate as if Q = id
                    out = run(dec, z_in.to(dtype), precision)
                    loss = torch.sum((out[..., :h, :w] - target) ** 2)
                    if lam:
                        tables, levels, k = state
                        loss = loss + lam * R.rate_bits(R.analyze(zt.float(), tables, levels), tables, levels, k)[0]
                    loss = loss / target.numel()
                    if beta:
                        loss = loss + beta * detail_loss(target, out[..., :h, :w])
                    if extra_loss is not None:
                        loss = loss + extra_loss(out[..., :h, :w], target)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    bar.update(1)
    finally:
        bar.close()
        for p, s in zip(params, saved):
            p.requires_grad_(s)
    return zt.detach()[0].float().cpu().numpy()

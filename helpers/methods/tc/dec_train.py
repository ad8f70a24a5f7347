"""A decoder for tc files: TAEF2's decoder fine-tuned on the tc-quantized latents of the stock encoder, on the
licensed training photos (never Kodak, never the holdout photos)::

    python -m helpers.methods.tc.dec_train --budget-minutes 60 --out DIR [--beta B]    # DIR/ckpt.pt, DIR/log.csv; resumes
    python -m helpers.methods.tc.dec_train --compare DIR/ckpt.pt [...]                # same files, stock vs trained decoder
    python -m helpers.methods.tc.dec_train --export DIR/ckpt.pt                        # -> helpers/data/taef2_tc_decoder.pth

Each step takes a batch of random crops, encodes them with the frozen stock encoder, quantizes the tc coefficients
(4 wavelet levels, the coder's tables) at a step drawn per crop (log-uniform over the steps the rate control picks
for 2-20 KB at 512x512; plain rounding, as the coder does), and trains the decoder on ``MSE(pixels) + beta *
detail``, the per-tile two-sided detail term of :mod:`helpers.methods.tc.detail_loss` (pixel error alone teaches
the decoder to blur what the quantizer left ambiguous), optionally ``+ gamma * (10 - ColorVideoVDP JOD)``.

The encoder, the tables and the ``.sdc`` format do not change: a file is the same bytes, only its pictures differ.
A trained decoder has other weights and so another fingerprint; it is an experiment here, not a model the CLI
offers (see the README, "A decoder for tc files").
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .enc_train import (
    COMPARE_METRICS,
    DATA_DIR,
    LEVELS,
    add_training_args,
    compare_table,
    comparison_images,
    cvvdp_term,
    describe_changes,
    draw_batch,
    fit,
    load_part,
    run_compare,
    run_meta,
    save_half,
    scores,
    step_log,
    training_images,
    training_setup,
    write_licence_record,
)

WEIGHTS = DATA_DIR / "taef2_tc_decoder.pth"
BETA = 5e-3  # weight of the per-tile detail term
LR = 2e-5


def quantized_latents(encoder, x, tables, ks: list[int]):
    """The stock encoder's latents of ``x`` (N, 3, H, W) in [0, 1], tc-quantized at step indices ``ks`` (one per
    crop) and synthesized back: what the decoder gets from a file. No gradient."""
    import torch

    from . import rate_model as R
    from . import tcoder as T

    with torch.no_grad():
        c = R.analyze(encoder(x), tables, LEVELS)
        delta = torch.tensor([T.step_of(k) for k in ks], dtype=c[0].dtype)
        return R.synthesize([y * delta.reshape(-1, 1, 1, 1) for y in R.quantize(c, delta, "hard")], tables, LEVELS)


def dec_loss(decoder, x, zq, beta: float = BETA, gamma: float = 0.0):
    """(loss, per-crop pixel MSE) of the decoder on quantized latents ``zq`` against the crops ``x`` in [0, 1]."""
    from .detail_loss import detail_loss

    xh = decoder(zq)
    mse = ((xh - x) ** 2).flatten(1).mean(1)
    loss = mse.mean()
    if beta:
        loss = loss + beta * detail_loss(x, xh)
    if gamma:
        loss = loss + gamma * cvvdp_term(xh, x)
    return loss, mse.detach()


def train(
    out: Path,
    budget_minutes: float,
    batch: int = 4,
    crop: int = 192,
    lr: float = LR,
    beta: float = BETA,
    gamma: float = 0.0,
    checkpoint_minutes: float = 5.0,
    threads: int = 2,
    seed: int = 1,
    weights_dir: Path | None = None,
    images: list[np.ndarray] | None = None,
    progress: bool = True,
    max_steps: int | None = None,
    keep: bool = False,
) -> Path:
    """Train (or resume from ``out/ckpt.pt``) for ``budget_minutes`` of wall time (or ``max_steps`` steps in all);
    returns the checkpoint path. ``images``: HxWx3 uint8 arrays to crop from (default: the training photos).
    ``keep``: keep every checkpoint as ``ckpt_STEP.pt``."""
    backend, tables = training_setup("decoder", threads, weights_dir)
    encoder, decoder = backend.encoder, backend.decoder
    images = training_images() if images is None else images

    def batch_loss(rng):
        x, ks = draw_batch(images, batch, crop, rng)
        loss, mse = dec_loss(decoder, x, quantized_latents(encoder, x, tables, ks), beta, gamma)
        return loss, step_log(loss, mse, ks)

    meta = run_meta(backend, tables, crop, batch, beta=beta, gamma=gamma)
    return fit(
        out,
        "decoder",
        decoder,
        batch_loss,
        meta,
        budget_minutes,
        lr,
        checkpoint_minutes,
        seed,
        max_steps,
        progress,
        keep=keep,
    )


def export(ckpt: Path, dest: Path = WEIGHTS) -> Path:
    """Write a checkpoint's decoder as a float16 state dict (TAEF2 decoder keys) and the training photos' licences."""
    st = save_half(ckpt, "decoder", dest)
    write_licence_record(
        dest,
        "TAEF2's decoder fine-tuned on tc-quantized latents (python -m helpers.methods.tc.dec_train)",
        f"Started from TAEF2's decoder weights (madebyollin/taesd, MIT licence); {st['step']} steps of batch "
        f"{st['batch']}, {st['crop']}x{st['crop']} crops, latents of the stock TAEF2 encoder (decoder weights "
        f"{st['fingerprint']:08x}) quantized with tc tables {st['table_id']:08x}; beta {st['beta']:g}, "
        f"gamma {st['gamma']:g}, learning rate {st['lr']:g}{describe_changes(st.get('changes', []))}.",
    )
    return dest


def load_trained_decoder(path: str | Path | None = None, dtype=None):
    """TAEF2 decoder module with trained weights (default: ``helpers/data/taef2_tc_decoder.pth``; a training
    checkpoint works too), in eval mode."""
    from ...backends.taef2 import make_decoder

    return load_part(Path(path) if path is not None else WEIGHTS, "decoder", make_decoder, "dec_train", dtype)


def compare(images: dict, decoders: dict, budgets=(5000, 12000), metrics=COMPARE_METRICS, weights_dir=None):
    """Code every image (name -> PIL image, sides multiples of 16) with the stock TAEF2 encoder and tc at each
    budget, and decode each file's latent with every decoder (name -> module; ``"stock"`` is added): records of
    bytes, PSNR, the detail ratio and ``metrics`` (keys of :func:`helpers.metrics.measure`)."""
    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from ... import bitstream
    from ...backends.taef2 import TAEF2Backend, load_taef2
    from ...codec import CodecParams, decode_pixels, encode
    from . import tcoder as T

    stock = load_taef2(weights_dir, device="cpu")
    backends = {"stock": stock}
    backends.update({n: TAEF2Backend(stock.encoder, d, stock.device, stock.dtype) for n, d in decoders.items()})
    rows = []
    for name, img in tqdm(images.items(), desc="decoder comparison"):
        for b in budgets:
            enc = encode(img, stock, CodecParams(method="tc", policy="none"), target_bytes=b)
            h, payload = bitstream.unpack(enc.data)
            z = T.decode_payload(payload, h.channels, h.latent_height, h.latent_width, h.fingerprint)
            for bname, be in backends.items():
                with torch.no_grad():
                    dec = Image.fromarray(decode_pixels(be, z))
                rows.append(
                    {
                        "image": name,
                        "decoder": bname,
                        "budget": b,
                        "bytes": enc.nbytes,
                        **scores(img, dec, metrics),
                    }
                )
    return rows


def compare_checkpoints(
    ckpts: list[str], kodak: Path, budgets=(5000, 12000), metrics=COMPARE_METRICS, training: bool = False
) -> str:
    """The stock decoder against trained checkpoints (or exported weights) on the same files: the Kodak crops in
    ``kodak`` and the licensed holdout photos (512x512 centre crops; ``training``: the training photos' too), tc at
    each budget."""
    images = comparison_images(kodak, training)
    decoders = {str(c): load_trained_decoder(c) for c in ckpts}
    return compare_table(compare(images, decoders, budgets, metrics), column="decoder")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.methods.tc.dec_train", description=__doc__.splitlines()[0])
    add_training_args(ap, part="decoder", weights=WEIGHTS, lr=LR)
    ap.add_argument("--beta", type=float, default=BETA, help="weight of the per-tile detail term")
    ap.add_argument("--gamma", type=float, default=0.0, help="weight of a ColorVideoVDP term (10 - JOD)")
    args = ap.parse_args(argv)
    from ...errors import guarded

    def run():
        if args.compare:
            return run_compare(args, compare_checkpoints)
        if args.export:
            print(export(Path(args.export)))
            return 0
        if not args.out:
            ap.error("--out is required for training")
        print(
            train(
                Path(args.out),
                args.budget_minutes,
                args.batch,
                args.crop,
                args.lr,
                args.beta,
                args.gamma,
                args.checkpoint_minutes,
                args.threads,
                keep=args.keep,
            )
        )
        return 0

    return guarded(run)


if __name__ == "__main__":
    raise SystemExit(main())

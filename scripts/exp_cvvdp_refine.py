"""Does a ColorVideoVDP term in the encoder-side refinement buy JOD? Measured before using one (issue 15).

    python scripts/exp_cvvdp_refine.py [--photos train|holdout] [--n 4] [--gammas 0 0.003 0.01 0.03] [--effort 1]

The tc encoder's refinement (``--effort``, :mod:`helpers.methods.tc.refine`) minimises pixel error + rate + a detail
term. The benchmark scores ColorVideoVDP, and cvvdp is written in PyTorch with a ``loss`` (10 - JOD) meant for
optimisation. This script adds ``gamma * cvvdp.loss(decoded, original)`` (display ``standard_fhd``, as the
benchmark) to every refinement step through ``refine_latents(extra_loss=...)`` and codes the first N training
photos (never Kodak) at 5000 B, the 512x512 centre crop, every byte counted; it prints per photo and the means of
PSNR, MS-SSIM, ColorVideoVDP, SSIMULACRA 2, Butteraugli, detail retention and the encode's seconds, and writes the
records to ``results/encoder_training/cvvdp_refine_<photos>_e<effort>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np

KEYS = ("psnr", "ms_ssim", "cvvdp", "ssimulacra2", "butteraugli", "detail_retention")
OUT = Path(__file__).resolve().parents[1] / "results" / "encoder_training"


def cvvdp_loss(gamma: float):
    """``(decoded, target) -> gamma * (10 - JOD)`` for (1, 3, H, W) tensors in [0, 1]."""
    from helpers.metrics.perceptual import _cvvdp

    vdp = _cvvdp()

    def loss(out, target):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gamma * vdp.loss(out[0].clamp(0, 1), target[0], dim_order="CHW")

    return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", choices=("train", "holdout"), default="train")
    ap.add_argument("--n", type=int, default=4, help="the first N photos of the set")
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.0, 0.003, 0.01, 0.03])
    ap.add_argument("--effort", type=int, default=1)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from helpers.backends.taef2 import load_taef2
    from helpers.codec import CodecParams, decode, encode, encode_latents
    from helpers.images import model_input
    from helpers.methods.tc import refine
    from helpers.metrics import measure
    from helpers.photos import crop512, holdout_photos, train_photos

    torch.set_num_threads(args.threads)
    backend = load_taef2(None, device="cpu")
    paths = (train_photos() if args.photos == "train" else holdout_photos())[: args.n]
    plain = refine.refine_latents
    rows = []
    try:
        for p in tqdm(paths, desc="photos"):
            img = crop512(Image.open(p).convert("RGB"))
            _, ref = model_input(img, "crop512", backend.downsample)
            z = encode_latents(backend, ref)
            for g in args.gammas:
                # the tc method imports refine_latents at call time: this puts the extra term into every step
                refine.refine_latents = functools.partial(plain, extra_loss=cvvdp_loss(g) if g else None)
                t0 = time.perf_counter()
                enc = encode(
                    img, backend, CodecParams(method="tc", policy="crop512", effort=args.effort), args.budget, z
                )
                seconds = time.perf_counter() - t0
                dec = decode(enc.data, backend).image
                row = {"image": p.stem, "gamma": g, "bytes": enc.nbytes, "seconds": round(seconds, 1)}
                row.update(measure(ref, dec, keys=list(KEYS)))
                rows.append(row)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    finally:
        refine.refine_latents = plain
    for g in args.gammas:
        rs = [r for r in rows if r["gamma"] == g]
        means = {k: round(float(np.mean([r[k] for r in rs if r.get(k) is not None])), 3) for k in (*KEYS, "seconds")}
        print(f"mean over {len(rs)} photos, gamma {g}: {means}")
    OUT.mkdir(parents=True, exist_ok=True)
    dest = OUT / f"cvvdp_refine_{args.photos}_e{args.effort}.json"
    dest.write_text(json.dumps(rows, indent=1) + "\n")
    print(dest)


if __name__ == "__main__":
    main()

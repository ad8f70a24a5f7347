"""Which refinement schedule and rate weight should an effort level use? Measured on training photos (issue 15).

    python scripts/exp_refine_schedule.py --variants effort=1 effort=1,alpha=2 sched=4x0.05+4x0.015 \
        [--photos train|holdout] [--n 4] [--skip 0] [--budget 5000] [--threads 1] [--encoder tc|stock] [--out NAME]

Each variant is comma-separated ``key=value``: ``effort=N`` (a shipped schedule of
:data:`helpers.methods.tc.refine.SCHEDULES`), or ``sched=STEPSxLR+...`` (stages of steps x Adam learning rate, the
rate control before each), ``alpha=A`` (rate weight relative to the high-rate slope, default the shipped
``RATE_ALPHA``), ``beta=B`` (detail term weight; default the named effort's, ``detail_weight(N)``; a ``sched=``
variant must give it), ``gamma=G`` (adds ``G * (10 - JOD)``,
ColorVideoVDP's own ``loss`` on display ``standard_fhd`` as in the benchmark, to every step; default 0), ``prec=bf16``
(the decoder passes in bf16 autocast, :mod:`helpers.methods.tc.precision`; default fp32). Every variant
codes the same photos (the 512x512 centre crop, tc's trained encoder or ``--encoder stock``, at the budget, every byte
counted) from the same latent; the script prints per photo and the means of PSNR, MS-SSIM, ColorVideoVDP,
SSIMULACRA 2, Butteraugli, detail retention and encode seconds, how many photos each variant improves over the first
one, and writes the records to ``results/encoder_training/refine_<NAME>.json`` (default NAME:
``schedules_<photos>``). Never run it on Kodak: the schedules are chosen here and tested there.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
import warnings
from pathlib import Path

import numpy as np

KEYS = ("psnr", "ms_ssim", "cvvdp", "ssimulacra2", "butteraugli", "detail_retention")
OUT = Path(__file__).resolve().parents[1] / "results" / "encoder_training"
#: the effort number a custom schedule is installed under while it runs (not one of the shipped levels)
SLOT = 99


def cvvdp_loss(gamma: float):
    """``(decoded, target) -> gamma * (10 - JOD)`` for (1, 3, H, W) tensors in [0, 1]."""
    from helpers.metrics.perceptual import _cvvdp

    vdp = _cvvdp()

    def loss(out, target):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gamma * vdp.loss(out[0].clamp(0, 1), target[0], dim_order="CHW")

    return loss


def parse_variant(text: str) -> dict:
    """``effort=3,alpha=2`` -> {"stages": ((10, 0.05), ...), "alpha": 2.0, "beta": None, "gamma": 0.0}."""
    from helpers.methods.tc import refine

    out: dict = {"stages": None, "alpha": None, "beta": None, "gamma": 0.0, "precision": "fp32"}
    effort = None  # the shipped level named, whose detail weight is the variant's default
    for part in text.split(","):
        key, _, value = part.partition("=")
        if key == "effort":
            effort = int(value)
            out["stages"] = refine.SCHEDULES[effort]
        elif key == "sched":
            out["stages"] = tuple((int(n), float(lr)) for n, lr in (s.split("x") for s in value.split("+")))
        elif key in ("alpha", "beta", "gamma"):
            out[key] = float(value)
        elif key == "prec" and value in ("fp32", "bf16"):
            out["precision"] = value
        else:
            raise SystemExit(
                f"unknown variant key or value {part!r} in {text!r}: use effort=, sched=, alpha=, beta=, gamma=, "
                "prec=fp32|bf16"
            )
    if out["stages"] is None:
        raise SystemExit(f"variant {text!r} names no schedule: add effort=N or sched=STEPSxLR+...")
    if out["beta"] is None and effort is None:
        raise SystemExit(f"variant {text!r} names no detail weight: add beta=B (e.g. beta=0.002)")
    out["beta"] = refine.detail_weight(effort, out["beta"])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="+", required=True)
    ap.add_argument("--photos", choices=("train", "holdout"), default="train")
    ap.add_argument("--n", type=int, default=4, help="photos to code")
    ap.add_argument("--skip", type=int, default=0, help="start at this photo of the set (split runs across processes)")
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--encoder", choices=("tc", "stock"), default="tc", help="the latent every variant starts from")
    ap.add_argument("--out", default=None, help="records file name part (default schedules_<photos>)")
    args = ap.parse_args(argv)
    variants = {v: parse_variant(v) for v in args.variants}

    import torch
    from PIL import Image
    from tqdm.auto import tqdm

    from helpers.backends.taef2 import load_taef2
    from helpers.codec import CodecParams, decode, encode, encode_latents, encoder_backend
    from helpers.images import model_input
    from helpers.methods.tc import refine
    from helpers.metrics import measure
    from helpers.photos import crop512, holdout_photos, train_photos

    torch.set_num_threads(args.threads)
    backend = load_taef2(None, device="cpu")
    params = CodecParams(method="tc", policy="crop512", effort=SLOT, encoder=args.encoder)
    paths = (train_photos() if args.photos == "train" else holdout_photos())[args.skip : args.skip + args.n]
    plain = refine.refine_latents
    rows = []
    try:
        for p in tqdm(paths, desc="photos"):
            img = crop512(Image.open(p).convert("RGB"))
            _, ref = model_input(img, "crop512", backend.downsample)
            z = encode_latents(encoder_backend(backend, params), ref)
            for name, v in variants.items():
                refine.SCHEDULES[SLOT] = v["stages"]
                # the tc method imports refine_latents at call time: this sets the variant's weights for every step
                extra = cvvdp_loss(v["gamma"]) if v["gamma"] else None
                # the detail weight and the precision go through the codec's own parameters: the method passes
                # them to refine_latents by keyword, which would override the same keywords bound here
                refine.refine_latents = functools.partial(plain, alpha=v["alpha"], extra_loss=extra)
                vparams = dataclasses.replace(params, detail=v["beta"], precision=v["precision"])
                t0 = time.perf_counter()
                enc = encode(img, backend, vparams, args.budget, z)
                seconds = time.perf_counter() - t0
                dec = decode(enc.data, backend).image
                row = {"image": p.stem, "variant": name, "bytes": enc.nbytes, "seconds": round(seconds, 1)}
                row.update(measure(ref, dec, keys=list(KEYS)))
                rows.append(row)
                print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    finally:
        refine.refine_latents = plain
        refine.SCHEDULES.pop(SLOT, None)
    first = args.variants[0]
    for name in args.variants:
        rs = [r for r in rows if r["variant"] == name]
        means = {k: round(float(np.mean([r[k] for r in rs if r.get(k) is not None])), 3) for k in (*KEYS, "seconds")}
        base = {r["image"]: r for r in rows if r["variant"] == first}
        wins = {
            k: sum((r[k] < base[r["image"]][k]) if k == "butteraugli" else (r[k] > base[r["image"]][k]) for r in rs)
            for k in KEYS[:5]
        }
        print(f"mean over {len(rs)} photos, {name}: {means}; better than {first} on {wins}")
    OUT.mkdir(parents=True, exist_ok=True)
    dest = OUT / f"refine_{args.out or 'schedules_' + args.photos}.json"
    dest.write_text(json.dumps(rows, indent=1) + "\n")
    print(dest)


if __name__ == "__main__":
    main()

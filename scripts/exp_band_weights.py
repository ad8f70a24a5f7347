"""Perceptual step weights for the tc coder: does a coarser or finer step per wavelet level / channel component buy
quality at the same bytes? Measured before changing the tables (issue 15).

    python scripts/exp_band_weights.py eval  --weights LL L4 L3 L2 L1 C0 C1 C2 C3 [--photos train|holdout|kodak]
    python scripts/exp_band_weights.py search [--n 14] [--rounds 2]

One uniform step for every coefficient is rate-distortion optimal only to first order (the decoder-metric transform
makes squared coefficient error equal squared pixel error near the latent); at 5 KB the decoder is far from linear,
and the benchmark's perceptual metrics do not weigh all spatial frequencies and colours as pixel error does.
Scaling the rows of a band's channel transform ``A_b`` by ``s`` (and ``Ai_b``'s columns by ``1/s``, the class base
by ``4 log2 s``) quantizes those coefficients with step ``delta / s``: the same decoder, the same format, only the
tables change. Weights are integers in quarter octaves (``s = 2 ** (n / 4)``): per wavelet level (LL, then detail
levels coarse to fine) and per group of KLT components (0-3, 4-7, 8-15, 16-31; ordered by their energy in the
decoder metric). ``search`` runs a coordinate search on the first N training photos (never Kodak) at 5000 B, the
objective ``JOD + 0.1 * PSNR`` with detail retention not more than 0.02 below the unweighted tables'; ``eval``
scores one weight vector on a photo set. Records: ``results/band_weights/``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "results" / "band_weights"
CACHE = Path(os.environ.get("BW_CACHE", "/tmp/band_weights"))
KEYS = ("psnr", "ms_ssim", "cvvdp", "detail_retention")
COMP_GROUPS = ((0, 4), (4, 8), (8, 16), (16, 32))
N_WEIGHTS = 5 + len(COMP_GROUPS)


def band_level(b: int) -> int:
    """0 for LL, 1 for the coarsest detail level ... levels for the finest."""
    return 0 if b == 0 else (b - 1) // 3 + 1


def weighted_tables(tables, weights):
    """Tables whose coefficient (band b, component j) is scaled by 2 ** ((w_level(b) + w_group(j)) / 4)."""
    import copy

    from helpers.methods.tc import tcoder as T

    w = np.asarray(weights, int)
    t = copy.copy(tables)
    t.A, t.Ai, t.base = {}, {}, {}
    for L in tables.A:
        nb, C = tables.base[L].shape
        n = np.zeros((nb, C), int)
        for b in range(nb):
            n[b] += w[min(band_level(b), 4)]
            for g, (lo, hi) in enumerate(COMP_GROUPS):
                n[b, lo:hi] += w[5 + g]
        s = 2.0 ** (n / T.CLASS_PER_OCTAVE)
        t.A[L] = tables.A[L] * s[:, :, None]
        t.Ai[L] = tables.Ai[L] / s[:, None, :]
        t.base[L] = tables.base[L] + n
    t.table_id = 0xBEEF if any(w) else tables.table_id
    return t


_STATE: dict = {}


def _init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    from helpers.backends.taef2 import load_taef2

    _STATE["backend"] = load_taef2(None, device="cpu")


def latents_and_refs(photos: str, n: int | None):
    """(names, latents, 512x512 references) for a set, cached in $BW_CACHE."""
    CACHE.mkdir(parents=True, exist_ok=True)
    f = CACHE / f"{photos}.npz"
    if not f.is_file():
        from PIL import Image

        from helpers.backends.taef2 import load_taef2
        from helpers.codec import encode_latents
        from helpers.images import model_input
        from helpers.photos import crop512, holdout_photos, train_photos

        backend = load_taef2(None, device="cpu")
        if photos == "kodak":
            from helpers.bench.config import DEFAULT_DATA

            paths = sorted(Path(DEFAULT_DATA).glob("kodim*.png"))
        else:
            paths = train_photos() if photos == "train" else holdout_photos()
        names, zs, refs = [], [], []
        for p in paths:
            img = Image.open(p).convert("RGB")
            img = crop512(img) if photos != "kodak" else img
            _, ref = model_input(img, "crop512", backend.downsample)
            zs.append(encode_latents(backend, ref))
            refs.append(np.asarray(ref))
            names.append(p.stem)
        np.savez(f, names=np.array(names), z=np.stack(zs), ref=np.stack(refs))
    d = np.load(f)
    sl = slice(None) if n is None else slice(0, n)
    return list(d["names"][sl]), d["z"][sl], d["ref"][sl]


def _score(args):
    z, ref, weights, budget, overhead = args
    from helpers.codec import decode_pixels
    from helpers.methods.tc import tcoder as T
    from helpers.metrics import measure

    backend = _STATE["backend"]
    key = tuple(weights)
    if key not in _STATE:  # one set of weighted tables per weight vector and worker
        _STATE[key] = weighted_tables(T.trained_tables(backend.fingerprint), weights)
    coded, _ = T.encode_latent(z, backend.fingerprint, budget=budget, overhead=overhead, tables=_STATE[key])
    out = decode_pixels(backend, coded.latent())
    row = measure(ref, out, keys=list(KEYS))
    row["bytes"] = len(coded.payload) + overhead
    return row


def evaluate(pool, zs, refs, weights, budget, overhead):
    rows = list(pool.map(_score, [(z, r, list(weights), budget, overhead) for z, r in zip(zs, refs)]))
    means = {k: float(np.mean([r[k] for r in rows if r.get(k) is not None])) for k in (*KEYS, "bytes")}
    return means, rows


def objective(m) -> float:
    return m["cvvdp"] + 0.1 * m["psnr"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=("eval", "search"))
    ap.add_argument("--weights", type=int, nargs=N_WEIGHTS, default=[0] * N_WEIGHTS)
    ap.add_argument("--photos", choices=("train", "holdout", "kodak"), default="train")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--overhead", type=int, default=None, help="container bytes (default: measured)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--tag", default="")
    args = ap.parse_args()

    names, zs, refs = latents_and_refs(args.photos, args.n)
    overhead = args.overhead
    if overhead is None:
        from helpers import bitstream
        from helpers.backends.taef2 import load_taef2
        from helpers.codec import CodecParams, encode

        b = load_taef2(None, device="cpu")
        from PIL import Image

        enc = encode(Image.fromarray(refs[0]), b, CodecParams(method="tc", policy="crop512"), args.budget, zs[0])
        overhead = bitstream.header_size(bitstream.unpack(enc.data)[0])
    print(f"{len(zs)} photos ({args.photos}), {args.budget} B, container overhead {overhead} B", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    # spawned workers: a forked child of a process whose torch already started its thread pool can hang
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, ctx, initializer=_init, initargs=(max(1, 2 // args.jobs),)) as pool:
        if args.mode == "eval":
            t0 = time.perf_counter()
            means, rows = evaluate(pool, zs, refs, args.weights, args.budget, overhead)
            print(json.dumps({"weights": args.weights, **{k: round(v, 4) for k, v in means.items()}}))
            print(f"{time.perf_counter() - t0:.0f} s, load {os.getloadavg()[0]:.2f}")
            dest = OUT / f"eval_{args.photos}_{args.budget}{args.tag}_{'_'.join(map(str, args.weights))}.json"
            dest.write_text(json.dumps({"weights": args.weights, "means": means, "images": names, "rows": rows}) + "\n")
            return
        log = OUT / f"search_{args.photos}{args.n or ''}_{args.budget}{args.tag}.jsonl"
        seen: dict[tuple, dict] = {}
        if log.is_file():
            for line in log.read_text().splitlines():
                r = json.loads(line)
                seen[tuple(r["weights"])] = r["means"]

        def score(w):
            w = tuple(int(x) for x in w)
            if w not in seen:
                means, _ = evaluate(pool, zs, refs, w, args.budget, overhead)
                seen[w] = means
                with log.open("a") as fh:
                    fh.write(json.dumps({"weights": list(w), "means": means}) + "\n")
                print(
                    f"{list(w)}  psnr {means['psnr']:.3f} jod {means['cvvdp']:.4f} detail "
                    f"{means['detail_retention']:.3f}  obj {objective(means):.4f}",
                    flush=True,
                )
            return seen[w]

        ref = score([0] * N_WEIGHTS)
        floor = ref["detail_retention"] - 0.02

        def ok(m):
            return m["detail_retention"] >= floor

        best = list(args.weights)
        bm = score(best)
        for _ in range(args.rounds):
            improved = False
            for i in range(1, N_WEIGHTS):  # the LL weight is the global step: fixed
                for d in (-2, 2, -1, 1):
                    w = list(best)
                    w[i] += d
                    m = score(w)
                    if ok(m) and objective(m) > objective(bm) + 1e-4:
                        best, bm, improved = w, m, True
                        break
            if not improved:
                break
        print("best", best, {k: round(v, 4) for k, v in bm.items()}, "vs", {k: round(v, 4) for k, v in ref.items()})


if __name__ == "__main__":
    main()

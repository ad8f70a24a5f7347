"""How much a richer context model could save in the tc coder, measured before building one (issue 15, item 4).

    python scripts/exp_contexts.py [--latents /tmp/sdcomp_exp_decoder_side/latents.npy]

The tc coder gives each quantized coefficient a scale class ``base[band, channel] - shift(step) + offset[cell]``,
``cell`` = (LL or not, channel group, checkerboard pass, bucket of the activity of already decoded neighbours:
parent, 4 spatial neighbours in the second pass, the first channel group). This script fits the offsets again on
TAEF2 latents of training-photo crops (ideal code lengths under the shipped integer tables, one offset per cell
chosen from -16..16), once with the shipped cells and once with every cell split further by a second activity:
the already decoded sibling bands at the same place (HL before LH before HH) and the parent's 3x3 neighbourhood.
It prints the bytes of the held-back latents (the last 14: two photos never used for fitting) under the shipped
offsets, the refitted ones and the extended cells, at the steps that give about 5 KB and 12 KB per 512x512
picture. The latents come from ``scripts/exp_decoder_side.py`` (made there on first use).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from helpers.methods.tc import tcoder as T

LEVELS = 4
OFFSETS = np.arange(-16, 17)


def features(q: list[np.ndarray], tables, k: int):
    """Per coefficient in coding order: value, base class, shipped cell (0..63), extra activity bucket (0..7)."""
    C = q[0].shape[0]
    absq = [np.abs(x) for x in q]
    out = [[], [], [], []]
    for b, shape in enumerate(x.shape[1:] for x in q):
        orient = (b - 1) % 3 if b else 0
        order = list(T.passes(C, shape))
        for i, (g, t, chans, mask) in enumerate(order):
            decoded = [absq[bb] if bb < b else np.zeros_like(absq[bb]) for bb in range(len(q))]
            for _, _, ch2, m2 in order[:i]:  # this band's earlier passes
                c2, (y2, x2) = np.asarray(ch2)[:, None], np.nonzero(m2)
                decoded[b][c2, y2, x2] = absq[b][c2, y2, x2]
            act = T.activity(decoded, b, g, t, chans, mask)
            ch, (ys, xs) = np.asarray(chans), np.nonzero(mask)
            extra = np.zeros_like(act)
            if b:
                for sb in range(b - orient, b):
                    extra += 2 * absq[sb][ch][:, ys, xs]
                par = absq[T.parent_of(b)]
                ph, pw = par.shape[1:]
                py, px = np.minimum(ys * ph // shape[0], ph - 1), np.minimum(xs * pw // shape[1], pw - 1)
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        if dy or dx:
                            extra += par[ch][:, np.clip(py + dy, 0, ph - 1), np.clip(px + dx, 0, pw - 1)]
            base = tables.base[LEVELS][b][ch][:, None] - T.class_shift(k) + np.zeros_like(act)
            cell = (((0 if b == 0 else 1) * 2 + g) * 2 + t) * T.N_BUCKETS + T.bucket(act)
            for lst, a in zip(out, (q[b][ch][:, ys, xs], base, cell, T.bucket(extra))):
                lst.append(a.ravel())
    return [np.concatenate(a) for a in out]


def collect(z: np.ndarray, tables, steps) -> list[np.ndarray]:
    rows = []
    for zi, s in zip(z, steps):
        k = T.k_of(s)
        rows.append(features(T.quantize(T.analyze(zi, tables, LEVELS), k), tables, k))
    return [np.concatenate([r[j] for r in rows]) for j in range(4)]


def fit(v, base, cell, n) -> np.ndarray:
    tot = np.stack(
        [np.bincount(cell, T.value_bits(v, np.clip(base + o, 0, T.N_CLASSES - 1)), minlength=n) for o in OFFSETS]
    )
    return OFFSETS[tot.argmin(0)]


def nbytes(v, base, cell, off) -> float:
    return float(T.value_bits(v, np.clip(base + off[cell], 0, T.N_CLASSES - 1)).sum() / 8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", default="/tmp/sdcomp_exp_decoder_side/latents.npy")
    args = ap.parse_args(argv)
    if not Path(args.latents).is_file():
        raise SystemExit(f"error: {args.latents} is missing: run python scripts/exp_decoder_side.py first")
    z = np.load(args.latents)
    from helpers.backends.taef2 import load_taef2

    tables = T.trained_tables(load_taef2(None, device="cpu").fingerprint)
    rng = np.random.default_rng(0)
    n_fit = min(60, len(z) - 14)
    train = collect(z[rng.choice(len(z) - 14, n_fit, replace=False)], tables, np.exp(rng.uniform(4.38, 5.52, n_fit)))
    shipped = np.asarray(tables.offsets).reshape(-1)
    refit = fit(*train[:3], shipped.size)
    n_ext = shipped.size * T.N_BUCKETS
    extended = fit(train[0], train[1], train[2] * T.N_BUCKETS + train[3], n_ext)
    print(f"fitted on {n_fit} latents ({train[0].size} coefficients); held back: the last 14 latents")
    print("| step (bytes per picture) | shipped offsets | refitted, same cells | extended cells |")
    print("|---|---|---|---|")
    for step in (150.0, 80.0):
        v, base, cell, extra = collect(z[-14:], tables, [step] * 14)
        b0 = nbytes(v, base, cell, shipped)
        b1 = nbytes(v, base, cell, refit)
        b2 = nbytes(v, base, cell * T.N_BUCKETS + extra, extended)
        print(
            f"| {step:.0f} ({b0 / 14:.0f} B) | {b0:.0f} B | {b1:.0f} B ({100 * (b1 / b0 - 1):+.1f} %) | "
            f"{b2:.0f} B ({100 * (b2 / b0 - 1):+.1f} %) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

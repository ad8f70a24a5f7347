"""How many bits could a better entropy model save the tc coder at 5 KB? An upper bound (issue 15).

    python scripts/exp_oracle_scales.py [--budget 5000] [--n-train 8] [--out results/decoder_side/oracle_scales.md]

The default needs about a fifth fewer bits at the same pictures to reach the issue's 26 dB (tc gains about 2.4 dB
per doubling of the bytes near 5 KB), the highest effort about a third. A learned entropy model (a hyperprior, a
wider context network) can only help by predicting each coefficient's distribution better than the coder's context
classes do. This script bounds what any model of the coder's kind (a discretized Laplace per coefficient, the
shipped integer tables) could save, by letting an oracle pick the best scale class *after seeing the values*:

- ``coder v1``: the ideal code length of the quantized coefficients under the classes the coder gives them (its
  contexts: parent, checkerboard neighbours, cross-channel) with the trained scales as they are (payload version 1),
  i.e. the payload without its head and padding;
- ``coder v2``: the same with the per-image scale offsets of payload version 2 (one per band and component group,
  chosen by the encoder; their 26 bytes not counted here);
- ``static``: one class per band and component (no context at all), chosen by the oracle;
- ``oracle BxB``: one class per band, component and BxB block of the band's positions (B = 8, 4, 2), chosen by the
  oracle, with no cost for telling the decoder which class it is (a hyperprior would pay for it), so this is a
  bound that no real scale model of this kind reaches.

The latents are the default (trained) encoder's of 512x512 centre crops of licensed photos, never Kodak: the 8
holdout photos and the first ``--n-train`` training photos, each coded at the finest step that fits ``--budget``
(40 bytes left for the container), as the benchmark codes them. Prints and writes a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

OVERHEAD = 40  # the .sdc container's bytes around a tc payload at 512x512 (as in generalization_gap.md)


def class_bits(band: np.ndarray, T) -> np.ndarray:
    """(N_CLASSES,) + band.shape: the bits of every value of ``band`` under every one of the coder's scale classes."""
    return np.stack([T.value_bits(band, np.full(band.shape, s)) for s in range(T.N_CLASSES)])


def oracle_bits(q: list[np.ndarray], T, block: int | None) -> float:
    """Bits with one oracle-chosen class per band, component and ``block`` x ``block`` positions (None: the band)."""
    total = 0.0
    for band in q:
        bits = class_bits(band, T)  # (S, C, h, w)
        S, C, h, w = bits.shape
        if block is None:
            total += float(bits.reshape(S, C, -1).sum(2).min(0).sum())
            continue
        H, W = -(-h // block) * block, -(-w // block) * block
        padded = np.zeros((S, C, H, W))
        padded[:, :, :h, :w] = bits
        per_block = padded.reshape(S, C, H // block, block, W // block, block).sum((3, 5))
        total += float(per_block.min(0).sum())
    return total


def measure(z: np.ndarray, fingerprint: int, budget: int, T) -> dict:
    coded, _ = T.encode_latent(z, fingerprint, budget=budget - OVERHEAD)
    k = coded.k
    tables = T.trained_tables(fingerprint)
    levels = T.levels_for(*z.shape[1:])
    q = coded.q
    cls = T.coefficient_classes(q, tables, levels, k)
    nz = sum(int((b != 0).sum()) for b in q)
    zero_bits = float(sum(T.value_bits(b, s)[b == 0].sum() for b, s in zip(q, cls)))
    row = {
        "payload": len(coded.payload),
        "coder v1": T.coefficient_bits(q, cls),
        "coder v2": T.coefficient_bits(q, T.coefficient_classes(q, coded.tables, levels, k)),
        "zero_bits": zero_bits,
        "nonzero": nz,
        "values": sum(b.size for b in q),
        "static": oracle_bits(q, T, None),
    }
    for b in (8, 4, 2):
        row[f"oracle {b}x{b}"] = oracle_bits(q, T, b)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=int, default=5000)
    ap.add_argument("--n-train", type=int, default=8)
    ap.add_argument("--out", default="results/decoder_side/oracle_scales.md")
    args = ap.parse_args(argv)
    from PIL import Image
    from tqdm.auto import tqdm

    from helpers.codec import encode_latents
    from helpers.methods.tc import tcoder as T
    from helpers.methods.tc.enc_train import trained_backend
    from helpers.photos import crop512, holdout_photos, train_photos

    backend = trained_backend()
    photos = {"holdout": holdout_photos(), "training": train_photos()[: args.n_train]}
    rows = {}
    for name, paths in photos.items():
        rows[name] = []
        for p in tqdm(paths, desc=name):
            z = encode_latents(backend, crop512(Image.open(p)))
            rows[name].append(measure(z, backend.fingerprint, args.budget, T))
    keys = ["coder v1", "coder v2", "static", "oracle 8x8", "oracle 4x4", "oracle 2x2"]
    lines = [
        f"# {Path(__file__).name}: bits of the quantized tc coefficients at {args.budget} B (the default encoder's "
        "latents of 512x512 centre crops of licensed photos; ideal code lengths under the shipped integer tables)",
        "",
        "| photos | images | payload B | nonzero coefficients | bits on zeros (v1) | "
        + " | ".join(keys)
        + " | oracle 4x4 vs coder v2 |",
        "|---|---|---|---|---|" + "---|" * (len(keys) + 1),
    ]
    for name, rs in rows.items():
        mean = {k: float(np.mean([r[k] for r in rs])) for k in rs[0]}
        cells = [f"{mean[k] / 8:.0f} B" for k in keys]
        lines.append(
            f"| {name} | {len(rs)} | {mean['payload']:.0f} | {mean['nonzero']:.0f} of {mean['values']:.0f} "
            f"({100 * mean['nonzero'] / mean['values']:.1f} %) | {100 * mean['zero_bits'] / mean['coder v1']:.0f} % | "
            + " | ".join(cells)
            + f" | {100 * (mean['oracle 4x4'] / mean['coder v2'] - 1):+.1f} % |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

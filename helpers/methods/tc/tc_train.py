"""Train the transform coder's tables (:mod:`.tcoder`) for one autoencoder, on licensed photos.

    python -m helpers.methods.tc.tc_train           # TAEF2 -> helpers/data/tc_<fingerprint>.npz (shipped)
    python -m helpers.methods.tc.tc_train --model CompVis/stable-diffusion-v1-4 --out ~/.cache/sdcomp/tc/  # SD, Colab

What is learned (never from Kodak: the photos are :data:`helpers.photos.PHOTOS` minus the holdout set):

1. the channel means;
2. the decoder's sensitivity per wavelet band: ``G_b = E[J_b^T J_b]`` (C x C), from random pixel-space probes
   ``w`` back-propagated through the frozen decoder (``E_w[(J^T w)(J^T w)^T] = J^T J``), mapped onto the
   band's coefficients through the wavelet synthesis operator;
3. per band, the KLT of the training coefficients in the metric ``G_b`` (``A_b = R_b^T L_b^T`` with
   ``G_b = L_b L_b^T``), so that squared coefficient error approximates squared pixel error;
4. each band/component's Laplace scale (the ``base`` class index at step 1);
5. the context offsets: per band kind, channel group, checkerboard pass and activity bucket, the class shift
   that minimises the training symbols' code length at three rates.

Deterministic given the photos and the seed; a progress bar per stage; ``--max-minutes`` bounds the probe
stage (the expensive one: one decoder backward pass per probe).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ...errors import SDCError
from . import tcoder as T

SIDE = 64  # latent side of the 512x512 training crops (8x downsampling)
MIN_CELL = 500  # context cells with fewer training symbols keep offset 0


def _crops(paths, seed: int = 0, extra: int = 2):
    """The central crop512 of each photo plus ``extra`` random 512x512 crops at other scales."""
    from PIL import Image

    from ...photos import crop512

    rng = np.random.default_rng(seed)
    for p in paths:
        with Image.open(p) as im:
            im = im.convert("RGB")
            yield crop512(im)
            for _ in range(extra):
                short = int(rng.integers(640, 1281))
                s = short / min(im.size)
                big = im.resize(
                    (max(512, round(im.width * s)), max(512, round(im.height * s))), Image.Resampling.LANCZOS
                )
                x, y = int(rng.integers(0, big.width - 511)), int(rng.integers(0, big.height - 511))
                yield big.crop((x, y, x + 512, y + 512))


def _decoder_pixels(backend):
    """z (1, C, h, w) -> pixels in 0..255 units, differentiable (the frozen decoder)."""
    if backend.kind == "taef2":
        return lambda z: backend.decoder(z) * 255.0
    return lambda z: backend.vae.decode(z).sample * 127.5


def synthesis_matrix(levels: int, side: int = SIDE) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """S (side^2 x side^2): column i = the latent-domain signal of unit coefficient i (bands flattened in
    :func:`helpers.methods.tc.tcoder.dwt2` order)."""
    shapes = T.band_shapes(side, side, levels)
    sizes = [a * b for a, b in shapes]
    n = sum(sizes)
    S = np.empty((n, n))
    off = np.cumsum([0] + sizes)
    chunk = 512
    for s0 in range(0, n, chunk):
        idx = np.arange(s0, min(n, s0 + chunk))
        bands = []
        for b, (h, w) in enumerate(shapes):
            x = np.zeros((len(idx), h * w))
            sel = (idx >= off[b]) & (idx < off[b + 1])
            x[np.flatnonzero(sel), idx[sel] - off[b]] = 1.0
            bands.append(x.reshape(len(idx), h, w))
        S[:, s0 : s0 + len(idx)] = T.idwt2(bands).reshape(len(idx), -1).T
    return S, shapes


def _code_length(freq_bits: np.ndarray, shift: np.ndarray, cls: np.ndarray, v: np.ndarray) -> float:
    """Bits to code values ``v`` with classes ``cls`` (the same model the range coder uses)."""
    r = shift[cls]
    hi = v >> r
    inside = np.abs(hi) <= T.M
    bits = np.where(inside, freq_bits[cls, np.clip(hi + T.M, 0, 2 * T.M)], freq_bits[cls, T.ESC])
    esc = ~inside
    if esc.any():
        mag = np.abs(hi[esc]) - T.M
        bits[esc] += 1 + 5 + 2 * np.floor(np.log2(mag))
    return float((bits + r).sum())


def fit_offsets(
    latents: list[np.ndarray], tables: T.Tables, levels: int, steps: list[float], progress: bool = True
) -> np.ndarray:
    """Per (band kind, group, pass, bucket): the integer class offset with the shortest training code."""
    freq, shift = T.class_tables()
    fb = -np.log2(freq / freq.sum(1, keepdims=True))
    cells: dict[tuple, list[tuple[np.ndarray, np.ndarray]]] = {}
    C = tables.channels
    for z in tqdm(latents, desc="context statistics", disable=not progress, leave=False):
        coeffs = T.analyze(z, tables, levels)
        for step in steps:
            k = T.k_of(step)
            q = T.quantize(coeffs, k)
            absq = [np.abs(x) for x in q]
            for b, x in enumerate(q):
                for g, t, chans, mask in T.passes(C, x.shape[1:]):
                    act = T.activity(absq, b, g, t, chans, mask)
                    base = tables.base[levels][b][np.asarray(chans)][:, None] - T.class_shift(k)
                    ys, xs = np.nonzero(mask)
                    vals = x[np.asarray(chans)][:, ys, xs]
                    bk = T.bucket(act)
                    for u in np.unique(bk):
                        sel = bk == u
                        cells.setdefault((0 if b == 0 else 1, g, t, int(u)), []).append(
                            (np.broadcast_to(base, sel.shape)[sel], vals[sel])
                        )
    offsets = np.zeros((2, 2, 2, T.N_BUCKETS), np.int64)
    for (kind, g, t, u), parts in cells.items():
        base = np.concatenate([p[0] for p in parts])
        vals = np.concatenate([p[1] for p in parts])
        if len(vals) < MIN_CELL:  # too few symbols to fit a shift: keep the band's own scale
            continue
        best = min(range(-12, 13), key=lambda o: _code_length(fb, shift, np.clip(base + o, 0, T.N_CLASSES - 1), vals))
        offsets[kind, g, t, u] = best
    return offsets


def train(
    backend,
    photos: list[Path],
    probes: int = 3,
    extra_crops: int = 2,
    max_minutes: float = 30.0,
    seed: int = 0,
    progress: bool = True,
) -> tuple[T.Tables, dict]:
    import torch

    from ...codec import encode_latents

    t_start = time.perf_counter()
    latents = [
        encode_latents(backend, im, seed)
        for im in tqdm(list(_crops(photos, seed, extra_crops)), desc="latents", disable=not progress)
    ]
    latents = [z.astype(np.float64) for z in latents if z.shape[1:] == (SIDE, SIDE)]
    if len(latents) < 4:
        raise SDCError(f"need 512x512 crops with a {SIDE}x{SIDE} latent (an 8x autoencoder); got {len(latents)}")
    C = latents[0].shape[0]
    mu = np.mean([z.mean((1, 2)) for z in latents], 0)
    # probes on the central crops (every (extra_crops + 1)-th latent)
    dec = _decoder_pixels(backend)
    gen = torch.Generator().manual_seed(seed)
    grads = []
    deadline = t_start + 60 * max_minutes
    centrals = latents[:: extra_crops + 1]
    for z in tqdm(centrals, desc="decoder probes", disable=not progress):
        zt = torch.from_numpy(z[None].astype(np.float32)).to(backend.device, backend.dtype).requires_grad_(True)
        with torch.enable_grad():
            y = dec(zt)
            for _ in range(probes):
                w = torch.randn(y.shape, generator=gen).to(y.device, y.dtype)
                (g,) = torch.autograd.grad(y, zt, w, retain_graph=True)
                grads.append(g[0].float().cpu().numpy().astype(np.float64))
        if time.perf_counter() > deadline:
            break
    P = np.stack(grads).reshape(len(grads), C, -1)
    tables = T.Tables(
        channels=C,
        mu=mu,
        A={},
        Ai={},
        base={},
        offsets=np.zeros((2, 2, 2, T.N_BUCKETS), np.int64),
        fingerprint=backend.fingerprint,
        name=backend.model_id,
    )
    report = {"photos": len(photos), "crops": len(latents), "probes": len(grads), "band_metric_trace": {}}
    for L in tqdm(range(T.MAX_LEVELS + 1), desc="band transforms", disable=not progress):
        S, shapes = synthesis_matrix(L)
        off = np.cumsum([0] + [a * b for a, b in shapes])
        gc = P @ S  # (n, C, N): the probes in coefficient space
        coeffs = [T.dwt2(z - mu[:, None, None], L) for z in latents]
        A, Ai, base = [], [], []
        for b in range(len(shapes)):
            gb = gc[:, :, off[b] : off[b + 1]]
            G = np.einsum("nci,ndi->cd", gb, gb) / (gb.shape[0] * gb.shape[2])
            G = (G + G.T) / 2 + 1e-6 * np.trace(G) / C * np.eye(C)
            Lc = np.linalg.cholesky(G)
            X = np.concatenate([c[b].reshape(C, -1) for c in coeffs], 1)
            Y = Lc.T @ X
            ev, R = np.linalg.eigh(Y @ Y.T / Y.shape[1])
            R = R[:, np.argsort(ev)[::-1]]
            Ab = R.T @ Lc.T
            A.append(Ab)
            Ai.append(np.linalg.inv(Ab))
            scale = np.abs(Ab @ X).mean(1)
            base.append(np.round(T.CLASS_PER_OCTAVE * np.log2(np.maximum(scale, 1e-12))) + T.CLASS_ZERO)
            report["band_metric_trace"].setdefault(L, []).append(float(np.trace(G)))
        tables.A[L], tables.Ai[L] = np.stack(A), np.stack(Ai)
        tables.base[L] = np.clip(np.stack(base), -1000, 1000).astype(np.int64)
    # context offsets at three rates: steps giving about 0.1, 0.3 and 1 bit per latent value with no offsets
    probe = latents[:: max(1, len(latents) // 12)]
    steps = _steps_for_rates(probe, tables, T.MAX_LEVELS, (0.1, 0.3, 1.0))
    tables.offsets = fit_offsets(probe, tables, T.MAX_LEVELS, steps, progress)
    report.update({"steps": steps, "offsets": tables.offsets.tolist(), "seconds": time.perf_counter() - t_start})
    return tables, report


def _steps_for_rates(latents, tables, levels, rates) -> list[float]:
    freq, shift = T.class_tables()
    fb = -np.log2(freq / freq.sum(1, keepdims=True))
    grid = 2.0 ** (np.arange(-8, 40) / 2)
    out = []
    for rate in rates:
        best = None
        for step in grid:
            k = T.k_of(step)
            bits = n = 0
            for z in latents[:4]:
                q = T.quantize(T.analyze(z, tables, levels), k)
                for b, x in enumerate(q):
                    cls = np.clip(tables.base[levels][b][:, None] - T.class_shift(k), 0, T.N_CLASSES - 1)
                    cls = np.broadcast_to(cls, (x.shape[0], x[0].size))
                    bits += _code_length(fb, shift, cls.ravel(), x.reshape(x.shape[0], -1).ravel())
                    n += x.size
            if bits / n <= rate:
                best = float(step)
                break
        out.append(best if best is not None else float(grid[-1]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.methods.tc.tc_train", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="taef2", help="taef2 (default), an SD1.x hub id or folder, a TAEF2 folder")
    ap.add_argument("--photos", default=None, help="photo cache folder (default: fetched by helpers.photos)")
    ap.add_argument(
        "--out",
        default=None,
        help="output file or folder (default: helpers/data/ for TAEF2, ~/.cache/sdcomp/tc/ otherwise)",
    )
    ap.add_argument("--probes", type=int, default=3, help="random probes per photo (decoder backward passes)")
    ap.add_argument("--extra-crops", type=int, default=2, help="random extra 512x512 crops per photo")
    ap.add_argument("--max-minutes", type=float, default=30.0, help="time budget of the probe stage")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--classes-only", action="store_true", help="only (re)write helpers/data/tc_classes.npz")
    args = ap.parse_args(argv)
    from ...errors import guarded

    def run() -> int:
        if args.classes_only:
            freq, shift = T.make_class_tables()
            T.DATA_DIR.mkdir(parents=True, exist_ok=True)
            np.savez(T.CLASS_TABLES, freq=freq, shift=shift)
            print(T.CLASS_TABLES)
            return 0
        from ...backends.load import load_backend
        from ...photos import train_photos

        backend = load_backend(args.model, device=args.device)
        photos = train_photos(Path(args.photos) if args.photos else None)
        tables, report = train(backend, photos, args.probes, args.extra_crops, args.max_minutes)
        name = f"tc_{backend.fingerprint:08x}.npz"
        if args.out:
            out = Path(args.out).expanduser()
            out = out / name if out.is_dir() or str(args.out).endswith("/") else out
        else:
            out = (T.DATA_DIR if backend.kind == "taef2" else T.tables_path(backend.fingerprint)[1].parent) / name
        tid = T.save_tables(out, tables)
        print(
            f"wrote {out} (table id {tid:08x}; {report['crops']} crops, {report['probes']} probes, "
            f"{report['seconds']:.0f} s; steps for offsets {[f'{s:.1f}' for s in report['steps']]})"
        )
        return 0

    return guarded(run)


if __name__ == "__main__":
    sys.exit(main())

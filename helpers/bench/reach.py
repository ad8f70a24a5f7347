"""The decoder's reach: how close the frozen decoder can get to each image when no bit is spent at all.

Per image (the benchmark's 512x512 crop), two reference points, measured with the metric registry:

* ``encoder``: ``D(E(x))``, the stock encoder's latent decoded without any quantization;
* ``optimised``: ``D(z*)``, where ``z*`` is ``E(x)`` after ``steps`` Adam steps (learning rate ``lr``) on the latent
  against the pixel MSE, again without quantization: a lower bound on what this decoder can draw ("the limit of
  this decoder"; more steps would go higher still).

The RD plots of the benchmark (:mod:`helpers.bench.plot`) draw the means as horizontal lines where ``reach.json``
lies beside ``records.json``. Each image's result is cached in ``$SDCOMP_CACHE/bench_reach/`` under the image
content, the decoder weights and the settings, so an interrupted or time-limited run resumes where it stopped::

    python -m helpers.bench.reach --data ../shared/data/kodak --out results/kodak --steps 20 --minutes 30

Each step is one decoder forward + backward pass (about 2.5 s for 512x512 TAEF2 on 2 idle CPU cores).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import config

REACH_FILE = "reach.json"
DEFAULT_STEPS = 10
DEFAULT_LR = 0.05
#: the registry's metrics measured here: the cheap ones (no VGG16 pass, no command-line tool)
REACH_METRICS = ("psnr", "ssim", "ms_ssim", "cvvdp", "flip", "detail_retention")
POINTS = ("encoder", "optimised")


def reach_dir() -> Path:
    from ..backends.resolve import cache_root

    return cache_root() / "bench_reach"


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest()


def _metric_keys() -> list[str]:
    from .. import metrics

    return [k for k in REACH_METRICS if k in metrics.METRICS and metrics.metric_status([k])[k][0]]


def _measure(ref: np.ndarray, out: np.ndarray, keys: Sequence[str]) -> dict[str, float | None]:
    from .. import metrics

    vals = metrics.measure(ref, out, keys)
    return {k: (None if v is None else round(float(v), 6)) for k, v in vals.items()}


def optimise_latent(
    backend, ref: np.ndarray, z: np.ndarray, steps: int, lr: float = DEFAULT_LR, progress: bool = False
) -> tuple[np.ndarray, list[float]]:
    """``steps`` Adam steps on the latent ``z`` (C, h, w) against the pixel MSE of the decoded image (RGB in [0, 1])
    to ``ref`` (H, W, 3 uint8), no quantization. Returns the optimised latent and the PSNR (dB, of the float
    decoder output) before each step and after the last."""
    import torch
    from tqdm.auto import tqdm

    from ..methods.tc.refine import _pixels

    dec = _pixels(backend)
    params = [p for m in backend.components().values() for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    dtype = params[0].dtype if params else torch.float32
    target = torch.from_numpy(np.ascontiguousarray(ref, np.float32) / 255.0).permute(2, 0, 1)[None].to(backend.device)
    zt = torch.from_numpy(np.array(z, np.float32))[None].to(backend.device).requires_grad_(True)  # a copy: Adam works
    opt = torch.optim.Adam([zt], lr=lr)
    curve: list[float] = []
    try:
        with torch.enable_grad():
            for _ in tqdm(range(steps), desc="optimise latent", disable=not progress, leave=False):
                out = dec(zt.to(dtype)).float().clamp(0, 1)
                loss = torch.mean((out - target) ** 2)
                curve.append(round(-10 * math.log10(max(loss.item(), 1e-12)), 4))
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                loss = torch.mean((dec(zt.to(dtype)).float().clamp(0, 1) - target) ** 2)
                curve.append(round(-10 * math.log10(max(loss.item(), 1e-12)), 4))
    finally:
        for p, s in zip(params, saved):
            p.requires_grad_(s)
    return zt.detach()[0].float().cpu().numpy(), curve


def encoder_point(backend, ref: np.ndarray, keys: Sequence[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """``D(E(x))`` of one image: its latent and ``{"encoder": {metric: value}, "seconds": {...}}``."""
    from ..codec import decode_pixels, encode_latents

    t0 = time.perf_counter()
    z = encode_latents(backend, ref)
    t1 = time.perf_counter()
    enc = decode_pixels(backend, z)
    t2 = time.perf_counter()
    m_enc = _measure(ref, enc, keys)
    return z, {
        "pixels_sha1": _digest(ref),
        "encoder": m_enc,
        "seconds": {
            "encode": round(t1 - t0, 3),
            "decode": round(t2 - t1, 3),
            "metrics_encoder": round(time.perf_counter() - t2, 3),
        },
    }


def reach_image(
    backend,
    ref: np.ndarray,
    steps: int,
    lr: float = DEFAULT_LR,
    keys: Sequence[str] | None = None,
    progress: bool = False,
    base: dict | None = None,
) -> dict[str, Any]:
    """Both reference points of one image (``ref``: the policy-applied H x W x 3 uint8 picture, a multiple of 8):
    ``{"encoder": {metric: value}, "optimised": {...}, "psnr_curve": [...], "seconds": {...}}``. ``base``: this
    image's :func:`encoder_point` entry, when already measured (its latent is encoded again, not measured)."""
    from ..codec import decode_pixels, encode_latents

    keys = list(keys) if keys is not None else _metric_keys()
    if base is None:
        z, entry = encoder_point(backend, ref, keys)
    else:
        z, entry = encode_latents(backend, ref), json.loads(json.dumps(base))
    t2 = time.perf_counter()
    zs, curve = optimise_latent(backend, ref, z, steps, lr, progress=progress)
    t3 = time.perf_counter()
    entry["optimised"] = _measure(ref, decode_pixels(backend, zs), keys)
    entry["psnr_curve"] = curve
    entry["seconds"].update(
        optimise=round(t3 - t2, 3),
        per_step=round((t3 - t2) / max(steps, 1), 3),
        metrics=round(time.perf_counter() - t3, 3),
    )
    return entry


def _mean(values: list) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 6) if vals and len(vals) == len(values) else None


def summarise(images: dict[str, dict]) -> dict[str, Any]:
    """Means of every metric per point, each over the images that have the point: ``{"encoder": {"psnr": ...},
    "optimised": {...}, "encoder_same_images": {...} (D(E(x)) over the images that have D(z*)), "n": {...}}``."""
    out: dict[str, Any] = {"n": {}}
    for point in POINTS:
        have = [e for e in images.values() if point in e]
        out["n"][point] = len(have)
        keys = sorted({k for e in have for k in e[point]})
        out[point] = {k: _mean([e[point].get(k) for e in have]) for k in keys} if have else {}
    both = [e for e in images.values() if "optimised" in e]
    if 0 < len(both) < len(images):
        out["encoder_same_images"] = {k: _mean([e["encoder"].get(k) for e in both]) for k in out["encoder"]}
    return out


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def run(
    data: Path,
    out: Path,
    steps: int = DEFAULT_STEPS,
    lr: float = DEFAULT_LR,
    minutes: float | None = None,
    threads: int | None = None,
    model: str = "taef2",
    progress: bool = True,
    names: Sequence[str] | None = None,
) -> dict:
    """Measure every image of ``data``, then write ``out/reach.json``. First ``D(E(x))`` of every image (a few
    seconds each), then ``D(z*)`` image by image; with ``minutes``, no optimisation starts after that many minutes
    (``missing`` lists the images without ``D(z*)``: re-run to finish). Results are cached per image (and an
    existing ``out/reach.json`` made with the same settings is reused), so a re-run only does what is missing."""
    import torch
    from tqdm.auto import tqdm

    from .. import metrics
    from ..backends.load import load_backend
    from ..images import list_images, load_image, model_input

    if threads:
        torch.set_num_threads(threads)
    paths = list_images(data, list(names) if names else None)
    backend = load_backend(model, device="cpu")
    keys = _metric_keys()
    settings = {
        "model": backend.model_id,
        "fingerprint": backend.fingerprint,
        "steps": steps,
        "lr": lr,
        "keys": list(keys),
        "policy": config.POLICY,
    }
    token = hashlib.sha1(
        f"{backend.model_id}|{backend.fingerprint}|{steps}|{lr}|{','.join(keys)}|{config.POLICY}".encode()
    ).hexdigest()[:12]
    enc_token = hashlib.sha1(
        f"{backend.model_id}|{backend.fingerprint}|{','.join(keys)}|{config.POLICY}".encode()
    ).hexdigest()[:12]
    previous = _read(Path(out) / REACH_FILE) or {}
    reusable = previous.get("images", {}) if previous.get("settings") == settings else {}
    cache = reach_dir()
    cache.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    refs: dict[str, np.ndarray] = {}
    images: dict[str, dict] = {}
    for path in tqdm(paths, desc="decoder reach: D(E(x))", disable=not progress):
        _, ref_img = model_input(load_image(path), config.codec_policy(config.POLICY))
        ref = refs[path.stem] = np.asarray(ref_img.convert("RGB"))
        digest = _digest(ref)
        old = reusable.get(path.stem)
        if old and old.get("pixels_sha1") == digest:
            entry = old
        else:
            entry = _read(cache / f"{token}-{digest}.json") or _read(cache / f"enc-{enc_token}-{digest}.json")
        if entry is None:
            _, entry = encoder_point(backend, ref, keys)
            (cache / f"enc-{enc_token}-{digest}.json").write_text(json.dumps(entry))
        entry["pixels_sha1"] = digest
        images[path.stem] = entry

    def write(missing: list[str]) -> dict:
        done = [e for e in images.values() if "optimised" in e]
        doc = {
            "what": "decoder reach: per image, D(E(x)) (the stock encoder's latent decoded, no quantization) and "
            f"D(z*) after {steps} Adam steps (lr {lr}) on the latent against pixel MSE, no quantization",
            "command": f"python -m helpers.bench.reach --data DATA --out OUT --steps {steps} --lr {lr}",
            "data": str(data),
            "policy": config.POLICY_TEXT,
            "model": backend.describe(),
            "settings": settings,
            "steps": steps,
            "lr": lr,
            "metrics": {k: {"name": d["name"], "direction": d["direction"]} for k, d in metrics.describe(keys).items()},
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
            f"1-min load average {os.getloadavg()[0]:.1f} when written (a shared machine)",
            "complete": not missing,
            "missing": missing,
            "mean": summarise(images),
            "seconds_mean": {
                k: round(float(np.mean([e["seconds"][k] for e in done])), 3)
                for k in ("encode", "decode", "optimise", "per_step")
            }
            if done
            else {},
            "wall_seconds_this_run": round(time.perf_counter() - t_start, 1),
            "images": images,
        }
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / REACH_FILE).write_text(json.dumps(doc, indent=1) + "\n")
        return doc

    t_enc = time.perf_counter()
    missing: list[str] = []
    bar = tqdm(paths, desc=f"decoder reach: D(z*), {steps} steps", disable=not progress)
    for path in bar:
        name = path.stem
        if "optimised" in images[name]:
            continue
        if minutes is not None and time.perf_counter() - t_enc > 60 * minutes:
            missing.append(name)
            continue
        bar.set_postfix_str(name)
        entry = reach_image(backend, refs[name], steps, lr, keys, progress=progress, base=images[name])
        (cache / f"{token}-{images[name]['pixels_sha1']}.json").write_text(json.dumps(entry))
        images[name] = entry
        write([p.stem for p in paths if "optimised" not in images[p.stem]])  # an interrupted run leaves its file
    bar.close()
    return write(missing)


def load_reach(folder: Path) -> dict | None:
    """``folder/reach.json`` if there is one (and it has means), else None."""
    p = Path(folder) / REACH_FILE
    try:
        doc = json.loads(p.read_text())
    except (OSError, ValueError):
        return None
    return doc if doc.get("mean") else None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.bench.reach", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(config.DEFAULT_DATA), help="folder of images (default: the Kodak set)")
    ap.add_argument("--out", default=str(config.DEFAULT_OUT), help="folder for reach.json (default results/kodak)")
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"Adam steps (default {DEFAULT_STEPS})")
    ap.add_argument("--lr", type=float, default=DEFAULT_LR, help=f"Adam learning rate (default {DEFAULT_LR})")
    ap.add_argument("--minutes", type=float, default=None, help="start no new image after this many minutes")
    ap.add_argument("--threads", type=int, default=None, help="torch threads")
    ap.add_argument("--images", nargs="*", default=None, help="only these image names")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    from ..cli import guarded

    def go():
        doc = run(
            Path(args.data),
            Path(args.out),
            args.steps,
            args.lr,
            args.minutes,
            args.threads,
            progress=not args.no_progress,
            names=args.images,
        )
        m = doc["mean"]
        print(
            f"{m['n']['encoder']} images: D(E(x)) {m['encoder'].get('psnr')} dB; D(z*) after {doc['steps']} steps "
            f"on {m['n']['optimised']}: {m['optimised'].get('psnr')} dB (D(E(x)) on those "
            f"{m.get('encoder_same_images', m['encoder']).get('psnr')} dB); wrote {Path(args.out) / REACH_FILE}"
        )
        return 0

    return guarded(go)


if __name__ == "__main__":
    sys.exit(main())

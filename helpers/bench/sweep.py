"""Each baseline's quality sweep: one image encoded at every quality of ``config.SWEEP_QUALITIES[codec]``, every file
decoded and measured, so that the RD plot and the BD-rates use the codec's whole curve (the mean over the images
at each quality), not only the budgets that every image reached.

A sweep is cached per image content (the SHA-1 of the reference pixels), codec and codec settings in
``$SDCOMP_CACHE/bench_sweeps/`` (:func:`helpers.backends.resolve.cache_root`): re-runs, new budgets and
other output folders reuse it, and only qualities or metrics it lacks are computed. A metric measured by another library
version than this run's is measured again."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from . import config
from .records import _metric_values, _round


def _settings_token(codec: str) -> str:
    import PIL

    from .. import baselines

    text = f"{codec}|pillow {PIL.__version__}|avif speed {baselines.AVIF_SPEED}|jxl effort {baselines.JXL_EFFORT}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def sweep_dir() -> Path:
    from ..backends.resolve import cache_root

    return cache_root() / "bench_sweeps"


def quality_sweep(name: str, ref, codec: str, keys, mc, policy: str) -> dict:
    """``{"image", "codec", "policy", "pixels_sha1", "points": [{"quality", "bytes", "bpp", <metrics>}]}`` for one
    image (``ref``: the policy-applied reference) and baseline; ``mc``: the task's MetricCache (a quality that a
    budget record already measured is not measured again)."""
    from .. import baselines, metrics

    arr = np.asarray(ref.convert("RGB"))
    digest = hashlib.sha1(arr.tobytes() + repr(arr.shape).encode()).hexdigest()
    libs = {k: d["library"] for k, d in metrics.describe(list(keys)).items()}
    path = sweep_dir() / f"{codec}-{_settings_token(codec)}-{digest}.json"
    try:
        cached = json.loads(path.read_text())
    except (OSError, ValueError):
        cached = {}
    stale = {k for k, lib in (cached.get("libraries") or {}).items() if libs.get(k) not in (None, lib)}
    points = {int(p["quality"]): {k: v for k, v in p.items() if k not in stale} for p in cached.get("points", [])}
    w, h = ref.size
    changed = False
    for q in config.SWEEP_QUALITIES.get(codec, ()):
        p = points.get(q)
        missing = [k for k in keys if p is None or k not in p]
        if not missing:
            continue
        data = baselines.CODECS[codec].encode(ref, q)
        m, _ = mc.measure(baselines.decode_bytes(data), missing)
        p = {
            **(p or {}),
            "quality": q,
            "bytes": len(data),
            "bpp": _round(8 * len(data) / (w * h), 6),
            **_metric_values(m, keys=set(missing)),
        }
        points[q] = p
        changed = True
    if changed or stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(
            json.dumps(
                {
                    "codec": codec,
                    "pixels_sha1": digest,
                    "libraries": {**(cached.get("libraries") or {}), **libs},
                    "points": [points[q] for q in sorted(points)],
                }
            )
        )
        os.replace(tmp, path)
    wanted = config.SWEEP_QUALITIES.get(codec, ())
    order = ["quality", "bytes", "bpp", *[k for k in config.metric_keys() if k in keys]]
    return {
        "image": name,
        "codec": codec,
        "policy": policy,
        "pixels_sha1": digest,
        "points": [{k: points[q].get(k) for k in order} for q in wanted],
    }

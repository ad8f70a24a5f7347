"""The records store: keys and labels, rounding, ``records.json`` load/save, and what a results file covers.

The format (``FORMAT_VERSION`` 1): ``{"format", "meta", "records": [...], "coder_savings": [...]}``, one record
per (image, codec, budget, rule) with the fields of :func:`_metric_fields` and the run's details. Records
written before the perceptual metrics existed lack their fields (``meta["metrics"]`` says which library and
settings measured each metric present); a re-run fills them in (see :mod:`helpers.bench.runner`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import SDCError
from . import config
from .config import FORMAT_VERSION


def record_key(image: str, codec: str, budget: int, rule: str) -> str:
    return f"{image}|{codec}|{int(budget)}|{rule}"


def _key_of(rec: dict) -> str:
    return record_key(rec["image"], rec["codec"], rec["budget"], rec["rule"])


def ours_label(model_label: str, coder: str, denoise: bool = False) -> str:
    return f"ours:{model_label}/{coder}" + ("+denoise" if denoise else "")


def _round(v, nd=6):
    if v is None:
        return None
    v = float(v)
    if not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return round(v, nd)


def _metric_fields(m: dict) -> dict:
    """The size and quality fields of a record from :func:`helpers.metrics.measure`'s dict, in
    :data:`~helpers.bench.config.METRIC_SPECS` order: the legacy fields (PSNR, SSIM, MS-SSIM, LPIPS) always
    (None where not measured, as in every record since format 1), every other metric only where measured."""
    return {"bytes": int(m["bytes"]), "bpp": _round(m["bpp"], 6), **_metric_values(m)}


def _metric_values(m: dict, keys=None) -> dict:
    """The rounded metric fields of ``m`` (only ``keys`` if given), in METRIC_SPECS order."""
    out = {}
    for s in config.METRIC_SPECS:
        if keys is not None and s.key not in keys:
            continue
        if s.key in m or (keys is None and s.key in config.LEGACY_KEYS):
            out[s.key] = _round(m.get(s.key), s.record_digits)
    return out


def with_metrics(rec: dict, values: dict) -> dict:
    """``rec`` with the metric fields of ``values`` added or replaced: the metrics in METRIC_SPECS order right
    after ``bpp``, as in a freshly computed record; the other fields keep their order."""
    keys = set(config.metric_keys())
    order = list(rec)
    cut = order.index("bpp") + 1 if "bpp" in order else len(order)
    merged = {**rec, **values}
    mets = [k for k in config.metric_keys() if k in merged]
    return {
        k: merged[k]
        for k in [k for k in order[:cut] if k not in keys] + mets + [k for k in order[cut:] if k not in keys]
    }


def load_records(path: Path) -> dict:
    """The results document at ``path`` (empty if missing); an unreadable file is an error, never overwritten."""
    if not path.is_file():
        return {"format": FORMAT_VERSION, "meta": {}, "records": [], "coder_savings": []}
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise SDCError(f"{path} is not valid JSON ({exc}); move it away or pass another --out") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("records"), list):
        raise SDCError(f"{path} is not a benchmark results file (no 'records' list); pass another --out")
    doc.setdefault("meta", {})
    doc.setdefault("coder_savings", [])
    return doc


def save_records(doc: dict, path: Path) -> None:
    """Write atomically (temp file + rename), so an interrupted run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, allow_nan=False))
    os.replace(tmp, path)


def selection_of(doc: dict) -> dict:
    """What a results file covers: the selection its last run recorded (older files: rebuilt from meta)."""
    meta = doc["meta"]
    if meta.get("selection"):
        return meta["selection"]
    images = meta.get("images") or sorted({r["image"] for r in doc["records"]})
    return {
        "images": images,
        "budgets": meta.get("budgets") or sorted({r["budget"] for r in doc["records"]}),
        "codecs": meta.get("codecs") or sorted({r["codec"] for r in doc["records"] if r["kind"] == "baseline"}),
        "rules": meta.get("rules") or sorted({r["rule"] for r in doc["records"] if r["kind"] == "baseline"}),
        "ours": sorted({r["codec"] for r in doc["records"] if r["kind"] == "ours"}, key=_ours_order(meta)),
    }


def _ours_order(meta: dict):
    """Sort key for ours labels: model, then the coder's position in --coders, then the label."""
    coders = list(meta.get("coders") or [])

    def key(label: str):
        model, _, coder = label.partition("/")
        coder = coder.split("+")[0]
        return (model, coders.index(coder) if coder in coders else len(coders), label)

    return key

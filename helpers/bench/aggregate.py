"""Aggregation of the records: means per (codec, rule, budget), RD series, table rows, the head-to-head counts
and verdicts (also those of ``python -m helpers compare`` / ``demo``, :mod:`helpers.bench.compare`) and the BD-rate
table."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from . import config
from .bdrate import bd_overlap, bd_rate
from .config import OURS_RULE


def _mean(xs):
    xs = [float(x) for x in xs if x is not None and not isinstance(x, str)]
    return float(np.mean(xs)) if xs else None


def aggregate(records: Iterable[dict], images: Sequence[str]) -> dict[tuple[str, str, int], dict]:
    """(codec, rule, budget) -> mean bytes / bpp / metrics over the images where the budget was reachable;
    ``n`` counts them and ``complete`` says whether every image is in. A metric's mean is None unless every
    one of those records has its value (a mean over fewer images would not compare with the other columns);
    ``<key>_n`` counts the records that have it."""
    wanted = set(images)
    groups: dict[tuple[str, str, int], list[dict]] = {}
    for r in records:
        if r["image"] in wanted:
            groups.setdefault((r["codec"], r["rule"], int(r["budget"])), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("bytes") is not None]
        row = {
            "n": len(ok),
            "of": len(wanted),
            "complete": len(ok) == len(wanted),
            "bytes": _mean(r["bytes"] for r in ok),
            "bpp": _mean(r["bpp"] for r in ok),
        }
        for m in config.metric_keys():
            vals = [r.get(m) for r in ok if r.get(m) is not None]
            row[f"{m}_n"] = len(vals)
            row[m] = _mean(vals) if ok and len(vals) == len(ok) else None
        row["unreachable"] = len(rs) - len(ok)
        row["smallest_bytes"] = max((r.get("smallest_bytes") or 0 for r in rs if r.get("bytes") is None), default=None)
        out[key] = row
    return out


def _series(agg: dict, codec: str, rule: str, budgets: Sequence[int], metric: str) -> list[tuple[float, float]]:
    pts = []
    for b in budgets:
        row = agg.get((codec, rule, b))
        if row and row["complete"] and row[metric] is not None:
            pts.append((row["bpp"], row[metric]))
    return pts


def _sweeps(doc: dict, codec: str) -> dict[str, dict]:
    return {s["image"]: s for s in doc.get("sweeps") or [] if s["codec"] == codec}


def image_sweep_curve(doc: dict, image: str, codec: str, metric: str) -> list[tuple[float, float]] | None:
    """One image's whole curve for a baseline from its quality sweep, or None without a sweep."""
    sw = _sweeps(doc, codec).get(image)
    if sw is None:
        return None
    return [(p["bpp"], p[metric]) for p in sw["points"] if p.get("bytes") is not None and p.get(metric) is not None]


def sweep_curve(doc: dict, codec: str, images: Sequence[str], metric: str) -> list[tuple[float, float]] | None:
    """A baseline's whole mean curve: mean bpp and mean metric over ``images`` at each quality of its sweep (the
    qualities where every image has the metric), or None unless every image has a sweep of ``codec``."""
    sws = _sweeps(doc, codec)
    if not images or any(i not in sws for i in images):
        return None
    by_q: dict[int, list[dict]] = {}
    for i in images:
        for p in sws[i]["points"]:
            by_q.setdefault(int(p["quality"]), []).append(p)
    pts = []
    for q in sorted(by_q):
        ps = by_q[q]
        if len(ps) == len(images) and all(p.get(metric) is not None and p.get("bpp") is not None for p in ps):
            pts.append((float(np.mean([p["bpp"] for p in ps])), float(np.mean([p[metric] for p in ps]))))
    return sorted(pts) or None


def baseline_curve(doc: dict, agg: dict, codec: str, rule: str, selection: dict, metric: str):
    """(points, "sweep" or "budgets"): the baseline's whole mean curve from its quality sweeps when every image
    has one, else its means at the budgets every image reached (records made before the sweeps existed)."""
    sw = sweep_curve(doc, codec, selection["images"], metric)
    if sw is not None:
        return sw, "sweep"
    return _series(agg, codec, rule, selection["budgets"], metric), "budgets"


def _rows_for(selection: dict) -> list[tuple[str, str, str]]:
    """(display label, codec, rule) in table order: ours first, then baselines per rule."""
    multi = len(selection["rules"]) > 1
    rows = [(c, c, OURS_RULE) for c in selection["ours"]]
    for rule in selection["rules"]:
        rows += [(f"{c} ({rule})" if multi else c, c, rule) for c in selection["codecs"]]
    return rows


def _image_curve(
    recs: Iterable[dict], image: str, codec: str, rule: str, budgets: Sequence[int], metric: str
) -> list[tuple[float, float]]:
    return [
        (r["bpp"], r[metric])
        for r in recs
        if r["image"] == image
        and r["codec"] == codec
        and r["rule"] == rule
        and r["budget"] in budgets
        and r.get("bytes") is not None
        and r.get(metric) is not None
    ]


def bd_table(doc: dict, selection: dict) -> list[dict]:
    """BD-rate of every ours variant against every baseline (per rule), on every metric of
    :func:`~helpers.bench.config.bd_metrics` (PSNR and MS-SSIM today).

    ``metric``: on the mean curves (budgets every image reached); ``metric_per_image``: the BD-rates of
    the images whose own curves overlap (each image's reachable budgets)."""
    agg = aggregate(doc["records"], selection["images"])
    recs = [r for r in doc["records"] if r["image"] in set(selection["images"])]
    budgets = set(selection["budgets"])
    out = []
    for ours in selection["ours"]:
        for rule in selection["rules"]:
            for codec in selection["codecs"]:
                row = {"ours": ours, "baseline": codec, "rule": rule}
                for metric in (m.key for m in config.bd_metrics()):
                    a, row[f"{metric}_curve"] = baseline_curve(doc, agg, codec, rule, selection, metric)
                    b = _series(agg, ours, OURS_RULE, selection["budgets"], metric)
                    val = (
                        bd_rate([p[0] for p in a], [p[1] for p in a], [p[0] for p in b], [p[1] for p in b])
                        if len(a) >= 2 and len(b) >= 2
                        else None
                    )
                    row[metric] = val
                    row[f"{metric}_overlap"] = bd_overlap([p[1] for p in a], [p[1] for p in b])
                    row[f"{metric}_points"] = (len(a), len(b))
                    row[f"{metric}_ranges"] = tuple(
                        (min(p[1] for p in c), max(p[1] for p in c)) if c else (None, None) for c in (a, b)
                    )
                    per = []
                    for image in selection["images"]:
                        ca = image_sweep_curve(doc, image, codec, metric)
                        if ca is None:
                            ca = _image_curve(recs, image, codec, rule, budgets, metric)
                        cb = _image_curve(recs, image, ours, OURS_RULE, budgets, metric)
                        v = bd_rate([p[0] for p in ca], [p[1] for p in ca], [p[0] for p in cb], [p[1] for p in cb])
                        if v is not None:
                            per.append(v)
                    row[f"{metric}_per_image"] = per
                out.append(row)
    return out


def shown_metrics(records: Iterable[dict]) -> list[config.Metric]:
    """The metrics a table or plot shows: every non-optional one, and an optional one (LPIPS, the perceptual
    metrics) only if some record has a value."""
    recs = list(records)
    return [m for m in config.METRIC_SPECS if not m.optional or any(r.get(m.key) is not None for r in recs)]


def head_to_head(doc: dict, selection: dict, budget: int) -> list[dict]:
    """Per ours variant and baseline (per rule) at one budget: the images where both produced a file within
    the budget (``n`` of ``of``), and per metric the wins / ties / losses of ours
    (:func:`helpers.metrics.tally`; tie = equal at the summary's decimals, ``Metric.digits``)."""
    from .. import metrics

    images = set(selection["images"])
    recs = {
        (r["image"], r["codec"], r["rule"]): r
        for r in doc["records"]
        if r["image"] in images and int(r["budget"]) == int(budget) and r.get("bytes") is not None
    }
    mets = [m for m in shown_metrics(r for r in doc["records"] if r["image"] in images) if m.score]
    rows = _rows_for(selection)
    out = []
    for ours in selection["ours"]:
        for label, codec, rule in rows:
            if codec.startswith("ours"):
                continue
            common = [i for i in selection["images"] if (i, ours, OURS_RULE) in recs and (i, codec, rule) in recs]
            pairs = [(recs[(i, ours, OURS_RULE)], recs[(i, codec, rule)]) for i in common]
            out.append(
                {
                    "ours": ours,
                    "baseline": label,
                    "codec": codec,
                    "rule": rule,
                    "n": len(common),
                    "of": len(images),
                    "images": common,
                    "tallies": {
                        m.key: metrics.tally(
                            m.key,
                            [(a.get(m.key), b.get(m.key)) for a, b in pairs],
                            digits=m.digits,
                            higher_is_better=m.higher_is_better,
                        )
                        for m in mets
                    },
                }
            )
    return out


def verdict_text(h2h: Iterable[dict]) -> str:
    """:func:`helpers.metrics.verdict` over :func:`head_to_head` rows (those with images in common): which ours
    variant wins, is level or loses against which baseline on which metrics (majority of the images both fit)."""
    from .. import metrics

    results: dict[str, dict] = {}
    for row in h2h:
        if row["n"]:
            results.setdefault(row["ours"], {})[row["baseline"]] = row["tallies"]
    return metrics.verdict(results, {m.key: m.short for m in config.METRIC_SPECS})


def budget_verdict(doc: dict, selection: dict, budget: int) -> str:
    """One sentence for one budget: where ours wins and where it loses (:func:`verdict_text` over
    :func:`head_to_head`; majority of the images both fit), and which baselines fit no image."""
    from ..metrics.wins import join_words

    h2h = head_to_head(doc, selection, budget)
    fits = any(row["n"] for row in h2h)
    text = (
        f"At {budget} bytes, " + verdict_text(h2h)
        if fits
        else f"At {budget} bytes, no baseline fits any image that ours fits"
    )
    empty = list(dict.fromkeys(row["baseline"] for row in h2h if not row["n"]))
    if empty and fits:
        text += f" ({join_words(empty)} cannot fit any image into {budget} bytes)"
    return text + "."

"""Matched-size comparisons for ``python -m helpers compare`` and ``demo``: our codec against JPEG, WebP, AVIF and
JPEG XL on a few images, each baseline matched to our file size, and their report.

Every row carries every metric available here (:func:`helpers.metrics.measure`: PSNR, SSIM, MS-SSIM,
ColorVideoVDP, FLIP, SSIMULACRA 2, Butteraugli, LPIPS/DISTS where their backbones are on disk);
:func:`write_report` puts each metric's direction, unit, library, version and settings into the JSON
meta and "unavailable: reason" for the others into both files. The head-to-head counts and verdict sentences are
the benchmark's (:func:`helpers.bench.aggregate.head_to_head`, :func:`~helpers.bench.aggregate.verdict_text`)
over the comparisons' rows read as benchmark records (:func:`as_records`)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from .. import baselines, metrics
from ..codec import CodecParams, Decoded, Encoded, decode, encode
from ..errors import BudgetError, UnavailableError
from ..images import load_image, model_input
from .aggregate import head_to_head as _bench_head_to_head
from .aggregate import verdict_text
from .config import OURS_RULE

BASE_COLUMNS = ("image", "codec", "rule", "setting", "bytes", "bpp")
DIGITS = {"bpp": 4, "invented": 3, "lost": 3, "mean_log2": 3}  # non-metric columns; metrics: Metric.digits
RULE_TEXT = {"ge": "baselines at least as big as ours", "le": "baselines no bigger than ours"}


@dataclass
class Comparison:
    """One image: the reference, our file and decode, and the baselines matched to our size."""

    name: str
    reference: Image.Image
    ours: Encoded
    ours_decoded: Decoded
    baselines: dict[str, dict[str, baselines.BaselineResult]]  # rule -> codec -> result
    rows: list[dict] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def images(self, rule: str = "ge") -> dict[str, Image.Image]:
        """Label -> decoded image, reference first, ours last (the article's panel order)."""
        return {title: img for _, title, img, _, _ in self.panels(rule)}

    def panels(self, rule: str = "ge") -> list[tuple[str, str, Image.Image, int | None, float | None]]:
        """(key, title, image, bytes, PSNR) per panel: the original, each baseline under ``rule``, ours."""
        psnr = {(r["codec"], r["rule"]): r["psnr"] for r in self.rows}
        out = [("original", "original", self.reference, None, None)]
        for codec, res in self.baselines.get(rule, {}).items():
            out.append((codec, f"{codec} q{res.quality}", res.image, res.nbytes, psnr.get((codec, rule))))
        ours = self.rows[0]  # compare_image puts our row first
        out.append(
            ("ours", f"ours ({self.ours.header.model_id})", self.ours_decoded.image, self.ours.nbytes, ours["psnr"])
        )
        return out

    def sizes(self, rule: str = "ge") -> dict[str, int]:
        out = {codec: res.nbytes for codec, res in self.baselines.get(rule, {}).items()}
        out["ours"] = self.ours.nbytes
        return out

    def row(self, key: str, rule: str = "ge") -> dict | None:
        """The metrics row of a panel (``"ours"`` or a baseline codec under ``rule``); None for the original
        or a baseline that could not reach our size."""
        if key == "ours":
            return self.rows[0]
        return next((r for r in self.rows[1:] if r["codec"] == key and r["rule"] == rule), None)


def _metrics_row(name, codec, rule, setting, ref, img, nbytes, metric_keys=None) -> dict:
    return {
        "image": name,
        "codec": codec,
        "rule": rule,
        "setting": setting,
        **metrics.measure(ref, img, keys=metric_keys, nbytes=nbytes),
    }


def compare_image(
    img,
    backend,
    name: str = "image",
    params: CodecParams | None = None,
    target_bytes: int | None = None,
    codecs: list[str] | None = None,
    rules: tuple[str, ...] = ("ge",),
    with_lpips: bool = True,
    latents=None,
    metric_keys=None,
) -> Comparison:
    """Encode with our codec (under ``target_bytes`` if given), then match each baseline to our file size.

    Rows carry every metric available here, or those in ``metric_keys``; ``with_lpips=False`` (quick
    figures) keeps only PSNR, SSIM and MS-SSIM.
    """
    params = params or CodecParams()  # the library's default method
    if metric_keys is None and not with_lpips:
        metric_keys = metrics.CLASSIC_KEYS
    _, ref = model_input(img, params.policy, backend.downsample)
    t0 = time.perf_counter()
    enc = encode(img, backend, params, target_bytes, latents)
    t1 = time.perf_counter()
    dec = decode(enc.data, backend)
    t2 = time.perf_counter()
    codecs = baselines.available_codecs() if codecs is None else codecs
    results: dict[str, dict[str, baselines.BaselineResult]] = {}
    for rule in rules:
        results[rule] = {}
        for codec in codecs:
            try:
                results[rule][codec] = baselines.match_budget(ref, codec, enc.nbytes, rule=rule)
            except (BudgetError, UnavailableError):
                continue  # reported as a missing row: the codec cannot reach this size
    h = enc.header
    setting = (
        f"tc step {enc.coded.step:.3g}" + (f" effort {params.effort}" if params.effort else "")
        if h.method == "tc"
        else f"{h.method} K={h.colors} {h.coder}"
    ) + (" +denoise" if h.denoise else "")
    rows = [_metrics_row(name, f"ours:{backend.kind}", "-", setting, ref, dec.image, enc.nbytes, metric_keys)]
    for rule, per in results.items():
        for codec, res in per.items():
            rows.append(_metrics_row(name, codec, rule, f"q={res.quality}", ref, res.image, res.nbytes, metric_keys))
    return Comparison(
        name=name,
        reference=ref,
        ours=enc,
        ours_decoded=dec,
        baselines=results,
        rows=rows,
        seconds={
            "encode": t1 - t0,
            "decode": t2 - t1,
            **{f"enc_{k}": v for k, v in enc.timings.items()},
            **{f"dec_{k}": v for k, v in dec.timings.items()},
        },
    )


def compare_files(
    paths,
    backend,
    params: CodecParams | None = None,
    target_bytes: int | None = None,
    codecs=None,
    rules=("ge",),
    progress: bool = True,
) -> list[Comparison]:
    """:func:`compare_image` over image files, one progress bar, weights loaded once."""
    out = []
    for p in tqdm(list(paths), desc="compare", disable=not progress):
        out.append(compare_image(load_image(p), backend, Path(p).stem, params, target_bytes, codecs, rules))
    return out


def _fmt(v, nd=3):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _digits(column: str) -> int:
    return metrics.METRICS[column].digits if column in metrics.METRICS else DIGITS.get(column, 3)


def _header(column: str) -> str:
    """A column title; registered metrics get their direction arrow (↑ higher is better, ↓ lower)."""
    return f"{column} {metrics.METRICS[column].arrow}" if column in metrics.METRICS else column


def metric_columns(rows: list[dict]) -> list[str]:
    """The registered metrics present in ``rows``, in registry order (PSNR first)."""
    present = {k for r in rows for k in r}
    return [k for k in metrics.METRICS if k in present]


def score_columns(rows: list[dict]) -> list[str]:
    """:func:`metric_columns` without the measures that are no score (detail retention): the head-to-head's."""
    return [k for k in metric_columns(rows) if metrics.METRICS[k].score]


def markdown_table(rows: list[dict], columns=None) -> str:
    """Rows of dicts -> a GitHub markdown table; metric columns get direction arrows, missing values 'n/a'.
    ``columns`` defaults to image/codec/rule/setting/bytes/bpp and every metric present in the rows."""
    if columns is None:
        columns = (*BASE_COLUMNS, *metric_columns(rows))
    lines = ["| " + " | ".join(_header(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c), _digits(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def as_records(comparisons) -> tuple[dict, dict]:
    """The comparisons' rows as a benchmark records document and selection (:mod:`helpers.bench.records`): one
    "image" per comparison (by position, so two comparisons of the same picture stay apart), our row under the
    benchmark's rule for ours, each baseline under its matching rule, one budget (0: matched to our size)."""
    records, ours, codecs, rules = [], [], [], []
    for i, c in enumerate(comparisons):
        mine, *theirs = c.rows
        ours.append(mine["codec"])
        records.append({**mine, "image": str(i), "rule": OURS_RULE, "budget": 0})
        for r in theirs:
            codecs.append(r["codec"])
            rules.append(r["rule"])
            records.append({**r, "image": str(i), "budget": 0})
    selection = {
        "images": [str(i) for i in range(len(comparisons))],
        "ours": list(dict.fromkeys(ours)),
        "codecs": list(dict.fromkeys(codecs)),
        "rules": list(dict.fromkeys(rules)),
        "budgets": [0],
    }
    return {"records": records}, selection


def _h2h(comparisons) -> list[dict]:
    """The benchmark's head-to-head rows of the (rule, baseline) pairs that have images in common with ours."""
    doc, selection = as_records(comparisons)
    return [r for r in _bench_head_to_head(doc, selection, 0) if r["n"]]


def head_to_head(comparisons: list[Comparison]) -> list[dict]:
    """Per rule and baseline: on how many images ours scores better, per metric ("3/3" = ours wins on all;
    "1/3, 1 tie": equal at the metric's displayed precision, see :mod:`helpers.metrics.wins`); the metrics
    present in the rows."""
    keys = score_columns([r for c in comparisons for r in c.rows])
    return [
        {"rule": r["rule"], "baseline": r["codec"], **{k: r["tallies"][k].cell() for k in keys}}
        for r in _h2h(comparisons)
    ]


def verdict_lines(comparisons: list[Comparison]) -> list[str]:
    """One sentence per rule: against which baselines and on which metrics ours wins, is level or loses on
    the majority of the images (:func:`helpers.bench.aggregate.verdict_text`; the tie rule in
    :mod:`helpers.metrics.wins`)."""
    rows = _h2h(comparisons)
    n = len(comparisons)
    return [
        f"Rule `{rule}` ({RULE_TEXT.get(rule, rule)}), {n} image{'s' * (n != 1)}: "
        f"{verdict_text([dict(r, baseline=r['codec']) for r in rows if r['rule'] == rule])}."
        for rule in dict.fromkeys(r["rule"] for r in rows)
    ]


def head_to_head_markdown(comparisons: list[Comparison]) -> str:
    """The "does ours win?" block: :func:`head_to_head` as a table (metric columns with ↑/↓) and the
    :func:`verdict_lines` sentences under it."""
    rows = [r for c in comparisons for r in c.rows]
    return (
        markdown_table(head_to_head(comparisons), columns=("rule", "baseline", *score_columns(rows)))
        + "\n"
        + "\n\n".join(verdict_lines(comparisons))
        + "\n"
    )


def detail_rows(comparisons: list[Comparison], rule: str = "ge", border: int | None = None) -> list[dict]:
    """:func:`helpers.metrics.detail_summary` of every decoded panel (each baseline under ``rule``, ours) against
    the reference: the share of blocks with invented / lost fine detail (edge ring excluded, see ``border``)."""
    border = metrics.DETAIL_BORDER if border is None else border
    return [
        {"image": c.name, "codec": label, **metrics.detail_summary(c.reference, img, border=border)}
        for c in comparisons
        for label, img in c.images(rule).items()
        if label != "original"
    ]


def metric_status_rows() -> list[dict]:
    """One row per registered metric: key, direction arrow, and ``available: <library>`` or the reason it is not."""
    return [
        {
            "metric": k,
            "better": d["arrow"],
            "status": (f"available: {d['library']}" if d["status"] == "available" else f"unavailable: {d['reason']}"),
        }
        for k, d in metrics.describe().items()
    ]


def timing_table(comparisons: list[Comparison]) -> str:
    keys = sorted({k for c in comparisons for k in c.seconds})
    lines = ["| image | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
    for c in comparisons:
        lines.append(f"| {c.name} | " + " | ".join(f"{c.seconds.get(k, 0):.3f}" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    comparisons: list[Comparison], out_dir: str | Path, backend, title: str = "Matched-size comparison"
) -> dict:
    """Write metrics.json, metrics.md (metrics with direction arrows, head-to-head wins, per-stage seconds,
    unavailable metrics with their reasons) and comparison.png into ``out_dir``."""
    from ..plots import comparison_figure, save_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for c in comparisons for r in c.rows]
    described = metrics.describe()
    ok, reason = metrics.lpips_status()
    meta = {
        "backend": backend.describe(),
        "model_id": backend.model_id,
        "metrics": described,
        "lpips": "available" if ok else f"unavailable: {reason}",
    }
    (out / "metrics.json").write_text(
        json.dumps(
            {"meta": meta, "rows": rows, "seconds": {c.name: c.seconds for c in comparisons}},
            indent=2,
            ensure_ascii=False,
        )
    )
    used = metric_columns(rows)
    legend = ", ".join(
        f"`{k}` {d['arrow']} {d['name']}" + (f" ({d['unit']})" if d["unit"] else "")
        for k, d in described.items()
        if k in used
    )
    settings = [
        f"- `{k}`: {d['library']}; " + "; ".join(f"{n}={v}" for n, v in d["settings"].items())
        for k, d in described.items()
        if k in used
    ]
    missing = [
        f"- `{k}` {d['arrow']} unavailable: {d['reason']}" for k, d in described.items() if d["status"] != "available"
    ]
    md = [
        f"# {title}\n",
        f"Backend: `{meta['backend']}`.\n",
        "Baselines are matched to our file size; rule `ge` = smallest file >= ours (the 2022 notebook's rule), "
        "`le` = largest file <= ours; a codec missing under `le` cannot make a file that small. "
        "Sizes include every header byte; bpp = 8*bytes/pixels.\n",
        f"Metrics (↑ higher is better, ↓ lower is better): {legend}.\n",
        markdown_table(rows),
        "\n## Does ours win?\n",
        "Images on which ours scores better than the baseline, per metric (ours vs the baseline matched to "
        "our size under the rule; a tie = equal at the precision shown above).\n",
        head_to_head_markdown(comparisons),
        "\n## Metric settings\n",
        "\n".join(settings) + "\n",
    ]
    if missing:
        md += ["\n## Metrics not available here\n", "\n".join(missing) + "\n"]
    md += ["\n## Seconds per image (this machine)\n", timing_table(comparisons)]
    (out / "metrics.md").write_text("\n".join(md))
    fig = comparison_figure(comparisons)
    save_figure(fig, out / "comparison.png")
    return {"json": out / "metrics.json", "md": out / "metrics.md", "png": out / "comparison.png"}

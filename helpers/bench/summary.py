"""summary.md: the run's description and metrics, tables per budget, the head-to-head counts and one verdict
sentence per budget, BD-rates per metric, coder savings, seconds (metrics included) and memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import config
from .aggregate import _mean, _rows_for, aggregate, bd_table, budget_verdict, head_to_head, shown_metrics
from .config import HIGHLIGHT_BUDGET, PALETTE_CODERS, POLICY, POLICY_TEXT, STAGES


def _f(v, nd=3, suffix=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    return f"{v:.{nd}f}{suffix}"


def _budget_table(agg: dict, selection: dict, budget: int, mets: list[config.Metric]) -> list[str]:
    """One row per codec at one budget: images reached, mean bytes, bpp, and every metric of ``mets`` (column
    titles with ↑/↓); a mean over only some of the images (records that lack a metric) is shown as
    "partial k/n"."""
    rows = _rows_for(selection)
    cols = ["codec", "images", "mean bytes", "bpp"] + [m.column for m in mets]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for label, codec, rule in rows:
        row = agg.get((codec, rule, budget))
        if row is None:
            continue
        if row["n"] == 0:
            why = f"cannot reach {budget} B" + (
                f" (smallest file {row['smallest_bytes']} B)" if row.get("smallest_bytes") else ""
            )
            cells = [label, f"0/{row['of']}", why, ""] + [""] * len(mets)
        else:
            cells = [
                f"**{label}**" if codec.startswith("ours") else label,
                f"{row['n']}/{row['of']}",
                _f(row["bytes"], 0),
                _f(row["bpp"], 4),
            ]
            cells += [
                _f(row.get(m.key), m.digits)
                if row.get(m.key) is not None or not row.get(f"{m.key}_n")
                else f"partial {row[f'{m.key}_n']}/{row['n']}"
                for m in mets
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _h2h_table(doc: dict, selection: dict, budget: int, mets: list[config.Metric]) -> list[str]:
    """Per ours variant and baseline: images both fit, then ours' wins per metric ("3/13", ", 1 tie")."""
    mets = [m for m in mets if m.score]  # a reported measure (detail retention) is nobody's win
    cols = ["ours", "baseline", "images both fit"] + [m.column for m in mets]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head_to_head(doc, selection, budget):
        cells = [row["ours"], row["baseline"], f"{row['n']}/{row['of']}"]
        cells += [row["tallies"][m.key].cell() if row["n"] else "" for m in mets]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_KEY_SETTINGS = ("display", "ppd", "mode", "intensity_target_nits", "net")  # the settings the run description names


def _metrics_lines(doc: dict, images: list[str], img_secs: list) -> list[str]:
    """The run description's metric bullets: what measured each metric (library, settings), what could not
    run here, and what the metrics cost per image."""
    meta = doc["meta"]
    described = meta.get("metrics") or {}
    recs = [r for r in doc["records"] if r["image"] in set(images)]
    present = [m for m in config.METRIC_SPECS if any(r.get(m.key) is not None for r in recs)]
    parts = []
    for m in present:
        d = described.get(m.key)
        if d:
            settings = "; ".join(f"{k}={v}" for k, v in (d.get("settings") or {}).items() if k in _KEY_SETTINGS)
            parts.append(f"`{m.key}` {m.arrow} {d.get('library', '?')}" + (f" ({settings})" if settings else ""))
        else:
            parts.append(f"`{m.key}` {m.arrow}")
    lines = [f"* **Metrics** (↑ higher is better, ↓ lower): {'; '.join(parts)}"]
    if any(not m.score for m in present):
        lines.append(
            "* **Detail retention** (no arrow: not a quality score): the decoded image's high-frequency "
            "energy over the original's (variance of luma minus its Gaussian blur, sigma 2 px; "
            "`helpers.metrics.retention`). 1 = as much fine detail as the original, below 1 = smoothed "
            "away; noise would score above 1, so read it beside the fidelity columns, never alone"
        )
    if not described:
        lines.append(
            "* **Perceptual metrics:** not in these records (they predate them); re-run the same command "
            "to fill them in"
        )
    missing = dict(meta.get("metrics_unavailable") or {})
    if not missing and str(meta.get("lpips", "")).startswith("unavailable: "):  # records from before the registry
        missing = {"lpips": meta["lpips"][len("unavailable: ") :]}
    if missing:
        lines.append("* **Metrics unavailable here:** " + "; ".join(f"`{k}`: {v}" for k, v in missing.items()))
    ms = [meta.get("metric_seconds", {}).get(i) for i in images]
    ms = [x for x in ms if x and x.get("pairs")]
    if ms:
        total = sum(x["seconds"] for x in ms)
        pairs = sum(x["pairs"] for x in ms)
        work = sum(s for i, s in zip(images, img_secs) if s and meta.get("metric_seconds", {}).get(i))
        per = {}
        for x in ms:
            for k, v in x["per_metric"].items():
                per[k] = per.get(k, 0.0) + v
        lines.append(
            f"* **Metric time:** {total / len(ms):.1f} s per image ({100 * total / work:.0f} % of the work per image), "
            f"{pairs / len(ms):.1f} distinct decoded pictures measured per image (each picture once: baseline "
            f"qualities shared by budgets, our files shared by budgets and coders), {total / pairs:.2f} s per "
            "picture for all metrics; each metric's own wall time per picture inside `helpers.metrics.measure`, "
            "which overlap (Butteraugli runs in its own process meanwhile, the torch metrics on a second thread; "
            "SSIM includes MS-SSIM's pass): "
            + ", ".join(
                f"{k} {v / pairs:.2f} s" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v / pairs >= 0.005
            )
            + f" ({len(ms)} image{'s' * (len(ms) != 1)} timed, summed over the invocations that worked on them)"
        )
    return lines


def _bd_cell(row: dict, metric: str) -> str:
    na, nb = row[f"{metric}_points"]
    nd = config.metric_spec(metric).digits
    if na < 2 or nb < 2:
        return f"too few complete budgets ({row['baseline']} {na}, ours {nb})"
    if row[metric] is None:
        (alo, ahi), (blo, bhi) = row[f"{metric}_ranges"]
        return f"no overlap (ours {blo:.{nd}f}..{bhi:.{nd}f}, {row['baseline']} {alo:.{nd}f}..{ahi:.{nd}f})"
    lo, hi = row[f"{metric}_overlap"]
    return f"{row[metric]:+.1f}% (over {lo:.{nd}f}..{hi:.{nd}f})"


def _bd_image_cell(row: dict, metric: str, n_images: int) -> str:
    per = row[f"{metric}_per_image"]
    if not per:
        return f"no overlap on any image (0/{n_images})"
    return f"median {np.median(per):+.1f}% (range {min(per):+.1f}..{max(per):+.1f}%, {len(per)}/{n_images} images)"


def _stage_table(doc: dict, selection: dict) -> list[str]:
    recs = [
        r
        for r in doc["records"]
        if r["image"] in set(selection["images"]) and r["codec"] in selection["ours"] and r.get("seconds")
    ]
    if not recs:
        return ["No timing records."]
    cols = ["variant"] + list(STAGES) + ["sum of stages", "peak mem delta (MiB)", "peak process (MiB)"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for ours in selection["ours"]:
        rs = [r for r in recs if r["codec"] == ours]
        if not rs:
            continue
        cells = [ours] + [_f(_mean(r["seconds"].get(s) for r in rs), 3) for s in STAGES]
        cells += [
            _f(_mean(r["seconds_total"] for r in rs), 2),
            f"{_f(_mean(r['peak_mem_mb'] for r in rs), 0)} (max {_f(max(r['peak_mem_mb'] for r in rs), 0)})",
            _f(max(r["peak_process_mb"] for r in rs), 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    per_image = []
    for ours in selection["ours"]:
        by_img: dict[str, list[dict]] = {}
        for r in recs:
            if r["codec"] == ours:
                by_img.setdefault(r["image"], []).append(r)
        if by_img:
            tot = [
                rs[0]["seconds"]["vae_encode"]
                + sum(sum(v for k, v in r["seconds"].items() if k != "vae_encode") for r in rs)
                for rs in by_img.values()
            ]
            per_image.append(f"{ours} {np.mean(tot):.1f} s")
    lines += [
        "",
        "Standalone seconds per image for one variant (one latent encode, then encode + decode at every "
        "budget): " + ", ".join(per_image) + ".",
    ]
    return lines


def _parallel(par: dict, verb: str = "") -> str:
    """How the work ran: the Dask scheduler and its workers (runs since the tasks), or the images processed in
    parallel (records of the earlier image pool, as their summaries have always said)."""
    if par.get("scheduler"):
        return (
            f"tasks (one per image and variant) {verb}on {par.get('jobs') or '?'} worker process(es), "
            f"scheduler {par['scheduler']}"
        )
    return f"{par.get('jobs', 1)} image(s) {verb}in parallel"


def write_summary(doc: dict, path: Path, selection: dict) -> Path:
    meta = doc["meta"]
    images, budgets = selection["images"], selection["budgets"]
    crop = meta.get("policy_name", POLICY) == POLICY  # budgets in bpp only where every picture is 512x512
    agg = aggregate(doc["records"], images)
    mach = meta.get("machine", {})
    runs = meta.get("runs") or [{}]
    # the last invocation that computed records (new ones, or re-made ones it replaced)
    run = next((r for r in reversed(runs) if r.get("new_records") or r.get("replaced_records")), runs[-1])
    img_secs = [meta.get("image_seconds", {}).get(i) for i in images]
    par = meta.get("parallel", {})
    settings = "; ".join(f"{k}: {v}" for k, v in meta.get("baseline_settings", {}).items() if k in selection["codecs"])
    total = sum(s for s in img_secs if s)
    mets = shown_metrics(r for r in doc["records"] if r["image"] in set(images))
    md = [
        f"# Rate-distortion benchmark: {len(images)} image{'s' * (len(images) != 1)} "
        f"({Path(str(meta.get('data', ''))).name or 'images'}), policy {meta.get('policy_name', POLICY)}",
        "",
    ]
    md += [
        "Generated by `python -m helpers.bench` (helpers/bench/). Numbers are means over the images; "
        "every byte of every file (headers, CRC) is counted.",
        "",
        f"* **Command:** `{meta.get('command', '')}`",
        f"* **Images:** {', '.join(images)}",
        f"* **Policy:** {meta.get('policy', POLICY_TEXT)}",
        f"* **Ours:** {'; '.join(f'`{k}` = {v}' for k, v in meta.get('backends', {}).items())}; "
        f"rate control {meta.get('ours_rule', '')}; latents computed once per image, weights once per run",
        f"* **Baselines:** {', '.join(selection['codecs'])} ({settings}); "
        f"rule {'/'.join(selection['rules'])} (le = largest file <= budget, the fair rule; "
        "ge = smallest file >= budget, the 2022 notebook's rule)",
        *_metrics_lines(doc, images, img_secs),
        f"* **Machine:** {mach.get('cpu', '?')}, {mach.get('cpu_count', '?')} CPUs, "
        f"{mach.get('ram', '?')} RAM, {mach.get('platform', '?')}; "
        f"device `{mach.get('device', '?')}`"
        + (f" ({mach['gpu']})" if mach.get("gpu") else "")
        + f"; torch {mach.get('torch', '?')}, Pillow {mach.get('pillow', '?')}, Python {mach.get('python', '?')}",
        f"* **Wall time:** {_f((meta.get('wall_seconds_total') or 0) / 60, 1)} min in total for the "
        f"invocations that computed these records; {total / max(1, len([s for s in img_secs if s])):.1f} s of "
        f"work per image in a process with {par.get('torch_threads_per_job', '?')} torch thread(s), "
        f"{_parallel(par)}; last invocation {_f(run.get('wall_seconds'), 1)} s, "
        f"{run.get('new_records', 0)} new records, {run.get('replaced_records', 0)} replaced, "
        f"1-min load average {run.get('load_start', '?')} at its start "
        f"and {run.get('load_end', '?')} at its end (model loading {_f(meta.get('backend_load_seconds'), 1)} s)",
    ]
    if meta.get("skipped_coders"):
        md.append(f"* **Coders skipped:** {meta['skipped_coders']} (re-run the same command to add them)")
    if meta.get("unavailable_codecs"):
        md.append(f"* **Baselines unavailable here:** {meta['unavailable_codecs']}")
    md.append("")
    failed = [f for f in doc.get("failures") or [] if f["image"] in set(images)]
    if failed:
        md += [
            "## Failed tasks",
            "",
            f"{len(failed)} task(s) did not finish; their records are missing from the tables below (re-run the "
            "same command to try them again):",
            "",
            "| image | task | what happened | error |",
            "|---|---|---|---|",
        ]
        md += [f"| {f['image']} | {f['task']} | {f['kind']} | {f['error'].replace('|', '/')} |" for f in failed]
        md.append("")
    if HIGHLIGHT_BUDGET in budgets:
        md += [
            f"## >>> At {HIGHLIGHT_BUDGET} bytes"
            + (f" ({8 * HIGHLIGHT_BUDGET / (512 * 512):.3f} bpp budget)" if crop else "")
            + " <<<",
            "",
        ]
        md += _budget_table(agg, selection, HIGHLIGHT_BUDGET, mets) + [""]
        rows = _rows_for(selection)
        common = [
            i
            for i in images
            if all(
                any(
                    r["image"] == i
                    and r["codec"] == c
                    and r["rule"] == rl
                    and r["budget"] == HIGHLIGHT_BUDGET
                    and r.get("bytes") is not None
                    for r in doc["records"]
                )
                for _, c, rl in rows
            )
        ]
        if 0 < len(common) < len(images):
            md += [
                f"The same budget on the {len(common)} images that every codec could fit into {HIGHLIGHT_BUDGET} "
                f"bytes ({', '.join(common)}), so that every row averages the same images:",
                "",
            ]
            md += _budget_table(aggregate(doc["records"], common), selection, HIGHLIGHT_BUDGET, mets) + [""]
    md += [
        "## Does ours win? Head-to-head per image",
        "",
        "Per budget, on the images that both ours and the baseline fit into the budget: on how many does "
        'ours score better, per metric ("3/13" = better on 3 of 13 images). A tie (equal at the decimals '
        'shown in the tables) counts for neither side and is listed (", 1 tie"). In the sentences, ours '
        "*wins* against a baseline on a metric when it is better on more than half of those images, *loses* "
        "when it is worse on more than half, and is *level* otherwise.",
        "",
    ]
    md += [f"* {budget_verdict(doc, selection, b)}" for b in budgets] + [""]
    for b in budgets:
        md += [f"### Head-to-head at {b} bytes", ""] + _h2h_table(doc, selection, b, mets) + [""]
    md += [
        "## Every budget",
        "",
        "`images` = how many images the codec could fit into the budget (rule le: a codec whose smallest "
        "file is larger than the budget has no entry for that image); the means are over those images.",
        "",
    ]
    for b in budgets:
        md += [
            f"### {b} bytes"
            + (f" ({8 * b / (512 * 512):.4f} bpp budget)" if crop else "")
            + ("  (highlighted above)" if b == HIGHLIGHT_BUDGET else ""),
            "",
        ]
        md += _budget_table(agg, selection, b, mets) + [""]
    md += [
        "![rate-distortion curves](rd_curves.png)",
        "",
        "## BD-rate of ours against each baseline",
        "",
        "Bjontegaard delta rate (VCEG-M33): log-rate fitted as a cubic polynomial of the metric (degree "
        "n-1 below 4 points), both fits integrated over the metric interval the two curves share; negative = "
        'ours needs fewer bytes for the same quality. "no overlap" = the two curves share no quality '
        "interval, so no rate difference is defined (the ranges are given). *Mean curves*: mean bpp vs mean "
        "metric over all images, only budgets every image reached. *Per image*: each image's own curves "
        "(its reachable budgets), reported over the images where they overlap. Lower-is-better metrics "
        "need no sign change: the rate difference at equal quality does not depend on the direction.",
    ]
    bd = bd_table(doc, selection)
    swept = sorted({row["baseline"] for row in bd for m in mets if row.get(f"{m.key}_curve") == "sweep"})
    if swept:
        qs = meta.get("sweep_qualities") or {}
        md[-1] += (
            " Here the baselines' curves (" + ", ".join(swept) + ") are their whole quality sweeps: every "
            "image encoded at each quality of the sweep ("
            + "; ".join(f"{c} {qs[c][0]}..{qs[c][-1]}" for c in swept if qs.get(c))
            + "), mean bpp and mean metric over all images at each quality (*mean curves*), and each image's "
            "own sweep (*per image*); ours: the budgets."
        )
    md.append("")
    for m in (m for m in config.bd_metrics() if m in mets):
        md += [
            f"### BD-rate on {m.column}",
            "",
            "| ours | baseline | rule | mean curves | per image |",
            "|---|---|---|---|---|",
        ]
        md += [
            f"| {row['ours']} | {row['baseline']} | {row['rule']} | {_bd_cell(row, m.key)} | "
            f"{_bd_image_cell(row, m.key, len(images))} |"
            for row in bd
        ]
        md.append("")
    sav = [s for s in doc.get("coder_savings", []) if s["image"] in set(images)]
    if sav:
        coders = sorted({c for s in sav for c in s["saved_pct"]})
        ncol = sorted({s.get("colors_requested") for s in sav})
        md += [
            f"## Lossless coder: bytes saved against zlib at the same {'/'.join(map(str, ncol))}-colour "
            "palette (no budget)",
            "",
            "Each image's latent is quantized once (k-means palette + dithering, no budget) and the same "
            "palette + index map is packed by each coder; the files decode to identical pixels "
            "(`identical_to_zlib`). Whole files, headers included.",
            "",
            "| model | coder | images | mean zlib bytes | mean bytes | mean % saved | min / max % saved | "
            "identical pixels |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for model in sorted({s["model"] for s in sav}):
            ss = [s for s in sav if s["model"] == model]
            for c in coders:
                sc = [s for s in ss if c in s["saved_pct"]]
                if not sc:
                    continue
                pct = [s["saved_pct"][c] for s in sc]
                md.append(
                    f"| {model} | {c} | {len(sc)} | {_f(_mean(s['bytes']['zlib'] for s in sc), 0)} | "
                    f"{_f(_mean(s['bytes'][c] for s in sc), 0)} | {_mean(pct):.2f} | "
                    f"{min(pct):.2f} / {max(pct):.2f} | "
                    f"{sum(bool(s['identical_to_zlib'].get(c)) for s in sc)}/{len(sc)} |"
                )
        ident = [
            r
            for r in doc["records"]
            if r["image"] in set(images)
            and r["codec"] in selection["ours"]
            and r.get("coder") in PALETTE_CODERS
            and r.get("coder") != "zlib"
            and r.get("bytes") is not None
        ]
        if ident:
            how = sorted({r.get("identical_check", "pixels") for r in ident})
            md += [
                "",
                f"Within the budget runs, {sum(bool(r.get('identical_to_zlib')) for r in ident)}/{len(ident)} "
                "non-zlib files decode exactly like the zlib file with the same palette (checked on: "
                f"{', '.join('decoded pixels' if h == 'pixels' else 'unpacked 8-bit latents' for h in how)}).",
            ]
        md.append("")
    where = (
        f" ({mach['gpu']})"
        if mach.get("gpu")
        else f" ({mach.get('cpu', '?')}, {par.get('torch_threads_per_job', '?')} torch thread(s) per process, "
        f"{_parallel(par, 'processed ')})"
    )
    mem_kind = next((r["mem_kind"] for r in reversed(doc["records"]) if r.get("mem_kind")), "n/a")
    md += [
        "## Seconds per stage and peak memory (ours, per image and budget)",
        "",
        f"Device: `{mach.get('device', '?')}`" + where + ". Mean seconds of one encode + decode at one budget: "
        "`vae_encode` runs once per image (its latents are reused by every budget and coder); `palette` and "
        "`pack` are the seconds a standalone encode spends over its whole palette-size search (the "
        "benchmark itself memoises them across budgets); for tc, `pack` is its whole rate control (transform, "
        "then quantization + range coding for each step tried) and `refine` the encoder-side refinement of "
        "the tc+e variants (decoder forward + backward passes, per budget); `denoise` is 0 without a UNet. "
        "Peak memory: " + mem_kind + ", over the latent encode "
        "and one encode + decode.",
        "",
    ]
    md += _stage_table(doc, selection) + [""]
    base = [
        r
        for r in doc["records"]
        if r["image"] in set(images) and r.get("kind") == "baseline" and r.get("encode_seconds") is not None
    ]
    if base:
        md += [
            "Baseline encode seconds of the chosen file (mean): "
            + ", ".join(
                f"{c} {_mean(r['encode_seconds'] for r in base if r['codec'] == c):.3f}"
                for c in selection["codecs"]
                if any(r["codec"] == c for r in base)
            )
            + ".",
            "",
        ]
    md += [
        "## Reproduce",
        "",
        "```",
        meta.get("command", "python -m helpers.bench"),
        "```",
        "",
        "The run is resumable: records already in records.json are skipped (delete the folder to start over).",
        "",
    ]
    path.write_text("\n".join(md))
    return path


def budget_table(doc: dict, selection: dict, budget: int) -> str:
    """The summary's markdown table of one budget (means over the images each codec fits), for notebooks."""
    mets = shown_metrics(r for r in doc["records"] if r["image"] in set(selection["images"]))
    return "\n".join(_budget_table(aggregate(doc["records"], selection["images"]), selection, int(budget), mets)) + "\n"

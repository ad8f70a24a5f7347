"""The README's result tables, generated from the committed ``results/`` folders.

Each table sits between two markers in README.md, ``<!-- results:NAME -->`` and ``<!-- /results -->``; the
text between them is what :data:`BLOCKS` ``[NAME]`` makes from ``results/`` (the records behind each
``summary.md``). ``python -m helpers.bench.readme`` rewrites the blocks in place; ``--check`` only compares
(exit 1 and the names of the stale blocks; ``tests/test_readme.py`` runs it). The prose around the tables is
written by hand: numbers quoted there are checked by nobody, so keep them few.

Blocks: ``kodak`` (means per budget, results/kodak), ``effort`` (every tc effort and baseline at 5000 B,
results/kodak, results/holdout and their ``_effort3`` folders), ``cli-timing-512`` (results/cli_timing/quiet),
``cli-timing-sizes`` (results/cli_timing), ``large-photo`` (results/large_photo), ``decode-memory``
(results/decode_memory), ``sd-fullsize`` (results/sd_fullsize).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from .config import OURS_RULE, ROOT

MB = 1e6 / 2**20  # MiB per MB: the CLI-timing targets are in MB (10^6 bytes)
_BLOCK = re.compile(r"(<!-- results:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.DOTALL)


def _json(results: Path, *parts: str) -> dict:
    return json.loads(results.joinpath(*parts).read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------
# the tables
# ------------------------------------------------------------------------------------------

#: the Kodak table's columns: (title, codec, rule, metric, decimals)
KODAK_COLUMNS = (
    ("palette `zlib` (2022)", "ours:taef2/zlib", OURS_RULE, "psnr", 2),
    ("palette `arith`", "ours:taef2/arith", OURS_RULE, "psnr", 2),
    ("`tc`", "ours:taef2/tc", OURS_RULE, "psnr", 2),
    ("`tc` MS-SSIM", "ours:taef2/tc", OURS_RULE, "ms_ssim", 3),
    ("`tc+e1`", "ours:taef2/tc+e1", OURS_RULE, "psnr", 2),
    ("JPEG", "jpeg", "le", "psnr", 2),
    ("WebP", "webp", "le", "psnr", 2),
    ("AVIF", "avif", "le", "psnr", 2),
    ("JPEG XL", "jxl", "le", "psnr", 2),
)


def kodak_table(results: Path) -> str:
    """Mean PSNR (dB; MS-SSIM where marked) per budget over the Kodak crops: each of ours, each baseline over
    the images it fits into the budget (their count in brackets where not all)."""
    from .aggregate import aggregate
    from .records import load_records, selection_of

    doc = load_records(results / "kodak" / "records.json")
    selection = selection_of(doc)
    agg = aggregate(doc["records"], selection["images"])
    rows = []
    for i, budget in enumerate(selection["budgets"]):
        row = [str(budget)]
        for j, (_, codec, rule, metric, nd) in enumerate(KODAK_COLUMNS):
            a = agg.get((codec, rule, budget))
            if a is None or not a["n"] or a[metric] is None:
                row.append(f"- ({a['n'] if a else 0})")
                continue
            cell = f"{a[metric]:.{nd}f}" + (" dB" if i == 0 and j == 0 else "")
            if not a["complete"]:
                cell += f" ({a['n']} image)" if a["n"] == 1 else f" ({a['n']})"
            row.append(cell)
        rows.append(row)
    return _table(["bytes", *(c[0] for c in KODAK_COLUMNS)], rows)


def _cli_rows(doc: dict) -> dict[tuple, dict]:
    return {(r["size"], r["setting"], r["op"], r["runtime"]): r["median"] for r in doc["rows"]}


def cli_timing_512_table(results: Path) -> str:
    """The idle-machine run at 512x512 (results/cli_timing/quiet): wall / CPU seconds and peak RSS (MB) of the
    CLI per runtime, the budgeted ``tc`` encode and its decode against the targets, then the palette method."""
    doc = _json(results, "cli_timing", "quiet", "records.json")
    med = _cli_rows(doc)
    budget = next(s for (size, s, _, _) in med if size == 512 and s.endswith(" B"))
    palette = next(s for (size, s, _, _) in med if size == 512 and s.startswith("K="))
    lines = [
        (f"decode (the {budget[:-2]}-byte `tc` file)", budget, "decode", "1.5 s, 300 MB"),
        (f"encode `--target-bytes {budget[:-2]}` (`tc`, the default)", budget, "encode", "2.5 s, 400 MB"),
        (f"encode `--colors {palette[2:]} --coder {doc['coder']}` (palette, no rate control)", palette, "encode", ""),
        ("decode that palette file", palette, "decode", ""),
    ]

    def cell(m: dict) -> str:
        return f"{m['wall_s']:.2f} s / {m['cpu_s']:.2f} s / {m['peak_rss_MiB'] / MB:.0f} MB"

    rows = [
        [what, cell(med[(512, setting, op, "onnx")]), cell(med[(512, setting, op, "torch")]), target]
        for what, setting, op, target in lines
    ]
    return _table(
        [
            "512x512, process start to output written (idle machine)",
            "ONNX Runtime: wall / CPU / peak RSS",
            "PyTorch: wall / CPU / peak RSS",
            "target",
        ],
        rows,
    )


def cli_timing_sizes_table(results: Path) -> str:
    """Every size of the shared-machine run (results/cli_timing): wall seconds and peak RSS (MiB) of the
    palette-method encode and decode per runtime, and Pillow's JPEG XL / AVIF decodes of files of the same size."""
    doc = _json(results, "cli_timing", "records.json")
    cols = (
        ("ONNX encode", "encode", "onnx"),
        ("ONNX decode", "decode", "onnx"),
        ("PyTorch encode", "encode", "torch"),
        ("PyTorch decode", "decode", "torch"),
        ("Pillow JPEG XL decode", "decode", "Pillow JXL"),
        ("Pillow AVIF decode", "decode", "Pillow AVIF"),
    )
    by = {(r["size"], r["op"], r["runtime"]): r["median"] for r in doc["rows"] if not r["setting"].endswith(" B")}
    rows = []
    for size in doc["sizes"]:
        row = [f"{size}x{size}"]
        for _, op, rt in cols:
            m = by.get((size, op, rt))
            row.append("-" if m is None else f"{m['wall_s']:.2f} s, {m['peak_rss_MiB']:.0f}")
        rows.append(row)
    return _table(["size", *(c[0] for c in cols)], rows)


def large_photo_table(results: Path) -> str:
    """results/large_photo: wall / CPU seconds and peak RSS (GiB) of the CLI's encode and decode per size, and
    the work CPU per megapixel relative to the first size."""
    doc = _json(results, "large_photo", "records.json")
    base = doc["rows"][0]

    def cell(d: dict) -> str:
        return f"{d['wall_s']:.0f} s / {d['cpu_s']:.0f} s / {d['peak_rss_MiB'] / 1024:.2f} GiB"

    def rel(r: dict, op: str) -> str:
        return f"{r[op]['cpu_work_s_per_MP'] / base[op]['cpu_work_s_per_MP']:.2f}x"

    rows = [
        [r["size"], cell(r["encode"]), cell(r["decode"]), f"{rel(r, 'encode')} / {rel(r, 'decode')}"]
        for r in doc["rows"]
    ]
    return _table(
        [
            "size",
            "encode: wall s / CPU s / peak RSS",
            "decode: wall s / CPU s / peak RSS",
            f"work CPU per MP vs {base['size']} (enc / dec)",
        ],
        rows,
    )


def decode_memory_table(results: Path) -> str:
    """results/decode_memory: wall / CPU seconds and peak RSS (MiB, bold; the bound in brackets) of a CLI decode
    per size and runtime, and the size of the 8-bit output."""
    doc = _json(results, "decode_memory", "records.json")
    runtimes = list(dict.fromkeys(r["runtime"] for r in doc["records"]))
    by = {(r["size"], r["runtime"]): r for r in doc["records"]}
    names = {"onnx": "ONNX Runtime", "torch": "PyTorch"}
    rows = []
    for size in dict.fromkeys(r["size"] for r in doc["records"]):
        row = [f"{size}x{size}"]
        for rt in runtimes:
            r = by.get((size, rt))
            if r is None or r["rc"] != 0:
                row.append("-" if r is None else f"exit {r['rc']}")
                continue
            bound = "" if r.get("bound_MiB") is None else f" ({r['bound_MiB']:.0f})"
            row.append(f"{r['wall_s']:.0f} / {r['cpu_s']:.0f} / **{r['peak_rss_MiB']:.0f}**{bound}")
        row.append(f"{size * size * 3 / 2**20:.0f}")
        rows.append(row)
    return _table(
        [
            "size",
            *(f"{names.get(rt, rt)}: wall s / CPU s / peak RSS MiB (bound)" for rt in runtimes),
            "8-bit output MiB",
        ],
        rows,
    )


T4_FP16_TFLOPS = 65.0  # NVIDIA's published T4 peak (fp16 tensor cores); 16 GB GDDR6
T4_GB = 16


def sd_fullsize_table(results: Path) -> str:
    """results/sd_fullsize: SD v1.4's architecture at full size (random weights): parameters, download and GPU
    weight sizes, FLOPs per 512x512 image, the T4 lower bound they imply, CPU time and memory measured here (in
    process and as CLI subprocesses), and the file sizes of both latent coders on SD's 4x64x64 latent."""
    d = _json(results, "sd_fullsize", "results.json")
    p, f, sz = d["standin"]["parameters"], d["flops"], d["sizes"]
    total = d["standin"]["total_parameters"]
    stage = {s["stage"]: s for s in d["stages"]}
    enc, dec = stage["VAE encode 512x512"], stage["VAE decode 512x512"]
    cli_enc = [c for c in d["cli"] if " encode " in c["command"]]
    den = next(c for c in d["cli"] if " decode " in c["command"] and "--no-denoise" not in c["command"])
    plain = next(c for c in d["cli"] if " decode " in c["command"] and "--no-denoise" in c["command"])
    enc_walls = [enc["wall_s"]] + [
        c["codec_wall_s"]["vae_encode"] for c in d["cli"] if "vae_encode" in c["codec_wall_s"]
    ]
    dec_walls = [dec["wall_s"]] + [
        c["codec_wall_s"]["vae_decode"] for c in d["cli"] if "vae_decode" in c["codec_wall_s"]
    ]
    steps = d["denoise"]["unet_step_seconds"] + [
        t for c in d["cli"] if c["denoise"] for t in c["denoise"]["unet_step_seconds"]
    ]

    def span(xs) -> str:
        lo, hi = f"{min(xs):.0f}", f"{max(xs):.0f}"
        return lo if lo == hi else f"{lo}-{hi}"

    def ms(flop: float) -> str:
        return f"{flop / (T4_FP16_TFLOPS * 1e12) * 1e3:.0f} ms"

    rows = [
        [
            "parameters",
            f"UNet {p['unet'] / 1e6:.1f} M, VAE {p['vae'] / 1e6:.1f} M, CLIP text encoder "
            f"{p['text_encoder'] / 1e6:.1f} M: {total / 1e9:.2f} B",
            'measured on the stand-in; the published architecture (model card: "an 860M UNet")',
        ],
        [
            "weights to download",
            f"{total * 4 / 1e9:.1f} GB in fp32, {total * 2 / 1e9:.1f} GB in fp16",
            "computed from the parameter counts",
        ],
        [
            "GPU memory for the weights (fp16, `default_dtype` on CUDA)",
            f"{total * 2 / 1e9:.1f} GB of a T4's {T4_GB} GB (VAE alone {p['vae'] * 2 / 1e9:.2f} GB)",
            f"computed; T4: {T4_GB} GB GDDR6, {T4_FP16_TFLOPS:.0f} TFLOPS fp16 tensor / 8.1 fp32 (NVIDIA's announcement, "
            'e.g. tomshardware.co.uk "Nvidia Announces Tesla T4 GPUs")',
        ],
        [
            "work per 512x512 image",
            f"VAE encode {f['vae_encode'] / 1e12:.2f} TFLOP, VAE decode "
            f"{f['vae_decode'] / 1e12:.2f}, one UNet step {f['unet_step'] / 1e12:.2f} (the 2022 "
            f"denoise runs {d['denoise']['steps_run']} of {d['denoise']['schedule_steps']})",
            "counted (`torch.utils.flop_counter` on the meta device)",
        ],
        [
            "T4 time, lower bound",
            f"VAE encode {ms(f['vae_encode'])}, decode {ms(f['vae_decode'])}, UNet step "
            f"{ms(f['unet_step'])} at the fp16 peak",
            f"computed from the two rows above; **not measured** (no GPU here): real kernels reach a fraction of the "
            f"peak, and the first run also downloads {total * 4 / 1e9:.1f} GB",
        ],
        [
            f"CPU time ({d['machine']['cpus']} cores, fp32)",
            f"VAE encode {enc['cpu_s']:.0f} s of CPU ({span(enc_walls)} s wall), VAE decode {dec['cpu_s']:.0f} s of CPU "
            f"({span(dec_walls)} s wall), UNet {span(steps)} s wall per step (the first one reads the weights)",
            "measured here",
        ],
        [
            "CLI on CPU, 512x512",
            f"encode {span([c['wall_s'] for c in cli_enc])} s wall, "
            f"{max(c['peak_rss_MiB'] for c in cli_enc) / 1024:.1f} GiB peak RSS; decode with `--denoise` "
            f"{den['wall_s']:.0f} s, **{den['peak_rss_MiB'] / 1024:.1f} GiB**; decode without {plain['wall_s']:.0f} s, "
            f"{plain['peak_rss_MiB'] / 1024:.1f} GiB",
            "measured here (CLI subprocesses)",
        ],
        [
            "file sizes on SD's 4x64x64 latent",
            f"palette {sz['palette_colors']} colours + zlib (2022): {sz['palette_bytes']} B; `tc` at the same size "
            f"{sz['tc_same_size_bytes']} B (latent RMSE {sz['latent_rmse_tc_same_size']:.2f} vs "
            f"{sz['latent_rmse_palette']:.2f}), {sz['tc_inline_tables_bytes']} B of it inline tables; `tc` default rate "
            f"{sz['tc_default_bytes']} B",
            "measured here (random VAE: latent errors compare the coders, not image quality)",
        ],
    ]
    return _table(["what", "figure", "where it comes from"], rows)


#: the effort table's variants (title, codec) and metrics (key, title, decimals)
EFFORT_BUDGET = 5000
EFFORT_ROWS = (
    ("`tc` (default)", "ours:taef2/tc"),
    ("`tc+e1`", "ours:taef2/tc+e1"),
    ("`tc+e2`", "ours:taef2/tc+e2"),
    ("`tc+e3` (highest effort)", "ours:taef2/tc+e3"),
    ("JPEG", "jpeg"),
    ("WebP", "webp"),
    ("AVIF", "avif"),
    ("JPEG XL", "jxl"),
)
EFFORT_METRICS = (
    ("psnr", "PSNR dB", 2),
    ("ms_ssim", "MS-SSIM", 3),
    ("cvvdp", "CVVDP JOD", 3),
    ("ssimulacra2", "SSIMULACRA 2", 1),
    ("butteraugli", "Butteraugli", 2),
)


def effort_table(results: Path) -> str:
    """At 5000 B on each set (Kodak, the holdout photos): every tc effort and every baseline, means of the main
    metrics and of detail retention over the images each fits, the refinement's seconds per image, and on how
    many of the images both fit a variant of ours beats AVIF, per metric (records of ``results/SET`` and of
    ``results/SET_effort3``, where the highest effort ran at this budget only)."""
    from ..metrics import tally
    from ..metrics.registry import METRICS
    from .aggregate import aggregate
    from .records import load_records, selection_of

    rows = []
    for name, title in (("kodak", "Kodak"), ("holdout", "holdout")):
        docs = [load_records(results / d / "records.json") for d in (name, f"{name}_effort3") if (results / d).is_dir()]
        images = selection_of(docs[0])["images"]
        recs = {}
        for doc in docs:  # the effort-3 folder's records win where both have one (same files, same metrics)
            for r in doc["records"]:
                if r["rule"] == OURS_RULE and int(r["budget"]) == EFFORT_BUDGET and r["image"] in images:
                    recs[(r["codec"], r["image"])] = r
        agg = aggregate(recs.values(), images)
        for label, codec in EFFORT_ROWS:
            a = agg.get((codec, OURS_RULE, EFFORT_BUDGET))
            if a is None or not a["n"]:
                continue
            row = [title, label, f"{a['n']}/{len(images)}", f"{a['bytes']:.0f}"]
            row += ["-" if a[k] is None else f"{a[k]:.{nd}f}" for k, _, nd in EFFORT_METRICS]
            row.append("-" if a["detail_retention"] is None else f"{a['detail_retention']:.2f}")
            refine = [recs[(codec, i)].get("seconds", {}).get("refine") for i in images if (codec, i) in recs]
            refine = [t for t in refine if t is not None]
            row.append(f"{sum(refine) / len(refine):.0f}" if refine and sum(refine) > 0 else "")
            wins = []
            if codec.startswith("ours"):
                both = [i for i in images if (codec, i) in recs and recs.get(("avif", i), {}).get("bytes") is not None]
                for k, _, _ in EFFORT_METRICS:  # the summary's head-to-head rule: a tie at its decimals is no win
                    m = METRICS[k]
                    pairs = [(recs[(codec, i)].get(k), recs[("avif", i)].get(k)) for i in both]
                    t = tally(k, pairs, digits=m.digits, higher_is_better=m.higher_is_better)
                    wins.append(f"{t.wins}/{t.n}")
            row.append(", ".join(wins))
            rows.append(row)
    return _table(
        [
            "set",
            f"at {EFFORT_BUDGET} B",
            "images",
            "bytes",
            *(t for _, t, _ in EFFORT_METRICS),
            "detail retention",
            "refine s/image",
            "better than AVIF on ("
            + ", ".join(t.removesuffix(" dB").removesuffix(" JOD") for _, t, _ in EFFORT_METRICS)
            + ")",
        ],
        rows,
    )


BLOCKS: dict[str, Callable[[Path], str]] = {
    "kodak": kodak_table,
    "effort": effort_table,
    "cli-timing-512": cli_timing_512_table,
    "cli-timing-sizes": cli_timing_sizes_table,
    "large-photo": large_photo_table,
    "decode-memory": decode_memory_table,
    "sd-fullsize": sd_fullsize_table,
}


# ------------------------------------------------------------------------------------------
# README.md
# ------------------------------------------------------------------------------------------


def render(text: str, results: Path = ROOT / "results") -> str:
    """``text`` (a README) with every marked block replaced by its generated table; an unknown block name is a
    ValueError naming the known ones."""

    def one(m: re.Match) -> str:
        name = m.group("name")
        if name not in BLOCKS:
            raise ValueError(f"unknown results block {name!r} in the README; known: {', '.join(BLOCKS)}")
        return m.group(1) + BLOCKS[name](results) + m.group(4)

    return _BLOCK.sub(one, text)


def stale_blocks(text: str, results: Path = ROOT / "results") -> list[str]:
    """The names of the marked blocks whose text differs from what :func:`render` makes."""
    new = {m.group("name"): m.group("body") for m in _BLOCK.finditer(render(text, results))}
    return [m.group("name") for m in _BLOCK.finditer(text) if m.group("body") != new[m.group("name")]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.bench.readme", description="Rewrite the README's result tables from results/"
    )
    ap.add_argument("--readme", default=str(ROOT / "README.md"))
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--check", action="store_true", help="only compare: exit 1 when a table differs")
    args = ap.parse_args(argv)
    path, results = Path(args.readme), Path(args.results)
    text = path.read_text()
    found = [m.group("name") for m in _BLOCK.finditer(text)]
    if args.check:
        stale = stale_blocks(text, results)
        if stale:
            print(
                f"error: README tables out of date: {', '.join(stale)}; run python -m helpers.bench.readme",
                file=sys.stderr,
            )
            return 1
        print(f"README tables up to date: {', '.join(found)}")
        return 0
    new = render(text, results)
    if new != text:
        path.write_text(new)
    print(f"{'rewrote' if new != text else 'unchanged'}: {', '.join(found)} in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

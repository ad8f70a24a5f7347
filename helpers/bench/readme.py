"""The README's result tables, generated from the committed ``results/`` folders.

Each table sits between two markers in README.md, ``<!-- results:NAME -->`` and ``<!-- /results -->``; the
text between them is what :data:`BLOCKS` ``[NAME]`` makes from ``results/`` (the records behind each
``summary.md``). ``python -m helpers.bench.readme`` rewrites the blocks in place; ``--check`` only compares
(exit 1 and the names of the stale blocks; ``tests/test_readme.py`` runs it). The prose around the tables is
written by hand: numbers quoted there are checked by nobody, so keep them few.

Blocks: ``kodak`` (means per budget, results/kodak), ``cli-timing-512`` (results/cli_timing/quiet),
``cli-timing-sizes`` (results/cli_timing), ``large-photo`` (results/large_photo), ``decode-memory``
(results/decode_memory).
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
KODAK_COLUMNS = (("palette `zlib` (2022)", "ours:taef2/zlib", OURS_RULE, "psnr", 2),
                 ("palette `arith`", "ours:taef2/arith", OURS_RULE, "psnr", 2),
                 ("`tc`", "ours:taef2/tc", OURS_RULE, "psnr", 2),
                 ("`tc` MS-SSIM", "ours:taef2/tc", OURS_RULE, "ms_ssim", 3),
                 ("`tc+e1`", "ours:taef2/tc+e1", OURS_RULE, "psnr", 2),
                 ("JPEG", "jpeg", "le", "psnr", 2), ("WebP", "webp", "le", "psnr", 2),
                 ("AVIF", "avif", "le", "psnr", 2), ("JPEG XL", "jxl", "le", "psnr", 2))


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
    lines = [(f"decode (the {budget[:-2]}-byte `tc` file)", budget, "decode", "1.5 s, 300 MB"),
             (f"encode `--target-bytes {budget[:-2]}` (`tc`, the default)", budget, "encode", "2.5 s, 400 MB"),
             (f"encode `--colors {palette[2:]} --coder {doc['coder']}` (palette, no rate control)", palette, "encode",
              ""),
             ("decode that palette file", palette, "decode", "")]

    def cell(m: dict) -> str:
        return f"{m['wall_s']:.2f} s / {m['cpu_s']:.2f} s / {m['peak_rss_MiB'] / MB:.0f} MB"

    rows = [[what, cell(med[(512, setting, op, "onnx")]), cell(med[(512, setting, op, "torch")]), target]
            for what, setting, op, target in lines]
    return _table(["512x512, process start to output written (idle machine)", "ONNX Runtime: wall / CPU / peak RSS",
                   "PyTorch: wall / CPU / peak RSS", "target"], rows)


def cli_timing_sizes_table(results: Path) -> str:
    """Every size of the shared-machine run (results/cli_timing): wall seconds and peak RSS (MiB) of the
    palette-method encode and decode per runtime, and Pillow's JPEG XL / AVIF decodes of files of the same size."""
    doc = _json(results, "cli_timing", "records.json")
    cols = (("ONNX encode", "encode", "onnx"), ("ONNX decode", "decode", "onnx"),
            ("PyTorch encode", "encode", "torch"), ("PyTorch decode", "decode", "torch"),
            ("Pillow JPEG XL decode", "decode", "Pillow JXL"), ("Pillow AVIF decode", "decode", "Pillow AVIF"))
    by = {(r["size"], r["op"], r["runtime"]): r["median"] for r in doc["rows"]
          if not r["setting"].endswith(" B")}
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

    rows = [[r["size"], cell(r["encode"]), cell(r["decode"]), f"{rel(r, 'encode')} / {rel(r, 'decode')}"]
            for r in doc["rows"]]
    return _table(["size", "encode: wall s / CPU s / peak RSS", "decode: wall s / CPU s / peak RSS",
                   f"work CPU per MP vs {base['size']} (enc / dec)"], rows)


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
    return _table(["size", *(f"{names.get(rt, rt)}: wall s / CPU s / peak RSS MiB (bound)" for rt in runtimes),
                   "8-bit output MiB"], rows)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "kodak": kodak_table,
    "cli-timing-512": cli_timing_512_table,
    "cli-timing-sizes": cli_timing_sizes_table,
    "large-photo": large_photo_table,
    "decode-memory": decode_memory_table,
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
    ap = argparse.ArgumentParser(prog="python -m helpers.bench.readme",
                                 description="Rewrite the README's result tables from results/")
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
            print(f"error: README tables out of date: {', '.join(stale)}; run python -m helpers.bench.readme",
                  file=sys.stderr)
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

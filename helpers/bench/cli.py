"""The command line of ``python -m helpers.bench``: arguments, ``--report-only``, and the guarded entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..errors import SDCError
from .config import (
    DEFAULT_BUDGETS,
    DEFAULT_CODERS,
    DEFAULT_DATA,
    DEFAULT_OUT,
    DEFAULT_RULES,
    PLOT_FILE,
    RECORDS_FILE,
    SUMMARY_FILE,
)
from .plot import write_plot
from .records import load_records, selection_of
from .runner import run
from .summary import write_summary


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m helpers.bench",
        description="Rate-distortion benchmark of the latent codec against JPEG/WebP/AVIF/JPEG XL (resumable).",
    )
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="image folder (default ../shared/data/kodak)")
    ap.add_argument("--images", nargs="+", default=None, help="only these images (stems or file names)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images (after --images)")
    ap.add_argument(
        "--budgets",
        nargs="+",
        type=int,
        default=list(DEFAULT_BUDGETS),
        help="byte budgets (default 2000 3000 5000 8000 12000 20000 30000)",
    )
    ap.add_argument("--codecs", nargs="+", default=None, help="baselines (default: every available one)")
    ap.add_argument(
        "--model",
        action="append",
        default=None,
        help="backend(s): taef2 (default), auto (SD v1.4 if available else TAEF2), an SD hub id or "
        "diffusers folder, a TAEF2 folder; repeat for several backends",
    )
    ap.add_argument("--coders", nargs="+", default=list(DEFAULT_CODERS), help="lossless coders (default zlib arith)")
    ap.add_argument(
        "--denoise",
        action="store_true",
        help="also run UNet-denoised variants (only for backends with a UNet, i.e. SD)",
    )
    ap.add_argument(
        "--max-colors",
        type=int,
        default=1024,
        help="largest palette the budget search may use (1024; libimagequant stops at 256)",
    )
    ap.add_argument(
        "--no-coder-savings",
        dest="coder_savings",
        action="store_false",
        help="skip the zlib-vs-arith section at the default 256 colours",
    )
    ap.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:N, mps")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default results/kodak)")
    ap.add_argument(
        "--rules",
        nargs="+",
        default=list(DEFAULT_RULES),
        choices=["le", "ge"],
        help="baseline budget rules: le = largest file <= budget (fair, default); "
        "ge = smallest file >= budget (the 2022 notebook)",
    )
    ap.add_argument(
        "--verify",
        default="pixels",
        choices=["pixels", "latents"],
        help="identical_to_zlib in the budget runs: compare decoded pixels (default, one extra VAE "
        "decode per file) or the unpacked 8-bit latents (the decoder's input)",
    )
    ap.add_argument(
        "--scheduler",
        default=None,
        metavar="WHERE",
        help="where the tasks (one per image and variant) run: local (default: a Dask LocalCluster sized "
        "to this machine, torch threads split between its worker processes), local:N (N worker "
        "processes), tcp://HOST:PORT or a scheduler file (a running Dask cluster, e.g. on SLURM or "
        "Kubernetes), inline (this process, no Dask)",
    )
    ap.add_argument("--jobs", type=int, default=None, help="alias of --scheduler local:N")
    ap.add_argument(
        "--policy",
        default="crop512",
        choices=["crop512", "full"],
        help="crop512 (default): the centre 512x512 square, never resampled (smaller images are refused); "
        "full: whole images, coded as the CLI codes them (VAE in tiles)",
    )
    ap.add_argument(
        "--no-sweep",
        dest="sweep",
        action="store_false",
        help="skip the baselines' quality sweeps (the whole RD curves; cached per image content in "
        "$SDCOMP_CACHE/bench_sweeps)",
    )
    ap.add_argument(
        "--metrics",
        nargs="+",
        default=None,
        metavar="KEY",
        help="metrics to measure (default: every available metric of helpers.metrics' default set; "
        "'all' adds LPIPS-VGG and DISTS on CPU; psnr/ssim/ms_ssim always). Records that lack "
        "one are filled in (their files are re-made and, if identical, only measured)",
    )
    ap.add_argument(
        "--remeasure",
        nargs="+",
        default=None,
        metavar="KEY",
        help="measure these metrics again on every record (e.g. after installing libjxl's "
        "ssimulacra2 tool: the stored values came from another implementation)",
    )
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="only rewrite rd_curves.png and summary.md from the records.json in --out (no models)",
    )
    ap.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ap.add_argument(
        "--cli",
        action="store_true",
        help="instead: time the real CLI (encode/decode subprocesses, both runtimes, per stage and size; "
        "helpers.bench.cli_timing); see python -m helpers.bench --cli --help",
    )
    return ap


def report_only(out: Path) -> dict:
    """Rewrite the plot and the summary from ``out/records.json`` alone (no models, no images)."""
    rec_path = out / RECORDS_FILE
    if not rec_path.is_file():
        raise SDCError(f"no {RECORDS_FILE} in {out}: run the benchmark first (without --report-only)")
    doc = load_records(rec_path)
    selection = selection_of(doc)
    write_plot(doc, out / PLOT_FILE, selection)
    write_summary(doc, out / SUMMARY_FILE, selection)
    return {
        "records": rec_path,
        "plot": out / PLOT_FILE,
        "summary": out / SUMMARY_FILE,
        "new_records": 0,
        "filled_records": 0,
        "replaced_records": 0,
        "wall_seconds": 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m helpers.bench [args]``: 0 on success, 2 after a one-line ``error: ...`` (bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--cli" in argv:  # the CLI timing benchmark has its own options
        from .cli_timing import main as cli_timing_main

        return cli_timing_main([a for a in argv if a != "--cli"])
    args = build_parser().parse_args(argv)
    from ..errors import guarded

    res = guarded(
        lambda: report_only(Path(args.out)) if args.report_only else run(args, argv),
        interrupted="interrupted (records written so far are kept; re-run to resume)",
    )
    if isinstance(res, int):  # an error line was printed
        return res
    if args.report_only:
        print(f"wrote {res['plot']}, {res['summary']} from {res['records']}")
    else:
        extra = "".join(f", {res[k]} {k.split('_')[0]}" for k in ("filled_records", "replaced_records") if res.get(k))
        if res.get("failed_tasks"):
            extra += f", {res['failed_tasks']} failed task(s) (listed in the summary; re-run to retry them)"
        print(
            f"{res['new_records']} new records{extra} in {res['wall_seconds']:.1f}s; wrote {res['records']}, "
            f"{res['plot']}, {res['summary']}"
        )
    return 0

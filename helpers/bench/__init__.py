"""Rate-distortion benchmark: the latent codec against JPEG / WebP / AVIF / JPEG XL over a folder of images.

``python -m helpers.bench`` (defaults: the 24 Kodak images in ../shared/data/kodak, TAEF2, budgets
2000 3000 5000 8000 12000 20000 30000 bytes, our variants zlib + arith (the palette method) and tc + tc+e1 (the
transform coder, plain and with encoder-side refinement), every available baseline, rule ``le``).

For every image x budget:

* **ours**: :func:`helpers.codec.encode` with ``target_bytes=budget`` (the largest palette, or for tc the
  finest step, whose complete file, header included, fits the budget), then :func:`helpers.codec.decode` from the bytes alone. The model
  weights are loaded once for the whole folder and the latents are computed once per image (batch mode).
  One label per model / lossless coder (/ UNet denoising, SD only): ``ours:taef2/zlib``, ``ours:taef2/arith``.
  Each non-zlib file is checked to decode to exactly the pixels of the zlib file with the same palette
  (``identical_to_zlib``).
* **baselines**: each codec's quality is searched for the same budget under each rule (``le``: the largest
  file <= budget, the fair rule; ``ge``: the smallest file >= budget, the 2022 notebook's rule). Encodes are
  cached per quality (:class:`QualityCache`), so the five budgets and both rules share them.

Images go through the ``crop512`` policy (center crop to 512x512; Kodak's 768x512 / 512x768 images lose 128 columns
or rows on each side, nothing is resampled); bpp = 8 * bytes / (512 * 512), every header byte counted.

Every record carries every metric of :mod:`helpers.metrics` that runs here (``--metrics``; default: the
registry's default set: PSNR, SSIM, MS-SSIM, ColorVideoVDP, FLIP, SSIMULACRA 2, Butteraugli, LPIPS where its
backbone is on disk; LPIPS-VGG/DISTS only with CUDA), each decoded picture measured once
(:class:`MetricCache`); ``meta["metrics"]`` records each metric's library, version and settings, and
``meta["metric_seconds"]`` what the metrics cost per image.

Outputs in ``--out`` (default results/kodak): ``records.json`` (one record per image, codec, budget and rule,
plus the ``coder_savings`` section: zlib vs arith bytes for the same 256-colour palette), ``rd_curves.png``
(one subplot per metric, axes titled with the direction) and ``summary.md`` (tables per budget, the
head-to-head counts per budget and baseline with one verdict sentence per budget, BD-rates per metric, coder
savings, seconds per stage and for the metrics, peak memory, machine, command line). The run is resumable:
records already in ``records.json`` are kept and skipped, and the file is rewritten after every image;
records that lack a metric this run measures (older records) are filled in without being recomputed when
their file can be made again identically (see :mod:`~helpers.bench.runner`). ``--report-only`` rewrites the
plot and summary from ``records.json`` alone.

Speed (the full 24-image run took 12 minutes on a 2-core CPU): the latents are encoded once per image;
palettes and packed payloads are memoised across the budgets and coders of an image (``encode(..., cache=)``;
the per-stage seconds in the records are still those of a standalone encode); a file whose bytes were already
decoded (the 256-colour file is both the largest budget's and the coder-savings section's) is decoded once;
baseline encodes are shared per quality (:class:`QualityCache`). The work is one task per (image, variant), run on
Dask (``--scheduler``: a LocalCluster sized to the machine by default, the torch threads split between its worker
processes, each loading the models once; or a running cluster), results streamed back and saved as they arrive;
a task that raises or whose worker dies twice is recorded as failed and the run goes on. Each baseline's quality
sweep (``config.SWEEP_QUALITIES``) is cached per image content (:mod:`~helpers.bench.sweep`) and gives the RD
plot and the BD-rates its whole curve.

The package, one module per concern:

* :mod:`~helpers.bench.config`: defaults, file names, stages, and :data:`~helpers.bench.config.METRIC_SPECS`,
  the entries of the one metric registry (:data:`helpers.metrics.METRICS`: direction, rounding, plotted,
  BD-rated) that records, tables, RD plots and BD-rates derive from;
* :mod:`~helpers.bench.bdrate`: Bjontegaard delta rate;
* :class:`PeakMemory` (re-exported): :mod:`helpers.memory`, the one memory probe;
* :mod:`~helpers.bench.records`: record keys and labels, ``records.json`` load/save;
* :mod:`~helpers.bench.machine`: the machine description stored with the records;
* :mod:`~helpers.bench.image`: one task's (one image's) baseline and ours records and fills (:class:`QualityCache`,
  :class:`MetricCache`, :class:`Setup`);
* :mod:`~helpers.bench.runner`: the run: tasks, streaming, journal, failures;
* :mod:`~helpers.bench.scheduler`: where tasks run (inline, LocalCluster, a running Dask cluster), worker setup;
* :mod:`~helpers.bench.sweep`: the baselines' quality sweeps and their cache;
* :mod:`~helpers.bench.aggregate`: means per codec/budget, RD series, the head-to-head counts and verdicts,
  the BD-rate table;
* :mod:`~helpers.bench.summary` and :mod:`~helpers.bench.plot`: ``summary.md`` and ``rd_curves.png``;
* :mod:`~helpers.bench.compare`: ``python -m helpers compare`` / ``demo``: matched-size comparisons of a few images
  and their report, the head-to-head and verdicts through :mod:`~helpers.bench.aggregate`;
* :mod:`~helpers.bench.readme`: the README's result tables, generated from ``results/``;
* :mod:`~helpers.bench.cli` (+ ``__main__``): the command line.
"""

from __future__ import annotations

from ..memory import PeakMemory
from .aggregate import aggregate, bd_table, budget_verdict, head_to_head, shown_metrics
from .bdrate import bd_overlap, bd_rate
from .cli import build_parser, main, report_only
from .config import (
    CLASSIC_KEYS,
    DEFAULT_BUDGETS,
    DEFAULT_CODERS,
    DEFAULT_DATA,
    DEFAULT_OUT,
    DEFAULT_RULES,
    FORMAT_VERSION,
    HIGHLIGHT_BUDGET,
    LEGACY_KEYS,
    METRIC_SPECS,
    OURS_RULE,
    PLOT_FILE,
    POLICY,
    POLICY_TEXT,
    RECORDS_FILE,
    SAVINGS_COLORS,
    STAGES,
    SUMMARY_FILE,
    Metric,
    bd_metrics,
    metric_keys,
    metric_spec,
    plot_metrics,
)
from .image import MetricCache, QualityCache, Setup, bench_image
from .machine import machine_info, torch_threads
from .plot import write_plot
from .records import _key_of, load_records, ours_label, record_key, save_records, selection_of, with_metrics
from .runner import run, run_in_memory
from .summary import budget_table, write_summary

__all__ = [
    "CLASSIC_KEYS",
    "DEFAULT_BUDGETS",
    "budget_table",
    "DEFAULT_CODERS",
    "DEFAULT_DATA",
    "DEFAULT_OUT",
    "DEFAULT_RULES",
    "FORMAT_VERSION",
    "HIGHLIGHT_BUDGET",
    "LEGACY_KEYS",
    "METRIC_SPECS",
    "Metric",
    "MetricCache",
    "OURS_RULE",
    "PLOT_FILE",
    "POLICY",
    "POLICY_TEXT",
    "PeakMemory",
    "QualityCache",
    "RECORDS_FILE",
    "SAVINGS_COLORS",
    "STAGES",
    "SUMMARY_FILE",
    "Setup",
    "_key_of",
    "aggregate",
    "bd_metrics",
    "bd_overlap",
    "bd_rate",
    "bd_table",
    "bench_image",
    "budget_verdict",
    "build_parser",
    "head_to_head",
    "load_records",
    "machine_info",
    "main",
    "metric_keys",
    "metric_spec",
    "ours_label",
    "plot_metrics",
    "record_key",
    "report_only",
    "run",
    "run_in_memory",
    "save_records",
    "selection_of",
    "shown_metrics",
    "torch_threads",
    "with_metrics",
    "write_plot",
    "write_summary",
]

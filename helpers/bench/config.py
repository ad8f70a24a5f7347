"""What the benchmark runs and measures by default: budgets, coders, rules, file names, stages, and the one list
of quality metrics (:data:`METRIC_SPECS`) that the records, tables, RD plots and BD-rates derive from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_OUT = Path("results") / "kodak"
DEFAULT_BUDGETS = (2000, 3000, 5000, 8000, 12000, 20000, 30000)
#: our variants: palette coders (zlib = the 2022 packing, arith, lzma) and the transform coder, plain ("tc") or with
#: encoder-side refinement ("tc+e1", "tc+e2": --effort 1 / 2, see helpers.refine)
DEFAULT_CODERS = ("zlib", "arith", "tc", "tc+e1")
PALETTE_CODERS = ("zlib", "arith", "lzma")
TC_VARIANTS = {"tc": 0, "tc+e1": 1, "tc+e2": 2}
DEFAULT_RULES = ("le",)
HIGHLIGHT_BUDGET = 5000
POLICY = "crop512"
POLICY_TEXT = ("crop512: center crop to a 512x512 square (Kodak 768x512 / 512x768 -> the central 512x512, "
               "no resampling); bpp = 8 * bytes / (512 * 512), headers counted")
#: --policy: crop512 (the centre 512x512 square, never resampled: smaller images are refused) or full (the whole
#: image, coded as the CLI codes it: padded to a multiple of 8, the VAE run in tiles; bpp over its own pixels)
POLICIES = {"crop512": POLICY_TEXT,
            "full": "full: the whole image, as the CLI codes it (padded to a multiple of 8 for the model, the VAE "
                    "run in tiles, no resampling); bpp = 8 * bytes / (width * height), headers counted"}
#: the quality sweep of each baseline (--sweep, on by default): every image encoded and measured at these
#: qualities, cached per image content; the RD plot and the BD-rates use the mean curve over the images at each
#: quality (the whole curve, not only the budgets every image reached). Chosen to span about 2-40 KB at 512x512.
SWEEP_QUALITIES = {"jpeg": (1, 3, 6, 10, 15, 20, 30, 40, 55, 70),
                   "webp": (0, 5, 10, 20, 30, 45, 60, 75, 85),
                   "avif": (0, 10, 20, 30, 40, 50, 60, 70, 80),
                   "jxl": (0, 5, 10, 19, 30, 45, 60, 75, 85)}


def codec_policy(policy: str) -> str:
    """The :func:`helpers.images.apply_policy` policy of a benchmark ``--policy``."""
    return {"crop512": "crop512", "full": "pad8"}[policy]
SAVINGS_COLORS = 256
OURS_RULE = "le"  # our rate control is a hard cap: the largest palette / finest step whose file is <= the budget
STAGES = ("vae_encode", "refine", "quantize8", "palette", "pack", "unpack", "denoise", "vae_decode")


def variant(name: str) -> tuple[str, str, int] | None:
    """(method, coder, effort) of one of our variants (``--coders`` entries), or None if unknown."""
    if name in PALETTE_CODERS:
        return "palette", name, 0
    if name in TC_VARIANTS:
        return "tc", "range", TC_VARIANTS[name]
    return None
RECORDS_FILE = "records.json"
PLOT_FILE = "rd_curves.png"
SUMMARY_FILE = "summary.md"
#: results of finished tasks appended as they arrive; merged into records.json every SAVE_SECONDS and at the end
#: (a run that was killed before that replays it on the next start)
JOURNAL_FILE = "records.journal.jsonl"
SAVE_SECONDS = 30.0
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Metric:
    """One quality metric as the benchmark records, tabulates, plots and BD-rates it.

    ``key``: the field of :func:`helpers.metrics.measure` (the registry key) and of every record; ``name`` /
    ``unit``: the column title (``"PSNR (dB)"``); ``higher_is_better``: the direction (the registry's; the
    tables and RD plot axes carry its arrow, ↑ or ↓); ``record_digits``: rounding in records.json;
    ``digits``: decimals in the summary (and the head-to-head tie rule: equal at these decimals is a tie);
    ``plot_rank``: position among the RD subplots (None: not plotted); ``bd_rate``: has BD-rate rows in the
    summary; ``optional``: shown in a table or plot only when some record has a value (the perceptual and
    learned metrics: records written before they existed, or where they are unavailable, lack them).
    """

    key: str
    name: str
    unit: str = ""
    higher_is_better: bool = True
    record_digits: int = 6
    digits: int = 4
    plot_rank: int | None = None
    bd_rate: bool = False
    optional: bool = False
    score: bool = True  # False: a reported measure beside the scores (no arrow, wins, BD-rate)

    @property
    def arrow(self) -> str:
        if not self.score:
            return ""
        return "↑" if self.higher_is_better else "↓"

    @property
    def label(self) -> str:
        """Column title in the summary tables: ``PSNR (dB)``, ``SSIM``."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    @property
    def column(self) -> str:
        """Column title with the direction arrow: ``PSNR (dB) ↑``, ``FLIP ↓`` (a measure that is no score: no arrow)."""
        return f"{self.label} {self.arrow}" if self.arrow else self.label

    @property
    def axis_label(self) -> str:
        """RD plot axis title: the column title and the direction in words."""
        return f"{self.column} {'higher' if self.higher_is_better else 'lower'} is better"


# The single list of metrics. Its order is the order of the fields in every record and of the columns in the
# summary tables; the RD plots follow ``plot_rank``, the BD-rate sections the order here. Everything else is
# derived from it at call time (the functions below), so adding a metric here adds its record field, table
# column, RD subplot, head-to-head column and BD-rate rows. Keys, names and directions are those of the
# registry (helpers.metrics.METRICS; a test checks they agree). PSNR, SSIM, MS-SSIM and LPIPS come first, as
# in the records written before the perceptual metrics existed (the fields of those records are unchanged).
METRIC_SPECS: tuple[Metric, ...] = (
    Metric("psnr", "PSNR", unit="dB", record_digits=4, digits=2, plot_rank=0, bd_rate=True),
    Metric("ssim", "SSIM", plot_rank=2, bd_rate=True),
    Metric("ms_ssim", "MS-SSIM", plot_rank=1, bd_rate=True),
    Metric("lpips", "LPIPS", higher_is_better=False, plot_rank=8, bd_rate=True, optional=True),
    Metric("cvvdp", "ColorVideoVDP", unit="JOD", digits=3, plot_rank=3, bd_rate=True, optional=True),
    Metric("flip", "FLIP", higher_is_better=False, plot_rank=5, bd_rate=True, optional=True),
    Metric("ssimulacra2", "SSIMULACRA 2", digits=2, plot_rank=4, bd_rate=True, optional=True),
    Metric("butteraugli", "Butteraugli", higher_is_better=False, digits=3, plot_rank=6, bd_rate=True,
           optional=True),
    Metric("butteraugli_3n", "Butteraugli 3-norm", higher_is_better=False, digits=3, plot_rank=7, bd_rate=True,
           optional=True),
    Metric("lpips_vgg", "LPIPS-VGG", higher_is_better=False, plot_rank=9, bd_rate=True, optional=True),
    Metric("dists", "DISTS", higher_is_better=False, plot_rank=10, bd_rate=True, optional=True),
    # not a quality score: decoded / original high-frequency energy (helpers.metrics.retention), shown beside the
    # scores so that a gain bought with blur is visible; no arrow, no head-to-head, no BD-rate, no RD subplot
    Metric("detail_retention", "Detail retention", record_digits=4, digits=3, optional=True, score=False),
)

CLASSIC_KEYS = ("psnr", "ssim", "ms_ssim")
"""Always measured (cheap, and every record since the first format has them)."""
LEGACY_KEYS = ("psnr", "ssim", "ms_ssim", "lpips")
"""The fields every record has had since format 1 (None where not measured); the other metrics' fields are
present only where measured."""


def metric_keys() -> tuple[str, ...]:
    """The record fields of the metrics, in record order: ``("psnr", "ssim", "ms_ssim", "lpips", "cvvdp", ...)``."""
    return tuple(m.key for m in METRIC_SPECS)


def metric_spec(key: str) -> Metric:
    """The :class:`Metric` of a record field."""
    for m in METRIC_SPECS:
        if m.key == key:
            return m
    raise KeyError(f"no metric {key!r} in METRIC_SPECS ({', '.join(metric_keys())})")


def plot_metrics() -> tuple[Metric, ...]:
    """The metrics with an RD subplot, in subplot order (PSNR, MS-SSIM, SSIM, ColorVideoVDP, SSIMULACRA 2, ...)."""
    return tuple(sorted((m for m in METRIC_SPECS if m.plot_rank is not None), key=lambda m: m.plot_rank))


def bd_metrics() -> tuple[Metric, ...]:
    """The metrics with BD-rate rows (every one today)."""
    return tuple(m for m in METRIC_SPECS if m.bd_rate)

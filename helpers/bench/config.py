"""What the benchmark runs and measures by default: budgets, coders, rules, file names, stages, and
:data:`METRIC_SPECS`, the metric registry's entries (:data:`helpers.metrics.METRICS`) that the records, tables,
RD plots and BD-rates derive from."""

from __future__ import annotations

from pathlib import Path

from ..metrics.registry import CLASSIC_KEYS as CLASSIC_KEYS  # always measured (re-exported)
from ..metrics.registry import METRICS, Metric

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kodak"
DEFAULT_OUT = Path("results") / "kodak"
DEFAULT_BUDGETS = (2000, 3000, 5000, 8000, 12000, 20000, 30000)
#: our variants: palette coders (zlib = the 2022 packing, arith, lzma) and the transform coder, plain ("tc") or with
#: encoder-side refinement ("tc+e1" .. "tc+e3": --effort 1 .. 3, see helpers.methods.tc.refine)
DEFAULT_CODERS = ("zlib", "arith", "tc", "tc+e1")
PALETTE_CODERS = ("zlib", "arith", "lzma")
TC_VARIANTS = {"tc": 0, "tc+e1": 1, "tc+e2": 2, "tc+e3": 3}
DEFAULT_RULES = ("le",)
HIGHLIGHT_BUDGET = 5000
POLICY = "crop512"
POLICY_TEXT = (
    "crop512: center crop to a 512x512 square (Kodak 768x512 / 512x768 -> the central 512x512, "
    "no resampling); bpp = 8 * bytes / (512 * 512), headers counted"
)
#: --policy: crop512 (the centre 512x512 square, never resampled: smaller images are refused) or full (the whole
#: image, coded as the CLI codes it: padded to a multiple of 8, the VAE run in tiles; bpp over its own pixels)
POLICIES = {
    "crop512": POLICY_TEXT,
    "full": "full: the whole image, as the CLI codes it (padded to a multiple of 8 for the model, the VAE "
    "run in tiles, no resampling); bpp = 8 * bytes / (width * height), headers counted",
}
#: the quality sweep of each baseline (--sweep, on by default): every image encoded and measured at these
#: qualities, cached per image content; the RD plot and the BD-rates use the mean curve over the images at each
#: quality (the whole curve, not only the budgets every image reached). Chosen to span about 2-40 KB at 512x512.
SWEEP_QUALITIES = {
    "jpeg": (1, 3, 6, 10, 15, 20, 30, 40, 55, 70),
    "webp": (0, 5, 10, 20, 30, 45, 60, 75, 85),
    "avif": (0, 10, 20, 30, 40, 50, 60, 70, 80),
    "jxl": (0, 5, 10, 19, 30, 45, 60, 75, 85),
}


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


def payload_label(method: str) -> str | None:
    """A record's ``payload``: the revision of the method's payload the encoder writes today
    (:meth:`helpers.methods.base.LatentMethod.payload_label`)."""
    from ..methods import registry

    if method in registry.ALIASES:  # the 2022 palette method's names (liq / kmeans): payloads that never changed
        return None
    return registry.get(method).payload_label()


def refine_label(method: str, effort: int) -> str | None:
    """A record's ``refine``: the method's recipe for its encoder-side refinement at ``effort``
    (:meth:`helpers.methods.base.LatentMethod.refine_label`), None at effort 0."""
    from ..methods import registry

    return registry.get(method).refine_label(effort) if effort else None


RECORDS_FILE = "records.json"
PLOT_FILE = "rd_curves.png"
SUMMARY_FILE = "summary.md"
#: results of finished tasks appended as they arrive; merged into records.json every SAVE_SECONDS and at the end
#: (a run that was killed before that replays it on the next start)
JOURNAL_FILE = "records.journal.jsonl"
SAVE_SECONDS = 30.0
FORMAT_VERSION = 1


# The single list of metrics is the registry's (helpers.metrics.METRICS): keys, names, directions, decimals, record
# rounding, RD subplots, BD-rate rows and whether a metric is optional all come from its entries, in its order
# (the order of the fields in every record and of the columns in the summary tables). Read at call time by the
# functions below, so a test can extend it.
METRIC_SPECS: tuple[Metric, ...] = tuple(METRICS.values())

LEGACY_KEYS = ("psnr", "ssim", "ms_ssim", "lpips")
"""The fields every record has had since format 1 (None where not measured); the other metrics' fields are
present only where measured."""


def metric_keys() -> tuple[str, ...]:
    """The record fields of the metrics, in record order: ``("psnr", "ssim", "ms_ssim", "lpips", "cvvdp", ...)``."""
    return tuple(m.key for m in METRIC_SPECS)


def metric_spec(key: str) -> Metric:
    """The :class:`~helpers.metrics.Metric` of a record field."""
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

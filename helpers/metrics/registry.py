"""One registry of full-reference metrics: direction, unit, library and version, settings, availability.

>>> from helpers import metrics
>>> metrics.measure(ref, test)            # every available metric for one pair
>>> metrics.metric_status()               # key -> (available, one-line reason / source)
>>> metrics.describe()                    # key -> name, direction, unit, library, settings, status

``python -m helpers.metrics --status`` prints the table of what runs here and why not;
``python -m helpers.metrics --time`` times every metric on a 512x512 Kodak pair.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from ..errors import SDCError
from . import classic, deep, perceptual, retention
from .classic import ImageLike, _pair

__all__ = [
    "CLASSIC_KEYS",
    "METRICS",
    "Metric",
    "arrow",
    "clear_cache",
    "default_keys",
    "describe",
    "get",
    "measure",
    "metric_status",
    "time_metrics",
]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class Metric:
    """A full-reference metric: ``compute(a, b, run)`` on two HxWx3 uint8 arrays returns a float (or
    None where the metric is undefined for that size); ``load()`` raises UnavailableError when it
    cannot run here.

    The same entry says how results show it (the benchmark's records, tables, RD plots and BD-rates, the demo's
    tables): ``short`` (the name in tables and sentences, default ``name``), ``label`` (the column title without
    the arrow, default ``short``: ``PSNR (dB)``), ``digits`` (decimals shown; equal at these decimals is a tie,
    :mod:`helpers.metrics.wins`), ``record_digits`` (rounding in ``records.json``), ``plot_rank`` (position
    among the RD subplots; None: not plotted), ``bd_rate`` (has BD-rate rows) and ``optional`` (shown in a
    table or plot only when some record has a value: records written before it existed, or where it is
    unavailable, lack it).
    """

    key: str
    name: str
    higher_is_better: bool
    unit: str
    perfect: float  # the score of two identical images
    library: Callable[[], str]
    settings: Callable[[], dict[str, Any]]
    load: Callable[[], Any]
    compute: Callable[[np.ndarray, np.ndarray, Any], float | None]
    uses_tool: bool = False  # runs a command-line tool (started first, runs in its own process)
    uses_torch: bool = False  # torch work: runs in a second thread (torch releases the GIL in its kernels)
    slow_on_cpu: bool = False  # a VGG16 pass per image: left out of the default set unless CUDA is available
    note: str = ""
    digits: int = 4  # decimals shown in tables; two values equal at these decimals are a tie (helpers.metrics.wins)
    short: str = ""
    label: str = ""
    record_digits: int = 6
    plot_rank: int | None = None
    bd_rate: bool = True
    optional: bool = True

    def __post_init__(self):
        if not self.short:
            object.__setattr__(self, "short", self.name)
        if not self.label:
            object.__setattr__(self, "label", self.short)

    score: bool = True  # False: a reported measure, not a quality score (no direction, never counted as a win)

    @property
    def direction(self) -> str:
        if not self.score:
            return "neither"
        return "higher" if self.higher_is_better else "lower"

    @property
    def arrow(self) -> str:
        if not self.score:
            return ""
        return "↑" if self.higher_is_better else "↓"

    @property
    def column(self) -> str:
        """Column title with the direction arrow: ``PSNR (dB) ↑``, ``FLIP ↓`` (a measure that is no score: none)."""
        return f"{self.label} {self.arrow}" if self.arrow else self.label

    @property
    def axis_label(self) -> str:
        """RD plot axis title: the column title and the direction in words."""
        return f"{self.column} {self.direction} is better"

    def __call__(self, ref: ImageLike, test: ImageLike) -> float | None:
        self.load()
        a, b = _pair(ref, test)
        return self.compute(a, b, None)

    def status(self) -> tuple[bool, str]:
        try:
            self.load()
        except SDCError as exc:
            return False, " ".join(str(exc).split())
        return True, f"available: {self.library()}"


def _ok() -> None:
    return None


def _psnr(a, b, run):
    return classic.psnr(a, b)


_SSIM_CACHE: list = []  # [(a, b, (ssim, ms_ssim))] for the pair being measured: one pass gives both


def _ssim_pair(a, b):
    if not (_SSIM_CACHE and _SSIM_CACHE[0][0] is a and _SSIM_CACHE[0][1] is b):
        _SSIM_CACHE[:] = [(a, b, classic.ssim_ms_ssim(a, b))]
    return _SSIM_CACHE[0][2]


def _butteraugli(index):
    def compute(a, b, run):
        return perceptual.butteraugli_scores(a, b, run)[index]

    return compute


def _lpips_metric(net):
    return lambda a, b, run: deep.LPIPSMetric(net)(a, b)


_CLASSIC_SSIM = {
    "window": "11x11 Gaussian, sigma 1.5",
    "K1": 0.01,
    "K2": 0.03,
    "data_range": 255,
    "channels": "per RGB channel, averaged",
    "region": "valid (window inside the image)",
}

# The one list of metrics. Its order is the order of the fields in every benchmark record and of the columns in
# every table (PSNR, SSIM, MS-SSIM and LPIPS first, as in the records written before the perceptual metrics
# existed); the RD plots follow ``plot_rank``. A new metric is one entry here: its record field, table column,
# RD subplot, head-to-head column and BD-rate rows derive from it (helpers.bench.config.METRIC_SPECS).
METRICS: dict[str, Metric] = {
    m.key: m
    for m in [
        Metric(
            "psnr",
            "PSNR",
            True,
            "dB",
            math.inf,
            lambda: f"numpy {np.__version__}",
            lambda: {"peak": 255, "over": "all RGB values"},
            _ok,
            _psnr,
            digits=2,
            label="PSNR (dB)",
            record_digits=4,
            plot_rank=0,
            optional=False,
        ),
        Metric(
            "ssim",
            "SSIM",
            True,
            "",
            1.0,
            lambda: f"helpers (scipy {_version('scipy')})",
            lambda: dict(_CLASSIC_SSIM),
            _ok,
            lambda a, b, run: _ssim_pair(a, b)[0],
            note="checked against scikit-image",
            plot_rank=2,
            optional=False,
        ),
        Metric(
            "ms_ssim",
            "MS-SSIM",
            True,
            "",
            1.0,
            lambda: f"helpers (scipy {_version('scipy')})",
            lambda: {
                **_CLASSIC_SSIM,
                "scales": 5,
                "weights": list(classic.MS_SSIM_WEIGHTS),
                "min_side": classic.MS_SSIM_MIN_SIDE,
            },
            _ok,
            lambda a, b, run: _ssim_pair(a, b)[1],
            note="checked against pytorch_msssim; None under 176 px",
            plot_rank=1,
            optional=False,
        ),
        Metric(
            "lpips",
            "LPIPS (AlexNet)",
            False,
            "distance",
            0.0,
            lambda: f"lpips {_version('lpips')} (v0.1 weights), torchvision AlexNet ImageNet backbone",
            lambda: {"net": "alex", "input": "[-1, 1], full resolution", "backbone": str(deep.checkpoint_path("alex"))},
            lambda: deep._load_lpips("alex"),
            _lpips_metric("alex"),
            uses_torch=True,
            short="LPIPS",
            plot_rank=8,
        ),
        Metric(
            "cvvdp",
            "ColorVideoVDP",
            True,
            "JOD",
            10.0,
            lambda: f"cvvdp {_version('cvvdp')}",
            perceptual.cvvdp_settings,
            perceptual._cvvdp,
            lambda a, b, run: perceptual.cvvdp_score(a, b),
            uses_torch=True,
            digits=3,
            label="ColorVideoVDP (JOD)",
            plot_rank=3,
        ),
        Metric(
            "flip",
            "FLIP",
            False,
            "mean error",
            0.0,
            lambda: f"flip-evaluator {_version('flip-evaluator')}",
            perceptual.flip_settings,
            perceptual._flip,
            lambda a, b, run: perceptual.flip_error(a, b),
            plot_rank=5,
        ),
        Metric(
            "ssimulacra2",
            "SSIMULACRA 2",
            True,
            "score",
            100.0,
            perceptual.ssimulacra2_library,
            perceptual.ssimulacra2_settings,
            perceptual.ssimulacra2_implementation,
            lambda a, b, run: perceptual.ssimulacra2_score(a, b, run),
            uses_tool=True,
            digits=2,
            plot_rank=4,
        ),
        Metric(
            "butteraugli",
            "Butteraugli",
            False,
            "distance (max-norm)",
            0.0,
            lambda: "libjxl butteraugli_main (" + perceptual._tool_version(perceptual._butteraugli_required()) + ")",
            perceptual.butteraugli_settings,
            perceptual._butteraugli_required,
            _butteraugli(0),
            uses_tool=True,
            digits=3,
            plot_rank=6,
        ),
        Metric(
            "butteraugli_3n",
            "Butteraugli 3-norm",
            False,
            "3-norm",
            0.0,
            lambda: "libjxl butteraugli_main (" + perceptual._tool_version(perceptual._butteraugli_required()) + ")",
            perceptual.butteraugli_settings,
            perceptual._butteraugli_required,
            _butteraugli(1),
            uses_tool=True,
            digits=3,
            plot_rank=7,
        ),
        Metric(
            "lpips_vgg",
            "LPIPS (VGG16)",
            False,
            "distance",
            0.0,
            lambda: f"lpips {_version('lpips')} (v0.1 weights), torchvision VGG16 ImageNet backbone",
            lambda: {"net": "vgg", "input": "[-1, 1], full resolution", "backbone": str(deep.checkpoint_path("vgg"))},
            lambda: deep._load_lpips("vgg"),
            _lpips_metric("vgg"),
            uses_torch=True,
            slow_on_cpu=True,
            short="LPIPS-VGG",
            plot_rank=9,
        ),
        Metric(
            "dists",
            "DISTS",
            False,
            "distance",
            0.0,
            lambda: (
                f"DISTS_pytorch {_version('DISTS_pytorch')} (authors' alpha/beta), torchvision VGG16 ImageNet backbone"
            ),
            lambda: {"input": "[0, 1], full resolution (no resize)", "backbone": str(deep.checkpoint_path("vgg"))},
            deep._load_dists,
            lambda a, b, run: deep.DISTSMetric()(a, b),
            uses_torch=True,
            slow_on_cpu=True,
            plot_rank=10,
        ),
        Metric(
            "detail_retention",
            "Detail retention",
            True,
            "ratio",
            1.0,
            lambda: f"helpers (numpy {np.__version__})",
            lambda: {
                "luma": "BT.601 0.299 R + 0.587 G + 0.114 B",
                "high-pass": "luma - Gaussian blur",
                "sigma_px": retention.HF_SIGMA,
                "truncate": retention.TRUNCATE,
                "border": "mirrored",
                "value": "variance of the decoded high-pass / variance of the original's",
            },
            _ok,
            lambda a, b, run: retention.detail_retention(a, b),
            digits=3,
            score=False,
            label="Detail retention",
            record_digits=4,
            plot_rank=None,
            bd_rate=False,
            note="not a quality score: 1 = the original's fine detail, < 1 smoothed away, > 1 added (noise scores "
            "high); shown beside fidelity, never ranked; checked against scipy.ndimage.gaussian_filter",
        ),
    ]
}


#: always measured (cheap, and every benchmark record since the first format has them); the quick tables' set
CLASSIC_KEYS = ("psnr", "ssim", "ms_ssim")


def get(key: str) -> Metric:
    """The registered metric ``key``; an unknown key is a one-line SDCError listing the known ones."""
    try:
        return METRICS[key]
    except KeyError:
        raise SDCError(f"unknown metric {key!r}; use one of: {', '.join(METRICS)}") from None


def default_keys() -> list[str]:
    """What :func:`measure` computes when no keys are given: every metric, except the VGG16 ones
    (``lpips_vgg``, ``dists``: 2-5 s per 512x512 pair each on 2 CPU cores) when there is no CUDA."""
    gpu = deep.device().type == "cuda"
    return [k for k, m in METRICS.items() if gpu or not m.slow_on_cpu]


def arrow(key: str) -> str:
    """``↑`` (higher is better) or ``↓`` for a metric key."""
    return get(key).arrow


def clear_cache() -> None:
    """Forget loaded models, found tools and availability (e.g. after installing a backbone or a tool)."""
    deep._MODELS.clear()
    for fn in (
        perceptual._cvvdp,
        perceptual._flip,
        perceptual._ssimulacra2_port,
        perceptual._find_tool,
        perceptual._tool_version,
    ):
        fn.cache_clear()
    _SSIM_CACHE.clear()
    _STATUS.clear()


_STATUS: dict[str, tuple[bool, str]] = {}


def metric_status(keys=None) -> dict[str, tuple[bool, str]]:
    """``key -> (available, reason)``: ``"available: <library>"`` or ``"<why not>; <how to fix>"``.
    Loads each metric's model/tables once (cached; :func:`clear_cache` forgets)."""
    out = {}
    for key in keys or METRICS:
        if key not in _STATUS:
            _STATUS[key] = get(key).status()
        out[key] = _STATUS[key]
    return out


def available(keys=None) -> list[str]:
    """Keys of the metrics that can run here, in registry order."""
    return [k for k, (ok, _) in metric_status(keys).items() if ok]


def describe(keys=None) -> dict[str, dict[str, Any]]:
    """Everything a result file should carry about each metric: name, direction, unit, library and
    version, settings, and ``status`` ``available`` or ``unavailable`` with ``reason`` (why, and the fix)."""
    out = {}
    for key, (ok, reason) in metric_status(keys).items():
        m = METRICS[key]
        entry: dict[str, Any] = {
            "name": m.name,
            "arrow": m.arrow,
            "direction": f"{m.direction} is better" if m.score else "not a score (1 = original)",
            "unit": m.unit,
            "perfect": None if math.isinf(m.perfect) else m.perfect,
            "in_default_set": key in default_keys(),
        }
        if ok:
            entry.update(status="available", library=m.library(), settings=m.settings())
        else:
            entry.update(status="unavailable", reason=reason)
        if m.note:
            entry["note"] = m.note
        out[key] = entry
    return out


def _lane(key: str) -> str:
    """Where :func:`measure` runs a metric: ``tool`` (its own process, started first), ``thread`` (a second
    thread: torch, and the numpy SSIMULACRA 2 port, release the GIL in their kernels) or ``main``."""
    m = METRICS[key]
    if key == "ssimulacra2":
        return "tool" if perceptual.ssimulacra2_implementation() == "libjxl" else "thread"
    if m.uses_tool:
        return "tool"
    return "thread" if m.uses_torch else "main"


def measure(
    ref: ImageLike, test: ImageLike, keys=None, nbytes: int | None = None, seconds: dict[str, float] | None = None
) -> dict[str, float | int | None]:
    """Every available metric of :func:`default_keys` (or those in ``keys``; ``"all"`` for every one) for one
    pair: ``key -> value`` in registry order,
    plus ``bytes`` and ``bpp`` when ``nbytes`` is given.  Unavailable metrics are left out (see
    :func:`metric_status` for why); a value is None where a metric is undefined (MS-SSIM under 176 px).
    Command-line tools start first and run on the other core while the in-process metrics compute.
    ``seconds``, if given, receives each metric's wall time."""
    a, b = _pair(ref, test)
    wanted = list(METRICS) if keys == "all" else list(keys or default_keys())
    for k in wanted:
        get(k)
    status = metric_status(wanted)
    run_keys = [k for k in wanted if status[k][0]]
    out: dict[str, float | int | None] = {}
    secs: dict[str, float] = {}

    def one(k: str, run) -> None:
        t = time.perf_counter()
        v = METRICS[k].compute(a, b, run)
        out[k] = None if v is None else float(v)
        secs[k] = time.perf_counter() - t

    lanes = {k: _lane(k) for k in run_keys}
    torch_keys = [k for k in run_keys if lanes[k] == "thread"]
    tool_keys = [k for k in run_keys if lanes[k] == "tool"]
    main_keys = [k for k in run_keys if lanes[k] == "main"]
    with contextlib.ExitStack() as stack:
        run = stack.enter_context(perceptual.start_tools(a, b, tool_keys)) if tool_keys else None
        pending = None
        if torch_keys:  # torch metrics (and the numpy port) on a second thread, the rest here, tools in their processes
            pool = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="sdcomp-metrics"))
            pending = pool.submit(lambda: [one(k, None) for k in torch_keys])
        for k in main_keys + tool_keys:
            one(k, run)
        if pending is not None:
            pending.result()
    if seconds is not None:
        seconds.update(secs)
    _SSIM_CACHE.clear()
    out = {k: out[k] for k in run_keys}
    if nbytes is not None:
        out["bytes"] = int(nbytes)
        out["bpp"] = classic.bpp(int(nbytes), a.shape[1], a.shape[0])
    return out


def time_metrics(ref: ImageLike, test: ImageLike, repeat: int = 5, keys=None) -> dict[str, dict[str, float]]:
    """Seconds per metric on one pair: ``load`` (first use: import, model/tables), ``wall`` and ``cpu``
    (this process's CPU time; a tool's own CPU time is not included) as the minimum over ``repeat``
    runs of each metric alone, and ``all`` = :func:`measure` of every available metric of the default
    set (tools in parallel), minimum over ``repeat`` runs."""
    a, b = _pair(ref, test)
    status = {}
    load = {}
    for k in keys or METRICS:
        t = time.perf_counter()
        status[k] = get(k).status()
        load[k] = time.perf_counter() - t
    out: dict[str, dict[str, float]] = {}
    for k, (ok, _reason) in status.items():
        if not ok:
            continue
        m = METRICS[k]
        walls, cpus = [], []
        for _ in range(repeat):
            _SSIM_CACHE.clear()
            t, c = time.perf_counter(), time.process_time()
            m.compute(a, b, None)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        out[k] = {"load": load[k], "wall": min(walls), "cpu": min(cpus)}
    walls, cpus = [], []
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        measure(a, b, [k for k in out if k in default_keys()])
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    out["all"] = {"load": sum(load.values()), "wall": min(walls), "cpu": min(cpus)}
    return out

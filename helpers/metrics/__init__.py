"""Full-reference image quality metrics, one registry (:mod:`helpers.metrics.registry`).

* classic (:mod:`.classic`): PSNR, SSIM, MS-SSIM (checked against scikit-image / pytorch_msssim),
  detail change per 16x16 block (the outermost ring of blocks left out, ``border``), bits per pixel;
* perceptual (:mod:`.perceptual`): ColorVideoVDP (JOD, display ``standard_fhd``), NVIDIA FLIP
  (LDR, 37.84 ppd), SSIMULACRA 2.1 (libjxl's tool, else the PyPI port), Butteraugli (libjxl's
  ``butteraugli_main``);
* learned (:mod:`.deep`): LPIPS (AlexNet, VGG16) and DISTS, when their ImageNet backbones are on
  disk (or downloadable on Colab).

:func:`measure` returns every available metric for a pair, :func:`metric_status` says which run
here and why not, :func:`describe` gives direction, unit, library, version and settings per metric.
:mod:`.wins` counts head-to-head wins, ties and losses per metric (the tie rule) and states the outcome in
one sentence. ``python -m helpers.metrics --status | --time``.
"""

from __future__ import annotations

from .classic import (
    DETAIL_BORDER,
    MS_SSIM_MIN_SIDE,
    MS_SSIM_WEIGHTS,
    ImageLike,
    bpp,
    detail_change,
    detail_summary,
    interior_blocks,
    ms_ssim,
    psnr,
    ssim,
    ssim_ms_ssim,
)
from .deep import (
    DISTSMetric,
    LPIPSMetric,
    checkpoint_path,
    dists_distance,
    dists_status,
    downloads_allowed,
    lpips_distance,
    lpips_status,
)
from .perceptual import DISPLAY, PPD, cvvdp_score, flip_error, ssimulacra2_port_score, ssimulacra2_score
from .registry import (
    CLASSIC_KEYS,
    METRICS,
    Metric,
    arrow,
    available,
    clear_cache,
    default_keys,
    describe,
    get,
    measure,
    metric_status,
    time_metrics,
)
from .wins import Tally, outcome, tally, verdict

__all__ = [
    "CLASSIC_KEYS",
    "DETAIL_BORDER",
    "DISPLAY",
    "DISTSMetric",
    "LPIPSMetric",
    "METRICS",
    "MS_SSIM_MIN_SIDE",
    "MS_SSIM_WEIGHTS",
    "Metric",
    "PPD",
    "all_metrics",
    "arrow",
    "available",
    "bpp",
    "checkpoint_path",
    "clear_cache",
    "cvvdp_score",
    "default_keys",
    "describe",
    "detail_change",
    "detail_summary",
    "dists_distance",
    "dists_status",
    "downloads_allowed",
    "flip_error",
    "get",
    "interior_blocks",
    "lpips_distance",
    "lpips_status",
    "measure",
    "metric_status",
    "ms_ssim",
    "psnr",
    "ssim",
    "ssim_ms_ssim",
    "ssimulacra2_port_score",
    "ssimulacra2_score",
    "Tally",
    "outcome",
    "tally",
    "time_metrics",
    "verdict",
]


def all_metrics(
    ref: ImageLike, test: ImageLike, nbytes: int | None = None, lpips: bool = True
) -> dict[str, float | int | None]:
    """The classic set through :func:`measure`: ``psnr``, ``ssim``, ``ms_ssim`` and ``lpips`` (plus ``bytes`` and
    ``bpp`` if ``nbytes``).

    ``lpips`` is None when LPIPS is unavailable here (see :func:`lpips_status`) or not asked for
    (``lpips=False``); ``ms_ssim`` is None for images with a side under 176 pixels.  For every
    registered metric (ColorVideoVDP, FLIP, SSIMULACRA 2, Butteraugli, DISTS, ...) use :func:`measure`.
    """
    got = measure(ref, test, keys=(*CLASSIC_KEYS, "lpips") if lpips else CLASSIC_KEYS, nbytes=nbytes)
    out: dict[str, float | int | None] = {k: got.get(k) for k in (*CLASSIC_KEYS, "lpips")}
    out.update({k: got[k] for k in ("bytes", "bpp") if k in got})
    return out

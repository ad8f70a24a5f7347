"""The RD plot: bpp against every plotted metric, means over the images, one subplot per metric (a grid of up
to four columns), each axis titled with the metric's direction."""

from __future__ import annotations

from pathlib import Path

from .aggregate import _rows_for, _series, aggregate, shown_metrics
from . import config
from .config import POLICY


def write_plot(doc: dict, path: Path, selection: dict) -> Path:
    """bpp vs every metric of :func:`~helpers.bench.config.plot_metrics` that the records carry (PSNR, MS-SSIM,
    SSIM; ColorVideoVDP, SSIMULACRA 2, FLIP, Butteraugli, LPIPS, ... where measured): means over images, one
    subplot per metric in a grid of at most four columns, the y axis titled with ↑/↓ and "higher/lower is
    better". Only budgets every image reached are plotted (a mean over a subset would not be comparable)."""
    import math

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import rd_plot, save_figure

    agg = aggregate(doc["records"], selection["images"])
    shown = shown_metrics(r for r in doc["records"] if r["image"] in set(selection["images"]))
    mets = [m for m in config.plot_metrics() if m in shown]
    ncols = min(4, len(mets))
    nrows = math.ceil(len(mets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, 4.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.ravel(), mets):
        summary = {label: _series(agg, codec, rule, selection["budgets"], metric.key)
                   for label, codec, rule in _rows_for(selection)}
        rd_plot({k: v for k, v in summary.items() if v}, metric.axis_label, ax=ax)
    for ax in axes.ravel()[len(mets):]:
        ax.axis("off")
    n = len(selection["images"])
    fig.suptitle(f"Rate-distortion, mean over {n} image{'s' * (n != 1)} ({POLICY} 512x512), budgets "
                 f"{', '.join(str(b) for b in selection['budgets'])} bytes; baselines rule "
                 f"{'/'.join(selection['rules'])}; points only where every image reached the budget", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path

"""The RD plot: bpp against every plotted metric, means over the images, one subplot per metric."""

from __future__ import annotations

from pathlib import Path

from .aggregate import _rows_for, _series, aggregate
from . import config
from .config import POLICY


def write_plot(doc: dict, path: Path, selection: dict) -> Path:
    """bpp vs every metric of :func:`~helpers.bench.config.plot_metrics` (PSNR / MS-SSIM / SSIM, and LPIPS or
    another optional metric only if measured): means over images, one subplot per metric. Only budgets every
    image reached are plotted (a mean over a subset would not be comparable)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import rd_plot, save_figure

    agg = aggregate(doc["records"], selection["images"])
    mets = [m for m in config.plot_metrics()
            if not m.optional or any(row.get(m.key) is not None for row in agg.values())]
    fig, axes = plt.subplots(1, len(mets), figsize=(5.2 * len(mets), 4.4), squeeze=False)
    for ax, metric in zip(axes[0], mets):
        summary = {label: _series(agg, codec, rule, selection["budgets"], metric.key)
                   for label, codec, rule in _rows_for(selection)}
        rd_plot({k: v for k, v in summary.items() if v}, metric.axis_label, ax=ax)
    n = len(selection["images"])
    fig.suptitle(f"Rate-distortion, mean over {n} image{'s' * (n != 1)} ({POLICY} 512x512), budgets "
                 f"{', '.join(str(b) for b in selection['budgets'])} bytes; baselines rule "
                 f"{'/'.join(selection['rules'])}; points only where every image reached the budget", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)
    return path

"""The RD plot: bpp against every plotted metric, means over the images, one subplot per metric (a grid of up
to four columns), each axis titled with the metric's direction."""

from __future__ import annotations

from pathlib import Path

from . import config
from .aggregate import _rows_for, _series, aggregate, baseline_curve, shown_metrics
from .config import POLICY


def write_plot(doc: dict, path: Path, selection: dict) -> Path:
    """bpp vs every metric of :func:`~helpers.bench.config.plot_metrics` that the records carry (PSNR, MS-SSIM,
    SSIM; ColorVideoVDP, SSIMULACRA 2, FLIP, Butteraugli, LPIPS, ... where measured): means over images, one
    subplot per metric in a grid of at most four columns, the y axis titled with ↑/↓ and "higher/lower is
    better". Only budgets every image reached are plotted (a mean over a subset would not be comparable). Where
    ``reach.json`` (:mod:`helpers.bench.reach`) lies beside ``path`` and covers every image, the decoder's reach is
    drawn as horizontal lines (:func:`helpers.plots.reach_lines`)."""
    import math

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from ..plots import rd_plot, reach_lines, save_figure
    from .reach import load_reach

    reach = load_reach(Path(path).parent)  # the decoder's reach (reach.json beside the records), drawn where present

    agg = aggregate(doc["records"], selection["images"])
    shown = shown_metrics(r for r in doc["records"] if r["image"] in set(selection["images"]))
    mets = [m for m in config.plot_metrics() if m in shown]
    ncols = min(4, len(mets))
    nrows = math.ceil(len(mets) / ncols)
    height = 4.4 * nrows + 0.7  # inches: the subplots, then the title and the legend above them
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.2 * ncols, height), squeeze=False)
    swept = False
    for ax, metric in zip(axes.ravel(), mets):
        summary = {}
        for label, codec, rule in _rows_for(selection):
            if codec in selection["ours"]:
                summary[label] = _series(agg, codec, rule, selection["budgets"], metric.key)
                continue
            pts, how = baseline_curve(doc, agg, codec, rule, selection, metric.key)
            if how == "sweep":
                swept = True
                label = codec  # one whole curve per codec, whatever the rule
            summary.setdefault(label, pts)
        rd_plot({k: v for k, v in summary.items() if v}, metric.axis_label, ax=ax)
        if reach:
            reach_lines(ax, reach, metric.key, selection["images"])
    for ax in axes.ravel()[len(mets) :]:
        ax.axis("off")
    legend: dict = {}  # one legend for the figure (per-subplot legends hide points)
    for ax in axes.ravel()[: len(mets)]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    n = len(selection["images"])
    policy = doc["meta"].get("policy_name", POLICY)
    what = f"{policy} 512x512" if policy == POLICY else policy
    if swept:
        title = (
            f"Rate-distortion, mean over {n} image{'s' * (n != 1)} ({what}); baselines: whole quality sweeps "
            f"(mean at each quality); ours: budgets {', '.join(str(b) for b in selection['budgets'])} bytes, "
            "points only where every image reached the budget"
        )
    else:
        title = (
            f"Rate-distortion, mean over {n} image{'s' * (n != 1)} ({what}), budgets "
            f"{', '.join(str(b) for b in selection['budgets'])} bytes; baselines rule "
            f"{'/'.join(selection['rules'])}; points only where every image reached the budget"
        )
    fig.suptitle(title, fontsize=10, y=1 - 0.08 / height, va="top")
    if legend:  # none when no curve has a point (e.g. every task of a budget failed)
        fig.legend(
            list(legend.values()),
            list(legend),
            loc="upper center",
            ncol=len(legend),
            fontsize=9,
            bbox_to_anchor=(0.5, 1 - 0.3 / height),
            frameon=False,
        )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.65 / height))
    save_figure(fig, path)
    plt.close(fig)
    return path

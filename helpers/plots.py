"""Figures and widgets: comparison grids, latents as pictures, difference maps, crops, a before/after slider."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from .images import as_pil


def _plt():
    import matplotlib.pyplot as plt  # imported lazily: the codec itself needs no matplotlib

    return plt


def save_figure(fig, path: str | Path | None, dpi: int = 110):
    """Save a matplotlib figure when ``path`` is given (folders created); returns the path or None."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def latent_as_rgba(q: np.ndarray, channels=(0, 1, 2, 3)) -> Image.Image:
    """An 8-bit latent (C, h, w) shown as a picture: 4 channels as RGBA (the article's figure).

    With more than 4 channels (TAEF2: 32), pick which 4 to show. Alpha is drawn opaque-ish by the caller
    if desired; here it is kept as is, like the article.
    """
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise ValueError(
            "latent_as_rgba expects an 8-bit latent; use helpers.methods.palette.quantize.quantize_8bit first"
        )
    sel = (
        q[list(channels)]
        if q.shape[0] >= 4
        else np.concatenate([q, np.full((4 - q.shape[0], *q.shape[1:]), 255, np.uint8)])
    )
    return Image.fromarray(np.ascontiguousarray(sel.transpose(1, 2, 0)), "RGBA")


def latent_channels_grid(z: np.ndarray, max_channels: int = 32, cols: int = 8):
    """Each latent channel as a grey image in a grid (for many-channel latents)."""
    plt = _plt()
    n = min(z.shape[0], max_channels)
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.3))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(z[i], cmap="gray")
            ax.set_title(f"c{i}", fontsize=7)
    fig.tight_layout()
    return fig


def show_images(images: dict[str, Image.Image], cols: int | None = None, size: float = 3.2, title: str | None = None):
    """A row (or grid) of labelled images; returns the figure."""
    plt = _plt()
    n = len(images)
    cols = cols or n
    rows = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for ax, (label, img) in zip(axes.ravel(), images.items()):
        ax.imshow(
            img if isinstance(img, Image.Image) else np.asarray(img),
            cmap=None if (isinstance(img, Image.Image) and img.mode in ("RGB", "RGBA")) else "gray",
            interpolation="nearest",
        )
        ax.set_title(label, fontsize=9)
    for ax in axes.ravel():
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


PANEL_METRICS = ("cvvdp", "ssimulacra2")
"""The perceptual metrics a comparison panel's title shows under its bytes and PSNR, where measured."""


_SHORT = {
    "psnr": ("PSNR", " dB", 1),
    "cvvdp": ("CVVDP", " JOD", 2),
    "ssimulacra2": ("SSIM2", "", 1),
    "flip": ("FLIP", "", 3),
    "butteraugli": ("BA", "", 1),
    "butteraugli_3n": ("BA3", "", 2),
    "lpips": ("LPIPS", "", 3),
    "lpips_vgg": ("LPIPS-VGG", "", 3),
    "dists": ("DISTS", "", 3),
    "ssim": ("SSIM", "", 3),
    "ms_ssim": ("MS-SSIM", "", 3),
}


def metric_line(row: dict | None, keys=PANEL_METRICS) -> str:
    """``"CVVDP 6.72 JOD ↑, SSIM2 -60.1 ↑"``: the values of ``keys`` in a metrics row, short names and
    direction arrows (for figure titles); ``""`` when none was measured."""
    from .metrics import METRICS

    parts = []
    for k in keys:
        v = (row or {}).get(k)
        if v is None or k not in METRICS:
            continue
        name, unit, nd = _SHORT.get(k, (METRICS[k].name, "", METRICS[k].digits))
        parts.append(f"{name} {v:.{nd}f}{unit} {METRICS[k].arrow}")
    return ", ".join(parts)


def comparison_figure(comparisons, rule: str = "ge", size: float = 3.0, perceptual=PANEL_METRICS):
    """Rows = images, columns = original, each baseline, ours; titles carry bytes and PSNR, and a line with
    the ``perceptual`` metrics (ColorVideoVDP JOD and SSIMULACRA 2 by default, with ↑/↓ arrows) where the
    comparison's rows have them.

    A baseline that could not reach an image's size under ``rule`` leaves an empty, labelled cell.
    """
    plt = _plt()
    if not comparisons:
        raise ValueError("no comparisons to plot")
    keys = list(dict.fromkeys(k for comp in comparisons for k, *_ in comp.panels(rule)))
    keys = [k for k in keys if k != "ours"] + ["ours"]
    fig, axes = plt.subplots(
        len(comparisons), len(keys), figsize=(len(keys) * size, len(comparisons) * size), squeeze=False
    )
    for r, comp in enumerate(comparisons):
        panels = {key: rest for key, *rest in comp.panels(rule)}
        for c, key in enumerate(keys):
            ax = axes[r, c]
            ax.axis("off")
            if key not in panels:
                ax.set_title(f"{key}\ncannot reach {comp.ours.nbytes} B", fontsize=9)
                continue
            title, img, nbytes, ps = panels[key]
            ax.imshow(img)
            if key == "original":
                title = f"{comp.name}\noriginal"
            elif ps is not None:
                title = f"{title}\n{nbytes} B, {ps:.2f} dB"
                extra = metric_line(comp.row(key, rule), perceptual) if perceptual else ""
                if extra:
                    title += "\n" + extra
            ax.set_title(title, fontsize=9 if not perceptual else 8)
    fig.tight_layout()
    return fig


def difference_map(a, b, gain: float = 4.0) -> Image.Image:
    """|a - b| per pixel (mean over RGB), amplified by ``gain``, as a greyscale image."""
    x = np.asarray(as_pil(a), np.float32)
    y = np.asarray(as_pil(b), np.float32)
    d = np.clip(np.abs(x - y).mean(2) * gain, 0, 255).astype(np.uint8)
    return Image.fromarray(d, "L")


def error_map(ref, test, window: int = 16) -> np.ndarray:
    """Mean squared error per ``window`` x ``window`` block (h/window, w/window) float array."""
    x = np.asarray(as_pil(ref), np.float32)
    y = np.asarray(as_pil(test), np.float32)
    h, w = (x.shape[0] // window) * window, (x.shape[1] // window) * window
    e = ((x[:h, :w] - y[:h, :w]) ** 2).mean(2)
    return e.reshape(h // window, window, w // window, window).mean((1, 3))


def top_corners(
    score: np.ndarray, window: int, image_size: tuple[int, int], n: int = 3, size: int = 96
) -> list[tuple[int, int]]:
    """Top-left corners of the ``n`` non-overlapping ``size`` crops centred on the highest-scoring
    ``window`` blocks of a per-block score map (e.g. :func:`error_map`, :func:`helpers.metrics.detail_change`)."""
    w, h = image_size
    picks: list[tuple[int, int]] = []
    order = np.dstack(np.unravel_index(np.argsort(score, axis=None)[::-1], score.shape))[0]
    for by, bx in order:
        cy, cx = by * window + window // 2, bx * window + window // 2
        x = int(min(max(cx - size // 2, 0), w - size))
        y = int(min(max(cy - size // 2, 0), h - size))
        if all(abs(x - px) >= size or abs(y - py) >= size for px, py in picks):
            picks.append((x, y))
        if len(picks) == n:
            break
    return picks


def worst_crops(ref, test, n: int = 3, size: int = 96) -> list[tuple[int, int]]:
    """Top-left corners of the ``n`` non-overlapping ``size`` crops with the largest error."""
    window = size // 2
    return top_corners(error_map(ref, test, window), window, as_pil(ref).size, n, size)


def invented_crops(
    ref, test, n: int = 3, size: int = 96, window: int = 16, border: int | None = None
) -> list[tuple[int, int]]:
    """Crops where ``test`` has the most high-frequency detail that ``ref`` lacks (invented texture).

    Ranked on :func:`helpers.metrics.detail_change`, whose ``border`` (default
    :data:`helpers.metrics.DETAIL_BORDER`: the outermost ring of blocks, unless the image is under 3 blocks
    wide or tall) is not measured: there the Laplacian sees the image border, e.g. Kodak's darker first row,
    which a decoder renders darker still. Such a one-pixel line scores as "invented detail" yet its crop
    shows flat sky (kodim20)."""
    from .metrics import DETAIL_BORDER, detail_change

    score = detail_change(ref, test, window, border=DETAIL_BORDER if border is None else border)
    score = np.where(np.isnan(score), -np.inf, score)
    return top_corners(score, window, as_pil(ref).size, n, size)


def detail_maps_figure(
    ref, images: dict, window: int = 16, limit: float = 4.0, size: float = 3.0, border: int | None = None
):
    """One map per image of :func:`helpers.metrics.detail_change` against ``ref``: red = invented
    high-frequency detail, blue = lost detail (log2 energy ratio, clipped at +-``limit``); the edge blocks
    that the metric leaves unmeasured (``border``, default :data:`helpers.metrics.DETAIL_BORDER`) are grey."""
    import matplotlib

    from .metrics import DETAIL_BORDER, detail_change

    plt = _plt()
    border = DETAIL_BORDER if border is None else border
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.75")
    fig, axes = plt.subplots(1, len(images), figsize=(len(images) * size, size * 1.05), squeeze=False)
    im = None
    for ax, (label, img) in zip(axes[0], images.items()):
        im = ax.imshow(detail_change(ref, img, window, border=border), cmap=cmap, vmin=-limit, vmax=limit)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    label = "log2 detail ratio (+ invented, - lost)" + ("; grey: edge blocks, not measured" if border else "")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=label)
    return fig


def corner_at(img, fx: float, fy: float, size: int) -> tuple[int, int]:
    """Top-left corner of a ``size`` box centred at (fx, fy) given as fractions of the image, kept inside it."""
    w, h = as_pil(img).size
    return (min(max(int(fx * w) - size // 2, 0), w - size), min(max(int(fy * h) - size // 2, 0), h - size))


def crops_figure(images: dict[str, Image.Image], corners: list[tuple[int, int]], size: int = 96, scale: float = 2.0):
    """Rows = crop locations, columns = images (same crop from each), upscaled with nearest neighbour."""
    plt = _plt()
    names = list(images)
    fig, axes = plt.subplots(
        len(corners), len(names), figsize=(len(names) * scale, len(corners) * scale), squeeze=False
    )
    for r, (x, y) in enumerate(corners):
        for c, name in enumerate(names):
            ax = axes[r, c]
            ax.imshow(as_pil(images[name]).crop((x, y, x + size, y + size)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=9)
            if c == 0:
                ax.set_ylabel(f"({x},{y})", fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------
# before/after slider (plain ipywidgets: works in Colab and Jupyter, no custom widget manager)
# ------------------------------------------------------------------------------------------


def compose_split(left, right, position: float, line: bool = True) -> Image.Image:
    """Left image up to ``position`` (0..1 of the width), right image after it; a 1-px white split line."""
    a = np.asarray(as_pil(left)).copy()
    b = np.asarray(as_pil(right))
    if a.shape != b.shape:
        raise ValueError(f"slider images must have the same size, got {a.shape} and {b.shape}")
    w = a.shape[1]
    split = int(round(float(np.clip(position, 0, 1)) * w))
    a[:, split:] = b[:, split:]
    if line and 0 < split < w:
        a[:, split - 1] = 255
    return Image.fromarray(a)


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    as_pil(img).save(buf, format="PNG")  # PNG, not JPEG: never add display artefacts to a codec comparison
    return buf.getvalue()


def slider_widget(
    left,
    right,
    left_label: str = "original",
    right_label: str = "decoded",
    position: float = 0.5,
    max_height: int = 640,
):
    """An ipywidgets before/after slider; returns a VBox whose ``.slider`` and ``.image`` can be driven headlessly.

    Dragging the slider recomposes the picture (left of the split = ``left``, right = ``right``) and
    sends it as PNG bytes (full resolution) to an ``ipywidgets.Image``. The slider sits above the picture and
    the picture is shown at most ``max_height`` pixels tall (scaled down, slider width to match), so that a
    768-px portrait and its slider fit on one screen of a 1000-px-tall browser window together.
    """
    import ipywidgets as widgets

    left, right = as_pil(left), as_pil(right)
    w, h = left.size
    scale = min(1.0, max_height / h)
    dw, dh = max(1, round(w * scale)), max(1, round(h * scale))
    image = widgets.Image(
        value=png_bytes(compose_split(left, right, position)),
        format="png",
        layout=widgets.Layout(width=f"{dw}px", height=f"{dh}px"),
    )
    slider = widgets.FloatSlider(
        value=position,
        min=0.0,
        max=1.0,
        step=0.005,
        readout=False,
        description="",
        layout=widgets.Layout(width=f"{dw}px"),
    )
    shown = "" if scale == 1 else f" (shown at {scale:.0%})"
    caption = widgets.HTML(f"<b>{left_label}</b> &larr; | &rarr; <b>{right_label}</b>{shown}")

    def update(change):
        image.value = png_bytes(compose_split(box.left_image, box.right_image, slider.value))

    slider.observe(update, names="value")
    box = widgets.VBox([caption, slider, image])
    box.slider, box.image, box.caption = slider, image, caption  # handles for tests and notebooks
    box.left_image, box.right_image = left, right
    box.redraw = lambda: update(None)  # after replacing left_image / right_image
    box.shown = shown
    return box


def choice_slider(
    images: dict, left: str | None = None, right: str | None = None, position: float = 0.5, max_height: int = 600
):
    """A before/after slider (:func:`slider_widget`) between any two of ``images`` (label -> picture, all the same
    size), picked with two drop-down lists above it (default: the first two). Returns the slider's VBox with the
    lists in a row on top, as ``.left_choice`` / ``.right_choice``. The picture is at most 600 px tall (the
    lists take the 40 px that :func:`slider_widget`'s 640 leaves in a 1000-px browser window)."""
    import ipywidgets as widgets

    labels = list(images)
    if len(labels) < 2:
        raise ValueError(f"choice_slider needs at least two pictures, got {len(labels)}")
    left = labels[0] if left is None else left
    right = labels[1] if right is None else right
    box = slider_widget(images[left], images[right], left, right, position, max_height)
    lc = widgets.Dropdown(options=labels, value=left, description="left")
    rc = widgets.Dropdown(options=labels, value=right, description="right")

    def pick(change):
        box.left_image, box.right_image = as_pil(images[lc.value]), as_pil(images[rc.value])
        box.caption.value = f"<b>{lc.value}</b> &larr; | &rarr; <b>{rc.value}</b>{box.shown}"
        box.redraw()

    lc.observe(pick, names="value")
    rc.observe(pick, names="value")
    box.children = (widgets.HBox([lc, rc]), *box.children)
    box.left_choice, box.right_choice = lc, rc
    return box


def rd_plot(summary: dict, metric: str, ax=None, title: str | None = None):
    """Rate-distortion curves: ``summary[codec] = [(bpp, value), ...]`` -> lines with markers."""
    plt = _plt()
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 4))
    for codec, pts in sorted(summary.items()):
        pts = sorted(p for p in pts if p[1] is not None)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", linewidth=2.2 if codec.startswith("ours") else 1.4, label=codec)
    ax.set_xlabel("bits per pixel")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def reach_lines(ax, reach: dict, metric: str, images=None) -> list[str]:
    """The decoder's reach (:mod:`helpers.bench.reach`) as horizontal reference lines on an RD subplot of
    ``metric``: the mean over ``images`` (default: all of ``reach["images"]``) of ``D(E(x))`` (the stock encoder's
    latent decoded, no quantization) and of ``D(z*)`` (the latent optimised for ``reach["steps"]`` steps). Drawn only
    where every image has the value; returns the labels drawn."""
    per = reach.get("images") or {}
    names = list(images) if images is not None else list(per)
    if not names or any(n not in per for n in names):
        return []
    drawn = []
    for point, label, style in (
        ("encoder", "decoder reach: D(E(x))", {"color": "0.45", "linestyle": "--"}),
        ("optimised", f"D(z*), {reach.get('steps', '?')} steps", {"color": "0.1", "linestyle": ":"}),
    ):
        vals = [per[n].get(point, {}).get(metric) for n in names]
        if any(v is None for v in vals):
            continue
        ax.axhline(float(np.mean(vals)), linewidth=1.3, label=label, **style)
        drawn.append(label)
    return drawn

import numpy as np
from PIL import Image

from helpers.plots import detail_maps_figure, difference_map, invented_crops, latent_as_rgba, top_corners, worst_crops


def _pair():
    rng = np.random.default_rng(0)
    ref = np.full((128, 160, 3), 100, np.uint8)
    test = ref.copy()
    test[70:90, 100:130] = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)  # invented texture here
    return Image.fromarray(ref), Image.fromarray(test)


def test_top_corners_inside_and_disjoint():
    score = np.zeros((8, 10))
    score[7, 9] = 5  # bottom-right block: crop must be clamped inside the image
    score[0, 0] = 4
    score[0, 1] = 3  # overlaps the previous pick: skipped
    corners = top_corners(score, 16, (160, 128), n=3, size=48)
    assert corners[0] == (112, 80) and corners[1] == (0, 0)
    for i, (x, y) in enumerate(corners):
        assert 0 <= x <= 160 - 48 and 0 <= y <= 128 - 48
        for px, py in corners[:i]:
            assert abs(x - px) >= 48 or abs(y - py) >= 48


def test_invented_and_worst_crops_find_the_patch():
    ref, test = _pair()
    for corners in (invented_crops(ref, test, n=1, size=32), worst_crops(ref, test, n=1, size=32)):
        x, y = corners[0]
        assert x < 130 and x + 32 > 100 and y < 90 and y + 32 > 70


def test_invented_crops_ignore_the_image_border():
    """A decoder that darkens the first and last rows (as TAEF2 does with Kodak's dark top row) "invents"
    Laplacian energy there; the crops must still go to the interior patch, not to flat border strips."""
    rng = np.random.default_rng(1)
    r = np.full((128, 160, 3), 100, np.uint8)
    t = r.copy()
    t[70:90, 100:130] = rng.integers(90, 111, (20, 30, 3), dtype=np.uint8)  # faint invented texture
    t[0] = t[-1] = t[:, 0] = 0  # dark border lines
    ref, test = Image.fromarray(r), Image.fromarray(t)
    from helpers.metrics import detail_change

    d = detail_change(ref, test, 16, border=0)
    assert d[0].max() > d[4:6, 6:8].max(), "the border line must outscore the patch in the raw map"
    assert np.isnan(detail_change(ref, test, 16)[0]).all(), "by default the edge blocks are not measured"
    corners = invented_crops(ref, test, n=2, size=32)
    x, y = corners[0]
    assert x < 130 and x + 32 > 100 and y < 90 and y + 32 > 70
    for x, y in corners:
        assert y > 0 and x > 0  # no crop hugging the top/left edge
    # border=0 ranks the edge blocks again: a dark line wins, its crop hugs an image edge
    x, y = invented_crops(ref, test, n=1, size=32, border=0)[0]
    assert x in (0, 160 - 32) or y in (0, 128 - 32)


def test_difference_map_and_latent_picture():
    ref, test = _pair()
    d = np.asarray(difference_map(ref, test, gain=1.0))
    assert d.shape == (128, 160) and d[:60].max() == 0 and d[75, 110] > 0
    q = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8)
    rgba = latent_as_rgba(q)
    assert rgba.mode == "RGBA" and rgba.size == (8, 8)
    assert rgba.getpixel((1, 0)) == tuple(int(v) for v in q[:, 0, 1])


def test_detail_maps_figure_has_one_panel_per_image():
    ref, test = _pair()
    fig = detail_maps_figure(ref, {"a": test, "b": ref})
    assert len([ax for ax in fig.axes if ax.get_title()]) == 2
    shown = fig.axes[0].images[0].get_array()
    assert shown.mask[0].all() and not shown.mask[1:-1, 1:-1].any(), "edge blocks drawn as unmeasured (grey)"
    assert "edge blocks, not measured" in fig.axes[-1].get_ylabel()


def test_comparison_figure_with_missing_baselines(taef2):
    from helpers.bench.compare import compare_image
    from helpers.codec import CodecParams
    from helpers.plots import comparison_figure

    rng = np.random.default_rng(2)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    a = compare_image(
        img,
        taef2,
        "a",
        CodecParams(method="palette", colors=16),
        codecs=["jpeg", "webp"],
        rules=("ge",),
        with_lpips=False,
    )
    b = compare_image(
        img,
        taef2,
        "b",
        CodecParams(method="palette", colors=16),
        codecs=["jpeg", "webp"],
        rules=("ge",),
        with_lpips=False,
    )
    del a.baselines["ge"]["webp"]  # as when a codec cannot reach the size for one image
    assert [k for k, *_ in a.panels("ge")] == ["original", "jpeg", "ours"]
    fig = comparison_figure([a, b], rule="ge")
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 2 * 4 and any("cannot reach" in t for t in titles)
    assert any(t.startswith("ours (taef2)\n") and t.endswith("dB") for t in titles)  # PSNR only: no perceptual line


def test_comparison_figure_perceptual_line(taef2):
    """Where the rows carry ColorVideoVDP and SSIMULACRA 2, each decoded panel gets a third title line with
    their values and direction arrows."""
    from helpers.bench.compare import compare_image
    from helpers.codec import CodecParams
    from helpers.plots import comparison_figure, metric_line

    rng = np.random.default_rng(3)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    comp = compare_image(
        img,
        taef2,
        "a",
        CodecParams(method="palette", colors=16),
        codecs=["jpeg"],
        rules=("ge",),
        metric_keys=("psnr", "cvvdp", "ssimulacra2"),
    )
    titles = [ax.get_title() for ax in comparison_figure([comp]).axes]
    ours = next(t for t in titles if t.startswith("ours"))
    jod, s2 = comp.rows[0]["cvvdp"], comp.rows[0]["ssimulacra2"]
    assert ours.splitlines()[2] == f"CVVDP {jod:.2f} JOD ↑, SSIM2 {s2:.1f} ↑"
    assert next(t for t in titles if t.startswith("jpeg")).splitlines()[2].startswith("CVVDP ")
    assert metric_line({"flip": 0.12345, "psnr": None}, ("psnr", "flip")) == "FLIP 0.123 ↓"
    assert metric_line(None) == ""

"""Detail retention (a reported measure, not a score) and the decoder's reach (helpers.bench.reach), on real Kodak
pixels and the real TAEF2 weights; the blur is checked against scipy.ndimage.gaussian_filter."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter

from helpers import bench, metrics
from helpers.metrics import retention
from tests.test_metrics_registry import _crop  # a centre crop of a Kodak image (skips without ../shared)


def _reference_retention(ref: np.ndarray, test: np.ndarray) -> float:
    """An independent computation: scipy's Gaussian filter (mirror borders, truncate 4) on BT.601 luma."""

    def energy(x):
        y = x.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return np.var(y - gaussian_filter(y, sigma=2.0))

    return energy(test) / energy(ref)


def test_blur_matches_scipy_on_odd_and_tiny_shapes():
    rng = np.random.default_rng(0)
    for shape in ((512, 512), (37, 5), (3, 40)):  # sides shorter than the kernel: mirrored more than once
        x = rng.random(shape) * 255
        assert np.abs(retention.gaussian_blur(x) - gaussian_filter(x, 2.0)).max() < 1e-9, shape


def test_retention_identity_blur_noise_against_the_reference():
    a = _crop(size=256)
    assert retention.detail_retention(a, a.copy()) == 1.0  # exactly: the same computation on both
    blurred = np.asarray(Image.fromarray(a).filter(__import__("PIL.ImageFilter").ImageFilter.GaussianBlur(1.5)))
    rng = np.random.default_rng(1)
    noisy = np.clip(a.astype(np.int16) + rng.normal(0, 12, a.shape).round().astype(np.int16), 0, 255).astype(np.uint8)
    r_blur, r_noise = retention.detail_retention(a, blurred), retention.detail_retention(a, noisy)
    assert r_blur < 0.5 and r_noise > 1.0  # blur loses most of the fine detail; noise "adds" some
    assert r_blur == pytest.approx(_reference_retention(a, blurred), rel=1e-9)
    assert r_noise == pytest.approx(_reference_retention(a, noisy), rel=1e-9)
    flat = np.full((64, 64, 3), 128, np.uint8)
    assert retention.detail_retention(flat, noisy[:64, :64]) is None  # no detail to keep: undefined


def test_registry_marks_it_as_no_score_and_never_a_win():
    m = metrics.get("detail_retention")
    assert not m.score and m.arrow == "" and m.direction == "neither" and m.perfect == 1.0
    assert "detail_retention" in metrics.default_keys()
    a = _crop(size=256)
    assert metrics.measure(a, a.copy(), ["psnr", "detail_retention"])["detail_retention"] == 1.0
    assert metrics.outcome("detail_retention", 1.2, 0.8) is None
    t = metrics.tally("detail_retention", [(1.2, 0.8), (0.5, 0.9)])
    assert t.n == 0 and t.cell() == "n/a"
    spec = bench.metric_spec("detail_retention")
    assert spec.column == "Detail retention" and not spec.bd_rate and spec.plot_rank is None


def _rec(image, codec, kind, psnr, detail):
    return {
        "image": image,
        "codec": codec,
        "rule": "le",
        "budget": 5000,
        "kind": kind,
        "bytes": 4900,
        "bpp": 0.1495,
        "psnr": psnr,
        "ssim": 0.7,
        "ms_ssim": 0.9,
        "lpips": None,
        "detail_retention": detail,
    }


def test_summary_shows_the_mean_beside_fidelity_but_counts_no_wins(tmp_path):
    from helpers.bench.aggregate import aggregate, head_to_head
    from helpers.bench.summary import budget_table

    recs = [
        _rec("a", "tc", "ours", 25.0, 0.9),
        _rec("b", "tc", "ours", 26.0, 0.8),
        _rec("a", "avif", "baseline", 27.0, 0.3),
        _rec("b", "avif", "baseline", 28.0, 0.5),
    ]
    sel = {"images": ["a", "b"], "budgets": [5000], "codecs": ["avif"], "rules": ["le"], "ours": ["tc"]}
    agg = aggregate(recs, sel["images"])
    assert agg[("tc", "le", 5000)]["detail_retention"] == pytest.approx(0.85)
    assert agg[("avif", "le", 5000)]["detail_retention"] == pytest.approx(0.4)
    table = budget_table({"records": recs, "meta": {}}, sel, 5000)
    header = table.splitlines()[0]
    assert "PSNR (dB) ↑" in header and header.rstrip(" |").endswith("Detail retention")
    assert "| 0.850 |" in table and "| 0.400 |" in table
    (row,) = [r for r in head_to_head({"records": recs}, sel, 5000) if r["baseline"] == "avif"]
    assert "detail_retention" not in row["tallies"] and row["tallies"]["psnr"].losses == 2


# ----------------------------------------------------------------------------------------------
# the decoder's reach
# ----------------------------------------------------------------------------------------------


def test_reach_image_optimised_latent_beats_the_encoder(taef2):
    from helpers.bench.reach import reach_image

    a = _crop("kodim04", 128)
    out = reach_image(taef2, a, steps=4, lr=0.01, keys=["psnr", "detail_retention"])
    enc, opt, curve = out["encoder"], out["optimised"], out["psnr_curve"]
    assert len(curve) == 5 and opt["psnr"] > enc["psnr"] + 0.3
    # the curve is measured on the float decoder output, the metrics on the 8-bit picture: within rounding
    assert curve[0] == pytest.approx(enc["psnr"], abs=0.15) and curve[-1] == pytest.approx(opt["psnr"], abs=0.15)
    assert 0.3 < enc["detail_retention"] < 1.5 and out["seconds"]["per_step"] > 0


def test_reach_run_caches_per_image_and_respects_the_time_budget(tmp_path, monkeypatch):
    from helpers.bench import reach

    data = tmp_path / "imgs"
    data.mkdir()
    for name in ("kodim04", "kodim23"):
        Image.fromarray(_crop(name, 512)).save(data / f"{name}.png")
    monkeypatch.setenv("SDCOMP_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_encoder(backend, ref, keys):
        calls.append("enc")
        return None, {
            "pixels_sha1": reach._digest(ref),
            "encoder": {"psnr": float(ref.mean())},
            "seconds": {"encode": 0.1, "decode": 0.1},
        }

    def fake_reach(backend, ref, steps, lr, keys, progress=False, base=None):
        calls.append("opt")
        e = json.loads(json.dumps(base))
        e["optimised"] = {"psnr": e["encoder"]["psnr"] + steps}
        e["seconds"].update(optimise=1.0, per_step=1.0 / steps)
        return e

    monkeypatch.setattr(reach, "encoder_point", fake_encoder)
    monkeypatch.setattr(reach, "reach_image", fake_reach)
    out = tmp_path / "out"
    doc = reach.run(data, out, steps=2, minutes=0, progress=False)  # no time for D(z*): D(E(x)) of every image
    assert calls == ["enc", "enc"] and not doc["complete"] and doc["missing"] == ["kodim04", "kodim23"]
    assert doc["mean"]["n"] == {"encoder": 2, "optimised": 0} and doc["mean"]["optimised"] == {}
    doc = reach.run(data, out, steps=2, progress=False)
    assert calls == ["enc", "enc", "opt", "opt"] and doc["complete"] and doc["steps"] == 2  # D(E(x)) from the cache
    saved = json.loads((out / reach.REACH_FILE).read_text())
    enc = [e["encoder"]["psnr"] for e in saved["images"].values()]
    assert saved["mean"]["encoder"]["psnr"] == pytest.approx(np.mean(enc), abs=1e-6)
    assert saved["mean"]["optimised"]["psnr"] == pytest.approx(np.mean(enc) + 2, abs=1e-6)
    reach.run(data, out, steps=2, progress=False)
    assert len(calls) == 4  # everything cached
    for f in (tmp_path / "cache" / "bench_reach").glob("*.json"):
        f.unlink()
    reach.run(data, out, steps=2, progress=False)
    assert len(calls) == 4  # the committed reach.json alone is enough to resume
    reach.run(data, out, steps=3, progress=False)  # other settings: nothing of the file is reused
    assert calls[4:] == ["enc", "enc", "opt", "opt"]  # (the cache is gone: D(E(x)) measured again too)


def test_reach_lines_on_the_rd_plot(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpers.plots import reach_lines

    reach = {
        "steps": 20,
        "images": {
            "a": {"encoder": {"psnr": 30.0}, "optimised": {"psnr": 34.0}},
            "b": {"encoder": {"psnr": 28.0}, "optimised": {"psnr": 32.0}},
        },
    }
    fig, ax = plt.subplots()
    assert reach_lines(ax, reach, "psnr") == ["decoder reach: D(E(x))", "D(z*), 20 steps"]
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()) == [29.0, 33.0]
    assert reach_lines(ax, reach, "psnr", ["a", "c"]) == []  # an image without reach: no line (not comparable)
    assert reach_lines(ax, reach, "cvvdp") == []
    plt.close(fig)


def test_choice_slider_swaps_the_pictures():
    from helpers.plots import choice_slider, compose_split, png_bytes

    pics = {
        name: Image.new("RGB", (64, 48), color)
        for name, color in (
            ("original", (0, 0, 0)),
            ("2022", (255, 0, 0)),
            ("default", (0, 255, 0)),
            ("avif", (0, 0, 255)),
        )
    }
    box = choice_slider(pics, "original", "2022")
    assert box.image.value == png_bytes(compose_split(pics["original"], pics["2022"], 0.5))
    box.right_choice.value = "avif"
    box.left_choice.value = "default"
    assert box.image.value == png_bytes(compose_split(pics["default"], pics["avif"], 0.5))
    assert "default" in box.caption.value and "avif" in box.caption.value
    box.slider.value = 0.25
    assert box.image.value == png_bytes(compose_split(pics["default"], pics["avif"], 0.25))
    assert len(box.children) == 4 and box.children[2] is box.slider and box.children[3] is box.image

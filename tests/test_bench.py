"""The rate-distortion benchmark (the helpers/bench/ package): BD-rate maths, the metric list, the committed
results reproduced from their records, and a small real run on Kodak + TAEF2."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import bench
from helpers.bench import config

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "results" / "kodak"

# ----------------------------------------------------------------------------------------------
# BD-rate (no data needed)
# ----------------------------------------------------------------------------------------------


def test_bd_rate_exact_scaling_is_minus_ten_percent():
    # Hand-computed: if the test codec reaches every quality at exactly 0.9x the reference rate, the mean
    # log-rate difference is log(0.9) everywhere, so BD-rate = (0.9 - 1) * 100 = -10 %.
    rates = [0.10, 0.20, 0.40, 0.80]
    psnr = [28.0, 30.5, 33.0, 35.0]
    assert bench.bd_rate(rates, psnr, [0.9 * r for r in rates], psnr) == pytest.approx(-10.0, abs=1e-9)
    # and the reverse direction: 1/0.9 = +11.11 %
    assert bench.bd_rate([0.9 * r for r in rates], psnr, rates, psnr) == pytest.approx(100 / 9, abs=1e-9)


def test_bd_rate_hand_computed_linear_case():
    # Reference: log R = D / 10 (a straight line, so the cubic fit is exact); test: log R = D / 10 + 0.2 for
    # D in [30, 36], reference measured on [28, 34]. Overlap [30, 34], mean difference 0.2 nats:
    # BD-rate = exp(0.2) - 1 = +22.14 %.
    d_ref = [28.0, 30.0, 32.0, 34.0]
    d_test = [30.0, 32.0, 34.0, 36.0]
    r_ref = [math.exp(d / 10) for d in d_ref]
    r_test = [math.exp(d / 10 + 0.2) for d in d_test]
    assert bench.bd_overlap(d_ref, d_test) == (30.0, 34.0)
    assert bench.bd_rate(r_ref, d_ref, r_test, d_test) == pytest.approx((math.exp(0.2) - 1) * 100, abs=1e-6)


def test_bd_rate_no_overlap_and_too_few_points():
    assert bench.bd_rate([0.1, 0.2, 0.4], [20.0, 21.0, 22.0], [0.1, 0.2, 0.4], [30.0, 31.0, 32.0]) is None
    assert bench.bd_overlap([20.0, 22.0], [30.0, 32.0]) is None
    assert bench.bd_rate([0.1], [20.0], [0.1, 0.2], [19.0, 21.0]) is None
    # unsorted input and duplicate metric values are fine
    r = [0.8, 0.1, 0.4, 0.2, 0.2]
    d = [35.0, 28.0, 33.0, 30.5, 30.5]
    assert bench.bd_rate(r, d, [0.5 * x for x in r], d) == pytest.approx(-50.0, abs=1e-9)


def test_bd_rate_does_not_depend_on_the_metric_direction():
    # A lower-is-better metric (LPIPS-like) that is an affine function of a higher-is-better one gives the
    # same BD-rate: the fit and the mean over the shared interval do not care about the sign or scale.
    r_ref, d_ref = [0.1, 0.2, 0.4, 0.8], [0.80, 0.86, 0.91, 0.94]
    r_test, d_test = [0.12, 0.19, 0.5, 0.7], [0.81, 0.85, 0.92, 0.93]
    up = bench.bd_rate(r_ref, d_ref, r_test, d_test)
    down = bench.bd_rate(r_ref, [1 - v for v in d_ref], r_test, [1 - v for v in d_test])
    assert up is not None and abs(up) > 1
    assert down == pytest.approx(up, abs=1e-6)


def test_record_key_and_labels():
    assert bench.record_key("kodim01", "jpeg", 5000, "le") == "kodim01|jpeg|5000|le"
    assert bench.ours_label("taef2", "arith") == "ours:taef2/arith"
    assert bench.ours_label("sd", "zlib", denoise=True) == "ours:sd/zlib+denoise"


def test_peak_memory_sees_an_allocation():
    with bench.PeakMemory() as pm:
        a = np.ones(40 * 2 ** 20 // 8)  # 40 MiB, touched
        a += 1
    del a
    assert pm.delta_mb >= 30
    assert pm.peak_mb >= pm.delta_mb


def test_quality_cache_matches_match_budget():
    from PIL import Image

    from helpers import baselines

    rng = np.random.default_rng(0)
    img = Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8))
    cache = bench.QualityCache(img, "jpeg")
    for budget in (1500, 3000):
        for rule in ("le", "ge"):
            try:
                ref = baselines.match_budget(img, "jpeg", budget, rule)
            except baselines.BudgetError:
                with pytest.raises(baselines.BudgetError):
                    cache.match(budget, rule)
                continue
            assert cache.match(budget, rule) == ref.quality
    n = len(cache.data)
    cache.match(3000, "le")
    assert len(cache.data) == n  # shared encodes: nothing re-encoded


# ----------------------------------------------------------------------------------------------
# the committed results and the metric list
# ----------------------------------------------------------------------------------------------

def test_metric_list_is_the_single_source():
    keys = bench.metric_keys()
    assert keys == ("psnr", "ssim", "ms_ssim", "lpips")  # record field order (records.json unchanged)
    assert [m.key for m in bench.plot_metrics()] == ["psnr", "ms_ssim", "ssim", "lpips"]
    assert [m.key for m in bench.bd_metrics()] == ["psnr", "ms_ssim"]
    assert bench.metric_spec("lpips").axis_label == "LPIPS (lower is better)"
    assert bench.metric_spec("psnr").label == "PSNR (dB)"
    with pytest.raises(KeyError, match="no metric 'flip'"):
        bench.metric_spec("flip")
    from helpers.bench.records import _metric_fields

    fields = _metric_fields({"bytes": 5000, "bpp": 0.15258789, "psnr": 21.123456, "ssim": 0.61234567,
                             "ms_ssim": 0.7512345678, "lpips": None})
    assert list(fields) == ["bytes", "bpp", *keys]
    assert fields["psnr"] == 21.1235 and fields["ssim"] == 0.612346 and fields["lpips"] is None


def _committed_copy(tmp_path) -> Path:
    if not (COMMITTED / bench.RECORDS_FILE).is_file():
        pytest.skip("results/kodak/records.json is not committed here")
    out = tmp_path / "kodak"
    out.mkdir()
    shutil.copy(COMMITTED / bench.RECORDS_FILE, out / bench.RECORDS_FILE)
    return out


def test_committed_results_are_reproduced_from_their_records(tmp_path, capsys):
    """``--report-only`` on a copy of results/kodak rewrites exactly the committed summary.md, and the same plot."""
    out = _committed_copy(tmp_path)
    doc = bench.load_records(out / bench.RECORDS_FILE)
    assert doc["format"] == bench.FORMAT_VERSION and len(doc["records"]) > 100
    assert bench.main(["--report-only", "--out", str(out)]) == 0
    assert f"wrote {out / bench.PLOT_FILE}" in capsys.readouterr().out
    assert (out / bench.SUMMARY_FILE).read_text() == (COMMITTED / bench.SUMMARY_FILE).read_text()
    with Image.open(out / bench.PLOT_FILE) as a, Image.open(COMMITTED / bench.PLOT_FILE) as b:
        assert a.size == b.size
        diff = np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16))
    assert diff.mean() < 0.5, "the RD plot differs from the committed one"  # font rendering may differ a little


def test_a_new_metric_in_the_list_reaches_records_tables_plots_and_bd_rates(tmp_path, monkeypatch):
    """What the next metric needs: one entry in METRIC_SPECS. A lower-is-better 'flip' = 1 - MS-SSIM gets its
    table column, RD subplot and BD-rate columns, and (BD-rate being direction-free) MS-SSIM's BD-rates."""
    out = _committed_copy(tmp_path)
    doc = bench.load_records(out / bench.RECORDS_FILE)
    for r in doc["records"]:
        r["flip"] = None if r.get("ms_ssim") is None else 1 - r["ms_ssim"]
    selection = bench.selection_of(doc)
    before = bench.write_plot(doc, tmp_path / "before.png", selection)
    flip = bench.Metric("flip", "FLIP", higher_is_better=False, plot_rank=9, bd_rate=True)
    monkeypatch.setattr(config, "METRIC_SPECS", (*config.METRIC_SPECS, flip))
    from helpers.bench.records import _metric_fields

    assert list(_metric_fields({"bytes": 1, "bpp": 1.0, "flip": 0.25}))[-1] == "flip"
    md = bench.write_summary(doc, tmp_path / "summary.md", selection).read_text()
    assert "| MS-SSIM | FLIP |" in md and "FLIP, mean curves | FLIP, per image |" in md
    rows = bench.bd_table(doc, selection)
    assert any(row["flip_per_image"] for row in rows)  # the committed mean curves never overlap; images do
    for row in rows:
        if row["ms_ssim"] is None:
            assert row["flip"] is None
        else:
            assert row["flip"] == pytest.approx(row["ms_ssim"], abs=1e-6)
        assert row["flip_per_image"] == pytest.approx(row["ms_ssim_per_image"], abs=1e-6)
    after = bench.write_plot(doc, tmp_path / "after.png", selection)
    with Image.open(before) as a, Image.open(after) as b:
        assert b.size[0] > a.size[0] * 1.15, "no subplot was added for the new metric"  # 3 -> 4 subplots


# ----------------------------------------------------------------------------------------------
# small real run: 3 Kodak images, 2 budgets, JPEG + WebP, TAEF2 with every coder
# ----------------------------------------------------------------------------------------------

BUDGETS = (3000, 8000)
CODECS = ("jpeg", "webp")
IMAGES = ("kodim03", "kodim07", "kodim23")


@pytest.fixture(scope="module")
def small_run(kodak_dir, tmp_path_factory):
    from helpers import entropy

    out = tmp_path_factory.mktemp("bench")
    coders = [c for c in ("zlib", "arith") if c in getattr(entropy, "CODERS", {})]
    argv = ["--data", str(kodak_dir), "--images", *IMAGES, "--budgets", *map(str, BUDGETS),
            "--codecs", *CODECS, "--coders", *coders, "--model", "taef2", "--device", "cpu",
            "--out", str(out), "--no-progress", "--jobs", "1",
            # small mode: palettes up to 64 colours (the 8000-byte files are then the 64-colour files of the
            # coder-savings section, decoded once) and identical_to_zlib checked on the unpacked latents in
            # the budget runs (the coder-savings section still compares decoded pixels)
            "--max-colors", "64", "--verify", "latents"]
    t0 = time.perf_counter()
    assert bench.main(argv) == 0
    first = time.perf_counter() - t0
    return {"out": out, "argv": argv, "coders": coders, "seconds": first,
            "doc": json.loads((out / bench.RECORDS_FILE).read_text())}


def test_small_run_records(small_run):
    doc, coders = small_run["doc"], small_run["coders"]
    recs = doc["records"]
    labels = [bench.ours_label("taef2", c) for c in coders]
    assert len(recs) == len(IMAGES) * len(BUDGETS) * (len(CODECS) + len(coders))
    keys = {bench.record_key(r["image"], r["codec"], r["budget"], r["rule"]) for r in recs}
    assert len(keys) == len(recs)  # one record per (image, codec, budget, rule)
    for r in recs:
        assert r["image"] in IMAGES and r["budget"] in BUDGETS
        assert r["codec"] in CODECS + tuple(labels)
        for k in ("bytes", "bpp", "setting", "psnr", "ssim", "ms_ssim", "lpips", "rule"):
            assert k in r, (k, r)
        if r["bytes"] is None:  # a baseline that cannot go down to the budget (rule le)
            assert r["kind"] == "baseline" and r["unreachable"]
            continue
        assert r["bpp"] == pytest.approx(8 * r["bytes"] / (512 * 512), abs=1e-6)
        assert r["width"] == r["height"] == 512
        assert r["rule"] == "le" and r["bytes"] <= r["budget"]
        assert 10 < r["psnr"] < 60 and 0 < r["ssim"] <= 1 and 0 < r["ms_ssim"] <= 1
        if r["lpips"] is None:
            assert doc["meta"]["lpips"].startswith("unavailable")
        if r["kind"] == "ours":
            assert set(r["seconds"]) == set(bench.STAGES)
            assert r["seconds"]["vae_encode"] > 0 and r["seconds"]["vae_decode"] > 0
            assert r["peak_mem_mb"] > 0 and r["colors"] >= 2
            assert r["identical_to_zlib"] is True
            if r["coder"] != "zlib":
                assert r["identical_check"] == "latents"
        else:
            assert isinstance(r["quality"], int) and r["setting"] == f"q={r['quality']}"
    ours = [r for r in recs if r["kind"] == "ours"]
    assert {r["codec"] for r in ours} == set(labels)


def test_small_run_coder_savings(small_run):
    doc, coders = small_run["doc"], small_run["coders"]
    if len(coders) < 2:
        pytest.skip("only the zlib coder exists in helpers.entropy here")
    sav = doc["coder_savings"]
    assert sorted(s["image"] for s in sav) == sorted(IMAGES)
    for s in sav:
        assert s["colors_requested"] == 64 and set(s["bytes"]) == set(coders)
        for c in coders:
            if c != "zlib":
                assert s["identical_to_zlib"][c] is True
                assert s["saved_pct"][c] == pytest.approx(100 * (1 - s["bytes"][c] / s["bytes"]["zlib"]), abs=1e-3)


def test_small_run_outputs(small_run):
    out = small_run["out"]
    png = (out / bench.PLOT_FILE).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    md = (out / bench.SUMMARY_FILE).read_text()
    assert "crop512" in md and "BD-rate" in md and "### 3000 bytes" in md and "### 8000 bytes" in md
    assert "python -m helpers.bench" in md and "vae_decode" in md
    for codec in CODECS:
        assert f"| {codec} |" in md


def test_small_run_resumes(small_run):
    out, argv = small_run["out"], small_run["argv"]
    before = (out / bench.RECORDS_FILE).read_text()
    t0 = time.perf_counter()
    assert bench.main(argv) == 0
    again = time.perf_counter() - t0
    doc = json.loads((out / bench.RECORDS_FILE).read_text())
    assert len(doc["records"]) == len(json.loads(before)["records"])
    assert doc["meta"]["runs"][-1]["new_records"] == 0
    assert again < max(15.0, small_run["seconds"] / 3)
    # deleted records are recomputed, and only those (two images: through the worker-process pool)
    gone = {("kodim07", "webp", 8000), ("kodim23", "jpeg", 3000)}
    doc["records"] = [r for r in doc["records"] if (r["image"], r["codec"], r["budget"]) not in gone]
    (out / bench.RECORDS_FILE).write_text(json.dumps(doc))
    parallel = list(argv)
    parallel[parallel.index("--jobs") + 1] = "2"
    assert bench.main(parallel) == 0
    doc2 = json.loads((out / bench.RECORDS_FILE).read_text())
    assert doc2["meta"]["runs"][-1]["new_records"] == 2 and doc2["meta"]["runs"][-1]["jobs"] == 2
    old = {bench._key_of(r): r for r in json.loads(before)["records"]}
    new = {bench._key_of(r): r for r in doc2["records"]}
    assert new.keys() == old.keys()
    for image, codec, budget in gone:  # same encoder, same choice
        k = bench.record_key(image, codec, budget, "le")
        assert (new[k]["bytes"], new[k]["quality"]) == (old[k]["bytes"], old[k]["quality"])


def test_small_run_report_only(small_run, capsys):
    out = small_run["out"]
    (out / bench.SUMMARY_FILE).unlink()
    assert bench.main(["--report-only", "--out", str(out)]) == 0
    assert "BD-rate" in (out / bench.SUMMARY_FILE).read_text()


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_sd_backend_with_denoise_variant(kodak_dir, tiny_sd_dir, tmp_path):
    """A UNet backend (tiny random SD, same loading code as SD v1.4) gets the +denoise variant; TAEF2 never."""
    out = tmp_path / "sd"
    argv = ["--data", str(kodak_dir), "--images", "kodim23", "--budgets", "8000", "--codecs", "jpeg",
            "--coders", "zlib", "--model", str(tiny_sd_dir), "--denoise", "--device", "cpu", "--out", str(out),
            "--no-progress", "--jobs", "1"]
    assert bench.main(argv) == 0
    doc = json.loads((out / bench.RECORDS_FILE).read_text())
    ours = {r["codec"]: r for r in doc["records"] if r["kind"] == "ours"}
    assert set(ours) == {"ours:sd/zlib", "ours:sd/zlib+denoise"}
    for label, r in ours.items():
        assert r["bytes"] <= 8000 and r["setting"].startswith("liq ")
        assert (r["seconds"]["denoise"] > 0) == label.endswith("+denoise")
    assert doc["coder_savings"] == []  # one coder: nothing to compare

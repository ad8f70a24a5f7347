"""The rate-distortion benchmark (the helpers/bench/ package): BD-rate maths, the metric list, the committed
results reproduced from their records, and a small real run on Kodak + TAEF2."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import bench, metrics
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
        a = np.ones(40 * 2**20 // 8)  # 40 MiB, touched
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
    assert keys[:4] == ("psnr", "ssim", "ms_ssim", "lpips")  # the fields of every record since format 1, first
    assert tuple(metrics.METRICS.values()) == bench.METRIC_SPECS, "the benchmark's list is the registry, in order"
    assert bench.Metric is metrics.Metric and bench.CLASSIC_KEYS is metrics.CLASSIC_KEYS
    assert [m.key for m in bench.METRIC_SPECS if not m.score] == ["detail_retention"]
    assert [m.key for m in bench.plot_metrics()][:5] == ["psnr", "ms_ssim", "ssim", "cvvdp", "ssimulacra2"]
    assert [m.key for m in bench.bd_metrics()] == [k for k in keys if k != "detail_retention"]  # the scores
    assert bench.metric_spec("flip").axis_label == "FLIP ↓ lower is better"
    assert bench.metric_spec("psnr").axis_label == "PSNR (dB) ↑ higher is better"
    assert bench.metric_spec("cvvdp").column == "ColorVideoVDP (JOD) ↑"
    with pytest.raises(KeyError, match="no metric 'vmaf'"):
        bench.metric_spec("vmaf")
    from helpers.bench.records import _metric_fields

    # legacy fields always (None where not measured), the others only where measured, in METRIC_SPECS order
    fields = _metric_fields(
        {
            "bytes": 5000,
            "bpp": 0.15258789,
            "psnr": 21.123456,
            "ssim": 0.61234567,
            "ms_ssim": 0.7512345678,
            "flip": 0.3333333333,
            "cvvdp": 6.5,
        }
    )
    assert list(fields) == ["bytes", "bpp", "psnr", "ssim", "ms_ssim", "lpips", "cvvdp", "flip"]
    assert fields["psnr"] == 21.1235 and fields["ssim"] == 0.612346 and fields["lpips"] is None
    assert fields["flip"] == 0.333333
    old = {
        "image": "a",
        "bytes": 1,
        "bpp": 0.5,
        "psnr": 20.0,
        "ssim": 0.5,
        "ms_ssim": 0.6,
        "lpips": None,
        "colors": 4,
        "seconds": {},
    }
    merged = bench.with_metrics(old, {"flip": 0.2, "cvvdp": 6.0})
    assert list(merged) == [
        "image",
        "bytes",
        "bpp",
        "psnr",
        "ssim",
        "ms_ssim",
        "lpips",
        "cvvdp",
        "flip",
        "colors",
        "seconds",
    ]


def _doc(values: dict, budget: int = 5000) -> tuple[dict, dict]:
    """A results document from ``values[(image, codec)] = {metric: value}`` (None = did not fit)."""
    recs = []
    for (image, codec), v in values.items():
        kind = "ours" if codec.startswith("ours") else "baseline"
        recs.append(
            {
                "image": image,
                "codec": codec,
                "kind": kind,
                "budget": budget,
                "rule": "le",
                "bytes": None if v is None else 4000,
                "bpp": None if v is None else 0.12,
                **(v or {}),
            }
        )
    images = sorted({i for i, _ in values})
    selection = {
        "images": images,
        "budgets": [budget],
        "codecs": sorted({c for _, c in values if not c.startswith("ours")}),
        "rules": ["le"],
        "ours": sorted({c for _, c in values if c.startswith("ours")}),
    }
    return {"format": 1, "meta": {}, "records": recs, "coder_savings": []}, selection


def test_head_to_head_counts_ties_and_the_verdict(tmp_path):
    """Hand-made records: wins in each metric's own direction, ties at the summary's decimals, images only
    one codec fits left out, and the sentence names where ours wins and where it loses."""
    vals = {
        ("a", "ours:t/x"): {"psnr": 20.004, "ssim": 0.5, "ms_ssim": 0.8, "flip": 0.20, "cvvdp": 6.0},
        ("b", "ours:t/x"): {"psnr": 25.0, "ssim": 0.6, "ms_ssim": 0.8, "flip": 0.30, "cvvdp": 6.5},
        ("c", "ours:t/x"): {"psnr": 19.0, "ssim": 0.4, "ms_ssim": 0.7, "flip": 0.25, "cvvdp": 5.0},
        ("d", "ours:t/x"): {"psnr": 19.0, "ssim": 0.4, "ms_ssim": 0.7, "flip": 0.25, "cvvdp": 5.0},
        ("a", "jpeg"): {"psnr": 20.0, "ssim": 0.6, "ms_ssim": 0.9, "flip": 0.30, "cvvdp": 6.5},  # psnr: tie
        ("b", "jpeg"): {"psnr": 24.0, "ssim": 0.7, "ms_ssim": 0.9, "flip": 0.35, "cvvdp": 7.0},
        ("c", "jpeg"): {"psnr": 20.0, "ssim": 0.5, "ms_ssim": 0.8, "flip": 0.40, "cvvdp": 6.0},
        ("d", "jpeg"): None,  # jpeg cannot fit d: not counted
        ("a", "avif"): None,
        ("b", "avif"): None,
        ("c", "avif"): None,
        ("d", "avif"): None,
    }
    doc, sel = _doc(vals)
    rows = {r["baseline"]: r for r in bench.head_to_head(doc, sel, 5000)}
    jpeg = rows["jpeg"]
    assert jpeg["n"] == 3 and jpeg["of"] == 4 and jpeg["images"] == ["a", "b", "c"]
    t = jpeg["tallies"]
    assert (t["psnr"].wins, t["psnr"].ties, t["psnr"].losses) == (1, 1, 1)  # 20.004 vs 20.0: equal at 0.01 dB
    assert t["psnr"].cell() == "1/3, 1 tie" and t["psnr"].verdict == "split"
    assert (t["flip"].wins, t["flip"].losses) == (3, 0) and t["flip"].verdict == "wins"  # lower is better
    assert t["ssim"].cell() == "0/3" and t["ssim"].verdict == "loses"
    assert set(t) == {"psnr", "ssim", "ms_ssim", "cvvdp", "flip"}  # only metrics some record has
    assert rows["avif"]["n"] == 0
    sentence = bench.budget_verdict(doc, sel, 5000)
    assert sentence == (
        "At 5000 bytes, ours:t/x wins against jpeg on FLIP (3/3), is level with jpeg on PSNR "
        "(1/3, 1 tie) and loses everywhere else (avif cannot fit any image into 5000 bytes)."
    )
    md = bench.write_summary(doc, tmp_path / "s.md", sel).read_text()
    assert "| ours:t/x | jpeg | 3/4 | 1/3, 1 tie | 0/3 | 0/3 | 0/3 | 3/3 |" in md
    assert f"* {sentence}" in md


def test_means_need_every_record_to_have_the_metric(tmp_path):
    """An old record without a metric must not make a mean over fewer images than the row's other columns."""
    doc, sel = _doc(
        {
            ("a", "ours:t/x"): {"psnr": 20.0, "flip": 0.2},
            ("b", "ours:t/x"): {"psnr": 22.0},
            ("a", "jpeg"): {"psnr": 24.0, "flip": 0.1},
            ("b", "jpeg"): {"psnr": 26.0, "flip": 0.3},
        }
    )
    agg = bench.aggregate(doc["records"], sel["images"])
    ours, jpeg = agg[("ours:t/x", "le", 5000)], agg[("jpeg", "le", 5000)]
    assert ours["psnr"] == 21.0 and ours["flip"] is None and ours["flip_n"] == 1
    assert jpeg["flip"] == pytest.approx(0.2) and jpeg["flip_n"] == 2
    md = bench.write_summary(doc, tmp_path / "s.md", sel).read_text()
    assert "| **ours:t/x** | 2/2 | 4000 | 0.1200 | 21.00 | n/a | n/a | partial 1/2 |" in md


def _committed_copy(tmp_path, committed: Path = COMMITTED) -> Path:
    if not (committed / bench.RECORDS_FILE).is_file():
        pytest.skip(f"{committed.relative_to(ROOT)}/records.json is not committed here")
    out = tmp_path / committed.name
    out.mkdir()
    shutil.copy(committed / bench.RECORDS_FILE, out / bench.RECORDS_FILE)
    if (committed / "reach.json").is_file():  # the decoder's reach, drawn on the RD plot (helpers.bench.reach)
        shutil.copy(committed / "reach.json", out / "reach.json")
    return out


@pytest.mark.parametrize("name", ["kodak", "holdout", "scaling/local1"])
def test_committed_results_are_reproduced_from_their_records(tmp_path, capsys, name):
    """``--report-only`` on a copy of results/kodak (results/holdout, results/scaling/local1) rewrites exactly the
    committed summary.md, and the same plot. All three carry the baselines' quality sweeps (whole baseline curves
    in their plots and BD-rates)."""
    committed = ROOT / "results" / name
    out = _committed_copy(tmp_path, committed)
    doc = bench.load_records(out / bench.RECORDS_FILE)
    assert doc["format"] == bench.FORMAT_VERSION and len(doc["records"]) > 100
    assert doc.get("sweeps")
    assert bench.main(["--report-only", "--out", str(out)]) == 0
    assert f"wrote {out / bench.PLOT_FILE}" in capsys.readouterr().out
    assert (out / bench.SUMMARY_FILE).read_text() == (committed / bench.SUMMARY_FILE).read_text()
    with Image.open(out / bench.PLOT_FILE) as a, Image.open(committed / bench.PLOT_FILE) as b:
        assert a.size == b.size
        diff = np.abs(np.asarray(a.convert("RGB"), np.int16) - np.asarray(b.convert("RGB"), np.int16))
    assert diff.mean() < 0.5, "the RD plot differs from the committed one"  # font rendering may differ a little


def test_a_new_metric_in_the_list_reaches_records_tables_plots_and_bd_rates(tmp_path, monkeypatch):
    """What the next metric needs: one entry in the registry (helpers.metrics.METRICS, read through METRIC_SPECS). A lower-is-better 'blockiness' = 1 - MS-SSIM
    gets its table column, RD subplot, head-to-head column and BD-rate rows, and (BD-rate being direction-free)
    MS-SSIM's BD-rates."""
    out = _committed_copy(tmp_path)
    doc = bench.load_records(out / bench.RECORDS_FILE)
    for r in doc["records"] + [p for s in doc.get("sweeps", []) for p in s["points"]]:
        r["blockiness"] = None if r.get("ms_ssim") is None else 1 - r["ms_ssim"]
    selection = bench.selection_of(doc)
    before = bench.write_plot(doc, tmp_path / "before.png", selection)
    new = dataclasses.replace(
        metrics.METRICS["ms_ssim"],
        key="blockiness",
        name="Blockiness",
        short="",
        label="",
        higher_is_better=False,
        plot_rank=99,
        optional=True,
        compute=lambda a, b, run: 1 - metrics.METRICS["ms_ssim"].compute(a, b, run),
    )
    assert new.column == "Blockiness ↓"
    monkeypatch.setattr(config, "METRIC_SPECS", (*config.METRIC_SPECS, new))
    from helpers.bench.records import _metric_fields

    assert list(_metric_fields({"bytes": 1, "bpp": 1.0, "blockiness": 0.25}))[-1] == "blockiness"
    md = bench.write_summary(doc, tmp_path / "summary.md", selection).read_text()
    headers = [line for line in md.splitlines() if line.startswith("|") and "MS-SSIM ↑" in line]
    assert headers and all(line.rstrip().endswith("| Blockiness ↓ |") for line in headers[:1])
    assert "### BD-rate on Blockiness ↓" in md
    h2h = bench.head_to_head(doc, selection, 5000)
    for row in h2h:  # the opposite direction of the same numbers: the same wins
        assert row["tallies"]["blockiness"].wins == row["tallies"]["ms_ssim"].wins
    rows = bench.bd_table(doc, selection)
    assert any(row["blockiness_per_image"] for row in rows)
    for row in rows:
        if row["ms_ssim"] is None:
            assert row["blockiness"] is None
        else:
            assert row["blockiness"] == pytest.approx(row["ms_ssim"], rel=1e-6, abs=1e-6)
        assert row["blockiness_per_image"] == pytest.approx(row["ms_ssim_per_image"], rel=1e-6, abs=1e-6)
    after = bench.write_plot(doc, tmp_path / "after.png", selection)
    from helpers.bench.aggregate import shown_metrics

    shown = shown_metrics(doc["records"])
    n_before = len([m for m in config.plot_metrics() if m in shown]) - 1
    grid = lambda n: (min(4, n), -(-n // min(4, n)))  # noqa: E731 - (columns, rows), as write_plot lays them out
    with Image.open(before) as a, Image.open(after) as b:
        if grid(n_before + 1) != grid(n_before):  # one more subplot changes the grid: the figure grows
            assert b.size[0] * b.size[1] > a.size[0] * a.size[1] * 1.1, "no subplot was added for the new metric"
        else:  # it fills an empty cell of the grid: same size, other pixels
            assert b.size == a.size and np.asarray(a).tobytes() != np.asarray(b).tobytes()


# ----------------------------------------------------------------------------------------------
# small real run: 3 Kodak images, 2 budgets, JPEG + WebP, TAEF2 with every coder
# ----------------------------------------------------------------------------------------------

BUDGETS = (3000, 8000)
CODECS = ("jpeg", "webp")
IMAGES = ("kodim03", "kodim07", "kodim23")


@pytest.fixture(scope="module")
def small_run(kodak_dir, tmp_path_factory):
    from helpers.methods.palette import entropy

    out = tmp_path_factory.mktemp("bench")
    coders = [c for c in ("zlib", "arith") if c in getattr(entropy, "CODERS", {})]
    argv = [
        "--data",
        str(kodak_dir),
        "--images",
        *IMAGES,
        "--budgets",
        *map(str, BUDGETS),
        "--codecs",
        *CODECS,
        "--coders",
        *coders,
        "--model",
        "taef2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--scheduler",
        "inline",
        "--no-sweep",
        # small mode: palettes up to 64 colours (the 8000-byte files are then the 64-colour files of the
        # coder-savings section, decoded once) and identical_to_zlib checked on the unpacked latents in
        # the budget runs (the coder-savings section still compares decoded pixels)
        "--max-colors",
        "64",
        "--verify",
        "latents",
    ]
    t0 = time.perf_counter()
    assert bench.main(argv) == 0
    first = time.perf_counter() - t0
    return {
        "out": out,
        "argv": argv,
        "coders": coders,
        "seconds": first,
        "doc": json.loads((out / bench.RECORDS_FILE).read_text()),
    }


def test_small_run_records(small_run):
    from helpers import metrics

    doc, coders = small_run["doc"], small_run["coders"]
    recs = doc["records"]
    measured = doc["meta"]["metrics_measured"]
    assert {"psnr", "ssim", "ms_ssim", "cvvdp", "flip", "ssimulacra2"} <= set(measured)  # offline on CI too
    assert measured == [k for k in bench.metric_keys() if k in metrics.default_keys() and metrics.available([k])]
    for k in measured:  # which implementation and settings measured each metric
        assert doc["meta"]["metrics"][k]["library"] == metrics.describe([k])[k]["library"]
    assert doc["meta"]["metrics"]["cvvdp"]["settings"]["display"] == "standard_fhd"
    assert set(doc["meta"]["metrics_unavailable"]) == {k for k in bench.metric_keys() if not metrics.available([k])}
    ms = doc["meta"]["metric_seconds"]
    assert set(ms) == set(IMAGES) and all(v["pairs"] > 0 and v["seconds"] > 0 for v in ms.values())
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
        # every metric this run measured, in every record: the perceptual ones in their valid ranges
        assert [k for k in bench.metric_keys() if r.get(k) is not None] == measured, r["codec"]
        assert 0 < r["cvvdp"] < 10 and 0 < r["flip"] < 1 and -150 < r["ssimulacra2"] < 100
        assert len(r["file_sha1"]) == 40 and r["metrics_seconds"] >= 0
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
        pytest.skip("only the zlib coder exists in helpers.methods.palette.entropy here")
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
    # the head-to-head: one sentence per budget, one table per budget with a row per ours variant and baseline
    for b in BUDGETS:
        assert md.count(f"* At {b} bytes, ") == 1 and f"### Head-to-head at {b} bytes" in md
    assert "| ColorVideoVDP (JOD) ↑ |" in md and "| FLIP ↓ |" in md and "### BD-rate on SSIMULACRA 2 ↑" in md
    assert "* **Metric time:** " in md and "cvvdp 0.5.7 (display=standard_fhd" in md
    n_rows = len(small_run["coders"]) * len(CODECS)
    assert md.count("| ours:taef2/") >= 2 * n_rows


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
    # deleted records are recomputed, and only those (two images: on a Dask LocalCluster of two processes)
    gone = {("kodim07", "webp", 8000), ("kodim23", "jpeg", 3000)}
    doc["records"] = [r for r in doc["records"] if (r["image"], r["codec"], r["budget"]) not in gone]
    (out / bench.RECORDS_FILE).write_text(json.dumps(doc))
    parallel = list(argv)
    parallel[parallel.index("--scheduler") + 1] = "local:2"
    assert bench.main(parallel) == 0
    doc2 = json.loads((out / bench.RECORDS_FILE).read_text())
    run = doc2["meta"]["runs"][-1]
    assert run["new_records"] == 2 and run["jobs"] == 2 and run["scheduler"] == "local:2" and run["tasks"] == 2
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


def _copy_run(small_run, tmp_path) -> tuple[Path, dict]:
    out = tmp_path / "run"
    shutil.copytree(small_run["out"], out)
    return out, json.loads((out / bench.RECORDS_FILE).read_text())


def _argv(small_run, out: Path, *extra: str) -> list[str]:
    argv = list(small_run["argv"])
    argv[argv.index("--out") + 1] = str(out)
    argv[argv.index("--images") + 1 : argv.index("--images") + 1 + len(IMAGES)] = ["kodim23"]
    return argv + list(extra)


def test_old_records_get_the_missing_metrics_filled_in(small_run, tmp_path, capsys):
    """Records written before the perceptual metrics (no cvvdp/flip fields, no file SHA-1) are completed on a
    re-run: their files are made again, found identical, and only the missing metrics measured; every other
    field (timings included) is kept. A record whose file cannot be made identically (here: a wrong SHA-1, as
    after a codec library update) is recomputed instead."""
    out, doc = _copy_run(small_run, tmp_path)
    orig = {bench._key_of(r): r for r in json.loads((out / bench.RECORDS_FILE).read_text())["records"]}
    stripped = []
    for r in doc["records"]:
        if r["image"] == "kodim23" and r["bytes"] is not None:
            r.pop("cvvdp"), r.pop("flip")
            stripped.append(bench._key_of(r))
            if r["budget"] == 3000:
                r.pop("file_sha1")  # as an old record: identified by bytes and quality / palette size
    tampered = [
        next(k for k in stripped if k.split("|")[2] == "8000" and orig[k]["kind"] == kind)
        for kind in ("baseline", "ours")
    ]
    for r in doc["records"]:
        if bench._key_of(r) in tampered:
            r["file_sha1"] = "0" * 40
            r["seconds_total"] = -1.0  # would survive a fill
    (out / bench.RECORDS_FILE).write_text(json.dumps(doc))
    assert bench.main(_argv(small_run, out, "--metrics", "cvvdp", "flip")) == 0
    printed = capsys.readouterr().out
    assert f"0 new records, {len(stripped) - 2} filled, 2 replaced in " in printed
    new = {bench._key_of(r): r for r in json.loads((out / bench.RECORDS_FILE).read_text())["records"]}
    assert new.keys() == orig.keys()
    for k in stripped:
        a, b = orig[k], new[k]
        assert b["cvvdp"] == pytest.approx(a["cvvdp"], abs=1e-6) and b["flip"] == pytest.approx(a["flip"], abs=1e-6)
        assert b["file_sha1"] == a["file_sha1"] and b["bytes"] == a["bytes"]
        if k in tampered:
            assert b.get("seconds_total") != -1.0
        else:  # filled: every other field as it was, in the same order
            assert {f: v for f, v in b.items() if f not in ("metrics_seconds",)} == {
                f: v for f, v in a.items() if f not in ("metrics_seconds",)
            }
            assert list(b)[: list(b).index("flip") + 1] == list(a)[: list(a).index("flip") + 1]
    run = json.loads((out / bench.RECORDS_FILE).read_text())["meta"]["runs"][-1]
    assert (run["new_records"], run["filled_records"], run["replaced_records"]) == (0, len(stripped) - 2, 2)


def test_another_metric_library_stops_the_run_unless_remeasured(small_run, tmp_path, capsys):
    """Values from two implementations must never mix: a stored metric measured with another library stops the
    run with the fix; ``--remeasure`` measures it again on the selected records and drops it elsewhere."""
    out, doc = _copy_run(small_run, tmp_path)
    doc["meta"]["metrics"]["flip"]["library"] = "flip-evaluator 0.9"
    saved = {bench._key_of(r): r.get("flip") for r in doc["records"]}
    for r in doc["records"]:
        if r.get("flip") is not None:
            r["flip"] += 0.5  # what the other version measured
    (out / bench.RECORDS_FILE).write_text(json.dumps(doc))
    assert bench.main(_argv(small_run, out, "--metrics", "flip")) == 2
    err = capsys.readouterr().err
    assert "flip values in records.json were measured with flip-evaluator 0.9" in err and "--remeasure flip" in err
    assert bench.main(_argv(small_run, out, "--metrics", "flip", "--remeasure", "flip")) == 0
    doc2 = json.loads((out / bench.RECORDS_FILE).read_text())
    assert doc2["meta"]["metrics"]["flip"]["library"].startswith("flip-evaluator 1.")
    for r in doc2["records"]:
        if r["image"] == "kodim23":
            assert r.get("flip") == (
                None if saved[bench._key_of(r)] is None else pytest.approx(saved[bench._key_of(r)], abs=1e-6)
            )
        else:
            assert r.get("flip") is None  # outside the selection: dropped, not mixed
    assert bench.main(_argv(small_run, out, "--metrics", "vmaf")) == 2
    assert "unknown metric(s) vmaf in --metrics" in capsys.readouterr().err


def test_bad_arguments_exit_2(tmp_path, capsys):
    assert bench.main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err


def test_sd_backend_with_denoise_variant(kodak_dir, tiny_sd_dir, tmp_path):
    """A UNet backend (tiny random SD, same loading code as SD v1.4) gets the +denoise variant; TAEF2 never."""
    out = tmp_path / "sd"
    argv = [
        "--data",
        str(kodak_dir),
        "--images",
        "kodim23",
        "--budgets",
        "8000",
        "--codecs",
        "jpeg",
        "--coders",
        "zlib",
        "--model",
        str(tiny_sd_dir),
        "--denoise",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
        "--scheduler",
        "inline",
    ]
    assert bench.main(argv) == 0
    doc = json.loads((out / bench.RECORDS_FILE).read_text())
    ours = {r["codec"]: r for r in doc["records"] if r["kind"] == "ours"}
    assert set(ours) == {"ours:sd/zlib", "ours:sd/zlib+denoise"}
    for label, r in ours.items():
        assert r["bytes"] <= 8000 and r["setting"].startswith("liq ")
        assert (r["seconds"]["denoise"] > 0) == label.endswith("+denoise")
    assert doc["coder_savings"] == []  # one coder: nothing to compare


def test_summary_reports_the_last_invocation_that_computed_records(tmp_path):
    """A run that only re-made records (``replaced``) is the last one that computed; a run that computed nothing
    (everything reused) is not."""
    doc, sel = _doc({("a", "ours:t/x"): {"psnr": 20.0}, ("a", "jpeg"): {"psnr": 24.0}})
    doc["meta"]["runs"] = [
        {"new_records": 2, "replaced_records": 0, "wall_seconds": 100.0},
        {"new_records": 0, "replaced_records": 1, "wall_seconds": 50.0},
        {"new_records": 0, "replaced_records": 0, "wall_seconds": 1.0},
    ]
    md = bench.write_summary(doc, tmp_path / "s.md", sel).read_text()
    assert "last invocation 50.0 s, 0 new records, 1 replaced, " in md

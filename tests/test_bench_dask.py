"""The benchmark on Dask (helpers/bench/scheduler.py): a LocalCluster of two worker processes gives the records of a
one-process run; a worker killed mid-run loses nothing and the run completes; a task that raises is recorded, not
fatal; a killed client loses no finished task; the baselines' quality sweeps are cached per image content; whole
images (--policy full) from any folder.

Small on purpose (a loaded 2-core CI machine): 2 Kodak images, one budget, JPEG, TAEF2 with zlib/arith/tc, the
classic metrics only."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers import bench
from helpers.bench import config
from helpers.bench.scheduler import parse_scheduler
from helpers.errors import SDCError

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("kodim03", "kodim23")
TIMING = {
    "seconds",
    "seconds_total",
    "seconds_wall",
    "peak_mem_mb",
    "peak_process_mb",
    "encode_seconds",
    "metrics_seconds",
    "pack_seconds",
    "mem_kind",
}


def _argv(kodak_dir, out: Path, scheduler: str, *extra: str) -> list[str]:
    return [
        "--data",
        str(kodak_dir),
        "--images",
        *IMAGES,
        "--budgets",
        "3000",
        "--codecs",
        "jpeg",
        "--coders",
        "zlib",
        "arith",
        "tc",
        "--model",
        "taef2",
        "--device",
        "cpu",
        "--metrics",
        "psnr",
        "--max-colors",
        "64",
        "--verify",
        "latents",
        "--out",
        str(out),
        "--no-progress",
        "--scheduler",
        scheduler,
        *extra,
    ]


def _comparable(doc: dict) -> dict:
    """Everything of a results file that does not depend on timing: records, coder savings, sweeps."""
    strip = lambda d: {k: v for k, v in d.items() if k not in TIMING}  # noqa: E731
    return {
        "records": {bench._key_of(r): strip(r) for r in doc["records"]},
        "coder_savings": sorted(json.dumps(strip(s), sort_keys=True) for s in doc["coder_savings"]),
        "sweeps": sorted(json.dumps(s, sort_keys=True) for s in doc.get("sweeps", [])),
    }


def _load(out: Path) -> dict:
    return json.loads((out / bench.RECORDS_FILE).read_text())


def _worker_threads() -> int:
    """The torch threads of each of local:2's workers (the cores split between them)."""
    return max(1, bench.torch_threads() // 2)


@contextlib.contextmanager
def _threads(n: int):
    """This process's torch threads set to ``n``: a one-process run comparable bit for bit with the workers'
    (another thread count changes float summation orders, e.g. SSIM in its 6th decimal)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def one_process(kodak_dir, tmp_path_factory):
    """The reference: every task in this process (--scheduler inline), with the threads of one worker."""
    out = tmp_path_factory.mktemp("inline")
    with _threads(_worker_threads()):
        assert bench.main(_argv(kodak_dir, out, "inline")) == 0
    doc = _load(out)
    n = len(IMAGES) * 4  # jpeg + 3 variants at one budget
    assert len(doc["records"]) == n and len(doc["coder_savings"]) == len(IMAGES) and len(doc["sweeps"]) == 2
    return doc


def test_scheduler_argument():
    assert parse_scheduler(None).describe() == "local" and parse_scheduler(None).workers is None
    assert parse_scheduler("local:3").workers == 3 and parse_scheduler(None, jobs=2).describe() == "local:2"
    assert parse_scheduler("inline").kind == "inline"
    assert parse_scheduler("tcp://10.0.0.1:8786").kind == "address"
    for bad in ("local:0", "locl", "/no/such/scheduler.json"):
        with pytest.raises(SDCError):
            parse_scheduler(bad)
    with pytest.raises(SDCError, match="alias"):
        parse_scheduler("local:2", jobs=2)


def test_local_cluster_of_two_processes_gives_the_records_of_one_process(one_process, kodak_dir, tmp_path):
    out = tmp_path / "dask"
    assert bench.main(_argv(kodak_dir, out, "local:2")) == 0
    doc = _load(out)
    assert _comparable(doc) == _comparable(one_process)
    run = doc["meta"]["runs"][-1]
    assert (run["scheduler"], run["jobs"], run["tasks"]) == ("local:2", 2, 10)
    assert doc["meta"]["parallel"] == {"jobs": 2, "torch_threads_per_job": _worker_threads(), "scheduler": "local:2"}
    workers = run["workers"]
    assert sum(w["tasks"] for w in workers.values()) == 10
    assert all(w["model_loads"] == 1 for w in workers.values())  # weights loaded once per worker process
    assert set(doc["meta"]["task_seconds"]) == set(IMAGES)
    assert set(doc["meta"]["task_seconds"]["kodim03"]) == {
        "jpeg",
        "ours:taef2/zlib",
        "ours:taef2/arith",
        "ours:taef2/tc",
        "coder-savings:taef2",
    }
    assert not (out / config.JOURNAL_FILE).exists() and "failures" not in doc


def test_killed_worker_and_raising_task(one_process, kodak_dir, tmp_path, monkeypatch, capsys):
    """kodim03's tc task kills its worker the first time (retried: its records are there); kodim23's JPEG task
    kills its worker every time (recorded as failed after one retry); kodim23's zlib task raises (recorded).
    Everything that finished is as in the one-process run, and a re-run completes exactly the failed tasks.

    Dask counts a worker's death against every task assigned to it, not only the one it was running, and it
    assigns tasks to busy workers ahead of time (worker-saturation does not stop that for groups of one task,
    measured on a loaded CI machine): so a task queued behind the JPEG task on both workers it killed can be
    failed too. Such a task must be recorded as "worker died", never lost, and the re-run must complete it."""
    out = tmp_path / "faults"
    faults = tmp_path / "faults.d"
    faults.mkdir()
    monkeypatch.setenv(
        "SDCOMP_BENCH_FAULTS", "exit-once:kodim03/ours:taef2/tc;exit:kodim23/jpeg;raise:kodim23/ours:taef2/zlib"
    )
    monkeypatch.setenv("SDCOMP_BENCH_FAULT_DIR", str(faults))
    assert bench.main(_argv(kodak_dir, out, "local:2")) == 0
    assert len(list(faults.iterdir())) == 1  # the exit-once task did kill its worker
    doc = _load(out)
    failed = {(f["image"], f["task"]): f for f in doc["failures"]}
    assert f"{len(failed)} failed task(s)" in capsys.readouterr().out
    assert {("kodim23", "jpeg"), ("kodim23", "ours:taef2/zlib")} <= set(failed)
    assert failed[("kodim23", "jpeg")]["kind"] == "worker died"
    assert failed[("kodim23", "ours:taef2/zlib")]["kind"] == "error"
    assert failed[("kodim23", "ours:taef2/zlib")]["error"] == "RuntimeError: test fault in kodim23/ours:taef2/zlib"
    collateral = set(failed) - {("kodim23", "jpeg"), ("kodim23", "ours:taef2/zlib")}
    assert all(failed[k]["kind"] == "worker died" for k in collateral), failed
    ref = _comparable(one_process)["records"]
    got = _comparable(doc)["records"]
    missing = {k for k in ref if tuple(k.split("|")[:2]) in failed}
    assert {"kodim23|jpeg|3000|le", "kodim23|ours:taef2/zlib|3000|le"} <= missing
    assert set(got) == set(ref) - missing
    assert all(got[k] == ref[k] for k in got)  # kodim03's tc included when it finished: the retry made the same file
    md = (out / bench.SUMMARY_FILE).read_text()
    assert "## Failed tasks" in md and "| kodim23 | jpeg | worker died |" in md
    assert "| kodim23 | ours:taef2/zlib | error | RuntimeError: test fault in kodim23/ours:taef2/zlib |" in md

    monkeypatch.delenv("SDCOMP_BENCH_FAULTS")
    assert bench.main(_argv(kodak_dir, out, "local:2")) == 0
    doc = _load(out)
    assert doc["meta"]["runs"][-1]["tasks"] == len(failed)
    assert doc["meta"]["runs"][-1]["new_records"] == len(missing)
    assert "failures" not in doc and _comparable(doc) == _comparable(one_process)
    assert "## Failed tasks" not in (out / bench.SUMMARY_FILE).read_text()


def test_a_killed_client_loses_no_finished_task(one_process, kodak_dir, tmp_path, capsys):
    """The benchmark process itself dies (here: os._exit in its 4th task, inline) after three tasks had finished:
    their results are in records.json or its journal, and the re-run takes them over and computes only the rest."""
    out = tmp_path / "crash"
    env = {
        **os.environ,
        "SDCOMP_BENCH_FAULTS": "exit:kodim03/ours:taef2/tc",
        "OMP_NUM_THREADS": str(_worker_threads()),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "helpers.bench", *_argv(kodak_dir, out, "inline")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 17, proc.stderr[-2000:]
    saved = _load(out)["records"] if (out / bench.RECORDS_FILE).exists() else []
    journal = (out / config.JOURNAL_FILE).read_text().splitlines() if (out / config.JOURNAL_FILE).exists() else []
    finished = {bench._key_of(r) for r in saved} | {
        bench._key_of(r) for line in journal for r in json.loads(line)["result"]["records"]
    }
    assert finished == {"kodim03|jpeg|3000|le", "kodim03|ours:taef2/zlib|3000|le", "kodim03|ours:taef2/arith|3000|le"}
    with _threads(_worker_threads()):
        assert bench.main(_argv(kodak_dir, out, "inline")) == 0
    if journal:
        assert f"recovered {len(journal)} finished task(s)" in capsys.readouterr().err
    doc = _load(out)
    assert doc["meta"]["runs"][-1]["new_records"] == len(one_process["records"]) - 3
    assert _comparable(doc) == _comparable(one_process)


def test_quality_sweeps_are_cached_by_image_content(one_process, kodak_dir, tmp_path):
    """A new output folder and a new budget reuse the sweeps of the same pixels (here a doctored cached value
    comes back), and the RD/BD-rate curves of the baseline are the sweep's means at each quality."""
    from helpers.bench.sweep import sweep_dir

    sw = {s["image"]: s for s in one_process["sweeps"]}["kodim23"]
    assert [p["quality"] for p in sw["points"]] == list(config.SWEEP_QUALITIES["jpeg"])
    assert all(p["bpp"] == pytest.approx(8 * p["bytes"] / (512 * 512), abs=1e-6) for p in sw["points"])
    assert [p["bytes"] for p in sw["points"]] == sorted(p["bytes"] for p in sw["points"])
    [cached] = [p for p in sweep_dir().glob(f"jpeg-*-{sw['pixels_sha1']}.json")]
    original = cached.read_text()
    data = json.loads(original)
    data["points"][0]["psnr"] = 99.0
    cached.write_text(json.dumps(data))
    out = tmp_path / "again"
    argv = _argv(kodak_dir, out, "inline")
    argv[argv.index("--images") + 1 : argv.index("--images") + 3] = ["kodim23"]
    argv[argv.index("--budgets") + 1] = "5000"
    argv[argv.index("--coders") + 1 : argv.index("--coders") + 4] = ["zlib"]
    try:
        assert bench.main(argv + ["--no-coder-savings"]) == 0
    finally:
        cached.write_text(original)  # the other tests' runs use the true sweep
    doc = _load(out)
    assert doc["sweeps"][0]["points"][0]["psnr"] == 99.0
    # the whole curve of the baseline in the BD-rate table: the sweep, not the single budget point
    rows = bench.bd_table(one_process, bench.selection_of(one_process))
    row = next(r for r in rows if r["ours"] == "ours:taef2/tc")
    assert row["psnr_curve"] == "sweep" and row["psnr_points"] == (len(config.SWEEP_QUALITIES["jpeg"]), 1)
    from helpers.bench.aggregate import sweep_curve

    md = bench.write_summary(one_process, tmp_path / "summary.md", bench.selection_of(one_process)).read_text()
    assert "Here the baselines' curves (jpeg) are their whole quality sweeps" in md
    curve = sweep_curve(one_process, "jpeg", list(IMAGES), "psnr")
    both = [{s["image"]: s for s in one_process["sweeps"]}[i]["points"] for i in IMAGES]
    assert curve[0] == pytest.approx(
        ((both[0][0]["bpp"] + both[1][0]["bpp"]) / 2, (both[0][0]["psnr"] + both[1][0]["psnr"]) / 2)
    )


def test_whole_images_from_any_folder(kodak_dir, tmp_path, capsys):
    """--policy full codes whole images of any size (bpp over their own pixels); crop512 refuses images smaller
    than 512x512 rather than resample them; one folder never mixes the two."""
    data = tmp_path / "photos"
    data.mkdir()
    with Image.open(kodak_dir / "kodim23.png") as im:
        im.crop((100, 100, 420, 340)).save(data / "small.png")  # 320x240
        im.crop((0, 0, 200, 136)).convert("RGB").save(data / "tiny.jpg", quality=95)
    out = tmp_path / "full"
    argv = [
        "--data",
        str(data),
        "--budgets",
        "3000",
        "--codecs",
        "jpeg",
        "--coders",
        "zlib",
        "tc",
        "--metrics",
        "psnr",
        "--device",
        "cpu",
        "--no-progress",
        "--scheduler",
        "inline",
        "--no-sweep",
        "--no-coder-savings",
        "--out",
        str(out),
    ]
    assert bench.main(argv + ["--policy", "full"]) == 0
    doc = _load(out)
    sizes = {"small": (320, 240), "tiny": (200, 136)}
    assert {r["image"] for r in doc["records"]} == set(sizes)
    for r in doc["records"]:
        assert (r["width"], r["height"]) == sizes[r["image"]]
        if r["bytes"] is not None:
            assert r["bytes"] <= 3000 and r["bpp"] == pytest.approx(
                8 * r["bytes"] / (r["width"] * r["height"]), abs=1e-6
            )
    assert doc["meta"]["policy_name"] == "full" and doc["meta"]["policy"].startswith("full:")
    assert (
        (out / bench.SUMMARY_FILE).read_text().startswith("# Rate-distortion benchmark: 2 images (photos), policy full")
    )
    capsys.readouterr()
    assert bench.main(argv) == 2  # crop512 on images smaller than 512x512
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "never resamples" in err and "tiny.jpg 200x136" in err
    with Image.open(kodak_dir / "kodim23.png") as im:
        im.save(data / "big.png")
    argv2 = [a for a in argv if a not in ("small", "tiny")] + ["--images", "big"]
    assert bench.main(argv2) == 2  # crop512 records into a folder of full-image records
    assert "another policy (full)" in capsys.readouterr().err


def test_a_running_cluster_by_its_address(one_process, kodak_dir, tmp_path):
    """--scheduler tcp://HOST:PORT: the tasks run on a cluster started elsewhere (here a LocalCluster of one worker
    with the threads of local:2's workers), with the same records."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        env={"OMP_NUM_THREADS": str(_worker_threads())},
    ) as cluster:
        out = tmp_path / "remote"
        assert bench.main(_argv(kodak_dir, out, cluster.scheduler_address)) == 0
    doc = _load(out)
    run = doc["meta"]["runs"][-1]
    assert run["scheduler"] == cluster.scheduler_address and run["jobs"] == 1 and run["tasks"] == 10
    assert _comparable(doc) == _comparable(one_process)

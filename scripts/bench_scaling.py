"""How the benchmark scales on Dask: compare runs of the same work with different ``--scheduler local:N`` from their
``records.json`` (wall time, summed task seconds, load average, per-worker tasks) and project the wall time
of N workers from the per-task times.

    python scripts/bench_scaling.py results/scaling/local1 results/scaling/local2 > results/scaling/README.md

The projection: the tasks' own seconds (as measured in the run with one worker, least disturbed by a
neighbour) are scheduled longest first on N workers (what Dask does with this runner's priorities, up to its
order among equals); the wall time is then max(longest task, list-scheduling makespan) plus the serial part
measured in the runs (start: cluster + first model load; client: merging, journal, final save, plot and summary).
It assumes the workers do not slow each other down (memory bandwidth, a shared disk) and that tasks keep their
one-worker time: the measured two-worker run says how far that holds on this machine."""

from __future__ import annotations

import heapq
import json
import sys
from pathlib import Path


def _run(folder: Path) -> dict:
    doc = json.loads((folder / "records.json").read_text())
    run = [r for r in doc["meta"]["runs"] if r.get("tasks")][-1]
    tasks = {(i, t): s for i, ts in doc["meta"]["task_seconds"].items() for t, s in ts.items()}
    return {"folder": folder, "doc": doc, "run": run, "tasks": tasks}


def _makespan(seconds: list[float], n: int) -> float:
    heap = [0.0] * n
    for s in sorted(seconds, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + s)
    return max(heap)


def _kind(task: str) -> str:
    return "baseline " + task if not task.startswith(("ours:", "coder-savings")) else task


def main(argv: list[str]) -> int:
    runs = [_run(Path(a)) for a in argv]
    base = runs[0]
    lines = [
        "# Benchmark scaling on Dask: measured and projected",
        "",
        f"Command (the same work in each run, fresh `SDCOMP_CACHE` each, so every sweep is computed): "
        f"`{base['run']['command']}`",
        "",
        "| run | scheduler | workers | torch threads each | tasks | wall s | summed task s | task s / wall s "
        "| start s | client s | load avg start / end |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        run, par = r["run"], r["doc"]["meta"].get("parallel", {})
        lines.append(
            f"| {r['folder'].name} | {run['scheduler']} | {run['jobs']} | {par.get('torch_threads_per_job')} "
            f"| {run['tasks']} | {run['wall_seconds']:.0f} | {run['task_seconds']:.0f} | "
            f"{run['task_seconds'] / run['wall_seconds']:.2f} | {run.get('scheduler_start_seconds', 0):.1f} | "
            f"{run.get('client_seconds', 0):.1f} | {run.get('load_start')} / {run.get('load_end')} |"
        )
    w1 = base["run"]["wall_seconds"]
    for r in runs[1:]:
        lines.append("")
        lines.append(
            f"Speed-up of {r['folder'].name} over {base['folder'].name}: "
            f"{w1 / r['run']['wall_seconds']:.2f}x (ideal {r['run']['jobs'] / base['run']['jobs']:.0f}x); "
            f"its tasks took {r['run']['task_seconds'] / base['run']['task_seconds']:.2f}x the summed seconds "
            "of the one-worker run (workers slowing each other down, and other users' load)."
        )
    by_kind: dict[str, list[float]] = {}
    for (_, t), s in base["tasks"].items():
        by_kind.setdefault(_kind(t), []).append(s)
    total = sum(base["tasks"].values())
    lines += [
        "",
        f"## Where the time goes ({base['folder'].name}, per task)",
        "",
        "| task | tasks | mean s | max s | share of the work |",
        "|---|---|---|---|---|",
    ]
    for k, v in sorted(by_kind.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"| {k} | {len(v)} | {sum(v) / len(v):.1f} | {max(v):.1f} | {100 * sum(v) / total:.0f} % |")
    secs = list(base["tasks"].values())
    serial = base["run"].get("scheduler_start_seconds", 0) + base["run"].get("client_seconds", 0)
    lines += [
        "",
        "## Projection to more workers (from the one-worker task times)",
        "",
        f"Serial part measured: {serial:.1f} s (cluster start and first model load "
        f"{base['run'].get('scheduler_start_seconds', 0):.1f} s, client merging/journal/saves "
        f"{base['run'].get('client_seconds', 0):.1f} s), plus the plot and summary at the end. Longest task "
        f"{max(secs):.0f} s: no number of workers finishes before it.",
        "",
        "| workers | projected wall s | speed-up | efficiency |",
        "|---|---|---|---|",
    ]
    t1 = _makespan(secs, 1) + serial
    for n in (1, 2, 4, 8, 16, 32, 64, 128):
        t = max(_makespan(secs, n), max(secs)) + serial
        lines.append(f"| {n} | {t:.0f} | {t1 / t:.1f}x | {100 * t1 / t / n:.0f} % |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Where the benchmark's tasks run: in this process (``--scheduler inline``) or on Dask (``dask.distributed``):
a LocalCluster of worker processes started here (``local`` / ``local:N``) or a running cluster (``tcp://HOST:PORT``
or a scheduler file, e.g. one started on SLURM with dask-jobqueue or on Kubernetes with dask-kubernetes).

One task = one (image, variant) (:func:`helpers.bench.image.bench_task`). Each worker process loads the model
weights once (:class:`BenchPlugin` at start, :func:`worker_setup` as the cached loader the tasks call, which also
serves workers that join later), with its torch threads set to its share of the cores. Results come back to
the client as they finish (:func:`run_tasks` yields them). A task that raises yields a failure with its one-line
error; a worker that dies while running a task (out of memory, killed) makes Dask run the task again once
(``distributed.scheduler.allowed-failures`` = 1 on a LocalCluster started here), then the task is a failure.

Test hook (never set outside tests): ``SDCOMP_BENCH_FAULTS="raise:IMAGE/TASK;exit:IMAGE/TASK;exit-once:IMAGE/TASK"``
makes the named tasks raise, kill their worker process every time, or kill it the first time only (a marker file
in ``SDCOMP_BENCH_FAULT_DIR`` remembers it); TASK is the task label (``jpeg``, ``ours:taef2/tc``,
``coder-savings:taef2``)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..errors import SDCError, one_line
from .records import ours_label

ALLOWED_FAILURES = 1  # a task whose worker died is run once more, then recorded as failed
_ENV_THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def task_label(variant: Sequence) -> str:
    """``jpeg`` / ``ours:taef2/tc`` / ``coder-savings:taef2``: the task's name in failures, progress and hooks."""
    if variant[0] == "baseline":
        return str(variant[1])
    if variant[0] == "ours":
        return ours_label(variant[1], variant[2], bool(variant[3]))
    return f"coder-savings:{variant[1]}"


@dataclasses.dataclass
class Scheduler:
    """A parsed ``--scheduler``: kind ``inline``, ``local`` (workers = N or None for sized to the machine),
    ``address`` (a running scheduler) or ``file`` (its scheduler file)."""

    kind: str
    workers: int | None = None
    target: str | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return f"local:{self.workers}" if self.workers else "local"
        return self.target if self.kind in ("address", "file") else self.kind


def parse_scheduler(spec: str | None, jobs: int | None = None) -> Scheduler:
    """``--scheduler`` (default ``local``); ``--jobs N`` is an alias of ``local:N`` (0 = ``local``)."""
    if spec is None:
        return Scheduler("local", jobs or None)
    if jobs:
        raise SDCError("--jobs is an alias of --scheduler local:N; pass only one of them")
    s = spec.strip()
    if s == "inline":
        return Scheduler("inline")
    m = re.fullmatch(r"local(?::(\d+))?", s)
    if m:
        n = int(m.group(1)) if m.group(1) else None
        if n is not None and n < 1:
            raise SDCError(f"--scheduler {s}: the number of worker processes must be >= 1, e.g. local:2")
        return Scheduler("local", n)
    if re.match(r"^[a-z][a-z0-9+.-]*://", s):
        return Scheduler("address", target=s)
    if Path(s).is_file():
        return Scheduler("file", target=s)
    raise SDCError(f"--scheduler {s}: use local, local:N, inline, tcp://HOST:PORT or an existing scheduler file")


def local_size(device_type: str, kinds: Sequence[str], total_threads: int) -> tuple[int, int]:
    """(worker processes, torch threads each) for ``local`` sized to this machine: one per core for TAEF2 on CPU,
    capped so that each worker has 3 GiB of the available memory; one worker on a GPU or for a big model."""
    cores = os.cpu_count() or 1
    if device_type != "cpu" or any(k != "taef2" for k in kinds):
        n = 1
    else:
        try:
            import psutil

            mem_cap = max(1, int(psutil.virtual_memory().available / 2**30 // 3))
        except Exception:
            mem_cap = cores
        n = max(1, min(cores, mem_cap))
    return n, max(1, total_threads // n)


# ---------------------------------------------------------------------------------------------------------------
# worker side
# ---------------------------------------------------------------------------------------------------------------

_BACKENDS: dict[tuple, list] = {}
_LOADS = [0]  # how many times this process loaded the models (1 per worker process and model list)


def worker_setup(setup, threads: int | None):
    """The run's :class:`~helpers.bench.image.Setup` with the models loaded, once per process and model list
    (the cached loader every task goes through); ``threads``: torch threads for this process (None: leave)."""
    from ..backends.load import load_labelled

    key = (tuple(setup.models), setup.device)
    if key not in _BACKENDS:
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        from ..backends.torch_base import select_device

        _BACKENDS[key] = load_labelled(setup.models, select_device(setup.device))
        _LOADS[0] += 1
    return dataclasses.replace(setup, backends=_BACKENDS[key])


try:
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover - dask is a dependency; inline runs work without it
    _WorkerPluginBase = object


class BenchPlugin(_WorkerPluginBase):
    """Loads the models when a worker starts (and when a dead worker's replacement starts)."""

    name = "sdcomp-bench-models"

    def __init__(self, setup, threads: int | None):
        self.setup_, self.threads = setup, threads

    def setup(self, worker=None):
        worker_setup(self.setup_, self.threads)


def _fault_hook(image: str, label: str) -> None:
    spec = os.environ.get("SDCOMP_BENCH_FAULTS")
    if not spec:
        return
    me = f"{image}/{label}"
    for item in spec.split(";"):
        mode, _, target = item.partition(":")
        if target != me:
            continue
        if mode == "raise":
            raise RuntimeError(f"test fault in {me}")
        if mode == "exit":
            os._exit(17)
        if mode == "exit-once":
            marker = Path(os.environ["SDCOMP_BENCH_FAULT_DIR"]) / (hashlib.sha1(me.encode()).hexdigest() + ".died")
            if not marker.exists():
                marker.write_text(me)
                os._exit(17)


def run_one(path: str, variant: tuple, have: set[str], fills: dict, setup, threads: int | None = None) -> dict:
    """One task, in a worker (or in this process for ``inline``)."""
    from .image import bench_task

    ready = setup if setup.backends else worker_setup(setup, threads)
    _fault_hook(Path(path).stem, task_label(variant))
    res = bench_task(path, ready, variant, have, fills)
    res["worker"] = {"pid": os.getpid(), "model_loads": _LOADS[0]}
    return res


# ---------------------------------------------------------------------------------------------------------------
# client side
# ---------------------------------------------------------------------------------------------------------------


def failure(image: str, variant: Sequence, exc: BaseException) -> dict:
    """The failure entry of a task: its one-line error; ``kind`` "worker died" when Dask gave up on it."""
    died = type(exc).__name__ == "KilledWorker"
    if died:
        error = (
            f"its worker process died {ALLOWED_FAILURES + 1} times while it ran or waited for it "
            "(out of memory or killed); re-run to try again"
        )
    elif isinstance(exc, SDCError):
        error = one_line(exc)
    else:
        error = one_line(f"{type(exc).__name__}: {exc}")
    return {"image": image, "task": task_label(variant), "kind": "worker died" if died else "error", "error": error}


def _priority(variant: Sequence) -> int:
    """Longest first, so that a slow variant does not start last (refinement > ours > baselines > savings)."""
    if variant[0] == "ours":
        return 10 if "+e" in str(variant[2]) else 5
    return 2 if variant[0] == "baseline" else 1


class Runner:
    """Runs tasks inline or on Dask; a context manager that starts and stops what it started."""

    def __init__(self, sched: Scheduler, setup, threads: int, workers: int, log=print):
        self.sched, self.setup, self.threads, self.workers, self.log = sched, setup, threads, workers, log
        self.client = None
        self._closers: list = []
        self.dashboard: str | None = None

    def __enter__(self) -> Runner:
        if self.sched.kind == "inline":
            return self
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - a dependency
            raise SDCError(
                f"--scheduler {self.sched.describe()} needs dask.distributed ({exc}); "
                "pip install 'dask[distributed]' or use --scheduler inline"
            ) from None
        if self.sched.kind == "local":
            # worker-saturation 1.0 keeps fewer tasks waiting on a busy worker, but Dask still assigns some ahead
            # (it queues only root-ish task groups; each of ours is a group of one), and a worker's death counts
            # against every task assigned to it: a task that waited twice behind one that kills its worker is
            # recorded as failed ("worker died") too, and the next run retries it (tests/test_bench_dask.py).
            cfg = dask.config.set(
                {
                    "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                    "distributed.scheduler.worker-saturation": 1.0,
                    "distributed.worker.daemon": False,
                }
            )
            cfg.__enter__()
            self._closers.append(lambda: cfg.__exit__(None, None, None))
            env = {k: str(self.threads) for k in _ENV_THREADS}
            cluster = LocalCluster(
                n_workers=self.workers, threads_per_worker=1, processes=True, dashboard_address=":0", env=env
            )
            self._closers.append(cluster.close)
            self.client = Client(cluster)
        else:
            try:
                self.client = (
                    Client(self.sched.target, timeout="30s")
                    if self.sched.kind == "address"
                    else Client(scheduler_file=self.sched.target, timeout="30s")
                )
            except (OSError, TimeoutError) as exc:
                raise SDCError(
                    f"cannot reach the Dask scheduler {self.sched.target} ({one_line(exc)}); start it "
                    "first or use --scheduler local"
                ) from None
            self.threads = None
            self.workers = len(self.client.scheduler_info().get("workers", {}))
        self._closers.insert(0, self.client.close)
        self.client.register_plugin(BenchPlugin(self.setup, self.threads))
        self.dashboard = self.client.dashboard_link
        try:
            import bokeh  # noqa: F401

            served = ""
        except ImportError:
            served = " (served only where bokeh is installed: pip install bokeh)"
        self.log(
            f"dask: {self.sched.describe()}, {self.workers} worker process(es), "
            f"{self.threads or '?'} torch thread(s) each; dashboard {self.dashboard}{served}"
        )
        return self

    def __exit__(self, *exc) -> None:
        for close in self._closers:
            with contextlib.suppress(Exception):
                close()

    def run(self, tasks: Sequence[tuple]) -> Iterator[tuple[tuple, dict | None, dict | None]]:
        """Yield ``(task, result, None)`` or ``(task, None, failure)`` per task, in the order they finish."""
        if self.client is None:
            for t in tasks:
                path, variant, have, fills = t
                try:
                    res = run_one(path, variant, have, fills, self.setup)
                except Exception as exc:
                    yield t, None, failure(Path(path).stem, variant, exc)
                    continue
                yield t, res, None
            return
        from distributed import as_completed

        portable = self.setup.portable()
        futures = {}
        for t in tasks:
            path, variant, have, fills = t
            key = (
                f"bench-{Path(path).stem}-{task_label(variant)}-{hashlib.sha1(repr(t[:2]).encode()).hexdigest()[:8]}"
                f"-{time.time_ns()}"
            )
            fut = self.client.submit(
                run_one,
                path,
                variant,
                have,
                fills,
                portable,
                self.threads,
                key=key,
                pure=False,
                priority=_priority(variant),
            )
            futures[fut] = t
        try:
            for fut in as_completed(list(futures)):
                t = futures.pop(fut)
                try:
                    # the task's result, or its error (KilledWorker after the retry, a cancellation). A result that
                    # was held by a worker that died before it came over is computed again by Dask (this client
                    # still wants it), and result() waits for that: nothing finished is lost.
                    res = fut.result()
                except Exception as exc:
                    fut.release()
                    yield t, None, failure(Path(t[0]).stem, t[1], exc)
                    continue
                fut.release()
                yield t, res, None
        finally:
            for fut in futures:
                fut.cancel()

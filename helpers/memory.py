"""The one memory probe: this process's peak and current resident set, a block's peak, and a child's peak.

Linux reports a process's own peak resident set as ``VmHWM`` in ``/proc/<pid>/status``: it starts at exec and
can be reset (``/proc/self/clear_refs``). ``ru_maxrss`` (``getrusage``, ``os.wait4``) is not a child's own peak:
a forked child inherits its parent's high-water mark across exec (a pytest process of 1.6 GiB made a 453 MiB
decode read 1641 MiB), so a child's peak is read from inside the child: the CLI's stage log
(``SDCOMP_TIMING``, :class:`helpers.cli.StageLog`) records ``VmHWM`` at each stage, and :func:`run_child` takes
the largest. ``ru_maxrss`` is only the fallback for this process off Linux (an upper bound).

Standard library only (the CLI imports it; torch only inside :class:`PeakMemory` on CUDA).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.MULTILINE)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def process_memory() -> dict[str, float | None]:
    """This process's ``hwm_MiB`` (peak resident set since exec or the last :func:`reset_peak`: Linux ``VmHWM``,
    elsewhere the lifetime ``ru_maxrss``) and ``rss_MiB`` (current; None off Linux)."""
    hwm, rss = _status_kb("VmHWM"), _status_kb("VmRSS")
    if hwm is None:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return {"hwm_MiB": peak / (2**20 if sys.platform == "darwin" else 2**10), "rss_MiB": None}
    return {"hwm_MiB": hwm / 1024, "rss_MiB": rss / 1024 if rss is not None else None}


def reset_peak() -> bool:
    """Reset this process's peak-RSS counter (``VmHWM``) to its current RSS; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _status_kb("VmHWM") is not None
    except OSError:
        return False


def _current_rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:
        return 0


class PeakMemory:
    """Peak memory of a block of work in this process.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at entry (peak stats reset at entry).
    CPU: the process's peak resident set (Linux: VmHWM, reset at entry; elsewhere ``ru_maxrss``, a lifetime peak,
    which can only over-report) minus the RSS at entry. ``delta_mb`` is what the block added on top of what the
    process already held; ``peak_mb`` the absolute.
    """

    def __init__(self, device=None):
        self.device = device
        self.delta_mb = 0.0
        self.peak_mb = 0.0
        self.kind = ""

    @property
    def _cuda(self) -> bool:
        return self.device is not None and getattr(self.device, "type", str(self.device)) == "cuda"

    def __enter__(self):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda max_memory_allocated - allocated at start"
        else:
            self._base = _current_rss_bytes()
            self._hwm = reset_peak()
            self.kind = (
                "cpu peak RSS (VmHWM, reset per measurement) - RSS at start"
                if self._hwm
                else "cpu lifetime peak RSS (ru_maxrss) - RSS at start (upper bound)"
            )
        return self

    def __exit__(self, *exc):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            peak = process_memory()["hwm_MiB"] * 2**20
        self.peak_mb = peak / 2**20
        self.delta_mb = max(0, peak - self._base) / 2**20
        return False


def run_child(
    cmd: list[str], env: dict | None = None, cwd: str | Path | None = None, preexec_fn=None, check: bool = True
) -> dict:
    """Run ``cmd`` (a program that writes the CLI's stage log to ``$SDCOMP_TIMING``) as a child and measure it.

    Returns ``wall_s`` (launch to exit), ``cpu_s`` (the child's user + sys), ``peak_rss_MiB`` (the child's own
    peak: the largest ``hwm_MiB`` of its stage log, None when it wrote none, e.g. after an error), ``rc``,
    ``stdout``, ``stderr``, ``launched`` (``time.time()`` at launch) and ``log`` (the stage log, or None).
    ``check``: a non-zero exit raises SystemExit with the command and the end of its stderr.
    """
    with (
        tempfile.TemporaryDirectory(prefix="sdcomp-child-") as tmp,
        tempfile.TemporaryFile("w+b") as fo,
        tempfile.TemporaryFile("w+b") as fe,
    ):
        log_path = Path(tmp) / "stages.json"
        launched = time.time()
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            stdout=fo,
            stderr=fe,
            preexec_fn=preexec_fn,
            env={**os.environ, **(env or {}), "SDCOMP_TIMING": str(log_path)},
        )
        _, status, usage = os.wait4(proc.pid, 0)  # CPU times only: its ru_maxrss is not the child's own peak
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        fo.seek(0), fe.seek(0)
        out, err = fo.read().decode(errors="replace"), fe.read().decode(errors="replace")
        log = json.loads(log_path.read_text()) if log_path.exists() else None
    if rc and check:
        raise SystemExit(f"command failed ({rc}): {' '.join(map(str, cmd))}\n{err[-2000:]}")
    peaks = [m["hwm_MiB"] for m in (log or {}).get("marks", []) if m.get("hwm_MiB") is not None]
    return {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_MiB": max(peaks) if peaks else None,
        "rc": rc,
        "stdout": out,
        "stderr": err,
        "launched": launched,
        "log": log,
    }

"""Peak-memory probes: what a block of work added to the process (CPU: peak RSS; CUDA: allocated tensors)."""

from __future__ import annotations

import re
import sys


def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{field}:\s+(\d+)\s+kB", fh.read(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def _current_rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil missing: /proc, else 0
        kb = _proc_status_kb("VmRSS")
        return kb * 1024 if kb is not None else 0


def _lifetime_peak_rss_bytes() -> int:
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # bytes on macOS, KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; Linux only."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _proc_status_kb("VmHWM") is not None
    except OSError:
        return False


class PeakMemory:
    """Peak memory of a block of work.

    CUDA: ``torch.cuda.max_memory_allocated`` minus the allocation at entry (peak stats reset at entry).
    CPU: the process's peak resident set (Linux: VmHWM, reset at entry through /proc/self/clear_refs;
    elsewhere ``ru_maxrss``, a lifetime peak, which can only over-report) minus the RSS at entry.
    ``delta_mb`` is what the block added on top of what the process already held; ``peak_mb`` the absolute.
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
            self._hwm = _reset_peak_rss()
            self.kind = ("cpu peak RSS (VmHWM, reset per measurement) - RSS at start" if self._hwm
                         else "cpu lifetime peak RSS (ru_maxrss) - RSS at start (upper bound)")
        return self

    def __exit__(self, *exc):
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            kb = _proc_status_kb("VmHWM") if self._hwm else None
            peak = kb * 1024 if kb is not None else _lifetime_peak_rss_bytes()
        self.peak_mb = peak / 2 ** 20
        self.delta_mb = max(0, peak - self._base) / 2 ** 20
        return False

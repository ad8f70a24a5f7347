"""Description of the machine that computed the records (CPU, RAM, torch threads, device, library versions)."""

from __future__ import annotations

import os
import platform
import re


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def machine_info(device) -> dict:
    import PIL
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            m = re.search(r"^model name\s*:\s*(.+)$", fh.read(), re.M)
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    try:
        import psutil

        ram = f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    except Exception:
        ram = "unknown"
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "ram": ram,
        "torch": torch.__version__,
        "pillow": PIL.__version__,
        "device": str(device),
    }
    if getattr(device, "type", "") == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info

"""The one memory probe (helpers.memory): a child's own peak comes from its stage log (VmHWM), not from
``ru_maxrss``, which a forked child inherits from its parent across exec."""

import sys

import numpy as np
import pytest

from helpers import memory

CHILD = r"""
import json, os, time
from helpers.memory import process_memory
marks = [{'stage': 'main', 't': time.time(), 'cpu': time.process_time(), **process_memory()}]
block = bytearray(os.urandom(1 << 20) * 120)  # 120 MiB, touched
marks.append({'stage': 'alloc', 't': time.time(), 'cpu': time.process_time(), **process_memory()})
open(os.environ['SDCOMP_TIMING'], 'w').write(json.dumps({'marks': marks}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_child_peak_is_its_own_not_the_parents():
    big = np.ones(400 << 20, dtype=np.uint8)  # the parent holds 400 MiB while the child runs
    assert memory.process_memory()["hwm_MiB"] >= 400
    r = memory.run_child([sys.executable, "-c", CHILD])
    del big
    assert r["rc"] == 0 and r["log"]["marks"][-1]["stage"] == "alloc"
    assert 120 <= r["peak_rss_MiB"] < 300, r["peak_rss_MiB"]  # the child's 120 MiB + interpreter, not the parent's
    assert r["wall_s"] > 0 and r["cpu_s"] > 0


def test_child_without_stage_log_and_failure():
    r = memory.run_child([sys.executable, "-c", "import sys; sys.exit(3)"], check=False)
    assert r["rc"] == 3 and r["peak_rss_MiB"] is None and r["log"] is None
    with pytest.raises(SystemExit, match="command failed \\(3\\)"):
        memory.run_child([sys.executable, "-c", "import sys; sys.exit(3)"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="VmHWM is Linux's")
def test_peak_memory_block_sees_its_allocation():
    with memory.PeakMemory() as pm:
        block = np.ones(80 << 20, dtype=np.uint8)
        del block
    assert pm.delta_mb >= 75 and pm.peak_mb >= pm.delta_mb
    assert "VmHWM" in pm.kind

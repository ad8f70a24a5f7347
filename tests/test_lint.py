"""ruff (configured in pyproject.toml) finds nothing to report and no file to reformat."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe:
        return [exe]
    try:
        import ruff  # noqa: F401 - the wheel ships the binary; `python -m ruff` runs it
    except ImportError:
        pytest.fail("ruff is not installed: pip install -e '.[dev]' (it pins ruff)")
    return [sys.executable, "-m", "ruff"]


def test_ruff_check_passes():
    r = subprocess.run([*_ruff(), "check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format_check_passes():
    r = subprocess.run(
        [*_ruff(), "format", "--check", "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert r.returncode == 0, "run `ruff format .`:\n" + r.stdout[-4000:] + r.stderr[-2000:]

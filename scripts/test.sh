#!/usr/bin/env bash
# The README's test command: install the package with its pinned dependencies, then run the whole test suite
# (unit tests, real TAEF2 round trips on Kodak, all notebooks executed headless, the small benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[dev]"
python -m pytest -q "$@"

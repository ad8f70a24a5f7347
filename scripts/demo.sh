#!/usr/bin/env bash
# The README's main job: install, then compress sample Kodak images and write the comparison figure + metrics table.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e .
python -m helpers demo "$@"

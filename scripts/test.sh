#!/usr/bin/env bash
# The whole test suite: unit tests and integration tests with a real ketos. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest tests -ra "$@"

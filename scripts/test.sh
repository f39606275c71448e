#!/usr/bin/env bash
# Install Gridbot with its test tools and run the checks: ruff, mypy, the import layers
# (lint-imports, contracts in pyproject.toml), pytest.
# pytest's exit code 5 (no tests collected) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,bench]'
python3 -m ruff check .
python3 -m mypy
lint-imports --no-cache
bash scripts/pytest.sh "$@"

#!/usr/bin/env bash
# Install Gridbot with its test tools and run the checks: ruff, mypy, the import layers
# (lint-imports, contracts in pyproject.toml), pytest.
# pytest's exit code 5 (no tests collected) counts as a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,bench]'
# The posters (`gridbot poster`, tests/ops/test_posters.py) need a font with Chinese glyphs:
# when none is found (the mplfonts dependency normally ships one), Debian's WenQuanYi Micro Hei.
if ! python3 -c 'from bot.ops.posters import find_font; find_font()' >/dev/null 2>&1; then
  as_root=""
  [ "$(id -u)" != 0 ] && as_root=sudo
  $as_root apt-get update -qq
  $as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null
fi
python3 -m ruff check .
python3 -m mypy
lint-imports --no-cache
bash scripts/pytest.sh "$@"

#!/usr/bin/env bash
# pytest with its arguments, spread over worker processes (pytest-xdist): many tests wait on
# real time (a fake Bot API's rate limits, a real process starting), so workers overlap them.
# GRIDBOT_TEST_WORKERS overrides the count (0 runs in this process).
# "No tests collected" (exit 5) is a failure, not a pass.
set -uo pipefail
cores=$(nproc 2>/dev/null || echo 2)
workers=${GRIDBOT_TEST_WORKERS:-$(( cores < 2 ? 2 : (cores > 4 ? 4 : cores) ))}
python3 -m pytest -n "$workers" --dist worksteal "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"

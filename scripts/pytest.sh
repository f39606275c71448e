#!/usr/bin/env bash
# pytest with its arguments; "no tests collected" (exit 5) is a failure, not a pass.
set -uo pipefail
python3 -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: failing" >&2
  exit 1
fi
exit "$status"

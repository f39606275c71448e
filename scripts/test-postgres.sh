#!/usr/bin/env bash
# The case loop against PostgreSQL, the production database: installs Debian's server if it
# is missing (needs root), starts a throwaway cluster on a local port, runs the tests that
# exercise the database (transitions, timers, album claims, /bind, concurrency, outbox), then
# removes the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "PostgreSQL is not installed: run 'apt-get install postgresql' as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,postgres]'
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d)
port=${GRIDBOT_TEST_PG_PORT:-55433}
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
as_pg "$bin/pg_ctl -D $dir/data -w -l $dir/log -o '-p $port -k $dir -c listen_addresses=127.0.0.1' start" >/dev/null
trap 'as_pg "$bin/pg_ctl -D $dir/data -m fast stop" >/dev/null; rm -rf "$dir"' EXIT
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c 'CREATE DATABASE gridbot_test'
GRIDBOT_TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$port/gridbot_test" \
  bash scripts/pytest.sh -p no:cacheprovider tests/test_collect.py tests/test_handle.py \
  tests/test_delivery.py tests/test_timers.py tests/test_albums_once.py \
  tests/test_intake_trust.py tests/test_delivery_trust.py tests/test_contained_answers.py \
  tests/test_bind_safety.py tests/test_staff_reach.py tests/test_masking.py \
  tests/test_migrations.py tests/test_db_copy.py tests/test_webhook.py tests/test_metrics.py \
  tests/test_workers.py \
  tests/test_hostile.py -k "not test_hostile or once or twice" "$@"

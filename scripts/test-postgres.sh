#!/usr/bin/env bash
# The whole test suite against PostgreSQL, the production database: installs Debian's server
# if it is missing (needs root), starts a throwaway cluster on a local port, runs every test on
# it (tests about SQLite itself, such as its file backup, stay on SQLite), then removes the
# cluster.
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
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test,postgres,bench]'
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d)
port=${GRIDBOT_TEST_PG_PORT:-55433}
as_pg() {
  if [ "$(id -u)" = 0 ]; then su postgres -c "$*"; else bash -c "$*"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$dir"
as_pg "$bin/initdb -D $dir/data -A trust -U postgres" >/dev/null
# A throwaway cluster need not survive a power cut: without fsync the suite runs faster.
as_pg "$bin/pg_ctl -D $dir/data -w -l $dir/log -o '-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off' start" >/dev/null
trap 'as_pg "$bin/pg_ctl -D $dir/data -m fast stop" >/dev/null; rm -rf "$dir"' EXIT
"$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c 'CREATE DATABASE gridbot_test'
# The whole suite; each pytest-xdist worker empties and fills a database of its own
# (gridbot_test_gw0, gridbot_test_gw1, …), created on this cluster at its start.
GRIDBOT_TEST_DATABASE_URL="postgresql+asyncpg://postgres@127.0.0.1:$port/gridbot_test" \
  bash scripts/pytest.sh -p no:cacheprovider "$@"

#!/usr/bin/env bash
# Runs a command with a private, throw-away PostgreSQL server (unix socket only, no TCP) and
# GSCIP_TEST_POSTGRES_URL pointing at it; the server and its files are removed afterwards.
# `make test` runs the test suite under it so the GMS tests run against PostgreSQL and SQLite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh pg_ctlcluster
bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/gscip-pg.XXXXXX)
chmod 755 "$dir"
owner=postgres
if [ "$(id -u)" != 0 ]; then owner=$(id -un); fi
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u "$owner" -- "$@"; else "$@"; fi; }
chown "$owner" "$dir"
cleanup() {
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
as_owner "$bindir/initdb" -D "$dir/data" -U gscip --auth=trust -E UTF8 >/dev/null
as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-c listen_addresses='' -k $dir -c max_connections=200 -c fsync=off" start >/dev/null
export GSCIP_TEST_POSTGRES_URL="postgres://gscip@localhost/postgres?host=$dir"
echo "with-postgres: PostgreSQL on $dir"
"$@"

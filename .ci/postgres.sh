#!/usr/bin/env bash
# Start a throwaway PostgreSQL on 127.0.0.1 for the storage tests; prints the URL on stdout.
# Usage: url=$(bash .ci/postgres.sh start DIR PORT); bash .ci/postgres.sh stop DIR
set -euo pipefail
action=$1; dir=$2; port=${3:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
if [ "$action" = stop ]; then
  [ -n "$bin" ] && [ -d "$dir/data" ] && runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -m fast stop >&2 || true
  exit 0
fi
if [ -z "$bin" ]; then
  echo "installing PostgreSQL (Debian packages)" >&2
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
fi
mkdir -p "$dir"; chown postgres "$dir"
if [ ! -d "$dir/data" ]; then
  echo ci-pg-secret > "$dir/pwfile"; chown postgres "$dir/pwfile"
  runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A md5 --pwfile="$dir/pwfile" -U sparsearch >&2
fi
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir" start >&2
PGPASSWORD=ci-pg-secret "$bin/psql" -h 127.0.0.1 -p "$port" -U sparsearch -d postgres -tc \
  "SELECT 1 FROM pg_database WHERE datname='sparsearch'" | grep -q 1 || \
  PGPASSWORD=ci-pg-secret "$bin/psql" -h 127.0.0.1 -p "$port" -U sparsearch -d postgres -c "CREATE DATABASE sparsearch" >&2
echo "postgresql://sparsearch:ci-pg-secret@127.0.0.1:$port/sparsearch"

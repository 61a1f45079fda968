#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1 for the indexer's PostgreSQL tests.
# Uses one that already answers (PROVENANT_PG_URL or 127.0.0.1:5432); otherwise, as root,
# installs Debian's postgresql and starts a throw-away cluster as the `postgres` user
# (initdb and pg_ctl refuse root). Without root it stops and prints the one command to run.
set -euo pipefail
port="${PROVENANT_PG_PORT:-5432}"
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if answers "$port"; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "No PostgreSQL answers on 127.0.0.1:$port. Run first: sudo bash scripts/ensure-postgres.sh" >&2
  exit 1
fi
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)")
data=/tmp/provenant-pg
if [ ! -d "$data" ]; then
  install -d -o postgres -g postgres "$data"
  su postgres -c "$bin/initdb -D $data -A trust -U postgres" >/dev/null
fi
su postgres -c "$bin/pg_ctl -D $data -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' -l $data/log -w start" >/dev/null
for db in test root; do
  su postgres -c "psql -h 127.0.0.1 -p $port -U postgres -tc \"SELECT 1 FROM pg_database WHERE datname='$db'\"" | grep -q 1 \
    || su postgres -c "createdb -h 127.0.0.1 -p $port -U postgres $db"
done
echo "started a throw-away PostgreSQL on 127.0.0.1:$port ($data)"

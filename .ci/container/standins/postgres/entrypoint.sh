#!/bin/sh
# Minimal stand-in for the official postgres image's entrypoint contract:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, data in $PGDATA, listens on 5432.
set -e
U="${POSTGRES_USER:-postgres}"; DB="${POSTGRES_DB:-$U}"
mkdir -p "$PGDATA" /run/postgresql
chown -R postgres:postgres "$PGDATA" /run/postgresql; chmod 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s\n' "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}" > /tmp/pw; chown postgres /tmp/pw
  runuser -u postgres -- initdb -D "$PGDATA" -U "$U" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ "$DB" != "postgres" ]; then
    runuser -u postgres -- pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    runuser -u postgres -- createdb -U "$U" "$DB"
    runuser -u postgres -- pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  fi
fi
# setpriv execs (runuser would stay as a parent): postgres is PID 1 and gets the stop signal.
exec setpriv --reuid=postgres --regid=postgres --init-groups postgres -D "$PGDATA" -c listen_addresses='*'

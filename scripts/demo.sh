#!/usr/bin/env bash
# Run the collector on the embedded SQLite default with a simulated agent, and show the
# readings landing in data/telemetry.db. DEMO_SECONDS=0 runs until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
RUN_FOR=${DEMO_SECONDS:-60}
DB=data/telemetry.db

$BIN/telemetry collect --config config/collector.toml &
collector=$!
agent=""
stop() {
    trap - EXIT INT TERM
    [ -n "$agent" ] && kill -TERM "$agent" 2>/dev/null && wait "$agent" 2>/dev/null
    kill -TERM "$collector" 2>/dev/null && wait "$collector" 2>/dev/null
    echo
    echo "== demo stopped; what SQLite holds:"
    $BIN/python - "$DB" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
count, agents = db.execute("SELECT count(*), count(DISTINCT agent) FROM readings").fetchone()
print(f"   {count} readings from {agents} agent(s) in {sys.argv[1]}; the last five:")
for row in db.execute("SELECT id, sensor, value, unit, ts FROM readings ORDER BY rowid DESC LIMIT 5"):
    print("  ", *row)
PY
    echo "   look yourself: sqlite3 $DB 'SELECT * FROM readings ORDER BY rowid DESC LIMIT 10'"
}
trap stop EXIT INT TERM

# Wait until the collector is ready (/readyz); it exits at once if a port is busy.
for _ in $(seq 100); do
    kill -0 "$collector" 2>/dev/null || { echo "the collector did not start" >&2; exit 1; }
    $BIN/python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:7601/readyz', timeout=0.5)" \
        2>/dev/null && break
    sleep 0.1
done

$BIN/telemetry agent --config config/demo-agent.toml &
agent=$!
echo "== live view: http://127.0.0.1:7601/   tail: .venv/bin/telemetry tail --sensor 'greenhouse-*'"

started=$(date +%s)
while :; do
    sleep 2
    $BIN/python - "$DB" <<'PY' || true
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
count = db.execute("SELECT count(*) FROM readings").fetchone()[0]
last = db.execute("SELECT sensor, value, unit FROM readings ORDER BY rowid DESC LIMIT 1").fetchone()
print(f"== {count} readings in {sys.argv[1]}" + (f"; latest {last[0]} = {last[1]:.2f} {last[2]}" if last else ""), flush=True)
PY
    if [ "$RUN_FOR" != 0 ] && [ $(( $(date +%s) - started )) -ge "$RUN_FOR" ]; then
        break
    fi
done

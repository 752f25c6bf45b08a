# The scale part of .ci/container-check.sh (sourced by it, after the docker-compose.yml stack
# is down; it uses that script's check/quiet/step helpers, $COMPOSE, $PY and $LOGS):
# docker-compose.scale.yml with its CI override runs for real through podman. Two collectors
# write to a 3-node NATS JetStream cluster (stream TELEMETRY, 3 replicas); relay-postgres and
# relay-sqlite, each with its own durable, move the readings into PostgreSQL and SQLite; four
# agents with one endpoints list stream simulated readings. Checked: every service healthy,
# the agents spread over both collectors, the stream's leader node killed (SIGKILL) and
# brought back while they stream, the drain of agents and collectors, and then, once the relays caught up, every
# reading the agents had acked is in PostgreSQL, in SQLite and in the stream exactly once.
# shellcheck shell=bash

SCALE_PROJECT=$PROJECT-scale
SDC=("$COMPOSE" -p "$SCALE_PROJECT" -f docker-compose.scale.yml -f .ci/container/docker-compose.scale.ci.yml)
scale_cleanup() { "${SDC[@]}" down -v -t 5 >"$LOGS/scale-down-cleanup.log" 2>&1 || true; }
trap 'scale_cleanup; cleanup' EXIT
scid() { "${SDC[@]}" ps -a -q "$1" | head -n 1; }
# json_events EVENT CONTAINER...: the JSON log lines whose "event" is EVENT, one per line.
json_events() {
  local event=$1; shift
  for c in "$@"; do podman logs "$c" 2>&1; done | "$PY" -c '
import json, sys
for line in sys.stdin:
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if isinstance(event, dict) and event.get("event") == sys.argv[1]:
        print(json.dumps(event))' "$event"
}
scale_pg() {  # scale_pg SQL: one value from the scale stack's PostgreSQL
  podman exec "$(scid postgres)" psql -U telemetry -d telemetry -tAc "$1" 2>/dev/null | tr -d '[:space:]'
}
scale_sqlite() {  # "rows distinct_ids" of relay-sqlite's SQLite file, read inside its container
  podman exec "$(scid relay-sqlite)" python -c '
import sqlite3
db = sqlite3.connect("file:/var/lib/telemetry/relay.db?mode=ro", uri=True)
print(*db.execute("SELECT count(*), count(DISTINCT id) FROM readings").fetchone())' 2>/dev/null
}
scale_stream() {  # "messages replicas leader" of the stream TELEMETRY, as node $1 holds it
  podman exec "$(scid "$1")" wget -qO- 'http://127.0.0.1:8222/jsz?streams=true&config=true' 2>/dev/null | "$PY" -c '
import json, sys
for account in json.load(sys.stdin).get("account_details") or []:
    for stream in account.get("stream_detail") or []:
        if stream.get("name") == "TELEMETRY":
            print(stream["state"]["messages"], stream.get("config", {}).get("num_replicas", ""),
                  (stream.get("cluster") or {}).get("leader", ""))' 2>/dev/null | head -n 1
}

step "scale topology: docker-compose.scale.yml (2 collectors, 3 NATS nodes, 2 relays, 4 agents)"
check "scale: compose config -q with the CI override" "${SDC[@]}" config -q
check "scale: compose-spec JSON schema" quiet scale-jsonschema \
  "$TOOLS/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.scale.yml
"${SDC[@]}" down -v -t 5 >"$LOGS/scale-down-stale.log" 2>&1 || true
up_start=$SECONDS
SCALE_UP=1
if quiet scale-up "${SDC[@]}" up -d --no-build --wait --wait-timeout 180; then
  pass "scale: compose up --wait: every service healthy"
else
  fail "scale: compose up --wait: every service healthy"
  SCALE_UP=0
fi
echo "   ($((SECONDS - up_start))s)"
"${SDC[@]}" ps --format 'table {{.Service}}\t{{.Status}}' 2>/dev/null || true
if [ "$SCALE_UP" = 0 ]; then
  for s in nats-1 collector-1 relay-postgres relay-sqlite agent-1; do
    echo "   last log lines of $s:"; "${SDC[@]}" logs --no-color --tail 8 "$s" 2>&1 | cut -c1-300 | sed 's/^/   | /'
  done
fi

step "scale: readings flow into both stores"
pg=""; lite=""
for _ in $(seq 60); do
  pg=$(scale_pg 'SELECT count(*) FROM readings' || true); lite=$(scale_sqlite || true)
  if is_int_gt0 "$pg" && is_int_gt0 "${lite%% *}"; then break; fi
  [ "$SCALE_UP" = 1 ] || break
  sleep 1
done
check "scale: readings reached PostgreSQL through relay-postgres (${pg:-no table})" is_int_gt0 "$pg"
check "scale: readings reached SQLite through relay-sqlite (${lite%% *})" is_int_gt0 "${lite%% *}"
read -r _ replicas leader < <(scale_stream nats-1 || true) || true
check "scale: the stream TELEMETRY has 3 replicas (${replicas:-?})" test "${replicas:-}" = 3
check "scale: relay /metrics parses with prometheus_client's parser" sh -c "
  podman exec $(scid relay-postgres) python -c 'import urllib.request as u; print(u.urlopen(\"http://127.0.0.1:7602/metrics\", timeout=5).read().decode())' \
    >'$LOGS/scale-relay-metrics.txt' && '$PY' -c '$METRICS_PY' <'$LOGS/scale-relay-metrics.txt'"

# The node to kill: the stream's leader (server names are the service names), else nats-2.
[[ ${leader:-} =~ ^nats-[123]$ ]] || leader=nats-2
step "scale: SIGKILL $leader (the stream's leader) while the agents stream, bring it back"
kill_at=$SECONDS
podman kill --signal KILL "$(scid "$leader")" >/dev/null 2>&1 || true
# The stream (3 replicas) keeps its majority; clients move to other nodes, and the other two
# elect a new leader (a few seconds). Down for at least 6 s.
sleep 3
before=$(scale_pg 'SELECT count(*) FROM readings' || true)
after=$before
for _ in $(seq 30); do
  sleep 1
  after=$(scale_pg 'SELECT count(*) FROM readings' || true)
  [ "$SCALE_UP" = 1 ] || break
  if [[ $before =~ ^[0-9]+$ && $after =~ ^[0-9]+$ ]] && [ "$after" -gt "$before" ] && [ $((SECONDS - kill_at)) -ge 6 ]; then
    break
  fi
done
check "scale: readings go on reaching PostgreSQL with a NATS node down ($before -> $after in $((SECONDS - kill_at))s)" \
  "$PY" -c "import sys; b, a = '$before', '$after'; sys.exit(not (b.isdigit() and a.isdigit() and int(a) > int(b)))"
"${SDC[@]}" start "$leader" >"$LOGS/scale-start-$leader.log" 2>&1 || true
sleep 4

step "scale: stop the agents (every reading acked), then the collectors"
AGENTS=(); for n in 1 2 3 4; do AGENTS+=("$(scid agent-$n)"); done
"${SDC[@]}" stop agent-1 agent-2 agent-3 agent-4 >"$LOGS/scale-stop-agents.log" 2>&1 || true
codes=$(for c in "${AGENTS[@]}"; do exit_code "$c"; done | tr '\n' ' ')
acked=$(json_events agent_stopped "${AGENTS[@]}" | "$PY" -c '
import json, sys
print(sum(json.loads(line).get("acked", 0) for line in sys.stdin))')
check "scale: agents exit 0 on SIGTERM with every reading acked (exit codes: $codes; acked ${acked:-?})" \
  "$PY" -c "import sys; sys.exit(not ('$codes' == '0 0 0 0 ' and '${acked:-}'.isdigit() and int('${acked:-0}') > 0))"
spread=$(json_events connected "${AGENTS[@]}" | "$PY" -c '
import json, sys
print(" ".join(sorted({json.loads(line).get("endpoint", "?") for line in sys.stdin})))')
check "scale: the agents connected to both collectors (${spread:-none})" \
  test "$spread" = "collector-1:7600 collector-2:7600"
"${SDC[@]}" stop collector-1 collector-2 >"$LOGS/scale-stop-collectors.log" 2>&1 || true
check "scale: collectors exit 0 after their drain" \
  test "$(exit_code "$(scid collector-1)")$(exit_code "$(scid collector-2)")" = 00

step "scale: the relays catch up; every acked reading stored exactly once"
for _ in $(seq 90); do
  [ "$SCALE_UP" = 1 ] || break
  pg=$(scale_pg 'SELECT count(*) FROM readings' || true); lite=$(scale_sqlite || true)
  [ "$pg" = "$acked" ] && [ "${lite%% *}" = "$acked" ] && break
  sleep 1
done
pg_distinct=$(scale_pg 'SELECT count(DISTINCT id) FROM readings' || true)
survivor=nats-1; [ "$leader" = nats-1 ] && survivor=nats-3
read -r msgs _ < <(scale_stream "$survivor" || true) || true
exactly_once() {  # exactly_once ACKED ROWS DISTINCT
  "$PY" -c "import sys; a, r, d = sys.argv[1:]; sys.exit(not (a.isdigit() and int(a) > 0 and r == d == a))" "$@"
}
check "scale: PostgreSQL holds every acked reading once (acked ${acked:-?}, rows ${pg:-?}, distinct ids ${pg_distinct:-?})" \
  exactly_once "${acked:-}" "${pg:-}" "${pg_distinct:-}"
check "scale: SQLite holds every acked reading once (acked ${acked:-?}, rows and distinct ids: ${lite:-?})" \
  exactly_once "${acked:-}" "${lite%% *}" "${lite##* }"
check "scale: the stream holds every acked reading once ($survivor: acked ${acked:-?}, messages ${msgs:-?})" \
  exactly_once "${acked:-}" "${msgs:-}" "${msgs:-}"
for _ in $(seq 20); do  # its replica catches up from the others
  read -r msgs2 _ < <(scale_stream "$leader" || true) || true
  [ "${msgs2:-}" = "${acked:-}" ] && break
  sleep 1
done
check "scale: $leader, killed and restarted, caught up (its replica holds ${msgs2:-?} of ${acked:-?})" \
  exactly_once "${acked:-}" "${msgs2:-}" "${msgs2:-}"

"${SDC[@]}" stop relay-postgres relay-sqlite >"$LOGS/scale-stop-relays.log" 2>&1 || true
check "scale: relays exit 0 after their drain" \
  test "$(exit_code "$(scid relay-postgres)")$(exit_code "$(scid relay-sqlite)")" = 00
check "scale: compose down -v removes containers and volumes" sh -c "
  $(printf '%q ' "${SDC[@]}") down -v -t 5 >'$LOGS/scale-down.log' 2>&1 &&
  [ -z \"\$(podman ps -aq --filter label=com.docker.compose.project=$SCALE_PROJECT)\" ] &&
  [ -z \"\$(podman volume ls -q --filter label=com.docker.compose.project=$SCALE_PROJECT)\" ]"

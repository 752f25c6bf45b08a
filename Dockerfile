# telemetry collector (and agent) image.
#   docker build -t telemetry .
#   docker run -p 7600:7600 -p 7601:7601 telemetry            # collector, SQLite in /var/lib/telemetry
#   docker run telemetry agent --source system --endpoint collector.lan:7600   # the same image runs agents
#   (the image holds no agent config: mount one, -v $PWD/agent.toml:/etc/telemetry/agent.toml:ro,
#   and add --config /etc/telemetry/agent.toml; or set TELEMETRY_AGENT__* / TELEMETRY_SOURCES)
# Configuration: /etc/telemetry/collector.toml (mount your own) and TELEMETRY_* variables,
# which override every key. See docs/deploy.md.

# --- builder: a self-contained virtualenv with the package and its drivers --------------------
FROM python:3.12-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python3 -m venv /opt/venv

WORKDIR /src
# Only what the package build needs: pyproject.toml reads README.md (see .dockerignore).
COPY pyproject.toml README.md ./
COPY telemetry ./telemetry

# Extras (pyproject.toml): `all` = the `collector` (aiohttp, prometheus-client: the HTTP side
# port, live view and metrics; the base install is agent-only) and every sink driver
# (postgres, nats, mqtt, redis), so any [[sinks]] type works in the image. For a slimmer
# image, name only the extras you use, e.g. ".[postgres,nats]" (each brings the collector).
# Every dependency ships wheels, so no compiler is needed here either.
RUN /opt/venv/bin/pip install --no-compile ".[all]" \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime: the venv, a config, a non-root user; no build tools, no pip ---------------------
FROM python:3.12-slim

LABEL org.opencontainers.image.title="sensor-telemetry" \
      org.opencontainers.image.description="Sensor readings collector (and agent): length-prefixed JSON over TCP into pluggable sinks"

RUN groupadd --system --gid 10001 telemetry \
 && useradd --system --uid 10001 --gid telemetry --home-dir /var/lib/telemetry \
            --no-create-home --shell /usr/sbin/nologin telemetry \
 && mkdir -p /etc/telemetry /var/lib/telemetry \
 && chown telemetry:telemetry /var/lib/telemetry

COPY --from=builder /opt/venv /opt/venv
COPY config/telemetry-collector.container.toml /etc/telemetry/collector.toml

# Listen on every interface inside the container (the environment wins over any mounted
# config file); logs are JSON lines on stderr when it is not a terminal.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TELEMETRY_INGEST__HOST=0.0.0.0 \
    TELEMETRY_HTTP__HOST=0.0.0.0

USER 10001:10001
WORKDIR /var/lib/telemetry
EXPOSE 7600 7601

# Alive = /healthz answers on the HTTP port (TELEMETRY_HTTP__PORT if set). A container running
# `telemetry agent` has no HTTP port: there, the process being up is the health.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request as u; argv = open('/proc/1/cmdline', 'rb').read().split(b'\\0'); sys.exit(0) if b'agent' in argv else u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('TELEMETRY_HTTP__PORT', '7601'), timeout=2)"]

# Exec form: telemetry is PID 1 and gets SIGTERM itself; it drains within
# collector.shutdown_timeout (8 s here, under `docker stop`'s default 10 s) and exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["telemetry"]
CMD ["collect", "--config", "/etc/telemetry/collector.toml"]

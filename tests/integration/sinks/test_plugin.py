"""The plugin API: a third-party sink found through the ``telemetry.sinks`` entry points."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from pydantic import ValidationError

from telemetry.agent import Agent
from telemetry.collector import Collector
from telemetry.config import AgentSection, CollectorConfig, PluginSinkConfig
from tests.conftest import collector_config
from tests.support import timeout

EXAMPLE = Path(__file__).parents[3] / "examples" / "telemetry-sink-example"


@pytest.fixture
def csv_plugin() -> None:
    """The example plugin must be installed (``pip install -e examples/telemetry-sink-example``)."""
    if not any(ep.name == "csv" for ep in entry_points(group="telemetry.sinks")):
        message = f"the example sink plugin is not installed: pip install -e {EXAMPLE}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def test_config_py_imports_no_sink_and_no_plugin():
    """Importing the config models loads no sink module, no backend client and no plugin."""
    code = (
        "import sys, telemetry.config as c;"
        "c.CollectorConfig(sinks=[{'type': 'postgres'}, {'type': 'nats'}]);"
        "bad = [m for m in sys.modules if m.startswith(('telemetry.sinks', 'asyncpg', 'nats',"
        " 'aiomqtt', 'redis', 'telemetry_sink_example'))];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=timeout(30))


def test_an_unknown_sink_type_names_itself_and_the_known_types():
    """A type that is neither built in nor a plugin is refused, with the known types listed."""
    with pytest.raises(ValidationError) as info:
        CollectorConfig(sinks=[{"type": "kafka"}])
    message = str(info.value)
    assert "'kafka'" in message
    for known in ("postgres", "nats", "mqtt", "redis", "sqlite"):
        assert known in message


def test_a_plugin_config_is_validated_by_its_own_model(csv_plugin, tmp_path):
    """A plugin's keys are checked by its config_model, strictly, with the common sink keys."""
    config = CollectorConfig(
        sinks=[{"type": "csv", "path": str(tmp_path / "r.csv"), "batch_size": 10}]
    )
    sink_config = config.sinks[0]
    assert isinstance(sink_config, PluginSinkConfig)
    assert type(sink_config).__name__ == "CsvSinkConfig"
    assert sink_config.batch_size == 10
    assert '"delimiter":","' in config.model_dump_json()  # check-config shows plugin keys
    with pytest.raises(ValidationError, match=r"sinks\.0\.paht"):
        CollectorConfig(sinks=[{"type": "csv", "paht": "x.csv"}])


async def test_a_collector_writes_through_the_example_plugin(csv_plugin, tmp_path):
    """A collector configured with type = "csv" loads the plugin and stores acked readings."""
    path = tmp_path / "readings.csv"
    sinks = [{"type": "csv", "path": str(path)}, {"type": "null", "name": "other"}]
    collector = Collector(collector_config(tmp_path, sinks=sinks))
    await collector.start()
    section = AgentSection(
        id="plugin-agent",
        endpoints=[f"127.0.0.1:{collector.ingest_port}"],
        batch_size=50,
        flush_interval=0.05,
    )
    try:
        async with Agent(section) as agent:
            for i in range(120):
                await agent.send({"sensor": f"s{i % 3}", "value": i, "unit": "°C"})
            assert await agent.wait_acked(timeout(10))
    finally:
        await collector.shutdown()
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120
    assert len({row["id"] for row in rows}) == 120
    assert all(row["id"].startswith("plugin-agent:") for row in rows)
    assert sorted(float(row["value"]) for row in rows) == [float(i) for i in range(120)]
    assert rows[0]["unit"] == "°C"

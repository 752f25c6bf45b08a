"""The ``telemetry`` command's package: cheap to import, one module per command."""

#: The distribution this package is installed as (``pip install sensor-telemetry``); the
#: import package and the command are both ``telemetry``. ``telemetry`` on the index is an
#: unrelated project.
DISTRIBUTION = "sensor-telemetry"

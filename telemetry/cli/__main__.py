"""``python -m telemetry.cli``: the ``telemetry`` command (the collector's workers run so)."""

import sys

from telemetry.cli import main

sys.exit(main())

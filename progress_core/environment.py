"""Process environment defaults of every progress-flows entry point (docs/architecture.md#orchestration).

The command line, the deployment helpers and the tests all start from the same settings: no telemetry, no
downloads at run time, quiet tokenizers, and a start-up timeout of the temporary Prefect server that fits a
loaded machine (Prefect's own default of 20 s fails when two runs start side by side on two cores). Values
already set in the environment win.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

SERVER_STARTUP_TIMEOUT_S = 180

DEFAULTS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": str(SERVER_STARTUP_TIMEOUT_S),
}


def apply_defaults(env: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set every default of :data:`DEFAULTS` not already set in ``env`` (the process environment by default)."""
    target = os.environ if env is None else env
    for key, value in DEFAULTS.items():
        target.setdefault(key, value)
    return target


def server_startup_timeout(env: MutableMapping[str, str] | None = None) -> float:
    """Seconds to wait for a temporary Prefect server to answer (the setting above, or its default)."""
    source = os.environ if env is None else env
    try:
        return float(source.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", SERVER_STARTUP_TIMEOUT_S))
    except ValueError:
        return float(SERVER_STARTUP_TIMEOUT_S)

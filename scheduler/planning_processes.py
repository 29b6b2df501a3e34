"""How many processes a plan may use: `TAYORI_PLANNING_PROCESSES`.

Read by the settings (`scheduler.settings`), and before they are loaded by
`tayori plan` and `tayori tick`, which start the planning processes' fork server
first thing (outbox/fork_server.py): so this module imports nothing heavy.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from scheduler.core.config import ConfigError


def planning_processes(env: Mapping[str, str]) -> int:
    """TAYORI_PLANNING_PROCESSES: a number from 1, or `auto` (the default): as many as
    the cores this process may run on."""
    text = (env.get("TAYORI_PLANNING_PROCESSES") or "auto").strip()
    if text.lower() == "auto":
        return available_cores()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(
            f"TAYORI_PLANNING_PROCESSES: expected auto or a whole number from 1, got {text!r}"
        )
    return int(text)


def available_cores() -> int:
    """The cores this process may run on, a container's or taskset's limit included."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # not Linux

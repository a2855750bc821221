"""Reading a component's committed state from outside its topology (debugging, tests)."""

from __future__ import annotations

from typing import Any

from streamgale.config import Config

from .checkpoint import task_namespace
from .kv import decode_state
from .store import open_store


def committed_state(topology: str, component: str, tasks: list[int] | tuple[int, ...],
                    config: Config) -> dict[int, dict[Any, Any]]:
    """Task id -> its committed key/value pairs, read from the backend ``config`` names
    (``topology.state.backend`` and its settings, as the topology runs with)."""
    out: dict[int, dict[Any, Any]] = {}
    for task in tasks:
        store = open_store(config, task_namespace(topology, component, task))
        try:
            out[task] = decode_state(store.load()[1])
        finally:
            store.close()
    return out

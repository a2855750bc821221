"""Checkpointed state for bolts, Storm's model (docs/state.md).

Subclass :class:`StatefulBolt`; the runtime adds the checkpoint spout and
commits each task's ``state`` to the backend ``topology.state.backend`` names.
"""

from .bolt import StatefulBolt
from .inspect import committed_state
from .kv import KeyValueState
from .store import BACKENDS, StateError, StateStore

__all__ = ["StatefulBolt", "KeyValueState", "StateStore", "StateError", "BACKENDS", "committed_state"]

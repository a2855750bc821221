"""The user's side of checkpointed state: :class:`StatefulBolt`."""

from __future__ import annotations

from streamgale.components import Bolt

from .kv import KeyValueState


class StatefulBolt(Bolt):
    """A bolt whose ``state`` is checkpointed (Storm's ``IStatefulBolt``; docs/state.md).

    Lifecycle: ``prepare(context)``, then ``init_state(state)`` with the last
    committed state of this task (empty the first time), before any tuple.
    ``process(tup)`` updates ``state``; the runtime acks each input only once a
    checkpoint holding its effect has committed, and rolls ``state`` back to
    the last commit when a checkpoint fails, so a replay finds exactly the
    state without the replayed tuples' effects.

    Hooks, all optional: ``pre_prepare(txid)`` before the state is prepared
    for commit, ``pre_commit(txid)`` before it commits, ``pre_rollback()``
    before it is rolled back.
    """

    state: KeyValueState

    def init_state(self, state: KeyValueState) -> None:
        """Called once, after prepare and before the first tuple, with the committed state."""
        self.state = state

    def pre_prepare(self, txid: int) -> None:
        """Checkpoint ``txid`` is about to be prepared."""

    def pre_commit(self, txid: int) -> None:
        """Checkpoint ``txid`` is about to be committed."""

    def pre_rollback(self) -> None:
        """The state is about to be rolled back to the last commit."""

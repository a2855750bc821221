"""Storm's checkpointing, kept exactly: the checkpoint spout, and the bolt side of the protocol.

A topology with a :class:`~streamgale.state.StatefulBolt` gets a system spout,
``__checkpoint`` (one task), that drives transactions over the system stream
``__checkpoint``: tuples ``[txid, action, attempt]``, tracked like any spout tuple. Every
bolt takes that stream from the checkpoint spout (if it reads a spout) or from
each bolt it reads, and passes each action on once it has it from *all* its
input tasks (a barrier aligned per input task), so every tuple a bolt sees lies
cleanly before or after a barrier on its channel. Every action the spout sends
(a retry too) has a new ``attempt``, larger than every earlier one, also across
the spout's restarts: a bolt aligns one attempt at a time, so the copies of an
action given up (late on a slow channel) never complete a barrier with the
copies of its retry; they are failed.

Actions, as in Storm:

- PREPARE txid: a stateful task writes the changes since the last commit to its
  store as prepared transaction txid, together with the acks of the inputs whose
  effects they hold (held back until now). A task not yet initialised fails it.
- COMMIT txid: the store applies the prepared transaction atomically; the held
  acks are sent, so those inputs' trees complete. A task restarted after PREPARE
  finds the prepared transaction (and its acks) in the store and commits it.
- ROLLBACK: the prepared transaction is dropped and the state goes back to the
  last commit; every held input is failed (the spouts replay them).
- INITSTATE (after every ROLLBACK, and when the checkpoint spout starts): the
  same as ROLLBACK, and then a task not yet initialised loads its committed
  state and calls ``init_state``. The second rollback matters: between
  ROLLBACK and INITSTATE a restarted task fails what reaches it, and the
  parts of those trees that other tasks processed meanwhile must not commit.

The spout's own state (txid and phase) lives in the same store under
``<topology>/__checkpoint``, so a restarted spout finishes or undoes what it
had started: PREPARING -> ROLLBACK, COMMITTING -> COMMIT again, then INITSTATE.
A failed PREPARE leads to ROLLBACK then INITSTATE; a failed COMMIT, ROLLBACK
or INITSTATE is sent again.

Exactly-once rules on the bolt side (why no count changes across a failure):
while a recovery action (ROLLBACK, INITSTATE) is being aligned, and while a
stateful task is not initialised, data tuples are failed, not processed: they
were sent before the recovery on their channel, so their trees may already be
failed elsewhere; processing them would count what the replay counts again.
Tuples behind a barrier on a channel that already delivered it wait until the
barrier is complete on every channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from streamgale.components import Bolt, Spout, TopologyContext
from streamgale.tuples import Tuple
from streamgale.wire.spec import CHECKPOINT  # the system spout, and its stream

from .bolt import StatefulBolt
from .kv import KeyValueState
from .store import StateStore, open_store

log = logging.getLogger("streamgale.state")

CHECKPOINT_FIELDS = ("txid", "action", "attempt")
PREPARE, COMMIT, ROLLBACK, INITSTATE = "PREPARE", "COMMIT", "ROLLBACK", "INITSTATE"
ACTIONS = (PREPARE, COMMIT, ROLLBACK, INITSTATE)
RECOVERY = (ROLLBACK, INITSTATE)

# The checkpoint spout's phases (its committed state).
COMMITTED, PREPARING, COMMITTING = "COMMITTED", "PREPARING", "COMMITTING"

# A restarted checkpoint spout's first attempt is this far above the last one it recorded (it
# records one at each phase, and retries in between are not recorded), or at the wall clock's
# microseconds if that is more (if the backend lost the record).
UNRECORDED_ATTEMPTS = 1 << 24


def spout_namespace(topology: str) -> str:
    return f"{topology}/{CHECKPOINT}"


def task_namespace(topology: str, component: str, task: int) -> str:
    return f"{topology}/{component}/{task}"


# -- the checkpoint spout -----------------------------------------------------------------------


class CheckpointSpout(Spout):
    """Starts a checkpoint every ``topology.state.checkpoint_interval`` seconds, one at a time."""

    outputs = {CHECKPOINT: list(CHECKPOINT_FIELDS)}
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time

    def open(self, context: TopologyContext) -> None:
        self.interval = float(context.config["topology.state.checkpoint_interval"])
        self.store = open_store(context.config, spout_namespace(context.topology))
        version, data = self.store.load()
        self.version = version  # the store's own txid for this spout's record
        txid, phase, *rest = (msgpack.unpackb(data[b"state"]) if b"state" in data else (0, COMMITTED))
        self.txid = int(txid)  # the last committed checkpoint (or the one in progress)
        self.phase = str(phase)
        # Attempts go on above every earlier incarnation's: bolts that outlived it must take this
        # one's actions for new ones, not for late copies (recorded before the first is sent).
        self.attempt = max(int(self.wall() * 1e6), (int(rest[0]) if rest else 0) + UNRECORDED_ATTEMPTS)
        # Recovery first: finish or undo what a previous incarnation started, then INITSTATE.
        self.todo: list[str] = []
        self.in_flight: str | None = None
        self.after: tuple[int, str, list[str]] | None = None  # a phase to record before going on
        self.save_failing = False
        self.last = self.clock()
        self._advance(self.txid, self.phase,
                      {PREPARING: [ROLLBACK], COMMITTING: [COMMIT]}.get(self.phase, []) + [INITSTATE])

    def _save(self, txid: int, phase: str) -> None:
        self.version += 1
        self.store.prepare(self.version, {b"state": msgpack.packb([txid, phase, self.attempt])}, b"")
        self.store.commit(self.version)
        self.txid, self.phase = txid, phase

    def _advance(self, txid: int, phase: str, todo: list[str]) -> None:
        """Record (txid, phase), then make ``todo`` what comes next; if the store cannot be
        written now (an unreachable backend), nothing more is sent until it can: an action
        whose outcome is not recorded must not be followed by the next one."""
        self.after = (txid, phase, todo)
        self._apply_after()

    def _apply_after(self) -> bool:
        if self.after is None:
            return True
        txid, phase, todo = self.after
        try:
            self._save(txid, phase)
        except Exception as exc:  # noqa: BLE001 - the backend is down: retried on the next call
            if not self.save_failing:
                log.warning("checkpoint spout cannot record checkpoint %d as %s (%s); retrying", txid, phase, exc)
            self.save_failing = True
            return False
        self.save_failing = False
        self.after = None
        self.todo = todo
        return True

    def next_tuple(self) -> None:
        if self.in_flight is not None or not self._apply_after():
            return
        if self.todo:
            action = self.todo[0]
        elif self.clock() - self.last >= self.interval:
            # A new number for every PREPARE, also after a rollback: a txid is never reused.
            self._advance(self.txid + 1, PREPARING, [PREPARE])
            if not self.todo:
                return
            action = PREPARE
        else:
            return
        self.in_flight = action
        self.attempt += 1
        self.emit([self.txid, action, self.attempt], stream=CHECKPOINT, msg_id=(self.txid, action, self.attempt))

    def _answers(self, msg_id: Any) -> bool:
        """``msg_id`` is the attempt in flight (not a late answer to one given up on)."""
        txid, action, attempt = msg_id
        return self.in_flight == action and txid == self.txid and attempt == self.attempt

    def ack(self, msg_id: Any) -> None:
        if not self._answers(msg_id):
            return
        txid, action, _ = msg_id
        self.in_flight = None
        if action == PREPARE:
            self._advance(txid, COMMITTING, [COMMIT])
        elif action == COMMIT:
            self.last = self.clock()
            self._advance(txid, COMMITTED, self.todo[1:])
        elif action == ROLLBACK:
            self._advance(txid, COMMITTED, self.todo[1:])  # txid is done (rolled back); the next is txid + 1
        else:  # INITSTATE
            self.todo = self.todo[1:]
            self.last = self.clock()

    def fail(self, msg_id: Any) -> None:
        if not self._answers(msg_id):
            return
        action = msg_id[1]
        self.in_flight = None
        if action == PREPARE:
            self.todo = [ROLLBACK, INITSTATE]  # ROLLBACK, then make restarted tasks initialise
        # COMMIT, ROLLBACK and INITSTATE stay first in todo: sent again.

    def exhausted(self) -> bool:
        """Nothing in flight or due (lets ``streamgale.testing.complete_topology`` finish)."""
        return self.in_flight is None and not self.todo and self.after is None

    def close(self) -> None:
        self.store.close()


# -- the bolt side -------------------------------------------------------------------------------


class _Barrier:
    """A checkpoint action being aligned: its attempt, the input tasks that delivered it,
    their checkpoint tuples, and the data tuples that arrived behind it."""

    __slots__ = ("key", "attempt", "delivered", "marks", "behind")

    def __init__(self, key: tuple[int, str], attempt: int):
        self.key = key
        self.attempt = attempt
        self.delivered: set[int] = set()
        self.marks: list[Tuple] = []
        self.behind: list[Tuple] = []


class _HeldAcks:
    """The inner bolt's ack/fail: a stateful bolt's acks are held until commit."""

    def __init__(self, owner: CheckpointedBolt):
        self._owner = owner

    def ack(self, tup: Tuple) -> None:
        self._owner.hold(tup)

    def fail(self, tup: Tuple) -> None:
        self._owner.collector.fail(tup)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner.collector, name)


class CheckpointedBolt(Bolt):
    """Wraps every bolt of a checkpointed topology (added by :func:`with_checkpointing`).

    A stateful inner bolt gets its state, held acks and the protocol; any other
    bolt only passes barriers on (Storm's CheckpointTupleForwarder).
    """

    auto_ack = False  # acks are this wrapper's business: held (stateful) or sent (forwarder)
    _report: Callable[[BaseException, str], None] = staticmethod(lambda exc, doing: None)  # until installed

    def __init__(self, inner: Bolt, checkpoint_sources: Sequence[str], input_tasks: int):
        self.inner = inner
        self.stateful = isinstance(inner, StatefulBolt)
        self.inner_auto = bool(inner.auto_ack)
        self.checkpoint_sources = tuple(checkpoint_sources)
        # A stateless bolt with one checkpoint input never aligns, never holds and never fails a
        # tuple: data goes straight to it, and the runtime auto-acks for it as for any bolt.
        self.passthrough = not self.stateful and input_tasks == 1
        if self.passthrough:
            self.auto_ack = self.inner_auto  # type: ignore[misc]
        accepts = getattr(inner, "accepts_input", None)
        if accepts is not None:  # the inner bolt's backpressure holds the wrapper's queue
            self.accepts_input = accepts
        updated = getattr(inner, "model_updated", None)
        if updated is not None:  # a model bolt takes model updates through the wrapper
            self.model_updated = updated

    # The collector is installed on the wrapper by the runtime; the inner bolt gets its emits.
    @property
    def collector(self) -> Any:
        return self._collector

    def prepare(self, context: TopologyContext) -> None:
        col = self._collector
        inner = self.inner
        inner._collector = _HeldAcks(self)
        inner.emit = col.bolt_emit  # type: ignore[method-assign]
        inner.emit_many = col.bolt_emit_many  # type: ignore[method-assign]
        inner.emit_direct = col.bolt_emit_direct  # type: ignore[method-assign]
        self.component, self.task = context.component, context.task_id
        self.inputs = frozenset(t for c in self.checkpoint_sources for t in context.tasks_of(c))
        self.barrier: _Barrier | None = None
        self.attempt = -1  # the latest attempt aligned (or being aligned)
        self.held: list[int] = []  # root, xor, root, xor, ... of inputs processed since the last PREPARE
        self.initialised = not self.stateful
        self.store: StateStore | None = None
        self.kv: KeyValueState | None = None
        self.failed_unready = 0  # data tuples failed while not initialised or recovering
        if self.stateful:
            self.store = open_store(context.config, task_namespace(context.topology, context.component,
                                                                  context.task_id))
        inner.prepare(context)

    def counters(self) -> dict[str, Any]:
        """The inner bolt's own counters (if it reports any), and the tuples failed unready."""
        extra = getattr(self.inner, "counters", None)
        out: dict[str, Any] = dict(extra()) if callable(extra) else {}
        if not self.passthrough:
            out["checkpoint_failed_unready"] = getattr(self, "failed_unready", 0)  # 0 before prepare
        return out

    def cleanup(self) -> None:
        try:
            self.inner.cleanup()
        finally:
            if self.store is not None:
                self.store.close()

    # -- data tuples --------------------------------------------------------------------------

    def error_reporter(self, report: Callable[[BaseException, str], None]) -> None:
        """The runtime's error reporting, for errors this wrapper handles itself (and the inner
        bolt's, if it reports its own)."""
        self._report = report
        inner_hook = getattr(self.inner, "error_reporter", None)
        if inner_hook is not None:
            inner_hook(report)

    def process(self, tup: Tuple) -> None:
        """The runtime's input: its errors are the runtime's to report (and ``tup`` is failed)."""
        if tup.stream == CHECKPOINT:
            self._mark(tup)
        elif self.passthrough:
            self.inner.process(tup)
        elif self.barrier is None and self.initialised and self.stateful and self.inner_auto:
            col = self._collector  # the common case, inline: no barrier, an auto-acked stateful bolt
            col.auto_anchor = True
            try:
                self.inner.process(tup)
            finally:
                col.auto_anchor = False
            if tup.root:
                col.acked += 1
                self.held += (tup.root, tup.edge ^ tup.ack_val)
            elif tup.multi is not None:
                self.hold(tup)
        else:
            self._dispatch(tup, direct=True)

    def _dispatch(self, tup: Tuple, direct: bool) -> None:
        if tup.stream == CHECKPOINT:
            self._mark(tup)
            return
        b = self.barrier
        if b is not None and tup.source_task in b.delivered and not tup.is_tick:
            b.behind.append(tup)  # after the barrier on its channel: waits for the others
        elif not tup.is_tick and (not self.initialised or (b is not None and b.key[1] in RECOVERY)):
            self.failed_unready += 1
            self._collector.fail(tup)  # sent before a recovery: its tree is replayed whole
        elif direct:
            self._run(tup)
        else:
            try:
                self._run(tup)
            except Exception as exc:  # noqa: BLE001 - user code, on a tuple that waited behind a barrier
                self._collector.fail(tup)
                self._report(exc, f"in process of bolt '{self.component}' task {self.task} on {tup!r}")

    def _run(self, tup: Tuple) -> None:
        col = self._collector
        col.current = tup
        col.auto_anchor = self.inner_auto
        try:
            self.inner.process(tup)
        finally:
            col.auto_anchor = False
        if self.inner_auto and tup.tracked:
            self.hold(tup)

    def hold(self, tup: Tuple) -> None:
        """``tup`` is processed: a stateful task acks it at the commit that holds its effect."""
        if not self.stateful:
            self._collector.ack(tup)
            return
        self._collector.acked += 1
        if tup.root:
            self.held += (tup.root, tup.edge ^ tup.ack_val)
        elif tup.multi is not None:
            val = tup.ack_val
            for root, edge in tup.multi.items():
                self.held += (root, edge ^ val)

    # -- checkpoint tuples --------------------------------------------------------------------

    def _mark(self, tup: Tuple) -> None:
        txid, action, attempt = tup.values
        key, attempt = (int(txid), str(action)), int(attempt)
        if attempt < self.attempt or (attempt == self.attempt and self.barrier is None):
            # An attempt the spout gave up, late on this channel (a newer one is aligned, or
            # done): not aligned with the newer one's copies; it fails, as the spout expects.
            self._collector.fail(tup)
            return
        b = self.barrier
        if b is not None and b.attempt != attempt:
            # A new action while another was being aligned (a retry after a failure): the old
            # one is given up; what waited behind it is dispatched again under the new one.
            self.barrier = None
            self._fail_marks(b.marks)
            for waiting in b.behind:
                self._dispatch(waiting, direct=False)
            b = None
        if b is None:
            b = self.barrier = _Barrier(key, attempt)
            self.attempt = attempt
        b.delivered.add(tup.source_task)
        b.marks.append(tup)
        if not self.inputs <= b.delivered:
            return
        self.barrier = None
        try:
            self._act(key[0], key[1], attempt, b.marks)
        except Exception as exc:  # noqa: BLE001 - a user hook or the store: this checkpoint fails
            self._fail_marks(b.marks)
            self._report(exc, f"in {key[1]} {key[0]} of bolt '{self.component}' task {self.task}")
        for waiting in b.behind:
            self._dispatch(waiting, direct=False)

    def _fail_marks(self, marks: list[Tuple]) -> None:
        for mark in marks:
            self._collector.fail(mark)

    def _act(self, txid: int, action: str, attempt: int, marks: list[Tuple]) -> None:
        col = self._collector
        if self.stateful:
            if action == PREPARE and not self.initialised:
                self._fail_marks(marks)  # the checkpoint spout rolls back, then sends INITSTATE
                return
            self._stateful_act(txid, action)
        col.bolt_emit([txid, action, attempt], CHECKPOINT, marks)
        if not (self.passthrough and self.auto_ack):  # else the runtime acks its input, the one mark
            for mark in marks:
                col.ack(mark)

    def _stateful_act(self, txid: int, action: str) -> None:
        store, inner, acks = self.store, self.inner, self._collector.acks
        assert store is not None
        if action == PREPARE:
            assert self.kv is not None
            inner.pre_prepare(txid)  # type: ignore[attr-defined]
            store.prepare(txid, self.kv.take_changes(), msgpack.packb(self.held))
            self.held = []
        elif action == COMMIT:
            if self.initialised:
                inner.pre_commit(txid)  # type: ignore[attr-defined]
            held = store.commit(txid)
            if held is not None and acks is not None:
                pairs = msgpack.unpackb(held)
                for i in range(0, len(pairs), 2):
                    acks.ack(pairs[i], pairs[i + 1])
        else:  # ROLLBACK or INITSTATE: back to the last commit, every held input failed
            if self.initialised:
                inner.pre_rollback()  # type: ignore[attr-defined]
            prepared = store.rollback()
            failed = self.held + (msgpack.unpackb(prepared) if prepared else [])
            self.held = []
            if acks is not None:
                for root in failed[::2]:
                    acks.fail(root)
            committed = store.load()[1]
            if self.kv is not None:
                self.kv.reset(committed)
            elif action == INITSTATE:
                self.kv = KeyValueState(committed)
                inner.state = self.kv  # type: ignore[attr-defined]
                inner.init_state(self.kv)  # type: ignore[attr-defined]
                self.initialised = True

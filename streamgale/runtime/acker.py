"""The acker: Storm's ``__acker`` system bolt, run by the runtime like any other bolt.

Each acker task owns an :class:`~streamgale.runtime.acking.AckerTable`. It
reads ``__ack`` tuples (batched inits, acks and fails from any task) a batch
at a time (``process_batch``) and answers each spout task once per batch with
one ``__ack_result`` tuple, sent with ``emit_direct``: every spout subscribes
to ``__ack_result`` with direct grouping (added by
:meth:`~streamgale.topology.Topology.with_ackers`, as Storm's system topology
does). Tick tuples make it forget expired roots while no ack traffic arrives.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from streamgale.components import Bolt, TopologyContext
from streamgale.tuples import Tuple

from .acking import ACK_CHUNK, ACK_RESULT_STREAM, ACK_STREAM, AckerTable

log = logging.getLogger("streamgale.acker")

ACK_RESULT_FIELDS = ("acked", "failed")


class Acker(Bolt):
    """Tracks tuple trees for the spouts. ``clock`` is monotonic seconds (tests inject one)."""

    outputs = {ACK_RESULT_STREAM: list(ACK_RESULT_FIELDS)}
    auto_ack = False  # its inputs are untracked system tuples

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.table: AckerTable | None = None
        self.task = -1
        self.trees_acked = 0
        self.trees_failed = 0
        self.malformed = 0

    def prepare(self, context: TopologyContext) -> None:
        self.task = context.task_id
        self.table = AckerTable(float(context.config["topology.message_timeout"]), now=self.clock())

    def process(self, tup: Tuple) -> None:
        self.process_batch([tup])

    def process_batch(self, tuples: Sequence[Tuple]) -> None:
        table = self.table
        assert table is not None, "prepare() first"
        table.expire(self.clock())
        acked: dict[int, list[int]] = {}
        failed: dict[int, list[int]] = {}
        for tup in tuples:
            if tup.stream != ACK_STREAM:
                continue  # a tick: the expiry above was its purpose
            try:
                inits, acks, fails = tup.values
                table.apply(inits, acks, fails, acked, failed)
            except (TypeError, ValueError, KeyError) as exc:
                self.malformed += 1
                log.warning("acker task %d dropped a malformed ack message from task %d: %s",
                            self.task, tup.source_task, exc)
        self.trees_acked += sum(map(len, acked.values()))
        self.trees_failed += sum(map(len, failed.values()))
        for spout_task in set(acked) | set(failed):
            done, lost = acked.get(spout_task, []), failed.get(spout_task, [])
            try:
                for start in range(0, max(len(done), len(lost)), ACK_CHUNK):
                    self.emit_direct(spout_task, [done[start:start + ACK_CHUNK], lost[start:start + ACK_CHUNK]],
                                     stream=ACK_RESULT_STREAM)
            except ValueError:
                self.malformed += 1  # an init naming a task that is no spout
                log.warning("acker task %d: task %d is no spout; its results are dropped", self.task, spout_task)

    def tracked(self) -> int:
        """Tuple trees tracked now (for metrics and tests)."""
        return 0 if self.table is None else len(self.table)

    def counters(self) -> dict[str, Any]:
        """What this task reports beside its collector's counters (trees, not ack messages)."""
        return {"tracked": self.tracked(), "acked": self.trees_acked, "failed": self.trees_failed,
                "malformed": self.malformed}

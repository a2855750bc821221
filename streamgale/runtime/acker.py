"""The acker executor: tracks tuple trees for the spouts (Storm's ``__acker`` bolt).

Each acker task owns an :class:`~streamgale.runtime.acking.AckerTable`. It reads
``__ack`` tuples (batched inits, acks and fails from any task), and answers
each spout task once per step with one ``__ack_result`` tuple listing the roots
that completed or failed.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from streamgale.runtime.acking import ACK_RESULT_INDEX, ACK_RESULT_STREAM, ACK_STREAM, ACKER, AckerTable
from streamgale.tuples import Tuple

from .executor import ErrorHandler, Executor, Sink

log = logging.getLogger("streamgale.acker")


class AckerTask:
    __slots__ = ("task", "queue", "table", "executed", "acked", "failed")

    def __init__(self, task: int, timeout: float, now: float):
        self.task = task
        self.queue: deque[Tuple] = deque()
        self.table = AckerTable(timeout, now=now)
        self.executed = 0  # ack messages processed
        self.acked = 0  # trees completed
        self.failed = 0  # trees failed


class AckerExecutor(Executor):
    kind = "acker"
    tick_interval = None

    def __init__(self, tasks: tuple[int, ...], sinks: dict[int, Sink], message_timeout: float,
                 on_error: ErrorHandler, clock: Callable[[], float] = time.monotonic):
        now = clock()
        super().__init__(ACKER, [AckerTask(t, message_timeout, now) for t in tasks], on_error)
        self.sinks = sinks
        self.clock = clock
        self.malformed = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def tracked(self) -> int:
        """Tuple trees currently tracked (for metrics and tests)."""
        return sum(len(r.table) for r in self.runners)

    def step(self, budget: int) -> int:
        work = 0
        now = self.clock()
        for r in self.runners:
            table: AckerTable = r.table
            table.expire(now)
            q = r.queue
            if not q:
                continue
            acked: dict[int, list[int]] = {}
            failed: dict[int, list[int]] = {}
            n = min(len(q), budget)
            for _ in range(n):
                tup = q.popleft()
                if tup.stream != ACK_STREAM:
                    continue
                try:
                    inits, acks, fails = tup.values
                    table.apply(inits, acks, fails, acked, failed)
                except (TypeError, ValueError, KeyError) as exc:
                    self.malformed += 1
                    log.warning("acker task %d dropped a malformed ack message from task %d: %s",
                                r.task, tup.source_task, exc)
            work += n
            r.executed += n
            r.acked += sum(map(len, acked.values()))
            r.failed += sum(map(len, failed.values()))
            for spout_task in set(acked) | set(failed):
                sink = self.sinks.get(spout_task)
                if sink is None:
                    log.warning("acker task %d: no route to spout task %d", r.task, spout_task)
                    continue
                sink(Tuple([acked.get(spout_task, []), failed.get(spout_task, [])], ACK_RESULT_STREAM,
                           ACKER, r.task, ACK_RESULT_INDEX, None))
        return work

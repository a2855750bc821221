"""The executor loop: one thread drives every executor of a worker.

Why one thread: under the GIL, threads per executor add switching and locking
without adding parallelism; a cooperative loop moves a tuple between executors
with a deque append. Parallelism across cores comes from worker processes.

Each turn: bolts drain their queues (downstream first keeps queues short), tick
timers fire, then spouts are called unless some queue is over capacity
(backpressure: a spout is never called while its outputs cannot drain). When a
turn does no work the loop waits in ``idle(timeout)``, where a cluster worker
polls its sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from .executor import Executor, SpoutExecutor
from .wakeup import Wakeup


class LoopIO(Protocol):
    """What a cluster worker plugs into the loop: its transport and control events."""

    def pump(self, idle: bool, congested: bool) -> int:
        """Send due batches and take in what arrived; ``idle``: the turn did no local work;
        ``congested``: local queues are full, so take in nothing new. Returns work done."""

    def congested(self) -> bool:
        """True while downstream workers refuse more tuples."""

    def wait(self, timeout: float, wakeup: Wakeup) -> None:
        """Block up to ``timeout`` seconds for input, or until ``wakeup`` is set."""

BOLT_BUDGET = 256  # tuples per task per turn
SPOUT_BUDGET = 64  # next_tuple calls per task per turn
MAX_IDLE = 0.01  # longest idle wait, seconds


class ExecutorLoop:
    """Drives executors; call ``start``, then ``run`` (or ``step`` in tests), then ``stop``.

    ``clock`` returns monotonic seconds (injectable for tests).
    """

    def __init__(self, executors: list[Executor], queue_size: int,
                 clock: Callable[[], float] = time.monotonic, io: LoopIO | None = None):
        self.queue_size = queue_size
        self.clock = clock
        self.io = io
        self.started = False
        # Ends the idle wait when another thread hands a task a call (call_soon_threadsafe).
        self.wakeup = Wakeup()
        # The executor whose user code runs now and since when (read by a worker's heartbeat
        # thread to report a slow component; written only by the loop thread).
        self.running: Executor | None = None
        self.running_since = 0.0
        self.executors: list[Executor] = []
        self.spouts: list[SpoutExecutor] = []
        self.bolts: list[Executor] = []
        self.queues: list[Any] = []
        self.all_queues: list[Any] = []
        self.deferred: list[Any] = []
        self._ticks: list[list[Any]] = []
        self._index(executors)

    def _index(self, executors: list[Executor]) -> None:
        """What each turn walks; tick timers of bolts already here keep their schedule."""
        self.executors = executors
        self.spouts = [e for e in executors if isinstance(e, SpoutExecutor)]
        self.bolts = [e for e in executors if not isinstance(e, SpoutExecutor)]  # bolts and ackers
        self.queues = [r.queue for b in self.bolts for r in b.runners]  # bounded: over capacity = congested
        self.all_queues = self.queues + [r.queue for s in self.spouts for r in s.runners]
        timers = {id(t[2]): t for t in self._ticks}
        now = self.clock()
        self._ticks = [timers.get(id(b)) or [b.tick_interval, now + b.tick_interval, b]
                       for b in self.bolts if b.tick_interval]
        self.deferred = [r.collector.deferred for e in executors for r in e.runners]
        for e in executors:
            for r in e.runners:
                r.collector.waker = self.wakeup

    def reshape(self, removed: list[Executor], added: list[Executor]) -> None:
        """Between turns (the loop thread): stop ``removed`` (spouts first, so they emit no
        more), start ``added`` (bolts first, ready for tuples) and run them from the next turn;
        every other executor goes on as it was. A component that cannot start raises
        :class:`StartFailed` as in :meth:`start`."""
        gone = {id(e) for e in removed}
        for e in sorted(removed, key=lambda e: not isinstance(e, SpoutExecutor)):
            e.stop()
        for e in sorted(added, key=lambda e: isinstance(e, SpoutExecutor)):
            e.start()
        self._index([e for e in self.executors if id(e) not in gone] + added)

    def start(self) -> None:
        """Open spouts and prepare bolts (bolts first, so they are ready for tuples)."""
        now = self.clock()
        for timer in self._ticks:
            timer[1] = now + timer[0]
        for e in self.bolts:
            e.start()
        for e in self.spouts:
            e.start()
        self.started = True

    def congested(self) -> bool:
        limit = self.queue_size
        for q in self.queues:
            if len(q) >= limit:
                return True
        return False

    def idle(self) -> bool:
        """True when no executor has queued tuples (spouts' ack results included)."""
        return not any(self.all_queues) and not any(self.deferred)

    def step(self) -> int:
        """One turn; returns the number of tuples processed or emitted."""
        work = 0
        clock = self.clock
        for b in self.bolts:
            self.running, self.running_since = b, clock()
            work += b.step(BOLT_BUDGET)
        self.running = None
        if self._ticks:
            now = self.clock()
            for timer in self._ticks:
                if now >= timer[1]:
                    timer[1] = now + timer[0]
                    timer[2].tick()
                    work += 1
        for s in self.spouts:
            work += s.settle()
        congested = self.congested()
        io = self.io
        if not congested and not (io is not None and io.congested()):
            for s in self.spouts:
                self.running, self.running_since = s, clock()
                work += s.step(SPOUT_BUDGET)
            self.running = None
        if io is not None:
            work += io.pump(work == 0, congested)
        return work

    def next_timer_in(self) -> float:
        if not self._ticks:
            return MAX_IDLE
        now = self.clock()
        return max(0.0, min(MAX_IDLE, min(t[1] for t in self._ticks) - now))

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Run turns until ``should_stop()``; wait briefly when turns do nothing."""
        io, wakeup = self.io, self.wakeup
        idle_turns = 0
        while not should_stop():
            if self.step():
                idle_turns = 0
                continue
            idle_turns += 1
            # Back off gently: stay hot for a few empty turns, then sleep.
            if idle_turns > 3:
                timeout = min(self.next_timer_in(), 0.0002 * idle_turns)
                if io is not None:
                    io.wait(timeout, wakeup)
                else:
                    wakeup.wait(timeout)
                wakeup.clear()

    def stop(self) -> None:
        """Close spouts, then clean up bolts; errors are reported, not raised."""
        if not self.started:
            return
        for spout in self.spouts:
            spout.stop()
        for bolt in self.bolts:
            bolt.stop()
        self.started = False
        self.wakeup.close()

    def set_active(self, active: bool) -> None:
        for s in self.spouts:
            s.set_active(active)

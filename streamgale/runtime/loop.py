"""The executor loop: one thread drives every executor of a worker.

Why one thread: under the GIL, threads per executor add switching and locking
without adding parallelism; a cooperative loop moves a tuple between executors
with a deque append. Parallelism across cores comes from worker processes.

Each turn: bolts drain their queues (downstream first keeps queues short), tick
timers fire, then spouts are called unless some queue is over capacity
(backpressure: a spout is never called while its outputs cannot drain). When a
turn does no work the loop waits, longer the longer it has been idle (a cluster
worker polls its sockets meanwhile), after ``SPIN`` seconds of turning if a
spout asked for more and emitted nothing.
"""

from __future__ import annotations

import os
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
# Seconds the loop keeps turning after its last work, before it waits, while a spout's
# next_tuple emitted nothing on its last call (paced, or polling a source): that spout is
# called again within microseconds instead of after a wait of a millisecond or more,
# which would also send what fell due meanwhile in one burst through every hop (Storm's
# progressive spout wait strategy spins first too). Each empty turn of the spin yields
# the CPU to whatever else is runnable. A loop whose spouts are throttled (trees in
# flight, backpressure), or that has none, waits at once: its next work arrives on a
# socket or a timer, and either ends the wait.
SPIN = 0.0005


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
        else:
            for s in self.spouts:
                s.asked_empty = False  # held back, not asking: the loop need not spin for it
        if io is not None:
            work += io.pump(work == 0, congested)
        return work

    def spout_asked_empty(self) -> bool:
        for s in self.spouts:
            if s.asked_empty:
                return True
        return False

    def next_timer_in(self) -> float:
        if not self._ticks:
            return MAX_IDLE
        now = self.clock()
        return max(0.0, min(MAX_IDLE, min(t[1] for t in self._ticks) - now))

    def run(self, should_stop: Callable[[], bool]) -> None:
        """Run turns until ``should_stop()``; wait when turns have done nothing for a while."""
        io, wakeup = self.io, self.wakeup
        idle_since = 0.0
        while not should_stop():
            if self.step():
                idle_since = 0.0
                continue
            now = time.perf_counter()
            if not idle_since:
                idle_since = now
                continue
            idle = now - idle_since
            if idle < SPIN and self.spout_asked_empty():
                os.sched_yield()
                continue
            # Back off: wait about as long as the loop has been idle (1 ms first), at most until
            # the next timer; input from other workers or threads ends the wait at once.
            timeout = min(self.next_timer_in(), max(0.001, idle))
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

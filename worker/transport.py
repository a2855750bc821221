"""Tuples between workers: ZeroMQ PUSH/PULL with msgpack batches per destination.

One :class:`Transport` per worker, owned by the worker's loop thread (no socket
crosses threads). The worker binds a PULL socket at its slot port and connects
one PUSH socket per remote worker it sends to. Outgoing tuples are appended to
a per-destination batch, sent when it holds ``batch_size`` tuples, when it is
older than ``linger`` seconds, or as soon as the loop runs out of local work.

Frames are encoded and decoded by :mod:`streamgale.wire.frames`.
Every frame received is decoded with limits and validated entry by entry; a
malformed frame or entry is dropped and counted, and the worker goes on.
ZeroMQ may drop frames across disconnects: correctness rests on acking.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

import zmq

from streamgale.config import SETTINGS
from streamgale.ratelimit import RateLimitedLog
from streamgale.runtime.wakeup import Wakeup
from streamgale.security import Security
from streamgale.security.access import WORKERS
from streamgale.tuples import Tuple
from streamgale.wire.frames import Batch, RemoteSink, decode_frame

log = logging.getLogger("streamgale.transport")

# A turn takes in at most this many frames, and stops after a batch's worth of tuples, so what
# arrives is processed while it is still in cache (as the spouts' SPOUT_EMITS).
RECEIVE_FRAMES = 64
HWM = 8  # frames queued per socket each way: with frames of up to batch_size tuples, what may wait in ZeroMQ


class Inbound:
    """How to turn a received entry into a local Tuple: what this worker accepts."""

    def __init__(self, queues: dict[int, Callable[[Tuple], None]], task_component: Mapping[int, str],
                 index: Mapping[str, Mapping[str, Mapping[str, int]]]):
        self.queues = queues  # local bolt task -> deque.append
        self.task_component = task_component  # every task of the topology -> component
        self.index = index  # component -> stream -> field index


BATCH_SIZE: int = SETTINGS["topology.batch_size"].default  # the config's defaults, for callers without one
BATCH_LINGER: float = SETTINGS["topology.batch_linger"].default


class Transport:
    """Owned by one thread: the worker loop. ``pump`` once per loop turn."""

    def __init__(self, context: zmq.Context, port: int, inbound: Inbound, batch_size: int = BATCH_SIZE,
                 linger: float = BATCH_LINGER, max_message_bytes: int = 64 << 20, hwm: int = HWM,
                 bind_host: str = "*", scheme: str = "tcp", host: str = "", security: Security | None = None):
        self.inbound = inbound
        self.security = security if security is not None else Security.off()
        self.batch_size = batch_size
        self.linger = linger
        self.context = context
        self.hwm = hwm
        self.scheme = scheme
        # Peers send at most batch_size tuples a frame; a frame claiming many more is hostile or
        # broken, and decoding it whole would hold the loop (and the tuples' memory) for seconds.
        self.max_tuples = max(4 * batch_size, 1024)
        self.pull = context.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
        self.pull.setsockopt(zmq.RCVHWM, hwm)
        self.security.serve(self.pull, WORKERS)  # security on: only daemon keys, every frame encrypted
        self.pull.bind(f"tcp://{bind_host}:{port}" if scheme == "tcp" else f"{scheme}://{host}:{port}")
        self._pushes: dict[str, zmq.Socket] = {}
        self._batches: dict[str, Batch] = {}
        self._batch_started: dict[str, float] = {}
        self._outbox: dict[str, deque[bytes]] = {}  # frames a full peer refused, retried in order
        self._bad = RateLimitedLog(log, interval=5.0)
        self.dropped_frames = 0
        self.dropped_entries = 0
        self.received = 0
        self.sent = 0
        self.paused = False  # set by the loop while local queues are full
        self._poller: zmq.Poller | None = None  # the pull socket and the loop's wakeup (built at the first wait)

    # -- sending ----------------------------------------------------------------------------

    def sink(self, task: int, endpoint: str) -> Callable[[Tuple], None]:
        """A sink that batches tuples for ``task`` running at ``endpoint`` (host:port)."""
        return RemoteSink(self._batch_for(endpoint), task, self.batch_size, lambda: self._flush(endpoint))

    def _batch_for(self, endpoint: str) -> Batch:
        batch = self._batches.get(endpoint)
        if batch is None:
            sock = self.context.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.IMMEDIATE, 1)  # queue only on completed connections
            self.security.connect(sock)
            sock.connect(f"{self.scheme}://{endpoint}")
            self._pushes[endpoint] = sock
            batch = self._batches[endpoint] = Batch()
        return batch

    def _flush(self, endpoint: str) -> None:
        batch = self._batches[endpoint]
        if not batch:
            return
        self.sent += len(batch)
        frame = batch.encode()
        self._batch_started.pop(endpoint, None)
        outbox = self._outbox.get(endpoint)
        if outbox:
            # Never dropped: while any outbox is non-empty the spouts are stopped (congested),
            # so it holds at most what local queues still emit; a peer that is gone for good
            # has its outbox discarded when the assignment moves its tasks (retarget).
            outbox.append(frame)
            return
        try:
            self._pushes[endpoint].send(frame, zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self._outbox.setdefault(endpoint, deque()).append(frame)

    def _retry(self, endpoint: str) -> None:
        outbox = self._outbox[endpoint]
        sock = self._pushes[endpoint]
        while outbox:
            try:
                sock.send(outbox[0], zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            outbox.popleft()
        del self._outbox[endpoint]

    def counters(self) -> dict[str, int]:
        """Tuples received and sent, malformed frames and tuples dropped, and peers whose key this
        process's authenticator denied (security on), for metrics; any thread (plain ints)."""
        return {"received": self.received, "sent": self.sent, "dropped_frames": self.dropped_frames,
                "dropped_entries": self.dropped_entries, "denied_keys": self.security.denied}

    def flush_all(self) -> None:
        for endpoint, batch in self._batches.items():
            if batch:
                self._flush(endpoint)

    def congested(self) -> bool:
        """True while some peer refuses frames (its queue is full): stop the spouts."""
        return bool(self._outbox)

    def retarget(self, endpoints: set[str]) -> list[bytes]:
        """Close sockets to endpoints no longer used (after an assignment change). Returns the
        frames still waiting for them, oldest first (refused while the peer was gone, and the
        batch not sent yet): the caller sends their tuples on to where the tasks run now."""
        left: list[bytes] = []
        for endpoint in list(self._pushes):
            if endpoint not in endpoints:
                self._pushes.pop(endpoint).close(0)
                left.extend(self._outbox.pop(endpoint, ()))
                batch = self._batches.pop(endpoint, None)
                if batch:
                    left.append(batch.encode())
                self._batch_started.pop(endpoint, None)
        return left

    def redeliver(self, frames: list[bytes], sinks: Mapping[int, Callable[[Tuple], None]]) -> int:
        """Send the tuples of ``frames`` (from :meth:`retarget`) through ``sinks`` (task -> where
        it runs now); returns how many. A task no sink names is dropped, as on receipt."""
        n = 0
        for frame in frames:
            n += decode_frame(frame, sinks, self.inbound.task_component, self.inbound.index, 1 << 30,
                              self._bad.warning).tuples
        return n

    # -- the loop's hooks ---------------------------------------------------------------------

    def pump(self, idle: bool, congested: bool) -> int:
        """Retry refused frames, flush batches that are due, receive what is waiting.

        ``idle`` means the loop had no local work: flush every partial batch now.
        ``congested`` means local queues are full: receive nothing, so the
        peers' queues fill and they stop their spouts (backpressure across
        workers). Returns the number of tuples received.
        """
        self.paused = congested
        for endpoint in list(self._outbox):
            self._retry(endpoint)
        now = time.monotonic()
        for endpoint, batch in self._batches.items():
            if not batch:
                continue
            started = self._batch_started.setdefault(endpoint, now)
            if idle or now - started >= self.linger:
                self._flush(endpoint)
        return 0 if self.paused else self._receive(RECEIVE_FRAMES, self.batch_size)

    def wait(self, timeout: float, wakeup: Wakeup) -> None:
        """Block up to ``timeout`` seconds for incoming frames or ``wakeup`` (the loop is idle)."""
        if self.paused or self._outbox:
            wakeup.wait(min(timeout, 0.001))
            return
        poller = self._poller
        if poller is None:
            poller = self._poller = zmq.Poller()
            poller.register(self.pull, zmq.POLLIN)
            poller.register(wakeup.fileno(), zmq.POLLIN)
        poller.poll(max(0, int(timeout * 1000)))

    def _receive(self, max_frames: int, max_tuples: int) -> int:
        """Take in up to ``max_frames`` frames, stopping once ``max_tuples`` tuples arrived."""
        received = 0
        recv = self.pull.recv
        for _ in range(max_frames):
            if received >= max_tuples:
                break  # the rest waits in ZeroMQ until the bolts have taken these (cache, fairness)
            try:
                frame = recv(zmq.NOBLOCK, copy=True)
            except zmq.Again:
                break
            received += self._deliver(frame)
        self.received += received
        return received

    def _deliver(self, frame: bytes) -> int:
        """Decode one frame into the local queues; count what was malformed."""
        inbound = self.inbound
        out = decode_frame(frame, inbound.queues, inbound.task_component, inbound.index, self.max_tuples,
                           self._bad.warning)
        self.dropped_frames += out.dropped_frames
        self.dropped_entries += out.dropped_entries
        return out.tuples

    def close(self) -> None:
        for sock in self._pushes.values():
            sock.close(0)
        self._pushes.clear()
        self.pull.close(0)

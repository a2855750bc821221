"""The worker's heartbeat thread: its only link to its supervisor.

Liveness must not depend on how long user code takes, so heartbeats are not
written by the executor loop: this thread owns the worker's DEALER socket to
the supervisor (:mod:`streamgale.wire.channel`) and, every ``interval``
seconds, sends a beat; every ``metrics_interval`` a metrics snapshot; and at
once every error the loop queued. Control messages from the supervisor go to
the loop through ``controls`` (the loop applies them between turns).

It also watches the loop: when one executor has been inside user code for
longer than ``slow_after`` seconds it reports that component as slow (name,
tasks, how long, its mean execute latency), at most once per ``slow_every``
seconds per component, instead of the worker looking dead.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from streamgale.cluster.records import ErrorRecord
from streamgale.runtime.loop import ExecutorLoop
from streamgale.security import Security
from streamgale.wire import channel

log = logging.getLogger("streamgale.worker")

SEND_HWM = 64  # frames queued for an absent supervisor; beyond that, beats are dropped (they repeat)


class Heartbeat:
    """Start with :meth:`start`; :meth:`close` sends what is queued and joins the thread."""

    def __init__(self, context: zmq.Context, url: str, identity: bytes, beat: Callable[[], channel.WorkerBeat],
                 metrics: Callable[[], dict[str, Any] | None], controls: queue.SimpleQueue[channel.WorkerControl],
                 loop: ExecutorLoop, where: tuple[str, int],
                 interval: float = 1.0, metrics_interval: float = 2.0, slow_after: float = 5.0,
                 slow_every: float = 30.0, clock: Callable[[], float] = time.monotonic,
                 security: Security | None = None):
        self.context, self.url, self.identity = context, url, identity
        self.security = security if security is not None else Security.off()
        self.beat, self.metrics, self.loop = beat, metrics, loop
        self.host, self.port = where
        self.interval, self.metrics_interval = interval, metrics_interval
        self.slow_after, self.slow_every = slow_after, slow_every
        self.clock = clock
        self.controls = controls
        self.errors: queue.Queue[ErrorRecord] = queue.Queue(maxsize=100)
        self._stop = threading.Event()
        self._slow_reported: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def report(self, record: ErrorRecord) -> None:
        """Queue an error for the supervisor (any thread; never blocks, drops when 100 are queued)."""
        try:
            self.errors.put_nowait(record)
        except queue.Full:
            pass

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    # -- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        sock = self.context.socket(zmq.DEALER)
        sock.setsockopt(zmq.ROUTING_ID, self.identity)
        sock.setsockopt(zmq.LINGER, 500)  # the last errors get out on close
        sock.setsockopt(zmq.SNDHWM, SEND_HWM)
        self.security.connect(sock)
        sock.connect(self.url)
        next_beat = next_metrics = self.clock()
        try:
            while True:
                stopping = self._stop.is_set()
                now = self.clock()
                if now >= next_beat:
                    next_beat = now + self.interval
                    self._send(sock, self.beat())
                    self._check_slow(now)
                if now >= next_metrics:
                    metrics = self.metrics()
                    if metrics is None:  # nothing runs yet (components opening): ask again soon
                        next_metrics = now + min(0.1, self.metrics_interval)
                    else:
                        next_metrics = now + self.metrics_interval
                        self._send(sock, channel.WorkerMetrics(metrics))
                while not self.errors.empty():
                    self._send(sock, channel.WorkerErrorReport(self.errors.get_nowait().to_dict()))
                if stopping:
                    return
                wait = max(0.0, min(next_beat, next_metrics) - self.clock())
                if sock.poll(int(min(wait, 0.1) * 1000) + 1):
                    self._receive(sock)
        except Exception:  # noqa: BLE001 - keep the reason in the log; the supervisor sees the silence
            log.exception("heartbeat thread failed")
        finally:
            sock.close()

    def _send(self, sock: zmq.Socket, message: channel.Message) -> None:
        try:
            sock.send(channel.encode(message), zmq.NOBLOCK)
        except zmq.Again:
            pass  # no supervisor for a while: beats repeat, metrics are cumulative

    def _receive(self, sock: zmq.Socket) -> None:
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = channel.decode(frame)
            except channel.ChannelError as e:
                log.warning("ignored a malformed message from the supervisor: %s", e)
                continue
            if isinstance(message, channel.WorkerControl):
                self.controls.put(message)

    def _check_slow(self, now: float) -> None:
        executor, since = self.loop.running, self.loop.running_since
        if executor is None or now - since < self.slow_after:
            return
        name = executor.component
        if now - self._slow_reported.get(name, -self.slow_every) < self.slow_every:
            return
        self._slow_reported[name] = now
        tasks = executor.tasks()
        executed = sum(r.collector.executed for r in executor.runners)
        busy = sum(r.collector.busy for r in executor.runners)
        latency = f"{busy / executed * 1000:.1f} ms per tuple over {executed} tuples" if executed else "none yet"
        message = (f"SlowComponent: component '{name}' (tasks {tasks}) has been in one call of its user code "
                   f"for {now - since:.1f} s; execute latency {latency}. The worker is alive; the component "
                   "is too slow for its input (raise its parallelism, or make next_tuple/process return sooner)")
        log.warning("%s", message)
        self.report(ErrorRecord(name, tasks[0] if tasks else -1, self.host, self.port, time.time(), message))


def send_once(context: zmq.Context, url: str, identity: bytes, message: channel.Message,
              security: Security | None = None) -> None:
    """Send one message to the supervisor from a fresh socket (a worker failing before its
    heartbeat thread started); waits up to a second for it to leave."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.LINGER, 1000)
    try:
        if security is not None:
            security.connect(sock)
        sock.connect(url)
        sock.send(channel.encode(message), zmq.NOBLOCK)
    except (zmq.ZMQError, ValueError):  # ValueError: a key file security needs is missing
        pass
    finally:
        sock.close()

"""The source contract: a spout over a broker that commits a message only once it is processed.

A connector subclasses :class:`SourceSpout` and implements the broker side:

- ``connect()``: open the connection (raise on failure: the spout retries with backoff);
- ``fetch(limit)``: up to ``limit`` :class:`Message`\\ s now, never blocking for long
  (a short poll); each message's ``id`` is the broker's own (a stream entry id, a
  delivery tag, a (file, offset) pair) and hashable;
- ``commit(ids)``: tell the broker these are done (``XACK``, ``basic_ack``, an offset
  write), called only after their whole tuple tree is acked;
- optionally ``release(message)`` (give a failed message back to the broker for
  another consumer: ``nack`` with requeue), ``dead_letter(message, reason)`` (where a
  message goes after ``max_retries`` failed attempts; default: logged and committed,
  so it stops coming back), ``lag()`` (messages waiting at the broker, for the
  ``lag`` metric), ``disconnect()``.

What the base class guarantees, for every connector:

- **Commit on ack, never before.** A message's id is its tuple's ``msg_id``; it is
  committed in :meth:`ack` batches (at most ``commit_batch`` ids, flushed every
  ``next_tuple``), and only then.
- **Replay on fail.** A failed message is emitted again after a backoff (``retry_backoff``
  doubling up to ``retry_backoff_max``), up to ``max_retries`` times (None: forever),
  then handed to ``dead_letter``.
- **Bounded in flight.** ``fetch`` is asked for at most ``max_in_flight`` messages
  minus those pending, and nothing while retries are due: at most
  ``topology.max_spout_pending`` when acking is on.
- **Connection loss.** Any exception from the broker side marks the connection lost:
  the spout stops fetching, logs once per loss, reconnects with backoff
  (``reconnect_backoff`` doubling up to ``reconnect_backoff_max``), and counts
  ``connection_lost`` and ``reconnects``. Pending messages stay pending: their commit
  is retried after the reconnect (a broker that redelivered them meanwhile is the
  at-least-once case).
- **Metrics** (``counters()``, in ``streamgale stats --json`` and ``/metrics``):
  ``fetched``, ``committed``, ``retried``, ``dead_lettered``, ``connection_lost``,
  ``reconnects``, ``lag``, ``connected``.

Work is split across spout tasks by the broker (a consumer group, a shared queue)
or by the connector (``context.task_index`` of ``context.task_count``: partitions,
files). A restarted task resumes from what was committed: the broker redelivers the
rest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streamgale.components import Spout, TopologyContext

from .reconnect import Reconnecting

log = logging.getLogger("streamgale.connectors")


@dataclass
class Message:
    """One broker message: its broker id (the tuple's msg_id) and the values to emit."""

    id: Hashable
    values: list[Any]
    attempts: int = field(default=0, compare=False)


class SourceSpout(Reconnecting, Spout):
    """Base of every broker source (see the module docstring for the contract)."""

    max_retries: int | None = 5
    retry_backoff = 0.1  # seconds before the first replay of a failed message
    retry_backoff_max = 5.0
    commit_batch = 500  # ids per commit call
    max_in_flight = 1000  # when acking is off or max_spout_pending is null
    stream = "default"
    clock: Callable[[], float] = time.monotonic

    # -- the broker side (connectors implement these) ------------------------------------------

    def fetch(self, limit: int) -> Sequence[Message]:
        raise NotImplementedError(f"{type(self).__name__} must implement fetch(limit)")

    def commit(self, ids: list[Hashable]) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement commit(ids)")

    def release(self, message: Message) -> bool:
        """Give a failed message back to the broker instead of replaying it here; True if
        done (the broker will deliver it again). Default: False, replay from this task."""
        return False

    def dead_letter(self, message: Message, reason: str) -> None:
        """After ``max_retries`` failed attempts. Default: log it and commit it (it is dropped)."""
        log.error("%s: message %r failed %d times (%s); dropped (committed)", self._name, message.id,
                  message.attempts, reason)
        self.commit([message.id])

    def lag(self) -> int | None:
        """Messages waiting at the broker for this task, if the broker says."""
        return None

    def disconnect(self) -> None:
        """Close the connection (best effort)."""

    # -- the spout side ------------------------------------------------------------------------

    def open(self, context: TopologyContext) -> None:
        pending = context.config.get("topology.max_spout_pending")
        acking = context.config.get("topology.acker_executors") != 0
        self._limit = int(pending) if acking and pending else self.max_in_flight
        self._name = f"{context.component}[{context.task_id}]"
        self._context = context
        self._pending: dict[Hashable, Message] = {}
        self._retry: deque[tuple[float, Hashable]] = deque()  # (due, id), due times ascending
        self._to_commit: list[Hashable] = []
        self._connected = False
        self._next_connect = 0.0
        self._connect_delay = self.reconnect_backoff
        self.stats = {"fetched": 0, "committed": 0, "retried": 0, "dead_lettered": 0, "connection_lost": 0,
                      "reconnects": 0}
        self._ensure_connected()


    def _lost(self, exc: BaseException, doing: str) -> None:
        self.stats["connection_lost"] += 1
        self._connected = False
        self._next_connect = self.clock() + self._connect_delay
        log.warning("%s: connection lost while %s (%s); reconnecting", self._name, doing, exc)
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001
            pass

    def next_tuple(self) -> None:
        if not self._ensure_connected():
            return
        if self._to_commit and not self._flush_commits():
            return
        now = self.clock()
        while self._retry and self._retry[0][0] <= now:
            _, msg_id = self._retry.popleft()
            message = self._pending.get(msg_id)
            if message is not None:
                self.stats["retried"] += 1
                self.emit(message.values, stream=self.stream, msg_id=msg_id)
        room = self._limit - len(self._pending)
        if room <= 0:
            return
        try:
            messages = self.fetch(room)
        except Exception as exc:  # noqa: BLE001
            self._lost(exc, "fetching")
            return
        for message in messages:
            if message.id in self._pending:
                continue  # redelivered while still in flight here
            self._pending[message.id] = message
            self.stats["fetched"] += 1
            self.emit(message.values, stream=self.stream, msg_id=message.id)

    def _flush_commits(self) -> bool:
        ids = self._to_commit
        try:
            for start in range(0, len(ids), self.commit_batch):
                self.commit(ids[start:start + self.commit_batch])
        except Exception as exc:  # noqa: BLE001 - kept, committed again after the reconnect
            self._lost(exc, "committing")
            return False
        self.stats["committed"] += len(ids)
        self._to_commit = []
        return True

    def ack(self, msg_id: Any) -> None:
        if self._pending.pop(msg_id, None) is not None:
            self._to_commit.append(msg_id)
            if len(self._to_commit) >= self.commit_batch and self._connected:
                self._flush_commits()  # also while deactivated, when next_tuple is not called

    def deactivate(self) -> None:
        """Commit what is acked now: a deactivated spout's next_tuple is not called."""
        if self._to_commit and self._connected:
            self._flush_commits()

    def fail(self, msg_id: Any) -> None:
        message = self._pending.get(msg_id)
        if message is None:
            return
        message.attempts += 1
        if self.max_retries is not None and message.attempts > self.max_retries:
            del self._pending[msg_id]
            self.stats["dead_lettered"] += 1
            try:
                self.dead_letter(message, "its tuple tree failed or timed out")
            except Exception as exc:  # noqa: BLE001
                self._lost(exc, "dead-lettering")
            return
        try:
            if self.release(message):
                del self._pending[msg_id]
                return
        except Exception as exc:  # noqa: BLE001
            self._lost(exc, "releasing a failed message")
        delay = min(self.retry_backoff * 2 ** (message.attempts - 1), self.retry_backoff_max)
        self._retry.append((self.clock() + delay, msg_id))
        if len(self._retry) > 1 and self._retry[-2][0] > self._retry[-1][0]:
            self._retry = deque(sorted(self._retry, key=lambda e: e[0]))

    def counters(self) -> dict[str, Any]:
        if "stats" not in self.__dict__:
            return {}  # open() has not run (or raised)
        try:
            lag = self.lag() if self._connected else None
        except Exception:  # noqa: BLE001 - a metric never breaks the spout
            lag = None
        return {**self.stats, "pending": len(self._pending), "lag": lag, "connected": self._connected}

    def close(self) -> None:
        if self._to_commit and self._connected:
            self._flush_commits()
        try:
            self.disconnect()
        except Exception:  # noqa: BLE001
            pass

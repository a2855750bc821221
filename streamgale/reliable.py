"""A spout helper that never loses a message: pending by id, replay on fail."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from .components import Spout


class ReliableSpout(Spout):
    """Keeps every emitted message until it is acked; replays failed ones.

    Subclasses implement :meth:`next_message`, returning ``(msg_id, values)``
    or ``None`` when nothing is ready (it must not block). A failed message is
    emitted again (before new ones) up to ``max_retries`` times (``None``:
    forever); after that :meth:`on_exhausted` is called and it is dropped.
    :meth:`on_acked` is called once a message is fully processed.

    ``msg_id`` must be hashable and unique among the messages in flight.
    Override ``stream`` to emit on another stream. The counters ``acked``,
    ``failed`` (every fail, including ones that were retried) and ``replayed``
    are kept per task.
    """

    max_retries: int | None = None
    stream: str = "default"

    def _reliable_state(self) -> None:
        self._pending: dict[Any, tuple[Sequence[Any], int]] = {}  # msg_id -> (values, attempts)
        self._retry: deque[Any] = deque()
        self.acked = 0
        self.failed = 0
        self.replayed = 0

    def next_message(self) -> tuple[Any, Sequence[Any]] | None:
        """The next (msg_id, values) to emit, or None."""
        raise NotImplementedError(f"{type(self).__name__} must implement next_message(self)")

    def on_acked(self, msg_id: Any, values: Sequence[Any]) -> None:
        """Called when the message is fully processed."""

    def on_exhausted(self, msg_id: Any, values: Sequence[Any]) -> None:
        """Called when a message failed more than ``max_retries`` times; it is then dropped."""

    @property
    def pending_count(self) -> int:
        """Messages emitted and neither acked nor given up yet."""
        return len(self.__dict__.get("_pending", ()))

    def next_tuple(self) -> None:
        if "_pending" not in self.__dict__:
            self._reliable_state()
        if self._retry:
            msg_id = self._retry.popleft()
            entry = self._pending.get(msg_id)
            if entry is not None:
                self.replayed += 1
                self.emit(entry[0], stream=self.stream, msg_id=msg_id)
            return
        message = self.next_message()
        if message is None:
            return
        msg_id, values = message
        self._pending[msg_id] = (values, 0)
        self.emit(values, stream=self.stream, msg_id=msg_id)

    def ack(self, msg_id: Any) -> None:
        entry = self._pending.pop(msg_id, None)
        if entry is not None:
            self.acked += 1
            self.on_acked(msg_id, entry[0])

    def fail(self, msg_id: Any) -> None:
        entry = self._pending.get(msg_id)
        if entry is None:
            return
        self.failed += 1
        values, attempts = entry
        if self.max_retries is not None and attempts >= self.max_retries:
            del self._pending[msg_id]
            self.on_exhausted(msg_id, values)
            return
        self._pending[msg_id] = (values, attempts + 1)
        self._retry.append(msg_id)

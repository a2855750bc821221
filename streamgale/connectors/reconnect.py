"""Connecting with backoff, shared by the source and sink contracts."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("streamgale.connectors")


class Reconnecting:
    """``_ensure_connected()``: connect now, or after a backoff doubling from ``reconnect_backoff``
    up to ``reconnect_backoff_max``; counts ``reconnects`` in ``stats`` after a ``connection_lost``."""

    reconnect_backoff = 0.1
    reconnect_backoff_max = 5.0
    _name: str
    _connected: bool
    _next_connect: float
    _connect_delay: float
    clock: Any
    stats: dict[str, int]

    def connect(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement connect()")

    def _ensure_connected(self) -> bool:
        if self._connected:
            return True
        now = self.clock()
        if now < self._next_connect:
            return False
        try:
            self.connect()
        except Exception as exc:  # noqa: BLE001 - any broker error: try again later
            self._next_connect = now + self._connect_delay
            log.warning("%s: cannot connect (%s); retrying in %.1f s", self._name, exc, self._connect_delay)
            self._connect_delay = min(self._connect_delay * 2, self.reconnect_backoff_max)
            return False
        if self.stats["connection_lost"]:
            self.stats["reconnects"] += 1
            log.warning("%s: reconnected", self._name)
        self._connected = True
        self._connect_delay = self.reconnect_backoff
        return True


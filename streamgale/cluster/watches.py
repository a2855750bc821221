"""Watches that deliver decoded records, built on a storage's raw watches.

Callbacks run where the storage's watch callbacks run (the caller's thread for
the first call, the storage's event thread after): they must be quick and must
not block. Malformed znode data never reaches a callback: it is logged (once
per ten minutes for each znode) and skipped. An exception from a callback is logged, and the watch goes on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from streamgale.ratelimit import RateLimitedLog

from .storage import Stat, Storage, call_quietly

log = logging.getLogger(__name__)

T = TypeVar("T")
Decode = Callable[[bytes, Stat], T]


MALFORMED_LOG_INTERVAL = 600.0  # seconds: a malformed znode, read every second, is logged once per ten minutes
_MAX_MALFORMED_LOGS = 1024
_malformed_logs: dict[str, RateLimitedLog] = {}
_malformed_lock = threading.Lock()


def decoded(decode: Callable[..., T], path: str, *args: Any) -> T | None:
    """``decode(*args)``, or None if the data at ``path`` is malformed in any way (logged once
    per :data:`MALFORMED_LOG_INTERVAL` for each path, with the count held back since)."""
    try:
        return decode(*args)
    except Exception as e:  # noqa: BLE001 - any malformed record is skipped, never raised into a watcher
        log_malformed(path, e)
        return None


def log_malformed(path: str, error: Exception) -> None:
    """Warn that the znode at ``path`` is malformed: once per :data:`MALFORMED_LOG_INTERVAL` per path."""
    with _malformed_lock:
        limited = _malformed_logs.get(path)
        if limited is None:
            if len(_malformed_logs) >= _MAX_MALFORMED_LOGS:
                _malformed_logs.clear()
            limited = _malformed_logs[path] = RateLimitedLog(log, MALFORMED_LOG_INTERVAL)
    limited.warning("ignoring malformed znode %s: %s", path, error)


class Watch:
    """Handle of a watch: after :meth:`cancel` its callback is not called again."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ChildrenDataWatch(Watch):
    """The decoded data of every child of ``path``, delivered whole (name -> value) on any change."""

    def __init__(self, storage: Storage, path: str, decode: Decode[Any], cb: Callable[[dict[str, Any]], None]):
        super().__init__()
        self._storage, self._path, self._decode, self._cb = storage, path, decode, cb
        self._lock = threading.RLock()
        self._values: dict[str, Any] = {}
        self._tokens: dict[str, object] = {}  # child -> token of its live data watch
        self._building = False
        storage.watch_children(path, self._on_children)

    def _on_children(self, children: list[str]) -> bool | None:
        with self._lock:
            if self.cancelled:
                return False
            self._building = True  # one delivery for the whole batch, not one per new child
            try:
                for name in set(self._tokens) - set(children):
                    del self._tokens[name]
                    self._values.pop(name, None)
                for name in sorted(set(children) - set(self._tokens)):
                    token = self._tokens[name] = object()
                    self._storage.watch_data(f"{self._path}/{name}", self._data_callback(name, token))
            finally:
                self._building = False
            call_quietly(self._cb, dict(self._values))
        return None

    def _data_callback(self, name: str, token: object) -> Callable[[bytes | None, Stat | None], bool | None]:
        def on_data(data: bytes | None, stat: Stat | None) -> bool | None:
            with self._lock:
                if self.cancelled or self._tokens.get(name) is not token:
                    return False
                keep: bool | None = None
                if data is None or stat is None:  # deleted: the children watch re-adds it if it comes back
                    del self._tokens[name]
                    self._values.pop(name, None)
                    keep = False
                else:
                    value = decoded(self._decode, f"{self._path}/{name}", data, stat)
                    if value is None:
                        self._values.pop(name, None)
                    else:
                        self._values[name] = value
                if not self._building:
                    call_quietly(self._cb, dict(self._values))
                return keep

        return on_data


def watch_node(storage: Storage, path: str, decode: Decode[T], cb: Callable[[T | None], None]) -> Watch:
    """Call ``cb(decoded value, or None while absent)`` now and on every change; malformed data is skipped."""
    handle = Watch()

    def on_data(data: bytes | None, stat: Stat | None) -> bool | None:
        if handle.cancelled:
            return False
        value = None if data is None or stat is None else decoded(decode, path, data, stat)
        if stat is None or value is not None:  # malformed: skipped
            call_quietly(cb, value)
        return None

    storage.watch_data(path, on_data)
    return handle

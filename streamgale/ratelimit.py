"""One warning per interval for what a peer can repeat at will (bad frames, refused handshakes)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any


class RateLimitedLog:
    """Logs at most one warning per ``interval`` seconds; the next one says how many were held back.

    Thread-safe. ``clock`` is monotonic seconds (injected in tests).
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.interval = interval
        self.clock = clock
        self._next = -math.inf
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: Any) -> None:
        with self._lock:
            now = self.clock()
            if now < self._next:
                self._suppressed += 1
                return
            if self._suppressed:
                message += " (%d similar warnings suppressed)"
                args = (*args, self._suppressed)
            self._suppressed = 0
            self._next = now + self.interval
        self.logger.warning(message, *args)


class ErrorThrottle:
    """Which errors of a component to log and report: the first, then at most one per ``interval``
    seconds per component, each saying how many were held back since the one before (pure: the
    caller gives the time; not thread-safe)."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self.counts: dict[str, int] = {}  # component -> errors seen

    def admit(self, component: str, now: float) -> int | None:
        """None: hold this error back; else the number held back since the last one admitted."""
        self.counts[component] = self.counts.get(component, 0) + 1
        last = self._last.get(component)
        if last is not None and now - last < self.interval:
            self._held[component] = self._held.get(component, 0) + 1
            return None
        self._last[component] = now
        return self._held.pop(component, 0)


def held_back(component: str, held: int) -> str:
    """The note on an admitted error after ``held`` were held back."""
    return f" (and {held} more errors of '{component}' since the last one reported)" if held else ""

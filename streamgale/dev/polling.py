"""A bounded poll: how tests and dev helpers wait for a condition (never a bare sleep)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll_until(predicate: Callable[[], T], timeout: float, message: str = "condition", interval: float = 0.02,
               check: Callable[[], None] | None = None, error: type[Exception] = AssertionError) -> T:
    """Call ``predicate`` every ``interval`` s until it returns something truthy, and return that.

    ``check()`` runs before each try (it may raise to fail fast, e.g. when a daemon died); after
    ``timeout`` s ``error`` is raised naming ``message``.
    """
    deadline = time.monotonic() + timeout
    while True:
        if check is not None:
            check()
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)

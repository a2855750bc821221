"""Wake the executor loop from another thread.

A component that hands work to a thread of its own (a model bolt's inference
thread) gets the results back onto the loop thread with
``call_soon_threadsafe``; :class:`Wakeup` is how that call ends the loop's idle
wait at once, instead of after the longest idle wait. It is a non-blocking pipe:
``set`` writes a byte (from any thread), the loop waits on :meth:`fileno`
beside its sockets and calls :meth:`clear` after each wait.
"""

from __future__ import annotations

import os
import select


class Wakeup:
    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)
        self._closed = False

    def fileno(self) -> int:
        return self._read

    def set(self) -> None:
        """Wake the loop (thread-safe)."""
        if self._closed:
            return  # the loop is gone; the descriptor number may belong to another file now
        try:
            os.write(self._write, b"\0")
        except (BlockingIOError, OSError):
            pass  # the pipe is full (the loop will wake anyway) or closed (the loop is gone)

    def clear(self) -> None:
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def wait(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds or until :meth:`set` (local mode: no sockets to poll)."""
        select.select([self._read], [], [], timeout)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._read, self._write):
            try:
                os.close(fd)
            except OSError:
                pass

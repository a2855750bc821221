"""One multi-lang subprocess: started, handshaken, read, written and watched.

The I/O shell under :class:`~streamgale.multilang.ShellBolt` and
:class:`~streamgale.multilang.ShellSpout`. The task's loop thread starts the
process and hands it bytes to write (:meth:`ShellProcess.send`: never
blocks); three threads of its own do the rest:

- the **reader** checks the answer to the handshake, then decodes what the
  subprocess writes and hands the messages over (``deliver``, a list at a
  time), stamping when it last heard anything;
- the **writer** writes what was sent (joined: one write per wake-up), and every
  ``interval`` seconds arms the watchdog: a bolt's heartbeat is sent, a spout's
  unanswered command counts. A subprocess that says nothing for ``timeout``
  seconds after that is killed (it hangs);
- the **stderr reader** logs each line the subprocess writes to stderr (the
  worker log) and keeps the last lines for the error report.

Whatever ends the process (it exits, is killed, writes garbage, hangs), the
reader reports it once, with the reason and the stderr tail (``exited``). The
process dies with the worker: it gets SIGKILL when the thread that started it
ends (``PR_SET_PDEATHSIG``), so a ``kill -9`` of the worker leaves no orphan.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from .framing import JsonFraming, MsgpackFraming, ProtocolError
from .messages import handshake_pid

log = logging.getLogger("streamgale.multilang")

STDERR_TAIL = 20  # lines kept for the report of a subprocess that ended
READ_CHUNK = 1 << 16
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the subprocess ends on EOF of its stdin instead
        pass


class ShellProcess:
    """``deliver(messages)`` and ``exited(reason, stderr_tail)`` are called on the reader thread;
    ``awaiting()`` (is a reply due?) and ``heartbeat()`` (bytes to send, or None) on the writer's."""

    def __init__(self, command: Sequence[str], cwd: str, framing: JsonFraming | MsgpackFraming, name: str,
                 setup: dict[str, Any], deliver: Callable[[list[Any]], None],
                 exited: Callable[[str, str], None], timeout: float,
                 awaiting: Callable[[], bool], heartbeat: Callable[[], bytes | None],
                 interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.command = list(command)
        self.cwd = cwd
        self.framing = framing
        self.name = name
        self._setup = setup
        self._deliver = deliver
        self._exited = exited
        self.timeout = timeout
        self._awaiting = awaiting
        self._heartbeat = heartbeat
        self.interval = interval
        self.clock = clock
        self.pid = 0  # the subprocess's, as it reports it in the handshake (the program started, until then)
        self.started_at = 0.0
        self.last_heard = 0.0
        self._waiting_since: float | None = None  # a reply is due since then and nothing was heard
        self._kill_reason = ""
        self._cond = threading.Condition()
        self._outbox: list[bytes] = []
        self._closed = False
        self.stderr_tail: deque[str] = deque(maxlen=STDERR_TAIL)
        self._stderr_done = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None

    # -- loop thread ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the subprocess (raises OSError if the command cannot run) and its threads; the
        handshake goes first on its stdin."""
        self.proc = subprocess.Popen(self.command, cwd=self.cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, preexec_fn=_die_with_parent, close_fds=True)
        self.pid = self.proc.pid
        self.started_at = self.last_heard = self.clock()
        self._waiting_since = self.started_at  # the handshake's answer is due
        self._outbox.append(self.framing.encode(self._setup))
        for target, role in ((self._read, "reader"), (self._write, "writer"), (self._read_stderr, "stderr")):
            threading.Thread(target=target, name=f"{self.name} {role}", daemon=True).start()

    def send(self, data: bytes) -> None:
        with self._cond:
            if not self._outbox:
                self._cond.notify()
            self._outbox.append(data)

    def kill(self, reason: str) -> None:
        """Kill the subprocess (its end is then reported with ``reason``)."""
        if not self._kill_reason:
            self._kill_reason = reason
        self._signal(signal.SIGKILL)

    def garbage(self, error: ProtocolError) -> None:
        """Kill a subprocess that wrote what is not a message (or not one it may send)."""
        self.kill(f"wrote what is not a multi-lang message ({error}); it must write only "
                  f"{self.framing.name} messages to stdout (log to stderr or with the 'log' command)")

    def stop(self, grace: float = 1.0) -> None:
        """End it as a task shuts down: close its stdin (a multi-lang library exits on EOF), kill
        it after ``grace`` seconds. Nothing is reported."""
        self._exited = lambda reason, tail: None
        with self._cond:
            self._closed = True
            self._cond.notify()
        proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            proc.wait()

    def _signal(self, sig: int) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            try:
                proc.send_signal(sig)
            except ProcessLookupError:
                pass

    # -- reader thread ----------------------------------------------------------------------------

    def _read(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        fd = proc.stdout.fileno()
        decoder = self.framing.decoder()
        shaken = False
        try:
            while True:
                data = os.read(fd, READ_CHUNK)
                if not data:
                    break
                self.last_heard = self.clock()
                self._waiting_since = None
                messages = decoder.feed(data)
                if not shaken and messages:
                    self.pid = handshake_pid(messages[0])
                    shaken = True
                    messages = messages[1:]
                if messages:
                    self._deliver(messages)
        except ProtocolError as e:
            self.garbage(e)
        except OSError as e:
            self.kill(f"could not be read: {e}")
        self._finish(proc)

    def _finish(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.returncode is None:
            try:
                proc.wait(1.0)
            except subprocess.TimeoutExpired:  # closed its stdout but lives on
                self.kill("closed its stdout")
                proc.wait()
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._stderr_done.wait(2.0)
        code = proc.returncode
        reason = self._kill_reason or (f"exited with code {code}" if code >= 0 else
                                       f"was killed by signal {signal.Signals(-code).name}")
        self._exited(reason, "\n".join(self.stderr_tail))

    # -- writer thread ----------------------------------------------------------------------------

    def _write(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdin is not None
        fd = proc.stdin.fileno()
        next_check = self.clock() + self.interval
        broken = False
        while True:
            with self._cond:
                if not self._outbox and not self._closed:
                    self._cond.wait(max(0.0, next_check - self.clock()))
                out, self._outbox = self._outbox, []
                closed = self._closed
            if out and not broken:
                broken = not self._write_all(fd, b"".join(out) if len(out) > 1 else out[0])
            if closed:
                break
            now = self.clock()
            if now >= next_check:
                next_check = now + self.interval
                self._watch(now)
        try:
            proc.stdin.close()
        except OSError:
            pass

    def _write_all(self, fd: int, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError:  # it exited or closed its stdin: the reader reports why
            return False
        return True

    def _watch(self, now: float) -> None:
        """Arm the watchdog, or kill a subprocess that has said nothing since a reply was due."""
        waiting = self._waiting_since
        if waiting is not None:
            if now - waiting > self.timeout:
                self.kill(f"stopped answering: nothing heard for {now - waiting:.1f} s after a reply was due "
                          f"(topology.subprocess_timeout is {self.timeout:g} s)")
            return
        beat = self._heartbeat()
        if beat is not None:
            self._waiting_since = now
            self.send(beat)
        elif self._awaiting():
            self._waiting_since = now

    # -- stderr thread ----------------------------------------------------------------------------

    def _read_stderr(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.stderr_tail.append(line)
            log.info("%s (pid %d): %s", self.name, proc.pid, line)
        self._stderr_done.set()

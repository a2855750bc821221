"""What a shell bolt and a shell spout share: the command, its process, restarts, and the
commands every subprocess may send (``log``, ``error``, ``metrics``)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from streamgale.components import TopologyContext, apply_settings

from . import messages
from .framing import FRAMINGS, ProtocolError, framing
from .process import ShellProcess

log = logging.getLogger("streamgale.multilang")

HEALTHY_AFTER = 10.0  # seconds: a subprocess that ran this long restarts, if it dies, without waiting
PYTHON_LEVELS = {"TRACE": 5, "DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARN": logging.WARNING,
                 "ERROR": logging.ERROR}


class ShellError(RuntimeError):
    """A subprocess ended, misbehaved, or reported an error (the message says which and why)."""


class ShellComponent:
    """Set ``command`` (the program and its arguments, run in the topology file's directory),
    ``outputs`` and optionally ``framing`` (``"json"``, Storm's; ``"msgpack"``, pystorm's) and
    ``shell_conf`` (extra keys for the handshake's ``conf``) on a subclass, or pass them as keyword
    arguments: ``ShellBolt(command=["node", "split.js"], outputs=["word"])``."""

    command: ClassVar[Sequence[str]] = ()
    framing: ClassVar[str] = "json"
    shell_conf: ClassVar[Mapping[str, Any]] = {}
    settings: ClassVar[tuple[str, ...]] = ("command", "outputs", "framing", "shell_conf")
    clock: Callable[[], float] = time.monotonic
    kind = ""

    # Provided by Spout/Bolt (the runtime's collector).
    call_soon_threadsafe: Callable[[Callable[[], None]], None]
    emit: Callable[..., Sequence[int]]
    emit_direct: Callable[..., None]
    _report: Callable[[BaseException, str], None]  # Component's: the runtime's error reporting

    def __init__(self, **settings: Any):
        apply_settings(self, settings)
        check_settings(type(self).__name__, self.command, self.framing)

    # -- what a bolt or spout provides --------------------------------------------------------------

    def _handle(self, message: Any) -> None:
        raise NotImplementedError

    def _handle_batch(self, batch: list[Any]) -> None:
        for message in batch:
            self._handle(message)

    def _lost(self) -> int:
        """The subprocess ended: give up on what it held; returns how many tuples that failed."""
        raise NotImplementedError

    def _awaiting(self) -> bool:
        """A reply (``sync``) is due from the subprocess."""
        return False

    def _heartbeat(self) -> bytes | None:
        return None

    # -- lifecycle (loop thread) --------------------------------------------------------------------

    def _open_shell(self, context: TopologyContext) -> None:
        self.context = context
        self.name = f"{self.kind} '{context.component}' task {context.task_id}"
        conf = context.config
        self._timeout = float(conf["topology.subprocess_timeout"])
        self._backoff_first = float(conf["topology.multilang.restart_backoff"])
        self._backoff_max = float(conf["topology.multilang.restart_backoff_max"])
        self._backoff = self._backoff_first
        self._codec = framing(self.framing)
        self._pid_dir = tempfile.mkdtemp(prefix=f"streamgale-{context.component}-{context.task_id}-pids-")
        self._incarnation = 0
        self._condemned = -1  # the incarnation that wrote garbage: nothing more it wrote is trusted
        self._proc: ShellProcess | None = None
        self._closing = False
        self._inbox: deque[tuple[int, list[Any]]] = deque()
        self._posted = False
        self._timer: threading.Timer | None = None
        self.stats: dict[str, Any] = {"subprocess_restarts": 0}
        self.shell_metrics: dict[str, Any] = {}
        self._spawn()

    def _spawn(self) -> None:
        self._timer = None
        if self._closing:
            return
        self._incarnation += 1
        incarnation = self._incarnation
        proc = ShellProcess(
            self.command, self.context.base_dir, self._codec, self.name,
            messages.setup(self.context, self._pid_dir, self.shell_conf),
            deliver=lambda batch: self._post(incarnation, batch),
            exited=lambda reason, tail: self.call_soon_threadsafe(lambda: self._on_exit(incarnation, reason, tail)),
            timeout=self._timeout, awaiting=self._awaiting, heartbeat=self._heartbeat,
            interval=min(1.0, self._timeout / 4))
        try:
            proc.start()
        except (OSError, ValueError) as e:
            self._report(ShellError(f"{self.name} cannot start {list(self.command)} in {self.context.base_dir}: "
                                    f"{e}; retrying in {self._backoff:.1f} s"), f"{self.name} could not start")
            self._restart_later()
            return
        self._proc = proc

    def _post(self, incarnation: int, batch: list[Any]) -> None:  # reader thread
        self._inbox.append((incarnation, batch))
        if not self._posted:
            self._posted = True
            self.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._posted = False
        inbox = self._inbox
        while inbox:
            incarnation, batch = inbox.popleft()
            if incarnation != self._incarnation or self._proc is None or incarnation == self._condemned:
                continue  # what a subprocess wrote before it ended, or after it wrote garbage
            try:
                self._handle_batch(batch)
            except ProtocolError as e:
                # Killed; its exit fails what it held. What it wrote after the garbage (acks read
                # in the same chunk) is not taken: a process that broke the protocol is not trusted.
                self._condemned = incarnation
                self._proc.garbage(e)

    def _send(self, message: Any) -> None:
        proc = self._proc
        if proc is not None:
            proc.send(self._codec.encode(message))

    def _on_exit(self, incarnation: int, reason: str, stderr_tail: str) -> None:
        proc = self._proc
        if incarnation != self._incarnation or self._closing or proc is None:
            return
        self._proc = None
        failed = self._lost()
        if proc.clock() - proc.started_at >= HEALTHY_AFTER:
            self._backoff = self._backoff_first
        tail = f"; its stderr ended with:\n{stderr_tail}" if stderr_tail else "; it wrote nothing to stderr"
        self._report(ShellError(f"{self.name}: subprocess {list(self.command)} (pid {proc.pid}) "
                                f"{reason}. {failed} tuples it held failed (they replay from their spouts); "
                                f"restarting it in {self._backoff:.1f} s{tail}"),
                     f"{self.name} lost its subprocess")
        self._restart_later()

    def _restart_later(self) -> None:
        if self._closing:
            return
        self.stats["subprocess_restarts"] += 1
        delay, self._backoff = self._backoff, min(self._backoff * 2, self._backoff_max)
        timer = threading.Timer(delay, lambda: self.call_soon_threadsafe(self._spawn))
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _close_shell(self) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.stop()
        shutil.rmtree(self._pid_dir, ignore_errors=True)

    # -- the commands every subprocess may send ------------------------------------------------------

    def _common(self, command: str, message: dict[str, Any]) -> None:
        if command == "log":
            level = messages.LOG_LEVELS.get(message.get("level", 2), "INFO")
            log.log(PYTHON_LEVELS[level], "%s: %s", self.name, message["msg"])
        elif command == "error":
            self._report(ShellError(f"{self.name}: {message['msg']}"), f"{self.name} reported an error")
        elif command == "metrics":
            name, value = str(message["name"]), message.get("params")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.shell_metrics[name] = self.shell_metrics.get(name, 0) + value
            elif isinstance(value, (str, bool)):
                self.shell_metrics[name] = value

    def _emit(self, message: dict[str, Any], tag: Any) -> None:
        """An ``emit``, routed with ``tag`` (a bolt's anchors, a spout's message id), and the task
        ids answered unless the subprocess needs none (never for a direct emit, as in Storm)."""
        stream = message.get("stream") or "default"
        task = message.get("task")
        try:
            if task is not None:
                self.emit_direct(task, message["tuple"], stream, tag)
                return
            tasks = self.emit(message["tuple"], stream, tag)
        except (ValueError, TypeError, KeyError) as e:
            tasks = []
            self._report(ShellError(f"{self.name}: emit refused: {e}"), f"{self.name} emitted what it declares not")
        if message.get("need_task_ids", True):
            self._send(list(tasks))

    def counters(self) -> dict[str, Any]:
        proc = self._proc
        return {**self.stats, "subprocess_pid": proc.pid if proc is not None else 0, **self.shell_metrics}


def check_settings(owner: str, command: Any, framing_name: Any) -> None:
    if isinstance(command, str) or not isinstance(command, (list, tuple)) or not command \
            or not all(isinstance(part, str) and part for part in command):
        raise ValueError(f"{owner}: command must be a non-empty list of strings, the program and its "
                         f"arguments (such as ['node', 'split.js']), not {command!r}")
    if framing_name not in FRAMINGS:
        raise ValueError(f"{owner}: framing must be one of {', '.join(FRAMINGS)}, not {framing_name!r}")


"""ShellSpout: a spout whose tuples a subprocess produces, over Storm's multi-lang protocol.

Synchronous, as in Storm: the subprocess is sent ``next`` (emit your next
tuples), ``ack`` and ``fail`` (with the message id it emitted), ``activate``
and ``deactivate``, and answers each with its emits, then ``sync``. A ``next``
is sent only once the previous one is answered, and only while the runtime
would call ``next_tuple`` (under ``topology.max_spout_pending``, downstream not
congested, the topology active); after a ``next`` that emitted nothing the
next waits a millisecond (Storm's sleep strategy). ``ack`` and ``fail`` go
out as they come, without waiting for the answer to the command before
(multi-lang libraries read their commands one after the other). The loop
thread never waits for the subprocess.

A subprocess that ends is restarted with backoff; the trees its tuples started
still complete, but their acks and fails are not passed to the new process,
which never emitted them: a source that must replay them does so from where it
committed (a broker's unacked messages, a file's offset).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from streamgale.components import Spout, TopologyContext

from . import messages
from .shell import ShellComponent

IDLE_WAIT = 0.001  # seconds after a next that emitted nothing


class ShellSpout(ShellComponent, Spout):
    kind = "spout"

    def open(self, context: TopologyContext) -> None:
        self._unsynced: deque[str] = deque()  # commands sent, in order, each awaiting its sync
        self._next_sent = False
        self._next_emits = 0
        self._next_at = 0.0
        self._open_shell(context)

    def _command(self, command: str, msg_id: Any = "") -> None:
        if self._proc is not None:
            self._send(messages.spout_command(command, msg_id))
            self._unsynced.append(command)

    def next_tuple(self) -> None:
        if self._proc is None or self._next_sent or (self._next_at and self.clock() < self._next_at):
            return
        self._next_sent = True
        self._next_emits = 0
        self._command("next")

    def ack(self, msg_id: Any) -> None:
        incarnation, mid = msg_id
        if incarnation == self._incarnation:
            self._command("ack", mid)

    def fail(self, msg_id: Any) -> None:
        incarnation, mid = msg_id
        if incarnation == self._incarnation:
            self._command("fail", mid)

    def activate(self) -> None:
        self._command("activate")

    def deactivate(self) -> None:
        self._command("deactivate")

    def _handle(self, message: Any) -> None:
        command = messages.command(message, messages.SPOUT_COMMANDS)
        if command == "emit":
            mid = message.get("id")
            self._emit(message, None if mid is None else (self._incarnation, mid))
            self._next_emits += 1
        elif command == "sync":
            if not self._unsynced:
                return  # a sync of its own (pystorm sends one after reporting an error)
            if self._unsynced.popleft() == "next":
                self._next_sent = False
                self._next_at = self.clock() + IDLE_WAIT if self._next_emits == 0 else 0.0
        else:
            self._common(command, message)

    def _lost(self) -> int:
        self._unsynced.clear()
        self._next_sent = False
        return 0

    def _awaiting(self) -> bool:
        return bool(self._unsynced)

    def close(self) -> None:
        self._close_shell()

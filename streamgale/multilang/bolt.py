"""ShellBolt: a bolt whose tuples a subprocess processes, over Storm's multi-lang protocol.

Asynchronous, as in Storm: tuples are written to the subprocess as they come
(each with an id of its own), and it emits, acks and fails them when it will,
by id. At most ``topology.multilang.max_pending`` tuples are inside it at a
time; beyond that its input queue fills and the spouts wait. Every second a
``__heartbeat`` tuple (task -1) is sent that it must answer with ``sync``.
If it ends, for whatever reason, every tuple it held fails (and replays from
its spout) and it is restarted with backoff.
"""

from __future__ import annotations

from typing import Any, ClassVar

from streamgale.components import Bolt, TopologyContext
from streamgale.tuples import Tuple

from . import messages
from .framing import EncodeError
from .shell import ShellComponent, ShellError


class ShellBolt(ShellComponent, Bolt):
    auto_ack = False  # the subprocess acks (a multi-lang library's basic bolt does it for its users)
    kind = "bolt"
    max_pending: ClassVar[int | None] = None  # None: topology.multilang.max_pending
    settings = (*ShellComponent.settings, "max_pending")

    def prepare(self, context: TopologyContext) -> None:
        self._inflight: dict[str, Tuple] = {}
        self._next_id = 0
        limit = self.max_pending or context.config["topology.multilang.max_pending"]
        self._limit = int(limit)
        self._warned_anchor = False
        self._open_shell(context)
        self._beat = self._codec.encode(messages.heartbeat("heartbeat"))

    def accepts_input(self) -> bool:
        return self._proc is not None and len(self._inflight) < self._limit

    def process(self, tup: Tuple) -> None:
        self.process_batch([tup])

    def process_batch(self, tuples: list[Tuple]) -> None:
        proc = self._proc
        if proc is None:  # lost between the queue check and now: these fail and replay
            for tup in tuples:
                self.fail(tup)
            return
        inflight = self._inflight
        n = self._next_id
        sent: list[dict[str, Any]] = []
        for tup in tuples:
            n += 1
            tid = str(n)
            stream = tup.stream
            if stream == "__tick":
                sent.append(messages.tick(tid, tup.values[0]))  # untracked: its ack, if any, is ignored
                continue
            sent.append({"id": tid, "comp": tup.source, "stream": stream, "task": tup.source_task,
                         "tuple": tup.values})  # a tuple message (docs/multilang.md)
            inflight[tid] = tup
        self._next_id = n
        try:
            data = self._codec.encode_many(sent)
        except EncodeError:  # one of them cannot be sent: fail it alone
            data = b"".join(self._encode_each(sent))
        if data:
            proc.send(data)

    def _encode_each(self, sent: list[dict[str, Any]]) -> list[bytes]:
        out = []
        for message in sent:
            try:
                out.append(self._codec.encode(message))
            except EncodeError as e:
                tup = self._inflight.pop(message["id"], None)
                if tup is not None:
                    self.fail(tup)
                self._report(ShellError(f"{self.name} cannot send {tup!r} to its subprocess: {e}"),
                             f"{self.name} failed a tuple")
        return out

    def _handle_batch(self, batch: list[Any]) -> None:
        """The hot path: acks, and emits anchored to one tuple, handled inline; every other
        message (and any that is not well formed) goes through :meth:`_handle`."""
        inflight = self._inflight
        ack, emit, send, handle = self._collector.ack, self.emit, self._send, self._handle
        for m in batch:
            cmd = m.get("command") if type(m) is dict else None
            if cmd == "ack":
                tup = inflight.pop(m.get("id"), None)
                if tup is not None:
                    ack(tup)
                continue
            if cmd == "emit" and m.get("task") is None:
                anchors = m.get("anchors")
                values = m.get("tuple")
                if type(values) is list and type(anchors) is list and len(anchors) == 1 and anchors[0] in inflight:
                    try:
                        tasks = emit(values, m.get("stream") or "default", inflight[anchors[0]])
                    except (ValueError, TypeError, KeyError):
                        handle(m)  # reported there, and answered
                        continue
                    if m.get("need_task_ids", True):
                        send(list(tasks))
                    continue
            handle(m)

    def _handle(self, message: Any) -> None:
        command = messages.command(message, messages.BOLT_COMMANDS)
        if command == "ack":
            tup = self._inflight.pop(message["id"], None)
            if tup is not None:
                self.ack(tup)
        elif command == "emit":
            self._emit(message, self._anchors(message.get("anchors")))
        elif command == "fail":
            tup = self._inflight.pop(message["id"], None)
            if tup is not None:
                self.fail(tup)
        elif command != "sync":  # sync: the answer to a heartbeat
            self._common(command, message)

    def _anchors(self, ids: list[Any] | None) -> list[Tuple]:
        if not ids:
            return []
        inflight = self._inflight
        held = [inflight[i] for i in ids if i in inflight]
        if len(held) < len(ids) and not self._warned_anchor:
            self._warned_anchor = True
            gone = [i for i in ids if i not in inflight]
            self._report(ShellError(f"{self.name}: the subprocess anchored an emit to tuple ids {gone!r:.80} it had "
                                    "already acked or failed (or never got); the tuple is emitted anchored to "
                                    "the rest only (reported once)"), f"{self.name} anchored to a finished tuple")
        return held

    def _lost(self) -> int:
        held, self._inflight = self._inflight, {}
        for tup in held.values():
            self.fail(tup)
        return len(held)

    def _heartbeat(self) -> bytes | None:
        return self._beat

    def cleanup(self) -> None:
        self._close_shell()

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "in_flight": len(self._inflight)}

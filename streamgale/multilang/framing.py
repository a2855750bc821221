"""How multi-lang messages are framed on a subprocess's stdin and stdout (pure, no I/O).

``json``: Storm's own framing: each message is JSON text followed by a line
holding only ``end``. ``msgpack``: pystorm's msgpack serializer: msgpack objects
back to back, no delimiter. Both carry the same messages (maps, and lists of task
ids), so everything above this module is the same for both.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

FRAMINGS = ("json", "msgpack")
MAX_MESSAGE = 64 * 1024 * 1024  # bytes: a subprocess's message beyond this is garbage
JSON_END = b"\nend\n"


class ProtocolError(ValueError):
    """A subprocess wrote something that is not a multi-lang message; the text says what."""


class EncodeError(ValueError):
    """A value the framing cannot carry (bytes in JSON, an object of no wire type)."""


def excerpt(data: bytes, limit: int = 120) -> str:
    text = data[:limit].decode("utf-8", "replace")
    return repr(text) + (" ..." if len(data) > limit else "")


def _unencodable(value: Any) -> Any:
    raise EncodeError(f"a value of type {type(value).__name__} ({value!r:.60}) cannot be sent to a subprocess")


class JsonFraming:
    name = "json"

    def __init__(self) -> None:
        self._dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_unencodable).encode

    def encode(self, message: Any) -> bytes:
        try:
            return self._dumps(message).encode("utf-8") + JSON_END
        except (TypeError, ValueError) as e:  # bytes, NaN keys, recursion: say which value
            raise EncodeError(f"{e} (JSON framing carries only JSON types; framing = 'msgpack' carries "
                              "bytes too)") from None

    def encode_many(self, messages: list[Any]) -> bytes:
        return b"".join([self.encode(m) for m in messages])

    def decoder(self) -> JsonDecoder:
        return JsonDecoder()


class JsonDecoder:
    """Splits Storm's ``end``-framed JSON messages out of what a subprocess writes."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf + data if self._buf else data
        parts = buf.split(JSON_END)
        self._buf = parts.pop()
        if len(self._buf) > MAX_MESSAGE:
            raise ProtocolError(f"a message longer than {MAX_MESSAGE} bytes with no 'end' line: "
                                f"{excerpt(self._buf)}")
        if not parts:
            return []
        try:  # one parse for the whole chunk: the messages as one JSON array
            out = json.loads(b"[" + b",".join(parts) + b"]") if len(parts) > 1 else [json.loads(parts[0])]
            if len(out) == len(parts):
                return out
        except ValueError:
            pass
        out = []  # one of them is garbage (or blank): find which
        for part in parts:
            if not part.strip():
                continue
            try:
                out.append(json.loads(part))
            except ValueError:
                raise ProtocolError(f"not a JSON message: {excerpt(part)}") from None
        return out


class MsgpackFraming:
    name = "msgpack"

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, default=_unencodable)

    def encode(self, message: Any) -> bytes:
        try:
            return self._packer.pack(message)
        except (TypeError, ValueError, OverflowError) as e:
            self._packer.reset()
            raise EncodeError(str(e)) from None

    def encode_many(self, messages: list[Any]) -> bytes:
        """The messages back to back: packed as one array (one call), its header cut off."""
        data = self.encode(messages)
        n = len(messages)
        return data[1:] if n < 16 else data[3:] if n < 65536 else data[5:]

    def decoder(self) -> MsgpackDecoder:
        return MsgpackDecoder()


class MsgpackDecoder:
    def __init__(self) -> None:
        # Map keys must be strings (every multi-lang message's are): no map or list key to hash.
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_MESSAGE)

    def feed(self, data: bytes) -> list[Any]:
        try:
            self._unpacker.feed(data)
            return list(self._unpacker)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError,
                msgpack.BufferFull) as e:
            raise ProtocolError(f"not a msgpack message ({type(e).__name__}: {e}): {excerpt(data)}") from None


def framing(name: str) -> JsonFraming | MsgpackFraming:
    if name == "json":
        return JsonFraming()
    if name == "msgpack":
        return MsgpackFraming()
    raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, not {name!r}")

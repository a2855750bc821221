"""The state a stateful bolt task sees: a key-value mapping that records what changed.

Keys and values are msgpack-encoded for the store (never pickled): keys may be
str, int, float, bool, bytes, None or tuples of those (a list key is not
hashable); values anything msgpack encodes (dicts, lists, numbers, strings,
bytes). A value is recorded when it is assigned: mutate a list or dict in place
and assign it again (``state[k] = v``) for the change to be committed.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from typing import Any

import msgpack

_MISSING = object()


def encode(obj: Any, what: str = "value") -> bytes:
    try:
        return msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"state keys and values must be msgpack-encodable (str, int, float, bool, bytes, None, "
                        f"lists, tuples, dicts of those); the {what} {obj!r:.80} is not: {exc}") from None


def decode_key(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, use_list=False, strict_map_key=False)


def decode_value(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


class KeyValueState(MutableMapping[Any, Any]):
    """``state[k]``, ``state[k] = v``, ``del state[k]``, ``get``, ``put``, ``delete``, ``items``, ``len``.

    Namespaced per component task by the runtime; what is committed at a
    checkpoint is what :meth:`changes` returns then.
    """

    def __init__(self, committed: dict[bytes, bytes] | None = None):
        self._data: dict[Any, Any] = {decode_key(k): decode_value(v) for k, v in (committed or {}).items()}
        self._changed: set[Any] = set()  # keys assigned or deleted since the last checkpoint

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return self._data.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._changed.add(key)

    def __delitem__(self, key: Any) -> None:
        del self._data[key]
        self._changed.add(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return f"KeyValueState({self._data!r:.200})"

    def put(self, key: Any, value: Any) -> None:
        self[key] = value

    def delete(self, key: Any) -> None:
        """Remove ``key`` if present."""
        if key in self._data:
            del self[key]

    def take_changes(self) -> dict[bytes, bytes | None]:
        """What changed since the last call, encoded for the store (None: deleted); then forget it.
        Each changed key is encoded once, with the value it holds now."""
        out: dict[bytes, bytes | None] = {}
        data = self._data
        for key in self._changed:
            value = data.get(key, _MISSING)
            out[encode(key, "key")] = None if value is _MISSING else encode(value, f"value of key {key!r:.60}")
        self._changed = set()
        return out

    def reset(self, committed: dict[bytes, bytes]) -> None:
        """Back to ``committed`` (a rollback): every change since is dropped."""
        self._data = {decode_key(k): decode_value(v) for k, v in committed.items()}
        self._changed = set()


def decode_state(data: dict[bytes, bytes]) -> dict[Any, Any]:
    """Committed pairs as Python values (for inspection)."""
    return {decode_key(k): decode_value(v) for k, v in data.items()}

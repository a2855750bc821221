"""The tuple a bolt receives."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_STREAM = "default"
TICK_STREAM = "__tick"
SYSTEM_COMPONENT = "__system"
SYSTEM_TASK = -1


class Tuple:
    """One value list on a stream, as delivered to a bolt task.

    ``tup["word"]`` or ``tup[0]`` reads a value; ``tup.values`` is the list;
    ``tup.stream``, ``tup.source`` (component), ``tup.source_task`` say where it
    came from. ``tup.anchors`` is the acking identity (root id -> edge id) used by
    the tuple-tree tracker, and ``ack_val`` the XOR of the edges emitted anchored
    to this tuple; user code treats both as opaque. A tuple of one tree (nearly
    all of them) keeps its root and edge as two ints (``root``, ``edge``; root 0:
    untracked), a tuple of several trees a dict (``multi``): no dict is made per
    tuple on the hot path.

    Tuples are created by the runtime only; they are cheap (slots, shared field
    index) and must be treated as read-only.
    """

    __slots__ = ("values", "stream", "source", "source_task", "_index", "root", "edge", "multi", "ack_val")

    def __init__(
        self,
        values: Sequence[Any],
        stream: str,
        source: str,
        source_task: int,
        index: Mapping[str, int],
        anchors: dict[int, int] | None = None,
        root: int = 0,
        edge: int = 0,
    ):
        self.values = values
        self.stream = stream
        self.source = source
        self.source_task = source_task
        self._index = index
        self.root = root
        self.edge = edge
        self.multi: dict[int, int] | None = None
        if anchors:
            if len(anchors) == 1:
                for r, e in anchors.items():
                    self.root = r
                    self.edge = e
            else:
                self.multi = anchors
        self.ack_val = 0

    @property
    def anchors(self) -> dict[int, int] | None:
        """Root id -> edge id for every tree this tuple belongs to; None when untracked."""
        if self.root:
            return {self.root: self.edge}
        return self.multi

    @property
    def tracked(self) -> bool:
        return self.root != 0 or self.multi is not None

    def __getitem__(self, key: int | str) -> Any:
        if type(key) is str:
            try:
                return self.values[self._index[key]]
            except KeyError:
                raise KeyError(
                    f"tuple from '{self.source}' on stream '{self.stream}' has no field "
                    f"{key!r}; its fields are {list(self._index)}"
                ) from None
        return self.values[key]  # type: ignore[index]  # an int position

    def get(self, field: str, default: Any = None) -> Any:
        i = self._index.get(field)
        return default if i is None else self.values[i]

    def __len__(self) -> int:
        return len(self.values)

    def __iter__(self):
        return iter(self.values)

    @property
    def fields(self) -> list[str]:
        return list(self._index)

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(self._index, self.values))

    @property
    def is_tick(self) -> bool:
        return self.stream == TICK_STREAM

    def __repr__(self) -> str:
        return f"Tuple({self.source}:{self.source_task} {self.stream} {list(self.values)!r})"


TICK_INDEX: Mapping[str, int] = {"interval": 0}


def tick_tuple(interval: float = 0.0) -> Tuple:
    """A tick: from ``__system`` on ``__tick``, its one value the tick interval in seconds (as
    Storm's carries its frequency): ``tup["interval"]`` or ``tup[0]``."""
    return Tuple((interval,), TICK_STREAM, SYSTEM_COMPONENT, SYSTEM_TASK, TICK_INDEX)

"""Tuple frames between workers: the per-destination batch and its wire form (compiled).

Frame format (version 3), tuples grouped by destination task, source task and
stream, so each group's header is encoded and checked once::

    msgpack [3, "T", [[dest_task, source_task, stream, [values, ...],
                       [root, ...] | None, [edge, ...] | None, {index: {root: edge, ...}} | None], ...]]

``root`` and ``edge`` run parallel to ``values``: the one tree a tuple belongs
to (root 0: untracked); a group whose tuples are all untracked sends None for
both. A tuple of several trees has root 0 and its anchors (root id -> edge id)
under its index in the last field. Ints, not a map per tuple: the common case
encodes and decodes without a dict.

A tuple bound for another worker is appended to its destination's
:class:`Batch` at emit (its values and anchors, no object of its own) and the
whole batch is encoded by one ``msgpack.packb`` call when it is sent. A
received frame is decoded group by group with limits (:func:`decode_frame`):
every entry is validated, a malformed one is dropped and counted, and the
worker goes on. Pure code, no sockets (those are :mod:`streamgale.worker.transport`'s).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgpack

from streamgale.tuples import Tuple

FRAME_VERSION = 3
TUPLES = "T"

Warn = Callable[..., None]
TupleSink = Callable[[Tuple], None]


def valid_anchors(anchors: Any) -> bool:
    """A dict of int root id -> int edge id (a tuple of several trees)."""
    if type(anchors) is not dict:
        return False
    for r, e in anchors.items():
        if type(r) is not int or type(e) is not int:
            return False
    return True


class Group:
    """The tuples of one (dest task, source task, stream) in a batch: parallel lists."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.roots: list[int] = []
        self.edges: list[int] = []
        self.multi: dict[int, dict[int, int]] | None = None
        self.tracked = False


# Arrays in a frame may hold this many entries whatever the batch size (an ack message's lists
# hold up to runtime.acking.ACK_CHUNK); a frame still carries at most max_tuples tuples.
MIN_ARRAY_LEN = 4096


class Batch:
    """Tuples waiting for one peer worker, grouped by (dest task, source task, stream).

    Order within a channel (one source task to one dest task) is kept across streams, as
    checkpoint barriers need (docs/state.md): when a channel switches stream, its tuples
    go to a new group after the earlier ones, so a frame may hold a key more than once.
    """

    def __init__(self) -> None:
        self.groups: dict[tuple[int, int, str, int], Group] = {}
        # Per channel (dest, source): its current stream and segment number.
        self._channels: dict[tuple[int, int], tuple[str, int]] = {}
        self.count = 0
        # The group the last tuple went to: consecutive tuples mostly share it (one emitter,
        # one stream), and comparing two ints and a str is cheaper than hashing a key tuple.
        self._last: Group | None = None
        self._last_task = self._last_source = -1
        self._last_stream = ""

    def __len__(self) -> int:
        return self.count

    def add(self, task: int, tup: Tuple) -> int:
        """Append ``tup`` for ``task``; returns how many tuples the batch holds now."""
        group = self._last
        if group is None or task != self._last_task or tup.source_task != self._last_source or (
                tup.stream != self._last_stream):
            channel = (task, tup.source_task)
            current = self._channels.get(channel)
            if current is None:
                segment = 0
            elif current[0] != tup.stream:
                segment = current[1] + 1
            else:
                segment = current[1]
            self._channels[channel] = (tup.stream, segment)
            key = (task, tup.source_task, tup.stream, segment)
            group = self.groups.get(key)
            if group is None:
                group = self.groups[key] = Group()
            self._last, self._last_task, self._last_source, self._last_stream = (
                group, task, tup.source_task, tup.stream)
        group.values.append(tup.values)
        root = tup.root
        group.roots.append(root)
        group.edges.append(tup.edge)
        if root:
            group.tracked = True
        elif tup.multi is not None:
            if group.multi is None:
                group.multi = {}
            group.multi[len(group.values) - 1] = tup.multi
            group.tracked = True
        self.count += 1
        return self.count

    def encode(self) -> bytes:
        """The frame for everything batched; empties the batch."""
        entries: list[list[Any]] = []
        for (dest, src, stream, _), g in self.groups.items():
            if g.tracked:
                entries.append([dest, src, stream, g.values, g.roots, g.edges, g.multi])
            else:
                entries.append([dest, src, stream, g.values, None, None, None])
        self.groups = {}
        self._channels = {}
        self.count = 0
        self._last = None
        return msgpack.packb([FRAME_VERSION, TUPLES, entries], use_bin_type=True)


class RemoteSink:
    """The sink of one remote task: batches its tuples, calls ``on_full`` when the batch is full."""

    def __init__(self, batch: Batch, task: int, size: int, on_full: Callable[[], None]):
        self.batch = batch
        self.task = task
        self.size = size
        self.on_full = on_full

    def __call__(self, tup: Tuple) -> None:
        if self.batch.add(self.task, tup) >= self.size:
            self.on_full()


class Decoded:
    """What one frame yielded: tuples delivered, and what was dropped as malformed."""

    def __init__(self) -> None:
        self.tuples = 0
        self.dropped_frames = 0
        self.dropped_entries = 0


def decode_frame(frame: bytes, queues: Mapping[int, TupleSink], task_component: Mapping[int, str],
                 index: Mapping[str, Mapping[str, Mapping[str, int]]], max_tuples: int, warn: Warn) -> Decoded:
    """Decode one frame group by group (never more than ``max_tuples`` tuples) into ``queues``
    (local task -> sink); ``warn(msg, *args)`` is told of each malformed part."""
    out = Decoded()
    # int map keys (anchors: root -> edge) are safe: 64-bit ints cannot flood one hash
    unpacker = msgpack.Unpacker(raw=False, use_list=True, strict_map_key=False,
                                max_buffer_size=max(len(frame), 1), max_array_len=max(max_tuples, MIN_ARRAY_LEN))
    unpacker.feed(frame)
    try:
        if unpacker.read_array_header() != 3:
            raise ValueError("not a 3-element frame")
        version, kind = unpacker.unpack(), unpacker.unpack()
        if version != FRAME_VERSION or kind != TUPLES:
            raise ValueError(f"unexpected header {version!r}/{kind!r}")
        groups: int = unpacker.read_array_header()
    except Exception as e:  # noqa: BLE001 - anything malformed is dropped
        out.dropped_frames += 1
        warn("dropped a malformed frame of %d bytes on the worker port: %s", len(frame), e)
        return out
    budget = max_tuples
    for _ in range(groups):
        try:
            entry = unpacker.unpack()
        except Exception as e:  # noqa: BLE001 - the rest of the frame cannot be read
            out.dropped_frames += 1
            warn("dropped the rest of a frame of %d bytes: %s", len(frame), e)
            break
        try:
            dest, src, stream, values_list, roots, edges, multi = entry
            if type(dest) is not int or type(src) is not int or type(stream) is not str:
                raise ValueError("task ids must be ints and the stream a str")
            sink = queues[dest]
            component = task_component[src]
            fields = index[component][stream]
            if type(values_list) is not list:
                raise ValueError("values must be a list")
            if roots is None:
                if edges is not None or multi is not None:
                    raise ValueError("edges or anchors without roots")
            elif (type(roots) is not list or type(edges) is not list or len(roots) != len(values_list)
                    or len(edges) != len(values_list) or (multi is not None and type(multi) is not dict)):
                raise ValueError("values, roots and edges must be parallel lists")
            if len(values_list) > budget:
                raise ValueError(f"the frame holds more than {max_tuples} tuples")
        except Exception as e:  # noqa: BLE001
            out.dropped_entries += 1
            warn("dropped a malformed tuple group %r: %s", str(entry)[:100], e)
            continue
        budget -= len(values_list)
        out.tuples += _deliver_group(out, sink, component, src, stream, fields, values_list, roots, edges,
                                     multi, warn)
    return out


def _deliver_group(out: Decoded, sink: TupleSink, component: str, src: int, stream: str,
                   fields: Mapping[str, int], values_list: list[Any], roots: list[Any] | None,
                   edges: list[Any] | None, multi: dict[Any, Any] | None, warn: Warn) -> int:
    nf = len(fields)
    n = 0
    if roots is None or edges is None:
        for values in values_list:
            if type(values) is not list or len(values) != nf:
                out.dropped_entries += 1
                warn("dropped a malformed tuple %r from task %r on stream %r", str(values)[:100], src, stream)
                continue
            sink(Tuple(values, stream, component, src, fields, None))
            n += 1
        return n
    for i in range(len(values_list)):
        values = values_list[i]
        root = roots[i]
        edge = edges[i]
        anchors = None if multi is None else multi.get(i)
        if type(values) is not list or len(values) != nf or type(root) is not int or type(edge) is not int or (
                anchors is not None and (root != 0 or not valid_anchors(anchors))):
            out.dropped_entries += 1
            warn("dropped a malformed tuple %r from task %r on stream %r", str(values)[:100], src, stream)
            continue
        sink(Tuple(values, stream, component, src, fields, anchors, root, edge))
        n += 1
    return n

"""Routers: a grouping made concrete for one emitting task (compiled on the hot path).

:func:`make_router` turns a :class:`~streamgale.groupings.Grouping` into a
router whose ``choose(values)`` returns the target task ids of one tuple.
Local mode and cluster workers use the same routers, so a key goes to the same
task in both. Pure code, no I/O; compiled with mypyc where a compiler is
available (see ``setup.py``).
"""

from __future__ import annotations

import copy
import random
import zlib
from collections.abc import Sequence
from typing import Any

import msgpack

from streamgale.groupings import CustomGrouping, Grouping

Targets = tuple[int, ...]
FIELDS_CACHE_SIZE = 65536  # str keys whose target a fields router memoises


def key_hash(key: Sequence[Any]) -> int:
    """A 32-bit hash of a key that is the same in every process and run.

    Python's ``hash()`` of a str is salted per process, so it must never route.
    """
    if len(key) == 1:
        k = key[0]
        if type(k) is str:
            return zlib.crc32(k.encode())
        if type(k) is int and 0 <= k < 1 << 63:
            return zlib.crc32(k.to_bytes(8, "little"))
    return zlib.crc32(msgpack.packb(list(key), use_bin_type=True))


def _second_hash(h: int) -> int:
    """An independent-enough second choice for partial-key grouping."""
    return ((h * 2654435761) & 0xFFFFFFFF) >> 3


class Router:
    """Chooses the target tasks of each tuple emitted on one subscription."""

    def choose(self, values: Sequence[Any]) -> Targets:
        raise NotImplementedError  # every grouping's router overrides it


class ShuffleRouter(Router):
    """Round-robin over a reshuffled list: every target gets an equal share per round."""

    def __init__(self, targets: Sequence[int], seed: int):
        self._rng = random.Random(seed)
        self._order: list[Targets] = [(t,) for t in targets]
        self._rng.shuffle(self._order)
        self._i = 0
        self._n = len(self._order)

    def choose(self, values: Sequence[Any]) -> Targets:
        i = self._i
        if i == self._n:
            if i > 1:  # one target: nothing to shuffle (a shuffle per tuple, otherwise)
                self._rng.shuffle(self._order)
            i = 0
        self._i = i + 1
        return self._order[i]


class FieldsRouter(Router):
    """Equal keys to the same task. A single str key's target is memoised (a
    bounded cache: hot keys skip the hash); other keys are hashed every time,
    since 1, 1.0 and True are equal dict keys but hash differently here."""

    def __init__(self, targets: Sequence[int], key_indices: Sequence[int]):
        self._targets: list[Targets] = [(t,) for t in sorted(targets)]
        self._n = len(self._targets)
        self._indices = tuple(key_indices)
        self._single = key_indices[0] if len(key_indices) == 1 else -1
        self._cache: dict[str, Targets] = {}

    def choose(self, values: Sequence[Any]) -> Targets:
        single = self._single
        if single >= 0:
            k = values[single]
            if type(k) is str:
                cache = self._cache
                target = cache.get(k)
                if target is None:
                    if len(cache) >= FIELDS_CACHE_SIZE:
                        cache.clear()
                    target = cache[k] = self._targets[zlib.crc32(k.encode()) % self._n]
                return target
            return self._targets[key_hash((k,)) % self._n]
        return self._targets[key_hash([values[i] for i in self._indices]) % self._n]


class PartialKeyRouter(Router):
    """Two candidate tasks per key; pick the one this emitter has sent less to."""

    def __init__(self, targets: Sequence[int], key_indices: Sequence[int]):
        self._targets: list[Targets] = [(t,) for t in sorted(targets)]
        self._n = len(self._targets)
        self._indices = tuple(key_indices)
        self._load = [0] * self._n

    def choose(self, values: Sequence[Any]) -> Targets:
        h = key_hash([values[i] for i in self._indices])
        a = h % self._n
        b = _second_hash(h) % self._n
        pick = a if self._load[a] <= self._load[b] else b
        self._load[pick] += 1
        return self._targets[pick]


class AllRouter(Router):
    def __init__(self, targets: Sequence[int]):
        self._all: Targets = tuple(sorted(targets))

    def choose(self, values: Sequence[Any]) -> Targets:
        return self._all


class GlobalRouter(Router):
    def __init__(self, targets: Sequence[int]):
        self._one: Targets = (min(targets),)

    def choose(self, values: Sequence[Any]) -> Targets:
        return self._one


class DirectRouter(Router):
    """Plain emits never reach a direct subscriber; emit_direct names the task."""

    def __init__(self, targets: Sequence[int]):
        self.targets = frozenset(targets)

    def choose(self, values: Sequence[Any]) -> Targets:
        return ()


class CustomRouter(Router):
    def __init__(self, grouping: CustomGrouping, source_task: int, targets: Sequence[int], name: str):
        self._grouping = grouping
        self._source_task = source_task
        self._valid = frozenset(targets)
        self._name = name

    def choose(self, values: Sequence[Any]) -> Targets:
        chosen = tuple(self._grouping.choose_tasks(self._source_task, values))
        for t in chosen:
            if t not in self._valid:
                raise ValueError(
                    f"custom grouping {type(self._grouping).__name__} for '{self._name}' chose "
                    f"task {t}, which is not one of its target tasks {sorted(self._valid)}"
                )
        return chosen


def make_router(
    grouping: Grouping,
    targets: Sequence[int],
    source_fields: Sequence[str],
    source_task: int,
    local_tasks: frozenset[int],
    context: Any = None,
    stream: str = "default",
    target_name: str = "",
) -> Router:
    """Build the router one emitting task uses for one subscription."""
    kind = grouping.kind
    seed = source_task * 7919 + zlib.crc32(target_name.encode())
    if kind in ("shuffle", "none"):
        return ShuffleRouter(targets, seed)
    if kind == "local_or_shuffle":
        local = [t for t in targets if t in local_tasks]
        return ShuffleRouter(local or targets, seed)
    if kind in ("fields", "partial_key"):
        indices = [list(source_fields).index(f) for f in grouping.fields]
        if kind == "fields":
            return FieldsRouter(targets, indices)
        return PartialKeyRouter(targets, indices)
    if kind == "all":
        return AllRouter(targets)
    if kind == "global":
        return GlobalRouter(targets)
    if kind == "direct":
        return DirectRouter(targets)
    if kind == "custom":
        custom = grouping.custom
        instance: Any = custom() if isinstance(custom, type) else copy.deepcopy(custom)
        instance.prepare(context, stream, list(sorted(targets)))
        return CustomRouter(instance, source_task, targets, target_name)
    raise ValueError(f"unknown grouping {kind!r}")


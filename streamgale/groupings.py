"""Stream groupings: how a stream's tuples are divided among a bolt's tasks.

Pure code, no I/O. A :class:`Grouping` is the declarative part stored in the
topology spec; :func:`make_router` turns it into a router for one emitting task,
whose ``choose(values)`` returns the target task ids. Local mode and cluster
workers use the same routers, so a key goes to the same task in both.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

KINDS = ("shuffle", "fields", "partial_key", "all", "global", "none", "direct",
         "local_or_shuffle", "custom")


@dataclass(frozen=True)
class Grouping:
    """A subscription's grouping: its kind, key fields, and custom grouping class."""

    kind: str
    fields: tuple[str, ...] = ()
    custom: Any = None  # a CustomGrouping subclass or instance, for kind == "custom"

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.kind}
        if self.fields:
            spec["fields"] = list(self.fields)
        if self.custom is not None:
            cls = self.custom if isinstance(self.custom, type) else type(self.custom)
            spec["class"] = f"{cls.__module__}.{cls.__qualname__}"
        return spec


class CustomGrouping:
    """Subclass to choose target tasks yourself (Storm's CustomStreamGrouping).

    ``prepare`` is called once per emitting task; ``choose_tasks`` per tuple,
    returning a list of task ids taken from ``target_tasks``.
    """

    def prepare(self, context: Any, stream: str, target_tasks: Sequence[int]) -> None:
        self.target_tasks = list(target_tasks)

    def choose_tasks(self, source_task: int, values: Sequence[Any]) -> Sequence[int]:
        raise NotImplementedError


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


class ShuffleRouter:
    """Round-robin over a reshuffled list: every target gets an equal share per round."""

    __slots__ = ("_targets", "_order", "_i", "_rng")

    def __init__(self, targets: Sequence[int], seed: int):
        self._targets = [(t,) for t in targets]
        self._rng = random.Random(seed)
        self._order = list(self._targets)
        self._rng.shuffle(self._order)
        self._i = 0

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        i = self._i
        if i == len(self._order):
            self._rng.shuffle(self._order)
            i = 0
        self._i = i + 1
        return self._order[i]


class FieldsRouter:
    """Equal keys to the same task. A single str key's target is memoised (a
    bounded cache: hot keys skip the hash); other keys are hashed every time,
    since 1, 1.0 and True are equal dict keys but hash differently here."""

    __slots__ = ("_targets", "_n", "_key", "_single", "_cache")

    CACHE_SIZE = 65536

    def __init__(self, targets: Sequence[int], key_indices: Sequence[int]):
        self._targets = [(t,) for t in sorted(targets)]
        self._n = len(self._targets)
        self._key: Callable[[Sequence[Any]], Any] = _key_getter(key_indices)
        self._single = key_indices[0] if len(key_indices) == 1 else None
        self._cache: dict[str, tuple[int, ...]] = {}

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        if self._single is not None:
            k = values[self._single]
            if type(k) is str:
                target = self._cache.get(k)
                if target is None:
                    cache = self._cache
                    if len(cache) >= self.CACHE_SIZE:
                        cache.clear()
                    target = cache[k] = self._targets[zlib.crc32(k.encode()) % self._n]
                return target
        return self._targets[key_hash(self._key(values)) % self._n]


class PartialKeyRouter:
    """Two candidate tasks per key; pick the one this emitter has sent less to."""

    __slots__ = ("_targets", "_n", "_key", "_load")

    def __init__(self, targets: Sequence[int], key_indices: Sequence[int]):
        self._targets = [(t,) for t in sorted(targets)]
        self._n = len(self._targets)
        self._key = _key_getter(key_indices)
        self._load = [0] * self._n

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        h = key_hash(self._key(values))
        a = h % self._n
        b = _second_hash(h) % self._n
        pick = a if self._load[a] <= self._load[b] else b
        self._load[pick] += 1
        return self._targets[pick]


class AllRouter:
    __slots__ = ("_all",)

    def __init__(self, targets: Sequence[int]):
        self._all = tuple(sorted(targets))

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        return self._all


class GlobalRouter:
    __slots__ = ("_one",)

    def __init__(self, targets: Sequence[int]):
        self._one = (min(targets),)

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        return self._one


class DirectRouter:
    """Plain emits never reach a direct subscriber; emit_direct names the task."""

    __slots__ = ("targets",)

    def __init__(self, targets: Sequence[int]):
        self.targets = frozenset(targets)

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        return ()


class CustomRouter:
    __slots__ = ("_grouping", "_source_task", "_valid", "_name")

    def __init__(self, grouping: CustomGrouping, source_task: int, targets: Sequence[int], name: str):
        self._grouping = grouping
        self._source_task = source_task
        self._valid = frozenset(targets)
        self._name = name

    def choose(self, values: Sequence[Any]) -> tuple[int, ...]:
        chosen = tuple(self._grouping.choose_tasks(self._source_task, values))
        for t in chosen:
            if t not in self._valid:
                raise ValueError(
                    f"custom grouping {type(self._grouping).__name__} for '{self._name}' chose "
                    f"task {t}, which is not one of its target tasks {sorted(self._valid)}"
                )
        return chosen


def _key_getter(indices: Sequence[int]) -> Callable[[Sequence[Any]], Any]:
    idx = tuple(indices)
    if len(idx) == 1:
        i = idx[0]
        return lambda values: (values[i],)
    return lambda values: tuple(values[i] for i in idx)


def make_router(
    grouping: Grouping,
    targets: Sequence[int],
    source_fields: Sequence[str],
    source_task: int,
    local_tasks: frozenset[int],
    context: Any = None,
    stream: str = "default",
    target_name: str = "",
):
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
        cls = FieldsRouter if kind == "fields" else PartialKeyRouter
        return cls(targets, indices)
    if kind == "all":
        return AllRouter(targets)
    if kind == "global":
        return GlobalRouter(targets)
    if kind == "direct":
        return DirectRouter(targets)
    if kind == "custom":
        custom = grouping.custom
        instance = custom() if isinstance(custom, type) else _copy(custom)
        instance.prepare(context, stream, list(sorted(targets)))
        return CustomRouter(instance, source_task, targets, target_name)
    raise ValueError(f"unknown grouping {kind!r}")


def _copy(obj: Any) -> Any:
    import copy

    return copy.deepcopy(obj)

"""Stream groupings: how a stream's tuples are divided among a bolt's tasks.

Pure code, no I/O. A :class:`Grouping` is the declarative part stored in the
topology spec; :func:`streamgale.runtime.routing.make_router` turns it into a
router for one emitting task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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

"""The base classes users subclass: :class:`Spout` and :class:`Bolt`.

Threading contract: every method of a component instance is called from one
thread, the worker's executor loop, never concurrently. All executors of a
worker share that loop, so a method must not block for long: ``next_tuple``
must return promptly (emit nothing if nothing is ready), and a bolt that waits
on slow I/O delays every other task in its worker. Slow work belongs on a
thread of the bolt's own, which hands its results back with
``call_soon_threadsafe`` (as the model bolts of :mod:`streamgale.inference` do).

Each task runs its own instance: a component given as a class is instantiated
with no arguments per task; one given as an instance is deep-copied per task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from .tuples import Tuple

if TYPE_CHECKING:
    from .config import Config


@dataclass(frozen=True)
class TopologyContext:
    """What a task knows about itself and its topology (given to open/prepare)."""

    topology: str
    component: str
    task_id: int
    task_index: int  # 0..task_count-1 within the component
    task_count: int
    config: Config
    component_tasks: Mapping[str, tuple[int, ...]] = field(repr=False)
    outputs: Mapping[str, tuple[str, ...]] = field(repr=False)
    base_dir: str = "."  # the topology file's directory (in a worker: inside its code package)
    # (source component, stream) -> its fields, for every user stream this component subscribes to
    sources: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict, repr=False)
    # (source component, stream, target component) -> grouping spec ({"type": "fields", "fields": [...]}),
    # for every user stream this component subscribes to or emits to a subscriber
    groupings: Mapping[tuple[str, str, str], Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def tasks_of(self, component: str) -> tuple[int, ...]:
        """Task ids of ``component`` (for emit_direct targets)."""
        return self.component_tasks[component]


class _NotRunning:
    """Stands in for the runtime's collector until open/prepare is called."""

    def __getattr__(self, name: str):
        raise RuntimeError(
            f"'{name}' called on a component that is not running; emit, ack and fail "
            "may only be called from open/prepare onwards, by the runtime's thread"
        )


_NOT_RUNNING = _NotRunning()


class ReportedError(Exception):
    """What :meth:`Component.report_error` reports when given a message rather than an exception."""


class ComponentLog(logging.LoggerAdapter):
    """``self.log`` of a component: the logger ``streamgale.component.<name>``, each line prefixed
    with its task (``[task 3] ...``); ``component`` and ``task`` are also on every record."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[task {extra.get('task')}] {msg}", kwargs


class _TaskLogger:
    """``self.log``: a logger for the task, made on first use and kept on the instance. It is a
    non-data descriptor, so a component that sets ``self.log`` to something of its own keeps it."""

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        routes = getattr(instance._collector, "_routes", None)
        name, task = (routes.component, routes.task) if routes is not None else (owner.__name__, None)
        found = ComponentLog(logging.getLogger(f"streamgale.component.{name}"), {"component": name, "task": task})
        if routes is not None:  # running: named for good
            instance.__dict__["log"] = found
        return found


class Component:
    """Common to spouts and bolts.

    ``outputs`` declares the output streams and their fields: a list of field
    names for the default stream, or a mapping stream -> field names.
    ``self.log`` is a logger named for the component whose lines carry its task
    (``streamgale.component.<component>``, lines prefixed ``[task N]``; levels set like any
    logger's, e.g. ``streamgale set-log-level TOPOLOGY streamgale.component.count=DEBUG``);
    ``self.report_error(e)`` reports an error it handled (Storm's ``reportError``).
    """

    outputs: ClassVar[Sequence[str] | Mapping[str, Sequence[str]]] = ()
    _collector: Any = _NOT_RUNNING
    _report: Callable[[BaseException, str], None] = staticmethod(  # until error_reporter installs the runtime's
        lambda exc, doing: logging.getLogger("streamgale.component").error("%s: %s", doing, exc))

    log = _TaskLogger()

    def error_reporter(self, report: Callable[[BaseException, str], None]) -> None:
        """The runtime's error reporting, installed before open/prepare."""
        self._report = report

    def report_error(self, error: BaseException | str, doing: str = "") -> None:
        """Report ``error`` (an exception, or a message) as an error of this component: in the
        worker log, ``streamgale info`` and ``stats``, the UI, as if the component had raised it,
        but nothing fails (Storm's ``collector.reportError``). ``doing`` says what it was doing.
        Call it from the task's thread (another thread: inside ``call_soon_threadsafe``)."""
        exc = error if isinstance(error, BaseException) else ReportedError(str(error))
        self._report(exc, doing or f"reported by {type(self).__name__}")

    def call_soon_threadsafe(self, fn: Callable[[], None]) -> None:
        """Have ``fn()`` called on this task's thread at the loop's next turn; the one method
        another thread may call. A component that hands work to a thread of its own emits, acks
        and fails its results inside ``fn`` (a bolt passes ``anchors`` to emit: there is no
        current input)."""
        self._collector.call_soon_threadsafe(fn)


class Spout(Component):
    """A source of tuples.

    Override ``next_tuple`` (called repeatedly; must not block; emit zero or
    more tuples). Emit with a ``msg_id`` to have the tuple tracked: ``ack`` or
    ``fail`` is then called with that id once its tuple tree completes or fails.
    """

    def open(self, context: TopologyContext) -> None:
        """Called once per task before the first next_tuple."""

    def next_tuple(self) -> None:
        """Emit the next tuple(s), if any are ready. Must not block."""

    def ack(self, msg_id: Any) -> None:
        """The tuple emitted with ``msg_id`` was fully processed."""

    def fail(self, msg_id: Any) -> None:
        """The tuple emitted with ``msg_id`` failed or timed out; replay it if you wish."""

    def activate(self) -> None:
        """The topology was activated: next_tuple will be called again."""

    def deactivate(self) -> None:
        """The topology was deactivated: next_tuple will not be called until activate."""

    def close(self) -> None:
        """Called once when the task shuts down (best effort)."""

    def emit(self, values: Sequence[Any], stream: str = "default", msg_id: Any = None) -> Sequence[int]:
        """Emit a tuple; returns the task ids it was sent to."""
        return self._collector.spout_emit(values, stream, msg_id)

    def emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = "default",
                  msg_ids: Sequence[Any] | None = None) -> None:
        """Emit each entry of ``values_list`` as its own tuple, routed as a batch; ``msg_ids``
        (one per tuple, or None) tracks each like ``emit(values, msg_id=...)``."""
        self._collector.spout_emit_many(values_list, stream, msg_ids)

    def emit_direct(self, task: int, values: Sequence[Any], stream: str = "default",
                    msg_id: Any = None) -> None:
        """Emit to one task of a component subscribed to ``stream`` with direct grouping."""
        self._collector.spout_emit_direct(task, values, stream, msg_id)


class Bolt(Component):
    """A processing step.

    ``process(tup)`` is called for each input tuple. By default
    (``auto_ack = True``) every tuple emitted inside ``process`` is anchored to
    the input, and the input is acked when ``process`` returns (failed if it
    raises). Set ``auto_ack = False`` to hold tuples and call ``ack``/``fail``
    yourself, passing ``anchors`` to ``emit``.

    Optional: ``process_batch(tuples)`` takes queued inputs a batch at a time;
    ``accepts_input()`` returning False leaves inputs queued (backpressure: the
    queue fills and the spouts wait) until it returns True again.
    """

    auto_ack: ClassVar[bool] = True

    def prepare(self, context: TopologyContext) -> None:
        """Called once per task before the first tuple."""

    def process(self, tup: Tuple) -> None:
        """Handle one input tuple (tick tuples too: check ``tup.is_tick``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement process(self, tup)")

    def cleanup(self) -> None:
        """Called once when the task shuts down (best effort)."""

    def emit(self, values: Sequence[Any], stream: str = "default",
             anchors: Tuple | Sequence[Tuple] | None = None) -> Sequence[int]:
        """Emit a tuple anchored to ``anchors`` (default: the current input when auto_ack)."""
        return self._collector.bolt_emit(values, stream, anchors)

    def emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = "default",
                  anchors: Tuple | Sequence[Tuple] | None = None) -> None:
        """Emit each entry of ``values_list`` as its own tuple, routed as a batch, every one
        anchored to ``anchors`` (default: the current input when auto_ack)."""
        self._collector.bolt_emit_many(values_list, stream, anchors)

    def emit_direct(self, task: int, values: Sequence[Any], stream: str = "default",
                    anchors: Tuple | Sequence[Tuple] | None = None) -> None:
        self._collector.bolt_emit_direct(task, values, stream, anchors)

    def ack(self, tup: Tuple) -> None:
        self._collector.ack(tup)

    def fail(self, tup: Tuple) -> None:
        self._collector.fail(tup)


def apply_settings(component: Any, settings: Mapping[str, Any]) -> None:
    """Set a component's keyword settings (``OnnxBolt(model=...)``, ``ShellBolt(command=...)``) as
    attributes, refusing any not in its ``settings``."""
    allowed = component.settings
    for key, value in settings.items():
        if key not in allowed:
            raise TypeError(f"{type(component).__name__} takes no setting {key!r}; its settings are "
                            f"{', '.join(allowed)}")
        setattr(component, key, value)


def normalise_outputs(outputs: Any, component: str) -> dict[str, tuple[str, ...]]:
    """``["word"]`` -> ``{"default": ("word",)}``; validates names."""
    from .topology import TopologyError

    if isinstance(outputs, Mapping):
        streams = dict(outputs)
    elif isinstance(outputs, (list, tuple)):
        streams = {"default": outputs} if outputs else {}
    else:
        raise TopologyError(
            f"component '{component}': outputs must be a list of field names or a mapping "
            f"stream -> field names, got {type(outputs).__name__}"
        )
    result: dict[str, tuple[str, ...]] = {}
    for stream, fields in streams.items():
        if not isinstance(stream, str) or not stream or stream.startswith("__"):
            raise TopologyError(
                f"component '{component}': stream name {stream!r} is invalid "
                "(a non-empty string not starting with '__')"
            )
        if isinstance(fields, str) or not isinstance(fields, (list, tuple)):
            raise TopologyError(
                f"component '{component}': fields of stream '{stream}' must be a list of names"
            )
        if not all(isinstance(f, str) and f for f in fields):
            raise TopologyError(
                f"component '{component}': fields of stream '{stream}' must be non-empty strings"
            )
        if len(set(fields)) != len(fields):
            raise TopologyError(
                f"component '{component}': stream '{stream}' declares a field twice: {list(fields)}"
            )
        result[stream] = tuple(fields)
    return result

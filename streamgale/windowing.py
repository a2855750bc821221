"""Windowed bolts: Storm's windowing, driven by tick tuples.

A :class:`WindowedBolt` collects its input into windows and calls
``process_window(window)`` once per window. Declare the window on the class::

    class Average(WindowedBolt):
        window_length = Duration(10)     # or Count(100)
        window_slide = Duration(5)       # default: window_length (tumbling)
        timestamp_field = "ts"           # event time; None: processing time
        lag = 2.0                        # allowed out-of-orderness (event time)
        outputs = ["start", "end", "avg"]

        def process_window(self, window):
            values = [t["value"] for t in window.tuples]
            self.emit([window.start, window.end, sum(values) / len(values)])

Semantics (docs/windowing.md has the full story):

- Count windows (``Count(n)`` length, ``Count(m)`` slide): every ``m``
  tuples, the last ``n`` tuples are a window. They are evaluated as tuples
  arrive; ``window.start`` and ``window.end`` are None.
- Time windows (``Duration`` length and slide) are half-open intervals
  ``[end - length, end)`` whose ends are multiples of the slide (aligned to
  the epoch). A window is evaluated once the watermark reaches its end; empty
  windows are skipped. With processing time a tuple's timestamp is its
  arrival time (``time.time()``) and the watermark is the time of the latest
  tick. With event time (``timestamp_field``) the watermark is, at most once
  per ``watermark_interval`` and only on a tick, the minimum over the input
  source tasks seen so far of the latest timestamp from that task, minus
  ``lag``; it never goes back. A tuple whose timestamp is below the watermark
  is *late*: it is counted (``late_count``), emitted on ``late_stream`` if one
  is declared (a single field holding the tuple's values as a list), and
  acked, but joins no window.
- Mixed windows (a Count length with a Duration slide or the reverse), and
  event time with Count windows, are not supported: ``prepare`` says so.
- Acking: the bolt is not auto-acked. A tuple is acked once it can be in no
  later window (Storm's expiry). Emits inside ``process_window`` are anchored
  to every tuple of the window unless ``anchors=`` is given; if
  ``process_window`` raises, the window's tuples are failed.
- Time windows need tick tuples: the bolt's component config must set
  ``topology.tick_interval`` (``WindowedBolt.component_config()`` gives a
  suitable one). Windows are evaluated at the first tick after their end, so
  a window's result is late by up to one tick interval; its contents do not
  depend on when the tick comes.

The decisions are made by :class:`WindowManager`, a pure class with the
clock passed in (``now``), no I/O: feed it tuples and ticks, act on the
:data:`Action` list it returns. Its state is plain data; ``snapshot()`` /
``restore()`` give and take a msgpack-friendly form (values and timestamps).

:class:`StatefulWindowedBolt` is a windowed bolt and a ``StatefulBolt``: its
window is checkpointed with its state (a record per tuple under the reserved
keys ``("__window__", seq)``, and a ``"__window__"`` record), restored in
``init_state`` and after a rollback. A tuple is acked once it is in the window
(the runtime sends the ack when the checkpoint holding it commits), so only
the checkpoint interval must be below the message timeout; results are
anchored to the window's tuples since the last checkpoint. The window and the
state are exactly-once; results are at-least-once (a window evaluated after
the last commit is evaluated again after a recovery).

Threading: like every component, a windowed bolt and its manager are used by
the executor loop's thread only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from .components import Bolt, TopologyContext
from .state.bolt import StatefulBolt
from .state.kv import KeyValueState, encode
from .topology import TopologyError
from .tuples import Tuple

__all__ = [
    "Action",
    "Count",
    "Duration",
    "Evaluate",
    "Expire",
    "Late",
    "StatefulWindowedBolt",
    "Window",
    "WindowManager",
    "WindowSpec",
    "WindowedBolt",
    "WindowedState",
]

T = TypeVar("T")

DEFAULT_WATERMARK_INTERVAL = 1.0
# A tick that comes this much before the watermark interval is over still updates the
# watermark: ticks are timers of the executor loop, and a little jitter must not skip one.
TICK_SLACK = 0.01
SNAPSHOT_VERSION = 1


@dataclass(frozen=True)
class Count:
    """A window length or slide of ``n`` tuples."""

    n: int

    def __repr__(self) -> str:
        return f"Count({self.n!r})"


@dataclass(frozen=True)
class Duration:
    """A window length or slide of ``seconds`` (int or float)."""

    seconds: float

    def __repr__(self) -> str:
        return f"Duration({self.seconds!r})"


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _size(value: Any, setting: str, where: str) -> Count | Duration:
    if isinstance(value, Count):
        if isinstance(value.n, bool) or not isinstance(value.n, int) or value.n < 1:
            raise TopologyError(f"{where}: {setting} must be Count(n) with a whole number n >= 1, got {value!r}")
        return value
    if isinstance(value, Duration):
        if not _is_number(value.seconds) or value.seconds <= 0:
            raise TopologyError(f"{where}: {setting} must be Duration(seconds) with seconds > 0, got {value!r}")
        return value
    raise TopologyError(f"{where}: {setting} must be Count(n) or Duration(seconds), got {value!r}")


def _amount(size: Count | Duration) -> float:
    return size.n if isinstance(size, Count) else size.seconds


@dataclass(frozen=True)
class WindowSpec:
    """A validated window declaration (see :meth:`of`)."""

    length: Count | Duration
    slide: Count | Duration
    timestamp_field: str | None = None
    lag: float = 0.0
    watermark_interval: float = DEFAULT_WATERMARK_INTERVAL

    @property
    def counted(self) -> bool:
        return isinstance(self.length, Count)

    @property
    def event_time(self) -> bool:
        return self.timestamp_field is not None

    @property
    def tick_interval(self) -> float | None:
        """The tick interval this window wants: None for count windows (no ticks needed), the
        watermark interval for event time, else half the slide, at most 1 s."""
        if self.counted:
            return None
        if self.event_time:
            return self.watermark_interval
        return min(_amount(self.slide) / 2, 1.0)

    @classmethod
    def of(cls, bolt: Any, where: str) -> WindowSpec:
        """Read and validate the window attributes of ``bolt`` (a WindowedBolt class or
        instance); raises :class:`TopologyError` naming ``where``, the setting and the fix."""
        raw_length = getattr(bolt, "window_length", None)
        if raw_length is None:
            raise TopologyError(f"{where}: window_length is not set; set it to Count(n) or Duration(seconds)")
        length = _size(raw_length, "window_length", where)
        raw_slide = getattr(bolt, "window_slide", None)
        slide = length if raw_slide is None else _size(raw_slide, "window_slide", where)
        if type(length) is not type(slide):
            raise TopologyError(
                f"{where}: window_length {length!r} and window_slide {slide!r} mix counts and durations, "
                "which is not supported; use Count for both or Duration for both")
        if _amount(slide) > _amount(length):
            raise TopologyError(
                f"{where}: window_slide {slide!r} is longer than window_length {length!r}; "
                "the slide must not exceed the length (equal to it: tumbling windows)")
        ts_field = getattr(bolt, "timestamp_field", None)
        lag = getattr(bolt, "lag", None)
        interval = getattr(bolt, "watermark_interval", None)
        if ts_field is None:
            for name, value in (("lag", lag), ("watermark_interval", interval),
                                ("late_stream", getattr(bolt, "late_stream", None))):
                if value is not None:
                    raise TopologyError(
                        f"{where}: {name} is set but timestamp_field is not; {name} applies to event time "
                        f"only: set timestamp_field to the input field holding the event time, or remove {name}")
            return cls(length, slide)
        if not isinstance(ts_field, str) or not ts_field:
            raise TopologyError(f"{where}: timestamp_field must be a field name (a non-empty string), "
                                f"got {ts_field!r}")
        if isinstance(length, Count):
            raise TopologyError(
                f"{where}: timestamp_field needs Duration windows, got window_length {length!r}; "
                "event-time count windows are not supported")
        if lag is not None and (not _is_number(lag) or lag < 0):
            raise TopologyError(f"{where}: lag must be a number of seconds >= 0, got {lag!r}")
        if interval is not None and (not _is_number(interval) or interval <= 0):
            raise TopologyError(f"{where}: watermark_interval must be a number of seconds > 0, got {interval!r}")
        return cls(length, slide, ts_field, float(lag or 0.0),
                   DEFAULT_WATERMARK_INTERVAL if interval is None else float(interval))

    def check_config(self, config: Mapping[str, Any], where: str, stateful: bool = False) -> None:
        """Raise :class:`TopologyError` if tuples would time out or stall in this window under
        ``config`` (a task's config), or if time windows get no ticks; names the key to change.

        ``stateful``: the window is checkpointed (:class:`StatefulWindowedBolt`), so a tuple is
        acked when the checkpoint holding it commits, whatever the window's length: only the
        checkpoint interval must be below the message timeout."""
        if not self.counted and config.get("topology.tick_interval") is None:
            raise TopologyError(
                f"{where}: time windows are evaluated on tick tuples, but topology.tick_interval is not set "
                f"for it; declare the bolt with config={{\"topology.tick_interval\": {self.tick_interval:g}}}")
        if config.get("topology.acker_executors") == 0:
            return  # nothing is tracked: no tuple can time out or hold a spout back
        if stateful:
            interval = config.get("topology.state.checkpoint_interval", 1.0)
            timeout = config.get("topology.message_timeout", 30.0)
            if interval >= timeout:
                raise TopologyError(
                    f"{where}: a stateful window's tuples are acked when the checkpoint holding them commits, so "
                    f"topology.state.checkpoint_interval = {interval:g} s must be below topology.message_timeout "
                    f"= {timeout:g} s; lower the interval or raise the timeout (the window's length does not "
                    "count)")
            return
        hold = _amount(self.length) + _amount(self.slide)
        if self.counted:
            pending = config.get("topology.max_spout_pending")
            if pending is not None and hold > pending:
                raise TopologyError(
                    f"{where}: window_length + window_slide = {hold:g} tuples exceeds topology.max_spout_pending "
                    f"= {pending}, so the spouts would stop before a window fills; raise "
                    f"topology.max_spout_pending to at least {hold:g} (or null), shorten the window, or make it a "
                    "StatefulWindowedBolt (acked at each checkpoint)")
            return
        timeout = config.get("topology.message_timeout", 30.0)
        terms = "window_length + window_slide"
        if self.lag:
            hold += self.lag
            terms += " + lag"
        if hold > timeout:
            raise TopologyError(
                f"{where}: {terms} = {hold:g} s exceeds topology.message_timeout = {timeout:g} s, so tuples "
                f"would time out while they wait in the window; raise topology.message_timeout to at least "
                f"{hold:g}, shorten the window, or make it a StatefulWindowedBolt (acked at each checkpoint)")


@dataclass(frozen=True)
class Window(Generic[T]):
    """What ``process_window`` gets.

    ``tuples``: every tuple of the window, by timestamp (arrival order for count windows
    and ties). ``new``: those in no earlier evaluated window. ``expired``: those of the
    previous evaluated window that are not in this one (already acked: do not anchor to
    them). ``start`` / ``end``: the bounds ``[start, end)`` of a time window, in seconds
    since the epoch; None for count windows.
    """

    tuples: list[T]
    new: list[T]
    expired: list[T]
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Evaluate(Generic[T]):
    """Call ``process_window(window)``."""

    window: Window[T]


@dataclass(frozen=True)
class Expire(Generic[T]):
    """These items are in no later window: ack them (after the Evaluates before this)."""

    items: list[T]


@dataclass(frozen=True)
class Late(Generic[T]):
    """This item came after the watermark passed its timestamp: count it, ack it."""

    item: T


Action = Evaluate[T] | Expire[T] | Late[T]


@dataclass(eq=False)
class _Event(Generic[T]):
    seq: int
    ts: float
    values: list[Any]
    source: tuple[str, int] | None
    item: T
    shown: bool = False  # in an evaluated window already


@dataclass
class WindowManager(Generic[T]):
    """The windowing decisions, with no I/O and no clock of its own.

    Call :meth:`add` for each input and :meth:`tick` for each tick, passing the time;
    act on the returned actions in order. ``item`` is what windows hold and actions
    name (the bolt passes the Tuple); ``values`` is what :meth:`snapshot` keeps.
    """

    spec: WindowSpec
    events: list[_Event[T]] = field(default_factory=list)  # held: in a window to come
    previous: list[_Event[T]] = field(default_factory=list)  # the last evaluated window
    next_seq: int = 0
    since_trigger: int = 0  # count windows: tuples since the last evaluation
    watermark: float | None = None  # time windows
    evaluated: int | None = None  # time windows: index k (end = k * slide) of the last evaluated window
    latest: dict[tuple[str, int] | None, float] = field(default_factory=dict)  # event time, per source task
    watermark_at: float | None = None  # when the watermark was last computed (event time)

    @property
    def held(self) -> int:
        return len(self.events)

    def add(self, item: T, values: Sequence[Any], now: float, ts: float | None = None,
            source: tuple[str, int] | None = None) -> list[Action[T]]:
        """One input: ``ts`` is its event time (required with a timestamp_field, else
        ignored: the arrival time ``now`` is used), ``source`` its (component, task)."""
        spec = self.spec
        if spec.event_time:
            if ts is None:
                raise ValueError("event-time windows need the tuple's timestamp (ts)")
            if self.watermark is not None and ts < self.watermark:
                return [Late(item)]
            if ts > self.latest.get(source, -math.inf):
                self.latest[source] = ts
        else:
            ts = now if self.watermark is None else max(now, self.watermark)  # a clock step back is not late
        event = _Event(self.next_seq, ts, list(values), source, item)
        self.next_seq += 1
        self.events.append(event)
        if not isinstance(spec.length, Count):
            return []
        self.since_trigger += 1
        if self.since_trigger < _amount(spec.slide):
            return []
        self.since_trigger = 0
        contents = self.events[-spec.length.n:]
        keep = spec.length.n - int(_amount(spec.slide))
        gone = self.events[:len(self.events) - keep]
        self.events = self.events[len(self.events) - keep:]
        return [self._evaluate(contents, None, None), Expire([e.item for e in gone])]

    def tick(self, now: float) -> list[Action[T]]:
        """A tick at time ``now``: advance the watermark, evaluate the windows it passed."""
        spec = self.spec
        if spec.counted:
            return []
        if spec.event_time:
            if self.watermark_at is not None and now < self.watermark_at + spec.watermark_interval - TICK_SLACK:
                return []
            self.watermark_at = now
            if not self.latest:
                return []
            mark = min(self.latest.values()) - spec.lag
        else:
            mark = now
        if self.watermark is None or mark > self.watermark:
            self.watermark = mark
        return self._evaluate_until(self.watermark)

    def _bounds(self, k: int) -> tuple[float, float]:
        slide, length = _amount(self.spec.slide), _amount(self.spec.length)
        ratio = length / slide
        # With a length that is a whole number of slides, compute the start from the same
        # products as earlier ends, so a tumbling window starts exactly where the last ended.
        start = (k - round(ratio)) * slide if ratio == round(ratio) else k * slide - length
        return start, k * slide

    def _evaluate_until(self, mark: float) -> list[Action[T]]:
        out: list[Action[T]] = []
        slide = _amount(self.spec.slide)
        while self.events:
            first = min(e.ts for e in self.events)
            k = math.floor(first / slide) + 1  # the first window holding the oldest event
            if self._bounds(k)[1] <= first:
                k += 1
            if self.evaluated is not None and k <= self.evaluated:
                k = self.evaluated + 1
            start, end = self._bounds(k)
            if end > mark:
                break
            contents = sorted((e for e in self.events if start <= e.ts < end), key=lambda e: (e.ts, e.seq))
            if contents:
                out.append(self._evaluate(contents, start, end))
            self.evaluated = k
            limit = self._bounds(k + 1)[0]
            gone = [e for e in self.events if e.ts < limit]
            if gone:
                self.events = [e for e in self.events if e.ts >= limit]
                out.append(Expire([e.item for e in gone]))
        return out

    def _evaluate(self, contents: list[_Event[T]], start: float | None, end: float | None) -> Evaluate[T]:
        now_in = {e.seq for e in contents}
        expired = [e.item for e in self.previous if e.seq not in now_in]
        new = [e.item for e in contents if not e.shown]
        for e in contents:
            e.shown = True
        self.previous = contents
        return Evaluate(Window([e.item for e in contents], new, expired, start, end))

    # -- checkpointing ------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """The state as msgpack-friendly data: events as ``[seq, ts, values, source, shown,
        held, in previous window]``, sources as ``[component, task]`` or None. The items (the
        runtime's tuples) are not kept; :meth:`restore` rebuilds them from the values."""
        held = {e.seq for e in self.events}
        prev = {e.seq for e in self.previous}
        everything = {e.seq: e for e in [*self.events, *self.previous]}
        return {
            "version": SNAPSHOT_VERSION,
            "events": [[e.seq, e.ts, list(e.values), None if e.source is None else list(e.source), e.shown,
                        e.seq in held, e.seq in prev] for _, e in sorted(everything.items())],
            "next_seq": self.next_seq,
            "since_trigger": self.since_trigger,
            "watermark": self.watermark,
            "evaluated": self.evaluated,
            "latest": [[None if s is None else list(s), ts] for s, ts in self.latest.items()],
            "watermark_at": self.watermark_at,
        }

    @classmethod
    def restore(cls, spec: WindowSpec, data: Mapping[str, Any],
                make_item: Callable[[list[Any], tuple[str, int] | None], Any] = lambda values, source: values,
                ) -> WindowManager[Any]:
        """A manager in the state of ``data`` (from :meth:`snapshot`); each item is
        ``make_item(values, source)`` (default: the values list)."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"window snapshot version {data.get('version')!r} is not {SNAPSHOT_VERSION}")

        def source(s: Any) -> tuple[str, int] | None:
            return None if s is None else (s[0], s[1])

        manager: WindowManager[Any] = cls(spec, next_seq=data["next_seq"], since_trigger=data["since_trigger"],
                                          watermark=data["watermark"], evaluated=data["evaluated"],
                                          latest={source(s): ts for s, ts in data["latest"]},
                                          watermark_at=data["watermark_at"])
        for seq, ts, values, src, shown, held, prev in data["events"]:
            event = _Event(seq, ts, list(values), source(src), make_item(list(values), source(src)), shown)
            if held:
                manager.events.append(event)
            if prev:
                manager.previous.append(event)
        return manager


class WindowedBolt(Bolt):
    """A bolt that sees its input a window at a time: implement ``process_window(window)``.

    Class attributes: ``window_length`` (:class:`Count` or :class:`Duration`),
    ``window_slide`` (default: the length), ``timestamp_field`` (event time; None:
    processing time), ``lag`` (seconds, default 0), ``watermark_interval`` (seconds,
    default 1.0), ``late_stream`` (an output stream with one field, or None). A subclass
    that overrides ``prepare`` must call ``super().prepare(context)``; it must not
    override ``process``. ``late_count`` counts late tuples; ``counters()`` reports it
    with the number of tuples held.
    """

    auto_ack = False  # a tuple is acked when it leaves its last window
    window_length: ClassVar[Count | Duration | None] = None
    window_slide: ClassVar[Count | Duration | None] = None
    timestamp_field: ClassVar[str | None] = None
    lag: ClassVar[float | None] = None
    watermark_interval: ClassVar[float | None] = None
    late_stream: ClassVar[str | None] = None
    late_count: int = 0
    _checkpointed: ClassVar[bool] = False  # StatefulWindowedBolt: acked at checkpoints, not on expiry

    @classmethod
    def component_config(cls) -> dict[str, Any]:
        """The component config this bolt needs (Storm's getComponentConfiguration): the tick
        interval of its time windows; empty for count windows or an invalid declaration
        (``prepare`` reports that)."""
        try:
            interval = WindowSpec.of(cls, cls.__name__).tick_interval
        except TopologyError:
            return {}
        return {} if interval is None else {"topology.tick_interval": interval}

    def prepare(self, context: TopologyContext) -> None:
        """Validate the window against ``context`` and start it; raises :class:`TopologyError`."""
        where = f"windowed bolt '{context.component}'"
        spec = WindowSpec.of(self, where)
        spec.check_config(context.config, where, stateful=self._checkpointed)
        late = self.late_stream
        if late is not None:
            fields = context.outputs.get(late)
            if fields is None:
                raise TopologyError(f"{where}: late_stream '{late}' is not declared in outputs; add "
                                    f"\"{late}\": [\"tuple\"] to outputs")
            if len(fields) != 1:
                raise TopologyError(f"{where}: late_stream '{late}' must declare exactly one field (it carries "
                                    f"the late tuple's values as one list), e.g. \"{late}\": [\"tuple\"]; "
                                    f"it declares {list(fields)}")
        self.window_where = where
        self.window_spec = spec
        self.window_manager: WindowManager[Tuple] = WindowManager(spec)
        self.late_count = 0
        self._anchors: list[Tuple] | None = None
        # The runtime binds emit straight to its collector on the instance; take those bindings
        # (whatever a wrapper installed) so the methods below, which default the anchors to the
        # window, are the ones user code calls.
        col = self._collector
        self._emit = self.__dict__.pop("emit", None) or col.bolt_emit
        self._emit_many = self.__dict__.pop("emit_many", None) or col.bolt_emit_many
        self._emit_direct = self.__dict__.pop("emit_direct", None) or col.bolt_emit_direct

    def now(self) -> float:
        """The processing-time clock, in seconds since the epoch (override to inject one)."""
        return time.time()

    def process_window(self, window: Window[Tuple]) -> None:
        """Handle one window; emits default to being anchored to all of ``window.tuples``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process_window(self, window)")

    def emit(self, values: Sequence[Any], stream: str = "default",
             anchors: Tuple | Sequence[Tuple] | None = None) -> Sequence[int]:
        """Emit anchored to ``anchors``; by default, inside ``process_window``, to every tuple of
        the window (elsewhere: unanchored). ``anchors=()`` emits unanchored."""
        return self._emit(values, stream, self._anchors if anchors is None else anchors)

    def emit_many(self, values_list: Sequence[Sequence[Any]], stream: str = "default",
                  anchors: Tuple | Sequence[Tuple] | None = None) -> None:
        self._emit_many(values_list, stream, self._anchors if anchors is None else anchors)

    def emit_direct(self, task: int, values: Sequence[Any], stream: str = "default",
                    anchors: Tuple | Sequence[Tuple] | None = None) -> None:
        self._emit_direct(task, values, stream, self._anchors if anchors is None else anchors)

    def _require_prepared(self) -> WindowManager[Tuple]:
        manager: WindowManager[Tuple] | None = self.__dict__.get("window_manager")
        if manager is None:
            raise RuntimeError(f"{type(self).__name__}.prepare did not call super().prepare(context); "
                               "a WindowedBolt needs it to start its window")
        return manager

    def process(self, tup: Tuple) -> None:
        manager = self._require_prepared()
        now = self.now()
        if tup.is_tick:
            self._act(manager.tick(now))
            return
        ts = None
        if self.window_spec.timestamp_field is not None:
            ts = tup[self.window_spec.timestamp_field]
            if not _is_number(ts):
                raise ValueError(f"field '{self.window_spec.timestamp_field}' of {tup!r} must be its event time "
                                 f"in seconds since the epoch (an int or float), got {ts!r}")
        self._act(manager.add(tup, tup.values, now, ts, (tup.source, tup.source_task)))

    def _act(self, actions: list[Action[Tuple]]) -> None:
        error: Exception | None = None
        for action in actions:
            if isinstance(action, Evaluate):
                window = action.window
                self._anchors = self._window_anchors(window)
                try:
                    self.process_window(window)
                except Exception as exc:  # noqa: BLE001 - user code: fail its window, go on, re-raise
                    self._window_failed(window)
                    error = error or exc
                finally:
                    self._anchors = None
            elif isinstance(action, Expire):
                self._expired(action.items)
            else:
                self.late_count += 1
                if self.late_stream is not None:
                    self.emit([list(action.item.values)], self.late_stream, anchors=action.item)
                self._late(action.item)
        if error is not None:
            raise error

    # Acking, overridden by StatefulWindowedBolt (which acks at checkpoints instead).

    def _window_anchors(self, window: Window[Tuple]) -> list[Tuple]:
        """What emits inside ``process_window(window)`` are anchored to by default."""
        return window.tuples

    def _window_failed(self, window: Window[Tuple]) -> None:
        for t in window.tuples:
            self.fail(t)

    def _expired(self, items: list[Tuple]) -> None:
        for t in items:
            self.ack(t)

    def _late(self, item: Tuple) -> None:
        self.ack(item)

    def counters(self) -> dict[str, int]:
        """Metrics (see streamgale.runtime.metrics): late tuples, and tuples held in windows."""
        manager = self.__dict__.get("window_manager")
        return {"window_late": self.late_count, "window_held": 0 if manager is None else manager.held}


# -- stateful windows ---------------------------------------------------------------------------

WINDOW_KEY = "__window__"  # reserved in a StatefulWindowedBolt's state: this key, and (WINDOW_KEY, seq) keys


def _window_key(key: Any) -> bool:
    """Whether ``key`` is one of the state keys that hold a stateful window."""
    if isinstance(key, str):
        return key == WINDOW_KEY
    return isinstance(key, tuple) and len(key) == 2 and key[0] == WINDOW_KEY


class WindowedState(KeyValueState):
    """``self.state`` of a :class:`StatefulWindowedBolt`: the task's checkpointed state without
    the keys holding the window (``"__window__"`` and ``("__window__", n)``), which it neither
    shows nor lets user code write. Everything else is the task's :class:`KeyValueState`."""

    def __init__(self, state: KeyValueState):  # a view: KeyValueState.__init__ is not called
        self._state = state

    def _check(self, key: Any) -> None:
        if _window_key(key):
            raise KeyError(f"state key {key!r} is reserved: it holds the window's contents; use another key")

    def __getitem__(self, key: Any) -> Any:
        self._check(key)
        return self._state[key]

    def get(self, key: Any, default: Any = None) -> Any:
        return default if _window_key(key) else self._state.get(key, default)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._check(key)
        self._state[key] = value

    def __delitem__(self, key: Any) -> None:
        self._check(key)
        del self._state[key]

    def __iter__(self) -> Iterator[Any]:
        return (k for k in self._state if not _window_key(k))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        return not _window_key(key) and key in self._state

    def __repr__(self) -> str:
        return f"WindowedState({dict(self.items())!r:.200})"

    def delete(self, key: Any) -> None:
        if key in self:
            del self[key]

    def take_changes(self) -> dict[bytes, bytes | None]:
        raise TypeError("the runtime commits the task's whole state; a WindowedState is a view of it")

    def reset(self, committed: dict[bytes, bytes]) -> None:
        raise TypeError("the runtime rolls back the task's whole state; a WindowedState is a view of it")


_Flags = tuple[bool, bool, bool]  # an event's (shown, held, in the previous window)


class StatefulWindowedBolt(WindowedBolt, StatefulBolt):
    """A windowed bolt whose window is checkpointed with its state (Storm's stateful
    windowing with persistent windows; docs/windowing.md, "Stateful windows").

    Declared and used as a :class:`WindowedBolt`; the difference is acking and recovery:

    - The window's contents live in the task's checkpointed state, so a restarted or rolled
      back task goes on with the window as of the last commit.
    - A tuple is acked once it has been added to the window (or found late): the runtime
      sends that ack when the checkpoint holding it commits, instead of when the tuple
      leaves its last window. So windows need not fit in ``topology.message_timeout`` or
      ``topology.max_spout_pending``; only the checkpoint interval must be below the timeout.
    - Emits inside ``process_window`` are anchored by default to the window's tuples that
      arrived since the last checkpoint (the rest are acked already, or were restored from
      state); a window of only older tuples emits unanchored.
    - ``self.state`` (a :class:`WindowedState`) is the rest of the task's state, for the
      bolt's own keys; the keys ``"__window__"`` and ``("__window__", n)`` are the window's.

    Overrides of ``prepare``, ``init_state``, ``pre_prepare`` and ``pre_rollback`` must call
    ``super()`` first. If ``process_window`` raises, the error is reported and the next
    checkpoint fails on purpose, so the window and the state go back to the last commit and
    the inputs since are replayed.

    Per checkpoint the window writes what changed since the last one: one record per tuple
    added (``("__window__", seq)``: its timestamp, values and source), a record rewritten
    when the tuple first shows in an evaluated window or leaves it, a deletion when it is in
    no window, and a small ``"__window__"`` record (counters, watermark, source streams).
    """

    _checkpointed = True

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        self._kv: KeyValueState | None = None  # the task's whole state, once init_state has it
        self._unacked: dict[int, Tuple] = {}  # id -> tuple: inputs since the last checkpoint
        self._reload = False  # rolled back: rebuild the window from the state before using it
        self._poisoned: str | None = None  # process_window raised: fail the next checkpoint
        self._written: dict[int, _Flags] = {}  # seq -> the flags of its record in the state
        self._meta_written: dict[str, Any] | None = None
        self._schemas: list[list[Any]] = []  # [component, stream, fields] of the inputs kept
        self._schema_of: dict[tuple[str, str], int] = {}

    # -- the state's side --------------------------------------------------------------------

    def init_state(self, state: KeyValueState) -> None:
        """Take the task's committed state and restore the window from it."""
        self._require_prepared()
        super().init_state(state)
        self._kv = state
        self.state = WindowedState(state)
        self._load()

    def pre_prepare(self, txid: int) -> None:
        """Write the window's changes to the state; ack the inputs since the last checkpoint
        (the runtime holds those acks until checkpoint ``txid`` commits)."""
        if self.__dict__.get("_kv") is None:
            return
        self._sync()
        if self._poisoned is not None:
            raise RuntimeError(f"{self.window_where}: {self._poisoned}; checkpoint {txid} is failed so that the "
                               "window goes back to its last commit and the inputs since are replayed")
        self._persist()
        for t in self._unacked.values():
            self.ack(t)
        self._unacked.clear()

    def pre_rollback(self) -> None:
        """Fail the inputs since the last checkpoint (the spouts replay them); the window is
        rebuilt from the rolled back state before the next tuple."""
        for t in self.__dict__.get("_unacked", {}).values():
            self.fail(t)
        self._unacked = {}
        self._poisoned = None
        self._reload = True

    def _sync(self) -> None:
        if self._reload:
            self._load()

    def _spec_key(self) -> list[Any]:
        spec = self.window_spec
        return [repr(spec.length), repr(spec.slide), spec.timestamp_field]

    def _load(self) -> None:
        """Rebuild the window manager from the state (init_state, and after a rollback)."""
        kv = self._kv
        assert kv is not None
        self._reload = False
        self._unacked = {}
        self._poisoned = None
        meta = kv.get(WINDOW_KEY)
        if meta is None:
            self.window_manager = WindowManager(self.window_spec)
            self.late_count = 0
            self._written, self._meta_written, self._schemas, self._schema_of = {}, None, [], {}
            return
        if meta.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"{self.window_where}: the committed window's format {meta.get('version')!r} is not "
                             f"{SNAPSHOT_VERSION}")
        if meta["spec"] != self._spec_key():
            length, slide, ts_field = meta["spec"]
            raise TopologyError(
                f"{self.window_where}: the committed window was declared with window_length {length}, "
                f"window_slide {slide}, timestamp_field {ts_field!r}, and this bolt declares "
                f"{self.window_spec.length!r}, {self.window_spec.slide!r}, {self.window_spec.timestamp_field!r}; "
                "a window cannot be carried over to another declaration: declare the old one again, or run "
                "the new one under another component or topology name")
        schemas = [list(s) for s in meta["schemas"]]
        indexes = [{f: i for i, f in enumerate(fields)} for _, _, fields in schemas]
        events: list[list[Any]] = []
        items: dict[int, Tuple] = {}
        written: dict[int, _Flags] = {}
        for key, record in kv.items():
            if not _window_key(key) or not isinstance(key, tuple):
                continue
            seq = key[1]
            ts, values, schema, task, shown, held, prev = record
            component, stream, _ = schemas[schema]
            events.append([seq, ts, values, [component, task], shown, held, prev])
            items[seq] = Tuple(values, stream, component, task, indexes[schema])  # untracked: acked already
            written[seq] = (shown, held, prev)
        events.sort(key=lambda e: e[0])
        data = {"version": SNAPSHOT_VERSION, "events": events, "next_seq": meta["next_seq"],
                "since_trigger": meta["since_trigger"], "watermark": meta["watermark"],
                "evaluated": meta["evaluated"], "latest": meta["latest"], "watermark_at": meta["watermark_at"]}
        manager: WindowManager[Tuple] = WindowManager.restore(self.window_spec, data)
        for e in (*manager.events, *manager.previous):
            e.item = items[e.seq]
        self.window_manager = manager
        self.late_count = meta["late_count"]
        self._written, self._meta_written = written, meta
        self._schemas = schemas
        self._schema_of = {(c, s): i for i, (c, s, _) in enumerate(schemas)}

    def _schema(self, tup: Tuple) -> int:
        key = (tup.source, tup.stream)
        i = self._schema_of.get(key)
        if i is None:
            i = self._schema_of[key] = len(self._schemas)
            self._schemas.append([tup.source, tup.stream, tup.fields])
        return i

    def _persist(self) -> None:
        """Write what changed in the window since the last checkpoint to the state."""
        kv = self._kv
        assert kv is not None
        m = self.window_manager
        held = {e.seq for e in m.events}
        prev = {e.seq for e in m.previous}
        current = {e.seq: e for e in (*m.events, *m.previous)}
        written = self._written
        for seq, e in current.items():
            flags = (e.shown, seq in held, seq in prev)
            if written.get(seq) != flags:
                kv[(WINDOW_KEY, seq)] = [e.ts, e.values, self._schema(e.item), e.item.source_task, *flags]
                written[seq] = flags
        for seq in [s for s in written if s not in current]:
            del kv[(WINDOW_KEY, seq)]
            del written[seq]
        meta = {
            "version": SNAPSHOT_VERSION,
            "spec": self._spec_key(),
            "next_seq": m.next_seq,
            "since_trigger": m.since_trigger,
            "watermark": m.watermark,
            "evaluated": m.evaluated,
            "latest": [[None if s is None else list(s), ts] for s, ts in m.latest.items()],
            "watermark_at": m.watermark_at,
            "late_count": self.late_count,
            "schemas": [list(s) for s in self._schemas],
        }
        if meta != self._meta_written:
            kv[WINDOW_KEY] = meta
            self._meta_written = meta

    # -- tuples ------------------------------------------------------------------------------

    def process(self, tup: Tuple) -> None:
        self._require_prepared()
        if self.__dict__.get("_kv") is None:
            if tup.is_tick:
                return  # ticks come before the state does: the window starts with it
            raise RuntimeError(f"{type(self).__name__}: the window's state is not initialised: init_state(state) "
                               "was not called (the runtime calls it in a checkpointed topology), or an override "
                               "of it did not call super().init_state(state)")
        self._sync()
        if tup.is_tick:
            super().process(tup)
            return
        try:
            encode(tup.values)
        except (TypeError, OverflowError) as exc:  # msgpack: an int beyond 64 bits overflows
            raise TypeError(f"{self.window_where}: {tup!r} cannot be kept in a stateful window: {exc}") from None
        key = id(tup)
        self._unacked[key] = tup
        try:
            super().process(tup)
        except Exception:
            self._unacked.pop(key, None)  # the runtime fails it
            raise

    def _window_anchors(self, window: Window[Tuple]) -> list[Tuple]:
        live = self._unacked
        return [t for t in window.tuples if id(t) in live]

    def _window_failed(self, window: Window[Tuple]) -> None:
        bounds = "" if window.start is None else f" [{window.start:g}, {window.end:g})"
        self._poisoned = self._poisoned or f"process_window raised on the window{bounds}"

    def _expired(self, items: list[Tuple]) -> None:
        pass  # acked at the checkpoint that holds them

    def _late(self, item: Tuple) -> None:
        pass  # acked at the checkpoint that holds the late count

"""Local mode: the whole topology in this process, no ZooKeeper, no sockets.

Every executor the topology declares runs here, through the same routers and
executor loop that a cluster worker uses.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamgale.runtime import gcpolicy
from streamgale.runtime.assembly import build_executors, check_before_submit
from streamgale.runtime.executor import Capture, TaskRunner
from streamgale.runtime.loop import ExecutorLoop

from .config import Config
from .ratelimit import ErrorThrottle, held_back
from .state.store import check_backend
from .topology import Topology, acker_count

log = logging.getLogger("streamgale.local")
MAX_ERRORS = 1000  # errors a run keeps (a bolt raising on every tuple raises millions); all are counted


@dataclass
class ComponentError:
    component: str
    task: int
    error: BaseException
    details: str


@dataclass
class LocalRun:
    """The outcome of a local run."""

    seconds: float
    errors: list[ComponentError] = field(default_factory=list)  # the first MAX_ERRORS
    interrupted: bool = False
    error_count: int = 0  # every error raised, kept or not


class LocalCluster:
    """Runs one topology in-process. Not thread-safe: drive it from one thread,
    except :meth:`shutdown`, which any thread may call.

    ``clock`` (monotonic seconds) times the tick tuples and the message timeouts;
    :mod:`streamgale.testing` passes a simulated one.
    """

    def __init__(self, topology: Topology, config: Config, capture: Capture | None = None,
                 on_error: Callable[[ComponentError], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        topology = topology.validate().with_checkpointing(config).with_ackers(acker_count(config),
                                                                             config["topology.message_timeout"])
        if topology.stateful_components():
            check_backend(config)
        check_before_submit(topology, config, topology.base_dir or os.getcwd())  # a model bolt's file and mapping
        self.topology = topology
        self.config = config
        self.errors: list[ComponentError] = []  # the first MAX_ERRORS
        self._throttle = ErrorThrottle()
        self._on_error = on_error
        self._stop = threading.Event()
        self._versions_lock = threading.Lock()
        self._model_versions: dict[str, int] = {}
        groups = [(name, tasks) for name, execs in topology.executors().items() for tasks in execs]
        self.executors = build_executors(topology, config, groups, None, self._record_error, capture,
                                         clock=clock)
        self.loop = ExecutorLoop(self.executors, config["topology.queue_size"], clock)

    def _record_error(self, component: str, task: int, exc: BaseException, details: str) -> None:
        err = ComponentError(component, task, exc, details)
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(err)
        if self._on_error is not None:
            self._on_error(err)
        held = self._throttle.admit(component, time.monotonic())
        if held is not None:  # one logged per component per second, saying how many were not
            log.error("component '%s' task %d raised %s: %s%s\n%s", component, task,
                      type(exc).__name__, exc, held_back(component, held), details)

    def update_model(self, component: str, path: str) -> int:
        """Serve the model file at ``path`` in model bolt ``component`` from its next batch on
        (thread-safe; see :meth:`streamgale.inference.ModelBolt.model_updated`); returns the new
        version (the model the bolt names is version 1). A file that does not load or fit is
        refused, reported as an error of the component, and the old model keeps serving."""
        model_bolts: dict[str, list[TaskRunner]] = {}
        for e in self.executors:
            for r in e.runners:
                if getattr(r.instance, "model_updated", None) is not None:
                    model_bolts.setdefault(e.component, []).append(r)
        runners = model_bolts.get(component)
        if not runners:
            bolts = sorted(model_bolts)
            raise ValueError(f"topology '{self.topology.name}' has no model bolt named '{component}' "
                             f"(its model bolts: {', '.join(bolts) or 'none'})")
        with self._versions_lock:
            version = self._model_versions[component] = self._model_versions.get(component, 1) + 1
        for r in runners:
            r.collector.call_soon_threadsafe(functools.partial(r.instance.model_updated, path, version))
        return version

    def shutdown(self) -> None:
        """Ask the loop to stop after its current turn (thread-safe)."""
        self._stop.set()

    def run(self, duration: float | None = None,
            until: Callable[[], bool] | None = None) -> LocalRun:
        """Run until ``duration`` elapses, ``until()`` is true, shutdown, or Ctrl-C. Raises
        :class:`~streamgale.runtime.executor.StartFailed` (naming the component and task; the
        exception is its ``error``) if a component's ``open`` or ``prepare`` raises."""
        start = time.monotonic()
        deadline = None if duration is None else start + duration
        stop = self._stop

        def should_stop() -> bool:
            if stop.is_set():
                return True
            if deadline is not None and time.monotonic() >= deadline:
                return True
            return until is not None and until()

        interrupted = False
        self.loop.start()  # StartFailed: a component's open or prepare raised (reported as its error)
        try:
            with gcpolicy.tuned():
                self.loop.run(should_stop)
        except KeyboardInterrupt:
            interrupted = True
            log.info("interrupted; shutting down")
        finally:
            self.loop.stop()
        return LocalRun(time.monotonic() - start, list(self.errors), interrupted,
                        sum(self._throttle.counts.values()))


def run_local(topology: Topology, config: Config, duration: float | None = None) -> LocalRun:
    """Run ``topology`` in this process until ``duration`` seconds pass or Ctrl-C."""
    return LocalCluster(topology, config).run(duration)


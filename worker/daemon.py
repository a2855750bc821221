"""The worker process: one per (topology, slot), started by a supervisor.

Owns: the executor loop thread (which also owns every tuple socket of the
worker: the transport) and the heartbeat thread (which owns the socket to
its supervisor). A worker holds no ZooKeeper session: it starts from the
launch file its supervisor wrote (:func:`streamgale.wire.channel.read_launch`)
and learns of status, log-level and assignment changes from its supervisor
over the local channel; its heartbeats, metrics and errors go the same way.
Control messages arrive on the heartbeat thread and are only queued; the loop
thread applies them between turns.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from typing import Any

import psutil
import zmq

from streamgale.cluster.records import ACTIVE, Assignment, ErrorRecord, slot_id
from streamgale.config import Config, load_config
from streamgale.runtime import gcpolicy
from streamgale.runtime.acking import ACKER
from streamgale.runtime.assembly import build_executors, stream_index
from streamgale.runtime.executor import Sink
from streamgale.runtime.loader import load_topology
from streamgale.runtime.loop import ExecutorLoop
from streamgale.runtime.metrics import task_counters
from streamgale.runtime.wakeup import Wakeup
from streamgale.topology import Topology
from streamgale.wire import channel
from streamgale.wire.channel import WorkerArgs

from .heartbeat import Heartbeat, send_once
from .transport import Inbound, Transport

log = logging.getLogger("streamgale.worker")

ERROR_REPORT_INTERVAL = 1.0  # at most one error record per component per second


def apply_log_levels(levels: dict[str, str]) -> None:
    """``streamgale set-log-level``: logger name ("" for the root logger) -> level."""
    for name, level in levels.items():
        logger = logging.getLogger(name or None)
        if logger.level != logging.getLevelName(level):
            logger.setLevel(level)
            log.info("log level of %r set to %s", name or "root", level)


class WorkerIO:
    """The loop's I/O hook: the transport, and control messages from the supervisor."""

    def __init__(self, worker: Worker, transport: Transport):
        self.worker = worker
        self.transport = transport

    def pump(self, idle: bool, congested: bool) -> int:
        work = self.transport.pump(idle, congested)
        if not self.worker.controls.empty():
            self.worker.apply_controls()
        return work

    def congested(self) -> bool:
        return self.transport.congested()

    def wait(self, timeout: float, wakeup: Wakeup) -> None:
        self.transport.wait(timeout, wakeup)


class Worker:
    """One worker: ``start()``, ``run()`` (blocks in the loop until :meth:`stop`), ``close()``.

    ``context`` is the ZeroMQ context (shared by the workers of an in-process
    cluster); ``clock`` is monotonic seconds; ``worker_id`` is the id its
    supervisor knows it by (default: the process id).
    """

    def __init__(self, args: WorkerArgs, config: Config, context: zmq.Context,
                 clock: Callable[[], float] = time.monotonic, worker_id: int = 0):
        self.args = args
        self.worker_id = worker_id or os.getpid()  # what its beats call it: the pid, or a thread launcher's id
        self.base_config = config
        self.config = config
        self.context = context
        self.clock = clock
        self.slot = slot_id(args.supervisor_id, args.port)
        self.stopping = False
        self.exit_reason = ""
        self.started_at = clock()
        self.controls: queue.SimpleQueue[channel.WorkerControl] = queue.SimpleQueue()
        self.control_version = 0
        self.beats = 0
        self.executor_groups: tuple[tuple[str, tuple[int, ...]], ...] = ()
        self.endpoints: dict[int, str] = {}
        self.sinks: dict[int, Sink] = {}
        self.inbound: Inbound | None = None
        self.transport: Transport | None = None
        self.loop: ExecutorLoop | None = None
        self.heartbeat: Heartbeat | None = None
        self.process = psutil.Process()
        self._last_error: dict[str, float] = {}
        self.model_versions: dict[str, int] = {}  # component -> the uploaded model version handed to its tasks

    # -- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        record, assignment, models = channel.read_launch(a.worker_dir)
        my_slot = assignment.slots.get(self.slot)
        if record.id != a.topology_id or my_slot is None:
            raise RuntimeError(f"the launch file does not give slot {self.slot} executors of {a.topology_id}")
        self.config = self.base_config.merged(record.config, "topology config")
        acker = record.spec.components.get(ACKER)
        ackers = acker.tasks if acker is not None else 0
        loaded = load_topology(a.code_dir / record.entry, self.config)
        loaded.name = record.name  # as submitted (``--name``): what tasks see, and their state's namespace
        topology: Topology = loaded.with_checkpointing(self.config).with_ackers(
            ackers, self.config["topology.message_timeout"])
        self.executor_groups = my_slot.executors
        self.endpoints = assignment.task_endpoints()

        task_component = {t: c for c, ts in topology.task_ids().items() for t in ts}
        self.inbound = Inbound({}, task_component, stream_index(topology))
        self.transport = transport = Transport(
            self.context, a.port, self.inbound, self.config["topology.batch_size"],
            self.config["topology.batch_linger"], scheme=a.scheme, host=a.host)
        executors = build_executors(
            topology, self.config, self.executor_groups,
            lambda t: transport.sink(t, self.endpoints[t]), self.on_error, sinks=self.sinks,
        )
        self.inbound.queues.update({r.task: r.queue.append for e in executors for r in e.runners})
        self.loop = ExecutorLoop(executors, self.config["topology.queue_size"], io=WorkerIO(self, transport))
        self._apply_models(models)  # before prepare: the tasks load these instead of the shipped files
        self.process.cpu_percent()  # the first call only starts the measurement
        self.heartbeat = Heartbeat(self.context, a.channel, str(a.port).encode(), self._beat, self._metrics,
                                   self.controls, self.loop, (a.host, a.port), clock=self.clock)
        self.heartbeat.start()
        self.loop.start()
        self.loop.set_active(record.status == ACTIVE)
        apply_log_levels(record.log_levels)
        log.info("worker for %s on port %d runs %s", a.topology_id, a.port,
                 ", ".join(f"{c}{list(t)}" for c, t in self.executor_groups))

    # -- reports (heartbeat thread) -----------------------------------------------------------

    def _beat(self) -> channel.WorkerBeat:
        self.beats += 1
        return channel.WorkerBeat(self.args.topology_id, self.args.port, self.worker_id, self.beats,
                                  self.executor_groups, self.control_version,
                                  round(self.clock() - self.started_at, 1))

    def _metrics(self) -> dict[str, Any]:
        a = self.args
        return {"topology_id": a.topology_id, "slot": self.slot, "host": a.host, "port": a.port,
                "pid": os.getpid(), "time": time.time(), "uptime_s": round(self.clock() - self.started_at, 1),
                "cpu_percent": self.process.cpu_percent(),
                "rss_mb": round(self.process.memory_info().rss / 2**20, 1),
                "transport": {} if self.transport is None else self.transport.counters(),
                "tasks": task_counters(self.loop.executors) if self.loop is not None else {}}

    # -- control (loop thread) ----------------------------------------------------------------

    def apply_controls(self) -> None:
        while True:
            try:
                control = self.controls.get_nowait()
            except queue.Empty:
                return
            self.apply_control(control)

    def apply_control(self, control: channel.WorkerControl) -> None:
        if control.assignment is None:
            self.stop("the topology's assignment is gone")
            return
        assignment = channel.assignment_from_dict(control.assignment)
        if assignment.topology_id != self.args.topology_id:
            return
        mine = assignment.slots.get(self.slot)
        if mine is None or mine.executors != self.executor_groups:
            # Our own executors changed or went away: the supervisor restarts or stops us.
            self.stop("assignment of this slot changed")
            return
        assert self.loop is not None
        self.loop.set_active(control.status == ACTIVE)
        apply_log_levels(control.log_levels)
        self._apply_models(control.models)
        self._repoint(assignment)
        self.control_version = control.version

    def _apply_models(self, models: dict[str, dict[str, Any]]) -> None:
        """Hand each local task of a model bolt the uploaded model version it should serve."""
        assert self.loop is not None
        for e in self.loop.executors:
            m = models.get(e.component)
            if m is None or self.model_versions.get(e.component) == m["version"]:
                continue
            self.model_versions[e.component] = m["version"]
            for r in e.runners:
                update = getattr(r.instance, "model_updated", None)
                if update is not None:
                    update(m["path"], m["version"])
            log.info("%s serves model version %d from %s", e.component, m["version"], m["path"])

    def _repoint(self, assignment: Assignment) -> None:
        assert self.transport is not None and self.inbound is not None
        endpoints = assignment.task_endpoints()
        moved = [t for t, ep in endpoints.items() if self.endpoints.get(t) != ep and t in self.sinks
                 and t not in self.inbound.queues]
        self.endpoints = endpoints
        for t in moved:
            self.sinks[t] = self.transport.sink(t, endpoints[t])
        if moved:
            log.info("re-pointed %d moved tasks", len(moved))
            self.transport.retarget({endpoints[t] for t in self.sinks if t not in self.inbound.queues})

    def on_error(self, component: str, task: int, exc: BaseException, details: str) -> None:
        log.error("component '%s' task %d raised %s: %s\n%s", component, task, type(exc).__name__, exc, details)
        now = self.clock()
        if now - self._last_error.get(component, -ERROR_REPORT_INTERVAL) < ERROR_REPORT_INTERVAL:
            return
        self._last_error[component] = now
        message = f"{type(exc).__name__}: {exc}\n{details}"
        if self.heartbeat is not None:
            self.heartbeat.report(ErrorRecord(component, task, self.args.host, self.args.port, time.time(),
                                              message[:16000]))

    # -- run / stop ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ask the loop to stop (safe from a signal handler and from any thread)."""
        if not self.stopping:
            self.exit_reason = reason
            self.stopping = True

    def run(self) -> None:
        assert self.loop is not None
        self.loop.run(lambda: self.stopping)

    def close(self) -> None:
        log.info("worker stopping: %s", self.exit_reason or "closed")
        if self.loop is not None:
            self.loop.stop()
        if self.transport is not None:
            self.transport.flush_all()
            self.transport.close()
        if self.heartbeat is not None:
            self.heartbeat.close()  # the last errors reach the supervisor


def main(args: WorkerArgs) -> int:
    config = load_config(args.config_file) if args.config_file else Config()
    logging.basicConfig(level=config["logging_level"],
                        format=f"%(asctime)s %(levelname)s worker[{args.port}] %(name)s: %(message)s", force=True)
    worker = Worker(args, config, zmq.Context.instance())
    signal.signal(signal.SIGTERM, lambda *_: worker.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: worker.stop("SIGINT"))
    try:
        worker.start()
        # Everything loaded so far (modules, topology, executors) lives as long as the
        # process: keep it out of the collector's full passes, which would otherwise
        # walk it again and again while tuples churn.
        gc.collect()
        gc.freeze()
        gcpolicy.tune()
        worker.run()
    except Exception:  # noqa: BLE001 - any failure ends the worker, reported to its supervisor
        log.error("worker failed:\n%s", traceback.format_exc())
        record = ErrorRecord("__worker", -1, args.host, args.port, time.time(),
                             f"worker failed:\n{traceback.format_exc()}"[:16000])
        if worker.heartbeat is not None:
            worker.heartbeat.report(record)
        else:
            send_once(worker.context, args.channel, str(args.port).encode(),
                      channel.WorkerErrorReport(record.to_dict()))
        worker.close()
        return 1
    worker.close()
    return 0

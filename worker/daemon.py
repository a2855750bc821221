"""The worker process: one per (topology, slot), started by a supervisor.

Owns: the executor loop thread (which also owns every ZeroMQ socket of the
worker), a ClusterState session (watching its topology's status and
assignment), and its heartbeat file. Watch callbacks arrive on kazoo's thread
and only enqueue events; the loop thread applies them between turns.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

from streamgale.runtime.acking import ACKER
from streamgale.cluster.state import ClusterState
from streamgale.config import Config, load_config
from streamgale.runtime.loader import load_topology
from streamgale.cluster.records import ACTIVE, Assignment, ErrorRecord, TopologyRecord, slot_id
from streamgale.topology import Topology

from streamgale.runtime.assembly import build_executors, stream_index
from .metrics import MetricsWriter
from streamgale.runtime.executor import Sink
from streamgale.runtime.loop import ExecutorLoop
from .transport import Inbound, Transport

log = logging.getLogger("streamgale.worker")

HEARTBEAT_INTERVAL = 1.0
METRICS_INTERVAL = 2.0  # seconds between metrics snapshots (forwarded to nimbus by the supervisor)
ERROR_REPORT_INTERVAL = 1.0  # at most one error record per component per second


@dataclass(frozen=True)
class WorkerArgs:
    topology_id: str
    port: int
    supervisor_id: str
    host: str
    code_dir: Path
    worker_dir: Path
    config_file: Path | None


def heartbeat_path(worker_dir: Path) -> Path:
    return worker_dir / "heartbeat"


def write_heartbeat(worker_dir: Path, topology_id: str, executors: Any) -> None:
    """Atomically replace the heartbeat file the supervisor reads."""
    path = heartbeat_path(worker_dir)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb({"time": time.monotonic(), "pid": os.getpid(), "topology_id": topology_id,
                                   "executors": [[c, list(t)] for c, t in executors]}))
    os.replace(tmp, path)


def read_heartbeat(worker_dir: Path) -> dict[str, Any] | None:
    try:
        data = msgpack.unpackb(heartbeat_path(worker_dir).read_bytes(), raw=False)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError, msgpack.UnpackException):
        return None


def apply_log_levels(levels: dict[str, str]) -> None:
    """``streamgale set-log-level``: logger name ("" for the root logger) -> level."""
    for name, level in levels.items():
        logger = logging.getLogger(name or None)
        if logger.level != logging.getLevelName(level):
            logger.setLevel(level)
            log.info("log level of %r set to %s", name or "root", level)


class WorkerIO:
    """The loop's I/O hook: transport, control events, heartbeats, error reports."""

    def __init__(self, worker: "Worker"):
        self.worker = worker
        self.next_heartbeat = 0.0
        self.next_metrics = 0.0

    def pump(self, idle: bool, congested: bool) -> int:
        w = self.worker
        work = w.transport.pump(idle, congested)
        if not w.events.empty():
            w.apply_events()
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + HEARTBEAT_INTERVAL
            write_heartbeat(w.args.worker_dir, w.args.topology_id, w.executor_groups)
            w.state.worker_beat(w.args.topology_id, w.slot, b"")  # for nimbus; never blocks
        if now >= self.next_metrics:
            self.next_metrics = now + METRICS_INTERVAL
            w.metrics.write(w.loop.executors)
        return work

    def congested(self) -> bool:
        return self.worker.transport.congested()

    def wait(self, timeout: float) -> None:
        self.worker.transport.wait(timeout)


class Worker:
    def __init__(self, args: WorkerArgs, config: Config):
        self.args = args
        self.base_config = config
        self.events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self.stopping = False
        self.exit_reason = ""
        self._last_error: dict[str, float] = {}
        self._errors: queue.Queue[ErrorRecord | None] = queue.Queue()
        self._reporter = threading.Thread(target=self._report_errors, name="error-reporter", daemon=True)
        self._reporter.start()
        self.state = ClusterState(config["zookeeper.servers"], config["zookeeper.root"],
                                  config["zookeeper.session_timeout"])

    # -- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        self.state.start(timeout=30)
        record = self.state.topology(a.topology_id)
        assignment = self.state.assignment(a.topology_id)
        if record is None or assignment is None:
            raise RuntimeError(f"topology {a.topology_id} is not assigned (killed?)")
        my_slot = assignment.slots.get(slot_id(a.supervisor_id, a.port))
        if my_slot is None:
            raise RuntimeError(f"slot {a.supervisor_id}:{a.port} has no executors of {a.topology_id}")
        self.record = record
        self.config = self.base_config.merged(record.config, "topology config")
        ackers = int(record.spec["components"].get(ACKER, {}).get("tasks", 0))
        self.topology: Topology = load_topology(a.code_dir / record.entry, self.config).with_ackers(ackers)
        self.executor_groups = my_slot.executors
        self.endpoints = assignment.task_endpoints()
        self.assignment = assignment

        self.context = zmq.Context.instance()
        task_component = {t: c for c, ts in self.topology.task_ids().items() for t in ts}
        self.inbound = Inbound({}, task_component, stream_index(self.topology))
        self.transport = Transport(self.context, a.port, self.inbound, self.config["topology.batch_size"],
                                   self.config["topology.batch_linger"])
        self.sinks: dict[int, Sink] = {}
        executors = build_executors(
            self.topology, self.config, self.executor_groups,
            lambda t: self.transport.sink(t, self.endpoints[t]), self.on_error, sinks=self.sinks,
        )
        self.inbound.queues.update({r.task: r.queue.append for e in executors for r in e.runners})
        self.loop = ExecutorLoop(executors, self.config["topology.queue_size"], io=WorkerIO(self))
        self.loop.start()
        self.loop.set_active(record.status == ACTIVE)
        apply_log_levels(record.log_levels)
        self.slot = slot_id(a.supervisor_id, a.port)
        self.state.register_worker(a.topology_id, self.slot, b"")
        self.metrics = MetricsWriter(a.worker_dir, a.topology_id, self.slot, a.host, a.port)
        self.state.watch_topology(a.topology_id, lambda rec: self.events.put(("topology", rec)))
        self.state.watch_assignment(a.topology_id, lambda asg: self.events.put(("assignment", asg)))
        write_heartbeat(a.worker_dir, a.topology_id, self.executor_groups)
        log.info("worker for %s on port %d runs %s", a.topology_id, a.port,
                 ", ".join(f"{c}{list(t)}" for c, t in self.executor_groups))

    # -- events (loop thread) -----------------------------------------------------------------

    def apply_events(self) -> None:
        while True:
            try:
                kind, value = self.events.get_nowait()
            except queue.Empty:
                return
            if kind == "topology":
                self._on_topology(value)
            elif kind == "assignment":
                self._on_assignment(value)

    def _on_topology(self, record: TopologyRecord | None) -> None:
        if record is None:
            return  # deletion: the assignment watch stops us
        self.loop.set_active(record.status == ACTIVE)
        apply_log_levels(record.log_levels)

    def _on_assignment(self, assignment: Assignment | None) -> None:
        a = self.args
        mine = None if assignment is None else assignment.slots.get(slot_id(a.supervisor_id, a.port))
        if mine is None or mine.executors != self.executor_groups:
            # Our own executors changed or went away: the supervisor restarts or stops us.
            self.stop("assignment of this slot changed")
            return
        endpoints = assignment.task_endpoints()
        moved = [t for t, ep in endpoints.items() if self.endpoints.get(t) != ep and t in self.sinks
                 and t not in self.inbound.queues]
        self.endpoints = endpoints
        for t in moved:
            self.sinks[t] = self.transport.sink(t, endpoints[t])
        if moved:
            log.info("re-pointed %d moved tasks", len(moved))
            self.transport.retarget({endpoints[t] for t in self.sinks if t not in self.inbound.queues})
        self.assignment = assignment

    def on_error(self, component: str, task: int, exc: BaseException, details: str) -> None:
        log.error("component '%s' task %d raised %s: %s\n%s", component, task, type(exc).__name__, exc, details)
        now = time.monotonic()
        if now - self._last_error.get(component, 0.0) < ERROR_REPORT_INTERVAL:
            return
        self._last_error[component] = now
        message = f"{type(exc).__name__}: {exc}\n{details}"
        record = ErrorRecord(component, task, self.args.host, self.args.port, time.time(), message[:16000])
        if self._errors.qsize() < 100:  # written by a thread: ZooKeeper being slow or down never stalls the loop
            self._errors.put(record)

    def _report_errors(self) -> None:
        while True:
            record = self._errors.get()
            if record is None:
                return
            try:
                self.state.report_error(self.args.topology_id, record)
            except Exception as e:  # noqa: BLE001 - ZooKeeper down must not kill the worker
                log.warning("could not record the error in ZooKeeper: %s", e)

    # -- run / stop ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ask the loop to stop (safe from a signal handler)."""
        if not self.stopping:
            self.exit_reason = reason
            self.stopping = True

    def run(self) -> None:
        self.loop.run(lambda: self.stopping)

    def close(self) -> None:
        log.info("worker stopping: %s", self.exit_reason or "closed")
        loop = getattr(self, "loop", None)
        if loop is not None:
            loop.stop()
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.flush_all()
            transport.close()
        self._errors.put(None)
        self._reporter.join(timeout=2)  # the last errors reach the cluster if ZooKeeper is there
        self.state.close()


def main(args: WorkerArgs) -> int:
    config = load_config(args.config_file) if args.config_file else Config()
    logging.basicConfig(level=config["logging_level"],
                        format=f"%(asctime)s %(levelname)s worker[{args.port}] %(name)s: %(message)s", force=True)
    worker = Worker(args, config)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: worker.stop("SIGINT"))
    try:
        worker.start()
        # Everything loaded so far (modules, topology, executors) lives as long as the
        # process: keep it out of the collector's full passes, which would otherwise
        # walk it again and again while tuples churn.
        gc.collect()
        gc.freeze()
        worker.run()
    except Exception:
        log.error("worker failed:\n%s", traceback.format_exc())
        worker.close()
        return 1
    worker.close()
    return 0

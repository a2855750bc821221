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

from streamgale.cluster.package import entry_path
from streamgale.cluster.records import ACTIVE, START_ERRORS, WORKER_ERRORS, Assignment, ErrorRecord, slot_id
from streamgale.config import Config, load_config, topology_layer
from streamgale.ratelimit import ErrorThrottle, held_back
from streamgale.runtime import gcpolicy
from streamgale.runtime.acking import ACKER
from streamgale.runtime.assembly import build_executors, stream_index, wire_backpressure
from streamgale.runtime.executor import Executor, Sink, SpoutExecutor, StartFailed
from streamgale.runtime.loader import load_topology
from streamgale.runtime.loop import ExecutorLoop
from streamgale.runtime.metrics import task_counters
from streamgale.runtime.wakeup import Wakeup
from streamgale.security import Security
from streamgale.topology import Topology
from streamgale.wire import channel
from streamgale.wire.channel import WorkerArgs
from streamgale.wire.spec import CHECKPOINT

from .heartbeat import Heartbeat, send_once
from .transport import Inbound, Transport

log = logging.getLogger("streamgale.worker")

ERROR_REPORT_INTERVAL = 1.0  # at most one error logged and reported per component per second


def apply_log_levels(levels: dict[str, str], originals: dict[str, int]) -> None:
    """``streamgale set-log-level``: logger name ("" for the root logger) -> level.

    ``originals`` (the caller's, kept between calls) remembers each logger's level before its
    first change; a logger that leaves ``levels`` (its timeout passed, or it was reset) gets
    that level back."""
    for name in [n for n in originals if n not in levels]:
        original = originals.pop(name)
        logging.getLogger(name or None).setLevel(original)
        log.info("log level of %r reset to %s", name or "root", logging.getLevelName(original))
    for name, level in levels.items():
        logger = logging.getLogger(name or None)
        if logger.level != logging.getLevelName(level):
            originals.setdefault(name, logger.level)
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
                 clock: Callable[[], float] = time.monotonic, worker_id: int = 0, security: Security | None = None):
        self.args = args
        # From the node's config, never the topology's: a topology cannot turn its node's security off.
        self.security = security if security is not None else Security.off()
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
        self.topology: Topology | None = None
        self.endpoints: dict[int, str] = {}
        self.sinks: dict[int, Sink] = {}
        self.inbound: Inbound | None = None
        self.transport: Transport | None = None
        self.loop: ExecutorLoop | None = None
        self.heartbeat: Heartbeat | None = None
        self.process = psutil.Process()
        self.errors = ErrorThrottle(ERROR_REPORT_INTERVAL)
        self.model_versions: dict[str, int] = {}  # component -> the uploaded model version handed to its tasks
        self.losses_seen: int | None = None  # the topology's loss epoch at the last control (None: none yet)
        self.loss_due: int | None = None  # a loss to act on once the assignment has this version
        self.original_log_levels: dict[str, int] = {}  # logger -> its level before set-log-level changed it

    # -- set-up -------------------------------------------------------------------------------

    def start(self) -> None:
        a = self.args
        record, assignment, models = channel.read_launch(a.worker_dir)
        my_slot = assignment.slots.get(self.slot)
        if record.id != a.topology_id or my_slot is None:
            raise RuntimeError(f"the launch file does not give slot {self.slot} executors of {a.topology_id}")
        self.config = self.base_config.with_topology_config(self._topology_layer(record.config))
        acker = record.spec.components.get(ACKER)
        ackers = acker.tasks if acker is not None else 0
        loaded = load_topology(entry_path(a.code_dir, record.entry), self.config)  # inside the package only
        loaded.name = record.name  # as submitted (``--name``): what tasks see, and their state's namespace
        self.topology = topology = loaded.with_checkpointing(self.config).with_ackers(
            ackers, self.config["topology.message_timeout"])
        self.executor_groups = my_slot.executors
        self.endpoints = assignment.task_endpoints()

        task_component = {t: c for c, ts in topology.task_ids().items() for t in ts}
        self.inbound = Inbound({}, task_component, stream_index(topology))
        self.transport = transport = Transport(
            self.context, a.port, self.inbound, self.config["topology.batch_size"],
            self.config["topology.batch_linger"], scheme=a.scheme, host=a.host,
            bind_host=self.base_config["network.bind"] or a.host, security=self.security)
        executors = build_executors(
            topology, self.config, self.executor_groups,
            lambda t: transport.sink(t, self.endpoints[t]), self.on_error, sinks=self.sinks,
        )
        self.inbound.queues.update({r.task: r.queue.append for e in executors for r in e.runners})
        self.loop = ExecutorLoop(executors, self.config["topology.queue_size"], io=WorkerIO(self, transport))
        self._apply_models(models)  # before prepare: the tasks load these instead of the shipped files
        self.process.cpu_percent()  # the first call only starts the measurement
        self.heartbeat = Heartbeat(self.context, a.channel, str(a.port).encode(), self._beat, self._metrics,
                                   self.controls, self.loop, (a.host, a.port), clock=self.clock,
                                   security=self.security)
        self.heartbeat.start()
        self.loop.start()
        self.loop.set_active(record.status == ACTIVE)
        apply_log_levels(record.log_levels, self.original_log_levels)
        log.info("worker for %s on port %d runs %s", a.topology_id, a.port,
                 ", ".join(f"{c}{list(t)}" for c, t in self.executor_groups))

    @staticmethod
    def _topology_layer(stored: dict[str, Any]) -> dict[str, Any]:
        """The record's config without cluster settings: nimbus refuses them at submit, but a record
        stored by an older nimbus may hold some; the node's own config decides those."""
        layer, dropped = topology_layer(stored)
        if dropped:
            log.warning("ignoring cluster settings in the topology's stored config: %s (the node's "
                        "config decides them)", ", ".join(dropped))
        return layer

    # -- reports (heartbeat thread) -----------------------------------------------------------

    def _beat(self) -> channel.WorkerBeat:
        self.beats += 1
        return channel.WorkerBeat(self.args.topology_id, self.args.port, self.worker_id, self.beats,
                                  self.executor_groups, self.control_version,
                                  round(self.clock() - self.started_at, 1))

    def _metrics(self) -> dict[str, Any] | None:
        """The worker's metrics; None until its components are open and prepared, so a worker whose
        start fails is never counted as running."""
        if self.loop is None or not self.loop.started:
            return None
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
        if mine is None or not mine.executors:
            self.stop("this slot is no longer assigned")  # the supervisor stops us if we do not
            return
        assert self.loop is not None
        if _groups(mine.executors) != _groups(self.executor_groups):
            self._reshape(mine.executors, assignment, control.models)  # re-points too
        else:
            self._repoint(assignment)
        self.loop.set_active(control.status == ACTIVE)
        apply_log_levels(control.log_levels, self.original_log_levels)
        self._apply_models(control.models)
        self._on_losses(control.losses, control.loss_assignment, assignment.version)
        self.control_version = control.version

    def _on_losses(self, epoch: int, after: int, version: int) -> None:
        """A worker of this topology was lost since the last control: any tree in flight may have
        passed through it, so every spout task here fails its pending trees (they replay within
        a second, not after the message timeout; duplicates are allowed, loss is not) as soon as
        this worker runs with the assignment that no longer sends to the lost one (``after``),
        so the replays do not follow the trees to it. The first control only sets where this
        worker starts counting."""
        self.losses_seen, self.loss_due, act = loss_step(self.losses_seen, self.loss_due, epoch, after, version)
        if not act:
            return
        assert self.loop is not None and self.topology is not None
        failed = sum(s.fail_pending() for s in failed_early(self.loop.spouts, CHECKPOINT in self.topology.components))
        if failed:
            log.info("a worker of %s was lost: failed %d pending trees at once for their spouts to replay",
                     self.args.topology_id, failed)

    def _reshape(self, groups: tuple[tuple[str, tuple[int, ...]], ...], assignment: Assignment,
                 models: dict[str, dict[str, Any]]) -> None:
        """A rebalance changed this slot's executors: stop those that left, start the new ones,
        and keep every other executor running with its state, queues and connections. The
        tuples queued for a task that left are sent on to where it runs now; then the worker
        beats with its new executors (which is when nimbus resumes the spouts)."""
        assert self.loop is not None and self.inbound is not None and self.topology is not None
        wanted = _groups(groups)
        removed = [e for e in self.loop.executors if _key(e) not in wanted]
        have = {_key(e) for e in self.loop.executors}
        added_groups = [g for g in groups if (g[0], tuple(g[1])) not in have]
        for e in removed:
            for r in e.runners:
                self.inbound.queues.pop(r.task, None)
        colocated = frozenset(t for _, ts in groups for t in ts)
        added = build_executors(self.topology, self.config, added_groups, None, self.on_error,
                                sinks=self.sinks, colocated=colocated)
        self._hand_models(added, models)  # before prepare, as at start
        self.loop.reshape(removed, added)
        self.inbound.queues.update({r.task: r.queue.append for e in added for r in e.runners})
        wire_backpressure(self.topology, self.loop.executors)
        self.executor_groups = tuple((c, tuple(ts)) for c, ts in groups)
        self._repoint(assignment)
        forwarded = 0
        for r in (r for e in removed if not isinstance(e, SpoutExecutor) for r in e.runners):
            sink = self.sinks[r.task]  # its new place (a spout's queue holds ack results: they go with it)
            while r.queue:
                sink(r.queue.popleft())
                forwarded += 1
        log.info("executors changed: stopped %s, started %s (forwarded %d queued tuples); the others keep "
                 "running", ", ".join(f"{k[0]}{list(k[1])}" for k in map(_key, removed)) or "none",
                 ", ".join(f"{c}{list(t)}" for c, t in added_groups) or "none", forwarded)

    def _apply_models(self, models: dict[str, dict[str, Any]]) -> None:
        """Hand each local task of a model bolt the uploaded model version it should serve."""
        assert self.loop is not None
        changed = {c: m for c, m in models.items() if self.model_versions.get(c) != m["version"]}
        self._hand_models([e for e in self.loop.executors if e.component in changed], changed)
        for c, m in changed.items():
            self.model_versions[c] = m["version"]
            if any(e.component == c for e in self.loop.executors):
                log.info("%s serves model version %d from %s", c, m["version"], m["path"])

    def _repoint(self, assignment: Assignment) -> None:
        assert self.transport is not None and self.inbound is not None
        endpoints = assignment.task_endpoints()
        moved = [t for t, ep in endpoints.items() if self.endpoints.get(t) != ep and t in self.sinks
                 and t not in self.inbound.queues]
        self.endpoints = endpoints
        for t in moved:
            self.sinks[t] = self.transport.sink(t, endpoints[t])
        if moved:
            # What waited for a peer that no longer runs these tasks goes on to where they run now.
            left = self.transport.retarget({endpoints[t] for t in self.sinks if t not in self.inbound.queues})
            sent_on = self.transport.redeliver(left, self.sinks)
            log.info("re-pointed %d moved tasks%s", len(moved),
                     f"; sent on {sent_on} tuples that waited for their old place" if sent_on else "")

    def _hand_models(self, executors: list[Executor], models: dict[str, dict[str, Any]]) -> None:
        for e in executors:
            m = models.get(e.component)
            if m is None:
                continue
            for r in e.runners:
                update = getattr(r.instance, "model_updated", None)
                if update is not None:
                    update(m["path"], m["version"])

    def on_error(self, component: str, task: int, exc: BaseException, details: str) -> None:
        """A component's error: logged and reported, at most one per component per second (a
        process raising on every tuple must not flood the log), each saying how many were held back."""
        held = self.errors.admit(component, self.clock())
        if held is None:
            return
        more = held_back(component, held)
        log.error("component '%s' task %d raised %s: %s%s\n%s", component, task, type(exc).__name__, exc, more,
                  details)
        message = f"{type(exc).__name__}: {exc}{more}\n{details}"
        if self.heartbeat is not None:
            self.heartbeat.report(ErrorRecord(component, task, self.args.host, self.args.port, time.time(),
                                              message[:16000]))

    def failed(self, exc: BaseException) -> None:
        """The worker cannot go on: tell its supervisor why (a component that could not start:
        its traceback is already that component's error; anything else: the traceback)."""
        a = self.args
        if isinstance(exc, StartFailed):
            log.error("worker cannot start: %s", exc)
            record = ErrorRecord(START_ERRORS, exc.task, a.host, a.port, time.time(), str(exc)[:16000])
        else:
            trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            log.error("worker failed:\n%s", trace)
            record = ErrorRecord(WORKER_ERRORS, -1, a.host, a.port, time.time(), f"worker failed:\n{trace}"[:16000])
        if self.heartbeat is not None:
            self.heartbeat.report(record)  # sent before close() returns
        else:
            send_once(self.context, a.channel, str(a.port).encode(), channel.WorkerErrorReport(record.to_dict()),
                      self.security)

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


def loss_step(seen: int | None, due: int | None, epoch: int, after: int,
              version: int) -> tuple[int, int | None, bool]:
    """Pure: (epoch seen, assignment version a loss waits for, whether to fail the pending
    trees now) after a control with loss ``epoch``, its ``after`` version, and the worker's
    assignment ``version``. The first control (``seen`` None) only sets the epoch."""
    if seen is not None and epoch > seen:
        due = after if due is None else max(due, after)
    if due is None or version < due:
        return epoch, due, False
    return epoch, None, True


def failed_early(spouts: list[SpoutExecutor], checkpointed: bool) -> list[SpoutExecutor]:
    """Pure: the spouts whose pending trees fail at once on a loss. With checkpointed state only
    the checkpoint spout's: a user tree may hold effects that commit (its acks on the way, or
    in a prepared transaction that a retried COMMIT completes), and replaying it would apply
    them twice. The rollback that the failed checkpoint starts fails every held input itself."""
    return [s for s in spouts if s.component == CHECKPOINT] if checkpointed else list(spouts)


def _key(e: Executor) -> tuple[str, tuple[int, ...]]:
    return e.component, tuple(r.task for r in e.runners)


def _groups(groups: tuple[tuple[str, tuple[int, ...]], ...]) -> set[tuple[str, tuple[int, ...]]]:
    return {(str(c), tuple(int(t) for t in ts)) for c, ts in groups}


def main(args: WorkerArgs) -> int:
    config = load_config(args.config_file) if args.config_file else Config()
    logging.basicConfig(level=config["logging_level"],
                        format=f"%(asctime)s %(levelname)s worker[{args.port}] %(name)s: %(message)s", force=True)
    security = Security.from_config(config)
    worker = Worker(args, config, zmq.Context.instance(), security=security)
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
    except Exception as e:  # noqa: BLE001 - any failure ends the worker, reported to its supervisor
        worker.failed(e)
        worker.close()
        security.close()
        return 1
    worker.close()
    security.close()
    return 0

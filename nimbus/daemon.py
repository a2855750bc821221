"""The nimbus daemon: client API, topology lifecycle, scheduling.

Owns: the client API socket (one thread: the main loop), a ClusterState
session, and its place in the leader election. Any nimbus answers reads
(list, info, code downloads); only the leader changes state, and its
assignment writes are fenced by its election node, so a deposed leader cannot
overwrite them. Kill and rebalance are recorded as ``pending`` actions on the
topology record in ZooKeeper, so a restarted or standby nimbus resumes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from streamgale.cluster.election import Leadership
from streamgale.cluster.errors import FencedOut, StaleAssignment, TopologyExists
from streamgale.cluster.package import digest
from streamgale.cluster.records import (
    ACTIVE,
    INACTIVE,
    KILLED,
    REBALANCING,
    Assignment,
    ErrorRecord,
    RecordError,
    SupervisorInfo,
    TopologyRecord,
    slot_id,
)
from streamgale.cluster.state import ClusterState
from streamgale.config import MODEL_BOLT, Config, ConfigError
from streamgale.wire import protocol as p
from streamgale.wire.rpc import RpcServer
from streamgale.wire.spec import SpecError

from .liveness import SlotLiveness
from .metrics import MetricsStore
from .scheduler import schedule

log = logging.getLogger("streamgale.nimbus")

RECONCILE_INTERVAL = 1.0


class Nimbus:
    """The master daemon: ``start()``, ``run()`` (blocks until :meth:`stop`), ``close()``.

    Collaborators are passed in: ``state`` (not yet started; nimbus starts and
    closes it) and the ZeroMQ ``context``; ``clock`` is monotonic seconds.
    """

    def __init__(self, config: Config, host: str, port: int, state: ClusterState, context: zmq.Context,
                 bind_host: str = "0.0.0.0", clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.address = f"{host}:{port}"
        self.bind_host = bind_host
        self.port = port
        self.state = state
        self.context = context
        self.clock = clock
        self.server: RpcServer | None = None
        self._stop = threading.Event()
        self._dirty = threading.Event()
        self.leadership: Leadership | None = None
        self.liveness = SlotLiveness(config["nimbus.task_timeout"], config["nimbus.task_launch_timeout"])
        # topology id -> slot id -> the heartbeat sequence its supervisor forwarded last
        self.worker_beats: dict[str, dict[str, int]] = {}
        self.supervisors: dict[str, SupervisorInfo] = {}  # live supervisors, kept by a watch
        # When this nimbus last became the leader, and when it last reconciled (monotonic s).
        self.leader_since: float | None = None
        self.reconciled_at: float | None = None
        # topology id -> slot id -> the executors its worker's last forwarded beat runs (sorted)
        self.worker_executors: dict[str, dict[str, list[tuple[str, tuple[int, ...]]]]] = {}
        self._handlers: dict[type, Callable[[Any], Any]] = {
            p.Submit: self.submit, p.Kill: self.kill, p.Activate: self.activate,
            p.Deactivate: self.deactivate, p.Rebalance: self.rebalance,
            p.ListTopologies: self.list_topologies, p.TopologyInfo: self.topology_info,
            p.ClusterInfo: self.cluster_info, p.DownloadCode: self.download_code, p.Ping: self.ping,
            p.TopologyStats: self.topology_stats, p.SupervisorReport: self.supervisor_report,
            p.SetLogLevel: self.set_log_level, p.UpdateModel: self.update_model,
            p.DownloadModel: self.download_model,
        }
        self.metrics = MetricsStore()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.server = RpcServer(self.context, self.bind_host, self.port)
        self.state.start(timeout=30)
        self.state.register_nimbus(self.address)
        self.leadership = self.state.elect_leader(self.address, self._on_elected, self._on_deposed)
        self.state.watch_supervisors(self._on_supervisors)
        log.info("nimbus listening on %s", self.address)

    def _on_supervisors(self, supervisors: dict[str, SupervisorInfo]) -> None:
        # kazoo's event thread: keep the map (replaced whole, so the loop reads a consistent one)
        # and wake the loop; reconcile never re-reads every supervisor from ZooKeeper.
        self.supervisors = supervisors
        self._dirty.set()

    def _on_elected(self) -> None:
        log.info("nimbus %s is now the leader", self.address)
        self.leader_since = self.clock()
        self._dirty.set()

    def _on_deposed(self) -> None:
        log.warning("nimbus %s is no longer the leader", self.address)

    @property
    def is_leader(self) -> bool:
        return self.leadership is not None and self.leadership.is_leader

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        assert self.server is not None
        next_reconcile = 0.0
        while not self._stop.is_set():
            for identity, request in self.server.poll(0.1):
                self._serve(identity, request)
            now = self.clock()
            if self.is_leader and (self._dirty.is_set() or now >= next_reconcile):
                self._dirty.clear()
                next_reconcile = now + RECONCILE_INTERVAL
                try:
                    self.reconcile()
                except Exception:  # noqa: BLE001 - keep serving; retried next round
                    log.exception("reconcile failed")

    def close(self) -> None:
        if self.leadership is not None:
            self.leadership.cancel()
        self.state.close()
        if self.server is not None:
            self.server.close()

    # -- serving ------------------------------------------------------------------------------

    def _serve(self, identity: bytes, request: Any) -> None:
        req_id = getattr(request, "request_id", 0)
        handler = self._handlers.get(type(request))
        try:
            if handler is None:
                raise p.BadRequest(f"unsupported request {type(request).__name__}")
            result = handler(request)
            frame = p.encode_response(req_id, result)
        except p.NimbusError as e:
            frame = p.encode_exception(req_id, e)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the daemon
            log.exception("request %s failed", type(request).__name__)
            frame = p.encode_error(req_id, "Internal", f"internal error: {type(e).__name__}: {e}")
        assert self.server is not None
        self.server.reply(identity, frame)

    def _require_leader(self) -> None:
        if not self.is_leader:
            raise p.NotLeader(f"nimbus {self.address} is a standby", leader=self.state.leader_address())

    def _by_name(self, name: str) -> TopologyRecord:
        for rec in self.state.topologies().values():
            if rec.name == name:
                return rec
        raise p.NotFound(f"no topology named '{name}' is running (see `streamgale list`)")

    def _update(self, rec: TopologyRecord, fn: Callable[[TopologyRecord], TopologyRecord | None]) -> None:
        self.state.update_topology(rec.id, fn)
        self._dirty.set()

    # -- write operations (leader only) -------------------------------------------------------

    def submit(self, req: p.Submit) -> dict[str, Any]:
        self._require_leader()
        try:
            spec = req.spec.named(req.name).validate()  # the rules the client's builder applied too
            config = Config().merged(req.config, "topology config")
        except (SpecError, ConfigError) as e:
            raise p.InvalidTopology(str(e)) from None
        if digest(req.code) != req.code_digest:
            raise p.BadRequest("code package digest does not match its contents")
        for rec in self.state.topologies().values():
            if rec.name == req.name:
                raise p.AlreadyExists(f"a topology named '{req.name}' is already running "
                                                f"(id {rec.id}); kill it first or choose another --name")
        topology_id = f"{req.name}-{int(time.time())}"
        comps = spec.components
        rec = TopologyRecord(topology_id, req.name, ACTIVE, spec, dict(req.config), req.code_digest,
                             req.entry, config["topology.workers"], {n: c.parallelism for n, c in comps.items()},
                             time.time())
        self.state.put_code(topology_id, req.code)
        try:
            self.state.create_topology(rec)
        except TopologyExists:
            self.state.delete_code(topology_id)
            raise p.AlreadyExists(f"a topology named '{req.name}' is already running") from None
        log.info("submitted %s (%d components, %d workers)", topology_id, len(comps), rec.workers)
        self._dirty.set()
        return {"topology_id": topology_id}

    def _wait(self, rec: TopologyRecord, wait: float | None) -> float:
        if wait is None:
            return float(Config().merged(rec.config, "topology config")["topology.message_timeout"])
        if wait < 0:
            raise p.BadRequest(f"wait must be >= 0 seconds, got {wait}")
        return wait

    def kill(self, req: p.Kill) -> dict[str, Any]:
        self._require_leader()
        rec = self._by_name(req.name)
        at = time.time() + self._wait(rec, req.wait)
        self._update(rec, lambda r: r.with_(status=KILLED, pending={"action": "kill", "at": at}))
        log.info("killing %s in %.1f s", rec.id, max(0.0, at - time.time()))
        return {}

    def activate(self, req: p.Activate) -> dict[str, Any]:
        return self._set_status(req.name, ACTIVE)

    def deactivate(self, req: p.Deactivate) -> dict[str, Any]:
        return self._set_status(req.name, INACTIVE)

    def _set_status(self, name: str, status: str) -> dict[str, Any]:
        self._require_leader()
        rec = self._by_name(name)
        if rec.status == KILLED:
            raise p.BadRequest(f"topology '{name}' is being killed")

        def change(r: TopologyRecord) -> TopologyRecord:
            if r.status == REBALANCING and r.pending:  # applies when the rebalance finishes
                return r.with_(pending={**r.pending, "resume": status})
            return r.with_(status=status)

        self._update(rec, change)
        return {}

    def rebalance(self, req: p.Rebalance) -> dict[str, Any]:
        self._require_leader()
        rec = self._by_name(req.name)
        if rec.status in (KILLED, REBALANCING):
            raise p.BadRequest(f"topology '{req.name}' is {rec.status.lower()}")
        comps = rec.spec.components
        for comp, n in (req.parallelism or {}).items():
            if comp not in comps:
                raise p.BadRequest(f"no component '{comp}' in topology '{req.name}' "
                                             f"(components: {', '.join(sorted(comps))})")
            if not 1 <= n <= comps[comp].tasks:
                raise p.BadRequest(f"parallelism of '{comp}' must be between 1 and its task "
                                   f"count {comps[comp].tasks}, got {n}")
        if req.workers is not None and req.workers < 1:
            raise p.BadRequest(f"workers must be >= 1, got {req.workers}")
        at = time.time() + self._wait(rec, req.wait)
        pending = {"action": "rebalance", "at": at, "workers": req.workers,
                   "parallelism": dict(req.parallelism or {}), "resume": rec.status}
        self._update(rec, lambda r: r.with_(status=REBALANCING, pending=pending))
        return {}

    # -- reads (any nimbus) -------------------------------------------------------------------

    def ping(self, req: p.Ping) -> dict[str, Any]:
        return {"address": self.address, "leader": self.is_leader}

    def list_topologies(self, req: p.ListTopologies) -> list[dict[str, Any]]:
        assignments = self.state.assignments()
        out = []
        for rec in sorted(self.state.topologies().values(), key=lambda r: r.name):
            a = assignments.get(rec.id)
            executors = rec.executors()
            out.append({"name": rec.name, "id": rec.id, "status": rec.status,
                        "workers": len(a.slots) if a else 0, "executors": len(executors),
                        "tasks": sum(len(t) for _, t in executors),
                        "uptime": max(0.0, time.time() - rec.submitted_at)})
        return out

    def topology_info(self, req: p.TopologyInfo) -> dict[str, Any]:
        rec = self._by_name(req.name)
        a = self.state.assignment(rec.id)
        errors = self.state.errors(rec.id)
        return {"topology": rec.to_dict(), "assignment": a.to_dict() if a else None,
                "errors": {c: [e.to_dict() for e in es] for c, es in errors.items()}}

    def cluster_info(self, req: p.ClusterInfo) -> dict[str, Any]:
        assignments = self.state.assignments()
        used: dict[str, int] = {}
        for a in assignments.values():
            for s in a.slots.values():
                used[s.supervisor_id] = used.get(s.supervisor_id, 0) + 1
        sups = [{"id": s.id, "host": s.host, "slots": len(s.ports), "used": used.get(s.id, 0),
                 "ports": list(s.ports), "log_port": s.log_port, "cpu_count": s.cpu_count, "memory_mb": s.memory_mb,
                 "uptime": max(0.0, time.time() - s.started_at)}
                for s in sorted(self.state.supervisors().values(), key=lambda s: s.host + s.id)]
        return {"leader": self.state.leader_address(), "nimbuses": self.state.nimbuses(),
                "supervisors": sups, "topologies": len(self.state.topologies())}

    def supervisor_report(self, req: p.SupervisorReport) -> dict[str, Any]:
        """A supervisor's per-second report: its workers' heartbeats (liveness), metrics
        snapshots (kept by the leader, which answers stats) and errors (stored in ZooKeeper)."""
        self._require_leader()
        now = self.clock()
        try:
            for beat in req.heartbeats:
                slot = slot_id(req.supervisor_id, int(beat["port"]))
                self.worker_beats.setdefault(str(beat["topology_id"]), {})[slot] = int(beat["seq"])
                self.worker_executors.setdefault(str(beat["topology_id"]), {})[slot] = sorted(
                    (str(c), tuple(int(t) for t in ts)) for c, ts in beat.get("executors", []))
            for report in req.metrics:
                self.metrics.add(report, now)
            errors = [(str(e["topology_id"]), ErrorRecord.from_dict(e["record"])) for e in req.errors]
        except (KeyError, TypeError, ValueError, AttributeError, RecordError) as e:
            raise p.BadRequest(f"malformed report from supervisor {req.supervisor_id}: {e}") from None
        for topology_id, record in errors:
            self.state.report_error(topology_id, record)  # dropped there if the topology is gone
        return {}

    def set_log_level(self, req: p.SetLogLevel) -> dict[str, Any]:
        self._require_leader()
        rec = self._by_name(req.name)
        self._update(rec, lambda r: r.with_(log_levels={**r.log_levels, req.logger: req.level}))
        log.info("log level of %r in %s set to %s", req.logger or "root", rec.id, req.level)
        return {}

    def update_model(self, req: p.UpdateModel) -> dict[str, Any]:
        """Store a new model file for a model bolt and record its version: supervisors fetch it
        and the bolt's workers switch to it between batches."""
        self._require_leader()
        rec = self._by_name(req.name)
        comp = rec.spec.components.get(req.component)
        if comp is None or not comp.config.get(MODEL_BOLT):
            bolts = sorted(n for n, c in rec.spec.components.items() if c.config.get(MODEL_BOLT))
            raise p.NotFound(f"topology '{req.name}' has no model bolt named '{req.component}' "
                             f"(its model bolts: {', '.join(bolts) or 'none'})")
        if not req.model:
            raise p.BadRequest("the model file is empty")
        if digest(req.model) != req.digest:
            raise p.BadRequest("model file digest does not match its contents")
        self.state.put_model(rec.id, req.component, req.model)
        versions: list[int] = []

        def bump(r: TopologyRecord) -> TopologyRecord:
            versions.append(int(r.models.get(req.component, {}).get("version", 1)) + 1)
            return r.with_(models={**r.models, req.component: {"digest": req.digest, "version": versions[-1]}})

        self._update(rec, bump)
        log.info("model of %s in %s updated to version %d (sha256 %s)", req.component, rec.id, versions[-1],
                 req.digest[:12])
        return {"version": versions[-1]}

    def download_model(self, req: p.DownloadModel) -> dict[str, Any]:
        rec = self.state.topology(req.topology_id)
        model = None if rec is None else rec.models.get(req.component)
        if rec is None or model is None:
            raise p.NotFound(f"no model was uploaded to component '{req.component}' of '{req.topology_id}'")
        return {"model": self.state.get_model(req.topology_id, req.component), "digest": model["digest"]}

    def topology_stats(self, req: p.TopologyStats) -> dict[str, Any]:
        self._require_leader()
        rec = self._by_name(req.name)
        stats = self.metrics.stats(rec.id, self.clock())
        stats["topology"] = {"id": rec.id, "name": rec.name, "status": rec.status, "workers": rec.workers,
                             "uptime_s": round(time.time() - rec.submitted_at, 1)}
        return stats

    def download_code(self, req: p.DownloadCode) -> dict[str, Any]:
        rec = self.state.topology(req.topology_id)
        if rec is None:
            raise p.NotFound(f"no topology with id '{req.topology_id}'")
        return {"code": self.state.get_code(req.topology_id), "digest": rec.code_digest}

    # -- scheduling (leader only) -------------------------------------------------------------

    def reconcile(self) -> None:
        """Apply due kills and rebalances, then write the scheduler's assignments."""
        now = time.time()
        records = self.state.topologies()
        for rec in list(records.values()):
            if not rec.pending or rec.pending.get("at", 0) > now or rec.pending["action"] == "resume":
                continue
            if rec.pending["action"] == "kill":
                self._finish_kill(rec)
                del records[rec.id]
            elif rec.pending["action"] == "rebalance":
                records[rec.id] = self._finish_rebalance(rec)
        current = self.state.assignments()
        self.worker_beats = {tid: beats for tid, beats in self.worker_beats.items() if tid in current}
        self.worker_executors = {tid: e for tid, e in self.worker_executors.items() if tid in current}
        for slot in self.liveness.observe(current, self.worker_beats, self.clock()):
            log.warning("worker slot %s stopped heartbeating; moving its executors", slot)
        wanted = schedule(sorted(records.values(), key=lambda r: (r.submitted_at, r.id)),
                          self.liveness.usable(self.supervisors), current, time.time())
        waiting = self._awaiting_supervisors(current)
        for tid, assignment in wanted.items():
            if not assignment.same_placement(current.get(tid)):
                if tid in waiting:
                    log.info("%s keeps its placement: supervisors %s may still re-register",
                             tid, ", ".join(sorted(waiting[tid])))
                    continue
                try:
                    self.state.set_assignment(assignment, self.leadership)
                    log.info("assigned %s to %d workers", tid, len(assignment.slots))
                    log.debug("assignment of %s: %s", tid, assignment.to_dict())
                except (FencedOut, StaleAssignment) as e:
                    log.warning("assignment of %s not written: %s", tid, e)
        for tid in current:
            if tid not in records:
                self.state.delete_assignment(tid, self.leadership)
        for rec in records.values():
            if rec.pending and rec.pending["action"] == "resume":
                self._resume_when_placed(rec, wanted.get(rec.id), now)
        self.reconciled_at = self.clock()

    def _awaiting_supervisors(self, current: dict[str, Assignment]) -> dict[str, set[str]]:
        """Topology id -> the supervisors its assignment uses that are not registered, while
        this nimbus has led for less than ``zookeeper.session_timeout``. A new leader (after a
        failover, or its own expired session when ZooKeeper comes back) may see the cluster
        before every supervisor has re-registered; a supervisor whose session lives has that
        long to do so, so its workers are not moved (and restarted) in the meantime."""
        if self.leader_since is None or self.clock() - self.leader_since >= self.config["zookeeper.session_timeout"]:
            return {}
        out: dict[str, set[str]] = {}
        for tid, assignment in current.items():
            absent = {s.supervisor_id for s in assignment.slots.values()} - set(self.supervisors)
            if absent:
                out[tid] = absent
        return out

    def _resume_when_placed(self, rec: TopologyRecord, assignment: Assignment | None, now: float) -> None:
        """A rebalanced topology stays REBALANCING (spouts paused) until every slot of its new
        assignment beats with exactly its new executors, so no tuple is sent to a worker
        that is about to go; after ``nimbus.task_launch_timeout`` it resumes regardless."""
        beats = self.worker_executors.get(rec.id, {})
        placed = assignment is not None and all(
            beats.get(slot) == sorted(s.executors) for slot, s in assignment.slots.items())
        pending = rec.pending or {}
        if not placed and now < pending.get("at", 0):
            return
        if not placed:
            log.warning("resuming %s although its new placement is not running yet", rec.id)
        resume = pending.get("resume", ACTIVE)
        self.state.update_topology(rec.id, lambda r: r.with_(status=resume, pending=None)
                                   if r.pending and r.pending.get("action") == "resume" else None)
        log.info("rebalanced %s: its new placement runs; status %s", rec.id, resume)

    def _finish_kill(self, rec: TopologyRecord) -> None:
        try:
            self.state.delete_assignment(rec.id, self.leadership)
        except FencedOut:
            raise
        except Exception:  # noqa: BLE001 - no assignment is fine
            pass
        self.state.delete_topology(rec.id)
        self.metrics.forget(rec.id)
        log.info("killed %s", rec.id)

    def _finish_rebalance(self, rec: TopologyRecord) -> TopologyRecord:
        pending = rec.pending or {}

        # Still REBALANCING: the spouts resume once the new placement runs (_resume_when_placed).
        resume = {"action": "resume", "resume": pending.get("resume", ACTIVE),
                  "at": time.time() + self.config["nimbus.task_launch_timeout"]}

        def apply(r: TopologyRecord) -> TopologyRecord:
            return r.with_(pending=resume, workers=pending.get("workers") or r.workers,
                           parallelism={**r.parallelism, **pending.get("parallelism", {})})

        updated = self.state.update_topology(rec.id, apply)
        log.info("rebalancing %s: moving its executors", rec.id)
        return updated or apply(rec)

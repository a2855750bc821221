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
from collections.abc import Callable, Iterable
from typing import Any

import zmq

from streamgale.cluster.election import Leadership
from streamgale.cluster.errors import ClusterStateError, FencedOut, StaleAssignment, TopologyExists
from streamgale.cluster.package import PackageError, check_package, digest
from streamgale.cluster.records import (
    ACTIVE,
    INACTIVE,
    KILLED,
    REBALANCING,
    START_ERRORS,
    Assignment,
    ErrorRecord,
    RecordError,
    SupervisorInfo,
    TopologyRecord,
    slot_id,
)
from streamgale.cluster.state import ClusterState, CorruptTopology
from streamgale.config import MODEL_BOLT, Config, ConfigError, redact, topology_layer
from streamgale.health import LoopWatch
from streamgale.ratelimit import RateLimitedLog
from streamgale.security import Principal, Security, refusal
from streamgale.wire import protocol as p
from streamgale.wire.rpc import RpcServer
from streamgale.wire.spec import SpecError

from .liveness import SlotLiveness
from .log_levels import expired, with_level, without_expired, without_level
from .metrics import MalformedReport, MetricsStore
from .scheduler import schedule

log = logging.getLogger("streamgale.nimbus")

RECONCILE_INTERVAL = 1.0
CORRUPT = "CORRUPT"  # the listed status of a stored topology whose record cannot be read
FAILING_WINDOW = 60.0  # a topology whose worker could not start within this many seconds is listed as failing
MAX_WAIT = 24 * 3600.0  # longest wait of a kill or rebalance (seconds): a topology is never parked for longer


def failing_start(latest: ErrorRecord | None, now: float) -> str | None:
    """Why the topology's workers cannot start (a component's open or prepare raised within
    FAILING_WINDOW s of ``now``), or None."""
    if latest is None or now - latest.time > FAILING_WINDOW:
        return None
    return latest.message.split("\n", 1)[0]


class Nimbus:
    """The master daemon: ``start()``, ``run()`` (blocks until :meth:`stop`), ``close()``.

    Collaborators are passed in: ``state`` (not yet started; nimbus starts and
    closes it), the ZeroMQ ``context`` and ``security`` (off by default: every
    request is allowed); ``clock`` is monotonic seconds.
    """

    def __init__(self, config: Config, host: str, port: int, state: ClusterState, context: zmq.Context,
                 bind_host: str = "0.0.0.0", clock: Callable[[], float] = time.monotonic,
                 security: Security | None = None):
        self.config = config
        self.security = security if security is not None else Security.off()
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
            p.DownloadModel: self.download_model, p.TopologyConfig: self.topology_config,
        }
        self.metrics = MetricsStore()
        self.loop = LoopWatch(clock=clock)
        # supervisor id -> (its bad-input counters as last reported, when: monotonic s)
        self.supervisor_bad_input: dict[str, tuple[dict[str, int], float]] = {}
        self._bad_report = RateLimitedLog(log, clock=clock)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self.server = RpcServer(self.context, self.bind_host, self.port, security=self.security)
        self.state.start(timeout=30)
        locked = self.state.secure()
        if locked:
            log.info("locked %d znodes under %s with the cluster's ZooKeeper credentials", locked, self.state.root)
        self._sign_unsigned()
        self.state.register_nimbus(self.address)
        self.leadership = self.state.elect_leader(self.address, self._on_elected, self._on_deposed)
        self.state.watch_supervisors(self._on_supervisors)
        log.info("nimbus listening on %s", self.address)

    def _sign_unsigned(self) -> None:
        """Security just turned on for a running cluster: sign the packages submitted without it."""
        if not self.security.enabled:
            return
        for rec in self.state.topologies().values():
            if not rec.signature:
                signature = self.security.sign(rec.id, rec.code_digest)
                self.state.update_topology(rec.id, lambda r, s=signature: r.with_(signature=s))
                log.info("signed the code package of %s, submitted while security was off", rec.id)

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
            self.loop.tick()
            for identity, request, user in self.server.poll(0.1):
                self._serve(identity, request, self.security.principal(user))
            now = self.clock()
            if self.is_leader and (self._dirty.is_set() or now >= next_reconcile):
                self._dirty.clear()
                next_reconcile = now + RECONCILE_INTERVAL
                try:
                    self.reconcile()
                except Exception:  # noqa: BLE001 - keep serving; retried next round
                    log.exception("reconcile failed")

    def probe_alive(self) -> tuple[bool, str]:
        """For ``/healthz`` (any thread): the main loop turns."""
        return self.loop.check()

    def probe_ready(self) -> tuple[bool, str]:
        """For ``/readyz`` (any thread): connected to ZooKeeper, and the leader or a standby that knows it."""
        if self.leadership is None:
            return False, "starting"
        if not self.state.connected:
            return False, "not connected to ZooKeeper"
        if self.is_leader:
            return True, "leader"
        try:
            leader = self.state.leader_address()
        except ClusterStateError as e:
            return False, f"cannot read the election: {e}"
        return (True, f"standby; the leader is {leader}") if leader else (False, "no leader elected yet")

    def close(self) -> None:
        if self.leadership is not None:
            self.leadership.cancel()
        self.state.close()
        if self.server is not None:
            self.server.close()

    # -- serving ------------------------------------------------------------------------------

    def _serve(self, identity: bytes, request: Any, principal: Principal | None = None) -> None:
        req_id = getattr(request, "request_id", 0)
        handler = self._handlers.get(type(request))
        try:
            if handler is None:
                raise p.BadRequest(f"unsupported request {type(request).__name__}")
            self._authorize(principal, request)
            result = handler(request) if type(request) is not p.Submit else self.submit(request, principal)
            frame = p.encode_response(req_id, result)
        except p.NimbusError as e:
            frame = p.encode_exception(req_id, e)
        except Exception as e:  # noqa: BLE001 - a bug must not kill the daemon
            log.exception("request %s failed", type(request).__name__)
            frame = p.encode_error(req_id, "Internal", f"internal error: {type(e).__name__}: {e}")
        assert self.server is not None
        self.server.reply(identity, frame)

    def _authorize(self, principal: Principal | None, request: Any) -> None:
        """Raise PermissionDenied unless ``principal``'s role (or ownership) allows ``request``."""
        if principal is None:
            return
        name = getattr(request, "name", None) if type(request) is not p.Submit else None
        topology_id = getattr(request, "topology_id", None)
        rec = None
        if name is not None or topology_id is not None:
            rec = next((r for r in self.state.topologies().values()
                        if r.name == name or r.id == topology_id), None)
            if rec is None and not (type(request) is p.Kill and self._corrupt(name or "") is not None):
                return  # nothing to act on: the handler answers NotFound
            # A record that cannot be read (kill removes it) has no owners to check: admins only.
        why = refusal(principal, request.OP, rec.name if rec else name, rec.owners() if rec else ())
        if why is not None:
            log.warning("refused %s: %s", request.OP, why)
            raise p.PermissionDenied(why)

    def _require_leader(self) -> None:
        if not self.is_leader:
            raise p.NotLeader(f"nimbus {self.address} is a standby", leader=self.state.leader_address())

    def _by_name(self, name: str) -> TopologyRecord:
        for rec in self.state.topologies().values():
            if rec.name == name:
                return rec
        corrupt = self._corrupt(name)
        if corrupt is not None:
            raise p.NotFound(f"topology '{name}' (id {corrupt.id}) has a record that cannot be read "
                             f"({corrupt.error}); `streamgale kill {name}` removes it")
        raise p.NotFound(f"no topology named '{name}' is running (see `streamgale list`)")

    def _corrupt(self, name_or_id: str) -> CorruptTopology | None:
        """The stored record that does not decode whose id, or whose name in the names' index, is ``name_or_id``."""
        _, corrupt = self.state.topologies_and_corrupt()
        return next((c for c in corrupt.values() if name_or_id in (c.id, c.name)), None)

    def _update(self, rec: TopologyRecord, fn: Callable[[TopologyRecord], TopologyRecord | None]) -> None:
        self.state.update_topology(rec.id, fn)
        self._dirty.set()

    # -- write operations (leader only) -------------------------------------------------------

    def submit(self, req: p.Submit, principal: Principal | None = None) -> dict[str, Any]:
        self._require_leader()
        try:
            spec = req.spec.named(req.name).validate()  # the rules the client's builder applied too
            config = Config().with_topology_config(req.config)  # no cluster settings
            for name, comp in spec.components.items():
                Config().with_topology_config(comp.config, f"config of component '{name}'")
        except (SpecError, ConfigError) as e:
            raise p.InvalidTopology(str(e)) from None
        if digest(req.code) != req.code_digest:
            raise p.BadRequest("code package digest does not match its contents")
        try:
            check_package(req.code, req.entry)  # what every supervisor would refuse, refused once here
        except PackageError as e:
            raise p.InvalidTopology(f"code package of '{req.name}' refused: {e}") from None
        records, corrupt = self.state.topologies_and_corrupt()
        for rec in records.values():
            if rec.name == req.name:
                raise p.AlreadyExists(f"a topology named '{req.name}' is already running "
                                                f"(id {rec.id}); kill it first or choose another --name")
        for c in corrupt.values():
            if c.name == req.name:
                raise p.AlreadyExists(f"a topology named '{req.name}' is stored with a record that cannot be read "
                                      f"(id {c.id}, status CORRUPT); `streamgale kill {req.name}` removes it")
        topology_id = f"{req.name}-{int(time.time())}"
        comps = spec.components
        rec = TopologyRecord(topology_id, req.name, ACTIVE, spec, dict(req.config), req.code_digest,
                             req.entry, config["topology.workers"], {n: c.parallelism for n, c in comps.items()},
                             time.time(), owner=principal.name if principal is not None else "",
                             signature=self.security.sign(topology_id, req.code_digest))
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
        """The seconds a kill or rebalance waits: ``wait``, else the topology's message timeout
        (at most :data:`MAX_WAIT`)."""
        if wait is None:
            timeout = float(Config().merged(rec.config, "topology config")["topology.message_timeout"])
            return min(timeout, MAX_WAIT)
        if not 0 <= wait <= MAX_WAIT:
            raise p.BadRequest(f"wait must be between 0 and {MAX_WAIT:.0f} seconds ({MAX_WAIT / 3600:.0f} h), "
                               f"got {wait:g}")
        return wait

    def kill(self, req: p.Kill) -> dict[str, Any]:
        """Kill after the wait; a record that cannot be read (status CORRUPT, named by its name
        or its id) runs nothing to drain, so it is removed at once: ``{"removed": its id}``."""
        self._require_leader()
        try:
            rec = self._by_name(req.name)
        except p.NotFound:
            corrupt = self._corrupt(req.name)
            if corrupt is None:
                raise
            self._remove_corrupt(corrupt)
            return {"removed": corrupt.id}
        at = time.time() + self._wait(rec, req.wait)
        self._update(rec, lambda r: r.with_(status=KILLED, pending={"action": "kill", "at": at}))
        log.info("killing %s in %.1f s", rec.id, max(0.0, at - time.time()))
        return {}

    def activate(self, req: p.Activate) -> dict[str, Any]:
        return self._set_status(req.name, ACTIVE)

    def deactivate(self, req: p.Deactivate) -> dict[str, Any]:
        return self._set_status(req.name, INACTIVE)

    def _set_status(self, name: str, status: str) -> dict[str, Any]:
        """``{"status": status}``, applied now; for a REBALANCING topology it applies when the
        rebalance ends, and the reply says so: ``"after_rebalance": True`` and ``"applies_in"``,
        the seconds until then (at most that while its new placement starts)."""
        self._require_leader()
        rec = self._by_name(name)
        if rec.status == KILLED:
            raise p.BadRequest(f"topology '{name}' is being killed")
        deferred: list[dict[str, Any]] = []

        def change(r: TopologyRecord) -> TopologyRecord:
            deferred.clear()
            if r.status == REBALANCING and r.pending:  # applies when the rebalance finishes
                deferred.append(r.pending)
                return r.with_(pending={**r.pending, "resume": status})
            return r.with_(status=status)

        self._update(rec, change)
        if not deferred:
            return {"status": status}
        applies_in = max(0.0, float(deferred[0].get("at", 0.0)) - time.time())
        if deferred[0].get("action") == "rebalance":  # then its new placement starts
            applies_in += self.config["nimbus.task_launch_timeout"]
        return {"status": status, "after_rebalance": True, "applies_in": round(applies_in, 1)}

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
        """Every stored topology by name; one whose record cannot be read is listed as CORRUPT,
        under its name in the names' index (else its id), so it can be found and killed."""
        assignments = self.state.assignments()
        records, corrupt = self.state.topologies_and_corrupt()
        out = []
        for rec in records.values():
            a = assignments.get(rec.id)
            executors = rec.executors()
            out.append({"name": rec.name, "id": rec.id, "status": rec.status,
                        "workers": len(a.slots) if a else 0, "workers_requested": rec.workers,
                        "executors": len(executors), "tasks": sum(len(t) for _, t in executors),
                        "uptime": max(0.0, time.time() - rec.submitted_at),
                        "failing": failing_start(self.state.latest_error(rec.id, START_ERRORS), time.time())})
        for c in corrupt.values():
            out.append({"name": c.name or c.id, "id": c.id, "status": CORRUPT, "workers": 0,
                        "workers_requested": 0, "executors": 0, "tasks": 0, "uptime": 0.0, "failing": None})
        return sorted(out, key=lambda r: (r["name"], r["id"]))

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
                "supervisors": sups, "topologies": len(self.state.topologies()),
                "bad_input": self._bad_input(sups)}

    def _bad_input(self, supervisors: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """This nimbus's bad-input counters, then those each live supervisor last reported
        (``BadInput`` in :mod:`streamgale.wire.protocol`)."""
        server = self.server
        host = self.address.rpartition(":")[0]
        out: list[dict[str, Any]] = [{
            "daemon": "nimbus", "id": self.address, "host": host,
            "rejected_requests": server.rejected if server is not None else 0,
            "refused_handshakes": server.refused_handshakes if server is not None else 0,
            "denied_keys": self.security.denied}]
        now = self.clock()
        live = {s["id"]: s for s in supervisors}
        self.supervisor_bad_input = {k: v for k, v in self.supervisor_bad_input.items() if k in live}
        for sid, (counters, at) in sorted(self.supervisor_bad_input.items()):
            known = {k: counters.get(k, 0) for k in p.BAD_INPUT_COUNTERS}
            out.append({"daemon": "supervisor", "id": sid, "host": live[sid]["host"], **known,
                        "age_s": round(now - at, 1)})
        return out

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
                try:
                    self.metrics.add(report, now)
                except MalformedReport as e:  # one worker's snapshot: the beats and errors still count
                    self._bad_report.warning("dropped a malformed metrics report from supervisor %s: %s",
                                             req.supervisor_id, e)
            errors = [(str(e["topology_id"]), ErrorRecord.from_dict(e["record"])) for e in req.errors]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, RecordError) as e:
            raise p.BadRequest(f"malformed report from supervisor {req.supervisor_id}: {e}") from None
        if req.counters:
            self.supervisor_bad_input[req.supervisor_id] = (dict(req.counters), now)
        for topology_id, record in errors:
            self.state.report_error(topology_id, record)  # dropped there if the topology is gone
        return {}

    def set_log_level(self, req: p.SetLogLevel) -> dict[str, Any]:
        """Set (until ``timeout`` s from now, if given) or reset a logger's level in the topology's
        workers; the leader's reconcile drops a level whose timeout has passed."""
        self._require_leader()
        rec = self._by_name(req.name)
        shown = req.logger or "root"
        if req.reset:
            if req.level or req.timeout is not None:
                raise p.BadRequest("a reset takes no level and no timeout")
            if without_level(rec, req.logger) is None:
                raise p.BadRequest(f"no log level of {shown!r} is set in topology '{req.name}' (set: "
                                   f"{', '.join(sorted(k or 'root' for k in rec.log_levels)) or 'none'})")
            self._update(rec, lambda r: without_level(r, req.logger))
            log.info("log level of %r in %s reset", shown, rec.id)
            return {}
        if not req.level:
            raise p.BadRequest("set_log_level needs a level, or reset")
        if req.timeout is not None and req.timeout <= 0:
            raise p.BadRequest(f"timeout must be a number of seconds > 0, got {req.timeout:g}")
        now = time.time()
        self._update(rec, lambda r: with_level(r, req.logger, req.level, req.timeout, now))
        log.info("log level of %r in %s set to %s%s", shown, rec.id, req.level,
                 f" for {req.timeout:g} s" if req.timeout is not None else "")
        return {}

    def topology_config(self, req: p.TopologyConfig) -> dict[str, Any]:
        """What the topology's workers run with: this nimbus's config (the cluster's) under the
        topology's stored config, as a worker layers them; secret values redacted."""
        rec = self._by_name(req.name)
        layer, _ = topology_layer(rec.config)
        config = self.config.with_topology_config(layer, f"config of topology '{rec.name}'")
        return {"config": {k: redact(k, v) for k, v in sorted(config.to_dict().items())},
                "topology_keys": sorted(layer)}

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
        stats = self.metrics.stats(rec.id, self.clock(), rec.executors())
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
        self._expire_log_levels(records, now)
        for rec in list(records.values()):
            if not rec.pending or rec.pending.get("at", 0) > now or rec.pending["action"] == "resume":
                continue
            if rec.pending["action"] == "kill":
                self._finish_kill(rec)
                del records[rec.id]
            elif rec.pending["action"] == "rebalance":
                records[rec.id] = self._finish_rebalance(rec)
        current, unreadable = self.state.assignments_and_corrupt()
        self.worker_beats = {tid: beats for tid, beats in self.worker_beats.items() if tid in current}
        self.worker_executors = {tid: e for tid, e in self.worker_executors.items() if tid in current}
        silent = self.liveness.observe(current, self.worker_beats, self.clock())
        for slot in silent:
            log.warning("worker slot %s stopped heartbeating; moving its executors", slot)
        wanted = schedule(sorted(records.values(), key=lambda r: (r.submitted_at, r.id)),
                          self.liveness.usable(self.supervisors), current, time.time())
        waiting = self._awaiting_supervisors(current)
        written = set()
        for tid, assignment in wanted.items():
            if not assignment.same_placement(current.get(tid)):
                if tid in waiting:
                    log.info("%s keeps its placement: supervisors %s may still re-register",
                             tid, ", ".join(sorted(waiting[tid])))
                    continue
                try:
                    new = self.state.set_assignment(assignment, self.leadership)
                    written.add(tid)
                    self._report_losses(current.get(tid), new.version, silent)
                    log.info("assigned %s to %d workers", tid, len(assignment.slots))
                    log.debug("assignment of %s: %s", tid, assignment.to_dict())
                except (FencedOut, StaleAssignment) as e:
                    log.warning("assignment of %s not written: %s", tid, e)
        for tid in current:
            if tid not in records:
                self.state.delete_assignment(tid, self.leadership)
        for tid in sorted(unreadable):  # supervisors ignore an assignment they cannot read: repair it
            if tid in written:  # overwritten above (the scheduler saw no current one)
                log.warning("rewrote the assignment of %s, which could not be read", tid)
            elif tid not in wanted:  # no topology to place, or no slot for it
                self.state.delete_assignment(tid, self.leadership)
                log.warning("deleted the assignment of %s, which could not be read", tid)
        for rec in records.values():
            if rec.pending and rec.pending["action"] == "resume":
                self._resume_when_placed(rec, wanted.get(rec.id), now)
        self.reconciled_at = self.clock()

    def _expire_log_levels(self, records: dict[str, TopologyRecord], now: float) -> None:
        """Drop the log levels whose timeout has passed: supervisors then tell the workers, which
        put those loggers back to their own levels."""
        for rec in records.values():
            if without_expired(rec, now) is None:
                continue
            updated = self.state.update_topology(rec.id, lambda r: without_expired(r, now))
            if updated is not None:
                records[rec.id] = updated
            gone = expired(rec, now)
            if gone:
                log.info("log level of %s in %s expired", ", ".join(repr(k or "root") for k in gone), rec.id)

    def _report_losses(self, before: Assignment | None, version: int, silent: Iterable[str]) -> None:
        """Executors just moved (assignment ``version``) off slots that stopped heartbeating or off
        nodes whose supervisor is gone (killed, cut off, its machine lost): the trees their
        workers held are failed now by the spouts (a loss each), once they run with it."""
        if before is None:
            return
        silent = set(silent)
        for slot, s in sorted(before.slots.items()):
            if slot in silent:
                reason = "its worker stopped heartbeating"
            elif s.supervisor_id not in self.supervisors:
                reason = f"its node is gone (supervisor {s.supervisor_id} not registered)"
            else:
                continue
            self.state.report_loss(before.topology_id, slot, reason, time.time(), version)

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

    def _remove_corrupt(self, corrupt: CorruptTopology) -> None:
        try:
            self.state.delete_assignment(corrupt.id, self.leadership)
        except FencedOut:
            raise p.NotLeader(f"nimbus {self.address} is no longer the leader",
                              leader=self.state.leader_address()) from None
        self.state.delete_topology(corrupt.id)  # its name, code, models and errors too
        self.metrics.forget(corrupt.id)
        log.warning("removed %s, whose record could not be read (%s)", corrupt.id, corrupt.error)

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

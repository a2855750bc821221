"""The supervisor daemon: one per worker node.

Owns: this node's registration in ZooKeeper (through the ClusterState it is
given), its code packages on disk, its workers (through the launcher it is
given), the local channel to those workers, and its log endpoint. Each slot
(port) is driven by the pure state machine in
:mod:`streamgale.supervisor.slot`; this module only observes (assignments,
topologies, worker processes, heartbeats on the channel, code on disk) and
carries out the actions.

Threads: the main thread (:meth:`run`) owns the channel socket and steps the
slots ten times a second; ZooKeeper watch callbacks only store the latest
assignments and topologies; a report thread sends the workers' heartbeats,
metrics and errors to the nimbus leader every second; a log thread serves
``read_log``; download threads fetch code packages.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgpack
import psutil
import yaml
import zmq

from streamgale.cluster.errors import ClusterStateError
from streamgale.cluster.package import MARKER as CODE_MARKER
from streamgale.cluster.package import PackageError, unpack
from streamgale.cluster.records import (
    PACKAGE_ERRORS,
    WORKER_ERRORS,
    Assignment,
    ErrorRecord,
    Loss,
    SupervisorInfo,
    TopologyRecord,
    slot_id,
)
from streamgale.cluster.state import ClusterState
from streamgale.config import Config
from streamgale.health import LoopWatch
from streamgale.security import Security, refusal
from streamgale.wire import channel, protocol
from streamgale.wire.channel import WorkerArgs
from streamgale.wire.rpc import NimbusClient, NimbusError, RpcServer

from . import slot as slots
from .channel import SupervisorChannel
from .code_refusal import Refusal, refuse
from .environments import BuildError, Environments, environment_key
from .launcher import Launcher
from .slot import Desired, Heartbeat, Observed, SlotState, SlotTiming

log = logging.getLogger("streamgale.supervisor")

STEP_INTERVAL = 0.1
REPORT_INTERVAL = 1.0  # seconds between reports (heartbeats, metrics, errors) to nimbus
REPORT_TIMEOUT = 2.0  # a report not answered by then is retried with the next one
DOWNLOAD_TIMEOUT = 30.0  # code packages of up to 64 MiB
MAX_QUEUED_ERRORS = 200
ENVIRONMENT_GC_INTERVAL = 30.0  # seconds between two looks for environments no topology uses
PROCESS_FILE = "process"  # the supervisor's own record of the worker it launched on a slot


def supervisor_id(local_dir: Path) -> str:
    """A stable id for this node: created once, kept in the local dir."""
    path = local_dir / "supervisor-id"
    if path.exists():
        return path.read_text().strip()
    local_dir.mkdir(parents=True, exist_ok=True)
    sid = uuid.uuid4().hex[:12]
    path.write_text(sid + "\n")
    return sid


GONE = channel.WorkerControl(1, "KILLED", {}, None)  # a topology (or its assignment) that is gone


def control_for(record: TopologyRecord | None, assignment: Assignment | None,
                models: dict[str, dict[str, Any]] | None = None, loss: Loss | None = None) -> channel.WorkerControl:
    """What the workers of a topology must know (``models``: the uploaded model files this node
    holds, see :func:`local_models`; ``loss``: its latest :class:`Loss`); its version is a digest
    of its content (bit 1 set, so never GONE's 1 nor a fresh worker's 0)."""
    if record is None or assignment is None:
        return GONE
    body: dict[str, Any] = {"status": record.status, "log_levels": dict(record.log_levels),
            "assignment": {**assignment.to_dict(), "version": assignment.version}, "models": models or {},
            "losses": loss.epoch if loss else 0, "loss_assignment": loss.assignment if loss else 0}
    version = int.from_bytes(hashlib.sha256(msgpack.packb(body, use_bin_type=True)).digest()[:7], "big") | 2
    return channel.WorkerControl(version, body["status"], body["log_levels"], body["assignment"], body["models"],
                                 body["losses"], body["loss_assignment"])


def model_path(local_dir: Path, topology_id: str, component: str, digest: str) -> Path:
    """Where a supervisor keeps an uploaded model file: named by its digest, so a new version
    never overwrites the one a worker is reading."""
    return local_dir / "models" / topology_id / f"{quote(component, safe='')}-{digest}"


def local_models(local_dir: Path, record: TopologyRecord) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(the uploaded models of ``record`` already on this node, as a control's ``models``;
    the components whose file is still to be fetched)."""
    ready, missing = {}, []
    for component, m in sorted(record.models.items()):
        path = model_path(local_dir, record.id, component, m["digest"])
        if path.is_file():
            ready[component] = {"version": m["version"], "path": str(path)}
        else:
            missing.append(component)
    return ready, missing


class Outbox:
    """What the report thread sends next; filled by the main thread (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.beats: dict[int, dict[str, Any]] = {}
        self.metrics: dict[int, dict[str, Any]] = {}
        self.errors: deque[dict[str, Any]] = deque(maxlen=MAX_QUEUED_ERRORS)

    def beat(self, port: int, beat: dict[str, Any]) -> None:
        with self._lock:
            self.beats[port] = beat

    def forget(self, port: int) -> None:
        with self._lock:
            self.beats.pop(port, None)

    def metric(self, port: int, report: dict[str, Any]) -> None:
        with self._lock:
            self.metrics[port] = report

    def error(self, topology_id: str, record: dict[str, Any]) -> None:
        with self._lock:
            self.errors.append({"topology_id": topology_id, "record": record})

    def take(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
        with self._lock:
            beats, metrics, errors = list(self.beats.values()), list(self.metrics.values()), list(self.errors)
            self.metrics.clear()
            self.errors.clear()
        return beats, metrics, errors

    def put_back(self, errors: list[dict[str, Any]]) -> None:
        with self._lock:
            self.errors.extendleft(reversed(errors))


class Supervisor:
    """A node's daemon: ``start()``, ``run()`` (blocks until :meth:`stop`), ``close()``.

    Collaborators are passed in: ``state`` (not yet started; the supervisor
    starts and closes it), ``nimbus(timeout)`` makes a client for one thread,
    ``launcher`` starts and stops workers, ``context`` is the ZeroMQ context,
    ``security`` what the log endpoint and the worker channel require (off by default),
    ``environments`` where topologies' Python environments are built (default: under the local dir).
    """

    def __init__(self, config: Config, host: str, state: ClusterState, nimbus: Callable[[float], NimbusClient],
                 launcher: Launcher, context: zmq.Context, *, shutdown_workers: bool = False,
                 channel_url: str = "tcp://127.0.0.1:0", worker_scheme: str = "tcp", log_host: str = "0.0.0.0",
                 clock: Callable[[], float] = time.monotonic, security: Security | None = None,
                 environments: Environments | None = None):
        self.config = config
        self.security = security if security is not None else Security.off()
        self.host = host
        self.state = state
        self.nimbus = nimbus
        self.launcher = launcher
        self.context = context
        self.shutdown_workers = shutdown_workers
        self.channel_url = channel_url
        self.worker_scheme = worker_scheme
        self.log_host = log_host
        self.clock = clock
        self.local_dir = config.local_dir
        self.id = supervisor_id(self.local_dir)
        first = config["network.port"]
        self.ports = tuple(range(first, first + config["workers"]))
        self.timing = SlotTiming(start_timeout=config["supervisor.worker_start_timeout"],
                                 worker_timeout=config["supervisor.worker_timeout"])
        self.worker_config = self.local_dir / "worker-config.yaml"
        self.environments = environments if environments is not None else Environments(
            self.local_dir / "envs", timeout=config["supervisor.environment_build_timeout"])
        self._env_keys: dict[str, tuple[str, str | None]] = {}  # topology id -> (code digest, env key; under _lock)
        self._next_env_gc = 0.0
        self.slots: dict[int, SlotState] = {}
        self.beats: dict[int, tuple[channel.WorkerBeat, float]] = {}  # port -> latest beat, when received
        self.sent_control: dict[int, int] = {}  # port -> control version last sent
        self.outbox = Outbox()
        self.channel: SupervisorChannel | None = None
        self.log_server: RpcServer | None = None
        self._assignments: dict[str, Assignment] = {}
        self._topologies: dict[str, TopologyRecord] = {}
        self._losses: dict[str, Loss] = {}  # topology id -> its latest loss (under _lock)
        self._controls: dict[str, channel.WorkerControl] = {}  # topology id -> what its workers must know
        self._lock = threading.Lock()
        self._downloads: dict[str, threading.Thread] = {}
        self._refused: dict[str, Refusal] = {}  # topology id -> its code package's last refusal (under _lock)
        self._waiting_beats = 0  # sequence of the beats of slots held up by a refused package
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.loop = LoopWatch(clock=clock)
        self._nimbus_takes_counters = True  # False once a nimbus older than SupervisorReport.counters refused them

    # -- paths --------------------------------------------------------------------------------

    def code_dir(self, topology_id: str) -> Path:
        return self.local_dir / "code" / topology_id

    def worker_dir(self, port: int) -> Path:
        return self.local_dir / "workers" / str(port)

    def code_ready(self, desired: Desired) -> bool:
        """The topology's record, its code package and its uploaded model files are here."""
        with self._lock:
            record = self._topologies.get(desired.topology_id)
        if record is None:
            return False  # its record (entry, config) has not arrived yet
        if local_models(self.local_dir, record)[1]:
            return False
        if not self._code_here(desired.topology_id, desired.code_digest):
            return False
        key = self._env_key(desired.topology_id, desired.code_digest)
        return key is None or self.environments.ready(key)

    def _env_key(self, topology_id: str, digest: str) -> str | None:
        """The Python environment the unpacked code package ``digest`` needs (None: none of its
        own; see environments.py); hashed once per package."""
        with self._lock:
            known = self._env_keys.get(topology_id)
        if known is not None and known[0] == digest:
            return known[1]
        key = environment_key(self.code_dir(topology_id))
        with self._lock:
            self._env_keys[topology_id] = (digest, key)
        return key

    def _code_here(self, topology_id: str, digest: str) -> bool:
        try:
            return (self.code_dir(topology_id) / CODE_MARKER).read_text().strip() == digest
        except OSError:
            return False

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        for d in ("code", "workers"):
            (self.local_dir / d).mkdir(parents=True, exist_ok=True)
        self.worker_config.write_text(yaml.safe_dump(self.config.to_dict()))
        self.channel = SupervisorChannel(self.context, self.channel_url, self.local_dir, self.security)
        self.state.start(timeout=30)
        now = self.clock()
        for port in self.ports:
            self.slots[port] = self._adopt(port, now)
        self.state.watch_topologies(self._on_topologies)
        self.state.watch_assignments(self._on_assignments)
        self.state.watch_losses(self._on_losses)
        mem = psutil.virtual_memory().total // (1 << 20)
        # owned by the log thread from here on
        self.log_server = RpcServer(self.context, self.log_host, 0, security=self.security)
        info = SupervisorInfo(self.id, self.host, self.ports, psutil.cpu_count() or 1, mem, time.time(),
                              self.log_server.port)
        self.state.register_supervisor(info)
        for target, name in ((self._report_loop, "report"), (self._serve_logs, "log-server")):
            t = threading.Thread(target=target, name=f"{name}-{self.id}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("supervisor %s on %s with slots %s", self.id, self.host, list(self.ports))

    def _serve_logs(self) -> None:
        """Answer ``read_log`` requests (``streamgale logs``) for this node's worker logs."""
        server = self.log_server
        assert server is not None
        try:
            while not self._stop.is_set():
                for identity, request, user in server.poll(0.2):
                    req_id = getattr(request, "request_id", 0)
                    try:
                        if not isinstance(request, protocol.ReadLog):
                            raise protocol.BadRequest("a supervisor only answers read_log")
                        why = refusal(self.security.principal(user), request.OP)
                        if why is not None:
                            raise protocol.PermissionDenied(why)
                        frame = protocol.encode_response(req_id, self.read_log(request))
                    except protocol.NimbusError as e:
                        frame = protocol.encode_exception(req_id, e)
                    except (OSError, ValueError) as e:
                        frame = protocol.encode_exception(req_id, protocol.NotFound(str(e)))
                    server.reply(identity, frame)
        finally:
            server.close()

    def read_log(self, req: protocol.ReadLog) -> dict[str, Any]:
        if req.port not in self.ports:
            raise ValueError(f"port {req.port} is not a slot of supervisor {self.id} (slots: {list(self.ports)})")
        path = self.worker_dir(req.port) / "worker.log"
        size = path.stat().st_size
        count = max(0, min(req.max_bytes, 1 << 20))
        start = max(0, size - count) if req.offset < 0 else min(req.offset, size)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(count)
        return {"data": data, "offset": start + len(data), "size": size}

    def _report_loop(self) -> None:
        """Send heartbeats, metrics, errors and this node's bad-input counters to nimbus every
        second (its own thread and socket: a slow or absent nimbus never delays supervising)."""
        client = self.nimbus(REPORT_TIMEOUT)
        delivered: dict[str, int] = {}
        try:
            while not self._stop.wait(REPORT_INTERVAL):
                beats, metrics, errors = self.outbox.take()
                counters = self.bad_input() if self._nimbus_takes_counters else {}
                if not (beats or metrics or errors) and counters == delivered:
                    continue
                try:
                    self._send_report(client, beats, metrics, errors, counters)
                    delivered = counters
                except NimbusError as e:
                    self.outbox.put_back(errors)  # kept (bounded) until a leader takes them
                    log.debug("report not delivered: %s", e)
        finally:
            client.close()

    def _send_report(self, client: NimbusClient, beats: list[dict[str, Any]], metrics: list[dict[str, Any]],
                     errors: list[dict[str, Any]], counters: dict[str, int]) -> None:
        sent = counters if any(counters.values()) else {}  # all zero: not sent (SupervisorReport.args)
        try:
            client.report(self.id, beats, metrics, errors, sent)
        except protocol.BadRequest as e:
            if not sent or "'counters'" not in str(e):
                raise
            log.warning("nimbus does not take the bad-input counters of supervisors (%s); reporting without "
                        "them", e)
            self._nimbus_takes_counters = False
            client.report(self.id, beats, metrics, errors)

    def bad_input(self) -> dict[str, int]:
        """What this node refused since it started (:data:`protocol.BAD_INPUT_COUNTERS`): requests
        and handshakes on its log endpoint, keys its authenticator denied, malformed messages on the
        worker channel. Read from the report thread: plain ints, never torn."""
        server, worker_channel = self.log_server, self.channel
        return {"rejected_requests": server.rejected if server is not None else 0,
                "refused_handshakes": server.refused_handshakes if server is not None else 0,
                "denied_keys": self.security.denied,
                "malformed_messages": worker_channel.malformed if worker_channel is not None else 0}

    def _adopt(self, port: int, now: float) -> SlotState:
        """A worker this node launched before a restart is adopted if it still runs; it beats
        on the channel within a second, so it starts with a fresh heartbeat."""
        try:
            rec = msgpack.unpackb((self.worker_dir(port) / PROCESS_FILE).read_bytes(), raw=False)
            hb = Heartbeat(now, int(rec["pid"]), str(rec["topology_id"]),
                           tuple((str(c), tuple(int(t) for t in ts)) for c, ts in rec["executors"]))
        except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException):
            return SlotState.empty()
        state = slots.adopt(hb, self.launcher.alive(hb.pid), now, self.timing)
        if state.phase == slots.RUNNING:
            log.info("adopted running worker pid %d on port %d (%s)", hb.pid, port, hb.topology_id)
        return state

    def _on_assignments(self, assignments: dict[str, Assignment]) -> None:
        with self._lock:
            self._assignments = dict(assignments)
            self._update_controls()

    def _on_topologies(self, topologies: dict[str, TopologyRecord]) -> None:
        with self._lock:
            self._topologies = dict(topologies)
            self._refused = {tid: r for tid, r in self._refused.items() if tid in topologies}
            self._update_controls()

    def _on_losses(self, losses: dict[str, Loss]) -> None:
        with self._lock:
            self._losses = dict(losses)
            self._update_controls()

    def _update_controls(self) -> None:
        # Under _lock, on a watch change only: beats and steps then just look the control up.
        self._controls = {tid: control_for(rec, self._assignments.get(tid), local_models(self.local_dir, rec)[0],
                                           self._losses.get(tid))
                          for tid, rec in self._topologies.items()}

    # -- the channel --------------------------------------------------------------------------

    def _on_message(self, port: int, message: channel.Message, now: float) -> None:
        if port not in self.ports:
            log.warning("ignored a channel message naming port %d, not a slot of this node", port)
            self.channel.malformed += 1  # type: ignore[union-attr]
            return
        if isinstance(message, channel.WorkerBeat):
            self.beats[port] = (message, now)
            self.outbox.beat(port, {"topology_id": message.topology_id, "port": port, "pid": message.pid,
                                    "seq": message.seq, "uptime_s": message.uptime_s,
                                    "executors": [[c, list(ts)] for c, ts in message.executors]})
            control = self._control(message.topology_id)
            if message.control_version != control.version:
                self.channel.send(port, control)  # type: ignore[union-attr]
                self.sent_control[port] = control.version
        elif isinstance(message, channel.WorkerMetrics):
            self.outbox.metric(port, message.report)
        elif isinstance(message, channel.WorkerErrorReport):
            beat = self.beats.get(port)
            running = self.slots.get(port, SlotState.empty()).running
            tid = beat[0].topology_id if beat else (running.topology_id if running else "")
            if tid:
                self.outbox.error(tid, message.record)

    def _control(self, topology_id: str) -> channel.WorkerControl:
        with self._lock:
            return self._controls.get(topology_id, GONE)

    def _push_controls(self) -> None:
        """Tell running workers at once when their topology's status, log levels or assignment changed."""
        for port, (beat, _) in self.beats.items():
            control = self._control(beat.topology_id)
            if self.sent_control.get(port, beat.control_version) != control.version:
                self.channel.send(port, control)  # type: ignore[union-attr]
                self.sent_control[port] = control.version

    # -- observing ----------------------------------------------------------------------------

    def _desired(self) -> dict[int, Desired]:
        with self._lock:
            assignments = self._assignments
        out = {}
        for a in assignments.values():
            for port in self.ports:
                s = a.slots.get(slot_id(self.id, port))
                if s is not None:
                    out[port] = Desired(a.topology_id, a.code_digest, s.executors)
        return out

    def _heartbeat(self, port: int) -> Heartbeat | None:
        """The latest beat on ``port`` (the slot's step ignores one from another pid)."""
        got = self.beats.get(port)
        if got is None:
            return None
        beat, received = got
        return Heartbeat(received, beat.pid, beat.topology_id, beat.executors)

    # -- acting -------------------------------------------------------------------------------

    def step(self) -> None:
        now = self.clock()
        desired = self._desired()
        for port in self.ports:
            state = self.slots[port]
            want = desired.get(port)
            obs = Observed(want, want is not None and self.code_ready(want),
                           state.pid is not None and self.launcher.alive(state.pid),
                           self._heartbeat(port), now)
            state, actions = slots.step(state, obs, self.timing)
            for action in actions:
                state = self._act(port, state, action, now)
            self.slots[port] = state
            if state.pid is None:
                self.beats.pop(port, None)
                self.sent_control.pop(port, None)
                self._report_waiting(port, state)
        self._fetch_new_models()
        self._push_controls()
        self._clean_code(desired)

    def _act(self, port: int, state: SlotState, action: slots.Action, now: float) -> SlotState:
        match action:
            case slots.DownloadCode(topology_id=tid, code_digest=digest):
                self._download(tid, digest)
            case slots.Launch(desired=desired):
                pid = self._launch(port, desired)
                if pid is not None:
                    state = slots.launched(state, pid, now)
            case slots.Kill(pid=pid, force=force, reason=reason):
                log.info("stopping worker pid %d on port %d: %s", pid, port, reason)
                self.launcher.kill(pid, force)
            case slots.ReportCrash(topology_id=tid, reason=reason):
                with self._lock:
                    gone = tid not in self._topologies
                if gone:  # killed: it stopped by itself
                    log.info("worker on port %d for removed topology %s exited", port, tid)
                    return state
                log.warning("worker on port %d for %s died: %s", port, tid, reason)
                self.outbox.error(tid, ErrorRecord(WORKER_ERRORS, -1, self.host, port, time.time(),
                                                   f"worker died: {reason}").to_dict())
                self._report_loss(tid, port, reason)
        return state

    def _report_loss(self, topology_id: str, port: int, reason: str) -> None:
        """Tell every worker of the topology at once (through ZooKeeper, which every supervisor
        watches) that one of its workers is gone, so their spouts replay the trees it may have
        held now rather than after the message timeout."""
        with self._lock:
            assignment = self._assignments.get(topology_id)  # the slot is relaunched in place: this one
        try:
            self.state.report_loss(topology_id, slot_id(self.id, port), f"worker died: {reason}", time.time(),
                                   assignment.version if assignment is not None else 0)
        except ClusterStateError as e:  # ZooKeeper away: the message timeout still replays them
            log.warning("could not report the lost worker of %s on port %d: %s", topology_id, port, e)

    def _launch(self, port: int, desired: Desired) -> int | None:
        with self._lock:
            record = self._topologies.get(desired.topology_id)
            assignment = self._assignments.get(desired.topology_id)
        if record is None or assignment is None:
            return None  # gone meanwhile: the next step sees it
        wdir = self.worker_dir(port)
        wdir.mkdir(parents=True, exist_ok=True)
        channel.write_launch(wdir, record, assignment, local_models(self.local_dir, record)[0])
        assert self.channel is not None
        key = self._env_key(desired.topology_id, desired.code_digest)
        python = None if key is None else self.environments.python(key)
        args = WorkerArgs(desired.topology_id, port, self.id, self.host, self.code_dir(desired.topology_id), wdir,
                          self.worker_config, self.channel.url, self.worker_scheme, python)
        pid = self.launcher.launch(args, wdir / "worker.log")
        (wdir / PROCESS_FILE).write_bytes(msgpack.packb(
            {"pid": pid, "topology_id": desired.topology_id,
             "executors": [[c, list(t)] for c, t in desired.executors]}))
        self.beats.pop(port, None)
        self.sent_control.pop(port, None)
        log.info("launched worker pid %d on port %d for %s", pid, port, desired.topology_id)
        return pid

    def _report_waiting(self, port: int, state: SlotState) -> None:
        """A slot with no worker has no beat to report; unless its topology's code package was
        refused: then it beats for the slot (no executors, ``code_refused``: the reason), as the
        slot is not at fault and nimbus must not move the executors (to a slot that fails alike)."""
        running = state.running
        with self._lock:
            refusal = self._refused.get(running.topology_id) if running is not None else None
        if running is None or refusal is None or refusal.digest != running.code_digest:
            self.outbox.forget(port)
            return
        self._waiting_beats += 1
        self.outbox.beat(port, {"topology_id": running.topology_id, "port": port, "seq": self._waiting_beats,
                                "executors": [], "code_refused": refusal.reason})

    def _download(self, topology_id: str, digest: str) -> None:
        running = self._downloads.get(topology_id)
        if running is not None and running.is_alive():
            return
        with self._lock:
            refusal = self._refused.get(topology_id)
        if refusal is not None and refusal.blocks(digest, self.clock()):
            return  # refused before: asked again after the backoff (code_refusal.py)
        t = threading.Thread(target=self._fetch, args=(topology_id, digest), daemon=True,
                             name=f"download-{topology_id}")
        self._downloads[topology_id] = t
        t.start()

    def _fetch(self, topology_id: str, digest: str) -> None:
        """Runs on a download thread with its own client socket: the code package unless it is
        here, then the uploaded model files that are not."""
        with self._lock:
            record = self._topologies.get(topology_id)
        entry = record.entry if record is not None else None  # else the worker checks it (entry_path)
        try:
            with self.nimbus(DOWNLOAD_TIMEOUT) as client:
                if not self._code_here(topology_id, digest):
                    if not self._check_signature(topology_id, digest):
                        return  # its record has not arrived yet: asked again at a later step
                    data, _ = client.download_code(topology_id)
                    # writes the digest marker before it appears
                    unpack(data, self.code_dir(topology_id), digest, entry=entry)
                    log.info("downloaded code for %s (%d bytes)", topology_id, len(data))
                    with self._lock:
                        self._refused.pop(topology_id, None)
                self._fetch_models(client, topology_id)
            self._build_environment(topology_id, digest)
        except PackageError as e:
            self._refuse(topology_id, digest, str(e))
        except BuildError as e:
            self._refuse(topology_id, digest, f"its Python environment (requirements.txt) could not be built: {e}")
        except (NimbusError, OSError) as e:
            log.error("could not fetch code for %s: %s", topology_id, e)

    def _build_environment(self, topology_id: str, digest: str) -> None:
        """The package's own Python environment, unless it needs none or it is built; on the
        download thread (pip may take minutes). Raises BuildError with pip's error."""
        if not self._code_here(topology_id, digest):
            return
        key = self._env_key(topology_id, digest)
        if key is None or self.environments.ready(key):
            return
        log.info("building the Python environment %s of %s (requirements.txt)", key, topology_id)
        started = time.monotonic()
        self.environments.build(key, self.code_dir(topology_id))
        log.info("built the Python environment %s of %s in %.1f s", key, topology_id, time.monotonic() - started)
        with self._lock:
            self._refused.pop(topology_id, None)

    def _refuse(self, topology_id: str, digest: str, reason: str) -> None:
        """The code package is at fault: report it as an error of the topology (``info``,
        ``stats``, the UI) and fetch it again only after a backoff."""
        now = self.clock()
        with self._lock:
            record = self._topologies.get(topology_id)
            refusal = self._refused[topology_id] = refuse(self._refused.get(topology_id), digest, reason, now)
        delay = refusal.retry_at - now
        log.error("refused the code package of %s: %s; fetching it again in %.0f s", topology_id, reason, delay)
        if record is None:
            return  # killed meanwhile
        message = (f"code package of topology '{record.name}' ({topology_id}) refused by supervisor {self.id} on "
                   f"{self.host} (fetching it again in {delay:.0f} s): {reason}")
        self.outbox.error(topology_id, ErrorRecord(PACKAGE_ERRORS, -1, self.host, 0, time.time(),
                                                   message).to_dict())

    def _check_signature(self, topology_id: str, digest: str) -> bool:
        """Security on: unpack only a package whose record carries the cluster's signature of it.
        False: the record is not here yet; a bad signature raises PackageError."""
        if not self.security.enabled:
            return True
        with self._lock:
            record = self._topologies.get(topology_id)
        if record is None:
            return False
        signature = record.signature if record.code_digest == digest else ""
        if not self.security.verify(topology_id, digest, signature):
            raise PackageError(f"the code package of {topology_id} (digest {digest[:12]}) does not carry the "
                               "cluster's signature; it was not submitted through a nimbus of this cluster")
        return True

    def _fetch_models(self, client: NimbusClient, topology_id: str) -> None:
        with self._lock:
            record = self._topologies.get(topology_id)
        if record is None:
            return
        for component in local_models(self.local_dir, record)[1]:
            data, digest = client.download_model(topology_id, component)
            if hashlib.sha256(data).hexdigest() != digest or digest != record.models[component]["digest"]:
                log.warning("model file of %s in %s changed while it was fetched; fetching again later",
                            component, topology_id)
                continue
            path = model_path(self.local_dir, topology_id, component, digest)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
            tmp.write_bytes(data)
            tmp.replace(path)  # complete or absent, never half written
            log.info("downloaded model version %d of %s in %s (%d bytes)", record.models[component]["version"],
                     component, topology_id, len(data))
        with self._lock:
            self._update_controls()  # running workers are told at the next step

    def _fetch_new_models(self) -> None:
        """Start fetching model files uploaded to topologies whose workers run here."""
        running = {s.running.topology_id for s in self.slots.values() if s.running is not None}
        with self._lock:
            records = [self._topologies.get(tid) for tid in running]
        for rec in records:
            if rec is not None and rec.models and local_models(self.local_dir, rec)[1]:
                self._download(rec.id, rec.code_digest)

    def _clean_code(self, desired: dict[int, Desired]) -> None:
        wanted = {d.topology_id for d in desired.values()} | {
            s.running.topology_id for s in self.slots.values() if s.running is not None}
        active = {t for t, th in self._downloads.items() if th.is_alive()}
        for path in (self.local_dir / "code").iterdir():
            if path.name.startswith("."):
                continue  # a package being unpacked or replaced; package.unpack owns it
            if path.name not in wanted and path.is_dir() and path.name not in active:
                shutil.rmtree(path, ignore_errors=True)
        models = self.local_dir / "models"
        for path in models.iterdir() if models.is_dir() else ():
            if path.name not in wanted and path.name not in active:
                shutil.rmtree(path, ignore_errors=True)
        self._clean_environments(wanted)

    def _clean_environments(self, wanted: set[str]) -> None:
        """Every ENVIRONMENT_GC_INTERVAL: mark the environments of the topologies here as used, and
        remove those unused for supervisor.environment_keep."""
        now = self.clock()
        if now < self._next_env_gc:
            return
        self._next_env_gc = now + ENVIRONMENT_GC_INTERVAL
        with self._lock:
            self._env_keys = {t: k for t, k in self._env_keys.items() if t in wanted}
            in_use = {key for _, key in self._env_keys.values() if key is not None}
        self.environments.touch(in_use)
        for key in self.environments.collect(in_use, time.time(), self.config["supervisor.environment_keep"]):
            log.info("removed the Python environment %s: no topology here has used it for %.0f s",
                     key, self.config["supervisor.environment_keep"])

    # -- run / stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask :meth:`run` to return (any thread, or a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        assert self.channel is not None
        next_step = self.clock()
        while not self._stop.is_set():
            self.loop.tick()
            for port, message in self.channel.poll(max(0.0, min(STEP_INTERVAL, next_step - self.clock()))):
                self._on_message(port, message, self.clock())
            if self.clock() >= next_step:
                next_step = self.clock() + STEP_INTERVAL
                try:
                    self.step()
                except Exception:  # noqa: BLE001 - keep supervising
                    log.exception("supervisor step failed")

    def probe_alive(self) -> tuple[bool, str]:
        """For ``/healthz`` (any thread): the supervising loop turns."""
        return self.loop.check()

    def probe_ready(self) -> tuple[bool, str]:
        """For ``/readyz`` (any thread): registered, and connected to ZooKeeper."""
        if self.log_server is None:
            return False, "starting"
        if not self.state.connected:
            return False, "not connected to ZooKeeper (its registration goes with the session)"
        return True, f"registered as {self.id} with slots {list(self.ports)}"

    def close(self) -> None:
        self._stop.set()
        if self.shutdown_workers:
            self._stop_workers()
        for t in self._threads:
            t.join(timeout=2)
        for t in list(self._downloads.values()):
            t.join(timeout=5)  # a download ends within its client's timeout; the context may go next
        if self.channel is not None:
            self.channel.close()
        try:
            self.state.unregister_supervisor(self.id)
        except Exception:  # noqa: BLE001 - ZooKeeper gone: the ephemeral goes with the session
            pass
        self.state.close()

    def _stop_workers(self) -> None:
        pids = [s.pid for s in self.slots.values() if s.pid is not None and self.launcher.alive(s.pid)]
        for pid in pids:
            self.launcher.kill(pid, False)
        deadline = self.clock() + 5
        for pid in pids:
            while self.launcher.alive(pid) and self.clock() < deadline:
                time.sleep(0.05)
            if self.launcher.alive(pid):
                self.launcher.kill(pid, True)

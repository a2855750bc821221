"""The supervisor daemon: one per worker node.

Owns: this node's registration in ZooKeeper, its code packages on disk, and
its worker processes. Each slot (port) is driven by the pure state machine in
:mod:`streamgale.supervisor.slot`; this module only observes (assignments,
processes, heartbeat files, code on disk) and carries out the actions.

Watch callbacks (kazoo's thread) only store the latest assignments; the main
thread runs every slot's step function ten times a second.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import zmq
import yaml

from streamgale.wire import protocol
from streamgale.cluster.state import ClusterState
from streamgale.config import Config
from streamgale.cluster.package import MARKER as CODE_MARKER
from streamgale.cluster.package import PackageError, unpack
from streamgale.cluster.records import Assignment, ErrorRecord, SupervisorInfo, slot_id
from streamgale.wire.rpc import NimbusClient, NimbusError, RpcServer
from streamgale.worker.metrics import read_metrics

from . import slot as slots
from .slot import Desired, Heartbeat, Observed, SlotState, SlotTiming

log = logging.getLogger("streamgale.supervisor")

STEP_INTERVAL = 0.1
METRICS_PUSH_INTERVAL = 2.0  # seconds between metrics reports to nimbus


def supervisor_id(local_dir: Path) -> str:
    """A stable id for this node: created once, kept in the local dir."""
    path = local_dir / "supervisor-id"
    if path.exists():
        return path.read_text().strip()
    local_dir.mkdir(parents=True, exist_ok=True)
    sid = uuid.uuid4().hex[:12]
    path.write_text(sid + "\n")
    return sid


class Supervisor:
    def __init__(self, config: Config, host: str, nimbus: list[str], shutdown_workers: bool = False):
        self.config = config
        self.host = host
        self.nimbus_addresses = nimbus
        self.shutdown_workers = shutdown_workers
        self.local_dir = config.local_dir
        self.id = supervisor_id(self.local_dir)
        first = config["network.port"]
        self.ports = tuple(range(first, first + config["workers"]))
        self.timing = SlotTiming(start_timeout=config["supervisor.worker_start_timeout"],
                                 worker_timeout=config["supervisor.worker_timeout"])
        self.state = ClusterState(config["zookeeper.servers"], config["zookeeper.root"],
                                  config["zookeeper.session_timeout"])
        self.slots: dict[int, SlotState] = {}
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # pid -> process we launched
        self._assignments: dict[str, Assignment] = {}
        self._lock = threading.Lock()
        self._downloads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()

    # -- paths --------------------------------------------------------------------------------

    def code_dir(self, topology_id: str) -> Path:
        return self.local_dir / "code" / topology_id

    def worker_dir(self, port: int) -> Path:
        return self.local_dir / "workers" / str(port)

    def code_ready(self, desired: Desired) -> bool:
        marker = self.code_dir(desired.topology_id) / CODE_MARKER
        try:
            return marker.read_text().strip() == desired.code_digest
        except OSError:
            return False

    # -- start --------------------------------------------------------------------------------

    def start(self) -> None:
        for d in ("code", "workers"):
            (self.local_dir / d).mkdir(parents=True, exist_ok=True)
        self.worker_config = self.local_dir / "worker-config.yaml"
        self.worker_config.write_text(yaml.safe_dump(self.config.to_dict()))
        self.state.start(timeout=30)
        now = time.monotonic()
        for port in self.ports:
            self.slots[port] = self._adopt(port, now)
        self.state.watch_assignments(self._on_assignments)
        mem = psutil.virtual_memory().total // (1 << 20)
        self.log_server = RpcServer(zmq.Context.instance(), "0.0.0.0", 0)  # owned by the log thread from here on
        info = SupervisorInfo(self.id, self.host, self.ports, psutil.cpu_count() or 1, mem, time.time(),
                              self.log_server.port)
        self.state.register_supervisor(info)
        threading.Thread(target=self._push_metrics, name="metrics-push", daemon=True).start()
        threading.Thread(target=self._serve_logs, name="log-server", daemon=True).start()
        log.info("supervisor %s on %s with slots %s", self.id, self.host, list(self.ports))

    def _serve_logs(self) -> None:
        """Answer ``read_log`` requests (``streamgale logs``) for this node's worker logs."""
        server = self.log_server
        try:
            while not self._stop.is_set():
                for identity, request in server.poll(0.2):
                    req_id = getattr(request, "request_id", 0)
                    try:
                        if not isinstance(request, protocol.ReadLog):
                            raise protocol.BadRequest("a supervisor only answers read_log")
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

    def _push_metrics(self) -> None:
        """Forward the workers' metrics snapshots to nimbus every few seconds (its own
        thread: a slow or absent nimbus never delays supervising)."""
        client = NimbusClient(self.nimbus_addresses, timeout=5)
        try:
            while not self._stop.wait(METRICS_PUSH_INTERVAL):
                now = time.time()
                reports = []
                for port in self.ports:
                    report = read_metrics(self.worker_dir(port))
                    if report is not None and now - float(report.get("time", 0)) < 3 * METRICS_PUSH_INTERVAL:
                        reports.append(report)
                if not reports:
                    continue
                try:
                    client.push_metrics(self.id, reports)
                except NimbusError as e:
                    log.debug("metrics not delivered: %s", e)
        finally:
            client.close()

    def _adopt(self, port: int, now: float) -> SlotState:
        hb = self._heartbeat(port)
        if hb is None:
            return SlotState.empty()
        alive = self._alive(hb.pid)
        state = slots.adopt(hb, alive, now)
        if state.phase == "RUNNING":
            log.info("adopted running worker pid %d on port %d (%s)", hb.pid, port, hb.topology_id)
        return state

    def _on_assignments(self, assignments: dict[str, Assignment]) -> None:
        with self._lock:
            self._assignments = dict(assignments)

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
        from streamgale.worker.daemon import read_heartbeat

        data = read_heartbeat(self.worker_dir(port))
        if data is None:
            return None
        try:
            executors = tuple((str(c), tuple(int(t) for t in ts)) for c, ts in data["executors"])
            return Heartbeat(float(data["time"]), int(data["pid"]), str(data["topology_id"]), executors)
        except (KeyError, TypeError, ValueError):
            return None

    def _alive(self, pid: int | None) -> bool:
        if pid is None:
            return False
        child = self.children.get(pid)
        if child is not None:
            if child.poll() is None:
                return True
            del self.children[pid]
            return False
        try:
            p = psutil.Process(pid)
            return p.status() != psutil.STATUS_ZOMBIE and any("streamgale.worker" in a for a in p.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    # -- acting -------------------------------------------------------------------------------

    def step(self) -> None:
        now = time.monotonic()
        desired = self._desired()
        for port in self.ports:
            state = self.slots[port]
            want = desired.get(port)
            obs = Observed(want, want is not None and self.code_ready(want), self._alive(state.pid),
                           self._heartbeat(port), now)
            state, actions = slots.step(state, obs, self.timing)
            for action in actions:
                state = self._act(port, state, action, now)
            self.slots[port] = state
        self._clean_code(desired)

    def _act(self, port: int, state: SlotState, action: Any, now: float) -> SlotState:
        if isinstance(action, slots.DownloadCode):
            self._download(action.topology_id, action.code_digest)
        elif isinstance(action, slots.Launch):
            pid = self._launch(port, action.desired)
            state = slots.launched(state, pid, now)
        elif isinstance(action, slots.Kill):
            log.info("stopping worker pid %d on port %d: %s", action.pid, port, action.reason)
            try:
                os.kill(action.pid, signal.SIGKILL if action.force else signal.SIGTERM)
            except ProcessLookupError:
                pass
        elif isinstance(action, slots.ReportCrash):
            try:
                if self.state.topology(action.topology_id) is None:  # killed: it stopped by itself
                    log.info("worker on port %d for removed topology %s exited", port, action.topology_id)
                    return state
                log.warning("worker on port %d for %s died: %s", port, action.topology_id, action.reason)
                self.state.report_error(action.topology_id, ErrorRecord(
                    "__worker", -1, self.host, port, time.time(), f"worker died: {action.reason}"))
            except Exception as e:  # noqa: BLE001
                log.warning("could not record the crash: %s", e)
        return state

    def _launch(self, port: int, desired: Desired) -> int:
        wdir = self.worker_dir(port)
        wdir.mkdir(parents=True, exist_ok=True)
        (wdir / "heartbeat").unlink(missing_ok=True)
        logfile = open(wdir / "worker.log", "ab")
        cmd = [sys.executable, "-m", "streamgale.worker", "--topology-id", desired.topology_id,
               "--port", str(port), "--supervisor-id", self.id, "--host", self.host,
               "--code-dir", str(self.code_dir(desired.topology_id)), "--worker-dir", str(wdir),
               "--config", str(self.worker_config)]
        env = dict(os.environ)
        # Own session: a worker outlives a supervisor restart and is adopted.
        proc = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=self.code_dir(desired.topology_id), env=env)
        logfile.close()
        self.children[proc.pid] = proc
        log.info("launched worker pid %d on port %d for %s", proc.pid, port, desired.topology_id)
        return proc.pid

    def _download(self, topology_id: str, digest: str) -> None:
        running = self._downloads.get(topology_id)
        if running is not None and running.is_alive():
            return
        t = threading.Thread(target=self._fetch, args=(topology_id, digest), daemon=True,
                             name=f"download-{topology_id}")
        self._downloads[topology_id] = t
        t.start()

    def _fetch(self, topology_id: str, digest: str) -> None:
        """Runs on a download thread with its own client socket."""
        try:
            with NimbusClient(self.nimbus_addresses, timeout=30) as client:
                data, _ = client.download_code(topology_id)
            dest = self.code_dir(topology_id)
            unpack(data, dest, digest)  # writes the digest marker before it appears
            log.info("downloaded code for %s (%d bytes)", topology_id, len(data))
        except (NimbusError, PackageError, OSError) as e:
            log.error("could not fetch code for %s: %s", topology_id, e)

    def _clean_code(self, desired: dict[int, Desired]) -> None:
        wanted = {d.topology_id for d in desired.values()} | {
            s.running.topology_id for s in self.slots.values() if s.running is not None}
        code_root = self.local_dir / "code"
        for path in code_root.iterdir():
            if path.name.startswith("."):
                continue  # a package being unpacked or replaced; package.unpack owns it
            if path.name not in wanted and path.is_dir() and path.name not in self._downloads_active():
                shutil.rmtree(path, ignore_errors=True)

    def _downloads_active(self) -> set[str]:
        return {t for t, th in self._downloads.items() if th.is_alive()}

    # -- run / stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.wait(STEP_INTERVAL):
            try:
                self.step()
            except Exception:  # noqa: BLE001 - keep supervising
                log.exception("supervisor step failed")

    def close(self) -> None:
        if self.shutdown_workers:
            for state in self.slots.values():
                if state.pid is not None and self._alive(state.pid):
                    os.kill(state.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            for state in self.slots.values():
                while state.pid is not None and self._alive(state.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if state.pid is not None and self._alive(state.pid):
                    os.kill(state.pid, signal.SIGKILL)
        try:
            self.state.unregister_supervisor(self.id)
        except Exception:  # noqa: BLE001
            pass
        self.state.close()

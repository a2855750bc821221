"""Nimbus at scale: a real nimbus and ZooKeeper with 1,000 simulated supervisors.

Run alone: ``python -m benchmarks.scale [--supervisors 1000 --slots 10 --executors 1000]``
(about 30 s on a quiet machine; ``--supervisors 50`` for a quick check). Prints a table and
writes every figure to ``--json`` (default benchmarks/results/scale.json).

What runs: ZooKeeper (``streamgale.dev.zookeeper_server``) and the real nimbus,
started through the CLI (``streamgale.dev.cluster.ProcessCluster`` with no
supervisor daemons). The supervisors are simulated in this process: each is an
ephemeral znode ``<root>/supervisors/<id>`` holding its ``SupervisorInfo``,
created through raw kazoo sessions, and a share of a few reporter threads that
send nimbus, every second, the ``supervisor_report`` RPC a real supervisor
sends, with a heartbeat (``seq`` + 1 each second) for every slot the
assignment gives that supervisor. No worker is ever started; only what nimbus
and ZooKeeper do is measured:

1. schedule: a topology of ``--executors`` executors (``topologies/scale.py``,
   no ackers) on ``--workers`` workers (default one per executor, as many as
   the slots and ``topology.workers`` allow) is submitted over RPC; the time
   from the submit call returning to the assignment znode being written (its
   ``mtime``, ZooKeeper's clock on this same machine);
2. lost node: one supervisor's ZooKeeper session is closed (its ephemeral znode
   vanishes, its reports stop); the time until an assignment without it, with
   its executors on other supervisors, is written;
3. ZooKeeper requests per second at steady state (every supervisor registered,
   the topology assigned, heartbeats flowing for ``--warmup`` s), over
   ``--window`` s: the server's own packet counters (``srvr``: Received/Sent),
   split per connection with ``cons`` (nimbus, the simulated supervisors'
   sessions, this benchmark's watcher);
4. nimbus CPU (percent of one core) and resident memory over the same window
   (psutil on the nimbus process).

Sessions: 1,000 kazoo clients in one Python process are too heavy (each has
its own threads; on a 2-core machine their pings starve and the sessions
expire), and ZooKeeper admits 60 connections per client address by default.
So the supervisors share ``--sessions`` sessions (default 50): the one that is
lost has a session of its own, the others are spread over the rest. Since a
real cluster has one session per supervisor, the table also shows the pings
those sessions would add (the measured per-session rate times the supervisors).

Afterwards the scheduler function (``streamgale.nimbus.scheduler.schedule``) is
timed alone in this process on the same inputs, to tell its share of (1) and
(2) from nimbus's ZooKeeper reads and writes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import re
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import zmq
from kazoo.client import KazooClient
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from streamgale.client import prepare
from streamgale.cluster.records import Assignment, SupervisorInfo, TopologyRecord
from streamgale.config import Config
from streamgale.dev.cluster import ProcessCluster
from streamgale.dev.zookeeper_server import four_letter
from streamgale.wire.protocol import SupervisorReport, decode_response
from streamgale.wire.rpc import NimbusClient

TOPOLOGY = Path(__file__).resolve().parent / "topologies" / "scale.py"
ROOT = "/streamgale-scale"
SLOT_BASE = 6700
SESSION_TIMEOUT = 6.0  # zookeeper.session_timeout's default, what a real supervisor's session uses
MAX_SESSIONS = 55  # ZooKeeper's maxClientCnxns (60 per address), less nimbus, the watcher and 4lw probes
MAX_TOPOLOGY_WORKERS = 1024  # topology.workers' upper bound
REPORT_INTERVAL = 1.0  # as supervisor/daemon.py: one report a second ...
REPORT_TIMEOUT = 2.0  # ... given up when not answered within 2 s

log = logging.getLogger("benchmarks.scale")


def _zk_client(address: str) -> KazooClient:
    return KazooClient(hosts=address, timeout=SESSION_TIMEOUT,
                       connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0})


def _close_client(zk: KazooClient) -> None:
    try:
        zk.stop()
    finally:
        zk.close()


# -- watching assignments ---------------------------------------------------------------------


@dataclass
class Seen:
    """One version of an assignment as this benchmark's watcher saw it."""

    seen_at: float  # time.time() in the watcher's callback
    written_at: float  # the znode's mtime (ZooKeeper's clock, this machine's)
    assignment: Assignment


class AssignmentWatcher:
    """Every version of every ``<root>/assignments/*`` znode, timestamped; and who runs what now."""

    def __init__(self, zk: KazooClient, root: str):
        self._zk = zk
        self._folder = f"{root}/assignments"
        self._cond = threading.Condition()
        self.history: list[Seen] = []
        self.current: dict[str, Assignment] = {}
        # supervisor id -> ((topology id, port), ...) of its slots that run executors
        self.by_supervisor: dict[str, tuple[tuple[str, int], ...]] = {}
        self._watched: set[str] = set()
        zk.ensure_path(self._folder)
        ChildrenWatch(zk, self._folder, self._on_children)

    def _on_children(self, children: list[str]) -> None:
        for name in children:
            if name not in self._watched:
                self._watched.add(name)
                DataWatch(self._zk, f"{self._folder}/{name}", self._data_callback(name))

    def _data_callback(self, topology_id: str) -> Callable[..., bool | None]:
        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            now = time.time()
            with self._cond:
                if stat is None:
                    self.current.pop(topology_id, None)
                    self._watched.discard(topology_id)
                else:
                    a = Assignment.decode(data or b"", stat.version)
                    self.current[topology_id] = a
                    self.history.append(Seen(now, stat.mtime / 1000.0, a))
                slots: dict[str, list[tuple[str, int]]] = {}
                for tid, a in self.current.items():
                    for s in a.slots.values():
                        if s.executors:
                            slots.setdefault(s.supervisor_id, []).append((tid, s.port))
                self.by_supervisor = {sid: tuple(v) for sid, v in slots.items()}
                self._cond.notify_all()
            return False if stat is None else None

        return on_data

    def versions(self) -> int:
        with self._cond:
            return len(self.history)

    def wait_for(self, predicate: Callable[[Assignment], bool], since: int, timeout: float, what: str,
                 alive: Callable[[], None]) -> Seen:
        """The first version from ``history[since:]`` that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for seen in self.history[since:]:
                    if predicate(seen.assignment):
                        return seen
                since = len(self.history)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
                self._cond.wait(min(remaining, 0.5))
                alive()


# -- simulated supervisors --------------------------------------------------------------------


def supervisor_ids(n: int) -> list[str]:
    return [f"sim-{i:04d}" for i in range(n)]


def supervisor_info(i: int, sid: str, ports: tuple[int, ...], started_at: float = 0.0) -> SupervisorInfo:
    return SupervisorInfo(sid, f"10.{i // 250}.{i % 250}.1", ports, cpu_count=8, memory_mb=16384,
                          started_at=started_at)


class Supervisors:
    """``n`` supervisor registrations over ``sessions`` shared ZooKeeper sessions.

    ``victim`` (the lowest id, which the even scheduler always gives a slot) has
    a session of its own, so closing it loses exactly that supervisor.
    """

    def __init__(self, zk_address: str, root: str, n: int, slots: int, sessions: int):
        self.ids = supervisor_ids(n)
        self.victim = self.ids[0]
        self.ports = tuple(range(SLOT_BASE, SLOT_BASE + slots))
        self.root = root
        self.clients: list[KazooClient] = []
        self.session_of: dict[str, int] = {self.victim: 0}
        others = max(1, sessions - 1)
        for i, sid in enumerate(self.ids[1:]):
            self.session_of[sid] = 1 + i % others
        self._address = zk_address
        self._count = 1 + (others if n > 1 else 0)

    def connect(self) -> None:
        for _ in range(self._count):
            zk = _zk_client(self._address)
            self.clients.append(zk)  # closed by close() even if start fails
            zk.start(timeout=30)

    def register(self) -> None:
        self.clients[0].ensure_path(f"{self.root}/supervisors")
        now = time.time()
        pending = []
        for i, sid in enumerate(self.ids):
            info = supervisor_info(i, sid, self.ports, now)
            zk = self.clients[self.session_of[sid]]
            pending.append(zk.create_async(f"{self.root}/supervisors/{sid}", info.encode(), ephemeral=True))
        for result in pending:
            result.get(timeout=60)

    def session_ids(self) -> dict[int, str]:
        """ZooKeeper session id -> what it holds."""
        out = {}
        for i, zk in enumerate(self.clients):
            held = sum(1 for s in self.session_of.values() if s == i)
            out[zk.client_id[0]] = f"simulated supervisors' session {i} ({held} supervisors)"
        return out

    def lose_victim(self) -> float:
        """Close the victim's session (as a crashed node's session ends); returns when it began."""
        at = time.time()
        self.clients[0].stop()
        return at

    def close(self) -> None:
        for zk in self.clients:
            try:
                _close_client(zk)
            except Exception:  # noqa: BLE001 - clean up the rest
                log.debug("closing a kazoo client failed", exc_info=True)
        self.clients = []


@dataclass
class ReporterStats:
    sent: int = 0  # reports sent
    answered: int = 0  # replies received
    failures: int = 0  # error replies
    gave_up: int = 0  # reports unanswered after REPORT_TIMEOUT (a real supervisor sends its next one then)
    rtts: list[float] = field(default_factory=list)  # seconds, per answered report


class Reporters:
    """``threads`` threads sending the supervisors' reports to nimbus, as that many supervisors would.

    Each live supervisor with slots that run executors sends one report a
    second, with a heartbeat per such slot (``seq`` + 1 each time), and has at
    most one unanswered: like a real supervisor's client it gives up on a
    report after ``REPORT_TIMEOUT`` and sends the next. A thread's share of the
    supervisors is pipelined over one DEALER socket (the protocol's own request
    encoding, replies matched by request id), so, as with real supervisors,
    every supervisor can have a report in flight at once; a blocking client per
    thread would cap that at the number of threads.
    """

    def __init__(self, nimbus: str, watcher: AssignmentWatcher, ids: list[str], threads: int):
        self._endpoint = f"tcp://{nimbus}"
        self._watcher = watcher
        self._shares = [ids[i::threads] for i in range(threads)]
        self.alive = set(ids)
        self._stop = threading.Event()
        self._seq: dict[tuple[str, str, int], int] = {}  # (supervisor, topology, port) -> seq
        self._first: dict[tuple[str, str, int], float] = {}
        self._lock = threading.Lock()
        self.stats = [ReporterStats() for _ in self._shares]
        self._recording = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"reporter-{i}", daemon=True)
                         for i in range(threads)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def record(self, on: bool) -> None:
        """Count and time reports only while on (the steady-state window)."""
        if on:
            for i in range(len(self.stats)):
                self.stats[i] = ReporterStats()
            self._recording.set()
        else:
            self._recording.clear()

    def _beats(self, sid: str, now: float) -> list[dict[str, Any]]:
        beats = []
        for tid, port in self._watcher.by_supervisor.get(sid, ()):
            key = (sid, tid, port)
            with self._lock:
                seq = self._seq[key] = self._seq.get(key, 0) + 1
                first = self._first.setdefault(key, now)
            beats.append({"topology_id": tid, "port": port, "pid": 100000 + port, "seq": seq,
                          "uptime_s": round(now - first, 1)})
        return beats

    def _run(self, index: int) -> None:
        share = self._shares[index]
        ids = itertools.count(1)
        start = time.monotonic()
        # spread over the second, as independent supervisors' reports are
        next_at = {sid: start + j * REPORT_INTERVAL / max(1, len(share)) for j, sid in enumerate(share)}
        waiting: dict[str, tuple[int, float]] = {}  # supervisor -> (request id, sent at) of its open report
        sent: dict[int, tuple[str, float]] = {}  # request id -> (supervisor, sent at), given-up ones too
        sock: zmq.Socket = zmq.Context.instance().socket(zmq.DEALER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._endpoint)
            while not self._stop.is_set():
                recording = self._recording.is_set()
                stats = self.stats[index]
                now = time.monotonic()
                for sid in share:
                    if sid not in self.alive or now < next_at[sid]:
                        continue  # a lost node reports no more
                    open_ = waiting.get(sid)
                    if open_ is not None:
                        if now - open_[1] < REPORT_TIMEOUT:
                            continue
                        del waiting[sid]
                        if recording:
                            stats.gave_up += 1
                    next_at[sid] = now + REPORT_INTERVAL
                    beats = self._beats(sid, time.time())
                    if not beats:
                        continue  # a real supervisor sends nothing when it has nothing to report
                    rid = next(ids)
                    sock.send(SupervisorReport(sid, beats, [], []).encode(rid))
                    waiting[sid] = (rid, now)
                    sent[rid] = (sid, now)
                    if recording:
                        stats.sent += 1
                if sock.poll(20):
                    while True:
                        try:
                            frame = sock.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        rid, ok, _ = decode_response(frame)
                        entry = sent.pop(rid, None)
                        if entry is None:
                            continue
                        sid, at = entry
                        if waiting.get(sid, (None,))[0] == rid:
                            del waiting[sid]
                        if self._recording.is_set():
                            stats = self.stats[index]
                            stats.answered += 1
                            stats.rtts.append(time.monotonic() - at)
                            if not ok:
                                stats.failures += 1
                if len(sent) > 10 * len(share):  # replies that will never come
                    cutoff = time.monotonic() - 60
                    sent = {r: e for r, e in sent.items() if e[1] > cutoff}
        finally:
            sock.close(linger=0)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)


# -- ZooKeeper's counters ---------------------------------------------------------------------

_CONS = re.compile(r"^\s*/([^:\[]+):(\d+)\[\d+\]\((.*)\)\s*$")


def srvr(zk_host: str, zk_port: int) -> dict[str, int]:
    """``srvr``'s Received and Sent packet counts."""
    out = {}
    for line in four_letter(zk_host, zk_port, "srvr", timeout=5).splitlines():
        key, _, value = line.partition(":")
        if key in ("Received", "Sent", "Connections", "Node count"):
            out[key] = int(value.strip())
    return out


def mntr(zk_host: str, zk_port: int) -> dict[str, str]:
    out = {}
    for line in four_letter(zk_host, zk_port, "mntr", timeout=5).splitlines():
        key, _, value = line.partition("\t")
        out[key] = value.strip()
    return out


def cons(zk_host: str, zk_port: int) -> dict[int, dict[str, int]]:
    """Per connection (by session id): client port and packets received and sent."""
    out = {}
    for line in four_letter(zk_host, zk_port, "cons", timeout=5).splitlines():
        m = _CONS.match(line)
        if not m:
            continue
        fields = dict(kv.split("=", 1) for kv in m.group(3).split(",") if "=" in kv)
        if "sid" not in fields:
            continue
        out[int(fields["sid"], 16)] = {"port": int(m.group(2)), "recved": int(fields.get("recved", 0)),
                                       "sent": int(fields.get("sent", 0))}
    return out


def find_zookeeper_process(data_dir: Path) -> psutil.Process | None:
    marker = str(data_dir)
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in a for a in (p.info["cmdline"] or [])) and "java" in " ".join(p.info["cmdline"][:1]):
            return p
    return None


def cpu_seconds(p: psutil.Process | None) -> float:
    if p is None:
        return float("nan")
    t = p.cpu_times()
    return t.user + t.system


# -- the run ----------------------------------------------------------------------------------


def _executors(a: Assignment) -> dict[tuple[str, tuple[int, ...]], str]:
    """executor -> the slot id running it."""
    return {e: sid for sid, s in a.slots.items() for e in s.executors}


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def _logged(text: str, topology_id: str) -> dict[str, list[float]]:
    """Wall times of nimbus's "submitted <id>" and "assigned <id> to N workers" log lines."""
    out: dict[str, list[float]] = {"submitted": [], "assigned": []}
    for line in text.splitlines():
        m = _LOG_TIME.match(line)
        if m is None:
            continue
        for kind in out:
            if f"{kind} {topology_id} " in line:
                t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) + int(m.group(2)) / 1000
                out[kind].append(t)
    return out


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _print_logs(cluster: ProcessCluster) -> None:
    """On failure, before the cluster's directory is removed: what nimbus and ZooKeeper logged."""
    try:
        print(cluster.logs(tail=6000))
        if cluster.zookeeper is not None:
            print(f"===== zookeeper =====\n{cluster.zookeeper.log_tail(30)}")
    except Exception:  # noqa: BLE001 - never hide the original error
        pass


def run(args: argparse.Namespace) -> dict[str, Any]:
    n, slots = args.supervisors, args.slots
    workers = args.workers or min(args.executors, n * slots, MAX_TOPOLOGY_WORKERS)
    sessions = min(args.sessions, n)
    report: dict[str, Any] = {"supervisors": n, "slots_per_supervisor": slots, "executors": args.executors,
                              "workers": workers, "sessions": sessions, "report_threads": args.report_threads}
    with ExitStack() as stack:
        cluster = ProcessCluster(supervisors=0, slots=1, zookeeper_root=ROOT, logging_level="INFO",
                                 temp_prefix="streamgale-scale-")
        stack.callback(cluster.close)
        stack.push(lambda exc_type, exc, tb: _print_logs(cluster) if exc_type is not None else None)
        zk_server = cluster.zookeeper
        assert zk_server is not None
        print(f"starting ZooKeeper and nimbus in {cluster.dir} ...")
        cluster.start_zookeeper()
        nimbus_proc = cluster.start_nimbus()
        cluster.wait_ready(0)
        nimbus = psutil.Process(nimbus_proc.pid)
        zk_proc = find_zookeeper_process(zk_server.data_dir)
        me = psutil.Process()
        nimbus_address = cluster.nimbus_addresses()[0]

        def alive() -> None:
            cluster.check_alive()

        watcher_zk = _zk_client(cluster.zookeeper_address)
        stack.callback(_close_client, watcher_zk)
        watcher_zk.start(timeout=30)
        watcher = AssignmentWatcher(watcher_zk, ROOT)

        sups = Supervisors(cluster.zookeeper_address, ROOT, n, slots, sessions)
        stack.callback(sups.close)
        t = time.monotonic()
        sups.connect()
        sups.register()
        report["register_s"] = time.monotonic() - t
        client = NimbusClient(nimbus_address, timeout=60.0)
        stack.callback(client.close)
        cluster.wait(lambda: len(client.cluster_info()["supervisors"]) >= n, timeout=120,
                     message=f"nimbus to list {n} supervisors", interval=0.2)
        print(f"{n:,} supervisors registered over {len(sups.clients)} sessions in {report['register_s']:.1f} s")

        reporters = Reporters(nimbus_address, watcher, sups.ids, args.report_threads)
        stack.callback(reporters.stop)
        reporters.start()

        # 1. schedule
        sub = prepare(TOPOLOGY, config={"topology.workers": workers, "bench.executors": args.executors},
                      base=Config())
        since = watcher.versions()
        called = time.time()
        topology_id = client.submit(sub.name, sub.spec, sub.config, sub.entry, sub.code, sub.code_digest)
        returned = time.time()
        first = watcher.wait_for(lambda a: a.topology_id == topology_id, since, 300,
                                 f"the assignment of {topology_id}", alive)
        a = first.assignment
        placed = sum(len(s.executors) for s in a.slots.values())
        if placed != args.executors or len(a.slots) != workers:
            raise RuntimeError(f"the assignment places {placed} executors on {len(a.slots)} slots; "
                               f"expected {args.executors} on {workers}")
        report["schedule"] = {"submit_rpc_s": returned - called,
                              "submit_returned_to_written_s": first.written_at - returned,
                              "submit_returned_to_seen_s": first.seen_at - returned,
                              "slots": len(a.slots), "executors": placed,
                              "supervisors_used": len({s.supervisor_id for s in a.slots.values()})}
        print(f"scheduled {placed:,} executors on {len(a.slots):,} workers in "
              f"{report['schedule']['submit_returned_to_written_s']:.2f} s after submit returned")

        # 3 and 4. steady state
        time.sleep(args.warmup)
        alive()
        versions_before = watcher.versions()
        reporters.record(True)
        zk0, cons0, t0 = srvr(zk_server.host, zk_server.port), cons(zk_server.host, zk_server.port), time.monotonic()
        nimbus_cpu0, zk_cpu0, me_cpu0 = cpu_seconds(nimbus), cpu_seconds(zk_proc), cpu_seconds(me)
        print(f"measuring steady state for {args.window:g} s ...")
        time.sleep(args.window)
        zk1, cons1, t1 = srvr(zk_server.host, zk_server.port), cons(zk_server.host, zk_server.port), time.monotonic()
        nimbus_cpu1, zk_cpu1, me_cpu1 = cpu_seconds(nimbus), cpu_seconds(zk_proc), cpu_seconds(me)
        reporters.record(False)
        rss_mb = nimbus.memory_info().rss / 2**20
        monitor = mntr(zk_server.host, zk_server.port)
        alive()
        elapsed = t1 - t0
        nimbus_ports = {c.laddr.port for c in nimbus.net_connections(kind="tcp")
                        if c.raddr and c.raddr.port == zk_server.port}
        roles = sups.session_ids()
        roles[watcher_zk.client_id[0]] = "this benchmark's assignment watcher"
        by_role: dict[str, dict[str, float]] = {}
        for sid, now_ in cons1.items():
            before = cons0.get(sid, {"recved": 0, "sent": 0})
            if now_["port"] in nimbus_ports:
                role = "nimbus"
            elif sid in roles:
                role = "supervisors" if roles[sid].startswith("simulated") else "watcher"
            else:
                role = "other"
            r = by_role.setdefault(role, {"received_per_s": 0.0, "sent_per_s": 0.0, "sessions": 0})
            r["received_per_s"] += (now_["recved"] - before["recved"]) / elapsed
            r["sent_per_s"] += (now_["sent"] - before["sent"]) / elapsed
            r["sessions"] += 1
        received = (zk1["Received"] - zk0["Received"]) / elapsed
        sent = (zk1["Sent"] - zk0["Sent"]) / elapsed
        sup_role = by_role.get("supervisors", {"received_per_s": 0.0, "sessions": 0})
        per_session = sup_role["received_per_s"] / max(1, sup_role["sessions"])
        rtts = [r for s in reporters.stats for r in s.rtts]
        report["steady"] = {
            "window_s": elapsed,
            "zookeeper_received_per_s": received, "zookeeper_sent_per_s": sent,
            "by_connection": by_role,
            "per_supervisor_session_received_per_s": per_session,
            "projected_received_per_s_one_session_per_supervisor":
                received - sup_role["received_per_s"] + per_session * n,
            "nimbus_cpu_pct": 100 * (nimbus_cpu1 - nimbus_cpu0) / elapsed,
            "nimbus_rss_mb": rss_mb,
            "zookeeper_cpu_pct": 100 * (zk_cpu1 - zk_cpu0) / elapsed,
            "benchmark_process_cpu_pct": 100 * (me_cpu1 - me_cpu0) / elapsed,
            "reports_sent_per_s": sum(s.sent for s in reporters.stats) / elapsed,
            "reports_answered_per_s": sum(s.answered for s in reporters.stats) / elapsed,
            "report_error_replies": sum(s.failures for s in reporters.stats),
            "reports_given_up": sum(s.gave_up for s in reporters.stats),
            "report_rtt_ms": {"p50": 1000 * _pct(rtts, 0.5), "p99": 1000 * _pct(rtts, 0.99),
                              "max": 1000 * max(rtts, default=float("nan"))},
            "assignment_writes_in_window": watcher.versions() - versions_before,
            "zookeeper": {k: monitor.get(k) for k in ("zk_num_alive_connections", "zk_znode_count",
                                                      "zk_ephemerals_count", "zk_watch_count",
                                                      "zk_approximate_data_size", "zk_avg_latency")},
        }

        # 2. lost node
        current = watcher.current[topology_id]
        victim_executors = [e for s in current.slots.values() if s.supervisor_id == sups.victim
                            for e in s.executors]
        if not victim_executors:
            raise RuntimeError(f"{sups.victim} runs no executors; the lost-node measurement would move nothing")
        placed_before = _executors(current)
        since = watcher.versions()
        reporters.alive.discard(sups.victim)
        lost_at = sups.lose_victim()

        def reassigned(a: Assignment) -> bool:
            where = _executors(a)
            return (a.topology_id == topology_id
                    and all(s.supervisor_id != sups.victim for s in a.slots.values())
                    and all(e in where for e in victim_executors))

        moved = watcher.wait_for(reassigned, since, 120, f"the executors of {sups.victim} to move", alive)
        after = _executors(moved.assignment)
        report["lost_node"] = {"supervisor": sups.victim, "lost_to_written_s": moved.written_at - lost_at,
                               "lost_to_seen_s": moved.seen_at - lost_at,
                               "victim_executors": len(victim_executors),
                               "executors_moved": sum(1 for e, slot in after.items() if placed_before.get(e) != slot),
                               "assignment_versions_written": watcher.versions() - since}
        print(f"lost node: {len(victim_executors)} executor(s) reassigned "
              f"{report['lost_node']['lost_to_written_s']:.2f} s after its session closed")

        time.sleep(0.5)  # nimbus logs a write after it returns
        alive()
        nimbus_log = (cluster.dir / "nimbus-0.log").read_text(errors="replace")
        report["nimbus_dead_slot_warnings"] = nimbus_log.count("stopped heartbeating")
        # nimbus's own view (its log's clock, this machine's): when it logged the submit and each write
        logged = _logged(nimbus_log, topology_id)
        report["nimbus_log"] = {
            "submitted_to_first_assigned_s": (logged["assigned"][0] - logged["submitted"][0]
                                              if logged["submitted"] and logged["assigned"] else None),
            "assigned_at_s_after_submit_returned": [round(t - returned, 3) for t in logged["assigned"]],
            "lost_at_s_after_submit_returned": round(lost_at - returned, 3)}
        report["nimbus_log_errors"] = [line for line in nimbus_log.splitlines() if " ERROR " in line][:5]

    # The scheduler alone, on the same inputs, in this process, once the cluster is gone.
    report["scheduler_alone"] = scheduler_alone(sub, topology_id, current, sups, workers)
    return report


def scheduler_alone(sub: Any, topology_id: str, current: Assignment, sups: Supervisors,
                    workers: int) -> dict[str, float]:
    """Median seconds (of 3) ``schedule()`` takes in this process: the first placement, a
    reconcile with nothing to change, and the lost node (``current`` less the victim)."""
    from streamgale.nimbus.scheduler import schedule

    rec = TopologyRecord(topology_id, sub.name, "ACTIVE", sub.spec, sub.config, sub.code_digest, sub.entry,
                         workers, {c: int(d["parallelism"]) for c, d in sub.spec["components"].items()},
                         time.time())
    infos = {sid: supervisor_info(i, sid, sups.ports) for i, sid in enumerate(sups.ids)}

    def timed(fn: Callable[[], Any]) -> float:
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    without = {k: v for k, v in infos.items() if k != sups.victim}
    return {"first_placement_s": timed(lambda: schedule([rec], infos, {}, time.time())),
            "unchanged_s": timed(lambda: schedule([rec], infos, {topology_id: current}, time.time())),
            "lost_node_s": timed(lambda: schedule([rec], without, {topology_id: current}, time.time()))}


# -- output -----------------------------------------------------------------------------------


def table(r: dict[str, Any]) -> list[tuple[str, str]]:
    s, st, lost, alone = r["schedule"], r["steady"], r["lost_node"], r["scheduler_alone"]
    roles = st["by_connection"]

    def role(name: str) -> float:
        return roles.get(name, {}).get("received_per_s", 0.0)

    sup_sessions = roles.get("supervisors", {}).get("sessions", 0)
    rtt = st["report_rtt_ms"]
    return [
        (f"schedule {s['executors']:,} executors on {s['slots']:,} workers: submit returned -> assignment written",
         f"{s['submit_returned_to_written_s']:.2f} s"),
        ("  the scheduler function alone, same inputs (in the benchmark process)",
         f"{alone['first_placement_s']:.2f} s"),
        ("  the submit RPC itself, call to reply (waits for nimbus's loop)", f"{s['submit_rpc_s']:.2f} s"),
        (f"lost node -> its executors reassigned ({lost['victim_executors']} executor(s); "
         f"{lost['executors_moved']} moved in all)", f"{lost['lost_to_written_s']:.2f} s"),
        ("  the scheduler function alone, same inputs", f"{alone['lost_node_s']:.2f} s"),
        ("ZooKeeper requests/s at steady state (packets received)", f"{st['zookeeper_received_per_s']:,.0f}"),
        ("  from nimbus", f"{role('nimbus'):,.0f}"),
        (f"  from the simulated supervisors ({sup_sessions} sessions: pings)", f"{role('supervisors'):,.0f}"),
        ("  from the benchmark's assignment watcher", f"{role('watcher'):,.0f}"),
        (f"  projected with one session per supervisor ({r['supervisors']:,} sessions)",
         f"{st['projected_received_per_s_one_session_per_supervisor']:,.0f}"),
        ("ZooKeeper responses/s at steady state (packets sent)", f"{st['zookeeper_sent_per_s']:,.0f}"),
        ("nimbus CPU at steady state (% of one core)", f"{st['nimbus_cpu_pct']:.0f}%"),
        ("  the scheduler function alone per reconcile (each second) when nothing changes",
         f"{1000 * alone['unchanged_s']:.0f} ms"),
        ("nimbus resident memory", f"{st['nimbus_rss_mb']:.0f} MB"),
        ("supervisor reports (heartbeat RPCs) sent / answered per s",
         f"{st['reports_sent_per_s']:,.0f} / {st['reports_answered_per_s']:,.0f}"),
        ("  report round trip p50 / p99 / max", f"{rtt['p50']:.1f} / {rtt['p99']:.0f} / {rtt['max']:.0f} ms"),
        (f"  reports unanswered after {REPORT_TIMEOUT:g} s (a supervisor then sends its next)",
         f"{st['reports_given_up']:,}"),
        ("assignment writes during the steady window", f"{st['assignment_writes_in_window']}"),
        ("ZooKeeper CPU / benchmark process CPU at steady state",
         f"{st['zookeeper_cpu_pct']:.0f}% / {st['benchmark_process_cpu_pct']:.0f}%"),
    ]


def print_report(r: dict[str, Any]) -> None:
    rows = table(r)
    print(f"\nnimbus at scale: {r['supervisors']:,} simulated supervisors x {r['slots_per_supervisor']} slots "
          f"({r['supervisors'] * r['slots_per_supervisor']:,} slots), one topology of {r['executors']:,} executors "
          f"on {r['workers']:,} workers; steady state over {r['steady']['window_s']:.0f} s")
    width = max(len(k) for k, _ in rows)
    print(f"{'measure':<{width}} {'value':>16}")
    for k, v in rows:
        print(f"{k:<{width}} {v:>16}")
    print(f"notes: the supervisors share {r['sessions']} ZooKeeper sessions (the lost one has its own); "
          f"{r['report_threads']} threads send their reports, pipelined (each supervisor one a second, at most "
          f"one unanswered); nimbus judged {r['nimbus_dead_slot_warnings']} slot(s) dead for missed heartbeats; "
          f"load average {r['load_average_1m']['before']:.1f} before, {r['load_average_1m']['after']:.1f} after "
          f"({os.cpu_count()} cores).")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--supervisors", type=int, default=1000)
    ap.add_argument("--slots", type=int, default=10, help="worker slots per supervisor")
    ap.add_argument("--executors", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=None,
                    help=f"topology.workers (default: min(executors, slots in all, {MAX_TOPOLOGY_WORKERS}))")
    ap.add_argument("--sessions", type=int, default=50, help="ZooKeeper sessions the supervisors share")
    ap.add_argument("--report-threads", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds of heartbeats before the steady window")
    ap.add_argument("--window", type=float, default=10.0, help="seconds of the steady-state measurement")
    ap.add_argument("--json", type=Path, default=Path("benchmarks/results/scale.json"),
                    help="write every figure here (default: %(default)s)")
    args = ap.parse_args(argv)
    if args.supervisors < 2 or args.slots < 1 or args.executors < 2 or args.report_threads < 1:
        ap.error("need --supervisors >= 2, --slots >= 1, --executors >= 2, --report-threads >= 1")
    if not 2 <= args.sessions <= MAX_SESSIONS:
        ap.error(f"--sessions must be 2 to {MAX_SESSIONS}: ZooKeeper admits 60 connections per client address")
    if args.workers is not None and not 1 <= args.workers <= min(MAX_TOPOLOGY_WORKERS, args.supervisors * args.slots):
        ap.error(f"--workers must be 1 to min({MAX_TOPOLOGY_WORKERS}, supervisors x slots)")
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # connection chatter as sessions close
    from .suite import machine

    started = time.monotonic()
    load_before = os.getloadavg()
    result = run(args)
    result["seconds"] = time.monotonic() - started
    result["load_average_1m"] = {"before": load_before[0], "after": os.getloadavg()[0]}
    print_report(result)
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "args": vars(args) | {"json": str(args.json)}, "table": dict(table(result)), **result}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\n(all figures in {args.json}; {result['seconds']:.0f} s in all)")


if __name__ == "__main__":
    main()

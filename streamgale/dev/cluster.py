"""A whole cluster on this machine: ZooKeeper, nimbuses and supervisors as CLI subprocesses.

One helper behind ``streamgale dev-cluster``, the integration and fault-injection
test fixtures and the benchmarks. Every daemon is started the way an operator
starts it (``python -m streamgale.cli --config FILE nimbus|supervisor``), each in
a session of its own, with its log in the cluster directory. Workers run in
sessions of their own too (so they outlive a supervisor restart); they are found
by the cluster directory in their command line.

Readiness is asked of nimbus over its API (a leader is known and the supervisors
are registered), never read out of ZooKeeper, so this module does not depend on
the cluster-state layer.

Not thread-safe: one owner (a test, a benchmark run, the dev-cluster command)
calls its methods. ``close()`` kills every daemon and every worker it started,
whatever state the cluster is in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psutil
import yaml

from streamgale.config import load_config
from streamgale.security import Security
from streamgale.wire.protocol import NimbusError
from streamgale.wire.rpc import NimbusClient

from .polling import poll_until
from .ports import free_port, free_port_range
from .zookeeper_server import ZooKeeperServer

__all__ = ["CLI", "ProcessCluster", "ProcessClusterError", "SupervisorNode", "find_workers"]

CLI = (sys.executable, "-m", "streamgale.cli")
CONFIG_FILE = "cluster.yaml"
WORKER_KILL_TIMEOUT = 10.0

T = TypeVar("T")


class ProcessClusterError(RuntimeError):
    """A daemon died, the cluster did not come up in time, or a process outlived ``close()``."""


@dataclass(frozen=True)
class SupervisorNode:
    """Where supervisor i runs.

    ``host`` is the address it registers (workers on other nodes reach it
    there); its slots are ports ``slot_base`` onwards; ``prefix`` goes before
    its command line, e.g. ``("ip", "netns", "exec", NS)`` to run it (and so
    its workers) in a network namespace of its own. The prefix must exec the
    command, not fork it, so the process started is the supervisor.
    """

    host: str
    slot_base: int
    prefix: tuple[str, ...] = ()


def find_workers(directory: Path) -> list[tuple[psutil.Process, list[str]]]:
    """Live ``streamgale.worker`` processes with a path under ``directory`` in their command
    line, each with that command line (how a cluster finds the workers its supervisors
    started: they run in sessions of their own)."""
    marker = str(directory).rstrip(os.sep) + os.sep
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if ("streamgale.worker" in cmd and any(marker in a for a in cmd)
                and p.info["status"] != psutil.STATUS_ZOMBIE):
            found.append((p, cmd))
    return found


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Signal the daemon's session (its own process group; workers have theirs)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


class ProcessCluster:
    """ZooKeeper (its own, or an existing one), nimbuses and supervisors in ``directory``.

    ``directory``: where the config file, daemon logs and supervisor state live;
    by default a temporary directory, removed by ``close()``. ``supervisors``
    supervisors with ``slots`` slots each on ``host`` (on free ports), or one
    per entry of ``nodes``. ``zookeeper``: the ``host:port`` of a running
    server; if None the cluster runs its own on ``host`` (``zookeeper_port``,
    default a free port), data in ``directory/zookeeper``. ``zookeeper_root``
    and ``session_timeout`` are written only when given (else the daemons'
    defaults). ``settings``: other config keys for the file; the keys this class
    sets itself take precedence. ``shutdown_workers``: supervisors stop their
    workers when they exit. ``log_files``: daemon output goes to
    ``directory/<name>.log``; if False it goes where this process's goes.

    The constructor writes the config file and starts nothing; ``start()``
    (or ``with``) starts everything and waits until ready.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None, *, supervisors: int = 2, slots: int = 2,
                 nodes: Sequence[SupervisorNode] | None = None, host: str = "127.0.0.1",
                 nimbus_port: int | None = None, zookeeper: str | None = None, zookeeper_port: int | None = None,
                 zookeeper_root: str | None = None, session_timeout: float | None = None,
                 logging_level: str = "INFO", settings: Mapping[str, Any] | None = None,
                 shutdown_workers: bool = False, log_files: bool = True,
                 cwd: str | os.PathLike[str] | None = None, temp_prefix: str = "streamgale-cluster-"):
        if zookeeper is not None and zookeeper_port is not None:
            raise ValueError("zookeeper_port is for the cluster's own ZooKeeper; an existing one "
                             f"({zookeeper}) was given")
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix=temp_prefix) if directory is None else directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.slots = slots
        self.shutdown_workers = shutdown_workers
        self.log_files = log_files
        self.cwd = cwd
        if nodes is None:
            base = free_port_range(supervisors * slots)
            nodes = [SupervisorNode(host, base + i * slots) for i in range(supervisors)]
            reserved = range(base, base + supervisors * slots)
        else:
            reserved = range(0)
        self.nodes = list(nodes)
        if nimbus_port is None:
            nimbus_port = free_port(host)
            while nimbus_port in reserved:
                nimbus_port = free_port(host)
        self.nimbus_ports: dict[int, int] = {0: nimbus_port}
        self.zookeeper: ZooKeeperServer | None = None  # its own, if it runs one
        if zookeeper is None:
            self.zookeeper = ZooKeeperServer(port=zookeeper_port, data_dir=self.dir / "zookeeper", host=host)
            zookeeper = self.zookeeper.address
        self.zookeeper_address = zookeeper
        self.nimbus_procs: dict[int, subprocess.Popen] = {}
        self.supervisor_procs: dict[int, subprocess.Popen] = {}
        self._started: list[subprocess.Popen] = []  # every daemon ever started, for close()
        own = {"zookeeper.servers": [self.zookeeper_address], "nimbus.host": host, "nimbus.port": nimbus_port,
               "workers": slots, "logging_level": logging_level}
        if zookeeper_root is not None:
            own["zookeeper.root"] = zookeeper_root
        if session_timeout is not None:
            own["zookeeper.session_timeout"] = session_timeout
        self.config_file = self.dir / CONFIG_FILE
        self.config_file.write_text(yaml.safe_dump({**(settings or {}), **own}, sort_keys=False))

    # -- start ----------------------------------------------------------------------------------

    def start(self, nimbuses: int = 1, timeout: float = 60.0) -> ProcessCluster:
        """ZooKeeper (if its own), ``nimbuses`` nimbuses and every supervisor; returns once
        ready (see :meth:`wait_ready`). On failure the caller still owns ``close()``."""
        self.start_zookeeper()
        for i in range(nimbuses):
            self.start_nimbus(i)
        for i in range(len(self.nodes)):
            self.start_supervisor(i)
        self.wait_ready(len(self.nodes), timeout=timeout)
        return self

    def start_zookeeper(self, timeout: float = 30.0) -> None:
        """Start the cluster's own ZooKeeper (idempotent; nothing if it uses an existing one).
        Raises ``ZooKeeperServerError`` saying why if it cannot."""
        if self.zookeeper is not None:
            self.zookeeper.start(timeout=timeout)

    @property
    def nimbus_port(self) -> int:
        """Nimbus 0's API port (``nimbus.port`` in the config file)."""
        return self.nimbus_ports[0]

    @property
    def slot_bases(self) -> list[int]:
        return [node.slot_base for node in self.nodes]

    def _nimbus_port(self, index: int) -> int:
        """Nimbus ``index``'s port: chosen when it first starts, kept across restarts."""
        if index not in self.nimbus_ports:
            self.nimbus_ports[index] = free_port(self.host)
        return self.nimbus_ports[index]

    def nimbus_addresses(self) -> list[str]:
        """``host:port`` of every nimbus given a port so far (what ``cli`` passes as ``--nimbus``)."""
        return [f"{self.host}:{port}" for port in self.nimbus_ports.values()]

    def local_dir(self, index: int) -> Path:
        """Supervisor ``index``'s ``supervisor.local_dir`` (its id, code, worker dirs and logs)."""
        return self.dir / f"supervisor-{index}"

    def start_nimbus(self, index: int = 0, extra: Sequence[str] = ()) -> subprocess.Popen:
        """Nimbus ``index`` (``extra``: more arguments of ``streamgale nimbus``)."""
        self._check_not_running(self.nimbus_procs, "nimbus", index)
        proc = self._spawn(f"nimbus-{index}", ["nimbus", "--host", self.host, "--port", str(self._nimbus_port(index)),
                                               *extra])
        self.nimbus_procs[index] = proc
        return proc

    def start_supervisor(self, index: int, extra: Sequence[str] = ()) -> subprocess.Popen:
        """Supervisor ``index`` (``extra``: more arguments of ``streamgale supervisor``)."""
        self._check_not_running(self.supervisor_procs, "supervisor", index)
        node = self.nodes[index]
        args = ["supervisor", "--host", node.host, *(["--shutdown-workers"] if self.shutdown_workers else []),
                "-c", f"network.port={node.slot_base}", "-c", f"supervisor.local_dir={self.local_dir(index)}",
                *extra]
        proc = self._spawn(f"supervisor-{index}", args, node.prefix)
        self.supervisor_procs[index] = proc
        return proc

    def stop_nimbus(self, index: int, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Send ``sig`` (default: kill, as a crash would) to nimbus ``index`` and wait for it."""
        self._stop(self.nimbus_procs.pop(index), sig, timeout)

    def stop_supervisor(self, index: int, sig: int = signal.SIGKILL, timeout: float = 30.0) -> None:
        """Send ``sig`` to supervisor ``index`` and wait for it; its workers keep running
        unless ``shutdown_workers`` and ``sig`` lets it stop them."""
        self._stop(self.supervisor_procs.pop(index), sig, timeout)

    def restart_nimbus(self, index: int = 0, sig: int = signal.SIGKILL) -> subprocess.Popen:
        if index in self.nimbus_procs:
            self.stop_nimbus(index, sig)
        return self.start_nimbus(index)

    def restart_supervisor(self, index: int, sig: int = signal.SIGKILL) -> subprocess.Popen:
        if index in self.supervisor_procs:
            self.stop_supervisor(index, sig)
        return self.start_supervisor(index)

    def _check_not_running(self, procs: dict[int, subprocess.Popen], role: str, index: int) -> None:
        proc = procs.get(index)
        if proc is not None and proc.poll() is None:
            raise ProcessClusterError(f"{role}-{index} is already running (pid {proc.pid}); stop it first")

    def _spawn(self, name: str, args: list[str], prefix: Sequence[str] = ()) -> subprocess.Popen:
        command = [*prefix, *CLI, "--config", str(self.config_file), *args]
        kwargs: dict[str, Any] = dict(stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)
        if self.log_files:
            with open(self.dir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
                proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        else:
            proc = subprocess.Popen(command, **kwargs)
        self._started.append(proc)
        return proc

    @staticmethod
    def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> None:
        _signal_group(proc, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

    # -- use and observe ------------------------------------------------------------------------

    def cli(self, *args: str, timeout: float = 60.0,
            config: str | os.PathLike[str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``streamgale ARGS`` against this cluster (its config file, or ``config``: e.g. a user's
        keys with security on; every nimbus); blocks until it exits or ``timeout`` (then
        ``subprocess.TimeoutExpired``)."""
        return subprocess.run([*CLI, "--config", str(config or self.config_file),
                               "--nimbus", ",".join(self.nimbus_addresses()), *args],
                              capture_output=True, text=True, timeout=timeout, cwd=self.cwd)

    def exited(self) -> list[str]:
        """``"<role>-<i> (status N)"`` for every daemon in ``nimbus_procs`` / ``supervisor_procs`` that has
        exited (a daemon removed from them, e.g. by ``stop_*``, no longer counts)."""
        return [f"{role}-{index} (status {proc.returncode})"
                for role, procs in (("nimbus", self.nimbus_procs), ("supervisor", self.supervisor_procs))
                for index, proc in procs.items() if proc.poll() is not None]

    def check_alive(self) -> None:
        """Raise :class:`ProcessClusterError`, with the logs, if any daemon has exited."""
        gone = self.exited()
        if gone:
            raise ProcessClusterError(f"{', '.join(gone)} exited\n{self.logs()}")

    def wait(self, predicate: Callable[[], T], timeout: float = 30.0, message: str = "condition",
             interval: float = 0.05) -> T:
        """Poll ``predicate`` until it returns something truthy (returned); fail at once if a
        daemon dies, or after ``timeout`` seconds naming ``message``."""
        return poll_until(predicate, timeout, message, interval, check=self.check_alive, error=ProcessClusterError)

    def wait_ready(self, supervisors: int | None = None, timeout: float = 60.0) -> None:
        """Until a nimbus answers, a leader is elected and ``supervisors`` supervisors (default:
        all started) are registered with it. Fails fast, with the logs, if a daemon dies."""
        want = len(self.supervisor_procs) if supervisors is None else supervisors
        have: dict[str, Any] = {}

        def ready() -> bool:
            have.clear()
            try:
                have.update(client.cluster_info())
            except NimbusError as e:
                have["error"] = str(e)
                return False
            return bool(have.get("leader")) and len(have.get("supervisors", ())) >= want

        # The daemons' own config: with security on, this client authenticates as they do.
        security = Security.from_config(load_config(self.config_file))
        with NimbusClient(self.nimbus_addresses(), timeout=1.0, security=security) as client:
            try:
                self.wait(ready, timeout=timeout, message=f"a nimbus leader and {want} supervisors")
            except ProcessClusterError as e:
                if self.exited():
                    raise  # check_alive's message already has the logs
                raise ProcessClusterError(f"the cluster in {self.dir} did not come up: {e}; nimbus last said "
                                          f"{have or 'nothing'}\n{self.logs()}") from None

    def worker_processes(self) -> list[psutil.Process]:
        """This cluster's live worker processes."""
        return [p for p, _ in find_workers(self.dir)]

    def logs(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of every daemon log and every log under a supervisor's directory."""
        files = sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("supervisor-*/**/*.log"))
        return "\n".join(f"===== {f.relative_to(self.dir)} =====\n{f.read_text(errors='replace')[-tail:]}"
                         for f in files if f.is_file())

    # -- stop -----------------------------------------------------------------------------------

    def close(self, grace: float = 0.0) -> None:
        """Stop everything this cluster started; idempotent, safe in any state.

        With ``grace`` > 0 daemons first get SIGTERM and up to ``grace`` seconds in all to
        exit; whatever is left is killed. Then every worker under the directory is killed,
        its own ZooKeeper stopped and a temporary directory removed. Raises
        :class:`ProcessClusterError` only if a worker survives SIGKILL (after cleaning the rest).
        """
        try:
            self._stop_daemons(grace)
            self._kill_workers()
        finally:
            try:
                if self.zookeeper is not None:
                    self.zookeeper.close()
            finally:
                if self._own_dir:
                    shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_daemons(self, grace: float) -> None:
        live = [p for p in reversed(self._started) if p.poll() is None]  # supervisors before nimbuses
        if grace > 0:
            for proc in live:
                _signal_group(proc, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for proc in live:
                try:
                    proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    pass
        for proc in live:
            _signal_group(proc, signal.SIGKILL)
        for proc in live:
            proc.wait()

    def _kill_workers(self) -> None:
        deadline = time.monotonic() + WORKER_KILL_TIMEOUT
        while workers := self.worker_processes():
            if time.monotonic() > deadline:
                raise ProcessClusterError(f"workers {[p.pid for p in workers]} of {self.dir} survived SIGKILL")
            for p in workers:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            # A killed worker whose supervisor is gone stays a zombie until init reaps it, which
            # psutil.wait_procs would wait out; worker_processes() already leaves zombies out.
            gone_by = time.monotonic() + 1.0
            while self.worker_processes() and time.monotonic() < gone_by:
                time.sleep(0.02)

    def __enter__(self) -> ProcessCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"ProcessCluster({str(self.dir)!r}, zookeeper={self.zookeeper_address}, "
                f"nimbuses={sorted(self.nimbus_procs)}, supervisors={sorted(self.supervisor_procs)})")

"""A whole cluster in one process, for tests: nimbus, supervisors and workers in threads.

Every daemon is the real one, given in-process collaborators: a
:class:`~streamgale.cluster.memory_storage.MemoryZooKeeper` instead of a
ZooKeeper ensemble (each daemon its own session, so a node can be "lost" by
expiring its session), ZeroMQ ``inproc://`` sockets between workers and to
their supervisors, and a :class:`ThreadLauncher` that runs each worker as a
thread. Nimbus's client API and the supervisors' log endpoints stay on
loopback TCP, so clients talk to it exactly as to a real cluster.

Use as a context manager; :meth:`InProcessCluster.close` stops every thread.
"""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from streamgale.cluster.memory_storage import MemoryStorage, MemoryZooKeeper
from streamgale.cluster.state import ClusterState
from streamgale.config import Config
from streamgale.dev.polling import poll_until
from streamgale.dev.ports import free_port
from streamgale.nimbus.daemon import Nimbus
from streamgale.supervisor.daemon import Supervisor
from streamgale.wire.channel import WorkerArgs
from streamgale.wire.rpc import NimbusClient
from streamgale.worker.daemon import Worker

log = logging.getLogger("streamgale.inprocess")

ROOT = "/streamgale"


_IDS = itertools.count(1_000_000)  # worker ids, unique in the process and never a real pid


class ThreadLauncher:
    """Runs workers as threads of this process."""

    def __init__(self, config: Config, context: zmq.Context):
        self.config = config
        self.context = context
        self.workers: dict[int, Worker] = {}
        self.threads: dict[int, threading.Thread] = {}

    def launch(self, args: WorkerArgs, log_file: Path) -> int:
        wid = next(_IDS)
        worker = Worker(args, self.config, self.context, worker_id=wid)
        self.workers[wid] = worker

        def run() -> None:
            try:
                worker.start()
                worker.run()
            except Exception as e:  # noqa: BLE001 - a worker thread dies like a process: the supervisor sees it
                log.warning("in-process worker %d on port %d failed", wid, args.port)
                try:
                    worker.failed(e)  # tells its supervisor, unless the cluster is closing
                except Exception:  # noqa: BLE001 - e.g. the ZeroMQ context is gone at teardown
                    log.exception("in-process worker %d could not report its failure", wid)
            finally:
                worker.close()

        t = threading.Thread(target=run, name=f"worker-{args.port}-{wid}", daemon=True)
        self.threads[wid] = t
        t.start()
        return wid

    def alive(self, pid: int) -> bool:
        t = self.threads.get(pid)
        return t is not None and t.is_alive()

    def kill(self, pid: int, force: bool) -> None:
        worker = self.workers.get(pid)
        if worker is not None:
            worker.stop("killed by its supervisor" + (" (forced)" if force else ""))

    def crash(self, pid: int) -> None:
        """A test's kill -9: the worker stops at once, without a word to anyone."""
        self.kill(pid, True)

    def join(self, timeout: float = 5.0) -> None:
        for t in self.threads.values():
            t.join(timeout)


class InProcessCluster:
    """Nimbus (or several) and ``supervisors`` supervisors with ``slots`` slots each, in threads."""

    def __init__(self, supervisors: int = 2, slots: int = 2, nimbuses: int = 1,
                 config: dict[str, Any] | None = None, directory: Path | None = None):
        self._tmp = None if directory is not None else tempfile.TemporaryDirectory(prefix="streamgale-inproc-")
        self.dir = directory or Path(self._tmp.name)  # type: ignore[union-attr]
        self.zookeeper = MemoryZooKeeper()
        self.context = zmq.Context()
        self.nimbus_ports = [free_port() for _ in range(nimbuses)]
        base = {"nimbus.host": "127.0.0.1", "nimbus.port": self.nimbus_ports[0], "workers": slots,
                "logging_level": "INFO", "supervisor.worker_start_timeout": 10.0,
                "supervisor.worker_timeout": 5.0, **(config or {})}
        self.config = Config().merged(base, "in-process cluster config")
        self.nimbuses: list[Nimbus | None] = [None] * nimbuses
        self.supervisors: list[Supervisor | None] = [None] * supervisors
        self.launchers: list[ThreadLauncher] = [ThreadLauncher(self.config, self.context) for _ in range(supervisors)]
        self.storages: dict[str, MemoryStorage] = {}
        self._threads: dict[str, threading.Thread] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> InProcessCluster:
        try:
            for i in range(len(self.nimbuses)):
                self.start_nimbus(i)
            for i in range(len(self.supervisors)):
                self.start_supervisor(i)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _state(self, name: str) -> ClusterState:
        storage = MemoryStorage(self.zookeeper)
        self.storages[name] = storage
        return ClusterState(storage, ROOT)

    def _run(self, name: str, daemon: Nimbus | Supervisor) -> None:
        daemon.start()
        t = threading.Thread(target=daemon.run, name=name, daemon=True)
        self._threads[name] = t
        t.start()

    def start_nimbus(self, index: int) -> Nimbus:
        port = self.nimbus_ports[index]
        nimbus = Nimbus(self.config, "127.0.0.1", port, self._state(f"nimbus-{index}"), self.context,
                        bind_host="127.0.0.1")
        self.nimbuses[index] = nimbus
        self._run(f"nimbus-{index}", nimbus)
        return nimbus

    def stop_nimbus(self, index: int) -> None:
        self._stop(f"nimbus-{index}", self.nimbuses[index])
        self.nimbuses[index] = None

    def start_supervisor(self, index: int) -> Supervisor:
        config = self.config.merged({"supervisor.local_dir": str(self.dir / f"supervisor-{index}"),
                                     "network.port": 6700}, "in-process supervisor")
        addresses = [f"127.0.0.1:{p}" for p in self.nimbus_ports]
        sup = Supervisor(config, f"node-{index}", self._state(f"supervisor-{index}"),
                         lambda timeout: NimbusClient(addresses, timeout=timeout, context=self.context),
                         self.launchers[index], self.context, channel_url=f"inproc://supervisor-{index}",
                         worker_scheme="inproc", log_host="127.0.0.1")
        self.supervisors[index] = sup
        self._run(f"supervisor-{index}", sup)
        return sup

    def stop_supervisor(self, index: int) -> None:
        """Stop the daemon (its workers go on, as after a supervisor crash)."""
        self._stop(f"supervisor-{index}", self.supervisors[index])
        self.supervisors[index] = None

    def lose_node(self, index: int) -> None:
        """The node is gone: its workers stop at once and its ZooKeeper session expires."""
        launcher = self.launchers[index]
        for wid in list(launcher.workers):
            launcher.crash(wid)
        self.storages[f"supervisor-{index}"].expire_session(reconnect=False)
        self.stop_supervisor(index)

    def _stop(self, name: str, daemon: Nimbus | Supervisor | None) -> None:
        if daemon is None:
            return
        daemon.stop()
        t = self._threads.pop(name, None)
        if t is not None:
            t.join(10)
        daemon.close()

    def close(self) -> None:
        for i in range(len(self.supervisors)):
            self.stop_supervisor(i)
        for launcher in self.launchers:
            for wid in list(launcher.workers):
                launcher.crash(wid)
            launcher.join()
        for i in range(len(self.nimbuses)):
            self.stop_nimbus(i)
        self.context.destroy(linger=0)
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- for tests ------------------------------------------------------------------------------

    def client(self, timeout: float = 10.0) -> NimbusClient:
        return NimbusClient([f"127.0.0.1:{p}" for p in self.nimbus_ports], timeout=timeout, context=self.context)

    def leader(self) -> Nimbus | None:
        return next((n for n in self.nimbuses if n is not None and n.is_leader), None)

    def workers(self) -> dict[int, Worker]:
        """Live workers by id, across every node."""
        return {wid: w for launcher in self.launchers for wid, w in launcher.workers.items()
                if launcher.alive(wid)}

    def wait(self, predicate: Callable[[], Any], timeout: float = 20.0, message: str = "condition") -> Any:
        """Poll ``predicate`` until it is truthy (every 20 ms); AssertionError after ``timeout``."""
        return poll_until(predicate, timeout, message)

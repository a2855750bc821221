"""A standalone ZooKeeper server for development and tests.

Launches Apache ZooKeeper's own ``QuorumPeerMain`` in a JVM subprocess with a
generated ``zoo.cfg``; backs ``streamgale dev-zookeeper`` and the test
fixtures. Not for production: it is one server, without fsync.

The jar is found through ``$ZOOKEEPER_CLASSPATH`` (a Java class path) if set,
else where Debian's ``zookeeper`` package puts it. Readiness is a handshake:
``start()`` polls the ``ruok`` and ``srvr`` four-letter commands until the
server answers that it is serving.

This module does not use kazoo; it speaks only the four-letter commands.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from .ports import free_port, port_is_free

DEBIAN_CLASSPATH = ("/etc/zookeeper/conf", "/usr/share/java/zookeeper.jar")
# ZooKeeper's jar names only slf4j-api; with a binding its log says why it failed.
DEBIAN_LOG_BINDING = "/usr/share/java/slf4j-simple.jar"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"
LOG_FILE = "zookeeper.log"


class ZooKeeperServerError(RuntimeError):
    """ZooKeeper could not be found, started or reached."""


def find_classpath() -> str:
    """The Java class path holding ZooKeeper's server classes."""
    env = os.environ.get("ZOOKEEPER_CLASSPATH")
    if env:
        return env
    conf, jar = DEBIAN_CLASSPATH
    if not Path(jar).is_file():
        raise ZooKeeperServerError(
            f"ZooKeeper is not installed: {jar} is missing. Install it with "
            "`apt-get install zookeeper`, or set ZOOKEEPER_CLASSPATH to a class path "
            "holding zookeeper.jar and its dependencies")
    parts = [conf, jar]
    if Path(DEBIAN_LOG_BINDING).is_file():
        parts.append(DEBIAN_LOG_BINDING)
    return os.pathsep.join(parts)


def four_letter(host: str, port: int, command: str, timeout: float = 1.0) -> str:
    """Send a four-letter command (``ruok``, ``srvr``) and return the reply."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(command.encode("ascii"))
        chunks = []
        while chunk := s.recv(4096):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


class ZooKeeperServer:
    """One standalone ZooKeeper server process.

    ``stop()`` kills the process but keeps its data directory, so ``start()``
    brings the same data back on the same port (for "ZooKeeper is down"
    fault tests). ``close()`` stops it and deletes the data directory if this
    object created it. Not thread-safe: one owner calls its methods.
    """

    def __init__(self, port: int | None = None, data_dir: Path | None = None, tick_time_ms: int = 500,
                 host: str = "127.0.0.1"):
        self.host = host
        self.port = port if port is not None else free_port(host)
        self._own_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="streamgale-zk-")) if data_dir is None else Path(data_dir)
        self.tick_time_ms = tick_time_ms
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``host:port``, the form ``zookeeper.servers`` takes."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def _write_config(self) -> Path:
        (self.data_dir / "data").mkdir(parents=True, exist_ok=True)
        cfg = self.data_dir / "zoo.cfg"
        cfg.write_text("\n".join([
            f"tickTime={self.tick_time_ms}",
            f"dataDir={self.data_dir / 'data'}",
            f"clientPort={self.port}",
            f"clientPortAddress={self.host}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=*",  # ruok, srvr (readiness), mntr, cons (benchmarks.scale)
            "minSessionTimeout=1000",  # tests use 1-2 s sessions
            "maxSessionTimeout=120000",
            "forceSync=no",  # a dev server: data survives a killed process, not a power cut
            "preAllocSize=4096",
            "",
        ]))
        return cfg

    def start(self, timeout: float = 30.0) -> None:
        """Launch the server and return once it serves requests.

        Idempotent while running. Raises :class:`ZooKeeperServerError` with the
        tail of its log if Java or ZooKeeper is missing or it does not come up
        within ``timeout`` seconds.
        """
        if self.running:
            return
        java = shutil.which("java")
        if java is None:
            raise ZooKeeperServerError("cannot start ZooKeeper: `java` is not on PATH "
                                       "(`apt-get install zookeeper` brings a Java runtime)")
        if not port_is_free(self.host, self.port):
            raise ZooKeeperServerError(f"cannot start ZooKeeper on {self.address}: the port is in use "
                                       "(another ZooKeeper?); pick another port")
        cfg = self._write_config()
        args = [java, "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dzookeeper.log.dir={self.data_dir}", "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-cp", find_classpath(), MAIN_CLASS, str(cfg)]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._serving():
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ZooKeeperServerError(f"ZooKeeper on {self.address} exited with status {code} "
                                           f"while starting; its log ({self.log_path}) ends:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ZooKeeperServerError(f"ZooKeeper on {self.address} did not answer within {timeout} s; "
                                           f"its log ({self.log_path}) ends:\n{self.log_tail()}")
            time.sleep(0.05)

    def _serving(self) -> bool:
        try:
            # ruok only says the process is alive; srvr fails until it serves requests.
            return (four_letter(self.host, self.port, "ruok") == "imok"
                    and "Mode:" in four_letter(self.host, self.port, "srvr"))
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it; keeps the data."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()

    def close(self) -> None:
        """Stop the server and delete the data directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def __enter__(self) -> ZooKeeperServer:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ZooKeeperServer({self.address}, data_dir={str(self.data_dir)!r}, running={self.running})"

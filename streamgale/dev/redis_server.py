"""A real ``redis-server`` for tests and benchmarks: Debian's binary on a port of its own.

Without persistence, in a given directory, on 127.0.0.1 (never 6379, where a system service
may listen); restartable on the same port; ``kill()`` simulates a crash.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import redis

from streamgale.dev.polling import poll_until
from streamgale.dev.ports import free_port


def find_redis_server() -> str | None:
    """The ``redis-server`` executable on PATH, or None (``make system-packages`` installs it)."""
    return shutil.which("redis-server")


START_TIMEOUT_S = 10.0


class RedisServer:
    """A ``redis-server`` subprocess on 127.0.0.1:``port``; restartable on the same port."""

    def __init__(self, executable: str, directory: Path, port: int | None = None):
        self.executable = executable
        self.directory = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (no-op if running) and return once it answers PING."""
        if self.running:
            return
        self._proc = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory), "--logfile", str(self.log), "--daemonize", "no", "--databases", "16"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        poll_until(self._answers, START_TIMEOUT_S, f"redis-server to answer PING on port {self.port}",
                   interval=0.02, check=self._check_alive)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: connections drop, nothing is saved) and reap it."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the server (an orderly shutdown), SIGKILL if it has not exited in 5 s."""
        self._signal(signal.SIGTERM)

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_connect_timeout=2, socket_timeout=5)

    def _signal(self, sig: signal.Signals) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)

    def _answers(self) -> bool:
        with self.client() as c:
            try:
                return bool(c.ping())
            except redis.ConnectionError:
                return False

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
            raise RuntimeError(f"redis-server on port {self.port} exited with {self._proc.returncode}:\n{log}")

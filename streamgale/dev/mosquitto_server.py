"""A real ``mosquitto`` MQTT broker for tests and benchmarks: Debian's binary on a port of its own.

On 127.0.0.1 (never 1883, where a system service may listen), anonymous, with persistence on in
a given directory: ``stop()`` (SIGTERM) saves the persistent sessions and their queued QoS 1
messages, and ``start()`` on the same port restores them; ``kill()`` (SIGKILL) is a crash that
loses what was not saved yet.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from streamgale.dev.polling import poll_until
from streamgale.dev.ports import free_port


def find_mosquitto() -> str | None:
    """The ``mosquitto`` executable on PATH or in /usr/sbin, or None (``make system-packages``)."""
    found = shutil.which("mosquitto")
    if found is None and os.access("/usr/sbin/mosquitto", os.X_OK):
        found = "/usr/sbin/mosquitto"
    return found


START_TIMEOUT_S = 10.0
# A minimal MQTT 3.1.1 CONNECT (clean session, empty client id, keepalive 60 s): how start() tells
# the broker answers (a CONNACK comes back) without a client library.
_CONNECT = bytes([0x10, 12, 0, 4]) + b"MQTT" + bytes([4, 0x02, 0, 60, 0, 0])
_DISCONNECT = bytes([0xE0, 0])


class MosquittoServer:
    """A ``mosquitto`` subprocess on 127.0.0.1:``port``, persistence in ``directory``."""

    def __init__(self, executable: str, directory: Path, port: int | None = None,
                 max_queued_messages: int = 100_000, max_inflight_messages: int = 0):
        self.executable = executable
        self.directory = directory
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.url = f"mqtt://{self.host}:{self.port}"
        self.log = directory / "mosquitto.log"
        self.conf = directory / "mosquitto.conf"
        self.max_queued_messages = max_queued_messages
        self.max_inflight_messages = max_inflight_messages
        self._proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.directory}/",
            "persistence_file mosquitto.db",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            # Queued QoS 1 messages of an offline persistent session: far above what a test publishes
            # (the default, 1000, silently drops the rest).
            f"max_queued_messages {self.max_queued_messages}",
            # Per-client messages in flight (0: no limit; MQTT v5 clients' Receive Maximum still applies).
            f"max_inflight_messages {self.max_inflight_messages}",
        ]
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the 'mosquitto' user, which cannot write here.
            lines.append(f"user {getpass.getuser()}")
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the broker (no-op if running) and return once it answers an MQTT CONNECT."""
        if self.running:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(self.config_text())
        with open(self.directory / "mosquitto.stderr", "ab") as err:
            self._proc = subprocess.Popen(
                [self.executable, "-c", str(self.conf)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        poll_until(self._answers, START_TIMEOUT_S, f"mosquitto to answer CONNECT on port {self.port}",
                   interval=0.02, check=self._check_alive)

    def restart(self) -> None:
        """An orderly stop (state saved) and a start on the same port."""
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the broker (a crash: connections drop, unsaved state is lost) and reap it."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM the broker (it saves its persistence file), SIGKILL if it has not exited in 5 s."""
        self._signal(signal.SIGTERM)

    def log_text(self) -> str:
        """The broker's log so far (connections, disconnections, errors)."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def disconnected(self, client_id: str) -> bool:
        """Whether the broker logged that ``client_id`` disconnected (it read all the client sent)."""
        return f"Client {client_id} disconnected" in self.log_text()

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
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as s:
                s.sendall(_CONNECT)
                reply = s.recv(4)
                if reply[:1] == b"\x20":
                    s.sendall(_DISCONNECT)
                    return True
                return False
        except OSError:
            return False

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            stderr = self.directory / "mosquitto.stderr"
            err = stderr.read_text(errors="replace")[-2000:] if stderr.exists() else ""
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else "(no log)"
            raise RuntimeError(f"mosquitto on port {self.port} exited with {self._proc.returncode}:\n{err}{log}")

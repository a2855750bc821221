"""A real RabbitMQ broker for tests and benchmarks: Debian's ``rabbitmq-server``, a private node.

Never the system service (which may not even start here): a node of its own, named
``sg<random>@localhost``, with its AMQP port, Erlang distribution port and ``epmd`` port
picked by :func:`streamgale.dev.ports.free_port`, its database, logs, config and Erlang
cookie (``HOME``) in a given directory, no plugins (no management UI). It runs in the
foreground as a subprocess in its own process group; ``epmd`` is started by this class too,
on its private port, so nothing outlives :meth:`close`.

``stop()`` is an orderly shutdown (SIGTERM: durable queues and persistent messages
survive), ``kill()`` a crash (SIGKILL of the whole process group), ``restart()`` both ways
back on the same ports and database. The broker's own script is used directly
(``/usr/lib/rabbitmq/bin/rabbitmq-server``, not ``/usr/sbin``'s wrapper, which switches to
the ``rabbitmq`` user when run as root).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
from pathlib import Path

import pika
import pika.exceptions

from streamgale.dev.polling import poll_until
from streamgale.dev.ports import free_port

START_TIMEOUT_S = 60.0  # a cold node takes ~5-15 s; a loaded CI machine more
_SCRIPT_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/lib/rabbitmq/sbin")


def find_rabbitmq_server() -> str | None:
    """The broker's own ``rabbitmq-server`` script, or None (``make system-packages`` installs it)."""
    for d in _SCRIPT_DIRS:
        candidate = Path(d) / "rabbitmq-server"
        if candidate.exists() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("rabbitmq-server")
    if found is None or shutil.which("epmd") is None:
        return None
    return found


class RabbitMQServer:
    """A private RabbitMQ node on 127.0.0.1:``port`` with its data in ``directory``."""

    def __init__(self, executable: str, directory: Path, port: int | None = None):
        self.executable = executable
        self.directory = Path(directory)
        self.port = port or free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.nodename = f"sg{secrets.token_hex(4)}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.log = self.directory / "rabbitmq.out"
        self._proc: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._prepare_directory()

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the node (no-op if running) and return once an AMQP connection works."""
        if self.running:
            return
        self._start_epmd()
        out = open(self.log, "ab")
        try:
            self._proc = subprocess.Popen([self.executable], env=self._env(), cwd=self.directory,
                                          stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        finally:
            out.close()
        try:
            poll_until(self._answers, START_TIMEOUT_S, f"rabbitmq-server to accept AMQP on port {self.port}",
                       interval=0.2, check=self._check_alive)
        except BaseException:
            self.kill()
            raise

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """An orderly shutdown (SIGTERM to the node), SIGKILL if it has not exited in 30 s."""
        self._signal(signal.SIGTERM, 30)

    def kill(self) -> None:
        """SIGKILL the node's process group (a crash: connections drop, unsynced state is lost)."""
        self._signal(signal.SIGKILL, 10)

    def restart(self, crash: bool = False) -> None:
        """Stop (or kill, when ``crash``) and start again on the same ports and database."""
        self.kill() if crash else self.stop()
        self.start()

    def close(self) -> None:
        """Kill the node and this server's epmd: nothing of it is left running."""
        self.kill()
        proc, self._epmd = self._epmd, None
        if proc is not None:
            _kill_group(proc, signal.SIGKILL, 10)

    # -- clients -------------------------------------------------------------------------------

    def parameters(self, **kwargs) -> pika.URLParameters:
        params = pika.URLParameters(self.url)
        params.socket_timeout = kwargs.pop("socket_timeout", 5)
        params.blocked_connection_timeout = kwargs.pop("blocked_connection_timeout", 10)
        params.connection_attempts = kwargs.pop("connection_attempts", 1)
        for key, value in kwargs.items():
            setattr(params, key, value)
        return params

    def connection(self) -> pika.BlockingConnection:
        """A new blocking connection (close it, or use it as a context manager)."""
        return pika.BlockingConnection(self.parameters())

    def queue_counts(self, queue: str) -> tuple[int, int]:
        """(ready, unacked) messages of ``queue``, without the management plugin (``rabbitmqctl``)."""
        rows = self.list_queues()
        if queue not in rows:
            raise KeyError(f"no queue {queue!r} on the node (queues: {sorted(rows)})")
        return rows[queue]

    def ready(self, queue: str) -> int:
        """Ready messages of ``queue`` over AMQP (a passive declare: the consumer-visible count)."""
        with self.connection() as conn:
            return int(conn.channel().queue_declare(queue, passive=True).method.message_count)

    def list_queues(self) -> dict[str, tuple[int, int]]:
        """{queue: (ready, unacked)} for every queue of the default vhost, via ``rabbitmqctl``."""
        ctl = str(Path(self.executable).with_name("rabbitmqctl"))
        result = subprocess.run([ctl, "-n", self.nodename, "list_queues", "-q", "--no-table-headers", "name",
                                 "messages_ready", "messages_unacknowledged"], env=self._env(), cwd=self.directory,
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl list_queues failed ({result.returncode}): {result.stderr[-2000:]}")
        out: dict[str, tuple[int, int]] = {}
        for line in result.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                out[parts[0]] = (int(parts[1]), int(parts[2]))
        return out

    # -- internals -----------------------------------------------------------------------------

    def _prepare_directory(self) -> None:
        for sub in ("home", "mnesia", "log"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        (self.directory / "rabbitmq-env.conf").write_text("")
        (self.directory / "enabled_plugins").write_text("[].\n")
        (self.directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\n"
            "loopback_users.guest = true\n"
            "log.console = true\n"
            "log.console.level = warning\n"
            "log.file.level = info\n"
            "disk_free_limit.absolute = 50MB\n")
        cookie = self.directory / "home" / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)

    def _env(self) -> dict[str, str]:
        d = self.directory
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        env.update({
            "HOME": str(d / "home"),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_CONF_ENV_FILE": str(d / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(d / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(d / "enabled_plugins"),
            "RABBITMQ_ENABLED_PLUGINS": "",
            "RABBITMQ_MNESIA_BASE": str(d / "mnesia"),
            "RABBITMQ_LOG_BASE": str(d / "log"),
            "RABBITMQ_PID_FILE": str(d / "rabbitmq.pid"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(d / "advanced.config"),
        })
        return env

    def _start_epmd(self) -> None:
        if self._epmd is not None and self._epmd.poll() is None:
            return
        epmd = shutil.which("epmd") or "epmd"
        self._epmd = subprocess.Popen([epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                                      env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, start_new_session=True)

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            _kill_group(proc, sig, timeout)

    def _answers(self) -> bool:
        try:
            conn = pika.BlockingConnection(self.parameters(socket_timeout=2))
        except (pika.exceptions.AMQPError, OSError):
            return False
        try:
            conn.close()
        except Exception:  # noqa: BLE001
            pass
        return True

    def _check_alive(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else "(no log)"
            raise RuntimeError(f"rabbitmq-server on port {self.port} exited with {self._proc.returncode}:\n{log}")


def _kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    if proc.poll() is None or sig == signal.SIGKILL:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    if sig != signal.SIGKILL:
        return
    try:  # leftovers of the group (erl_child_setup, inet_gethost) after the leader exited
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass

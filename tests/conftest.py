"""Shared test helpers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mqtt_fixtures import *  # noqa: F401,F403  (real mosquitto fixtures)
from rabbitmq_fixtures import *  # noqa: F401,F403  (real RabbitMQ fixtures)
from redis_fixtures import *  # noqa: F401,F403  (real redis-server fixtures)
from zk_fixtures import *  # noqa: F401,F403  (real ZooKeeper fixtures)

from streamgale.dev.polling import poll_until

ROOT = Path(__file__).resolve().parent.parent
STREAMGALE = [sys.executable, "-m", "streamgale.cli"]


def pytest_report_header(config):
    from streamgale.build import describe

    return f"streamgale build: {describe()}"


def pytest_sessionstart(session):
    from streamgale.build import stale_modules

    stale = stale_modules()
    if stale:
        pytest.exit(f"compiled modules are older than their sources ({', '.join(stale)}): "
                    "run `make build` (or `make build BUILD=pure`) before the tests", returncode=2)


def wait_for(predicate, timeout=10.0, interval=0.02, message="condition"):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    return poll_until(predicate, timeout, message, interval)


class Processes:
    """Starts subprocesses and guarantees they are gone at teardown."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kwargs):
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs.setdefault("text", True)
        kwargs.setdefault("cwd", ROOT)
        proc = subprocess.Popen(args, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def cleanup(self):
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass


def worker_processes(directory: Path) -> list[tuple[psutil.Process, list[str]]]:
    """Live ``streamgale.worker`` processes whose command line names ``directory`` (a test's
    cluster directory), with their command lines. Workers run in their own sessions, so this is
    how a test finds (and cleans up) the ones its supervisors started."""
    import psutil

    marker = str(directory)
    found = []
    for p in psutil.process_iter(["cmdline", "status"]):
        cmd = p.info["cmdline"] or []
        if "streamgale.worker" in cmd and any(marker in a for a in cmd) and p.info["status"] != psutil.STATUS_ZOMBIE:
            found.append((p, cmd))
    return found


def daemon_logs(directory: Path, tail: int = 4000) -> str:
    """The end of every daemon and worker log under a test's cluster directory."""
    parts = []
    for f in sorted(directory.glob("*.log")) + sorted(directory.glob("supervisor-*/workers/*/worker.log")):
        parts.append(f"===== {f.relative_to(directory)} =====\n{f.read_text(errors='replace')[-tail:]}")
    return "\n".join(parts)


@pytest.fixture
def processes():
    p = Processes()
    try:
        yield p
    finally:
        p.cleanup()


def run_cli(*args, timeout=60, **kwargs):
    return subprocess.run([*STREAMGALE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report on the item, so fixtures can print logs on failure."""
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)

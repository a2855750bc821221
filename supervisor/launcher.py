"""How a supervisor starts, watches and stops workers: processes, or threads in one process.

:class:`ProcessLauncher` is what nodes use: ``python -m streamgale.worker``
in its own session (so a worker outlives a supervisor restart and is
adopted). The in-process cluster (``streamgale.dev.inprocess``) passes a
launcher that runs workers as threads instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Protocol

import psutil

from streamgale.wire.channel import WorkerArgs


class Launcher(Protocol):
    def launch(self, args: WorkerArgs, log_file: Path) -> int:
        """Start a worker; return its id (a pid for processes)."""

    def alive(self, pid: int) -> bool:
        """Whether the worker ``pid`` (launched here, or adopted) still runs."""

    def kill(self, pid: int, force: bool) -> None:
        """Ask it to stop (SIGTERM) or stop it now (SIGKILL); no error if it is gone."""


class ProcessLauncher:
    def __init__(self) -> None:
        self.children: dict[int, subprocess.Popen[bytes]] = {}  # pid -> process we launched

    def launch(self, args: WorkerArgs, log_file: Path) -> int:
        cmd = [str(args.python or sys.executable), "-m", "streamgale.worker", "--topology-id", args.topology_id,
               "--port", str(args.port), "--supervisor-id", args.supervisor_id, "--host", args.host,
               "--code-dir", str(args.code_dir), "--worker-dir", str(args.worker_dir),
               "--channel", args.channel]
        if args.config_file is not None:
            cmd += ["--config", str(args.config_file)]
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=args.code_dir, env=dict(os.environ))
        self.children[proc.pid] = proc
        return proc.pid

    def alive(self, pid: int) -> bool:
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

    def kill(self, pid: int, force: bool) -> None:
        try:
            os.kill(pid, signal.SIGKILL if force else signal.SIGTERM)
        except ProcessLookupError:
            pass

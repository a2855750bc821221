"""Per-topology Python environments: one virtual environment per requirements, built once per node.

A code package whose top level holds a ``requirements.txt`` (and, optionally,
a ``wheelhouse/`` of wheels or source archives for clusters without access to
a package index) runs its workers in a virtual environment of its own. The
environment is named by :func:`environment_key`: a hash of the requirements,
of every file in the wheelhouse, and of the interpreter and StreamGale
version, so topologies with the same requirements share one environment and a
changed wheel gets a new one.

An environment sees the supervisor's own packages (StreamGale and its
dependencies) *after* its own: a ``.pth`` file adds the supervisor's
site-packages at the end of its path, so a topology may pin another version of
a package the cluster has, and pip installs only what the cluster lacks. pip
itself is the supervisor's, run by the environment's interpreter, and follows
the node's pip configuration (``pip.conf``, ``PIP_INDEX_URL``); the wheelhouse
is added as ``--find-links``; pip's cache is ``<root>/.pip-cache`` unless
``PIP_CACHE_DIR`` is set.

:meth:`Environments.build` is safe to call from several threads or processes
at once: a lock file per environment serialises builders, a build happens in
place and is marked complete by a ``.ready`` file written last, and a build
that fails (pip's error is raised as :class:`BuildError`) or is interrupted
leaves no environment behind that could be mistaken for a complete one.
:meth:`Environments.collect` removes environments no topology has used for
``keep`` seconds; the decision is :func:`stale` (pure).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import streamgale

REQUIREMENTS = "requirements.txt"
WHEELHOUSE = "wheelhouse"
READY = ".ready"  # in a complete environment; its mtime is when a topology last used it
PTH = "_streamgale_cluster.pth"
ERROR_LINES = 25  # the tail of pip's output a BuildError carries


class BuildError(RuntimeError):
    """pip could not build an environment; the message holds pip's error."""


def environment_key(code_dir: Path) -> str | None:
    """The environment a code package needs (None: it has no requirements.txt; the workers then
    run with the supervisor's interpreter)."""
    requirements = code_dir / REQUIREMENTS
    if not requirements.is_file():
        return None
    h = hashlib.sha256()
    for part in (sys.version, os.path.realpath(sys.executable), streamgale.__version__):
        h.update(part.encode() + b"\0")
    h.update(requirements.read_bytes() + b"\0")
    for path in _wheelhouse(code_dir):
        h.update(path.name.encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()[:20]


def _wheelhouse(code_dir: Path) -> list[Path]:
    house = code_dir / WHEELHOUSE
    return sorted(p for p in house.iterdir() if p.is_file()) if house.is_dir() else []


def stale(last_used: Mapping[str, float], in_use: Iterable[str], now: float, keep: float) -> list[str]:
    """The environments to remove: not used by any topology, and last used more than ``keep`` s ago."""
    busy = set(in_use)
    return sorted(k for k, at in last_used.items() if k not in busy and now - at >= keep)


class Environments:
    """The virtual environments under ``root`` (``<supervisor.local_dir>/envs``).

    ``run`` runs pip (``subprocess.run``'s signature; passed in so tests can count builds);
    ``timeout`` bounds one build.
    """

    def __init__(self, root: Path, timeout: float = 900.0,
                 run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run):
        self.root = Path(root)
        self.timeout = timeout
        self._run = run

    def path(self, key: str) -> Path:
        return self.root / key

    def python(self, key: str) -> Path:
        return self.path(key) / "bin" / "python"

    def ready(self, key: str) -> bool:
        return (self.path(key) / READY).is_file()

    def build(self, key: str, code_dir: Path) -> Path:
        """The environment ``key`` for the package in ``code_dir``, built unless it exists; returns
        its interpreter. Blocks for as long as pip takes (or another builder of the same key)."""
        with self._locked(key):
            if self.ready(key):
                return self.python(key)
            target = self.path(key)
            shutil.rmtree(target, ignore_errors=True)  # an interrupted build's remains
            try:
                self._create(target)
                self._install(key, code_dir)
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            (target / READY).touch()
            return self.python(key)

    def _create(self, target: Path) -> None:
        venv.EnvBuilder(with_pip=False, symlinks=True, clear=True).create(target)
        # the supervisor's packages (StreamGale, its dependencies, pip) after the environment's own
        parents = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        lines = [f"import site; site.addsitedir({p!r})" for p in parents]
        site_packages = _site_packages(target)
        site_packages.mkdir(parents=True, exist_ok=True)
        (site_packages / PTH).write_text("\n".join(lines) + "\n")

    def _install(self, key: str, code_dir: Path) -> None:
        command = [str(self.python(key)), "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
                   "--no-warn-script-location", "-r", str(code_dir / REQUIREMENTS)]
        if (code_dir / WHEELHOUSE).is_dir():
            command += ["--find-links", str(code_dir / WHEELHOUSE)]
        # pip's cache beside the environments: a daemon's home is often read-only (systemd's
        # ProtectHome, a container's read-only root); PIP_CACHE_DIR set on the node wins
        env = {"PIP_CACHE_DIR": str(self.root / ".pip-cache"), **os.environ}
        try:
            done = self._run(command, cwd=code_dir, capture_output=True, text=True, timeout=self.timeout,
                             stdin=subprocess.DEVNULL, env=env)
        except subprocess.TimeoutExpired:
            raise BuildError(f"pip install -r {REQUIREMENTS} took longer than {self.timeout:.0f} s "
                             "(supervisor.environment_build_timeout)") from None
        except OSError as e:
            raise BuildError(f"pip could not run: {e}") from None
        if done.returncode != 0:
            raise BuildError(f"pip install -r {REQUIREMENTS} failed (exit {done.returncode}):\n"
                             + _tail(done.stderr or done.stdout))

    @contextmanager
    def _locked(self, key: str, blocking: bool = True) -> Iterator[bool]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{key}.lock", "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- garbage collection -------------------------------------------------------------------

    def touch(self, keys: Iterable[str]) -> None:
        """Mark the environments ``keys`` as in use now."""
        for key in keys:
            try:
                os.utime(self.path(key) / READY)
            except OSError:
                pass  # not built (yet)

    def last_used(self) -> dict[str, float]:
        """Every environment here (complete or not) and when it was last used (its build for an
        incomplete one), in time.time()."""
        out: dict[str, float] = {}
        if not self.root.is_dir():
            return out
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_dir():
                continue
            marker = path / READY
            try:
                out[path.name] = (marker if marker.exists() else path).stat().st_mtime
            except OSError:
                continue
        return out

    def collect(self, in_use: Iterable[str], now: float, keep: float) -> list[str]:
        """Remove the environments no topology in ``in_use`` needs and none used within ``keep``
        seconds, skipping any being built; returns the keys removed."""
        removed = []
        for key in stale(self.last_used(), in_use, now, keep):
            with self._locked(key, blocking=False) as got:
                if not got:
                    continue  # being built
                shutil.rmtree(self.path(key), ignore_errors=True)  # its lock file stays: a builder may hold it open
                removed.append(key)
        return removed


def _site_packages(target: Path) -> Path:
    return target / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _tail(text: str) -> str:
    """pip's error: the last lines of its output, without its warnings."""
    lines = [line for line in text.strip().splitlines() if line.strip() and not line.startswith("WARNING:")]
    return "\n".join(lines[-ERROR_LINES:])

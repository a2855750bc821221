"""Submitting and managing topologies from Python, as Storm's ``StormSubmitter`` and ``NimbusClient``.

::

    import streamgale
    from word_count import topology

    topology_id = streamgale.submit(topology, config={"topology.workers": 2})
    with streamgale.Client() as client:
        client.deactivate("word-count")
        client.kill("word-count", wait=0)

:func:`submit` and :class:`Client` are the library behind ``streamgale submit``,
``list``, ``kill`` and the other cluster commands; the command line only parses
arguments and prints what these return.

Errors: a topology that cannot be loaded raises :class:`TopologyFileError`, an
invalid one :class:`streamgale.TopologyError`, a bad setting
:class:`streamgale.ConfigError`, a code directory that cannot be packed
:class:`PackageError`; whatever nimbus answers with an error raises a
:class:`NimbusError` subclass (:class:`NotFound`, :class:`AlreadyExists`,
:class:`InvalidTopology`, :class:`BadRequest`, :class:`NimbusUnavailable` when
no nimbus answered in time, ...). The messages name the thing at fault.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Concatenate, NotRequired, ParamSpec, TypedDict, TypeVar, Union

from .cluster.package import PackageError, digest, pack_directory
from .cluster.records import PACKAGE_ERRORS, START_ERRORS
from .config import Config, ConfigError, load_config, parse_override
from .runtime.assembly import check_before_submit
from .runtime.loader import TopologyFileError, load_topology
from .security import Security
from .topology import Topology, TopologyError, acker_count
from .wire.protocol import (
    AlreadyExists,
    BadRequest,
    InvalidTopology,
    NimbusError,
    NimbusUnavailable,
    NotFound,
    NotLeader,
)
from .wire.rpc import NimbusClient
from .wire.spec import TopologySpec

__all__ = [
    "AlreadyExists",
    "BadInput",
    "BadRequest",
    "Client",
    "ClusterSummary",
    "InvalidTopology",
    "LogChunk",
    "NimbusError",
    "NimbusUnavailable",
    "NotFound",
    "NotLeader",
    "Overrides",
    "PackageError",
    "Submission",
    "StatusChange",
    "SupervisorSummary",
    "TopologyDetails",
    "TopologyFileError",
    "TopologySummary",
    "WorkerLog",
    "nimbus_addresses",
    "prepare",
    "submit",
    "topology_from_file",
]

Overrides = Union[Mapping[str, Any], Iterable[str]]
"""Config overrides: ``{"topology.workers": 2}``, or ``-c``-style ``"key=value"`` strings (values read as YAML)."""

SUBMIT_TIMEOUT = 60.0  # seconds: a submit uploads the code package

_P = ParamSpec("_P")
_R = TypeVar("_R")


# -- what nimbus answers --------------------------------------------------------------------------


class TopologySummary(TypedDict):
    """One row of :meth:`Client.list_topologies`."""

    name: str
    id: str
    status: str  # ACTIVE, INACTIVE, REBALANCING, KILLED, or CORRUPT (its record cannot be read: kill removes it)
    workers: int  # worker processes assigned now
    workers_requested: NotRequired[int]  # topology.workers (more than ``workers`` when the cluster lacks slots)
    executors: int  # including the ackers
    tasks: int
    uptime: float  # seconds since submit
    # why its workers cannot start: a component's open() or prepare() raised within the last minute
    # (the traceback is among the component's errors); None when starting is not the problem
    failing: NotRequired[str | None]


class SupervisorSummary(TypedDict):
    id: str
    host: str
    slots: int
    used: int  # slots running a worker
    ports: list[int]
    log_port: int | None  # where its workers' logs are served (None: not served)
    cpu_count: int
    memory_mb: int
    uptime: float


class BadInput(TypedDict):
    """What one daemon refused since it started (docs/observability.md, "Bad input")."""

    daemon: str  # "nimbus" or "supervisor"
    id: str  # nimbus: its host:port; a supervisor: its id
    host: str
    rejected_requests: int  # on its API (nimbus) or log endpoint (supervisor): not valid messages
    refused_handshakes: int  # connections there that failed or broke off the ZeroMQ handshake
    denied_keys: int  # CURVE keys its authenticator refused, on any of its sockets (security on)
    malformed_messages: NotRequired[int]  # supervisors: malformed messages on the worker channel
    age_s: NotRequired[float]  # supervisors: seconds since they reported these


class ClusterSummary(TypedDict):
    """What :meth:`Client.cluster` returns."""

    leader: str | None  # "host:port" of the leading nimbus
    nimbuses: list[str]
    supervisors: list[SupervisorSummary]
    topologies: int
    # The answering nimbus, then the supervisors that reported to it (all of them, to the leader);
    # absent from a nimbus older than the field.
    bad_input: NotRequired[list[BadInput]]


class TopologyDetails(TypedDict):
    """What :meth:`Client.info` returns (the dicts of ``streamgale.cluster.records``)."""

    topology: dict[str, Any]  # the TopologyRecord: id, name, status, spec, config, entry, workers, ...
    assignment: dict[str, Any] | None  # slots -> {supervisor_id, host, port, executors}; None: not scheduled yet
    errors: dict[str, list[dict[str, Any]]]  # component -> its recent errors, oldest first


class TopologyConfiguration(TypedDict):
    """:meth:`Client.topology_config`: every key with the value a worker of the topology runs with
    (secrets ``<redacted>``), and the keys the topology's own config set."""

    config: dict[str, Any]
    topology_keys: list[str]


class StatusChange(TypedDict, total=False):
    """What :meth:`Client.activate` and :meth:`Client.deactivate` return."""

    status: str  # ACTIVE or INACTIVE: the status asked for
    after_rebalance: bool  # True: the topology is rebalancing; the status applies when that ends
    applies_in: float  # then: the seconds until it ends, at most


class LogChunk(TypedDict):
    """A piece of a worker's log, from :meth:`Client.read_log`."""

    data: bytes
    offset: int  # where the next read should start
    size: int  # the log's size now


@dataclass(frozen=True)
class WorkerLog:
    """Where one worker's log is read: through the log endpoint of its supervisor."""

    worker: str  # "host:port" of the worker
    topology_id: str
    port: int
    endpoint: str | None  # the supervisor's "host:log_port"; None when its supervisor is not reachable


def worker_log_locations(info: Mapping[str, Any], supervisors: Iterable[Mapping[str, Any]],
                         component: str | None = None) -> list[WorkerLog]:
    """Where to read the log of each worker of the topology whose :meth:`Client.info` is ``info``
    (those running ``component``, if given), given the supervisors of :meth:`Client.cluster`. Pure."""
    by_id = {s["id"]: s for s in supervisors}
    logs = []
    for slot in ((info.get("assignment") or {}).get("slots") or {}).values():
        if component and component not in {c for c, _ in slot["executors"]}:
            continue
        sup = by_id.get(slot["supervisor_id"])
        endpoint = f"{sup['host']}:{sup['log_port']}" if sup is not None and sup.get("log_port") else None
        logs.append(WorkerLog(f"{slot['host']}:{slot['port']}", info["topology"]["id"], slot["port"], endpoint))
    return logs


TAIL_MAX_BYTES = 8 << 20  # the most of a log read back to find its last lines


def tail_lines(read: Callable[[int, int], Mapping[str, Any]], lines: int) -> tuple[int, list[str]]:
    """The last ``lines`` lines of a log (fewer if it has fewer, or they are not within
    TAIL_MAX_BYTES of its end) and the offset its end is at; ``read(offset, max_bytes)`` returns a
    :class:`LogChunk` (:meth:`Client.read_log` of one log). Blocks for as many reads as it takes."""
    size = 4096
    while True:
        chunk = read(-1, size)
        start = chunk["offset"] - len(chunk["data"])
        text = chunk["data"].decode(errors="replace").splitlines()
        if start > 0:
            text = text[1:]  # the first may be cut: start at a whole line
        if len(text) >= lines or start == 0 or size >= TAIL_MAX_BYTES:
            return chunk["offset"], text[-lines:] if lines else []
        size *= 4


# -- preparing a submission (pure but for reading files) ----------------------------------------


@dataclass(frozen=True)
class Submission:
    """Everything a submit sends nimbus; made by :func:`prepare`, sent by :meth:`Client.upload`."""

    name: str  # the name it runs under
    spec: TopologySpec  # Topology.spec() with the ackers, named ``name``
    config: dict[str, Any]  # the topology's own config with the overrides on top (nimbus keeps this layer)
    entry: str  # the topology file inside the code package, which workers load
    code: bytes = field(repr=False)  # the code package: a tar.gz of the code directory
    code_digest: str
    requirements: bool = False  # it carries a requirements.txt: workers run in an environment of their own


REQUIREMENTS = "requirements.txt"  # in a code package's top level: see docs/deployment.md


class NotStarted(RuntimeError):
    """A submitted topology cannot start: a supervisor refused its code package or could not build
    its Python environment (``refused``: the message holds the supervisor's report, pip's error),
    or a component's open() or prepare() raised (the traceback is among its errors)."""

    def __init__(self, message: str, refused: bool):
        super().__init__(message)
        self.refused = refused


def start_progress(info: Mapping[str, Any], stats: Mapping[str, Any]) -> tuple[str, str]:
    """How a submitted topology's start goes, from its ``info`` and ``stats`` (pure):
    ("running", "") once as many workers report as its assignment has slots; else
    ("refused", the latest refusal of its code package), ("failing", the latest component
    that could not start), or ("starting", what it waits for)."""
    slots = len((info.get("assignment") or {}).get("slots") or {})
    workers = len(stats.get("workers") or [])
    if slots and workers >= slots:
        return "running", ""
    errors = info.get("errors") or {}
    for state, component in (("refused", PACKAGE_ERRORS), ("failing", START_ERRORS)):
        if errors.get(component):
            return state, str(max(errors[component], key=lambda e: e.get("time", 0))["message"])
    return "starting", (f"{workers} of {slots} workers running" if slots else "waiting for an assignment")


def nimbus_addresses(nimbus: str | Sequence[str] | None, config: Mapping[str, Any]) -> list[str]:
    """The nimbus addresses to try: ``nimbus`` ("host:port", several separated by commas, or a
    list of them), else ``nimbus.host:nimbus.port`` from ``config``. A host given without a port
    gets ``nimbus.port`` of ``config``; raises ValueError naming the address when its port is
    not a number from 1 to 65535 or it has no host."""
    if nimbus:
        parts = nimbus.split(",") if isinstance(nimbus, str) else nimbus
        return [_with_port(a.strip(), config["nimbus.port"]) for a in parts if a.strip()]
    return [f"{config['nimbus.host']}:{config['nimbus.port']}"]


def _with_port(address: str, default_port: int) -> str:
    """``address`` as "host:port": ``default_port`` when it names none ("nimbus1", "[::1]")."""
    text = address[len("tcp://"):] if address.startswith("tcp://") else address
    host, sep, port = text.rpartition(":")
    if not sep or text.endswith("]"):  # no port, or an IPv6 literal in brackets without one
        host, port = text, str(default_port)
    if not host:
        raise ValueError(f"nimbus address {address!r} has no host; write HOST or HOST:PORT, e.g. 'nimbus1:6627'")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"nimbus address {address!r}: {port!r} is not a port number (1-65535); "
                         f"write HOST or HOST:PORT, e.g. 'nimbus1:6627'")
    return f"{host}:{int(port)}"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """The hint for a name that is not one of ``choices``: "; did you mean 'x'?" (or "'x' or
    'y'", at most three) when some are close to ``word``, else the empty string."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=3)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _override_layer(overrides: Overrides | None) -> tuple[dict[str, Any], str]:
    """The overrides as a checked key -> value layer, and how error messages name them. A bad
    key or value raises ConfigError naming the overrides (the -c option) and the key, never the
    topology file: the overrides are checked before the file is loaded."""
    if overrides is None:
        return {}, "config overrides"
    if isinstance(overrides, (str, bytes)):
        raise TypeError(f"config overrides must be a mapping or a list of 'key=value' strings, got {overrides!r}")
    if isinstance(overrides, Mapping):
        layer, source = dict(overrides), "config overrides"
    else:
        layer, source = dict(parse_override(o) for o in overrides), "-c option"
    Config().merged(layer, source)
    return layer, source


def topology_from_file(path: str | os.PathLike[str], *, base: Config,
                       config: Overrides | None = None) -> tuple[Topology, Config]:
    """Load and validate the topology file ``path``, as ``streamgale local`` and ``submit`` do.

    Returns the topology and the config it runs with: ``base`` (defaults < config
    file) < the topology's own config < ``config`` overrides. ``build_topology(config)``
    is called with ``base`` and the overrides. Raises :class:`TopologyFileError` when
    the file is missing or cannot be imported, or defines no topology;
    :class:`TopologyError` / :class:`ConfigError` prefixed "invalid topology in PATH:"
    when the topology or a setting of its own is invalid; :class:`ConfigError` naming the
    -c option and the key, before the file is loaded, when an override is. Imports the
    file (its directory goes first on ``sys.path``), so it runs the module's top-level
    code in this process.
    """
    layer, source = _override_layer(config)
    with_overrides = base.merged(layer, source)
    try:
        topology = load_topology(Path(path), with_overrides)
        return topology, with_overrides.with_topology_config(topology.config).merged(layer, source)
    except TopologyError as e:
        raise TopologyError(f"invalid topology in {path}: {e}") from e
    except ConfigError as e:
        raise ConfigError(f"invalid topology in {path}: {e}") from e


def prepare(topology: Topology | str | os.PathLike[str], *, name: str | None = None,
            config: Overrides | None = None, base: Config | None = None,
            code_dir: str | os.PathLike[str] | None = None) -> Submission:
    """Validate ``topology`` and pack its code: everything :meth:`Client.upload` sends.

    ``topology`` is a path to a topology file, or a :class:`Topology` object. Workers
    rebuild the topology from a file in the code package, so an object must be the
    module-level ``topology`` of a module imported from a ``.py`` file, or equal what a
    module of its components defines (its ``build_topology(config)``, else its
    ``topology``); that module's file is the entry. The code package is ``code_dir``
    (default: the entry's directory), packed without ``__pycache__``, ``.git`` or
    ``.venv``; workers put the entry's directory first on ``sys.path``. ``base`` is the config below the topology's
    own (default: :func:`streamgale.load_config`); ``config`` overrides sit on top.
    ``name`` (default: the topology's) is the name it runs under. Raises
    :class:`TopologyFileError`, :class:`TopologyError`, :class:`ConfigError` or
    :class:`PackageError`; talks to no nimbus.
    """
    base = load_config() if base is None else base
    if config is not None and not isinstance(config, (Mapping, str, bytes)):
        config = tuple(config)  # read twice below
    layer, source = _override_layer(config)
    # The overrides become part of the topology's own config (nimbus keeps that layer), so
    # they may not set cluster settings either; nimbus would refuse them.
    Config().with_topology_config(layer, source)
    if isinstance(topology, Topology):
        topology.validate()
        with_overrides = base.merged(layer, source)
        run_config = with_overrides.with_topology_config(topology.config).merged(layer, source)
        file = _defining_file(topology, with_overrides)
    else:
        file = Path(topology).resolve()
        topology, run_config = topology_from_file(topology, base=base, config=config)
    topology = topology.with_checkpointing(run_config).with_ackers(acker_count(run_config),
                                                               run_config["topology.message_timeout"])
    check_before_submit(topology, run_config, str(file.parent))
    directory = file.parent if code_dir is None else Path(code_dir).resolve()
    try:
        entry = file.relative_to(directory).as_posix()
    except ValueError:
        raise PackageError(f"the topology file {file} is not inside the code directory {directory}; "
                           f"pass a code_dir that contains it") from None
    code = pack_directory(directory)
    name = name or topology.name
    spec = topology.spec().named(name)
    return Submission(name, spec, {**topology.config, **layer}, entry, code, digest(code),
                      (directory / REQUIREMENTS).is_file())


def _defining_file(topology: Topology, config: Config) -> Path:
    """The file workers will rebuild ``topology`` from: the module that holds it as its
    ``topology``, else a module of its components whose ``topology`` (or whose
    ``build_topology(config)``) has the same spec."""
    for module in list(sys.modules.values()):
        file = _source(module)
        if file is not None and getattr(module, "__dict__", {}).get("topology") is topology:
            return file
    wanted = topology.with_ackers(0).spec()
    modules = dict.fromkeys(c.cls.__module__ for c in topology.components.values()
                            if c.kind != "acker" and c.cls.__module__.split(".")[0] != "streamgale")
    differing = []
    for module_name in modules:
        defining = sys.modules.get(module_name)
        source = _source(defining)
        candidate = _module_topology(defining, source, config) if source is not None else None
        if candidate is None or source is None:
            continue
        if candidate.with_ackers(0).spec() == wanted:
            return source
        differing.append(str(source))
    if differing:
        raise TopologyError(
            f"topology '{topology.name}' differs from the one {' and '.join(differing)} defines, which is what "
            f"workers run; submit that file, or the topology it defines")
    files = ", ".join(str(_source(sys.modules.get(m)) or m) for m in modules)
    searched = (f"none of its components' modules ({files}) defines 'topology' or build_topology(config)"
                if modules else "its components are all StreamGale's own")
    raise TopologyError(
        f"cannot tell which file defines topology '{topology.name}': no module holds it as its 'topology', and "
        f"{searched}; workers rebuild the topology from a file, so define it at module level in one (or submit "
        f"the file's path)")


def _module_topology(module: ModuleType | None, file: Path | None, config: Config) -> Topology | None:
    """What ``module`` defines for workers to run: its ``build_topology(config)``, else its ``topology``."""
    builder = getattr(module, "build_topology", None)
    if callable(builder):
        try:
            built = builder(config)
        except TopologyError:
            raise
        except Exception as exc:
            raise TopologyFileError(f"build_topology in {file} raised {type(exc).__name__}: {exc}") from exc
        return built if isinstance(built, Topology) else None
    defined = getattr(module, "topology", None)
    return defined if isinstance(defined, Topology) else None


def _source(module: ModuleType | None) -> Path | None:
    """The ``.py`` file a module was imported from, if any."""
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) and file.endswith(".py") else None


# -- the client -----------------------------------------------------------------------------------


def _suggests_topologies(
        method: Callable[Concatenate[Client, str, _P], _R]) -> Callable[Concatenate[Client, str, _P], _R]:
    """A :class:`Client` call on topology ``name``: when nimbus knows no topology of that name,
    its :class:`NotFound` names the running topologies that are close ("did you mean 'wc'?")."""
    @functools.wraps(method)
    def call(self: Client, name: str, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(self, name, *args, **kwargs)
        except NotFound as e:
            raise self._unknown_topology(name, e) from None
    return call


class Client:
    """A connection to nimbus (and, for logs, to supervisors), as Storm's ``NimbusClient``.

    ``nimbus`` is "host:port", several separated by commas, or a list of them
    (default: ``nimbus.host:nimbus.port`` of ``config``); a call tries the nimbus that
    answered last, then the others, and follows a standby's pointer to the leader.
    ``config`` is the client's configuration (default: :func:`streamgale.load_config`,
    i.e. ``$STREAMGALE_CONF`` or ``./config.yaml``); submits layer topologies over it.

    Every call blocks until nimbus answers, up to ``timeout`` seconds per nimbus tried
    (an upload: a ping within ``timeout``, then its own longer ``timeout``), and raises
    :class:`NimbusUnavailable` if none did; nimbus's refusals raise the other
    :class:`NimbusError` subclasses (a :class:`NotFound` for a topology name no topology has
    names the running ones that are close). A nimbus address without a port gets
    ``nimbus.port`` of ``config``; one with a bad port raises ValueError at once. Not
    thread-safe: use a Client from the thread that made it (give each thread its own).
    ``close()`` (or ``with``) releases its sockets; a closed Client reconnects if called again.
    """

    def __init__(self, nimbus: str | Sequence[str] | None = None, *, config: Config | None = None,
                 timeout: float = 5.0):
        self.config = load_config() if config is None else config
        self.timeout = timeout
        # security.* of the client's config: its key, and the cluster key it checks (docs/security.md)
        self.security = Security.from_config(self.config)
        self._nimbus = NimbusClient(nimbus_addresses(nimbus, self.config), timeout=timeout, security=self.security)
        self._supervisors: dict[str, NimbusClient] = {}

    @property
    def addresses(self) -> list[str]:
        """The nimbus addresses this client tries, normalised to "host:port"."""
        return list(self._nimbus.addresses)

    # -- submitting --------------------------------------------------------------------------

    def submit(self, topology: Topology | str | os.PathLike[str], *, name: str | None = None,
               config: Overrides | None = None, code_dir: str | os.PathLike[str] | None = None,
               timeout: float = SUBMIT_TIMEOUT) -> str:
        """Validate, pack and upload ``topology`` (see :func:`prepare`) and start it; returns its id.

        Its config is this client's config < the topology's own < ``config``.
        Raises what :func:`prepare` raises, before anything is sent, then
        :class:`AlreadyExists` if a topology of that name runs, :class:`InvalidTopology`
        if nimbus rejects it.
        """
        return self.upload(prepare(topology, name=name, config=config, base=self.config, code_dir=code_dir),
                           timeout=timeout)

    def upload(self, submission: Submission, *, timeout: float = SUBMIT_TIMEOUT) -> str:
        """Send a prepared :class:`Submission` and start it; returns the topology id nimbus gave it.

        A nimbus must first answer a ping within the Client's own timeout, so an unreachable one
        raises :class:`NimbusUnavailable` as fast as any other call does; only the upload, which
        carries the code package, may then take up to this call's ``timeout`` seconds."""
        return self._sending(timeout, lambda: self._nimbus.submit(
            submission.name, submission.spec, submission.config, submission.entry, submission.code,
            submission.code_digest))

    def _sending(self, timeout: float, send: Callable[[], _R]) -> _R:
        """``send()`` (an upload) with ``timeout``, once a nimbus answered a ping within this
        Client's own timeout: an unreachable nimbus fails as fast for an upload as for a read."""
        self._nimbus.ping()
        self._nimbus.timeout = timeout
        try:
            return send()
        finally:
            self._nimbus.timeout = self.timeout

    def wait_running(self, name: str, timeout: float, interval: float = 0.5,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> None:
        """Block until every worker of topology ``name`` runs (its supervisors fetched its code
        and built its Python environment, its components opened and prepared), polling every
        ``interval`` s. Raises :class:`NotStarted` as soon as a supervisor reports that it
        refused the code package or could not build the environment (the message holds pip's
        error), or that a component's open() or prepare() raised; TimeoutError after ``timeout``
        s naming what it still waits for."""
        deadline = clock() + timeout
        while True:
            state, detail = start_progress(self._nimbus.topology_info(name), self._nimbus.topology_stats(name))
            if state == "running":
                return
            if state in ("refused", "failing"):
                raise NotStarted(detail, refused=state == "refused")
            if clock() >= deadline:
                raise TimeoutError(f"topology '{name}' has not started after {timeout:.0f} s: {detail}")
            sleep(interval)

    # -- reading -----------------------------------------------------------------------------

    def list_topologies(self) -> list[TopologySummary]:
        """Every topology nimbus knows, sorted by name (empty list: none)."""
        return self._nimbus.list_topologies()  # type: ignore[return-value]

    @_suggests_topologies
    def info(self, name: str) -> TopologyDetails:
        """Topology ``name``'s record, assignment and recent errors; :class:`NotFound` if none runs."""
        return self._nimbus.topology_info(name)  # type: ignore[return-value]

    def cluster(self) -> ClusterSummary:
        """The nimbus leader, the nimbuses, the supervisors with their slots, the topology count."""
        return self._nimbus.cluster_info()  # type: ignore[return-value]

    @_suggests_topologies
    def stats(self, name: str) -> dict[str, Any]:
        """Topology ``name``'s metrics, as ``streamgale stats --json`` prints them.

        ``{"topology": {id, name, status, workers, uptime_s}, "components": {name: {kind,
        tasks, queue, windows: {"600" | "10800" | "86400" | "all": {emitted, transferred,
        executed, acked, failed, execute_latency_ms, capacity, complete_latency_ms, ...}}}},
        "workers": [{host, port, pid, cpu_percent, rss_mb, uptime_s}], "errors": {component:
        [error, ...]}}``; see docs/observability.md. Workers report every 2 s, so a new
        topology has no components here for its first seconds. Two calls to nimbus.
        """
        stats = self._nimbus.topology_stats(name)
        return {**stats, "errors": self._nimbus.topology_info(name).get("errors", {})}

    # -- changing ----------------------------------------------------------------------------

    @_suggests_topologies
    def kill(self, name: str, wait: float | None = None) -> None:
        """Kill topology ``name``: its spouts are deactivated at once, then after ``wait`` seconds
        (default: its ``topology.message_timeout``, at most 24 h) its workers and state are removed.
        Returns when nimbus has accepted, before the wait; :class:`NotFound` if no such topology
        runs. A topology whose stored record cannot be read (listed as CORRUPT) is removed at
        once; ``name`` may then also be its id."""
        self._nimbus.kill(name, wait)

    @_suggests_topologies
    def activate(self, name: str) -> StatusChange:
        """Resume calling ``next_tuple`` on ``name``'s spouts. For a topology being rebalanced
        this applies when the rebalance ends: see :class:`StatusChange`."""
        return self._nimbus.activate(name)  # type: ignore[return-value]

    @_suggests_topologies
    def deactivate(self, name: str) -> StatusChange:
        """Stop calling ``next_tuple`` on ``name``'s spouts; bolts go on processing. For a
        topology being rebalanced this applies when the rebalance ends: see :class:`StatusChange`."""
        return self._nimbus.deactivate(name)  # type: ignore[return-value]

    @_suggests_topologies
    def rebalance(self, name: str, wait: float | None = None, workers: int | None = None,
                  parallelism: Mapping[str, int] | None = None) -> None:
        """Reschedule ``name`` onto ``workers`` worker processes and with ``parallelism`` (component ->
        executors, up to its task count), after ``wait`` seconds (default: its message timeout)
        with its spouts paused; what is not given stays as it is. Returns when nimbus has
        accepted; :class:`BadRequest` for an unknown component, a bad count, or a topology
        that is already rebalancing or being killed."""
        self._nimbus.rebalance(name, wait, workers, dict(parallelism or {}))

    @_suggests_topologies
    def set_log_level(self, name: str, logger: str, level: str | None = None, *, timeout: float | None = None,
                      reset: bool = False) -> None:
        """Set ``logger``'s level ("DEBUG" ... "CRITICAL") in every worker of ``name``, live (Storm's
        ``set_log_level -l``); ``logger`` "root" or "" is the root logger. With ``timeout`` (seconds
        > 0) the level reverts after it. ``reset=True`` (Storm's ``-r``; no level) puts the logger
        back to the level the workers had before it was first set: :class:`BadRequest` if no
        level of it is set. A worker started later applies what is set at that time."""
        if reset == (level is not None):
            raise ValueError("set_log_level takes a level or reset=True: exactly one of them")
        self._nimbus.set_log_level(name, "" if logger in ("", "root") else logger, level or "", timeout, reset)

    @_suggests_topologies
    def topology_config(self, name: str) -> TopologyConfiguration:
        """The configuration ``name``'s workers run with (Storm's ``getTopologyConf``): the cluster's
        config as nimbus reads it, under the topology's own; secret values redacted.
        ``topology_keys`` are the keys the topology set itself."""
        return self._nimbus.topology_config(name)  # type: ignore[return-value]

    # -- models ------------------------------------------------------------------------------

    @_suggests_topologies
    def update_model(self, name: str, component: str, path: str | os.PathLike[str], *,
                     timeout: float = SUBMIT_TIMEOUT) -> int:
        """Upload the model file at ``path`` to model bolt ``component`` of running topology
        ``name``; returns its version (the shipped model is version 1). Its workers load it
        beside the model they serve and switch to it between batches; one that cannot load it,
        or finds it does not fit the bolt, refuses it (an error of the component) and keeps
        serving the old. An ``.onnx`` file is loaded here first, so a corrupt one is refused
        before it is uploaded: raises :class:`streamgale.inference.ModelError`. As
        :meth:`upload`, a nimbus must answer a ping first; the upload may take ``timeout`` s."""
        from .inference.models import OnnxModel, read_model_file

        data = read_model_file(path)
        if str(path).endswith(".onnx"):
            OnnxModel(str(path), data)  # raises ModelError, naming what is wrong with the file
        return self._sending(timeout, lambda: self._nimbus.update_model(name, component, data,
                                                                        hashlib.sha256(data).hexdigest()))

    def model_versions(self, name: str, component: str) -> dict[int, int | None]:
        """Task -> the model version it serves, as its last metrics say (None: not reported yet)."""
        stats = self.stats(name)
        tasks = stats["components"].get(component, {}).get("tasks", [])
        return {int(t): stats["tasks"].get(str(t), {}).get("metrics", {}).get("model_version") for t in tasks}

    # -- logs --------------------------------------------------------------------------------

    def worker_logs(self, name: str, component: str | None = None) -> list[WorkerLog]:
        """Where to read the log of each of ``name``'s workers (those running ``component``, if
        given); a worker whose supervisor serves no log endpoint comes with ``endpoint`` None."""
        return worker_log_locations(self.info(name), self.cluster()["supervisors"], component)

    def read_log(self, log: WorkerLog, offset: int = -1, max_bytes: int = 65536) -> LogChunk:
        """Up to ``max_bytes`` of ``log`` from ``offset`` (-1: its last ``max_bytes``), read from its
        supervisor; :class:`NimbusUnavailable` if that supervisor does not answer in time."""
        if log.endpoint is None:
            raise NimbusUnavailable(f"no log access to {log.worker}: its supervisor is not reachable")
        client = self._supervisors.get(log.endpoint)
        if client is None:
            client = self._supervisors[log.endpoint] = NimbusClient(log.endpoint, timeout=self.timeout,
                                                                    security=self.security)
        return client.read_log(log.topology_id, log.port, offset, max_bytes)  # type: ignore[return-value]

    def _unknown_topology(self, name: str, error: NotFound) -> NotFound:
        """``error``, or when no topology is named ``name`` and some running ones are close, a
        NotFound that names them."""
        try:
            rows = self._nimbus.list_topologies()
        except NimbusError:
            return error
        if any(name in (row.get("name"), row.get("id")) for row in rows):
            return error  # the topology is there: what is missing is something inside it
        hint = did_you_mean(name, (str(row.get("name")) for row in rows))
        return NotFound(f"no topology named '{name}' is running{hint}") if hint else error

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets to nimbus and supervisors (idempotent)."""
        self._nimbus.close()
        for client in self._supervisors.values():
            client.close()
        self._supervisors.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def submit(topology: Topology | str | os.PathLike[str], *, name: str | None = None,
           config: Overrides | None = None, nimbus: str | Sequence[str] | None = None,
           config_file: str | os.PathLike[str] | None = None, code_dir: str | os.PathLike[str] | None = None,
           timeout: float = SUBMIT_TIMEOUT) -> str:
    """Submit ``topology`` to the cluster and return its topology id, as ``streamgale submit`` does.

    ``topology`` is a :class:`Topology` object or the path of a topology file (see
    :func:`prepare`); its config is built-in defaults < ``config_file`` (default:
    ``$STREAMGALE_CONF``, else ``./config.yaml``) < the topology's own config <
    ``config``. ``nimbus`` defaults to ``nimbus.host:nimbus.port`` of that config.
    Everything is validated and packed before nimbus is called; a nimbus must answer within
    5 s (raises :class:`NimbusUnavailable` if none does), then the upload blocks up to
    ``timeout`` seconds per nimbus tried. Raises :class:`TopologyFileError`,
    :class:`TopologyError`, :class:`ConfigError`, :class:`PackageError`, or the
    :class:`NimbusError` subclass nimbus answered with (:class:`AlreadyExists`: a
    topology of that name runs). Call from any thread; it uses a Client of its own.
    """
    base = load_config(config_file)
    submission = prepare(topology, name=name, config=config, base=base, code_dir=code_dir)
    with Client(nimbus, config=base) as client:
        return client.upload(submission, timeout=timeout)

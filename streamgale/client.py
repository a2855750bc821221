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

import hashlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, TypedDict, Union

from .cluster.package import PackageError, digest, pack_directory
from .config import Config, ConfigError, load_config, parse_override
from .runtime.assembly import check_before_submit
from .runtime.loader import TopologyFileError, load_topology
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


# -- what nimbus answers --------------------------------------------------------------------------


class TopologySummary(TypedDict):
    """One row of :meth:`Client.list_topologies`."""

    name: str
    id: str
    status: str  # ACTIVE, INACTIVE, REBALANCING or KILLED
    workers: int  # worker processes assigned now
    executors: int  # including the ackers
    tasks: int
    uptime: float  # seconds since submit


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


class ClusterSummary(TypedDict):
    """What :meth:`Client.cluster` returns."""

    leader: str | None  # "host:port" of the leading nimbus
    nimbuses: list[str]
    supervisors: list[SupervisorSummary]
    topologies: int


class TopologyDetails(TypedDict):
    """What :meth:`Client.info` returns (the dicts of ``streamgale.cluster.records``)."""

    topology: dict[str, Any]  # the TopologyRecord: id, name, status, spec, config, entry, workers, ...
    assignment: dict[str, Any] | None  # slots -> {supervisor_id, host, port, executors}; None: not scheduled yet
    errors: dict[str, list[dict[str, Any]]]  # component -> its recent errors, oldest first


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


def nimbus_addresses(nimbus: str | Sequence[str] | None, config: Mapping[str, Any]) -> list[str]:
    """The nimbus addresses to try: ``nimbus`` ("host:port", several separated by commas, or a
    list of them), else ``nimbus.host:nimbus.port`` from ``config``. Not checked here; a
    :class:`Client` raises ValueError for one that is not HOST:PORT."""
    if nimbus:
        parts = nimbus.split(",") if isinstance(nimbus, str) else nimbus
        return [a.strip() for a in parts if a.strip()]
    return [f"{config['nimbus.host']}:{config['nimbus.port']}"]


def _override_layer(overrides: Overrides | None) -> tuple[dict[str, Any], str]:
    """The overrides as a key -> value layer, and how error messages name them."""
    if overrides is None:
        return {}, "config overrides"
    if isinstance(overrides, Mapping):
        return dict(overrides), "config overrides"
    if isinstance(overrides, (str, bytes)):
        raise TypeError(f"config overrides must be a mapping or a list of 'key=value' strings, got {overrides!r}")
    return dict(parse_override(o) for o in overrides), "-c option"


def topology_from_file(path: str | os.PathLike[str], *, base: Config,
                       config: Overrides | None = None) -> tuple[Topology, Config]:
    """Load and validate the topology file ``path``, as ``streamgale local`` and ``submit`` do.

    Returns the topology and the config it runs with: ``base`` (defaults < config
    file) < the topology's own config < ``config`` overrides. ``build_topology(config)``
    is called with ``base`` and the overrides. Raises :class:`TopologyFileError` when
    the file is missing or cannot be imported, or defines no topology;
    :class:`TopologyError` / :class:`ConfigError` prefixed "invalid topology in PATH:"
    when the topology or a setting is invalid. Imports the file (its directory goes
    first on ``sys.path``), so it runs the module's top-level code in this process.
    """
    try:
        layer, source = _override_layer(config)
        with_overrides = base.merged(layer, source)
        topology = load_topology(Path(path), with_overrides)
        return topology, with_overrides.merged(topology.config, "topology config").merged(layer, source)
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
    if isinstance(topology, Topology):
        topology.validate()
        layer, source = _override_layer(config)
        with_overrides = base.merged(layer, source)
        run_config = with_overrides.merged(topology.config, "topology config").merged(layer, source)
        file = _defining_file(topology, with_overrides)
    else:
        file = Path(topology).resolve()
        topology, run_config = topology_from_file(topology, base=base, config=config)
        layer, _ = _override_layer(config)  # read without error by topology_from_file
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
    return Submission(name, spec, {**topology.config, **layer}, entry, code, digest(code))


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


class Client:
    """A connection to nimbus (and, for logs, to supervisors), as Storm's ``NimbusClient``.

    ``nimbus`` is "host:port", several separated by commas, or a list of them
    (default: ``nimbus.host:nimbus.port`` of ``config``); a call tries the nimbus that
    answered last, then the others, and follows a standby's pointer to the leader.
    ``config`` is the client's configuration (default: :func:`streamgale.load_config`,
    i.e. ``$STREAMGALE_CONF`` or ``./config.yaml``); submits layer topologies over it.

    Every call blocks until nimbus answers, up to ``timeout`` seconds per nimbus tried
    (uploads: their own ``timeout``), and raises :class:`NimbusUnavailable` if none did;
    nimbus's refusals raise the other :class:`NimbusError` subclasses. Raises ValueError
    at once for an address that is not HOST:PORT. Not thread-safe: use a Client from
    the thread that made it (give each thread its own). ``close()`` (or ``with``)
    releases its sockets; a closed Client reconnects if called again.
    """

    def __init__(self, nimbus: str | Sequence[str] | None = None, *, config: Config | None = None,
                 timeout: float = 5.0):
        self.config = load_config() if config is None else config
        self.timeout = timeout
        self._nimbus = NimbusClient(nimbus_addresses(nimbus, self.config), timeout=timeout)
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
        """Send a prepared :class:`Submission` and start it; returns the topology id nimbus gave it."""
        self._nimbus.timeout = timeout
        try:
            return self._nimbus.submit(submission.name, submission.spec, submission.config, submission.entry,
                                       submission.code, submission.code_digest)
        finally:
            self._nimbus.timeout = self.timeout

    # -- reading -----------------------------------------------------------------------------

    def list_topologies(self) -> list[TopologySummary]:
        """Every topology nimbus knows, sorted by name (empty list: none)."""
        return self._nimbus.list_topologies()  # type: ignore[return-value]

    def info(self, name: str) -> TopologyDetails:
        """Topology ``name``'s record, assignment and recent errors; :class:`NotFound` if none runs."""
        return self._nimbus.topology_info(name)  # type: ignore[return-value]

    def cluster(self) -> ClusterSummary:
        """The nimbus leader, the nimbuses, the supervisors with their slots, the topology count."""
        return self._nimbus.cluster_info()  # type: ignore[return-value]

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

    def kill(self, name: str, wait: float | None = None) -> None:
        """Kill topology ``name``: its spouts are deactivated at once, then after ``wait`` seconds
        (default: its ``topology.message_timeout``) its workers and state are removed. Returns
        when nimbus has accepted, before the wait; :class:`NotFound` if no such topology runs."""
        self._nimbus.kill(name, wait)

    def activate(self, name: str) -> None:
        """Resume calling ``next_tuple`` on ``name``'s spouts."""
        self._nimbus.activate(name)

    def deactivate(self, name: str) -> None:
        """Stop calling ``next_tuple`` on ``name``'s spouts; bolts go on processing."""
        self._nimbus.deactivate(name)

    def rebalance(self, name: str, wait: float | None = None, workers: int | None = None,
                  parallelism: Mapping[str, int] | None = None) -> None:
        """Reschedule ``name`` onto ``workers`` worker processes and with ``parallelism`` (component ->
        executors, up to its task count), after ``wait`` seconds (default: its message timeout)
        with its spouts paused; what is not given stays as it is. Returns when nimbus has
        accepted; :class:`BadRequest` for an unknown component, a bad count, or a topology
        that is already rebalancing or being killed."""
        self._nimbus.rebalance(name, wait, workers, dict(parallelism or {}))

    def set_log_level(self, name: str, logger: str, level: str) -> None:
        """Set ``logger``'s level ("DEBUG" ... "CRITICAL") in every worker of ``name``, live;
        ``logger`` "root" or "" is the root logger."""
        self._nimbus.set_log_level(name, "" if logger in ("", "root") else logger, level)

    # -- models ------------------------------------------------------------------------------

    def update_model(self, name: str, component: str, path: str | os.PathLike[str]) -> int:
        """Upload the model file at ``path`` to model bolt ``component`` of running topology
        ``name``; returns its version (the shipped model is version 1). Its workers load it
        beside the model they serve and switch to it between batches; one that cannot load it,
        or finds it does not fit the bolt, refuses it (an error of the component) and keeps
        serving the old. An ``.onnx`` file is loaded here first, so a corrupt one is refused
        before it is uploaded: raises :class:`streamgale.inference.ModelError`."""
        from .inference.models import OnnxModel, read_model_file

        data = read_model_file(path)
        if str(path).endswith(".onnx"):
            OnnxModel(str(path), data)  # raises ModelError, naming what is wrong with the file
        return self._nimbus.update_model(name, component, data, hashlib.sha256(data).hexdigest())

    def model_versions(self, name: str, component: str) -> dict[int, int | None]:
        """Task -> the model version it serves, as its last metrics say (None: not reported yet)."""
        stats = self.stats(name)
        tasks = stats["components"].get(component, {}).get("tasks", [])
        return {int(t): stats["tasks"].get(str(t), {}).get("metrics", {}).get("model_version") for t in tasks}

    # -- logs --------------------------------------------------------------------------------

    def worker_logs(self, name: str, component: str | None = None) -> list[WorkerLog]:
        """Where to read the log of each of ``name``'s workers (those running ``component``, if
        given); a worker whose supervisor serves no log endpoint comes with ``endpoint`` None."""
        info = self.info(name)
        slots = (info.get("assignment") or {"slots": {}})["slots"]
        supervisors = {s["id"]: s for s in self.cluster()["supervisors"]}
        logs = []
        for slot in slots.values():
            if component and component not in {c for c, _ in slot["executors"]}:
                continue
            sup = supervisors.get(slot["supervisor_id"])
            endpoint = f"{sup['host']}:{sup['log_port']}" if sup is not None and sup.get("log_port") else None
            logs.append(WorkerLog(f"{slot['host']}:{slot['port']}", info["topology"]["id"], slot["port"], endpoint))
        return logs

    def read_log(self, log: WorkerLog, offset: int = -1, max_bytes: int = 65536) -> LogChunk:
        """Up to ``max_bytes`` of ``log`` from ``offset`` (-1: its last ``max_bytes``), read from its
        supervisor; :class:`NimbusUnavailable` if that supervisor does not answer in time."""
        if log.endpoint is None:
            raise NimbusUnavailable(f"no log access to {log.worker}: its supervisor is not reachable")
        client = self._supervisors.get(log.endpoint)
        if client is None:
            client = self._supervisors[log.endpoint] = NimbusClient(log.endpoint, timeout=self.timeout)
        return client.read_log(log.topology_id, log.port, offset, max_bytes)  # type: ignore[return-value]

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
    Everything is validated and packed before nimbus is called; blocks up to
    ``timeout`` seconds per nimbus tried. Raises :class:`TopologyFileError`,
    :class:`TopologyError`, :class:`ConfigError`, :class:`PackageError`, or the
    :class:`NimbusError` subclass nimbus answered with (:class:`AlreadyExists`: a
    topology of that name runs). Call from any thread; it uses a Client of its own.
    """
    base = load_config(config_file)
    submission = prepare(topology, name=name, config=config, base=base, code_dir=code_dir)
    with Client(nimbus, config=base, timeout=timeout) as client:
        return client.upload(submission, timeout=timeout)

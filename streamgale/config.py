"""Configuration: one typed schema, loaded in layers.

Layers, lowest first: built-in defaults < config file (``--config``,
``STREAMGALE_CONF`` or ``./config.yaml``) < topology config < ``-c key=value``.

Keys are dotted (``network.port``); a YAML file may nest them
(``network: {port: 5555}``) or write them flat. Keys in a reserved namespace
(the first segment of any built-in key) must be known and well typed. A
topology may also carry free-form keys of its own (``wordcount.top_n``); those
are only rejected when they look like a typo of a built-in key. Of the
built-in keys a topology's own config may set only ``topology.*`` ones; the
rest are cluster settings (:func:`is_cluster_key`), the daemons' to decide.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names the key."""


@dataclass(frozen=True)
class Setting:
    key: str
    kind: str  # human description of what is expected
    default: Any
    check: Callable[[Any], Any]  # returns the normalised value or raises ValueError
    doc: str


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ValueError
        return v

    return check


def _float(lo: float = 0.0, allow_zero: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        v = float(v)
        if v < lo or (v == lo and not allow_zero):
            raise ValueError
        return v

    return check


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)

    return check


def _choice(*options: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str) or v.upper() not in {o.upper() for o in options}:
            raise ValueError
        return next(o for o in options if o.upper() == v.upper())

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError(v)
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def _names(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError(v)
    return tuple(v)


def _user_names(v: Any) -> tuple[str, ...]:
    return () if v in ((), [], None) else _names(v)


def _zk_root(v: Any) -> str:
    v = _str(v)
    if not v.startswith("/") or v.endswith("/") or "//" in v:
        raise ValueError
    return v


ZOOKEEPER_PORT = 2181  # ZooKeeper's client port, for a server named without one


def _servers(v: Any) -> tuple[str, ...]:
    items = v.split(",") if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not items:
        raise ValueError
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = item.strip(), str(ZOOKEEPER_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError
        out.append(f"{host}:{int(port)}")
    return tuple(out)


_PORT = _int(1, 65535)

MODEL_BOLT = "topology.inference.model_bolt"  # a component config key model bolts set on themselves

SETTINGS: dict[str, Setting] = {
    s.key: s
    for s in [
        Setting("workers", "an integer >= 1", 4, _int(1, 1024),
                "worker slots on each supervisor node"),
        Setting("logging_level", "one of " + ", ".join(LOG_LEVELS), "INFO", _choice(*LOG_LEVELS),
                "log level of every StreamGale process"),
        Setting("network.port", "a port number (1-65535)", 5555, _PORT,
                "first worker slot port; slots use port .. port+workers-1"),
        Setting("network.protocol", "'zmq'", "zmq", _choice("zmq"),
                "transport between workers (ZeroMQ over TCP)"),
        Setting("zookeeper.servers", "a list of host:port (port 2181 if left out)", ("127.0.0.1:2181",), _servers,
                "the ZooKeeper ensemble"),
        Setting("zookeeper.root", "an absolute znode path like /streamgale", "/streamgale", _zk_root,
                "root znode under which all cluster state lives"),
        Setting("zookeeper.session_timeout", "a number of seconds > 0", 6.0, _float(),
                "ZooKeeper session timeout; a node is declared dead after it"),
        Setting("nimbus.host", "a host name or address", "127.0.0.1", _str,
                "where clients reach nimbus"),
        Setting("nimbus.port", "a port number (1-65535)", 6627, _PORT,
                "nimbus client API port"),
        Setting("ui.port", "a port number (1-65535)", 8080, _PORT,
                "port of the web UI, its REST API and Prometheus /metrics (`streamgale ui`)"),
        Setting("ui.allowed_hosts", "a list of host names", (), _user_names,
                "names the web UI answers to besides the address it listens on, localhost, 127.0.0.1 and ::1 "
                "(any other Host header is refused, against DNS rebinding)"),
        Setting("ui.token_file", "a file path or null", None, _optional(_str),
                "a file (mode 600) holding the token every UI action needs as `Authorization: Bearer`; "
                "null: actions need none, allowed only when the UI listens on loopback"),
        Setting("health.port", "a port number (1-65535) or null", None, _optional(_PORT),
                "where nimbus and supervisors answer liveness (/healthz) and readiness (/readyz) probes over "
                "HTTP (null: nowhere; `--health-port` on the command line)"),
        Setting("network.bind", "a host address or null", None, _optional(_str),
                "where daemons and workers listen (null: the address they advertise, so a dev cluster on "
                "127.0.0.1 listens on loopback only; 0.0.0.0: every interface)"),
        Setting("security.enabled", "true or false", False, _bool,
                "CURVE authentication and encryption on every socket, roles checked on every request "
                "(docs/security.md)"),
        Setting("security.keys_dir", "a directory path", "~/.streamgale/keys", _str,
                "this process's keys: its own key pair, the cluster's public key, and (daemons) the "
                "authorized public keys (`streamgale keys`)"),
        Setting("security.identity", "a key name or null", None, _optional(_str),
                "the key this process authenticates with (null: the login name)"),
        Setting("security.zookeeper_credentials", "a file path or null", None, _optional(_str),
                "a file holding user:password; every znode under zookeeper.root is then readable and "
                "writable only with it (digest ACLs)"),
        Setting("supervisor.local_dir", "a directory path", "~/.streamgale/supervisor", _str,
                "where a supervisor keeps code packages, worker state and logs"),
        Setting("supervisor.worker_timeout", "a number of seconds > 0", 5.0, _float(),
                "a worker whose heartbeat is older than this is killed and restarted"),
        Setting("supervisor.worker_start_timeout", "a number of seconds > 0", 30.0, _float(),
                "a launched worker that has not heartbeaten after this is killed and restarted"),
        Setting("supervisor.environment_build_timeout", "a number of seconds > 0", 900.0, _float(),
                "the longest a supervisor lets pip build a topology's Python environment (its "
                "requirements.txt) before reporting the build as failed"),
        Setting("supervisor.environment_keep", "a number of seconds >= 0", 600.0, _float(allow_zero=True),
                "how long a topology's Python environment is kept once no topology on the node uses it, "
                "so a resubmitted topology finds it built"),
        Setting("nimbus.task_timeout", "a number of seconds > 0", 10.0, _float(),
                "a worker whose heartbeats (forwarded by its supervisor) stop this long has its executors moved "
                "elsewhere"),
        Setting("nimbus.task_launch_timeout", "a number of seconds > 0", 30.0, _float(),
                "time a newly assigned worker gets to send its first heartbeat before nimbus moves it"),
        Setting("topology.workers", "an integer >= 1", 1, _int(1, 1024),
                "worker processes for the topology"),
        Setting("topology.users", "a list of user (key) names", (), _user_names,
                "users who may manage this topology besides the one who submitted it (security on)"),
        Setting("topology.message_timeout", "a number of seconds > 0", 30.0, _float(),
                "a spout tuple not fully processed within this time fails"),
        Setting("topology.max_spout_pending", "an integer >= 1 or null", 1000, _optional(_int(1)),
                "tracked tuple trees in flight per spout task (null: unbounded)"),
        Setting("topology.acker_executors", "an integer >= 0 or null", None, _optional(_int(0)),
                "acker executors (null: one per worker; 0 turns tracking off)"),
        Setting("topology.tick_interval", "a number of seconds > 0 or null", None,
                _optional(_float()), "send tick tuples to bolts at this interval"),
        Setting("topology.queue_size", "an integer >= 16", 2048, _int(16),
                "capacity of each executor's input queue, in tuples"),
        Setting("topology.batch_size", "an integer >= 1", 200, _int(1),
                "tuples per message between workers"),
        Setting("topology.batch_linger", "a number of seconds >= 0", 0.0002, _float(allow_zero=True),
                "longest a partial batch waits before it is sent"),
        Setting("topology.state.backend", "one of memory, sqlite, redis", "memory",
                _choice("memory", "sqlite", "redis"),
                "where stateful bolts commit their state (docs/state.md)"),
        Setting("topology.state.checkpoint_interval", "a number of seconds > 0", 1.0, _float(),
                "how often the checkpoint spout starts a checkpoint; must be below topology.message_timeout"),
        Setting("topology.state.checkpoint_timeout", "a number of seconds > 0 or null", None, _optional(_float()),
                "a checkpoint not complete within this is retried or rolled back (null: min(5, "
                "topology.message_timeout / 4)); must be below topology.message_timeout"),
        Setting("topology.state.sqlite.path", "a file path", "~/.streamgale/state.sqlite", _str,
                "the SQLite file of the sqlite backend, on each node"),
        Setting("topology.state.redis.url", "a redis:// URL", "redis://127.0.0.1:6379/0", _str,
                "the Redis server of the redis backend"),
        Setting("topology.subprocess_timeout", "a number of seconds > 0", 30.0, _float(),
                "a multi-lang subprocess that answers nothing this long after a heartbeat or command is "
                "killed and restarted (docs/multilang.md)"),
        Setting("topology.multilang.max_pending", "an integer >= 1", 1000, _int(1),
                "tuples inside a shell bolt's subprocess (sent, not yet acked or failed) before its input waits"),
        Setting("topology.multilang.restart_backoff", "a number of seconds > 0", 0.25, _float(),
                "wait before restarting a multi-lang subprocess that ended; doubles on each restart"),
        Setting("topology.multilang.restart_backoff_max", "a number of seconds > 0", 30.0, _float(),
                "the longest wait between restarts of a multi-lang subprocess"),
        Setting(MODEL_BOLT, "true or false", False, _bool,
                "set by model bolts on themselves (not by users): the component takes model updates"),
        Setting("topology.inference.providers", "a list of ONNX Runtime execution provider names",
                ("CPUExecutionProvider",), _names,
                "where model bolts run ONNX models, in order of preference (docs/ml.md)"),
        Setting("topology.inference.intra_op_threads", "an integer >= 0", 1, _int(0),
                "threads one model call may use (0: ONNX Runtime's and PyTorch's default, every core)"),
        Setting("topology.inference.inter_op_threads", "an integer >= 0", 1, _int(0),
                "threads ONNX Runtime may run independent operators on (0: its default)"),
    ]
}

RESERVED_NAMESPACES = frozenset(k.split(".")[0] for k in SETTINGS)

REDACTED = "<redacted>"
SECRET_WORDS = ("token", "password", "secret", "credentials")
_FILE_SUFFIXES = ("_file", "_path", "_dir")
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")


def redact(key: str, value: Any) -> Any:
    """``value`` of config key ``key`` as it may be shown: printed, logged or sent by the UI. Pure.

    A key whose last part names a secret (token, password, secret, credentials: ``my.db_password``)
    shows ``<redacted>``, unless the key names a file holding the secret (``ui.token_file``, any
    ``*_file``, ``*_path`` or ``*_dir`` key, a built-in key that is a file path such as
    ``security.zookeeper_credentials``): a path is no secret. Under any key, a URL's password is
    redacted (``redis://:<redacted>@host``), and a mapping's values are redacted by their own keys.
    """
    if value is None:
        return None
    last = key.rsplit(".", 1)[-1].lower()
    setting = SETTINGS.get(key)
    names_file = last.endswith(_FILE_SUFFIXES) or (setting is not None and "path" in setting.kind)
    if any(word in last for word in SECRET_WORDS) and not names_file:
        return REDACTED
    if isinstance(value, str):
        m = _URL_USERINFO.match(value)
        if m and ":" in m.group(2):
            user = m.group(2).split(":", 1)[0]
            return f"{m.group(1)}{user}:{REDACTED}@{value[m.end():]}"
        return value
    if isinstance(value, Mapping):
        return {k: redact(f"{key}.{k}", v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(key, v) for v in value)
    return value


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Turn ``{"network": {"port": 1}}`` into ``{"network.port": 1}``.

    A mapping is only descended into when its key is a namespace prefix
    (``network``), so a free-form user key may hold a dict value.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key {key!r} must be a string")
        full = f"{prefix}{key}"
        if isinstance(value, Mapping) and any(k.startswith(full + ".") for k in SETTINGS):
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


TOPOLOGY_NAMESPACE = "topology."  # the built-in keys a topology's own config may set


def is_cluster_key(key: str) -> bool:
    """Whether ``key`` is a cluster setting: a built-in key outside ``topology.`` (``workers``,
    ``logging_level``, ``network.*``, ``zookeeper.*``, ``nimbus.*``, ``supervisor.*``, ``ui.*``,
    ``security.*``). Those belong to the daemons' config file; a topology's own config may not
    set them, since the cluster it runs on decides them, not the topology."""
    return key in SETTINGS and not key.startswith(TOPOLOGY_NAMESPACE)


def topology_layer(stored: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A topology's stored config as the layer its workers apply over their node's config: the
    flattened keys without cluster settings (nimbus refuses those at submit, but a record stored
    by an older nimbus may hold some; the node's own config decides them), and the dropped keys."""
    flat = flatten(stored)
    dropped = sorted(k for k in flat if is_cluster_key(k))
    return {k: v for k, v in flat.items() if k not in dropped}, dropped


def unknown_keys(layer: Mapping[str, Any]) -> list[str]:
    """The keys of ``layer`` (possibly nested) that are no built-in key, sorted: the free-form
    keys a topology passes to its components as they are (and where a typo would hide)."""
    return sorted(k for k in flatten(layer) if k not in SETTINGS)


def check_value(key: str, value: Any, source: str, allow_user_keys: bool, allow_cluster_keys: bool = True) -> Any:
    """Validate one key/value pair and return the normalised value."""
    if not allow_cluster_keys and is_cluster_key(key):
        raise ConfigError(f"config key '{key}' in {source} is a cluster setting; set it in the daemons' "
                          f"config.yaml, not in a topology")
    setting = SETTINGS.get(key)
    if setting is None:
        close = difflib.get_close_matches(key, SETTINGS, n=1, cutoff=0.8)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        if not allow_user_keys or key.split(".")[0] in RESERVED_NAMESPACES or close:
            known = ", ".join(sorted(SETTINGS))
            raise ConfigError(
                f"unknown config key '{key}' in {source}{hint}"
                + ("" if close else f" (known keys: {known})")
            )
        return value
    try:
        return setting.check(value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"config key '{key}' in {source} must be {setting.kind}, got {value!r}"
        ) from None


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one ``-c key=value``; the value is read as YAML (``4`` -> 4)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"-c expects key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


class Config(Mapping[str, Any]):
    """An immutable, validated view of the layered configuration.

    ``config["network.port"]``; ``config.get("my.key", default)`` for user keys.
    """

    def __init__(self, values: Mapping[str, Any] | None = None):
        self._values = {k: s.default for k, s in SETTINGS.items()}
        if values:
            self._values.update(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"

    def merged(self, layer: Mapping[str, Any], source: str, allow_user_keys: bool = True) -> Config:
        """Return a new Config with ``layer`` (possibly nested) applied on top."""
        flat = flatten(layer)
        checked = {k: check_value(k, v, source, allow_user_keys) for k, v in flat.items()}
        return Config({**self._values, **checked})

    def with_topology_config(self, layer: Mapping[str, Any], source: str = "topology config") -> Config:
        """:meth:`merged` for a topology's own config (or a component's): ``topology.*`` and
        free-form keys only; a cluster setting (:func:`is_cluster_key`) raises ConfigError."""
        flat = flatten(layer)
        checked = {k: check_value(k, v, source, True, allow_cluster_keys=False) for k, v in flat.items()}
        return Config({**self._values, **checked})

    def with_overrides(self, overrides: Iterable[str]) -> Config:
        """Apply ``-c key=value`` strings."""
        layer = dict(parse_override(o) for o in overrides)
        return self.merged(layer, "-c option")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self._values.items()}

    @property
    def local_dir(self) -> Path:
        return Path(os.path.expanduser(self["supervisor.local_dir"]))


def find_config_file(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in force: explicit path, else $STREAMGALE_CONF, else ./config.yaml."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("STREAMGALE_CONF")
    if env:
        return Path(env)
    local = Path("config.yaml")
    return local if local.is_file() else None


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Defaults < config file. The file is strict: no unknown keys.

    Apply the topology's config and then ``-c`` overrides with
    :func:`topology_config`.
    """
    config = Config()
    file = find_config_file(path)
    if file is not None:
        try:
            raw = Path(file).read_bytes()
        except OSError as e:
            raise ConfigError(f"cannot read config file {file}: {e.strerror}") from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {file} is not UTF-8 text: byte 0x{raw[e.start]:02x} at offset "
                              f"{e.start} cannot be decoded ({e.reason})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {file} is not valid YAML: {e}") from None
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {file} must hold a mapping of keys, got {type(data).__name__}")
        config = config.merged(data, f"config file {file}", allow_user_keys=False)
    return config


def topology_config(base: Config, topology_conf: Mapping[str, Any], overrides: Iterable[str] = ()) -> Config:
    """The config a topology runs with: base < topology's own config < ``-c``.

    The topology's own config may not set cluster settings (:func:`is_cluster_key`); ``-c``
    may, as it applies to this process.
    """
    return base.with_topology_config(topology_conf).with_overrides(overrides)

"""The cluster's shared state in ZooKeeper: the one module that talks to kazoo.

Every other module uses the typed methods of :class:`ClusterState`; records are
the msgpack types of :mod:`streamgale.cluster.records`.

Znode layout, all under ``root`` (``zookeeper.root``, default ``/streamgale``)::

    supervisors/<supervisor id>     ephemeral   SupervisorInfo
    nimbuses/<host:port>            ephemeral   the address (live nimbuses)
    election/n_<seq>                ephemeral sequential, the contender's address;
                                    the lowest sequence leads
    topologies/<topology id>        TopologyRecord
    topology-names/<quoted name>    the topology id (keeps names unique, atomically)
    assignments/<topology id>       Assignment; the znode version is Assignment.version,
                                    written only by the leader (fenced, see set_assignment)
    code/<topology id>/meta         msgpack {size, sha256, chunks}, written last
    code/<topology id>/chunk-NNNNN  up to 512 KiB of the code package each
    errors/<topology id>/<quoted component>/e_<seq>
                                    ErrorRecord, newest 10 per component
    workerbeats/<topology id>/<slot id>
                                    ephemeral, rewritten by the slot's worker every
                                    second: nimbus watches its version change

Threads and connection states follow kazoo's rules. Kazoo calls state
listeners on its connection thread, watch callbacks on its event thread (the
first call of a watch happens in the caller's thread). Every callback given
to this module must therefore be quick and must not block; state listeners
must not call ZooKeeper at all. SUSPENDED means "do not trust leadership":
:attr:`Leadership.is_leader` turns False at once. LOST means the session and
its ephemeral znodes are gone: registrations and election nodes are re-created
on a kazoo worker thread once the client is CONNECTED again (it reconnects
forever). Malformed znode data never reaches a callback: it is logged and
skipped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import replace
from functools import wraps
from typing import Any, Callable, Sequence, TypeVar
from urllib.parse import quote, unquote

import msgpack
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (BadVersionError, KazooException, NodeExistsError, NoNodeError,
                              NotEmptyError)
from kazoo.recipe.watchers import ChildrenWatch, DataWatch

from .records import Assignment, ErrorRecord, RecordError, SupervisorInfo, TopologyRecord

log = logging.getLogger(__name__)

CHUNK_SIZE = 512 * 1024
MAX_CODE_SIZE = 64 * 1024 * 1024
MAX_ERRORS_PER_COMPONENT = 10
DIRS = ("supervisors", "nimbuses", "election", "topologies", "topology-names", "assignments", "code", "errors",
        "workerbeats")
_ELECTION_NODE = re.compile(r"^n_\d{10}$")

StateListener = Callable[[str], None]
T = TypeVar("T")


class ClusterStateError(Exception):
    """ZooKeeper could not be reached or holds something unusable."""


class TopologyExists(ClusterStateError):
    """A topology with this id or name is already stored."""


class NotLeader(ClusterStateError):
    """A fenced write came from a contender that is not (or no longer) the leader."""


class StaleAssignment(ClusterStateError):
    """The assignment changed since the version the write was based on."""


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Callers see ClusterStateError, never kazoo's exceptions."""

    @wraps(method)
    def wrapper(self: "ClusterState", *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (KazooException, self._zk.handler.timeout_exception) as e:
            raise ClusterStateError(f"ZooKeeper {method.__name__} failed: {type(e).__name__} {e}".rstrip()) from e

    return wrapper


def _decoded(decode: Callable[..., T], path: str, *args: Any) -> T | None:
    try:
        return decode(*args)
    except Exception as e:  # noqa: BLE001 - any malformed record is skipped, never raised into a watcher
        log.warning("ignoring malformed znode %s: %s", path, e)
        return None


def _call_quietly(cb: Callable[..., Any], *args: Any) -> None:
    try:
        cb(*args)
    except Exception:  # noqa: BLE001 - a failing user callback must not kill kazoo's thread
        log.exception("cluster state callback %r failed", cb)


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or not name.isprintable():
        raise ClusterStateError(f"{kind} {name!r} cannot be a znode name (no '/', not empty, printable)")
    return name


class Watch:
    """Handle of a watch: after :meth:`cancel` its callback is not called again."""

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _ChildrenDataWatch(Watch):
    """The decoded data of every child of ``path``, delivered whole on any change."""

    def __init__(self, zk: KazooClient, path: str, decode: Callable[[bytes, Any], Any],
                 cb: Callable[[dict[str, Any]], None]):
        super().__init__()
        self._zk, self._path, self._decode, self._cb = zk, path, decode, cb
        self._lock = threading.RLock()
        self._values: dict[str, Any] = {}
        self._tokens: dict[str, object] = {}  # child -> token of its live DataWatch
        self._building = False
        ChildrenWatch(zk, path, self._on_children)

    def _on_children(self, children: list[str]) -> bool | None:
        with self._lock:
            if self.cancelled:
                return False
            self._building = True  # one delivery for the whole batch, not one per new child
            try:
                for name in set(self._tokens) - set(children):
                    del self._tokens[name]
                    self._values.pop(name, None)
                for name in sorted(set(children) - set(self._tokens)):
                    token = self._tokens[name] = object()
                    DataWatch(self._zk, f"{self._path}/{name}", self._data_callback(name, token))
            finally:
                self._building = False
            _call_quietly(self._cb, dict(self._values))
        return None

    def _data_callback(self, name: str, token: object) -> Callable[..., bool | None]:
        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            with self._lock:
                if self.cancelled or self._tokens.get(name) is not token:
                    return False
                keep: bool | None = None
                if stat is None:  # deleted: the children watch re-adds it if it comes back
                    del self._tokens[name]
                    self._values.pop(name, None)
                    keep = False
                else:
                    value = _decoded(self._decode, f"{self._path}/{name}", data, stat)
                    if value is None:
                        self._values.pop(name, None)
                    else:
                        self._values[name] = value
                if not self._building:
                    _call_quietly(self._cb, dict(self._values))
                return keep

        return on_data


class ClusterState:
    """Typed access to the cluster's state in ZooKeeper; one ZooKeeper session.

    Methods may be called from any thread; they block on ZooKeeper round trips
    and raise :class:`ClusterStateError` when ZooKeeper cannot answer.
    """

    def __init__(self, servers: Sequence[str], root: str = "/streamgale", session_timeout: float = 10.0,
                 max_code_size: int = MAX_CODE_SIZE):
        if isinstance(servers, str):
            servers = servers.split(",")
        self.servers = tuple(servers)
        self.root = root.rstrip("/")
        self.max_code_size = max_code_size
        self._zk = KazooClient(
            hosts=",".join(self.servers), timeout=session_timeout,
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 1.0},
            command_retry={"max_tries": 3, "delay": 0.1, "backoff": 2, "max_delay": 1.0})
        self._retry = self._zk.retry
        self._listeners: list[StateListener] = []
        self._ephemerals: dict[str, bytes] = {}  # path -> data, re-created after a lost session
        self._ephemeral_lock = threading.Lock()
        self._closing = False
        self._zk.add_listener(self._on_state)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and create the layout's directories; blocks up to ``timeout`` s."""
        try:
            self._zk.start(timeout=timeout)
        except self._zk.handler.timeout_exception:
            self._zk.stop()
            raise ClusterStateError(
                f"cannot reach ZooKeeper at {','.join(self.servers)} within {timeout:g} s") from None
        try:
            for d in DIRS:
                self._zk.ensure_path(self._path(d))
        except KazooException as e:
            self._zk.stop()
            raise ClusterStateError(f"cannot create {self.root} in ZooKeeper: {type(e).__name__} {e}") from e

    def close(self) -> None:
        """End the session (its ephemeral znodes go at once) and stop all watches."""
        self._closing = True
        try:
            self._zk.stop()
        finally:
            self._zk.close()

    def __enter__(self) -> "ClusterState":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._zk.state == KazooState.CONNECTED

    def add_state_listener(self, cb: StateListener) -> None:
        """Call ``cb("CONNECTED" | "SUSPENDED" | "LOST")`` on each connection change.

        Called on kazoo's connection thread: ``cb`` must return at once and
        must not call ZooKeeper (hand the work to another thread).
        """
        self._listeners.append(cb)

    def remove_state_listener(self, cb: StateListener) -> None:
        if cb in self._listeners:
            self._listeners.remove(cb)

    def _on_state(self, state: str) -> None:
        # kazoo's connection thread: no blocking, no ZooKeeper calls here.
        if state == KazooState.CONNECTED and not self._closing:
            self._zk.handler.spawn(self._restore_ephemerals)
        for cb in list(self._listeners):
            _call_quietly(cb, str(state))

    def _path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    # -- ephemeral registrations --------------------------------------------------------------

    def _ensure_ephemeral(self, path: str, data: bytes) -> None:
        """Make ``path`` an ephemeral of this session holding ``data``."""
        for _ in range(5):
            try:
                self._zk.create(path, data, ephemeral=True, makepath=True)
                return
            except NodeExistsError:
                pass
            try:
                current, stat = self._zk.get(path)
                if stat.ephemeralOwner == self._zk.client_id[0]:
                    if current != data:
                        self._zk.set(path, data)
                    return
                # Stale, from an older session (a restart within the session timeout):
                # replace it in one transaction, so watchers never see it missing.
                txn = self._zk.transaction()
                txn.delete(path, version=stat.version)
                txn.create(path, data, ephemeral=True)
                if not any(isinstance(r, Exception) for r in txn.commit()):
                    return
            except (NoNodeError, BadVersionError):
                pass
        raise ClusterStateError(f"cannot claim {path}: another session keeps re-creating it")

    def _restore_ephemerals(self) -> None:
        # On a kazoo worker thread after each (re)connection: a no-op unless the session was lost.
        with self._ephemeral_lock:
            for path, data in list(self._ephemerals.items()):
                try:
                    self._retry(self._ensure_ephemeral, path, data)
                except (KazooException, ClusterStateError) as e:
                    if not self._closing:
                        log.warning("could not re-create %s after reconnecting: %s", path, e)

    @_translated
    def _register(self, path: str, data: bytes) -> None:
        with self._ephemeral_lock:
            self._ephemerals[path] = data  # kept even if this fails: re-created on reconnection
            self._ensure_ephemeral(path, data)

    @_translated
    def _unregister(self, path: str) -> None:
        with self._ephemeral_lock:
            self._ephemerals.pop(path, None)
            try:
                _, stat = self._zk.get(path)
                if stat.ephemeralOwner == self._zk.client_id[0]:
                    self._zk.delete(path)
            except NoNodeError:
                pass

    def register_supervisor(self, info: SupervisorInfo) -> None:
        """Announce a live supervisor; kept alive across lost sessions until unregistered."""
        self._register(self._path("supervisors", _check_name("supervisor id", info.id)), info.encode())

    def unregister_supervisor(self, supervisor_id: str) -> None:
        self._unregister(self._path("supervisors", _check_name("supervisor id", supervisor_id)))

    @_translated
    def supervisors(self) -> dict[str, SupervisorInfo]:
        return self._read_children("supervisors", SupervisorInfo.decode)

    @_translated
    def watch_supervisors(self, cb: Callable[[dict[str, SupervisorInfo]], None]) -> Watch:
        """Call ``cb(all live supervisors)`` now and on every change (kazoo's event thread)."""
        return _ChildrenDataWatch(self._zk, self._path("supervisors"), lambda d, _: SupervisorInfo.decode(d), cb)

    def register_nimbus(self, address: str) -> None:
        """Announce a live nimbus (leader or standby); kept alive across lost sessions."""
        self._register(self._path("nimbuses", _check_name("nimbus address", address)), address.encode())

    def unregister_nimbus(self, address: str) -> None:
        self._unregister(self._path("nimbuses", _check_name("nimbus address", address)))

    @_translated
    def nimbuses(self) -> list[str]:
        return sorted(self._retry(self._zk.get_children, self._path("nimbuses")))

    # -- leader election ----------------------------------------------------------------------

    @_translated
    def elect_leader(self, address: str, on_elected: Callable[[], None],
                     on_deposed: Callable[[], None]) -> "Leadership":
        """Enter the election; see :class:`Leadership` for the callbacks' contract."""
        return Leadership(self, address, on_elected, on_deposed)

    def _contenders(self) -> list[str]:
        children = self._retry(self._zk.get_children, self._path("election"))
        return sorted((c for c in children if _ELECTION_NODE.match(c)), key=lambda c: c[-10:])

    @_translated
    def leader_address(self) -> str | None:
        """The elected leader's address, or None; anyone may ask (standbys, clients)."""
        for name in self._contenders():
            try:
                data, _ = self._retry(self._zk.get, self._path("election", name))
                return data.decode("utf-8", "replace")
            except NoNodeError:
                continue  # it just left; the next one leads
        return None

    # -- topologies ---------------------------------------------------------------------------

    @_translated
    def create_topology(self, rec: TopologyRecord) -> None:
        """Store a new topology; raises :class:`TopologyExists` if its id or name is taken."""
        path = self._path("topologies", _check_name("topology id", rec.id))
        name_path = self._path("topology-names", quote(rec.name, safe=""))
        for _ in range(3):
            txn = self._zk.transaction()
            txn.create(path, rec.encode())
            txn.create(name_path, rec.id.encode())
            made, named = txn.commit()
            if not isinstance(made, Exception):
                return
            if isinstance(made, NodeExistsError):
                raise TopologyExists(f"a topology with id {rec.id!r} already exists")
            if not isinstance(named, NodeExistsError):
                raise ClusterStateError(f"cannot create topology {rec.id!r}: {made!r} {named!r}")
            try:
                owner, stat = self._zk.get(name_path)
                if self._zk.exists(self._path("topologies", owner.decode())) is not None:
                    raise TopologyExists(f"a topology named {rec.name!r} already exists "
                                         f"(id {owner.decode()!r}); kill it first or pick another name")
                self._zk.delete(name_path, version=stat.version)  # left by a half-finished delete
            except (NoNodeError, BadVersionError):
                pass
        raise ClusterStateError(f"cannot claim the name {rec.name!r} for topology {rec.id!r}")

    @_translated
    def topology(self, topology_id: str) -> TopologyRecord | None:
        path = self._path("topologies", _check_name("topology id", topology_id))
        try:
            data, _ = self._retry(self._zk.get, path)
        except NoNodeError:
            return None
        return _decoded(TopologyRecord.decode, path, data)

    @_translated
    def topologies(self) -> dict[str, TopologyRecord]:
        return self._read_children("topologies", TopologyRecord.decode)

    @_translated
    def update_topology(self, topology_id: str,
                        fn: Callable[[TopologyRecord], TopologyRecord | None]) -> TopologyRecord | None:
        """Compare-and-set: apply ``fn`` to the stored record until no one else wrote in between.

        ``fn`` may run several times; returning None means "no change". Returns
        the record now stored, or None if there is no such topology.
        """
        path = self._path("topologies", _check_name("topology id", topology_id))
        while True:
            try:
                data, stat = self._retry(self._zk.get, path)
            except NoNodeError:
                return None
            try:
                current = TopologyRecord.decode(data)
            except RecordError as e:
                raise ClusterStateError(f"topology {topology_id!r} in ZooKeeper is malformed: {e}") from None
            new = fn(current)
            if new is None:
                return current
            if new.id != topology_id:
                raise ValueError(f"update_topology({topology_id!r}) may not change the id to {new.id!r}")
            try:
                self._zk.set(path, new.encode(), version=stat.version)
                return new
            except BadVersionError:
                continue
            except NoNodeError:
                return None

    @_translated
    def delete_topology(self, topology_id: str) -> None:
        """Remove the topology, its name, assignment (unfenced), code package and errors."""
        _check_name("topology id", topology_id)
        rec = self.topology(topology_id)
        self._delete_tree(self._path("assignments", topology_id))
        self._delete_tree(self._path("topologies", topology_id))
        if rec is not None:
            name_path = self._path("topology-names", quote(rec.name, safe=""))
            try:
                owner, stat = self._zk.get(name_path)
                if owner.decode() == topology_id:
                    self._zk.delete(name_path, version=stat.version)
            except (NoNodeError, BadVersionError):
                pass
        self._delete_tree(self._path("code", topology_id))
        self._delete_tree(self._path("errors", topology_id))
        self._delete_tree(self._path("workerbeats", topology_id))

    # -- worker heartbeats --------------------------------------------------------------------

    def _beat_path(self, topology_id: str, slot: str) -> str:
        return self._path("workerbeats", _check_name("topology id", topology_id), _check_name("slot id", slot))

    def register_worker(self, topology_id: str, slot: str, data: bytes) -> None:
        """Create the worker's heartbeat znode (ephemeral; re-created after a lost session)."""
        self._register(self._beat_path(topology_id, slot), data)

    def worker_beat(self, topology_id: str, slot: str, data: bytes) -> None:
        """Rewrite the heartbeat without waiting (safe from a loop that must not block,
        even while ZooKeeper is unreachable: the write then fails quietly)."""
        try:
            self._zk.set_async(self._beat_path(topology_id, slot), data)
        except Exception as e:  # noqa: BLE001 - closed or not connected: the next beat retries
            log.debug("heartbeat not written: %s", e)

    @_translated
    def worker_beats(self, topology_id: str) -> dict[str, int]:
        """slot id -> znode version of each live worker's heartbeat (it grows with every beat)."""
        base = self._path("workerbeats", _check_name("topology id", topology_id))
        out = {}
        for slot in self._children(base):
            stat = self._zk.exists(f"{base}/{slot}")
            if stat is not None:
                out[slot] = stat.version
        return out

    @_translated
    def watch_topology(self, topology_id: str, cb: Callable[[TopologyRecord | None], None]) -> Watch:
        """Call ``cb(record or None if absent)`` now and on every change (kazoo's event thread)."""
        return self._watch_node(self._path("topologies", _check_name("topology id", topology_id)),
                                lambda d, _: TopologyRecord.decode(d), cb)

    @_translated
    def watch_topologies(self, cb: Callable[[dict[str, TopologyRecord]], None]) -> Watch:
        """Call ``cb(all topologies)`` now and on every change (kazoo's event thread)."""
        return _ChildrenDataWatch(self._zk, self._path("topologies"), lambda d, _: TopologyRecord.decode(d), cb)

    # -- code packages ------------------------------------------------------------------------

    @_translated
    def put_code(self, topology_id: str, data: bytes) -> str:
        """Store a code package (replacing any old one); returns its sha256 hex digest."""
        if len(data) > self.max_code_size:
            raise ClusterStateError(f"code package of topology {topology_id!r} is {len(data)} bytes; "
                                    f"the limit is {self.max_code_size} bytes")
        base = self._path("code", _check_name("topology id", topology_id))
        self._delete_tree(base)
        digest = hashlib.sha256(data).hexdigest()
        chunks = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        for i, chunk in enumerate(chunks):
            self._zk.create(f"{base}/chunk-{i:05d}", chunk, makepath=True)
        meta = {"format": 1, "size": len(data), "sha256": digest, "chunks": len(chunks)}
        self._zk.create(f"{base}/meta", msgpack.packb(meta), makepath=True)  # last: marks it complete
        return digest

    @_translated
    def get_code(self, topology_id: str) -> bytes:
        """The code package, verified against its sha256; raises ClusterStateError if absent or corrupt."""
        base = self._path("code", _check_name("topology id", topology_id))
        try:
            raw, _ = self._retry(self._zk.get, f"{base}/meta")
        except NoNodeError:
            raise ClusterStateError(f"no code package is stored for topology {topology_id!r}") from None
        try:
            meta = msgpack.unpackb(raw)
            size, digest, count = int(meta["size"]), str(meta["sha256"]), int(meta["chunks"])
        except Exception as e:  # noqa: BLE001 - malformed meta of any kind
            raise ClusterStateError(f"code package of {topology_id!r} has malformed metadata: {e}") from None
        if size > self.max_code_size or count > size // CHUNK_SIZE + 1:
            raise ClusterStateError(f"code package of {topology_id!r} claims {size} bytes in {count} chunks; "
                                    f"the limit is {self.max_code_size} bytes")
        try:
            data = b"".join(self._retry(self._zk.get, f"{base}/chunk-{i:05d}")[0] for i in range(count))
        except NoNodeError:
            raise ClusterStateError(f"code package of {topology_id!r} is missing a chunk") from None
        if len(data) != size or hashlib.sha256(data).hexdigest() != digest:
            raise ClusterStateError(f"code package of {topology_id!r} is corrupt: its sha256 does not match")
        return data

    @_translated
    def delete_code(self, topology_id: str) -> None:
        self._delete_tree(self._path("code", _check_name("topology id", topology_id)))

    # -- assignments --------------------------------------------------------------------------

    @_translated
    def assignment(self, topology_id: str) -> Assignment | None:
        path = self._path("assignments", _check_name("topology id", topology_id))
        try:
            data, stat = self._retry(self._zk.get, path)
        except NoNodeError:
            return None
        return _decoded(Assignment.decode, path, data, stat.version)

    @_translated
    def assignments(self) -> dict[str, Assignment]:
        return self._read_children("assignments", Assignment.decode, with_version=True)

    @_translated
    def set_assignment(self, a: Assignment, leadership: "Leadership") -> Assignment:
        """Write an assignment, fenced: only the current leader's write can commit.

        One transaction checks that the leader's election node still exists
        (it is gone once the leader's session expired) and writes the node,
        conditional on ``a.version`` when it is >= 0. Raises :class:`NotLeader`
        or :class:`StaleAssignment`. Returns ``a`` with its new version.
        """
        path = self._path("assignments", _check_name("topology id", a.topology_id))
        for _ in range(5):
            txn = self._fenced(leadership)
            if a.version >= 0 or self._zk.exists(path) is not None:
                txn.set_data(path, a.encode(), version=a.version)
            else:
                txn.create(path, a.encode())
            fence, result = txn.commit()
            if isinstance(fence, (NoNodeError, BadVersionError)):  # else RolledBackError
                raise NotLeader(f"{leadership.address} is no longer the leader; assignment of "
                                f"{a.topology_id!r} not written")
            if not isinstance(result, Exception):
                return replace(a, version=0 if isinstance(result, str) else result.version)  # str: created
            if a.version >= 0:
                raise StaleAssignment(f"assignment of {a.topology_id!r} changed since version {a.version}")
            # unconditional write raced with a create or delete: look again
        raise ClusterStateError(f"assignment of {a.topology_id!r} keeps changing under us")

    @_translated
    def delete_assignment(self, topology_id: str, leadership: "Leadership") -> None:
        """Remove an assignment (fenced like :meth:`set_assignment`); no-op if there is none."""
        txn = self._fenced(leadership)
        txn.delete(self._path("assignments", _check_name("topology id", topology_id)))
        fence, result = txn.commit()
        if isinstance(fence, (NoNodeError, BadVersionError)):  # else RolledBackError
            raise NotLeader(f"{leadership.address} is no longer the leader; assignment of "
                            f"{topology_id!r} not deleted")
        if isinstance(result, Exception) and not isinstance(result, NoNodeError):
            raise ClusterStateError(f"cannot delete assignment of {topology_id!r}: {result!r}")

    def _fenced(self, leadership: "Leadership") -> Any:
        # An election node, once lowest, stays lowest until it is deleted (sequence numbers
        # only grow), so "it still exists" proves "still the leader" on the server's side.
        node = leadership.node_path
        if not leadership.is_leader or node is None:
            raise NotLeader(f"{leadership.address} is not the leader")
        txn = self._zk.transaction()
        txn.check(node, 0)
        return txn

    @_translated
    def watch_assignments(self, cb: Callable[[dict[str, Assignment]], None]) -> Watch:
        """Call ``cb(all assignments)`` now and on every change (kazoo's event thread)."""
        return _ChildrenDataWatch(self._zk, self._path("assignments"),
                                  lambda d, stat: Assignment.decode(d, stat.version), cb)

    @_translated
    def watch_assignment(self, topology_id: str, cb: Callable[[Assignment | None], None]) -> Watch:
        """Call ``cb(assignment or None if absent)`` now and on every change (kazoo's event thread)."""
        return self._watch_node(self._path("assignments", _check_name("topology id", topology_id)),
                                lambda d, stat: Assignment.decode(d, stat.version), cb)

    # -- errors -------------------------------------------------------------------------------

    @_translated
    def report_error(self, topology_id: str, rec: ErrorRecord) -> None:
        """Record a component's error, keeping the newest 10 per component.

        An error about a topology that is gone (a worker dying as it is killed)
        is dropped: the write is a transaction that checks the topology still
        exists, so nothing is left under ``errors/`` after a kill.
        """
        topology = self._path("topologies", _check_name("topology id", topology_id))
        base = self._path("errors", topology_id)
        folder = f"{base}/{quote(rec.component, safe='')}"
        if self._zk.exists(topology) is None:
            return
        self._retry(self._zk.ensure_path, folder)
        txn = self._zk.transaction()
        txn.check(topology, -1)  # any version: it only has to exist
        txn.create(f"{folder}/e_", rec.encode(), sequence=True)
        if any(isinstance(r, Exception) for r in txn.commit()):
            for path in (folder, base):  # deleted meanwhile: do not leave the folders behind
                try:
                    self._zk.delete(path)
                except (NoNodeError, NotEmptyError):
                    pass
            return
        for old in sorted(self._retry(self._zk.get_children, folder))[:-MAX_ERRORS_PER_COMPONENT]:
            try:
                self._zk.delete(f"{folder}/{old}")
            except NoNodeError:
                pass  # trimmed by a concurrent reporter

    @_translated
    def errors(self, topology_id: str) -> dict[str, list[ErrorRecord]]:
        """Recent errors per component, newest last."""
        base = self._path("errors", _check_name("topology id", topology_id))
        out: dict[str, list[ErrorRecord]] = {}
        for folder in self._children(base):
            records = []
            for name in sorted(self._children(f"{base}/{folder}")):
                path = f"{base}/{folder}/{name}"
                data = self._data(path)
                rec = None if data is None else _decoded(ErrorRecord.decode, path, data)
                if rec is not None:
                    records.append(rec)
            if records:
                out[unquote(folder)] = records
        return out

    # -- raw helpers --------------------------------------------------------------------------

    def _children(self, path: str) -> list[str]:
        try:
            return self._retry(self._zk.get_children, path)
        except NoNodeError:
            return []

    def _data(self, path: str) -> bytes | None:
        try:
            return self._retry(self._zk.get, path)[0]
        except NoNodeError:
            return None

    def _read_children(self, folder: str, decode: Callable[..., T], with_version: bool = False) -> dict[str, T]:
        out = {}
        for name in self._children(self._path(folder)):
            path = self._path(folder, name)
            try:
                data, stat = self._retry(self._zk.get, path)
            except NoNodeError:
                continue
            value = _decoded(decode, path, data, *((stat.version,) if with_version else ()))
            if value is not None:
                out[name] = value
        return out

    def _delete_tree(self, path: str) -> None:
        for _ in range(5):
            try:
                self._zk.delete(path, recursive=True)
                return
            except NoNodeError:
                return
            except NotEmptyError:
                continue  # a child appeared meanwhile
        raise ClusterStateError(f"cannot delete {path}: children keep appearing")

    def _watch_node(self, path: str, decode: Callable[[bytes, Any], T], cb: Callable[[T | None], None]) -> Watch:
        handle = Watch()

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool | None:
            if handle.cancelled:
                return False
            value = None if stat is None else _decoded(decode, path, data, stat)
            if stat is None or value is not None:  # malformed: skipped
                _call_quietly(cb, value)
            return None

        DataWatch(self._zk, path, on_data)
        return handle


class Leadership:
    """One contender in the leader election: the lowest ``election/n_<seq>`` leads.

    ``on_elected()`` / ``on_deposed()`` are called on kazoo threads, one at a
    time, alternately; they must be quick, must not block and should not call
    ZooKeeper. :attr:`is_leader` is False from the moment the connection is
    SUSPENDED until it is CONNECTED again and this node is verified to lead.
    After a LOST session the contender re-enters the election (a new
    :attr:`node_path`) on its own.
    """

    def __init__(self, state: ClusterState, address: str, on_elected: Callable[[], None],
                 on_deposed: Callable[[], None]):
        self._state, self._zk = state, state._zk
        self.address = address
        self._on_elected, self._on_deposed = on_elected, on_deposed
        self._lock = threading.Lock()  # held only for a transition and its callback, never over I/O
        self._join_lock = threading.Lock()
        self._node: str | None = None
        self._children: list[str] = []
        self._leader = False
        self._unsafe = False  # connection suspended or lost, leadership unverified
        self._epoch = 0  # bumped on each connection change; a stale verification must not clear _unsafe
        self._cancelled = False
        state.add_state_listener(self._on_state)
        try:
            self._join(self._epoch)
            ChildrenWatch(self._zk, state._path("election"), self._on_children)
        except BaseException:
            self.cancel()
            raise

    @property
    def is_leader(self) -> bool:
        return self._leader and not self._unsafe and not self._cancelled

    @property
    def node_path(self) -> str | None:
        return self._node

    def cancel(self) -> None:
        """Leave the election (deposed first if leading)."""
        self._cancelled = True
        self._state.remove_state_listener(self._on_state)
        self._evaluate()
        node, self._node = self._node, None
        if node is not None and self._state.connected:
            try:
                self._zk.delete(node)
            except KazooException:
                pass  # gone already, or goes with the session

    def _on_state(self, state: str) -> None:
        # kazoo's connection thread: set flags and hand the ZooKeeper work to a worker thread.
        self._epoch += 1  # before _unsafe: see _join
        if state == KazooState.CONNECTED:
            self._zk.handler.spawn(self._rejoin, self._epoch)
        else:
            self._unsafe = True
            self._zk.handler.spawn(self._evaluate)

    def _rejoin(self, epoch: int) -> None:
        try:
            self._state._retry(self._join, epoch)
        except (KazooException, ClusterStateError) as e:
            log.warning("%s could not re-enter the election: %s", self.address, e)

    def _join(self, epoch: int) -> None:
        """Make sure our election node exists in this session, then re-evaluate."""
        with self._join_lock:
            if self._cancelled:
                return
            node = self._node
            stat = self._zk.exists(node) if node is not None else None
            if stat is None or stat.ephemeralOwner != self._zk.client_id[0]:
                if stat is not None:  # left by our previous session; it would block the election
                    try:
                        self._zk.delete(node)
                    except NoNodeError:
                        pass
                self._node = self._zk.create(self._state._path("election", "n_"), self.address.encode(),
                                             ephemeral=True, sequence=True)
            # The children watch (re-armed by kazoo on reconnection, ordered) delivers the
            # contenders; a snapshot read here could be older than its latest and win.
            with self._lock:
                if self._epoch == epoch:  # no connection change since we verified
                    self._unsafe = False
            self._evaluate()

    def _on_children(self, children: list[str]) -> bool | None:
        if self._cancelled:
            return False
        with self._lock:
            self._children = children
        self._evaluate()
        return None

    def _evaluate(self) -> None:
        with self._lock:
            contenders = sorted((c for c in self._children if _ELECTION_NODE.match(c)), key=lambda c: c[-10:])
            mine = self._node.rsplit("/", 1)[1] if self._node else None
            lead = (not self._cancelled and not self._unsafe and mine is not None
                    and bool(contenders) and contenders[0] == mine)
            if lead != self._leader:
                self._leader = lead
                _call_quietly(self._on_elected if lead else self._on_deposed)

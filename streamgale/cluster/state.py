"""The cluster's shared state: typed operations over a raw :class:`~.storage.Storage`.

Every other module uses the typed methods of :class:`ClusterState`; records are
the msgpack types of :mod:`.records`, the znode layout is :mod:`.paths`, the
leader election :mod:`.election` and code packages :mod:`.code_store`. In the
daemons the storage is a :class:`~.zk_storage.ZkStorage` (:func:`open_cluster_state`);
in-process tests pass a :class:`~.memory_storage.MemoryStorage`.

Threads and connection states follow kazoo's rules (see :mod:`.storage`):
callbacks given to this module run on storage threads and must be quick and
must not block; state listeners must not call the storage at all. SUSPENDED
means "do not trust leadership": :attr:`Leadership.is_leader` turns False at
once. LOST means the session and its ephemeral znodes are gone: registrations
and election nodes are re-created on a storage worker thread once CONNECTED
again (the storage reconnects on its own). Malformed znode data never reaches
a callback: it is logged and skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from .code_store import CHUNK_SIZE, MAX_CODE_SIZE, CodeStore
from .election import Leadership, leader_address
from .errors import ClusterStateError, FencedOut, StaleAssignment, TopologyExists
from .paths import Paths
from .records import Assignment, ErrorRecord, Loss, RecordError, SupervisorInfo, TopologyRecord
from .storage import (
    CONNECTED,
    BadVersion,
    NodeExists,
    NoNode,
    NotEmpty,
    StateListener,
    Storage,
    StorageError,
    Transaction,
    delete_tree,
)
from .watches import ChildrenDataWatch, Watch, decoded, log_malformed, watch_node
from .zk_storage import ZkStorage, read_credentials

if TYPE_CHECKING:
    from streamgale.config import Config

__all__ = ["ClusterState", "CorruptTopology", "open_cluster_state", "Leadership", "Watch", "ClusterStateError",
           "TopologyExists", "FencedOut", "StaleAssignment", "CHUNK_SIZE", "MAX_CODE_SIZE", "MAX_ERRORS_PER_COMPONENT"]

log = logging.getLogger(__name__)

MAX_ERRORS_PER_COMPONENT = 10

T = TypeVar("T")


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Callers see ClusterStateError, never the storage's exceptions."""

    @wraps(method)
    def wrapper(self: ClusterState, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except StorageError as e:
            raise ClusterStateError(f"cluster state {method.__name__} failed: {e}") from e

    return wrapper


def open_cluster_state(config: Config) -> ClusterState:
    """A ClusterState on the ZooKeeper of ``config`` (``zookeeper.servers``, ``.root``,
    ``.session_timeout``); not started: call :meth:`ClusterState.start`."""
    credentials_file = config["security.zookeeper_credentials"]
    try:
        credentials = read_credentials(credentials_file) if credentials_file else None
    except StorageError as e:
        raise ClusterStateError(str(e)) from None
    storage = ZkStorage(config["zookeeper.servers"], config["zookeeper.session_timeout"], credentials)
    return ClusterState(storage, config["zookeeper.root"])


@dataclass(frozen=True)
class CorruptTopology:
    """A record under ``topologies/`` that does not decode (garbage, or a format this version
    cannot read): its topology cannot run, but it holds its name until it is deleted."""

    id: str
    name: str | None  # the name the ``topology-names`` index gives this id, if any
    error: str  # why it does not decode


class ClusterState:
    """Typed access to the cluster's state; one storage session.

    Methods may be called from any thread (not from a storage listener); they
    block on storage round trips and raise :class:`ClusterStateError` when the
    storage cannot answer. ``storage`` is this object's from construction to
    :meth:`close`.
    """

    def __init__(self, storage: Storage, root: str = "/streamgale", max_code_size: int = MAX_CODE_SIZE):
        self.storage = storage
        self.paths = Paths(root)
        self.root = self.paths.root
        self.max_code_size = max_code_size
        self._code = CodeStore(storage, self.paths, max_code_size)
        self._ephemerals: dict[str, bytes] = {}  # path -> data, re-created after a lost session
        self._ephemeral_lock = threading.Lock()
        self._closing = False
        storage.add_listener(self._on_state)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Connect and create the layout's directories; blocks up to ``timeout`` s."""
        try:
            self.storage.start(timeout)
        except StorageError as e:
            raise ClusterStateError(str(e)) from e
        try:
            for d in self.paths.dirs():
                self.storage.ensure_path(d)
        except StorageError as e:
            self.storage.close()
            raise ClusterStateError(f"cannot create {self.root}: {e}") from e

    @_translated
    def secure(self) -> int:
        """Lock every znode under the root to this session's credentials (when it has any); returns
        how many changed. Nimbus runs it at start, which turns security on for a running cluster."""
        return self.storage.secure_tree(self.root)

    def close(self) -> None:
        """End the session (its ephemeral znodes go at once) and stop all watches."""
        self._closing = True
        self.storage.close()

    def __enter__(self) -> ClusterState:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self.storage.connected

    def add_state_listener(self, cb: StateListener) -> None:
        """Call ``cb("CONNECTED" | "SUSPENDED" | "LOST")`` on each connection change.

        Called on a storage thread, after the listeners added before it:
        ``cb`` must return at once and must not call the storage (hand the
        work to another thread).
        """
        self.storage.add_listener(cb)

    def remove_state_listener(self, cb: StateListener) -> None:
        self.storage.remove_listener(cb)

    def _on_state(self, state: str) -> None:
        # A storage listener: no blocking, no storage calls here.
        if state == CONNECTED and not self._closing:
            self.storage.spawn(self._restore_ephemerals)

    # -- ephemeral registrations --------------------------------------------------------------

    def _ensure_ephemeral(self, path: str, data: bytes) -> None:
        """Make ``path`` an ephemeral of this session holding ``data``."""
        for _ in range(5):
            try:
                self.storage.create(path, data, ephemeral=True, makepath=True)
                return
            except NodeExists:
                pass
            try:
                current, stat = self.storage.get(path)
                if stat.ephemeral_owner == self.storage.session_id:
                    if current != data:
                        self.storage.set(path, data)
                    return
                # Stale, from an older session (a restart within the session timeout):
                # replace it in one transaction, so watchers never see it missing.
                txn = self.storage.transaction()
                txn.delete(path, version=stat.version)
                txn.create(path, data, ephemeral=True)
                if not any(isinstance(r, Exception) for r in txn.commit()):
                    return
            except (NoNode, BadVersion):
                pass
        raise ClusterStateError(f"cannot claim {path}: another session keeps re-creating it")

    def _restore_ephemerals(self) -> None:
        # On a storage worker thread after each (re)connection: a no-op unless the session was
        # lost. A connection drop while this runs is followed by CONNECTED, which runs it again.
        with self._ephemeral_lock:
            for path, data in list(self._ephemerals.items()):
                try:
                    self._ensure_ephemeral(path, data)
                except (StorageError, ClusterStateError) as e:
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
                _, stat = self.storage.get(path)
                if stat.ephemeral_owner == self.storage.session_id:
                    self.storage.delete(path)
            except NoNode:
                pass

    def register_supervisor(self, info: SupervisorInfo) -> None:
        """Announce a live supervisor; kept alive across lost sessions until unregistered."""
        self._register(self.paths.supervisor(info.id), info.encode())

    def unregister_supervisor(self, supervisor_id: str) -> None:
        self._unregister(self.paths.supervisor(supervisor_id))

    @_translated
    def supervisors(self) -> dict[str, SupervisorInfo]:
        return self._read_children(self.paths.supervisors, lambda d, _: SupervisorInfo.decode(d))

    @_translated
    def watch_supervisors(self, cb: Callable[[dict[str, SupervisorInfo]], None]) -> Watch:
        """Call ``cb(all live supervisors)`` now and on every change (storage event thread)."""
        return ChildrenDataWatch(self.storage, self.paths.supervisors, lambda d, _: SupervisorInfo.decode(d), cb)

    def register_nimbus(self, address: str) -> None:
        """Announce a live nimbus (leader or standby); kept alive across lost sessions."""
        self._register(self.paths.nimbus(address), address.encode())

    @_translated
    def nimbuses(self) -> list[str]:
        return sorted(self.storage.children(self.paths.nimbuses))

    # -- leader election ----------------------------------------------------------------------

    @_translated
    def elect_leader(self, address: str, on_elected: Callable[[], None],
                     on_deposed: Callable[[], None]) -> Leadership:
        """Enter the election; see :class:`Leadership` for the callbacks' contract."""
        return Leadership(self.storage, self.paths.election, address, on_elected, on_deposed)

    @_translated
    def leader_address(self) -> str | None:
        """The elected leader's address, or None; anyone may ask (standbys, clients)."""
        return leader_address(self.storage, self.paths.election)

    # -- topologies ---------------------------------------------------------------------------

    @_translated
    def create_topology(self, rec: TopologyRecord) -> None:
        """Store a new topology; raises :class:`TopologyExists` if its id or name is taken."""
        path, name_path = self.paths.topology(rec.id), self.paths.topology_name(rec.name)
        for _ in range(3):
            txn = self.storage.transaction()
            txn.create(path, rec.encode())
            txn.create(name_path, rec.id.encode())
            made, named = txn.commit()
            if not isinstance(made, Exception):
                return
            if isinstance(made, NodeExists):
                raise TopologyExists(f"a topology with id {rec.id!r} already exists")
            if not isinstance(named, NodeExists):
                raise ClusterStateError(f"cannot create topology {rec.id!r}: {made!r} {named!r}")
            try:
                owner, stat = self.storage.get(name_path)
                if self.storage.exists(self.paths.topology(owner.decode())) is not None:
                    raise TopologyExists(f"a topology named {rec.name!r} already exists "
                                         f"(id {owner.decode()!r}); kill it first or pick another name")
                self.storage.delete(name_path, version=stat.version)  # left by a half-finished delete
            except (NoNode, BadVersion):
                pass
        raise ClusterStateError(f"cannot claim the name {rec.name!r} for topology {rec.id!r}")

    @_translated
    def topology(self, topology_id: str) -> TopologyRecord | None:
        path = self.paths.topology(topology_id)
        try:
            data, _ = self.storage.get(path)
        except NoNode:
            return None
        return decoded(TopologyRecord.decode, path, data)

    @_translated
    def topologies(self) -> dict[str, TopologyRecord]:
        """Every topology whose record decodes (a malformed one is logged and left out)."""
        return self._read_children(self.paths.topologies, lambda d, _: TopologyRecord.decode(d))

    @_translated
    def topologies_and_corrupt(self) -> tuple[dict[str, TopologyRecord], dict[str, CorruptTopology]]:
        """:meth:`topologies`, and the records under ``topologies/`` that do not decode, by id:
        they still hold their name (``list`` shows them, ``kill`` removes them with
        :meth:`delete_topology`)."""
        failed: dict[str, str] = {}
        records = self._read_children(self.paths.topologies, lambda d, _: TopologyRecord.decode(d), failed)
        if not failed:
            return records, {}
        names = self._names_by_id()
        return records, {tid: CorruptTopology(tid, names.get(tid), why) for tid, why in failed.items()}

    @_translated
    def update_topology(self, topology_id: str,
                        fn: Callable[[TopologyRecord], TopologyRecord | None]) -> TopologyRecord | None:
        """Compare-and-set: apply ``fn`` to the stored record until no one else wrote in between.

        ``fn`` may run several times; returning None means "no change". Returns
        the record now stored, or None if there is no such topology.
        """
        path = self.paths.topology(topology_id)
        while True:
            try:
                data, stat = self.storage.get(path)
            except NoNode:
                return None
            try:
                current = TopologyRecord.decode(data)
            except RecordError as e:
                raise ClusterStateError(f"topology {topology_id!r} in {path} is malformed: {e}") from None
            new = fn(current)
            if new is None:
                return current
            if new.id != topology_id:
                raise ValueError(f"update_topology({topology_id!r}) may not change the id to {new.id!r}")
            try:
                self.storage.set(path, new.encode(), version=stat.version)
                return new
            except BadVersion:
                continue
            except NoNode:
                return None

    @_translated
    def delete_topology(self, topology_id: str) -> None:
        """Remove the topology, its name, assignment (unfenced), code package and errors."""
        rec = self.topology(topology_id)
        # A record that does not decode still holds its name: found through the names' index.
        names = [rec.name] if rec is not None else [n for n, t in self._names_by_id_list() if t == topology_id]
        delete_tree(self.storage, self.paths.assignment(topology_id))
        delete_tree(self.storage, self.paths.topology(topology_id))
        for name in names:
            name_path = self.paths.topology_name(name)
            try:
                owner, stat = self.storage.get(name_path)
                if owner.decode("utf-8", "replace") == topology_id:
                    self.storage.delete(name_path, version=stat.version)
            except (NoNode, BadVersion):
                pass
        self._code.delete(topology_id)
        delete_tree(self.storage, self.paths.topology_models(topology_id))
        delete_tree(self.storage, self.paths.topology_errors(topology_id))
        delete_tree(self.storage, self.paths.topology_losses(topology_id))

    @_translated
    def watch_topology(self, topology_id: str, cb: Callable[[TopologyRecord | None], None]) -> Watch:
        """Call ``cb(record or None if absent)`` now and on every change (storage event thread)."""
        return watch_node(self.storage, self.paths.topology(topology_id), lambda d, _: TopologyRecord.decode(d), cb)

    @_translated
    def watch_topologies(self, cb: Callable[[dict[str, TopologyRecord]], None]) -> Watch:
        """Call ``cb(all topologies)`` now and on every change (storage event thread)."""
        return ChildrenDataWatch(self.storage, self.paths.topologies, lambda d, _: TopologyRecord.decode(d), cb)

    # -- code packages ------------------------------------------------------------------------

    @_translated
    def put_code(self, topology_id: str, data: bytes) -> str:
        """Store a code package (replacing any old one); returns its sha256 hex digest."""
        return self._code.put(topology_id, data)

    @_translated
    def get_code(self, topology_id: str) -> bytes:
        """The code package, verified against its sha256; raises ClusterStateError if absent or corrupt."""
        return self._code.get(topology_id)

    @_translated
    def delete_code(self, topology_id: str) -> None:
        self._code.delete(topology_id)

    @_translated
    def put_model(self, topology_id: str, component: str, data: bytes) -> str:
        """Store the model file of ``component`` (replacing any older one); returns its sha256."""
        return self._code.put_blob(self.paths.model_file(topology_id, component), data,
                                   f"model file of component {component!r} of topology {topology_id!r}")

    @_translated
    def get_model(self, topology_id: str, component: str) -> bytes:
        """The model file of ``component``, verified against its sha256."""
        return self._code.get_blob(self.paths.model_file(topology_id, component),
                                   f"model file of component {component!r} of topology {topology_id!r}")

    # -- assignments --------------------------------------------------------------------------

    @_translated
    def assignment(self, topology_id: str) -> Assignment | None:
        path = self.paths.assignment(topology_id)
        try:
            data, stat = self.storage.get(path)
        except NoNode:
            return None
        return decoded(Assignment.decode, path, data, stat.version)

    @_translated
    def assignments(self) -> dict[str, Assignment]:
        """Every assignment that decodes (a malformed one is logged and left out)."""
        return self._read_children(self.paths.assignments, lambda d, stat: Assignment.decode(d, stat.version))

    @_translated
    def assignments_and_corrupt(self) -> tuple[dict[str, Assignment], set[str]]:
        """:meth:`assignments`, and the topology ids whose assignment does not decode (the
        leader rewrites or deletes those)."""
        failed: dict[str, str] = {}
        found = self._read_children(self.paths.assignments, lambda d, stat: Assignment.decode(d, stat.version),
                                    failed)
        return found, set(failed)

    @_translated
    def set_assignment(self, a: Assignment, leadership: Leadership) -> Assignment:
        """Write an assignment, fenced: only the current leader's write can commit.

        One transaction checks that the leader's election node still exists
        (it is gone once the leader's session expired) and writes the node,
        conditional on ``a.version`` when it is >= 0. Raises :class:`FencedOut`
        or :class:`StaleAssignment`. Returns ``a`` with its new version.
        """
        path = self.paths.assignment(a.topology_id)
        for _ in range(5):
            txn = self._fenced(leadership)
            if a.version >= 0 or self.storage.exists(path) is not None:
                txn.set_data(path, a.encode(), version=a.version)
            else:
                txn.create(path, a.encode())
            fence, result = txn.commit()
            if isinstance(fence, (NoNode, BadVersion)):  # else RolledBack: the write failed
                raise FencedOut(f"{leadership.address} is no longer the leader; assignment of "
                                f"{a.topology_id!r} not written")
            if not isinstance(result, Exception):
                return replace(a, version=0 if isinstance(result, str) else result.version)  # str: created
            if a.version >= 0:
                raise StaleAssignment(f"assignment of {a.topology_id!r} changed since version {a.version}")
            # unconditional write raced with a create or delete: look again
        raise ClusterStateError(f"assignment of {a.topology_id!r} keeps changing under us")

    @_translated
    def delete_assignment(self, topology_id: str, leadership: Leadership) -> None:
        """Remove an assignment (fenced like :meth:`set_assignment`); no-op if there is none."""
        txn = self._fenced(leadership)
        txn.delete(self.paths.assignment(topology_id))
        fence, result = txn.commit()
        if isinstance(fence, (NoNode, BadVersion)):  # else RolledBack: the delete failed
            raise FencedOut(f"{leadership.address} is no longer the leader; assignment of "
                            f"{topology_id!r} not deleted")
        if isinstance(result, Exception) and not isinstance(result, NoNode):
            raise ClusterStateError(f"cannot delete assignment of {topology_id!r}: {result}")

    def _fenced(self, leadership: Leadership) -> Transaction:
        # An election node, once lowest, stays lowest until it is deleted (sequence numbers
        # only grow), so "it still exists" proves "still the leader" on the server's side.
        node = leadership.node_path
        if not leadership.is_leader or node is None:
            raise FencedOut(f"{leadership.address} is not the leader")
        txn = self.storage.transaction()
        txn.check(node, 0)
        return txn

    @_translated
    def watch_assignments(self, cb: Callable[[dict[str, Assignment]], None]) -> Watch:
        """Call ``cb(all assignments)`` now and on every change (storage event thread)."""
        return ChildrenDataWatch(self.storage, self.paths.assignments,
                                 lambda d, stat: Assignment.decode(d, stat.version), cb)

    @_translated
    def watch_assignment(self, topology_id: str, cb: Callable[[Assignment | None], None]) -> Watch:
        """Call ``cb(assignment or None if absent)`` now and on every change (storage event thread)."""
        return watch_node(self.storage, self.paths.assignment(topology_id),
                          lambda d, stat: Assignment.decode(d, stat.version), cb)

    # -- losses -------------------------------------------------------------------------------

    @_translated
    def report_loss(self, topology_id: str, slot: str, reason: str, now: float, assignment: int = 0) -> None:
        """A worker of the topology is gone (the supervisor that saw it die, or nimbus moving
        executors off a silent slot): every write grows the topology's loss epoch by one;
        ``assignment`` is the assignment version its workers must run with before they replay
        (:class:`Loss`).
        A loss of a topology that is gone is dropped (checked in the same transaction), so
        nothing is left under ``losses/`` after a kill."""
        topology, path = self.paths.topology(topology_id), self.paths.topology_losses(topology_id)
        data = Loss(0, slot, reason, now, assignment).encode()
        for _ in range(3):  # created or deleted by another writer meanwhile: again
            exists = self.storage.exists(path) is not None
            txn = self.storage.transaction()
            txn.check(topology, -1)  # any version: it only has to exist
            if exists:
                txn.set_data(path, data)
            else:
                txn.create(path, data)
            results = txn.commit()
            if not any(isinstance(r, Exception) for r in results):
                return
            if self.storage.exists(topology) is None:
                return

    @_translated
    def watch_losses(self, cb: Callable[[dict[str, Loss]], None]) -> Watch:
        """Call ``cb(topology id -> its latest Loss)`` now and on every loss (storage event thread)."""
        return ChildrenDataWatch(self.storage, self.paths.losses, lambda d, stat: Loss.decode(d, stat.version), cb)

    # -- errors -------------------------------------------------------------------------------

    @_translated
    def report_error(self, topology_id: str, rec: ErrorRecord) -> None:
        """Record a component's error, keeping the newest 10 per component.

        An error about a topology that is gone (a worker dying as it is killed)
        is dropped: the write is a transaction that checks the topology still
        exists, so nothing is left under ``errors/`` after a kill.
        """
        topology = self.paths.topology(topology_id)
        base = self.paths.topology_errors(topology_id)
        folder = self.paths.component_errors(topology_id, rec.component)
        if self.storage.exists(topology) is None:
            return
        self.storage.ensure_path(folder)
        txn = self.storage.transaction()
        txn.check(topology, -1)  # any version: it only has to exist
        txn.create(f"{folder}/e_", rec.encode(), sequence=True)
        if any(isinstance(r, Exception) for r in txn.commit()):
            for path in (folder, base):  # deleted meanwhile: do not leave the folders behind
                try:
                    self.storage.delete(path)
                except (NoNode, NotEmpty):
                    pass
            return
        for old in sorted(self.storage.children(folder))[:-MAX_ERRORS_PER_COMPONENT]:
            try:
                self.storage.delete(f"{folder}/{old}")
            except NoNode:
                pass  # trimmed by a concurrent reporter

    @_translated
    def errors(self, topology_id: str) -> dict[str, list[ErrorRecord]]:
        """Recent errors per component, newest last."""
        base = self.paths.topology_errors(topology_id)
        out: dict[str, list[ErrorRecord]] = {}
        for folder in self._children(base):
            records = []
            for name in sorted(self._children(f"{base}/{folder}")):
                path = f"{base}/{folder}/{name}"
                try:
                    data, _ = self.storage.get(path)
                except NoNode:
                    continue
                rec = decoded(ErrorRecord.decode, path, data)
                if rec is not None:
                    records.append(rec)
            if records:
                out[self.paths.component_of(folder)] = records
        return out

    def latest_error(self, topology_id: str, component: str) -> ErrorRecord | None:
        """The newest error of one component (None: none, or it does not decode)."""
        folder = self.paths.component_errors(topology_id, component)
        names = sorted(self._children(folder))
        if not names:
            return None
        path = f"{folder}/{names[-1]}"
        try:
            data, _ = self.storage.get(path)
        except NoNode:
            return None
        return decoded(ErrorRecord.decode, path, data)

    # -- raw helpers --------------------------------------------------------------------------

    def _children(self, path: str) -> list[str]:
        try:
            return self.storage.children(path)
        except NoNode:
            return []

    def _read_children(self, folder: str, decode: Callable[[bytes, Any], T],
                       failed: dict[str, str] | None = None) -> dict[str, T]:
        """Child name -> decoded value; a child that does not decode is logged, left out, and
        (with ``failed``) put there with the reason."""
        out = {}
        for name in self._children(folder):
            path = f"{folder}/{name}"
            try:
                data, stat = self.storage.get(path)
            except NoNode:
                continue
            try:
                out[name] = decode(data, stat)
            except Exception as e:  # noqa: BLE001 - any malformed record is skipped, never raised
                log_malformed(path, e)
                if failed is not None:
                    failed[name] = str(e)
        return out

    def _names_by_id_list(self) -> list[tuple[str, str]]:
        """(topology name, the id its ``topology-names`` entry holds) of every entry."""
        out = []
        for child in self._children(self.paths.topology_names):
            try:
                owner, _ = self.storage.get(f"{self.paths.topology_names}/{child}")
            except NoNode:
                continue
            out.append((Paths.name_of(child), owner.decode("utf-8", "replace")))
        return out

    def _names_by_id(self) -> dict[str, str]:
        return {tid: name for name, tid in self._names_by_id_list()}

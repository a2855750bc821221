"""Leader election: the lowest ephemeral sequential node ``<election>/n_<seq>`` leads.

A recipe over :class:`~streamgale.cluster.storage.Storage`, as kazoo's
``recipe/election.py`` is over its client, but more careful about
connection states: leadership is dropped the moment the connection is
SUSPENDED and is trusted again only after this session's node is verified
to exist once CONNECTED; an epoch keeps a verification that straddled
another connection change from counting. After LOST, or when its node is
deleted under it, the contender enters again with a new node.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

from .storage import CONNECTED, NoNode, Storage, StorageError, call_quietly

log = logging.getLogger(__name__)

_NODE = re.compile(r"^n_\d{10}$")


def contenders(children: list[str]) -> list[str]:
    """The election nodes among ``children``, in order: the first one leads."""
    return sorted((c for c in children if _NODE.match(c)), key=lambda c: c[-10:])


def leader_address(storage: Storage, election: str) -> str | None:
    """The address the leading node holds, or None if there is no contender."""
    for name in contenders(storage.children(election)):
        try:
            data, _ = storage.get(f"{election}/{name}")
            return data.decode("utf-8", "replace")
        except NoNode:
            continue  # it just left; the next one leads
    return None


class Leadership:
    """One contender in the election under ``election`` (a directory that exists).

    ``on_elected()`` / ``on_deposed()`` are called on storage threads, one at a
    time, alternately; they must be quick, must not block and should not call
    the storage. :attr:`is_leader` is False from the moment the connection is
    SUSPENDED until it is CONNECTED again and this node is verified to lead.
    After a LOST session, or when its node is deleted while the session lives,
    the contender re-enters the election (a new :attr:`node_path`) on its own;
    a leader whose node is deleted is deposed the moment the children watch
    shows it gone. The constructor joins (blocking on the storage) and raises
    StorageError if it cannot.
    """

    def __init__(self, storage: Storage, election: str, address: str, on_elected: Callable[[], None],
                 on_deposed: Callable[[], None]):
        self._storage, self._election = storage, election
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
        storage.add_listener(self._on_state)
        try:
            self._join(self._epoch)
            storage.watch_children(election, self._on_children)
        except BaseException:
            self.cancel()
            raise

    @property
    def is_leader(self) -> bool:
        return self._leader and not self._unsafe and not self._cancelled

    @property
    def node_path(self) -> str | None:
        """This contender's election node in the current session (None once cancelled)."""
        return self._node

    def cancel(self) -> None:
        """Leave the election (deposed first if leading)."""
        self._cancelled = True
        self._storage.remove_listener(self._on_state)
        self._evaluate()
        node, self._node = self._node, None
        if node is not None and self._storage.connected:
            try:
                self._storage.delete(node)
            except StorageError:
                pass  # gone already, or goes with the session

    def _on_state(self, state: str) -> None:
        # A storage listener: set flags and hand the storage work to a worker thread.
        self._epoch += 1  # before _unsafe: see _join
        if state == CONNECTED:
            self._storage.spawn(self._rejoin, self._epoch)
        else:
            self._unsafe = True
            self._storage.spawn(self._evaluate)

    def _rejoin(self, epoch: int) -> None:
        # A connection drop while this runs is followed by CONNECTED, which runs it again.
        try:
            self._join(epoch)
        except StorageError as e:
            log.warning("%s could not re-enter the election: %s", self.address, e)

    def _join(self, epoch: int) -> None:
        """Make sure our election node exists in this session, then re-evaluate."""
        with self._join_lock:
            if self._cancelled:
                return
            node = self._node
            stat = self._storage.exists(node) if node is not None else None
            if node is None or stat is None or stat.ephemeral_owner != self._storage.session_id:
                if node is not None and stat is not None:  # left by our previous session; it would block us
                    try:
                        self._storage.delete(node)
                    except NoNode:
                        pass
                self._node = self._storage.create(f"{self._election}/n_", self.address.encode(),
                                                  ephemeral=True, sequence=True)
            # The children watch (re-armed on reconnection, ordered) delivers the contenders;
            # a snapshot read here could be older than its latest and win.
            with self._lock:
                if self._epoch == epoch:  # no connection change since we verified
                    self._unsafe = False
            self._evaluate()

    def _on_children(self, children: list[str]) -> bool | None:
        if self._cancelled:
            return False
        with self._lock:
            self._children = children
            mine = self._node.rsplit("/", 1)[1] if self._node else None
            vanished = mine is not None and not self._unsafe and mine not in children
            epoch = self._epoch
        self._evaluate()  # a leader whose node is gone is deposed here, at once
        if vanished:
            # Deleted while our session lives (by hand, or by a tool): nothing else would bring
            # it back, so enter again with a new node. _join creates one only if ours is gone.
            log.warning("%s: election node %s disappeared; entering the election again", self.address, mine)
            self._storage.spawn(self._rejoin, epoch)
        return None

    def _evaluate(self) -> None:
        with self._lock:
            mine = self._node.rsplit("/", 1)[1] if self._node else None
            ranked = contenders(self._children)
            lead = (not self._cancelled and not self._unsafe and mine is not None
                    and bool(ranked) and ranked[0] == mine)
            if lead != self._leader:
                self._leader = lead
                call_quietly(self._on_elected if lead else self._on_deposed)

"""Guaranteed message processing: Storm's tuple trees, as pure logic.

A spout tuple emitted with a ``msg_id`` gets a random 62-bit *root id*. Every
tuple of its tree carries ``anchors = {root: edge id}``, one random 62-bit edge
id per tuple sent. The spout tells the root's acker the XOR of the edges it
sent (``init``); a bolt acking an input sends the XOR of that input's edge and
the edges of everything it emitted anchored to it (``ack``). Every edge is
XORed in exactly twice (created, acked), so the acker's value returns to 0
exactly when the whole tree is processed, whatever its size: constant memory
per spout tuple. A ``fail`` anywhere fails the root at once.

Ack traffic is batched: each task buffers its inits, acks and fails per acker
task and sends one ``__ack`` tuple per acker per executor step, as parallel
int lists (``[[roots, xors, spout tasks], [roots, xors], [roots]]``: no object
per entry; the acker XORs the acks of one root together). Ackers answer the
spout task with one ``__ack_result`` tuple per step: ``[acked roots, failed
roots]``.

Timeouts are kept on both sides: the spout fails a root that is not complete
after ``topology.message_timeout`` (so a lost acker or a dropped frame still
ends in ``fail``), and the acker forgets roots older than that (its memory
stays bounded).
"""

from __future__ import annotations

import os
import sys
import time
from collections import OrderedDict
from typing import Any, Final

ACKER = "__acker"
ACK_STREAM = "__ack"  # any task -> acker: [inits [roots, xors, spout tasks], acks [roots, xors], fails [roots]]
ACK_RESULT_STREAM = "__ack_result"  # acker -> spout task: [acked roots, failed roots]
ACK_INDEX = {"inits": 0, "acks": 1, "fails": 2}

# Entries per list in one ack or ack-result message: well under what a worker decodes in one
# array (wire.frames.MIN_ARRAY_LEN), however many acks a step (or a commit) releases.
ACK_CHUNK = 1024
ID_BITS = 62  # ids stay small ints for the compiled code (no big-int arithmetic); 2**-62 per tree to err
POOL_SIZE = 4096
_pool: Final[list[int]] = []  # ids drawn ahead, a pool at a time (one urandom call per pool)


def new_id() -> int:
    """A random non-zero 62-bit id."""
    while True:
        try:
            return _pool.pop() or 1
        except IndexError:
            _refill()


_TOP_BYTE = bytes([b & (0xFF >> (64 - ID_BITS)) for b in range(256)])  # clears a word's top bits
_TOP = 7 if sys.byteorder == "little" else 0  # where a native 64-bit word keeps its top byte


def _refill() -> None:
    """Fill the pool from the OS's random source (after a fork too: see below), masked to
    ``ID_BITS`` bits a word by byte operations, so no integer wider than an id is made."""
    buf = bytearray(os.urandom(8 * POOL_SIZE))
    buf[_TOP::8] = buf[_TOP::8].translate(_TOP_BYTE)
    _pool.extend(memoryview(buf).cast("Q").tolist())


os.register_at_fork(after_in_child=_pool.clear)  # a forked child must not reuse its parent's ids


class AckBuffer:
    """One task's pending ack traffic, per acker task, until the next flush.

    ``local`` are the acker tasks in this task's own worker: a spout's new roots
    are chosen so that their acker is one of them (Storm's co-located ackers),
    so inits and ack results stay in the process.
    """

    def __init__(self, ackers: tuple[int, ...], local: frozenset[int] = frozenset()):
        self.ackers = ackers
        self.preferred: tuple[int, ...] = tuple(i for i, a in enumerate(ackers) if a in local)
        self.inits: dict[int, list[list[int]]] = {}  # acker task -> [roots, xors, spout tasks]
        self.acks: dict[int, list[list[int]]] = {}  # acker task -> [roots, xors]
        self.fails: dict[int, list[int]] = {}  # acker task -> roots
        self.dirty = False

    def new_root(self) -> int:
        """A new root id, tracked by a local acker task where there is one."""
        root = new_id()
        preferred = self.preferred
        if preferred:
            n = len(self.ackers)
            root = root - root % n + preferred[(root // n) % len(preferred)]
            if root == 0:
                root = n  # acker index 0, which is then the preferred one
        return root

    def acker(self, root: int) -> int:
        ackers = self.ackers
        return ackers[root % len(ackers)]

    def init(self, root: int, xor: int, spout_task: int) -> None:
        acker = self.acker(root)
        lists = self.inits.get(acker)
        if lists is None:
            lists = self.inits[acker] = [[], [], []]
        lists[0].append(root)
        lists[1].append(xor)
        lists[2].append(spout_task)
        self.dirty = True

    def ack(self, root: int, xor: int) -> None:
        ackers = self.ackers
        acker = ackers[root % len(ackers)]
        lists = self.acks.get(acker)
        if lists is None:
            lists = self.acks[acker] = [[], []]
        lists[0].append(root)
        lists[1].append(xor)
        self.dirty = True

    def fail(self, root: int) -> None:
        self.fails.setdefault(self.acker(root), []).append(root)
        self.dirty = True

    def drain(self) -> list[tuple[int, list[Any]]]:
        """(acker task, ``__ack`` values) for every acker with buffered traffic, at most
        ``ACK_CHUNK`` entries a list per message (a commit releases a checkpoint's acks at
        once); empties the buffer."""
        inits, acks, fails = self.inits, self.acks, self.fails
        self.inits, self.acks, self.fails, self.dirty = {}, {}, {}, False
        out: list[tuple[int, list[Any]]] = []
        for acker in set(inits) | set(acks) | set(fails):
            i = inits.get(acker) or [[], [], []]
            a = acks.get(acker) or [[], []]
            f = fails.get(acker, [])
            longest = max(len(i[0]), len(a[0]), len(f))
            if longest <= ACK_CHUNK:
                out.append((acker, [i, a, f]))
                continue
            for start in range(0, longest, ACK_CHUNK):
                end = start + ACK_CHUNK
                out.append((acker, [[i[0][start:end], i[1][start:end], i[2][start:end]],
                                    [a[0][start:end], a[1][start:end]], f[start:end]]))
        return out


class _Tree:
    """An acker's entry for one root: a native object when compiled (typed fields, no boxing)."""

    __slots__ = ("xor", "spout_task", "failed", "generation")

    def __init__(self, xor: int, spout_task: int, failed: bool, generation: int) -> None:
        self.xor = xor
        self.spout_task = spout_task  # 0 before the init arrived
        self.failed = failed
        self.generation = generation  # when last touched (expire forgets old generations)


class AckerTable:
    """An acker task's state: root -> its tree (XOR so far, spout task, failed, generation).

    One dict, so an ack costs one lookup. Every ``timeout / (generations - 1)``
    seconds ``expire`` starts a new generation and forgets the roots last
    touched ``generations`` generations ago: a root is forgotten between
    ``timeout`` and ``timeout * generations / (generations - 1)`` after it was
    last touched. The spout has already failed it by then.
    """

    def __init__(self, timeout: float, generations: int = 3, now: float | None = None):
        self.entries: dict[int, _Tree] = {}
        self.generations = generations
        self.generation = 0
        self.interval = timeout / (generations - 1)
        self.next_rotation = (time.monotonic() if now is None else now) + self.interval

    def __len__(self) -> int:
        return len(self.entries)

    def apply(self, inits: list, acks: list, fails: list,
              acked: dict[int, list[int]], failed: dict[int, list[int]]) -> None:
        """Apply one ``__ack`` message; completed roots are appended to ``acked[spout task]``,
        failed ones (whose spout task is known) to ``failed[spout task]``. Fails go first: a
        tree that failed anywhere is never reported complete. Raises ValueError when the
        message's lists are not parallel (and changes nothing then)."""
        init_roots, init_xors, init_tasks = inits
        ack_roots, ack_xors = acks
        if len(init_xors) != len(init_roots) or len(init_tasks) != len(init_roots) or (
                len(ack_xors) != len(ack_roots)):
            raise ValueError("the lists of an ack message must be parallel")
        entries = self.entries
        gen = self.generation
        for root in fails:
            tree = entries.get(root)
            if tree is None:
                entries[root] = _Tree(0, 0, True, gen)  # failed before its init arrived: fail it then
            elif tree.spout_task:
                del entries[root]
                failed.setdefault(tree.spout_task, []).append(root)
            else:
                tree.failed = True
                tree.generation = gen
        for i in range(len(init_roots)):
            root = init_roots[i]
            spout_task: int = init_tasks[i]
            tree = entries.get(root)
            if tree is None:
                tree = entries[root] = _Tree(init_xors[i], spout_task, False, gen)
            else:
                tree.xor ^= init_xors[i]
                tree.spout_task = spout_task
                tree.generation = gen
            if tree.failed:
                del entries[root]
                failed.setdefault(spout_task, []).append(root)
            elif tree.xor == 0:
                del entries[root]
                acked.setdefault(spout_task, []).append(root)
        for i in range(len(ack_roots)):
            root = ack_roots[i]
            tree = entries.get(root)
            if tree is None:
                entries[root] = _Tree(ack_xors[i], 0, False, gen)
                continue
            x = tree.xor ^ ack_xors[i]
            tree.xor = x
            tree.generation = gen
            if x == 0 and tree.spout_task and not tree.failed:
                del entries[root]
                acked.setdefault(tree.spout_task, []).append(root)

    def expire(self, now: float) -> int:
        """Start the generations that are due; returns how many roots were forgotten."""
        if now < self.next_rotation:
            return 0
        due = int((now - self.next_rotation) // self.interval) + 1
        self.next_rotation += due * self.interval
        self.generation += due
        limit = self.generation - self.generations
        stale = [root for root, tree in self.entries.items() if tree.generation <= limit]
        for root in stale:
            del self.entries[root]
        return len(stale)


class PendingRoots:
    """A spout task's in-flight roots, oldest first: root -> (msg_id, emitted at)."""

    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: OrderedDict[int, tuple[Any, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, root: int, msg_id: Any, now: float) -> None:
        self.entries[root] = (msg_id, now)

    def pop(self, root: int) -> tuple[Any, float] | None:
        return self.entries.pop(root, None)

    def expired(self, now: float, timeout: float) -> list[tuple[Any, float]]:
        """Remove and return the entries emitted ``timeout`` seconds ago or earlier."""
        out = []
        entries = self.entries
        limit = now - timeout
        while entries:
            root, entry = next(iter(entries.items()))
            if entry[1] > limit:
                break
            del entries[root]
            out.append(entry)
        return out

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
from typing import Any, Final

ACKER = "__acker"
ACK_STREAM = "__ack"  # any task -> acker: [inits [roots, xors, spout tasks], acks [roots, xors], fails [roots]]
ACK_RESULT_STREAM = "__ack_result"  # acker -> spout task: [acked roots, failed roots]
ACK_INDEX = {"inits": 0, "acks": 1, "fails": 2}

# Entries per list in one ack or ack-result message: well under what a worker decodes in one
# array (wire.frames.MIN_ARRAY_LEN), however many acks a step (or a commit) releases.
ACK_CHUNK = 1024
ID_BITS = 62  # ids stay small ints for the compiled code (no big-int arithmetic); 2**-62 per tree to err
_M32: Final = 0xFFFFFFFF
_M30: Final = 0x3FFFFFFF


class IdGenerator:
    """Edge and root ids: Marsaglia's xorshift64 (shifts 13, 7, 17; period 2**64 - 1), seeded
    from the OS's random source, its 64-bit state kept as two 32-bit halves so every value
    in the arithmetic is a small int (native and unboxed when compiled: no object is made
    or freed per id). Storm draws its ids the same way, from a fast per-executor generator
    (``java.util.Random``), not from the OS per id: ids need to be spread, not secret."""

    __slots__ = ("hi", "lo")

    def __init__(self, state: int = 0) -> None:
        self.hi = 0
        self.lo = 0
        self.seed(state)

    def seed(self, state: int = 0) -> None:
        """Start from ``state`` (64 bits, not 0), or from a random state."""
        while not state & 0xFFFFFFFFFFFFFFFF:
            state = int.from_bytes(os.urandom(8), "little")
        self.hi = (state >> 32) & _M32
        self.lo = state & _M32

    def state(self) -> int:
        return (self.hi << 32) | self.lo

    def next(self) -> int:
        """A non-zero ``ID_BITS``-bit id: the low 62 bits of the generator's next state."""
        hi = self.hi
        lo = self.lo
        hi ^= ((hi << 13) | (lo >> 19)) & _M32  # x ^= x << 13
        lo ^= (lo << 13) & _M32
        lo ^= (lo >> 7) | ((hi << 25) & _M32)  # x ^= x >> 7
        hi ^= hi >> 7
        hi ^= ((hi << 17) | (lo >> 15)) & _M32  # x ^= x << 17
        lo ^= (lo << 17) & _M32
        self.hi = hi
        self.lo = lo
        return ((hi & _M30) << 32) | lo or 1


_ids: Final = IdGenerator()
# Interpreted, the generator's dozen int operations cost more than taking ids from a pool
# drawn ahead from the OS (one urandom call per POOL_SIZE ids); compiled, they are native.
_NATIVE: Final = not __file__.endswith(".py")
POOL_SIZE = 4096
_pool: Final[list[int]] = []
_TOP_BYTE = bytes([b & (0xFF >> (64 - ID_BITS)) for b in range(256)])  # clears a word's top bits
_TOP = 7 if sys.byteorder == "little" else 0  # where a native 64-bit word keeps its top byte


def new_id() -> int:
    """A random non-zero 62-bit id."""
    if _NATIVE:
        return _ids.next()
    while True:
        try:
            return _pool.pop() or 1
        except IndexError:
            _refill()


def _refill() -> None:
    """Fill the pool from the OS's random source, masked to ``ID_BITS`` bits a word by byte
    operations, so no integer wider than an id is made."""
    buf = bytearray(os.urandom(8 * POOL_SIZE))
    buf[_TOP::8] = buf[_TOP::8].translate(_TOP_BYTE)
    _pool.extend(memoryview(buf).cast("Q").tolist())


def _after_fork() -> None:
    """A forked child must not repeat its parent's ids."""
    _ids.seed()
    _pool.clear()


os.register_at_fork(after_in_child=_after_fork)


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
        if len(inits) != 3 or len(acks) != 2:
            raise ValueError("an ack message holds [roots, xors, spout tasks] and [roots, xors]")
        # XORs and spout tasks typed as ints, so the compiled loops below unbox and XOR them
        # natively (something else in them raises TypeError: the acker drops the message as
        # malformed); roots stay the objects the message holds, used as dict keys as they are.
        init_roots: list[Any] = inits[0]
        init_xors: list[int] = inits[1]
        init_tasks: list[int] = inits[2]
        ack_roots: list[Any] = acks[0]
        ack_xors: list[int] = acks[1]
        fail_roots: list[Any] = fails
        if len(init_xors) != len(init_roots) or len(init_tasks) != len(init_roots) or (
                len(ack_xors) != len(ack_roots)):
            raise ValueError("the lists of an ack message must be parallel")
        entries = self.entries
        gen = self.generation
        for root in fail_roots:
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
    """A spout task's in-flight roots, oldest first: root -> (msg_id, emitted at).

    A plain dict (insertion order is emission order for a monotonic clock): cheaper per
    add and pop than an ``OrderedDict``. ``oldest`` bounds the emission times of the
    entries from below, so :meth:`expired` returns at once while nothing can be due
    instead of walking past the popped slots at the dict's front every turn."""

    __slots__ = ("entries", "oldest")

    def __init__(self) -> None:
        # Keyed by the root objects as they are (Any): the roots an ack result names are looked
        # up without being converted to native ints and boxed again for each dict operation.
        self.entries: dict[Any, tuple[Any, float]] = {}
        self.oldest = 0.0

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, root: int, msg_id: Any, now: float) -> None:
        entries = self.entries
        if not entries:
            self.oldest = now
        entries[root] = (msg_id, now)

    def pop(self, root: Any) -> tuple[Any, float] | None:
        entries = self.entries
        entry = entries.get(root)
        if entry is not None:
            del entries[root]
        return entry

    def expired(self, now: float, timeout: float) -> list[tuple[Any, float]]:
        """Remove and return the entries emitted ``timeout`` seconds ago or earlier."""
        out: list[tuple[Any, float]] = []
        entries = self.entries
        limit = now - timeout
        if not entries or self.oldest > limit:
            return out
        stale: list[Any] = []
        for root, entry in entries.items():
            if entry[1] > limit:
                self.oldest = entry[1]
                break
            stale.append(root)
            out.append(entry)
        for root in stale:
            del entries[root]
        return out

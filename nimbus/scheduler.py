"""The default scheduler: which worker slots run which executors.

A pure function, like Storm's scheduler plug-in: nimbus's leader calls
:func:`schedule` with what ZooKeeper says (topologies that should run, live
supervisors, current assignments) and writes back whichever results differ from
the current ones. No I/O, no clock, no randomness: the same input always gives
the same output.

Policy (Storm's even scheduler, made sticky):

* Topologies are served in order of ``(submitted_at, id)``; an earlier topology
  never loses a slot to a later one, and no topology takes a slot that another
  topology's current assignment holds.
* A running placement is left alone unless it must change (a dead slot, a
  different worker count or executor set, new code, or free slots have appeared
  for a topology that got fewer workers than it asked for).
* Otherwise the topology keeps its live slots (up to the wanted count), takes
  free slots spreading its workers evenly over supervisors, and spreads its
  executors evenly over its slots, moving as few executors as it can.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from streamgale.cluster.records import (
    Assignment,
    ExecutorTasks,
    SlotAssignment,
    SupervisorInfo,
    TopologyRecord,
    slot_id,
)

Slot = tuple[str, int]  # (supervisor id, port); sorts by supervisor id, then port


def schedule(topologies: Sequence[TopologyRecord], supervisors: Mapping[str, SupervisorInfo],
             current: Mapping[str, Assignment], now: float) -> dict[str, Assignment]:
    """Assign every topology in ``topologies`` to worker slots.

    ``topologies`` are the ones that should run (the caller drops KILLED ones);
    ``supervisors`` the live supervisors by id; ``current`` the assignments now
    in ZooKeeper by topology id (those of topologies not in ``topologies`` are
    ignored and their slots count as free). Returns topology id ->
    assignment. An unchanged placement is returned as the very object from
    ``current``; a new one has ``assigned_at=now``, the current assignment's
    ``version`` (-1 if there was none) and the record's ``code_digest``. A
    topology that cannot get a single slot has no entry.

    Each topology gets ``min(workers, number of executors)`` slots (at least
    one) if that many are free, else every free slot; each of its executors
    runs in exactly one slot, and slot loads differ by at most one executor.
    """
    live: dict[str, Slot] = {slot_id(s.id, p): (s.id, p)
                             for s in supervisors.values() for p in s.ports}
    ordered = sorted(topologies, key=lambda r: (r.submitted_at, r.id))
    pending_claims: dict[str, set[str]] = {
        r.id: set(current[r.id].slots) & live.keys() for r in ordered if r.id in current}
    taken: set[str] = set()  # slots given to topologies already served
    result: dict[str, Assignment] = {}
    for rec in ordered:
        pending_claims.pop(rec.id, None)
        held_by_others = taken.union(*pending_claims.values())
        free = [live[s] for s in live.keys() - held_by_others]
        assignment = _schedule_one(rec, supervisors, current.get(rec.id), free, held_by_others, now)
        if assignment is not None:
            result[rec.id] = assignment
            taken.update(assignment.slots)
    return result


def worker_cap(requested: int, executors: int, free_slots: int) -> tuple[int, str | None]:
    """How many of ``requested`` workers a topology of ``executors`` executors gets when
    ``free_slots`` slots are free to it (its own included), as :func:`schedule` decides, and why
    it gets fewer (None: it gets them all)."""
    if requested > executors:
        return min(executors, free_slots), (
            f"{requested} workers requested, but it has {executors} executors and a worker runs at least one: "
            f"it gets at most {executors}")
    if requested > free_slots:
        return free_slots, (f"{requested} workers requested, but the cluster has {free_slots} free slots: it "
                            f"runs in {free_slots} (add supervisors, or slots with `workers`, for the rest)")
    return requested, None


def _schedule_one(rec: TopologyRecord, supervisors: Mapping[str, SupervisorInfo], cur: Assignment | None,
                  free: list[Slot], held_by_others: set[str], now: float) -> Assignment | None:
    """One topology's assignment, given the slots not held by any other topology.

    ``free`` includes the topology's own current live slots.
    """
    executors = rec.executors()
    if not executors:
        return None
    wanted = max(1, min(rec.workers, len(executors)))
    own = set(cur.slots) if cur is not None else set()
    if cur is not None and _still_good(rec, cur, executors, wanted, supervisors, free, own, held_by_others):
        return cur
    kept = _keep(cur, free, wanted)
    slots = _add_free(kept, [s for s in free if slot_id(*s) not in own], wanted)
    if not slots:
        return None
    placement = _place(executors, slots, cur)
    out = {}
    for sup, port in sorted(slots):
        out[slot_id(sup, port)] = SlotAssignment(sup, supervisors[sup].host, port, placement[(sup, port)])
    return Assignment(rec.id, rec.code_digest, out, now, cur.version if cur is not None else -1)


def _still_good(rec: TopologyRecord, cur: Assignment, executors: list[ExecutorTasks], wanted: int,
                supervisors: Mapping[str, SupervisorInfo], free: list[Slot], own: set[str],
                held_by_others: set[str]) -> bool:
    """Whether ``cur`` may stay exactly as it is."""
    if cur.code_digest != rec.code_digest or not cur.slots:
        return False
    for sid, s in cur.slots.items():
        sup = supervisors.get(s.supervisor_id)
        if (sid in held_by_others or sid != s.slot or sup is None or s.port not in sup.ports
                or s.host != sup.host or not s.executors):
            return False
    placed = Counter(e for s in cur.slots.values() for e in s.executors)
    if placed != Counter(executors):
        return False
    if len(cur.slots) == wanted:
        return True
    more_free = any(slot_id(*s) not in own for s in free)
    return len(cur.slots) < wanted and not more_free


def _keep(cur: Assignment | None, free: list[Slot], wanted: int) -> list[Slot]:
    """The topology's current live slots it keeps: at most ``wanted``, spread over nodes.

    When some must go (fewer workers wanted), prefer keeping the busiest slots
    (fewest executors move), and spread the kept ones over supervisors.
    """
    if cur is None:
        return []
    free_ids = {slot_id(*s): s for s in free}
    candidates = {free_ids[sid]: len(s.executors) for sid, s in cur.slots.items() if sid in free_ids}
    kept: list[Slot] = []
    per_node: Counter[str] = Counter()
    while candidates and len(kept) < wanted:
        best = min(candidates, key=lambda s: (per_node[s[0]], -candidates[s], s))
        del candidates[best]
        kept.append(best)
        per_node[best[0]] += 1
    return kept


def _add_free(kept: list[Slot], free: list[Slot], wanted: int) -> list[Slot]:
    """``kept`` plus free slots up to ``wanted``, spreading the topology's workers over nodes.

    Each pick goes to the node with the fewest slots of this topology, then the
    node with the most free slots, then the lowest supervisor id; on that node,
    the lowest port.
    """
    slots = list(kept)
    per_node = Counter(sup for sup, _ in slots)
    available: dict[str, list[int]] = {}
    for sup, port in sorted(free):
        available.setdefault(sup, []).append(port)
    while len(slots) < wanted and available:
        sup = min(available, key=lambda n: (per_node[n], -len(available[n]), n))
        port = available[sup].pop(0)
        if not available[sup]:
            del available[sup]
        slots.append((sup, port))
        per_node[sup] += 1
    return slots


def _place(executors: list[ExecutorTasks], slots: list[Slot],
           cur: Assignment | None) -> dict[Slot, tuple[ExecutorTasks, ...]]:
    """Spread ``executors`` over ``slots`` (loads differ by at most one).

    An executor stays on the slot it runs on now while that slot is within its
    share; the slots that already hold the most executors get the larger
    shares. The rest fill the least-loaded slots in slot order.
    """
    order = {e: i for i, e in enumerate(executors)}
    now_on: dict[Slot, list[ExecutorTasks]] = {s: [] for s in slots}
    if cur is not None:
        seen: set[ExecutorTasks] = set()  # a corrupt assignment may list an executor twice
        for s in sorted(cur.slots.values(), key=lambda s: (s.supervisor_id, s.port)):
            key = (s.supervisor_id, s.port)
            if key in now_on:
                mine = {e for e in s.executors if e in order and e not in seen}
                seen |= mine
                now_on[key] = sorted(mine, key=order.__getitem__)
    base, extra = divmod(len(executors), len(slots))
    by_load = sorted(slots, key=lambda s: (-len(now_on[s]), s))
    share = {s: base + (1 if i < extra else 0) for i, s in enumerate(by_load)}
    placed: dict[Slot, list[ExecutorTasks]] = {s: now_on[s][:share[s]] for s in slots}
    done = {e for group in placed.values() for e in group}
    for e in executors:
        if e in done:
            continue
        target = min(sorted(slots), key=lambda s: (len(placed[s]) - share[s], s))
        placed[target].append(e)
        done.add(e)
    return {s: tuple(sorted(group, key=order.__getitem__)) for s, group in placed.items()}

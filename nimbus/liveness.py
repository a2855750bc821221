"""Which assigned worker slots are dead although their supervisor lives.

Pure logic with nimbus's own monotonic clock (no clock is compared across
hosts): each worker rewrites its heartbeat znode every second, bumping its
version; nimbus records when it last saw each slot's version change. A slot is
dead when

* it has never beaten and was first seen assigned ``launch_timeout`` ago, or
* its heartbeat has not changed for ``task_timeout``.

A dead slot is kept out of scheduling for ``blacklist`` seconds, so its
executors move to another slot instead of straight back. After a gap in
nimbus's own observations (ZooKeeper unreachable, leadership lost) every
slot's clock restarts: silence nimbus could not watch proves nothing. A nimbus that starts
(or takes over) sees every slot for the first time and so gives every worker
the full ``launch_timeout`` before judging it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from streamgale.cluster.records import Assignment, SupervisorInfo, slot_id


@dataclass
class SlotLiveness:
    task_timeout: float = 10.0
    launch_timeout: float = 30.0
    blacklist: float = 60.0
    max_gap: float = 3.0  # observations further apart than this (nimbus reconciles every second) mean it was blind
    # (topology id, slot id) -> (last version seen or None, when it last changed / was first seen)
    seen: dict[tuple[str, str], tuple[int | None, float]] = field(default_factory=dict)
    dead: dict[str, float] = field(default_factory=dict)  # slot id -> excluded until
    last_observed: float | None = None

    def observe(self, assignments: Mapping[str, Assignment], beats: Mapping[str, Mapping[str, int]],
                now: float) -> set[str]:
        """Update from the current assignments and heartbeat versions (topology id ->
        slot id -> version); return the slot ids that just turned dead."""
        newly: set[str] = set()
        keys = set()
        if self.last_observed is not None and now - self.last_observed > self.max_gap:
            # Nimbus was blind (ZooKeeper unreachable, not leader): silence it could not
            # observe proves nothing, so every slot's clock starts again.
            self.seen = {key: (version, now) for key, (version, _) in self.seen.items()}
        self.last_observed = now
        for tid, assignment in assignments.items():
            for slot in assignment.slots:
                key = (tid, slot)
                keys.add(key)
                version = beats.get(tid, {}).get(slot)
                last = self.seen.get(key)
                if last is None or (version is not None and version != last[0]):
                    self.seen[key] = (version, now)
                    continue
                limit = self.launch_timeout if last[0] is None else self.task_timeout
                if now - last[1] > limit and slot not in self.dead:
                    self.dead[slot] = now + self.blacklist
                    newly.add(slot)
        for key in list(self.seen):
            if key not in keys:
                del self.seen[key]
        for slot, until in list(self.dead.items()):
            if now >= until:
                del self.dead[slot]
        return newly

    def usable(self, supervisors: Mapping[str, SupervisorInfo]) -> dict[str, SupervisorInfo]:
        """The supervisors with their dead slots taken out of their ports."""
        if not self.dead:
            return dict(supervisors)
        out = {}
        for sid, info in supervisors.items():
            ports = tuple(p for p in info.ports if slot_id(sid, p) not in self.dead)
            out[sid] = info if len(ports) == len(info.ports) else _with_ports(info, ports)
        return out


def _with_ports(info: SupervisorInfo, ports: tuple[int, ...]) -> SupervisorInfo:
    from dataclasses import replace

    return replace(info, ports=ports)

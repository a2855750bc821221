"""One worker slot's state machine, like Storm's ``Slot.stateMachineStep``.

Pure and sans-IO: the supervisor's loop observes the world for each slot
(what the assignment wants, whether the code is unpacked, whether the worker
process lives, its last heartbeat, the time), calls :func:`step`, and carries
out the returned actions in order. After carrying out a :class:`Launch` it
must record the new process with :func:`launched`. Time is whatever the
caller's clock says (the supervisor uses ``time.monotonic()``, as workers do
for heartbeats); nothing here sleeps or reads a clock.

Phases::

    EMPTY --desired--> WAITING_FOR_CODE --code ready--> LAUNCHING --heartbeat--> RUNNING <--+
      ^                                                     |  worker died: relaunch   |     |
      +------------ KILLING <-- assignment changed / no heartbeat ---------------------+     |
                       ^                                           executors changed |     | beat with
                       +-- not taken in time ---------------------------- RESHAPING <-+-----+ the new ones

``RESHAPING``: the running worker's executors changed but not its topology or
code (a rebalance): the worker is not restarted; it learns its new executors
from its control message, stops the ones that left and starts the new ones in
place, and is RUNNING again once it beats with exactly the new ones.

``LAUNCHING`` with ``pid`` None means a launch is due at ``next_launch_at``
(a crash-loop backoff, or the :class:`Launch` just returned).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

from streamgale.cluster.records import ExecutorTasks


class Phase(str, Enum):
    """Where a slot is in its life (a str, so it prints and compares as its name)."""

    EMPTY = "EMPTY"
    WAITING_FOR_CODE = "WAITING_FOR_CODE"
    LAUNCHING = "LAUNCHING"
    RUNNING = "RUNNING"
    RESHAPING = "RESHAPING"
    KILLING = "KILLING"


EMPTY, WAITING_FOR_CODE, LAUNCHING, RUNNING, RESHAPING, KILLING = Phase


@dataclass(frozen=True)
class Desired:
    """What the assignment says this slot should run."""

    topology_id: str
    code_digest: str
    executors: tuple[ExecutorTasks, ...]


@dataclass(frozen=True)
class Heartbeat:
    """The last heartbeat the worker on this slot wrote.

    ``code_digest`` is optional: "" when the worker does not report it.
    """

    time: float
    pid: int
    topology_id: str
    executors: tuple[ExecutorTasks, ...]
    code_digest: str = ""


@dataclass(frozen=True)
class Observed:
    """What the supervisor sees for one slot at ``now``.

    ``code_ready``: the package for ``desired`` is unpacked locally.
    ``worker_alive``: the process at ``state.pid`` (launched or adopted) exists.
    """

    desired: Desired | None
    code_ready: bool
    worker_alive: bool
    heartbeat: Heartbeat | None
    now: float


@dataclass(frozen=True)
class SlotTiming:
    start_timeout: float = 30.0  # launch -> first heartbeat
    worker_timeout: float = 5.0  # heartbeat older than this: the worker hangs
    kill_grace: float = 3.0  # SIGTERM -> SIGKILL (repeated every kill_grace while it lives)
    reshape_timeout: float = 30.0  # new executors -> a heartbeat that carries them
    backoff_base: float = 0.5  # crash loop: wait base * 2**(n-1) before the n-th quick relaunch
    backoff_max: float = 30.0
    stable_after: float = 10.0  # a worker up this long is no longer crash-looping
    download_retry: float = 10.0  # ask again for code that has not arrived


@dataclass(frozen=True)
class SlotState:
    """Invariants: ``running`` is None exactly in EMPTY; ``pid`` is set in
    RUNNING, RESHAPING and KILLING, and in LAUNCHING once :func:`launched` recorded it.
    In RESHAPING ``running`` holds the executors the worker was told to take."""

    phase: Phase
    running: Desired | None = None
    pid: int | None = None
    launched_at: float = 0.0
    killed_at: float = 0.0
    restarts: int = 0  # quick deaths in a row
    next_launch_at: float = 0.0
    last_heartbeat: float | None = None  # time of the newest heartbeat seen from ``pid``
    code_requested_at: float = 0.0
    reshaped_at: float = 0.0  # when the worker was told to change its executors

    @classmethod
    def empty(cls) -> SlotState:
        return cls(EMPTY)


@dataclass(frozen=True)
class DownloadCode:
    topology_id: str
    code_digest: str


@dataclass(frozen=True)
class Launch:
    """Start a worker for ``desired``, then call :func:`launched` with its pid."""

    desired: Desired


@dataclass(frozen=True)
class Kill:
    """SIGTERM (``force`` False) or SIGKILL the worker; a gone process is fine."""

    pid: int
    force: bool
    reason: str


@dataclass(frozen=True)
class ReportCrash:
    """The worker died or hung; record a cluster error for the topology."""

    topology_id: str
    reason: str


Action = DownloadCode | Launch | Kill | ReportCrash


def launched(state: SlotState, pid: int, now: float) -> SlotState:
    """The state after the shell started the worker that a :class:`Launch` asked for."""
    return replace(state, phase=LAUNCHING, pid=pid, launched_at=now, last_heartbeat=None)


def adopt(hb: Heartbeat, alive: bool, now: float, timing: SlotTiming = SlotTiming()) -> SlotState:
    """The state of a slot found by a restarted supervisor, from the worker's last heartbeat.

    A live worker with a fresh heartbeat is adopted as RUNNING (its code digest
    is taken from the assignment on the next step if the heartbeat lacks it).
    A live worker with a stale heartbeat would hold the port forever, so it
    is adopted as KILLING and the next step kills it at once. Else EMPTY.
    """
    if not alive:
        return SlotState.empty()
    running = Desired(hb.topology_id, hb.code_digest, _norm(hb.executors))
    if now - hb.time <= timing.worker_timeout:
        return SlotState(RUNNING, running, hb.pid, launched_at=now, last_heartbeat=hb.time)
    return SlotState(KILLING, running, hb.pid, killed_at=float("-inf"))


def step(state: SlotState, obs: Observed, timing: SlotTiming) -> tuple[SlotState, list[Action]]:
    """Advance one slot by one observation; returns the new state and the actions to take, in order."""
    actions: list[Action] = []
    handler = _HANDLERS[state.phase]
    return handler(state, obs, timing, actions), actions


# -- phases -------------------------------------------------------------------------------------

def _empty(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    if obs.desired is None:
        return SlotState.empty()
    pending = replace(state, phase=LAUNCHING, running=obs.desired, pid=None)
    return _launch_due(pending, obs, timing, actions)


def _waiting_for_code(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    if not _same(obs.desired, state.running):
        return _empty(SlotState.empty(), obs, timing, actions)
    if obs.code_ready:
        return _launch_due(replace(state, phase=LAUNCHING), obs, timing, actions)
    if obs.now - state.code_requested_at >= timing.download_retry:
        return _request_code(state, obs, actions)
    return state


def _launching(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    assert state.running is not None
    if state.pid is None:
        if not _same(obs.desired, state.running):
            return _empty(SlotState.empty(), obs, timing, actions)
        return _launch_due(state, obs, timing, actions)
    if not obs.worker_alive:
        return _died(state, obs, timing, actions)
    if not _same(obs.desired, state.running):
        return _follow(state, obs, actions)  # new executors: it takes them once it runs
    state = _note_heartbeat(state, obs)
    if state.last_heartbeat is not None:
        return replace(state, phase=RUNNING)
    waited = obs.now - state.launched_at
    if waited > timing.start_timeout:
        reason = f"no heartbeat within {waited:.0f} s of launch"
        assert state.running is not None
        actions.append(ReportCrash(state.running.topology_id, f"worker pid {state.pid}: {reason}"))
        return _kill(_count_restart(state, obs, timing), obs, actions, reason, force=True)
    return state


def _running(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    assert state.running is not None and state.pid is not None
    if not obs.worker_alive:
        return _died(state, obs, timing, actions)
    if not _same(obs.desired, state.running):
        return _follow(state, obs, actions)
    if obs.desired is not None and not state.running.code_digest:
        state = replace(state, running=replace(state.running, code_digest=obs.desired.code_digest))
    state = _note_heartbeat(state, obs)
    assert state.last_heartbeat is not None
    silent = obs.now - state.last_heartbeat
    if silent > timing.worker_timeout:
        reason = f"no heartbeat for {silent:.0f} s"
        assert state.running is not None
        actions.append(ReportCrash(state.running.topology_id, f"worker pid {state.pid}: {reason}"))
        return _kill(_count_restart(state, obs, timing), obs, actions, reason, force=True)
    if state.restarts and obs.now - state.launched_at >= timing.stable_after:
        state = replace(state, restarts=0, next_launch_at=0.0)
    return state


def _reshaping(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    """The worker changes its executors in place: it beats with its old ones until it has."""
    assert state.running is not None and state.pid is not None
    if not obs.worker_alive:
        return _died(state, obs, timing, actions)
    if not _same(obs.desired, state.running):
        return _follow(state, obs, actions)  # changed again before it was done
    taken = _note_heartbeat(state, obs)
    if taken.last_heartbeat != state.last_heartbeat:
        return replace(taken, phase=RUNNING)
    hb = obs.heartbeat
    if hb is not None and hb.pid == state.pid and (state.last_heartbeat is None or hb.time > state.last_heartbeat):
        # Alive, still on its old executors; one still starting is told them at its first beat.
        first = state.last_heartbeat is None
        state = replace(state, last_heartbeat=hb.time,
                        reshaped_at=max(state.reshaped_at, hb.time) if first else state.reshaped_at)
    if state.last_heartbeat is None:
        silent, limit = obs.now - state.launched_at, timing.start_timeout
        reason = f"no heartbeat within {silent:.0f} s of launch"
    else:
        silent, limit = obs.now - state.last_heartbeat, timing.worker_timeout
        reason = f"no heartbeat for {silent:.0f} s"
    waited = obs.now - state.reshaped_at
    if silent > limit or waited > timing.reshape_timeout:
        if silent <= limit:
            reason = f"did not take its new executors within {waited:.0f} s"
        assert state.running is not None
        actions.append(ReportCrash(state.running.topology_id, f"worker pid {state.pid}: {reason}"))
        return _kill(_count_restart(state, obs, timing), obs, actions, reason, force=True)
    return state


def _killing(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    assert state.pid is not None
    if not obs.worker_alive:
        empty = SlotState.empty()
        if _same(obs.desired, state.running):  # killed because it hung: keep the crash-loop backoff
            empty = replace(empty, restarts=state.restarts, next_launch_at=state.next_launch_at)
        return _empty(empty, obs, timing, actions)
    if obs.now - state.killed_at >= timing.kill_grace:
        reason = ("adopted worker has a stale heartbeat" if state.killed_at == float("-inf")
                  else f"still alive {obs.now - state.killed_at:.0f} s after SIGTERM")
        actions.append(Kill(state.pid, True, reason))
        return replace(state, killed_at=obs.now)
    return state


_HANDLERS = {EMPTY: _empty, WAITING_FOR_CODE: _waiting_for_code, LAUNCHING: _launching, RUNNING: _running,
             RESHAPING: _reshaping, KILLING: _killing}


# -- helpers ------------------------------------------------------------------------------------

def _launch_due(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    """LAUNCHING without a process: launch once the backoff has passed and the code is here."""
    assert state.running is not None
    if obs.now < state.next_launch_at:
        return state
    if not obs.code_ready:
        return _request_code(replace(state, phase=WAITING_FOR_CODE), obs, actions)
    actions.append(Launch(state.running))
    return replace(state, phase=LAUNCHING, pid=None, last_heartbeat=None)


def _request_code(state: SlotState, obs: Observed, actions: list[Action]) -> SlotState:
    assert state.running is not None
    actions.append(DownloadCode(state.running.topology_id, state.running.code_digest))
    return replace(state, code_requested_at=obs.now)


def _kill(state: SlotState, obs: Observed, actions: list[Action], reason: str, force: bool = False) -> SlotState:
    """SIGTERM (SIGKILL with ``force``: a worker that cannot heartbeat cannot shut down cleanly)."""
    assert state.pid is not None
    actions.append(Kill(state.pid, force, reason))
    return replace(state, phase=KILLING, killed_at=obs.now)


def _follow(state: SlotState, obs: Observed, actions: list[Action]) -> SlotState:
    """The assignment of a slot whose worker lives changed: the worker takes new executors in
    place (:func:`_reshapes`), else it is stopped."""
    assert state.running is not None
    if _reshapes(obs.desired, state.running):
        assert obs.desired is not None
        return _reshape(state, obs.desired, obs)
    return _kill(state, obs, actions, f"assignment changed ({_change(state.running, obs.desired)})")


def _reshapes(desired: Desired | None, running: Desired) -> bool:
    """Whether the running worker can take ``desired`` in place: same topology and code, other
    executors (a rebalance); a worker left with no executors is stopped instead."""
    return (desired is not None and bool(desired.executors) and desired.topology_id == running.topology_id
            and (not running.code_digest or desired.code_digest == running.code_digest))


def _reshape(state: SlotState, desired: Desired, obs: Observed) -> SlotState:
    """The worker learns its new executors from its control message (the supervisor sends it on
    an assignment change); the slot waits for a beat that carries them."""
    return replace(state, phase=RESHAPING, running=desired, reshaped_at=obs.now)


def _count_restart(state: SlotState, obs: Observed, timing: SlotTiming) -> SlotState:
    """One more failure: set the delay before the next launch (none after a stable run).

    Only a worker that heartbeated (RUNNING) for ``stable_after`` ran stably; one
    that never came up keeps counting, however long it took to fail.
    """
    stable = state.phase in (RUNNING, RESHAPING) and obs.now - state.launched_at >= timing.stable_after
    restarts = 0 if stable else state.restarts
    delay = 0.0 if restarts == 0 else min(timing.backoff_base * 2 ** (restarts - 1), timing.backoff_max)
    return replace(state, restarts=restarts + 1, next_launch_at=obs.now + delay)


def _died(state: SlotState, obs: Observed, timing: SlotTiming, actions: list[Action]) -> SlotState:
    """The worker is gone without being told to go: report it, and relaunch if still wanted. A
    worker whose assignment changed stops by itself when it learns of it (a rebalance, a kill):
    that is not a crash."""
    assert state.running is not None
    if not _same(obs.desired, state.running):
        return _empty(SlotState.empty(), obs, timing, actions)
    up = obs.now - state.launched_at
    actions.append(ReportCrash(state.running.topology_id, f"worker pid {state.pid} exited {up:.1f} s after launch"))
    pending = replace(_count_restart(state, obs, timing), phase=LAUNCHING, pid=None, last_heartbeat=None)
    return _launch_due(pending, obs, timing, actions)


def _note_heartbeat(state: SlotState, obs: Observed) -> SlotState:
    """Remember the newest heartbeat written by our process for our work."""
    hb, running = obs.heartbeat, state.running
    assert running is not None
    if (hb is None or hb.pid != state.pid or hb.topology_id != running.topology_id
            or _norm(hb.executors) != _norm(running.executors)
            or (state.last_heartbeat is not None and hb.time <= state.last_heartbeat)):
        return state
    return replace(state, last_heartbeat=hb.time)


def _norm(executors: tuple[ExecutorTasks, ...]) -> tuple[ExecutorTasks, ...]:
    return tuple(sorted((str(c), tuple(int(t) for t in ts)) for c, ts in executors))


def _same(desired: Desired | None, running: Desired | None) -> bool:
    """Whether the worker for ``running`` is the one ``desired`` asks for.

    An empty ``running.code_digest`` (an adopted worker that did not report
    it) matches any digest.
    """
    if desired is None or running is None:
        return desired is running
    return (desired.topology_id == running.topology_id
            and (not running.code_digest or desired.code_digest == running.code_digest)
            and _norm(desired.executors) == _norm(running.executors))


def _change(running: Desired, desired: Desired | None) -> str:
    if desired is None:
        return "slot no longer assigned"
    if desired.topology_id != running.topology_id:
        return f"now assigned to {desired.topology_id}"
    if desired.code_digest != running.code_digest:
        return "new code"
    return "executors changed"

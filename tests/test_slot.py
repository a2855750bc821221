"""The slot state machine, fed observations: no processes, no sleeps."""

from dataclasses import replace

import pytest
from streamgale.supervisor.slot import (
    EMPTY,
    KILLING,
    LAUNCHING,
    RESHAPING,
    RUNNING,
    WAITING_FOR_CODE,
    Desired,
    DownloadCode,
    Heartbeat,
    Kill,
    Launch,
    Observed,
    ReportCrash,
    SlotState,
    SlotTiming,
    adopt,
    launched,
    step,
)

T = SlotTiming()
WC = Desired("wc-1", "d1", (("count", (1, 2)), ("split", (5,))))
OTHER = Desired("other-2", "d9", (("spout", (1,)),))


class Slot:
    """Drives one slot like the supervisor does: step, then record launches."""

    def __init__(self, state=None, timing=T):
        self.state = state or SlotState.empty()
        self.timing = timing
        self.next_pid = 100
        self.alive = False  # does the process at state.pid live?
        self.heartbeat = None
        self.code_ready = True

    def step(self, now, desired=WC):
        obs = Observed(desired, self.code_ready, self.alive, self.heartbeat, now)
        self.state, actions = step(self.state, obs, self.timing)
        for a in actions:
            if isinstance(a, Launch):
                self.next_pid += 1
                self.state = launched(self.state, self.next_pid, now)
                self.alive, self.heartbeat = True, None
        return actions

    def beat(self, now, desired=WC):
        self.heartbeat = Heartbeat(now, self.state.pid, desired.topology_id, desired.executors)


def kinds(actions):
    return [type(a) for a in actions]


def running_slot(now=100.0):
    s = Slot()
    s.step(now)
    s.beat(now + 1)
    s.step(now + 1)
    assert s.state.phase == RUNNING
    return s


def test_empty_stays_empty_without_assignment():
    state, actions = step(SlotState.empty(), Observed(None, False, False, None, 1.0), T)
    assert state == SlotState.empty() and actions == []


def test_empty_downloads_code_then_launches():
    s = Slot()
    s.code_ready = False
    assert s.step(100.0) == [DownloadCode("wc-1", "d1")]
    assert s.state.phase == WAITING_FOR_CODE and s.state.running == WC
    assert s.step(101.0) == []  # the download is under way
    assert s.step(100.0 + T.download_retry) == [DownloadCode("wc-1", "d1")]  # it may have failed: ask again
    s.code_ready = True
    assert s.step(112.0) == [Launch(WC)]
    assert s.state.phase == LAUNCHING and s.state.pid == 101 and s.state.launched_at == 112.0


def test_waiting_for_code_gives_up_when_unassigned():
    s = Slot()
    s.code_ready = False
    s.step(100.0)
    assert s.step(101.0, desired=None) == []
    assert s.state == SlotState.empty()


def test_waiting_for_code_follows_a_new_assignment():
    s = Slot()
    s.code_ready = False
    s.step(100.0)
    assert s.step(101.0, desired=OTHER) == [DownloadCode("other-2", "d9")]
    assert s.state.running == OTHER


def test_empty_with_code_launches_at_once():
    s = Slot()
    assert s.step(100.0) == [Launch(WC)]
    assert s.state.phase == LAUNCHING and s.state.running == WC


def test_launching_becomes_running_on_a_matching_heartbeat():
    s = Slot()
    s.step(100.0)
    s.heartbeat = Heartbeat(100.5, 999, "wc-1", WC.executors)  # someone else's pid
    assert s.step(101.0) == [] and s.state.phase == LAUNCHING
    s.heartbeat = Heartbeat(100.6, s.state.pid, "wc-1", (("count", (1,)),))  # other executors
    assert s.step(101.0) == [] and s.state.phase == LAUNCHING
    s.heartbeat = Heartbeat(101.5, s.state.pid, "wc-1", tuple(reversed(WC.executors)))  # order does not matter
    assert s.step(102.0) == [] and s.state.phase == RUNNING


def test_launching_without_heartbeat_is_killed_after_start_timeout():
    s = Slot()
    s.step(100.0)
    assert s.step(100.0 + T.start_timeout) == []
    actions = s.step(100.5 + T.start_timeout)
    assert kinds(actions) == [ReportCrash, Kill]
    kill = actions[1]
    assert kill.pid == 101 and kill.force and "no heartbeat" in kill.reason
    assert s.state.phase == KILLING


def test_running_with_stale_heartbeat_is_killed():
    s = running_slot()  # last heartbeat at 101
    assert s.step(101.0 + T.worker_timeout) == []
    actions = s.step(102.0 + T.worker_timeout)
    assert kinds(actions) == [ReportCrash, Kill]
    assert actions[1] == Kill(101, True, "no heartbeat for 6 s")  # SIGKILL: it cannot shut down
    assert s.state.phase == KILLING


def test_fresh_heartbeats_keep_it_running():
    s = running_slot()
    for t in range(102, 200):
        s.beat(float(t))
        assert s.step(t + 0.5) == []
    assert s.state.phase == RUNNING


def test_a_missing_heartbeat_file_is_not_fatal_by_itself():
    s = running_slot()
    s.heartbeat = None  # e.g. read while being replaced
    assert s.step(102.0) == [] and s.state.phase == RUNNING


def test_worker_death_relaunches_at_once_the_first_time():
    s = running_slot()
    s.alive = False
    actions = s.step(150.0)
    assert kinds(actions) == [ReportCrash, Launch]
    assert actions[0].topology_id == "wc-1" and "exited" in actions[0].reason
    assert s.state.phase == LAUNCHING and s.state.pid == 102 and s.state.restarts == 1


def test_crash_loop_backs_off_exponentially_and_is_capped():
    s = Slot(timing=replace(T, backoff_max=4.0))
    now = 100.0
    s.step(now)
    delays = []
    for _ in range(6):
        s.alive = False
        now += 1.0  # dies a second after each launch
        actions = s.step(now)
        assert ReportCrash in kinds(actions)
        died_at = now
        while Launch not in kinds(actions):
            now += 0.25
            actions = s.step(now)
            assert ReportCrash not in kinds(actions)
        delays.append(now - died_at)
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_restart_counter_resets_after_a_stable_run():
    s = Slot()
    s.step(100.0)
    for t in (101.0, 101.5):
        s.alive = False
        while Launch not in kinds(s.step(t)):
            t += 0.1
    assert s.state.restarts == 2
    start = s.state.launched_at
    s.beat(start + 0.5)
    s.step(start + 0.5)
    s.beat(start + T.stable_after - 0.5)
    s.step(start + T.stable_after - 0.5)
    assert s.state.phase == RUNNING and s.state.restarts == 2
    s.beat(start + T.stable_after)
    s.step(start + T.stable_after)
    assert s.state.phase == RUNNING and s.state.restarts == 0
    s.alive = False
    assert kinds(s.step(start + T.stable_after + 1)) == [ReportCrash, Launch]  # immediately again


def test_death_after_a_stable_run_relaunches_at_once_even_without_a_reset_step():
    s = Slot()
    s.step(100.0)
    s.alive = False
    s.step(100.5)  # first crash: relaunched, restarts=1
    s.beat(101.0)
    s.step(101.0)
    s.alive = False
    actions = s.step(100.5 + T.stable_after)  # this one ran stable_after seconds
    assert kinds(actions) == [ReportCrash, Launch]


def test_workers_that_never_start_back_off():
    s = Slot()
    now = 100.0
    s.step(now)
    launches = [now]
    while len(launches) < 5:
        now += 0.5
        actions = s.step(now)
        if Kill in kinds(actions):
            s.alive = False  # it goes at the SIGTERM
        if Launch in kinds(actions):
            launches.append(now)
    gaps = [b - a for a, b in zip(launches, launches[1:])]
    # start_timeout, one step to see the kill work, then the backoff (0, 0.5, 1, 2 s) counted from the kill
    assert gaps == [31.0, 31.0, 31.5, 32.5]
    assert s.state.restarts == 4


def test_relaunch_waits_for_code_if_it_went_away():
    s = running_slot()
    s.alive, s.code_ready = False, False
    assert kinds(s.step(150.0)) == [ReportCrash, DownloadCode]
    assert s.state.phase == WAITING_FOR_CODE


MOVED = replace(WC, executors=(("count", (1, 2)), ("split", (6,))))  # a rebalance moved split's task


@pytest.mark.parametrize("desired,why", [
    (None, "no longer assigned"),
    (OTHER, "now assigned to other-2"),
    (replace(WC, executors=()), "executors changed"),  # MOVED: taken in place (below)
    (replace(WC, code_digest="d2"), "new code"),
])
def test_assignment_change_kills_gracefully(desired, why):
    for s in (running_slot(), Slot()):
        if s.state.phase == EMPTY:
            s.step(100.0)  # LAUNCHING
        pid = s.state.pid
        actions = s.step(110.0, desired=desired)
        assert len(actions) == 1 and actions[0].pid == pid and not actions[0].force
        assert why in actions[0].reason
        assert s.state.phase == KILLING and s.state.killed_at == 110.0


def test_killing_escalates_then_moves_on_to_the_new_assignment():
    s = running_slot()
    s.step(110.0, desired=OTHER)
    assert s.step(110.0 + T.kill_grace - 0.1, desired=OTHER) == []
    actions = s.step(110.0 + T.kill_grace, desired=OTHER)
    assert actions == [Kill(101, True, "still alive 3 s after SIGTERM")]
    assert s.step(111.0 + T.kill_grace, desired=OTHER) == []  # not every step
    assert kinds(s.step(110.0 + 2 * T.kill_grace, desired=OTHER)) == [Kill]  # again after another grace
    s.alive = False
    assert s.step(117.0, desired=OTHER) == [Launch(OTHER)]  # EMPTY, then on at once
    assert s.state.phase == LAUNCHING and s.state.running == OTHER and s.state.restarts == 0


def test_killing_to_empty_when_nothing_is_wanted():
    s = running_slot()
    s.step(110.0, desired=None)
    s.alive = False
    assert s.step(111.0, desired=None) == []
    assert s.state == SlotState.empty()


def test_hung_worker_is_killed_and_relaunched():
    s = running_slot()
    s.step(120.0)  # stale: ReportCrash + Kill
    s.alive = False
    assert s.step(121.0) == [Launch(WC)]  # first failure: no backoff
    assert s.state.restarts == 1


def test_worker_stopping_when_reassigned_is_not_a_crash_nor_relaunched():
    """A worker stops by itself when its assignment changes (a rebalance): no "worker died" error."""
    s = running_slot()
    s.alive = False
    actions = s.step(110.0, desired=OTHER)
    assert actions == [Launch(OTHER)]
    assert s.state.restarts == 0


def test_adopt_a_live_worker_with_fresh_heartbeat():
    hb = Heartbeat(99.0, 4242, "wc-1", WC.executors)
    state = adopt(hb, alive=True, now=100.0)
    assert state.phase == RUNNING and state.pid == 4242
    s = Slot(state)
    s.alive, s.heartbeat = True, hb
    assert s.step(100.5) == []  # not killed; the digest comes from the assignment
    assert s.state.phase == RUNNING and s.state.running == WC


def test_adopt_a_dead_worker_gives_empty():
    hb = Heartbeat(99.0, 4242, "wc-1", WC.executors)
    assert adopt(hb, alive=False, now=100.0) == SlotState.empty()


def test_adopt_a_hung_worker_kills_it():
    hb = Heartbeat(10.0, 4242, "wc-1", WC.executors)
    state = adopt(hb, alive=True, now=100.0)
    assert state.phase == KILLING
    s = Slot(state)
    s.alive = True
    assert s.step(100.1) == [Kill(4242, True, "adopted worker has a stale heartbeat")]
    s.alive = False
    assert s.step(100.2) == [Launch(WC)]


def test_adopted_worker_for_another_assignment_is_killed():
    hb = Heartbeat(99.0, 4242, "old-1", (("x", (1,)),))
    s = Slot(adopt(hb, alive=True, now=100.0))
    s.alive = True
    actions = s.step(100.5)
    assert kinds(actions) == [Kill] and actions[0].pid == 4242 and "now assigned to wc-1" in actions[0].reason


def test_launch_state_before_launched_is_recorded():
    state, actions = step(SlotState.empty(), Observed(WC, True, False, None, 5.0), T)
    assert actions == [Launch(WC)] and state.phase == LAUNCHING and state.pid is None
    state = launched(state, 77, 5.0)
    assert state.pid == 77 and state.launched_at == 5.0


def test_a_running_worker_takes_new_executors_in_place():
    """A rebalance that changes a worker's executors (same topology, same code) restarts nothing:
    the slot waits for a beat with the new executors, and beats with the old ones keep it alive."""
    s = running_slot()
    pid = s.state.pid
    assert s.step(110.0, desired=MOVED) == []
    assert s.state.phase == RESHAPING and s.state.running == MOVED and s.state.pid == pid
    s.beat(111.0)  # still the old executors: alive, not done
    assert s.step(111.0, desired=MOVED) == [] and s.state.phase == RESHAPING
    s.beat(112.0, desired=MOVED)
    assert s.step(112.0, desired=MOVED) == []
    assert s.state.phase == RUNNING and s.state.pid == pid and s.state.last_heartbeat == 112.0
    assert s.state.restarts == 0


def test_a_reshape_changed_again_follows_the_newest_executors():
    s = running_slot()
    s.step(110.0, desired=MOVED)
    again = replace(WC, executors=(("split", (5, 6)),))
    assert s.step(110.5, desired=again) == [] and s.state.running == again
    s.beat(111.0, desired=MOVED)  # the executors it was told first are not the ones wanted now
    assert s.step(111.0, desired=again) == [] and s.state.phase == RESHAPING
    assert kinds(s.step(111.5, desired=OTHER)) == [Kill]  # another topology: stopped after all


def test_a_worker_that_does_not_take_its_new_executors_is_killed():
    s = running_slot()
    s.step(110.0, desired=MOVED)
    for t in range(111, 140, 2):  # it beats, but never with the new executors
        s.beat(float(t))
        assert s.step(float(t), desired=MOVED) == []
    s.beat(141.0)
    actions = s.step(141.0, desired=MOVED)
    assert kinds(actions) == [ReportCrash, Kill] and actions[1].force
    assert "did not take its new executors within 31 s" in actions[0].reason


def test_a_silent_worker_while_reshaping_is_killed_as_hung():
    s = running_slot()
    s.beat(110.0)
    s.step(110.0, desired=MOVED)
    actions = s.step(110.0 + T.worker_timeout + 1, desired=MOVED)
    assert kinds(actions) == [ReportCrash, Kill] and "no heartbeat for 6 s" in actions[0].reason


def test_a_worker_dying_while_reshaping_is_a_crash_and_relaunched_with_the_new_executors():
    s = running_slot()
    s.step(110.0, desired=MOVED)
    s.alive = False
    actions = s.step(111.0, desired=MOVED)
    assert kinds(actions) == [ReportCrash, Launch] and actions[1] == Launch(MOVED)


def test_a_worker_still_starting_takes_new_executors_once_it_beats():
    s = Slot()
    s.step(100.0)  # launched, no beat yet
    pid = s.state.pid
    assert s.step(101.0, desired=MOVED) == [] and s.state.phase == RESHAPING
    assert s.step(101.0 + T.worker_timeout + 5, desired=MOVED) == []  # starting: the start timeout applies
    s.beat(120.0)  # up, with the executors of its launch file: told the new ones now
    assert s.step(120.0, desired=MOVED) == [] and s.state.reshaped_at == 120.0
    s.beat(121.0, desired=MOVED)
    assert s.step(121.0, desired=MOVED) == [] and s.state.phase == RUNNING and s.state.pid == pid


def test_a_worker_that_never_beats_after_a_reshape_is_killed_after_the_start_timeout():
    s = Slot()
    s.step(100.0)
    s.step(101.0, desired=MOVED)
    actions = s.step(100.0 + T.start_timeout + 1, desired=MOVED)
    assert kinds(actions) == [ReportCrash, Kill] and "no heartbeat within 31 s of launch" in actions[0].reason

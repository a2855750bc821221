"""`streamgale set-log-level` with a timeout (-t, Storm's LOGGER=LEVEL:SECONDS) and a reset (-r).

Units: the pure record changes nimbus makes (set, reset, expiry at an injected time), the
record's codec, and a worker putting a logger back to its own level. Then the real CLI
against an in-process cluster (nimbus, a supervisor, its workers as threads of this process,
so a worker's logger is this process's): a level reaches the worker, reverts after its
timeout, and a reset puts the logger back.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from conftest import run_cli
from streamgale.nimbus.log_levels import expired, with_level, without_expired, without_level
from streamgale.worker.daemon import apply_log_levels

from streamgale import client as sg
from streamgale.cluster.records import TopologyRecord
from streamgale.dev.inprocess import InProcessCluster

TOPOLOGY = str(Path(__file__).parent / "topologies" / "cluster_word_count.py")
RECORD = TopologyRecord("wc-1", "wc", "ACTIVE", {"components": {}}, {}, "d1", "wc.py", 1, {}, 0.0)


# -- nimbus's record changes (pure, the time passed in) -------------------------------------------


def test_a_level_with_a_timeout_expires_at_its_time_and_one_without_stays():
    rec = with_level(RECORD, "a", "DEBUG", 30.0, now=1000.0)
    rec = with_level(rec, "b", "ERROR", None, now=1000.0)
    assert (rec.log_levels, rec.log_level_expiry) == ({"a": "DEBUG", "b": "ERROR"}, {"a": 1030.0})
    assert without_expired(rec, 1029.9) is None and expired(rec, 1029.9) == []
    assert expired(rec, 1030.0) == ["a"]
    after = without_expired(rec, 1030.0)
    assert after is not None and (after.log_levels, after.log_level_expiry) == ({"b": "ERROR"}, {})
    assert without_expired(after, 10**9) is None  # b has no timeout


def test_setting_a_level_again_without_a_timeout_cancels_the_timeout():
    rec = with_level(with_level(RECORD, "a", "DEBUG", 5.0, now=0.0), "a", "INFO", None, now=1.0)
    assert (rec.log_levels, rec.log_level_expiry) == ({"a": "INFO"}, {})
    rec = with_level(rec, "a", "WARNING", 10.0, now=2.0)
    assert rec.log_level_expiry == {"a": 12.0}


def test_a_reset_drops_the_level_and_its_timeout_and_is_refused_for_a_logger_not_set():
    rec = with_level(with_level(RECORD, "a", "DEBUG", 5.0, now=0.0), "", "ERROR", None, now=0.0)
    reset = without_level(rec, "a")
    assert reset is not None and (reset.log_levels, reset.log_level_expiry) == ({"": "ERROR"}, {})
    assert without_level(reset, "a") is None
    stray = RECORD.with_(log_level_expiry={"gone": 5.0})  # an expiry whose level is gone is tidied away
    assert without_expired(stray, 0.0) == RECORD


def test_the_record_keeps_expiry_times_and_reads_one_stored_without_them():
    rec = with_level(RECORD, "a", "DEBUG", 30.0, now=1000.0)
    assert TopologyRecord.decode(rec.encode()) == rec
    stored = RECORD.to_dict()
    del stored["log_level_expiry"]  # as an older nimbus wrote it
    assert TopologyRecord.from_dict(stored).log_level_expiry == {}


# -- the worker -----------------------------------------------------------------------------------


def test_a_worker_puts_a_logger_back_to_its_own_level_when_it_leaves_the_levels():
    logger = logging.getLogger("sgtest.unit.levels")
    logger.setLevel(logging.WARNING)  # the worker's own level, before any set-log-level
    originals: dict[str, int] = {}
    try:
        apply_log_levels({"sgtest.unit.levels": "DEBUG"}, originals)
        assert logger.level == logging.DEBUG
        apply_log_levels({"sgtest.unit.levels": "ERROR"}, originals)  # changed again: the original stays
        assert logger.level == logging.ERROR and originals == {"sgtest.unit.levels": logging.WARNING}
        apply_log_levels({}, originals)
        assert logger.level == logging.WARNING and originals == {}
        apply_log_levels({}, originals)  # nothing to put back twice
        assert logger.level == logging.WARNING
    finally:
        logger.setLevel(logging.NOTSET)


def test_the_root_logger_is_put_back_too():
    root = logging.getLogger()
    before = root.level
    originals: dict[str, int] = {}
    try:
        apply_log_levels({"": "CRITICAL"}, originals)
        assert root.level == logging.CRITICAL
        apply_log_levels({}, originals)
        assert root.level == before
    finally:
        root.setLevel(before)


# -- the CLI against an in-process cluster --------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("log-levels")
    with InProcessCluster(supervisors=1, slots=1, directory=directory / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 1, message="ready")
        sg.submit(TOPOLOGY, name="wc", nimbus=nimbus(c),
                  config={"topology.workers": 1, "test.output_dir": str(directory / "out"), "test.sentences": 10})
        c.wait(lambda: any(w.loop is not None and w.loop.started for w in c.workers().values()),
               timeout=30, message="a worker running")
        yield c


def nimbus(c: InProcessCluster) -> str:
    return f"127.0.0.1:{c.nimbus_ports[0]}"


def cli(c: InProcessCluster, *args: str):
    return run_cli("--nimbus", nimbus(c), *args)


def levels(c: InProcessCluster) -> dict[str, str]:
    leader = c.leader()
    assert leader is not None
    rec = next(r for r in leader.state.topologies().values() if r.name == "wc")
    return rec.log_levels


def test_a_level_with_a_timeout_reaches_the_worker_then_reverts(cluster):
    logger = logging.getLogger("sgtest.cluster.timeout")
    out = cli(cluster, "set-log-level", "wc", "sgtest.cluster.timeout=DEBUG", "-t", "2")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("log level of sgtest.cluster.timeout in 'wc' set to DEBUG for 2 s, then back to the "
                          "workers' own level\n")
    cluster.wait(lambda: logger.level == logging.DEBUG, message="the worker to apply DEBUG")
    cluster.wait(lambda: logger.level == logging.NOTSET, timeout=20, message="the level to revert after 2 s")
    assert "sgtest.cluster.timeout" not in levels(cluster)


def test_storms_level_colon_seconds_is_a_timeout_too(cluster):
    logger = logging.getLogger("sgtest.cluster.storm")
    out = cli(cluster, "set-log-level", "wc", "sgtest.cluster.storm=error:1")
    assert out.returncode == 0, out.stderr
    cluster.wait(lambda: logger.level == logging.ERROR, message="the worker to apply ERROR")
    cluster.wait(lambda: logger.level == logging.NOTSET, timeout=20, message="the level to revert after 1 s")


def test_a_reset_puts_the_logger_back_and_a_second_one_is_refused(cluster):
    logger = logging.getLogger("sgtest.cluster.reset")
    assert cli(cluster, "set-log-level", "wc", "sgtest.cluster.reset=WARNING").returncode == 0
    cluster.wait(lambda: logger.level == logging.WARNING, message="the worker to apply WARNING")
    assert levels(cluster)["sgtest.cluster.reset"] == "WARNING"  # no timeout: it stays
    out = cli(cluster, "set-log-level", "wc", "-r", "sgtest.cluster.reset")
    assert (out.returncode, out.stdout) == (0, "log level of sgtest.cluster.reset in 'wc' reset to the workers' "
                                               "own level\n")
    cluster.wait(lambda: logger.level == logging.NOTSET, message="the worker to put the logger back")
    again = cli(cluster, "set-log-level", "wc", "-r", "sgtest.cluster.reset")
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr.startswith("error: no log level of 'sgtest.cluster.reset' is set in topology 'wc' (set:")


@pytest.mark.parametrize("args,error", [
    (["wc"], "Error: give LOGGER=LEVEL to set a level, or -r LOGGER to reset one"),
    (["wc", "-t", "5", "-r", "x"], "Error: -t needs a LOGGER=LEVEL to set"),
    (["wc", "x=DEBUG:5", "-t", "5"], "Error: give the timeout once: either LOGGER=LEVEL:SECONDS or -t SECONDS"),
    (["wc", "x=DEBUG:soon"], "Error: Invalid value for 'LOGGER=LEVEL': the timeout after LEVEL: must be a number "
                             "of seconds > 0, got 'soon'"),
    (["wc", "x=DEBUG", "-t", "0"], "Error: Invalid value for '-t' / '--timeout': 0.0 is not in the range x>0."),
])
def test_bad_timeouts_and_resets_are_usage_errors(args, error):
    out = run_cli("--nimbus", "127.0.0.1:1", "set-log-level", *args)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.splitlines()[-1] == error


def test_the_client_refuses_a_level_and_a_reset_together():
    with sg.Client("127.0.0.1:1", timeout=0.1) as client, pytest.raises(ValueError, match="exactly one"):
        client.set_log_level("wc", "x", "DEBUG", reset=True)

"""The traps a Storm or streamparse user falls into (issue 19), each reproduced as the user saw
it: double acks that made every tuple time out, start-up errors hidden behind "worker died",
Storm's method names silently never called, a string emitted as values, a traceback per tuple."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamgale.cli import main

from streamgale import Bolt, Spout, Topology
from streamgale.client import topology_from_file
from streamgale.config import Config
from streamgale.dev.inprocess import InProcessCluster
from streamgale.local import MAX_ERRORS, LocalCluster
from streamgale.ratelimit import ErrorThrottle, held_back
from streamgale.runtime.executor import StartFailed
from streamgale.testing import FixedTupleSpout, complete_topology
from streamgale.topology import TopologyError

TRAPS = Path(__file__).parent / "topologies" / "traps.py"
COUNT = 200


def local_run(mistake: str, **config):
    topology, run_config = topology_from_file(
        TRAPS, base=Config(), config={"traps.mistake": mistake, "traps.count": COUNT,
                                      "topology.message_timeout": 3600, **config})
    cluster = LocalCluster(topology, run_config)
    spout = cluster.loop.spouts[0].runners[0].instance
    run = cluster.run(until=lambda: len(spout.acked) + len(spout.failed) >= COUNT, duration=60)
    return spout, run, cluster


def messages(run) -> list[str]:
    return [f"{e.component}: {e.error}" for e in run.errors]


def counts(cluster, component: str) -> tuple[int, int]:
    cols = [r.collector for e in cluster.executors if e.component == component for r in e.runners]
    return sum(c.acked for c in cols), sum(c.failed for c in cols)


def test_acking_in_an_auto_ack_bolt_is_harmless_and_reported_once():
    spout, run, cluster = local_run("auto")
    assert sorted(spout.acked) == list(range(COUNT)) and spout.failed == []  # none times out
    assert messages(run) == [
        "mistake: bolt 'mistake' calls self.ack() on its input, but it acks automatically (auto_ack = True): "
        "every input is acked when process returns, so the call is ignored; remove it, or set auto_ack = False "
        "to ack (and anchor) yourself"]
    assert counts(cluster, "mistake") == (COUNT, 0)


def test_a_second_ack_of_a_tuple_is_ignored_and_reported_once():
    spout, run, cluster = local_run("twice")
    assert sorted(spout.acked) == list(range(COUNT)) and spout.failed == []
    assert len(run.errors) == 1 and run.errors[0].component == "mistake"
    assert ("acked a tuple that was already acked or failed (from 'numbers' on stream 'default'); a tuple is "
            "acked or failed once, so the call is ignored") in str(run.errors[0].error)
    assert counts(cluster, "mistake") == (COUNT, 0)


def test_failing_in_an_auto_ack_bolt_fails_the_tuple_and_the_runtime_does_not_ack_it():
    spout, run, cluster = local_run("fail")
    assert sorted(spout.failed) == list(range(1, COUNT, 2))
    assert sorted(spout.acked) == list(range(0, COUNT, 2))
    assert len(run.errors) == 1 and re.fullmatch(
        r"mistake: bolt 'mistake' task [12] failed a tuple that was already acked or failed \(from 'numbers' on "
        r"stream 'default'\); a tuple is acked or failed once, so the call is ignored \(in an auto-ack bolt the "
        r"runtime acks every input when process returns\)", messages(run)[0])
    assert counts(cluster, "mistake") == (COUNT // 2, COUNT // 2)


def test_an_exception_in_prepare_is_reported_with_its_component_in_local_mode():
    topology, run_config = topology_from_file(TRAPS, base=Config(), config={"traps.fail_prepare": True})
    cluster = LocalCluster(topology, run_config)
    with pytest.raises(StartFailed, match=r"^bolt 'mistake' task 1 could not start: prepare\(\) raised "
                                          r"ConnectionError: cannot reach the database at db.example:5432$") as e:
        cluster.run(duration=30)
    assert isinstance(e.value.error, ConnectionError) and (e.value.component, e.value.task) == ("mistake", 1)
    (error,) = cluster.errors  # like any error of a component: its task and traceback
    assert (error.component, error.task, type(error.error)) == ("mistake", 1, ConnectionError)
    assert error.details.startswith("in prepare of bolt 'mistake' task 1\nTraceback (most recent call last):")
    assert 'raise ConnectionError("cannot reach the database at db.example:5432")' in error.details

    result = CliRunner().invoke(main.cli, ["local", str(TRAPS), "-c", "traps.fail_prepare=true",
                                           "--duration", "30"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        "error: bolt 'mistake' task 1 could not start: prepare() raised ConnectionError: "
        "cannot reach the database at db.example:5432")


@pytest.fixture
def cluster(tmp_path):
    with InProcessCluster(supervisors=1, slots=2, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 1, message="ready")
        yield c


def on(cluster):
    """``streamgale ARGS`` against the in-process ``cluster``, in this process."""
    nimbus = f"127.0.0.1:{cluster.nimbus_ports[0]}"
    return lambda *args: CliRunner().invoke(main.cli, ["--nimbus", nimbus, *args], catch_exceptions=False)


def test_an_exception_in_prepare_on_a_cluster_is_in_info_list_and_submit(cluster):
    cli = on(cluster)

    result = cli("submit", str(TRAPS), "-c", "traps.fail_prepare=true", "--wait", "60")
    assert result.exit_code == 2, result.output
    assert ("error: topology 'traps' is failing to start: bolt 'mistake' task 1 could not start: prepare() raised "
            "ConnectionError: cannot reach the database at db.example:5432; it stays submitted and its workers "
            "are restarted: `streamgale info traps` shows the traceback") in result.output

    listed = cli("list")
    assert listed.exit_code == 0
    row = listed.stdout.splitlines()[1].split()
    assert row[0] == "traps" and row[2] == "FAILING"
    assert ("traps is failing to start: bolt 'mistake' task 1 could not start: prepare() raised ConnectionError: "
            "cannot reach the database at db.example:5432 (`streamgale info traps` shows the traceback)"
            ) in listed.stderr
    assert json.loads(cli("list", "--json").stdout)[0]["status"] == "ACTIVE"  # the stored status is unchanged

    errors = json.loads(cli("info", "traps").stdout)["errors"]
    trace = errors["mistake"][-1]["message"]
    assert trace.startswith("ConnectionError: cannot reach the database at db.example:5432\n"
                            "in prepare of bolt 'mistake' task 1\nTraceback")
    assert "__start" in errors and "__worker" in errors
    assert cli("kill", "traps", "-w", "0").exit_code == 0


# -- Storm habits caught early (item 9) ----------------------------------------------------------


class Execute(Bolt):
    outputs = ["word"]

    def execute(self, tup):  # Storm's name
        self.emit([tup[0]])


class Initialize(Spout):
    outputs = ["n"]

    def initialize(self, conf, context):  # pystorm's name
        self.n = 0

    def next_tuple(self):
        pass


class NextTuple(Spout):
    outputs = ["n"]

    def nextTuple(self):  # noqa: N802 - Storm's name, on purpose
        pass


class DeclaresOutputFields(Bolt):
    def declareOutputFields(self, declarer):  # noqa: N802 - Storm's name, on purpose
        declarer.declare(["word"])

    def process(self, tup):
        pass


class ExecuteHelper(Bolt):
    """Defines both: execute is its own helper, process is what runs."""

    def execute(self, tup):
        pass

    def process(self, tup):
        self.execute(tup)


def test_storm_method_names_are_refused_when_the_component_is_declared_naming_both():
    t = Topology("habits")
    with pytest.raises(TopologyError, match=r"^bolt 'split': Execute defines execute\(\), Storm's name for it; "
                                            r"StreamGale never calls it but process: rename it process\(self, "
                                            r"tup\)$"):
        t.bolt("split", Execute)
    with pytest.raises(TopologyError, match=r"^spout 'numbers': Initialize defines initialize\(\), Storm's name "
                                            r"for it; StreamGale never calls it but open: rename it open\(self, "
                                            r"context\); the config is context.config$"):
        t.spout("numbers", Initialize)
    with pytest.raises(TopologyError, match=r"NextTuple defines nextTuple\(\).*rename it next_tuple\(self\)"):
        t.spout("numbers", NextTuple())  # an instance too
    with pytest.raises(TopologyError, match=r"DeclaresOutputFields defines declareOutputFields\(\).*declare the "
                                            r"class attribute outputs = \[\"field\", ...\]"):
        t.bolt("sink", DeclaresOutputFields)
    t.bolt("fine", ExecuteHelper)  # process is defined: execute is just a method of its own


class EmitsAString(Bolt):
    outputs = ["word", "n"]

    def process(self, tup):
        self.emit("hello")


def test_emitting_a_string_says_emit_takes_a_list():
    t = Topology("strings")
    t.spout("src", FixedTupleSpout([["a"]], ["x"]))
    t.bolt("shout", EmitsAString).shuffle("src")
    result = complete_topology(t, raise_errors=False)
    assert [str(e.error) for e in result.errors] == [
        "component 'shout' called emit('hello') with a string: emit takes a list of values, one per field of "
        "stream 'default' ['word', 'n']: emit(['hello'])"]


class RaisesAlways(Bolt):
    def process(self, tup):
        raise ValueError(f"bad value {tup[0]}")


def test_a_bolt_raising_on_every_tuple_logs_about_once_a_second_and_counts_every_error(caplog):
    count = 5000
    t = Topology("noisy")
    t.spout("src", FixedTupleSpout([[i] for i in range(count)], ["n"]))
    t.bolt("bad", RaisesAlways).shuffle("src")
    with caplog.at_level("ERROR", logger="streamgale.local"):
        cluster = LocalCluster(t.validate(), Config())
        spouts = [r.instance for e in cluster.loop.spouts for r in e.runners]
        run = cluster.run(until=lambda: all(s.exhausted() for s in spouts) and cluster.loop.idle(), duration=120)
    assert run.error_count == count and len(run.errors) == MAX_ERRORS
    logged = [r.getMessage() for r in caplog.records if "component 'bad'" in r.getMessage()]
    assert 1 <= len(logged) <= run.seconds + 1  # not 5000 tracebacks
    assert logged[0].startswith("component 'bad' task 1 raised ValueError: bad value 0\n")
    assert all(re.search(r"raised ValueError: bad value \d+ \(and \d+ more errors of 'bad' since the last one "
                         r"reported\)\n", m) for m in logged[1:])


def test_the_error_throttle_admits_one_per_interval_and_counts_the_rest():
    throttle = ErrorThrottle(interval=1.0)
    assert throttle.admit("a", 10.0) == 0
    assert [throttle.admit("a", t) for t in (10.1, 10.5, 10.9)] == [None, None, None]
    assert throttle.admit("b", 10.2) == 0  # per component
    assert throttle.admit("a", 11.0) == 3
    assert throttle.counts == {"a": 5, "b": 1}
    assert held_back("a", 3) == " (and 3 more errors of 'a' since the last one reported)" and held_back("a", 0) == ""


# -- logging from components (item 8) ------------------------------------------------------------


class Chatty(Bolt):
    outputs = ["n"]

    def prepare(self, context):
        self.log.info("prepared with %d tasks", context.task_count)

    def process(self, tup):
        if tup[0] == 3:
            self.report_error(f"value {tup[0]} looks wrong, skipped")
            return
        if tup[0] == 4:
            try:
                int("four")
            except ValueError as e:
                self.report_error(e, "parsing a value")
        self.emit([tup[0]])


def test_components_log_under_their_name_with_their_task_and_report_errors_without_failing(caplog):
    t = Topology("chatty")
    t.spout("src", FixedTupleSpout([[i] for i in range(6)], ["n"]))
    t.bolt("talker", Chatty, parallelism=2).global_("src")
    with caplog.at_level("INFO"):
        result = complete_topology(t, raise_errors=False)
    assert sorted(result.emitted("talker")) == [[0], [1], [2], [4], [5]]
    assert result.acked("src") == list(range(6)) and result.failed("src") == []  # reporting fails nothing
    mine = [r for r in caplog.records if r.name == "streamgale.component.talker"]
    assert sorted(r.getMessage() for r in mine) == ["[task 2] prepared with 2 tasks", "[task 3] prepared with 2 tasks"]
    assert {(r.component, r.task) for r in mine} == {("talker", 2), ("talker", 3)}  # task 1: the spout
    reported = [(e.component, type(e.error).__name__, str(e.error), e.details.splitlines()[0]) for e in result.errors]
    assert reported == [
        ("talker", "ReportedError", "value 3 looks wrong, skipped", "reported by Chatty"),
        ("talker", "ValueError", "invalid literal for int() with base 10: 'four'", "parsing a value")]


def test_what_build_topology_logs_is_seen_in_local_mode(tmp_path):
    path = tmp_path / "logs_while_building.py"
    path.write_text(
        "import logging\n"
        "from streamgale import Spout, Topology\n\n"
        "class Quiet(Spout):\n"
        "    outputs = ['n']\n\n"
        "def build_topology(config):\n"
        "    logging.getLogger('my.topology').warning('building with %s sources', config.get('my.sources', 1))\n"
        "    t = Topology('quiet')\n"
        "    t.spout('q', Quiet)\n"
        "    return t\n")
    result = subprocess.run([sys.executable, "-m", "streamgale.cli", "local", str(path), "-c", "my.sources=3",
                             "--duration", "0.2"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "WARNING my.topology: building with 3 sources" in result.stderr


def test_more_workers_than_the_cluster_has_slots_is_said_at_submit_rebalance_and_in_list(cluster):
    cli = on(cluster)

    result = cli("submit", str(TRAPS), "-c", "topology.workers=5", "-c", "traps.count=10")
    assert result.exit_code == 0, result.output
    assert ("warning: 5 workers requested, but the cluster has 2 free slots: it runs in 2 (add supervisors, or "
            "slots with `workers`, for the rest)") in result.stderr
    cluster.wait(lambda: cluster.leader().state.assignments(), message="the assignment")
    row = cli("list").stdout.splitlines()[1]
    assert row.split()[0] == "traps" and "  2 of 5  " in row
    listed = json.loads(cli("list", "--json").stdout)[0]
    assert (listed["workers"], listed["workers_requested"]) == (2, 5)

    # 5 ackers (one per requested worker), 1 spout, 2 bolt executors: 8
    result = cli("rebalance", "traps", "-n", "20", "-w", "0")
    assert result.exit_code == 0, result.output
    assert ("warning: 20 workers requested, but it has 8 executors and a worker runs at least one: it gets at "
            "most 8") in result.stderr
    assert cli("kill", "traps", "-w", "0").exit_code == 0


def test_cluster_shows_each_supervisors_slot_ports_and_log_port(cluster):
    result = on(cluster)("cluster")
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("supervisor ")]
    sup = next(iter(cluster.leader().state.supervisors().values()))
    logs = f"logs on port {sup.log_port}" if sup.log_port else "no log endpoint"
    assert line == f"supervisor {sup.id} on {sup.host}: 0/2 slots used (ports 6700, 6701), {logs}"


def test_a_rebalance_restarts_no_worker_and_reports_none_as_died(cluster):
    """Item 5: a rebalance restarted every worker and reported each restart as "worker died".
    Now the worker that keeps some executors takes its new set in place, and a new one starts."""
    cli = on(cluster)

    assert cli("submit", str(TRAPS), "-c", "traps.count=1000000000", "-c", "topology.max_spout_pending=10"
               ).exit_code == 0
    cluster.wait(lambda: len(cluster.workers()) == 1, message="the worker")
    first = set(cluster.workers())
    assert cli("rebalance", "traps", "-n", "2", "-w", "0").exit_code == 0
    cluster.wait(lambda: len(cluster.workers()) == 2, timeout=30, message="a second worker")
    assert first < set(cluster.workers())  # the first one was not restarted

    def resumed():
        [row] = cluster.client().list_topologies()
        return row["status"] == "ACTIVE"
    cluster.wait(resumed, timeout=30, message="the rebalance to end")
    errors = json.loads(cli("info", "traps").stdout)["errors"]
    assert "__worker" not in errors, errors["__worker"]
    assert cli("kill", "traps", "-w", "0").exit_code == 0


class StreamparseStyle(Bolt):
    """streamparse's way: data in process, ticks in process_tick."""

    outputs = ["what", "value"]

    def process(self, tup):
        assert not tup.is_tick
        self.emit(["data", tup[0]])

    def process_tick(self, tup):
        self.emit(["tick", tup["interval"]])


def test_ticks_go_to_process_tick_with_their_interval_when_a_bolt_defines_it():
    t = Topology("streamparse-ticks")
    t.spout("src", FixedTupleSpout([[1], [2]], ["n"]))
    t.bolt("b", StreamparseStyle, config={"topology.tick_interval": 1.5}).shuffle("src")
    result = complete_topology(t, advance=4.5)
    assert sorted(result.emitted("b")) == [["data", 1], ["data", 2], ["tick", 1.5], ["tick", 1.5], ["tick", 1.5]]


class KeepsItsOwnLog(Bolt):
    """Had a self.log of its own before components got one: it keeps it."""

    def prepare(self, context):
        self.log = []

    def process(self, tup):
        self.log.append(tup[0])
        self.emit_log = list(self.log)


def test_a_component_may_still_set_self_log_to_its_own():
    t = Topology("own-log")
    t.spout("src", FixedTupleSpout([[1], [2]], ["n"]))
    t.bolt("b", KeepsItsOwnLog).shuffle("src")
    assert complete_topology(t).errors == []


def test_submit_warns_about_a_large_code_package_and_names_the_ignore_file(cluster, tmp_path):
    code = tmp_path / "big"
    code.mkdir()
    (code / "traps.py").write_text(TRAPS.read_text())
    (code / "model.bin").write_bytes(os.urandom(9 << 20))  # does not compress
    result = on(cluster)("submit", str(code / "traps.py"), "-c", "traps.count=1")
    assert result.exit_code == 0, result.output
    assert re.search(r"warning: the code package is 9\.\d MiB, and every supervisor fetches it; list what the "
                     r"workers do not need \(data, outputs\) in a \.streamgaleignore file beside traps\.py", result.stderr)
    (code / ".streamgaleignore").write_text("*.bin\n")
    result = on(cluster)("submit", str(code / "traps.py"), "--name", "small", "-c", "traps.count=1")
    assert result.exit_code == 0 and "warning" not in result.stderr, result.output

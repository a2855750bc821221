"""The command line against a running nimbus: the real CLI as a subprocess, talking to a
cluster of threads in this process (:mod:`streamgale.dev.inprocess`) over TCP.

Issue 19's rough edges: names that are close to a running topology's or component's get a
"did you mean", `kill` takes several names, and `--nimbus HOST` needs no port.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

from streamgale import client as sg
from streamgale.dev.inprocess import InProcessCluster

TOPOLOGY = str(Path(__file__).parent / "topologies" / "cluster_word_count.py")
COMPONENTS = "count, sentences, sink, split"  # cluster_word_count's, the acker left out


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli-cluster")
    # No supervisors: the commands here need only nimbus, and workers in this process would
    # leave the topology's module behind in sys.modules for the tests that follow.
    with InProcessCluster(supervisors=0, directory=directory / "cluster") as c:
        c.wait(lambda: c.leader() is not None, message="a leader")
        sg.submit(TOPOLOGY, name="wc", nimbus=nimbus(c),
                  config={"test.output_dir": str(directory / "out")})
        yield c


def nimbus(c: InProcessCluster) -> str:
    return f"127.0.0.1:{c.nimbus_ports[0]}"


def cli(c: InProcessCluster, *args: str):
    return run_cli("--nimbus", nimbus(c), *args)


@pytest.mark.parametrize("args", [
    ["kill", "wc2"], ["info", "wc2"], ["stats", "wc2"], ["activate", "wc2"], ["deactivate", "wc2"],
    ["rebalance", "wc2", "-n", "2"], ["set-log-level", "wc2", "root=DEBUG"], ["logs", "wc2"],
    ["monitor", "wc2", "-n", "1"], ["state", "wc2", "count"],
])
def test_an_unknown_topology_name_gets_a_did_you_mean(cluster, args):
    out = cli(cluster, *args)
    assert (out.returncode, out.stdout, out.stderr) == (1, "", "error: no topology named 'wc2' is running; did you "
                                                               "mean 'wc'?\n")


def test_a_name_close_to_no_topology_keeps_nimbus_s_message(cluster):
    out = cli(cluster, "info", "nothing-like-it")
    assert (out.returncode, out.stderr) == (1, "error: no topology named 'nothing-like-it' is running (see "
                                               "`streamgale list`)\n")


@pytest.mark.parametrize("command", [["stats", "wc"], ["monitor", "wc", "-n", "1", "-i", "1"], ["logs", "wc"],
                                     ["state", "wc"]])
def test_an_unknown_component_is_named_with_the_close_ones(cluster, command):
    """Issue 19: `monitor -m nosuch` said the component had "no metrics yet"."""
    option = [] if command[0] == "state" else ["-m"]
    out = cli(cluster, *command, *option, "cuont")
    assert (out.returncode, out.stdout, out.stderr) == (
        1, "", f"error: topology 'wc' has no component 'cuont'; did you mean 'count'? (its components: {COMPONENTS})\n")
    out = cli(cluster, *command, *option, "nosuch")
    assert (out.returncode, out.stderr) == (1, f"error: topology 'wc' has no component 'nosuch' (its components: "
                                               f"{COMPONENTS})\n")


def test_stats_of_one_component(cluster):
    out = cli(cluster, "stats", "wc", "-m", "split", "--json")
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["topology"]["name"] == "wc" and set(shown["components"]) <= {"split"}


def test_only_component_keeps_its_row_tasks_and_errors():
    import streamgale.cli.main  # noqa: F401  (first: it registers the commands, observe_commands among them)
    from streamgale.cli.observe_commands import only_component

    stats = {"topology": {"name": "wc"}, "workers": [{"port": 1}],
             "components": {"split": {"kind": "bolt"}, "count": {"kind": "bolt"}},
             "tasks": {"1": {"component": "split"}, "2": {"component": "count"}},
             "errors": {"split": [{"message": "a"}], "count": [{"message": "b"}]}}
    assert only_component(stats, "split") == {
        "topology": {"name": "wc"}, "workers": [{"port": 1}], "components": {"split": {"kind": "bolt"}},
        "tasks": {"1": {"component": "split"}}, "errors": {"split": [{"message": "a"}]}}


def test_kill_takes_several_names_and_kills_the_others_when_one_fails(cluster, tmp_path):
    for name in ("doomed-a", "doomed-b"):
        sg.submit(TOPOLOGY, name=name, nimbus=nimbus(cluster),
                  config={"test.output_dir": str(tmp_path / name)})
    out = cli(cluster, "kill", "doomed-a", "nosuch", "doomed-b", "-w", "0")
    assert out.returncode == 1
    assert out.stdout == "killing topology 'doomed-a'\nkilling topology 'doomed-b'\n"
    assert out.stderr == "error: no topology named 'nosuch' is running (see `streamgale list`)\n"
    with sg.Client(nimbus(cluster)) as client:
        cluster.wait(lambda: {r["name"] for r in client.list_topologies()} == {"wc"}, message="both killed")
    again = cli(cluster, "kill", "doomed-a", "-w", "0")
    assert (again.returncode, again.stdout) == (1, "")


def test_nimbus_without_a_port_is_found_at_nimbus_port(cluster, tmp_path):
    """Issue 19: `--nimbus localhost` (no port) crashed."""
    conf = tmp_path / "c.yaml"
    conf.write_text(f"nimbus:\n  port: {cluster.nimbus_ports[0]}\n")
    out = run_cli("--config", str(conf), "--nimbus", "127.0.0.1", "list")
    assert out.returncode == 0, out.stderr
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["NAME", "wc"]


def test_config_of_a_running_topology_is_what_its_workers_run_with(cluster):
    """Issue 19: no remote view of a running topology's effective config (Storm's getTopologyConf)."""
    with sg.Client(nimbus(cluster)) as client:
        remote = client.topology_config("wc")
    assert remote["topology_keys"] == ["test.output_dir", "topology.workers"]  # the file's and -c's
    assert remote["config"]["topology.workers"] == 2 and remote["config"]["nimbus.port"] == cluster.nimbus_ports[0]
    assert remote["config"]["topology.message_timeout"] == 30.0  # a default, as a worker has it

    one = cli(cluster, "config", "--topology", "wc", "topology.workers")
    assert (one.returncode, one.stdout) == (0, "2\n")
    assert cli(cluster, "config", "--topology", "wc", "test.output_dir").stdout.endswith("/out\n")
    listed = cli(cluster, "config", "--topology", "wc", "topology")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()}
    assert "[topology]" in rows["topology.workers"] and "[topology]" not in rows["topology.message_timeout"]
    missing = cli(cluster, "config", "--topology", "wc", "topology.workrs")
    assert missing.returncode == 2
    assert missing.stderr.startswith("error: no config key 'topology.workrs' in topology 'wc'; did you mean "
                                     "'topology.workers'")
    assert missing.stderr.endswith("(`streamgale config --topology wc` lists them all)\n")
    unknown = cli(cluster, "config", "--topology", "wc2")
    assert (unknown.returncode, unknown.stderr) == (1, "error: no topology named 'wc2' is running; did you mean "
                                                       "'wc'?\n")

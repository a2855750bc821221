"""The command line, run as a real subprocess."""

import signal
import textwrap
import time

import click
import pytest
from conftest import run_cli, wait_for

from streamgale.dev.ports import free_port

COMMANDS = ("local", "config", "submit", "list", "kill", "activate", "deactivate", "rebalance", "info", "stats",
            "monitor", "logs", "set-log-level", "state", "model", "cluster", "nimbus", "supervisor", "dev-zookeeper", "dev-cluster",
            "ui", "keys", "health", "help", "version")
NO_NIMBUS = "127.0.0.1:1"  # for commands that must fail before they call nimbus


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    assert "StreamGale: run Storm-style topologies" in out.stdout
    listed = {line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines() if line.strip()}
    assert listed == set(COMMANDS)


def test_each_command_has_help():
    for command in COMMANDS:
        out = run_cli(command, "--help")
        assert out.returncode == 0, out.stderr
        assert "Usage: streamgale " + command in out.stdout


def test_every_command_and_option_has_help():
    """Issue 19: `--help` described some options by their name alone."""
    from streamgale.cli.main import cli

    def walk(command, path):
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    missing = []
    for path, command in walk(cli, "streamgale"):
        if not (command.help or "").strip() or not (command.get_short_help_str() or "").strip():
            missing.append(path)
        ctx = click.Context(command, info_name=path)
        missing += [f"{path} {'/'.join(p.opts)}" for p in command.get_params(ctx)
                    if isinstance(p, click.Option) and not (p.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("command", [["submit"], ["kill"], ["keys", "init"], []])
def test_help_command_prints_what_help_prints(command):
    shown = run_cli("help", *command)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == run_cli(*command, "--help").stdout


@pytest.mark.parametrize("command,error", [
    (["sumbit"], "error: no command 'sumbit' in `streamgale`; did you mean 'submit'? (`streamgale --help` lists them)"),
    (["keys", "nit"], "error: no command 'nit' in `streamgale keys`; did you mean 'init'? (`streamgale keys --help` "
                      "lists them)"),
    (["list", "all"], "error: `streamgale list` has no subcommands, so no 'all'"),
])
def test_help_of_an_unknown_command(command, error):
    out = run_cli("help", *command)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", error + "\n")


def test_version_command_prints_what_version_prints():
    out = run_cli("version")
    assert out.returncode == 0 and out.stdout.startswith("streamgale ")
    assert out.stdout == run_cli("--version").stdout


def test_local_help_describes_options():
    out = run_cli("local", "--help").stdout
    assert "--duration SECONDS" in out and "-c KEY=VALUE" in out


def test_config_lists_keys_with_effective_values(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("workers: 7\n")
    out = run_cli("--config", str(conf), "config")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("workers "))
    assert "7" in line and "worker slots on each supervisor node" in line


def test_config_key_prints_its_value_alone(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("workers: 7\nzookeeper:\n  servers: [zk1, 'zk2:2182']\n")
    for args, value in ((["workers"], "7"), (["nimbus.port"], "6627"), (["zookeeper.servers"], "zk1:2181,zk2:2182"),
                        (["topology.max_spout_pending", "-c", "topology.max_spout_pending=null"], "null"),
                        (["my.key", "-c", "my.key=x"], "x"), (["my.password", "-c", "my.password=x"], "<redacted>")):
        out = run_cli("--config", str(conf), "config", *args)
        assert (out.returncode, out.stdout, out.stderr) == (0, value + "\n", "")
    under = run_cli("--config", str(conf), "config", "nimbus")
    assert under.returncode == 0
    assert [line.split()[0] for line in under.stdout.splitlines()] == [
        "nimbus.host", "nimbus.port", "nimbus.task_timeout", "nimbus.task_launch_timeout"]


def test_config_of_an_unknown_key_says_which_are_close():
    out = run_cli("config", "nimbus.prot")
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr == ("error: no config key 'nimbus.prot'; did you mean 'nimbus.port' or 'nimbus.host'? "
                          "(`streamgale config` lists them all)\n")
    out = run_cli("config", "nosuch")
    assert (out.returncode, out.stderr) == (2, "error: no config key 'nosuch' (`streamgale config` lists them all)\n")


TOPOLOGY = textwrap.dedent('''
    from pathlib import Path
    from streamgale import Bolt, Spout, Topology

    OUT = Path(__file__).parent / "events.txt"

    def log(event):
        with OUT.open("a") as f:
            f.write(event + "\\n")

    class Numbers(Spout):
        outputs = ["n"]
        def open(self, context):
            self.n = 0
            log("open")
        def next_tuple(self):
            self.n += 1
            self.emit([self.n])
        def close(self):
            log("close")

    class Sink(Bolt):
        def process(self, tup):
            if tup["n"] == 1000:
                log("processed")
            if FAIL and tup["n"] == 5:
                raise ValueError("five is not allowed")
        def cleanup(self):
            log("cleanup")

    FAIL = False
    topology = Topology("lifecycle")
    topology.spout("numbers", Numbers)
    topology.bolt("sink", Sink, parallelism=2).shuffle("numbers")
''')


def test_ctrl_c_stops_cleanly_calling_close_and_cleanup(tmp_path, processes):
    (tmp_path / "topo.py").write_text(TOPOLOGY)
    events = tmp_path / "events.txt"
    from conftest import STREAMGALE
    proc = processes.start([*STREAMGALE, "local", str(tmp_path / "topo.py")])
    wait_for(lambda: events.exists() and "processed" in events.read_text(), timeout=20,
             message="the topology to process tuples")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    lines = events.read_text().split()
    assert lines[0] == "open" and lines.count("close") == 1 and lines.count("cleanup") == 2
    assert "stopped after" in err


def test_duration_stops_and_a_raising_bolt_is_reported(tmp_path):
    (tmp_path / "topo.py").write_text(TOPOLOGY.replace("FAIL = False", "FAIL = True"))
    out = run_cli("local", str(tmp_path / "topo.py"), "--duration", "1")
    assert out.returncode == 1
    assert "component 'sink' task" in out.stderr and "raised ValueError: five is not allowed" in out.stderr
    assert "Traceback" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: 1 error(s) raised by components; first: component 'sink'")


def test_invalid_topology_is_reported_with_the_fault(tmp_path):
    (tmp_path / "topo.py").write_text(TOPOLOGY + "\ntopology.bolt('x', Sink).fields('numbers', 'm')\n")
    out = run_cli("local", str(tmp_path / "topo.py"), "--duration", "1")
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"error: invalid topology in {tmp_path / 'topo.py'}: bolt 'x' groups stream 'default' of "
        "'numbers' by field 'm', which is not declared (fields: ['n'])"
    )


def test_topology_file_that_raises_shows_the_error(tmp_path):
    (tmp_path / "topo.py").write_text("import streamgale\nraise ImportError('no such thing')\n")
    out = run_cli("local", str(tmp_path / "topo.py"))
    assert out.returncode == 2
    assert f"error: error while loading {tmp_path / 'topo.py'}" in out.stderr
    assert "ImportError: no such thing" in out.stderr


def test_file_without_topology(tmp_path):
    (tmp_path / "topo.py").write_text("x = 1\n")
    out = run_cli("local", str(tmp_path / "topo.py"))
    assert out.returncode == 2
    assert "defines neither a module-level 'topology' nor a function 'build_topology(config)'" in out.stderr


def test_missing_file():
    out = run_cli("local", "nope.py")
    assert out.returncode == 2 and "topology file" in out.stderr and "does not exist" in out.stderr


def test_bad_override_is_reported():
    out = run_cli("local", "examples/word_count.py", "-c", "topology.workrs=2")
    assert out.returncode == 2
    assert out.stderr == "error: unknown config key 'topology.workrs' in -c option; did you mean 'topology.workers'?\n"


@pytest.mark.parametrize("command", ["local", "submit"])
@pytest.mark.parametrize("override,error", [
    ("topology.workers=many", "config key 'topology.workers' in -c option must be an integer >= 1, got 'many'"),
    ("topology.workers", "-c expects key=value, got 'topology.workers'"),
])
def test_a_bad_override_is_blamed_on_the_option_not_the_topology_file(command, override, error):
    """Issue 19: these said "invalid topology in examples/word_count.py: ..."."""
    out = run_cli("--nimbus", NO_NIMBUS, command, "examples/word_count.py", "-c", override)
    assert (out.returncode, out.stdout, out.stderr) == (2, "", f"error: {error}\n")


def test_submit_refuses_an_override_of_a_cluster_setting_naming_the_option():
    out = run_cli("--nimbus", NO_NIMBUS, "submit", "examples/word_count.py", "-c", "workers=3")
    assert (out.returncode, out.stderr) == (2, "error: config key 'workers' in -c option is a cluster setting; set it "
                                               "in the daemons' config.yaml, not in a topology\n")


def test_submit_to_no_nimbus_fails_in_the_connect_timeout():
    """Issue 19: submit waited the 60 s upload timeout where `list` gives up in 5 s."""
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    start = time.monotonic()
    out = run_cli("--nimbus", address, "submit", "examples/word_count.py")
    assert time.monotonic() - start < 20
    assert (out.returncode, out.stdout) == (1, "")
    assert out.stderr.endswith(f"error: cannot reach nimbus at {address} within 5 s; is `streamgale nimbus` running "
                               "there?\n")


@pytest.mark.parametrize("command", [["list"], ["supervisor"], ["ui", "--port", "0"]])
def test_a_bad_nimbus_port_is_one_error_line(command):
    """Issue 19: a --nimbus the client could not parse ended some commands in a traceback."""
    out = run_cli("--nimbus", "localhost:99999", *command)
    assert (out.returncode, out.stdout) == (2, "")
    assert out.stderr.endswith("error: --nimbus: nimbus address 'localhost:99999': '99999' is not a port number "
                               "(1-65535); write HOST or HOST:PORT, e.g. 'nimbus1:6627'\n")
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("args,error", [
    (["set-log-level", "wc", "x=LOUD"],
     "Error: Invalid value for 'LOGGER=LEVEL': LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL (any "
     "case), got 'LOUD'"),
    (["set-log-level", "wc", "DEBUG"],
     "Error: Invalid value for 'LOGGER=LEVEL': expected LOGGER=LEVEL, e.g. streamgale.transport=DEBUG, got 'DEBUG'"),
    (["kill"], "Error: Missing argument 'NAME...'."),
])
def test_argument_errors_name_the_argument(args, error):
    """Issue 19: set-log-level x=LOUD said "set_log_level: field 'level' must be ..."."""
    out = run_cli("--nimbus", NO_NIMBUS, *args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines()[-1] == error


def test_rebalance_to_zero_executors_names_the_option():
    out = run_cli("--nimbus", NO_NIMBUS, "rebalance", "wc", "-e", "count=0")
    assert (out.returncode, out.stderr) == (2, "error: -e expects COMPONENT=PARALLELISM with PARALLELISM an integer "
                                               ">= 1, got 'count=0'\n")

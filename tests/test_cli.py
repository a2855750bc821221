"""The command line, run as a real subprocess."""

import signal
import textwrap

from conftest import run_cli, wait_for

COMMANDS = ("local", "config", "submit", "list", "kill", "activate", "deactivate", "rebalance", "info", "stats",
            "monitor", "logs", "set-log-level", "state", "model", "cluster", "nimbus", "supervisor", "dev-zookeeper", "dev-cluster",
            "ui")


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
    assert "unknown config key 'topology.workrs' in -c option; did you mean 'topology.workers'?" in out.stderr

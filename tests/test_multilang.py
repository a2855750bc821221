"""Multi-lang components in local mode (docs/multilang.md): Storm's protocol in both framings,
pystorm components unchanged, the Node.js and Java examples, and every way a subprocess can
fail: killed, hung, garbage on stdout, exited, not startable. Each failure is reported with the
component's name, the tuples it held fail and replay, it restarts, and nothing is lost."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import msgpack
import psutil
import pytest
from conftest import ROOT

from streamgale import Bolt, Spout, Topology
from streamgale.config import Config
from streamgale.local import LocalCluster
from streamgale.multilang import EncodeError, ProtocolError, ShellBolt, ShellSpout
from streamgale.multilang.framing import framing
from streamgale.runtime.loader import load_module, load_topology

COMPONENTS = ROOT / "tests" / "topologies" / "multilang"
EXAMPLE = ROOT / "examples" / "multilang"
SENTENCES = load_module(EXAMPLE / "sentences.py").SENTENCES


# -- framing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_messages_split_at_any_chunk_boundary(name):
    codec = framing(name)
    messages = [{"command": "emit", "tuple": ["a b", 1, 2.5, None, True]}, [3, 4], {"command": "sync"}]
    data = b"".join(codec.encode(m) for m in messages)
    for cut in range(1, len(data)):
        decoder = codec.decoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == messages


def test_json_framing_is_storms_end_lines():
    assert framing("json").encode({"pid": 7}) == b'{"pid":7}\nend\n'
    # A component may write the JSON on several lines, the end line after its own newline.
    assert framing("json").decoder().feed(b'{\n "pid": 7\n}\nend\n{"command":"sync"}\nend\n') == [
        {"pid": 7}, {"command": "sync"}]


def test_garbage_is_a_protocol_error_that_shows_what_was_written():
    with pytest.raises(ProtocolError, match="not a JSON message: 'hello from print"):
        framing("json").decoder().feed(b"hello from print\nend\n")
    with pytest.raises(EncodeError, match="JSON framing carries only JSON types; framing = 'msgpack'"):
        framing("json").encode({"tuple": [b"\x00raw"]})
    assert msgpack.unpackb(framing("msgpack").encode({"tuple": [b"\x00raw"]})) == {"tuple": [b"\x00raw"]}


def test_a_bad_setting_is_refused_when_declared():
    with pytest.raises(ValueError, match=r"command must be a non-empty list of strings.*not 'node split.js'"):
        ShellBolt(command="node split.js", outputs=["word"])
    with pytest.raises(ValueError, match="framing must be one of json, msgpack, not 'xml'"):
        ShellBolt(command=["node", "split.js"], framing="xml")
    with pytest.raises(TypeError, match="ShellSpout takes no setting 'comand'"):
        ShellSpout(comand=["x"])


# -- local runs -------------------------------------------------------------------------------


def numbers(count: int):
    """A reliable spout of ``count`` numbers that replays what fails; records acks and fails."""

    class Numbers(Spout):
        outputs = ["n"]
        acked: set = set()
        failed: list = []

        def open(self, context):
            self.todo = list(range(count))[::-1]

        def next_tuple(self):
            if self.todo:
                n = self.todo.pop()
                self.emit([n], msg_id=n)

        def ack(self, msg_id):
            type(self).acked.add(msg_id)

        def fail(self, msg_id):
            type(self).failed.append(msg_id)
            self.todo.append(msg_id)

    return Numbers


def recorder():
    class Record(Bolt):
        got: list = []
        lock = threading.Lock()

        def process(self, tup):
            with self.lock:
                type(self).got.append((tup.stream, *tup.values))

    return Record


def raw(mode: str, marks: Path, framing_name: str = "json", **settings) -> ShellBolt:
    outputs = settings.pop("outputs", ["n"])
    return ShellBolt(command=[sys.executable, "raw_bolt.py", mode, framing_name, str(marks)], outputs=outputs,
                     framing=framing_name, **settings)


def run(topology: Topology, until, duration: float = 60, **config):
    topology.base_dir = str(COMPONENTS)
    conf = Config().merged({"topology.message_timeout": 60, **config}, "test")
    lc = LocalCluster(topology, conf)
    result = lc.run(until=until, duration=duration)
    return lc, result


def shell_task(lc: LocalCluster, component: str):
    return next(r.instance for e in lc.executors if e.component == component for r in e.runners)


def through(bolt, count: int, parallelism: int = 1):
    src, sink = numbers(count), recorder()
    t = Topology("multilang-test")
    t.spout("src", src)
    t.bolt("shell", bolt, parallelism=parallelism).shuffle("src")
    t.bolt("sink", sink).shuffle("shell")
    return t, src, sink


@pytest.mark.parametrize("framing_name", ["json", "msgpack"])
def test_a_bare_protocol_bolt_passes_every_tuple_and_acks_it(tmp_path, framing_name):
    t, src, sink = through(raw("pass", tmp_path, framing_name), 3000, parallelism=2)
    lc, result = run(t, lambda: len(src.acked) == 3000)
    assert result.errors == [] and src.failed == []
    assert src.acked == set(range(3000))
    assert sorted(sink.got) == [("default", n) for n in range(3000)]


def test_the_handshake_gives_storms_conf_context_and_pid_dir(tmp_path):
    t, src, _ = through(raw("setup", tmp_path), 5)
    lc, _ = run(t, lambda: len(src.acked) == 5, **{"pystorm.log.level": "debug"})
    setup = json.loads((tmp_path / "setup.json").read_text())
    tasks = lc.topology.task_ids()
    context = setup["context"]
    assert context["taskid"] == tasks["shell"][0] and context["componentid"] == "shell"
    assert context["task->component"] == {str(t): c for c, ts in tasks.items() for t in ts}
    assert context["streams"] == ["default"] and context["stream->outputfields"] == {"default": ["n"]}
    assert context["source->stream->fields"] == {"src": {"default": ["n"]}}
    assert context["source->stream->grouping"] == {"src": {"default": {"type": "SHUFFLE"}}}
    assert context["stream->target->grouping"] == {"default": {"sink": {"type": "SHUFFLE"}}}
    conf = setup["conf"]
    assert conf["topology.name"] == "multilang-test" and conf["topology.message.timeout.secs"] == 60
    assert conf["pystorm.log.level"] == "debug" and conf["topology.subprocess_timeout"] == 30
    assert not Path(setup["pidDir"]).exists()  # removed when the task shut down


def test_emits_answer_with_task_ids_unless_told_not_to(tmp_path):
    bolt = raw("task_ids", tmp_path, outputs={"default": ["n"], "ids": ["n", "tasks"]})
    src, sink = numbers(50), recorder()
    t = Topology("multilang-ids")
    t.spout("src", src)
    t.bolt("shell", bolt).shuffle("src")
    t.bolt("sink", sink, parallelism=3).fields("shell", "n").fields("shell", "n", stream="ids")
    lc, result = run(t, lambda: len(src.acked) == 50)
    assert result.errors == []
    # Every emit on the default stream was answered with the one task fields grouping chose.
    sinks = lc.topology.task_ids()["sink"]
    answered = {n: json.loads(ids) for stream, n, ids in (g for g in sink.got if g[0] == "ids")}
    assert sorted(answered) == list(range(50))
    assert all(len(ids) == 1 and ids[0] in sinks for ids in answered.values())
    assert len({tuple(answered[n]) for n in range(50)}) > 1  # spread over the sink's tasks


def test_log_error_and_metrics_commands(tmp_path, caplog):
    t, src, _ = through(raw("commands", tmp_path), 10)
    caplog.set_level(5, logger="streamgale.multilang")
    lc, result = run(t, lambda: len(src.acked) == 10)
    assert src.acked == set(range(10)) and src.failed == []
    levels = {r.levelno for r in caplog.records if "level " in r.getMessage() and "says 3" in r.getMessage()}
    assert levels == {5, 10, 20, 30, 40}
    errors = [str(e.error) for e in result.errors]
    assert len(errors) == 10 and all(e.component == "shell" for e in result.errors)
    assert f"bolt 'shell' task {lc.topology.task_ids()['shell'][0]}: trouble with 7" in errors
    assert shell_task(lc, "shell").shell_metrics == {"seen": 10}


def test_tick_tuples_reach_the_subprocess_as_system_ticks(tmp_path):
    src, sink = numbers(0), recorder()
    t = Topology("multilang-ticks")
    t.spout("src", src)
    t.bolt("shell", raw("ticks", tmp_path, outputs=["n", "comp"]), config={"topology.tick_interval": 0.05}).shuffle("src")
    t.bolt("sink", sink).shuffle("shell")
    _, result = run(t, lambda: sum(1 for g in sink.got if g[1] == "tick") >= 3, duration=20)
    assert result.errors == []
    assert {g[1:] for g in sink.got if g[1] == "tick"} == {("tick", "__system")}


def test_an_emit_on_an_undeclared_stream_is_reported_and_answered(tmp_path):
    t, src, sink = through(raw("undeclared", tmp_path), 30)
    _, result = run(t, lambda: len(src.acked) == 30)
    assert src.acked == set(range(30)) and len(sink.got) == 30  # it did not wait forever for task ids
    assert result.errors and "emit refused" in str(result.errors[0].error)
    assert "nowhere" in str(result.errors[0].error)


# -- pystorm, unchanged -----------------------------------------------------------------------


@pytest.mark.parametrize("framing_name", ["json", "msgpack"])
def test_pystorm_spout_and_bolt_run_unchanged(framing_name):
    sink = recorder()
    t = Topology("pystorm", {"multilang.sentences": 500})
    t.spout("sentences", ShellSpout(command=[sys.executable, "sentences.py", framing_name], framing=framing_name,
                                    outputs=["sentence"]))
    t.bolt("lower", ShellBolt(command=[sys.executable, "lower.py", framing_name], framing=framing_name,
                              outputs=["word"]), parallelism=2).shuffle("sentences")
    t.bolt("sink", sink).shuffle("lower")
    t.base_dir = str(EXAMPLE)
    lc = LocalCluster(t, Config().merged(t.config, "topology"))
    spout = lambda: next(r for e in lc.executors if e.component == "sentences" for r in e.runners)  # noqa: E731
    result = lc.run(until=lambda: spout().collector.acked == 500, duration=60)
    assert result.errors == []
    assert spout().collector.acked == 500 and spout().collector.failed == 0
    assert sorted(v for _, v in sink.got) == sorted(SENTENCES[i % 5].lower() for i in range(500))


def test_the_example_counts_words_across_python_node_and_java(tmp_path):
    code = tmp_path / "code"
    shutil.copytree(EXAMPLE, code, ignore=shutil.ignore_patterns("*.class"))
    subprocess.run(["javac", "WordCount.java"], cwd=code, check=True)
    out = tmp_path / "counts.txt"
    expected = Counter(w.lower() for i in range(200) for w in SENTENCES[i % 5].split())
    conf = Config().merged({"multilang.sentences": 200, "multilang.output": str(out)}, "test")
    lc = LocalCluster(load_topology(code / "word_count.py", conf), conf)
    lines = lambda: out.read_text().splitlines() if out.exists() else []  # noqa: E731
    result = lc.run(until=lambda: len(lines()) >= sum(expected.values()), duration=60)
    assert result.errors == []
    latest: dict[str, int] = {}
    for line in lines():
        word, count = line.split()
        latest[word] = max(latest.get(word, 0), int(count))
    assert latest == dict(expected) and len(lines()) == sum(expected.values())


# -- failures ---------------------------------------------------------------------------------


def test_a_subprocess_killed_mid_run_restarts_and_its_tuples_replay_at_once(tmp_path):
    t, src, sink = through(raw("pass", tmp_path), 4000)
    t.base_dir = str(COMPONENTS)
    lc = LocalCluster(t, Config().merged({"topology.message_timeout": 120}, "test"))
    killed: list[int] = []

    def until():
        proc = shell_task(lc, "shell")._proc
        if not killed and len(sink.got) >= 500 and proc is not None:
            killed.append(proc.pid)
            os.kill(proc.pid, signal.SIGKILL)
        return len(src.acked) == 4000

    result = lc.run(until=until, duration=60)  # replays must not wait for the 120 s timeout
    assert killed and src.acked == set(range(4000))
    assert len(src.failed) > 0  # what the killed process held failed at once and replayed
    report = str(result.errors[0].error)
    assert f"bolt 'shell' task {lc.topology.task_ids()['shell'][0]}: subprocess" in report
    assert f"(pid {killed[0]}) was killed by signal SIGKILL" in report and "tuples it held failed" in report
    assert shell_task(lc, "shell").counters()["subprocess_restarts"] == 1
    assert {n for _, n in sink.got} == set(range(4000))


def test_a_hung_subprocess_is_killed_after_the_timeout_and_restarted(tmp_path):
    t, src, sink = through(raw("hang", tmp_path), 200)
    lc, result = run(t, lambda: len(src.acked) == 200, **{"topology.subprocess_timeout": 1.5})
    assert src.acked == set(range(200))
    assert "stopped answering: nothing heard for" in str(result.errors[0].error)
    assert "(topology.subprocess_timeout is 1.5 s)" in str(result.errors[0].error)
    assert shell_task(lc, "shell").counters()["subprocess_restarts"] == 1


@pytest.mark.parametrize("framing_name", ["json", "msgpack"])
def test_garbage_on_stdout_is_reported_and_the_subprocess_restarted(tmp_path, framing_name):
    t, src, sink = through(raw("garbage", tmp_path, framing_name), 300)
    lc, result = run(t, lambda: len(src.acked) == 300)
    assert src.acked == set(range(300))
    report = str(result.errors[0].error)
    assert "wrote what is not a multi-lang message" in report
    assert f"it must write only {framing_name} messages to stdout" in report
    if framing_name == "json":
        assert "'hello from a print statement" in report
    assert shell_task(lc, "shell").counters()["subprocess_restarts"] == 1


def test_an_exit_is_reported_with_its_code_and_stderr(tmp_path):
    t, src, _ = through(raw("exit", tmp_path), 300)
    _, result = run(t, lambda: len(src.acked) == 300)
    assert src.acked == set(range(300))
    report = str(result.errors[0].error)
    assert "exited with code 3" in report and "its stderr ended with:\nexiting on purpose" in report


def test_a_command_that_cannot_start_is_reported_and_retried(tmp_path):
    t, src, _ = through(ShellBolt(command=["no-such-program-anywhere", "x.js"], outputs=["n"]), 5)
    t.base_dir = str(COMPONENTS)
    lc = LocalCluster(t, Config().merged({"topology.multilang.restart_backoff": 0.05}, "test"))
    result = lc.run(until=lambda: len(lc.errors) >= 2, duration=20)
    messages = [str(e.error) for e in result.errors]
    assert len(messages) >= 2 and src.acked == set()
    assert "cannot start ['no-such-program-anywhere', 'x.js']" in messages[0]
    assert "No such file or directory" in messages[0] and "retrying in" in messages[0]


def test_a_killed_spout_subprocess_restarts_and_emits_again():
    sink = recorder()
    t = Topology("pystorm-spout", {"multilang.sentences": 1000000})
    t.spout("sentences", ShellSpout(command=[sys.executable, "sentences.py"], outputs=["sentence"]))
    t.bolt("sink", sink).shuffle("sentences")
    t.base_dir = str(EXAMPLE)
    lc = LocalCluster(t, Config().merged(t.config, "topology"))
    state: dict = {}

    def until():
        spout = shell_task(lc, "sentences")
        if "pid" not in state and len(sink.got) >= 200 and spout._proc is not None:
            state["pid"], state["at"] = spout._proc.pid, len(sink.got)
            os.kill(spout._proc.pid, signal.SIGKILL)
        return "pid" in state and spout._proc is not None and spout._proc.pid != state["pid"] \
            and len(sink.got) >= state["at"] + 200

    result = lc.run(until=until, duration=60)
    assert "pid" in state and len(sink.got) >= state["at"] + 200
    assert [str(e.error) for e in result.errors if "was killed by signal SIGKILL" in str(e.error)]
    assert all("Received ack for unknown" not in str(e.error) for e in result.errors)


def test_a_killed_worker_takes_its_subprocesses_with_it(tmp_path):
    proc = subprocess.Popen([str(Path(sys.executable).parent / "streamgale"), "local", str(COMPONENTS / "endless.py"),
                             "--duration", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "MULTILANG_MARKS": str(tmp_path)})
    children: list[psutil.Process] = []
    try:
        host = psutil.Process(proc.pid)
        children = wait_for(lambda: [c for c in host.children() if "raw_bolt.py" in " ".join(c.cmdline())]
                            if len(host.children()) >= 2 else None, "two shell subprocesses")
        assert len(children) == 2
        wait_for(lambda: (tmp_path / "hung").exists(), "one subprocess to hang")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        wait_for(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children),
                 "the subprocesses to die with their worker")
    finally:
        proc.kill()
        proc.wait()
        for child in children:  # had they outlived it, the test still leaves none behind
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("n", [0, 1, 15, 16, 300, 70000])
def test_many_messages_encode_as_each_would(n):
    for name in ("json", "msgpack"):
        codec = framing(name)
        messages = [{"id": str(i), "tuple": [i]} for i in range(n)]
        assert codec.encode_many(messages) == b"".join(codec.encode(m) for m in messages)


def test_a_tuple_json_cannot_carry_fails_alone_and_is_reported(tmp_path):
    class Mixed(Spout):
        outputs = ["n"]
        acked: set = set()
        failed: set = set()

        def open(self, context):
            self.i = 0

        def next_tuple(self):
            if self.i < 100:
                self.emit([b"\x00raw" if self.i % 10 == 3 else self.i], msg_id=self.i)
                self.i += 1

        def ack(self, msg_id):
            self.acked.add(msg_id)

        def fail(self, msg_id):
            self.failed.add(msg_id)

    sink = recorder()
    t = Topology("multilang-bytes")
    t.spout("src", Mixed)
    t.bolt("shell", raw("pass", tmp_path)).shuffle("src")
    t.bolt("sink", sink).shuffle("shell")
    _, result = run(t, lambda: len(Mixed.acked) + len(Mixed.failed) == 100)
    bad = {i for i in range(100) if i % 10 == 3}
    assert Mixed.failed == bad and Mixed.acked == set(range(100)) - bad
    assert sorted(n for _, n in sink.got) == sorted(set(range(100)) - bad)
    assert len(result.errors) == 10 and "cannot send" in str(result.errors[0].error)
    assert "JSON framing carries only JSON types" in str(result.errors[0].error)

"""The examples run: through streamgale.testing and through the CLI."""

import importlib.util
import re
import sys
from collections import Counter

from conftest import ROOT, run_cli

from streamgale.config import Config
from streamgale.testing import complete_topology


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_word_count_counts_exactly():
    wc = load_example("word_count")
    sentences = [[s] for s in wc.SENTENCES * 40]
    result = complete_topology(wc.topology, mock_sources={"sentences": sentences})
    expected = Counter(w for (s,) in sentences for w in s.split())
    finals = {}
    for word, count in result.emitted("count"):
        finals[word] = max(count, finals.get(word, 0))
    assert finals == expected


def test_word_count_runs_from_the_cli_and_prints_top_words():
    out = run_cli("local", "examples/word_count.py", "--duration", "4.5")
    assert out.returncode == 0, out.stderr
    tops = [l for l in out.stdout.splitlines() if l.startswith("top words: ")]
    assert len(tops) >= 2
    counts = dict(pair.split("=") for pair in tops[-1][len("top words: "):].split(", "))
    assert len(counts) == 10
    assert max(counts, key=lambda w: int(counts[w])) == "the"  # the most frequent word


def test_sliding_window_counter_forgets_old_slots():
    rtw = load_example("rolling_top_words")
    c = rtw.SlidingWindowCounter(3)
    c.increment("a")
    c.increment("a")
    assert c.totals_then_advance() == {"a": 2}
    c.increment("b")
    assert c.totals_then_advance() == {"a": 2, "b": 1}
    assert c.totals_then_advance() == {"a": 2, "b": 1}
    assert c.totals_then_advance() == {"b": 1}  # a's slot has rolled out of the window
    assert c.totals_then_advance() == {}


def test_rolling_top_words_ranks_by_frequency():
    out = run_cli("local", "examples/rolling_top_words.py", "--duration", "4",
                  "-c", "rolling.emit_seconds=0.5")
    assert out.returncode == 0, out.stderr
    tops = [l for l in out.stdout.splitlines() if l.startswith("top: ")]
    assert tops, out.stdout
    ranking = [re.match(r"(\w+)=(\d+)", p).groups() for p in tops[-1][5:].split(", ")]
    assert [w for w, _ in ranking] == ["stream", "gale", "storm", "bertels", "golda"]
    counts = [int(c) for _, c in ranking]
    assert counts == sorted(counts, reverse=True)


def test_rolling_top_words_builds_from_config():
    rtw = load_example("rolling_top_words")
    t = rtw.build_topology(Config().merged({"rolling.emit_seconds": 1}, "test"))
    assert t.components["counter"].config == {"topology.tick_interval": 1}


def test_sensor_windows_runs_from_the_cli_and_prints_window_averages():
    out = run_cli("local", "examples/sensor_windows.py", "--duration", "3", "-c", "sensors.speedup=20")
    assert out.returncode == 0, out.stderr
    assert len([line for line in out.stdout.splitlines() if line.startswith("[")]) >= 5


def test_stateful_word_count_commits_exact_counts_on_redis(redis_url):
    from streamgale import LocalCluster
    from streamgale.state import committed_state

    swc = load_example("stateful_word_count")
    config = Config().merged({"sentences.total": 500, "topology.state.backend": "redis",
                              "topology.state.redis.url": redis_url,
                              "topology.state.checkpoint_interval": 0.1}, "test")
    cluster = LocalCluster(swc.topology, config)
    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners
               if isinstance(r.instance, swc.NumberedSentences)]
    cluster.run(duration=60, until=lambda: getattr(spout, "acked", 0) == 500)
    assert spout.acked == 500
    committed = {}
    for task_state in committed_state("stateful-word-count", "count", cluster.topology.task_ids()["count"],
                                      config).values():
        committed.update(task_state)
    assert committed == Counter(w for n in range(500) for w in swc.SENTENCES[n % 5].split())


def test_stateful_word_count_runs_from_the_cli():
    out = run_cli("local", "examples/stateful_word_count.py", "--duration", "3",
                  "-c", "topology.state.checkpoint_interval=0.5")
    assert out.returncode == 0, out.stderr
    assert re.search(r"checkpoint \d+ committing: this task has counted \d+ words", out.stdout)


def test_sensor_pipeline_writes_window_averages_from_mqtt_to_redis(mosquitto, redis_server, redis_url):
    import json

    import paho.mqtt.client as mqtt

    from streamgale import LocalCluster

    pipeline = load_example("sensor_pipeline")
    config = Config().merged({"pipeline.mqtt_port": mosquitto.port, "redis.url": redis_url}, "test")
    cluster = LocalCluster(pipeline.build_topology(config), config)
    from streamgale.connectors.mqtt import MqttSource

    [spout] = [r.instance for e in cluster.loop.spouts for r in e.runners if isinstance(r.instance, MqttSource)]
    base = 1_000_000  # three 10 s windows of readings, one a second, then one reading to close them
    readings = [{"sensor": s, "ts": base + i, "celsius": i * k} for i in range(30) for s, k in (("s1", 1), ("s2", 2))]
    readings.append({"sensor": "s1", "ts": base + 40, "celsius": 0})
    publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    publisher.connect("127.0.0.1", mosquitto.port)
    publisher.loop_start()
    sent = False
    expected = {f"s1@{base + w}": 4.5 + w for w in (0, 10, 20)} | {f"s2@{base + w}": 9.0 + 2 * w for w in (0, 10, 20)}

    def done():
        nonlocal sent
        if not sent and spout.counters().get("connected"):
            for r in readings:
                publisher.publish(f"sensors/{r['sensor']}", json.dumps(r), qos=1).wait_for_publish(10)
            sent = True
        with redis_server.client() as c:
            stored = {k.decode(): float(v) for k, v in c.hgetall("sensor-averages").items()}
        return stored == expected

    try:
        cluster.run(duration=60, until=done)
    finally:
        publisher.loop_stop()
        publisher.disconnect()
    with redis_server.client() as c:
        assert {k.decode(): float(v) for k, v in c.hgetall("sensor-averages").items()} == expected

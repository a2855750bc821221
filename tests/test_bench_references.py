"""Tiny runs of the benchmark's reference scenarios: they move and count exactly what they are given.

Speed is never asserted; the counts are, on small fixed inputs.
"""

import math
import queue
import threading
from collections import Counter

import msgpack
import pytest
import zmq

from benchmarks import ceiling
from benchmarks.ceiling import zmq_ceiling
from benchmarks.wordcount import sentences


def words_of(n: int) -> list[str]:
    return [w for (s,) in sentences(n) for w in s.split()]


def run_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_zmq_ceiling_sender_sends_every_word_in_frames_of_1000_then_the_end_frame():
    n = 250  # 2,500 words: two full frames and a half one
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    try:
        port = pull.bind_to_random_port("tcp://127.0.0.1")
        results: queue.Queue = queue.Queue()
        sender = run_thread(ceiling._sender, n, port, results)
        frames = []
        while True:
            assert pull.poll(10_000), f"the sender stopped after {len(frames)} frames"
            frame = pull.recv()
            if frame == b"":
                break
            frames.append(msgpack.unpackb(frame))
        sender.join(10)
        assert not sender.is_alive()
    finally:
        pull.close(linger=0)
        ctx.term()
    assert [len(f) for f in frames] == [1000, 1000, 500]
    assert [w for f in frames for w in f] == words_of(n)  # every word, in order, once
    kind, first = results.get(timeout=1)
    assert kind == "sent" and isinstance(first, float)


def test_zmq_ceiling_receiver_counts_exactly_the_words_it_was_sent():
    ports: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    receiver = run_thread(ceiling._receiver, ports, results)
    ctx = zmq.Context()
    push = ctx.socket(zmq.PUSH)
    try:
        push.connect(f"tcp://127.0.0.1:{ports.get(timeout=10)}")
        for batch in (["a", "b", "c"], [], ["d"] * 1000, ["e", "f"]):
            push.send(msgpack.packb(batch))
        push.send(b"")  # the end frame
        kind, words, last = results.get(timeout=10)
    finally:
        push.close(linger=0)
        ctx.term()
    receiver.join(10)
    assert (kind, words) == ("received", 1005) and isinstance(last, float)


def test_zmq_ceiling_sender_and_receiver_together_move_ten_words_per_sentence():
    n = 123
    ports: queue.Queue = queue.Queue()
    results: queue.Queue = queue.Queue()
    receiver = run_thread(ceiling._receiver, ports, results)
    sender = run_thread(ceiling._sender, n, ports.get(timeout=10), results)
    got = dict((r[0], r[1:]) for r in (results.get(timeout=30), results.get(timeout=30)))
    sender.join(10)
    receiver.join(10)
    assert got["received"][0] == len(words_of(n)) == 10 * n


def test_zmq_ceiling_runs_in_two_processes():
    # zmq_ceiling raises AssertionError unless the receiving process counted exactly 10 * n words.
    rate = zmq_ceiling(500, timeout=120)
    assert math.isfinite(rate) and rate > 0


@pytest.mark.parametrize("processes", [1, 2])
def test_bytewax_word_count_is_correct_and_measured(processes):
    pytest.importorskip("bytewax")
    from benchmarks.bytewax_wc import run_bytewax

    n = 500
    r = run_bytewax(n, processes, verify=True, timeout=120)
    expected = Counter(words_of(n))
    assert r["words"] == sum(expected.values()) == 10 * n
    assert r["outputs"] == r["words"]  # every word emits its running count
    assert r["final"] == dict(expected)
    assert r["rate"] == r["words"] / r["seconds"]


def test_bytewax_flow_counts_a_tiny_known_input_exactly():
    pytest.importorskip("bytewax")
    from bytewax.testing import run_main

    from benchmarks.bytewax_wc import _build_flow

    marks = {"outputs": 0, "final": {}}
    share = ["apple banana apple", "cherry apple", "banana", "date"]
    run_main(_build_flow(share, 3, marks, verify=True))  # batches of 3 sentences, then 1
    assert marks["outputs"] == 7  # one running count per word
    assert marks["final"] == {"apple": 3, "banana": 2, "cherry": 1, "date": 1}
    assert "first_input" in marks


def test_bytewax_word_count_returns_the_runs_rate_and_checks_its_outputs(monkeypatch):
    from benchmarks import bytewax_wc

    runs = []

    def fake_run(sentences, processes=1):
        runs.append((sentences, processes))
        return {"words": 5000, "outputs": outputs, "seconds": 2.0, "rate": 2500.0}

    monkeypatch.setattr(bytewax_wc, "run_bytewax", fake_run)
    outputs = 5000
    assert bytewax_wc.bytewax_word_count(500, processes=2) == 2500.0
    assert runs == [(500, 2)]
    outputs = 4999  # a lost count must not pass as a measurement
    with pytest.raises(AssertionError, match="bytewax emitted 4999 counts for 5000 words"):
        bytewax_wc.bytewax_word_count(500)


def test_bytewax_missing_is_a_clear_error(monkeypatch):
    import sys

    from benchmarks import bytewax_wc

    monkeypatch.setitem(sys.modules, "bytewax", None)  # import bytewax -> ImportError
    with pytest.raises(RuntimeError, match=r"bytewax is not installed: pip install -e '\.\[bench\]'"):
        bytewax_wc.bytewax_word_count(10)

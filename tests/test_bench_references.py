"""Tiny runs of the benchmark's reference scenarios (speed is never asserted, only that it is measured)."""

from collections import Counter

import pytest

from benchmarks.wordcount import sentences
from benchmarks.ceiling import zmq_ceiling


def test_zmq_ceiling_measures_a_rate():
    assert zmq_ceiling(500) > 0


@pytest.mark.parametrize("processes", [1, 2])
def test_bytewax_word_count_is_correct_and_measured(processes):
    pytest.importorskip("bytewax")
    from benchmarks.bytewax_wc import run_bytewax

    n = 500
    r = run_bytewax(n, processes, verify=True, timeout=120)
    expected = Counter(w for (s,) in sentences(n) for w in s.split())
    assert r["words"] == sum(expected.values()) == 10 * n
    assert r["outputs"] == r["words"]  # every word emits its running count
    assert r["final"] == dict(expected)
    assert r["rate"] > 0


def test_bytewax_word_count_returns_words_per_second():
    pytest.importorskip("bytewax")
    from benchmarks.bytewax_wc import bytewax_word_count

    assert bytewax_word_count(500, processes=2) > 0


def test_bytewax_missing_is_a_clear_error(monkeypatch):
    import sys

    from benchmarks import bytewax_wc

    monkeypatch.setitem(sys.modules, "bytewax", None)  # import bytewax -> ImportError
    with pytest.raises(RuntimeError, match=r"bytewax is not installed: pip install -e '\.\[bench\]'"):
        bytewax_wc.bytewax_word_count(10)

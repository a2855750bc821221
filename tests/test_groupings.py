"""Each grouping's distribution, with the same routers local mode and workers use."""

import subprocess
import sys
import zlib
from collections import Counter

import pytest

from streamgale.groupings import CustomGrouping, Grouping
from streamgale.runtime.routing import key_hash, make_router

TARGETS = [5, 6, 7, 8]


def router(kind, fields=(), custom=None, source_fields=("word", "n"), local=frozenset(), task=1):
    return make_router(Grouping(kind, tuple(fields), custom), TARGETS, source_fields, task, local,
                       target_name="target")


def test_shuffle_is_balanced_within_a_few_percent():
    r = router("shuffle")
    counts = Counter(t for i in range(100_000) for t in r.choose(["w", i]))
    assert set(counts) == set(TARGETS)
    for c in counts.values():
        assert abs(c - 25_000) <= 25_000 * 0.02


def test_shuffle_differs_between_emitting_tasks():
    ra, rb = router("shuffle", task=1), router("shuffle", task=2)
    a = [ra.choose([0, 0])[0] for _ in range(16)]
    b = [rb.choose([0, 0])[0] for _ in range(16)]
    assert a != b


def test_fields_sends_equal_keys_to_one_task():
    r = router("fields", ["word"])
    seen = {}
    for i in range(10_000):
        word = f"w{i % 97}"
        (t,) = r.choose([word, i])
        assert seen.setdefault(word, t) == t
    assert len(set(seen.values())) == 4


def test_fields_on_several_fields():
    r = router("fields", ["word", "n"])
    assert r.choose(["a", 1]) == r.choose(["a", 1])
    spread = {r.choose(["a", i])[0] for i in range(100)}
    assert len(spread) == 4


ROUTE_SCRIPT = """
import json, sys
from streamgale.groupings import Grouping
from streamgale.runtime.routing import make_router
r = make_router(Grouping("fields", ("word",)), [5, 6, 7, 8], ("word", "n"), 1, frozenset())
keys = ["alpha", "beta", "γάμμα", 17, 2**40, -3, 1.5, None, ["x", 1]]
print(json.dumps([r.choose([k, 0])[0] for k in keys] + [r.choose(["w%d" % i, 0])[0] for i in range(500)]))
"""


def test_fields_is_deterministic_across_processes():
    # Different hash seeds prove we never route with Python's salted hash().
    outs = []
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        outs.append(subprocess.run([sys.executable, "-c", ROUTE_SCRIPT], env=env, check=True,
                                   capture_output=True, text=True).stdout)
    assert outs[0] == outs[1]
    assert len(set(eval(outs[0]))) == 4


def test_key_hash_is_a_fixed_function():
    # Pinned values: changing the hash would move keys between tasks across versions.
    assert key_hash(["alpha"]) == zlib.crc32(b"alpha")
    assert key_hash([7]) == zlib.crc32((7).to_bytes(8, "little"))
    assert key_hash(["a", 1]) == zlib.crc32(bytes.fromhex("92a16101"))


def test_partial_key_uses_at_most_two_tasks_per_key_and_balances_skew():
    r = router("partial_key", ["word"])
    per_key = {}
    loads = Counter()
    for i in range(20_000):
        word = "hot" if i % 2 else f"w{i % 50}"
        (t,) = r.choose([word, i])
        per_key.setdefault(word, set()).add(t)
        loads[t] += 1
    assert all(len(ts) <= 2 for ts in per_key.values())
    assert len(per_key["hot"]) == 2
    assert max(loads.values()) < 2 * min(loads.values())


def test_all_sends_to_every_task():
    assert router("all").choose(["a", 1]) == (5, 6, 7, 8)


def test_global_sends_to_the_lowest_task():
    r = router("global")
    assert {r.choose([w, 0]) for w in "abcdef"} == {(5,)}


def test_none_behaves_like_shuffle():
    r = router("none")
    counts = Counter(r.choose(["a", i])[0] for i in range(4000))
    assert counts == {5: 1000, 6: 1000, 7: 1000, 8: 1000}


def test_direct_ignores_plain_emits():
    r = router("direct")
    assert r.choose(["a", 1]) == ()
    assert r.targets == frozenset(TARGETS)


def test_local_or_shuffle_prefers_local_tasks():
    r = router("local_or_shuffle", local=frozenset({6, 8, 99}))
    assert {r.choose(["a", i])[0] for i in range(100)} == {6, 8}
    r = router("local_or_shuffle", local=frozenset({1}))
    assert {r.choose(["a", i])[0] for i in range(100)} == set(TARGETS)


class EvenOdd(CustomGrouping):
    def choose_tasks(self, source_task, values):
        return [self.target_tasks[values[1] % 2]]


def test_custom_grouping_chooses_tasks():
    r = router("custom", custom=EvenOdd)
    assert [r.choose(["a", i]) for i in range(4)] == [(5,), (6,), (5,), (6,)]


class Rogue(CustomGrouping):
    def choose_tasks(self, source_task, values):
        return [42]


def test_custom_grouping_choosing_a_foreign_task_is_an_error():
    with pytest.raises(ValueError, match="chose task 42, which is not one of its target tasks"):
        router("custom", custom=Rogue).choose(["a", 1])

"""emit_many, process_batch and the batch rules of anchoring and acking, on the real runtime."""

from collections import Counter

import pytest

from streamgale import Bolt, Config, LocalCluster, Spout, Topology
from streamgale.runtime.acking import AckBuffer, new_id
from streamgale.testing import complete_topology

SENTENCES = [f"w{i % 7} w{i % 5} w{i % 3}" for i in range(300)]


class ManySpout(Spout):
    """Emits every sentence with emit_many, 50 at a time, each with its index as msg id."""

    outputs = ["sentence"]
    log: dict[str, list] = {}

    def open(self, context):
        self.next = 0
        self.acked, self.failed = [], []
        ManySpout.log["acked"], ManySpout.log["failed"] = self.acked, self.failed

    def next_tuple(self):
        batch = SENTENCES[self.next:self.next + 50]
        if batch:
            self.emit_many([[s] for s in batch], msg_ids=list(range(self.next, self.next + len(batch))))
            self.next += len(batch)

    def ack(self, msg_id):
        self.acked.append(msg_id)

    def fail(self, msg_id):
        self.failed.append(msg_id)


class SplitMany(Bolt):
    outputs = ["word"]

    def process(self, tup):
        self.emit_many([[w] for w in tup.values[0].split()])  # auto-anchored to tup, like emit


class Count(Bolt):
    outputs = ["word", "count"]
    totals: Counter = Counter()

    def prepare(self, context):
        self.counts = Counter()

    def process(self, tup):
        self.counts[tup["word"]] += 1
        Count.totals[tup["word"]] += 1


class FailOneWord(Bolt):
    """A sink that fails every tuple of the word w0: its sentences' trees must fail, the rest ack."""

    def process(self, tup):
        if tup["word"] == "w0":
            raise RuntimeError("w0 is refused")


def reliable(bolt) -> Topology:
    t = Topology("many")
    t.spout("sentences", ManySpout)
    t.bolt("split", SplitMany, parallelism=2).shuffle("sentences")
    t.bolt("count", bolt, parallelism=3).fields("split", "word")
    return t


def run_until_settled(topology: Topology) -> None:
    cluster = LocalCluster(topology, Config())
    result = cluster.run(duration=30, until=lambda: len(ManySpout.log.get("acked", ())) +
                         len(ManySpout.log.get("failed", ())) >= len(SENTENCES))
    assert result.errors == [] or all("w0 is refused" in str(e) for e in result.errors)


def test_emit_many_tracks_every_tuple_like_emit():
    Count.totals = Counter()
    run_until_settled(reliable(Count))
    assert sorted(ManySpout.log["acked"]) == list(range(len(SENTENCES)))
    assert ManySpout.log["failed"] == []
    expected = Counter(w for s in SENTENCES for w in s.split())
    assert Count.totals == expected


def test_emit_many_anchors_each_tuple_so_a_failure_fails_exactly_its_trees():
    run_until_settled(reliable(FailOneWord))
    with_w0 = {i for i, s in enumerate(SENTENCES) if "w0" in s.split()}
    assert set(ManySpout.log["failed"]) == with_w0
    assert set(ManySpout.log["acked"]) == set(range(len(SENTENCES))) - with_w0


class BatchSink(Bolt):
    """process_batch with explicit anchors: it emits one summary per input, anchored to it."""

    outputs = ["n"]
    batches: list[int] = []

    def process_batch(self, tuples):
        BatchSink.batches.append(len(tuples))
        for tup in tuples:
            self.emit([len(tup["word"])], anchors=tup)


def test_process_batch_inputs_are_acked_when_it_returns():
    BatchSink.batches = []
    t = reliable(BatchSink)
    run_until_settled(t)
    assert sorted(ManySpout.log["acked"]) == list(range(len(SENTENCES)))
    assert sum(BatchSink.batches) == 3 * len(SENTENCES)
    assert max(BatchSink.batches) > 1  # inputs really arrived in batches


def test_emit_many_checks_every_tuple_with_the_error_emit_gives():
    class Bad(Bolt):
        outputs = ["word"]

        def process(self, tup):
            self.emit_many([["ok"], ["too", "many"]])

    t = Topology("bad")
    t.spout("s", ManySpout)
    t.bolt("bad", Bad).shuffle("s")
    with pytest.raises(Exception, match="emitted 2 values on stream 'default', which declares 1 fields"):
        complete_topology(t, mock_sources={"s": [["x"]]})


def test_spout_emit_many_wants_one_msg_id_per_tuple():
    class Short(Spout):
        outputs = ["x"]

        def next_tuple(self):
            self.emit_many([[1], [2]], msg_ids=[1])

        def exhausted(self):
            return True

    t = Topology("short")
    t.spout("s", Short)
    t.bolt("c", Count).shuffle("s")
    cluster = LocalCluster(t, Config())
    result = cluster.run(duration=5, until=lambda: bool(cluster.errors))
    assert "passed 1 msg_ids for 2 tuples to emit_many; give one per tuple, or none" in str(result.errors[0])


def test_new_roots_are_tracked_by_an_acker_in_the_spouts_own_worker():
    ackers = (10, 11, 12, 13)
    local = AckBuffer(ackers, frozenset({11, 13}))
    chosen = Counter(local.acker(local.new_root()) for _ in range(4000))
    assert set(chosen) == {11, 13}
    assert min(chosen.values()) > 1700  # spread over the local ackers
    anywhere = AckBuffer(ackers)
    assert set(anywhere.acker(anywhere.new_root()) for _ in range(4000)) == set(ackers)


def test_ids_are_nonzero_and_fit_62_bits():
    ids = [new_id() for _ in range(10000)]
    assert all(0 < i < 1 << 62 for i in ids)
    assert len(set(ids)) == len(ids)


def test_local_mode_tunes_the_collector_while_it_runs_and_restores_it():
    import gc

    from streamgale.runtime import gcpolicy

    seen = []

    class Probe(Bolt):
        def process(self, tup):
            seen.append(gc.get_threshold())

    t = Topology("gc")
    t.spout("s", ManySpout)
    t.bolt("probe", Probe).shuffle("s")
    before = gc.get_threshold()
    LocalCluster(t, Config()).run(duration=10, until=lambda: len(seen) >= 10)
    assert set(seen) == {gcpolicy.THRESHOLDS}
    assert gc.get_threshold() == before

"""The wire form of tuple batches: what is encoded is decoded exactly; what is malformed is dropped."""

import msgpack

from streamgale.tuples import Tuple
from streamgale.wire.frames import FRAME_VERSION, TUPLES, Batch, RemoteSink, decode_frame

INDEX = {"split": {"default": {"word": 0}, "__checkpoint": {"txid": 0, "action": 1}}}
COMPONENT = {1: "split", 2: "split"}


def decode(frame, max_tuples=1000):
    got, warnings = {7: [], 8: []}, []
    out = decode_frame(frame, {t: q.append for t, q in got.items()}, COMPONENT, INDEX, max_tuples,
                       lambda msg, *args: warnings.append(msg % args))
    return got, out, warnings


def test_a_batch_round_trips_with_its_anchors():
    batch = Batch()
    fields = INDEX["split"]["default"]
    batch.add(7, Tuple(["a"], "default", "split", 1, fields, {5: 9}))
    batch.add(8, Tuple(["b"], "default", "split", 2, fields, None))
    batch.add(7, Tuple(["c"], "default", "split", 1, fields, None))
    batch.add(7, Tuple(["d"], "default", "split", 1, fields, {5: 3, 6: 4}))  # a tuple of two trees
    assert len(batch) == 4
    got, out, warnings = decode(batch.encode())
    assert len(batch) == 0 and out.tuples == 4 and warnings == []
    assert [(t.values, t.anchors, t.source_task) for t in got[7]] == [
        (["a"], {5: 9}, 1), (["c"], None, 1), (["d"], {5: 3, 6: 4}, 1)]
    assert (got[7][0].root, got[7][0].edge, got[7][2].root, got[7][2].multi) == (5, 9, 0, {5: 3, 6: 4})
    assert [(t.values, t.anchors, t["word"]) for t in got[8]] == [(["b"], None, "b")]


def test_a_channel_keeps_its_order_across_streams():
    # A checkpoint barrier between two words must reach the task between them (docs/state.md).
    batch = Batch()
    words, marks = INDEX["split"]["default"], INDEX["split"]["__checkpoint"]
    batch.add(7, Tuple(["a"], "default", "split", 1, words, None))
    batch.add(8, Tuple(["x"], "default", "split", 1, words, None))
    batch.add(7, Tuple([3, "PREPARE"], "__checkpoint", "split", 1, marks, None))
    batch.add(7, Tuple(["b"], "default", "split", 1, words, None))
    batch.add(8, Tuple(["y"], "default", "split", 1, words, None))
    batch.add(7, Tuple(["c"], "default", "split", 1, words, None))
    got, out, warnings = decode(batch.encode())
    assert out.tuples == 6 and warnings == []
    assert [(t.stream, t.values) for t in got[7]] == [
        ("default", ["a"]), ("__checkpoint", [3, "PREPARE"]), ("default", ["b"]), ("default", ["c"])]
    assert [t.values for t in got[8]] == [["x"], ["y"]]


def test_a_remote_sink_sends_when_its_batch_is_full():
    batch, sent = Batch(), []
    sink = RemoteSink(batch, 7, 2, lambda: sent.append(batch.encode()))
    for w in "abcde":
        sink(Tuple([w], "default", "split", 1, INDEX["split"]["default"], None))
    assert len(sent) == 2 and len(batch) == 1


def test_hostile_entries_are_dropped_and_the_rest_delivered():
    good = [7, 1, "default", [["ok"]], [5], [6], None]
    hostile = [
        [7.0, 1, "default", [["x"]], None, None, None],  # a float task id equal to a real one
        [7, 1.0, "default", [["x"]], None, None, None],
        [7, 1, b"default", [["x"]], None, None, None],
        [7, 1, "default", [["x"]], ["1"], [2], None],  # a root that is no int
        [7, 1, "default", [["x"]], [1], [2.5], None],  # an edge that is no int
        [7, 1, "default", [["x"]], [0], [0], {0: {"root": 1}}],  # anchors not int -> int
        [7, 1, "default", [["x"]], [3], [0], {0: {1: 2, 4: 5}}],  # a root and anchors both
        [7, 1, "default", [["x", "y"]], None, None, None],  # wrong field count
        [9, 1, "default", [["x"]], None, None, None],  # no such local task
    ]
    frame = msgpack.packb([FRAME_VERSION, TUPLES, hostile + [good]], use_bin_type=True)
    got, out, warnings = decode(frame)
    assert [t.values for t in got[7]] == [["ok"]]
    assert out.tuples == 1 and out.dropped_entries == len(hostile) and len(warnings) == len(hostile)


def test_garbage_and_oversized_frames_are_dropped_whole():
    for frame in (b"\xff\x00garbage", msgpack.packb([2, TUPLES, []]), msgpack.packb({"a": 1})):
        got, out, _ = decode(frame)
        assert out.dropped_frames == 1 and out.tuples == 0
    many = msgpack.packb([FRAME_VERSION, TUPLES, [[7, 1, "default", [["w"]] * 50, None, None, None]]])
    got, out, _ = decode(many, max_tuples=10)
    assert out.tuples == 0 and got[7] == []

"""Fuzzing every decoder of bytes from the network or disk: wire frames, client API requests and
replies, the worker-supervisor channel, ZooKeeper records, topology specs, multi-lang messages.

Each target gets random bytes and, to reach past the first check, random msgpack-encoded
structures shaped like its messages (maps with the right keys and wrong values). The contract:
a decoder returns, or raises its own documented error (a ``ValueError`` subclass that names the
problem); never another exception, never a hang. The budget is ``FUZZ_EXAMPLES`` examples per
target (default 100: about 20 s in all); raise it for a longer run:

    STREAMGALE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamgale.cluster.records import Assignment, ErrorRecord, RecordError, SupervisorInfo, TopologyRecord
from streamgale.multilang import ProtocolError as MultilangError
from streamgale.multilang import messages
from streamgale.multilang.framing import framing
from streamgale.wire import channel, protocol
from streamgale.wire.frames import FRAME_VERSION, TUPLES, decode_frame
from streamgale.wire.spec import SpecError, TopologySpec

EXAMPLES = int(os.environ.get("STREAMGALE_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=20), st.binary(max_size=20))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                       st.dictionaries(st.text(max_size=10), inner, max_size=5)),
                      max_leaves=20)


def shaped(keys: list[str]) -> st.SearchStrategy[bytes]:
    """msgpack maps with some of ``keys`` (and others), holding any values."""
    known = st.dictionaries(st.sampled_from(keys), values, max_size=len(keys))
    return st.builds(lambda d, extra: msgpack.packb({**extra, **d}, use_bin_type=True),
                     known, st.dictionaries(st.text(max_size=8), values, max_size=2))


def garbage_or(shape: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=200), shape,
                     st.builds(lambda v: msgpack.packb(v, use_bin_type=True), values))


@FUZZ
@given(garbage_or(st.builds(lambda groups: msgpack.packb([FRAME_VERSION, TUPLES, groups], use_bin_type=True),
                            st.lists(st.lists(values, min_size=7, max_size=7) | values, max_size=4))))
def test_worker_frames(frame):
    delivered = []
    index = {"src": {"default": {"n": 0}}}
    out = decode_frame(frame, {1: delivered.append}, {2: "src"}, index, 1000, lambda *a: None)
    assert out.tuples == len(delivered) and out.tuples >= 0


@FUZZ
@given(garbage_or(shaped(["v", "id", "op", "args"])))
def test_client_api_requests(frame):
    try:
        protocol.decode_request(frame)
    except protocol.ProtocolError:
        pass


@FUZZ
@given(garbage_or(shaped(["v", "id", "ok", "result", "error"])))
def test_client_api_replies(frame):
    try:
        protocol.decode_response(frame)
    except protocol.ProtocolError:
        pass


@FUZZ
@given(garbage_or(shaped(["v", "kind", "pid", "executors", "time", "counters", "component", "task", "message",
                          "status", "assignment", "models", "log_level"])))
def test_worker_channel(frame):
    try:
        channel.decode(frame)
    except channel.ChannelError:
        pass


@pytest.mark.parametrize("record", [SupervisorInfo, TopologyRecord, Assignment, ErrorRecord])
def test_zookeeper_records(record):
    @FUZZ
    @given(garbage_or(shaped(["format", "kind", "id", "name", "host", "ports", "slots", "status", "spec",
                              "config", "digest", "component", "task", "message", "time", "executors"])))
    def fuzz(data):
        try:
            record.decode(data)
        except RecordError:
            pass

    fuzz()


@FUZZ
@given(values)
def test_topology_specs(spec):
    try:
        TopologySpec.from_dict(spec)
    except SpecError:
        pass


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_multilang_messages(name):
    commands = {**messages.BOLT_COMMANDS, **messages.SPOUT_COMMANDS}

    @FUZZ
    @given(st.lists(st.one_of(st.binary(max_size=60), st.builds(
        lambda d: (json.dumps(d, default=repr).encode() + b"\nend\n") if name == "json"
        else msgpack.packb(d, use_bin_type=True),
        st.dictionaries(st.sampled_from(["command", "id", "tuple", "anchors", "task", "stream", "msg", "name",
                                         "pid"]), st.one_of(st.sampled_from(list(commands)), values),
                        max_size=6))), max_size=6))
    def fuzz(chunks):
        decoder = framing(name).decoder()
        for chunk in chunks:
            try:
                decoded = decoder.feed(chunk)
            except MultilangError:
                return
            for message in decoded:
                try:
                    messages.command(message, messages.BOLT_COMMANDS)
                except MultilangError:
                    pass

    fuzz()

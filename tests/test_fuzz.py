"""Fuzzing every decoder of bytes from the network or disk: wire frames, client API requests and
replies, the worker-supervisor channel (each kind of message), what nimbus makes of a supervisor's
report (worker beats, metrics, counters), ZooKeeper records, topology specs, multi-lang messages,
and code packages (random bytes, and tar.gz archives of hostile members: names, types, sizes,
link targets, modes, truncated or corrupted), which must unpack inside their directory within
the limits, or be refused with PackageError.

Each target gets random bytes and, to reach past the first check, random msgpack-encoded
structures shaped like its messages (maps with the right keys and wrong values). The contract:
a decoder returns, or raises its own documented error (a ``ValueError`` subclass that names the
problem); never another exception, never a hang. The budget is ``FUZZ_EXAMPLES`` examples per
target (default 100: about 20 s in all); raise it for a longer run:

    STREAMGALE_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import gzip
import io
import json
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamgale.cluster.package import MARKER, PackageError, check_package, digest, unpack
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


# -- the supervisor's worker beats and metrics, and what nimbus makes of them ----------------------

CHANNEL_FIELDS = {
    "heartbeat": ["topology_id", "port", "pid", "seq", "executors", "control_version", "uptime_s"],
    "metrics": ["report"],
    "error": ["record"],
    "control": ["version", "status", "log_levels", "assignment", "models"],
}
executors = st.lists(st.one_of(st.tuples(st.text(max_size=8), st.lists(st.integers(-3, 2**64 - 1), max_size=3)),
                               values), max_size=3)


@pytest.mark.parametrize("kind", sorted(CHANNEL_FIELDS))
def test_worker_channel_messages_of_each_kind(kind):
    """Past the envelope: every field of a kind's record, each of any type (executors as lists)."""

    @FUZZ
    @given(st.dictionaries(st.sampled_from(CHANNEL_FIELDS[kind]), st.one_of(values, executors), max_size=8),
           st.sampled_from([channel.CHANNEL_VERSION, 0, "1", None]))
    def fuzz(fields, version):
        frame = msgpack.packb({**fields, "v": version, "kind": kind}, use_bin_type=True)
        try:
            message = channel.decode(frame)
        except channel.ChannelError:
            return
        channel.decode(channel.encode(message))  # what decoded encodes again, the same way

    fuzz()


counts = st.one_of(st.integers(-1, 2**64 - 1), st.floats(allow_nan=True, allow_infinity=True), values)
task_counters = st.dictionaries(st.sampled_from(["component", "kind", "queue", "executed", "acked", "failed", "busy",
                                                 "latency_total", "malformed", "pending", "emitted_by_stream",
                                                 "transferred_by_stream", "model_version", "text"]),
                                st.one_of(counts, st.dictionaries(st.text(max_size=4), counts, max_size=2)),
                                max_size=8)
metrics_reports = st.fixed_dictionaries({}, optional={
    "topology_id": st.one_of(st.sampled_from(["t-1", "t-2"]), values), "slot": st.one_of(st.just("s:1"), values),
    "pid": st.one_of(st.integers(0, 3), values), "host": st.one_of(st.just("h"), values),
    "port": st.one_of(st.integers(-1, 70000), values), "cpu_percent": counts, "rss_mb": counts, "uptime_s": counts,
    "transport": st.one_of(st.dictionaries(st.sampled_from(["received", "dropped_frames", "dropped_entries",
                                                            "denied_keys"]), counts, max_size=4), values),
    "tasks": st.one_of(st.dictionaries(st.one_of(st.sampled_from(["1", "2", "007"]), st.text(max_size=4)),
                                       st.one_of(task_counters, values), max_size=3), values)})
beats = st.fixed_dictionaries({}, optional={
    "topology_id": st.one_of(st.just("t-1"), values), "port": st.one_of(st.integers(-1, 70000), counts),
    "seq": st.one_of(st.integers(0, 2**64 - 1), counts), "pid": counts, "uptime_s": counts, "executors": executors,
    "code_refused": values})


@pytest.fixture(scope="module")
def leader():
    """A nimbus that believes it leads, over an in-memory ZooKeeper; never started (no sockets)."""
    from types import SimpleNamespace

    from streamgale.nimbus.daemon import Nimbus

    from streamgale.cluster.memory_storage import MemoryStorage, MemoryZooKeeper
    from streamgale.cluster.state import ClusterState
    from streamgale.config import Config

    state = ClusterState(MemoryStorage(MemoryZooKeeper()), "/fuzz")
    state.start(timeout=5)
    nimbus = Nimbus(Config(), "127.0.0.1", 1, state, None)  # type: ignore[arg-type]
    nimbus.leadership = SimpleNamespace(is_leader=True)  # type: ignore[assignment]
    yield nimbus
    state.close()


def test_supervisor_reports_as_nimbus_takes_them(leader):
    """A report of beats, metrics and counters (wire-decoded as nimbus's server does) is taken or
    answered BadRequest; either way, nimbus's stats and cluster info still answer."""
    from streamgale.nimbus.metrics import MalformedReport

    @FUZZ
    @given(st.lists(beats, max_size=3), st.lists(metrics_reports, max_size=3),
           st.one_of(st.dictionaries(st.text(max_size=6), st.integers(0, 5), max_size=3), values))
    def fuzz(heartbeats, metrics, counters):
        args = {"supervisor_id": "s1", "heartbeats": heartbeats, "metrics": metrics, "counters": counters}
        try:
            request = protocol.decode_request(msgpack.packb({"v": 1, "id": 1, "op": "supervisor_report",
                                                             "args": args}, use_bin_type=True))
        except protocol.ProtocolError:
            return
        try:
            leader.supervisor_report(request)
        except protocol.BadRequest:
            pass
        for tid in ("t-1", "t-2"):
            msgpack.packb(leader.metrics.stats(tid, 1000.0))  # still answers, and encodes
        for report in metrics:  # alone, a report is kept or refused whole, never half
            store = MetricsStore()
            try:
                store.add(report, 0.0)
            except MalformedReport:
                assert store.tasks == {} and store.workers == {}

    from streamgale.nimbus.metrics import MetricsStore
    fuzz()


# -- code packages ---------------------------------------------------------------------------------

PART = st.one_of(st.sampled_from(["a", "b.py", "lib", "..", ".", "", "__init__.py", "x" * 300, "é", "a\\b", "c\x00d",
                                  "~", "-rf", " "]), st.text(min_size=1, max_size=12))
names = st.builds(lambda lead, parts: lead + "/".join(parts), st.sampled_from(["", "", "/", "./", "../"]),
                  st.lists(PART, min_size=1, max_size=5))
MEMBER_TYPES = [tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE, b"V",
                b"Z"]
members = st.lists(st.tuples(names, st.sampled_from(MEMBER_TYPES), st.binary(max_size=3000),
                             st.one_of(st.just(""), names, st.sampled_from(["/etc/passwd", "../../../outside/x"])),
                             st.integers(0, 0o7777)), min_size=1, max_size=8)
FORMATS = [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]
MAX_BYTES, MAX_FILES = 8000, 6  # small limits, so that archives reach them


def archive(entries, tar_format, cut, flip) -> bytes | None:
    """A tar.gz of ``entries`` (name, type, data, link target, mode); ``cut``: keep only that
    much of it; ``flip``: (offset, xor) into the uncompressed tar. None if tarfile refuses it."""
    buf = io.BytesIO()
    try:
        with tarfile.open(fileobj=buf, mode="w", format=tar_format) as tar:
            for name, kind, data, link, mode in entries:
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mode = kind, link, mode
                info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE) else 0
                tar.addfile(info, io.BytesIO(data) if info.size else None)
    except (ValueError, OverflowError, UnicodeError, tarfile.TarError):
        return None
    raw = bytearray(buf.getvalue())
    if flip is not None:
        raw[flip[0] % len(raw)] ^= flip[1]
    data = gzip.compress(bytes(raw), mtime=0)
    return data[:cut] if cut is not None else data


def assert_unpacks_safely_or_refuses(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        parent, outside = root / "code", root / "outside"
        parent.mkdir()
        outside.mkdir()
        dest = parent / "topology"
        try:
            unpack(data, dest, digest(data), max_bytes=MAX_BYTES, max_files=MAX_FILES)
        except PackageError:
            assert not dest.exists() and not dest.is_symlink()
            assert list(parent.iterdir()) == []  # nothing half-unpacked left beside it
        else:
            assert [p.name for p in parent.iterdir()] == ["topology"]
            assert (dest / MARKER).read_text() == digest(data)
            files, total = 0, 0
            for where, dirs, found in os.walk(dest):
                for name in dirs + found:
                    path = Path(where) / name
                    mode = path.lstat().st_mode
                    assert stat.S_ISDIR(mode) or stat.S_ISREG(mode), f"{path} is neither a file nor a directory"
                    assert path.resolve().is_relative_to(dest.resolve())
                    if stat.S_ISREG(mode) and path != dest / MARKER:
                        files += 1
                        total += path.lstat().st_size
                        assert not mode & 0o7022, f"{path} has mode {oct(mode)}"  # no setuid, no group/other write
            assert files <= MAX_FILES and total <= MAX_BYTES
        assert list(outside.iterdir()) == [] and sorted(os.listdir(root)) == ["code", "outside"]
        try:
            check_package(data, "b.py", max_bytes=MAX_BYTES, max_files=MAX_FILES)
        except PackageError:
            pass


@FUZZ
@given(st.one_of(st.binary(max_size=400), st.builds(lambda b: gzip.compress(b, mtime=0), st.binary(max_size=2000)),
                 st.builds(lambda b: gzip.compress(b"\x00" * 512 + b, mtime=0), st.binary(max_size=1000))))
def test_code_packages_of_random_bytes(data):
    assert_unpacks_safely_or_refuses(data)


@FUZZ
@given(members, st.sampled_from(FORMATS), st.one_of(st.none(), st.integers(0, 4000)),
       st.one_of(st.none(), st.tuples(st.integers(0, 1 << 20), st.integers(1, 255))))
def test_code_packages_of_hostile_archives(entries, tar_format, cut, flip):
    data = archive(entries, tar_format, cut, flip)
    if data is not None:
        assert_unpacks_safely_or_refuses(data)

"""Code packages: deterministic packing, and unpacking that trusts nothing."""

import gzip
import io
import os
import re
import tarfile

import pytest

from streamgale.cluster.package import (
    MARKER,
    PackageError,
    check_entry,
    check_package,
    digest,
    entry_path,
    pack_directory,
    unpack,
)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "lib" / "deep").mkdir(parents=True)
    (root / "topology.py").write_text("topology = None\n")
    (root / "lib" / "__init__.py").write_text("")
    (root / "lib" / "deep" / "util.py").write_text("X = 1\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o755)
    (root / "empty").mkdir()
    for skipped in ("__pycache__", ".git", ".venv", "lib/__pycache__"):
        (root / skipped).mkdir()
        (root / skipped / "junk").write_text("junk")
    (root / "stale.pyc").write_bytes(b"\0")
    return root


def names(data):
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return tar.getnames()


def build(members):
    """A tar.gz from (TarInfo, bytes | None) pairs, the way an attacker would make one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, content in members:
            if content is not None:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(info)
    return buf.getvalue()


def member(name, kind=tarfile.REGTYPE, linkname="", content=b"x"):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, (content if kind == tarfile.REGTYPE else None)


def everything_under(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def test_round_trip(project, tmp_path):
    data = pack_directory(project)
    dest = tmp_path / "out" / "code"
    unpack(data, dest, digest(data))
    assert (dest / "topology.py").read_text() == "topology = None\n"
    assert (dest / "lib" / "deep" / "util.py").read_text() == "X = 1\n"
    assert (dest / "empty").is_dir()
    assert os.access(dest / "run.sh", os.X_OK) and not os.access(dest / "topology.py", os.X_OK)
    assert (dest / MARKER).read_text() == digest(data)
    assert everything_under(dest) == sorted(
        [MARKER, "empty", "lib", "lib/__init__.py", "lib/deep", "lib/deep/util.py", "run.sh", "topology.py"])
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "code"]  # no temp dirs left


def test_packing_skips_caches_vcs_and_links(project, tmp_path):
    (tmp_path / "outside.txt").write_text("secret")
    (project / "link.txt").symlink_to(tmp_path / "outside.txt")
    (project / "linkdir").symlink_to(tmp_path)
    got = names(pack_directory(project))
    assert got == sorted(got)
    assert set(got) == {"empty", "lib", "lib/__init__.py", "lib/deep", "lib/deep/util.py", "run.sh", "topology.py"}


def test_packing_is_deterministic(project):
    first = pack_directory(project)
    os.utime(project / "topology.py", (1, 1))  # mtimes do not matter
    assert pack_directory(project) == first
    (project / "topology.py").write_text("topology = 1\n")
    assert pack_directory(project) != first
    with tarfile.open(fileobj=io.BytesIO(first), mode="r:gz") as tar:
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in tar} == {(0, 0, 0, "", "")}


def test_packing_over_the_limit(project):
    (project / "data.bin").write_bytes(os.urandom(200_000))
    with pytest.raises(PackageError, match=f"code package of {project} is over the limit of 100000 bytes"):
        pack_directory(project, max_bytes=100_000)


def test_packing_a_missing_directory(tmp_path):
    with pytest.raises(PackageError, match="not a directory"):
        pack_directory(tmp_path / "nope")


def test_digest():
    assert digest(b"abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_digest_mismatch(project, tmp_path):
    data = pack_directory(project)
    with pytest.raises(PackageError, match=f"code package digest mismatch: expected {'0' * 64}, got {digest(data)}"):
        unpack(data, tmp_path / "dest", "0" * 64)
    assert not (tmp_path / "dest").exists()


def test_unpack_twice_is_a_no_op_and_a_new_digest_replaces(project, tmp_path):
    dest = tmp_path / "dest"
    data = pack_directory(project)
    unpack(data, dest, digest(data))
    (dest / "extra").write_text("left alone")
    unpack(data, dest, digest(data))
    assert (dest / "extra").exists()
    (project / "topology.py").write_text("topology = 2\n")
    newer = pack_directory(project)
    unpack(newer, dest, digest(newer))
    assert not (dest / "extra").exists() and (dest / "topology.py").read_text() == "topology = 2\n"
    assert (dest / MARKER).read_text() == digest(newer)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "project"]


HOSTILE = [
    ([member("../escape.txt")], "'../escape.txt' has a '..' component"),
    ([member("ok/../../escape.txt")], "'ok/../../escape.txt' has a '..' component"),
    ([member("/tmp/abs.txt")], "'/tmp/abs.txt' has an absolute name"),
    ([member("..\\escape.txt")], "has an invalid name"),
    ([member("evil", tarfile.SYMTYPE, "/etc/passwd")], "'evil' is a symbolic link"),
    ([member("a.txt"), member("evil", tarfile.LNKTYPE, "a.txt")], "'evil' is a hard link"),
    ([member("fifo", tarfile.FIFOTYPE)], "'fifo' is a FIFO"),
    ([member("null", tarfile.CHRTYPE)], "'null' is a device"),
    ([member("disk", tarfile.BLKTYPE)], "'disk' is a device"),
    ([member("odd", b"Z")], "'odd' is not a regular file or directory"),
    ([member("a.txt"), member("a.txt")], "'a.txt' clashes with an earlier member"),
    ([member("a"), member("a/b.txt")], "'a/b.txt' clashes with an earlier member"),
    # Found by tests/test_fuzz.py: names no file system holds were an OSError (ENAMETOOLONG), not a PackageError.
    ([member("lib/" + "x" * 256 + ".py")], "has a name longer than a file system holds"),
    ([member("/".join(["d" * 200] * 6))], "has a name longer than a file system holds"),
]


@pytest.mark.parametrize("members,message", HOSTILE, ids=[m for _, m in HOSTILE])
def test_hostile_archives_are_rejected(tmp_path, members, message):
    data = build(members)
    dest = tmp_path / "sandbox" / "dest"
    with pytest.raises(PackageError, match=message.replace("(", r"\(")):
        unpack(data, dest, digest(data))
    assert not dest.exists()
    assert everything_under(tmp_path) == ["sandbox"]  # nothing escaped, no temp dir left


def test_symlink_then_file_through_it_is_rejected_at_the_link(tmp_path):
    data = build([member("lib", tarfile.SYMTYPE, str(tmp_path)), member("lib/owned.txt")])
    with pytest.raises(PackageError, match="'lib' is a symbolic link"):
        unpack(data, tmp_path / "dest", digest(data))
    assert not (tmp_path / "owned.txt").exists()


def test_size_bomb_over_the_limit(tmp_path):
    data = build([member("small.txt", content=b"a" * 10), member("big.bin", content=b"\0" * 2_000_000)])
    assert len(data) < 10_000  # compresses to almost nothing
    with pytest.raises(PackageError, match="'big.bin' takes the unpacked size over the limit of 1000000 bytes"):
        unpack(data, tmp_path / "dest", digest(data), max_bytes=1_000_000)
    assert everything_under(tmp_path) == []


def test_header_bomb_is_capped(tmp_path):
    info = tarfile.TarInfo("x.txt")
    info.pax_headers = {"comment": "A" * 3_000_000}  # tarfile would read this header whole
    data = build([(info, b"x")])
    with pytest.raises(PackageError, match="more data than its size limit"):
        unpack(data, tmp_path / "dest", digest(data), max_bytes=1000, max_files=10)
    assert everything_under(tmp_path) == []


def test_too_many_files(tmp_path):
    data = build([member(f"f{i}.txt") for i in range(11)])
    with pytest.raises(PackageError, match="too many members: 'f10.txt' is past the limit of 10"):
        unpack(data, tmp_path / "dest", digest(data), max_files=10)
    unpack(data, tmp_path / "dest", digest(data), max_files=11)
    assert len(list((tmp_path / "dest").glob("f*.txt"))) == 11


def test_not_an_archive(tmp_path):
    for data in (b"", b"not gzip at all", gzip.compress(b"not a tar" * 100)):
        with pytest.raises(PackageError, match="not a valid tar.gz archive"):
            unpack(data, tmp_path / "dest", digest(data))
    assert everything_under(tmp_path) == []


def test_setuid_bits_are_dropped(tmp_path):
    info, content = member("tool")
    info.mode = 0o4777
    data = build([(info, content)])
    unpack(data, tmp_path / "dest", digest(data))
    mode = (tmp_path / "dest" / "tool").stat().st_mode & 0o7777
    assert mode & 0o7000 == 0 and mode & 0o100


# -- the entry (the topology file workers import) ------------------------------------------------


@pytest.mark.parametrize("entry,message", [
    ("/etc/evil.py", "code package entry '/etc/evil.py' is an absolute path"),
    ("../../evil.py", "code package entry '../../evil.py' has a '..' component"),
    ("lib/../../evil.py", "has a '..' component"),
    ("./topology.py", "is not a normalised relative path"),
    ("lib//x.py", "is not a normalised relative path"),
    ("topology.sh", "must name a Python file ending in .py"),
    ("", "is not a file name"),
    ("a\\b.py", "is not a file name"),
])
def test_an_entry_outside_the_package_is_refused(entry, message):
    """Issue 17: an absolute or '../' entry made workers import any .py file on the host."""
    with pytest.raises(PackageError, match=re.escape(message)):
        check_entry(entry)


def test_nimbus_and_supervisors_refuse_an_entry_the_archive_lacks(project, tmp_path):
    data = pack_directory(project)
    check_package(data, "topology.py")
    check_package(data, "lib/deep/util.py")
    for missing in ("nope.py", "lib/__init__.pyc", "lib"):
        with pytest.raises(PackageError, match=re.escape(f"code package entry '{missing}' is not a file in the code "
                                                         f"package") if missing.endswith(".py") else "Python file"):
            check_package(data, missing)
    with pytest.raises(PackageError, match="is an absolute path"):
        check_package(data, "/etc/passwd.py")
    with pytest.raises(PackageError, match="is not a file in the code package"):
        unpack(data, tmp_path / "dest", digest(data), entry="nope.py")
    assert not (tmp_path / "dest").exists()  # nothing unpacked
    hostile = build([member("topology.py"), member("../x.py")])
    with pytest.raises(PackageError, match="'../x.py' has a '..' component"):
        check_package(hostile, "topology.py")
    unpack(data, tmp_path / "dest", digest(data), entry="lib/deep/util.py")


def test_workers_resolve_the_entry_inside_the_unpacked_package_only(project, tmp_path):
    data = pack_directory(project)
    dest = tmp_path / "code"
    unpack(data, dest, digest(data))
    assert entry_path(dest, "lib/deep/util.py") == (dest / "lib" / "deep" / "util.py").resolve()
    (tmp_path / "outside.py").write_text("X = 1\n")
    (dest / "link.py").symlink_to(tmp_path / "outside.py")  # not from the archive, but refused all the same
    with pytest.raises(PackageError, match="code package entry 'link.py' resolves to .*outside.py, outside the code "
                                           "package"):
        entry_path(dest, "link.py")
    with pytest.raises(PackageError, match="'../outside.py' has a '..' component"):
        entry_path(dest, "../outside.py")
    with pytest.raises(PackageError, match="code package entry 'missing.py' is not a file of the code package"):
        entry_path(dest, "missing.py")


def test_a_streamgaleignore_file_leaves_out_what_it_matches(project):
    (project / "data").mkdir()
    (project / "data" / "big.csv").write_text("1,2\n")
    (project / "lib" / "deep" / "cache.bin").write_bytes(b"\0")
    (project / "lib" / "keep.bin").write_bytes(b"\1")
    (project / ".streamgaleignore").write_text("# what workers do not need\ndata/\n*.bin\n!keep.bin\n")
    assert set(names(pack_directory(project))) == {
        ".streamgaleignore", "empty", "lib", "lib/__init__.py", "lib/deep", "lib/deep/util.py", "lib/keep.bin",
        "run.sh", "topology.py"}


def test_an_unreadable_streamgaleignore_is_refused_naming_it(project):
    (project / ".streamgaleignore").write_bytes(b"\xff\xfe data/\n")
    with pytest.raises(PackageError, match=r"cannot read .*\.streamgaleignore: 'utf-8' codec can't decode"):
        pack_directory(project)


def test_the_size_limit_error_names_the_ignore_file(project):
    (project / "blob.bin").write_bytes(os.urandom(50_000))
    with pytest.raises(PackageError, match=r"over the limit of 1000 bytes; .* in a \.streamgaleignore file"):
        pack_directory(project, max_bytes=1000)

"""Code packages: the deterministic tar.gz of a topology's directory.

``submit`` packs a directory with :func:`pack_directory`; nimbus stores the
bytes under their :func:`digest`; every supervisor checks the digest and
unpacks with :func:`unpack`, which trusts nothing in the archive: only regular
files and directories, no absolute names, no ``..``, no links or devices, names
a file system holds, and limits on the total size and the number of members. Files are written by this
module (never ``tarfile.extractall``) into a fresh directory that no link
can redirect, then renamed into place, so a half-unpacked package is never
seen. The package's entry, the topology file workers import, must be a
relative ``.py`` path of one of its files (:func:`check_entry`,
:func:`entry_path`): nimbus checks it at submit (:func:`check_package`),
supervisors when they unpack, workers when they import.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import uuid
import zlib
from pathlib import Path, PurePosixPath

import pathspec

MARKER = ".digest"  # in an unpacked package: the digest it was unpacked from
IGNORE_FILE = ".streamgaleignore"  # in a topology directory: what not to pack (.gitignore's syntax)
SKIP_DIRS = frozenset({"__pycache__", ".git", ".venv"})
SKIP_SUFFIXES = (".pyc",)
_CHUNK = 1 << 16


class PackageError(ValueError):
    """A code package cannot be made or is unsafe or corrupt; the message names the culprit."""


def digest(data: bytes) -> str:
    """The package's identity: the sha256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


# -- packing ------------------------------------------------------------------------------------

def pack_directory(directory: Path, max_bytes: int = 64 << 20) -> bytes:
    """A deterministic tar.gz of ``directory``'s contents.

    Members are named relative to ``directory`` (``word_count.py``,
    ``lib/util.py``), in sorted order, with mtime 0, owner 0:0 and modes
    normalised to 0644/0755, so the same tree always gives the same bytes.
    ``__pycache__``, ``.git`` and ``.venv`` directories and ``*.pyc`` files
    are left out, and so is whatever a ``.streamgaleignore`` file in ``directory``
    matches (the syntax of ``.gitignore``, through ``pathspec``). Symbolic links (to
    files or directories) are skipped, not followed, as are sockets, FIFOs and devices. Raises :class:`PackageError`
    if the archive would exceed ``max_bytes``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PackageError(f"cannot package {directory}: not a directory")
    ignored = _ignore_spec(directory)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, rel in _walk(directory, ignored):
                info = tarfile.TarInfo(rel)
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                st = path.lstat()
                if stat.S_ISDIR(st.st_mode):
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.size, info.mode = st.st_size, 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                if buf.tell() > max_bytes:
                    raise _too_big(directory, max_bytes)
    data = buf.getvalue()
    if len(data) > max_bytes:
        raise _too_big(directory, max_bytes)
    return data


def _too_big(directory: Path, max_bytes: int) -> PackageError:
    return PackageError(f"the code package of {directory} is over the limit of {max_bytes} bytes; "
                        f"move data files out of the topology directory, or list what workers do not "
                        f"need in a {IGNORE_FILE} file there (.gitignore's syntax)")


def _ignore_spec(directory: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        lines = (directory / IGNORE_FILE).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise PackageError(f"cannot read {directory / IGNORE_FILE}: {e}") from None
    return pathspec.GitIgnoreSpec.from_lines(lines)


def _walk(directory: Path, ignored: pathspec.GitIgnoreSpec | None = None,
          prefix: PurePosixPath = PurePosixPath()):
    """(path, posix name relative to the packed root) of every entry to pack, sorted, depth first."""
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = str(prefix / entry.name)
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name in SKIP_DIRS or (ignored is not None and ignored.match_file(name + "/")):
                continue
            yield Path(entry.path), name
            yield from _walk(Path(entry.path), ignored, prefix / entry.name)
        elif (entry.is_file(follow_symlinks=False) and not entry.name.endswith(SKIP_SUFFIXES)
              and not (ignored is not None and ignored.match_file(name))):
            yield Path(entry.path), name


# -- unpacking ----------------------------------------------------------------------------------

def unpack(data: bytes, dest: Path, expected_digest: str, max_bytes: int = 256 << 20,
           max_files: int = 20000, entry: str | None = None) -> None:
    """Check and unpack a code package into ``dest``, atomically.

    The sha256 of ``data`` must equal ``expected_digest``. Every member must
    be a regular file or directory with a relative name and no ``..``; the
    members' total size may not exceed ``max_bytes`` nor their number
    ``max_files``; ``entry``, if given, must be one of its regular files (see
    :func:`check_entry`). Anything else raises :class:`PackageError` naming the
    member, and leaves ``dest`` as it was.

    The package is unpacked into a temporary directory beside ``dest``, a
    :data:`MARKER` file holding the digest is added, and the directory is
    renamed to ``dest``. If ``dest`` already holds this digest nothing
    happens; if it holds another package, that one is replaced (``dest`` is
    briefly absent while the two renames happen). Blocks on disk I/O; safe to
    call from any thread, but not concurrently for the same ``dest``.
    """
    dest = Path(dest)
    actual = digest(data)
    if actual != expected_digest:
        raise PackageError(f"code package digest mismatch: expected {expected_digest}, got {actual}")
    wanted = None if entry is None else check_entry(entry)
    if _unpacked_digest(dest) == expected_digest:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    try:
        _extract(data, tmp, max_bytes, max_files)
        if wanted is not None and not tmp.joinpath(*wanted).is_file():  # written by us: no links
            raise PackageError(f"code package entry '{entry}' is not a file in the code package")
        (tmp / MARKER).write_text(expected_digest)
        tmp.chmod(0o755)  # mkdtemp made it private
        _move_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unpacked_digest(dest: Path) -> str | None:
    try:
        return (dest / MARKER).read_text().strip()
    except OSError:
        return None


def _move_into_place(tmp: Path, dest: Path) -> None:
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


class _Limited(io.RawIOBase):
    """A reader that refuses to yield more than ``limit`` bytes: tar headers (PAX ones
    above all) are read whole into memory, so the decompressed stream is capped too."""

    def __init__(self, source: gzip.GzipFile, limit: int):
        self.source, self.left = source, limit

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.left + 1
        chunk = self.source.read(min(size, self.left + 1))
        self.left -= len(chunk)
        if self.left < 0:
            raise PackageError("code package unpacks to more data than its size limit allows")
        return chunk


# Room for headers and padding beside the members' data: header, PAX header and padding.
_PER_MEMBER_OVERHEAD = 4096
# Member names a file system holds (NAME_MAX; and well under PATH_MAX, below the code directory).
MAX_NAME_PART, MAX_NAME = 255, 1024


def check_entry(entry: str) -> tuple[str, ...]:
    """The path components of a package's entry (the topology file workers import), if it is a
    normalised relative path to a ``.py`` file (``word_count.py``, ``lib/topology.py``); else
    :class:`PackageError` naming it. Pure: whether the file is in the package is another check."""
    if not isinstance(entry, str) or not entry or "\x00" in entry or "\\" in entry:
        raise PackageError(f"code package entry {entry!r} is not a file name (empty, NUL or backslash)")
    if entry.startswith("/"):
        raise PackageError(f"code package entry '{entry}' is an absolute path; it must name a .py file "
                           f"inside the code package, relative to its root")
    parts = tuple(entry.split("/"))
    if ".." in parts:
        raise PackageError(f"code package entry '{entry}' has a '..' component; it must name a .py file "
                           f"inside the code package")
    if "" in parts or "." in parts:
        raise PackageError(f"code package entry '{entry}' is not a normalised relative path "
                           f"(like 'lib/topology.py')")
    if not entry.endswith(".py"):
        raise PackageError(f"code package entry '{entry}' must name a Python file ending in .py")
    return parts


def entry_path(code_dir: Path, entry: str) -> Path:
    """The topology file a worker imports: ``entry`` inside the unpacked package ``code_dir``.

    Raises :class:`PackageError` unless :func:`check_entry` accepts ``entry`` and it resolves
    (links followed) to a regular file inside ``code_dir``.
    """
    root = Path(code_dir).resolve()
    path = root.joinpath(*check_entry(entry)).resolve()
    if not path.is_relative_to(root):
        raise PackageError(f"code package entry '{entry}' resolves to {path}, outside the code package {root}")
    if not path.is_file():
        raise PackageError(f"code package entry '{entry}' is not a file of the code package in {root}")
    return path


def check_package(data: bytes, entry: str, max_bytes: int = 256 << 20, max_files: int = 20000) -> None:
    """Check a code package as :func:`unpack` would, writing nothing: every member safe, the
    limits kept, and ``entry`` (see :func:`check_entry`) one of its regular files. Raises
    :class:`PackageError` naming the fault. Reads (decompresses) the whole archive."""
    wanted = check_entry(entry)
    found = False
    for member, parts, _ in _members(data, max_bytes, max_files):
        found = found or (member.isreg() and parts == wanted)
    if not found:
        raise PackageError(f"code package entry '{entry}' is not a file in the code package")


def _members(data: bytes, max_bytes: int, max_files: int):
    """(member, its path components, the open archive) of each member, checked by
    :func:`_safe_parts` and against the limits before it is yielded; one streaming pass."""
    total = count = 0
    limit = max_bytes + _PER_MEMBER_OVERHEAD * (max_files + 2)
    try:
        stream = _Limited(gzip.GzipFile(fileobj=io.BytesIO(data), mode="rb"), limit)
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:  # one pass: a bomb is stopped at its first member over a limit
                count += 1
                if count > max_files:
                    raise PackageError(f"code package has too many members: '{member.name}' is past "
                                       f"the limit of {max_files}")
                parts = _safe_parts(member)
                total += member.size if member.isreg() else 0
                if total > max_bytes:
                    raise PackageError(f"code package member '{member.name}' takes the unpacked size "
                                       f"over the limit of {max_bytes} bytes")
                yield member, parts, tar
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise PackageError(f"code package is not a valid tar.gz archive: {e}") from None


def _extract(data: bytes, root: Path, max_bytes: int, max_files: int) -> None:
    """Write the members into the empty directory ``root``, checking each first."""
    try:
        for member, parts, tar in _members(data, max_bytes, max_files):
            if not parts:
                continue  # the archive's own root, "."
            target = root.joinpath(*parts)
            try:
                if member.isdir():
                    target.mkdir(mode=0o755, parents=True, exist_ok=True)
                    if not target.is_dir():
                        raise FileExistsError(target)
                else:
                    target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                    _write_file(tar, member, target)
            except (FileExistsError, NotADirectoryError) as e:
                raise PackageError(f"code package member '{member.name}' clashes with an earlier "
                                   f"member ({e.__class__.__name__})") from None
            except OSError as e:
                if e.errno not in (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL):
                    raise  # the node's fault (disk full, permissions), not the package's
                raise PackageError(f"code package member '{member.name[:80]}' cannot be written on this "
                                   f"node: {e.strerror}") from None
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:  # reading a member's data
        raise PackageError(f"code package is not a valid tar.gz archive: {e}") from None


def _safe_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    """The member's name as path components, or PackageError if it is not a plain file or directory."""
    name = member.name
    if member.issym():
        raise PackageError(f"code package member '{name}' is a symbolic link (to '{member.linkname}')")
    if member.islnk():
        raise PackageError(f"code package member '{name}' is a hard link (to '{member.linkname}')")
    if member.ischr() or member.isblk():
        raise PackageError(f"code package member '{name}' is a device")
    if member.isfifo():
        raise PackageError(f"code package member '{name}' is a FIFO")
    if not (member.isreg() or member.isdir()):
        raise PackageError(f"code package member '{name}' is not a regular file or directory")
    if not name or "\x00" in name or "\\" in name:
        raise PackageError(f"code package member {name!r} has an invalid name (empty, NUL or backslash)")
    if name.startswith("/"):
        raise PackageError(f"code package member '{name}' has an absolute name")
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise PackageError(f"code package member '{name}' has a '..' component")
    longest = max((len(p.encode("utf-8", "surrogateescape")) for p in parts), default=0)
    if longest > MAX_NAME_PART or len(name.encode("utf-8", "surrogateescape")) > MAX_NAME:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise PackageError(f"code package member '{shown}' has a name longer than a file system holds "
                           f"({MAX_NAME_PART} bytes a component, {MAX_NAME} in all)")
    return parts


def _write_file(tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
    source = tar.extractfile(member)
    assert source is not None  # regular files always have data
    mode = 0o755 if member.mode & stat.S_IXUSR else 0o644
    # O_EXCL|O_NOFOLLOW: never overwrite an earlier member, never write through a link.
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as out, source:
        remaining = member.size
        while remaining > 0:
            chunk = source.read(min(_CHUNK, remaining))
            if not chunk:
                raise PackageError(f"code package member '{member.name}' is truncated")
            out.write(chunk)
            remaining -= len(chunk)

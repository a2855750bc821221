"""Code packages: the deterministic tar.gz of a topology's directory.

``submit`` packs a directory with :func:`pack_directory`; nimbus stores the
bytes under their :func:`digest`; every supervisor checks the digest and
unpacks with :func:`unpack`, which trusts nothing in the archive: only regular
files and directories, no absolute names, no ``..``, no links or devices, and
limits on the total size and the number of members. Files are written by this
module (never ``tarfile.extractall``) into a fresh directory that no link
can redirect, then renamed into place, so a half-unpacked package is never
seen.
"""

from __future__ import annotations

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

MARKER = ".digest"  # in an unpacked package: the digest it was unpacked from
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
    are left out. Symbolic links (to files or directories) are skipped, not
    followed, as are sockets, FIFOs and devices. Raises :class:`PackageError`
    if the archive would exceed ``max_bytes``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PackageError(f"cannot package {directory}: not a directory")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for path, rel in _walk(directory):
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
                        f"move data files out of the topology directory")


def _walk(directory: Path, prefix: PurePosixPath = PurePosixPath()):
    """(path, posix name relative to the packed root) of every entry to pack, sorted, depth first."""
    with os.scandir(directory) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        name = str(prefix / entry.name)
        if entry.is_symlink():
            continue
        if entry.is_dir(follow_symlinks=False):
            if entry.name in SKIP_DIRS:
                continue
            yield Path(entry.path), name
            yield from _walk(Path(entry.path), prefix / entry.name)
        elif entry.is_file(follow_symlinks=False) and not entry.name.endswith(SKIP_SUFFIXES):
            yield Path(entry.path), name


# -- unpacking ----------------------------------------------------------------------------------

def unpack(data: bytes, dest: Path, expected_digest: str, max_bytes: int = 256 << 20,
           max_files: int = 20000) -> None:
    """Check and unpack a code package into ``dest``, atomically.

    The sha256 of ``data`` must equal ``expected_digest``. Every member must
    be a regular file or directory with a relative name and no ``..``; the
    members' total size may not exceed ``max_bytes`` nor their number
    ``max_files``. Anything else raises :class:`PackageError` naming the
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
    if _unpacked_digest(dest) == expected_digest:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.unpacking-", dir=dest.parent))
    try:
        _extract(data, tmp, max_bytes, max_files)
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


def _extract(data: bytes, root: Path, max_bytes: int, max_files: int) -> None:
    """Write the members into the empty directory ``root``, checking each first."""
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
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as e:
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

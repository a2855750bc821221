"""File connectors: a directory source that commits byte offsets, and a rotating file sink.

:class:`DirectorySource` watches a directory for files matching a glob pattern and emits
their complete lines, new files and growing files alike. A line's message id is a
:class:`LineId` (file name, byte offset of the line, generation of the file). Offsets are
committed on ack only, to an offsets file per task, so a restarted task resumes where
its acked lines end: no acked line is read again and no line is lost.

:class:`RotatingFileSink` appends each batch as lines to ``<dir>/<prefix>-<task>-<n>.<ext>``
and rotates to ``n + 1`` before a file would exceed ``files.sink.max_bytes``; a batch is
flushed and fsync'ed before its tuples are acked.

Both are configured with config keys (the topology's config, or the component's own
``config=``, which takes precedence); see docs/connectors.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, NamedTuple

from streamgale.components import TopologyContext
from streamgale.config import ConfigError
from streamgale.tuples import Tuple

from .sink import SinkBolt
from .source import Message, SourceSpout

log = logging.getLogger("streamgale.connectors.files")

FORMATS = ("text", "json")
OFFSETS_VERSION = 1


class LineId(NamedTuple):
    """A line's message id: the file's name (relative to the watched directory), the byte
    offset where the line starts, and the file's generation (0, then + 1 each time the
    file was found truncated or replaced and read again from the start)."""

    file: str
    offset: int
    generation: int = 0


# -- settings -------------------------------------------------------------------------------------


def _setting(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    return config.get(key, default)


def _require_str(config: Mapping[str, Any], key: str, default: str | None = None) -> str:
    value = _setting(config, key, default)
    if value is None:
        raise ConfigError(f"config key '{key}' is required (a non-empty string)")
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ConfigError(f"config key '{key}' must be a non-empty string, got {value!r}")
    return str(value)


def _choice(config: Mapping[str, Any], key: str, default: str) -> str:
    value = _setting(config, key, default)
    if not isinstance(value, str) or value.lower() not in FORMATS:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(FORMATS)}, got {value!r}")
    return value.lower()


def _number(config: Mapping[str, Any], key: str, default: float, integer: bool = False,
            minimum: float = 0.0) -> Any:
    value = _setting(config, key, default)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value < minimum:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"config key '{key}' must be {kind} >= {minimum:g}, got {value!r}")
    return value


@dataclass(frozen=True)
class SourceSettings:
    """The validated settings of a :class:`DirectorySource` (from its config)."""

    dir: Path
    pattern: str
    format: str
    offsets_dir: Path
    poll_interval: float
    read_chunk: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SourceSettings:
        directory = Path(os.path.expanduser(_require_str(config, "files.dir")))
        pattern = _require_str(config, "files.pattern", "*")
        if os.path.isabs(pattern) or ".." in Path(pattern).parts:
            raise ConfigError(f"config key 'files.pattern' must be a glob relative to files.dir, got {pattern!r}")
        offsets = _setting(config, "files.offsets_dir")
        offsets_dir = (directory / ".streamgale-offsets" if offsets is None
                       else Path(os.path.expanduser(_require_str(config, "files.offsets_dir"))))
        return cls(directory, pattern, _choice(config, "files.format", "text"), offsets_dir,
                   float(_number(config, "files.poll_interval", 0.1)),
                   int(_number(config, "files.read_chunk", 1 << 20, integer=True, minimum=1)))


# -- the source -----------------------------------------------------------------------------------


@dataclass
class _File:
    """What a task knows about one file it owns."""

    name: str
    path: Path
    inode: int = 0
    generation: int = 0
    committed: int = 0  # end of the longest prefix of done lines (the offset a restart resumes at)
    read_pos: int = 0  # next byte to read from disk
    size: int = 0  # at the last stat
    present: bool = True
    done: dict[int, int] = field(default_factory=dict)  # start -> end: acked/dead lines past `committed`
    in_flight: dict[int, int] = field(default_factory=dict)  # start -> end: handed out, not done
    buffer: deque[tuple[int, int, bytes]] = field(default_factory=deque)  # read, not handed out yet

    def reset(self, inode: int) -> None:
        self.inode = inode
        self.generation += 1
        self.committed = self.read_pos = 0
        self.done.clear()
        self.in_flight.clear()
        self.buffer.clear()

    def mark_done(self, start: int, end: int) -> bool:
        """Record a finished line; True if the committed watermark moved."""
        self.done[start] = end
        moved = False
        while self.committed in self.done:
            self.committed = self.done.pop(self.committed)
            moved = True
        return moved


class DirectorySource(SourceSpout):
    """Emits the complete lines of the files matching ``files.pattern`` in ``files.dir``.

    Settings (config keys; a component's ``config=`` overrides the topology's):

    - ``files.dir`` (required): the watched directory;
    - ``files.pattern`` (default ``*``): a glob relative to it (``*.jsonl``, ``logs/*.txt``);
    - ``files.format``: ``text`` (the line, without its newline, as the single declared
      field, ``line`` by default) or ``json`` (one JSON object a line: each declared field
      is the object's value for that key, None if absent; a line that is not a JSON object
      is dead-lettered; blank lines are skipped);
    - ``files.offsets_dir`` (default ``<files.dir>/.streamgale-offsets``): where each task
      commits its offsets, ``<topology>-<component>-<task index>.json``, and dead-letters
      lines, ``<topology>-<component>-<task index>.dead.jsonl``;
    - ``files.poll_interval`` (default 0.1 s): how often the directory is listed and files
      are checked for growth;
    - ``files.read_chunk`` (default 1 MiB): bytes read from a file at a time.

    Declare other fields (JSON) by subclassing with ``outputs = [...]``. Files are split
    across the component's tasks by a stable hash of their name (:func:`file_owner`). A file that
    shrank below what was read, or whose inode changed (replaced), is read again from
    the start as a new generation (logged); lines of the old generation still in flight
    are then ignored when acked.
    """

    outputs = ["line"]

    # -- settings and state -----------------------------------------------------------------------

    def open(self, context: TopologyContext) -> None:
        self.settings = SourceSettings.from_config(context.config)
        fields = self._fields_of(context)
        if self.settings.format == "text" and len(fields) != 1:
            raise ConfigError(f"files.format 'text' emits one field, but component '{context.component}' "
                              f"declares {list(fields)} on stream '{self.stream}'")
        self.fields = fields
        self._task_index, self._task_count = context.task_index, context.task_count
        stem = f"{context.topology}-{context.component}-"
        self._offsets_glob = f"{stem}*.json"
        self.offsets_path = self.settings.offsets_dir / f"{stem}{context.task_index}.json"
        self.dead_letter_path = self.settings.offsets_dir / f"{stem}{context.task_index}.dead.jsonl"
        self._files: dict[str, _File] = {}
        self._owners: dict[str, int] = {}
        self._loaded = False
        self._dirty = False
        self._next_scan = 0.0
        self._cursor = 0
        try:
            inside = self.settings.offsets_dir.resolve().relative_to(self.settings.dir.resolve())
            self._skip_prefix = inside.as_posix() + "/"
        except ValueError:
            self._skip_prefix = ""
        self._dead_log: IO[str] | None = None
        self.commit_writes = 0
        super().open(context)

    def _fields_of(self, context: TopologyContext) -> tuple[str, ...]:
        fields = context.outputs.get(self.stream)
        if fields is None:
            raise ConfigError(f"component '{context.component}' declares no stream '{self.stream}' to emit on")
        return tuple(fields)

    def owns(self, name: str) -> bool:
        """Whether this task reads file ``name`` (stable across processes and restarts)."""
        owner = self._owners.get(name)
        if owner is None:
            owner = self._owners[name] = file_owner(name, self._task_count)
        return owner == self._task_index

    # -- the broker side --------------------------------------------------------------------------

    def connect(self) -> None:
        if not self.settings.dir.is_dir():
            raise FileNotFoundError(f"files.dir {str(self.settings.dir)!r} is not a directory")
        self.settings.offsets_dir.mkdir(parents=True, exist_ok=True)
        if not self._loaded:
            self._load_offsets()
            self._loaded = True
        self._next_scan = 0.0

    def _load_offsets(self) -> None:
        """Every task's offsets file of this component (a file may have changed owner when the
        task count changed): for each file this task owns, the furthest commit recorded for
        its current inode."""
        best: dict[str, tuple[int, int, int]] = {}  # name -> (generation, offset, inode)
        for path in sorted(self.settings.offsets_dir.glob(self._offsets_glob)):
            if not re.fullmatch(r".*-\d+\.json", path.name):
                continue
            try:
                data = json.loads(path.read_text())
                entries = data["files"]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("%s: offsets file %s is unreadable (%s); ignored", self._name, path, exc)
                continue
            for name, entry in entries.items():
                if not self.owns(name):
                    continue
                key = (int(entry.get("generation", 0)), int(entry["offset"]), int(entry.get("inode", 0)))
                if name not in best or key[:2] > best[name][:2]:
                    best[name] = key
        for name, (generation, offset, inode) in best.items():
            f = _File(name, self.settings.dir / name, inode=inode, generation=generation, committed=offset,
                      read_pos=offset, present=False)
            self._files[name] = f

    def fetch(self, limit: int) -> Sequence[Message]:
        now = self.clock()
        if now >= self._next_scan:
            self._scan()
            self._next_scan = now + self.settings.poll_interval
        out: list[Message] = []
        files = list(self._files.values())
        if len(files) > 1:  # a different file first each time: no file starves the others
            self._cursor = (self._cursor + 1) % len(files)
            files = files[self._cursor:] + files[:self._cursor]
        for f in files:
            if len(out) >= limit:
                break
            if not f.present:
                continue
            if not f.buffer and f.read_pos < f.size:
                self._read(f)
            while f.buffer and len(out) < limit:
                start, end, raw = f.buffer.popleft()
                values = self._decode(f, start, end, raw)
                if values is None:
                    continue
                f.in_flight[start] = end
                out.append(Message(LineId(f.name, start, f.generation), values))
        if self._dirty:
            self._save()
        return out

    def _scan(self) -> None:
        """List the directory for new files, and stat the owned ones for growth, shrinking, replacing."""
        directory, skip = self.settings.dir, self._skip_prefix
        seen: set[str] = set()
        for path in directory.glob(self.settings.pattern):
            name = path.relative_to(directory).as_posix()
            if name in seen or (skip and name.startswith(skip)) or not self.owns(name):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            if not path.is_file():
                continue
            seen.add(name)
            f = self._files.get(name)
            if f is None:
                f = self._files[name] = _File(name, path, inode=st.st_ino)
                log.info("%s: reading new file %s", self._name, name)
            elif not f.present and f.inode == 0:
                f.inode = st.st_ino  # an offsets file written without inode: trust it
            if f.inode != st.st_ino:
                log.warning("%s: %s was replaced (inode %d -> %d); reading it again from the start",
                            self._name, name, f.inode, st.st_ino)
                f.reset(st.st_ino)
                self._dirty = True
            elif st.st_size < f.read_pos:
                log.warning("%s: %s shrank to %d bytes, below the %d already read; reading it again "
                            "from the start", self._name, name, st.st_size, f.read_pos)
                f.reset(st.st_ino)
                self._dirty = True
            f.present = True
            f.size = st.st_size
        for name, f in self._files.items():
            if f.present and name not in seen:
                log.info("%s: %s is gone (its committed offset is kept)", self._name, name)
                f.present = False
                f.buffer.clear()

    def _read(self, f: _File) -> None:
        """Read complete lines from ``f.read_pos`` into the file's buffer. Reading stops (until
        the next scan sees the file grow) at the end of the file or at a partial last line."""
        want = self.settings.read_chunk
        try:
            fd = os.open(f.path, os.O_RDONLY)
        except FileNotFoundError:
            f.present = False
            return
        try:
            if os.fstat(fd).st_ino != f.inode:
                f.size = f.read_pos  # replaced since the last scan: the next scan handles it
                self._next_scan = 0.0
                return
            data = os.pread(fd, want, f.read_pos)
            if b"\n" not in data and len(data) == want:  # a line longer than a chunk
                want = max(os.fstat(fd).st_size - f.read_pos, want) + 1
                data = os.pread(fd, want, f.read_pos)
        finally:
            os.close(fd)
        last = data.rfind(b"\n")
        if last >= 0:
            pos = f.read_pos
            buffer = f.buffer
            for raw in data[:last].split(b"\n"):
                end = pos + len(raw) + 1
                buffer.append((pos, end, raw))
                pos = end
            f.read_pos = pos
        if len(data) < want:  # the end of the file as it is now
            f.size = f.read_pos

    def _decode(self, f: _File, start: int, end: int, raw: bytes) -> list[Any] | None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if self.settings.format == "text":
            return [raw.decode("utf-8", errors="replace")]
        if not raw.strip():
            self._dirty |= f.mark_done(start, end)  # a blank line: nothing to emit
            return None
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            reason = f"malformed JSON: {exc}"
        else:
            if isinstance(obj, dict):
                return [obj.get(name) for name in self.fields]
            reason = f"not a JSON object but {type(obj).__name__}"
        self.stats["dead_lettered"] += 1
        self._write_dead_letter(LineId(f.name, start, f.generation), raw, reason)
        self._dirty |= f.mark_done(start, end)
        return None

    def commit(self, ids: list[Hashable]) -> None:
        for msg_id in ids:
            if not isinstance(msg_id, LineId):
                continue
            f = self._files.get(msg_id.file)
            if f is None or f.generation != msg_id.generation:
                continue  # a line of a file since replaced or truncated
            end = f.in_flight.pop(msg_id.offset, None)
            if end is not None:
                self._dirty |= f.mark_done(msg_id.offset, end)
        if self._dirty:
            self._save()

    def dead_letter(self, message: Message, reason: str) -> None:
        """After ``max_retries`` failed attempts: recorded in the dead-letter file, then committed."""
        log.error("%s: line %r failed %d times (%s); dead-lettered to %s", self._name, message.id,
                  message.attempts, reason, self.dead_letter_path)
        self._write_dead_letter(message.id, None, reason, message.values)
        self.commit([message.id])

    def _write_dead_letter(self, msg_id: Any, raw: bytes | None, reason: str, values: Any = None) -> None:
        if raw is not None:
            log.error("%s: %s at byte %d: %s; dead-lettered to %s", self._name, msg_id[0], msg_id[1], reason,
                      self.dead_letter_path)
        if self._dead_log is None:
            self._dead_log = open(self.dead_letter_path, "a", encoding="utf-8")
        record: dict[str, Any] = {"file": msg_id[0], "offset": msg_id[1], "reason": reason}
        if raw is not None:
            record["line"] = raw.decode("utf-8", errors="replace")
        else:
            record["values"] = values
        self._dead_log.write(json.dumps(record, default=repr) + "\n")
        self._dead_log.flush()

    def _save(self) -> None:
        """Write the committed offsets atomically (temp file, fsync, os.replace)."""
        data = {"version": OFFSETS_VERSION,
                "files": {f.name: {"offset": f.committed, "inode": f.inode, "generation": f.generation}
                          for f in self._files.values()}}
        tmp = self.offsets_path.with_name(self.offsets_path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(data, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.offsets_path)
        self._dirty = False
        self.commit_writes += 1

    def lag(self) -> int | None:
        """Bytes not yet emitted in the files this task owns (at their current sizes)."""
        total = 0
        for f in self._files.values():
            if not f.present:
                continue
            try:
                size = f.path.stat().st_size
            except OSError:
                continue
            emitted = f.buffer[0][0] if f.buffer else f.read_pos
            total += max(size - emitted, 0)
        return total

    def committed_offsets(self) -> dict[str, int]:
        """File name -> committed offset, as this task holds them now."""
        return {name: f.committed for name, f in self._files.items()}

    def disconnect(self) -> None:
        if self._dead_log is not None:
            self._dead_log.close()
            self._dead_log = None


def file_owner(name: str, task_count: int) -> int:
    """The task index (of ``task_count``) that reads file ``name``: a stable hash (BLAKE2b) of the
    name, the same in every process and run."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big") % task_count


def read_offsets(offsets_dir: str | os.PathLike[str], topology: str, component: str) -> dict[str, int]:
    """The committed offsets of every task of ``component``: file name -> offset (the furthest
    recorded, as a restarted task would take it)."""
    best: dict[str, tuple[int, int]] = {}
    for path in Path(offsets_dir).glob(f"{topology}-{component}-*.json"):
        if not re.fullmatch(r".*-\d+\.json", path.name):
            continue
        for name, entry in json.loads(path.read_text())["files"].items():
            key = (int(entry.get("generation", 0)), int(entry["offset"]))
            best[name] = max(best.get(name, key), key)
    return {name: offset for name, (_, offset) in best.items()}


# -- the sink -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkSettings:
    dir: Path
    prefix: str | None
    format: str
    max_bytes: int
    extension: str | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SinkSettings:
        prefix = _setting(config, "files.sink.prefix")
        extension = _setting(config, "files.sink.extension")
        for key, value in (("files.sink.prefix", prefix), ("files.sink.extension", extension)):
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[\w.]+", value)):
                raise ConfigError(f"config key '{key}' must be a file-name part (letters, digits, _ and .), "
                                  f"got {value!r}")
        return cls(Path(os.path.expanduser(_require_str(config, "files.sink.dir"))), prefix,
                   _choice(config, "files.sink.format", "text"),
                   int(_number(config, "files.sink.max_bytes", 64 << 20, integer=True, minimum=1)), extension)


class RotatingFileSink(SinkBolt):
    """Appends each batch as lines to ``<files.sink.dir>/<prefix>-<task>-<n>.<ext>``.

    Settings (config keys): ``files.sink.dir`` (required), ``files.sink.prefix`` (default:
    the component's name), ``files.sink.format`` (``text``: the tuple's values, tab-separated;
    ``json``: an object of its fields), ``files.sink.max_bytes`` (default 64 MiB: a line that
    would take a file past it goes to the next file, ``n + 1``; a single longer line gets a
    file of its own), ``files.sink.extension`` (default ``txt`` / ``jsonl``). A batch is
    written, flushed and fsync'ed before its tuples are acked; a restarted task appends to its
    newest file. At-least-once: a batch whose write failed is replayed, and may then appear twice.
    """

    def prepare(self, context: TopologyContext) -> None:
        super().prepare(context)
        self.settings = SinkSettings.from_config(context.config)
        ext = self.settings.extension or ("jsonl" if self.settings.format == "json" else "txt")
        self._stem = f"{self.settings.prefix or context.component}-{context.task_id}-"
        self._ext = ext
        self._out: IO[bytes] | None = None
        self._index = 0
        self._size = 0
        self.rotations = 0

    def path(self, n: int) -> Path:
        return self.settings.dir / f"{self._stem}{n}.{self._ext}"

    def files(self) -> list[Path]:
        """This task's files, oldest first."""
        pattern = re.compile(re.escape(self._stem) + r"(\d+)\." + re.escape(self._ext))
        found = [(int(m.group(1)), p) for p in self.settings.dir.glob(f"{self._stem}*.{self._ext}")
                 if (m := pattern.fullmatch(p.name))]
        return [p for _, p in sorted(found)]

    def connect(self) -> None:
        self.settings.dir.mkdir(parents=True, exist_ok=True)
        existing = self.files()
        self._index = int(existing[-1].name[len(self._stem):].split(".")[0]) if existing else 0
        path = self.path(self._index)
        if path.exists() and (path.stat().st_size >= self.settings.max_bytes or not _ends_with_newline(path)):
            self._index += 1  # full, or cut short by a crash: a new file
        self._open(self._index)

    def _open(self, n: int) -> None:
        path = self.path(n)
        created = not path.exists()
        self._out = open(path, "ab")
        self._size = self._out.tell()
        if created:
            _fsync_dir(self.settings.dir)

    def encode(self, tup: Tuple) -> bytes:
        if self.settings.format == "json":
            return json.dumps(tup.as_dict(), default=str, ensure_ascii=False).encode() + b"\n"
        text = "\t".join(str(v) for v in tup.values)
        return text.replace("\n", "\\n").encode() + b"\n"

    def write(self, tuples: list[Tuple]) -> None:
        out = self._out
        assert out is not None
        limit = self.settings.max_bytes
        pending: list[bytes] = []
        size = self._size
        for tup in tuples:
            line = self.encode(tup)
            if size and size + len(line) > limit:
                if pending:
                    out.write(b"".join(pending))
                    pending = []
                self._rotate()
                out = self._out
                assert out is not None
                size = 0
            pending.append(line)
            size += len(line)
        if pending:
            out.write(b"".join(pending))
        out.flush()
        os.fsync(out.fileno())
        self._size = size

    def _rotate(self) -> None:
        out = self._out
        assert out is not None
        out.flush()
        os.fsync(out.fileno())
        out.close()
        self._index += 1
        self.rotations += 1
        self._open(self._index)

    def disconnect(self) -> None:
        if self._out is not None:
            try:
                self._out.close()
            finally:
                self._out = None

    def counters(self) -> dict[str, Any]:
        return {**super().counters(), "rotations": self.rotations, "file_index": self._index}


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return True
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

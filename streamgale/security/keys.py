"""Key files: the cluster's key pair, each principal's key pair, and the authorized public keys.

A keys directory (``security.keys_dir``) holds ZeroMQ CURVE certificates in
ZeroMQ's own text format (:mod:`zmq.auth`):

- ``cluster.key`` / ``cluster.key_secret``: the key every daemon's listening
  socket proves; clients check it. The secret half lives only on daemon nodes.
- ``NAME.key`` / ``NAME.key_secret``: the key pair a principal (a user, or a
  daemon node) authenticates with; ``security.identity`` names it.
- ``authorized/NAME.key``: the public keys daemons accept, each with its role
  in the certificate's metadata. Daemons rescan this folder (at most once a
  second), so :meth:`KeyStore.authorize`, :meth:`~KeyStore.revoke` and
  :meth:`~KeyStore.rotate` take effect without a restart.

Secret files are written mode 0600 and refused when group or others may read them.
"""

from __future__ import annotations

import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

from .access import ROLES, Principal

CLUSTER = "cluster"
AUTHORIZED = "authorized"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_FIELD = re.compile(r'^\s*([a-z-]+)\s*=\s*"([^"]*)"\s*$')


class KeyFileError(ValueError):
    """A key is missing, malformed or unsafe; the text says which file and what to do."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name == CLUSTER:
        raise KeyFileError(f"key name {name!r} must be 1-64 letters, digits, '_', '.', '@' or '-', starting with a "
                        f"letter or digit, and not {CLUSTER!r}")
    return name


def fingerprint(public_key: bytes) -> str:
    """The first 12 characters of a z85 public key: enough to tell keys apart in lists and logs."""
    return public_key.decode("ascii")[:12]


@dataclass(frozen=True)
class KeyPair:
    name: str
    public: bytes  # z85, 40 bytes
    secret: bytes | None  # z85; None for a public certificate


def _fields(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"cannot read key file {path}: {e}") from None
    return {m.group(1): m.group(2) for m in map(_FIELD.match, text.splitlines()) if m}


def _valid_key(value: str | None, path: Path, what: str) -> bytes:
    if value is None or len(value) != 40:
        raise KeyFileError(f"key file {path} has no valid {what} (40 z85 characters)")
    try:
        zmq.utils.z85.decode(value)
    except ValueError:
        raise KeyFileError(f"key file {path} has a malformed {what}") from None
    return value.encode("ascii")


def read_public(path: Path) -> tuple[bytes, str | None]:
    """``(public key, role or None)`` of a certificate file."""
    fields = _fields(path)
    return _valid_key(fields.get("public-key"), path, "public-key"), fields.get("role")


def read_pair(path: Path) -> KeyPair:
    """A ``.key_secret`` file; refused if it is readable by group or others."""
    try:
        mode = path.stat().st_mode
    except OSError as e:
        raise KeyFileError(f"no key file {path} ({e.strerror}); create it with `streamgale keys create`") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(f"key file {path} is readable by others (mode {stat.S_IMODE(mode):o}); "
                        f"run `chmod 600 {path}`")
    fields = _fields(path)
    name = path.name[: -len(".key_secret")]
    return KeyPair(name, _valid_key(fields.get("public-key"), path, "public-key"),
                   _valid_key(fields.get("secret-key"), path, "secret-key"))


def _write_cert(path: Path, public: bytes, secret: bytes | None, role: str | None) -> None:
    lines = ["#   ****  StreamGale CURVE certificate (ZeroMQ format)  ****",
             "#   " + ("Secret: never copy off the node it belongs to." if secret else "Public: safe to share."),
             "", "metadata"]
    if role:
        lines.append(f'    role = "{role}"')
    lines += ["curve", f'    public-key = "{public.decode()}"']
    if secret:
        lines.append(f'    secret-key = "{secret.decode()}"')
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)  # atomic: a daemon rescanning never reads half a file


class KeyStore:
    """One keys directory. Every method names the files it touched or missed in its errors."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(os.path.expanduser(directory))

    @property
    def authorized_dir(self) -> Path:
        return self.dir / AUTHORIZED

    def _mkdirs(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.authorized_dir.mkdir(mode=0o755, exist_ok=True)

    # -- the cluster key ------------------------------------------------------------------------

    def init(self) -> list[Path]:
        """Create the cluster key pair if there is none; returns the files written."""
        self._mkdirs()
        if (self.dir / f"{CLUSTER}.key_secret").exists():
            return []
        public, secret = zmq.curve_keypair()
        _write_cert(self.dir / f"{CLUSTER}.key_secret", public, secret, None)
        _write_cert(self.dir / f"{CLUSTER}.key", public, None, None)
        return [self.dir / f"{CLUSTER}.key", self.dir / f"{CLUSTER}.key_secret"]

    def cluster_public(self) -> bytes:
        path = self.dir / f"{CLUSTER}.key"
        if not path.exists():
            raise KeyFileError(f"no cluster public key at {path}: copy cluster.key from a daemon node's keys "
                            f"directory (created by `streamgale keys init`)")
        return read_public(path)[0]

    def cluster_pair(self) -> KeyPair:
        path = self.dir / f"{CLUSTER}.key_secret"
        if not path.exists():
            raise KeyFileError(f"no cluster secret key at {path}: daemons need it to listen with security on "
                            f"(`streamgale keys init` on the first node, then copy the keys directory)")
        return read_pair(path)

    # -- principals ---------------------------------------------------------------------------

    def create(self, name: str, role: str | None = None) -> KeyPair:
        """A new key pair ``name`` (refused if one exists); with ``role``, also authorized here."""
        check_name(name)
        self._mkdirs()
        if (self.dir / f"{name}.key_secret").exists():
            raise KeyFileError(f"a key named {name!r} exists in {self.dir}; use `streamgale keys rotate {name}`")
        pair = self._new_pair(name)
        if role is not None:
            self.authorize(name, role, pair.public)
        return pair

    def _new_pair(self, name: str) -> KeyPair:
        public, secret = zmq.curve_keypair()
        _write_cert(self.dir / f"{name}.key_secret", public, secret, None)
        _write_cert(self.dir / f"{name}.key", public, None, None)
        return KeyPair(name, public, secret)

    def pair(self, name: str) -> KeyPair:
        return read_pair(self.dir / f"{check_name(name)}.key_secret")

    def authorize(self, name: str, role: str, public: bytes | None = None) -> Path:
        """Let ``name`` connect with ``role``; ``public`` defaults to ``NAME.key`` in this directory."""
        check_name(name)
        if role not in ROLES:
            raise KeyFileError(f"role {role!r} is not one of {', '.join(ROLES)}")
        if public is None:
            source = self.dir / f"{name}.key"
            if not source.exists():
                raise KeyFileError(f"no public key {source}: copy the user's {name}.key there, or pass --public-key")
            public = read_public(source)[0]
        self._mkdirs()
        path = self.authorized_dir / f"{name}.key"
        _write_cert(path, public, None, role)
        return path

    def revoke(self, name: str) -> None:
        path = self.authorized_dir / f"{check_name(name)}.key"
        try:
            path.unlink()
        except FileNotFoundError:
            raise KeyFileError(f"{name!r} is not authorized here (no {path})") from None

    def rotate(self, name: str) -> KeyPair:
        """A new key pair for ``name``; where it was authorized, the new public key replaces the old one
        (the old key is refused from the next rescan on)."""
        check_name(name)
        if not (self.dir / f"{name}.key_secret").exists():
            raise KeyFileError(f"no key named {name!r} in {self.dir}; create it with `streamgale keys create {name}`")
        pair = self._new_pair(name)
        authorized = self.authorized_dir / f"{name}.key"
        if authorized.exists():
            role = read_public(authorized)[1]
            if role in ROLES:
                self.authorize(name, role, pair.public)
        return pair

    def authorized(self) -> dict[bytes, Principal]:
        """Public key -> principal, for every well-formed file in ``authorized/`` (others skipped)."""
        out: dict[bytes, Principal] = {}
        try:
            paths = sorted(self.authorized_dir.glob("*.key"))
        except OSError:
            return out
        for path in paths:
            try:
                public, role = read_public(path)
            except KeyFileError:
                continue
            if role in ROLES:
                out[public] = Principal(path.name[: -len(".key")], role)
        return out


class AuthorizedKeys:
    """The ZAP callback's view of ``authorized/``: rescanned when the folder changes, at most once per
    ``interval`` seconds (thread-safe enough: the map is replaced whole)."""

    def __init__(self, store: KeyStore, interval: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.interval = interval
        self.clock = clock
        self._checked = -float("inf")
        self._signature: tuple[tuple[str, int, int], ...] | None = None
        self._keys: dict[bytes, Principal] = {}

    def _scan_signature(self) -> tuple[tuple[str, int, int], ...]:
        try:
            entries = list(os.scandir(self.store.authorized_dir))
        except OSError:
            return ()
        out = []
        for e in entries:
            try:
                st = e.stat()
            except OSError:
                continue
            out.append((e.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def _refresh(self) -> dict[bytes, Principal]:
        now = self.clock()
        if now - self._checked >= self.interval:
            self._checked = now
            signature = self._scan_signature()
            if signature != self._signature:
                self._signature = signature
                self._keys = self.store.authorized()
        return self._keys

    def lookup(self, public: bytes) -> Principal | None:
        return self._refresh().get(public)

    def by_name(self, name: str) -> Principal | None:
        for principal in self._refresh().values():
            if principal.name == name:
                return principal
        return None

"""Who may use the UI: the Host and Origin checks, the action token and the security headers (pure).

What each defence is for:

- **Host** (every request). A page on ``evil.example`` can re-point its own DNS name at
  127.0.0.1 (DNS rebinding) and then read and drive the UI as "same origin". Its requests
  still carry ``Host: evil.example``, so the UI answers only to the names it is meant to
  have: the address it listens on, localhost, 127.0.0.1, ::1 and ``ui.allowed_hosts``.
- **The token** (actions). With ``ui.token_file`` set, every POST needs
  ``Authorization: Bearer <token>``; reads stay open. The token travels in a header the
  page's script sets (kept in ``sessionStorage``), never in a cookie, so a browser never
  adds it by itself: a cross-site form or script cannot send it, which is the CSRF
  protection. Without a token file the UI may only listen on loopback
  (:func:`check_listening`).
- **Content-Type and Origin** (actions, with or without a token). A POST must say
  ``Content-Type: application/json``; a cross-site page can send that only after a CORS
  preflight, which this server never grants, and a plain HTML form cannot send it at
  all. A POST whose ``Origin`` is present and not an allowed host is refused as well.
- **Headers** (every response, :data:`SECURITY_HEADERS`): no framing (clickjacking), no
  MIME sniffing, no Referer, and a Content-Security-Policy that lets the page load only
  its own files.

Nothing here logs or returns the token. Called from the request threads of
:mod:`streamgale.ui.server`; an :class:`Access` is immutable, so it needs no lock.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from .api import ApiError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")  # listening addresses no Host header names
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
HOW_TO_AUTHENTICATE = ("send the header 'Authorization: Bearer <token>' with the token from the file that "
                       "ui.token_file names (on the web page: the token field at the top right)")
MAKE_TOKEN = "(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > {file})"


class UiConfigError(ValueError):
    """The UI cannot start as configured; the message says what to change."""


class Headers(Protocol):
    def get(self, name: str, /) -> str | None: ...


def is_loopback(address: str) -> bool:
    """Whether ``address`` (a listening address or host name) is this machine's loopback."""
    address = address.strip("[]").lower()
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def _normal(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def host_name(value: str | None) -> str | None:
    """The host of a Host header, lower case (``UI.example:8080`` -> ``ui.example``, ``[::1]:80`` ->
    ``::1``); None when missing or malformed."""
    if not value:
        return None
    value = value.strip()
    if value.startswith("["):
        host, bracket, rest = value[1:].partition("]")
        if not bracket:
            return None
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _, port = value.partition(":")
    if port and not (port.isascii() and port.isdigit()):
        return None
    host = _normal(host)
    if not host or any(c.isspace() or c in "/\\@?#[]" for c in host):
        return None
    return host


def origin_host(value: str) -> str | None:
    """The host of an Origin header (``http://ui.example:8080`` -> ``ui.example``); None for
    ``null`` (a sandboxed or file page) or anything that is not an http(s) origin."""
    try:
        url = urlsplit(value.strip())
        host = url.hostname
    except ValueError:
        return None
    if url.scheme not in ("http", "https") or not host:
        return None
    return _normal(host)


def allowed_hosts(listening: Iterable[str], extra: Iterable[str] = ()) -> frozenset[str]:
    """The names the UI answers to: where it listens (unless a wildcard), loopback, and ``extra``
    (``ui.allowed_hosts``)."""
    names = {_normal(n) for n in (*listening, *LOOPBACK_NAMES, *extra)}
    return frozenset(names - set(WILDCARDS))


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (whitespace stripped). Like ssh with a private key, refuses a file
    that group or others may access, and an empty one. Raises :class:`UiConfigError`."""
    file = Path(os.path.expanduser(path))
    try:
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise UiConfigError(f"the token file {file} is not a regular file")
        if info.st_mode & 0o077:
            raise UiConfigError(f"the token file {file} is accessible by group or others "
                                f"(mode {stat.filemode(info.st_mode)}); make it private: chmod 600 {file}")
        data = file.read_bytes()
    except FileNotFoundError:
        raise UiConfigError(f"the token file {file} does not exist; create one with: "
                            + MAKE_TOKEN.format(file=file)) from None
    except OSError as e:
        raise UiConfigError(f"cannot read the token file {file}: {e.strerror or e}") from None
    token = data.strip()
    if not token:
        raise UiConfigError(f"the token file {file} is empty; put a token in it: " + MAKE_TOKEN.format(file=file))
    if not all(33 <= c < 127 for c in token):
        raise UiConfigError(f"the token file {file} must hold one token of printable ASCII, with no spaces "
                            "(it is sent in an HTTP header)")
    return token.decode("ascii")


def check_listening(address: str, token: str | None) -> None:
    """Refuses to serve open actions (no token) anywhere but on loopback."""
    if token is None and not is_loopback(address):
        shown = address or "0.0.0.0"
        raise UiConfigError(
            f"the UI would listen on {shown}, which is not loopback, with no token: anyone who can reach it "
            "could kill topologies. Set ui.token_file in the config file (or pass --token-file) to a file "
            "holding a secret token, or listen on 127.0.0.1")


@dataclass(frozen=True)
class Access:
    """What the HTTP shell enforces: the names it answers to and the action token (None: open)."""

    hosts: frozenset[str]
    token: str | None = None

    def _hosts_text(self) -> str:
        return ", ".join(sorted(self.hosts))

    def check_host(self, header: str | None) -> None:
        """Every request: 421 unless the Host header names this UI."""
        host = host_name(header)
        if host in self.hosts:
            return
        what = f"host '{header.strip()[:100]}'" if header else "requests without a Host header"
        raise ApiError(421, f"this UI does not answer to {what}; it answers to: {self._hosts_text()}. "
                            "To reach it under another name, add the name to ui.allowed_hosts in the config "
                            "file", "MisdirectedRequest")

    def check_action(self, headers: Headers) -> None:
        """Every POST, before it runs: 415 unless JSON, 403 for a foreign Origin, then the token:
        401 when missing, 403 when wrong."""
        ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(415, "actions need Content-Type: application/json", "UnsupportedMediaType")
        origin = headers.get("Origin")
        if origin is not None and origin_host(origin) not in self.hosts:
            raise ApiError(403, f"actions from pages of origin '{origin.strip()[:100]}' are refused; this UI "
                                f"takes them from: {self._hosts_text()} (add a name to ui.allowed_hosts to "
                                "allow more)", "Forbidden")
        if self.token is None:
            return
        scheme, _, given = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, f"this action needs the UI's token: {HOW_TO_AUTHENTICATE}", "Unauthorized")
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), self.token.encode("ascii")):
            raise ApiError(403, "the token is wrong (it must be the one in the file that ui.token_file names)",
                           "Forbidden")

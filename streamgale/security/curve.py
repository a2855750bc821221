"""CURVE on every socket: :class:`Security` is the one seam socket owners call.

A listening socket calls :meth:`Security.serve` (it proves the cluster key and
lets in, at the handshake, only authorized keys whose role its ZAP domain
accepts); a connecting socket calls :meth:`Security.connect` (it proves this
process's own key and checks the cluster key). With security off both do
nothing, and the sockets speak ZeroMQ's NULL mechanism as before.

Authentication runs in pyzmq's ZAP authenticator thread (:mod:`zmq.auth`), one
per ZeroMQ context, started by the first :meth:`~Security.serve` on it and
stopped by :meth:`Security.close`. The user id it gives a connection is the
key's name; :meth:`Security.principal` turns it into the principal whose role
:mod:`.access` checks on every request.
"""

from __future__ import annotations

import getpass
import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import parse_monitor_message

from streamgale.ratelimit import RateLimitedLog

from .access import DOMAIN_ROLES, Principal
from .keys import AuthorizedKeys, KeyFileError, KeyPair, KeyStore, fingerprint

log = logging.getLogger("streamgale.security")


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP thread, with the key's name as the connection's user id."""

    def __init__(self, context: zmq.Context, keys: AuthorizedKeys, refused: RateLimitedLog):
        super().__init__(context, log=logging.getLogger("streamgale.security.zap"))
        self.keys = keys
        self.refused = refused
        self.denied = 0  # handshakes refused since start

    def curve_user_id(self, client_public_key: bytes) -> str:
        principal = self.keys.lookup(zmq.utils.z85.encode(client_public_key))
        return principal.name if principal is not None else "unknown"


class _DomainPolicy:
    """The credentials provider of one ZAP domain: known key and a role the domain accepts."""

    def __init__(self, domain: str, auth: _Authenticator):
        self.domain = domain
        self.auth = auth

    def callback(self, domain: str, key: bytes) -> bool:
        principal = self.auth.keys.lookup(key)
        allowed = DOMAIN_ROLES[self.domain]
        if principal is not None and principal.role in allowed:
            return True
        self.auth.denied += 1
        if principal is None:
            self.auth.refused.warning("refused a connection to the %s socket: key %s... is not in %s",
                                      self.domain, fingerprint(key), self.auth.keys.store.authorized_dir)
        else:
            self.auth.refused.warning("refused a connection to the %s socket from %s: only %s keys may connect",
                                      self.domain, principal, " or ".join(sorted(allowed)))
        return False


class Security:
    """This process's keys and what its sockets do with them; :meth:`off` for none.

    ``store`` is the keys directory, ``identity`` the name of this process's own
    key pair. Listening needs the cluster's secret key; connecting needs this
    process's pair and the cluster's public key. Missing files raise
    :class:`KeyFileError` when first needed, naming the file and the fix.
    """

    def __init__(self, store: KeyStore | None, identity: str | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.identity = identity or getpass.getuser()
        self.clock = clock
        self.keys = AuthorizedKeys(store, clock=clock) if store is not None else None
        self.refused = RateLimitedLog(log, clock=clock)
        self._pair: KeyPair | None = None
        self._cluster_public: bytes | None = None
        self._cluster_pair: KeyPair | None = None
        self._authenticators: dict[int, _Authenticator] = {}
        self._lock = threading.Lock()

    @classmethod
    def off(cls) -> Security:
        return cls(None, "anonymous")

    @classmethod
    def from_config(cls, config: Any) -> Security:
        if not config["security.enabled"]:
            return cls.off()
        return cls(KeyStore(config["security.keys_dir"]), config["security.identity"])

    @property
    def enabled(self) -> bool:
        return self.store is not None

    # -- sockets ------------------------------------------------------------------------------

    def serve(self, socket: zmq.Socket, domain: str) -> None:
        """Make ``socket`` (before bind) a CURVE server of ``domain`` (see :data:`.access.DOMAIN_ROLES`)."""
        if self.store is None:
            return
        if self._cluster_pair is None:
            self._cluster_pair = self.store.cluster_pair()
        self._authenticator(socket.context)
        socket.curve_server = True
        socket.curve_secretkey = self._cluster_pair.secret
        socket.curve_publickey = self._cluster_pair.public
        socket.zap_domain = domain.encode()

    def connect(self, socket: zmq.Socket) -> None:
        """Make ``socket`` (before connect) a CURVE client with this process's key."""
        if self.store is None:
            return
        if self._pair is None:
            self._pair = self.store.pair(self.identity)
        if self._cluster_public is None:
            self._cluster_public = self.store.cluster_public()
        socket.curve_secretkey = self._pair.secret
        socket.curve_publickey = self._pair.public
        socket.curve_serverkey = self._cluster_public

    # -- code packages ------------------------------------------------------------------------

    def _signing_key(self) -> bytes:
        assert self.store is not None
        if self._cluster_pair is None:
            self._cluster_pair = self.store.cluster_pair()
        assert self._cluster_pair.secret is not None
        secret = zmq.utils.z85.decode(self._cluster_pair.secret)
        return hashlib.blake2b(b"streamgale code package signature v1", key=secret, digest_size=32).digest()

    def sign(self, topology_id: str, digest: str) -> str:
        """The signature nimbus stores with a code package ("" with security off): an HMAC, keyed by the
        cluster's secret key, of the topology id and the package's digest."""
        if self.store is None:
            return ""
        return hmac.new(self._signing_key(), f"{topology_id}\n{digest}".encode(), hashlib.sha256).hexdigest()

    def verify(self, topology_id: str, digest: str, signature: str) -> bool:
        """Whether ``signature`` is the cluster's for this package (always true with security off)."""
        if self.store is None:
            return True
        return hmac.compare_digest(self.sign(topology_id, digest), signature or "")

    def check_client(self) -> None:
        """Raise :class:`KeyFileError` now if this process cannot connect (missing or unsafe key files)."""
        if self.store is not None:
            self.store.pair(self.identity)
            self.store.cluster_public()

    def _authenticator(self, context: zmq.Context) -> _Authenticator:
        with self._lock:
            auth = self._authenticators.get(id(context))
            if auth is None:
                assert self.keys is not None
                auth = _Authenticator(context, self.keys, self.refused)
                auth.start()
                for domain in DOMAIN_ROLES:
                    auth.configure_curve_callback(domain, credentials_provider=_DomainPolicy(domain, auth))
                self._authenticators[id(context)] = auth
            return auth

    @property
    def denied(self) -> int:
        """Handshakes refused (unknown key or role) by this process's authenticators."""
        return sum(a.denied for a in list(self._authenticators.values()))  # any thread: a copy, never torn

    def principal(self, user_id: str | None) -> Principal | None:
        """The principal of an authenticated connection's user id; None when security is off."""
        if self.keys is None:
            return None
        found = self.keys.by_name(user_id or "")
        # The key authenticated at the handshake; revoked since then, it has no role left.
        return found if found is not None else Principal(user_id or "unknown", "none")

    def close(self) -> None:
        """Stop the authenticator threads (call after the sockets they serve are closed)."""
        with self._lock:
            for auth in self._authenticators.values():
                auth.stop()
            self._authenticators.clear()

    # -- handshake failures, as a client sees them ---------------------------------------------

    def handshake_failure(self, event: int, value: int, peer: str) -> str | None:
        """The text a client shows for monitor ``event`` on a connection to ``peer``; None: not a failure.
        A failure that is not :meth:`conclusive` may be a peer going away: report it once it repeats."""
        if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
            key = f"'{self.identity}' ({fingerprint(self._pair.public)}...)" if self._pair else f"'{self.identity}'"
            return (f"{peer} refused key {key}: it is not authorized there, or its role may not use that "
                    f"socket; an admin authorizes it with `streamgale keys authorize {self.identity} --role ROLE`")
        how = ("set security.enabled: true and give this client a key "
               "(security.keys_dir, security.identity; see docs/security.md)")
        if event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH:
            if self.enabled:
                return f"{peer} does not use CURVE security; set security.enabled: false to reach it"
            return f"{peer} requires CURVE security: {how}"
        if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            # The peer closed the connection mid-handshake. A secured daemon that reads a
            # client's whole greeting at once closes before its own greeting names CURVE,
            # so this is what a client without security often sees instead of the mismatch.
            if self.enabled:
                return (f"{peer} broke off the handshake: it did not prove the cluster key in "
                        f"{self.store.dir / 'cluster.key' if self.store else ''} (wrong cluster.key, "
                        f"security off there, or not a StreamGale daemon)")
            return (f"{peer} broke off the handshake, as a daemon that requires CURVE security does: {how} "
                    f"(or check that the address is a StreamGale daemon's)")
        return None

    @staticmethod
    def conclusive(event: int) -> bool:
        """Whether a handshake failure of ``event`` is certain at once (a refusal or a mechanism
        mismatch the peer said), not a connection closed mid-handshake."""
        return event != zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


class HandshakeMonitor:
    """Watches one socket's handshakes (a ZeroMQ monitor, owned by the socket's thread)."""

    EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)

    def __init__(self, socket: zmq.Socket):
        self.socket = socket.get_monitor_socket(self.EVENTS)

    def events(self) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        while True:
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return out
            message = parse_monitor_message(frames)
            out.append((int(message["event"]), int(message["value"])))

    def close(self) -> None:
        self.socket.close(linger=0)


__all__ = ["HandshakeMonitor", "KeyFileError", "Security"]

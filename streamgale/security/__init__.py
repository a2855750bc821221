"""Security: CURVE keys on every socket, roles on every request, ZooKeeper ACLs (docs/security.md)."""

from .access import ADMIN, DAEMON, READER, ROLES, USER, Principal, refusal
from .curve import HandshakeMonitor, Security
from .keys import KeyFileError, KeyStore

__all__ = ["ADMIN", "DAEMON", "READER", "ROLES", "USER", "HandshakeMonitor", "KeyFileError", "KeyStore",
           "Principal", "Security", "refusal"]

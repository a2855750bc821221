"""Who may do what: roles, owners, and the decision for each request (pure logic, no I/O).

Roles (a key's role is in its authorized certificate):

- ``admin``: everything (Storm's ``nimbus.admins``).
- ``user``: reads, ``submit``, and managing the topologies it owns: the ones it
  submitted and the ones whose ``topology.users`` names it (Storm's ``topology.users``).
- ``reader``: reads only: list, info, a topology's config, cluster, stats, logs.
- ``daemon``: what supervisors and workers need: reads, reports, code and
  model downloads; never submit, kill or change a topology.

With security off there is no principal and everything is allowed (dev mode).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

ADMIN = "admin"
USER = "user"
READER = "reader"
DAEMON = "daemon"
ROLES = (ADMIN, USER, READER, DAEMON)

READS = frozenset({"list", "topology_info", "topology_config", "cluster_info", "topology_stats", "ping",
                   "read_log"})
OWNER_ACTIONS = frozenset({"kill", "activate", "deactivate", "rebalance", "set_log_level", "update_model"})
DAEMON_ACTIONS = frozenset({"supervisor_report", "download_code", "download_model"})
SUBMIT = "submit"

# The ZAP domain of each kind of listening socket and the roles it lets in at the handshake.
API = "api"  # nimbus's client API and the supervisors' log endpoints
WORKERS = "workers"  # worker-to-worker tuples
CHANNEL = "channel"  # a supervisor and its workers
DOMAIN_ROLES = {API: frozenset(ROLES), WORKERS: frozenset({DAEMON}), CHANNEL: frozenset({DAEMON})}


@dataclass(frozen=True)
class Principal:
    name: str
    role: str

    def __str__(self) -> str:
        return f"'{self.name}' (role {self.role})"


def refusal(principal: Principal | None, op: str, topology: str | None = None,
            owners: Collection[str] = ()) -> str | None:
    """Why ``principal`` may not run ``op`` (on ``topology``, owned by ``owners``); None if it may.

    ``principal`` None means security is off: everything is allowed.
    """
    if principal is None or principal.role == ADMIN:
        return None
    role, name = principal.role, principal.name
    if role not in ROLES:
        return f"key '{name}' is no longer authorized (revoked or rotated since it connected); reconnect"
    if op in READS:
        return None
    if op in DAEMON_ACTIONS:
        if role == DAEMON or (role == USER and op != "supervisor_report" and name in owners):
            return None
        return _text(principal, op, topology, "role daemon or admin"
                     + (", or role user as an owner of the topology" if op != "supervisor_report" else ""), owners)
    if op == SUBMIT:
        return None if role == USER else _text(principal, op, None, "role user or admin", owners)
    if op in OWNER_ACTIONS:
        if role == USER and name in owners:
            return None
        return _text(principal, op, topology, "role admin, or role user as an owner of the topology", owners)
    return _text(principal, op, topology, "role admin", owners)


def _text(principal: Principal, op: str, topology: str | None, needed: str, owners: Collection[str]) -> str:
    target = f" topology '{topology}'" if topology else ""
    owned = f" (owners: {', '.join(sorted(owners))})" if topology and owners else ""
    return f"user {principal} may not {op}{target}: that needs {needed}{owned}"

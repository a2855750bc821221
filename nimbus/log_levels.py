"""``streamgale set-log-level``: the levels a topology's workers apply, kept in its record.

Pure (no I/O, no clock: ``now`` is wall-clock seconds, passed in). A level set with a
timeout carries its expiry time in the record (``log_level_expiry``), so a restarted or
standby nimbus still reverts it; the leader's reconcile calls :func:`without_expired` and
writes the record back when something expired. A logger that leaves ``log_levels`` (expired
or reset) goes back, in every worker, to the level it had before it was first changed.
"""

from __future__ import annotations

from streamgale.cluster.records import TopologyRecord


def with_level(rec: TopologyRecord, logger: str, level: str, timeout: float | None, now: float) -> TopologyRecord:
    """``rec`` with ``logger`` at ``level``: until ``now + timeout``, or for good when ``timeout`` is None
    (which also cancels an earlier timeout of that logger)."""
    expiry = {k: v for k, v in rec.log_level_expiry.items() if k != logger}
    if timeout is not None:
        expiry[logger] = now + timeout
    return rec.with_(log_levels={**rec.log_levels, logger: level}, log_level_expiry=expiry)


def without_level(rec: TopologyRecord, logger: str) -> TopologyRecord | None:
    """``rec`` with ``logger`` back to its workers' own level (Storm's ``set_log_level -r``);
    None when no level of ``logger`` is set."""
    if logger not in rec.log_levels:
        return None
    return rec.with_(log_levels={k: v for k, v in rec.log_levels.items() if k != logger},
                     log_level_expiry={k: v for k, v in rec.log_level_expiry.items() if k != logger})


def expired(rec: TopologyRecord, now: float) -> list[str]:
    """The loggers whose level's timeout has passed at ``now``, sorted."""
    return sorted(k for k, at in rec.log_level_expiry.items() if at <= now)


def without_expired(rec: TopologyRecord, now: float) -> TopologyRecord | None:
    """``rec`` without the levels whose timeout has passed at ``now`` (and without expiry times
    of loggers that have no level any more); None when there is nothing to drop."""
    gone = set(expired(rec, now))
    stray = set(rec.log_level_expiry) - set(rec.log_levels)
    if not gone and not stray:
        return None
    return rec.with_(log_levels={k: v for k, v in rec.log_levels.items() if k not in gone},
                     log_level_expiry={k: v for k, v in rec.log_level_expiry.items() if k not in gone | stray})

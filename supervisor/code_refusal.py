"""When a supervisor asks again for a code package it refused (pure: the caller gives the time).

A refused package (its digest does not match, or :mod:`streamgale.cluster.package`
rejects the archive) is the package's fault, not the slot's, and the same
package is refused again however often it is fetched: so the supervisor asks
again after a delay that doubles with each refusal of the same digest, from
:data:`FIRST_RETRY` up to :data:`MAX_RETRY`, and reports each refusal as an
error of the topology. A package of another digest (a resubmitted topology)
starts afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_RETRY = 10.0  # seconds after the first refusal
MAX_RETRY = 300.0  # the longest wait between two fetches of a refused package


@dataclass(frozen=True)
class Refusal:
    """The latest refusal of a topology's code package."""

    digest: str
    reason: str
    refusals: int  # refusals of this digest in a row
    retry_at: float  # when to fetch it again, on the caller's clock

    def blocks(self, digest: str, now: float) -> bool:
        """Whether a fetch of ``digest`` at ``now`` must wait."""
        return digest == self.digest and now < self.retry_at


def refuse(previous: Refusal | None, digest: str, reason: str, now: float) -> Refusal:
    """The refusal after one more of ``digest`` at ``now``, given the ``previous`` one (if any)."""
    refusals = previous.refusals + 1 if previous is not None and previous.digest == digest else 1
    delay = min(FIRST_RETRY * 2 ** (refusals - 1), MAX_RETRY)
    return Refusal(digest, reason, refusals, now + delay)

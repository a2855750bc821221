"""Every znode path of the cluster's layout, in one place.

All under ``root`` (``zookeeper.root``, default ``/streamgale``)::

    supervisors/<supervisor id>     ephemeral   SupervisorInfo
    nimbuses/<host:port>            ephemeral   the address (live nimbuses)
    election/n_<seq>                ephemeral sequential, the contender's address;
                                    the lowest sequence leads
    topologies/<topology id>        TopologyRecord
    topology-names/<quoted name>    the topology id (keeps names unique, atomically)
    assignments/<topology id>       Assignment; the znode version is Assignment.version,
                                    written only by the leader (fenced, see
                                    ClusterState.set_assignment)
    code/<topology id>/meta         msgpack {size, sha256, chunks}, written last
    code/<topology id>/chunk-NNNNN  up to 512 KiB of the code package each
    models/<topology id>/<quoted component>/meta, chunk-NNNNN
                                    the model file uploaded to a running model bolt
    errors/<topology id>/<quoted component>/e_<seq>
                                    ErrorRecord, newest 10 per component
    losses/<topology id>            Loss: the latest lost worker; the znode version is the
                                    topology's loss epoch (supervisors and the leader write it)

Names given by users (topology names, component names) are percent-quoted;
ids are checked by :func:`_check_name` and used as they are.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from .errors import ClusterStateError

DIRS = ("supervisors", "nimbuses", "election", "topologies", "topology-names", "assignments", "code", "models",
        "errors", "losses")


def _check_name(kind: str, name: str) -> str:
    """``name`` if it can be one znode name; else ClusterStateError naming ``kind``."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or not name.isprintable():
        raise ClusterStateError(f"{kind} {name!r} cannot be a znode name (no '/', not empty, printable)")
    return name


class Paths:
    """The layout under one root; each method checks the names it is given."""

    def __init__(self, root: str = "/streamgale"):
        self.root = root.rstrip("/")
        self.supervisors = f"{self.root}/supervisors"
        self.nimbuses = f"{self.root}/nimbuses"
        self.election = f"{self.root}/election"
        self.topologies = f"{self.root}/topologies"
        self.topology_names = f"{self.root}/topology-names"
        self.assignments = f"{self.root}/assignments"
        self.code = f"{self.root}/code"
        self.models = f"{self.root}/models"
        self.errors = f"{self.root}/errors"
        self.losses = f"{self.root}/losses"

    def dirs(self) -> list[str]:
        """The directories :meth:`ClusterState.start` creates."""
        return [f"{self.root}/{d}" for d in DIRS]

    def supervisor(self, supervisor_id: str) -> str:
        return f"{self.supervisors}/{_check_name('supervisor id', supervisor_id)}"

    def nimbus(self, address: str) -> str:
        return f"{self.nimbuses}/{_check_name('nimbus address', address)}"

    def topology(self, topology_id: str) -> str:
        return f"{self.topologies}/{_check_name('topology id', topology_id)}"

    def topology_name(self, name: str) -> str:
        return f"{self.topology_names}/{quote(name, safe='')}"

    def assignment(self, topology_id: str) -> str:
        return f"{self.assignments}/{_check_name('topology id', topology_id)}"

    def code_package(self, topology_id: str) -> str:
        return f"{self.code}/{_check_name('topology id', topology_id)}"

    def code_meta(self, topology_id: str) -> str:
        return f"{self.code_package(topology_id)}/meta"

    def code_chunk(self, topology_id: str, index: int) -> str:
        return f"{self.code_package(topology_id)}/chunk-{index:05d}"

    def topology_models(self, topology_id: str) -> str:
        return f"{self.models}/{_check_name('topology id', topology_id)}"

    def model_file(self, topology_id: str, component: str) -> str:
        return f"{self.topology_models(topology_id)}/{quote(component, safe='')}"

    def topology_errors(self, topology_id: str) -> str:
        return f"{self.errors}/{_check_name('topology id', topology_id)}"

    def topology_losses(self, topology_id: str) -> str:
        return f"{self.losses}/{_check_name('topology id', topology_id)}"

    def component_errors(self, topology_id: str, component: str) -> str:
        return f"{self.topology_errors(topology_id)}/{quote(component, safe='')}"

    @staticmethod
    def name_of(entry: str) -> str:
        """The topology name of a ``topology-names`` entry."""
        return unquote(entry)

    @staticmethod
    def component_of(folder: str) -> str:
        """The component name of a ``component_errors`` folder's last part."""
        return unquote(folder)

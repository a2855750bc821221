"""StreamGale: a distributed stream processing engine for Python, in the mould of Apache Storm.

The public API is what this module exports; ``streamgale.testing`` and
``streamgale.client`` (:func:`submit`, :class:`Client`, their data types and
errors) are public too. Everything else is internal.
"""

from .client import Client, submit
from .components import Bolt, Spout, TopologyContext
from .config import Config, ConfigError, load_config
from .groupings import CustomGrouping
from .local import LocalCluster, run_local
from .reliable import ReliableSpout
from .topology import Topology, TopologyError
from .tuples import Tuple

__version__ = "0.1.0"

__all__ = [
    "Bolt",
    "Client",
    "Config",
    "ConfigError",
    "CustomGrouping",
    "LocalCluster",
    "ReliableSpout",
    "Spout",
    "Topology",
    "TopologyContext",
    "TopologyError",
    "Tuple",
    "load_config",
    "run_local",
    "submit",
]

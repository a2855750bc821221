"""StreamGale: a distributed stream processing engine for Python, in the mould of Apache Storm.

The public API is what this module exports; ``streamgale.testing``,
``streamgale.client`` (:func:`submit`, :class:`Client`, their data types and
errors), ``streamgale.state`` (checkpointed state: :class:`StatefulBolt`,
``committed_state``, the backend interface) and ``streamgale.windowing``
(windows and their pure ``WindowManager``) are public too. Everything else is internal.
"""

from .client import Client, submit
from .components import Bolt, Spout, TopologyContext
from .config import Config, ConfigError, load_config
from .groupings import CustomGrouping
from .local import LocalCluster, run_local
from .reliable import ReliableSpout
from .runtime.executor import StartFailed
from .state import StatefulBolt
from .topology import Topology, TopologyError
from .tuples import Tuple
from .windowing import Count, Duration, Window, WindowedBolt

__version__ = "0.1.0"

__all__ = [
    "Bolt",
    "Client",
    "Config",
    "ConfigError",
    "Count",
    "CustomGrouping",
    "Duration",
    "LocalCluster",
    "ReliableSpout",
    "Spout",
    "StartFailed",
    "StatefulBolt",
    "Topology",
    "TopologyContext",
    "TopologyError",
    "Tuple",
    "Window",
    "WindowedBolt",
    "load_config",
    "run_local",
    "submit",
]

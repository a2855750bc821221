"""Components in other languages, over Apache Storm's multi-lang protocol (docs/multilang.md)."""

from .bolt import ShellBolt
from .framing import EncodeError, ProtocolError
from .shell import ShellError
from .spout import ShellSpout

__all__ = ["EncodeError", "ProtocolError", "ShellBolt", "ShellError", "ShellSpout"]

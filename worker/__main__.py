"""``python -m streamgale.worker``: started by a supervisor, not by users."""

import argparse
import sys
from pathlib import Path

from streamgale.wire.channel import WorkerArgs

from .daemon import main


def parse(argv: list[str]) -> WorkerArgs:
    p = argparse.ArgumentParser(prog="python -m streamgale.worker",
                                description="A StreamGale worker process (started by a supervisor).")
    p.add_argument("--topology-id", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--supervisor-id", required=True)
    p.add_argument("--host", required=True, help="address other workers reach this one at")
    p.add_argument("--code-dir", type=Path, required=True, help="the unpacked code package")
    p.add_argument("--worker-dir", type=Path, required=True, help="launch file, log and state directory")
    p.add_argument("--config", type=Path, default=None, help="the supervisor's config file")
    p.add_argument("--channel", required=True, help="the supervisor's channel (tcp://127.0.0.1:PORT)")
    a = p.parse_args(argv)
    return WorkerArgs(a.topology_id, a.port, a.supervisor_id, a.host, a.code_dir, a.worker_dir, a.config,
                      a.channel)


if __name__ == "__main__":
    sys.exit(main(parse(sys.argv[1:])))

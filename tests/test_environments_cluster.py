"""Per-topology Python dependencies on a real 2-supervisor cluster (docs/deployment.md): a topology
whose requirements.txt names a package the cluster lacks, shipped as a wheel (made by the test)
in its wheelhouse, runs with every message processed, its workers in the environment each
supervisor built; a topology with an unsatisfiable requirement is refused at submit with pip's
error and killed, and the first topology never notices; the environments of a killed topology
are removed."""

from __future__ import annotations

import json
from pathlib import Path

import psutil
import pytest
from cluster_fixtures import Cluster, started
from wheels import make_wheel

pytestmark = pytest.mark.slow

COUNT = 3000
MISSING = "streamgale-no-such-package==1.0"
TOPOLOGY = '''
import os
from pathlib import Path

from streamgale import Bolt, Spout, Topology


class Numbers(Spout):
    outputs = ["n"]

    def open(self, context):
        self.mine = iter(range(context.task_index, int(context.config["test.count"]), context.task_count))

    def next_tuple(self):
        n = next(self.mine, None)
        if n is not None:
            self.emit([n], msg_id=n)


class Shout(Bolt):
    outputs = ["line"]

    def prepare(self, context):
        import sgdemo  # from requirements.txt: installed in the workers' environment only

        self.sgdemo = sgdemo

    def process(self, tup):
        self.emit([self.sgdemo.shout(tup["n"])])


class Sink(Bolt):
    def prepare(self, context):
        out = Path(context.config["test.output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / f"sink-{context.task_id}-{os.getpid()}.txt", "a", buffering=1)

    def process(self, tup):
        self.file.write(tup["line"] + "\\n")


topology = Topology("NAME", config={"topology.workers": 2})
topology.spout("numbers", Numbers, parallelism=2)
topology.bolt("shout", Shout, parallelism=2).shuffle("numbers")
topology.bolt("sink", Sink, parallelism=2).shuffle("shout")
'''


def topology_dir(tmp_path: Path, name: str, requirements: str, wheel: bool) -> Path:
    code = tmp_path / name
    code.mkdir()
    (code / "topology.py").write_text(TOPOLOGY.replace("NAME", name))
    (code / "requirements.txt").write_text(requirements)
    if wheel:
        make_wheel(code / "wheelhouse", "sgdemo", "1.0",
                   "def shout(n):\n    return f'{n}!sgdemo-1.0'\n")
    return code


def lines(directory: Path) -> list[str]:
    return [line for f in sorted(directory.glob("sink-*.txt")) for line in f.read_text().splitlines()]


def acked(cluster, name: str) -> int:
    stats = json.loads(cluster.cli("stats", name, "--json").stdout)
    return stats["components"].get("numbers", {}).get("windows", {}).get("all", {}).get("acked", 0)


def environments(cluster) -> list[Path]:
    return [p for i in range(2) for p in (cluster.local_dir(i) / "envs").glob("*") if not p.name.startswith(".")]


@pytest.fixture
def cluster(tmp_path, zookeeper, zk_root, request):
    c = Cluster(tmp_path / "cluster", zookeeper.address, zk_root)
    c.config_file.write_text(c.config_file.read_text() + "supervisor.environment_keep: 0\n")
    with started(c, request):
        yield c


def test_a_topology_runs_with_its_own_requirements_and_an_unsatisfiable_one_is_refused(cluster, tmp_path):
    out = tmp_path / "out"
    good = topology_dir(tmp_path, "shouts", "sgdemo==1.0\n", wheel=True)
    result = cluster.cli("submit", str(good / "topology.py"), "-c", f"test.count={COUNT}",
                         "-c", f"test.output_dir={out}", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr + cluster.logs()
    assert "waiting for the supervisors to build its Python environment" in result.stderr
    assert "topology 'shouts' is running" in result.stdout

    # Both supervisors built one environment each, and every worker runs in its node's.
    built = environments(cluster)
    assert len(built) == 2 and {p.parent.parent for p in built} == {cluster.local_dir(0), cluster.local_dir(1)}
    workers = cluster.worker_processes()
    assert len(workers) == 2
    assert {Path(w.cmdline()[0]).parent.parent for w in workers} == set(built)

    cluster.wait(lambda: acked(cluster, "shouts") >= COUNT, timeout=120, message="every number acked")
    got = cluster.wait(lambda: (lambda g: g if len(g) >= COUNT else None)(lines(out)), timeout=30,
                       message="every line written")
    assert sorted(got) == sorted(f"{n}!sgdemo-1.0" for n in range(COUNT))

    # An unsatisfiable requirement: pip's error at submit, the topology killed, the first untouched.
    bad = topology_dir(tmp_path, "broken", f"{MISSING}\n", wheel=False)
    result = cluster.cli("submit", str(bad / "topology.py"), "-c", "test.count=10",
                         "-c", f"test.output_dir={tmp_path / 'bad-out'}", timeout=300)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "topology 'broken' cannot start, so it was killed" in result.stderr
    assert "could not be built: pip install -r requirements.txt failed" in result.stderr
    assert f"No matching distribution found for {MISSING}" in result.stderr
    cluster.wait(lambda: "broken" not in cluster.cli("list").stdout, timeout=30, message="broken removed")
    assert [w.pid for w in cluster.worker_processes()] == [w.pid for w in workers]
    assert "shouts" in cluster.cli("list").stdout and acked(cluster, "shouts") == COUNT
    assert len(environments(cluster)) == 2  # a failed build leaves nothing

    # Killed: no topology uses the environments any more, so they go (supervisor.environment_keep: 0).
    assert cluster.cli("kill", "shouts", "-w", "0").returncode == 0
    cluster.wait(lambda: not environments(cluster) and not cluster.worker_processes(), timeout=90,
                 message="the environments removed")
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in workers)

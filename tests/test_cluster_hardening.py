"""What a security probe (issue 17) found nimbus and supervisors accepting, now refused or repaired.

Through the in-process cluster (:mod:`streamgale.dev.inprocess`: the real daemons
in threads over an in-memory ZooKeeper), the CLI driven in-process with
click's CliRunner against its nimbus, and a raw storage client that writes
what no daemon would (garbage records, a hostile entry). Every wait is a
bounded poll.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamgale.cli import main
from streamgale.nimbus.daemon import MAX_WAIT
from streamgale.supervisor import code_refusal
from streamgale.supervisor.daemon import PACKAGE_ERRORS

from streamgale import client as sg
from streamgale.cluster.memory_storage import MemoryStorage
from streamgale.cluster.package import digest, pack_directory
from streamgale.cluster.records import ACTIVE, INACTIVE, REBALANCING, Assignment, TopologyRecord
from streamgale.config import Config
from streamgale.dev.inprocess import ROOT, InProcessCluster
from streamgale.security.access import Principal
from streamgale.wire.protocol import AlreadyExists, BadRequest, InvalidTopology, Kill, NotFound, PermissionDenied

TOPOLOGIES = Path(__file__).parent / "topologies"
TOPOLOGY = str(TOPOLOGIES / "cluster_word_count.py")
LAUNCH_TIMEOUT = 3.0  # nimbus.task_launch_timeout: a slot that never beats is judged dead after this


@pytest.fixture
def cluster(tmp_path):
    config = {"nimbus.task_launch_timeout": LAUNCH_TIMEOUT}
    with InProcessCluster(supervisors=2, slots=2, config=config, directory=tmp_path / "cluster") as c:
        c.wait(lambda: c.leader() is not None and len(c.leader().state.supervisors()) == 2, message="ready")
        yield c


@pytest.fixture
def raw(cluster):
    """A client of the cluster's ZooKeeper that no daemon owns, to write what none would."""
    storage = MemoryStorage(cluster.zookeeper)
    storage.start(5)
    try:
        yield storage
    finally:
        storage.close()


def nimbus(c: InProcessCluster) -> str:
    return f"127.0.0.1:{c.nimbus_ports[0]}"


def submit(c: InProcessCluster, tmp_path: Path, name: str = "wc", **config) -> str:
    return sg.submit(TOPOLOGY, name=name, nimbus=nimbus(c),
                     config={"test.output_dir": str(tmp_path / name), "test.sentences": 100_000, "test.rate": 20,
                             **config})


def cli(c: InProcessCluster, *args: str):
    return CliRunner().invoke(main.cli, ["--nimbus", nimbus(c), *args], catch_exceptions=False)


def daemons_alive(c: InProcessCluster) -> bool:
    return all(t.is_alive() for t in c._threads.values())


# -- 1. the package entry and 7. refused packages -------------------------------------------------


def test_nimbus_refuses_an_entry_outside_the_package_or_missing_from_it(cluster):
    submission = sg.prepare(TOPOLOGY, name="wc", base=Config())
    with cluster.client() as client:
        for entry, message in [("/etc/evil.py", "code package entry '/etc/evil.py' is an absolute path"),
                               ("../../evil.py", "code package entry '../../evil.py' has a '..' component"),
                               ("missing.py", "code package entry 'missing.py' is not a file in the code package")]:
            with pytest.raises(InvalidTopology, match=re.escape(f"code package of 'wc' refused: {message}")):
                client.submit("wc", submission.spec, submission.config, entry, submission.code,
                              submission.code_digest)
        assert client.list_topologies() == []


def stored_topology(c: InProcessCluster, tid: str, name: str, entry: str, code: bytes, digest: str) -> None:
    """A topology record written past nimbus's checks (as a hand, a tool or an old nimbus could)."""
    submission = sg.prepare(TOPOLOGY, name=name, base=Config())
    spec = submission.spec
    state = c.leader().state
    state.put_code(tid, code)
    state.create_topology(TopologyRecord(tid, name, ACTIVE, spec, {}, digest, entry, 1,
                                         {n: comp.parallelism for n, comp in spec.components.items()}, time.time()))


def test_a_refused_package_is_a_topology_error_retried_with_backoff_and_its_slots_are_not_blacklisted(cluster):
    """Issue 17: a refused package was only in the supervisor's log, fetched every 10 s forever,
    and nimbus moved its executors from slot to slot, blacklisting each for 60 s."""
    code = pack_directory(TOPOLOGIES)
    stored_topology(cluster, "evil-1", "evil", "../../etc/evil.py", code, digest(code))
    stored_topology(cluster, "mismatch-1", "mismatch", "cluster_word_count.py", code, "0" * 64)
    leader = cluster.leader()

    def package_errors(name: str) -> list[str]:
        with cluster.client() as client:
            return [e["message"] for e in client.topology_info(name)["errors"].get(PACKAGE_ERRORS, [])]

    evil = cluster.wait(lambda: package_errors("evil"), message="the refusal of evil's package in its errors")
    assert re.fullmatch(r"code package of topology 'evil' \(evil-1\) refused by supervisor \w+ on node-\d "
                        r"\(fetching it again in 10 s\): code package entry '../../etc/evil.py' has a '..' component; "
                        r"it must name a .py file inside the code package", evil[0]), evil
    mismatch = cluster.wait(lambda: package_errors("mismatch"), message="the refusal of mismatch's package")
    assert f"code package digest mismatch: expected {'0' * 64}, got {digest(code)}" in mismatch[0]

    placed = {tid: leader.state.assignment(tid).slots for tid in ("evil-1", "mismatch-1")}
    started = time.monotonic()
    # Past nimbus.task_launch_timeout (no worker ever beats): no slot is judged dead, nothing moves.
    # 1.5x, not more: the first refetch comes 10 s after each refusal, and a loaded machine took
    # that long to get here with 2.5x (a full local run saw a second refusal).
    cluster.wait(lambda: leader.reconciled_at is not None and leader.reconciled_at > started + 1.5 * LAUNCH_TIMEOUT,
                 message="nimbus to reconcile a while")
    assert leader.liveness.dead == {}
    assert {tid: leader.state.assignment(tid).slots for tid in placed} == placed
    refusals = [s._refused for s in cluster.supervisors if s is not None]
    assert all(r.refusals == 1 for refused in refusals for r in refused.values())  # not fetched again yet
    assert len(package_errors("evil")) == 1 and not cluster.workers() and daemons_alive(cluster)

    with cluster.client() as client:
        client.kill("evil", wait=0)
    cluster.wait(lambda: all("evil-1" not in s._refused for s in cluster.supervisors if s is not None),
                 message="the refusal forgotten with its topology")


def test_the_refetch_delay_doubles_per_refusal_of_the_same_package_up_to_five_minutes():
    r = None
    delays = []
    for _ in range(7):
        r = code_refusal.refuse(r, "d1", "bad", now=100.0)
        delays.append(r.retry_at - 100.0)
    assert delays == [10, 20, 40, 80, 160, 300, 300] and r.refusals == 7
    assert r.blocks("d1", 399.0) and not r.blocks("d1", 400.0) and not r.blocks("d2", 100.0)
    assert code_refusal.refuse(r, "d2", "resubmitted", now=100.0).retry_at == 110.0  # a new package starts afresh


# -- 2. cluster settings in a topology's config ---------------------------------------------------


def test_nimbus_refuses_cluster_settings_in_a_topology_and_submit_lists_keys_it_does_not_know(cluster, tmp_path):
    submission = sg.prepare(TOPOLOGY, name="wc", base=Config())
    spec = submission.spec.to_dict()
    with cluster.client() as client:
        with pytest.raises(InvalidTopology, match=re.escape(
                "config key 'zookeeper.servers' in topology config is a cluster setting; set it in the daemons' "
                "config.yaml, not in a topology")):
            client.submit("wc", spec, {"zookeeper": {"servers": ["evil:2181"]}}, submission.entry, submission.code,
                          submission.code_digest)
        spec["components"]["count"]["config"] = {"supervisor.local_dir": "/"}
        with pytest.raises(InvalidTopology, match="config key 'supervisor.local_dir' in config of component 'count' "
                                                  "is a cluster setting"):
            client.submit("wc", spec, {}, submission.entry, submission.code, submission.code_digest)

    refused = cli(cluster, "submit", TOPOLOGY, "-c", "nimbus.host=10.0.0.9")
    assert refused.exit_code == 2
    assert "config key 'nimbus.host' in -c option is a cluster setting" in refused.stderr

    out = tmp_path / "out"
    result = cli(cluster, "submit", TOPOLOGY, "--name", "wc", "-c", f"test.output_dir={out}", "-c",
                 "test.sentences=10", "-c", "topology.workers=1")
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "does not know" in line] == [
        "topology config keys StreamGale does not know, passed to components as is: test.output_dir, test.sentences"]
    assert result.stdout.startswith("submitted topology 'wc' as wc-")


# -- 4. bounded waits; activate and deactivate while rebalancing ----------------------------------


def test_waits_are_bounded_and_a_status_set_while_rebalancing_says_when_it_applies(cluster, tmp_path):
    submit(cluster, tmp_path)
    too_long = f"wait must be between 0 and {MAX_WAIT:.0f} seconds (24 h), got 1e+09"
    with cluster.client() as client:
        with pytest.raises(BadRequest, match=re.escape(too_long)):
            client.rebalance("wc", wait=1e9, workers=2)
        with pytest.raises(BadRequest, match=re.escape(too_long)):
            client.kill("wc", wait=1e9)
        assert client.topology_info("wc")["topology"]["status"] == ACTIVE
    assert MAX_WAIT == 24 * 3600
    refused = cli(cluster, "rebalance", "wc", "-w", "1000000000", "-n", "2")
    assert refused.exit_code == 1 and too_long in refused.stderr

    api = sg.Client(nimbus(cluster), config=Config())
    with api:
        assert api.deactivate("wc") == {"status": INACTIVE}
        api.rebalance("wc", wait=600, workers=2)
        change = api.activate("wc")
    assert change["status"] == ACTIVE and change["after_rebalance"] is True
    assert 600 < change["applies_in"] <= 600 + LAUNCH_TIMEOUT
    result = cli(cluster, "deactivate", "wc")
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"topology 'wc' is rebalancing: status INACTIVE applies when the rebalance ends, in at "
                        r"most 60\d s\n", result.stdout), result.stdout
    record = cluster.leader().state.topology(cluster.leader()._by_name("wc").id)
    assert record.status == REBALANCING and record.pending["resume"] == INACTIVE
    assert cli(cluster, "activate", "wc").stdout.startswith("topology 'wc' is rebalancing: status ACTIVE applies")


# -- 5. the election node deleted under a running nimbus -----------------------------------------


def test_nimbus_leads_again_after_its_election_node_is_deleted(cluster, raw):
    leader = cluster.leader()
    node = leader.leadership.node_path
    raw.delete(node)
    cluster.wait(lambda: cluster.leader() is leader and leader.leadership.node_path != node,
                 message="nimbus to lead again with a new election node")
    with cluster.client() as client:
        assert client.ping()["leader"] is True


# -- 6. records that do not decode ---------------------------------------------------------------


def test_a_corrupt_topology_record_is_listed_killable_and_frees_its_name(cluster, raw, tmp_path):
    """Issue 17: resubmit said "already running" while kill said NotFound."""
    raw.create(f"{ROOT}/topologies/wc-1", b"\xc1 garbage")
    raw.create(f"{ROOT}/topology-names/wc", b"wc-1")
    raw.create(f"{ROOT}/topologies/nameless-1", b"\x93\x01\x02\x03")
    raw.create(f"{ROOT}/supervisors/junk", b"not a supervisor", ephemeral=True)

    listing = cli(cluster, "list")
    assert listing.exit_code == 0, listing.output
    rows = [line.split()[:3] for line in listing.stdout.splitlines()[1:]]
    assert rows == [["nameless-1", "nameless-1", "CORRUPT"], ["wc", "wc-1", "CORRUPT"]]
    with pytest.raises(AlreadyExists, match=re.escape(
            "a topology named 'wc' is stored with a record that cannot be read (id wc-1, status CORRUPT); "
            "`streamgale kill wc` removes it")):
        submit(cluster, tmp_path)
    with cluster.client() as client, pytest.raises(NotFound, match=re.escape(
            "topology 'wc' (id wc-1) has a record that cannot be read (topology record is not valid msgpack")):
        client.topology_info("wc")

    assert cli(cluster, "kill", "wc").exit_code == 0
    assert cli(cluster, "kill", "nameless-1").exit_code == 0  # by its id
    assert cli(cluster, "list").stdout == "No topologies running.\n"
    assert raw.children(f"{ROOT}/topology-names") == []

    tid = submit(cluster, tmp_path)  # the name is free again; the junk supervisor gets nothing
    assignment = cluster.wait(lambda: cluster.leader().state.assignment(tid), message="an assignment")
    assert {s.supervisor_id for s in assignment.slots.values()} <= {s.id for s in cluster.supervisors if s}
    assert "junk" not in cluster.leader().supervisors and daemons_alive(cluster)


def test_an_undecodable_assignment_is_ignored_by_supervisors_and_repaired_by_the_leader(cluster, raw, tmp_path):
    tid = submit(cluster, tmp_path, **{"topology.workers": 1})
    leader = cluster.leader()
    cluster.wait(lambda: len(cluster.workers()) == 1, message="the worker")
    raw.set(f"{ROOT}/assignments/{tid}", b"junk")
    raw.create(f"{ROOT}/assignments/gone-1", b"junk")  # of no topology: deleted

    def repaired() -> Assignment | None:
        found, unreadable = leader.state.assignments_and_corrupt()
        return found.get(tid) if not unreadable and "gone-1" not in found else None

    cluster.wait(repaired, message="the leader to rewrite one and delete the other")
    cluster.wait(lambda: len(cluster.workers()) == 1, message="a worker for the rewritten assignment")
    assert daemons_alive(cluster)


def test_only_an_admin_may_remove_a_corrupt_record_when_security_is_on(cluster, raw):
    """A record that cannot be read has no owners to check, so removing it takes the admin role."""
    raw.create(f"{ROOT}/topologies/wc-1", b"\xc1 garbage")
    raw.create(f"{ROOT}/topology-names/wc", b"wc-1")
    leader = cluster.leader()
    for role in ("user", "reader", "daemon"):
        with pytest.raises(PermissionDenied, match=f"user 'mallory' \\(role {role}\\) may not kill topology 'wc'"):
            leader._authorize(Principal("mallory", role), Kill("wc"))
    leader._authorize(Principal("root", "admin"), Kill("wc"))
    leader._authorize(Principal("mallory", "user"), Kill("nothing-here"))  # NotFound from the handler, as before

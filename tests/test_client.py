"""streamgale.client: the library behind `streamgale submit` and the cluster commands.

Unit tests of config layering, addresses and code packages need no cluster; one
slow test drives a real cluster (ZooKeeper, nimbus, two supervisors) through
the library alone, and one runs the example of docs/client.md against it.
"""

from __future__ import annotations

import io
import re
import sys
import tarfile
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from cluster_fixtures import cluster  # noqa: F401  (fixture)
from conftest import ROOT

import streamgale
from streamgale import Config, ConfigError, Topology, TopologyError, load_config
from streamgale.client import (
    Client,
    NimbusUnavailable,
    NotFound,
    PackageError,
    TopologyFileError,
    did_you_mean,
    nimbus_addresses,
    prepare,
    topology_from_file,
)
from streamgale.cluster.package import digest
from streamgale.dev.ports import free_port

sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402

TOPOLOGIES = ROOT / "tests" / "topologies"

COMPONENTS = textwrap.dedent('''
    from streamgale import Bolt, Spout, Topology

    class Numbers(Spout):
        outputs = ["n"]
        def next_tuple(self):
            self.emit([1])

    class Sink(Bolt):
        def process(self, tup):
            pass
''')

TOPOLOGY_FILE = COMPONENTS + textwrap.dedent('''
    topology = Topology("numbers", config={"topology.workers": 2, "numbers.label": "from-topology"})
    topology.spout("numbers", Numbers)
    topology.bolt("sink", Sink, parallelism=2).shuffle("numbers")
''')

BUILDER_FILE = COMPONENTS + textwrap.dedent('''
    def build_topology(config):
        seen = [config["topology.message_timeout"], config["topology.workers"]]
        topology = Topology("built", config={"numbers.seen": seen})
        topology.spout("numbers", Numbers)
        topology.bolt("sink", Sink).shuffle("numbers")
        return topology
''')


def write_module(directory: Path, source: str = TOPOLOGY_FILE) -> Path:
    """A topology file under a name of its own: each import registers it in sys.modules by name."""
    path = directory / f"client_topology_{uuid.uuid4().hex[:8]}.py"
    path.write_text(source)
    return path


def import_file(path: Path):
    from streamgale.runtime.loader import load_module

    return load_module(path)


def members(code: bytes) -> set[str]:
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as tar:
        return set(tar.getnames())


# -- addresses ------------------------------------------------------------------------------------


def test_nimbus_addresses_come_from_the_argument_else_the_config():
    config = Config().merged({"nimbus.host": "master", "nimbus.port": 7000}, "test")
    assert nimbus_addresses(None, config) == ["master:7000"]
    assert nimbus_addresses("", config) == ["master:7000"]
    assert nimbus_addresses("a:1, b:2,", config) == ["a:1", "b:2"]
    assert nimbus_addresses(["a:1", " b:2 "], config) == ["a:1", "b:2"]


def test_a_nimbus_host_without_a_port_gets_nimbus_port():
    """Issue 19: `--nimbus localhost` crashed; a host alone means nimbus.port there."""
    config = Config().merged({"nimbus.port": 7000}, "test")
    assert nimbus_addresses("localhost", config) == ["localhost:7000"]
    assert nimbus_addresses("a, b:2, tcp://c, [::1]", config) == ["a:7000", "b:2", "c:7000", "[::1]:7000"]
    assert nimbus_addresses("localhost", Config()) == ["localhost:6627"]


@pytest.mark.parametrize("address,error", [
    ("localhost:99999", "nimbus address 'localhost:99999': '99999' is not a port number (1-65535); write HOST or "
                        "HOST:PORT, e.g. 'nimbus1:6627'"),
    ("localhost:", "nimbus address 'localhost:': '' is not a port number (1-65535); write HOST or HOST:PORT, e.g. "
                   "'nimbus1:6627'"),
    ("nimbus:http", "nimbus address 'nimbus:http': 'http' is not a port number (1-65535); write HOST or HOST:PORT, "
                    "e.g. 'nimbus1:6627'"),
    (":6627", "nimbus address ':6627' has no host; write HOST or HOST:PORT, e.g. 'nimbus1:6627'"),
])
def test_a_bad_nimbus_port_is_named(address, error):
    with pytest.raises(ValueError) as e:
        nimbus_addresses(address, Config())
    assert str(e.value) == error
    with pytest.raises(ValueError, match=re.escape(error)):
        Client(f"a:1,{address}", config=Config())


def test_client_checks_addresses_without_connecting():
    with Client(["tcp://a:1", "b:02", "c"], config=Config()) as client:
        assert client.addresses == ["a:1", "b:2", "c:6627"]
    with Client(config=Config().merged({"nimbus.port": 7001}, "test")) as client:
        assert client.addresses == ["127.0.0.1:7001"]


def test_did_you_mean_names_up_to_three_close_names():
    assert did_you_mean("wc2", ["wc", "word-count", "other"]) == "; did you mean 'wc'?"
    assert did_you_mean("count", ["counts", "counter", "sink"]) == "; did you mean 'counts' or 'counter'?"
    assert did_you_mean("zzz", ["wc"]) == ""


def test_an_upload_to_no_nimbus_fails_in_the_client_timeout_not_the_upload_timeout(tmp_path):
    """Issue 19: submit with no nimbus running waited the upload's 60 s; now a ping first fails
    in the Client's own timeout, as `list` does."""
    submission = prepare(write_module(tmp_path), base=Config())
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    with Client(address, config=Config(), timeout=0.5) as client:
        start = time.monotonic()
        with pytest.raises(NimbusUnavailable) as e:
            client.upload(submission, timeout=60)
        assert time.monotonic() - start < 5
    assert str(e.value) == f"cannot reach nimbus at {address} within 0.5 s; is `streamgale nimbus` running there?"


# -- config layering ------------------------------------------------------------------------------


def test_config_is_defaults_then_file_then_topology_then_overrides(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("topology.workers: 5\ntopology.message_timeout: 7\n")
    base = load_config(conf)
    path = write_module(tmp_path)

    topology, config = topology_from_file(path, base=base)
    assert config["topology.message_timeout"] == 7  # file over defaults
    assert config["topology.workers"] == 2  # the topology's own config over the file
    assert config["topology.batch_size"] == Config()["topology.batch_size"]  # defaults

    _, config = topology_from_file(path, base=base, config={"topology.workers": 3, "numbers.label": "x"})
    assert config["topology.workers"] == 3 and config["numbers.label"] == "x"  # overrides over all
    _, config = topology_from_file(path, base=base, config=["topology.workers=4"])  # as -c gives them
    assert config["topology.workers"] == 4


def test_build_topology_sees_the_file_and_the_overrides(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("topology.message_timeout: 9\n")
    topology, _ = topology_from_file(write_module(tmp_path, BUILDER_FILE), base=load_config(conf),
                                     config={"topology.workers": 6})
    assert topology.config["numbers.seen"] == [9, 6]


def test_submission_of_a_file_carries_its_layer_ackers_and_package(tmp_path):
    path = write_module(tmp_path)
    (tmp_path / "helper.py").write_text("X = 1\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "junk.pyc").write_bytes(b"\0")

    submission = prepare(path, name="renamed", config={"topology.workers": 3}, base=Config())
    assert submission.name == "renamed" and submission.spec.name == "renamed"
    assert submission.entry == path.name
    assert submission.config == {"topology.workers": 3, "numbers.label": "from-topology"}
    assert submission.spec.components["__acker"].tasks == 3  # one acker per worker by default
    assert members(submission.code) == {path.name, "helper.py"}
    assert submission.code_digest == digest(submission.code)
    assert "code=" not in repr(submission)


def test_a_topology_object_and_its_file_make_the_same_submission():
    from_object = prepare(wc.topology, config={"test.output_dir": "/tmp/x"}, base=Config())
    from_file = prepare(TOPOLOGIES / "cluster_word_count.py", config={"test.output_dir": "/tmp/x"}, base=Config())
    assert from_object == from_file
    assert from_object.entry == "cluster_word_count.py"
    assert "cluster_word_count.py" in members(from_object.code)


def test_an_object_built_by_build_topology_is_found_through_its_components(tmp_path):
    path = write_module(tmp_path, BUILDER_FILE)
    module = import_file(path)
    submission = prepare(module.build_topology(Config()), base=Config())
    assert submission.entry == path.name

    changed = module.build_topology(Config())
    changed.bolt("extra", module.Sink).shuffle("numbers")
    with pytest.raises(TopologyError, match=f"topology 'built' differs from the one {re.escape(str(path))} "
                                            "defines, which is what workers run"):
        prepare(changed, base=Config())


def test_an_object_no_file_defines_is_refused():
    topology = Topology("adhoc")
    topology.spout("sentences", wc.Sentences)
    topology.bolt("split", wc.Split).shuffle("sentences")
    with pytest.raises(TopologyError, match="differs from the one .*cluster_word_count.py defines"):
        prepare(topology, base=Config())

    from streamgale.testing import CapturingBolt, FixedTupleSpout
    only_library = Topology("library")
    only_library.spout("s", FixedTupleSpout([[1]]))
    only_library.bolt("b", CapturingBolt("b")).shuffle("s")
    with pytest.raises(TopologyError, match="cannot tell which file defines topology 'library'"):
        prepare(only_library, base=Config())


def test_code_dir_must_contain_the_topology_file(tmp_path):
    inner = tmp_path / "pkg"
    inner.mkdir()
    path = write_module(inner)
    assert prepare(path, code_dir=tmp_path, base=Config()).entry == f"pkg/{path.name}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(PackageError, match=f"the topology file {re.escape(str(path))} is not inside the code "
                                           f"directory {re.escape(str(elsewhere))}"):
        prepare(path, code_dir=elsewhere, base=Config())


# -- errors, with the messages the command line prints --------------------------------------------


def test_missing_file_and_file_without_topology(tmp_path):
    with pytest.raises(TopologyFileError, match=f"topology file {re.escape(str(tmp_path / 'nope.py'))} does not "
                                                "exist"):
        prepare(tmp_path / "nope.py", base=Config())
    empty = write_module(tmp_path, "x = 1\n")
    with pytest.raises(TopologyFileError, match="defines neither a module-level 'topology' nor a function "
                                                r"'build_topology\(config\)'"):
        (tmp_path / "empty.yaml").write_text("")
        streamgale.submit(empty, nimbus="127.0.0.1:1", config_file=tmp_path / "empty.yaml")  # before any call


def test_invalid_topology_and_bad_overrides_name_the_fault(tmp_path):
    bad = write_module(tmp_path, TOPOLOGY_FILE + "topology.bolt('x', Sink).fields('numbers', 'm')\n")
    with pytest.raises(TopologyError) as e:
        prepare(bad, base=Config())
    assert str(e.value) == (f"invalid topology in {bad}: bolt 'x' groups stream 'default' of 'numbers' by field "
                            "'m', which is not declared (fields: ['n'])")

    good = write_module(tmp_path)
    # Issue 19: a bad override is the override's fault, not the topology file's
    with pytest.raises(ConfigError) as e:
        prepare(good, config={"topology.workrs": 2}, base=Config())
    assert str(e.value) == "unknown config key 'topology.workrs' in config overrides; did you mean 'topology.workers'?"
    with pytest.raises(ConfigError) as e:
        prepare(good, config=["topology.workrs=2"], base=Config())
    assert str(e.value) == "unknown config key 'topology.workrs' in -c option; did you mean 'topology.workers'?"
    with pytest.raises(ConfigError) as e:
        topology_from_file(good, config=["topology.workers=many"], base=Config())
    assert str(e.value) == "config key 'topology.workers' in -c option must be an integer >= 1, got 'many'"
    with pytest.raises(ConfigError) as e:
        prepare(good, config=["topology.workers"], base=Config())
    assert str(e.value) == "-c expects key=value, got 'topology.workers'"
    with pytest.raises(TypeError, match="mapping or a list of 'key=value' strings"):
        prepare(good, config="topology.workers=2", base=Config())

    unsubscribed = Topology("lonely")
    unsubscribed.spout("sentences", wc.Sentences)
    unsubscribed.bolt("split", wc.Split)
    with pytest.raises(TopologyError, match="bolt 'split' subscribes to no stream"):
        prepare(unsubscribed, base=Config())


def test_a_topology_may_not_set_cluster_settings_but_local_overrides_may(tmp_path):
    """Issue 17: a topology's config (or a -c on submit, which becomes part of it) silently set
    cluster-scope keys; `streamgale local` still layers -c over the base config as it likes."""
    sneaky = write_module(tmp_path, TOPOLOGY_FILE.replace('"topology.workers": 2', '"zookeeper.servers": ["evil:2181"]'))
    with pytest.raises(TopologyError, match=re.escape(
            "config key 'zookeeper.servers' in config of topology 'numbers' is a cluster setting; set it in the "
            "daemons' config.yaml, not in a topology")):
        prepare(sneaky, base=Config())
    component = Topology("sneaky-component")
    component.spout("sentences", wc.Sentences, config={"supervisor.local_dir": "/"})
    with pytest.raises(TopologyError, match="config key 'supervisor.local_dir' in config of component 'sentences' "
                                            "is a cluster setting"):
        component.validate()

    good = write_module(tmp_path)
    with pytest.raises(ConfigError, match=re.escape("config key 'nimbus.host' in -c option is a cluster setting")):
        prepare(good, config=["nimbus.host=10.0.0.9"], base=Config())
    _, config = topology_from_file(good, base=Config(), config=["logging_level=DEBUG", "workers=2"])
    assert (config["logging_level"], config["workers"], config["topology.workers"]) == ("DEBUG", 2, 2)


# -- a real cluster -------------------------------------------------------------------------------


@pytest.mark.slow
def test_submit_and_manage_a_topology_object_on_a_cluster(cluster, tmp_path):  # noqa: F811
    config = {"test.output_dir": str(tmp_path / "out"), "test.sentences": 1_000_000, "test.rate": 50}
    topology_id = streamgale.submit(wc.topology, config=config, config_file=cluster.config_file)

    with streamgale.Client(f"127.0.0.1:{cluster.nimbus_port}", config=load_config(cluster.config_file)) as client:
        def shown(status: str, workers: int):
            rows = client.list_topologies()
            return rows if [(r["name"], r["status"], r["workers"]) for r in rows] == [
                ("cluster-wc", status, workers)] else None

        rows = cluster.wait(lambda: shown("ACTIVE", 2), message="cluster-wc ACTIVE on 2 workers")
        assert rows[0]["id"] == topology_id
        with pytest.raises(streamgale.client.AlreadyExists, match="a topology named 'cluster-wc' is already running"):
            client.submit(wc.topology, config=config)

        client.deactivate("cluster-wc")
        cluster.wait(lambda: shown("INACTIVE", 2), message="cluster-wc INACTIVE")
        client.activate("cluster-wc")
        cluster.wait(lambda: shown("ACTIVE", 2), message="cluster-wc ACTIVE again")

        client.rebalance("cluster-wc", wait=0, workers=1)
        cluster.wait(lambda: shown("ACTIVE", 1), message="cluster-wc rebalanced onto 1 worker")
        assert len(client.info("cluster-wc")["assignment"]["slots"]) == 1
        stats = cluster.wait(lambda: (s := client.stats("cluster-wc"))["components"].get("sentences") and s,
                             message="metrics of the spout")
        assert stats["topology"]["id"] == topology_id and isinstance(stats["errors"], dict)
        assert len(client.cluster()["supervisors"]) == 2
        (log,) = client.worker_logs("cluster-wc")
        assert log.endpoint is not None and isinstance(client.read_log(log, max_bytes=100)["data"], bytes)

        client.kill("cluster-wc", wait=0)
        cluster.wait(lambda: client.list_topologies() == [], message="cluster-wc to be gone")
        with pytest.raises(NotFound, match="no topology named 'cluster-wc' is running"):
            client.kill("cluster-wc")


@pytest.mark.slow
def test_the_docs_example_runs_against_a_cluster(cluster, monkeypatch):  # noqa: F811
    (code,) = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "client.md").read_text(), re.S)
    monkeypatch.setenv("STREAMGALE_CONF", str(cluster.config_file))  # the example uses the config in force
    monkeypatch.syspath_prepend(str(ROOT / "examples"))
    exec(compile(code, "docs/client.md", "exec"), {"__name__": "doc_example"})
    with streamgale.Client(config=load_config(cluster.config_file)) as client:
        cluster.wait(lambda: client.list_topologies() == [], message="the example's topology to be killed")

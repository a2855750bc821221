"""Config layering and errors."""

import re

import pytest

from streamgale.config import SETTINGS, Config, ConfigError, is_cluster_key, load_config, topology_config, unknown_keys


def write(tmp_path, text):
    p = tmp_path / "conf.yaml"
    p.write_text(text)
    return p


def test_defaults_match_the_design():
    c = Config()
    assert (c["workers"], c["logging_level"], c["network.port"], c["network.protocol"]) == (4, "INFO", 5555, "zmq")


def test_layers_defaults_file_topology_overrides(tmp_path):
    f = write(tmp_path, "workers: 2\nnetwork:\n  port: 6000\ntopology.workers: 3\n")
    base = load_config(f)
    assert base["workers"] == 2 and base["network.port"] == 6000 and base["topology.workers"] == 3
    c = topology_config(base, {"topology.workers": 5, "my.setting": "x"}, ["topology.workers=7"])
    assert c["topology.workers"] == 7          # -c beats the topology
    assert c["my.setting"] == "x"              # topology's own keys pass through
    assert c["network.port"] == 6000           # the file beats the defaults
    c = topology_config(base, {"topology.workers": 5}, [])
    assert c["topology.workers"] == 5          # the topology beats the file


def test_repo_config_yaml_is_valid():
    c = load_config("config.yaml")
    assert c["network.port"] == 5555


def test_env_var_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("STREAMGALE_CONF", str(write(tmp_path, "workers: 9\n")))
    assert load_config()["workers"] == 9


def test_unknown_key_in_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'wrkers' in config file .*conf.yaml; did you mean 'workers'\?"):
        load_config(write(tmp_path, "wrkers: 2\n"))


def test_unknown_nested_key_in_file(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'network.ports' .*did you mean 'network.port'"):
        load_config(write(tmp_path, "network:\n  ports: 2\n"))


def test_file_is_strict_even_for_free_form_keys(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'whatever'"):
        load_config(write(tmp_path, "whatever: 1\n"))


@pytest.mark.parametrize("text,expected", [
    ("workers: many\n", "config key 'workers' in config file .* must be an integer >= 1, got 'many'"),
    ("workers: 0\n", "must be an integer >= 1, got 0"),
    ("logging_level: LOUD\n", "must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'LOUD'"),
    ("network:\n  port: 70000\n", "'network.port' .* must be a port number \\(1-65535\\), got 70000"),
    ("network:\n  protocol: tcp\n", "'network.protocol' .* must be 'zmq', got 'tcp'"),
    ("zookeeper:\n  servers: ['localhost:99999']\n", "'zookeeper.servers' .* must be a list of host:port "
                                                    "\\(port 2181 if left out\\), got \\['localhost:99999'\\]"),
    ("zookeeper:\n  root: streamgale\n", "'zookeeper.root' .* must be an absolute znode path"),
])
def test_bad_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


def test_a_zookeeper_server_without_a_port_gets_2181(tmp_path):
    config = load_config(write(tmp_path, "zookeeper:\n  servers: [zk1, 'zk2:2182']\n"))
    assert config["zookeeper.servers"] == ("zk1:2181", "zk2:2182")


def test_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="must hold a mapping of keys, got list"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(write(tmp_path, "workers: [\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml")


def test_overrides_are_typed():
    c = Config().with_overrides(["workers=8", "logging_level=debug", "topology.max_spout_pending=null"])
    assert c["workers"] == 8 and c["logging_level"] == "DEBUG" and c["topology.max_spout_pending"] is None


def test_override_errors():
    with pytest.raises(ConfigError, match="-c expects key=value, got 'workers'"):
        Config().with_overrides(["workers"])
    with pytest.raises(ConfigError, match="config key 'workers' in -c option must be an integer"):
        Config().with_overrides(["workers=x"])
    with pytest.raises(ConfigError, match="unknown config key 'topology.wrokers' in -c option; did you mean 'topology.workers'"):
        Config().with_overrides(["topology.wrokers=2"])
    with pytest.raises(ConfigError, match="unknown config key 'network.speed'"):
        Config().with_overrides(["network.speed=2"])


def test_a_config_file_that_is_not_utf8_names_the_file_and_the_byte_offset(tmp_path):
    """Issue 17: a non-UTF-8 file gave a UnicodeDecodeError traceback."""
    p = tmp_path / "conf.yaml"
    p.write_bytes(b"workers: 2\nlogging_level: \xff\xfeINFO\n")
    with pytest.raises(ConfigError, match=rf"config file {p} is not UTF-8 text: byte 0xff at offset 26 cannot be decoded"):
        load_config(p)


@pytest.mark.parametrize("key,value", [
    ("zookeeper.servers", ["evil:2181"]), ("zookeeper.root", "/other"), ("supervisor.local_dir", "/tmp/x"),
    ("nimbus.host", "10.0.0.1"), ("nimbus.task_timeout", 1.0), ("ui.port", 9000), ("network.port", 7000),
    ("workers", 2), ("logging_level", "DEBUG"),
])
def test_a_topology_config_may_not_set_a_cluster_setting(key, value):
    """Issue 17: a topology's own config silently carried cluster-scope keys."""
    expected = (f"config key '{key}' in topology config is a cluster setting; set it in the daemons' config.yaml, "
                f"not in a topology")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        topology_config(Config(), {key: value})
    with pytest.raises(ConfigError, match=re.escape(expected)):
        Config().with_topology_config({key.split(".")[0]: {key.split(".")[1]: value}} if "." in key else {key: value})


def test_the_topology_keeps_its_own_keys_and_overrides_still_set_anything():
    c = topology_config(Config(), {"topology": {"workers": 3}, "wordcount.top_n": 5}, ["logging_level=DEBUG",
                                                                                        "topology.workers=4"])
    assert (c["topology.workers"], c["wordcount.top_n"], c["logging_level"]) == (4, 5, "DEBUG")
    assert [k for k in SETTINGS if is_cluster_key(k) and k.startswith("topology.")] == []
    assert {"workers", "logging_level", "zookeeper.servers", "nimbus.port", "supervisor.local_dir",
            "ui.port", "network.port"} <= {k for k in SETTINGS if is_cluster_key(k)}


def test_unknown_keys_are_the_free_form_ones():
    assert unknown_keys({"topology": {"workers": 2}, "wordcount.top_n": 1, "a.b": {"c": 1}, "c": 2}) == [
        "a.b", "c", "wordcount.top_n"]

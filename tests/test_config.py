"""Config layering and errors."""

import pytest

from streamgale.config import Config, ConfigError, load_config, topology_config


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
    ("zookeeper:\n  servers: [localhost]\n", "'zookeeper.servers' .* must be a list of host:port"),
    ("zookeeper:\n  root: streamgale\n", "'zookeeper.root' .* must be an absolute znode path"),
])
def test_bad_values_name_the_key(tmp_path, text, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config(write(tmp_path, text))


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

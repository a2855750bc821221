"""Per-topology Python environments (supervisor/environments.py): built with the real pip from a
wheelhouse the test makes, shared by topologies with the same requirements, built once under
concurrent builders, pip's error on an unsatisfiable requirement, garbage collection; and how
`submit` follows a topology's start (start_progress)."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import threading

import pytest
from wheels import make_wheel

from streamgale.client import start_progress
from supervisor.environments import READY, BuildError, Environments, environment_key, stale

DEMO = "def shout(n):\n    return f'{n}!'\n\nVERSION = '1.0'\n"
MISSING = "streamgale-no-such-package==1.0"


def package(tmp_path, name="code", requirements="sgdemo==1.0\n", wheel=True, version="1.0"):
    code = tmp_path / name
    code.mkdir()
    (code / "topology.py").write_text("# the topology\n")
    (code / "requirements.txt").write_text(requirements)
    if wheel:
        make_wheel(code / "wheelhouse", "sgdemo", version, DEMO.replace("1.0", version))
    return code


def run_in(python, code: str) -> str:
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                          timeout=60).stdout.strip()


class CountingRun:
    def __init__(self):
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
        return subprocess.run(*args, **kwargs)


def test_the_key_names_the_requirements_and_every_wheel(tmp_path):
    assert environment_key(tmp_path) is None  # no requirements.txt: the supervisor's interpreter
    a = package(tmp_path, "a")
    b = package(tmp_path, "b")
    assert environment_key(a) == environment_key(b)  # same requirements, same wheels: one environment
    (b / "requirements.txt").write_text("sgdemo>=1.0\n")
    assert environment_key(a) != environment_key(b)
    c = package(tmp_path, "c", version="1.0")
    make_wheel(c / "wheelhouse", "sgdemo", "1.0", "VERSION = 'rebuilt'\n")  # same name, other content
    assert environment_key(a) != environment_key(c)


def test_an_environment_has_the_wheelhouse_package_and_streamgale_and_its_own_packages_come_first(tmp_path):
    code = package(tmp_path)
    envs = Environments(tmp_path / "envs")
    key = environment_key(code)
    python = envs.build(key, code)
    assert envs.ready(key) and python == envs.python(key)
    assert run_in(python, "import sgdemo; print(sgdemo.shout(7), sgdemo.VERSION)") == "7! 1.0"
    assert run_in(python, "import streamgale, zmq, msgpack; print('ok')") == "ok"  # the cluster's packages
    prefix, where = run_in(python, "import sys, sgdemo; print(sys.prefix); print(sgdemo.__file__)").splitlines()
    assert prefix == str(envs.path(key)) and where.startswith(prefix)  # installed in the environment itself
    own, cluster = run_in(python, f"import sys, site; print(sys.path.index(site.getsitepackages()[0]), "
                                  f"sys.path.index({sysconfig.get_paths()['purelib']!r}))").split()
    assert int(own) < int(cluster)  # so a topology may pin another version of a package the cluster has


def test_an_unsatisfiable_requirement_raises_pips_error_and_leaves_nothing(tmp_path):
    code = package(tmp_path, requirements=f"{MISSING}\n", wheel=False)
    envs = Environments(tmp_path / "envs")
    key = environment_key(code)
    with pytest.raises(BuildError, match=f"pip install -r requirements.txt failed \\(exit 1\\):\n(.|\n)*"
                                         f"No matching distribution found for {MISSING}"):
        envs.build(key, code)
    assert not envs.ready(key) and not envs.path(key).exists()


def test_concurrent_builders_of_one_environment_run_pip_once(tmp_path):
    code = package(tmp_path)
    run = CountingRun()
    envs = Environments(tmp_path / "envs", run=run)
    key = environment_key(code)
    got, errors = [], []

    def build():
        try:
            got.append(envs.build(key, code))
        except Exception as e:  # noqa: BLE001 - asserted below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and len(got) == 4 and set(got) == {envs.python(key)}
    assert run.calls == 1
    envs.build(key, code)
    assert run.calls == 1  # built once per node


def test_an_interrupted_build_is_redone(tmp_path):
    code = package(tmp_path)
    envs = Environments(tmp_path / "envs")
    key = environment_key(code)
    envs.path(key).mkdir(parents=True)
    (envs.path(key) / "half").write_text("a build killed midway")  # no .ready marker
    assert not envs.ready(key)
    assert run_in(envs.build(key, code), "import sgdemo; print(sgdemo.VERSION)") == "1.0"
    assert not (envs.path(key) / "half").exists()


def test_stale_environments_are_the_unused_ones_past_the_keep_time():
    last = {"a": 100.0, "b": 100.0, "c": 190.0}
    assert stale(last, in_use={"a"}, now=200.0, keep=60.0) == ["b"]
    assert stale(last, in_use=set(), now=200.0, keep=0.0) == ["a", "b", "c"]
    assert stale(last, in_use={"a", "b", "c"}, now=10_000.0, keep=0.0) == []


def test_collect_removes_unused_environments_but_not_one_in_use_or_being_built(tmp_path):
    envs = Environments(tmp_path / "envs")
    for key in ("used", "unused", "building"):
        envs.path(key).mkdir(parents=True)
        (envs.path(key) / READY).touch()
    with envs._locked("building"):
        assert envs.collect({"used"}, now=10**12, keep=0) == ["unused"]
    assert sorted(p.name for p in envs.root.iterdir() if not p.name.startswith(".")) == ["building", "used"]
    assert envs.collect({"used"}, now=0, keep=60) == []  # used within the keep time


def test_start_progress_follows_the_assignment_the_workers_and_refusals():
    assignment = {"slots": {"a:1": {}, "b:1": {}}}
    assert start_progress({"assignment": None, "errors": {}}, {"workers": []}) == (
        "starting", "waiting for an assignment")
    assert start_progress({"assignment": assignment, "errors": {}}, {"workers": [{"port": 1}]}) == (
        "starting", "1 of 2 workers running")
    assert start_progress({"assignment": assignment, "errors": {}}, {"workers": [{}, {}]}) == ("running", "")
    refused = {"__package": [{"time": 1, "message": "old"}, {"time": 2, "message": "pip failed"}]}
    assert start_progress({"assignment": assignment, "errors": refused}, {"workers": [{}]}) == (
        "refused", "pip failed")
    failing = {"__start": [{"time": 1, "message": "bolt 'b' task 3 could not start: prepare() raised ..."}]}
    assert start_progress({"assignment": assignment, "errors": failing}, {"workers": []}) == (
        "failing", "bolt 'b' task 3 could not start: prepare() raised ...")
    # every worker runs: a start error of an earlier try (a database back up) is history
    assert start_progress({"assignment": assignment, "errors": {**refused, **failing}}, {"workers": [{}, {}]}) == (
        "running", "")


def test_a_pinned_version_of_a_package_the_cluster_has_wins_inside_and_the_cluster_keeps_its_own(tmp_path):
    from importlib.metadata import version

    cluster_version = version("sortedcontainers")
    code = package(tmp_path, requirements="sortedcontainers==0.0.1\n", wheel=False)
    make_wheel(code / "wheelhouse", "sortedcontainers", "0.0.1", "VERSION = 'the topology pinned me'\n")
    envs = Environments(tmp_path / "envs")
    python = envs.build(environment_key(code), code)
    assert run_in(python, "import sortedcontainers; print(sortedcontainers.VERSION)") == "the topology pinned me"
    assert version("sortedcontainers") == cluster_version
    assert run_in(sys.executable, "import sortedcontainers; print(hasattr(sortedcontainers, 'SortedList'))") == "True"

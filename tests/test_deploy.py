"""deploy/: the image, compose, Kubernetes and systemd files, checked without a container engine.

Linters as the issue asks (hadolint, shellcheck, yamllint, the Kubernetes schemas, checkov,
systemd-analyze), the facts each file must keep (ports, probes, replicas, versions), and the
image's entrypoint script run outside a container: its command lines against a stand-in
``streamgale``, then a real cluster started through it (slow).

Kustomize: ``base/`` is plain YAML whose kustomization.yaml lists only ``resources``, so the
rendering is the listed files themselves; each is validated against the schemas. Where a
kustomize is installed (``kubectl kustomize``, or ``kustomize``), the rendering of base/ and
of the example overlay is checked against that too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, wait_for

from streamgale.config import load_config
from streamgale.dev.cluster import find_workers
from streamgale.dev.ports import free_port, free_port_range

sys.path.insert(0, str(ROOT / "tests" / "topologies"))
import cluster_word_count as wc  # noqa: E402

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
ENTRYPOINT = DEPLOY / "docker" / "entrypoint.sh"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
KUSTOMIZE_BASE = DEPLOY / "kubernetes" / "base"
OVERLAY = DEPLOY / "kubernetes" / "overlays" / "example"
SYSTEMD = DEPLOY / "systemd"
VERSION = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
BIN = Path(sys.executable).parent  # the test environment's bin: streamgale and the linters
# Kubernetes versions the manifests must be valid for: an old one still in wide use, and the newest
# the installed kubernetes-validate knows.
K8S_OLDEST = "1.29.0"
# checkov pins packaging<24 and networkx<2.7, which would downgrade the test environment (setuptools
# needs a newer packaging to build the hot path; torch uses networkx): it gets a virtual environment
# of its own, made on first use beside the test environment.
CHECKOV = "checkov==3.3.30"
CHECKOV_ENV = Path(sys.prefix) / "tools" / "checkov"


def tool(name: str) -> str:
    """The linter ``name`` from the test environment (the `test` extra), else PATH; skip without it."""
    found = BIN / name if (BIN / name).exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: .venv/bin/pip install -e '.[test]'")
    return str(found)


def run(args, timeout=60, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout,
                          cwd=kwargs.pop("cwd", ROOT), **kwargs)


def yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomize_resources() -> list[Path]:
    kustomization = yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())
    return [KUSTOMIZE_BASE / name for name in kustomization["resources"]]


def rendered_base() -> list[dict]:
    """What kustomize renders from base/: its resources, as they are (see the module's docstring)."""
    return [doc for path in kustomize_resources() for doc in yaml_docs(path)]


def resource(kind: str, name: str) -> dict:
    for doc in rendered_base():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in deploy/kubernetes/base")


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def k8s_config() -> dict:
    return yaml.safe_load(resource("ConfigMap", "streamgale-config")["data"]["config.yaml"])


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity as a number: CPUs for cpu, MiB for memory ("2250m" -> 2.25, "2Gi" -> 2048)."""
    text = str(value)
    for suffix, factor in (("m", 0.001), ("Mi", 1), ("Gi", 1024)):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)


# -- the image ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    result = run([tool("hadolint"), "--failure-threshold", "info", DOCKERFILE])
    assert result.returncode == 0, result.stdout + result.stderr
    # Every ignore says why, on the lines just above it.
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            assert lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], f"unexplained ignore: {line}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).startswith("#")]


def test_dockerfile_declares_the_image_contract():
    instructions = dockerfile_instructions()
    final = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM"):]
    ops = dict(final)  # the image's own instructions (the last stage)
    assert all(args.startswith("python:3.11-slim") for op, args in instructions if op == "FROM")
    assert ops["USER"] == "10001:10001"
    assert "--uid 10001" in ops["RUN"] and "--gid 10001" in ops["RUN"]
    assert set(ops["EXPOSE"].split()) == {"6627", "5555-5558", "8080", "8081"}
    assert json.loads(ops["VOLUME"]) == ["/var/lib/streamgale", "/var/log/streamgale"]
    assert json.loads(ops["ENTRYPOINT"]) == ["streamgale-entrypoint"]
    assert ops["HEALTHCHECK"].endswith('CMD ["streamgale-entrypoint", "healthcheck"]')
    assert "STREAMGALE_CONF=/etc/streamgale/config.yaml" in ops["ENV"]
    copies = [args for op, args in final if op == "COPY"]
    assert "--chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/streamgale-entrypoint" in copies
    assert "deploy/docker/config.yaml /etc/streamgale/config.yaml" in copies
    built = next(args for op, args in instructions if op == "RUN" and "pip install" in args)
    assert "pip install --no-cache-dir ." in built  # StreamGale from the repository, the build context
    # The build context is the repository root: nothing built or secret here goes into it.
    ignored = (ROOT / ".dockerignore").read_text().split()
    for entry in (".git", ".venv", "**/*.so", "build/", "streamgale/_build.json", "**/*.key_secret"):
        assert entry in ignored, entry


def test_image_config_is_valid_and_listens_for_the_probes():
    config = load_config(DEPLOY / "docker" / "config.yaml")
    assert config["network.bind"] == "0.0.0.0"  # so the HEALTHCHECK reaches it on 127.0.0.1
    assert str(config["supervisor.local_dir"]) == "/var/lib/streamgale/supervisor"  # the data volume
    # The default slot range is what the image exposes.
    assert (config["network.port"], config["workers"]) == (5555, 4)


def test_entrypoint_passes_shellcheck():
    result = run([tool("shellcheck"), "--shell=sh", "--severity=style", ENTRYPOINT])
    assert result.returncode == 0, result.stdout + result.stderr
    assert ENTRYPOINT.read_text().startswith("#!/bin/sh\n")
    assert os.access(ENTRYPOINT, os.X_OK)


@pytest.fixture
def fake_streamgale(tmp_path):
    """A PATH whose ``streamgale`` prints its arguments one per line (and its STREAMGALE_CONF) and exits
    0, and a config file: the entrypoint's command lines, read without starting anything."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "streamgale"
    fake.write_text('#!/bin/sh\necho "conf=$STREAMGALE_CONF"\nfor a in "$@"; do echo "$a"; done\n')
    fake.chmod(0o755)
    config = tmp_path / "config.yaml"
    config.write_text("workers: 2\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGALE_")}
    env = {**clean, "PATH": f"{bin_dir}:/usr/bin:/bin", "STREAMGALE_CONF": str(config),
           "STREAMGALE_RUN_DIR": str(tmp_path / "run")}

    def entry(*args, **extra_env):
        result = run([ENTRYPOINT, *args], env={**env, **extra_env}, timeout=10)
        return result.returncode, result.stdout.splitlines(), result.stderr
    entry.tmp_path = tmp_path
    entry.config = config
    return entry


def test_entrypoint_maps_each_role_to_its_command(fake_streamgale):
    entry, run_dir = fake_streamgale, fake_streamgale.tmp_path / "run"
    code, out, _ = entry("nimbus", "-c", "logging_level=DEBUG")
    assert code == 0 and out == [f"conf={entry.config}", "nimbus", "--health-port", "8081", "-c", "logging_level=DEBUG"]
    assert (run_dir / "health-port").read_text() == "8081\n"

    code, out, _ = entry("nimbus", STREAMGALE_HOST="nimbus-0.streamgale-nimbus", STREAMGALE_HEALTH_PORT="9001")
    assert out[1:] == ["nimbus", "--health-port", "9001", "--host", "nimbus-0.streamgale-nimbus"]

    # A supervisor advertises the container's hostname unless told otherwise, and stops its workers.
    code, out, _ = entry("supervisor", "-c", "workers=8", STREAMGALE_NIMBUS="n1:6627,n2:6627")
    assert out[1:] == ["--nimbus", "n1:6627,n2:6627", "supervisor", "--host", os.uname().nodename,
                       "--health-port", "8081", "--shutdown-workers", "-c", "workers=8"]
    code, out, _ = entry("supervisor", STREAMGALE_HOST="10.1.2.3", STREAMGALE_SHUTDOWN_WORKERS="false",
                         STREAMGALE_HEALTH_PORT="")
    assert out[1:] == ["supervisor", "--host", "10.1.2.3"]  # no probes asked for: none served

    code, out, _ = entry("ui", "--timeout", "5", STREAMGALE_NIMBUS="n1:6627")
    assert out[1:] == ["--nimbus", "n1:6627", "ui", "--host", "0.0.0.0", "--port", "8080", "--timeout", "5"]
    assert (run_dir / "health-port").read_text() == "8080\n"  # the UI answers probes on its own port

    # healthcheck (the image's HEALTHCHECK) asks the port the daemon was started with.
    code, out, _ = entry("healthcheck")
    assert out[1:] == ["health", "--host", "127.0.0.1", "--port", "8080", "--ready"]
    (run_dir / "health-port").unlink()
    code, out, _ = entry("healthcheck")
    assert out[1:] == ["health", "--host", "127.0.0.1", "--port", "8081", "--ready"]

    code, out, _ = entry("streamgale", "list", "--json", STREAMGALE_NIMBUS="n1:6627")
    assert code == 0 and out[1:] == ["--nimbus", "n1:6627", "list", "--json"]


def test_entrypoint_refuses_an_unknown_role_or_a_missing_config(fake_streamgale):
    code, out, err = fake_streamgale("zookeeper")
    assert code == 2 and out == []
    assert "unknown role 'zookeeper'" in err and "nimbus, supervisor, ui" in err
    code, out, err = fake_streamgale()
    assert code == 2 and "no role given" in err
    code, out, err = fake_streamgale("nimbus", STREAMGALE_CONF="/nonexistent/config.yaml")
    assert code == 1 and out == []
    assert "config file /nonexistent/config.yaml not found" in err


def test_entrypoint_makes_private_copies_of_mounted_secrets(fake_streamgale):
    # As Kubernetes mounts a Secret with fsGroup: group-readable files beside its ..data links.
    mounted = fake_streamgale.tmp_path / "mounted"
    (mounted / "..2026_01_01" / "keys").mkdir(parents=True)
    (mounted / "..2026_01_01" / "ui-token").write_text("s3cret\n")
    (mounted / "..2026_01_01" / "keys" / "daemon.key_secret").write_text("key\n")
    for path in (mounted / "..2026_01_01").rglob("*"):
        path.chmod(0o750 if path.is_dir() else 0o440)
    (mounted / "..data").symlink_to("..2026_01_01")
    (mounted / "ui-token").symlink_to("..data/ui-token")
    (mounted / "keys").symlink_to("..data/keys")
    private = fake_streamgale.tmp_path / "private"

    code, out, err = fake_streamgale("ui", STREAMGALE_SECRETS_FROM=str(mounted), STREAMGALE_SECRETS_DIR=str(private))
    assert code == 0, err
    assert sorted(p.name for p in private.iterdir()) == ["keys", "ui-token"]  # not the ..data entries
    for path in [private, *private.rglob("*")]:
        assert not path.is_symlink()
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path  # what StreamGale accepts for secrets
    assert (private / "ui-token").read_text() == "s3cret\n"
    assert (private / "keys" / "daemon.key_secret").read_text() == "key\n"

    code, _, err = fake_streamgale("ui", STREAMGALE_SECRETS_FROM=str(fake_streamgale.tmp_path / "missing"))
    assert code == 2 and "is not a directory" in err


# -- YAML, compose ---------------------------------------------------------------------------------


def test_every_yaml_file_passes_yamllint():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))
    assert len(files) >= 14
    result = run([tool("yamllint"), "--strict", "-c", DEPLOY / ".yamllint.yaml", *files])
    assert result.returncode == 0, result.stdout + result.stderr


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # PyYAML resolves the file's anchors and << merges


def test_compose_runs_a_highly_available_cluster():
    services = compose()["services"]
    assert {"zookeeper", "nimbus-1", "nimbus-2", "supervisor", "ui"} <= set(services)
    assert services["zookeeper"]["image"] == "zookeeper:3.9"
    streamgale = {name: s for name, s in services.items() if name != "zookeeper"}
    for name, service in streamgale.items():
        assert service["image"] == f"streamgale:{VERSION}", name
        assert service["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}, name
        assert "./config.yaml:/etc/streamgale/config.yaml:ro" in service["volumes"], name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
    nimbuses = ["nimbus-1", "nimbus-2"]
    every_nimbus = ",".join(f"{n}:6627" for n in nimbuses)
    for name in nimbuses:  # each advertises its service name; clients list both
        assert services[name]["command"] == ["nimbus", "-c", f"nimbus.host={name}"]
        assert services[name]["depends_on"] == {"zookeeper": {"condition": "service_healthy"}}
    for name in ("supervisor", "ui", "client"):
        assert services[name]["environment"]["STREAMGALE_NIMBUS"] == every_nimbus, name
        conditions = {dep: c["condition"] for dep, c in services[name]["depends_on"].items()}
        assert set(conditions) & set(nimbuses) and set(conditions.values()) == {"service_healthy"}, name

    # Supervisors scale: replicas, and nothing that two replicas could not both have.
    supervisor = services["supervisor"]
    assert supervisor["command"] == ["supervisor"] and supervisor["deploy"]["replicas"] >= 2
    assert "ports" not in supervisor and "container_name" not in supervisor and "hostname" not in supervisor
    assert not any(v.split(":")[0] in compose().get("volumes", {}) for v in supervisor["volumes"])

    ports = {name: [p.split(":", 1)[1] for p in s.get("ports", [])] for name, s in services.items()}
    assert ports["nimbus-1"] == ["6627:6627"] and ports["nimbus-2"] == ["6628:6627"] and ports["ui"] == ["8080:8080"]
    assert all(p.startswith("127.0.0.1:") for s in services.values() for p in s.get("ports", []))

    for name, service in services.items():
        if name == "client":
            continue
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
    for name in ("nimbus-1", "nimbus-2", "supervisor"):
        assert services[name]["healthcheck"]["test"][1:] == ["streamgale", "health", "--host", "127.0.0.1",
                                                             "--port", "8081", "--ready"]
    assert services["ui"]["healthcheck"]["test"][-3:] == ["--port", "8080", "--ready"]
    assert services["zookeeper"]["healthcheck"]["test"] == ["CMD", "zkServer.sh", "status"]

    assert services["ui"]["secrets"] == ["ui-token"] and compose()["secrets"]["ui-token"] == {"file": "./secrets/ui-token"}
    assert services["ui"]["environment"]["STREAMGALE_SECRETS_FROM"] == "/run/secrets"


def test_compose_config_is_valid_and_matches_the_compose_file():
    config = load_config(DEPLOY / "compose" / "config.yaml")
    assert config["zookeeper.servers"] == ("zookeeper:2181",)
    assert config["network.bind"] == "0.0.0.0"
    assert str(config["supervisor.local_dir"]) == "/var/lib/streamgale/supervisor"
    assert str(config["ui.token_file"]) == "/run/streamgale/secrets/ui-token"  # where the entrypoint copies it
    assert "/run/streamgale" in compose()["services"]["ui"]["tmpfs"]


# -- Kubernetes -------------------------------------------------------------------------------------


def test_kustomization_is_plain_and_lists_every_manifest():
    kustomization = yaml.safe_load((KUSTOMIZE_BASE / "kustomization.yaml").read_text())
    # Only resources: what kustomize renders is then exactly these files (the module's docstring).
    assert set(kustomization) == {"apiVersion", "kind", "resources"}
    listed = {p.name for p in kustomize_resources()}
    on_disk = {p.name for p in KUSTOMIZE_BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", [K8S_OLDEST, "latest"])
def test_kubernetes_manifests_match_the_schemas(version):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    if version == "latest":
        version = kubernetes_validate.latest_version()
    kinds = Counter()
    for path in kustomize_resources():
        for doc in yaml_docs(path):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{path.name}: {doc['kind']} {doc['metadata']['name']} (Kubernetes {version}): "
                            f"{e.message} at {'/'.join(map(str, e.path))}")
            kinds[doc["kind"]] += 1
    assert kinds == Counter({"Namespace": 1, "ConfigMap": 2, "Service": 3, "StatefulSet": 2, "Deployment": 2,
                             "PodDisruptionBudget": 1, "NetworkPolicy": 2})


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    return None


def test_kustomize_renders_base_as_the_files_and_the_overlay_validates():
    command = kustomize_command()
    if command is None:
        pytest.skip("no kustomize here (kustomize or kubectl): base/ is checked file by file only")
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    result = run([*command, KUSTOMIZE_BASE])
    assert result.returncode == 0, result.stderr

    def key(doc):
        return doc["kind"], doc["metadata"]["name"]
    assert sorted(yaml.safe_load_all(result.stdout), key=key) == sorted(rendered_base(), key=key)

    result = run([*command, OVERLAY])
    assert result.returncode == 0, result.stderr
    overlay = list(yaml.safe_load_all(result.stdout))
    for doc in overlay:
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)
    supervisor = next(d for d in overlay if key(d) == ("Deployment", "streamgale-supervisor"))
    assert supervisor["spec"]["replicas"] == 4
    assert pod_spec(supervisor)["containers"][0]["image"] == f"registry.example.com/streamgale:{VERSION}"


def containers():
    for doc in rendered_base():
        if doc["kind"] in ("StatefulSet", "Deployment"):
            for container in pod_spec(doc)["containers"]:
                yield doc, container


def test_kubernetes_pods_run_hardened_and_versioned():
    for workload, container in containers():
        name = f"{workload['metadata']['name']}/{container['name']}"
        image, _, tag = container["image"].partition(":")
        assert tag and tag != "latest", name
        if image == "streamgale":
            assert tag == VERSION, name  # the version pyproject.toml builds
            assert workload["metadata"]["labels"]["app.kubernetes.io/version"] == VERSION, name
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}, name
        assert {"requests", "limits"} <= set(container["resources"]), name
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, name  # the root file system is read-only
        if image == "streamgale":
            assert pod["securityContext"]["runAsUser"] == 10001, name  # the image's user
            assert {"/etc/streamgale", "/run/streamgale"} <= mounts, name


def probes(container) -> dict[str, tuple[str, str]]:
    return {kind: (container[kind]["httpGet"]["path"], container[kind]["httpGet"]["port"])
            for kind in ("startupProbe", "livenessProbe", "readinessProbe") if kind in container}


def test_kubernetes_probes_ask_the_health_endpoints():
    by_role = {c["args"][0]: c for _, c in containers() if c.get("args")}
    assert set(by_role) == {"nimbus", "supervisor", "ui"}
    for role in ("nimbus", "supervisor"):
        container = by_role[role]
        assert {"name": "health", "containerPort": 8081} in container["ports"], role
        assert {"name": "STREAMGALE_HEALTH_PORT", "value": "8081"} in container["env"], role
        assert probes(container) == {"startupProbe": ("/healthz", "health"), "livenessProbe": ("/healthz", "health"),
                                     "readinessProbe": ("/readyz", "health")}, role
    ui = by_role["ui"]
    assert probes(ui) == {"livenessProbe": ("/healthz", "http"), "readinessProbe": ("/readyz", "http")}
    for kind in ("livenessProbe", "readinessProbe"):  # the UI answers only to names it knows
        assert ui[kind]["httpGet"]["httpHeaders"] == [{"name": "Host", "value": "localhost"}]


def test_nimbus_is_a_statefulset_of_two_with_a_disruption_budget():
    nimbus = resource("StatefulSet", "streamgale-nimbus")
    service = resource("Service", "streamgale-nimbus")
    budget = resource("PodDisruptionBudget", "streamgale-nimbus")
    assert nimbus["spec"]["replicas"] == 2
    assert nimbus["spec"]["serviceName"] == "streamgale-nimbus"
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    labels = nimbus["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    container = pod_spec(nimbus)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMGALE_HOST"]["value"] == "$(POD_NAME).streamgale-nimbus"  # its stable DNS name
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # Supervisors and the UI know every nimbus by that name.
    every_nimbus = ",".join(f"streamgale-nimbus-{i}.streamgale-nimbus:6627" for i in range(2))
    for name in ("streamgale-supervisor", "streamgale-ui"):
        container = pod_spec(resource("Deployment", name))["containers"][0]
        assert {"name": "STREAMGALE_NIMBUS", "value": every_nimbus} in container["env"], name


def test_supervisor_pods_are_sized_for_their_slots():
    config = k8s_config()
    slots = config["workers"]
    supervisor = resource("Deployment", "streamgale-supervisor")
    container = pod_spec(supervisor)["containers"][0]
    assert supervisor["spec"]["template"]["metadata"]["annotations"]["streamgale.io/slots"] == str(slots)
    slot_ports = sorted(p["containerPort"] for p in container["ports"] if p["name"].startswith("slot-"))
    first = config["network"]["port"]
    assert slot_ports == list(range(first, first + slots))
    # The sizing the manifest's comment explains: per slot 500m (limit 1) CPU and 512Mi, plus the
    # supervisor's own 250m (limit 500m) and 256Mi.
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert quantity(requests["cpu"]) == pytest.approx(slots * 0.5 + 0.25)
    assert quantity(limits["cpu"]) == pytest.approx(slots * 1 + 0.5)
    assert quantity(requests["memory"]) == quantity(limits["memory"]) == slots * 512 + 256
    env = {e["name"]: e for e in container["env"]}
    assert env["STREAMGALE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert pod_spec(supervisor)["terminationGracePeriodSeconds"] >= 15  # it stops its workers first


def test_kubernetes_config_map_holds_a_valid_config(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(resource("ConfigMap", "streamgale-config")["data"]["config.yaml"])
    config = load_config(path)
    assert config["network.bind"] == "0.0.0.0"  # the pod's IP and loopback
    assert config["zookeeper.servers"] == ("streamgale-zookeeper:2181",)
    assert resource("Service", "streamgale-zookeeper")["spec"]["ports"][0]["port"] == 2181
    assert str(config["supervisor.local_dir"]).startswith("/var/lib/streamgale/")  # the data emptyDir
    assert str(config["ui.token_file"]) == "/run/streamgale/secrets/ui-token"  # the entrypoint's private copy


def test_ui_gets_its_token_from_a_secret():
    ui = pod_spec(resource("Deployment", "streamgale-ui"))
    volumes = {v["name"]: v for v in ui["volumes"]}
    assert volumes["ui-token"]["secret"]["secretName"] == "streamgale-ui-token"
    container = ui["containers"][0]
    assert {"name": "STREAMGALE_SECRETS_FROM", "value": "/etc/streamgale-secrets"} in container["env"]
    assert {"name": "ui-token", "mountPath": "/etc/streamgale-secrets", "readOnly": True} in container["volumeMounts"]
    assert resource("Service", "streamgale-ui")["spec"]["ports"][0]["port"] == 8080


@pytest.fixture(scope="module")
def checkov():
    """checkov, from PATH or its own virtual environment (made here on first use, about a minute)."""
    found = shutil.which("checkov")
    if found:
        return found
    binary = CHECKOV_ENV / "bin" / "checkov"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", CHECKOV_ENV], check=True, timeout=120)
        result = run([CHECKOV_ENV / "bin" / "pip", "install", "-q", CHECKOV], timeout=900)
        if result.returncode != 0:
            shutil.rmtree(CHECKOV_ENV, ignore_errors=True)
            pytest.fail(f"installing {CHECKOV} into {CHECKOV_ENV} failed:\n{result.stderr[-3000:]}")
    return str(binary)


@pytest.mark.slow
def test_checkov_finds_nothing_in_deploy(checkov):
    result = run([checkov, "--config-file", DEPLOY / ".checkov.yaml", "-d", DEPLOY, "-o", "json"], timeout=300)
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    by_type = {r["check_type"]: r for r in reports}
    assert {"kubernetes", "kustomize", "dockerfile"} <= set(by_type), result.stderr[-2000:]
    failed = [f"{r['check_type']}: {f['check_id']} {f['check_name']} in {f['file_path']} ({f['resource']})"
              for r in reports for f in r["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    assert by_type["kubernetes"]["summary"]["passed"] > 100  # it did look
    assert result.returncode == 0


# -- systemd ----------------------------------------------------------------------------------------


def unit(name: str) -> dict[str, list[str]]:
    """KEY -> values of a unit file (sections merged: the keys differ between them here)."""
    values: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.parametrize("role", ["nimbus", "supervisor", "ui"])
def test_systemd_unit_runs_the_daemon_as_an_operator_expects(role):
    values = {k: v[-1] for k, v in unit(f"streamgale-{role}.service").items()}
    assert values["User"] == values["Group"] == "streamgale"
    assert values["ConfigurationDirectory"] == values["StateDirectory"] == values["LogsDirectory"] == "streamgale"
    assert values["Environment"] != "" and "STREAMGALE_CONF=/etc/streamgale/config.yaml" in unit(
        f"streamgale-{role}.service")["Environment"]
    exec_start = values["ExecStart"].split()
    assert exec_start[0] == "/opt/streamgale/bin/streamgale" and role in exec_start
    assert values["Restart"] == "on-failure" and values["RestartSec"] == "5s"
    assert values["StartLimitIntervalSec"] == "0"  # it never gives up waiting for ZooKeeper
    assert values["KillSignal"] == "SIGTERM"
    if role == "supervisor":
        assert "--shutdown-workers" in exec_start and values["KillMode"] == "mixed"
        assert int(values["TimeoutStopSec"].rstrip("s")) >= 15  # workers get 5 s, then SIGKILL
    if role != "ui":
        assert "--health-port" in exec_start and "--host" in exec_start
    assert values["NoNewPrivileges"] == "yes" and values["PrivateTmp"] == "yes"
    assert values["ProtectSystem"] == "strict"
    assert set(values["ReadWritePaths"].split()) == {"/var/lib/streamgale", "/var/log/streamgale"}
    assert values["WantedBy"] == "multi-user.target"
    config = load_config(SYSTEMD / "config.yaml")
    assert str(config["supervisor.local_dir"]).startswith("/var/lib/streamgale/")  # the StateDirectory


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (no systemd)")
    # verify checks that ExecStart's program exists: point it at this environment's streamgale.
    for path in SYSTEMD.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/streamgale/bin/streamgale",
                                                                   str(BIN / "streamgale")))
    result = run([analyze, "verify", *sorted(tmp_path.glob("*.service"))], cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr
    assert len(list(tmp_path.glob("*.service"))) == 3


# -- docs ---------------------------------------------------------------------------------------------


def test_readme_points_to_the_deployment_guide():
    readme = (ROOT / "README.md").read_text()
    deploy = readme.index("\n## Deploy\n")
    assert deploy < readme.index("\n## Configuration\n")
    assert "docs/deployment.md" in readme[deploy:readme.index("\n## Configuration\n")]
    guide = (ROOT / "docs" / "deployment.md").read_text()
    for link in ("security.md", "configuration.md", "ui.md"):
        assert f"]({link}" in guide, link
    for path in ("deploy/docker/Dockerfile", "deploy/compose/docker-compose.yml", "deploy/kubernetes/base",
                 "deploy/systemd/README.md", "deploy/kubernetes/overlays/example"):
        assert path in guide, path


# -- a real cluster through the entrypoint (slow) -----------------------------------------------------


class Daemons:
    """Processes started through the entrypoint, each in its own session with its log in a file; all
    killed at teardown (with the workers they started), whatever happened."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        with open(self.dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([str(ENTRYPOINT), *args], env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs[name] = proc
        return proc

    def check_alive(self) -> None:
        gone = [f"{n} (status {p.returncode})" for n, p in self.procs.items() if p.poll() is not None]
        if gone:
            raise AssertionError(f"{', '.join(gone)} exited\n{self.logs()}")

    def logs(self) -> str:
        files = sorted(self.dir.glob("*.log")) + sorted(self.dir.glob("**/worker.log"))
        return "\n".join(f"===== {f.name} =====\n{f.read_text(errors='replace')[-3000:]}" for f in files)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        for process, _ in find_workers(self.dir):
            process.kill()


@pytest.fixture
def daemons(tmp_path, request):
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(d.logs())
        d.close()


def entrypoint_env(config: Path, run_dir: Path, **extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGALE_")}
    return {**clean, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}", "STREAMGALE_CONF": str(config),
            "STREAMGALE_RUN_DIR": str(run_dir), **extra}


def health(port: int, ready: bool = True) -> subprocess.CompletedProcess[str]:
    return run([BIN / "streamgale", "health", "--host", "127.0.0.1", "--port", port, *(["--ready"] if ready else [])],
               timeout=15)


def cluster_config(tmp_path: Path, zookeeper, zk_root: str, **settings) -> tuple[Path, int]:
    nimbus_port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "zookeeper.servers": [zookeeper.address], "zookeeper.root": zk_root, "zookeeper.session_timeout": 4.0,
        "nimbus.host": "127.0.0.1", "nimbus.port": nimbus_port, **settings}))
    return config, nimbus_port


def wait_ready(daemons: Daemons, port: int, what: str, timeout: float = 60) -> None:
    def ready():
        daemons.check_alive()
        return health(port).returncode == 0
    wait_for(ready, timeout=timeout, interval=0.25, message=f"{what} to be ready on health port {port}")


def final_counts(out: Path) -> Counter:
    finals: Counter = Counter()
    for f in out.glob("sink-*.txt"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) == 5:
                finals[parts[0]] = max(finals[parts[0]], int(parts[1]))
    return finals


@pytest.mark.slow
def test_entrypoint_starts_a_cluster_that_runs_a_topology(tmp_path, zookeeper, zk_root, daemons):
    slots = 2
    config, nimbus_port = cluster_config(tmp_path, zookeeper, zk_root, workers=slots,
                                         **{"network.port": free_port_range(slots),
                                            "supervisor.local_dir": str(tmp_path / "supervisor")})
    nimbus_health, supervisor_health = free_port(), free_port()
    nimbus_env = entrypoint_env(config, tmp_path / "run-nimbus", STREAMGALE_HEALTH_PORT=str(nimbus_health))
    supervisor_env = entrypoint_env(config, tmp_path / "run-supervisor", STREAMGALE_HEALTH_PORT=str(supervisor_health),
                                    STREAMGALE_HOST="127.0.0.1", STREAMGALE_NIMBUS=f"127.0.0.1:{nimbus_port}")
    nimbus = daemons.start("nimbus", ["nimbus"], nimbus_env)
    supervisor = daemons.start("supervisor", ["supervisor"], supervisor_env)

    wait_ready(daemons, nimbus_health, "nimbus")
    wait_ready(daemons, supervisor_health, "the supervisor")
    assert health(nimbus_health, ready=False).returncode == 0  # alive too
    # The image's HEALTHCHECK: the entrypoint asks the port it noted for this daemon.
    for env in (nimbus_env, supervisor_env):
        check = run([ENTRYPOINT, "healthcheck"], env=env, timeout=15)
        assert check.returncode == 0, check.stdout + check.stderr
    # exec: the processes started are the daemons themselves, so SIGTERM reaches them.
    import psutil

    for proc, role in ((nimbus, "nimbus"), (supervisor, "supervisor")):
        cmdline = psutil.Process(proc.pid).cmdline()
        assert Path(cmdline[0]).name not in ("sh", "dash", "bash") and role in cmdline, cmdline

    out = tmp_path / "out"
    submitted = run([ENTRYPOINT, "streamgale", "submit", ROOT / "tests" / "topologies" / "cluster_word_count.py",
                     "-c", f"test.output_dir={out}", "-c", "test.sentences=500"], env=supervisor_env, timeout=60)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr + daemons.logs()

    def counted():
        daemons.check_alive()
        return final_counts(out) == wc.expected_counts(500)
    wait_for(counted, timeout=90, interval=0.5, message="the topology's counts")
    assert len(find_workers(tmp_path)) == slots

    # SIGTERM: the supervisor stops its workers (the entrypoint's default in a container) and exits 0,
    # then nimbus.
    started = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0, daemons.logs()
    assert not find_workers(tmp_path)
    nimbus.send_signal(signal.SIGTERM)
    assert nimbus.wait(timeout=30) == 0, daemons.logs()
    assert time.monotonic() - started < 30
    assert health(nimbus_health, ready=False).returncode == 1  # gone


@pytest.mark.slow
def test_entrypoint_runs_the_ui_ready_once_it_reaches_nimbus(tmp_path, zookeeper, zk_root, daemons):
    config, nimbus_port = cluster_config(tmp_path, zookeeper, zk_root)
    nimbus_health, ui_port = free_port(), free_port()
    daemons.start("nimbus", ["nimbus"],
                  entrypoint_env(config, tmp_path / "run-nimbus", STREAMGALE_HEALTH_PORT=str(nimbus_health)))
    # On loopback the UI needs no token file (docs/ui.md); in a container it listens on 0.0.0.0 with one.
    ui_env = entrypoint_env(config, tmp_path / "run-ui", STREAMGALE_UI_HOST="127.0.0.1",
                            STREAMGALE_UI_PORT=str(ui_port), STREAMGALE_NIMBUS=f"127.0.0.1:{nimbus_port}")
    ui = daemons.start("ui", ["ui"], ui_env)
    wait_ready(daemons, nimbus_health, "nimbus")
    wait_ready(daemons, ui_port, "the UI")
    check = run([ENTRYPOINT, "healthcheck"], env=ui_env, timeout=15)
    assert check.returncode == 0, check.stdout + check.stderr
    ui.send_signal(signal.SIGTERM)  # what docker stop, Kubernetes and systemd send
    assert ui.wait(timeout=15) == 0, daemons.logs()

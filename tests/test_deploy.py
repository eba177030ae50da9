"""What ships: the Dockerfile, the Kubernetes and Cloud Run manifests, and deploy/setup.sh.

No container engine or cluster runs here, so each is checked by the field's own offline
tool (hadolint, kubernetes-validate against the Kubernetes OpenAPI schemas, shellcheck)
and by tests of the rules the README promises; setup.sh runs for real against a
stand-in `gcloud` (tests/fakes/gcloud) that remembers what it was asked to create.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import PROJECT_ROOT

BIN = Path(sys.executable).parent
DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
KUBERNETES = sorted((PROJECT_ROOT / "deploy" / "kubernetes").glob("*.yaml"))
CLOUD_RUN = PROJECT_ROOT / "deploy" / "cloudrun" / "service.yaml"
SETUP = PROJECT_ROOT / "deploy" / "setup.sh"


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.skip(f"{name} is not installed (requirements-dev.txt installs it)")
    return str(path)


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [tool("hadolint"), "--failure-threshold", "info", "Dockerfile"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_is_multi_stage_on_a_pinned_slim_base():
    bases = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
    assert len(bases) >= 2
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), base


def test_dockerfile_installs_the_pinned_requirements_and_no_dev_tools():
    assert "COPY requirements.txt" in DOCKERFILE
    assert re.search(r"pip install .*-r \S*requirements\.txt", DOCKERFILE)
    assert "requirements-dev" not in DOCKERFILE
    ignored = (PROJECT_ROOT / ".dockerignore").read_text().splitlines()
    assert "receiver/dev/" in ignored and "*" in ignored  # only what is listed goes in


def test_dockerfile_runs_gunicorn_as_a_numeric_non_root_user_with_a_healthcheck():
    assert re.search(r"^USER \d+:\d+$", DOCKERFILE, re.MULTILINE)
    cmd = re.findall(r"^CMD (.+)$", DOCKERFILE, re.MULTILINE)[-1]
    assert json.loads(cmd)[0] == "gunicorn"  # exec form: gunicorn is PID 1, gets SIGTERM
    assert re.search(r"^HEALTHCHECK .*\n?.*/healthz", DOCKERFILE, re.MULTILINE)
    assert "ENV PATH=/venv/bin" in DOCKERFILE and "PORT=8080" in DOCKERFILE


# --- Kubernetes -----------------------------------------------------------------------------


def test_kubernetes_manifests_validate_against_the_openapi_schemas():
    result = subprocess.run(
        [tool("kubernetes-validate"), "--kubernetes-version", "1.30.0", "--strict"]
        + [str(path) for path in KUBERNETES],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(KUBERNETES) == 3


def kubernetes(kind: str) -> dict:
    for path in KUBERNETES:
        for document in yaml.safe_load_all(path.read_text()):
            if document["kind"] == kind:
                assert isinstance(document, dict)
                return document
    raise AssertionError(f"no {kind}")


def test_the_receiver_is_a_native_sidecar_that_gates_tf_serving():
    pod = kubernetes("Deployment")["spec"]["template"]["spec"]
    (receiver,) = pod["initContainers"]
    (serving,) = pod["containers"]
    assert receiver["restartPolicy"] == "Always"
    assert receiver["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert "--file_system_poll_wait_seconds=1" in serving["args"]
    assert "--model_config_file=/models/models.config" in serving["args"]
    env = {item["name"]: item["value"] for item in receiver["env"]}
    assert env["RECEIVER_MODEL_CONFIG_FILE"] == "/models/models.config"
    assert {"RECEIVER_SOURCE", "RECEIVER_AUDIENCE", "RECEIVER_ALLOWED_SENDERS"} <= set(env)
    for container in (receiver, serving):
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["models"] == "/models"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == "models")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == kubernetes("ServiceAccount")["metadata"]["name"]


def test_workload_identity_and_the_push_service():
    annotations = kubernetes("ServiceAccount")["metadata"]["annotations"]
    assert annotations["iam.gke.io/gcp-service-account"].endswith(".iam.gserviceaccount.com")
    ports = {p["name"]: p["port"] for p in kubernetes("Service")["spec"]["ports"]}
    assert ports["push"] == 8080


# --- Cloud Run ------------------------------------------------------------------------------


def test_the_cloud_run_service_shares_memory_and_acks_on_install():
    service = yaml.safe_load(CLOUD_RUN.read_text())
    assert (service["apiVersion"], service["kind"]) == ("serving.knative.dev/v1", "Service")
    template = service["spec"]["template"]
    dependencies = json.loads(
        template["metadata"]["annotations"]["run.googleapis.com/container-dependencies"]
    )
    assert dependencies == {"tf-serving": ["receiver"]}
    spec = template["spec"]
    assert spec["timeoutSeconds"] == 600
    (volume,) = spec["volumes"]
    assert volume["emptyDir"]["medium"] == "Memory"
    containers = {c["name"]: c for c in spec["containers"]}
    assert [name for name, c in containers.items() if c.get("ports")] == ["receiver"]
    env = {e["name"]: e["value"] for e in containers["receiver"]["env"]}
    assert env["RECEIVER_ACK"] == "installed"
    assert containers["receiver"]["startupProbe"]["httpGet"]["path"] == "/readyz"
    for container in containers.values():
        assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/models"}]
    assert "--file_system_poll_wait_seconds=1" in containers["tf-serving"]["args"]


# --- deploy/setup.sh ------------------------------------------------------------------------


def test_setup_script_passes_shellcheck():
    result = subprocess.run([tool("shellcheck"), str(SETUP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def run_setup(state: Path) -> list[list[str]]:
    calls = state / "calls"
    calls.unlink(missing_ok=True)
    env = {
        **os.environ,
        "PATH": f"{PROJECT_ROOT / 'tests' / 'fakes'}{os.pathsep}{os.environ['PATH']}",
        "FAKE_GCLOUD_STATE": str(state),
        "PROJECT_ID": "my-project",
        "BUCKET": "my-models",
        "PUSH_ENDPOINT": "https://receiver.example.com/",
        "K8S_NAMESPACE": "serving",
    }
    result = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RECEIVER_ALLOWED_SENDERS=pubsub-push@my-project.iam.gserviceaccount.com" in (
        result.stdout
    )
    return [json.loads(line) for line in calls.read_text().splitlines()]


def creates(calls: list[list[str]]) -> list[str]:
    return [" ".join(c) for c in calls if "create" in c]


def test_setup_creates_everything_it_uses_and_grants_every_role(tmp_path):
    assert shutil.which("bash")
    calls = run_setup(tmp_path)
    made = creates(calls)
    for thing in (
        "iam service-accounts create pubsub-push",
        "iam service-accounts create model-receiver",
        "pubsub topics create model-uploads",
        "pubsub topics create model-uploads-dead-letter",
        "pubsub subscriptions create model-uploads-dead-letter-hold",
    ):
        assert any(line.startswith(thing) for line in made), thing
    (notification,) = [
        c for c in calls if c[:4] == ["storage", "buckets", "notifications", "create"]
    ]
    assert {"--payload-format=json", "--event-types=OBJECT_FINALIZE,OBJECT_DELETE"} <= set(
        notification
    )
    (subscription,) = [
        c
        for c in calls
        if c[:3] == ["pubsub", "subscriptions", "create"] and c[3] == "model-receiver"
    ]
    assert {
        "--push-auth-service-account=pubsub-push@my-project.iam.gserviceaccount.com",
        "--push-auth-token-audience=https://receiver.example.com/",
        "--ack-deadline=600",
        "--dead-letter-topic=model-uploads-dead-letter",
        "--max-delivery-attempts=10",
    } <= set(subscription)
    grants = {
        (c[c.index("add-iam-policy-binding") + 1], a.split("=", 1)[1])
        for c in calls
        if "add-iam-policy-binding" in c
        for a in c
        if a.startswith("--role=")
    }
    assert grants >= {
        ("pubsub-push@my-project.iam.gserviceaccount.com", "roles/iam.serviceAccountTokenCreator"),
        ("model-uploads-dead-letter", "roles/pubsub.publisher"),
        ("model-receiver", "roles/pubsub.subscriber"),
        ("gs://my-models", "roles/storage.objectViewer"),
        ("model-uploads", "roles/pubsub.publisher"),
        ("model-receiver@my-project.iam.gserviceaccount.com", "roles/iam.workloadIdentityUser"),
    }


def test_setup_is_idempotent(tmp_path):
    run_setup(tmp_path)
    again = run_setup(tmp_path)
    assert creates(again) == []
    assert any(c[:3] == ["pubsub", "subscriptions", "update"] for c in again)

"""What ships: the Dockerfile, the Cloud Run manifest, deploy/setup.sh and the guide that
uses them (docs/deploying.md); the GKE manifests are in tests/test_deploy_kubernetes.py.

No container engine or cluster runs here, so each is checked by the field's own offline
tool (hadolint, shellcheck) and by tests of the rules docs/deploying.md promises;
setup.sh runs for real against a stand-in `gcloud` (tests/fakes/gcloud) that remembers
what it was asked to create and which IAM bindings it holds.
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
CLOUD_RUN = PROJECT_ROOT / "deploy" / "cloudrun" / "service.yaml"
SETUP = PROJECT_ROOT / "deploy" / "setup.sh"
SITE = PROJECT_ROOT / "deploy" / "kubernetes" / "site"


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
    assert containers["receiver"]["startupProbe"]["httpGet"]["path"] == "/startupz"
    for container in containers.values():
        assert container["volumeMounts"] == [{"name": volume["name"], "mountPath": "/models"}]
    assert "--file_system_poll_wait_seconds=1" in containers["tf-serving"]["args"]


def test_cloud_run_requires_an_invoker_and_gives_cpu_to_the_periodic_sync():
    service = yaml.safe_load(CLOUD_RUN.read_text())
    assert service["metadata"]["annotations"]["run.googleapis.com/invoker-iam-disabled"] == (
        "false"
    )
    assert "allUsers" not in CLOUD_RUN.read_text() + SETUP.read_text()
    template = service["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert annotations["run.googleapis.com/cpu-throttling"] == "false"  # instance billing
    containers = {c["name"]: c for c in template["spec"]["containers"]}
    env = {e["name"]: e["value"] for e in containers["receiver"]["env"]}
    assert int(env["RECEIVER_SYNC_INTERVAL"]) > 0
    # Cloud Run strips the token's signature once it has checked it: the receiver cannot.
    assert env["RECEIVER_AUTH"] == "none"


@pytest.mark.parametrize("container", ["receiver", "tf-serving"])
def test_cloud_run_startup_probes_allow_as_long_as_cloud_run_does(container):
    spec = yaml.safe_load(CLOUD_RUN.read_text())["spec"]["template"]["spec"]
    (probe,) = [c["startupProbe"] for c in spec["containers"] if c["name"] == container]
    # Cloud Run's limits: period x threshold <= 240 s, initial delay <= 240 s.
    assert probe["periodSeconds"] * probe["failureThreshold"] == 240
    assert 0 < probe.get("initialDelaySeconds", 0) <= 240


def test_cloud_run_memory_holds_the_in_memory_volume():
    spec = yaml.safe_load(CLOUD_RUN.read_text())["spec"]["template"]["spec"]
    (volume,) = spec["volumes"]
    size = int(volume["emptyDir"]["sizeLimit"].removesuffix("Gi"))
    receiver = next(c for c in spec["containers"] if c["name"] == "receiver")
    assert int(receiver["resources"]["limits"]["memory"].removesuffix("Gi")) > size


# --- deploy/setup.sh ------------------------------------------------------------------------


def test_setup_script_passes_shellcheck():
    result = subprocess.run([tool("shellcheck"), str(SETUP)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def run_setup(state: Path, **extra: str) -> list[list[str]]:
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
        "REGION": "us-central1",
        **extra,
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
        "artifacts repositories create containers",
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
        ("containers", "roles/artifactregistry.reader"),
    }
    (enable,) = [c for c in calls if c[:2] == ["services", "enable"]]
    assert {
        "container.googleapis.com",
        "artifactregistry.googleapis.com",
        "run.googleapis.com",
    } <= set(enable)


def bindings(state: Path) -> set[tuple[str, str, str]]:
    return {tuple(json.loads(line)) for line in (state / "bindings").read_text().splitlines()}


def test_setup_lets_the_push_invoke_cloud_run_and_nobody_else(tmp_path):
    run_setup(tmp_path, CLOUD_RUN_SERVICE="tf-serving")
    invokers = {(r, m) for r, m, role in bindings(tmp_path) if role == "roles/run.invoker"}
    assert invokers == {
        ("run services tf-serving", "serviceAccount:pubsub-push@my-project.iam.gserviceaccount.com")
    }


def test_setup_binds_workload_identity_in_the_namespace_the_manifests_use(tmp_path):
    run_setup(tmp_path)
    (member,) = [m for _, m, role in bindings(tmp_path) if role.endswith("workloadIdentityUser")]
    namespace = re.search(r"^namespace: (\S+)$", (SITE / "kustomization.yaml").read_text(), re.M)
    assert namespace and member.endswith(f".svc.id.goog[{namespace.group(1)}/model-receiver]")


def test_setup_refuses_a_cloud_run_service_without_its_region(tmp_path):
    env = {**os.environ, "PROJECT_ID": "p", "BUCKET": "b", "PUSH_ENDPOINT": "https://x/push"}
    env["CLOUD_RUN_SERVICE"] = "tf-serving"
    env.pop("REGION", None)
    result = subprocess.run(["bash", str(SETUP)], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "needs REGION" in result.stderr


def test_setup_is_idempotent(tmp_path):
    run_setup(tmp_path, CLOUD_RUN_SERVICE="tf-serving")
    first = bindings(tmp_path)
    again = run_setup(tmp_path, CLOUD_RUN_SERVICE="tf-serving")
    assert creates(again) == []
    assert any(c[:3] == ["pubsub", "subscriptions", "update"] for c in again)
    assert bindings(tmp_path) == first
    assert any(role == "roles/run.invoker" for _, _, role in first)


# --- docs/deploying.md ----------------------------------------------------------------------

GUIDE = (PROJECT_ROOT / "docs" / "deploying.md").read_text()


def test_the_guide_uses_one_namespace_the_manifests_and_setup_agree_on():
    namespace = re.search(r"^namespace: (\S+)$", (SITE / "kustomization.yaml").read_text(), re.M)
    assert namespace
    used = re.findall(r"(?:\s-n|--namespace[= ]|\bNAMESPACE=)\s*\"?([\w$-]+)", GUIDE)
    assert used and set(used) == {namespace.group(1)}
    assert 'K8S_NAMESPACE="$NAMESPACE"' in GUIDE


def test_the_guide_enables_every_api_before_the_cluster_needs_it():
    enabled_by_setup = set(re.findall(r"[a-z]+\.googleapis\.com", SETUP.read_text()))
    first_enable = GUIDE[GUIDE.index("gcloud services enable") :].split("```")[0]
    assert enabled_by_setup <= set(re.findall(r"[a-z]+\.googleapis\.com", first_enable))
    assert GUIDE.index("gcloud services enable") < GUIDE.index("gcloud container clusters")
    assert GUIDE.index("gcloud container clusters create") < GUIDE.index("deploy/setup.sh\n")


def test_the_guide_names_the_paths_it_tells_you_to_use():
    for path in re.findall(r"`((?:deploy|tests/fixtures)/[\w./-]+)`", GUIDE):
        assert (PROJECT_ROOT / path.rstrip("/")).exists(), path
    for overlay in re.findall(r"kubectl apply -k (\S+)", GUIDE):
        assert (PROJECT_ROOT / overlay / "kustomization.yaml").exists(), overlay


def test_the_readme_points_to_the_guide_in_one_line():
    readme = (PROJECT_ROOT / "README.md").read_text()
    (line,) = [line for line in readme.splitlines() if "(docs/deploying.md)" in line]
    assert "Deploying" in line

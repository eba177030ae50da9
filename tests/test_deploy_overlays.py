"""The shapes deploy/kubernetes ships beyond one pod, rendered as in test_deploy_kubernetes:
many replicas that relay pushes to each other (overlays/replicas), many TF Serving
replicas on one shared volume written by one receiver (overlays/shared-volume); and the
settings every overlay gives the receiver, read by the receiver's own parser."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from receiver.config import Settings
from receiver.peers import Peers
from tests.helpers import PROJECT_ROOT
from tests.test_deploy_kubernetes import (
    LOAD_BALANCER_RANGES,
    OVERLAYS,
    environment,
    find,
    gibibytes,
    pod_spec,
    receiver_of,
    render,
)

FILESTORE_DRIVER = "filestore.csi.storage.gke.io"


def push_rules(policy: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for rule in policy["spec"]["ingress"] if {"port": 8080} in rule["ports"]]


# --- The settings each overlay gives the receiver -------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_receiver_accepts_the_settings_the_manifests_give_it(overlay, tmp_path):
    pod, receiver = receiver_of(render(overlay))
    env = environment(pod, receiver)
    settings = Settings.from_env({**env, "RECEIVER_MODEL_DIR": str(tmp_path)})
    assert settings.auth_enabled and settings.allowed_senders == {
        "pubsub-push@my-project.iam.gserviceaccount.com"
    }
    assert str(settings.model_config_file) == "/models/models.config"
    assert settings.sync_interval > 0  # the safety net under pushes and relays


def test_cloud_run_answers_pushes_once_installed(tmp_path):
    manifest = (PROJECT_ROOT / "deploy" / "cloudrun" / "service.yaml").read_text()
    cloud_run = yaml.safe_load(manifest.replace("gs://BUCKET/", "gs://my-models/"))
    containers = cloud_run["spec"]["template"]["spec"]["containers"]
    (run_receiver,) = [c for c in containers if c["name"] == "receiver"]
    run_env = {item["name"]: item["value"] for item in run_receiver["env"]}
    assert Settings.from_env({**run_env, "RECEIVER_MODEL_DIR": str(tmp_path)}).ack == "installed"


def test_the_sidecar_confirms_loads_and_knows_tf_servings_memory(tmp_path):
    pod = pod_spec(render("one-pod"))
    (receiver,) = pod["initContainers"]
    settings = Settings.from_env(
        {**environment(pod, receiver), "RECEIVER_MODEL_DIR": str(tmp_path)}
    )
    assert settings.tfserving_url == "http://localhost:8501"
    (tf_serving,) = pod["containers"]
    assert "--rest_api_port=8501" in tf_serving["args"]
    assert (
        settings.serving_memory_limit
        == 4 * 2**30
        == gibibytes(tf_serving["resources"]["limits"]["memory"]) * 2**30
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_an_overlay_applies_is_labelled_as_part_of_the_receiver(overlay):
    for document in render(overlay):
        labels = document["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "model-receiver", document["kind"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_identity_is_bound_where_the_receiver_runs(overlay):
    documents = render(overlay)
    account = find(documents, "ServiceAccount")
    pod, _ = receiver_of(documents)
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    email = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert email == "model-receiver@my-project.iam.gserviceaccount.com"


# --- Many replicas, each with its own volume, relaying to each other ------------------------


def test_the_replicas_overlay_runs_many_pods_one_at_a_time_disrupted():
    documents = render("replicas")
    assert find(documents, "Deployment")["spec"]["replicas"] > 1
    assert find(documents, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert find(render("one-pod"), "Deployment")["spec"]["replicas"] == 1


def test_updates_never_need_a_second_pods_disk_and_are_given_the_startup_windows():
    """A pod holds a node's disk (its volume): a surge pod could not be scheduled."""
    one_pod = find(render("one-pod"), "Deployment")["spec"]
    assert one_pod["strategy"] == {"type": "Recreate"}
    replicas = find(render("replicas"), "Deployment")["spec"]
    assert replicas["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    pod = one_pod["template"]["spec"]
    windows = [
        c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
        for c in pod["initContainers"] + pod["containers"]
    ]
    assert one_pod["progressDeadlineSeconds"] >= sum(windows)


def test_each_replica_finds_the_others_through_a_headless_service(tmp_path):
    documents = render("replicas")
    pod, receiver = receiver_of(documents)
    env = environment(pod, receiver)
    peers = Settings.from_env({**env, "RECEIVER_MODEL_DIR": str(tmp_path)}).peers
    assert isinstance(peers, Peers) and peers.dns_name
    service = find(documents, "Service", peers.dns_name)["spec"]
    assert service["clusterIP"] == "None"  # the name resolves to every pod's address
    assert service["publishNotReadyAddresses"] is True  # a loading replica takes relays
    labels = find(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()
    (port,) = service["ports"]
    assert port["port"] == port["targetPort"] == peers.dns_port
    assert peers.dns_port in [p["containerPort"] for p in receiver["ports"]]
    assert "RECEIVER_PEERS" not in environment(*receiver_of(render("one-pod")))


def test_the_replicas_may_reach_each_others_push_port():
    documents = render("replicas")
    labels = find(documents, "Deployment")["spec"]["template"]["metadata"]["labels"]
    rules = push_rules(find(documents, "NetworkPolicy"))
    peer_rules = [r for r in rules if any("podSelector" in f and len(f) == 1 for f in r["from"])]
    (rule,) = peer_rules
    assert rule["ports"] == [{"port": 8080}]
    (source,) = rule["from"]
    assert source["podSelector"]["matchLabels"].items() <= labels.items()
    # The one pod has no peers: nothing but the load balancer and Prometheus reach it.
    (only,) = push_rules(find(render("one-pod"), "NetworkPolicy"))
    assert all("podSelector" not in f or "namespaceSelector" in f for f in only["from"])


# --- Many TF Serving replicas on one shared volume ------------------------------------------


def test_one_receiver_writes_the_shared_volume_and_every_replica_reads_it():
    documents = render("shared-volume")
    receiver_deployment = find(documents, "Deployment", "model-receiver")["spec"]
    assert receiver_deployment["replicas"] == 1
    assert receiver_deployment["strategy"] == {"type": "Recreate"}  # never two writers
    serving = find(documents, "Deployment", "tf-serving")["spec"]
    assert serving["replicas"] > 1
    serving_pod = serving["template"]["spec"]
    assert "receiver" not in [c["name"] for c in serving_pod["initContainers"]]
    (volume,) = serving_pod["volumes"]
    claim = find(documents, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    for container in serving_pod["initContainers"] + serving_pod["containers"]:
        assert all(m["readOnly"] is True for m in container["volumeMounts"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    shared = find(documents, "StorageClass", claim["spec"]["storageClassName"])
    assert shared["provisioner"] == FILESTORE_DRIVER
    pod, receiver = receiver_of(documents)
    mounts = {m["mountPath"]: m["name"] for m in receiver["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes[mounts["/models"]]["persistentVolumeClaim"]["claimName"]
        == claim["metadata"]["name"]
    )


def test_the_shared_receivers_journal_is_on_a_disk_of_its_own(tmp_path):
    documents = render("shared-volume")
    pod, receiver = receiver_of(documents)
    env = environment(pod, receiver)
    mounts = {m["mountPath"]: m["name"] for m in receiver["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    state = volumes[mounts[env["RECEIVER_STATE_DIR"]]]["persistentVolumeClaim"]["claimName"]
    assert find(documents, "PersistentVolumeClaim", state)["spec"]["accessModes"] == [
        "ReadWriteOnce"
    ]
    claim = find(documents, "PersistentVolumeClaim", "models")["spec"]
    assert gibibytes(env["RECEIVER_VOLUME_SIZE_LIMIT"]) == gibibytes(
        claim["resources"]["requests"]["storage"]
    )
    (tf_serving,) = find(documents, "Deployment", "tf-serving")["spec"]["template"]["spec"][
        "containers"
    ]
    settings = Settings.from_env({**env, "RECEIVER_MODEL_DIR": str(tmp_path)})
    assert (
        settings.serving_memory_limit
        == gibibytes(tf_serving["resources"]["limits"]["memory"]) * 2**30
    )
    assert settings.peers is None and settings.tfserving_url == ""


def test_the_shared_receiver_is_the_sidecar_but_in_a_pod_of_its_own():
    """One receiver container, two places: what matters must not drift apart."""
    _, sidecar = receiver_of(render("one-pod"))
    _, shared = receiver_of(render("shared-volume"))
    for key in ("image", "ports", "startupProbe", "livenessProbe", "securityContext"):
        assert shared[key] == sidecar[key], key
    for name in ("RECEIVER_SOURCE", "RECEIVER_AUDIENCE", "RECEIVER_ALLOWED_SENDERS"):
        assert (
            environment({"containers": [shared]}, shared)[name]
            == environment(pod_spec(render("one-pod")), sidecar)[name]
        ), name


def test_pushes_and_scrapes_go_to_the_shared_receiver_and_not_to_tf_serving():
    documents = render("shared-volume")
    receiver_labels = find(documents, "Deployment", "model-receiver")["spec"]["template"][
        "metadata"
    ]["labels"]
    backend = find(documents, "Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    push = find(documents, "Service", backend["service"]["name"])["spec"]
    assert push["selector"].items() <= receiver_labels.items()
    assert 8080 not in [
        p["port"] for p in find(documents, "Service", "tf-serving")["spec"]["ports"]
    ]
    monitoring = find(documents, "PodMonitoring")["spec"]
    assert monitoring["selector"]["matchLabels"].items() <= receiver_labels.items()
    (rule,) = push_rules(find(documents, "NetworkPolicy", "model-receiver"))
    assert {f["ipBlock"]["cidr"] for f in rule["from"] if "ipBlock" in f} == LOAD_BALANCER_RANGES
    assert push_rules(find(documents, "NetworkPolicy", "tf-serving")) == []


def test_the_tf_serving_pods_see_a_new_version_on_the_share_within_two_seconds():
    """TF Serving lists a model's directory at each poll; over NFS the listing is as old
    as the client's cached attributes of that directory (30 to 60 s by default)."""
    documents = render("shared-volume")
    claim = find(documents, "PersistentVolumeClaim", "models")["spec"]
    mount_options = find(documents, "StorageClass", claim["storageClassName"])["mountOptions"]
    options = dict(option.partition("=")[::2] for option in mount_options)
    assert "noac" not in options and "actimeo" not in options  # files keep their cache
    assert 1 <= int(options["acdirmin"]) <= int(options["acdirmax"])
    (tf_serving,) = find(documents, "Deployment", "tf-serving")["spec"]["template"]["spec"][
        "containers"
    ]
    (poll,) = [a for a in tf_serving["args"] if a.startswith("--file_system_poll_wait_seconds=")]
    assert int(options["acdirmax"]) + int(poll.partition("=")[2]) <= 2

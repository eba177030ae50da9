"""What the install tests look at: the model dir as TF Serving sees it, the one job."""

from receiver.modeldir import installed_versions
from tests.helpers import HALF_PLUS_TWO, push_body


def visible(model_dir):
    """What TF Serving would see: every entry under the model dir, hidden ones included."""
    if not model_dir.exists():
        return []
    return sorted(
        str(p.relative_to(model_dir)) for p in model_dir.rglob("*") if ".receiver" not in p.parts
    )


def only_job(runtime):
    (job,) = runtime.journal.recent()
    return job


def push_with(client, token, blob):
    response = client.post(
        "/", data=push_body(blob), headers={"Authorization": f"Bearer {token()}"}
    )
    assert response.status_code == 202
    return response.get_json()["job"]


def servable_versions(settings):
    return installed_versions(settings.model_dir / "half_plus_two")


def visible_of_one_version(version):
    return sorted(
        [str(version), f"{version}/.receiver.json"]
        + [f"{version}/{p.relative_to(HALF_PLUS_TWO)}" for p in HALF_PLUS_TWO.rglob("*")]
    )

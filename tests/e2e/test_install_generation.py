"""`receiver install --generation N` installs that generation, checked against its own checksum."""

import secrets

import pytest

from receiver.dev.tools import archive_directory
from tests.e2e.test_operations import run_cli
from tests.helpers import HALF_PLUS_TWO, same_files


@pytest.fixture
def versioned_bucket(gcs):
    """A bucket that keeps every generation of an object, as object versioning does."""
    bucket = gcs.bucket(f"models-{secrets.token_hex(6)}")
    bucket.versioning_enabled = True
    bucket.create()
    return bucket


def test_install_of_an_older_generation_checks_that_generations_checksum(
    versioned_bucket, environ, emulator, settings, tmp_path
):
    blob = versioned_bucket.blob("models/half_plus_two/7.tar.gz")
    blob.upload_from_string(archive_directory(HALF_PLUS_TWO, "tar.gz", top="00000007"))
    first = blob.generation
    blob.upload_from_string(archive_directory(HALF_PLUS_TWO, "tar", top="00000007"))
    assert blob.generation != first  # the live generation is another one, other bytes
    env = {
        **environ,
        "RECEIVER_SOURCE": f"gs://{versioned_bucket.name}/models",
        "STORAGE_EMULATOR_HOST": emulator.url,
        "RECEIVER_LOG_FORMAT": "text",
    }
    url = f"gs://{versioned_bucket.name}/models/half_plus_two/7.tar.gz"
    installed = run_cli("install", url, "--generation", str(first), env=env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert same_files(settings.model_dir / "half_plus_two" / "7")
    missing = run_cli("install", url, "--generation", "12345", env=env)
    assert missing.returncode != 0
    assert "generation 12345 does not exist" in missing.stderr

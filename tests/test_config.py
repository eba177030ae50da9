from pathlib import Path

import pytest

from receiver.config import Settings
from receiver.errors import ConfigError

MINIMAL = {
    "RECEIVER_SOURCE": "gs://my-bucket/exports/models/",
    "RECEIVER_AUDIENCE": "https://receiver.example.com/",
    "RECEIVER_ALLOWED_SENDERS": "push@p.iam.gserviceaccount.com, other@p.iam.gserviceaccount.com",
}


def test_defaults_fill_everything_but_the_source_and_auth():
    settings = Settings.from_env(MINIMAL)
    assert (settings.bucket, settings.prefix) == ("my-bucket", "exports/models/")
    assert settings.model_dir == Path("/models")
    assert settings.state_dir == Path("/models/.receiver")
    assert settings.keep_versions == 2
    assert settings.auth_enabled
    assert settings.certs_url == "https://www.googleapis.com/oauth2/v1/certs"
    assert settings.allowed_senders == {
        "push@p.iam.gserviceaccount.com",
        "other@p.iam.gserviceaccount.com",
    }


def test_a_command_that_reads_no_storage_needs_no_source_but_refuses_a_bad_one():
    """`receiver status` reads the model dir and journal: RECEIVER_SOURCE is no business
    of it, but one that is set and wrong is still said to be wrong."""
    with pytest.raises(ConfigError, match="RECEIVER_SOURCE is required"):
        Settings.from_env({}, verifies_pushes=False)
    local = Settings.from_env({"RECEIVER_MODEL_DIR": "/srv/m"}, False, reads_storage=False)
    assert (local.model_dir, local.bucket) == (Path("/srv/m"), "")
    with pytest.raises(ConfigError, match="'ab' is not a bucket name"):
        Settings.from_env({"RECEIVER_SOURCE": "gs://ab"}, False, reads_storage=False)


def test_large_objects_are_sliced_by_default_and_slicing_can_be_switched_off():
    assert Settings.from_env(MINIMAL).slicing.enabled
    for off in ({"RECEIVER_DOWNLOAD_SLICES": "1"}, {"RECEIVER_SLICED_DOWNLOAD_THRESHOLD": "0"}):
        assert not Settings.from_env({**MINIMAL, **off}).slicing.enabled


def test_slicing_is_decided_by_measurement_unless_asked_always():
    assert Settings.from_env(MINIMAL).slicing.adaptive
    always = Settings.from_env({**MINIMAL, "RECEIVER_SLICING": "always"})
    assert always.slicing.enabled and not always.slicing.adaptive


def test_bucket_without_prefix():
    settings = Settings.from_env({**MINIMAL, "RECEIVER_SOURCE": "gs://my-bucket"})
    assert (settings.bucket, settings.prefix) == ("my-bucket", "")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"RECEIVER_SOURCE": ""}, "RECEIVER_SOURCE"),
        ({"RECEIVER_SOURCE": "s3://bucket/x"}, "RECEIVER_SOURCE"),
        ({"RECEIVER_KEEP_VERSIONS": "two"}, "RECEIVER_KEEP_VERSIONS"),
        ({"RECEIVER_KEEP_VERSIONS": "-1"}, "RECEIVER_KEEP_VERSIONS"),
        ({"RECEIVER_AUTH": "off"}, "RECEIVER_AUTH"),
        ({"RECEIVER_ALLOWED_SENDERS": ""}, "RECEIVER_ALLOWED_SENDERS"),
        ({"RECEIVER_AUDIENCE": ""}, "RECEIVER_AUDIENCE"),
        ({"RECEIVER_CERTS_URL": "ftp://x"}, "RECEIVER_CERTS_URL"),
        ({"RECEIVER_MAX_FILES": "0"}, "RECEIVER_MAX_FILES"),
        ({"RECEIVER_DOWNLOAD_SLICES": "0"}, "RECEIVER_DOWNLOAD_SLICES"),
        ({"RECEIVER_SLICE_BYTES": "1024"}, "RECEIVER_SLICE_BYTES"),
        ({"RECEIVER_SLICED_DOWNLOAD_THRESHOLD": "big"}, "RECEIVER_SLICED_DOWNLOAD_THRESHOLD"),
        ({"RECEIVER_SLICING": "sometimes"}, "RECEIVER_SLICING"),
    ],
)
def test_bad_values_name_the_variable(overrides, variable):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**MINIMAL, **overrides})
    assert variable in str(error.value)
    assert "\n" not in str(error.value)


def test_auth_can_be_switched_off_only_explicitly():
    settings = Settings.from_env({"RECEIVER_SOURCE": "gs://bkt/p", "RECEIVER_AUTH": "none"})
    assert not settings.auth_enabled


def test_waiting_pushes_default_below_the_thread_count_and_must_stay_below(environ):
    assert Settings.from_env(environ).max_waiting_pushes == 6
    assert Settings.from_env({**environ, "GUNICORN_THREADS": "2"}).max_waiting_pushes == 1
    with pytest.raises(ConfigError, match="RECEIVER_MAX_WAITING_PUSHES.*below GUNICORN_THREADS"):
        Settings.from_env({**environ, "RECEIVER_MAX_WAITING_PUSHES": "8"})
    with pytest.raises(ConfigError, match="RECEIVER_MAX_WAITING_PUSHES"):
        Settings.from_env({**environ, "GUNICORN_THREADS": "1", "RECEIVER_MAX_WAITING_PUSHES": "2"})


def test_a_required_variable_is_named_once_with_its_meaning():
    with pytest.raises(ConfigError) as missing:
        Settings.from_env({})
    assert str(missing.value) == (
        "RECEIVER_SOURCE is required: gs://BUCKET/PREFIX the models are published under"
    )


@pytest.mark.parametrize("bucket", ["ab", "Models", "-models", "models-"])
def test_a_bad_bucket_name_gets_the_bucket_naming_rule(bucket):
    with pytest.raises(ConfigError, match=f"'{bucket}' is not a bucket name \\(3 to 222"):
        Settings.from_env({"RECEIVER_SOURCE": f"gs://{bucket}/models"})


def test_the_state_dir_may_not_be_the_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="RECEIVER_STATE_DIR is .*, the model dir itself"):
        Settings.from_env(
            {"RECEIVER_SOURCE": "gs://models", "RECEIVER_MODEL_DIR": str(tmp_path),
             "RECEIVER_STATE_DIR": str(tmp_path), "RECEIVER_AUTH": "none"}
        )  # fmt: skip

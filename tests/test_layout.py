import dataclasses

import pytest

from receiver.layout import (
    Ignored,
    ModelVersion,
    is_model_name,
    object_name,
    parse_object_name,
    parse_version,
    reserved_names,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("p/half_plus_two/123.tar.gz", ModelVersion("half_plus_two", 123, "tar.gz")),
        ("p/m/7.tgz", ModelVersion("m", 7, "tgz")),
        ("p/m/7.tar", ModelVersion("m", 7, "tar")),
        ("p/Model-1.v2/00042.zip", ModelVersion("Model-1.v2", 42, "zip")),
        ("p/m/9223372036854775807.tar", ModelVersion("m", 2**63 - 1, "tar")),
    ],
)
def test_model_archives(name, expected):
    assert parse_object_name(name, "p/") == expected


@pytest.mark.parametrize(
    "name",
    [
        "other/m/1.tar.gz",  # outside the prefix
        "p/m/1.tar.gz.bak",  # not an archive
        "p/m/1.rar",
        "p/m/sub/1.tar.gz",  # too deep
        "p/1.tar.gz",  # no model
        "p/.hidden/1.tar.gz",  # model name must start with a letter or digit
        "p/m/0.tar.gz",  # versions are positive
        "p/m/-1.tar.gz",
        "p/m/1.5.tar.gz",
        "p/m/v1.tar.gz",
        "p/m/9223372036854775808.tar",  # does not fit int64
        f"p/{'m' * 129}/1.tar",
        "p/m/7\n.tar.gz",  # `$` took the newline as the end of the name
        "p/m\n/7.tar.gz",
        "p/m/7\n/_SUCCESS",
    ],
)
def test_everything_else_is_ignored_with_a_reason(name):
    result = parse_object_name(name, "p/")
    assert isinstance(result, Ignored)
    assert result.reason


def test_empty_prefix():
    assert parse_object_name("m/3.zip", "") == ModelVersion("m", 3, "zip")


def test_object_name_round_trips():
    assert parse_object_name(object_name("p/", "m", 5, "tgz"), "p/") == ModelVersion("m", 5, "tgz")


def test_names_with_a_trailing_newline_are_neither_versions_nor_models():
    assert parse_version("7\n") is None
    assert not is_model_name("m\n")


def test_models_named_like_the_receivers_own_files_are_refused_with_the_reason(settings):
    settings = dataclasses.replace(
        settings,
        state_dir=settings.model_dir / "state",
        model_config_file=settings.model_dir / "models.config",
    )
    reserved = reserved_names(settings)
    assert set(reserved) == {"state", "models.config"}
    for model, setting in (("state", "RECEIVER_STATE_DIR"), ("models.config", "CONFIG_FILE")):
        for name in (f"p/{model}/1.tar.gz", f"p/{model}/1/_SUCCESS"):
            result = parse_object_name(name, "p/", reserved=reserved)
            assert isinstance(result, Ignored) and "reserved" in result.reason
            assert setting in result.reason
    assert parse_object_name("p/models/1.zip", "p/", reserved=reserved) == ModelVersion(
        "models", 1, "zip"
    )


def test_files_outside_the_model_dir_reserve_nothing(settings, tmp_path):
    elsewhere = dataclasses.replace(settings, model_config_file=tmp_path / "tfs" / "models.config")
    assert "models.config" not in reserved_names(elsewhere)
    assert reserved_names(settings) == {}  # state dir outside it (or hidden, by default)

import pytest

from receiver.layout import Ignored, ModelVersion, object_name, parse_object_name


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

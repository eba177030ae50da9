"""models.config upkeep, checked by parsing the file back with protobuf's text_format."""

import shutil

from google.protobuf import text_format

from receiver.modelconfig import ModelServerConfig, describe, update_model_config
from tests.helpers import FIXTURES, HALF_PLUS_TWO

CONFIGS = FIXTURES / "tfserving_configs"


def install(model_dir, model, version):
    shutil.copytree(HALF_PLUS_TWO, model_dir / model / str(version))


def read(path):
    config = ModelServerConfig()
    text_format.Parse(path.read_text(), config)
    return {entry.name: entry for entry in config.model_config_list.config}


def test_every_model_with_a_version_is_listed(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    install(models, "half_plus_two", 1)
    install(models, "resnet", 7)
    (models / "not_yet").mkdir()  # no version directory: TF Serving would block on it
    update = update_model_config(path, models)
    assert update.added == ("half_plus_two", "resnet")
    entries = read(path)
    assert set(entries) == {"half_plus_two", "resnet"}
    assert entries["resnet"].base_path == str((models / "resnet").resolve())
    assert entries["resnet"].model_platform == "tensorflow"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp files


def test_operator_fields_and_entries_survive(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    install(models, "a", 1)
    install(models, "b", 2)
    path.write_text(
        'model_config_list { config { name: "a" base_path: "/elsewhere/a" '
        'model_platform: "tensorflow" model_version_policy { specific { versions: 1 } } '
        'version_labels { key: "stable" value: 1 } } '
        'config { name: "gone" base_path: "/models/gone" model_platform: "tensorflow" } }'
    )
    assert update_model_config(path, models).added == ("b",)
    entries = read(path)
    assert set(entries) == {"a", "b", "gone"}  # never drops a model
    assert entries["a"].base_path == "/elsewhere/a"
    assert list(entries["a"].model_version_policy.specific.versions) == [1]
    assert entries["a"].version_labels["stable"] == 1


def test_nothing_to_add_leaves_the_file_untouched(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    install(models, "a", 1)
    update_model_config(path, models)
    before = path.stat().st_mtime_ns
    assert update_model_config(path, models).added == ()
    assert path.stat().st_mtime_ns == before


def test_tf_servings_own_config_is_kept_and_extended(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    shutil.copy(CONFIGS / "good_model_config.txt", path)
    install(models, "half_plus_two", 123)
    install(models, "new_model", 1)
    assert update_model_config(path, models).added == ("new_model",)
    entries = read(path)
    assert entries["half_plus_two"].base_path == "${TEST_HALF_PLUS_TWO_DIR}"
    assert set(entries) == {"half_plus_two", "half_plus_three", "new_model"}


def test_an_unparsable_file_is_left_alone_and_reported(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    shutil.copy(CONFIGS / "bad_model_config.txt", path)
    install(models, "a", 1)
    update = update_model_config(path, models)
    assert update.problem and "left alone" in update.problem
    assert path.read_bytes() == (CONFIGS / "bad_model_config.txt").read_bytes()
    assert "unreadable" in str(describe(path)["problem"])


def test_fields_this_receiver_does_not_know_are_never_lost(tmp_path):
    models, path = tmp_path / "models", tmp_path / "models.config"
    install(models, "b", 1)
    original = 'model_config_list { config { name: "a" some_future_field: 3 } }'
    path.write_text(original)
    assert update_model_config(path, models).problem
    assert path.read_text() == original

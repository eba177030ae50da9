import shutil
from pathlib import Path

import pytest

from receiver import modeldir, servable
from receiver.errors import PermanentError
from tests.helpers import HALF_PLUS_TWO, same_files


def copy_model(destination: Path) -> Path:
    shutil.copytree(HALF_PLUS_TWO, destination)
    return destination


def test_saved_model_at_the_root(tmp_path):
    root = copy_model(tmp_path / "staging")
    assert servable.find_saved_model(root) == root


def test_saved_model_in_one_top_level_dir(tmp_path):
    staging = tmp_path / "staging"
    copy_model(staging / "00000123")
    assert servable.find_saved_model(staging) == staging / "00000123"


def test_pbtxt_is_a_saved_model_too(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "saved_model.pbtxt").write_text("meta_graphs {}")
    assert servable.find_saved_model(staging) == staging


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        (lambda root: (root / "saved_model.pb").unlink(), "no saved_model.pb"),
    ],
)
def test_incomplete_models_are_refused(tmp_path, damage, error):
    root = copy_model(tmp_path / "staging" / "00000123")
    damage(root)
    with pytest.raises(PermanentError, match=error):
        servable.find_saved_model(tmp_path / "staging")


def test_two_top_level_dirs_are_ambiguous(tmp_path):
    copy_model(tmp_path / "staging" / "1")
    copy_model(tmp_path / "staging" / "2")
    with pytest.raises(PermanentError, match="not a SavedModel"):
        servable.find_saved_model(tmp_path / "staging")


def test_install_renames_into_place_with_provenance(tmp_path):
    model_root = tmp_path / "models" / "m"
    staging = servable.new_staging_dir(model_root, 5, job_id=1)
    root = copy_model(staging / "00000123")
    servable.install(root, model_root / "5", {"object": "p/m/5.tar", "generation": 9})
    assert same_files(model_root / "5")
    assert modeldir.read_provenance(model_root / "5")["generation"] == 9
    assert modeldir.installed_versions(model_root) == [5]


def test_install_never_replaces_a_version(tmp_path):
    model_root = tmp_path / "m"
    copy_model(model_root / "5")
    original = (model_root / "5" / "saved_model.pb").read_bytes()
    staging = servable.new_staging_dir(model_root, 5, job_id=1)
    (staging / "saved_model.pb").write_bytes(b"different")
    with pytest.raises(PermanentError, match="immutable"):
        servable.install(staging, model_root / "5", {})
    assert (model_root / "5" / "saved_model.pb").read_bytes() == original


def test_prune_keeps_the_highest_versions(tmp_path):
    for version in (3, 10, 7, 1):
        copy_model(tmp_path / "m" / str(version))
    assert modeldir.prune(tmp_path / "m", keep=2) == [1, 3]
    assert modeldir.installed_versions(tmp_path / "m") == [7, 10]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["10", "7"]


def test_a_hand_placed_zero_padded_version_is_pruned_by_its_real_name(tmp_path):
    copy_model(tmp_path / "m" / "00000123")
    for version in (124, 125):
        copy_model(tmp_path / "m" / str(version))
    assert modeldir.prune(tmp_path / "m", keep=2) == [123]
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["124", "125"]


def test_a_zero_padded_version_is_withdrawn_by_its_real_name(tmp_path):
    copy_model(tmp_path / "m" / "00000123")
    copy_model(tmp_path / "m" / "124")
    assert modeldir.remove_version(tmp_path / "m", 123) is None
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["124"]


def test_a_takeover_removes_what_its_predecessor_left_and_nothing_else(tmp_path):
    model_root = tmp_path / "m"
    mine = servable.new_staging_dir(model_root, 5, job_id=7)
    (mine / "weights").write_bytes(b"x" * 1000)
    spool = mine.with_name(mine.name.replace(".staging-", ".download-", 1))
    spool.write_bytes(b"zip")
    other = servable.new_staging_dir(model_root, 5, job_id=8)  # another job, same version
    copy_model(model_root / "4")
    assert sorted(servable.remove_job_debris(model_root, 7)) == sorted([mine, spool])
    assert sorted(p.name for p in model_root.iterdir()) == sorted(["4", other.name])


def test_keep_zero_keeps_everything(tmp_path):
    for version in (1, 2, 3):
        copy_model(tmp_path / "m" / str(version))
    assert modeldir.prune(tmp_path / "m", keep=0) == []
    assert modeldir.installed_versions(tmp_path / "m") == [1, 2, 3]


def test_debris_is_removed_and_versions_are_not(tmp_path):
    copy_model(tmp_path / "m" / "1")
    for debris in (".staging-2-abc", ".trash-1-def"):
        copy_model(tmp_path / "m" / debris)
    (tmp_path / "m" / ".download-2-abc").write_bytes(b"partial zip")
    removed = servable.remove_debris(tmp_path)
    assert len(removed) == 3
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1"]


def test_installed_models_lists_versions_per_model(tmp_path):
    copy_model(tmp_path / "a" / "1")
    copy_model(tmp_path / "a" / "2")
    (tmp_path / "b").mkdir()
    (tmp_path / ".receiver").mkdir()
    (tmp_path / "a" / ".staging-3-x").mkdir()
    assert modeldir.installed_models(tmp_path) == {"a": [1, 2], "b": []}

"""The checks TF Serving's loader makes, run on real exports and on what goes wrong.

Each refusal is one an upload from a real pipeline produced: the exports come from real
TensorFlow (`tf_exports`, tests/tfcheck.py), the damage from what a failed copy does.
"""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import google_crc32c
import pytest

from receiver import savedmodel
from receiver.savedmodel import InvalidSavedModelError
from tests.helpers import HALF_PLUS_TWO

SERVE = frozenset({"serve"})
LIMIT = 2**30
# A PredictionLog holding a predict_log (field 6) whose request (field 1) is empty:
# written out byte by byte so the test does not lean on the module's own descriptors.
PREDICT_RECORD = b"\x32\x02\x0a\x00"
SESSION_RUN_RECORD = b"\x2a\x02\x0a\x00"  # session_run_log (field 5): TF Serving refuses it
NO_REQUEST_RECORD = b"\x32\x00"  # a predict_log with no request


def copy_of(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "version"
    shutil.copytree(source, target)
    return target


def refusal(root: Path, tags: frozenset[str] = SERVE, limit: int = LIMIT) -> str:
    with pytest.raises(InvalidSavedModelError) as caught:
        savedmodel.check(root, tags, limit)
    return caught.value.reason


def tfrecord(*records: bytes) -> bytes:
    """TFRecord framing as TensorFlow writes it: length, masked CRCs of length and data."""

    def masked(data: bytes) -> int:
        crc: int = google_crc32c.value(data)
        return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    out = b""
    for record in records:
        length = struct.pack("<Q", len(record))
        out += length + struct.pack("<I", masked(length)) + record
        out += struct.pack("<I", masked(record))
    return out


def with_warmup(tmp_path: Path, data: bytes) -> Path:
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    (root / "assets.extra").mkdir()
    (root / "assets.extra" / "tf_serving_warmup_requests").write_bytes(data)
    return root


def test_a_good_model_passes_with_what_was_found():
    report = savedmodel.check(HALF_PLUS_TWO, SERVE, LIMIT)
    assert report.graph_file == "saved_model.pb"
    assert "serving_default" in report.signatures
    assert report.variable_shards == 1
    assert report.notes == ()


def test_real_tf2_and_text_format_exports_pass(tf_exports):
    assert savedmodel.check(tf_exports / "keras", SERVE, LIMIT).signatures
    assert savedmodel.check(tf_exports / "sharded", SERVE, LIMIT).variable_shards == 4
    assert savedmodel.check(tf_exports / "pbtxt", SERVE, LIMIT).graph_file == "saved_model.pbtxt"


def test_a_graph_file_of_random_bytes_is_refused(tmp_path):
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    (root / "saved_model.pb").write_bytes(os.urandom(4096))
    assert "saved_model.pb is not a binary SavedModel" in refusal(root)


def test_a_graph_file_cut_in_half_is_refused(tmp_path):
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    graph = (root / "saved_model.pb").read_bytes()
    (root / "saved_model.pb").write_bytes(graph[: len(graph) // 2])
    assert "saved_model.pb is not a binary SavedModel" in refusal(root)


def test_a_pbtxt_that_is_not_a_text_format_saved_model_is_refused(tf_exports, tmp_path):
    root = copy_of(tf_exports / "pbtxt", tmp_path)
    (root / "saved_model.pbtxt").write_text("meta_graphs { this is not { a proto")
    assert "saved_model.pbtxt is not a text-format SavedModel" in refusal(root)


def test_a_train_only_export_is_refused_naming_both_tag_sets(tf_exports):
    reason = refusal(tf_exports / "train")
    assert reason == (
        "tag sets in the SavedModel: {train}; TF Serving loads {serve} (RECEIVER_SAVED_MODEL_TAGS)"
    )


def test_the_configured_tag_set_must_match_exactly(tf_exports):
    assert savedmodel.check(tf_exports / "train", frozenset({"train"}), LIMIT)
    reason = refusal(HALF_PLUS_TWO, tags=frozenset({"serve", "gpu"}))
    assert "TF Serving loads {gpu, serve}" in reason


def test_variables_missing_altogether_are_refused(tmp_path):
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    shutil.rmtree(root / "variables")
    assert "variables/variables.index is missing" in refusal(root)


def test_an_index_missing_beside_its_data_is_refused(tmp_path):
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    (root / "variables" / "variables.index").unlink()
    assert "variables/variables.index is missing" in refusal(root)


def test_a_missing_shard_is_refused_by_name(tf_exports, tmp_path):
    root = copy_of(tf_exports / "sharded", tmp_path)
    (root / "variables" / "variables.data-00002-of-00004").unlink()
    assert refusal(root) == (
        "variables/variables.index calls for 4 data shard(s); "
        "missing: variables.data-00002-of-00004"
    )


def test_state_kept_without_a_variable_still_needs_its_shards(tf_exports, tmp_path):
    root = copy_of(tf_exports / "table", tmp_path)
    assert savedmodel.check(root, SERVE, LIMIT).variable_shards == 1
    (root / "variables" / "variables.data-00000-of-00001").unlink()
    assert "missing: variables.data-00000-of-00001" in refusal(root)
    shutil.rmtree(root / "variables")
    assert "variables/variables.index is missing" in refusal(root)


def test_an_index_naming_more_shards_than_files_is_refused_without_a_look_for_each(
    tf_exports, tmp_path
):
    root = copy_of(tf_exports / "sharded", tmp_path)
    for shard in (0, 1, 3):
        (root / "variables" / f"variables.data-0000{shard}-of-00004").unlink()
    assert refusal(root) == (
        "variables/variables.index calls for 4 data shard(s); variables/ holds 1 other file(s)"
    )


def test_a_deeply_nested_pbtxt_is_refused_not_crashed(tf_exports, tmp_path):
    root = copy_of(tf_exports / "pbtxt", tmp_path)
    deep = "a { " * 100_000 + "}" * 100_000
    (root / "saved_model.pbtxt").write_text(f"meta_graphs {{ graph_def {{ {deep} }} }}")
    assert "saved_model.pbtxt is not a text-format SavedModel" in refusal(root)


def test_a_damaged_index_is_refused(tmp_path):
    root = copy_of(HALF_PLUS_TWO, tmp_path)
    (root / "variables" / "variables.index").write_bytes(os.urandom(200))
    assert "variables/variables.index is unreadable" in refusal(root)


def test_a_graph_over_the_limit_is_refused_naming_the_setting():
    assert "RECEIVER_MAX_GRAPH_BYTES" in refusal(HALF_PLUS_TWO, limit=1000)


def test_good_warmup_records_pass_and_are_counted(tmp_path):
    root = with_warmup(tmp_path, tfrecord(*[PREDICT_RECORD] * 1000))
    assert savedmodel.check(root, SERVE, LIMIT).warmup_records == 1000


def test_more_than_a_thousand_warmup_records_are_refused(tmp_path):
    root = with_warmup(tmp_path, tfrecord(*[PREDICT_RECORD] * 1001))
    assert "more than 1000 records" in refusal(root)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (os.urandom(100), "corrupt length (not a TFRecord file?)"),
        (tfrecord(PREDICT_RECORD)[:-2], "cut short in record 1"),
        (tfrecord(PREDICT_RECORD)[:-4] + b"\0\0\0\0", "record 1 fails its CRC-32C"),
        (tfrecord(PREDICT_RECORD, b"\xff\xff\xff"), "record 2 is not a PredictionLog"),
        (tfrecord(SESSION_RUN_RECORD), "record 1 is a PredictionLog with session_run_log"),
        (tfrecord(NO_REQUEST_RECORD), "record 1 (predict_log) has no request"),
    ],
)
def test_bad_warmup_files_are_refused(tmp_path, data, expected):
    assert expected in refusal(with_warmup(tmp_path, data))


def test_a_graph_without_signatures_passes_with_a_note(tf_exports):
    report = savedmodel.check(tf_exports / "nosig", SERVE, LIMIT)
    assert report.signatures == ()
    assert "no signatures" in report.notes[0]

"""What TF Serving checks when it loads a SavedModel, checked before the version appears.

TF Serving's loader (TensorFlow's `LoadSavedModel`) parses `saved_model.pb` (or
`.pbtxt`), picks the meta graph whose tag set equals `--saved_model_tags` exactly,
restores variables from `variables/` when the graph has a saver, and replays
`assets.extra/tf_serving_warmup_requests`. Any failure there is a failed load; and a
failed newest version makes TF Serving's next start exit (docs/serving.md). So the same
checks run here, before the rename, without TensorFlow:

- the graph file is parsed with protobuf against just the fields needed, declared in
  `receiver.protos` (unknown fields, the graph itself included, are skipped);
- the variables index is read far enough to learn how many data shards it calls for;
- every warmup record is read as TFRecord (length and masked CRC-32C), counted against
  TF Serving's limit of 1,000 and parsed as a `PredictionLog` carrying a request.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import google_crc32c
from google.protobuf import message, text_format

from receiver import protos, tensorbundle
from receiver.errors import PermanentError

WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # TF Serving's WarmupConsts::kMaxNumRecords
MAX_WARMUP_RECORD_BYTES = 64 * 1024 * 1024  # one request; read into memory to parse it
# Text format parses at about 2.5 s per MiB here: a larger pbtxt would hold a worker for
# minutes. Exports write binary; text is for small, hand-edited graphs.
MAX_PBTXT_BYTES = 16 * 1024 * 1024
_WARMUP_LOGS = ("classify_log", "regress_log", "predict_log", "multi_inference_log")
_TFRECORD_HEADER = struct.Struct("<QI")
_CRC_MASK_DELTA = 0xA282EAD8


class InvalidSavedModelError(PermanentError):
    """The version is not something TF Serving would load; the reason says what was found."""


@dataclass(frozen=True)
class SavedModelReport:
    """What the checks found in a version that passed them."""

    graph_file: str
    tags: frozenset[str]
    signatures: tuple[str, ...]
    variable_shards: int  # 0: no variables to restore
    warmup_records: int
    notes: tuple[str, ...] = field(default=())


def check(root: Path, tags: frozenset[str], max_graph_bytes: int) -> SavedModelReport:
    """Check `root` as TF Serving's loader will; raise `InvalidSavedModelError` if it fails."""
    graph_file, saved_model = _read_graph(root, max_graph_bytes)
    meta_graph = _meta_graph_for(saved_model, tags)
    shards = _check_variables(root, meta_graph)
    records = _check_warmup(root / WARMUP_FILE)
    # TF2 adds `__saved_model_init_op` to every export: not a signature anyone calls.
    signatures = tuple(
        sorted(e.key for e in meta_graph.signature_def if not e.key.startswith("__saved_model"))
    )
    notes: tuple[str, ...] = ()
    if not signatures:
        notes = (
            "the meta graph has no signatures: TF Serving loads it, but no request can call it",
        )
    return SavedModelReport(graph_file, tags, signatures, shards, records, notes)


def parse_tags(text: str) -> frozenset[str]:
    """A tag set as TF Serving's `--saved_model_tags` takes it: comma-separated."""
    return frozenset(tag.strip() for tag in text.split(",") if tag.strip())


def describe_tags(tags: frozenset[str]) -> str:
    return "{" + ", ".join(sorted(tags)) + "}"


def _read_graph(root: Path, max_graph_bytes: int) -> tuple[str, message.Message]:
    saved_model = protos.SavedModel()
    for name in ("saved_model.pb", "saved_model.pbtxt"):
        path = root / name
        if not path.is_file():
            continue
        size = path.stat().st_size
        if name.endswith(".pbtxt"):
            max_graph_bytes = min(max_graph_bytes, MAX_PBTXT_BYTES)
        if size > max_graph_bytes:
            raise InvalidSavedModelError(
                f"{name} is {size} bytes, more than {max_graph_bytes} (RECEIVER_MAX_GRAPH_BYTES); "
                "it is parsed in memory to check it"
            )
        data = path.read_bytes()
        try:
            if name.endswith(".pb"):
                saved_model.ParseFromString(data)
            else:
                text_format.Parse(
                    data.decode("utf-8"),
                    saved_model,
                    allow_unknown_field=True,
                    allow_unknown_extension=True,
                )
        except (
            message.DecodeError,
            text_format.ParseError,
            UnicodeDecodeError,
            RecursionError,
        ) as exc:
            kind = "binary" if name.endswith(".pb") else "text-format"
            raise InvalidSavedModelError(f"{name} is not a {kind} SavedModel: {exc}") from None
        if not saved_model.meta_graphs:
            raise InvalidSavedModelError(f"{name} holds no meta graph (is it a SavedModel?)")
        return name, saved_model
    raise InvalidSavedModelError("not a SavedModel: no saved_model.pb or saved_model.pbtxt")


def _meta_graph_for(saved_model: message.Message, tags: frozenset[str]) -> message.Message:
    """The meta graph TF Serving loads: the one whose tag set is exactly `tags`."""
    found = []
    for meta_graph in saved_model.meta_graphs:
        graph_tags = frozenset(meta_graph.meta_info_def.tags)
        if graph_tags == tags:
            return meta_graph
        found.append(describe_tags(graph_tags))
    raise InvalidSavedModelError(
        f"tag sets in the SavedModel: {', '.join(found)}; TF Serving loads "
        f"{describe_tags(tags)} (RECEIVER_SAVED_MODEL_TAGS)"
    )


def _needs_variables(meta_graph: message.Message) -> bool:
    """True when loading must restore state from variables/.

    The loader restores when the graph has a saver and the index exists. A TF2 export
    always has a saver, state or not, and lists what it saves in the object graph
    (variables, and objects saved without one: hash tables, embeddings); a TF1 saver
    exists only for variables.
    """
    nodes = meta_graph.object_graph_def.nodes
    if len(nodes):
        return any(node.HasField("variable") or len(node.saveable_objects) for node in nodes)
    return bool(meta_graph.HasField("saver_def"))


def _check_variables(root: Path, meta_graph: message.Message) -> int:
    variables = root / "variables"
    index = variables / "variables.index"
    if not index.is_file():
        if _needs_variables(meta_graph):
            raise InvalidSavedModelError(
                "the graph restores variables but variables/variables.index is missing "
                "(TF Serving would load it without its weights)"
            )
        return 0
    if not meta_graph.HasField("saver_def"):
        return 0  # nothing restores: the loader never reads the index
    try:
        shards = tensorbundle.read_num_shards(index)
    except tensorbundle.BundleError as exc:
        raise InvalidSavedModelError(f"variables/variables.index is unreadable: {exc}") from None
    present = sum(1 for _ in variables.iterdir())  # the index is one of them
    if shards > present:  # more than the files there: no need to look for each by name
        raise InvalidSavedModelError(
            f"variables/variables.index calls for {shards} data shard(s); "
            f"variables/ holds {present - 1} other file(s)"
        )
    missing = [
        name for name in tensorbundle.data_file_names(shards) if not (variables / name).is_file()
    ]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" * (len(missing) > 3))
        raise InvalidSavedModelError(
            f"variables/variables.index calls for {shards} data shard(s); missing: {shown}"
        )
    return shards


def _check_warmup(path: Path) -> int:
    if not path.exists():
        return 0
    if not path.is_file():
        raise InvalidSavedModelError(f"{WARMUP_FILE} is not a file")
    count = 0
    with path.open("rb") as records:
        for number, record in enumerate(_tfrecords(records), start=1):
            if number > MAX_WARMUP_RECORDS:
                raise InvalidSavedModelError(
                    f"{WARMUP_FILE} has more than {MAX_WARMUP_RECORDS} records, "
                    "TF Serving's limit (its load would fail)"
                )
            _check_prediction_log(record, number)
            count = number
    return count


def _check_prediction_log(record: bytes, number: int) -> None:
    log = protos.PredictionLog()
    try:
        log.ParseFromString(record)
    except message.DecodeError:
        raise InvalidSavedModelError(
            f"{WARMUP_FILE}: record {number} is not a PredictionLog"
        ) from None
    kind = log.WhichOneof("log_type")
    if kind not in _WARMUP_LOGS:
        raise InvalidSavedModelError(
            f"{WARMUP_FILE}: record {number} is a PredictionLog with "
            f"{kind or 'no log'}; TF Serving warms up with {', '.join(_WARMUP_LOGS)}"
        )
    if not getattr(log, kind).HasField("request"):
        raise InvalidSavedModelError(f"{WARMUP_FILE}: record {number} ({kind}) has no request")


def _tfrecords(stream: IO[bytes]) -> Iterator[bytes]:
    """The records of a TFRecord file, each checked against its two masked CRC-32Cs."""
    number = 0
    while header := stream.read(_TFRECORD_HEADER.size):
        number += 1
        if len(header) < _TFRECORD_HEADER.size:
            raise _truncated(number)
        length, length_crc = _TFRECORD_HEADER.unpack(header)
        if _masked_crc(header[:8]) != length_crc:
            raise InvalidSavedModelError(
                f"{WARMUP_FILE}: record {number} has a corrupt length (not a TFRecord file?)"
            )
        if length > MAX_WARMUP_RECORD_BYTES:
            raise InvalidSavedModelError(
                f"{WARMUP_FILE}: record {number} is {length} bytes, over {MAX_WARMUP_RECORD_BYTES}"
            )
        data = stream.read(length)
        footer = stream.read(4)
        if len(data) < length or len(footer) < 4:
            raise _truncated(number)
        if _masked_crc(data) != struct.unpack("<I", footer)[0]:
            raise InvalidSavedModelError(f"{WARMUP_FILE}: record {number} fails its CRC-32C")
        yield data


def _truncated(number: int) -> InvalidSavedModelError:
    return InvalidSavedModelError(f"{WARMUP_FILE} is cut short in record {number}")


def _masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C (tensorflow/core/lib/hash/crc32c.h `Mask`)."""
    crc: int = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _CRC_MASK_DELTA) & 0xFFFFFFFF

"""The few TensorFlow and TF Serving protobuf messages the receiver reads, declared here.

Only the fields the SavedModel checks need are declared, with TensorFlow's own field
numbers (tensorflow/core/protobuf/saved_model.proto, meta_graph.proto, saver.proto,
saved_object_graph.proto, tensor_bundle.proto; tensorflow_serving/apis/prediction_log.proto).
Every other field, the multi-gigabyte `graph_def` included, is an unknown field to these
messages: protobuf skips it. Declaring them through protobuf's descriptor API keeps the
parsing protobuf's own, without a dependency on TensorFlow (about 600 MB).

A map field is declared as the repeated `...Entry` message it is on the wire, with only
its `key`: the checks need signature names, not signatures.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "receiver.checks"  # not TensorFlow's: these are partial views of its messages

# message -> [(field name, number, type, label, message type or "")]
_MESSAGES: dict[str, list[tuple[str, int, int, int, str]]] = {
    "SavedModel": [
        ("saved_model_schema_version", 1, _F.TYPE_INT64, _F.LABEL_OPTIONAL, ""),
        ("meta_graphs", 2, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "MetaGraphDef"),
    ],
    "MetaGraphDef": [
        ("meta_info_def", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "MetaInfoDef"),
        ("saver_def", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "SaverDef"),
        ("signature_def", 5, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "SignatureDefEntry"),
        ("object_graph_def", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "SavedObjectGraph"),
    ],
    "MetaInfoDef": [
        ("meta_graph_version", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("tags", 4, _F.TYPE_STRING, _F.LABEL_REPEATED, ""),
        ("tensorflow_version", 5, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
    ],
    "SaverDef": [
        ("filename_tensor_name", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
        ("restore_op_name", 3, _F.TYPE_STRING, _F.LABEL_OPTIONAL, ""),
    ],
    "SignatureDefEntry": [("key", 1, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "")],
    "SavedObjectGraph": [("nodes", 1, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "SavedObject")],
    # SavedObject's `kind` is a oneof; the checks only ask whether a node is a variable.
    "SavedObject": [
        ("variable", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "SavedVariable"),
        # Objects checkpointed without a tf.Variable (hash tables, embeddings): the
        # map's entries, their keys only.
        ("saveable_objects", 11, _F.TYPE_MESSAGE, _F.LABEL_REPEATED, "SignatureDefEntry"),
    ],
    "SavedVariable": [("name", 6, _F.TYPE_STRING, _F.LABEL_OPTIONAL, "")],
    "BundleHeaderProto": [("num_shards", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, "")],
    "PredictionLog": [
        ("classify_log", 2, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
        ("regress_log", 3, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
        ("multi_inference_log", 4, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
        ("session_run_log", 5, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
        ("predict_log", 6, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
        ("predict_streamed_log", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Log"),
    ],
    # Every *Log of a PredictionLog: `request = 1`, `response = 2` (repeated in the
    # streamed one, whose requests are then unknown fields here: it is refused anyway).
    "Log": [("request", 1, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, "Request")],
    "Request": [],
}
_ONEOFS = {"PredictionLog": "log_type"}


def _build() -> dict[str, type[message.Message]]:
    file = descriptor_pb2.FileDescriptorProto(
        name="receiver_checks.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        declared = file.message_type.add(name=name)
        oneof = _ONEOFS.get(name)
        if oneof:
            declared.oneof_decl.add(name=oneof)
        for field_name, number, kind, label, type_name in fields:
            field = declared.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = f".{_PACKAGE}.{type_name}"
            if oneof:
                field.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
SavedModel = _CLASSES["SavedModel"]
BundleHeaderProto = _CLASSES["BundleHeaderProto"]
PredictionLog = _CLASSES["PredictionLog"]

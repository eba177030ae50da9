"""Keep TF Serving's `--model_config_file` listing every model under the model dir.

The file is a text-format `tensorflow.serving.ModelServerConfig`. It is read and written
with protobuf's own text_format against the schema below (a subset of TF Serving's
model_server_config.proto, file_system_storage_path_source.proto and
logging_config.proto), so the syntax is exactly TF Serving's and every field an operator
set by hand (`model_version_policy`, `version_labels`, `logging_config`) survives a
rewrite. Comments do not survive (text_format drops them). Rules:

  * a model is added only once its first version directory is in place (TF Serving's
    reload blocks until a newly listed model loads);
  * models are never dropped, but for one whose only version TF Serving failed to load
    and the receiver withdrew (`remove_model`); existing entries are never changed;
  * a file that does not parse (or uses fields this schema lacks) is left alone and
    reported, never overwritten;
  * writes are atomic: a temp file beside it, fsynced, renamed over it.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from receiver import modeldir

log = logging.getLogger(__name__)

# TF Serving's schema, field numbers as in tensorflow_serving/config/*.proto.
_SCHEMA = """
name: "receiver/model_server_config.proto"
package: "tensorflow.serving"
syntax: "proto3"
message_type {
  name: "ModelServerConfig"
  field { name: "model_config_list" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ModelConfigList" }
}
message_type {
  name: "ModelConfigList"
  field { name: "config" number: 1 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ModelConfig" }
}
message_type {
  name: "ModelConfig"
  field { name: "name" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "base_path" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "model_type" number: 3 label: LABEL_OPTIONAL type: TYPE_ENUM
          type_name: ".tensorflow.serving.ModelType" }
  field { name: "model_platform" number: 4 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "model_version_policy" number: 7 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ServableVersionPolicy" }
  field { name: "version_labels" number: 8 label: LABEL_REPEATED type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ModelConfig.VersionLabelsEntry" }
  field { name: "logging_config" number: 6 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.LoggingConfig" }
  nested_type {
    name: "VersionLabelsEntry"
    field { name: "key" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
    field { name: "value" number: 2 label: LABEL_OPTIONAL type: TYPE_INT64 }
    options { map_entry: true }
  }
}
message_type {
  name: "ServableVersionPolicy"
  field { name: "latest" number: 100 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ServableVersionPolicy.Latest" oneof_index: 0 }
  field { name: "all" number: 101 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ServableVersionPolicy.All" oneof_index: 0 }
  field { name: "specific" number: 102 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.ServableVersionPolicy.Specific" oneof_index: 0 }
  nested_type {
    name: "Latest"
    field { name: "num_versions" number: 1 label: LABEL_OPTIONAL type: TYPE_UINT32 }
  }
  nested_type { name: "All" }
  nested_type {
    name: "Specific"
    field { name: "versions" number: 1 label: LABEL_REPEATED type: TYPE_INT64 }
  }
  oneof_decl { name: "policy_choice" }
}
message_type {
  name: "LoggingConfig"
  field { name: "log_collector_config" number: 1 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.LogCollectorConfig" }
  field { name: "sampling_config" number: 2 label: LABEL_OPTIONAL type: TYPE_MESSAGE
          type_name: ".tensorflow.serving.SamplingConfig" }
}
message_type {
  name: "LogCollectorConfig"
  field { name: "type" number: 1 label: LABEL_OPTIONAL type: TYPE_STRING }
  field { name: "filename_prefix" number: 2 label: LABEL_OPTIONAL type: TYPE_STRING }
}
message_type {
  name: "SamplingConfig"
  field { name: "sampling_rate" number: 1 label: LABEL_OPTIONAL type: TYPE_DOUBLE }
}
enum_type {
  name: "ModelType"
  value { name: "MODEL_TYPE_UNSPECIFIED" number: 0 }
  value { name: "TENSORFLOW" number: 1 }
  value { name: "OTHER" number: 2 }
}
"""


def _message_class() -> Any:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(text_format.Parse(_SCHEMA, descriptor_pb2.FileDescriptorProto()))
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.ModelServerConfig")
    )


ModelServerConfig = _message_class()


@dataclass(frozen=True)
class ConfigUpdate:
    """What an update did: `added` model names, or `problem` if the file was left alone."""

    path: Path
    added: tuple[str, ...] = ()
    problem: str | None = None


def update_model_config(path: Path, model_dir: Path, only: set[str] | None = None) -> ConfigUpdate:
    """Add every model that has a version under `model_dir` and is missing from `path`
    (of `only` these, when given)."""
    with modeldir.directory_lock(path.parent):
        config = ModelServerConfig()
        if path.exists():
            try:
                text_format.Parse(path.read_text(), config)
            except (text_format.ParseError, UnicodeDecodeError) as exc:
                problem = (
                    f"{path} is not a model_config_list TF Serving can read ({exc}); left alone"
                )
                log.error("%s", problem)
                return ConfigUpdate(path, problem=problem)
        listed = {entry.name for entry in config.model_config_list.config}
        added = []
        for model, versions in modeldir.installed_models(model_dir).items():
            if versions and model not in listed and (only is None or model in only):
                entry = config.model_config_list.config.add()
                entry.name = model
                entry.base_path = str((model_dir / model).resolve())
                entry.model_platform = "tensorflow"
                added.append(model)
        if added or not path.exists():
            _write_atomically(path, text_format.MessageToString(config))
            log.info("model config %s: added %s", path, ", ".join(added) or "nothing (created)")
        return ConfigUpdate(path, added=tuple(added))


def remove_model(path: Path, model: str, model_dir: Path) -> bool:
    """Drop `model` from the file if it has no version left (its only one was withdrawn):
    TF Serving's next start would otherwise wait for a model with nothing to load."""
    with modeldir.directory_lock(path.parent):
        if modeldir.installed_versions(model_dir / model) or not path.exists():
            return False
        config = ModelServerConfig()
        try:
            text_format.Parse(path.read_text(), config)
        except (text_format.ParseError, UnicodeDecodeError):
            return False  # reported by every update; left alone
        entries = config.model_config_list.config
        keep = [entry for entry in entries if entry.name != model]
        if len(keep) == len(entries):
            return False
        del entries[:]
        entries.extend(keep)
        _write_atomically(path, text_format.MessageToString(config))
        log.info("model config %s: removed %s, which has no version left", path, model)
        return True


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)
    modeldir.fsync_dir(path.parent)


def describe(path: Path) -> dict[str, object]:
    """For /status: the models the file lists, or why it cannot be read."""
    config = ModelServerConfig()
    try:
        text_format.Parse(path.read_text(), config)
    except FileNotFoundError:
        return {"path": str(path), "models": [], "problem": "not written yet"}
    except (OSError, text_format.ParseError, UnicodeDecodeError) as exc:
        return {"path": str(path), "models": None, "problem": f"left alone, unreadable: {exc}"}
    names = [entry.name for entry in config.model_config_list.config]
    return {"path": str(path), "models": names, "problem": None}

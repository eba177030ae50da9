"""Real TensorFlow, in its own virtualenv (`make tf`), as a stand-in for TF Serving.

TensorFlow is large and not a runtime dependency, so it lives in `.venv-tf/` beside the
project's own venv; tests that need it skip with the command to run when it is missing.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

TF_PYTHON = PROJECT_ROOT / ".venv-tf" / "bin" / "python"
# A Keras model with known weights: y = 3x + 1.
KERAS_WEIGHTS = (3.0, 1.0)

_EXPORT = """
import sys
import keras, numpy
inputs = keras.Input(shape=(1,), name="x")
layer = keras.layers.Dense(1)
model = keras.Model(inputs, layer(inputs))
layer.set_weights([numpy.array([[{w}]]), numpy.array([{b}])])
model.export(sys.argv[1], verbose=False)
"""

# Loads every SavedModel named on stdin and runs its serving signature on [1, 2, 5].
_LOAD_AND_PREDICT = """
import json, sys
import tensorflow as tf
results = {}
for name, path in json.load(sys.stdin).items():
    try:
        function = tf.saved_model.load(path).signatures["serving_default"]
        (key, spec), = function.structured_input_signature[1].items()
        x = [[1.0], [2.0], [5.0]] if spec.shape.rank == 2 else [1.0, 2.0, 5.0]
        (output,) = function(**{key: tf.constant(x, dtype=spec.dtype)}).values()
        results[name] = [round(float(v), 4) for v in output.numpy().ravel()]
    except Exception as exc:
        results[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(results))
"""


# Exports that a training pipeline produces by mistake, or that TF Serving cannot load
# for reasons only TensorFlow sees: `train` is tagged train only (TF1 SavedModelBuilder);
# `sharded` keeps its variables in 4 data shards; `pbtxt` is a text-format SavedModel;
# `nosig` has no signatures (TF Serving loads it; nothing can call it); `table` keeps
# its state in a hash table, no tf.Variable;
# `keras` is a Keras 3 export (y = 3x + 1) with a serving signature.
_EXPORTS = """
import os, sys
import keras, numpy
import tensorflow as tf
out = sys.argv[1]
graph = tf.Graph()
with graph.as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None], name="x")
    w = tf.compat.v1.get_variable("w", initializer=2.0)
    y = tf.identity(x * w, name="y")
    signature = tf.compat.v1.saved_model.predict_signature_def({"x": x}, {"y": y})
    with tf.compat.v1.Session() as session:
        session.run(tf.compat.v1.global_variables_initializer())
        for name, tags, as_text, signatures in (
            ("train", ["train"], False, {"serving_default": signature}),
            ("pbtxt", ["serve"], True, {"serving_default": signature}),
            ("nosig", ["serve"], False, {}),
        ):
            builder = tf.compat.v1.saved_model.Builder(os.path.join(out, name))
            builder.add_meta_graph_and_variables(session, tags, signature_def_map=signatures)
            builder.save(as_text=as_text)

class Sharded(tf.Module):
    def __init__(self):
        self.weights = [tf.Variable(tf.ones([1000]) * i) for i in range(4)]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, x):
        return x + sum(tf.reduce_sum(w) for w in self.weights)

module = Sharded()
policy = tf.train.experimental.MaxShardSizePolicy(max_shard_size=5000)
tf.saved_model.save(module, os.path.join(out, "sharded"), signatures=module.__call__,
                    options=tf.saved_model.SaveOptions(experimental_sharding_callback=policy))
class Table(tf.Module):  # state in a hash table, not a tf.Variable: restored all the same

    def __init__(self):
        self.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, -1)
        self.table.insert(tf.constant(["a"]), tf.constant([1], tf.int64))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, keys):
        return self.table.lookup(keys)

table = Table()
tf.saved_model.save(table, os.path.join(out, "table"), signatures=table.__call__)
inputs = keras.Input(shape=(1,), name="x")
layer = keras.layers.Dense(1)
model = keras.Model(inputs, layer(inputs))
layer.set_weights([numpy.array([[3.0]]), numpy.array([1.0])])
model.export(os.path.join(out, "keras"), verbose=False)
"""


def export_test_models(target: Path) -> Path:
    """Make the exports of `_EXPORTS` under `target` (needs `.venv-tf`)."""
    _run(_EXPORTS, str(target))
    return target


def require_tensorflow() -> Path:
    if not TF_PYTHON.exists():
        pytest.skip("TensorFlow is not installed: `make tf` (or `make test`) installs it")
    return TF_PYTHON


def _run(script: str, *args: str, stdin: str = "") -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [str(require_tensorflow()), "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def export_keras_model(target: Path) -> Path:
    """`model.export(dir)` of Keras 3: saved_model.pb, fingerprint.pb, variables/, assets/."""
    weight, bias = KERAS_WEIGHTS
    _run(_EXPORT.format(w=weight, b=bias), str(target))
    return target


def predict(models: dict[str, Path]) -> dict[str, list[float] | str]:
    """Each model's output for inputs [1, 2, 5], or the error TensorFlow gave loading it."""
    answer: dict[str, list[float] | str] = json.loads(
        _run(_LOAD_AND_PREDICT, stdin=json.dumps({k: str(v) for k, v in models.items()}))
    )
    return answer

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

"""Known inputs and answers shared by the client suites."""

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EXPECTED = json.loads((REPO / "examples/models/iris/expected.json").read_text())
README_INPUT = json.loads((REPO / "examples/models/iris/input.json").read_text())

# tract and onnxruntime may differ in the last bits of a float.
RTOL = 1e-5
ATOL = 1e-7


def iris_input():
    """The input of expected.json: its name and a [6, 4] FP32 array."""
    spec = EXPECTED["inputs"][0]
    return spec["name"], np.array(spec["data"], dtype=np.float32).reshape(spec["shape"])


def expected_output(name):
    for out in EXPECTED["outputs"]:
        if out["name"] == name:
            dtype = {"INT64": np.int64, "FP32": np.float32}[out["datatype"]]
            return np.array(out["data"], dtype=dtype).reshape(out["shape"])
    raise KeyError(name)


def check_iris(label, probabilities):
    """Asserts iris outputs equal what onnxruntime computed for expected.json's input."""
    want_label = expected_output("label")
    want_prob = expected_output("probabilities")
    assert label.dtype == np.int64
    assert label.shape == want_label.shape
    assert label.tolist() == want_label.tolist()
    assert probabilities.dtype == np.float32
    assert probabilities.shape == want_prob.shape
    np.testing.assert_allclose(probabilities, want_prob, rtol=RTOL, atol=ATOL)

"""Train the iris model the Python servers load, and check it matches inferd's.

Runs in the "tools" venv. Writes OUT/model.joblib (scikit-learn
LogisticRegression(max_iter=1000) fitted on load_iris, as in
examples/make_models.py) and copies the repository's ONNX export to
OUT/model.onnx, after checking on the six rows of expected.json that

  * the joblib model predicts the same labels as expected.json,
  * its probabilities match expected.json (the ONNX export of the same fit),
  * onnxruntime on model.onnx reproduces expected.json.

So every server in the comparison answers with the same classifier.
"""

import argparse
import json
import shutil
from pathlib import Path

import joblib
import numpy as np
import onnxruntime as ort
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def tensor(obj):
    return np.asarray(obj["data"]).reshape(obj["shape"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, type=Path)
    parser.add_argument("--expected", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()

    expected = json.loads(args.expected.read_text())
    rows = tensor(expected["inputs"][0]).astype(np.float32)
    outputs = {o["name"]: tensor(o) for o in expected["outputs"]}

    features, target = load_iris(return_X_y=True)
    clf = LogisticRegression(max_iter=1000).fit(features, target)
    np.testing.assert_array_equal(clf.predict(rows), outputs["label"])
    np.testing.assert_allclose(clf.predict_proba(rows), outputs["probabilities"], atol=1e-5)

    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"input": rows})
    np.testing.assert_array_equal(label, outputs["label"])
    np.testing.assert_allclose(probabilities, outputs["probabilities"], atol=1e-6)

    args.out.mkdir(parents=True, exist_ok=True)
    joblib.dump(clf, args.out / "model.joblib")
    shutil.copyfile(args.onnx, args.out / "model.onnx")
    print(f"models ready in {args.out}: labels {label.tolist()} agree (joblib, onnx, expected.json)")


if __name__ == "__main__":
    main()

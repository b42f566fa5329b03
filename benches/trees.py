"""Tree-runtime benchmark: inferd's tree engine vs onnxruntime vs each library.

Run through benches/trees.sh, which makes the venv and builds the engine's
bench program. Trains, at run time, on seeded synthetic data (30 features,
binary classification): XGBoost and LightGBM (200 trees, depth 8), a
scikit-learn RandomForest (200 trees, depth 8) and GradientBoosting
(200 trees, depth 6), the last two exported to ONNX with skl2onnx and the
first two with onnxmltools for onnxruntime. Then measures rows/s at batch
sizes 1, 16 and 256, everything on one thread:

- inferd: crates/inferd-trees/examples/bench.rs (in process, no server);
- onnxruntime: Python, intra_op_num_threads=1, InferenceSession.run;
- the library's own predict (xgboost inplace_predict with nthread=1,
  LightGBM predict with num_threads=1, scikit-learn predict_proba with
  n_jobs=1).

Usage: trees.py <bench binary> <work dir> [seconds per measurement]
"""

import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnx
import onnxruntime as ort
import xgboost as xgb
from onnx import helper
from onnxmltools import convert_lightgbm, convert_xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MLFloat
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier

BATCHES = [1, 16, 256]
FEATURES = 30


def timed(fn, rows, batch, seconds):
    """rows/s of fn over whole batches taken in turn from rows."""
    pool = len(rows)
    fn(rows[:batch])  # warm up
    done, start, calls = 0, 0, 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds or calls < 3:
        if start + batch > pool:
            start = 0
        fn(rows[start:start + batch])
        done += batch
        start += batch
        calls += 1
    return done / (time.perf_counter() - began)


def ort_session(model):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # onnxmltools' LightGBM label shape warns on every run
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def ensemble_spec(model):
    """The TreeEnsemble node's attributes as the engine's bench reads them."""
    node = next(n for n in model.graph.node if n.op_type.startswith("TreeEnsemble"))
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    classifier = node.op_type == "TreeEnsembleClassifier"
    prefix = "class" if classifier else "target"

    def text(v):
        return v.decode() if isinstance(v, bytes) else v

    out = {
        "nodes_treeids": attrs["nodes_treeids"],
        "nodes_nodeids": attrs["nodes_nodeids"],
        "nodes_featureids": attrs["nodes_featureids"],
        "nodes_modes": [text(m) for m in attrs["nodes_modes"]],
        "nodes_values": list(attrs["nodes_values"]),
        "nodes_truenodeids": attrs["nodes_truenodeids"],
        "nodes_falsenodeids": attrs["nodes_falsenodeids"],
        "nodes_missing_value_tracks_true": attrs.get("nodes_missing_value_tracks_true", []),
        "leaf_treeids": attrs[f"{prefix}_treeids"],
        "leaf_nodeids": attrs[f"{prefix}_nodeids"],
        "leaf_ids": attrs[f"{prefix}_ids"],
        "leaf_weights": list(attrs[f"{prefix}_weights"]),
        "base_values": list(attrs.get("base_values", [])),
        "post_transform": text(attrs.get("post_transform", b"NONE")),
        "classlabels_int64s": attrs.get("classlabels_int64s", []),
    }
    if not classifier:
        out["n_targets"] = attrs["n_targets"]
        out["aggregate_function"] = text(attrs.get("aggregate_function", b"SUM"))
    return {"op": "classifier" if classifier else "regressor", "n_features": FEATURES,
            "attributes": out}


def inferd(binary, kind, model_path, rows_path, seconds):
    result = subprocess.run([binary, kind, str(model_path), str(rows_path), str(FEATURES),
                             str(seconds)], check=True, capture_output=True, text=True)
    rates = {}
    for line in result.stdout.splitlines():
        record = json.loads(line)
        if "batch" in record:
            rates[record["batch"]] = record["rows_per_s"]
    return rates


def main():
    binary, work = sys.argv[1], Path(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    work.mkdir(parents=True, exist_ok=True)
    X, y = make_classification(n_samples=24000, n_features=FEATURES, n_informative=15,
                               random_state=0)
    X = X.astype(np.float32)
    X_train, y_train, X_test = X[:20000], y[:20000], X[20000:]
    rows_path = work / "rows.f32"
    X_test.astype("<f4").tofile(rows_path)

    cases = []
    print("training...", file=sys.stderr)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 8, "eta": 0.1,
                         "nthread": 2, "seed": 0}, xgb.DMatrix(X_train, label=y_train), 200)
    booster.save_model(str(work / "xgb.json"))
    booster.set_param({"nthread": 1})
    xgb_onnx = convert_xgboost(booster, initial_types=[("input", MLFloat([None, FEATURES]))],
                               target_opset=15)
    cases.append(("XGBoost", "xgboost", work / "xgb.json", xgb_onnx,
                  lambda r: booster.inplace_predict(r)))

    lgbm = lgb.train({"objective": "binary", "max_depth": 8, "num_leaves": 255,
                      "num_threads": 2, "verbose": -1, "seed": 0},
                     lgb.Dataset(X_train, y_train), 200)
    lgbm.save_model(str(work / "lgb.txt"))
    lgb_onnx = convert_lightgbm(lgbm, initial_types=[("input", MLFloat([None, FEATURES]))],
                                target_opset=15, zipmap=False)
    cases.append(("LightGBM", "lightgbm", work / "lgb.txt", lgb_onnx,
                  lambda r: lgbm.predict(r, num_threads=1)))

    for name, est in [
        ("sklearn RF", RandomForestClassifier(n_estimators=200, max_depth=8, n_jobs=2,
                                              random_state=0)),
        ("sklearn GB", GradientBoostingClassifier(n_estimators=200, max_depth=6,
                                                  random_state=0)),
    ]:
        est.fit(X_train, y_train)
        if hasattr(est, "n_jobs"):
            est.n_jobs = 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = to_onnx(est, initial_types=[("input", FloatTensorType([None, FEATURES]))],
                            options={id(est): {"zipmap": False}},
                            target_opset={"": 17, "ai.onnx.ml": 3})
        spec = work / f"{name.split()[1].lower()}.json"
        spec.write_text(json.dumps(ensemble_spec(model)))
        cases.append((name, "onnx", spec, model, est.predict_proba))

    print("| model | batch | inferd rows/s | onnxruntime rows/s | library rows/s "
          "| inferd / onnxruntime | library / onnxruntime |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for name, kind, path, onnx_model, library in cases:
        print(f"measuring {name}...", file=sys.stderr)
        ours = inferd(binary, kind, path, rows_path, seconds)
        session = ort_session(onnx_model)
        feed = session.get_inputs()[0].name
        for batch in BATCHES:
            theirs = timed(lambda r: session.run(None, {feed: r}), X_test, batch, seconds)
            lib = timed(library, X_test, batch, seconds)
            mine = ours[batch]
            results.append({"model": name, "batch": batch, "inferd": mine,
                            "onnxruntime": theirs, "library": lib})
            print(f"| {name} | {batch} | {mine:,.0f} | {theirs:,.0f} | {lib:,.0f} "
                  f"| {mine / theirs:.1f}x | {lib / theirs:.2f}x |", flush=True)
    (work / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

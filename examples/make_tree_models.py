"""Generate the tree-ensemble test fixtures (XGBoost, LightGBM, ONNX-ML).

Run from the repository root:

    python3 -m venv ~/.cache/inferd-trees-venv
    ~/.cache/inferd-trees-venv/bin/pip install -r examples/requirements-trees.txt
    ~/.cache/inferd-trees-venv/bin/python examples/make_tree_models.py

Each case is written to tests/fixtures/models/trees/<name>/ as the model file
(model.json, model.txt or model.onnx) and expected.json:

    {"library": "...",
     "inputs":  [{"name", "datatype": "FP32", "shape": [rows, features],
                  "data": [...]}],          # null stands for NaN (missing)
     "outputs": [{"name", "datatype", "shape", "data"}, ...]}

Expected outputs are the library's own predictions: for XGBoost and LightGBM
`Booster.predict` (as output `predict`) and, for classifiers, every class's
probability (`predict_proba`); for ONNX models what onnxruntime computes, with
a ZipMap's list of maps turned into an FP32 [rows, classes] tensor under the
same name. Inputs include rows with NaN so missing-value handling is checked.
Data sets are scikit-learn's bundled ones or seeded synthetic data, and
training is seeded, so repeated runs give the same files.
"""

import json
import shutil
import warnings
from pathlib import Path

import lightgbm as lgb
import numpy as np
import onnxruntime as ort
import xgboost as xgb
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "models" / "trees"
SKL2ONNX_OPSET = {"": 17, "ai.onnx.ml": 3}
RNG_SEED = 7


def with_missing(X, fraction, seed):
    """A copy of X with `fraction` of its cells set to NaN (seeded)."""
    rng = np.random.default_rng(seed)
    X = X.astype(np.float64).copy()
    X[rng.random(X.shape) < fraction] = np.nan
    return X


def test_rows(X, count=20):
    """`count` rows spread over X plus rows with NaN in them, as float32."""
    idx = np.linspace(0, len(X) - 1, count).astype(int)
    rows = X[idx].astype(np.float32)
    nan_rows = rows[:4].copy()
    nan_rows[0, :] = np.nan                      # everything missing
    nan_rows[1, ::2] = np.nan                    # every other feature
    nan_rows[2, 1::2] = np.nan
    nan_rows[3, 0] = np.nan                      # one feature
    return np.vstack([rows, nan_rows])


def tensor(name, array, datatype):
    array = np.asarray(array)
    flat = array.reshape(-1).tolist()
    if datatype in ("FP32", "FP64"):
        flat = [None if (isinstance(v, float) and np.isnan(v)) else float(v) for v in flat]
    return {"name": name, "datatype": datatype, "shape": list(array.shape), "data": flat}


def write_case(name, model_file, writer, library, rows, outputs, input_name="input"):
    directory = OUT / name
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    writer(directory / model_file)
    expected = {
        "library": library,
        "inputs": [tensor(input_name, rows, "FP32")],
        "outputs": outputs,
    }
    (directory / "expected.json").write_text(json.dumps(expected, separators=(",", ":")) + "\n")
    size = sum(p.stat().st_size for p in directory.iterdir())
    print(f"{name:28s} {size / 1024:7.1f} KiB")


# ------------------------------------------------------------------ XGBoost


def xgboost_case(name, params, X, y, rounds, classifier=None):
    booster = xgb.train(
        {"seed": RNG_SEED, "nthread": 1, **params}, xgb.DMatrix(X, label=y), rounds
    )
    rows = test_rows(X)
    pred = booster.predict(xgb.DMatrix(rows))
    outputs = [tensor("predict", pred.astype(np.float32), "FP32")]
    if classifier == "binary":
        proba = np.stack([1 - pred, pred], axis=1)
        outputs.append(tensor("predict_proba", proba.astype(np.float32), "FP32"))
    elif classifier == "softprob":
        outputs.append(tensor("predict_proba", pred.astype(np.float32), "FP32"))
    elif classifier == "softmax":
        margin = booster.predict(xgb.DMatrix(rows), output_margin=True)
        e = np.exp(margin - margin.max(axis=1, keepdims=True))
        outputs.append(tensor("predict_proba", (e / e.sum(axis=1, keepdims=True)).astype(np.float32), "FP32"))
    write_case(name, "model.json", lambda p: booster.save_model(str(p)),
               f"xgboost {xgb.__version__}", rows, outputs)


def xgboost_cases():
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xb = with_missing(Xb, 0.05, 1)
    xgboost_case("xgb_binary", {"objective": "binary:logistic", "max_depth": 3}, Xb, yb, 12, "binary")
    xgboost_case("xgb_logitraw", {"objective": "binary:logitraw", "max_depth": 2}, Xb, yb, 3)

    Xi, yi = load_iris(return_X_y=True)
    Xi = with_missing(Xi, 0.05, 2)
    xgboost_case("xgb_multiclass", {"objective": "multi:softprob", "num_class": 3, "max_depth": 3},
                 Xi, yi, 8, "softprob")
    xgboost_case("xgb_softmax", {"objective": "multi:softmax", "num_class": 3, "max_depth": 2},
                 Xi, yi, 4, "softmax")

    Xd, yd = load_diabetes(return_X_y=True)
    Xd = with_missing(Xd, 0.05, 3)
    xgboost_case("xgb_regression", {"objective": "reg:squarederror", "max_depth": 3}, Xd, yd, 15)
    xgboost_case("xgb_poisson", {"objective": "count:poisson", "max_depth": 2}, Xd, yd / 50.0, 4)


# ------------------------------------------------------------------ LightGBM


def lightgbm_case(name, params, X, y, rounds, classifier=None, categorical="auto"):
    data = lgb.Dataset(X, label=y, categorical_feature=categorical, free_raw_data=False)
    booster = lgb.train(
        {"seed": RNG_SEED, "num_threads": 1, "verbose": -1, "deterministic": True, **params},
        data, rounds,
    )
    rows = test_rows(X)
    if categorical != "auto":
        # Categories outside the training set, negative and fractional.
        rows[5, categorical[0]] = 17
        rows[6, categorical[0]] = -1
        rows[7, categorical[0]] = 2.7
    pred = booster.predict(rows)
    outputs = [tensor("predict", pred.astype(np.float32), "FP32")]
    if classifier == "binary":
        proba = np.stack([1 - pred, pred], axis=1)
        outputs.append(tensor("predict_proba", proba.astype(np.float32), "FP32"))
    elif classifier == "multiclass":
        outputs.append(tensor("predict_proba", pred.astype(np.float32), "FP32"))
    write_case(name, "model.txt", lambda p: booster.save_model(str(p)),
               f"lightgbm {lgb.__version__}", rows, outputs)


def lightgbm_cases():
    Xb, yb = load_breast_cancer(return_X_y=True)
    # NaN in the first half of the features only: those splits get missing
    # type NaN, the others None (NaN counts as 0).
    Xb = Xb.copy()
    Xb[:, :15] = with_missing(Xb[:, :15], 0.08, 4)
    lightgbm_case("lgb_binary", {"objective": "binary", "num_leaves": 8, "sigmoid": 1.5},
                  Xb, yb, 12, "binary")

    Xi, yi = load_iris(return_X_y=True)
    Xi = with_missing(Xi, 0.05, 5)
    lightgbm_case("lgb_multiclass", {"objective": "multiclass", "num_class": 3, "num_leaves": 6,
                                     "min_data_in_leaf": 5}, Xi, yi, 6, "multiclass")

    Xd, yd = load_diabetes(return_X_y=True)
    Xd = with_missing(Xd, 0.05, 6)
    lightgbm_case("lgb_regression", {"objective": "regression", "num_leaves": 10,
                                     "learning_rate": 0.2}, Xd, yd, 15)
    lightgbm_case("lgb_zero_missing", {"objective": "regression", "num_leaves": 6,
                                       "zero_as_missing": True}, Xd, yd, 4)

    # A categorical feature (column 0, 6 categories) beside numeric ones.
    rng = np.random.default_rng(8)
    n = 600
    cat = rng.integers(0, 6, n).astype(np.float64)
    num = rng.normal(size=(n, 3))
    y = (np.isin(cat, [1, 4]) * 2.0 + num[:, 0] + rng.normal(scale=0.1, size=n))
    Xc = np.column_stack([cat, num])
    Xc[rng.random(n) < 0.05, 0] = np.nan
    lightgbm_case("lgb_categorical", {"objective": "regression", "num_leaves": 6,
                                      "min_data_per_group": 5, "cat_smooth": 1},
                  Xc, y, 6, categorical=[0])


# --------------------------------------------------------------------- ONNX


def run_onnxruntime(path, rows, input_name="input"):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {input_name: rows})))


def onnx_case(name, estimator, X, zipmap=True, classifier=True):
    final = estimator.steps[-1][1] if hasattr(estimator, "steps") else estimator
    options = None if (zipmap or not classifier) else {id(final): {"zipmap": False}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = to_onnx(estimator, initial_types=[("input", FloatTensorType([None, X.shape[1]]))],
                        options=options, target_opset=SKL2ONNX_OPSET)
    rows = test_rows(X)
    directory = OUT / name
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "model.onnx"
    path.write_bytes(model.SerializeToString())
    results = run_onnxruntime(path, rows)
    outputs = []
    for out_name, value in results.items():
        if isinstance(value, list):
            # ZipMap: one {label: probability} map per row.
            labels = list(value[0].keys())
            value = np.array([[row[k] for k in labels] for row in value], dtype=np.float32)
        value = np.asarray(value)
        if value.dtype == np.int64:
            outputs.append({"name": out_name, "datatype": "INT64", "shape": list(value.shape),
                            "data": value.reshape(-1).tolist()})
        elif value.dtype == object or value.dtype.kind in "US":
            outputs.append({"name": out_name, "datatype": "BYTES", "shape": list(value.shape),
                            "data": [str(v) for v in value.reshape(-1)]})
        else:
            outputs.append(tensor(out_name, value.astype(np.float32), "FP32"))
    write_case(name, "model.onnx", lambda p: p.write_bytes(model.SerializeToString()),
               f"onnxruntime {ort.__version__} (skl2onnx model)", rows, outputs)


def onnx_cases():
    Xi, yi = load_iris(return_X_y=True)
    Xb, yb = load_breast_cancer(return_X_y=True)
    Xd, yd = load_diabetes(return_X_y=True)
    onnx_case("sk_rf_zipmap", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
              .fit(Xi, yi), Xi, zipmap=True)
    onnx_case("sk_rf_binary", RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0)
              .fit(Xb, yb), Xb, zipmap=False)
    onnx_case("sk_gb_binary", GradientBoostingClassifier(n_estimators=15, max_depth=3, random_state=0)
              .fit(Xb, yb), Xb, zipmap=False)
    onnx_case("sk_gb_multiclass", GradientBoostingClassifier(n_estimators=8, max_depth=2,
                                                             random_state=0).fit(Xi, yi), Xi, zipmap=True)
    onnx_case("sk_rf_regressor", RandomForestRegressor(n_estimators=8, max_depth=4, random_state=0)
              .fit(Xd, yd), Xd, classifier=False)
    onnx_case("sk_gb_regressor", GradientBoostingRegressor(n_estimators=15, max_depth=3,
                                                           random_state=0).fit(Xd, yd), Xd, classifier=False)
    onnx_case("sk_et_regressor", ExtraTreesRegressor(n_estimators=5, max_depth=4, random_state=0)
              .fit(Xd, yd), Xd, classifier=False)
    onnx_case("sk_scaler_gb", make_pipeline(StandardScaler(), GradientBoostingClassifier(
        n_estimators=8, max_depth=2, random_state=0)).fit(Xi, yi), Xi, zipmap=True)
    names = np.array(["setosa", "versicolor", "virginica"])[yi]
    onnx_case("sk_dt_strings", DecisionTreeClassifier(max_depth=4, random_state=0).fit(Xi, names),
              Xi, zipmap=False)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    xgboost_cases()
    lightgbm_cases()
    onnx_cases()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{'total':28s} {total / 1024:7.1f} KiB")


if __name__ == "__main__":
    main()

use super::*;

/// A two-tree binary model: tree 0 splits feature 1 at 0.5 (NaN right),
/// tree 1 splits feature 0 at -1 (NaN left).
fn model(base_score: &str, objective: &str, extra: &str) -> String {
    format!(
        r#"{{"learner": {{
        "learner_model_param": {{"base_score": "{base_score}", "num_class": "0", "num_feature": "2", "num_target": "1"}},
        "objective": {{"name": "{objective}"}},
        "gradient_booster": {{"name": "gbtree", "model": {{
            "gbtree_model_param": {{"num_trees": "2"}},
            "tree_info": [0, 0],
            "trees": [
              {{"left_children": [1, -1, -1], "right_children": [2, -1, -1],
                "split_indices": [1, 0, 0], "split_conditions": [0.5, -0.25, 0.75],
                "default_left": [0, 0, 0], "split_type": [0, 0, 0],
                "tree_param": {{"num_nodes": "3", "size_leaf_vector": "1"}}{extra}}},
              {{"left_children": [1, -1, -1], "right_children": [2, -1, -1],
                "split_indices": [0, 0, 0], "split_conditions": [-1.0, 0.125, -0.5],
                "default_left": [true, false, false]}}
            ]}}}}}},
        "version": [3, 2, 0]}}"#
    )
}

#[test]
fn binary_logistic_by_hand() {
    let booster = load(model("[5E-1]", "binary:logistic", "").as_bytes()).expect("load");
    assert_eq!(booster.n_features(), 2);
    assert_eq!(booster.n_classes(), Some(2));
    let rows = [
        0.0,
        0.0, // left (-0.25), right (-0.5)
        -2.0,
        0.5, // 0.5 is not < 0.5: right (0.75); left (0.125)
        f32::NAN,
        f32::NAN, // NaN: right (0.75), left (0.125)
    ];
    let margins = booster.margins(&rows, 3).expect("margins");
    // base 0.5 is logit 0 in margin space.
    assert_eq!(margins, vec![-0.75, 0.875, 0.875]);
    let p = booster.predict(&rows, 3).expect("predict");
    assert_eq!(p.predict_shape, vec![3]);
    let sigmoid = |m: f64| (1.0 / (1.0 + (-m).exp())) as f32;
    assert_eq!(
        p.predict,
        vec![sigmoid(-0.75), sigmoid(0.875), sigmoid(0.875)]
    );
    let proba = p.proba.expect("proba");
    assert!((proba[0] + proba[1] - 1.0).abs() < 1e-6);
}

#[test]
fn base_score_forms_and_margins() {
    let plain = load(model("5E-1", "binary:logistic", "").as_bytes()).expect("scalar");
    assert_eq!(plain.margins(&[0.0, 0.0], 1).expect("m"), vec![-0.75]);
    let reg = load(model("[2E0]", "reg:squarederror", "").as_bytes()).expect("reg");
    assert_eq!(reg.margins(&[0.0, 0.0], 1).expect("m"), vec![1.25]);
    let poisson = load(model("[1E0]", "count:poisson", "").as_bytes()).expect("poisson");
    assert_eq!(poisson.margins(&[0.0, 0.0], 1).expect("m"), vec![-0.75]);
    let raw = load(model("[2.5E-1]", "binary:logitraw", "").as_bytes()).expect("raw");
    assert_eq!(raw.margins(&[0.0, 0.0], 1).expect("m"), vec![-0.5]);
    // Logistic objectives need a base score strictly inside (0, 1).
    let err = load(model("[1E0]", "binary:logistic", "").as_bytes()).expect_err("base 1");
    assert!(err.to_string().contains("base_score"), "{err}");
}

fn load_err(text: &str) -> String {
    load(text.as_bytes()).expect_err("must fail").to_string()
}

#[test]
fn hostile_models_are_errors() {
    let good = model("[5E-1]", "binary:logistic", "");
    let cases = [
        (good.replace("[1, -1, -1], \"right_children\": [2, -1, -1],\n                \"split_indices\": [1", "[1, -1, -1], \"right_children\": [9, -1, -1],\n                \"split_indices\": [1"), "out of range"),
        (good.replace("\"left_children\": [1, -1, -1], \"right_children\": [2, -1, -1],\n                \"split_indices\": [0", "\"left_children\": [1, 0, -1], \"right_children\": [2, 0, -1],\n                \"split_indices\": [0"), "reached twice"),
        (good.replace("[0.5, -0.25, 0.75]", "[\"NaN\", -0.25, 0.75]"), "NaN"),
        (good.replace("[0.5, -0.25, 0.75]", "[0.5, \"NaN\", 0.75]"), "not finite"),
        (good.replace("[0.5, -0.25, 0.75]", "[0.5, -0.25]"), "different lengths"),
        (good.replace("[0.5, -0.25, 0.75]", "[0.5, \"x\", 0.75]"), "not a number"),
        (good.replace("\"split_indices\": [1, 0, 0]", "\"split_indices\": [-1, 0, 0]"), "negative"),
        (good.replace("\"split_indices\": [1, 0, 0]", "\"split_indices\": [7, 0, 0]"), "feature 7"),
        (good.replace("\"num_feature\": \"2\"", "\"num_feature\": \"99999999999\""), "features"),
        (good.replace("\"num_feature\": \"2\"", "\"num_feature\": \"-2\""), "not a count"),
        (good.replace("\"num_class\": \"0\"", "\"num_class\": \"4000000000\""), "too many"),
        (good.replace("\"tree_info\": [0, 0]", "\"tree_info\": [0, 5]"), "output 5"),
        (good.replace("\"tree_info\": [0, 0]", "\"tree_info\": [0]"), "tree_info"),
        (good.replace("\"split_type\": [0, 0, 0]", "\"split_type\": [1, 0, 0]"), "categorical"),
        (good.replace("\"size_leaf_vector\": \"1\"", "\"size_leaf_vector\": \"3\""), "vector leaves"),
        (good.replace("\"default_left\": [0, 0, 0]", "\"default_left\": [0, 2, 0]"), "default_left"),
        (good.replace("\"default_left\": [0, 0, 0]", "\"default_left\": \"no\""), "not a valid"),
        (good.replace("binary:logistic", "survival:cox"), "survival:cox"),
        (good.replace("\"name\": \"gbtree\"", "\"name\": \"gblinear\""), "gblinear"),
        (good.replace("\"left_children\": [1, -1, -1]", "\"left_children\": 12"), "not a valid"),
        ("[]".to_owned(), "not a valid"),
        ("{}".to_owned(), "not a valid"),
    ];
    for (text, want) in cases {
        let err = load_err(&text);
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
}

#[test]
fn truncated_files_are_errors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models/trees/xgb_multiclass/model.json"
    );
    let bytes = std::fs::read(path).expect("fixture");
    load(&bytes).expect("whole file loads");
    for cut in (0..bytes.len()).step_by(97) {
        assert!(load(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn dart_scales_trees_by_their_weights() {
    let gbtree = model("[5E-1]", "reg:squarederror", "");
    let start = gbtree.find("\"gradient_booster\"").expect("booster");
    let inner_start = gbtree[start..].find('{').expect("brace") + start;
    // The gbtree object runs to just before the closing of "learner".
    let end = gbtree.rfind("\"version\"").expect("version");
    let inner_end = gbtree[..end].rfind('}').expect("learner end");
    let inner = &gbtree[inner_start..inner_end];
    let dart = format!(
        "{}{{\"name\": \"dart\", \"gbtree\": {inner}, \"weight_drop\": [1.0, 0.5]}}{}",
        &gbtree[..inner_start],
        &gbtree[inner_end..]
    );
    let booster = load(dart.as_bytes()).expect("dart");
    // 0.5 + (-0.25) + 0.5 * (-0.5)
    assert_eq!(booster.margins(&[0.0, 0.0], 1).expect("m"), vec![0.0]);
}

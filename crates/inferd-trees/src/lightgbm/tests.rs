use super::*;

/// A two-class-free regression model with two trees: a numeric split with
/// missing type NaN (default left) and a categorical split.
fn model(tree0: &str) -> String {
    format!(
        "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\n\
         max_feature_idx=1\nobjective=regression\nfeature_names=a b\ntree_sizes=1 1\n\n\
         {tree0}\n\
         Tree=1\nnum_leaves=2\nnum_cat=1\nsplit_feature=1\nsplit_gain=1\nthreshold=0\n\
         decision_type=1\nleft_child=-1\nright_child=-2\nleaf_value=10 20\n\
         cat_boundaries=0 2\ncat_threshold=6 1\nis_linear=0\nshrinkage=0.1\n\n\n\
         end of trees\n\nfeature_importances:\na=1\n"
    )
}

const TREE0: &str = "Tree=0\nnum_leaves=3\nnum_cat=0\nsplit_feature=0 0\nsplit_gain=1 1\n\
     threshold=0.5 1.5\ndecision_type=10 0\nleft_child=-1 -2\nright_child=1 -3\n\
     leaf_value=1 2 3\nleaf_weight=1 1 1\nleaf_count=1 1 1\ninternal_value=0 0\n\
     internal_weight=1 1\ninternal_count=2 2\nis_linear=0\nshrinkage=1\n";

#[test]
fn regression_by_hand() {
    let booster = load(model(TREE0).as_bytes()).expect("load");
    assert_eq!(booster.n_features(), 2);
    assert_eq!(booster.n_classes(), None);
    // Categories {1, 2, 32} go left (10), everything else right (20).
    let rows = [
        0.5,
        1.0, // <= 0.5: leaf 0 (1); category 1: 10
        1.0,
        2.0, // node 1: 1.0 <= 1.5 -> leaf 1 (2); category 2: 10
        1.6,
        3.0, // leaf 2 (3); category 3: 20
        f32::NAN,
        32.0, // NaN, default left: 1; category 32: 10
        2.0,
        f32::NAN, // 3; NaN category: 20
        2.0,
        -1.0, // 3; negative category: 20
        2.0,
        2.9, // 3; 2.9 is category 2: 10
        0.0,
        64.0, // 1; beyond the bitset: 20
    ];
    let p = booster.predict(&rows, 8).expect("predict");
    assert_eq!(
        p.predict,
        vec![11.0, 12.0, 23.0, 11.0, 23.0, 23.0, 13.0, 21.0]
    );
}

#[test]
fn missing_types() {
    // Missing type None (decision_type 0): NaN counts as 0.
    let none = TREE0.replace("decision_type=10 0", "decision_type=0 0");
    let b = load(model(&none).as_bytes()).expect("load");
    assert_eq!(
        b.predict(&[f32::NAN, 1.0], 1).expect("p").predict,
        vec![11.0]
    );
    let above = none.replace("threshold=0.5 1.5", "threshold=-0.5 1.5");
    let b = load(model(&above).as_bytes()).expect("load");
    assert_eq!(
        b.predict(&[f32::NAN, 1.0], 1).expect("p").predict,
        vec![12.0]
    );
    // Missing type Zero (4), default right: NaN and tiny values go right.
    let zero = TREE0.replace("decision_type=10 0", "decision_type=4 0");
    let b = load(model(&zero).as_bytes()).expect("load");
    let p = b
        .predict(&[f32::NAN, 1.0, 1e-36, 1.0, 0.25, 1.0], 3)
        .expect("p");
    assert_eq!(p.predict, vec![12.0, 12.0, 11.0]);
}

fn load_err(text: &str) -> String {
    load(text.as_bytes()).expect_err("must fail").to_string()
}

#[test]
fn hostile_models_are_errors() {
    let cases = [
        (
            TREE0.replace("right_child=1 -3", "right_child=7 -3"),
            "out of range",
        ),
        (
            TREE0.replace("right_child=1 -3", "right_child=1 -9"),
            "out of range",
        ),
        (
            TREE0.replace("left_child=-1 -2", "left_child=-1 0"),
            "reached twice",
        ),
        (
            TREE0.replace("left_child=-1 -2", "left_child=1 -2"),
            "reached twice",
        ),
        (
            TREE0.replace("threshold=0.5 1.5", "threshold=nan 1.5"),
            "NaN",
        ),
        (
            TREE0.replace("threshold=0.5 1.5", "threshold=x 1.5"),
            "not a valid value",
        ),
        (
            TREE0.replace("num_leaves=3", "num_leaves=4000000000"),
            "num_leaves",
        ),
        (
            TREE0.replace("leaf_value=1 2 3", "leaf_value=1 2"),
            "num_leaves",
        ),
        (
            TREE0.replace("leaf_value=1 2 3", "leaf_value=1 2 inf"),
            "not finite",
        ),
        (
            TREE0.replace("split_feature=0 0", "split_feature=0"),
            "split_feature",
        ),
        (
            TREE0.replace("split_feature=0 0", "split_feature=0 5"),
            "feature 5",
        ),
        (
            TREE0.replace("split_feature=0 0", "split_feature=0 -1"),
            "not a valid value",
        ),
        (
            TREE0.replace("decision_type=10 0", "decision_type=12 0"),
            "missing type",
        ),
        (
            TREE0.replace("decision_type=10 0", "decision_type=1 0"),
            "cat_boundaries",
        ),
        (TREE0.replace("is_linear=0", "is_linear=1"), "linear"),
        (TREE0.replace("Tree=0", "Tree=3"), "tree 3"),
        (TREE0.replace("leaf_value=1 2 3\n", ""), "leaf_value"),
    ];
    for (tree, want) in cases {
        let err = load_err(&model(&tree));
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    let good = model(TREE0);
    let header_cases = [
        (
            good.replace("max_feature_idx=1", "max_feature_idx=99999999999"),
            "features",
        ),
        (good.replace("max_feature_idx=1\n", ""), "max_feature_idx"),
        (
            good.replace("objective=regression", "objective=multiclass num_class:3"),
            "multiclass",
        ),
        (
            good.replace("objective=regression", "objective=binary sigmoid:-1"),
            "sigmoid",
        ),
        (
            good.replace("num_tree_per_iteration=1", "num_tree_per_iteration=0"),
            "out of range",
        ),
        (
            good.replace("cat_boundaries=0 2", "cat_boundaries=0 9"),
            "bitset",
        ),
        (
            good.replace("cat_boundaries=0 2", "cat_boundaries=5"),
            "bitset",
        ),
        (good.replace("threshold=0\n", "threshold=-3\n"), "bitset"),
        (good.replace("end of trees\n", ""), "end of trees"),
        (good.replacen("tree\n", "booster\n", 1), "'tree'"),
        ("tree\nend of trees\n".to_owned(), "no trees"),
        (String::new(), "'tree'"),
    ];
    for (text, want) in header_cases {
        let err = load_err(&text);
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    assert!(load(&[0xff, 0xfe]).is_err());
}

#[test]
fn truncated_files_are_errors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/models/trees/lgb_multiclass/model.txt"
    );
    let bytes = std::fs::read(path).expect("fixture");
    load(&bytes).expect("whole file loads");
    let end = String::from_utf8_lossy(&bytes)
        .find("end of trees")
        .expect("end marker");
    for cut in (0..end).step_by(53) {
        assert!(load(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn averaged_output_divides_by_iterations() {
    let text = model(TREE0).replace(
        "objective=regression\n",
        "objective=regression\naverage_output\n",
    );
    let b = load(text.as_bytes()).expect("load");
    assert_eq!(b.predict(&[0.5, 1.0], 1).expect("p").predict, vec![5.5]);
}

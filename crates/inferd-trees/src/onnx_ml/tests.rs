use super::*;

/// One stump: node 0 tests feature 0 with `mode` at 1.0; true -> node 1
/// (weight 10), false -> node 2 (weight 20).
fn stump(mode: &str, tracks_true: bool) -> Attributes {
    Attributes {
        nodes_treeids: vec![0, 0, 0],
        nodes_nodeids: vec![0, 1, 2],
        nodes_featureids: vec![0, 0, 0],
        nodes_modes: vec![mode.into(), "LEAF".into(), "LEAF".into()],
        nodes_values: vec![1.0, 0.0, 0.0],
        nodes_truenodeids: vec![1, 0, 0],
        nodes_falsenodeids: vec![2, 0, 0],
        nodes_missing_value_tracks_true: vec![i64::from(tracks_true), 0, 0],
        leaf_treeids: vec![0, 0],
        leaf_nodeids: vec![1, 2],
        leaf_ids: vec![0, 0],
        leaf_weights: vec![10.0, 20.0],
        n_targets: Some(1),
        ..Attributes::default()
    }
}

fn regress(attrs: &Attributes, x: &[f32]) -> Vec<f32> {
    let op = TreeEnsemble::regressor(attrs, Some(1)).expect("build");
    op.run(x, x.len()).expect("run").scores
}

#[test]
fn node_modes_and_missing_values() {
    let x = [0.0, 1.0, 2.0, f32::NAN];
    for (mode, want) in [
        ("BRANCH_LEQ", [10.0, 10.0, 20.0, 20.0]),
        ("BRANCH_LT", [10.0, 20.0, 20.0, 20.0]),
        ("BRANCH_GTE", [20.0, 10.0, 10.0, 20.0]),
        ("BRANCH_GT", [20.0, 20.0, 10.0, 20.0]),
        ("BRANCH_EQ", [20.0, 10.0, 20.0, 20.0]),
        ("BRANCH_NEQ", [10.0, 20.0, 10.0, 20.0]),
    ] {
        assert_eq!(regress(&stump(mode, false), &x), want, "{mode}");
        let mut tracked = want;
        tracked[3] = 10.0;
        assert_eq!(
            regress(&stump(mode, true), &x),
            tracked,
            "{mode} tracks true"
        );
    }
}

#[test]
fn single_target_base_value_and_average() {
    let mut attrs = stump("BRANCH_LEQ", false);
    attrs.base_values = vec![5.0];
    assert_eq!(regress(&attrs, &[0.0]), [15.0]);
    // With one target only PROBIT is applied, as onnxruntime does.
    attrs.post_transform = Some("LOGISTIC".into());
    assert_eq!(regress(&attrs, &[0.0]), [15.0]);
    attrs.aggregate_function = Some("AVERAGE".into());
    attrs.post_transform = None;
    assert_eq!(regress(&attrs, &[2.0]), [25.0]);
}

fn binary_classifier(weights: [f64; 2], post: Option<&str>, base: Vec<f64>) -> TreeEnsemble {
    let mut attrs = stump("BRANCH_LEQ", false);
    attrs.leaf_weights = weights.to_vec();
    attrs.n_targets = None;
    attrs.classlabels_int64s = vec![3, 7];
    attrs.post_transform = post.map(str::to_owned);
    attrs.base_values = base;
    TreeEnsemble::classifier(&attrs, Some(1)).expect("build")
}

#[test]
fn binary_classifier_conventions() {
    // Positive weights for one class: [1 - s, s], label by s > 0.5.
    let op = binary_classifier([0.25, 0.75], None, vec![]);
    let out = op.run(&[0.0, 2.0], 2).expect("run");
    assert_eq!(out.scores, vec![0.75, 0.25, 0.25, 0.75]);
    assert_eq!(out.labels, Some(LabelValues::Int64(vec![3, 7])));
    // Mixed signs with LOGISTIC and a base value.
    let op = binary_classifier([-1.0, 2.0], Some("LOGISTIC"), vec![0.5]);
    let out = op.run(&[0.0, 2.0], 2).expect("run");
    let l = |v: f64| logistic(v) as f32;
    assert_eq!(out.scores, vec![l(0.5), l(-0.5), l(-2.5), l(2.5)]);
    assert_eq!(out.labels, Some(LabelValues::Int64(vec![3, 7])));
}

#[test]
fn multiclass_softmax_and_string_labels() {
    let mut attrs = stump("BRANCH_LEQ", false);
    attrs.n_targets = None;
    attrs.leaf_treeids = vec![0, 0, 0, 0];
    attrs.leaf_nodeids = vec![1, 1, 2, 2];
    attrs.leaf_ids = vec![0, 2, 1, 2];
    attrs.leaf_weights = vec![1.0, 0.5, 2.0, 0.5];
    attrs.classlabels_strings = vec!["a".into(), "b".into(), "c".into()];
    attrs.post_transform = Some("SOFTMAX".into());
    let op = TreeEnsemble::classifier(&attrs, Some(1)).expect("build");
    let out = op.run(&[0.0, 2.0], 2).expect("run");
    assert_eq!(
        out.labels,
        Some(LabelValues::Strings(vec!["a".into(), "b".into()]))
    );
    // Row 0 has no value for class 1: it counts as 0.
    let mut row0 = [1.0, 0.0, 0.5];
    softmax(&mut row0);
    let got: Vec<f64> = out.scores[..3].iter().map(|&v| f64::from(v)).collect();
    for (g, w) in got.iter().zip(row0) {
        assert!((g - w).abs() < 1e-6);
    }
}

#[test]
fn probit_matches_onnxruntime_approximation() {
    // sqrt(2) * erfinv(2 * 0.975 - 1) is about 1.96 (the approximation is
    // good to about 1e-3).
    assert!((probit(0.975) - 1.96).abs() < 5e-3);
    assert!((probit(0.5)).abs() < 1e-6);
}

fn classifier_err(change: impl FnOnce(&mut Attributes)) -> String {
    let mut attrs = stump("BRANCH_LEQ", false);
    attrs.n_targets = None;
    attrs.classlabels_int64s = vec![0, 1];
    change(&mut attrs);
    TreeEnsemble::classifier(&attrs, Some(1))
        .expect_err("must fail")
        .to_string()
}

#[test]
fn malformed_ensembles_are_errors() {
    type Change = Box<dyn FnOnce(&mut Attributes)>;
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|a| a.nodes_truenodeids[0] = 9), "does not exist"),
        (Box::new(|a| a.nodes_falsenodeids[0] = 0), "reached twice"),
        (Box::new(|a| a.nodes_nodeids[2] = 1), "listed twice"),
        (
            Box::new(|a| a.nodes_treeids = vec![0, 1, 0]),
            "not listed together",
        ),
        (
            Box::new(|a| a.leaf_nodeids = vec![1, 1]),
            "without a weight",
        ),
        (Box::new(|a| a.leaf_ids[0] = 2), "output 2"),
        (Box::new(|a| a.leaf_nodeids[0] = 42), "does not exist"),
        (Box::new(|a| a.nodes_featureids[0] = 3), "input has 1"),
        (Box::new(|a| a.nodes_featureids[0] = -3), "negative"),
        (
            Box::new(|a| a.nodes_modes[0] = "BRANCH_SOMETIMES".into()),
            "unknown node mode",
        ),
        (Box::new(|a| a.nodes_values[0] = f64::NAN), "NaN"),
        (
            Box::new(|a| a.leaf_weights[0] = f64::INFINITY),
            "not finite",
        ),
        (
            Box::new(|a| a.nodes_values.pop().map(drop).unwrap_or(())),
            "nodes_values",
        ),
        (Box::new(|a| a.leaf_weights.push(1.0)), "differ in length"),
        (
            Box::new(|a| a.classlabels_int64s = vec![]),
            "without class labels",
        ),
        (Box::new(|a| a.classlabels_int64s = vec![4]), "single class"),
        (Box::new(|a| a.base_values = vec![0.0; 3]), "base values"),
        (
            Box::new(|a| a.post_transform = Some("CUBE".into())),
            "post_transform",
        ),
        (
            Box::new(|a| {
                *a = Attributes {
                    classlabels_int64s: vec![0, 1],
                    ..Attributes::default()
                }
            }),
            "no nodes",
        ),
    ];
    for (change, want) in cases {
        let err = classifier_err(change);
        assert!(err.contains(want), "expected '{want}' in: {err}");
    }
    let mut attrs = stump("BRANCH_LEQ", false);
    attrs.n_targets = Some(0);
    assert!(TreeEnsemble::regressor(&attrs, None).is_err());
    attrs.n_targets = Some(1);
    attrs.aggregate_function = Some("MEDIAN".into());
    assert!(TreeEnsemble::regressor(&attrs, None).is_err());
}

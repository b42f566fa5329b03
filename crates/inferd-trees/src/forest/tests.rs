use super::*;

/// Evaluates a raw tree the slow, obvious way.
fn reference(tree: &RawTree, x: &[f32]) -> f64 {
    let mut n = tree.root;
    loop {
        match &tree.nodes[n] {
            RawNode::Leaf(values) => return values.iter().map(|(_, v)| v).sum(),
            RawNode::Split(s) => {
                let v = x[s.feature];
                let d = f64::from(v);
                let goes = match &s.test {
                    Test::Categories(bits) => {
                        !v.is_nan()
                            && d >= 0.0
                            && bits
                                .get((d as u64 / 32) as usize)
                                .is_some_and(|w| w >> (d as u64 % 32) & 1 == 1)
                    }
                    Test::LessEqZeroMissing(t) => {
                        if v.is_nan() || d.abs() <= 1e-35_f32 as f64 {
                            s.missing_true
                        } else {
                            d <= *t
                        }
                    }
                    _ if v.is_nan() => s.missing_true,
                    Test::Less(t) => d < *t,
                    Test::LessEq(t) => d <= *t,
                    Test::Greater(t) => d > *t,
                    Test::GreaterEq(t) => d >= *t,
                    Test::Equal(t) => d == *t,
                    Test::NotEqual(t) => d != *t,
                };
                n = if goes { s.if_true } else { s.if_false };
            }
        }
    }
}

fn split(
    feature: usize,
    test: Test,
    if_true: usize,
    if_false: usize,
    missing_true: bool,
) -> RawNode {
    RawNode::Split(Split {
        feature,
        test,
        if_true,
        if_false,
        missing_true,
    })
}

fn leaf(v: f64) -> RawNode {
    RawNode::Leaf(vec![(0, v)])
}

/// One stump per test kind, each on its own feature.
fn stumps() -> Vec<RawTree> {
    let tests = [
        (Test::Less(0.5), true),
        (Test::LessEq(0.5), false),
        (Test::LessEq(0.1), true), // 0.1 is not an f32: rounding matters
        (Test::Greater(-0.25), true),
        (Test::GreaterEq(1.0 / 3.0), false),
        (Test::Equal(2.0), true),
        (Test::NotEqual(2.0), false),
        (Test::LessEq(f64::INFINITY), false),
        (Test::Greater(f64::INFINITY), true),
        (Test::Less(f64::NEG_INFINITY), true),
        (Test::LessEq(1e300), false),
        (Test::Categories(vec![0b1010, 1]), false),
        (Test::LessEqZeroMissing(0.5), true),
        (Test::LessEqZeroMissing(-0.5), false),
    ];
    tests
        .into_iter()
        .enumerate()
        .map(|(f, (test, missing_true))| RawTree {
            nodes: vec![
                leaf(1.0 + f as f64),
                split(f, test, 0, 2, missing_true),
                leaf(-100.0 * (1.0 + f as f64)),
            ],
            root: 1,
        })
        .collect()
}

fn interesting() -> Vec<f32> {
    let mut v = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        1e-36,
        -1e-36,
        0.5,
        0.1,
        0.1f32.next_up(),
        0.1f32.next_down(),
        -0.25,
        1.0 / 3.0,
        (1.0f32 / 3.0).next_up(),
        2.0,
        1.0,
        3.0,
        32.0,
        33.0,
        -1.0,
        1.5,
        3.7,
        f32::MAX,
    ];
    let extra: Vec<f32> = v.iter().map(|x| -x).collect();
    v.extend(extra);
    v
}

#[test]
fn every_test_kind_matches_the_reference() {
    let trees = stumps();
    let features = trees.len();
    let forest = Forest::build(features, 1, trees.clone(), Aggregate::Sum).expect("build");
    let values = interesting();
    // Row r has value values[(r + f) % len] in feature f.
    let rows = values.len();
    let mut x = Vec::with_capacity(rows * features);
    for r in 0..rows {
        for f in 0..features {
            x.push(values[(r * 7 + f) % values.len()]);
        }
    }
    let mut out = vec![0.0; rows];
    let mut has = vec![false; rows];
    forest
        .predict(&x, rows, &mut out, &mut has)
        .expect("predict");
    for r in 0..rows {
        let row = &x[r * features..(r + 1) * features];
        for (t, tree) in trees.iter().enumerate() {
            let mut one = vec![0.0];
            let mut h = vec![false];
            let single =
                Forest::build(features, 1, vec![tree.clone()], Aggregate::Sum).expect("build");
            single.predict(row, 1, &mut one, &mut h).expect("predict");
            assert_eq!(one[0], reference(tree, row), "tree {t}, row {row:?}");
        }
        let want: f64 = trees.iter().map(|t| reference(t, row)).sum();
        assert_eq!(out[r], want, "row {r}");
        assert!(has[r]);
    }
}

#[test]
fn any_batch_size_gives_the_same_rows() {
    let trees = stumps();
    let features = trees.len();
    let forest = Forest::build(features, 1, trees, Aggregate::Sum).expect("build");
    let values = interesting();
    for rows in 0..20 {
        let x: Vec<f32> = (0..rows * features)
            .map(|i| values[(i * 5) % values.len()])
            .collect();
        let mut out = vec![0.0; rows];
        let mut has = vec![false; rows];
        forest
            .predict(&x, rows, &mut out, &mut has)
            .expect("predict");
        for r in 0..rows {
            let mut one = [0.0];
            let mut h = [false];
            forest
                .predict(&x[r * features..(r + 1) * features], 1, &mut one, &mut h)
                .expect("predict");
            assert_eq!(one[0], out[r]);
        }
    }
}

#[test]
fn deep_unbalanced_trees() {
    // A chain: node i tests feature 0 < i, left is a leaf, right goes on.
    let depth = 300;
    let mut nodes = Vec::new();
    for i in 0..depth {
        nodes.push(split(0, Test::Less(i as f64), 2 * i + 1, 2 * i + 2, false));
        nodes.push(leaf(i as f64));
    }
    nodes.push(leaf(-1.0));
    // Fix the last right child to point at the final leaf.
    let tree = RawTree { nodes, root: 0 };
    let forest = Forest::build(1, 1, vec![tree.clone()], Aggregate::Sum).expect("build");
    for v in [-5.0f32, 0.5, 10.5, 299.5, 1e6, f32::NAN] {
        let mut out = [0.0];
        let mut has = [false];
        forest
            .predict(&[v], 1, &mut out, &mut has)
            .expect("predict");
        assert_eq!(out[0], reference(&tree, &[v]), "{v}");
    }
}

fn build_err(trees: Vec<RawTree>) -> String {
    Forest::build(2, 1, trees, Aggregate::Sum)
        .expect_err("must fail")
        .to_string()
}

#[test]
fn malformed_trees_are_refused() {
    let cycle = RawTree {
        nodes: vec![
            split(0, Test::Less(1.0), 1, 2, false),
            split(0, Test::Less(0.0), 0, 2, false),
            leaf(1.0),
        ],
        root: 0,
    };
    assert!(build_err(vec![cycle]).contains("reached twice"));
    let shared = RawTree {
        nodes: vec![split(0, Test::Less(1.0), 1, 1, false), leaf(1.0)],
        root: 0,
    };
    assert!(build_err(vec![shared]).contains("reached twice"));
    let self_loop = RawTree {
        nodes: vec![split(0, Test::Less(1.0), 0, 1, false), leaf(1.0)],
        root: 0,
    };
    assert!(build_err(vec![self_loop]).contains("reached twice"));
    let out_of_range = RawTree {
        nodes: vec![split(0, Test::Less(1.0), 1, 7, false), leaf(1.0)],
        root: 0,
    };
    assert!(build_err(vec![out_of_range]).contains("out of range"));
    let bad_feature = RawTree {
        nodes: vec![split(9, Test::Less(1.0), 1, 2, false), leaf(1.0), leaf(2.0)],
        root: 0,
    };
    assert!(build_err(vec![bad_feature]).contains("feature 9"));
    let nan = RawTree {
        nodes: vec![
            split(0, Test::LessEq(f64::NAN), 1, 2, false),
            leaf(1.0),
            leaf(2.0),
        ],
        root: 0,
    };
    assert!(build_err(vec![nan]).contains("NaN"));
    let nan_leaf = RawTree {
        nodes: vec![leaf(f64::NAN)],
        root: 0,
    };
    assert!(build_err(vec![nan_leaf]).contains("not finite"));
    let bad_root = RawTree {
        nodes: vec![leaf(1.0)],
        root: 3,
    };
    assert!(build_err(vec![bad_root]).contains("root"));
    assert!(build_err(vec![RawTree::default()]).contains("no nodes"));
    assert!(build_err(vec![]).contains("no trees"));
    let bad_column = RawTree {
        nodes: vec![RawNode::Leaf(vec![(4, 1.0)])],
        root: 0,
    };
    assert!(build_err(vec![bad_column]).contains("output 4"));
    let too_deep = {
        let mut nodes = Vec::new();
        for i in 0..MAX_DEPTH + 2 {
            nodes.push(split(0, Test::Less(0.0), 2 * i + 1, 2 * i + 2, false));
            nodes.push(leaf(0.0));
        }
        nodes.push(leaf(0.0));
        RawTree { nodes, root: 0 }
    };
    assert!(build_err(vec![too_deep]).contains("deeper"));
    assert!(
        Forest::build(
            0,
            1,
            vec![RawTree {
                nodes: vec![leaf(1.0)],
                root: 0
            }],
            Aggregate::Sum
        )
        .is_err()
    );
}

#[test]
fn wrong_buffer_sizes_are_errors() {
    let forest = Forest::build(
        2,
        1,
        vec![RawTree {
            nodes: vec![leaf(1.0)],
            root: 0,
        }],
        Aggregate::Sum,
    )
    .expect("build");
    let mut out = [0.0; 2];
    let mut has = [false; 2];
    assert!(forest.predict(&[0.0; 3], 2, &mut out, &mut has).is_err());
    assert!(
        forest
            .predict(&[0.0; 4], 2, &mut out[..1], &mut has[..1])
            .is_err()
    );
    assert!(
        forest
            .predict(&[0.0; 4], usize::MAX, &mut out, &mut has)
            .is_err()
    );
    forest
        .predict(&[0.0; 4], 2, &mut out, &mut has)
        .expect("fits");
    assert_eq!(out, [1.0, 1.0]);
}

#[test]
fn multi_column_leaves_track_which_columns_have_values() {
    // Tree 0 writes columns 0 and 2 (never 1); tree 1 writes column 1 only
    // on its left side.
    let t0 = RawTree {
        nodes: vec![RawNode::Leaf(vec![(0, 1.0), (2, 3.0)])],
        root: 0,
    };
    let t1 = RawTree {
        nodes: vec![
            split(0, Test::Less(0.0), 1, 2, false),
            RawNode::Leaf(vec![(1, 5.0)]),
            RawNode::Leaf(vec![(0, 7.0)]),
        ],
        root: 0,
    };
    for (aggregate, left, right) in [
        (Aggregate::Sum, [1.0, 5.0, 3.0], [8.0, 0.0, 3.0]),
        (Aggregate::Average, [0.5, 2.5, 1.5], [4.0, 0.0, 1.5]),
        (Aggregate::Min, [1.0, 5.0, 3.0], [1.0, 0.0, 3.0]),
        (Aggregate::Max, [1.0, 5.0, 3.0], [7.0, 0.0, 3.0]),
    ] {
        let forest = Forest::build(1, 3, vec![t0.clone(), t1.clone()], aggregate).expect("build");
        let mut out = [0.0; 6];
        let mut has = [false; 6];
        forest
            .predict(&[-1.0, 1.0], 2, &mut out, &mut has)
            .expect("predict");
        assert_eq!(out[..3], left, "{aggregate:?}");
        assert_eq!(out[3..], right, "{aggregate:?}");
        assert_eq!(has, [true, true, true, true, false, true], "{aggregate:?}");
    }
}

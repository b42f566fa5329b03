//! ONNX-ML's `TreeEnsembleClassifier` and `TreeEnsembleRegressor` (ai.onnx.ml
//! opsets 1 and 3).
//!
//! The caller (the runtime crate, which reads ONNX graphs) fills
//! [`Attributes`] from the node; this module checks them, builds a
//! [`Forest`] and reproduces onnxruntime's results, including its
//! conventions where the specification is silent:
//!
//! - A tree's root is its first node in attribute order; a tree's nodes must
//!   be listed together.
//! - NaN takes the true branch when `nodes_missing_value_tracks_true` is 1,
//!   otherwise the false branch (every comparison with NaN is false).
//! - Regressors with one target: the sum (or average) of leaves plus the
//!   single base value; only PROBIT is applied as post transform.
//! - Several targets or classes: a column no leaf gave a value outputs 0.
//! - Classifiers ignore `aggregate_function` (leaves are summed). With two
//!   classes and weights for one class only (what skl2onnx writes for binary
//!   models) the score of that column is turned into two: `[1 - s, s]` when
//!   all weights are positive (label: `s > 0.5`), otherwise `[-s, s]`, or
//!   `[logistic(-s), logistic(s)]` with LOGISTIC (label: `s > 0`).
//! - PROBIT uses onnxruntime's approximation of the inverse error function.

use std::collections::HashMap;

use crate::booster::softmax;
use crate::{Aggregate, Error, Forest, RawNode, RawTree, Result, Split, Test};

/// The attributes of a tree-ensemble node, with the classifier's `class_*`
/// or the regressor's `target_*` lists in the `leaf_*` fields.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct Attributes {
    pub nodes_treeids: Vec<i64>,
    pub nodes_nodeids: Vec<i64>,
    pub nodes_featureids: Vec<i64>,
    pub nodes_modes: Vec<String>,
    /// `nodes_values`, or `nodes_values_as_tensor`.
    pub nodes_values: Vec<f64>,
    pub nodes_truenodeids: Vec<i64>,
    pub nodes_falsenodeids: Vec<i64>,
    pub nodes_missing_value_tracks_true: Vec<i64>,
    pub leaf_treeids: Vec<i64>,
    pub leaf_nodeids: Vec<i64>,
    pub leaf_ids: Vec<i64>,
    /// `class_weights`/`target_weights`, or their `_as_tensor` forms.
    pub leaf_weights: Vec<f64>,
    /// `base_values`, or `base_values_as_tensor`.
    pub base_values: Vec<f64>,
    /// Regressors: `SUM` (default), `AVERAGE`, `MIN`, `MAX`.
    pub aggregate_function: Option<String>,
    /// `NONE` (default), `LOGISTIC`, `SOFTMAX`, `SOFTMAX_ZERO`, `PROBIT`.
    pub post_transform: Option<String>,
    /// Regressors: `n_targets`.
    pub n_targets: Option<i64>,
    pub classlabels_int64s: Vec<i64>,
    pub classlabels_strings: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Logistic,
    Softmax,
    SoftmaxZero,
    Probit,
}

impl PostTransform {
    fn parse(name: Option<&str>) -> Result<PostTransform> {
        Ok(match name.unwrap_or("NONE") {
            "NONE" => PostTransform::None,
            "LOGISTIC" => PostTransform::Logistic,
            "SOFTMAX" => PostTransform::Softmax,
            "SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
            "PROBIT" => PostTransform::Probit,
            other => {
                return Err(Error::Invalid(format!("unknown post_transform '{other}'")));
            }
        })
    }
}

/// Class labels of a classifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Labels {
    Int64(Vec<i64>),
    Strings(Vec<String>),
}

impl Labels {
    pub fn len(&self) -> usize {
        match self {
            Labels::Int64(v) => v.len(),
            Labels::Strings(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Predicted labels, one per row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LabelValues {
    Int64(Vec<i64>),
    Strings(Vec<String>),
}

#[derive(Clone, Debug)]
enum Kind {
    Regressor {
        aggregate: Aggregate,
    },
    Classifier {
        labels: Labels,
        /// Two classes and weights for one class only.
        binary: bool,
        all_positive: bool,
    },
}

/// A tree-ensemble operator ready to run.
#[derive(Clone, Debug)]
pub struct TreeEnsemble {
    forest: Forest,
    kind: Kind,
    post: PostTransform,
    base: Vec<f64>,
}

/// What one run gives.
#[derive(Clone, Debug, PartialEq)]
pub struct Output {
    /// Classifiers: the label of each row.
    pub labels: Option<LabelValues>,
    /// `[rows, columns]`: probabilities or scores (classes), or targets.
    pub scores: Vec<f32>,
    pub columns: usize,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::Invalid(message.into())
}

impl TreeEnsemble {
    /// A `TreeEnsembleClassifier`. `n_features` is the input's width when the
    /// graph declares it.
    pub fn classifier(attrs: &Attributes, n_features: Option<usize>) -> Result<TreeEnsemble> {
        let labels = match (
            attrs.classlabels_int64s.is_empty(),
            attrs.classlabels_strings.is_empty(),
        ) {
            (false, true) => Labels::Int64(attrs.classlabels_int64s.clone()),
            (true, false) => Labels::Strings(attrs.classlabels_strings.clone()),
            (true, true) => return Err(invalid("a classifier without class labels")),
            (false, false) => {
                return Err(invalid(
                    "a classifier with both integer and string class labels",
                ));
            }
        };
        let classes = labels.len();
        if classes < 2 {
            return Err(Error::Unsupported(
                "a tree classifier with a single class".into(),
            ));
        }
        if attrs.base_values.len() > classes {
            return Err(invalid(format!(
                "{} base values for {classes} classes",
                attrs.base_values.len()
            )));
        }
        let forest = build_forest(attrs, classes, n_features, Aggregate::Sum)?;
        let mut ids = attrs.leaf_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        let binary = classes == 2 && ids.len() == 1;
        let all_positive = attrs.leaf_weights.iter().all(|&w| w >= 0.0);
        Ok(TreeEnsemble {
            forest,
            kind: Kind::Classifier {
                labels,
                binary,
                all_positive,
            },
            post: PostTransform::parse(attrs.post_transform.as_deref())?,
            base: attrs.base_values.clone(),
        })
    }

    /// A `TreeEnsembleRegressor`.
    pub fn regressor(attrs: &Attributes, n_features: Option<usize>) -> Result<TreeEnsemble> {
        let targets = attrs
            .n_targets
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n >= 1)
            .ok_or_else(|| invalid("a regressor needs n_targets >= 1"))?;
        let aggregate = match attrs.aggregate_function.as_deref().unwrap_or("SUM") {
            "SUM" => Aggregate::Sum,
            "AVERAGE" => Aggregate::Average,
            "MIN" => Aggregate::Min,
            "MAX" => Aggregate::Max,
            other => return Err(invalid(format!("unknown aggregate_function '{other}'"))),
        };
        let forest = build_forest(attrs, targets, n_features, aggregate)?;
        Ok(TreeEnsemble {
            forest,
            kind: Kind::Regressor { aggregate },
            post: PostTransform::parse(attrs.post_transform.as_deref())?,
            base: attrs.base_values.clone(),
        })
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    pub fn n_features(&self) -> usize {
        self.forest.n_features()
    }

    /// Columns of the scores output: classes or targets.
    pub fn columns(&self) -> usize {
        self.forest.n_outputs()
    }

    pub fn labels(&self) -> Option<&Labels> {
        match &self.kind {
            Kind::Classifier { labels, .. } => Some(labels),
            Kind::Regressor { .. } => None,
        }
    }

    pub fn is_classifier(&self) -> bool {
        matches!(self.kind, Kind::Classifier { .. })
    }

    /// Runs `rows` rows of `x` (row-major, `n_features` each).
    pub fn run(&self, x: &[f32], rows: usize) -> Result<Output> {
        let columns = self.forest.n_outputs();
        let n = rows
            .checked_mul(columns)
            .ok_or_else(|| Error::Shape("too many rows".into()))?;
        let mut sums = vec![0.0; n];
        let mut present = vec![false; n];
        self.forest.predict(x, rows, &mut sums, &mut present)?;
        let mut scores = vec![0.0f32; n];
        match &self.kind {
            Kind::Regressor { aggregate } => {
                for ((s, h), out) in sums
                    .chunks_exact(columns)
                    .zip(present.chunks_exact(columns))
                    .zip(scores.chunks_exact_mut(columns))
                {
                    self.finish_regression(*aggregate, s, h, out);
                }
                Ok(Output {
                    labels: None,
                    scores,
                    columns,
                })
            }
            Kind::Classifier {
                labels,
                binary,
                all_positive,
            } => {
                let mut picked = Vec::with_capacity(rows);
                for ((s, h), out) in sums
                    .chunks_exact(columns)
                    .zip(present.chunks_exact(columns))
                    .zip(scores.chunks_exact_mut(columns))
                {
                    picked.push(self.finish_classification(
                        s,
                        h,
                        out,
                        *binary,
                        *all_positive,
                        labels,
                    ));
                }
                let labels = match labels {
                    Labels::Int64(_) => LabelValues::Int64(
                        picked
                            .iter()
                            .map(|p| match p {
                                Picked::Index(i) => match labels {
                                    Labels::Int64(l) => l[*i],
                                    Labels::Strings(_) => *i as i64,
                                },
                                Picked::Literal(v) => *v,
                            })
                            .collect(),
                    ),
                    Labels::Strings(names) => LabelValues::Strings(
                        picked
                            .iter()
                            .map(|p| {
                                let i = match p {
                                    Picked::Index(i) => *i,
                                    Picked::Literal(v) => *v as usize,
                                };
                                names[i].clone()
                            })
                            .collect(),
                    ),
                };
                Ok(Output {
                    labels: Some(labels),
                    scores,
                    columns,
                })
            }
        }
    }

    fn finish_regression(&self, aggregate: Aggregate, sums: &[f64], has: &[bool], out: &mut [f32]) {
        if sums.len() == 1 {
            let origin = if self.base.len() == 1 {
                self.base[0]
            } else {
                0.0
            };
            let score = match aggregate {
                Aggregate::Sum | Aggregate::Average => sums[0],
                Aggregate::Min | Aggregate::Max if has[0] => sums[0],
                Aggregate::Min | Aggregate::Max => 0.0,
            } + origin;
            out[0] = if self.post == PostTransform::Probit {
                probit(score as f32)
            } else {
                score as f32
            };
            return;
        }
        let use_base = self.base.len() == sums.len();
        let mut values: Vec<f64> = sums
            .iter()
            .zip(has)
            .enumerate()
            .map(|(c, (&s, &h))| {
                if !h {
                    0.0
                } else if use_base {
                    s + self.base[c]
                } else {
                    s
                }
            })
            .collect();
        transform_many(self.post, &mut values);
        for (o, v) in out.iter_mut().zip(values) {
            *o = v as f32;
        }
    }

    fn finish_classification(
        &self,
        sums: &[f64],
        has: &[bool],
        out: &mut [f32],
        binary: bool,
        all_positive: bool,
        labels: &Labels,
    ) -> Picked {
        if sums.len() > 2 {
            let mut values: Vec<f64> = sums.to_vec();
            let mut present: Vec<bool> = has.to_vec();
            for (k, b) in self.base.iter().enumerate() {
                if present[k] {
                    values[k] += b;
                } else {
                    values[k] = *b;
                    present[k] = true;
                }
            }
            let mut best: Option<usize> = None;
            for (k, (&v, &p)) in values.iter().zip(&present).enumerate() {
                if p && best.is_none_or(|b| v > values[b]) {
                    best = Some(k);
                }
            }
            let mut shown: Vec<f64> = values
                .iter()
                .zip(&present)
                .map(|(&v, &p)| if p { v } else { 0.0 })
                .collect();
            transform_many(self.post, &mut shown);
            for (o, v) in out.iter_mut().zip(shown) {
                *o = v as f32;
            }
            return Picked::Index(best.unwrap_or(0));
        }

        // Two classes.
        let (mut s0, mut s1) = (sums[0], sums[1]);
        let (h0, h1) = (has[0], has[1]);
        let mut second_class = -1;
        let mut single = false;
        match self.base.len() {
            2 if h1 => {
                s1 = self.base[1] + s0;
                s0 = -s1;
            }
            2 => {
                s1 += self.base[1];
                s0 += self.base[0];
            }
            1 => {
                s0 += self.base[0];
                single = !h1;
            }
            0 => {
                second_class = 3;
                single = !h1;
            }
            _ => {}
        }
        let positive = if !single && h1 {
            s1
        } else if h0 {
            s0
        } else {
            0.0
        };
        let picked = if binary {
            let (class, code) = match (all_positive, positive) {
                (true, p) if p > 0.5 => (1, 0),
                (true, _) => (0, 1),
                (false, p) if p > 0.0 => (1, 2),
                (false, _) => (0, 3),
            };
            second_class = code;
            Picked::Index(class)
        } else {
            // onnxruntime answers 1 or 0 itself here (for string labels:
            // the second or first label), not the class's label.
            let positive_label = i64::from(positive > 0.0);
            match labels {
                Labels::Int64(_) => Picked::Literal(positive_label),
                Labels::Strings(_) => Picked::Index(positive_label as usize),
            }
        };
        let s0 = if h0 { s0 } else { 0.0 };
        if !single {
            let mut both = [s0, if h1 { s1 } else { 0.0 }];
            transform_many(self.post, &mut both);
            out[0] = both[0] as f32;
            out[1] = both[1] as f32;
            return picked;
        }
        match (self.post, second_class) {
            (PostTransform::Probit, _) => {
                out[0] = probit(s0 as f32);
                out[1] = 0.0;
            }
            (_, 0 | 1) => {
                out[0] = (1.0 - s0) as f32;
                out[1] = s0 as f32;
            }
            (PostTransform::Logistic, 2 | 3) => {
                out[0] = logistic(-s0) as f32;
                out[1] = logistic(s0) as f32;
            }
            (_, 2 | 3) => {
                out[0] = (-s0) as f32;
                out[1] = s0 as f32;
            }
            _ => {
                out[0] = s0 as f32;
                out[1] = 0.0;
            }
        }
        picked
    }
}

#[derive(Clone, Copy, Debug)]
enum Picked {
    /// A class index (its label is looked up).
    Index(usize),
    /// A label value as is.
    Literal(i64),
}

fn logistic(v: f64) -> f64 {
    let e = 1.0 / (1.0 + (-v.abs()).exp());
    if v < 0.0 { 1.0 - e } else { e }
}

/// onnxruntime's probit: sqrt(2) * erfinv(2v - 1), with its approximation
/// of erfinv (in f32, as it computes it).
fn probit(v: f32) -> f32 {
    let x = 2.0 * v - 1.0;
    let sign = if x < 0.0 { -1.0f32 } else { 1.0 };
    let x = (1.0 - x) * (1.0 + x);
    let log = x.ln();
    let a = 2.0 / (std::f32::consts::PI * 0.147) + 0.5 * log;
    let b = 1.0 / 0.147 * log;
    let c = -a + (a * a - b).sqrt();
    std::f32::consts::SQRT_2 * sign * c.sqrt()
}

fn transform_many(post: PostTransform, values: &mut [f64]) {
    match post {
        PostTransform::None => {}
        PostTransform::Logistic => {
            for v in values.iter_mut() {
                *v = logistic(*v);
            }
        }
        PostTransform::Probit => {
            for v in values.iter_mut() {
                *v = f64::from(probit(*v as f32));
            }
        }
        PostTransform::Softmax => softmax(values),
        PostTransform::SoftmaxZero => {
            let max = values.iter().copied().fold(-f64::from(f32::MAX), f64::max);
            let scale = (-max).exp();
            let mut sum = 0.0;
            for v in values.iter_mut() {
                if v.abs() > 1e-7 {
                    *v = (*v - max).exp();
                    sum += *v;
                } else {
                    *v *= scale;
                }
            }
            for v in values.iter_mut() {
                *v /= sum;
            }
        }
    }
}

/// The most trees, nodes or leaf weights an ensemble may declare.
const MAX_ENTRIES: usize = crate::forest::MAX_NODES;

fn build_forest(
    attrs: &Attributes,
    outputs: usize,
    n_features: Option<usize>,
    aggregate: Aggregate,
) -> Result<Forest> {
    let n = attrs.nodes_nodeids.len();
    if n == 0 {
        return Err(invalid("the ensemble has no nodes"));
    }
    if n > MAX_ENTRIES || attrs.leaf_ids.len() > MAX_ENTRIES {
        return Err(invalid("the ensemble has too many nodes"));
    }
    for (name, len) in [
        ("nodes_treeids", attrs.nodes_treeids.len()),
        ("nodes_featureids", attrs.nodes_featureids.len()),
        ("nodes_modes", attrs.nodes_modes.len()),
        ("nodes_values", attrs.nodes_values.len()),
        ("nodes_truenodeids", attrs.nodes_truenodeids.len()),
        ("nodes_falsenodeids", attrs.nodes_falsenodeids.len()),
    ] {
        if len != n {
            return Err(invalid(format!("{name} has {len} entries for {n} nodes")));
        }
    }
    if attrs.nodes_missing_value_tracks_true.len() > n {
        return Err(invalid(
            "nodes_missing_value_tracks_true has too many entries",
        ));
    }
    let w = attrs.leaf_ids.len();
    if attrs.leaf_treeids.len() != w
        || attrs.leaf_nodeids.len() != w
        || attrs.leaf_weights.len() != w
    {
        return Err(invalid(
            "the leaf weight lists (tree ids, node ids, class or target ids, weights) differ in length",
        ));
    }

    // Trees in order of first appearance; (tree id, node id) -> (tree, local index).
    let mut tree_of: HashMap<i64, usize> = HashMap::new();
    let mut where_is: HashMap<(i64, i64), (usize, usize)> = HashMap::with_capacity(n);
    let mut trees: Vec<RawTree> = Vec::new();
    let mut tree_ids: Vec<i64> = Vec::new();
    let mut previous: Option<i64> = None;
    for i in 0..n {
        let tree_id = attrs.nodes_treeids[i];
        let t = match tree_of.get(&tree_id) {
            Some(&t) => {
                if previous != Some(tree_id) {
                    return Err(invalid(format!(
                        "the nodes of tree {tree_id} are not listed together"
                    )));
                }
                t
            }
            None => {
                tree_of.insert(tree_id, trees.len());
                trees.push(RawTree::default());
                tree_ids.push(tree_id);
                trees.len() - 1
            }
        };
        previous = Some(tree_id);
        let local = trees[t].nodes.len();
        if where_is
            .insert((tree_id, attrs.nodes_nodeids[i]), (t, local))
            .is_some()
        {
            return Err(invalid(format!(
                "node {} of tree {tree_id} is listed twice",
                attrs.nodes_nodeids[i]
            )));
        }
        // Placeholder, filled in below once every node is known.
        trees[t].nodes.push(RawNode::Leaf(Vec::new()));
    }

    let mut max_feature = 0usize;
    for i in 0..n {
        let tree_id = attrs.nodes_treeids[i];
        let (t, local) = where_is[&(tree_id, attrs.nodes_nodeids[i])];
        let mode = attrs.nodes_modes[i].as_str();
        if mode == "LEAF" {
            continue;
        }
        let threshold = attrs.nodes_values[i];
        let test = match mode {
            "BRANCH_LEQ" => Test::LessEq(threshold),
            "BRANCH_LT" => Test::Less(threshold),
            "BRANCH_GTE" => Test::GreaterEq(threshold),
            "BRANCH_GT" => Test::Greater(threshold),
            "BRANCH_EQ" => Test::Equal(threshold),
            "BRANCH_NEQ" => Test::NotEqual(threshold),
            other => return Err(invalid(format!("unknown node mode '{other}'"))),
        };
        let child = |id: i64, which: &str| -> Result<usize> {
            match where_is.get(&(tree_id, id)) {
                Some(&(ct, local)) if ct == t => Ok(local),
                _ => Err(invalid(format!(
                    "node {} of tree {tree_id}: its {which} node {id} does not exist",
                    attrs.nodes_nodeids[i]
                ))),
            }
        };
        let feature = usize::try_from(attrs.nodes_featureids[i]).map_err(|_| {
            invalid(format!(
                "feature id {} is negative",
                attrs.nodes_featureids[i]
            ))
        })?;
        if feature >= crate::forest::MAX_FEATURES {
            return Err(invalid(format!("feature id {feature} is too large")));
        }
        max_feature = max_feature.max(feature);
        trees[t].nodes[local] = RawNode::Split(Split {
            feature,
            test,
            if_true: child(attrs.nodes_truenodeids[i], "true")?,
            if_false: child(attrs.nodes_falsenodeids[i], "false")?,
            missing_true: attrs.nodes_missing_value_tracks_true.get(i) == Some(&1),
        });
    }

    for k in 0..w {
        let key = (attrs.leaf_treeids[k], attrs.leaf_nodeids[k]);
        let &(t, local) = where_is.get(&key).ok_or_else(|| {
            invalid(format!(
                "a weight names node {} of tree {}, which does not exist",
                key.1, key.0
            ))
        })?;
        let column = usize::try_from(attrs.leaf_ids[k])
            .ok()
            .filter(|&c| c < outputs)
            .ok_or_else(|| {
                invalid(format!(
                    "a weight is for output {}, but there are {outputs}",
                    attrs.leaf_ids[k]
                ))
            })?;
        // Weights on a node that is not a leaf are ignored, as onnxruntime does.
        if let RawNode::Leaf(values) = &mut trees[t].nodes[local] {
            values.push((column, attrs.leaf_weights[k]));
        }
    }
    for (t, tree) in trees.iter().enumerate() {
        if tree
            .nodes
            .iter()
            .any(|node| matches!(node, RawNode::Leaf(v) if v.is_empty()))
        {
            return Err(invalid(format!(
                "tree {} has a leaf without a weight",
                tree_ids[t]
            )));
        }
    }

    let needed = max_feature + 1;
    let n_features = match n_features {
        Some(declared) if declared < needed => {
            return Err(invalid(format!(
                "the ensemble reads feature {max_feature} but the input has {declared} features"
            )));
        }
        Some(declared) => declared,
        None => needed,
    };
    Forest::build(n_features, outputs, trees, aggregate)
}

#[cfg(test)]
mod tests;

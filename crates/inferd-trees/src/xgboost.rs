//! XGBoost's JSON model format (`Booster.save_model("model.json")`, 1.x–3.x).
//!
//! What is read:
//!
//! - `learner.learner_model_param`: `num_feature`, `num_class`, `num_target`
//!   and `base_score` (a number, or since 3.x a list with one entry per
//!   output, written as a string). `base_score` is kept in the objective's
//!   output space and turned into a margin the way XGBoost does it (logit
//!   for `binary:logistic` and `reg:logistic`, log for count/gamma/tweedie,
//!   as is otherwise, `binary:logitraw` included), then added to every
//!   row's margin.
//! - `learner.objective.name`: the transform and the outputs.
//! - `learner.gradient_booster`: `gbtree`, or `dart` (each tree scaled by its
//!   `weight_drop`). `gblinear` is refused.
//! - each tree's `left_children`, `right_children`, `split_indices`,
//!   `split_conditions` (a leaf's value for leaves), `default_left`, and
//!   `split_type` (categorical splits are refused). A row goes left when
//!   `x < split_condition`, and where `default_left` says when `x` is NaN.
//! - `tree_info`: which output (class) each tree adds to.
//!
//! Numbers are parsed from their JSON text straight to f32, the type XGBoost
//! keeps them in, so thresholds are bit-exact.

use serde::Deserialize;
use serde::de::{self, Deserializer};
use serde_json::value::RawValue;

use crate::{Aggregate, Booster, Error, Forest, Link, RawNode, RawTree, Result, Split, Task, Test};

const FORMAT: &str = "XGBoost JSON";

fn parse_error(message: impl Into<String>) -> Error {
    Error::Parse {
        format: FORMAT,
        message: message.into(),
    }
}

#[derive(Deserialize)]
struct File<'a> {
    #[serde(borrow)]
    learner: Learner<'a>,
}

#[derive(Deserialize)]
struct Learner<'a> {
    learner_model_param: ModelParam,
    objective: Objective,
    #[serde(borrow)]
    gradient_booster: GradientBooster<'a>,
}

#[derive(Deserialize)]
struct ModelParam {
    #[serde(default)]
    base_score: Option<String>,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct Objective {
    name: String,
}

#[derive(Deserialize)]
struct GradientBooster<'a> {
    name: String,
    #[serde(borrow, default)]
    model: Option<TreeModel<'a>>,
    /// DART keeps the tree model one level down.
    #[serde(borrow, default)]
    gbtree: Option<Box<GradientBooster<'a>>>,
    #[serde(borrow, default)]
    weight_drop: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct TreeModel<'a> {
    #[serde(borrow)]
    trees: Vec<Tree<'a>>,
    tree_info: Vec<i64>,
}

#[derive(Deserialize)]
struct Tree<'a> {
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    #[serde(borrow)]
    split_conditions: Vec<&'a RawValue>,
    #[serde(deserialize_with = "flags")]
    default_left: Vec<bool>,
    #[serde(default)]
    split_type: Option<Vec<i64>>,
    #[serde(default)]
    tree_param: Option<TreeParam>,
}

#[derive(Deserialize)]
struct TreeParam {
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

/// `default_left` is a list of 0/1 in newer files and of booleans in older ones.
fn flags<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Int(i64),
    }
    let raw: Vec<Flag> = Vec::deserialize(d)?;
    raw.into_iter()
        .map(|f| match f {
            Flag::Bool(b) => Ok(b),
            Flag::Int(0) => Ok(false),
            Flag::Int(1) => Ok(true),
            Flag::Int(other) => Err(de::Error::custom(format!(
                "default_left holds {other}, not 0 or 1"
            ))),
        })
        .collect()
}

fn number(raw: &RawValue, what: &str) -> Result<f32> {
    let text = raw.get().trim();
    let text = text
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(text);
    text.parse::<f32>()
        .map_err(|_| parse_error(format!("{what}: '{text}' is not a number")))
}

fn count(text: Option<&str>, what: &str) -> Result<usize> {
    match text {
        None => Ok(0),
        Some(t) => t
            .trim()
            .parse::<usize>()
            .map_err(|_| parse_error(format!("{what}: '{t}' is not a count"))),
    }
}

/// `base_score`: "5E-1", or "[5E-1]" / "[1E-1,2E-1]" since 3.x.
fn base_scores(text: &str) -> Result<Vec<f32>> {
    let t = text.trim();
    let inner = t
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(t);
    inner
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f32>()
                .map_err(|_| parse_error(format!("base_score '{text}' is not a number list")))
        })
        .collect()
}

/// How `base_score` becomes a margin (`None`: outside the objective's range).
type ToMargin = fn(f64) -> Option<f64>;

/// What an objective does: its transform, task, and how `base_score`
/// becomes a margin.
fn objective(name: &str, outputs: usize) -> Result<(Link, Task, ToMargin)> {
    fn same(b: f64) -> Option<f64> {
        Some(b)
    }
    fn logit(b: f64) -> Option<f64> {
        (b > 0.0 && b < 1.0).then(|| -(1.0 / b - 1.0).ln())
    }
    fn log(b: f64) -> Option<f64> {
        (b > 0.0).then(|| b.ln())
    }
    Ok(match name {
        "binary:logistic" => (Link::Sigmoid(1.0), Task::Binary, logit),
        "reg:logistic" => (Link::Sigmoid(1.0), Task::Regression, logit),
        "binary:logitraw" => (Link::Identity, Task::Regression, same),
        "reg:squarederror"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror"
        | "reg:linear"
        | "rank:pairwise"
        | "rank:ndcg"
        | "rank:map" => (Link::Identity, Task::Regression, same),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (Link::Exp, Task::Regression, log),
        "multi:softprob" if outputs >= 2 => (Link::Softmax, Task::Multiclass, same),
        "multi:softmax" if outputs >= 2 => (Link::Softmax, Task::MulticlassLabel, same),
        other => {
            return Err(Error::Unsupported(format!(
                "XGBoost objective '{other}' (supported: binary:logistic, binary:logitraw, \
                 reg:logistic, reg:squarederror and other identity-link regressions, \
                 count:poisson, reg:gamma, reg:tweedie, multi:softprob, multi:softmax)"
            )));
        }
    })
}

/// Reads an XGBoost JSON model.
pub fn load(bytes: &[u8]) -> Result<Booster> {
    let file: File<'_> = serde_json::from_slice(bytes).map_err(|e| parse_error(format!("{e}")))?;
    let learner = file.learner;
    let param = &learner.learner_model_param;
    let n_features = count(Some(&param.num_feature), "num_feature")?;
    let n_class = count(param.num_class.as_deref(), "num_class")?;
    let n_target = count(param.num_target.as_deref(), "num_target")?;
    let outputs = n_class.max(n_target).max(1);
    if outputs > crate::forest::MAX_OUTPUTS {
        return Err(parse_error(format!("{outputs} outputs is too many")));
    }

    let (model, weight_drop) = match learner.gradient_booster.name.as_str() {
        "gbtree" => (learner.gradient_booster.model, None),
        "dart" => {
            let inner = learner
                .gradient_booster
                .gbtree
                .ok_or_else(|| parse_error("a dart booster without its gbtree"))?;
            let drops = learner
                .gradient_booster
                .weight_drop
                .ok_or_else(|| parse_error("a dart booster without weight_drop"))?
                .iter()
                .map(|w| number(w, "weight_drop").map(f64::from))
                .collect::<Result<Vec<f64>>>()?;
            (inner.model, Some(drops))
        }
        other => {
            return Err(Error::Unsupported(format!(
                "XGBoost booster '{other}' (only gbtree and dart are tree models)"
            )));
        }
    };
    let model = model.ok_or_else(|| parse_error("the booster has no model"))?;
    if model.tree_info.len() != model.trees.len() {
        return Err(parse_error(format!(
            "tree_info has {} entries for {} trees",
            model.tree_info.len(),
            model.trees.len()
        )));
    }
    if let Some(drops) = &weight_drop
        && drops.len() != model.trees.len()
    {
        return Err(parse_error(format!(
            "weight_drop has {} entries for {} trees",
            drops.len(),
            model.trees.len()
        )));
    }

    let mut trees = Vec::with_capacity(model.trees.len());
    for (t, tree) in model.trees.iter().enumerate() {
        let group = usize::try_from(model.tree_info[t])
            .ok()
            .filter(|&g| g < outputs)
            .ok_or_else(|| {
                parse_error(format!(
                    "tree {t} adds to output {}, but the model has {outputs}",
                    model.tree_info[t]
                ))
            })?;
        let scale = weight_drop.as_ref().map_or(1.0, |d| d[t]);
        trees.push(read_tree(t, tree, group, scale)?);
    }
    let forest = Forest::build(n_features, outputs, trees, Aggregate::Sum)?;

    let (link, task, to_margin) = objective(&learner.objective.name, outputs)?;
    let scores = match &param.base_score {
        Some(text) => base_scores(text)?,
        None => vec![0.5],
    };
    let scores: Vec<f32> = match scores.len() {
        1 => vec![scores[0]; outputs],
        n if n == outputs => scores,
        n => {
            return Err(parse_error(format!(
                "base_score has {n} values for {outputs} outputs"
            )));
        }
    };
    let base = scores
        .iter()
        .map(|&b| {
            to_margin(f64::from(b)).ok_or_else(|| {
                Error::Invalid(format!(
                    "base_score {b} is outside what objective '{}' accepts",
                    learner.objective.name
                ))
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    Booster::new(forest, base, link, task, learner.objective.name)
}

fn read_tree(t: usize, tree: &Tree<'_>, group: usize, scale: f64) -> Result<RawTree> {
    let n = tree.left_children.len();
    let lengths = [
        tree.right_children.len(),
        tree.split_indices.len(),
        tree.split_conditions.len(),
        tree.default_left.len(),
    ];
    if lengths.iter().any(|&l| l != n) {
        return Err(parse_error(format!(
            "tree {t}: node arrays have different lengths ({n}, {lengths:?})"
        )));
    }
    if let Some(types) = &tree.split_type {
        if types.len() != n {
            return Err(parse_error(format!(
                "tree {t}: split_type has {} entries for {n} nodes",
                types.len()
            )));
        }
        if types.iter().any(|&s| s != 0) {
            return Err(Error::Unsupported(
                "XGBoost categorical splits (train with numeric features or one-hot encode)".into(),
            ));
        }
    }
    if let Some(param) = &tree.tree_param
        && let Some(size) = &param.size_leaf_vector
        && !matches!(size.trim(), "0" | "1")
    {
        return Err(Error::Unsupported(
            "XGBoost multi-output trees (vector leaves)".into(),
        ));
    }
    if n == 0 {
        return Err(parse_error(format!("tree {t} has no nodes")));
    }
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let (l, r) = (tree.left_children[i], tree.right_children[i]);
        let value = number(tree.split_conditions[i], "split_conditions")?;
        if l == -1 {
            nodes.push(RawNode::Leaf(vec![(group, f64::from(value) * scale)]));
            continue;
        }
        let child = |c: i64| {
            usize::try_from(c)
                .ok()
                .filter(|&c| c < n)
                .ok_or_else(|| parse_error(format!("tree {t}: child index {c} is out of range")))
        };
        let feature = usize::try_from(tree.split_indices[i]).map_err(|_| {
            parse_error(format!(
                "tree {t}: feature index {} is negative",
                tree.split_indices[i]
            ))
        })?;
        nodes.push(RawNode::Split(Split {
            feature,
            test: Test::Less(f64::from(value)),
            if_true: child(l)?,
            if_false: child(r)?,
            missing_true: tree.default_left[i],
        }));
    }
    Ok(RawTree { nodes, root: 0 })
}

#[cfg(test)]
mod tests;

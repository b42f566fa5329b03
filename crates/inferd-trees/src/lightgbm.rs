//! LightGBM's text model format (`Booster.save_model("model.txt")`).
//!
//! The header gives `num_class`, `num_tree_per_iteration`, `max_feature_idx`,
//! `objective` (with its parameters, e.g. `binary sigmoid:1`) and, for
//! random-forest models, `average_output`. Each `Tree=` block gives the
//! internal nodes' `split_feature`, `threshold`, `decision_type`,
//! `left_child` and `right_child` (a negative child `~i` is leaf `i`), and the
//! leaves' `leaf_value`, in which LightGBM has already applied `shrinkage`.
//! Tree `i` adds to class `i % num_tree_per_iteration`.
//!
//! `decision_type` bits: 1 categorical, 2 default left, bits 2–3 the missing
//! type (0 none: NaN counts as 0; 1 zero: NaN and ±1e-35 take the default
//! side; 2 NaN: NaN takes the default side). A numeric split goes left when
//! `x <= threshold` (compared in double, as LightGBM does). A categorical
//! split goes left when the integer category's bit is set in its
//! `cat_threshold` words; NaN and negative values go right. Linear trees are
//! refused.

use crate::{Aggregate, Booster, Error, Forest, Link, RawNode, RawTree, Result, Split, Task, Test};

const FORMAT: &str = "LightGBM text";

fn parse_error(message: impl Into<String>) -> Error {
    Error::Parse {
        format: FORMAT,
        message: message.into(),
    }
}

/// One `Tree=` block's lines.
struct Block<'a> {
    index: usize,
    lines: Vec<(&'a str, &'a str)>,
}

impl<'a> Block<'a> {
    fn get(&self, key: &str) -> Option<&'a str> {
        self.lines.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    fn required(&self, key: &str) -> Result<&'a str> {
        self.get(key)
            .ok_or_else(|| parse_error(format!("tree {}: no '{key}' line", self.index)))
    }

    fn list<T: std::str::FromStr>(&self, key: &str) -> Result<Vec<T>> {
        let text = self.required(key)?;
        text.split_whitespace()
            .map(|v| {
                v.parse::<T>().map_err(|_| {
                    parse_error(format!(
                        "tree {}: '{key}' holds '{v}', which is not a valid value",
                        self.index
                    ))
                })
            })
            .collect()
    }
}

fn header_value<'a>(header: &[(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    header.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

fn header_count(header: &[(&str, &str)], key: &str) -> Result<Option<usize>> {
    header_value(header, key)
        .map(|v| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| parse_error(format!("'{key}={v}' is not a count")))
        })
        .transpose()
}

/// Reads a LightGBM text model.
pub fn load(bytes: &[u8]) -> Result<Booster> {
    let text = std::str::from_utf8(bytes).map_err(|_| parse_error("the file is not UTF-8"))?;
    let mut header: Vec<(&str, &str)> = Vec::new();
    let mut blocks: Vec<Block<'_>> = Vec::new();
    let mut flags: Vec<&str> = Vec::new();
    let mut seen_end = false;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line == "end of trees" {
            seen_end = true;
            break;
        }
        if line.is_empty() {
            continue;
        }
        if let Some(index) = line.strip_prefix("Tree=") {
            let index = index
                .trim()
                .parse::<usize>()
                .map_err(|_| parse_error(format!("'{line}' does not name a tree")))?;
            blocks.push(Block {
                index,
                lines: Vec::new(),
            });
            continue;
        }
        let entry = match line.split_once('=') {
            Some((k, v)) => (k.trim(), v.trim()),
            None => {
                if blocks.is_empty() {
                    flags.push(line.trim());
                }
                continue;
            }
        };
        match blocks.last_mut() {
            Some(block) => block.lines.push(entry),
            None => header.push(entry),
        }
    }
    if !text.starts_with("tree") {
        return Err(parse_error("it does not start with 'tree'"));
    }
    if !seen_end {
        return Err(parse_error(
            "no 'end of trees' line (is the file cut short?)",
        ));
    }
    if blocks.is_empty() {
        return Err(parse_error("the model has no trees"));
    }

    let n_class = header_count(&header, "num_class")?.unwrap_or(1).max(1);
    let per_iteration = header_count(&header, "num_tree_per_iteration")?.unwrap_or(n_class);
    if per_iteration == 0 || per_iteration > crate::forest::MAX_OUTPUTS {
        return Err(parse_error(format!(
            "num_tree_per_iteration={per_iteration} is out of range"
        )));
    }
    let max_feature = header_count(&header, "max_feature_idx")?
        .ok_or_else(|| parse_error("no 'max_feature_idx' line"))?;
    let n_features = max_feature
        .checked_add(1)
        .ok_or_else(|| parse_error("max_feature_idx is out of range"))?;
    let objective_line = header_value(&header, "objective").unwrap_or("regression");
    let average = flags.contains(&"average_output");

    let mut trees = Vec::with_capacity(blocks.len());
    for (t, block) in blocks.iter().enumerate() {
        if block.index != t {
            return Err(parse_error(format!(
                "tree {} appears where tree {t} should",
                block.index
            )));
        }
        trees.push(read_tree(block, t % per_iteration)?);
    }
    if average && trees.len() % per_iteration != 0 {
        return Err(parse_error(
            "an averaged model whose tree count is not a multiple of the trees per iteration",
        ));
    }
    let iterations = trees.len() / per_iteration;
    let mut forest = Forest::build(n_features, per_iteration, trees, Aggregate::Sum)?;
    if average {
        // Each output averages over its own trees (one per iteration):
        // rebuilding with AVERAGE would divide by all trees, so scale leaves.
        forest = scale_forest(forest, iterations)?;
    }

    let (link, task) = objective(objective_line, per_iteration)?;
    let base = vec![0.0; per_iteration];
    Booster::new(forest, base, link, task, objective_line.to_owned())
}

fn scale_forest(forest: Forest, iterations: usize) -> Result<Forest> {
    if iterations == 0 {
        return Err(parse_error("an averaged model with no iterations"));
    }
    Ok(forest.scaled(1.0 / iterations as f64))
}

fn objective(line: &str, outputs: usize) -> Result<(Link, Task)> {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or("regression");
    let mut sigmoid = 1.0;
    for word in words {
        if let Some(v) = word.strip_prefix("sigmoid:") {
            sigmoid = v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| parse_error(format!("objective '{line}': bad sigmoid")))?;
        }
    }
    Ok(match name {
        "binary" if outputs == 1 => (Link::Sigmoid(sigmoid), Task::Binary),
        "cross_entropy" | "xentropy" if outputs == 1 => (Link::Sigmoid(1.0), Task::Regression),
        "multiclass" | "softmax" if outputs >= 2 => (Link::Softmax, Task::Multiclass),
        "multiclassova" | "multiclass_ova" | "ova" | "ovr" if outputs >= 2 => {
            (Link::Sigmoid(sigmoid), Task::Multiclass)
        }
        "regression"
        | "regression_l2"
        | "l2"
        | "mean_squared_error"
        | "mse"
        | "l2_root"
        | "root_mean_squared_error"
        | "rmse"
        | "regression_l1"
        | "l1"
        | "mean_absolute_error"
        | "mae"
        | "huber"
        | "fair"
        | "quantile"
        | "mape"
        | "mean_absolute_percentage_error"
        | "lambdarank"
        | "rank_xendcg"
        | "xendcg"
        | "custom"
            if outputs == 1 =>
        {
            (Link::Identity, Task::Regression)
        }
        "poisson" | "gamma" | "tweedie" if outputs == 1 => (Link::Exp, Task::Regression),
        other => {
            return Err(Error::Unsupported(format!(
                "LightGBM objective '{other}' with {outputs} trees per iteration (supported: \
                 binary, multiclass, multiclassova, cross_entropy, regression objectives, \
                 poisson, gamma, tweedie, ranking)"
            )));
        }
    })
}

fn read_tree(block: &Block<'_>, column: usize) -> Result<RawTree> {
    let t = block.index;
    if block.get("is_linear").is_some_and(|v| v.trim() != "0") {
        return Err(Error::Unsupported(format!(
            "tree {t}: LightGBM linear trees (linear_tree=true)"
        )));
    }
    let leaf_values: Vec<f64> = block.list("leaf_value")?;
    let leaves = leaf_values.len();
    let declared: usize = block
        .required("num_leaves")?
        .parse()
        .map_err(|_| parse_error(format!("tree {t}: num_leaves is not a count")))?;
    if declared != leaves || leaves == 0 {
        return Err(parse_error(format!(
            "tree {t}: num_leaves={declared} but {leaves} leaf values"
        )));
    }
    let internal = leaves - 1;
    let mut nodes = Vec::with_capacity(leaves + internal);
    if internal > 0 {
        let features: Vec<usize> = block.list("split_feature")?;
        let thresholds: Vec<f64> = block.list("threshold")?;
        let decisions: Vec<i16> = block.list("decision_type")?;
        let lefts: Vec<i64> = block.list("left_child")?;
        let rights: Vec<i64> = block.list("right_child")?;
        for (name, len) in [
            ("split_feature", features.len()),
            ("threshold", thresholds.len()),
            ("decision_type", decisions.len()),
            ("left_child", lefts.len()),
            ("right_child", rights.len()),
        ] {
            if len != internal {
                return Err(parse_error(format!(
                    "tree {t}: '{name}' has {len} values for {internal} splits"
                )));
            }
        }
        let has_categorical = decisions.iter().any(|d| d & 1 == 1);
        let (boundaries, words): (Vec<usize>, Vec<u32>) = if has_categorical {
            (block.list("cat_boundaries")?, block.list("cat_threshold")?)
        } else {
            (Vec::new(), Vec::new())
        };
        let child = |c: i64| -> Result<usize> {
            let index = if c >= 0 {
                usize::try_from(c).ok().filter(|&c| c < internal)
            } else {
                usize::try_from(!c)
                    .ok()
                    .filter(|&l| l < leaves)
                    .map(|l| internal + l)
            };
            index.ok_or_else(|| parse_error(format!("tree {t}: child {c} is out of range")))
        };
        for i in 0..internal {
            let decision = decisions[i];
            let threshold = thresholds[i];
            if threshold.is_nan() {
                return Err(parse_error(format!("tree {t}: threshold {i} is NaN")));
            }
            let default_left = decision & 2 != 0;
            let missing = (decision >> 2) & 3;
            let (test, missing_true) = if decision & 1 == 1 {
                let index = threshold as i64;
                let range = usize::try_from(index)
                    .ok()
                    .and_then(|c| Some((*boundaries.get(c)?, *boundaries.get(c + 1)?)))
                    .filter(|(lo, hi)| lo <= hi && *hi <= words.len())
                    .ok_or_else(|| {
                        parse_error(format!(
                            "tree {t}: categorical split {i} names bitset {index}, which is not there"
                        ))
                    })?;
                (Test::Categories(words[range.0..range.1].to_vec()), false)
            } else {
                match missing {
                    0 => (Test::LessEq(threshold), 0.0 <= threshold),
                    1 => (Test::LessEqZeroMissing(threshold), default_left),
                    2 => (Test::LessEq(threshold), default_left),
                    _ => {
                        return Err(parse_error(format!(
                            "tree {t}: decision_type {decision} has an unknown missing type"
                        )));
                    }
                }
            };
            nodes.push(RawNode::Split(Split {
                feature: features[i],
                test,
                if_true: child(lefts[i])?,
                if_false: child(rights[i])?,
                missing_true,
            }));
        }
    }
    for v in leaf_values {
        nodes.push(RawNode::Leaf(vec![(column, v)]));
    }
    Ok(RawTree { nodes, root: 0 })
}

#[cfg(test)]
mod tests;

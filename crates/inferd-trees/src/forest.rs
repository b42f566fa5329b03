//! The flattened forest every format is reduced to, and its prediction kernel.
//!
//! Each tree's reachable nodes are laid out depth first, so a left child sits
//! right after its parent and a walk mostly moves forward through memory. A
//! node is 16 bytes: threshold, feature (with flags in the high bits) and
//! both children. A leaf points at itself on both sides and keeps the index
//! of its values in the threshold's bits, so a walk can take a fixed number
//! of steps (the tree's depth) without asking whether it has arrived: rows
//! that reach a leaf early simply stay there.
//!
//! Rows are taken in chunks of 64, and each tree walks the whole chunk before
//! the next tree starts, so a tree's nodes are fetched once per chunk. Within
//! a tree, rows go in blocks of 8 (then 4, 2, 1 for the rest), one step of
//! every row at a time: the walks do not depend on each other, so the
//! processor overlaps their memory loads and comparisons instead of waiting
//! on one walk's chain of dependent loads.
//!
//! Every split is reduced to one comparison, "go left when `x < t`" in f32,
//! with a flag for where NaN goes. A split that cannot be put that way
//! exactly (equality tests, categorical bitsets, LightGBM's zero-as-missing,
//! `x <= +inf`) is a "slow" node; forests with none of them run a kernel that
//! never looks for one.

use crate::{Error, Result};

/// At most this many nodes in all (indices and flags share 32 bits).
pub(crate) const MAX_NODES: usize = 1 << 28;
/// At most this many input features.
pub(crate) const MAX_FEATURES: usize = 1 << 24;
/// At most this many output columns (targets or classes).
pub(crate) const MAX_OUTPUTS: usize = 1 << 16;
/// At most this deep a tree (root to deepest leaf).
pub(crate) const MAX_DEPTH: usize = 4096;

/// Rows that go through the trees together (tree by tree).
const CHUNK: usize = 64;

const NAN_LEFT: u32 = 1 << 31;
const SLOW: u32 = 1 << 30;
const FEATURE_MASK: u32 = SLOW - 1;

/// What a split tests, in the terms of the format it came from. The node's
/// `if_true` child is taken when the test holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Test {
    /// `x < t`
    Less(f64),
    /// `x <= t`
    LessEq(f64),
    /// `x > t`
    Greater(f64),
    /// `x >= t`
    GreaterEq(f64),
    /// `x == t`
    Equal(f64),
    /// `x != t`
    NotEqual(f64),
    /// LightGBM's categorical split: true when `x`, cut to an integer, is a
    /// non-negative category whose bit is set. NaN and negatives are false.
    Categories(Vec<u32>),
    /// LightGBM's zero-as-missing numeric split: NaN and values within
    /// 1e-35 of zero are missing; anything else is tested with `x <= t`.
    LessEqZeroMissing(f64),
}

/// A split as a parser describes it: child indices are into its tree's node list.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    pub feature: usize,
    pub test: Test,
    pub if_true: usize,
    pub if_false: usize,
    /// Where NaN goes (for tests that do not decide it themselves).
    pub missing_true: bool,
}

/// One node of a tree as a parser describes it.
#[derive(Clone, Debug, PartialEq)]
pub enum RawNode {
    Split(Split),
    /// A leaf's contributions: (output column, value) pairs.
    Leaf(Vec<(usize, f64)>),
}

/// One tree as a parser describes it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RawTree {
    pub nodes: Vec<RawNode>,
    pub root: usize,
}

/// How the trees' leaf values are combined per output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f32,
    feature: u32,
    left: u32,
    right: u32,
}

#[derive(Clone, Copy, Debug)]
struct TreeInfo {
    root: u32,
    depth: u32,
    /// First output column its leaves write, and how many.
    column: u32,
    width: u32,
}

#[derive(Clone, Debug)]
enum SlowTest {
    Compare {
        op: Cmp,
        threshold: f64,
        nan_left: bool,
    },
    Categories(Vec<u32>),
    ZeroMissing {
        threshold: f64,
        missing_left: bool,
    },
    /// `x <= +inf`: every number goes left.
    NotNan {
        nan_left: bool,
    },
}

#[derive(Clone, Copy, Debug)]
enum Cmp {
    Eq,
    Ne,
}

/// LightGBM's `kZeroThreshold` (1e-35f, compared in double).
const ZERO_THRESHOLD: f64 = 1e-35_f32 as f64;

impl SlowTest {
    #[inline]
    fn goes_left(&self, x: f32) -> bool {
        match self {
            SlowTest::Compare {
                op,
                threshold,
                nan_left,
            } => {
                if x.is_nan() {
                    return *nan_left;
                }
                let x = f64::from(x);
                match op {
                    Cmp::Eq => x == *threshold,
                    Cmp::Ne => x != *threshold,
                }
            }
            SlowTest::Categories(bits) => {
                if x.is_nan() {
                    return false;
                }
                // C++'s conversion truncates toward zero; Rust's saturates
                // where C++ would be undefined, which lands outside the set.
                let category = x as i64;
                if category < 0 {
                    return false;
                }
                let word = (category / 32) as usize;
                bits.get(word)
                    .is_some_and(|w| (w >> (category % 32)) & 1 == 1)
            }
            SlowTest::ZeroMissing {
                threshold,
                missing_left,
            } => {
                let x = if x.is_nan() { 0.0 } else { f64::from(x) };
                if (-ZERO_THRESHOLD..=ZERO_THRESHOLD).contains(&x) {
                    *missing_left
                } else {
                    x <= *threshold
                }
            }
            SlowTest::NotNan { nan_left } => !x.is_nan() || *nan_left,
        }
    }
}

/// The smallest f32 that is >= `t`.
fn round_up_f32(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) < t { f.next_up() } else { f }
}

/// The largest f32 that is <= `t`.
fn round_down_f32(t: f64) -> f32 {
    let f = t as f32;
    if f64::from(f) > t { f.next_down() } else { f }
}

/// A forest ready to predict: nodes of all trees in one array.
#[derive(Clone, Debug)]
pub struct Forest {
    n_features: usize,
    n_outputs: usize,
    nodes: Vec<Node>,
    trees: Vec<TreeInfo>,
    leaf_values: Vec<f64>,
    slow: Vec<SlowTest>,
    aggregate: Aggregate,
    /// Some leaf lacks a value for a column inside its tree's range, or the
    /// aggregate is MIN/MAX: which columns got a value is tracked per row.
    tracked: bool,
    /// Columns some tree writes (what "has a value" means when not tracked).
    coverage: Vec<bool>,
}

fn invalid(tree: usize, message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("tree {tree}: {message}"))
}

impl Forest {
    /// Checks and flattens parsed trees.
    ///
    /// Each tree must be a proper tree: every node reachable from the root
    /// at most once (no cycles, no shared children), child indices in range,
    /// features below `n_features`, leaf columns below `n_outputs`, no NaN
    /// thresholds or leaf values.
    pub fn build(
        n_features: usize,
        n_outputs: usize,
        trees: Vec<RawTree>,
        aggregate: Aggregate,
    ) -> Result<Forest> {
        if n_features == 0 {
            return Err(Error::Invalid("the model takes no features".into()));
        }
        if n_features > MAX_FEATURES {
            return Err(Error::Invalid(format!(
                "{n_features} features is more than the {MAX_FEATURES} supported"
            )));
        }
        if n_outputs == 0 || n_outputs > MAX_OUTPUTS {
            return Err(Error::Invalid(format!(
                "{n_outputs} outputs is outside 1..={MAX_OUTPUTS}"
            )));
        }
        if trees.is_empty() {
            return Err(Error::Invalid("the model has no trees".into()));
        }
        let total: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if total > MAX_NODES {
            return Err(Error::Invalid(format!(
                "{total} nodes is more than the {MAX_NODES} supported"
            )));
        }
        let mut forest = Forest {
            n_features,
            n_outputs,
            nodes: Vec::with_capacity(total),
            trees: Vec::with_capacity(trees.len()),
            leaf_values: Vec::new(),
            slow: Vec::new(),
            aggregate,
            tracked: matches!(aggregate, Aggregate::Min | Aggregate::Max),
            coverage: vec![false; n_outputs],
        };
        for (t, tree) in trees.iter().enumerate() {
            forest.add_tree(t, tree)?;
        }
        if !forest.tracked {
            // Slots start as NaN ("no value here"); without tracking an
            // absent value is just 0 in a sum.
            for v in &mut forest.leaf_values {
                if v.is_nan() {
                    *v = 0.0;
                }
            }
        }
        Ok(forest)
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn n_outputs(&self) -> usize {
        self.n_outputs
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// The same forest with every leaf value multiplied by `factor`.
    pub fn scaled(mut self, factor: f64) -> Forest {
        for v in &mut self.leaf_values {
            *v *= factor;
        }
        self
    }

    /// Leaf columns of one tree: (first, width), and whether every leaf has
    /// a value for every column in that range.
    fn leaf_columns(&self, t: usize, tree: &RawTree) -> Result<(usize, usize, bool)> {
        let mut lo = usize::MAX;
        let mut hi = 0;
        for node in &tree.nodes {
            if let RawNode::Leaf(values) = node {
                for &(c, _) in values {
                    if c >= self.n_outputs {
                        return Err(invalid(
                            t,
                            format!(
                                "a leaf writes output {c}, but the model has {}",
                                self.n_outputs
                            ),
                        ));
                    }
                    lo = lo.min(c);
                    hi = hi.max(c);
                }
            }
        }
        if lo == usize::MAX {
            return Err(invalid(t, "no leaf has a value"));
        }
        let width = hi - lo + 1;
        let mut full = true;
        for node in &tree.nodes {
            if let RawNode::Leaf(values) = node {
                let mut seen = vec![false; width];
                for &(c, _) in values {
                    seen[c - lo] = true;
                }
                full &= seen.iter().all(|&s| s);
            }
        }
        Ok((lo, width, full))
    }

    fn add_tree(&mut self, t: usize, tree: &RawTree) -> Result<()> {
        if tree.nodes.is_empty() {
            return Err(invalid(t, "it has no nodes"));
        }
        if tree.root >= tree.nodes.len() {
            return Err(invalid(t, "its root is not one of its nodes"));
        }
        let (column, width, full) = self.leaf_columns(t, tree)?;
        if !full {
            self.tracked = true;
        }
        for c in column..column + width {
            self.coverage[c] = true;
        }
        let base = self.nodes.len();
        // Depth-first: each raw node placed once; a second visit is a cycle
        // or a shared child.
        let mut placed = vec![false; tree.nodes.len()];
        // (raw index, depth, where to patch this node's index as a right child)
        let mut stack: Vec<(usize, usize, Option<usize>)> = vec![(tree.root, 0, None)];
        let mut depth = 0;
        while let Some((raw, d, patch)) = stack.pop() {
            if raw >= tree.nodes.len() {
                return Err(invalid(t, format!("child index {raw} is out of range")));
            }
            if std::mem::replace(&mut placed[raw], true) {
                return Err(invalid(
                    t,
                    format!("node {raw} is reached twice (a cycle or a shared child)"),
                ));
            }
            if d > MAX_DEPTH {
                return Err(invalid(t, format!("it is deeper than {MAX_DEPTH}")));
            }
            depth = depth.max(d);
            let at = self.nodes.len();
            let at32 = u32::try_from(at).map_err(|_| invalid(t, "too many nodes"))?;
            if let Some(parent) = patch {
                self.nodes[parent].right = at32;
            }
            match &tree.nodes[raw] {
                RawNode::Leaf(values) => {
                    let slot = self.leaf_values.len();
                    let slot32 = u32::try_from(slot).map_err(|_| invalid(t, "too many leaves"))?;
                    // NaN marks a column this leaf gives no value.
                    self.leaf_values.resize(slot + width, f64::NAN);
                    for &(c, v) in values {
                        if !v.is_finite() {
                            return Err(invalid(t, format!("leaf value {v} is not finite")));
                        }
                        let cell = &mut self.leaf_values[slot + c - column];
                        *cell = if cell.is_nan() {
                            v
                        } else {
                            // Several values for one column in one leaf
                            // count as if applied one after another.
                            match self.aggregate {
                                Aggregate::Sum | Aggregate::Average => *cell + v,
                                Aggregate::Min => cell.min(v),
                                Aggregate::Max => cell.max(v),
                            }
                        };
                    }
                    self.nodes.push(Node {
                        threshold: f32::from_bits(slot32),
                        feature: 0,
                        left: at32,
                        right: at32,
                    });
                }
                RawNode::Split(split) => {
                    if split.feature >= self.n_features {
                        return Err(invalid(
                            t,
                            format!(
                                "a split tests feature {}, but the model has {}",
                                split.feature, self.n_features
                            ),
                        ));
                    }
                    let (node, left_raw, right_raw) = self.reduce(t, split, at32)?;
                    self.nodes.push(node);
                    // The left child is placed next (popped first).
                    stack.push((right_raw, d + 1, Some(at)));
                    stack.push((left_raw, d + 1, None));
                }
            }
        }
        let root = u32::try_from(base).map_err(|_| invalid(t, "too many nodes"))?;
        self.trees.push(TreeInfo {
            root,
            depth: depth as u32,
            column: column as u32,
            width: width as u32,
        });
        Ok(())
    }

    /// Reduces a split to the engine's node, returning it with the raw
    /// indices of the children to place on its left and right.
    fn reduce(&mut self, t: usize, split: &Split, at: u32) -> Result<(Node, usize, usize)> {
        let feature = split.feature as u32;
        let (yes, no) = (split.if_true, split.if_false);
        let check = |v: f64| -> Result<f64> {
            if v.is_nan() {
                Err(invalid(t, "a split threshold is NaN"))
            } else {
                Ok(v)
            }
        };
        // (threshold, true child goes left)
        let fast = match &split.test {
            Test::Less(v) => Some((round_up_f32(check(*v)?), true)),
            Test::GreaterEq(v) => Some((round_up_f32(check(*v)?), false)),
            Test::LessEq(v) | Test::Greater(v) => {
                let below = round_down_f32(check(*v)?);
                let keep = matches!(split.test, Test::LessEq(_));
                if below == f32::INFINITY {
                    None
                } else {
                    Some((below.next_up(), keep))
                }
            }
            _ => None,
        };
        if let Some((threshold, true_left)) = fast {
            let nan_left = split.missing_true == true_left;
            let (left, right) = if true_left { (yes, no) } else { (no, yes) };
            let node = Node {
                threshold,
                feature: feature | if nan_left { NAN_LEFT } else { 0 },
                left: at + 1,
                right: 0,
            };
            return Ok((node, left, right));
        }
        let slow = match &split.test {
            Test::Equal(v) => SlowTest::Compare {
                op: Cmp::Eq,
                threshold: check(*v)?,
                nan_left: split.missing_true,
            },
            Test::NotEqual(v) => SlowTest::Compare {
                op: Cmp::Ne,
                threshold: check(*v)?,
                nan_left: split.missing_true,
            },
            Test::Categories(bits) => SlowTest::Categories(bits.clone()),
            Test::LessEqZeroMissing(v) => SlowTest::ZeroMissing {
                threshold: check(*v)?,
                missing_left: split.missing_true,
            },
            // `x <= +inf` / `x > +inf`
            Test::LessEq(_) => SlowTest::NotNan {
                nan_left: split.missing_true,
            },
            Test::Greater(_) => SlowTest::NotNan {
                nan_left: !split.missing_true,
            },
            Test::Less(_) | Test::GreaterEq(_) => {
                return Err(invalid(t, "internal: comparison not reduced"));
            }
        };
        let (left, right) = match &split.test {
            Test::Greater(_) => (no, yes),
            _ => (yes, no),
        };
        let index = u32::try_from(self.slow.len()).map_err(|_| invalid(t, "too many splits"))?;
        self.slow.push(slow);
        let node = Node {
            threshold: f32::from_bits(index),
            feature: feature | SLOW,
            left: at + 1,
            right: 0,
        };
        Ok((node, left, right))
    }

    /// Aggregated leaf values for `rows` rows of `x` (row-major,
    /// `n_features` per row), without any base value or transform.
    ///
    /// `scores` gets `rows * n_outputs` values; `present` says for each one
    /// whether any tree gave that column a value for that row (a column
    /// without one holds 0).
    pub fn predict(
        &self,
        x: &[f32],
        rows: usize,
        scores: &mut [f64],
        present: &mut [bool],
    ) -> Result<()> {
        let want_x = rows.checked_mul(self.n_features);
        let want_out = rows.checked_mul(self.n_outputs);
        if want_x != Some(x.len()) {
            return Err(Error::Shape(format!(
                "{} values is not {rows} rows of {} features",
                x.len(),
                self.n_features
            )));
        }
        if want_out != Some(scores.len()) || want_out != Some(present.len()) {
            return Err(Error::Shape(format!(
                "output buffers must hold {rows} x {} values",
                self.n_outputs
            )));
        }
        let slow = !self.slow.is_empty();
        let no = self.n_outputs;
        let mut chunk = 0;
        while chunk < rows {
            let end = rows.min(chunk + CHUNK);
            let out = &mut scores[chunk * no..end * no];
            let has = &mut present[chunk * no..end * no];
            out.fill(0.0);
            if self.tracked {
                has.fill(false);
            } else {
                for lane in has.chunks_exact_mut(no) {
                    lane.copy_from_slice(&self.coverage);
                }
            }
            // Tree by tree over the chunk, so a tree's nodes are fetched
            // once per chunk rather than once per row.
            for tree in &self.trees {
                let mut row = chunk;
                while row < end {
                    row += match (end - row, slow) {
                        (8.., false) => self.walk::<8, false>(tree, x, row, scores, present),
                        (8.., true) => self.walk::<8, true>(tree, x, row, scores, present),
                        (4.., false) => self.walk::<4, false>(tree, x, row, scores, present),
                        (4.., true) => self.walk::<4, true>(tree, x, row, scores, present),
                        (2.., false) => self.walk::<2, false>(tree, x, row, scores, present),
                        (2.., true) => self.walk::<2, true>(tree, x, row, scores, present),
                        (_, false) => self.walk::<1, false>(tree, x, row, scores, present),
                        (_, true) => self.walk::<1, true>(tree, x, row, scores, present),
                    };
                }
            }
            if self.aggregate == Aggregate::Average {
                let n = self.trees.len() as f64;
                for o in scores[chunk * no..end * no].iter_mut() {
                    *o /= n;
                }
            }
            chunk = end;
        }
        Ok(())
    }

    #[inline(always)]
    fn step<const SLOW_NODES: bool>(&self, n: u32, x: &[f32], base: usize) -> u32 {
        let node = self.nodes[n as usize];
        let value = x[base + (node.feature & FEATURE_MASK) as usize];
        if SLOW_NODES && node.feature & SLOW != 0 {
            let test = &self.slow[node.threshold.to_bits() as usize];
            return if test.goes_left(value) {
                node.left
            } else {
                node.right
            };
        }
        let nan_left = node.feature & NAN_LEFT != 0;
        if (value < node.threshold) | (value.is_nan() & nan_left) {
            node.left
        } else {
            node.right
        }
    }

    /// Runs rows `first..first + B` through one tree and adds its leaves'
    /// values; returns `B`.
    fn walk<const B: usize, const SLOW_NODES: bool>(
        &self,
        tree: &TreeInfo,
        x: &[f32],
        first: usize,
        scores: &mut [f64],
        present: &mut [bool],
    ) -> usize {
        let nf = self.n_features;
        let no = self.n_outputs;
        let mut base = [0usize; B];
        for (l, b) in base.iter_mut().enumerate() {
            *b = (first + l) * nf;
        }
        let out = &mut scores[first * no..(first + B) * no];
        let mut at = [tree.root; B];
        for _ in 0..tree.depth {
            for l in 0..B {
                at[l] = self.step::<SLOW_NODES>(at[l], x, base[l]);
            }
        }
        let column = tree.column as usize;
        if !self.tracked && tree.width == 1 {
            for l in 0..B {
                let slot = self.nodes[at[l] as usize].threshold.to_bits() as usize;
                out[l * no + column] += self.leaf_values[slot];
            }
            return B;
        }
        let has = &mut present[first * no..(first + B) * no];
        let width = tree.width as usize;
        for l in 0..B {
            let slot = self.nodes[at[l] as usize].threshold.to_bits() as usize;
            let values = &self.leaf_values[slot..slot + width];
            let lane = &mut out[l * no + column..l * no + column + width];
            let lane_has = &mut has[l * no + column..l * no + column + width];
            for ((o, h), &v) in lane.iter_mut().zip(lane_has.iter_mut()).zip(values) {
                if v.is_nan() {
                    continue;
                }
                *o = match self.aggregate {
                    Aggregate::Sum | Aggregate::Average => *o + v,
                    Aggregate::Min if *h => o.min(v),
                    Aggregate::Max if *h => o.max(v),
                    Aggregate::Min | Aggregate::Max => v,
                };
                *h = true;
            }
        }
        B
    }
}

#[cfg(test)]
mod tests;

//! Gradient-boosted models (XGBoost, LightGBM): a forest, a base margin per
//! output, and the objective's transform from margins to predictions.

use crate::{Error, Forest, Result};

/// How margins become predictions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Link {
    /// The margin itself.
    Identity,
    /// `1 / (1 + exp(-k * m))`, per output.
    Sigmoid(f64),
    /// `exp(m)`, per output.
    Exp,
    /// Softmax across the outputs of a row.
    Softmax,
}

impl Link {
    fn apply(self, margins: &mut [f64]) {
        match self {
            Link::Identity => {}
            Link::Sigmoid(k) => {
                for m in margins {
                    *m = 1.0 / (1.0 + (-k * *m).exp());
                }
            }
            Link::Exp => {
                for m in margins {
                    *m = m.exp();
                }
            }
            Link::Softmax => softmax(margins),
        }
    }
}

pub(crate) fn softmax(values: &mut [f64]) {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

/// What the model predicts, which decides its outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// One value per row (regression, ranking, raw margins).
    Regression,
    /// One output whose transform is the positive class's probability.
    Binary,
    /// One output per class, transformed to probabilities.
    Multiclass,
    /// One output per class; `predict` is the winning class index
    /// (XGBoost's `multi:softmax`), probabilities are the softmax.
    MulticlassLabel,
}

/// A gradient-boosted model ready to predict.
#[derive(Clone, Debug)]
pub struct Booster {
    forest: Forest,
    base: Vec<f64>,
    link: Link,
    task: Task,
    objective: String,
}

/// Predictions for a batch of rows.
#[derive(Clone, Debug, PartialEq)]
pub struct Prediction {
    /// What the library's own `predict` returns, row-major.
    pub predict: Vec<f32>,
    /// Its shape: `[rows]` or `[rows, classes]`.
    pub predict_shape: Vec<usize>,
    /// Classifiers: every class's probability, `[rows, classes]`.
    pub proba: Option<Vec<f32>>,
}

impl Booster {
    pub(crate) fn new(
        forest: Forest,
        base: Vec<f64>,
        link: Link,
        task: Task,
        objective: String,
    ) -> Result<Booster> {
        if base.len() != forest.n_outputs() {
            return Err(Error::Invalid(format!(
                "{} base margins for {} outputs",
                base.len(),
                forest.n_outputs()
            )));
        }
        if base.iter().any(|b| !b.is_finite()) {
            return Err(Error::Invalid("a base margin is not finite".into()));
        }
        let outputs = forest.n_outputs();
        let fits = match task {
            Task::Regression | Task::Binary => outputs == 1,
            Task::Multiclass | Task::MulticlassLabel => outputs >= 2,
        };
        if !fits {
            return Err(Error::Invalid(format!(
                "objective '{objective}' does not fit a model with {outputs} outputs"
            )));
        }
        Ok(Booster {
            forest,
            base,
            link,
            task,
            objective,
        })
    }

    pub fn forest(&self) -> &Forest {
        &self.forest
    }

    pub fn n_features(&self) -> usize {
        self.forest.n_features()
    }

    pub fn task(&self) -> Task {
        self.task
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// The objective's name as the file gives it.
    pub fn objective(&self) -> &str {
        &self.objective
    }

    /// Number of classes for classifiers.
    pub fn n_classes(&self) -> Option<usize> {
        match self.task {
            Task::Regression => None,
            Task::Binary => Some(2),
            Task::Multiclass | Task::MulticlassLabel => Some(self.forest.n_outputs()),
        }
    }

    /// Raw margins (base plus trees), `rows * outputs`, row-major.
    pub fn margins(&self, x: &[f32], rows: usize) -> Result<Vec<f64>> {
        let n = rows
            .checked_mul(self.forest.n_outputs())
            .ok_or_else(|| Error::Shape("too many rows".into()))?;
        let mut margins = vec![0.0; n];
        let mut present = vec![false; n];
        self.forest.predict(x, rows, &mut margins, &mut present)?;
        for row in margins.chunks_exact_mut(self.base.len()) {
            for (m, b) in row.iter_mut().zip(&self.base) {
                *m += b;
            }
        }
        Ok(margins)
    }

    /// Predictions for `rows` rows of `x` (row-major, `n_features` each;
    /// NaN is a missing value).
    pub fn predict(&self, x: &[f32], rows: usize) -> Result<Prediction> {
        let mut values = self.margins(x, rows)?;
        let outputs = self.forest.n_outputs();
        for row in values.chunks_exact_mut(outputs) {
            self.link.apply(row);
        }
        Ok(match self.task {
            Task::Regression => Prediction {
                predict: values.iter().map(|&v| v as f32).collect(),
                predict_shape: vec![rows],
                proba: None,
            },
            Task::Binary => {
                let mut proba = Vec::with_capacity(rows * 2);
                for &p in &values {
                    proba.push((1.0 - p) as f32);
                    proba.push(p as f32);
                }
                Prediction {
                    predict: values.iter().map(|&v| v as f32).collect(),
                    predict_shape: vec![rows],
                    proba: Some(proba),
                }
            }
            Task::Multiclass => {
                let predict: Vec<f32> = values.iter().map(|&v| v as f32).collect();
                Prediction {
                    proba: Some(predict.clone()),
                    predict,
                    predict_shape: vec![rows, outputs],
                }
            }
            Task::MulticlassLabel => {
                let labels = values
                    .chunks_exact(outputs)
                    .map(|row| argmax(row) as f32)
                    .collect();
                Prediction {
                    predict: labels,
                    predict_shape: vec![rows],
                    proba: Some(values.iter().map(|&v| v as f32).collect()),
                }
            }
        })
    }
}

/// Index of the first largest value.
pub(crate) fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

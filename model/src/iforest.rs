//! Isolation forest (Liu, Ting & Zhou 2008): the non-neural baseline.
//!
//! Anomalies are few and different, so random axis-aligned cuts isolate them in fewer steps
//! than normal points. Each tree is grown on a subsample of `psi` rows to depth
//! `ceil(log2 psi)`; the score of `x` is `2^(-E[h(x)] / c(psi))`, where `h` is the path length
//! (plus `c(size)` for the unresolved points left in a leaf) and `c(n)` the average path length
//! of an unsuccessful binary-search-tree lookup, `2 H(n-1) - 2 (n-1)/n`.

use ndarray::{ArrayView1, ArrayView2};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::ModelError;

/// Forest parameters (the paper's defaults).
#[derive(Clone, Copy, Debug)]
pub struct IsolationForestConfig {
    /// Number of trees.
    pub trees: usize,
    /// Rows sampled per tree.
    pub sample_size: usize,
    /// Seed for sampling and cuts.
    pub seed: u64,
}

impl IsolationForestConfig {
    /// The same parameters with a seed of member `index`'s own, so that forests grown by
    /// several hospitals and pooled ([`IsolationForest::union`]) do not cut along the same
    /// random features in the same order.
    pub fn for_member(self, index: usize) -> IsolationForestConfig {
        // A golden-ratio multiple keeps consecutive members' seeds far apart.
        let stream = (index as u64)
            .wrapping_add(1)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        IsolationForestConfig {
            seed: self.seed ^ stream,
            ..self
        }
    }
}

impl Default for IsolationForestConfig {
    fn default() -> Self {
        IsolationForestConfig {
            trees: 100,
            sample_size: 256,
            seed: 0,
        }
    }
}

#[derive(Clone)]
enum Node {
    Leaf {
        /// `c(size)` of the rows left unresolved here, computed once when grown: a score
        /// would otherwise take a logarithm per tree per row.
        unresolved: f64,
    },
    Split {
        feature: usize,
        value: f32,
        left: usize,
        right: usize,
    },
}

#[derive(Clone)]
/// One tree and the normalizer of its paths, `c(psi)` of the subsample it grew on.
struct Tree {
    nodes: Vec<Node>,
    c_psi: f64,
}

/// A trained forest.
#[derive(Clone)]
pub struct IsolationForest {
    trees: Vec<Tree>,
    n_cols: usize,
}

/// Average path length of an unsuccessful search in a binary search tree of `n` nodes.
fn c(n: usize) -> f64 {
    match n {
        0 | 1 => 0.0,
        2 => 1.0,
        n => {
            let n = n as f64;
            2.0 * ((n - 1.0).ln() + 0.577_215_664_901_532_9) - 2.0 * (n - 1.0) / n
        }
    }
}

impl IsolationForest {
    /// Grows a forest on the rows of `data`.
    pub fn fit(data: ArrayView2<'_, f32>, config: IsolationForestConfig) -> IsolationForest {
        let (n_rows, n_cols) = data.dim();
        let psi = config.sample_size.min(n_rows).max(1);
        let depth_limit = (psi as f64).log2().ceil() as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let mut rows: Vec<usize> = (0..n_rows).collect();
        let trees = (0..config.trees)
            .map(|_| {
                rows.shuffle(&mut rng);
                let mut sample: Vec<usize> = rows[..psi.min(n_rows)].to_vec();
                let mut nodes = Vec::new();
                grow(data, &mut sample, 0, depth_limit, &mut rng, &mut nodes);
                Tree {
                    nodes,
                    c_psi: c(psi),
                }
            })
            .collect();
        IsolationForest { trees, n_cols }
    }

    /// One forest of every tree of `forests` (hospitals' forests over the same columns): a
    /// row's score is then its path length averaged over all of them, each path normalized by
    /// its own tree's subsample, so a small hospital's trees count as much as a large one's.
    /// `None` when the forests' columns differ or there are none.
    pub fn union(forests: impl IntoIterator<Item = IsolationForest>) -> Option<IsolationForest> {
        let mut forests = forests.into_iter();
        let mut all = forests.next()?;
        for f in forests {
            if f.n_cols != all.n_cols {
                return None;
            }
            all.trees.extend(f.trees);
        }
        Some(all)
    }

    /// Anomaly scores in `(0, 1]` for each row of `data`; higher is more anomalous. Rows of
    /// another width than the forest's, or a forest without trees, are an error: nothing can
    /// be said of them, and a made-up score would rank them.
    pub fn score(&self, data: ArrayView2<'_, f32>) -> Result<Vec<f32>, ModelError> {
        if data.ncols() != self.n_cols {
            return Err(ModelError::Shape(format!(
                "a forest of {} columns cannot score rows of {}",
                self.n_cols,
                data.ncols()
            )));
        }
        if self.trees.is_empty() {
            return Err(ModelError::Shape(
                "a forest without trees scores nothing".into(),
            ));
        }
        Ok(data
            .rows()
            .into_iter()
            .map(|row| {
                // With one subsample size this is the paper's 2^(-E[h] / c(psi)).
                let mean: f64 = self
                    .trees
                    .iter()
                    .map(|t| path_length(&t.nodes, row) / t.c_psi.max(f64::MIN_POSITIVE))
                    .sum::<f64>()
                    / self.trees.len() as f64;
                2f64.powf(-mean) as f32
            })
            .collect())
    }
}

fn grow(
    data: ArrayView2<'_, f32>,
    rows: &mut [usize],
    depth: usize,
    limit: usize,
    rng: &mut ChaCha8Rng,
    nodes: &mut Vec<Node>,
) -> usize {
    let me = nodes.len();
    nodes.push(Node::Leaf {
        unresolved: c(rows.len()),
    });
    if depth >= limit || rows.len() <= 1 {
        return me;
    }
    // Pick a feature that still varies among these rows; give up after a few tries.
    let n_cols = data.ncols();
    if n_cols == 0 {
        return me;
    }
    for _ in 0..n_cols * 2 {
        let feature = rng.random_range(0..n_cols);
        let (lo, hi) = rows
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &r| {
                let v = data[[r, feature]];
                (lo.min(v), hi.max(v))
            });
        if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
            continue;
        }
        let value = lo + rng.random::<f32>() * (hi - lo);
        let split = partition(rows, |r| data[[r, feature]] < value);
        let (left_rows, right_rows) = rows.split_at_mut(split);
        let left = grow(data, left_rows, depth + 1, limit, rng, nodes);
        let right = grow(data, right_rows, depth + 1, limit, rng, nodes);
        nodes[me] = Node::Split {
            feature,
            value,
            left,
            right,
        };
        return me;
    }
    me
}

/// Reorders `rows` so those satisfying `pred` come first; returns how many do.
fn partition(rows: &mut [usize], pred: impl Fn(usize) -> bool) -> usize {
    let mut k = 0;
    for i in 0..rows.len() {
        if pred(rows[i]) {
            rows.swap(i, k);
            k += 1;
        }
    }
    k
}

fn path_length(tree: &[Node], row: ArrayView1<'_, f32>) -> f64 {
    let (mut node, mut depth) = (0usize, 0f64);
    loop {
        match tree.get(node) {
            Some(Node::Split {
                feature,
                value,
                left,
                right,
            }) => {
                node = if row[*feature] < *value {
                    *left
                } else {
                    *right
                };
                depth += 1.0;
            }
            Some(Node::Leaf { unresolved }) => return depth + unresolved,
            None => return depth,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `data` as rows of `cols`.
    fn m(data: &[f32], cols: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((data.len() / cols, cols), data).unwrap()
    }

    #[test]
    fn an_outlier_scores_higher_than_the_crowd() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut data: Vec<f32> = (0..2000).map(|_| rng.random::<f32>()).collect();
        data.extend_from_slice(&[8.0, -7.0]);
        let forest = IsolationForest::fit(m(&data, 2), IsolationForestConfig::default());
        let scores = forest.score(m(&data, 2)).unwrap();
        let outlier = scores[1000];
        let typical = scores[..1000].iter().copied().fold(0.0f32, f32::max);
        assert!(
            outlier > typical,
            "outlier {outlier} vs max typical {typical}"
        );
        assert!(outlier > 0.6);
    }

    #[test]
    fn deterministic_from_the_seed() {
        let data: Vec<f32> = (0..300).map(|i| (i as f32 * 0.37).sin()).collect();
        let fit = |cfg| {
            IsolationForest::fit(m(&data, 3), cfg)
                .score(m(&data, 3))
                .unwrap()
        };
        let cfg = IsolationForestConfig::default();
        assert_eq!(fit(cfg), fit(cfg));
        // Members' forests grow from seeds of their own.
        assert_ne!(cfg.for_member(0).seed, cfg.for_member(1).seed);
        assert_ne!(fit(cfg.for_member(0)), fit(cfg.for_member(1)));
    }

    #[test]
    fn a_union_of_forests_scores_as_their_trees_together() {
        let data: Vec<f32> = (0..400).map(|i| (i as f32 * 0.37).sin()).collect();
        let cfg = |seed| IsolationForestConfig {
            trees: 10,
            seed,
            ..IsolationForestConfig::default()
        };
        let (a, b) = (
            IsolationForest::fit(m(&data[..200], 2), cfg(1)),
            IsolationForest::fit(m(&data[200..], 2), cfg(2)),
        );
        let rows = m(&data[..20], 2);
        let (sa, sb) = (a.score(rows).unwrap(), b.score(rows).unwrap());
        let both = IsolationForest::union([a, b]).unwrap().score(rows).unwrap();
        // Rows of another width are refused, not scored.
        assert!(b_width(&data).is_err());
        // Equal tree counts: the union's exponent is the mean of the two exponents.
        for ((u, x), y) in both.iter().zip(&sa).zip(&sb) {
            let expected = 2f64.powf((f64::from(*x).log2() + f64::from(*y).log2()) / 2.0);
            assert!((f64::from(*u) - expected).abs() < 1e-5, "{u} vs {expected}");
        }
        let other = IsolationForest::fit(m(&data[..30], 3), cfg(3));
        let again = IsolationForest::fit(m(&data[..200], 2), cfg(1));
        assert!(IsolationForest::union([again, other]).is_none());
        assert!(IsolationForest::union([]).is_none());
    }

    /// The scores of 18 values read as rows of 3 by a forest of 2 columns.
    fn b_width(data: &[f32]) -> Result<Vec<f32>, ModelError> {
        let f = IsolationForest::fit(
            ArrayView2::from_shape((10, 2), &data[..20]).unwrap(),
            IsolationForestConfig::default(),
        );
        f.score(ArrayView2::from_shape((6, 3), &data[..18]).unwrap())
    }
}

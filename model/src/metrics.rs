//! Detection metrics: how well anomaly scores separate attacks from normal access.
//!
//! Scores are "higher is more anomalous". AUROC is computed exactly with ties counted half
//! (the Mann-Whitney U statistic); AUPRC as average precision (the step-wise area, as
//! scikit-learn's `average_precision_score`), which does not interpolate optimistically.

use ndarray::{ArrayView1, Zip};

use crate::ModelError;

/// Scores beside their labels (`true`: an attack), checked once to be of one length, so no
/// metric can pair a score with another row's label or silently drop the tail of one.
#[derive(Clone, Copy, Debug)]
pub struct Scored<'a> {
    scores: ArrayView1<'a, f32>,
    positive: ArrayView1<'a, bool>,
}

impl<'a> Scored<'a> {
    /// Pairs `scores` with `positive`, which must be as long.
    pub fn new(
        scores: impl Into<ArrayView1<'a, f32>>,
        positive: impl Into<ArrayView1<'a, bool>>,
    ) -> Result<Scored<'a>, ModelError> {
        let (scores, positive) = (scores.into(), positive.into());
        if scores.len() != positive.len() {
            return Err(ModelError::Shape(format!(
                "{} scores against {} labels",
                scores.len(),
                positive.len()
            )));
        }
        Ok(Scored { scores, positive })
    }

    /// Rows labelled as attacks.
    pub fn positives(&self) -> usize {
        self.positive.iter().filter(|p| **p).count()
    }

    /// Area under the ROC curve; `None` if either class is empty.
    pub fn auroc(&self) -> Option<f64> {
        let (scores, positive) = (&self.scores, &self.positive);
        let idx = order(scores, false);
        let (mut rank_sum, mut n_pos, mut i) = (0.0f64, 0u64, 0usize);
        while i < idx.len() {
            // A run of tied scores shares the average of its ranks.
            let mut j = i;
            while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
                j += 1;
            }
            let avg_rank = (i + j) as f64 / 2.0 + 1.0;
            for &k in &idx[i..=j] {
                if positive[k] {
                    rank_sum += avg_rank;
                    n_pos += 1;
                }
            }
            i = j + 1;
        }
        let n_neg = scores.len() as u64 - n_pos;
        if n_pos == 0 || n_neg == 0 {
            return None;
        }
        let (p, n) = (n_pos as f64, n_neg as f64);
        Some((rank_sum - p * (p + 1.0) / 2.0) / (p * n))
    }

    /// Average precision (area under the precision-recall curve); `None` without positives.
    pub fn auprc(&self) -> Option<f64> {
        let (scores, positive) = (&self.scores, &self.positive);
        let total_pos = self.positives();
        if total_pos == 0 {
            return None;
        }
        let idx = order(scores, true);
        let (mut tp, mut fp, mut ap, mut prev_recall) = (0usize, 0usize, 0.0f64, 0.0f64);
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j < idx.len() && scores[idx[j]] == scores[idx[i]] {
                if positive[idx[j]] {
                    tp += 1;
                } else {
                    fp += 1;
                }
                j += 1;
            }
            let recall = tp as f64 / total_pos as f64;
            let precision = tp as f64 / (tp + fp) as f64;
            ap += (recall - prev_recall) * precision;
            prev_recall = recall;
            i = j;
        }
        Some(ap)
    }

    /// Recall and false-positive rate when flagging `score > threshold` (0 for a class with
    /// no rows).
    pub fn rates_at(&self, threshold: f32) -> (f64, f64) {
        let (mut tp, mut p, mut fp, mut n) = (0usize, 0usize, 0usize, 0usize);
        Zip::from(&self.scores)
            .and(&self.positive)
            .for_each(|s, &pos| {
                let flagged = usize::from(*s > threshold);
                if pos {
                    (p, tp) = (p + 1, tp + flagged);
                } else {
                    (n, fp) = (n + 1, fp + flagged);
                }
            });
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        (ratio(tp, p), ratio(fp, n))
    }
}

/// Row indices in score order (ascending, or descending), NaN-safe.
fn order(scores: &ArrayView1<'_, f32>, descending: bool) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    if descending {
        idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    } else {
        idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    }
    idx
}

/// The score above which a `target_fpr` share of `normal_scores` lie: flagging `score > t`
/// raises false alarms on about that share of normal traffic.
pub fn threshold_for_fpr<'a>(
    normal_scores: impl Into<ArrayView1<'a, f32>>,
    target_fpr: f64,
) -> Option<f32> {
    let normal_scores = normal_scores.into();
    if normal_scores.is_empty() || !(0.0..1.0).contains(&target_fpr) {
        return None;
    }
    let mut sorted = normal_scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let keep = ((1.0 - target_fpr) * sorted.len() as f64).ceil() as usize;
    Some(sorted[keep.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auroc(s: &[f32], p: &[bool]) -> Option<f64> {
        Scored::new(s, p).unwrap().auroc()
    }

    #[test]
    fn auroc_matches_hand_computed_cases() {
        assert_eq!(
            auroc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]),
            Some(1.0)
        );
        assert_eq!(
            auroc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]),
            Some(0.0)
        );
        // All tied: chance.
        assert_eq!(auroc(&[0.5; 4], &[false, true, false, true]), Some(0.5));
        // One inversion among 2x2 pairs: 3/4.
        assert_eq!(
            auroc(&[0.1, 0.6, 0.5, 0.9], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auroc(&[0.1, 0.2], &[false, false]), None);
    }

    #[test]
    fn auprc_matches_sklearn_examples() {
        // sklearn: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.8333...
        let scored = Scored::new(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        let ap = scored.auprc().unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        let one = Scored::new(&[0.2, 0.9], &[false, true]).unwrap();
        assert_eq!(one.auprc(), Some(1.0));
    }

    #[test]
    fn threshold_gives_the_target_false_positive_rate() {
        let normal: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let t = threshold_for_fpr(&normal, 0.02).unwrap();
        let labels = vec![false; 1000];
        let (_, fpr) = Scored::new(&normal, &labels).unwrap().rates_at(t);
        assert!((fpr - 0.02).abs() < 1e-9, "{fpr}");
        assert!(threshold_for_fpr(&normal, 1.5).is_none());
    }

    #[test]
    fn scores_and_labels_of_other_lengths_are_refused() {
        assert!(Scored::new(&[0.1, 0.2, 0.3], &[false, true]).is_err());
        assert!(Scored::new(&[0.1], &[false, true]).is_err());
    }
}

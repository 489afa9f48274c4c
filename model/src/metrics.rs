//! Detection metrics: how well anomaly scores separate attacks from normal access.
//!
//! Scores are "higher is more anomalous". AUROC is computed exactly with ties counted half
//! (the Mann-Whitney U statistic); AUPRC as average precision (the step-wise area, as
//! scikit-learn's `average_precision_score`), which does not interpolate optimistically.

/// Area under the ROC curve; `None` if either class is empty.
pub fn auroc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
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
pub fn auprc(scores: &[f32], positive: &[bool]) -> Option<f64> {
    let total_pos = positive.iter().filter(|p| **p).count();
    if total_pos == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
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

/// The score above which a `target_fpr` share of `normal_scores` lie: flagging `score > t`
/// raises false alarms on about that share of normal traffic.
pub fn threshold_for_fpr(normal_scores: &[f32], target_fpr: f64) -> Option<f32> {
    if normal_scores.is_empty() || !(0.0..1.0).contains(&target_fpr) {
        return None;
    }
    let mut sorted = normal_scores.to_vec();
    sorted.sort_by(f32::total_cmp);
    let keep = ((1.0 - target_fpr) * sorted.len() as f64).ceil() as usize;
    Some(sorted[keep.clamp(1, sorted.len()) - 1])
}

/// Recall and false-positive rate when flagging `score > threshold`.
pub fn rates_at(scores: &[f32], positive: &[bool], threshold: f32) -> (f64, f64) {
    let (mut tp, mut p, mut fp, mut n) = (0usize, 0usize, 0usize, 0usize);
    for (s, &pos) in scores.iter().zip(positive) {
        let flagged = *s > threshold;
        if pos {
            p += 1;
            tp += usize::from(flagged);
        } else {
            n += 1;
            fp += usize::from(flagged);
        }
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    (ratio(tp, p), ratio(fp, n))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ap = auprc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 0.833_333_333).abs() < 1e-6, "{ap}");
        assert_eq!(auprc(&[0.2, 0.9], &[false, true]), Some(1.0));
    }

    #[test]
    fn threshold_gives_the_target_false_positive_rate() {
        let normal: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        let t = threshold_for_fpr(&normal, 0.02).unwrap();
        let (_, fpr) = rates_at(&normal, &vec![false; 1000], t);
        assert!((fpr - 0.02).abs() < 1e-9, "{fpr}");
        assert!(threshold_for_fpr(&normal, 1.5).is_none());
    }
}

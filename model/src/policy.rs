//! The role policy: an access to a kind of record the user's role never needs
//! ([`role_needs`](medfl_accesslog::features::role_needs): a billing clerk opening a clinical
//! note) is alerted whatever the model's score.
//!
//! Why a rule and not the model: coders read notes to code a stay, so a small share of normal
//! traffic (0.23-0.41% a hospital on the default scenario) is exactly this, alike to role misuse
//! in every feature but the care team. Whether a one-class model alerts on that rare legitimate
//! pattern depends on its initial weights (role misuse was caught 45% to 100% across five), so
//! the office's own policy decides instead, and pays for it out of the same false-positive
//! budget: the model's threshold is set so that the model's alerts and the policy's together
//! flag the target share of normal traffic ([`AlertPolicy::threshold`]).
//!
//! The policy takes at most [`MAX_POLICY_SHARE`] of that budget from the model. The rows a
//! threshold is set on may be unlabelled (an agent calibrates on its own recent traffic), so an
//! insider who reads records their role never needs would otherwise buy a higher threshold for
//! everyone with their own alerts; and a role table that flags much of a hospital's traffic must
//! not leave the model alerting on everything else too.
//!
//! The policy reads the unscaled access-feature row (feature 11, `role_resource_mismatch`, as the
//! streaming extractor gives it), so the monitor, `medfl eval` and the experiments decide from
//! the same bits. It applies to access events only: a hospital's own numeric table has no roles.

use medfl_accesslog::N_FEATURES;

/// Index of `role_resource_mismatch` among the access features.
const ROLE_RESOURCE_MISMATCH: usize = 11;

/// The largest share of the false-positive target the policy's alerts take from the model's:
/// past it, the model still alerts on the rest of the target.
pub const MAX_POLICY_SHARE: f64 = 0.25;

/// What alerts besides the model's score. No default: a path that judges access events must
/// say so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertPolicy {
    /// The score alone: rows of a hospital's own table.
    ScoreOnly,
    /// Access-feature rows: a record the user's role never needs is always alerted.
    RoleNeeds,
}

impl AlertPolicy {
    /// Whether the policy alerts on `row` (one unscaled row of features) whatever its score.
    pub fn flags(self, row: &[f32]) -> bool {
        match self {
            AlertPolicy::ScoreOnly => false,
            AlertPolicy::RoleNeeds => row.len() == N_FEATURES && row[ROLE_RESOURCE_MISMATCH] > 0.5,
        }
    }

    /// Which of `rows` (`n_cols` wide, one per score of `n` scores) the policy flags; `None`
    /// when the rows are not `n` rows of `n_cols` (never a silent truncation).
    fn flag_rows(self, n: usize, rows: &[f32], n_cols: usize) -> Option<Vec<bool>> {
        if self == AlertPolicy::ScoreOnly {
            return Some(vec![false; n]);
        }
        if n_cols == 0 || rows.len() != n.checked_mul(n_cols)? {
            return None;
        }
        Some(rows.chunks_exact(n_cols).map(|r| self.flags(r)).collect())
    }

    /// The share of `rows` (`n_cols` wide) the policy flags (0 for no rows, or rows that are
    /// not whole).
    pub fn share(self, rows: &[f32], n_cols: usize) -> f64 {
        let n = rows.len().checked_div(n_cols).unwrap_or(0);
        self.flag_rows(n, rows, n_cols).map_or(0.0, |f| {
            f.iter().filter(|&&x| x).count() as f64 / n.max(1) as f64
        })
    }

    /// The alert threshold on the model's `scores` of normal `rows` (`n_cols` wide, unscaled)
    /// for a `target_fpr` share of them to be alerted by the model and the policy together.
    ///
    /// While the policy flags at most [`MAX_POLICY_SHARE`] of the target, this is the threshold
    /// [`crate::metrics::threshold_for_fpr`] sets on [`Self::detector_scores`]: the policy's rows
    /// come first. Past that, the model alerts on `1 − MAX_POLICY_SHARE` of the target's rows,
    /// chosen among the rows the policy leaves, and never on more than the target's share of
    /// those. `None` without rows, for rows of another shape, a rate outside `[0, 1)`, or a
    /// threshold that is not finite.
    pub fn threshold(
        self,
        scores: &[f32],
        rows: &[f32],
        n_cols: usize,
        target_fpr: f64,
    ) -> Option<f32> {
        if !(0.0..1.0).contains(&target_fpr) {
            return None;
        }
        let flags = self.flag_rows(scores.len(), rows, n_cols)?;
        let flagged = flags.iter().filter(|&&f| f).count();
        let n = scores.len() as f64;
        if flagged as f64 <= MAX_POLICY_SHARE * target_fpr * n {
            let detector = raise(scores, &flags);
            return crate::metrics::threshold_for_fpr(&detector, target_fpr)
                .filter(|t| t.is_finite());
        }
        let mut left: Vec<f32> = scores
            .iter()
            .zip(&flags)
            .filter(|(_, f)| !**f)
            .map(|(&s, _)| s)
            .collect();
        left.sort_by(f32::total_cmp);
        // Counted in whole rows, so that no rounding takes one from the model. `as` saturates;
        // both products are below the row counts.
        let model = ((1.0 - MAX_POLICY_SHARE) * target_fpr * n).floor() as usize;
        let at_most = (target_fpr * left.len() as f64).floor() as usize;
        // Alerts are the scores above the threshold: the k-th largest's neighbour below it.
        let k = model.min(at_most);
        let below = left.len().checked_sub(k + 1)?;
        left.get(below).copied().filter(|t| t.is_finite())
    }

    /// The detector's scores: `scores` (one per row of `rows`, `n_cols` wide, unscaled) with
    /// every row the policy flags raised to +∞, above any threshold; `None` for rows of another
    /// shape (never a silent truncation, nor a policy silently off).
    ///
    /// What is alerted is these above the threshold: recall and false-positive rates judge the
    /// model and the policy as the one detector an officer sees. Rankings (AUROC, case evidence)
    /// take the model's own scores: a policy alert ranks nothing by itself.
    pub fn detector_scores(self, scores: &[f32], rows: &[f32], n_cols: usize) -> Option<Vec<f32>> {
        self.flag_rows(scores.len(), rows, n_cols)
            .map(|flags| raise(scores, &flags))
    }
}

/// `scores` with every flagged one raised to +∞.
fn raise(scores: &[f32], flags: &[bool]) -> Vec<f32> {
    scores
        .iter()
        .zip(flags)
        .map(|(&s, &f)| if f { f32::INFINITY } else { s })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mismatch: f32) -> Vec<f32> {
        let mut r = vec![0.0; N_FEATURES];
        r[ROLE_RESOURCE_MISMATCH] = mismatch;
        r
    }

    #[test]
    fn the_policy_reads_role_resource_mismatch() {
        assert_eq!(
            medfl_accesslog::FEATURE_NAMES[ROLE_RESOURCE_MISMATCH],
            "role_resource_mismatch"
        );
    }

    #[test]
    fn only_a_record_the_role_never_needs_is_raised() {
        let rows: Vec<f32> = [row(0.0), row(1.0), row(0.0)].concat();
        let scores = [0.5, 0.1, 3.0];
        assert_eq!(
            AlertPolicy::RoleNeeds.detector_scores(&scores, &rows, N_FEATURES),
            Some(vec![0.5, f32::INFINITY, 3.0])
        );
        assert_eq!(
            AlertPolicy::ScoreOnly.detector_scores(&scores, &rows, N_FEATURES),
            Some(scores.to_vec())
        );
        // Rows that are not one per score are refused, not read as flagging nothing.
        assert_eq!(
            AlertPolicy::RoleNeeds.detector_scores(&scores, &rows[N_FEATURES..], N_FEATURES),
            None
        );
        assert_eq!(
            AlertPolicy::RoleNeeds.threshold(&scores, &rows[N_FEATURES..], N_FEATURES, 0.1),
            None
        );
    }

    /// The policy's alerts are paid for out of the false-positive budget: with 2 of 200 normal
    /// rows flagged by it (a quarter of a 4% target) the model's threshold leaves 6 more.
    #[test]
    fn a_threshold_leaves_room_for_the_policy() {
        let (mut rows, mut scores) = (Vec::new(), Vec::new());
        for i in 0..200u8 {
            rows.extend(row(f32::from(u8::from(i % 100 == 7))));
            scores.push(f32::from(i));
        }
        let p = AlertPolicy::RoleNeeds;
        let t = p.threshold(&scores, &rows, N_FEATURES, 0.04).unwrap();
        let detector = p.detector_scores(&scores, &rows, N_FEATURES).unwrap();
        let alerted = detector.iter().filter(|&&s| s > t).count();
        let by_policy = detector.iter().filter(|s| s.is_infinite()).count();
        assert_eq!((alerted, by_policy), (8, 2));
        assert_eq!(
            Some(t),
            crate::metrics::threshold_for_fpr(&detector, 0.04),
            "the detector's own threshold"
        );
        // Without the policy the same target leaves 8 to the model.
        let t = crate::metrics::threshold_for_fpr(&scores, 0.04).unwrap();
        assert_eq!(scores.iter().filter(|&&s| s > t).count(), 8);
    }

    /// Past a quarter of the target the policy takes no more from the model, which still
    /// alerts on three quarters of the target's rows; and never on more than the target's share
    /// of the rows the policy leaves.
    #[test]
    fn the_policy_takes_at_most_a_quarter_of_the_target() {
        let p = AlertPolicy::RoleNeeds;
        let by_model = |every: u16, target: f64| {
            let (mut rows, mut scores) = (Vec::new(), Vec::new());
            for i in 0..1000u16 {
                rows.extend(row(f32::from(u8::from(i % every == 1))));
                scores.push(f32::from(i));
            }
            let t = p.threshold(&scores, &rows, N_FEATURES, target).unwrap();
            let detector = p.detector_scores(&scores, &rows, N_FEATURES).unwrap();
            detector.iter().filter(|&&s| s.is_finite() && s > t).count()
        };
        // 5% of the rows flagged against a 4% target: the model keeps 30 of 40.
        assert_eq!(by_model(20, 0.04), 30);
        // 1% against 4%: the policy takes 10, the model 30 too.
        assert_eq!(by_model(100, 0.04), 30);
        // 50% flagged against 40%: the model alerts 40% of the 500 left, not 300 of them.
        assert_eq!(by_model(2, 0.4), 200);
        // No rows, or no rate, give no threshold.
        assert_eq!(p.threshold(&[], &[], N_FEATURES, 0.02), None);
        assert_eq!(p.threshold(&[1.0], &row(0.0), N_FEATURES, 1.0), None);
    }

    #[test]
    fn a_row_of_another_width_is_never_flagged() {
        assert!(!AlertPolicy::RoleNeeds.flags(&[1.0; 12]));
        assert!(AlertPolicy::RoleNeeds.flags(&row(1.0)));
        assert_eq!(AlertPolicy::RoleNeeds.share(&[1.0; 24], 12), 0.0);
        assert_eq!(
            AlertPolicy::RoleNeeds.share(&[row(1.0), row(0.0)].concat(), N_FEATURES),
            0.5
        );
    }
}

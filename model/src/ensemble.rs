//! Two detectors as one: each score turned into how surprising it is among normal traffic, and
//! the surprises added.
//!
//! The autoencoder and the isolation forest see different abuse: the forest isolates bursts
//! (a compromised account pulling charts fast), the autoencoder the combinations a snoop makes
//! (a VIP outside the care team). Their raw scores live on unrelated scales (a reconstruction
//! error, an average path length), so neither can be added to the other as it is. Each is
//! calibrated instead on the hospital's own normal validation rows: a score's **surprise** is
//! `−ln p`, where `p = (k + 1) / (n + 1)` is the share of the `n` normal scores at or above it
//! (`k` of them, the `+ 1` counting the score itself, so `p` is never 0). A score no normal row
//! reaches has surprise `ln(n + 1)`, one at the normal median about `ln 2`.
//!
//! Adding the surprises is Fisher's method of combining p-values: under normal traffic each is
//! roughly an exponential variable of mean 1, and an access both detectors find odd adds up.
//! The alert threshold is then set on the combined scores of the same validation rows, each
//! scored **leave-one-out** ([`Calibration::surprise_of_own`]: among the other `n − 1`, so
//! `p = k / n` with `k` counting itself). Scored in-sample like a fresh row, every validation
//! row would rank one place low and the threshold would land low: with independent detectors
//! and a 2% target, 4.75% FPR on fresh rows at `n = 100`, 2.27% at 1,000 (a review's
//! simulation), against 3.0% and 2.07% leave-one-out.
//!
//! A surprise saturates at `ln(n + 1)`: a row beyond every normal score of one detector and
//! ordinary for the other scores about `ln(n + 1) + ln 2`, which a small calibration set can
//! leave under a 2% threshold, and rows beyond every normal score tie on that detector. The
//! hospitals here hold thousands of validation rows (saturation near 8); a hospital with a few
//! hundred should read the ensemble's alerts with that in mind.
//!
//! Only ranks among the hospital's own normal rows enter, so the combination inherits each
//! detector's privacy: nothing here leaves the hospital.

use crate::ModelError;

/// A detector's scores on normal rows: what a new score's surprise is measured against.
#[derive(Clone, Debug)]
pub struct Calibration {
    /// Finite scores, ascending.
    sorted: Vec<f32>,
}

impl Calibration {
    /// The calibration of `normal_scores` (non-finite ones are left out).
    pub fn new(normal_scores: &[f32]) -> Calibration {
        let mut sorted: Vec<f32> = normal_scores
            .iter()
            .copied()
            .filter(|s| s.is_finite())
            .collect();
        sorted.sort_by(f32::total_cmp);
        Calibration { sorted }
    }

    /// `−ln((k + 1) / (n + 1))`, `k` the normal scores at or above `score`; a NaN score is
    /// not surprising at all (0).
    pub fn surprise(&self, score: f32) -> f64 {
        if score.is_nan() {
            return 0.0;
        }
        let n = self.sorted.len() as f64;
        -((self.at_or_above(score) as f64 + 1.0) / (n + 1.0)).ln()
    }

    /// The surprise of a score that is itself one of the calibration's (a validation row
    /// judged among the others): `−ln(k / n)`, `k` counting the score itself; 0 for NaN or an
    /// empty calibration.
    pub fn surprise_of_own(&self, score: f32) -> f64 {
        let k = self.at_or_above(score);
        if score.is_nan() || k == 0 {
            return 0.0;
        }
        -(k as f64 / self.sorted.len() as f64).ln()
    }

    fn at_or_above(&self, score: f32) -> usize {
        self.sorted.len() - self.sorted.partition_point(|s| *s < score)
    }
}

/// Whether rows are new to the calibrations or their own normal rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Rows the calibrations have not seen (test traffic, live accesses).
    Fresh,
    /// The very rows each calibration was built from, in any order: scored leave-one-out.
    Calibration,
}

/// The combined score of each row: the sum of its surprises under each detector. `parts`
/// pairs a detector's calibration with its scores of the rows.
///
/// # Errors
/// [`ModelError::Shape`] if the detectors scored different numbers of rows.
pub fn combine(parts: &[(&Calibration, &[f32])], rows: Rows) -> Result<Vec<f32>, ModelError> {
    let n = parts.first().map_or(0, |(_, s)| s.len());
    if parts.iter().any(|(_, s)| s.len() != n) {
        return Err(ModelError::Shape(format!(
            "detectors scored {:?} rows; an ensemble needs one score per row from each",
            parts.iter().map(|(_, s)| s.len()).collect::<Vec<_>>()
        )));
    }
    Ok((0..n)
        .map(|i| {
            let total: f64 = parts
                .iter()
                .map(|(c, s)| match rows {
                    Rows::Fresh => c.surprise(s[i]),
                    Rows::Calibration => c.surprise_of_own(s[i]),
                })
                .sum();
            total as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surprise_is_the_negative_log_of_the_upper_tail_share() {
        let c = Calibration::new(&[1.0, 2.0, 3.0, f32::NAN, 4.0]);
        // Four finite normal scores: at or above 0.5 all four, so p = 5/5.
        assert_eq!(c.surprise(0.5), 0.0);
        assert!((c.surprise(3.0) - -(3.0f64 / 5.0).ln()).abs() < 1e-12);
        // Beyond every normal score: p = 1/5, the most a calibration of four can say.
        assert!((c.surprise(9.0) - 5.0f64.ln()).abs() < 1e-12);
        assert_eq!(c.surprise(f32::NAN), 0.0);
        // An empty calibration says nothing either way.
        assert_eq!(Calibration::new(&[]).surprise(1.0), 0.0);
    }

    #[test]
    fn a_row_both_detectors_find_odd_outranks_one_only_one_does() {
        let normal: Vec<f32> = (0..100).map(|i| i as f32).collect();
        let (a, b) = (Calibration::new(&normal), Calibration::new(&normal));
        // Row 0: extreme for the first detector only; row 1: high for both.
        let combined = combine(&[(&a, &[500.0, 95.0]), (&b, &[10.0, 95.0])], Rows::Fresh).unwrap();
        assert!(combined[1] > combined[0], "{combined:?}");
        // On another scale the same ranks give the same combination.
        let scaled: Vec<f32> = normal.iter().map(|s| 1e-3 * s).collect();
        let c = Calibration::new(&scaled);
        let again = combine(
            &[(&a, &[500.0, 95.0]), (&c, &[1e-3 * 10.0, 1e-3 * 95.0])],
            Rows::Fresh,
        )
        .unwrap();
        assert_eq!(combined, again);
        // Detectors that scored different rows are refused.
        assert!(combine(&[(&a, &[1.0]), (&b, &[1.0, 2.0])], Rows::Fresh).is_err());
    }

    #[test]
    fn calibration_rows_are_judged_among_the_others() {
        let normal: Vec<f32> = (1..=4).map(|i| i as f32).collect();
        let c = Calibration::new(&normal);
        // The largest normal row: alone at or above itself among four, p = 1/4; a fresh row
        // of the same score would be p = 2/5.
        assert!((c.surprise_of_own(4.0) - 4.0f64.ln()).abs() < 1e-12);
        assert!((c.surprise(4.0) - (5.0f64 / 2.0).ln()).abs() < 1e-12);
        // The smallest: p = 1, no surprise.
        assert_eq!(c.surprise_of_own(1.0), 0.0);
        assert_eq!(Calibration::new(&[]).surprise_of_own(1.0), 0.0);
        // So a threshold set on the calibration rows sits at their own leave-one-out ranks.
        let own = combine(&[(&c, &normal)], Rows::Calibration).unwrap();
        let fresh = combine(&[(&c, &normal)], Rows::Fresh).unwrap();
        assert!(own.iter().zip(&fresh).all(|(o, f)| o >= f));
    }
}

//! Judging a detector: overall and per attack type.

use medfl_accesslog::AttackKind;
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::cases::{CaseEvaluation, CaseKey, CaseRules, evaluate_cases};
use crate::metrics::Scored;

/// How well scores separate attacks from normal access.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Evaluation {
    /// Events scored.
    pub events: usize,
    /// Of which attacks.
    pub attacks: usize,
    /// AUROC of the model's scores over all events.
    pub auroc: Option<f64>,
    /// Average precision of the model's scores over all events.
    pub auprc: Option<f64>,
    /// The alert threshold used for the rates.
    pub threshold: f32,
    /// Share of attack events alerted (by the model or the policy).
    pub recall: f64,
    /// Share of normal events alerted (by the model or the policy).
    pub fpr: f64,
    /// Per attack type: events, AUROC against normal events, recall at the threshold.
    pub per_attack: Vec<AttackRow>,
    /// The same alerts as the cases an office reviews (when who and when are known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<CaseEvaluation>,
}

/// One attack type's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AttackRow {
    /// The attack type.
    pub attack: AttackKind,
    /// Its events.
    pub events: usize,
    /// AUROC of this type's events against all normal events.
    pub auroc: Option<f64>,
    /// Share of its events alerted (by the model or the policy).
    pub recall: f64,
}

/// What is known of each row: an attack type (events with a labels file) or only anomalous or
/// not (a table's label column).
#[derive(Clone, Debug, PartialEq)]
pub enum Labels {
    /// Attack type per row (`None`: normal).
    Typed(Vec<Option<AttackKind>>),
    /// Anomalous or not per row.
    Binary(Vec<bool>),
}

impl Labels {
    /// Rows labelled.
    pub fn len(&self) -> usize {
        match self {
            Labels::Typed(v) => v.len(),
            Labels::Binary(v) => v.len(),
        }
    }

    /// Whether no row is labelled.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether row `i` is labelled normal (`false` past the end).
    pub fn is_normal(&self, i: usize) -> bool {
        match self {
            Labels::Typed(v) => v.get(i).is_some_and(Option::is_none),
            Labels::Binary(v) => v.get(i).is_some_and(|b| !b),
        }
    }

    /// Judges the model's `scores` (one per row) and the `detector`'s alerts at `threshold`
    /// (the same scores with the policy's alerts raised:
    /// [`AlertPolicy::detector_scores`](crate::policy::AlertPolicy::detector_scores)): per attack type when
    /// types are known, and by case, from the model's scores, when `keys` say who made each row
    /// and when (for a staff of `employees`).
    pub fn evaluate(
        &self,
        detector: &[f32],
        scores: &[f32],
        threshold: f32,
        keys: &[CaseKey],
        employees: usize,
        rules: &CaseRules,
    ) -> Result<Evaluation, ModelError> {
        match self {
            Labels::Typed(l) => {
                evaluate_with_cases(detector, scores, l, threshold, keys, employees, rules)
            }
            Labels::Binary(l) => evaluate_binary(detector, scores, l, threshold),
        }
    }
}

/// Evaluates scores against plain anomalous/normal labels (no attack types: a hospital's own
/// tabular data), ranking by the model's `scores` and alerting by the `detector`'s, as
/// [`evaluate`] does. Inputs of other lengths are an error.
pub fn evaluate_binary(
    detector: &[f32],
    scores: &[f32],
    positive: &[bool],
    threshold: f32,
) -> Result<Evaluation, ModelError> {
    let scored = Scored::new(scores, positive)?;
    let (recall, fpr) = Scored::new(detector, positive)?.rates_at(threshold);
    Ok(Evaluation {
        events: scores.len(),
        attacks: scored.positives(),
        auroc: scored.auroc(),
        auprc: scored.auprc(),
        threshold,
        recall,
        fpr,
        per_attack: Vec::new(),
        cases: None,
    })
}

/// Evaluates `scores` against `labels` (one per event): AUROC and AUPRC rank by the model's
/// own `scores` (what it learned; the policy ranks nothing), recall and false-positive rate
/// count the `detector`'s alerts at `threshold` (the model's and the policy's: what an officer
/// is shown). Inputs of other lengths are an error.
pub fn evaluate(
    detector: &[f32],
    scores: &[f32],
    labels: &[Option<AttackKind>],
    threshold: f32,
) -> Result<Evaluation, ModelError> {
    if detector.len() != scores.len() {
        return Err(ModelError::Shape(format!(
            "{} detector scores against {} model scores",
            detector.len(),
            scores.len()
        )));
    }
    let positive: Vec<bool> = labels.iter().map(Option::is_some).collect();
    let scored = Scored::new(scores, &positive)?;
    let (recall, fpr) = Scored::new(detector, &positive)?.rates_at(threshold);
    let per_attack = AttackKind::ALL
        .iter()
        .filter_map(|&kind| {
            // This type's events against the normal ones; other attacks left out.
            let ((s, d), p): ((Vec<f32>, Vec<f32>), Vec<bool>) = scores
                .iter()
                .zip(detector)
                .zip(labels)
                .filter(|(_, l)| l.is_none() || **l == Some(kind))
                .map(|((s, d), l)| ((*s, *d), l.is_some()))
                .unzip();
            // Of one length by construction (one unzip).
            let kind_scored = Scored::new(&s, &p).ok()?;
            let events = kind_scored.positives();
            (events > 0).then(|| AttackRow {
                attack: kind,
                events,
                auroc: kind_scored.auroc(),
                recall: Scored::new(&d, &p).map_or(0.0, |k| k.rates_at(threshold).0),
            })
        })
        .collect();
    Ok(Evaluation {
        events: scores.len(),
        attacks: scored.positives(),
        auroc: scored.auroc(),
        auprc: scored.auprc(),
        threshold,
        recall,
        fpr,
        per_attack,
        cases: None,
    })
}

/// [`evaluate`] of the `detector` scores, and by case too, from the model's own `scores`, when
/// `keys` (one per score) say who made each row and when: for a staff of `employees`, by
/// `rules`. Scores or keys of another length than the detector's are an error.
pub fn evaluate_with_cases(
    detector: &[f32],
    scores: &[f32],
    labels: &[Option<AttackKind>],
    threshold: f32,
    keys: &[CaseKey],
    employees: usize,
    rules: &CaseRules,
) -> Result<Evaluation, ModelError> {
    let mut e = evaluate(detector, scores, labels, threshold)?;
    if !keys.is_empty() {
        if keys.len() != scores.len() || scores.len() != detector.len() {
            return Err(ModelError::Shape(format!(
                "{} detector scores, {} model scores and {} case keys",
                detector.len(),
                scores.len(),
                keys.len()
            )));
        }
        e.cases = Some(evaluate_cases(
            scores, labels, keys, threshold, employees, rules,
        )?);
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four normal rows and two role misuses, one of which the model scores as normal and the
    /// policy alerts: the detector's scores carry it to +inf.
    fn rows() -> (Vec<f32>, Vec<f32>, Vec<Option<AttackKind>>) {
        let scores = vec![0.1, 0.2, 0.3, 0.4, 0.9, 0.15];
        let mut detector = scores.clone();
        detector[5] = f32::INFINITY;
        let mut labels = vec![None; 4];
        labels.extend([Some(AttackKind::RoleMisuse); 2]);
        (detector, scores, labels)
    }

    #[test]
    fn recall_counts_the_detectors_alerts_and_auroc_ranks_the_models_scores() {
        let (detector, scores, labels) = rows();
        let e = evaluate(&detector, &scores, &labels, 0.5).unwrap();
        assert_eq!((e.recall, e.fpr), (1.0, 0.0));
        // The model ranks the second misuse below three normal rows: 5 of 8 pairs in order.
        assert_eq!(e.auroc, Some(5.0 / 8.0));
        let row = &e.per_attack[0];
        assert_eq!((row.attack, row.events), (AttackKind::RoleMisuse, 2));
        assert_eq!((row.recall, row.auroc), (1.0, Some(5.0 / 8.0)));
        // The model alone alerts on half the misuses; the ranking is the same.
        let alone = evaluate(&scores, &scores, &labels, 0.5).unwrap();
        assert_eq!((alone.recall, alone.auroc), (0.5, e.auroc));
        let positive: Vec<bool> = labels.iter().map(Option::is_some).collect();
        let b = evaluate_binary(&detector, &scores, &positive, 0.5).unwrap();
        assert_eq!((b.recall, b.auroc), (1.0, Some(5.0 / 8.0)));
    }

    #[test]
    fn inputs_of_other_lengths_are_refused() {
        let (detector, scores, labels) = rows();
        assert!(evaluate(&detector[..5], &scores, &labels, 0.5).is_err());
        let positive = vec![false; 6];
        assert!(evaluate_binary(&detector[..5], &scores, &positive, 0.5).is_err());
        let key = CaseKey {
            employee: 0,
            time_ms: 0,
            standing: crate::cases::Standing::Unexplained,
        };
        let keys = vec![key; 5];
        let rules = CaseRules::default();
        assert!(evaluate_with_cases(&detector, &scores, &labels, 0.5, &keys, 10, &rules).is_err());
    }
}

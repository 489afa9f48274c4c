//! The decision: allow, alert or deny one access, and why.
//!
//! A decision combines three things, strongest first:
//! 1. **standing blocks**: a user denied for a high score stays denied until a security officer
//!    reviews the block ([`Monitor::unblock`]);
//! 2. **the ledger's contracts**: research access to a patient who opted out, or without a
//!    data-use agreement in force, is denied whatever the score;
//! 3. **the model**: the current anchored model's score against the hospital's own alert
//!    threshold alerts; a score of `block_factor` times the threshold, or the
//!    `alerts_to_block`-th alert of a user within `alert_window_ms`, denies and blocks.
//!
//! Break-the-glass is allowed (an emergency must not wait for a model) and always alerted, and
//! so is a kind of record the user's role never needs (the role policy,
//! [`medfl_model::policy`]), which every alert threshold is set to leave room for.
//! Features come from the one streaming extractor the training pipeline uses, fed every request
//! in arrival order, so a score here is the score `medfl eval` gives the same stream. Pure:
//! time comes in, nothing is read or written here.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::Path;

use medfl_accesslog::consent::{Pseudonym, PseudonymKey};
use medfl_accesslog::features::role_needs;
use medfl_accesslog::{FeatureExtractor, N_FEATURES, StaffRole};
use medfl_model::Autoencoder;
use medfl_model::modelfile::ModelFile;
use medfl_model::policy::AlertPolicy;
use medfl_model::train::{reconstruct, reconstruction_errors, score, training_device};
use serde::{Deserialize, Serialize};

use crate::explain::{Contribution, summary, top_contributions};
use crate::request::{AccessRequest, RequestError};

/// Why the monitor could not decide.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The request is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The model could not be loaded or run.
    #[error("model: {0}")]
    Model(String),
}

/// The three answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Let it through and raise an alert for review.
    Alert,
    /// Refuse it.
    Deny,
}

impl Verdict {
    /// The verdict's name, as JSON and FHIR answers spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Alert => "alert",
            Verdict::Deny => "deny",
        }
    }
}

/// What the monitor answers, and records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The answer.
    pub verdict: Verdict,
    /// The model's anomaly score, if a model is loaded.
    pub score: Option<f32>,
    /// The alert threshold it was compared with.
    pub threshold: Option<f32>,
    /// The hash of the model file that scored it.
    pub model: Option<String>,
    /// Every rule that raised the verdict above allow, in words.
    pub reasons: Vec<String>,
    /// The features behind the score, largest share first, as one sentence.
    pub explanation: String,
    /// The same features, named with their values and shares.
    pub top_features: Vec<TopFeature>,
    /// Whether this decision blocks the user until a security officer reviews it.
    pub blocks_user: bool,
    /// The ledger height of the consent and agreements it applied (`None`: none read yet).
    pub consent_height: Option<u64>,
}

impl Decision {
    /// Whether this decision put a block on its user (rather than being denied because one
    /// already stood, which still says `blocks_user` when the score is high again).
    pub fn raises_block(&self) -> bool {
        self.blocks_user && !self.reasons.iter().any(|r| r.starts_with(STANDING_BLOCK))
    }

    /// Whether the role policy alerted on this access (a kind of record the role never needs).
    pub fn by_role_policy(&self) -> bool {
        self.reasons.iter().any(|r| r.starts_with(ROLE_POLICY))
    }
}

/// A feature behind a score (a [`Contribution`] in a storable form).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopFeature {
    /// Its name.
    pub feature: String,
    /// Its value.
    pub value: f32,
    /// Its share of the named parts: of the occlusion drops for an alert, of the squared
    /// reconstruction error otherwise (see `explain::Contribution::share`).
    pub share: f32,
    /// What it means.
    pub words: String,
}

impl From<Contribution> for TopFeature {
    fn from(c: Contribution) -> TopFeature {
        TopFeature {
            feature: c.feature.to_owned(),
            value: c.value,
            share: c.share,
            words: c.words,
        }
    }
}

/// When a score or a run of alerts turns into a block.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// A score at least this many times the threshold denies and blocks.
    pub block_factor: f32,
    /// This many alerts of one user within `alert_window_ms` deny and block.
    pub alerts_to_block: usize,
    /// The window for `alerts_to_block`.
    pub alert_window_ms: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            block_factor: 4.0,
            alerts_to_block: 5,
            alert_window_ms: 3_600_000,
        }
    }
}

/// A model ready to score: the hospital's monitor model (the anchored global network with the
/// hospital's own threshold).
pub struct Scorer {
    file: ModelFile,
    hash: String,
    net: Autoencoder,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("model", &self.hash)
            .finish_non_exhaustive()
    }
}

impl Scorer {
    /// Loads a model file (its shape and values checked; a threshold must be positive).
    ///
    /// # Errors
    /// The file is unreadable, damaged, or not a model over the access features.
    pub fn load(path: &Path) -> Result<Scorer, MonitorError> {
        let (file, hash) = ModelFile::load(path).map_err(|e| MonitorError::Model(e.to_string()))?;
        Scorer::new(file, hash)
    }

    /// A scorer for `file`, whose hash is `hash`.
    ///
    /// # Errors
    /// The model does not take the access features, or its parameters do not fit.
    pub fn new(file: ModelFile, hash: String) -> Result<Scorer, MonitorError> {
        file.expect_inputs(N_FEATURES)
            .map_err(|e| MonitorError::Model(e.to_string()))?;
        // A threshold at or below zero would alert on, and block, every access.
        if file.threshold.is_nan() || file.threshold <= 0.0 {
            return Err(MonitorError::Model(format!(
                "alert threshold {} is not positive",
                file.threshold
            )));
        }
        let net = Autoencoder::new(file.config, 0, &training_device())
            .and_then(|n| n.load_flat(file.config, &file.params))
            .map_err(|e| MonitorError::Model(e.to_string()))?;
        Ok(Scorer { file, hash, net })
    }

    /// The model file's hash.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The alert threshold.
    pub fn threshold(&self) -> f32 {
        self.file.threshold
    }

    /// The score of one row of features, as `medfl eval` computes it, and each feature's
    /// squared reconstruction error.
    ///
    /// # Errors
    /// The backend failed.
    pub fn score(&self, features: &[f32; N_FEATURES]) -> Result<(f32, Vec<f32>), MonitorError> {
        let (scores, errors) = self.score_rows(features)?;
        let s = scores
            .first()
            .copied()
            .ok_or_else(|| MonitorError::Model("no score".into()))?;
        Ok((s, errors))
    }

    /// How much of each row's score goes away when each feature alone is put back to what the
    /// model expected of it (its reconstruction): an occlusion test. What an alert names by
    /// these is what raised its score; the feature whose own reconstruction error is largest
    /// need not be, since putting it back can raise the errors of the features the model reads
    /// it with (on the default scenario's test days, 2026-12-01, it lowered the score in 192 of
    /// 224 alerts of a locally trained model).
    ///
    /// `rows` are row-major features. Two passes through the network for all of them: their
    /// reconstructions, then each row and its [`N_FEATURES`] variants scored together, so every
    /// drop is measured against a score from the same pass. A drop under a millionth of the
    /// row's score is counted as none (the arithmetic's noise, not a cause). Returns
    /// [`N_FEATURES`] drops per row, none negative.
    ///
    /// # Errors
    /// The rows are not whole, or the backend failed.
    pub fn occlusion(&self, rows: &[f32]) -> Result<Vec<f32>, MonitorError> {
        let model_err = |e: medfl_model::ModelError| MonitorError::Model(e.to_string());
        let device = training_device();
        let mut rows = rows.to_vec();
        self.file.standardizer.apply(&mut rows);
        let expected = reconstruct(&self.net, &rows, N_FEATURES, &device).map_err(model_err)?;
        let mut variants = Vec::with_capacity(rows.len() * (N_FEATURES + 1));
        for (row, expected) in rows
            .chunks_exact(N_FEATURES)
            .zip(expected.chunks_exact(N_FEATURES))
        {
            variants.extend_from_slice(row);
            for (i, e) in expected.iter().enumerate() {
                let start = variants.len();
                variants.extend_from_slice(row);
                variants[start + i] = *e;
            }
        }
        let scores = score(&self.net, &variants, N_FEATURES, &device).map_err(model_err)?;
        let mut drops = Vec::with_capacity(rows.len());
        for group in scores.chunks_exact(N_FEATURES + 1) {
            let (now, put_back) = (group[0], &group[1..]);
            let floor = 1e-6 * now.abs();
            drops.extend(put_back.iter().map(|s| {
                let d = now - s;
                if d > floor { d } else { 0.0 }
            }));
        }
        Ok(drops)
    }

    /// [`Self::score`] for many rows at once (row-major): two passes through the network, one
    /// for the scores and one for the errors.
    ///
    /// # Errors
    /// The rows are not whole, or the backend failed.
    pub fn score_rows(&self, rows: &[f32]) -> Result<(Vec<f32>, Vec<f32>), MonitorError> {
        let mut rows = rows.to_vec();
        self.file.standardizer.apply(&mut rows);
        let model_err = |e: medfl_model::ModelError| MonitorError::Model(e.to_string());
        let device = training_device();
        let scores = score(&self.net, &rows, N_FEATURES, &device).map_err(model_err)?;
        let errors =
            reconstruction_errors(&self.net, &rows, N_FEATURES, &device).map_err(model_err)?;
        Ok((scores, errors))
    }
}

/// What the ledger says about research use: the hospital's patients who opted out (by consent
/// pseudonym) and until when a data-use agreement covers the hospital.
#[derive(Clone, Debug)]
pub struct Consent {
    /// The hospital's pseudonym key (patient id to ledger pseudonym).
    pub key: PseudonymKey,
    /// Pseudonyms of the patients who opted out.
    pub opted_out: BTreeSet<Pseudonym>,
    /// Latest expiry (ms since the epoch) of an agreement in force that the hospital accepted.
    pub agreement_until: Option<u64>,
    /// The ledger height this was read at (recorded with each decision).
    pub height: u64,
}

/// How the reason of a denial because a block already stands begins: such a decision raises
/// no new block, whatever its `blocks_user` says.
pub const STANDING_BLOCK: &str = "the user is blocked pending review since";

/// How the reason for a role-policy alert begins.
pub const ROLE_POLICY: &str = "role policy:";

/// A standing block of one user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Since when (the blocking access's time).
    pub since_ms: u64,
    /// Why, in words.
    pub reason: String,
}

/// The monitor's state: the feature history, the model, the contracts and standing blocks.
#[derive(Default)]
pub struct Monitor {
    extractor: FeatureExtractor,
    scorer: Option<Scorer>,
    consent: Option<Consent>,
    blocks: BTreeMap<String, Block>,
    alerts: HashMap<String, VecDeque<u64>>,
    policy: Policy,
    next_event_id: u64,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor")
            .field("users", &self.extractor.users())
            .field("scorer", &self.scorer)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Monitor {
    /// A monitor with no history under `policy`.
    pub fn new(policy: Policy) -> Monitor {
        Monitor {
            policy,
            ..Monitor::default()
        }
    }

    /// Switches to another model between two decisions; returns the previous one.
    pub fn swap_model(&mut self, scorer: Scorer) -> Option<Scorer> {
        self.scorer.replace(scorer)
    }

    /// The model in use.
    pub fn scorer(&self) -> Option<&Scorer> {
        self.scorer.as_ref()
    }

    /// Replaces what the ledger says about research use.
    pub fn set_consent(&mut self, consent: Consent) {
        self.consent = Some(consent);
    }

    /// Users blocked until review.
    pub fn blocks(&self) -> &BTreeMap<String, Block> {
        &self.blocks
    }

    /// A security officer lifted `user`'s block; returns whether there was one.
    pub fn unblock(&mut self, user: &str) -> bool {
        self.alerts.remove(user);
        self.blocks.remove(user).is_some()
    }

    /// Replays a decision recorded in the audit log at `at_ms`: its access joins the user's
    /// history, and its alert and block stand again as they did (how a restarted monitor
    /// recovers its state).
    pub fn replay(&mut self, req: &AccessRequest, recorded: &Decision, at_ms: u64) {
        let event = req.to_event(self.next_event_id);
        self.next_event_id += 1;
        self.extractor.push(&event);
        let score_alert =
            matches!((recorded.score, recorded.threshold), (Some(s), Some(t)) if s > t);
        if score_alert && !self.blocks.contains_key(&req.user) {
            self.note_alert(&req.user, at_ms);
        }
        if recorded.blocks_user {
            self.blocks
                .entry(req.user.clone())
                .or_insert_with(|| Block {
                    since_ms: at_ms,
                    reason: recorded.reasons.last().cloned().unwrap_or_default(),
                });
        }
    }

    /// Records a model alert of `user` at `now_ms`; returns the user's alerts in the window.
    fn note_alert(&mut self, user: &str, now_ms: u64) -> usize {
        let window = self.policy.alert_window_ms;
        let recent = self.alerts.entry(user.to_owned()).or_default();
        recent.retain(|&t| t.saturating_add(window) >= now_ms && t <= now_ms);
        recent.push_back(now_ms);
        recent.len()
    }

    /// Decides on `req` at the monitor's time `now_ms`, and adds it to its user's history.
    ///
    /// # Errors
    /// The request is malformed (nothing changes), or the model failed (the access is still
    /// in the history).
    pub fn decide(&mut self, req: &AccessRequest, now_ms: u64) -> Result<Decision, MonitorError> {
        self.decide_all(std::slice::from_ref(req), now_ms)
            .pop()
            .ok_or_else(|| MonitorError::Model("no decision".into()))?
    }

    /// Decides on every request in order, as [`Self::decide`] would one after the other, but
    /// scores them in one pass through the network: the features of each depend only on the
    /// accesses before it, and the rules are applied in order, so the decisions are the same.
    ///
    /// A malformed request gets its error and changes nothing; a model failure fails every
    /// request that was checked (they are in the users' history already).
    pub fn decide_all<R: std::borrow::Borrow<AccessRequest>>(
        &mut self,
        reqs: &[R],
        now_ms: u64,
    ) -> Vec<Result<Decision, MonitorError>> {
        let mut checked = Vec::with_capacity(reqs.len());
        let mut rows = Vec::with_capacity(reqs.len() * N_FEATURES);
        for req in reqs.iter().map(Borrow::borrow) {
            let c = req.check(now_ms).map(|()| {
                let event = req.to_event(self.next_event_id);
                self.next_event_id += 1;
                let features = self.extractor.push(&event);
                rows.extend_from_slice(&features);
                (event, features)
            });
            checked.push(c);
        }
        let scored = match &self.scorer {
            Some(s) if !rows.is_empty() => match s.score_rows(&rows) {
                Ok(x) => Some(x),
                Err(e) => {
                    let why = e.to_string();
                    return checked
                        .into_iter()
                        .map(|c| match c {
                            Ok(_) => Err(MonitorError::Model(why.clone())),
                            Err(e) => Err(e.into()),
                        })
                        .collect();
                }
            },
            _ => None,
        };
        // The rows above the threshold are explained by occlusion, all in one batch; a failure
        // leaves them to the reconstruction errors.
        let mut occluded: Vec<Option<Vec<f32>>> = vec![None; rows.len() / N_FEATURES];
        if let (Some(s), Some((scores, _))) = (&self.scorer, &scored) {
            let alerts: Vec<usize> = (0..scores.len())
                .filter(|&k| scores[k] > s.threshold())
                .collect();
            let picked: Vec<f32> = alerts
                .iter()
                .filter_map(|&k| rows.get(k * N_FEATURES..(k + 1) * N_FEATURES))
                .flatten()
                .copied()
                .collect();
            if let Ok(drops) = s.occlusion(&picked) {
                for (&k, d) in alerts.iter().zip(drops.chunks_exact(N_FEATURES)) {
                    if let Some(slot) = occluded.get_mut(k) {
                        *slot = Some(d.to_vec());
                    }
                }
            }
        }
        let mut k = 0;
        let mut out = Vec::with_capacity(reqs.len());
        for (req, c) in reqs.iter().map(Borrow::borrow).zip(checked) {
            match c {
                Ok((event, features)) => {
                    let score = scored.as_ref().and_then(|(scores, errors)| {
                        Some((
                            *scores.get(k)?,
                            errors.get(k * N_FEATURES..(k + 1) * N_FEATURES)?,
                        ))
                    });
                    let drops = occluded.get_mut(k).and_then(Option::take);
                    k += 1;
                    out.push(Ok(self.judge(req, &event, &features, score, drops, now_ms)));
                }
                Err(e) => out.push(Err(e.into())),
            }
        }
        out
    }

    /// Applies the rules to one access, its features and its score (with each feature's
    /// squared error, and its occlusion drops if it alerted), in the order accesses arrived.
    fn judge(
        &mut self,
        req: &AccessRequest,
        event: &medfl_accesslog::AccessEvent,
        features: &[f32; N_FEATURES],
        scored: Option<(f32, &[f32])>,
        drops: Option<Vec<f32>>,
        now_ms: u64,
    ) -> Decision {
        let mut verdict = Verdict::Allow;
        let mut reasons = Vec::new();
        let mut raise = |v: Verdict, why: String, verdict: &mut Verdict| {
            *verdict = (*verdict).max(v);
            reasons.push(why);
        };
        if let Some(b) = self.blocks.get(&req.user) {
            raise(
                Verdict::Deny,
                format!(
                    "{STANDING_BLOCK} {}: {}",
                    crate::explain::clock(b.since_ms),
                    b.reason
                ),
                &mut verdict,
            );
        }
        if req.is_research() {
            // Judged at the later of the access's time and the monitor's: an access dated in
            // the past cannot reach back into an agreement that has since expired.
            let at = req.time_ms.max(now_ms);
            match &self.consent {
                Some(c) if c.opted_out.contains(&c.key.pseudonym(&req.patient)) => raise(
                    Verdict::Deny,
                    "the patient opted out of research use (consent on the ledger)".into(),
                    &mut verdict,
                ),
                Some(c) if c.agreement_until.is_some_and(|t| t > at) => {}
                _ => raise(
                    Verdict::Deny,
                    "no data-use agreement in force covers research access".into(),
                    &mut verdict,
                ),
            }
        }
        if req.break_glass {
            raise(
                Verdict::Alert,
                "break-the-glass access is always reviewed".into(),
                &mut verdict,
            );
        }
        // The office's role policy alerts whatever the score, as every threshold the hospital
        // sets assumes (`medfl_model::policy`); it blocks no one by itself. Research by any
        // role is also held to what research needs: declaring it cannot widen a role's reach.
        if AlertPolicy::RoleNeeds.flags(features) {
            raise(
                Verdict::Alert,
                format!(
                    "{ROLE_POLICY} the {} role does not need {} records",
                    event.role.as_str(),
                    event.resource.as_str()
                ),
                &mut verdict,
            );
        } else if req.is_research() && !role_needs(StaffRole::Researcher, event.resource) {
            raise(
                Verdict::Alert,
                format!(
                    "{ROLE_POLICY} research does not need {} records",
                    event.resource.as_str()
                ),
                &mut verdict,
            );
        }
        let mut blocks_user = false;
        let mut score_alert = false;
        let (mut score, mut threshold, mut model, mut top) = (None, None, None, Vec::new());
        if let (Some(s), Some((value, errors))) = (&self.scorer, scored) {
            let t = s.threshold();
            if value > t {
                score_alert = true;
                raise(
                    Verdict::Alert,
                    format!("anomaly score {value:.4} above the alert threshold {t:.4}"),
                    &mut verdict,
                );
            }
            if value >= t * self.policy.block_factor && !req.break_glass {
                raise(
                    Verdict::Deny,
                    format!(
                        "anomaly score at least {} times the alert threshold",
                        self.policy.block_factor
                    ),
                    &mut verdict,
                );
                blocks_user = true;
            }
            // An alert is explained by occlusion (what raised the score); anything else, or an
            // alert no single feature's removal lowers, by the reconstruction errors.
            top = drops
                .filter(|_| score_alert)
                .map(|d| top_contributions(features, &d, event))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| top_contributions(features, errors, event));
            (score, threshold, model) = (Some(value), Some(t), Some(s.hash().to_owned()));
        }
        // Only the model's alerts count towards a block, on the monitor's own clock: a run of
        // contract denials is the contracts working, and a caller's times are not trusted for
        // the window.
        if score_alert && !self.blocks.contains_key(&req.user) {
            let recent = self.note_alert(&req.user, now_ms);
            if recent >= self.policy.alerts_to_block && !req.break_glass {
                raise(
                    Verdict::Deny,
                    format!(
                        "{recent} alerts within {} minutes",
                        self.policy.alert_window_ms / 60_000
                    ),
                    &mut verdict,
                );
                blocks_user = true;
            }
        }
        if blocks_user {
            // A block already standing keeps its first time and reason.
            self.blocks
                .entry(req.user.clone())
                .or_insert_with(|| Block {
                    since_ms: now_ms,
                    reason: reasons.last().cloned().unwrap_or_default(),
                });
        }
        Decision {
            verdict,
            score,
            threshold,
            model,
            reasons,
            explanation: summary(&top, event, verdict != Verdict::Allow),
            top_features: top.into_iter().map(TopFeature::from).collect(),
            blocks_user,
            consent_height: self.consent.as_ref().map(|c| c.height),
        }
    }
}

//! What a round runs with: the coordinator decides, every participant checks.

use medfl_ledger::tx::MAX_LISTED_MEMBERS;
pub use medfl_ledger::tx::Strategy;
use medfl_ledger::{AggregationParams, AgreementId, Hash, MemberId, Timestamp, codec};
use medfl_modelspec::AutoencoderConfig;
use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;

/// Local training: DP-SGD with Poisson sampling of employees (employee-level privacy inside each
/// hospital).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingParams {
    /// Expected passes over the local data per round.
    pub epochs: f64,
    /// Poisson sampling rate `q` of employees in each step's batch.
    pub sampling_rate: f64,
    /// DP-SGD noise multiplier `σ` (noise std over the clip norm).
    pub noise_multiplier: f64,
    /// L2 clip norm of each sampled employee's mean gradient.
    pub clip_norm: f64,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// The `δ` every epsilon is stated at.
    pub delta: f64,
}

impl Default for TrainingParams {
    fn default() -> Self {
        TrainingParams {
            epochs: 1.0,
            sampling_rate: 0.01,
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            learning_rate: 2e-3,
            delta: 1e-6,
        }
    }
}

/// The distributed discrete Gaussian of the aggregate: each update is clipped and carries a share
/// of a discrete Gaussian whose sum over at least `min_clients` survivors has std
/// `noise_multiplier · clip` (Kairouz, Liu & Steinke 2021). At the default multiplier it keeps
/// the ring's rounding honest; it is not a hospital-level privacy guarantee (docs/privacy.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DdgParams {
    /// L2 bound on one hospital's model update (parameter space).
    pub update_clip: f64,
    /// Noise std of the sum over `update_clip`.
    pub noise_multiplier: f64,
    /// Ring width of secure aggregation.
    pub bits: u32,
    /// Fewest survivors the noise is calibrated for.
    pub min_clients: u64,
}

impl Default for DdgParams {
    fn default() -> Self {
        DdgParams {
            update_clip: 5.0,
            noise_multiplier: 0.01,
            bits: 32,
            min_clients: 3,
        }
    }
}

/// SecAgg+ graph parameters; `None` takes the secagg crate's defaults.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAggParams {
    /// Neighbours per client.
    pub neighbours: Option<u32>,
    /// Shamir threshold.
    pub threshold: Option<u32>,
}

impl SecAggParams {
    /// The graph degree and threshold a round of `n` clients actually runs with, resolving
    /// defaults as `medfl_secagg::RoundPlan::new` does (a Harary graph of even degree `k` for
    /// odd `k` and odd `n` has degree `k + 1`), so floors are judged on what runs.
    pub fn resolve(&self, n: usize) -> (u32, u32) {
        let k = self
            .neighbours
            .map_or_else(|| medfl_secagg::default_degree(n), |k| k as usize);
        let degree = if k % 2 == 1 && n % 2 == 1 { k + 1 } else { k };
        let t = self.threshold.map_or(degree / 2 + 1, |t| t as usize);
        let clamp = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        (clamp(degree), clamp(t))
    }
}

/// Everything a participant needs to take part in one round attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundConfig {
    /// The agreement the round runs under.
    pub agreement: AgreementId,
    /// Round number under the agreement (the ledger's last round + 1).
    pub round: u64,
    /// Unique id of this attempt: a restarted round gets a new one, so secure-aggregation keys
    /// and signatures from one attempt are refused in another.
    pub session: u64,
    /// When the coordinator started the attempt.
    pub issued_at: Timestamp,
    /// Hash of the model the round starts from.
    pub previous_model: Hash,
    /// Network shape.
    pub model: AutoencoderConfig,
    /// Participants; a member's index is its secure-aggregation client id.
    pub participants: Vec<MemberId>,
    /// Each participant's cumulative epsilon if its update is in this round's aggregate.
    pub epsilon_after: Vec<f64>,
    /// Local training.
    pub training: TrainingParams,
    /// Distributed noise.
    pub ddg: DdgParams,
    /// Secure aggregation.
    pub secagg: SecAggParams,
    /// Server-side update rule.
    pub strategy: Strategy,
    /// Public randomness of the round (the rotation of the update encoding, the SecAgg+ graph).
    pub public_seed: [u8; 32],
    /// The ledger height whose consent choices the round trains under. Each agent refuses a
    /// height older than the newest consent change it has seen, and it is in the transcript, so
    /// the anchored round records which opt-outs were applied.
    pub consent_height: u64,
}

/// How far in the future (ms) an agent accepts a round's `issued_at` by its own clock: clocks
/// of different machines drift, but a round cannot have been issued much later than "now".
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// Largest model the protocol moves (parameters).
pub const MAX_PARAMS: usize = 1 << 26;

fn finite_in(field: &'static str, v: f64, lo: f64, hi: f64) -> Result<(), ProtocolError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(ProtocolError::invalid(
            field,
            format!("{v} is not in [{lo}, {hi}]"),
        ))
    }
}

/// Checks the training and distributed-noise parameters' ranges: what a round's configuration
/// must pass, and what a coordinator's configuration is checked against before any round.
pub fn check_parameters(t: &TrainingParams, g: &DdgParams) -> Result<(), ProtocolError> {
    finite_in("training.epochs", t.epochs, 1e-6, 1e6)?;
    finite_in("training.sampling_rate", t.sampling_rate, 1e-9, 1.0)?;
    finite_in("training.noise_multiplier", t.noise_multiplier, 0.0, 1e6)?;
    finite_in("training.clip_norm", t.clip_norm, 1e-9, 1e9)?;
    finite_in("training.learning_rate", t.learning_rate, 1e-12, 1e3)?;
    finite_in("training.delta", t.delta, 1e-300, 0.5)?;
    finite_in("ddg.update_clip", g.update_clip, 1e-9, 1e9)?;
    finite_in("ddg.noise_multiplier", g.noise_multiplier, 1e-9, 1e6)?;
    if !(8..=62).contains(&g.bits) {
        return Err(ProtocolError::invalid("ddg.bits", "must be in 8..=62"));
    }
    Ok(())
}

impl RoundConfig {
    /// Checks shapes and ranges; a participant refuses a config that fails.
    pub fn check(&self) -> Result<(), ProtocolError> {
        if self.round == 0 {
            return Err(ProtocolError::invalid("round", "rounds count from 1"));
        }
        self.model
            .check()
            .map_err(|e| ProtocolError::invalid("model", e.to_string()))?;
        if self.model.param_count() > MAX_PARAMS {
            return Err(ProtocolError::invalid("model", "too many parameters"));
        }
        let n = self.participants.len();
        if !(2..=MAX_LISTED_MEMBERS).contains(&n) {
            return Err(ProtocolError::invalid(
                "participants",
                format!("{n} listed; a round needs 2..={MAX_LISTED_MEMBERS}"),
            ));
        }
        let mut sorted = self.participants.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return Err(ProtocolError::invalid(
                "participants",
                "a member is listed twice",
            ));
        }
        if self.epsilon_after.len() != n {
            return Err(ProtocolError::invalid(
                "epsilon_after",
                "one entry per participant",
            ));
        }
        for &e in &self.epsilon_after {
            finite_in("epsilon_after", e, 0.0, f64::MAX)?;
        }
        check_parameters(&self.training, &self.ddg)?;
        let g = &self.ddg;
        if g.min_clients == 0 || g.min_clients > n as u64 {
            return Err(ProtocolError::invalid(
                "ddg",
                "min_clients must be in 1..=participants",
            ));
        }
        self.strategy
            .check()
            .map_err(|e| ProtocolError::invalid("strategy", e))
    }

    /// The secure-aggregation and noise parameters this round runs with, as anchored and as
    /// judged against the agreement's floors.
    pub fn aggregation_params(&self) -> AggregationParams {
        let (neighbours, threshold) = self.secagg.resolve(self.participants.len());
        AggregationParams {
            neighbours,
            threshold,
            min_survivors: self.ddg.min_clients,
            bits: self.ddg.bits,
            noise_multiplier: self.ddg.noise_multiplier,
        }
    }

    /// The hash of the whole config: any field changed makes another round.
    pub fn hash(&self) -> Result<Hash, ProtocolError> {
        let bytes =
            codec::encode(self).map_err(|e| ProtocolError::invalid("config", e.to_string()))?;
        Ok(Hash::tagged(b"medfl/round-config/v1", &[&bytes]))
    }

    /// The secure-aggregation context: `H(genesis, agreement, round, session, H(config))`.
    ///
    /// Each party computes it from its own genesis and the config it checked, never taking it
    /// from the coordinator, so keys and signatures from another consortium, round, attempt or
    /// parameter set cannot be replayed into this one.
    pub fn session_context(&self, genesis: &Hash) -> Result<[u8; 32], ProtocolError> {
        let config = self.hash()?;
        Ok(Hash::tagged(
            b"medfl/secagg-context/v1",
            &[
                &genesis.0,
                &(self.agreement.as_str().len() as u64).to_le_bytes(),
                self.agreement.as_str().as_bytes(),
                &self.round.to_le_bytes(),
                &self.session.to_le_bytes(),
                &config.0,
            ],
        )
        .0)
    }

    /// The secure-aggregation client id of `member`, if it participates.
    pub fn client_index(&self, member: &MemberId) -> Option<u32> {
        self.participants
            .iter()
            .position(|m| m == member)
            .and_then(|i| u32::try_from(i).ok())
    }
}

impl RoundConfig {
    /// The secure-aggregation parameters of this attempt in the consortium of `genesis`, for
    /// vectors of `len` values in `Z_{2^bits}`; every party derives the same.
    pub fn secagg_config(
        &self,
        genesis: &Hash,
        len: usize,
        bits: u32,
    ) -> Result<medfl_secagg::SecAggConfig, ProtocolError> {
        let mut c = medfl_secagg::SecAggConfig::new(self.session, len);
        c.bits = bits;
        c.neighbours = self.secagg.neighbours.map(|k| k as usize);
        c.threshold = self.secagg.threshold.map(|t| t as usize);
        c.graph_seed = Hash::tagged(b"medfl/secagg-graph/v1", &[&self.public_seed]).0;
        c.context = self.session_context(genesis)?;
        // The distributed noise is calibrated for this many survivors: no client unmasks fewer.
        c.min_survivors = usize::try_from(self.ddg.min_clients)
            .map_err(|_| ProtocolError::invalid("ddg.min_clients", "too large"))?;
        Ok(c)
    }

    /// The secure-aggregation roster: participant `i`'s ledger key under client id `i`.
    pub fn roster(
        &self,
        state: &medfl_ledger::ChainState,
    ) -> Result<medfl_secagg::Roster, ProtocolError> {
        let mut roster = medfl_secagg::Roster::new();
        for (i, m) in self.participants.iter().enumerate() {
            let record = state.member(m).ok_or_else(|| {
                ProtocolError::invalid("participants", format!("{m} is not on the ledger"))
            })?;
            let id =
                u32::try_from(i).map_err(|_| ProtocolError::invalid("participants", "too many"))?;
            roster.insert(
                medfl_secagg::ClientId(id),
                *record.member.public_key.as_dalek(),
            );
        }
        Ok(roster)
    }
}

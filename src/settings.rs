//! The one configuration of a consortium's rounds, with the one set of defaults.
//!
//! A deployed coordinator reads it from its config's `[rounds]` table; `medfl simulate` from
//! `run.toml`'s `[rounds]` (or from a provisioned consortium's coordinator, with
//! `--consortium`). Both turn it into the coordinator's configuration through
//! [`RoundSettings::coordinator_config`], so a simulation runs with exactly the parameters,
//! deadlines and starting model a deployment would. Every knob is documented here, once.

use anyhow::{Result, bail};
use medfl_coordinator::{CoordinatorConfig, Timeouts};
use medfl_ledger::AgreementId;
use medfl_model::AutoencoderConfig;
use medfl_protocol::{DdgParams, SecAggParams, Strategy, TrainingParams};
use serde::{Deserialize, Serialize};

/// How long members' transactions are batched before the coordinator orders them into a block.
pub const ORDER_DELAY_MS: u64 = 500;

/// How a consortium runs rounds: a coordinator config's `[rounds]` table, and `run.toml`'s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundSettings {
    /// The agreement the rounds run under.
    pub agreement: AgreementId,
    /// Rounds to anchor before exiting (0: run until stopped; a simulation needs at least 1).
    pub rounds: u64,
    /// Fewest participants a round starts with.
    pub min_participants: usize,
    /// Most participants a round takes (0: all eligible).
    #[serde(default)]
    pub max_participants: usize,
    /// Seconds from the end of one round to the start of the next (a simulation waits them on
    /// its virtual clock, so they cost it nothing).
    pub interval_s: f64,
    /// Seconds to wait for every eligible hospital to connect before starting a round with at
    /// least `min_participants`.
    pub gather_s: f64,
    /// Seconds each secure-aggregation stage may take.
    pub stage_timeout_s: f64,
    /// Seconds local training (the masked-input stage) may take.
    pub training_timeout_s: f64,
    /// Seconds to collect endorsements.
    pub endorse_timeout_s: f64,
    /// Hidden width of the autoencoder.
    pub hidden: usize,
    /// Bottleneck width.
    pub latent: usize,
    /// Seed of the initial model's weights.
    pub init_seed: u64,
    /// Server update rule.
    pub strategy: Strategy,
    /// Local DP-SGD.
    pub training: TrainingParams,
    /// Distributed noise and weighting.
    pub ddg: DdgParams,
    /// Secure-aggregation graph.
    #[serde(default)]
    pub secagg: SecAggParams,
}

impl RoundSettings {
    /// Defaults for rounds under `agreement`.
    pub fn new(agreement: AgreementId) -> Self {
        RoundSettings {
            agreement,
            rounds: 10,
            min_participants: 2,
            max_participants: 0,
            interval_s: 1.0,
            gather_s: 10.0,
            stage_timeout_s: 30.0,
            training_timeout_s: 600.0,
            endorse_timeout_s: 30.0,
            hidden: 32,
            latent: 8,
            init_seed: 7,
            strategy: Strategy::FedAvg { server_lr: 1.0 },
            training: TrainingParams::default(),
            ddg: DdgParams::default(),
            secagg: SecAggParams::default(),
        }
    }
}

impl RoundSettings {
    /// The network every hospital trains: the access features' width, then the hidden and
    /// bottleneck widths.
    pub fn model(&self) -> AutoencoderConfig {
        AutoencoderConfig {
            inputs: medfl_accesslog::features::N_FEATURES,
            hidden: self.hidden,
            latent: self.latent,
        }
    }

    /// The stage deadlines, in milliseconds of the driver's clock.
    pub fn timeouts(&self) -> Timeouts {
        // `check` keeps every value finite, at least a millisecond and below a year.
        let ms = |s: f64| (s * 1000.0).round() as u64;
        Timeouts {
            stage_ms: ms(self.stage_timeout_s),
            training_ms: ms(self.training_timeout_s),
            endorse_ms: ms(self.endorse_timeout_s),
        }
    }

    /// When the coordinator's node starts rounds and orders members' transactions.
    pub fn pacing(&self) -> crate::node::Pacing {
        // `check` keeps both finite, non-negative and below a year.
        let ms = |s: f64| (s * 1000.0).round() as u64;
        crate::node::Pacing {
            interval_ms: ms(self.interval_s),
            gather_ms: ms(self.gather_s),
            min_participants: self.min_participants,
            order_delay_ms: ORDER_DELAY_MS,
        }
    }

    /// What the coordinator's state machine runs with.
    pub fn coordinator_config(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            agreement: self.agreement.clone(),
            model: self.model(),
            training: self.training,
            ddg: self.ddg,
            secagg: self.secagg,
            strategy: self.strategy,
            min_participants: self.min_participants,
            max_participants: self.max_participants,
            timeouts: self.timeouts(),
        }
    }

    /// Checks what the types do not (the protocol checks the privacy parameters again when a
    /// round is configured).
    pub fn check(&self) -> Result<()> {
        const YEAR_S: f64 = 365.0 * 86_400.0;
        for (name, s) in [
            ("interval_s", self.interval_s),
            ("gather_s", self.gather_s),
            ("stage_timeout_s", self.stage_timeout_s),
            ("training_timeout_s", self.training_timeout_s),
            ("endorse_timeout_s", self.endorse_timeout_s),
        ] {
            if !(0.0..=YEAR_S).contains(&s) {
                bail!("[rounds] {name} = {s}: must be between 0 and a year, in seconds");
            }
        }
        for (name, s) in [
            ("stage_timeout_s", self.stage_timeout_s),
            ("training_timeout_s", self.training_timeout_s),
            ("endorse_timeout_s", self.endorse_timeout_s),
        ] {
            if s < 0.001 {
                bail!("[rounds] {name} = {s}: a deadline must be at least a millisecond");
            }
        }
        // Widths bound first, so the parameter count below cannot overflow.
        const MAX_WIDTH: usize = 1 << 16;
        if !(1..=MAX_WIDTH).contains(&self.hidden) || !(1..=MAX_WIDTH).contains(&self.latent) {
            bail!("[rounds] hidden and latent widths must be in 1..={MAX_WIDTH}");
        }
        if self.model().param_count() > medfl_protocol::config::MAX_PARAMS {
            bail!(
                "[rounds] a {}-{}-{} network has {} parameters, over the protocol's {}",
                self.model().inputs,
                self.hidden,
                self.latent,
                self.model().param_count(),
                medfl_protocol::config::MAX_PARAMS
            );
        }
        if self.min_participants < 2 {
            bail!(
                "[rounds] min_participants = {}: secure aggregation needs at least 2",
                self.min_participants
            );
        }
        // A round needs at least 2 participants and as many as the noise is calibrated for.
        let fewest = self.min_participants.max(self.ddg.min_clients as usize);
        if self.max_participants != 0 && self.max_participants < fewest {
            bail!(
                "[rounds] max_participants = {} is below the {fewest} a round needs \
                 (min_participants, ddg.min_clients): every round would fail",
                self.max_participants
            );
        }
        medfl_protocol::config::check_parameters(&self.training, &self.ddg)
            .map_err(|e| anyhow::anyhow!("[rounds] {e}"))?;
        self.strategy.check().map_err(anyhow::Error::msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> RoundSettings {
        RoundSettings::new(AgreementId::new("dua").unwrap())
    }

    #[test]
    fn the_defaults_pass_their_own_checks_and_keep_their_deadlines() {
        let r = defaults();
        r.check().unwrap();
        let t = r.timeouts();
        assert_eq!(
            (t.stage_ms, t.training_ms, t.endorse_ms),
            (30_000, 600_000, 30_000)
        );
        assert_eq!(
            r.coordinator_config().model.inputs,
            medfl_accesslog::N_FEATURES
        );
    }

    #[test]
    fn a_deadline_that_is_not_a_duration_is_refused() {
        for bad in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e12] {
            let mut r = defaults();
            r.stage_timeout_s = bad;
            assert!(r.check().is_err(), "stage_timeout_s = {bad} passed");
        }
        let mut r = defaults();
        r.min_participants = 1;
        assert!(r.check().is_err());
    }

    #[test]
    fn a_configuration_every_round_would_refuse_is_refused_before_any_round() {
        let refused = |edit: &dyn Fn(&mut RoundSettings)| {
            let mut r = defaults();
            edit(&mut r);
            r.check().is_err()
        };
        assert!(refused(&|r| r.hidden = usize::MAX));
        assert!(refused(&|r| r.latent = 0));
        assert!(refused(&|r| (r.hidden, r.latent) = (1 << 16, 1 << 16)));
        assert!(refused(&|r| r.max_participants = 1));
        assert!(refused(&|r| r.training.sampling_rate = f64::NAN));
        assert!(refused(&|r| r.training.delta = 0.9));
        assert!(refused(&|r| r.ddg.bits = 70));
        assert!(!refused(&|r| r.max_participants = 5));
        // Seconds become milliseconds to the nearest one, not truncated.
        let mut r = defaults();
        r.stage_timeout_s = 1.005;
        assert_eq!(r.timeouts().stage_ms, 1005);
    }
}

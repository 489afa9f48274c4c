//! The DP-SGD plan a round fixes before any data is touched: its hyperparameters, their
//! checks, and what the plan costs in privacy.
//!
//! The training itself (sampling, clipping, noise on a tensor backend) lives in `medfl-model`;
//! everything here is what the protocol and each hospital's budget must know without running it,
//! so they build without a tensor backend.

use medfl_dp::{DpError, LatticeGaussian, PrivacyEvent, PrivacyLoss};

use crate::{AutoencoderConfig, ModelError};

/// Most rows of one employee a step uses; more are sampled down uniformly. This bounds a step's
/// compute, not the privacy (each employee's mean gradient is clipped whatever their count).
pub const MAX_ROWS_PER_EMPLOYEE: usize = 32;

/// Why DP-SGD refused to run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DpSgdError {
    /// A DP-SGD hyperparameter is NaN, infinite or out of range.
    #[error("invalid DP-SGD parameter `{name}` = {value}: {reason}")]
    InvalidParameter {
        /// Which parameter.
        name: &'static str,
        /// The value given (as `f64` for reporting).
        value: f64,
        /// What was expected.
        reason: &'static str,
    },
    /// The data or the model do not fit the configuration.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The noise sampler or the accountant rejected a parameter.
    #[error("privacy machinery: {0}")]
    Dp(#[from] DpError),
}

/// The optimizer applied to the noisy gradient (any optimizer is post-processing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DpOptimizer {
    /// Adam with burn's defaults.
    Adam,
    /// Plain SGD.
    Sgd,
}

/// DP-SGD hyperparameters.
#[derive(Clone, Copy, PartialEq)]
pub struct DpSgdConfig {
    /// Poisson sampling rate `q ∈ (0, 1]`: each employee joins each step's batch with this
    /// probability.
    pub sampling_rate: f64,
    /// Noise multiplier `σ ≥ 0`: the noise standard deviation over the clip norm (0 = no privacy).
    pub noise_multiplier: f64,
    /// Per-employee L2 clip norm `C > 0`.
    pub clip_norm: f64,
    /// Number of steps (see [`DpSgdConfig::steps_for_epochs`]).
    pub steps: u64,
    /// The optimizer's learning rate.
    pub learning_rate: f64,
    /// The optimizer.
    pub optimizer: DpOptimizer,
    /// The `δ` at which the report states `ε`, in `(0, 1)`.
    pub delta: f64,
    /// 256-bit seed of the sampling and noise streams (ChaCha20). Reproducible by design; in a
    /// deployment it must be a secret drawn from the operating system's generator (whoever knows
    /// it can subtract the noise), and a full-width key so it cannot be searched.
    pub seed: [u8; 32],
}

// By hand: the seed is the noise's secret key and must never reach a log.
impl std::fmt::Debug for DpSgdConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpSgdConfig")
            .field("sampling_rate", &self.sampling_rate)
            .field("noise_multiplier", &self.noise_multiplier)
            .field("clip_norm", &self.clip_norm)
            .field("steps", &self.steps)
            .field("learning_rate", &self.learning_rate)
            .field("optimizer", &self.optimizer)
            .field("delta", &self.delta)
            .field("seed", &"<secret>")
            .finish()
    }
}

impl DpSgdConfig {
    /// The number of steps that visits each employee `epochs` times in expectation:
    /// `⌈epochs/q⌉`.
    pub fn steps_for_epochs(sampling_rate: f64, epochs: f64) -> Result<u64, DpSgdError> {
        check_rate(sampling_rate)?;
        check_parameter(
            "epochs",
            epochs,
            epochs.is_finite() && epochs > 0.0,
            "must be finite and positive",
        )?;
        let steps = (epochs / sampling_rate).ceil();
        check_parameter(
            "epochs",
            epochs,
            steps < 2f64.powi(53),
            "too many steps for the sampling rate",
        )?;
        Ok(steps as u64)
    }

    /// Checks every parameter; the noise scale `σC` must also suit the lattice sampler.
    pub fn validate(&self) -> Result<(), DpSgdError> {
        check_rate(self.sampling_rate)?;
        let sigma = self.noise_multiplier;
        check_parameter(
            "noise_multiplier",
            sigma,
            sigma.is_finite() && sigma >= 0.0,
            "must be finite and non-negative",
        )?;
        let c = self.clip_norm;
        check_parameter(
            "clip_norm",
            c,
            c.is_finite() && c > 0.0,
            "must be finite and positive",
        )?;
        check_parameter(
            "steps",
            self.steps as f64,
            self.steps > 0,
            "must be at least 1",
        )?;
        let lr = self.learning_rate;
        check_parameter(
            "learning_rate",
            lr,
            lr.is_finite() && lr > 0.0,
            "must be finite and positive",
        )?;
        let delta = self.delta;
        check_parameter(
            "delta",
            delta,
            delta > 0.0 && delta < 1.0,
            "must be in (0, 1)",
        )?;
        // Builds (and discards) the sampler so an unusable σC fails here, before any data is used.
        self.noise()?;
        Ok(())
    }

    /// The noise sampler for `σC`, or `None` when `σ = 0`.
    pub fn noise(&self) -> Result<Option<LatticeGaussian>, DpSgdError> {
        if self.noise_multiplier == 0.0 {
            return Ok(None);
        }
        Ok(Some(LatticeGaussian::new(
            self.noise_multiplier * self.clip_norm,
        )?))
    }

    /// What the accountant is charged for training a network of shape `config` (checks `self`).
    pub fn accounting(&self, config: AutoencoderConfig) -> Result<DpAccounting, DpSgdError> {
        self.validate()?;
        config.check()?;
        let noise = self.noise()?;
        let (noise_std, sensitivity) = match &noise {
            Some(g) => (
                g.sigma(),
                self.clip_norm + g.sensitivity_inflation(config.param_count()),
            ),
            None => (0.0, self.clip_norm),
        };
        let noise_multiplier = noise_std / sensitivity;
        let event = PrivacyEvent::PoissonGaussian {
            q: self.sampling_rate,
            noise_multiplier,
            steps: self.steps,
        };
        let mut acc = PrivacyLoss::new();
        acc.compose_poisson_gaussian(self.sampling_rate, noise_multiplier, self.steps)?;
        Ok(DpAccounting {
            noise_std,
            sensitivity,
            noise_multiplier,
            epsilon: acc.epsilon(self.delta)?,
            delta: self.delta,
            event,
        })
    }
}

/// The privacy cost of a [`DpSgdConfig`], known before any data is touched.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DpAccounting {
    /// The noise standard deviation actually sampled (at least `σC`; 0 without noise).
    pub noise_std: f64,
    /// The L2 sensitivity of one step's sum: `C + λ√d` (lattice rounding included).
    pub sensitivity: f64,
    /// The multiplier accounted: `noise_std / sensitivity` (slightly below the nominal `σ`).
    pub noise_multiplier: f64,
    /// `ε` at [`DpAccounting::delta`] after all steps (`+∞` without noise).
    pub epsilon: f64,
    /// The `δ` of [`DpAccounting::epsilon`].
    pub delta: f64,
    /// The event to charge a [`medfl_dp::MemberBudget`] with before training.
    pub event: PrivacyEvent,
}

/// Checks a sampling rate: in `(0, 1]`.
fn check_rate(q: f64) -> Result<(), DpSgdError> {
    check_parameter("sampling_rate", q, q > 0.0 && q <= 1.0, "must be in (0, 1]")
}

/// Turns a failed condition into a typed error naming the parameter (NaN fails every condition).
pub fn check_parameter(
    name: &'static str,
    value: f64,
    ok: bool,
    reason: &'static str,
) -> Result<(), DpSgdError> {
    if ok {
        Ok(())
    } else {
        Err(DpSgdError::InvalidParameter {
            name,
            value,
            reason,
        })
    }
}

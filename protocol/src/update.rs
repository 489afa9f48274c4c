//! A hospital's model update as a vector over `Z_{2^b}`, and the aggregate back to a mean update.
//!
//! Hospital `i` sends `v_i = clip(Δ_i, C)`, its trained parameters minus the global ones, clipped
//! to the round's update bound, so `‖v_i‖ ≤ C` whatever the hospital's size. Nothing else rides
//! along: every hospital counts once (a public weight, not its row count, which would say
//! something about its employees), and no training loss is sent (it is computed on raw rows and
//! no DP mechanism covers it). The update itself is the output of the hospital's DP-SGD, so it
//! is covered by the hospital's employee-level guarantee. The distributed discrete Gaussian
//! ([`medfl_dp::DdpPlan`]) rotates, scales, rounds and noises `v_i` into `Z_{2^b}`; secure
//! aggregation sums the vectors; the coordinator decodes the sum and divides by the number of
//! survivors, which it knows.

use medfl_dp::ddp::granularity_for_bits;
use medfl_dp::{DdpConfig, DdpPlan};
use rand::CryptoRng;
use serde::Serialize;

use crate::config::{DdgParams, RoundConfig};
use crate::error::ProtocolError;

/// The update encoding both sides derive from a round config.
#[derive(Debug, Clone)]
pub struct UpdateCodec {
    plan: DdpPlan,
    params: usize,
    clip: f64,
}

/// Probability, over the distributed noise, that an honest aggregate fails [`RangeCheck`]
/// (`2^-40`, split evenly between the coordinate and the norm bounds).
pub const RANGE_FAILURE_PROBABILITY: f64 = 9.094_947_017_729_282e-13;
/// Most out-of-range coordinate indices a [`RangeCheck`] lists (it counts them all).
pub const MAX_FLAGGED: usize = 32;

/// Whether an aggregate lies where the clipped, noised updates of its survivors can put it.
///
/// Each honest client's rounded vector has L2 norm at most `Δ₂` integer steps (conditional
/// rounding checks it exactly), so `s` of them sum to at most `s·Δ₂` in L2, and so in every
/// coordinate of the un-rotated sum (the rotation is orthogonal). The noise is a sum of `s`
/// discrete Gaussians per coordinate, sub-Gaussian with proxy `s·σ²` in every direction:
/// a coordinate exceeds `σ√(2s·ln(4d/p))` with probability at most `p/(2d)` (union bound over
/// the `d` coordinates), and the norm exceeds `σ√s·√(d' + 2√(d'x) + 2x)`, `x = ln(2/p)`, with
/// probability at most `p/2` (Laurent and Massart's chi-square bound, which needs only the
/// moment generating function a sub-Gaussian vector dominates). With
/// `p =` [`RANGE_FAILURE_PROBABILITY`], an honest sum fails either bound with probability at
/// most `p`; a member that wraps the modulus (sends anything but an encoding) is caught unless
/// its contribution stays within these bounds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RangeCheck {
    /// Survivors the bounds are computed for.
    pub survivors: usize,
    /// Bound on each decoded coordinate, in update units.
    pub coordinate_bound: f64,
    /// The first coordinates over the bound (at most [`MAX_FLAGGED`]).
    pub out_of_range: Vec<u64>,
    /// How many coordinates are over the bound.
    pub out_of_range_count: u64,
    /// L2 norm of the centred sum, in integer steps.
    pub norm: f64,
    /// Its bound.
    pub norm_bound: f64,
}

impl RangeCheck {
    /// Whether every coordinate and the norm are within their bounds.
    pub fn ok(&self) -> bool {
        self.out_of_range_count == 0 && self.norm <= self.norm_bound
    }
}

impl std::fmt::Display for RangeCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} coordinates beyond ±{:.3e} (first {:?}), norm {:.3e} of at most {:.3e}, for {} survivors",
            self.out_of_range_count,
            self.coordinate_bound,
            self.out_of_range,
            self.norm,
            self.norm_bound,
            self.survivors
        )
    }
}

/// What the coordinator learns from one aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAggregate {
    /// `Σ clip(Δ_i) / survivors`: the mean update (noisy).
    pub mean_update: Vec<f64>,
}

/// The distributed-discrete-Gaussian plan of a round: `params` coordinates, `participants`
/// inputs at most, the noise split over `ddg.min_clients`; the granularity is the finest the ring
/// width allows. The privacy figures do not depend on `seed` (it only rotates).
pub fn ddg_plan(
    ddg: &DdgParams,
    params: usize,
    participants: u64,
    seed: [u8; 32],
) -> Result<DdpPlan, ProtocolError> {
    let mut template = DdpConfig::new(
        params,
        ddg.min_clients,
        ddg.update_clip,
        ddg.noise_multiplier,
        1.0,
    );
    template.max_clients = participants;
    template.granularity = granularity_for_bits(&template, ddg.bits)?;
    template.bits = Some(ddg.bits);
    Ok(DdpPlan::new(template, seed)?)
}

impl UpdateCodec {
    /// Derives the encoding (granularity, ring width, rotation) from the round config.
    pub fn new(config: &RoundConfig) -> Result<Self, ProtocolError> {
        let params = config.model.param_count();
        let plan = ddg_plan(
            &config.ddg,
            params,
            config.participants.len() as u64,
            config.public_seed,
        )?;
        Ok(UpdateCodec {
            plan,
            params,
            clip: config.ddg.update_clip,
        })
    }

    /// Length of the encoded vector (the secure-aggregation vector length).
    pub fn encoded_len(&self) -> usize {
        self.plan.encoded_len()
    }

    /// Ring width `b`.
    pub fn bits(&self) -> u32 {
        self.plan.bits()
    }

    /// The plan, for its privacy figures.
    pub fn plan(&self) -> &DdpPlan {
        &self.plan
    }

    /// Encodes `trained − global`, clipped.
    pub fn encode<R: CryptoRng + ?Sized>(
        &self,
        global: &[f32],
        trained: &[f32],
        rng: &mut R,
    ) -> Result<Vec<u64>, ProtocolError> {
        if global.len() != self.params || trained.len() != self.params {
            return Err(ProtocolError::invalid(
                "update",
                format!(
                    "{} / {} parameters, expected {}",
                    global.len(),
                    trained.len(),
                    self.params
                ),
            ));
        }
        let mut v: Vec<f64> = trained
            .iter()
            .zip(global)
            .map(|(t, g)| f64::from(*t) - f64::from(*g))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err(ProtocolError::invalid("update", "non-finite parameter"));
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm > self.clip {
            let scale = self.clip / norm;
            v.iter_mut().for_each(|x| *x *= scale);
        }
        Ok(self.plan.encode(&v, rng)?)
    }

    /// From the aggregate of `survivors` updates to their mean update.
    pub fn decode(&self, sum: &[u64], survivors: usize) -> Result<DecodedAggregate, ProtocolError> {
        if survivors == 0 {
            return Err(ProtocolError::invalid("survivors", "an empty aggregate"));
        }
        let s = self.plan.decode_sum(sum)?;
        self.finish_decode(s, survivors)
    }

    /// [`Self::decode`], and whether the sum is in the range `survivors` honest updates can
    /// reach ([`RangeCheck`]).
    pub fn decode_checked(
        &self,
        sum: &[u64],
        survivors: usize,
    ) -> Result<(DecodedAggregate, RangeCheck), ProtocolError> {
        if survivors == 0 {
            return Err(ProtocolError::invalid("survivors", "an empty aggregate"));
        }
        let s = self.plan.decode_sum(sum)?;
        let sf = survivors as f64;
        let p = RANGE_FAILURE_PROBABILITY;
        let sigma = self.plan.local_sigma();
        let gamma = self.plan.config().granularity;
        let signal = sf * self.plan.l2_sensitivity();
        let d = s.len().max(1) as f64;
        let coordinate_bound = gamma * (signal + sigma * (2.0 * sf * (4.0 * d / p).ln()).sqrt());
        let mut out_of_range = Vec::new();
        let mut out_of_range_count = 0u64;
        for (j, v) in s.iter().enumerate() {
            if !v.is_finite() || v.abs() > coordinate_bound {
                out_of_range_count += 1;
                if out_of_range.len() < MAX_FLAGGED {
                    out_of_range.push(j as u64);
                }
            }
        }
        let dp = sum.len() as f64;
        let x = (2.0 / p).ln();
        let norm_bound = signal + sigma * sf.sqrt() * (dp + 2.0 * (dp * x).sqrt() + 2.0 * x).sqrt();
        let half = 1u64 << (self.bits() - 1);
        let modulus = 2.0 * half as f64;
        let norm = sum
            .iter()
            .map(|&v| {
                let c = if v >= half {
                    v as f64 - modulus
                } else {
                    v as f64
                };
                c * c
            })
            .sum::<f64>()
            .sqrt();
        let range = RangeCheck {
            survivors,
            coordinate_bound,
            out_of_range,
            out_of_range_count,
            norm,
            norm_bound,
        };
        Ok((self.finish_decode(s, survivors)?, range))
    }

    fn finish_decode(
        &self,
        mut s: Vec<f64>,
        survivors: usize,
    ) -> Result<DecodedAggregate, ProtocolError> {
        if s.len() != self.params {
            return Err(ProtocolError::invalid("aggregate", "wrong length"));
        }
        let n = survivors as f64;
        s.iter_mut().for_each(|x| *x /= n);
        Ok(DecodedAggregate { mean_update: s })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DdgParams, SecAggParams, Strategy, TrainingParams};
    use medfl_ledger::{AgreementId, Hash, MemberId, Timestamp};
    use medfl_modelspec::AutoencoderConfig;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn config(n: usize) -> RoundConfig {
        RoundConfig {
            agreement: AgreementId::new("a").unwrap(),
            round: 1,
            session: 9,
            issued_at: Timestamp(0),
            previous_model: Hash([0; 32]),
            model: AutoencoderConfig {
                inputs: 6,
                hidden: 5,
                latent: 2,
            },
            participants: (0..n)
                .map(|i| MemberId::new(format!("h{i}")).unwrap())
                .collect(),
            epsilon_after: vec![1.0; n],
            training: TrainingParams::default(),
            ddg: DdgParams {
                noise_multiplier: 1e-5,
                ..DdgParams::default()
            },
            secagg: SecAggParams::default(),
            strategy: Strategy::default(),
            public_seed: [3; 32],
            consent_height: 0,
        }
    }

    #[test]
    fn the_mean_survives_encoding_and_modular_sum() {
        let cfg = config(3);
        cfg.check().unwrap();
        let codec = UpdateCodec::new(&cfg).unwrap();
        let d = cfg.model.param_count();
        let global = vec![0.5f32; d];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        // Deltas 0.01, 0.02, 0.03 everywhere: every hospital counts once.
        let mut sum = vec![0u64; codec.encoded_len()];
        for i in 0..3 {
            let trained: Vec<f32> = global.iter().map(|g| g + 0.01 * (i + 1) as f32).collect();
            let x = codec.encode(&global, &trained, &mut rng).unwrap();
            assert_eq!(x.len(), codec.encoded_len());
            codec.plan().add_mod(&mut sum, &x).unwrap();
        }
        let (agg, range) = codec.decode_checked(&sum, 3).unwrap();
        assert!(range.ok(), "an honest sum: {range}");
        assert_eq!(agg.mean_update.len(), d);
        for m in &agg.mean_update {
            assert!((m - 0.02).abs() < 2e-3, "{m} vs 0.02");
        }
        assert!(codec.decode(&sum, 0).is_err());
    }

    #[test]
    fn a_wrapped_sum_is_flagged_and_an_honest_one_is_not() {
        let cfg = config(3);
        let codec = UpdateCodec::new(&cfg).unwrap();
        let d = cfg.model.param_count();
        let global = vec![0f32; d];
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut honest = vec![0u64; codec.encoded_len()];
        for _ in 0..3 {
            // Updates far past the clip: the largest an honest hospital can send.
            let trained = vec![100f32; d];
            let x = codec.encode(&global, &trained, &mut rng).unwrap();
            codec.plan().add_mod(&mut honest, &x).unwrap();
        }
        let (_, range) = codec.decode_checked(&honest, 3).unwrap();
        assert!(range.ok(), "{range}");
        // Two honest members and one that skips the encoder and wraps every coordinate by a
        // quarter of the ring.
        let mut wrapped = vec![0u64; codec.encoded_len()];
        for _ in 0..2 {
            let x = codec.encode(&global, &vec![0.01f32; d], &mut rng).unwrap();
            codec.plan().add_mod(&mut wrapped, &x).unwrap();
        }
        let evil = vec![1u64 << (codec.bits() - 2); codec.encoded_len()];
        codec.plan().add_mod(&mut wrapped, &evil).unwrap();
        let (_, range) = codec.decode_checked(&wrapped, 3).unwrap();
        assert!(!range.ok(), "{range}");
        assert!(range.norm > range.norm_bound);
    }

    #[test]
    fn a_huge_update_is_clipped() {
        let cfg = config(3);
        let codec = UpdateCodec::new(&cfg).unwrap();
        let d = cfg.model.param_count();
        let global = vec![0f32; d];
        let trained = vec![1e6f32; d];
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let x = codec.encode(&global, &trained, &mut rng).unwrap();
        let agg = codec.decode(&x, 1).unwrap();
        let norm = agg.mean_update.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!(norm <= cfg.ddg.update_clip * 1.01, "norm {norm}");
        assert!(codec.encode(&global, &[f32::NAN; 3], &mut rng).is_err());
    }
}

//! Privacy budgets and the DP parameters a round anchor records.
//!
//! Budgets are `(epsilon, delta)` per member per data-use agreement. A round anchor records each
//! participant's *cumulative* epsilon under the agreement, as computed by the accountant over all
//! its rounds so far, not a per-round increment: privacy composes by adding Rényi divergences or
//! convolving loss distributions, not by adding epsilons, so summing per-round epsilons would
//! overstate the spend. The contract recomputes the cumulative figure from the DP parameters
//! anchored for every round the member joined (`medfl_dp::PrivacyLoss`, the tighter of RDP and
//! PLD), refuses a claim that differs, and checks it never goes down and never exceeds the budget.

use serde::{Deserialize, Serialize};

/// Checks that a float is finite and within `[lo, hi]`; a `lo` of `f64::MIN_POSITIVE` means
/// "above zero", and is said so.
pub(crate) fn check_range(name: &str, v: f64, lo: f64, hi: f64) -> Result<(), String> {
    if !v.is_finite() || v < lo || v > hi {
        let range = if lo == f64::MIN_POSITIVE {
            // A positive subnormal is below the bound too; say why.
            let normal = if v > 0.0 && v < lo {
                ", not subnormal"
            } else {
                ""
            };
            format!("(0, {hi}]{normal}")
        } else {
            format!("[{lo}, {hi}]")
        };
        // `{v:?}`: the shortest form that reads back exactly (`1e-310`, not 310 digits).
        return Err(format!("{name} = {v:?} must be a finite number in {range}"));
    }
    Ok(())
}

/// An `(epsilon, delta)` differential-privacy budget.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyBudget {
    /// Total epsilon a member may spend under the agreement.
    pub epsilon: f64,
    /// The delta every round's guarantee is stated at.
    pub delta: f64,
}

impl PrivacyBudget {
    /// Checks `0 < epsilon <= 1000` and `0 <= delta < 1`.
    pub fn check(&self) -> Result<(), String> {
        check_range("epsilon", self.epsilon, f64::MIN_POSITIVE, 1000.0)?;
        check_range("delta", self.delta, 0.0, 1.0)?;
        if self.delta >= 1.0 {
            return Err("delta must be below 1".into());
        }
        Ok(())
    }
}

/// Which mechanism protected a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DpMechanism {
    /// Record-level DP-SGD inside each hospital (Abadi et al. 2016).
    DpSgd,
    /// Member-level distributed discrete Gaussian noise summed under secure aggregation
    /// (Kairouz, Liu & Steinke 2021).
    DistributedDiscreteGaussian,
    /// Both of the above.
    DpSgdAndDistributedDiscreteGaussian,
}

/// The DP parameters of a round, enough for an auditor to recompute the spend.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpParams {
    /// Which mechanism.
    pub mechanism: DpMechanism,
    /// Noise standard deviation divided by the clipping norm.
    pub noise_multiplier: f64,
    /// Poisson sampling rate of DP-SGD (1 for the distributed mechanism alone).
    pub sampling_rate: f64,
    /// Noisy steps taken in the round.
    pub steps: u64,
    /// L2 clipping norm.
    pub clip_norm: f64,
    /// The delta the epsilons are stated at.
    pub delta: f64,
}

impl DpParams {
    /// Checks ranges: multiplier and clip norm positive, rate in `(0, 1]`, delta in `[0, 1)`.
    pub fn check(&self) -> Result<(), String> {
        check_range(
            "noise_multiplier",
            self.noise_multiplier,
            f64::MIN_POSITIVE,
            1e6,
        )?;
        check_range("sampling_rate", self.sampling_rate, f64::MIN_POSITIVE, 1.0)?;
        check_range("clip_norm", self.clip_norm, f64::MIN_POSITIVE, 1e12)?;
        check_range("delta", self.delta, 0.0, 1.0)?;
        if self.delta >= 1.0 {
            return Err("delta must be below 1".into());
        }
        if self.steps == 0 {
            return Err("steps must be at least 1".into());
        }
        Ok(())
    }
}

/// A secure-aggregation or distributed-noise parameter an agreement puts a floor under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Floor {
    /// Neighbours per client in the SecAgg+ graph.
    Neighbours,
    /// Shamir threshold within a neighbourhood.
    Threshold,
    /// The threshold must exceed half the degree, or a server can split a neighbourhood in
    /// two groups that each reconstruct a different secret of one client.
    ThresholdMajority,
    /// Fewest survivors the distributed noise is calibrated for.
    Survivors,
    /// Ring width of secure aggregation.
    Bits,
    /// Noise multiplier of the distributed discrete Gaussian.
    NoiseMultiplier,
}

impl std::fmt::Display for Floor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Floor::Neighbours => "neighbours",
            Floor::Threshold => "threshold",
            Floor::ThresholdMajority => "threshold majority (2t > degree)",
            Floor::Survivors => "survivors",
            Floor::Bits => "bits",
            Floor::NoiseMultiplier => "noise multiplier",
        })
    }
}

/// A parameter below its floor: which, the value, and the least the agreement allows.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct FloorViolation {
    /// Which parameter.
    pub floor: Floor,
    /// Its value in the round.
    pub value: f64,
    /// The least allowed (for [`Floor::ThresholdMajority`], the degree the threshold must
    /// exceed half of).
    pub minimum: f64,
}

impl std::fmt::Display for FloorViolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.floor {
            Floor::ThresholdMajority => write!(
                f,
                "threshold {} is not above half the degree {}",
                self.value, self.minimum
            ),
            floor => write!(
                f,
                "{floor} {} is below the floor {}",
                self.value, self.minimum
            ),
        }
    }
}

/// The secure-aggregation and distributed-noise parameters a round ran with, as anchored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationParams {
    /// Degree of the SecAgg+ neighbour graph (after resolving defaults).
    pub neighbours: u32,
    /// Shamir threshold within a neighbourhood (after resolving defaults).
    pub threshold: u32,
    /// Fewest survivors the distributed noise is calibrated for.
    pub min_survivors: u64,
    /// Ring width `b` of `Z_{2^b}`.
    pub bits: u32,
    /// Noise std of the sum over the clipping bound, member level.
    pub noise_multiplier: f64,
}

/// The weakest [`AggregationParams`] an agreement allows. Safe defaults apply to a consortium
/// file that does not state them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationFloors {
    /// Least graph degree.
    pub min_neighbours: u32,
    /// Least Shamir threshold (and it must exceed half the degree in any case).
    pub min_threshold: u32,
    /// Least number of survivors the noise may be calibrated for (and a round needs).
    pub min_survivors: u64,
    /// Least ring width.
    pub min_bits: u32,
    /// Least member-level noise multiplier.
    pub min_noise_multiplier: f64,
}

impl Default for AggregationFloors {
    fn default() -> Self {
        AggregationFloors {
            min_neighbours: 2,
            min_threshold: 2,
            min_survivors: 3,
            min_bits: 16,
            min_noise_multiplier: 0.01,
        }
    }
}

/// Floors no agreement may go under: below them a Shamir share is the secret itself, or the
/// sum of two survivors gives each the other's update.
const ABSOLUTE_FLOORS: AggregationFloors = AggregationFloors {
    min_neighbours: 2,
    min_threshold: 2,
    min_survivors: 2,
    min_bits: 8,
    min_noise_multiplier: f64::MIN_POSITIVE,
};

impl AggregationFloors {
    /// Checks the floors are themselves sound (no agreement may allow a threshold of 1).
    pub fn check(&self) -> Result<(), String> {
        let a = ABSOLUTE_FLOORS;
        if self.min_neighbours < a.min_neighbours
            || self.min_threshold < a.min_threshold
            || self.min_survivors < a.min_survivors
        {
            return Err(format!(
                "floors: neighbours, threshold and survivors must be at least {}, {}, {}",
                a.min_neighbours, a.min_threshold, a.min_survivors
            ));
        }
        if !(a.min_bits..=62).contains(&self.min_bits) {
            return Err(format!("floors: min_bits must be in {}..=62", a.min_bits));
        }
        check_range(
            "floors: min_noise_multiplier",
            self.min_noise_multiplier,
            a.min_noise_multiplier,
            1e6,
        )
    }

    /// The first parameter of `p` below its floor, if any.
    pub fn admits(&self, p: &AggregationParams) -> Result<(), FloorViolation> {
        let below = |floor, value: f64, minimum: f64| {
            if value.is_nan() || value < minimum {
                Err(FloorViolation {
                    floor,
                    value,
                    minimum,
                })
            } else {
                Ok(())
            }
        };
        below(
            Floor::Neighbours,
            f64::from(p.neighbours),
            f64::from(self.min_neighbours),
        )?;
        below(
            Floor::Threshold,
            f64::from(p.threshold),
            f64::from(self.min_threshold),
        )?;
        if 2 * u64::from(p.threshold) <= u64::from(p.neighbours) {
            return Err(FloorViolation {
                floor: Floor::ThresholdMajority,
                value: f64::from(p.threshold),
                minimum: f64::from(p.neighbours),
            });
        }
        below(
            Floor::Survivors,
            p.min_survivors as f64,
            self.min_survivors as f64,
        )?;
        below(Floor::Bits, f64::from(p.bits), f64::from(self.min_bits))?;
        below(
            Floor::NoiseMultiplier,
            p.noise_multiplier,
            self.min_noise_multiplier,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_range_above_zero_is_stated_plainly() {
        let e = PrivacyBudget {
            epsilon: 1e9,
            delta: 1e-6,
        }
        .check()
        .unwrap_err();
        assert_eq!(
            e,
            "epsilon = 1000000000.0 must be a finite number in (0, 1000]"
        );
        let e = check_range("epsilon", 1e-310, f64::MIN_POSITIVE, 1000.0).unwrap_err();
        assert_eq!(
            e,
            "epsilon = 1e-310 must be a finite number in (0, 1000], not subnormal"
        );
        let e = check_range("delta", 2.0, 0.0, 1.0).unwrap_err();
        assert_eq!(e, "delta = 2.0 must be a finite number in [0, 1]");
    }

    #[test]
    fn bad_budgets_and_params_are_refused() {
        assert!(
            PrivacyBudget {
                epsilon: 8.0,
                delta: 1e-5
            }
            .check()
            .is_ok()
        );
        for (e, d) in [
            (0.0, 1e-5),
            (f64::NAN, 1e-5),
            (8.0, 1.0),
            (8.0, -1e-9),
            (f64::INFINITY, 0.0),
        ] {
            assert!(
                PrivacyBudget {
                    epsilon: e,
                    delta: d
                }
                .check()
                .is_err(),
                "{e} {d}"
            );
        }
        let ok = DpParams {
            mechanism: DpMechanism::DpSgd,
            noise_multiplier: 1.1,
            sampling_rate: 0.01,
            steps: 100,
            clip_norm: 1.0,
            delta: 1e-5,
        };
        assert!(ok.check().is_ok());
        assert!(
            DpParams {
                sampling_rate: 1.5,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(
            DpParams {
                noise_multiplier: -1.0,
                ..ok
            }
            .check()
            .is_err()
        );
        assert!(DpParams { steps: 0, ..ok }.check().is_err());
    }

    #[test]
    fn floors_admit_what_meets_them_and_name_what_does_not() {
        let floors = AggregationFloors::default();
        floors.check().unwrap();
        let ok = AggregationParams {
            neighbours: 4,
            threshold: 3,
            min_survivors: 3,
            bits: 32,
            noise_multiplier: 0.5,
        };
        floors.admits(&ok).unwrap();
        for (p, floor) in [
            (
                AggregationParams {
                    neighbours: 1,
                    threshold: 1,
                    ..ok
                },
                Floor::Neighbours,
            ),
            (
                AggregationParams {
                    neighbours: 4,
                    threshold: 2,
                    ..ok
                },
                Floor::ThresholdMajority,
            ),
            (
                AggregationParams {
                    min_survivors: 2,
                    ..ok
                },
                Floor::Survivors,
            ),
            (AggregationParams { bits: 8, ..ok }, Floor::Bits),
            (
                AggregationParams {
                    noise_multiplier: f64::NAN,
                    ..ok
                },
                Floor::NoiseMultiplier,
            ),
        ] {
            assert_eq!(floors.admits(&p).map_err(|v| v.floor), Err(floor));
        }
        let weak = AggregationFloors {
            min_threshold: 1,
            ..floors
        };
        assert!(weak.check().is_err(), "no agreement may allow threshold 1");
    }
}

//! The distributed discrete Gaussian end to end: clients encode, the modular sum is decoded, and
//! the result is the clipped true sum plus noise of the intended variance.

use medfl_dp::clip::clip_l2;
use medfl_dp::{DdpConfig, DdpPlan, DpError, MemberBudget, PrivacyBudget, PrivacyEvent};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Client updates with very different norms, so some are clipped and some are not.
fn updates(n: usize, d: usize, seed: u64) -> Vec<Vec<f64>> {
    use rand::Rng;
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let scale = 0.2 + i as f64 * 0.15;
            (0..d)
                .map(|_| ((rng.next_u32() as f64 / u32::MAX as f64) - 0.5) * scale / 8.0)
                .collect()
        })
        .collect()
}

/// Encodes every client, sums modulo 2^b, decodes; returns (decoded, clipped true sum).
fn run_round(plan: &DdpPlan, xs: &[Vec<f64>], seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut acc = vec![0u64; plan.encoded_len()];
    let mut truth = vec![0.0; xs[0].len()];
    for (i, x) in xs.iter().enumerate() {
        let mut rng = ChaCha20Rng::seed_from_u64(seed * 1000 + i as u64);
        let enc = plan.encode(x, &mut rng).unwrap();
        assert_eq!(enc.len(), plan.encoded_len());
        assert!(enc.iter().all(|&v| v < 1u64 << plan.bits()));
        plan.add_mod(&mut acc, &enc).unwrap();
        let mut c = x.clone();
        clip_l2(&mut c, plan.config().clip).unwrap();
        truth.iter_mut().zip(&c).for_each(|(t, v)| *t += v);
    }
    (plan.decode_sum(&acc).unwrap(), truth)
}

#[test]
fn recovered_sum_is_clipped_sum_plus_intended_noise() {
    let (n, d) = (20usize, 3000usize);
    let xs = updates(n, d, 1);
    let config = DdpConfig::new(d, n as u64, 1.0, 0.8, 2e-3);
    let plan = DdpPlan::new(config, [5; 32]).unwrap();
    assert!(plan.wrap_probability_bound() <= 2f64.powi(-40));
    let (got, truth) = run_round(&plan, &xs, 1);
    let resid: Vec<f64> = got.iter().zip(&truth).map(|(g, t)| g - t).collect();
    let df = d as f64;
    let mean = resid.iter().sum::<f64>() / df;
    let var = resid.iter().map(|r| r * r).sum::<f64>() / df;
    // Intended: the sum's noise std is z·c = 0.8 (using the effective, rounded-up sigma), plus
    // the rounding error's variance, at most n·γ²/4 per coordinate (negligible here).
    let gamma = plan.config().granularity;
    let intended = n as f64 * (plan.local_sigma() * gamma).powi(2);
    assert!((intended.sqrt() - 0.8).abs() < 1e-6);
    let rounding = n as f64 * gamma * gamma / 4.0;
    // The residual coordinates are (close to) independent with variance `intended`: the sample
    // variance has relative standard error √(2/d) ≈ 2.6%; allow 4 of them.
    let tol = 4.0 * (2.0 / df).sqrt() * intended;
    assert!(
        var > intended - tol && var < intended + rounding + tol,
        "residual variance {var} vs intended {intended}"
    );
    assert!(
        mean.abs() < 4.0 * (intended / df).sqrt(),
        "residual mean {mean}"
    );
    // The signal is really there: the decoded sum correlates with the truth.
    let dot: f64 = got.iter().zip(&truth).map(|(g, t)| g * t).sum();
    let tt: f64 = truth.iter().map(|t| t * t).sum();
    assert!(
        (dot / tt - 1.0).abs() < 0.1,
        "regression slope {}",
        dot / tt
    );
}

#[test]
fn noiseless_limit_recovers_the_clipped_sum() {
    // Tiny noise multiplier (σ = 1/2 step, the minimum) and fine granularity: the decoded sum is
    // the clipped sum up to rounding and that small noise.
    let (n, d) = (8usize, 500usize);
    let xs = updates(n, d, 2);
    let gamma = 1e-5;
    let z = 0.5 * gamma * (n as f64).sqrt();
    let plan = DdpPlan::new(DdpConfig::new(d, n as u64, 1.0, z, gamma), [1; 32]).unwrap();
    let (got, truth) = run_round(&plan, &xs, 2);
    let worst = got
        .iter()
        .zip(&truth)
        .map(|(g, t)| (g - t).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "max error {worst}");
}

#[test]
fn too_small_a_bit_width_is_a_typed_error() {
    let mut config = DdpConfig::new(1000, 50, 1.0, 1.0, 1e-3);
    config.bits = Some(12);
    match DdpPlan::new(config.clone(), [0; 32]) {
        Err(DpError::BitWidthTooSmall {
            bits, wrap_bound, ..
        }) => {
            assert_eq!(bits, 12);
            assert!(wrap_bound > 2f64.powi(-40));
        }
        other => panic!("expected BitWidthTooSmall, got {other:?}"),
    }
    // The automatic choice is the smallest width that meets the bound.
    config.bits = None;
    let auto = DdpPlan::new(config.clone(), [0; 32]).unwrap();
    let b = auto.bits();
    config.bits = Some(b - 1);
    assert!(matches!(
        DdpPlan::new(config.clone(), [0; 32]),
        Err(DpError::BitWidthTooSmall { .. })
    ));
    config.bits = Some(b);
    assert_eq!(DdpPlan::new(config, [0; 32]).unwrap().bits(), b);
}

#[test]
fn decode_rejects_values_outside_the_ring() {
    let plan = DdpPlan::new(DdpConfig::new(10, 3, 1.0, 1.0, 1e-2), [0; 32]).unwrap();
    let mut sum = vec![0u64; plan.encoded_len()];
    sum[2] = 1u64 << plan.bits();
    assert!(matches!(
        plan.decode_sum(&sum),
        Err(DpError::OutOfRange { index: 2, .. })
    ));
    assert!(plan.decode_sum(&[0; 3]).is_err());
    assert!(plan.decode_mean(&vec![0; plan.encoded_len()], 0).is_err());
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    assert!(matches!(
        plan.encode(&[0.0; 9], &mut rng),
        Err(DpError::LengthMismatch { .. })
    ));
    assert!(plan.encode(&[f64::NAN; 10], &mut rng).is_err());
}

#[test]
fn bad_parameters_are_typed_errors() {
    let ok = DdpConfig::new(100, 10, 1.0, 1.0, 1e-2);
    assert!(DdpPlan::new(ok.clone(), [0; 32]).is_ok());
    let cases: Vec<(&str, DdpConfig)> = vec![
        (
            "zero clients",
            DdpConfig {
                clients: 0,
                ..ok.clone()
            },
        ),
        (
            "zero dim",
            DdpConfig {
                dim: 0,
                ..ok.clone()
            },
        ),
        (
            "negative sigma",
            DdpConfig {
                noise_multiplier: -1.0,
                ..ok.clone()
            },
        ),
        (
            "NaN sigma",
            DdpConfig {
                noise_multiplier: f64::NAN,
                ..ok.clone()
            },
        ),
        (
            "NaN clip",
            DdpConfig {
                clip: f64::NAN,
                ..ok.clone()
            },
        ),
        (
            "zero clip",
            DdpConfig {
                clip: 0.0,
                ..ok.clone()
            },
        ),
        (
            "zero granularity",
            DdpConfig {
                granularity: 0.0,
                ..ok.clone()
            },
        ),
        (
            "beta 1",
            DdpConfig {
                beta: 1.0,
                ..ok.clone()
            },
        ),
        (
            "bits 1",
            DdpConfig {
                bits: Some(1),
                ..ok.clone()
            },
        ),
        (
            "bits 64",
            DdpConfig {
                bits: Some(64),
                ..ok.clone()
            },
        ),
        (
            "wrap 0",
            DdpConfig {
                max_wrap_probability: 0.0,
                ..ok.clone()
            },
        ),
        // local sigma z c/(γ√n) below 1/2: the distributed bound does not apply.
        (
            "sigma < 1/2",
            DdpConfig {
                granularity: 1.0,
                ..ok.clone()
            },
        ),
    ];
    for (name, c) in cases {
        assert!(DdpPlan::new(c, [0; 32]).is_err(), "{name}");
    }
}

#[test]
fn budget_refuses_the_round_that_would_overspend() {
    let plan = DdpPlan::new(DdpConfig::new(1000, 20, 1.0, 1.0, 1e-3), [3; 32]).unwrap();
    let round = PrivacyEvent::DistributedDiscreteGaussian {
        privacy: plan.privacy(),
        rounds: 1,
    };
    let mut member = MemberBudget::new(PrivacyBudget::new(8.0, 1e-6).unwrap());
    let mut rounds = 0;
    while !member.would_exceed(&round).unwrap() {
        member.charge(&round).unwrap();
        rounds += 1;
        assert!(rounds < 1000);
    }
    assert!(rounds >= 1);
    let spent = member.spent().unwrap();
    assert!(spent <= 8.0);
    assert!(matches!(
        member.charge(&round),
        Err(DpError::BudgetExceeded { .. })
    ));
    assert_eq!(member.spent().unwrap(), spent);
}

#[test]
fn granularity_for_bits_is_the_finest_that_fits() {
    use medfl_dp::ddp::granularity_for_bits;
    let template = DdpConfig::new(10_000, 50, 1.0, 1.0, 1.0);
    let gamma = granularity_for_bits(&template, 16).unwrap();
    let with = |g: f64, bits: Option<u32>| DdpConfig {
        granularity: g,
        bits,
        ..template.clone()
    };
    let plan = DdpPlan::new(with(gamma, Some(16)), [0; 32]).unwrap();
    assert!(plan.wrap_probability_bound() <= 2f64.powi(-40));
    assert!(DdpPlan::new(with(gamma, None), [0; 32]).unwrap().bits() <= 16);
    // 1% finer no longer fits in 16 bits.
    assert!(matches!(
        DdpPlan::new(with(gamma * 0.99, Some(16)), [0; 32]),
        Err(DpError::BitWidthTooSmall { .. })
    ));
    // More bits allow a finer grid; far too few bits are a typed error.
    assert!(granularity_for_bits(&template, 20).unwrap() < gamma);
    assert!(matches!(
        granularity_for_bits(&template, 6),
        Err(DpError::BitWidthTooSmall { .. })
    ));
}

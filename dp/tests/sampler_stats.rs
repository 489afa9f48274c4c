//! Statistical checks of the exact samplers against exact moments, tails, the exact mass function,
//! and opendp's reference implementation of the same algorithm.

mod common;

use common::{bin, chi2_quantile, edges_for, exact_bin_probs, exact_moments, exact_tail};
use medfl_dp::{DiscreteGaussian, LatticeGaussian};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Mean within 4 standard errors of 0 and variance within 4 standard errors of the exact one.
fn check_moments(sigma: f64, n: usize, seed: u64) {
    let s = DiscreteGaussian::new(sigma).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut xs = vec![0i64; n];
    s.fill(&mut rng, &mut xs);
    let nf = n as f64;
    let mean = xs.iter().map(|&x| x as f64).sum::<f64>() / nf;
    let var = xs.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / nf;
    let (v, m4) = exact_moments(s.sigma());
    let se_mean = (v / nf).sqrt();
    let se_var = ((m4 - v * v) / nf).sqrt();
    assert!(
        mean.abs() < 4.0 * se_mean,
        "sigma {sigma}: mean {mean} (se {se_mean})"
    );
    assert!(
        (var - v).abs() < 4.0 * se_var,
        "sigma {sigma}: variance {var} vs exact {v} (se {se_var})"
    );
    // Tails: P(|X| > kσ) for k = 1, 2, 3 within 4 binomial standard errors of the exact value.
    for k in [1.0, 2.0, 3.0] {
        let p = exact_tail(s.sigma(), k * sigma);
        let hits = xs.iter().filter(|&&x| (x as f64).abs() > k * sigma).count() as f64 / nf;
        let se = (p * (1.0 - p) / nf).sqrt().max(1.0 / nf);
        assert!(
            (hits - p).abs() < 4.0 * se,
            "sigma {sigma}: P(|X| > {k} sigma) = {hits} vs exact {p}"
        );
    }
    // Nothing absurd in the far tail: P(|X| > 7σ) < 1e-11, so none of n ≤ 10^6 draws.
    assert!(xs.iter().all(|&x| (x as f64).abs() <= 7.0 * sigma + 1.0));
}

#[test]
fn moments_and_tails_1e5() {
    for (i, sigma) in [0.5, 1.0, 3.7, 10.0, 1000.0, 123_456.7]
        .into_iter()
        .enumerate()
    {
        check_moments(sigma, 100_000, i as u64);
    }
}

#[test]
#[ignore = "10^6 samples per sigma: a few seconds in debug; run with --ignored"]
fn moments_and_tails_1e6() {
    for (i, sigma) in [0.5, 1.0, 3.7, 10.0, 1000.0, 123_456.7]
        .into_iter()
        .enumerate()
    {
        check_moments(sigma, 1_000_000, 100 + i as u64);
    }
}

/// Pearson chi-square of `samples` against the exact mass function of `N_Z(0, σ²)`.
fn chi2_against_exact(sigma: f64, samples: &[i64]) -> (f64, f64) {
    let edges = edges_for(sigma);
    let probs = exact_bin_probs(sigma, &edges);
    let mut counts = vec![0f64; probs.len()];
    for &x in samples {
        counts[bin(&edges, x)] += 1.0;
    }
    let n = samples.len() as f64;
    let stat: f64 = counts
        .iter()
        .zip(&probs)
        .filter(|(_, p)| **p * n > 5.0)
        .map(|(c, p)| (c - p * n).powi(2) / (p * n))
        .sum();
    let df = probs.iter().filter(|p| **p * n > 5.0).count() as f64 - 1.0;
    (stat, df)
}

#[test]
fn goodness_of_fit_against_exact_pmf() {
    let mut rng = ChaCha20Rng::seed_from_u64(42);
    for sigma in [0.3, 0.5, 2.0, 6.3, 50.0, 123_456.7] {
        let s = DiscreteGaussian::new(sigma).unwrap();
        let mut xs = vec![0i64; 100_000];
        s.fill(&mut rng, &mut xs);
        let (stat, df) = chi2_against_exact(s.sigma(), &xs);
        // Upper 1e-5 quantile (z = 4.265): a false alarm once in 10^5 runs.
        let crit = chi2_quantile(df, 4.265);
        assert!(stat < crit, "sigma {sigma}: chi2 {stat} > {crit} (df {df})");
    }
}

#[test]
fn two_sample_chi_square_against_opendp() {
    // opendp's sampler (same CKS algorithm on big rationals, OS randomness) is the reference.
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    for sigma in [1.5, 7.0, 40.0] {
        let m = 20_000;
        let scale = dashu::rational::RBig::try_from(sigma).unwrap();
        let theirs: Vec<i64> = (0..m)
            .map(|_| {
                let x = opendp::traits::samplers::sample_discrete_gaussian(scale.clone()).unwrap();
                i64::try_from(x).unwrap()
            })
            .collect();
        let s = DiscreteGaussian::new(sigma).unwrap();
        let mut ours = vec![0i64; 100_000];
        s.fill(&mut rng, &mut ours);
        let edges = edges_for(sigma);
        let mut a = vec![0f64; edges.len() + 1];
        let mut b = vec![0f64; edges.len() + 1];
        ours.iter().for_each(|&x| a[bin(&edges, x)] += 1.0);
        theirs.iter().for_each(|&x| b[bin(&edges, x)] += 1.0);
        let (na, nb) = (ours.len() as f64, theirs.len() as f64);
        let (ka, kb) = ((nb / na).sqrt(), (na / nb).sqrt());
        let mut stat = 0.0;
        let mut bins = 0.0;
        for (x, y) in a.iter().zip(&b) {
            if x + y > 10.0 {
                stat += (ka * x - kb * y).powi(2) / (x + y);
                bins += 1.0;
            }
        }
        let crit = chi2_quantile(bins - 1.0, 4.265);
        assert!(
            stat < crit,
            "sigma {sigma}: two-sample chi2 {stat} > {crit}"
        );
        // And the moments agree: variances within 5 combined standard errors.
        let var = |v: &[i64]| v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / v.len() as f64;
        let (v, m4) = exact_moments(sigma);
        let se = ((m4 - v * v) * (1.0 / na + 1.0 / nb)).sqrt();
        assert!(
            (var(&ours) - var(&theirs)).abs() < 5.0 * se,
            "sigma {sigma}"
        );
    }
}

#[test]
fn same_seed_same_noise() {
    let s = DiscreteGaussian::new(3.0).unwrap();
    let draw = |seed| {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut v = vec![0i64; 1000];
        s.fill(&mut rng, &mut v);
        v
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
}

#[test]
fn bad_sigmas_are_typed_errors() {
    for sigma in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-6, 1e9] {
        assert!(DiscreteGaussian::new(sigma).is_err(), "sigma {sigma}");
    }
    assert!(DiscreteGaussian::from_rational(0, 1).is_err());
    assert!(DiscreteGaussian::from_rational(1, 0).is_err());
    assert!(DiscreteGaussian::from_rational(u64::MAX, 1).is_err());
    assert!(LatticeGaussian::new(-1.0).is_err());
    assert!(LatticeGaussian::new(f64::NAN).is_err());
    assert!(LatticeGaussian::new(0.0).is_err());
}

#[test]
fn rational_variance_is_exact() {
    let s = DiscreteGaussian::from_rational(9, 4).unwrap();
    assert_eq!(s.sigma_squared(), (9, 4));
    assert_eq!(s.sigma(), 1.5);
}

#[test]
fn lattice_gaussian_moments_and_lattice() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    for sigma in [1e-3, 0.7, 1.0, 250.0] {
        let g = LatticeGaussian::new(sigma).unwrap();
        assert!(g.sigma() >= sigma && g.sigma() < sigma * (1.0 + 1e-6));
        let n = 100_000;
        let xs = g.noise_vec(&mut rng, n);
        // Every value is an integer multiple of the lattice step.
        assert!(xs.iter().all(|x| (x / g.step()).fract() == 0.0));
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
        let v = g.sigma() * g.sigma();
        assert!(mean.abs() < 4.0 * (v / n as f64).sqrt(), "sigma {sigma}");
        // The lattice is so fine that the fourth moment is the Gaussian's 3σ⁴.
        assert!(
            (var - v).abs() < 4.0 * (2.0 * v * v / n as f64).sqrt(),
            "sigma {sigma}"
        );
        let mut w = vec![0.123_456_789f64; 8];
        g.privatize(&mut rng, &mut w);
        assert!(w.iter().all(|x| (x / g.step()).fract() == 0.0));
        assert!(g.sensitivity_inflation(1 << 20) < 2e-3 * sigma);
        // The f32 path (DP-SGD gradients) adds noise of the same scale.
        let mut grad = vec![0.0f32; 20_000];
        g.privatize_f32(&mut rng, &mut grad);
        let v32 = grad.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / 20_000.0;
        assert!(
            (v32 - v).abs() < 5.0 * (2.0 * v * v / 20_000.0).sqrt(),
            "sigma {sigma}"
        );
    }
}

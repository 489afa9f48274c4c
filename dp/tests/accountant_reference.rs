//! The RDP accountant against Google's `dp-accounting` 0.6.0 (`dp/tests/data/rdp_reference.csv`,
//! written by `dp/reference/make_table.py`), and the zCDP conversion against opendp's.

use medfl_dp::RdpAccountant;
use medfl_dp::accountant::{DdgPrivacy, zcdp_epsilon};

/// One reference row: `(q, sigma, steps, delta, epsilon)`.
type Row = (f64, f64, u64, f64, f64);

fn reference_rows() -> Vec<Row> {
    let text = include_str!("data/rdp_reference.csv");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('q'))
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 5, "bad row {l}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn matches_dp_accounting_within_one_percent() {
    let rows = reference_rows();
    assert!(rows.len() >= 20);
    let mut worst: f64 = 0.0;
    for (q, sigma, steps, delta, expected) in rows {
        let mut acc = RdpAccountant::new();
        acc.compose_poisson_gaussian(q, sigma, steps).unwrap();
        let eps = acc.epsilon(delta).unwrap();
        let rel = (eps - expected).abs() / expected;
        worst = worst.max(rel);
        assert!(
            rel < 0.01,
            "q {q} sigma {sigma} steps {steps} delta {delta}: {eps} vs dp-accounting {expected}"
        );
    }
    println!("max relative error against dp-accounting 0.6.0: {worst:.3e}");
}

#[test]
fn composition_is_additive() {
    let mut a = RdpAccountant::new();
    a.compose_poisson_gaussian(0.01, 1.1, 600).unwrap();
    a.compose_poisson_gaussian(0.01, 1.1, 400).unwrap();
    let mut b = RdpAccountant::new();
    b.compose_poisson_gaussian(0.01, 1.1, 1000).unwrap();
    let (ea, eb) = (a.epsilon(1e-5).unwrap(), b.epsilon(1e-5).unwrap());
    assert!((ea - eb).abs() < 1e-9 * eb);
}

#[test]
fn zcdp_conversion_matches_opendp() {
    use opendp::combinators::ConcentratedMeasure;
    use opendp::measures::ZeroConcentratedDivergence;
    for rho in [0.01, 0.1, 0.5, 2.0, 10.0] {
        for delta in [1e-5, 1e-7, 1e-9] {
            let ours = zcdp_epsilon(rho, delta).unwrap();
            let theirs = ZeroConcentratedDivergence::convert(rho)
                .unwrap()
                .epsilon(delta)
                .unwrap();
            let rel = (ours - theirs).abs() / theirs;
            assert!(
                rel < 0.01,
                "rho {rho} delta {delta}: {ours} vs opendp {theirs}"
            );
        }
    }
}

#[test]
fn zcdp_events_compose_like_rdp() {
    // ρ-zCDP composed k times is kρ-zCDP; converting on the order grid is close to the
    // continuous optimum (slightly above it, never below).
    let mut acc = RdpAccountant::new();
    acc.compose_zcdp(0.05, 0.0, 10).unwrap();
    let grid = acc.epsilon(1e-6).unwrap();
    let cont = zcdp_epsilon(0.5, 1e-6).unwrap();
    assert!(
        grid >= cont * (1.0 - 1e-9) && grid < cont * 1.01,
        "{grid} vs {cont}"
    );
}

#[test]
fn distributed_discrete_gaussian_approaches_the_gaussian() {
    // Large local sigma: τ ≈ 0 and the bound is the Gaussian's with sensitivity Δ₂ and std √n σ.
    let n = 50u64;
    let sigma = 30.0;
    let l2 = 100.0;
    let p = DdgPrivacy {
        l2_sensitivity: l2,
        l1_sensitivity: l2 * 32.0,
        local_sigma: sigma,
        clients: n,
        dim: 1024,
    };
    let mut ddg = RdpAccountant::new();
    ddg.compose_ddg(&p, 100).unwrap();
    let mut gauss = RdpAccountant::new();
    let z = (n as f64).sqrt() * sigma / l2;
    gauss.compose_poisson_gaussian(1.0, z, 100).unwrap();
    let (a, b) = (ddg.epsilon(1e-6).unwrap(), gauss.epsilon(1e-6).unwrap());
    // Equal at integer orders; fractional orders are charged at the next integer, so the
    // distributed bound is slightly above the Gaussian's, never below.
    assert!(a >= b * (1.0 - 1e-12) && a < b * 1.05, "{a} vs {b}");
    // Small local sigma: the sum is far from a discrete Gaussian and τ costs privacy.
    let small = DdgPrivacy {
        local_sigma: 0.5,
        l2_sensitivity: l2 * 0.5 / sigma,
        ..p
    };
    let mut worse = RdpAccountant::new();
    worse.compose_ddg(&small, 100).unwrap();
    assert!(worse.epsilon(1e-6).unwrap() > a);
}

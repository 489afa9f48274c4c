//! The PLD accountant against Google's `dp-accounting` 0.6.0 `PLDAccountant`
//! (`dp/tests/data/pld_reference.csv`, written by `dp/reference/make_pld_table.py`).

use medfl_dp::RdpAccountant;
use medfl_dp::pld::{DEFAULT_INTERVAL, Pld};

/// One reference row: `(q, sigma, steps, delta, epsilon_pld, epsilon_rdp)`.
type Row = (f64, f64, u64, f64, f64, f64);

fn reference_rows() -> Vec<Row> {
    include_str!("data/pld_reference.csv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('q') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 6, "bad row {l}");
            let num = |i: usize| f[i].parse::<f64>().unwrap();
            (
                num(0),
                num(1),
                f[2].parse().unwrap(),
                num(3),
                num(4),
                num(5),
            )
        })
        .collect()
}

#[test]
fn matches_dp_accounting_pld_within_one_percent_and_never_below_it() {
    let rows = reference_rows();
    assert!(rows.len() >= 20);
    let mut worst: f64 = 0.0;
    println!("| q | σ | steps | δ | dp-accounting PLD | medfl PLD | RDP |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (q, sigma, steps, delta, expected, rdp_expected) in rows {
        let eps = Pld::poisson_gaussian(q, sigma, steps, DEFAULT_INTERVAL)
            .unwrap()
            .epsilon(delta)
            .unwrap();
        let rel = (eps - expected).abs() / expected;
        worst = worst.max(rel);
        // Within 1%, and never meaningfully below dp-accounting: medfl also charges a bound on
        // the FFT's rounding as infinite loss, which shows at tiny δ with many steps.
        assert!(
            eps >= expected * (1.0 - 1e-4),
            "q {q} sigma {sigma} steps {steps} delta {delta}: {eps} below dp-accounting {expected}"
        );
        assert!(
            rel < 0.01,
            "q {q} sigma {sigma} steps {steps} delta {delta}: {eps} vs dp-accounting {expected}"
        );
        // And it is what makes PLD worth having: never looser than RDP on these settings.
        let mut rdp = RdpAccountant::new();
        rdp.compose_poisson_gaussian(q, sigma, steps).unwrap();
        let r = rdp.epsilon(delta).unwrap();
        assert!((r - rdp_expected).abs() < 0.01 * rdp_expected);
        assert!(
            eps <= r,
            "q {q} sigma {sigma} steps {steps}: PLD {eps} above RDP {r}"
        );
        println!("| {q} | {sigma} | {steps} | {delta:e} | {expected:.5} | {eps:.5} | {r:.4} |");
    }
    println!("max relative error against dp-accounting 0.6.0 PLD: {worst:.3e}");
}

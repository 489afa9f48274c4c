//! Shared helpers for the statistical tests: exact discrete Gaussian moments and chi-square
//! quantiles. Included with `mod common;` by the test files that need it.

#![allow(dead_code)]

/// Exact `(variance, fourth moment)` of `N_Z(0, σ²)` by summing the mass function.
pub fn exact_moments(sigma: f64) -> (f64, f64) {
    let reach = (40.0 * sigma).ceil() as i64 + 10;
    let (mut z, mut m2, mut m4) = (0.0, 0.0, 0.0);
    for x in -reach..=reach {
        let xf = x as f64;
        let w = (-xf * xf / (2.0 * sigma * sigma)).exp();
        z += w;
        m2 += w * xf * xf;
        m4 += w * xf.powi(4);
    }
    (m2 / z, m4 / z)
}

/// Exact `P(|X| > k)` for `X ~ N_Z(0, σ²)`.
pub fn exact_tail(sigma: f64, k: f64) -> f64 {
    let reach = (40.0 * sigma).ceil() as i64 + 10;
    let (mut z, mut tail) = (0.0, 0.0);
    for x in -reach..=reach {
        let xf = x as f64;
        let w = (-xf * xf / (2.0 * sigma * sigma)).exp();
        z += w;
        if xf.abs() > k {
            tail += w;
        }
    }
    tail / z
}

/// Exact probability of each bin `[edges[i], edges[i+1])` (first/last bins open-ended).
pub fn exact_bin_probs(sigma: f64, edges: &[i64]) -> Vec<f64> {
    let reach = (40.0 * sigma).ceil() as i64 + 10;
    let mut probs = vec![0.0; edges.len() + 1];
    let mut z = 0.0;
    for x in -reach..=reach {
        let xf = x as f64;
        let w = (-xf * xf / (2.0 * sigma * sigma)).exp();
        z += w;
        probs[bin(edges, x)] += w;
    }
    probs.iter().map(|p| p / z).collect()
}

/// Index of the bin holding `x` for sorted `edges` (bin 0 is `x < edges[0]`).
pub fn bin(edges: &[i64], x: i64) -> usize {
    edges.partition_point(|&e| e <= x)
}

/// Upper `p`-quantile of chi-square with `df` degrees of freedom (Wilson–Hilferty).
pub fn chi2_quantile(df: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Bin edges of width about `σ/2` covering `±4σ` (at least 3 integers apart).
pub fn edges_for(sigma: f64) -> Vec<i64> {
    let w = ((sigma / 2.0).round() as i64).max(1);
    let reach = ((4.0 * sigma).ceil() as i64).max(3);
    let mut e = Vec::new();
    let mut x = -reach;
    while x <= reach {
        e.push(x);
        x += w;
    }
    e
}

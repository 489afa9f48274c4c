//! Differential privacy on the client's hot path: the distributed-discrete-Gaussian encode of a
//! 10^6-element update (clip, randomized Hadamard rotation, scaling, conditional rounding,
//! discrete Gaussian noise), the exact discrete Gaussian sampler per element, and the price of
//! pricing a privacy history with each accountant.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medfl_dp::{DdpConfig, DdpPlan, DiscreteGaussian};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn ddp_encode(c: &mut Criterion) {
    let d = 1_000_000usize;
    let update: Vec<f64> = (0..d).map(|i| ((i as f64) * 0.618).sin() * 1e-3).collect();
    // 100 clients, clip 1, noise multiplier 1, granularity 0.01 (local sigma ~10 integer steps).
    let plan = DdpPlan::new(DdpConfig::new(d, 100, 1.0, 1.0, 1e-2), [9; 32])
        .unwrap_or_else(|e| panic!("plan: {e}"));
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut group = c.benchmark_group("ddp");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(d as u64));
    group.bench_function("encode_1e6", |b| {
        b.iter(|| {
            plan.encode(&update, &mut rng)
                .unwrap_or_else(|e| panic!("encode: {e}"))
        })
    });
    group.finish();
}

fn sampler(c: &mut Criterion) {
    let mut group = c.benchmark_group("discrete_gaussian");
    group.throughput(Throughput::Elements(1 << 16));
    for sigma in [1.0, 10.0, 1000.0] {
        let dg = DiscreteGaussian::new(sigma).unwrap_or_else(|e| panic!("sigma {sigma}: {e}"));
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut out = vec![0i64; 1 << 16];
        group.bench_function(format!("sigma_{sigma}"), |b| {
            b.iter(|| dg.fill(&mut rng, &mut out))
        });
    }
    group.finish();
}

/// Pricing a history, as the ledger, the coordinator and each hospital do once per new history
/// (memoised after): RDP against the PLD accountant, at medfl's default DP-SGD (q = 0.01,
/// σ = 1, 100 steps a round) after 1, 10 and 50 rounds.
fn accountant(c: &mut Criterion) {
    let mut group = c.benchmark_group("accountant");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for rounds in [1u64, 10, 50] {
        let steps = 100 * rounds;
        group.bench_function(format!("rdp_{rounds}_rounds"), |b| {
            b.iter(|| {
                let mut a = medfl_dp::RdpAccountant::new();
                a.compose_poisson_gaussian(0.01, 1.0, steps)
                    .and_then(|()| a.epsilon(1e-6))
                    .unwrap_or_else(|e| panic!("rdp: {e}"))
            })
        });
        group.bench_function(format!("pld_{rounds}_rounds"), |b| {
            b.iter(|| {
                medfl_dp::pld::Pld::poisson_gaussian(0.01, 1.0, steps, 1e-4)
                    .and_then(|p| p.epsilon(1e-6))
                    .unwrap_or_else(|e| panic!("pld: {e}"))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, ddp_encode, sampler, accountant);
criterion_main!(benches);

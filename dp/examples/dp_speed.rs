//! Prints the speed table of the DP client path: a 10^6-element distributed-DP encode (clip,
//! rotate, scale, conditional rounding, discrete Gaussian noise, mod 2^b) and the sampler cost per
//! element, medfl's against opendp's. Run with `cargo run --release -p medfl-dp --example dp_speed`.

use std::time::{Duration, Instant};

use medfl_dp::clip::clip_l2;
use medfl_dp::hadamard::RandomRotation;
use medfl_dp::{DdpConfig, DdpPlan, DiscreteGaussian, DpError};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), or `None` if the clock is unavailable.
/// On a shared machine wall time also counts other jobs' use of the core; CPU time does not.
fn thread_cpu() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// Median CPU time (wall time where CPU time is unavailable) of `runs` calls of `f`.
fn median<F: FnMut()>(runs: usize, mut f: F) -> Duration {
    let mut t: Vec<Duration> = (0..runs)
        .map(|_| {
            let (wall, cpu) = (Instant::now(), thread_cpu());
            f();
            match (cpu, thread_cpu()) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => wall.elapsed(),
            }
        })
        .collect();
    t.sort();
    t[t.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let d = 1_000_000usize;
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let update: Vec<f64> = (0..d).map(|i| ((i as f64) * 0.618).sin() * 1e-3).collect();
    // 100 clients, clip 1, z = 1, granularity so that each client's sigma is 10 integer steps.
    let config = DdpConfig::new(d, 100, 1.0, 1.0, 1e-2);
    let plan = DdpPlan::new(config, [9; 32])?;
    println!(
        "DDP plan: d = {d}, padded {}, n = 100, local sigma = {:.3} steps, bits = {}, wrap bound = {:.2e}",
        plan.encoded_len(),
        plan.local_sigma(),
        plan.bits(),
        plan.wrap_probability_bound()
    );

    let runs = 7;
    println!("\n| stage (10^6 elements, one core, median CPU time of {runs}) | ms |");
    println!("|---|---|");
    let t_clip = median(runs, || {
        let mut x = update.clone();
        let _ = clip_l2(&mut x, 1.0);
    });
    let rotation = RandomRotation::new(d, [9; 32])?;
    let t_rot = median(runs, || {
        let _ = rotation.forward(&update);
    });
    let sampler = DiscreteGaussian::new(plan.local_sigma())?;
    let mut buf = vec![0i64; plan.encoded_len()];
    let t_noise = median(runs, || sampler.fill(&mut rng, &mut buf));
    let mut result: Result<Vec<u64>, DpError> = Ok(Vec::new());
    let t_all = median(runs, || result = plan.encode(&update, &mut rng));
    result?;
    let ms = |t: Duration| t.as_secs_f64() * 1e3;
    println!("| clip (L2) | {:.1} |", ms(t_clip));
    println!("| pad + rotate (FWHT 2^20) | {:.1} |", ms(t_rot));
    println!(
        "| discrete Gaussian noise, 2^20 draws | {:.1} |",
        ms(t_noise)
    );
    println!(
        "| **full encode** (clip+rotate+scale+round+noise+mod) | **{:.1}** |",
        ms(t_all)
    );

    println!("\n| sigma | medfl ns/element | opendp ns/element | speed-up |");
    println!("|---|---|---|---|");
    for sigma in [1.0, 10.0, 100.0, 1e4] {
        let s = DiscreteGaussian::new(sigma)?;
        let n = 1_000_000;
        let mut out = vec![0i64; n];
        let ours = median(5, || s.fill(&mut rng, &mut out)).as_secs_f64() * 1e9 / n as f64;
        let scale = dashu::rational::RBig::try_from(sigma)?;
        let m = 20_000;
        let theirs = median(3, || {
            for _ in 0..m {
                let _ = opendp::traits::samplers::sample_discrete_gaussian(scale.clone());
            }
        })
        .as_secs_f64()
            * 1e9
            / m as f64;
        println!(
            "| {sigma} | {ours:.0} | {theirs:.0} | {:.0}x |",
            theirs / ours
        );
    }
    let wall = Instant::now();
    let _ = plan.encode(&update, &mut rng)?;
    println!(
        "\n(one more full encode: {:.1} ms wall clock; load average {})",
        wall.elapsed().as_secs_f64() * 1e3,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    Ok(())
}

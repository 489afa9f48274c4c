//! Keystream throughput of the stream ciphers considered for mask expansion,
//! and of medfl's PRG end to end (expansion plus the add into the accumulator).
//!
//! ```text
//! cargo run --release -p medfl-secagg --example prg_throughput [-- --mib 64 --repeats 9]
//! ```
//!
//! Prints, per cipher, the median over `--repeats` runs of generating
//! `--mib` MiB of keystream into a 32 KiB buffer (the PRG's working size), in
//! GB/s (10^9 bytes per second) of thread CPU time. The AES rows use whichever
//! backend the `aes` crate detects at run time (AES-NI, or VAES with AVX-512
//! where present).

use std::time::Duration;

use aes::Aes256;
use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};
use medfl_secagg::prg::{self, MaskDomain, Seed, Sign};

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Median GB/s of `run`, which processes `bytes` bytes per call.
fn gbps(bytes: usize, repeats: usize, mut run: impl FnMut()) -> f64 {
    run(); // warm up: page faults, runtime CPU detection
    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| {
            let t0 = thread_cpu();
            run();
            bytes as f64 / (thread_cpu() - t0).as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn keystream<C: StreamCipher>(mut cipher: C, buf: &mut [u8], bytes: usize) {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len());
        cipher.write_keystream(&mut buf[..n]);
        left -= n;
    }
    std::hint::black_box(&buf);
}

/// Keystream throughput of the PRGs a mask could be expanded with.
#[derive(clap::Parser)]
struct Args {
    /// MiB of keystream per measurement.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..))]
    mib: u16,
    /// Measurements per PRG (the median is reported).
    #[arg(long, default_value_t = 9, value_parser = clap::value_parser!(u16).range(1..))]
    repeats: u16,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    let bytes = usize::from(args.mib) << 20;
    let repeats = usize::from(args.repeats);
    let key = [7u8; 32];
    let mut buf = vec![0u8; 32 * 1024];

    let rows: Vec<(&str, f64)> = vec![
        (
            "ChaCha20 (RFC 8439) keystream",
            gbps(bytes, repeats, || {
                keystream(ChaCha20::new(&key.into(), &[0; 12].into()), &mut buf, bytes)
            }),
        ),
        (
            "AES-256-CTR (128-bit BE counter) keystream",
            gbps(bytes, repeats, || {
                keystream(
                    ctr::Ctr128BE::<Aes256>::new(&key.into(), &[0; 16].into()),
                    &mut buf,
                    bytes,
                )
            }),
        ),
        (
            "AES-256-CTR (64-bit LE counter) keystream",
            gbps(bytes, repeats, || {
                keystream(
                    ctr::Ctr64LE::<Aes256>::new(&key.into(), &[0; 16].into()),
                    &mut buf,
                    bytes,
                )
            }),
        ),
        (
            "AES-256-CTR (32-bit BE counter) keystream",
            gbps(bytes, repeats, || {
                keystream(
                    ctr::Ctr32BE::<Aes256>::new(&key.into(), &[0; 16].into()),
                    &mut buf,
                    bytes,
                )
            }),
        ),
        (
            "AES-256-CTR, medfl's prg::Keystream",
            gbps(bytes, repeats, || {
                let mut ks = prg::Keystream::new(&Seed([7; 32]), MaskDomain::Pairwise);
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(buf.len());
                    ks.fill(&mut buf[..n]);
                    left -= n;
                }
                std::hint::black_box(&buf);
            }),
        ),
    ];
    // The PRG as a client uses it: b = 32 (4 keystream bytes per coordinate),
    // 8 masks expanded and added into one u64 accumulator chunk by chunk;
    // throughput counts keystream bytes over all masks.
    let masks = 8;
    let d = bytes / 4 / masks;
    let mut acc = vec![0u64; d];
    let seeds: Vec<Seed> = (0..masks as u8).map(|i| Seed([i; 32])).collect();
    let plan: Vec<_> = seeds
        .iter()
        .map(|s| (s, MaskDomain::Pairwise, Sign::Add))
        .collect();
    let prg_rate = gbps(d * 4 * masks, repeats, || {
        prg::apply_masks(&mut acc, &plan, 32);
        std::hint::black_box(&acc);
    });

    // Stochastic rounding of 1e6 f32 values (8 keystream bytes each), ns per coordinate.
    let q = medfl_secagg::Quantizer::new(1.0, 32, 100).expect("valid quantizer");
    let xs: Vec<f32> = (0..1_000_000).map(|i| (i as f32 * 0.618).sin()).collect();
    let mut rng = <rand_chacha::ChaCha20Rng as rand::SeedableRng>::from_seed([1; 32]);
    let quantize_ns = 1.0
        / gbps(xs.len(), repeats, || {
            std::hint::black_box(q.encode(&xs, &mut rng).expect("no NaN"));
        });

    println!(
        "keystream throughput, {} MiB per run, median of {repeats} (GB/s of thread CPU time):",
        bytes >> 20
    );
    for (name, rate) in &rows {
        println!("  {name:<46} {rate:6.2}");
    }
    println!(
        "  {:<46} {prg_rate:6.2}",
        "medfl PRG: 8 masks expanded + added, b = 32"
    );
    println!("quantize (Quantizer::encode, 1e6 f32, b = 32): {quantize_ns:.2} ns per coordinate");
}

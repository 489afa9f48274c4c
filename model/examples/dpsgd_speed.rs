//! Time per step: the ordinary (non-private) Adam step of `train.rs` against a DP-SGD step
//! (Poisson sampling, ghost-norm clipping, lattice Gaussian noise, Adam), on the 22-input
//! autoencoder at batch 256.
//!
//! `cargo run --release -p medfl-model --example dpsgd_speed [steps]`
//!
//! The variants are interleaved step by step so that load from other processes on the shared
//! machine hits them alike; the table reports medians of wall time.

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use medfl_dp::LatticeGaussian;
use medfl_model::dpsgd::{DpOptimizer, DpSgdConfig, DpSgdTrainer, clipped_gradient_sum};
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, AutoencoderConfig};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

const INPUTS: usize = 22;
const BATCH: usize = 256;
/// Rows in the data set; the DP sampling rate is `BATCH / ROWS`.
const ROWS: usize = BATCH * 40;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(400);
    let device = training_device();
    let config = AutoencoderConfig::for_inputs(INPUTS);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data: Vec<f32> = (0..ROWS * INPUTS)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect();
    let q = BATCH as f64 / ROWS as f64;
    let dp_config = |noise_multiplier: f64| DpSgdConfig {
        sampling_rate: q,
        noise_multiplier,
        clip_norm: 1.0,
        steps: steps as u64 + 10,
        learning_rate: 1e-3,
        optimizer: DpOptimizer::Adam,
        delta: 1e-5,
        seed: [3; 32],
    };

    // Ordinary step, exactly as in train.rs (shuffled order, one batch of 256 rows).
    let mut plain_model = Some(Autoencoder::new(config, 1, &device)?);
    let mut optim = AdamConfig::new().init();
    let mut order: Vec<usize> = (0..ROWS).collect();
    order.shuffle(&mut rng);
    let mut batch = Vec::with_capacity(BATCH * INPUTS);
    let mut cursor = 0usize;
    let mut plain_step = |model: Autoencoder| -> Autoencoder {
        if cursor + BATCH > ROWS {
            order.shuffle(&mut rng);
            cursor = 0;
        }
        batch.clear();
        for &r in &order[cursor..cursor + BATCH] {
            batch.extend_from_slice(&data[r * INPUTS..(r + 1) * INPUTS]);
        }
        cursor += BATCH;
        let x = Tensor::<2>::from_data(TensorData::new(batch.clone(), [BATCH, INPUTS]), &device);
        let loss = (model.forward(x.clone()) - x).powi_scalar(2).mean();
        let _ = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        optim.step(1e-3, model, grads)
    };

    // DP-SGD with noise, and without (σ = 0) to separate the sampler's cost.
    let mut dp = DpSgdTrainer::new(config, &data, dp_config(1.0), &device)?;
    let mut dp_model = Some(Autoencoder::new(config, 1, &device)?);
    let mut dp0 = DpSgdTrainer::new(config, &data, dp_config(0.0), &device)?;
    let mut dp0_model = Some(Autoencoder::new(config, 1, &device)?);
    // Ghost clipping alone on a fixed batch of 256 (no sampling, noise or optimizer).
    let ghost_model = Autoencoder::new(config, 1, &device)?;
    let ghost_rows = &data[..BATCH * INPUTS];

    // The two host-side pieces alone: Poisson sampling over all rows, and the noise.
    let mut sampler = ChaCha20Rng::seed_from_u64(5);
    let mut noise_rng = ChaCha20Rng::seed_from_u64(6);
    let lattice = LatticeGaussian::new(1.0)?;
    let mut grad = vec![0.0f32; config.param_count()];

    let (mut t_plain, mut t_dp, mut t_dp0, mut t_ghost) = (vec![], vec![], vec![], vec![]);
    let (mut t_sample, mut t_noise) = (vec![], vec![]);
    let mut batch_sizes = 0usize;
    for i in 0..steps + 10 {
        let t = Instant::now();
        plain_model = plain_model.take().map(&mut plain_step);
        let a = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let (m, stats) = dp.step(dp_model.take().ok_or("model")?)?;
        let b = t.elapsed().as_secs_f64();
        dp_model = Some(m);

        let t = Instant::now();
        let (m, _) = dp0.step(dp0_model.take().ok_or("model")?)?;
        let c = t.elapsed().as_secs_f64();
        dp0_model = Some(m);

        let t = Instant::now();
        let _ = clipped_gradient_sum(&ghost_model, config, ghost_rows, 1.0, &device)?;
        let d = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let picked = (0..ROWS).filter(|_| sampler.random_bool(q)).count();
        let e = t.elapsed().as_secs_f64();
        std::hint::black_box(picked);

        let t = Instant::now();
        lattice.privatize_f32(&mut noise_rng, &mut grad);
        let f = t.elapsed().as_secs_f64();
        std::hint::black_box(&grad);

        // The first steps warm up allocators and caches.
        if i >= 10 {
            t_plain.push(a);
            t_dp.push(b);
            t_dp0.push(c);
            t_ghost.push(d);
            t_sample.push(e);
            t_noise.push(f);
            batch_sizes += stats.batch_size;
        }
    }
    let plain = median(&mut t_plain);
    let rows = [
        ("non-private step (train.rs)", plain),
        ("DP-SGD step (sigma = 1)", median(&mut t_dp)),
        ("DP-SGD step (sigma = 0, no noise)", median(&mut t_dp0)),
        ("ghost clipped sum only", median(&mut t_ghost)),
        ("Poisson sampling only (ChaCha20)", median(&mut t_sample)),
        ("lattice noise only (2014 values)", median(&mut t_noise)),
    ];
    println!(
        "autoencoder {INPUTS}-32-8-32-{INPUTS} ({} parameters), batch {BATCH} (DP: Poisson q = \
         {q:.4} over {ROWS} rows, mean batch {:.1}), {steps} steps, medians",
        config.param_count(),
        batch_sizes as f64 / steps as f64
    );
    println!("| variant | ms/step | samples/s | ratio to non-private |\n|---|---:|---:|---:|");
    for (name, t) in rows {
        println!(
            "| {name} | {:.3} | {:.0} | {:.2}x |",
            t * 1e3,
            BATCH as f64 / t,
            t / plain
        );
    }
    Ok(())
}

//! Time per step: the ordinary (non-private) Adam step of `train.rs` on 256 rows against an
//! employee-level DP-SGD step of about as many rows (Poisson sampling of employees, at most 32
//! rows each, per-employee clipping, lattice Gaussian noise, Adam) and a record-level one, on
//! the access-feature autoencoder.
//!
//! `cargo run --release -p medfl-model --example dpsgd_speed [steps]`
//!
//! The variants are interleaved step by step so that load from other processes on the shared
//! machine hits them alike; the table reports medians of wall time.

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use medfl_dp::LatticeGaussian;
use medfl_model::dpsgd::{
    DpOptimizer, DpSgdConfig, DpSgdTrainer, MAX_ROWS_PER_EMPLOYEE, clipped_employee_sum,
};
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, AutoencoderConfig, EmployeeRows};
use rand::RngExt;
use rand::seq::SliceRandom;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::{ChaCha8Rng, ChaCha20Rng};

const INPUTS: usize = medfl_accesslog::N_FEATURES;
const BATCH: usize = 256;
/// Rows in the data set.
const ROWS: usize = BATCH * 40;
/// Rows per employee (three weeks of a clinician's accesses); a step uses 32 of them.
const ROWS_PER_EMPLOYEE: usize = 200;
const EMPLOYEES: usize = ROWS / ROWS_PER_EMPLOYEE;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Interleaved timing of private and non-private training steps.
#[derive(clap::Parser)]
struct Args {
    /// Steps of each kind.
    #[arg(default_value_t = 400)]
    steps: usize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps = <Args as clap::Parser>::parse().steps;
    let device = training_device();
    let config = AutoencoderConfig::for_inputs(INPUTS);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let data: Vec<f32> = (0..ROWS * INPUTS)
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect();
    let employee_of_row: Vec<u64> = (0..ROWS).map(|r| (r % EMPLOYEES) as u64).collect();
    let by_employee = EmployeeRows::new(&data, INPUTS, &employee_of_row)?;
    let by_row = EmployeeRows::one_per_row(&data, INPUTS)?;
    // About BATCH rows a step either way: BATCH/32 employees of 32 rows, or BATCH rows.
    let q = (BATCH / MAX_ROWS_PER_EMPLOYEE) as f64 / EMPLOYEES as f64;
    let q_row = BATCH as f64 / ROWS as f64;
    let dp_config = |noise_multiplier: f64, sampling_rate: f64| DpSgdConfig {
        sampling_rate,
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

    // Employee-level DP-SGD with noise, and without (σ = 0) to separate the sampler's cost;
    // record-level DP-SGD for comparison.
    let mut dp = DpSgdTrainer::new(config, &by_employee, dp_config(1.0, q), &device)?;
    let mut dp_model = Some(Autoencoder::new(config, 1, &device)?);
    let mut dp0 = DpSgdTrainer::new(config, &by_employee, dp_config(0.0, q), &device)?;
    let mut dp0_model = Some(Autoencoder::new(config, 1, &device)?);
    let mut dp_row = DpSgdTrainer::new(config, &by_row, dp_config(1.0, q_row), &device)?;
    let mut dp_row_model = Some(Autoencoder::new(config, 1, &device)?);
    // Employee clipping alone on a fixed batch of 8 employees of 32 rows (no sampling, noise
    // or optimizer).
    let ghost_model = Autoencoder::new(config, 1, &device)?;
    let ghost_rows = &data[..BATCH * INPUTS];
    let groups: Vec<usize> = (0..=BATCH / MAX_ROWS_PER_EMPLOYEE)
        .map(|g| g * MAX_ROWS_PER_EMPLOYEE)
        .collect();

    // The two host-side pieces alone: Poisson sampling over all rows, and the noise.
    let mut sampler = ChaCha20Rng::seed_from_u64(5);
    let mut noise_rng = ChaCha20Rng::seed_from_u64(6);
    let lattice = LatticeGaussian::new(1.0)?;
    let mut grad = vec![0.0f32; config.param_count()];

    let (mut t_plain, mut t_dp, mut t_dp0, mut t_ghost) = (vec![], vec![], vec![], vec![]);
    let mut t_row = vec![];
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
        let (m, _) = dp_row.step(dp_row_model.take().ok_or("model")?)?;
        let r = t.elapsed().as_secs_f64();
        dp_row_model = Some(m);

        let t = Instant::now();
        let _ = clipped_employee_sum(&ghost_model, config, ghost_rows, &groups, 1.0, &device)?;
        let d = t.elapsed().as_secs_f64();

        let t = Instant::now();
        let picked = (0..EMPLOYEES).filter(|_| sampler.random_bool(q)).count();
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
            t_row.push(r);
            t_ghost.push(d);
            t_sample.push(e);
            t_noise.push(f);
            batch_sizes += stats.batch_size;
        }
    }
    let plain = median(&mut t_plain);
    let rows = [
        ("non-private step (train.rs)", plain),
        ("employee-level DP-SGD step (sigma = 1)", median(&mut t_dp)),
        (
            "employee-level DP-SGD step (sigma = 0, no noise)",
            median(&mut t_dp0),
        ),
        ("record-level DP-SGD step (sigma = 1)", median(&mut t_row)),
        (
            "employee clipped sum only (8 x 32 rows)",
            median(&mut t_ghost),
        ),
        ("Poisson sampling of employees only", median(&mut t_sample)),
        ("lattice noise only (2014 values)", median(&mut t_noise)),
    ];
    println!(
        "autoencoder {INPUTS}-32-8-32-{INPUTS} ({} parameters), batch {BATCH} rows (employee \
         DP: Poisson q = {q:.4} over {EMPLOYEES} employees of {ROWS_PER_EMPLOYEE} rows, mean \
         batch {:.1} rows), {steps} steps, medians",
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

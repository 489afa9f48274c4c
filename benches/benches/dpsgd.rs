//! One training step of the access-feature autoencoder on about 256 rows: the ordinary Adam step
//! of `train.rs` against employee-level DP-SGD (Poisson sampling of employees, at most 32 rows
//! each, per-employee clipping, lattice Gaussian noise, Adam), the same without noise,
//! record-level DP-SGD (every row its own unit), and the clipped sums alone.

use std::time::Duration;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medfl_model::dpsgd::{
    DpOptimizer, DpSgdConfig, DpSgdTrainer, MAX_ROWS_PER_EMPLOYEE, clipped_employee_sum,
    clipped_gradient_sum,
};
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, AutoencoderConfig, EmployeeRows};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

const INPUTS: usize = medfl_accesslog::N_FEATURES;
const BATCH: usize = 256;
const ROWS: usize = BATCH * 40;
/// Rows per employee: three weeks of a clinician's accesses.
const ROWS_PER_EMPLOYEE: usize = 200;
const EMPLOYEES: usize = ROWS / ROWS_PER_EMPLOYEE;

fn data() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..ROWS * INPUTS)
        .map(|_| rng.random_range(0.0f32..2.0))
        .collect()
}

/// Employee of each row, interleaved as in a log.
fn employees() -> Vec<u64> {
    (0..ROWS).map(|r| (r % EMPLOYEES) as u64).collect()
}

/// `q` gives about [`BATCH`] rows a step: `BATCH / 32` employees of 32 rows, or [`BATCH`] rows.
fn dp_config(noise_multiplier: f64, steps: u64, units: usize, rows_per_unit: usize) -> DpSgdConfig {
    DpSgdConfig {
        sampling_rate: (BATCH / rows_per_unit) as f64 / units as f64,
        noise_multiplier,
        clip_norm: 1.0,
        steps,
        learning_rate: 1e-3,
        optimizer: DpOptimizer::Adam,
        delta: 1e-5,
        seed: [3; 32],
    }
}

fn bench_dpsgd(c: &mut Criterion) {
    let device = training_device();
    let config = AutoencoderConfig::for_inputs(INPUTS);
    let data = data();
    let employees = employees();
    let by_employee = EmployeeRows::new(&data, INPUTS, &employees).unwrap();
    let by_row = EmployeeRows::one_per_row(&data, INPUTS).unwrap();
    let batch = data[..BATCH * INPUTS].to_vec();

    let mut group = c.benchmark_group("dpsgd_step_21in_256rows");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(10));

    group.bench_function("non_private_adam", |b| {
        let mut model = Some(Autoencoder::new(config, 1, &device).unwrap());
        let mut optim = AdamConfig::new().init();
        b.iter(|| {
            let m = model.take().unwrap();
            let x =
                Tensor::<2>::from_data(TensorData::new(batch.clone(), [BATCH, INPUTS]), &device);
            let loss = (m.forward(x.clone()) - x).powi_scalar(2).mean();
            let _ = loss.clone().into_scalar::<f32>();
            let grads = GradientsParams::from_grads(loss.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
        });
    });

    let runs = [
        (
            "dpsgd_employee_sigma1",
            1.0,
            &by_employee,
            MAX_ROWS_PER_EMPLOYEE,
        ),
        (
            "dpsgd_employee_sigma0",
            0.0,
            &by_employee,
            MAX_ROWS_PER_EMPLOYEE,
        ),
        ("dpsgd_row_sigma1", 1.0, &by_row, 1),
    ];
    for (name, sigma, rows, per_unit) in runs {
        let dp = |budget| dp_config(sigma, budget, rows.employees(), per_unit);
        group.bench_function(name, |b| {
            // The trainer refuses steps beyond its accounted count: give it more than criterion
            // will take, and rebuild it if it ever runs out.
            let budget = 10_000_000;
            let mut trainer = DpSgdTrainer::new(config, rows, dp(budget), &device).unwrap();
            let mut taken = 0u64;
            let mut model = Some(Autoencoder::new(config, 1, &device).unwrap());
            b.iter(|| {
                if taken == budget {
                    trainer = DpSgdTrainer::new(config, rows, dp(budget), &device).unwrap();
                    taken = 0;
                }
                let (m, _) = trainer.step(model.take().unwrap()).unwrap();
                taken += 1;
                model = Some(m);
            });
        });
    }

    group.bench_function("row_clipped_sum", |b| {
        let model = Autoencoder::new(config, 1, &device).unwrap();
        b.iter(|| clipped_gradient_sum(&model, config, &batch, 1.0, &device).unwrap());
    });
    group.bench_function("employee_clipped_sum", |b| {
        let model = Autoencoder::new(config, 1, &device).unwrap();
        let groups: Vec<usize> = (0..=BATCH / MAX_ROWS_PER_EMPLOYEE)
            .map(|g| g * MAX_ROWS_PER_EMPLOYEE)
            .collect();
        b.iter(|| clipped_employee_sum(&model, config, &batch, &groups, 1.0, &device).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_dpsgd);
criterion_main!(benches);

//! One training step of the 22-input autoencoder at batch 256: the ordinary Adam step of
//! `train.rs` against DP-SGD (Poisson sampling, ghost-norm clipping, lattice Gaussian noise, Adam),
//! DP-SGD without noise, and the ghost clipped sum alone.

use std::time::Duration;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Tensor, TensorData};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use medfl_model::dpsgd::{DpOptimizer, DpSgdConfig, DpSgdTrainer, clipped_gradient_sum};
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, AutoencoderConfig};
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

const INPUTS: usize = 22;
const BATCH: usize = 256;
const ROWS: usize = BATCH * 40;

fn data() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    (0..ROWS * INPUTS)
        .map(|_| rng.random_range(-2.0f32..2.0))
        .collect()
}

fn dp_config(noise_multiplier: f64, steps: u64) -> DpSgdConfig {
    DpSgdConfig {
        sampling_rate: BATCH as f64 / ROWS as f64,
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
    let batch = data[..BATCH * INPUTS].to_vec();

    let mut group = c.benchmark_group("dpsgd_step_22in_batch256");
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

    for (name, sigma) in [("dpsgd_sigma1", 1.0), ("dpsgd_sigma0", 0.0)] {
        group.bench_function(name, |b| {
            // The trainer refuses steps beyond its accounted count: give it more than criterion
            // will take, and rebuild it if it ever runs out.
            let budget = 10_000_000;
            let mut trainer =
                DpSgdTrainer::new(config, &data, dp_config(sigma, budget), &device).unwrap();
            let mut taken = 0u64;
            let mut model = Some(Autoencoder::new(config, 1, &device).unwrap());
            b.iter(|| {
                if taken == budget {
                    trainer = DpSgdTrainer::new(config, &data, dp_config(sigma, budget), &device)
                        .unwrap();
                    taken = 0;
                }
                let (m, _) = trainer.step(model.take().unwrap()).unwrap();
                taken += 1;
                model = Some(m);
            });
        });
    }

    group.bench_function("ghost_clipped_sum", |b| {
        let model = Autoencoder::new(config, 1, &device).unwrap();
        b.iter(|| clipped_gradient_sum(&model, config, &batch, 1.0, &device).unwrap());
    });
    group.finish();
}

criterion_group!(benches, bench_dpsgd);
criterion_main!(benches);

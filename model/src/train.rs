//! Training and scoring.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::{Autoencoder, AutoencoderConfig, ModelError};

/// Training hyperparameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Adam's learning rate.
    pub learning_rate: f64,
    /// Seed for the order rows are visited in.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 0,
        }
    }
}

/// The device training runs on: burn's CPU backend with autodiff.
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// Trains on a row-major matrix; returns the model and the mean loss of each epoch.
pub fn train(
    mut model: Autoencoder,
    config: AutoencoderConfig,
    data: &[f32],
    train: TrainConfig,
    device: &Device,
) -> Result<(Autoencoder, Vec<f32>), ModelError> {
    let d = config.inputs;
    if d == 0 || !data.len().is_multiple_of(d) {
        return Err(ModelError::Shape(format!(
            "{} values do not form rows of {d}",
            data.len()
        )));
    }
    if train.batch_size == 0 || !train.learning_rate.is_finite() || train.learning_rate <= 0.0 {
        return Err(ModelError::Config(format!("{train:?}")));
    }
    let rows = data.len() / d;
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(train.seed);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(train.epochs);
    let mut batch = Vec::with_capacity(train.batch_size * d);
    for _ in 0..train.epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut steps) = (0.0f32, 0usize);
        for chunk in order.chunks(train.batch_size) {
            batch.clear();
            for &r in chunk {
                batch.extend_from_slice(&data[r * d..(r + 1) * d]);
            }
            let x =
                Tensor::<2>::from_data(TensorData::new(batch.clone(), [chunk.len(), d]), device);
            let loss = (model.forward(x.clone()) - x).powi_scalar(2).mean();
            sum += loss.clone().into_scalar::<f32>();
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(train.learning_rate, model, grads);
        }
        losses.push(sum / steps.max(1) as f32);
    }
    Ok((model, losses))
}

/// Anomaly scores (mean squared reconstruction error) for every row, as [`infer`] runs them.
pub fn score(
    model: &Autoencoder,
    data: &[f32],
    inputs: usize,
    device: &Device,
) -> Result<Vec<f32>, ModelError> {
    infer(model, data, inputs, device, |m, x| {
        m.score_batch(x).into_data()
    })
}

/// Each feature's squared reconstruction error for every row (row-major, like `data`): what
/// makes up a row's [`score`], so an alert can name the features that raised it.
pub fn reconstruction_errors(
    model: &Autoencoder,
    data: &[f32],
    inputs: usize,
    device: &Device,
) -> Result<Vec<f32>, ModelError> {
    infer(model, data, inputs, device, |m, x| {
        (m.forward(x.clone()) - x).powi_scalar(2).into_data()
    })
}

/// The model's reconstruction of every row (row-major, like `data`): what it expected each
/// feature to be, so an explanation can be checked by putting a feature back to it.
pub fn reconstruct(
    model: &Autoencoder,
    data: &[f32],
    inputs: usize,
    device: &Device,
) -> Result<Vec<f32>, ModelError> {
    infer(model, data, inputs, device, |m, x| m.forward(x).into_data())
}

/// Runs `f` over the rows of `data` (of `inputs` columns) in chunks of 4,096 rows, with `model`
/// and the rows outside autodiff whatever they carry, and concatenates what it returns.
///
/// Without autodiff because a forward pass recorded for a backward pass that never comes stays
/// in the autodiff graph, which a long-running monitor, scoring every access, would grow
/// without end (and stall on each time the graph's table doubled).
fn infer(
    model: &Autoencoder,
    data: &[f32],
    inputs: usize,
    device: &Device,
    f: impl Fn(&Autoencoder, Tensor<2>) -> TensorData,
) -> Result<Vec<f32>, ModelError> {
    if inputs == 0 || !data.len().is_multiple_of(inputs) {
        return Err(ModelError::Shape(format!(
            "{} values do not form rows of {inputs}",
            data.len()
        )));
    }
    let model = model.valid();
    let device = device.clone().inner();
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.chunks(4096 * inputs) {
        let x = Tensor::<2>::from_data(
            TensorData::new(chunk.to_vec(), [chunk.len() / inputs, inputs]),
            &device,
        );
        out.extend(
            f(&model, x)
                .try_into_vec::<f32>()
                .map_err(|e| ModelError::Backend(format!("{e:?}")))?,
        );
    }
    Ok(out)
}

/// The alert threshold for `model` on a hospital's own normal traffic: the score above which a
/// `target_fpr` share of `normal_rows` (of `inputs` columns) lies. The one calibration every
/// path uses (a hospital adopting a model, `medfl train`, the simulator, the experiments); it
/// never leaves the hospital. No rows, or a rate outside `[0, 1)`, is an error, never a
/// threshold that silently alerts on everything or nothing.
pub fn alert_threshold(
    model: &Autoencoder,
    normal_rows: &[f32],
    inputs: usize,
    target_fpr: f64,
    device: &Device,
) -> Result<f32, ModelError> {
    let scores = score(model, normal_rows, inputs, device)?;
    // A NaN score sorts last; a threshold that is not finite would never (or always) alert.
    crate::metrics::threshold_for_fpr(&scores, target_fpr)
        .filter(|t| t.is_finite())
        .ok_or_else(|| {
            ModelError::Config(format!(
                "no finite alert threshold at false-positive rate {target_fpr} from {} normal rows",
                scores.len()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(rows: usize, seed: u64) -> Vec<f32> {
        // Points on a 2-d plane embedded in 6 dimensions: easy to compress through 8 -> 2.
        use rand::RngExt;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows)
            .flat_map(|_| {
                let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
                [a, b, a + b, a - b, 0.5 * a, -b]
            })
            .collect()
    }

    #[test]
    fn flat_parameters_round_trip_exactly() {
        let device = training_device();
        let config = AutoencoderConfig {
            inputs: 6,
            hidden: 8,
            latent: 2,
        };
        let m = Autoencoder::new(config, 3, &device).unwrap();
        let flat = m.to_flat().unwrap();
        assert_eq!(flat.len(), config.param_count());
        let again = Autoencoder::new(config, 4, &device)
            .unwrap()
            .load_flat(config, &flat)
            .unwrap();
        assert_eq!(again.to_flat().unwrap(), flat);
        assert!(
            Autoencoder::new(config, 4, &device)
                .unwrap()
                .load_flat(config, &flat[1..])
                .is_err()
        );
    }

    #[test]
    fn training_lowers_the_loss_and_outliers_score_high() {
        let device = training_device();
        let config = AutoencoderConfig {
            inputs: 6,
            hidden: 16,
            latent: 2,
        };
        let data = toy(2048, 1);
        let model = Autoencoder::new(config, 1, &device).unwrap();
        let cfg = TrainConfig {
            epochs: 30,
            batch_size: 128,
            learning_rate: 3e-3,
            seed: 1,
        };
        let (model, losses) = train(model, config, &data, cfg, &device).unwrap();
        assert!(losses[losses.len() - 1] < losses[0] * 0.2, "{losses:?}");
        let normal = score(&model, &toy(200, 2), 6, &device).unwrap();
        let odd = score(&model, &[1.0, 1.0, -2.0, 3.0, -1.0, 1.0], 6, &device).unwrap()[0];
        let max_normal = normal.iter().copied().fold(0.0, f32::max);
        assert!(odd > max_normal, "outlier {odd} vs max normal {max_normal}");
    }

    #[test]
    fn training_is_bit_reproducible() {
        let device = training_device();
        let config = AutoencoderConfig {
            inputs: 6,
            hidden: 8,
            latent: 2,
        };
        let data = toy(512, 5);
        let run = || {
            let m = Autoencoder::new(config, 9, &device).unwrap();
            let cfg = TrainConfig {
                epochs: 2,
                batch_size: 64,
                learning_rate: 1e-3,
                seed: 9,
            };
            train(m, config, &data, cfg, &device)
                .unwrap()
                .0
                .to_flat()
                .unwrap()
        };
        assert_eq!(run(), run());
    }
}

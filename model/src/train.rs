//! Training and scoring.

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::policy::AlertPolicy;
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
    /// Fewest optimizer steps, however few the rows: a small table gets more passes, in
    /// batches of at most a quarter of its rows, so how long a model trains follows its
    /// updates, not the file's size (0: exactly `epochs` passes).
    pub min_steps: usize,
}

impl TrainConfig {
    /// The batch size and the passes `train` runs over `rows` rows: batches of at most a
    /// quarter of the rows when `min_steps` asks for steps (at least 8 rows each, or all of
    /// them), and as many passes beyond `epochs` as reaching `min_steps` takes.
    pub fn schedule(&self, rows: usize) -> (usize, usize) {
        let batch = if self.min_steps == 0 {
            self.batch_size
        } else {
            self.batch_size.min(rows.div_ceil(4).max(8))
        }
        .max(1);
        let per_epoch = rows.div_ceil(batch).max(1);
        (batch, self.epochs.max(self.min_steps.div_ceil(per_epoch)))
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 0,
            min_steps: 0,
        }
    }
}

/// The device training runs on: burn's CPU backend with autodiff.
pub fn training_device() -> Device {
    Device::flex().autodiff()
}

/// Trains on a row-major matrix; returns the model and the mean loss of each epoch (of
/// [`TrainConfig::schedule`]'s passes). A step whose loss is not finite, or parameters that
/// are not finite after the last step, stop training with [`ModelError::Diverged`]: a model
/// that blew up is reported, never returned or averaged in.
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
    if rows == 0 && train.min_steps > 0 {
        return Err(ModelError::Shape(format!(
            "no rows to train on ({} steps asked for)",
            train.min_steps
        )));
    }
    let (batch_size, epochs) = train.schedule(rows);
    let mut order: Vec<usize> = (0..rows).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(train.seed);
    let mut optim = AdamConfig::new().init();
    let mut losses = Vec::with_capacity(epochs);
    let mut batch = Vec::with_capacity(batch_size * d);
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        let (mut sum, mut steps) = (0.0f32, 0usize);
        for chunk in order.chunks(batch_size) {
            batch.clear();
            for &r in chunk {
                batch.extend_from_slice(&data[r * d..(r + 1) * d]);
            }
            let x =
                Tensor::<2>::from_data(TensorData::new(batch.clone(), [chunk.len(), d]), device);
            let loss = (model.forward(x.clone()) - x).powi_scalar(2).mean();
            let value = loss.clone().into_scalar::<f32>();
            if !value.is_finite() {
                return Err(ModelError::Diverged(format!(
                    "the loss is {value} at step {} of pass {} (learning rate {}); the data's \
                     scale or the learning rate is too large",
                    steps + 1,
                    epoch + 1,
                    train.learning_rate
                )));
            }
            sum += value;
            steps += 1;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(train.learning_rate, model, grads);
        }
        losses.push(sum / steps.max(1) as f32);
    }
    // The last step's update is applied after its loss was checked: it can still overflow.
    if model.to_flat()?.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::Diverged(format!(
            "the parameters are not finite after {epochs} passes (learning rate {}); the data's \
             scale or the learning rate is too large",
            train.learning_rate
        )));
    }
    Ok((model, losses))
}

/// Anomaly scores (mean squared reconstruction error) for every row, as `infer` runs them.
/// A row the network cannot reconstruct to a number (its error overflowed) scores `+inf`,
/// the most anomalous: not-a-number would sort below every score and never alert.
pub fn score(
    model: &Autoencoder,
    data: &[f32],
    inputs: usize,
    device: &Device,
) -> Result<Vec<f32>, ModelError> {
    let mut scores = infer(model, data, inputs, device, |m, x| {
        m.score_batch(x).into_data()
    })?;
    for s in scores.iter_mut().filter(|s| s.is_nan()) {
        *s = f32::INFINITY;
    }
    Ok(scores)
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

/// The alert threshold for `model` on a hospital's own normal traffic: the score above which
/// the model's alerts and `policy`'s together flag a `target_fpr` share of `normal_rows` (of
/// `inputs` columns), the policy taking at most a quarter of the target from the model
/// ([`AlertPolicy::threshold`]). The one
/// calibration every path uses (a hospital adopting a model, `medfl train`, the simulator, the
/// experiments); it never leaves the hospital. No rows, or a rate outside `[0, 1)`, is an error,
/// never a threshold that silently alerts on everything or nothing.
pub fn alert_threshold(
    model: &Autoencoder,
    normal_rows: &[f32],
    inputs: usize,
    target_fpr: f64,
    policy: AlertPolicy,
    device: &Device,
) -> Result<f32, ModelError> {
    let scores = score(model, normal_rows, inputs, device)?;
    // A NaN score sorts last; a threshold that is not finite would never (or always) alert.
    policy
        .threshold(&scores, normal_rows, inputs, target_fpr)
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
            min_steps: 0,
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
                min_steps: 0,
            };
            train(m, config, &data, cfg, &device)
                .unwrap()
                .0
                .to_flat()
                .unwrap()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn a_small_table_trains_for_steps_not_passes() {
        let cfg = TrainConfig {
            epochs: 5,
            batch_size: 256,
            learning_rate: 1e-3,
            seed: 0,
            min_steps: 400,
        };
        // 60 rows: batches of 15, 4 a pass, 100 passes.
        assert_eq!(cfg.schedule(60), (15, 100));
        // Few rows: batches of 8 (or all of them).
        assert_eq!(cfg.schedule(20), (8, 134));
        assert_eq!(cfg.schedule(3), (8, 400));
        // Plenty of rows: the configured batch and passes.
        assert_eq!(cfg.schedule(1_000_000), (256, 5));
        // No step floor: exactly as configured.
        let plain = TrainConfig {
            min_steps: 0,
            ..cfg
        };
        assert_eq!(plain.schedule(60), (256, 5));
    }

    #[test]
    fn a_diverging_run_is_reported_not_returned() {
        let device = training_device();
        let config = AutoencoderConfig {
            inputs: 6,
            hidden: 8,
            latent: 2,
        };
        // Values near f32's range: the squared error overflows at the first step.
        let data: Vec<f32> = toy(64, 3).iter().map(|v| v * 1e30).collect();
        let m = Autoencoder::new(config, 1, &device).unwrap();
        let cfg = TrainConfig {
            epochs: 1,
            batch_size: 16,
            learning_rate: 1e-3,
            seed: 1,
            min_steps: 0,
        };
        match train(m, config, &data, cfg, &device) {
            Err(ModelError::Diverged(why)) => assert!(why.contains("step 1 of pass 1"), "{why}"),
            other => panic!("expected divergence, got {:?}", other.map(|(_, l)| l)),
        }
    }
}

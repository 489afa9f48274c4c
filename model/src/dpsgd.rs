//! DP-SGD for the autoencoder at the level of the employee: Poisson-sampled employees, each
//! employee's whole contribution clipped, exact lattice Gaussian noise, and Rényi-DP accounting.
//!
//! The person a hospital protects is the employee whose accesses are logged, and one employee
//! owns hundreds of rows. Clipping rows would bound one access event; this clips employees, so
//! the `(ε, δ)` bounds what the released model reveals about any one employee's whole log
//! (user-level DP-SGD: McMahan et al. 2018, "Learning differentially private recurrent language
//! models"; the sampling scheme is the "user-level sampling" of Charles et al. 2024).
//!
//! # One step
//!
//! 1. **Sampling.** Every employee joins the batch independently with probability `q` (a
//!    seeded ChaCha20 stream). Poisson sampling is what the subsampled-Gaussian accountant
//!    assumes; the batch may be empty, and then the step is noise only.
//! 2. **Each sampled employee's rows.** At most [`MAX_ROWS_PER_EMPLOYEE`] of the employee's rows,
//!    chosen uniformly without replacement from the same stream. The employee's gradient
//!    `g_u` is the mean of their rows' gradients (bounding the rows bounds the compute, not the
//!    privacy: that is the clip below).
//! 3. **Per-row deltas without per-row gradients.** The forward pass uses the parameters as
//!    constants and adds a zero "probe" leaf `P_l` (`[b, d_out]`) to each layer's
//!    pre-activation. One backward of the *sum* of per-row losses gives `∂L/∂P_l = Δ_l`, whose
//!    row `i` is row `i`'s gradient w.r.t. that pre-activation (no layer mixes rows). For a
//!    Linear layer `s = aW + b`, row `i`'s weight gradient is the outer product `a_iᵀ δ_i` and
//!    its bias gradient `δ_i`.
//! 4. **Each employee's clipped mean, on the host, in `f64`.** `g_u`'s weight part is
//!    `(1/m_u) Σ_{i∈u} a_iᵀ δ_i` and its bias part `(1/m_u) Σ_{i∈u} δ_i`, formed in `f64` from the
//!    `f32` activations and deltas (about 2 000 multiply-adds per row for this network). With
//!    `c_u = min(1, C/‖g_u‖)`, `c_u g_u` is added to the batch sum, also in `f64`. An employee
//!    whose gradient is not finite is dropped (`c_u = 0`) after the same work as any other, so
//!    neither a failure nor the time taken depends on whether such rows exist: a coordinator
//!    that chose the starting model could otherwise build one that overflows only on rows of a
//!    pattern it wants to detect. Forming each employee's gradient explicitly also means huge
//!    row terms that cancel within an employee cannot overflow or inflate the batch sum.
//! 5. **Noise.** The summed gradient, still in `f64`, is rounded to the lattice `λℤ` and lattice
//!    Gaussian noise of standard deviation at least `σC` is added
//!    ([`medfl_dp::LatticeGaussian::privatize`]), a sampler with exact integer coins rather
//!    than a floating-point Box–Muller; only the noisy sum is rounded to `f32`.
//! 6. **Update.** The noisy sum is divided by the *expected* number of sampled employees `qN`
//!    (dividing by the realised number would leak it) and handed to Adam or SGD; both are
//!    post-processing.
//!
//! Adding or removing one employee adds or removes at most one clipped term of norm `≤ C`, so
//! each step is the Poisson-subsampled Gaussian mechanism over employees. Passing
//! [`EmployeeRows::one_per_row`] makes every row its own "employee": record-level DP-SGD.
//!
//! # Accounting
//!
//! The step's L2 sensitivity is the clip norm `C`, plus the lattice rounding's `λ√d` over `d`
//! parameters ([`medfl_dp::LatticeGaussian::sensitivity_inflation`]). We therefore account with
//! the *effective* noise multiplier `σ_eff = std / (C + λ√d)` (with `std ≥ σC` the sampler's
//! actual standard deviation), which is a hair below the nominal `σ`, so the reported `ε` is an
//! upper bound for the mechanism actually run. `λ ≈ σC·2⁻²⁰`, so for this model (about 2 000
//! parameters) `σ_eff/σ ≈ 1 − 4·10⁻⁵`.
//!
//! # Floating point
//!
//! Each employee's mean and norm are computed in `f64` from the `f32` activations and deltas; the
//! clip factor is shrunk by a margin of `(rows + widths + 12)·2⁻²³` and rounded down to `f32`, so
//! each clipped employee gradient has norm at most `C` (the margin also covers recomputing the
//! gradients another way in `f32`, as the tests do). The batch sum is accumulated in `f64` and
//! noised in `f64`; rounding the noisy sum to `f32` afterwards is post-processing.
//!
//! The loss values and clipping statistics in [`DpSgdReport`] are computed from the raw batches:
//! they are diagnostics for the data holder, never leave the hospital, and are **not** covered
//! by the privacy guarantee.

use burn::nn::Linear;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use medfl_dp::LatticeGaussian;
use medfl_dp::clip::clip_factor;
pub use medfl_modelspec::plan::{
    DpAccounting, DpOptimizer, DpSgdConfig, DpSgdError, MAX_ROWS_PER_EMPLOYEE, check_parameter,
};
use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

use crate::{Autoencoder, AutoencoderConfig, EmployeeRows, ModelError};

/// What a DP-SGD run did and what it cost.
#[derive(Clone, Debug, PartialEq)]
pub struct DpSgdReport {
    /// Steps taken.
    pub steps: u64,
    /// The privacy cost (ε at δ, effective noise multiplier, sensitivity).
    pub accounting: DpAccounting,
    /// Mean per-row loss over each expected epoch (`⌈1/q⌉` steps; the last may be partial;
    /// NaN if no row was sampled in it). Not private: a diagnostic for the data holder.
    pub losses: Vec<f32>,
    /// Sampled employees over all steps (about `q·N` per step). Not private.
    pub sampled_employees: u64,
    /// Rows those employees contributed. Not private.
    pub sampled_rows: u64,
    /// Sampled employees whose gradient was clipped (`‖g_u‖ > C`). Not private.
    pub clipped_employees: u64,
    /// Steps whose Poisson batch was empty (noise-only updates).
    pub empty_steps: u64,
}

/// One step's diagnostics (not private).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Employees in the Poisson batch.
    pub employees: usize,
    /// Rows they contributed.
    pub batch_size: usize,
    /// Sum of the batch's per-row losses.
    pub loss_sum: f64,
    /// Employees whose gradient was clipped.
    pub clipped: usize,
}

/// Per-employee norms, clip factors and the clipped gradient sum of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct ClippedSum {
    /// `‖g_u‖` per employee (from `f32` activations and deltas, widened).
    pub norms: Vec<f64>,
    /// The factor applied to each employee, `≈ min(1, C/‖g_u‖)` (see the module docs' margin).
    pub factors: Vec<f32>,
    /// `Σ_u c_u g_u`, flat in [`Autoencoder::to_flat`] order.
    pub sum: Vec<f32>,
    /// `Σ_i loss_i` over the rows.
    pub loss_sum: f64,
}

/// Trains `model` with employee-level DP-SGD on `rows` (of `config.inputs` columns).
pub fn train_dp(
    model: Autoencoder,
    config: AutoencoderConfig,
    rows: &EmployeeRows<'_>,
    dp: DpSgdConfig,
    device: &Device,
) -> Result<(Autoencoder, DpSgdReport), DpSgdError> {
    DpSgdTrainer::new(config, rows, dp, device)?.run(model)
}

/// Step-by-step DP-SGD over borrowed data, holding the optimizer state and the random streams.
pub struct DpSgdTrainer<'a> {
    /// Network shape.
    config: AutoencoderConfig,
    /// Hyperparameters (validated).
    dp: DpSgdConfig,
    /// The rows, grouped by employee (`config.inputs` columns, all finite).
    rows: &'a EmployeeRows<'a>,
    /// Training device (autodiff).
    device: Device,
    /// Adam or SGD state.
    optim: ModuleOptimizer,
    /// Poisson sampling stream (ChaCha20, stream 0).
    sampler: ChaCha20Rng,
    /// Noise stream (same seed, stream 1, so sampling and noise never share bits).
    noise_rng: ChaCha20Rng,
    /// `None` when `σ = 0`.
    noise: Option<LatticeGaussian>,
    /// `qN` over employees, the divisor of the noisy sum.
    expected_batch: f64,
    /// Reused buffer for the sampled rows.
    batch: Vec<f32>,
    /// Where each sampled employee's rows start in `batch` (in rows), then the total.
    groups: Vec<usize>,
    /// Reused buffer for sampling an employee's rows.
    picked: Vec<u32>,
    /// Steps taken so far.
    step: u64,
    /// The cost of the configured run.
    accounting: DpAccounting,
    /// FedProx's proximal term `μ/2·‖w − w_global‖²`: its weight and the global parameters.
    proximal: Option<(f32, Vec<f32>)>,
}

impl<'a> DpSgdTrainer<'a> {
    /// Checks everything (parameters, shapes, finite data) before any step.
    pub fn new(
        config: AutoencoderConfig,
        rows: &'a EmployeeRows<'a>,
        dp: DpSgdConfig,
        device: &Device,
    ) -> Result<DpSgdTrainer<'a>, DpSgdError> {
        let accounting = dp.accounting(config)?;
        let d = config.inputs;
        if rows.width() != d {
            return Err(ModelError::Shape(format!(
                "rows of {} columns for a model of {d} inputs",
                rows.width()
            ))
            .into());
        }
        let expected_batch = dp.sampling_rate * rows.employees() as f64;
        // The update divides by qN in f32; a vanishing qN would turn it into infinities.
        check_parameter(
            "sampling_rate",
            dp.sampling_rate,
            (1.0 / expected_batch) < f64::from(f32::MAX) / 1e6,
            "q times the number of employees is too small",
        )?;
        let optim = match dp.optimizer {
            DpOptimizer::Adam => AdamConfig::new().init(),
            DpOptimizer::Sgd => SgdConfig::new().init(),
        };
        let sampler = ChaCha20Rng::from_seed(dp.seed);
        let mut noise_rng = ChaCha20Rng::from_seed(dp.seed);
        noise_rng.set_stream(1);
        Ok(DpSgdTrainer {
            config,
            dp,
            rows,
            device: device.clone(),
            optim,
            sampler,
            noise_rng,
            noise: dp.noise()?,
            expected_batch,
            batch: Vec::new(),
            groups: Vec::new(),
            picked: Vec::new(),
            step: 0,
            accounting,
            proximal: None,
        })
    }

    /// Adds FedProx's proximal term `μ/2·‖w − anchor‖²` to every step (Li et al. 2020).
    ///
    /// Its gradient `μ(w − anchor)` depends on the parameters only, never on the data, so adding
    /// it after the noise is post-processing and costs no privacy.
    pub fn with_proximal(mut self, mu: f32, anchor: Vec<f32>) -> Result<Self, DpSgdError> {
        check_parameter(
            "proximal_mu",
            f64::from(mu),
            mu.is_finite() && mu >= 0.0,
            "must be finite and non-negative",
        )?;
        if anchor.len() != self.config.param_count() || anchor.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Shape(format!(
                "proximal anchor has {} values (all finite?) for {} parameters",
                anchor.len(),
                self.config.param_count()
            ))
            .into());
        }
        self.proximal = Some((mu, anchor));
        Ok(self)
    }

    /// The privacy cost of the configured number of steps.
    pub fn accounting(&self) -> &DpAccounting {
        &self.accounting
    }

    /// Takes every configured step from `model`; returns the trained model and the report.
    pub fn run(mut self, model: Autoencoder) -> Result<(Autoencoder, DpSgdReport), DpSgdError> {
        check_model(&model, self.config)?;
        let dp = self.dp;
        let epoch_len = (1.0 / dp.sampling_rate).ceil().max(1.0) as u64;
        let mut losses = Vec::new();
        let (mut epoch_loss, mut epoch_rows) = (0.0f64, 0usize);
        let (mut employees, mut sampled, mut clipped, mut empty) = (0u64, 0u64, 0u64, 0u64);
        let mut model = model;
        for step in 0..dp.steps {
            let (next, stats) = self.step(model)?;
            model = next;
            epoch_loss += stats.loss_sum;
            epoch_rows += stats.batch_size;
            employees += stats.employees as u64;
            sampled += stats.batch_size as u64;
            clipped += stats.clipped as u64;
            empty += u64::from(stats.batch_size == 0);
            if (step + 1) % epoch_len == 0 || step + 1 == dp.steps {
                losses.push((epoch_loss / epoch_rows as f64) as f32);
                (epoch_loss, epoch_rows) = (0.0, 0);
            }
        }
        Ok((
            model,
            DpSgdReport {
                steps: dp.steps,
                accounting: self.accounting,
                losses,
                sampled_employees: employees,
                sampled_rows: sampled,
                clipped_employees: clipped,
                empty_steps: empty,
            },
        ))
    }

    /// One DP-SGD step: sample, clip, noise, update. Steps beyond the configured count are
    /// refused, since the accounting covers only those.
    pub fn step(&mut self, model: Autoencoder) -> Result<(Autoencoder, StepStats), DpSgdError> {
        if self.step >= self.dp.steps {
            return Err(DpSgdError::InvalidParameter {
                name: "steps",
                value: self.dp.steps as f64,
                reason: "all accounted steps are spent",
            });
        }
        check_model(&model, self.config)?;
        let d = self.config.inputs;
        self.sample_batch();
        let b = self.batch.len() / d;
        let (mut flat, stats) = if b == 0 {
            // An empty batch still takes a (noise-only) step: skipping it would reveal emptiness.
            let stats = StepStats {
                employees: 0,
                batch_size: 0,
                loss_sum: 0.0,
                clipped: 0,
            };
            (vec![0.0f64; self.config.param_count()], stats)
        } else {
            let x =
                Tensor::<2>::from_data(TensorData::new(self.batch.clone(), [b, d]), &self.device);
            let clipped = grouped_clipped_sum(&model, x, &self.groups, self.dp.clip_norm)?;
            let stats = StepStats {
                employees: self.groups.len() - 1,
                batch_size: b,
                loss_sum: clipped.loss_sum,
                clipped: clipped.factors.iter().filter(|&&c| c < 1.0).count(),
            };
            (clipped.sum, stats)
        };
        // Noised while still in f64: an f32 sum of many employees is coarser than the lattice.
        if let Some(noise) = &self.noise {
            noise.privatize(&mut self.noise_rng, &mut flat);
        }
        let scale = 1.0 / self.expected_batch;
        let mut flat: Vec<f32> = flat.iter().map(|g| (g * scale) as f32).collect();
        if let Some((mu, anchor)) = &self.proximal {
            for ((g, w), a) in flat.iter_mut().zip(model.to_flat()?).zip(anchor) {
                *g += mu * (w - a);
            }
        }
        let grads = gradients_params(&model, self.config, &flat, &self.device)?;
        let model = self.optim.step(self.dp.learning_rate, model, grads);
        self.step += 1;
        Ok((model, stats))
    }
}

impl DpSgdTrainer<'_> {
    /// Fills `batch` with the rows of a Poisson sample of employees, at most
    /// [`MAX_ROWS_PER_EMPLOYEE`] each (uniform without replacement), and `groups` with where
    /// each employee's rows start.
    fn sample_batch(&mut self) {
        self.batch.clear();
        self.groups.clear();
        self.groups.push(0);
        let mut rows_in_batch = 0;
        for e in 0..self.rows.employees() {
            // q ∈ (0, 1] was validated, so this cannot panic.
            if !self.sampler.random_bool(self.dp.sampling_rate) {
                continue;
            }
            self.picked.clear();
            self.picked.extend_from_slice(self.rows.rows_of(e));
            let take = self.picked.len().min(MAX_ROWS_PER_EMPLOYEE);
            if take < self.picked.len() {
                // A partial Fisher–Yates shuffle: the first `take` are a uniform sample.
                for j in 0..take {
                    let k = self.sampler.random_range(j..self.picked.len());
                    self.picked.swap(j, k);
                }
            }
            for &i in &self.picked[..take] {
                self.batch.extend_from_slice(self.rows.row(i));
            }
            rows_in_batch += take;
            self.groups.push(rows_in_batch);
        }
    }
}

/// Checks that the model's layers have the shapes `config` describes.
fn check_model(model: &Autoencoder, config: AutoencoderConfig) -> Result<(), ModelError> {
    for (layer, (d_in, d_out)) in model.linears().into_iter().zip(config.layers()) {
        let dims = layer.weight.val().dims();
        if dims != [d_in, d_out] || layer.bias.is_none() {
            return Err(ModelError::Shape(format!(
                "model layer {dims:?} (bias: {}) does not match {config:?}",
                layer.bias.is_some()
            )));
        }
    }
    Ok(())
}

/// Whether a ReLU follows layer `l` (enc1 and dec1), mirroring [`Autoencoder::forward`]; the
/// ghost-vs-naive tests fail if the two ever disagree.
const RELU_AFTER: [bool; 4] = [true, false, true, false];

/// The clipped gradient sum of the batch `rows`, every row its own employee.
pub fn clipped_gradient_sum(
    model: &Autoencoder,
    config: AutoencoderConfig,
    rows: &[f32],
    clip_norm: f64,
    device: &Device,
) -> Result<ClippedSum, DpSgdError> {
    let singletons: Vec<usize> = (0..=rows.len() / config.inputs.max(1)).collect();
    clipped_employee_sum(model, config, rows, &singletons, clip_norm, device)
}

/// The clipped sum of the mean gradients of the employees whose rows are
/// `rows[groups[u]..groups[u + 1]]` (in rows), as one DP-SGD step computes it.
pub fn clipped_employee_sum(
    model: &Autoencoder,
    config: AutoencoderConfig,
    rows: &[f32],
    groups: &[usize],
    clip_norm: f64,
    device: &Device,
) -> Result<ClippedSum, DpSgdError> {
    check_parameter(
        "clip_norm",
        clip_norm,
        clip_norm.is_finite() && clip_norm > 0.0,
        "must be finite and positive",
    )?;
    let x = batch_tensor(model, config, rows, device)?;
    let c = grouped_clipped_sum(model, x, groups, clip_norm)?;
    Ok(ClippedSum {
        norms: c.norms,
        factors: c.factors,
        sum: c.sum.iter().map(|&v| v as f32).collect(),
        loss_sum: c.loss_sum,
    })
}

/// A batch's clipped sum as the mechanism keeps it: in `f64` until the noise is added.
struct Clipped {
    norms: Vec<f64>,
    factors: Vec<f32>,
    sum: Vec<f64>,
    loss_sum: f64,
}

/// Per-example gradients the slow way, one backward per row (for checking the ghost norms).
pub fn naive_per_example_gradients(
    model: &Autoencoder,
    config: AutoencoderConfig,
    rows: &[f32],
    device: &Device,
) -> Result<Vec<Vec<f32>>, DpSgdError> {
    batch_tensor(model, config, rows, device)?;
    rows.chunks_exact(config.inputs)
        .map(|row| batch_gradient_sum(model, config, row, device))
        .collect()
}

/// The ordinary gradient of the *summed* per-example losses through [`Autoencoder::forward`],
/// flat in [`Autoencoder::to_flat`] order (equals the clipped sum when nothing is clipped).
pub fn batch_gradient_sum(
    model: &Autoencoder,
    config: AutoencoderConfig,
    rows: &[f32],
    device: &Device,
) -> Result<Vec<f32>, DpSgdError> {
    let x = batch_tensor(model, config, rows, device)?;
    let loss = per_example_losses(model.forward(x.clone()), x).sum();
    let grads = loss.backward();
    let mut out = Vec::with_capacity(config.param_count());
    for layer in model.linears() {
        let w = layer.weight.val().grad(&grads).ok_or_else(no_grad)?;
        out.extend(to_vec(w.into_data())?);
        if let Some(bias) = &layer.bias {
            let b = bias.val().grad(&grads).ok_or_else(no_grad)?;
            out.extend(to_vec(b.into_data())?);
        }
    }
    Ok(out)
}

/// The error for a parameter that did not receive a gradient (a frozen model).
fn no_grad() -> DpSgdError {
    ModelError::Backend("a parameter received no gradient (is the model trainable?)".into()).into()
}

/// Checks shapes and finiteness and uploads `rows` as a `[b, inputs]` tensor.
fn batch_tensor(
    model: &Autoencoder,
    config: AutoencoderConfig,
    rows: &[f32],
    device: &Device,
) -> Result<Tensor<2>, DpSgdError> {
    config.check()?;
    check_model(model, config)?;
    let d = config.inputs;
    if rows.is_empty() || !rows.len().is_multiple_of(d) {
        return Err(ModelError::Shape(format!(
            "{} values do not form a non-empty batch of rows of {d}",
            rows.len()
        ))
        .into());
    }
    if rows.iter().any(|x| !x.is_finite()) {
        return Err(ModelError::Shape("the batch has NaN or infinite values".into()).into());
    }
    Ok(Tensor::from_data(
        TensorData::new(rows.to_vec(), [rows.len() / d, d]),
        device,
    ))
}

/// `loss_i`: the mean squared reconstruction error of each row, `[b, 1]` (as the anomaly score).
fn per_example_losses(reconstruction: Tensor<2>, x: Tensor<2>) -> Tensor<2> {
    (reconstruction - x).powi_scalar(2).mean_dim(1)
}

/// Employee norms and the clipped sum for a non-empty batch `x` (`[b, inputs]`, finite) whose
/// employees' rows are `groups[u]..groups[u + 1]` (see the module docs).
fn grouped_clipped_sum(
    model: &Autoencoder,
    x: Tensor<2>,
    groups: &[usize],
    clip_norm: f64,
) -> Result<Clipped, DpSgdError> {
    let [b, _] = x.dims();
    if groups.first() != Some(&0)
        || groups.last() != Some(&b)
        || groups.windows(2).any(|w| w[0] >= w[1])
    {
        return Err(ModelError::Shape(format!(
            "employee groups {groups:?} do not partition {b} rows"
        ))
        .into());
    }
    let device = x.device();
    let linears: [&Linear; 4] = model.linears();

    // Forward with constant parameters and a zero probe on each pre-activation. The probes are
    // the only tracked leaves, so the backward computes exactly the deltas we need and no
    // parameter gradients (which would be the un-clipped sum, useless here).
    let mut inputs: Vec<Tensor<2>> = Vec::with_capacity(4);
    let mut probes: Vec<Tensor<2>> = Vec::with_capacity(4);
    let mut max_width = 0usize;
    let mut h = x.clone();
    for (layer, relu_after) in linears.into_iter().zip(RELU_AFTER) {
        let w = layer.weight.val().inner();
        let [d_in, d_out] = w.dims();
        max_width = max_width.max(d_in).max(d_out);
        let probe = Tensor::<2>::zeros([b, d_out], &device).require_grad();
        // The layer input as a plain (non-autodiff) tensor: we need its values, not its graph.
        inputs.push(h.clone().inner());
        let mut s = h.matmul(w) + probe.clone();
        if let Some(bias) = &layer.bias {
            s = s + bias.val().inner().unsqueeze::<2>();
        }
        h = if relu_after { relu(s) } else { s };
        probes.push(probe);
    }
    let losses = per_example_losses(h, x);
    let grads = losses.clone().sum().backward();
    let loss_sum = to_vec(losses.inner().into_data())?
        .iter()
        .map(|&l| f64::from(l))
        .sum();

    let mut layers = Vec::with_capacity(4);
    for (probe, a) in probes.iter().zip(&inputs) {
        let delta = probe.grad(&grads).ok_or_else(no_grad)?;
        let [_, d_in] = a.dims();
        let [_, d_out] = delta.dims();
        let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect();
        layers.push(HostLayer {
            a: widen(to_vec(a.clone().into_data())?),
            delta: widen(to_vec(delta.into_data())?),
            d_in,
            d_out,
        });
    }
    let params: usize = layers.iter().map(|l| l.d_in * l.d_out + l.d_out).sum();
    let mut sum = vec![0.0f64; params];
    let mut mean = vec![0.0f64; params];
    let (mut norms, mut factors) = (Vec::new(), Vec::new());
    for w in groups.windows(2) {
        // A one-row employee needs no mean buffer: its norm is the ghost norm
        // `‖δ‖²(‖a‖² + 1)` per layer, and its clipped term goes straight into the sum.
        let single = w[1] - w[0] == 1;
        let norm = if single {
            one_row_norm(&layers, w[0])
        } else {
            employee_mean_gradient(&layers, w[0]..w[1], &mut mean);
            mean.iter().map(|g| g * g).sum::<f64>().sqrt()
        };
        // An employee whose gradient is not finite (a starting model the coordinator built to
        // overflow on some rows, or a diverged one) contributes nothing: a clipped term of norm
        // 0 is within C. Failing the step instead would make a dropout depend on one
        // employee's rows; the same work is done either way, so neither does the time.
        // The margin depends on public widths and this employee's own rows only: a bound taken
        // over the batch would let one employee's row count move everyone else's factor.
        let rows = (w[1] - w[0]).max(MAX_ROWS_PER_EMPLOYEE);
        let c = employee_factor(norm, clip_norm, max_width + rows);
        if single {
            add_one_row(&layers, w[0], c, &mut sum);
        } else {
            let (cf, mask) = keep_mask(c);
            for (acc, &g) in sum.iter_mut().zip(&mean) {
                *acc += f64::from_bits((cf * g).to_bits() & mask);
            }
        }
        norms.push(norm);
        factors.push(c);
    }
    Ok(Clipped {
        norms,
        factors,
        sum,
        loss_sum,
    })
}

/// One layer's input and pre-activation delta on the host, row-major, widened to `f64` once so
/// the per-employee loops are plain `f64` multiply-adds.
struct HostLayer {
    /// `[b, d_in]`.
    a: Vec<f64>,
    /// `[b, d_out]`.
    delta: Vec<f64>,
    d_in: usize,
    d_out: usize,
}

/// `c` as `f64` and a bit mask that keeps a product (`c > 0`) or turns it into `+0.0` (`c = 0`).
///
/// A dropped employee's gradient may hold NaN, and `0 · NaN` is NaN; masking the bits adds an
/// exact zero instead, without a branch, so the work does not depend on who is dropped.
fn keep_mask(c: f32) -> (f64, u64) {
    let mask = if c > 0.0 { u64::MAX } else { 0 };
    (f64::from(c), mask)
}

/// The gradient norm of row `i` alone: `√Σ_l ‖δ_i‖²(‖a_i‖² + 1)`, in `f64`.
fn one_row_norm(layers: &[HostLayer], i: usize) -> f64 {
    let square = |v: &[f64]| v.iter().map(|&x| x * x).sum::<f64>();
    layers
        .iter()
        .map(|l| {
            let a = &l.a[i * l.d_in..(i + 1) * l.d_in];
            let d = &l.delta[i * l.d_out..(i + 1) * l.d_out];
            square(d) * (square(a) + 1.0)
        })
        .sum::<f64>()
        .sqrt()
}

/// Adds `c` times row `i`'s gradient to `sum` (an explicit zero when `c = 0`: see
/// [`keep_mask`]).
fn add_one_row(layers: &[HostLayer], i: usize, c: f32, sum: &mut [f64]) {
    let (cf, mask) = keep_mask(c);
    let mut offset = 0;
    for l in layers {
        let (weight, rest) = sum[offset..].split_at_mut(l.d_in * l.d_out);
        let bias = &mut rest[..l.d_out];
        let a = &l.a[i * l.d_in..(i + 1) * l.d_in];
        let d = &l.delta[i * l.d_out..(i + 1) * l.d_out];
        for (&ap, row) in a.iter().zip(weight.chunks_exact_mut(l.d_out)) {
            let ca = cf * ap;
            for (g, &dq) in row.iter_mut().zip(d) {
                *g += f64::from_bits((ca * dq).to_bits() & mask);
            }
        }
        for (g, &dq) in bias.iter_mut().zip(d) {
            *g += f64::from_bits((cf * dq).to_bits() & mask);
        }
        offset += l.d_in * l.d_out + l.d_out;
    }
}

/// Writes into `mean` (flat in [`Autoencoder::to_flat`] order) the mean over `rows` of the
/// per-row gradients: `a_iᵀδ_i` for each layer's weight (`[d_in, d_out]`, row-major) and `δ_i`
/// for its bias, accumulated in `f64`.
fn employee_mean_gradient(layers: &[HostLayer], rows: std::ops::Range<usize>, mean: &mut [f64]) {
    mean.fill(0.0);
    let m = rows.len().max(1) as f64;
    let mut offset = 0;
    for l in layers {
        let (weight, rest) = mean[offset..].split_at_mut(l.d_in * l.d_out);
        let bias = &mut rest[..l.d_out];
        for i in rows.clone() {
            let ai = &l.a[i * l.d_in..(i + 1) * l.d_in];
            let di = &l.delta[i * l.d_out..(i + 1) * l.d_out];
            for (&ap, row) in ai.iter().zip(weight.chunks_exact_mut(l.d_out)) {
                for (g, &dq) in row.iter_mut().zip(di) {
                    *g += ap * dq;
                }
            }
            for (g, &dq) in bias.iter_mut().zip(di) {
                *g += dq;
            }
        }
        offset += l.d_in * l.d_out + l.d_out;
    }
    mean.iter_mut().for_each(|g| *g /= m);
}

/// An employee's clip factor `≈ min(1, C/‖g_u‖)`, as an `f32` rounded down; 0 for a norm that
/// is not finite (the employee is dropped).
///
/// `‖g_u‖` is computed in `f64` from `f32` activations and deltas of at most `terms` rows and
/// layer widths; the norm is inflated by `(terms + 12)·2⁻²³` before clipping, a margin that also
/// covers gradients recomputed another way in `f32` (the tests' one-backward-per-row check).
fn employee_factor(norm: f64, clip_norm: f64, terms: usize) -> f32 {
    if !norm.is_finite() {
        return 0.0;
    }
    let slack = 1.0 + (terms as f64 + 12.0) * f64::from(f32::EPSILON);
    clip_factor(norm * slack, clip_norm).map_or(0.0, round_down_f32)
}

/// The largest `f32` not above `x` (for `x ∈ (0, 1]`), so a clip factor never grows when narrowed.
fn round_down_f32(x: f64) -> f32 {
    let y = x as f32;
    if f64::from(y) > x { y.next_down() } else { y }
}

/// Registers a flat gradient (in [`Autoencoder::to_flat`] order) against the model's parameters.
fn gradients_params(
    model: &Autoencoder,
    config: AutoencoderConfig,
    flat: &[f32],
    device: &Device,
) -> Result<GradientsParams, DpSgdError> {
    if flat.len() != config.param_count() {
        return Err(ModelError::Shape(format!(
            "{} gradient values for {} parameters",
            flat.len(),
            config.param_count()
        ))
        .into());
    }
    let mut grads = GradientsParams::new();
    let mut rest = flat;
    for (layer, (d_in, d_out)) in model.linears().into_iter().zip(config.layers()) {
        let (w, tail) = rest.split_at(d_in * d_out);
        let (b, tail) = tail.split_at(d_out);
        rest = tail;
        // Gradients are plain tensors, as the ones burn's backward produces.
        let w = Tensor::<2>::from_data(TensorData::new(w.to_vec(), [d_in, d_out]), device).inner();
        grads.register(layer.weight.id, w);
        if let Some(bias) = &layer.bias {
            let b = Tensor::<1>::from_data(TensorData::new(b.to_vec(), [d_out]), device).inner();
            grads.register(bias.id, b);
        }
    }
    Ok(grads)
}

/// A tensor's values as `f32`.
fn to_vec(data: TensorData) -> Result<Vec<f32>, DpSgdError> {
    data.try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::training_device;
    use medfl_dp::PrivacyLoss;

    #[test]
    fn debug_output_hides_the_noise_seed() {
        let c = DpSgdConfig {
            seed: [0xab; 32],
            ..config()
        };
        let shown = format!("{c:?}");
        assert!(
            shown.contains("<secret>") && !shown.contains("171"),
            "{shown}"
        );
    }

    fn config() -> DpSgdConfig {
        DpSgdConfig {
            sampling_rate: 0.1,
            noise_multiplier: 1.0,
            clip_norm: 1.0,
            steps: 10,
            learning_rate: 1e-3,
            optimizer: DpOptimizer::Adam,
            delta: 1e-5,
            seed: [0; 32],
        }
    }

    #[test]
    fn round_down_never_rounds_up() {
        for x in [1.0, 0.1, 1.0 / 3.0, 0.999_999_999, 1e-30] {
            let y = round_down_f32(x);
            assert!(f64::from(y) <= x && f64::from(y.next_up()) > x, "{x}");
        }
    }

    #[test]
    fn employee_factors_respect_the_margin_and_drop_non_finite_norms() {
        // Norms 0.5 (kept) and 2 (clipped to 1/2 of itself, a hair below).
        assert_eq!(employee_factor(0.5, 1.0, 32), 1.0);
        let c = employee_factor(2.0, 1.0, 32);
        assert!(f64::from(c) * 2.0 < 1.0 && c > 0.4999);
        // Not finite: dropped.
        assert_eq!(employee_factor(f64::NAN, 1.0, 8), 0.0);
        assert_eq!(employee_factor(f64::INFINITY, 1.0, 8), 0.0);
    }

    #[test]
    fn accounting_charges_the_lattice_inflation() {
        let ae = AutoencoderConfig::for_inputs(22);
        let acc = config().accounting(ae).unwrap();
        assert!(acc.noise_std >= 1.0);
        assert!(acc.sensitivity > 1.0 && acc.sensitivity < 1.0 + 1e-4);
        assert!(acc.noise_multiplier < 1.0 && acc.noise_multiplier > 0.9999);
        // A slightly smaller multiplier can only cost more.
        let mut nominal = PrivacyLoss::new();
        nominal.compose_poisson_gaussian(0.1, 1.0, 10).unwrap();
        assert!(acc.epsilon >= nominal.epsilon(1e-5).unwrap());
        let none = DpSgdConfig {
            noise_multiplier: 0.0,
            ..config()
        };
        assert_eq!(none.accounting(ae).unwrap().epsilon, f64::INFINITY);
    }

    #[test]
    fn steps_for_epochs_rounds_up() {
        assert_eq!(DpSgdConfig::steps_for_epochs(0.3, 1.0).unwrap(), 4);
        assert_eq!(DpSgdConfig::steps_for_epochs(1.0, 2.0).unwrap(), 2);
        assert!(DpSgdConfig::steps_for_epochs(0.0, 1.0).is_err());
        assert!(DpSgdConfig::steps_for_epochs(0.5, f64::NAN).is_err());
    }

    #[test]
    fn empty_batches_take_noise_only_steps() {
        let device = training_device();
        let ae = AutoencoderConfig {
            inputs: 3,
            hidden: 4,
            latent: 2,
        };
        let data = [0.1f32, 0.2, 0.3];
        // q tiny: every batch of the single row is (almost surely) empty.
        let dp = DpSgdConfig {
            sampling_rate: 1e-9,
            steps: 3,
            ..config()
        };
        let model = Autoencoder::new(ae, 1, &device).unwrap();
        let before = model.to_flat().unwrap();
        let rows = EmployeeRows::one_per_row(&data, 3).unwrap();
        let (model, report) = train_dp(model, ae, &rows, dp, &device).unwrap();
        assert_eq!(report.empty_steps, 3);
        assert!(report.losses.iter().all(|l| l.is_nan()));
        assert_ne!(model.to_flat().unwrap(), before);
    }
}

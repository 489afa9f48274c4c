//! DP-SGD: ghost norms against one-backward-per-example gradients, the clipping bound, utility
//! on a toy problem, determinism, accounting, and parameter checks.

use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Tensor, TensorData};
use medfl_dp::{MemberBudget, PrivacyBudget, PrivacyLoss};
use medfl_model::dpsgd::{
    DpOptimizer, DpSgdConfig, DpSgdError, DpSgdTrainer, MAX_ROWS_PER_EMPLOYEE, batch_gradient_sum,
    clipped_employee_sum, clipped_gradient_sum, naive_per_example_gradients, train_dp,
};
use medfl_model::train::{score, training_device};
use medfl_model::{Autoencoder, AutoencoderConfig, EmployeeRows, ModelError};
use proptest::prelude::*;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

const SMALL: AutoencoderConfig = AutoencoderConfig {
    inputs: 6,
    hidden: 8,
    latent: 3,
};

/// Points on a 2-d plane embedded in 6 dimensions (as in the training tests).
fn toy(rows: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows)
        .flat_map(|_| {
            let (a, b): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            [a, b, a + b, a - b, 0.5 * a, -b]
        })
        .collect()
}

/// Uniform noise in `[-scale, scale]`.
fn noise(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Largest absolute difference, relative to the largest magnitude of `b`.
fn rel_max_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().map(|x| f64::from(x.abs())).fold(1e-30, f64::max);
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs())
        .fold(0.0, f64::max)
        / scale
}

fn dp_config() -> DpSgdConfig {
    DpSgdConfig {
        sampling_rate: 0.05,
        noise_multiplier: 1.0,
        clip_norm: 1.0,
        steps: 20,
        learning_rate: 1e-3,
        optimizer: DpOptimizer::Adam,
        delta: 1e-5,
        seed: [7; 32],
    }
}

#[test]
fn ghost_norms_and_clipped_sum_match_naive_per_example_gradients() {
    let device = training_device();
    let model = Autoencoder::new(SMALL, 3, &device).unwrap();
    // Mix ordinary and large rows so that some examples are clipped and some are not.
    let mut rows = toy(16, 4);
    for (x, n) in rows.iter_mut().zip(noise(16 * 6, 3.0, 5)).skip(48) {
        *x += n;
    }
    let naive = naive_per_example_gradients(&model, SMALL, &rows, &device).unwrap();
    let naive_norms: Vec<f64> = naive.iter().map(|g| l2(g)).collect();

    let ghost = clipped_gradient_sum(&model, SMALL, &rows, 1e30, &device).unwrap();
    for (g, n) in ghost.norms.iter().zip(&naive_norms) {
        assert!((g - n).abs() <= 1e-5 * n, "ghost {g} vs naive {n}");
    }

    // A clip norm at the median: about half the examples are clipped.
    let mut sorted = naive_norms.clone();
    sorted.sort_by(f64::total_cmp);
    let clip = sorted[sorted.len() / 2];
    let ghost = clipped_gradient_sum(&model, SMALL, &rows, clip, &device).unwrap();
    let clipped = ghost.factors.iter().filter(|&&c| c < 1.0).count();
    assert!((6..=10).contains(&clipped), "{clipped} clipped");
    let mut naive_sum = vec![0.0f64; SMALL.param_count()];
    for (g, n) in naive.iter().zip(&naive_norms) {
        let c = (clip / n).min(1.0);
        for (s, x) in naive_sum.iter_mut().zip(g) {
            *s += c * f64::from(*x);
        }
    }
    let naive_sum: Vec<f32> = naive_sum.iter().map(|&x| x as f32).collect();
    let diff = rel_max_diff(&ghost.sum, &naive_sum);
    let worst_norm = ghost
        .norms
        .iter()
        .zip(&naive_norms)
        .map(|(g, n)| (g - n).abs() / n)
        .fold(0.0, f64::max);
    eprintln!("ghost vs naive: norms {worst_norm:e}, clipped sum {diff:e} (relative)");
    assert!(diff < 1e-5, "clipped sums differ by {diff:e} (relative)");
}

#[test]
fn huge_clip_norm_gives_the_ordinary_summed_gradient() {
    let device = training_device();
    let model = Autoencoder::new(SMALL, 11, &device).unwrap();
    let rows = toy(64, 12);
    let ghost = clipped_gradient_sum(&model, SMALL, &rows, 1e30, &device).unwrap();
    assert!(ghost.factors.iter().all(|&c| c == 1.0));
    let ordinary = batch_gradient_sum(&model, SMALL, &rows, &device).unwrap();
    let diff = rel_max_diff(&ghost.sum, &ordinary);
    eprintln!("huge C vs ordinary summed gradient: {diff:e} (relative)");
    assert!(diff <= 1e-6, "relative difference {diff:e}");
}

#[test]
fn one_full_batch_step_without_noise_or_clipping_is_ordinary_sgd() {
    // q = 1, σ = 0, C huge, SGD: the DP step divides the summed gradient by N, which is the
    // gradient of train.rs's loss (mean over all N·d squared errors).
    let device = training_device();
    let rows = toy(32, 2);
    let dp = DpSgdConfig {
        sampling_rate: 1.0,
        noise_multiplier: 0.0,
        clip_norm: 1e30,
        steps: 1,
        learning_rate: 0.05,
        optimizer: DpOptimizer::Sgd,
        ..dp_config()
    };
    let (dp_model, report) = train_dp(
        Autoencoder::new(SMALL, 1, &device).unwrap(),
        SMALL,
        &EmployeeRows::one_per_row(&rows, SMALL.inputs).unwrap(),
        dp,
        &device,
    )
    .unwrap();
    assert_eq!(report.accounting.epsilon, f64::INFINITY);

    let model = Autoencoder::new(SMALL, 1, &device).unwrap();
    let x = Tensor::<2>::from_data(TensorData::new(rows.clone(), [32, 6]), &device);
    let loss = (model.forward(x.clone()) - x).powi_scalar(2).mean();
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let plain = SgdConfig::new().init().step(0.05, model, grads);
    let diff = rel_max_diff(&dp_model.to_flat().unwrap(), &plain.to_flat().unwrap());
    assert!(diff < 1e-6, "relative difference {diff:e}");
}

#[test]
fn the_noise_has_the_calibrated_scale() {
    // q = 1, tiny C, σC = 1: one SGD step with lr 1 moves each parameter by -(sum + noise)/N,
    // where the clipped sum is at most N·C = 0.01 and the noise has std 1, so by about 1/N.
    let device = training_device();
    let rows = toy(10, 3);
    let dp = DpSgdConfig {
        sampling_rate: 1.0,
        noise_multiplier: 1000.0,
        clip_norm: 1e-3,
        steps: 1,
        learning_rate: 1.0,
        optimizer: DpOptimizer::Sgd,
        ..dp_config()
    };
    let model = Autoencoder::new(SMALL, 1, &device).unwrap();
    let before = model.to_flat().unwrap();
    let (model, _) = train_dp(
        model,
        SMALL,
        &EmployeeRows::one_per_row(&rows, SMALL.inputs).unwrap(),
        dp,
        &device,
    )
    .unwrap();
    let moved: Vec<f64> = model
        .to_flat()
        .unwrap()
        .iter()
        .zip(&before)
        .map(|(a, b)| f64::from(a - b))
        .collect();
    let n = moved.len() as f64;
    let mean = moved.iter().sum::<f64>() / n;
    let std = (moved.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    // 169 parameters: the sample std is within about 6 % of 0.1 one time in 1.5.
    eprintln!(
        "noise: {} parameters, mean {mean:.4}, std {std:.4} (expected 0.1)",
        moved.len()
    );
    assert!((0.08..0.12).contains(&std), "std {std}");
    assert!(mean.abs() < 0.03, "mean {mean}");
}

proptest! {
    // No failure file: integration tests have no lib.rs next to them to anchor one.
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_clipped_per_example_gradient_is_within_the_clip_norm(
        seed in 0u64..1_000_000,
        rows in 1usize..12,
        scale in 0.01f32..20.0,
        clip in 1e-3f64..10.0,
    ) {
        let device = training_device();
        let model = Autoencoder::new(SMALL, seed, &device).unwrap();
        let data = noise(rows * 6, scale, seed ^ 0x5eed);
        let ghost = clipped_gradient_sum(&model, SMALL, &data, clip, &device).unwrap();
        let naive = naive_per_example_gradients(&model, SMALL, &data, &device).unwrap();
        for (g, &c) in naive.iter().zip(&ghost.factors) {
            // The clipped example as the mechanism scales it (c_i rounded to f32), measured
            // independently of the ghost norm, in f64.
            let norm = g
                .iter()
                .map(|&x| f64::from(x * c).powi(2))
                .sum::<f64>()
                .sqrt();
            prop_assert!(norm <= clip, "clipped norm {} > C = {}", norm, clip);
            prop_assert!(c > 0.0 && c <= 1.0);
        }
    }
}

/// Splits `rows` rows into employees of 1 to 5 rows, from `seed`.
fn random_groups(rows: usize, seed: u64) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut groups = vec![0];
    let mut at = 0;
    while at < rows {
        at = (at + rng.random_range(1..=5usize)).min(rows);
        groups.push(at);
    }
    groups
}

/// `Σ_{i∈u} f g_i` per employee in f64, with `f = c_u/m_u` rounded down as the mechanism does.
fn clipped_employees(naive: &[Vec<f32>], groups: &[usize], factors: &[f32]) -> Vec<Vec<f64>> {
    groups
        .windows(2)
        .zip(factors)
        .map(|(w, &c)| {
            let m = (w[1] - w[0]) as f64;
            let f = f64::from(c) / m;
            let f = f64::from(if (f as f32 as f64) > f {
                (f as f32).next_down()
            } else {
                f as f32
            });
            let mut g = vec![0.0f64; naive[0].len()];
            for row in &naive[w[0]..w[1]] {
                for (a, &x) in g.iter_mut().zip(row) {
                    *a += f * f64::from(x);
                }
            }
            g
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_clipped_employee_gradient_is_within_the_clip_norm(
        seed in 0u64..1_000_000,
        rows in 1usize..16,
        scale in 0.01f32..20.0,
        clip in 1e-3f64..10.0,
    ) {
        let device = training_device();
        let model = Autoencoder::new(SMALL, seed, &device).unwrap();
        let data = noise(rows * 6, scale, seed ^ 0x5eed);
        let groups = random_groups(rows, seed);
        let sum = clipped_employee_sum(&model, SMALL, &data, &groups, clip, &device).unwrap();
        prop_assert_eq!(sum.factors.len(), groups.len() - 1);
        let naive = naive_per_example_gradients(&model, SMALL, &data, &device).unwrap();
        for g in clipped_employees(&naive, &groups, &sum.factors) {
            let norm = g.iter().map(|x| x * x).sum::<f64>().sqrt();
            prop_assert!(norm <= clip, "clipped employee norm {} > C = {}", norm, clip);
        }
    }
}

#[test]
fn without_clipping_the_employee_sum_is_the_sum_of_employee_mean_gradients() {
    let device = training_device();
    let model = Autoencoder::new(SMALL, 3, &device).unwrap();
    let rows = toy(20, 6);
    let groups = random_groups(20, 6);
    let sum = clipped_employee_sum(&model, SMALL, &rows, &groups, 1e30, &device).unwrap();
    assert!(sum.factors.iter().all(|&c| c == 1.0));
    let naive = naive_per_example_gradients(&model, SMALL, &rows, &device).unwrap();
    let mut expected = vec![0.0f64; naive[0].len()];
    for g in clipped_employees(&naive, &groups, &sum.factors) {
        expected.iter_mut().zip(g).for_each(|(a, x)| *a += x);
    }
    let expected: Vec<f32> = expected.iter().map(|&x| x as f32).collect();
    let diff = rel_max_diff(&sum.sum, &expected);
    assert!(diff <= 1e-5, "relative difference {diff:e}");
    // And the employees' norms are the norms of those means.
    for (norm, g) in sum
        .norms
        .iter()
        .zip(clipped_employees(&naive, &groups, &sum.factors))
    {
        let n = g.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - n).abs() <= 1e-4 * n.max(1e-6), "{norm} vs {n}");
    }
}

#[test]
fn removing_one_employee_moves_the_clipped_sum_by_at_most_the_clip_norm() {
    // The sensitivity the accountant assumes, checked on the mechanism: employees with many
    // large rows, the third (rows 6..13) removed.
    let device = training_device();
    let model = Autoencoder::new(SMALL, 8, &device).unwrap();
    let data = noise(20 * 6, 5.0, 9);
    let groups = [0, 3, 6, 13, 20];
    let clip = 0.5;
    let all = clipped_employee_sum(&model, SMALL, &data, &groups, clip, &device).unwrap();
    assert!(
        all.norms[2] > 10.0 * clip,
        "the removed employee must be clipped"
    );
    let without: Vec<f32> = data[..6 * 6]
        .iter()
        .chain(&data[13 * 6..])
        .copied()
        .collect();
    let rest =
        clipped_employee_sum(&model, SMALL, &without, &[0, 3, 6, 13], clip, &device).unwrap();
    let moved = all
        .sum
        .iter()
        .zip(&rest.sum)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        moved <= clip * (1.0 + 1e-5),
        "one employee moved the sum by {moved}"
    );
    assert!(
        moved > 0.9 * clip,
        "a clipped employee should contribute about C: {moved}"
    );
}

#[test]
fn employee_level_training_samples_employees_not_rows() {
    // 200 employees of 1 to 100 rows each: a step holds about qN employees and at most
    // MAX_ROWS_PER_EMPLOYEE rows of each, and training still learns the plane.
    let device = training_device();
    let config = AutoencoderConfig {
        inputs: 6,
        hidden: 16,
        latent: 2,
    };
    let mut employee_of_row = Vec::new();
    for e in 0..200u64 {
        employee_of_row.extend(std::iter::repeat_n(e, 1 + (e as usize * 37) % 100));
    }
    let data = toy(employee_of_row.len(), 11);
    let rows = EmployeeRows::new(&data, 6, &employee_of_row).unwrap();
    assert_eq!(rows.employees(), 200);
    let q = 0.25;
    let dp = DpSgdConfig {
        sampling_rate: q,
        noise_multiplier: 0.8,
        clip_norm: 1.0,
        steps: DpSgdConfig::steps_for_epochs(q, 30.0).unwrap(),
        learning_rate: 5e-3,
        optimizer: DpOptimizer::Adam,
        delta: 1e-5,
        seed: [4; 32],
    };
    let model = Autoencoder::new(config, 1, &device).unwrap();
    let held_out = toy(512, 12);
    let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
    let before = mean(score(&model, &held_out, 6, &device).unwrap());
    let (model, report) = train_dp(model, config, &rows, dp, &device).unwrap();
    let after = mean(score(&model, &held_out, 6, &device).unwrap());
    let per_step = report.sampled_employees as f64 / report.steps as f64;
    assert!(
        (per_step - q * 200.0).abs() < 10.0,
        "{per_step} employees a step, expected about {}",
        q * 200.0
    );
    assert!(report.sampled_rows <= report.sampled_employees * MAX_ROWS_PER_EMPLOYEE as u64);
    assert!(
        report.sampled_rows > report.sampled_employees * 20,
        "long histories should fill their rows: {report:?}"
    );
    assert!(after < 0.5 * before, "held-out loss {before} -> {after}");
    eprintln!(
        "employee-level DP-SGD toy: loss {before:.4} -> {after:.4}, eps = {:.3}, {} steps",
        report.accounting.epsilon, report.steps
    );
}

#[test]
fn dp_training_still_lowers_the_loss() {
    let device = training_device();
    let config = AutoencoderConfig {
        inputs: 6,
        hidden: 16,
        latent: 2,
    };
    let data = toy(4096, 1);
    let q = 128.0 / 4096.0;
    let dp = DpSgdConfig {
        sampling_rate: q,
        noise_multiplier: 1.0,
        clip_norm: 1.0,
        steps: DpSgdConfig::steps_for_epochs(q, 15.0).unwrap(),
        learning_rate: 3e-3,
        optimizer: DpOptimizer::Adam,
        delta: 1e-5,
        seed: [1; 32],
    };
    let model = Autoencoder::new(config, 1, &device).unwrap();
    let held_out = toy(512, 2);
    let mean = |v: Vec<f32>| v.iter().sum::<f32>() / v.len() as f32;
    let before = mean(score(&model, &held_out, 6, &device).unwrap());
    let (model, report) = train_dp(
        model,
        config,
        &EmployeeRows::one_per_row(&data, config.inputs).unwrap(),
        dp,
        &device,
    )
    .unwrap();
    let after = mean(score(&model, &held_out, 6, &device).unwrap());
    assert!(
        after < 0.3 * before,
        "held-out loss {before} -> {after}; epochs {:?}",
        report.losses
    );
    let first = report.losses[0];
    let last = report.losses[report.losses.len() - 1];
    assert!(last < first, "{:?}", report.losses);
    let eps = report.accounting.epsilon;
    assert!(eps.is_finite() && eps > 0.0 && eps < 10.0, "epsilon {eps}");
    eprintln!(
        "DP-SGD toy: loss {before:.4} -> {after:.4}, eps = {eps:.3} at delta 1e-5, {} steps, \
         {} of {} sampled rows clipped",
        report.steps, report.clipped_employees, report.sampled_employees
    );
}

#[test]
fn same_seed_gives_bit_identical_parameters() {
    let device = training_device();
    let data = toy(256, 3);
    let run = |seed: u64| {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let dp = DpSgdConfig {
            sampling_rate: 0.1,
            steps: 15,
            seed: key,
            ..dp_config()
        };
        let model = Autoencoder::new(SMALL, 5, &device).unwrap();
        let (model, report) = train_dp(
            model,
            SMALL,
            &EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap(),
            dp,
            &device,
        )
        .unwrap();
        (model.to_flat().unwrap(), report)
    };
    let (a, ra) = run(1);
    let (b, rb) = run(1);
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(ra, rb);
    let (c, _) = run(2);
    assert_ne!(a, c);
}

#[test]
fn accounting_is_the_subsampled_gaussian_at_the_effective_multiplier() {
    let dp = DpSgdConfig {
        sampling_rate: 0.01,
        noise_multiplier: 1.1,
        steps: 1000,
        ..dp_config()
    };
    let acc = dp.accounting(AutoencoderConfig::for_inputs(22)).unwrap();
    let mut reference = PrivacyLoss::new();
    reference
        .compose_poisson_gaussian(0.01, acc.noise_multiplier, 1000)
        .unwrap();
    assert_eq!(acc.epsilon, reference.epsilon(1e-5).unwrap());
    assert!(acc.noise_multiplier < 1.1 && acc.noise_multiplier > 1.1 * (1.0 - 1e-4));
    // The event charges a member's budget before training.
    let mut member = MemberBudget::new(PrivacyBudget::new(10.0, 1e-5).unwrap());
    let spent = member.charge(&acc.event).unwrap();
    assert!((spent - acc.epsilon).abs() < 1e-12);
}

#[test]
fn the_trainer_refuses_steps_beyond_the_accounted_count() {
    let device = training_device();
    let data = toy(64, 1);
    let dp = DpSgdConfig {
        steps: 2,
        ..dp_config()
    };
    let rows = EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap();
    let mut trainer = DpSgdTrainer::new(SMALL, &rows, dp, &device).unwrap();
    let mut model = Autoencoder::new(SMALL, 1, &device).unwrap();
    for _ in 0..2 {
        model = trainer.step(model).unwrap().0;
    }
    assert!(matches!(
        trainer.step(model),
        Err(DpSgdError::InvalidParameter { name: "steps", .. })
    ));
}

#[test]
fn bad_parameters_are_typed_errors() {
    let device = training_device();
    let data = toy(32, 1);
    let bad: [(&str, DpSgdConfig); 14] = [
        (
            "sampling_rate",
            DpSgdConfig {
                sampling_rate: 0.0,
                ..dp_config()
            },
        ),
        (
            "sampling_rate",
            DpSgdConfig {
                sampling_rate: 1.5,
                ..dp_config()
            },
        ),
        (
            "sampling_rate",
            DpSgdConfig {
                sampling_rate: f64::NAN,
                ..dp_config()
            },
        ),
        (
            "noise_multiplier",
            DpSgdConfig {
                noise_multiplier: -1.0,
                ..dp_config()
            },
        ),
        (
            "noise_multiplier",
            DpSgdConfig {
                noise_multiplier: f64::NAN,
                ..dp_config()
            },
        ),
        (
            "noise_multiplier",
            DpSgdConfig {
                noise_multiplier: f64::INFINITY,
                ..dp_config()
            },
        ),
        (
            "clip_norm",
            DpSgdConfig {
                clip_norm: 0.0,
                ..dp_config()
            },
        ),
        (
            "clip_norm",
            DpSgdConfig {
                clip_norm: -1.0,
                ..dp_config()
            },
        ),
        (
            "clip_norm",
            DpSgdConfig {
                clip_norm: f64::INFINITY,
                ..dp_config()
            },
        ),
        (
            "steps",
            DpSgdConfig {
                steps: 0,
                ..dp_config()
            },
        ),
        (
            "learning_rate",
            DpSgdConfig {
                learning_rate: 0.0,
                ..dp_config()
            },
        ),
        (
            "learning_rate",
            DpSgdConfig {
                learning_rate: f64::NAN,
                ..dp_config()
            },
        ),
        (
            "delta",
            DpSgdConfig {
                delta: 0.0,
                ..dp_config()
            },
        ),
        (
            "delta",
            DpSgdConfig {
                delta: 1.0,
                ..dp_config()
            },
        ),
    ];
    for (name, dp) in bad {
        let model = Autoencoder::new(SMALL, 1, &device).unwrap();
        match train_dp(
            model,
            SMALL,
            &EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap(),
            dp,
            &device,
        ) {
            Err(DpSgdError::InvalidParameter { name: n, .. }) => assert_eq!(n, name, "{dp:?}"),
            other => panic!(
                "{dp:?}: expected an invalid `{name}`, got {other:?}",
                other = other.err()
            ),
        }
    }
    // q so small that dividing by qN would overflow f32.
    let tiny = DpSgdConfig {
        sampling_rate: 1e-300,
        ..dp_config()
    };
    let model = Autoencoder::new(SMALL, 1, &device).unwrap();
    assert!(matches!(
        train_dp(
            model,
            SMALL,
            &EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap(),
            tiny,
            &device
        ),
        Err(DpSgdError::InvalidParameter {
            name: "sampling_rate",
            ..
        })
    ));
    // A noise scale σC beyond what the lattice sampler supports comes back from medfl-dp.
    let huge = DpSgdConfig {
        noise_multiplier: 1e10,
        clip_norm: 1e10,
        ..dp_config()
    };
    let model = Autoencoder::new(SMALL, 1, &device).unwrap();
    assert!(matches!(
        train_dp(
            model,
            SMALL,
            &EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap(),
            huge,
            &device
        ),
        Err(DpSgdError::Dp(_))
    ));

    // Data that is ragged, empty, or not finite; a model of another shape.
    let shape_err =
        |r: Result<_, DpSgdError>| matches!(r, Err(DpSgdError::Model(ModelError::Shape(_))));
    let model = || Autoencoder::new(SMALL, 1, &device).unwrap();
    assert!(shape_err(
        EmployeeRows::one_per_row(&data[..7], SMALL.inputs)
            .map(|_| ())
            .map_err(DpSgdError::from)
    ));
    assert!(shape_err(
        EmployeeRows::one_per_row(&[], SMALL.inputs)
            .map(|_| ())
            .map_err(DpSgdError::from)
    ));
    let mut nan = data.clone();
    nan[3] = f32::NAN;
    assert!(shape_err(
        EmployeeRows::new(&nan, SMALL.inputs, &[0; 64])
            .map(|_| ())
            .map_err(DpSgdError::from)
    ));
    // Rows of another width than the model's inputs.
    let narrow = EmployeeRows::one_per_row(&data, 3).unwrap();
    assert!(shape_err(
        train_dp(model(), SMALL, &narrow, dp_config(), &device).map(|_| ())
    ));
    let other = AutoencoderConfig { hidden: 9, ..SMALL };
    let wrong = Autoencoder::new(other, 1, &device).unwrap();
    assert!(shape_err(
        train_dp(
            wrong,
            SMALL,
            &EmployeeRows::one_per_row(&data, SMALL.inputs).unwrap(),
            dp_config(),
            &device
        )
        .map(|_| ())
    ));
    assert!(matches!(
        clipped_gradient_sum(&model(), SMALL, &data, f64::NAN, &device),
        Err(DpSgdError::InvalidParameter {
            name: "clip_norm",
            ..
        })
    ));
}

#[test]
fn an_employee_whose_gradient_overflows_contributes_nothing_and_the_step_goes_on() {
    // A starting model built to overflow on rows of one pattern: feature 0 feeds the first
    // layer with weight 3e38, everything else is moderate. Rows with feature 0 = 0 stay finite
    // (and have real gradients); rows with feature 0 = 1 overflow. Failing the step would make
    // a dropout depend on whether such a row exists; the overflowing employees are dropped, and
    // the sum is what the others alone give.
    let device = training_device();
    let template = Autoencoder::new(SMALL, 1, &device).unwrap();
    let mut params = vec![0.3f32; SMALL.param_count()];
    let (d_in, d_out) = SMALL.layers()[0];
    assert_eq!(d_in, 6);
    params[..d_out].fill(3e38); // row 0 of W1: input feature 0; the next layer overflows
    let model = template.load_flat(SMALL, &params).unwrap();
    let honest = |n: usize, seed: u64| -> Vec<f32> {
        let mut r = noise(n * 6, 1.0, seed);
        r.iter_mut().for_each(|x| *x = x.abs());
        r.chunks_exact_mut(6).for_each(|row| row[0] = 0.0);
        r
    };
    let bad = |n: usize| -> Vec<f32> {
        (0..n)
            .flat_map(|_| [1.0f32, 0.5, 0.5, 0.5, 0.5, 0.5])
            .collect()
    };
    let (h1, h2, h3) = (honest(3, 1), honest(1, 2), honest(2, 3));
    // Employees: honest 3 rows, bad 2 rows, honest 1 row, bad 1 row (the one-row path), honest 2.
    let rows: Vec<f32> = [h1.clone(), bad(2), h2.clone(), bad(1), h3.clone()].concat();
    let groups = [0, 3, 5, 6, 7, 9];
    let sum = clipped_employee_sum(&model, SMALL, &rows, &groups, 1.0, &device).unwrap();
    assert_eq!(sum.factors[1], 0.0, "the overflowing employee is dropped");
    assert_eq!(
        sum.factors[3], 0.0,
        "the overflowing one-row employee is dropped"
    );
    assert!(sum.factors[0] > 0.0 && sum.factors[2] > 0.0 && sum.factors[4] > 0.0);
    let alone: Vec<f32> = [h1, h2, h3].concat();
    let others = clipped_employee_sum(&model, SMALL, &alone, &[0, 3, 4, 6], 1.0, &device).unwrap();
    assert!(
        others.sum.iter().any(|&x| x != 0.0),
        "the honest rows have gradients"
    );
    let diff = rel_max_diff(&sum.sum, &others.sum);
    assert!(
        diff <= 1e-6,
        "the dropped employees changed the sum: {diff:e}"
    );
    // Everyone overflowing: a zero (noise-only) step, not an error.
    let sum = clipped_employee_sum(&model, SMALL, &bad(2), &[0, 2], 1.0, &device).unwrap();
    assert_eq!(sum.factors, vec![0.0]);
    assert!(sum.sum.iter().all(|&x| x == 0.0));
}

//! The anomaly model: an autoencoder trained on normal access, scoring each event by how badly
//! it reconstructs it.
//!
//! Trained on (mostly) normal traffic, the network learns the shape of ordinary access; an
//! event unlike anything it saw (a billing clerk reading notes at 3 a.m. from a new IP)
//! reconstructs poorly. The score is the mean squared reconstruction error of the feature
//! vector (after the model file's transform, the identity for federated models).
//!
//! Parameters travel as one flat `Vec<f32>` (layer by layer: weight row-major, then bias), the
//! unit federated averaging and secure aggregation work on. Initial parameters are drawn from a
//! seeded ChaCha generator, not burn's device RNG, so a model is bit-reproducible from its seed.

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};
use rand::RngExt;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::ModelError;

/// Layer sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoencoderConfig {
    /// Input width (number of features).
    pub inputs: usize,
    /// Hidden width of encoder and decoder.
    pub hidden: usize,
    /// Bottleneck width.
    pub latent: usize,
}

impl AutoencoderConfig {
    /// The default shape for `inputs` features: `inputs -> 32 -> 8 -> 32 -> inputs`.
    pub fn for_inputs(inputs: usize) -> AutoencoderConfig {
        AutoencoderConfig {
            inputs,
            hidden: 32,
            latent: 8,
        }
    }

    /// `(d_in, d_out)` of each layer, in order.
    pub fn layers(&self) -> [(usize, usize); 4] {
        [
            (self.inputs, self.hidden),
            (self.hidden, self.latent),
            (self.latent, self.hidden),
            (self.hidden, self.inputs),
        ]
    }

    /// Length of the flat parameter vector.
    pub fn param_count(&self) -> usize {
        self.layers().iter().map(|(i, o)| i * o + o).sum()
    }

    /// Checks that every width is positive.
    pub fn check(&self) -> Result<(), ModelError> {
        if self.inputs == 0 || self.hidden == 0 || self.latent == 0 {
            return Err(ModelError::Shape(format!(
                "layer widths must be positive: {self:?}"
            )));
        }
        Ok(())
    }
}

/// The network.
#[derive(Module, Debug)]
pub struct Autoencoder {
    enc1: Linear,
    enc2: Linear,
    dec1: Linear,
    dec2: Linear,
}

impl Autoencoder {
    /// A network with Kaiming-uniform weights and zero biases drawn from `seed`.
    pub fn new(
        config: AutoencoderConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Autoencoder, ModelError> {
        config.check()?;
        let [a, b, c, d] = config
            .layers()
            .map(|(i, o)| LinearConfig::new(i, o).init(device));
        let model = Autoencoder {
            enc1: a,
            enc2: b,
            dec1: c,
            dec2: d,
        };
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut flat = Vec::with_capacity(config.param_count());
        for (d_in, d_out) in config.layers() {
            let bound = (6.0 / d_in as f64).sqrt() as f32;
            flat.extend((0..d_in * d_out).map(|_| rng.random_range(-bound..bound)));
            flat.extend(std::iter::repeat_n(0.0, d_out));
        }
        model.load_flat(config, &flat)
    }

    /// Reconstructs a batch `[rows, inputs]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.enc1.forward(x));
        let z = self.enc2.forward(h);
        let h = relu(self.dec1.forward(z));
        self.dec2.forward(h)
    }

    /// Per-row mean squared reconstruction error: the anomaly score.
    pub fn score_batch(&self, x: Tensor<2>) -> Tensor<1> {
        let err = (self.forward(x.clone()) - x).powi_scalar(2);
        err.mean_dim(1).squeeze_dim(1)
    }

    pub(crate) fn linears(&self) -> [&Linear; 4] {
        [&self.enc1, &self.enc2, &self.dec1, &self.dec2]
    }

    /// The parameters as one flat vector.
    pub fn to_flat(&self) -> Result<Vec<f32>, ModelError> {
        let mut out = Vec::new();
        for layer in self.linears() {
            out.extend(tensor_to_vec(layer.weight.val().into_data())?);
            if let Some(bias) = &layer.bias {
                out.extend(tensor_to_vec(bias.val().into_data())?);
            }
        }
        Ok(out)
    }

    /// Replaces the parameters with `flat`, keeping each parameter's id (an optimizer's state is
    /// keyed on it) and its trainability.
    pub fn load_flat(
        self,
        config: AutoencoderConfig,
        flat: &[f32],
    ) -> Result<Autoencoder, ModelError> {
        if flat.len() != config.param_count() {
            return Err(ModelError::Shape(format!(
                "{} parameters given, the {:?} network has {}",
                flat.len(),
                config,
                config.param_count()
            )));
        }
        let mut rest = flat;
        let mut take = |n: usize| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head.to_vec()
        };
        let Autoencoder {
            enc1,
            enc2,
            dec1,
            dec2,
        } = self;
        let mut load = |layer: Linear, (d_in, d_out): (usize, usize)| -> Linear {
            let w = take(d_in * d_out);
            let b = take(d_out);
            let Linear { weight, bias } = layer;
            let weight = replace(weight, w);
            let bias = bias.map(|p| replace(p, b));
            Linear { weight, bias }
        };
        let [l1, l2, l3, l4] = config.layers();
        Ok(Autoencoder {
            enc1: load(enc1, l1),
            enc2: load(enc2, l2),
            dec1: load(dec1, l3),
            dec2: load(dec2, l4),
        })
    }
}

/// Swaps a parameter's values for `values` (same shape), keeping its id and state.
fn replace<const D: usize>(param: Param<Tensor<D>>, values: Vec<f32>) -> Param<Tensor<D>> {
    param.map(|old| {
        let shape = old.shape();
        let device = old.device();
        let fresh = Tensor::from_data(TensorData::new(values, shape), &device);
        // A fresh tensor is a constant; a trainable parameter must stay a tracked leaf.
        if old.is_require_grad() {
            fresh.require_grad()
        } else {
            fresh
        }
    })
}

fn tensor_to_vec(data: TensorData) -> Result<Vec<f32>, ModelError> {
    data.try_into_vec::<f32>()
        .map_err(|e| ModelError::Backend(format!("{e:?}")))
}

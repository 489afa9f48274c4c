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

use crate::{AutoencoderConfig, ModelError};

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
        let flat = config.initial_params(seed);
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

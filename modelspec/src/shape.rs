//! The network's shape: layer widths, the flat parameter layout, and the seeded starting point.
//!
//! Parameters travel as one flat `Vec<f32>` (layer by layer: weight row-major, then bias), the
//! unit federated averaging and secure aggregation work on. Initial parameters are drawn from a
//! seeded ChaCha generator, not a tensor backend's device RNG, so a model is bit-reproducible
//! from its seed and the protocol can build the first model without linking a backend.

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

    /// Kaiming-uniform weights and zero biases drawn from `seed`, in the flat layout.
    pub fn initial_params(&self, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut flat = Vec::with_capacity(self.param_count());
        for (d_in, d_out) in self.layers() {
            let bound = (6.0 / d_in as f64).sqrt() as f32;
            flat.extend((0..d_in * d_out).map(|_| rng.random_range(-bound..bound)));
            flat.extend(std::iter::repeat_n(0.0, d_out));
        }
        flat
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

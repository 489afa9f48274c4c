//! The global model as the protocol moves it: a model file with the identity feature transform.
//!
//! Features have a fixed public scale, and each hospital calibrates its own alert threshold,
//! which never leaves the building: only the network's parameters are federated. The shared
//! file therefore carries the identity transform and a zero threshold, and its SHA-256 is the
//! hash anchored on the ledger.

use medfl_ledger::Hash;
use medfl_model::modelfile::ModelFile;
use medfl_model::standardize::Standardizer;
use medfl_model::train::training_device;
use medfl_model::{Autoencoder, AutoencoderConfig};
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;

/// Bytes per model chunk on the wire.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest parameter magnitude a model the protocol accepts may have.
///
/// The first round's starting model is the coordinator's choice. With features in `[0, 2]` and
/// every parameter within `±B`, the autoencoder's activations, loss and gradients stay below
/// roughly `4·10^5·B^8·B` (four layers of width ≤ 32), far inside `f32` at `B = 100` (about
/// `10^29` against `3·10^38`), so no starting model can make training overflow on rows of a
/// chosen pattern. Trained models stay orders of magnitude below it.
pub const MAX_PARAMETER: f32 = 100.0;

/// A global model and its hash.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalModel {
    /// Shape and parameters (identity standardizer, zero threshold).
    pub file: ModelFile,
    /// SHA-256 of the file's bytes.
    pub hash: Hash,
}

/// The SHA-256 of some bytes, as the ledger's hash type.
pub fn sha256(bytes: &[u8]) -> Hash {
    Hash(Sha256::digest(bytes).into())
}

impl GlobalModel {
    /// Wraps flat parameters of a network of shape `config`.
    pub fn from_params(config: AutoencoderConfig, params: Vec<f32>) -> Result<Self, ProtocolError> {
        let file = ModelFile {
            config,
            standardizer: Standardizer::identity(config.inputs),
            threshold: 0.0,
            params,
        };
        let hash = sha256(&file.to_bytes()?);
        Ok(GlobalModel { file, hash })
    }

    /// The freshly initialised network every consortium starts from, fixed by `seed`.
    pub fn initial(config: AutoencoderConfig, seed: u64) -> Result<Self, ProtocolError> {
        let params = Autoencoder::new(config, seed, &training_device())?.to_flat()?;
        Self::from_params(config, params)
    }

    /// Parses bytes, checking the shape, the announced hash and [`MAX_PARAMETER`].
    pub fn from_bytes(
        bytes: &[u8],
        config: AutoencoderConfig,
        expected: &Hash,
    ) -> Result<Self, ProtocolError> {
        let got = sha256(bytes);
        if got != *expected {
            return Err(ProtocolError::ModelMismatch {
                expected: *expected,
                got,
            });
        }
        let file = ModelFile::from_bytes(bytes)
            .map_err(|e| ProtocolError::invalid("model", e.to_string()))?;
        if file.config != config {
            return Err(ProtocolError::invalid(
                "model",
                format!("shape {:?}, the round says {config:?}", file.config),
            ));
        }
        if let Some(i) = file.params.iter().position(|p| p.abs() > MAX_PARAMETER) {
            return Err(ProtocolError::invalid(
                "model",
                format!(
                    "parameter {i} is {}, beyond ±{MAX_PARAMETER}",
                    file.params[i]
                ),
            ));
        }
        Ok(GlobalModel { file, hash: got })
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(self.file.to_bytes()?)
    }
}

/// Size in bytes of the model file of a network of shape `config`.
pub fn file_len(config: AutoencoderConfig) -> usize {
    20 + 4 * (1 + 2 * config.inputs + config.param_count())
}

/// Reassembles a model from chunks, refusing gaps, overlaps and anything past the expected size.
#[derive(Debug)]
pub struct ChunkAssembler {
    bytes: Vec<u8>,
    expected: usize,
}

impl ChunkAssembler {
    /// Expects exactly `expected` bytes.
    pub fn new(expected: usize) -> Self {
        ChunkAssembler {
            bytes: Vec::with_capacity(expected),
            expected,
        }
    }

    /// Appends the chunk at `offset` (chunks arrive in order); returns the bytes once complete.
    pub fn push(
        &mut self,
        offset: u64,
        total: u64,
        chunk: &[u8],
    ) -> Result<Option<Vec<u8>>, ProtocolError> {
        if total != self.expected as u64 {
            return Err(ProtocolError::invalid(
                "model chunk",
                format!("total {total} bytes, expected {}", self.expected),
            ));
        }
        if offset != self.bytes.len() as u64 {
            return Err(ProtocolError::invalid(
                "model chunk",
                format!("offset {offset}, expected {}", self.bytes.len()),
            ));
        }
        if chunk.is_empty()
            || chunk.len() > CHUNK_BYTES
            || self.bytes.len() + chunk.len() > self.expected
        {
            return Err(ProtocolError::invalid(
                "model chunk",
                "empty, too long, or past the end",
            ));
        }
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() == self.expected {
            return Ok(Some(std::mem::take(&mut self.bytes)));
        }
        Ok(None)
    }
}

/// Splits `bytes` into wire chunks `(offset, chunk)`.
pub fn chunks(bytes: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, c)| ((i * CHUNK_BYTES) as u64, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_and_bad_ones_are_refused() {
        let config = AutoencoderConfig {
            inputs: 500,
            hidden: 600,
            latent: 8,
        };
        let params: Vec<f32> = (0..config.param_count()).map(|i| i as f32 * 1e-6).collect();
        let m = GlobalModel::from_params(config, params).unwrap();
        let bytes = m.to_bytes().unwrap();
        assert_eq!(bytes.len(), file_len(config));
        assert!(
            bytes.len() > CHUNK_BYTES,
            "the test needs more than one chunk"
        );
        let mut a = ChunkAssembler::new(file_len(config));
        let mut done = None;
        for (off, c) in chunks(&bytes) {
            done = a.push(off, bytes.len() as u64, c).unwrap();
        }
        let back = GlobalModel::from_bytes(&done.unwrap(), config, &m.hash).unwrap();
        assert_eq!(back, m);

        let mut a = ChunkAssembler::new(file_len(config));
        assert!(a.push(1, bytes.len() as u64, &bytes[..10]).is_err(), "gap");
        assert!(
            a.push(0, bytes.len() as u64 + 1, &bytes[..10]).is_err(),
            "wrong total"
        );
        let mut tampered = bytes.clone();
        tampered[100] ^= 1;
        assert!(matches!(
            GlobalModel::from_bytes(&tampered, config, &m.hash),
            Err(ProtocolError::ModelMismatch { .. })
        ));
    }
}

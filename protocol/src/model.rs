//! The global model as the protocol moves it: a model file with the identity feature transform.
//!
//! Features have a fixed public scale, and each hospital calibrates its own alert threshold,
//! which never leaves the building: only the network's parameters are federated. The shared
//! file therefore carries the identity transform and a zero threshold, and its SHA-256 is the
//! hash anchored on the ledger.

use medfl_ledger::Hash;
use medfl_modelspec::AutoencoderConfig;
use medfl_modelspec::modelfile::ModelFile;
use medfl_modelspec::standardize::Standardizer;
use sha2::{Digest, Sha256};

use crate::error::ProtocolError;

/// Bytes per model chunk on the wire.
pub const CHUNK_BYTES: usize = 1 << 20;

/// Largest parameter magnitude a model the protocol carries may have.
///
/// The first round's starting model is the coordinator's choice. With features in `[0, 2]`,
/// every parameter within `±B = 100` and the default widths (hidden 32, latent 8), the
/// autoencoder's outputs stay below about `4·10^13`, the per-row loss below `3·10^28` and the
/// deltas below `2·10^22`: inside `f32` (`3·10^38`), so no starting model makes the first
/// step overflow on rows of a chosen pattern. Much wider networks (a shape is the round's
/// choice) narrow that margin, and later local steps may leave the bound; there, DP-SGD's
/// dropping of non-finite employees is what holds (`medfl_model::dpsgd`). Trained models stay
/// orders of magnitude below the bound; one that does not is refused when built, so a round
/// fails rather than anchor a model the next round would refuse.
pub const MAX_PARAMETER: f32 = 100.0;

/// Checks every parameter against [`MAX_PARAMETER`] (NaN fails too).
fn check_parameters(params: &[f32]) -> Result<(), ProtocolError> {
    match params
        .iter()
        .position(|p| p.is_nan() || p.abs() > MAX_PARAMETER)
    {
        None => Ok(()),
        Some(i) => Err(ProtocolError::invalid(
            "model",
            format!("parameter {i} is {}, beyond ±{MAX_PARAMETER}", params[i]),
        )),
    }
}

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
    /// Wraps flat parameters of a network of shape `config` (each within [`MAX_PARAMETER`]).
    pub fn from_params(config: AutoencoderConfig, params: Vec<f32>) -> Result<Self, ProtocolError> {
        check_parameters(&params)?;
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
        config.check()?;
        Self::from_params(config, config.initial_params(seed))
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
        check_parameters(&file.params)?;
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
    fn parameters_beyond_the_bound_are_refused_on_the_wire_and_when_built() {
        let config = AutoencoderConfig {
            inputs: 4,
            hidden: 3,
            latent: 2,
        };
        let n = config.param_count();
        let at = |v: f32| {
            let mut p = vec![0.1f32; n];
            p[n / 2] = v;
            p
        };
        for ok in [MAX_PARAMETER, -MAX_PARAMETER] {
            GlobalModel::from_params(config, at(ok)).unwrap();
        }
        for bad in [MAX_PARAMETER.next_up(), -1e30, f32::INFINITY, f32::NAN] {
            assert!(GlobalModel::from_params(config, at(bad)).is_err(), "{bad}");
            // The same file, bytes from elsewhere: refused when read too.
            let file = ModelFile {
                config,
                standardizer: Standardizer::identity(config.inputs),
                threshold: 0.0,
                params: at(bad),
            };
            let Ok(bytes) = file.to_bytes() else { continue }; // a non-finite file is refused earlier
            let err = GlobalModel::from_bytes(&bytes, config, &sha256(&bytes)).unwrap_err();
            assert!(err.to_string().contains("beyond"), "{bad}: {err}");
        }
    }

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

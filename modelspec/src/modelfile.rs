//! Model files: everything needed to score events, in one file whose SHA-256 is the model's
//! identity (the hash a round anchors on the ledger).
//!
//! Layout (all little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `MEDFLAE1` |
//! | 4 | `inputs` u32 |
//! | 4 | `hidden` u32 |
//! | 4 | `latent` u32 |
//! | 4 | threshold f32 (score above which an event is flagged) |
//! | 4 × inputs | standardizer means f32 |
//! | 4 × inputs | standardizer reciprocal std f32 |
//! | 4 × P | parameters f32, P = the network's parameter count |
//!
//! Nothing is optional and nothing follows, so the length is a function of the header: a file of
//! the wrong length, with non-finite values, or for another input width is refused.

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::standardize::Standardizer;
use crate::{AutoencoderConfig, ModelError};

const MAGIC: &[u8; 8] = b"MEDFLAE1";
/// Widest layer a file may declare; keeps a hostile header from asking for gigabytes.
const MAX_WIDTH: u32 = 1 << 16;

/// A trained model as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFile {
    /// Layer sizes.
    pub config: AutoencoderConfig,
    /// Feature standardization.
    pub standardizer: Standardizer,
    /// Alert threshold on the anomaly score.
    pub threshold: f32,
    /// Flat parameters.
    pub params: Vec<f32>,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The failure.
        source: std::io::Error,
    },
    /// Not a medfl model file.
    #[error("not a medfl model file (bad magic)")]
    BadMagic,
    /// The header and the length disagree, or values are out of range.
    #[error("malformed model file: {0}")]
    Malformed(String),
    /// A valid file, for a different input width than the data has.
    #[error("the model expects {expected} features, the data has {found}")]
    WrongShape {
        /// The model's input width.
        expected: usize,
        /// The data's.
        found: usize,
    },
}

impl ModelFile {
    /// Checks internal consistency (lengths, finite values).
    pub fn check(&self) -> Result<(), ModelError> {
        self.config.check()?;
        let n = self.config.inputs;
        if self.standardizer.mean.len() != n || self.standardizer.inv_std.len() != n {
            return Err(ModelError::Shape(
                "standardizer width differs from the input width".into(),
            ));
        }
        if self.params.len() != self.config.param_count() {
            return Err(ModelError::Shape(format!(
                "{} parameters for a network of {}",
                self.params.len(),
                self.config.param_count()
            )));
        }
        let all = self
            .params
            .iter()
            .chain(&self.standardizer.mean)
            .chain(&self.standardizer.inv_std);
        if !self.threshold.is_finite() || all.into_iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Shape("non-finite value".into()));
        }
        Ok(())
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        self.check()?;
        let c = &self.config;
        let width = |v: usize| {
            u32::try_from(v).map_err(|_| ModelError::Shape(format!("width {v} too large")))
        };
        let mut out = Vec::with_capacity(24 + 4 * (2 * c.inputs + self.params.len()));
        out.extend_from_slice(MAGIC);
        for w in [c.inputs, c.hidden, c.latent] {
            out.extend_from_slice(&width(w)?.to_le_bytes());
        }
        out.extend_from_slice(&self.threshold.to_le_bytes());
        for v in self
            .standardizer
            .mean
            .iter()
            .chain(&self.standardizer.inv_std)
            .chain(&self.params)
        {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }

    /// Parses and checks a file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<ModelFile, ModelFileError> {
        if bytes.len() < 24 || &bytes[..8] != MAGIC {
            return Err(ModelFileError::BadMagic);
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let (inputs, hidden, latent) = (word(8), word(12), word(16));
        if [inputs, hidden, latent]
            .iter()
            .any(|w| *w == 0 || *w > MAX_WIDTH)
        {
            return Err(ModelFileError::Malformed(format!(
                "layer widths {inputs}/{hidden}/{latent} out of range"
            )));
        }
        let config = AutoencoderConfig {
            inputs: inputs as usize,
            hidden: hidden as usize,
            latent: latent as usize,
        };
        let floats = 1 + 2 * config.inputs + config.param_count();
        let expected = 20 + 4 * floats;
        if bytes.len() != expected {
            return Err(ModelFileError::Malformed(format!(
                "{} bytes where the header implies {expected}",
                bytes.len()
            )));
        }
        let values: Vec<f32> = bytes[20..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n = config.inputs;
        let file = ModelFile {
            config,
            threshold: values[0],
            standardizer: Standardizer {
                mean: values[1..1 + n].to_vec(),
                inv_std: values[1 + n..1 + 2 * n].to_vec(),
            },
            params: values[1 + 2 * n..].to_vec(),
        };
        file.check()
            .map_err(|e| ModelFileError::Malformed(e.to_string()))?;
        Ok(file)
    }

    /// SHA-256 of the file's bytes, hex: the model's identity.
    pub fn hash(&self) -> Result<String, ModelError> {
        Ok(hex_digest(&self.to_bytes()?))
    }

    /// Writes the file; returns its hash.
    ///
    /// The file may hold the hospital's own statistics (its alert threshold, and the feature
    /// transform of a locally trained model), so it is readable by its owner only (mode 0600 on Unix); it is written to a
    /// temporary file first and renamed, so a reader never sees half of it.
    pub fn save(&self, path: &Path) -> Result<String, ModelFileError> {
        let bytes = self
            .to_bytes()
            .map_err(|e| ModelFileError::Malformed(e.to_string()))?;
        let io = |source| ModelFileError::Io {
            path: path.display().to_string(),
            source,
        };
        // tempfile creates a fresh, randomly named file (O_EXCL, mode 0600 on Unix) beside the
        // target: no other user can hold it open, no planted symlink is followed, and a failed
        // write removes it.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        {
            use std::io::Write;
            tmp.write_all(&bytes).map_err(io)?;
            tmp.as_file().sync_all().map_err(io)?;
        }
        tmp.persist(path).map_err(|e| io(e.error))?;
        // The rename is durable once the directory is (some file systems refuse to sync one).
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(hex_digest(&bytes))
    }

    /// Reads a file; returns it with its hash.
    pub fn load(path: &Path) -> Result<(ModelFile, String), ModelFileError> {
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok((ModelFile::from_bytes(&bytes)?, hex_digest(&bytes)))
    }

    /// Refuses data of another width than the model's.
    pub fn expect_inputs(&self, found: usize) -> Result<(), ModelFileError> {
        if found != self.config.inputs {
            return Err(ModelFileError::WrongShape {
                expected: self.config.inputs,
                found,
            });
        }
        Ok(())
    }
}

fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ModelFile {
        let config = AutoencoderConfig {
            inputs: 3,
            hidden: 4,
            latent: 2,
        };
        ModelFile {
            config,
            standardizer: Standardizer {
                mean: vec![0.5, 1.0, -2.0],
                inv_std: vec![1.0, 2.0, 0.5],
            },
            threshold: 0.75,
            params: (0..config.param_count()).map(|i| i as f32 * 0.01).collect(),
        }
    }

    #[test]
    fn round_trip_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.bin");
        let m = sample();
        let hash = m.save(&path).unwrap();
        let (back, hash2) = ModelFile::load(&path).unwrap();
        assert_eq!((back, hash2.clone()), (m.clone(), hash.clone()));
        assert_eq!(m.hash().unwrap(), hash);
        assert_eq!(hash.len(), 64);
    }

    /// The file carries the hospital's threshold: owner-only, even over a
    /// file an older version left world-readable.
    #[cfg(unix)]
    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("current.model");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        sample().save(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "mode {mode:o}");
        assert!(ModelFile::load(&path).is_ok());
    }

    #[test]
    fn damaged_or_misfit_files_are_typed_errors() {
        let bytes = sample().to_bytes().unwrap();
        assert!(matches!(
            ModelFile::from_bytes(b"hello"),
            Err(ModelFileError::BadMagic)
        ));
        assert!(matches!(
            ModelFile::from_bytes(&bytes[..bytes.len() - 1]),
            Err(ModelFileError::Malformed(_))
        ));
        let mut wide = bytes.clone();
        wide[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            ModelFile::from_bytes(&wide),
            Err(ModelFileError::Malformed(_))
        ));
        let mut nan = bytes.clone();
        let at = nan.len() - 4;
        nan[at..].copy_from_slice(&f32::NAN.to_le_bytes());
        assert!(matches!(
            ModelFile::from_bytes(&nan),
            Err(ModelFileError::Malformed(_))
        ));
        assert!(matches!(
            sample().expect_inputs(5),
            Err(ModelFileError::WrongShape {
                expected: 3,
                found: 5
            })
        ));
    }
}

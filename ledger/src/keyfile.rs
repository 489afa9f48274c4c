//! A member's secret identity key on disk: PKCS#8 PEM (what `openssl genpkey -algorithm ed25519`
//! writes), readable by the owner only.
//!
//! Like ssh, we refuse to use a key file that others can read: a key that may have leaked is
//! not an identity the ledger should trust.

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey, spki::der::pem::LineEnding};

/// Why a key file could not be written or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Not a PKCS#8 ed25519 key.
    #[error("{path}: not a PKCS#8 PEM ed25519 private key ({reason})")]
    Format {
        /// The file.
        path: PathBuf,
        /// The decoder's complaint.
        reason: String,
    },
    /// Group or others may read or write the file.
    #[error("{path}: permissions {mode:o} are too open; run `chmod 600` on it")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
}

/// Writes `key` to `path` with mode 0600, refusing to overwrite an existing file.
pub fn write(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    use std::io::Write;
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let pem = key
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|e| KeyFileError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key written by [`write`] (or by openssl), checking its permissions first.
pub fn read(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    SigningKey::from_pkcs8_pem(&text).map_err(|e| KeyFileError::Format {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.key");
        let key = SigningKey::from_bytes(&[7; 32]);
        write(&path, &key).unwrap();
        assert_eq!(read(&path).unwrap().to_bytes(), key.to_bytes());
        assert!(
            matches!(write(&path, &key), Err(KeyFileError::Io { .. })),
            "never overwrites"
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                read(&path),
                Err(KeyFileError::TooOpen { mode: 0o644, .. })
            ));
        }

        let junk = dir.path().join("junk.key");
        write(&junk, &key).unwrap();
        std::fs::write(
            &junk,
            "-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(read(&junk), Err(KeyFileError::Format { .. })));
    }
}

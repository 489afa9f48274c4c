//! A member's secret identity key on disk: PKCS#8 PEM (what `openssl genpkey -algorithm ed25519`
//! writes), readable by the owner only.
//!
//! Like ssh, we refuse to use a key file that others can read: a key that may have leaked is
//! not an identity the ledger should trust.
//!
//! A key derived from a public seed (`--insecure-deterministic-seed`, for tests and
//! simulations) carries [`INSECURE_MARKER`] on a line of its own before the PEM block, inside
//! the file, so it travels with the key wherever the file is copied (PEM readers such as
//! openssl skip text before `-----BEGIN`). [`read`] refuses such a key; only
//! [`read_with_origin`] returns it, with its origin, for a caller that was told to accept it.

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
    /// The key was derived from a public seed: anyone who knows the seed holds it.
    #[error(
        "{path}: an insecure key, derived from a public seed (--insecure-deterministic-seed); \
         anyone who knows the seed can sign as its member"
    )]
    Insecure {
        /// The file.
        path: PathBuf,
    },
}

/// The line that marks a key file holding a key derived from a public seed.
pub const INSECURE_MARKER: &str =
    "medfl-insecure-key: derived from a public seed; for tests and simulations only";

/// Where a key came from, as its file records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrigin {
    /// A secure generator, known only to whoever ran it (no marker in the file).
    Secret,
    /// A public seed (the file carries [`INSECURE_MARKER`]).
    PublicSeed,
}

/// Writes `key` to `path` with mode 0600, refusing to overwrite an existing file.
pub fn write(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    write_with_origin(path, key, KeyOrigin::Secret)
}

/// Writes `key` like [`write`], marking it insecure if it came from a public seed.
pub fn write_with_origin(
    path: &Path,
    key: &SigningKey,
    origin: KeyOrigin,
) -> Result<(), KeyFileError> {
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
    if origin == KeyOrigin::PublicSeed {
        file.write_all(format!("{INSECURE_MARKER}\n").as_bytes())
            .map_err(io)?;
    }
    file.write_all(pem.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Reads a key written by [`write`] (or by openssl), checking its permissions first; refuses a
/// key marked as derived from a public seed.
pub fn read(path: &Path) -> Result<SigningKey, KeyFileError> {
    match read_with_origin(path)? {
        (key, KeyOrigin::Secret) => Ok(key),
        (_, KeyOrigin::PublicSeed) => Err(KeyFileError::Insecure {
            path: path.to_path_buf(),
        }),
    }
}

/// Reads any key [`write_with_origin`] wrote, with its origin: for callers that decide
/// themselves whether an insecure key is acceptable.
pub fn read_with_origin(path: &Path) -> Result<(SigningKey, KeyOrigin), KeyFileError> {
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
    let format = |reason: String| KeyFileError::Format {
        path: path.to_path_buf(),
        reason,
    };
    let begin = text.find("-----BEGIN").unwrap_or(0);
    let (preamble, pem) = text.split_at(begin);
    let mut origin = KeyOrigin::Secret;
    for line in preamble.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line == INSECURE_MARKER {
            origin = KeyOrigin::PublicSeed;
        } else {
            // Unknown text may be a mangled marker: never guess that a key is secure.
            return Err(format(format!(
                "unexpected text before the PEM block: {line:?}"
            )));
        }
    }
    let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| format(e.to_string()))?;
    Ok((key, origin))
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

        let seeded = dir.path().join("seeded.key");
        write_with_origin(&seeded, &key, KeyOrigin::PublicSeed).unwrap();
        assert!(
            std::fs::read_to_string(&seeded)
                .unwrap()
                .starts_with(INSECURE_MARKER)
        );
        assert!(matches!(read(&seeded), Err(KeyFileError::Insecure { .. })));
        let (back, origin) = read_with_origin(&seeded).unwrap();
        assert_eq!(
            (back.to_bytes(), origin),
            (key.to_bytes(), KeyOrigin::PublicSeed)
        );
        let edited = dir.path().join("edited.key");
        write(&edited, &key).unwrap();
        assert_eq!(read_with_origin(&edited).unwrap().1, KeyOrigin::Secret);
        let text = std::fs::read_to_string(&seeded).unwrap();
        std::fs::write(&edited, text.replacen("insecure", "secure", 1)).unwrap();
        assert!(matches!(read(&edited), Err(KeyFileError::Format { .. })));

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

//! TLS on the monitor's listeners: syslog per RFC 5425 (as updated by RFC 9662) and HTTPS.
//!
//! The monitor's certificate and key come from PEM files named in `[monitor.tls]`; `medfl
//! tls-cert` makes a self-signed pair for a hospital without a PKI of its own and prints the
//! certificate's SHA-256 fingerprint, which a sender may pin instead of trusting a CA (RFC 5425
//! §4.2.2 requires senders to support exactly this). With `client_ca`, the monitor asks every
//! peer for a certificate that CA issued: a syslog sender without one is refused during the
//! handshake (the mutual authentication IHE ATNA's Authenticate Node transaction, ITI-19,
//! asks for), and an HTTPS client without one may read but not submit accesses.
//!
//! The cryptography is rustls with the *ring* provider, chosen explicitly: no process-wide
//! default provider is installed or assumed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use sha2::Digest;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::provision::TlsSettings;

/// How long a peer may take to finish its TLS handshake (a peer that stalls it would otherwise
/// hold a connection slot).
pub(super) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The two TLS configurations of a monitor: one per listener, from the same identity.
#[derive(Clone)]
pub struct Tls {
    /// Syslog: a client certificate is required when a client CA is configured.
    pub(super) syslog: TlsAcceptor,
    /// HTTPS: a client certificate is asked for, verified if shown, and never required (an
    /// officer's browser has none); whether one was shown gates submitting accesses.
    pub(super) http: TlsAcceptor,
    /// Whether submitting accesses over HTTPS needs a verified client certificate.
    pub(super) intake_needs_client_cert: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("intake_needs_client_cert", &self.intake_needs_client_cert)
            .finish_non_exhaustive()
    }
}

/// Reads the identity and client CA that `settings` names (relative to `member_dir`).
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or the key does not match the
/// certificate.
pub fn load(settings: &TlsSettings, member_dir: &Path) -> Result<Tls> {
    let at = |p: &PathBuf| member_dir.join(p);
    let cert_file = at(&settings.cert);
    let chain = certificates(&cert_file)?;
    let key_file = at(&settings.key);
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .with_context(|| format!("reading a private key from {}", key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (syslog_verifier, http_verifier) = match &settings.client_ca {
        None => (None, None),
        Some(ca) => {
            let ca = at(ca);
            let mut roots = rustls::RootCertStore::empty();
            for c in certificates(&ca)? {
                roots.add(c).with_context(|| {
                    format!("{} holds an unusable CA certificate", ca.display())
                })?;
            }
            let roots = Arc::new(roots);
            let build = |optional: bool| {
                let b = WebPkiClientVerifier::builder_with_provider(
                    Arc::clone(&roots),
                    Arc::clone(&provider),
                );
                let b = if optional {
                    b.allow_unauthenticated()
                } else {
                    b
                };
                b.build()
                    .with_context(|| format!("building a client verifier from {}", ca.display()))
            };
            (Some(build(false)?), Some(build(true)?))
        }
    };
    let config = |verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
                  alpn: &[&[u8]]|
     -> Result<Arc<ServerConfig>> {
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .context("the TLS provider supports no safe protocol version")?;
        let builder = match verifier {
            Some(v) => builder.with_client_cert_verifier(v),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(chain.clone(), key.clone_key())
            .with_context(|| {
                format!(
                    "{} and {} are not a certificate and its key",
                    cert_file.display(),
                    key_file.display()
                )
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    };
    Ok(Tls {
        syslog: TlsAcceptor::from(config(syslog_verifier, &[])?),
        http: TlsAcceptor::from(config(http_verifier, &[b"http/1.1"])?),
        intake_needs_client_cert: settings.client_ca.is_some(),
    })
}

/// Every certificate in the PEM file at `path`; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

/// Completes the server side of a handshake on `stream` within [`HANDSHAKE_DEADLINE`].
///
/// # Errors
/// The peer broke the handshake, was refused (no acceptable certificate), or was too slow.
pub(super) async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(HANDSHAKE_DEADLINE, acceptor.accept(stream)).await {
        Ok(done) => done,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the TLS handshake took too long",
        )),
    }
}

/// The `SHA-256` fingerprint of a DER certificate, as colon-separated upper-case hex pairs
/// (the form RFC 5425 §4.2.2 and RFC 4572 §5 use, and syslog senders take for pinning).
pub fn fingerprint(der: &[u8]) -> String {
    let digest = sha2::Sha256::digest(der);
    digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fresh self-signed certificate for the monitor, valid for `names` (DNS names or IP
/// addresses), with its P-256 key; PEM both.
///
/// # Errors
/// A name is neither a DNS name nor an IP address.
pub fn self_signed(member: &str, names: &[String]) -> Result<SelfSigned> {
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .context("a name is neither a DNS name nor an IP address")?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("medfl monitor {member}"));
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(CERT_DAYS);
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params
        .self_signed(&key)
        .context("signing the certificate")?;
    Ok(SelfSigned {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Where `medfl tls-cert` writes the certificate and key, relative to the member folder.
pub const CERT_FILE: &str = "tls/monitor.crt";
/// See [`CERT_FILE`].
pub const KEY_FILE: &str = "tls/monitor.key";

/// Makes a self-signed identity for the monitor of the member whose config is `config` and
/// writes it to [`CERT_FILE`] and [`KEY_FILE`] in its folder (the key readable by its owner
/// only). An identity already there is never replaced: senders may have pinned it.
///
/// # Errors
/// The config cannot be read, the files exist, or they cannot be written.
pub fn write_self_signed(config: &Path, names: &[String]) -> Result<SelfSigned> {
    use std::io::Write;
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let member: crate::provision::MemberConfig = toml::from_str(&text)
        .with_context(|| format!("{} is not a member config", config.display()))?;
    if names.is_empty() {
        bail!("name at least one host name or IP address the senders connect to");
    }
    let dir = config.parent().unwrap_or(Path::new("."));
    let made = self_signed(&member.member.to_string(), names)?;
    let (cert, key) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
    for p in [&cert, &key] {
        if p.exists() {
            bail!(
                "{} exists: senders may have pinned it; move it away to make a new identity",
                p.display()
            );
        }
    }
    if let Some(parent) = cert.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let create = |path: &Path, mode: u32, text: &str| -> Result<()> {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(mode);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = options
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", path.display()))
    };
    create(&key, 0o600, &made.key_pem)?;
    create(&cert, 0o644, &made.cert_pem)?;
    Ok(made)
}

/// Days a certificate from [`self_signed`] is valid.
pub const CERT_DAYS: i64 = 825;

/// A certificate from [`self_signed`].
pub struct SelfSigned {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
    /// Its SHA-256 fingerprint (see [`fingerprint`]).
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        PathBuf::from(name)
    }

    #[test]
    fn a_self_signed_identity_loads_and_its_fingerprint_is_the_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let made = self_signed("h-a", &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let settings = TlsSettings {
            cert: write(dir.path(), "c.pem", &made.cert_pem),
            key: write(dir.path(), "k.pem", &made.key_pem),
            client_ca: Some(PathBuf::from("c.pem")),
        };
        let tls = load(&settings, dir.path()).unwrap();
        assert!(tls.intake_needs_client_cert);
        let der = certificates(&dir.path().join("c.pem")).unwrap();
        assert_eq!(made.fingerprint, fingerprint(&der[0]));
        assert_eq!(made.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let one = self_signed("h-a", &["localhost".into()]).unwrap();
        let other = self_signed("h-a", &["localhost".into()]).unwrap();
        let settings = TlsSettings {
            cert: write(dir.path(), "c.pem", &one.cert_pem),
            key: write(dir.path(), "k.pem", &other.key_pem),
            client_ca: None,
        };
        let e = format!("{:#}", load(&settings, dir.path()).unwrap_err());
        assert!(e.contains("c.pem") && e.contains("k.pem"), "{e}");
        // A file with no certificate is named too.
        let settings = TlsSettings {
            cert: write(dir.path(), "empty.pem", ""),
            ..settings
        };
        let e = format!("{:#}", load(&settings, dir.path()).unwrap_err());
        assert!(e.contains("empty.pem holds no certificate"), "{e}");
    }
}

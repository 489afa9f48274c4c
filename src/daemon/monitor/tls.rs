//! TLS on the monitor's listeners: syslog per RFC 5425 (as updated by RFC 9662) and HTTPS.
//!
//! The monitor's certificate and key come from PEM files named in `[monitor.tls]`; `medfl
//! tls-cert` makes a self-signed pair for a hospital without a PKI of its own and prints the
//! certificate's SHA-256 fingerprint, which a sender may pin instead of trusting a CA (RFC 5425
//! §4.2.2 requires senders to support exactly this). With `client_ca`, the monitor asks every
//! peer for a certificate that CA issued: a syslog sender without one is refused during the
//! handshake (the mutual authentication IHE ATNA's Authenticate Node transaction, ITI-19,
//! asks for; one whose certificate is not among `senders` right after it), and an HTTPS
//! client without one may read but not submit accesses.
//!
//! A CA may issue more than the hospital's audit senders (an enterprise CA signs every
//! workstation): `senders` then narrows who may send to the listed certificates' fingerprints.
//!
//! Peers that have proved nothing yet are bounded per source (an IPv4 address, an IPv6 /64)
//! once a listener's connection slots run short (fewer than half free): handshakes in
//! progress ([`HANDSHAKES_PER_ADDRESS`]) and HTTPS connections without a certificate that
//! counts ([`UNCERTIFIED_PER_ADDRESS`]), so one host cannot hold every slot; certified
//! senders' connections are not counted. Below that pressure nobody is refused for its
//! address, so a host sharing the EHR's address (a NAT, a proxy) cannot lock it out by
//! spending a small per-address budget.
//!
//! The cryptography is rustls with the *ring* provider, chosen explicitly: no process-wide
//! default provider is installed or assumed. `medfl tls-cert` makes a P-256 identity: every
//! TLS 1.3 sender and the ECDSA suites of TLS 1.2 reach it; a sender limited to RFC 9662's
//! mandatory TLS 1.2 suite (ECDHE with an RSA certificate) needs an RSA certificate from the
//! hospital's PKI, which `cert` and `key` take as well.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
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

/// How long a peer may take to finish its TLS handshake at most (a peer that stalls it would
/// otherwise hold a connection slot); a shorter header timeout shortens it, down to
/// [`HANDSHAKE_FLOOR`].
pub(super) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// The shortest handshake deadline: two round trips of a distant sender fit in it, whatever
/// the header timeout.
pub(super) const HANDSHAKE_FLOOR: Duration = Duration::from_secs(1);

/// TLS handshakes in progress from one source address at once; more are closed at accept.
pub const HANDSHAKES_PER_ADDRESS: u32 = 32;

/// HTTPS connections without a (listed) client certificate from one source address at once,
/// when a client CA is configured; more are closed after their handshake.
pub const UNCERTIFIED_PER_ADDRESS: u32 = 64;

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
    /// If not empty, the SHA-256 fingerprints (64 upper-case hex digits) of the only client
    /// certificates that count.
    senders: Vec<String>,
    /// How long a handshake may take.
    pub(super) handshake_deadline: Duration,
    /// Handshakes in progress per source, on the HTTP listener.
    pub(super) http_handshakes: Arc<PerAddress>,
    /// Handshakes in progress per source, on the syslog listener.
    pub(super) syslog_handshakes: Arc<PerAddress>,
    /// HTTPS connections without a certificate that counts, per source.
    pub(super) uncertified: Arc<PerAddress>,
}

impl Tls {
    /// Whether the peer of a finished handshake showed a certificate that counts: verified by
    /// the client CA (rustls did that) and, with `senders`, one of those listed. Returns its
    /// fingerprint.
    pub(super) fn sender(&self, conn: &rustls::ServerConnection) -> Option<String> {
        let leaf = conn.peer_certificates()?.first()?;
        let fp = fingerprint(leaf);
        let hex = fp.replace(':', "");
        (self.senders.is_empty() || self.senders.contains(&hex)).then_some(fp)
    }

    /// Shortens the handshake deadline to `limit` if that is shorter, never below
    /// [`HANDSHAKE_FLOOR`].
    pub fn with_deadline_at_most(mut self, limit: Duration) -> Tls {
        self.handshake_deadline = self.handshake_deadline.min(limit).max(HANDSHAKE_FLOOR);
        self
    }
}

/// Connections per source address in some state, bounded.
#[derive(Debug)]
pub(super) struct PerAddress {
    limit: u32,
    counts: Mutex<HashMap<IpAddr, u32>>,
}

/// One connection counted by a [`PerAddress`]; uncounted when dropped.
pub(super) struct Counted {
    owner: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    fn new(limit: u32) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            limit,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Counts one more connection from `ip`; refuses it if the listener is `crowded` and its
    /// source already has the limit.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr, crowded: bool) -> Option<Counted> {
        let ip = source(ip);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_insert(0);
        if crowded && *n >= self.limit {
            return None;
        }
        *n = n.saturating_add(1);
        Some(Counted {
            owner: Arc::clone(self),
            ip,
        })
    }

    /// Sources counted now (for tests).
    #[cfg(test)]
    fn sources(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The source a connection from `ip` is counted under: an IPv4 address (also when it comes
/// IPv4-mapped), or an IPv6 /64, the block one host usually holds whole.
fn source(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
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
    refuse_open_key(&key_file)?;
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
    if !settings.senders.is_empty() && settings.client_ca.is_none() {
        bail!("senders are listed but no client_ca: name the CA that issued their certificates");
    }
    let senders = settings
        .senders
        .iter()
        .map(|s| {
            // rsyslog's form ("SHA256:AB:...") and RFC 4572's ("sha-256 AB:...") are taken too.
            let bare = ["SHA256:", "SHA-256:", "SHA-256 "]
                .iter()
                .find_map(|p| {
                    s.get(..p.len())
                        .filter(|head| head.eq_ignore_ascii_case(p))
                        .map(|_| &s[p.len()..])
                })
                .unwrap_or(s);
            let hex = bare.replace(':', "").to_ascii_uppercase();
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                Ok(hex)
            } else {
                bail!("sender {s:?} is not a SHA-256 fingerprint (32 hex pairs)")
            }
        })
        .collect::<Result<_>>()?;
    Ok(Tls {
        syslog: TlsAcceptor::from(config(syslog_verifier, &[])?),
        http: TlsAcceptor::from(config(http_verifier, &[b"http/1.1"])?),
        intake_needs_client_cert: settings.client_ca.is_some(),
        senders,
        handshake_deadline: HANDSHAKE_DEADLINE,
        http_handshakes: PerAddress::new(HANDSHAKES_PER_ADDRESS),
        syslog_handshakes: PerAddress::new(HANDSHAKES_PER_ADDRESS),
        uncertified: PerAddress::new(UNCERTIFIED_PER_ADDRESS),
    })
}

/// Refuses a private key file that others than its owner may read or write: anyone who can
/// read it can pose as the monitor to senders that pinned it.
fn refuse_open_key(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            bail!(
                "{} is open to others (mode {mode:o}): chmod 600 it",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
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

/// Completes the server side of a handshake on `stream` within `deadline`.
///
/// # Errors
/// The peer broke the handshake, was refused (no acceptable certificate), or was too slow.
pub(super) async fn handshake<S>(
    acceptor: &TlsAcceptor,
    stream: S,
    deadline: Duration,
) -> std::io::Result<tokio_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
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
    for name in names {
        if name.parse::<IpAddr>().is_err() && !is_dns_name(name) {
            bail!("{name:?} is neither a DNS name nor an IP address");
        }
    }
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

/// Whether `name` is a DNS host name (RFC 1123 §2.1: dot-separated labels of letters, digits
/// and inner hyphens, 1-63 characters each, 253 in all).
fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
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
        let written = f.write_all(text.as_bytes()).and_then(|()| f.sync_all());
        if written.is_err() {
            // Half a file would block the next attempt as "exists".
            let _ = std::fs::remove_file(path);
        }
        written.with_context(|| format!("writing {}", path.display()))
    };
    create(&key, 0o600, &made.key_pem)?;
    if let Err(e) = create(&cert, 0o644, &made.cert_pem) {
        // No fingerprint was printed, so nobody pinned this key: leave nothing behind that
        // would block the next attempt.
        let _ = std::fs::remove_file(&key);
        return Err(e);
    }
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

    /// Writes a file only its owner may read.
    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
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
            senders: vec![made.fingerprint.to_lowercase()],
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
            senders: Vec::new(),
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
        // A key others may read is refused, and so is a sender that is no fingerprint.
        let settings = TlsSettings {
            cert: write(dir.path(), "c.pem", &one.cert_pem),
            key: write(dir.path(), "k.pem", &one.key_pem),
            ..settings
        };
        let chmod = |mode| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("k.pem"),
                std::fs::Permissions::from_mode(mode),
            )
            .unwrap();
        };
        chmod(0o644);
        let e = format!("{:#}", load(&settings, dir.path()).unwrap_err());
        assert!(e.contains("open to others"), "{e}");
        chmod(0o600);
        load(&settings, dir.path()).unwrap();
        let e = load(
            &TlsSettings {
                client_ca: Some("c.pem".into()),
                senders: vec!["AB:CD".into(), format!("SHA256:{}", one.fingerprint)],
                ..settings.clone()
            },
            dir.path(),
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("not a SHA-256 fingerprint"),
            "{e:#}"
        );
        let e = load(
            &TlsSettings {
                senders: vec![one.fingerprint.clone()],
                ..settings
            },
            dir.path(),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("no client_ca"), "{e:#}");
        for bad in ["not a name!", "", "-x.example", "a..b", "*"] {
            assert!(self_signed("h-a", &[bad.into()]).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connections_are_counted_per_address_up_to_the_limit() {
        let counts = PerAddress::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let one = counts.admit(a, true).unwrap();
        let _two = counts.admit(a, true).unwrap();
        assert!(counts.admit(a, true).is_none());
        // Uncrowded, nobody is refused for its address (but every connection is counted).
        let uncrowded = counts.admit(a, false).unwrap();
        let _other = counts.admit(b, true).unwrap();
        drop(one);
        drop(uncrowded);
        let _three = counts.admit(a, true).unwrap();
        assert!(counts.admit(a, true).is_none());
        // The same host by another spelling, or from elsewhere in its /64, is one source.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert!(counts.admit(mapped, true).is_none());
        let v6 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let x = counts.admit(v6("2001:db8:1:2::1"), true).unwrap();
        let y = counts.admit(v6("2001:db8:1:2:ffff::9"), true).unwrap();
        assert!(counts.admit(v6("2001:db8:1:2:abcd::1"), true).is_none());
        let _z = counts.admit(v6("2001:db8:1:3::1"), true).unwrap();
        // A source is forgotten once its last connection ends.
        assert_eq!(counts.sources(), 4);
        drop((x, y));
        assert_eq!(counts.sources(), 3);
    }
}

//! Provisioning: turn a consortium file into one startup folder per member, the way NVIDIA
//! FLARE's provisioning makes startup kits, and `medfl keygen`, which makes a member's key
//! where it will be used.
//!
//! Keys are born where they are used: each member runs [`keygen`] on its own machine and sends
//! only its public key, which goes into the consortium file; [`provision`] then writes the
//! genesis, the peers and a ready `config.toml` in each member's folder, and no secret key at
//! all. The member drops its own key in. Generating every key centrally
//! ([`KeyGeneration::Central`]) remains for tests and demos; whoever runs it holds every
//! member's key and can sign as any of them.
//!
//! The folders are written to a staging directory and renamed into place at the end, so a
//! failure never leaves half a consortium behind.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use medfl_ledger::genesis::{ConsortiumFile, MemberEntry};
use medfl_ledger::keyfile::{self, KeyOrigin};
use medfl_ledger::{Genesis, MemberId, PublicKey, Role};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// File names inside a member's startup folder.
pub mod files {
    /// The member's secret key.
    pub const KEY: &str = "member.key";
    /// The member's public identity, as `medfl keygen` writes it beside the key.
    pub const PUBLIC: &str = "member.pub";
    /// What a folder written without a secret key says about it.
    pub const KEY_INSTRUCTIONS: &str = "KEY-NOT-INCLUDED.txt";
    /// The consortium's genesis.
    pub const GENESIS: &str = "genesis.toml";
    /// The other members.
    pub const PEERS: &str = "peers.toml";
    /// The member's configuration.
    pub const CONFIG: &str = "config.toml";
}

/// A member's configuration, as provisioning writes it; paths are relative to its folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    /// This member's id.
    pub member: MemberId,
    /// Its role.
    pub role: Role,
    /// Its secret key file.
    pub key_file: PathBuf,
    /// The genesis file.
    pub genesis: PathBuf,
    /// The peers file.
    pub peers: PathBuf,
    /// Where this member keeps its copy of the ledger.
    pub ledger_dir: PathBuf,
    /// The multiaddr to listen on (empty: dial out only).
    pub listen: String,
    /// The coordinators' multiaddrs.
    pub coordinators: Vec<String>,
    /// A coordinator's round parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rounds: Option<RoundSettings>,
    /// A hospital's training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<DataSettings>,
    /// A hospital's access monitor, run by `medfl client` beside its agent (and the defaults
    /// of `medfl monitor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitor: Option<MonitorSettings>,
}

/// Where a hospital's access monitor listens (the `[monitor]` table of its config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSettings {
    /// The HTTP (HTTPS with `tls`) address: `POST /v1/access`, the FHIR routes, alerts, metrics.
    pub listen: std::net::SocketAddr,
    /// The syslog (IHE ATNA; TCP, or TLS with `tls`) address, if the EHR sends its audit feed
    /// that way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog: Option<std::net::SocketAddr>,
    /// Seconds between sealed audit batches.
    #[serde(default = "default_seal_every_s")]
    pub seal_every_s: f64,
    /// Seconds a client may take to send a request's head.
    #[serde(default = "default_header_timeout_s")]
    pub header_timeout_s: f64,
    /// TLS on every listener (HTTPS, and syslog per RFC 5425); plain TCP without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    /// DNS names officers' browsers reach the console by (`monitor.hospital.example`, with
    /// `:port` unless 80 or 443). A signed-in browser's request naming any other host is
    /// refused (DNS rebinding); IP addresses and `localhost` are always accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub console_hosts: Vec<String>,
}

/// The monitor's TLS identity and whom it lets send (the `[monitor.tls]` table). Paths are
/// relative to the member folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The monitor's certificate chain (PEM), leaf first; `medfl tls-cert` makes a
    /// self-signed one.
    pub cert: PathBuf,
    /// The certificate's private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) that issue the hospital's audit senders' certificates. With it,
    /// a syslog sender must present one, and so must an HTTPS client that submits accesses
    /// (officers' routes still take tokens); without it, anyone who reaches the port may send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// If not empty, only client certificates with these SHA-256 fingerprints count (for a
    /// `client_ca` that issues more than the audit senders' certificates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub senders: Vec<String>,
}

fn default_seal_every_s() -> f64 {
    60.0
}

fn default_header_timeout_s() -> f64 {
    10.0
}

pub use crate::settings::RoundSettings;

/// Where a hospital's training data lives (the `[data]` table of its config).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSettings {
    /// Access events: CSV or FHIR AuditEvent NDJSON (relative to the folder).
    pub events: PathBuf,
    /// False-positive rate the local alert threshold is set for.
    pub target_fpr: f64,
    /// The hospital's own privacy budget over these logs, across every agreement and attempt
    /// (`epsilon`, `delta`). Absent: the tightest budget of the agreements that list the
    /// hospital in its genesis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_budget: Option<(f64, f64)>,
    /// A hospital-level budget (`epsilon`, `delta`, `colluders`) the hospital holds itself to as
    /// well: what the aggregates reveal about its whole update, with `colluders` of each round's
    /// minimum survivors assumed to conspire with the coordinator. Absent: none is enforced (and
    /// at the default distributed noise none could be met).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hospital_budget: Option<(f64, f64, u64)>,
}

/// The other members, as a member's folder lists them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersFile {
    /// Every member but the folder's owner.
    pub peers: Vec<MemberEntry>,
}

/// Where a generated key comes from.
#[derive(Clone, Copy, Debug)]
pub enum KeySource {
    /// The operating system's secure generator: the only choice for a real consortium.
    Os,
    /// ChaCha20 from a public seed, for reproducible tests and simulations. Anyone who knows the
    /// seed knows every key.
    InsecureSeed(u64),
}

impl KeySource {
    fn rng(self) -> rand_chacha::ChaCha20Rng {
        match self {
            KeySource::Os => rand_chacha::ChaCha20Rng::from_rng(&mut rand::rng()),
            KeySource::InsecureSeed(seed) => rand_chacha::ChaCha20Rng::seed_from_u64(seed),
        }
    }

    fn origin(self) -> KeyOrigin {
        match self {
            KeySource::Os => KeyOrigin::Secret,
            KeySource::InsecureSeed(_) => KeyOrigin::PublicSeed,
        }
    }
}

/// Who makes the members' keys.
#[derive(Clone, Copy, Debug)]
pub enum KeyGeneration {
    /// Each member made its own (`medfl keygen`): the consortium file lists every public key
    /// and no secret key is written.
    ByMembers,
    /// The provisioner makes the keys the file lacks and writes them into the folders. It
    /// then knows every such secret key: it can impersonate those members on the ledger and
    /// on the network.
    Central(KeySource),
}

/// What provisioning produced.
pub struct Provisioned {
    /// The genesis written.
    pub genesis: Genesis,
    /// Each member's folder, in plan order.
    pub folders: Vec<(MemberId, PathBuf)>,
}

/// Writes the genesis of `plan` and a startup folder per member to `out` (which must not
/// exist, or be empty). With [`KeyGeneration::ByMembers`] every member must have its public
/// key in the plan and no secret key is written; with [`KeyGeneration::Central`] the missing
/// keys are generated and written into their members' folders.
pub fn provision(plan: &ConsortiumFile, out: &Path, keys: KeyGeneration) -> Result<Provisioned> {
    plan.check_plan()
        .context("the consortium plan is invalid")?;
    if out.exists() {
        let mut entries =
            std::fs::read_dir(out).with_context(|| format!("reading {}", out.display()))?;
        if entries.next().is_some() {
            bail!(
                "{} is not empty; provisioning never overwrites a consortium",
                out.display()
            );
        }
    }
    let mut file = plan.clone();
    let mut secrets: Vec<(MemberId, SigningKey)> = Vec::new();
    let missing: Vec<&str> = file
        .members
        .iter()
        .filter(|m| m.public_key.is_none())
        .map(|m| m.id.as_str())
        .collect();
    let origin = match keys {
        KeyGeneration::ByMembers => {
            if !missing.is_empty() {
                bail!(
                    "members without a public_key in the consortium file: {}. Each member runs \
                     `medfl keygen --out DIR` on its own machine and sends the public key it \
                     prints; or pass --generate-keys-centrally (the provisioner then holds \
                     every generated key)",
                    missing.join(", ")
                );
            }
            KeyOrigin::Secret
        }
        KeyGeneration::Central(source) => {
            let mut rng = source.rng();
            for m in &mut file.members {
                if m.public_key.is_none() {
                    let key = SigningKey::generate(&mut rng);
                    m.public_key = Some(PublicKey::from(key.verifying_key()));
                    secrets.push((m.id.clone(), key));
                }
            }
            source.origin()
        }
    };
    let genesis = file
        .to_genesis()
        .context("the provisioned genesis is invalid")?;
    let genesis_text = genesis.to_file().to_toml()?;

    let staging = staging_dir(out)?;
    let result = write_folders(&staging, &file, &genesis_text, &secrets, origin);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if out.exists() {
        std::fs::remove_dir(out)
            .with_context(|| format!("replacing the empty {}", out.display()))?;
    }
    std::fs::rename(&staging, out)
        .with_context(|| format!("moving {} to {}", staging.display(), out.display()))?;
    let folders = file
        .members
        .iter()
        .map(|m| (m.id.clone(), out.join(m.id.as_str())))
        .collect();
    Ok(Provisioned { genesis, folders })
}

/// A key `keygen` made.
pub struct Generated {
    /// The secret key file (mode 0600).
    pub key_file: PathBuf,
    /// The public identity file: the line for the consortium file and the PeerId.
    pub public_file: PathBuf,
    /// The public key, for the member's `public_key` in the consortium file.
    pub public_key: PublicKey,
    /// The libp2p PeerId the member will authenticate as.
    pub peer_id: medfl_net::PeerId,
}

/// Makes a member's key in `dir` (created if absent), on the machine that will use it: the
/// secret key as `member.key` (mode 0600, never overwritten) and the public identity as
/// `member.pub`. A key from [`KeySource::InsecureSeed`] is marked so inside its file.
pub fn keygen(dir: &Path, source: KeySource) -> Result<Generated> {
    if !dir.exists() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        create_private_dir(dir)?;
    }
    let key_file = dir.join(files::KEY);
    let public_file = dir.join(files::PUBLIC);
    if key_file.exists() || public_file.exists() {
        bail!(
            "{} already holds a key; keygen never overwrites one",
            dir.display()
        );
    }
    let key = SigningKey::generate(&mut source.rng());
    let public_key = PublicKey::from(key.verifying_key());
    let peer_id = medfl_net::peer_id_of(&key.verifying_key());
    keyfile::write_with_origin(&key_file, &key, source.origin())?;
    let text = format!(
        "# The public identity of the key in {}: send it to whoever assembles the consortium\n\
         # file, as this member's public_key. It reveals nothing secret.\n\
         public_key = \"{public_key}\"\npeer_id = \"{peer_id}\"\n",
        files::KEY
    );
    std::fs::write(&public_file, text)
        .with_context(|| format!("writing {}", public_file.display()))?;
    Ok(Generated {
        key_file,
        public_file,
        public_key,
        peer_id,
    })
}

fn staging_dir(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "consortium".into());
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = parent.join(format!(".{name}.provisioning-{}", std::process::id()));
    create_private_dir(&staging)?;
    Ok(staging)
}

fn create_private_dir(path: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

fn write_folders(
    root: &Path,
    file: &ConsortiumFile,
    genesis_text: &str,
    secrets: &[(MemberId, SigningKey)],
    origin: KeyOrigin,
) -> Result<()> {
    let write = |path: PathBuf, text: &str| {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(root.join(files::GENESIS), genesis_text)?;
    let coordinators: Vec<String> = file
        .members
        .iter()
        .filter(|m| m.role == Role::Coordinator && !m.address.is_empty())
        .map(|m| m.address.clone())
        .collect();
    for m in &file.members {
        let dir = root.join(m.id.as_str());
        create_private_dir(&dir)?;
        match secrets.iter().find(|(id, _)| id == &m.id) {
            Some((_, key)) => keyfile::write_with_origin(&dir.join(files::KEY), key, origin)?,
            // A member that made its own key keeps it to itself.
            None => write(
                dir.join(files::KEY_INSTRUCTIONS),
                &format!(
                    "No secret key was written here: member {} made its own with `medfl keygen`.\n\
                     Place that key file here as {} (mode 0600). Its public key must be {}.\n",
                    m.id,
                    files::KEY,
                    m.public_key.map(|k| k.to_string()).unwrap_or_default()
                ),
            )?,
        }
        write(dir.join(files::GENESIS), genesis_text)?;
        let peers = PeersFile {
            peers: file
                .members
                .iter()
                .filter(|p| p.id != m.id)
                .cloned()
                .collect(),
        };
        write(dir.join(files::PEERS), &toml::to_string_pretty(&peers)?)?;
        let config = MemberConfig {
            member: m.id.clone(),
            role: m.role,
            key_file: files::KEY.into(),
            genesis: files::GENESIS.into(),
            peers: files::PEERS.into(),
            ledger_dir: "ledger".into(),
            monitor: None,
            listen: m.address.clone(),
            coordinators: coordinators.clone(),
            rounds: match (m.role, file.agreements.first()) {
                // The agreement's strategy: any other, and every hospital would decline.
                (Role::Coordinator, Some(a)) => Some(RoundSettings {
                    strategy: a.strategy,
                    ..RoundSettings::new(a.id.clone())
                }),
                _ => None,
            },
            data: (m.role == Role::Hospital).then(|| DataSettings {
                events: "data/events.csv".into(),
                target_fpr: 0.02,
                privacy_budget: None,
                hospital_budget: None,
            }),
        };
        let text = format!(
            "# medfl configuration for member {} ({}), written by `medfl provision`.\n# Paths are relative to this folder.\n{}",
            m.id,
            m.role,
            toml::to_string_pretty(&config)?
        );
        write(dir.join(files::CONFIG), &text)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::DataSettings;

    #[test]
    fn a_hospital_sets_its_own_budgets_in_its_data_table() {
        let text = r#"
            events = "access.ndjson"
            target_fpr = 0.02
            privacy_budget = [4.0, 1e-6]
            hospital_budget = [16.0, 1e-6, 2]
        "#;
        let d: DataSettings = toml::from_str(text).unwrap();
        assert_eq!(d.privacy_budget, Some((4.0, 1e-6)));
        assert_eq!(d.hospital_budget, Some((16.0, 1e-6, 2)));
        // Absent, neither is set; a colluder count that is not a whole number is refused.
        let d: DataSettings = toml::from_str("events = \"a.csv\"\ntarget_fpr = 0.02").unwrap();
        assert_eq!(d.hospital_budget, None);
        let bad = "events = \"a.csv\"\ntarget_fpr = 0.02\nhospital_budget = [16.0, 1e-6, 1.5]";
        assert!(toml::from_str::<DataSettings>(bad).is_err());
    }
}

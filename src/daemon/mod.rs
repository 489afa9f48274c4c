//! The networked edges: `medfl coordinator` and `medfl client` run the same state machines as
//! the simulator, with libp2p (`medfl-net`) for messages, redb for the ledger and files for
//! models. Everything here is plumbing; every protocol decision is in the state machines.

pub mod agent;
pub mod coordinator;
pub mod monitor;
pub mod privacy;
pub mod submit;
pub mod sync;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use medfl_ledger::{
    ChainState, Genesis, Ledger, MemberId, Role, Timestamp, Transaction, TxId, codec, keyfile,
};
use medfl_net::{Multiaddr, PeerId};

use crate::provision::MemberConfig;

/// A member's startup folder, loaded and checked.
#[derive(Clone)]
pub struct Member {
    /// The folder.
    pub dir: PathBuf,
    /// Its config.
    pub config: MemberConfig,
    /// Its secret key.
    pub key: SigningKey,
    /// The consortium's genesis.
    pub genesis: Genesis,
}

/// Whether a daemon accepts a key derived from a public seed (`--insecure-deterministic-seed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InsecureKeys {
    /// Refuse it: anyone who knows the seed can sign as the member.
    #[default]
    Refuse,
    /// Accept it (`--allow-insecure-keys`): tests and demos only.
    Allow,
}

impl Member {
    /// Refuses a member whose role is not `role` (a daemon started with another's config).
    pub fn expect_role(&self, role: Role) -> Result<()> {
        if self.config.role != role {
            bail!(
                "{} is a {}, not a {role}",
                self.config.member,
                self.config.role
            );
        }
        Ok(())
    }

    /// Loads `config.toml` and what it names; paths are relative to its folder. A key marked
    /// as derived from a public seed is refused unless `insecure` allows it.
    pub fn load(config_path: &Path, insecure: InsecureKeys) -> Result<Member> {
        let text = std::fs::read_to_string(config_path)
            .with_context(|| format!("reading {}", config_path.display()))?;
        let config: MemberConfig = toml::from_str(&text)
            .with_context(|| format!("{} is not a member config", config_path.display()))?;
        let dir = config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let key_path = dir.join(&config.key_file);
        if !key_path.exists() {
            bail!(
                "{} holds no key for {}: place there the key file `medfl keygen` made on this \
                 machine (its public key is the one the genesis lists)",
                key_path.display(),
                config.member
            );
        }
        let (key, origin) = keyfile::read_with_origin(&key_path)
            .with_context(|| format!("reading the key of {}", config.member))?;
        if origin == keyfile::KeyOrigin::PublicSeed && insecure == InsecureKeys::Refuse {
            bail!(
                "{}: the key of {} was derived from a public seed (--insecure-deterministic-seed), \
                 so anyone who knows the seed can sign as this member; make a real one with \
                 `medfl keygen`, or pass --allow-insecure-keys for a test",
                key_path.display(),
                config.member
            );
        }
        let genesis_path = dir.join(&config.genesis);
        let genesis = Genesis::from_toml(
            &std::fs::read_to_string(&genesis_path)
                .with_context(|| format!("reading {}", genesis_path.display()))?,
        )
        .with_context(|| format!("{} is not a usable genesis", genesis_path.display()))?;
        let listed = genesis
            .member(&config.member)
            .with_context(|| format!("{} is not in the genesis", config.member))?;
        if listed.public_key.to_bytes() != key.verifying_key().to_bytes() {
            bail!(
                "the key in {} is not the one the genesis lists for {}",
                config.key_file.display(),
                config.member
            );
        }
        Ok(Member {
            dir,
            config,
            key,
            genesis,
        })
    }

    /// Opens the member's ledger, creating it from the genesis on first start.
    ///
    /// An existing ledger is verified in full from the genesis this member holds before it is
    /// trusted: between two runs anyone with access to the folder could have replaced or
    /// edited it, and the daemon cannot tell its own writes from someone else's.
    pub fn open_ledger(&self) -> Result<Ledger> {
        let dir = self.dir.join(&self.config.ledger_dir);
        let ledger = if dir.join("ledger.redb").exists() {
            Ledger::open_verified(&dir, &self.genesis).with_context(|| {
                format!(
                    "refusing the ledger in {}: it does not verify from the genesis in {}",
                    dir.display(),
                    self.config.genesis.display()
                )
            })?
        } else {
            Ledger::create(&dir, &self.genesis)
                .with_context(|| format!("creating the ledger in {}", dir.display()))?
        };
        if ledger.state().genesis_hash() != self.genesis.hash()? {
            bail!(
                "the ledger in {} belongs to another consortium",
                dir.display()
            );
        }
        Ok(ledger)
    }
}

/// Every active member's PeerId, from the ledger's keys: who may talk to whom.
pub fn peer_map(state: &ChainState) -> BTreeMap<PeerId, MemberId> {
    state
        .members()
        .filter(|r| !r.revoked)
        .map(|r| {
            (
                medfl_net::peer_id_of(r.member.public_key.as_dalek()),
                r.member.id.clone(),
            )
        })
        .collect()
}

pub use crate::model_store::write_atomic;

/// Hands a transaction `member` signed to its running daemon: a hospital's `outbox/` (its
/// `medfl client` sends it to the coordinator and watches for its block), the coordinator's
/// `inbox/` (its daemon appends it). Returns the file and the transaction id.
pub fn queue_signed(member: &Member, tx: &Transaction) -> Result<(PathBuf, TxId)> {
    if member.config.role == Role::Auditor {
        bail!(
            "{} is an auditor: no daemon of its runs to send a transaction",
            member.config.member
        );
    }
    let id = tx.id()?;
    let folder = match member.config.role {
        Role::Coordinator => "inbox",
        _ => "outbox",
    };
    let dir = member.dir.join(folder);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{id}.tx"));
    write_atomic(&path, &codec::encode(tx)?)?;
    Ok((path, id))
}

impl Member {
    /// The coordinator this member talks to: its PeerId (from the genesis key) and the address
    /// its config dials.
    pub fn coordinator(&self) -> Result<(PeerId, Multiaddr)> {
        let coordinator = self
            .genesis
            .members
            .iter()
            .find(|m| m.role == Role::Coordinator)
            .context("the genesis lists no coordinator")?;
        let peer = medfl_net::peer_id_of(coordinator.public_key.as_dalek());
        let address: Multiaddr = self
            .config
            .coordinators
            .first()
            .context("the config lists no coordinator address")?
            .parse()
            .context("coordinator address")?;
        Ok((peer, address))
    }
}

/// Wall-clock time for ledger timestamps.
pub fn wall_now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    )
}

/// Logs to stderr: `LEVEL target: message key=value ...`.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .with_target(false)
        .try_init();
}

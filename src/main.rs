//! The `medfl` command line.

/// mimalloc, not glibc's malloc: many threads allocating and freeing small buffers (the
/// monitor's requests and answers) contend on glibc's arena locks (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use medfl::data::{self, DataFormat};
use medfl::detection::{self, Split};
use medfl::ledger::{ConsortiumFile, Genesis, Hash, InclusionProof, Ledger, verify_dir_from};
use medfl::provision::{self, KeyGeneration, KeySource};
use medfl::report;
use medfl::simulate;
use medfl_accesslog::OnError;
use medfl_model::experiment::ExperimentConfig;
use medfl_simulations::Scenario;

/// medfl: federated learning of access-anomaly models across hospitals, with secure
/// aggregation, differential privacy and a permissioned ledger.
#[derive(Parser)]
#[command(name = "medfl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole consortium in one process: simulated logs, DP-SGD, SecAgg+, the ledger.
    ///
    /// With no arguments: the embedded five-hospital scenario, ten rounds.
    Simulate {
        /// Scenario file (TOML); the embedded default scenario if absent.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// A provisioned consortium (the folder `medfl provision` wrote): simulate exactly what
        /// it would run (its coordinator's [rounds], its agreement, quorum and hospitals'
        /// [data]), on simulated data and keys.
        #[arg(long, conflicts_with_all = ["hospitals", "strategy", "epsilon", "hospital_epsilon"])]
        consortium: Option<PathBuf>,
        /// Hospitals (the scenario's are cycled or cut to this many) [default: 5]
        #[arg(long)]
        hospitals: Option<usize>,
        /// Rounds [default: 10; a consortium's own]
        #[arg(long)]
        rounds: Option<u64>,
        /// The one seed of the run [default: 20261124]
        #[arg(long)]
        seed: Option<u64>,
        /// Probability that a hospital goes silent during a round [default: 0]
        #[arg(long)]
        dropout: Option<f64>,
        /// Server update rule [default: fedavg; a consortium's agreement's]
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        /// Employee-level epsilon the whole run may spend per hospital: the DP-SGD noise
        /// multiplier is calibrated to it (and the budget set to it) [default: the deployed
        /// noise multiplier, budget 8]
        #[arg(long)]
        epsilon: Option<f64>,
        /// Hospital-level epsilon the whole run may spend per hospital: the aggregate's
        /// distributed noise is calibrated to it and every hospital holds itself to it.
        #[arg(long)]
        hospital_epsilon: Option<f64>,
        /// Survivors of each round assumed to collude with the coordinator, for
        /// --hospital-epsilon.
        #[arg(long, default_value_t = 1, requires = "hospital_epsilon")]
        colluders: u64,
        /// Output directory (default runs/sim-SEED-Nh-Rr-ID, ID naming every setting and the
        /// scenario, so another setting never lands on an earlier run); must not hold a run.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run the coordinator of a provisioned consortium: rounds over libp2p, anchored on the ledger.
    Coordinator {
        /// The coordinator's config.toml (from its provisioned startup folder).
        #[arg(long)]
        config: PathBuf,
        /// Stop once the ledger holds this many rounds (overrides the config).
        #[arg(long)]
        rounds: Option<u64>,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
    /// Run a hospital's agent: trains on its logs with DP-SGD and joins rounds over libp2p.
    Client {
        /// The hospital's config.toml (from its provisioned startup folder).
        #[arg(long)]
        config: PathBuf,
        /// Access events (CSV or FHIR AuditEvent NDJSON); overrides the config's [data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// Exit once the model of this round is adopted.
        #[arg(long)]
        until_round: Option<u64>,
        /// Skip malformed rows (reported with their line numbers) instead of refusing the
        /// file: the same rule as `train` and `eval`.
        #[arg(long)]
        skip_bad_rows: bool,
        /// Seconds a transaction from `medfl ledger submit` may stay out of every block before
        /// it is reported as censored and sent again.
        #[arg(long, default_value_t = 60.0)]
        submit_deadline_s: f64,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
    /// Run a hospital's access monitor: decides allow, alert or deny for each access to a
    /// health record (POST /v1/access), logs every decision durably before answering, and
    /// anchors the log on the ledger through the hospital's client.
    Monitor {
        /// The hospital's config.toml (from its provisioned startup folder).
        #[arg(long)]
        config: PathBuf,
        /// Address to serve on (default: `[monitor] listen` of the config, else
        /// 127.0.0.1:8088).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Also take IHE ATNA audit messages (RFC 5424 syslog over TCP, RFC 6587 framing,
        /// carrying FHIR AuditEvent JSON) on this address (default: `[monitor] syslog`).
        #[arg(long)]
        syslog: Option<std::net::SocketAddr>,
        /// Replay an archived audit trail: the monitor's clock follows the accesses' times
        /// instead of the wall clock (its alert windows and blocks as they were lived), into a
        /// log of its own (monitor-replay/, never anchored). Never for live use.
        #[arg(long)]
        replay: bool,
        /// Seconds a client may take to send a request's head, and an idle connection may
        /// wait for its next request (default: `[monitor] header_timeout_s`, else 10).
        #[arg(long)]
        header_timeout_s: Option<f64>,
        /// Seconds between sealed audit batches, each anchored on the ledger (default:
        /// `[monitor] seal_every_s`, else 60).
        #[arg(long)]
        seal_every_s: Option<f64>,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
    /// Check or read a hospital's access-monitor audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Make a security officer's token for the hospital's access monitor (printed once; the
    /// monitor keeps only its hash).
    OfficerToken {
        /// The hospital's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// The officer's name (letters, digits and '-').
        #[arg(long)]
        officer: String,
        /// `officer` (reads alerts, acknowledges them, lifts blocks) or `auditor` (reads).
        #[arg(long, default_value = "officer")]
        role: String,
        /// Days the token is valid.
        #[arg(long, default_value_t = 90)]
        valid_days: u16,
        /// Revoke the officer's tokens instead of making one.
        #[arg(long)]
        revoke: bool,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
    /// Make a self-signed TLS identity for the hospital's access monitor (tls/monitor.crt and
    /// tls/monitor.key in its folder) and print its SHA-256 fingerprint for senders to pin.
    TlsCert {
        /// The hospital's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// A DNS name or IP address the EHR's senders connect to (repeat for more).
        #[arg(long = "name", required = true)]
        names: Vec<String>,
    },
    /// Re-run a recorded simulation and check every model hash against its ledger.
    Replay {
        /// The run directory `medfl simulate` wrote.
        dir: PathBuf,
    },
    /// Make this member's key, here, on the machine that will use it.
    ///
    /// Writes DIR/member.key (PKCS#8 PEM, mode 0600) and DIR/member.pub, and prints the public
    /// key and PeerId: send the public key to whoever assembles the consortium file; the
    /// secret key never leaves this machine.
    Keygen {
        /// Directory to write the key into (created if absent; an existing key is never
        /// overwritten).
        #[arg(long)]
        out: PathBuf,
        /// Derive the key from this public seed instead of the OS generator. For reproducible
        /// tests only: anyone who knows the seed knows the key. The key file is marked so, and
        /// daemons refuse it without --allow-insecure-keys.
        #[arg(long, value_name = "SEED")]
        insecure_deterministic_seed: Option<u64>,
    },
    /// Write the genesis and a startup folder per member from a consortium file.
    ///
    /// By default every member has made its own key (`medfl keygen`) and the file lists every
    /// public key; no secret key is written and each member drops its own key into its folder.
    Provision {
        /// The consortium file (TOML): members with their public keys, roles, addresses,
        /// quorum, agreements.
        #[arg(long)]
        consortium: PathBuf,
        /// Where to write the startup folders (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Generate the keys the file lacks here and write them into the folders. Costs the
        /// consortium its independence: whoever runs this holds every generated key and can
        /// sign rounds, endorsements and consent as any of those members. For tests and demos.
        #[arg(long)]
        generate_keys_centrally: bool,
        /// With --generate-keys-centrally: derive the keys from this public seed instead of the
        /// OS generator. For reproducible tests only: anyone who knows the seed knows every
        /// key. The key files are marked so, and daemons refuse them without
        /// --allow-insecure-keys.
        #[arg(long, value_name = "SEED", requires = "generate_keys_centrally")]
        insecure_deterministic_seed: Option<u64>,
    },
    /// Compare local, federated and centralized training of the anomaly model, and the
    /// isolation-forest baseline, on a simulated consortium.
    Experiment {
        /// Scenario file (TOML); the embedded default scenario if absent.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Federated rounds (centralized and local training get as many epochs).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Also write the full results as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Generate a consortium's access-audit logs (events CSV, FHIR AuditEvent NDJSON, labels).
    Logs {
        /// Scenario file (TOML); the embedded default scenario if absent.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory (one folder per hospital).
        #[arg(long)]
        out: PathBuf,
    },
    /// Train a local anomaly model on one hospital's data and save it with its hash.
    Train {
        #[command(flatten)]
        input: DataArgs,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
        /// Passes over the training rows.
        #[arg(long, default_value_t = 5)]
        epochs: usize,
        /// False-positive rate the alert threshold is set for, on held-out normal rows.
        #[arg(long, default_value_t = 0.02)]
        target_fpr: f64,
        /// Seed of initial weights and data order.
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Score data with a model and, given labels, report AUROC, AUPRC, recall and FPR.
    Eval {
        #[command(flatten)]
        input: DataArgs,
        /// The model file.
        #[arg(long)]
        model: PathBuf,
        /// Print the evaluation as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create, inspect and check ledgers.
    #[command(subcommand)]
    Ledger(LedgerCommand),
}

/// `medfl audit`.
#[derive(Subcommand)]
enum AuditCommand {
    /// Prove the audit log matches the batches the hospital anchored on its ledger copy, and
    /// name the first bad record if it does not.
    Verify {
        /// The hospital's config.toml.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
    /// Who accessed a patient's record, when, from where, and what was decided.
    History {
        /// The hospital's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// The hospital's patient id.
        #[arg(long)]
        patient: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        insecure: InsecureKeysArg,
    },
}

/// The server update rules `simulate` offers, with their usual parameters.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum StrategyArg {
    /// Weighted FedAvg, server learning rate 1.
    Fedavg,
    /// FedProx, mu = 0.01.
    Fedprox,
    /// FedAdam, lr 0.01, betas 0.9 / 0.99, tau 1e-3.
    Fedadam,
}

impl StrategyArg {
    fn strategy(self) -> medfl_protocol::Strategy {
        use medfl_protocol::Strategy;
        match self {
            StrategyArg::Fedavg => Strategy::FedAvg { server_lr: 1.0 },
            StrategyArg::Fedprox => Strategy::FedProx { mu: 0.01 },
            StrategyArg::Fedadam => Strategy::FedAdam {
                lr: 0.01,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-3,
            },
        }
    }
}

/// The daemons' opt-in to keys derived from a public seed.
#[derive(clap::Args)]
struct InsecureKeysArg {
    /// Accept a key file marked as derived from a public seed (--insecure-deterministic-seed).
    /// Anyone who knows the seed can sign as this member: tests and demos only.
    #[arg(long)]
    allow_insecure_keys: bool,
}

impl InsecureKeysArg {
    fn policy(&self) -> medfl::daemon::InsecureKeys {
        if self.allow_insecure_keys {
            medfl::daemon::InsecureKeys::Allow
        } else {
            medfl::daemon::InsecureKeys::Refuse
        }
    }
}

/// Where data comes from.
#[derive(clap::Args)]
struct DataArgs {
    /// Events (CSV or FHIR AuditEvent NDJSON) or a numeric table (CSV).
    #[arg(long)]
    data: PathBuf,
    /// The file's format; detected from the extension and header if absent.
    #[arg(long, value_enum)]
    format: Option<DataFormat>,
    /// Labels CSV (event_id,attack) for an event file.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Name of a table's label column (excluded from the features).
    #[arg(long)]
    label_column: Option<String>,
    /// Skip malformed rows (reported with their line numbers) instead of refusing the file.
    #[arg(long)]
    skip_bad_rows: bool,
}

impl DataArgs {
    fn load(&self) -> Result<data::Dataset> {
        let on_error = if self.skip_bad_rows {
            OnError::Skip
        } else {
            OnError::Reject
        };
        data::load(
            &self.data,
            self.format,
            self.labels.as_deref(),
            self.label_column.as_deref(),
            on_error,
        )
    }
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Create a ledger in DIR from a genesis file.
    Init {
        /// The genesis (a provisioned consortium file, every member with a key).
        #[arg(long)]
        genesis: PathBuf,
        /// The ledger directory to create.
        dir: PathBuf,
    },
    /// Revoke a member: the coordinator signs it and its running daemon appends it.
    ///
    /// The signed transaction goes to the coordinator folder's `inbox/`; the daemon appends it
    /// within a second and cuts the member off.
    Revoke {
        /// The coordinator's config.toml.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        insecure: InsecureKeysArg,
        /// The member to revoke.
        #[arg(long)]
        member: String,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// Sign a transaction with a member's own key and hand it to its running daemon
    /// (governance: add a member, register an agreement, revoke; a hospital's own: consent,
    /// accept, leave, audit and alert anchors).
    ///
    /// It is first tried against the contracts on the member's own ledger copy: a transaction
    /// they refuse (a role that may not sign it, an unknown agreement, a key already used) is
    /// refused here, naming the rule, and nothing is queued. A hospital's transaction goes to
    /// its folder's `outbox/`; its `medfl client` sends it to the coordinator, watches for the
    /// block that carries it, and reports it as censored (log and `status.json`) if none does
    /// within the deadline. A coordinator's goes to `inbox/`, which its daemon appends.
    #[command(visible_alias = "propose")]
    Submit {
        /// The member's config.toml.
        #[arg(long)]
        config: PathBuf,
        /// Queue it even if the contracts on your own copy refuse it (your copy may be
        /// behind); the coordinator's refusal then comes back as `transaction refused`.
        #[arg(long)]
        skip_check: bool,
        #[command(flatten)]
        insecure: InsecureKeysArg,
        /// What to sign.
        #[command(subcommand)]
        body: SubmitBody,
    },
    /// Bring a ledger copy (an auditor's, say) up to date, checking every new block against the
    /// copy as a daemon does: from any member's ledger directory (`--from`, only read), or over
    /// the network from the running coordinator (`--config`, the member's own copy).
    Sync {
        /// A member's ledger directory to copy from (a mount, an export, a backup).
        #[arg(long, requires_all = ["genesis", "dir"], conflicts_with = "config")]
        from: Option<PathBuf>,
        /// With --from: the genesis you hold (a source of another consortium is refused).
        #[arg(long)]
        genesis: Option<PathBuf>,
        /// With --from: your copy (created from the genesis if absent).
        dir: Option<PathBuf>,
        /// A member's config.toml: sync its own copy from the coordinator over the network.
        #[arg(long, required_unless_present = "from")]
        config: Option<PathBuf>,
        #[command(flatten)]
        insecure: InsecureKeysArg,
        /// With --config: seconds without a new block after which the sync is done.
        #[arg(long, default_value_t = 3.0)]
        idle_s: f64,
    },
    /// Re-check every hash, signature, Merkle root and contract rule from the genesis you hold.
    Verify {
        /// The ledger directory.
        dir: PathBuf,
        /// The genesis (consortium file) you hold, from your startup folder or the consortium:
        /// a ledger that starts from any other genesis is refused, however consistent.
        #[arg(long)]
        genesis: PathBuf,
        /// Also require the ledger to end at this block hash (one held elsewhere).
        #[arg(long)]
        tip: Option<Hash>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print members, agreements, privacy spent and blocks.
    Show {
        /// The ledger directory.
        dir: PathBuf,
        /// Print everything as JSON.
        #[arg(long)]
        json: bool,
        /// How many of the latest blocks to list (text output).
        #[arg(long, default_value_t = 20)]
        blocks: usize,
    },
    /// Print an inclusion proof (JSON) for a transaction.
    Prove {
        /// The ledger directory.
        dir: PathBuf,
        /// The transaction id (hex).
        tx_id: Hash,
        /// Write the proof to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an inclusion proof with nothing but the genesis, as a light client would.
    CheckProof {
        /// The genesis file.
        #[arg(long)]
        genesis: PathBuf,
        /// The proof (JSON).
        proof: PathBuf,
    },
}

/// The transactions a member signs itself (what the contracts let each role sign).
#[derive(Subcommand)]
enum SubmitBody {
    /// Admit a member (coordinator).
    AddMember {
        /// Its id.
        #[arg(long)]
        id: String,
        /// Its role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Its ed25519 public key (hex, from its `medfl keygen`).
        #[arg(long)]
        public_key: medfl::ledger::PublicKey,
        /// Its network address (a multiaddr), if it listens.
        #[arg(long, default_value = "")]
        address: String,
    },
    /// Register a data-use agreement (coordinator); its members then accept it.
    RegisterAgreement {
        /// Its id.
        #[arg(long)]
        id: String,
        /// What the data may be used for.
        #[arg(long)]
        purpose: String,
        /// The hospitals it covers, comma-separated.
        #[arg(long, value_delimiter = ',')]
        members: Vec<String>,
        /// When it expires (RFC 3339).
        #[arg(long)]
        expires: String,
        /// Employee-level epsilon each member may spend under it.
        #[arg(long)]
        epsilon: f64,
        /// The delta its epsilons are stated at.
        #[arg(long)]
        delta: f64,
        /// Copy the aggregation floors and the strategy of this agreement [default: the
        /// protocol's defaults]
        #[arg(long)]
        like: Option<String>,
    },
    /// Move an agreement's expiry later (coordinator); its members must accept it again.
    ExtendAgreement {
        /// The agreement.
        #[arg(long)]
        agreement: String,
        /// The new expiry (RFC 3339), later than the current one.
        #[arg(long)]
        expires: String,
    },
    /// Revoke a member for good (coordinator).
    Revoke {
        /// The member.
        #[arg(long)]
        member: String,
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// Record a patient's consent choice (hospital).
    Consent {
        /// The patient's 32-byte salted pseudonym (hex).
        #[arg(long)]
        subject: Hash,
        /// `opt-out` excludes the patient's records from training; `opt-in` includes them again.
        #[arg(long, value_enum)]
        choice: ConsentArg,
    },
    /// Accept a data-use agreement registered or extended after genesis (hospital), on the
    /// terms your own ledger copy shows (its current expiry, named in the transaction).
    Accept {
        /// The agreement id.
        #[arg(long)]
        agreement: String,
    },
    /// Leave the consortium for good: the member revokes itself.
    Leave {
        /// Why, for the record.
        #[arg(long)]
        reason: String,
    },
    /// Anchor a batch of audit-log events (hospital).
    Audit {
        /// Merkle root over the batch's event hashes (hex).
        #[arg(long)]
        root: Hash,
        /// Number of events.
        #[arg(long)]
        count: u64,
        /// Time of the first event (RFC 3339).
        #[arg(long)]
        first: String,
        /// Time of the last event (RFC 3339).
        #[arg(long)]
        last: String,
    },
    /// Anchor an alert (hospital).
    Alert {
        /// Hash of the off-chain alert record (hex).
        #[arg(long)]
        alert: Hash,
        /// Severity.
        #[arg(long, value_enum)]
        severity: SeverityArg,
        /// When it was raised (RFC 3339).
        #[arg(long)]
        raised_at: String,
        /// The anchored global model that raised it (hex), if any.
        #[arg(long)]
        model: Option<Hash>,
    },
}

/// A member role on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Hospital,
    Coordinator,
    Auditor,
}

/// A consent choice on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ConsentArg {
    OptOut,
    OptIn,
}

/// An alert severity on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl SubmitBody {
    /// The transaction body this asks for; `chain` is the member's own ledger state.
    fn into_body(
        self,
        me: &medfl::ledger::MemberId,
        chain: &medfl::ledger::ChainState,
    ) -> Result<medfl::ledger::TxBody> {
        use medfl::ledger::TxBody;
        use medfl::ledger::tx::{AlertAnchor, AuditAnchor, ConsentChoice, Pseudonym, Severity};
        let time = |what: &str, s: &str| {
            medfl::ledger::Timestamp::parse_rfc3339(s)
                .map_err(|e| anyhow::anyhow!("--{what} {s:?}: {e}"))
        };
        let member_id = |s: String| medfl::ledger::MemberId::new(s).map_err(anyhow::Error::msg);
        Ok(match self {
            SubmitBody::AddMember {
                id,
                role,
                public_key,
                address,
            } => TxBody::AddMember(medfl::ledger::Member {
                id: member_id(id)?,
                role: match role {
                    RoleArg::Hospital => medfl::ledger::Role::Hospital,
                    RoleArg::Coordinator => medfl::ledger::Role::Coordinator,
                    RoleArg::Auditor => medfl::ledger::Role::Auditor,
                },
                public_key,
                address,
            }),
            SubmitBody::RegisterAgreement {
                id,
                purpose,
                members,
                expires,
                epsilon,
                delta,
                like,
            } => {
                let (floors, strategy) = match like {
                    Some(other) => {
                        let other_id =
                            medfl::ledger::AgreementId::new(other).map_err(anyhow::Error::msg)?;
                        let a = chain.agreement(&other_id).with_context(|| {
                            format!("--like {other_id}: no such agreement on the ledger")
                        })?;
                        (a.agreement.floors, a.agreement.strategy)
                    }
                    None => Default::default(),
                };
                TxBody::RegisterAgreement(medfl::ledger::tx::DataUseAgreement {
                    id: medfl::ledger::AgreementId::new(id).map_err(anyhow::Error::msg)?,
                    purpose,
                    members: members.into_iter().map(member_id).collect::<Result<_>>()?,
                    expires_at: time("expires", &expires)?,
                    budget: medfl::ledger::PrivacyBudget { epsilon, delta },
                    floors,
                    strategy,
                })
            }
            SubmitBody::ExtendAgreement { agreement, expires } => TxBody::ExtendAgreement {
                agreement: medfl::ledger::AgreementId::new(agreement)
                    .map_err(anyhow::Error::msg)?,
                expires_at: time("expires", &expires)?,
            },
            SubmitBody::Revoke { member, reason } => TxBody::RevokeMember {
                member: member_id(member)?,
                reason,
            },
            SubmitBody::Consent { subject, choice } => TxBody::Consent {
                subject: Pseudonym(subject),
                choice: match choice {
                    ConsentArg::OptOut => ConsentChoice::OptOut,
                    ConsentArg::OptIn => ConsentChoice::OptIn,
                },
            },
            SubmitBody::Accept { agreement } => {
                let id = medfl::ledger::AgreementId::new(agreement).map_err(anyhow::Error::msg)?;
                // The acceptance names the term it accepts: it cannot be carried onto a later
                // extension the hospital never saw.
                let terms = chain
                    .agreement(&id)
                    .with_context(|| format!("agreement {id} is not on your ledger copy"))?;
                TxBody::AcceptTerms {
                    expires_at: terms.agreement.expires_at,
                    agreement: id,
                }
            }
            SubmitBody::Leave { reason } => TxBody::RevokeMember {
                member: me.clone(),
                reason,
            },
            SubmitBody::Audit {
                root,
                count,
                first,
                last,
            } => TxBody::AnchorAuditLog(AuditAnchor {
                merkle_root: root,
                count,
                first_event_at: time("first", &first)?,
                last_event_at: time("last", &last)?,
            }),
            // A critical anchor naming no model is the shape of the access monitor's own (a
            // block it raised): `medfl audit verify` matches those against the audit log, so a
            // hand-made one would read as a rewritten log.
            SubmitBody::Alert {
                severity: SeverityArg::Critical,
                model: None,
                ..
            } => bail!(
                "a critical alert anchor without --model is the access monitor's own kind (it \
                 anchors the blocks it raises itself); give --model or a lower severity"
            ),
            SubmitBody::Alert {
                alert,
                severity,
                raised_at,
                model,
            } => TxBody::AnchorAlert(AlertAnchor {
                alert,
                severity: match severity {
                    SeverityArg::Low => Severity::Low,
                    SeverityArg::Medium => Severity::Medium,
                    SeverityArg::High => Severity::High,
                    SeverityArg::Critical => Severity::Critical,
                },
                raised_at: time("raised-at", &raised_at)?,
                model,
            }),
        })
    }
}

/// `medfl audit verify|history`.
fn audit(cmd: AuditCommand) -> Result<()> {
    use medfl_monitor::audit::RecordBody;
    match cmd {
        AuditCommand::Verify { config, insecure } => {
            let member = medfl::daemon::Member::load(&config, insecure.policy())?;
            // The anchors first, then the log: the log only grows, so the copy holds every
            // record an anchor read here can name.
            let anchors = medfl::daemon::monitor::own_anchors(&member)?;
            let (_copy, log) = medfl::daemon::monitor::open_copy(&member.dir)?;
            let r = log
                .verify(&anchors.audit)
                .context("the audit log does not verify")?;
            let alerts = log
                .check_alert_anchors(&anchors.alerts)
                .context("the alert anchors do not match the audit log")?;
            emit(&format!(
                "audit log verifies: {} records; {} sealed batches, {} of them anchored on the ledger copy; {} records not yet sealed (protected by the hash chain only); {} blocks raised in sealed batches, {} of them with an alert anchor on the ledger copy; {} alert anchors not the monitor's (severity below critical, or naming a model)",
                r.records,
                r.batches,
                r.anchored,
                r.unsealed,
                alerts.raised,
                alerts.anchored,
                alerts.other
            ))
        }
        AuditCommand::History {
            config,
            patient,
            json,
            insecure,
        } => {
            let member = medfl::daemon::Member::load(&config, insecure.policy())?;
            let (_copy, log) = medfl::daemon::monitor::open_copy(&member.dir)?;
            let records = log.history(&patient)?;
            if json {
                let list: Vec<_> = records
                    .iter()
                    .filter_map(|r| {
                        let (request, decision) = r.body.decision()?;
                        let mut row = serde_json::json!({
                            "record": r.seq, "request": request, "decision": decision,
                        });
                        if let RecordBody::Delivered { id, .. } = &r.body {
                            row["delivery_id"] = serde_json::Value::from(id.as_str());
                        }
                        Some(row)
                    })
                    .collect();
                return emit(&serde_json::to_string_pretty(&list)?);
            }
            let rows: Vec<Vec<String>> = records
                .iter()
                .filter_map(|r| {
                    let (request, decision) = r.body.decision()?;
                    Some(vec![
                        r.seq.to_string(),
                        medfl::ledger::Timestamp(request.time_ms).to_string(),
                        format!(
                            "{} ({}, {})",
                            request.user, request.role, request.department
                        ),
                        format!("{} {}", request.action, request.resource),
                        format!("{} / {}", request.source_ip, request.workstation),
                        format!("{:?}", decision.verdict).to_lowercase(),
                    ])
                })
                .collect();
            let mut text = format!(
                "{} accesses to the record of patient {patient}\n",
                rows.len()
            );
            text.push_str(&medfl::report::table(
                &["record", "when (UTC)", "who", "what", "from", "decision"],
                &rows,
            ));
            emit(&text)
        }
    }
}

fn main() -> ExitCode {
    // A damaged ledger file is reported as an error, not with the storage engine's panic.
    medfl::ledger::store::quiet_storage_panics();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`medfl ledger show --json | head`): stop quietly, as `cat` does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Writes `text` and a newline to stdout; unlike `println!`, a closed pipe is an error to
/// return, not a panic.
fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Keygen {
            out,
            insecure_deterministic_seed,
        } => {
            let source = key_source(insecure_deterministic_seed);
            let made = provision::keygen(&out, source)?;
            println!(
                "secret key written to {} (mode 0600)",
                made.key_file.display()
            );
            println!("public_key = \"{}\"", made.public_key);
            println!("peer_id = \"{}\"", made.peer_id);
            println!(
                "next: send the public_key line (also in {}) for this member's entry in the consortium file; keep the secret key on this machine",
                made.public_file.display()
            );
        }
        Command::Provision {
            consortium,
            out,
            generate_keys_centrally,
            insecure_deterministic_seed,
        } => {
            let text = read(&consortium)?;
            let plan = ConsortiumFile::from_toml(&text)
                .with_context(|| format!("reading {}", consortium.display()))?;
            let keys = if generate_keys_centrally {
                eprintln!(
                    "warning: generating members' keys centrally: whoever holds {} can sign as each of those members",
                    out.display()
                );
                KeyGeneration::Central(key_source(insecure_deterministic_seed))
            } else {
                KeyGeneration::ByMembers
            };
            let done = provision::provision(&plan, &out, keys)?;
            let rows: Vec<Vec<String>> = done
                .genesis
                .members
                .iter()
                .zip(&done.folders)
                .map(|(m, (_, dir))| {
                    vec![
                        m.id.to_string(),
                        m.role.to_string(),
                        m.public_key.to_string(),
                        dir.display().to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                report::table(&["member", "role", "public key", "startup folder"], &rows)
            );
            println!(
                "\ngenesis {} written to {}",
                done.genesis.hash()?,
                out.join(provision::files::GENESIS).display()
            );
            if !generate_keys_centrally {
                println!(
                    "no secret key was written: each member places the member.key it made with `medfl keygen` in its folder"
                );
            }
            println!(
                "next: hand each member its folder; it runs `medfl coordinator --config config.toml` \
                 or `medfl client --config config.toml --data EVENTS.csv` there (the ledger is \
                 created from the genesis on first start)"
            );
        }
        Command::Ledger(cmd) => return ledger(cmd),
        Command::Train {
            input,
            out,
            epochs,
            target_fpr,
            seed,
        } => {
            let ds = input.load()?;
            let text = medfl::standalone::train(&ds, &input.data, &out, epochs, target_fpr, seed)?;
            emit(text.trim_end())?;
        }
        Command::Eval { input, model, json } => {
            let ds = input.load()?;
            emit(medfl::standalone::eval(&ds, &model, json)?.trim_end())?;
        }
        Command::Logs {
            scenario,
            seed,
            out,
        } => {
            let sc = load_scenario(scenario.as_deref(), seed)?;
            let summaries = medfl_simulations::write_consortium(&sc, &out)
                .with_context(|| format!("writing logs to {}", out.display()))?;
            let mut headers = vec!["hospital", "staff", "patients", "days", "events"];
            let kinds: Vec<String> = medfl_accesslog::AttackKind::ALL
                .iter()
                .map(|k| k.to_string())
                .collect();
            headers.extend(kinds.iter().map(String::as_str));
            let rows: Vec<Vec<String>> = summaries
                .iter()
                .map(|s| {
                    let mut row = vec![
                        s.name.clone(),
                        s.staff.to_string(),
                        s.patients.to_string(),
                        s.days.to_string(),
                        s.events.to_string(),
                    ];
                    row.extend(s.attack_events.iter().map(|n| n.to_string()));
                    row
                })
                .collect();
            print!("{}", report::table(&headers, &rows));
            println!("logs written to {}", out.display());
        }
        Command::Simulate {
            scenario,
            consortium,
            hospitals,
            rounds,
            seed,
            dropout,
            strategy,
            epsilon,
            hospital_epsilon,
            colluders,
            out,
        } => {
            let mut run = match &consortium {
                Some(dir) => simulate::RunConfig::from_consortium(dir)?,
                None => simulate::RunConfig::default(),
            };
            if let Some(h) = hospitals {
                if h < 2 {
                    bail!("--hospitals must be at least 2 (got {h})");
                }
                run.hospitals = h;
            }
            if let Some(r) = rounds {
                run.rounds.rounds = r;
            }
            if let Some(s) = seed {
                run.seed = s;
            }
            if let Some(d) = dropout {
                run.dropout = d;
            }
            if let Some(s) = strategy {
                run.rounds.strategy = s.strategy();
            }
            if let Some(e) = epsilon {
                run.calibrate_to(e)?;
                eprintln!(
                    "noise multiplier {:.4} for employee-level epsilon {e} over {} rounds",
                    run.rounds.training.noise_multiplier, run.rounds.rounds
                );
            }
            if let Some(e) = hospital_epsilon {
                run.calibrate_hospital_to(e, colluders)?;
                eprintln!(
                    "distributed-noise multiplier {:.4} for hospital-level epsilon {e} over {} rounds, {colluders} colluders",
                    run.rounds.ddg.noise_multiplier, run.rounds.rounds
                );
            }
            let text = match &scenario {
                Some(path) => read(path)?,
                None => medfl_simulations::scenario::DEFAULT_TOML.to_string(),
            };
            let out = match out {
                Some(out) => out,
                None => simulate::default_out(&run, &text)?,
            };
            let started = std::time::Instant::now();
            simulate::simulate(&text, &run, &out)
                .with_context(|| format!("simulation into {}", out.display()))?;
            eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
        }
        Command::Coordinator {
            config,
            rounds,
            insecure,
        } => {
            medfl::daemon::init_logging();
            let opts = medfl::daemon::coordinator::Options {
                rounds,
                insecure_keys: insecure.policy(),
            };
            runtime()?.block_on(medfl::daemon::coordinator::run(&config, opts))?;
        }
        Command::Client {
            config,
            data,
            until_round,
            skip_bad_rows,
            submit_deadline_s,
            insecure,
        } => {
            medfl::daemon::init_logging();
            let submit_deadline = std::time::Duration::try_from_secs_f64(submit_deadline_s)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--submit-deadline-s must be a positive number of seconds")?;
            let opts = medfl::daemon::agent::Options {
                data,
                until_round,
                skip_bad_rows,
                submit_deadline: Some(submit_deadline),
                insecure_keys: insecure.policy(),
            };
            // A hospital whose config has a `[monitor]` table runs its access monitor beside
            // the agent, in the same process; either stopping stops both.
            let monitor = match medfl::daemon::monitor::settings(&config)? {
                Some(_) => Some(medfl::daemon::monitor::options(
                    &config,
                    None,
                    None,
                    None,
                    None,
                    false,
                    insecure.policy(),
                )?),
                None => None,
            };
            runtime()?.block_on(async {
                let agent = medfl::daemon::agent::run(&config, opts);
                match monitor {
                    None => agent.await,
                    Some(m) => {
                        // On a task of its own, so that neither one's work stalls the other.
                        let monitor_config = config.clone();
                        let mut monitor = tokio::spawn(async move {
                            medfl::daemon::monitor::run(&monitor_config, m).await
                        });
                        tokio::select! {
                            done = agent => {
                                monitor.abort();
                                done
                            }
                            done = &mut monitor => match done {
                                Ok(r) => r.context("the access monitor stopped"),
                                Err(e) => Err(anyhow::anyhow!("the access monitor failed: {e}")),
                            },
                        }
                    }
                }
            })?;
        }
        Command::Monitor {
            config,
            listen,
            syslog,
            replay,
            header_timeout_s,
            seal_every_s,
            insecure,
        } => {
            medfl::daemon::init_logging();
            let opts = medfl::daemon::monitor::options(
                &config,
                listen,
                syslog,
                seal_every_s,
                header_timeout_s,
                replay,
                insecure.policy(),
            )?;
            runtime()?.block_on(medfl::daemon::monitor::run(&config, opts))?;
        }
        Command::Audit(cmd) => audit(cmd)?,
        Command::TlsCert { config, names } => {
            use medfl::daemon::monitor::tls;
            let made = tls::write_self_signed(&config, &names)?;
            emit(&format!(
                "wrote {cert} and {key} (self-signed, P-256, {days} days, for {names})\n\
                 SHA-256 fingerprint: {fp}\n\n\
                 Add to {config} (beside a [monitor] table with its listen address):\n\
                 [monitor.tls]\n\
                 cert = \"{cert}\"\n\
                 key = \"{key}\"\n\
                 # client_ca = \"tls/senders-ca.pem\"  (CA of the certificates senders must show)",
                cert = tls::CERT_FILE,
                key = tls::KEY_FILE,
                days = tls::CERT_DAYS,
                names = names.join(", "),
                fp = made.fingerprint,
                config = config.display(),
            ))?;
        }
        Command::OfficerToken {
            config,
            officer,
            role,
            valid_days,
            revoke,
            insecure,
        } => {
            let member = medfl::daemon::Member::load(&config, insecure.policy())?;
            if revoke {
                let n = medfl::daemon::monitor::officers::revoke_officer(&member.dir, &officer)?;
                emit(&format!("{n} token(s) of {officer} revoked"))?;
            } else {
                let role = medfl::daemon::monitor::officers::OfficerRole::parse(&role)
                    .context("--role is officer or auditor")?;
                let days = u64::from(valid_days);
                if days == 0 {
                    bail!("--valid-days must be at least 1");
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)?
                    .as_millis();
                let expires = u64::try_from(now)?.saturating_add(days * 86_400_000);
                let token =
                    medfl::daemon::monitor::add_officer(&member.dir, &officer, role, expires)?;
                emit(&token)?;
            }
        }
        Command::Replay { dir } => {
            let started = std::time::Instant::now();
            let r =
                simulate::replay(&dir).with_context(|| format!("replaying {}", dir.display()))?;
            println!(
                "replay matches: all {} anchored model hashes reproduced bit for bit ({:.1} s)",
                r.rounds,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Experiment {
            scenario,
            rounds,
            seed,
            json,
        } => {
            let sc = load_scenario(scenario.as_deref(), seed)?;
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let config = ExperimentConfig {
                rounds,
                ..ExperimentConfig::default()
            };
            let started = std::time::Instant::now();
            let results = detection::run(&sc, Split::default(), &config, |msg| eprintln!("{msg}"))?;
            eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
            print!("{}", detection::render(&results, config.target_fpr));
            for r in &results {
                if let Some(hash) = &r.model_hash {
                    println!("{} model hash {hash}", r.setting);
                }
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ledger(cmd: LedgerCommand) -> Result<ExitCode> {
    match cmd {
        LedgerCommand::Init { genesis, dir } => {
            let g = load_genesis(&genesis)?;
            let ledger = Ledger::create(&dir, &g)?;
            println!(
                "created ledger {} (genesis {})",
                dir.display(),
                ledger.state().genesis_hash()
            );
        }
        LedgerCommand::Verify {
            dir,
            genesis,
            tip,
            json,
        } => {
            let pinned = load_genesis(&genesis)?;
            check_dir(&dir)?;
            let result = verify_dir_from(&dir, &pinned, tip);
            if json {
                let value = match &result {
                    Ok(r) => serde_json::json!({
                        "ok": true, "height": r.height, "transactions": r.transactions,
                        "tip": r.tip.to_string(), "genesis": r.genesis.to_string(),
                    }),
                    Err(e) => {
                        serde_json::json!({ "ok": false, "height": e.height, "reason": e.reason })
                    }
                };
                emit(&serde_json::to_string_pretty(&value)?)?;
            }
            match result {
                Ok(r) => {
                    if !json {
                        println!(
                            "ok: {} blocks, {} transactions verified from genesis {}; tip {}",
                            r.height, r.transactions, r.genesis, r.tip
                        );
                    }
                }
                Err(e) => {
                    eprintln!("verification failed at height {}: {}", e.height, e.reason);
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        LedgerCommand::Show { dir, json, blocks } => {
            let ledger = open_snapshot(&dir)?;
            let summary = report::summarize(&ledger)?;
            if json {
                emit(&serde_json::to_string_pretty(&summary)?)?;
            } else {
                emit(report::render_text(&summary, blocks).trim_end())?;
            }
        }
        LedgerCommand::Prove { dir, tx_id, out } => {
            let ledger = open_snapshot(&dir)?;
            let proof = ledger.prove(&tx_id)?;
            let text = serde_json::to_string_pretty(&proof)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text)
                        .with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "proof of {tx_id} (block {}) written to {}",
                        proof.headers.len(),
                        path.display()
                    );
                }
                None => emit(&text)?,
            }
        }
        // The same path as `submit revoke`: checked on the coordinator's copy, then queued.
        LedgerCommand::Revoke {
            config,
            insecure,
            member,
            reason,
        } => submit(
            &config,
            insecure,
            false,
            SubmitBody::Revoke { member, reason },
        )?,
        LedgerCommand::Submit {
            config,
            skip_check,
            insecure,
            body,
        } => submit(&config, insecure, skip_check, body)?,
        LedgerCommand::Sync {
            config: Some(config),
            insecure,
            idle_s,
            ..
        } => {
            let idle = std::time::Duration::try_from_secs_f64(idle_s)
                .ok()
                .filter(|d| !d.is_zero())
                .context("--idle-s must be a positive number of seconds")?;
            let r = runtime()?.block_on(medfl::daemon::sync::from_coordinator(
                &config,
                insecure.policy(),
                idle,
            ))?;
            println!(
                "synced {} blocks from the coordinator: height {}, tip {} (each checked against the copy)",
                r.appended, r.height, r.tip
            );
        }
        LedgerCommand::Sync {
            from: Some(from),
            genesis: Some(genesis),
            dir: Some(dir),
            ..
        } => {
            let pinned = load_genesis(&genesis)?;
            // The source's raw bytes only: nothing of it is trusted or replayed; each block is
            // judged by our copy's rules (signatures first) as it is appended.
            check_dir(&from)?;
            let source = medfl::ledger::store::RedbStore::open_snapshot(
                &from.join(medfl::ledger::ledger::DB_FILE),
            )
            .with_context(|| format!("reading {}", from.display()))?;
            let their_block = |height: u64| -> Result<Option<medfl::ledger::Block>> {
                use medfl::ledger::store::BlockStore;
                source
                    .block(height)?
                    .map(|bytes| medfl::ledger::codec::decode(&bytes))
                    .transpose()
                    .with_context(|| format!("block {height} of {} is damaged", from.display()))
            };
            let their_genesis: Genesis = {
                use medfl::ledger::store::BlockStore;
                let bytes = source
                    .genesis()?
                    .with_context(|| format!("{} stores no genesis", from.display()))?;
                medfl::ledger::codec::decode(&bytes)
                    .with_context(|| format!("the genesis stored in {}", from.display()))?
            };
            if their_genesis.hash()? != pinned.hash()? {
                bail!(
                    "{} starts from genesis {}, not the one you hold ({}): another chain",
                    from.display(),
                    their_genesis.hash()?,
                    pinned.hash()?
                );
            }
            let mut copy = if dir.join(medfl::ledger::ledger::DB_FILE).exists() {
                Ledger::open_verified(&dir, &pinned)
                    .with_context(|| format!("your copy in {} does not verify", dir.display()))?
            } else {
                Ledger::create(&dir, &pinned)
                    .with_context(|| format!("creating {}", dir.display()))?
            };
            let ours = copy.state().height();
            // The source must extend our copy, not fork from it.
            if ours > 0 {
                match their_block(ours)? {
                    Some(theirs) if theirs.header.hash()? != copy.state().tip() => bail!(
                        "{} holds another block at height {ours} than your copy ({} vs {}): a fork; keep both as evidence",
                        from.display(),
                        theirs.header.hash()?,
                        copy.state().tip()
                    ),
                    Some(_) => {}
                    None => bail!(
                        "{} ends before your copy's height {ours}: nothing to sync from it",
                        from.display()
                    ),
                }
            }
            let mut height = ours + 1;
            while let Some(block) = their_block(height)? {
                copy.append_block(&block).with_context(|| {
                    format!(
                        "block {height} of {} refused (your copy keeps blocks 1 to {})",
                        from.display(),
                        height - 1
                    )
                })?;
                height += 1;
            }
            println!(
                "synced {} blocks from {}: {} at height {}, tip {} (each checked against your copy from the genesis you hold)",
                copy.state().height() - ours,
                from.display(),
                dir.display(),
                copy.state().height(),
                copy.state().tip()
            );
        }
        LedgerCommand::Sync { .. } => {
            bail!("give --from DIR --genesis FILE with your copy's DIR, or --config")
        }
        LedgerCommand::CheckProof { genesis, proof } => {
            let g = load_genesis(&genesis)?;
            let text = read(&proof)?;
            let p: InclusionProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a medfl inclusion proof", proof.display()))?;
            match p.verify(&g) {
                Ok(t) => println!(
                    "ok: {} transaction {} signed by {} is in block {} ({}){}",
                    t.kind,
                    t.id,
                    t.signer,
                    t.height,
                    t.block_time,
                    if t.signer_checked {
                        "; signer's signature checked"
                    } else {
                        "; signer admitted after genesis, its signature not checkable from the genesis alone"
                    }
                ),
                Err(e) => {
                    eprintln!("proof rejected: {e}");
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Signs `body` as the member configured in `config`, tries it against the contracts on the
/// member's own ledger copy (unless `skip_check`), and queues it for the member's daemon.
fn submit(
    config: &Path,
    insecure: InsecureKeysArg,
    skip_check: bool,
    body: SubmitBody,
) -> Result<()> {
    let me = medfl::daemon::Member::load(config, insecure.policy())?;
    // The member's own copy, read as a snapshot (its daemon may be running).
    let copy = me.dir.join(&me.config.ledger_dir);
    let ledger = Ledger::open_snapshot(&copy)
        .with_context(|| format!("reading the ledger copy in {}", copy.display()))?;
    if ledger.state().genesis_hash() != me.genesis.hash()? {
        bail!(
            "the ledger copy in {} belongs to another consortium",
            copy.display()
        );
    }
    let body = body.into_body(&me.config.member, ledger.state())?;
    let kind = body.kind();
    // What is checked is what is queued: one signature, one issue time.
    let now = medfl::daemon::wall_now();
    let tx = medfl::ledger::Transaction::sign(
        &me.genesis.hash()?,
        me.config.member.clone(),
        &me.key,
        now,
        body,
    )?;
    if let Err(e) = ledger.state().check_tx(&tx, now)
        && !skip_check
    {
        bail!(
            "the contracts refuse this {kind} transaction on {}'s ledger copy (height {}): {e}; nothing was queued",
            me.config.member,
            ledger.state().height()
        );
    }
    drop(ledger);
    let (path, id) = medfl::daemon::queue_signed(&me, &tx)?;
    println!(
        "{kind} transaction {id} queued for {}'s daemon: {}",
        me.config.member,
        path.display()
    );
    Ok(())
}

fn key_source(insecure_deterministic_seed: Option<u64>) -> KeySource {
    match insecure_deterministic_seed {
        Some(seed) => {
            eprintln!(
                "warning: keys derived from the public seed {seed}; never use them for real data"
            );
            KeySource::InsecureSeed(seed)
        }
        None => KeySource::Os,
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn load_genesis(path: &Path) -> Result<Genesis> {
    Genesis::from_toml(&read(path)?)
        .with_context(|| format!("{} is not a usable genesis", path.display()))
}

fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}

/// Opens a private snapshot of the ledger in `dir`: inspection never writes, locks or repairs
/// the evidence, so it works on read-only media and beside the daemon that keeps the ledger.
fn open_snapshot(dir: &Path) -> Result<Ledger> {
    check_dir(dir)?;
    Ledger::open_snapshot(dir).with_context(|| format!("opening the ledger in {}", dir.display()))
}

fn load_scenario(path: Option<&Path>, seed: Option<u64>) -> Result<Scenario> {
    let mut sc = match path {
        Some(path) => Scenario::from_toml(&read(path)?)
            .with_context(|| format!("scenario {}", path.display()))?,
        None => Scenario::default_embedded(),
    };
    if let Some(seed) = seed {
        sc.seed = seed;
    }
    sc.validate()?;
    Ok(sc)
}

//! The command line's grammar: every command, argument and its help text (clap derive).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use medfl::data::{self, DataFormat};
use medfl::ledger::Hash;
use medfl_accesslog::OnError;

/// medfl: federated learning of access-anomaly models across hospitals, with secure
/// aggregation, differential privacy and a permissioned ledger.
#[derive(Parser)]
#[command(name = "medfl", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
        /// Serve the web console of the run at this address while it goes on, and after it
        /// ends until interrupted [default address: 127.0.0.1:8090].
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:8090")]
        serve: Option<std::net::SocketAddr>,
        /// With --serve: serve the finished run in this directory instead of running one.
        #[arg(long, value_name = "DIR", requires = "serve", conflicts_with_all = [
            "scenario", "consortium", "hospitals", "rounds", "seed", "dropout", "strategy",
            "epsilon", "hospital_epsilon", "out",
        ])]
        view: Option<PathBuf>,
    },
    /// Run the coordinator of a provisioned consortium: rounds over libp2p, anchored on the ledger.
    Coordinator {
        /// The coordinator's config.toml (from its provisioned startup folder).
        #[arg(long)]
        config: PathBuf,
        /// Stop once the ledger holds this many rounds (overrides the config).
        #[arg(long)]
        rounds: Option<u64>,
        /// Serve the consortium's web console (rounds, privacy, the ledger explorer) at this
        /// address.
        #[arg(long, value_name = "ADDR")]
        console: Option<std::net::SocketAddr>,
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
        #[arg(long, conflicts_with = "tables")]
        scenario: Option<PathBuf>,
        /// Hospitals' own numeric tables (CSV, one hospital each, the same columns) instead of
        /// a scenario: the network takes their width.
        #[arg(long, num_args = 2.., requires = "label_column")]
        tables: Vec<PathBuf>,
        /// The tables' label column: normal when empty, 0, normal, benign, inlier, negative, false, no or nominal (any case); anomalous otherwise.
        #[arg(long, requires = "tables")]
        label_column: Option<String>,
        /// A column of train/validation/test keeping a data set's own split (without it, each
        /// table's rows are shuffled with the seed and split 60/20/20).
        #[arg(long, requires = "tables")]
        split_column: Option<String>,
        /// Skip the tables' malformed rows (reported) instead of refusing the file.
        #[arg(long, requires = "tables")]
        skip_bad_rows: bool,
        /// Federated rounds (centralized and local training get as many epochs).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Train every network from this many initial weights and data orders (model seeds
        /// upward from 7, or from --seed with --tables) on the same data, and report each
        /// figure's median and range: one initialization's figures can be lucky.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
        inits: u64,
        /// Also write the full results (of the first initial weights) as JSON to this file.
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
pub(crate) enum AuditCommand {
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
pub(crate) enum StrategyArg {
    /// Weighted FedAvg, server learning rate 1.
    Fedavg,
    /// FedProx, mu = 0.01.
    Fedprox,
    /// FedAdam, lr 0.01, betas 0.9 / 0.99, tau 1e-3.
    Fedadam,
}

impl StrategyArg {
    pub(crate) fn strategy(self) -> medfl_protocol::Strategy {
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
pub(crate) struct InsecureKeysArg {
    /// Accept a key file marked as derived from a public seed (--insecure-deterministic-seed).
    /// Anyone who knows the seed can sign as this member: tests and demos only.
    #[arg(long)]
    pub(crate) allow_insecure_keys: bool,
}

impl InsecureKeysArg {
    pub(crate) fn policy(&self) -> medfl::daemon::InsecureKeys {
        if self.allow_insecure_keys {
            medfl::daemon::InsecureKeys::Allow
        } else {
            medfl::daemon::InsecureKeys::Refuse
        }
    }
}

/// Where data comes from.
#[derive(clap::Args)]
pub(crate) struct DataArgs {
    /// Events (CSV or FHIR AuditEvent NDJSON) or a numeric table (CSV).
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// The file's format; detected from the extension and header if absent.
    #[arg(long, value_enum)]
    pub(crate) format: Option<DataFormat>,
    /// Labels CSV (event_id,attack) for an event file.
    #[arg(long)]
    pub(crate) labels: Option<PathBuf>,
    /// Name of a table's label column (excluded from the features): normal when empty, 0, normal, benign, inlier, negative, false, no or nominal (any case); anomalous otherwise.
    #[arg(long)]
    pub(crate) label_column: Option<String>,
    /// Skip malformed rows (reported with their line numbers) instead of refusing the file.
    #[arg(long)]
    pub(crate) skip_bad_rows: bool,
}

impl DataArgs {
    pub(crate) fn load(&self) -> Result<data::Dataset> {
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
pub(crate) enum LedgerCommand {
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
pub(crate) enum SubmitBody {
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
pub(crate) enum RoleArg {
    Hospital,
    Coordinator,
    Auditor,
}

/// A consent choice on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ConsentArg {
    OptOut,
    OptIn,
}

/// An alert severity on the command line.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

impl SubmitBody {
    /// The transaction body this asks for; `chain` is the member's own ledger state.
    pub(crate) fn into_body(
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

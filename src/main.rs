//! The `medfl` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use medfl::ledger::{ConsortiumFile, Genesis, Hash, InclusionProof, Ledger, verify_dir};
use medfl::provision::{self, KeySource};
use medfl::report;

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
    /// Generate every member's key and a startup folder per member from a consortium plan.
    Provision {
        /// The consortium plan (TOML): members, roles, addresses, quorum, agreements.
        #[arg(long)]
        consortium: PathBuf,
        /// Where to write the startup folders (must not exist, or be empty).
        #[arg(long)]
        out: PathBuf,
        /// Derive keys from this public seed instead of the OS generator. For reproducible
        /// tests and simulations only: anyone who knows the seed knows every key.
        #[arg(long, value_name = "SEED")]
        insecure_deterministic_seed: Option<u64>,
    },
    /// Create, inspect and check ledgers.
    #[command(subcommand)]
    Ledger(LedgerCommand),
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
    /// Re-check every hash, signature, Merkle root and contract rule from genesis.
    Verify {
        /// The ledger directory.
        dir: PathBuf,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Provision {
            consortium,
            out,
            insecure_deterministic_seed,
        } => {
            let text = read(&consortium)?;
            let plan = ConsortiumFile::from_toml(&text)
                .with_context(|| format!("reading {}", consortium.display()))?;
            let keys = match insecure_deterministic_seed {
                Some(seed) => {
                    eprintln!(
                        "warning: keys derived from the public seed {seed}; never use them for real data"
                    );
                    KeySource::InsecureSeed(seed)
                }
                None => KeySource::Os,
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
            println!(
                "next: medfl ledger init --genesis {} <ledger dir>",
                out.join(provision::files::GENESIS).display()
            );
        }
        Command::Ledger(cmd) => return ledger(cmd),
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
        LedgerCommand::Verify { dir, tip, json } => {
            check_dir(&dir)?;
            let result = verify_dir(&dir, tip);
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
                println!("{}", serde_json::to_string_pretty(&value)?);
            }
            match result {
                Ok(r) => {
                    if !json {
                        println!(
                            "ok: {} blocks, {} transactions verified; tip {}",
                            r.height, r.transactions, r.tip
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
            let ledger = open(&dir)?;
            let summary = report::summarize(&ledger)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            } else {
                print!("{}", report::render_text(&summary, blocks));
            }
        }
        LedgerCommand::Prove { dir, tx_id, out } => {
            let ledger = open(&dir)?;
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
                None => println!("{text}"),
            }
        }
        LedgerCommand::CheckProof { genesis, proof } => {
            let g = load_genesis(&genesis)?;
            let text = read(&proof)?;
            let p: InclusionProof = serde_json::from_str(&text)
                .with_context(|| format!("{} is not a medfl inclusion proof", proof.display()))?;
            match p.verify(&g) {
                Ok(t) => println!(
                    "ok: transaction {} is in block {} ({}){}",
                    t.id,
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

fn open(dir: &Path) -> Result<Ledger> {
    check_dir(dir)?;
    Ledger::open(dir).with_context(|| format!("opening the ledger in {}", dir.display()))
}

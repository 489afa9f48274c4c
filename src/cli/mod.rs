//! The `medfl` command line apart from its entry point: the grammar (`args`), the dispatch of
//! each command to the library, and the helpers commands share.

mod args;
mod audit;
mod ledger;

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use medfl::detection::{self, Split};
use medfl::ledger::{ConsortiumFile, Genesis, Ledger};
use medfl::provision::{self, KeyGeneration, KeySource};
use medfl::report;
use medfl::simulate;
use medfl_accesslog::OnError;
use medfl_model::experiment::ExperimentConfig;
use medfl_simulations::Scenario;

pub(crate) use args::Cli;
use args::Command;

/// Writes `text` and a newline to stdout; unlike `println!`, a closed pipe is an error to
/// return, not a panic.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()?;
    Ok(())
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub(crate) fn run(cli: Cli) -> Result<ExitCode> {
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
        Command::Ledger(cmd) => return ledger::run(cmd),
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
            print!("{}", report::explained(&summaries));
            print!("{}", report::realism(&summaries));
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
            serve,
            view,
        } => {
            if let (Some(addr), Some(dir)) = (serve, &view) {
                if !dir.join("run.toml").is_file() {
                    bail!(
                        "{} holds no run (no run.toml): --view takes a directory `medfl simulate` wrote",
                        dir.display()
                    );
                }
                let bound = medfl::console::spawn(addr, medfl::console::RunDir::new(dir.clone()))?;
                let genesis = medfl::console::genesis_of(&dir.join("ledger"));
                eprintln!(
                    "console of {} at {} (Ctrl-C to stop)",
                    dir.display(),
                    medfl::console::link(bound, genesis)
                );
                loop {
                    std::thread::park();
                }
            }
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
            let console = match serve {
                Some(addr) => {
                    let bound =
                        medfl::console::spawn(addr, medfl::console::RunDir::new(out.clone()))?;
                    eprintln!("console of the run at http://{bound}/");
                    Some(bound)
                }
                None => None,
            };
            let started = std::time::Instant::now();
            simulate::simulate(&text, &run, &out)
                .with_context(|| format!("simulation into {}", out.display()))?;
            eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
            if let Some(bound) = console {
                let genesis = medfl::console::genesis_of(&out.join("ledger"));
                eprintln!(
                    "console still at {} (Ctrl-C to stop)",
                    medfl::console::link(bound, genesis)
                );
                loop {
                    std::thread::park();
                }
            }
        }
        Command::Coordinator {
            config,
            rounds,
            console,
            insecure,
        } => {
            medfl::daemon::init_logging();
            let opts = medfl::daemon::coordinator::Options {
                rounds,
                insecure_keys: insecure.policy(),
                console,
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
        Command::Audit(cmd) => audit::run(cmd)?,
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
            tables,
            label_column,
            split_column,
            skip_bad_rows,
            rounds,
            seed,
            inits,
            json,
        } => {
            if rounds == 0 {
                bail!("--rounds must be at least 1");
            }
            let mut config = ExperimentConfig {
                rounds,
                ..ExperimentConfig::default()
            };
            let started = std::time::Instant::now();
            let (hospitals, device) = if tables.is_empty() {
                let sc = load_scenario(scenario.as_deref(), seed)?;
                let data =
                    detection::consortium_data(&sc, Split::default(), |msg| eprintln!("{msg}"))?;
                (data, medfl_model::train::training_device())
            } else {
                let split = medfl::tables::TableSplit {
                    label_column: label_column.as_deref().unwrap_or_default(),
                    split_column: split_column.as_deref(),
                    seed: seed.unwrap_or(config.seed),
                    on_error: if skip_bad_rows {
                        OnError::Skip
                    } else {
                        OnError::Reject
                    },
                };
                let (hospitals, scale) = medfl::tables::consortium_tables(&tables, split)?;
                eprintln!(
                    "{} hospitals, {} columns, {} training rows in all",
                    hospitals.len(),
                    scale.mean.len(),
                    hospitals.iter().map(|h| h.train.len()).sum::<usize>()
                        / scale.mean.len().max(1)
                );
                config.seed = split.seed;
                config.train.min_steps = medfl::standalone::TABLE_MIN_STEPS;
                config.scale = Some(scale);
                (hospitals, medfl_model::train::training_device())
            };
            let first_seed = config.seed;
            if first_seed.checked_add(inits - 1).is_none() {
                bail!("--inits {inits} from model seed {first_seed} runs past 2^64 - 1");
            }
            let mut runs = Vec::new();
            for seed in (first_seed..).take(inits as usize) {
                if inits > 1 {
                    eprintln!("initial weights {} of {inits}", seed - first_seed + 1);
                }
                let config = ExperimentConfig {
                    seed,
                    ..config.clone()
                };
                runs.push(medfl_model::experiment::run(&hospitals, &config, &device)?);
            }
            eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
            let results = runs.first().context("no run")?;
            print!("{}", detection::render(results, config.target_fpr));
            for r in results {
                if let Some(hash) = &r.model_hash {
                    println!("{} model hash {hash}", r.setting);
                }
            }
            if inits > 1 {
                print!("\n{}", detection::render_spread(&runs, first_seed));
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(results)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn key_source(insecure_deterministic_seed: Option<u64>) -> KeySource {
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

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

pub(crate) fn load_genesis(path: &Path) -> Result<Genesis> {
    Genesis::from_toml(&read(path)?)
        .with_context(|| format!("{} is not a usable genesis", path.display()))
}

pub(crate) fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    Ok(())
}

/// Opens a private snapshot of the ledger in `dir`: inspection never writes, locks or repairs
/// the evidence, so it works on read-only media and beside the daemon that keeps the ledger.
pub(crate) fn open_snapshot(dir: &Path) -> Result<Ledger> {
    check_dir(dir)?;
    Ledger::open_snapshot(dir).with_context(|| format!("opening the ledger in {}", dir.display()))
}

pub(crate) fn load_scenario(path: Option<&Path>, seed: Option<u64>) -> Result<Scenario> {
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

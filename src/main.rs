//! The `medfl` command line.

/// mimalloc, not glibc's malloc: many threads allocating and freeing small buffers (the
/// monitor's requests and answers) contend on glibc's arena locks (see `Cargo.toml`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // A damaged ledger file is reported as an error, not with the storage engine's panic.
    medfl::ledger::store::quiet_storage_panics();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
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

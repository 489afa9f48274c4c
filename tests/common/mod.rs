//! Running the `medfl` binary from tests.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Output};

/// Runs `medfl` with `args`.
pub fn medfl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medfl"))
        .args(args)
        .output()
        .expect("run medfl")
}

/// Runs a command that must succeed; returns its stdout.
pub fn ok(args: &[&str]) -> String {
    let out = medfl(args);
    assert!(
        out.status.success(),
        "medfl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail cleanly; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = medfl(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "medfl {args:?} should fail");
    assert!(
        !stderr.contains("panicked"),
        "medfl {args:?} panicked: {stderr}"
    );
    assert!(
        !stderr.trim().is_empty(),
        "medfl {args:?} failed without saying why"
    );
    stderr
}

/// A path as a command-line argument.
pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A scenario of the default's first two hospitals over 14 days, written into `dir`: a
/// simulation of a few rounds in seconds, even unoptimised.
pub fn small_scenario(dir: &Path) -> String {
    let text = medfl_simulations::scenario::DEFAULT_TOML;
    let third = text.match_indices("[[hospital]]").nth(2).unwrap().0;
    let small = text[..third].replace("days = 21", "days = 14");
    let path = dir.join("small.toml");
    std::fs::write(&path, small).unwrap();
    path.display().to_string()
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Provisions the consortium `plan` (TOML) into `dir/cons` with keys from the public `seed`
/// (tests only); returns that folder.
pub fn provision(dir: &Path, plan: &str, seed: u64) -> std::path::PathBuf {
    std::fs::write(dir.join("plan.toml"), plan).unwrap();
    let cons = dir.join("cons");
    ok(&[
        "provision",
        "--consortium",
        p(&dir.join("plan.toml")),
        "--out",
        p(&cons),
        "--generate-keys-centrally",
        "--insecure-deterministic-seed",
        &seed.to_string(),
    ]);
    cons
}

//! Load on `medfl monitor`: concurrent keep-alive connections on loopback posting accesses,
//! every decision durably logged before its answer. Prints throughput and latency percentiles
//! per concurrency level. Run with `cargo run --release --example monitor_load`.
//!
//! Two kinds of load. Closed loop (the default): every connection sends its next request as
//! soon as the last is answered, which finds the most the monitor can decide, at a latency
//! set by Little's law (connections / throughput). Open loop (`--rate R`): the connections
//! together offer R requests a second on a fixed schedule, each connection every
//! connections/R seconds, as a hospital's many EHR sessions do; a request's latency counts
//! from when it was due, so a late answer also delays what was scheduled behind it (no
//! coordinated omission, as wrk2 measures). The last column is the generator's own delay in
//! waking for a request due on an idle connection: it shares the cores with the monitor, and
//! what it adds is in the latency too.
//!
//! The monitor runs in a process of its own, as deployed (this program again, with a worker
//! per core and its own open-file limit: 10,000 connections are 20,000 sockets on loopback);
//! the generator on a runtime of `--generator-threads` workers. Connections open a few
//! hundred at a time, each answering a first request, before the clock starts.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};
use medfl::daemon::{self, InsecureKeys};
use medfl_monitor::AccessRequest;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// The allocator `medfl` itself runs with (`src/main.rs`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "support/monitor_setup.rs"]
mod monitor_setup;
use monitor_setup::setup;

/// Load on the access monitor.
#[derive(clap::Parser)]
struct Args {
    /// Concurrent connections, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    connections: Vec<usize>,
    /// Seconds of load per level.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Requests a second offered by all connections together (open loop); closed loop if
    /// absent.
    #[arg(long)]
    rate: Option<f64>,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    generator_threads: usize,
    /// Internal: serve the monitor of this member config on `--serve-port` (the child).
    #[arg(long, hide = true)]
    serve: Option<std::path::PathBuf>,
    /// Internal: the child's port.
    #[arg(long, hide = true, default_value_t = 0)]
    serve_port: u16,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn main() -> Result<()> {
    let args = <Args as clap::Parser>::parse();
    if let Some(config) = &args.serve {
        return serve(config, args.serve_port);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.generator_threads.max(1))
        .enable_all()
        .build()?
        .block_on(load(args))
}

/// The child: the monitor of `config` on `port`, as `medfl monitor` runs it.
fn serve(config: &std::path::Path, port: u16) -> Result<()> {
    let opts = daemon::monitor::Options {
        listen: format!("127.0.0.1:{port}").parse()?,
        syslog: None,
        replay: false,
        header_timeout: Duration::from_secs(10),
        seal_every: Duration::from_secs(60),
        insecure_keys: InsecureKeys::Allow,
        tls: None,
        console_hosts: Vec::new(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(daemon::monitor::run(config, opts))
}

/// The monitor's process, killed with the generator.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn load(args: Args) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let monitor_setup::Setup { config, events, .. } = setup(dir.path(), 1)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _monitor = Child(
        std::process::Command::new(std::env::current_exe()?)
            .arg("--serve")
            .arg(&config)
            .args(["--serve-port", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?,
    );
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Bodies: the log's accesses (the last day's, so that every time is within the monitor's
    // window), shifted to end now, cycled.
    let last = events.last().map_or(0, |e| e.time_ms);
    let shift = now_ms().saturating_sub(last);
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        events
            .iter()
            .filter(|e| e.time_ms + 20 * 3_600_000 >= last)
            .map(|e| {
                let mut r = AccessRequest::from_event(e);
                r.time_ms += shift;
                serde_json::to_vec(&r)
            })
            .collect::<Result<_, _>>()?,
    );
    eprintln!("{} distinct requests", bodies.len());
    println!(
        "| connections | offered/s | decisions/s | p50 | p99 | p99.9 | errors | generator wake-up lag p99 | monitor's own: within 5 ms / 10 ms |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &args.connections {
        // Every connection is open (and answered a first request) before the clock starts:
        // 10,000 take a moment, and the load is on held connections, not on opening them.
        let (go, started) = tokio::sync::watch::channel(None::<Instant>);
        let ready = Arc::new(tokio::sync::Semaphore::new(0));
        // Opened a few hundred at a time, as sessions come and go: ten thousand SYNs at once
        // overflow the kernel's queues, and a dropped SYN waits seconds to be sent again.
        let opening = Arc::new(tokio::sync::Semaphore::new(256));
        let mut tasks = Vec::new();
        for c in 0..n {
            let bodies = Arc::clone(&bodies);
            let every = args
                .rate
                .map(|rate| Duration::from_secs_f64(n as f64 / rate));
            let plan = Plan {
                offset: c,
                // Spread over the interval, so the offered load is even.
                phase: c as f64 / n as f64,
                every,
                seconds: args.seconds,
            };
            tasks.push(tokio::spawn(client(
                port,
                bodies,
                plan,
                [Arc::clone(&opening), Arc::clone(&ready)],
                started.clone(),
            )));
        }
        let all = u32::try_from(n)?;
        let opened = tokio::time::timeout(Duration::from_secs(120), ready.acquire_many(all)).await;
        if !matches!(opened, Ok(Ok(_))) {
            let failed: Vec<_> = tasks.into_iter().filter(|t| t.is_finished()).collect();
            let count = failed.len();
            let first = match failed.into_iter().next() {
                Some(t) => format!("{:?}", t.await?.err()),
                None => "none failed".into(),
            };
            bail!(
                "{n} connections did not all open within two minutes ({} ready, {count} failed; first: {first})",
                ready.available_permits()
            );
        }
        let before = own_latency(port).await?;
        let start = Instant::now() + Duration::from_millis(200);
        go.send_replace(Some(start));
        let mut lat = Vec::new();
        let mut lag = Vec::new();
        let mut errors = 0u64;
        let mut first_error = None;
        for t in tasks {
            match t.await? {
                Ok((mut l, mut g)) => {
                    lat.append(&mut l);
                    lag.append(&mut g);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            eprintln!("{n} connections: first error: {e:#}");
        }
        let after = own_latency(port).await?;
        let own = |i: usize| {
            let (n, all) = (after[i] - before[i], after[2] - before[2]);
            if all == 0 {
                "-".to_owned()
            } else {
                format!("{:.2}%", 100.0 * n as f64 / all as f64)
            }
        };
        lat.sort_unstable();
        lag.sort_unstable();
        let pct_of = |v: &[Duration], q: f64| {
            v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1)))
                .map_or(f64::NAN, |d: &Duration| d.as_secs_f64() * 1000.0)
        };
        let pct = |q: f64| pct_of(&lat, q);
        let offered = args
            .rate
            .map_or_else(|| "as fast as answered".to_owned(), |r| format!("{r:.0}"));
        println!(
            "| {n} | {offered} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {errors} | {} | {} / {} |",
            lat.len() as f64 / start.elapsed().as_secs_f64().max(args.seconds),
            pct(0.5),
            pct(0.99),
            pct(0.999),
            if lag.is_empty() {
                "-".to_owned()
            } else {
                format!("{:.2} ms", pct_of(&lag, 0.99))
            },
            own(0),
            own(1),
        );
    }
    Ok(())
}

/// The monitor's own count of decisions answered within 5 ms, within 10 ms, and in all (its
/// `/metrics` histogram, from a request's receipt to its answer): the share of the latency
/// that is the monitor's, apart from the sockets' and the generator's.
async fn own_latency(port: u16) -> Result<[u64; 3]> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut text = String::new();
    BufReader::new(r).read_to_string(&mut text).await?;
    let bucket = |le: &str| -> Result<u64> {
        let name = format!("medfl_monitor_decision_seconds_bucket{{le=\"{le}\"}} ");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name.as_str()))
            .ok_or_else(|| anyhow::anyhow!("no {name}in /metrics"))?;
        Ok(line.trim().parse()?)
    };
    Ok([bucket("0.005")?, bucket("0.01")?, bucket("+Inf")?])
}

/// What one connection sends once the clock starts.
struct Plan {
    /// Where in the bodies it starts.
    offset: usize,
    /// Its first request's due time after the start, as a share of `every`.
    phase: f64,
    /// The interval between its requests (open loop); back to back if `None`.
    every: Option<Duration>,
    /// How long it sends.
    seconds: f64,
}

/// One keep-alive connection: opens (in its turn, of `opening`) and sends one request, counts
/// itself `ready`, waits for
/// the start, then posts for `plan.seconds`, back to back or on a schedule; returns each
/// request's latency (from its due time on a schedule) and the generator's wake-up lag.
async fn client(
    port: u16,
    bodies: Arc<Vec<Vec<u8>>>,
    plan: Plan,
    [opening, ready]: [Arc<tokio::sync::Semaphore>; 2],
    mut started: tokio::sync::watch::Receiver<Option<Instant>>,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let turn = opening.acquire_owned().await?;
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut i = plan.offset;
    // The server has accepted the connection once it answers on it.
    post(&mut w, &mut r, &bodies[i % bodies.len()]).await?;
    i += 1;
    drop(turn);
    ready.add_permits(1);
    // The others may take a while to open: a request every two seconds keeps this one from
    // the monitor's idle cut-off (its header timeout).
    let start = loop {
        if let Some(start) = *started.borrow_and_update() {
            break start;
        }
        tokio::select! {
            changed = started.changed() => changed?,
            () = tokio::time::sleep(Duration::from_secs(2)) => {
                post(&mut w, &mut r, &bodies[i % bodies.len()]).await?;
                i += 1;
            }
        }
    };
    let deadline = start + Duration::from_secs_f64(plan.seconds);
    let schedule = plan
        .every
        .map(|every| (start + every.mul_f64(plan.phase), every));
    let mut out = Vec::new();
    // On a schedule: how late this task woke for a request whose connection was idle (the
    // load generator's own delay, which the latency includes, not the monitor's).
    let mut lag = Vec::new();
    let mut due = schedule.map(|(first, _)| first);
    tokio::time::sleep_until(start.into()).await;
    loop {
        let t = match (due, schedule) {
            (Some(d), Some((_, every))) => {
                if d >= deadline {
                    break;
                }
                let idle = Instant::now() < d;
                tokio::time::sleep_until(d.into()).await;
                if idle {
                    lag.push(d.elapsed());
                }
                due = Some(d + every);
                d
            }
            _ => {
                if Instant::now() >= deadline {
                    break;
                }
                Instant::now()
            }
        };
        post(&mut w, &mut r, &bodies[i % bodies.len()]).await?;
        i += 1;
        out.push(t.elapsed());
    }
    Ok((out, lag))
}

/// Posts one access on a keep-alive connection and reads its answer, which must be 200.
async fn post(
    w: &mut tokio::net::tcp::OwnedWriteHalf,
    r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    body: &[u8],
) -> Result<()> {
    let head = format!(
        "POST /v1/access HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // One write: a head and a body in two segments would wait on Nagle and delayed ACKs.
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    w.write_all(&message).await?;
    let mut status = String::new();
    r.read_line(&mut status).await?;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).await?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse()?;
        }
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    if !status.contains(" 200 ") {
        bail!("{status}: {}", String::from_utf8_lossy(&buf));
    }
    Ok(())
}

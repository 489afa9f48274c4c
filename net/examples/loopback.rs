//! Times messages between two nodes on 127.0.0.1: connection setup, small-message round trips,
//! and one 4 MiB model-sized message (1 Mi `f32`). Run with
//! `cargo run --release -p medfl-net --example loopback` (debug builds measure serde, not I/O).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use medfl_net::{NetConfig, NetEvent, peer_id_of, spawn};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Receiver;

/// The benchmark's message type.
#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// A small message.
    Ping(u32),
    /// A flat parameter vector.
    Update(Vec<f32>),
}

/// Waits for the next event matching `pred`.
async fn next<M>(
    events: &mut Receiver<NetEvent<M>>,
    pred: impl Fn(&NetEvent<M>) -> bool,
) -> NetEvent<M> {
    loop {
        match events.recv().await {
            Some(event) if pred(&event) => return event,
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    const ROUNDS: u32 = 1000;
    let (ka, kb) = (
        SigningKey::from_bytes(&[1; 32]),
        SigningKey::from_bytes(&[2; 32]),
    );
    let (pa, pb) = (
        peer_id_of(&ka.verifying_key()),
        peer_id_of(&kb.verifying_key()),
    );
    let cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        request_timeout: Duration::from_secs(10),
        ..NetConfig::default()
    };
    let (a, mut ea) = spawn::<Msg>(&ka, cfg.clone(), BTreeSet::from([pb])).await?;
    let (b, mut eb) = spawn::<Msg>(&kb, cfg, BTreeSet::from([pa])).await?;
    let addr = a.listen_addrs().await?[0]
        .clone()
        .with_p2p(pa)
        .map_err(|_| "bad address")?;

    let t = Instant::now();
    b.dial(addr).await?;
    next(&mut ea, |e| matches!(e, NetEvent::Connected(_))).await;
    println!("connect (TCP + Noise + Yamux): {:?}", t.elapsed());

    let t = Instant::now();
    for i in 0..ROUNDS {
        b.send(pa, &Msg::Ping(i)).await?;
    }
    for _ in 0..ROUNDS {
        next(&mut ea, |e| matches!(e, NetEvent::Message { .. })).await;
    }
    println!(
        "{ROUNDS} small messages in order: {:?} ({:?} each)",
        t.elapsed(),
        t.elapsed() / ROUNDS
    );

    let update = Msg::Update(
        (0..=u16::MAX)
            .cycle()
            .take(1 << 20)
            .map(f32::from)
            .collect(),
    );
    for _ in 0..3 {
        let t = Instant::now();
        a.send(pb, &update).await?;
        next(&mut eb, |e| matches!(e, NetEvent::Message { .. })).await;
        println!("4 MiB message (encode + send + decode): {:?}", t.elapsed());
    }
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

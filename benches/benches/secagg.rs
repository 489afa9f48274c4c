//! SecAgg+ compute per round: one client's work, and the server's, for
//! N ∈ {10, 50}, d ∈ {10⁴, 10⁵}, with 0 % and 10 % of the clients dropping
//! after the share stage (before their masked input, the costliest case for
//! the server), at the crate's default degree and threshold.
//!
//! Both sides are sans-IO and deterministic given their RNG seeds, so one
//! round is driven once to record a transcript, and each benchmark replays
//! one side of it: the client benchmark rebuilds a surviving client from its
//! seed and feeds it the server messages it received; the server benchmark
//! feeds a fresh server every client message in the original order. Message
//! routing and the other side's work are therefore outside the timed region.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use medfl_secagg::sim::make_identities;
use medfl_secagg::{
    ClientId, ClientMessage, ClientSession, ClientStatus, Roster, SecAggConfig, ServerEvent,
    ServerMessage, ServerSession, Stage,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// What the server saw, in order: a client message, or the driver closing a stage.
#[derive(Clone)]
enum ToServer {
    Msg(ClientId, ClientMessage),
    Close(Stage),
}

/// One recorded round.
struct Transcript {
    config: SecAggConfig,
    roster: Roster,
    keys: BTreeMap<ClientId, SigningKey>,
    client_seeds: BTreeMap<ClientId, [u8; 32]>,
    inputs: BTreeMap<ClientId, Vec<u64>>,
    to_server: Vec<ToServer>,
    to_client: BTreeMap<ClientId, Vec<ServerMessage>>,
    survivor: ClientId,
}

fn record(n: u32, d: usize, dropout: f64) -> Transcript {
    let seed = [42u8; 32];
    let mut config = SecAggConfig::new(1, d);
    config.graph_seed = seed;
    let (roster, keys) = make_identities(n, seed);
    let mut rng = ChaCha20Rng::from_seed(seed);
    let mut client_seeds = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    let mut clients = BTreeMap::new();
    for (&id, sk) in &keys {
        let cs: [u8; 32] = {
            let mut s = [0u8; 32];
            rng.fill_bytes(&mut s);
            s
        };
        let x: Vec<u64> = (0..d).map(|_| rng.next_u64() & 0xFFFF_FFFF).collect();
        let mut c = ClientSession::new(
            config.clone(),
            id,
            sk.clone(),
            &roster,
            &mut ChaCha20Rng::from_seed(cs),
        )
        .expect("client");
        c.provide_input(x.clone()).expect("input");
        client_seeds.insert(id, cs);
        inputs.insert(id, x);
        clients.insert(id, c);
    }
    // Every 10th client drops: deterministic, and spread around the ring.
    let n_drop = (dropout * f64::from(n)).floor() as u32;
    let dropped: BTreeSet<ClientId> = (0..n_drop).map(|i| ClientId(i * 10 + 3)).collect();
    let mut server = ServerSession::new(config.clone(), &roster).expect("server");
    let mut to_server = Vec::new();
    let mut to_client: BTreeMap<ClientId, Vec<ServerMessage>> = BTreeMap::new();
    let mut dead = BTreeSet::new();
    let mut done = false;
    while !done {
        let mut moved = false;
        for (&id, c) in clients.iter_mut() {
            while !dead.contains(&id) {
                let Some(msg) = c.poll_outgoing() else { break };
                if dropped.contains(&id) && msg.stage() >= Stage::MaskedInput {
                    dead.insert(id);
                    break;
                }
                moved = true;
                to_server.push(ToServer::Msg(id, msg.clone()));
                server.handle_message(id, msg).expect("honest message");
            }
        }
        while let Some((to, msg)) = server.poll_outgoing() {
            moved = true;
            if dead.contains(&to) {
                continue;
            }
            to_client.entry(to).or_default().push(msg.clone());
            if let Some(c) = clients.get_mut(&to) {
                let _ = c.handle_message(msg);
            }
        }
        while let Some(ev) = server.poll_event() {
            match ev {
                ServerEvent::Aggregated(_) => done = true,
                ServerEvent::Aborted(e) => panic!("round aborted: {e}"),
                ServerEvent::StageClosed { .. } | ServerEvent::Misbehaved { .. } => {}
            }
        }
        if !moved && !done {
            let stage = server.stage().expect("open stage");
            to_server.push(ToServer::Close(stage));
            server.close_stage(stage);
        }
    }
    let survivor = *clients
        .keys()
        .find(|id| !dropped.contains(id))
        .expect("a survivor");
    Transcript {
        config,
        roster,
        keys,
        client_seeds,
        inputs,
        to_server,
        to_client,
        survivor,
    }
}

fn bench_secagg(c: &mut Criterion) {
    let mut client = c.benchmark_group("secagg_client_round");
    client
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let mut transcripts = Vec::new();
    for n in [10u32, 50] {
        for d in [10_000usize, 100_000] {
            for dropout in [0.0, 0.1] {
                transcripts.push((
                    format!("N{n}/d{d}/drop{}", dropout * 100.0),
                    record(n, d, dropout),
                ));
            }
        }
    }
    for (name, t) in &transcripts {
        let id = t.survivor;
        client.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || {
                    (
                        t.keys[&id].clone(),
                        t.inputs[&id].clone(),
                        t.to_client[&id].clone(),
                    )
                },
                |(sk, input, msgs)| {
                    let mut rng = ChaCha20Rng::from_seed(t.client_seeds[&id]);
                    let mut c = ClientSession::new(t.config.clone(), id, sk, &t.roster, &mut rng)
                        .expect("client");
                    c.provide_input(input).expect("input");
                    while c.poll_outgoing().is_some() {}
                    for m in msgs {
                        c.handle_message(m).expect("recorded message");
                        while c.poll_outgoing().is_some() {}
                    }
                    assert_eq!(c.status(), ClientStatus::Finished);
                },
                BatchSize::LargeInput,
            )
        });
    }
    client.finish();

    let mut server = c.benchmark_group("secagg_server_round");
    server
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, t) in &transcripts {
        server.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || t.to_server.clone(),
                |events| {
                    let mut s = ServerSession::new(t.config.clone(), &t.roster).expect("server");
                    for e in events {
                        match e {
                            ToServer::Msg(from, m) => s.handle_message(from, m).expect("recorded"),
                            ToServer::Close(stage) => s.close_stage(stage),
                        }
                        while s.poll_outgoing().is_some() {}
                    }
                    let mut ok = false;
                    while let Some(ev) = s.poll_event() {
                        ok |= matches!(ev, ServerEvent::Aggregated(_));
                    }
                    assert!(ok, "replayed round did not aggregate");
                },
                BatchSize::LargeInput,
            )
        });
    }
    server.finish();
}

criterion_group!(benches, bench_secagg);
criterion_main!(benches);

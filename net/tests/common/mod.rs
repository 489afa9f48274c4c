//! Shared helpers for the integration tests: nodes on 127.0.0.1 port 0, event waiting.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeSet;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use medfl_net::{Multiaddr, NetConfig, NetEvent, NetHandle, PeerId, peer_id_of, spawn};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::Receiver;

/// How long a test waits for one expected event.
pub const WAIT: Duration = Duration::from_secs(5);

/// The protocol message of the tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Msg {
    Seq(u32),
    Blob(Vec<f32>),
}

/// The ledger key of test member `seed`.
pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// The peer id of test member `seed`.
pub fn peer(seed: u8) -> PeerId {
    peer_id_of(&key(seed).verifying_key())
}

/// A test configuration listening on loopback.
pub fn config() -> NetConfig {
    NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        request_timeout: Duration::from_secs(5),
        ..NetConfig::default()
    }
}

/// A running test node.
pub struct Node<M> {
    pub handle: NetHandle<M>,
    pub events: Receiver<NetEvent<M>>,
    pub id: PeerId,
    /// A listen address with the `/p2p/<id>` suffix.
    pub addr: Multiaddr,
}

/// Starts member `seed` allowing members `allowed`, with `cfg`.
pub async fn node_with<M>(seed: u8, allowed: &[u8], cfg: NetConfig) -> Node<M>
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let allowed: BTreeSet<PeerId> = allowed.iter().map(|s| peer(*s)).collect();
    let (handle, events) = spawn::<M>(&key(seed), cfg, allowed).await.unwrap();
    let id = handle.local_peer_id();
    assert_eq!(id, peer(seed));
    let addr = handle.listen_addrs().await.unwrap()[0]
        .clone()
        .with_p2p(id)
        .unwrap();
    Node {
        handle,
        events,
        id,
        addr,
    }
}

/// Starts member `seed` allowing `allowed`, with the default test configuration.
pub async fn node(seed: u8, allowed: &[u8]) -> Node<Msg> {
    node_with(seed, allowed, config()).await
}

/// Waits for the first event matching `pred`, skipping others; panics after [`WAIT`].
pub async fn wait_for<M: std::fmt::Debug>(
    events: &mut Receiver<NetEvent<M>>,
    what: &str,
    mut pred: impl FnMut(&NetEvent<M>) -> bool,
) -> NetEvent<M> {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let event = events.recv().await.expect("event stream ended");
            if pred(&event) {
                return event;
            }
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Waits for the next message from anyone.
pub async fn next_message<M: std::fmt::Debug>(events: &mut Receiver<NetEvent<M>>) -> (PeerId, M) {
    match wait_for(events, "a message", |e| {
        matches!(e, NetEvent::Message { .. })
    })
    .await
    {
        NetEvent::Message { from, msg } => (from, msg),
        _ => unreachable!(),
    }
}

/// Collects every event that arrives within `window`.
pub async fn drain<M>(events: &mut Receiver<NetEvent<M>>, window: Duration) -> Vec<NetEvent<M>> {
    let mut seen = Vec::new();
    let _ = tokio::time::timeout(window, async {
        while let Some(event) = events.recv().await {
            seen.push(event);
        }
    })
    .await;
    seen
}

/// `from` dials `to`; returns once both sides reported [`NetEvent::Connected`].
pub async fn connect<M: std::fmt::Debug, N: std::fmt::Debug>(from: &mut Node<M>, to: &mut Node<N>) {
    assert_eq!(from.handle.dial(to.addr.clone()).await.unwrap(), to.id);
    let (from_id, to_id) = (from.id, to.id);
    wait_for(
        &mut from.events,
        "dialer Connected",
        |e| matches!(e, NetEvent::Connected(p) if *p == to_id),
    )
    .await;
    wait_for(
        &mut to.events,
        "listener Connected",
        |e| matches!(e, NetEvent::Connected(p) if *p == from_id),
    )
    .await;
}

//! The transport edge of medfl: moves protocol messages between members over libp2p, and
//! nothing else.
//!
//! Protocol logic (rounds, secure aggregation, ledger validation) lives in sans-IO state
//! machines that take `(PeerId, M)` in and give `(PeerId, M)` out. This crate is the thin
//! driver's other half: a message bus generic over the message type `M`.
//!
//! ```text
//!  application task                      node task (one per process)
//!  NetHandle<M>::send(peer, &M) --cmd--> per-peer queue -> request_response -> TCP+Noise+Yamux
//!  mpsc::Receiver<NetEvent<M>>  <--ev--- inbox (acks held until delivered) <- codec (decode)
//! ```
//!
//! # Design
//! - **Transport:** TCP, Noise (authenticates the remote's [`PeerId`]), Yamux multiplexing,
//!   driven by tokio. One protocol, `/medfl/msg/1`, using libp2p `request_response` with a
//!   length-prefixed codec: the request is one encoded `M`, the response a one-byte ack
//!   (delivered / refused). Either side may send once connected.
//! - **Identity:** the libp2p key is the member's ledger ed25519 key
//!   ([`keypair_from_signing_key`]), so the allowlist is the ledger's member list mapped through
//!   [`peer_id_of`].
//! - **Access control:** libp2p's `allow_block_list` denies, right after the Noise handshake,
//!   every peer that is neither on the allowlist nor owed a refusal notice; an inbound attempt
//!   is reported as [`NetEvent::Refused`]. A peer owed a notice ([`NetHandle::set_notices`]: the
//!   application's bounded set, e.g. revoked members) completes its connection, is sent its
//!   notice (why it is refused) and is closed once it is acknowledged or fails; nothing else
//!   passes either way. [`NetHandle::set_allowed`] replaces the list and closes the connections
//!   of removed peers at once.
//! - **Order:** a peer's messages are sent one at a time; the next leaves only after the
//!   receiver acknowledged the previous one, and the receiver acknowledges only once the message
//!   is in the application's event channel. So per-sender order is preserved end to end, and a
//!   slow application pushes back on its senders. The cost is one round trip per message per
//!   peer (messages to different peers proceed in parallel).
//! - **Abuse:** the codec checks the length prefix against [`NetConfig::max_message_bytes`]
//!   before reading the body; an oversized or undecodable message gets its sender disconnected
//!   and reported as [`NetEvent::Misbehaved`]. Other peers are unaffected. Streams per
//!   connection, connections per peer, request time and idle time are bounded.
//! - **Memory per peer:** a peer that stops acknowledging cannot grow our outbound queue past
//!   [`NetConfig::max_queued_per_peer`] (its backlog is dropped, it is disconnected, and that is
//!   reported once); a peer cannot park more than [`NetConfig::max_inbound_per_peer`] messages
//!   in our inbox (further ones are refused). Pending and established connections are capped in
//!   total (`libp2p::connection_limits`).
//!
//! **Architecture Invariant:** no protocol knowledge here. This crate never inspects `M`; it
//! knows peers, bytes and acknowledgements.
//!
//! **API Boundary:** [`spawn`], [`NetHandle`], [`NetEvent`], [`codec`] and the identity
//! helpers. Nothing from the network can panic the node: every decoding failure is a value.
//!
//! # Layout
//! - [`codec`]: the single bincode configuration (`encode` / `decode`), reusable by other crates.
//! - `wire`: the libp2p request-response codec (framing, size checks, acks).
//! - `identity`: ledger key to libp2p key and peer id.
//! - `node`: configuration, the event type, the handle and the swarm task.
//! - `error`: [`NetError`].

#![warn(missing_docs, unreachable_pub, clippy::pedantic)]

pub mod codec;
mod error;
mod identity;
mod node;
mod wire;

pub use error::NetError;
pub use identity::{keypair_from_signing_key, peer_id_of};
pub use libp2p::{Multiaddr, PeerId};
pub use node::{NetConfig, NetEvent, NetHandle, spawn};

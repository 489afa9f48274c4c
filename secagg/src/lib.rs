//! SecAgg+ secure aggregation as sans-IO client and server state machines.
//!
//! A server learns `Σ x_i mod 2^b` over the clients that stayed until the
//! masked-input stage, and nothing else about any individual `x_i`, even if
//! clients drop out at any point, provided each survivor keeps at least `t`
//! live neighbours. This is the protocol of Bonawitz et al. (CCS 2017) with
//! the sparse neighbour graph of Bell et al. (CCS 2020): each client shares
//! masks and secrets only with `k = O(log N)` neighbours, so per-client cost
//! is `O(log N + d)` instead of `O(N + d)`. With `k = N - 1` it is classic SecAgg.
//!
//! # Protocol
//!
//! 1. **Advertise keys.** Client `i` draws X25519 key pairs `(c_i, C_i)` (mask
//!    agreement) and `(s_i, S_i)` (share encryption) and sends `C_i, S_i`
//!    signed with its ed25519 identity key over the round's session tag.
//! 2. **Share keys.** `i` draws a self-mask seed `b_i`, Shamir-shares `b_i` and
//!    `c_i` with threshold `t` among its neighbours, and sends each share
//!    pair ChaCha20-Poly1305-encrypted under `HKDF(X25519(s_i, S_j))`.
//! 3. **Masked input.** `i` sends `y_i = x_i + PRG(b_i) ± Σ_j PRG(s_ij)`, the
//!    pairwise seeds `s_ij = HKDF(X25519(c_i, C_j))` added by the lower id and
//!    subtracted by the higher; `PRG` is AES-256-CTR keyed by the seed.
//! 4. **Consistency check.** The server announces the survivor set; each
//!    client signs it, and checks everyone else's signatures on the same set
//!    before revealing anything, so an equivocating server is caught.
//! 5. **Unmask.** For each neighbour, a client reveals the share of `b_j` if
//!    `j` survived or of `c_j` if it dropped, never both. The server rebuilds
//!    the seeds, strips the masks and outputs the exact sum.
//!
//! # Security
//!
//! Against an honest-but-curious server, and against a malicious server that colludes with no
//! client, each input stays hidden: to unmask `x_v` alone the server needs `t` shares of `b_v`
//! *and* `t` shares of `c_v`, both held only by `v`'s `k` neighbours, and an honest neighbour
//! reveals at most one of the two; the configuration requires `t > k/2`, so `2t > k`.
//!
//! With colluding clients, a malicious server would try to show some of `v`'s neighbours that
//! `v` survived and others that it dropped. The consistency check stops that: a client reveals
//! nothing until its survivor set is signed by more than `(n + c) / 2` of the roster's `n`
//! clients, with `c = t - 1` colluders tolerated ([`RoundPlan::consistency_quorum`]); two
//! different sets cannot both reach that quorum, because each honest client signs one set. (An
//! earlier version accepted any `t` signatures, which a server splitting clients into two camps
//! could collect in each camp.)
//!
//! # Sans-IO
//!
//! Nothing here does I/O, reads a clock or the OS RNG: messages go in through
//! `handle_message` and come out of `poll_outgoing`; randomness comes from the
//! RNG passed to [`ClientSession::new`]; the driver decides when a stage's
//! deadline has passed and calls [`ServerSession::close_stage`]. Runs are
//! therefore reproducible given the RNG seeds, which [`sim`] exploits.
//!
//! # Layout
//!
//! - [`config`]: round parameters, client ids, the derived [`RoundPlan`].
//! - [`graph`]: the Harary neighbour graph and why it was chosen.
//! - [`shamir`]: Shamir sharing of 32-byte secrets over the curve25519 scalar field.
//! - [`prg`]: mask expansion into `Z_{2^b}` with AES-256 in counter mode.
//! - [`crypto`]: how X25519, HKDF, ChaCha20-Poly1305 and ed25519 are bound to the round.
//! - [`quantize`]: `f32` to `Z_{2^b}` with stochastic rounding; weighted sums without overflow.
//! - [`message`]: wire types and their structural validation.
//! - [`packed`]: the `b`-bits-per-coordinate wire encoding of masked inputs.
//! - [`client`]: the client state machine.
//! - [`server`]: the server state machine and unmasking.
//! - [`error`]: the single typed error.
//! - [`sim`]: a deterministic in-memory driver with scripted dropouts.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod crypto;
pub mod error;
pub mod graph;
pub mod message;
pub mod packed;
pub mod prg;
pub mod quantize;
pub mod server;
pub mod shamir;
pub mod sim;

pub use client::{ClientSession, ClientStatus};
pub use config::{ClientId, Roster, RoundPlan, SecAggConfig, default_degree};
pub use error::SecAggError;
pub use message::{ClientMessage, ServerMessage, ShareKind, Stage};
pub use packed::PackedVector;
pub use quantize::{Quantizer, WeightedQuantizer};
pub use server::{Aggregate, ServerEvent, ServerSession};

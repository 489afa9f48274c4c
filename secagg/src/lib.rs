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
//!    agreement) and `(s_i, S_i)` (share encryption), a self-mask seed `b_i` and a
//!    nonce `r_i`, and sends `C_i, S_i, H(r_i), H(b_i)` signed with its ed25519
//!    identity key over the round's session tag.
//! 2. **Reveal nonces.** The server sends every advertiser the *key transcript*:
//!    `(id, H(signed advertisement), H(r_id))` for every advertisement it accepted.
//!    Each client checks its own advertisement is in it, verbatim, and only then
//!    reveals `r_i`. The server forwards all nonces; each client checks every one
//!    against its commitment, requires one from every member of the transcript, and
//!    derives the graph seed `H(session, transcript, all nonces)`, from which client
//!    and server build the same neighbour graph. The server forwards each client its
//!    neighbours' advertisements, which must match their transcript digests.
//! 3. **Share keys.** `i` Shamir-shares `b_i` and `c_i` with threshold `t` among its
//!    neighbours, sends each share pair ChaCha20-Poly1305-encrypted under
//!    `HKDF(X25519(s_i, S_j))`, and signs the list of per-holder share hashes. A
//!    holder checks what it decrypts against that list.
//! 4. **Masked input.** `i` sends `y_i = x_i + PRG(b_i) ± Σ_j PRG(s_ij)`, the
//!    pairwise seeds `s_ij = HKDF(X25519(c_i, C_j))` added by the lower id and
//!    subtracted by the higher; `PRG` is AES-256-CTR keyed by the seed.
//! 5. **Consistency check.** The server announces the survivor set; each
//!    client signs it together with the key transcript hash, and checks a quorum
//!    of everyone else's signatures on the same pair before revealing anything.
//! 6. **Unmask.** For each neighbour, a client reveals the share of `b_j` if
//!    `j` survived or of `c_j` if it dropped, never both. The server checks each
//!    share against its dealer's signed hash, rebuilds the seeds, checks them
//!    against `H(b_j)` and `C_j`, strips the masks and outputs the exact sum.
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
//! could collect in each camp.) The rest of this section is the argument for each defence
//! against a server that deviates arbitrarily, colluding with a minority of members.
//!
//! **Signatures from another attempt (replay).** "Each honest client signs one set" holds per
//! attempt only. A server rerunning one session (same config, roster) could collect signatures
//! on "`v` dropped" in attempt 1 and use them in attempt 2, where `v`'s masked input arrived, to
//! get `v`'s mask-key shares from some neighbours while others reveal `v`'s self-mask shares.
//! The consistency signature therefore covers the key transcript hash, which commits to every
//! advertisement of the attempt, and each client checks its own fresh advertisement is in the
//! transcript it is shown (before revealing its nonce) and that every neighbour's advertisement
//! matches its digest. Advertisements of different attempts carry fresh keys, so a signature
//! from another attempt is over another transcript and never verifies. The caller also binds
//! the attempt into [`SecAggConfig::context`], hence into the session tag.
//!
//! **A steerable graph (seed grinding).** Bell et al.'s argument needs the neighbour graph to be
//! chosen independently of the corruptions; a server choosing the graph seed could try seeds
//! until its colluders fill a victim's neighbourhood (`t` colluding neighbours hold both of the
//! victim's secrets). The seed is `H(session, key transcript, every nonce)`, where every nonce
//! was committed to in a signed advertisement fixed by the transcript *before* any client
//! revealed its own. Each client checks its own commitment is in the transcript, every revealed
//! nonce against its commitment, and that no member's nonce is missing, and derives the graph
//! itself; keys of non-neighbours are refused. Once the transcript is fixed the server knows
//! only the colluders' nonces, so each honest nonce makes the seed uniform to it; it cannot
//! drop a nonce it dislikes (the attempt aborts); and changing the transcript (one grinding try
//! per attempt) means a new attempt, where every honest client draws fresh keys and nonces.
//!
//! **Wrong shares.** Each client commits to `b_i` in its advertisement and, per holder, to the
//! two shares it deals (a signed list, forwarded to the holders). A holder that decrypts a share
//! differing from its commitment aborts naming the dealer ([`SecAggError::BadDealing`]). The
//! server checks each revealed share against the same commitment, so a mismatch is the
//! holder's doing: it is refused and named ([`SecAggError::BadShare`],
//! [`ServerEvent::Misbehaved`]), its shares are dropped, and the round completes from the
//! others when `t` remain (with only `t`, it aborts instead of publishing a wrong sum). Shares
//! that all match their commitments but do not open to `H(b_i)` (or to `C_i`) mean the dealer
//! dealt shares of something else: the round aborts naming it
//! ([`SecAggError::InconsistentShares`]).
//!
//! **Too few survivors.** The distributed DP noise is calibrated for
//! [`SecAggConfig::min_survivors`] contributions; a server that drops honest inputs to leave a
//! victim among few would cut the noise protecting it. No client signs a survivor set smaller
//! than that (nor, without a signature quorum, reveals any share).
//!
//! //! # Sans-IO
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
pub mod shared;
pub mod sim;

pub use client::{ClientSession, ClientStatus};
pub use config::{ClientId, Roster, RoundPlan, SecAggConfig, default_degree};
pub use error::SecAggError;
pub use message::{ClientMessage, ServerMessage, ShareKind, Stage};
pub use packed::PackedVector;
pub use quantize::{Quantizer, WeightedQuantizer};
pub use server::{Aggregate, ServerEvent, ServerSession};
pub use shared::SharedSessions;

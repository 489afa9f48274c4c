//! The server state machine.
//!
//! The server routes messages, tracks who is still alive after each stage,
//! and finally removes the masks. It owns no clock: the driver calls
//! [`ServerSession::close_stage`] at its deadline, and everyone who has not
//! answered by then is a dropout. A stage also closes by itself as soon as
//! every expected client has answered, so a fast round never waits for a timer.
//!
//! # Unmasking
//!
//! Let `S` be the clients whose masked inputs arrived, `U2 ⊇ S` those that
//! completed the share stage, and `P(i) = N(i) ∩ U2` the mask partners of `i`.
//! Each `i ∈ S` sent
//!
//! ```text
//!     y_i = x_i + PRG(b_i) + Σ_{j ∈ P(i), i < j} PRG(s_ij) - Σ_{j ∈ P(i), j < i} PRG(s_ij)   (mod 2^b).
//! ```
//!
//! In `Σ_{i∈S} y_i` every pairwise mask between two members of `S` appears
//! once with each sign and cancels. What remains is `Σ_{i∈S} PRG(b_i)`,
//! removed with the self-mask seeds rebuilt from neighbours' shares, and, for
//! each dropped `d ∈ U2 \ S`, the masks `± PRG(s_id)` its surviving partners
//! added; the server rebuilds `c_d` from shares, recomputes `s_id` from
//! `c_d` and the advertised `C_i`, and subtracts them. The result is exactly
//! `Σ_{i∈S} x_i mod 2^b`. Every secret is rebuilt before any mask is removed,
//! so a missing share aborts the round without a partial result.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use x25519_dalek::{PublicKey, StaticSecret};

use crate::config::{ClientId, Roster, RoundPlan, SecAggConfig};
use crate::crypto;
use crate::error::SecAggError;
use crate::graph::NeighbourGraph;
use crate::message::{
    AdvertiseKeys, ClientMessage, EncryptedShare, RevealedShare, ServerMessage, ShareCommitments,
    ShareKind, Stage, TranscriptEntry,
};
use crate::prg::{self, MaskDomain, Seed, Sign};
use crate::shamir::{self, SecretShare};

/// Something the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A stage closed with this many participants.
    StageClosed {
        /// The stage that closed.
        stage: Stage,
        /// Clients that answered in it.
        participants: usize,
    },
    /// A client provably cheated (a wrong share revealed, a dealing that does not open to its
    /// commitment); the driver should drop it. The round goes on without it when it can.
    Misbehaved {
        /// The culprit.
        client: ClientId,
        /// What it did.
        error: SecAggError,
    },
    /// The round finished: the sum of the survivors' inputs.
    Aggregated(Aggregate),
    /// The round failed; no result exists.
    Aborted(SecAggError),
}

/// The output of a successful round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// `Σ_{i ∈ survivors} x_i mod 2^b`, coordinate-wise.
    pub sum: Vec<u64>,
    /// Clients whose inputs are in the sum, ascending.
    pub survivors: Vec<ClientId>,
}

/// State carried from the masked-input stage to the end.
struct MaskState {
    mask_keys: BTreeMap<ClientId, PublicKey>,
    /// Each client's commitment to its self-mask seed, from its signed advertisement.
    seed_commitments: BTreeMap<ClientId, [u8; 32]>,
    /// `(dealer, holder) -> (self-mask share, mask-key share)` commitments the dealer signed.
    share_commitments: BTreeMap<(ClientId, ClientId), ([u8; 32], [u8; 32])>,
    u2: BTreeSet<ClientId>,
    survivors: Vec<ClientId>,
    /// [`crypto::survivor_set_digest`] of `survivors`, what each consistency signature covers.
    survivor_set: [u8; 32],
    sum: Vec<u64>,
}

enum ServerPhase {
    AdvertiseKeys {
        adverts: BTreeMap<ClientId, AdvertiseKeys>,
    },
    RevealNonces {
        adverts: BTreeMap<ClientId, AdvertiseKeys>,
        nonces: BTreeMap<ClientId, [u8; 32]>,
    },
    ShareKeys {
        adverts: BTreeMap<ClientId, AdvertiseKeys>,
        shares: BTreeMap<ClientId, (Vec<EncryptedShare>, Arc<ShareCommitments>)>,
    },
    MaskedInput {
        state: MaskState,
        received: BTreeSet<ClientId>,
    },
    ConsistencyCheck {
        state: MaskState,
        signatures: BTreeMap<ClientId, Vec<u8>>,
    },
    Unmask {
        state: MaskState,
        requests: BTreeMap<ClientId, BTreeMap<ClientId, ShareKind>>,
        responded: BTreeSet<ClientId>,
        revealed: BTreeMap<(ClientId, ShareKind), Vec<SecretShare>>,
        /// Holders caught revealing a wrong share: nothing more is taken from them.
        banned: BTreeSet<ClientId>,
    },
    Finished,
    Aborted(SecAggError),
}

/// What the server forwards to one client: ciphertexts addressed to it, and their dealers'
/// signed commitments.
type Forwarded = (Vec<EncryptedShare>, Vec<Arc<ShareCommitments>>);

/// The server's side of a SecAgg+ round.
pub struct ServerSession {
    plan: RoundPlan,
    /// Hash of the key transcript sent to the clients (zero until sent).
    key_transcript: [u8; 32],
    graph: Option<NeighbourGraph>,
    phase: ServerPhase,
    /// Clients the driver knows are gone (connection closed, revoked): never waited for.
    gone: BTreeSet<ClientId>,
    outgoing: VecDeque<(ClientId, ServerMessage)>,
    events: VecDeque<ServerEvent>,
}

impl fmt::Debug for ServerSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerSession")
            .field("plan", &self.plan)
            .field("stage", &self.stage())
            .finish_non_exhaustive()
    }
}

impl ServerSession {
    /// Starts a round in the advertise stage.
    pub fn new(config: SecAggConfig, roster: &Roster) -> Result<Self, SecAggError> {
        Ok(Self {
            plan: RoundPlan::new(&config, roster)?,
            key_transcript: [0u8; 32],
            graph: None,
            phase: ServerPhase::AdvertiseKeys {
                adverts: BTreeMap::new(),
            },
            gone: BTreeSet::new(),
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
        })
    }

    /// The plan (degree, threshold, session tag) this server derived.
    pub fn plan(&self) -> &RoundPlan {
        &self.plan
    }

    /// The neighbour graph, once every nonce is revealed (`None` before).
    pub fn graph(&self) -> Option<&NeighbourGraph> {
        self.graph.as_ref()
    }

    /// The open stage, or `None` once the round finished or aborted.
    pub fn stage(&self) -> Option<Stage> {
        match &self.phase {
            ServerPhase::AdvertiseKeys { .. } => Some(Stage::AdvertiseKeys),
            ServerPhase::RevealNonces { .. } => Some(Stage::RevealNonces),
            ServerPhase::ShareKeys { .. } => Some(Stage::ShareKeys),
            ServerPhase::MaskedInput { .. } => Some(Stage::MaskedInput),
            ServerPhase::ConsistencyCheck { .. } => Some(Stage::ConsistencyCheck),
            ServerPhase::Unmask { .. } => Some(Stage::Unmask),
            ServerPhase::Finished | ServerPhase::Aborted(_) => None,
        }
    }

    /// Next `(recipient, message)` to deliver.
    pub fn poll_outgoing(&mut self) -> Option<(ClientId, ServerMessage)> {
        self.outgoing.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    /// Processes one message from `from` (the transport-authenticated sender).
    ///
    /// An invalid message is rejected with a typed error and leaves the round
    /// untouched: one misbehaving client cannot abort it for everyone else.
    pub fn handle_message(
        &mut self,
        from: ClientId,
        msg: ClientMessage,
    ) -> Result<(), SecAggError> {
        match &self.phase {
            ServerPhase::Finished => return Err(SecAggError::Finished),
            ServerPhase::Aborted(e) => return Err(SecAggError::Aborted(Box::new(e.clone()))),
            _ => {}
        }
        self.plan.check_member(from)?;
        if self.gone.contains(&from) {
            return Err(SecAggError::Excluded(from));
        }
        msg.validate(&self.plan)?;
        let plan = &self.plan;
        let graph = self.graph.as_ref();
        let key_transcript = &self.key_transcript;
        let complete = match (&mut self.phase, msg) {
            (ServerPhase::AdvertiseKeys { adverts }, ClientMessage::AdvertiseKeys(adv)) => {
                if adv.sender != from {
                    return Err(SecAggError::SenderMismatch {
                        claimed: adv.sender,
                        actual: from,
                    });
                }
                if adverts.contains_key(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                let mask = crypto::parse_public_key(&adv.mask_key, "mask_key")?;
                let share = crypto::parse_public_key(&adv.share_key, "share_key")?;
                let vk = plan
                    .roster
                    .get(&from)
                    .ok_or(SecAggError::UnknownClient(from))?;
                let transcript = crypto::advertise_transcript(
                    &plan.session,
                    from,
                    mask.as_bytes(),
                    share.as_bytes(),
                    &crypto::array32(&adv.nonce_commitment, "nonce_commitment")?,
                    &crypto::array32(&adv.self_mask_commitment, "self_mask_commitment")?,
                );
                crypto::verify(vk, from, &transcript, &adv.signature)?;
                crypto::check_public_key(&mask, from)?;
                crypto::check_public_key(&share, from)?;
                adverts.insert(from, adv);
                adverts.len() == plan.roster.len()
            }
            (
                ServerPhase::RevealNonces { adverts, nonces },
                ClientMessage::RevealNonce { nonce, .. },
            ) => {
                let Some(adv) = adverts.get(&from) else {
                    return Err(SecAggError::Excluded(from));
                };
                if nonces.contains_key(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                let nonce = crypto::array32(&nonce, "nonce")?;
                if crypto::nonce_commitment(&plan.session, from, &nonce)[..]
                    != adv.nonce_commitment[..]
                {
                    return Err(SecAggError::BadNonce(from));
                }
                nonces.insert(from, nonce);
                nonces.len() == adverts.len()
            }
            (
                ServerPhase::ShareKeys { adverts, shares },
                ClientMessage::ShareKeys {
                    shares: s,
                    commitments,
                    ..
                },
            ) => {
                if !adverts.contains_key(&from) {
                    return Err(SecAggError::Excluded(from));
                }
                if shares.contains_key(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                let graph = graph.ok_or(SecAggError::Internal("share stage without a graph"))?;
                let expected: BTreeSet<ClientId> = graph
                    .neighbours(from)
                    .iter()
                    .copied()
                    .filter(|j| adverts.contains_key(j))
                    .collect();
                let mut seen = BTreeSet::new();
                for e in &s {
                    if !expected.contains(&e.peer) {
                        return Err(SecAggError::NotANeighbour {
                            of: from,
                            peer: e.peer,
                        });
                    }
                    if !seen.insert(e.peer) {
                        return Err(SecAggError::Duplicate(e.peer));
                    }
                }
                if seen.len() != expected.len() {
                    return Err(SecAggError::Malformed {
                        field: "shares",
                        expected: expected.len(),
                        got: seen.len(),
                    });
                }
                // One commitment per share dealt, signed: holders check what they decrypt
                // against it, and unmasking checks what holders reveal.
                if commitments.dealer != from {
                    return Err(SecAggError::SenderMismatch {
                        claimed: commitments.dealer,
                        actual: from,
                    });
                }
                if !commitments
                    .entries
                    .iter()
                    .map(|e| e.holder)
                    .eq(seen.iter().copied())
                {
                    return Err(SecAggError::MissingCommitment(from));
                }
                let vk = plan
                    .roster
                    .get(&from)
                    .ok_or(SecAggError::UnknownClient(from))?;
                let signed = crypto::share_commitments_transcript(
                    &plan.session,
                    key_transcript,
                    from,
                    &commitments.entries,
                );
                crypto::verify(vk, from, &signed, &commitments.signature)?;
                shares.insert(from, (s, Arc::new(commitments)));
                shares.len() == adverts.len()
            }
            (
                ServerPhase::MaskedInput { state, received },
                ClientMessage::MaskedInput { masked, .. },
            ) => {
                if !state.u2.contains(&from) {
                    return Err(SecAggError::Excluded(from));
                }
                if received.contains(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                // Validates before touching the sum, so a bad encoding changes nothing.
                masked.add_to(&mut state.sum, plan.config.bits)?;
                received.insert(from);
                received.len() == state.u2.len()
            }
            (
                ServerPhase::ConsistencyCheck { state, signatures },
                ClientMessage::ConsistencySignature { signature, .. },
            ) => {
                if state.survivors.binary_search(&from).is_err() {
                    return Err(SecAggError::Excluded(from));
                }
                if signatures.contains_key(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                let vk = plan
                    .roster
                    .get(&from)
                    .ok_or(SecAggError::UnknownClient(from))?;
                let transcript = crypto::consistency_transcript(
                    &plan.session,
                    key_transcript,
                    from,
                    &state.survivor_set,
                );
                crypto::verify(vk, from, &transcript, &signature)?;
                signatures.insert(from, signature);
                signatures.len() == state.survivors.len()
            }
            (
                ServerPhase::Unmask {
                    state,
                    requests,
                    responded,
                    revealed,
                    banned,
                },
                ClientMessage::UnmaskShares { shares, .. },
            ) => {
                let Some(request) = requests.get(&from) else {
                    return Err(SecAggError::Excluded(from));
                };
                if responded.contains(&from) || banned.contains(&from) {
                    return Err(SecAggError::Duplicate(from));
                }
                let parsed = Self::check_revealed(from, request, &shares)?;
                // Judge every share against its dealer's signed commitment before keeping any:
                // the holder checked the same commitment when it received the share, so a
                // mismatch now is the holder's doing. Its shares are all dropped and the round
                // recovers from the others when enough remain.
                for r in &shares {
                    let committed = state.share_commitments.get(&(r.owner, from));
                    let share: Option<&[u8; crate::shamir::SHARE_BYTES]> =
                        r.share.as_slice().try_into().ok();
                    let ok = match (committed, share) {
                        (Some((self_mask, mask_key)), Some(share)) => {
                            let expected = match r.kind {
                                ShareKind::SelfMask => self_mask,
                                ShareKind::MaskKey => mask_key,
                            };
                            crypto::share_commitment(&plan.session, r.owner, from, r.kind, share)
                                == *expected
                        }
                        _ => false,
                    };
                    if !ok {
                        let error = SecAggError::BadShare {
                            holder: from,
                            owner: r.owner,
                        };
                        banned.insert(from);
                        self.events.push_back(ServerEvent::Misbehaved {
                            client: from,
                            error: error.clone(),
                        });
                        return Err(error);
                    }
                }
                for (owner, kind, share) in parsed {
                    revealed.entry((owner, kind)).or_default().push(share);
                }
                responded.insert(from);
                responded.len() + banned.len() == requests.len()
            }
            _ => {
                return Err(SecAggError::UnexpectedMessage {
                    stage: self.stage().unwrap_or(Stage::Unmask),
                });
            }
        };
        if (complete || self.waiting_only_on_gone())
            && let Some(stage) = self.stage()
        {
            self.close_stage(stage);
        }
        Ok(())
    }

    /// Stops waiting for `client`: its connection is gone or it was revoked, so it will not
    /// answer. The open stage closes as soon as every other client it waits for has answered,
    /// instead of at its deadline; `client` counts as dropped from here on, and its later
    /// messages are refused.
    ///
    /// This gives the server nothing it lacks: closing a stage early is always its choice
    /// (a dropout is indistinguishable from a slow client), and the clients' checks hold
    /// whatever it decides.
    pub fn client_gone(&mut self, client: ClientId) {
        if self.plan.check_member(client).is_err() || !self.gone.insert(client) {
            return;
        }
        if self.waiting_only_on_gone()
            && let Some(stage) = self.stage()
        {
            self.close_stage(stage);
        }
    }

    /// Whether every client the open stage still waits for is gone (false when none is).
    fn waiting_only_on_gone(&self) -> bool {
        if self.gone.is_empty() {
            return false;
        }
        let gone = |c: &ClientId| self.gone.contains(c);
        match &self.phase {
            ServerPhase::AdvertiseKeys { adverts } => self
                .plan
                .roster
                .keys()
                .all(|c| adverts.contains_key(c) || gone(c)),
            ServerPhase::RevealNonces { adverts, nonces } => {
                adverts.keys().all(|c| nonces.contains_key(c) || gone(c))
            }
            ServerPhase::ShareKeys { adverts, shares } => {
                adverts.keys().all(|c| shares.contains_key(c) || gone(c))
            }
            ServerPhase::MaskedInput { state, received } => {
                state.u2.iter().all(|c| received.contains(c) || gone(c))
            }
            ServerPhase::ConsistencyCheck { state, signatures } => state
                .survivors
                .iter()
                .all(|c| signatures.contains_key(c) || gone(c)),
            ServerPhase::Unmask {
                requests,
                responded,
                banned,
                ..
            } => requests
                .keys()
                .all(|c| responded.contains(c) || banned.contains(c) || gone(c)),
            ServerPhase::Finished | ServerPhase::Aborted(_) => false,
        }
    }

    fn check_revealed(
        from: ClientId,
        request: &BTreeMap<ClientId, ShareKind>,
        shares: &[RevealedShare],
    ) -> Result<Vec<(ClientId, ShareKind, SecretShare)>, SecAggError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(shares.len());
        for r in shares {
            if request.get(&r.owner) != Some(&r.kind) {
                return Err(SecAggError::InconsistentUnmaskRequest(r.owner));
            }
            if !seen.insert(r.owner) {
                return Err(SecAggError::Duplicate(r.owner));
            }
            out.push((r.owner, r.kind, SecretShare::from_bytes(from, &r.share)?));
        }
        if seen.len() != request.len() {
            return Err(SecAggError::Malformed {
                field: "unmask shares",
                expected: request.len(),
                got: seen.len(),
            });
        }
        Ok(out)
    }

    /// Closes `stage` if it is still open: whoever has not answered has dropped.
    ///
    /// Closing a stage that already closed (e.g. by itself, because everyone
    /// answered before the driver's deadline fired) does nothing, so drivers
    /// can call this from a timer without racing the auto-advance.
    pub fn close_stage(&mut self, stage: Stage) {
        if self.stage() != Some(stage) {
            return;
        }
        let phase = std::mem::replace(&mut self.phase, ServerPhase::Finished);
        let next = match self.advance(phase) {
            Ok(p) => p,
            Err(e) => {
                self.outgoing.clear();
                if let SecAggError::InconsistentShares(dealer) = e {
                    // Every share was checked against the dealer's commitments on arrival, so
                    // shares that do not open to its committed secret are the dealer's doing.
                    self.events.push_back(ServerEvent::Misbehaved {
                        client: dealer,
                        error: e.clone(),
                    });
                }
                self.events.push_back(ServerEvent::Aborted(e.clone()));
                ServerPhase::Aborted(e)
            }
        };
        self.phase = next;
        // The next stage may wait only on clients already gone: nothing would close it early.
        if self.waiting_only_on_gone()
            && let Some(next) = self.stage()
            && next != stage
        {
            self.close_stage(next);
        }
    }

    fn require(&mut self, stage: Stage, got: usize) -> Result<(), SecAggError> {
        let need = match stage {
            Stage::ConsistencyCheck => self.plan.consistency_quorum(),
            // Fewer inputs than the minimum can never be aggregated: no client would sign.
            Stage::AdvertiseKeys | Stage::RevealNonces | Stage::ShareKeys | Stage::MaskedInput => {
                self.plan.min_survivors
            }
            Stage::Unmask => self.plan.threshold,
        };
        self.events.push_back(ServerEvent::StageClosed {
            stage,
            participants: got,
        });
        if got < need {
            return Err(SecAggError::TooFewSurvivors { stage, got, need });
        }
        Ok(())
    }

    fn advance(&mut self, phase: ServerPhase) -> Result<ServerPhase, SecAggError> {
        let round = self.plan.config.round;
        match phase {
            ServerPhase::AdvertiseKeys { adverts } => {
                self.require(Stage::AdvertiseKeys, adverts.len())?;
                let entries: Arc<[TranscriptEntry]> = adverts
                    .values()
                    .map(|a| TranscriptEntry {
                        client: a.sender,
                        advert: crypto::advert_digest(&self.plan.session, a).to_vec(),
                        nonce_commitment: a.nonce_commitment.clone(),
                    })
                    .collect();
                self.key_transcript = crypto::key_transcript_hash(&self.plan.session, &entries);
                for &i in adverts.keys() {
                    self.outgoing.push_back((
                        i,
                        ServerMessage::KeyTranscript {
                            round,
                            entries: Arc::clone(&entries),
                        },
                    ));
                }
                Ok(ServerPhase::RevealNonces {
                    adverts,
                    nonces: BTreeMap::new(),
                })
            }
            ServerPhase::RevealNonces { adverts, nonces } => {
                self.require(Stage::RevealNonces, nonces.len())?;
                // Every member of the transcript must reveal: going on without one would let a
                // server choose, by dropping nonces, among several graphs.
                if let Some(&missing) = adverts.keys().find(|i| !nonces.contains_key(i)) {
                    return Err(SecAggError::MissingNonce(missing));
                }
                let revealed: Vec<(ClientId, [u8; 32])> = nonces.into_iter().collect();
                let seed = crypto::graph_seed(&self.plan.session, &self.key_transcript, &revealed);
                let graph = self.plan.graph(&seed);
                let wire: Arc<[(ClientId, Vec<u8>)]> =
                    revealed.iter().map(|(id, n)| (*id, n.to_vec())).collect();
                for &i in adverts.keys() {
                    let keys = graph
                        .neighbours(i)
                        .iter()
                        .filter_map(|j| adverts.get(j).cloned())
                        .collect();
                    self.outgoing.push_back((
                        i,
                        ServerMessage::KeyRoster {
                            round,
                            nonces: Arc::clone(&wire),
                            keys,
                        },
                    ));
                }
                self.graph = Some(graph);
                Ok(ServerPhase::ShareKeys {
                    adverts,
                    shares: BTreeMap::new(),
                })
            }
            ServerPhase::ShareKeys { adverts, shares } => {
                self.require(Stage::ShareKeys, shares.len())?;
                let senders: Vec<ClientId> = shares.keys().copied().collect();
                let mut inbox: BTreeMap<ClientId, Forwarded> = senders
                    .iter()
                    .map(|&j| (j, (Vec::new(), Vec::new())))
                    .collect();
                let mut share_commitments = BTreeMap::new();
                // Each ciphertext moves to its recipient; each dealer's commitments are one `Arc`
                // for its `degree` recipients (`n * degree^2` copies otherwise).
                for (sender, (list, commitments)) in shares {
                    for e in list {
                        // Only clients that completed this stage are mask partners.
                        if let Some((slot, lists)) = inbox.get_mut(&e.peer) {
                            slot.push(EncryptedShare {
                                peer: sender,
                                ciphertext: e.ciphertext,
                            });
                            lists.push(Arc::clone(&commitments));
                        }
                    }
                    for c in &commitments.entries {
                        share_commitments.insert(
                            (sender, c.holder),
                            (
                                crypto::array32(&c.self_mask, "self_mask commitment")?,
                                crypto::array32(&c.mask_key, "mask_key commitment")?,
                            ),
                        );
                    }
                }
                for (j, (shares, commitments)) in inbox {
                    self.outgoing.push_back((
                        j,
                        ServerMessage::ForwardShares {
                            round,
                            shares,
                            commitments,
                        },
                    ));
                }
                let mut mask_keys = BTreeMap::new();
                let mut seed_commitments = BTreeMap::new();
                for &i in &senders {
                    let adv = adverts
                        .get(&i)
                        .ok_or(SecAggError::Internal("advert lost"))?;
                    mask_keys.insert(i, crypto::parse_public_key(&adv.mask_key, "mask_key")?);
                    seed_commitments.insert(
                        i,
                        crypto::array32(&adv.self_mask_commitment, "self_mask_commitment")?,
                    );
                }
                Ok(ServerPhase::MaskedInput {
                    state: MaskState {
                        mask_keys,
                        seed_commitments,
                        share_commitments,
                        u2: senders.into_iter().collect(),
                        survivors: Vec::new(),
                        survivor_set: [0; 32],
                        sum: vec![0; self.plan.config.vector_len],
                    },
                    received: BTreeSet::new(),
                })
            }
            ServerPhase::MaskedInput {
                mut state,
                received,
            } => {
                self.require(Stage::MaskedInput, received.len())?;
                state.survivors = received.into_iter().collect();
                state.survivor_set =
                    crypto::survivor_set_digest(&self.plan.session, &state.survivors);
                let announced: Arc<[ClientId]> = state.survivors.as_slice().into();
                for &i in &state.survivors {
                    self.outgoing.push_back((
                        i,
                        ServerMessage::SurvivorSet {
                            round,
                            survivors: Arc::clone(&announced),
                        },
                    ));
                }
                Ok(ServerPhase::ConsistencyCheck {
                    state,
                    signatures: BTreeMap::new(),
                })
            }
            ServerPhase::ConsistencyCheck { state, signatures } => {
                self.require(Stage::ConsistencyCheck, signatures.len())?;
                let signers: Vec<ClientId> = signatures.keys().copied().collect();
                // A quorum of signatures is the proof each client needs; sending more would only
                // make every client verify more (the check is O(quorum) per client).
                let proof: Arc<[(ClientId, Vec<u8>)]> = signatures
                    .into_iter()
                    .take(self.plan.consistency_quorum())
                    .collect();
                let mut requests = BTreeMap::new();
                for &j in &signers {
                    let reveal = self.reveal_list(&state, j);
                    requests.insert(j, reveal.iter().copied().collect());
                    self.outgoing.push_back((
                        j,
                        ServerMessage::UnmaskRequest {
                            round,
                            signatures: Arc::clone(&proof),
                            reveal,
                        },
                    ));
                }
                Ok(ServerPhase::Unmask {
                    state,
                    requests,
                    responded: BTreeSet::new(),
                    revealed: BTreeMap::new(),
                    banned: BTreeSet::new(),
                })
            }
            ServerPhase::Unmask {
                state,
                responded,
                revealed,
                ..
            } => {
                self.require(Stage::Unmask, responded.len())?;
                let aggregate = self.unmask(state, revealed)?;
                self.events.push_back(ServerEvent::Aggregated(aggregate));
                Ok(ServerPhase::Finished)
            }
            done @ (ServerPhase::Finished | ServerPhase::Aborted(_)) => Ok(done),
        }
    }

    /// What holder `j` must reveal: for each mask partner, the self-mask share
    /// if it survived, else the mask-key share, and only if some survivor
    /// actually carries a mask shared with it.
    fn reveal_list(&self, state: &MaskState, j: ClientId) -> Vec<(ClientId, ShareKind)> {
        let survived = |i: &ClientId| state.survivors.binary_search(i).is_ok();
        let Some(graph) = &self.graph else {
            return Vec::new();
        };
        graph
            .neighbours(j)
            .iter()
            .filter(|i| state.u2.contains(i))
            .filter_map(|&i| {
                if survived(&i) {
                    Some((i, ShareKind::SelfMask))
                } else if graph.neighbours(i).iter().any(survived) {
                    Some((i, ShareKind::MaskKey))
                } else {
                    None
                }
            })
            .collect()
    }

    fn unmask(
        &self,
        mut state: MaskState,
        mut revealed: BTreeMap<(ClientId, ShareKind), Vec<SecretShare>>,
    ) -> Result<Aggregate, SecAggError> {
        let t = self.plan.threshold;
        let bits = self.plan.config.bits;
        let mut take =
            |owner: ClientId, kind: ShareKind| -> Result<Vec<SecretShare>, SecAggError> {
                let shares = revealed.remove(&(owner, kind)).unwrap_or_default();
                if shares.len() < t {
                    return Err(SecAggError::TooFewShares {
                        owner,
                        got: shares.len(),
                        need: t,
                    });
                }
                Ok(shares)
            };
        // Rebuild every secret first, so that an abort leaves no partial result.
        let graph = self
            .graph
            .as_ref()
            .ok_or(SecAggError::Internal("unmasking without a graph"))?;
        let mut self_seeds = Vec::with_capacity(state.survivors.len());
        for &i in &state.survivors {
            let shares = take(i, ShareKind::SelfMask)?;
            let seed = Seed(*shamir::reconstruct_secret(i, &shares, t)?);
            // The shares all match i's commitments; a seed that is not the committed one means
            // i dealt shares of something else.
            if state.seed_commitments.get(&i)
                != Some(&crypto::self_mask_commitment(&self.plan.session, i, &seed))
            {
                return Err(SecAggError::InconsistentShares(i));
            }
            self_seeds.push(seed);
        }
        let mut dropped_keys = Vec::new();
        for &d in state.u2.iter() {
            if state.survivors.binary_search(&d).is_ok() {
                continue;
            }
            let partners: Vec<ClientId> = graph
                .neighbours(d)
                .iter()
                .copied()
                .filter(|i| state.survivors.binary_search(i).is_ok())
                .collect();
            if partners.is_empty() {
                continue;
            }
            let shares = take(d, ShareKind::MaskKey)?;
            let secret = StaticSecret::from(*shamir::reconstruct_secret(d, &shares, t)?);
            let advertised = state
                .mask_keys
                .get(&d)
                .ok_or(SecAggError::Internal("key lost"))?;
            // The advertised public key commits to c_d: a wrong rebuild cannot slip through.
            if PublicKey::from(&secret) != *advertised {
                return Err(SecAggError::InconsistentShares(d));
            }
            dropped_keys.push((d, secret, partners));
        }
        let mut pair_seeds = Vec::new();
        for (d, secret, partners) in &dropped_keys {
            for &i in partners {
                let public = state
                    .mask_keys
                    .get(&i)
                    .ok_or(SecAggError::Internal("key lost"))?;
                let seed = crypto::pairwise_seed(&self.plan.session, secret, public, *d, i)?;
                // i added PRG(s_id) if i < d, subtracted it otherwise; undo that.
                let sign = if i < *d { Sign::Subtract } else { Sign::Add };
                pair_seeds.push((seed, sign));
            }
        }
        let masks: Vec<(&Seed, MaskDomain, Sign)> = self_seeds
            .iter()
            .map(|s| (s, MaskDomain::SelfMask, Sign::Subtract))
            .chain(
                pair_seeds
                    .iter()
                    .map(|(s, sign)| (s, MaskDomain::Pairwise, *sign)),
            )
            .collect();
        // Also reduces the sum mod 2^b (the accumulator wraps in Z_{2^64}).
        prg::apply_masks(&mut state.sum, &masks, bits);
        Ok(Aggregate {
            sum: state.sum,
            survivors: state.survivors,
        })
    }
}

//! The client state machine.
//!
//! A [`ClientSession`] consumes [`ServerMessage`]s and produces
//! [`ClientMessage`]s; it never touches a socket, a clock or the OS RNG. All
//! randomness is drawn in [`ClientSession::new`] from the caller's RNG (two
//! X25519 keys, the self-mask seed, a seed for an internal ChaCha20 RNG
//! used later for Shamir coefficients, and the graph nonce), so a session is a deterministic
//! function of that RNG and the messages it receives.
//!
//! Any invalid server message aborts the session: its secrets are dropped
//! (and wiped), and every later call returns [`SecAggError::Aborted`]. An
//! honest client never gets a second chance to answer inconsistently.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use chacha20::ChaCha20Rng;
use ed25519_dalek::SigningKey;
use rand::{CryptoRng, SeedableRng};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::config::{ClientId, Roster, RoundPlan, SecAggConfig};
use crate::crypto::{self, Agreement, SHARE_PLAINTEXT_LEN};
use crate::error::SecAggError;
use crate::graph::NeighbourGraph;
use crate::message::{
    AdvertiseKeys, ClientMessage, EncryptedShare, RevealedShare, ServerMessage, ShareCommitment,
    ShareCommitments, ShareKind, Stage, TranscriptEntry,
};
use crate::packed::{self, PackedVector};
use crate::prg::{self, MaskDomain, Seed, Sign};
use crate::shamir::{self, SHARE_BYTES, SecretShare};
use crate::shared::{ByClient, SharedSessions};

/// Where a client is in the protocol, for drivers and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStatus {
    /// Waiting for the server's message that closes this stage.
    Waiting(Stage),
    /// Shares are exchanged; the masked input goes out once the input is provided.
    NeedsInput,
    /// Unmask shares sent; nothing more to do.
    Finished,
    /// The session refused a server message and stopped.
    Aborted(SecAggError),
}

/// Our X25519 agreements with a neighbour's two advertised keys.
///
/// Computed once when the key roster arrives (which is also the check that
/// the keys are contributory); every later key is derived from them.
struct PeerKeys {
    /// With their mask key: seeds the pairwise mask.
    mask: Agreement,
    /// With their share key: encrypts our shares to them and theirs to us.
    share: Agreement,
}

/// The two shares a client holds of one neighbour's secrets.
struct HeldShares {
    self_mask: SecretShare,
    mask_key: SecretShare,
}

/// Mask agreements with the neighbours we exchanged shares with.
type Partners = BTreeMap<ClientId, Agreement>;
/// Shares we hold, by the neighbour who owns the secrets.
type HeldByOwner = BTreeMap<ClientId, HeldShares>;

enum ClientPhase {
    AwaitingTranscript,
    AwaitingKeyRoster,
    AwaitingShares {
        peers: BTreeMap<ClientId, PeerKeys>,
    },
    ReadyToMask {
        partners: Partners,
        held: BTreeMap<ClientId, HeldShares>,
    },
    AwaitingSurvivors {
        held: BTreeMap<ClientId, HeldShares>,
    },
    AwaitingUnmaskRequest {
        held: BTreeMap<ClientId, HeldShares>,
        survivors: Arc<[ClientId]>,
    },
    /// Unmask shares sent for the survivor set we signed.
    Finished {
        survivors: Arc<[ClientId]>,
    },
    Aborted(SecAggError),
}

/// One client's side of a SecAgg+ round.
pub struct ClientSession {
    /// Shared with the other sessions of this process that built an equal plan, if any.
    plan: Arc<RoundPlan>,
    id: ClientId,
    identity: SigningKey,
    mask_secret: StaticSecret,
    share_secret: StaticSecret,
    self_seed: Seed,
    nonce: [u8; 32],
    /// Digest of our own signed advertisement: the key transcript must list exactly it.
    own_advert: [u8; 32],
    /// Hash of the key transcript we accepted; every later signature covers it.
    key_transcript: [u8; 32],
    /// The key transcript we accepted, strictly increasing by client (the server sends every
    /// client the same one; a simulated server sends the very same allocation). Who advertised
    /// in this attempt: a survivor set may name no one else.
    transcript: Arc<[TranscriptEntry]>,
    graph: Option<Arc<NeighbourGraph>>,
    rng: ChaCha20Rng,
    /// The input, packed to `bits` bits a coordinate (`d * b / 8` bytes, not `8 * d`): it
    /// waits here from training until the shares are exchanged, in every hospital of a
    /// simulation at once.
    input: Option<Zeroizing<Vec<u8>>>,
    phase: ClientPhase,
    outgoing: VecDeque<ClientMessage>,
    /// The other sessions of this process (a simulation's); none in a daemon.
    shared: Option<Arc<SharedSessions>>,
}

impl fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSession")
            .field("id", &self.id)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl ClientSession {
    /// Starts a session and queues the signed key advertisement.
    ///
    /// Fails if the config is invalid for `roster`, `id` is not in it, or
    /// `identity` is not the key the roster lists for `id`.
    pub fn new<R: CryptoRng + ?Sized>(
        config: SecAggConfig,
        id: ClientId,
        identity: SigningKey,
        roster: &Roster,
        rng: &mut R,
    ) -> Result<Self, SecAggError> {
        let plan = RoundPlan::new(&config, roster)?;
        let listed = roster.get(&id).ok_or(SecAggError::UnknownClient(id))?;
        if *listed != identity.verifying_key() {
            return Err(SecAggError::InvalidConfig(
                "identity key does not match the roster entry",
            ));
        }
        let mask_secret = StaticSecret::random_from_rng(rng);
        let share_secret = StaticSecret::random_from_rng(rng);
        let mut seed = Seed([0u8; 32]);
        rng.fill_bytes(&mut seed.0);
        let mut inner = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut inner[..]);
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        let mask_key = PublicKey::from(&mask_secret).to_bytes();
        let share_key = PublicKey::from(&share_secret).to_bytes();
        let nonce_commitment = crypto::nonce_commitment(&plan.session, id, &nonce);
        let self_mask_commitment = crypto::self_mask_commitment(&plan.session, id, &seed);
        let transcript = crypto::advertise_transcript(
            &plan.session,
            id,
            &mask_key,
            &share_key,
            &nonce_commitment,
            &self_mask_commitment,
        );
        let advert = AdvertiseKeys {
            round: plan.config.round,
            sender: id,
            mask_key: mask_key.to_vec(),
            share_key: share_key.to_vec(),
            nonce_commitment: nonce_commitment.to_vec(),
            self_mask_commitment: self_mask_commitment.to_vec(),
            signature: crypto::sign(&identity, &transcript),
        };
        let own_advert = crypto::advert_digest(&plan.session, &advert);
        let mut session = Self {
            rng: ChaCha20Rng::from_seed(*inner),
            plan: Arc::new(plan),
            id,
            identity,
            mask_secret,
            share_secret,
            self_seed: seed,
            nonce,
            own_advert,
            key_transcript: [0u8; 32],
            transcript: Arc::from([]),
            graph: None,
            input: None,
            phase: ClientPhase::AwaitingTranscript,
            outgoing: VecDeque::new(),
            shared: None,
        };
        session
            .outgoing
            .push_back(ClientMessage::AdvertiseKeys(advert));
        Ok(session)
    }

    /// Joins the other sessions this process runs (see [`SharedSessions`]): an equal plan,
    /// the round's neighbour graph and signatures another session checked are not computed
    /// again. Every check still runs.
    pub fn share(&mut self, shared: &Arc<SharedSessions>) {
        self.plan = shared.plan(Arc::clone(&self.plan));
        self.shared = Some(Arc::clone(shared));
    }

    /// This client's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// The plan (degree, threshold, session tag) this client derived.
    pub fn plan(&self) -> &RoundPlan {
        &self.plan
    }

    /// The neighbour graph, once every nonce is revealed and checked (`None` before).
    pub fn graph(&self) -> Option<&NeighbourGraph> {
        self.graph.as_deref()
    }

    /// The survivor set this client signed in the consistency check and then saw a quorum of
    /// other survivors sign too (it revealed its shares only then): exactly the clients whose
    /// inputs the sum holds. `None` before that (or after it aborted).
    ///
    /// Having signed is not enough: a server can show a few clients a smaller set than the
    /// quorum signed, unmask the sum over the larger one without them, and ask them to vouch
    /// for the smaller one. Only the quorum check rules that out.
    pub fn signed_survivors(&self) -> Option<&[ClientId]> {
        match &self.phase {
            ClientPhase::Finished { survivors } => Some(survivors),
            _ => None,
        }
    }

    /// Current protocol position.
    pub fn status(&self) -> ClientStatus {
        match &self.phase {
            ClientPhase::AwaitingTranscript => ClientStatus::Waiting(Stage::AdvertiseKeys),
            ClientPhase::AwaitingKeyRoster => ClientStatus::Waiting(Stage::RevealNonces),
            ClientPhase::AwaitingShares { .. } => ClientStatus::Waiting(Stage::ShareKeys),
            ClientPhase::ReadyToMask { .. } => ClientStatus::NeedsInput,
            ClientPhase::AwaitingSurvivors { .. } => ClientStatus::Waiting(Stage::MaskedInput),
            ClientPhase::AwaitingUnmaskRequest { .. } => {
                ClientStatus::Waiting(Stage::ConsistencyCheck)
            }
            ClientPhase::Finished { .. } => ClientStatus::Finished,
            ClientPhase::Aborted(e) => ClientStatus::Aborted(e.clone()),
        }
    }

    /// Next message to send to the server, if any.
    pub fn poll_outgoing(&mut self) -> Option<ClientMessage> {
        self.outgoing.pop_front()
    }

    /// Supplies the input vector, already in `Z_{2^b}` (see [`crate::quantize`]).
    ///
    /// May be called at any time before the masked-input stage; the masked
    /// input is queued as soon as both the input and the neighbours' shares
    /// are present.
    pub fn provide_input(&mut self, input: Vec<u64>) -> Result<(), SecAggError> {
        self.check_live()?;
        let input = Zeroizing::new(input);
        if self.input.is_some() {
            return Err(SecAggError::InputAlreadyProvided);
        }
        if input.len() != self.plan.config.vector_len {
            return Err(SecAggError::InputLength {
                expected: self.plan.config.vector_len,
                got: input.len(),
            });
        }
        if let Some(index) = input.iter().position(|&x| x & !self.plan.modulus_mask != 0) {
            return Err(SecAggError::InputOutOfRange {
                index,
                bits: self.plan.config.bits,
            });
        }
        let bits = self.plan.config.bits;
        let mut packed = Zeroizing::new(vec![0u8; packed::packed_len(input.len(), bits)?]);
        packed::pack_into(&input, bits, &mut packed);
        self.input = Some(packed);
        let r = self.try_mask();
        self.abort_on_err(r)
    }

    /// Processes one message from the server; any error aborts the session.
    pub fn handle_message(&mut self, msg: ServerMessage) -> Result<(), SecAggError> {
        self.check_live()?;
        let r = self.process(msg);
        self.abort_on_err(r)
    }

    fn check_live(&self) -> Result<(), SecAggError> {
        match &self.phase {
            ClientPhase::Aborted(e) => Err(SecAggError::Aborted(Box::new(e.clone()))),
            ClientPhase::Finished { .. } => Err(SecAggError::Finished),
            _ => Ok(()),
        }
    }

    fn abort_on_err(&mut self, r: Result<(), SecAggError>) -> Result<(), SecAggError> {
        if let Err(e) = &r {
            // Dropping the phase wipes every held share; queued output is withdrawn.
            self.phase = ClientPhase::Aborted(e.clone());
            self.outgoing.clear();
            self.input = None;
        }
        r
    }

    fn expected_stage(&self) -> Stage {
        match &self.phase {
            ClientPhase::AwaitingTranscript => Stage::AdvertiseKeys,
            ClientPhase::AwaitingKeyRoster => Stage::RevealNonces,
            ClientPhase::AwaitingShares { .. } => Stage::ShareKeys,
            ClientPhase::ReadyToMask { .. } | ClientPhase::AwaitingSurvivors { .. } => {
                Stage::MaskedInput
            }
            _ => Stage::ConsistencyCheck,
        }
    }

    fn process(&mut self, msg: ServerMessage) -> Result<(), SecAggError> {
        msg.validate(&self.plan)?;
        let phase = std::mem::replace(&mut self.phase, ClientPhase::AwaitingTranscript);
        let (phase, result) = match (phase, msg) {
            (ClientPhase::AwaitingTranscript, ServerMessage::KeyTranscript { entries, .. }) => {
                match self.on_key_transcript(entries) {
                    Ok(()) => (ClientPhase::AwaitingKeyRoster, Ok(())),
                    Err(e) => (ClientPhase::AwaitingTranscript, Err(e)),
                }
            }
            (ClientPhase::AwaitingKeyRoster, ServerMessage::KeyRoster { nonces, keys, .. }) => {
                match self.on_key_roster(&nonces, &keys) {
                    Ok(peers) => (ClientPhase::AwaitingShares { peers }, Ok(())),
                    Err(e) => (ClientPhase::AwaitingKeyRoster, Err(e)),
                }
            }
            (
                ClientPhase::AwaitingShares { peers },
                ServerMessage::ForwardShares {
                    shares,
                    commitments,
                    ..
                },
            ) => match self.on_forwarded_shares(&peers, &shares, &commitments) {
                Ok((partners, held)) => (ClientPhase::ReadyToMask { partners, held }, Ok(())),
                Err(e) => (ClientPhase::AwaitingShares { peers }, Err(e)),
            },
            (
                ClientPhase::AwaitingSurvivors { held },
                ServerMessage::SurvivorSet { survivors, .. },
            ) => match self.on_survivor_set(&held, &survivors) {
                Ok(()) => (
                    ClientPhase::AwaitingUnmaskRequest { held, survivors },
                    Ok(()),
                ),
                Err(e) => (ClientPhase::AwaitingSurvivors { held }, Err(e)),
            },
            (
                ClientPhase::AwaitingUnmaskRequest { held, survivors },
                ServerMessage::UnmaskRequest {
                    signatures, reveal, ..
                },
            ) => match self.on_unmask_request(&held, &survivors, &signatures, &reveal) {
                Ok(()) => (ClientPhase::Finished { survivors }, Ok(())),
                Err(e) => (
                    ClientPhase::AwaitingUnmaskRequest { held, survivors },
                    Err(e),
                ),
            },
            (phase, _) => {
                self.phase = phase;
                return Err(SecAggError::UnexpectedMessage {
                    stage: self.expected_stage(),
                });
            }
        };
        self.phase = phase;
        result?;
        self.try_mask()
    }

    /// Checks the key transcript lists our own advertisement, then reveals our nonce.
    ///
    /// The transcript fixes every advertisement (and so every nonce commitment) of this
    /// attempt before any honest nonce is known; the graph seed depends on all of them.
    ///
    /// `entries` passed [`ServerMessage::validate`]: strictly increasing by client, 32-byte
    /// fields. It is kept as sent, not copied into a map: `n` clients of a simulated server
    /// then hold one transcript between them, not `n`.
    fn on_key_transcript(&mut self, entries: Arc<[TranscriptEntry]>) -> Result<(), SecAggError> {
        let own_commitment = crypto::nonce_commitment(&self.plan.session, self.id, &self.nonce);
        let own = listed(&entries, self.id);
        if !own.is_some_and(|e| e.advert == self.own_advert && e.nonce_commitment == own_commitment)
        {
            return Err(SecAggError::KeyTranscriptMismatch(self.id));
        }
        let need = self.plan.min_survivors;
        if entries.len() < need {
            return Err(SecAggError::TooFewSurvivors {
                stage: Stage::AdvertiseKeys,
                got: entries.len(),
                need,
            });
        }
        let session = self.plan.session;
        let hash = || crypto::key_transcript_hash(&session, &entries);
        self.key_transcript = match &self.shared {
            Some(shared) => shared.transcript_hash(session, &entries, hash),
            None => hash(),
        };
        self.transcript = entries;
        self.outgoing.push_back(ClientMessage::RevealNonce {
            round: self.plan.config.round,
            nonce: self.nonce.to_vec(),
        });
        Ok(())
    }

    /// Checks every nonce against its commitment, derives the graph, verifies the neighbours'
    /// advertisements against the transcript, and deals our shares to them.
    fn on_key_roster(
        &mut self,
        nonces: &Arc<[ByClient]>,
        keys: &[AdvertiseKeys],
    ) -> Result<BTreeMap<ClientId, PeerKeys>, SecAggError> {
        let (session, key_transcript) = (self.plan.session, self.key_transcript);
        let check = || checked_graph_seed(&session, &key_transcript, &self.transcript, nonces);
        let seed = match &self.shared {
            Some(shared) => shared.graph_seed(session, key_transcript, nonces, check)?,
            None => check()?,
        };
        let transcript = &self.transcript;
        let graph = match &self.shared {
            Some(shared) => shared.graph(&self.plan, &seed),
            None => Arc::new(self.plan.graph(&seed)),
        };
        let neighbours: BTreeSet<ClientId> = graph
            .neighbours(self.id)
            .iter()
            .copied()
            .filter(|&j| listed(transcript, j).is_some())
            .collect();
        self.graph = Some(graph);
        let mut peers = BTreeMap::new();
        for adv in keys {
            if !neighbours.contains(&adv.sender) {
                return Err(SecAggError::NotANeighbour {
                    of: self.id,
                    peer: adv.sender,
                });
            }
            if peers.contains_key(&adv.sender) {
                return Err(SecAggError::Duplicate(adv.sender));
            }
            let digest = crypto::advert_digest(&self.plan.session, adv);
            if listed(transcript, adv.sender).is_none_or(|e| e.advert != digest) {
                return Err(SecAggError::KeyTranscriptMismatch(adv.sender));
            }
            let vk = self
                .plan
                .roster
                .get(&adv.sender)
                .ok_or(SecAggError::UnknownClient(adv.sender))?;
            let mask = crypto::parse_public_key(&adv.mask_key, "mask_key")?;
            let share = crypto::parse_public_key(&adv.share_key, "share_key")?;
            let signed = crypto::advertise_transcript(
                &self.plan.session,
                adv.sender,
                mask.as_bytes(),
                share.as_bytes(),
                &crypto::array32(&adv.nonce_commitment, "nonce_commitment")?,
                &crypto::array32(&adv.self_mask_commitment, "self_mask_commitment")?,
            );
            crypto::verify(vk, adv.sender, &signed, &adv.signature)?;
            // Agreeing is the contributory-key check (a small-order key fails it).
            let mask = crypto::agree(&self.mask_secret, &mask, adv.sender)?;
            let share = crypto::agree(&self.share_secret, &share, adv.sender)?;
            peers.insert(adv.sender, PeerKeys { mask, share });
        }
        if let Some(&missing) = neighbours.iter().find(|j| !peers.contains_key(j)) {
            return Err(SecAggError::MissingAdvertisement(missing));
        }
        let t = self.plan.threshold;
        if peers.len() < t {
            return Err(SecAggError::TooFewNeighbours {
                client: self.id,
                got: peers.len(),
                need: t,
            });
        }
        let holders: Vec<ClientId> = peers.keys().copied().collect();
        let self_shares = shamir::split_secret(&self.self_seed.0, t, &holders, &mut self.rng);
        let mask_bytes = Zeroizing::new(self.mask_secret.to_bytes());
        let key_shares = shamir::split_secret(&mask_bytes, t, &holders, &mut self.rng);
        let mut out = Vec::with_capacity(holders.len());
        let mut entries = Vec::with_capacity(holders.len());
        let session = self.plan.session;
        for ((holder, s), c) in holders.iter().zip(&self_shares).zip(&key_shares) {
            let (s, c) = (s.to_bytes(), c.to_bytes());
            let mut pt = Zeroizing::new(Vec::with_capacity(SHARE_PLAINTEXT_LEN));
            pt.extend_from_slice(&self.id.0.to_le_bytes());
            pt.extend_from_slice(&holder.0.to_le_bytes());
            pt.extend_from_slice(&s[..]);
            pt.extend_from_slice(&c[..]);
            let ciphertext =
                crypto::seal_share_with(&session, &peers[holder].share, self.id, *holder, &pt)?;
            out.push(EncryptedShare {
                peer: *holder,
                ciphertext,
            });
            entries.push(ShareCommitment {
                holder: *holder,
                self_mask: crypto::share_commitment(
                    &session,
                    self.id,
                    *holder,
                    ShareKind::SelfMask,
                    &s,
                )
                .to_vec(),
                mask_key: crypto::share_commitment(
                    &session,
                    self.id,
                    *holder,
                    ShareKind::MaskKey,
                    &c,
                )
                .to_vec(),
            });
        }
        let signed =
            crypto::share_commitments_transcript(&session, &self.key_transcript, self.id, &entries);
        self.outgoing.push_back(ClientMessage::ShareKeys {
            round: self.plan.config.round,
            shares: out,
            commitments: ShareCommitments {
                dealer: self.id,
                entries,
                signature: crypto::sign(&self.identity, &signed),
            },
        });
        Ok(peers)
    }

    /// Decrypts the shares neighbours sent us; they become our mask partners.
    ///
    /// Each share must match the commitment its dealer signed (and the server will judge our
    /// revealed share against): if it does not, the dealer cheated and we stop here, naming it.
    fn on_forwarded_shares(
        &self,
        peers: &BTreeMap<ClientId, PeerKeys>,
        shares: &[EncryptedShare],
        commitments: &[Arc<ShareCommitments>],
    ) -> Result<(Partners, HeldByOwner), SecAggError> {
        let mut lists: BTreeMap<ClientId, &ShareCommitments> = BTreeMap::new();
        for c in commitments {
            if !peers.contains_key(&c.dealer) {
                return Err(SecAggError::NotANeighbour {
                    of: self.id,
                    peer: c.dealer,
                });
            }
            if lists.insert(c.dealer, c).is_some() {
                return Err(SecAggError::Duplicate(c.dealer));
            }
        }
        let signed: Vec<(ClientId, Vec<u8>)> = lists
            .values()
            .map(|c| {
                let t = crypto::share_commitments_transcript(
                    &self.plan.session,
                    &self.key_transcript,
                    c.dealer,
                    &c.entries,
                );
                (c.dealer, t)
            })
            .collect();
        let mut items = Vec::with_capacity(signed.len());
        for ((dealer, t), c) in signed.iter().zip(lists.values()) {
            let vk = self
                .plan
                .roster
                .get(dealer)
                .ok_or(SecAggError::UnknownClient(*dealer))?;
            items.push((*dealer, vk, t.as_slice(), c.signature.as_slice()));
        }
        if !items.is_empty() {
            crypto::verify_all(&items, self.shared.as_ref().map(|s| s.signatures()))?;
        }
        let mut held = BTreeMap::new();
        let mut partners = BTreeMap::new();
        for enc in shares {
            let sender = enc.peer;
            let keys = peers.get(&sender).ok_or(SecAggError::NotANeighbour {
                of: self.id,
                peer: sender,
            })?;
            if held.contains_key(&sender) {
                return Err(SecAggError::Duplicate(sender));
            }
            let pt = crypto::open_share_with(
                &self.plan.session,
                &keys.share,
                sender,
                self.id,
                &enc.ciphertext,
            )?;
            if pt.len() != SHARE_PLAINTEXT_LEN
                || pt[..4] != sender.0.to_le_bytes()
                || pt[4..8] != self.id.0.to_le_bytes()
            {
                return Err(SecAggError::DecryptionFailed(sender));
            }
            let list = lists
                .get(&sender)
                .ok_or(SecAggError::MissingCommitment(sender))?;
            let entry = list
                .entries
                .binary_search_by_key(&self.id, |e| e.holder)
                .map(|i| &list.entries[i])
                .map_err(|_| SecAggError::MissingCommitment(sender))?;
            let s_bytes: &[u8; SHARE_BYTES] = (&pt[8..8 + SHARE_BYTES])
                .try_into()
                .map_err(|_| SecAggError::DecryptionFailed(sender))?;
            let c_bytes: &[u8; SHARE_BYTES] = (&pt[8 + SHARE_BYTES..])
                .try_into()
                .map_err(|_| SecAggError::DecryptionFailed(sender))?;
            let session = &self.plan.session;
            let ok_s =
                crypto::share_commitment(session, sender, self.id, ShareKind::SelfMask, s_bytes)
                    == entry.self_mask[..];
            let ok_c =
                crypto::share_commitment(session, sender, self.id, ShareKind::MaskKey, c_bytes)
                    == entry.mask_key[..];
            if !(ok_s && ok_c) {
                return Err(SecAggError::BadDealing(sender));
            }
            let self_mask = SecretShare::from_bytes(self.id, s_bytes)?;
            let mask_key = SecretShare::from_bytes(self.id, c_bytes)?;
            held.insert(
                sender,
                HeldShares {
                    self_mask,
                    mask_key,
                },
            );
            partners.insert(sender, keys.mask.clone());
        }
        let t = self.plan.threshold;
        if held.len() < t {
            return Err(SecAggError::TooFewNeighbours {
                client: self.id,
                got: held.len(),
                need: t,
            });
        }
        Ok((partners, held))
    }

    /// Queues the masked input once both the input and the partner set are known.
    fn try_mask(&mut self) -> Result<(), SecAggError> {
        if !matches!(self.phase, ClientPhase::ReadyToMask { .. }) {
            return Ok(());
        }
        let Some(input) = self.input.take() else {
            return Ok(());
        };
        let ClientPhase::ReadyToMask { partners, held } =
            std::mem::replace(&mut self.phase, ClientPhase::AwaitingTranscript)
        else {
            return Err(SecAggError::Internal("phase changed while masking"));
        };
        let bits = self.plan.config.bits;
        let mut pair_seeds = Vec::with_capacity(partners.len());
        for (&peer, agreement) in &partners {
            let seed = crypto::pairwise_seed_from(&self.plan.session, agreement, self.id, peer)?;
            let sign = if self.id < peer {
                Sign::Add
            } else {
                Sign::Subtract
            };
            pair_seeds.push((seed, sign));
        }
        let masks: Vec<(&Seed, MaskDomain, Sign)> =
            std::iter::once((&self.self_seed, MaskDomain::SelfMask, Sign::Add))
                .chain(
                    pair_seeds
                        .iter()
                        .map(|(s, sign)| (s, MaskDomain::Pairwise, *sign)),
                )
                .collect();
        // Unpack, mask and pack chunk by chunk: the masked vector exists only in packed form,
        // and no d-long intermediate is written. `input` and `plain` are wiped on drop.
        let d = self.plan.config.vector_len;
        let mut bytes = vec![0u8; input.len()];
        let chunk_bytes = prg::CHUNK_WORDS * bits as usize / 8;
        let mut masker = prg::Masker::new(&masks, bits);
        let mut plain = Zeroizing::new(vec![0u64; prg::CHUNK_WORDS.min(d)]);
        let mut left = d;
        for (src, dst) in input.chunks(chunk_bytes).zip(bytes.chunks_mut(chunk_bytes)) {
            let words = &mut plain[..left.min(prg::CHUNK_WORDS)];
            left -= words.len();
            packed::unpack_into(src, bits, words);
            packed::pack_into(masker.mask_chunk(words), bits, dst);
        }
        let masked = PackedVector::from_bytes(bytes);
        self.outgoing.push_back(ClientMessage::MaskedInput {
            round: self.plan.config.round,
            masked,
        });
        self.phase = ClientPhase::AwaitingSurvivors { held };
        Ok(())
    }

    /// Checks the announced survivor set and signs it.
    fn on_survivor_set(
        &mut self,
        held: &BTreeMap<ClientId, HeldShares>,
        survivors: &[ClientId],
    ) -> Result<(), SecAggError> {
        if survivors.binary_search(&self.id).is_err() {
            return Err(SecAggError::Excluded(self.id));
        }
        if let Some(&j) = survivors
            .iter()
            .find(|&&j| listed(&self.transcript, j).is_none())
        {
            return Err(SecAggError::InconsistentSurvivorSet(j));
        }
        // Two floors. The DP noise is calibrated for `min_survivors` inputs. And the Harary
        // graph is `degree`-connected: with at most `degree - t` clients dropped and at most
        // `t - 1` colluders, fewer than `degree` vertices are gone, so the honest survivors stay
        // one connected group. With more dropped, a server that discards chosen inputs can cut
        // a small group off (its masks with the dropped are revealed, those inside cancel) and
        // learn that group's sum alone, however large the survivor set.
        let connected = self
            .plan
            .roster
            .len()
            .saturating_sub(self.plan.degree.saturating_sub(self.plan.threshold));
        let need = self.plan.min_survivors.max(connected);
        if survivors.len() < need {
            return Err(SecAggError::TooFewSurvivors {
                stage: Stage::MaskedInput,
                got: survivors.len(),
                need,
            });
        }
        let graph = self
            .graph
            .as_ref()
            .ok_or(SecAggError::Internal("survivor set before the graph"))?;
        // Neighbours are few and sorted, survivors many and sorted: look each neighbour up.
        if let Some(&j) = graph
            .neighbours(self.id)
            .iter()
            .find(|j| survivors.binary_search(j).is_ok() && !held.contains_key(j))
        {
            return Err(SecAggError::InconsistentSurvivorSet(j));
        }
        let transcript = crypto::consistency_transcript(
            &self.plan.session,
            &self.key_transcript,
            self.id,
            &crypto::survivor_set_digest(&self.plan.session, survivors),
        );
        self.outgoing
            .push_back(ClientMessage::ConsistencySignature {
                round: self.plan.config.round,
                signature: crypto::sign(&self.identity, &transcript),
            });
        Ok(())
    }

    /// Verifies everyone signed our survivor set, then reveals exactly one share per neighbour.
    fn on_unmask_request(
        &mut self,
        held: &BTreeMap<ClientId, HeldShares>,
        survivors: &[ClientId],
        signatures: &Arc<[ByClient]>,
        reveal: &[(ClientId, ShareKind)],
    ) -> Result<(), SecAggError> {
        let survivor_set = crypto::survivor_set_digest(&self.plan.session, survivors);
        let check = || {
            checked_consistency_proof(
                &self.plan,
                &self.key_transcript,
                survivors,
                &survivor_set,
                signatures,
                self.shared.as_ref().map(|s| s.signatures()),
            )
        };
        match &self.shared {
            Some(shared) => {
                let key = (
                    self.plan.session,
                    self.key_transcript,
                    survivor_set,
                    self.plan.consistency_quorum(),
                );
                shared.consistency_proof(key, signatures, check)?
            }
            None => check()?,
        }
        let mut requested: BTreeMap<ClientId, ShareKind> = BTreeMap::new();
        for &(owner, kind) in reveal {
            if let Some(&prev) = requested.get(&owner) {
                return Err(if prev == kind {
                    SecAggError::Duplicate(owner)
                } else {
                    SecAggError::BothSharesRequested(owner)
                });
            }
            if !held.contains_key(&owner) {
                return Err(SecAggError::NotANeighbour {
                    of: self.id,
                    peer: owner,
                });
            }
            let survived = survivors.binary_search(&owner).is_ok();
            let expected = if survived {
                ShareKind::SelfMask
            } else {
                ShareKind::MaskKey
            };
            if kind != expected {
                return Err(SecAggError::InconsistentUnmaskRequest(owner));
            }
            requested.insert(owner, kind);
        }
        let shares = requested
            .into_iter()
            .filter_map(|(owner, kind)| {
                let h = held.get(&owner)?;
                let s = match kind {
                    ShareKind::SelfMask => &h.self_mask,
                    ShareKind::MaskKey => &h.mask_key,
                };
                Some(RevealedShare {
                    owner,
                    kind,
                    share: s.to_bytes().to_vec(),
                })
            })
            .collect();
        self.outgoing.push_back(ClientMessage::UnmaskShares {
            round: self.plan.config.round,
            shares,
        });
        Ok(())
    }
}

// The input is unpacked and packed again chunk by chunk: a chunk of a multiple of 8
// coordinates fills whole bytes at any width, so the chunks' bytes are the whole vector's.
const _: () = assert!(prg::CHUNK_WORDS.is_multiple_of(8));

/// `client`'s entry in a validated (strictly increasing) key transcript.
fn listed(transcript: &[TranscriptEntry], client: ClientId) -> Option<&TranscriptEntry> {
    transcript
        .binary_search_by_key(&client, |e| e.client)
        .ok()
        .map(|i| &transcript[i])
}

/// Checks every revealed nonce against its commitment in `transcript`, and derives the graph
/// seed from them.
///
/// A nonce from every member and no one else: a server that drops a nonce it dislikes (to try
/// another graph) stops the attempt instead.
fn checked_graph_seed(
    session: &[u8; 32],
    key_transcript: &[u8; 32],
    transcript: &[TranscriptEntry],
    nonces: &[ByClient],
) -> Result<[u8; 32], SecAggError> {
    let mut revealed = Vec::with_capacity(transcript.len());
    let mut given = nonces.iter();
    for entry in transcript {
        let client = entry.client;
        let Some((id, nonce)) = given.next() else {
            return Err(SecAggError::MissingNonce(client));
        };
        if *id != client {
            return Err(if *id > client {
                SecAggError::MissingNonce(client)
            } else {
                SecAggError::KeyTranscriptMismatch(*id)
            });
        }
        let nonce = crypto::array32(nonce, "nonce")?;
        if crypto::nonce_commitment(session, client, &nonce).as_slice() != entry.nonce_commitment {
            return Err(SecAggError::BadNonce(client));
        }
        revealed.push((client, nonce));
    }
    if let Some((extra, _)) = given.next() {
        return Err(SecAggError::KeyTranscriptMismatch(*extra));
    }
    Ok(crypto::graph_seed(session, key_transcript, &revealed))
}

/// Checks the consistency proof: distinct signers, each in `survivors` (whose digest is
/// `survivor_set`), each signature valid over that set and `key_transcript`, and at least a
/// quorum of them.
fn checked_consistency_proof(
    plan: &RoundPlan,
    key_transcript: &[u8; 32],
    survivors: &[ClientId],
    survivor_set: &[u8; 32],
    signatures: &[ByClient],
    cache: Option<&medfl_memo::SignatureCache>,
) -> Result<(), SecAggError> {
    let mut signers = BTreeSet::new();
    let mut transcripts = Vec::with_capacity(signatures.len());
    for (signer, _) in signatures {
        if !signers.insert(*signer) {
            return Err(SecAggError::Duplicate(*signer));
        }
        if survivors.binary_search(signer).is_err() {
            return Err(SecAggError::ConsistencyCheckFailed(*signer));
        }
        let vk = plan
            .roster
            .get(signer)
            .ok_or(SecAggError::UnknownClient(*signer))?;
        transcripts.push((
            *signer,
            vk,
            crypto::consistency_transcript(&plan.session, key_transcript, *signer, survivor_set),
        ));
    }
    let items: Vec<_> = transcripts
        .iter()
        .zip(signatures)
        .map(|((signer, vk, t), (_, sig))| (*signer, *vk, t.as_slice(), sig.as_slice()))
        .collect();
    // Valid key, wrong set: the server showed this signer a different survivor set.
    crypto::verify_all(&items, cache).map_err(|e| match e {
        SecAggError::InvalidSignature(signer) => SecAggError::ConsistencyCheckFailed(signer),
        other => other,
    })?;
    let quorum = plan.consistency_quorum();
    if signers.len() < quorum {
        return Err(SecAggError::TooFewSurvivors {
            stage: Stage::ConsistencyCheck,
            got: signers.len(),
            need: quorum,
        });
    }
    Ok(())
}

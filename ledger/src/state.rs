//! The world state the contracts read: who is a member, which agreements hold, what has been
//! spent, which rounds and models are anchored. It is a pure fold over the blocks, so replaying
//! the ledger from genesis rebuilds it exactly.
//!
//! A block is applied all or nothing: each transaction is checked against the state left by
//! the ones before it (a block may add a member and then carry that member's first transaction),
//! its change is applied at once and its [`Undo`] kept; if any later check or the batched
//! signature check fails, the undo records roll the state back to where it was.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use medfl_memo::SignatureCache;

use crate::block::{BLOCK_VERSION, Block, MAX_BLOCK_TXS};
use crate::bytes::{Hash, PublicKey};
use crate::contract;
use crate::error::{BlockError, ContractError};
use crate::genesis::Genesis;
use crate::member::{AgreementId, Member, MemberId, Role};
use crate::merkle;
use crate::privacy::DpParams;
use crate::sigs::{self, PendingSig};
use crate::timestamp::Timestamp;
use crate::tx::{ConsentChoice, DataUseAgreement, Pseudonym, Transaction, TxId};
use medfl_dp::PrivacyLoss;

/// A member and whether it was revoked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberRecord {
    /// The registered member.
    pub member: Member,
    /// Revoked members stay listed (their id and key are never reused) but can do nothing.
    pub revoked: bool,
    /// Who revoked it, when and why (`None` while active).
    pub revocation: Option<Revocation>,
}

/// The record of a revocation, as its transaction stated it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// Height of the block that holds it.
    pub height: u64,
    /// Who signed it (a coordinator, or the member itself).
    pub by: MemberId,
    /// Time of the block that holds it.
    pub at: Timestamp,
    /// The reason given.
    pub reason: String,
}

/// An agreement and its running totals.
#[derive(Clone, Debug, PartialEq)]
pub struct AgreementRecord {
    /// The agreement as registered (shared between the states that follow: it changes only
    /// when extended).
    pub agreement: Arc<DataUseAgreement>,
    /// Hospitals that accepted it (shared likewise: it changes only with acceptances).
    pub accepted: Arc<BTreeSet<MemberId>>,
    /// The last anchored round (0 before the first).
    pub last_round: u64,
    /// The model of the last anchored round.
    pub last_model: Option<Hash>,
    /// The hash of the server optimizer's state after the last anchored round (`None` before
    /// the first: the state is then the empty one).
    pub last_server_state: Option<Hash>,
    /// Each member's cumulative epsilon under the agreement.
    pub spent: BTreeMap<MemberId, f64>,
    /// How many anchored rounds each member's update is in.
    pub rounds_joined: BTreeMap<MemberId, u64>,
    /// Each member's privacy loss under the agreement, composed by the contract from the DP
    /// parameters of every anchored round it joined (never from a figure the coordinator wrote).
    /// Members with the same history share one value: a round composes each distinct history
    /// once, so a consortium of `n` holds a handful of losses, not `n`.
    pub loss: BTreeMap<MemberId, Arc<PrivacyLoss>>,
    /// How many times its expiry was extended: once it was, an acceptance must name the term
    /// it accepts (`accept-terms`), so an old acceptance cannot be replayed onto a new term.
    pub extensions: u32,
    /// `agreement.members` as a set: every anchor asks about each participant, and every
    /// ledger copy and agent checks every anchor.
    covered: Arc<BTreeSet<MemberId>>,
}

impl AgreementRecord {
    /// A newly registered agreement: no acceptances, no rounds.
    pub(crate) fn registered(agreement: DataUseAgreement) -> AgreementRecord {
        AgreementRecord {
            covered: Arc::new(agreement.members.iter().cloned().collect()),
            agreement: Arc::new(agreement),
            accepted: Arc::default(),
            last_round: 0,
            last_model: None,
            last_server_state: None,
            spent: BTreeMap::new(),
            rounds_joined: BTreeMap::new(),
            loss: BTreeMap::new(),
            extensions: 0,
        }
    }

    /// Whether the agreement lists `member` (whether it accepted is [`Self::accepted`]).
    pub fn covers(&self, member: &MemberId) -> bool {
        self.covered.contains(member)
    }
}

/// The state after some prefix of the chain.
///
/// Cloning it is shallow for the parts behind `Arc`s: a clone and its parent share them until
/// one writes, and every write goes through `Arc::make_mut`, which copies a shared part first.
/// So the types inside those `Arc`s must never gain interior mutability (a cell, a lock, a
/// cache): a write through one would reach every state, and every ledger copy, sharing it.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainState {
    pub(crate) genesis_hash: Hash,
    pub(crate) genesis_time: Timestamp,
    pub(crate) quorum: u32,
    pub(crate) height: u64,
    pub(crate) tip: Hash,
    pub(crate) tip_time: Timestamp,
    /// Shared between the states that follow (so between ledger copies that share states):
    /// only membership transactions change it, and every state lists every member.
    pub(crate) members: Arc<BTreeMap<MemberId, MemberRecord>>,
    pub(crate) key_owners: Arc<HashMap<[u8; 32], MemberId>>,
    pub(crate) agreements: BTreeMap<AgreementId, AgreementRecord>,
    /// Only explicit choices are stored; a subject absent here has the default, opted in.
    /// Each subject's current choice at each hospital, and when the hospital issued it: a later
    /// consent transaction must be issued later (see the `consent-order` rule).
    /// Shared between the states that follow, like `members`: it can hold every opt-out a
    /// hospital ever recorded, and only consent transactions change it.
    pub(crate) consent: Arc<HashMap<(MemberId, Pseudonym), (ConsentChoice, Timestamp)>>,
    /// Height of the newest block that changed any consent (0: none yet); an agent refuses a
    /// round whose consent height is older, so it never trains on a superseded opt-out set.
    pub(crate) consent_changed_at: u64,
    pub(crate) audit_last: HashMap<MemberId, Timestamp>,
    /// Anchored model hashes, with how many anchors name each (so an undo can remove one).
    pub(crate) models: HashMap<Hash, u32>,
    pub(crate) seen: HashSet<TxId>,
}

/// How to take back one applied transaction.
#[derive(Debug)]
pub(crate) enum Undo {
    AddMember(MemberId, [u8; 32]),
    Revoke(MemberId),
    RegisterAgreement(AgreementId),
    Extend {
        agreement: AgreementId,
        expires_at: Timestamp,
        accepted: Arc<BTreeSet<MemberId>>,
    },
    Accept(AgreementId, MemberId),
    Consent(
        (MemberId, Pseudonym),
        Option<(ConsentChoice, Timestamp)>,
        u64,
    ),
    Round {
        agreement: AgreementId,
        last_round: u64,
        last_model: Option<Hash>,
        last_server_state: Option<Hash>,
        spent: Vec<(MemberId, Option<f64>)>,
        loss: Vec<(MemberId, Option<Arc<PrivacyLoss>>)>,
        model: Hash,
    },
    Audit(MemberId, Option<Timestamp>),
    Nothing,
}

/// Whether to check signatures while applying a block.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Signatures<'a> {
    /// Checked strictly, each one, answered from `cache` when another member of this process
    /// checked the same bytes.
    Check(Option<&'a SignatureCache>),
    /// Only for blocks read back from our own durable store (`Ledger::open`).
    #[cfg(feature = "redb")]
    Trust,
}

/// A block applied to the state, with what it takes to undo it.
#[must_use = "an applied block is either kept (drop this) or reverted"]
pub(crate) struct AppliedBlock {
    undos: Vec<(TxId, Undo)>,
    previous: (u64, Hash, Timestamp),
}

/// What a signature in a block vouches for, to name it if it fails.
#[derive(Clone, Debug)]
pub(crate) enum Culprit {
    Header,
    Tx(usize, MemberId),
    Endorsement(usize, MemberId),
}

impl ChainState {
    /// The state right after genesis.
    pub fn from_genesis(genesis: &Genesis) -> Result<ChainState, crate::codec::CodecError> {
        let hash = genesis.hash()?;
        let members: BTreeMap<_, _> = genesis
            .members
            .iter()
            .map(|m| {
                (
                    m.id.clone(),
                    MemberRecord {
                        member: m.clone(),
                        revoked: false,
                        revocation: None,
                    },
                )
            })
            .collect();
        let key_owners = genesis
            .members
            .iter()
            .map(|m| (m.public_key.to_bytes(), m.id.clone()))
            .collect::<HashMap<_, _>>();
        let agreements = genesis
            .agreements
            .iter()
            .map(|a| {
                // Genesis agreements are accepted by every member they list.
                let mut record = AgreementRecord::registered(a.clone());
                record.accepted = Arc::new(a.members.iter().cloned().collect());
                (a.id.clone(), record)
            })
            .collect();
        Ok(ChainState {
            genesis_hash: hash,
            genesis_time: genesis.created_at,
            quorum: genesis.quorum,
            height: 0,
            tip: hash,
            tip_time: genesis.created_at,
            members: Arc::new(members),
            key_owners: Arc::new(key_owners),
            agreements,
            consent: Arc::default(),
            consent_changed_at: 0,
            audit_last: HashMap::new(),
            models: HashMap::new(),
            seen: HashSet::new(),
        })
    }

    /// Height of the last applied block (0: only genesis).
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Hash of the last applied block (the genesis hash at height 0).
    pub fn tip(&self) -> Hash {
        self.tip
    }

    /// Time of the last applied block.
    pub fn tip_time(&self) -> Timestamp {
        self.tip_time
    }

    /// The genesis hash every signature is bound to.
    pub fn genesis_hash(&self) -> Hash {
        self.genesis_hash
    }

    /// Endorsements a round anchor needs.
    pub fn quorum(&self) -> u32 {
        self.quorum
    }

    /// A member, revoked or not.
    pub fn member(&self, id: &MemberId) -> Option<&MemberRecord> {
        self.members.get(id)
    }

    /// Every member, in id order.
    pub fn members(&self) -> impl Iterator<Item = &MemberRecord> {
        self.members.values()
    }

    /// An agreement.
    pub fn agreement(&self, id: &AgreementId) -> Option<&AgreementRecord> {
        self.agreements.get(id)
    }

    /// Every agreement, in id order.
    pub fn agreements(&self) -> impl Iterator<Item = &AgreementRecord> {
        self.agreements.values()
    }

    /// Whether a hospital recorded the subject as opted out.
    pub fn is_opted_out(&self, hospital: &MemberId, subject: &Pseudonym) -> bool {
        self.consent
            .get(&(hospital.clone(), *subject))
            .is_some_and(|(c, _)| *c == ConsentChoice::OptOut)
    }

    /// The subjects a hospital recorded as opted out, in pseudonym order.
    pub fn opted_out(&self, hospital: &MemberId) -> BTreeSet<Pseudonym> {
        self.consent
            .iter()
            .filter(|((h, _), (c, _))| h == hospital && *c == ConsentChoice::OptOut)
            .map(|((_, p), _)| *p)
            .collect()
    }

    /// Height of the newest block that changed any consent choice (0 if none has).
    pub fn consent_changed_at(&self) -> u64 {
        self.consent_changed_at
    }

    /// Whether a model hash was anchored by some round.
    pub fn is_anchored_model(&self, model: &Hash) -> bool {
        self.models.contains_key(model)
    }

    /// The last event time of `member`'s latest audit-log anchor: a batch that starts before it
    /// can no longer be anchored (the `audit-sequence` rule).
    pub fn audit_last(&self, member: &MemberId) -> Option<Timestamp> {
        self.audit_last.get(member).copied()
    }

    /// Whether a transaction id is on the ledger.
    pub fn contains_tx(&self, id: &TxId) -> bool {
        self.seen.contains(id)
    }

    /// The member id owning `key`, if any.
    pub fn owner_of(&self, key: &PublicKey) -> Option<&MemberId> {
        self.key_owners.get(&key.to_bytes())
    }

    /// Applies a block if every rule holds; otherwise leaves the state untouched.
    pub fn apply_block(&mut self, block: &Block) -> Result<(), BlockError> {
        let ids = block.tx_ids()?;
        self.apply_block_with_ids(block, &ids, Signatures::Check(None))
            .map(drop)
    }

    /// The cumulative epsilon (at the round's delta) `member` would reach under `agreement`
    /// after a round with DP parameters `dp`: its anchored rounds composed with this one. The
    /// contract, the coordinator and every agent compute it with this one function.
    ///
    /// # Errors
    /// The agreement is unknown or the parameters are invalid.
    pub fn epsilon_after(
        &self,
        agreement: &AgreementId,
        member: &MemberId,
        dp: &DpParams,
    ) -> Result<f64, String> {
        self.epsilon_after_round(agreement, member, &RoundPrivacy::of(dp)?)
    }

    /// [`Self::epsilon_after`] with the round's loss computed once, for callers that price one
    /// round for many members (the coordinator's selection).
    ///
    /// # Errors
    /// The agreement is unknown or the accountant fails.
    pub fn epsilon_after_round(
        &self,
        agreement: &AgreementId,
        member: &MemberId,
        round: &RoundPrivacy,
    ) -> Result<f64, String> {
        let a = self
            .agreements
            .get(agreement)
            .ok_or_else(|| format!("agreement {agreement} is not on the ledger"))?;
        let mut acc = a
            .loss
            .get(member)
            .map_or_else(PrivacyLoss::new, |l| (**l).clone());
        acc.compose(&round.loss).map_err(|e| e.to_string())?;
        acc.epsilon(round.delta).map_err(|e| e.to_string())
    }

    /// Whether the contracts would accept `tx` in a block stamped `time` on top of this state
    /// (its signature included); the state is not changed.
    ///
    /// A hospital runs this on its own ledger copy when the coordinator says one of its
    /// transactions is refused: a refusal the hospital cannot reproduce is not a verdict but a
    /// transaction not ordered, and so censorship until a block carries it.
    ///
    /// # Errors
    /// The [`ContractError`] of the first rule `tx` breaks.
    pub fn check_tx(&self, tx: &Transaction, time: Timestamp) -> Result<(), ContractError> {
        let id = tx
            .id()
            .map_err(|e| ContractError::Malformed(e.to_string()))?;
        let ctx = contract::Context {
            index: 0,
            id,
            block_time: time.max(self.tip_time),
        };
        let mut scratch = self.clone();
        let mut pending = Vec::with_capacity(1);
        contract::apply(&mut scratch, tx, &ctx, &mut pending)?;
        sigs::verify_all(&pending, None).map_err(|culprit| match culprit {
            Culprit::Endorsement(_, who) => ContractError::BadEndorsement(who),
            Culprit::Tx(_, who) => ContractError::BadSignature(who),
            Culprit::Header => ContractError::BadSignature(tx.signer.clone()),
        })
    }

    /// Applies a block already known to be valid (read back from our own store), skipping the
    /// signature checks; every other rule still runs.
    #[cfg(feature = "redb")]
    pub(crate) fn apply_block_trusting_signatures(
        &mut self,
        block: &Block,
        ids: &[TxId],
    ) -> Result<(), BlockError> {
        self.apply_block_with_ids(block, ids, Signatures::Trust)
            .map(drop)
    }

    /// Applies a block; the returned record can take it back (if storing it fails).
    pub(crate) fn apply_block_with_ids(
        &mut self,
        block: &Block,
        ids: &[TxId],
        signatures: Signatures<'_>,
    ) -> Result<AppliedBlock, BlockError> {
        let proposer_key = self.check_header(block, ids)?;
        let h = &block.header.header;
        let mut pending = Vec::with_capacity(block.txs.len() + 1);
        pending.push(PendingSig {
            message: h.signing_message(&self.genesis_hash)?,
            signature: block.header.signature,
            key: proposer_key,
            culprit: Culprit::Header,
        });

        let mut undos = Vec::with_capacity(block.txs.len());
        for (index, (tx, id)) in block.txs.iter().zip(ids).enumerate() {
            let ctx = contract::Context {
                index,
                id: *id,
                block_time: h.timestamp,
            };
            match contract::apply(self, tx, &ctx, &mut pending) {
                Ok(undo) => undos.push((*id, undo)),
                Err(error) => {
                    self.rollback(undos);
                    return Err(BlockError::Contract {
                        index,
                        id: *id,
                        error,
                    });
                }
            }
        }

        if let Signatures::Check(cache) = signatures
            && let Err(culprit) = sigs::verify_all(&pending, cache)
        {
            self.rollback(undos);
            return Err(match culprit {
                Culprit::Header => BlockError::Signature,
                Culprit::Tx(index, who) => BlockError::Contract {
                    index,
                    id: ids[index],
                    error: ContractError::BadSignature(who),
                },
                Culprit::Endorsement(index, who) => BlockError::Contract {
                    index,
                    id: ids[index],
                    error: ContractError::BadEndorsement(who),
                },
            });
        }

        let applied = AppliedBlock {
            undos,
            previous: (self.height, self.tip, self.tip_time),
        };
        match block.header.hash() {
            Ok(hash) => self.tip = hash,
            Err(e) => {
                self.revert(applied);
                return Err(e.into());
            }
        }
        self.height = h.height;
        self.tip_time = h.timestamp;
        Ok(applied)
    }

    /// Takes back a block applied last.
    pub(crate) fn revert(&mut self, applied: AppliedBlock) {
        self.rollback(applied.undos);
        (self.height, self.tip, self.tip_time) = applied.previous;
    }

    /// Checks the header against the tip; returns the proposer's key.
    fn check_header(&self, block: &Block, ids: &[TxId]) -> Result<PublicKey, BlockError> {
        let h = &block.header.header;
        if h.version != BLOCK_VERSION {
            return Err(BlockError::Version(h.version));
        }
        if h.height != self.height + 1 {
            return Err(BlockError::Height {
                tip: self.height,
                got: h.height,
            });
        }
        if h.previous != self.tip {
            return Err(BlockError::Previous {
                expected: self.tip,
                got: h.previous,
            });
        }
        if h.timestamp < self.tip_time {
            return Err(BlockError::TimeTravel {
                previous: self.tip_time,
                got: h.timestamp,
            });
        }
        let n = block.txs.len();
        if n == 0 || n > MAX_BLOCK_TXS || h.tx_count as usize != n {
            return Err(BlockError::TxCount {
                txs: n,
                header: h.tx_count,
                max: MAX_BLOCK_TXS,
            });
        }
        let proposer = match self.members.get(&h.proposer) {
            Some(r) if !r.revoked && r.member.role == Role::Coordinator => r.member.public_key,
            _ => return Err(BlockError::Proposer(h.proposer.clone())),
        };
        let root = merkle::root(ids);
        if root != h.tx_root {
            return Err(BlockError::TxRoot {
                expected: root,
                got: h.tx_root,
            });
        }
        Ok(proposer)
    }

    fn rollback(&mut self, undos: Vec<(TxId, Undo)>) {
        for (id, undo) in undos.into_iter().rev() {
            self.seen.remove(&id);
            self.undo(undo);
        }
    }

    fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::AddMember(id, key) => {
                Arc::make_mut(&mut self.members).remove(&id);
                Arc::make_mut(&mut self.key_owners).remove(&key);
            }
            Undo::Revoke(id) => {
                if let Some(r) = Arc::make_mut(&mut self.members).get_mut(&id) {
                    r.revoked = false;
                    r.revocation = None;
                }
            }
            Undo::RegisterAgreement(id) => {
                self.agreements.remove(&id);
            }
            Undo::Extend {
                agreement,
                expires_at,
                accepted,
            } => {
                if let Some(a) = self.agreements.get_mut(&agreement) {
                    Arc::make_mut(&mut a.agreement).expires_at = expires_at;
                    a.accepted = accepted;
                    a.extensions = a.extensions.saturating_sub(1);
                }
            }
            Undo::Accept(agreement, member) => {
                if let Some(a) = self.agreements.get_mut(&agreement) {
                    Arc::make_mut(&mut a.accepted).remove(&member);
                }
            }
            Undo::Consent(key, previous, changed_at) => {
                self.consent_changed_at = changed_at;
                match previous {
                    Some(choice) => {
                        Arc::make_mut(&mut self.consent).insert(key, choice);
                    }
                    None => {
                        Arc::make_mut(&mut self.consent).remove(&key);
                    }
                }
            }
            Undo::Round {
                agreement,
                last_round,
                last_model,
                last_server_state,
                spent,
                loss,
                model,
            } => {
                if let Some(a) = self.agreements.get_mut(&agreement) {
                    for (member, previous) in loss {
                        match previous {
                            Some(acc) => {
                                a.loss.insert(member, acc);
                            }
                            None => {
                                a.loss.remove(&member);
                            }
                        }
                    }
                    a.last_round = last_round;
                    a.last_model = last_model;
                    a.last_server_state = last_server_state;
                    for (member, previous) in spent {
                        if let Some(n) = a.rounds_joined.get_mut(&member) {
                            *n -= 1;
                            if *n == 0 {
                                a.rounds_joined.remove(&member);
                            }
                        }
                        match previous {
                            Some(e) => a.spent.insert(member, e),
                            None => a.spent.remove(&member),
                        };
                    }
                }
                if let Some(n) = self.models.get_mut(&model) {
                    *n -= 1;
                    if *n == 0 {
                        self.models.remove(&model);
                    }
                }
            }
            Undo::Audit(member, previous) => match previous {
                Some(t) => {
                    self.audit_last.insert(member, t);
                }
                None => {
                    self.audit_last.remove(&member);
                }
            },
            Undo::Nothing => {}
        }
    }
}

/// The privacy loss of one round's DP-SGD, as the accountant composes it, and the delta its
/// epsilons are stated at.
#[derive(Clone, Debug)]
pub struct RoundPrivacy {
    loss: PrivacyLoss,
    delta: f64,
}

impl RoundPrivacy {
    /// Composes the round's DP-SGD steps.
    ///
    /// # Errors
    /// The parameters are out of range.
    pub fn of(dp: &DpParams) -> Result<RoundPrivacy, String> {
        dp.check()?;
        let mut loss = PrivacyLoss::new();
        loss.compose_poisson_gaussian(dp.sampling_rate, dp.noise_multiplier, dp.steps)
            .map_err(|e| e.to_string())?;
        Ok(RoundPrivacy {
            loss,
            delta: dp.delta,
        })
    }

    /// The round's privacy loss.
    pub(crate) fn loss(&self) -> &PrivacyLoss {
        &self.loss
    }
}

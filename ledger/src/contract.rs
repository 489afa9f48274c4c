//! The contracts: deterministic rules every transaction must pass before it is appended.
//!
//! [`apply`] checks all rules of one transaction against the state, and only then changes the
//! state and returns how to undo the change. Signatures (the transaction's own and a round's
//! endorsements) are not checked here but queued, with the key the state says is right, for the
//! block's batch check. Rule names (the prefix of each [`ContractError`] message) are listed in
//! `docs/ledger-design.md`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use medfl_dp::PrivacyLoss;

use crate::error::ContractError;
use crate::genesis::check_agreement_shape;
use crate::member::{MemberId, Role};
use crate::sigs::PendingSig;
use crate::state::{AgreementRecord, ChainState, Culprit, MemberRecord, Revocation, Undo};
use crate::timestamp::Timestamp;
use crate::tx::{
    AlertAnchor, AuditAnchor, ConsentChoice, DataUseAgreement, MAX_LISTED_MEMBERS, MAX_TEXT_LEN,
    Pseudonym, RoundAnchor, Transaction, TxBody, TxId,
};

/// Endorsements a round anchor needs: the genesis quorum, and a majority of its participants.
///
/// The anchor's DP parameters price every participant's privacy, so they must be vouched for by
/// more than one colluding hospital could supply: with a majority, at least one honest
/// participant signed exactly these parameters (under the consortium's assumption of at most
/// one colluder among at least three participants).
pub fn endorsements_needed(quorum: u32, participants: usize) -> usize {
    (quorum as usize).max(participants / 2 + 1)
}

/// Relative difference allowed between a claimed and a recomputed epsilon: the same code
/// computes both, but the platform's `ln`, `exp`, `sin` and `cos` (RDP's conversion, the PLD
/// FFT's twiddles) may round differently on another machine, and a PLD figure moves with its
/// rounding far more than RDP's. A coordinator can under-report by at most this share.
pub const EPSILON_TOLERANCE: f64 = 1e-6;

/// The band an agent endorses a claimed epsilon in, ten times narrower than the contract's: a
/// coordinator that places its claim at the edge of what its own machine accepts still lands
/// well inside what every replica accepts, so honest endorsements cannot split the replicas.
pub const ENDORSE_TOLERANCE: f64 = EPSILON_TOLERANCE / 10.0;

/// Where a transaction sits.
pub(crate) struct Context {
    pub(crate) index: usize,
    pub(crate) id: TxId,
    pub(crate) block_time: Timestamp,
}

type Pending = Vec<PendingSig<Culprit>>;

/// Checks `tx` and applies it; on error the state is unchanged.
pub(crate) fn apply(
    state: &mut ChainState,
    tx: &Transaction,
    ctx: &Context,
    pending: &mut Pending,
) -> Result<Undo, ContractError> {
    let signer = check_signer(state, tx)?;
    if state.seen.contains(&ctx.id) {
        return Err(ContractError::Replayed(ctx.id));
    }
    if tx.issued_at > ctx.block_time {
        return Err(ContractError::IssuedInFuture {
            issued_at: tx.issued_at,
            block_time: ctx.block_time,
        });
    }
    let message = tx
        .signing_message(&state.genesis_hash)
        .map_err(|e| ContractError::Malformed(e.to_string()))?;
    let signature = PendingSig {
        message,
        signature: tx.signature,
        key: signer.member.public_key,
        culprit: Culprit::Tx(ctx.index, tx.signer.clone()),
    };
    let undo = match &tx.body {
        TxBody::AddMember(m) => add_member(state, m)?,
        TxBody::RevokeMember { member, reason } => {
            let by = Revocation {
                height: state.height() + 1,
                by: tx.signer.clone(),
                at: ctx.block_time,
                reason: reason.clone(),
            };
            revoke(state, member, by)?
        }
        TxBody::RegisterAgreement(a) => register_agreement(state, a, ctx.block_time)?,
        TxBody::AcceptAgreement { agreement } => {
            accept(state, &tx.signer, agreement, None, ctx.block_time)?
        }
        TxBody::AcceptTerms {
            agreement,
            expires_at,
        } => accept(
            state,
            &tx.signer,
            agreement,
            Some(*expires_at),
            ctx.block_time,
        )?,
        TxBody::Consent { subject, choice } => {
            consent(state, &tx.signer, subject, *choice, tx.issued_at)?
        }
        TxBody::AnchorRound(r) => anchor_round(state, r, ctx, pending)?,
        TxBody::AnchorAuditLog(a) => anchor_audit(state, &tx.signer, a, ctx.block_time)?,
        TxBody::AnchorAlert(a) => anchor_alert(state, a, ctx.block_time)?,
        TxBody::ExtendAgreement {
            agreement,
            expires_at,
        } => extend_agreement(state, agreement, *expires_at, ctx.block_time)?,
    };
    pending.push(signature);
    state.seen.insert(ctx.id);
    Ok(undo)
}

/// The signer must be an active member whose role may issue this kind of transaction.
fn check_signer<'s>(
    state: &'s ChainState,
    tx: &Transaction,
) -> Result<&'s MemberRecord, ContractError> {
    let record = state
        .members
        .get(&tx.signer)
        .ok_or_else(|| ContractError::UnknownSigner(tx.signer.clone()))?;
    if record.revoked {
        return Err(ContractError::SignerRevoked(tx.signer.clone()));
    }
    let role = record.member.role;
    let (allowed, required): (&[Role], &'static str) = match &tx.body {
        TxBody::AddMember(_)
        | TxBody::RegisterAgreement(_)
        | TxBody::ExtendAgreement { .. }
        | TxBody::AnchorRound(_) => (&[Role::Coordinator], "coordinator"),
        // Any member may leave; only a coordinator may remove someone else.
        TxBody::RevokeMember { member, .. } if member == &tx.signer => (
            &[Role::Coordinator, Role::Hospital, Role::Auditor],
            "member",
        ),
        TxBody::RevokeMember { .. } => (&[Role::Coordinator], "coordinator"),
        TxBody::AcceptAgreement { .. }
        | TxBody::AcceptTerms { .. }
        | TxBody::Consent { .. }
        | TxBody::AnchorAlert(_) => (&[Role::Hospital], "hospital"),
        TxBody::AnchorAuditLog(_) => (
            &[Role::Hospital, Role::Coordinator],
            "hospital or coordinator",
        ),
    };
    if !allowed.contains(&role) {
        return Err(ContractError::WrongRole {
            signer: tx.signer.clone(),
            role,
            kind: tx.body.kind(),
            required,
        });
    }
    Ok(record)
}

/// A referenced member must exist and be active.
fn active_member<'s>(
    state: &'s ChainState,
    id: &MemberId,
) -> Result<&'s MemberRecord, ContractError> {
    match state.members.get(id) {
        None => Err(ContractError::UnknownMember(id.clone())),
        Some(r) if r.revoked => Err(ContractError::MemberRevoked(id.clone())),
        Some(r) => Ok(r),
    }
}

fn add_member(state: &mut ChainState, m: &crate::member::Member) -> Result<Undo, ContractError> {
    m.check().map_err(ContractError::Malformed)?;
    if state.members.contains_key(&m.id) {
        return Err(ContractError::MemberExists(m.id.clone()));
    }
    let key = m.public_key.to_bytes();
    if state.key_owners.contains_key(&key) {
        return Err(ContractError::KeyInUse(m.id.clone()));
    }
    Arc::make_mut(&mut state.members).insert(
        m.id.clone(),
        MemberRecord {
            member: m.clone(),
            revoked: false,
            revocation: None,
        },
    );
    Arc::make_mut(&mut state.key_owners).insert(key, m.id.clone());
    Ok(Undo::AddMember(m.id.clone(), key))
}

fn revoke(
    state: &mut ChainState,
    target: &MemberId,
    revocation: Revocation,
) -> Result<Undo, ContractError> {
    if revocation.reason.len() > MAX_TEXT_LEN {
        return Err(ContractError::Malformed(format!(
            "reason longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    let record = active_member(state, target)?;
    if record.member.role == Role::Coordinator {
        let others = state
            .members
            .values()
            .filter(|r| !r.revoked && r.member.role == Role::Coordinator && &r.member.id != target)
            .count();
        if others == 0 {
            return Err(ContractError::LastCoordinator(target.clone()));
        }
    }
    if let Some(r) = Arc::make_mut(&mut state.members).get_mut(target) {
        r.revoked = true;
        r.revocation = Some(revocation);
    }
    Ok(Undo::Revoke(target.clone()))
}

fn register_agreement(
    state: &mut ChainState,
    a: &DataUseAgreement,
    now: Timestamp,
) -> Result<Undo, ContractError> {
    check_agreement_shape(a).map_err(ContractError::Malformed)?;
    if state.agreements.contains_key(&a.id) {
        return Err(ContractError::AgreementExists(a.id.clone()));
    }
    if a.expires_at <= now {
        return Err(ContractError::AgreementExpired {
            agreement: a.id.clone(),
            expires_at: a.expires_at,
        });
    }
    for id in &a.members {
        if active_member(state, id)?.member.role != Role::Hospital {
            return Err(ContractError::NotAHospital(id.clone()));
        }
    }
    let record = AgreementRecord::registered(a.clone());
    state.agreements.insert(a.id.clone(), record);
    Ok(Undo::RegisterAgreement(a.id.clone()))
}

/// Moves a live agreement's expiry later; every acceptance lapses (a hospital agreed to the
/// old term, not the new one), so each member must accept again to take part.
fn extend_agreement(
    state: &mut ChainState,
    agreement: &crate::member::AgreementId,
    expires_at: Timestamp,
    now: Timestamp,
) -> Result<Undo, ContractError> {
    let current = live_agreement(state, agreement, now)?.agreement.expires_at;
    if expires_at <= current {
        return Err(ContractError::NotLater {
            agreement: agreement.clone(),
            expires_at: current,
            requested: expires_at,
        });
    }
    let Some(a) = state.agreements.get_mut(agreement) else {
        return Err(ContractError::UnknownAgreement(agreement.clone()));
    };
    let undo = Undo::Extend {
        agreement: agreement.clone(),
        expires_at: a.agreement.expires_at,
        accepted: std::mem::take(&mut a.accepted),
    };
    Arc::make_mut(&mut a.agreement).expires_at = expires_at;
    a.extensions = a.extensions.saturating_add(1);
    Ok(undo)
}

/// An agreement that exists and has not expired at `now`.
fn live_agreement<'s>(
    state: &'s ChainState,
    id: &crate::member::AgreementId,
    now: Timestamp,
) -> Result<&'s AgreementRecord, ContractError> {
    let a = state
        .agreements
        .get(id)
        .ok_or_else(|| ContractError::UnknownAgreement(id.clone()))?;
    if a.agreement.expires_at <= now {
        return Err(ContractError::AgreementExpired {
            agreement: id.clone(),
            expires_at: a.agreement.expires_at,
        });
    }
    Ok(a)
}

/// `terms`: the expiry the hospital names (`accept-terms`); `None` for a plain acceptance,
/// valid only for an agreement never extended.
fn accept(
    state: &mut ChainState,
    signer: &MemberId,
    agreement: &crate::member::AgreementId,
    terms: Option<Timestamp>,
    now: Timestamp,
) -> Result<Undo, ContractError> {
    let a = live_agreement(state, agreement, now)?;
    let current = a.agreement.expires_at;
    let mismatch = match terms {
        Some(t) if t != current => Some(format!("the acceptance names expiry {t}")),
        None if a.extensions > 0 => Some(
            "a plain acceptance names no term: accept the current one (accept-terms)".to_owned(),
        ),
        _ => None,
    };
    if let Some(what) = mismatch {
        return Err(ContractError::NotCurrentTerms {
            agreement: agreement.clone(),
            current,
            what,
        });
    }
    if !a.covers(signer) {
        return Err(ContractError::NotInAgreement {
            member: signer.clone(),
            agreement: agreement.clone(),
        });
    }
    if a.accepted.contains(signer) {
        return Err(ContractError::AlreadyAccepted {
            member: signer.clone(),
            agreement: agreement.clone(),
        });
    }
    if let Some(a) = state.agreements.get_mut(agreement) {
        Arc::make_mut(&mut a.accepted).insert(signer.clone());
    }
    Ok(Undo::Accept(agreement.clone(), signer.clone()))
}

fn consent(
    state: &mut ChainState,
    signer: &MemberId,
    subject: &Pseudonym,
    choice: ConsentChoice,
    issued_at: Timestamp,
) -> Result<Undo, ContractError> {
    let key = (signer.clone(), *subject);
    let previous = state.consent.get(&key).copied();
    // The orderer chooses the order of transactions. Without this rule it could hold back a
    // patient's earlier choice and order it after a later one, so the stale choice wins.
    if let Some((_, recorded)) = previous
        && issued_at <= recorded
    {
        return Err(ContractError::ConsentOutOfOrder {
            issued_at,
            recorded,
        });
    }
    // A choice equal to the recorded one is still recorded, with its newer time: refusing it
    // would let an older, different choice still waiting in the orderer's hands win after it.
    Arc::make_mut(&mut state.consent).insert(key.clone(), (choice, issued_at));
    let changed_at = state.consent_changed_at;
    if previous.map_or(ConsentChoice::OptIn, |(c, _)| c) != choice {
        // Transactions are applied while the state is still at the previous tip; the header
        // check made sure the block is the next one.
        state.consent_changed_at = state.height + 1;
    }
    Ok(Undo::Consent(key, previous, changed_at))
}

fn anchor_round(
    state: &mut ChainState,
    r: &RoundAnchor,
    ctx: &Context,
    pending: &mut Pending,
) -> Result<Undo, ContractError> {
    r.dp.check().map_err(ContractError::Malformed)?;
    let a = live_agreement(state, &r.agreement, ctx.block_time)?;
    if r.round != a.last_round + 1 {
        return Err(ContractError::RoundOutOfOrder {
            agreement: r.agreement.clone(),
            expected: a.last_round + 1,
            got: r.round,
        });
    }
    if let Some(last) = a.last_model
        && last != r.previous_model
    {
        return Err(ContractError::PreviousModelMismatch {
            expected: last,
            got: r.previous_model,
        });
    }
    if r.participants.is_empty() {
        return Err(ContractError::NoParticipants);
    }
    if r.participants.len() + r.dropped.len() > MAX_LISTED_MEMBERS
        || r.endorsements.len() > MAX_LISTED_MEMBERS
    {
        return Err(ContractError::Malformed(format!(
            "more than {MAX_LISTED_MEMBERS} members listed"
        )));
    }
    a.agreement
        .floors
        .admits(&r.aggregation)
        .map_err(ContractError::BelowFloor)?;
    if r.strategy != a.agreement.strategy {
        return Err(ContractError::StrategyMismatch {
            round: format!("{:?}", r.strategy),
            agreement: format!("{:?}", a.agreement.strategy),
        });
    }
    // The noise is calibrated for `min_survivors`: a sum over fewer would be under-noised.
    let needed = r.aggregation.min_survivors;
    if (r.participants.len() as u64) < needed {
        return Err(ContractError::TooFewSurvivors {
            survivors: r.participants.len(),
            needed,
        });
    }
    let budget = a.agreement.budget;
    if r.dp.delta > budget.delta {
        return Err(ContractError::DeltaExceeded {
            budget: budget.delta,
            round: r.dp.delta,
        });
    }

    let round = crate::state::RoundPrivacy::of(&r.dp).map_err(ContractError::Malformed)?;
    let mut composed = Vec::with_capacity(r.participants.len());
    // Each distinct history is composed and priced once: members who joined the same rounds
    // share one loss (by pointer, see `AgreementRecord::loss`), and so share the result. Each
    // entry holds the history it is keyed by, so no address can be freed and reused for
    // another history while the map lives.
    type Next = (Option<Arc<PrivacyLoss>>, Arc<PrivacyLoss>, f64);
    let mut next_of: HashMap<*const PrivacyLoss, Next> = HashMap::new();
    let mut listed = HashSet::new();
    for (member, spend) in &r.participants {
        if !listed.insert(member) {
            return Err(ContractError::ListedTwice(member.clone()));
        }
        if active_member(state, member)?.member.role != Role::Hospital {
            return Err(ContractError::NotAHospital(member.clone()));
        }
        check_covered(a, member)?;
        let claimed = spend.epsilon_total;
        if !claimed.is_finite() || claimed < 0.0 {
            return Err(ContractError::Malformed(format!(
                "{member}: epsilon {claimed} is not a finite, non-negative number"
            )));
        }
        // Recomputed from the parameters anchored for every round the member joined and this
        // round's: a coordinator cannot under-report a spend, nor re-price past rounds.
        let previous = a.loss.get(member);
        let history = previous.map_or(std::ptr::null(), Arc::as_ptr);
        let (acc, recomputed) = match next_of.get(&history) {
            Some((_, acc, epsilon)) => (Arc::clone(acc), *epsilon),
            None => {
                let mut acc = previous.map_or_else(PrivacyLoss::new, |l| (**l).clone());
                acc.compose(round.loss())
                    .map_err(|e| ContractError::Malformed(e.to_string()))?;
                let epsilon = acc
                    .epsilon(r.dp.delta)
                    .map_err(|e| ContractError::Malformed(e.to_string()))?;
                let acc = Arc::new(acc);
                next_of.insert(history, (previous.cloned(), Arc::clone(&acc), epsilon));
                (acc, epsilon)
            }
        };
        // Written so that an infinite or NaN figure on either side is a mismatch: parameters
        // whose loss overflows must not let any claim through.
        let close = (claimed - recomputed).abs() <= EPSILON_TOLERANCE * recomputed.max(1.0);
        if !recomputed.is_finite() || !close {
            return Err(ContractError::EpsilonMismatch {
                member: member.clone(),
                claimed,
                recomputed,
            });
        }
        composed.push((member.clone(), acc));
        let recorded = a.spent.get(member).copied().unwrap_or(0.0);
        if claimed < recorded {
            return Err(ContractError::PrivacyDecreased {
                member: member.clone(),
                recorded,
                claimed,
            });
        }
        if claimed > budget.epsilon {
            return Err(ContractError::BudgetExceeded {
                member: member.clone(),
                budget: budget.epsilon,
                claimed,
            });
        }
    }
    for member in &r.dropped {
        if !listed.insert(member) {
            return Err(ContractError::ListedTwice(member.clone()));
        }
        if !state.members.contains_key(member) {
            return Err(ContractError::UnknownMember(member.clone()));
        }
        if !a.covers(member) {
            return Err(ContractError::NotInAgreement {
                member: member.clone(),
                agreement: r.agreement.clone(),
            });
        }
    }

    // Rebuilt from the anchor itself: a field changed after the endorsers signed breaks
    // every endorsement.
    let message = r
        .endorsement_message(&state.genesis_hash)
        .map_err(|e| ContractError::Malformed(e.to_string()))?;
    let participants: HashSet<&MemberId> = r.participants.iter().map(|(m, _)| m).collect();
    let mut endorsers = HashSet::new();
    let mut endorsements = Vec::with_capacity(r.endorsements.len());
    for e in &r.endorsements {
        if !endorsers.insert(&e.member) {
            return Err(ContractError::ListedTwice(e.member.clone()));
        }
        if !participants.contains(&e.member) {
            return Err(ContractError::EndorserNotParticipant(e.member.clone()));
        }
        // Participants were checked active above, so the key lookup cannot miss.
        let key = active_member(state, &e.member)?.member.public_key;
        endorsements.push(PendingSig {
            message: message.clone(),
            signature: e.signature,
            key,
            culprit: Culprit::Endorsement(ctx.index, e.member.clone()),
        });
    }
    let need = endorsements_needed(state.quorum, r.participants.len());
    if endorsers.len() < need {
        return Err(ContractError::QuorumNotReached {
            have: endorsers.len(),
            need: u32::try_from(need).unwrap_or(u32::MAX),
        });
    }

    // Every rule holds: change the state.
    pending.extend(endorsements);
    let record = state
        .agreements
        .get_mut(&r.agreement)
        .ok_or_else(|| ContractError::UnknownAgreement(r.agreement.clone()))?;
    let undo = Undo::Round {
        agreement: r.agreement.clone(),
        last_round: record.last_round,
        last_model: record.last_model,
        last_server_state: record.last_server_state,
        spent: r
            .participants
            .iter()
            .map(|(m, _)| (m.clone(), record.spent.get(m).copied()))
            .collect(),
        loss: r
            .participants
            .iter()
            .map(|(m, _)| (m.clone(), record.loss.get(m).cloned()))
            .collect(),
        model: r.model,
    };
    record.last_round = r.round;
    record.last_model = Some(r.model);
    record.last_server_state = Some(r.server_state);
    for (member, spend) in &r.participants {
        record.spent.insert(member.clone(), spend.epsilon_total);
        *record.rounds_joined.entry(member.clone()).or_insert(0) += 1;
    }
    record.loss.extend(composed);
    *state.models.entry(r.model).or_insert(0) += 1;
    Ok(undo)
}

/// The member is listed in the agreement and has accepted it.
fn check_covered(a: &AgreementRecord, member: &MemberId) -> Result<(), ContractError> {
    let agreement = a.agreement.id.clone();
    if !a.covers(member) {
        return Err(ContractError::NotInAgreement {
            member: member.clone(),
            agreement,
        });
    }
    if !a.accepted.contains(member) {
        return Err(ContractError::NotAccepted {
            member: member.clone(),
            agreement,
        });
    }
    Ok(())
}

fn anchor_audit(
    state: &mut ChainState,
    signer: &MemberId,
    a: &AuditAnchor,
    now: Timestamp,
) -> Result<Undo, ContractError> {
    if a.count == 0 {
        return Err(ContractError::Malformed(
            "an audit batch must hold at least one event".into(),
        ));
    }
    if a.first_event_at > a.last_event_at || a.last_event_at > now {
        return Err(ContractError::Malformed(format!(
            "audit range {} .. {} must be ordered and not after the block time {now}",
            a.first_event_at, a.last_event_at
        )));
    }
    let previous = state.audit_last.get(signer).copied();
    if let Some(previous_last) = previous
        && a.first_event_at < previous_last
    {
        return Err(ContractError::AuditOverlap {
            previous_last,
            first: a.first_event_at,
        });
    }
    state.audit_last.insert(signer.clone(), a.last_event_at);
    Ok(Undo::Audit(signer.clone(), previous))
}

fn anchor_alert(
    state: &mut ChainState,
    a: &AlertAnchor,
    now: Timestamp,
) -> Result<Undo, ContractError> {
    if a.raised_at > now {
        return Err(ContractError::Malformed(format!(
            "alert raised at {}, after the block time {now}",
            a.raised_at
        )));
    }
    if let Some(model) = &a.model
        && !state.is_anchored_model(model)
    {
        return Err(ContractError::UnknownModel(*model));
    }
    Ok(Undo::Nothing)
}

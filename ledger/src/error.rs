//! Why a transaction, block or ledger is refused.

use crate::bytes::Hash;
use crate::codec::CodecError;
use crate::member::{AgreementId, MemberId, Role};
use crate::timestamp::Timestamp;
use crate::tx::TxId;

/// A contract rule a transaction broke. Each variant names one rule; the state is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ContractError {
    /// The signer is not a member.
    #[error("signer-is-member: {0} is not a member")]
    UnknownSigner(MemberId),
    /// The signer was revoked; a revoked member can do nothing.
    #[error("signer-active: {0} has been revoked")]
    SignerRevoked(MemberId),
    /// The signer's role may not issue this kind of transaction.
    #[error("signer-role: {signer} is a {role}; {kind} needs a {required}")]
    WrongRole {
        /// Who signed.
        signer: MemberId,
        /// Its role.
        role: Role,
        /// The transaction kind.
        kind: &'static str,
        /// The roles allowed.
        required: &'static str,
    },
    /// The signature does not verify under the signer's key.
    #[error("signature: the signature of {0} does not verify")]
    BadSignature(MemberId),
    /// The very same signed transaction is already on the ledger.
    #[error("no-replay: transaction {0} is already on the ledger")]
    Replayed(TxId),
    /// Issued after the block that would include it.
    #[error("issued-before-block: issued at {issued_at}, after the block time {block_time}")]
    IssuedInFuture {
        /// Issue time.
        issued_at: Timestamp,
        /// Block time.
        block_time: Timestamp,
    },
    /// A field is out of range or malformed.
    #[error("well-formed: {0}")]
    Malformed(String),
    /// A member with this id already exists (revoked ids are never reused).
    #[error("unique-member: {0} is already a member")]
    MemberExists(MemberId),
    /// The key already belongs to another member.
    #[error("unique-key: the key of {0} already belongs to another member")]
    KeyInUse(MemberId),
    /// A referenced member does not exist.
    #[error("member-exists: {0} is not a member")]
    UnknownMember(MemberId),
    /// A referenced member has been revoked.
    #[error("member-active: {0} has been revoked")]
    MemberRevoked(MemberId),
    /// A referenced member is not a hospital.
    #[error("member-is-hospital: {0} is not a hospital")]
    NotAHospital(MemberId),
    /// An agreement with this id already exists.
    #[error("unique-agreement: agreement {0} already exists")]
    AgreementExists(AgreementId),
    /// A referenced agreement does not exist.
    #[error("agreement-exists: agreement {0} does not exist")]
    UnknownAgreement(AgreementId),
    /// The member is not covered by the agreement.
    #[error("agreement-lists-member: {member} is not covered by agreement {agreement}")]
    NotInAgreement {
        /// Member.
        member: MemberId,
        /// Agreement.
        agreement: AgreementId,
    },
    /// An extension that does not move the expiry later.
    #[error(
        "extension-later: agreement {agreement} expires at {expires_at}; an extension to {requested} is not later"
    )]
    NotLater {
        /// Agreement.
        agreement: AgreementId,
        /// Its current expiry.
        expires_at: Timestamp,
        /// The expiry asked for.
        requested: Timestamp,
    },
    /// An acceptance of terms that are not the agreement's current ones (or a plain acceptance
    /// of an agreement that was extended, which names no term).
    #[error("accept-current-terms: agreement {agreement} now expires at {current}; {what}")]
    NotCurrentTerms {
        /// Agreement.
        agreement: AgreementId,
        /// Its current expiry.
        current: Timestamp,
        /// What was accepted instead.
        what: String,
    },
    /// The member already accepted the agreement.
    #[error("accept-once: {member} already accepted agreement {agreement}")]
    AlreadyAccepted {
        /// Member.
        member: MemberId,
        /// Agreement.
        agreement: AgreementId,
    },
    /// The member has not accepted the agreement.
    #[error("agreement-accepted: {member} has not accepted agreement {agreement}")]
    NotAccepted {
        /// Member.
        member: MemberId,
        /// Agreement.
        agreement: AgreementId,
    },
    /// The agreement has expired (or would expire before it starts).
    #[error("agreement-unexpired: agreement {agreement} expires at {expires_at}")]
    AgreementExpired {
        /// Agreement.
        agreement: AgreementId,
        /// Its expiry.
        expires_at: Timestamp,
    },
    /// A consent change issued no later than the subject's recorded choice: ordering it now
    /// would let an older choice overwrite a newer one.
    #[error(
        "consent-order: the change was issued at {issued_at}, the recorded choice at {recorded}"
    )]
    ConsentOutOfOrder {
        /// When the refused change was issued.
        issued_at: Timestamp,
        /// When the recorded choice was issued.
        recorded: Timestamp,
    },
    /// The round number does not follow the last anchored round.
    #[error("round-sequence: agreement {agreement} expects round {expected}, got {got}")]
    RoundOutOfOrder {
        /// Agreement.
        agreement: AgreementId,
        /// The next round.
        expected: u64,
        /// The claimed round.
        got: u64,
    },
    /// The previous model is not the last anchored model.
    #[error("model-chain: previous model {got} is not the last anchored model {expected}")]
    PreviousModelMismatch {
        /// The last anchored model.
        expected: Hash,
        /// The claimed previous model.
        got: Hash,
    },
    /// A member appears twice among participants, dropped members or endorsers.
    #[error("listed-once: {0} is listed twice")]
    ListedTwice(MemberId),
    /// A round with no participant.
    #[error("has-participants: a round needs at least one participant")]
    NoParticipants,
    /// A cumulative spend below the one already recorded.
    #[error("privacy-monotone: {member} claims epsilon {claimed}, below the recorded {recorded}")]
    PrivacyDecreased {
        /// Member.
        member: MemberId,
        /// Recorded cumulative epsilon.
        recorded: f64,
        /// Claimed cumulative epsilon.
        claimed: f64,
    },
    /// The spend exceeds the member's budget.
    #[error("within-budget: {member} would reach epsilon {claimed}, over its budget {budget}")]
    BudgetExceeded {
        /// Member.
        member: MemberId,
        /// Budget epsilon.
        budget: f64,
        /// Claimed cumulative epsilon.
        claimed: f64,
    },
    /// The epsilon an anchor records for a member is not the one the contract composes from
    /// the anchored DP parameters of every round the member joined.
    #[error(
        "privacy-recomputed: {member} is recorded at epsilon {claimed}, the anchored parameters give {recomputed}"
    )]
    EpsilonMismatch {
        /// The member.
        member: MemberId,
        /// What the anchor says.
        claimed: f64,
        /// What the contract computes.
        recomputed: f64,
    },
    /// The round's delta is above the agreement's.
    #[error("within-budget: round delta {round} is above the agreement's delta {budget}")]
    DeltaExceeded {
        /// Agreement delta.
        budget: f64,
        /// Round delta.
        round: f64,
    },
    /// An endorsement by a member who did not take part.
    #[error("endorser-participated: {0} endorsed but did not take part")]
    EndorserNotParticipant(MemberId),
    /// An endorsement signature does not verify.
    #[error("endorsement-signature: the endorsement of {0} does not verify")]
    BadEndorsement(MemberId),
    /// Fewer valid endorsements than the quorum.
    #[error("quorum: {have} endorsements, the quorum is {need}")]
    QuorumNotReached {
        /// Endorsements present.
        have: usize,
        /// Quorum.
        need: u32,
    },
    /// An audit batch starting before the previous one ended.
    #[error(
        "audit-sequence: batch starts at {first}, before the previous batch ended at {previous_last}"
    )]
    AuditOverlap {
        /// End of the previous batch.
        previous_last: Timestamp,
        /// Start of this batch.
        first: Timestamp,
    },
    /// Revoking the last active coordinator would leave nobody to propose blocks.
    #[error("keeps-a-coordinator: {0} is the last active coordinator")]
    LastCoordinator(MemberId),
    /// A reference to a model that was never anchored.
    #[error("model-anchored: model {0} was never anchored")]
    UnknownModel(Hash),
    /// A round ran with secure-aggregation or noise parameters below the agreement's floors.
    #[error("aggregation-floors: {0}")]
    BelowFloor(crate::privacy::FloorViolation),
    /// Fewer hospitals in the aggregate than the distributed noise is calibrated for.
    #[error("survivors: {survivors} hospitals in the aggregate, the round needs {needed}")]
    TooFewSurvivors {
        /// Participants in the aggregate.
        survivors: usize,
        /// The round's (and the agreement's) minimum.
        needed: u64,
    },
    /// A round computed with a server strategy other than the agreement's.
    #[error("strategy: the round used {round}, the agreement fixes {agreement}")]
    StrategyMismatch {
        /// What the anchor records.
        round: String,
        /// What the agreement fixes.
        agreement: String,
    },
}

/// Why a block is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockError {
    /// Unknown format version.
    #[error("block version {0} is not supported")]
    Version(u16),
    /// The height does not follow the tip.
    #[error("height {got} does not follow the tip {tip}")]
    Height {
        /// Current tip height.
        tip: u64,
        /// Claimed height.
        got: u64,
    },
    /// The previous hash is not the tip's hash.
    #[error("previous hash {got} is not the tip's hash {expected}")]
    Previous {
        /// Tip hash.
        expected: Hash,
        /// Claimed previous hash.
        got: Hash,
    },
    /// Time went backwards.
    #[error("timestamp {got} is before the previous block's {previous}")]
    TimeTravel {
        /// Previous block time.
        previous: Timestamp,
        /// Claimed block time.
        got: Timestamp,
    },
    /// Empty, or too many transactions, or a count that disagrees with the list.
    #[error("the block carries {txs} transactions, its header says {header} (allowed 1 to {max})")]
    TxCount {
        /// Transactions present.
        txs: usize,
        /// Header count.
        header: u32,
        /// Maximum.
        max: usize,
    },
    /// The proposer is not an active coordinator.
    #[error("proposer {0} is not an active coordinator")]
    Proposer(MemberId),
    /// The proposer's signature does not verify.
    #[error("the proposer's signature does not verify")]
    Signature,
    /// The Merkle root does not match the transactions.
    #[error("transaction root {got} does not match the transactions ({expected})")]
    TxRoot {
        /// Root of the transactions.
        expected: Hash,
        /// Root in the header.
        got: Hash,
    },
    /// A transaction broke a contract rule.
    #[error("transaction {index} ({id}): {error}")]
    Contract {
        /// Position in the block.
        index: usize,
        /// Its id.
        id: TxId,
        /// The rule broken.
        error: ContractError,
    },
    /// A value could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
}

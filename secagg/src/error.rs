//! Typed errors for every way a round can fail or a peer can misbehave.
//!
//! One enum serves the client, the server and the helpers, so that a driver can
//! log or match on a single type. Variants carry only public data (ids, counts,
//! stages), never secrets, so errors are safe to print and to forward.

use crate::ClientId;
use crate::message::Stage;

/// Everything that can go wrong in a SecAgg+ round.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecAggError {
    /// The configuration (or its combination with the roster) is unusable.
    #[error("invalid configuration: {0}")]
    InvalidConfig(&'static str),
    /// A message carries a round id other than this session's.
    #[error("message for round {got}, this session is round {expected}")]
    WrongRound {
        /// Round id of this session.
        expected: u64,
        /// Round id found in the message.
        got: u64,
    },
    /// A client id that is not in the roster.
    #[error("client {0} is not in the roster")]
    UnknownClient(ClientId),
    /// A message names a client that is not a graph neighbour where one is required.
    #[error("client {peer} is not a neighbour of client {of}")]
    NotANeighbour {
        /// The client whose neighbourhood was checked.
        of: ClientId,
        /// The id that is not in it.
        peer: ClientId,
    },
    /// A message arrived in a stage that does not accept it.
    #[error("unexpected message in stage {stage:?}")]
    UnexpectedMessage {
        /// Stage the receiver was in.
        stage: Stage,
    },
    /// A client sent a second message for the same stage, or a list repeats an id.
    #[error("duplicate message or entry from/for client {0}")]
    Duplicate(ClientId),
    /// The signed sender id differs from the transport-level sender.
    #[error("message claims sender {claimed} but came from {actual}")]
    SenderMismatch {
        /// Id inside the message.
        claimed: ClientId,
        /// Id the transport authenticated.
        actual: ClientId,
    },
    /// A field has the wrong length or an out-of-range value.
    #[error("malformed message: {field} (expected {expected}, got {got})")]
    Malformed {
        /// Name of the offending field.
        field: &'static str,
        /// Expected length or bound.
        expected: usize,
        /// Observed length or value.
        got: usize,
    },
    /// A packed vector has set bits in the unused high bits of its last byte.
    #[error("packed vector has non-zero padding bits")]
    NonZeroPadding,
    /// A list that must be sorted and duplicate-free is not.
    #[error("list {0} is not strictly increasing")]
    Unsorted(&'static str),
    /// An ed25519 signature does not verify under the roster key.
    #[error("invalid signature from client {0}")]
    InvalidSignature(ClientId),
    /// An advertised X25519 key yields an all-zero (non-contributory) shared secret.
    #[error("client {0} advertised a low-order (non-contributory) key")]
    NonContributoryKey(ClientId),
    /// An encrypted share failed authentication or carried the wrong ids.
    #[error("encrypted share from client {0} failed to decrypt or authenticate")]
    DecryptionFailed(ClientId),
    /// A consistency-check signature does not cover this client's survivor set:
    /// the server equivocated or forged a signature.
    #[error("consistency check failed on the signature of client {0}")]
    ConsistencyCheckFailed(ClientId),
    /// The server's survivor set leaves out this client although it sent its masked input.
    #[error("client {0} was left out of the survivor set")]
    Excluded(ClientId),
    /// The survivor set names a neighbour this client never exchanged masks with.
    #[error("survivor set names client {0}, which is not a mask partner")]
    InconsistentSurvivorSet(ClientId),
    /// The server asked for both the self-mask share and the mask-key share of one client.
    #[error("server requested both shares of client {0}")]
    BothSharesRequested(ClientId),
    /// The server asked for a share that contradicts the signed survivor set.
    #[error("server requested the wrong kind of share for client {0}")]
    InconsistentUnmaskRequest(ClientId),
    /// Fewer than `threshold` clients remain in a stage.
    #[error("only {got} clients remain at stage {stage:?}, threshold is {need}")]
    TooFewSurvivors {
        /// Stage at which the count fell short.
        stage: Stage,
        /// Number of clients left.
        got: usize,
        /// Threshold.
        need: usize,
    },
    /// A client has fewer than `threshold` live neighbours to hold its shares.
    #[error("client {client} has only {got} live neighbours, threshold is {need}")]
    TooFewNeighbours {
        /// The client whose neighbourhood is too small.
        client: ClientId,
        /// Live neighbours.
        got: usize,
        /// Threshold.
        need: usize,
    },
    /// Fewer than `threshold` shares arrived to rebuild a secret of `owner`.
    #[error("only {got} shares of client {owner}'s secret, threshold is {need}")]
    TooFewShares {
        /// Owner of the secret.
        owner: ClientId,
        /// Shares received.
        got: usize,
        /// Threshold.
        need: usize,
    },
    /// Shares of one secret do not lie on a single polynomial of the agreed degree, or rebuild
    /// a seed or key that does not match the owner's commitment. Every share was first checked
    /// against the owner's signed share commitments, so the owner (the dealer) is the culprit.
    #[error("shares of client {0}'s secret are inconsistent (client {0} dealt them)")]
    InconsistentShares(ClientId),
    /// The key transcript the server sent misstates (or leaves out) a client's advertisement.
    #[error("the key transcript misstates the advertisement of client {0}")]
    KeyTranscriptMismatch(ClientId),
    /// A member of the key transcript revealed no nonce, so the graph seed cannot be derived.
    #[error("client {0} of the key transcript revealed no nonce")]
    MissingNonce(ClientId),
    /// A revealed nonce does not match the commitment in the advertisement.
    #[error("the nonce of client {0} does not match its commitment")]
    BadNonce(ClientId),
    /// The key roster lacks the advertisement of a neighbour listed in the key transcript.
    #[error("the key roster lacks the advertisement of neighbour {0}")]
    MissingAdvertisement(ClientId),
    /// Shares arrived from a client without its signed list of share commitments.
    #[error("no signed share commitments from client {0}")]
    MissingCommitment(ClientId),
    /// A dealer's encrypted share does not match the commitment it signed: the dealer cheated.
    #[error("client {0} dealt a share that does not match its signed commitment")]
    BadDealing(ClientId),
    /// A revealed share does not match the dealer's signed commitment: the holder cheated.
    #[error(
        "client {holder} revealed a share of client {owner}'s secret that its dealer never dealt"
    )]
    BadShare {
        /// The client that revealed the wrong share (the culprit).
        holder: ClientId,
        /// Whose secret the share claims to be of.
        owner: ClientId,
    },
    /// The input vector has the wrong length.
    #[error("input has length {got}, expected {expected}")]
    InputLength {
        /// Configured vector length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// An integer input coordinate is not below `2^bits`.
    #[error("input coordinate {index} is not in Z_2^{bits}")]
    InputOutOfRange {
        /// Offending coordinate.
        index: usize,
        /// Configured bit width.
        bits: u32,
    },
    /// The input was already provided.
    #[error("input already provided")]
    InputAlreadyProvided,
    /// A weighted sum could exceed `2^bits` and wrap.
    #[error("weighted sum may overflow Z_2^{bits}: {reason}")]
    Overflow {
        /// Configured bit width.
        bits: u32,
        /// What exceeded the bound.
        reason: &'static str,
    },
    /// A float input is NaN, which has no place in the clipping range.
    #[error("input coordinate {0} is NaN")]
    NotANumber(usize),
    /// A weighted average was requested but the weights sum to zero.
    #[error("total weight is zero")]
    ZeroWeight,
    /// The session aborted earlier; it accepts nothing more.
    #[error("session already aborted: {0}")]
    Aborted(Box<SecAggError>),
    /// The session already finished.
    #[error("session already finished")]
    Finished,
    /// A primitive reported a failure that its inputs should have excluded.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

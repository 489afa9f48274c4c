//! Errors of the transport edge.

use crate::codec::CodecError;

/// Why a network operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration is unusable (e.g. a message limit over [`crate::codec::DECODE_LIMIT`]).
    #[error("invalid network configuration: {0}")]
    Config(String),
    /// The libp2p transport could not be built.
    #[error("cannot build transport: {0}")]
    Transport(String),
    /// A listen address could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Listen {
        /// The address that failed.
        addr: libp2p::Multiaddr,
        /// What the transport said.
        reason: String,
    },
    /// None of the listen addresses became ready in time.
    #[error("listeners did not come up: {0}")]
    ListenTimeout(String),
    /// A dial failed or the connection was denied.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The message could not be encoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The encoded message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Encoded size.
        size: usize,
        /// Configured `max_message_bytes`.
        limit: usize,
    },
    /// The node's task has stopped (after [`crate::NetHandle::shutdown`] or a panic).
    #[error("the network node has stopped")]
    Closed,
}

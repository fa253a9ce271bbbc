//! Errors, split by whose fault they are (in the manner of rustls).

use gscip_wire::WireError;

/// Everything that can go wrong in the core, by who is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer sent something malformed, forged or inconsistent.
    #[error("peer misbehaved: {0}")]
    Peer(#[from] PeerError),
    /// The policy forbids what was asked (e.g. a discarded flow).
    #[error("refused by policy: {0}")]
    Policy(String),
    /// The local configuration or key material is unusable.
    #[error("configuration error: {0}")]
    Configuration(String),
    /// The caller used the API wrongly (a bug in the caller, not in the network).
    #[error("API misuse: {0}")]
    ApiMisuse(&'static str),
}

/// What a peer did wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    #[error("malformed message: {0}")]
    Malformed(WireError),
    #[error("certificate of {0:?} is not signed by the GMS or has expired")]
    BadCertificate(String),
    #[error("record signature of {0:?} does not verify")]
    BadSignature(String),
    #[error("membership proof of {ge:?} for group {group} does not verify")]
    BadProof { ge: String, group: u16 },
    #[error("negotiation transcript is inconsistent: {0}")]
    Inconsistent(&'static str),
    #[error("packet failed authentication")]
    AuthenticationFailed,
    #[error("replayed packet (counter {0})")]
    Replay(u64),
}

impl From<WireError> for PeerError {
    fn from(e: WireError) -> Self {
        PeerError::Malformed(e)
    }
}

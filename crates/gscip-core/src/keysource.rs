//! Where a GE gets its identity and group keys: the seam between the core and the GMS.
//!
//! The simulator's built-in stand-in, a local key file (the daemon, for now) and the GMS client
//! (issue "gmsd") all implement [`KeySource`]; the engine itself only ever receives the results
//! ([`crate::Engine::new`], [`crate::Engine::set_group_keys`]).

use crate::group::GroupKeyring;
use crate::identity::{SigningIdentity, TrustAnchor};
use crate::Error;

/// A provider of a GE's credentials.
pub trait KeySource {
    /// The GE's signing identity (certificate and key) and the GMS trust anchor.
    fn identity(&mut self) -> Result<(SigningIdentity, TrustAnchor), Error>;
    /// The group keys the GE holds now (current versions and those in their grace period).
    fn group_keys(&mut self) -> Result<GroupKeyring, Error>;
}

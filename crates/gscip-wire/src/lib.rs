//! GSCIP wire formats, in the style of smoltcp's `wire`: zero-copy checked views over byte
//! buffers (`*Packet<T: AsRef<[u8]>>`) next to parsed representations (`*Repr`) with `emit`.
//!
//! - [`ip`]: the IPv4/IPv6/TCP/UDP fields GSCIP reads and rewrites in place, and checksums;
//! - [`cid`]: the connection identifier (CID) of the seeds;
//! - [`dprp`]: the DPRP control messages DDE, RGI, MPIT and CDN and the per-GE records;
//! - [`pccom`]: PCCOM's per-packet data (the trailer after a protected payload);
//! - [`icmp`]: ICMP errors GSCIP reads (quotes of its own messages) and writes (rejects);
//! - [`segment`]: cutting a TCP packet longer than one segment into segments (the GSO path).
//!
//! The formats are specified with byte diagrams in `docs/wire.md`. Nothing here panics on any
//! input: every parser returns [`WireError`] for malformed bytes.
#![forbid(unsafe_code)]

pub mod checksum;
pub mod cid;
pub mod dprp;
pub mod icmp;
pub mod ip;
pub mod pccom;
pub mod segment;

pub use cid::{Cid, L4Proto};

/// Why bytes could not be read as the format asked for. The fault is always the sender's
/// (a peer or whoever built the packet), never the reader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the format says it should.
    Truncated { needed: usize, have: usize },
    /// A field holds a value the format does not allow.
    Malformed(&'static str),
    /// A version this implementation does not speak.
    UnsupportedVersion(u8),
    /// A well-formed packet of a kind GSCIP does not handle (e.g. not TCP/UDP, a fragment).
    Unsupported(&'static str),
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WireError::Truncated { needed, have } => {
                write!(f, "truncated: need {needed} bytes, have {have}")
            }
            WireError::Malformed(what) => write!(f, "malformed: {what}"),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported version {v}"),
            WireError::Unsupported(what) => write!(f, "unsupported: {what}"),
        }
    }
}

impl std::error::Error for WireError {}

pub type Result<T> = core::result::Result<T, WireError>;

pub(crate) fn need(buf: &[u8], len: usize) -> Result<()> {
    if buf.len() < len {
        Err(WireError::Truncated { needed: len, have: buf.len() })
    } else {
        Ok(())
    }
}

/// Big-endian readers that never panic (callers check lengths first with [`need`]).
pub(crate) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

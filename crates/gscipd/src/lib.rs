//! `gscipd`, the GSCIP element daemon: the `gscip-core` engine applied to live packets that
//! netfilter queues to it (NFQUEUE), for every GE kind.
//!
//! * [`config`]: the daemon's TOML configuration;
//! * [`keyfile`]: the local key file, a [`gscip_core::keysource::KeySource`] (the GMS client
//!   replaces it with issue "gmsd");
//! * [`rules`]: the daemon's own netfilter chain, installed and removed atomically with
//!   `iptables-restore`;
//! * [`dataplane`]: the NFQUEUE loop and raw-socket injection;
//! * [`nfqueue`]: NFQUEUE over our own netlink socket (batched receive and verdicts);
//! * [`nflog`]: the copies of the MPITs a GEN lets pass in the kernel, from an NFLOG group over
//!   the same netlink code;
//! * [`link`]: layer-2 injection for a GEA (a bridge without an address);
//! * [`control`]: the local control socket behind `gscip status`.
//!
//! See `docs/gscipd.md`. The only `unsafe` code: building a `sockaddr_ll` in [`link`], the
//! `poll(2)` call of the loop in [`dataplane`], and the netlink system calls of [`nfqueue`] (which
//! [`nflog`] uses too).
#![deny(unsafe_code)]

pub mod config;
pub mod control;
pub mod dataplane;
pub mod gms;
pub mod keyfile;
pub mod link;
pub mod nflog;
pub mod nfqueue;
pub mod rules;

/// Packets the daemon sends itself carry this netfilter mark, so its own rules let them pass
/// instead of queueing them again. (It shares no bit with [`FAST_MASK`].)
pub const OWN_MARK: u32 = 0x4000_0047;

/// Fast-path bits of the packet and conntrack marks: a flow decided "pass" (relay or
/// plaintext) or "drop" no longer goes to userspace. Other bits of the marks are kept.
/// The mask also covers [`FAST_GENERATION_MASK`]: the rules honour only marks of the current
/// generation, so a change of keys or certificate sends every fast-path flow back to the
/// engine (the rules are replaced, conntrack is left alone).
pub const FAST_MASK: u32 = 0x3FF0_0000;
pub const FAST_PASS: u32 = 0x0010_0000;
pub const FAST_DROP: u32 = 0x0020_0000;
pub const FAST_GENERATION_SHIFT: u32 = 22;
pub const FAST_GENERATION_MASK: u32 = 0x3FC0_0000;

/// A flow whose TCP packets the kernel cuts into segments before queueing them (the per-packet
/// queue instead of the GSO queue): the engine asked for it ([`gscip_core::Verdict::Segment`]),
/// the packet came back through the hook with this bit, which the rules save in the flow's
/// conntrack mark.
pub const SEGMENT_MARK: u32 = 0x0008_0000;

/// A sealed packet of a flow that goes back to units ([`gscip_core::Verdict::Unsegment`]): it
/// comes back through the hook with this bit, and the rules clear [`SEGMENT_MARK`] in the
/// flow's conntrack mark and let it pass (it is sealed already).
pub const UNITS_MARK: u32 = 0x0004_0000;

/// The fast-path mark bits of a decision in a generation.
pub fn fast_bits(decision: u32, generation: u8) -> u32 {
    decision | (u32::from(generation) << FAST_GENERATION_SHIFT)
}
const _: () = assert!(OWN_MARK & FAST_MASK == 0);
const _: () = assert!(SEGMENT_MARK & (FAST_MASK | OWN_MARK) == 0);
const _: () = assert!(UNITS_MARK & (FAST_MASK | OWN_MARK | SEGMENT_MARK) == 0);

/// What can stop the daemon, by whose fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error("configuration: {0}")]
    Configuration(String),
    #[error("{0}")]
    Core(#[from] gscip_core::Error),
    #[error("netfilter: {0}")]
    Netfilter(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

//! The GSCIP protocol core, sans-IO: no sockets, threads or clock reads. Time and randomness
//! are passed in, so the Linux daemon and the simulator drive exactly the same code.
//!
//! Where each concept of the seeds lives:
//!
//! | concept | type |
//! |---|---|
//! | CID (connection identifier) | [`Cid`] (from `gscip-wire`) |
//! | PIT (process information table) | [`pit::Pit`], [`pit::PitEntry`] |
//! | DDE, RGI, MPIT, CDN | [`gscip_wire::dprp::Body`], driven by [`engine::Engine`] |
//! | GE information | [`gscip_wire::dprp::CertificateRepr`], [`identity`] |
//! | path key (pairwise GE key that spares signature checks) | [`pathkey::PathKeys`] |
//! | group, group key (GK) | [`group::GroupId`], [`group::GroupKey`], [`group::GroupKeyring`] |
//! | the policy of SPEC section 3 | [`policy::decide`] |
//! | PCCOM | [`pccom::PccomSession`] |
//! | key source (the GMS seam) | [`keysource::KeySource`] |
//!
//! NRT, VAT, ACT (NAT-f) and CIT (Mobile PPC) arrive with their issues; the DDE's extension
//! list and the engine's restart mechanism are the seams they plug into (`docs/dprp.md`).
#![forbid(unsafe_code)]

pub mod engine;
pub mod error;
pub mod group;
pub mod identity;
pub mod keysource;
pub mod pathkey;
pub mod pccom;
pub mod pit;
pub mod policy;
pub mod time;
pub mod transcript;
pub mod unit;

pub use engine::{
    Counters, DdePass, DropReason, Engine, Event, GeConfig, PacketContext, Transmit, TransmitKind, Verdict,
};
pub use error::{Error, PeerError};
pub use gscip_wire::dprp::{GeKind, Mode, Side};
pub use gscip_wire::{Cid, L4Proto};
pub use time::{Micros, Timestamp};

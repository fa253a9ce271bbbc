//! The PIT (Process Information Table): one entry per flow, keyed by CID, covering both
//! directions, holding what this GE does with the flow and the per-flow key material.

use crate::group::GroupId;
use crate::pccom::PccomSession;
use crate::policy::FlowAction;
use crate::time::{Micros, Timestamp};
use crate::unit::{Reassembly, SealWatch};
use gscip_wire::Cid;
use std::collections::HashMap;

/// Which way a packet travels relative to the entry's CID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Source to destination of the CID the negotiation was for.
    Forward,
    Reverse,
}

/// Provisional after MPIT, final after CDN (both forward packets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryState {
    Provisional,
    Final,
}

/// Per-entry counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryCounters {
    pub packets: u64,
    pub bytes: u64,
    pub sealed: u64,
    pub opened: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub discarded: u64,
}

/// TCP close tracking: the entry goes once both FINs were seen or on RST (after a linger so
/// the last ACKs still pass).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpClose {
    pub fin_forward: bool,
    pub fin_reverse: bool,
    pub reset: bool,
}

impl TcpClose {
    pub fn closed(&self) -> bool {
        self.reset || (self.fin_forward && self.fin_reverse)
    }
}

/// What the negotiation decided, for reports and `gscip status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionSummary {
    /// GE names in path order (source to destination).
    pub path: Vec<String>,
    pub actions: Vec<FlowAction>,
    pub group: Option<GroupId>,
    pub encrypted_by: Option<String>,
    pub decrypted_by: Option<String>,
    /// True when the negotiation could not finish and the "no pair" fallback applies.
    pub fallback: bool,
}

/// One flow.
#[derive(Debug)]
pub struct PitEntry {
    /// The flow in the direction of the packet that started the negotiation.
    pub cid: Cid,
    /// This GE's action for the forward direction.
    pub action: FlowAction,
    pub group: Option<GroupId>,
    pub key_version: Option<u32>,
    pub session: Option<PccomSession>,
    pub state: EntryState,
    /// While provisional: whether no CDN could change what the kernel fast path would do with
    /// the flow's packets, so that it may take the flow over before the CDN
    /// ([`crate::Engine::fast_path`]).
    pub settled_for_kernel: bool,
    pub negotiation: [u8; 16],
    pub idle_timeout: Micros,
    pub created: Timestamp,
    pub last_seen: Timestamp,
    /// Set when the TCP connection closed: the entry goes at this time.
    pub remove_at: Option<Timestamp>,
    pub tcp: TcpClose,
    pub counters: EntryCounters,
    pub summary: DecisionSummary,
    /// The direction this GE seals: what it has sealed, and whether it cuts units first.
    pub watch: SealWatch,
    /// The direction this GE opens: pieces of cut units waiting for the rest of their unit.
    pub reassembly: Reassembly,
}

impl PitEntry {
    /// The action for a packet going `dir`.
    pub fn action_for(&self, dir: Direction) -> FlowAction {
        match dir {
            Direction::Forward => self.action,
            Direction::Reverse => self.action.reversed(),
        }
    }
}

/// The table. Both directions of a flow find the same entry with one lookup.
#[derive(Debug, Default)]
pub struct Pit {
    entries: HashMap<Cid, PitEntry>,
}

impl Pit {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn get(&self, cid: &Cid) -> Option<(&PitEntry, Direction)> {
        let e = self.entries.get(&cid.canonical())?;
        Some((e, if e.cid == *cid { Direction::Forward } else { Direction::Reverse }))
    }
    pub fn get_mut(&mut self, cid: &Cid) -> Option<(&mut PitEntry, Direction)> {
        let e = self.entries.get_mut(&cid.canonical())?;
        let dir = if e.cid == *cid { Direction::Forward } else { Direction::Reverse };
        Some((e, dir))
    }
    /// Inserts or replaces the entry for the flow; returns the one replaced.
    pub fn insert(&mut self, entry: PitEntry) -> Option<PitEntry> {
        self.entries.insert(entry.cid.canonical(), entry)
    }
    pub fn remove(&mut self, cid: &Cid) -> Option<PitEntry> {
        self.entries.remove(&cid.canonical())
    }
    pub fn iter(&self) -> impl Iterator<Item = &PitEntry> {
        self.entries.values()
    }
    /// Removes every entry for which `keep` is false; returns them.
    pub fn drain_where(&mut self, mut remove: impl FnMut(&PitEntry) -> bool) -> Vec<PitEntry> {
        let keys: Vec<Cid> = self.entries.iter().filter(|(_, e)| remove(e)).map(|(k, _)| *k).collect();
        keys.into_iter().filter_map(|k| self.entries.remove(&k)).collect()
    }
}

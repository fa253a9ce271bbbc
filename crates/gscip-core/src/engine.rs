//! The DPRP engine of one GE: it meets packets, keeps the PIT, negotiates with DDE, RGI, MPIT
//! and CDN, holds packets while it does, and applies PCCOM.
//!
//! Sans-IO in the manner of quinn-proto: [`Engine::handle_packet`] and
//! [`Engine::handle_timeout`] take the time as an argument; packets the engine wants sent come
//! out of [`Engine::poll_transmit`], the next timer out of [`Engine::poll_timeout`], and what
//! happened out of [`Engine::poll_event`]. Randomness comes from the generator passed to
//! [`Engine::new`]. The protocol is described in `docs/dprp.md`.

use crate::error::{Error, PeerError};
use crate::group::{GroupId, GroupKeyring};
use crate::identity::{verify_signature, SigningIdentity, TrustAnchor};
use crate::pathkey::{PathKeys, PendingPathKey, CDN_MAC_CONTEXT};
use crate::pccom::{derive_flow_keys, AeadAlgorithm, Arrival, PccomSession, SealError};
use crate::pit::{DecisionSummary, Direction, EntryState, Pit, PitEntry};
use crate::policy::{decide, Decision, FlowAction, Outcome, PathGe};
use crate::time::{Micros, Timestamp};
use crate::transcript::{self, AuthenticatedBy, Chain, RecordParams, VerifiedPath};
use crate::unit::{Piece, ReassemblyLimits};
use aws_lc_rs::agreement;
use gscip_wire::dprp::{
    encode_path_hint, is_dprp_ports, parse_ephemeral_key, parse_path_hint, Body, CdnStatus, Extension, GeKind,
    GeRecordRepr, HeaderRepr, MessageRepr, Mode, RecordMac, Side, DPRP_PORT, MAX_HINT_NAMES, NONCE_LEN,
};
use gscip_wire::icmp::{emit_error, IcmpErrorKind, IcmpErrorRepr};
use gscip_wire::ip::{tcp_flags, Datagram, DatagramRepr};
use gscip_wire::pccom::TRAILER_LEN;
use gscip_wire::{Cid, L4Proto, WireError};
use ipnet::IpNet;
use rand_core::RngCore;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;
use zeroize::Zeroizing;

pub use gscip_wire::dprp::{FLAG_PATH_KEYS, FLAG_RESTART};

/// How a GE is set up, apart from its identity and keys (which the GMS decides).
#[derive(Debug, Clone)]
pub struct GeConfig {
    /// Address ranges this GE protects: its own addresses for a GES, its servers' for a GEA,
    /// its inside subnets and the networks routed behind them for a GEN.
    pub protected: Vec<IpNet>,
    /// The GE host's own addresses.
    pub local_addrs: Vec<IpAddr>,
    /// Preferred AEAD, and the set it accepts (bits of `gscip_wire::dprp::aead_bits`).
    pub aead: AeadAlgorithm,
    pub aead_supported: u8,
    /// Idle timeout this GE proposes for PIT entries (the negotiation takes the smallest).
    pub idle_timeout: Micros,
    /// How long an entry stays after its TCP connection closed.
    pub close_linger: Micros,
    /// First retransmission timeout of DPRP messages; doubles on each retry.
    pub dprp_rto: Micros,
    /// Attempts before a negotiation is given up (and the "no pair" outcome applies).
    pub dprp_max_attempts: u32,
    /// How long to wait for a GE further inside (or nearer the source) to answer before
    /// concluding there is none.
    pub probe_timeout: Micros,
    /// How long what was learned about GEs beyond an address is kept.
    pub ge_cache_ttl: Micros,
    /// Bounds of the hold queue.
    pub hold_per_flow: usize,
    pub hold_total: usize,
    /// Bytes of held packets in the whole GE (a held GSO packet can be 64 KiB).
    pub hold_bytes_total: usize,
    /// Bound on concurrent negotiations this GE takes part in.
    pub max_negotiations: usize,
    /// Negotiations this GE has started (DDE sent, not yet ended) at most; newer ones wait,
    /// their packets held, and start as others end. A burst of new flows then goes at the
    /// pace the GEs on the path answer, instead of every DDE timing out in a retransmission
    /// storm.
    pub negotiation_window: usize,
    /// Ephemeral X25519 key pairs made ahead of need, while idle ([`Engine::prepare`]): a
    /// negotiation takes one instead of waiting for its generation. Each pair serves one
    /// negotiation only; 0 makes every pair on demand.
    pub ephemeral_keys_ahead: usize,
    /// The longest packet the data plane can give back (a sealed packet longer than this is
    /// not made; NFQUEUE's limit is 65,531).
    pub max_packet_len: usize,
    /// Bounds on the pieces of cut units held while the rest of their unit comes.
    pub reassembly: ReassemblyLimits,
    /// How long a path key made with another GE serves (`docs/dprp.md` section 11): while it
    /// does, the two authenticate their records to each other with an HMAC instead of an
    /// Ed25519 verification. Zero: no path keys, every record is verified by its signature.
    pub path_key_lifetime: Micros,
    /// Other GEs this GE keeps path keys with, at most.
    pub path_key_peers: usize,
    /// The caller can let DDEs pass this GE unseen (a GEN's kernel rule): the engine then names
    /// the destinations it would only pass DDEs toward ([`Engine::poll_dde_pass`]), joins their
    /// negotiations at the RGI, and answers for a DDE it never saw when the destination's
    /// "port unreachable" quotes it (`docs/dprp.md` section 13). Off by default.
    pub kernel_dde_pass: bool,
    /// With `kernel_dde_pass`, the caller's kernel also lets MPITs toward those destinations pass
    /// at once and hands the engine a copy of each ([`Engine::handle_passed_copy`]): the MPIT
    /// no longer waits for this GE on its way to the end GE (`docs/dprp.md` section 15). Off by
    /// default.
    pub kernel_mpit_pass: bool,
    /// The longest a GE stays awake for a new flow ([`Engine::stay_awake_until`]): after each
    /// DPRP step, and each packet of a flow decided a moment ago, the caller may keep polling
    /// for packets instead of sleeping, for twice the DPRP round trip this GE measured last,
    /// when that is no longer than this (`docs/dprp.md` section 16). Zero (the default): never.
    pub stay_awake: Micros,
}

impl Default for GeConfig {
    fn default() -> Self {
        GeConfig {
            protected: Vec::new(),
            local_addrs: Vec::new(),
            aead: AeadAlgorithm::Aes256Gcm,
            aead_supported: AeadAlgorithm::Aes256Gcm.bit() | AeadAlgorithm::ChaCha20Poly1305.bit(),
            idle_timeout: Micros::from_secs(300),
            close_linger: Micros::from_secs(10),
            dprp_rto: Micros::from_millis(50),
            dprp_max_attempts: 5,
            probe_timeout: Micros::from_millis(25),
            ge_cache_ttl: Micros::from_secs(60),
            hold_per_flow: 64,
            hold_total: 16_384,
            hold_bytes_total: 64 << 20,
            max_negotiations: 65_536,
            negotiation_window: 128,
            ephemeral_keys_ahead: 64,
            max_packet_len: usize::from(u16::MAX),
            reassembly: ReassemblyLimits::default(),
            path_key_lifetime: Micros::from_secs(60),
            path_key_peers: 4096,
            kernel_dde_pass: false,
            kernel_mpit_pass: false,
            stay_awake: Micros(0),
        }
    }
}

/// What to do with the packet just handed to [`Engine::handle_packet`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it continue (the buffer may have been changed in place: sealed or opened).
    Accept,
    /// Drop it.
    Drop(DropReason),
    /// The engine took the packet (the buffer is now empty); it comes back out of
    /// [`Engine::poll_transmit`] when the negotiation ends.
    Held,
    /// A DPRP message the engine absorbed (it may have sent others in its place).
    Consumed,
    /// Give the packet back unchanged to be cut into segments, and hand the flow's packets over
    /// one segment at a time from now on (only for packets with
    /// [`PacketContext::can_segment`]). The sealing end asks for this once a flow it sealed
    /// cut units for retransmits (a lost segment lost its whole unit), and for a packet too
    /// long to seal whole.
    Segment,
    /// Let it continue, sealed in place (as [`Verdict::Accept`]), and hand the flow's packets
    /// over whole again from now on: undoes [`Verdict::Segment`] once the flow's segments have
    /// crossed a clean path for long enough (`unit::SealWatch`). Only for packets without
    /// [`PacketContext::can_segment`]; given for each of the flow's packets until one comes
    /// whole.
    Unsegment,
}

/// What the data plane knows of a packet besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketContext {
    /// Comes back on the `Released` or `Dropped` transmit if the packet is held.
    pub tag: u64,
    /// The packet holds several TCP segments that the platform cuts after the verdict (GSO).
    pub gso: bool,
    /// The platform can cut the packet into segments and hand them over one by one instead
    /// ([`Verdict::Segment`]).
    pub can_segment: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The policy discards this flow.
    Discarded,
    AuthenticationFailed,
    Replay,
    /// Not a packet GSCIP can read.
    Malformed,
    /// A protocol GSCIP does not protect, crossing a closed boundary.
    Unsupported,
    /// The hold queue is full.
    HoldOverflow,
    /// A forged or stale DPRP message.
    BadControl,
    /// Sealing failed: the flow's counter space is used up (the flow renegotiates).
    SealFailed,
    /// Too long to seal (the trailer would take it past the data plane's limit).
    TooLong,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Discarded => "discarded by policy",
            DropReason::AuthenticationFailed => "failed authentication",
            DropReason::Replay => "replayed",
            DropReason::Malformed => "malformed",
            DropReason::Unsupported => "unsupported protocol at a closed boundary",
            DropReason::HoldOverflow => "hold queue full",
            DropReason::BadControl => "forged or stale DPRP message",
            DropReason::SealFailed => "could not seal",
            DropReason::TooLong => "too long to seal",
        }
    }
}

/// What a kernel fast path may do with the rest of a flow ([`Engine::fast_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPath {
    Pass,
    Drop,
}

/// What the kernel fast path does with the packets of a flow whose action is `action`, if it
/// can do it alone (no cryptography).
fn fast_path_of(action: FlowAction) -> Option<FastPath> {
    match action {
        FlowAction::Relay | FlowAction::Plain => Some(FastPath::Pass),
        FlowAction::Discard => Some(FastPath::Drop),
        FlowAction::Encrypt | FlowAction::Decrypt => None,
    }
}

/// Why a packet is coming out of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransmitKind {
    /// A DPRP message.
    Control,
    /// A held packet released after its negotiation (already sealed/opened as needed).
    Released,
    /// An ICMP error telling an application inside that its flow is discarded.
    Reject,
    /// A held packet that will not go out (its flow was discarded, its negotiation expired):
    /// the caller releases whatever it kept for `tag` (e.g. drops the queued kernel packet).
    /// `packet` is empty.
    Dropped,
}

/// A packet to send. `to_local` packets go up this host's own stack (a GES delivering a
/// released inbound packet or an ICMP error to a local application); the others are routed
/// from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub packet: Vec<u8>,
    pub to_local: bool,
    pub kind: TransmitKind,
    /// For `Released` and `Dropped`: the tag the packet was handed in with
    /// ([`Engine::handle_packet_tagged`]); 0 otherwise.
    pub tag: u64,
    /// Nothing on the data path waits for this packet (the end GE's CDN): the caller may send it
    /// after the verdicts of the packets it has in hand, so that a held packet released by the
    /// same MPIT is not delayed by it. Every other packet goes out in order, at once.
    pub deferrable: bool,
    /// For a held packet `Released` after its flow's negotiation: the kernel fast path the flow
    /// may take from now on ([`Engine::fast_path`]), for a caller that hands the flow over with
    /// this packet. `None` for everything else (pieces of units included).
    pub fast_path: Option<FastPath>,
}

/// A change to the destinations toward which this GE lets DDEs pass unseen
/// ([`GeConfig::kernel_dde_pass`], [`Engine::poll_dde_pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DdePass {
    /// The DDE's destination (its CID's destination address).
    pub addr: IpAddr,
    /// `true`: DDEs toward `addr` may pass unseen for `GeConfig::ge_cache_ttl` from now (the
    /// engine renews it while it keeps meeting negotiations toward `addr`); `false`: they must
    /// come to the engine again, at once.
    pub pass: bool,
}

/// Why a PIT entry went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalReason {
    Idle,
    TcpClosed,
    KeyChange,
    Replaced,
}

/// Things that happened, for logs, `gscip status` and the simulator's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A PIT entry was made (or replaced) for a flow.
    FlowDecided {
        cid: Cid,
        action: FlowAction,
        summary: DecisionSummary,
        provisional: bool,
    },
    FlowRemoved {
        cid: Cid,
        reason: RemovalReason,
    },
    /// A negotiation could not finish; the "no pair" fallback applies.
    NegotiationFailed {
        cid: Cid,
        reason: String,
    },
    /// A peer sent something this GE rejected.
    PeerMisbehaved {
        cid: Option<Cid>,
        error: PeerError,
    },
}

/// Engine-wide counters (`gscip status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets: u64,
    pub sealed: u64,
    pub opened: u64,
    pub held: u64,
    pub released: u64,
    pub hold_overflow: u64,
    pub hold_expired: u64,
    pub discarded: u64,
    pub rejects_sent: u64,
    pub auth_failures: u64,
    pub replays: u64,
    pub malformed: u64,
    pub bad_control: u64,
    pub control_sent: u64,
    pub negotiations_started: u64,
    pub negotiations_completed: u64,
    pub negotiations_failed: u64,
    pub restarts_requested: u64,
    pub restarts_answered: u64,
    /// Pieces of cut units held until the rest of their unit came.
    pub pieces_held: u64,
    /// Units opened from pieces.
    pub units_reassembled: u64,
    /// Held pieces dropped: their unit did not complete in time, did not fit, or failed.
    pub pieces_dropped: u64,
    /// Units put together from pieces that did not authenticate: pieces of two sealings at the
    /// same sequence numbers (a unit sent again after a loss, whose own piece there was lost
    /// too) or forged pieces. Expected on a lossy path; not counted in `auth_failures`, which
    /// counts packets that arrived whole.
    pub units_failed: u64,
    /// Times a flow switched to sealing segment by segment ([`Verdict::Segment`]).
    pub flows_segmented: u64,
    /// Times a flow sealed segment by segment went back to units (its segments crossed a clean
    /// path for long enough: `unit::SealWatch`).
    pub flows_back_to_units: u64,
    /// Other GEs' records and CDNs authenticated by their Ed25519 signature.
    pub signatures_verified: u64,
    /// Other GEs' records and CDNs authenticated by a path-key MAC instead.
    pub macs_verified: u64,
    /// Path keys made with other GEs.
    pub path_keys_derived: u64,
    /// Negotiations this GE started with [`FLAG_PATH_KEYS`]: the path's GEs make their path
    /// keys from these.
    pub negotiations_marked: u64,
    /// Pair sessions made with an agreement computed ahead, while waiting for the MPIT (the
    /// initiator's ephemeral key announced in its DDE).
    pub agreements_ahead_used: u64,
    /// Negotiations this GE joined at the RGI, without having met their DDE (it passed in the
    /// kernel: [`GeConfig::kernel_dde_pass`]; or took another route).
    pub negotiations_joined_at_rgi: u64,
    /// Negotiations this GE answered as end GE from a DDE quoted in the destination's "port
    /// unreachable", having let that DDE pass unseen.
    pub ddes_recovered_from_icmp: u64,
    /// MPITs the kernel let pass that this GE took part in from their copies
    /// ([`GeConfig::kernel_mpit_pass`]).
    pub mpits_copied: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct NegKey {
    cid: Cid,
    nonce: [u8; NONCE_LEN],
}

/// A CDN "complete" the end GE owes: what it signs and whom it MACs it for.
#[derive(Debug)]
struct DueCdn {
    header: HeaderRepr,
    confirmation: Chain,
    /// The other GEs of the path (the MPIT's records' authors).
    peers: Vec<String>,
    /// The initiator (the last record's author), for whom the CDN announces a key.
    initiator: String,
    at: Timestamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Negotiation(NegKey),
    Restart(Cid),
    RestartProbe(Cid),
    Pit(Cid),
    /// A flow's held pieces of cut units may have waited too long.
    Pieces(Cid),
}

/// Where a negotiation stands at this GE: which message it waits for.
#[allow(clippy::enum_variant_names)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    AwaitRgi,
    AwaitMpit,
    AwaitCdn,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndRole {
    /// This GE answers the DDE itself.
    End,
    /// A GE may lie further on; wait a little for it, then answer.
    Probe,
    NotEnd,
}

struct Held {
    packet: Vec<u8>,
    to_local: bool,
    tag: u64,
}

struct Negotiation {
    header: HeaderRepr,
    initiator: bool,
    stage: Stage,
    end: EndRole,
    side: Side,
    nonce: [u8; NONCE_LEN],
    eph_secret: Zeroizing<[u8; 32]>,
    eph_public: [u8; 32],
    /// The same private key, parsed once (aws-lc computes the public key again on every parse).
    eph_key: Option<agreement::PrivateKey>,
    attempts: u32,
    deadline: Timestamp,
    held: VecDeque<Held>,
    /// The last message this GE originated for the negotiation (for retransmission).
    last_sent: Option<Vec<u8>>,
    /// After MPIT: what the CDN must confirm, and who signs it.
    confirm: Option<Chain>,
    /// The end GE: its name, public key and certificate hash.
    end_signer: Option<(String, [u8; 32], Chain)>,
    /// Names of GEs expected to verify this GE's record (the DDE's path hint).
    hint: Vec<String>,
    /// Hash of the record this GE put in the negotiation.
    own_record: Option<Chain>,
    /// The DDE carried a critical extension this GE does not know: it must not be the end.
    cannot_answer: bool,
    /// When this GE's part of the negotiation went out: the initiator's DDE (first sent), the
    /// RGI from the end GE or through a GE in the middle (for the DPRP round trip it measures).
    sent_at: Timestamp,
    /// The other end's ephemeral key, announced before its record came: at the end GE the
    /// initiator's, from its DDE (section 12); at the initiator the end GE's, from the CDN of
    /// the last negotiation toward the same destination (section 14). Unauthenticated until
    /// the record carrying it is verified.
    ahead_with: Option<[u8; 32]>,
    /// The agreement of this GE's ephemeral key with `ahead_with`, computed ahead.
    agreement_ahead: Option<Zeroizing<[u8; 32]>>,
}

struct RestartWait {
    cid: Cid,
    deadline: Timestamp,
    held: VecDeque<Held>,
}

#[derive(Debug, Clone, Copy)]
struct GeCacheEntry {
    has_ge: bool,
    expires: Timestamp,
}

/// A destination whose DDEs this GE let the caller pass unseen ([`DdePass`]).
#[derive(Debug, Clone, Copy)]
struct DdePassState {
    /// When the pass was last announced (renewed).
    announced: Timestamp,
    /// Not withdrawn since.
    live: bool,
}

/// The protocol engine of one GE.
pub struct Engine {
    cfg: GeConfig,
    kind: GeKind,
    mode: Mode,
    identity: SigningIdentity,
    trust: TrustAnchor,
    keys: GroupKeyring,
    rng: Box<dyn RngCore + Send>,
    pit: Pit,
    negotiations: HashMap<NegKey, Negotiation>,
    by_flow: HashMap<Cid, NegKey>,
    /// Initiator negotiations started (DDE sent) and not ended: at most
    /// `cfg.negotiation_window`.
    started: usize,
    /// Initiator negotiations waiting for room in the window, oldest first.
    waiting: VecDeque<NegKey>,
    restarts: HashMap<Cid, RestartWait>,
    restart_probes: HashMap<Cid, (Cid, Timestamp)>,
    restart_answered: HashMap<Cid, Timestamp>,
    ge_cache: HashMap<IpAddr, GeCacheEntry>,
    verified_certs: HashSet<Chain>,
    /// Pairwise keys with other GEs (`docs/dprp.md` section 11).
    path_keys: PathKeys,
    /// Path keys to make when idle ([`Engine::prepare`]), at most one per peer.
    pending_path_keys: VecDeque<PendingPathKey>,
    /// Negotiations whose pair agreement can be computed ahead ([`Engine::agree_ahead`]).
    pending_agreements: VecDeque<NegKey>,
    /// CDNs this GE, the end GE, owes and has not made yet: made (signed) when the caller next
    /// asks for everything ([`Engine::poll_transmit`]), not while the flow's first packet waits
    /// behind the MPIT ([`Engine::poll_urgent_transmit`]).
    due_cdns: VecDeque<DueCdn>,
    /// Hash of this GE's own certificate.
    own_certificate: Chain,
    /// Per destination: the GEs on the last path this GE negotiated toward it as initiator
    /// (the DDE's path hint).
    path_hints: HashMap<IpAddr, Vec<String>>,
    /// Per flow source: the GEs on the last path this GE verified, in the middle, for a flow from
    /// there: whom to MAC its record for when it joins a negotiation at the RGI (no DDE, so no
    /// path hint).
    source_hints: HashMap<IpAddr, Vec<String>>,
    /// End GE: the ephemeral keys it announced in its CDNs, each for its initiator's next
    /// negotiation toward it (section 14), with when; used once, dropped after `ge_cache_ttl`.
    announced_keys: HashMap<[u8; 32], (EphemeralKey, Timestamp)>,
    /// End GE: per initiator, the key announced to it and not used yet (announced again in
    /// its next CDNs rather than a new one: one key per initiator at a time).
    announced_to: HashMap<String, [u8; 32]>,
    /// Initiator: per destination, the key the end GE announced in the last CDN, with when.
    end_keys: HashMap<IpAddr, ([u8; 32], Timestamp)>,
    /// Destinations whose DDEs the caller may pass unseen ([`GeConfig::kernel_dde_pass`]).
    dde_passes: HashMap<IpAddr, DdePassState>,
    /// Changes to `dde_passes` the caller has not taken yet ([`Engine::poll_dde_pass`]).
    dde_pass_changes: VecDeque<DdePass>,
    /// Destinations toward which a negotiation marked [`FLAG_PATH_KEYS`] is in flight (at
    /// most one each).
    marked_toward: HashSet<IpAddr>,
    /// Destinations whose next negotiation is to be marked: a GE on the last path checked by
    /// signature although this GE held a key with it from before (the other GE lost its keys).
    path_keys_wanted: HashSet<IpAddr>,
    timers: BinaryHeap<Reverse<(Timestamp, TimerKey)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    held_total: usize,
    /// Bytes of the packets held (`cfg.hold_bytes_total` at most).
    held_bytes: usize,
    counters: Counters,
    /// The tag of the packet being handled (see `handle_packet_tagged`).
    current_tag: u64,
    /// Ephemeral key pairs made ahead of need (`cfg.ephemeral_keys_ahead` at most).
    ephemeral_ahead: Vec<EphemeralKey>,
    /// Cut units: buffers and scratch space reused from piece to piece.
    units: UnitBuffers,
    /// The DPRP round trip as this GE met it last (smoothed): from its DDE to the RGI as
    /// initiator, from the RGI to the MPIT otherwise. It sets how long the GE stays awake.
    dprp_round_trip: Option<Micros>,
    /// Until when packets of a new flow are expected soon ([`Engine::stay_awake_until`]).
    awake_until: Timestamp,
}

/// What the engine reuses for pieces of cut units, so that holding and opening them allocates
/// nothing once the buffers have grown.
#[derive(Default)]
struct UnitBuffers {
    /// Packet buffers to copy held pieces into ([`Engine::recycle`] refills it).
    pool: Vec<Vec<u8>>,
    /// A complete unit's pieces, and their packets while it is opened.
    taken: Vec<Piece>,
    packets: Vec<Vec<u8>>,
    /// The unit's ciphertext, gathered.
    scratch: Vec<u8>,
    /// Bytes of pieces held in every flow.
    held_bytes: usize,
}

impl UnitBuffers {
    /// A held piece dropped for good (timed out, over a bound, its entry gone): it no longer
    /// counts as held, and it is counted as dropped.
    fn discard(&mut self, transmits: &mut VecDeque<Transmit>, counters: &mut Counters, p: Piece) {
        self.held_bytes -= p.packet.len();
        counters.pieces_dropped += 1;
        drop_piece(transmits, &mut self.pool, p);
    }
}

/// Buffers kept for pieces at most (64 KiB each at most).
const UNIT_POOL_MAX: usize = 256;

/// An ephemeral X25519 key pair for one negotiation; the secret is zeroized on drop.
struct EphemeralKey {
    secret: Zeroizing<[u8; 32]>,
    public: [u8; 32],
    key: Option<agreement::PrivateKey>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.identity.name())
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .field("pit_entries", &self.pit.len())
            .field("negotiations", &self.negotiations.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// A flow toward a multicast or broadcast address, or from the unspecified address: there is no
/// single host at the other end, so no pair of GEs can protect it.
fn has_no_single_peer(cid: &Cid) -> bool {
    let group = |a: IpAddr| match a {
        IpAddr::V4(v4) => v4.is_multicast() || v4.is_broadcast(),
        IpAddr::V6(v6) => v6.is_multicast(),
    };
    group(cid.dst) || group(cid.src) || cid.src.is_unspecified()
}

/// Path keys waiting to be made, at most.
const PENDING_PATH_KEYS_MAX: usize = 256;
/// A flow's packets keep its GEs awake ([`Engine::stay_awake_until`]) while the flow is younger
/// than this many stay-awake windows: its first round trips.
const YOUNG_FLOW_WINDOWS: u64 = 4;

/// Most agreements waiting to be computed ahead ([`Engine::agree_ahead`]); beyond, the MPIT
/// computes its own.
const PENDING_AGREEMENTS_MAX: usize = 256;
/// Destinations whose last path an initiator remembers for its path hints, at most.
const PATH_HINTS_MAX: usize = 4096;
/// Destinations whose DDEs pass unseen, and changes not yet taken, at most (the kernel's own
/// list is smaller: xt_recent keeps 100 by default, dropping the oldest).
const DDE_PASSES_MAX: usize = 4096;
/// Keys an end GE keeps announced for initiators' next negotiations, and destinations whose
/// announced key an initiator keeps, at most.
const ANNOUNCED_KEYS_MAX: usize = 4096;

fn fill_random(rng: &mut dyn RngCore, out: &mut [u8]) {
    rng.fill_bytes(out);
}

fn new_ephemeral_key(rng: &mut dyn RngCore) -> EphemeralKey {
    let mut secret = Zeroizing::new([0u8; 32]);
    fill_random(rng, &mut secret[..]);
    let mut public = [0u8; 32];
    let key = agreement::PrivateKey::from_private_key(&agreement::X25519, &secret[..]).ok();
    if let Some(p) = key.as_ref().and_then(|k| k.compute_public_key().ok()) {
        public.copy_from_slice(p.as_ref());
    }
    EphemeralKey { secret, public, key }
}

impl Engine {
    /// Creates the engine of the GE named in `identity`'s certificate (which also gives its
    /// kind and mode).
    pub fn new(
        cfg: GeConfig,
        identity: SigningIdentity,
        trust: TrustAnchor,
        keys: GroupKeyring,
        rng: Box<dyn RngCore + Send>,
    ) -> Result<Engine, Error> {
        if cfg.protected.is_empty() && cfg.local_addrs.is_empty() {
            return Err(Error::Configuration(format!(
                "GE {:?} protects nothing: give it local addresses or protected prefixes",
                identity.name()
            )));
        }
        if cfg.hold_per_flow == 0 || cfg.hold_total == 0 || cfg.dprp_max_attempts == 0 || cfg.negotiation_window == 0 {
            return Err(Error::Configuration(
                "hold queue sizes, DPRP attempts and the negotiation window must be at least 1".into(),
            ));
        }
        if cfg.aead_supported & AeadAlgorithm::Aes256Gcm.bit() == 0 {
            return Err(Error::Configuration("every GE must accept AES-256-GCM".into()));
        }
        let cert = identity.certificate();
        let own_certificate = transcript::certificate_hash(cert);
        let path_keys = PathKeys::new(cfg.path_key_lifetime, cfg.path_key_peers);
        Ok(Engine {
            kind: cert.kind,
            mode: cert.mode,
            cfg,
            identity,
            trust,
            keys,
            rng,
            pit: Pit::default(),
            negotiations: HashMap::new(),
            by_flow: HashMap::new(),
            started: 0,
            waiting: VecDeque::new(),
            restarts: HashMap::new(),
            restart_probes: HashMap::new(),
            restart_answered: HashMap::new(),
            ge_cache: HashMap::new(),
            verified_certs: HashSet::new(),
            path_keys,
            pending_path_keys: VecDeque::new(),
            pending_agreements: VecDeque::new(),
            due_cdns: VecDeque::new(),
            own_certificate,
            path_hints: HashMap::new(),
            source_hints: HashMap::new(),
            announced_keys: HashMap::new(),
            announced_to: HashMap::new(),
            end_keys: HashMap::new(),
            dde_passes: HashMap::new(),
            dde_pass_changes: VecDeque::new(),
            marked_toward: HashSet::new(),
            path_keys_wanted: HashSet::new(),
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            held_total: 0,
            held_bytes: 0,
            dprp_round_trip: None,
            awake_until: Timestamp(0),
            counters: Counters::default(),
            current_tag: 0,
            ephemeral_ahead: Vec::new(),
            units: UnitBuffers::default(),
        })
    }

    pub fn name(&self) -> &str {
        self.identity.name()
    }
    pub fn kind(&self) -> GeKind {
        self.kind
    }
    pub fn mode(&self) -> Mode {
        self.mode
    }
    pub fn pit(&self) -> &Pit {
        &self.pit
    }
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Bytes of pieces of cut units held while the rest of their unit comes.
    pub fn held_piece_bytes(&self) -> usize {
        self.units.held_bytes
    }
    /// Packets held right now, all negotiations together.
    pub fn held_packets(&self) -> usize {
        self.held_total
    }
    /// Until when packets of a new flow are expected soon: a DPRP step was taken, or a flow
    /// decided a moment ago has had a packet, within the last stay-awake window (twice the DPRP
    /// round trip this GE measured last, if no longer than [`GeConfig::stay_awake`]). A caller
    /// that would sleep may keep polling for packets until then (within a CPU budget of its
    /// own): on a fast network the next message or the flow's next packet comes within
    /// microseconds, and a sleeping daemon takes tens of them to wake (`docs/dprp.md` section
    /// 16). `None` when nothing is expected, or staying awake is off.
    pub fn stay_awake_until(&self, now: Timestamp) -> Option<Timestamp> {
        (self.awake_until > now).then_some(self.awake_until)
    }

    /// The DPRP round trip this GE measured last (smoothed), if any.
    pub fn dprp_round_trip(&self) -> Option<Micros> {
        self.dprp_round_trip
    }

    /// How long a DPRP step or a new flow's packet keeps the GE awake: twice the round trip
    /// measured last (the cap itself before any), nothing when that is longer than the cap.
    fn awake_window(&self) -> Micros {
        let cap = self.cfg.stay_awake;
        match self.dprp_round_trip {
            _ if cap.0 == 0 => Micros(0),
            None => cap,
            Some(rt) if rt.0.saturating_mul(2) <= cap.0 => Micros(rt.0 * 2),
            Some(_) => Micros(0),
        }
    }

    fn keep_awake(&mut self, now: Timestamp) {
        let w = self.awake_window();
        if w.0 > 0 {
            self.awake_until = self.awake_until.max(now + w);
        }
    }

    /// Takes one DPRP round trip into the smoothed figure (7/8 old, 1/8 new, as TCP's SRTT).
    fn measure_round_trip(&mut self, sample: Micros) {
        self.dprp_round_trip = Some(match self.dprp_round_trip {
            None => sample,
            Some(old) => Micros((old.0.saturating_mul(7) + sample.0) / 8),
        });
    }

    pub fn negotiations_in_progress(&self) -> usize {
        self.negotiations.len()
    }

    /// Negotiations this GE would start but that wait for room in its window
    /// (`GeConfig::negotiation_window`); they are part of [`Engine::negotiations_in_progress`].
    pub fn negotiations_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Ephemeral key pairs ready for the next negotiations (see [`Engine::prepare`]).
    pub fn ephemeral_keys_ready(&self) -> usize {
        self.ephemeral_ahead.len()
    }

    /// Makes one path key that a negotiation made possible, if any is waiting (one X25519
    /// agreement); returns whether it did. [`Engine::prepare`] does this first; a busy caller
    /// may also call it once in a while, since one key spares the signature checks of every
    /// later negotiation with that GE (during a burst of new flows the caller is never idle).
    pub fn make_path_key(&mut self) -> bool {
        let Some(p) = self.pending_path_keys.pop_front() else { return false };
        if let Some((id, key)) = crate::pathkey::derive(&p) {
            self.path_keys.insert(p.at, id, key, &p);
            self.counters.path_keys_derived += 1;
        }
        true
    }

    /// Computes one waiting agreement ahead, if any: an end GE that answered a DDE announcing
    /// the initiator's ephemeral key agrees its own ephemeral key with it while it waits for
    /// the MPIT (one X25519), so that the MPIT, with the flow's first packet right behind it,
    /// does not wait for it. Returns whether it took one from the queue. Like
    /// [`Engine::make_path_key`], a busy caller calls it once a turn, after its verdicts.
    pub fn agree_ahead(&mut self) -> bool {
        let Some(key) = self.pending_agreements.pop_front() else { return false };
        let Some(n) = self.negotiations.get_mut(&key) else { return true };
        let waiting = if n.initiator { n.stage == Stage::AwaitRgi } else { n.stage == Stage::AwaitMpit };
        if let (true, Some(peer), Some(mine), None) = (waiting, n.ahead_with, n.eph_key.as_ref(), &n.agreement_ahead) {
            let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, peer);
            n.agreement_ahead = agreement::agree(mine, peer, (), |shared| {
                <[u8; 32]>::try_from(shared).map(Zeroizing::new).map_err(|_| ())
            })
            .ok();
        }
        true
    }

    /// Path keys made with other GEs and still kept.
    pub fn path_keys(&self) -> usize {
        self.path_keys.len()
    }

    /// Work done ahead of need, one small step per call: makes a path key that a negotiation
    /// made possible, or one ephemeral X25519 key pair while fewer than
    /// `GeConfig::ephemeral_keys_ahead` are ready. Returns whether it did
    /// something (call again while it does). The caller calls it when idle, between looks at
    /// its packets, so a packet waits for one key pair's generation at most.
    pub fn prepare(&mut self) -> bool {
        self.prepare_up_to(self.cfg.ephemeral_keys_ahead)
    }

    /// Work ahead of need while a new flow's steps are under way ([`Engine::stay_awake_until`]):
    /// only what a flow in flight needs soon (an agreement for an MPIT on its way, a path key),
    /// and an ephemeral key when fewer than a quarter of `GeConfig::ephemeral_keys_ahead` are
    /// ready. The rest waits for [`Engine::prepare`] once the GE is idle: on a CPU that the
    /// flow's other GEs share (the lab; a GE and its host's applications), keys for future
    /// flows would take it from the flow under way (`docs/dprp.md` section 16). Returns whether
    /// it did something (call again while it does).
    pub fn prepare_soon(&mut self) -> bool {
        self.prepare_up_to(self.cfg.ephemeral_keys_ahead / 4)
    }

    /// One step of work ahead: an agreement, a path key, or an ephemeral key while fewer than
    /// `keys` are ready.
    fn prepare_up_to(&mut self, keys: usize) -> bool {
        if self.agree_ahead() || self.make_path_key() {
            return true;
        }
        if self.ephemeral_ahead.len() >= keys {
            return false;
        }
        let key = new_ephemeral_key(&mut *self.rng);
        self.ephemeral_ahead.push(key);
        true
    }

    /// Whether the rest of this packet's flow can be handled without the engine: a PIT entry
    /// whose action needs no cryptography (relay or plaintext: pass; discard: drop), final, or
    /// provisional when no CDN could change what the kernel would do (a relaying GE between a
    /// closed initiator and a closed end GE; a GE whose fallback does the same as its action).
    /// A data plane with a kernel fast path (conntrack marks) asks this after
    /// [`Engine::handle_packet`]; flows that are sealed or opened, and other provisional
    /// decisions (which a CDN may still overturn), always come back to the engine.
    pub fn fast_path(&self, packet: &[u8]) -> Option<FastPath> {
        let dg = Datagram::parse(packet).ok()?;
        self.fast_path_for(&dg.cid)
    }

    fn fast_path_for(&self, cid: &Cid) -> Option<FastPath> {
        let (e, dir) = self.pit.get(cid)?;
        if e.state != EntryState::Final && !e.settled_for_kernel {
            return None;
        }
        fast_path_of(e.action_for(dir))
    }

    /// Replaces the group keys (a rotation, a new member group, a removal). Entries that relied
    /// on a key version no longer held go; if the set of groups changed, every entry goes
    /// (decisions may differ now) and flows renegotiate on their next packet.
    pub fn set_group_keys(&mut self, keys: GroupKeyring) {
        let groups_changed = !self.keys.groups().eq(keys.groups());
        self.keys = keys;
        let keys = &self.keys;
        let gone = self.pit.drain_where(|e| {
            groups_changed
                || matches!((e.group, e.key_version), (Some(g), Some(v)) if e.session.is_some() && keys.get(g, v).is_none())
        });
        for e in gone {
            self.entry_removed(e, RemovalReason::KeyChange);
        }
    }

    /// Replaces the GE's identity (the GMS issued a new certificate: new groups, mode, or a
    /// renewal). The certificate must name this GE and be of the same kind. If its groups or
    /// mode changed, every PIT entry goes, as for a change of group keys.
    pub fn set_identity(&mut self, identity: SigningIdentity) -> Result<(), Error> {
        let (old, new) = (self.identity.certificate(), identity.certificate());
        if new.name != old.name || new.kind != old.kind {
            return Err(Error::Configuration(format!(
                "new certificate is for {:?} ({}), not {:?} ({})",
                new.name,
                new.kind.as_str(),
                old.name,
                old.kind.as_str()
            )));
        }
        let changed = new.groups != old.groups || new.mode != old.mode;
        self.mode = new.mode;
        self.own_certificate = transcript::certificate_hash(new);
        self.identity = identity;
        // Path keys were bound to the old certificate.
        self.path_keys.clear();
        self.pending_path_keys.clear();
        if changed {
            for e in self.pit.drain_where(|_| true) {
                self.entry_removed(e, RemovalReason::KeyChange);
            }
        }
        Ok(())
    }

    /// The next packet to send or verdict to give, in order; when nothing else is left, the
    /// work that could wait (the end GE's CDNs, made now) comes last.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if self.transmits.is_empty() && !self.due_cdns.is_empty() {
            self.make_due_cdns();
        }
        self.transmits.pop_front()
    }
    /// Like [`Engine::poll_transmit`], but leaves the work that can wait (the end GE's CDN,
    /// a signature) for a later [`Engine::poll_transmit`]: a caller that gives verdicts in
    /// batches takes transmits with this while it handles a batch, and with
    /// [`Engine::poll_transmit`] once the batch's verdicts are out, so the flow's first packet,
    /// queued right behind the MPIT, does not wait for the CDN's signature.
    pub fn poll_urgent_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }
    /// Whether CDNs are owed that [`Engine::poll_urgent_transmit`] left for later.
    pub fn has_due_cdns(&self) -> bool {
        !self.due_cdns.is_empty()
    }
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
    /// Whether [`Engine::poll_event`] has something to give.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }
    /// The next change to the destinations whose DDEs the caller may let pass this GE unseen
    /// ([`GeConfig::kernel_dde_pass`]; `docs/dprp.md` section 13). Take them all once a turn.
    pub fn poll_dde_pass(&mut self) -> Option<DdePass> {
        self.dde_pass_changes.pop_front()
    }

    /// Whether a DDE toward `dst` may pass this GE unseen now: what the caller's kernel list
    /// holds once it has taken every change (for simulators and tests).
    pub fn passes_dde_unseen(&self, now: Timestamp, dst: IpAddr) -> bool {
        self.cfg.kernel_dde_pass
            && self.dde_passes.get(&dst).is_some_and(|s| s.live && now - s.announced < self.cfg.ge_cache_ttl)
    }

    /// Whether an MPIT toward `dst` passes this GE in the caller's kernel, its copy handed to
    /// [`Engine::handle_passed_copy`]: toward the destinations whose DDEs pass unseen, when
    /// [`GeConfig::kernel_mpit_pass`] is on (for simulators and tests).
    pub fn passes_mpit_in_kernel(&self, now: Timestamp, dst: IpAddr) -> bool {
        self.cfg.kernel_mpit_pass && self.passes_dde_unseen(now, dst)
    }

    /// Takes part in a DPRP message that the caller's kernel has already let pass, from its
    /// copy (an MPIT toward a destination this GE is not the end GE for: section 15 of
    /// `docs/dprp.md`). It is handled as when met in the queue (verified, the path adopted, the
    /// flow's entry made, packets held for the flow released), except that there is no verdict
    /// to give: a transit GE passes an MPIT in every case, and the end GE checks it anyway.
    /// Anything but an MPIT is ignored: the rules copy nothing else.
    pub fn handle_passed_copy(&mut self, now: Timestamp, buf: &mut Vec<u8>) {
        let is_mpit = Datagram::parse(buf).ok().is_some_and(|d| {
            d.cid.proto == L4Proto::Udp
                && is_dprp_ports(d.cid.src_port, d.cid.dst_port)
                && gscip_wire::dprp::MessagePacket::new_checked(&buf[d.payload_offset..d.end])
                    .is_ok_and(|m| m.message_type() == gscip_wire::dprp::MessageType::Mpit)
        });
        if !is_mpit {
            return;
        }
        self.counters.mpits_copied += 1;
        let _moot = self.handle_packet_in(now, buf, PacketContext { tag: 0, gso: false, can_segment: false });
    }

    /// When [`Engine::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    // ----- address knowledge -------------------------------------------------------------

    fn is_local(&self, a: IpAddr) -> bool {
        self.cfg.local_addrs.contains(&a)
    }
    fn protects(&self, a: IpAddr) -> bool {
        self.is_local(a) || self.cfg.protected.iter().any(|n| n.contains(&a))
    }
    fn is_router_kind(&self) -> bool {
        matches!(self.kind, GeKind::Gen | GeKind::Gnat | GeKind::Gsra)
    }
    fn side_of(&self, cid: &Cid) -> Side {
        match (self.protects(cid.src), self.protects(cid.dst)) {
            (true, false) => Side::Source,
            (false, true) => Side::Destination,
            _ => Side::Transit,
        }
    }
    fn cached(&self, now: Timestamp, a: IpAddr) -> Option<bool> {
        self.ge_cache.get(&a).filter(|e| e.expires > now).map(|e| e.has_ge)
    }
    fn learn(&mut self, now: Timestamp, a: IpAddr, has_ge: bool) {
        if self.ge_cache.len() > 65_536 {
            self.ge_cache.retain(|_, e| e.expires > now);
        }
        self.ge_cache.insert(a, GeCacheEntry { has_ge, expires: now + self.cfg.ge_cache_ttl });
        self.note_dde_pass(now, a);
    }

    /// Announces (or renews, or withdraws) a DDE pass toward `a` according to whether this GE
    /// would now only pass DDEs toward it ([`GeConfig::kernel_dde_pass`]).
    fn note_dde_pass(&mut self, now: Timestamp, a: IpAddr) {
        if !self.cfg.kernel_dde_pass {
            return;
        }
        let pass = self.end_role(now, a) == EndRole::NotEnd;
        let renew_after = Micros(self.cfg.ge_cache_ttl.0 / 4);
        let state = self.dde_passes.get(&a).copied();
        let announce = match (pass, state) {
            (true, Some(s)) if s.live && now - s.announced < renew_after => return,
            (true, _) => true,
            (false, Some(s)) if s.live => false,
            (false, _) => return,
        };
        if announce && state.is_none() && self.dde_passes.len() >= DDE_PASSES_MAX {
            let window = self.dde_pass_window();
            self.dde_passes.retain(|_, s| now - s.announced < window);
            if self.dde_passes.len() >= DDE_PASSES_MAX {
                return; // its DDEs keep coming to the engine, as without the pass
            }
        }
        let announced = if announce { now } else { state.map_or(now, |s| s.announced) };
        self.dde_passes.insert(a, DdePassState { announced, live: announce });
        if self.dde_pass_changes.len() >= DDE_PASSES_MAX {
            self.dde_pass_changes.pop_front();
        }
        self.dde_pass_changes.push_back(DdePass { addr: a, pass: announce });
    }

    /// How long after an announcement the caller may still pass a DDE unseen (its own timer
    /// runs `ge_cache_ttl` from when it took the change), with a second's slack.
    fn dde_pass_window(&self) -> Micros {
        Micros(self.cfg.ge_cache_ttl.0.saturating_add(1_000_000))
    }

    /// Whether this GE let DDEs toward `a` pass unseen lately (possibly withdrawn since, while
    /// some were on their way).
    fn passed_ddes_toward(&self, now: Timestamp, a: IpAddr) -> bool {
        self.cfg.kernel_dde_pass && self.dde_passes.get(&a).is_some_and(|s| now - s.announced < self.dde_pass_window())
    }
    /// No GE lies between this one and `a` (so this GE is the innermost for `a`).
    fn is_innermost_for(&self, now: Timestamp, a: IpAddr) -> bool {
        self.is_local(a) || (self.kind == GeKind::Gea && self.protects(a)) || self.cached(now, a) == Some(false)
    }
    fn end_role(&self, now: Timestamp, d: IpAddr) -> EndRole {
        if self.is_innermost_for(now, d) {
            EndRole::End
        } else if self.cached(now, d) == Some(true) {
            EndRole::NotEnd
        } else if self.is_router_kind() && self.protects(d) {
            EndRole::Probe
        } else {
            EndRole::NotEnd
        }
    }

    fn unix_s(now: Timestamp) -> u64 {
        now.0 / 1_000_000
    }

    fn arm(&mut self, at: Timestamp, key: TimerKey) {
        self.timers.push(Reverse((at, key)));
    }

    // ----- the per-packet path ------------------------------------------------------------

    /// Handles one IP packet this GE meets on its path (leaving or reaching its host, or being
    /// forwarded). The buffer holds exactly the IP packet and may be rewritten in place.
    pub fn handle_packet(&mut self, now: Timestamp, buf: &mut Vec<u8>) -> Verdict {
        self.handle_packet_tagged(now, buf, 0)
    }

    /// Like [`Engine::handle_packet`], with a tag of the caller's choosing that comes back on
    /// the `Released` or `Dropped` transmit if the packet is held. A data plane that keeps the
    /// kernel's packet queued while the engine holds it (rather than dropping and reinjecting
    /// it) uses the tag to find it again.
    pub fn handle_packet_tagged(&mut self, now: Timestamp, buf: &mut Vec<u8>, tag: u64) -> Verdict {
        self.handle_packet_in(now, buf, PacketContext { tag, ..PacketContext::default() })
    }

    /// Like [`Engine::handle_packet_tagged`], with what the data plane knows of the packet:
    /// whether it is a GSO packet, and whether it can be handed over in segments instead.
    pub fn handle_packet_in(&mut self, now: Timestamp, buf: &mut Vec<u8>, ctx: PacketContext) -> Verdict {
        let verdict = self.handle_packet_inner(now, buf, ctx);
        if !self.waiting.is_empty() {
            self.start_waiting(now);
        }
        verdict
    }

    /// Gives back a buffer of a transmit the caller is done with (a released packet), to be
    /// reused for the next piece of a cut unit the engine must hold: the piece path then
    /// allocates nothing.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.units.pool.len() < UNIT_POOL_MAX && buf.capacity() > 0 {
            buf.clear();
            self.units.pool.push(buf);
        }
    }

    fn handle_packet_inner(&mut self, now: Timestamp, buf: &mut Vec<u8>, ctx: PacketContext) -> Verdict {
        self.current_tag = ctx.tag;
        self.counters.packets += 1;
        let dg = match Datagram::parse(buf) {
            Ok(dg) => dg,
            // Other protocols (ICMP among them) and fragments.
            Err(WireError::Unsupported(_)) => return self.handle_other(now, buf),
            // A TCP/UDP packet (or IP header) that does not hold together.
            Err(_) => {
                self.counters.malformed += 1;
                return Verdict::Drop(DropReason::Malformed);
            }
        };
        if dg.cid.proto == L4Proto::Udp && is_dprp_ports(dg.cid.src_port, dg.cid.dst_port) {
            return self.handle_dprp(now, buf, &dg);
        }
        self.handle_data(now, buf, dg, ctx)
    }

    fn handle_other(&mut self, now: Timestamp, buf: &[u8]) -> Verdict {
        if let Ok(e) = IcmpErrorRepr::parse(buf) {
            // Only the destination itself saying "port unreachable" tells that no GE lies
            // between here and it; other errors about DPRP messages prove nothing.
            if e.quoted_proto == L4Proto::Udp.number()
                && is_dprp_ports(e.quoted_src_port, e.quoted_dst_port)
                && e.is_port_unreachable_from_destination()
            {
                let (start, end) = e.quoted_udp_payload;
                return self.on_icmp_about_dprp(now, &e, &buf[start..end]);
            }
            return Verdict::Accept;
        }
        let addrs = match buf.first().map(|b| b >> 4) {
            Some(4) => gscip_wire::ip::Ipv4Packet::new_checked(buf)
                .ok()
                .map(|p| (IpAddr::V4(p.src_addr()), IpAddr::V4(p.dst_addr()), p.protocol())),
            Some(6) => gscip_wire::ip::Ipv6Packet::new_checked(buf)
                .ok()
                .map(|p| (IpAddr::V6(p.src_addr()), IpAddr::V6(p.dst_addr()), p.next_header())),
            _ => None,
        };
        let Some((src, dst, proto)) = addrs else {
            self.counters.malformed += 1;
            return Verdict::Drop(DropReason::Malformed);
        };
        // ICMP (needed for path MTU discovery and neighbour discovery) passes; so does any
        // other protocol that does not cross a closed boundary.
        if proto == 1 || proto == 58 || self.mode == Mode::Open || self.protects(src) == self.protects(dst) {
            return Verdict::Accept;
        }
        self.counters.discarded += 1;
        Verdict::Drop(DropReason::Unsupported)
    }

    fn handle_data(&mut self, now: Timestamp, buf: &mut Vec<u8>, mut dg: Datagram, ctx: PacketContext) -> Verdict {
        if let Some(v) = self.apply_entry(now, buf, &mut dg, ctx) {
            return v;
        }
        let flow = dg.cid.canonical();
        let to_local = self.is_local(dg.cid.dst);
        if let Some(key) = self.by_flow.get(&flow).copied() {
            return self.hold_in(WaitingOn::Negotiation(key), buf, to_local);
        }
        if has_no_single_peer(&dg.cid) {
            // No end GE can answer for a group or broadcast address, nor find a sender without
            // an address: this GE decides alone, at once, with no DPRP message (a DDE or a
            // restart request would go to a group address, and the packet would wait for the
            // whole retransmission schedule only to meet the same "no pair").
            let key = self.initiate(now, dg.cid);
            self.finish_alone(now, key);
            if let Some(v) = self.apply_entry(now, buf, &mut dg, ctx) {
                return v;
            }
        }
        if self.restarts.contains_key(&flow) {
            return self.hold_in(WaitingOn::Restart(flow), buf, to_local);
        }
        if self.negotiations.len() >= self.cfg.max_negotiations {
            self.counters.hold_overflow += 1;
            return Verdict::Drop(DropReason::HoldOverflow);
        }
        if self.is_innermost_for(now, dg.cid.src) {
            let key = self.initiate(now, dg.cid);
            let v = self.hold_in(WaitingOn::Negotiation(key), buf, to_local);
            self.start_when_room(now, key);
            v
        } else {
            self.request_restart(now, dg.cid);
            self.hold_in(WaitingOn::Restart(flow), buf, to_local)
        }
    }

    /// Applies the PIT entry, if there is one. `None` when the flow has no entry.
    fn apply_entry(
        &mut self,
        now: Timestamp,
        buf: &mut Vec<u8>,
        dg: &mut Datagram,
        ctx: PacketContext,
    ) -> Option<Verdict> {
        let linger = self.cfg.close_linger;
        let max_len = self.cfg.max_packet_len;
        let window = self.awake_window();
        let (e, dir) = self.pit.get_mut(&dg.cid)?;
        if now.0.saturating_sub(e.created.0) < window.0.saturating_mul(YOUNG_FLOW_WINDOWS) {
            // The flow's first round trips: its next packets come soon.
            self.awake_until = self.awake_until.max(now + window);
        }
        e.last_seen = now;
        e.counters.packets += 1;
        e.counters.bytes += dg.payload_len() as u64;
        let mut arm_removal = None;
        if dg.cid.proto == L4Proto::Tcp {
            let f = dg.tcp_flags;
            if f & tcp_flags::RST != 0 {
                e.tcp.reset = true;
            }
            if f & tcp_flags::FIN != 0 {
                match dir {
                    Direction::Forward => e.tcp.fin_forward = true,
                    Direction::Reverse => e.tcp.fin_reverse = true,
                }
            }
            if e.tcp.closed() && e.remove_at.is_none() {
                let at = now + linger;
                e.remove_at = Some(at);
                arm_removal = Some((at, e.cid.canonical()));
            }
        }
        let action = e.action_for(dir);
        let verdict = match action {
            FlowAction::Relay | FlowAction::Plain => Verdict::Accept,
            FlowAction::Discard => {
                e.counters.discarded += 1;
                Verdict::Drop(DropReason::Discarded)
            }
            FlowAction::Encrypt => {
                // A flow whose cut units are lost (its host retransmits much) is sealed segment
                // by segment.
                // It goes back to units once its segments show a clean path again.
                let (mut segment, mut unsegment) = (false, false);
                if dg.cid.proto == L4Proto::Tcp && dg.payload_len() > 0 {
                    if ctx.can_segment {
                        e.watch.whole_again();
                    }
                    if ctx.can_segment && e.watch.segmented() {
                        // Noted segment by segment when the platform hands them back.
                        segment = true;
                    } else {
                        let retransmits = e.watch.note(dg.tcp_seq, dg.payload_len() as u32);
                        if e.watch.take_back_to_units() {
                            self.counters.flows_back_to_units += 1;
                        }
                        e.watch.cut_units |= ctx.gso;
                        segment = ctx.can_segment && retransmits && e.watch.cut_units && e.watch.retransmits_much();
                        unsegment = !ctx.can_segment && e.watch.unsegment_pending();
                    }
                }
                let sealed = if segment { Err(SealError::TooLong) } else { seal_with(e, buf, dg, max_len) };
                match sealed {
                    Ok(()) => {
                        e.counters.sealed += 1;
                        if unsegment {
                            Verdict::Unsegment
                        } else {
                            Verdict::Accept
                        }
                    }
                    Err(SealError::TooLong) if ctx.can_segment => {
                        if e.watch.switch_to_segments() {
                            self.counters.flows_segmented += 1;
                        }
                        Verdict::Segment
                    }
                    Err(SealError::TooLong) => Verdict::Drop(DropReason::TooLong),
                    // Counter space used up (or no session): the entry goes and the flow's next
                    // packet negotiates afresh, with new keys.
                    Err(SealError::CounterExhausted) => Verdict::Drop(DropReason::SealFailed),
                }
            }
            FlowAction::Decrypt => match e.session.as_mut() {
                None => Verdict::Drop(DropReason::AuthenticationFailed),
                Some(s) => match s.classify(buf, dg) {
                    Arrival::Whole => match s.open(buf, dg) {
                        Ok(()) => {
                            e.counters.opened += 1;
                            Verdict::Accept
                        }
                        Err(PeerError::Replay(_)) => {
                            e.counters.replays += 1;
                            Verdict::Drop(DropReason::Replay)
                        }
                        Err(_) => {
                            e.counters.auth_failures += 1;
                            Verdict::Drop(DropReason::AuthenticationFailed)
                        }
                    },
                    arrival => {
                        // A piece of a cut unit: held until the rest of its unit is here.
                        if let Some((at, flow)) = arm_removal {
                            self.arm(at, TimerKey::Pit(flow));
                        }
                        return Some(self.hold_piece(now, buf, dg, arrival));
                    }
                },
            },
        };
        if let Some((at, flow)) = arm_removal {
            self.arm(at, TimerKey::Pit(flow));
        }
        match (action, verdict) {
            (FlowAction::Encrypt, Verdict::Accept | Verdict::Unsegment) => self.counters.sealed += 1,
            (FlowAction::Decrypt, Verdict::Accept) => self.counters.opened += 1,
            (_, Verdict::Drop(DropReason::Discarded)) => {
                self.counters.discarded += 1;
                self.maybe_reject(buf, &dg.cid);
            }
            (_, Verdict::Drop(DropReason::SealFailed)) => {
                if let Some(e) = self.pit.remove(&dg.cid) {
                    self.entry_removed(e, RemovalReason::KeyChange);
                }
            }
            (_, Verdict::Drop(DropReason::Replay)) => self.counters.replays += 1,
            (_, Verdict::Drop(DropReason::AuthenticationFailed)) => self.counters.auth_failures += 1,
            _ => {}
        }
        Some(verdict)
    }

    /// Holds a piece of a cut unit (its flow's entry exists and opens this direction); opens
    /// every unit it completes and releases that unit's pieces in order.
    fn hold_piece(&mut self, now: Timestamp, buf: &mut Vec<u8>, dg: &Datagram, arrival: Arrival) -> Verdict {
        let cid = dg.cid;
        let limits = self.cfg.reassembly;
        if self.units.held_bytes + buf.len() > limits.total {
            self.counters.pieces_dropped += 1;
            self.counters.hold_overflow += 1;
            return Verdict::Drop(DropReason::HoldOverflow);
        }
        let unit_start = match arrival {
            Arrival::LastPiece { unit_start } => Some(unit_start),
            _ => None,
        };
        let mut packet = self.units.pool.pop().unwrap_or_default();
        packet.clear();
        packet.extend_from_slice(&buf[..dg.end]);
        buf.clear();
        let piece = Piece {
            seq: dg.tcp_seq,
            len: dg.payload_len() as u32,
            payload_offset: dg.payload_offset,
            unit_start,
            short: unit_start.is_none() && dg.payload_len() < TRAILER_LEN,
            tag: self.current_tag,
            to_local: self.is_local(cid.dst),
            arrived: now,
            packet,
        };
        let Some((e, _)) = self.pit.get_mut(&cid) else { return Verdict::Drop(DropReason::Malformed) };
        self.units.held_bytes += piece.packet.len();
        e.reassembly.push(piece);
        self.counters.pieces_held += 1;
        let u = &mut self.units;
        // Over the flow's bound: the oldest pieces go.
        while e.reassembly.bytes() > limits.per_flow {
            let Some(p) = e.reassembly.take_oldest() else { break };
            u.discard(&mut self.transmits, &mut self.counters, p);
        }
        loop {
            let complete = match e.session.as_ref() {
                Some(s) => e.reassembly.take_complete(&mut u.taken, &|t| s.trailer_unit_len(t)),
                None => false,
            };
            if !complete {
                break;
            }
            u.packets.clear();
            for p in &mut u.taken {
                u.held_bytes -= p.packet.len();
                u.packets.push(std::mem::take(&mut p.packet));
            }
            let opened = match e.session.as_mut() {
                Some(s) => s.open_unit(&mut u.packets, &mut u.scratch),
                None => Err(PeerError::AuthenticationFailed),
            };
            match opened {
                Ok(()) => {
                    e.counters.opened += 1;
                    self.counters.opened += 1;
                    self.counters.units_reassembled += 1;
                    for (p, packet) in u.taken.drain(..).zip(u.packets.drain(..)) {
                        // A piece that held only trailer bytes comes back empty: it goes no
                        // further.
                        if packet.is_empty() {
                            drop_piece(&mut self.transmits, &mut u.pool, Piece { packet, ..p });
                        } else {
                            self.transmits.push_back(Transmit {
                                packet,
                                to_local: p.to_local,
                                kind: TransmitKind::Released,
                                tag: p.tag,
                                deferrable: false,
                                fast_path: None,
                            });
                        }
                    }
                }
                Err(err) => {
                    if matches!(err, PeerError::Replay(_)) {
                        e.counters.replays += 1;
                        self.counters.replays += 1;
                    } else {
                        self.counters.units_failed += 1;
                    }
                    // The last piece (its trailer) goes; the other pieces are left as they were
                    // (opening works on a copy) and wait for their own unit's last piece: one of
                    // them may belong to an older sealing at the same place.
                    let last = u.taken.len().saturating_sub(1);
                    for (i, (p, packet)) in u.taken.drain(..).zip(u.packets.drain(..)).enumerate() {
                        if i == last {
                            self.counters.pieces_dropped += 1;
                            drop_piece(&mut self.transmits, &mut u.pool, Piece { packet, ..p });
                        } else {
                            u.held_bytes += packet.len();
                            e.reassembly.put_back(Piece { packet, ..p });
                        }
                    }
                }
            }
        }
        if !e.reassembly.timer_armed && !e.reassembly.is_empty() {
            e.reassembly.timer_armed = true;
            self.arm(now + limits.timeout, TimerKey::Pieces(cid.canonical()));
        }
        Verdict::Held
    }

    /// A PIT entry went: the pieces it held are dropped, and the removal is reported.
    fn entry_removed(&mut self, mut e: PitEntry, reason: RemovalReason) {
        let mut gone = std::mem::take(&mut self.units.taken);
        e.reassembly.take_all(&mut gone);
        for p in gone.drain(..) {
            self.units.discard(&mut self.transmits, &mut self.counters, p);
        }
        self.units.taken = gone;
        self.events.push_back(Event::FlowRemoved { cid: e.cid, reason });
    }

    /// Drops a flow's pieces that waited longer than the reassembly timeout.
    fn pieces_timer(&mut self, now: Timestamp, flow: Cid) {
        let timeout = self.cfg.reassembly.timeout;
        let Some((e, _)) = self.pit.get_mut(&flow) else { return };
        e.reassembly.timer_armed = false;
        let mut gone = std::mem::take(&mut self.units.taken);
        e.reassembly.take_older_than(Timestamp(now.0.saturating_sub(timeout.0)), &mut gone);
        for p in gone.drain(..) {
            self.units.discard(&mut self.transmits, &mut self.counters, p);
        }
        self.units.taken = gone;
        if let Some(oldest) = e.reassembly.oldest() {
            e.reassembly.timer_armed = true;
            let at = (oldest + timeout).max(now + Micros(1));
            self.arm(at, TimerKey::Pieces(flow));
        }
    }

    /// Tells an application inside this GE's boundary at once that its flow is discarded.
    fn maybe_reject(&mut self, buf: &[u8], cid: &Cid) {
        if !self.protects(cid.src) {
            return; // from outside: dropped silently
        }
        if has_no_single_peer(cid) {
            return; // no ICMP error about a datagram to a group or broadcast address (RFC 1122)
        }
        if let Ok(icmp) = emit_error(cid.dst, buf, IcmpErrorKind::AdminProhibited) {
            self.counters.rejects_sent += 1;
            self.transmits.push_back(Transmit {
                packet: icmp,
                to_local: self.is_local(cid.src),
                kind: TransmitKind::Reject,
                tag: 0,
                deferrable: false,
                fast_path: None,
            });
        }
    }

    /// Holds the packet in the queue of a negotiation or of a restart, if there is one.
    fn hold_in(&mut self, waiting_on: WaitingOn, buf: &mut Vec<u8>, to_local: bool) -> Verdict {
        let limits = self.hold_limits();
        let queue = match waiting_on {
            WaitingOn::Negotiation(key) => self.negotiations.get_mut(&key).map(|n| &mut n.held),
            WaitingOn::Restart(flow) => self.restarts.get_mut(&flow).map(|r| &mut r.held),
        };
        hold(
            queue,
            (&mut self.held_total, &mut self.held_bytes),
            &mut self.counters,
            limits,
            buf,
            to_local,
            self.current_tag,
        )
    }

    fn hold_limits(&self) -> HoldLimits {
        HoldLimits { per_flow: self.cfg.hold_per_flow, total: self.cfg.hold_total, bytes: self.cfg.hold_bytes_total }
    }

    /// Sends held packets on through the flow's (new) PIT entry.
    fn release(&mut self, now: Timestamp, held: VecDeque<Held>) {
        for h in held {
            self.held_total = self.held_total.saturating_sub(1);
            self.held_bytes = self.held_bytes.saturating_sub(h.packet.len());
            let mut p = h.packet;
            let verdict = match Datagram::parse(&p) {
                Ok(mut dg) => self.apply_entry(now, &mut p, &mut dg, PacketContext::default()).map(|v| (v, dg.cid)),
                Err(_) => None,
            };
            match verdict {
                Some((Verdict::Accept | Verdict::Unsegment, cid)) => {
                    self.counters.released += 1;
                    let fast_path = self.fast_path_for(&cid);
                    self.transmits.push_back(Transmit {
                        packet: p,
                        to_local: h.to_local,
                        kind: TransmitKind::Released,
                        tag: h.tag,
                        deferrable: false,
                        fast_path,
                    });
                }
                other => {
                    if other.is_none() {
                        self.counters.hold_expired += 1;
                    }
                    self.push_dropped(h.tag);
                }
            }
        }
    }

    fn drop_held(&mut self, held: VecDeque<Held>) {
        self.held_total = self.held_total.saturating_sub(held.len());
        self.held_bytes = self.held_bytes.saturating_sub(held.iter().map(|h| h.packet.len()).sum());
        self.counters.hold_expired += held.len() as u64;
        for h in held {
            self.push_dropped(h.tag);
        }
    }

    fn push_dropped(&mut self, tag: u64) {
        self.transmits.push_back(Transmit {
            packet: Vec::new(),
            to_local: false,
            kind: TransmitKind::Dropped,
            tag,
            deferrable: false,
            fast_path: None,
        });
    }

    // ----- starting negotiations ----------------------------------------------------------

    fn new_negotiation(&mut self, header: HeaderRepr, initiator: bool, now: Timestamp) -> Negotiation {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut *self.rng, &mut nonce);
        let EphemeralKey { secret, public: eph_public, key: eph_key } =
            self.ephemeral_ahead.pop().unwrap_or_else(|| new_ephemeral_key(&mut *self.rng));
        Negotiation {
            side: self.side_of(&header.cid),
            header,
            initiator,
            stage: Stage::AwaitRgi,
            end: EndRole::NotEnd,
            nonce,
            eph_secret: secret,
            eph_public,
            eph_key,
            attempts: 0,
            deadline: now,
            held: VecDeque::new(),
            last_sent: None,
            confirm: None,
            end_signer: None,
            hint: Vec::new(),
            own_record: None,
            cannot_answer: false,
            sent_at: now,
            ahead_with: None,
            agreement_ahead: None,
        }
    }

    fn insert_negotiation(&mut self, key: NegKey, n: Negotiation) {
        self.by_flow.insert(key.cid.canonical(), key);
        self.negotiations.insert(key, n);
    }

    fn remove_negotiation(&mut self, key: &NegKey) -> Option<Negotiation> {
        let n = self.negotiations.remove(key)?;
        if n.initiator && n.attempts > 0 {
            self.started = self.started.saturating_sub(1);
        }
        if n.initiator && n.header.is_marked_for_path_keys() {
            self.marked_toward.remove(&key.cid.dst);
        }
        if self.by_flow.get(&key.cid.canonical()) == Some(key) {
            self.by_flow.remove(&key.cid.canonical());
        }
        Some(n)
    }

    /// Creates an initiator negotiation for `cid` (not yet sent).
    fn initiate(&mut self, now: Timestamp, cid: Cid) -> NegKey {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut *self.rng, &mut nonce);
        let header = HeaderRepr { flags: 0, nonce, cid };
        let key = NegKey { cid, nonce };
        let n = self.new_negotiation(header, true, now);
        self.counters.negotiations_started += 1;
        self.insert_negotiation(key, n);
        key
    }

    /// Sends the DDE of a new initiator negotiation, or decides at once when no GE can lie
    /// beyond this one toward the destination.
    fn start_or_finish(&mut self, now: Timestamp, key: NegKey) {
        let end = self.end_role(now, key.cid.dst);
        if end == EndRole::End {
            self.finish_alone(now, key);
            return;
        }
        let mark = self.mark_for_path_keys(now, key.cid.dst);
        let Some(n) = self.negotiations.get_mut(&key) else { return };
        n.end = end;
        n.sent_at = now;
        if mark {
            n.header.flags |= FLAG_PATH_KEYS;
            self.marked_toward.insert(key.cid.dst);
            self.path_keys_wanted.remove(&key.cid.dst);
            self.counters.negotiations_marked += 1;
        }
        let (header, eph_public) = (n.header, n.eph_public);
        let wait =
            if end == EndRole::Probe { self.cfg.probe_timeout.min(self.cfg.dprp_rto) } else { self.cfg.dprp_rto };
        let mut extensions = self.path_hint_for(header.cid.dst);
        extensions.push(Extension { kind: Extension::INITIATOR_EPHEMERAL, value: eph_public.to_vec() });
        // The end GE's key from the last CDN toward there: the agreement with it is computed
        // while the DDE and the RGI travel (section 14).
        let window = self.cfg.ge_cache_ttl;
        if let Some((end_key, _)) = self.end_keys.remove(&header.cid.dst).filter(|(_, at)| now - *at < window) {
            extensions.push(Extension { kind: Extension::END_EPHEMERAL, value: end_key.to_vec() });
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.ahead_with = Some(end_key);
                if self.pending_agreements.len() < PENDING_AGREEMENTS_MAX {
                    self.pending_agreements.push_back(key);
                }
            }
        }
        let msg = self.emit_control(&header, Body::Dde { extensions }, header.cid.src, header.cid.dst);
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.last_sent = msg;
            n.attempts = 1;
            n.deadline = now + wait;
            self.started += 1;
        }
        self.keep_awake(now);
        self.arm(now + wait, TimerKey::Negotiation(key));
    }

    /// Whether this GE's next negotiation toward `dst` should carry [`FLAG_PATH_KEYS`]: path
    /// keys are on, none is in flight toward `dst`, and this GE lacks a key (live or about to
    /// be made) with a GE of its last path there, or knows that one of them lost its keys.
    fn mark_for_path_keys(&self, now: Timestamp, dst: IpAddr) -> bool {
        if !self.path_keys.enabled() || self.marked_toward.contains(&dst) {
            return false;
        }
        if self.path_keys_wanted.contains(&dst) {
            return true;
        }
        let Some(names) = self.path_hints.get(&dst) else { return true };
        let unix_s = Self::unix_s(now);
        names.iter().filter(|n| n.as_str() != self.name()).any(|peer| {
            self.path_keys.for_peer(now, unix_s, peer).is_none()
                && !self.pending_path_keys.iter().any(|p| p.peer == *peer)
        })
    }

    /// The DDE's path hint toward `dst`: this GE and the GEs of its last path there, so that
    /// they can MAC their records for each other. None when path keys are off.
    fn path_hint_for(&self, dst: IpAddr) -> Vec<Extension> {
        if !self.path_keys.enabled() {
            return Vec::new();
        }
        let mine = self.name();
        let others = self.path_hints.get(&dst).into_iter().flatten().map(String::as_str).filter(|n| *n != mine);
        let value = encode_path_hint(std::iter::once(mine).chain(others));
        vec![Extension { kind: Extension::PATH_HINT, value }]
    }

    /// Path-key MACs for `peers` over a record this GE built at chain position `prev`.
    fn mac_own_record<'a>(
        &self,
        now: Timestamp,
        rec: &mut GeRecordRepr,
        prev: &Chain,
        peers: impl IntoIterator<Item = &'a str>,
    ) {
        let me = self.name();
        let peers = peers.into_iter().filter(|p| *p != me);
        transcript::mac_record(rec, prev, &self.path_keys, now, Self::unix_s(now), peers);
    }

    /// Verifies a record list with this GE's trust anchor, group keys and path keys.
    fn verify_path(
        &mut self,
        now: Timestamp,
        h: &HeaderRepr,
        records: &[GeRecordRepr],
        own_record: Option<&Chain>,
    ) -> Result<VerifiedPath, PeerError> {
        let by = transcript::Verifier {
            trust: &self.trust,
            keys: &self.keys,
            path_keys: &self.path_keys,
            now,
            now_unix_s: Self::unix_s(now),
        };
        transcript::verify_path(h, records, &by, &mut self.verified_certs, own_record)
    }

    /// Counts how each record of a verified path was authenticated.
    fn count_verifications(&mut self, path: &VerifiedPath) {
        for v in &path.ges {
            match v.authenticated_by {
                AuthenticatedBy::Signature => self.counters.signatures_verified += 1,
                AuthenticatedBy::PathKey => self.counters.macs_verified += 1,
                AuthenticatedBy::OwnRecord => {}
            }
        }
    }

    /// After a verified path: a path key is to be made with every GE whose record this GE
    /// checked by its signature (it held no key that GE used), from this negotiation's
    /// ephemeral keys. Made later, when idle ([`Engine::prepare`]).
    fn queue_path_keys(&mut self, now: Timestamp, key: NegKey, records: &[GeRecordRepr], path: &VerifiedPath) {
        if !self.path_keys.enabled() {
            return;
        }
        let Some(n) = self.negotiations.get(&key) else { return };
        let marked = n.header.is_marked_for_path_keys();
        let unix_s = Self::unix_s(now);
        for v in path.ges.iter().filter(|v| v.authenticated_by == AuthenticatedBy::Signature) {
            let Some(rec) = records.get(v.record_index) else { continue };
            if !marked {
                // Keys come from marked negotiations only. An initiator that checked by
                // signature a GE it held a key with when it sent the DDE learns that the GE
                // lost its keys: the next negotiation there is marked.
                let peer = rec.certificate.name.as_str();
                if n.initiator && self.path_keys.made_at(now, unix_s, peer).is_some_and(|made| made <= n.sent_at) {
                    if self.path_keys_wanted.len() >= PATH_HINTS_MAX {
                        self.path_keys_wanted.clear();
                    }
                    self.path_keys_wanted.insert(key.cid.dst);
                }
                continue;
            }
            let pending = PendingPathKey {
                at: now,
                my_secret: n.eph_secret.clone(),
                my_certificate: self.own_certificate,
                peer: rec.certificate.name.clone(),
                peer_certificate: v.certificate_hash,
                peer_not_after: rec.certificate.not_after,
                peer_ephemeral: rec.ephemeral_public,
                final_chain: path.final_chain,
            };
            // One per peer, the latest; bounded.
            self.pending_path_keys.retain(|p| p.peer != pending.peer);
            if self.pending_path_keys.len() < PENDING_PATH_KEYS_MAX {
                self.pending_path_keys.push_back(pending);
            }
        }
        let names = || path.ges.iter().map(|v| v.ge.name.clone()).take(MAX_HINT_NAMES).collect();
        if n.initiator {
            if self.path_hints.len() >= PATH_HINTS_MAX {
                self.path_hints.clear();
            }
            self.path_hints.insert(key.cid.dst, names());
        } else if n.end != EndRole::End && self.cfg.kernel_dde_pass {
            if self.source_hints.len() >= PATH_HINTS_MAX {
                self.source_hints.clear();
            }
            self.source_hints.insert(key.cid.src, names());
        }
    }

    /// Starts a new initiator negotiation now if the window has room, else queues it.
    fn start_when_room(&mut self, now: Timestamp, key: NegKey) {
        if self.started < self.cfg.negotiation_window && self.waiting.is_empty() {
            self.start_or_finish(now, key);
        } else {
            self.waiting.push_back(key);
        }
    }

    /// Starts waiting negotiations while the window has room.
    fn start_waiting(&mut self, now: Timestamp) {
        while self.started < self.cfg.negotiation_window {
            let Some(key) = self.waiting.pop_front() else { break };
            if self.negotiations.get(&key).is_some_and(|n| n.attempts == 0) {
                self.start_or_finish(now, key);
            }
        }
    }

    /// Asks the GE nearest the flow's source to start a fresh negotiation.
    fn request_restart(&mut self, now: Timestamp, cid: Cid) {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut *self.rng, &mut nonce);
        let header = HeaderRepr { flags: FLAG_RESTART, nonce, cid };
        self.emit_control(&header, Body::Dde { extensions: Vec::new() }, cid.dst, cid.src);
        self.counters.restarts_requested += 1;
        let deadline = now + self.cfg.probe_timeout;
        self.restarts.insert(cid.canonical(), RestartWait { cid, deadline, held: VecDeque::new() });
        self.arm(deadline, TimerKey::Restart(cid.canonical()));
    }

    /// No GE lies beyond: the path is this GE alone.
    fn finish_alone(&mut self, now: Timestamp, key: NegKey) {
        let Some(n) = self.remove_negotiation(&key) else { return };
        let me = PathGe {
            name: self.name().to_owned(),
            mode: self.mode,
            side: n.side,
            groups: self.keys.groups().collect(),
        };
        let decision = decide(std::slice::from_ref(&me));
        self.counters.negotiations_completed += 1;
        self.settle_alone(now, key, n, me, decision, false);
    }

    /// Installs the entry of a decision this GE made by itself, and releases what it held.
    fn settle_alone(
        &mut self,
        now: Timestamp,
        key: NegKey,
        n: Negotiation,
        me: PathGe,
        decision: Decision,
        fallback: bool,
    ) {
        let action = decision.actions[0];
        let summary = summarize(&[me], &decision, fallback);
        self.install(
            now,
            key.cid,
            n.header.nonce,
            action,
            None,
            None,
            EntryState::Final,
            self.cfg.idle_timeout,
            summary,
        );
        self.release(now, n.held);
    }

    /// Ends a negotiation in the outcome the policy gives for "no pair", from what this GE
    /// knows for certain: itself.
    fn fail(&mut self, now: Timestamp, key: NegKey, reason: &str) {
        let Some(n) = self.remove_negotiation(&key) else { return };
        self.counters.negotiations_failed += 1;
        self.events.push_back(Event::NegotiationFailed { cid: key.cid, reason: reason.to_owned() });
        let action = self.fallback_action(n.side);
        let me = PathGe { name: self.name().to_owned(), mode: self.mode, side: n.side, groups: Vec::new() };
        let decision = Decision {
            outcome: if action == FlowAction::Discard { Outcome::Discarded { at: 0 } } else { Outcome::Plaintext },
            actions: vec![action],
        };
        self.settle_alone(now, key, n, me, decision, true);
    }

    fn fallback_action(&self, side: Side) -> FlowAction {
        if side != Side::Transit && self.mode == Mode::Closed {
            FlowAction::Discard
        } else {
            FlowAction::Plain
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        now: Timestamp,
        cid: Cid,
        negotiation: [u8; NONCE_LEN],
        action: FlowAction,
        session: Option<(PccomSession, GroupId, u32)>,
        group: Option<GroupId>,
        state: EntryState,
        idle_timeout: Micros,
        summary: DecisionSummary,
    ) {
        let (session, group, key_version) = match session {
            Some((s, g, v)) => (Some(s), Some(g), Some(v)),
            None => (None, group, None),
        };
        let entry = PitEntry {
            cid,
            action,
            group,
            key_version,
            session,
            state,
            settled_for_kernel: false,
            negotiation,
            idle_timeout,
            created: now,
            last_seen: now,
            remove_at: None,
            tcp: Default::default(),
            counters: Default::default(),
            summary: summary.clone(),
            watch: Default::default(),
            reassembly: Default::default(),
        };
        if let Some(old) = self.pit.insert(entry) {
            self.entry_removed(old, RemovalReason::Replaced);
        }
        self.arm(now + idle_timeout, TimerKey::Pit(cid.canonical()));
        self.events.push_back(Event::FlowDecided {
            cid,
            action,
            summary,
            provisional: state == EntryState::Provisional,
        });
    }

    // ----- DPRP messages ------------------------------------------------------------------

    /// A DPRP message as an IP datagram from `src` to `dst`.
    fn control_packet(header: &HeaderRepr, body: Body, src: IpAddr, dst: IpAddr) -> Option<Vec<u8>> {
        let payload = MessageRepr { header: *header, body }.emit().ok()?;
        DatagramRepr {
            cid: Cid { proto: L4Proto::Udp, src, src_port: DPRP_PORT, dst, dst_port: DPRP_PORT },
            ttl: 64,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_mss: None,
            payload: &payload,
        }
        .emit()
        .ok()
    }

    fn emit_control(&mut self, header: &HeaderRepr, body: Body, src: IpAddr, dst: IpAddr) -> Option<Vec<u8>> {
        let msg_type = body.message_type();
        let packet = Self::control_packet(header, body, src, dst)?;
        // Only the end GE's CDN may wait: nothing on the data path depends on it.
        self.push_control(packet.clone(), matches!(msg_type, gscip_wire::dprp::MessageType::Cdn));
        Some(packet)
    }

    fn resend(&mut self, packet: Vec<u8>) {
        self.push_control(packet, false);
    }

    fn push_control(&mut self, packet: Vec<u8>, deferrable: bool) {
        self.counters.control_sent += 1;
        self.transmits.push_back(Transmit {
            packet,
            to_local: false,
            kind: TransmitKind::Control,
            tag: 0,
            deferrable,
            fast_path: None,
        });
    }

    fn record_params(&self, n: &Negotiation) -> RecordParams {
        RecordParams {
            side: n.side,
            aead_supported: self.cfg.aead_supported,
            aead_preferred: self.cfg.aead.bit(),
            idle_timeout_s: u32::try_from(self.cfg.idle_timeout.0 / 1_000_000).unwrap_or(u32::MAX).max(1),
            nonce: n.nonce,
            ephemeral_public: n.eph_public,
        }
    }

    fn peer_error(&mut self, cid: Option<Cid>, error: PeerError) {
        self.counters.bad_control += 1;
        self.events.push_back(Event::PeerMisbehaved { cid, error });
    }

    fn handle_dprp(&mut self, now: Timestamp, buf: &mut Vec<u8>, dg: &Datagram) -> Verdict {
        let msg = match MessageRepr::parse(&buf[dg.payload_offset..dg.end]) {
            Ok(m) => m,
            // A later version of DPRP: this GE cannot take part, but must not block it (it
            // still enforces its own boundary on the flow's data packets).
            Err(WireError::UnsupportedVersion(_)) => return Verdict::Accept,
            Err(e) => {
                self.peer_error(None, PeerError::Malformed(e));
                return Verdict::Drop(DropReason::Malformed);
            }
        };
        let h = msg.header;
        self.keep_awake(now);
        let restart = h.flags & FLAG_RESTART != 0;
        let toward_source = restart || matches!(msg.body, Body::Rgi { .. } | Body::Cdn { .. });
        let expected = if toward_source { (h.cid.dst, h.cid.src) } else { (h.cid.src, h.cid.dst) };
        if (dg.cid.src, dg.cid.dst) != expected || h.cid.src.is_ipv4() != dg.cid.src.is_ipv4() {
            self.peer_error(Some(h.cid), PeerError::Inconsistent("DPRP message addresses disagree with its CID"));
            return Verdict::Drop(DropReason::BadControl);
        }
        if restart && !matches!(msg.body, Body::Dde { .. }) {
            self.peer_error(Some(h.cid), PeerError::Inconsistent("restart flag on a message other than DDE"));
            return Verdict::Drop(DropReason::BadControl);
        }
        match msg.body {
            Body::Dde { extensions } if restart => self.on_restart_request(now, h, &extensions),
            Body::Dde { extensions } => self.on_dde(now, h, &extensions),
            Body::Rgi { records } => self.on_rgi(now, h, records, buf),
            Body::Mpit { records } => self.on_mpit(now, h, &records),
            Body::Cdn { status, confirmation, signer, signature, macs, extensions } => {
                self.on_cdn(now, h, status, confirmation, &signer, &signature, &macs, &extensions)
            }
        }
    }

    fn on_restart_request(&mut self, now: Timestamp, h: HeaderRepr, ext: &[Extension]) -> Verdict {
        let cid = h.cid;
        let flow = cid.canonical();
        if has_unknown_critical(ext) {
            // Not ours to answer or to probe for; pass it on.
            return if self.is_innermost_for(now, cid.src) { Verdict::Consumed } else { Verdict::Accept };
        }
        if self.is_innermost_for(now, cid.src) {
            self.answer_restart(now, cid);
            return Verdict::Consumed;
        }
        if self.is_router_kind() && self.protects(cid.src) && self.cached(now, cid.src).is_none() {
            let deadline = now + self.cfg.probe_timeout;
            self.restart_probes.insert(flow, (cid, deadline));
            self.arm(deadline, TimerKey::RestartProbe(flow));
        }
        Verdict::Accept
    }

    fn answer_restart(&mut self, now: Timestamp, cid: Cid) {
        let flow = cid.canonical();
        if self.by_flow.contains_key(&flow) {
            return; // a negotiation is already under way
        }
        if let Some(t) = self.restart_answered.get(&flow) {
            if now - *t < Micros::from_secs(1) {
                return; // at most one restart per flow per second
            }
        }
        if self.restart_answered.len() > 65_536 {
            self.restart_answered.clear();
        }
        self.restart_answered.insert(flow, now);
        self.counters.restarts_answered += 1;
        let key = self.initiate(now, cid);
        // Packets waiting here for our own restart request (both ends lost state) join it.
        if let Some(r) = self.restarts.remove(&flow) {
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.held.extend(r.held);
            }
        }
        self.start_or_finish(now, key);
    }

    fn on_dde(&mut self, now: Timestamp, h: HeaderRepr, ext: &[Extension]) -> Verdict {
        let key = NegKey { cid: h.cid, nonce: h.nonce };
        if let Some(n) = self.negotiations.get(&key) {
            // A retransmitted DDE: answer again if this GE is the end, else pass it on.
            if n.initiator {
                return Verdict::Consumed;
            }
            if n.end == EndRole::End {
                if let Some(p) = n.last_sent.clone() {
                    self.resend(p);
                }
                return Verdict::Consumed;
            }
            return Verdict::Accept;
        }
        let flow = h.cid.canonical();
        if let Some(other) = self.by_flow.get(&flow).copied() {
            let ours_wins = self
                .negotiations
                .get(&other)
                .is_some_and(|o| o.initiator && o.stage == Stage::AwaitRgi && o.header.nonce < h.nonce);
            if ours_wins {
                return Verdict::Consumed; // the other initiator will adopt ours
            }
        }
        let inherited = self.inherit_for(now, &h, false);
        if self.negotiations.len() >= self.cfg.max_negotiations {
            self.drop_held(inherited);
            return Verdict::Accept;
        }
        let mut n = self.new_negotiation(h, false, now);
        n.held = inherited;
        n.end = self.end_role(now, h.cid.dst);
        n.cannot_answer = has_unknown_critical(ext);
        n.hint = ext
            .iter()
            .find(|e| e.kind == Extension::PATH_HINT)
            .and_then(|e| parse_path_hint(&e.value).ok())
            .unwrap_or_default();
        n.ahead_with = ephemeral_key_in(ext, Extension::INITIATOR_EPHEMERAL);
        if n.end == EndRole::End && n.cannot_answer {
            self.drop_held(n.held);
            return Verdict::Consumed; // cannot honour a critical extension
        }
        if n.end == EndRole::End {
            // The initiator names the key this GE announced in its last CDN to it, with which
            // it has computed the agreement ahead: this negotiation's key, if still held.
            let named = ephemeral_key_in(ext, Extension::END_EPHEMERAL);
            let window = self.cfg.ge_cache_ttl;
            if let Some((announced, at)) = named.and_then(|pk| self.announced_keys.remove(&pk)) {
                if now - at < window {
                    let pooled = EphemeralKey {
                        secret: std::mem::replace(&mut n.eph_secret, announced.secret),
                        public: std::mem::replace(&mut n.eph_public, announced.public),
                        key: std::mem::replace(&mut n.eph_key, announced.key),
                    };
                    if self.ephemeral_ahead.len() < self.cfg.ephemeral_keys_ahead {
                        self.ephemeral_ahead.push(pooled);
                    }
                }
            }
        }
        let wait = match n.end {
            EndRole::Probe => self.cfg.probe_timeout,
            _ => self.lifetime(),
        };
        n.deadline = now + wait;
        let end = n.end;
        self.insert_negotiation(key, n);
        self.arm(now + wait, TimerKey::Negotiation(key));
        if end == EndRole::End {
            self.answer_as_end(now, key);
            return Verdict::Consumed;
        }
        if end == EndRole::NotEnd {
            self.note_dde_pass(now, h.cid.dst);
        }
        Verdict::Accept
    }

    /// What a negotiation this GE joins (at its DDE, or at its RGI) takes over: the packets held
    /// by an older negotiation of the same flow, or waiting for this GE's restart request, which
    /// the new negotiation answers. At the RGI (`at_rgi`) a negotiation this GE started itself
    /// is left alone.
    fn inherit_for(&mut self, now: Timestamp, h: &HeaderRepr, at_rgi: bool) -> VecDeque<Held> {
        let flow = h.cid.canonical();
        let mut inherited = VecDeque::new();
        if let Some(other) = self.by_flow.get(&flow).copied() {
            let own = self.negotiations.get(&other).is_some_and(|o| o.initiator);
            if !(at_rgi && own) {
                if let Some(o) = self.remove_negotiation(&other) {
                    inherited = o.held;
                }
            }
        }
        if let Some(r) = self.restarts.remove(&flow) {
            // The GE near the source answered our restart request.
            self.learn(now, r.cid.src, true);
            inherited.extend(r.held);
        }
        if self.restart_probes.remove(&flow).is_some() {
            // A GE further inside answered the restart request we passed on to it.
            self.learn(now, h.cid.src, true);
        }
        inherited
    }

    /// How long a participant keeps a negotiation's state.
    fn lifetime(&self) -> Micros {
        // The initiator's whole retransmission schedule, plus slack.
        self.cfg.dprp_rto.saturating_mul((1u64 << self.cfg.dprp_max_attempts.min(16)) + 1)
    }

    /// Starts the RGI with this GE's record.
    fn answer_as_end(&mut self, now: Timestamp, key: NegKey) {
        let Some(n) = self.negotiations.get(&key) else { return };
        if n.cannot_answer {
            if let Some(n) = self.remove_negotiation(&key) {
                self.drop_held(n.held);
            }
            return;
        }
        let header = n.header;
        let prev = transcript::chain_seed(&header);
        let mut rec = transcript::build_record(&self.identity, &self.keys, &prev, &self.record_params(n));
        self.mac_own_record(now, &mut rec, &prev, n.hint.iter().map(String::as_str));
        let own = transcript::record_hash(&rec);
        let msg = self.emit_control(&header, Body::Rgi { records: vec![rec] }, header.cid.dst, header.cid.src);
        let lifetime = self.lifetime();
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.own_record = Some(own);
            n.end = EndRole::End;
            n.stage = Stage::AwaitMpit;
            n.sent_at = now;
            n.last_sent = msg;
            n.deadline = now + lifetime;
            if n.ahead_with.is_some() && self.pending_agreements.len() < PENDING_AGREEMENTS_MAX {
                self.pending_agreements.push_back(key);
            }
        }
        self.arm(now + lifetime, TimerKey::Negotiation(key));
    }

    /// An RGI. A GE in the middle appends its record and passes the RGI on in place of the one
    /// it met (`buf`, the packet handed in, is replaced: no packet of its own to send).
    fn on_rgi(&mut self, now: Timestamp, h: HeaderRepr, mut records: Vec<GeRecordRepr>, buf: &mut Vec<u8>) -> Verdict {
        let key = NegKey { cid: h.cid, nonce: h.nonce };
        if !self.negotiations.contains_key(&key) {
            // The DDE did not come here (it passed in the kernel, or took another route, or
            // this GE restarted): join now. The path hint came with the DDE; in its place, the
            // GEs of the last path verified for a flow from the same source.
            if self.negotiations.len() >= self.cfg.max_negotiations {
                return Verdict::Accept;
            }
            let inherited = self.inherit_for(now, &h, true);
            let mut n = self.new_negotiation(h, false, now);
            n.held = inherited;
            n.hint = self.source_hints.get(&h.cid.src).cloned().unwrap_or_default();
            self.counters.negotiations_joined_at_rgi += 1;
            self.insert_negotiation(key, n);
            let at = now + self.lifetime();
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.deadline = at;
            }
            self.arm(at, TimerKey::Negotiation(key));
        }
        let Some(n) = self.negotiations.get(&key) else { return Verdict::Accept };
        if n.initiator {
            if n.stage == Stage::AwaitRgi {
                self.initiator_on_rgi(now, key, records);
            }
            return Verdict::Consumed;
        }
        if n.end == EndRole::End {
            // A GE further inside answered after this one had: ours stands.
            return Verdict::Consumed;
        }
        if records.is_empty() || records.len() >= gscip_wire::dprp::MAX_RECORDS {
            self.peer_error(Some(h.cid), PeerError::Inconsistent("RGI with no room or no records"));
            return Verdict::Drop(DropReason::BadControl);
        }
        let prev = transcript::chain_over(&h, &records);
        let mut rec = transcript::build_record(&self.identity, &self.keys, &prev, &self.record_params(n));
        let peers = n.hint.iter().chain(records.iter().map(|r| &r.certificate.name)).map(String::as_str);
        self.mac_own_record(now, &mut rec, &prev, peers);
        let own = transcript::record_hash(&rec);
        records.push(rec);
        self.learn(now, h.cid.dst, true);
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.own_record = Some(own);
            n.stage = Stage::AwaitMpit;
            n.end = EndRole::NotEnd;
            n.sent_at = now;
        }
        match Self::control_packet(&h, Body::Rgi { records }, h.cid.dst, h.cid.src) {
            Some(packet) => {
                self.counters.control_sent += 1;
                *buf = packet;
                Verdict::Accept
            }
            None => Verdict::Consumed,
        }
    }

    fn initiator_on_rgi(&mut self, now: Timestamp, key: NegKey, mut records: Vec<GeRecordRepr>) {
        let Some(n) = self.negotiations.get(&key) else { return };
        let (h, first_attempt, sent_at) = (n.header, n.attempts == 1, n.sent_at);
        if records.len() >= gscip_wire::dprp::MAX_RECORDS {
            self.fail(now, key, "path too long");
            return;
        }
        let prev = transcript::chain_over(&h, &records);
        let mut rec = transcript::build_record(&self.identity, &self.keys, &prev, &self.record_params(n));
        self.mac_own_record(now, &mut rec, &prev, records.iter().map(|r| r.certificate.name.as_str()));
        let own = transcript::record_hash(&rec);
        records.push(rec);
        self.learn(now, h.cid.dst, true);
        if first_attempt {
            self.measure_round_trip(now - sent_at);
        }
        let path = match self.verify_path(now, &h, &records, Some(&own)) {
            Ok(p) => p,
            Err(e) => {
                self.peer_error(Some(h.cid), e.clone());
                self.fail(now, key, &e.to_string());
                return;
            }
        };
        let mpit = self.emit_control(&h, Body::Mpit { records: records.clone() }, h.cid.src, h.cid.dst);
        let rto = self.cfg.dprp_rto;
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.stage = Stage::AwaitCdn;
            n.last_sent = mpit;
            n.attempts = 1;
            n.deadline = now + rto;
        }
        self.arm(now + rto, TimerKey::Negotiation(key));
        // Provisional entry now; held packets follow the MPIT (which creates the entries
        // downstream before they arrive).
        self.adopt_path(now, key, &records, path);
    }

    /// Makes this GE's PIT entry from a verified path and releases its held packets.
    /// Returns the confirmation hash.
    fn adopt_path(
        &mut self,
        now: Timestamp,
        key: NegKey,
        records: &[GeRecordRepr],
        path: VerifiedPath,
    ) -> Option<Chain> {
        let h = self.negotiations.get(&key)?.header;
        self.count_verifications(&path);
        self.queue_path_keys(now, key, records, &path);
        let ges: Vec<PathGe> = path.ges.iter().map(|v| v.ge.clone()).collect();
        let decision = decide(&ges);
        let confirm = transcript::confirmation(&path.final_chain, &decision.outcome);
        let me = ges.iter().position(|g| g.name == self.name());
        let idle = records
            .iter()
            .map(|r| Micros::from_secs(u64::from(r.idle_timeout_s)))
            .chain(std::iter::once(self.cfg.idle_timeout))
            .min()
            .unwrap_or(self.cfg.idle_timeout);
        let summary = summarize(&ges, &decision, false);
        let end_rec = records.first()?;
        let end_hash = path.ges.iter().find(|v| v.record_index == 0).map(|v| v.certificate_hash)?;
        let end_signer = (end_rec.certificate.name.clone(), end_rec.certificate.public_key, end_hash);
        let (action, session, group) = match me {
            Some(i) => {
                let action = decision.actions[i];
                match (action, decision.outcome) {
                    (FlowAction::Encrypt | FlowAction::Decrypt, Outcome::Protected { encryptor, decryptor, group }) => {
                        match self.pair_session(&h, records, &path, i, encryptor, decryptor, group) {
                            Some(s) => (action, Some(s), Some(group)),
                            None => (self.fallback_action(ges[i].side), None, None),
                        }
                    }
                    (_, Outcome::Protected { group, .. }) => (action, None, Some(group)),
                    _ => (action, None, None),
                }
            }
            None => {
                // This GE is not on the verified path (its record was dropped): act on its own
                // boundary only.
                let side = self.side_of(&h.cid);
                let a = match decision.outcome {
                    Outcome::Protected { .. } => FlowAction::Relay,
                    _ if side != Side::Transit && self.mode == Mode::Closed => FlowAction::Discard,
                    Outcome::Plaintext => FlowAction::Plain,
                    Outcome::Discarded { .. } => FlowAction::Discard,
                };
                (a, None, None)
            }
        };
        let held = {
            let n = self.negotiations.get_mut(&key)?;
            n.confirm = Some(confirm);
            n.end_signer = Some(end_signer);
            std::mem::take(&mut n.held)
        };
        self.install(now, h.cid, h.nonce, action, session, group, EntryState::Provisional, idle, summary);
        if me.is_some_and(|i| self.settled_for_kernel(&ges, i, action)) {
            if let Some((e, _)) = self.pit.get_mut(&h.cid) {
                e.settled_for_kernel = true;
            }
        }
        self.release(now, held);
        Some(confirm)
    }

    /// Whether the CDN cannot change what the kernel fast path would do with the flow at this
    /// GE (`ges[me]`, whose provisional action is `action`), so that it may take the flow over
    /// at once. Either this GE's fallback, should the negotiation fail, passes or drops as its
    /// action does (a transit or open GE relaying); or it relays and both the initiator and
    /// the end GE, the GEs nearest the flow's two endpoints, are closed: should the
    /// negotiation fail they discard the flow, so no plaintext of it reaches this GE but what
    /// a relayed flow's fast path passes anyway (docs/dprp.md section 9).
    fn settled_for_kernel(&self, ges: &[PathGe], me: usize, action: FlowAction) -> bool {
        let fast = fast_path_of(action);
        if fast.is_some() && fast == fast_path_of(self.fallback_action(ges[me].side)) {
            return true;
        }
        let ends_closed = |a: Option<&PathGe>| a.is_some_and(|g| g.mode == Mode::Closed);
        action == FlowAction::Relay
            && me != 0
            && me + 1 != ges.len()
            && ends_closed(ges.first())
            && ends_closed(ges.last())
    }

    /// Derives the pair's PCCOM session when this GE is one of its ends.
    #[allow(clippy::too_many_arguments)]
    fn pair_session(
        &mut self,
        h: &HeaderRepr,
        records: &[GeRecordRepr],
        path: &VerifiedPath,
        me: usize,
        encryptor: usize,
        decryptor: usize,
        group: GroupId,
    ) -> Option<(PccomSession, GroupId, u32)> {
        let n = self.negotiations.get(&NegKey { cid: h.cid, nonce: h.nonce })?;
        let other = if me == encryptor { decryptor } else { encryptor };
        let other_v = &path.ges[other];
        let version = other_v.proven_versions.iter().filter(|(g, _)| *g == group).map(|(_, v)| *v).max()?;
        let gk = self.keys.get(group, version)?;
        let other_rec = &records[other_v.record_index];
        let material = match &n.agreement_ahead {
            // Computed ahead with the key the other end announced: good only if it is the key
            // the verified record carries.
            Some(shared) if n.ahead_with == Some(other_rec.ephemeral_public) => {
                self.counters.agreements_ahead_used += 1;
                derive_flow_keys(gk, &shared[..], &path.final_chain)
            }
            _ => {
                let my_key = n.eph_key.as_ref()?;
                let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, other_rec.ephemeral_public);
                agreement::agree(my_key, peer, (), |shared| Ok(derive_flow_keys(gk, shared, &path.final_chain))).ok()?
            }
        };
        let enc_rec = &records[path.ges[encryptor].record_index];
        let dec_rec = &records[path.ges[decryptor].record_index];
        let alg = AeadAlgorithm::choose(
            enc_rec.aead_preferred,
            enc_rec.aead_supported,
            dec_rec.aead_preferred,
            dec_rec.aead_supported,
        );
        let epoch = h.nonce[0] & 0x0f;
        let session = if me == encryptor {
            PccomSession::new(alg, epoch, material.flow_id, &material.forward, &material.reverse)
        } else {
            PccomSession::new(alg, epoch, material.flow_id, &material.reverse, &material.forward)
        }
        .ok()?;
        Some((session, group, version))
    }

    fn on_mpit(&mut self, now: Timestamp, h: HeaderRepr, records: &[GeRecordRepr]) -> Verdict {
        let key = NegKey { cid: h.cid, nonce: h.nonce };
        let Some(n) = self.negotiations.get(&key) else {
            // Not part of this negotiation (or state lost): enforce our own boundary only by
            // negotiating afresh when data comes.
            return Verdict::Accept;
        };
        if n.initiator {
            return Verdict::Consumed;
        }
        let is_end = n.end == EndRole::End;
        if is_end && n.stage == Stage::AwaitCdn {
            // A retransmitted MPIT: the CDN was lost; send it again.
            if let Some(p) = n.last_sent.clone() {
                self.resend(p);
            }
            return Verdict::Consumed;
        }
        if n.stage == Stage::AwaitCdn {
            return Verdict::Accept; // a retransmitted MPIT: already adopted here
        }
        if is_end && n.stage != Stage::AwaitMpit {
            return Verdict::Consumed;
        }
        let my_rec_present = records
            .iter()
            .any(|r| r.certificate.name == self.name() && r.nonce == n.nonce && r.ephemeral_public == n.eph_public);
        let own = n.own_record;
        if n.stage == Stage::AwaitMpit && own.is_some() {
            let sample = now - n.sent_at;
            self.measure_round_trip(sample);
        }
        let path = self.verify_path(now, &h, records, own.as_ref());
        let path = match (path, my_rec_present) {
            (Ok(p), true) => p,
            (Ok(_), false) => {
                self.peer_error(Some(h.cid), PeerError::Inconsistent("this GE's record is missing from the MPIT"));
                return self.refuse(now, key, is_end);
            }
            (Err(e), _) => {
                self.peer_error(Some(h.cid), e);
                return self.refuse(now, key, is_end);
            }
        };
        let Some(confirm) = self.adopt_path(now, key, records, path) else {
            return self.refuse(now, key, is_end);
        };
        if is_end {
            self.finalize(&h.cid);
            self.counters.negotiations_completed += 1;
            // Keep the state until it expires so a retransmitted MPIT gets the CDN again, once
            // made: the signature waits until the caller asks for what can wait, after the
            // flow's first packet (right behind the MPIT) has had its verdict.
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.stage = Stage::AwaitCdn;
                n.last_sent = None;
            }
            let me = self.name();
            let peers = records.iter().map(|r| r.certificate.name.clone()).filter(|n| n != me).collect();
            let initiator = records.last().map(|r| r.certificate.name.clone()).unwrap_or_default();
            self.due_cdns.push_back(DueCdn { header: h, confirmation: confirm, peers, initiator, at: now });
            return Verdict::Consumed;
        }
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.stage = Stage::AwaitCdn;
        }
        Verdict::Accept
    }

    /// Makes (signs, MACs) and sends the CDNs this GE owes as end GE.
    fn make_due_cdns(&mut self) {
        while let Some(due) = self.due_cdns.pop_front() {
            let tbs = MessageRepr::cdn_to_be_signed(CdnStatus::Complete, &due.confirmation);
            let signature = self.identity.sign(&[&tbs]);
            let macs = self.path_keys.macs_for(
                due.at,
                Self::unix_s(due.at),
                due.peers.iter().map(String::as_str),
                &[CDN_MAC_CONTEXT, &tbs],
            );
            let extensions = self.announce_key(due.at, due.initiator).into_iter().collect();
            let body = Body::Cdn {
                status: CdnStatus::Complete,
                confirmation: due.confirmation,
                signer: self.name().to_owned(),
                signature,
                macs,
                extensions,
            };
            let (src, dst) = (due.header.cid.dst, due.header.cid.src);
            let cdn = self.emit_control(&due.header, body, src, dst);
            let key = NegKey { cid: due.header.cid, nonce: due.header.nonce };
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.last_sent = cdn;
            }
        }
    }

    /// The key for `initiator`'s next negotiation toward this GE, to announce in a CDN (section
    /// 14): the one announced to it before while unused and fresh (so a burst of flows from one
    /// initiator costs one key), else a new one; none when too many announced keys are unused.
    fn announce_key(&mut self, now: Timestamp, initiator: String) -> Option<Extension> {
        let window = self.cfg.ge_cache_ttl;
        let fresh = |keys: &HashMap<[u8; 32], (EphemeralKey, Timestamp)>, pk: &[u8; 32]| {
            keys.get(pk).is_some_and(|(_, at)| now - *at < Micros(window.0 / 2))
        };
        let public = match self.announced_to.get(&initiator) {
            Some(pk) if fresh(&self.announced_keys, pk) => *pk,
            _ => {
                if self.announced_keys.len() >= ANNOUNCED_KEYS_MAX || self.announced_to.len() >= ANNOUNCED_KEYS_MAX {
                    self.announced_keys.retain(|_, (_, at)| now - *at < window);
                    let keys = &self.announced_keys;
                    self.announced_to.retain(|_, pk| keys.contains_key(pk));
                    if self.announced_keys.len() >= ANNOUNCED_KEYS_MAX || self.announced_to.len() >= ANNOUNCED_KEYS_MAX
                    {
                        return None;
                    }
                }
                let key = self.ephemeral_ahead.pop().unwrap_or_else(|| new_ephemeral_key(&mut *self.rng));
                let public = key.public;
                self.announced_keys.insert(public, (key, now));
                self.announced_to.insert(initiator, public);
                public
            }
        };
        Some(Extension { kind: Extension::END_EPHEMERAL, value: public.to_vec() })
    }

    /// This GE cannot accept the negotiation: fall back, and if it is the end, say so.
    fn refuse(&mut self, now: Timestamp, key: NegKey, is_end: bool) -> Verdict {
        if is_end {
            // The negotiation's header (its flags included), as on its other messages.
            let header = self
                .negotiations
                .get(&key)
                .map_or(HeaderRepr { flags: 0, nonce: key.nonce, cid: key.cid }, |n| n.header);
            // Bound to this negotiation: a refusal cannot be replayed into another one.
            let bound = transcript::chain_seed(&header);
            let sig = self.identity.sign(&[&MessageRepr::cdn_to_be_signed(CdnStatus::Refused, &bound)]);
            let body = Body::Cdn {
                status: CdnStatus::Refused,
                confirmation: bound,
                signer: self.name().to_owned(),
                signature: sig,
                macs: Vec::new(),
                extensions: Vec::new(),
            };
            self.emit_control(&header, body, key.cid.dst, key.cid.src);
        }
        self.fail(now, key, "path could not be verified");
        if is_end {
            Verdict::Consumed
        } else {
            Verdict::Accept
        }
    }

    fn finalize(&mut self, cid: &Cid) {
        if let Some((e, _)) = self.pit.get_mut(cid) {
            e.state = EntryState::Final;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_cdn(
        &mut self,
        now: Timestamp,
        h: HeaderRepr,
        status: CdnStatus,
        confirm: Chain,
        signer: &str,
        signature: &[u8; 64],
        macs: &[RecordMac],
        extensions: &[Extension],
    ) -> Verdict {
        let key = NegKey { cid: h.cid, nonce: h.nonce };
        let Some(n) = self.negotiations.get(&key) else { return Verdict::Accept };
        let initiator = n.initiator;
        let pass = if initiator { Verdict::Consumed } else { Verdict::Accept };
        if n.end == EndRole::End {
            return Verdict::Consumed;
        }
        if n.stage != Stage::AwaitCdn {
            return pass;
        }
        let Some((ref end_name, end_key, end_certificate)) = n.end_signer else { return pass };
        if status == CdnStatus::Refused && confirm != transcript::chain_seed(&n.header) {
            // A refusal signed for another negotiation (replayed): not about this one.
            self.peer_error(Some(h.cid), PeerError::Inconsistent("refused CDN not bound to this negotiation"));
            return Verdict::Drop(DropReason::BadControl);
        }
        let tbs = MessageRepr::cdn_to_be_signed(status, &confirm);
        let by_mac = signer == end_name
            && !macs.is_empty()
            && self.path_keys.verifies(
                now,
                Self::unix_s(now),
                signer,
                &end_certificate,
                macs,
                &[CDN_MAC_CONTEXT, &tbs],
            );
        if by_mac {
            self.counters.macs_verified += 1;
        } else if signer == end_name && verify_signature(&end_key, &[&tbs], signature) {
            self.counters.signatures_verified += 1;
        } else {
            self.peer_error(Some(h.cid), PeerError::BadSignature(signer.to_owned()));
            return Verdict::Drop(DropReason::BadControl);
        }
        let agreed = status == CdnStatus::Complete && n.confirm == Some(confirm);
        if agreed {
            self.finalize(&h.cid);
            if let Some(n) = self.remove_negotiation(&key) {
                self.drop_held(n.held);
            }
            if initiator {
                self.counters.negotiations_completed += 1;
                // The end GE's key for the next negotiation toward the same destination.
                if let Some(pk) = ephemeral_key_in(extensions, Extension::END_EPHEMERAL) {
                    if self.end_keys.len() >= ANNOUNCED_KEYS_MAX {
                        self.end_keys.clear();
                    }
                    self.end_keys.insert(h.cid.dst, (pk, now));
                }
            }
        } else {
            self.fail(now, key, "the end GE refused or decided otherwise");
        }
        pass
    }

    /// The destination `host` itself said "port unreachable" to a DPRP message (quoted in part
    /// or whole in `quoted`): no GE lies between this GE and it.
    fn on_icmp_about_dprp(&mut self, now: Timestamp, e: &IcmpErrorRepr, quoted: &[u8]) -> Verdict {
        let host = e.quoted_dst;
        let passed_unseen = self.passed_ddes_toward(now, host);
        self.learn(now, host, false);
        let mut consumed = false;
        let waiting: Vec<NegKey> = self
            .negotiations
            .iter()
            .filter(|(k, n)| k.cid.dst == host && n.stage == Stage::AwaitRgi)
            .map(|(k, _)| *k)
            .collect();
        for key in waiting {
            consumed = true;
            let initiator = self.negotiations.get(&key).is_some_and(|n| n.initiator);
            if initiator {
                self.finish_alone(now, key);
            } else {
                self.answer_as_end(now, key);
            }
        }
        let restarts: Vec<Cid> = self.restarts.iter().filter(|(_, r)| r.cid.src == host).map(|(f, _)| *f).collect();
        for flow in restarts {
            consumed = true;
            self.restart_timed_out(now, flow);
        }
        let probes: Vec<Cid> =
            self.restart_probes.iter().filter(|(_, (c, _))| c.src == host).map(|(f, _)| *f).collect();
        for flow in probes {
            consumed = true;
            if let Some((cid, _)) = self.restart_probes.remove(&flow) {
                self.answer_restart(now, cid);
            }
        }
        if passed_unseen {
            // Maybe a DDE this GE let pass unseen, toward a host that turned out to have no GE
            // (gone since it was learned): this GE is its end GE. It answers from the quote,
            // or, when the quote does not hold the whole DDE, keeps the error from the
            // initiator (which would conclude that no GE lies before the host at all) and lets
            // it retransmit its DDE, which comes here now.
            if let Ok(m) = MessageRepr::parse(quoted) {
                let h = m.header;
                let unseen = !self.negotiations.contains_key(&NegKey { cid: h.cid, nonce: h.nonce });
                if let Body::Dde { extensions } = m.body {
                    let addressed = (h.cid.src, h.cid.dst) == (e.quoted_src, e.quoted_dst);
                    if unseen && addressed && h.flags & FLAG_RESTART == 0 {
                        self.counters.ddes_recovered_from_icmp += 1;
                        self.on_dde(now, h, &extensions);
                    }
                }
            }
            return Verdict::Consumed;
        }
        if consumed {
            Verdict::Consumed
        } else {
            Verdict::Accept
        }
    }

    /// Nobody near the source answered our restart request: this GE is the first one.
    fn restart_timed_out(&mut self, now: Timestamp, flow: Cid) {
        let Some(r) = self.restarts.remove(&flow) else { return };
        let key = self.initiate(now, r.cid);
        if let Some(n) = self.negotiations.get_mut(&key) {
            n.held = r.held;
        }
        self.start_when_room(now, key);
    }

    // ----- timers -------------------------------------------------------------------------

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match key {
                TimerKey::Negotiation(k) => self.negotiation_timer(now, k),
                TimerKey::Restart(flow) => {
                    if self.restarts.get(&flow).is_some_and(|r| r.deadline <= now) {
                        // No answer is no proof that the source has no GE in front of it (the
                        // request or the answer may be lost, the flow may be closing there):
                        // nothing is learned, or one lost exchange would make this GE decide
                        // alone for every new flow with that host until the cache expires.
                        self.restart_timed_out(now, flow);
                    }
                }
                TimerKey::RestartProbe(flow) => {
                    if self.restart_probes.get(&flow).is_some_and(|(_, d)| *d <= now) {
                        if let Some((cid, _)) = self.restart_probes.remove(&flow) {
                            self.learn(now, cid.src, false);
                            self.answer_restart(now, cid);
                        }
                    }
                }
                TimerKey::Pit(flow) => self.pit_timer(now, flow),
                TimerKey::Pieces(flow) => self.pieces_timer(now, flow),
            }
        }
        if !self.waiting.is_empty() {
            self.start_waiting(now);
        }
    }

    fn negotiation_timer(&mut self, now: Timestamp, key: NegKey) {
        let Some(n) = self.negotiations.get(&key) else { return };
        if n.deadline > now {
            return; // a stale timer
        }
        let (initiator, stage, end, attempts) = (n.initiator, n.stage, n.end, n.attempts);
        if initiator {
            if stage == Stage::AwaitRgi && end == EndRole::Probe && attempts == 1 {
                // Nothing answered from inside: the destination has no GE of its own.
                self.learn(now, key.cid.dst, false);
                self.finish_alone(now, key);
                return;
            }
            if attempts >= self.cfg.dprp_max_attempts {
                if stage == Stage::AwaitCdn {
                    // Every GE decided for itself on the MPIT; only the confirmation is missing.
                    self.finalize(&key.cid);
                    if let Some(n) = self.remove_negotiation(&key) {
                        self.drop_held(n.held);
                    }
                    self.counters.negotiations_completed += 1;
                } else {
                    self.fail(now, key, "no answer to DDE");
                }
                return;
            }
            let wait = self.cfg.dprp_rto.saturating_mul(1 << attempts.min(16));
            let packet = n.last_sent.clone();
            if let Some(n) = self.negotiations.get_mut(&key) {
                n.attempts += 1;
                n.deadline = now + wait;
            }
            if let Some(p) = packet {
                self.resend(p);
            }
            self.arm(now + wait, TimerKey::Negotiation(key));
            return;
        }
        if stage == Stage::AwaitRgi && end == EndRole::Probe {
            self.learn(now, key.cid.dst, false);
            self.answer_as_end(now, key);
            return;
        }
        if let Some(n) = self.remove_negotiation(&key) {
            self.drop_held(n.held);
        }
    }

    fn pit_timer(&mut self, now: Timestamp, flow: Cid) {
        let Some((e, _)) = self.pit.get(&flow) else { return };
        let reason = match e.remove_at {
            Some(at) if at <= now => Some(RemovalReason::TcpClosed),
            _ if now - e.last_seen >= e.idle_timeout => Some(RemovalReason::Idle),
            _ => None,
        };
        match reason {
            Some(reason) => {
                if let Some(e) = self.pit.remove(&flow) {
                    self.entry_removed(e, reason);
                }
            }
            None => {
                let next = e.remove_at.unwrap_or(e.last_seen + e.idle_timeout).min(e.last_seen + e.idle_timeout);
                let next = if next <= now { now + Micros(1) } else { next };
                self.arm(next, TimerKey::Pit(flow));
            }
        }
    }
}

/// Seals with the entry's session (none: the entry cannot seal; it is renegotiated).
fn seal_with(e: &mut PitEntry, buf: &mut Vec<u8>, dg: &mut Datagram, max_len: usize) -> Result<(), SealError> {
    match e.session.as_mut() {
        Some(s) => s.seal(buf, dg, max_len),
        None => Err(SealError::CounterExhausted),
    }
}

/// A held piece that will not go on: its packet is dropped (the caller is told by its tag) and
/// its buffer kept for the next piece.
fn drop_piece(transmits: &mut VecDeque<Transmit>, pool: &mut Vec<Vec<u8>>, p: Piece) {
    transmits.push_back(Transmit {
        packet: Vec::new(),
        to_local: false,
        kind: TransmitKind::Dropped,
        tag: p.tag,
        deferrable: false,
        fast_path: None,
    });
    if pool.len() < UNIT_POOL_MAX {
        let mut b = p.packet;
        b.clear();
        pool.push(b);
    }
}

/// What a held packet waits for.
#[derive(Clone, Copy)]
enum WaitingOn {
    Negotiation(NegKey),
    Restart(Cid),
}

#[derive(Clone, Copy)]
struct HoldLimits {
    per_flow: usize,
    total: usize,
    bytes: usize,
}

/// Takes the packet into a hold queue, within the per-flow and per-GE bounds.
fn hold(
    queue: Option<&mut VecDeque<Held>>,
    (held_total, held_bytes): (&mut usize, &mut usize),
    counters: &mut Counters,
    limits: HoldLimits,
    buf: &mut Vec<u8>,
    to_local: bool,
    tag: u64,
) -> Verdict {
    let Some(queue) = queue else { return Verdict::Drop(DropReason::HoldOverflow) };
    if queue.len() >= limits.per_flow || *held_total >= limits.total || *held_bytes + buf.len() > limits.bytes {
        counters.hold_overflow += 1;
        return Verdict::Drop(DropReason::HoldOverflow);
    }
    *held_bytes += buf.len();
    queue.push_back(Held { packet: std::mem::take(buf), to_local, tag });
    *held_total += 1;
    counters.held += 1;
    Verdict::Held
}

/// The ephemeral key an extension of `kind` carries, if any (one that does not parse is ignored).
fn ephemeral_key_in(ext: &[Extension], kind: u8) -> Option<[u8; 32]> {
    ext.iter().find(|e| e.kind == kind).and_then(|e| parse_ephemeral_key(&e.value).ok())
}

/// Version 1 knows no extension: any critical one is unknown.
fn has_unknown_critical(ext: &[Extension]) -> bool {
    ext.iter().any(|e| e.kind & Extension::CRITICAL != 0)
}

fn summarize(path: &[PathGe], d: &Decision, fallback: bool) -> DecisionSummary {
    let (group, enc, dec) = match d.outcome {
        Outcome::Protected { encryptor, decryptor, group } => {
            (Some(group), Some(path[encryptor].name.clone()), Some(path[decryptor].name.clone()))
        }
        _ => (None, None, None),
    };
    DecisionSummary {
        path: path.iter().map(|g| g.name.clone()).collect(),
        actions: d.actions.clone(),
        group,
        encrypted_by: enc,
        decrypted_by: dec,
        fallback,
    }
}

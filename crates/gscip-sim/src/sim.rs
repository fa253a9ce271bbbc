//! The event loop: every GE runs the real `gscip-core` engine; packets are real bytes on
//! virtual links in virtual time; applications are small TCP and UDP state machines that send
//! a unique random payload each way.

use crate::gms::BuiltinGms;
use crate::paths::{flow_report, FlowPath, Observation, ObservedDecision};
use crate::report::Report;
use crate::scenario::{FlowDef, ModeDef, NodeKind, Proto, Scenario};
use crate::topology::{Hop, NodeId, Topology};
use gscip_core::engine::{Engine, Event, GeConfig, TransmitKind, Verdict};
use gscip_core::keysource::KeySource;
use gscip_core::policy::{FlowAction, Outcome};
use gscip_core::{GeKind, Mode, Timestamp};
use gscip_wire::icmp::{emit_error, IcmpErrorKind, IcmpErrorRepr};
use gscip_wire::ip::{tcp_flags, Datagram, DatagramRepr, Ipv4Packet, Ipv6Packet};
use gscip_wire::{dprp, Cid, L4Proto};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::IpAddr;

/// Virtual time starts here (seconds since the Unix epoch: 2027-01-15), so certificates carry
/// realistic dates.
pub const EPOCH_S: u64 = 1_800_000_000;
/// Flows start this far apart.
pub const FLOW_SPACING_US: u64 = 200_000;
/// The simulation stops this long after the last flow started.
pub const RUN_AFTER_LAST_US: u64 = 30_000_000;
const PAYLOAD_LEN: usize = 32;
/// Request/response rounds each flow's application makes before it closes.
pub const ROUNDS: u32 = 3;
/// Pause between rounds.
pub const ROUND_GAP_US: u64 = 20_000;

/// Ways to make the simulation misbehave on purpose (tests of the report and of recovery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The named GE "forgets" to encrypt: it sends the plaintext where it should seal.
    SkipEncryption { ge: String },
    /// The named GE loses all its state at this virtual time (µs after the start).
    RestartGe { ge: String, at_us: u64 },
}

/// Why a simulation could not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Setup(String),
}

#[derive(Debug)]
enum SimEvent {
    Arrive { node: NodeId, packet: Vec<u8>, rest: Vec<Hop> },
    EngineTimer { node: NodeId },
    FlowStart { flow: usize },
    AppTimer { flow: usize, generation: u32 },
    Restart { node: NodeId },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientStage {
    Idle,
    SynSent,
    DataSent,
    /// Waiting to send the next round.
    Pause,
    FinSent,
    Done,
    Failed,
}

/// Per-flow application state and what the simulator observed about it.
#[derive(Debug)]
struct FlowState {
    def: FlowDef,
    client: NodeId,
    server: NodeId,
    cid: Cid,
    p1: Vec<u8>,
    p2: Vec<u8>,
    stage: ClientStage,
    generation: u32,
    attempts: u32,
    started: Option<u64>,
    first_arrival: Option<u64>,
    got_p1: bool,
    got_p2: bool,
    /// Rounds completed (the client got the reply).
    rounds: u32,
    failed_early: bool,
    retransmissions: u32,
    /// (time, link) where a payload was seen in clear.
    plaintext: Vec<(u64, String)>,
    path: FlowPath,
    base_latency_us: u64,
}

/// What a test may want to know about a flow beyond the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowStats {
    pub name: String,
    /// Application-level retransmissions (SYN, data, UDP datagram).
    pub retransmissions: u32,
    pub failed_early: bool,
}

/// A simulation of one scenario.
pub struct Simulation {
    scenario: Scenario,
    topo: Topology,
    engines: Vec<Option<Engine>>,
    enrolled: HashMap<NodeId, crate::gms::EnrolledGe>,
    configs: HashMap<NodeId, GeConfig>,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    pending: HashMap<usize, SimEvent>,
    next_event: usize,
    timer_at: Vec<Option<u64>>,
    rng: ChaCha20Rng,
    flows: Vec<FlowState>,
    /// Per node: decisions seen (flow canonical CID -> (negotiation CID, action, summary)).
    decisions: Vec<HashMap<Cid, (Cid, FlowAction, gscip_core::pit::DecisionSummary)>>,
    /// Per node: flows whose packets it dropped as discarded.
    discards: Vec<HashMap<Cid, u64>>,
    faults: Vec<Fault>,
    seed: u64,
}

impl std::fmt::Debug for Simulation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulation")
            .field("scenario", &self.scenario.name)
            .field("now", &self.now)
            .finish_non_exhaustive()
    }
}

fn core_kind(k: NodeKind) -> Option<GeKind> {
    match k {
        NodeKind::Ges => Some(GeKind::Ges),
        NodeKind::Gen => Some(GeKind::Gen),
        NodeKind::Gea => Some(GeKind::Gea),
        NodeKind::Gnat => Some(GeKind::Gnat),
        NodeKind::Gsra => Some(GeKind::Gsra),
        _ => None,
    }
}

fn core_mode(m: Option<ModeDef>) -> Mode {
    match m {
        Some(ModeDef::Open) => Mode::Open,
        _ => Mode::Closed,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

impl Simulation {
    pub fn new(scenario: &Scenario) -> Result<Simulation, SimError> {
        for n in &scenario.nodes {
            if matches!(n.kind, NodeKind::Nat | NodeKind::Gnat | NodeKind::Gsra) {
                return Err(SimError::Unsupported(format!(
                    "node {:?}: kind `{}` needs NAT (extended DPRP / NAT-f, GSRA), which the simulator does not support yet",
                    n.name,
                    n.kind.as_str()
                )));
            }
        }
        let topo = Topology::new(scenario);
        let seed = scenario.sim.seed;
        let groups: Vec<u16> = scenario.groups.iter().map(|g| g.id).collect();
        let mut gms = BuiltinGms::new(seed, &groups, EPOCH_S).map_err(|e| SimError::Setup(e.to_string()))?;
        let mut engines = Vec::new();
        let mut enrolled = HashMap::new();
        let mut configs = HashMap::new();
        for (i, n) in scenario.nodes.iter().enumerate() {
            let Some(kind) = core_kind(n.kind) else {
                engines.push(None);
                continue;
            };
            let e = gms
                .enroll(&n.name, kind, core_mode(n.mode), &n.groups)
                .map_err(|e| SimError::Setup(format!("node {:?}: {e}", n.name)))?;
            let cfg = GeConfig {
                protected: topo.protected(i),
                local_addrs: topo.addresses(i).collect(),
                ..GeConfig::default()
            };
            configs.insert(i, cfg);
            enrolled.insert(i, e);
            engines.push(None);
        }
        let mut sim = Simulation {
            scenario: scenario.clone(),
            engines,
            enrolled,
            configs,
            now: EPOCH_S * 1_000_000,
            seq: 0,
            queue: BinaryHeap::new(),
            pending: HashMap::new(),
            next_event: 0,
            timer_at: vec![None; scenario.nodes.len()],
            rng: ChaCha20Rng::seed_from_u64(seed),
            flows: Vec::new(),
            decisions: vec![HashMap::new(); scenario.nodes.len()],
            discards: vec![HashMap::new(); scenario.nodes.len()],
            faults: Vec::new(),
            seed,
            topo,
        };
        for i in 0..scenario.nodes.len() {
            if sim.enrolled.contains_key(&i) {
                sim.engines[i] = Some(sim.make_engine(i)?);
            }
        }
        sim.setup_flows()?;
        Ok(sim)
    }

    fn make_engine(&mut self, node: NodeId) -> Result<Engine, SimError> {
        let name = self.topo.names[node].clone();
        let e = self.enrolled.get_mut(&node).ok_or_else(|| SimError::Setup(format!("{name}: not enrolled")))?;
        let (identity, trust) = e.identity().map_err(|e| SimError::Setup(format!("{name}: {e}")))?;
        let keys = e.group_keys().map_err(|e| SimError::Setup(format!("{name}: {e}")))?;
        let cfg = self.configs[&node].clone();
        let rng =
            ChaCha20Rng::seed_from_u64(self.seed.wrapping_mul(1_000_003).wrapping_add(node as u64 + 1 + self.now));
        Engine::new(cfg, identity, trust, keys, Box::new(rng)).map_err(|e| SimError::Setup(format!("{name}: {e}")))
    }

    /// Adds a fault to inject.
    pub fn inject(&mut self, fault: Fault) {
        if let Fault::RestartGe { ge, at_us } = &fault {
            if let Some(&n) = self.topo.by_name.get(ge) {
                let at = EPOCH_S * 1_000_000 + at_us;
                self.schedule(at, SimEvent::Restart { node: n });
            }
        }
        self.faults.push(fault);
    }

    fn setup_flows(&mut self) -> Result<(), SimError> {
        let defs = self.scenario.flows.clone();
        for (i, f) in defs.into_iter().enumerate() {
            let client = self.topo.by_name[&f.from];
            let server = self.topo.by_name[&f.to];
            let path = FlowPath::new(&self.scenario, &self.topo, &f).map_err(SimError::Setup)?;
            let (src, dst) = (path.src, path.dst);
            let proto = match f.proto {
                Proto::Tcp => L4Proto::Tcp,
                Proto::Udp => L4Proto::Udp,
            };
            let cid = Cid { proto, src, src_port: 40_000 + i as u16, dst, dst_port: f.port };
            let mut p1 = vec![0u8; PAYLOAD_LEN];
            let mut p2 = vec![0u8; PAYLOAD_LEN];
            self.rng.fill_bytes(&mut p1);
            self.rng.fill_bytes(&mut p2);
            let base = path.links.len() as u64 * self.scenario.sim.delay_us;
            self.flows.push(FlowState {
                def: f,
                client,
                server,
                cid,
                p1,
                p2,
                stage: ClientStage::Idle,
                generation: 0,
                attempts: 0,
                started: None,
                first_arrival: None,
                got_p1: false,
                got_p2: false,
                rounds: 0,
                failed_early: false,
                retransmissions: 0,
                plaintext: Vec::new(),
                path,
                base_latency_us: base,
            });
            let at = self.now + 1_000 + i as u64 * FLOW_SPACING_US;
            self.schedule(at, SimEvent::FlowStart { flow: i });
        }
        Ok(())
    }

    fn schedule(&mut self, at: u64, ev: SimEvent) {
        let id = self.next_event;
        self.next_event += 1;
        self.seq += 1;
        self.pending.insert(id, ev);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    /// Runs to the end and reports.
    pub fn run(&mut self) -> Report {
        let end = self.now + 1_000 + self.flows.len() as u64 * FLOW_SPACING_US + RUN_AFTER_LAST_US;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            if at > end {
                break;
            }
            self.now = at;
            let Some(ev) = self.pending.remove(&id) else { continue };
            match ev {
                SimEvent::Arrive { node, packet, rest } => self.arrive(node, packet, rest),
                SimEvent::EngineTimer { node } => {
                    if self.timer_at[node] == Some(at) {
                        self.timer_at[node] = None;
                    }
                    if let Some(e) = self.engines[node].as_mut() {
                        e.handle_timeout(Timestamp(at));
                    }
                    self.after_engine(node);
                }
                SimEvent::FlowStart { flow } => self.client_start(flow),
                SimEvent::AppTimer { flow, generation } => self.client_timer(flow, generation),
                SimEvent::Restart { node } => {
                    if let Ok(e) = self.make_engine(node) {
                        self.engines[node] = Some(e);
                    }
                }
            }
        }
        self.report()
    }

    pub fn flow_stats(&self) -> Vec<FlowStats> {
        self.flows
            .iter()
            .map(|f| FlowStats {
                name: f.def.name.clone(),
                retransmissions: f.retransmissions,
                failed_early: f.failed_early,
            })
            .collect()
    }

    /// The engine of a GE node, for tests that inspect counters.
    pub fn engine(&self, name: &str) -> Option<&Engine> {
        self.engines.get(*self.topo.by_name.get(name)?)?.as_ref()
    }

    // ----- links -------------------------------------------------------------------------

    /// Sends `packet` from `node` by its routing table.
    fn route_from(&mut self, node: NodeId, packet: Vec<u8>) {
        let Some(dst) = dst_of(&packet) else { return };
        let hops = if self.topo.kinds[node] == NodeKind::Gea {
            self.gea_hops(node, dst)
        } else {
            self.topo.route(node, dst).and_then(|r| {
                let (link, nh) = (r.link.to_owned(), r.next_hop);
                self.topo.deliveries(node, &link, nh)
            })
        };
        if let Some(hops) = hops {
            self.send_hops(packet, hops);
        }
    }

    /// A GEA sends on: inward to its server, or outward as its servers route.
    fn gea_hops(&self, gea: NodeId, dst: IpAddr) -> Option<Vec<Hop>> {
        let servers = self.topo.servers_of.get(&gea)?;
        if let Some(&s) = servers.iter().find(|&&s| self.topo.owns(s, dst)) {
            return Some(vec![Hop { link: self.topo.inside_link(gea), node: s }]);
        }
        let &srv = servers.first()?;
        let r = self.topo.route(srv, dst)?;
        let target = self.topo.owner(r.link, r.next_hop)?;
        let mut hops = vec![Hop { link: r.link.to_owned(), node: target }];
        if let Some(&h) = self.topo.gea_of.get(&target) {
            hops = vec![Hop { link: r.link.to_owned(), node: h }, Hop { link: self.topo.inside_link(h), node: target }];
        }
        Some(hops)
    }

    fn send_hops(&mut self, packet: Vec<u8>, mut hops: Vec<Hop>) {
        if hops.is_empty() {
            return;
        }
        let first = hops.remove(0);
        self.observe(&packet, &first.link);
        let o = &self.scenario.sim;
        let (loss, reorder, delay, jitter) = (o.loss, o.reorder, o.delay_us, o.jitter_us);
        if loss > 0.0 && self.chance(loss) {
            return;
        }
        let mut d = delay;
        if jitter > 0 {
            d += self.rng.next_u64() % (jitter + 1);
        }
        if reorder > 0.0 && self.chance(reorder) {
            d += delay.max(1) * 3;
        }
        self.schedule(self.now + d, SimEvent::Arrive { node: first.node, packet, rest: hops });
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.rng.next_u64() as f64 / u64::MAX as f64) < p
    }

    /// Records flows whose payload crosses `link` in clear.
    fn observe(&mut self, packet: &[u8], link: &str) {
        let now = self.now;
        for f in &mut self.flows {
            if (contains(packet, &f.p1) || contains(packet, &f.p2)) && !f.plaintext.iter().any(|(_, l)| l == link) {
                f.plaintext.push((now, link.to_owned()));
            }
        }
    }

    // ----- nodes -------------------------------------------------------------------------

    fn arrive(&mut self, node: NodeId, mut packet: Vec<u8>, rest: Vec<Hop>) {
        let kind = self.topo.kinds[node];
        if kind == NodeKind::Gea {
            // A bridge: the engine sees every packet crossing it.
            if self.run_engine(node, &mut packet) {
                if rest.is_empty() {
                    self.route_from(node, packet);
                } else {
                    self.send_hops(packet, rest);
                }
            }
            return;
        }
        let Some(dst) = dst_of(&packet) else { return };
        if self.topo.owns(node, dst) {
            // Reaching this host: its GES sees it first.
            if kind == NodeKind::Ges && !self.run_engine(node, &mut packet) {
                return;
            }
            self.host_receive(node, packet);
            return;
        }
        if !kind.is_router() {
            return; // hosts do not forward
        }
        if !decrement_ttl(&mut packet) {
            return;
        }
        if kind.is_ge() && !self.run_engine(node, &mut packet) {
            return;
        }
        self.route_from(node, packet);
    }

    /// Runs a GE's engine on a packet; true when the packet goes on.
    fn run_engine(&mut self, node: NodeId, packet: &mut Vec<u8>) -> bool {
        let now = Timestamp(self.now);
        let original = packet.clone();
        let Some(e) = self.engines[node].as_mut() else { return true };
        let v = e.handle_packet(now, packet);
        let cid = Datagram::parse(&original).ok().map(|d| d.cid.canonical());
        if let (Verdict::Drop(gscip_core::DropReason::Discarded), Some(c)) = (v, cid) {
            self.discards[node].entry(c).or_insert(self.now);
        }
        // (The simulator never hands a flow over in segments: `Unsegment` cannot come.)
        let passes = matches!(v, Verdict::Accept | Verdict::Unsegment);
        if passes && self.skips_encryption(node) && self.was_sealed(node, &original, packet) {
            *packet = original;
        }
        self.after_engine(node);
        passes
    }

    fn skips_encryption(&self, node: NodeId) -> bool {
        self.faults.iter().any(|f| matches!(f, Fault::SkipEncryption { ge } if *ge == self.topo.names[node]))
    }

    fn was_sealed(&self, node: NodeId, before: &[u8], after: &[u8]) -> bool {
        let Ok(d) = Datagram::parse(before) else { return false };
        let Some(e) = self.engines[node].as_ref() else { return false };
        after.len() > before.len()
            && e.pit().get(&d.cid).is_some_and(|(en, dir)| en.action_for(dir) == FlowAction::Encrypt)
    }

    /// Collects what an engine wants sent and its events, and re-arms its timer.
    fn after_engine(&mut self, node: NodeId) {
        let mut out = Vec::new();
        let mut events = Vec::new();
        let mut next = None;
        if let Some(e) = self.engines[node].as_mut() {
            // Work ahead as the daemon does when its queue is empty: path keys the last
            // negotiation made possible, ephemeral keys.
            while e.prepare() {}
            while let Some(t) = e.poll_transmit() {
                out.push(t);
            }
            while let Some(ev) = e.poll_event() {
                events.push(ev);
            }
            next = e.poll_timeout();
        }
        for ev in events {
            if let Event::FlowDecided { cid, action, summary, .. } = ev {
                self.decisions[node].insert(cid.canonical(), (cid, action, summary));
            }
        }
        for t in out {
            if t.kind == TransmitKind::Dropped {
                continue; // the simulator keeps no copy of held packets
            }
            let mut packet = t.packet;
            if t.to_local {
                self.host_receive(node, std::mem::take(&mut packet));
            } else {
                self.route_from(node, packet);
            }
        }
        if let Some(Timestamp(at)) = next {
            if self.timer_at[node].is_none_or(|t| at < t || t < self.now) {
                self.timer_at[node] = Some(at);
                self.schedule(at.max(self.now), SimEvent::EngineTimer { node });
            }
        }
    }

    /// Sends from a host's own stack: through its GES first.
    fn host_send(&mut self, node: NodeId, mut packet: Vec<u8>) {
        if self.topo.kinds[node] == NodeKind::Ges && !self.run_engine(node, &mut packet) {
            return;
        }
        self.route_from(node, packet);
    }

    fn host_receive(&mut self, node: NodeId, packet: Vec<u8>) {
        if let Ok(e) = IcmpErrorRepr::parse(&packet) {
            // An error about one of this host's flows: the application fails at once.
            if let Some(i) = self.flows.iter().position(|f| {
                f.client == node
                    && f.cid.src == e.quoted_src
                    && f.cid.dst == e.quoted_dst
                    && f.cid.src_port == e.quoted_src_port
            }) {
                let f = &mut self.flows[i];
                if !f.got_p2 && f.stage != ClientStage::Failed {
                    f.stage = ClientStage::Failed;
                    f.failed_early = true;
                }
            }
            return;
        }
        let Ok(d) = Datagram::parse(&packet) else { return };
        let payload = packet[d.payload_offset..d.end].to_vec();
        if d.cid.proto == L4Proto::Udp && dprp::is_dprp_ports(d.cid.src_port, d.cid.dst_port) {
            self.port_unreachable(node, &packet);
            return;
        }
        if let Some(i) = self.flows.iter().position(|f| f.server == node && d.cid == f.cid) {
            self.server_receive(i, &d, &payload);
        } else if let Some(i) = self.flows.iter().position(|f| f.client == node && d.cid == f.cid.reversed()) {
            self.client_receive(i, &d, &payload);
        } else if d.cid.proto == L4Proto::Udp {
            self.port_unreachable(node, &packet);
        }
    }

    fn port_unreachable(&mut self, node: NodeId, offending: &[u8]) {
        let Some(dst) = dst_of(offending) else { return };
        if let Ok(icmp) = emit_error(dst, offending, IcmpErrorKind::PortUnreachable) {
            self.host_send(node, icmp);
        }
    }

    // ----- applications ------------------------------------------------------------------

    fn segment(cid: Cid, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
        DatagramRepr {
            cid,
            ttl: 64,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: ack,
            tcp_mss: if flags & tcp_flags::SYN != 0 { Some(1460) } else { None },
            payload,
        }
        .emit()
        .unwrap_or_default()
    }

    const C0: u32 = 1_000;
    const S0: u32 = 5_000;

    fn client_start(&mut self, i: usize) {
        let f = &mut self.flows[i];
        f.started = Some(self.now);
        f.attempts = 1;
        let (node, pkt, stage) = match f.cid.proto {
            L4Proto::Tcp => (f.client, Self::segment(f.cid, tcp_flags::SYN, Self::C0, 0, &[]), ClientStage::SynSent),
            L4Proto::Udp => (f.client, Self::segment(f.cid, 0, 0, 0, &f.p1), ClientStage::DataSent),
        };
        f.stage = stage;
        self.arm_app(i, 1_000_000); // SYN and first UDP datagram: 1 s, as TCP
        self.host_send(node, pkt);
    }

    fn arm_app(&mut self, i: usize, after: u64) {
        self.flows[i].generation += 1;
        let g = self.flows[i].generation;
        self.schedule(self.now + after, SimEvent::AppTimer { flow: i, generation: g });
    }

    fn data_segment(f: &FlowState) -> Vec<u8> {
        let (len1, len2) = (f.p1.len() as u32, f.p2.len() as u32);
        match f.cid.proto {
            L4Proto::Tcp => Self::segment(
                f.cid,
                tcp_flags::ACK | tcp_flags::PSH,
                Self::C0 + 1 + f.rounds * len1,
                Self::S0 + 1 + f.rounds * len2,
                &f.p1,
            ),
            L4Proto::Udp => Self::segment(f.cid, 0, 0, 0, &f.p1),
        }
    }

    fn fin_segment(f: &FlowState) -> Vec<u8> {
        let (len1, len2) = (f.p1.len() as u32, f.p2.len() as u32);
        Self::segment(
            f.cid,
            tcp_flags::FIN | tcp_flags::ACK,
            Self::C0 + 1 + ROUNDS * len1,
            Self::S0 + 1 + ROUNDS * len2,
            &[],
        )
    }

    fn client_timer(&mut self, i: usize, generation: u32) {
        let f = &mut self.flows[i];
        if f.generation != generation || matches!(f.stage, ClientStage::Done | ClientStage::Failed | ClientStage::Idle)
        {
            return;
        }
        if f.stage == ClientStage::Pause {
            // Next round.
            f.stage = ClientStage::DataSent;
            f.attempts = 1;
            let (node, pkt) = (f.client, Self::data_segment(f));
            self.arm_app(i, if self.flows[i].cid.proto == L4Proto::Udp { 1_000_000 } else { 200_000 });
            self.host_send(node, pkt);
            return;
        }
        if f.attempts >= 4 {
            f.stage = ClientStage::Failed;
            return;
        }
        f.attempts += 1;
        f.retransmissions += 1;
        let pkt = match (f.cid.proto, f.stage) {
            (L4Proto::Tcp, ClientStage::SynSent) => Self::segment(f.cid, tcp_flags::SYN, Self::C0, 0, &[]),
            (L4Proto::Tcp, ClientStage::FinSent) => Self::fin_segment(f),
            _ => Self::data_segment(f),
        };
        let node = f.client;
        let backoff = if f.stage == ClientStage::SynSent || f.cid.proto == L4Proto::Udp { 1_000_000 } else { 200_000 };
        self.arm_app(i, backoff << (self.flows[i].attempts - 1).min(4));
        self.host_send(node, pkt);
    }

    fn server_receive(&mut self, i: usize, d: &Datagram, payload: &[u8]) {
        let now = self.now;
        let f = &mut self.flows[i];
        f.first_arrival.get_or_insert(now);
        let r = f.cid.reversed();
        let (len1, len2) = (f.p1.len() as u32, f.p2.len() as u32);
        let reply = match f.cid.proto {
            L4Proto::Udp => {
                if payload == f.p1.as_slice() {
                    f.got_p1 = true;
                    Some(Self::segment(r, 0, 0, 0, &f.p2))
                } else {
                    None
                }
            }
            L4Proto::Tcp => {
                let fl = d.tcp_flags;
                let round = d.tcp_seq.wrapping_sub(Self::C0 + 1) / len1.max(1);
                if fl & tcp_flags::SYN != 0 {
                    Some(Self::segment(r, tcp_flags::SYN | tcp_flags::ACK, Self::S0, Self::C0 + 1, &[]))
                } else if fl & tcp_flags::FIN != 0 {
                    Some(Self::segment(
                        r,
                        tcp_flags::FIN | tcp_flags::ACK,
                        Self::S0 + 1 + ROUNDS * len2,
                        Self::C0 + 2 + ROUNDS * len1,
                        &[],
                    ))
                } else if !payload.is_empty() && payload == f.p1.as_slice() && round < ROUNDS {
                    f.got_p1 = true;
                    Some(Self::segment(
                        r,
                        tcp_flags::ACK | tcp_flags::PSH,
                        Self::S0 + 1 + round * len2,
                        Self::C0 + 1 + (round + 1) * len1,
                        &f.p2,
                    ))
                } else {
                    None
                }
            }
        };
        let server = f.server;
        if let Some(p) = reply {
            self.host_send(server, p);
        }
    }

    fn client_receive(&mut self, i: usize, d: &Datagram, payload: &[u8]) {
        let f = &mut self.flows[i];
        let (len1, len2) = (f.p1.len() as u32, f.p2.len() as u32);
        let mut send = None;
        let mut next_stage = None;
        let fl = d.tcp_flags;
        if f.cid.proto == L4Proto::Tcp && fl & tcp_flags::RST != 0 {
            if !f.got_p2 {
                f.failed_early = true;
                next_stage = Some(ClientStage::Failed);
            }
        } else if f.cid.proto == L4Proto::Tcp && fl & tcp_flags::SYN != 0 {
            if f.stage == ClientStage::SynSent && d.tcp_ack == Self::C0 + 1 {
                send = Some(Self::data_segment(f));
                next_stage = Some(ClientStage::DataSent);
            }
        } else if payload == f.p2.as_slice() && f.stage == ClientStage::DataSent {
            f.got_p2 = true;
            f.rounds += 1;
            if f.rounds < ROUNDS {
                next_stage = Some(ClientStage::Pause);
            } else if f.cid.proto == L4Proto::Tcp {
                send = Some(Self::fin_segment(f));
                next_stage = Some(ClientStage::FinSent);
            } else {
                next_stage = Some(ClientStage::Done);
            }
        } else if f.cid.proto == L4Proto::Tcp && fl & tcp_flags::FIN != 0 && f.stage == ClientStage::FinSent {
            send = Some(Self::segment(
                f.cid,
                tcp_flags::ACK,
                Self::C0 + 2 + ROUNDS * len1,
                Self::S0 + 2 + ROUNDS * len2,
                &[],
            ));
            next_stage = Some(ClientStage::Done);
        }
        let client = f.client;
        if let Some(st) = next_stage {
            f.stage = st;
            f.attempts = 1;
            match st {
                ClientStage::DataSent | ClientStage::FinSent => self.arm_app(i, 200_000),
                ClientStage::Pause => self.arm_app(i, ROUND_GAP_US),
                _ => self.flows[i].generation += 1,
            }
        }
        if let Some(p) = send {
            self.host_send(client, p);
        }
    }

    // ----- the report --------------------------------------------------------------------

    fn report(&self) -> Report {
        let mut flows = Vec::new();
        let mut leaks = 0;
        for f in &self.flows {
            let key = f.cid.canonical();
            let decisions = f
                .path
                .ges
                .iter()
                .filter_map(|&n| {
                    let (cid, action, s) = self.decisions[n].get(&key)?;
                    Some((
                        n,
                        ObservedDecision {
                            same_direction: *cid == f.cid,
                            action: *action,
                            group: s.group.map(|g| g.0),
                            encrypted_by: s.encrypted_by.clone(),
                            decrypted_by: s.decrypted_by.clone(),
                        },
                    ))
                })
                .collect();
            let delivered = f.got_p1 && f.got_p2 && f.rounds == ROUNDS;
            let obs = Observation {
                delivered,
                decisions,
                discarded_by: f.path.ges.iter().copied().filter(|&n| self.discards[n].contains_key(&key)).collect(),
                plaintext_links: f.plaintext.iter().map(|(_, l)| l.clone()).collect(),
                setup_us: match (f.started, f.first_arrival) {
                    (Some(s), Some(a)) => Some((a - s).saturating_sub(f.base_latency_us)),
                    _ => None,
                },
            };
            let (report, leaked) = flow_report(&f.def, &f.path, &self.topo, &obs);
            leaks += usize::from(leaked);
            flows.push(report);
        }
        let summary = Report::summarize(&flows, leaks);
        Report { scenario: self.scenario.name.clone(), engine: "sim".into(), flows, summary }
    }

    /// The reference outcome of every flow (for tests comparing engines and policy).
    pub fn reference_outcomes(&self) -> Vec<(String, Outcome)> {
        self.flows.iter().map(|f| (f.def.name.clone(), f.path.reference.outcome)).collect()
    }
}

fn dst_of(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 => Ipv4Packet::new_checked(packet).ok().map(|p| IpAddr::V4(p.dst_addr())),
        6 => Ipv6Packet::new_checked(packet).ok().map(|p| IpAddr::V6(p.dst_addr())),
        _ => None,
    }
}

fn decrement_ttl(packet: &mut [u8]) -> bool {
    match packet.first().map(|b| b >> 4) {
        Some(4) => match Ipv4Packet::new_checked(&mut packet[..]) {
            Ok(mut p) if p.ttl() > 1 => {
                let t = p.ttl() - 1;
                p.set_ttl(t);
                p.fill_checksum();
                true
            }
            _ => false,
        },
        Some(6) => match Ipv6Packet::new_checked(&mut packet[..]) {
            Ok(mut p) if p.hop_limit() > 1 => {
                let h = p.hop_limit() - 1;
                p.set_hop_limit(h);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

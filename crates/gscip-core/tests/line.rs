//! Engines in a line between two hosts, driven in virtual time (in the manner of quinn-proto's
//! `Pair` tests): negotiation, PCCOM on the wire, tampering, replay, forged control messages,
//! hold-queue bounds, and a property test of DPRP against the policy function as reference
//! model under random loss of messages.

use gscip_core::engine::{Engine, Event, GeConfig, PacketContext, TransmitKind, Verdict};
use gscip_core::group::{GroupId, GroupKey, GroupKeyring};
use gscip_core::identity::{CertificateAuthority, SigningIdentity};
use gscip_core::policy::{decide, FlowAction, Outcome, PathGe};
use gscip_core::{DropReason, GeKind, Mode, Side, Timestamp};
use gscip_wire::dprp::{self, Body, MessageRepr};
use gscip_wire::ip::{Datagram, DatagramRepr};
use gscip_wire::{Cid, L4Proto};
use ipnet::IpNet;
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::IpAddr;
use zeroize::Zeroizing;

const T0: u64 = 1_800_000_000 * 1_000_000;
const LINK_US: u64 = 10;

fn a_addr() -> IpAddr {
    "10.0.0.1".parse().unwrap()
}
fn b_addr() -> IpAddr {
    "10.0.1.2".parse().unwrap()
}

/// Changes a control message entering link `usize`; returns whether it did.
type RewriteControl = Box<dyn FnMut(usize, &mut MessageRepr) -> bool>;

/// How to build one GE of the line.
#[derive(Debug, Clone)]
struct GeSpec {
    name: &'static str,
    kind: GeKind,
    mode: Mode,
    groups: Vec<u16>,
    protected: Vec<IpNet>,
    local: Vec<IpAddr>,
}

fn ges_a(mode: Mode, groups: &[u16]) -> GeSpec {
    GeSpec { name: "a", kind: GeKind::Ges, mode, groups: groups.to_vec(), protected: vec![], local: vec![a_addr()] }
}
fn ges_b(mode: Mode, groups: &[u16]) -> GeSpec {
    GeSpec { name: "b", kind: GeKind::Ges, mode, groups: groups.to_vec(), protected: vec![], local: vec![b_addr()] }
}
/// A GEN whose inside is host A's subnet.
fn gen_a(mode: Mode, groups: &[u16]) -> GeSpec {
    GeSpec {
        name: "gen",
        kind: GeKind::Gen,
        mode,
        groups: groups.to_vec(),
        protected: vec!["10.0.0.0/24".parse().unwrap()],
        local: vec!["10.0.0.254".parse().unwrap()],
    }
}

fn keys_for(groups: &[u16]) -> GroupKeyring {
    let mut k = GroupKeyring::new();
    for &g in groups {
        k.insert(GroupKey::new(GroupId(g), 1, [g as u8; 32]));
    }
    k
}

fn build(spec: &GeSpec, ca: &CertificateAuthority, seed: u8) -> Engine {
    build_with(spec, ca, seed, &|_| {})
}

/// As [`build`], with the engine's configuration adjusted by `tweak`.
fn build_with(spec: &GeSpec, ca: &CertificateAuthority, seed: u8, tweak: &dyn Fn(&mut GeConfig)) -> Engine {
    let s = Zeroizing::new([seed; 32]);
    let pk = SigningIdentity::public_key_for_seed(&s).unwrap();
    let gids: Vec<GroupId> = spec.groups.iter().map(|&g| GroupId(g)).collect();
    let cert = ca.issue(spec.kind, spec.mode, spec.name, &gids, pk, T0 / 1_000_000 + 86_400).unwrap();
    let id = SigningIdentity::new(&s, cert).unwrap();
    let mut cfg =
        GeConfig { protected: spec.protected.clone(), local_addrs: spec.local.clone(), ..GeConfig::default() };
    tweak(&mut cfg);
    Engine::new(cfg, id, ca.trust_anchor(), keys_for(&spec.groups), Box::new(ChaCha20Rng::seed_from_u64(seed as u64)))
        .unwrap()
}

/// (arrival time, sequence, position, moving right, packet).
type InFlight = (u64, u64, i64, bool, Vec<u8>);

/// A packet in flight: it reaches position `pos` (engine index; -1 is host A, len is host B)
/// moving right or left.
struct Line {
    specs: Vec<GeSpec>,
    engines: Vec<Engine>,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<InFlight>>,
    /// Every packet that crossed a link, with the link's index (link k joins position k-1 and
    /// k; link 0 is host A's, link len is host B's).
    wire: Vec<(usize, Vec<u8>)>,
    app_a: Vec<Vec<u8>>,
    app_b: Vec<Vec<u8>>,
    errors_a: usize,
    /// Drops a control message when it returns true (called with the message type).
    drop_control: Box<dyn FnMut(dprp::MessageType) -> bool>,
    /// May change a control message as it enters a link (called with the link's index);
    /// returns whether it did.
    rewrite_control: RewriteControl,
    /// Lets every engine work ahead (`Engine::prepare`) whenever the line is about to move on
    /// in time, as the daemon does when its queue is empty.
    prepare_when_idle: bool,
    /// Lets an engine make one waiting path key after every packet it handles, as a busy
    /// daemon does once per turn (`Engine::make_path_key`).
    path_key_per_packet: bool,
    /// DDEs that passed an engine unseen, as a GEN's kernel rule lets them
    /// (`GeConfig::kernel_dde_pass`, `Engine::passes_dde_unseen`).
    ddes_passed_unseen: usize,
    /// MPITs that passed an engine in its kernel, the engine handed a copy
    /// (`GeConfig::kernel_mpit_pass`, `Engine::handle_passed_copy`).
    mpits_passed_in_kernel: usize,
    events: Vec<(usize, Event)>,
}

impl Line {
    fn new(specs: Vec<GeSpec>) -> Line {
        Self::new_with(specs, &|_| {})
    }

    /// A line whose engines' configuration `tweak` adjusts.
    fn new_with(specs: Vec<GeSpec>, tweak: &dyn Fn(&mut GeConfig)) -> Line {
        let ca = CertificateAuthority::from_seed(&Zeroizing::new([99; 32])).unwrap();
        let engines = specs.iter().enumerate().map(|(i, s)| build_with(s, &ca, i as u8 + 1, tweak)).collect();
        Line {
            specs,
            engines,
            now: T0,
            seq: 0,
            queue: BinaryHeap::new(),
            wire: Vec::new(),
            app_a: Vec::new(),
            app_b: Vec::new(),
            errors_a: 0,
            drop_control: Box::new(|_| false),
            rewrite_control: Box::new(|_, _| false),
            prepare_when_idle: false,
            path_key_per_packet: false,
            ddes_passed_unseen: 0,
            mpits_passed_in_kernel: 0,
            events: Vec::new(),
        }
    }

    fn host_a_has_ge(&self) -> Option<usize> {
        self.specs.iter().position(|s| s.local.contains(&a_addr()))
    }
    fn host_b_has_ge(&self) -> Option<usize> {
        self.specs.iter().position(|s| s.local.contains(&b_addr()))
    }

    fn put(&mut self, pos: i64, right: bool, mut p: Vec<u8>) {
        let link = if right { pos } else { pos + 1 };
        if let Ok(d) = Datagram::parse(&p) {
            if dprp::is_dprp_ports(d.cid.src_port, d.cid.dst_port) {
                if let Ok(mut m) = MessageRepr::parse(&p[d.payload_offset..d.end]) {
                    if (self.drop_control)(m.body.message_type()) {
                        return;
                    }
                    if (self.rewrite_control)(link.max(0) as usize, &mut m) {
                        p = udp(d.cid.src, d.cid.dst, d.cid.src_port, d.cid.dst_port, &m.emit().unwrap());
                    }
                }
            }
        }
        self.wire.push((link.max(0) as usize, p.clone()));
        self.seq += 1;
        self.queue.push(Reverse((self.now + LINK_US, self.seq, pos, right, p)));
    }

    /// The application on host A sends a packet.
    fn send_from_a(&mut self, p: Vec<u8>) {
        match self.host_a_has_ge() {
            Some(0) => self.process(0, true, p),
            _ => self.put(0, true, p),
        }
    }
    fn send_from_b(&mut self, p: Vec<u8>) {
        let n = self.engines.len() as i64;
        match self.host_b_has_ge() {
            Some(i) if i as i64 == n - 1 => self.process(n - 1, false, p),
            _ => self.put(n - 1, false, p),
        }
    }

    fn dst(p: &[u8]) -> IpAddr {
        IpAddr::from([p[16], p[17], p[18], p[19]])
    }

    fn process(&mut self, pos: i64, right: bool, mut p: Vec<u8>) {
        let n = self.engines.len() as i64;
        if pos < 0 || pos >= n {
            self.host(pos < 0, p);
            return;
        }
        let i = pos as usize;
        if dde_destination(&p).is_some_and(|d| self.engines[i].passes_dde_unseen(Timestamp(self.now), d)) {
            // The kernel rule of a GE that announced the pass: the DDE goes on, unseen.
            while self.engines[i].poll_dde_pass().is_some() {}
            self.ddes_passed_unseen += 1;
            self.put(if right { pos + 1 } else { pos - 1 }, right, p);
            return;
        }
        if mpit_destination(&p).is_some_and(|d| self.engines[i].passes_mpit_in_kernel(Timestamp(self.now), d)) {
            // The kernel rule lets the MPIT go on at once; the engine meets its copy.
            self.mpits_passed_in_kernel += 1;
            self.engines[i].handle_passed_copy(Timestamp(self.now), &mut p.clone());
            self.drain(i);
            self.put(if right { pos + 1 } else { pos - 1 }, right, p);
            return;
        }
        let v = self.engines[i].handle_packet(Timestamp(self.now), &mut p);
        self.drain(i);
        if self.path_key_per_packet {
            self.engines[i].make_path_key();
        }
        if v == Verdict::Accept {
            let next = if right { pos + 1 } else { pos - 1 };
            let local_host = self.specs[i].local.contains(&Self::dst(&p));
            if local_host {
                self.host(Self::dst(&p) == a_addr(), p);
            } else {
                self.put(next, right, p);
            }
        }
    }

    fn drain(&mut self, i: usize) {
        while let Some(ev) = self.engines[i].poll_event() {
            self.events.push((i, ev));
        }
        while let Some(t) = self.engines[i].poll_transmit() {
            if t.kind == TransmitKind::Dropped {
                continue;
            }
            let d = Self::dst(&t.packet);
            if t.to_local {
                self.host(d == a_addr(), t.packet);
            } else {
                let right = d != a_addr();
                self.put(if right { i as i64 + 1 } else { i as i64 - 1 }, right, t.packet);
            }
        }
    }

    fn host(&mut self, is_a: bool, p: Vec<u8>) {
        if p[9] == 1 {
            if is_a {
                self.errors_a += 1;
            }
            return;
        }
        let Ok(d) = Datagram::parse(&p) else { return };
        if dprp::is_dprp_ports(d.cid.src_port, d.cid.dst_port) {
            // A host without a GE: port unreachable.
            let me = if is_a { a_addr() } else { b_addr() };
            if let Ok(icmp) = gscip_wire::icmp::emit_error(me, &p, gscip_wire::icmp::IcmpErrorKind::PortUnreachable) {
                if is_a {
                    self.send_from_a(icmp)
                } else {
                    self.send_from_b(icmp)
                }
            }
            return;
        }
        let payload = p[d.payload_offset..d.end].to_vec();
        if is_a {
            self.app_a.push(payload);
        } else {
            self.app_b.push(payload);
        }
    }

    /// Runs until nothing is in flight and no timer is due before `until_us` from now.
    fn run_for(&mut self, us: u64) {
        let end = self.now + us;
        loop {
            let next_pkt = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self.engines.iter().filter_map(|e| e.poll_timeout()).map(|t| t.0).min();
            let next = match (next_pkt, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            if self.prepare_when_idle && next > self.now {
                for e in &mut self.engines {
                    while e.prepare() {}
                }
            }
            self.now = self.now.max(next);
            if next_pkt == Some(next) {
                let Reverse((_, _, pos, right, p)) = self.queue.pop().unwrap();
                self.process(pos, right, p);
            } else {
                for i in 0..self.engines.len() {
                    if self.engines[i].poll_timeout().is_some_and(|t| t.0 <= self.now) {
                        self.engines[i].handle_timeout(Timestamp(self.now));
                        self.drain(i);
                    }
                }
            }
        }
        self.now = self.now.max(end);
    }

    fn action(&self, i: usize, cid: &Cid) -> Option<FlowAction> {
        self.engines[i].pit().get(cid).map(|(e, d)| e.action_for(d))
    }
}

/// The DPRP message `p` carries, if it carries one.
fn dprp_message(p: &[u8]) -> Option<MessageRepr> {
    let d = Datagram::parse(p).ok()?;
    if !dprp::is_dprp_ports(d.cid.src_port, d.cid.dst_port) {
        return None;
    }
    MessageRepr::parse(&p[d.payload_offset..d.end]).ok()
}

/// The destination of an MPIT, if `p` is one.
fn mpit_destination(p: &[u8]) -> Option<IpAddr> {
    let m = dprp_message(p)?;
    matches!(m.body, Body::Mpit { .. }).then_some(m.header.cid.dst)
}

/// The destination of a DDE (not a restart request), if `p` is one.
fn dde_destination(p: &[u8]) -> Option<IpAddr> {
    let m = dprp_message(p)?;
    let plain_dde = matches!(m.body, Body::Dde { .. }) && m.header.flags & dprp::FLAG_RESTART == 0;
    plain_dde.then_some(m.header.cid.dst)
}

fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    DatagramRepr {
        cid: Cid { proto: L4Proto::Udp, src, src_port: sport, dst, dst_port: dport },
        ttl: 64,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_mss: None,
        payload,
    }
    .emit()
    .unwrap()
}

/// Was `payload` seen in clear on a link with index in `links`?
fn seen_in_clear(wire: &[(usize, Vec<u8>)], links: std::ops::RangeInclusive<usize>, payload: &[u8]) -> bool {
    wire.iter().any(|(l, p)| links.contains(l) && p.windows(payload.len()).any(|w| w == payload))
}

#[test]
fn two_ges_protect_both_directions_and_the_wire_shows_no_payload() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1, 5]), ges_b(Mode::Closed, &[5, 7])]);
    let secret = b"payroll of the whole company....";
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, secret));
    l.run_for(10_000);
    assert_eq!(l.app_b, vec![secret.to_vec()], "held packet delivered once");
    l.send_from_b(udp(b_addr(), a_addr(), 53, 5000, b"reply"));
    l.run_for(10_000);
    assert_eq!(l.app_a, vec![b"reply".to_vec()]);
    assert!(!seen_in_clear(&l.wire, 0..=2, secret) && !seen_in_clear(&l.wire, 0..=2, b"reply"));
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 5000, dst: b_addr(), dst_port: 53 };
    assert_eq!(l.action(0, &cid), Some(FlowAction::Encrypt));
    assert_eq!(l.action(1, &cid), Some(FlowAction::Decrypt));
    let e = l.engines[0].pit().get(&cid).unwrap().0;
    assert_eq!(e.group, Some(GroupId(5)));
    assert_eq!(l.engines[0].counters().negotiations_completed, 1);
    assert_eq!(l.engines[0].held_packets(), 0);
}

#[test]
fn tampered_and_replayed_packets_are_dropped_and_counted() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"first"));
    l.run_for(10_000);
    assert_eq!(l.app_b.len(), 1);
    // Seal a fresh packet at a, and keep it off the wire.
    let now = Timestamp(l.now);
    let mut sealed = udp(a_addr(), b_addr(), 5000, 53, b"second");
    assert_eq!(l.engines[0].handle_packet(now, &mut sealed), Verdict::Accept);
    for at in [30, sealed.len() - 1, sealed.len() - 20, 24] {
        let mut t = sealed.clone();
        t[at] ^= 0x40;
        if let Ok(d) = Datagram::parse(&t) {
            d.fill_checksums(&mut t); // only PCCOM can catch the change now
        }
        let v = l.engines[1].handle_packet(now, &mut t);
        assert!(matches!(v, Verdict::Drop(_)), "tampered byte {at} accepted");
    }
    let mut ok = sealed.clone();
    assert_eq!(l.engines[1].handle_packet(now, &mut ok), Verdict::Accept, "the untouched packet still opens");
    let mut replay = sealed.clone();
    assert_eq!(l.engines[1].handle_packet(now, &mut replay), Verdict::Drop(DropReason::Replay));
    let c = l.engines[1].counters();
    assert_eq!((c.auth_failures, c.malformed, c.replays), (3, 1, 1), "{c:?}");
}

#[test]
fn a_forged_record_fails_verification_and_nothing_passes_in_plaintext() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Closed, &[1])]);
    // Rewrite b's record in its RGI: claim group 9 it does not hold.
    let ca_forged = true;
    l.drop_control = Box::new(|_| false);
    l.send_from_a(udp(a_addr(), b_addr(), 6000, 80, b"hello"));
    // Intercept by hand: run until the RGI is in flight, then corrupt it in the queue.
    l.run_for(LINK_US); // DDE reaches b
    l.run_for(1); // b answers
    let mut q: Vec<_> = std::mem::take(&mut l.queue).into_vec();
    for Reverse((_, _, _, _, p)) in q.iter_mut() {
        if let Ok(d) = Datagram::parse(p) {
            if let Ok(mut m) = MessageRepr::parse(&p[d.payload_offset..d.end]) {
                if let Body::Rgi { records } = &mut m.body {
                    records[0].certificate.groups.push(9);
                    let bytes = m.emit().unwrap();
                    *p = udp(d.cid.src, d.cid.dst, d.cid.src_port, d.cid.dst_port, &bytes);
                }
            }
        }
    }
    l.queue = q.into_iter().collect();
    l.run_for(3_000_000);
    assert!(ca_forged);
    assert!(
        l.events.iter().any(|(i, e)| *i == 0 && matches!(e, Event::PeerMisbehaved { .. })),
        "a did not notice the forgery"
    );
    // b is closed: whatever happened, it never took plaintext from a.
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 6000, dst: b_addr(), dst_port: 80 };
    assert_ne!(l.action(1, &cid), Some(FlowAction::Plain));
    if !l.app_b.is_empty() {
        assert_eq!(l.action(1, &cid), Some(FlowAction::Decrypt), "delivered only once protected");
    }
}

#[test]
fn the_hold_queue_is_bounded_and_counts_overflow() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    let limit = GeConfig::default().hold_per_flow;
    for k in 0..(limit + 10) {
        l.send_from_a(udp(a_addr(), b_addr(), 7000, 80, format!("packet {k:04}").as_bytes()));
    }
    assert_eq!(l.engines[0].held_packets(), limit);
    assert_eq!(l.engines[0].counters().hold_overflow, 10);
    l.run_for(10_000);
    assert_eq!(l.app_b.len(), limit, "every held packet delivered");
    let order: Vec<String> = l.app_b.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "held packets keep their order");

    // Bytes are bounded too (a held GSO packet can be 64 KiB): 10,000 bytes hold three
    // packets of 3,000, not a fourth; what is held is delivered.
    let mut l =
        Line::new_with(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])], &|c| c.hold_bytes_total = 10_000);
    for k in 0..5u8 {
        l.send_from_a(udp(a_addr(), b_addr(), 7000, 80, &[k; 3000]));
    }
    assert_eq!(l.engines[0].held_packets(), 3);
    assert_eq!(l.engines[0].counters().hold_overflow, 2);
    l.run_for(10_000);
    assert_eq!(l.app_b.len(), 3);
    // Released, the bytes count no more.
    l.send_from_a(udp(a_addr(), b_addr(), 7001, 80, &[9; 3000]));
    assert_eq!(l.engines[0].held_packets(), 1);
}

#[test]
fn a_plain_host_behind_a_closed_gen_is_learned_and_cached() {
    // Host A is a plain terminal behind a closed GEN; host B runs a GES sharing group 1.
    let mut l = Line::new(vec![gen_a(Mode::Closed, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"from the terminal"));
    l.run_for(1_000_000);
    assert_eq!(l.app_b, vec![b"from the terminal".to_vec()]);
    let first = l.engines[0].counters().restarts_requested;
    // A second flow from the same terminal: the GEN knows there is no GE at A now.
    l.send_from_a(udp(a_addr(), b_addr(), 5001, 53, b"again"));
    l.run_for(1_000_000);
    assert_eq!(l.app_b.len(), 2);
    assert_eq!(l.engines[0].counters().restarts_requested, first, "the GEN asked again");
    assert!(seen_in_clear(&l.wire, 0..=0, b"again"), "in clear on the terminal's own LAN");
    assert!(!seen_in_clear(&l.wire, 1..=2, b"again"), "protected beyond the GEN");
}

// ----- property test: DPRP against the policy ---------------------------------------------

fn arb_mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Open), Just(Mode::Closed)]
}
fn arb_groups() -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::btree_set(1u16..4, 0..3).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Reference model of the negotiation window: a queue served by `window` servers. Flows
    /// arrive at the GEN at random times; at every moment at most `window` of its negotiations
    /// are started, none stays waiting while a place is free, and in the end every flow's held
    /// packet is delivered and nothing waits.
    #[test]
    fn the_negotiation_window_is_a_work_conserving_bounded_queue(
        window in 1usize..6,
        gaps in proptest::collection::vec(prop_oneof![Just(0u64), 1u64..300], 1..40),
    ) {
        let mut l = Line::new_with(vec![gen_a(Mode::Closed, &[1]), ges_b(Mode::Open, &[1])], &|c| {
            c.negotiation_window = window
        });
        let check = |l: &Line| -> Result<(), TestCaseError> {
            let gen = &l.engines[0];
            let (waiting, started) = (gen.negotiations_waiting(), gen.negotiations_in_progress() - gen.negotiations_waiting());
            prop_assert!(started <= window, "{started} started, window {window}");
            prop_assert!(waiting == 0 || started == window, "{waiting} waiting with {started} of {window} started");
            Ok(())
        };
        for (k, gap) in gaps.iter().enumerate() {
            let payload = format!("flow-{k:03}");
            l.send_from_a(udp(a_addr(), b_addr(), 30_000 + k as u16, 53, payload.as_bytes()));
            l.run_for(*gap);
            check(&l)?;
        }
        for _ in 0..400 {
            l.run_for(LINK_US);
            check(&l)?;
        }
        l.run_for(5_000_000);
        let c = *l.engines[0].counters();
        prop_assert_eq!(l.app_b.len(), gaps.len(), "{:?}", c);
        prop_assert_eq!(l.engines[0].negotiations_waiting(), 0);
        prop_assert_eq!(c.hold_overflow + c.negotiations_failed, 0, "{:?}", c);
    }

    /// Reference model: the policy function over the GEs of the line. Whatever messages are
    /// lost, the flow ends in the policy's outcome or in a safe fallback: a closed GE never
    /// passes the payload in plaintext, nothing is protected with another group than the
    /// policy's, and payload reaches B in clear only where the policy allows plaintext.
    #[test]
    fn dprp_ends_in_the_policy_outcome_despite_loss(
        with_gen: bool,
        a_mode in arb_mode(), a_groups in arb_groups(),
        g_mode in arb_mode(), g_groups in arb_groups(),
        b_mode in arb_mode(), b_groups in arb_groups(),
        a_is_ge: bool,
        kernel_dde_pass: bool,
        drops in proptest::collection::vec(any::<bool>(), 0..12),
    ) {
        let mut specs = Vec::new();
        if a_is_ge { specs.push(ges_a(a_mode, &a_groups)); }
        if with_gen || !a_is_ge { specs.push(gen_a(g_mode, &g_groups)); }
        specs.push(ges_b(b_mode, &b_groups));
        let path: Vec<PathGe> = specs.iter().map(|s| PathGe {
            name: s.name.into(), mode: s.mode,
            side: if s.name == "b" { Side::Destination } else { Side::Source },
            groups: s.groups.iter().map(|&g| GroupId(g)).collect(),
        }).collect();
        let reference = decide(&path);
        // The GEN may let the second flow's DDE pass unseen (docs/dprp.md section 13).
        // … and its MPIT pass in the kernel, the GEN taking part from a copy (section 15).
        let mut l = Line::new_with(specs.clone(), &|c| {
            c.kernel_dde_pass = kernel_dde_pass && !c.protected.is_empty();
            c.kernel_mpit_pass = c.kernel_dde_pass;
        });
        // Two flows one after the other: the second negotiates with the path keys the first
        // made (when the first completed), and must end the same.
        l.prepare_when_idle = true;
        let mut k = 0usize;
        let lossy = !drops.is_empty();
        l.drop_control = Box::new(move |_| { let d = drops.get(k).copied().unwrap_or(false); k += 1; d });
        for (port, payload) in [(5555u16, b"0123456789abcdef-unique-payload!"), (5556, b"second-flow-payload-0123456789ab")] {
            l.send_from_a(udp(a_addr(), b_addr(), port, 80, payload));
            l.run_for(5_000_000);
            let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: port, dst: b_addr(), dst_port: 80 };
            let delivered = l.app_b.iter().any(|p| p == payload);
            let must_be_protected = match reference.outcome {
                Outcome::Protected { encryptor, decryptor, .. } => encryptor + 1..=decryptor,
                #[allow(clippy::reversed_empty_ranges)]
                _ => 1..=0, // nothing must be protected
            };
            let in_clear_on_wire = seen_in_clear(&l.wire, must_be_protected, payload);
            for (i, s) in specs.iter().enumerate() {
                if s.mode == Mode::Closed {
                    prop_assert_ne!(l.action(i, &cid), Some(FlowAction::Plain), "closed {} passes plaintext", s.name);
                }
            }
            match reference.outcome {
                Outcome::Protected { group, .. } => {
                    if delivered {
                        for i in 0..specs.len() {
                            if let Some((e, _)) = l.engines[i].pit().get(&cid) {
                                if e.session.is_some() { prop_assert_eq!(e.group, Some(group)); }
                            }
                        }
                    }
                    if in_clear_on_wire {
                        // Only a fallback of open GEs may do that, and a closed GE then stops it.
                        prop_assert!(lossy, "plaintext on the wire without any loss");
                        prop_assert!(!delivered || specs.iter().all(|s| s.mode == Mode::Open));
                    }
                    if !lossy { prop_assert!(delivered, "not delivered without loss"); }
                }
                Outcome::Discarded { .. } => prop_assert!(!delivered, "a discarded flow arrived"),
                Outcome::Plaintext => if !lossy { prop_assert!(delivered); },
            }
        }
        if !lossy && specs.len() > 1 {
            // Without loss the second negotiation used the path keys the first made.
            let macs_used: u64 = l.engines.iter().map(|e| e.counters().macs_verified).sum();
            prop_assert!(macs_used > 0, "no path key was used");
        }
    }
}

/// The GEN's fast-path answer for a flow a → b while the CDN has not reached it (every CDN
/// lost), with the given modes of a, the GEN and b.
fn gen_fast_path_before_the_cdn(a: Mode, gen: Mode, b: Mode) -> Option<gscip_core::engine::FastPath> {
    let mut l = Line::new(vec![ges_a(a, &[1]), gen_a(gen, &[1]), ges_b(b, &[1])]);
    l.drop_control = Box::new(|t| t == dprp::MessageType::Cdn);
    let packet = udp(a_addr(), b_addr(), 5000, 53, b"x");
    l.send_from_a(packet.clone());
    l.run_for(1_000);
    assert_eq!(l.app_b, vec![b"x".to_vec()], "released behind the MPIT");
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 5000, dst: b_addr(), dst_port: 53 };
    let (entry, _) = l.engines[1].pit().get(&cid).expect("the GEN's entry");
    assert_eq!((entry.action, entry.state), (FlowAction::Relay, gscip_core::pit::EntryState::Provisional));
    l.engines[1].fast_path(&packet)
}

#[test]
fn a_relaying_gen_hands_the_flow_to_the_kernel_before_the_cdn_only_when_no_cdn_could_change_it() {
    use gscip_core::engine::FastPath;
    // Closed GESs at both ends discard the flow should the negotiation fail: no plaintext of
    // it can reach the closed GEN but what its relayed flow's fast path passes anyway.
    assert_eq!(gen_fast_path_before_the_cdn(Mode::Closed, Mode::Closed, Mode::Closed), Some(FastPath::Pass));
    // An open GEN passes the flow whatever the CDN says (relayed, or plaintext after a failure).
    assert_eq!(gen_fast_path_before_the_cdn(Mode::Open, Mode::Open, Mode::Open), Some(FastPath::Pass));
    // An open end would fall back to plaintext, which the closed GEN must then discard: the
    // flow stays with the engine until the CDN; likewise with an open initiator.
    assert_eq!(gen_fast_path_before_the_cdn(Mode::Closed, Mode::Closed, Mode::Open), None);
    assert_eq!(gen_fast_path_before_the_cdn(Mode::Open, Mode::Closed, Mode::Closed), None);
}

#[test]
fn a_refusal_replayed_into_another_negotiation_is_dropped_and_the_negotiation_goes_on() {
    use std::cell::RefCell;
    use std::rc::Rc;
    let mut l = Line::new(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])]);
    // Flow one: a's record in the MPIT is spoiled on its way to b, which refuses; the refusal
    // is kept as it crosses toward a.
    let refusal: Rc<RefCell<Option<Body>>> = Rc::default();
    let kept = refusal.clone();
    l.rewrite_control = Box::new(move |_, m| {
        match &mut m.body {
            Body::Mpit { records } => records.last_mut().unwrap().signature[0] ^= 1,
            Body::Cdn { .. } => *kept.borrow_mut() = Some(m.body.clone()),
            _ => return false,
        }
        true
    });
    flow_from_a(&mut l, 5000, b"x");
    l.run_for(2_000_000);
    assert_eq!(l.engines[0].counters().negotiations_failed, 1, "b refused flow one");
    let refusal = refusal.borrow().clone().expect("b's refusal");
    assert!(matches!(refusal, Body::Cdn { status: dprp::CdnStatus::Refused, .. }));
    // Flow two: its first CDN is replaced by flow one's refusal, signed by b. It is not about
    // this negotiation: a drops it and completes on the CDN b sends again.
    let mut replaced = false;
    l.rewrite_control = Box::new(move |_, m| {
        if replaced || !matches!(m.body, Body::Cdn { .. }) {
            return false;
        }
        replaced = true;
        m.body = refusal.clone();
        true
    });
    let bad = l.engines[0].counters().bad_control;
    let cid = flow_from_a(&mut l, 5001, b"x");
    l.run_for(2_000_000); // the retransmitted MPIT, and b's CDN again
    let c = l.engines[0].counters();
    assert_eq!((c.negotiations_failed, c.negotiations_completed), (1, 1), "{c:?}");
    assert_eq!(c.bad_control, bad + 1, "the replayed refusal counted as bad");
    assert_eq!(l.engines[0].pit().get(&cid).unwrap().0.state, gscip_core::pit::EntryState::Final);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&b"x"[..]));
}

#[test]
fn a_lost_cdn_is_sent_again_when_the_mpit_is_retransmitted() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Closed, &[1])]);
    let mut cdns = 0;
    l.drop_control = Box::new(move |t| {
        if t == dprp::MessageType::Cdn {
            cdns += 1;
            return cdns == 1;
        }
        false
    });
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"x"));
    l.run_for(2_000_000);
    assert_eq!(l.app_b, vec![b"x".to_vec()], "data went on after the MPIT");
    let c = l.engines[0].counters();
    assert_eq!((c.negotiations_completed, c.negotiations_failed), (1, 0), "{c:?}");
    assert_eq!(l.errors_a, 0, "b's host never saw the MPIT");
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 5000, dst: b_addr(), dst_port: 53 };
    let state = l.engines[0].pit().get(&cid).unwrap().0.state;
    assert_eq!(state, gscip_core::pit::EntryState::Final);
}

#[test]
fn a_later_dprp_version_passes_through_and_garbage_is_dropped() {
    let mut l = Line::new(vec![gen_a(Mode::Closed, &[1])]);
    let now = Timestamp(l.now);
    let mut v2 = vec![b'G', b'S', 2, 1, 0, 0, 0, 8];
    v2.resize(8, 0);
    let mut p = udp(a_addr(), b_addr(), dprp::DPRP_PORT, dprp::DPRP_PORT, &v2);
    assert_eq!(l.engines[0].handle_packet(now, &mut p), Verdict::Accept);
    let mut p = udp(a_addr(), b_addr(), dprp::DPRP_PORT, dprp::DPRP_PORT, b"GS\x01\x09garbage");
    assert_eq!(l.engines[0].handle_packet(now, &mut p), Verdict::Drop(DropReason::Malformed));
}

#[test]
fn keys_never_appear_in_debug_output() {
    // Group keys in this harness are [g; 32]: group 1's bytes are all 0x01, so look for a run
    // of them in any spelling Debug could use.
    let mut l = Line::new(vec![ges_a(Mode::Open, &[77]), ges_b(Mode::Open, &[77])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"x"));
    l.run_for(10_000);
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 5000, dst: b_addr(), dst_port: 53 };
    let entry = l.engines[0].pit().get(&cid).expect("entry").0;
    assert!(entry.session.is_some());
    let key = GroupKey::new(GroupId(77), 3, [77; 32]);
    let mut ring = GroupKeyring::new();
    ring.insert(key.clone());
    let dumps = [
        format!("{:?}", l.engines[0]),
        format!("{entry:?}"),
        format!("{key:?}"),
        format!("{ring:?}"),
        format!("{:?}", gscip_core::pccom::derive_flow_keys(&key, &[1; 32], &[2; 32])),
    ];
    for d in dumps {
        assert!(!d.contains("77, 77, 77") && !d.contains("4d4d4d") && !d.contains("0x4d, 0x4d"), "key material in {d}");
    }
}

fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    DatagramRepr {
        cid: Cid { proto: L4Proto::Tcp, src, src_port: sport, dst, dst_port: dport },
        ttl: 64,
        tcp_flags: flags,
        tcp_seq: 1,
        tcp_ack: 1,
        tcp_mss: None,
        payload,
    }
    .emit()
    .unwrap()
}

fn removals(l: &Line) -> Vec<(usize, gscip_core::engine::RemovalReason)> {
    l.events
        .iter()
        .filter_map(|(i, e)| match e {
            Event::FlowRemoved { reason, .. } => Some((*i, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn entries_go_when_idle() {
    use gscip_core::engine::RemovalReason;
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"x"));
    l.run_for(10_000);
    assert_eq!(l.engines[0].pit().len(), 1);
    // Traffic keeps it; silence for the idle timeout removes it at both ends.
    l.run_for(200_000_000);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"y"));
    l.run_for(200_000_000);
    assert_eq!(l.engines[0].pit().len(), 1, "traffic 200 s ago keeps the entry");
    l.run_for(150_000_000);
    assert!(l.engines.iter().all(|e| e.pit().is_empty()));
    assert_eq!(removals(&l), vec![(0, RemovalReason::Idle), (1, RemovalReason::Idle)]);
}

#[test]
fn entries_go_after_a_tcp_close_and_a_reset() {
    use gscip_core::engine::RemovalReason;
    use gscip_wire::ip::tcp_flags::{ACK, FIN, RST, SYN};
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(tcp(a_addr(), b_addr(), 40000, 80, SYN, b""));
    l.run_for(10_000);
    l.send_from_a(tcp(a_addr(), b_addr(), 40000, 80, FIN | ACK, b""));
    l.send_from_b(tcp(b_addr(), a_addr(), 80, 40000, FIN | ACK, b""));
    l.run_for(1_000_000);
    assert_eq!(l.engines[0].pit().len(), 1, "the entry lingers for the last ACKs");
    l.send_from_a(tcp(a_addr(), b_addr(), 40000, 80, ACK, b""));
    l.run_for(10_000_000);
    assert!(l.engines.iter().all(|e| e.pit().is_empty()));
    assert!(removals(&l).iter().all(|(_, r)| *r == RemovalReason::TcpClosed));
    // A reset closes at once (after the linger).
    l.send_from_a(tcp(a_addr(), b_addr(), 40001, 80, SYN, b""));
    l.run_for(10_000);
    l.send_from_b(tcp(b_addr(), a_addr(), 80, 40001, RST, b""));
    l.run_for(11_000_000);
    assert!(l.engines.iter().all(|e| e.pit().is_empty()));
}

#[test]
fn key_changes_remove_the_entries_that_depend_on_them() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1, 2]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"x"));
    l.run_for(10_000);
    assert_eq!(l.engines[0].pit().len(), 1);
    // A rotation that keeps version 1 in its grace period changes nothing.
    let mut ring = keys_for(&[1, 2]);
    ring.insert(GroupKey::new(GroupId(1), 2, [42; 32]));
    l.engines[0].set_group_keys(ring.clone());
    assert_eq!(l.engines[0].pit().len(), 1);
    // Version 1 leaves: the entry protected with it goes.
    let mut ring = GroupKeyring::new();
    ring.insert(GroupKey::new(GroupId(1), 2, [42; 32]));
    ring.insert(GroupKey::new(GroupId(2), 1, [2; 32]));
    l.engines[0].set_group_keys(ring);
    assert!(l.engines[0].pit().is_empty());
    // The next packet renegotiates; b still has only version 1, so a is left with group 1
    // v2 that b cannot verify: no common group, both open, plaintext.
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"y"));
    l.run_for(10_000);
    assert_eq!(l.app_b.len(), 2);
    // A membership change (group 2 removed) drops every entry.
    l.engines[0].set_group_keys(keys_for(&[1]));
    assert!(l.engines[0].pit().is_empty());
}

#[test]
fn held_packets_come_back_with_their_tags() {
    use gscip_core::engine::TransmitKind;
    // Protected: both held packets are released with their tags, in order.
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    let now = Timestamp(l.now);
    for tag in [11, 12] {
        let mut p = udp(a_addr(), b_addr(), 5000, 53, b"q");
        assert_eq!(l.engines[0].handle_packet_tagged(now, &mut p, tag), Verdict::Held);
        assert!(p.is_empty(), "the engine took the packet");
    }
    let mut released = Vec::new();
    let mut dde = None;
    while let Some(t) = l.engines[0].poll_transmit() {
        dde = Some(t.packet);
    }
    // Hand the DDE to b and b's answer back, until a releases.
    let mut to_b = vec![dde.expect("a DDE")];
    for _ in 0..4 {
        let mut to_a = Vec::new();
        for mut p in to_b.drain(..) {
            l.engines[1].handle_packet(now, &mut p);
            while let Some(t) = l.engines[1].poll_transmit() {
                to_a.push(t.packet);
            }
        }
        for mut p in to_a {
            l.engines[0].handle_packet(now, &mut p);
            while let Some(t) = l.engines[0].poll_transmit() {
                match t.kind {
                    TransmitKind::Released => released.push(t.tag),
                    TransmitKind::Control => to_b.push(t.packet),
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert_eq!(released, vec![11, 12]);

    // Discarded: the held packet comes back as Dropped with its tag (b is closed, no group).
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Closed, &[2])]);
    let now = Timestamp(l.now);
    let mut p = udp(a_addr(), b_addr(), 5000, 53, b"q");
    assert_eq!(l.engines[0].handle_packet_tagged(now, &mut p, 99), Verdict::Held);
    let dde = l.engines[0].poll_transmit().expect("DDE").packet;
    let mut p = dde;
    l.engines[1].handle_packet(now, &mut p);
    let mut rgi = l.engines[1].poll_transmit().expect("RGI").packet;
    l.engines[0].handle_packet(now, &mut rgi);
    let kinds: Vec<(TransmitKind, u64)> =
        std::iter::from_fn(|| l.engines[0].poll_transmit()).map(|t| (t.kind, t.tag)).collect();
    assert!(kinds.contains(&(TransmitKind::Dropped, 99)), "{kinds:?}");
}

/// Correctness under load: 10,000 new flows from a terminal, started at once, through one
/// closed GEN to a GES. Every held packet is delivered (none lost to the hold queue), nothing
/// crosses beyond the GEN in clear, and the GEN ends with one entry per flow.
#[test]
fn ten_thousand_new_flows_through_one_gen_lose_no_held_packet() {
    const FLOWS: u16 = 10_000;
    let mut l = Line::new(vec![gen_a(Mode::Closed, &[1]), ges_b(Mode::Open, &[1])]);
    for k in 0..FLOWS {
        let payload = format!("flow-{k:05}-payload");
        l.send_from_a(udp(a_addr(), b_addr(), 20_000 + k, 53, payload.as_bytes()));
    }
    // The GEN starts only a window's worth of negotiations at once; the others wait (no DDE,
    // no retransmission timer) with their packets held.
    let window = GeConfig::default().negotiation_window;
    let (mut most_waiting, mut most_started) = (0, 0);
    for _ in 0..2_000 {
        l.run_for(LINK_US);
        let gen = &l.engines[0];
        most_waiting = most_waiting.max(gen.negotiations_waiting());
        most_started = most_started.max(gen.negotiations_in_progress() - gen.negotiations_waiting());
    }
    assert_eq!(most_waiting, usize::from(FLOWS) - window);
    assert_eq!(most_started, window);
    l.run_for(30_000_000);
    let c = *l.engines[0].counters();
    assert_eq!(c.hold_overflow, 0, "{c:?}");
    assert_eq!(l.app_b.len(), usize::from(FLOWS), "held packets lost: {c:?}");
    let mut got: Vec<&[u8]> = l.app_b.iter().map(|p| p.as_slice()).collect();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), usize::from(FLOWS), "duplicates delivered");
    assert_eq!(l.engines[0].pit().len(), usize::from(FLOWS));
    assert_eq!(l.engines[0].held_packets(), 0);
    assert!(!seen_in_clear(&l.wire, 1..=2, b"-payload"), "a payload crossed beyond the GEN in clear");
    assert_eq!(c.negotiations_failed, 0, "{c:?}");
    assert_eq!(l.engines[0].negotiations_waiting(), 0);
}

/// A GE that lost its state and got no answer to its restart request learns nothing from the
/// silence: its next new flow to that host is negotiated (protected), not decided alone
/// (which a closed GE would turn into a discard for every flow until the cache expired).
#[test]
fn an_unanswered_restart_request_teaches_nothing() {
    let mut l = Line::new(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"one"));
    l.run_for(10_000);
    assert_eq!(l.app_b.len(), 1);
    // a restarts (state lost); every control message is lost for a while.
    let ca = CertificateAuthority::from_seed(&Zeroizing::new([99; 32])).unwrap();
    l.engines[0] = build(&ges_a(Mode::Closed, &[1]), &ca, 1);
    l.drop_control = Box::new(|_| true);
    l.send_from_b(udp(b_addr(), a_addr(), 53, 5000, b"late reply"));
    l.run_for(2_000_000);
    assert!(l.engines[0].counters().restarts_requested >= 1);
    // The network is back: a new flow from a to b is protected.
    l.drop_control = Box::new(|_| false);
    l.send_from_a(udp(a_addr(), b_addr(), 5001, 54, b"two"));
    l.run_for(1_000_000);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&b"two"[..]));
    let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 5001, dst: b_addr(), dst_port: 54 };
    assert_eq!(l.action(0, &cid), Some(FlowAction::Encrypt));
}

/// A new certificate from the GMS: same GE and kind only; a change of groups drops every
/// PIT entry (decisions may differ now), a mere renewal keeps them.
#[test]
fn a_new_certificate_replaces_the_identity() {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(udp(a_addr(), b_addr(), 5000, 53, b"x"));
    l.run_for(10_000);
    assert_eq!(l.engines[0].pit().len(), 1);
    let ca = CertificateAuthority::from_seed(&Zeroizing::new([99; 32])).unwrap();
    let s = Zeroizing::new([1u8; 32]);
    let pk = SigningIdentity::public_key_for_seed(&s).unwrap();
    let renewed = ca.issue(GeKind::Ges, Mode::Open, "a", &[GroupId(1)], pk, T0 / 1_000_000 + 2 * 86_400).unwrap();
    l.engines[0].set_identity(SigningIdentity::new(&s, renewed).unwrap()).unwrap();
    assert_eq!(l.engines[0].pit().len(), 1, "a renewal keeps the entries");
    let other = ca.issue(GeKind::Ges, Mode::Open, "b", &[GroupId(1)], pk, T0 / 1_000_000 + 86_400).unwrap();
    assert!(l.engines[0].set_identity(SigningIdentity::new(&s, other).unwrap()).is_err(), "another GE's name");
    let regrouped =
        ca.issue(GeKind::Ges, Mode::Open, "a", &[GroupId(1), GroupId(2)], pk, T0 / 1_000_000 + 86_400).unwrap();
    l.engines[0].set_identity(SigningIdentity::new(&s, regrouped).unwrap()).unwrap();
    assert!(l.engines[0].pit().is_empty(), "new groups: decisions are made again");
}

/// Every MPIT's records on the wire: (GE name, ephemeral public key).
fn ephemeral_keys_on_the_wire(wire: &[(usize, Vec<u8>)]) -> Vec<(String, [u8; 32])> {
    let mut out = Vec::new();
    for (_, p) in wire {
        if let Some(MessageRepr { body: Body::Mpit { records }, .. }) = dprp_message(p) {
            out.extend(records.iter().map(|r| (r.certificate.name.clone(), r.ephemeral_public)));
        }
    }
    out
}

#[test]
fn ephemeral_keys_made_ahead_serve_one_negotiation_each() {
    let mut l =
        Line::new_with(vec![ges_a(Mode::Open, &[1]), gen_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])], &|c| {
            c.ephemeral_keys_ahead = 4
        });
    // Made one at a time, up to the configured number.
    let mut steps = 0;
    while l.engines[0].prepare() {
        steps += 1;
    }
    assert_eq!((steps, l.engines[0].ephemeral_keys_ready()), (4, 4));
    assert!(!l.engines[0].prepare(), "nothing more to do once the pool is full");
    // Six flows: the first four take a key made ahead, the others one made on demand; the GEN
    // and B never prepared and make theirs on demand. Every flow is protected and delivered.
    for k in 0..6u16 {
        l.send_from_a(udp(a_addr(), b_addr(), 6000 + k, 53, b"flow"));
        l.run_for(20_000);
    }
    assert_eq!(l.app_b.len(), 6);
    assert_eq!(l.engines[0].ephemeral_keys_ready(), 0);
    assert_eq!(l.engines[0].counters().negotiations_completed, 6);
    for k in 0..6u16 {
        let cid = Cid { proto: L4Proto::Udp, src: a_addr(), src_port: 6000 + k, dst: b_addr(), dst_port: 53 };
        assert_eq!(l.action(0, &cid), Some(FlowAction::Encrypt));
        assert_eq!(l.action(2, &cid), Some(FlowAction::Decrypt));
    }
    // No ephemeral key serves two negotiations, at any GE (each MPIT crosses two links).
    let mut records = ephemeral_keys_on_the_wire(&l.wire);
    records.sort();
    records.dedup();
    assert_eq!(records.len(), 18, "three records in each of six MPITs");
    let mut keys: Vec<[u8; 32]> = records.iter().map(|(_, k)| *k).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 18);
    // Refilled when idle again.
    while l.engines[0].prepare() {}
    assert_eq!(l.engines[0].ephemeral_keys_ready(), 4);
}

/// The DPRP message type of a packet the engine sends, if it is one.
fn message_type(p: &[u8]) -> Option<dprp::MessageType> {
    Some(dprp_message(p)?.body.message_type())
}

#[test]
fn only_the_cdn_may_wait_for_the_verdicts() {
    // a negotiates with b by hand; every transmit says whether it may wait, and only the end
    // GE's CDN may (nothing on the data path waits for it; the MPIT must precede the release).
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    let now = Timestamp(l.now);
    let mut p = udp(a_addr(), b_addr(), 5000, 53, b"q");
    assert_eq!(l.engines[0].handle_packet_tagged(now, &mut p, 7), Verdict::Held);
    let mut seen = Vec::new();
    let mut to_b: Vec<Vec<u8>> = std::iter::from_fn(|| l.engines[0].poll_transmit()).map(|t| t.packet).collect();
    for _ in 0..3 {
        let mut to_a = Vec::new();
        for mut p in to_b.drain(..) {
            l.engines[1].handle_packet(now, &mut p);
            while let Some(t) = l.engines[1].poll_transmit() {
                seen.push((message_type(&t.packet), t.kind, t.deferrable));
                to_a.push(t.packet);
            }
        }
        for mut p in to_a {
            l.engines[0].handle_packet(now, &mut p);
            while let Some(t) = l.engines[0].poll_transmit() {
                seen.push((message_type(&t.packet), t.kind, t.deferrable));
                if t.kind == TransmitKind::Control {
                    to_b.push(t.packet);
                }
            }
        }
    }
    use dprp::MessageType::{Cdn, Mpit, Rgi};
    assert!(seen.contains(&(Some(Rgi), TransmitKind::Control, false)), "{seen:?}");
    assert!(seen.contains(&(Some(Mpit), TransmitKind::Control, false)), "{seen:?}");
    assert!(seen.contains(&(Some(Cdn), TransmitKind::Control, true)), "{seen:?}");
    assert!(seen.iter().any(|(_, k, d)| *k == TransmitKind::Released && !d), "{seen:?}");
    assert!(seen.iter().all(|(m, _, d)| *d == (*m == Some(Cdn))), "{seen:?}");
}

#[test]
fn the_end_ges_cdn_is_signed_after_the_first_packet_behind_the_mpit() {
    // b takes what it must send with `poll_urgent_transmit` while it handles packets, as the
    // daemon does within a batch: the MPIT's CDN is not made then, so the flow's first packet
    // right behind the MPIT is opened before the CDN's signature; `poll_transmit` makes it.
    let mut l = Line::new(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])]);
    let now = Timestamp(l.now);
    let mut p = udp(a_addr(), b_addr(), 5000, 53, b"first");
    assert_eq!(l.engines[0].handle_packet(now, &mut p), Verdict::Held);
    let mut dde = l.engines[0].poll_transmit().unwrap().packet;
    l.engines[1].handle_packet(now, &mut dde);
    let mut rgi = l.engines[1].poll_urgent_transmit().unwrap().packet;
    assert_eq!(message_type(&rgi), Some(dprp::MessageType::Rgi));
    l.engines[0].handle_packet(now, &mut rgi);
    let from_a: Vec<_> = std::iter::from_fn(|| l.engines[0].poll_transmit()).collect();
    assert_eq!(from_a.len(), 2, "the MPIT and the released packet");
    let mpit = from_a[0].packet.clone();
    assert_eq!(message_type(&mpit), Some(dprp::MessageType::Mpit));
    let mut sealed = from_a[1].packet.clone();

    assert_eq!(l.engines[1].handle_packet(now, &mut mpit.clone()), Verdict::Consumed);
    assert!(l.engines[1].poll_urgent_transmit().is_none(), "no CDN while the batch is handled");
    assert!(l.engines[1].has_due_cdns());
    // The MPIT again (a retransmission) before the CDN is made: nothing is sent again (not
    // the RGI, the message b sent before).
    l.engines[1].handle_packet(now, &mut mpit.clone());
    assert!(l.engines[1].poll_urgent_transmit().is_none(), "nothing resent");
    assert_eq!(l.engines[1].handle_packet(now, &mut sealed), Verdict::Accept, "opened behind the MPIT");
    assert!(sealed.windows(5).any(|w| w == b"first"));
    assert!(l.engines[1].poll_urgent_transmit().is_none());

    // After the verdicts: the CDN, once, and a's negotiation completes with it.
    let cdns: Vec<_> = std::iter::from_fn(|| l.engines[1].poll_transmit()).collect();
    assert_eq!(cdns.len(), 1);
    assert!(!l.engines[1].has_due_cdns());
    assert_eq!(message_type(&cdns[0].packet), Some(dprp::MessageType::Cdn));
    assert!(cdns[0].deferrable);
    l.engines[0].handle_packet(now, &mut cdns[0].packet.clone());
    let c = l.engines[0].counters();
    assert_eq!((c.negotiations_completed, c.negotiations_failed, c.auth_failures), (1, 0, 0), "{c:?}");
    // A retransmitted MPIT now gets the same CDN again.
    l.engines[1].handle_packet(now, &mut mpit.clone());
    let again = l.engines[1].poll_urgent_transmit().expect("the CDN again");
    assert_eq!(again.packet, cdns[0].packet);
}

// ----- units cut into segments (GSO) ------------------------------------------------------

fn tcp_at(seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = tcp(a_addr(), b_addr(), 40000, 80, flags, payload);
    let d = Datagram::parse(&p).unwrap();
    p[d.l4_offset + 4..d.l4_offset + 8].copy_from_slice(&seq.to_be_bytes());
    d.fill_checksums(&mut p);
    p
}

/// Two GESs with a TCP flow from a to b negotiated; what a seals b opens.
fn tcp_pair() -> Line {
    let mut l = Line::new(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])]);
    l.send_from_a(tcp(a_addr(), b_addr(), 40000, 80, gscip_wire::ip::tcp_flags::SYN, b""));
    l.run_for(10_000);
    let cid = Cid { proto: L4Proto::Tcp, src: a_addr(), src_port: 40000, dst: b_addr(), dst_port: 80 };
    assert_eq!(l.action(0, &cid), Some(FlowAction::Encrypt));
    l
}

const GSO: PacketContext = PacketContext { tag: 0, gso: true, can_segment: true };

/// Seals `payload` at `seq` as one unit at a (a GSO packet) and cuts it as the kernel does.
fn seal_and_cut(l: &mut Line, seq: u32, payload: &[u8], seg: usize) -> Vec<Vec<u8>> {
    let mut p = tcp_at(seq, gscip_wire::ip::tcp_flags::ACK | gscip_wire::ip::tcp_flags::PSH, payload);
    assert_eq!(l.engines[0].handle_packet_in(Timestamp(l.now), &mut p, GSO), Verdict::Accept);
    let mut pieces = Vec::new();
    gscip_wire::segment::segment_tcp(&p, seg, &mut Vec::new(), |s| pieces.push(s.to_vec())).unwrap();
    pieces
}

/// What came out of b: (tag, Released packet or None for Dropped).
fn outcomes(e: &mut Engine) -> Vec<(u64, Option<Vec<u8>>)> {
    std::iter::from_fn(|| e.poll_transmit())
        .filter_map(|t| match t.kind {
            TransmitKind::Released => Some((t.tag, Some(t.packet))),
            TransmitKind::Dropped => Some((t.tag, None)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_unit_cut_inside_its_trailer_is_put_together_too() {
    let mut l = tcp_pair();
    // 1,981 bytes and the trailer in segments of 1,000: the last 8 trailer bytes travel alone.
    let data = [5u8; 1981];
    let pieces = seal_and_cut(&mut l, 1000, &data, 1000);
    assert_eq!(pieces.iter().map(|p| p.len()).collect::<Vec<_>>(), [1040, 1040, 48]);
    let now = Timestamp(l.now);
    for (i, p) in pieces.iter().enumerate().rev() {
        let mut p = p.clone();
        let v = l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag: i as u64 + 1, ..Default::default() });
        assert_eq!(v, Verdict::Held);
    }
    let out = outcomes(&mut l.engines[1]);
    let released: Vec<usize> = out.iter().filter_map(|(_, p)| p.as_ref()).map(|p| p.len()).collect();
    assert_eq!(released, [1040, 1021], "the data, without the trailer bytes");
    assert_eq!(out.last(), Some(&(3, None)), "the piece of trailer bytes alone goes no further");
    assert_eq!(l.engines[1].counters().pieces_dropped, 0, "not a loss");
}

#[test]
fn a_unit_cut_on_the_wire_is_held_until_whole_then_goes_on_in_order() {
    let mut l = tcp_pair();
    let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let pieces = seal_and_cut(&mut l, 1000, &data, 1448);
    assert!(pieces.len() > 10);
    assert!(!seen_in_clear(&[(0, pieces.concat())], 0..=0, &data[..64]), "sealed");
    let now = Timestamp(l.now);
    // The last piece first, then the others backwards: all held until the first arrives.
    let mut order: Vec<usize> = (0..pieces.len()).rev().collect();
    order.rotate_left(1);
    let mut out = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        let mut p = pieces[i].clone();
        let v = l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag: 100 + i as u64, ..Default::default() });
        assert_eq!(v, Verdict::Held, "piece {i}");
        out.extend(outcomes(&mut l.engines[1]));
        assert_eq!(out.is_empty(), k + 1 < order.len(), "released only when whole");
    }
    let tags: Vec<u64> = out.iter().map(|(t, _)| *t).collect();
    assert_eq!(tags, (0..pieces.len() as u64).map(|i| 100 + i).collect::<Vec<_>>(), "in sequence order");
    let mut stream = Vec::new();
    for (_, p) in &out {
        let p = p.as_ref().expect("released");
        let d = Datagram::parse(p).unwrap();
        assert!(d.checksums_ok(p));
        assert_eq!(d.tcp_seq, 1000 + stream.len() as u32);
        stream.extend_from_slice(&p[d.payload_offset..d.end]);
    }
    assert_eq!(stream, data);
    let c = l.engines[1].counters();
    assert_eq!((c.pieces_held, c.units_reassembled, c.pieces_dropped), (pieces.len() as u64, 1, 0));
    assert_eq!(l.engines[1].held_piece_bytes(), 0);
}

#[test]
fn a_unit_sent_again_after_a_loss_opens_from_its_own_pieces_or_counts_as_a_failed_unit() {
    let mut l = tcp_pair();
    let data: Vec<u8> = (0..4000u32).map(|i| (i % 253) as u8).collect();
    let now = Timestamp(l.now);
    let give = |l: &mut Line, p: &[u8], tag: u64| {
        let mut p = p.to_vec();
        l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag, ..Default::default() })
    };
    // The first sealing loses its middle piece; the host sends the data again twice, cut at
    // the same places: the first time the middle piece is lost again, the second time not.
    let first = seal_and_cut(&mut l, 1000, &data, 1448);
    let second = seal_and_cut(&mut l, 1000, &data, 1448);
    let third = seal_and_cut(&mut l, 1000, &data, 1448);
    assert_eq!(first.len(), 3);
    for (i, p) in [&first[0], &first[2]].into_iter().enumerate() {
        assert_eq!(give(&mut l, p, 10 + i as u64), Verdict::Held);
    }
    // Neither sealing has its middle piece: nothing is complete.
    for (i, p) in [&second[0], &second[2]].into_iter().enumerate() {
        assert_eq!(give(&mut l, p, 20 + i as u64), Verdict::Held);
    }
    assert!(outcomes(&mut l.engines[1]).iter().all(|(_, p)| p.is_none()), "nothing delivered");
    let c = l.engines[1].counters();
    assert_eq!((c.units_failed, c.auth_failures, c.units_reassembled), (0, 0, 0), "incomplete so far");
    // The third sealing arrives whole: its own pieces are taken, none of the older ones.
    for (i, p) in third.iter().enumerate() {
        assert_eq!(give(&mut l, p, 30 + i as u64), Verdict::Held);
    }
    let out = outcomes(&mut l.engines[1]);
    let released: Vec<u64> = out.iter().filter(|(_, p)| p.is_some()).map(|(t, _)| *t).collect();
    assert_eq!(released, [30, 31, 32]);
    let mut stream = Vec::new();
    for p in out.iter().filter_map(|(_, p)| p.as_ref()) {
        let d = Datagram::parse(p).unwrap();
        stream.extend_from_slice(&p[d.payload_offset..d.end]);
    }
    assert_eq!(stream, data);
    // On the way, the two older last pieces were each tried against the third sealing's first
    // pieces before its own last piece came: each failed and went, those pieces stayed.
    let c = l.engines[1].counters();
    assert_eq!((c.units_reassembled, c.units_failed, c.auth_failures), (1, 2, 0));
    // A last piece whose own middle piece was lost completes with another sealing's piece at
    // that place: it fails, counted apart, and only the last piece goes.
    assert_eq!(give(&mut l, &second[1], 40), Verdict::Held);
    let failed_before = l.engines[1].counters().units_failed;
    let mut fourth = seal_and_cut(&mut l, 1000, &data, 1448);
    let last = fourth.pop().unwrap();
    assert_eq!(give(&mut l, &fourth[0], 50), Verdict::Held);
    assert_eq!(give(&mut l, &last, 51), Verdict::Held);
    let out = outcomes(&mut l.engines[1]);
    assert!(out.iter().all(|(_, p)| p.is_none()), "nothing unauthenticated delivered: {out:?}");
    assert_eq!(out.iter().map(|(t, _)| *t).collect::<Vec<_>>(), [51]);
    let c = l.engines[1].counters();
    assert_eq!(c.units_failed, failed_before + 1, "{c:?}");
    assert_eq!(c.auth_failures, 0);
    // Held until their timeout: the first two sealings' first pieces, and these two.
    let held = first[0].len() + second[0].len() + fourth[0].len() + second[1].len();
    assert_eq!(l.engines[1].held_piece_bytes(), held);
}

#[test]
fn pieces_that_never_complete_are_dropped_after_the_timeout_and_when_the_entry_goes() {
    let mut l = tcp_pair();
    let pieces = seal_and_cut(&mut l, 1000, &[7; 5000], 1000);
    let now = Timestamp(l.now);
    for (i, p) in pieces.iter().enumerate().skip(1) {
        let mut p = p.clone();
        l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag: i as u64, ..Default::default() });
    }
    assert!(outcomes(&mut l.engines[1]).is_empty());
    assert!(l.engines[1].held_piece_bytes() > 0);
    l.engines[1].handle_timeout(Timestamp(l.now + 150_000));
    assert!(outcomes(&mut l.engines[1]).is_empty(), "still within the timeout");
    l.now += 250_000;
    l.engines[1].handle_timeout(Timestamp(l.now));
    let out = outcomes(&mut l.engines[1]);
    assert_eq!(out.len(), pieces.len() - 1);
    assert!(out.iter().all(|(_, p)| p.is_none()), "dropped, never delivered unopened");
    assert_eq!(l.engines[1].held_piece_bytes(), 0);
    // Pieces held when the entry goes are dropped with it.
    let now = Timestamp(l.now);
    let mut p = pieces[1].clone();
    l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag: 77, ..Default::default() });
    l.engines[1].set_group_keys(keys_for(&[1, 3]));
    assert_eq!(outcomes(&mut l.engines[1]), vec![(77, None)]);
}

#[test]
fn when_retransmissions_are_a_large_share_a_flow_of_cut_units_is_cut_into_segments_before_sealing() {
    use gscip_wire::ip::tcp_flags::ACK;
    let mut l = tcp_pair();
    let now = Timestamp(l.now);
    let e = &mut l.engines[0];
    // Without cut units, a retransmission changes nothing.
    for seq in [1000, 2000, 1500] {
        let mut p = tcp_at(seq, ACK, &[1; 500]);
        assert_eq!(
            e.handle_packet_in(now, &mut p, PacketContext { can_segment: true, ..Default::default() }),
            Verdict::Accept
        );
    }
    let mut big = tcp_at(3000, ACK, &[2; 60_000]);
    assert_eq!(e.handle_packet_in(now, &mut big, GSO), Verdict::Accept);
    // Retransmissions of that unit's data are sealed again while they are a small share of
    // what the flow sends (one loss, or reordering); once they reach an eighth of the window,
    // the packet is given back unchanged, to be cut.
    let retransmission = tcp_at(3000, ACK, &[2; 60_000]);
    let mut resent = 0;
    let verdict = loop {
        let mut p = retransmission.clone();
        let v = e.handle_packet_in(now, &mut p, GSO);
        resent += 1;
        if v != Verdict::Accept {
            assert_eq!(p, retransmission, "untouched");
            break v;
        }
    };
    assert_eq!(verdict, Verdict::Segment);
    assert_eq!(resent, gscip_core::unit::RETRANSMIT_LIMIT.div_ceil(60_000));
    assert_eq!(e.counters().flows_segmented, 1);
    // From the GSO path every later packet is sent to be cut; the segments themselves are sealed.
    let mut p = tcp_at(63_000, ACK, &[3; 4000]);
    assert_eq!(e.handle_packet_in(now, &mut p, GSO), Verdict::Segment);
    let mut p = tcp_at(63_000, ACK, &[3; 1400]);
    assert_eq!(e.handle_packet_in(now, &mut p, PacketContext::default()), Verdict::Accept);
    assert_eq!(e.counters().flows_segmented, 1);
}

#[test]
fn a_flow_cut_into_segments_goes_back_to_units_once_its_segments_cross_a_clean_path() {
    use gscip_core::unit::{CLEAN_LIMIT, RETRANSMIT_LIMIT, WATCH_WINDOW};
    use gscip_core::Engine;
    use gscip_wire::ip::tcp_flags::ACK;
    const SEGMENT: u32 = 1400;
    let mut l = tcp_pair();
    let now = Timestamp(l.now);
    let e = &mut l.engines[0];
    // One segment from the per-packet path: always sealed.
    let segment = |e: &mut Engine, seq: u32| {
        let mut p = tcp_at(seq, ACK, &[4; SEGMENT as usize]);
        assert_eq!(e.handle_packet_in(now, &mut p, PacketContext::default()), Verdict::Accept);
    };
    // A window of segments: `resent` bytes sent again first (retransmissions), then new ones
    // until the window is full. Its first segment ends the window before.
    let window = |e: &mut Engine, next: &mut u32, resent: u32| {
        let mut back = 0;
        while back < resent {
            segment(e, next.wrapping_sub(30_000).wrapping_add(back % 30_000));
            back += SEGMENT;
        }
        let start = *next;
        while next.wrapping_sub(start) + back < WATCH_WINDOW {
            segment(e, *next);
            *next = next.wrapping_add(SEGMENT);
        }
    };
    // A unit, then its data resent from the GSO path until the flow is cut into segments.
    let switch = |e: &mut Engine, next: &mut u32| {
        for _ in 0..RETRANSMIT_LIMIT.div_ceil(60_000) + 1 {
            let mut p = tcp_at(*next, ACK, &[2; 60_000]);
            if e.handle_packet_in(now, &mut p, GSO) == Verdict::Segment {
                *next = next.wrapping_add(60_000);
                return;
            }
        }
        panic!("never cut");
    };
    let from_gso = |e: &mut Engine, next: u32| {
        let mut p = tcp_at(next, ACK, &[5; 30_000]);
        e.handle_packet_in(now, &mut p, GSO)
    };
    let mut next = 3000u32;
    switch(e, &mut next);
    assert_eq!(e.counters().flows_segmented, 1);
    // A window with more than the clean share retransmitted, then one within it.
    window(e, &mut next, CLEAN_LIMIT + SEGMENT);
    window(e, &mut next, CLEAN_LIMIT - SEGMENT);
    assert_eq!(from_gso(e, next), Verdict::Segment, "the first window was not clean");
    assert_eq!(e.counters().flows_back_to_units, 0);
    // The next segment ends the clean window: it is sealed, and the platform is asked to hand
    // the flow over whole again, with every segment until one comes whole.
    let unsegment = |e: &mut Engine, seq: u32| {
        let mut p = tcp_at(seq, ACK, &[4; SEGMENT as usize]);
        let original = p.clone();
        assert_eq!(e.handle_packet_in(now, &mut p, PacketContext::default()), Verdict::Unsegment);
        assert_ne!(p, original, "sealed");
    };
    unsegment(e, next);
    next = next.wrapping_add(SEGMENT);
    assert_eq!(e.counters().flows_back_to_units, 1);
    unsegment(e, next);
    next = next.wrapping_add(SEGMENT);
    assert_eq!(from_gso(e, next), Verdict::Accept, "sealed whole");
    next = next.wrapping_add(30_000);
    segment(e, next);
    next = next.wrapping_add(SEGMENT);
    // Cut again: now it takes two clean windows.
    switch(e, &mut next);
    assert_eq!(e.counters().flows_segmented, 2);
    window(e, &mut next, 0);
    window(e, &mut next, 0);
    assert_eq!(from_gso(e, next), Verdict::Segment, "one clean window is not enough the second time");
    unsegment(e, next);
    next = next.wrapping_add(SEGMENT);
    assert_eq!(e.counters().flows_back_to_units, 2);
    assert_eq!(from_gso(e, next), Verdict::Accept);
}

#[test]
fn a_packet_too_long_to_seal_whole_is_cut_or_dropped_and_the_flow_stays() {
    use gscip_wire::ip::tcp_flags::ACK;
    let mut l = Line::new_with(vec![ges_a(Mode::Open, &[1]), ges_b(Mode::Open, &[1])], &|c| c.max_packet_len = 9000);
    l.send_from_a(tcp(a_addr(), b_addr(), 40000, 80, gscip_wire::ip::tcp_flags::SYN, b""));
    l.run_for(10_000);
    let now = Timestamp(l.now);
    let mut p = tcp_at(1000, ACK, &[1; 8990]);
    assert_eq!(l.engines[0].handle_packet_in(now, &mut p, GSO), Verdict::Segment);
    let mut p = tcp_at(1000, ACK, &[1; 8990]);
    assert_eq!(
        l.engines[0].handle_packet_in(now, &mut p, PacketContext::default()),
        Verdict::Drop(DropReason::TooLong)
    );
    assert_eq!(l.engines[0].pit().len(), 1, "the flow keeps its entry");
    let mut p = tcp_at(1000, ACK, &[1; 1000]);
    assert_eq!(l.engines[0].handle_packet_in(now, &mut p, PacketContext::default()), Verdict::Accept);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    /// The opening end against a model, with the real sealing end: units of random sizes cut
    /// at a random segment size, delivered in a random order with losses, duplicates and forged
    /// pieces, some units cut inside their trailer. Every packet the engine holds comes back
    /// exactly once, released or dropped; what
    /// is released is the sender's plaintext at its place in the stream; a unit goes on exactly
    /// when every piece of it arrived; nothing stays held after the timeout.
    #[test]
    fn units_in_pieces_against_the_model(
        units in proptest::collection::vec((1usize..12_000, any::<bool>(), 1usize..27), 1..5),
        seg in 536usize..1500,
        order in proptest::collection::vec(any::<u16>(), 0..80),
        lost in proptest::collection::vec(any::<bool>(), 1..40),
        dups in proptest::collection::vec(any::<u16>(), 0..3),
        forged in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 1..200)), 0..3),
    ) {
        // Some units sized so that the kernel's cut falls inside their trailer.
        let sizes: Vec<usize> = units
            .iter()
            .map(|&(n, split, r)| if split { ((n / seg).max(1) * seg + r).saturating_sub(27).max(1) } else { n })
            .collect();
        let mut l = tcp_pair();
        let base = 5000u32;
        let total: usize = sizes.iter().sum();
        let stream: Vec<u8> = (0..total).map(|i| (i * 31 + 7) as u8).collect();
        let mut pieces = Vec::new(); // (unit, packet)
        let mut at = 0;
        for (u, &n) in sizes.iter().enumerate() {
            for p in seal_and_cut(&mut l, base + at as u32, &stream[at..at + n], seg) {
                pieces.push((u, p));
            }
            at += n;
        }
        let n = pieces.len();
        let mut delivery: Vec<usize> = (0..n).collect();
        for (i, o) in order.iter().enumerate() {
            delivery.swap(i % n, usize::from(*o) % n);
        }
        let mut arrivals: Vec<Vec<u8>> = Vec::new();
        let mut arrived_units = vec![true; sizes.len()];
        for &i in &delivery {
            if lost[i % lost.len()] && lost.len() > 1 {
                arrived_units[pieces[i].0] = false;
            } else {
                arrivals.push(pieces[i].1.clone());
            }
        }
        for d in &dups {
            if !arrivals.is_empty() {
                let k = usize::from(*d) % arrivals.len();
                arrivals.push(arrivals[k].clone());
            }
        }
        for (off, junk) in &forged {
            // Beyond the stream, so that it never displaces a real piece.
            let seq = base + total as u32 + 1 + u32::from(*off);
            arrivals.push(tcp_at(seq, gscip_wire::ip::tcp_flags::ACK, junk));
        }
        let mut held = std::collections::HashSet::new();
        let mut out = Vec::new();
        let mut accepted = Vec::new();
        for (k, mut p) in arrivals.into_iter().enumerate() {
            let tag = 1 + k as u64;
            let now = Timestamp(l.now + k as u64);
            let v = l.engines[1].handle_packet_in(now, &mut p, PacketContext { tag, ..Default::default() });
            match v {
                Verdict::Held => {
                    held.insert(tag);
                }
                // A whole unit (it fit one segment) goes on at once.
                Verdict::Accept => accepted.push(p),
                _ => {}
            }
            out.extend(outcomes(&mut l.engines[1]));
        }
        // (Line::run_for would take b's transmits.)
        l.engines[1].handle_timeout(Timestamp(l.now + 1_000_000));
        out.extend(outcomes(&mut l.engines[1]));
        let mut seen = std::collections::HashSet::new();
        for (tag, _) in &out {
            prop_assert!(held.contains(tag), "tag {} was not held", tag);
            prop_assert!(seen.insert(*tag), "tag {} came back twice", tag);
        }
        prop_assert_eq!(seen.len(), held.len(), "a held packet never came back");
        prop_assert_eq!(l.engines[1].held_piece_bytes(), 0);
        // What was released is the stream at its place.
        let mut covered = vec![false; total];
        for p in out.iter().filter_map(|(_, p)| p.as_ref()).chain(accepted.iter()) {
            let d = Datagram::parse(p).unwrap();
            prop_assert!(d.checksums_ok(p));
            let from = d.tcp_seq.wrapping_sub(base) as usize;
            let data = &p[d.payload_offset..d.end];
            prop_assert_eq!(data, &stream[from..from + data.len()]);
            for c in &mut covered[from..from + data.len()] {
                *c = true;
            }
        }
        let mut at = 0;
        for (u, &n) in sizes.iter().enumerate() {
            let whole = covered[at..at + n].iter().all(|&c| c);
            prop_assert_eq!(whole, arrived_units[u], "unit {}", u);
            at += n;
        }
    }
}

/// A packet to a multicast or broadcast address, or from the unspecified address (a DHCP
/// client without a lease), has no single peer: no end GE can answer for it. The GE decides
/// alone at once with the policy's "no pair" and sends no DPRP message for it: a closed GES
/// discards its host's multicast and broadcast, an open one passes them; what the host sends
/// before it has an address is not from a protected address (transit: passes), as it was
/// when the GE got there only after its whole retransmission schedule.
#[test]
fn group_and_broadcast_addresses_are_decided_alone_at_once() {
    let mcast: IpAddr = "224.0.0.251".parse().unwrap();
    let bcast: IpAddr = "255.255.255.255".parse().unwrap();
    let mcast6: IpAddr = "ff02::fb".parse().unwrap();
    let any: IpAddr = "0.0.0.0".parse().unwrap();
    for (mode, expected) in [(Mode::Closed, false), (Mode::Open, true)] {
        let mut l = Line::new(vec![ges_a(mode, &[1]), ges_b(Mode::Closed, &[1])]);
        let now = Timestamp(l.now);
        for (src, dst, passes) in [(a_addr(), mcast, expected), (a_addr(), bcast, expected), (any, bcast, true)] {
            let mut p = udp(src, dst, 5353, 5353, b"query");
            let v = l.engines[0].handle_packet(now, &mut p);
            assert_eq!(v == Verdict::Accept, passes, "{mode:?} {src} -> {dst}: {v:?}");
            assert!(v != Verdict::Held, "{mode:?} {src} -> {dst}: held");
            let sent: Vec<_> = std::iter::from_fn(|| l.engines[0].poll_transmit()).map(|t| t.kind).collect();
            assert!(sent.is_empty(), "{mode:?} {src} -> {dst}: no DPRP message for a group address: {sent:?}");
        }
        assert_eq!(l.engines[0].counters().restarts_requested, 0);
    }
    // IPv6 multicast, and a multicast datagram reaching a GES from another host.
    let mut l = Line::new(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])]);
    let now = Timestamp(l.now);
    let src6: IpAddr = "fe80::1".parse().unwrap();
    let mut p = udp(src6, mcast6, 5353, 5353, b"query");
    assert_ne!(l.engines[0].handle_packet(now, &mut p), Verdict::Held);
    let mut p = udp(b_addr(), mcast, 5353, 5353, b"announce");
    assert_ne!(l.engines[0].handle_packet(now, &mut p), Verdict::Held);
    assert!(l.engines[0].poll_transmit().is_none(), "no restart request toward a group address's sender");
}

// ----- path keys (docs/dprp.md section 11) ----------------------------------------------------

/// A — GEN — B, all in group 1, closed at both ends, working ahead when idle (as the daemon
/// does), so that path keys are made between negotiations.
fn keyed_line(tweak: &dyn Fn(&mut GeConfig)) -> Line {
    let mut l =
        Line::new_with(vec![ges_a(Mode::Closed, &[1]), gen_a(Mode::Open, &[1]), ges_b(Mode::Closed, &[1])], tweak);
    l.prepare_when_idle = true;
    l
}

/// Per engine: (signatures verified, MACs verified).
fn verifications(l: &Line) -> Vec<(u64, u64)> {
    l.engines.iter().map(|e| (e.counters().signatures_verified, e.counters().macs_verified)).collect()
}

/// Per engine: (signatures, MACs) verified since `before` ([`verifications`]).
fn verifications_since(l: &Line, before: &[(u64, u64)]) -> Vec<(u64, u64)> {
    verifications(l).iter().zip(before).map(|(a, b)| (a.0 - b.0, a.1 - b.1)).collect()
}

fn flow_from_a(l: &mut Line, port: u16, payload: &[u8]) -> Cid {
    l.send_from_a(udp(a_addr(), b_addr(), port, 53, payload));
    l.run_for(100_000);
    Cid { proto: L4Proto::Udp, src: a_addr(), src_port: port, dst: b_addr(), dst_port: 53 }
}

fn actions(l: &Line, cid: &Cid) -> Vec<Option<FlowAction>> {
    (0..l.engines.len()).map(|i| l.action(i, cid)).collect()
}

#[test]
fn later_negotiations_on_a_path_authenticate_records_by_path_keys() {
    let mut l = keyed_line(&|_| {});
    let first = flow_from_a(&mut l, 5000, b"first flow, signatures only.....");
    // a checks b's and the GEN's records and b's CDN; the GEN b's and a's records and the CDN;
    // b the GEN's and a's records.
    assert_eq!(verifications(&l), vec![(3, 0), (3, 0), (2, 0)]);
    assert!(l.engines.iter().all(|e| e.path_keys() == 2), "each GE made a key with the two others");
    let second_payload = b"second flow, path keys.........!";
    let second = flow_from_a(&mut l, 5001, second_payload);
    assert_eq!(verifications(&l), vec![(3, 3), (3, 3), (2, 2)], "no signature verified the second time");
    assert_eq!(l.app_b, vec![b"first flow, signatures only.....".to_vec(), second_payload.to_vec()]);
    assert_eq!(actions(&l, &second), actions(&l, &first), "the same decisions");
    assert!(actions(&l, &second).contains(&Some(FlowAction::Encrypt)));
    assert!(!seen_in_clear(&l.wire, 1..=2, second_payload), "protected between the pair");
    for e in &l.engines {
        let c = e.counters();
        assert_eq!((c.negotiations_failed, c.bad_control, c.path_keys_derived), (0, 0, 2), "{}: {c:?}", e.name());
    }
}

#[test]
fn a_ge_that_lost_its_path_keys_is_verified_by_signatures_and_keys_are_made_again() {
    let mut l = keyed_line(&|_| {});
    flow_from_a(&mut l, 5000, b"one");
    // b restarts: same identity, no keys. The others still MAC for it; it cannot check those
    // MACs and checks the signatures, which every record still carries.
    let ca = CertificateAuthority::from_seed(&Zeroizing::new([99; 32])).unwrap();
    l.engines[2] = build(&l.specs[2].clone(), &ca, 3);
    let before = verifications(&l);
    let cid = flow_from_a(&mut l, 5001, b"two");
    let after = verifications(&l);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&b"two"[..]));
    assert_eq!(after[2], (2, 0), "b: both records by signature");
    assert_eq!(verifications_since(&l, &before)[0], (2, 1), "a: b's record and CDN signed only");
    assert_eq!(l.action(2, &cid), Some(FlowAction::Decrypt));
    assert_eq!(l.engines[0].counters().negotiations_marked, 1, "the second flow was not marked: a had keys");
    assert_eq!(l.engines[2].counters().path_keys_derived, 0, "b makes no key from an unmarked negotiation");
    // a checked b by signature although it held a key with b from before: b lost its keys, so
    // a marks its next negotiation there, and the keys are made again from it on both sides.
    let before = verifications(&l);
    flow_from_a(&mut l, 5002, b"three");
    let after = verifications(&l);
    assert_eq!(l.engines[0].counters().negotiations_marked, 2);
    assert_eq!(after[2], (4, 0), "b: still by signature");
    assert_eq!(l.engines[2].counters().path_keys_derived, 2, "b made keys with a and the GEN");
    assert_eq!(verifications_since(&l, &before)[0], (2, 1));
    let before = verifications(&l);
    flow_from_a(&mut l, 5003, b"four");
    assert_eq!(
        verifications_since(&l, &before),
        vec![(0, 3), (0, 3), (0, 2)],
        "keys made again on both sides of the loss"
    );
    assert_eq!(l.engines[0].counters().negotiations_marked, 2, "and no more marks");
}

#[test]
fn in_a_burst_every_ge_makes_its_path_keys_from_the_one_marked_negotiation() {
    let mut l = keyed_line(&|_| {});
    // Keys made as soon as a negotiation allows, as a busy daemon does (one per turn).
    l.path_key_per_packet = true;
    // Twenty new flows at once: their negotiations overlap at every GE. Only the first is
    // marked; each GE makes one key per peer from it, so the pairs meet on the same keys.
    for port in 6000..6020u16 {
        l.send_from_a(udp(a_addr(), b_addr(), port, 53, b"burst"));
    }
    l.run_for(200_000);
    assert_eq!(l.app_b.len(), 20, "every flow's packet arrived");
    assert_eq!(l.engines[0].counters().negotiations_marked, 1, "one marked negotiation in flight at a time");
    for e in &l.engines {
        assert_eq!(e.counters().path_keys_derived, 2, "{}: one key with each of the two others", e.name());
    }
    // b's twenty CDNs announce one key for a's next negotiation, not twenty (section 14).
    let mut announced = announced_end_keys(&l.wire);
    announced.sort();
    announced.dedup();
    assert_eq!(announced.len(), 1, "one key announced to a at a time");
    let before = verifications(&l);
    flow_from_a(&mut l, 6100, b"after the burst");
    assert_eq!(verifications_since(&l, &before), vec![(0, 3), (0, 3), (0, 2)], "the next flow checks no signature");
    assert_eq!(l.engines[0].counters().negotiations_marked, 1);
    assert_eq!(l.engines[0].counters().agreements_ahead_used, 1, "the flow after the burst used it");
}

#[test]
fn the_end_ge_agrees_with_the_announced_initiator_key_ahead_and_only_uses_a_matching_one() {
    let mut l = keyed_line(&|_| {});
    let payload = b"agreed ahead, sealed all the same";
    flow_from_a(&mut l, 5000, payload);
    assert_eq!(l.app_b, vec![payload.to_vec()]);
    assert!(!seen_in_clear(&l.wire, 1..=2, payload), "protected between the pair");
    assert_eq!(l.engines[2].counters().agreements_ahead_used, 1, "b agreed while waiting for the MPIT");
    assert_eq!(l.engines[0].counters().agreements_ahead_used, 0, "the initiator has nothing to agree ahead");
    // A DDE whose announced key was changed on the way: b agrees ahead with the wrong key, sees
    // that the verified record carries another, and agrees again with that one.
    l.rewrite_control = Box::new(|_, m| match &mut m.body {
        Body::Dde { extensions } => {
            for e in extensions.iter_mut().filter(|e| e.kind == dprp::Extension::INITIATOR_EPHEMERAL) {
                e.value = vec![9; 32];
            }
            true
        }
        _ => false,
    });
    let payload = b"announced key forged, flow intact";
    flow_from_a(&mut l, 5001, payload);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&payload[..]));
    assert!(!seen_in_clear(&l.wire, 1..=2, payload));
    assert_eq!(l.engines[2].counters().agreements_ahead_used, 1, "the forged key's agreement unused");
}

#[test]
fn a_record_whose_mac_and_signature_fail_is_refused_and_a_bad_mac_alone_falls_back() {
    let mut l = keyed_line(&|_| {});
    flow_from_a(&mut l, 5000, b"one");
    // On the link into a, the RGI's last record (the GEN's): its MACs are changed.
    l.rewrite_control = Box::new(|link, m| match &mut m.body {
        Body::Rgi { records } if link == 1 => {
            let rec = records.last_mut().unwrap();
            rec.macs.iter_mut().for_each(|mac| mac.tag[0] ^= 1);
            !rec.macs.is_empty()
        }
        _ => false,
    });
    let before = verifications(&l);
    flow_from_a(&mut l, 5001, b"two");
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&b"two"[..]), "the signature still stands");
    assert_eq!(verifications_since(&l, &before)[0], (1, 2), "the GEN's record checked by its signature");
    // Now its signature is changed too: the record is refused, and closed a discards the flow.
    l.rewrite_control = Box::new(|link, m| match &mut m.body {
        Body::Rgi { records } if link == 1 => {
            let rec = records.last_mut().unwrap();
            rec.macs.iter_mut().for_each(|mac| mac.tag[0] ^= 1);
            rec.signature[0] ^= 1;
            true
        }
        _ => false,
    });
    let failed = l.engines[0].counters().negotiations_failed;
    let cid = flow_from_a(&mut l, 5002, b"three");
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&b"two"[..]), "nothing more arrived");
    assert_eq!(l.engines[0].counters().negotiations_failed, failed + 1);
    assert_eq!(l.action(0, &cid), Some(FlowAction::Discard));
}

#[test]
fn path_keys_expire_and_can_be_turned_off() {
    let mut l = keyed_line(&|c| c.path_key_lifetime = gscip_core::Micros::from_secs(1));
    flow_from_a(&mut l, 5000, b"one");
    l.run_for(1_500_000);
    flow_from_a(&mut l, 5001, b"two");
    assert_eq!(verifications(&l), vec![(6, 0), (6, 0), (4, 0)], "expired keys are not used");
    let mut off = keyed_line(&|c| c.path_key_lifetime = gscip_core::Micros(0));
    let mut ddes_with_hints = 0;
    for port in [5000, 5001] {
        flow_from_a(&mut off, port, b"x");
    }
    for (_, p) in &off.wire {
        let Ok(d) = Datagram::parse(p) else { continue };
        if let Ok(MessageRepr { body: Body::Dde { extensions }, .. }) = MessageRepr::parse(&p[d.payload_offset..d.end])
        {
            ddes_with_hints += extensions.iter().filter(|e| e.kind == dprp::Extension::PATH_HINT).count();
        }
    }
    assert_eq!(verifications(&off), vec![(6, 0), (6, 0), (4, 0)]);
    assert!(off.engines.iter().all(|e| e.path_keys() == 0) && ddes_with_hints == 0);
    assert_eq!(off.app_b.len(), 2);
}

#[test]
fn a_certificate_checked_before_is_refused_once_it_has_expired() {
    // Certificates here expire a day after T0. Both GEs check (and cache) each other's on the
    // first flow; a day later the same certificates must no longer be accepted.
    let mut l = Line::new(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])]);
    flow_from_a(&mut l, 5000, b"today");
    assert_eq!(l.app_b, vec![b"today".to_vec()]);
    l.run_for(86_400 * 1_000_000 + 1_000_000);
    let cid = flow_from_a(&mut l, 5001, b"tomorrow");
    assert_eq!(l.app_b, vec![b"today".to_vec()], "a flow negotiated with expired certificates");
    let a = l.engines[0].counters();
    assert!(a.bad_control > 0 && a.negotiations_failed > 0, "{a:?}");
    assert_eq!(l.action(0, &cid), Some(FlowAction::Discard), "closed a falls back to discarding");
}

// ----- DDEs passed unseen (docs/dprp.md section 13) -------------------------------------------

/// [`keyed_line`] whose GEN lets DDEs pass unseen once it has announced it (its kernel rule).
fn kernel_pass_line() -> Line {
    keyed_line(&|c| c.kernel_dde_pass = !c.protected.is_empty())
}

fn dde_passes(e: &mut Engine) -> Vec<gscip_core::DdePass> {
    std::iter::from_fn(|| e.poll_dde_pass()).collect()
}

#[test]
fn a_gen_lets_later_ddes_pass_unseen_and_joins_at_the_rgi_authenticated_by_path_keys() {
    let mut l = kernel_pass_line();
    let first = flow_from_a(&mut l, 5000, b"first flow: the GEN meets the DDE");
    assert_eq!(l.ddes_passed_unseen, 0);
    assert_eq!(dde_passes(&mut l.engines[1]), vec![gscip_core::DdePass { addr: b_addr(), pass: true }]);
    assert!(dde_passes(&mut l.engines[0]).is_empty() && dde_passes(&mut l.engines[2]).is_empty(), "GESs: off");
    let before = verifications(&l);
    let payload = b"second flow: its DDE passes the GEN unseen";
    let second = flow_from_a(&mut l, 5001, payload);
    assert_eq!(l.ddes_passed_unseen, 1);
    assert_eq!(l.engines[1].counters().negotiations_joined_at_rgi, 1);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&payload[..]));
    assert_eq!(actions(&l, &second), actions(&l, &first), "the same decisions as with the DDE seen");
    assert!(!seen_in_clear(&l.wire, 1..=2, payload), "protected between the pair");
    // The GEN, which met no path hint, MACed its record for a from what it learned of the first
    // flow's path: no signature is checked anywhere.
    assert_eq!(verifications_since(&l, &before), vec![(0, 3), (0, 3), (0, 2)]);
    // Its pass is renewed by the negotiations it joins, not announced again each time.
    assert!(dde_passes(&mut l.engines[1]).is_empty());
}

#[test]
fn a_dde_passed_unseen_toward_a_host_whose_ge_is_gone_is_answered_from_the_port_unreachable() {
    // A — GEN — B, the GEN in front of B's subnet: it probes for a GE inside at the first DDE.
    let gen_b = GeSpec {
        name: "gen",
        kind: GeKind::Gen,
        mode: Mode::Closed,
        groups: vec![1],
        protected: vec!["10.0.1.0/24".parse().unwrap()],
        local: vec!["10.0.1.254".parse().unwrap()],
    };
    let mut l = Line::new_with(vec![ges_a(Mode::Closed, &[1]), gen_b, ges_b(Mode::Closed, &[1])], &|c| {
        c.kernel_dde_pass = !c.protected.is_empty()
    });
    l.prepare_when_idle = true;
    flow_from_a(&mut l, 5000, b"b's GES is there");
    assert_eq!(l.app_b.len(), 1);
    assert!(l.engines[1].passes_dde_unseen(Timestamp(l.now), b_addr()));
    // b's GES goes; host b answers DPRP with "port unreachable" from now on.
    l.engines.pop();
    l.specs.pop();
    let payload = b"b's GES is gone: the GEN must answer for b";
    flow_from_a(&mut l, 5001, payload);
    assert_eq!(l.ddes_passed_unseen, 1, "the GEN's kernel rule still let the DDE pass");
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&payload[..]), "delivered, as if the GEN had met the DDE");
    assert_eq!(l.errors_a, 0, "the error never reached a, which would have concluded no GE lies before b");
    let gen = l.engines[1].counters();
    assert_eq!(gen.ddes_recovered_from_icmp, 1, "{gen:?}");
    assert_eq!(l.engines[0].counters().negotiations_failed, 0);
    assert!(!l.engines[1].passes_dde_unseen(Timestamp(l.now), b_addr()), "the pass is withdrawn");
    assert_eq!(dde_passes(&mut l.engines[1]).last(), Some(&gscip_core::DdePass { addr: b_addr(), pass: false }));
}

// ----- MPITs passed in the kernel, the GEN taking part from a copy (docs/dprp.md section 15) ---

#[test]
fn a_gen_lets_mpits_pass_in_the_kernel_and_takes_part_from_their_copies() {
    // All closed: a GEN without an entry for a flow would hold its packets and not relay them.
    let line = |mpit_pass: bool| {
        let specs = vec![ges_a(Mode::Closed, &[1]), gen_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])];
        let mut l = Line::new_with(specs, &|c| {
            c.kernel_dde_pass = !c.protected.is_empty();
            c.kernel_mpit_pass = mpit_pass && !c.protected.is_empty();
        });
        l.prepare_when_idle = true;
        l
    };
    let (mut seen, mut l) = (line(false), line(true));
    for (port, payload) in
        [(5000u16, &b"first flow: the RGI told the GEN a GE lies beyond b"[..]), (5001, b"second flow")]
    {
        let cid = flow_from_a(&mut seen, port, payload);
        flow_from_a(&mut l, port, payload);
        assert_eq!(l.app_b.last().map(Vec::as_slice), Some(payload));
        assert_eq!(actions(&l, &cid), actions(&seen, &cid), "the same decisions as with the MPIT met in the queue");
        assert_eq!(l.action(1, &cid), Some(FlowAction::Relay), "the GEN's entry, made from the copy");
        assert!(!seen_in_clear(&l.wire, 1..=2, payload), "protected between the pair");
        l.send_from_b(udp(b_addr(), a_addr(), 53, port, b"the answer"));
        l.run_for(100_000);
        assert_eq!(l.app_a.last().map(Vec::as_slice), Some(&b"the answer"[..]));
    }
    // Once the RGI of the first flow had come back from beyond b, every MPIT toward b passed.
    assert_eq!((seen.mpits_passed_in_kernel, l.mpits_passed_in_kernel), (0, 2));
    let gen = *l.engines[1].counters();
    assert_eq!(gen.mpits_copied, 2, "{gen:?}");
    // The GEN relayed each flow at once, both ways: nothing held, no negotiation more.
    assert_eq!((gen.held, gen.restarts_requested, gen.negotiations_failed), (0, 0, 0), "{gen:?}");
    assert_eq!(l.engines[0].counters().negotiations_started, 2);
    assert!(!l.engines[0].passes_mpit_in_kernel(Timestamp(l.now), b_addr()), "a GES: off");
    // A copy of anything but an MPIT is not taken for one.
    let mut dde_copy = l.wire.iter().find(|(_, p)| dde_destination(p).is_some()).unwrap().1.clone();
    let before = *l.engines[1].counters();
    l.engines[1].handle_passed_copy(Timestamp(l.now), &mut dde_copy);
    assert_eq!(*l.engines[1].counters(), before);
}

// ----- the end GE's key for the next negotiation (docs/dprp.md section 14) --------------------

/// The key announced in CDNs on the wire (`Extension::END_EPHEMERAL`), in order.
fn announced_end_keys(wire: &[(usize, Vec<u8>)]) -> Vec<Vec<u8>> {
    wire.iter()
        .filter_map(|(_, p)| match dprp_message(p)?.body {
            Body::Cdn { extensions, .. } => {
                extensions.into_iter().find(|e| e.kind == dprp::Extension::END_EPHEMERAL).map(|e| e.value)
            }
            _ => None,
        })
        .collect()
}

#[test]
fn the_initiator_agrees_with_the_end_ges_announced_key_ahead_and_only_uses_a_matching_one() {
    let mut l = keyed_line(&|_| {});
    flow_from_a(&mut l, 5000, b"first flow: b announces a key");
    assert_eq!(l.engines[0].counters().agreements_ahead_used, 0, "nothing announced before the first CDN");
    let mut announced = announced_end_keys(&l.wire);
    announced.dedup(); // the CDN crosses two links
    assert_eq!(announced.len(), 1, "b's CDN announces a key for a's next negotiation");
    let payload = b"second flow: agreed while the DDE travelled";
    flow_from_a(&mut l, 5001, payload);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&payload[..]));
    assert!(!seen_in_clear(&l.wire, 1..=2, payload));
    assert_eq!(l.engines[0].counters().agreements_ahead_used, 1, "a used the agreement it computed ahead");
    // b's record in the second negotiation carries the announced key, and only there.
    let keys = ephemeral_keys_on_the_wire(&l.wire);
    let mut b_keys: Vec<&[u8; 32]> = keys.iter().filter(|(n, _)| n == "b").map(|(_, k)| k).collect();
    b_keys.dedup(); // each MPIT crosses two links
    assert_eq!(b_keys.len(), 2, "{keys:?}");
    assert_eq!(&b_keys[1][..], &announced[0][..], "b put the key it announced in its record");
    assert_ne!(b_keys[0], b_keys[1]);
    // The announcement on the way to a is changed: a agrees ahead with a key b never had, b
    // answers with a fresh key, and a computes the agreement at the RGI; the flow is intact.
    l.rewrite_control = Box::new(|_, m| match &mut m.body {
        Body::Cdn { extensions, .. } => {
            for e in extensions.iter_mut().filter(|e| e.kind == dprp::Extension::END_EPHEMERAL) {
                e.value = vec![9; 32];
            }
            true
        }
        _ => false,
    });
    flow_from_a(&mut l, 5002, b"third flow: its announcement forged");
    let payload = b"fourth flow: the forged key named";
    flow_from_a(&mut l, 5003, payload);
    assert_eq!(l.app_b.last().map(Vec::as_slice), Some(&payload[..]));
    assert!(!seen_in_clear(&l.wire, 1..=2, payload));
    assert_eq!(l.engines[0].counters().agreements_ahead_used, 2, "the third used b's real key, the fourth none");
    assert_eq!(l.engines[0].counters().negotiations_failed, 0);
}

/// Two closed GESs with `stay_awake` set, their messages handed over by hand at chosen times.
struct HandPair {
    a: Engine,
    b: Engine,
}

impl HandPair {
    fn new(stay_awake_us: u64) -> HandPair {
        let ca = CertificateAuthority::from_seed(&Zeroizing::new([99; 32])).unwrap();
        let tweak = |c: &mut GeConfig| c.stay_awake = gscip_core::Micros(stay_awake_us);
        HandPair {
            a: build_with(&ges_a(Mode::Closed, &[1]), &ca, 1, &tweak),
            b: build_with(&ges_b(Mode::Closed, &[1]), &ca, 2, &tweak),
        }
    }

    /// One new TCP flow from port `port`: a's SYN at `t`, the DDE at b `one_way` later, the RGI
    /// back at a after as long again, the MPIT and the SYN at b after as long again, the CDN at
    /// a after as long again. Returns when a met the RGI.
    fn flow(&mut self, port: u16, t: u64, one_way: u64) -> u64 {
        let mut syn = tcp(a_addr(), b_addr(), port, 80, 0x02, b"");
        assert_eq!(self.a.handle_packet(Timestamp(t), &mut syn), Verdict::Held);
        let mut dde = self.a.poll_urgent_transmit().unwrap().packet;
        self.b.handle_packet(Timestamp(t + one_way), &mut dde);
        let mut rgi = self.b.poll_urgent_transmit().unwrap().packet;
        let at_rgi = t + 2 * one_way;
        self.a.handle_packet(Timestamp(at_rgi), &mut rgi);
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| self.a.poll_urgent_transmit()).map(|x| x.packet).collect();
        let at_b = Timestamp(t + 3 * one_way);
        let delivered =
            out.into_iter().filter(|p| self.b.handle_packet(at_b, &mut p.clone()) == Verdict::Accept).count();
        assert_eq!(delivered, 1, "the SYN opened at b");
        for mut cdn in std::iter::from_fn(|| self.b.poll_transmit()).map(|x| x.packet).collect::<Vec<_>>() {
            self.a.handle_packet(Timestamp(t + 4 * one_way), &mut cdn);
        }
        at_rgi
    }
}

#[test]
fn a_ge_stays_awake_for_a_new_flow_only_where_the_dprp_round_trip_is_short() {
    let mut p = HandPair::new(1_000);
    let t0 = T0;
    // Before any round trip is measured, each step keeps a GE awake for the whole cap.
    let mut syn = tcp(a_addr(), b_addr(), 4000, 80, 0x02, b"");
    assert_eq!(p.a.stay_awake_until(Timestamp(t0)), None, "nothing expected yet");
    assert_eq!(p.a.handle_packet(Timestamp(t0), &mut syn), Verdict::Held);
    assert_eq!(p.a.stay_awake_until(Timestamp(t0)), Some(Timestamp(t0 + 1_000)));
    let mut dde = p.a.poll_urgent_transmit().unwrap().packet;
    p.b.handle_packet(Timestamp(t0 + 50), &mut dde);
    assert_eq!(p.b.stay_awake_until(Timestamp(t0 + 50)), Some(Timestamp(t0 + 1_050)));
    let mut rgi = p.b.poll_urgent_transmit().unwrap().packet;
    p.a.handle_packet(Timestamp(t0 + 100), &mut rgi);
    assert_eq!(p.a.dprp_round_trip(), Some(gscip_core::Micros(100)), "DDE out to RGI in");
    let out: Vec<Vec<u8>> = std::iter::from_fn(|| p.a.poll_urgent_transmit()).map(|x| x.packet).collect();
    for mut m in out {
        p.b.handle_packet(Timestamp(t0 + 150), &mut m);
    }
    assert_eq!(p.b.dprp_round_trip(), Some(gscip_core::Micros(100)), "RGI out to MPIT in");

    // Measured: a step keeps it awake twice the round trip; so does a packet of the young flow.
    let t1 = t0 + 10_000;
    assert_eq!(p.a.stay_awake_until(Timestamp(t1)), None, "the window passed");
    let at_rgi = p.flow(4001, t1, 50);
    assert_eq!(p.a.stay_awake_until(Timestamp(at_rgi)), Some(Timestamp(t1 + 4 * 50 + 200)), "the CDN's step");
    let young = at_rgi + 600;
    let mut data = tcp(a_addr(), b_addr(), 4001, 80, 0x10, b"x");
    assert_eq!(p.a.handle_packet(Timestamp(young), &mut data), Verdict::Accept);
    assert_eq!(p.a.stay_awake_until(Timestamp(young)), Some(Timestamp(young + 200)));
    // An old flow's packet does not.
    let old = at_rgi + 5_000;
    let mut data = tcp(a_addr(), b_addr(), 4001, 80, 0x10, b"y");
    assert_eq!(p.a.handle_packet(Timestamp(old), &mut data), Verdict::Accept);
    assert_eq!(p.a.stay_awake_until(Timestamp(old)), None);

    // A slow path (round trips of 2 ms, over half the cap): no GE stays awake for it.
    let mut t = t1 + 20_000;
    for port in 4002..4030 {
        p.flow(port, t, 1_000);
        t += 20_000;
    }
    assert!(p.a.dprp_round_trip().is_some_and(|rt| rt.0 > 500), "{:?}", p.a.dprp_round_trip());
    let mut syn = tcp(a_addr(), b_addr(), 4100, 80, 0x02, b"");
    p.a.handle_packet(Timestamp(t), &mut syn);
    assert_eq!(p.a.stay_awake_until(Timestamp(t)), None);
    assert_eq!(p.b.stay_awake_until(Timestamp(t)), None);

    // Off: never.
    let mut off = HandPair::new(0);
    off.flow(4000, t0, 50);
    assert_eq!(off.a.stay_awake_until(Timestamp(t0)), None);
    assert_eq!(off.b.stay_awake_until(Timestamp(t0 + 50)), None);
    assert_eq!(off.a.dprp_round_trip(), Some(gscip_core::Micros(100)), "measured all the same");
}

#[test]
fn while_a_new_flow_is_under_way_only_a_low_stock_of_keys_is_refilled() {
    let mut l = Line::new_with(vec![ges_a(Mode::Closed, &[1]), ges_b(Mode::Closed, &[1])], &|c| {
        c.ephemeral_keys_ahead = 8;
    });
    let a = &mut l.engines[0];
    // Work that can wait for an idle moment: below a quarter of the stock only.
    let mut steps = 0;
    while a.prepare_soon() {
        steps += 1;
    }
    assert_eq!((steps, a.ephemeral_keys_ready()), (2, 2));
    while a.prepare() {}
    assert_eq!(a.ephemeral_keys_ready(), 8);
    // What a flow in flight needs soon is done all the same: the initiator's agreement with the
    // end GE's announced key, for its next negotiation toward b (section 14).
    while l.engines[1].prepare() {}
    l.send_from_a(tcp(a_addr(), b_addr(), 4000, 80, 0x02, b""));
    l.run_for(10_000);
    let before = l.engines[0].counters().agreements_ahead_used;
    l.send_from_a(tcp(a_addr(), b_addr(), 4001, 80, 0x02, b""));
    // The DDE is out, the RGI not back yet: the agreement is due soon, keys for later flows
    // are not (the stock is above a quarter).
    let keys = l.engines[0].ephemeral_keys_ready();
    let mut soon = 0;
    while l.engines[0].prepare_soon() {
        soon += 1;
    }
    assert!(soon >= 1, "the agreement is due soon");
    assert_eq!(l.engines[0].ephemeral_keys_ready(), keys, "no key made for later flows");
    l.run_for(10_000);
    assert_eq!(l.engines[0].counters().agreements_ahead_used, before + 1);
}

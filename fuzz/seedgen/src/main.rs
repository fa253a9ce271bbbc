//! Writes the seed corpus of the GSCIP fuzz targets, one directory per target:
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml -p gscip-fuzz-seedgen -- fuzz/seeds
//! ```
//!
//! The `engine_packet` seeds are real negotiations: the fuzzed GE (built exactly as the target
//! builds it, so the same keys and nonces) talks to a peer GE enrolled in the same stand-in GMS,
//! and every packet the fuzzed GE meets is recorded as a step of the target's input format.
//! Replayed by the target, they take it through DDE, RGI, MPIT, CDN, sealing and opening with
//! valid signatures. The packets and DPRP messages of those exchanges seed the parser targets.
//! Every seed is run through its target's harness before it is written.
#![forbid(unsafe_code)]

use gscip_core::{Engine, GeConfig, GeKind, Mode, Timestamp, Transmit};
use gscip_fuzz_harness as h;
use gscip_fuzz_harness::{op, Step};
use gscip_wire::dprp::{Body, Extension, HeaderRepr, MessageRepr, RecordMac, DPRP_PORT};
use gscip_wire::icmp::{emit_error, IcmpErrorKind};
use gscip_wire::ip::{Datagram, DatagramRepr};
use gscip_wire::pccom::TrailerRepr;
use gscip_wire::{Cid, L4Proto};
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const A4: usize = 0; // TEMPLATE_ADDRS index: host inside the fuzzed GE
const B4: usize = 2; // host behind the peer GE

fn addr(v6: bool, i: usize) -> IpAddr {
    h::TEMPLATE_ADDRS[usize::from(v6)][i]
}

fn nobody(v6: bool) -> IpAddr {
    if v6 {
        "fd00:3::9".parse().unwrap()
    } else {
        "10.3.0.9".parse().unwrap()
    }
}

fn peer_config() -> GeConfig {
    GeConfig {
        protected: vec!["10.2.0.0/24".parse().unwrap(), "fd00:2::/64".parse().unwrap()],
        local_addrs: vec![
            "10.0.1.2".parse().unwrap(),
            "10.2.0.1".parse().unwrap(),
            "fd00:0:1::2".parse().unwrap(),
            "fd00:2::1".parse().unwrap(),
        ],
        ..GeConfig::default()
    }
}

fn dst_of(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::from([p[16], p[17], p[18], p[19]])),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[24..40]);
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

fn in_ge(a: IpAddr) -> bool {
    let c = h::ge_config();
    c.local_addrs.contains(&a) || c.protected.iter().any(|n| n.contains(&a))
}
fn in_peer(a: IpAddr) -> bool {
    let c = peer_config();
    c.local_addrs.contains(&a) || c.protected.iter().any(|n| n.contains(&a))
}

#[allow(clippy::too_many_arguments)]
fn packet(
    proto: L4Proto,
    src: IpAddr,
    sp: u16,
    dst: IpAddr,
    dp: u16,
    flags: u8,
    mss: Option<u16>,
    payload: &[u8],
) -> Vec<u8> {
    DatagramRepr {
        cid: Cid { proto, src, src_port: sp, dst, dst_port: dp },
        ttl: 64,
        tcp_flags: flags,
        tcp_seq: 0x1000_0000,
        tcp_ack: if flags & 0x10 != 0 { 0x2000_0000 } else { 0 },
        tcp_mss: mss,
        payload,
    }
    .emit()
    .expect("a seed packet")
}

/// The fuzzed GE, a peer GE behind which 10.2.0.0/24 lies, and the hosts around them.
struct Net {
    ge: Engine,
    peer: Engine,
    now: Timestamp,
    steps: Vec<Step>,
    to_ge: VecDeque<Vec<u8>>,
    /// Everything that crossed the "wire" (for the parser seeds).
    seen: Vec<Vec<u8>>,
    at_a: Vec<Vec<u8>>,
    at_b: Vec<Vec<u8>>,
}

impl Net {
    fn new(with_peer_groups: &[u16]) -> Net {
        let (mut gms, ge) = h::build_engine();
        let peer_enrolled = gms.enroll("peer", GeKind::Gen, Mode::Closed, with_peer_groups).expect("enroll peer");
        let peer = h::engine_from(peer_enrolled, peer_config(), 7);
        Net {
            ge,
            peer,
            now: h::START,
            steps: Vec::new(),
            to_ge: VecDeque::new(),
            seen: Vec::new(),
            at_a: Vec::new(),
            at_b: Vec::new(),
        }
    }

    fn route_from_ge(&mut self, out: Vec<Transmit>) {
        let mut to_peer = Vec::new();
        for t in out {
            self.seen.push(t.packet.clone());
            let Some(d) = dst_of(&t.packet) else { continue };
            if t.to_local {
                continue;
            }
            if in_peer(d) {
                to_peer.push(t.packet);
            } else if in_ge(d) {
                self.at_a.push(t.packet);
            }
        }
        for p in to_peer {
            self.deliver_to_peer(p);
        }
    }

    fn deliver_to_peer(&mut self, mut p: Vec<u8>) {
        self.peer.handle_timeout(self.now);
        let _ = self.peer.handle_packet(self.now, &mut p);
        if !p.is_empty() {
            // Accepted (or dropped): if it was going inside, the host gets it.
            if let Some(d) = dst_of(&p) {
                if in_peer(d) && !self.peer_local(d) {
                    self.at_b.push(p);
                }
            }
        }
        self.peer_out();
    }

    fn peer_local(&self, a: IpAddr) -> bool {
        peer_config().local_addrs.contains(&a)
    }

    fn peer_out(&mut self) {
        while let Some(t) = self.peer.poll_transmit() {
            self.seen.push(t.packet.clone());
            let Some(d) = dst_of(&t.packet) else { continue };
            if in_ge(d) {
                self.to_ge.push_back(t.packet);
            } else if in_peer(d) {
                self.at_b.push(t.packet);
            }
        }
        while self.peer.poll_event().is_some() {}
    }

    /// One step of the fuzzed GE (recorded in the seed).
    fn ge_step(&mut self, step: Step) {
        let out = h::run_step(&mut self.ge, &mut self.now, &step);
        self.steps.push(step);
        self.peer.handle_timeout(self.now);
        self.peer_out();
        self.route_from_ge(out);
    }

    /// A packet reaches the fuzzed GE (from host A inside, or from outside).
    fn a_or_outside_sends(&mut self, p: Vec<u8>) {
        self.seen.push(p.clone());
        self.ge_step(Step::packet(0, p));
    }

    /// Host B sends a packet: it crosses the peer first.
    fn b_sends(&mut self, p: Vec<u8>) {
        self.seen.push(p.clone());
        let mut q = p;
        self.peer.handle_timeout(self.now);
        let v = self.peer.handle_packet(self.now, &mut q);
        if !q.is_empty() && matches!(v, gscip_core::Verdict::Accept) {
            self.to_ge.push_back(q);
        }
        self.peer_out();
        self.pump();
    }

    /// Delivers everything in flight and runs both GEs' timers until nothing is due within a
    /// second.
    fn pump(&mut self) {
        for _ in 0..200 {
            if let Some(p) = self.to_ge.pop_front() {
                self.a_or_outside_sends(p);
                continue;
            }
            let horizon = Timestamp(self.now.0 + 1_000_000);
            let g = self.ge.poll_timeout().filter(|t| *t <= horizon);
            let p = self.peer.poll_timeout().filter(|t| *t <= horizon);
            match (g, p) {
                (None, None) => return,
                (Some(g), p) if p.is_none_or(|p| g <= p) => self.ge_step(Step::wait(0, true)),
                (_, Some(p)) => {
                    let need = p.0.saturating_sub(self.now.0);
                    let idx = h::ADVANCE_US.iter().position(|&a| a >= need).unwrap_or(15) as u8;
                    self.ge_step(Step::wait(idx, false));
                }
                (Some(_), None) => unreachable!(),
            }
        }
    }

    fn wait(&mut self, idx: u8) {
        self.ge_step(Step::wait(idx, false));
        self.pump();
    }

    fn seed(&self) -> Vec<u8> {
        h::encode_steps(&self.steps)
    }
}

/// A TCP connection from A (inside the fuzzed GE) to B (behind the peer), or the other way.
fn tcp_conversation(v6: bool, a_opens: bool) -> Net {
    let mut n = Net::new(&[1]);
    let (a, b) = (addr(v6, A4), addr(v6, B4));
    let syn = |s, d, sp, dp| packet(L4Proto::Tcp, s, sp, d, dp, 0x02, Some(1460), &[]);
    if a_opens {
        n.a_or_outside_sends(syn(a, b, 40000, 80));
        n.pump();
        n.b_sends(packet(L4Proto::Tcp, b, 80, a, 40000, 0x12, Some(1460), &[]));
        n.a_or_outside_sends(packet(L4Proto::Tcp, a, 40000, b, 80, 0x18, None, b"GET / HTTP/1.0\r\n\r\n"));
        n.pump();
        n.b_sends(packet(L4Proto::Tcp, b, 80, a, 40000, 0x18, None, b"HTTP/1.0 200 OK\r\n\r\nhello"));
        n.b_sends(packet(L4Proto::Tcp, b, 80, a, 40000, 0x11, None, &[]));
        n.a_or_outside_sends(packet(L4Proto::Tcp, a, 40000, b, 80, 0x11, None, &[]));
        n.pump();
    } else {
        n.b_sends(syn(b, a, 40001, 22));
        n.a_or_outside_sends(packet(L4Proto::Tcp, a, 22, b, 40001, 0x12, Some(1460), &[]));
        n.pump();
        n.b_sends(packet(L4Proto::Tcp, b, 40001, a, 22, 0x18, None, b"SSH-2.0-fuzz\r\n"));
        n.a_or_outside_sends(packet(L4Proto::Tcp, a, 22, b, 40001, 0x14, None, &[]));
        n.pump();
    }
    n.wait(11); // close linger
    n.wait(13); // idle timeout
    n
}

fn udp_conversation(v6: bool) -> Net {
    let mut n = Net::new(&[1]);
    let (a, b) = (addr(v6, A4), addr(v6, B4));
    n.a_or_outside_sends(packet(L4Proto::Udp, a, 40000, b, 53, 0, None, b"\x12\x34\x01\x00\x00\x01query"));
    n.a_or_outside_sends(packet(L4Proto::Udp, a, 40000, b, 53, 0, None, b"second, held"));
    n.pump();
    n.b_sends(packet(L4Proto::Udp, b, 53, a, 40000, 0, None, b"\x12\x34\x81\x80answer"));
    n.a_or_outside_sends(packet(L4Proto::Udp, a, 40000, b, 53, 0, None, b"third"));
    n.pump();
    n.wait(13);
    n
}

/// The peer is in another group: the closed GEs agree to discard.
fn no_common_group() -> Net {
    let mut n = Net::new(&[2]);
    let (a, b) = (addr(false, A4), addr(false, B4));
    n.a_or_outside_sends(packet(L4Proto::Udp, a, 40000, b, 53, 0, None, b"x"));
    n.pump();
    n.a_or_outside_sends(packet(L4Proto::Udp, a, 40000, b, 53, 0, None, b"y"));
    n.b_sends(packet(L4Proto::Udp, b, 53, a, 40000, 0, None, b"z"));
    n
}

/// Nobody answers the DDE: retransmissions, then the closed GE's fallback (discard, reject).
/// An ICMP port unreachable quoting the DDE comes back first on the IPv6 variant.
fn no_peer(v6: bool) -> Net {
    let mut n = Net::new(&[1]);
    let (a, far) = (addr(v6, A4), nobody(v6));
    n.a_or_outside_sends(packet(L4Proto::Tcp, a, 40000, far, 443, 0x02, Some(1460), &[]));
    if v6 {
        if let Some(dde) = n.seen.iter().rev().find(|p| is_dprp(p)).cloned() {
            let icmp = emit_error(far, &dde, IcmpErrorKind::PortUnreachable).expect("icmp");
            n.a_or_outside_sends(icmp);
        }
    }
    for _ in 0..8 {
        n.ge_step(Step::wait(0, true));
    }
    n.a_or_outside_sends(packet(L4Proto::Tcp, a, 40000, far, 443, 0x02, Some(1460), &[]));
    n
}

/// B's packet reaches the fuzzed GE with no PIT entry for its flow: it asks B's side to
/// restart the negotiation, and the peer does.
fn restart() -> Net {
    let mut n = Net::new(&[1]);
    let (a, b) = (addr(false, A4), addr(false, B4));
    n.a_or_outside_sends(packet(L4Proto::Tcp, b, 80, a, 40002, 0x18, None, b"stale flow"));
    n.pump();
    n.wait(9);
    n.b_sends(packet(L4Proto::Tcp, b, 80, a, 40002, 0x18, None, b"after restart"));
    n
}

fn is_dprp(p: &[u8]) -> bool {
    Datagram::parse(p)
        .is_ok_and(|d| d.cid.proto == L4Proto::Udp && d.cid.src_port == DPRP_PORT && d.cid.dst_port == DPRP_PORT)
}

fn dprp_payload(p: &[u8]) -> Option<Vec<u8>> {
    let d = Datagram::parse(p).ok()?;
    is_dprp(p).then(|| p[d.payload_offset..d.end].to_vec())
}

/// Short hand-made `engine_packet` inputs built from templates.
fn template_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    // A TCP SYN with MSS from inside to B, then time runs out.
    let syn = vec![0b0110_1000, 0x02];
    out.push((
        "template-syn".into(),
        h::encode_steps(&[
            Step { op: op::TEMPLATE, packet: Some(syn.clone()) },
            Step::wait(6, true),
            Step { op: op::TEMPLATE | 6, packet: Some(syn) },
            Step::wait(13, false),
        ]),
    ));
    // A DDE from B's side for a flow B -> A, in a template (UDP between the DPRP ports).
    for (name, v6) in [("template-dde4", false), ("template-dde6", true)] {
        let (a, b) = (addr(v6, A4), addr(v6, B4));
        let cid = Cid { proto: L4Proto::Tcp, src: b, src_port: 40003, dst: a, dst_port: 80 };
        for flags in [0u8, 1] {
            let hdr = HeaderRepr { flags, nonce: [0x5a; 16], cid: if flags == 1 { cid.reversed() } else { cid } };
            let ext = vec![Extension { kind: 1, value: b"v".to_vec() }];
            let msg = MessageRepr { header: hdr, body: Body::Dde { extensions: ext } }.emit().unwrap();
            let shape = (B4 as u8) | ((A4 as u8) << 2) | if v6 { 0x10 } else { 0 };
            let mut t = vec![shape, 0];
            t.extend_from_slice(&msg);
            let steps =
                [Step { op: op::TEMPLATE | op::LOOP_BACK, packet: Some(t) }, Step::wait(5, true), Step::wait(0, true)];
            out.push((format!("{name}-flags{flags}"), h::encode_steps(&steps)));
        }
    }
    // Raw junk and an ICMP error quoting a DPRP packet.
    let dde = packet(L4Proto::Udp, addr(false, A4), DPRP_PORT, nobody(false), DPRP_PORT, 0, None, &[0; 8]);
    let icmp = emit_error(nobody(false), &dde, IcmpErrorKind::PortUnreachable).unwrap();
    out.push(("icmp-about-dprp".into(), h::encode_steps(&[Step::packet(0, icmp)])));
    out.push((
        "junk".into(),
        h::encode_steps(&[Step::packet(1, vec![0x45, 0, 0, 20]), Step::packet(2, vec![0x60; 41])]),
    ));
    out
}

struct Writer {
    root: PathBuf,
    counts: BTreeMap<&'static str, usize>,
}

impl Writer {
    fn put(&mut self, target: &'static str, name: &str, bytes: &[u8]) {
        // Every seed must run clean before it is written.
        match target {
            "dprp_message" => h::dprp_message(bytes),
            "datagram" => h::datagram(bytes),
            "icmp_error" => h::icmp_error(bytes),
            "pccom_trailer" => h::pccom_trailer(bytes),
            "pccom_unit" => h::pccom_unit(bytes),
            "scenario" => h::scenario(bytes),
            "engine_packet" => h::engine_packet(bytes),
            "gms_state" => h::gms_state(bytes),
            "daemon_config" => h::daemon_config(bytes),
            "nfqueue_message" => h::nfqueue_message(bytes),
            "nflog_message" => h::nflog_message(bytes),
            "tcp_segment" => h::tcp_segment(bytes),
            _ => unreachable!("unknown target {target}"),
        }
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("seed directory");
        std::fs::write(dir.join(name), bytes).expect("write seed");
        *self.counts.entry(target).or_default() += 1;
    }
}

fn main() {
    let root = std::env::args().nth(1).unwrap_or_else(|| "fuzz/seeds".into());
    let root = PathBuf::from(root);
    if root.exists() {
        std::fs::remove_dir_all(&root).expect("clear the seed directory");
    }
    let mut w = Writer { root, counts: BTreeMap::new() };

    let nets = [
        ("tcp4-a-opens", tcp_conversation(false, true)),
        ("tcp6-a-opens", tcp_conversation(true, true)),
        ("tcp4-b-opens", tcp_conversation(false, false)),
        ("udp4", udp_conversation(false)),
        ("udp6", udp_conversation(true)),
        ("no-common-group", no_common_group()),
        ("no-peer4", no_peer(false)),
        ("no-peer6", no_peer(true)),
        ("restart", restart()),
    ];
    let mut packets: Vec<Vec<u8>> = Vec::new();
    for (name, n) in &nets {
        let c = n.ge.counters();
        eprintln!(
            "{name}: {} steps, ge: negotiations {} started / {} completed / {} failed, sealed {}, opened {}, bad control {}; at A {}, at B {}",
            n.steps.len(),
            c.negotiations_started,
            c.negotiations_completed,
            c.negotiations_failed,
            c.sealed,
            c.opened,
            c.bad_control,
            n.at_a.len(),
            n.at_b.len(),
        );
        // The seed must replay to the same engine state in the target.
        let (_gms, mut replay) = h::build_engine();
        let mut now = h::START;
        for step in h::parse_steps(&n.seed()) {
            h::run_step(&mut replay, &mut now, &step);
        }
        assert_eq!(replay.counters(), n.ge.counters(), "{name}: the seed does not replay");
        w.put("engine_packet", name, &n.seed());
        packets.extend(n.seen.iter().cloned());
        packets.extend(n.at_a.iter().cloned());
        packets.extend(n.at_b.iter().cloned());
    }
    for (name, s) in template_seeds() {
        w.put("engine_packet", &name, &s);
    }

    // Parser seeds from the exchanges: one per distinct packet shape / DPRP message type.
    packets.sort();
    packets.dedup();
    let mut dprp_by_type: BTreeMap<(u8, usize), Vec<u8>> = BTreeMap::new();
    let mut dg_by_shape: BTreeMap<(u8, u8, bool), Vec<u8>> = BTreeMap::new();
    for p in &packets {
        if let Some(m) = dprp_payload(p) {
            let ty = m.get(3).copied().unwrap_or(0); // after the magic and the version
            let v6 = usize::from(p[0] >> 4 == 6);
            dprp_by_type.entry((ty, v6)).or_insert(m);
        }
        if let Ok(d) = Datagram::parse(p) {
            dg_by_shape.entry((p[0] >> 4, d.cid.proto.number(), d.payload_len() > 0)).or_insert_with(|| p.clone());
        }
    }
    for ((ty, v6), m) in &dprp_by_type {
        w.put("dprp_message", &format!("type{ty}-v{}", if *v6 == 1 { 6 } else { 4 }), m);
        // The same with path-key MACs on every record or on the CDN (the exchanges above make
        // none: their engines never work ahead).
        let mut with_macs = MessageRepr::parse(m).expect("the engines' own messages parse");
        let macs = |n: u8| (0..n).map(|i| RecordMac { key_id: [i; 8], tag: [0xa0 | i; 16] }).collect::<Vec<_>>();
        let suffix = match &mut with_macs.body {
            Body::Rgi { records } | Body::Mpit { records } => {
                records.iter_mut().enumerate().for_each(|(i, r)| r.macs = macs(i as u8 + 1));
                "macs"
            }
            Body::Cdn { macs: m, extensions, .. } => {
                *m = macs(2);
                // With the end GE's key for the initiator's next negotiation (section 14).
                *extensions = vec![Extension { kind: Extension::END_EPHEMERAL, value: vec![0x24; 32] }];
                "macs"
            }
            // A marked DDE with a path hint and the initiator's ephemeral key.
            Body::Dde { extensions } => {
                with_macs.header.flags = gscip_wire::dprp::FLAG_PATH_KEYS;
                *extensions = vec![
                    Extension {
                        kind: Extension::PATH_HINT,
                        value: gscip_wire::dprp::encode_path_hint(["a", "gen-1", "b"]),
                    },
                    Extension { kind: Extension::INITIATOR_EPHEMERAL, value: vec![0x42; 32] },
                ];
                "ext"
            }
        };
        let bytes = with_macs.emit().expect("emits");
        w.put("dprp_message", &format!("type{ty}-v{}-{suffix}", if *v6 == 1 { 6 } else { 4 }), &bytes);
    }
    for ((v, proto, data), p) in &dg_by_shape {
        w.put("datagram", &format!("v{v}-proto{proto}-{}", if *data { "data" } else { "empty" }), p);
    }
    // A GE's state from the GMS: an active GE with a real certificate and keys (one in its
    // grace period), and the same GE revoked.
    for (name, state) in gms_states() {
        w.put("gms_state", name, state.as_bytes());
    }
    // gscipd configurations: a key file, a GMS, a GEN, a GEA.
    for (name, text) in [
        ("key-file", "key_file = \"/etc/gscip/ges1.keys\"\nhooks = \"host\"\nlocal_addrs = [\"10.1.0.11\"]\nprotected = [\"10.1.0.11/32\"]\n"),
        ("gms", "hooks = \"host\"\nlocal_addrs = [\"10.1.0.11\", \"fd00::11\"]\naead = \"chacha20-poly1305\"\n[gms]\nurl = \"https://198.18.0.1:4399\"\nca_file = \"ca.pem\"\nname = \"ges1\"\nstate_dir = \"/var/lib/gscip/ges1\"\ntoken_file = \"t\"\n"),
        ("gen", "key_file = \"k\"\nhooks = \"router\"\nprotected = [\"10.1.0.0/24\", \"fd00:1::/64\"]\nqueue = 3\nfail_open = true\n"),
        ("gea", "key_file = \"k\"\nhooks = \"bridge\"\nprotected = [\"10.0.1.20/32\"]\nbridges = [\"br0\", \"br1\"]\nevents_file = \"e\"\ncontrol_socket = \"s\"\n"),
    ] {
        w.put("daemon_config", name, text.as_bytes());
    }
    // What the daemon reads from its NFQUEUE socket: a packet with a link-layer address, one
    // without, two messages in one datagram.
    let syn = packet(L4Proto::Tcp, addr(false, A4), 40000, addr(false, B4), 22, 0x02, Some(1460), b"");
    let mut with_hw = Vec::new();
    gscipd::nfqueue::encode_packet(
        &mut with_hw,
        0,
        &gscipd::nfqueue::PacketMeta::new(1, 0x100000, 3, Some(&[2, 0, 0, 0, 0, 7])),
        &syn,
    );
    w.put("nfqueue_message", "packet-hw", &with_hw);
    let mut two = Vec::new();
    gscipd::nfqueue::encode_packet(&mut two, 0, &gscipd::nfqueue::PacketMeta::new(2, 0, 0, None), &syn);
    w.put("nfqueue_message", "packet", &two);
    two.extend_from_slice(&with_hw);
    w.put("nfqueue_message", "two-packets", &two);
    // A GSO packet (its checksum left to the device) and one the kernel passed up cut short.
    let mut gso = Vec::new();
    let meta = gscipd::nfqueue::PacketMeta::new(3, 0, 2, None)
        .with_info(gscipd::nfqueue::skb_info::GSO | gscipd::nfqueue::skb_info::CSUM_NOT_READY, Some(70_000));
    gscipd::nfqueue::encode_packet(&mut gso, 0, &meta, &syn);
    w.put("nfqueue_message", "packet-gso", &gso);
    // A regression the fuzzer found: an error report with the most negative error code.
    let mut error = Vec::new();
    error.extend_from_slice(&36u32.to_ne_bytes());
    error.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
    error.extend_from_slice(&[0; 10]);
    error.extend_from_slice(&i32::MIN.to_ne_bytes());
    error.extend_from_slice(&[0; 16]);
    w.put("nfqueue_message", "error-errno-min", &error);
    // What the daemon reads from its NFLOG socket: an MPIT's copy (here any UDP datagram will
    // do), two in one datagram, and the error report.
    let mut copy = Vec::new();
    gscipd::nflog::encode_log_copy(&mut copy, 0, &packet(L4Proto::Udp, addr(false, A4), 4398, addr(false, B4), 4398, 0, None, b"GS\x01\x03"));
    w.put("nflog_message", "copy", &copy);
    let mut copies = copy.clone();
    copies.extend_from_slice(&copy);
    w.put("nflog_message", "two-copies", &copies);
    w.put("nflog_message", "error-errno-min", &error);
    // IPv4 options and UDP with no checksum.
    let mut opt = packet(L4Proto::Tcp, addr(false, A4), 1, addr(false, B4), 2, 0x02, Some(536), b"x");
    opt[0] = 0x46;
    opt.splice(20..20, [1, 1, 1, 0]);
    let total = (opt.len() as u16).to_be_bytes();
    opt[2..4].copy_from_slice(&total);
    w.put("datagram", "v4-options", &opt);
    let mut nocsum = packet(L4Proto::Udp, addr(false, A4), 1, addr(false, B4), 2, 0, None, b"abc");
    nocsum[26] = 0;
    nocsum[27] = 0;
    w.put("datagram", "v4-udp-no-checksum", &nocsum);
    // Long TCP packets to cut (what NFQUEUE's GSO flag would hand up), both families.
    for v6 in [false, true] {
        let (a, b) = (addr(v6, A4), addr(v6, B4));
        let long = packet(L4Proto::Tcp, a, 40000, b, 5201, 0x18, None, &[0x5a; 5000]);
        let mut seed = 1448u16.to_be_bytes().to_vec();
        seed.extend_from_slice(&long);
        w.put("tcp_segment", if v6 { "v6-5000" } else { "v4-5000" }, &seed);
    }

    // ICMP errors quoting packets of both families, both kinds.
    let quoted = [
        packet(L4Proto::Udp, addr(false, A4), DPRP_PORT, nobody(false), DPRP_PORT, 0, None, b"dprp"),
        packet(L4Proto::Tcp, addr(false, A4), 40000, nobody(false), 80, 0x02, Some(1460), &[]),
        packet(L4Proto::Udp, addr(true, A4), DPRP_PORT, nobody(true), DPRP_PORT, 0, None, b"dprp"),
        packet(L4Proto::Tcp, addr(true, A4), 40000, nobody(true), 80, 0x02, None, &[]),
    ];
    for (i, q) in quoted.iter().enumerate() {
        let v6 = q[0] >> 4 == 6;
        for (k, kind) in [(0, IcmpErrorKind::PortUnreachable), (1, IcmpErrorKind::AdminProhibited)] {
            let e = emit_error(nobody(v6), q, kind).unwrap();
            w.put("icmp_error", &format!("quote{i}-kind{k}"), &e);
        }
    }

    // Units cut into segments: the trailer in the last piece, alone in a piece of its own, and
    // split over two pieces; intact, a byte flipped, a piece left out.
    for (name, len, seg) in [
        ("whole", 100usize, 1400u16),
        ("trailer-alone", 2800, 1400),
        ("trailer-split", 1981, 1000),
        ("many", 20_000, 1448),
    ] {
        for (how, sel) in [("intact", 0u8), ("flipped", 4), ("missing", 12), ("chacha", 1)] {
            let mut d = vec![sel];
            d.extend_from_slice(&seg.to_be_bytes());
            d.push(7);
            d.extend((0..len).map(|i| (i * 13) as u8));
            w.put("pccom_unit", &format!("{name}-{how}"), &d);
        }
    }
    // PCCOM payloads: a trailer (version 2, epoch 1) after a few bytes of "ciphertext", with
    // the first byte covering every packet shape and AEAD choice of the target.
    for sel in 0u8..8 {
        let mut p = vec![sel, 0xaa, 0xbb];
        let mut t = [0u8; gscip_wire::pccom::TRAILER_LEN];
        TrailerRepr { epoch: h::EPOCH, counter: u64::from(sel) * 1000, unit_len: 2, tag: [sel; 16] }.emit(&mut t);
        p.extend_from_slice(&t);
        w.put("pccom_trailer", &format!("trailer-sel{sel}"), &p);
    }
    // The protected payloads that crossed the wire in the exchanges (sealed under other keys).
    let mut n = 0;
    for p in &packets {
        if let Ok(d) = Datagram::parse(p) {
            let payload = &p[d.payload_offset..d.end];
            if !is_dprp(p)
                && payload.len() > gscip_wire::pccom::TRAILER_LEN
                && payload[payload.len() - gscip_wire::pccom::TRAILER_LEN] >> 4 == gscip_wire::pccom::VERSION
                && n < 4
            {
                w.put("pccom_trailer", &format!("sealed{n}"), payload);
                n += 1;
            }
        }
    }

    // Scenarios: the fuzz script reads examples/ as a seed directory; check they run clean.
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    for e in std::fs::read_dir(&examples).expect("examples/").flatten() {
        h::scenario(&std::fs::read(e.path()).expect("read an example"));
    }

    for (t, c) in &w.counts {
        eprintln!("{t}: {c} seeds");
    }
}

/// GE states as the GMS would send them, built with the simulator's GMS stand-in.
fn gms_states() -> Vec<(&'static str, String)> {
    use gscip_gms_client::api::hex;
    let mut gms = gscip_sim::gms::BuiltinGms::new(7, &[1, 2], 1_800_000_000).expect("gms");
    let e = gms.enroll("ges1", gscip_core::GeKind::Ges, gscip_core::Mode::Closed, &[1, 2]).expect("enroll");
    let (_, cert, trust, keys) = e.parts();
    let mut cert_bytes = Vec::new();
    cert.emit(&mut cert_bytes);
    let key_list: Vec<serde_json::Value> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            serde_json::json!({"group": k.group.0, "version": k.version, "key": hex(k.secret_for_storage()),
                               "expires": if i == 0 { serde_json::json!(1_900_000_000u64) } else { serde_json::Value::Null }})
        })
        .collect();
    let state = |status: &str, keys: &[serde_json::Value]| {
        serde_json::json!({"revision": 7, "name": "ges1", "kind": "ges", "mode": "closed", "status": status,
                           "groups": [1, 2], "certificate": hex(&cert_bytes), "gms_public_key": hex(&trust.gms_public_key),
                           "keys": keys})
        .to_string()
    };
    vec![("active", state("active", &key_list)), ("revoked", state("revoked", &[]))]
}

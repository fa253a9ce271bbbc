//! The bodies of the GSCIP fuzz targets, one function per target. Each takes arbitrary bytes and
//! panics only when it finds a bug: a panic inside a parser or the engine, or a broken
//! round-trip property checked here.
//!
//! The cargo-fuzz binaries in `fuzz/fuzz_targets/` are one-line wrappers around these, and
//! `fuzz/seedgen` runs every seed it writes through them.
#![forbid(unsafe_code)]

use gscip_core::keysource::KeySource;
use gscip_core::pccom::{AeadAlgorithm, PccomSession};
use gscip_core::{Engine, GeConfig, GeKind, Mode, Timestamp, Transmit, Verdict};
use gscip_sim::gms::{BuiltinGms, EnrolledGe};
use gscip_wire::dprp::{MessageRepr, DPRP_PORT};
use gscip_wire::icmp::IcmpErrorRepr;
use gscip_wire::ip::{Datagram, DatagramRepr};
use gscip_wire::pccom::{TrailerPacket, TrailerRepr};
use gscip_wire::{Cid, L4Proto};
use rand_chacha::rand_core::SeedableRng;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// ----- dprp_message ---------------------------------------------------------------------------

/// `MessageRepr::parse`; a message that parses must emit, and the emitted bytes must parse back
/// to the same message.
pub fn dprp_message(data: &[u8]) {
    let Ok(msg) = MessageRepr::parse(data) else { return };
    if let gscip_wire::dprp::Body::Dde { extensions } = &msg.body {
        // A path hint that parses encodes back to the same bytes.
        for e in extensions.iter().filter(|e| e.kind == gscip_wire::dprp::Extension::PATH_HINT) {
            if let Ok(names) = gscip_wire::dprp::parse_path_hint(&e.value) {
                let again = gscip_wire::dprp::encode_path_hint(names.iter().map(String::as_str));
                assert_eq!(again, e.value, "path hint changed on parse + encode");
            }
        }
        for e in extensions.iter().filter(|e| e.kind == gscip_wire::dprp::Extension::INITIATOR_EPHEMERAL) {
            if let Ok(key) = gscip_wire::dprp::parse_ephemeral_key(&e.value) {
                assert_eq!(&key[..], &e.value[..], "initiator's ephemeral key changed on parse");
            }
        }
    }
    let bytes = match msg.emit() {
        Ok(b) => b,
        Err(e) => panic!("a parsed DPRP message does not emit: {e}: {msg:?}"),
    };
    match MessageRepr::parse(&bytes) {
        Ok(again) => assert_eq!(again, msg, "DPRP message changed on emit + parse"),
        Err(e) => panic!("an emitted DPRP message does not parse: {e}: {msg:?}"),
    }
}

// ----- datagram -------------------------------------------------------------------------------

/// `Datagram::parse`; on success `checksums_ok` runs, and rewriting the lengths for the same
/// payload length and refilling the checksums gives a packet that parses to the same datagram
/// with checksums that verify.
pub fn datagram(data: &[u8]) {
    let Ok(dg) = Datagram::parse(data) else { return };
    let _ = dg.checksums_ok(data);
    assert!(dg.payload_offset <= dg.end && dg.end <= data.len(), "datagram offsets outside the buffer: {dg:?}");
    let mut buf = data.to_vec();
    let mut copy = dg;
    if let Err(e) = copy.set_payload_len(&mut buf, dg.payload_len()) {
        panic!("set_payload_len with the same length failed: {e}: {dg:?}");
    }
    assert_eq!(copy, dg, "set_payload_len with the same length changed the datagram");
    copy.fill_checksums(&mut buf);
    match Datagram::parse(&buf) {
        Ok(again) => {
            assert_eq!(again, dg, "datagram changed after set_payload_len + fill_checksums");
            assert!(again.checksums_ok(&buf), "checksums do not verify after fill_checksums: {dg:?}");
        }
        Err(e) => panic!("packet no longer parses after set_payload_len + fill_checksums: {e}: {dg:?}"),
    }
}

// ----- tcp_segment ----------------------------------------------------------------------------

/// `segment::segment_tcp` with the segment size from the first two bytes and the packet in the
/// rest: when it cuts, every segment parses with verifying checksums, fits, and the segments'
/// payloads in order are the packet's.
pub fn tcp_segment(data: &[u8]) {
    let [a, b, packet @ ..] = data else { return };
    let max = usize::from(u16::from_be_bytes([*a, *b]));
    let mut scratch = Vec::new();
    let mut joined = Vec::new();
    let mut bad = None;
    let result = gscip_wire::segment::segment_tcp(packet, max, &mut scratch, |s| match Datagram::parse(s) {
        Ok(d) if d.checksums_ok(s) && d.payload_len() <= max => joined.extend_from_slice(&s[d.payload_offset..d.end]),
        other => bad = Some(format!("{other:?}")),
    });
    if let Some(b) = bad {
        panic!("a segment does not parse, verify or fit: {b}");
    }
    if result.is_ok() {
        let d = Datagram::parse(packet).expect("segmented, so it parsed");
        assert_eq!(joined, &packet[d.payload_offset..d.end], "segments do not carry the payload");
    }
}

// ----- icmp_error -----------------------------------------------------------------------------

pub fn icmp_error(data: &[u8]) {
    let _ = IcmpErrorRepr::parse(data);
}

// ----- pccom_trailer --------------------------------------------------------------------------

/// The fixed keys of the `pccom_trailer` target: the session under test opens with `OPEN_KEY`.
pub const SEAL_KEY: [u8; 32] = [1; 32];
pub const OPEN_KEY: [u8; 32] = [2; 32];
pub const FLOW_ID: [u8; 8] = [0; 8];
pub const EPOCH: u8 = 1;

/// The packet the `pccom_trailer` target opens: a TCP or UDP packet (chosen by the low bits of
/// the first payload byte) with `payload` as its transport payload.
pub fn pccom_packet(payload: &[u8]) -> Option<Vec<u8>> {
    let sel = payload.first().copied().unwrap_or(0);
    let proto = if sel & 1 != 0 { L4Proto::Tcp } else { L4Proto::Udp };
    pccom_datagram(proto, sel & 2 != 0, payload)
}

/// A TCP or UDP packet from 10.1.0.5 (fd00:1::5) to 10.2.0.5 (fd00:2::5) carrying `payload`.
fn pccom_datagram(proto: L4Proto, v6: bool, payload: &[u8]) -> Option<Vec<u8>> {
    let (src, dst): (IpAddr, IpAddr) = if v6 {
        (Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5).into(), Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5).into())
    } else {
        (Ipv4Addr::new(10, 1, 0, 5).into(), Ipv4Addr::new(10, 2, 0, 5).into())
    };
    DatagramRepr {
        cid: Cid { proto, src, src_port: 40000, dst, dst_port: 80 },
        ttl: 64,
        tcp_flags: 0x18,
        tcp_seq: 1000,
        tcp_ack: 2000,
        tcp_mss: None,
        payload,
    }
    .emit()
    .ok()
}

fn pccom_sessions(alg: AeadAlgorithm) -> (PccomSession, PccomSession) {
    let opener = PccomSession::new(alg, EPOCH, FLOW_ID, &SEAL_KEY, &OPEN_KEY).expect("32-byte keys");
    let sealer = PccomSession::new(alg, EPOCH, FLOW_ID, &OPEN_KEY, &SEAL_KEY).expect("32-byte keys");
    (opener, sealer)
}

/// The trailer parsers on the bytes as a protected payload; `PccomSession::open` on a packet
/// carrying them must fail (nobody can forge a tag). Then the round trip: sealing the bytes as
/// plaintext with the peer session and opening the result gives back the packet's payload.
pub fn pccom_trailer(data: &[u8]) {
    if let Ok(tp) = TrailerPacket::new_checked(data) {
        let tr = TrailerRepr::parse(&tp);
        assert!(tr.epoch < 16);
        assert_eq!(tp.ciphertext_len() + gscip_wire::pccom::TRAILER_LEN, data.len());
    }
    let Some(packet) = pccom_packet(data) else { return };
    let alg = if data.first().is_some_and(|b| b & 4 != 0) {
        AeadAlgorithm::ChaCha20Poly1305
    } else {
        AeadAlgorithm::Aes256Gcm
    };
    let (mut opener, mut sealer) = pccom_sessions(alg);

    let mut buf = packet.clone();
    let mut dg = Datagram::parse(&buf).expect("DatagramRepr::emit builds a packet that parses");
    let r = opener.open(&mut buf, &mut dg);
    assert!(r.is_err(), "PccomSession::open accepted a payload nobody sealed");

    // Round trip on the same bytes as plaintext.
    let mut buf = packet.clone();
    let mut dg = Datagram::parse(&buf).expect("DatagramRepr::emit builds a packet that parses");
    if sealer.seal(&mut buf, &mut dg, usize::MAX).is_err() {
        return; // too long to carry a trailer
    }
    let mut sealed_dg = Datagram::parse(&buf).expect("a sealed packet parses");
    assert!(sealed_dg.checksums_ok(&buf), "a sealed packet has bad checksums");
    opener.open(&mut buf, &mut sealed_dg).expect("opening what the peer sealed");
    assert_eq!(buf, packet, "seal + open did not give back the packet");
}

// ----- pccom_unit ----------------------------------------------------------------------------

/// Units cut into segments. The input: byte 0 picks the AEAD and what to break, bytes 1-2 the
/// segment size, byte 3 a position, the rest the plaintext of a TCP packet. The packet is
/// sealed as one unit and cut as the kernel cuts it; every piece but the last is classified as
/// a piece; opening the pieces gives back the plaintext (without the trailer bytes), unless a
/// byte was flipped or a piece left out, which opening must refuse. Then the raw input, cut the
/// same way as if it were sealed, must not open.
pub fn pccom_unit(data: &[u8]) {
    use gscip_core::pccom::Arrival;
    if data.len() < 4 {
        return;
    }
    let (sel, seg, pos) = (data[0], usize::from(u16::from_be_bytes([data[1], data[2]])).max(1), usize::from(data[3]));
    let payload = &data[4..];
    // At most some 512 pieces: tiny segments of a long unit only slow the fuzzer down.
    let seg = seg.max(payload.len() / 512 + 1);
    let alg = if sel & 1 != 0 { AeadAlgorithm::ChaCha20Poly1305 } else { AeadAlgorithm::Aes256Gcm };
    let (mut opener, mut sealer) = pccom_sessions(alg);
    let tcp = |payload: &[u8]| pccom_datagram(L4Proto::Tcp, sel & 2 != 0, payload);
    let Some(packet) = tcp(payload) else { return };
    let mut sealed = packet.clone();
    let mut dg = Datagram::parse(&sealed).expect("DatagramRepr::emit builds a packet that parses");
    if sealer.seal(&mut sealed, &mut dg, usize::MAX).is_err() {
        return;
    }
    let mut pieces = Vec::new();
    let cut = gscip_wire::segment::segment_tcp(&sealed, seg, &mut Vec::new(), |p| pieces.push(p.to_vec()));
    if cut.is_err() {
        return;
    }
    let n = pieces.len();
    for p in &pieces[..n - 1] {
        let d = Datagram::parse(p).expect("a segment parses");
        assert_eq!(opener.classify(p, &d), Arrival::Piece, "a piece before the last looked like a unit's end");
    }
    let mut broken = pieces.clone();
    let break_it = sel & 4 != 0;
    if break_it {
        if sel & 8 != 0 && n > 1 {
            broken.remove(pos % n);
        } else {
            let k = pos % n;
            let at = broken[k].len() - 1 - pos % broken[k].len().min(40);
            broken[k][at] ^= 1;
        }
    }
    match opener.open_unit(&mut broken, &mut Vec::new()) {
        Ok(()) => {
            assert!(!break_it || broken.len() == n, "opened a unit with a piece left out");
            let mut got = Vec::new();
            for p in broken.iter().filter(|p| !p.is_empty()) {
                let d = Datagram::parse(p).expect("an opened piece parses");
                assert!(d.checksums_ok(p), "an opened piece has bad checksums");
                got.extend_from_slice(&p[d.payload_offset..d.end]);
            }
            if !break_it {
                assert_eq!(got, payload, "the unit's plaintext");
            }
        }
        Err(_) => assert!(break_it, "could not open an intact unit"),
    }
    // The input itself, never sealed, cut into pieces: must not open.
    let Some(raw) = tcp(data) else { return };
    let mut raw_pieces = Vec::new();
    if gscip_wire::segment::segment_tcp(&raw, seg, &mut Vec::new(), |p| raw_pieces.push(p.to_vec())).is_ok() {
        let (mut fresh, _) = pccom_sessions(alg);
        assert!(fresh.open_unit(&mut raw_pieces, &mut Vec::new()).is_err(), "opened bytes nobody sealed");
    }
}

// ----- nfqueue_message ------------------------------------------------------------------------

/// What the daemon reads from its NFQUEUE socket: every message of a datagram parses or is
/// refused without a panic, and a packet message re-encoded parses to the same packet.
pub fn nfqueue_message(data: &[u8]) {
    use gscipd::nfqueue::{encode_packet, parse_message, split_messages, Message};
    for r in split_messages(data) {
        let Ok((at, len)) = r else { break };
        let msg = &data[at..at + len];
        if let Ok(Message::Packet { meta, start, end }) = parse_message(msg) {
            assert!(start <= end && end <= msg.len());
            let mut again = Vec::new();
            encode_packet(&mut again, 0, &meta, &msg[start..end]);
            match parse_message(&again) {
                Ok(Message::Packet { meta: m, start: s, end: e }) => {
                    assert_eq!(m, meta);
                    assert_eq!(&again[s..e], &msg[start..end]);
                }
                other => panic!("a re-encoded packet does not parse: {other:?}"),
            }
        }
    }
}

// ----- nflog_message --------------------------------------------------------------------------

/// What the daemon reads from its NFLOG socket (the MPITs' copies): every message of a datagram
/// parses or is refused without a panic, and a copy re-encoded parses to the same bytes.
pub fn nflog_message(data: &[u8]) {
    use gscipd::nflog::{encode_log_copy, parse_log_message, LogMessage};
    use gscipd::nfqueue::split_messages;
    for r in split_messages(data) {
        let Ok((at, len)) = r else { break };
        let msg = &data[at..at + len];
        if let Ok(LogMessage::Copy { start, end }) = parse_log_message(msg) {
            assert!(start <= end && end <= msg.len());
            let mut again = Vec::new();
            encode_log_copy(&mut again, 0, &msg[start..end]);
            match parse_log_message(&again) {
                Ok(LogMessage::Copy { start: s, end: e }) => assert_eq!(&again[s..e], &msg[start..end]),
                other => panic!("a re-encoded copy does not parse: {other:?}"),
            }
        }
    }
}

// ----- scenario -------------------------------------------------------------------------------

pub fn scenario(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    // Any scenario that parses can be counted and compared (gscip load-report) without a panic.
    if let Ok(s) = gscip_sim::Scenario::parse(&text, "fuzz.toml") {
        let count = gscip_load::count(&s);
        let change = gscip_load::compare(&s, &s, gscip_load::Convention::Seed);
        assert_eq!((change.gscip, change.ipsec_ike), (0, 0), "a network compared with itself changes nothing");
        let _ = gscip_load::compare_json(&count, &count, &change);
    }
}

// ----- engine_packet --------------------------------------------------------------------------

/// Seconds since the Unix epoch of the fuzzed engine's start (as in the simulator).
pub const EPOCH_S: u64 = 1_800_000_000;
pub const START: Timestamp = Timestamp(EPOCH_S * 1_000_000);
pub const GMS_SEED: u64 = 1;

/// Time advances an engine step can ask for (µs), chosen by the low nibble of its op byte.
pub const ADVANCE_US: [u64; 16] = [
    0,
    100,
    1_000,
    5_000,
    10_000,
    26_000, // just past the probe timeout (25 ms)
    51_000, // just past the first DPRP retransmission timeout (50 ms)
    110_000,
    400_000,
    1_100_000, // past the once-a-second restart limit
    3_300_000,
    11_000_000,  // past the TCP close linger (10 s)
    61_000_000,  // past the GE cache TTL (60 s)
    301_000_000, // past the idle timeout (300 s)
    3_600_000_000,
    366 * 86_400_000_000, // past the certificates' validity
];

/// Op byte bits of an engine step (the low nibble is an index into [`ADVANCE_US`]).
pub mod op {
    /// Move the clock to the engine's next timer (if later) before handling timeouts.
    pub const JUMP_TO_TIMER: u8 = 0x10;
    /// The step has no packet (and no length bytes).
    pub const NO_PACKET: u8 = 0x20;
    /// Feed every packet the engine transmits during this step back into it, once.
    pub const LOOP_BACK: u8 = 0x40;
    /// The packet bytes are a template (see [`template_packet`]), not a raw IP packet.
    pub const TEMPLATE: u8 = 0x80;
}

/// The addresses templates draw from: `[v4, v6][index]`. 0: a host inside the fuzzed GE,
/// 1: the GE's inside address, 2: a host behind the peer GE, 3: the GE's outside address.
pub const TEMPLATE_ADDRS: [[IpAddr; 4]; 2] = [
    [
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 5)),
        IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
        IpAddr::V4(Ipv4Addr::new(10, 2, 0, 5)),
        IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
    ],
    [
        IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 5)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 2, 0, 0, 0, 0, 0, 5)),
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 1, 0, 0, 0, 0, 1)),
    ],
];

/// The fuzzed GE's configuration: a closed GEN for 10.1.0.0/24 and fd00:1::/64.
pub fn ge_config() -> GeConfig {
    GeConfig {
        protected: vec!["10.1.0.0/24".parse().unwrap(), "fd00:1::/64".parse().unwrap()],
        local_addrs: vec![TEMPLATE_ADDRS[0][1], TEMPLATE_ADDRS[0][3], TEMPLATE_ADDRS[1][1], TEMPLATE_ADDRS[1][3]],
        ..GeConfig::default()
    }
}

/// Builds the stand-in GMS and the fuzzed engine the way the simulator does. The GMS is
/// returned so the seed generator can enroll a peer GE in the same groups.
pub fn build_engine() -> (BuiltinGms, Engine) {
    let mut gms = BuiltinGms::new(GMS_SEED, &[1, 2], EPOCH_S).expect("builtin GMS");
    let enrolled = gms.enroll("ge", GeKind::Gen, Mode::Closed, &[1]).expect("enroll ge");
    let engine = engine_from(enrolled, ge_config(), 0);
    (gms, engine)
}

pub fn engine_from(mut e: EnrolledGe, cfg: GeConfig, rng_seed: u64) -> Engine {
    let (identity, trust) = e.identity().expect("identity");
    let keys = e.group_keys().expect("group keys");
    let rng = rand_chacha::ChaCha20Rng::seed_from_u64(rng_seed);
    Engine::new(cfg, identity, trust, keys, Box::new(rng)).expect("engine")
}

/// Builds a well-formed packet from a template: `bytes[0]` picks the shape, `bytes[1]` the TCP
/// flags, the rest is the transport payload.
///
/// Shape bits: 0-1 source address index, 2-3 destination address index (into
/// [`TEMPLATE_ADDRS`]), 4 IPv6, 5-6 kind (0: UDP between the DPRP ports, 1: TCP, 2: UDP, 3: TCP
/// with an MSS option), 7 swap the ports (the reply direction).
pub fn template_packet(bytes: &[u8]) -> Option<Vec<u8>> {
    let shape = bytes.first().copied().unwrap_or(0);
    let flags = bytes.get(1).copied().unwrap_or(0x02);
    let payload = bytes.get(2..).unwrap_or(&[]);
    let fam = usize::from((shape >> 4) & 1);
    let src = TEMPLATE_ADDRS[fam][usize::from(shape & 3)];
    let dst = TEMPLATE_ADDRS[fam][usize::from((shape >> 2) & 3)];
    let kind = (shape >> 5) & 3;
    let (proto, mut ports) = match kind {
        0 => (L4Proto::Udp, (DPRP_PORT, DPRP_PORT)),
        2 => (L4Proto::Udp, (40000, 53)),
        _ => (L4Proto::Tcp, (40000, 80)),
    };
    if shape & 0x80 != 0 {
        ports = (ports.1, ports.0);
    }
    DatagramRepr {
        cid: Cid { proto, src, src_port: ports.0, dst, dst_port: ports.1 },
        ttl: 64,
        tcp_flags: flags,
        tcp_seq: 0x1000_0000,
        tcp_ack: if flags & 0x10 != 0 { 0x2000_0000 } else { 0 },
        tcp_mss: (kind == 3).then_some(1460),
        payload,
    }
    .emit()
    .ok()
}

/// One step of an `engine_packet` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub op: u8,
    pub packet: Option<Vec<u8>>,
}

impl Step {
    /// A raw packet after advancing the clock by `ADVANCE_US[advance]`.
    pub fn packet(advance: u8, packet: Vec<u8>) -> Step {
        Step { op: advance & 0x0f, packet: Some(packet) }
    }
    /// Only timers: advance the clock (and jump to the next timer if `jump`).
    pub fn wait(advance: u8, jump: bool) -> Step {
        Step { op: (advance & 0x0f) | op::NO_PACKET | if jump { op::JUMP_TO_TIMER } else { 0 }, packet: None }
    }
}

/// Splits an `engine_packet` input into steps: an op byte, then (unless [`op::NO_PACKET`]) a
/// big-endian 16-bit length and that many bytes (fewer if the input ends first).
pub fn parse_steps(mut data: &[u8]) -> Vec<Step> {
    let mut steps = Vec::new();
    while let Some((&o, rest)) = data.split_first() {
        data = rest;
        if o & op::NO_PACKET != 0 {
            steps.push(Step { op: o, packet: None });
            continue;
        }
        let len = match data {
            [a, b, rest @ ..] => {
                data = rest;
                usize::from(u16::from_be_bytes([*a, *b]))
            }
            _ => {
                data = &[];
                0
            }
        };
        let (p, rest) = data.split_at(len.min(data.len()));
        data = rest;
        steps.push(Step { op: o, packet: Some(p.to_vec()) });
    }
    steps
}

/// The inverse of [`parse_steps`].
pub fn encode_steps(steps: &[Step]) -> Vec<u8> {
    let mut out = Vec::new();
    for s in steps {
        match &s.packet {
            Some(p) if s.op & op::NO_PACKET == 0 => {
                out.push(s.op);
                let len = u16::try_from(p.len()).expect("a step packet fits 16 bits");
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(p);
            }
            _ => out.push(s.op | op::NO_PACKET),
        }
    }
    out
}

/// Hands a packet to the engine as a data plane with a GSO queue would: packets longer than a
/// segment as GSO packets, and (by the length's parity) from the queue that can cut them.
fn feed(engine: &mut Engine, now: Timestamp, mut buf: Vec<u8>) {
    let ctx = gscip_core::PacketContext { tag: 1, gso: buf.len() > 1500, can_segment: buf.len() % 2 == 1 };
    let before = buf.clone();
    let v = engine.handle_packet_in(now, &mut buf, ctx);
    if v == Verdict::Held {
        assert!(buf.is_empty(), "a held packet's buffer was not taken");
    }
    if v == Verdict::Segment {
        assert!(ctx.can_segment, "asked to cut a packet that cannot be cut");
        assert_eq!(buf, before, "a packet to be cut was changed");
    }
    if v == Verdict::Unsegment {
        assert!(!ctx.can_segment, "a whole packet asked to be handed over whole");
        assert_ne!(buf, before, "a packet going back to units was not sealed");
    }
}

fn drain(engine: &mut Engine, out: &mut Vec<Transmit>) {
    while let Some(t) = engine.poll_transmit() {
        out.push(t);
    }
    while engine.poll_event().is_some() {}
}

fn timeouts(engine: &mut Engine, now: Timestamp) {
    engine.handle_timeout(now);
    if let Some(t) = engine.poll_timeout() {
        assert!(t > now, "a timer due at {t:?} is still pending after handle_timeout({now:?})");
    }
}

/// Runs one step on `engine` at `*now` (which it advances) and returns what the engine sent.
pub fn run_step(engine: &mut Engine, now: &mut Timestamp, step: &Step) -> Vec<Transmit> {
    now.0 += ADVANCE_US[usize::from(step.op & 0x0f)];
    if step.op & op::JUMP_TO_TIMER != 0 {
        if let Some(t) = engine.poll_timeout() {
            *now = (*now).max(t);
        }
    }
    let mut out = Vec::new();
    timeouts(engine, *now);
    drain(engine, &mut out);
    if let Some(p) = &step.packet {
        let packet = if step.op & op::TEMPLATE != 0 { template_packet(p) } else { Some(p.clone()) };
        if let Some(packet) = packet {
            feed(engine, *now, packet);
            drain(engine, &mut out);
        }
    }
    if step.op & op::LOOP_BACK != 0 {
        let mut again = Vec::new();
        for t in &out {
            feed(engine, *now, t.packet.clone());
            drain(engine, &mut again);
        }
        out.extend(again);
    }
    out
}

/// A whole engine fed the steps of `data`, then left to run its timers out.
pub fn engine_packet(data: &[u8]) {
    let (_gms, mut engine) = build_engine();
    let mut now = START;
    for step in parse_steps(data) {
        run_step(&mut engine, &mut now, &step);
    }
    // Let every timer fire: retransmissions give up, entries expire.
    for _ in 0..64 {
        let Some(t) = engine.poll_timeout() else { break };
        now = now.max(t);
        timeouts(&mut engine, now);
        drain(&mut engine, &mut Vec::new());
    }
}

// ----- gms_state ------------------------------------------------------------------------------

/// A GE's state as the GMS sends it (JSON), through `credentials`: hex, the DPRP certificate,
/// key expiry. Never a panic, whatever the GMS (or a corrupted cache file) sends.
pub fn gms_state(data: &[u8]) {
    let Ok(state) = serde_json::from_slice::<gscip_gms_client::api::GeState>(data) else { return };
    let seed = zeroize::Zeroizing::new([7u8; 32]);
    for now in [0, 1_800_000_000, u64::MAX] {
        if let Ok(c) = gscip_gms_client::ge::credentials(&state, &seed, now) {
            // Only keys still valid at `now`, and never for a revoked GE.
            assert!(state.status == gscip_gms_client::api::GeStatus::Active || c.keys.is_empty());
            assert!(c.key_ids().iter().all(|(g, v)| state
                .keys
                .iter()
                .any(|k| k.group == *g && k.version == *v && k.expires.is_none_or(|e| e > now))));
        }
    }
}

// ----- daemon_config --------------------------------------------------------------------------

/// `gscipd`'s configuration file: parse errors, never panics; a configuration that parses has
/// exactly one key source and something to protect.
pub fn daemon_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = gscipd::config::Config::parse(text) {
        assert!(c.key_file.is_some() != c.gms.is_some(), "exactly one key source");
        assert!(!c.protected.is_empty() || !c.local_addrs.is_empty());
        let _ = c.ge_config();
        for v6 in [false, true] {
            let _ = gscipd::rules::restore_script(&c, v6, 3);
        }
    }
}

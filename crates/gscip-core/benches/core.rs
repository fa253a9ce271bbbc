//! Benchmarks of the core (separate from the tests; `make bench`):
//! - PCCOM seal+open of a 1400-byte packet, and of a 64,000-byte unit (a GSO packet sealed
//!   whole), against the raw AEAD of the same library on the same bytes (the baseline), for
//!   AES-256-GCM and ChaCha20-Poly1305;
//! - the DPRP decision (the policy function) on the seed network's longest path;
//! - a whole DPRP negotiation between two GEs (DDE, RGI, MPIT, CDN: every signature, proof
//!   and key derivation), the CPU cost that the seed's 1,012 µs figure includes;
//! - each GE's engine work per step of a negotiation between two closed GESs (printed, median
//!   of 3,000): what the flow's first packet waits for at each user-space step of a new flow.
//!
//! `scripts/bench-report.py` prints the ratios against the baselines.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gscip_core::engine::{Engine, GeConfig, Verdict};
use gscip_core::group::{GroupId, GroupKey, GroupKeyring};
use gscip_core::identity::{CertificateAuthority, SigningIdentity};
use gscip_core::pccom::{derive_flow_keys, AeadAlgorithm, PccomSession};
use gscip_core::policy::{decide, PathGe};
use gscip_core::{GeKind, Micros, Mode, Side, Timestamp};
use gscip_wire::ip::{tcp_flags, Datagram, DatagramRepr};
use gscip_wire::{Cid, L4Proto};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::net::IpAddr;
use zeroize::Zeroizing;

/// A segment's payload, and a unit's (a GSO packet of TCP sealed whole, trailer included
/// under IP's 65,535 bytes).
const PAYLOAD: usize = 1400;
const UNIT_PAYLOAD: usize = 64_000;

fn packet(payload: usize) -> Vec<u8> {
    DatagramRepr {
        cid: Cid {
            proto: L4Proto::Tcp,
            src: "10.1.0.12".parse().unwrap(),
            src_port: 40000,
            dst: "10.0.1.100".parse().unwrap(),
            dst_port: 80,
        },
        ttl: 64,
        tcp_flags: tcp_flags::ACK,
        tcp_seq: 1,
        tcp_ack: 1,
        tcp_mss: None,
        payload: &vec![0x5a; payload],
    }
    .emit()
    .unwrap()
}

fn pccom(c: &mut Criterion) {
    pccom_of(c, "pccom_1400", PAYLOAD);
    pccom_of(c, "pccom_unit_64000", UNIT_PAYLOAD);
}

fn pccom_of(c: &mut Criterion, group: &str, payload: usize) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Bytes(payload as u64));
    for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
        let gk = GroupKey::new(GroupId(1), 1, [7; 32]);
        let m = derive_flow_keys(&gk, &[9; 32], &[3; 32]);
        let mut tx = PccomSession::new(alg, 1, m.flow_id, &m.forward, &m.reverse).unwrap();
        let mut rx = PccomSession::new(alg, 1, m.flow_id, &m.reverse, &m.forward).unwrap();
        // Seal then open gives back the same bytes, so the buffer is reused as is.
        let mut buf = packet(payload);
        buf.reserve(64);
        g.bench_function(BenchmarkId::new("seal_open", alg.as_str()), |b| {
            b.iter(|| {
                let mut d = Datagram::parse(&buf).unwrap();
                tx.seal(&mut buf, &mut d, usize::MAX).unwrap();
                let mut d = Datagram::parse(&buf).unwrap();
                rx.open(&mut buf, &mut d).unwrap();
                black_box(&buf);
            })
        });
        // Baseline: the same AEAD of the same library, seal and open in place of the payload
        // bytes alone (no parsing, no trailer, no checksums, no replay window).
        let algo = match alg {
            AeadAlgorithm::Aes256Gcm => &aead::AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        };
        let key = LessSafeKey::new(UnboundKey::new(algo, &[1; 32]).unwrap());
        let mut data = vec![0x5a; payload + 16];
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new("raw_aead_seal_open", alg.as_str()), |b| {
            b.iter(|| {
                n += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&n.to_be_bytes());
                data.truncate(payload);
                let tag = key
                    .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(&[1u8; 19]), &mut data)
                    .unwrap();
                data.extend_from_slice(tag.as_ref());
                let out =
                    key.open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&[1u8; 19]), &mut data).unwrap();
                black_box(out.len());
            })
        });
    }
    g.finish();
}

fn ge(name: &str, mode: Mode, side: Side, groups: &[u16]) -> PathGe {
    PathGe { name: name.into(), mode, side, groups: groups.iter().map(|&g| GroupId(g)).collect() }
}

fn decision(c: &mut Criterion) {
    let path = vec![
        ge("ges2", Mode::Open, Side::Source, &[1, 2]),
        ge("gen", Mode::Closed, Side::Source, &[1]),
        ge("core", Mode::Closed, Side::Transit, &[9]),
        ge("gea", Mode::Closed, Side::Destination, &[2, 3]),
    ];
    c.bench_function("dprp_decision/seed_path", |b| b.iter(|| black_box(decide(black_box(&path)))));
}

fn engine(
    ca: &CertificateAuthority,
    name: &str,
    mode: Mode,
    addr: IpAddr,
    seed: u8,
    path_key_lifetime: Micros,
) -> Engine {
    let s = Zeroizing::new([seed; 32]);
    let pk = SigningIdentity::public_key_for_seed(&s).unwrap();
    let cert = ca.issue(GeKind::Ges, mode, name, &[GroupId(1), GroupId(2)], pk, 4_000_000_000).unwrap();
    let mut keys = GroupKeyring::new();
    keys.insert(GroupKey::new(GroupId(1), 1, [1; 32]));
    keys.insert(GroupKey::new(GroupId(2), 1, [2; 32]));
    let cfg = GeConfig { local_addrs: vec![addr], path_key_lifetime, ..GeConfig::default() };
    Engine::new(
        cfg,
        SigningIdentity::new(&s, cert).unwrap(),
        ca.trust_anchor(),
        keys,
        Box::new(ChaCha20Rng::seed_from_u64(seed as u64)),
    )
    .unwrap()
}

/// One complete negotiation between two GESs, messages handed over directly: with the path
/// keys of the negotiations before (the engines work ahead between negotiations, as the daemon
/// does when idle, and that work is counted), and with path keys off (every record checked by
/// its signature).
fn negotiation(c: &mut Criterion) {
    for (label, path_keys) in [("two_ges", true), ("two_ges_signatures_only", false)] {
        negotiation_of(c, label, path_keys);
    }
}

/// The first packet of a new UDP flow from `a` to `b` (source port `port`).
fn first_packet(a: IpAddr, b: IpAddr, port: u16) -> Vec<u8> {
    DatagramRepr {
        cid: Cid { proto: L4Proto::Udp, src: a, src_port: port, dst: b, dst_port: 53 },
        ttl: 64,
        tcp_flags: 0,
        tcp_seq: 0,
        tcp_ack: 0,
        tcp_mss: None,
        payload: b"q",
    }
    .emit()
    .unwrap()
}

/// Times each GE's engine work per step of a negotiation between two closed GESs, as the daemon
/// drives it (path keys on; each GE's agreement ahead computed after its verdicts, its other
/// work ahead while idle) and prints the medians of 3,000 negotiations: the part of each
/// user-space step of a new flow that is the engine's (docs/performance.md, "A new flow, step
/// by step").
fn negotiation_steps(_: &mut Criterion) {
    use std::time::Instant;
    let ca = CertificateAuthority::from_seed(&Zeroizing::new([42; 32])).unwrap();
    let (a_addr, b_addr): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let lifetime = Micros::from_secs(3600);
    let mut a = engine(&ca, "a", Mode::Closed, a_addr, 1, lifetime);
    let mut b = engine(&ca, "b", Mode::Closed, b_addr, 2, lifetime);
    let now = Timestamp(1_800_000_000 * 1_000_000);
    let steps = [
        "a: first packet in -> DDE out",
        "b: DDE in -> RGI out",
        "a: RGI in -> MPIT and the sealed packet out",
        "b: MPIT and the packet in -> packet opened",
        "b: after the verdicts (CDN)",
        "a: CDN in",
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); steps.len()];
    let us = |t: Instant| t.elapsed().as_secs_f64() * 1e6;
    for i in 0..3_000u16 {
        let mut p = first_packet(a_addr, b_addr, 1024 + i);
        let t = Instant::now();
        assert_eq!(a.handle_packet(now, &mut p), Verdict::Held);
        let mut dde = a.poll_urgent_transmit().unwrap().packet;
        times[0].push(us(t));
        a.agree_ahead();
        let t = Instant::now();
        b.handle_packet(now, &mut dde);
        let mut rgi = b.poll_urgent_transmit().unwrap().packet;
        times[1].push(us(t));
        b.agree_ahead();
        let t = Instant::now();
        a.handle_packet(now, &mut rgi);
        let out: Vec<Vec<u8>> = std::iter::from_fn(|| a.poll_urgent_transmit()).map(|x| x.packet).collect();
        times[2].push(us(t));
        let t = Instant::now();
        let delivered =
            out.into_iter().map(|mut x| b.handle_packet(now, &mut x)).filter(|v| *v == Verdict::Accept).count();
        times[3].push(us(t));
        assert_eq!(delivered, 1, "the first packet opened at b");
        let t = Instant::now();
        let cdns: Vec<Vec<u8>> = std::iter::from_fn(|| b.poll_transmit()).map(|x| x.packet).collect();
        times[4].push(us(t));
        let t = Instant::now();
        for mut x in cdns {
            a.handle_packet(now, &mut x);
        }
        times[5].push(us(t));
        while a.poll_event().is_some() || b.poll_event().is_some() {}
        while a.prepare() || b.prepare() {}
    }
    println!("\nDPRP engine work per step, two closed GESs, path keys on (median of 3,000)");
    for (step, v) in steps.iter().zip(&mut times) {
        v.sort_by(f64::total_cmp);
        println!("  {step:48} {:6.1} us", v[v.len() / 2]);
    }
    let c = a.counters();
    println!("  (a: {} agreements computed ahead used, {} records by MAC)\n", c.agreements_ahead_used, c.macs_verified);
}

fn negotiation_of(c: &mut Criterion, label: &str, path_keys: bool) {
    let ca = CertificateAuthority::from_seed(&Zeroizing::new([42; 32])).unwrap();
    let (a_addr, b_addr): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let lifetime = if path_keys { Micros::from_secs(3600) } else { Micros(0) };
    let mut a = engine(&ca, "a", Mode::Open, a_addr, 1, lifetime);
    let mut b = engine(&ca, "b", Mode::Closed, b_addr, 2, lifetime);
    let mut port = 1024u16;
    let now = Timestamp(1_800_000_000 * 1_000_000);
    c.bench_function(&format!("dprp_negotiation/{label}"), |bch| {
        bch.iter(|| {
            port = port.wrapping_add(1).max(1024);
            let mut p = first_packet(a_addr, b_addr, port);
            assert_eq!(a.handle_packet(now, &mut p), Verdict::Held);
            // Shuttle messages until both sides are quiet.
            let mut delivered = false;
            for _ in 0..8 {
                let mut moved = false;
                while let Some(mut t) = a.poll_transmit() {
                    moved = true;
                    if b.handle_packet(now, &mut t.packet) == Verdict::Accept {
                        delivered = true;
                    }
                }
                while let Some(mut t) = b.poll_transmit() {
                    moved = true;
                    a.handle_packet(now, &mut t.packet);
                }
                while a.poll_event().is_some() {}
                while b.poll_event().is_some() {}
                if !moved {
                    break;
                }
            }
            assert!(delivered);
            while a.prepare() {}
            while b.prepare() {}
        })
    });
    // (Nothing ran when a filter left this bench out.)
    if path_keys && a.counters().negotiations_started > 0 {
        assert!(a.counters().macs_verified > 0 && b.counters().macs_verified > 0, "path keys were used");
    }
}

criterion_group!(benches, pccom, decision, negotiation, negotiation_steps);
criterion_main!(benches);

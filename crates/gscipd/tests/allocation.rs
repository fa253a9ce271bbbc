//! The per-packet path allocates nothing: once a flow is negotiated, sealing a packet at one
//! GES and opening it at the other (TCP and UDP, both AEADs) makes no heap allocation, given a
//! buffer with room for the trailer (the daemon reuses one); nor does holding the pieces of a
//! unit the kernel cut into segments and opening them, once the engine's buffers have grown
//! and released packets are given back to it (as the daemon does). A counting global allocator
//! checks it; this file is its own test binary so nothing else runs alongside. (It lives in
//! `gscipd`, whose per-packet path it is, because `gscip-core` forbids the `unsafe` a global
//! allocator needs.)

use gscip_core::engine::{Engine, GeConfig, PacketContext, TransmitKind, Verdict};
use gscip_core::keysource::KeySource;
use gscip_core::pccom::AeadAlgorithm;
use gscip_core::{GeKind, Mode, Timestamp};
use gscip_sim::gms::BuiltinGms;
use gscip_wire::ip::{tcp_flags, DatagramRepr};
use gscip_wire::{Cid, L4Proto};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

/// The engines' clock (Unix seconds): their certificates are issued from it.
const EPOCH_S: u64 = 1_800_000_000;

struct Counting;

thread_local! {
    /// Allocations made by this thread: the per-packet path runs on the test's thread, and
    /// whatever the test harness's other threads do (it has one that waits on the test) is not
    /// counted. A `const` cell with no destructor: reading it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn count_one() {
    // `try_with`: not at all while the thread is being torn down.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's contract is passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A GES of group 1 enrolled with the stand-in GMS the simulator and the lab use.
fn engine(gms: &mut BuiltinGms, name: &str, mode: Mode, addr: IpAddr, aead: AeadAlgorithm) -> Engine {
    let mut enrolled = gms.enroll(name, GeKind::Ges, mode, &[1]).unwrap();
    let (identity, trust) = enrolled.identity().unwrap();
    let cfg = GeConfig { local_addrs: vec![addr], aead, ..GeConfig::default() };
    Engine::new(cfg, identity, trust, enrolled.group_keys().unwrap(), Box::new(rand_core::OsRng)).unwrap()
}

fn packet(proto: L4Proto, src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    DatagramRepr {
        cid: Cid { proto, src, src_port: sport, dst, dst_port: dport },
        ttl: 64,
        tcp_flags: if proto == L4Proto::Tcp { tcp_flags::ACK | tcp_flags::PSH } else { 0 },
        tcp_seq: 1,
        tcp_ack: 1,
        tcp_mss: None,
        payload,
    }
    .emit()
    .unwrap()
}

/// Negotiates the flow of `first` between a and b (the first packet is held; messages go back
/// and forth until quiet).
fn negotiate(a: &mut Engine, b: &mut Engine, now: Timestamp, mut first: Vec<u8>) {
    assert_eq!(a.handle_packet(now, &mut first), Verdict::Held);
    for _ in 0..8 {
        let mut moved = false;
        while let Some(mut t) = a.poll_transmit() {
            moved = true;
            b.handle_packet(now, &mut t.packet);
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
}

/// One test (the counter is global): both paths, one after the other.
#[test]
fn the_per_packet_path_allocates_nothing() {
    sealing_and_opening_an_established_flow_allocate_nothing();
    holding_and_opening_the_pieces_of_cut_units_allocate_nothing();
}

fn holding_and_opening_the_pieces_of_cut_units_allocate_nothing() {
    let mut gms = BuiltinGms::new(1, &[1], EPOCH_S).unwrap();
    let (a_addr, b_addr): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let now = Timestamp(EPOCH_S * 1_000_000);
    let mut a = engine(&mut gms, "a", Mode::Open, a_addr, AeadAlgorithm::Aes256Gcm);
    let mut b = engine(&mut gms, "b", Mode::Closed, b_addr, AeadAlgorithm::Aes256Gcm);
    negotiate(&mut a, &mut b, now, packet(L4Proto::Tcp, a_addr, 40_000, b_addr, 5_000, b"first"));
    let mut data = packet(L4Proto::Tcp, a_addr, 40_000, b_addr, 5_000, &[0x5a; 20_000]);
    let (mut unit, mut scratch) = (Vec::with_capacity(65_536), Vec::with_capacity(2048));
    let mut pieces: Vec<Vec<u8>> = (0..32).map(|_| Vec::with_capacity(2048)).collect();
    let gso = PacketContext { gso: true, can_segment: true, tag: 0 };
    let mut seq = 6u32; // after the first packet's 5 bytes
    let mut run = |units: u32| {
        for _ in 0..units {
            data[24..28].copy_from_slice(&seq.to_be_bytes()); // IPv4: TCP sequence number
            seq = seq.wrapping_add(20_000);
            unit.clear();
            unit.extend_from_slice(&data);
            assert_eq!(a.handle_packet_in(now, &mut unit, gso), Verdict::Accept);
            let mut n = 0;
            gscip_wire::segment::segment_tcp(&unit, 1448, &mut scratch, |s| {
                pieces[n].clear();
                pieces[n].extend_from_slice(s);
                n += 1;
            })
            .unwrap();
            for (k, p) in pieces[..n].iter_mut().enumerate() {
                let v = b.handle_packet_in(now, p, PacketContext { tag: k as u64 + 1, ..PacketContext::default() });
                assert_eq!(v, Verdict::Held);
            }
            let mut released = 0;
            while let Some(t) = b.poll_transmit() {
                if t.kind == TransmitKind::Released {
                    released += 1;
                    b.recycle(t.packet);
                }
            }
            assert_eq!(released, n);
        }
    };
    run(20); // the engine's buffers grow
    let before = allocations();
    run(200);
    let allocations = allocations() - before;
    assert_eq!(allocations, 0, "{allocations} allocations for 200 units in pieces");
    assert_eq!(b.counters().units_reassembled, 220);
}

fn sealing_and_opening_an_established_flow_allocate_nothing() {
    let mut gms = BuiltinGms::new(1, &[1], EPOCH_S).unwrap();
    let (a_addr, b_addr): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let now = Timestamp(EPOCH_S * 1_000_000);
    for aead in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
        let mut a = engine(&mut gms, "a", Mode::Open, a_addr, aead);
        let mut b = engine(&mut gms, "b", Mode::Closed, b_addr, aead);
        for proto in [L4Proto::Udp, L4Proto::Tcp] {
            negotiate(&mut a, &mut b, now, packet(proto, a_addr, 40_000, b_addr, 5_000, b"first"));
            // Steady state: one reused buffer with room for the trailer, as in the daemon.
            let data = packet(proto, a_addr, 40_000, b_addr, 5_000, &[0x5a; 1400]);
            let mut buf: Vec<u8> = Vec::with_capacity(65_536);
            let before = allocations();
            for _ in 0..1_000 {
                buf.clear();
                buf.extend_from_slice(&data);
                assert_eq!(a.handle_packet(now, &mut buf), Verdict::Accept, "{aead:?} {proto:?}: sealed");
                assert!(buf.len() > data.len());
                assert_eq!(b.handle_packet(now, &mut buf), Verdict::Accept, "{aead:?} {proto:?}: opened");
                assert_eq!(buf, data);
            }
            let allocations = allocations() - before;
            assert_eq!(allocations, 0, "{aead:?} {proto:?}: {allocations} allocations for 1,000 packets");
        }
    }
}

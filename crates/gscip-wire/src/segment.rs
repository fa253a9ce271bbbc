//! Cutting a TCP packet longer than one segment into segments, as the kernel's TCP
//! segmentation offload does in software.
//!
//! With NFQUEUE's GSO flag the kernel hands a GE's daemon the packets it has not segmented yet
//! (a sending host's TCP writes up to 64 KiB at a time; GRO merges what a NIC received). PCCOM
//! authenticates each packet on its own, so such a packet must be cut into segments that each
//! fit the path before they are sealed (docs/performance.md, "The GSO path"). The kernel does
//! not pass the segment size up; the caller chooses it (the flow's MSS less its TCP options).
//!
//! Each segment keeps the IP and TCP headers of the original with what segmentation changes:
//! the IP length (and for IPv4 an identification that counts up from the original's, and the
//! header checksum), the TCP sequence number, CWR only on the first segment, FIN and PSH only
//! on the last, and a full TCP checksum (the original's may be a partial one: the kernel leaves
//! it to the NIC).

use crate::ip::{Datagram, IpVersion};
use crate::{L4Proto, Result, WireError};

/// TCP flag bits segmentation treats specially (FIN and PSH are in [`crate::ip::tcp_flags`]).
const CWR: u8 = 0x80;
const URG: u8 = 0x20;

/// Cuts `packet`, an IPv4 or IPv6 packet carrying TCP, into segments of at most
/// `max_payload` bytes of TCP payload, builds each in `scratch` (reused: no allocation once it
/// has grown to one segment) and hands it to `emit` in order. Returns how many it made; a
/// packet whose payload already fits is handed over as one segment (with its checksums
/// completed).
///
/// Refused: anything but TCP over IPv4 or IPv6 without extension headers, IPv4 fragments
/// ([`WireError::Unsupported`]), urgent data (the kernel's rules for the urgent pointer across
/// segments are not reproduced), and `max_payload` 0 ([`WireError::Malformed`]).
pub fn segment_tcp(
    packet: &[u8],
    max_payload: usize,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize> {
    let d = Datagram::parse(packet)?;
    if d.cid.proto != L4Proto::Tcp {
        return Err(WireError::Unsupported("only TCP is segmented"));
    }
    if max_payload == 0 {
        return Err(WireError::Malformed("segment size 0"));
    }
    if d.tcp_flags & URG != 0 {
        return Err(WireError::Unsupported("urgent data is not segmented"));
    }
    let headers = &packet[..d.payload_offset];
    let payload = &packet[d.payload_offset..d.end];
    let ipv4_id = match d.version {
        IpVersion::V4 => u16::from_be_bytes([packet[4], packet[5]]),
        IpVersion::V6 => 0,
    };
    let count = payload.len().div_ceil(max_payload).max(1);
    for k in 0..count {
        let from = k * max_payload;
        let chunk = &payload[from..payload.len().min(from + max_payload)];
        scratch.clear();
        scratch.extend_from_slice(headers);
        scratch.extend_from_slice(chunk);
        let mut seg = d;
        seg.set_payload_len(scratch, chunk.len())?;
        if d.version == IpVersion::V4 {
            scratch[4..6].copy_from_slice(&ipv4_id.wrapping_add(k as u16).to_be_bytes());
        }
        let tcp = d.l4_offset;
        let seq = d.tcp_seq.wrapping_add(from as u32);
        scratch[tcp + 4..tcp + 8].copy_from_slice(&seq.to_be_bytes());
        let mut flags = d.tcp_flags;
        if k > 0 {
            flags &= !CWR;
        }
        if k + 1 < count {
            flags &= !(crate::ip::tcp_flags::FIN | crate::ip::tcp_flags::PSH);
        }
        scratch[tcp + 13] = flags;
        seg.fill_checksums(scratch);
        emit(scratch);
    }
    Ok(count)
}

/// The TCP payload bytes per segment for a flow whose segments may carry at most `mss` bytes
/// of payload with no options (the MSS as TCP announces it), given the TCP header of the
/// packet to cut: the options of that header come out of each segment's share, as in the
/// kernel's `tcp_current_mss`.
pub fn payload_per_segment(mss: u16, tcp_header_len: usize) -> usize {
    usize::from(mss).saturating_sub(tcp_header_len.saturating_sub(crate::ip::TCP_MIN_HEADER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ip::{tcp_flags, DatagramRepr};
    use crate::Cid;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn tcp_packet(v6: bool, flags: u8, seq: u32, payload: &[u8]) -> Vec<u8> {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            ("fd00::1".parse().unwrap(), "fd00:1::2".parse().unwrap())
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.1.2".parse().unwrap())
        };
        DatagramRepr {
            cid: Cid { proto: L4Proto::Tcp, src, src_port: 40000, dst, dst_port: 5201 },
            ttl: 64,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: 77,
            // An option in the header: segments must carry it too.
            tcp_mss: Some(1400),
            payload,
        }
        .emit()
        .unwrap()
    }

    fn cut(packet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let n = segment_tcp(packet, max, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(n, out.len());
        out
    }

    #[test]
    fn a_64_kib_packet_becomes_full_segments_and_a_short_last_one() {
        let payload: Vec<u8> = (0..65_000u32).map(|i| (i % 251) as u8).collect();
        let p = tcp_packet(false, tcp_flags::ACK | tcp_flags::PSH, 1000, &payload);
        let segs = cut(&p, 1448);
        assert_eq!(segs.len(), 45); // 44 × 1448 + 1288
        let mut joined = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            let d = Datagram::parse(s).unwrap();
            assert!(d.checksums_ok(s), "segment {k}");
            assert_eq!(d.tcp_seq, 1000 + (k * 1448) as u32);
            let last = k == segs.len() - 1;
            assert_eq!(d.tcp_flags & tcp_flags::PSH != 0, last);
            assert_eq!(s.len(), d.payload_offset + if last { 1288 } else { 1448 });
            joined.extend_from_slice(&s[d.payload_offset..d.end]);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn what_is_not_plain_tcp_is_refused() {
        let mut scratch = Vec::new();
        let udp = DatagramRepr {
            cid: Cid {
                proto: L4Proto::Udp,
                src: "10.0.0.1".parse().unwrap(),
                src_port: 1,
                dst: "10.0.0.2".parse().unwrap(),
                dst_port: 2,
            },
            ttl: 64,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_mss: None,
            payload: b"datagram",
        }
        .emit()
        .unwrap();
        assert!(matches!(segment_tcp(&udp, 100, &mut scratch, |_| {}), Err(WireError::Unsupported(_))));
        let urgent = tcp_packet(false, tcp_flags::ACK | URG, 1, b"x");
        assert!(matches!(segment_tcp(&urgent, 100, &mut scratch, |_| {}), Err(WireError::Unsupported(_))));
        let p = tcp_packet(true, tcp_flags::ACK, 1, b"x");
        assert!(matches!(segment_tcp(&p, 0, &mut scratch, |_| {}), Err(WireError::Malformed(_))));
        assert!(segment_tcp(&[0x45, 0, 0], 100, &mut scratch, |_| {}).is_err());
    }

    #[test]
    fn the_segment_size_leaves_room_for_the_options() {
        // 12 bytes of timestamps: a 1460 MSS carries 1448 bytes, as Linux sends them.
        assert_eq!(payload_per_segment(1460, 32), 1448);
        assert_eq!(payload_per_segment(1460, 20), 1460);
        assert_eq!(payload_per_segment(10, 60), 0);
    }

    proptest! {
        /// Against the definition: the segments, in order, carry the payload and nothing else;
        /// each fits, verifies and has the sequence number of its first byte; flags and IPv4
        /// identifications follow the kernel's rules; everything else is the original's.
        #[test]
        fn segments_reassemble_to_the_original(
            v6 in any::<bool>(),
            len in 0usize..6000,
            max in 1usize..2000,
            seq in any::<u32>(),
            fin in any::<bool>(),
            psh in any::<bool>(),
            cwr in any::<bool>(),
            ece in any::<bool>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 % 256) as u8).collect();
            let mut flags = tcp_flags::ACK;
            for (on, bit) in [(fin, tcp_flags::FIN), (psh, tcp_flags::PSH), (cwr, CWR), (ece, 0x40)] {
                if on {
                    flags |= bit;
                }
            }
            let p = tcp_packet(v6, flags, seq, &payload);
            let orig = Datagram::parse(&p).unwrap();
            let segs = cut(&p, max);
            prop_assert_eq!(segs.len(), len.div_ceil(max).max(1));
            let mut joined = Vec::new();
            for (k, s) in segs.iter().enumerate() {
                let d = Datagram::parse(s).unwrap();
                prop_assert!(d.checksums_ok(s));
                prop_assert_eq!(d.cid, orig.cid);
                prop_assert_eq!(d.tcp_ack, orig.tcp_ack);
                prop_assert_eq!(d.payload_offset, orig.payload_offset);
                prop_assert!(d.payload_len() <= max);
                prop_assert_eq!(d.tcp_seq, seq.wrapping_add(joined.len() as u32));
                let (first, last) = (k == 0, k == segs.len() - 1);
                let expect = flags
                    & !(if first { 0 } else { CWR })
                    & !(if last { 0 } else { tcp_flags::FIN | tcp_flags::PSH });
                prop_assert_eq!(d.tcp_flags, expect);
                if !v6 {
                    prop_assert_eq!(u16::from_be_bytes([s[4], s[5]]), u16::from_be_bytes([p[4], p[5]]).wrapping_add(k as u16));
                    prop_assert_eq!(s[8], p[8]); // TTL
                } else {
                    prop_assert_eq!(&s[..4], &p[..4]); // version, class, flow label
                    prop_assert_eq!(s[7], p[7]); // hop limit
                }
                // TCP options travel with every segment.
                prop_assert_eq!(&s[d.l4_offset + 20..d.payload_offset], &p[orig.l4_offset + 20..orig.payload_offset]);
                joined.extend_from_slice(&s[d.payload_offset..d.end]);
            }
            prop_assert_eq!(joined, payload);
        }
    }
}

//! ICMP errors: reading the quote of a packet we sent (a destination with no GE answering a
//! DDE with "port unreachable"), and building "administratively prohibited" for rejects.

use crate::checksum;
use crate::ip::{Ipv4Packet, Ipv6Packet, IPV4_MIN_HEADER, IPV6_HEADER, UDP_HEADER};
use crate::{be16, need, Result, WireError};
use std::net::IpAddr;

/// What an ICMP error says about the packet it quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpErrorRepr {
    /// Sender of the ICMP error.
    pub from: IpAddr,
    /// The quoted packet's protocol, addresses and (for TCP/UDP) ports.
    pub quoted_proto: u8,
    pub quoted_src: IpAddr,
    pub quoted_dst: IpAddr,
    pub quoted_src_port: u16,
    pub quoted_dst_port: u16,
    /// ICMPv4 type 3 / ICMPv6 type 1 ("destination unreachable").
    pub unreachable: bool,
    /// The ICMP code.
    pub code: u8,
    /// Where the quoted UDP datagram's payload lies in the parsed buffer (`start..end`), as far
    /// as the quote holds it and the quoted UDP length says; empty when the quote stops before.
    pub quoted_udp_payload: (usize, usize),
}

impl IcmpErrorRepr {
    /// "Port unreachable" (ICMPv4 3/3, ICMPv6 1/4) sent by the quoted destination itself: what
    /// a host without a GE answers to a DPRP message addressed to it.
    pub fn is_port_unreachable_from_destination(&self) -> bool {
        let port_code = if self.from.is_ipv4() { 3 } else { 4 };
        self.unreachable && self.code == port_code && self.from == self.quoted_dst
    }
}

impl IcmpErrorRepr {
    /// Parses an IP packet carrying an ICMP or ICMPv6 error. Anything else is
    /// [`WireError::Unsupported`].
    pub fn parse(buf: &[u8]) -> Result<IcmpErrorRepr> {
        need(buf, 1)?;
        match buf[0] >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(buf)?;
                if ip.protocol() != 1 || ip.is_fragment() {
                    return Err(WireError::Unsupported("not ICMP"));
                }
                let icmp = &buf[ip.header_len()..ip.total_len()];
                need(icmp, 8)?;
                let ty = icmp[0];
                if !matches!(ty, 3 | 11 | 12) {
                    return Err(WireError::Unsupported("not an ICMP error"));
                }
                let inner = &icmp[8..];
                need(inner, IPV4_MIN_HEADER)?;
                let ihl = usize::from(inner[0] & 0x0f) * 4;
                if inner[0] >> 4 != 4 || ihl < IPV4_MIN_HEADER {
                    return Err(WireError::Malformed("quoted packet is not IPv4"));
                }
                need(inner, ihl + 4)?;
                let q = |at: usize| IpAddr::from([inner[at], inner[at + 1], inner[at + 2], inner[at + 3]]);
                let inner_at = ip.header_len() + 8;
                Ok(IcmpErrorRepr {
                    from: IpAddr::V4(ip.src_addr()),
                    quoted_proto: inner[9],
                    quoted_src: q(12),
                    quoted_dst: q(16),
                    quoted_src_port: be16(inner, ihl),
                    quoted_dst_port: be16(inner, ihl + 2),
                    unreachable: ty == 3,
                    code: icmp[1],
                    quoted_udp_payload: quoted_udp_payload(inner, ihl, inner_at),
                })
            }
            6 => {
                let ip = Ipv6Packet::new_checked(buf)?;
                if ip.next_header() != 58 {
                    return Err(WireError::Unsupported("not ICMPv6"));
                }
                let icmp = &buf[IPV6_HEADER..IPV6_HEADER + ip.payload_len()];
                need(icmp, 8)?;
                let ty = icmp[0];
                if !matches!(ty, 1..=4) {
                    return Err(WireError::Unsupported("not an ICMPv6 error"));
                }
                let inner = &icmp[8..];
                need(inner, IPV6_HEADER + 4)?;
                if inner[0] >> 4 != 6 {
                    return Err(WireError::Malformed("quoted packet is not IPv6"));
                }
                let inner_ip = Ipv6Packet::new_checked(&inner[..IPV6_HEADER]);
                // The quote may be cut short, so read the fixed header by hand.
                let _ = inner_ip;
                let mut s = [0u8; 16];
                s.copy_from_slice(&inner[8..24]);
                let mut d = [0u8; 16];
                d.copy_from_slice(&inner[24..40]);
                Ok(IcmpErrorRepr {
                    from: IpAddr::V6(ip.src_addr()),
                    quoted_proto: inner[6],
                    quoted_src: IpAddr::from(s),
                    quoted_dst: IpAddr::from(d),
                    quoted_src_port: be16(inner, IPV6_HEADER),
                    quoted_dst_port: be16(inner, IPV6_HEADER + 2),
                    unreachable: ty == 1,
                    code: icmp[1],
                    quoted_udp_payload: quoted_udp_payload(inner, IPV6_HEADER, IPV6_HEADER + 8),
                })
            }
            _ => Err(WireError::Malformed("IP version is neither 4 nor 6")),
        }
    }
}

/// The bounds, in the whole ICMP packet, of the payload of a UDP datagram quoted in `inner`
/// (which starts at `inner_at` and has its UDP header at `l4`): cut at the quote's end and at
/// the UDP length field.
fn quoted_udp_payload(inner: &[u8], l4: usize, inner_at: usize) -> (usize, usize) {
    let start = l4 + UDP_HEADER;
    if inner.len() < start {
        return (inner_at + inner.len(), inner_at + inner.len());
    }
    let udp_len = usize::from(be16(inner, l4 + 4));
    let end = inner.len().min(l4 + udp_len.max(UDP_HEADER));
    (inner_at + start, inner_at + end)
}

/// Kinds of ICMP error GSCIP sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpErrorKind {
    /// Port unreachable (what a host without a GE answers to a DPRP message).
    PortUnreachable,
    /// Communication administratively prohibited (a discarded flow, told to a local
    /// application so it fails at once).
    AdminProhibited,
}

/// Builds an ICMP(v6) destination-unreachable error from `from` about `offending` (an IP
/// packet), quoting as much of it as fits in 576 (IPv4) or 1280 (IPv6) bytes.
pub fn emit_error(from: IpAddr, offending: &[u8], kind: IcmpErrorKind) -> Result<Vec<u8>> {
    need(offending, 1)?;
    match (from, offending[0] >> 4) {
        (IpAddr::V4(f), 4) => {
            let ip = Ipv4Packet::new_checked(offending)?;
            let quote = &offending[..ip.total_len().min(576 - IPV4_MIN_HEADER - 8)];
            let len = IPV4_MIN_HEADER + 8 + quote.len();
            let mut b = vec![0u8; len];
            b[0] = 0x45;
            b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            b[8] = 64;
            b[9] = 1;
            b[12..16].copy_from_slice(&f.octets());
            b[16..20].copy_from_slice(&ip.src_addr().octets());
            let c = checksum::of(&b[..IPV4_MIN_HEADER]);
            b[10..12].copy_from_slice(&c.to_be_bytes());
            let icmp = &mut b[IPV4_MIN_HEADER..];
            icmp[0] = 3;
            icmp[1] = match kind {
                IcmpErrorKind::PortUnreachable => 3,
                IcmpErrorKind::AdminProhibited => 13,
            };
            icmp[8..].copy_from_slice(quote);
            let c = checksum::of(icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Ok(b)
        }
        (IpAddr::V6(f), 6) => {
            let ip = Ipv6Packet::new_checked(offending)?;
            let total = IPV6_HEADER + ip.payload_len();
            let quote = &offending[..total.min(1280 - IPV6_HEADER - 8)];
            let len = IPV6_HEADER + 8 + quote.len();
            let mut b = vec![0u8; len];
            b[0] = 0x60;
            b[4..6].copy_from_slice(&((len - IPV6_HEADER) as u16).to_be_bytes());
            b[6] = 58;
            b[7] = 64;
            b[8..24].copy_from_slice(&f.octets());
            b[24..40].copy_from_slice(&ip.src_addr().octets());
            let (src, dst) = (IpAddr::V6(f), IpAddr::V6(ip.src_addr()));
            let icmp = &mut b[IPV6_HEADER..];
            icmp[0] = 1;
            icmp[1] = match kind {
                IcmpErrorKind::PortUnreachable => 4,
                IcmpErrorKind::AdminProhibited => 1,
            };
            icmp[8..].copy_from_slice(quote);
            let c = checksum::l4(src, dst, 58, icmp);
            icmp[2..4].copy_from_slice(&c.to_be_bytes());
            Ok(b)
        }
        _ => Err(WireError::Malformed("ICMP sender and offending packet of different families")),
    }
}

/// Length of the UDP header, re-exported for quote parsing callers.
pub const QUOTED_L4_MIN: usize = UDP_HEADER;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::{Cid, L4Proto};
    use crate::ip::DatagramRepr;
    use proptest::prelude::*;

    #[test]
    fn error_quotes_round_trip_both_families() {
        for (s, d, r) in [("10.0.0.1", "10.0.0.2", "10.0.0.2"), ("fd00::1", "fd00::2", "fd00::2")] {
            let cid = Cid {
                proto: L4Proto::Udp,
                src: s.parse().unwrap(),
                src_port: 4398,
                dst: d.parse().unwrap(),
                dst_port: 4398,
            };
            let pkt =
                DatagramRepr { cid, ttl: 64, tcp_flags: 0, tcp_seq: 0, tcp_ack: 0, tcp_mss: None, payload: b"hello" }
                    .emit()
                    .unwrap();
            let err = emit_error(r.parse().unwrap(), &pkt, IcmpErrorKind::PortUnreachable).unwrap();
            let e = IcmpErrorRepr::parse(&err).unwrap();
            assert_eq!(
                (e.quoted_src, e.quoted_dst, e.quoted_src_port, e.quoted_dst_port, e.quoted_proto),
                (cid.src, cid.dst, 4398, 4398, 17)
            );
            assert!(e.unreachable);
            assert_eq!(e.from, r.parse::<IpAddr>().unwrap());
            assert!(e.is_port_unreachable_from_destination());
            assert_eq!(&err[e.quoted_udp_payload.0..e.quoted_udp_payload.1], b"hello", "the quoted payload");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(e) = IcmpErrorRepr::parse(&b) {
                let (start, end) = e.quoted_udp_payload;
                prop_assert!(start <= end && end <= b.len(), "{start}..{end} of {}", b.len());
            }
        }
    }
}

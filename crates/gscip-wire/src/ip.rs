//! The IPv4, IPv6, TCP and UDP fields GSCIP reads and rewrites in place.
//!
//! [`Ipv4Packet`], [`Ipv6Packet`], [`TcpPacket`] and [`UdpPacket`] are checked zero-copy views.
//! [`Datagram`] ties them together for the per-packet path: one parse finds the offsets of the
//! transport header and payload and the flow's [`Cid`], after which a GE can seal or open the
//! payload in place and call [`Datagram::set_payload_len`] and [`Datagram::fill_checksums`].

use crate::checksum;
use crate::cid::{Cid, L4Proto};
use crate::{be16, be32, need, Result, WireError};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const IPV4_MIN_HEADER: usize = 20;
pub const IPV6_HEADER: usize = 40;
pub const UDP_HEADER: usize = 8;
pub const TCP_MIN_HEADER: usize = 20;

/// A checked view of an IPv4 header.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Checks version, header length and total length against the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need(b, IPV4_MIN_HEADER)?;
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed("not an IPv4 header"));
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        if ihl < IPV4_MIN_HEADER {
            return Err(WireError::Malformed("IPv4 header length below 20"));
        }
        need(b, ihl)?;
        let total = usize::from(be16(b, 2));
        if total < ihl {
            return Err(WireError::Malformed("IPv4 total length below header length"));
        }
        need(b, total)?;
        Ok(Ipv4Packet { buffer })
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 2))
    }
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[9]
    }
    pub fn ttl(&self) -> u8 {
        self.buffer.as_ref()[8]
    }
    /// True for any fragment (more-fragments set or a non-zero offset).
    pub fn is_fragment(&self) -> bool {
        let flags_off = be16(self.buffer.as_ref(), 6);
        flags_off & 0x2000 != 0 || flags_off & 0x1fff != 0
    }
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[12], b[13], b[14], b[15])
    }
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = self.buffer.as_ref();
        Ipv4Addr::new(b[16], b[17], b[18], b[19])
    }
    pub fn verify_checksum(&self) -> bool {
        checksum::of(&self.buffer.as_ref()[..self.header_len()]) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    pub fn set_total_len(&mut self, len: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&len.to_be_bytes());
    }
    pub fn set_ttl(&mut self, ttl: u8) {
        self.buffer.as_mut()[8] = ttl;
    }
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        let b = self.buffer.as_mut();
        b[10] = 0;
        b[11] = 0;
        let c = checksum::of(&b[..hl]);
        b[10..12].copy_from_slice(&c.to_be_bytes());
    }
}

/// A checked view of an IPv6 fixed header.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need(b, IPV6_HEADER)?;
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed("not an IPv6 header"));
        }
        need(b, IPV6_HEADER + usize::from(be16(b, 4)))?;
        Ok(Ipv6Packet { buffer })
    }
    pub fn payload_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[6]
    }
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[7]
    }
    pub fn src_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[8..24]);
        Ipv6Addr::from(a)
    }
    pub fn dst_addr(&self) -> Ipv6Addr {
        let mut a = [0u8; 16];
        a.copy_from_slice(&self.buffer.as_ref()[24..40]);
        Ipv6Addr::from(a)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    pub fn set_payload_len(&mut self, len: u16) {
        self.buffer.as_mut()[4..6].copy_from_slice(&len.to_be_bytes());
    }
    pub fn set_hop_limit(&mut self, h: u8) {
        self.buffer.as_mut()[7] = h;
    }
}

/// TCP flag bits.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// A checked view of a TCP header (the buffer starts at the TCP header).
#[derive(Debug, Clone)]
pub struct TcpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need(b, TCP_MIN_HEADER)?;
        let hl = usize::from(b[12] >> 4) * 4;
        if hl < TCP_MIN_HEADER {
            return Err(WireError::Malformed("TCP data offset below 5"));
        }
        need(b, hl)?;
        Ok(TcpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    pub fn seq(&self) -> u32 {
        be32(self.buffer.as_ref(), 4)
    }
    pub fn ack(&self) -> u32 {
        be32(self.buffer.as_ref(), 8)
    }
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[12] >> 4) * 4
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[13]
    }
    /// The MSS option's value, if the header carries one.
    pub fn mss(&self) -> Option<u16> {
        self.mss_offset().map(|at| be16(self.buffer.as_ref(), at))
    }
    fn mss_offset(&self) -> Option<usize> {
        let b = self.buffer.as_ref();
        let mut i = TCP_MIN_HEADER;
        let end = self.header_len();
        while i < end {
            match b[i] {
                0 => return None,
                1 => i += 1,
                kind => {
                    let len = usize::from(*b.get(i + 1)?);
                    if len < 2 || i + len > end {
                        return None;
                    }
                    if kind == 2 && len == 4 {
                        return Some(i + 2);
                    }
                    i += len;
                }
            }
        }
        None
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// Lowers the MSS option to at most `max`. Returns true when it changed the header (the
    /// caller then refills the checksum).
    pub fn clamp_mss(&mut self, max: u16) -> bool {
        match self.mss_offset() {
            Some(at) if be16(self.buffer.as_ref(), at) > max => {
                self.buffer.as_mut()[at..at + 2].copy_from_slice(&max.to_be_bytes());
                true
            }
            _ => false,
        }
    }
}

/// A checked view of a UDP header (the buffer starts at the UDP header).
#[derive(Debug, Clone)]
pub struct UdpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need(b, UDP_HEADER)?;
        let len = usize::from(be16(b, 4));
        if len < UDP_HEADER {
            return Err(WireError::Malformed("UDP length below 8"));
        }
        need(b, len)?;
        Ok(UdpPacket { buffer })
    }
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 0)
    }
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
    }
    pub fn len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), 4))
    }
    pub fn is_empty(&self) -> bool {
        self.len() == UDP_HEADER
    }
}

/// The IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// One parse of an IP packet carrying TCP or UDP: where things are and the flow's CID.
///
/// Offsets are into the buffer the datagram was parsed from; `end` is the end of the IP packet
/// (bytes after it, e.g. Ethernet padding, are not part of the datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram {
    pub version: IpVersion,
    pub cid: Cid,
    /// Offset of the TCP/UDP header.
    pub l4_offset: usize,
    /// Offset of the TCP/UDP payload.
    pub payload_offset: usize,
    /// End of the IP packet.
    pub end: usize,
    /// TCP only: flags, sequence and acknowledgment numbers (zero for UDP).
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
}

impl Datagram {
    /// Parses an IP packet carrying TCP or UDP. Other protocols, fragments and IPv6 extension
    /// headers come back as [`WireError::Unsupported`] so the caller can apply its default.
    pub fn parse(buf: &[u8]) -> Result<Datagram> {
        need(buf, 1)?;
        let (version, proto, l4_offset, end, src, dst) = match buf[0] >> 4 {
            4 => {
                let ip = Ipv4Packet::new_checked(buf)?;
                if ip.is_fragment() {
                    return Err(WireError::Unsupported("IPv4 fragment"));
                }
                (
                    IpVersion::V4,
                    ip.protocol(),
                    ip.header_len(),
                    ip.total_len(),
                    IpAddr::V4(ip.src_addr()),
                    IpAddr::V4(ip.dst_addr()),
                )
            }
            6 => {
                let ip = Ipv6Packet::new_checked(buf)?;
                (
                    IpVersion::V6,
                    ip.next_header(),
                    IPV6_HEADER,
                    IPV6_HEADER + ip.payload_len(),
                    IpAddr::V6(ip.src_addr()),
                    IpAddr::V6(ip.dst_addr()),
                )
            }
            _ => return Err(WireError::Malformed("IP version is neither 4 nor 6")),
        };
        let l4 = &buf[l4_offset..end];
        let Some(l4proto) = L4Proto::from_number(proto) else {
            return Err(WireError::Unsupported("not TCP or UDP"));
        };
        let (src_port, dst_port, hl, flags, seq, ack) = match l4proto {
            L4Proto::Tcp => {
                let t = TcpPacket::new_checked(l4)?;
                (t.src_port(), t.dst_port(), t.header_len(), t.flags(), t.seq(), t.ack())
            }
            L4Proto::Udp => {
                let u = UdpPacket::new_checked(l4)?;
                if u.len() != l4.len() {
                    return Err(WireError::Malformed("UDP length disagrees with IP length"));
                }
                (u.src_port(), u.dst_port(), UDP_HEADER, 0, 0, 0)
            }
        };
        Ok(Datagram {
            version,
            cid: Cid { proto: l4proto, src, src_port, dst, dst_port },
            l4_offset,
            payload_offset: l4_offset + hl,
            end,
            tcp_flags: flags,
            tcp_seq: seq,
            tcp_ack: ack,
        })
    }

    pub fn payload_len(&self) -> usize {
        self.end - self.payload_offset
    }

    /// Rewrites every length field (IP total/payload length, UDP length) for a payload of
    /// `len` bytes and updates `self.end`. The buffer must already hold the bytes.
    pub fn set_payload_len(&mut self, buf: &mut [u8], len: usize) -> Result<()> {
        let end = self.payload_offset + len;
        need(buf, end)?;
        match self.version {
            IpVersion::V4 => {
                let total = u16::try_from(end).map_err(|_| WireError::Malformed("IPv4 packet too long"))?;
                buf[2..4].copy_from_slice(&total.to_be_bytes());
            }
            IpVersion::V6 => {
                let pl = u16::try_from(end - IPV6_HEADER).map_err(|_| WireError::Malformed("IPv6 payload too long"))?;
                buf[4..6].copy_from_slice(&pl.to_be_bytes());
            }
        }
        if self.cid.proto == L4Proto::Udp {
            let ul = (end - self.l4_offset) as u16;
            buf[self.l4_offset + 4..self.l4_offset + 6].copy_from_slice(&ul.to_be_bytes());
        }
        self.end = end;
        Ok(())
    }

    /// Recomputes the TCP/UDP checksum and, for IPv4, the header checksum.
    pub fn fill_checksums(&self, buf: &mut [u8]) {
        let proto = self.cid.proto.number();
        let at = self.l4_offset + if self.cid.proto == L4Proto::Tcp { 16 } else { 6 };
        buf[at] = 0;
        buf[at + 1] = 0;
        let mut c = checksum::l4(self.cid.src, self.cid.dst, proto, &buf[self.l4_offset..self.end]);
        if c == 0 && self.cid.proto == L4Proto::Udp {
            c = 0xffff; // RFC 768: a computed zero is sent as all ones
        }
        buf[at..at + 2].copy_from_slice(&c.to_be_bytes());
        if self.version == IpVersion::V4 {
            let hl = self.l4_offset;
            buf[10] = 0;
            buf[11] = 0;
            let c = checksum::of(&buf[..hl]);
            buf[10..12].copy_from_slice(&c.to_be_bytes());
        }
    }

    /// True when the TCP/UDP checksum (and the IPv4 header checksum) verify.
    pub fn checksums_ok(&self, buf: &[u8]) -> bool {
        let l4 = &buf[self.l4_offset..self.end];
        if self.cid.proto == L4Proto::Udp && be16(l4, 6) == 0 && self.version == IpVersion::V4 {
            // IPv4 UDP may omit its checksum.
        } else {
            let s = checksum::sum(
                checksum::pseudo_header(self.cid.src, self.cid.dst, self.cid.proto.number(), l4.len() as u32),
                l4,
            );
            if checksum::finish(s) != 0 {
                return false;
            }
        }
        self.version == IpVersion::V6 || checksum::of(&buf[..self.l4_offset]) == 0
    }
}

/// Fields for building a TCP or UDP packet from scratch (the simulator's applications and the
/// tests use it; the data plane only rewrites packets it was given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramRepr<'a> {
    pub cid: Cid,
    pub ttl: u8,
    /// TCP only.
    pub tcp_flags: u8,
    pub tcp_seq: u32,
    pub tcp_ack: u32,
    /// TCP only: an MSS option to carry (on SYNs).
    pub tcp_mss: Option<u16>,
    pub payload: &'a [u8],
}

impl DatagramRepr<'_> {
    fn l3_len(&self) -> usize {
        if self.cid.is_ipv6() {
            IPV6_HEADER
        } else {
            IPV4_MIN_HEADER
        }
    }
    fn l4_header_len(&self) -> usize {
        match self.cid.proto {
            L4Proto::Udp => UDP_HEADER,
            L4Proto::Tcp => TCP_MIN_HEADER + if self.tcp_mss.is_some() { 4 } else { 0 },
        }
    }
    pub fn buffer_len(&self) -> usize {
        self.l3_len() + self.l4_header_len() + self.payload.len()
    }

    /// Builds the packet, checksums filled. Fails if addresses are of different families or
    /// the packet would be too long.
    pub fn emit(&self) -> Result<Vec<u8>> {
        let len = self.buffer_len();
        if len > usize::from(u16::MAX) {
            return Err(WireError::Malformed("packet too long"));
        }
        let mut b = vec![0u8; len];
        let l3 = self.l3_len();
        match (self.cid.src, self.cid.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                b[0] = 0x45;
                b[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                b[6] = 0x40; // DF
                b[8] = self.ttl;
                b[9] = self.cid.proto.number();
                b[12..16].copy_from_slice(&s.octets());
                b[16..20].copy_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                b[0] = 0x60;
                b[4..6].copy_from_slice(&((len - IPV6_HEADER) as u16).to_be_bytes());
                b[6] = self.cid.proto.number();
                b[7] = self.ttl;
                b[8..24].copy_from_slice(&s.octets());
                b[24..40].copy_from_slice(&d.octets());
            }
            _ => return Err(WireError::Malformed("source and destination of different IP families")),
        }
        let l4 = &mut b[l3..];
        l4[0..2].copy_from_slice(&self.cid.src_port.to_be_bytes());
        l4[2..4].copy_from_slice(&self.cid.dst_port.to_be_bytes());
        let hl = self.l4_header_len();
        match self.cid.proto {
            L4Proto::Udp => {
                l4[4..6].copy_from_slice(&((len - l3) as u16).to_be_bytes());
            }
            L4Proto::Tcp => {
                l4[4..8].copy_from_slice(&self.tcp_seq.to_be_bytes());
                l4[8..12].copy_from_slice(&self.tcp_ack.to_be_bytes());
                l4[12] = ((hl / 4) as u8) << 4;
                l4[13] = self.tcp_flags;
                l4[14..16].copy_from_slice(&65535u16.to_be_bytes());
                if let Some(mss) = self.tcp_mss {
                    l4[20] = 2;
                    l4[21] = 4;
                    l4[22..24].copy_from_slice(&mss.to_be_bytes());
                }
            }
        }
        l4[hl..].copy_from_slice(self.payload);
        let d = Datagram::parse(&b)?;
        d.fill_checksums(&mut b);
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cid(v6: bool, proto: L4Proto) -> Cid {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
        } else {
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
        };
        Cid { proto, src, src_port: 40000, dst, dst_port: 80 }
    }

    #[test]
    fn emit_then_parse_tcp_v4_with_mss() {
        let r = DatagramRepr {
            cid: cid(false, L4Proto::Tcp),
            ttl: 64,
            tcp_flags: tcp_flags::SYN,
            tcp_seq: 7,
            tcp_ack: 0,
            tcp_mss: Some(1460),
            payload: b"",
        };
        let mut b = r.emit().unwrap();
        let d = Datagram::parse(&b).unwrap();
        assert_eq!(d.cid, r.cid);
        assert!(d.checksums_ok(&b));
        let mut t = TcpPacket::new_checked(&mut b[d.l4_offset..]).unwrap();
        assert_eq!(t.mss(), Some(1460));
        assert!(t.clamp_mss(1400));
        assert!(!t.clamp_mss(1400));
        assert_eq!(t.mss(), Some(1400));
        assert!(!d.checksums_ok(&b));
        d.fill_checksums(&mut b);
        assert!(d.checksums_ok(&b));
    }

    proptest! {
        #[test]
        fn emit_parse_round_trip(v6: bool, tcp: bool, payload in proptest::collection::vec(any::<u8>(), 0..1500),
                                 seq: u32, ack: u32, flags: u8) {
            let r = DatagramRepr {
                cid: cid(v6, if tcp { L4Proto::Tcp } else { L4Proto::Udp }),
                ttl: 64, tcp_flags: flags, tcp_seq: seq, tcp_ack: ack, tcp_mss: None, payload: &payload,
            };
            let mut b = r.emit().unwrap();
            let mut d = Datagram::parse(&b).unwrap();
            prop_assert_eq!(d.cid, r.cid);
            prop_assert_eq!(&b[d.payload_offset..d.end], &payload[..]);
            prop_assert!(d.checksums_ok(&b));
            if tcp { prop_assert_eq!((d.tcp_seq, d.tcp_ack, d.tcp_flags), (seq, ack, flags)); }
            // Grow the payload by a trailer and fix lengths: it must still parse and verify.
            b.extend_from_slice(&[0xab; 25]);
            d.set_payload_len(&mut b, payload.len() + 25).unwrap();
            d.fill_checksums(&mut b);
            let d2 = Datagram::parse(&b).unwrap();
            prop_assert_eq!(d2.payload_len(), payload.len() + 25);
            prop_assert!(d2.checksums_ok(&b));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = Datagram::parse(&bytes);
        }
    }
}

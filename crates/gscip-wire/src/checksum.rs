//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums for IPv4 and IPv6.

use std::net::IpAddr;

/// One's-complement sum of `data` folded into 32 bits, continuing from `acc`.
///
/// Adds 32-bit big-endian words into a 64-bit accumulator (RFC 1071 section 2: the sum may be
/// taken in larger words and folded). No carry handling is needed inside the loop, so the
/// compiler vectorises it; a 64-bit add-with-carry loop measured slower.
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut wide: u64 = u64::from(acc);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        wide += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    wide += u64::from(u32::from_be_bytes(tail));
    // Fold 64 -> 32 bits, keeping the one's-complement carries.
    while wide > 0xffff_ffff {
        wide = (wide & 0xffff_ffff) + (wide >> 32);
    }
    // Fold to 16 bits so callers may keep adding small values without overflow.
    let mut v = wide as u32;
    while v > 0xffff {
        v = (v & 0xffff) + (v >> 16);
    }
    v
}

/// Folds a 32-bit sum to 16 bits and complements it.
pub fn finish(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum of a whole buffer (e.g. an IPv4 header with its checksum field zeroed).
pub fn of(data: &[u8]) -> u16 {
    finish(sum(0, data))
}

/// Sum of the TCP/UDP pseudo header for `src`/`dst` (same family), protocol and length.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, l4_len: u32) -> u32 {
    let mut acc = 0u32;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = acc.wrapping_add(u32::from(proto));
            acc = acc.wrapping_add(l4_len & 0xffff);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            acc = sum(acc, &s.octets());
            acc = sum(acc, &d.octets());
            acc = acc.wrapping_add(l4_len >> 16).wrapping_add(l4_len & 0xffff);
            acc = acc.wrapping_add(u32::from(proto));
        }
        // Mixed families never reach here: the IP parsers produce one family per packet.
        _ => {}
    }
    acc
}

/// The TCP/UDP checksum over `l4` (header with checksum zeroed, and payload).
pub fn l4(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> u16 {
    finish(sum(pseudo_header(src, dst, proto, l4.len() as u32), l4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example: 0001 f203 f4f5 f6f7 sums to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(finish(sum(0, &data)), !0xddf2);
    }

    #[test]
    fn wide_sum_matches_the_16_bit_definition() {
        let data: Vec<u8> = (0..2001u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 9, 1399, 1400, 2001] {
            let d = &data[..len];
            let mut acc: u32 = 0;
            for c in d.chunks(2) {
                acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
            }
            assert_eq!(finish(sum(0, d)), finish(acc), "len {len}");
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12]), of(&[0x12, 0x00]));
    }
}

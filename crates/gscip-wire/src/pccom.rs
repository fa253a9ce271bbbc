//! PCCOM per-unit data: the trailer that follows a protected TCP/UDP payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ciphertext of the unit (same length as its plaintext) ...    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver=2 | Epoch |        counter (64 bits, big endian) ...       |
//! +-+-+-+-+-+-+-+-+                               +-+-+-+-+-+-+-+-+
//! |                                               | unit length   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  (16 bits)    |           AEAD tag (128 bits) ...             |
//! +-+-+-+-+-+-+-+-+                                               +
//! |                                                               |
//! byte 0: version (4 bits) and epoch (4 bits); bytes 1-8: counter; bytes 9-10: unit length;
//! bytes 11-26: tag.
//! ```
//!
//! A *unit* is what one AEAD operation seals: the payload of one packet as the sealing GE met
//! it. For TCP that packet may be a GSO packet that the kernel cuts into segments after the GE
//! (the sending host's TCP writes up to 64 KiB at a time): the unit's ciphertext then spreads
//! over several segments and only the last carries the trailer. The unit length (bytes of
//! ciphertext the trailer covers) lets the receiving GE tell a whole unit (unit length equal to
//! the ciphertext before the trailer in the same packet) from the last piece of a cut one, and
//! find where that unit began (docs/pccom.md, "Units").
//!
//! The trailer is the last [`TRAILER_LEN`] bytes of the transport payload.

use crate::{be16, be64, need, Result, WireError};

pub const VERSION: u8 = 2;
/// Bytes PCCOM adds to every protected unit.
pub const TRAILER_LEN: usize = 1 + 8 + 2 + TAG_LEN;
pub const TAG_LEN: usize = 16;
/// The longest unit a trailer can describe.
pub const MAX_UNIT_LEN: usize = u16::MAX as usize;

/// A checked view of the trailer at the end of a protected payload.
#[derive(Debug, Clone)]
pub struct TrailerPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TrailerPacket<T> {
    /// `payload` is the protected payload of one packet: ciphertext (of the whole unit, or the
    /// end of it) and the trailer.
    pub fn new_checked(payload: T) -> Result<Self> {
        let b = payload.as_ref();
        need(b, TRAILER_LEN)?;
        let v = b[b.len() - TRAILER_LEN] >> 4;
        if v != VERSION {
            return Err(WireError::UnsupportedVersion(v));
        }
        Ok(TrailerPacket { buffer: payload })
    }
    fn at(&self) -> usize {
        self.buffer.as_ref().len() - TRAILER_LEN
    }
    /// Length of the ciphertext before the trailer, in this packet.
    pub fn ciphertext_len(&self) -> usize {
        self.at()
    }
    pub fn epoch(&self) -> u8 {
        self.buffer.as_ref()[self.at()] & 0x0f
    }
    pub fn counter(&self) -> u64 {
        be64(self.buffer.as_ref(), self.at() + 1)
    }
    /// Length of the unit's whole ciphertext: [`TrailerPacket::ciphertext_len`] for a whole
    /// unit, more for the last piece of one the kernel cut into segments.
    pub fn unit_len(&self) -> usize {
        usize::from(be16(self.buffer.as_ref(), self.at() + 9))
    }
    /// This packet holds the whole unit.
    pub fn is_whole_unit(&self) -> bool {
        self.unit_len() == self.ciphertext_len()
    }
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        let at = self.at() + 11;
        t.copy_from_slice(&self.buffer.as_ref()[at..at + TAG_LEN]);
        t
    }
}

/// The parsed trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrailerRepr {
    /// Distinguishes successive negotiations of the same CID (4 bits).
    pub epoch: u8,
    pub counter: u64,
    /// Bytes of ciphertext the tag covers (the whole unit's).
    pub unit_len: u16,
    pub tag: [u8; TAG_LEN],
}

impl TrailerRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &TrailerPacket<T>) -> TrailerRepr {
        TrailerRepr { epoch: p.epoch(), counter: p.counter(), unit_len: p.unit_len() as u16, tag: p.tag() }
    }
    /// Writes the trailer into `out` (exactly [`TRAILER_LEN`] bytes).
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = (VERSION << 4) | (self.epoch & 0x0f);
        out[1..9].copy_from_slice(&self.counter.to_be_bytes());
        out[9..11].copy_from_slice(&self.unit_len.to_be_bytes());
        out[11..11 + TAG_LEN].copy_from_slice(&self.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(ct in proptest::collection::vec(any::<u8>(), 0..64), epoch in 0u8..16, counter: u64, extra in 0u16..100, tag: [u8; 16]) {
            let unit_len = ct.len() as u16 + extra;
            let r = TrailerRepr { epoch, counter, unit_len, tag };
            let mut buf = ct.clone();
            buf.resize(ct.len() + TRAILER_LEN, 0);
            r.emit(&mut buf[ct.len()..]);
            let p = TrailerPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(p.ciphertext_len(), ct.len());
            prop_assert_eq!(p.unit_len(), usize::from(unit_len));
            prop_assert_eq!(p.is_whole_unit(), extra == 0);
            prop_assert_eq!(TrailerRepr::parse(&p), r);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = TrailerPacket::new_checked(&b[..]) { let _ = TrailerRepr::parse(&p); }
        }
    }
}

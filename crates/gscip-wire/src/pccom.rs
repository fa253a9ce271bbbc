//! PCCOM per-packet data: the trailer that follows a protected TCP/UDP payload.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ciphertext (same length as the plaintext payload) ...        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Ver=1 | Epoch |        counter (64 bits, big endian) ...       |
//! +-+-+-+-+-+-+-+-+                               +-+-+-+-+-+-+-+-+
//! |                                               |               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+               |
//! |                    AEAD tag (128 bits) ...                    |
//! +                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! byte 0: version (4 bits) and epoch (4 bits); bytes 1-8: counter; bytes 9-24: tag.
//! ```
//!
//! The trailer is the last [`TRAILER_LEN`] bytes of the transport payload.

use crate::{be64, need, Result, WireError};

pub const VERSION: u8 = 1;
/// Bytes PCCOM adds to every protected payload.
pub const TRAILER_LEN: usize = 1 + 8 + TAG_LEN;
pub const TAG_LEN: usize = 16;

/// A checked view of the trailer at the end of a protected payload.
#[derive(Debug, Clone)]
pub struct TrailerPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TrailerPacket<T> {
    /// `payload` is the whole protected payload (ciphertext and trailer).
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
    /// Length of the ciphertext before the trailer.
    pub fn ciphertext_len(&self) -> usize {
        self.at()
    }
    pub fn epoch(&self) -> u8 {
        self.buffer.as_ref()[self.at()] & 0x0f
    }
    pub fn counter(&self) -> u64 {
        be64(self.buffer.as_ref(), self.at() + 1)
    }
    pub fn tag(&self) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        let at = self.at() + 9;
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
    pub tag: [u8; TAG_LEN],
}

impl TrailerRepr {
    pub fn parse<T: AsRef<[u8]>>(p: &TrailerPacket<T>) -> TrailerRepr {
        TrailerRepr { epoch: p.epoch(), counter: p.counter(), tag: p.tag() }
    }
    /// Writes the trailer into `out` (exactly [`TRAILER_LEN`] bytes).
    pub fn emit(&self, out: &mut [u8]) {
        out[0] = (VERSION << 4) | (self.epoch & 0x0f);
        out[1..9].copy_from_slice(&self.counter.to_be_bytes());
        out[9..9 + TAG_LEN].copy_from_slice(&self.tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(ct in proptest::collection::vec(any::<u8>(), 0..64), epoch in 0u8..16, counter: u64, tag: [u8; 16]) {
            let r = TrailerRepr { epoch, counter, tag };
            let mut buf = ct.clone();
            buf.resize(ct.len() + TRAILER_LEN, 0);
            r.emit(&mut buf[ct.len()..]);
            let p = TrailerPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(p.ciphertext_len(), ct.len());
            prop_assert_eq!(TrailerRepr::parse(&p), r);
        }

        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(p) = TrailerPacket::new_checked(&b[..]) { let _ = TrailerRepr::parse(&p); }
        }
    }
}

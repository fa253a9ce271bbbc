//! PCCOM: payload protection that keeps IP and TCP/UDP headers readable.
//!
//! The TCP/UDP payload is encrypted in place with an AEAD; the trailer of
//! [`gscip_wire::pccom`] (epoch, 64-bit counter, unit length, tag) follows it. What one AEAD
//! operation covers is a *unit*: the payload of one packet as the sealing end met it, which for
//! TCP may be a GSO packet the kernel cuts into segments afterwards; the opening end then gets
//! the unit in pieces ([`PccomSession::classify`], [`PccomSession::open_unit`]). Associated data binds the
//! protocol, the negotiation's flow id, the epoch and counter (through the nonce) and, for TCP,
//! the sequence and acknowledgment numbers and the flags, so segments cannot be moved, replayed
//! or have RST/FIN injected. Keys are per flow and per direction (see [`derive_flow_keys`]).

use crate::error::PeerError;
use crate::group::GroupKey;
use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::hkdf;
use gscip_wire::ip::{tcp_flags, Datagram, TcpPacket};
use gscip_wire::pccom::{TrailerPacket, TrailerRepr, MAX_UNIT_LEN, TRAILER_LEN};
use gscip_wire::L4Proto;
use std::fmt;
use zeroize::Zeroizing;

/// The AEAD that protects a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AeadAlgorithm {
    #[default]
    Aes256Gcm,
    ChaCha20Poly1305,
}

impl AeadAlgorithm {
    pub fn bit(self) -> u8 {
        match self {
            AeadAlgorithm::Aes256Gcm => gscip_wire::dprp::aead_bits::AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => gscip_wire::dprp::aead_bits::CHACHA20_POLY1305,
        }
    }
    pub fn from_bit(b: u8) -> Option<Self> {
        match b {
            gscip_wire::dprp::aead_bits::AES_256_GCM => Some(AeadAlgorithm::Aes256Gcm),
            gscip_wire::dprp::aead_bits::CHACHA20_POLY1305 => Some(AeadAlgorithm::ChaCha20Poly1305),
            _ => None,
        }
    }
    fn aws(self) -> &'static aead::Algorithm {
        match self {
            AeadAlgorithm::Aes256Gcm => &aead::AES_256_GCM,
            AeadAlgorithm::ChaCha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AeadAlgorithm::Aes256Gcm => "aes-256-gcm",
            AeadAlgorithm::ChaCha20Poly1305 => "chacha20-poly1305",
        }
    }
    /// The pair's algorithm: the encrypting end's preference if the other accepts it, else the
    /// other's preference if accepted, else AES-256-GCM (which every GE accepts).
    pub fn choose(a_pref: u8, a_supported: u8, b_pref: u8, b_supported: u8) -> AeadAlgorithm {
        if a_pref & b_supported != 0 {
            if let Some(x) = Self::from_bit(a_pref) {
                return x;
            }
        }
        if b_pref & a_supported != 0 {
            if let Some(x) = Self::from_bit(b_pref) {
                return x;
            }
        }
        AeadAlgorithm::Aes256Gcm
    }
}

/// After this many packets in one direction the flow must be renegotiated.
pub const REKEY_AFTER_PACKETS: u64 = 1 << 48;

/// Key material for one flow, both directions: `forward` protects source-to-destination
/// packets (of the negotiation's CID), `reverse` the others. Zeroized on drop.
pub struct FlowKeyMaterial {
    pub forward: Zeroizing<[u8; 32]>,
    pub reverse: Zeroizing<[u8; 32]>,
    pub flow_id: [u8; 8],
}

impl fmt::Debug for FlowKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FlowKeyMaterial { <redacted> }")
    }
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-SHA256 with the group key as salt and the X25519 shared secret as input keying
/// material, bound to the negotiation transcript hash, the group and its key version.
pub fn derive_flow_keys(group_key: &GroupKey, shared_secret: &[u8], transcript: &[u8; 32]) -> FlowKeyMaterial {
    let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, group_key.material());
    let prk = salt.extract(shared_secret);
    let g = group_key.group.0.to_be_bytes();
    let v = group_key.version.to_be_bytes();
    let info: [&[u8]; 4] = [b"gscip-pccom-v1 flow keys", transcript, &g, &v];
    let mut okm = Zeroizing::new([0u8; 72]);
    // HKDF-Expand of 72 bytes with SHA-256 is always within limits.
    if let Ok(o) = prk.expand(&info, Len(72)) {
        let _ = o.fill(&mut okm[..]);
    }
    let mut m = FlowKeyMaterial { forward: Zeroizing::new([0; 32]), reverse: Zeroizing::new([0; 32]), flow_id: [0; 8] };
    m.forward.copy_from_slice(&okm[0..32]);
    m.reverse.copy_from_slice(&okm[32..64]);
    m.flow_id.copy_from_slice(&okm[64..72]);
    m
}

/// A sliding anti-replay window of [`ReplayWindow::BITS`] counters (RFC 6479 style).
#[derive(Clone)]
pub struct ReplayWindow {
    /// One past the highest counter accepted (0: none yet).
    top: u64,
    bits: [u64; Self::WORDS],
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplayWindow {{ top: {} }}", self.top)
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        ReplayWindow { top: 0, bits: [0; Self::WORDS] }
    }
}

impl ReplayWindow {
    const WORDS: usize = 32;
    pub const BITS: u64 = (Self::WORDS as u64) * 64;

    fn bit(c: u64) -> (usize, u64) {
        let i = c % Self::BITS;
        ((i / 64) as usize, 1u64 << (i % 64))
    }

    /// Would `c` be accepted? (Call before spending work on authentication.)
    pub fn check(&self, c: u64) -> bool {
        if c >= self.top {
            return true;
        }
        if self.top - c > Self::BITS {
            return false;
        }
        let (w, m) = Self::bit(c);
        self.bits[w] & m == 0
    }

    /// Could `c` be the counter of a packet of this flow still to come: accepted by
    /// [`ReplayWindow::check`] and not absurdly far ahead of the highest one seen. Tells a
    /// trailer from ciphertext that happens to end in bytes of the trailer's version.
    pub fn plausible(&self, c: u64) -> bool {
        self.check(c) && c < self.top.saturating_add(Self::MAX_AHEAD)
    }

    /// A counter further ahead than this of the highest one seen is taken for noise by
    /// [`ReplayWindow::plausible`] (a million lost packets in a row).
    pub const MAX_AHEAD: u64 = 1 << 20;

    /// Records `c` as seen. Call only after the packet authenticated.
    pub fn update(&mut self, c: u64) {
        if c >= self.top {
            let gap = c - self.top + 1;
            if gap >= Self::BITS {
                self.bits = [0; Self::WORDS];
            } else {
                for k in self.top..=c {
                    let (w, m) = Self::bit(k);
                    self.bits[w] &= !m;
                }
            }
            self.top = c + 1;
        }
        let (w, m) = Self::bit(c);
        self.bits[w] |= m;
    }
}

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// The counter space is used up: renegotiate.
    CounterExhausted,
    /// The packet would exceed the length limit given to [`PccomSession::seal`].
    TooLong,
}

/// Where a protected packet that reached the opening end stands in its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// It carries a whole unit (the usual case, and always for UDP): [`PccomSession::open`].
    Whole,
    /// The last piece of a unit the kernel cut into TCP segments after the sealing end: the
    /// unit's first byte has sequence number `unit_start`.
    LastPiece { unit_start: u32 },
    /// A piece from the start or the middle of a cut unit: it ends in ciphertext, not in a
    /// trailer of this flow.
    Piece,
}

/// One flow's PCCOM state at one end of the protecting pair.
pub struct PccomSession {
    pub algorithm: AeadAlgorithm,
    pub epoch: u8,
    flow_id: [u8; 8],
    sealing: LessSafeKey,
    opening: LessSafeKey,
    next_counter: u64,
    replay: ReplayWindow,
}

impl fmt::Debug for PccomSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PccomSession")
            .field("algorithm", &self.algorithm)
            .field("epoch", &self.epoch)
            .field("sent", &self.next_counter)
            .field("replay", &self.replay)
            .finish_non_exhaustive()
    }
}

fn aad_for(dg: &Datagram, epoch: u8, flow_id: &[u8; 8]) -> ([u8; 19], usize) {
    let mut a = [0u8; 19];
    a[0] = dg.cid.proto.number();
    a[1] = epoch;
    a[2..10].copy_from_slice(flow_id);
    if dg.cid.proto == L4Proto::Tcp {
        a[10..14].copy_from_slice(&dg.tcp_seq.to_be_bytes());
        a[14..18].copy_from_slice(&dg.tcp_ack.to_be_bytes());
        a[18] = dg.tcp_flags;
        (a, 19)
    } else {
        (a, 10)
    }
}

fn nonce_for(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

impl PccomSession {
    /// `seal_key` protects the direction this GE encrypts, `open_key` the one it decrypts.
    pub fn new(
        algorithm: AeadAlgorithm,
        epoch: u8,
        flow_id: [u8; 8],
        seal_key: &[u8; 32],
        open_key: &[u8; 32],
    ) -> Result<Self, crate::Error> {
        let key = |k: &[u8; 32]| {
            UnboundKey::new(algorithm.aws(), k)
                .map(LessSafeKey::new)
                .map_err(|_| crate::Error::Configuration(format!("{} rejected a 32-byte key", algorithm.as_str())))
        };
        Ok(PccomSession {
            algorithm,
            epoch: epoch & 0x0f,
            flow_id,
            sealing: key(seal_key)?,
            opening: key(open_key)?,
            next_counter: 0,
            replay: ReplayWindow::default(),
        })
    }

    /// Packets sealed so far.
    pub fn sent(&self) -> u64 {
        self.next_counter
    }

    /// Encrypts the payload of `buf` (parsed as `dg`) in place as one unit, appends the
    /// trailer, lowers the MSS on SYNs by the trailer length, and fixes lengths and checksums.
    /// The sealed packet is at most `max_len` bytes (and the IP limit, 65,535).
    pub fn seal(&mut self, buf: &mut Vec<u8>, dg: &mut Datagram, max_len: usize) -> Result<(), SealError> {
        if self.next_counter >= REKEY_AFTER_PACKETS {
            return Err(SealError::CounterExhausted);
        }
        if dg.end + TRAILER_LEN > max_len.min(usize::from(u16::MAX)) || dg.payload_len() > MAX_UNIT_LEN {
            return Err(SealError::TooLong);
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        buf.truncate(dg.end);
        let (aad, alen) = aad_for(dg, self.epoch, &self.flow_id);
        let tag = self
            .sealing
            .seal_in_place_separate_tag(
                nonce_for(counter),
                Aad::from(&aad[..alen]),
                &mut buf[dg.payload_offset..dg.end],
            )
            .map_err(|_| SealError::TooLong)?;
        let mut t = [0u8; 16];
        t.copy_from_slice(tag.as_ref());
        let mut trailer = [0u8; TRAILER_LEN];
        TrailerRepr { epoch: self.epoch, counter, unit_len: dg.payload_len() as u16, tag: t }.emit(&mut trailer);
        buf.extend_from_slice(&trailer);
        let new_len = dg.payload_len() + TRAILER_LEN;
        dg.set_payload_len(buf, new_len).map_err(|_| SealError::TooLong)?;
        if dg.cid.proto == L4Proto::Tcp && dg.tcp_flags & tcp_flags::SYN != 0 {
            if let Ok(mut tcp) = TcpPacket::new_checked(&mut buf[dg.l4_offset..dg.payload_offset]) {
                if let Some(mss) = tcp.mss() {
                    tcp.clamp_mss(mss.saturating_sub(TRAILER_LEN as u16));
                }
            }
        }
        dg.fill_checksums(buf);
        Ok(())
    }

    /// Checks and decrypts a protected payload in place, removes the trailer and fixes lengths
    /// and checksums. On error the packet must be dropped (its bytes may be garbled).
    pub fn open(&mut self, buf: &mut Vec<u8>, dg: &mut Datagram) -> Result<(), PeerError> {
        let payload = &buf[dg.payload_offset..dg.end];
        let tp = TrailerPacket::new_checked(payload).map_err(|_| PeerError::AuthenticationFailed)?;
        let tr = TrailerRepr::parse(&tp);
        let ct_len = tp.ciphertext_len();
        if tr.epoch != self.epoch || !tp.is_whole_unit() {
            return Err(PeerError::AuthenticationFailed);
        }
        if !self.replay.check(tr.counter) {
            return Err(PeerError::Replay(tr.counter));
        }
        let (aad, alen) = aad_for(dg, self.epoch, &self.flow_id);
        let start = dg.payload_offset;
        self.opening
            .open_in_place_separate_tag(
                nonce_for(tr.counter),
                Aad::from(&aad[..alen]),
                &tr.tag,
                &mut buf[start..start + ct_len],
            )
            .map_err(|_| PeerError::AuthenticationFailed)?;
        self.replay.update(tr.counter);
        buf.truncate(start + ct_len);
        dg.set_payload_len(buf, ct_len).map_err(|_| PeerError::AuthenticationFailed)?;
        dg.fill_checksums(buf);
        Ok(())
    }

    /// Says whether `buf`, a packet of this flow in the direction this end opens, holds a
    /// whole unit or a piece of one. Costs no cryptography: a piece is told from a whole unit
    /// by the end of its payload, which for a whole unit or a last piece is a trailer of this
    /// flow (version, epoch, a plausible counter) and for other pieces is ciphertext. Only TCP
    /// segments with payload and without SYN or RST can be pieces.
    pub fn classify(&self, buf: &[u8], dg: &Datagram) -> Arrival {
        if dg.cid.proto != L4Proto::Tcp
            || dg.payload_len() == 0
            || dg.tcp_flags & (tcp_flags::SYN | tcp_flags::RST) != 0
        {
            return Arrival::Whole;
        }
        let Ok(tp) = TrailerPacket::new_checked(&buf[dg.payload_offset..dg.end]) else {
            return Arrival::Piece;
        };
        if !self.is_own_trailer(&tp) {
            return Arrival::Piece;
        }
        match tp.unit_len().checked_sub(tp.ciphertext_len()) {
            Some(before) if before > 0 => Arrival::LastPiece { unit_start: dg.tcp_seq.wrapping_sub(before as u32) },
            // A whole unit, or an inconsistent trailer that opening will refuse.
            _ => Arrival::Whole,
        }
    }

    fn is_own_trailer<T: AsRef<[u8]>>(&self, tp: &TrailerPacket<T>) -> bool {
        tp.epoch() == self.epoch && self.replay.plausible(tp.counter())
    }

    /// Reads `trailer` ([`TRAILER_LEN`] bytes put together from the end of a unit): its unit
    /// length, if it is a trailer of this flow still to come (version, epoch, a plausible
    /// counter). For a unit whose trailer the kernel's cut split over its last two pieces.
    pub fn trailer_unit_len(&self, trailer: &[u8]) -> Option<usize> {
        let tp = TrailerPacket::new_checked(trailer).ok()?;
        (trailer.len() == TRAILER_LEN && self.is_own_trailer(&tp)).then(|| tp.unit_len())
    }

    /// Opens a unit that arrived in pieces. `pieces` are whole IP packets of this flow, in
    /// sequence order and contiguous, whose payloads together are the unit's ciphertext and its
    /// trailer (usually all in the last piece; the kernel's cut may leave the trailer's end
    /// alone in a piece of its own). The associated data is the unit's as sealed: the first
    /// piece's sequence number, the acknowledgment number they share and their flags together
    /// (segmentation leaves CWR on the first and FIN and PSH on the last). Each piece is
    /// decrypted in place and loses the trailer bytes it held, with its lengths and checksums
    /// fixed. A piece left with nothing (it held only trailer bytes) comes back empty, to be
    /// dropped, unless it carries the FIN: then it goes on without payload at the sequence
    /// number after the unit's data (a segment without data and FIN would look like a duplicate
    /// acknowledgment to the host). `scratch` is reused. On error nothing is recorded and the
    /// pieces must be dropped (their bytes may be garbled).
    pub fn open_unit(&mut self, pieces: &mut [Vec<u8>], scratch: &mut Vec<u8>) -> Result<(), PeerError> {
        let fail = PeerError::AuthenticationFailed;
        let first = pieces.first().ok_or(fail.clone())?;
        let mut unit = Datagram::parse(first).map_err(|_| fail.clone())?;
        if unit.cid.proto != L4Proto::Tcp {
            return Err(fail);
        }
        // The unit's header, and its bytes gathered in order.
        scratch.clear();
        let mut flags = 0;
        let mut next_seq = unit.tcp_seq;
        for p in pieces.iter() {
            let dg = Datagram::parse(p).map_err(|_| fail.clone())?;
            if dg.cid != unit.cid || dg.tcp_ack != unit.tcp_ack || dg.tcp_seq != next_seq {
                return Err(fail);
            }
            flags |= dg.tcp_flags;
            next_seq = dg.tcp_seq.wrapping_add(dg.payload_len() as u32);
            scratch.extend_from_slice(&p[dg.payload_offset..dg.end]);
        }
        let ct_len = scratch.len().checked_sub(TRAILER_LEN).ok_or(fail.clone())?;
        let tp = TrailerPacket::new_checked(&scratch[ct_len..]).map_err(|_| fail.clone())?;
        let tr = TrailerRepr::parse(&tp);
        if tr.epoch != self.epoch || tp.unit_len() != ct_len {
            return Err(fail);
        }
        if !self.replay.check(tr.counter) {
            return Err(PeerError::Replay(tr.counter));
        }
        unit.tcp_flags = flags;
        let (aad, alen) = aad_for(&unit, self.epoch, &self.flow_id);
        self.opening
            .open_in_place_separate_tag(nonce_for(tr.counter), Aad::from(&aad[..alen]), &tr.tag, &mut scratch[..ct_len])
            .map_err(|_| fail.clone())?;
        self.replay.update(tr.counter);
        // The plaintext back into the pieces; trailer bytes leave them.
        let data_end = unit.tcp_seq.wrapping_add(ct_len as u32);
        let mut at = 0;
        for p in pieces.iter_mut() {
            let mut dg = Datagram::parse(p).map_err(|_| fail.clone())?;
            let n = dg.payload_len();
            let keep = n.min(ct_len.saturating_sub(at));
            p[dg.payload_offset..dg.payload_offset + keep].copy_from_slice(&scratch[at..at + keep]);
            at += n;
            if keep < n {
                if keep == 0 && dg.tcp_flags & tcp_flags::FIN == 0 {
                    p.clear();
                    continue;
                }
                if keep == 0 {
                    p[dg.l4_offset + 4..dg.l4_offset + 8].copy_from_slice(&data_end.to_be_bytes());
                }
                p.truncate(dg.payload_offset + keep);
                dg.set_payload_len(p, keep).map_err(|_| fail.clone())?;
            }
            dg.fill_checksums(p);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::GroupId;
    use gscip_wire::ip::DatagramRepr;
    use gscip_wire::Cid;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn pair(alg: AeadAlgorithm) -> (PccomSession, PccomSession) {
        let gk = GroupKey::new(GroupId(1), 1, [7; 32]);
        let m = derive_flow_keys(&gk, &[9; 32], &[3; 32]);
        (
            PccomSession::new(alg, 1, m.flow_id, &m.forward, &m.reverse).unwrap(),
            PccomSession::new(alg, 1, m.flow_id, &m.reverse, &m.forward).unwrap(),
        )
    }

    fn packet(tcp: bool, v6: bool, payload: &[u8], flags: u8, mss: Option<u16>) -> Vec<u8> {
        let (src, dst) = if v6 { ("fd00::1", "fd00::2") } else { ("10.0.0.1", "10.0.0.2") };
        DatagramRepr {
            cid: Cid {
                proto: if tcp { L4Proto::Tcp } else { L4Proto::Udp },
                src: src.parse().unwrap(),
                src_port: 1000,
                dst: dst.parse().unwrap(),
                dst_port: 80,
            },
            ttl: 64,
            tcp_flags: flags,
            tcp_seq: 100,
            tcp_ack: 5,
            tcp_mss: mss,
            payload,
        }
        .emit()
        .unwrap()
    }

    #[test]
    fn seal_open_round_trip_hides_payload_and_keeps_checksums() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
            for (tcp, v6) in [(true, false), (false, false), (true, true), (false, true)] {
                let (mut a, mut b) = pair(alg);
                let secret = b"the quarterly figures are ...".to_vec();
                let mut buf = packet(tcp, v6, &secret, tcp_flags::ACK, None);
                let orig = buf.clone();
                let mut dg = Datagram::parse(&buf).unwrap();
                a.seal(&mut buf, &mut dg, usize::MAX).unwrap();
                assert_eq!(buf.len(), orig.len() + TRAILER_LEN);
                assert!(!buf.windows(secret.len()).any(|w| w == &secret[..]), "payload visible");
                let mut dg2 = Datagram::parse(&buf).unwrap();
                assert!(dg2.checksums_ok(&buf), "sealed packet has valid checksums");
                b.open(&mut buf, &mut dg2).unwrap();
                assert_eq!(buf, orig);
            }
        }
    }

    #[test]
    fn tamper_replay_and_wrong_direction_are_rejected() {
        let (mut a, mut b) = pair(AeadAlgorithm::Aes256Gcm);
        let mut buf = packet(true, false, b"data", tcp_flags::ACK, None);
        let mut dg = Datagram::parse(&buf).unwrap();
        a.seal(&mut buf, &mut dg, usize::MAX).unwrap();
        let sealed = buf.clone();
        // Wrong direction: a cannot open what it sealed.
        let mut x = sealed.clone();
        let mut d = Datagram::parse(&x).unwrap();
        assert_eq!(a.open(&mut x, &mut d), Err(PeerError::AuthenticationFailed));
        // Each byte of payload, trailer and the TCP seq/flags is covered.
        for at in [dg.payload_offset, buf.len() - 1, dg.l4_offset + 4, dg.l4_offset + 13] {
            let mut x = sealed.clone();
            x[at] ^= 0x01;
            let mut d = Datagram::parse(&x).unwrap();
            assert!(b.open(&mut x, &mut d).is_err(), "flip at {at} accepted");
        }
        let mut x = sealed.clone();
        let mut d = Datagram::parse(&x).unwrap();
        b.open(&mut x, &mut d).unwrap();
        let mut x = sealed.clone();
        let mut d = Datagram::parse(&x).unwrap();
        assert_eq!(b.open(&mut x, &mut d), Err(PeerError::Replay(0)));
    }

    #[test]
    fn syn_mss_is_lowered_by_the_trailer() {
        let (mut a, _) = pair(AeadAlgorithm::Aes256Gcm);
        let mut buf = packet(true, false, b"", tcp_flags::SYN, Some(1460));
        let mut dg = Datagram::parse(&buf).unwrap();
        a.seal(&mut buf, &mut dg, usize::MAX).unwrap();
        let t = TcpPacket::new_checked(&buf[dg.l4_offset..dg.payload_offset]).unwrap();
        assert_eq!(t.mss(), Some(1460 - TRAILER_LEN as u16));
    }

    /// Seals one big TCP packet as a unit and cuts it as the kernel does after the GE.
    fn cut_unit(alg: AeadAlgorithm, len: usize, seg: usize, flags: u8) -> (Vec<u8>, Vec<Vec<u8>>, PccomSession) {
        let (mut a, b) = pair(alg);
        let data: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let orig = packet(true, false, &data, flags, None);
        let mut sealed = orig.clone();
        let mut dg = Datagram::parse(&sealed).unwrap();
        a.seal(&mut sealed, &mut dg, usize::MAX).unwrap();
        let mut pieces = Vec::new();
        let mut scratch = Vec::new();
        gscip_wire::segment::segment_tcp(&sealed, seg, &mut scratch, |p| pieces.push(p.to_vec())).unwrap();
        (orig, pieces, b)
    }

    fn payloads(pieces: &[Vec<u8>]) -> Vec<u8> {
        pieces
            .iter()
            .filter(|p| !p.is_empty())
            .flat_map(|p| {
                let d = Datagram::parse(p).unwrap();
                p[d.payload_offset..d.end].to_vec()
            })
            .collect()
    }

    #[test]
    fn a_unit_cut_into_segments_is_told_apart_and_opened_from_its_pieces() {
        for alg in [AeadAlgorithm::Aes256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
            // 10,000 bytes in segments of 1,400: the trailer shares the last segment. 2,800: the
            // unit ends on a segment boundary and the trailer travels alone. 1,981 in 1,000: the
            // cut falls inside the trailer, whose last 8 bytes travel alone.
            for (len, seg) in [(10_000, 1_400), (2_800, 1_400), (60_000, 1_448), (1_981, 1_000)] {
                let flags = tcp_flags::ACK | tcp_flags::PSH | 0x80; // CWR too
                let (orig, mut pieces, mut b) = cut_unit(alg, len, seg, flags);
                let od = Datagram::parse(&orig).unwrap();
                let n = pieces.len();
                let split_trailer = (1..TRAILER_LEN).contains(&((len + TRAILER_LEN) % seg));
                for (k, p) in pieces.iter().enumerate() {
                    let d = Datagram::parse(p).unwrap();
                    let want = if k + 1 == n && !split_trailer {
                        Arrival::LastPiece { unit_start: od.tcp_seq }
                    } else {
                        Arrival::Piece
                    };
                    assert_eq!(b.classify(p, &d), want, "piece {k} of {n}");
                }
                if split_trailer {
                    let t: Vec<u8> = payloads(&pieces).split_off(len);
                    assert_eq!(b.trailer_unit_len(&t), Some(len), "the trailer read across two pieces");
                }
                b.open_unit(&mut pieces, &mut Vec::new()).unwrap();
                assert_eq!(payloads(&pieces), orig[od.payload_offset..].to_vec(), "{len}/{seg}");
                // A piece that held only trailer bytes (and no FIN) is left empty, to be dropped.
                let emptied = pieces.iter().filter(|p| p.is_empty()).count();
                assert_eq!(emptied, usize::from(len.is_multiple_of(seg) || split_trailer), "{len}/{seg}");
                for p in pieces.iter().filter(|p| !p.is_empty()) {
                    assert!(Datagram::parse(p).unwrap().checksums_ok(p));
                }
                // The same unit again is a replay.
                let (_, mut again, _) = cut_unit(alg, len, seg, flags);
                assert_eq!(b.open_unit(&mut again, &mut Vec::new()), Err(PeerError::Replay(0)));
            }
        }
    }

    #[test]
    fn a_fin_alone_after_the_data_goes_on_at_the_data_s_end() {
        let fin = tcp_flags::ACK | tcp_flags::FIN;
        for (len, seg) in [(2_800, 1_400), (1_981, 1_000)] {
            let (orig, mut pieces, mut b) = cut_unit(AeadAlgorithm::Aes256Gcm, len, seg, fin);
            b.open_unit(&mut pieces, &mut Vec::new()).unwrap();
            let last = pieces.last().unwrap();
            let d = Datagram::parse(last).unwrap();
            let od = Datagram::parse(&orig).unwrap();
            assert_eq!((d.payload_len(), d.tcp_flags & tcp_flags::FIN), (0, tcp_flags::FIN));
            assert_eq!(d.tcp_seq, od.tcp_seq.wrapping_add(len as u32), "FIN at the end of the data");
            assert!(d.checksums_ok(last));
            assert_eq!(payloads(&pieces), orig[od.payload_offset..].to_vec());
        }
    }

    #[test]
    fn a_unit_with_a_piece_changed_missing_or_out_of_place_is_refused() {
        let (_, pieces, _) = cut_unit(AeadAlgorithm::Aes256Gcm, 5_000, 1_000, tcp_flags::ACK);
        let check = |mut ps: Vec<Vec<u8>>, what: &str| {
            let (_, _, mut b) = cut_unit(AeadAlgorithm::Aes256Gcm, 1, 1_000, tcp_flags::ACK);
            assert_eq!(b.open_unit(&mut ps, &mut Vec::new()), Err(PeerError::AuthenticationFailed), "{what}");
        };
        let mut flipped = pieces.clone();
        let at = flipped[2].len() - 1;
        flipped[2][at] ^= 1;
        check(flipped, "a ciphertext byte flipped");
        let mut missing = pieces.clone();
        missing.remove(1);
        check(missing, "a piece missing");
        let mut swapped = pieces.clone();
        swapped.swap(1, 2);
        check(swapped, "two pieces swapped");
        let mut fin = pieces.clone();
        let d = Datagram::parse(&fin[0]).unwrap();
        fin[0][d.l4_offset + 13] |= tcp_flags::FIN;
        check(fin, "a FIN added");
        check(Vec::new(), "no pieces");
    }

    #[test]
    fn only_tcp_segments_with_data_can_be_pieces() {
        let (_, mut b) = pair(AeadAlgorithm::Aes256Gcm);
        for (tcp, flags, payload) in
            [(false, 0, &b"plain udp datagram"[..]), (true, tcp_flags::ACK, b""), (true, tcp_flags::SYN, b"x")]
        {
            let buf = packet(tcp, false, payload, flags, None);
            let d = Datagram::parse(&buf).unwrap();
            assert_eq!(b.classify(&buf, &d), Arrival::Whole);
            let mut x = buf.clone();
            let mut d = Datagram::parse(&x).unwrap();
            assert!(b.open(&mut x, &mut d).is_err());
        }
        // Data without a trailer of this flow at its end is a piece (held, never delivered as is).
        let buf = packet(true, false, b"ciphertext, nothing else", tcp_flags::ACK, None);
        let d = Datagram::parse(&buf).unwrap();
        assert_eq!(b.classify(&buf, &d), Arrival::Piece);
    }

    #[test]
    fn choose_aead() {
        use gscip_wire::dprp::aead_bits::*;
        let both = AES_256_GCM | CHACHA20_POLY1305;
        assert_eq!(AeadAlgorithm::choose(CHACHA20_POLY1305, both, AES_256_GCM, both), AeadAlgorithm::ChaCha20Poly1305);
        assert_eq!(AeadAlgorithm::choose(CHACHA20_POLY1305, both, AES_256_GCM, AES_256_GCM), AeadAlgorithm::Aes256Gcm);
        assert_eq!(AeadAlgorithm::choose(0, 0, 0, 0), AeadAlgorithm::Aes256Gcm);
    }

    proptest! {
        /// The window against a simple model: accept a counter iff it was never accepted and
        /// lies within BITS of the highest accepted one.
        #[test]
        fn replay_window_matches_model(ops in proptest::collection::vec(0u64..5000, 1..400)) {
            let mut w = ReplayWindow::default();
            let mut seen = BTreeSet::new();
            for c in ops {
                let max = seen.iter().next_back().copied();
                let model = !seen.contains(&c) && max.is_none_or(|m| c + ReplayWindow::BITS > m);
                prop_assert_eq!(w.check(c), model, "counter {}", c);
                if model { w.update(c); seen.insert(c); }
            }
        }

        #[test]
        fn open_never_panics_on_garbage(tail in proptest::collection::vec(any::<u8>(), 0..80), tcp: bool) {
            let (_, mut b) = pair(AeadAlgorithm::Aes256Gcm);
            let mut buf = packet(tcp, false, &tail, tcp_flags::ACK, None);
            let mut dg = Datagram::parse(&buf).unwrap();
            prop_assert!(b.open(&mut buf, &mut dg).is_err());
        }
    }
}

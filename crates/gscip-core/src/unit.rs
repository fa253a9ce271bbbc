//! Units cut into segments (docs/pccom.md, "Units").
//!
//! A sealing GE seals what it meets as one unit; when that is a GSO packet (a sending host's
//! TCP hands its stack up to 64 KiB at a time), the kernel cuts the sealed unit into segments
//! after the GE, and only the last carries the trailer. The opening GE then meets the unit
//! either whole (the path kept it whole, or GRO merged it again) or in pieces.
//!
//! * [`Reassembly`]: the opening end keeps a flow's pieces (held, never delivered unopened)
//!   until a last piece and every piece before it back to its unit's start are there; the
//!   unit is then opened at once and its pieces go on, decrypted, in sequence order.
//! * [`SealWatch`]: a unit cut into segments is lost whole when one of its segments is lost.
//!   The sealing end watches for retransmissions of a flow it sealed cut units for; when they
//!   make up an eighth of what it sealed within a window, the flow's packets are cut into
//!   segments before sealing ([`crate::Verdict::Segment`]), so that a loss costs one segment
//!   again.

use crate::time::{Micros, Timestamp};
use gscip_wire::pccom::TRAILER_LEN;

/// `a` comes before `b` in TCP sequence space.
pub fn seq_before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// One piece of a cut unit, held by the opening end.
#[derive(Debug)]
pub struct Piece {
    /// TCP sequence number of the piece's first byte.
    pub seq: u32,
    /// Bytes of TCP payload in the piece (ciphertext, and at the end of a unit the trailer).
    pub len: u32,
    /// Where the payload starts in `packet`.
    pub payload_offset: usize,
    /// For a last piece that holds its unit's whole trailer: the sequence number its unit
    /// starts at.
    pub unit_start: Option<u32>,
    /// Shorter than a trailer: the last piece of a unit whose trailer began in the piece
    /// before (the kernel's cut fell inside the trailer). Only the last piece of a unit can be
    /// this short; where its unit starts is read from the trailer once the piece before is
    /// here.
    pub short: bool,
    /// The caller's tag for the packet (it stays queued in the kernel meanwhile).
    pub tag: u64,
    pub to_local: bool,
    pub arrived: Timestamp,
    /// The whole IP packet as it arrived.
    pub packet: Vec<u8>,
}

/// The pieces one flow's opening end holds.
#[derive(Debug, Default)]
pub struct Reassembly {
    /// In arrival order.
    pieces: Vec<Piece>,
    bytes: usize,
    /// Indices of a candidate unit (reused).
    chain: Vec<usize>,
    /// A timer is armed for this flow's pieces (one at a time).
    pub timer_armed: bool,
}

impl Reassembly {
    /// Bytes of the packets held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    pub fn len(&self) -> usize {
        self.pieces.len()
    }
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }
    /// When the oldest piece arrived.
    pub fn oldest(&self) -> Option<Timestamp> {
        self.pieces.first().map(|p| p.arrived)
    }

    pub fn push(&mut self, piece: Piece) {
        self.bytes += piece.packet.len();
        self.pieces.push(piece);
    }

    fn remove(&mut self, i: usize) -> Piece {
        let p = self.pieces.remove(i);
        self.bytes -= p.packet.len();
        p
    }

    /// Puts back a piece taken out with [`Reassembly::take_complete`] (its unit failed to open
    /// because of another piece), at its place in arrival order.
    pub fn put_back(&mut self, piece: Piece) {
        let at = self.pieces.partition_point(|p| p.arrived <= piece.arrived);
        self.bytes += piece.packet.len();
        self.pieces.insert(at, piece);
    }

    /// The oldest piece, taken out (to stay within a bound).
    pub fn take_oldest(&mut self) -> Option<Piece> {
        (!self.pieces.is_empty()).then(|| self.remove(0))
    }

    /// The most recent piece (not a last one) that ends where piece `t` begins.
    fn before(&self, t: usize) -> Option<usize> {
        let at = self.pieces[t].seq;
        (0..self.pieces.len()).rev().find(|&j| {
            let p = &self.pieces[j];
            j != t && p.unit_start.is_none() && !p.short && p.seq.wrapping_add(p.len) == at
        })
    }

    /// Where the unit that piece `t` ends starts, if `t` is a last piece. For a short one
    /// the trailer is put together from the piece before and read with `trailer_unit_len`
    /// (the unit length a trailer of this flow gives, or `None` if the bytes are not one).
    fn unit_start_of(&self, t: usize, trailer_unit_len: &dyn Fn(&[u8]) -> Option<usize>) -> Option<u32> {
        let p = &self.pieces[t];
        if let Some(start) = p.unit_start {
            return Some(start);
        }
        if !p.short {
            return None;
        }
        let prev = &self.pieces[self.before(t)?];
        let (n, need) = (p.len as usize, TRAILER_LEN - p.len as usize);
        if (prev.len as usize) < need {
            return None;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        let from = prev.payload_offset + prev.len as usize - need;
        trailer[..need].copy_from_slice(prev.packet.get(from..from + need)?);
        trailer[need..].copy_from_slice(p.packet.get(p.payload_offset..p.payload_offset + n)?);
        let unit_len = trailer_unit_len(&trailer)?;
        let ciphertext_end = p.seq.wrapping_add(p.len).wrapping_sub(TRAILER_LEN as u32);
        Some(ciphertext_end.wrapping_sub(unit_len as u32))
    }

    /// Takes out the pieces of one complete unit, if there is one, into `out` (cleared first)
    /// in sequence order, the last piece at the end. A unit is complete when, from its start,
    /// pieces follow each other without gap or overlap up to its last piece. Where two pieces
    /// start at the same place (a retransmission), the one that arrived later is taken, and
    /// the most recent last piece is tried first: a unit sent again is cut at the same places
    /// as the one it replaces when it starts where that one started, and the older unit's
    /// pieces must not complete it.
    /// `trailer_unit_len` reads a trailer put together from two pieces (see [`Piece::short`]).
    pub fn take_complete(&mut self, out: &mut Vec<Piece>, trailer_unit_len: &dyn Fn(&[u8]) -> Option<usize>) -> bool {
        out.clear();
        for t in (0..self.pieces.len()).rev() {
            let Some(start) = self.unit_start_of(t, trailer_unit_len) else { continue };
            let end = self.pieces[t].seq;
            self.chain.clear();
            let mut pos = start;
            let complete = loop {
                if pos == end {
                    break true;
                }
                let left = end.wrapping_sub(pos);
                if left > u32::from(u16::MAX) {
                    break false; // past the last piece, or absurdly far before it
                }
                let next = (0..self.pieces.len()).rev().find(|&j| {
                    let p = &self.pieces[j];
                    p.unit_start.is_none()
                        && !p.short
                        && p.seq == pos
                        && p.len > 0
                        && p.len <= left
                        && !self.chain.contains(&j)
                });
                match next {
                    Some(j) => {
                        self.chain.push(j);
                        pos = pos.wrapping_add(self.pieces[j].len);
                    }
                    None => break false,
                }
            };
            if complete {
                self.chain.push(t);
                let mut chain = std::mem::take(&mut self.chain);
                chain.sort_unstable_by(|a, b| b.cmp(a));
                for &i in &chain {
                    out.push(self.remove(i));
                }
                self.chain = chain;
                // Sequence order; the last piece lies after every other piece of its unit.
                out.sort_unstable_by_key(|p| (p.unit_start.is_some() || p.short, p.seq.wrapping_sub(start)));
                return true;
            }
        }
        false
    }

    /// Takes out every piece that arrived before `t`.
    pub fn take_older_than(&mut self, t: Timestamp, out: &mut Vec<Piece>) {
        while self.pieces.first().is_some_and(|p| p.arrived < t) {
            out.push(self.remove(0));
        }
    }

    /// Takes out every piece.
    pub fn take_all(&mut self, out: &mut Vec<Piece>) {
        while let Some(p) = self.take_oldest() {
            out.push(p);
        }
    }
}

/// Bytes sealed per window of [`SealWatch`]: the share of retransmissions is judged afresh in
/// every window.
pub const WATCH_WINDOW: u32 = 4 << 20;
/// Bytes of retransmissions within one window from which a flow of cut units is cut into
/// segments (an eighth of the window). A lost cut unit costs the whole unit, so a path that
/// loses segments makes its host retransmit a large share; a single loss, or the spurious
/// retransmissions that reordering on the path causes (seen in the lab as DSACKs), stay far
/// below it.
pub const RETRANSMIT_LIMIT: u32 = WATCH_WINDOW / 8;
/// Bytes of retransmissions within one window at most for the window to count as clean while
/// a flow is sealed segment by segment (8 KiB of 4 MiB, about 0.2 %: a path that loses that
/// share of its segments loses under [`RETRANSMIT_LIMIT`] in units of 44 segments).
pub const CLEAN_LIMIT: u32 = WATCH_WINDOW / 512;
/// Clean windows after which a flow cut into segments goes back to units the first time; each
/// later switch back doubles it, up to [`MAX_CLEAN_WINDOWS`] (256 MiB), so that a path that
/// loses now and then does not make a flow swing between the two.
pub const FIRST_CLEAN_WINDOWS: u8 = 1;
/// The most clean windows a flow cut into segments waits for before it goes back to units.
pub const MAX_CLEAN_WINDOWS: u8 = 64;

/// What the sealing end watches of the TCP direction it seals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealWatch {
    /// One past the highest sequence number sealed so far.
    high: Option<u32>,
    /// Units the kernel cuts into segments were sealed for this flow.
    pub cut_units: bool,
    /// The flow's packets are cut into segments before sealing, until enough clean windows
    /// pass ([`SealWatch::switch_to_segments`]).
    segmented: bool,
    /// Bytes sealed since the current window began, and how many of them were retransmitted.
    window_sealed: u32,
    window_retransmitted: u32,
    /// While segmented: clean windows in a row, and how many take the flow back to units
    /// (0 until the first switch: [`FIRST_CLEAN_WINDOWS`]).
    clean_windows: u8,
    clean_needed: u8,
    /// Set when the flow went back to units; cleared by [`SealWatch::take_back_to_units`].
    back_to_units: bool,
    /// The flow went back to units but its packets still come one segment at a time: the
    /// platform has not yet been told ([`crate::Verdict::Unsegment`]), or has, and they were
    /// already on their way. Cleared by the first packet from the GSO path.
    unsegment_pending: bool,
}

impl SealWatch {
    /// Notes a segment (or a unit) of `len` bytes at `seq` about to be sealed; true when it
    /// starts before data already sealed (a retransmission). A flow that is cut into segments
    /// must note the segments, not the packet they are cut from.
    pub fn note(&mut self, seq: u32, len: u32) -> bool {
        if self.window_sealed >= WATCH_WINDOW {
            if self.segmented {
                self.judge_segmented_window();
            }
            self.new_window();
        }
        let end = seq.wrapping_add(len);
        let retransmits = self.high.is_some_and(|h| seq_before(seq, h));
        if self.high.is_none_or(|h| seq_before(h, end)) {
            self.high = Some(end);
        }
        self.window_sealed = self.window_sealed.saturating_add(len);
        if retransmits {
            self.window_retransmitted = self.window_retransmitted.saturating_add(len);
        }
        retransmits
    }

    fn new_window(&mut self) {
        self.window_sealed = 0;
        self.window_retransmitted = 0;
    }

    /// At the end of a window sealed segment by segment: a clean one counts toward going back
    /// to units, any other starts the count again.
    fn judge_segmented_window(&mut self) {
        if self.window_retransmitted > CLEAN_LIMIT {
            self.clean_windows = 0;
            return;
        }
        self.clean_windows += 1;
        if self.clean_windows >= self.clean_needed {
            self.segmented = false;
            self.back_to_units = true;
            self.unsegment_pending = true;
            self.clean_windows = 0;
            self.clean_needed = self.clean_needed.saturating_mul(2).min(MAX_CLEAN_WINDOWS);
        }
    }

    /// The host retransmitted [`RETRANSMIT_LIMIT`] bytes or more within the current window.
    pub fn retransmits_much(&self) -> bool {
        self.window_retransmitted >= RETRANSMIT_LIMIT
    }

    /// Whether the flow's packets are cut into segments before sealing.
    pub fn segmented(&self) -> bool {
        self.segmented
    }

    /// From now on the flow's packets are cut into segments before sealing; the share of
    /// retransmissions is judged afresh, segment by segment. False if it already was.
    pub fn switch_to_segments(&mut self) -> bool {
        if self.segmented {
            return false;
        }
        self.segmented = true;
        self.unsegment_pending = false;
        self.clean_windows = 0;
        self.clean_needed = self.clean_needed.max(FIRST_CLEAN_WINDOWS);
        self.new_window();
        true
    }

    /// True once after the flow went back to units.
    pub fn take_back_to_units(&mut self) -> bool {
        std::mem::take(&mut self.back_to_units)
    }

    /// Whether the flow went back to units while its packets still come cut into segments.
    pub fn unsegment_pending(&self) -> bool {
        self.unsegment_pending
    }

    /// A packet of the flow came whole (the GSO path): the platform hands them over whole again.
    pub fn whole_again(&mut self) {
        self.unsegment_pending = false;
    }
}

/// Bounds on what an opening end holds of cut units.
#[derive(Debug, Clone, Copy)]
pub struct ReassemblyLimits {
    /// Bytes of held pieces per flow; beyond it the oldest go.
    pub per_flow: usize,
    /// Bytes of held pieces in the whole GE; beyond it a new piece is dropped.
    pub total: usize,
    /// How long a piece waits for the rest of its unit.
    pub timeout: Micros,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        ReassemblyLimits { per_flow: 1 << 20, total: 16 << 20, timeout: Micros::from_millis(200) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn piece(seq: u32, len: u32, unit_start: Option<u32>, tag: u64) -> Piece {
        Piece {
            seq,
            len,
            payload_offset: 0,
            unit_start,
            short: false,
            tag,
            to_local: false,
            arrived: Timestamp(tag),
            packet: vec![0; 40],
        }
    }

    const NO_TRAILER: &dyn Fn(&[u8]) -> Option<usize> = &|_| None;

    #[test]
    fn a_short_last_piece_completes_its_unit_with_the_trailer_read_across_two_pieces() {
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        // A unit of 1,981 bytes of ciphertext and its trailer, cut every 1,000 bytes: the
        // trailer's last 8 bytes travel alone.
        let mut p0 = piece(1000, 1000, None, 1);
        let mut p1 = piece(2000, 1000, None, 2);
        p0.packet = vec![0; 1000];
        p1.packet = (0..1000u32).map(|i| i as u8).collect();
        let tail = Piece { short: true, packet: vec![0xEE; 8], ..piece(3000, 8, None, 3) };
        r.push(p0);
        r.push(tail);
        let expect: Vec<u8> = p1.packet[981..].iter().copied().chain([0xEE; 8]).collect();
        let reads_it = move |t: &[u8]| (t == expect.as_slice()).then_some(1981);
        assert!(!r.take_complete(&mut out, &reads_it), "the piece before the tail is missing");
        r.push(p1);
        assert!(!r.take_complete(&mut out, NO_TRAILER), "not a trailer of this flow: no unit");
        assert!(r.take_complete(&mut out, &reads_it));
        assert_eq!(out.iter().map(|p| p.tag).collect::<Vec<_>>(), [1, 2, 3]);
    }

    #[test]
    fn a_unit_completes_once_every_piece_is_there() {
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        r.push(piece(1000, 100, None, 1));
        r.push(piece(1200, 50, Some(1000), 3));
        assert!(!r.take_complete(&mut out, NO_TRAILER), "the middle piece is missing");
        r.push(piece(1100, 100, None, 2));
        assert!(r.take_complete(&mut out, NO_TRAILER));
        assert_eq!(out.iter().map(|p| p.tag).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(r.is_empty() && r.bytes() == 0);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        let start = u32::MAX - 60;
        r.push(piece(start.wrapping_add(100), 20, Some(start), 3));
        r.push(piece(start, 100, None, 1));
        assert!(r.take_complete(&mut out, NO_TRAILER));
        assert_eq!(out.iter().map(|p| p.tag).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn a_later_duplicate_is_preferred_and_others_stay() {
        let mut r = Reassembly::default();
        let mut out = Vec::new();
        r.push(piece(0, 10, None, 1));
        r.push(piece(0, 10, None, 2));
        r.push(piece(500, 10, None, 9)); // another unit's piece
        r.push(piece(10, 5, Some(0), 3));
        assert!(r.take_complete(&mut out, NO_TRAILER));
        assert_eq!(out.iter().map(|p| p.tag).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(r.len(), 2);
        assert!(!r.take_complete(&mut out, NO_TRAILER));
    }

    #[test]
    fn a_unit_sent_again_is_put_together_from_its_own_pieces() {
        // A unit over [0, 20) lost its piece at 10; the host sent the data again, and the new
        // unit was cut at the same places. The older last piece must not take the new pieces.
        let mut r = Reassembly::default();
        r.push(piece(0, 10, None, 1));
        r.push(piece(20, 27, Some(0), 3));
        r.push(piece(0, 10, None, 4));
        r.push(piece(10, 10, None, 5));
        r.push(piece(20, 27, Some(0), 6));
        let mut out = Vec::new();
        assert!(r.take_complete(&mut out, NO_TRAILER));
        assert_eq!(out.iter().map(|p| p.tag).collect::<Vec<_>>(), [4, 5, 6]);
        // The older unit's pieces wait (for their timeout): they complete nothing.
        assert!(!r.take_complete(&mut out, NO_TRAILER));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn the_watch_sees_retransmissions() {
        let mut w = SealWatch::default();
        assert!(!w.note(100, 50));
        assert!(!w.note(150, 50));
        assert!(w.note(120, 10), "data before the highest sealed");
        assert!(!w.note(200, 10), "the high mark was not lowered");
        let mut w = SealWatch::default();
        assert!(!w.note(u32::MAX - 5, 10));
        assert!(!w.note(4, 10), "across the wrap");
        assert!(w.note(u32::MAX - 5, 10));
    }

    #[test]
    fn a_segmented_flow_waits_twice_as_many_clean_windows_each_time_up_to_the_most() {
        let mut w = SealWatch::default();
        let mut seq = 0u32;
        // Clean windows of segments until the flow goes back; how many it took.
        let mut clean_windows_to_units = |w: &mut SealWatch| {
            for n in 1..=u32::from(MAX_CLEAN_WINDOWS) + 1 {
                w.note(seq, WATCH_WINDOW);
                seq = seq.wrapping_add(WATCH_WINDOW);
                // The next segment ends the window.
                w.note(seq, 1);
                seq = seq.wrapping_add(1);
                if w.take_back_to_units() {
                    assert!(!w.segmented());
                    assert!(!w.take_back_to_units(), "reported once");
                    return n;
                }
                assert!(w.segmented());
            }
            panic!("never went back");
        };
        let mut taken = Vec::new();
        for _ in 0..9 {
            assert!(w.switch_to_segments());
            assert!(!w.switch_to_segments(), "already");
            taken.push(clean_windows_to_units(&mut w));
        }
        assert_eq!(taken, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
    }

    #[test]
    fn the_watch_judges_the_share_of_retransmissions_per_window() {
        let mut w = SealWatch::default();
        // A unit retransmitted now and then: never much.
        let mut seq = 0u32;
        for i in 0..1000u32 {
            w.note(seq, 60_000);
            if i % 16 == 0 {
                assert!(w.note(seq, 60_000));
            }
            seq = seq.wrapping_add(60_000);
            assert!(!w.retransmits_much(), "at unit {i}");
        }
        // A burst of retransmissions within one window: much, once the limit is reached.
        let mut w = SealWatch::default();
        w.note(0, 1_000_000);
        let mut resent = 0;
        while !w.retransmits_much() {
            assert!(w.note(resent % 1_000_000, 60_000));
            resent += 60_000;
        }
        assert_eq!(resent, RETRANSMIT_LIMIT.div_ceil(60_000) * 60_000);
        // A new window starts afresh.
        let mut w = SealWatch::default();
        w.note(0, RETRANSMIT_LIMIT - 1);
        w.note(0, RETRANSMIT_LIMIT - 1);
        assert!(!w.retransmits_much());
        w.note(RETRANSMIT_LIMIT, WATCH_WINDOW);
        w.note(0, 10);
        assert!(!w.retransmits_much(), "the window closed");
    }

    proptest! {
        /// Against a model of when a flow switches and goes back: random switches, and windows
        /// of segments with random retransmitted shares around the clean limit.
        #[test]
        fn the_watch_goes_back_to_units_as_the_model_says(
            ops in proptest::collection::vec((any::<bool>(), 0..3 * CLEAN_LIMIT), 1..60)
        ) {
            let mut w = SealWatch::default();
            let (mut segmented, mut clean, mut needed) = (false, 0u8, 0u8);
            // Data sealed before: what the retransmissions resend.
            prop_assert!(!w.note(0, 1_000_000));
            let mut seq = 1_000_000u32;
            let mut in_window = 1_000_000u32;
            for (switch, resent) in ops {
                if switch {
                    prop_assert_eq!(w.switch_to_segments(), !segmented);
                    if !segmented {
                        segmented = true;
                        clean = 0;
                        needed = needed.max(FIRST_CLEAN_WINDOWS);
                        in_window = 0;
                    }
                }
                // One window: the retransmissions first, then new data up to its end; the next
                // segment ends it.
                let resent = resent.min(WATCH_WINDOW - in_window - 1);
                if resent > 0 {
                    prop_assert!(w.note(seq.wrapping_sub(resent), resent));
                }
                prop_assert!(!w.note(seq, WATCH_WINDOW - in_window - resent));
                seq = seq.wrapping_add(WATCH_WINDOW - in_window - resent);
                prop_assert!(!w.note(seq, 1));
                seq = seq.wrapping_add(1);
                in_window = 1;
                let mut went_back = false;
                if segmented {
                    if resent > CLEAN_LIMIT {
                        clean = 0;
                    } else {
                        clean += 1;
                        if clean >= needed {
                            (segmented, went_back, clean) = (false, true, 0);
                            needed = (needed * 2).min(MAX_CLEAN_WINDOWS);
                        }
                    }
                }
                prop_assert_eq!(w.segmented(), segmented);
                prop_assert_eq!(w.take_back_to_units(), went_back);
                prop_assert_eq!(w.unsegment_pending(), went_back);
                w.whole_again();
                prop_assert!(!w.unsegment_pending());
            }
        }

        /// Against a model: units of random sizes cut into random pieces (some ending in a piece
        /// that holds only the trailer), delivered in a random order with some pieces lost and
        /// some twice. A unit comes out when all its pieces arrived, with exactly its pieces in
        /// sequence order, and nothing else ever comes out.
        #[test]
        fn reassembly_matches_the_model(
            units in proptest::collection::vec((proptest::collection::vec(1u32..2000, 1..6), any::<bool>()), 1..6),
            order in proptest::collection::vec(any::<u16>(), 0..64),
            lost in proptest::collection::vec(any::<bool>(), 64),
            again in proptest::collection::vec(any::<u16>(), 0..4),
            base: u32,
        ) {
            let mut all = Vec::new();
            let mut seq = base;
            let mut tag = 0u64;
            for (u, (lens, trailer_alone)) in units.iter().enumerate() {
                let start = seq;
                let mut lens = lens.clone();
                if *trailer_alone {
                    lens.push(0);
                }
                for (k, &len) in lens.iter().enumerate() {
                    let last = k + 1 == lens.len();
                    tag += 1;
                    all.push((u, tag, piece(seq, len, last.then_some(start), tag)));
                    seq = seq.wrapping_add(len);
                }
                // The next unit starts where this one's ciphertext ends (its trailer overlaps).
            }
            let n = all.len();
            let mut delivery: Vec<usize> = (0..n).collect();
            for (i, o) in order.iter().enumerate() {
                delivery.swap(i % n, usize::from(*o) % n);
            }
            let mut arrived: Vec<usize> = delivery.into_iter().filter(|&i| !lost[i % lost.len()]).collect();
            for a in &again {
                if !arrived.is_empty() {
                    let dup = arrived[usize::from(*a) % arrived.len()];
                    arrived.push(dup);
                }
            }
            let mut r = Reassembly::default();
            let mut out = Vec::new();
            let mut completed: Vec<Vec<u64>> = Vec::new();
            for &i in &arrived {
                let (_, tag, p) = &all[i];
                r.push(piece(p.seq, p.len, p.unit_start, *tag));
                while r.take_complete(&mut out, NO_TRAILER) {
                    completed.push(out.iter().map(|p| p.tag).collect());
                }
            }
            let mut expected: Vec<Vec<u64>> = Vec::new();
            for u in 0..units.len() {
                let tags: Vec<u64> = all.iter().filter(|(v, _, _)| *v == u).map(|(_, t, _)| *t).collect();
                if tags.iter().all(|t| arrived.iter().any(|&i| all[i].1 == *t)) {
                    expected.push(tags);
                }
            }
            // A unit whose pieces all came twice may come out twice (opening refuses the replay).
            completed.sort();
            completed.dedup();
            expected.sort();
            prop_assert_eq!(completed, expected);
        }
    }
}

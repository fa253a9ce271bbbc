//! Path keys: pairwise keys that two GEs derive from a negotiation in which each verified the
//! other's record by its signature, so that later negotiations on the same path can
//! authenticate records and CDNs to each other with an HMAC instead of an Ed25519 verification
//! (`docs/dprp.md` section 11).
//!
//! ```text
//! K_XY  = HKDF-SHA256(salt = final chain, ikm = X25519(x_eph, Y_eph),
//!                     info = "gscip-dprp-v1 path key" || min(hX, hY) || max(hX, hY))
//!         (hX, hY: SHA-256 of the two certificates' encodings)
//! id    = HMAC-SHA256(K_XY, "gscip-dprp-v1 path key id")[..8]
//! mac   = HMAC-SHA256(K_XY, context || what the signature covers)[..16]
//! ```
//!
//! A MAC never replaces a signature on the wire: every record and CDN is still signed, and a
//! verifier that holds no key for the author, or whose MAC does not verify, checks the
//! signature as before. A path key only proves who wrote a record; group membership is still
//! proven in every record by the group keys, so a GE whose groups were rotated away cannot use
//! a path key to claim them.

use crate::time::{Micros, Timestamp};
use crate::transcript::Chain;
use aws_lc_rs::{agreement, constant_time, hkdf, hmac};
use gscip_wire::dprp::{RecordMac, MAC_KEY_ID_LEN, MAC_TAG_LEN};
use std::collections::HashMap;
use std::fmt;
use zeroize::Zeroizing;

/// A path key's identifier on the wire.
pub type PathKeyId = [u8; MAC_KEY_ID_LEN];

/// What a record's MAC covers, besides what its signature covers.
pub const RECORD_MAC_CONTEXT: &[u8] = b"gscip-dprp-v1 record mac";
/// What a CDN's MAC covers, besides what its signature covers.
pub const CDN_MAC_CONTEXT: &[u8] = b"gscip-dprp-v1 cdn mac";

/// One pairwise key with another GE. The key is zeroized on drop and never printed.
pub struct PathKey {
    /// The other GE's name.
    pub peer: String,
    /// SHA-256 of the other GE's certificate when the key was made: a record under another
    /// certificate (renewed, other groups or mode) is not authenticated by this key.
    pub peer_certificate: Chain,
    /// The other GE's certificate's expiry (seconds since the Unix epoch).
    pub peer_not_after: u64,
    pub expires: Timestamp,
    key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for PathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathKey").field("peer", &self.peer).field("expires", &self.expires).finish_non_exhaustive()
    }
}

impl PathKey {
    /// The 128-bit MAC over the concatenation of `parts`.
    pub fn tag(&self, parts: &[&[u8]]) -> [u8; MAC_TAG_LEN] {
        tag_with(&self.key[..], parts)
    }

    fn live(&self, now: Timestamp, now_unix_s: u64) -> bool {
        now < self.expires && now_unix_s <= self.peer_not_after
    }
}

fn tag_with(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_TAG_LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in parts {
        ctx.update(p);
    }
    let mut t = [0u8; MAC_TAG_LEN];
    t.copy_from_slice(&ctx.sign().as_ref()[..MAC_TAG_LEN]);
    t
}

/// What a GE needs, after a negotiation, to derive a path key with one other GE of it.
pub struct PendingPathKey {
    /// When the negotiation verified the peer: the key's lifetime counts from then.
    pub at: Timestamp,
    pub my_secret: Zeroizing<[u8; 32]>,
    pub my_certificate: Chain,
    pub peer: String,
    pub peer_certificate: Chain,
    pub peer_not_after: u64,
    pub peer_ephemeral: [u8; 32],
    pub final_chain: Chain,
}

impl fmt::Debug for PendingPathKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingPathKey").field("peer", &self.peer).finish_non_exhaustive()
    }
}

/// Derives the key both GEs compute from their sides of one negotiation. `None` if the peer's
/// ephemeral key is unusable (X25519 gives no shared secret).
pub fn derive(p: &PendingPathKey) -> Option<(PathKeyId, Zeroizing<[u8; 32]>)> {
    let mine = agreement::PrivateKey::from_private_key(&agreement::X25519, &p.my_secret[..]).ok()?;
    let theirs = agreement::UnparsedPublicKey::new(&agreement::X25519, p.peer_ephemeral);
    let (lo, hi) = if p.my_certificate <= p.peer_certificate {
        (&p.my_certificate, &p.peer_certificate)
    } else {
        (&p.peer_certificate, &p.my_certificate)
    };
    let key = agreement::agree(&mine, theirs, (), |shared| {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &p.final_chain).extract(shared);
        let info: [&[u8]; 3] = [b"gscip-dprp-v1 path key", lo, hi];
        let mut k = Zeroizing::new([0u8; 32]);
        prk.expand(&info, hkdf::HKDF_SHA256).and_then(|o| o.fill(&mut k[..])).map_err(|_| ())?;
        Ok(k)
    })
    .ok()?;
    let mut id = [0u8; MAC_KEY_ID_LEN];
    id.copy_from_slice(&tag_with(&key[..], &[b"gscip-dprp-v1 path key id"])[..MAC_KEY_ID_LEN]);
    Some((id, key))
}

/// A GE's path keys: at most two per peer (the newest, used to MAC, and the one before, still
/// accepted, so that two GEs that derived from different negotiations meet again), at most
/// `max_peers` peers, each for `lifetime` at most and never past the peer's certificate.
#[derive(Debug)]
pub struct PathKeys {
    by_id: HashMap<PathKeyId, PathKey>,
    /// Per peer name: the newest key's id and the one before.
    by_peer: HashMap<String, (PathKeyId, Option<PathKeyId>)>,
    lifetime: Micros,
    max_peers: usize,
}

impl PathKeys {
    /// `lifetime` zero: no path keys are kept (every record is verified by its signature).
    pub fn new(lifetime: Micros, max_peers: usize) -> PathKeys {
        PathKeys { by_id: HashMap::new(), by_peer: HashMap::new(), lifetime, max_peers }
    }

    pub fn enabled(&self) -> bool {
        self.lifetime.0 > 0 && self.max_peers > 0
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Forgets every key (this GE's identity changed).
    pub fn clear(&mut self) {
        self.by_id.clear();
        self.by_peer.clear();
    }

    /// Keeps a newly derived key as the peer's newest.
    pub fn insert(&mut self, now: Timestamp, id: PathKeyId, key: Zeroizing<[u8; 32]>, from: &PendingPathKey) {
        if !self.enabled() {
            return;
        }
        if !self.by_peer.contains_key(&from.peer) && self.by_peer.len() >= self.max_peers {
            self.expire(now);
            if self.by_peer.len() >= self.max_peers {
                // Still full of live keys: the peer met longest ago goes.
                let oldest = self
                    .by_peer
                    .iter()
                    .min_by_key(|(_, (newest, _))| self.by_id.get(newest).map(|k| k.expires))
                    .map(|(name, _)| name.clone());
                if let Some(name) = oldest {
                    self.forget_peer(&name);
                }
            }
        }
        let entry = PathKey {
            peer: from.peer.clone(),
            peer_certificate: from.peer_certificate,
            peer_not_after: from.peer_not_after,
            expires: now + self.lifetime,
            key,
        };
        let previous = match self.by_peer.get(&from.peer) {
            Some(&(newest, older)) if newest != id => {
                if let Some(o) = older {
                    self.by_id.remove(&o);
                }
                Some(newest)
            }
            Some(&(_, older)) => older,
            None => None,
        };
        self.by_id.insert(id, entry);
        self.by_peer.insert(from.peer.clone(), (id, previous));
    }

    fn forget_peer(&mut self, name: &str) {
        if let Some((newest, older)) = self.by_peer.remove(name) {
            self.by_id.remove(&newest);
            if let Some(o) = older {
                self.by_id.remove(&o);
            }
        }
    }

    /// Drops the keys that have expired.
    pub fn expire(&mut self, now: Timestamp) {
        self.by_id.retain(|_, k| now < k.expires);
        let by_id = &self.by_id;
        self.by_peer.retain(|_, (newest, older)| {
            if older.is_some_and(|o| !by_id.contains_key(&o)) {
                *older = None;
            }
            by_id.contains_key(newest)
        });
    }

    /// The newest live key with `peer`, to MAC for it.
    pub fn for_peer(&self, now: Timestamp, now_unix_s: u64, peer: &str) -> Option<(PathKeyId, &PathKey)> {
        let (id, _) = self.by_peer.get(peer)?;
        self.by_id.get(id).filter(|k| k.live(now, now_unix_s)).map(|k| (*id, k))
    }

    /// When the newest live key with `peer` was made.
    pub fn made_at(&self, now: Timestamp, now_unix_s: u64, peer: &str) -> Option<Timestamp> {
        self.for_peer(now, now_unix_s, peer).map(|(_, k)| Timestamp(k.expires.0.saturating_sub(self.lifetime.0)))
    }

    /// Whether one of `macs` is a valid MAC over `parts` under a live key with the GE `author`
    /// holding the certificate whose hash is `certificate`.
    pub fn verifies(
        &self,
        now: Timestamp,
        now_unix_s: u64,
        author: &str,
        certificate: &Chain,
        macs: &[RecordMac],
        parts: &[&[u8]],
    ) -> bool {
        macs.iter().any(|m| {
            self.by_id.get(&m.key_id).is_some_and(|k| {
                k.live(now, now_unix_s)
                    && k.peer == author
                    && k.peer_certificate == *certificate
                    && constant_time::verify_slices_are_equal(&k.tag(parts), &m.tag).is_ok()
            })
        })
    }

    /// MACs over `parts` for each of `peers` this GE holds a live key with (at most
    /// [`gscip_wire::dprp::MAX_MACS`], each peer once).
    pub fn macs_for<'a>(
        &self,
        now: Timestamp,
        now_unix_s: u64,
        peers: impl IntoIterator<Item = &'a str>,
        parts: &[&[u8]],
    ) -> Vec<RecordMac> {
        let mut out: Vec<RecordMac> = Vec::new();
        for peer in peers {
            if out.len() == gscip_wire::dprp::MAX_MACS {
                break;
            }
            if let Some((key_id, k)) = self.for_peer(now, now_unix_s, peer) {
                if !out.iter().any(|m| m.key_id == key_id) {
                    out.push(RecordMac { key_id, tag: k.tag(parts) });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> (Zeroizing<[u8; 32]>, [u8; 32]) {
        let secret = Zeroizing::new([seed; 32]);
        let k = agreement::PrivateKey::from_private_key(&agreement::X25519, &secret[..]).unwrap();
        let mut public = [0u8; 32];
        public.copy_from_slice(k.compute_public_key().unwrap().as_ref());
        (secret, public)
    }

    fn pending(me: u8, peer: u8, peer_name: &str, chain: u8) -> PendingPathKey {
        let (secret, _) = keypair(me);
        let (_, peer_public) = keypair(peer);
        PendingPathKey {
            at: Timestamp(0),
            my_secret: secret,
            my_certificate: [me; 32],
            peer: peer_name.into(),
            peer_certificate: [peer; 32],
            peer_not_after: 2_000_000_000,
            peer_ephemeral: peer_public,
            final_chain: [chain; 32],
        }
    }

    const NOW_S: u64 = 1_800_000_000;

    #[test]
    fn both_sides_derive_the_same_key_and_id() {
        let (xa, ka) = derive(&pending(1, 2, "b", 7)).unwrap();
        let (xb, kb) = derive(&pending(2, 1, "a", 7)).unwrap();
        assert_eq!((xa, &ka[..]), (xb, &kb[..]));
        let (other, _) = derive(&pending(1, 2, "b", 8)).unwrap();
        assert_ne!(other, xa, "another negotiation gives another key");
    }

    #[test]
    fn a_mac_verifies_only_for_its_author_certificate_content_and_lifetime() {
        let now = Timestamp(5_000_000);
        let mut at_a = PathKeys::new(Micros::from_secs(60), 16);
        let mut at_b = PathKeys::new(Micros::from_secs(60), 16);
        let pa = pending(1, 2, "b", 7);
        let pb = pending(2, 1, "a", 7);
        let (id, k) = derive(&pa).unwrap();
        at_a.insert(now, id, k, &pa);
        let (id, k) = derive(&pb).unwrap();
        at_b.insert(now, id, k, &pb);
        let parts: [&[u8]; 2] = [RECORD_MAC_CONTEXT, b"record"];
        let macs = at_a.macs_for(now, NOW_S, ["b", "c"], &parts);
        assert_eq!(macs.len(), 1, "only b has a key");
        assert!(at_b.verifies(now, NOW_S, "a", &[1; 32], &macs, &parts));
        assert!(!at_b.verifies(now, NOW_S, "c", &[1; 32], &macs, &parts), "another author");
        assert!(!at_b.verifies(now, NOW_S, "a", &[9; 32], &macs, &parts), "another certificate");
        assert!(!at_b.verifies(now, NOW_S, "a", &[1; 32], &macs, &[RECORD_MAC_CONTEXT, b"recorD"]), "other bytes");
        let mut forged = macs.clone();
        forged[0].tag[3] ^= 1;
        assert!(!at_b.verifies(now, NOW_S, "a", &[1; 32], &forged, &parts), "a changed tag");
        let later = now + Micros::from_secs(60);
        assert!(!at_b.verifies(later, NOW_S, "a", &[1; 32], &macs, &parts), "expired");
        assert!(!at_b.verifies(now, 2_000_000_001, "a", &[1; 32], &macs, &parts), "certificate expired");
        at_b.clear();
        assert!(!at_b.verifies(now, NOW_S, "a", &[1; 32], &macs, &parts), "forgotten");
    }

    #[test]
    fn two_keys_per_peer_are_kept_and_the_newest_is_used() {
        let now = Timestamp(1);
        let mut keys = PathKeys::new(Micros::from_secs(60), 16);
        let mut ids = Vec::new();
        for chain in 1..=3u8 {
            let p = pending(1, 2, "b", chain);
            let (id, k) = derive(&p).unwrap();
            keys.insert(now, id, k, &p);
            ids.push(id);
        }
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.for_peer(now, NOW_S, "b").unwrap().0, ids[2]);
        let parts: [&[u8]; 1] = [b"x"];
        let mac = |chain: u8| {
            let (id, k) = derive(&pending(2, 1, "a", chain)).unwrap();
            RecordMac { key_id: id, tag: tag_with(&k[..], &parts) }
        };
        assert!(keys.verifies(now, NOW_S, "b", &[2; 32], &[mac(2)], &parts), "the one before is accepted");
        assert!(!keys.verifies(now, NOW_S, "b", &[2; 32], &[mac(1)], &parts), "the oldest is gone");
    }

    #[test]
    fn peers_are_bounded_and_zero_lifetime_keeps_nothing() {
        let now = Timestamp(1);
        let mut keys = PathKeys::new(Micros::from_secs(60), 2);
        for (i, name) in ["b", "c", "d"].iter().enumerate() {
            let p = pending(1, 2 + i as u8, name, 1);
            let (id, k) = derive(&p).unwrap();
            keys.insert(now, id, k, &p);
        }
        assert_eq!(keys.len(), 2);
        assert!(keys.for_peer(now, NOW_S, "d").is_some());
        let mut off = PathKeys::new(Micros(0), 16);
        let p = pending(1, 2, "b", 1);
        let (id, k) = derive(&p).unwrap();
        off.insert(now, id, k, &p);
        assert!(off.is_empty());
    }
}

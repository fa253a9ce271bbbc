//! The negotiation transcript: the hash chain over GE records, record signatures, membership
//! proofs, and verification of a whole path. See `docs/dprp.md`.
//!
//! ```text
//! chain[0]   = SHA-256("gscip-dprp-v1 seed"  || header.chain_seed())
//! proof(g,v) = HMAC-SHA256(GK[g][v], "gscip-dprp-v1 member" || chain[k-1] || name || nonce
//!                                    || ephemeral_public || g || v)[..16]
//! sig        = Ed25519(ge_key, "gscip-dprp-v1 record" || chain[k-1] || record_tbs)
//!   (record_tbs: the record's encoding without its 2-byte length prefix and its signature)
//! chain[k]   = SHA-256("gscip-dprp-v1 chain" || chain[k-1] || record_bytes)
//! mac(V)     = HMAC-SHA256(K_XV, "gscip-dprp-v1 record mac" || chain[k-1] || record_tbs)[..16]
//!   (optional, one per GE V the author X holds a path key with: see [`crate::pathkey`])
//! ```

use crate::error::PeerError;
use crate::group::{GroupId, GroupKeyring};
use crate::identity::{verify_signature, SigningIdentity, TrustAnchor};
use crate::pathkey::{PathKeys, RECORD_MAC_CONTEXT};
use crate::policy::PathGe;
use crate::time::Timestamp;
use aws_lc_rs::{constant_time, digest, hmac};
use gscip_wire::dprp::{GeRecordRepr, HeaderRepr, ProofRepr, CHAIN_LEN, NONCE_LEN, PROOF_TAG_LEN, PUBLIC_KEY_LEN};
use std::collections::HashSet;

pub type Chain = [u8; CHAIN_LEN];

fn sha256(parts: &[&[u8]]) -> Chain {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; CHAIN_LEN];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

pub fn chain_seed(header: &HeaderRepr) -> Chain {
    sha256(&[b"gscip-dprp-v1 seed", &header.chain_seed()])
}

pub fn chain_next(prev: &Chain, record: &GeRecordRepr) -> Chain {
    let mut bytes = Vec::with_capacity(300);
    record.emit(&mut bytes);
    sha256(&[b"gscip-dprp-v1 chain", prev, &bytes])
}

/// The chain value after `records`, starting from the header's seed.
pub fn chain_over(header: &HeaderRepr, records: &[GeRecordRepr]) -> Chain {
    records.iter().fold(chain_seed(header), |c, r| chain_next(&c, r))
}

fn proof_tag(
    key: &[u8],
    prev: &Chain,
    name: &str,
    nonce: &[u8; NONCE_LEN],
    eph: &[u8; PUBLIC_KEY_LEN],
    group: u16,
    version: u32,
) -> [u8; PROOF_TAG_LEN] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    for p in
        [&b"gscip-dprp-v1 member"[..], prev, name.as_bytes(), nonce, eph, &group.to_be_bytes(), &version.to_be_bytes()]
    {
        ctx.update(p);
    }
    let mut t = [0u8; PROOF_TAG_LEN];
    t.copy_from_slice(&ctx.sign().as_ref()[..PROOF_TAG_LEN]);
    t
}

/// What a GE puts in its own record besides its certificate.
#[derive(Debug, Clone, Copy)]
pub struct RecordParams {
    pub side: gscip_wire::dprp::Side,
    pub aead_supported: u8,
    pub aead_preferred: u8,
    pub idle_timeout_s: u32,
    pub nonce: [u8; NONCE_LEN],
    pub ephemeral_public: [u8; PUBLIC_KEY_LEN],
}

/// Builds and signs this GE's record at chain position `prev`, with a proof for every key
/// version it holds of every group in its certificate.
pub fn build_record(id: &SigningIdentity, keys: &GroupKeyring, prev: &Chain, p: &RecordParams) -> GeRecordRepr {
    let cert = id.certificate().clone();
    let mut proofs = Vec::new();
    for &g in &cert.groups {
        for k in keys.versions(GroupId(g)) {
            let tag = proof_tag(k.material(), prev, &cert.name, &p.nonce, &p.ephemeral_public, g, k.version);
            proofs.push(ProofRepr { group: g, key_version: k.version, tag });
        }
    }
    proofs.truncate(gscip_wire::dprp::MAX_PROOFS);
    let mut rec = GeRecordRepr {
        certificate: cert,
        side: p.side,
        aead_supported: p.aead_supported,
        aead_preferred: p.aead_preferred,
        idle_timeout_s: p.idle_timeout_s,
        nonce: p.nonce,
        ephemeral_public: p.ephemeral_public,
        proofs,
        signature: [0; 64],
        macs: Vec::new(),
    };
    let tbs = rec.to_be_signed();
    rec.signature = id.sign(&[b"gscip-dprp-v1 record", prev, &tbs]);
    rec
}

/// Adds to this GE's record `rec` (built at chain position `prev`) a MAC for each of `peers`
/// it holds a path key with.
pub fn mac_record<'a>(
    rec: &mut GeRecordRepr,
    prev: &Chain,
    path_keys: &PathKeys,
    now: Timestamp,
    now_unix_s: u64,
    peers: impl IntoIterator<Item = &'a str>,
) {
    if path_keys.is_empty() {
        return;
    }
    let tbs = rec.to_be_signed();
    rec.macs = path_keys.macs_for(now, now_unix_s, peers, &[RECORD_MAC_CONTEXT, prev, &tbs]);
}

/// SHA-256 of a certificate's encoding: what verified certificates and path keys are kept by.
pub fn certificate_hash(cert: &gscip_wire::dprp::CertificateRepr) -> Chain {
    let mut cert_bytes = Vec::with_capacity(160);
    cert.emit(&mut cert_bytes);
    sha256(&[&cert_bytes])
}

/// A record's identity for [`verify_path`]'s `own_record`.
pub fn record_hash(record: &GeRecordRepr) -> Chain {
    let mut bytes = Vec::with_capacity(300);
    record.emit(&mut bytes);
    sha256(&[b"gscip-dprp-v1 own record", &bytes])
}

/// One verified path element.
#[derive(Debug, Clone)]
pub struct VerifiedGe {
    pub ge: PathGe,
    /// Index of the record in the message's list.
    pub record_index: usize,
    /// (group, version) pairs whose proofs this GE could check and that verified.
    pub proven_versions: Vec<(GroupId, u32)>,
    /// SHA-256 of its certificate's encoding.
    pub certificate_hash: Chain,
    /// How its record was authenticated here: by a path-key MAC, by its signature, or not at
    /// all because it is this GE's own.
    pub authenticated_by: AuthenticatedBy,
}

/// How [`verify_path`] authenticated a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthenticatedBy {
    OwnRecord,
    Signature,
    PathKey,
}

/// A path whose every record verified, in source-to-destination order.
#[derive(Debug, Clone)]
pub struct VerifiedPath {
    pub ges: Vec<VerifiedGe>,
    pub final_chain: Chain,
}

/// What a GE verifies a path with: the GMS's key, its group keys and path keys, and the time.
#[derive(Debug, Clone, Copy)]
pub struct Verifier<'a> {
    pub trust: &'a TrustAnchor,
    pub keys: &'a GroupKeyring,
    pub path_keys: &'a PathKeys,
    pub now: Timestamp,
    /// `now` in seconds since the Unix epoch (certificate expiry).
    pub now_unix_s: u64,
}

/// Verifies a record list (as carried by an MPIT: the order in which the records were
/// appended, from the destination end back to the initiator) and returns it in path order.
///
/// A group counts as proven for a record when the record carries a proof for it and either
/// this GE holds that group (then the proof must verify under a held key version) or it does
/// not (then the GMS-signed certificate's listing stands).
///
/// `own_record` is the hash ([`record_hash`]) of the record this GE itself built, if any: that
/// record is taken as is (it cannot verify anything better than its author already knows).
pub fn verify_path(
    header: &HeaderRepr,
    records: &[GeRecordRepr],
    by: &Verifier<'_>,
    verified_certs: &mut HashSet<Chain>,
    own_record: Option<&Chain>,
) -> Result<VerifiedPath, PeerError> {
    let Verifier { trust, keys, path_keys, now, now_unix_s } = *by;
    let mut chain = chain_seed(header);
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let cert = &rec.certificate;
        if own_record.is_some_and(|h| *h == record_hash(rec)) {
            if !names.insert(cert.name.as_str()) {
                return Err(PeerError::Inconsistent("a GE appears twice on the path"));
            }
            let groups: Vec<GroupId> = cert.groups.iter().map(|&g| GroupId(g)).collect();
            let proven_versions = rec.proofs.iter().map(|p| (GroupId(p.group), p.key_version)).collect();
            out.push(VerifiedGe {
                ge: PathGe { name: cert.name.clone(), mode: cert.mode, side: rec.side, groups },
                record_index: i,
                proven_versions,
                certificate_hash: certificate_hash(cert),
                authenticated_by: AuthenticatedBy::OwnRecord,
            });
            chain = chain_next(&chain, rec);
            continue;
        }
        let cert_hash = certificate_hash(cert);
        // A certificate verified before is not verified again, but it still expires.
        if cert.not_after < now_unix_s {
            return Err(PeerError::BadCertificate(cert.name.clone()));
        }
        if !verified_certs.contains(&cert_hash) {
            trust.verify(cert, now_unix_s)?;
            if verified_certs.len() > 4096 {
                verified_certs.clear();
            }
            verified_certs.insert(cert_hash);
        }
        if !names.insert(cert.name.as_str()) {
            return Err(PeerError::Inconsistent("a GE appears twice on the path"));
        }
        let tbs = rec.to_be_signed();
        let authenticated_by = if !rec.macs.is_empty()
            && path_keys.verifies(
                now,
                now_unix_s,
                &cert.name,
                &cert_hash,
                &rec.macs,
                &[RECORD_MAC_CONTEXT, &chain, &tbs],
            ) {
            AuthenticatedBy::PathKey
        } else if verify_signature(&cert.public_key, &[b"gscip-dprp-v1 record", &chain, &tbs], &rec.signature) {
            AuthenticatedBy::Signature
        } else {
            return Err(PeerError::BadSignature(cert.name.clone()));
        };
        let mut groups = Vec::new();
        let mut proven_versions = Vec::new();
        for &g in &cert.groups {
            let claimed: Vec<&ProofRepr> = rec.proofs.iter().filter(|p| p.group == g).collect();
            if claimed.is_empty() {
                continue;
            }
            if keys.holds(GroupId(g)) {
                let mut ok = false;
                for p in claimed {
                    if let Some(k) = keys.get(GroupId(g), p.key_version) {
                        let t = proof_tag(
                            k.material(),
                            &chain,
                            &cert.name,
                            &rec.nonce,
                            &rec.ephemeral_public,
                            g,
                            p.key_version,
                        );
                        if constant_time::verify_slices_are_equal(&t, &p.tag).is_ok() {
                            ok = true;
                            proven_versions.push((GroupId(g), p.key_version));
                        }
                    }
                }
                if ok {
                    groups.push(GroupId(g));
                }
            } else {
                groups.push(GroupId(g));
            }
        }
        out.push(VerifiedGe {
            ge: PathGe { name: cert.name.clone(), mode: cert.mode, side: rec.side, groups },
            record_index: i,
            proven_versions,
            certificate_hash: cert_hash,
            authenticated_by,
        });
        chain = chain_next(&chain, rec);
    }
    out.reverse();
    Ok(VerifiedPath { ges: out, final_chain: chain })
}

/// The hash both ends compare in the CDN: the transcript and the decision.
pub fn confirmation(final_chain: &Chain, outcome: &crate::policy::Outcome) -> Chain {
    use crate::policy::Outcome;
    let o: [u8; 5] = match *outcome {
        Outcome::Protected { encryptor, decryptor, group } => {
            let g = group.0.to_be_bytes();
            [0, encryptor as u8, decryptor as u8, g[0], g[1]]
        }
        Outcome::Plaintext => [1, 0, 0, 0, 0],
        Outcome::Discarded { at } => [2, at as u8, 0, 0, 0],
    };
    sha256(&[b"gscip-dprp-v1 confirm", final_chain, &o])
}

//! GE identities: the GMS-signed certificate that carries a GE's information (id, kind, mode,
//! groups, public key) and the Ed25519 key with which the GE signs its DPRP records.
//!
//! Group keys prove *current* membership (they rotate); the certificate lets every GE on a
//! path authenticate every other GE's record, including GEs with which it shares no group.

use crate::error::PeerError;
use crate::group::GroupId;
use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use gscip_wire::dprp::{CertificateRepr, GeKind, Mode, PUBLIC_KEY_LEN, SIGNATURE_LEN};
use std::fmt;
use zeroize::Zeroizing;

const CERT_CONTEXT: &[u8] = b"gscip-cert-v1";

fn keypair_from_seed(seed: &[u8; 32]) -> Result<Ed25519KeyPair, crate::Error> {
    Ed25519KeyPair::from_seed_unchecked(seed).map_err(|_| crate::Error::Configuration("Ed25519 seed rejected".into()))
}

fn public_key_of(kp: &Ed25519KeyPair) -> [u8; PUBLIC_KEY_LEN] {
    let mut pk = [0u8; PUBLIC_KEY_LEN];
    pk.copy_from_slice(kp.public_key().as_ref());
    pk
}

fn sign_with(kp: &Ed25519KeyPair, parts: &[&[u8]]) -> [u8; SIGNATURE_LEN] {
    let msg = parts.concat();
    let mut s = [0u8; SIGNATURE_LEN];
    s.copy_from_slice(kp.sign(&msg).as_ref());
    s
}

/// Verifies an Ed25519 signature over the concatenation of `parts`.
pub fn verify_signature(public_key: &[u8; PUBLIC_KEY_LEN], parts: &[&[u8]], sig: &[u8; SIGNATURE_LEN]) -> bool {
    let msg = parts.concat();
    UnparsedPublicKey::new(&signature::ED25519, public_key).verify(&msg, sig).is_ok()
}

/// The GMS's public key: what a GE trusts certificates by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustAnchor {
    pub gms_public_key: [u8; PUBLIC_KEY_LEN],
}

impl TrustAnchor {
    /// Checks the GMS signature and expiry (`now_unix_s`: seconds since the Unix epoch).
    pub fn verify(&self, cert: &CertificateRepr, now_unix_s: u64) -> Result<(), PeerError> {
        let tbs = cert.to_be_signed();
        if cert.not_after < now_unix_s
            || !verify_signature(&self.gms_public_key, &[CERT_CONTEXT, &tbs], &cert.gms_signature)
        {
            return Err(PeerError::BadCertificate(cert.name.clone()));
        }
        Ok(())
    }
}

/// A GE's own signing key and certificate. The private key never leaves this struct and is
/// not printed.
pub struct SigningIdentity {
    keypair: Ed25519KeyPair,
    certificate: CertificateRepr,
}

impl fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningIdentity").field("certificate", &self.certificate).finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// Fails if the certificate is not for this key.
    pub fn new(seed: &Zeroizing<[u8; 32]>, certificate: CertificateRepr) -> Result<Self, crate::Error> {
        let keypair = keypair_from_seed(seed)?;
        if public_key_of(&keypair) != certificate.public_key {
            return Err(crate::Error::Configuration(format!(
                "certificate of {:?} is for another key",
                certificate.name
            )));
        }
        Ok(SigningIdentity { keypair, certificate })
    }
    /// The public key for a seed (what a GE sends the GMS when it enrolls).
    pub fn public_key_for_seed(seed: &Zeroizing<[u8; 32]>) -> Result<[u8; PUBLIC_KEY_LEN], crate::Error> {
        Ok(public_key_of(&keypair_from_seed(seed)?))
    }
    pub fn certificate(&self) -> &CertificateRepr {
        &self.certificate
    }
    pub fn name(&self) -> &str {
        &self.certificate.name
    }
    pub(crate) fn sign(&self, parts: &[&[u8]]) -> [u8; SIGNATURE_LEN] {
        sign_with(&self.keypair, parts)
    }
}

/// The GMS's certificate issuer. The simulator's built-in GMS and the tests use it; the real
/// `gmsd` uses the same type so certificates are the same everywhere.
pub struct CertificateAuthority {
    keypair: Ed25519KeyPair,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority").field("trust_anchor", &self.trust_anchor()).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Result<Self, crate::Error> {
        Ok(CertificateAuthority { keypair: keypair_from_seed(seed)? })
    }
    pub fn trust_anchor(&self) -> TrustAnchor {
        TrustAnchor { gms_public_key: public_key_of(&self.keypair) }
    }
    /// Issues a certificate. Groups are sorted and deduplicated.
    pub fn issue(
        &self,
        kind: GeKind,
        mode: Mode,
        name: &str,
        groups: &[GroupId],
        public_key: [u8; PUBLIC_KEY_LEN],
        not_after_unix_s: u64,
    ) -> Result<CertificateRepr, crate::Error> {
        let mut gs: Vec<u16> = groups.iter().map(|g| g.0).collect();
        gs.sort_unstable();
        gs.dedup();
        let mut cert = CertificateRepr {
            kind,
            mode,
            name: name.to_owned(),
            groups: gs,
            public_key,
            not_after: not_after_unix_s,
            gms_signature: [0; SIGNATURE_LEN],
        };
        cert.validate().map_err(|e| crate::Error::Configuration(format!("certificate for {name:?}: {e}")))?;
        let tbs = cert.to_be_signed();
        cert.gms_signature = sign_with(&self.keypair, &[CERT_CONTEXT, &tbs]);
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_and_reject_tampering() {
        let ca = CertificateAuthority::from_seed(&Zeroizing::new([1; 32])).unwrap();
        let seed = Zeroizing::new([2; 32]);
        let pk = SigningIdentity::public_key_for_seed(&seed).unwrap();
        let cert = ca.issue(GeKind::Ges, Mode::Open, "ges1", &[GroupId(2), GroupId(1)], pk, 100).unwrap();
        assert_eq!(cert.groups, vec![1, 2]);
        let ta = ca.trust_anchor();
        ta.verify(&cert, 50).unwrap();
        assert!(ta.verify(&cert, 101).is_err(), "expired");
        let mut forged = cert.clone();
        forged.groups.push(3);
        assert!(ta.verify(&forged, 50).is_err(), "added group");
        let id = SigningIdentity::new(&seed, cert.clone()).unwrap();
        assert!(SigningIdentity::new(&Zeroizing::new([3; 32]), cert).is_err());
        assert!(!format!("{id:?}").contains("keypair"));
    }
}

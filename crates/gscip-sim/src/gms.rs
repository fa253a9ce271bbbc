//! The simulator's built-in stand-in for the GMS: a certificate authority and one key per group,
//! all derived from the scenario's seed. It implements the core's [`KeySource`] seam, which the
//! real GMS (`gmsd`) implements for the daemon.

use gscip_core::group::{GroupId, GroupKey, GroupKeyring};
use gscip_core::identity::{CertificateAuthority, SigningIdentity, TrustAnchor};
use gscip_core::keysource::KeySource;
use gscip_core::{Error, GeKind, Mode};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Certificates issued by the stand-in are valid this long after the simulation's epoch.
pub const CERT_VALIDITY_S: u64 = 365 * 24 * 3600;

/// The stand-in GMS for one simulation.
pub struct BuiltinGms {
    ca: CertificateAuthority,
    group_keys: BTreeMap<GroupId, GroupKey>,
    rng: ChaCha20Rng,
    epoch_s: u64,
}

impl std::fmt::Debug for BuiltinGms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinGms")
            .field("groups", &self.group_keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BuiltinGms {
    pub fn new(seed: u64, groups: &[u16], epoch_s: u64) -> Result<Self, Error> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x6753_4349_505f_474d);
        let mut ca_seed = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut ca_seed[..]);
        let ca = CertificateAuthority::from_seed(&ca_seed)?;
        let mut group_keys = BTreeMap::new();
        for &g in groups {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            group_keys.insert(GroupId(g), GroupKey::new(GroupId(g), 1, k));
        }
        Ok(BuiltinGms { ca, group_keys, rng, epoch_s })
    }

    pub fn trust_anchor(&self) -> TrustAnchor {
        self.ca.trust_anchor()
    }

    /// Enrolls a GE: a fresh key, a certificate for it, and the keys of its groups.
    pub fn enroll(&mut self, name: &str, kind: GeKind, mode: Mode, groups: &[u16]) -> Result<EnrolledGe, Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(&mut seed[..]);
        let pk = SigningIdentity::public_key_for_seed(&seed)?;
        let gids: Vec<GroupId> = groups.iter().map(|&g| GroupId(g)).collect();
        let cert = self.ca.issue(kind, mode, name, &gids, pk, self.epoch_s + CERT_VALIDITY_S)?;
        let mut keys = GroupKeyring::new();
        for g in &gids {
            let k = self
                .group_keys
                .get(g)
                .ok_or_else(|| Error::Configuration(format!("GE {name:?} is in group {g}, which is not defined")))?;
            keys.insert(k.clone());
        }
        Ok(EnrolledGe { seed, certificate: cert, trust: self.trust_anchor(), keys })
    }
}

/// What the stand-in hands one GE.
pub struct EnrolledGe {
    seed: Zeroizing<[u8; 32]>,
    certificate: gscip_wire::dprp::CertificateRepr,
    trust: TrustAnchor,
    keys: GroupKeyring,
}

impl std::fmt::Debug for EnrolledGe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolledGe")
            .field("certificate", &self.certificate)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl EnrolledGe {
    /// Everything a GE's key file holds: identity seed, certificate, trust anchor, group keys.
    pub fn parts(&self) -> (&Zeroizing<[u8; 32]>, &gscip_wire::dprp::CertificateRepr, TrustAnchor, &GroupKeyring) {
        (&self.seed, &self.certificate, self.trust, &self.keys)
    }
}

impl KeySource for EnrolledGe {
    fn identity(&mut self) -> Result<(SigningIdentity, TrustAnchor), Error> {
        Ok((SigningIdentity::new(&self.seed, self.certificate.clone())?, self.trust))
    }
    fn group_keys(&mut self) -> Result<GroupKeyring, Error> {
        Ok(self.keys.clone())
    }
}

//! The GMS's TLS: its own certificate authority (ECDSA P-256, kept sealed in the database so
//! that several GMS instances share it), the server certificate (ECDSA P-256: browsers do not
//! accept Ed25519 server certificates), and the X.509 client certificates GEs use for mutual
//! TLS 1.3 with the Ed25519 key they generated at enrollment.

use crate::error::{GmsError, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_ED25519,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fmt;
use std::sync::Arc;
use time::OffsetDateTime;

const CA_NAME: &str = "GSCIP GMS CA";

fn tls_err(what: &str, e: impl fmt::Display) -> GmsError {
    GmsError::Internal(format!("{what}: {e}"))
}

fn at(unix: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix as i64).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

/// The GMS certificate authority for TLS.
pub struct TlsAuthority {
    key: KeyPair,
    issuer: rcgen::Certificate,
    /// The CA certificate as distributed to GEs and administrators.
    pub ca_pem: String,
}

impl fmt::Debug for TlsAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAuthority").finish_non_exhaustive()
    }
}

/// A GE's raw Ed25519 public key as rcgen's subject key.
struct Ed25519Public<'a>(&'a [u8]);

impl PublicKeyData for Ed25519Public<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.0
    }
    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ED25519
    }
}

impl TlsAuthority {
    /// A new CA: returns it with its private key as PEM (to be sealed and stored).
    pub fn generate(now: u64) -> Result<(Self, zeroize::Zeroizing<String>)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| tls_err("CA key", e))?;
        let mut p = ca_params();
        p.not_before = at(now.saturating_sub(86_400));
        p.not_after = at(now + 20 * 365 * 86_400);
        let cert = p.self_signed(&key).map_err(|e| tls_err("CA certificate", e))?;
        let key_pem = zeroize::Zeroizing::new(key.serialize_pem());
        let ca_pem = cert.pem();
        Ok((Self::load(&key_pem, ca_pem)?, key_pem))
    }

    /// The CA from its stored private key and certificate.
    pub fn load(key_pem: &str, ca_pem: String) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| tls_err("stored CA key", e))?;
        // rcgen signs with the issuer's name and key; the issuer object is rebuilt from them.
        let issuer = ca_params().self_signed(&key).map_err(|e| tls_err("CA certificate", e))?;
        Ok(TlsAuthority { key, issuer, ca_pem })
    }

    /// A server certificate for `names` (DNS names or IP addresses) and its key.
    pub fn server_identity(
        &self,
        names: &[String],
        now: u64,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let mut sans = Vec::new();
        for n in names {
            sans.push(match n.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    n.clone()
                        .try_into()
                        .map_err(|_| GmsError::Configuration(format!("TLS name {n:?} is not a DNS name")))?,
                ),
            });
        }
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names.first().cloned().unwrap_or_else(|| "gmsd".into()));
        p.distinguished_name = dn;
        p.subject_alt_names = sans;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        p.not_before = at(now.saturating_sub(86_400));
        p.not_after = at(now + 2 * 365 * 86_400);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| tls_err("server key", e))?;
        let cert = p.signed_by(&key, &self.issuer, &self.key).map_err(|e| tls_err("server certificate", e))?;
        let key_der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| tls_err("server key", e))?;
        Ok((vec![cert.der().clone()], key_der))
    }

    /// A client certificate for an enrolled GE's Ed25519 public key: (PEM, DER).
    pub fn issue_client(&self, ge: &str, public_key: &[u8; 32], now: u64) -> Result<(String, Vec<u8>)> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, ge);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = at(now.saturating_sub(3600));
        p.not_after = at(now + 5 * 365 * 86_400);
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| GmsError::Internal("no randomness".into()))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = p
            .signed_by(&Ed25519Public(public_key), &self.issuer, &self.key)
            .map_err(|e| tls_err("client certificate", e))?;
        Ok((cert.pem(), cert.der().to_vec()))
    }

    /// The server's rustls configuration: TLS 1.3; a client certificate is optional at the
    /// TLS layer (administrators use tokens) and, when given, must chain to this CA.
    pub fn server_config(&self, names: &[String], now: u64) -> Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            roots.add(c.map_err(|e| tls_err("CA", e))?).map_err(|e| tls_err("CA", e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| tls_err("client verifier", e))?;
        let (chain, key) = self.server_identity(names, now)?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| tls_err("TLS", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .map_err(|e| tls_err("server certificate", e))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

/// SHA-256 (hex) of a certificate's DER: how the GMS recognises a GE's client certificate.
pub fn cert_hash(der: &[u8]) -> String {
    gscip_gms_client::api::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

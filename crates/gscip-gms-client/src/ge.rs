//! A GE's side of the GMS: its state directory (identity seed, client certificate, GMS CA, the
//! last state received) and the [`KeySource`] that keeps working on cached keys while the GMS
//! is unreachable.
//!
//! Files in the state directory (secret ones are written with mode 0600, atomically):
//! `identity.seed` (hex Ed25519 seed), `client.pem`, `state.json` (includes group keys).

use crate::api::{self, GeState, GeStatus};
use crate::client::{self, ClientError, GeClient};
use gscip_core::group::{GroupId, GroupKey, GroupKeyring};
use gscip_core::identity::{SigningIdentity, TrustAnchor};
use gscip_core::keysource::KeySource;
use gscip_core::Error;
use gscip_wire::dprp::CertificateRepr;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where a GE finds its GMS.
#[derive(Debug, Clone)]
pub struct GmsEndpoint {
    /// `https://host:port`.
    pub url: String,
    /// The GMS CA certificate (PEM), distributed with the enrollment token.
    pub ca_pem: String,
}

/// A GE's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
}

fn config_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Configuration(format!("{what}: {e}"))
}

/// Writes `data` to `path` atomically with mode 0600.
pub fn write_secret(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateDir { path: path.into() }
    }
    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn is_enrolled(&self) -> bool {
        self.file("identity.seed").exists() && self.file("client.pem").exists()
    }

    /// The identity seed.
    pub fn seed(&self) -> Result<Zeroizing<[u8; 32]>, Error> {
        let text = Zeroizing::new(
            std::fs::read_to_string(self.file("identity.seed")).map_err(|e| config_err("identity.seed", e))?,
        );
        let bytes = Zeroizing::new(
            api::unhex(text.trim(), 32)
                .ok_or_else(|| Error::Configuration("identity.seed: not 32 bytes of hex".into()))?,
        );
        let mut seed = Zeroizing::new([0u8; 32]);
        seed.copy_from_slice(&bytes);
        Ok(seed)
    }

    pub fn client_certificate(&self) -> Result<String, Error> {
        std::fs::read_to_string(self.file("client.pem")).map_err(|e| config_err("client.pem", e))
    }

    /// Enrolls with a one-time token unless already enrolled: generates the Ed25519 key here
    /// (it never leaves this directory), proves possession, stores the client certificate.
    pub fn ensure_enrolled(&self, gms: &GmsEndpoint, name: &str, token: &str) -> Result<(), EnrollError> {
        if self.is_enrolled() {
            return Ok(());
        }
        // Only the daemon's user may list the directory that holds its private key.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.path)
            .map_err(|e| EnrollError::Local(config_err("state directory", e)))?;
        let mut seed = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut seed[..])
            .map_err(|_| EnrollError::Local(Error::Configuration("no randomness".into())))?;
        let cert = client::enroll(&gms.url, &gms.ca_pem, name, token, &seed).map_err(EnrollError::Gms)?;
        write_secret(&self.file("identity.seed"), Zeroizing::new(api::hex(&seed[..])).as_bytes())
            .map_err(|e| EnrollError::Local(config_err("identity.seed", e)))?;
        write_secret(&self.file("client.pem"), cert.as_bytes())
            .map_err(|e| EnrollError::Local(config_err("client.pem", e)))?;
        Ok(())
    }

    /// A client for the enrolled GE.
    pub fn client(&self, gms: &GmsEndpoint) -> Result<GeClient, EnrollError> {
        let seed = self.seed().map_err(EnrollError::Local)?;
        let cert = self.client_certificate().map_err(EnrollError::Local)?;
        GeClient::new(&gms.url, &gms.ca_pem, &cert, &seed).map_err(EnrollError::Gms)
    }

    /// The last state received, if any.
    pub fn cached_state(&self) -> Result<Option<GeState>, Error> {
        let path = self.file("state.json");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                serde_json::from_str(&text).map(Some).map_err(|e| config_err("state.json", e))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(config_err("state.json", e)),
        }
    }

    pub fn store_state(&self, state: &GeState) -> Result<(), Error> {
        let text = Zeroizing::new(serde_json::to_string(state).map_err(|e| config_err("state.json", e))?);
        write_secret(&self.file("state.json"), text.as_bytes()).map_err(|e| config_err("state.json", e))
    }
}

/// Why enrollment or connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(transparent)]
    Gms(ClientError),
    #[error(transparent)]
    Local(Error),
}

/// A GE's credentials built from a state: identity, trust anchor and the keys valid at `now`.
#[derive(Debug)]
pub struct Credentials {
    pub identity: SigningIdentity,
    pub trust: TrustAnchor,
    pub keys: GroupKeyring,
    /// The next moment a held key's grace period ends (then the keyring shrinks).
    pub next_expiry: Option<u64>,
}

impl Credentials {
    /// The (group, version) pairs held: what changes when keys change.
    pub fn key_ids(&self) -> Vec<(u16, u32)> {
        self.keys.iter().map(|k| (k.group.0, k.version)).collect()
    }
}

/// Builds credentials from a state; keys whose grace period has ended at `now_unix_s` are left
/// out, and a revoked GE holds no keys.
pub fn credentials(state: &GeState, seed: &Zeroizing<[u8; 32]>, now_unix_s: u64) -> Result<Credentials, Error> {
    let cert_bytes =
        api::unhex_any(&state.certificate).ok_or_else(|| Error::Configuration("certificate: not hex".into()))?;
    let cert = CertificateRepr::parse(&cert_bytes).map_err(|e| config_err("GMS certificate", e))?;
    let gms_key = api::unhex(&state.gms_public_key, 32)
        .ok_or_else(|| Error::Configuration("GMS public key: not 32 bytes of hex".into()))?;
    let mut trust = TrustAnchor { gms_public_key: [0; 32] };
    trust.gms_public_key.copy_from_slice(&gms_key);
    let identity = SigningIdentity::new(seed, cert)?;
    let mut keys = GroupKeyring::new();
    let mut next_expiry: Option<u64> = None;
    if state.status == GeStatus::Active {
        for k in &state.keys {
            if k.expires.is_some_and(|e| e <= now_unix_s) || k.group == 0 {
                continue;
            }
            if let Some(e) = k.expires {
                next_expiry = Some(next_expiry.map_or(e, |n| n.min(e)));
            }
            let material = Zeroizing::new(
                api::unhex(&k.key, 32).ok_or_else(|| Error::Configuration("group key: not 32 bytes of hex".into()))?,
            );
            let mut m = [0u8; 32];
            m.copy_from_slice(&material);
            keys.insert(GroupKey::new(GroupId(k.group), k.version, m));
            zeroize::Zeroize::zeroize(&mut m);
        }
    }
    Ok(Credentials { identity, trust, keys, next_expiry })
}

/// The current Unix time in seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The GMS as a [`KeySource`]: the state comes from the GMS when it answers, else from the
/// cache in the state directory (the GE keeps working while the GMS is down).
#[derive(Debug)]
pub struct GmsKeySource {
    pub dir: StateDir,
    pub gms: GmsEndpoint,
    /// Whether the last fetch came from the cache.
    pub from_cache: bool,
}

impl GmsKeySource {
    pub fn new(dir: StateDir, gms: GmsEndpoint) -> Self {
        GmsKeySource { dir, gms, from_cache: false }
    }

    /// Fetches the state (falling back to the cache) and stores it.
    pub fn fetch(&mut self) -> Result<GeState, Error> {
        let fetched = self.dir.client(&self.gms).map_err(|e| Error::Configuration(e.to_string())).and_then(|c| {
            c.state().map_err(|e| match e {
                ClientError::Refused { status, ref message, .. } if (400..500).contains(&status) => {
                    Error::Configuration(format!("the GMS refused this GE: {message}"))
                }
                other => Error::Configuration(other.to_string()),
            })
        });
        match fetched {
            Ok(state) => {
                self.dir.store_state(&state)?;
                self.from_cache = false;
                Ok(state)
            }
            Err(e) => match self.dir.cached_state()? {
                Some(state) => {
                    self.from_cache = true;
                    Ok(state)
                }
                None => Err(Error::Configuration(format!("no cached GMS state and the GMS is unavailable: {e}"))),
            },
        }
    }

    pub fn credentials(&mut self) -> Result<Credentials, Error> {
        let state = self.fetch()?;
        credentials(&state, &self.dir.seed()?, unix_now())
    }
}

impl KeySource for GmsKeySource {
    fn identity(&mut self) -> Result<(SigningIdentity, TrustAnchor), Error> {
        let c = self.credentials()?;
        Ok((c.identity, c.trust))
    }
    fn group_keys(&mut self) -> Result<GroupKeyring, Error> {
        Ok(self.credentials()?.keys)
    }
}

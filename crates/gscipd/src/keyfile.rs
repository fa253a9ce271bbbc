//! The local key file: a GE's identity seed, its GMS certificate, the GMS trust anchor and its
//! group keys, as hex in TOML. It is secret: written with mode 0600, never logged. The GMS
//! client (issue "gmsd") replaces it as the daemon's [`KeySource`].

use gscip_core::group::{GroupId, GroupKey, GroupKeyring};
use gscip_core::identity::{SigningIdentity, TrustAnchor};
use gscip_core::keysource::KeySource;
use gscip_core::Error;
use gscip_wire::dprp::CertificateRepr;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, Zeroizing};

#[derive(Serialize, Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
#[zeroize(drop)]
struct GroupKeyEntry {
    group: u16,
    version: u32,
    key: String,
}

#[derive(Serialize, Deserialize, Zeroize)]
#[serde(deny_unknown_fields)]
#[zeroize(drop)]
struct KeyFileText {
    identity_seed: String,
    certificate: String,
    gms_public_key: String,
    #[serde(default)]
    group_key: Vec<GroupKeyEntry>,
}

use gscip_gms_client::api::hex;

fn unhex(s: &str, what: &str) -> Result<Vec<u8>, Error> {
    gscip_gms_client::api::unhex_any(s).ok_or_else(|| Error::Configuration(format!("key file: {what} is not hex")))
}

fn arr32(s: &str, what: &str) -> Result<Zeroizing<[u8; 32]>, Error> {
    let v = Zeroizing::new(unhex(s, what)?);
    let mut a = Zeroizing::new([0u8; 32]);
    if v.len() != 32 {
        return Err(Error::Configuration(format!("key file: {what} must be 32 bytes")));
    }
    a.copy_from_slice(&v);
    Ok(a)
}

/// A key file on disk.
#[derive(Debug, Clone)]
pub struct KeyFile {
    pub path: PathBuf,
}

impl KeyFile {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        KeyFile { path: path.into() }
    }

    /// Writes a key file (mode 0600).
    pub fn write(
        path: &Path,
        seed: &Zeroizing<[u8; 32]>,
        certificate: &CertificateRepr,
        trust: &TrustAnchor,
        keys: &GroupKeyring,
    ) -> std::io::Result<()> {
        let mut cert = Vec::new();
        certificate.emit(&mut cert);
        let text = KeyFileText {
            identity_seed: hex(&seed[..]),
            certificate: hex(&cert),
            gms_public_key: hex(&trust.gms_public_key),
            group_key: keys
                .iter()
                .map(|k| GroupKeyEntry { group: k.group.0, version: k.version, key: hex(k.secret_for_storage()) })
                .collect(),
        };
        let body = Zeroizing::new(toml::to_string(&text).map_err(std::io::Error::other)?);
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
        f.write_all(body.as_bytes())
    }

    fn read(&self) -> Result<KeyFileText, Error> {
        let text = Zeroizing::new(
            std::fs::read_to_string(&self.path)
                .map_err(|e| Error::Configuration(format!("key file {}: {e}", self.path.display())))?,
        );
        toml::from_str(&text).map_err(|e| Error::Configuration(format!("key file {}: {e}", self.path.display())))
    }
}

impl KeySource for KeyFile {
    fn identity(&mut self) -> Result<(SigningIdentity, TrustAnchor), Error> {
        let t = self.read()?;
        let seed = arr32(&t.identity_seed, "identity_seed")?;
        let cert = CertificateRepr::parse(&unhex(&t.certificate, "certificate")?)
            .map_err(|e| Error::Configuration(format!("key file: certificate: {e}")))?;
        let gms = arr32(&t.gms_public_key, "gms_public_key")?;
        Ok((SigningIdentity::new(&seed, cert)?, TrustAnchor { gms_public_key: *gms }))
    }

    fn group_keys(&mut self) -> Result<GroupKeyring, Error> {
        let t = self.read()?;
        let mut ring = GroupKeyring::new();
        for k in &t.group_key {
            if k.group == 0 {
                return Err(Error::Configuration("key file: group 0 does not exist".into()));
            }
            let key = arr32(&k.key, "group key")?;
            ring.insert(GroupKey::new(GroupId(k.group), k.version, *key));
        }
        Ok(ring)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gscip_core::identity::CertificateAuthority;
    use gscip_core::{GeKind, Mode};

    #[test]
    fn write_then_read_back() {
        let ca = CertificateAuthority::from_seed(&Zeroizing::new([1; 32])).unwrap();
        let seed = Zeroizing::new([2; 32]);
        let pk = SigningIdentity::public_key_for_seed(&seed).unwrap();
        let cert = ca.issue(GeKind::Ges, Mode::Open, "ges1", &[GroupId(3)], pk, 4_000_000_000).unwrap();
        let mut keys = GroupKeyring::new();
        keys.insert(GroupKey::new(GroupId(3), 7, [9; 32]));
        let dir = std::env::temp_dir().join(format!("gscipd-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ges1.keys");
        KeyFile::write(&path, &seed, &cert, &ca.trust_anchor(), &keys).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut kf = KeyFile::new(&path);
        let (id, trust) = kf.identity().unwrap();
        assert_eq!(id.certificate(), &cert);
        assert_eq!(trust, ca.trust_anchor());
        assert!(kf.group_keys().unwrap().get(GroupId(3), 7).is_some());
        std::fs::write(&path, "identity_seed = \"zz\"\ncertificate = \"\"\ngms_public_key = \"\"\n").unwrap();
        assert!(kf.identity().unwrap_err().to_string().contains("not hex"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

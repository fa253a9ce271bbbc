//! Secrets at rest: group keys and the GMS's own private keys are stored in the database sealed
//! with AES-256-GCM under a master key kept outside the database (a file, mode 0600). The
//! associated data names the row, so a sealed value moved to another row does not open.

use crate::error::{GmsError, Result};
use aws_lc_rs::aead::{Aad, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use std::fmt;
use std::path::Path;
use zeroize::Zeroizing;

pub struct MasterKey {
    key: RandomizedNonceKey,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self> {
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes)
            .map_err(|_| GmsError::Configuration("master key rejected".into()))?;
        Ok(MasterKey { key })
    }

    /// Reads the master key file (64 hex digits), creating it (mode 0600) if `create` and it
    /// does not exist.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let text = Zeroizing::new(text);
                let bytes = Zeroizing::new(gscip_gms_client::api::unhex(text.trim(), 32).ok_or_else(|| {
                    GmsError::Configuration(format!("master key file {}: not 64 hex digits", path.display()))
                })?);
                let mut k = Zeroizing::new([0u8; 32]);
                k.copy_from_slice(&bytes);
                Self::from_bytes(&k)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let mut k = Zeroizing::new([0u8; 32]);
                aws_lc_rs::rand::fill(&mut k[..]).map_err(|_| GmsError::Internal("no randomness".into()))?;
                let text = Zeroizing::new(gscip_gms_client::api::hex(&k[..]));
                gscip_gms_client::ge::write_secret(path, text.as_bytes())
                    .map_err(|e| GmsError::Configuration(format!("master key file {}: {e}", path.display())))?;
                Self::from_bytes(&k)
            }
            Err(e) => Err(GmsError::Configuration(format!(
                "master key file {}: {e} (the database holds sealed secrets; without the master key they cannot be opened)",
                path.display()
            ))),
        }
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad.as_bytes()), &mut *buf)
            .map_err(|_| GmsError::Internal("sealing failed".into()))?;
        let mut out = nonce.as_ref().to_vec();
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(GmsError::Internal(format!("sealed {aad}: too short")));
        }
        let nonce = aws_lc_rs::aead::Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN])
            .map_err(|_| GmsError::Internal("bad nonce".into()))?;
        let mut buf = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| GmsError::Internal(format!("sealed {aad} does not open under this master key")))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_row_binding() {
        let m = MasterKey::from_bytes(&[7; 32]).unwrap();
        let s = m.seal("group-key/1/1", b"secret").unwrap();
        assert_eq!(&m.open("group-key/1/1", &s).unwrap()[..], b"secret");
        assert!(m.open("group-key/1/2", &s).is_err(), "moved to another row");
        assert!(MasterKey::from_bytes(&[8; 32]).unwrap().open("group-key/1/1", &s).is_err());
        assert!(m.open("x", &s[..10]).is_err());
        assert!(!format!("{m:?}").contains('7'));
    }
}

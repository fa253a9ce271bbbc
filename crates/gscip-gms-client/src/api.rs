//! The GMS API's request and response bodies (JSON), shared by `gmsd`, `gscipd`, `gscip admin`
//! and the lab. `docs/gms.md` and the OpenAPI document `gmsd` serves describe them.

use serde::{Deserialize, Serialize};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A communication group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: u16,
    pub name: String,
    /// The newest key version (0 before the first key exists).
    pub key_version: u32,
    /// Unix seconds.
    pub created: u64,
    /// GEs that are members.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    /// The group number (1..=65535); the lowest free one when absent.
    #[serde(default)]
    pub id: Option<u16>,
    pub name: String,
}

/// A GE's enrollment state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GeStatus {
    /// Defined by the administrator, not yet enrolled.
    Pending,
    /// Enrolled: it holds a certificate and gets keys.
    Active,
    /// Revoked: its certificate is no longer accepted and it gets no keys.
    Revoked,
}

impl GeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GeStatus::Pending => "pending",
            GeStatus::Active => "active",
            GeStatus::Revoked => "revoked",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => GeStatus::Pending,
            "active" => GeStatus::Active,
            "revoked" => GeStatus::Revoked,
            _ => return None,
        })
    }
}

/// A GSCIP element as the GMS knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ge {
    pub name: String,
    /// ges, gen, gea (gnat, gsra later).
    pub kind: String,
    /// open or closed.
    pub mode: String,
    pub groups: Vec<u16>,
    pub status: GeStatus,
    /// Hex Ed25519 public key, once enrolled.
    pub public_key: Option<String>,
    pub created: u64,
    pub enrolled: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewGe {
    pub name: String,
    pub kind: String,
    pub mode: String,
    #[serde(default)]
    pub groups: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memberships {
    pub groups: Vec<u16>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// How long the token stays valid (default 86,400 s, at most 30 days).
    #[serde(default)]
    pub valid_seconds: Option<u64>,
}

/// A one-time enrollment token. Shown once; the GMS keeps only its hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrollmentToken {
    pub ge: String,
    pub token: String,
    pub expires: u64,
}

impl fmt::Debug for EnrollmentToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollmentToken").field("ge", &self.ge).field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// One version of a group key, without its material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    pub group: u16,
    pub version: u32,
    pub created: u64,
    /// When GEs stop accepting it (None: the current version).
    pub expires: Option<u64>,
    /// Why it was created: initial, scheduled, manual, leave, revoke.
    pub reason: String,
}

/// The rotation schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationInfo {
    /// Daily rotation time, "HH:MM" UTC.
    pub daily_at: String,
    /// Seconds a replaced key stays valid after a scheduled or manual rotation.
    pub grace_seconds: u64,
    /// The next scheduled rotation (Unix seconds).
    pub next: u64,
}

/// One audit log entry: who changed what, when, before and after (never key material).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: u64,
    pub actor: String,
    pub action: String,
    pub object: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// A NAT access-control entry (for the GNAT work to come): which group may reach which inside
/// address and port behind a GNAT.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatAce {
    pub id: i64,
    pub gnat: String,
    pub group: u16,
    pub inside_address: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNatAce {
    pub gnat: String,
    pub group: u16,
    pub inside_address: String,
    pub protocol: String,
    pub port: u16,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub name: String,
    pub password: String,
}

impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login").field("name", &self.name).finish_non_exhaustive()
    }
}

/// An administrator API token. Shown once; the GMS keeps only its hash.
#[derive(Clone, Serialize, Deserialize)]
pub struct AdminToken {
    pub token: String,
    pub expires: u64,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminToken").field("expires", &self.expires).finish_non_exhaustive()
    }
}

/// One cell of the reachability matrix: what a flow from `from` to `to` gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixCell {
    pub from: String,
    pub to: String,
    /// protected, plaintext or discarded.
    pub outcome: String,
    pub group: Option<u16>,
}

/// Every error body: a message for people and the party at fault.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// client (the request), auth, conflict, not_found, server.
    pub fault: String,
}

// ----- the GE side ---------------------------------------------------------------------------

/// Context string of the enrollment proof signature.
pub const ENROLL_CONTEXT: &[u8] = b"gscip-enroll-v1";

/// A GE's enrollment: it proves possession of its Ed25519 key by signing
/// `ENROLL_CONTEXT || name || 0 || token || public_key`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub name: String,
    pub token: String,
    /// Hex, 32 bytes.
    pub public_key: String,
    /// Hex, 64 bytes.
    pub proof: String,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest")
            .field("name", &self.name)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

/// The bytes an enrollment proof signs.
pub fn enroll_message(name: &str, token: &str, public_key: &[u8]) -> Vec<u8> {
    [ENROLL_CONTEXT, name.as_bytes(), &[0], token.as_bytes(), public_key].concat()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The X.509 client certificate (PEM) for mutual TLS with the GE's own key.
    pub client_certificate: String,
}

/// A group key version as a GE receives it. Zeroized on drop, never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct GroupKeyMaterial {
    #[zeroize(skip)]
    pub group: u16,
    #[zeroize(skip)]
    pub version: u32,
    /// Hex, 32 bytes.
    pub key: String,
    /// When to stop using it (None: current).
    #[zeroize(skip)]
    pub expires: Option<u64>,
}

impl fmt::Debug for GroupKeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "GroupKeyMaterial {{ group: {}, version: {}, expires: {:?}, key: <redacted> }}",
            self.group, self.version, self.expires
        )
    }
}

/// Everything a GE needs from the GMS: its GE information and its group keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GeState {
    /// The GMS's change counter: a GE long-polls for a revision after this one.
    pub revision: i64,
    pub name: String,
    pub kind: String,
    pub mode: String,
    pub status: GeStatus,
    pub groups: Vec<u16>,
    /// The GMS-signed DPRP certificate (hex), see docs/wire.md.
    pub certificate: String,
    /// The GMS's Ed25519 public key (hex): the trust anchor for DPRP certificates.
    pub gms_public_key: String,
    pub keys: Vec<GroupKeyMaterial>,
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Parses hex of any even length.
pub fn unhex_any(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// Parses hex of exactly `len` bytes.
pub fn unhex(s: &str, len: usize) -> Option<Vec<u8>> {
    if s.len() != len * 2 {
        return None;
    }
    unhex_any(s)
}

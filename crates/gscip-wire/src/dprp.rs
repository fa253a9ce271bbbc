//! DPRP control messages: DDE, RGI, MPIT and CDN (version 1).
//!
//! Every message travels as the payload of a UDP datagram between the flow's own endpoint
//! addresses (source and destination port [`DPRP_PORT`]), so it takes the flow's route and
//! every GE on that route sees it while forwarding. The layout is specified in `docs/wire.md`.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      'G'      |      'S'      |  Version = 1  |     Type      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     Flags     |   Reserved    |        Message length         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Negotiation nonce (128 bits) ...               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Family (4|6) |   Protocol    |         CID source port       |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     CID destination port      | CID source address (4|16) ... |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  ... CID destination address (4|16) ... | Body ...            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::cid::{Cid, L4Proto};
use crate::{be16, be32, be64, need, Result, WireError};
use std::net::IpAddr;

/// UDP port of DPRP messages (source and destination).
pub const DPRP_PORT: u16 = 4398;
pub const MAGIC: [u8; 2] = *b"GS";
pub const VERSION: u8 = 1;
/// Length of the fixed part of the header before the CID.
pub const FIXED_HEADER_LEN: usize = 24;
/// Flag on a DDE that travels from the CID's destination toward its source and asks the GE
/// nearest the source to start a fresh negotiation (a GE that met a packet of a flow it does not
/// know, e.g. after it restarted).
pub const FLAG_RESTART: u8 = 0x01;
/// Flag set by the initiator: the GEs of the path make their path keys from this negotiation
/// (each pair that checked each other's record by signature in it), and from no other, so that
/// both ends of a pair make the same key (docs/dprp.md section 11). Covered by every record's
/// signature (the chain's seed). The other flag bits are reserved and sent as zero.
pub const FLAG_PATH_KEYS: u8 = 0x02;
/// Limits that keep a hostile message from asking for much memory.
pub const MAX_RECORDS: usize = 32;
pub const MAX_PROOFS: usize = 64;
pub const MAX_GROUPS: usize = 255;
pub const MAX_NAME_LEN: usize = 63;
pub const NONCE_LEN: usize = 16;
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;
pub const PROOF_TAG_LEN: usize = 16;
pub const CHAIN_LEN: usize = 32;
/// Most path-key MACs one record or CDN carries (one per GE expected to verify it).
pub const MAX_MACS: usize = 8;
pub const MAC_KEY_ID_LEN: usize = 8;
pub const MAC_TAG_LEN: usize = 16;

/// The four DPRP messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// Detect Destination End GE: from the initiator toward the far end of the flow.
    Dde = 1,
    /// Report GE Information: from the end GE back; every GE appends its record.
    Rgi = 2,
    /// Make PIT: the full authenticated path, toward the far end; entries become provisional.
    Mpit = 3,
    /// Complete DPRP Negotiation: the end GE's confirmation; entries become final.
    Cdn = 4,
}

impl MessageType {
    fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => MessageType::Dde,
            2 => MessageType::Rgi,
            3 => MessageType::Mpit,
            4 => MessageType::Cdn,
            _ => return Err(WireError::Malformed("unknown DPRP message type")),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Dde => "DDE",
            MessageType::Rgi => "RGI",
            MessageType::Mpit => "MPIT",
            MessageType::Cdn => "CDN",
        }
    }
}

/// The kinds of GSCIP element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GeKind {
    Ges = 1,
    Gen = 2,
    Gea = 3,
    Gnat = 4,
    Gsra = 5,
}

impl GeKind {
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            1 => GeKind::Ges,
            2 => GeKind::Gen,
            3 => GeKind::Gea,
            4 => GeKind::Gnat,
            5 => GeKind::Gsra,
            _ => return Err(WireError::Malformed("unknown GE kind")),
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GeKind::Ges => "ges",
            GeKind::Gen => "gen",
            GeKind::Gea => "gea",
            GeKind::Gnat => "gnat",
            GeKind::Gsra => "gsra",
        }
    }
}

/// A GE's mode: closed GEs refuse anything not protected by a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    Closed = 0,
    Open = 1,
}

impl Mode {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Mode::Closed),
            1 => Ok(Mode::Open),
            _ => Err(WireError::Malformed("unknown mode")),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
        }
    }
}

/// Where a GE stands relative to a flow (SPEC section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// Neither end is inside what it protects.
    Transit = 0,
    /// The CID's source is inside what it protects.
    Source = 1,
    /// The CID's destination is inside what it protects.
    Destination = 2,
}

impl Side {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Side::Transit),
            1 => Ok(Side::Source),
            2 => Ok(Side::Destination),
            _ => Err(WireError::Malformed("unknown side")),
        }
    }
}

/// AEAD algorithm bits used in records.
pub mod aead_bits {
    pub const AES_256_GCM: u8 = 0x01;
    pub const CHACHA20_POLY1305: u8 = 0x02;
}

fn check_name(name: &[u8]) -> Result<&str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(WireError::Malformed("GE name length out of range"));
    }
    if !name.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        return Err(WireError::Malformed("GE name has characters outside [A-Za-z0-9._-]"));
    }
    // Checked ASCII above, so this cannot fail.
    std::str::from_utf8(name).map_err(|_| WireError::Malformed("GE name is not UTF-8"))
}

/// A cursor that reads without panicking.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(b: &'a [u8]) -> Self {
        Reader { b, at: 0 }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        need(&self.b[self.at..], n)?;
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(be16(self.take(2)?, 0))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(be32(self.take(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(be64(self.take(8)?, 0))
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn rest(&self) -> usize {
        self.b.len() - self.at
    }
    /// The next byte, if any, without taking it.
    fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }
}

fn ip_from(bytes: &[u8]) -> IpAddr {
    if bytes.len() == 4 {
        IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(bytes);
        IpAddr::from(a)
    }
}

fn push_ip(out: &mut Vec<u8>, a: IpAddr) {
    match a {
        IpAddr::V4(a) => out.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// A GE's certificate, issued and signed by the GMS: the GE information of the seeds plus the
/// GE's Ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct CertificateRepr {
    pub kind: GeKind,
    pub mode: Mode,
    pub name: String,
    /// Member groups, sorted and unique.
    pub groups: Vec<u16>,
    pub public_key: [u8; PUBLIC_KEY_LEN],
    /// Expiry, seconds since the Unix epoch.
    pub not_after: u64,
    pub gms_signature: [u8; SIGNATURE_LEN],
}

impl core::fmt::Debug for CertificateRepr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CertificateRepr")
            .field("kind", &self.kind)
            .field("mode", &self.mode)
            .field("name", &self.name)
            .field("groups", &self.groups)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateRepr {
    pub const VERSION: u8 = 1;

    /// The bytes the GMS signs: the encoding without the signature.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.name.len() + 2 * self.groups.len());
        out.push(Self::VERSION);
        out.push(self.kind as u8);
        out.push(self.mode as u8);
        out.push(self.name.len() as u8);
        out.extend_from_slice(self.name.as_bytes());
        out.push(self.groups.len() as u8);
        for g in &self.groups {
            out.extend_from_slice(&g.to_be_bytes());
        }
        out.extend_from_slice(&self.public_key);
        out.extend_from_slice(&self.not_after.to_be_bytes());
        out
    }

    /// Checks the invariants a parsed certificate has, for certificates built in code.
    pub fn validate(&self) -> Result<()> {
        check_name(self.name.as_bytes())?;
        if self.groups.len() > MAX_GROUPS {
            return Err(WireError::Malformed("too many groups"));
        }
        if self.groups.windows(2).any(|w| w[0] >= w[1]) || self.groups.contains(&0) {
            return Err(WireError::Malformed("groups must be sorted, unique and non-zero"));
        }
        Ok(())
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_be_signed());
        out.extend_from_slice(&self.gms_signature);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let v = r.u8()?;
        if v != Self::VERSION {
            return Err(WireError::UnsupportedVersion(v));
        }
        let kind = GeKind::from_u8(r.u8()?)?;
        let mode = Mode::from_u8(r.u8()?)?;
        let nl = usize::from(r.u8()?);
        let name = check_name(r.take(nl)?)?.to_owned();
        let gc = usize::from(r.u8()?);
        let mut groups = Vec::with_capacity(gc);
        for _ in 0..gc {
            groups.push(r.u16()?);
        }
        let public_key = r.array()?;
        let not_after = r.u64()?;
        let gms_signature = r.array()?;
        let c = CertificateRepr { kind, mode, name, groups, public_key, not_after, gms_signature };
        c.validate()?;
        Ok(c)
    }

    pub fn parse(buf: &[u8]) -> Result<Self> {
        let mut r = Reader::new(buf);
        let c = Self::read(&mut r)?;
        if r.rest() != 0 {
            return Err(WireError::Malformed("bytes after certificate"));
        }
        Ok(c)
    }
}

/// A proof of membership in one group: an HMAC under that group's key (one key version),
/// bound to the negotiation (see `docs/dprp.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofRepr {
    pub group: u16,
    pub key_version: u32,
    pub tag: [u8; PROOF_TAG_LEN],
}

/// A record's or CDN's authenticator for one verifier: an HMAC under a path key that the
/// author and that verifier derived from an earlier negotiation (`docs/dprp.md` section 11).
/// It never replaces the signature, which every record and CDN still carries: a verifier that
/// holds the key may check the MAC instead of the signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMac {
    pub key_id: [u8; MAC_KEY_ID_LEN],
    pub tag: [u8; MAC_TAG_LEN],
}

/// Writes a non-empty MAC list (count, then the MACs); writes nothing for an empty one.
fn emit_macs(out: &mut Vec<u8>, macs: &[RecordMac]) {
    if macs.is_empty() {
        return;
    }
    out.push(macs.len() as u8);
    for m in macs {
        out.extend_from_slice(&m.key_id);
        out.extend_from_slice(&m.tag);
    }
}

/// Reads the optional MAC list that may follow a signature: absent, or a count of 1 to
/// [`MAX_MACS`] and the MACs (an explicit count of 0 is not canonical and refused).
fn read_macs(r: &mut Reader<'_>) -> Result<Vec<RecordMac>> {
    if r.rest() == 0 {
        return Ok(Vec::new());
    }
    let n = usize::from(r.u8()?);
    if n == 0 || n > MAX_MACS {
        return Err(WireError::Malformed("MAC count not in 1..=8"));
    }
    let mut macs = Vec::with_capacity(n);
    for _ in 0..n {
        macs.push(RecordMac { key_id: r.array()?, tag: r.array()? });
    }
    Ok(macs)
}

/// One GE's information in an RGI or MPIT.
#[derive(Clone, PartialEq, Eq)]
pub struct GeRecordRepr {
    pub certificate: CertificateRepr,
    pub side: Side,
    /// AEAD algorithms the GE accepts ([`aead_bits`]).
    pub aead_supported: u8,
    /// The one it prefers.
    pub aead_preferred: u8,
    /// Idle timeout it proposes for the PIT entry, seconds.
    pub idle_timeout_s: u32,
    pub nonce: [u8; NONCE_LEN],
    /// Its ephemeral X25519 public key for this negotiation.
    pub ephemeral_public: [u8; PUBLIC_KEY_LEN],
    pub proofs: Vec<ProofRepr>,
    /// Ed25519 signature by the certificate's key (see `docs/dprp.md`).
    pub signature: [u8; SIGNATURE_LEN],
    /// Path-key MACs for the GEs the author expects to verify the record (may be empty).
    pub macs: Vec<RecordMac>,
}

impl core::fmt::Debug for GeRecordRepr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GeRecordRepr")
            .field("name", &self.certificate.name)
            .field("side", &self.side)
            .field("groups", &self.certificate.groups)
            .field("proofs", &self.proofs.len())
            .field("macs", &self.macs.len())
            .finish_non_exhaustive()
    }
}

impl GeRecordRepr {
    /// The record's encoding without its length prefix and signature: what the GE signs.
    pub fn to_be_signed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        let mut cert = Vec::with_capacity(160);
        self.certificate.emit(&mut cert);
        out.extend_from_slice(&(cert.len() as u16).to_be_bytes());
        out.extend_from_slice(&cert);
        out.push(self.side as u8);
        out.push(self.aead_supported);
        out.push(self.aead_preferred);
        out.extend_from_slice(&self.idle_timeout_s.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ephemeral_public);
        out.push(self.proofs.len() as u8);
        for p in &self.proofs {
            out.extend_from_slice(&p.group.to_be_bytes());
            out.extend_from_slice(&p.key_version.to_be_bytes());
            out.extend_from_slice(&p.tag);
        }
        out
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let body = self.to_be_signed();
        let macs = if self.macs.is_empty() { 0 } else { 1 + self.macs.len() * (MAC_KEY_ID_LEN + MAC_TAG_LEN) };
        let len = 2 + body.len() + SIGNATURE_LEN + macs;
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&self.signature);
        emit_macs(out, &self.macs);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self> {
        let len = usize::from(r.u16()?);
        if len < 2 {
            return Err(WireError::Malformed("record length below 2"));
        }
        let mut r = Reader::new(r.take(len - 2)?);
        let cl = usize::from(r.u16()?);
        let certificate = CertificateRepr::parse(r.take(cl)?)?;
        let side = Side::from_u8(r.u8()?)?;
        let aead_supported = r.u8()?;
        let aead_preferred = r.u8()?;
        let idle_timeout_s = r.u32()?;
        let nonce = r.array()?;
        let ephemeral_public = r.array()?;
        let pc = usize::from(r.u8()?);
        if pc > MAX_PROOFS {
            return Err(WireError::Malformed("too many proofs"));
        }
        let mut proofs = Vec::with_capacity(pc);
        for _ in 0..pc {
            proofs.push(ProofRepr { group: r.u16()?, key_version: r.u32()?, tag: r.array()? });
        }
        let signature = r.array()?;
        let macs = read_macs(&mut r)?;
        if r.rest() != 0 {
            return Err(WireError::Malformed("bytes after record MACs"));
        }
        Ok(GeRecordRepr {
            certificate,
            side,
            aead_supported,
            aead_preferred,
            idle_timeout_s,
            nonce,
            ephemeral_public,
            proofs,
            signature,
            macs,
        })
    }
}

/// A DDE extension (type-length-value). Types with the high bit set are critical: a GE that
/// does not know one must not answer the DDE. Reserved for extended DPRP (NAT-f): type 0x81,
/// the destination's host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    pub kind: u8,
    pub value: Vec<u8>,
}

impl Extension {
    pub const CRITICAL: u8 = 0x80;
    pub const PEER_NAME: u8 = 0x81;
    /// Not critical: the names of the GEs the initiator expects on the path (itself first),
    /// from its last negotiation toward the destination, so that GEs can MAC their records
    /// for them ([`encode_path_hint`], `docs/dprp.md` section 11).
    pub const PATH_HINT: u8 = 0x02;
    /// Not critical: the initiator's ephemeral X25519 public key (32 bytes), the one its record
    /// will carry, so that the end GE can compute the pair's agreement while it waits for the
    /// MPIT ([`parse_ephemeral_key`], `docs/dprp.md` section 12).
    pub const INITIATOR_EPHEMERAL: u8 = 0x03;
    /// Not critical: an ephemeral X25519 public key (32 bytes) the end GE keeps for the
    /// initiator's next negotiation toward it. In a CDN, the end GE announces it; in a later
    /// DDE, the initiator names it (it has computed the pair's agreement with it while waiting
    /// for the RGI), and the end GE puts it in its record if it still holds it
    /// ([`parse_ephemeral_key`], `docs/dprp.md` section 14).
    pub const END_EPHEMERAL: u8 = 0x04;
}

/// In a CDN, the byte that introduces its extensions (after the MACs, if any): not a MAC count.
pub const CDN_EXTENSIONS: u8 = 0xFF;

/// Writes an extension list: its total length (`u16`) and the TLVs.
fn emit_extensions(out: &mut Vec<u8>, extensions: &[Extension]) -> Result<()> {
    let mut ext = Vec::new();
    for e in extensions {
        ext.push(e.kind);
        let l = u16::try_from(e.value.len()).map_err(|_| WireError::Malformed("extension too long"))?;
        ext.extend_from_slice(&l.to_be_bytes());
        ext.extend_from_slice(&e.value);
    }
    let l = u16::try_from(ext.len()).map_err(|_| WireError::Malformed("extensions too long"))?;
    out.extend_from_slice(&l.to_be_bytes());
    out.extend_from_slice(&ext);
    Ok(())
}

/// Reads an extension list written by [`emit_extensions`].
fn read_extensions(r: &mut Reader<'_>) -> Result<Vec<Extension>> {
    let n = usize::from(r.u16()?);
    let mut er = Reader::new(r.take(n)?);
    let mut extensions = Vec::new();
    while er.rest() > 0 {
        let kind = er.u8()?;
        let l = usize::from(er.u16()?);
        extensions.push(Extension { kind, value: er.take(l)?.to_vec() });
    }
    Ok(extensions)
}

/// Decodes the value of an ephemeral-key extension ([`Extension::INITIATOR_EPHEMERAL`],
/// [`Extension::END_EPHEMERAL`]): exactly one X25519 public key.
pub fn parse_ephemeral_key(value: &[u8]) -> Result<[u8; PUBLIC_KEY_LEN]> {
    <[u8; PUBLIC_KEY_LEN]>::try_from(value).map_err(|_| WireError::Malformed("an ephemeral key is not 32 bytes"))
}

/// Most names a path hint carries.
pub const MAX_HINT_NAMES: usize = 8;

/// Encodes a path hint's value: each name as a length byte and its bytes. Names that are not
/// valid GE names, and any beyond [`MAX_HINT_NAMES`], are left out.
pub fn encode_path_hint<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut out = Vec::new();
    for name in names.into_iter().filter(|n| check_name(n.as_bytes()).is_ok()).take(MAX_HINT_NAMES) {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
    }
    out
}

/// Decodes a path hint's value (see [`encode_path_hint`]).
pub fn parse_path_hint(value: &[u8]) -> Result<Vec<String>> {
    let mut r = Reader::new(value);
    let mut names = Vec::new();
    while r.rest() > 0 {
        if names.len() == MAX_HINT_NAMES {
            return Err(WireError::Malformed("more than 8 names in a path hint"));
        }
        let l = usize::from(r.u8()?);
        names.push(check_name(r.take(l)?)?.to_owned());
    }
    Ok(names)
}

/// Outcome reported by a CDN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdnStatus {
    /// The end GE reached the same decision over the same path.
    Complete = 0,
    /// The end GE could not verify the path or disagreed: every GE falls back to "no pair".
    Refused = 1,
}

/// The body of a message, by type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Dde {
        extensions: Vec<Extension>,
    },
    Rgi {
        records: Vec<GeRecordRepr>,
    },
    Mpit {
        records: Vec<GeRecordRepr>,
    },
    Cdn {
        status: CdnStatus,
        /// The confirmation hash over the final transcript and the decision.
        confirmation: [u8; CHAIN_LEN],
        signer: String,
        signature: [u8; SIGNATURE_LEN],
        /// Path-key MACs for the GEs on the path (may be empty).
        macs: Vec<RecordMac>,
        /// Hints for the initiator (not signed), e.g. [`Extension::END_EPHEMERAL`]; may be empty.
        extensions: Vec<Extension>,
    },
}

impl Body {
    pub fn message_type(&self) -> MessageType {
        match self {
            Body::Dde { .. } => MessageType::Dde,
            Body::Rgi { .. } => MessageType::Rgi,
            Body::Mpit { .. } => MessageType::Mpit,
            Body::Cdn { .. } => MessageType::Cdn,
        }
    }
}

/// The header fields common to all messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub flags: u8,
    pub nonce: [u8; NONCE_LEN],
    /// The flow, in the direction of the packet that started the negotiation.
    pub cid: Cid,
}

impl HeaderRepr {
    /// The bytes every negotiation's hash chain starts from.
    pub fn chain_seed(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(VERSION);
        out.push(self.flags);
        out.extend_from_slice(&self.nonce);
        emit_cid(&mut out, &self.cid);
        out
    }
    pub fn is_restart(&self) -> bool {
        self.flags & FLAG_RESTART != 0
    }
    /// Whether the initiator marked this negotiation for the path's GEs to make their path
    /// keys from ([`FLAG_PATH_KEYS`]).
    pub fn is_marked_for_path_keys(&self) -> bool {
        self.flags & FLAG_PATH_KEYS != 0
    }
}

fn emit_cid(out: &mut Vec<u8>, cid: &Cid) {
    out.push(if cid.is_ipv6() { 6 } else { 4 });
    out.push(cid.proto.number());
    out.extend_from_slice(&cid.src_port.to_be_bytes());
    out.extend_from_slice(&cid.dst_port.to_be_bytes());
    push_ip(out, cid.src);
    push_ip(out, cid.dst);
}

/// A zero-copy checked view of a DPRP message's header.
#[derive(Debug, Clone)]
pub struct MessagePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> MessagePacket<T> {
    /// Checks magic, version, type, the length field and the CID.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let b = buffer.as_ref();
        need(b, 3)?;
        if b[0..2] != MAGIC {
            return Err(WireError::Malformed("not a DPRP message (bad magic)"));
        }
        // The version comes before any length check so that a later version, whatever its
        // layout, is recognised as such.
        if b[2] != VERSION {
            return Err(WireError::UnsupportedVersion(b[2]));
        }
        need(b, FIXED_HEADER_LEN + 6)?;
        MessageType::from_u8(b[3])?;
        let len = usize::from(be16(b, 6));
        if len != b.len() {
            return Err(WireError::Malformed("DPRP length field disagrees with datagram"));
        }
        let p = MessagePacket { buffer };
        let hl = p.header_len()?;
        need(p.buffer.as_ref(), hl)?;
        Ok(p)
    }
    pub fn message_type(&self) -> MessageType {
        // Checked in new_checked.
        MessageType::from_u8(self.buffer.as_ref()[3]).unwrap_or(MessageType::Dde)
    }
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[4]
    }
    pub fn nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&self.buffer.as_ref()[8..24]);
        n
    }
    fn header_len(&self) -> Result<usize> {
        match self.buffer.as_ref()[FIXED_HEADER_LEN] {
            4 => Ok(FIXED_HEADER_LEN + 6 + 8),
            6 => Ok(FIXED_HEADER_LEN + 6 + 32),
            _ => Err(WireError::Malformed("CID family is neither 4 nor 6")),
        }
    }
    pub fn cid(&self) -> Result<Cid> {
        let b = self.buffer.as_ref();
        let at = FIXED_HEADER_LEN;
        let proto = L4Proto::from_number(b[at + 1]).ok_or(WireError::Malformed("CID protocol is not TCP or UDP"))?;
        let alen = if b[at] == 4 { 4 } else { 16 };
        let a = at + 6;
        Ok(Cid {
            proto,
            src_port: be16(b, at + 2),
            dst_port: be16(b, at + 4),
            src: ip_from(&b[a..a + alen]),
            dst: ip_from(&b[a + alen..a + 2 * alen]),
        })
    }
    pub fn body(&self) -> &[u8] {
        let hl = self.header_len().unwrap_or(self.buffer.as_ref().len());
        &self.buffer.as_ref()[hl..]
    }
}

/// A parsed DPRP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRepr {
    pub header: HeaderRepr,
    pub body: Body,
}

impl MessageRepr {
    pub fn parse(buf: &[u8]) -> Result<MessageRepr> {
        let p = MessagePacket::new_checked(buf)?;
        let header = HeaderRepr { flags: p.flags(), nonce: p.nonce(), cid: p.cid()? };
        let mut r = Reader::new(p.body());
        let body = match p.message_type() {
            MessageType::Dde => Body::Dde { extensions: read_extensions(&mut r)? },
            t @ (MessageType::Rgi | MessageType::Mpit) => {
                let n = usize::from(r.u8()?);
                if n > MAX_RECORDS {
                    return Err(WireError::Malformed("too many GE records"));
                }
                let mut records = Vec::with_capacity(n);
                for _ in 0..n {
                    records.push(GeRecordRepr::read(&mut r)?);
                }
                if t == MessageType::Rgi {
                    Body::Rgi { records }
                } else {
                    Body::Mpit { records }
                }
            }
            MessageType::Cdn => {
                let status = match r.u8()? {
                    0 => CdnStatus::Complete,
                    1 => CdnStatus::Refused,
                    _ => return Err(WireError::Malformed("unknown CDN status")),
                };
                let confirmation = r.array()?;
                let nl = usize::from(r.u8()?);
                let signer = check_name(r.take(nl)?)?.to_owned();
                let signature = r.array()?;
                let macs = if r.peek() == Some(CDN_EXTENSIONS) { Vec::new() } else { read_macs(&mut r)? };
                let extensions = match r.peek() {
                    None => Vec::new(),
                    Some(CDN_EXTENSIONS) => {
                        r.u8()?;
                        read_extensions(&mut r)?
                    }
                    Some(_) => return Err(WireError::Malformed("bytes after a CDN's MACs")),
                };
                Body::Cdn { status, confirmation, signer, signature, macs, extensions }
            }
        };
        if r.rest() != 0 {
            return Err(WireError::Malformed("bytes after DPRP message body"));
        }
        Ok(MessageRepr { header, body })
    }

    /// The bytes a CDN's signer signs.
    pub fn cdn_to_be_signed(status: CdnStatus, confirmation: &[u8; CHAIN_LEN]) -> Vec<u8> {
        let mut v = b"gscip-dprp-v1 cdn".to_vec();
        v.push(status as u8);
        v.extend_from_slice(confirmation);
        v
    }

    /// Encodes the message. Fails only if it would exceed the 16-bit length field or a list
    /// limit.
    pub fn emit(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(self.body.message_type() as u8);
        out.push(self.header.flags);
        out.push(0);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.header.nonce);
        emit_cid(&mut out, &self.header.cid);
        match &self.body {
            Body::Dde { extensions } => emit_extensions(&mut out, extensions)?,
            Body::Rgi { records } | Body::Mpit { records } => {
                if records.len() > MAX_RECORDS {
                    return Err(WireError::Malformed("too many GE records"));
                }
                out.push(records.len() as u8);
                for rec in records {
                    if rec.proofs.len() > MAX_PROOFS {
                        return Err(WireError::Malformed("too many proofs"));
                    }
                    if rec.macs.len() > MAX_MACS {
                        return Err(WireError::Malformed("too many MACs"));
                    }
                    rec.certificate.validate()?;
                    rec.emit(&mut out);
                }
            }
            Body::Cdn { status, confirmation, signer, signature, macs, extensions } => {
                check_name(signer.as_bytes())?;
                if macs.len() > MAX_MACS {
                    return Err(WireError::Malformed("too many MACs"));
                }
                out.push(*status as u8);
                out.extend_from_slice(confirmation);
                out.push(signer.len() as u8);
                out.extend_from_slice(signer.as_bytes());
                out.extend_from_slice(signature);
                emit_macs(&mut out, macs);
                if !extensions.is_empty() {
                    out.push(CDN_EXTENSIONS);
                    emit_extensions(&mut out, extensions)?;
                }
            }
        }
        let len = u16::try_from(out.len()).map_err(|_| WireError::Malformed("DPRP message too long"))?;
        out[6..8].copy_from_slice(&len.to_be_bytes());
        Ok(out)
    }
}

/// Does this UDP datagram look like DPRP (both ports [`DPRP_PORT`])?
pub fn is_dprp_ports(src_port: u16, dst_port: u16) -> bool {
    src_port == DPRP_PORT && dst_port == DPRP_PORT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_cid() -> impl Strategy<Value = Cid> {
        (any::<bool>(), any::<bool>(), any::<[u8; 16]>(), any::<[u8; 16]>(), any::<u16>(), any::<u16>()).prop_map(
            |(v6, tcp, s, d, sp, dp)| {
                let (src, dst) = if v6 {
                    (IpAddr::from(s), IpAddr::from(d))
                } else {
                    (IpAddr::from([s[0], s[1], s[2], s[3]]), IpAddr::from([d[0], d[1], d[2], d[3]]))
                };
                Cid { proto: if tcp { L4Proto::Tcp } else { L4Proto::Udp }, src, src_port: sp, dst, dst_port: dp }
            },
        )
    }

    fn arb_cert() -> impl Strategy<Value = CertificateRepr> {
        (
            1u8..=5,
            any::<bool>(),
            "[a-z][a-z0-9-]{0,20}",
            proptest::collection::btree_set(1u16.., 0..6),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 64),
        )
            .prop_map(|(k, open, name, groups, pk, na, sig)| CertificateRepr {
                kind: GeKind::from_u8(k).unwrap(),
                mode: if open { Mode::Open } else { Mode::Closed },
                name,
                groups: groups.into_iter().collect(),
                public_key: pk,
                not_after: na,
                gms_signature: sig.try_into().unwrap(),
            })
    }

    fn arb_record() -> impl Strategy<Value = GeRecordRepr> {
        (
            arb_cert(),
            0u8..3,
            any::<u8>(),
            any::<u32>(),
            any::<[u8; 16]>(),
            any::<[u8; 32]>(),
            proptest::collection::vec((any::<u16>(), any::<u32>(), any::<[u8; 16]>()), 0..4),
            proptest::collection::vec(any::<u8>(), 64),
            arb_macs(),
        )
            .prop_map(|(certificate, side, a, idle, nonce, eph, proofs, sig, macs)| GeRecordRepr {
                certificate,
                side: Side::from_u8(side).unwrap(),
                aead_supported: a,
                aead_preferred: a,
                idle_timeout_s: idle,
                nonce,
                ephemeral_public: eph,
                proofs: proofs
                    .into_iter()
                    .map(|(group, key_version, tag)| ProofRepr { group, key_version, tag })
                    .collect(),
                signature: sig.try_into().unwrap(),
                macs,
            })
    }

    fn arb_macs() -> impl Strategy<Value = Vec<RecordMac>> {
        proptest::collection::vec((any::<[u8; 8]>(), any::<[u8; 16]>()), 0..=MAX_MACS)
            .prop_map(|m| m.into_iter().map(|(key_id, tag)| RecordMac { key_id, tag }).collect())
    }

    fn arb_message() -> impl Strategy<Value = MessageRepr> {
        let body = prop_oneof![
            proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20)), 0..3).prop_map(
                |e| Body::Dde { extensions: e.into_iter().map(|(kind, value)| Extension { kind, value }).collect() }
            ),
            proptest::collection::vec(arb_record(), 0..4).prop_map(|records| Body::Rgi { records }),
            proptest::collection::vec(arb_record(), 0..4).prop_map(|records| Body::Mpit { records }),
            (
                any::<bool>(),
                any::<[u8; 32]>(),
                "[a-z]{1,10}",
                proptest::collection::vec(any::<u8>(), 64),
                arb_macs(),
                proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..3)
            )
                .prop_map(|(ok, confirmation, signer, sig, macs, ext)| Body::Cdn {
                    status: if ok { CdnStatus::Complete } else { CdnStatus::Refused },
                    confirmation,
                    signer,
                    signature: sig.try_into().unwrap(),
                    macs,
                    extensions: ext.into_iter().map(|(kind, value)| Extension { kind, value }).collect(),
                }),
        ];
        (any::<u8>(), any::<[u8; 16]>(), arb_cid(), body)
            .prop_map(|(flags, nonce, cid, body)| MessageRepr { header: HeaderRepr { flags, nonce, cid }, body })
    }

    #[test]
    fn a_cdn_carries_extensions_after_its_macs_and_nothing_else() {
        let cid = Cid {
            proto: crate::cid::L4Proto::Tcp,
            src: "10.0.0.1".parse().unwrap(),
            src_port: 1000,
            dst: "10.0.0.2".parse().unwrap(),
            dst_port: 80,
        };
        let next = Extension { kind: Extension::END_EPHEMERAL, value: vec![7; 32] };
        for macs in [vec![], vec![RecordMac { key_id: [1; 8], tag: [2; 16] }]] {
            let m = MessageRepr {
                header: HeaderRepr { flags: 0, nonce: [3; 16], cid },
                body: Body::Cdn {
                    status: CdnStatus::Complete,
                    confirmation: [4; 32],
                    signer: "b".into(),
                    signature: [5; 64],
                    macs: macs.clone(),
                    extensions: vec![next.clone()],
                },
            };
            let bytes = m.emit().unwrap();
            assert_eq!(MessageRepr::parse(&bytes).unwrap(), m, "with {} MACs", macs.len());
            // Without extensions, the bytes are what they were before extensions existed.
            let mut plain = m.clone();
            if let Body::Cdn { extensions, .. } = &mut plain.body {
                extensions.clear();
            }
            let plain_bytes = plain.emit().unwrap();
            assert_eq!(plain_bytes.len() + 1 + 2 + 3 + 32, bytes.len());
            // Anything but the marker after the MACs, or a marker with a short list, is refused.
            for tail in [&[0u8][..], &[9], &[CDN_EXTENSIONS], &[CDN_EXTENSIONS, 0, 5, 4]] {
                let mut b = plain_bytes.clone();
                b.extend_from_slice(tail);
                let len = (b.len() as u16).to_be_bytes();
                b[6..8].copy_from_slice(&len);
                assert!(MessageRepr::parse(&b).is_err(), "tail {tail:?} accepted");
            }
        }
    }

    /// The worked example of docs/wire.md section 8, byte for byte.
    #[test]
    fn worked_example_of_the_wire_doc() {
        let m = MessageRepr {
            header: HeaderRepr {
                flags: 0,
                nonce: core::array::from_fn(|i| i as u8),
                cid: Cid {
                    proto: L4Proto::Tcp,
                    src: "10.1.0.12".parse().unwrap(),
                    src_port: 40000,
                    dst: "10.0.1.100".parse().unwrap(),
                    dst_port: 80,
                },
            },
            body: Body::Dde { extensions: vec![] },
        };
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let bytes = m.emit().unwrap();
        assert_eq!(
            hex(&bytes),
            concat!("4753010100000028", "0001020304050607", "08090a0b0c0d0e0f", "04069c4000500a01", "000c0a0001640000")
        );
        assert_eq!(hex(&m.header.chain_seed()), "0100000102030405060708090a0b0c0d0e0f04069c4000500a01000c0a000164");
        let ip = crate::ip::DatagramRepr {
            cid: Cid {
                proto: L4Proto::Udp,
                src: m.header.cid.src,
                src_port: DPRP_PORT,
                dst: m.header.cid.dst,
                dst_port: DPRP_PORT,
            },
            ttl: 64,
            tcp_flags: 0,
            tcp_seq: 0,
            tcp_ack: 0,
            tcp_mss: None,
            payload: &bytes,
        }
        .emit()
        .unwrap();
        assert_eq!(hex(&ip[..28]), "4500004400004000401125390a01000c0a000164112e112e003090fd");
    }

    proptest! {
        #[test]
        fn round_trip(m in arb_message()) {
            let bytes = m.emit().unwrap();
            let p = MessagePacket::new_checked(&bytes[..]).unwrap();
            prop_assert_eq!(p.cid().unwrap(), m.header.cid);
            prop_assert_eq!(MessageRepr::parse(&bytes).unwrap(), m);
        }

        #[test]
        fn truncation_and_corruption_never_panic(m in arb_message(), cut: usize, flip: usize, bit in 0u8..8) {
            let mut bytes = m.emit().unwrap();
            let at = flip % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = MessageRepr::parse(&bytes);
            let cut = cut % (bytes.len() + 1);
            let _ = MessageRepr::parse(&bytes[..cut]);
        }

        #[test]
        fn path_hints_round_trip(names in proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 0..=MAX_HINT_NAMES)) {
            let v = encode_path_hint(names.iter().map(String::as_str));
            prop_assert_eq!(parse_path_hint(&v).unwrap(), names);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = MessageRepr::parse(&b);
        }
    }
}

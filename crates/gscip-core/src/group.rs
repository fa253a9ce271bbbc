//! Groups and group keys (GK). A group *is* the set of GEs that hold its key.

use std::collections::BTreeMap;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A communication group's number (1..=65535).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u16);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

pub const GROUP_KEY_LEN: usize = 32;

/// One version of a group key. The material is zeroized on drop and never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct GroupKey {
    #[zeroize(skip)]
    pub group: GroupId,
    #[zeroize(skip)]
    pub version: u32,
    material: [u8; GROUP_KEY_LEN],
}

impl GroupKey {
    pub fn new(group: GroupId, version: u32, material: [u8; GROUP_KEY_LEN]) -> Self {
        GroupKey { group, version, material }
    }
    /// The secret bytes. Only the crypto code in this crate should need them.
    pub(crate) fn material(&self) -> &[u8; GROUP_KEY_LEN] {
        &self.material
    }

    /// The secret bytes, for a key store that must write them (a GE's key file, the GMS's
    /// encrypted store). Never log or print them.
    pub fn secret_for_storage(&self) -> &[u8; GROUP_KEY_LEN] {
        &self.material
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupKey {{ group: {}, version: {}, material: <redacted> }}", self.group, self.version)
    }
}

/// The group keys a GE holds: for each group, the current version and any previous versions
/// still inside their grace period (the key source decides which to keep).
#[derive(Clone, Default)]
pub struct GroupKeyring {
    keys: BTreeMap<GroupId, Vec<GroupKey>>,
}

impl fmt::Debug for GroupKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.keys.iter().map(|(g, ks)| (g.0, ks.iter().map(|k| k.version).collect::<Vec<_>>())))
            .finish()
    }
}

impl GroupKeyring {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a key version (replacing one with the same group and version).
    pub fn insert(&mut self, key: GroupKey) {
        let v = self.keys.entry(key.group).or_default();
        v.retain(|k| k.version != key.version);
        v.push(key);
        v.sort_by_key(|k| std::cmp::Reverse(k.version));
    }
    /// The groups this GE is a member of, ascending.
    pub fn groups(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.keys.keys().copied()
    }
    pub fn holds(&self, g: GroupId) -> bool {
        self.keys.contains_key(&g)
    }
    /// All versions held for `g`, newest first.
    pub fn versions(&self, g: GroupId) -> &[GroupKey] {
        self.keys.get(&g).map(Vec::as_slice).unwrap_or(&[])
    }
    pub fn get(&self, g: GroupId, version: u32) -> Option<&GroupKey> {
        self.versions(g).iter().find(|k| k.version == version)
    }
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
    /// Every key held, every version.
    pub fn iter(&self) -> impl Iterator<Item = &GroupKey> {
        self.keys.values().flatten()
    }
}

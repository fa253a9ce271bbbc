//! The daemon's configuration file (TOML).
//!
//! ```toml
//! key_file = "/etc/gscip/ges1.keys"   # identity and group keys (see keyfile.rs), or:
//! # [gms]                             # get them from the GMS (see docs/gms.md)
//! # url = "https://gms.example:4399"
//! # ca_file = "/etc/gscip/gms-ca.pem"
//! # name = "ges1"
//! # state_dir = "/var/lib/gscip/ges1"
//! # token_file = "/etc/gscip/ges1.token"  # one-time enrollment token, needed once
//! hooks = "host"                      # host (OUTPUT+INPUT) | router (FORWARD) | bridge (FORWARD)
//! protected = ["10.1.0.11/32"]        # what this GE protects
//! local_addrs = ["10.1.0.11"]         # this host's own addresses
//! queue = 0                           # NFQUEUE number (UDP, ICMP, TCP cut into segments)
//! gso = true                          # TCP on a second queue that takes GSO packets whole
//! gso_queue = 1                       # its number (default: queue + 1)
//! fail_open = false                   # open GEs only: let traffic pass if the daemon is gone
//! aead = "aes-256-gcm"                # or "chacha20-poly1305"
//! path_key_lifetime_s = 60            # path keys with other GEs (0: off; docs/dprp.md §11)
//! kernel_dde_pass = true              # GEN/GEA: DDEs it would only pass go by in the kernel (§13)
//! kernel_mpit_pass = true             # GEN/GEA: their MPITs too, the daemon taking a copy (§15)
//! stay_awake_us = 1000                # polls, not sleeps, through a new flow's first steps (0: off; §16)
//! bridges = ["br0"]                   # GEA only: its bridges (one per subnet of its servers)
//! events_file = "/run/gscip/ges1.events"  # optional: decisions as JSON lines (the lab reads them)
//! control_socket = "/run/gscip/ges1.sock"  # optional; default /run/gscip/NAME.sock
//! ```

use crate::DaemonError;
use gscip_core::pccom::AeadAlgorithm;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Which netfilter hooks the GE sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hooks {
    /// A GES: packets leaving (OUTPUT) and reaching (INPUT) this host.
    Host,
    /// A GEN: packets it forwards (FORWARD).
    Router,
    /// A GEA: packets its bridge forwards (FORWARD, through bridge netfilter).
    Bridge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// A local key file (exclusive with `gms`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The GMS to enroll with and get keys from (exclusive with `key_file`).
    #[serde(default)]
    pub gms: Option<GmsSettings>,
    pub hooks: Hooks,
    #[serde(default)]
    pub protected: Vec<IpNet>,
    #[serde(default)]
    pub local_addrs: Vec<IpAddr>,
    #[serde(default)]
    pub queue: u16,
    /// TCP goes to a second queue that takes GSO packets whole (NFQUEUE's GSO flag): the
    /// sealing end seals up to 64 KiB as one unit (docs/pccom.md, "Units"). Default true.
    #[serde(default = "default_true")]
    pub gso: bool,
    /// The GSO queue's number (default `queue + 1`).
    #[serde(default)]
    pub gso_queue: Option<u16>,
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default)]
    pub aead: Option<String>,
    /// Seconds a path key with another GE serves (docs/dprp.md section 11); 0 turns path keys
    /// off (every record is then checked by its signature). Default 60, at most 3600.
    #[serde(default)]
    pub path_key_lifetime_s: Option<u64>,
    /// GEN and GEA (`router`, `bridge` hooks): DDEs toward destinations the GE would only pass
    /// them to go by in the kernel, unseen (a `u32` match and an `xt_recent` list the daemon
    /// keeps; docs/dprp.md section 13). Default true; ignored on a host.
    #[serde(default = "default_true")]
    pub kernel_dde_pass: bool,
    /// GEN/GEA: with `kernel_dde_pass`, MPITs toward the same destinations pass in the kernel
    /// too, and the daemon takes part in their negotiations from a copy (an NFLOG group of the
    /// queue's number; docs/dprp.md section 15). Default true; ignored on a host.
    #[serde(default = "default_true")]
    pub kernel_mpit_pass: bool,
    /// At most this long (µs) the daemon keeps polling for packets instead of sleeping after a
    /// DPRP step or a packet of a flow decided a moment ago: twice the DPRP round trip it
    /// measured last, when that fits (docs/dprp.md section 16), and within a CPU budget of
    /// 1/20 of the time. Default 1000; 0 turns it off; at most 100000.
    #[serde(default = "default_stay_awake_us")]
    pub stay_awake_us: u64,
    /// GEA: its bridges (default `["br0"]`).
    #[serde(default)]
    pub bridges: Vec<String>,
    /// Where to append one JSON line per decision (for the lab and for audits).
    #[serde(default)]
    pub events_file: Option<PathBuf>,
    /// The control socket (`gscip status`); default `/run/gscip/NAME.sock`.
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// The GMS's addresses, resolved once at start ([`Config::resolve_gms`]): its connection is
    /// exempt from the rules.
    #[serde(skip)]
    pub gms_addrs: Vec<std::net::SocketAddr>,
}

/// Where the GE finds its GMS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GmsSettings {
    /// `https://HOST:PORT`; its traffic is exempt from this GE's rules.
    pub url: String,
    /// The GMS CA certificate (PEM).
    pub ca_file: PathBuf,
    /// This GE's name as defined on the GMS.
    pub name: String,
    /// Identity key, client certificate and cached state (keep it; mode 0700).
    pub state_dir: PathBuf,
    /// The one-time enrollment token (needed only until the GE has enrolled).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
}

impl GmsSettings {
    /// The host and port of the URL (port 443 when none is given), checked without resolving.
    pub fn host_port(&self) -> Result<String, String> {
        let rest = self
            .url
            .strip_prefix("https://")
            .ok_or_else(|| format!("gms.url {:?} must start with https://", self.url))?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        if hostport.parse::<std::net::SocketAddr>().is_ok() {
            return Ok(hostport.to_owned());
        }
        let (host, port) = match hostport.rfind(']') {
            Some(i) => match hostport[i..].find(':') {
                Some(c) => (&hostport[..i + c], Some(&hostport[i + c + 1..])),
                None => (hostport, None),
            },
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-_[]:".contains(&b))
            && !host.starts_with('-');
        if !host_ok {
            return Err(format!("gms.url {:?}: the host is not a name or an address", self.url));
        }
        match port {
            Some(p) if p.parse::<u16>().is_ok_and(|p| p > 0) => Ok(format!("{host}:{p}")),
            Some(_) => Err(format!("gms.url {:?}: the port must be 1 to 65535", self.url)),
            None => Ok(format!("{host}:443")),
        }
    }

    /// The GMS's addresses: an IP literal as it is, a name resolved now (the daemon does this
    /// once at start, for its rules; parsing a configuration never resolves).
    pub fn resolve(&self) -> Result<Vec<std::net::SocketAddr>, String> {
        let hp = self.host_port()?;
        if let Ok(a) = hp.parse::<std::net::SocketAddr>() {
            return Ok(vec![a]);
        }
        use std::net::ToSocketAddrs;
        hp.to_socket_addrs()
            .map(|a| a.collect())
            .map_err(|e| format!("gms.url {:?}: cannot resolve {hp}: {e}", self.url))
    }
}

fn default_true() -> bool {
    true
}

/// The default of `stay_awake_us`.
pub const DEFAULT_STAY_AWAKE_US: u64 = 1000;
/// The largest `stay_awake_us` accepted: beyond, a daemon would poll through a slow path's
/// whole round trip.
const MAX_STAY_AWAKE_US: u64 = 100_000;

fn default_stay_awake_us() -> u64 {
    DEFAULT_STAY_AWAKE_US
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, DaemonError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| DaemonError::Configuration(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| DaemonError::Configuration(format!("{}: {e}", path.display())))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        if c.protected.is_empty() && c.local_addrs.is_empty() {
            return Err("give `protected` prefixes or `local_addrs`: the GE must protect something".into());
        }
        c.aead_algorithm()?;
        if c.gso_queue.is_some() && !c.gso {
            return Err("`gso_queue` is set but `gso` is false".into());
        }
        if c.gso && c.gso_queue.is_none() && c.queue == u16::MAX {
            return Err("queue 65535 leaves no number for the GSO queue: set `gso_queue`".into());
        }
        if c.gso_queue() == Some(c.queue) {
            return Err(format!("`gso_queue` must differ from `queue` ({})", c.queue));
        }
        if c.stay_awake_us > MAX_STAY_AWAKE_US {
            return Err(format!("`stay_awake_us` must be at most {MAX_STAY_AWAKE_US} (0 turns it off)"));
        }
        if c.path_key_lifetime_s.is_some_and(|s| s > 3600) {
            return Err("`path_key_lifetime_s` must be at most 3600 (0 turns path keys off)".into());
        }
        match (&c.key_file, &c.gms) {
            (Some(_), Some(_)) => return Err("give either `key_file` or a `[gms]` table, not both".into()),
            (None, None) => return Err("give `key_file` or a `[gms]` table: where the GE gets its keys".into()),
            (None, Some(g)) => {
                g.host_port()?;
            }
            (Some(_), None) => {}
        }
        Ok(c)
    }

    /// Whether the rules let DDEs pass in the kernel (a GEN or GEA with `kernel_dde_pass`).
    pub fn uses_kernel_dde_pass(&self) -> bool {
        self.kernel_dde_pass && self.hooks != Hooks::Host
    }

    /// Whether the rules let MPITs pass in the kernel with a copy to the daemon.
    pub fn uses_kernel_mpit_pass(&self) -> bool {
        self.kernel_mpit_pass && self.uses_kernel_dde_pass()
    }

    /// The GSO queue's number, if TCP goes to one.
    pub fn gso_queue(&self) -> Option<u16> {
        self.gso.then(|| self.gso_queue.unwrap_or(self.queue.wrapping_add(1)))
    }

    /// Resolves the GMS's address for the rules (the daemon calls this once at start).
    pub fn resolve_gms(&mut self) -> Result<(), DaemonError> {
        if let Some(g) = &self.gms {
            self.gms_addrs = g.resolve().map_err(DaemonError::Configuration)?;
        }
        Ok(())
    }

    pub fn aead_algorithm(&self) -> Result<AeadAlgorithm, String> {
        match self.aead.as_deref() {
            None | Some("aes-256-gcm") => Ok(AeadAlgorithm::Aes256Gcm),
            Some("chacha20-poly1305") => Ok(AeadAlgorithm::ChaCha20Poly1305),
            Some(other) => Err(format!("aead {other:?}: use \"aes-256-gcm\" or \"chacha20-poly1305\"")),
        }
    }

    /// The engine's configuration.
    pub fn ge_config(&self) -> Result<gscip_core::GeConfig, DaemonError> {
        Ok(gscip_core::GeConfig {
            protected: self.protected.clone(),
            local_addrs: self.local_addrs.clone(),
            aead: self.aead_algorithm().map_err(DaemonError::Configuration)?,
            max_packet_len: crate::nfqueue::MAX_PAYLOAD,
            kernel_dde_pass: self.uses_kernel_dde_pass(),
            kernel_mpit_pass: self.uses_kernel_mpit_pass(),
            stay_awake: gscip_core::Micros(self.stay_awake_us),
            path_key_lifetime: self
                .path_key_lifetime_s
                .map_or(gscip_core::GeConfig::default().path_key_lifetime, gscip_core::Micros::from_secs),
            ..gscip_core::GeConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_clearly() {
        let c = Config::parse("key_file = \"k\"\nhooks = \"router\"\nprotected = [\"10.1.0.0/24\"]\n").unwrap();
        assert_eq!(c.hooks, Hooks::Router);
        assert!(Config::parse("key_file = \"k\"\nhooks = \"router\"\n").unwrap_err().contains("protect something"));
        assert!(Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs=[\"10.0.0.1\"]\ncolour = 1\n")
            .unwrap_err()
            .contains("colour"));
        assert!(Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs=[\"10.0.0.1\"]\naead=\"rot13\"\n")
            .unwrap_err()
            .contains("rot13"));
        let base = "key_file = \"k\"\nhooks = \"host\"\nlocal_addrs=[\"10.0.0.1\"]\n";
        assert_eq!(Config::parse(base).unwrap().gso_queue(), Some(1), "TCP on queue + 1 by default");
        assert_eq!(Config::parse(&format!("{base}queue = 7\ngso_queue = 3\n")).unwrap().gso_queue(), Some(3));
        assert_eq!(Config::parse(&format!("{base}gso = false\n")).unwrap().gso_queue(), None);
        assert!(Config::parse(&format!("{base}queue = 3\ngso_queue = 3\n")).unwrap_err().contains("differ"));
        assert!(Config::parse(&format!("{base}gso = false\ngso_queue = 3\n")).unwrap_err().contains("gso"));
        let lifetime =
            |text: &str| Config::parse(&format!("{base}{text}")).map(|c| c.ge_config().unwrap().path_key_lifetime);
        assert_eq!(lifetime(""), Ok(gscip_core::Micros::from_secs(60)));
        assert_eq!(lifetime("path_key_lifetime_s = 0\n"), Ok(gscip_core::Micros(0)), "0 turns them off");
        assert!(lifetime("path_key_lifetime_s = 3601\n").unwrap_err().contains("at most 3600"));
        assert!(Config::parse(&format!("{base}queue = 65535\n")).unwrap_err().contains("gso_queue"));
        let awake = |text: &str| Config::parse(&format!("{base}{text}")).map(|c| c.ge_config().unwrap().stay_awake);
        assert_eq!(awake(""), Ok(gscip_core::Micros(DEFAULT_STAY_AWAKE_US)));
        assert_eq!(awake("stay_awake_us = 0\n"), Ok(gscip_core::Micros(0)), "0 turns it off");
        assert!(awake("stay_awake_us = 100001\n").unwrap_err().contains("at most 100000"));
    }

    #[test]
    fn gms_urls_are_checked_without_resolving() {
        let g = |url: &str| GmsSettings {
            url: url.into(),
            ca_file: "ca".into(),
            name: "g".into(),
            state_dir: "s".into(),
            token_file: None,
        };
        assert_eq!(g("https://192.0.2.9:4399").host_port().unwrap(), "192.0.2.9:4399");
        assert_eq!(g("https://[fd00::1]:4399/x").host_port().unwrap(), "[fd00::1]:4399");
        assert_eq!(g("https://[fd00::1]").host_port().unwrap(), "[fd00::1]:443");
        assert_eq!(g("https://gms.example.org").host_port().unwrap(), "gms.example.org:443");
        assert_eq!(g("https://gms.example.org:8443/").host_port().unwrap(), "gms.example.org:8443");
        for bad in ["http://gms", "https://", "https://gms:0", "https://gms:99999", "https://g ms", "https://-x"] {
            assert!(g(bad).host_port().is_err(), "{bad}");
        }
        assert_eq!(g("https://192.0.2.9:4399").resolve().unwrap(), vec!["192.0.2.9:4399".parse().unwrap()]);
    }
}

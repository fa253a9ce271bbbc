//! The configuration an administrator writes, item by item, for GSCIP (on the GMS) and for
//! IPsec/IKE (on every element), following seed 001 Tables 3 and 4. Counting is the number of
//! items; comparing two networks is an item-by-item difference.

use std::collections::BTreeSet;

use gscip_sim::scenario::{ModeDef, NodeKind};
use gscip_sim::topology::{NodeId, Topology};
use gscip_sim::Scenario;

use crate::analysis::{analyse, Protects};

/// GSCIP sections, in the column order of seed 001 Table 4.
pub(crate) const GROUP_KEY_INFO: &str = "group key information";
pub(crate) const PROCESS_INFO: &str = "process information";
pub(crate) const GE_INFO: &str = "GE information";
/// IPsec/IKE sections, in the column order of seed 001 Table 4.
pub(crate) const PSK_INFO: &str = "pre-shared key information";
pub(crate) const SECURITY_POLICY: &str = "security policy";
pub(crate) const IKE: &str = "IKE";

pub(crate) const GSCIP_SECTIONS: [&str; 3] = [GROUP_KEY_INFO, PROCESS_INFO, GE_INFO];
pub(crate) const IPSEC_SECTIONS: [&str; 3] = [PSK_INFO, SECURITY_POLICY, IKE];

/// Group key information, per group a GE holds (Table 3: 3 items).
pub const GROUP_KEY_ITEMS: [&str; 3] = ["group number", "group key GK", "GK version"];
/// GE information, fixed part (Table 3: user ID and mode; plus one item per member group).
pub const GE_INFO_FIXED_ITEMS: [&str; 2] = ["user ID", "mode"];
/// Pre-shared key information, per group an IPsec element stands for (Table 3: 2 items).
pub const PSK_ITEMS: [&str; 2] = ["peer identifier", "pre-shared key"];
/// One direction of a Discard or None policy (Table 3: 8 items for both directions).
pub const POLICY_PLAIN_ITEMS: [&str; 4] = ["source", "destination", "upper-layer protocol", "action"];
/// One direction of an IPsec transport policy (Table 3: 14 items for both directions).
pub const POLICY_TRANSPORT_ITEMS: [&str; 7] =
    ["source", "destination", "upper-layer protocol", "action", "protocol (ESP/AH)", "mode", "policy level"];
/// One direction of an IPsec tunnel policy (Table 3: 16 items for both directions).
pub const POLICY_TUNNEL_ITEMS: [&str; 8] = [
    "source",
    "destination",
    "upper-layer protocol",
    "action",
    "protocol (ESP/AH)",
    "mode",
    "policy level",
    "SA end addresses",
];
/// IKE settings, once per IPsec element (Table 3: 12 items; the seed names six and writes
/// "etc.", we name the usual remaining phase 1 and phase 2 parameters).
pub const IKE_ITEMS: [&str; 12] = [
    "exchange mode",
    "own identifier",
    "peer identifier",
    "encryption algorithm",
    "hash algorithm",
    "authentication method",
    "DH group",
    "phase 1 lifetime",
    "phase 2 encryption algorithm",
    "phase 2 authentication algorithm",
    "PFS group",
    "phase 2 lifetime",
];

/// One configuration entry: a unit the administrator writes on one element (a GE
/// information record, one group key, one security policy, ...), made of named items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub element: String,
    /// Unique per element; what identifies "the same entry" in two networks.
    pub key: String,
    pub section: &'static str,
    /// Human description, without the section.
    pub label: String,
    /// (item name, value): one configuration item each.
    pub items: Vec<(String, String)>,
}

impl Entry {
    fn new(element: &str, key: String, section: &'static str, label: String) -> Entry {
        Entry { element: element.to_owned(), key, section, label, items: Vec::new() }
    }
    fn item(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.items.push((name.into(), value.into()));
    }
}

fn groups_sorted(groups: &[u16]) -> Vec<u16> {
    let mut g = groups.to_vec();
    g.sort_unstable();
    g.dedup();
    g
}

fn list(groups: &[u16]) -> String {
    groups.iter().map(|g| g.to_string()).collect::<Vec<_>>().join(", ")
}

/// GSCIP: what the administrator defines on the GMS (seed 001 §5.2, Tables 3 and 4).
pub(crate) fn gscip_entries(s: &Scenario) -> Vec<Entry> {
    let mut out = Vec::new();
    for n in s.nodes.iter().filter(|n| n.kind.is_ge()) {
        let groups = groups_sorted(&n.groups);
        for &g in &groups {
            let mut e = Entry::new(
                &n.name,
                format!("gk:{g}"),
                GROUP_KEY_INFO,
                format!("group {g} (group number, group key GK, GK version)"),
            );
            e.item(GROUP_KEY_ITEMS[0], g.to_string());
            e.item(GROUP_KEY_ITEMS[1], format!("GK{g}"));
            e.item(GROUP_KEY_ITEMS[2], format!("version of GK{g}"));
            out.push(e);
        }
        out.push(Entry::new(
            &n.name,
            "pit".into(),
            PROCESS_INFO,
            "none to set: DPRP builds the PIT at the start of each flow".into(),
        ));
        let what = if groups.is_empty() {
            "user ID, mode, no group".to_owned()
        } else {
            format!("user ID, mode, group number{} {}", if groups.len() > 1 { "s" } else { "" }, list(&groups))
        };
        let mut e = Entry::new(&n.name, "ge-info".into(), GE_INFO, what);
        e.item(GE_INFO_FIXED_ITEMS[0], n.name.clone());
        e.item(GE_INFO_FIXED_ITEMS[1], n.mode.map_or("closed", ModeDef::as_str));
        for &g in &groups {
            e.item(format!("member group {g}"), g.to_string());
        }
        out.push(e);
    }
    out
}

/// The addresses an IPsec element's policies select on its own side: the host (GES), the
/// servers behind it (GEA: the IPsec element is the server itself), the networks it protects
/// (gateway).
fn selector(s: &Scenario, topo: &Topology, n: NodeId) -> String {
    let mut v: Vec<String> = match s.nodes[n].kind {
        k if k.is_router() => topo.protected(n).iter().map(|p| p.to_string()).collect(),
        _ => element_addresses(s, topo, n),
    };
    v.sort();
    v.dedup();
    if v.is_empty() {
        "(nothing)".into()
    } else {
        v.join(" ")
    }
}

/// The addresses of an IPsec element itself (its SA end): the GEA's are its servers'.
fn element_addresses(s: &Scenario, topo: &Topology, n: NodeId) -> Vec<String> {
    let mut v: Vec<String> = match s.nodes[n].kind {
        NodeKind::Gea => topo
            .servers_of
            .get(&n)
            .into_iter()
            .flatten()
            .flat_map(|&srv| topo.addresses(srv).map(|a| a.to_string()).collect::<Vec<_>>())
            .collect(),
        _ => topo.addresses(n).map(|a| a.to_string()).collect(),
    };
    v.sort();
    v
}

fn describe_pairs(p: &BTreeSet<Protects>) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = p.iter().take(SHOWN).map(|x| format!("{}<->{} group {}", x.a, x.b, x.group)).collect();
    if p.len() > SHOWN {
        parts.push(format!("{} more", p.len() - SHOWN));
    }
    parts.join("; ")
}

/// The key of an element's IPsec policy entry toward `peer`.
pub(crate) fn ipsec_policy_key(peer: &str) -> String {
    format!("sp:ipsec:{peer}")
}

/// IPsec/IKE: what the administrator configures on every element to obtain the same
/// protection (seed 001 §5.2, Tables 3 and 4). One IPsec element stands for each GE: a host
/// (ST) for a GES, the server for a GEA, a security gateway (SGW) for a GEN, GNAT or GSRA.
///
/// Also returns the element pairs SPEC section 3 would protect but the scenario's
/// `[load] ipsec_peers` design leaves without a policy, described.
pub(crate) fn ipsec_entries(s: &Scenario) -> (Vec<Entry>, Vec<String>) {
    let topo = Topology::new(s);
    let analysis = analyse(s, &topo);
    let left_out =
        analysis.left_out.iter().map(|(a, b, pairs)| format!("{a} <-> {b} (for {})", describe_pairs(pairs))).collect();
    let mut out = Vec::new();
    for (n, node) in s.nodes.iter().enumerate() {
        if !node.kind.is_ge() {
            continue;
        }
        // Pre-shared key information: one entry per group the element stands for.
        for g in groups_sorted(&node.groups) {
            let mut e = Entry::new(
                &node.name,
                format!("psk:{g}"),
                PSK_INFO,
                format!("for group {g} (peer identifier, pre-shared key)"),
            );
            e.item(PSK_ITEMS[0], format!("members of group {g}"));
            e.item(PSK_ITEMS[1], format!("pre-shared key of group {g}"));
            out.push(e);
        }
        // IPsec policies: one per peer element it must protect traffic with.
        let mine = selector(s, &topo, n);
        for (&(x, y), pairs) in &analysis.sa {
            let peer = if x == n {
                y
            } else if y == n {
                x
            } else {
                continue;
            };
            let tunnel = node.kind.is_router() || s.nodes[peer].kind.is_router();
            let mode = if tunnel { "tunnel" } else { "transport" };
            let peer_name = &s.nodes[peer].name;
            let mut e = Entry::new(
                &node.name,
                ipsec_policy_key(peer_name),
                SECURITY_POLICY,
                format!("IPsec {mode} with {peer_name}, both directions (for {})", describe_pairs(pairs)),
            );
            let theirs = selector(s, &topo, peer);
            let ends = format!(
                "{} <-> {}",
                element_addresses(s, &topo, n).join(" "),
                element_addresses(s, &topo, peer).join(" ")
            );
            for (dir, src, dst) in [("out", &mine, &theirs), ("in", &theirs, &mine)] {
                let names: &[&str] = if tunnel { &POLICY_TUNNEL_ITEMS } else { &POLICY_TRANSPORT_ITEMS };
                for &name in names {
                    let value = match name {
                        "source" => src.clone(),
                        "destination" => dst.clone(),
                        "upper-layer protocol" => "any".into(),
                        "action" => "ipsec".into(),
                        "protocol (ESP/AH)" => "esp".into(),
                        "mode" => mode.into(),
                        "policy level" => "require".into(),
                        _ => ends.clone(),
                    };
                    e.item(format!("{dir}: {name}"), value);
                }
            }
            out.push(e);
        }
        // A closed gateway drops by default what no policy allows, and must be told to pass
        // the traffic it forwards without protecting it itself.
        let closed = node.mode != Some(ModeDef::Open);
        if node.kind.is_router() && closed {
            if let Some(passed) = analysis.passes.get(&n) {
                let mut shown: Vec<String> = passed.iter().take(3).map(|(a, b)| format!("{a}<->{b}")).collect();
                if passed.len() > 3 {
                    shown.push(format!("{} more", passed.len() - 3));
                }
                let mut e = Entry::new(
                    &node.name,
                    "sp:none".into(),
                    SECURITY_POLICY,
                    format!("None (bypass), both directions: traffic it forwards untouched ({})", shown.join("; ")),
                );
                for dir in ["out", "in"] {
                    for &name in &POLICY_PLAIN_ITEMS {
                        let value = match name {
                            "action" => "none",
                            "upper-layer protocol" => "traffic protected by other elements, or passed in plaintext",
                            _ => "any",
                        };
                        e.item(format!("{dir}: {name}"), value);
                    }
                }
                out.push(e);
            }
            let mut e = Entry::new(
                &node.name,
                "sp:discard".into(),
                SECURITY_POLICY,
                "Discard, both directions: everything else (closed gateway)".into(),
            );
            for dir in ["out", "in"] {
                for &name in &POLICY_PLAIN_ITEMS {
                    e.item(format!("{dir}: {name}"), if name == "action" { "discard" } else { "any" });
                }
            }
            out.push(e);
        }
        // IKE: once per element.
        let mut e = Entry::new(
            &node.name,
            "ike".into(),
            IKE,
            "IKE settings (exchange mode, identifiers, algorithms, DH group, lifetimes)".into(),
        );
        for &name in &IKE_ITEMS {
            e.item(name, "set");
        }
        out.push(e);
    }
    (out, left_out)
}

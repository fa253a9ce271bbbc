//! Management load of a network, as seed 001 (§5) measures it: the number of configuration
//! items an administrator sets to run it with GSCIP (on the GMS) and with IPsec/IKE (on every
//! element), and the number of items to change to go from one network to another (a host
//! moves, a member is added). `gscip load-report FILE [--compare OTHER] [--json]` prints it.
//!
//! The rules, applied to any scenario (details and the seed's worked figures in
//! `docs/load-report.md`):
//!
//! GSCIP/DPRP, for every GE (GES, GEN, GEA, GNAT, GSRA):
//! - GE information: user ID and mode (2) plus one group number per member group;
//! - group key information: group number, GK and GK version (3) for every group it holds;
//! - process information: 0 (DPRP builds the PIT itself).
//!
//! IPsec/IKE, one IPsec element per GE (a host for a GES, the server for a GEA, a security
//! gateway for a GEN/GNAT/GSRA):
//! - pre-shared key information: peer identifier and key (2) per group the element stands for;
//! - security policies, defined for both directions: for every other element it must
//!   protect traffic with, one IPsec policy, transport (14) between two hosts, tunnel (16)
//!   when one end is a gateway; which elements those are is SPEC section 3 applied to every
//!   pair of hosts (the protecting pair of their flows); a closed gateway also needs a
//!   Discard policy (8) and, if it forwards traffic it does not protect itself, a None
//!   policy (8);
//! - IKE settings: 12 per element.
//!
//! A change between two networks is counted item by item: every item added, removed, or whose
//! value differs (an address in a policy's source or destination, a mode, ...). Two
//! conventions say which elements' items count ([`Convention`]): seed 001's own (§5.3–5.4: the
//! GEs that join, leave or move, and the policies others add toward a GE that joins), the
//! default, and every element concerned.
#![forbid(unsafe_code)]

mod analysis;
mod model;

use std::collections::HashMap;
use std::fmt::Write as _;

use gscip_sim::Scenario;
use serde::Serialize;
use serde_json::{json, Value};

use model::{Entry, GSCIP_SECTIONS, IPSEC_SECTIONS};
pub use model::{
    GE_INFO_FIXED_ITEMS, GROUP_KEY_ITEMS, IKE_ITEMS, POLICY_PLAIN_ITEMS, POLICY_TRANSPORT_ITEMS, POLICY_TUNNEL_ITEMS,
    PSK_ITEMS,
};

/// One line of explanation: `count` configuration items of `element`, described by `what`
/// (`"SECTION: details"`, the section being a column of seed 001 Table 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Item {
    pub element: String,
    pub what: String,
    pub count: u64,
}

impl Item {
    /// The Table 4 column this item belongs to: the part of `what` before the first `": "`.
    pub fn section(&self) -> &str {
        self.what.split_once(": ").map_or(self.what.as_str(), |(s, _)| s)
    }
}

/// The initial management load of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadCount {
    /// Items set on the GMS for GSCIP/DPRP.
    pub gscip: u64,
    /// Items set on the elements for IPsec/IKE.
    pub ipsec_ike: u64,
    pub gscip_items: Vec<Item>,
    pub ipsec_items: Vec<Item>,
    /// Element pairs that SPEC section 3 would protect but the scenario's `[load] ipsec_peers`
    /// design gives no IPsec policy (empty without such a design).
    pub ipsec_design_left_out: Vec<String>,
}

/// Which items to change are counted (docs/load-report.md, "Changes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// Seed 001's own (§5.3 and §5.4): the items of the GEs that join, leave or move (the
    /// subjects of the change) and, for a GE that joins or leaves, the IPsec policy each other
    /// element adds toward it or removes. Items of other elements are reported, not counted.
    /// With no subject (only memberships or modes change), every item counts.
    #[default]
    Seed,
    /// Every item added, removed or changed, at every element concerned.
    Complete,
}

impl Convention {
    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Convention::Seed => "seed",
            Convention::Complete => "complete",
        }
    }
}

impl std::str::FromStr for Convention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "seed" => Ok(Convention::Seed),
            "complete" => Ok(Convention::Complete),
            _ => Err(format!("unknown convention {s:?} (expected seed | complete)")),
        }
    }
}

/// What happens to a GE between the two networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubjectChange {
    /// Only in the second network.
    Joins,
    /// Only in the first network.
    Leaves,
    /// In both, with other interfaces, routes or gateway (its name is what identifies it).
    Moves,
}

/// A GE that joins, leaves or moves: the subject of a change in the seed's convention.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subject {
    pub ge: String,
    pub change: SubjectChange,
}

/// The items to change to go from one network to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeCount {
    /// The convention the totals and item lists follow.
    pub convention: Convention,
    /// The GEs that join, leave or move, in node order.
    pub subjects: Vec<Subject>,
    /// Items to change, counted.
    pub gscip: u64,
    pub ipsec_ike: u64,
    pub gscip_items: Vec<Item>,
    pub ipsec_items: Vec<Item>,
    /// Items to change that the convention does not count (always empty for
    /// [`Convention::Complete`]).
    pub not_counted_gscip: Vec<Item>,
    pub not_counted_ipsec: Vec<Item>,
}

impl ChangeCount {
    /// The totals at every element concerned (the [`Convention::Complete`] figures):
    /// `(gscip, ipsec_ike)`.
    pub fn every_element(&self) -> (u64, u64) {
        let sum = |v: &[Item]| v.iter().map(|i| i.count).sum::<u64>();
        (self.gscip + sum(&self.not_counted_gscip), self.ipsec_ike + sum(&self.not_counted_ipsec))
    }
}

fn n_items(e: &Entry) -> u64 {
    e.items.len() as u64
}

fn to_items(entries: &[Entry]) -> Vec<Item> {
    entries
        .iter()
        .map(|e| Item { element: e.element.clone(), what: format!("{}: {}", e.section, e.label), count: n_items(e) })
        .collect()
}

/// Counts the configuration items of a network, for GSCIP and for IPsec/IKE.
pub fn count(s: &Scenario) -> LoadCount {
    let g = model::gscip_entries(s);
    let (i, ipsec_design_left_out) = model::ipsec_entries(s);
    LoadCount {
        gscip: g.iter().map(n_items).sum(),
        ipsec_ike: i.iter().map(n_items).sum(),
        gscip_items: to_items(&g),
        ipsec_items: to_items(&i),
        ipsec_design_left_out,
    }
}

/// One changed entry: the explained item and the key of the entry it changes.
struct Changed {
    item: Item,
    key: String,
}

/// Item-by-item difference of two configurations: entries are matched by element and entry
/// (the same GE's GE information, the same element's policy toward the same peer, ...).
fn diff(before: &[Entry], after: &[Entry]) -> Vec<Changed> {
    let key = |e: &Entry| (e.element.clone(), e.key.clone());
    let old: HashMap<(String, String), &Entry> = before.iter().map(|e| (key(e), e)).collect();
    let new: HashMap<(String, String), &Entry> = after.iter().map(|e| (key(e), e)).collect();
    // Element order: as in the new network, then the elements that disappeared.
    let mut order: Vec<String> = Vec::new();
    for e in after.iter().chain(before) {
        if !order.contains(&e.element) {
            order.push(e.element.clone());
        }
    }
    let mut out: Vec<Changed> = Vec::new();
    let mut push = |e: &Entry, what: String, count: u64| {
        out.push(Changed { item: Item { element: e.element.clone(), what, count }, key: e.key.clone() });
    };
    for e in after {
        match old.get(&key(e)) {
            None => push(e, format!("{}: {}: added", e.section, e.label), n_items(e)),
            Some(b) => {
                let bv: HashMap<&str, &str> = b.items.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let av: HashMap<&str, &str> = e.items.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
                let mut changed: Vec<String> = Vec::new();
                for (n, v) in &e.items {
                    match bv.get(n.as_str()) {
                        Some(old) if *old == v.as_str() => {}
                        Some(_) => changed.push(format!("{n} changed")),
                        None => changed.push(format!("{n} added")),
                    }
                }
                for (n, _) in &b.items {
                    if !av.contains_key(n.as_str()) {
                        changed.push(format!("{n} removed"));
                    }
                }
                if !changed.is_empty() {
                    push(e, format!("{}: {}: {}", e.section, e.label, changed.join(", ")), changed.len() as u64);
                }
            }
        }
    }
    for b in before {
        if !new.contains_key(&key(b)) && n_items(b) > 0 {
            push(b, format!("{}: {}: removed", b.section, b.label), n_items(b));
        }
    }
    out.retain(|c| c.item.count > 0);
    out.sort_by_key(|c| order.iter().position(|x| *x == c.item.element).unwrap_or(usize::MAX));
    out
}

/// The GEs that join, leave or move between two networks, in node order (the second
/// network's, then the GEs that leave). A node that becomes a GE joins; one that stops being a
/// GE (a GES replaced by a plain terminal) leaves.
fn subjects(before: &Scenario, after: &Scenario) -> Vec<Subject> {
    let mut out = Vec::new();
    for n in after.nodes.iter().filter(|n| n.kind.is_ge()) {
        let change = match before.node(&n.name).filter(|b| b.kind.is_ge()) {
            None => Some(SubjectChange::Joins),
            Some(b) if b.interfaces != n.interfaces || b.routes != n.routes || b.gateway != n.gateway => {
                Some(SubjectChange::Moves)
            }
            Some(_) => None,
        };
        if let Some(change) = change {
            out.push(Subject { ge: n.name.clone(), change });
        }
    }
    for n in before.nodes.iter().filter(|n| n.kind.is_ge() && !after.node(&n.name).is_some_and(|a| a.kind.is_ge())) {
        out.push(Subject { ge: n.name.clone(), change: SubjectChange::Leaves });
    }
    out
}

/// Whether the seed's convention counts a changed entry: one of a subject's own, or another
/// element's IPsec policy toward a GE that joins or leaves.
fn seed_counts(c: &Changed, subjects: &[Subject]) -> bool {
    subjects.iter().any(|s| {
        c.item.element == s.ge || (s.change != SubjectChange::Moves && c.key == model::ipsec_policy_key(&s.ge))
    })
}

/// The items an administrator must add, remove or change to go from `before` to `after`,
/// counted by `convention`. Elements are identified by node name: a GE that moves keeps its
/// name.
pub fn compare(before: &Scenario, after: &Scenario, convention: Convention) -> ChangeCount {
    let subjects = subjects(before, after);
    let g = diff(&model::gscip_entries(before), &model::gscip_entries(after));
    let i = diff(&model::ipsec_entries(before).0, &model::ipsec_entries(after).0);
    let split = |changes: Vec<Changed>| -> (Vec<Item>, Vec<Item>) {
        let (counted, not): (Vec<Changed>, Vec<Changed>) = changes
            .into_iter()
            .partition(|c| convention == Convention::Complete || subjects.is_empty() || seed_counts(c, &subjects));
        (counted.into_iter().map(|c| c.item).collect(), not.into_iter().map(|c| c.item).collect())
    };
    let (gscip_items, not_counted_gscip) = split(g);
    let (ipsec_items, not_counted_ipsec) = split(i);
    ChangeCount {
        convention,
        gscip: gscip_items.iter().map(|x| x.count).sum(),
        ipsec_ike: ipsec_items.iter().map(|x| x.count).sum(),
        subjects,
        gscip_items,
        ipsec_items,
        not_counted_gscip,
        not_counted_ipsec,
    }
}

/// Per element, the items of each section (in `sections` order) and the total.
fn by_element(items: &[Item], sections: &[&str]) -> Vec<(String, Vec<u64>, u64)> {
    let mut rows: Vec<(String, Vec<u64>, u64)> = Vec::new();
    for it in items {
        let pos = match rows.iter().position(|r| r.0 == it.element) {
            Some(p) => p,
            None => {
                rows.push((it.element.clone(), vec![0; sections.len()], 0));
                rows.len() - 1
            }
        };
        let row = &mut rows[pos];
        if let Some(k) = sections.iter().position(|s| *s == it.section()) {
            row.1[k] += it.count;
        }
        row.2 += it.count;
    }
    rows
}

fn elements_json(items: &[Item], sections: &[&str]) -> Value {
    Value::Array(
        by_element(items, sections)
            .into_iter()
            .map(|(element, per, total)| {
                let mut m = serde_json::Map::new();
                m.insert("element".into(), json!(element));
                for (s, n) in sections.iter().zip(per) {
                    m.insert((*s).to_owned(), json!(n));
                }
                m.insert("total".into(), json!(total));
                Value::Object(m)
            })
            .collect(),
    )
}

fn items_json(items: &[Item]) -> Value {
    serde_json::to_value(items).unwrap_or(Value::Null)
}

/// The report for one network:
/// `{"gscip": N, "ipsec_ike": N, "items": {"gscip": [...], "ipsec_ike": [...]},
///   "elements": {"gscip": [...], "ipsec_ike": [...]}}`.
pub fn report_json(file_count: &LoadCount) -> Value {
    json!({
        "gscip": file_count.gscip,
        "ipsec_ike": file_count.ipsec_ike,
        "items": {
            "gscip": items_json(&file_count.gscip_items),
            "ipsec_ike": items_json(&file_count.ipsec_items),
        },
        "elements": {
            "gscip": elements_json(&file_count.gscip_items, &GSCIP_SECTIONS),
            "ipsec_ike": elements_json(&file_count.ipsec_items, &IPSEC_SECTIONS),
        },
        "ipsec_design_left_out": file_count.ipsec_design_left_out,
    })
}

/// The comparison of two networks:
/// `{"change": {"gscip": N, "ipsec_ike": N}, "convention": "seed" | "complete",
///   "subjects": [{"ge", "change"}], "change_every_element": {"gscip": N, "ipsec_ike": N},
///   "before": REPORT, "after": REPORT, "items": {"gscip": [...], "ipsec_ike": [...]},
///   "items_not_counted": {"gscip": [...], "ipsec_ike": [...]}}` where REPORT is
/// [`report_json`].
pub fn compare_json(before: &LoadCount, after: &LoadCount, change: &ChangeCount) -> Value {
    let (all_gscip, all_ipsec) = change.every_element();
    json!({
        "change": { "gscip": change.gscip, "ipsec_ike": change.ipsec_ike },
        "convention": change.convention,
        "subjects": change.subjects,
        "change_every_element": { "gscip": all_gscip, "ipsec_ike": all_ipsec },
        "before": report_json(before),
        "after": report_json(after),
        "items": {
            "gscip": items_json(&change.gscip_items),
            "ipsec_ike": items_json(&change.ipsec_items),
        },
        "items_not_counted": {
            "gscip": items_json(&change.not_counted_gscip),
            "ipsec_ike": items_json(&change.not_counted_ipsec),
        },
    })
}

/// A plain-text table with left-aligned first column and right-aligned others.
fn table(header: &[String], rows: &[Vec<String>]) -> String {
    let cols = header.len();
    let mut w = vec![0usize; cols];
    for r in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
        for (k, c) in r.iter().enumerate().take(cols) {
            w[k] = w[k].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(header).chain(rows.iter().map(|r| r.as_slice())) {
        let mut line = String::new();
        for (k, c) in r.iter().enumerate().take(cols) {
            let pad = w[k].saturating_sub(c.chars().count());
            if k == 0 {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str("  ");
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn section_table(title: &str, items: &[Item], sections: &[&str]) -> String {
    let rows = by_element(items, sections);
    let mut header = vec!["element".to_owned()];
    header.extend(sections.iter().map(|s| (*s).to_owned()));
    header.push("total".into());
    let mut body: Vec<Vec<String>> = Vec::new();
    let mut sums = vec![0u64; sections.len()];
    let mut total = 0;
    for (e, per, t) in &rows {
        let mut r = vec![e.clone()];
        for (k, n) in per.iter().enumerate() {
            sums[k] += n;
            r.push(n.to_string());
        }
        total += t;
        r.push(t.to_string());
        body.push(r);
    }
    let mut r = vec!["total".to_owned()];
    r.extend(sums.iter().map(|n| n.to_string()));
    r.push(total.to_string());
    body.push(r);
    format!("{title}\n{}", table(&header, &body))
}

fn item_lines(title: &str, items: &[Item]) -> String {
    let mut out = format!("{title}\n");
    if items.is_empty() {
        out.push_str("  (none)\n");
    }
    let w = items.iter().map(|i| i.element.chars().count()).max().unwrap_or(0);
    let cw = items.iter().map(|i| i.count.to_string().len()).max().unwrap_or(0);
    for i in items {
        let _ = writeln!(out, "  {:<w$}  {:>cw$}  {}", i.element, i.count, i.what, w = w, cw = cw);
    }
    out
}

const IPSEC_TITLE: &str =
    "IPsec/IKE (one IPsec element per GE: the host of a GES, the server behind a GEA, a GEN/GNAT/GSRA as gateway)";

/// The human report of one network: the per-element table of each system (seed 001 Table 4)
/// and every item explained.
pub fn report_table(file_count: &LoadCount) -> String {
    let mut out = format!(
        "management load (configuration items): GSCIP/DPRP {}, IPsec/IKE {}\n\n",
        file_count.gscip, file_count.ipsec_ike
    );
    out.push_str(&section_table("GSCIP/DPRP", &file_count.gscip_items, &GSCIP_SECTIONS));
    out.push('\n');
    out.push_str(&section_table(IPSEC_TITLE, &file_count.ipsec_items, &IPSEC_SECTIONS));
    out.push('\n');
    out.push_str(&item_lines("GSCIP/DPRP items:", &file_count.gscip_items));
    out.push('\n');
    out.push_str(&item_lines("IPsec/IKE items:", &file_count.ipsec_items));
    if !file_count.ipsec_design_left_out.is_empty() {
        out.push_str(
            "\nIPsec design from the scenario's [load] ipsec_peers: no policy between these elements, \
             which SPEC section 3 would protect:\n",
        );
        for p in &file_count.ipsec_design_left_out {
            let _ = writeln!(out, "  {p}");
        }
    }
    out
}

/// The human comparison of two networks: totals before and after, the items to change, and
/// each item explained.
pub fn compare_table(before: &LoadCount, after: &LoadCount, change: &ChangeCount) -> String {
    let (all_gscip, all_ipsec) = change.every_element();
    let header: Vec<String> =
        ["", "before", "after", "to change", "at every element"].iter().map(|s| (*s).to_owned()).collect();
    let row = |system: &str, counts: [u64; 4]| {
        std::iter::once(system.to_owned()).chain(counts.iter().map(u64::to_string)).collect::<Vec<_>>()
    };
    let rows = vec![
        row("GSCIP/DPRP", [before.gscip, after.gscip, change.gscip, all_gscip]),
        row("IPsec/IKE", [before.ipsec_ike, after.ipsec_ike, change.ipsec_ike, all_ipsec]),
    ];
    let subjects = if change.subjects.is_empty() {
        "none".to_owned()
    } else {
        let how = |c: SubjectChange| match c {
            SubjectChange::Joins => "joins",
            SubjectChange::Leaves => "leaves",
            SubjectChange::Moves => "moves",
        };
        change.subjects.iter().map(|s| format!("{} {}", s.ge, how(s.change))).collect::<Vec<_>>().join(", ")
    };
    let rule = match change.convention {
        Convention::Seed => {
            "counted as seed 001 §5.3-5.4 does (--convention seed): the items of the GEs that join, leave or \
             move, and the policies other elements add toward a GE that joins (or remove toward one that leaves)"
        }
        Convention::Complete => "counted at every element concerned (--convention complete)",
    };
    let mut out = format!(
        "management load of the change (configuration items), {rule}\nGEs that join, leave or move: {subjects}\n\n{}\n",
        table(&header, &rows)
    );
    out.push_str(&section_table("GSCIP/DPRP items to change", &change.gscip_items, &GSCIP_SECTIONS));
    out.push('\n');
    out.push_str(&section_table("IPsec/IKE items to change", &change.ipsec_items, &IPSEC_SECTIONS));
    out.push('\n');
    out.push_str(&item_lines("GSCIP/DPRP changes:", &change.gscip_items));
    out.push('\n');
    out.push_str(&item_lines("IPsec/IKE changes:", &change.ipsec_items));
    if !change.not_counted_gscip.is_empty() || !change.not_counted_ipsec.is_empty() {
        out.push_str(
            "\nchanges at other elements, not counted by this convention (--convention complete counts them):\n",
        );
        for i in change.not_counted_gscip.iter().chain(&change.not_counted_ipsec) {
            let _ = writeln!(out, "  {}  {}  {}", i.element, i.count, i.what);
        }
    }
    out
}

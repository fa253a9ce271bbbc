//! What the simulator and the lab share about a flow: its path through the network, the
//! policy's reference answer for it (computed from the scenario, not from the GEs), and how a
//! flow's report (SPEC 11.2) is made from what was observed.

use crate::report::FlowReport;
use crate::scenario::{FlowDef, ModeDef, Outcome as ExpectOutcome, Scenario};
use crate::topology::{NodeId, Topology};
use gscip_core::group::GroupId;
use gscip_core::policy::{decide, Decision, FlowAction, Outcome, PathGe};
use gscip_core::{Mode, Side};
use std::collections::HashMap;
use std::net::IpAddr;

/// A flow's route and the policy's answer for it.
#[derive(Debug, Clone)]
pub struct FlowPath {
    pub client: NodeId,
    pub server: NodeId,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Nodes from the client to the server.
    pub nodes: Vec<NodeId>,
    /// Links crossed, in order (`links[k]` joins `nodes[k]` and `nodes[k + 1]`).
    pub links: Vec<String>,
    /// The GEs on the path, in order.
    pub ges: Vec<NodeId>,
    pub reference: Decision,
}

impl FlowPath {
    /// The path of `f`: the first address of `to` whose family `from` also has, routed as the
    /// kernel would (SPEC 11.1). Fails when no route exists in either direction.
    pub fn new(s: &Scenario, topo: &Topology, f: &FlowDef) -> Result<FlowPath, String> {
        let client = topo.by_name[&f.from];
        let server = topo.by_name[&f.to];
        let caddrs: Vec<IpAddr> = topo.addresses(client).collect();
        let Some((src, dst)) =
            topo.addresses(server).find_map(|d| caddrs.iter().find(|s| s.is_ipv4() == d.is_ipv4()).map(|s| (*s, d)))
        else {
            return Err(format!("flow {:?}: {} and {} share no IP family", f.name, f.from, f.to));
        };
        Self::between(s, topo, client, server, src, dst).ok_or_else(|| {
            format!(
                "flow {:?}: no route between {} ({src}) and {} ({dst}) in one direction or both; check the routes and gateways",
                f.name, f.from, f.to
            )
        })
    }

    /// The path between two nodes' given addresses, or `None` when either direction has no
    /// route.
    pub fn between(
        s: &Scenario,
        topo: &Topology,
        client: NodeId,
        server: NodeId,
        src: IpAddr,
        dst: IpAddr,
    ) -> Option<FlowPath> {
        let (Some(hops), Some(_)) = (topo.trace(client, dst), topo.trace(server, src)) else {
            return None;
        };
        let mut nodes: Vec<NodeId> = std::iter::once(client).chain(hops.iter().map(|h| h.node)).collect();
        nodes.dedup();
        let links: Vec<String> = hops.iter().map(|h| h.link.clone()).collect();
        let ges: Vec<NodeId> = nodes.iter().copied().filter(|&n| topo.kinds[n].is_ge()).collect();
        let path: Vec<PathGe> = ges
            .iter()
            .map(|&n| {
                let prot = topo.protected(n);
                let inside = |a: IpAddr| topo.owns(n, a) || prot.iter().any(|p| p.contains(&a));
                let side = match (inside(src), inside(dst)) {
                    (true, false) => Side::Source,
                    (false, true) => Side::Destination,
                    _ => Side::Transit,
                };
                let def = &s.nodes[n];
                PathGe {
                    name: def.name.clone(),
                    mode: if def.mode == Some(ModeDef::Open) { Mode::Open } else { Mode::Closed },
                    side,
                    groups: def.groups.iter().map(|&g| GroupId(g)).collect(),
                }
            })
            .collect();
        Some(FlowPath { client, server, src, dst, nodes, links, ges, reference: decide(&path) })
    }

    /// Links on which the policy says the payload must never be in clear: between the
    /// protecting pair, or past the GE that discards the flow.
    pub fn must_be_protected(&self) -> Vec<String> {
        let pos = |node: NodeId| self.nodes.iter().position(|&n| n == node);
        match self.reference.outcome {
            Outcome::Protected { encryptor, decryptor, .. } => {
                let (Some(e), Some(d)) = (pos(self.ges[encryptor]), pos(self.ges[decryptor])) else {
                    return Vec::new();
                };
                self.links[e.min(d)..e.max(d)].to_vec()
            }
            Outcome::Discarded { at } => {
                let Some(p) = pos(self.ges[at]) else { return Vec::new() };
                self.links[p..].to_vec()
            }
            Outcome::Plaintext => Vec::new(),
        }
    }
}

/// One GE's decision for a flow, as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedDecision {
    /// Was the negotiation for the flow's own direction (client to server)?
    pub same_direction: bool,
    pub action: FlowAction,
    pub group: Option<u16>,
    pub encrypted_by: Option<String>,
    pub decrypted_by: Option<String>,
}

/// What the simulator or the lab saw of a flow.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Both directions' payloads arrived.
    pub delivered: bool,
    /// The latest decision of each GE on the path.
    pub decisions: HashMap<NodeId, ObservedDecision>,
    /// GEs seen dropping the flow as discarded, in any order.
    pub discarded_by: Vec<NodeId>,
    /// Links on which a payload of the flow was seen in clear (any order, no duplicates).
    pub plaintext_links: Vec<String>,
    pub setup_us: Option<u64>,
}

/// The flow's report, and whether its payload leaked where the policy forbids it.
pub fn flow_report(def: &FlowDef, path: &FlowPath, topo: &Topology, obs: &Observation) -> (FlowReport, bool) {
    let mut actions = serde_json::Map::new();
    let mut encrypted = false;
    for &n in &path.ges {
        let a = obs
            .decisions
            .get(&n)
            .map(|d| if d.same_direction { d.action } else { d.action.reversed() })
            .unwrap_or(if obs.delivered { FlowAction::Relay } else { FlowAction::Discard });
        encrypted |= matches!(a, FlowAction::Encrypt | FlowAction::Decrypt);
        actions.insert(topo.names[n].clone(), serde_json::Value::String(a.as_str().to_owned()));
    }
    let outcome = match (obs.delivered, encrypted) {
        (false, _) => ExpectOutcome::Discarded,
        (true, true) => ExpectOutcome::Protected,
        (true, false) => ExpectOutcome::Plaintext,
    };
    let (group, encrypted_by, decrypted_by) = match (outcome, path.ges.iter().find_map(|n| obs.decisions.get(n))) {
        (ExpectOutcome::Protected, Some(d)) => {
            let (e, x) = if d.same_direction {
                (d.encrypted_by.clone(), d.decrypted_by.clone())
            } else {
                (d.decrypted_by.clone(), d.encrypted_by.clone())
            };
            (d.group, e, x)
        }
        _ => (None, None, None),
    };
    let discarded_at = (outcome == ExpectOutcome::Discarded)
        .then(|| {
            path.ges
                .iter()
                .find(|n| obs.discarded_by.contains(n))
                .or_else(|| {
                    path.ges.iter().find(|&&n| actions.get(&topo.names[n]).and_then(|v| v.as_str()) == Some("discard"))
                })
                .map(|&n| topo.names[n].clone())
        })
        .flatten();
    // In clear: the path's links in order, then any others.
    let mut plaintext_on: Vec<String> =
        path.links.iter().filter(|l| obs.plaintext_links.contains(l)).cloned().collect();
    plaintext_on.extend(obs.plaintext_links.iter().filter(|l| !path.links.contains(l)).cloned());
    plaintext_on.dedup();
    let must = path.must_be_protected();
    let leaked = plaintext_on.iter().any(|l| must.contains(l));
    let as_expected = def.expect.is_none_or(|e| e == outcome) && def.group.is_none_or(|g| group == Some(g));
    let report = FlowReport {
        name: def.name.clone(),
        from: def.from.clone(),
        to: def.to.clone(),
        proto: def.proto.as_str().to_owned(),
        port: def.port,
        outcome: outcome.as_str().to_owned(),
        delivered: obs.delivered,
        group,
        encrypted_by,
        decrypted_by,
        discarded_at,
        actions,
        plaintext_on,
        setup_us: if obs.delivered { obs.setup_us } else { None },
        expect: def.expect.map(|e| e.as_str().to_owned()),
        as_expected,
    };
    (report, leaked)
}

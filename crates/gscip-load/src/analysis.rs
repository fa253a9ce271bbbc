//! Which elements must protect traffic between which others: SPEC section 3 applied to every
//! pair of hosts of a scenario. This is what an IPsec administrator has to configure by hand
//! (seed 001 §5.2: "ST1 and ST2 need transport-mode policies for each other, ST2 and ST3 for
//! the server, ..."), and what GSCIP's DPRP works out by itself at the start of each flow.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use gscip_core::policy::{FlowAction, Outcome};
use gscip_sim::paths::FlowPath;
use gscip_sim::scenario::NodeKind;
use gscip_sim::topology::{NodeId, Topology};
use gscip_sim::Scenario;

/// Two hosts that may talk to each other, and the group that protects them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Protects {
    pub a: String,
    pub b: String,
    pub group: u16,
}

/// The result of applying SPEC section 3 to every pair of hosts.
#[derive(Debug, Default)]
pub(crate) struct Analysis {
    /// Element pairs (lower node index first) that protect some host pair, with those pairs.
    pub sa: BTreeMap<(NodeId, NodeId), BTreeSet<Protects>>,
    /// Element pairs SPEC section 3 needs but the scenario's `[load] ipsec_peers` design
    /// leaves out (names, in node order), with the host pairs they would protect.
    pub left_out: Vec<(String, String, BTreeSet<Protects>)>,
    /// Gateways (router GEs) that must pass traffic they do not protect themselves
    /// (SPEC `relay` or `plain`), with the host pairs concerned.
    pub passes: BTreeMap<NodeId, BTreeSet<(String, String)>>,
}

/// Hosts: the nodes whose users communicate. GES hosts and plain hosts (terminals and the
/// servers behind a GEA); routers (GEN, GNAT, GSRA, plain routers, NATs) only forward.
fn is_host(s: &Scenario, n: NodeId) -> bool {
    let node = &s.nodes[n];
    matches!(node.kind, NodeKind::Ges | NodeKind::Term) && !node.interfaces.is_empty()
}

/// Applies SPEC section 3 to every unordered pair of hosts, for every IP family both have,
/// along the path the simulator's routing gives (longest prefix, then gateway; through the
/// GEA in front of a server). A pair that cannot reach each other in both directions cannot
/// communicate and needs nothing. Element pairs outside the scenario's `[load] ipsec_peers`
/// design get no IPsec policy; they are listed in `left_out`.
pub(crate) fn analyse(s: &Scenario, topo: &Topology) -> Analysis {
    let mut out = Analysis::default();
    let hosts: Vec<NodeId> = (0..s.nodes.len()).filter(|&n| is_host(s, n)).collect();
    for (x, &i) in hosts.iter().enumerate() {
        for &j in &hosts[x + 1..] {
            for v4 in [true, false] {
                let first = |n: NodeId| topo.addresses(n).find(|a: &IpAddr| a.is_ipv4() == v4);
                let (Some(src), Some(dst)) = (first(i), first(j)) else { continue };
                let Some(fp) = FlowPath::between(s, topo, i, j, src, dst) else { continue };
                let (ges, d) = (fp.ges, fp.reference);
                let pair = (s.nodes[i].name.clone(), s.nodes[j].name.clone());
                if let Outcome::Protected { encryptor, decryptor, group } = d.outcome {
                    let (Some(&e), Some(&f)) = (ges.get(encryptor), ges.get(decryptor)) else { continue };
                    if e == f {
                        continue;
                    }
                    let key = (e.min(f), e.max(f));
                    out.sa.entry(key).or_default().insert(Protects {
                        a: pair.0.clone(),
                        b: pair.1.clone(),
                        group: group.0,
                    });
                }
                for (k, a) in d.actions.iter().enumerate() {
                    if matches!(a, FlowAction::Relay | FlowAction::Plain) {
                        if let Some(&g) = ges.get(k) {
                            if topo.kinds[g].is_router() {
                                out.passes.entry(g).or_default().insert(pair.clone());
                            }
                        }
                    }
                }
            }
        }
    }
    let sa = std::mem::take(&mut out.sa);
    for ((x, y), pairs) in sa {
        let (a, b) = (&s.nodes[x].name, &s.nodes[y].name);
        if s.load.allows_ipsec(a, b) {
            out.sa.insert((x, y), pairs);
        } else {
            out.left_out.push((a.clone(), b.clone(), pairs));
        }
    }
    out
}

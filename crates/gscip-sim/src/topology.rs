//! The network of a scenario: who is attached where, how each node routes (longest prefix
//! over connected subnets and static routes, then the gateway: SPEC section 11.1), what each GE
//! protects, and the path a packet takes.
//!
//! A GEA has no address: it is a transparent bridge that splits its servers' subnet into the
//! subnet proper and the link `GEA-NAME:inside`, on which the servers sit.

use crate::scenario::{NodeKind, Scenario};
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::IpAddr;

pub type NodeId = usize;

/// One step of a path: the packet crosses `link` and arrives at `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hop {
    pub link: String,
    pub node: NodeId,
}

/// Where a packet goes from a node: out on `link` toward the node owning `next_hop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub link: &'a str,
    pub next_hop: IpAddr,
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub names: Vec<String>,
    pub kinds: Vec<NodeKind>,
    /// (subnet, prefix, address, inside) per node.
    pub interfaces: Vec<Vec<(String, IpNet, IpAddr, bool)>>,
    routes: Vec<Vec<(IpNet, IpAddr)>>,
    gateways: Vec<Option<IpAddr>>,
    /// Server node -> the GEA in front of it.
    pub gea_of: HashMap<NodeId, NodeId>,
    /// GEA -> its servers.
    pub servers_of: HashMap<NodeId, Vec<NodeId>>,
    /// (link, address) -> node.
    owners: HashMap<(String, IpAddr), NodeId>,
    pub by_name: HashMap<String, NodeId>,
}

impl Topology {
    pub fn new(s: &Scenario) -> Topology {
        let by_name: HashMap<String, NodeId> = s.nodes.iter().enumerate().map(|(i, n)| (n.name.clone(), i)).collect();
        let prefix_of: HashMap<&str, IpNet> = s.subnets.iter().map(|sn| (sn.name.as_str(), sn.prefix)).collect();
        let mut gea_of = HashMap::new();
        let mut servers_of: HashMap<NodeId, Vec<NodeId>> = HashMap::new();
        for (i, n) in s.nodes.iter().enumerate() {
            for p in &n.protects {
                if let Some(&srv) = by_name.get(p) {
                    gea_of.insert(srv, i);
                    servers_of.entry(i).or_default().push(srv);
                }
            }
        }
        let mut owners = HashMap::new();
        let interfaces: Vec<Vec<(String, IpNet, IpAddr, bool)>> = s
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                n.interfaces
                    .iter()
                    .map(|ifc| {
                        owners.insert((ifc.subnet.clone(), ifc.address), i);
                        let prefix =
                            prefix_of.get(ifc.subnet.as_str()).copied().unwrap_or_else(|| host_net(ifc.address));
                        (ifc.subnet.clone(), prefix, ifc.address, ifc.inside)
                    })
                    .collect()
            })
            .collect();
        Topology {
            names: s.nodes.iter().map(|n| n.name.clone()).collect(),
            kinds: s.nodes.iter().map(|n| n.kind).collect(),
            interfaces,
            routes: s.nodes.iter().map(|n| n.routes.iter().map(|r| (r.to, r.via)).collect()).collect(),
            gateways: s.nodes.iter().map(|n| n.gateway).collect(),
            gea_of,
            servers_of,
            owners,
            by_name,
        }
    }

    pub fn addresses(&self, n: NodeId) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces[n].iter().map(|i| i.2)
    }

    pub fn owns(&self, n: NodeId, a: IpAddr) -> bool {
        self.addresses(n).any(|x| x == a)
    }

    /// The node that owns `a` on `link`.
    pub fn owner(&self, link: &str, a: IpAddr) -> Option<NodeId> {
        self.owners.get(&(link.to_owned(), a)).copied()
    }

    /// The node that owns `a` anywhere.
    pub fn owner_anywhere(&self, a: IpAddr) -> Option<NodeId> {
        self.owners.iter().find(|((_, x), _)| *x == a).map(|(_, n)| *n)
    }

    /// The routing decision of node `n` for `dst`: longest prefix over connected subnets and
    /// static routes, then the gateway.
    pub fn route(&self, n: NodeId, dst: IpAddr) -> Option<Route<'_>> {
        let mut best: Option<(u8, Route<'_>)> = None;
        for (link, prefix, _, _) in &self.interfaces[n] {
            if prefix.contains(&dst) && best.as_ref().is_none_or(|(l, _)| prefix.prefix_len() > *l) {
                best = Some((prefix.prefix_len(), Route { link, next_hop: dst }));
            }
        }
        for (to, via) in &self.routes[n] {
            if to.contains(&dst) && best.as_ref().is_none_or(|(l, _)| to.prefix_len() > *l) {
                if let Some(link) = self.link_towards(n, *via) {
                    best = Some((to.prefix_len(), Route { link, next_hop: *via }));
                }
            }
        }
        if let Some((_, r)) = best {
            return Some(r);
        }
        let gw = self.gateways[n].filter(|g| g.is_ipv4() == dst.is_ipv4())?;
        Some(Route { link: self.link_towards(n, gw)?, next_hop: gw })
    }

    fn link_towards(&self, n: NodeId, via: IpAddr) -> Option<&str> {
        self.interfaces[n].iter().find(|(_, p, _, _)| p.contains(&via)).map(|(l, _, _, _)| l.as_str())
    }

    /// The name of the link between a GEA and its servers.
    pub fn inside_link(&self, gea: NodeId) -> String {
        format!("{}:inside", self.names[gea])
    }

    /// The hops of one link-layer delivery from `from` over `link` to the owner of `next_hop`,
    /// through a GEA when one stands between them.
    pub fn deliveries(&self, from: NodeId, link: &str, next_hop: IpAddr) -> Option<Vec<Hop>> {
        let target = self.owner(link, next_hop)?;
        let from_gea = self.gea_of.get(&from).copied();
        let to_gea = self.gea_of.get(&target).copied();
        let hop = |link: String, node: NodeId| Hop { link, node };
        Some(match (from_gea, to_gea) {
            (Some(g), Some(h)) if g == h => vec![hop(self.inside_link(g), target)],
            (Some(g), Some(h)) => {
                vec![hop(self.inside_link(g), g), hop(link.to_owned(), h), hop(self.inside_link(h), target)]
            }
            (Some(g), None) => vec![hop(self.inside_link(g), g), hop(link.to_owned(), target)],
            (None, Some(h)) => vec![hop(link.to_owned(), h), hop(self.inside_link(h), target)],
            (None, None) => vec![hop(link.to_owned(), target)],
        })
    }

    /// The route a packet from `from` to `dst` takes, hop by hop, as the simulator forwards it.
    pub fn trace(&self, from: NodeId, dst: IpAddr) -> Option<Vec<Hop>> {
        let mut hops = Vec::new();
        let mut at = from;
        for _ in 0..64 {
            if self.owns(at, dst) {
                return Some(hops);
            }
            if at != from && !self.kinds[at].is_router() {
                return None;
            }
            let r = self.route(at, dst)?;
            let d = self.deliveries(at, r.link, r.next_hop)?;
            at = d.last()?.node;
            hops.extend(d);
        }
        None
    }

    /// What a GE protects (SPEC section 3): its own addresses (GES); its servers (GEA); its
    /// inside subnets and the networks routed behind them through inside interfaces (GEN).
    pub fn protected(&self, n: NodeId) -> Vec<IpNet> {
        match self.kinds[n] {
            NodeKind::Gea => self
                .servers_of
                .get(&n)
                .into_iter()
                .flatten()
                .flat_map(|&s| self.addresses(s).map(host_net).collect::<Vec<_>>())
                .collect(),
            k if k.is_router() => {
                let inside: Vec<&(String, IpNet, IpAddr, bool)> = self.interfaces[n].iter().filter(|i| i.3).collect();
                let mut nets: Vec<IpNet> = inside.iter().map(|i| i.1).collect();
                for (to, via) in &self.routes[n] {
                    if inside.iter().any(|i| i.1.contains(via)) {
                        nets.push(*to);
                    }
                }
                nets
            }
            _ => self.addresses(n).map(host_net).collect(),
        }
    }
}

pub fn host_net(a: IpAddr) -> IpNet {
    IpNet::new(a, if a.is_ipv4() { 32 } else { 128 }).unwrap_or_else(|_| IpNet::from(a))
}

//! The GSCIP lab's network: a scenario (SPEC section 11.1) built out of Linux network
//! namespaces.
//!
//! * one namespace per node, named `PREFIX-NODE`;
//! * one namespace `PREFIX-sw` holding a bridge per subnet (the "switches"), so nothing is
//!   created in the machine's own namespace and nothing is ever routed to its uplink;
//! * a veth pair per interface: `ethK` in the node, a port of its subnet's bridge in `PREFIX-sw`;
//! * the scenario's addresses, static routes and gateway; forwarding on routers;
//! * a GEA as a real transparent bridge: its namespace bridges a port on the servers' subnet
//!   and a port on the link `GEA:inside`, a bridge of its own in `PREFIX-sw` on which its
//!   servers sit (bridged packets traverse the GEA namespace's netfilter FORWARD hooks).
//!
//! [`Lab`] removes everything it created when dropped, also when building fails half way;
//! [`Lab::keep`] leaves it up and [`clean`] removes a kept lab by prefix.
//!
//! The data plane (`gscipd` in every GE namespace) and the flows come with issue "GSCIP on real
//! Linux hosts"; this module is the network they run on.
#![forbid(unsafe_code)]

pub mod gms;
pub mod load;
pub mod run;

use gscip_sim::scenario::{NodeKind, Scenario};
use std::collections::HashMap;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// What can go wrong, and whose fault it is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// The environment cannot run a lab (not root, a tool missing).
    #[error("{0}")]
    Environment(String),
    /// A name the lab needs is already taken.
    #[error("network namespace {0:?} already exists: another lab is running, or one was kept; remove it with `gscip lab clean {1}` or `ip netns del {0}`")]
    NameTaken(String, String),
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    /// The scenario asks for something the lab cannot build.
    #[error("{0}")]
    Scenario(String),
}

/// Runs a command; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Environment(format!("cannot run `{program}`: {e} (is it installed?)")))?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    run("ip", args).map(|_| ())
}

/// Checks that this process can build a lab: root, and `ip` from iproute2.
pub fn check_environment() -> Result<(), LabError> {
    let uid = run("id", &["-u"])?;
    if uid.trim() != "0" {
        return Err(LabError::Environment(
            "the lab needs root (network namespaces, veth links): run it as root".into(),
        ));
    }
    run("ip", &["-V"])
        .map_err(|_| LabError::Environment("`ip` (iproute2) is missing: apt-get install iproute2".into()))?;
    Ok(())
}

/// A binary of this workspace as built (`target/debug`, else `target/release`), for tests
/// that run the daemons; panics with what to build when it is missing.
pub fn workspace_binary(name: &str) -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target");
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{name} is not built: run `cargo build --workspace --bins` (make test does)"))
}

/// Namespaces whose name starts with `PREFIX-`.
pub fn namespaces_with_prefix(prefix: &str) -> Result<Vec<String>, LabError> {
    let out = run("ip", &["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(str::to_owned)
        .collect())
}

/// Stops every process still running in a namespace (daemons, applications, capture):
/// deleting a namespace does not.
fn kill_processes(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-TERM", pid]);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
    }
}

/// Removes every namespace of a (kept or crashed) lab, and what runs in them.
pub fn clean(prefix: &str) -> Result<usize, LabError> {
    let names = namespaces_with_prefix(prefix)?;
    for n in &names {
        kill_processes(n);
        ip(&["netns", "del", n])?;
    }
    Ok(names.len())
}

/// The lab's management network (see [`Lab::add_management`]).
#[derive(Debug, Clone)]
pub struct Management {
    /// Where `gmsd` runs.
    pub namespace: String,
    /// `gmsd`'s address for the GEs.
    pub gms_address: IpAddr,
    /// `gmsd`'s address for the administrator (this namespace).
    pub admin_address: IpAddr,
    /// Each GE's management address.
    pub ge_addresses: HashMap<String, IpAddr>,
}

/// A lab network that is up. Dropping it removes it.
#[derive(Debug)]
pub struct Lab {
    pub prefix: String,
    /// Node name -> namespace.
    pub namespaces: HashMap<String, String>,
    switch: String,
    created: Vec<String>,
    keep: bool,
}

impl Lab {
    /// Builds the scenario's network. `prefix` names everything (keep it short: 2-8 of
    /// [a-z0-9]).
    pub fn build(s: &Scenario, prefix: &str) -> Result<Lab, LabError> {
        if prefix.is_empty()
            || prefix.len() > 8
            || !prefix.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(LabError::Scenario(format!("lab prefix {prefix:?}: use 1 to 8 of [a-z0-9]")));
        }
        check_environment()?;
        let switch = format!("{prefix}-sw");
        let wanted: Vec<String> =
            std::iter::once(switch.clone()).chain(s.nodes.iter().map(|n| format!("{prefix}-{}", n.name))).collect();
        let existing = namespaces_with_prefix(prefix)?;
        if let Some(taken) = wanted.iter().find(|n| existing.contains(n)) {
            return Err(LabError::NameTaken(taken.clone(), prefix.to_owned()));
        }
        let mut lab = Lab {
            prefix: prefix.to_owned(),
            namespaces: s.nodes.iter().map(|n| (n.name.clone(), format!("{prefix}-{}", n.name))).collect(),
            switch,
            created: Vec::new(),
            keep: false,
        };
        lab.create(s)?; // on error, Drop removes what was made
        Ok(lab)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<(), LabError> {
        ip(&["netns", "add", ns])?;
        self.created.push(ns.to_owned());
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
        // No duplicate address detection: addresses are usable at once.
        sysctl(ns, "net.ipv6.conf.all.accept_dad", "0")?;
        sysctl(ns, "net.ipv6.conf.default.accept_dad", "0")?;
        Ok(())
    }

    fn create(&mut self, s: &Scenario) -> Result<(), LabError> {
        let sw = self.switch.clone();
        self.add_namespace(&sw)?;
        // A bridge per subnet, and one per GEA for the link to its servers.
        let mut bridge: HashMap<String, String> = HashMap::new();
        for (i, sub) in s.subnets.iter().enumerate() {
            let b = format!("br{i}");
            ip(&["-n", &sw, "link", "add", &b, "type", "bridge"])?;
            ip(&["-n", &sw, "link", "set", &b, "up"])?;
            bridge.insert(sub.name.clone(), b);
        }
        // A GEA bridges each subnet its servers are on (two for a dual-stack server) to a
        // bridge of its own for that subnet's side of `GEA:inside`.
        let mut gea_of: HashMap<&str, usize> = HashMap::new();
        for (gi, n) in s.nodes.iter().enumerate().filter(|(_, n)| n.kind == NodeKind::Gea) {
            for (k, _) in gea_subnets(s, n).iter().enumerate() {
                let b = format!("gi{gi}-{k}");
                ip(&["-n", &sw, "link", "add", &b, "type", "bridge"])?;
                ip(&["-n", &sw, "link", "set", &b, "up"])?;
            }
            for server in &n.protects {
                gea_of.insert(server.as_str(), gi);
            }
        }
        for (ni, n) in s.nodes.iter().enumerate() {
            let ns = self.namespaces[&n.name].clone();
            self.add_namespace(&ns)?;
            if n.kind.is_router() {
                sysctl(&ns, "net.ipv4.ip_forward", "1")?;
                sysctl(&ns, "net.ipv6.conf.all.forwarding", "1")?;
            }
            for (k, ifc) in n.interfaces.iter().enumerate() {
                let inner = format!("eth{k}");
                let outer = format!("v{ni}-{k}");
                let attach = match gea_of.get(n.name.as_str()) {
                    Some(&gi) => {
                        let k = gea_subnets(s, &s.nodes[gi]).iter().position(|x| *x == ifc.subnet).unwrap_or(0);
                        format!("gi{gi}-{k}")
                    }
                    None => bridge
                        .get(&ifc.subnet)
                        .cloned()
                        .ok_or_else(|| LabError::Scenario(format!("node {}: unknown subnet {}", n.name, ifc.subnet)))?,
                };
                veth(&ns, &inner, &sw, &outer, &attach)?;
                let prefix = s
                    .subnets
                    .iter()
                    .find(|x| x.name == ifc.subnet)
                    .map(|x| x.prefix.prefix_len())
                    .ok_or_else(|| LabError::Scenario(format!("node {}: unknown subnet {}", n.name, ifc.subnet)))?;
                let cidr = format!("{}/{prefix}", ifc.address);
                let mut args = vec!["-n", ns.as_str(), "addr", "add", cidr.as_str(), "dev", inner.as_str()];
                if ifc.address.is_ipv6() {
                    args.push("nodad");
                }
                ip(&args)?;
            }
            for r in &n.routes {
                let to = r.to.to_string();
                let via = r.via.to_string();
                let fam = if r.via.is_ipv6() { "-6" } else { "-4" };
                ip(&["-n", &ns, fam, "route", "add", &to, "via", &via])?;
            }
            if let Some(gw) = n.gateway {
                let fam = if gw.is_ipv6() { "-6" } else { "-4" };
                ip(&["-n", &ns, fam, "route", "add", "default", "via", &gw.to_string()])?;
            }
            if n.kind == NodeKind::Gea {
                // The transparent bridges: for each subnet of its servers, `brK` joins `outK`
                // (on the subnet) and `inK` (on GEA:inside).
                let subnets = gea_subnets(s, n);
                if subnets.is_empty() {
                    return Err(LabError::Scenario(format!("GEA {}: its servers have no interface", n.name)));
                }
                for (k, subnet) in subnets.iter().enumerate() {
                    let outside = bridge
                        .get(subnet)
                        .cloned()
                        .ok_or_else(|| LabError::Scenario(format!("GEA {}: unknown subnet {subnet}", n.name)))?;
                    let br = format!("br{k}");
                    let (out, inn) = (format!("out{k}"), format!("in{k}"));
                    ip(&["-n", &ns, "link", "add", &br, "type", "bridge"])?;
                    veth(&ns, &out, &sw, &format!("g{ni}o{k}"), &outside)?;
                    veth(&ns, &inn, &sw, &format!("g{ni}i{k}"), &format!("gi{ni}-{k}"))?;
                    ip(&["-n", &ns, "link", "set", &out, "master", &br])?;
                    ip(&["-n", &ns, "link", "set", &inn, "master", &br])?;
                    ip(&["-n", &ns, "link", "set", &br, "up"])?;
                }
            }
        }
        Ok(())
    }

    /// Adds the out-of-band management network the real GMS runs on: a namespace `PREFIX-gms`
    /// for `gmsd` and a bridge `mgmt` in `PREFIX-sw` to which every GE gets an interface `m0`
    /// (198.18.0.0/16; `gmsd` at 198.18.0.1). The administrator (the process building the lab)
    /// reaches `gmsd` over one veth pair `PREFIX-gms` in this namespace (a /30 of
    /// 198.19.0.0/16: .1 here, .2 in `PREFIX-gms`); `PREFIX-gms` forwards nothing, so no lab node can reach this
    /// namespace, and nothing is routed beyond the lab.
    pub fn add_management(&mut self, s: &Scenario) -> Result<Management, LabError> {
        let gms_ns = format!("{}-gms", self.prefix);
        if s.nodes.iter().any(|n| n.name == "gms") || namespaces_with_prefix(&self.prefix)?.contains(&gms_ns) {
            return Err(LabError::NameTaken(gms_ns, self.prefix.clone()));
        }
        self.add_namespace(&gms_ns)?;
        let sw = self.switch.clone();
        ip(&["-n", &sw, "link", "add", "mgmt", "type", "bridge"])?;
        ip(&["-n", &sw, "link", "set", "mgmt", "up"])?;
        veth(&gms_ns, "m0", &sw, "mg", "mgmt")?;
        ip(&["-n", &gms_ns, "addr", "add", "198.18.0.1/16", "dev", "m0"])?;
        let mut ge_addrs = HashMap::new();
        for (ni, n) in s.nodes.iter().enumerate().filter(|(_, n)| n.kind.is_ge()) {
            let ns = self.namespaces[&n.name].clone();
            veth(&ns, "m0", &sw, &format!("m{ni}"), "mgmt")?;
            let host = ni + 2;
            let addr = format!("198.18.{}.{}", host / 256, host % 256);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/16"), "dev", "m0"])?;
            ge_addrs.insert(n.name.clone(), addr.parse().map_err(|_| LabError::Scenario("address".into()))?);
        }
        // A /30 of 198.19.0.0/16 of its own (labs may run side by side): chosen from the
        // prefix, skipping any already on an interface here.
        let start = self.prefix.bytes().fold(2_166_136_261u32, |h, b| (h ^ u32::from(b)).wrapping_mul(16_777_619));
        let subnet = (0..64u32)
            .map(|k| (start.wrapping_add(k) % 16_384) * 4)
            .find(|base| {
                let net = format!("198.19.{}.{}/30", base / 256, base % 256);
                run("ip", &["-o", "addr", "show", "to", &net]).map(|o| o.trim().is_empty()).unwrap_or(false)
            })
            .ok_or_else(|| LabError::Environment("no free /30 in 198.19.0.0/16 for the GMS admin link".into()))?;
        let here_addr = format!("198.19.{}.{}", subnet / 256, subnet % 256 + 1);
        let there_addr = format!("198.19.{}.{}", subnet / 256, subnet % 256 + 2);
        let here = format!("{}-gms", self.prefix);
        ip(&["link", "add", &here, "type", "veth", "peer", "name", "a0", "netns", &gms_ns])?;
        ip(&["addr", "add", &format!("{here_addr}/30"), "dev", &here])?;
        ip(&["link", "set", &here, "up"])?;
        ip(&["-n", &gms_ns, "addr", "add", &format!("{there_addr}/30"), "dev", "a0"])?;
        ip(&["-n", &gms_ns, "link", "set", "a0", "up"])?;
        sysctl(&gms_ns, "net.ipv4.ip_forward", "0")?;
        Ok(Management {
            namespace: gms_ns,
            gms_address: "198.18.0.1".parse().map_err(|_| LabError::Scenario("address".into()))?,
            admin_address: there_addr.parse().map_err(|_| LabError::Scenario("address".into()))?,
            ge_addresses: ge_addrs,
        })
    }

    /// Leaves the lab up when dropped (`--keep`); [`clean`] removes it later.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// The namespace of a node.
    pub fn namespace(&self, node: &str) -> Option<&str> {
        self.namespaces.get(node).map(String::as_str)
    }

    /// Runs a command inside a node's namespace.
    pub fn exec(&self, node: &str, program: &str, args: &[&str]) -> Result<String, LabError> {
        let ns = self.namespace(node).ok_or_else(|| LabError::Scenario(format!("no node {node:?}")))?;
        let mut full = vec!["netns", "exec", ns, program];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Turns segmentation offloads off (`tso`, `gso`, `gro` off: packets on the lab links are
    /// then what a wire carries after a real NIC's TSO, at most one MTU each) or back to the
    /// veth defaults (`tso`, `gso` on; `gro` off), on every link of every namespace of the lab
    /// (the nodes' interfaces, the switch's ports and bridges). Returns how many devices.
    pub fn set_offloads(&self, on: bool) -> Result<usize, LabError> {
        let features: &[&str] =
            if on { &["tso", "on", "gso", "on", "gro", "off"] } else { &["tso", "off", "gso", "off", "gro", "off"] };
        let mut namespaces: Vec<&String> = self.namespaces.values().collect();
        namespaces.push(&self.switch);
        namespaces.sort();
        namespaces.dedup();
        let mut n = 0;
        for ns in namespaces {
            let links = run("ip", &["-n", ns, "-o", "link", "show"])?;
            for name in links.lines().filter_map(|l| l.split(": ").nth(1)).map(|d| d.split('@').next().unwrap_or(d)) {
                if name == "lo" {
                    continue;
                }
                let mut args = vec!["netns", "exec", ns, "ethtool", "-K", name];
                args.extend_from_slice(features);
                run("ip", &args)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// How to look around a kept lab, for `--keep`.
    pub fn how_to_enter(&self) -> String {
        let mut names: Vec<(&String, &String)> = self.namespaces.iter().collect();
        names.sort();
        let mut s = String::from("The lab is up. Enter a node with `ip netns exec NAMESPACE bash`:\n");
        for (node, ns) in names {
            s.push_str(&format!("  {node:<16} ip netns exec {ns} bash\n"));
        }
        s.push_str(&format!("Remove it with `gscip lab clean {}` (or `ip netns del` each).\n", self.prefix));
        s
    }

    /// Removes the lab now.
    pub fn teardown(mut self) -> Result<(), LabError> {
        self.remove()
    }

    fn remove(&mut self) -> Result<(), LabError> {
        let mut first_err = None;
        for ns in self.created.drain(..).rev() {
            kill_processes(&ns);
            if let Err(e) = ip(&["netns", "del", &ns]) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.remove();
        }
    }
}

/// The subnets a GEA's servers are on, in order of first appearance.
pub fn gea_subnets(s: &Scenario, gea: &gscip_sim::scenario::NodeDef) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for srv in &gea.protects {
        for i in s.nodes.iter().filter(|x| &x.name == srv).flat_map(|x| x.interfaces.iter()) {
            if !v.contains(&i.subnet) {
                v.push(i.subnet.clone());
            }
        }
    }
    v
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), LabError> {
    run("ip", &["netns", "exec", ns, "sysctl", "-q", "-w", &format!("{key}={value}")]).map(|_| ())
}

/// A veth pair: `inner` in `ns`, `outer` in `sw` attached to `bridge`; both up.
fn veth(ns: &str, inner: &str, sw: &str, outer: &str, bridge: &str) -> Result<(), LabError> {
    ip(&["-n", ns, "link", "add", inner, "type", "veth", "peer", "name", outer, "netns", sw])?;
    ip(&["-n", sw, "link", "set", outer, "master", bridge])?;
    ip(&["-n", sw, "link", "set", outer, "up"])?;
    ip(&["-n", ns, "link", "set", inner, "up"])?;
    Ok(())
}

/// An address of `node` in the family of `peer` (for tests and flows).
pub fn address_for(s: &Scenario, node: &str, family_of: IpAddr) -> Option<IpAddr> {
    s.nodes
        .iter()
        .find(|n| n.name == node)?
        .interfaces
        .iter()
        .map(|i| i.address)
        .find(|a| a.is_ipv4() == family_of.is_ipv4())
}

//! Scenario files (SPEC section 11.1, format version 1).
//!
//! A scenario is a TOML file that describes a network (groups, subnets, nodes) and the
//! flows to try on it. The same file drives the simulator (`gscip sim`) and the lab
//! (`gscip lab run`). This module parses and validates it; it never panics on any input,
//! and every error names the file, the 1-based line and the field it is about:
//!
//! ```text
//! examples/bad.toml:14: node "gen" field `mode`: required for GE kind `gen` (closed | open)
//! ```
//!
//! Parsing happens in two steps. The TOML text is first read into a small value tree in
//! which every value keeps its byte span (only TOML syntax errors can fail here); the tree
//! is then checked against the schema by hand, so that unknown fields, wrong types,
//! missing fields and cross references all produce the same kind of precise error.
//!
//! The full format, our `[sim]` addition and every validation rule are documented in
//! `docs/scenarios.md`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

// ---------------------------------------------------------------------------------------
// Public model
// ---------------------------------------------------------------------------------------

/// A validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The scenario's name (required, non-empty).
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// `[[group]]` tables, in file order.
    pub groups: Vec<GroupDef>,
    /// `[[subnet]]` tables, in file order.
    pub subnets: Vec<SubnetDef>,
    /// `[[node]]` tables, in file order.
    pub nodes: Vec<NodeDef>,
    /// `[[flow]]` tables, in file order.
    pub flows: Vec<FlowDef>,
    /// The optional `[sim]` table (our addition to SPEC 11.1), defaults filled in.
    pub sim: SimOptions,
    /// The optional `[load]` table (our addition, read by `gscip load-report` only).
    pub load: LoadOptions,
}

/// A communication group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDef {
    /// Group number, 1..=65535, unique.
    pub id: u16,
    /// Optional human name.
    pub name: Option<String>,
}

/// A link (one broadcast domain) and its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetDef {
    /// Link name, unique.
    pub name: String,
    /// The link's prefix (host bits zero).
    pub prefix: IpNet,
}

/// What a node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    /// GSCIP Element software on a host; protects that host.
    Ges,
    /// GSCIP router; protects the plain terminals on its inside subnets.
    Gen,
    /// Transparent bridge in front of servers (`protects`).
    Gea,
    /// A GEN that also does NAT (masquerades inside → outside).
    Gnat,
    /// Remote-access gateway router.
    Gsra,
    /// A plain host with no GE (a terminal or a server).
    Term,
    /// A plain router.
    Router,
    /// A plain router that masquerades inside → outside.
    Nat,
}

impl NodeKind {
    /// Every kind, in the order the format lists them.
    pub const ALL: [NodeKind; 8] = [
        NodeKind::Ges,
        NodeKind::Gen,
        NodeKind::Gea,
        NodeKind::Gnat,
        NodeKind::Gsra,
        NodeKind::Term,
        NodeKind::Router,
        NodeKind::Nat,
    ];

    /// Is this a GSCIP Element (has a mode and groups)?
    pub fn is_ge(self) -> bool {
        matches!(self, NodeKind::Ges | NodeKind::Gen | NodeKind::Gea | NodeKind::Gnat | NodeKind::Gsra)
    }

    /// Does this node forward packets between its interfaces?
    pub fn is_router(self) -> bool {
        matches!(self, NodeKind::Gen | NodeKind::Gnat | NodeKind::Gsra | NodeKind::Router | NodeKind::Nat)
    }

    /// Does this kind masquerade from its inside to its outside interfaces?
    pub fn is_nat(self) -> bool {
        matches!(self, NodeKind::Gnat | NodeKind::Nat)
    }

    /// May an interface of this kind be marked `inside = true`?
    pub fn has_inside(self) -> bool {
        matches!(self, NodeKind::Gen | NodeKind::Gnat | NodeKind::Gsra | NodeKind::Nat)
    }

    /// The keyword used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Ges => "ges",
            NodeKind::Gen => "gen",
            NodeKind::Gea => "gea",
            NodeKind::Gnat => "gnat",
            NodeKind::Gsra => "gsra",
            NodeKind::Term => "term",
            NodeKind::Router => "router",
            NodeKind::Nat => "nat",
        }
    }

    /// Parse a keyword (exact, lower case).
    pub fn parse(s: &str) -> Option<NodeKind> {
        NodeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for NodeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A GE's mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeDef {
    /// CL: refuses anything not protected by a group.
    Closed,
    /// OP: may also talk in plaintext with peers that share no group.
    Open,
}

impl ModeDef {
    /// The keyword used in scenario files.
    pub fn as_str(self) -> &'static str {
        match self {
            ModeDef::Closed => "closed",
            ModeDef::Open => "open",
        }
    }

    /// Parse a keyword (exact, lower case).
    pub fn parse(s: &str) -> Option<ModeDef> {
        match s {
            "closed" => Some(ModeDef::Closed),
            "open" => Some(ModeDef::Open),
            _ => None,
        }
    }
}

impl fmt::Display for ModeDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node (host, router, or GEA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDef {
    /// Unique; also its host name.
    pub name: String,
    /// Its kind.
    pub kind: NodeKind,
    /// Present exactly for GE kinds.
    pub mode: Option<ModeDef>,
    /// Member groups (GE kinds only), in file order, no duplicates.
    pub groups: Vec<u16>,
    /// Its interfaces, in file order (empty for a GEA).
    pub interfaces: Vec<InterfaceDef>,
    /// Static routes, in file order.
    pub routes: Vec<RouteDef>,
    /// Default route.
    pub gateway: Option<IpAddr>,
    /// The nodes a GEA stands in front of (GEA only).
    pub protects: Vec<String>,
}

impl NodeDef {
    /// Every address of this node, in interface order.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.interfaces.iter().map(|i| i.address)
    }

    /// The node's interface on `subnet`, if any.
    pub fn interface_on(&self, subnet: &str) -> Option<&InterfaceDef> {
        self.interfaces.iter().find(|i| i.subnet == subnet)
    }
}

/// One interface of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceDef {
    /// The subnet (link) it is attached to.
    pub subnet: String,
    /// Its address, inside the subnet's prefix, unique in the scenario.
    pub address: IpAddr,
    /// The side a gen/gnat/gsra protects (and a nat/gnat masquerades from).
    pub inside: bool,
}

/// A static route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDef {
    /// Destination prefix (host bits zero).
    pub to: IpNet,
    /// Next hop: a forwarding node's address on a subnet this node is attached to.
    pub via: IpAddr,
}

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// TCP
    Tcp,
    /// UDP
    Udp,
}

impl Proto {
    /// `"tcp"` or `"udp"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Parse a keyword (exact, lower case).
    pub fn parse(s: &str) -> Option<Proto> {
        match s {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened (or should happen) to a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Some pair encrypted it.
    Protected,
    /// No GE encrypted it and it was delivered.
    Plaintext,
    /// A GE dropped it.
    Discarded,
}

impl Outcome {
    /// `"protected"`, `"plaintext"` or `"discarded"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Protected => "protected",
            Outcome::Plaintext => "plaintext",
            Outcome::Discarded => "discarded",
        }
    }

    /// Parse a keyword (exact, lower case).
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "protected" => Some(Outcome::Protected),
            "plaintext" => Some(Outcome::Plaintext),
            "discarded" => Some(Outcome::Discarded),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A flow to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowDef {
    /// Unique; defaults to `FROM->TO:PORT/PROTO`.
    pub name: String,
    /// Source node (has at least one interface).
    pub from: String,
    /// Destination node (has at least one interface, shares an IP family with `from`).
    pub to: String,
    /// Transport protocol.
    pub proto: Proto,
    /// Destination port, 1..=65535.
    pub port: u16,
    /// Expected outcome, if any.
    pub expect: Option<Outcome>,
    /// Expected protecting group, if any (a defined group).
    pub group: Option<u16>,
}

impl FlowDef {
    /// The default name of a flow: `FROM->TO:PORT/PROTO`.
    pub fn default_name(from: &str, to: &str, port: u16, proto: Proto) -> String {
        format!("{from}->{to}:{port}/{}", proto.as_str())
    }
}

/// Simulator options: the optional `[sim]` table (our addition to SPEC 11.1).
/// The lab ignores them.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOptions {
    /// Seed of every random choice the simulator makes (default 1).
    pub seed: u64,
    /// Probability (0..=1) that a packet is lost on a link, per link crossed (default 0).
    pub loss: f64,
    /// Probability (0..=1) that a packet is reordered on a link (default 0).
    pub reorder: f64,
    /// One-way per-link latency in microseconds (default 50).
    pub delay_us: u64,
    /// Extra random per-packet latency, uniform in 0..=jitter_us (default 0).
    pub jitter_us: u64,
}

impl SimOptions {
    /// Largest accepted `delay_us` / `jitter_us` (10 s).
    pub const MAX_DELAY_US: u64 = 10_000_000;
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions { seed: 1, loss: 0.0, reorder: 0.0, delay_us: 50, jitter_us: 0 }
    }
}

/// Options of the management-load report: the optional `[load]` table (our addition to SPEC
/// 11.1). The simulator and the lab ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `ipsec_peers = { ELEMENT = [PEER, ...] }`: an IPsec design to count instead of the
    /// one SPEC section 3 requires. For each GE listed, the only other GEs its IPsec element
    /// has security policies with (a policy toward any other peer is left out, at both ends).
    /// Sorted by element name; peers in file order.
    pub ipsec_peers: Vec<(String, Vec<String>)>,
}

impl LoadOptions {
    /// Whether the design allows an IPsec policy between elements `a` and `b`.
    pub fn allows_ipsec(&self, a: &str, b: &str) -> bool {
        let allowed = |x: &str, y: &str| {
            self.ipsec_peers.iter().find(|(e, _)| e == x).is_none_or(|(_, peers)| peers.iter().any(|p| p == y))
        };
        allowed(a, b) && allowed(b, a)
    }
}

/// A bad scenario: which file, line (1-based) and field, and what is wrong.
///
/// Displays as `FILE:LINE: FIELD: MESSAGE`, leaving out the parts that are `None`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ScenarioError {
    /// The file name as given.
    pub file: String,
    /// 1-based line, when the error is about a place in the file.
    pub line: Option<usize>,
    /// What the error is about, e.g. ``node "gen" field `mode` ``.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl ScenarioError {
    fn render(&self) -> String {
        let mut s = self.file.clone();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if let Some(field) = &self.field {
            s.push_str(": ");
            s.push_str(field);
        }
        s.push_str(": ");
        s.push_str(&self.message);
        s
    }
}

impl Scenario {
    /// Read and validate a scenario file. The error's `file` is `path` as given.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: file.clone(),
            line: None,
            field: None,
            message: format!("cannot read the scenario file: {e}"),
        })?;
        Scenario::parse(&text, &file)
    }

    /// Parse and validate scenario text; `file_name` is used in errors only.
    pub fn parse(text: &str, file_name: &str) -> Result<Scenario, ScenarioError> {
        Parser { text, file: file_name }.scenario()
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The subnet called `name`.
    pub fn subnet(&self, name: &str) -> Option<&SubnetDef> {
        self.subnets.iter().find(|s| s.name == name)
    }

    /// The group with number `id`.
    pub fn group(&self, id: u16) -> Option<&GroupDef> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// The flow called `name`.
    pub fn flow(&self, name: &str) -> Option<&FlowDef> {
        self.flows.iter().find(|f| f.name == name)
    }

    /// The GEA that protects node `name`, if any.
    pub fn protector_of(&self, name: &str) -> Option<&NodeDef> {
        self.nodes.iter().find(|n| n.kind == NodeKind::Gea && n.protects.iter().any(|p| p == name))
    }

    /// The node that owns `addr`, and the interface carrying it.
    pub fn owner_of(&self, addr: IpAddr) -> Option<(&NodeDef, &InterfaceDef)> {
        self.nodes.iter().find_map(|n| n.interfaces.iter().find(|i| i.address == addr).map(|i| (n, i)))
    }
}

// ---------------------------------------------------------------------------------------
// Step 1: TOML text -> spanned value tree
// ---------------------------------------------------------------------------------------

/// The key toml uses to smuggle a datetime through serde.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime,
    Array(Vec<Spanned<Val>>),
    Table(Vec<(String, Spanned<Val>)>),
}

impl Val {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Str(_) => "a string",
            Val::Int(_) => "an integer",
            Val::Float(_) => "a float",
            Val::Bool(_) => "a boolean",
            Val::Datetime => "a datetime",
            Val::Array(_) => "an array",
            Val::Table(_) => "a table",
        }
    }
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Val, E> {
        Ok(Val::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Val, E> {
        Ok(Val::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Val, E> {
        i64::try_from(v).map(Val::Int).map_err(|_| E::custom("integer out of range"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Val, E> {
        Ok(Val::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Val, E> {
        Ok(Val::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Val, E> {
        Ok(Val::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Spanned<Val>>()? {
            out.push(v);
        }
        Ok(Val::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            if k == TOML_DATETIME_KEY {
                map.next_value::<IgnoredAny>()?;
                while map.next_key::<IgnoredAny>()?.is_some() {
                    map.next_value::<IgnoredAny>()?;
                }
                return Ok(Val::Datetime);
            }
            let v = map.next_value::<Spanned<Val>>()?;
            out.push((k, v));
        }
        Ok(Val::Table(out))
    }
}

// ---------------------------------------------------------------------------------------
// Step 2: value tree -> validated Scenario
// ---------------------------------------------------------------------------------------

type Res<T> = Result<T, ScenarioError>;

/// The entries of a TOML table, in file order.
type Entries = [(String, Spanned<Val>)];

const ROOT_FIELDS: &[&str] = &["name", "description", "group", "subnet", "node", "flow", "sim", "load"];
const GROUP_FIELDS: &[&str] = &["id", "name"];
const SUBNET_FIELDS: &[&str] = &["name", "prefix"];
const NODE_FIELDS: &[&str] = &["name", "kind", "mode", "groups", "interfaces", "routes", "gateway", "protects"];
const INTERFACE_FIELDS: &[&str] = &["subnet", "address", "inside"];
const ROUTE_FIELDS: &[&str] = &["to", "via"];
const FLOW_FIELDS: &[&str] = &["name", "from", "to", "proto", "port", "expect", "group"];
const SIM_FIELDS: &[&str] = &["seed", "loss", "reorder", "delay_us", "jitter_us"];
const LOAD_FIELDS: &[&str] = &["ipsec_peers"];

const KINDS_TEXT: &str = "ges | gen | gea | gnat | gsra | term | router | nat";

struct Parser<'a> {
    text: &'a str,
    file: &'a str,
}

/// One TOML table being checked against its schema.
struct Obj<'v> {
    /// What the table is, e.g. `node "gen"`; empty for the document root.
    label: String,
    /// Line where the table starts (used for missing fields).
    line: usize,
    entries: &'v Entries,
}

/// Where things were declared, for cross-checks made after the first pass.
struct NodeSpans {
    line: usize,
    label: String,
    protects: Vec<Range<usize>>,
    routes: Vec<(String, Range<usize>, Range<usize>)>,
    gateway: Option<Range<usize>>,
}

fn family(a: IpAddr) -> &'static str {
    match a {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

fn net_family(n: IpNet) -> &'static str {
    family(n.addr())
}

fn field_label(entity: &str, key: &str) -> String {
    if entity.is_empty() {
        format!("field `{key}`")
    } else {
        format!("{entity} field `{key}`")
    }
}

/// Node and subnet names: they become host names and link names.
fn check_name(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 63 {
        return Err(format!("{s:?} is longer than 63 characters"));
    }
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !first_ok || !rest_ok {
        return Err(format!(
            "{s:?} is not a valid name (letters, digits, `-`, `_`, `.`; starting with a letter or digit)"
        ));
    }
    Ok(())
}

fn parse_prefix(s: &str) -> Result<IpNet, String> {
    let net = IpNet::from_str(s)
        .map_err(|_| format!("{s:?} is not an IP prefix (expected ADDRESS/LENGTH, e.g. 10.1.0.0/24 or fd00:1::/64)"))?;
    if net.trunc() != net {
        return Err(format!("{s:?} has host bits set (the prefix is {})", net.trunc()));
    }
    Ok(net)
}

fn parse_addr(s: &str) -> Result<IpAddr, String> {
    IpAddr::from_str(s)
        .map_err(|_| format!("{s:?} is not an IP address (e.g. 10.1.0.1 or fd00:1::1, no prefix length)"))
}

impl<'v> Obj<'v> {
    fn new(p: &Parser<'_>, label: String, line: usize, entries: &'v Entries, allowed: &[&str]) -> Res<Self> {
        for (k, v) in entries {
            if !allowed.contains(&k.as_str()) {
                return Err(p.err(
                    p.line_of(v.span()),
                    field_label(&label, k),
                    format!("unknown field (expected one of: {})", allowed.join(", ")),
                ));
            }
        }
        Ok(Obj { label, line, entries })
    }

    fn field(&self, key: &str) -> String {
        field_label(&self.label, key)
    }

    fn raw(&self, key: &str) -> Option<&'v Spanned<Val>> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn missing(&self, p: &Parser<'_>, key: &str, what: &str) -> ScenarioError {
        p.err(self.line, self.field(key), format!("required{what}"))
    }

    fn type_err(&self, p: &Parser<'_>, key: &str, v: &Spanned<Val>, want: &str) -> ScenarioError {
        p.err(p.line_of(v.span()), self.field(key), format!("expected {want}, found {}", v.get_ref().type_name()))
    }

    fn string(&self, p: &Parser<'_>, key: &str) -> Res<Option<(&'v str, Range<usize>)>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Str(s) => Ok(Some((s.as_str(), v.span()))),
                _ => Err(self.type_err(p, key, v, "a string")),
            },
        }
    }

    fn req_string(&self, p: &Parser<'_>, key: &str, what: &str) -> Res<(&'v str, Range<usize>)> {
        self.string(p, key)?.ok_or_else(|| self.missing(p, key, what))
    }

    fn int(&self, p: &Parser<'_>, key: &str) -> Res<Option<(i64, Range<usize>)>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Int(i) => Ok(Some((*i, v.span()))),
                _ => Err(self.type_err(p, key, v, "an integer")),
            },
        }
    }

    fn number(&self, p: &Parser<'_>, key: &str) -> Res<Option<(f64, Range<usize>)>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Float(f) => Ok(Some((*f, v.span()))),
                // i64 -> f64 is exact for every value that passes the range checks.
                #[allow(clippy::cast_precision_loss)]
                Val::Int(i) => Ok(Some((*i as f64, v.span()))),
                _ => Err(self.type_err(p, key, v, "a number")),
            },
        }
    }

    fn boolean(&self, p: &Parser<'_>, key: &str) -> Res<Option<(bool, Range<usize>)>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Bool(b) => Ok(Some((*b, v.span()))),
                _ => Err(self.type_err(p, key, v, "a boolean (true | false)")),
            },
        }
    }

    fn array(&self, p: &Parser<'_>, key: &str) -> Res<Option<&'v [Spanned<Val>]>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Array(a) => Ok(Some(a.as_slice())),
                _ => Err(self.type_err(p, key, v, "an array")),
            },
        }
    }

    /// An array whose elements are all tables (`[[key]]` or `key = [{..}, ..]`).
    fn tables(&self, p: &Parser<'_>, key: &str, hint: &str) -> Res<Vec<(usize, &'v Entries)>> {
        let Some(v) = self.raw(key) else {
            return Ok(Vec::new());
        };
        let Val::Array(items) = v.get_ref() else {
            return Err(p.err(
                p.line_of(v.span()),
                self.field(key),
                format!("expected an array of tables ({hint}), found {}", v.get_ref().type_name()),
            ));
        };
        items
            .iter()
            .map(|item| match item.get_ref() {
                Val::Table(t) => Ok((p.line_of(item.span()), t.as_slice())),
                other => Err(p.err(
                    p.line_of(item.span()),
                    self.field(key),
                    format!("expected a table ({hint}), found {}", other.type_name()),
                )),
            })
            .collect()
    }

    fn table(&self, p: &Parser<'_>, key: &str) -> Res<Option<(usize, &'v Entries)>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => match v.get_ref() {
                Val::Table(t) => Ok(Some((p.line_of(v.span()), t.as_slice()))),
                _ => Err(self.type_err(p, key, v, "a table")),
            },
        }
    }
}

fn peek_str<'v>(entries: &'v Entries, key: &str) -> Option<&'v str> {
    entries.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v.get_ref() {
        Val::Str(s) => Some(s.as_str()),
        _ => None,
    })
}

fn peek_int(entries: &Entries, key: &str) -> Option<i64> {
    entries.iter().find(|(k, _)| k == key).and_then(|(_, v)| match v.get_ref() {
        Val::Int(i) => Some(*i),
        _ => None,
    })
}

impl Parser<'_> {
    fn line_of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
    }

    fn err(&self, line: usize, field: String, message: String) -> ScenarioError {
        ScenarioError { file: self.file.to_owned(), line: Some(line), field: Some(field), message }
    }

    fn scenario(&self) -> Res<Scenario> {
        let root = toml::from_str::<Val>(self.text).map_err(|e| {
            let message = e.message().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
            ScenarioError {
                file: self.file.to_owned(),
                line: Some(e.span().map_or(1, |s| self.line_of(s))),
                field: None,
                message: format!("TOML syntax error: {message}"),
            }
        })?;
        let Val::Table(entries) = &root else {
            return Err(self.err(1, "document".into(), "expected a TOML table".into()));
        };
        let top = Obj::new(self, String::new(), 1, entries, ROOT_FIELDS)?;

        let (name, name_span) = top.req_string(self, "name", " (the scenario's name)")?;
        if name.trim().is_empty() {
            return Err(self.err(self.line_of(name_span), top.field("name"), "must not be empty".into()));
        }
        let description = top.string(self, "description")?.map(|(s, _)| s.to_owned());

        let groups = self.groups(&top)?;
        let subnets = self.subnets(&top)?;
        let nodes = self.nodes(&top, &groups, &subnets)?;
        let flows = self.flows(&top, &groups, &nodes)?;
        let sim = self.sim(&top)?;
        let load = self.load(&top, &nodes)?;

        Ok(Scenario { name: name.to_owned(), description, groups, subnets, nodes, flows, sim, load })
    }

    fn groups(&self, top: &Obj<'_>) -> Res<Vec<GroupDef>> {
        let mut out: Vec<GroupDef> = Vec::new();
        let mut seen: HashMap<u16, usize> = HashMap::new();
        for (idx, (line, entries)) in top.tables(self, "group", "[[group]]")?.into_iter().enumerate() {
            let label = match peek_int(entries, "id") {
                Some(id) => format!("group {id}"),
                None => format!("group #{}", idx + 1),
            };
            let o = Obj::new(self, label, line, entries, GROUP_FIELDS)?;
            let (id, span) = o.int(self, "id")?.ok_or_else(|| o.missing(self, "id", " (1..=65535)"))?;
            let id = u16::try_from(id).ok().filter(|&i| i != 0).ok_or_else(|| {
                self.err(self.line_of(span.clone()), o.field("id"), format!("must be 1..=65535, got {id}"))
            })?;
            if let Some(prev) = seen.insert(id, line) {
                return Err(self.err(
                    self.line_of(span),
                    o.field("id"),
                    format!("group {id} is already defined at line {prev}"),
                ));
            }
            let name = o.string(self, "name")?.map(|(s, _)| s.to_owned());
            out.push(GroupDef { id, name });
        }
        Ok(out)
    }

    fn subnets(&self, top: &Obj<'_>) -> Res<Vec<SubnetDef>> {
        let mut out: Vec<SubnetDef> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (idx, (line, entries)) in top.tables(self, "subnet", "[[subnet]]")?.into_iter().enumerate() {
            let label = match peek_str(entries, "name") {
                Some(n) => format!("subnet {n:?}"),
                None => format!("subnet #{}", idx + 1),
            };
            let o = Obj::new(self, label, line, entries, SUBNET_FIELDS)?;
            let (name, name_span) = o.req_string(self, "name", " (the link's name)")?;
            check_name(name).map_err(|m| self.err(self.line_of(name_span.clone()), o.field("name"), m))?;
            if let Some(prev) = seen.insert(name, line) {
                return Err(self.err(
                    self.line_of(name_span),
                    o.field("name"),
                    format!("subnet {name:?} is already defined at line {prev}"),
                ));
            }
            let (prefix, pspan) = o.req_string(self, "prefix", " (e.g. 10.1.0.0/24)")?;
            let pline = self.line_of(pspan);
            let prefix = parse_prefix(prefix).map_err(|m| self.err(pline, o.field("prefix"), m))?;
            let a = prefix.addr();
            let bad = if prefix.prefix_len() == 0 {
                Some("a link cannot cover the whole address space")
            } else if a.is_loopback() {
                Some("a loopback prefix cannot be a link")
            } else if a.is_multicast() {
                Some("a multicast prefix cannot be a link")
            } else if matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80) {
                Some("IPv6 link-local addresses are automatic; give the link a routable prefix")
            } else {
                None
            };
            if let Some(m) = bad {
                return Err(self.err(pline, o.field("prefix"), format!("{prefix}: {m}")));
            }
            out.push(SubnetDef { name: name.to_owned(), prefix });
        }
        Ok(out)
    }

    fn nodes(&self, top: &Obj<'_>, groups: &[GroupDef], subnets: &[SubnetDef]) -> Res<Vec<NodeDef>> {
        let group_ids: HashSet<u16> = groups.iter().map(|g| g.id).collect();
        let mut nodes: Vec<NodeDef> = Vec::new();
        let mut spans: Vec<NodeSpans> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        // address -> (node, line)
        let mut addrs: HashMap<IpAddr, (String, usize)> = HashMap::new();

        for (idx, (line, entries)) in top.tables(self, "node", "[[node]]")?.into_iter().enumerate() {
            let label = match peek_str(entries, "name") {
                Some(n) => format!("node {n:?}"),
                None => format!("node #{}", idx + 1),
            };
            let o = Obj::new(self, label.clone(), line, entries, NODE_FIELDS)?;

            let (name, name_span) = o.req_string(self, "name", " (unique; also its host name)")?;
            check_name(name).map_err(|m| self.err(self.line_of(name_span.clone()), o.field("name"), m))?;
            if let Some(prev) = names.insert(name.to_owned(), line) {
                return Err(self.err(
                    self.line_of(name_span),
                    o.field("name"),
                    format!("node {name:?} is already defined at line {prev}"),
                ));
            }

            let (kind_s, kspan) = o.req_string(self, "kind", &format!(" ({KINDS_TEXT})"))?;
            let kind = NodeKind::parse(kind_s).ok_or_else(|| {
                self.err(
                    self.line_of(kspan),
                    o.field("kind"),
                    format!("unknown kind {kind_s:?} (expected {KINDS_TEXT})"),
                )
            })?;

            // mode
            let mode = match (o.string(self, "mode")?, kind.is_ge()) {
                (None, true) => return Err(o.missing(self, "mode", &format!(" for GE kind `{kind}` (closed | open)"))),
                (Some((_, span)), false) => {
                    return Err(self.err(
                        self.line_of(span),
                        o.field("mode"),
                        format!("not allowed for kind `{kind}` (only GE kinds ges, gen, gea, gnat, gsra have a mode)"),
                    ))
                }
                (None, false) => None,
                (Some((m, span)), true) => Some(ModeDef::parse(m).ok_or_else(|| {
                    self.err(
                        self.line_of(span),
                        o.field("mode"),
                        format!("unknown mode {m:?} (expected closed | open)"),
                    )
                })?),
            };

            // groups
            let mut node_groups: Vec<u16> = Vec::new();
            if let Some(items) = o.array(self, "groups")? {
                if !kind.is_ge() {
                    let l = o.raw("groups").map_or(line, |v| self.line_of(v.span()));
                    return Err(self.err(
                        l,
                        o.field("groups"),
                        format!("not allowed for kind `{kind}` (only GE kinds ges, gen, gea, gnat, gsra hold groups)"),
                    ));
                }
                for item in items {
                    let l = self.line_of(item.span());
                    let Val::Int(g) = item.get_ref() else {
                        return Err(self.err(
                            l,
                            o.field("groups"),
                            format!("expected group ids (integers), found {}", item.get_ref().type_name()),
                        ));
                    };
                    let g16 = u16::try_from(*g).ok().filter(|i| group_ids.contains(i)).ok_or_else(|| {
                        self.err(
                            l,
                            o.field("groups"),
                            format!("group {g} is not defined (add a [[group]] with id = {g})"),
                        )
                    })?;
                    if node_groups.contains(&g16) {
                        return Err(self.err(l, o.field("groups"), format!("group {g} is listed twice")));
                    }
                    node_groups.push(g16);
                }
            }

            // interfaces
            let mut interfaces: Vec<InterfaceDef> = Vec::new();
            if let Some(v) = o.raw("interfaces") {
                if kind == NodeKind::Gea {
                    return Err(self.err(
                        self.line_of(v.span()),
                        o.field("interfaces"),
                        "not allowed for kind `gea`: a GEA is a transparent bridge with no address of its own (list the servers it stands in front of in `protects`)".into(),
                    ));
                }
            }
            for (i, (iline, ientries)) in
                o.tables(self, "interfaces", "{ subnet = \"...\", address = \"...\" }")?.into_iter().enumerate()
            {
                let il = format!("{label} interface #{}", i + 1);
                let io = Obj::new(self, il, iline, ientries, INTERFACE_FIELDS)?;
                let (sname, sspan) = io.req_string(self, "subnet", " (a [[subnet]] name)")?;
                let subnet = subnets.iter().find(|s| s.name == sname).ok_or_else(|| {
                    self.err(
                        self.line_of(sspan.clone()),
                        io.field("subnet"),
                        format!("subnet {sname:?} is not defined"),
                    )
                })?;
                if let Some(prev) = interfaces.iter().position(|x| x.subnet == sname) {
                    return Err(self.err(
                        self.line_of(sspan),
                        io.field("subnet"),
                        format!("node {name:?} already has an interface on subnet {sname:?} (interface #{})", prev + 1),
                    ));
                }
                let (astr, aspan) = io.req_string(self, "address", &format!(" (an address in {})", subnet.prefix))?;
                let al = self.line_of(aspan);
                let address = parse_addr(astr).map_err(|m| self.err(al, io.field("address"), m))?;
                self.check_host_address(address, subnet).map_err(|m| self.err(al, io.field("address"), m))?;
                if let Some((other, oline)) = addrs.get(&address) {
                    return Err(self.err(
                        al,
                        io.field("address"),
                        format!("{address} is already used by node {other:?} (line {oline})"),
                    ));
                }
                addrs.insert(address, (name.to_owned(), al));
                let inside = match io.boolean(self, "inside")? {
                    Some((true, span)) if !kind.has_inside() => {
                        return Err(self.err(
                            self.line_of(span),
                            io.field("inside"),
                            format!("`inside = true` is only for gen, gnat, gsra and nat (the side they protect or masquerade from), not `{kind}`"),
                        ))
                    }
                    Some((b, _)) => b,
                    None => false,
                };
                interfaces.push(InterfaceDef { subnet: sname.to_owned(), address, inside });
            }

            // routes
            let mut routes: Vec<RouteDef> = Vec::new();
            let mut route_spans = Vec::new();
            if kind == NodeKind::Gea {
                for key in ["routes", "gateway"] {
                    if let Some(v) = o.raw(key) {
                        return Err(self.err(
                            self.line_of(v.span()),
                            o.field(key),
                            "not allowed for kind `gea` (a transparent bridge has no address and routes nothing)"
                                .into(),
                        ));
                    }
                }
            }
            for (i, (rline, rentries)) in
                o.tables(self, "routes", "{ to = \"PREFIX\", via = \"ADDRESS\" }")?.into_iter().enumerate()
            {
                let rl = format!("{label} route #{}", i + 1);
                let ro = Obj::new(self, rl.clone(), rline, rentries, ROUTE_FIELDS)?;
                let (to_s, to_span) = ro.req_string(self, "to", " (a prefix, e.g. 10.2.0.0/24)")?;
                let to = parse_prefix(to_s).map_err(|m| self.err(self.line_of(to_span.clone()), ro.field("to"), m))?;
                if routes.iter().any(|r| r.to == to) {
                    return Err(self.err(
                        self.line_of(to_span),
                        ro.field("to"),
                        format!("node {name:?} already has a route to {to}"),
                    ));
                }
                let (via_s, via_span) = ro.req_string(self, "via", " (the next hop's address)")?;
                let via =
                    parse_addr(via_s).map_err(|m| self.err(self.line_of(via_span.clone()), ro.field("via"), m))?;
                if family(via) != net_family(to) {
                    return Err(self.err(
                        self.line_of(via_span),
                        ro.field("via"),
                        format!("{via} is {} but `to` {to} is {}", family(via), net_family(to)),
                    ));
                }
                routes.push(RouteDef { to, via });
                route_spans.push((rl, to_span, via_span));
            }

            // gateway
            let mut gateway = None;
            let mut gateway_span = None;
            if let Some((g, span)) = o.string(self, "gateway")? {
                let a = parse_addr(g).map_err(|m| self.err(self.line_of(span.clone()), o.field("gateway"), m))?;
                gateway = Some(a);
                gateway_span = Some(span);
            }

            // protects
            let mut protects: Vec<String> = Vec::new();
            let mut protect_spans = Vec::new();
            match (o.array(self, "protects")?, kind == NodeKind::Gea) {
                (None, true) => {
                    return Err(o.missing(self, "protects", " for kind `gea` (the servers it stands in front of)"))
                }
                (Some(_), false) => {
                    let l = o.raw("protects").map_or(line, |v| self.line_of(v.span()));
                    return Err(self.err(
                        l,
                        o.field("protects"),
                        format!("not allowed for kind `{kind}` (only a `gea` protects other nodes)"),
                    ));
                }
                (None, false) => {}
                (Some(items), true) => {
                    if items.is_empty() {
                        let l = o.raw("protects").map_or(line, |v| self.line_of(v.span()));
                        return Err(self.err(
                            l,
                            o.field("protects"),
                            "must name at least one node (the servers it stands in front of)".into(),
                        ));
                    }
                    for item in items {
                        let l = self.line_of(item.span());
                        let Val::Str(s) = item.get_ref() else {
                            return Err(self.err(
                                l,
                                o.field("protects"),
                                format!("expected node names (strings), found {}", item.get_ref().type_name()),
                            ));
                        };
                        if protects.contains(s) {
                            return Err(self.err(l, o.field("protects"), format!("node {s:?} is listed twice")));
                        }
                        protects.push(s.clone());
                        protect_spans.push(item.span());
                    }
                }
            }

            nodes.push(NodeDef {
                name: name.to_owned(),
                kind,
                mode,
                groups: node_groups,
                interfaces,
                routes,
                gateway,
                protects,
            });
            spans.push(NodeSpans { line, label, protects: protect_spans, routes: route_spans, gateway: gateway_span });
        }

        // Second pass: references between nodes.
        let mut protected_by: HashMap<&str, (&str, usize)> = HashMap::new();
        for (node, sp) in nodes.iter().zip(&spans) {
            for (target, span) in node.protects.iter().zip(&sp.protects) {
                let l = self.line_of(span.clone());
                let field = field_label(&sp.label, "protects");
                let Some(t) = nodes.iter().find(|n| &n.name == target) else {
                    return Err(self.err(l, field, format!("node {target:?} does not exist")));
                };
                if t.kind != NodeKind::Term {
                    return Err(self.err(
                        l,
                        field,
                        format!("node {target:?} is of kind `{}`; a GEA protects only `term` nodes (servers with no GE of their own)", t.kind),
                    ));
                }
                if t.interfaces.is_empty() {
                    return Err(self.err(l, field, format!("node {target:?} has no interfaces")));
                }
                if let Some((other, oline)) = protected_by.insert(target.as_str(), (node.name.as_str(), sp.line)) {
                    return Err(self.err(
                        l,
                        field,
                        format!("node {target:?} is already protected by gea {other:?} (line {oline}); a node has at most one GEA"),
                    ));
                }
            }
            for (route, (rl, _, via_span)) in node.routes.iter().zip(&sp.routes) {
                self.check_next_hop(node, route.via, &nodes, subnets)
                    .map_err(|m| self.err(self.line_of(via_span.clone()), field_label(rl, "via"), m))?;
            }
            if let (Some(gw), Some(span)) = (node.gateway, &sp.gateway) {
                self.check_next_hop(node, gw, &nodes, subnets)
                    .map_err(|m| self.err(self.line_of(span.clone()), field_label(&sp.label, "gateway"), m))?;
            }
        }
        Ok(nodes)
    }

    /// An interface address must be a usable host address of its subnet.
    fn check_host_address(&self, a: IpAddr, subnet: &SubnetDef) -> Result<(), String> {
        let p = subnet.prefix;
        if family(a) != net_family(p) {
            return Err(format!("{a} is {} but subnet {:?} is {p}", family(a), subnet.name));
        }
        if !p.contains(&a) {
            return Err(format!("{a} is not inside subnet {:?} ({p})", subnet.name));
        }
        let small = match p {
            IpNet::V4(n) => n.prefix_len() >= 31,
            IpNet::V6(n) => n.prefix_len() >= 127,
        };
        if !small && a == p.network() {
            return Err(format!("{a} is the network address of subnet {:?} ({p}); use a host address", subnet.name));
        }
        if let IpNet::V4(n) = p {
            if !small && a == IpAddr::V4(n.broadcast()) {
                return Err(format!(
                    "{a} is the broadcast address of subnet {:?} ({p}); use a host address",
                    subnet.name
                ));
            }
        }
        Ok(())
    }

    /// A route's `via` or a `gateway`: on one of the node's subnets, another node's
    /// address there, and that node forwards packets.
    fn check_next_hop(
        &self,
        node: &NodeDef,
        hop: IpAddr,
        nodes: &[NodeDef],
        subnets: &[SubnetDef],
    ) -> Result<(), String> {
        let prefix_of = |name: &str| subnets.iter().find(|s| s.name == name).map(|s| s.prefix);
        if node.interfaces.iter().any(|i| i.address == hop) {
            return Err(format!("{hop} is this node's own address"));
        }
        let Some(on) = node.interfaces.iter().find(|i| prefix_of(&i.subnet).is_some_and(|p| p.contains(&hop))) else {
            let attached: Vec<String> = node
                .interfaces
                .iter()
                .map(|i| match prefix_of(&i.subnet) {
                    Some(p) => format!("{:?} {p}", i.subnet),
                    None => format!("{:?}", i.subnet),
                })
                .collect();
            return Err(if attached.is_empty() {
                format!("{hop} is not reachable: node {:?} has no interfaces", node.name)
            } else {
                format!("{hop} is not on a subnet node {:?} is attached to ({})", node.name, attached.join(", "))
            });
        };
        let owner = nodes.iter().find(|n| n.interface_on(&on.subnet).is_some_and(|i| i.address == hop));
        match owner {
            None => Err(format!("no node has address {hop} on subnet {:?}", on.subnet)),
            Some(n) if !n.kind.is_router() => Err(format!(
                "{hop} is node {:?} of kind `{}`, which does not forward packets (routers: gen, gnat, gsra, router, nat)",
                n.name, n.kind
            )),
            Some(_) => Ok(()),
        }
    }

    fn flows(&self, top: &Obj<'_>, groups: &[GroupDef], nodes: &[NodeDef]) -> Res<Vec<FlowDef>> {
        let mut out: Vec<FlowDef> = Vec::new();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (idx, (line, entries)) in top.tables(self, "flow", "[[flow]]")?.into_iter().enumerate() {
            let explicit = peek_str(entries, "name");
            let label = match explicit {
                Some(n) => format!("flow {n:?}"),
                None => match (
                    peek_str(entries, "from"),
                    peek_str(entries, "to"),
                    peek_int(entries, "port").and_then(|p| u16::try_from(p).ok()),
                    peek_str(entries, "proto").and_then(Proto::parse),
                ) {
                    (Some(f), Some(t), Some(port), Some(proto)) => {
                        format!("flow {:?}", FlowDef::default_name(f, t, port, proto))
                    }
                    _ => format!("flow #{}", idx + 1),
                },
            };
            let o = Obj::new(self, label, line, entries, FLOW_FIELDS)?;

            let name_given = o.string(self, "name")?;
            if let Some((n, span)) = &name_given {
                if n.trim().is_empty() {
                    return Err(self.err(self.line_of(span.clone()), o.field("name"), "must not be empty".into()));
                }
            }

            let endpoint = |key: &str| -> Res<&NodeDef> {
                let (n, span) = o.req_string(self, key, " (a node name)")?;
                let l = self.line_of(span);
                let node = nodes
                    .iter()
                    .find(|x| x.name == n)
                    .ok_or_else(|| self.err(l, o.field(key), format!("no node named {n:?}")))?;
                if node.kind == NodeKind::Gea {
                    return Err(self.err(
                        l,
                        o.field(key),
                        format!(
                            "node {n:?} is a gea, a transparent bridge with no address; name the server it protects"
                        ),
                    ));
                }
                if node.interfaces.is_empty() {
                    return Err(self.err(l, o.field(key), format!("node {n:?} has no interfaces")));
                }
                Ok(node)
            };
            let from = endpoint("from")?;
            let to = endpoint("to")?;
            let to_line = o.raw("to").map_or(line, |v| self.line_of(v.span()));
            if from.name == to.name {
                return Err(self.err(to_line, o.field("to"), "is the same node as `from`".into()));
            }
            let fams_from: HashSet<&str> = from.addresses().map(family).collect();
            if !to.addresses().any(|a| fams_from.contains(family(a))) {
                let f: Vec<&str> = from.addresses().map(family).collect();
                let t: Vec<&str> = to.addresses().map(family).collect();
                return Err(self.err(
                    to_line,
                    o.field("to"),
                    format!(
                        "node {:?} ({}) and node {:?} ({}) share no IP family",
                        from.name,
                        dedup(f).join("+"),
                        to.name,
                        dedup(t).join("+")
                    ),
                ));
            }

            let (proto_s, pspan) = o.req_string(self, "proto", " (tcp | udp)")?;
            let proto = Proto::parse(proto_s).ok_or_else(|| {
                self.err(
                    self.line_of(pspan),
                    o.field("proto"),
                    format!("unknown protocol {proto_s:?} (expected tcp | udp)"),
                )
            })?;
            let (port, port_span) = o.int(self, "port")?.ok_or_else(|| o.missing(self, "port", " (1..=65535)"))?;
            let port = u16::try_from(port).ok().filter(|&p| p != 0).ok_or_else(|| {
                self.err(self.line_of(port_span), o.field("port"), format!("must be 1..=65535, got {port}"))
            })?;

            let expect = match o.string(self, "expect")? {
                None => None,
                Some((e, span)) => Some(Outcome::parse(e).ok_or_else(|| {
                    self.err(
                        self.line_of(span),
                        o.field("expect"),
                        format!("unknown outcome {e:?} (expected protected | plaintext | discarded)"),
                    )
                })?),
            };
            let group = match o.int(self, "group")? {
                None => None,
                Some((g, span)) => {
                    let l = self.line_of(span);
                    let g16 = u16::try_from(g)
                        .ok()
                        .filter(|i| groups.iter().any(|d| d.id == *i))
                        .ok_or_else(|| self.err(l, o.field("group"), format!("group {g} is not defined")))?;
                    if let Some(e @ (Outcome::Plaintext | Outcome::Discarded)) = expect {
                        return Err(self.err(
                            l,
                            o.field("group"),
                            format!("an expected group only makes sense with expect = \"protected\" (this flow expects {e})"),
                        ));
                    }
                    Some(g16)
                }
            };

            let name = match name_given {
                Some((n, _)) => n.to_owned(),
                None => FlowDef::default_name(&from.name, &to.name, port, proto),
            };
            if let Some(prev) = names.insert(name.clone(), line) {
                let l = o.raw("name").map_or(line, |v| self.line_of(v.span()));
                return Err(self.err(
                    l,
                    o.field("name"),
                    format!("flow name {name:?} is already used by the flow at line {prev} (give one of them a distinct `name`)"),
                ));
            }
            out.push(FlowDef { name, from: from.name.clone(), to: to.name.clone(), proto, port, expect, group });
        }
        Ok(out)
    }

    fn sim(&self, top: &Obj<'_>) -> Res<SimOptions> {
        let mut sim = SimOptions::default();
        let Some((line, entries)) = top.table(self, "sim")? else {
            return Ok(sim);
        };
        let o = Obj::new(self, "sim".into(), line, entries, SIM_FIELDS)?;
        if let Some((seed, span)) = o.int(self, "seed")? {
            sim.seed = u64::try_from(seed)
                .map_err(|_| self.err(self.line_of(span), o.field("seed"), format!("must be 0 or more, got {seed}")))?;
        }
        for (key, slot) in [("loss", &mut sim.loss), ("reorder", &mut sim.reorder)] {
            if let Some((x, span)) = o.number(self, key)? {
                if !(0.0..=1.0).contains(&x) {
                    return Err(self.err(
                        self.line_of(span),
                        o.field(key),
                        format!("must be a probability between 0 and 1, got {x}"),
                    ));
                }
                *slot = x;
            }
        }
        for (key, slot) in [("delay_us", &mut sim.delay_us), ("jitter_us", &mut sim.jitter_us)] {
            if let Some((x, span)) = o.int(self, key)? {
                *slot = u64::try_from(x).ok().filter(|&v| v <= SimOptions::MAX_DELAY_US).ok_or_else(|| {
                    self.err(
                        self.line_of(span),
                        o.field(key),
                        format!("must be 0..={} microseconds, got {x}", SimOptions::MAX_DELAY_US),
                    )
                })?;
            }
        }
        Ok(sim)
    }
}

impl Parser<'_> {
    fn load(&self, top: &Obj<'_>, nodes: &[NodeDef]) -> Res<LoadOptions> {
        let mut load = LoadOptions::default();
        let Some((line, entries)) = top.table(self, "load")? else {
            return Ok(load);
        };
        let o = Obj::new(self, "load".into(), line, entries, LOAD_FIELDS)?;
        let Some((_, peers)) = o.table(self, "ipsec_peers")? else {
            return Ok(load);
        };
        let field = o.field("ipsec_peers");
        let ge = |name: &str| nodes.iter().find(|n| n.name == name).filter(|n| n.kind.is_ge());
        for (element, list) in peers {
            let at = self.line_of(list.span());
            if ge(element).is_none() {
                return Err(self.err(at, field.clone(), format!("{element:?} is not a GE of this scenario")));
            }
            let Val::Array(items) = list.get_ref() else {
                return Err(self.err(
                    at,
                    field.clone(),
                    format!("{element}: expected an array of GE names, found {}", list.get_ref().type_name()),
                ));
            };
            let mut names: Vec<String> = Vec::new();
            for item in items {
                let at = self.line_of(item.span());
                let Val::Str(peer) = item.get_ref() else {
                    return Err(self.err(
                        at,
                        field.clone(),
                        format!("{element}: expected a GE name, found {}", item.get_ref().type_name()),
                    ));
                };
                if ge(peer).is_none() || peer == element {
                    return Err(self.err(
                        at,
                        field.clone(),
                        format!("{element}: {peer:?} is not another GE of this scenario"),
                    ));
                }
                if names.contains(peer) {
                    return Err(self.err(at, field.clone(), format!("{element}: {peer:?} is listed twice")));
                }
                names.push(peer.clone());
            }
            load.ipsec_peers.push((element.clone(), names));
        }
        load.ipsec_peers.sort();
        Ok(load)
    }
}

fn dedup(mut v: Vec<&str>) -> Vec<&str> {
    let mut seen = HashSet::new();
    v.retain(|x| seen.insert(*x));
    v
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small valid scenario; the tests append to it.
    const BASE: &str = r#"name = "t"
[[group]]
id = 1
[[group]]
id = 2
name = "two"
[[subnet]]
name = "net1"
prefix = "10.0.1.0/24"
[[subnet]]
name = "lan"
prefix = "10.1.0.0/24"
[[subnet]]
name = "v6"
prefix = "fd00:1::/64"
[[node]]
name = "gen"
kind = "gen"
mode = "closed"
groups = [1]
interfaces = [{ subnet = "net1", address = "10.0.1.1" }, { subnet = "lan", address = "10.1.0.1", inside = true }, { subnet = "v6", address = "fd00:1::1" }]
[[node]]
name = "a"
kind = "ges"
mode = "open"
groups = [1, 2]
interfaces = [{ subnet = "lan", address = "10.1.0.10" }]
gateway = "10.1.0.1"
[[node]]
name = "b"
kind = "term"
interfaces = [{ subnet = "net1", address = "10.0.1.10" }]
routes = [{ to = "10.1.0.0/24", via = "10.0.1.1" }]
[[node]]
name = "c"
kind = "term"
interfaces = [{ subnet = "v6", address = "fd00:1::10" }]
"#;

    fn base_lines() -> usize {
        BASE.lines().count()
    }

    fn ok(extra: &str) -> Scenario {
        let text = format!("{BASE}{extra}");
        match Scenario::parse(&text, "t.toml") {
            Ok(s) => s,
            Err(e) => panic!("expected success, got {e}"),
        }
    }

    /// `extra` is appended to BASE; `line` is 1-based within `extra`.
    #[track_caller]
    fn bad(extra: &str, line: usize, field: &str, msg: &str) {
        let text = format!("{BASE}{extra}");
        bad_full(&text, base_lines() + line, field, msg);
    }

    #[track_caller]
    fn bad_full(text: &str, line: usize, field: &str, msg: &str) {
        let e = match Scenario::parse(text, "t.toml") {
            Ok(_) => panic!("expected an error about {field}: {msg}"),
            Err(e) => e,
        };
        assert_eq!(e.file, "t.toml");
        assert_eq!(e.line, Some(line), "wrong line in: {e}");
        assert_eq!(e.field.as_deref(), Some(field), "wrong field in: {e}");
        assert!(e.message.contains(msg), "message {:?} lacks {msg:?}", e.message);
    }

    // --- the base, defaults and accessors -------------------------------------------

    #[test]
    fn base_parses_with_defaults() {
        let s = ok("");
        assert_eq!(s.name, "t");
        assert_eq!(s.description, None);
        assert_eq!(s.groups, vec![GroupDef { id: 1, name: None }, GroupDef { id: 2, name: Some("two".into()) }]);
        assert_eq!(s.subnets.len(), 3);
        assert_eq!(s.subnets[2].prefix, "fd00:1::/64".parse::<IpNet>().unwrap());
        let gen = s.node("gen").unwrap();
        assert_eq!(gen.kind, NodeKind::Gen);
        assert_eq!(gen.mode, Some(ModeDef::Closed));
        assert_eq!(gen.groups, vec![1]);
        assert!(!gen.interfaces[0].inside);
        assert!(gen.interfaces[1].inside);
        let a = s.node("a").unwrap();
        assert_eq!(a.gateway, Some("10.1.0.1".parse().unwrap()));
        let b = s.node("b").unwrap();
        assert_eq!(b.mode, None);
        assert!(b.groups.is_empty());
        assert_eq!(b.routes, vec![RouteDef { to: "10.1.0.0/24".parse().unwrap(), via: "10.0.1.1".parse().unwrap() }]);
        assert!(s.flows.is_empty());
        assert_eq!(s.sim, SimOptions::default());
        assert_eq!(s.sim.seed, 1);
        assert_eq!(s.sim.delay_us, 50);
        assert!(s.node("nope").is_none());
        assert_eq!(s.subnet("lan").unwrap().prefix.to_string(), "10.1.0.0/24");
        assert_eq!(s.group(2).unwrap().name.as_deref(), Some("two"));
        let (owner, iface) = s.owner_of("10.0.1.1".parse().unwrap()).unwrap();
        assert_eq!((owner.name.as_str(), iface.subnet.as_str()), ("gen", "net1"));
    }

    #[test]
    fn kinds_and_keywords() {
        for k in NodeKind::ALL {
            assert_eq!(NodeKind::parse(k.as_str()), Some(k));
        }
        let ge: Vec<_> = NodeKind::ALL.into_iter().filter(|k| k.is_ge()).map(NodeKind::as_str).collect();
        assert_eq!(ge, ["ges", "gen", "gea", "gnat", "gsra"]);
        let routers: Vec<_> = NodeKind::ALL.into_iter().filter(|k| k.is_router()).map(NodeKind::as_str).collect();
        assert_eq!(routers, ["gen", "gnat", "gsra", "router", "nat"]);
        assert_eq!(NodeKind::parse("GEN"), None);
        assert_eq!(Proto::Tcp.as_str(), "tcp");
        assert_eq!(Proto::Udp.as_str(), "udp");
        assert_eq!(Outcome::Protected.as_str(), "protected");
        assert_eq!(Outcome::Plaintext.as_str(), "plaintext");
        assert_eq!(Outcome::Discarded.as_str(), "discarded");
        assert_eq!(ModeDef::Open.to_string(), "open");
    }

    #[test]
    fn error_display_shape() {
        let e = ScenarioError {
            file: "examples/bad.toml".into(),
            line: Some(14),
            field: Some("node \"gen\" field `mode`".into()),
            message: "required for GE kind `gen` (closed | open)".into(),
        };
        assert_eq!(
            e.to_string(),
            "examples/bad.toml:14: node \"gen\" field `mode`: required for GE kind `gen` (closed | open)"
        );
        let e = ScenarioError { file: "x.toml".into(), line: None, field: None, message: "m".into() };
        assert_eq!(e.to_string(), "x.toml: m");
        let e = ScenarioError { file: "x.toml".into(), line: Some(3), field: None, message: "m".into() };
        assert_eq!(e.to_string(), "x.toml:3: m");
    }

    #[test]
    fn the_brief_example_error_is_produced() {
        let extra = "[[node]]\nname = \"gen2\"\nkind = \"gen\"\n";
        let text = format!("{BASE}{extra}");
        let e = Scenario::parse(&text, "examples/bad.toml").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "examples/bad.toml:{}: node \"gen2\" field `mode`: required for GE kind `gen` (closed | open)",
                base_lines() + 1
            )
        );
    }

    #[test]
    fn missing_file_is_an_error_not_a_panic() {
        let e = Scenario::from_file(Path::new("/nonexistent/dir/x.toml")).unwrap_err();
        assert_eq!(e.file, "/nonexistent/dir/x.toml");
        assert_eq!(e.line, None);
        assert!(e.message.contains("cannot read"));
    }

    #[test]
    fn user_text_is_escaped_in_errors() {
        bad(
            "[[flow]]\nfrom = \"a\\nb\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\n",
            2,
            "flow \"a\\nb->b:80/tcp\" field `from`",
            "no node named \"a\\nb\"",
        );
        let e = Scenario::parse(&format!("{BASE}[[node]]\nname = \"x\"\nkind = \"te\\\"rm\"\n"), "t.toml").unwrap_err();
        assert!(!e.to_string().contains('\n'));
        assert!(e.message.contains("unknown kind \"te\\\"rm\""), "{e}");
    }

    // --- syntax and types -----------------------------------------------------------

    #[test]
    fn toml_syntax_error_names_the_line() {
        let e = Scenario::parse("name = \"x\"\n\n[[node]\nname = 1\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.field, None);
        assert!(e.message.starts_with("TOML syntax error"), "{e}");
        let e = Scenario::parse("name = \"x\"\nname = \"y\"\n", "s.toml").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        assert!(e.message.contains("duplicate"), "{e}");
    }

    #[test]
    fn wrong_types_are_reported() {
        bad_full("name = 3\n", 1, "field `name`", "expected a string, found an integer");
        bad_full("name = 1979-05-27\n", 1, "field `name`", "found a datetime");
        bad_full("name = \"x\"\ndescription = [1]\n", 2, "field `description`", "expected a string, found an array");
        bad_full(
            "name = \"x\"\n[group]\nid = 1\n",
            2,
            "field `group`",
            "expected an array of tables ([[group]]), found a table",
        );
        bad_full("name = \"x\"\nnode = [1]\n", 2, "field `node`", "expected a table ([[node]]), found an integer");
        bad_full("name = \"x\"\nsim = 3\n", 2, "field `sim`", "expected a table, found an integer");
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = \"80\"\n",
            5,
            "flow #1 field `port`",
            "expected an integer, found a string",
        );
        bad("[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.99\", inside = \"yes\" }]\n", 4, "node \"x\" interface #1 field `inside`", "expected a boolean");
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = \"lan\"\n",
            4,
            "node \"x\" field `interfaces`",
            "expected an array of tables",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ngroups = [\"1\"]\n",
            5,
            "node \"x\" field `groups`",
            "expected group ids (integers), found a string",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ngroups = 1\n",
            5,
            "node \"x\" field `groups`",
            "expected an array, found an integer",
        );
    }

    // --- the [load] table --------------------------------------------------------------

    #[test]
    fn load_table_names_an_ipsec_design_of_ges_only() {
        assert_eq!(ok("").load, LoadOptions::default());
        let s = ok("[load]\nipsec_peers = { gen = [\"a\"], a = [\"gen\"] }\n");
        assert_eq!(s.load.ipsec_peers, vec![("a".into(), vec!["gen".into()]), ("gen".into(), vec!["a".into()])]);
        let s = ok("[load]\nipsec_peers = { a = [] }\n");
        assert!(!s.load.allows_ipsec("a", "gen"));
        assert!(!s.load.allows_ipsec("gen", "a"), "a design holds at both ends");
        assert!(LoadOptions::default().allows_ipsec("a", "gen"));

        bad("[load]\nipsec_peer = {}\n", 2, "load field `ipsec_peer`", "unknown field (expected one of: ipsec_peers)");
        for (peers, msg) in [
            ("[\"a\"]", "expected a table, found an array"),
            ("{ b = [\"gen\"] }", "\"b\" is not a GE of this scenario"),
            ("{ a = \"gen\" }", "a: expected an array of GE names"),
            ("{ a = [1] }", "a: expected a GE name, found an integer"),
            ("{ a = [\"a\"] }", "a: \"a\" is not another GE"),
            ("{ a = [\"c\"] }", "a: \"c\" is not another GE"),
            ("{ a = [\"gen\", \"gen\"] }", "a: \"gen\" is listed twice"),
        ] {
            bad(&format!("[load]\nipsec_peers = {peers}\n"), 2, "load field `ipsec_peers`", msg);
        }
    }

    // --- unknown fields everywhere --------------------------------------------------

    #[test]
    fn unknown_fields_are_rejected_everywhere() {
        bad_full(
            "name = \"x\"\nversion = 2\n",
            2,
            "field `version`",
            "unknown field (expected one of: name, description",
        );
        bad(
            "[[group]]\nid = 5\ncolour = \"red\"\n",
            3,
            "group 5 field `colour`",
            "unknown field (expected one of: id, name)",
        );
        bad(
            "[[subnet]]\nname = \"s\"\nprefix = \"10.9.0.0/24\"\nmtu = 1400\n",
            4,
            "subnet \"s\" field `mtu`",
            "unknown field",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\nmdoe = \"open\"\n",
            4,
            "node \"x\" field `mdoe`",
            "unknown field (expected one of: name, kind, mode,",
        );
        bad("[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [\n  { subnet = \"lan\", adress = \"10.1.0.99\" },\n]\n", 5, "node \"x\" interface #1 field `adress`", "unknown field (expected one of: subnet, address, inside)");
        bad("[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.99\" }]\nroutes = [{ to = \"10.0.1.0/24\", via = \"10.1.0.1\", metric = 1 }]\n", 5, "node \"x\" route #1 field `metric`", "unknown field (expected one of: to, via)");
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\ncount = 3\n",
            6,
            "flow \"a->b:80/tcp\" field `count`",
            "unknown field",
        );
        bad(
            "[sim]\nseed = 3\nspeed = 9\n",
            3,
            "sim field `speed`",
            "unknown field (expected one of: seed, loss, reorder, delay_us, jitter_us)",
        );
        // [[node.interfaces]] sub-tables are checked the same way.
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\n[[node.interfaces]]\nsubnet = \"lan\"\naddres = \"10.1.0.99\"\n",
            6,
            "node \"x\" interface #1 field `addres`",
            "unknown field",
        );
    }

    // --- top level ------------------------------------------------------------------

    #[test]
    fn scenario_name_is_required_and_non_empty() {
        bad_full("description = \"d\"\n", 1, "field `name`", "required");
        bad_full("\n\nname = \"  \"\n", 3, "field `name`", "must not be empty");
        let s = Scenario::parse("name = \"only\"\ndescription = \"d\"\n", "t.toml").unwrap();
        assert_eq!(s.description.as_deref(), Some("d"));
        assert!(s.nodes.is_empty() && s.flows.is_empty() && s.groups.is_empty());
    }

    // --- groups ---------------------------------------------------------------------

    #[test]
    fn group_rules() {
        bad("[[group]]\nid = 0\n", 2, "group 0 field `id`", "must be 1..=65535, got 0");
        bad("[[group]]\nid = 65536\n", 2, "group 65536 field `id`", "must be 1..=65535, got 65536");
        bad("[[group]]\nid = -1\n", 2, "group -1 field `id`", "must be 1..=65535");
        bad("[[group]]\nname = \"x\"\n", 1, "group #3 field `id`", "required");
        bad("[[group]]\nid = 2\n", 2, "group 2 field `id`", "group 2 is already defined at line 4");
        bad("[[group]]\nid = 3\nname = 3\n", 3, "group 3 field `name`", "expected a string");
        let s = ok("[[group]]\nid = 65535\nname = \"max\"\n");
        assert_eq!(s.groups[2], GroupDef { id: 65535, name: Some("max".into()) });
    }

    // --- subnets --------------------------------------------------------------------

    #[test]
    fn subnet_rules() {
        bad(
            "[[subnet]]\nname = \"lan\"\nprefix = \"10.2.0.0/24\"\n",
            2,
            "subnet \"lan\" field `name`",
            "already defined at line 10",
        );
        bad("[[subnet]]\nprefix = \"10.2.0.0/24\"\n", 1, "subnet #4 field `name`", "required");
        bad("[[subnet]]\nname = \"x\"\n", 1, "subnet \"x\" field `prefix`", "required");
        bad(
            "[[subnet]]\nname = \"x\"\nprefix = \"10.2.0.0\"\n",
            3,
            "subnet \"x\" field `prefix`",
            "is not an IP prefix",
        );
        bad(
            "[[subnet]]\nname = \"x\"\nprefix = \"10.2.0.0/33\"\n",
            3,
            "subnet \"x\" field `prefix`",
            "is not an IP prefix",
        );
        bad(
            "[[subnet]]\nname = \"x\"\nprefix = \"10.2.0.1/24\"\n",
            3,
            "subnet \"x\" field `prefix`",
            "host bits set (the prefix is 10.2.0.0/24)",
        );
        bad("[[subnet]]\nname = \"x\"\nprefix = \"127.0.0.0/8\"\n", 3, "subnet \"x\" field `prefix`", "loopback");
        bad(
            "[[subnet]]\nname = \"x\"\nprefix = \"0.0.0.0/0\"\n",
            3,
            "subnet \"x\" field `prefix`",
            "whole address space",
        );
        bad("[[subnet]]\nname = \"x\"\nprefix = \"fe80::/64\"\n", 3, "subnet \"x\" field `prefix`", "link-local");
        bad(
            "[[subnet]]\nname = \"x y\"\nprefix = \"10.2.0.0/24\"\n",
            2,
            "subnet \"x y\" field `name`",
            "not a valid name",
        );
        bad("[[subnet]]\nname = \"\"\nprefix = \"10.2.0.0/24\"\n", 2, "subnet \"\" field `name`", "must not be empty");
        // overlapping prefixes on different links are allowed (private spaces behind NATs)
        let s = ok("[[subnet]]\nname = \"lan2\"\nprefix = \"10.1.0.0/24\"\n");
        assert_eq!(s.subnets.len(), 4);
    }

    // --- nodes ----------------------------------------------------------------------

    #[test]
    fn node_name_and_kind_rules() {
        bad(
            "[[node]]\nname = \"a\"\nkind = \"term\"\n",
            2,
            "node \"a\" field `name`",
            "node \"a\" is already defined at line 22",
        );
        bad("[[node]]\nkind = \"term\"\n", 1, "node #5 field `name`", "required");
        bad("[[node]]\nname = \"-x\"\nkind = \"term\"\n", 2, "node \"-x\" field `name`", "not a valid name");
        bad(
            &format!("[[node]]\nname = \"{}\"\nkind = \"term\"\n", "x".repeat(64)),
            2,
            &format!("node \"{}\" field `name`", "x".repeat(64)),
            "longer than 63",
        );
        bad(
            "[[node]]\nname = \"x\"\n",
            1,
            "node \"x\" field `kind`",
            "required (ges | gen | gea | gnat | gsra | term | router | nat)",
        );
        bad("[[node]]\nname = \"x\"\nkind = \"host\"\n", 3, "node \"x\" field `kind`", "unknown kind \"host\"");
    }

    #[test]
    fn mode_rules() {
        for k in ["ges", "gen", "gnat", "gsra"] {
            bad(
                &format!("[[node]]\nname = \"x\"\nkind = \"{k}\"\n"),
                1,
                "node \"x\" field `mode`",
                &format!("required for GE kind `{k}` (closed | open)"),
            );
        }
        bad(
            "[[node]]\nname = \"x\"\nkind = \"gea\"\nprotects = [\"b\"]\n",
            1,
            "node \"x\" field `mode`",
            "required for GE kind `gea`",
        );
        for k in ["term", "router", "nat"] {
            bad(
                &format!("[[node]]\nname = \"x\"\nkind = \"{k}\"\nmode = \"open\"\n"),
                4,
                "node \"x\" field `mode`",
                &format!("not allowed for kind `{k}`"),
            );
        }
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"CL\"\n",
            4,
            "node \"x\" field `mode`",
            "unknown mode \"CL\" (expected closed | open)",
        );
        let s = ok("[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"closed\"\n");
        assert_eq!(s.node("x").unwrap().mode, Some(ModeDef::Closed));
        assert!(s.node("x").unwrap().groups.is_empty());
    }

    #[test]
    fn groups_of_a_node() {
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\ngroups = [1]\n",
            4,
            "node \"x\" field `groups`",
            "not allowed for kind `term`",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"router\"\ngroups = []\n",
            4,
            "node \"x\" field `groups`",
            "not allowed for kind `router`",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ngroups = [1,\n  7]\n",
            6,
            "node \"x\" field `groups`",
            "group 7 is not defined (add a [[group]] with id = 7)",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ngroups = [70000]\n",
            5,
            "node \"x\" field `groups`",
            "group 70000 is not defined",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ngroups = [2, 2]\n",
            5,
            "node \"x\" field `groups`",
            "group 2 is listed twice",
        );
        let s = ok("[[node]]\nname = \"x\"\nkind = \"gsra\"\nmode = \"open\"\ngroups = [2, 1]\n");
        assert_eq!(s.node("x").unwrap().groups, vec![2, 1]);
    }

    #[test]
    fn interface_rules() {
        let node = "[[node]]\nname = \"x\"\nkind = \"term\"\n";
        bad(
            &format!("{node}interfaces = [{{ subnet = \"nope\", address = \"10.1.0.99\" }}]\n"),
            4,
            "node \"x\" interface #1 field `subnet`",
            "subnet \"nope\" is not defined",
        );
        bad(
            &format!("{node}interfaces = [{{ address = \"10.1.0.99\" }}]\n"),
            4,
            "node \"x\" interface #1 field `subnet`",
            "required",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "required (an address in 10.1.0.0/24)",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"10.1.0.99/24\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "is not an IP address",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"10.2.0.9\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "10.2.0.9 is not inside subnet \"lan\" (10.1.0.0/24)",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"fd00:1::99\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "fd00:1::99 is IPv6 but subnet \"lan\" is 10.1.0.0/24",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"10.1.0.0\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "network address",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"10.1.0.255\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "broadcast address",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"v6\", address = \"fd00:1::\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "network address",
        );
        bad(
            &format!("{node}interfaces = [{{ subnet = \"lan\", address = \"10.1.0.10\" }}]\n"),
            4,
            "node \"x\" interface #1 field `address`",
            "10.1.0.10 is already used by node \"a\" (line 27)",
        );
        bad(&format!("{node}interfaces = [\n  {{ subnet = \"lan\", address = \"10.1.0.98\" }},\n  {{ subnet = \"lan\", address = \"10.1.0.99\" }},\n]\n"), 6, "node \"x\" interface #2 field `subnet`", "already has an interface on subnet \"lan\" (interface #1)");
        // `inside` only where it means something
        for k in ["term", "router"] {
            bad(&format!("[[node]]\nname = \"x\"\nkind = \"{k}\"\ninterfaces = [{{ subnet = \"lan\", address = \"10.1.0.99\", inside = true }}]\n"), 4, "node \"x\" interface #1 field `inside`", "only for gen, gnat, gsra and nat");
        }
        bad("[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.99\", inside = true }]\n", 5, "node \"x\" interface #1 field `inside`", "not `ges`");
        let s = ok("[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.99\", inside = false }]\n");
        assert!(!s.node("x").unwrap().interfaces[0].inside);
        for k in ["nat", "gnat", "gsra"] {
            let mode = if k == "nat" { "" } else { "mode = \"closed\"\n" };
            let s = ok(&format!("[[node]]\nname = \"x\"\nkind = \"{k}\"\n{mode}interfaces = [{{ subnet = \"lan\", address = \"10.1.0.99\", inside = true }}, {{ subnet = \"net1\", address = \"10.0.1.99\" }}]\n"));
            assert!(s.node("x").unwrap().interfaces[0].inside);
        }
        // [[node.interfaces]] works like the inline form
        let s = ok(
            "[[node]]\nname = \"x\"\nkind = \"term\"\n[[node.interfaces]]\nsubnet = \"lan\"\naddress = \"10.1.0.99\"\n",
        );
        assert_eq!(s.node("x").unwrap().interfaces[0].address, "10.1.0.99".parse::<IpAddr>().unwrap());
        // /31 and /127: both addresses usable
        let s = ok("[[subnet]]\nname = \"p2p\"\nprefix = \"10.9.9.0/31\"\n[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"p2p\", address = \"10.9.9.0\" }]\n");
        assert_eq!(s.nodes.len(), 5);
    }

    #[test]
    fn gea_rules() {
        let gea = "[[node]]\nname = \"g\"\nkind = \"gea\"\nmode = \"closed\"\ngroups = [2]\n";
        let s = ok(&format!("{gea}protects = [\"b\"]\n"));
        let g = s.node("g").unwrap();
        assert_eq!(g.protects, vec!["b".to_string()]);
        assert!(g.interfaces.is_empty());
        assert_eq!(s.protector_of("b").map(|n| n.name.as_str()), Some("g"));
        assert!(s.protector_of("a").is_none());

        bad(gea, 1, "node \"g\" field `protects`", "required for kind `gea`");
        bad(&format!("{gea}protects = []\n"), 6, "node \"g\" field `protects`", "must name at least one node");
        bad(
            &format!("{gea}protects = [\"b\", \"nope\"]\n"),
            6,
            "node \"g\" field `protects`",
            "node \"nope\" does not exist",
        );
        bad(
            &format!("{gea}protects = [\"b\", \"b\"]\n"),
            6,
            "node \"g\" field `protects`",
            "node \"b\" is listed twice",
        );
        bad(&format!("{gea}protects = [1]\n"), 6, "node \"g\" field `protects`", "expected node names (strings)");
        bad(
            &format!("{gea}protects = [\"a\"]\n"),
            6,
            "node \"g\" field `protects`",
            "node \"a\" is of kind `ges`; a GEA protects only `term` nodes",
        );
        bad(&format!("{gea}protects = [\"gen\"]\n"), 6, "node \"g\" field `protects`", "of kind `gen`");
        bad(
            &format!("{gea}protects = [\"lonely\"]\n[[node]]\nname = \"lonely\"\nkind = \"term\"\n"),
            6,
            "node \"g\" field `protects`",
            "node \"lonely\" has no interfaces",
        );
        bad(&format!("{gea}protects = [\"b\"]\n[[node]]\nname = \"g2\"\nkind = \"gea\"\nmode = \"open\"\nprotects = [\"b\"]\n"), 11, "node \"g2\" field `protects`", "node \"b\" is already protected by gea \"g\" (line 38)");
        bad(
            &format!("{gea}protects = [\"b\"]\ninterfaces = [{{ subnet = \"net1\", address = \"10.0.1.50\" }}]\n"),
            7,
            "node \"g\" field `interfaces`",
            "transparent bridge with no address",
        );
        bad(
            &format!("{gea}protects = [\"b\"]\ngateway = \"10.0.1.1\"\n"),
            7,
            "node \"g\" field `gateway`",
            "not allowed for kind `gea`",
        );
        bad(
            &format!("{gea}protects = [\"b\"]\nroutes = []\n"),
            7,
            "node \"g\" field `routes`",
            "not allowed for kind `gea`",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"ges\"\nmode = \"open\"\nprotects = [\"b\"]\n",
            5,
            "node \"x\" field `protects`",
            "only a `gea` protects other nodes",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\nprotects = [\"b\"]\n",
            4,
            "node \"x\" field `protects`",
            "not allowed for kind `term`",
        );
    }

    #[test]
    fn route_and_gateway_rules() {
        let node =
            "[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"net1\", address = \"10.0.1.20\" }]\n";
        let s = ok(&format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"10.0.1.1\" }}, {{ to = \"0.0.0.0/0\", via = \"10.0.1.1\" }}]\n"));
        assert_eq!(s.node("x").unwrap().routes.len(), 2);
        bad(&format!("{node}routes = [{{ via = \"10.0.1.1\" }}]\n"), 5, "node \"x\" route #1 field `to`", "required");
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "required",
        );
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.1/24\", via = \"10.0.1.1\" }}]\n"),
            5,
            "node \"x\" route #1 field `to`",
            "host bits set",
        );
        bad(
            &format!("{node}routes = [{{ to = \"banana\", via = \"10.0.1.1\" }}]\n"),
            5,
            "node \"x\" route #1 field `to`",
            "is not an IP prefix",
        );
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"x\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "is not an IP address",
        );
        bad(
            &format!("{node}routes = [{{ to = \"fd00:9::/64\", via = \"10.0.1.1\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "10.0.1.1 is IPv4 but `to` fd00:9::/64 is IPv6",
        );
        bad(&format!("{node}routes = [\n  {{ to = \"10.1.0.0/24\", via = \"10.0.1.1\" }},\n  {{ to = \"10.1.0.0/24\", via = \"10.0.1.1\" }},\n]\n"), 7, "node \"x\" route #2 field `to`", "already has a route to 10.1.0.0/24");
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"10.1.0.1\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "10.1.0.1 is not on a subnet node \"x\" is attached to (\"net1\" 10.0.1.0/24)",
        );
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"10.0.1.20\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "this node's own address",
        );
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"10.0.1.77\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "no node has address 10.0.1.77 on subnet \"net1\"",
        );
        bad(
            &format!("{node}routes = [{{ to = \"10.1.0.0/24\", via = \"10.0.1.10\" }}]\n"),
            5,
            "node \"x\" route #1 field `via`",
            "10.0.1.10 is node \"b\" of kind `term`, which does not forward packets",
        );
        bad(&format!("{node}gateway = \"10.0.1.10\"\n"), 5, "node \"x\" field `gateway`", "does not forward packets");
        bad(
            &format!("{node}gateway = \"10.1.0.1\"\n"),
            5,
            "node \"x\" field `gateway`",
            "is not on a subnet node \"x\" is attached to",
        );
        bad(&format!("{node}gateway = \"10.0.1\"\n"), 5, "node \"x\" field `gateway`", "is not an IP address");
        bad(&format!("{node}gateway = \"fd00:1::1\"\n"), 5, "node \"x\" field `gateway`", "is not on a subnet");
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\ngateway = \"10.0.1.1\"\n",
            4,
            "node \"x\" field `gateway`",
            "node \"x\" has no interfaces",
        );
        let s = ok(&format!("{node}gateway = \"10.0.1.1\"\n"));
        assert_eq!(s.node("x").unwrap().gateway, Some("10.0.1.1".parse().unwrap()));
        // a next hop declared later in the file is fine
        let s = ok("[[node]]\nname = \"x\"\nkind = \"term\"\ninterfaces = [{ subnet = \"net1\", address = \"10.0.1.20\" }]\ngateway = \"10.0.1.2\"\n[[node]]\nname = \"r\"\nkind = \"router\"\ninterfaces = [{ subnet = \"net1\", address = \"10.0.1.2\" }]\n");
        assert_eq!(s.nodes.len(), 6);
    }

    // --- flows ----------------------------------------------------------------------

    const FLOW: &str = "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\n";

    #[test]
    fn flow_defaults_and_fields() {
        let s = ok(&format!("{FLOW}[[flow]]\nname = \"named\"\nfrom = \"b\"\nto = \"a\"\nproto = \"udp\"\nport = 53\nexpect = \"protected\"\ngroup = 2\n"));
        assert_eq!(
            s.flows[0],
            FlowDef {
                name: "a->b:80/tcp".into(),
                from: "a".into(),
                to: "b".into(),
                proto: Proto::Tcp,
                port: 80,
                expect: None,
                group: None
            }
        );
        assert_eq!(
            s.flows[1],
            FlowDef {
                name: "named".into(),
                from: "b".into(),
                to: "a".into(),
                proto: Proto::Udp,
                port: 53,
                expect: Some(Outcome::Protected),
                group: Some(2)
            }
        );
        assert_eq!(s.flow("named").unwrap().port, 53);
        for (e, o) in [("plaintext", Outcome::Plaintext), ("discarded", Outcome::Discarded)] {
            let s = ok(&format!("{FLOW}expect = \"{e}\"\n"));
            assert_eq!(s.flows[0].expect, Some(o));
        }
        let s = ok(&format!("{FLOW}group = 1\n"));
        assert_eq!(s.flows[0].group, Some(1));
    }

    #[test]
    fn flow_endpoint_rules() {
        bad("[[flow]]\nto = \"b\"\nproto = \"tcp\"\nport = 80\n", 1, "flow #1 field `from`", "required (a node name)");
        bad("[[flow]]\nfrom = \"a\"\nproto = \"tcp\"\nport = 80\n", 1, "flow #1 field `to`", "required (a node name)");
        bad(
            "[[flow]]\nfrom = \"zz\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\n",
            2,
            "flow \"zz->b:80/tcp\" field `from`",
            "no node named \"zz\"",
        );
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"zz\"\nproto = \"tcp\"\nport = 80\n",
            3,
            "flow \"a->zz:80/tcp\" field `to`",
            "no node named \"zz\"",
        );
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"a\"\nproto = \"tcp\"\nport = 80\n",
            3,
            "flow \"a->a:80/tcp\" field `to`",
            "is the same node as `from`",
        );
        bad(
            "[[node]]\nname = \"x\"\nkind = \"term\"\n[[flow]]\nfrom = \"a\"\nto = \"x\"\nproto = \"tcp\"\nport = 80\n",
            6,
            "flow \"a->x:80/tcp\" field `to`",
            "node \"x\" has no interfaces",
        );
        bad("[[node]]\nname = \"g\"\nkind = \"gea\"\nmode = \"closed\"\nprotects = [\"b\"]\n[[flow]]\nfrom = \"g\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\n", 7, "flow \"g->b:80/tcp\" field `from`", "is a gea, a transparent bridge");
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"c\"\nproto = \"tcp\"\nport = 80\n",
            3,
            "flow \"a->c:80/tcp\" field `to`",
            "node \"a\" (IPv4) and node \"c\" (IPv6) share no IP family",
        );
        // the GEN has both families, so it can reach c
        let s = ok("[[flow]]\nfrom = \"gen\"\nto = \"c\"\nproto = \"udp\"\nport = 1\n");
        assert_eq!(s.flows[0].name, "gen->c:1/udp");
    }

    #[test]
    fn flow_value_rules() {
        bad("[[flow]]\nfrom = \"a\"\nto = \"b\"\nport = 80\n", 1, "flow #1 field `proto`", "required (tcp | udp)");
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"icmp\"\nport = 80\n",
            4,
            "flow #1 field `proto`",
            "unknown protocol \"icmp\" (expected tcp | udp)",
        );
        bad("[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\n", 1, "flow #1 field `port`", "required (1..=65535)");
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 0\n",
            5,
            "flow \"a->b:0/tcp\" field `port`",
            "must be 1..=65535, got 0",
        );
        bad(
            "[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 65536\n",
            5,
            "flow #1 field `port`",
            "must be 1..=65535, got 65536",
        );
        bad(
            &format!("{FLOW}expect = \"ok\"\n"),
            6,
            "flow \"a->b:80/tcp\" field `expect`",
            "unknown outcome \"ok\" (expected protected | plaintext | discarded)",
        );
        bad(&format!("{FLOW}group = 9\n"), 6, "flow \"a->b:80/tcp\" field `group`", "group 9 is not defined");
        bad(&format!("{FLOW}group = 0\n"), 6, "flow \"a->b:80/tcp\" field `group`", "group 0 is not defined");
        bad(
            &format!("{FLOW}expect = \"plaintext\"\ngroup = 1\n"),
            7,
            "flow \"a->b:80/tcp\" field `group`",
            "only makes sense with expect = \"protected\" (this flow expects plaintext)",
        );
        bad(
            &format!("{FLOW}expect = \"discarded\"\ngroup = 1\n"),
            7,
            "flow \"a->b:80/tcp\" field `group`",
            "this flow expects discarded",
        );
        bad(
            "[[flow]]\nname = \"\"\nfrom = \"a\"\nto = \"b\"\nproto = \"tcp\"\nport = 80\n",
            2,
            "flow \"\" field `name`",
            "must not be empty",
        );
    }

    #[test]
    fn flow_names_are_unique_after_defaulting() {
        let first = base_lines() + 1;
        bad(
            &format!("{FLOW}{FLOW}"),
            6,
            "flow \"a->b:80/tcp\" field `name`",
            &format!("flow name \"a->b:80/tcp\" is already used by the flow at line {first}"),
        );
        bad(
            &format!("{FLOW}[[flow]]\nname = \"a->b:80/tcp\"\nfrom = \"b\"\nto = \"a\"\nproto = \"tcp\"\nport = 80\n"),
            7,
            "flow \"a->b:80/tcp\" field `name`",
            "already used",
        );
        // same endpoints, another port or protocol: distinct default names
        let s = ok(&format!("{FLOW}[[flow]]\nfrom = \"a\"\nto = \"b\"\nproto = \"udp\"\nport = 80\n"));
        assert_eq!(s.flows[1].name, "a->b:80/udp");
    }

    // --- sim ------------------------------------------------------------------------

    #[test]
    fn sim_rules() {
        let s = ok("[sim]\nseed = 42\nloss = 0.25\nreorder = 1\ndelay_us = 0\njitter_us = 7\n");
        assert_eq!(s.sim, SimOptions { seed: 42, loss: 0.25, reorder: 1.0, delay_us: 0, jitter_us: 7 });
        let s = ok("[sim]\n");
        assert_eq!(s.sim, SimOptions::default());
        bad("[sim]\nloss = 1.5\n", 2, "sim field `loss`", "must be a probability between 0 and 1, got 1.5");
        bad("[sim]\nloss = -0.1\n", 2, "sim field `loss`", "between 0 and 1");
        bad("[sim]\nreorder = nan\n", 2, "sim field `reorder`", "between 0 and 1");
        bad("[sim]\nreorder = inf\n", 2, "sim field `reorder`", "between 0 and 1");
        bad("[sim]\nloss = \"1%\"\n", 2, "sim field `loss`", "expected a number, found a string");
        bad("[sim]\nseed = -1\n", 2, "sim field `seed`", "must be 0 or more");
        bad("[sim]\nseed = 1.5\n", 2, "sim field `seed`", "expected an integer, found a float");
        bad("[sim]\ndelay_us = -5\n", 2, "sim field `delay_us`", "must be 0..=10000000 microseconds");
        bad("[sim]\njitter_us = 10000001\n", 2, "sim field `jitter_us`", "must be 0..=10000000");
    }

    // --- order independence ---------------------------------------------------------

    #[test]
    fn tables_may_come_in_any_order() {
        let text = r#"
[[flow]]
from = "h1"
to = "h2"
proto = "udp"
port = 9
expect = "protected"
group = 4
[[node]]
name = "h1"
kind = "ges"
mode = "open"
groups = [4]
interfaces = [{ subnet = "s", address = "192.168.0.1" }]
[[node]]
name = "h2"
kind = "ges"
mode = "closed"
groups = [4]
interfaces = [{ subnet = "s", address = "192.168.0.2" }]
[[subnet]]
name = "s"
prefix = "192.168.0.0/24"
[[group]]
id = 4
name = "late" # comments are fine
[sim]
seed = 0
name = "order"
"#;
        // `name` after [sim] belongs to the sim table in TOML, so the scenario has none.
        bad_full(text, 1, "field `name`", "required");
        let with_name = format!("name = \"order\"\n{text}");
        bad_full(&with_name, 30, "sim field `name`", "unknown field");
        let fixed = format!("name = \"order\"\n{}", text.replace("name = \"order\"\n", ""));
        let s = Scenario::parse(&fixed, "o.toml").unwrap();
        assert_eq!(s.flows[0].name, "h1->h2:9/udp");
        assert_eq!(s.sim.seed, 0);
    }

    // --- the example files ----------------------------------------------------------

    fn examples_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
    }

    fn example_files() -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(examples_dir())
            .expect("examples/ exists")
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn every_example_parses() {
        let files = example_files();
        let names: Vec<String> = files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["enterprise.toml", "nested.toml", "servers.toml", "ipv6.toml"] {
            assert!(names.iter().any(|n| n == want), "examples/{want} is missing");
        }
        for f in &files {
            let s = Scenario::from_file(f).unwrap_or_else(|e| panic!("{e}"));
            assert!(!s.flows.is_empty(), "{} has no flows", f.display());
            for flow in &s.flows {
                assert!(flow.expect.is_some(), "{}: flow {} has no expect", f.display(), flow.name);
                assert_eq!(
                    flow.group.is_some(),
                    flow.expect == Some(Outcome::Protected),
                    "{}: flow {}: protected flows name their group, others do not",
                    f.display(),
                    flow.name
                );
            }
            // parsing is deterministic
            let again = Scenario::from_file(f).unwrap();
            assert_eq!(s, again);
        }
    }

    #[test]
    fn enterprise_example_follows_the_spec_table() {
        let s = Scenario::from_file(&examples_dir().join("enterprise.toml")).unwrap();
        let rows: Vec<(&str, &str, Option<Outcome>, Option<u16>)> =
            s.flows.iter().map(|f| (f.from.as_str(), f.to.as_str(), f.expect, f.group)).collect();
        use Outcome::*;
        assert_eq!(
            rows,
            vec![
                ("ges2", "server", Some(Protected), Some(2)),
                ("ges3", "server", Some(Protected), Some(3)),
                ("ges1", "server", Some(Discarded), None),
                ("term", "server", Some(Discarded), None),
                ("ges1", "ges3", Some(Discarded), None),
                ("term", "ges4", Some(Protected), Some(1)),
                ("ges1", "term", Some(Plaintext), None),
                ("ges2-moved", "server", Some(Protected), Some(2)),
            ]
        );
        let ges2 = s.node("ges2").unwrap();
        let moved = s.node("ges2-moved").unwrap();
        assert_eq!((ges2.kind, ges2.mode, &ges2.groups), (moved.kind, moved.mode, &moved.groups));
        assert_eq!(s.protector_of("server").unwrap().name, "gea");
        assert!(s.flows.iter().any(|f| f.proto == Proto::Udp));
    }

    #[test]
    fn ipv6_example_is_ipv6_only() {
        let s = Scenario::from_file(&examples_dir().join("ipv6.toml")).unwrap();
        assert!(s.subnets.iter().all(|n| matches!(n.prefix, IpNet::V6(_))));
        assert!(s.flows.len() >= 5);
        for o in [Outcome::Protected, Outcome::Plaintext, Outcome::Discarded] {
            assert!(s.flows.iter().any(|f| f.expect == Some(o)), "no {o} flow");
        }
    }

    /// Every complete scenario in docs/scenarios.md (a ```toml block starting with
    /// `name =`) parses; every fragment that is marked as an error fails.
    #[test]
    fn documentation_examples_parse() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scenarios.md");
        let doc = std::fs::read_to_string(&path).expect("docs/scenarios.md exists");
        let mut complete = 0;
        let mut in_block = false;
        let mut block = String::new();
        for line in doc.lines() {
            if !in_block && line.trim_start().starts_with("```toml") {
                in_block = true;
                block.clear();
            } else if in_block && line.trim_start().starts_with("```") {
                in_block = false;
                if block.starts_with("name =") {
                    complete += 1;
                    if let Err(e) = Scenario::parse(&block, "docs/scenarios.md") {
                        panic!("a documented scenario does not parse: {e}\n{block}");
                    }
                }
            } else if in_block {
                block.push_str(line);
                block.push('\n');
            }
        }
        assert!(complete >= 1, "docs/scenarios.md has no complete scenario");
    }

    // --- never panic ----------------------------------------------------------------

    fn example_texts() -> Vec<String> {
        let mut v: Vec<String> = example_files().iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
        v.push(BASE.to_string());
        v
    }

    #[derive(Debug, Clone)]
    enum Mutation {
        DeleteLine(usize),
        DuplicateLine(usize, usize),
        SwapLines(usize, usize),
        InsertToken(usize, usize),
        DeleteBytes(usize, usize),
        ReplaceValue(usize, usize),
    }

    const TOKENS: &[&str] = &[
        "[",
        "]",
        "[[",
        "]]",
        "{",
        "}",
        "\"",
        "=",
        ",",
        "\n",
        "#",
        ".",
        ":",
        "/",
        "0",
        "-1",
        "65535",
        "65536",
        "1e400",
        "nan",
        "inf",
        "true",
        "\u{e9}",
        "\u{1F600}",
        "'",
        "\\",
        "\"\"\"",
        "[[node]]\n",
        "[[flow]]\n",
        "[sim]\n",
        "[[node.interfaces]]\n",
        "inside = true\n",
        "kind = \"gea\"\n",
        "mode = \"open\"\n",
        "protects = [\"server\"]\n",
        "name = \"x\"\n",
        "address = \"10.0.1.1\"\n",
        "gateway = \"10.0.1.1\"\n",
        "to = \"::/0\"\n",
        "1979-05-27T07:32:00Z",
        "groups = [1, 1]\n",
        "loss = 2\n",
        "port = 0\n",
    ];

    const VALUES: &[&str] = &[
        "\"\"",
        "0",
        "-1",
        "70000",
        "\"10.0.1.1\"",
        "\"fd00::1\"",
        "\"10.0.0.0/8\"",
        "[]",
        "{}",
        "true",
        "1.5",
        "\"ges\"",
        "\"gea\"",
        "\"term\"",
        "\"closed\"",
        "\"server\"",
        "[\"server\", \"server\"]",
        "[{ subnet = \"lan\", address = \"10.1.0.5\" }]",
        "nan",
        "1979-05-27",
        "\"tcp\"",
        "\"protected\"",
    ];

    fn mutate(text: &str, muts: &[Mutation]) -> String {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        for m in muts {
            let n = lines.len().max(1);
            match *m {
                Mutation::DeleteLine(i) => {
                    if !lines.is_empty() {
                        lines.remove(i % n);
                    }
                }
                Mutation::DuplicateLine(i, j) => {
                    if !lines.is_empty() {
                        let l = lines[i % n].clone();
                        lines.insert(j % (n + 1), l);
                    }
                }
                Mutation::SwapLines(i, j) => {
                    if !lines.is_empty() {
                        lines.swap(i % n, j % n);
                    }
                }
                Mutation::InsertToken(i, t) => {
                    let mut s = lines.join("\n");
                    let mut at = i % (s.len() + 1);
                    while !s.is_char_boundary(at) {
                        at -= 1;
                    }
                    s.insert_str(at, TOKENS[t % TOKENS.len()]);
                    lines = s.lines().map(str::to_owned).collect();
                }
                Mutation::DeleteBytes(i, len) => {
                    let mut s = lines.join("\n");
                    let mut start = i % (s.len() + 1);
                    while !s.is_char_boundary(start) {
                        start -= 1;
                    }
                    let mut end = (start + len % 16).min(s.len());
                    while !s.is_char_boundary(end) {
                        end += 1;
                    }
                    s.replace_range(start..end, "");
                    lines = s.lines().map(str::to_owned).collect();
                }
                Mutation::ReplaceValue(i, v) => {
                    if !lines.is_empty() {
                        let l = &mut lines[i % n];
                        if let Some(eq) = l.find(" = ") {
                            l.truncate(eq + 3);
                            l.push_str(VALUES[v % VALUES.len()]);
                        }
                    }
                }
            }
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            any::<usize>().prop_map(Mutation::DeleteLine),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::DuplicateLine(a, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::InsertToken(a, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::DeleteBytes(a, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::ReplaceValue(a, b)),
        ]
    }

    /// Whatever happens, an error carries the file and (unless unreadable) a line that
    /// exists in the text.
    fn check_no_panic(text: &str) {
        match Scenario::parse(text, "fuzz.toml") {
            Ok(s) => {
                assert!(!s.name.is_empty());
                let names: HashSet<&str> = s.flows.iter().map(|f| f.name.as_str()).collect();
                assert_eq!(names.len(), s.flows.len());
            }
            Err(e) => {
                assert_eq!(e.file, "fuzz.toml");
                let line = e.line.expect("parse errors always have a line");
                assert!(line >= 1 && line <= text.lines().count().max(1) + 1, "line {line} out of range: {e}");
                let shown = e.to_string();
                assert!(!shown.contains('\n'), "an error must fit on one line: {shown:?}");
            }
        }
    }

    proptest! {
        // PROPTEST_CASES=100000 for a longer run.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512)
        ))]

        #[test]
        fn arbitrary_text_never_panics(text in any::<String>()) {
            check_no_panic(&text);
        }

        #[test]
        fn toml_like_text_never_panics(text in "[a-z_\\[\\]{}=,\"'.:/0-9 \\n#-]{0,300}") {
            check_no_panic(&text);
        }

        #[test]
        fn mutated_examples_never_panic(
            which in any::<usize>(),
            muts in proptest::collection::vec(mutation(), 1..6),
        ) {
            let texts = example_texts();
            let text = mutate(&texts[which % texts.len()], &muts);
            check_no_panic(&text);
        }
    }
}

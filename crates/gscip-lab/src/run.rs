//! `gscip lab run`: a scenario on real Linux hosts.
//!
//! 1. the network is built ([`Lab::build`]);
//! 2. `gmsd` starts on the management network ([`crate::gms`]); the scenario's groups and GEs
//!    are defined through its admin API, and every GE runs `gscipd` in its namespace with a
//!    one-time token, enrolls itself and gets its keys from the GMS (with `use_gms` off, the
//!    built-in stand-in writes key files instead);
//! 3. a capture (AF_PACKET, in the switch namespace) records every frame on every link;
//! 4. each flow runs as real sockets: a Python client in the source namespace sends a unique
//!    random payload over TCP or UDP, the server echoes it, twice;
//! 5. the report (SPEC 11.2) is made from the applications' results, the daemons' decisions
//!    (their JSON event logs) and the capture, with the same rules as the simulator's
//!    ([`gscip_sim::paths::flow_report`]).
//!
//! `setup_us` is measured by the client: the first exchange (TCP: connect, send, reply) minus
//! the same number of round trips of the second exchange on the established flow (which needs
//! no negotiation).

use crate::gms::LabGms;
use crate::{run as sh, Lab, LabError};
use gscip_core::policy::FlowAction;
use gscip_sim::gms::BuiltinGms;
use gscip_sim::paths::{flow_report, FlowPath, Observation, ObservedDecision};
use gscip_sim::report::Report;
use gscip_sim::scenario::{ModeDef, NodeKind, Proto, Scenario};
use gscip_sim::topology::Topology;
use gscipd::keyfile::KeyFile;
use rand_core::{OsRng, RngCore};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The applications: a one-shot echo server, and a client making two exchanges and printing
/// the replies and the two exchange times in microseconds.
pub const APP_PY: &str = r#"
import socket, sys, time
role, proto, host, port, payload = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(fam, kind)
if role == "server":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.settimeout(20)
    if proto == "tcp":
        s.listen(); print("ready", flush=True); c, _ = s.accept(); c.settimeout(5)
        for _ in range(2):
            d = c.recv(256)
            if not d: break
            c.sendall(b"re:" + d)
    else:
        print("ready", flush=True)
        for _ in range(2):
            d, peer = s.recvfrom(256); s.sendto(b"re:" + d, peer)
else:
    s.settimeout(3)
    out = []
    try:
        t0 = time.time()
        if proto == "tcp":
            s.connect((host, port)); s.sendall(payload); r1 = s.recv(256)
        else:
            s.sendto(payload, (host, port)); r1 = s.recvfrom(256)[0]
        t1 = time.time()
        if proto == "tcp":
            s.sendall(payload + b"-2"); r2 = s.recv(256)
        else:
            s.sendto(payload + b"-2", (host, port)); r2 = s.recvfrom(256)[0]
        t2 = time.time()
        print(r1.decode(), r2.decode(), int((t1 - t0) * 1e6), int((t2 - t1) * 1e6))
    except OSError as e:
        print("ERROR", type(e).__name__)
"#;

/// The capture: every frame on every interface of the switch namespace, as
/// `INTERFACE HEX` lines.
pub const SNIFF_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.settimeout(0.1)
out = open(sys.argv[1], "w")
open(sys.argv[1] + ".ready", "w").close()
while True:
    try:
        data, addr = s.recvfrom(65535)
        out.write(addr[0] + " " + data.hex() + "\n"); out.flush()
    except socket.timeout:
        pass
"#;

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Names every namespace PREFIX-NODE.
    pub prefix: String,
    /// Leave the lab up afterwards.
    pub keep: bool,
    /// The `gscipd` binary.
    pub gscipd: PathBuf,
    /// Where key files, configurations, logs and the capture go.
    pub work_dir: PathBuf,
    /// Appended to every daemon's configuration (e.g. `aead = "chacha20-poly1305"`).
    pub extra_config: String,
    /// Extra arguments for every daemon (e.g. `--accept-only` for the benchmark's floor).
    pub daemon_args: Vec<String>,
    /// Run the real GMS (`gmsd` on SQLite) and enroll every GE through its API; otherwise
    /// the built-in stand-in writes key files (the benchmark's way: less to start).
    pub use_gms: bool,
    /// The `gmsd` binary.
    pub gmsd: PathBuf,
}

impl RunOptions {
    /// The usual options for a prefix: `gscipd` next to this binary (or `$GSCIPD`), a work
    /// directory in the temporary directory.
    pub fn new(prefix: &str) -> RunOptions {
        let sibling = |env: &str, name: &str| {
            std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
                std::env::current_exe().map(|p| p.with_file_name(name)).unwrap_or_else(|_| PathBuf::from(name))
            })
        };
        let gscipd = sibling("GSCIPD", "gscipd");
        RunOptions {
            prefix: prefix.to_owned(),
            keep: false,
            gscipd,
            work_dir: std::env::temp_dir().join(format!("gscip-lab-{prefix}")),
            extra_config: String::new(),
            daemon_args: Vec::new(),
            use_gms: true,
            gmsd: sibling("GMSD", "gmsd"),
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            // Only a child not yet reaped: a reaped one's PID may belong to someone else now.
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            }
        }
        for (_, c) in &mut self.0 {
            reap(c);
        }
    }
}

/// Waits up to 3 s for a child told to stop, then kills it.
fn reap(c: &mut Child) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn need(tool: &str, package: &str) -> Result<(), LabError> {
    sh("sh", &["-c", &format!("command -v {tool}")])
        .map(|_| ())
        .map_err(|_| LabError::Environment(format!("`{tool}` is missing: apt-get install {package}")))
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// The lab's switch ports that make up a link (a subnet, or `GEA:inside`).
pub fn ports_of_link(s: &Scenario, link: &str) -> Vec<String> {
    let gea_of = |name: &str| s.nodes.iter().position(|g| g.protects.iter().any(|p| p == name));
    let mut ports = Vec::new();
    for (ni, n) in s.nodes.iter().enumerate() {
        for (k, i) in n.interfaces.iter().enumerate() {
            let on = match gea_of(&n.name) {
                Some(gi) => link == format!("{}:inside", s.nodes[gi].name),
                None => i.subnet == link,
            };
            if on {
                ports.push(format!("v{ni}-{k}"));
            }
        }
        if n.kind == NodeKind::Gea {
            for (k, subnet) in crate::gea_subnets(s, n).iter().enumerate() {
                if subnet == link {
                    ports.push(format!("g{ni}o{k}"));
                }
                if link == format!("{}:inside", n.name) {
                    ports.push(format!("g{ni}i{k}"));
                }
            }
        }
    }
    ports
}

/// Runs the scenario in the lab and reports.
pub fn run_scenario(s: &Scenario, opts: &RunOptions) -> Result<Report, LabError> {
    crate::check_environment()?;
    need("iptables", "iptables")?;
    need("python3", "python3")?;
    if !opts.gscipd.exists() {
        return Err(LabError::Environment(format!(
            "gscipd not found at {} (build it: make build)",
            opts.gscipd.display()
        )));
    }
    if s.nodes.iter().any(|n| matches!(n.kind, NodeKind::Nat | NodeKind::Gnat | NodeKind::Gsra)) {
        return Err(LabError::Scenario(
            "kinds nat, gnat and gsra need NAT support, which the lab does not have yet".into(),
        ));
    }
    let topo = Topology::new(s);
    let paths: Vec<FlowPath> =
        s.flows.iter().map(|f| FlowPath::new(s, &topo, f)).collect::<Result<_, _>>().map_err(LabError::Scenario)?;
    std::fs::create_dir_all(&opts.work_dir)
        .map_err(|e| LabError::Environment(format!("{}: {e}", opts.work_dir.display())))?;
    let mut lab = Lab::build(s, &opts.prefix)?;
    if opts.keep {
        lab.keep();
    }
    let gms = match opts.use_gms {
        true => {
            let management = lab.add_management(s)?;
            let gms = LabGms::start(&management, &opts.gmsd, &opts.work_dir)?;
            gms.define(s)?;
            Some(gms)
        }
        false => None,
    };
    let daemons = start_daemons(s, &topo, &lab, opts, gms.as_ref())?;
    let (capture, cap_file) = start_capture(&opts.prefix, &opts.work_dir)?;

    let app = opts.work_dir.join("app.py");
    std::fs::write(&app, APP_PY).map_err(|e| LabError::Environment(e.to_string()))?;
    let mut results = Vec::new();
    for (f, p) in s.flows.iter().zip(&paths) {
        let mut nonce = [0u8; 8];
        OsRng.fill_bytes(&mut nonce);
        let payload = format!("gscip-{}", nonce.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let out = exchange(&lab, &app, &f.from, &f.to, &p.dst.to_string(), f.proto, f.port, &payload)?;
        results.push((payload, out));
    }
    std::thread::sleep(Duration::from_millis(200));
    drop(capture);
    drop(daemons);
    drop(gms);
    let captured = std::fs::read_to_string(&cap_file).unwrap_or_default();
    let events = read_events(s, &opts.work_dir);

    let mut flows = Vec::new();
    let mut leaks = 0;
    for ((f, p), (payload, out)) in s.flows.iter().zip(&paths).zip(&results) {
        let fields: Vec<&str> = out.split_whitespace().collect();
        let delivered =
            fields.len() == 4 && fields[0] == format!("re:{payload}") && fields[1] == format!("re:{payload}-2");
        let setup_us = delivered
            .then(|| {
                let t1: u64 = fields[2].parse().ok()?;
                let t2: u64 = fields[3].parse().ok()?;
                let rtts = if f.proto == Proto::Tcp { 2 } else { 1 };
                Some(t1.saturating_sub(rtts * t2))
            })
            .flatten();
        // The daemons' decisions for this flow (either direction of negotiation).
        let proto = f.proto.as_str();
        let mut decisions = HashMap::new();
        for &n in &p.ges {
            let name = &topo.names[n];
            let mine = events.iter().filter(|e| e["ge"] == name.as_str() && e["proto"] == proto);
            let mut last = None;
            for e in mine {
                let (src, dst) = (e["src"].as_str().unwrap_or(""), e["dst"].as_str().unwrap_or(""));
                let forward =
                    src == p.src.to_string() && dst == p.dst.to_string() && e["dst_port"] == u64::from(f.port);
                let backward =
                    src == p.dst.to_string() && dst == p.src.to_string() && e["src_port"] == u64::from(f.port);
                if forward || backward {
                    last = Some((forward, e));
                }
            }
            if let Some((same_direction, e)) = last {
                let action = match e["action"].as_str() {
                    Some("encrypt") => FlowAction::Encrypt,
                    Some("decrypt") => FlowAction::Decrypt,
                    Some("relay") => FlowAction::Relay,
                    Some("plain") => FlowAction::Plain,
                    _ => FlowAction::Discard,
                };
                decisions.insert(
                    n,
                    ObservedDecision {
                        same_direction,
                        action,
                        group: e["group"].as_u64().map(|g| g as u16),
                        encrypted_by: e["encrypted_by"].as_str().map(str::to_owned),
                        decrypted_by: e["decrypted_by"].as_str().map(str::to_owned),
                    },
                );
            }
        }
        // Links on which the payload (or its echo) was captured in clear.
        let secret = hex(payload);
        let mut plaintext_links = Vec::new();
        let mut links: Vec<String> = s.subnets.iter().map(|x| x.name.clone()).collect();
        links.extend(s.nodes.iter().filter(|n| n.kind == NodeKind::Gea).map(|n| format!("{}:inside", n.name)));
        for link in links {
            let ports = ports_of_link(s, &link);
            let seen = captured
                .lines()
                .filter_map(|l| l.split_once(' '))
                .any(|(port, frame)| ports.iter().any(|p| p == port) && frame.contains(&secret));
            if seen {
                plaintext_links.push(link);
            }
        }
        let obs = Observation { delivered, decisions, discarded_by: Vec::new(), plaintext_links, setup_us };
        let (report, leaked) = flow_report(f, p, &topo, &obs);
        leaks += usize::from(leaked);
        flows.push(report);
    }
    if opts.keep {
        eprint!("{}", lab.how_to_enter());
    }
    drop(lab);
    let summary = Report::summarize(&flows, leaks);
    Ok(Report { scenario: s.name.clone(), engine: "lab".into(), flows, summary })
}

/// Running processes, stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Processes(Vec<(String, Child)>);

impl Processes {
    /// One named process.
    pub fn one(name: &str, child: Child) -> Self {
        Processes(vec![(name.to_owned(), child)])
    }

    /// Stops process `name` (SIGTERM: a daemon removes its rules) and waits for it.
    pub fn stop(mut self, name: &str) -> Result<Processes, LabError> {
        let at = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| LabError::Scenario(format!("no daemon {name}")))?;
        let (_, mut old) = self.0.remove(at);
        if let Ok(None) = old.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(old.id().to_string()).status();
        }
        reap(&mut old);
        Ok(self)
    }

    /// Stops the daemon of GE `name` and starts it again with the same configuration (its key
    /// file or GMS state directory kept); waits until its rules are in place.
    pub fn restart(self, lab: &Lab, name: &str, opts: &RunOptions) -> Result<Processes, LabError> {
        let mut this = self.stop(name)?;
        let hooks = std::fs::read_to_string(opts.work_dir.join(format!("{name}.toml")))
            .map_err(|e| LabError::Environment(e.to_string()))?
            .contains("hooks = \"host\"");
        let child = spawn_daemon(lab, name, opts, false)?;
        this.0.push((name.to_owned(), child));
        wait_for_rules(lab, name, if hooks { "OUTPUT" } else { "FORWARD" }, opts)?;
        Ok(this)
    }
}

/// Starts `gscipd` for GE `name` with its configuration `WORK/NAME.toml`, logging to
/// `WORK/NAME.log` (truncated if `fresh_log`, else appended).
fn spawn_daemon(lab: &Lab, name: &str, opts: &RunOptions, fresh_log: bool) -> Result<Child, LabError> {
    let io = |e: std::io::Error| LabError::Environment(e.to_string());
    let path = opts.work_dir.join(format!("{name}.log"));
    let log = if fresh_log {
        std::fs::File::create(&path)
    } else {
        std::fs::OpenOptions::new().create(true).append(true).open(&path)
    }
    .map_err(io)?;
    let ns = lab.namespace(name).ok_or_else(|| LabError::Scenario(format!("no namespace for {name}")))?;
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&opts.gscipd)
        .arg("--config")
        .arg(opts.work_dir.join(format!("{name}.toml")))
        .args(&opts.daemon_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(io)?)
        .stderr(log)
        .spawn()
        .map_err(io)
}

fn wait_for_rules(lab: &Lab, name: &str, hook: &str, opts: &RunOptions) -> Result<(), LabError> {
    let t0 = Instant::now();
    while lab.exec(name, "iptables", &["-C", hook, "-j", "GSCIP"]).is_err() {
        if t0.elapsed() > Duration::from_secs(15) {
            let log = std::fs::read_to_string(opts.work_dir.join(format!("{name}.log"))).unwrap_or_default();
            return Err(LabError::Environment(format!("gscipd on {name} did not start: {log}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Starts `gscipd` in every GE's namespace, enrolling with the real GMS (`gms`) or with the
/// built-in stand-in (key files); waits until each has its rules in place.
pub fn start_daemons(
    s: &Scenario,
    topo: &Topology,
    lab: &Lab,
    opts: &RunOptions,
    gms: Option<&LabGms>,
) -> Result<Processes, LabError> {
    let io = |e: std::io::Error| LabError::Environment(e.to_string());
    let groups: Vec<u16> = s.groups.iter().map(|g| g.id).collect();
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut builtin = BuiltinGms::new(s.sim.seed, &groups, epoch).map_err(|e| LabError::Scenario(e.to_string()))?;
    let mut daemons = Processes(Vec::new());
    for (idx, n) in s.nodes.iter().enumerate().filter(|(_, n)| n.kind.is_ge()) {
        let (kind, hooks) = match n.kind {
            NodeKind::Ges => (gscip_core::GeKind::Ges, "host"),
            NodeKind::Gea => (gscip_core::GeKind::Gea, "bridge"),
            _ => (gscip_core::GeKind::Gen, "router"),
        };
        let mode = if n.mode == Some(ModeDef::Open) { gscip_core::Mode::Open } else { gscip_core::Mode::Closed };
        let bridges = if n.kind == NodeKind::Gea {
            let names: Vec<String> = (0..crate::gea_subnets(s, n).len()).map(|k| format!("\"br{k}\"")).collect();
            format!("bridges = [{}]\n", names.join(", "))
        } else {
            String::new()
        };
        let keys = match gms {
            Some(real) => real.ge_settings(&n.name, &opts.work_dir)?,
            None => {
                let e =
                    builtin.enroll(&n.name, kind, mode, &n.groups).map_err(|e| LabError::Scenario(e.to_string()))?;
                let (seed, cert, trust, keys) = e.parts();
                let kf = opts.work_dir.join(format!("{}.keys", n.name));
                KeyFile::write(&kf, seed, cert, &trust, keys).map_err(io)?;
                format!("key_file = \"{}\"\n", kf.display())
            }
        };
        let quote = |v: Vec<String>| v.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        let events = opts.work_dir.join(format!("{}.events", n.name));
        let _ = std::fs::remove_file(&events);
        // The [gms] table goes last: TOML puts every key after a table header into the table.
        let cfg = format!(
            "hooks = \"{hooks}\"\nlocal_addrs = [{}]\nprotected = [{}]\nevents_file = \"{}\"\ncontrol_socket = \"{}\"\n{bridges}{}\n{keys}",
            quote(n.interfaces.iter().map(|i| i.address.to_string()).collect()),
            quote(topo.protected(idx).iter().map(|p| p.to_string()).collect()),
            events.display(),
            opts.work_dir.join(format!("{}.sock", n.name)).display(),
            opts.extra_config
        );
        let cf = opts.work_dir.join(format!("{}.toml", n.name));
        std::fs::write(&cf, cfg).map_err(io)?;
        let child = spawn_daemon(lab, &n.name, opts, true)?;
        daemons.0.push((n.name.clone(), child));
        wait_for_rules(lab, &n.name, if hooks == "host" { "OUTPUT" } else { "FORWARD" }, opts)?;
    }
    Ok(daemons)
}

fn start_capture(prefix: &str, work: &Path) -> Result<(Processes, PathBuf), LabError> {
    let io = |e: std::io::Error| LabError::Environment(e.to_string());
    let sniff = work.join("sniff.py");
    std::fs::write(&sniff, SNIFF_PY).map_err(io)?;
    let cap = work.join("links.cap");
    let ready = PathBuf::from(format!("{}.ready", cap.display()));
    let _ = std::fs::remove_file(&ready);
    let child = Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-sw"), "python3"])
        .arg(&sniff)
        .arg(&cap)
        .stdin(Stdio::null())
        .spawn()
        .map_err(io)?;
    let procs = Processes::one("capture", child);
    let t0 = Instant::now();
    while !ready.exists() {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(LabError::Environment("the capture did not start".into()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((procs, cap))
}

#[allow(clippy::too_many_arguments)]
fn exchange(
    lab: &Lab,
    app: &Path,
    from: &str,
    to: &str,
    addr: &str,
    proto: Proto,
    port: u16,
    payload: &str,
) -> Result<String, LabError> {
    let app = app.to_string_lossy().into_owned();
    let port = port.to_string();
    let ns = lab.namespace(to).ok_or_else(|| LabError::Scenario(format!("no node {to}")))?;
    let mut server = Command::new("ip")
        .args(["netns", "exec", ns, "python3", &app, "server", proto.as_str(), addr, &port, "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| LabError::Environment(e.to_string()))?;
    // Wait for "ready".
    if let Some(out) = server.stdout.as_mut() {
        use std::io::Read;
        let mut b = [0u8; 6];
        let _ = out.read(&mut b);
    }
    let out = lab.exec(from, "python3", &[&app, "client", proto.as_str(), addr, &port, payload]);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    Ok(out.unwrap_or_else(|e| format!("ERROR {e}")).trim().to_owned())
}

fn read_events(s: &Scenario, work: &Path) -> Vec<serde_json::Value> {
    s.nodes
        .iter()
        .filter(|n| n.kind.is_ge())
        .filter_map(|n| std::fs::read_to_string(work.join(format!("{}.events", n.name))).ok())
        .flat_map(|text| text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect::<Vec<_>>())
        .collect()
}

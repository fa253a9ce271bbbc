//! gscipd on real Linux hosts: network namespaces, NFQUEUE, real sockets, a packet capture.
//! Root only; these tests fail, never skip, when they cannot run.

use gscip_lab::Lab;
use gscip_sim::gms::BuiltinGms;
use gscip_sim::Scenario;
use gscipd::keyfile::KeyFile;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO: &str = r#"
name = "lan"
[[group]]
id = 1
[[subnet]]
name = "lan"
prefix = "10.9.0.0/24"
[[node]]
name = "a"
kind = "ges"
mode = "open"
groups = [1]
interfaces = [{ subnet = "lan", address = "10.9.0.1" }]
[[node]]
name = "b"
kind = "ges"
mode = "closed"
groups = [1]
interfaces = [{ subnet = "lan", address = "10.9.0.2" }]
[[node]]
name = "t"
kind = "term"
interfaces = [{ subnet = "lan", address = "10.9.0.3" }]
"#;

/// Python helpers: a one-shot echo server and a client, for TCP and UDP.
const APP: &str = r#"
import socket, sys
role, proto, host, port, payload = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5].encode()
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.settimeout(4)
if role == "server":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    if proto == "tcp":
        s.listen(); print("ready", flush=True); c, _ = s.accept(); c.settimeout(4); d = c.recv(256); c.sendall(b"re:" + d)
    else:
        print("ready", flush=True); d, peer = s.recvfrom(256); s.sendto(b"re:" + d, peer)
else:
    try:
        if proto == "tcp":
            s.connect((host, port)); s.sendall(payload); print(s.recv(256).decode())
        else:
            s.sendto(payload, (host, port)); print(s.recvfrom(256)[0].decode())
    except OSError as e:
        print("ERROR", type(e).__name__, e)
"#;

/// The running daemons, by GE name.
struct Daemons(Vec<(String, Child)>);
impl Daemons {
    fn child(&mut self, name: &str) -> &mut Child {
        &mut self.0.iter_mut().find(|(n, _)| n == name).expect("a daemon of that name").1
    }
}
impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, c) in &mut self.0 {
            // Only a child not yet reaped: a reaped one's PID may belong to another test now.
            if let Ok(None) = c.try_wait() {
                let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            }
        }
        for (_, c) in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Starts gscipd for `name` with its configuration in `work` (appending to its log).
fn spawn_daemon(lab: &Lab, name: &str, work: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(work.join(format!("{name}.log"))).unwrap();
    Command::new("ip")
        .args(["netns", "exec", lab.namespace(name).unwrap(), env!("CARGO_BIN_EXE_gscipd"), "--config"])
        .arg(work.join(format!("{name}.toml")))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("gscipd")
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gscipd-lab-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Builds the lab, enrolls every GE with the built-in GMS, writes key files and configs, and
/// starts gscipd in each GE namespace.
fn start(s: &Scenario, prefix: &str, work: &Path) -> (Lab, Daemons) {
    let _ = gscip_lab::clean(prefix);
    let lab = Lab::build(s, prefix).unwrap_or_else(|e| panic!("the lab must run here (root, iproute2): {e}"));
    let groups: Vec<u16> = s.groups.iter().map(|g| g.id).collect();
    let epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut gms = BuiltinGms::new(7, &groups, epoch).unwrap();
    let topo = gscip_sim::topology::Topology::new(s);
    let mut daemons = Vec::new();
    for n in s.nodes.iter().filter(|n| n.kind.is_ge()) {
        let kind = match n.kind {
            gscip_sim::scenario::NodeKind::Ges => gscip_core::GeKind::Ges,
            gscip_sim::scenario::NodeKind::Gen => gscip_core::GeKind::Gen,
            _ => gscip_core::GeKind::Gea,
        };
        let mode = if n.mode == Some(gscip_sim::scenario::ModeDef::Open) {
            gscip_core::Mode::Open
        } else {
            gscip_core::Mode::Closed
        };
        let e = gms.enroll(&n.name, kind, mode, &n.groups).unwrap();
        let (seed, cert, trust, keys) = e.parts();
        let kf = work.join(format!("{}.keys", n.name));
        KeyFile::write(&kf, seed, cert, &trust, keys).unwrap();
        let idx = s.nodes.iter().position(|x| x.name == n.name).unwrap();
        let quote = |v: Vec<String>| v.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        let addrs = quote(n.interfaces.iter().map(|i| i.address.to_string()).collect());
        let protected = quote(topo.protected(idx).iter().map(|p| p.to_string()).collect());
        let hooks = match n.kind {
            gscip_sim::scenario::NodeKind::Ges => "host",
            gscip_sim::scenario::NodeKind::Gea => "bridge",
            _ => "router",
        };
        let cfg = format!(
            "key_file = \"{}\"\nhooks = \"{hooks}\"\nlocal_addrs = [{addrs}]\nprotected = [{protected}]\ncontrol_socket = \"{}\"\nevents_file = \"{}\"\n",
            kf.display(),
            work.join(format!("{}.sock", n.name)).display(),
            work.join(format!("{}.events", n.name)).display()
        );
        let cf = work.join(format!("{}.toml", n.name));
        std::fs::write(&cf, cfg).unwrap();
        let child = spawn_daemon(&lab, &n.name, work);
        daemons.push((n.name.clone(), child));
        // Wait until its rules are in place.
        let t0 = Instant::now();
        let hook = if hooks == "host" { "OUTPUT" } else { "FORWARD" };
        while lab.exec(&n.name, "iptables", &["-C", hook, "-j", "GSCIP"]).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "gscipd on {} did not start: {}",
                n.name,
                std::fs::read_to_string(work.join(format!("{}.log", n.name))).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    (lab, Daemons(daemons))
}

/// One application exchange: `from` sends `payload` to `to` at `addr:port`, which echoes it.
struct Exchange<'a> {
    from: &'a str,
    to: &'a str,
    addr: &'a str,
    proto: &'a str,
    port: u16,
    payload: &'a str,
}

fn exchange(lab: &Lab, work: &Path, x: Exchange<'_>) -> String {
    let Exchange { from, to, addr: to_addr, proto, port, payload } = x;
    let app = work.join("app.py");
    std::fs::write(&app, APP).unwrap();
    let app = app.to_str().unwrap().to_owned();
    let port_s = port.to_string();
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace(to).unwrap(), "python3", &app, "server", proto, to_addr, &port_s, "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until it listens.
    let mut ready = [0u8; 6];
    let _ = std::io::Read::read(server.stdout.as_mut().unwrap(), &mut ready);
    let out = lab
        .exec(from, "python3", &[&app, "client", proto, to_addr, &port_s, payload])
        .unwrap_or_else(|e| e.to_string());
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    out.trim().to_owned()
}

/// Starts the capture in the switch namespace; returns the process and the file.
fn capture(prefix: &str, work: &Path) -> (Child, PathBuf) {
    let sniff = work.join("sniff.py");
    std::fs::write(&sniff, gscip_lab::run::SNIFF_PY).unwrap();
    let cap = work.join("links.cap");
    let child = Command::new("ip")
        .args(["netns", "exec", &format!("{prefix}-sw"), "python3", sniff.to_str().unwrap(), cap.to_str().unwrap()])
        .spawn()
        .unwrap();
    let ready = PathBuf::from(format!("{}.ready", cap.display()));
    let t0 = Instant::now();
    while !ready.exists() && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, cap)
}

/// The capture's frames on the switch ports of a link: a subnet, or `GEA:inside`.
fn frames_on(capture: &str, s: &Scenario, link: &str) -> Vec<String> {
    let ports = gscip_lab::run::ports_of_link(s, link);
    capture
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(port, _)| ports.iter().any(|p| p == port))
        .map(|(_, hex)| hex.to_owned())
        .collect()
}

/// Frames captured on one switch port.
fn frames_on_port(capture: &str, port: &str) -> Vec<String> {
    capture.lines().filter_map(|l| l.split_once(' ')).filter(|(p, _)| *p == port).map(|(_, h)| h.to_owned()).collect()
}

/// How many TCP SYNs (without ACK) to `dst_port` the frames hold (IPv4 over Ethernet).
fn syns_to(frames: &[String], dst_port: u16) -> usize {
    frames
        .iter()
        .filter_map(|h| {
            let b: Vec<u8> =
                (0..h.len() / 2).filter_map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).ok()).collect();
            let ip = b.get(14..)?;
            if b.get(12..14)? != [0x08, 0x00] || *ip.get(9)? != 6 {
                return None;
            }
            let tcp = ip.get(usize::from(ip[0] & 0x0f) * 4..)?;
            let port = u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]);
            let flags = *tcp.get(13)?;
            (port == dst_port && flags & 0x12 == 0x02).then_some(())
        })
        .count()
}

fn seen(frames: &[String], text: &str) -> bool {
    let h = hexs(text);
    frames.iter().any(|f| f.contains(&h))
}

fn hexs(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn ges_pairs_protect_their_flows_and_a_closed_ges_refuses_plain_terminals() {
    let s = Scenario::parse(SCENARIO, "lan.toml").unwrap();
    let work = dir("pair");
    let (lab, daemons) = start(&s, "gstd1", &work);
    // Capture everything on the LAN, in the switch namespace.
    let (mut sniffer, cap) = capture("gstd1", &work);

    let udp_secret = "udp-secret-7f3a91c2";
    let tcp_secret = "tcp-secret-4be0d177";
    let plain = "plain-visible-91aa";
    let r_udp = exchange(
        &lab,
        &work,
        Exchange { from: "a", to: "b", addr: "10.9.0.2", proto: "udp", port: 5353, payload: udp_secret },
    );
    let r_tcp = exchange(
        &lab,
        &work,
        Exchange { from: "a", to: "b", addr: "10.9.0.2", proto: "tcp", port: 8080, payload: tcp_secret },
    );
    let r_term = exchange(
        &lab,
        &work,
        Exchange { from: "t", to: "b", addr: "10.9.0.2", proto: "udp", port: 5354, payload: "from-the-terminal" },
    );
    let r_plain = exchange(
        &lab,
        &work,
        Exchange { from: "a", to: "t", addr: "10.9.0.3", proto: "udp", port: 5355, payload: plain },
    );
    std::thread::sleep(Duration::from_millis(200));
    let _ = sniffer.kill();
    let _ = sniffer.wait();
    drop(daemons);
    let raw_capture = std::fs::read_to_string(&cap).unwrap_or_default();
    let capture = frames_on(&raw_capture, &s, "lan").join("\n");
    // The SYN held during the negotiation left a once: no TCP retransmission.
    assert_eq!(syns_to(&frames_on_port(&raw_capture, "v0-0"), 8080), 1, "the first packet was retransmitted");
    let logs: String =
        ["a", "b"].iter().map(|n| std::fs::read_to_string(work.join(format!("{n}.log"))).unwrap_or_default()).collect();
    eprintln!("{logs}\ncapture: {} frames", capture.lines().count());

    assert_eq!(r_udp, format!("re:{udp_secret}"), "UDP a->b\n{logs}");
    assert_eq!(r_tcp, format!("re:{tcp_secret}"), "TCP a->b\n{logs}");
    assert!(r_term.starts_with("ERROR"), "the closed GES b must refuse a plain terminal: {r_term}\n{logs}");
    assert_eq!(r_plain, format!("re:{plain}"), "a (open) talks in plaintext to a terminal\n{logs}");
    assert!(!capture.is_empty(), "the capture saw nothing");
    for secret in [udp_secret, tcp_secret, "re:udp-secret", "re:tcp-secret"] {
        assert!(!capture.contains(&hexs(secret)), "{secret} crossed the LAN in clear");
    }
    assert!(capture.contains(&hexs(plain)), "the plaintext flow was not captured: the capture is blind");
    assert!(!capture.contains(&hexs("re:from-the-terminal")), "b answered the terminal");
    // A clean stop removed the rules.
    assert!(lab.exec("a", "iptables", &["-C", "OUTPUT", "-j", "GSCIP"]).is_err());
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

const ROUTED: &str = r#"
name = "routed"
[[group]]
id = 1
[[group]]
id = 3
[[subnet]]
name = "lan"
prefix = "10.1.0.0/24"
[[subnet]]
name = "net1"
prefix = "10.0.1.0/24"
[[node]]
name = "gen"
kind = "gen"
mode = "closed"
groups = [1]
interfaces = [{ subnet = "net1", address = "10.0.1.1" }, { subnet = "lan", address = "10.1.0.1", inside = true }]
[[node]]
name = "term"
kind = "term"
interfaces = [{ subnet = "lan", address = "10.1.0.10" }]
gateway = "10.1.0.1"
[[node]]
name = "ges1"
kind = "ges"
mode = "open"
groups = [1]
interfaces = [{ subnet = "lan", address = "10.1.0.11" }]
gateway = "10.1.0.1"
[[node]]
name = "ges4"
kind = "ges"
mode = "open"
groups = [1]
interfaces = [{ subnet = "net1", address = "10.0.1.4" }]
routes = [{ to = "10.1.0.0/24", via = "10.0.1.1" }]
[[node]]
name = "ges3"
kind = "ges"
mode = "open"
groups = [3]
interfaces = [{ subnet = "net1", address = "10.0.1.3" }]
routes = [{ to = "10.1.0.0/24", via = "10.0.1.1" }]
"#;

#[test]
fn a_closed_gen_protects_its_terminals_and_keeps_its_boundary() {
    let s = Scenario::parse(ROUTED, "routed.toml").unwrap();
    let work = dir("gen");
    let (lab, daemons) = start(&s, "gstd2", &work);
    let (mut sniffer, cap) = capture("gstd2", &work);
    let x = |from, to, addr, proto, port, payload| Exchange { from, to, addr, proto, port, payload };
    // term -> ges4: the GEN encrypts for its terminal (group 1).
    let r1 = exchange(&lab, &work, x("term", "ges4", "10.0.1.4", "tcp", 8080, "term-to-ges4-5d1e"));
    // ges1 -> ges4: ges1 encrypts itself, the GEN relays.
    let r2 = exchange(&lab, &work, x("ges1", "ges4", "10.0.1.4", "udp", 5353, "ges1-to-ges4-a0c3"));
    // ges1 -> ges3: no common group, the GEN is closed: discarded (at ges1, at once).
    let r3 = exchange(&lab, &work, x("ges1", "ges3", "10.0.1.3", "udp", 5354, "ges1-to-ges3-77b2"));
    // term -> ges3: the GEN and ges3 share no group: discarded at the GEN.
    let r4 = exchange(&lab, &work, x("term", "ges3", "10.0.1.3", "tcp", 8081, "term-to-ges3-e9f0"));
    // The same over TCP from the GE host ges1: the application is told at once.
    let t0 = Instant::now();
    let r5 = exchange(&lab, &work, x("ges1", "ges3", "10.0.1.3", "tcp", 8082, "ges1-to-ges3-tcp-51c8"));
    let r5_took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let _ = sniffer.kill();
    let _ = sniffer.wait();
    drop(daemons);
    let capture = std::fs::read_to_string(&cap).unwrap_or_default();
    let logs: String = ["gen", "ges1", "ges4", "ges3"]
        .iter()
        .map(|n| std::fs::read_to_string(work.join(format!("{n}.log"))).unwrap_or_default())
        .collect();
    eprintln!("{logs}");
    let lan = frames_on(&capture, &s, "lan");
    let net1 = frames_on(&capture, &s, "net1");
    assert!(!lan.is_empty() && !net1.is_empty(), "the capture is blind");

    assert_eq!(r1, "re:term-to-ges4-5d1e", "term -> ges4\n{logs}");
    assert!(seen(&lan, "term-to-ges4-5d1e"), "inside the GEN the terminal talks in clear");
    assert!(!seen(&net1, "term-to-ges4-5d1e") && !seen(&net1, "re:term-to-ges4"), "in clear beyond the GEN");

    assert_eq!(r2, "re:ges1-to-ges4-a0c3", "ges1 -> ges4\n{logs}");
    assert!(!seen(&lan, "ges1-to-ges4-a0c3") && !seen(&net1, "ges1-to-ges4-a0c3"), "ges1's flow in clear");

    assert!(r3.starts_with("ERROR"), "ges1 -> ges3 must fail: {r3}");
    assert!(!seen(&net1, "ges1-to-ges3-77b2"), "a discarded flow crossed the GEN");
    assert!(r4.starts_with("ERROR"), "term -> ges3 must fail: {r4}");
    assert!(r5.starts_with("ERROR") && !r5.contains("Timeout"), "ges1 -> ges3 over TCP must fail at once: {r5}");
    assert!(r5_took < Duration::from_secs(2), "the error took {r5_took:?}");
    assert!(logs.contains("action=\"discard\""), "discarded flows are logged:\n{logs}");
    assert!(!seen(&net1, "term-to-ges3-e9f0"), "a discarded flow crossed the GEN");
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

const SERVER: &str = r#"
name = "server"
[[group]]
id = 2
[[group]]
id = 3
[[subnet]]
name = "net1"
prefix = "10.0.1.0/24"
[[node]]
name = "ges3"
kind = "ges"
mode = "open"
groups = [3]
interfaces = [{ subnet = "net1", address = "10.0.1.3" }]
[[node]]
name = "term"
kind = "term"
interfaces = [{ subnet = "net1", address = "10.0.1.9" }]
[[node]]
name = "server"
kind = "term"
interfaces = [{ subnet = "net1", address = "10.0.1.100" }]
[[node]]
name = "gea"
kind = "gea"
mode = "closed"
groups = [2, 3]
protects = ["server"]
"#;

#[test]
fn a_gea_protects_its_server_transparently() {
    let s = Scenario::parse(SERVER, "server.toml").unwrap();
    let work = dir("gea");
    let (lab, daemons) = start(&s, "gstd3", &work);
    let (mut sniffer, cap) = capture("gstd3", &work);
    let x = |from, to, addr, proto, port, payload| Exchange { from, to, addr, proto, port, payload };
    let r1 = exchange(&lab, &work, x("ges3", "server", "10.0.1.100", "tcp", 443, "ges3-to-server-c4d2"));
    let r2 = exchange(&lab, &work, x("ges3", "server", "10.0.1.100", "udp", 53, "ges3-to-server-udp-19e7"));
    let r3 = exchange(&lab, &work, x("term", "server", "10.0.1.100", "udp", 54, "term-to-server-8b31"));
    std::thread::sleep(Duration::from_millis(200));
    let _ = sniffer.kill();
    let _ = sniffer.wait();
    drop(daemons);
    let capture = std::fs::read_to_string(&cap).unwrap_or_default();
    let logs: String = ["gea", "ges3"]
        .iter()
        .map(|n| std::fs::read_to_string(work.join(format!("{n}.log"))).unwrap_or_default())
        .collect();
    eprintln!("{logs}");
    let net1 = frames_on(&capture, &s, "net1");
    let inside = frames_on(&capture, &s, "gea:inside");
    assert!(!net1.is_empty() && !inside.is_empty(), "the capture is blind");
    assert_eq!(r1, "re:ges3-to-server-c4d2", "TCP ges3 -> server\n{logs}");
    assert_eq!(r2, "re:ges3-to-server-udp-19e7", "UDP ges3 -> server\n{logs}");
    for secret in ["ges3-to-server-c4d2", "ges3-to-server-udp-19e7"] {
        assert!(!seen(&net1, secret), "{secret} in clear on net1");
        assert!(seen(&inside, secret), "{secret} should reach the server in clear on its own link");
    }
    assert!(r3.starts_with("ERROR"), "the closed GEA must refuse a plain terminal: {r3}");
    assert!(!seen(&inside, "term-to-server-8b31"), "the terminal's packet crossed the GEA");
    // The server was not touched: it has only its own address.
    let addrs = lab.exec("server", "ip", &["-o", "-4", "addr", "show", "scope", "global"]).unwrap();
    assert_eq!(addrs.lines().count(), 1, "{addrs}");
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

/// A client that keeps one TCP connection: an exchange, then another once `trigger` exists.
const LONG_CLIENT: &str = r#"
import socket, sys, time, os
host, port, trigger = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=5)
s.sendall(b"one"); print(s.recv(64).decode(), flush=True)
while not os.path.exists(trigger): time.sleep(0.01)
t0 = time.time()
s.settimeout(15)
try:
    s.sendall(b"two"); r = s.recv(64).decode()
    print(r, int((time.time() - t0) * 1000), flush=True)
except OSError as e:
    print("ERROR", type(e).__name__, flush=True)
"#;

const LONG_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(); s.settimeout(30)
c, _ = s.accept(); c.settimeout(30)
while True:
    d = c.recv(64)
    if not d: break
    c.sendall(b"re:" + d)
"#;

/// A closed GE whose daemon dies keeps its boundary closed; restarted, it recovers within
/// about a second through a fresh negotiation, and the application's TCP connection survives.
#[test]
fn a_crashed_closed_ge_stays_closed_and_recovers_without_resetting_connections() {
    let s = Scenario::parse(SCENARIO, "lan.toml").unwrap();
    let work = dir("crash");
    let (lab, mut daemons) = start(&s, "gstd4", &work);
    std::fs::write(work.join("client.py"), LONG_CLIENT).unwrap();
    std::fs::write(work.join("server.py"), LONG_SERVER).unwrap();
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace("b").unwrap(), "python3"])
        .arg(work.join("server.py"))
        .args(["10.9.0.2", "9000"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let trigger = work.join("go");
    let mut client = Command::new("ip")
        .args(["netns", "exec", lab.namespace("a").unwrap(), "python3"])
        .arg(work.join("client.py"))
        .args(["10.9.0.2", "9000"])
        .arg(&trigger)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The first exchange goes through.
    let mut out = client.stdout.take().unwrap();
    let mut first = [0u8; 7];
    std::io::Read::read_exact(&mut out, &mut first).unwrap();
    assert_eq!(&first, b"re:one\n");

    // Crash b's daemon: its rules stay, and with nobody on the queue the kernel drops.
    let b = daemons.child("b");
    let _ = Command::new("kill").arg("-KILL").arg(b.id().to_string()).status();
    let _ = b.wait();
    assert!(lab.exec("b", "iptables", &["-C", "INPUT", "-j", "GSCIP"]).is_ok(), "the rules went with the daemon");
    let x = |from, to, addr, proto, port, payload| Exchange { from, to, addr, proto, port, payload };
    let r = exchange(&lab, &work, x("t", "b", "10.9.0.2", "udp", 9001, "while-b-is-down"));
    assert!(r.starts_with("ERROR"), "a closed GE without its daemon let a terminal in: {r}");
    let r = exchange(&lab, &work, x("a", "b", "10.9.0.2", "udp", 9002, "member-while-down"));
    assert!(r.starts_with("ERROR"), "nothing passes while the daemon is down, members included: {r}");

    // Restart it, then resume the connection.
    *daemons.child("b") = spawn_daemon(&lab, "b", &work);
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&trigger, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let _ = client.wait();
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    let logs = std::fs::read_to_string(work.join("b.log")).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    assert_eq!(fields.first().copied(), Some("re:two"), "the connection did not survive: {rest}\n{logs}");
    let ms: u64 = fields[1].parse().unwrap();
    assert!(ms < 3_000, "recovery took {ms} ms");
    eprintln!("recovered in {ms} ms after the restart");
    drop(daemons);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

/// iperf3 runs through a protected path, one TCP stream and UDP (figures belong to `make
/// bench`; this shows it works and that a bulk transfer is not seen in clear).
#[test]
fn iperf3_runs_through_a_protected_path() {
    let s = Scenario::parse(SCENARIO, "lan.toml").unwrap();
    let work = dir("iperf");
    let (lab, daemons) = start(&s, "gstd5", &work);
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace("b").unwrap(), "iperf3", "-s", "-B", "10.9.0.2", "-p", "5201"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3 (apt-get install iperf3)");
    std::thread::sleep(Duration::from_millis(300));
    let tcp = lab.exec("a", "iperf3", &["-c", "10.9.0.2", "-p", "5201", "-t", "2", "-J"]).expect("iperf3 TCP");
    let udp = lab
        .exec("a", "iperf3", &["-c", "10.9.0.2", "-p", "5201", "-t", "2", "-u", "-b", "20M", "-l", "1200", "-J"])
        .expect("iperf3 UDP");
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    drop(daemons);
    let json =
        |t: &str| -> serde_json::Value { serde_json::from_str(&t[t.find('{').unwrap_or(0)..]).expect("iperf3 JSON") };
    let (tcp, udp) = (json(&tcp), json(&udp));
    let tcp_bytes = tcp["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    assert!(tcp_bytes > 1_000_000, "TCP moved {tcp_bytes} bytes: {tcp}");
    let udp_packets = udp["end"]["sum"]["packets"].as_u64().unwrap_or(0);
    let lost = udp["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0);
    assert!(udp_packets > 1000 && lost < 50.0, "UDP: {udp_packets} packets, {lost}% lost: {udp}");
    let events = std::fs::read_to_string(work.join("b.events")).unwrap_or_default();
    let protected = events.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).any(|e| {
        e["dst_port"] == 5201 && e["action"] == "decrypt" && e["encrypted_by"] == "a" && e["decrypted_by"] == "b"
    });
    assert!(protected, "the transfer was not protected:\n{events}");
    eprintln!(
        "iperf3 through the protected path: TCP {:.0} Mbit/s, UDP {} packets, {:.1}% lost",
        tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e6,
        udp_packets,
        lost
    );
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

/// Sends raw IP packets (hex, one per argument) as they are.
const INJECT: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for h in sys.argv[1:]:
    p = bytes.fromhex(h)
    s.sendto(p, (socket.inet_ntoa(p[16:20]), 0))
"#;

fn status(work: &Path, name: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(work.join(format!("{name}.sock"))).expect("control socket");
    c.write_all(b"status").unwrap();
    c.shutdown(std::net::Shutdown::Write).unwrap();
    let mut s = String::new();
    c.read_to_string(&mut s).unwrap();
    serde_json::from_str(&s).expect("status JSON")
}

#[test]
fn tampered_and_replayed_packets_from_the_wire_are_dropped_and_counted() {
    let s = Scenario::parse(SCENARIO, "lan.toml").unwrap();
    let work = dir("inject");
    let (lab, daemons) = start(&s, "gstd6", &work);
    let (mut sniffer, cap) = capture("gstd6", &work);
    // A long-lived UDP server on b that answers every datagram.
    let server_py = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.9.0.2',5400))\n\
                     while True:\n  d,p=s.recvfrom(512)\n  s.sendto(b're:'+d,p)\n";
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace("b").unwrap(), "python3", "-c", server_py])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let client_py = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\n\
                     s.sendto(b'original-payload-3c9a',('10.9.0.2',5400))\nprint(s.recvfrom(512)[0].decode())\n";
    let r = lab.exec("a", "python3", &["-c", client_py]).unwrap();
    assert_eq!(r.trim(), "re:original-payload-3c9a");
    std::thread::sleep(Duration::from_millis(200));
    let before = status(&work, "b");
    // The sealed datagram a sent, from the capture on a's port.
    let raw = std::fs::read_to_string(&cap).unwrap_or_default();
    let sealed = frames_on_port(&raw, "v0-0")
        .into_iter()
        .map(|h| h[28..].to_owned()) // strip the Ethernet header (14 bytes)
        .find(|ip| ip.len() > 56 && &ip[18..20] == "11" && ip[44..48] == format!("{:04x}", 5400))
        .expect("the sealed datagram in the capture");
    // Tampered: a counter the replay window has not seen (the last byte of the trailer's
    // 64-bit counter, which starts one byte into the 25-byte trailer), so only the AEAD can
    // catch it.
    let t = sealed.len() - 50;
    let tampered = format!("{}ff{}", &sealed[..t + 16], &sealed[t + 18..]);
    std::fs::write(work.join("inject.py"), INJECT).unwrap();
    lab.exec("t", "python3", &[work.join("inject.py").to_str().unwrap(), &sealed, &tampered]).expect("inject");
    std::thread::sleep(Duration::from_millis(300));
    let after = status(&work, "b");
    let _ = server.kill();
    let _ = server.wait();
    let _ = sniffer.kill();
    let _ = sniffer.wait();
    drop(daemons);
    let c = |v: &serde_json::Value, k: &str| v["counters"][k].as_u64().unwrap_or(0);
    assert_eq!(c(&after, "replays") - c(&before, "replays"), 1, "the replay was not counted: {after}");
    assert_eq!(c(&after, "auth_failures") - c(&before, "auth_failures"), 1, "the tampered copy: {after}");
    let entry =
        after["pit"].as_array().unwrap().iter().find(|e| e["cid"].as_str().unwrap_or("").contains(":5400")).unwrap();
    assert_eq!(entry["replays"], 1);
    assert_eq!(entry["auth_failures"], 1);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

/// A flow the GEN relays (ges1 protects it end to end) leaves userspace once its entry is
/// final: the kernel passes the rest by its conntrack mark.
#[test]
fn relayed_flows_take_the_kernel_fast_path() {
    let s = Scenario::parse(ROUTED, "routed.toml").unwrap();
    let work = dir("fast");
    let (lab, daemons) = start(&s, "gstd7", &work);
    let server_py = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('10.0.1.4',5360))\n\
                     print('ready',flush=True)\nwhile True:\n  d,p=s.recvfrom(512)\n  s.sendto(b're:'+d,p)\n";
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace("ges4").unwrap(), "python3", "-c", server_py])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    let _ = std::io::Read::read(server.stdout.as_mut().unwrap(), &mut ready);
    let client_py = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\nn=0\n\
                     for i in range(20):\n  s.sendto(b'burst-%d' % i,('10.0.1.4',5360))\n  \
                     n+=s.recvfrom(512)[0].startswith(b're:burst')\n  time.sleep(0.02)\nprint(n)\n";
    let got = lab.exec("ges1", "python3", &["-c", client_py]).unwrap();
    let gen = status(&work, "gen");
    // Bulk TCP through the relaying GEN: sealed segments are 25 bytes longer than their
    // sequence numbers say (the PCCOM trailer); the GEN's conntrack must still accept them.
    let mut iperf = Command::new("ip")
        .args(["netns", "exec", lab.namespace("ges4").unwrap(), "iperf3", "-s", "-B", "10.0.1.4", "-p", "5202"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3");
    std::thread::sleep(Duration::from_millis(300));
    let bulk =
        lab.exec("ges1", "iperf3", &["-c", "10.0.1.4", "-p", "5202", "-t", "2", "-J"]).expect("iperf3 through the GEN");
    let _ = Command::new("kill").arg(iperf.id().to_string()).status();
    let _ = iperf.wait();
    let liberal = lab.exec("gen", "sysctl", &["-n", "net.netfilter.nf_conntrack_tcp_be_liberal"]).unwrap_or_default();
    let after_bulk = status(&work, "gen");
    let _ = server.kill();
    let _ = server.wait();
    drop(daemons);
    assert_eq!(got.trim(), "20", "the burst did not get through");
    let entry = gen["pit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["cid"].as_str().unwrap_or("").contains("10.0.1.4:5360"))
        .expect("gen's entry for the flow");
    assert_eq!(entry["action"], "relay");
    let seen = entry["packets"].as_u64().unwrap();
    assert!(seen <= 4, "gen's daemon saw {seen} of the flow's 40 packets: no fast path");
    let bulk: serde_json::Value = serde_json::from_str(&bulk[bulk.find('{').unwrap_or(0)..]).expect("iperf3 JSON");
    let bytes = bulk["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
    let retrans = bulk["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    assert_eq!(liberal.trim(), "0", "conntrack must be strict here for the check to mean anything");
    assert!(bytes > 1_000_000, "bulk TCP through the relaying GEN moved {bytes} bytes: {bulk}");
    let gen_saw = after_bulk["counters"]["packets"].as_u64().unwrap_or(u64::MAX);
    assert!(gen_saw < 200, "gen's daemon saw {gen_saw} packets of a bulk relayed transfer: no fast path");
    eprintln!("bulk TCP relayed by gen (strict conntrack): {bytes} bytes, {retrans} retransmissions; gen's daemon saw {gen_saw} packets");
    eprintln!("gen's daemon saw {seen} of 40 packets; the kernel passed the rest");
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

/// An open GE configured to fail open lets traffic pass while its daemon is gone; a closed GE
/// (the default) does not (see the crash test).
#[test]
fn an_open_ge_configured_to_fail_open_passes_traffic_while_its_daemon_is_down() {
    let s = Scenario::parse(SCENARIO, "lan.toml").unwrap();
    let work = dir("failopen");
    let (lab, mut daemons) = start(&s, "gstd8", &work);
    // Restart a (open) with fail_open.
    let a = daemons.child("a");
    let _ = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status();
    let _ = a.wait();
    let cf = work.join("a.toml");
    let cfg = std::fs::read_to_string(&cf).unwrap() + "fail_open = true\n";
    std::fs::write(&cf, cfg).unwrap();
    *daemons.child("a") = spawn_daemon(&lab, "a", &work);
    let t0 = Instant::now();
    while lab.exec("a", "iptables", &["-C", "OUTPUT", "-j", "GSCIP"]).is_err() && t0.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let rules = lab.exec("a", "iptables", &["-S", "GSCIP"]).unwrap();
    assert!(rules.contains("--queue-bypass"), "{rules}");
    // Crash it: a's plaintext traffic to the terminal still flows.
    let a = daemons.child("a");
    let _ = Command::new("kill").arg("-KILL").arg(a.id().to_string()).status();
    let _ = a.wait();
    let x = |from, to, addr, proto, port, payload| Exchange { from, to, addr, proto, port, payload };
    let r = exchange(&lab, &work, x("a", "t", "10.9.0.3", "udp", 9100, "fail-open-9d2e"));
    assert_eq!(r, "re:fail-open-9d2e", "an open GE with fail_open must pass traffic without its daemon");
    drop(daemons);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

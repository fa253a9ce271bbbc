//! GSCIP under load on real Linux hosts, on the benchmark's path GES a — GEN r — GES b (all
//! closed, group 1):
//! - with segmentation offloads off on every lab link (how packets look on a wire after a real
//!   NIC's TSO: one MTU at most), bulk TCP both ways arrives intact (the GEs' units cut into
//!   segments and put together again), UDP datagrams up to the MTU and beyond (fragmented) echo
//!   intact, and nothing crosses any link in clear;
//! - with offloads on, the units cross the links whole, and nothing in clear;
//! - on a path that loses segments, flows whose units were cut switch to sealing segment by
//!   segment and still arrive intact;
//! - 10,000 new flows started at once through the GEN lose no held packet, and none crosses
//!   beyond the GEN in clear; the GEN and b meet on a path key during the burst;
//! - a host's traffic with itself (loopback, its own address) is no flow: its GES never sees it,
//!   and a local TCP connection's first SYN is not held (it used to cost a SYN retransmission);
//! - new flows after the first on a path are negotiated with path keys: no GE checks another's
//!   record or CDN by its signature again, and the flows still work.
//!
//! Nothing here asserts on time. Root only; fails, never skips, when the lab cannot run.

use gscip_lab::load::{path, PathEnd, ECHO_SERVER, FIRST_BYTE_CLIENT, PATH_B};
use gscip_lab::run::{start_daemons, Processes, RunOptions};
use gscip_lab::{workspace_binary, Lab};
use gscip_sim::topology::Topology;
use gscip_sim::Scenario;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GES a — GEN r — GES b, all closed in group 1; with `term`, a plain terminal as a.
fn path_scenario(term: bool) -> Scenario {
    path(if term { PathEnd::Term } else { PathEnd::ClosedGes }, true, PathEnd::ClosedGes)
}

/// Counts the frames on every port of the switch namespace, the largest, and per port those
/// that contain the marker, until the stop file appears; then writes them as JSON.
const SNIFF: &str = r#"
import socket, sys, os, json
marker, stop, out = sys.argv[1].encode(), sys.argv[2], sys.argv[3]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.settimeout(0.1)
frames = largest = 0
hits = {}
open(out + ".ready", "w").close()
while not os.path.exists(stop):
    try:
        data, addr = s.recvfrom(262144)
    except socket.timeout:
        continue
    frames += 1
    largest = max(largest, len(data))
    if marker in data:
        hits[addr[0]] = hits.get(addr[0], 0) + 1
json.dump({"frames": frames, "largest": largest, "hits": hits}, open(out + ".tmp", "w"))
os.rename(out + ".tmp", out)
"#;

/// TCP echoes to 127.0.0.1 and to the host's own address (argv[1]), a UDP echo on 127.0.0.1;
/// prints what came back and how many SYNs the host's TCP retransmitted meanwhile.
const LOCAL: &str = r#"
import socket, sys, threading
def syn_retrans():
    lines = [l.split() for l in open("/proc/net/netstat") if l.startswith("TcpExt:")]
    return int(lines[1][lines[0].index("TCPSynRetrans")])
def serve(s):
    c, _ = s.accept(); c.sendall(b"echo " + c.recv(64)); c.close()
before, got = syn_retrans(), []
for addr in ("127.0.0.1", sys.argv[1]):
    s = socket.socket(); s.bind((addr, 0)); s.listen(1)
    threading.Thread(target=serve, args=(s,), daemon=True).start()
    c = socket.create_connection(s.getsockname(), timeout=5); c.sendall(b"tcp"); got.append(c.recv(64).decode()); c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.settimeout(5); v.sendto(b"udp", u.getsockname())
got.append(u.recv(64).decode())
print("|".join(got), syn_retrans() - before)
"#;

/// What the sniffer saw.
struct Seen {
    frames: u64,
    largest: u64,
    /// Frames carrying the marker, per switch port.
    hits: std::collections::HashMap<String, u64>,
}

/// The data of a bulk transfer: blocks of 1 KiB, each the marker, a direction tag and the
/// block's number, then filler. Both ends generate it to check what they received.
const BULK: &str = r#"
import socket, sys, hashlib
MARKER = sys.argv[2].encode()
def blocks(tag, n):
    for i in range(n):
        b = MARKER + tag + i.to_bytes(4, "big")
        yield b + bytes((i + k) & 0xff for k in range(1024 - len(b)))
def expected(tag, n):
    h = hashlib.sha256()
    for b in blocks(tag, n):
        h.update(b)
    return h.hexdigest()
def receive(c):
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(1 << 16)
        if not d:
            return n, h.hexdigest()
        h.update(d); n += len(d)
N = int(sys.argv[4])
def send(c, tag):
    # 64 blocks (64 KiB) per write, as a bulk sender writes: the host's TCP hands its stack
    # packets of many segments (GSO), which the GEs seal as units.
    out = []
    for b in blocks(tag, N):
        out.append(b)
        if len(out) == 64:
            c.sendall(b"".join(out)); out = []
    c.sendall(b"".join(out))
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[3], 9100)); s.listen(1); print("ready", flush=True)
    c, _ = s.accept(); c.settimeout(120)
    n, digest = receive(c)
    send(c, b"<")
    c.shutdown(socket.SHUT_WR)
    print("server", "ok" if (n, digest) == (N * 1024, expected(b">", N)) else f"BAD {n}", flush=True)
else:
    c = socket.create_connection((sys.argv[3], 9100), timeout=10); c.settimeout(120)
    send(c, b">")
    c.shutdown(socket.SHUT_WR)
    n, digest = receive(c)
    print("client", "ok" if (n, digest) == (N * 1024, expected(b"<", N)) else f"BAD {n}", flush=True)
"#;

/// UDP echo: the client sends datagrams of the given sizes (marker, number, filler), each
/// until its echo comes back (3 tries); prints how many came back intact.
const UDP_ECHO: &str = r#"
import socket, sys
MARKER = sys.argv[2].encode()
if sys.argv[1] == "server":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[3], 9200)); print("ready", flush=True)
    while True:
        d, peer = s.recvfrom(65535); s.sendto(d, peer)
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
    sizes = [int(x) for x in sys.argv[4].split(",")]
    ok = 0
    for i, size in enumerate(sizes):
        d = (MARKER + i.to_bytes(4, "big") + bytes(range(256)) * 300)[:size]
        for _ in range(3):
            s.sendto(d, (sys.argv[3], 9200))
            try:
                if s.recv(65535) == d:
                    ok += 1; break
            except socket.timeout:
                pass
    print(ok, len(sizes), flush=True)
"#;

/// N TCP connections to HOST:PORT opened at once (one thread each), each sending one byte and
/// reading the answer; prints how many were answered.
const BURST_CLIENT: &str = r#"
import socket, sys, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = []
go = threading.Event()
def one():
    go.wait()
    try:
        s = socket.create_connection((host, port), timeout=5)
        s.sendall(b"x")
        if s.recv(16):
            ok.append(1)
        s.close()
    except OSError:
        pass
threads = [threading.Thread(target=one) for _ in range(n)]
for t in threads: t.start()
go.set()
for t in threads: t.join()
print(len(ok), flush=True)
"#;

struct Work(PathBuf);

impl Work {
    fn new(tag: &str) -> Work {
        let dir = std::env::temp_dir().join(format!("gscip-under-load-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in [
            ("sniff.py", SNIFF),
            ("bulk.py", BULK),
            ("udp.py", UDP_ECHO),
            ("local.py", LOCAL),
            ("echo.py", ECHO_SERVER),
            ("connect.py", FIRST_BYTE_CLIENT),
            ("burst.py", BURST_CLIENT),
        ] {
            std::fs::write(dir.join(name), text).unwrap();
        }
        Work(dir)
    }
    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A random marker for this run: whatever carries it on a link is plaintext.
fn marker() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    format!("GSCIP-MARK-{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())
}

/// A python3 program started in a node's namespace; waits for its "ready" line.
fn serve(lab: &Lab, node: &str, args: &[&str]) -> std::process::Child {
    let mut child = Command::new("ip")
        .args(["netns", "exec", lab.namespace(node).unwrap(), "python3"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    child.stdout.as_mut().unwrap().read_exact(&mut ready).unwrap();
    assert_eq!(&ready, b"ready\n");
    child
}

fn finish(mut child: std::process::Child) -> String {
    let mut out = String::new();
    child.stdout.as_mut().unwrap().read_to_string(&mut out).unwrap();
    let _ = child.wait();
    out
}

/// The sniffer in the switch namespace; `stop()` ends it and says what it saw.
struct Sniffer {
    stop: PathBuf,
    out: PathBuf,
    procs: Processes,
}

impl Sniffer {
    fn start(lab: &Lab, work: &Work, marker: &str) -> Sniffer {
        let (stop, out) = (work.0.join("sniff.stop"), work.0.join("sniff.out"));
        let child = Command::new("ip")
            .args(["netns", "exec", &format!("{}-sw", lab.prefix), "python3", &work.file("sniff.py"), marker])
            .arg(&stop)
            .arg(&out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let ready = PathBuf::from(format!("{}.ready", out.display()));
        let t0 = Instant::now();
        while !ready.exists() {
            assert!(t0.elapsed() < Duration::from_secs(10), "the sniffer did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Sniffer { stop, out, procs: Processes::one("sniffer", child) }
    }

    fn stop(self) -> Seen {
        std::fs::File::create(&self.stop).unwrap();
        let t0 = Instant::now();
        while !self.out.exists() && t0.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(self.procs);
        let text = std::fs::read_to_string(&self.out).expect("the sniffer's summary");
        let v: serde_json::Value = serde_json::from_str(&text).expect("the sniffer's JSON");
        Seen {
            frames: v["frames"].as_u64().unwrap(),
            largest: v["largest"].as_u64().unwrap(),
            hits: serde_json::from_value(v["hits"].clone()).unwrap(),
        }
    }
}

/// A GE's `gscip status` (its control socket).
fn status(work: &Path, ge: &str) -> serde_json::Value {
    let mut c = std::os::unix::net::UnixStream::connect(work.join(format!("{ge}.sock"))).expect("control socket");
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(b"status").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    serde_json::from_str(&text).expect("status JSON")
}

fn up(s: &Scenario, prefix: &str, work: &Work) -> (Lab, Processes) {
    up_with(s, prefix, work, "")
}

/// As [`up`], with `extra_config` appended to every daemon's configuration.
fn up_with(s: &Scenario, prefix: &str, work: &Work, extra_config: &str) -> (Lab, Processes) {
    let _ = gscip_lab::clean(prefix);
    let lab = Lab::build(s, prefix).unwrap_or_else(|e| panic!("the lab must run here (root, iproute2): {e}"));
    let opts = RunOptions {
        gscipd: std::env::var_os("UNDER_LOAD_GSCIPD").map(PathBuf::from).unwrap_or_else(|| workspace_binary("gscipd")),
        work_dir: work.0.clone(),
        extra_config: extra_config.to_owned(),
        ..RunOptions::new(prefix)
    };
    let daemons = start_daemons(s, &Topology::new(s), &lab, &opts, None).expect("gscipd in every GE");
    (lab, daemons)
}

/// `blocks` KiB of TCP each way over one connection between a and b, checked at both ends.
fn bulk_both_ways(lab: &Lab, work: &Work, marker: &str, blocks: u32) {
    let blocks = blocks.to_string();
    let server = serve(lab, "b", &[&work.file("bulk.py"), "server", marker, PATH_B, &blocks]);
    let client = lab.exec("a", "python3", &[&work.file("bulk.py"), "client", marker, PATH_B, &blocks]);
    let server = finish(server);
    let client = client.unwrap_or_else(|e| format!("ERROR {e}"));
    assert_eq!(client.trim(), "client ok", "a received what b sent");
    assert_eq!(server.trim(), "server ok", "b received what a sent");
}

/// An echo server on b (port 7000, kept running until the handle is dropped) and `n` TCP
/// connections to it from a, one after another, each answered.
fn echo_connections(lab: &Lab, work: &Work, n: u32) -> Processes {
    let server = Processes::one("echo", serve(lab, "b", &[&work.file("echo.py"), PATH_B, "7000"]));
    let out = lab.exec("a", "python3", &[&work.file("connect.py"), PATH_B, "7000", &n.to_string(), "5"]).unwrap();
    assert_eq!(out.split_whitespace().count(), n as usize, "{n} connections answered: {out}");
    server
}

/// Per connection to b's echo server (port 7000) that a GE relays: the packets its daemon met.
fn relayed_packets(status: &serde_json::Value) -> Vec<u64> {
    status["pit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cid"].as_str().is_some_and(|c| c.contains(":7000")) && e["action"] == "relay")
        .map(|e| e["packets"].as_u64().unwrap())
        .collect()
}

/// The counters of GEs a and b, with none of the failure counters set.
fn clean_counters(work: &Work) -> [serde_json::Value; 2] {
    ["a", "b"].map(|ge| {
        let c = status(&work.0, ge)["counters"].clone();
        for bad in ["auth_failures", "malformed", "hold_overflow", "negotiations_failed"] {
            assert_eq!(c[bad], 0, "{ge}: {bad}: {c}");
        }
        c
    })
}

#[test]
fn with_offloads_off_bulk_tcp_and_udp_arrive_intact_and_never_in_clear() {
    let work = Work::new("offloads");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldoff", &work);
    let devices = lab.set_offloads(false).expect("ethtool");
    assert!(devices >= 6, "{devices} devices");
    let features = lab.exec("a", "ethtool", &["-k", "eth0"]).unwrap();
    for f in ["tcp-segmentation-offload: off", "generic-segmentation-offload: off", "generic-receive-offload: off"] {
        assert!(features.contains(f), "{f}: {features}");
    }
    let marker = marker();
    let sniffer = Sniffer::start(&lab, &work, &marker);

    bulk_both_ways(&lab, &work, &marker, 8192);

    // UDP echoes: small, one MTU (the largest that fits with PCCOM's trailer), and datagrams
    // that IP fragments (reassembled before the GE's hook, sealed whole, fragmented again).
    let echo = serve(&lab, "b", &[&work.file("udp.py"), "server", &marker, PATH_B]);
    let sizes = "64,512,1200,1400,3000,8000,20000,64,1400,3000";
    let out = lab.exec("a", "python3", &[&work.file("udp.py"), "client", &marker, PATH_B, sizes]).unwrap();
    drop(Processes::one("udp echo", echo));
    assert_eq!(out.trim(), "10 10", "UDP echoes intact (sizes {sizes})");

    let seen = sniffer.stop();
    assert!(seen.frames > 10_000, "the sniffer saw {} frames", seen.frames);
    assert!(seen.hits.is_empty(), "frames carried the data in clear: {:?}", seen.hits);
    assert!(seen.largest <= 1514, "a {}-byte frame on a link with offloads off", seen.largest);

    // Each end sealed its sending host's TCP in units that the kernel cut into segments after
    // it; the other end put them together before opening them.
    for (ge, c) in ["a", "b"].iter().zip(clean_counters(&work)) {
        assert!(c["sealed"].as_u64().unwrap() > 500, "{ge}: {c}");
        assert!(c["units_reassembled"].as_u64().unwrap() > 100, "{ge}: {c}");
        assert!(c["pieces_held"].as_u64().unwrap() > c["units_reassembled"].as_u64().unwrap(), "{ge}: {c}");
        assert_eq!(c["pieces_dropped"], 0, "{ge}: nothing is lost here: {c}");
    }
    drop(daemons);
    drop(lab);
}

#[test]
fn with_offloads_on_units_cross_the_links_whole_and_never_in_clear() {
    let work = Work::new("units");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldon", &work);
    let marker = marker();
    let sniffer = Sniffer::start(&lab, &work, &marker);
    bulk_both_ways(&lab, &work, &marker, 8192);
    let seen = sniffer.stop();
    assert!(seen.hits.is_empty(), "frames carried the data in clear: {:?}", seen.hits);
    assert!(seen.largest > 16_000, "units of many segments cross whole: largest frame {}", seen.largest);
    for (ge, c) in ["a", "b"].iter().zip(clean_counters(&work)) {
        let (sealed, opened) = (c["sealed"].as_u64().unwrap(), c["opened"].as_u64().unwrap());
        // 8 MiB in units of up to 64 KiB: far fewer seals than the 5,800 segments it takes.
        assert!(sealed > 100 && opened > 100 && sealed < 3_000, "{ge}: {c}");
        assert_eq!(c["pieces_dropped"], 0, "{ge}: {c}");
    }
    drop(daemons);
    drop(lab);
}

#[test]
fn on_a_lossy_path_flows_of_cut_units_switch_to_segments_and_arrive_intact() {
    let work = Work::new("lossy");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldloss", &work);
    lab.set_offloads(false).expect("ethtool");
    // The GEN's host loses 1 % of what it forwards, at random.
    lab.exec(
        "r",
        "iptables",
        &["-I", "FORWARD", "1", "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"],
    )
    .expect("iptables statistic");
    let marker = marker();
    let sniffer = Sniffer::start(&lab, &work, &marker);
    bulk_both_ways(&lab, &work, &marker, 8192);
    let seen = sniffer.stop();
    assert!(seen.hits.is_empty(), "frames carried the data in clear: {:?}", seen.hits);
    let [a, b] = clean_counters(&work);
    // Both senders lost cut units, saw their hosts retransmit much, and switched the flow.
    for (ge, c) in [("a", &a), ("b", &b)] {
        assert_eq!(c["flows_segmented"], 1, "{ge}: {c}");
    }
    let dropped = a["pieces_dropped"].as_u64().unwrap() + b["pieces_dropped"].as_u64().unwrap();
    assert!(dropped > 0, "pieces of lost units are dropped, never delivered: a {a}, b {b}");
    drop(daemons);
    drop(lab);
}

#[test]
fn a_flow_cut_into_segments_on_a_lossy_path_goes_back_to_units_when_the_loss_ends() {
    let work = Work::new("lossend");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldlend", &work);
    lab.set_offloads(false).expect("ethtool");
    let loss = ["FORWARD", "-m", "statistic", "--mode", "random", "--probability", "0.01", "-j", "DROP"];
    let mut rule = vec!["-I"];
    rule.extend(loss);
    lab.exec("r", "iptables", &rule).expect("iptables statistic");
    let marker = marker();
    let sniffer = Sniffer::start(&lab, &work, &marker);
    // 48 MiB from a to b (then back) over one connection; a, sealing, is watched meanwhile.
    let blocks = (48 * 1024).to_string();
    let server = serve(&lab, "b", &[&work.file("bulk.py"), "server", &marker, PATH_B, &blocks]);
    let client = Command::new("ip")
        .args(["netns", "exec", lab.namespace("a").unwrap(), "python3", &work.file("bulk.py"), "client", &marker])
        .args([PATH_B, &blocks])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let counter = |name: &str| status(&work.0, "a")["counters"][name].as_u64().unwrap();
    let wait_for = |name: &str, what: &str| {
        let t0 = Instant::now();
        while counter(name) == 0 {
            assert!(t0.elapsed() < Duration::from_secs(60), "a's flow never {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    wait_for("flows_segmented", "switched to segments on the lossy path");
    let mut rule = vec!["-D"];
    rule.extend(loss);
    lab.exec("r", "iptables", &rule).expect("the loss removed");
    wait_for("flows_back_to_units", "went back to units once the loss ended");
    let reassembled = |ge: &str| status(&work.0, ge)["counters"]["units_reassembled"].as_u64().unwrap();
    let reassembled_at_b = reassembled("b");
    let (server, client) = (finish(server), finish(client));
    assert_eq!(client.trim(), "client ok", "a received what b sent");
    assert_eq!(server.trim(), "server ok", "b received what a sent");
    let seen = sniffer.stop();
    assert!(seen.hits.is_empty(), "frames carried the data in clear: {:?}", seen.hits);
    let [a, _] = clean_counters(&work);
    assert_eq!(a["flows_back_to_units"], 1, "{a}");
    assert_eq!(a["flows_segmented"], 1, "not cut again without loss: {a}");
    // The rest of a's data came as units again (cut by the links, put together by b), not as
    // segments sealed one by one: the kernel was told to hand the flow over whole.
    let units_after = reassembled("b") - reassembled_at_b;
    assert!(units_after > 50, "b put together {units_after} units after a's flow went back");
    drop(daemons);
    drop(lab);
}

#[test]
fn ten_thousand_new_flows_through_one_gen_lose_no_held_packet() {
    const FLOWS: u64 = 10_000;
    let work = Work::new("flows");
    // A plain terminal behind the closed GEN: the GEN negotiates every flow with b.
    let s = path_scenario(true);
    let (lab, daemons) = up(&s, "ldflows", &work);
    let marker = marker();
    let sniffer = Sniffer::start(&lab, &work, &marker);
    let pid = gscip_lab::load::daemon_pid(&lab, "r").expect("the GEN's gscipd");
    let before = gscip_lab::load::memory_kib(pid).expect("its memory");
    let flows = gscip_lab::load::many_flows(&lab, &work.0, "a", "b", PATH_B, FLOWS, &marker, 120).unwrap();
    let received = flows.received;
    let after = gscip_lab::load::memory_kib(pid).expect("its memory");
    eprintln!(
        "{FLOWS} flows in {:.2} s ({:.0}/s); the GEN's gscipd: {} KiB before, {} KiB after, peak {} KiB",
        flows.seconds,
        FLOWS as f64 / flows.seconds,
        before.0,
        after.0,
        after.1
    );
    let gen = status(&work.0, "r");
    let c = &gen["counters"];
    assert_eq!(received, FLOWS, "held packets lost; the GEN: {c}");
    assert_eq!(c["hold_overflow"], 0, "{c}");
    assert_eq!(c["negotiations_failed"], 0, "{c}");
    assert!(c["held"].as_u64().unwrap() >= FLOWS, "every first packet was held: {c}");
    assert_eq!(gen["held_packets"], 0);
    let encrypting = gen["pit"].as_array().unwrap().iter().filter(|e| e["action"] == "encrypt").count();
    assert!(encrypting as u64 >= FLOWS, "{encrypting} encrypting PIT entries");
    // The GEN and b made their path keys from the same, marked, negotiation during the burst
    // (never idle): most of b's records and CDNs were checked by MAC, only those of the
    // negotiations under way before the keys were made by signature (docs/dprp.md section 11).
    let (sigs, macs) = (c["signatures_verified"].as_u64().unwrap(), c["macs_verified"].as_u64().unwrap());
    let (marked, keys) = (c["negotiations_marked"].as_u64().unwrap(), c["path_keys_derived"].as_u64().unwrap());
    eprintln!("the GEN checked {sigs} records and CDNs by signature, {macs} by path-key MAC; {marked} negotiations marked, {keys} keys made");
    assert!(macs > 4 * sigs, "path keys during the burst: {sigs} signatures, {macs} MACs checked: {c}");

    // Between the terminal and the GEN the datagrams are plaintext by design; beyond the GEN
    // (the right link's ports), never.
    let seen = sniffer.stop();
    assert!(seen.frames >= 4 * FLOWS, "the sniffer saw {} frames", seen.frames);
    let right = gscip_lab::run::ports_of_link(&s, "right");
    assert_eq!(right.len(), 2);
    let leaked: Vec<_> = seen.hits.iter().filter(|(port, _)| right.contains(port)).collect();
    assert!(leaked.is_empty(), "payloads in clear beyond the GEN: {leaked:?}");
    let left: u64 = gscip_lab::run::ports_of_link(&s, "left").iter().filter_map(|p| seen.hits.get(p)).sum();
    assert!(left >= FLOWS, "the sniffer missed the left link's plaintext ({left}): it proves nothing");
    drop(daemons);
    drop(lab);
}

#[test]
fn a_host_s_traffic_with_itself_is_no_flow() {
    let work = Work::new("local");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldlocal", &work);
    let before = status(&work.0, "b")["counters"].clone();
    let out = lab.exec("b", "python3", &[&work.file("local.py"), PATH_B]).unwrap();
    assert_eq!(out.trim(), "echo tcp|echo tcp|udp 0", "both echoes, no SYN sent twice");
    let after = status(&work.0, "b")["counters"].clone();
    for c in ["packets", "held", "negotiations_started"] {
        assert_eq!(before[c], after[c], "{c}: the closed GES met its host's own traffic: {after}");
    }
    drop(daemons);
    drop(lab);
}

#[test]
fn later_flows_on_a_path_are_negotiated_with_path_keys() {
    let work = Work::new("pathkeys");
    let s = path_scenario(false);
    // A cap on staying awake that a debug build's round trips (about 2 ms on a busy CI
    // machine) fit in twice: with the default of 1 ms such a slow path never keeps a GE awake.
    let (lab, daemons) = up_with(&s, "ldpk", &work, "stay_awake_us = 20000\n");
    // Five TCP connections, one after another (the daemons make path keys between them).
    let server = echo_connections(&lab, &work, 5);
    // The first negotiation checks signatures: a checks b's and r's records and b's CDN, r
    // checks b's and a's records and the CDN, b checks r's and a's records. The four after it
    // check the same by path keys only.
    for (ge, per_flow) in [("a", 3), ("r", 3), ("b", 2)] {
        let st = status(&work.0, ge);
        let c = &st["counters"];
        assert_eq!(c["negotiations_failed"], 0, "{ge}: {c}");
        assert_eq!(c["signatures_verified"], per_flow, "{ge}: signatures for the first flow only: {c}");
        assert_eq!(c["macs_verified"], 4 * per_flow, "{ge}: path keys for the four after it: {c}");
        assert_eq!(st["path_keys"], 2, "{ge}: a key with each of the two other GEs: {st}");
        assert_eq!(c["path_keys_derived"], 2, "{ge}: made from the first, marked, negotiation only: {c}");
    }
    let c = &status(&work.0, "a")["counters"];
    assert_eq!(c["negotiations_marked"], 1, "a marked the first negotiation only: {c}");
    // The GEN met the first DDE toward b and let the four after it pass in the kernel (its
    // u32 match and xt_recent list): it joined their negotiations at the RGI, and MACed its
    // record for a all the same (a's MAC count above).
    let c = &status(&work.0, "r")["counters"];
    assert_eq!(c["negotiations_joined_at_rgi"], 4, "r: the four later DDEs passed in the kernel: {c}");
    // The MPITs toward b passed in the kernel too, the GEN taking part from their copies (its
    // NFLOG group): every one once the first RGI had told it a GE lies beyond b (the first
    // MPIT may come before the daemon has put b on the list).
    let copied = c["mpits_copied"].as_u64().unwrap();
    assert!((4..=5).contains(&copied), "r took part in the later MPITs from copies: {c}");
    // The closed GEN relays between two closed GESs: no CDN could change what its kernel does
    // with a connection, so the kernel takes each one over from its SYN (marked as it passes
    // after the MPIT); the SYN-ACK and the rest never reach the daemon. Waiting for the CDN,
    // the SYN-ACK (at least) came to it too: 10 packets or more for the five.
    let gen = status(&work.0, "r");
    let relayed = relayed_packets(&gen);
    assert_eq!(relayed.len(), 5, "the GEN relays the five connections: {gen}");
    // A SYN that reaches the GEN's daemon before the MPIT's copy is held until it comes, and
    // released with the mark all the same (the burst test below).
    assert!(relayed.iter().all(|&n| n == 1), "the GEN's daemon met {relayed:?} packets of the five connections");
    // Every GE measured the DPRP round trip (a from its DDEs to the RGIs, r and b from their
    // RGIs to the MPITs) and stayed awake through the flows' first steps instead of sleeping
    // between them (docs/dprp.md section 16)...
    for ge in ["a", "r", "b"] {
        let awake = &status(&work.0, ge)["stay_awake"];
        assert!(awake["dprp_round_trip_us"].as_u64().is_some_and(|us| us > 0), "{ge}: {awake}");
        assert!(awake["looks"].as_u64().is_some_and(|n| n > 0), "{ge} stayed awake: {awake}");
    }
    // ... and went back to sleep: over a quiet second, no daemon uses a tenth of it.
    let pids = ["a", "r", "b"].map(|ge| gscip_lab::load::daemon_pid(&lab, ge).expect("gscipd running"));
    let cpu = || pids.map(|p| gscip_lab::load::cpu_ns(p).unwrap_or(0));
    let before = cpu();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let used: Vec<u64> = cpu().iter().zip(before).map(|(after, before)| (after - before) / 1_000_000).collect();
    assert!(used.iter().all(|&ms| ms < 100), "CPU ms of a, r, b over a quiet second: {used:?}");
    drop(server);
    drop(daemons);
    drop(lab);
}

#[test]
fn a_burst_of_connections_through_a_gen_is_handed_to_the_kernel_at_each_first_packet() {
    let work = Work::new("burst");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldburst", &work);
    // A first connection: r learns that a GE lies beyond b (its MPITs pass from then on).
    let server = echo_connections(&lab, &work, 1);
    // Three bursts (within the echo server's backlog): in most, some SYN reaches r's daemon
    // before its MPIT's copy (2 to 23 of 48 in four runs, none in one).
    let (n, bursts) = (40, 3);
    for _ in 0..bursts {
        let out = lab.exec("a", "python3", &[&work.file("burst.py"), PATH_B, "7000", &n.to_string()]).unwrap();
        assert_eq!(out.trim(), n.to_string(), "every connection of the burst answered");
    }
    // However the bursts' SYNs and the MPITs' copies met in r's daemon (a SYN that came before
    // its copy was held until the copy, and released), each connection was handed to r's
    // kernel with its first packet: r's daemon met exactly one packet of each.
    let gen = status(&work.0, "r");
    let relayed = relayed_packets(&gen);
    let c = &gen["counters"];
    assert_eq!(relayed.len(), n * bursts + 1, "r relays every connection: {gen}");
    assert!(relayed.iter().all(|&p| p == 1), "r's daemon met {relayed:?} packets (held {}): {c}", c["held"]);
    assert_eq!(c["negotiations_failed"], 0, "{c}");
    drop(server);
    drop(daemons);
    drop(lab);
}

/// Connects to `argv[1]:argv[2]` once (3 s at most) and prints what happened.
const CONNECT_ONCE: &str = "import errno, socket, sys\ns = socket.socket(); s.settimeout(3)\ntry:\n    s.connect((sys.argv[1], int(sys.argv[2]))); print('connected')\nexcept OSError as e:\n    print(errno.errorcode.get(e.errno, type(e).__name__))\n";

#[test]
fn a_gen_answers_the_dde_it_let_pass_when_the_destination_s_ges_has_gone() {
    let work = Work::new("ddepass");
    let s = path_scenario(false);
    let (lab, daemons) = up(&s, "ldpass", &work);
    let server = echo_connections(&lab, &work, 2);
    let list = || lab.exec("r", "cat", &["/proc/net/xt_recent/gscip_dde_0"]).unwrap();
    assert!(list().contains(&format!("src={PATH_B} ")), "r lets DDEs toward b pass: {}", list());
    assert_eq!(status(&work.0, "r")["counters"]["negotiations_joined_at_rgi"], 1);
    // b's GES stops (and takes its rules away): b's host answers DPRP with "port unreachable".
    let daemons = daemons.stop("b").unwrap();
    std::fs::write(work.0.join("once.py"), CONNECT_ONCE).unwrap();
    let out = lab.exec("a", "python3", &[&work.file("once.py"), PATH_B, "7000"]).unwrap();
    // r's kernel rule let the next DDE pass; the error quoting it came back through r, which
    // answered as end GE from the quote. Closed a and a GEN on a's side make no pair: a
    // discards the flow and tells its application at once (a timeout would mean the error or
    // the answer went astray).
    assert_eq!(out.trim(), "EHOSTUNREACH", "a's connection, b's GES gone: administratively prohibited");
    let r = status(&work.0, "r")["counters"].clone();
    assert_eq!(r["ddes_recovered_from_icmp"], 1, "r answered from the quoted DDE: {r}");
    assert!(!list().contains(&format!("src={PATH_B} ")), "the pass toward b is withdrawn: {}", list());
    let a = status(&work.0, "a")["counters"].clone();
    assert_eq!(a["negotiations_failed"], 0, "a decided on r's answer, not on a timeout: {a}");
    drop(server);
    drop(daemons);
    drop(lab);
}

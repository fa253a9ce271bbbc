//! Load on a lab network, shared by the tests (`tests/under_load.rs`), the benchmark
//! (`gscip-lab-bench`) and the first-byte timeline (`examples/first_byte_timeline.rs`): their
//! paths A — R — B and A — GA — GB — B, new TCP connections one after the other, many new flows
//! at once, and what a GE's daemon holds in memory and spends in CPU.

use crate::{Lab, LabError};
use gscip_sim::Scenario;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// A's and B's addresses on the path A — R — B of [`path`].
pub const PATH_A: &str = "10.50.1.2";
pub const PATH_B: &str = "10.50.2.2";

const PATH: &str = r#"
name = "path"
[[group]]
id = 1
[[subnet]]
name = "left"
prefix = "10.50.1.0/24"
[[subnet]]
name = "right"
prefix = "10.50.2.0/24"
[[node]]
name = "a"
END_A
interfaces = [{ subnet = "left", address = "10.50.1.2" }]
gateway = "10.50.1.1"
[[node]]
name = "r"
ROUTER
interfaces = [{ subnet = "left", address = "10.50.1.1", inside = INSIDE }, { subnet = "right", address = "10.50.2.1" }]
[[node]]
name = "b"
END_B
interfaces = [{ subnet = "right", address = "10.50.2.2" }]
gateway = "10.50.2.1"
"#;

/// Term A — GEN GA — GEN GB — Term B: two sites whose gateways protect what crosses between
/// them (or plain routers).
const GATEWAYS: &str = r#"
name = "gateways"
[[group]]
id = 1
[[subnet]]
name = "left"
prefix = "10.51.1.0/24"
[[subnet]]
name = "middle"
prefix = "10.51.2.0/24"
[[subnet]]
name = "right"
prefix = "10.51.3.0/24"
[[node]]
name = "a"
kind = "term"
interfaces = [{ subnet = "left", address = "10.51.1.2" }]
gateway = "10.51.1.1"
[[node]]
name = "ga"
KIND
interfaces = [{ subnet = "left", address = "10.51.1.1", inside = INSIDE }, { subnet = "middle", address = "10.51.2.1" }]
routes = [{ to = "10.51.3.0/24", via = "10.51.2.2" }]
[[node]]
name = "gb"
KIND
interfaces = [{ subnet = "right", address = "10.51.3.1", inside = INSIDE }, { subnet = "middle", address = "10.51.2.2" }]
routes = [{ to = "10.51.1.0/24", via = "10.51.2.1" }]
[[node]]
name = "b"
kind = "term"
interfaces = [{ subnet = "right", address = "10.51.3.2" }]
gateway = "10.51.3.1"
"#;

/// The gateways path: GENs (closed, group 1) or plain routers.
pub fn gateways(gen: bool) -> Scenario {
    let kind = if gen { "kind = \"gen\"\nmode = \"closed\"\ngroups = [1]" } else { "kind = \"router\"" };
    let text = GATEWAYS.replace("KIND", kind).replace("INSIDE", if gen { "true" } else { "false" });
    Scenario::parse(&text, "gateways.toml").expect("the gateways path is a valid scenario")
}

/// B's address on the gateways path of [`gateways`].
pub const GATEWAYS_B: &str = "10.51.3.2";

/// The first-byte client: N new TCP connections to HOST:PORT one after the other (10 ms apart),
/// each sending one byte and reading the answer; prints each one's time to the first byte of
/// the answer in µs, on one line. Run on A against [`ECHO_SERVER`] on B.
pub const FIRST_BYTE_CLIENT: &str = r#"
import socket, sys, time
host, port, n, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
# The interpreter's first connection costs a few ms more than the next (first use of the
# resolver and socket code): pay that off the measured path, on the namespace's loopback.
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1).close()
except OSError:
    pass
ts = []
for i in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=timeout)
    s.sendall(b"x"); s.recv(16)
    ts.append((time.perf_counter() - t0) * 1e6)
    s.close()
    time.sleep(0.01)
print(" ".join("%.0f" % t for t in ts))
"#;

/// A TCP server on ADDR:PORT that answers each connection's first bytes with one byte and
/// closes it; prints "ready" once listening.
pub const ECHO_SERVER: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(16); c.sendall(b"y"); c.close()
"#;

/// What stands at one end of [`path`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEnd {
    /// A plain host.
    Term,
    /// A GES (group 1) in open mode.
    OpenGes,
    /// A GES (group 1) in closed mode.
    ClosedGes,
}

impl PathEnd {
    fn toml(self) -> &'static str {
        match self {
            PathEnd::Term => "kind = \"term\"",
            PathEnd::OpenGes => "kind = \"ges\"\nmode = \"open\"\ngroups = [1]",
            PathEnd::ClosedGes => "kind = \"ges\"\nmode = \"closed\"\ngroups = [1]",
        }
    }
}

/// The path A — R — B over two subnets: R a closed GEN of group 1 (`gen`) or a plain router.
pub fn path(a: PathEnd, gen: bool, b: PathEnd) -> Scenario {
    let router = if gen { "kind = \"gen\"\nmode = \"closed\"\ngroups = [1]" } else { "kind = \"router\"" };
    let text = PATH
        .replace("END_A", a.toml())
        .replace("END_B", b.toml())
        .replace("ROUTER", router)
        .replace("INSIDE", if gen { "true" } else { "false" });
    Scenario::parse(&text, "path.toml").expect("the lab path is a valid scenario")
}

/// New UDP flows at once: one datagram each (`MARKER-NNNNN`) from its own source port
/// (20000 + k), to port 53.
const MANY_SEND: &str = r#"
import socket, sys
marker, dst, n = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3])
for k in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 20000 + k))
    s.sendto(marker + b"-%05d" % k, (dst, 53))
    s.close()
print("sent", n, flush=True)
"#;

/// Counts the distinct datagrams received on port 53 until `n` or the deadline (seconds), and
/// prints the count.
const MANY_RECV: &str = r#"
import socket, sys, time
marker, addr, n, limit = sys.argv[1].encode(), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
s.bind((addr, 53)); s.settimeout(0.2); print("ready", flush=True)
got, end = set(), time.time() + limit
while len(got) < n and time.time() < end:
    try:
        d = s.recv(2048)
        if d.startswith(marker):
            got.add(d)
    except socket.timeout:
        pass
print(len(got), flush=True)
"#;

/// What [`many_flows`] saw.
#[derive(Debug, Clone, Copy)]
pub struct ManyFlows {
    /// Distinct first packets that reached the receiver.
    pub received: u64,
    /// From the sender's start to the last packet's arrival (or the deadline).
    pub seconds: f64,
}

/// Starts `n` new UDP flows at once from `from` to `dst` (an address of node `to`), one
/// datagram each carrying `marker`, and counts at `to` those that arrive within `limit_s`.
#[allow(clippy::too_many_arguments)]
pub fn many_flows(
    lab: &Lab,
    work: &Path,
    from: &str,
    to: &str,
    dst: &str,
    n: u64,
    marker: &str,
    limit_s: u32,
) -> Result<ManyFlows, LabError> {
    let env = |e: std::io::Error| LabError::Environment(e.to_string());
    let (send, recv) = (work.join("many_send.py"), work.join("many_recv.py"));
    std::fs::write(&send, MANY_SEND).map_err(env)?;
    std::fs::write(&recv, MANY_RECV).map_err(env)?;
    let ns = lab.namespace(to).ok_or_else(|| LabError::Scenario(format!("no node {to:?}")))?;
    let mut receiver = Command::new("ip")
        .args(["netns", "exec", ns, "python3"])
        .arg(&recv)
        .args([marker, dst, &n.to_string(), &limit_s.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(env)?;
    let mut out = receiver.stdout.take().ok_or_else(|| LabError::Environment("receiver output".into()))?;
    let mut ready = [0u8; 6];
    out.read_exact(&mut ready).map_err(env)?;
    let started = Instant::now();
    let sent = lab.exec(from, "python3", &[&send.to_string_lossy(), marker, dst, &n.to_string()]);
    let mut text = String::new();
    out.read_to_string(&mut text).map_err(env)?;
    let _ = receiver.wait();
    let elapsed = started.elapsed().as_secs_f64();
    if sent?.trim() != format!("sent {n}") {
        return Err(LabError::Environment("the sender did not send every flow".into()));
    }
    let received = text.trim().parse().map_err(|_| LabError::Environment(format!("receiver said {text:?}")))?;
    Ok(ManyFlows { received, seconds: elapsed })
}

/// A process's resident memory in KiB: (now, peak).
pub fn memory_kib(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU time a process has used so far, all its threads, user and kernel (including the
/// kernel's work on its behalf, e.g. a verdict carrying a packet on through the stack), in
/// nanoseconds (`/proc/PID/task/*/schedstat`, whose first field is time on a CPU).
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        total += stat.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(total)
}

/// The PID of the `gscipd` running in a node's namespace.
pub fn daemon_pid(lab: &Lab, node: &str) -> Option<u32> {
    let ns = lab.namespace(node)?;
    let pids = crate::run("ip", &["netns", "pids", ns]).ok()?;
    pids.lines()
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "gscipd"))
}

//! Load on a lab network, shared by the tests (`tests/under_load.rs`) and the benchmark
//! (`gscip-lab-bench`): their path A — R — B, many new flows at once, and what a GE's daemon
//! holds in memory.

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

/// The PID of the `gscipd` running in a node's namespace.
pub fn daemon_pid(lab: &Lab, node: &str) -> Option<u32> {
    let ns = lab.namespace(node)?;
    let pids = crate::run("ip", &["netns", "pids", ns]).ok()?;
    pids.lines()
        .filter_map(|p| p.trim().parse::<u32>().ok())
        .find(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "gscipd"))
}

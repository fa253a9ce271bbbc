//! `make bench`, the lab part: two paths in network namespaces, A — R — B (GSCIP: GES — GEN —
//! GES) and A — GA — GB — B (GSCIP: Term — GEN — GEN — Term), measured in one run. On A — R — B,
//! for each of:
//!
//! * **plain**: kernel forwarding, no GSCIP (the limit);
//! * **nfqueue-floor**: an accept-only NFQUEUE loop (`gscipd --accept-only`) on the hooks a
//!   protected flow uses in steady state (A's and B's OUTPUT/INPUT; R forwards in the kernel,
//!   as a GEN's fast path does), fail-closed (the architecture's floor);
//! * **nfqueue-floor-gso**: the same with NFQUEUE's GSO flag (`--accept-only --gso`): packets
//!   of up to 64 KiB reach the loops unsegmented (the issue's "GSO floor");
//! * the named baselines of issue "Performance", each a tunnel between A and B over the same
//!   path: **wireguard-go** (Debian), **boringtun** (`boringtun-cli` 0.7.1 from crates.io) and
//!   **strongswan** (IKEv2 with PSK, ESP AES-256-GCM through the openssl plugin, user-mode ESP
//!   with the kernel-libipsec plugin: this kernel has no ESP);
//! * **gscip-aes**, **gscip-chacha**: GES A and GES B protect the flow with PCCOM
//!   (AES-256-GCM, ChaCha20-Poly1305), the GEN R relays it (kernel fast path).
//!
//! On A — GA — GB — B: **gw-plain** (plain routers), **gw-nfqueue-floor** (accept-only loops on
//! both gateways' FORWARD hooks), **gw-gscip-aes** and **gw-gscip-chacha** (the GENs protect
//! what crosses between the sites). And 10,000 new UDP flows at once from a terminal through one
//! GEN to a GES (and through a plain router, the baseline): setup rate, first packets lost, the
//! GEN daemon's memory growth per flow. And **paired**: what DPRP adds to a new flow's first
//! byte, on each path, with the floor's lab and GSCIP AES's lab standing side by side and runs of
//! new connections alternating between them (9 rounds), against the mark of 1 RTT (ping A — B
//! in the same rounds) + 200 µs; on A — R — B a boringtun lab stands beside them, and each round
//! also times the first connection through a boringtun tunnel brought up fresh for it
//! (handshake included): a new GSCIP flow against a fresh WireGuard tunnel in the same minutes.
//!
//! Figures: single-stream TCP throughput and UDP packet rate (iperf3), both also with
//! segmentation offloads off on every lab link, CPU seconds of the whole machine per GB of TCP
//! received, the time to the first
//! byte of a new TCP connection (median of 20 connections; DPRP negotiation included for GSCIP,
//! an established tunnel for the baselines), and for the tunnels the **flow start**: the first
//! byte of the first TCP connection through a fresh tunnel (WireGuard: the handshake starts on
//! that connection's first packet; strongSwan: an on-demand `start_action = trap` policy, IKEv2
//! started by that first packet, charon freshly started). Each figure RUNS times
//! (min/median/max). Prints a table with ratios against plain, the floor (GSCIP's hosts figures
//! also against the GSO floor), the faster of
//! wireguard-go and boringtun and strongSwan, and writes `target/bench/lab.json`
//! (`[{"name", "value", "unit", "baseline", "baseline_value", "ratio"}]`).
//!
//! Environment: `BENCH_RUNS` (3), `BENCH_SECONDS` (4 per iperf3 TCP run; UDP runs take at most
//! 2), `BENCH_LAB_PATHS` (a
//! comma-separated subset of the path names above, `flows` and `paired`, for a quick check), `BORINGTUN` (the
//! `boringtun-cli` binary; else `target/tools/bin/boringtun-cli`, else `PATH`). Exits 1 when a
//! path could not be measured (its figures are null), 2 when the lab cannot run at all.
//! Everything it starts is stopped and everything it creates removed, also on failure.

use gscip_lab::load::{
    cpu_ns, daemon_pid, gateways, path, PathEnd, ECHO_SERVER, FIRST_BYTE_CLIENT, GATEWAYS_B, PATH_A, PATH_B,
};
use gscip_lab::run::{start_daemons, Processes, RunOptions};
use gscip_lab::{clean, Lab};
use gscip_sim::topology::Topology;
use gscip_sim::Scenario;
use rand_core::{OsRng, RngCore};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The path: closed GESs at the ends (A open with `open_a`) or plain hosts, a GEN or a plain
/// router in the middle.
fn scenario(ges: bool, gen: bool, open_a: bool) -> Scenario {
    let a = match (ges, open_a) {
        (false, _) => PathEnd::Term,
        (true, false) => PathEnd::ClosedGes,
        (true, true) => PathEnd::OpenGes,
    };
    path(a, gen, if ges { PathEnd::ClosedGes } else { PathEnd::Term })
}

/// Which lab path a figure is measured on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Topo {
    /// A — R — B: GES — GEN — GES for GSCIP.
    Hosts,
    /// A — GA — GB — B: Term — GEN — GEN — Term for GSCIP.
    Gateways,
}

impl Topo {
    fn destination(self) -> &'static str {
        match self {
            Topo::Hosts => PATH_B,
            Topo::Gateways => GATEWAYS_B,
        }
    }
}

type Res<T> = Result<T, String>;

/// A tunnel between A and B over the path, set up by one of the named baselines.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tunnel {
    WireGuardGo,
    Boringtun,
    StrongSwan,
}

impl Tunnel {
    /// B's address inside the tunnel.
    fn destination(self) -> &'static str {
        match self {
            Tunnel::StrongSwan => "10.61.0.2",
            _ => "10.60.0.2",
        }
    }

    /// A fresh tunnel: processes started, configured, no handshake yet.
    fn up(self, lab: &Lab, prefix: &str, work: &Path, n: usize) -> Res<Up> {
        Ok(match self {
            Tunnel::StrongSwan => Up::StrongSwan(StrongSwan::up(lab, work, n)?),
            _ => Up::WireGuard(WireGuard::up(lab, prefix, self, work)?),
        })
    }
}

/// A tunnel that is up; stopped (processes, sockets, configuration files) when dropped.
enum Up {
    WireGuard(WireGuard),
    StrongSwan(StrongSwan),
}

/// Runs a command to completion; its stderr becomes the error.
fn output(cmd: &mut Command, input: Option<&str>) -> Res<String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if let Some(text) = input {
        let _ = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
    }
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Stops children by their process id (SIGTERM, then SIGKILL after 3 s), only those not yet
/// reaped (a reaped one's id may belong to someone else now).
fn stop(children: &mut Vec<Child>) {
    for c in children.iter_mut() {
        if let Ok(None) = c.try_wait() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        }
    }
    for mut c in children.drain(..) {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits up to `limit` for `ok`.
fn wait_for(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    ok()
}

fn namespace<'a>(lab: &'a Lab, node: &str) -> Res<&'a str> {
    lab.namespace(node).ok_or_else(|| format!("no namespace for {node}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `boringtun-cli` binary: `$BORINGTUN`, else `target/tools/bin/boringtun-cli` (where
/// `scripts/bench.sh` installs it), else the one on `PATH`.
fn boringtun() -> PathBuf {
    if let Some(p) = std::env::var_os("BORINGTUN") {
        return PathBuf::from(p);
    }
    let local = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().and_then(Path::parent).map(|t| t.join("tools/bin/boringtun-cli")));
    local.filter(|p| p.exists()).unwrap_or_else(|| PathBuf::from("boringtun-cli"))
}

/// A WireGuard tunnel (wireguard-go or boringtun-cli, both userspace, both configured with
/// `wg` over their UAPI socket) between A (10.60.0.1) and B (10.60.0.2). Interface names
/// differ per end (the control sockets in /var/run/wireguard are shared by all namespaces).
/// No handshake happens until the first packet (no keepalive).
struct WireGuard {
    children: Vec<Child>,
    sockets: Vec<PathBuf>,
    logs: Vec<PathBuf>,
    first: String,
    ns_a: String,
}

impl WireGuard {
    fn up(lab: &Lab, prefix: &str, imp: Tunnel, work: &Path) -> Res<WireGuard> {
        let ends = [("a", "wa", "10.60.0.1", PATH_A), ("b", "wb", "10.60.0.2", PATH_B)];
        let mut wg = WireGuard {
            children: Vec::new(),
            sockets: Vec::new(),
            logs: Vec::new(),
            first: format!("{prefix}wa"),
            ns_a: namespace(lab, "a")?.to_owned(),
        };
        let mut private = Vec::new();
        let mut public = Vec::new();
        for _ in 0..2 {
            let key = output(Command::new("wg").arg("genkey"), None)
                .map_err(|e| format!("{e} (apt-get install wireguard-tools)"))?;
            public.push(output(Command::new("wg").arg("pubkey"), Some(&key))?.trim().to_owned());
            private.push(key.trim().to_owned());
        }
        for (node, end, _, _) in ends {
            let ns = namespace(lab, node)?;
            let ifname = format!("{prefix}{end}");
            let sock = PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
            // A previous tunnel of the same name is gone with its process; wait for its link.
            wait_for(Duration::from_secs(3), || {
                output(Command::new("ip").args(["-n", ns, "link", "show", &ifname]), None).is_err()
            });
            let _ = std::fs::remove_file(&sock);
            let log_path = work.join(format!("{ifname}.log"));
            let log = File::create(&log_path).map_err(|e| e.to_string())?;
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns]);
            if imp == Tunnel::WireGuardGo {
                cmd.env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1").args(["wireguard-go", "-f", &ifname]);
            } else {
                cmd.arg(boringtun()).args(["-f", "--disable-drop-privileges", &ifname]);
            }
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {imp:?} ({e}): see scripts/bench.sh"))?;
            wg.children.push(child);
            wg.sockets.push(sock.clone());
            wg.logs.push(log_path.clone());
            if !wait_for(Duration::from_secs(5), || sock.exists()) {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!("{imp:?} on {node} did not start: {}", log.trim()));
            }
        }
        for (i, (node, end, inner, _)) in ends.iter().enumerate() {
            let ns = namespace(lab, node)?;
            let ifname = format!("{prefix}{end}");
            let (_, _, peer_inner, peer_outer) = ends[1 - i];
            output(
                Command::new("ip").args(["netns", "exec", ns, "wg", "set", &ifname]).args([
                    "private-key",
                    "/dev/stdin",
                    "listen-port",
                    "51820",
                    "peer",
                    &public[1 - i],
                    "endpoint",
                    &format!("{peer_outer}:51820"),
                    "allowed-ips",
                    &format!("{peer_inner}/32"),
                ]),
                Some(&private[i]),
            )?;
            output(Command::new("ip").args(["-n", ns, "addr", "add", &format!("{inner}/24"), "dev", &ifname]), None)?;
            output(Command::new("ip").args(["-n", ns, "link", "set", &ifname, "up"]), None)?;
        }
        Ok(wg)
    }

    /// Whether A's end has completed a handshake.
    fn handshaken(&self) -> bool {
        let out = output(
            Command::new("ip").args(["netns", "exec", &self.ns_a, "wg", "show", &self.first, "latest-handshakes"]),
            None,
        )
        .unwrap_or_default();
        out.split_whitespace().nth(1).is_some_and(|t| t != "0")
    }
}

impl Drop for WireGuard {
    fn drop(&mut self) {
        stop(&mut self.children);
        for f in self.sockets.iter().chain(&self.logs) {
            let _ = std::fs::remove_file(f);
        }
    }
}

const CHARON: &str = "/usr/lib/ipsec/charon";

/// What charon writes to its log when a packet meets a policy without an SA.
const NO_SA: &[u8] = b"could not find an outbound IPsec SA";

/// strongSwan between A (10.61.0.1) and B (10.61.0.2): one charon per namespace, each in a
/// mount namespace of its own with a private /run (charon always writes /run/charon.pid),
/// its own `STRONGSWAN_CONF`, vici socket and log in a directory that is removed when dropped.
/// IKEv2 with a fresh random PSK, ESP AES-256-GCM (openssl plugin) in tunnel mode, UDP
/// encapsulated (kernel-libipsec: ESP in userspace over a TUN device). A's child SA has
/// `start_action = trap`: its policy and route are installed when loaded, no SA yet.
struct StrongSwan {
    children: Vec<Child>,
    dir: PathBuf,
}

impl StrongSwan {
    fn conf(&self, node: &str) -> PathBuf {
        self.dir.join(node).join("strongswan.conf")
    }

    fn vici(&self, node: &str) -> String {
        format!("unix://{}", self.dir.join(node).join("charon.vici").display())
    }

    fn swanctl(&self, node: &str, args: &[&str]) -> Res<String> {
        output(
            Command::new("swanctl")
                .env("STRONGSWAN_CONF", self.conf(node))
                .args(args)
                .args(["--uri", &self.vici(node)]),
            None,
        )
    }

    fn up(lab: &Lab, work: &Path, n: usize) -> Res<StrongSwan> {
        let missing = ["/usr/sbin/swanctl", CHARON, "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so"]
            .iter()
            .any(|p| !Path::new(p).exists());
        if missing {
            return Err("strongSwan is missing: apt-get install strongswan strongswan-swanctl \
                        libcharon-extra-plugins libstrongswan-standard-plugins (scripts/bench.sh does)"
                .into());
        }
        let dir = work.join(format!("strongswan-{n}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut swan = StrongSwan { children: Vec::new(), dir };
        let mut psk = [0u8; 32];
        OsRng.fill_bytes(&mut psk);
        let ends = [
            ("a", "b", PATH_A, PATH_B, "10.61.0.1", "10.61.0.2", "trap"),
            ("b", "a", PATH_B, PATH_A, "10.61.0.2", "10.61.0.1", "none"),
        ];
        for (node, peer, me, them, inner, peer_inner, start) in ends {
            let ns = namespace(lab, node)?;
            let d = swan.dir.join(node);
            let io = |e: std::io::Error| format!("{}: {e}", d.display());
            std::fs::create_dir_all(d.join("run")).map_err(io)?;
            std::fs::create_dir_all(d.join("swanctl")).map_err(io)?;
            let conf = format!(
                "charon {{\n  load = nonce random openssl kdf kernel-libipsec kernel-netlink socket-default vici\n  \
                 filelog {{\n    bench {{\n      path = {log}\n      default = 1\n      flush_line = yes\n    }}\n  }}\n  \
                 syslog {{\n    daemon {{\n      default = -1\n    }}\n  }}\n  \
                 plugins {{\n    vici {{\n      socket = unix://{vici}\n    }}\n  }}\n}}\n\
                 swanctl {{\n  load = random openssl pem pkcs1 x509\n}}\n",
                log = d.join("charon.log").display(),
                vici = d.join("charon.vici").display(),
            );
            std::fs::write(d.join("strongswan.conf"), conf).map_err(io)?;
            let swanctl = format!(
                "connections {{\n  bench {{\n    version = 2\n    local_addrs = {me}\n    remote_addrs = {them}\n    \
                 encap = yes\n    proposals = aes256gcm16-prfsha256-x25519\n    \
                 local {{\n      auth = psk\n      id = {node}\n    }}\n    remote {{\n      auth = psk\n      id = {peer}\n    }}\n    \
                 children {{\n      bench {{\n        local_ts = {inner}/32\n        remote_ts = {peer_inner}/32\n        \
                 esp_proposals = aes256gcm16\n        start_action = {start}\n      }}\n    }}\n  }}\n}}\n\
                 secrets {{\n  ike-bench {{\n    id-a = a\n    id-b = b\n    secret = 0x{psk}\n  }}\n}}\n",
                psk = hex(&psk)
            );
            std::fs::write(d.join("swanctl").join("swanctl.conf"), swanctl).map_err(io)?;
            output(Command::new("ip").args(["-n", ns, "addr", "replace", &format!("{inner}/32"), "dev", "lo"]), None)?;
            let out = File::create(d.join("charon.out")).map_err(io)?;
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "unshare", "-m", "--propagation", "private", "sh", "-c"])
                .arg(format!("mount --bind '{}' /run && exec {CHARON}", d.join("run").display()))
                .env("STRONGSWAN_CONF", d.join("strongswan.conf"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().map_err(io)?)
                .stderr(out)
                .spawn()
                .map_err(|e| format!("cannot start charon: {e}"))?;
            swan.children.push(child);
        }
        for node in ["b", "a"] {
            let file = swan.dir.join(node).join("swanctl").join("swanctl.conf");
            let file = file.to_string_lossy();
            let mut last = String::new();
            let loaded = wait_for(Duration::from_secs(10), || {
                match swan.swanctl(node, &["--load-all", "--noprompt", "--file", &file]) {
                    Ok(_) => true,
                    Err(e) => {
                        last = e;
                        std::thread::sleep(Duration::from_millis(40));
                        false
                    }
                }
            });
            if !loaded {
                let log = std::fs::read_to_string(swan.dir.join(node).join("charon.out")).unwrap_or_default();
                return Err(format!("strongSwan on {node} did not load its configuration: {last}\n{log}"));
            }
        }
        Ok(swan)
    }

    /// Establishes the SA from A now; returns how long `swanctl --initiate` took, in µs.
    fn initiate(&self) -> Res<f64> {
        let t0 = Instant::now();
        self.swanctl("a", &["--initiate", "--child", "bench", "--timeout", "10"])?;
        Ok(t0.elapsed().as_secs_f64() * 1e6)
    }

    /// kernel-libipsec raises no acquire for a trap policy (libipsec drops a packet that
    /// meets a policy without an SA and logs it; "TODO-IPSEC: send an acquire to upper
    /// layer"), so this stands in for the kernel's acquire: it watches A's charon log, and on
    /// the first drop initiates the trapped child SA, as charon does on an acquire. The
    /// packet that triggered it is dropped, as the kernel's XFRM does by default
    /// (`xfrm_larval_drop`). Returns the time from the drop seen to the SA up, in µs.
    fn on_demand(&self) -> Res<std::thread::JoinHandle<Res<f64>>> {
        let mut log = File::open(self.dir.join("a").join("charon.log")).map_err(|e| e.to_string())?;
        log.seek(SeekFrom::End(0)).map_err(|e| e.to_string())?;
        let (conf, vici) = (self.conf("a"), self.vici("a"));
        Ok(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut seen = Vec::new();
            while !seen.windows(NO_SA.len()).any(|w| w == NO_SA) {
                if Instant::now() > deadline {
                    return Err("no packet met the trap policy within 15 s".into());
                }
                let _ = log.read_to_end(&mut seen);
                std::thread::sleep(Duration::from_micros(200));
            }
            let t0 = Instant::now();
            output(
                Command::new("swanctl").env("STRONGSWAN_CONF", conf).args([
                    "--initiate",
                    "--child",
                    "bench",
                    "--timeout",
                    "10",
                    "--uri",
                    &vici,
                ]),
                None,
            )?;
            Ok(t0.elapsed().as_secs_f64() * 1e6)
        }))
    }
}

impl Drop for StrongSwan {
    fn drop(&mut self) {
        // charon removes its policies, routes and TUN device on SIGTERM; its private /run
        // goes with its mount namespace.
        stop(&mut self.children);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A directory removed when dropped.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A process stopped when dropped.
struct Proc(Vec<Child>);

impl Drop for Proc {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

#[derive(Default)]
struct Figures {
    tcp_gbps: Vec<f64>,
    udp_kpps: Vec<f64>,
    /// The same with segmentation offloads off on every lab link.
    tcp_gbps_off: Vec<f64>,
    udp_kpps_off: Vec<f64>,
    /// CPU time of the whole machine (both cores: iperf3, kernel, daemons) per GB received in
    /// the TCP runs (offloads on).
    cpu_s_per_gb: Vec<f64>,
    /// New TCP connection, median of 20 (an established tunnel for the baselines).
    first_byte_us: Vec<f64>,
    /// CPU time of the path's `gscipd` daemons per new connection in those runs (the floor and
    /// GSCIP only): what a new flow costs the GEs (DPRP and every packet's crossing).
    first_byte_cpu_us: Vec<f64>,
    /// First TCP connection through a fresh tunnel (tunnels only).
    flow_start_us: Vec<f64>,
    /// strongSwan: IKEv2 on demand, from the dropped first packet to the SA up.
    setup_us: Vec<f64>,
}

/// CPU seconds the whole machine spent so far (user, nice, system, irq, softirq, steal).
fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).enumerate().filter(|(k, _)| matches!(k, 0 | 1 | 2 | 5 | 6 | 7)))
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    // USER_HZ is 100 on Linux (sysconf(_SC_CLK_TCK)).
    ticks as f64 / 100.0
}

/// The longest UDP packet-rate run, seconds.
const UDP_SECONDS_MAX: u32 = 2;

/// TCP and UDP runs through the path, into `tcp`, `udp` and (if given) `cpu`.
fn throughput(
    lab: &Lab,
    dst: &str,
    runs: usize,
    secs: u32,
    tcp: &mut Vec<f64>,
    udp: &mut Vec<f64>,
    mut cpu: Option<&mut Vec<f64>>,
) {
    let t = secs.to_string();
    for _ in 0..runs {
        let c0 = machine_cpu_seconds();
        let r = iperf(lab, secs, &["-c", dst, "-t", &t, "-J"]);
        let c1 = machine_cpu_seconds();
        tcp.push(r["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(f64::NAN) / 1e9);
        if let Some(cpu) = cpu.as_deref_mut() {
            let gb = r["end"]["sum_received"]["bytes"].as_f64().unwrap_or(f64::NAN) / 1e9;
            cpu.push(if gb > 0.0 { (c1 - c0) / gb } else { f64::NAN });
        }
        // The packet rate settles within a second: 2 s (at most) keep the whole bench, built
        // from a fresh clone, under 20 minutes.
        let udp_secs = secs.min(UDP_SECONDS_MAX);
        let r = iperf(lab, udp_secs, &["-c", dst, "-t", &udp_secs.to_string(), "-u", "-b", "0", "-l", "64", "-J"]);
        let pk = r["end"]["sum"]["packets"].as_f64().unwrap_or(f64::NAN);
        let lost = r["end"]["sum"]["lost_packets"].as_f64().unwrap_or(0.0);
        let secs_f = r["end"]["sum"]["seconds"].as_f64().unwrap_or(1.0).max(0.001);
        udp.push((pk - lost) / secs_f / 1e3);
    }
}

fn iperf(lab: &Lab, secs: u32, args: &[&str]) -> serde_json::Value {
    let limit = (secs + 20).to_string();
    let mut full = vec!["-k", "2", &limit, "iperf3", "--connect-timeout", "3000"];
    full.extend_from_slice(args);
    let out = lab.exec("a", "timeout", &full).unwrap_or_else(|e| {
        eprintln!("  iperf3 {}: {e}", args.join(" "));
        String::new()
    });
    serde_json::from_str(&out[out.find('{').unwrap_or(0)..]).unwrap_or(serde_json::Value::Null)
}

/// New TCP connections per first-byte run.
const FIRST_BYTE_CONNECTIONS: usize = 20;

/// The median time to the first byte of `n` new TCP connections from A to `dst`, in µs.
fn first_byte(lab: &Lab, work: &Path, dst: &str, n: usize, timeout_s: u32) -> Res<f64> {
    let limit = (n as u32 * (timeout_s + 1) + 10).to_string();
    let fb = work.join("fb.py");
    let (count, timeout) = (n.to_string(), timeout_s.to_string());
    let out = lab
        .exec("a", "timeout", &["-k", "2", &limit, "python3", &fb.to_string_lossy(), dst, "7000", &count, &timeout])
        .map_err(|e| e.to_string())?;
    let mut times: Vec<f64> = out.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if times.is_empty() || times.len() != n {
        return Err(format!("first byte: unexpected output {out:?}"));
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// One path of the benchmark.
struct Spec {
    name: &'static str,
    topo: Topo,
    /// Names the lab (`bn` + tag) and the tunnel interfaces.
    tag: &'static str,
    ges: bool,
    gen: bool,
    extra_config: &'static str,
    daemon_args: &'static [&'static str],
    tunnel: Option<Tunnel>,
    /// Only the first-byte figures (no throughput runs).
    first_byte_only: bool,
    /// A is an open GES (else closed): a GEN between an open initiator and the end GE waits
    /// for the CDN before it hands the flow to the kernel (docs/dprp.md section 9).
    open_a: bool,
}

const SPECS: [Spec; 15] = [
    Spec {
        name: "plain",
        topo: Topo::Hosts,
        tag: "plain",
        ges: false,
        gen: false,
        extra_config: "",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    // The floor: accept-only loops on the hooks a protected flow uses in steady state (A's and
    // B's OUTPUT/INPUT); R forwards in the kernel, as a GEN's fast path does.
    Spec {
        name: "nfqueue-floor",
        topo: Topo::Hosts,
        tag: "floor",
        ges: true,
        gen: false,
        extra_config: "",
        daemon_args: &["--accept-only"],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    // The same with NFQUEUE's GSO flag: packets up to 64 KiB reach the loops unsegmented (the
    // issue's "GSO floor"; GSCIP takes TCP the same way on its second queue and seals it in units).
    Spec {
        name: "nfqueue-floor-gso",
        topo: Topo::Hosts,
        tag: "flgso",
        ges: true,
        gen: false,
        extra_config: "",
        daemon_args: &["--accept-only", "--gso"],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "wireguard-go",
        topo: Topo::Hosts,
        tag: "wg",
        ges: false,
        gen: false,
        extra_config: "",
        daemon_args: &[],
        tunnel: Some(Tunnel::WireGuardGo),
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "boringtun",
        topo: Topo::Hosts,
        tag: "bt",
        ges: false,
        gen: false,
        extra_config: "",
        daemon_args: &[],
        tunnel: Some(Tunnel::Boringtun),
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "strongswan",
        topo: Topo::Hosts,
        tag: "swan",
        ges: false,
        gen: false,
        extra_config: "",
        daemon_args: &[],
        tunnel: Some(Tunnel::StrongSwan),
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "gscip-aes",
        topo: Topo::Hosts,
        tag: "aes",
        ges: true,
        gen: true,
        extra_config: "aead = \"aes-256-gcm\"",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "gscip-chacha",
        topo: Topo::Hosts,
        tag: "chacha",
        ges: true,
        gen: true,
        extra_config: "aead = \"chacha20-poly1305\"",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    // Path keys off: every new flow checks signatures, as the first flow on a path does (and
    // the first after a path key expired). First byte only.
    Spec {
        name: "gscip-aes-sigs",
        topo: Topo::Hosts,
        tag: "aessig",
        ges: true,
        gen: true,
        extra_config: "aead = \"aes-256-gcm\"\npath_key_lifetime_s = 0",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: true,
        open_a: false,
    },
    // A open: the GEN waits for each flow's CDN (first byte only).
    Spec {
        name: "gscip-aes-open-a",
        topo: Topo::Hosts,
        tag: "aesopa",
        ges: true,
        gen: true,
        extra_config: "aead = \"aes-256-gcm\"",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: true,
        open_a: true,
    },
    Spec {
        name: "gw-plain",
        topo: Topo::Gateways,
        tag: "gwpln",
        ges: false,
        gen: false,
        extra_config: "",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    // The gateways' floor: accept-only loops on both GENs' FORWARD hooks.
    Spec {
        name: "gw-nfqueue-floor",
        topo: Topo::Gateways,
        tag: "gwflr",
        ges: false,
        gen: true,
        extra_config: "",
        daemon_args: &["--accept-only"],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "gw-gscip-aes",
        topo: Topo::Gateways,
        tag: "gwaes",
        ges: false,
        gen: true,
        extra_config: "aead = \"aes-256-gcm\"",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "gw-gscip-chacha",
        topo: Topo::Gateways,
        tag: "gwcha",
        ges: false,
        gen: true,
        extra_config: "aead = \"chacha20-poly1305\"",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: false,
        open_a: false,
    },
    Spec {
        name: "gw-gscip-aes-sigs",
        topo: Topo::Gateways,
        tag: "gwsig",
        ges: false,
        gen: true,
        extra_config: "aead = \"aes-256-gcm\"\npath_key_lifetime_s = 0",
        daemon_args: &[],
        tunnel: None,
        first_byte_only: true,
        open_a: false,
    },
];

/// One path of the benchmark set up: its lab in namespaces named by `prefix` and, where the
/// path has GEs, their daemons.
struct Stand {
    // Fields drop in order: the daemons before the lab, the work dir last.
    daemons: Option<Processes>,
    lab: Lab,
    work: WorkDir,
    scenario: Scenario,
    prefix: String,
}

impl Stand {
    fn up(spec: &Spec, prefix: &str) -> Res<Stand> {
        let s = match spec.topo {
            Topo::Hosts => scenario(spec.ges, spec.gen, spec.open_a),
            Topo::Gateways => gateways(spec.gen),
        };
        let _ = clean(prefix);
        let mut opts = RunOptions::new(prefix);
        opts.extra_config = spec.extra_config.to_owned();
        opts.daemon_args = spec.daemon_args.iter().map(|a| a.to_string()).collect();
        let _ = std::fs::remove_dir_all(&opts.work_dir);
        std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
        let work = WorkDir(opts.work_dir.clone());
        std::fs::write(work.0.join("echo.py"), ECHO_SERVER).map_err(|e| e.to_string())?;
        std::fs::write(work.0.join("fb.py"), FIRST_BYTE_CLIENT).map_err(|e| e.to_string())?;
        let lab = Lab::build(&s, prefix).map_err(|e| e.to_string())?;
        // Every GE on the path (GESs at the ends, GENs in the middle) runs a daemon.
        let daemons = if spec.ges || spec.gen {
            Some(start_daemons(&s, &Topology::new(&s), &lab, &opts, None).map_err(|e| e.to_string())?)
        } else {
            None
        };
        Ok(Stand { daemons, lab, work, scenario: s, prefix: prefix.to_owned() })
    }

    /// The process ids of the path's daemons (none without GEs).
    fn daemon_pids(&self) -> Vec<u32> {
        if self.daemons.is_none() {
            return Vec::new();
        }
        self.scenario.nodes.iter().filter(|n| n.kind.is_ge()).filter_map(|n| daemon_pid(&self.lab, &n.name)).collect()
    }

    /// Starts the echo server of the first-byte runs on B, listening on `bind`, port 7000.
    fn echo(&self, bind: &str) -> Res<Proc> {
        let ns_b = namespace(&self.lab, "b")?;
        let mut echo = Command::new("ip")
            .args(["netns", "exec", ns_b, "python3"])
            .arg(self.work.0.join("echo.py"))
            .args([bind, "7000"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3: {e}"))?;
        let mut ready = [0u8; 6];
        let _ = echo.stdout.as_mut().map(|o| o.read(&mut ready));
        Ok(Proc(vec![echo]))
    }
}

fn measure(spec: &Spec, runs: usize, secs: u32) -> Res<Figures> {
    // Dropped in reverse order: the tunnel, servers and daemons before the lab, the work dir last.
    let stand = Stand::up(spec, &format!("bn{}", spec.tag))?;
    let (s, lab, work, prefix) = (&stand.scenario, &stand.lab, &stand.work, &stand.prefix);
    let ns_b = namespace(lab, "b")?.to_owned();
    let dst = spec.tunnel.map_or(spec.topo.destination(), Tunnel::destination);
    let mut f = Figures::default();

    // Established: the tunnel up (strongSwan: its SA initiated), then throughput, packet rate
    // and new connections through it.
    let tunnel = match spec.tunnel {
        Some(t) => Some(t.up(lab, prefix, &work.0, 0)?),
        None => None,
    };
    if let Some(Up::StrongSwan(swan)) = &tunnel {
        swan.initiate()?;
    }
    // GSCIP's daemons (not the floor's accept-only loops) have counters to report.
    let gscip = stand.daemons.is_some() && !spec.daemon_args.contains(&"--accept-only");
    if !spec.first_byte_only {
        let server = Proc(vec![Command::new("ip")
            .args(["netns", "exec", &ns_b, "iperf3", "-s", "-B", dst])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("iperf3: {e}"))?]);
        std::thread::sleep(Duration::from_millis(300));
        throughput(lab, dst, runs, secs, &mut f.tcp_gbps, &mut f.udp_kpps, Some(&mut f.cpu_s_per_gb));
        if gscip {
            report_counters(spec.name, s, &work.0, &UNIT_COUNTERS);
        }
        // Every path's: the lab's veth links reorder on their own (below), so GSCIP's figures
        // are read against the others'.
        report_sender_tcp(spec.name, lab);
        // The same with segmentation offloads off on every lab link: packets as a wire carries
        // them after a real NIC's TSO (one MTU each), then back to the veth defaults.
        lab.set_offloads(false).map_err(|e| e.to_string())?;
        throughput(lab, dst, runs, secs, &mut f.tcp_gbps_off, &mut f.udp_kpps_off, None);
        lab.set_offloads(true).map_err(|e| e.to_string())?;
        drop(server);
    }
    // The echo server listens on every address: a tunnel's address comes and goes with it.
    let _echo = stand.echo(if spec.tunnel.is_some() { "0.0.0.0" } else { dst })?;
    let pids = stand.daemon_pids();
    let daemons_cpu_ns = || pids.iter().filter_map(|&p| cpu_ns(p)).sum::<u64>();
    for run in 1..=runs {
        let c0 = daemons_cpu_ns();
        f.first_byte_us.push(first_byte(lab, &work.0, dst, FIRST_BYTE_CONNECTIONS, 5).unwrap_or_else(|e| {
            eprintln!("  {}: {e}", spec.name);
            f64::NAN
        }));
        if !pids.is_empty() {
            let per = daemons_cpu_ns().saturating_sub(c0) as f64 / 1e3 / FIRST_BYTE_CONNECTIONS as f64;
            f.first_byte_cpu_us.push(per);
        }
        if gscip {
            report_counters(&format!("{} after first-byte run {run}", spec.name), s, &work.0, &DPRP_COUNTERS);
        }
    }
    drop(tunnel);

    // Flow start: a fresh tunnel each time, and the first byte of its first connection.
    if let Some(t) = spec.tunnel {
        for run in 1..=runs {
            let up = t.up(lab, prefix, &work.0, run)?;
            let trigger = match &up {
                Up::StrongSwan(swan) => Some(swan.on_demand()?),
                Up::WireGuard(wg) if wg.handshaken() => return Err("a handshake before the first packet".into()),
                Up::WireGuard(_) => None,
            };
            let v = first_byte(lab, &work.0, dst, 1, 10);
            if let Some(trigger) = trigger {
                match trigger.join().unwrap_or_else(|_| Err("trigger panicked".into())) {
                    Ok(us) => f.setup_us.push(us),
                    Err(e) => eprintln!("  {}: {e}", spec.name),
                }
            }
            f.flow_start_us.push(v.unwrap_or_else(|e| {
                eprintln!("  {}: flow start: {e}", spec.name);
                f64::NAN
            }));
        }
    }
    Ok(f)
}

/// Rounds of the paired first-byte measurement, each one run of new connections through the
/// floor and one through GSCIP.
const PAIRED_ROUNDS: usize = 9;

/// DPRP's cost to a new flow's first byte, measured in pairs.
#[derive(Default)]
struct PairedFigures {
    /// Each round's GSCIP first byte minus the floor's, µs.
    added_us: Vec<f64>,
    /// Each round's ping round trip A — B, µs (the floor queues no echo: the kernel's RTT).
    rtt_us: Vec<f64>,
    /// Each round's GSCIP first byte (median of the round's connections), µs.
    gscip_us: Vec<f64>,
    /// Where a fresh tunnel stands beside them: each round's first connection through a
    /// tunnel brought up fresh for it (handshake included), µs.
    fresh_us: Vec<f64>,
}

/// One paired comparison: the floor's path and GSCIP AES's (every GE closed), the tags that
/// name their labs, and on the hosts path the tunnel whose fresh first connection stands beside
/// them (the faster WireGuard in every run so far), with its lab's tag.
struct PairedPath {
    floor: &'static str,
    gscip: &'static str,
    tags: [&'static str; 2],
    fresh: Option<(&'static str, &'static str)>,
}

const PAIRED_PATHS: [PairedPath; 2] = [
    PairedPath { floor: "nfqueue-floor", gscip: "gscip-aes", tags: ["pfl", "pgs"], fresh: Some(("boringtun", "pbt")) },
    PairedPath { floor: "gw-nfqueue-floor", gscip: "gw-gscip-aes", tags: ["qfl", "qgs"], fresh: None },
];

/// The floor's lab and GSCIP's stand side by side, and runs of [`FIRST_BYTE_CONNECTIONS`] new
/// connections alternate between them, the order swapped every round: both meet the machine
/// in the same minute, which the separate runs above cannot promise (their first-byte figures
/// move by hundreds of µs between minutes).
///
/// With a fresh tunnel, its lab stands beside them too, and each round also brings a tunnel up
/// fresh and times the first connection through it (handshake included), before, between or
/// after the other two in turn: a new GSCIP flow against a fresh WireGuard tunnel in the same
/// minute. Its
/// failures are reported and leave its figure out, not the floor's pairing.
fn measure_paired(paired: &PairedPath, rounds: usize) -> Res<PairedFigures> {
    let spec = |name: &str| SPECS.iter().find(|s| s.name == name).ok_or_else(|| format!("no path {name}"));
    let (floor, gscip) = (spec(paired.floor)?, spec(paired.gscip)?);
    let tags = paired.tags;
    let stands = [Stand::up(floor, &format!("bn{}", tags[0]))?, Stand::up(gscip, &format!("bn{}", tags[1]))?];
    let dst = gscip.topo.destination();
    let _echo = [stands[0].echo(dst)?, stands[1].echo(dst)?];
    let fresh = match paired.fresh {
        Some((name, tag)) => {
            let spec = spec(name)?;
            let tunnel = spec.tunnel.ok_or_else(|| format!("{name} is not a tunnel"))?;
            let stand = Stand::up(spec, &format!("bn{tag}"))?;
            // The tunnel's address comes and goes with it.
            let echo = stand.echo("0.0.0.0")?;
            Some((name, tunnel, stand, echo))
        }
        None => None,
    };
    let mut f = PairedFigures::default();
    for round in 0..rounds {
        let mut us = [f64::NAN; 2];
        let order = [round % 2, 1 - round % 2];
        // The fresh tunnel first, between the other two or last, round by round.
        for slot in 0..3 {
            if let Some((name, tunnel, stand, _)) = fresh.as_ref().filter(|_| slot == round % 3) {
                f.fresh_us.push(fresh_first_byte(stand, *tunnel, round).unwrap_or_else(|e| {
                    eprintln!("  {name}: fresh tunnel, paired: {e}");
                    f64::NAN
                }));
            }
            if let Some(&k) = order.get(slot) {
                us[k] = first_byte(&stands[k].lab, &stands[k].work.0, dst, FIRST_BYTE_CONNECTIONS, 5)?;
            }
        }
        f.added_us.push(us[1] - us[0]);
        f.gscip_us.push(us[1]);
        f.rtt_us.push(ping_rtt_us(&stands[0].lab, dst)?);
    }
    Ok(f)
}

/// Brings `tunnel` up fresh on `stand`'s lab (no handshake yet), times the first byte of the
/// first connection through it, and takes it down.
fn fresh_first_byte(stand: &Stand, tunnel: Tunnel, n: usize) -> Res<f64> {
    let up = tunnel.up(&stand.lab, &stand.prefix, &stand.work.0, n)?;
    if let Up::WireGuard(wg) = &up {
        if wg.handshaken() {
            return Err("a handshake before the first packet".into());
        }
    }
    first_byte(&stand.lab, &stand.work.0, tunnel.destination(), 1, 10)
}

/// The average round trip of 20 pings from A to `dst`, µs.
fn ping_rtt_us(lab: &Lab, dst: &str) -> Res<f64> {
    let out = lab.exec("a", "ping", &["-c", "20", "-i", "0.01", "-q", dst]).map_err(|e| e.to_string())?;
    // "rtt min/avg/max/mdev = 0.041/0.057/0.090/0.011 ms"
    out.lines()
        .find_map(|l| l.split_once(" = ").filter(|(k, _)| k.contains("min/avg")).map(|(_, v)| v.split('/').nth(1)))
        .flatten()
        .and_then(|avg| avg.parse::<f64>().ok())
        .map(|ms| ms * 1e3)
        .ok_or_else(|| format!("ping: unexpected output {out:?}"))
}

/// What each GE did with units during the throughput runs (a diagnosis of the figures, not a
/// figure): how often flows switched to sealing segment by segment and back, units put together from
/// pieces, pieces dropped, failures.
const UNIT_COUNTERS: [&str; 6] =
    ["flows_segmented", "flows_back_to_units", "units_reassembled", "pieces_dropped", "units_failed", "auth_failures"];

/// What each GE's negotiations cost, counted since it started (after each first-byte run: a
/// run whose flows check signatures where path keys would do shows here).
const DPRP_COUNTERS: [&str; 9] = [
    "negotiations_started",
    "negotiations_failed",
    "negotiations_marked",
    "signatures_verified",
    "macs_verified",
    "path_keys_derived",
    "agreements_ahead_used",
    "negotiations_joined_at_rgi",
    "mpits_copied",
];

/// Prints the named counters of every GE of the path (to stderr, with `label`).
fn report_counters(label: &str, s: &Scenario, work: &Path, fields: &[&str]) {
    for n in s.nodes.iter().filter(|n| n.kind.is_ge()) {
        let read = || -> std::io::Result<serde_json::Value> {
            let mut c = std::os::unix::net::UnixStream::connect(work.join(format!("{}.sock", n.name)))?;
            c.set_read_timeout(Some(Duration::from_secs(5)))?;
            c.write_all(b"status")?;
            let mut text = String::new();
            c.read_to_string(&mut text)?;
            serde_json::from_str(&text).map_err(std::io::Error::other)
        };
        match read() {
            Ok(v) => {
                let c = &v["counters"];
                let fields: Vec<String> = fields.iter().map(|k| format!("{k} {}", c[*k])).collect();
                eprintln!("  {label}: {}: {}", n.name, fields.join(", "));
            }
            Err(e) => eprintln!("  {label}: {}: no status: {e}", n.name),
        }
    }
}

/// Prints the sending host's TCP loss recovery during the throughput runs (to stderr, with
/// the GE counters above): retransmitted segments, tail loss probes, timeouts, and what shows a
/// retransmission to have been needless: reordering the sender detected (SACK) and retransmitted
/// segments the receiver reported as duplicates (DSACK). On this machine's veth links plain
/// forwarding reorders too (a sender or a verdict moving between vCPUs queues packets on
/// another CPU's backlog), and nearly every retransmission there is a DSACKed one.
fn report_sender_tcp(name: &str, lab: &Lab) {
    let Ok(ns) = namespace(lab, "a") else { return };
    let Ok(text) = output(Command::new("ip").args(["netns", "exec", ns, "nstat", "-az"]), None) else { return };
    let wanted = [
        "TcpRetransSegs",
        "TcpExtTCPLossProbes",
        "TcpExtTCPTimeouts",
        "TcpExtTCPSACKReorder",
        "TcpExtTCPDSACKRecv",
        "TcpExtTCPDSACKRecvSegs",
        "TcpExtTCPSpuriousRTOs",
    ];
    let fields: Vec<String> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (k, v) = (w.next()?, w.next()?);
            wanted.contains(&k).then(|| format!("{k} {v}"))
        })
        .collect();
    eprintln!("  {name}: a (sender): {}", fields.join(", "));
}

/// New flows at once through one GEN.
const MANY_FLOWS: u64 = 10_000;

#[derive(Default)]
struct ManyFlowFigures {
    /// Flows per second from the first sent to the last delivered: GSCIP (Term — GEN — GES,
    /// DPRP for every flow) and plain (Term — router — Term).
    rate: Vec<f64>,
    plain_rate: Vec<f64>,
    /// First packets that never arrived (held and lost, or dropped).
    lost: Vec<f64>,
    /// Growth of the GEN daemon's resident memory per flow, KiB (its PIT entries, and what
    /// the allocator kept of the held packets' buffers).
    kib_per_flow: Vec<f64>,
    /// The GEN daemon's peak resident memory, MiB.
    peak_mib: Vec<f64>,
}

/// [`MANY_FLOWS`] new UDP flows at once from A, `runs` times, each in a fresh lab.
fn measure_many_flows(runs: usize) -> Res<ManyFlowFigures> {
    let mut f = ManyFlowFigures::default();
    for gscip in [true, false] {
        let s = path(PathEnd::Term, gscip, if gscip { PathEnd::ClosedGes } else { PathEnd::Term });
        let prefix = if gscip { "bnflows" } else { "bnflowsp" };
        for _ in 0..runs {
            let _ = clean(prefix);
            let opts = RunOptions::new(prefix);
            let _ = std::fs::remove_dir_all(&opts.work_dir);
            std::fs::create_dir_all(&opts.work_dir).map_err(|e| e.to_string())?;
            let work = WorkDir(opts.work_dir.clone());
            let lab = Lab::build(&s, prefix).map_err(|e| e.to_string())?;
            let daemons = if gscip {
                Some(start_daemons(&s, &Topology::new(&s), &lab, &opts, None).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let pid = if gscip { gscip_lab::load::daemon_pid(&lab, "r") } else { None };
            let before = pid.and_then(gscip_lab::load::memory_kib);
            let r = gscip_lab::load::many_flows(&lab, &work.0, "a", "b", PATH_B, MANY_FLOWS, "bench-flow", 120)
                .map_err(|e| e.to_string())?;
            let after = pid.and_then(gscip_lab::load::memory_kib);
            let rate = r.received as f64 / r.seconds;
            if gscip {
                f.rate.push(rate);
                f.lost.push((MANY_FLOWS - r.received.min(MANY_FLOWS)) as f64);
                if let (Some(b), Some(a)) = (before, after) {
                    f.kib_per_flow.push(a.0.saturating_sub(b.0) as f64 / MANY_FLOWS as f64);
                    f.peak_mib.push(a.1 as f64 / 1024.0);
                }
            } else {
                f.plain_rate.push(rate);
            }
            drop(daemons);
            drop(lab);
            drop(work);
        }
    }
    Ok(f)
}

impl Figures {
    /// Whether every run gave a figure.
    fn complete(&self, tunnel: Option<Tunnel>) -> bool {
        let all = |v: &[f64]| v.iter().all(|x| x.is_finite());
        let mut ok = all(&self.tcp_gbps) && all(&self.udp_kpps) && all(&self.first_byte_us);
        ok &= all(&self.tcp_gbps_off) && all(&self.udp_kpps_off) && all(&self.cpu_s_per_gb);
        if tunnel.is_some() {
            ok &= all(&self.flow_start_us);
        }
        if tunnel == Some(Tunnel::StrongSwan) {
            ok &= self.setup_us.len() == self.flow_start_us.len();
        }
        ok
    }
}

/// Min, median and max of the finite values; NaN when there are none.
fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    s.sort_by(f64::total_cmp);
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Metric {
    Tcp,
    Udp,
    TcpOffloadsOff,
    UdpOffloadsOff,
    CpuPerGb,
    FirstByte,
    FirstByteCpu,
    FlowStart,
}

impl Metric {
    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Tcp | Metric::Udp | Metric::TcpOffloadsOff | Metric::UdpOffloadsOff)
    }
}

/// A path's median for a metric. Without a tunnel every new connection is a fresh flow (DPRP
/// included for GSCIP): its flow start is its first-byte figure.
fn value(name: &str, f: &Figures, m: Metric) -> f64 {
    let tunnel = SPECS.iter().any(|s| s.name == name && s.tunnel.is_some());
    match m {
        Metric::Tcp => stats(&f.tcp_gbps).1,
        Metric::Udp => stats(&f.udp_kpps).1,
        Metric::TcpOffloadsOff => stats(&f.tcp_gbps_off).1,
        Metric::UdpOffloadsOff => stats(&f.udp_kpps_off).1,
        Metric::CpuPerGb => stats(&f.cpu_s_per_gb).1,
        Metric::FirstByte => stats(&f.first_byte_us).1,
        Metric::FirstByteCpu => stats(&f.first_byte_cpu_us).1,
        Metric::FlowStart if tunnel => stats(&f.flow_start_us).1,
        Metric::FlowStart => stats(&f.first_byte_us).1,
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let secs: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(4).max(1);
    let only: Option<Vec<String>> =
        std::env::var("BENCH_LAB_PATHS").ok().map(|v| v.split(',').map(|s| s.trim().to_owned()).collect());
    if let Err(e) = gscip_lab::check_environment() {
        eprintln!("gscip-lab-bench: {e}");
        std::process::exit(2);
    }
    let started = Instant::now();
    let mut failed = false;
    let mut paths: Vec<(&str, Figures)> = Vec::new();
    for spec in &SPECS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|n| n == spec.name)) {
            continue;
        }
        eprintln!("gscip-lab-bench: {} ({} s so far)", spec.name, started.elapsed().as_secs());
        match measure(spec, runs, secs) {
            Ok(f) => {
                if !f.complete(spec.tunnel) {
                    eprintln!("gscip-lab-bench: {}: some runs failed (see above)", spec.name);
                    failed = true;
                }
                paths.push((spec.name, f));
            }
            Err(e) => {
                eprintln!("gscip-lab-bench: {}: not measured: {e}", spec.name);
                failed = true;
                paths.push((spec.name, Figures::default()));
            }
        }
    }
    let get = |name: &str| paths.iter().find(|(n, _)| *n == name).map(|(_, f)| f);
    let many = if only.as_ref().is_none_or(|o| o.iter().any(|n| n == "flows")) {
        eprintln!("gscip-lab-bench: {MANY_FLOWS} new flows ({} s so far)", started.elapsed().as_secs());
        match measure_many_flows(runs) {
            Ok(m) => Some(m),
            Err(e) => {
                eprintln!("gscip-lab-bench: many flows: not measured: {e}");
                failed = true;
                None
            }
        }
    } else {
        None
    };
    let mut paired: Vec<(&str, Option<&str>, PairedFigures)> = Vec::new();
    if only.as_ref().is_none_or(|o| o.iter().any(|n| n == "paired")) {
        for p in &PAIRED_PATHS {
            let name = p.gscip;
            eprintln!("gscip-lab-bench: {name} against the floor, paired ({} s so far)", started.elapsed().as_secs());
            match measure_paired(p, PAIRED_ROUNDS) {
                Ok(f) => paired.push((name, p.fresh.map(|(tunnel, _)| tunnel), f)),
                Err(e) => {
                    eprintln!("gscip-lab-bench: {name}: paired first byte not measured: {e}");
                    failed = true;
                }
            }
        }
    }

    let num = |x: f64, prec: usize| if x.is_finite() { format!("{x:.prec$}") } else { "-".into() };
    let three = |v: &[f64], prec: usize| {
        let (a, b, c) = stats(v);
        format!("{:>8} {:>8} {:>8}", num(a, prec), num(b, prec), num(c, prec))
    };
    for (topo, title) in [
        (Topo::Hosts, "A — R — B (GSCIP: GES — GEN — GES)"),
        (Topo::Gateways, "A — GA — GB — B (GSCIP: Term — GEN — GEN — Term)"),
    ] {
        let on_path: Vec<&(&str, Figures)> =
            paths.iter().filter(|(n, _)| SPECS.iter().any(|s| s.name == *n && s.topo == topo)).collect();
        if on_path.is_empty() {
            continue;
        }
        println!("\n{title}, {runs} runs of {secs} s each (min / median / max)\n");
        println!(
            "{:<17} {:>26} {:>26} {:>26} {:>26}",
            "path", "TCP 1 stream, Gbit/s", "UDP 64 B, kpps", "first byte, new TCP, µs", "flow start, fresh tunnel, µs"
        );
        for (name, f) in &on_path {
            println!(
                "{name:<17} {} {} {} {}",
                three(&f.tcp_gbps, 2),
                three(&f.udp_kpps, 0),
                three(&f.first_byte_us, 0),
                three(&f.flow_start_us, 0)
            );
        }
        println!(
            "\n{:<17} {:>26} {:>26} {:>26}",
            "offloads off", "TCP 1 stream, Gbit/s", "UDP 64 B, kpps", "CPU s per GB (TCP, on)"
        );
        for (name, f) in &on_path {
            println!(
                "{name:<17} {} {} {}",
                three(&f.tcp_gbps_off, 2),
                three(&f.udp_kpps_off, 0),
                three(&f.cpu_s_per_gb, 1)
            );
        }
        println!("\n{:<17} {:>26}", "daemons", "CPU µs per new TCP conn.");
        for (name, f) in on_path.iter().filter(|(_, f)| !f.first_byte_cpu_us.is_empty()) {
            println!("{name:<17} {}", three(&f.first_byte_cpu_us, 0));
        }
    }
    println!(
        "\nfirst byte: median of 20 new connections; through the tunnels' established tunnel or SA.\n\
         flow start: the first connection through a fresh tunnel, handshake included (strongSwan:\n\
         IKEv2 on demand, started by the first packet, which is dropped). Plain, the floor and\n\
         GSCIP have no tunnel: each new connection is a fresh flow, their flow start is their first\n\
         byte (DPRP included for GSCIP). GSCIP's GEs check each other's signatures on a path's first\n\
         flow and use path keys for the next ones (docs/dprp.md section 11); the -sigs paths have path\n\
         keys off, so every flow there costs what a path's first flow costs."
    );
    if let Some(m) = &many {
        println!(
            "\n{MANY_FLOWS} new UDP flows at once from A through one GEN (Term — GEN — GES; plain: Term — router — Term)\n"
        );
        println!("{:<44} {}", "setup rate, GSCIP (DPRP per flow), flows/s", three(&m.rate, 0));
        println!("{:<44} {}", "setup rate, plain forwarding, flows/s", three(&m.plain_rate, 0));
        println!("{:<44} {}", "first packets lost", three(&m.lost, 0));
        println!("{:<44} {}", "GEN gscipd memory growth per flow, KiB", three(&m.kib_per_flow, 1));
        println!("{:<44} {}", "GEN gscipd peak memory, MiB", three(&m.peak_mib, 0));
    }
    if !paired.is_empty() {
        println!(
            "\nDPRP's cost to the first byte, paired: GSCIP AES (all closed) minus the floor, {PAIRED_ROUNDS} rounds \
             of {FIRST_BYTE_CONNECTIONS} connections\nthrough each, alternating, the two labs side by side; \
             the mark is 1 RTT (ping A — B, same rounds) + 200 µs\n"
        );
        println!("{:<17} {:>26} {:>10} {:>10}", "path", "added µs", "RTT µs", "mark µs");
        for (name, _, p) in &paired {
            let rtt = stats(&p.rtt_us).1;
            println!("{name:<17} {} {:>10} {:>10}", three(&p.added_us, 0), num(rtt, 0), num(rtt + 200.0, 0));
        }
        for (name, fresh, f) in &paired {
            let Some(tunnel) = fresh else { continue };
            let (gscip, (lo, fresh, hi)) = (stats(&f.gscip_us).1, stats(&f.fresh_us));
            let fresh_n = f.fresh_us.iter().filter(|v| v.is_finite()).count();
            println!(
                "a new {name} flow against the first connection through a fresh {tunnel} tunnel (handshake \
                 included), the same rounds: {} against {} µs (medians; {tunnel}: {} / {} / {}, {fresh_n} tunnels)",
                num(gscip, 0),
                num(fresh, 0),
                num(lo, 0),
                num(fresh, 0),
                num(hi, 0)
            );
        }
    }
    if let Some(f) = get("strongswan") {
        let s = stats(&f.setup_us);
        println!(
            "strongswan: IKEv2 on demand, from the dropped first packet to the SA up (swanctl --initiate \
             included): {} / {} / {} µs",
            num(s.0, 0),
            num(s.1, 0),
            num(s.2, 0)
        );
    }
    println!();

    let mut rows = Vec::new();
    let mut row = |metric: &str, unit: &str, name: &str, v: f64, base: &str, b: f64| {
        let ratio = if b > 0.0 { v / b } else { f64::NAN };
        let prec = if ratio.abs() < 0.1 { 4 } else { 2 };
        println!("{metric}: {name} {v:.2} {unit} vs {base} {b:.2} {unit}: ratio {ratio:.prec$}");
        rows.push(serde_json::json!({
            "name": format!("{metric}, {name}"), "value": v, "unit": unit,
            "baseline": base, "baseline_value": b, "ratio": ratio,
        }));
    };
    for (metric, unit, m) in [
        ("TCP single-stream throughput", "Gbit/s", Metric::Tcp),
        ("UDP packet rate (64-byte datagrams)", "kpps", Metric::Udp),
        ("TCP single-stream throughput, segmentation offloads off", "Gbit/s", Metric::TcpOffloadsOff),
        ("UDP packet rate (64-byte datagrams), segmentation offloads off", "kpps", Metric::UdpOffloadsOff),
        ("CPU seconds per GB transferred (whole machine, TCP)", "s/GB", Metric::CpuPerGb),
        ("time to first byte of a new TCP connection", "us", Metric::FirstByte),
        (
            "CPU of the path's gscipd daemons per new TCP connection (DPRP and every crossing)",
            "us",
            Metric::FirstByteCpu,
        ),
        (
            "flow start: time to first byte of the first TCP connection through a fresh tunnel (handshake included)",
            "us",
            Metric::FlowStart,
        ),
    ] {
        let val = |name: &str| get(name).map_or(f64::NAN, |f| value(name, f, m));
        // The faster of wireguard-go and boringtun on this metric.
        let wireguard = ["wireguard-go", "boringtun"]
            .into_iter()
            .map(|n| (n, val(n)))
            .filter(|(_, v)| v.is_finite())
            .reduce(|x, y| if (y.1 > x.1) == m.higher_is_better() && y.1 != x.1 { y } else { x });
        let hosts = [
            "nfqueue-floor",
            "nfqueue-floor-gso",
            "wireguard-go",
            "boringtun",
            "strongswan",
            "gscip-aes",
            "gscip-chacha",
            "gscip-aes-sigs",
            "gscip-aes-open-a",
        ];
        let gateways = ["gw-nfqueue-floor", "gw-gscip-aes", "gw-gscip-chacha", "gw-gscip-aes-sigs"];
        for (names, plain, floor) in
            [(&hosts[..], "plain", "nfqueue-floor"), (&gateways[..], "gw-plain", "gw-nfqueue-floor")]
        {
            for &name in names {
                let a_floor = name.contains("floor");
                if m == Metric::FlowStart && a_floor {
                    continue; // the same figure as its first byte
                }
                let v = val(name);
                if !v.is_finite() {
                    continue;
                }
                let mut bases: Vec<(String, f64)> = Vec::new();
                for base in [plain, floor] {
                    if base != name {
                        bases.push((base.to_owned(), val(base)));
                    }
                }
                // GSCIP's hosts figures also face the GSO floor (the issue's goal beyond the floor).
                if plain == "plain" && name.starts_with("gscip") {
                    bases.push(("nfqueue-floor-gso".to_owned(), val("nfqueue-floor-gso")));
                }
                // The tunnels run on the hosts path only: GSCIP's hosts figures face them.
                let vs_tunnels = plain == "plain" && (name.starts_with("gscip") || a_floor);
                if vs_tunnels {
                    if let Some((w, b)) = wireguard {
                        bases.push((format!("{w} (the faster of wireguard-go and boringtun)"), b));
                    }
                }
                if vs_tunnels && !a_floor {
                    bases.push(("strongswan".to_owned(), val("strongswan")));
                }
                for (base, b) in bases {
                    if b.is_finite() {
                        row(metric, unit, name, v, &base, b);
                    }
                }
            }
        }
    }
    for (name, _, p) in &paired {
        let (added, rtt) = (stats(&p.added_us).1, stats(&p.rtt_us).1);
        if added.is_finite() && rtt.is_finite() {
            row(
                "time DPRP adds to the first byte of a new TCP connection (paired against the floor, same minute)",
                "us",
                name,
                added,
                "mark: 1 RTT + 200 us (ping RTT of the same rounds)",
                rtt + 200.0,
            );
        }
    }
    for (name, fresh, f) in &paired {
        let Some(tunnel) = fresh else { continue };
        let (gscip, fresh) = (stats(&f.gscip_us).1, stats(&f.fresh_us).1);
        if gscip.is_finite() && fresh.is_finite() {
            row(
                "time to the first byte of a new flow (paired with a fresh tunnel's first connection, same rounds)",
                "us",
                name,
                gscip,
                &format!("{tunnel}, first connection through a fresh tunnel (handshake included)"),
                fresh,
            );
        }
    }
    if let Some(m) = &many {
        let (rate, plain) = (stats(&m.rate).1, stats(&m.plain_rate).1);
        if rate.is_finite() && plain.is_finite() {
            row("new flows through one GEN (10,000 at once): setup rate", "flows/s", "gscip-aes", rate, "plain", plain);
        }
        for (name, unit, v) in [
            ("new flows through one GEN (10,000 at once): first packets lost, gscip-aes", "packets", stats(&m.lost).1),
            (
                "new flows through one GEN (10,000 at once): GEN gscipd memory growth per flow, gscip-aes",
                "KiB",
                stats(&m.kib_per_flow).1,
            ),
        ] {
            if v.is_finite() {
                println!("{name}: {v:.1} {unit}");
                rows.push(serde_json::json!({
                    "name": name, "value": v, "unit": unit, "baseline": null, "baseline_value": null, "ratio": null,
                }));
            }
        }
    }
    if let Some(f) = get("strongswan") {
        let v = stats(&f.setup_us).1;
        if v.is_finite() {
            let name =
                "IKEv2 set-up on demand, strongswan (dropped first packet to SA up, swanctl --initiate included)";
            println!("{name}: {v:.0} us");
            rows.push(serde_json::json!({
                "name": name, "value": v, "unit": "us", "baseline": null, "baseline_value": null, "ratio": null,
            }));
        }
    }
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/lab.json", serde_json::to_string_pretty(&rows).unwrap_or_default());
    println!("\nwritten: target/bench/lab.json ({} s)", started.elapsed().as_secs());
    if failed {
        eprintln!("gscip-lab-bench: some paths could not be measured (see above)");
        std::process::exit(1);
    }
}

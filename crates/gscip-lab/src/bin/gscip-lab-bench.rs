//! `make bench`, the lab part: the path A — R — B in network namespaces, measured in one run
//! for each of:
//!
//! * **plain**: kernel forwarding, no GSCIP (the limit);
//! * **nfqueue-floor**: an accept-only NFQUEUE loop (`gscipd --accept-only`) on the hooks a
//!   protected flow uses in steady state (A's and B's OUTPUT/INPUT; R forwards in the kernel,
//!   as a GEN's fast path does), fail-closed (the architecture's floor);
//! * **gscip-aes**, **gscip-chacha**: GES A and GES B protect the flow with PCCOM
//!   (AES-256-GCM, ChaCha20-Poly1305), the GEN R relays it (kernel fast path).
//!
//! Figures: single-stream TCP throughput and UDP packet rate (iperf3), and the time to the
//! first byte of a new TCP connection (DPRP negotiation included), each RUNS times
//! (min/median/max). Prints a table with ratios against plain and the floor, and writes
//! `target/bench/lab.json` (`[{"name", "value", "unit", "baseline", "baseline_value", "ratio"}]`).
//! * **wireguard-go** (Debian): a WireGuard tunnel between A and B over the same path (the
//!   first named baseline of issue "Performance"; boringtun and strongSwan are still to come).

use gscip_lab::run::{start_daemons, RunOptions};
use gscip_lab::{clean, Lab};
use gscip_sim::topology::Topology;
use gscip_sim::Scenario;
use std::process::{Command, Stdio};
use std::time::Duration;

const PATH: &str = r#"
name = "bench"
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
kind = "KIND_A"
MODE_A
interfaces = [{ subnet = "left", address = "10.50.1.2" }]
gateway = "10.50.1.1"
[[node]]
name = "r"
kind = "KIND_R"
MODE_R
interfaces = [{ subnet = "left", address = "10.50.1.1", inside = INSIDE }, { subnet = "right", address = "10.50.2.1" }]
[[node]]
name = "b"
kind = "KIND_B"
MODE_B
interfaces = [{ subnet = "right", address = "10.50.2.2" }]
gateway = "10.50.2.1"
"#;

/// The path: GESs at the ends or plain hosts, a GEN or a plain router in the middle.
fn scenario(ges: bool, gen: bool) -> Scenario {
    let ge = |kind: &str, mode: &str| (kind.to_owned(), format!("mode = \"{mode}\"\ngroups = [1]"));
    let (ka, ma) = if ges { ge("ges", "open") } else { ("term".into(), String::new()) };
    let (kr, mr) = if gen { ge("gen", "closed") } else { ("router".into(), String::new()) };
    let (kb, mb) = if ges { ge("ges", "closed") } else { ("term".into(), String::new()) };
    let text = PATH
        .replace("KIND_A", &ka)
        .replace("MODE_A", &ma)
        .replace("KIND_R", &kr)
        .replace("MODE_R", &mr)
        .replace("KIND_B", &kb)
        .replace("MODE_B", &mb)
        .replace("INSIDE", if gen { "true" } else { "false" });
    Scenario::parse(&text, "bench.toml").expect("bench scenario")
}

struct Figures {
    tcp_gbps: Vec<f64>,
    udp_kpps: Vec<f64>,
    first_byte_us: Vec<f64>,
}

/// A wireguard-go tunnel between A (10.60.0.1) and B (10.60.0.2) over the path; stopped when
/// dropped. Interface names differ per end (wireguard-go's control sockets are shared).
struct WireGuard {
    prefix: String,
}

impl WireGuard {
    fn up(lab: &Lab, prefix: &str) -> WireGuard {
        let sh = |cmd: String| {
            let ok = Command::new("sh").arg("-c").arg(&cmd).status().map(|s| s.success()).unwrap_or(false);
            assert!(ok, "wireguard setup failed: {cmd} (apt-get install wireguard-go wireguard-tools)");
        };
        let (a, b) = (lab.namespace("a").unwrap().to_owned(), lab.namespace("b").unwrap().to_owned());
        let (ia, ib) = (format!("{prefix}wa"), format!("{prefix}wb"));
        let key = |s: &str| {
            let out = Command::new("sh").arg("-c").arg(s).output().expect("wg");
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (ka, kb) = (key("wg genkey"), key("wg genkey"));
        let (pa, pb) = (key(&format!("echo {ka} | wg pubkey")), key(&format!("echo {kb} | wg pubkey")));
        sh(format!(
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec {a} wireguard-go {ia} >/dev/null 2>&1"
        ));
        sh(format!(
            "WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD=1 ip netns exec {b} wireguard-go {ib} >/dev/null 2>&1"
        ));
        std::thread::sleep(Duration::from_millis(300));
        sh(format!("ip netns exec {a} sh -c 'echo {ka} > /tmp/{ia}.key; wg set {ia} private-key /tmp/{ia}.key listen-port 51820 peer {pb} endpoint 10.50.2.2:51820 allowed-ips 10.60.0.2/32; rm /tmp/{ia}.key'"));
        sh(format!("ip netns exec {b} sh -c 'echo {kb} > /tmp/{ib}.key; wg set {ib} private-key /tmp/{ib}.key listen-port 51820 peer {pa} endpoint 10.50.1.2:51820 allowed-ips 10.60.0.1/32; rm /tmp/{ib}.key'"));
        sh(format!("ip -n {a} addr add 10.60.0.1/24 dev {ia} && ip -n {a} link set {ia} up"));
        sh(format!("ip -n {b} addr add 10.60.0.2/24 dev {ib} && ip -n {b} link set {ib} up"));
        WireGuard { prefix: prefix.to_owned() }
    }
}

impl Drop for WireGuard {
    fn drop(&mut self) {
        // The namespaces' removal stops the processes (Lab's teardown); the sockets stay.
        for end in ["wa", "wb"] {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}{end}.sock", self.prefix));
        }
    }
}

fn iperf(lab: &Lab, args: &[&str]) -> serde_json::Value {
    let out = lab.exec("a", "iperf3", args).unwrap_or_default();
    serde_json::from_str(&out[out.find('{').unwrap_or(0)..]).unwrap_or(serde_json::Value::Null)
}

const FIRST_BYTE: &str = r#"
import socket, sys, time
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ts = []
for i in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b"x"); s.recv(16)
    ts.append((time.perf_counter() - t0) * 1e6)
    s.close()
    time.sleep(0.01)
ts.sort()
print(ts[len(ts) // 2])
"#;

const ECHO: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.recv(16); c.sendall(b"y"); c.close()
"#;

#[allow(clippy::too_many_arguments)]
fn measure(
    name: &str,
    ges: bool,
    gen: bool,
    extra_config: &str,
    daemon_args: &[&str],
    wireguard: bool,
    runs: usize,
    secs: u32,
) -> Figures {
    let s = scenario(ges, gen);
    let prefix = format!("bn{}", &name[..name.len().min(4)].replace('-', ""));
    let _ = clean(&prefix);
    let lab = Lab::build(&s, &prefix).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut opts = RunOptions::new(&prefix);
    opts.extra_config = extra_config.to_owned();
    opts.daemon_args = daemon_args.iter().map(|a| a.to_string()).collect();
    std::fs::create_dir_all(&opts.work_dir).ok();
    let topo = Topology::new(&s);
    let daemons = if ges {
        Some(start_daemons(&s, &topo, &lab, &opts, None).unwrap_or_else(|e| panic!("{name}: {e}")))
    } else {
        None
    };
    let tunnel = wireguard.then(|| WireGuard::up(&lab, &prefix));
    let dst = if wireguard { "10.60.0.2" } else { "10.50.2.2" };
    let ns_b = lab.namespace("b").unwrap().to_owned();
    let mut server = Command::new("ip")
        .args(["netns", "exec", &ns_b, "iperf3", "-s", "-B", dst])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("iperf3");
    std::thread::sleep(Duration::from_millis(300));
    let t = secs.to_string();
    let mut f = Figures { tcp_gbps: vec![], udp_kpps: vec![], first_byte_us: vec![] };
    for _ in 0..runs {
        let tcp = iperf(&lab, &["-c", dst, "-t", &t, "-J"]);
        f.tcp_gbps.push(tcp["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9);
        let udp = iperf(&lab, &["-c", dst, "-t", &t, "-u", "-b", "0", "-l", "64", "-J"]);
        let pk = udp["end"]["sum"]["packets"].as_f64().unwrap_or(0.0);
        let lost = udp["end"]["sum"]["lost_packets"].as_f64().unwrap_or(0.0);
        let secs_f = udp["end"]["sum"]["seconds"].as_f64().unwrap_or(1.0).max(0.001);
        f.udp_kpps.push((pk - lost) / secs_f / 1e3);
    }
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    let work = opts.work_dir.clone();
    std::fs::write(work.join("echo.py"), ECHO).ok();
    std::fs::write(work.join("fb.py"), FIRST_BYTE).ok();
    let mut echo = Command::new("ip")
        .args(["netns", "exec", &ns_b, "python3"])
        .arg(work.join("echo.py"))
        .args([dst, "7000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = [0u8; 6];
    let _ = std::io::Read::read(echo.stdout.as_mut().unwrap(), &mut ready);
    for _ in 0..runs {
        let out =
            lab.exec("a", "python3", &[work.join("fb.py").to_str().unwrap(), dst, "7000", "20"]).unwrap_or_default();
        f.first_byte_us.push(out.trim().parse().unwrap_or(f64::NAN));
    }
    let _ = echo.kill();
    let _ = echo.wait();
    drop(daemons);
    drop(tunnel);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    f
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (s[0], s[s.len() / 2], s[s.len() - 1])
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let secs: u32 = std::env::var("BENCH_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    if let Err(e) = gscip_lab::check_environment() {
        eprintln!("gscip-lab-bench: {e}");
        std::process::exit(2);
    }
    let paths: Vec<(&str, Figures)> = vec![
        ("plain", measure("plain", false, false, "", &[], false, runs, secs)),
        // The floor: accept-only loops on the hooks a protected flow uses in steady state (A's
        // and B's OUTPUT/INPUT); R forwards in the kernel, as a GEN's fast path does.
        ("nfqueue-floor", measure("floor", true, false, "", &["--accept-only"], false, runs, secs)),
        ("wireguard-go", measure("wg", false, false, "", &[], true, runs, secs)),
        ("gscip-aes", measure("aes", true, true, "aead = \"aes-256-gcm\"", &[], false, runs, secs)),
        ("gscip-chacha", measure("chacha", true, true, "aead = \"chacha20-poly1305\"", &[], false, runs, secs)),
    ];
    let get = |name: &str| &paths.iter().find(|(n, _)| *n == name).expect("path").1;
    let mut rows = Vec::new();
    println!("\nA — R — B, {runs} runs of {secs} s each (min / median / max)\n");
    println!(
        "{:<16} {:>28} {:>28} {:>28}",
        "path", "TCP 1 stream, Gbit/s", "UDP 64 B, kpps", "first byte, new TCP, µs"
    );
    for (name, f) in &paths {
        let (t, u, b) = (stats(&f.tcp_gbps), stats(&f.udp_kpps), stats(&f.first_byte_us));
        println!(
            "{name:<16} {:>8.2} {:>8.2} {:>8.2}   {:>8.0} {:>8.0} {:>8.0}   {:>8.0} {:>8.0} {:>8.0}",
            t.0, t.1, t.2, u.0, u.1, u.2, b.0, b.1, b.2
        );
    }
    println!();
    for (metric, unit, pick) in [
        ("TCP single-stream throughput", "Gbit/s", 0usize),
        ("UDP packet rate (64-byte datagrams)", "kpps", 1),
        ("time to first byte of a new TCP connection", "us", 2),
    ] {
        let val = |f: &Figures| match pick {
            0 => stats(&f.tcp_gbps).1,
            1 => stats(&f.udp_kpps).1,
            _ => stats(&f.first_byte_us).1,
        };
        for name in ["nfqueue-floor", "wireguard-go", "gscip-aes", "gscip-chacha"] {
            for base in ["plain", "nfqueue-floor", "wireguard-go"] {
                if name == base {
                    continue;
                }
                let (v, b) = (val(get(name)), val(get(base)));
                let ratio = if b > 0.0 { v / b } else { f64::NAN };
                println!("{metric}: {name} {v:.2} {unit} vs {base} {b:.2} {unit}: ratio {ratio:.2}");
                rows.push(serde_json::json!({
                    "name": format!("{metric}, {name}"), "value": v, "unit": unit,
                    "baseline": base, "baseline_value": b, "ratio": ratio,
                }));
            }
        }
    }
    let _ = std::fs::create_dir_all("target/bench");
    let _ = std::fs::write("target/bench/lab.json", serde_json::to_string_pretty(&rows).unwrap_or_default());
    println!("\nwritten: target/bench/lab.json");
}

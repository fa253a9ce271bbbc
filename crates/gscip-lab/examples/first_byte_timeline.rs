//! Where the first byte of a new TCP connection spends its time, hop by hop (a diagnosis
//! tool, not a benchmark: `make bench` gives the figures).
//!
//! ```text
//! cargo build --release -p gscipd -p gscip-lab --examples
//! target/release/examples/first_byte_timeline [hosts|gateways] [gscip|floor|plain] [-n N] [--capture]
//!     [--config 'TOML LINE'] [--open-a]
//! ```
//!
//! Builds the bench's lab path (A — R — B: GES — GEN — GES, all closed, or with `--open-a` A an
//! open GES; or A — GA — GB — B: Term — GEN — GEN — Term) with GSCIP, the accept-only NFQUEUE floor or plain forwarding, opens N new TCP
//! connections from A to an echo server on B one after the other (10 ms apart, as the bench
//! does) and prints each one's time to the first byte, their median and quartiles, and the CPU
//! time the path's daemons spent per connection. With `--capture`, `tcpdump` runs in every
//! namespace and the tool prints the median connection's timeline: every packet as each node's
//! interfaces meet it (DPRP messages by type), with the time since the first and since the line
//! before, so a daemon's residence time is the gap between a packet arriving at its node and
//! leaving it; then the same steps with each gap's median and quartiles over all connections
//! (one connection is one draw; compare runs by these). The capture costs CPU itself (one
//! `tcpdump` per node on the lab's CPUs): compare timelines with timelines, and take the
//! figures from a run without it. Needs root, python3 and, for `--capture`, tcpdump; cleans
//! up after itself. `--config` appends a line to every
//! daemon's configuration, for A/B runs (e.g. `--config 'path_key_lifetime_s = 0'`).

use gscip_lab::load::{
    cpu_ns, daemon_pid, gateways, path, PathEnd, ECHO_SERVER, FIRST_BYTE_CLIENT, GATEWAYS_B, PATH_B,
};
use gscip_lab::run::{start_daemons, Processes, RunOptions};
use gscip_lab::{clean, Lab};
use gscip_sim::topology::Topology;
use gscip_sim::Scenario;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Options {
    gateways: bool,
    mode: &'static str,
    n: usize,
    capture: bool,
    config: String,
    open_a: bool,
}

fn options() -> Result<Options, String> {
    let mut o = Options { gateways: false, mode: "gscip", n: 40, capture: false, config: String::new(), open_a: false };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "hosts" => o.gateways = false,
            "gateways" => o.gateways = true,
            "gscip" => o.mode = "gscip",
            "floor" => o.mode = "floor",
            "plain" => o.mode = "plain",
            "--capture" => o.capture = true,
            "--open-a" => o.open_a = true,
            "--config" => {
                o.config.push_str(&args.next().ok_or("--config needs a TOML line")?);
                o.config.push('\n');
            }
            "-n" => {
                o.n = args.next().and_then(|v| v.parse().ok()).filter(|&n| n > 0).ok_or("-n needs a count")?;
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(o)
}

/// One packet as tcpdump showed it on a node.
struct Seen {
    at_ns: u128,
    node: String,
    line: String,
}

/// Reads `tcpdump -x` text: a summary line, then hex lines of the IP packet. DPRP messages get
/// their type (UDP payload byte 3) in front of the summary.
fn parse_capture(node: &str, text: &str) -> Vec<Seen> {
    let mut out: Vec<Seen> = Vec::new();
    let mut hex: Vec<u8> = Vec::new();
    let flush = |out: &mut Vec<Seen>, hex: &mut Vec<u8>| {
        if let Some(last) = out.last_mut() {
            if last.line.contains(".4398 > ") && hex.len() > 31 {
                let kind = ["?", "DDE", "RGI", "MPIT", "CDN"].get(hex[31] as usize).copied().unwrap_or("?");
                last.line = format!("{kind:<4} {}", last.line);
            }
        }
        hex.clear();
    };
    for l in text.lines() {
        let t = l.trim_start();
        if let Some(rest) = t.strip_prefix("0x") {
            if hex.len() < 64 {
                for word in rest.split_whitespace().skip(1) {
                    for k in (0..word.len()).step_by(2) {
                        if let Ok(b) = u8::from_str_radix(&word[k..(k + 2).min(word.len())], 16) {
                            hex.push(b);
                        }
                    }
                }
            }
            continue;
        }
        flush(&mut out, &mut hex);
        let mut parts = l.splitn(2, ' ');
        let (Some(ts), Some(rest)) = (parts.next(), parts.next()) else { continue };
        let Some((s, ns)) = ts.split_once('.') else { continue };
        let (Ok(s), Ok(ns)) = (s.parse::<u128>(), ns.parse::<u128>()) else { continue };
        if !rest.contains(" IP ") || rest.contains("ICMP6") || rest.starts_with("lo ") {
            continue;
        }
        let line: String = rest.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(100).collect();
        out.push(Seen { at_ns: s * 1_000_000_000 + ns, node: node.to_owned(), line });
    }
    flush(&mut out, &mut hex);
    out
}

fn main() {
    let o = match options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("first_byte_timeline: {e}\nusage: first_byte_timeline [hosts|gateways] [gscip|floor|plain] [-n N] [--capture] [--config 'TOML LINE'] [--open-a]");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&o) {
        eprintln!("first_byte_timeline: {e}");
        std::process::exit(1);
    }
}

fn run(o: &Options) -> Result<(), String> {
    let ges = o.mode != "plain";
    let (s, dst, nodes): (Scenario, &str, &[&str]) = if o.gateways {
        (gateways(ges), GATEWAYS_B, &["a", "ga", "gb", "b"])
    } else {
        let end = |e: PathEnd| if ges { e } else { PathEnd::Term };
        (
            path(end(if o.open_a { PathEnd::OpenGes } else { PathEnd::ClosedGes }), ges, end(PathEnd::ClosedGes)),
            PATH_B,
            &["a", "r", "b"],
        )
    };
    let prefix = "fbt";
    let _ = clean(prefix);
    let mut opts = RunOptions::new(prefix);
    opts.use_gms = false;
    // This example's own profile: target/PROFILE/examples/THIS -> target/PROFILE/gscipd.
    if let Some(dir) = std::env::current_exe().ok().and_then(|p| p.parent()?.parent().map(|d| d.to_owned())) {
        if std::env::var_os("GSCIPD").is_none() {
            opts.gscipd = dir.join("gscipd");
        }
    }
    opts.extra_config = o.config.clone();
    if o.mode == "floor" {
        opts.daemon_args = vec!["--accept-only".into()];
    }
    let work = opts.work_dir.clone();
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    std::fs::write(work.join("client.py"), FIRST_BYTE_CLIENT).map_err(|e| e.to_string())?;
    std::fs::write(work.join("echo.py"), ECHO_SERVER).map_err(|e| e.to_string())?;
    let lab = Lab::build(&s, prefix).map_err(|e| e.to_string())?;
    let daemons = if ges {
        Some(start_daemons(&s, &Topology::new(&s), &lab, &opts, None).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let ns = |n: &str| lab.namespace(n).map(str::to_owned).ok_or(format!("no namespace for {n}"));
    let mut echo = Command::new("ip")
        .args(["netns", "exec", &ns("b")?, "python3"])
        .arg(work.join("echo.py"))
        .args([dst, "7000"])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut ready = [0u8; 6];
    let _ = echo.stdout.as_mut().map(|out| out.read(&mut ready));
    // Stopped when dropped, before the lab goes.
    let mut procs = vec![Processes::one("echo", echo)];
    if o.capture {
        for node in nodes {
            let f = std::fs::File::create(work.join(format!("{node}.capture"))).map_err(|e| e.to_string())?;
            let dump = Command::new("ip")
                .args(["netns", "exec", &ns(node)?, "tcpdump", "-i", "any", "-nn", "-tt", "-x", "-l"])
                .args(["--time-stamp-precision=nano", "ip", "and", "not", "port", "9"])
                .stdout(f)
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            procs.push(Processes::one("tcpdump", dump));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let pids: Vec<u32> =
        if daemons.is_some() { nodes.iter().filter_map(|n| daemon_pid(&lab, n)).collect() } else { Vec::new() };
    let cpu = || pids.iter().filter_map(|&p| cpu_ns(p)).sum::<u64>();
    let c0 = cpu();
    let client = work.join("client.py");
    let out = lab
        .exec("a", "python3", &[&client.to_string_lossy(), dst, "7000", &o.n.to_string(), "5"])
        .map_err(|e| e.to_string())?;
    let c1 = cpu();
    std::thread::sleep(Duration::from_millis(300));
    drop(procs);
    let times: Vec<f64> = out.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    if times.len() != o.n {
        return Err(format!("the client said {out:?}"));
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let q = |f: f64| sorted[((sorted.len() - 1) as f64 * f).round() as usize];
    println!("first byte, µs: {}", out.trim());
    println!(
        "{} path, {}: median {:.0} µs (quartiles {:.0} / {:.0}) of {} connections",
        if o.gateways { "gateways" } else { "hosts" },
        o.mode,
        q(0.5),
        q(0.25),
        q(0.75),
        o.n
    );
    if !pids.is_empty() {
        println!("daemons' CPU per connection: {:.0} µs", c1.saturating_sub(c0) as f64 / 1e3 / o.n as f64);
    }
    if o.capture {
        let mut seen = Vec::new();
        for node in nodes {
            let text = std::fs::read_to_string(work.join(format!("{node}.capture"))).unwrap_or_default();
            seen.extend(parse_capture(node, &text));
        }
        seen.sort_by_key(|s| s.at_ns);
        // Connections are 10 ms apart: a gap of 5 ms or more starts the next one (bursts without
        // a SYN, e.g. a multicast report, are not connections).
        let mut bursts: Vec<&[Seen]> = Vec::new();
        let mut start = 0;
        for k in 1..=seen.len() {
            if k == seen.len() || seen[k].at_ns - seen[k - 1].at_ns >= 5_000_000 {
                bursts.push(&seen[start..k]);
                start = k;
            }
        }
        bursts.retain(|b| b.iter().any(|p| p.line.contains("Flags [S]")));
        let median = times.iter().position(|&t| t == q(0.5)).unwrap_or(0);
        match bursts.get(median) {
            Some(b) if bursts.len() == o.n => {
                println!("\nconnection {median} (the median), as each node met its packets (µs since the first, since the line before):");
                let (t0, mut prev) = (b[0].at_ns, b[0].at_ns);
                for p in b.iter() {
                    println!(
                        "{:>8.1} {:>+8.1}  {:<3} {}",
                        (p.at_ns - t0) as f64 / 1e3,
                        (p.at_ns - prev) as f64 / 1e3,
                        p.node,
                        p.line
                    );
                    prev = p.at_ns;
                }
                print_steps(b, &bursts);
            }
            _ => {
                println!("\nthe capture has {} bursts for {} connections: no timeline", bursts.len(), o.n);
                for b in &bursts {
                    println!("  burst of {} from {} {}", b.len(), b[0].node, b[0].line);
                }
            }
        }
    }
    drop(daemons);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// What names a packet's meeting with a node across connections: the node, the DPRP message
/// type or the TCP flags, and the interface and direction ("r MPIT eth0 In", "b [S.] eth0 Out").
fn step_key(p: &Seen) -> String {
    let words: Vec<&str> = p.line.split_whitespace().collect();
    let flags = p.line.split("Flags ").nth(1).and_then(|f| f.split(',').next()).unwrap_or("");
    match words.as_slice() {
        [kind @ ("DDE" | "RGI" | "MPIT" | "CDN" | "?"), iface, dir, ..] => format!("{} {kind} {iface} {dir}", p.node),
        [iface, dir, ..] => format!("{} {flags} {iface} {dir}", p.node),
        _ => p.node.clone(),
    }
}

/// The median connection's steps again, each with the median (and quartiles) over all
/// connections of the time from the step before: one connection's timeline is one draw, these
/// are the figures to compare runs by. A step counts a packet's first meeting with that node in
/// that direction; connections that lack either step of a pair are left out of its figure.
fn print_steps(median: &[Seen], all: &[&[Seen]]) {
    use std::collections::HashMap;
    let firsts = |b: &[Seen]| {
        let mut m: HashMap<String, u128> = HashMap::new();
        for p in b {
            m.entry(step_key(p)).or_insert(p.at_ns);
        }
        m
    };
    let per_connection: Vec<HashMap<String, u128>> = all.iter().map(|b| firsts(b)).collect();
    let mut order: Vec<String> = Vec::new();
    for p in median {
        let k = step_key(p);
        if !order.contains(&k) {
            order.push(k);
        }
    }
    println!(
        "\nthe same steps over all {} connections: the sum of the medians so far, the median gap from the step before (quartiles), how many connections had both",
        all.len()
    );
    let quartiles = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
        (q(0.5), q(0.25), q(0.75))
    };
    let mut since_first = 0.0;
    for pair in order.windows(2) {
        let gaps: Vec<f64> = per_connection
            .iter()
            .filter_map(|c| Some((*c.get(&pair[1])? as f64 - *c.get(&pair[0])? as f64) / 1e3))
            .collect();
        if gaps.is_empty() {
            continue;
        }
        let n = gaps.len();
        let (m, q1, q3) = quartiles(gaps);
        since_first += m;
        println!("{since_first:>8.1} {m:>+8.1} ({q1:>6.1} / {q3:>6.1}, n {n:>3})  {}", pair[1]);
    }
}

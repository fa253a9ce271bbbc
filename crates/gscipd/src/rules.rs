//! The daemon's netfilter rules: a chain `GSCIP` of its own in the filter table (IPv4 and IPv6),
//! installed at once with `iptables-restore --noflush` (iptables-nft: nft's own `queue`
//! statement is not built into this kernel), and a jump into it from the hooks the GE sits on.
//!
//! Failing closed: the queue rules have no `--queue-bypass`, so when the daemon is gone the
//! kernel drops what they would queue. A crash therefore leaves a closed GE's boundary closed;
//! `gscipd --remove-rules` (or `iptables -D … -j GSCIP`) is how an administrator opens it.
//! An open GE with `fail_open = true` gets `--queue-bypass` instead.

use crate::config::{Config, Hooks};
use crate::{fast_bits, DaemonError, FAST_DROP, FAST_MASK, FAST_PASS, OWN_MARK, SEGMENT_MARK, UNITS_MARK};
use std::io::Write;
use std::process::{Command, Stdio};

pub const CHAIN: &str = "GSCIP";

/// The `xt_recent` list of destinations whose DDEs pass in the kernel (one per queue number,
/// in `/proc/net/xt_recent/` of the GE's network namespace; docs/dprp.md section 13).
pub fn dde_pass_list(c: &Config) -> String {
    format!("gscip_dde_{}", c.queue)
}

/// Where the daemon writes `+ADDR` and `-ADDR` to add and remove destinations of the list.
pub fn dde_pass_list_path(c: &Config) -> std::path::PathBuf {
    std::path::Path::new("/proc/net/xt_recent").join(dde_pass_list(c))
}

/// The `u32` match of a DPRP message of `kind` (the first word of the UDP payload is `G S 1
/// kind`) with, for a DDE, no restart flag (bit 0 of the next byte clear). IPv4 only when not
/// a fragment, IPv6 only without extension headers (the next header must be UDP); anything the
/// match does not recognise goes to the queue.
fn dprp_match(c: &Config, kind: gscip_wire::dprp::MessageType, v6: bool) -> String {
    use gscip_wire::dprp::MessageType;
    let word = 0x4753_0100 | u32::from(kind as u8);
    let u32 = match (v6, kind == MessageType::Dde) {
        (true, true) => format!("4>>8&0xFF=17 && 48={word:#x} && 52>>24&0x1=0"),
        (true, false) => format!("4>>8&0xFF=17 && 48={word:#x}"),
        (false, true) => format!("4&0x3FFF=0 && 0>>22&0x3C@8={word:#x} && 0>>22&0x3C@12>>24&0x1=0"),
        (false, false) => format!("4&0x3FFF=0 && 0>>22&0x3C@8={word:#x}"),
    };
    let port = gscip_wire::dprp::DPRP_PORT;
    let secs = (gscip_core::GeConfig::default().ge_cache_ttl.0 / 1_000_000).max(1);
    format!(
        "-p udp --sport {port} --dport {port} -m u32 --u32 \"{u32}\" -m recent --name {} --rcheck --rdest --seconds {secs}",
        dde_pass_list(c)
    )
}

/// The rules that let DPRP messages pass in the kernel toward the destinations on the list
/// (put there less than the engine's GE-cache lifetime ago): DDEs unseen (docs/dprp.md section
/// 13) and, with `kernel_mpit_pass`, MPITs with a copy to the daemon's log group (section 15).
fn kernel_pass_rules(c: &Config, v6: bool) -> String {
    use gscip_wire::dprp::MessageType;
    let mut s = format!("-A {CHAIN} {} -j RETURN\n", dprp_match(c, MessageType::Dde, v6));
    if c.uses_kernel_mpit_pass() {
        let mpit = dprp_match(c, MessageType::Mpit, v6);
        s.push_str(&format!("-A {CHAIN} {mpit} -j NFLOG --nflog-group {}\n", c.queue));
        s.push_str(&format!("-A {CHAIN} {mpit} -j RETURN\n"));
    }
    s
}

fn hooks(c: &Config) -> &'static [&'static str] {
    match c.hooks {
        Hooks::Host => &["OUTPUT", "INPUT"],
        Hooks::Router | Hooks::Bridge => &["FORWARD"],
    }
}

/// The `iptables-restore` input for one family; fast-path marks count only in `generation`.
pub fn restore_script(c: &Config, v6: bool, generation: u8) -> String {
    let bypass = if c.fail_open { " --queue-bypass" } else { "" };
    let q = format!("-j NFQUEUE --queue-num {}{bypass}", c.queue);
    let icmp = if v6 {
        "-p ipv6-icmp --icmpv6-type destination-unreachable"
    } else {
        "-p icmp --icmp-type destination-unreachable"
    };
    let mut s = String::from("*filter\n");
    s.push_str(&format!(":{CHAIN} - [0:0]\n"));
    s.push_str(&format!("-A {CHAIN} -m mark --mark {OWN_MARK:#x} -j RETURN\n"));
    // A sealed packet of a flow that goes back to units: the flow's TCP comes whole again (to
    // the GSO queue); the packet itself is sealed already.
    if c.gso_queue().is_some() {
        let (units, seg) = (UNITS_MARK, SEGMENT_MARK);
        s.push_str(&format!("-A {CHAIN} -m mark --mark {units:#x}/{units:#x} -j CONNMARK --set-xmark 0x0/{seg:#x}\n"));
        s.push_str(&format!("-A {CHAIN} -m mark --mark {units:#x}/{units:#x} -j RETURN\n"));
    }
    if c.uses_kernel_dde_pass() {
        s.push_str(&kernel_pass_rules(c, v6));
    }
    // A host's traffic with itself (loopback, and its own addresses, which Linux routes over
    // `lo`) never leaves it: no flow for GSCIP. Queued, its first packet would wait for a
    // negotiation with the host itself (a local TCP connect took a SYN retransmission, 1 s).
    if c.hooks == Hooks::Host {
        s.push_str(&format!("-A {CHAIN} -o lo -j RETURN\n"));
        s.push_str(&format!("-A {CHAIN} -i lo -j RETURN\n"));
    }
    // The GE's own connection to its GMS (TLS) is management traffic, not a GSCIP flow.
    for a in &c.gms_addrs {
        if a.is_ipv6() == v6 {
            let (ip, port) = (a.ip(), a.port());
            s.push_str(&format!("-A {CHAIN} -p tcp -d {ip} --dport {port} -j RETURN\n"));
            s.push_str(&format!("-A {CHAIN} -p tcp -s {ip} --sport {port} -j RETURN\n"));
        }
    }
    // The kernel fast path: flows the daemon decided without cryptography. A packet comes
    // back from the queue with the fast-path bits in its mark (verdict "repeat"), which are
    // saved in its conntrack entry; the flow's later packets match the connmark rules.
    let (pass, drop, mask) = (fast_bits(FAST_PASS, generation), fast_bits(FAST_DROP, generation), FAST_MASK);
    s.push_str(&format!("-A {CHAIN} -m connmark --mark {pass:#x}/{mask:#x} -j RETURN\n"));
    s.push_str(&format!("-A {CHAIN} -m connmark --mark {drop:#x}/{mask:#x} -j DROP\n"));
    s.push_str(&format!("-A {CHAIN} -m mark --mark {pass:#x}/{mask:#x} -j CONNMARK --save-mark --mask {mask:#x}\n"));
    s.push_str(&format!("-A {CHAIN} -m mark --mark {pass:#x}/{mask:#x} -j RETURN\n"));
    s.push_str(&format!("-A {CHAIN} -m mark --mark {drop:#x}/{mask:#x} -j CONNMARK --save-mark --mask {mask:#x}\n"));
    s.push_str(&format!("-A {CHAIN} -m mark --mark {drop:#x}/{mask:#x} -j DROP\n"));
    match c.gso_queue() {
        // TCP to the GSO queue (whole GSO packets), except flows the engine had cut into
        // segments: the mark of the packet that came back for it, saved in the connection.
        Some(g) => {
            let seg = SEGMENT_MARK;
            s.push_str(&format!(
                "-A {CHAIN} -m mark --mark {seg:#x}/{seg:#x} -j CONNMARK --save-mark --mask {seg:#x}\n"
            ));
            s.push_str(&format!("-A {CHAIN} -p tcp -m mark --mark {seg:#x}/{seg:#x} {q}\n"));
            s.push_str(&format!("-A {CHAIN} -p tcp -m connmark --mark {seg:#x}/{seg:#x} {q}\n"));
            s.push_str(&format!("-A {CHAIN} -p tcp -j NFQUEUE --queue-num {g}{bypass}\n"));
        }
        None => s.push_str(&format!("-A {CHAIN} -p tcp {q}\n")),
    }
    s.push_str(&format!("-A {CHAIN} -p udp {q}\n"));
    s.push_str(&format!("-A {CHAIN} {icmp} {q}\n"));
    s.push_str("COMMIT\n");
    s
}

fn tool(v6: bool, restore: bool) -> &'static str {
    match (v6, restore) {
        (false, false) => "iptables",
        (true, false) => "ip6tables",
        (false, true) => "iptables-restore",
        (true, true) => "ip6tables-restore",
    }
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<bool, DaemonError> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| DaemonError::Netfilter(format!("cannot run {program}: {e} (apt-get install iptables)")))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() && input.is_some() {
        return Err(DaemonError::Netfilter(format!(
            "{program} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.status.success())
}

/// Installs (or refreshes, after a crash) the chain and the jumps into it. The list of
/// destinations whose DDEs pass in the kernel starts empty: a daemon that starts knows none.
pub fn install(c: &Config) -> Result<(), DaemonError> {
    for v6 in [false, true] {
        run(tool(v6, true), &["--noflush"], Some(&restore_script(c, v6, 0)))?;
        for hook in hooks(c) {
            let exists = run(tool(v6, false), &["-C", hook, "-j", CHAIN], None)?;
            if !exists && !run(tool(v6, false), &["-I", hook, "1", "-j", CHAIN], None)? {
                return Err(DaemonError::Netfilter(format!("could not add the jump from {hook} to {CHAIN}")));
            }
        }
    }
    if c.uses_kernel_dde_pass() {
        let path = dde_pass_list_path(c);
        std::fs::write(&path, "/\n")
            .map_err(|e| DaemonError::Netfilter(format!("emptying {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Replaces the chain's rules atomically with those of a new fast-path generation: flows the
/// kernel passed or dropped on its own come back to the engine for a new decision.
pub fn new_generation(c: &Config, generation: u8) -> Result<(), DaemonError> {
    for v6 in [false, true] {
        run(tool(v6, true), &["--noflush"], Some(&restore_script(c, v6, generation)))?;
    }
    Ok(())
}

/// Removes the jumps and the chain (a clean stop, or an administrator recovering after a crash).
pub fn remove(c: &Config) -> Result<(), DaemonError> {
    for v6 in [false, true] {
        for hook in hooks(c) {
            while run(tool(v6, false), &["-D", hook, "-j", CHAIN], None)? {}
        }
        run(tool(v6, false), &["-F", CHAIN], None)?;
        run(tool(v6, false), &["-X", CHAIN], None)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_queues_tcp_udp_and_unreachables_and_skips_our_own_packets() {
        let c =
            Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\nqueue = 3\ngso = false\n")
                .unwrap();
        let s = restore_script(&c, false, 0);
        assert!(s.contains("--mark 0x40000047 -j RETURN"));
        assert!(!s.contains("0x40000/0x40000"), "without the GSO queue no flow is cut, none goes back");
        assert!(s.contains("-p tcp -j NFQUEUE --queue-num 3\n"), "fail closed: no bypass");
        assert!(s.contains("-p udp -j NFQUEUE --queue-num 3\n"));
        assert!(s.contains("--icmp-type destination-unreachable"));
        assert!(restore_script(&c, true, 0).contains("--icmpv6-type destination-unreachable"));
        // The host's traffic with itself is not queued, before anything else is.
        let lo = s.find("-o lo -j RETURN\n").expect("loopback out skipped");
        assert!(s.contains("-i lo -j RETURN\n") && lo < s.find("NFQUEUE").unwrap(), "{s}");
        let router = Config::parse("key_file = \"k\"\nhooks = \"router\"\nlocal_addrs = [\"10.0.0.1\"]\n").unwrap();
        assert!(!restore_script(&router, false, 0).contains(" lo "), "a router forwards nothing over lo");
        let open =
            Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\nfail_open = true\n")
                .unwrap();
        assert!(restore_script(&open, false, 0).contains("--queue-bypass"));
    }

    #[test]
    fn a_router_lets_ddes_and_mpits_on_its_list_pass_before_anything_is_queued_and_a_host_does_not() {
        let router =
            Config::parse("key_file = \"k\"\nhooks = \"router\"\nprotected = [\"10.1.0.0/24\"]\nqueue = 2\n").unwrap();
        for v6 in [false, true] {
            let s = restore_script(&router, v6, 0);
            let pass = s.find("-m recent --name gscip_dde_2 --rcheck --rdest --seconds 60 -j RETURN\n");
            let pass = pass.unwrap_or_else(|| panic!("no DDE pass in\n{s}"));
            assert!(pass < s.find("NFQUEUE").unwrap() && pass > s.find("--mark 0x40000047").unwrap(), "{s}");
            assert!(s.contains("--sport 4398 --dport 4398 -m u32 --u32"), "{s}");
        }
        assert!(restore_script(&router, false, 0).contains("\"4&0x3FFF=0 && 0>>22&0x3C@8=0x47530101 && "));
        // MPITs toward the same destinations: a copy to the daemon's log group, then on.
        for v6 in [false, true] {
            let s = restore_script(&router, v6, 0);
            let word = if v6 { "48=0x47530103\"" } else { "0>>22&0x3C@8=0x47530103\"" };
            let copy = s.find(&format!(
                "{word} -m recent --name gscip_dde_2 --rcheck --rdest --seconds 60 -j NFLOG --nflog-group 2\n"
            ));
            let on = s.find(&format!("{word} -m recent --name gscip_dde_2 --rcheck --rdest --seconds 60 -j RETURN\n"));
            let (copy, on) = (copy.unwrap_or_else(|| panic!("no MPIT copy in\n{s}")), on.unwrap());
            assert!(copy < on && on < s.find("NFQUEUE").unwrap(), "{s}");
        }
        assert!(router.ge_config().unwrap().kernel_mpit_pass);
        let no_mpit = Config::parse(
            "key_file = \"k\"\nhooks = \"router\"\nprotected = [\"10.1.0.0/24\"]\nkernel_mpit_pass = false\n",
        )
        .unwrap();
        assert!(
            !restore_script(&no_mpit, false, 0).contains("NFLOG") && !no_mpit.ge_config().unwrap().kernel_mpit_pass
        );
        assert!(restore_script(&no_mpit, false, 0).contains("0x47530101"), "the DDEs still pass");
        assert_eq!(dde_pass_list_path(&router), std::path::Path::new("/proc/net/xt_recent/gscip_dde_2"));
        let off = Config::parse(
            "key_file = \"k\"\nhooks = \"router\"\nprotected = [\"10.1.0.0/24\"]\nkernel_dde_pass = false\n",
        )
        .unwrap();
        assert!(!restore_script(&off, false, 0).contains("recent"));
        assert!(!restore_script(&off, false, 0).contains("NFLOG"), "no MPIT pass without the DDE pass's list");
        assert!(!off.ge_config().unwrap().kernel_mpit_pass);
        assert!(!off.ge_config().unwrap().kernel_dde_pass && router.ge_config().unwrap().kernel_dde_pass);
        let host = Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\n").unwrap();
        assert!(!restore_script(&host, false, 0).contains("recent"), "a host forwards no DDE");
        assert!(!host.ge_config().unwrap().kernel_dde_pass);
        assert!(!host.ge_config().unwrap().kernel_mpit_pass && !restore_script(&host, false, 0).contains("NFLOG"));
    }

    #[test]
    fn tcp_goes_to_the_gso_queue_unless_its_flow_is_cut_into_segments() {
        let c = Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\nqueue = 3\n").unwrap();
        let s = restore_script(&c, false, 0);
        let at = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle:?} not in\n{s}"));
        let save = at("-m mark --mark 0x80000/0x80000 -j CONNMARK --save-mark --mask 0x80000\n");
        let by_mark = at("-p tcp -m mark --mark 0x80000/0x80000 -j NFQUEUE --queue-num 3\n");
        let by_conn = at("-p tcp -m connmark --mark 0x80000/0x80000 -j NFQUEUE --queue-num 3\n");
        let gso = at("-p tcp -j NFQUEUE --queue-num 4\n");
        assert!(save < by_mark && by_mark < by_conn && by_conn < gso, "{s}");
        assert!(at("-m connmark --mark 0x100000/0x3ff00000 -j RETURN") < save, "the fast path comes first");
        // A flow going back to units: its sealed packet clears the bit in the connection and
        // passes, before anything could queue it again.
        let clear = at("-m mark --mark 0x40000/0x40000 -j CONNMARK --set-xmark 0x0/0x80000\n");
        let pass = at("-m mark --mark 0x40000/0x40000 -j RETURN\n");
        assert!(clear < pass && pass < save && pass < s.find("NFQUEUE").unwrap(), "{s}");
        assert!(s.contains("-p udp -j NFQUEUE --queue-num 3\n"));
    }

    #[test]
    fn fast_path_marks_count_only_in_their_generation_and_the_gms_is_exempt() {
        let mut c = Config::parse(
            "hooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\n[gms]\nurl = \"https://192.0.2.9:4399\"\nca_file = \"ca\"\nname = \"g\"\nstate_dir = \"s\"\n",
        )
        .unwrap();
        assert!(c.gms_addrs.is_empty(), "parsing never resolves");
        c.resolve_gms().unwrap();
        let g0 = restore_script(&c, false, 0);
        let g5 = restore_script(&c, false, 5);
        assert!(g0.contains("-m connmark --mark 0x100000/0x3ff00000 -j RETURN"), "{g0}");
        assert!(g5.contains("-m connmark --mark 0x1500000/0x3ff00000 -j RETURN"), "{g5}");
        assert!(g5.contains("-m connmark --mark 0x1600000/0x3ff00000 -j DROP"));
        assert!(g0.contains("-p tcp -d 192.0.2.9 --dport 4399 -j RETURN"));
        assert!(g0.contains("-p tcp -s 192.0.2.9 --sport 4399 -j RETURN"));
        assert!(!restore_script(&c, true, 0).contains("192.0.2.9"));
        assert!(Config::parse("key_file = \"k\"\nhooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\n[gms]\nurl = \"https://192.0.2.9\"\nca_file = \"ca\"\nname = \"g\"\nstate_dir = \"s\"\n").unwrap_err().contains("not both"));
        assert!(Config::parse("hooks = \"host\"\nlocal_addrs = [\"10.0.0.1\"]\n").unwrap_err().contains("key_file"));
    }
}

//! The real GMS in the lab: GEs enroll through the API and follow it; with the GMS stopped the
//! data plane keeps working on cached keys (also across a daemon restart); after a GMS restart
//! nothing is lost; a GE removed from its group loses access within seconds and its existing
//! flow ends. Root only; fails, never skips, when the lab cannot run.

use gscip_lab::gms::LabGms;
use gscip_lab::run::{start_daemons, RunOptions};
use gscip_lab::{workspace_binary, Lab};
use gscip_sim::topology::Topology;
use gscip_sim::Scenario;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SCENARIO: &str = r#"
name = "gms"
[[group]]
id = 1
name = "staff"
[[subnet]]
name = "lan"
prefix = "10.77.0.0/24"
[[node]]
name = "a"
kind = "ges"
mode = "closed"
groups = [1]
interfaces = [{ subnet = "lan", address = "10.77.0.1" }]
[[node]]
name = "b"
kind = "ges"
mode = "closed"
groups = [1]
interfaces = [{ subnet = "lan", address = "10.77.0.2" }]
"#;

/// An echo server for every connection, until killed.
const SERVER: &str = r#"
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16)
print("ready", flush=True)
def serve(c):
    c.settimeout(120)
    try:
        while True:
            d = c.recv(64)
            if not d: break
            c.sendall(b"re:" + d)
    except OSError:
        pass
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// One long connection that exchanges a tick every 100 ms and prints "MS ok|fail|error" with
/// the wall-clock milliseconds, until the stop file appears.
const TICKER: &str = r#"
import socket, sys, time, os
host, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
s = socket.create_connection((host, port), timeout=5)
while not os.path.exists(stop):
    now = int(time.time() * 1000)
    try:
        s.settimeout(1); s.sendall(b"tick"); d = s.recv(64)
        print(now, "ok" if d else "closed", flush=True)
        if not d: break
    except socket.timeout:
        print(now, "fail", flush=True)
    except OSError as e:
        print(now, "error", type(e).__name__, flush=True); break
    time.sleep(0.1)
"#;

/// A new connection: one exchange, "ok" or "ERROR".
const ONCE: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    s.settimeout(2); s.sendall(b"hello"); print("ok" if s.recv(64) == b"re:hello" else "ERROR reply")
except OSError as e:
    print("ERROR", type(e).__name__)
"#;

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn new_connection(lab: &Lab, work: &Path) -> String {
    lab.exec("a", "python3", &[work.join("once.py").to_str().unwrap(), "10.77.0.2", "9000"])
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The ticker's lines after `since` (wall-clock ms).
fn ticks_since(file: &Path, since: u64) -> Vec<(u64, String)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(t, r)| (t.parse().unwrap_or(0), r.to_owned())))
        .filter(|(t, _)| *t >= since)
        .collect()
}

#[test]
fn ges_follow_the_real_gms_and_survive_its_absence() {
    let prefix = "gmslab";
    let s = Scenario::parse(SCENARIO, "gms.toml").unwrap();
    let work = std::env::temp_dir().join(format!("gscip-gms-lab-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap();
    let _ = gscip_lab::clean(prefix);
    let mut lab = Lab::build(&s, prefix).unwrap_or_else(|e| panic!("the lab must run here (root, iproute2): {e}"));
    let management = lab.add_management(&s).unwrap();
    let mut gms = LabGms::start(&management, &workspace_binary("gmsd"), &work).unwrap();
    gms.define(&s).unwrap();
    let opts = RunOptions { gscipd: workspace_binary("gscipd"), work_dir: work.clone(), ..RunOptions::new(prefix) };
    let topo = Topology::new(&s);
    let mut daemons = start_daemons(&s, &topo, &lab, &opts, Some(&gms)).unwrap();
    let admin = gms.admin().unwrap().clone();
    assert!(admin.ges().unwrap().iter().all(|g| g.status == gscip_gms_client::api::GeStatus::Active), "both enrolled");
    assert!(!work.join("a.keys").exists(), "no key files: keys come from the GMS");

    for (f, text) in [("server.py", SERVER), ("ticker.py", TICKER), ("once.py", ONCE)] {
        std::fs::write(work.join(f), text).unwrap();
    }
    let mut server = Command::new("ip")
        .args(["netns", "exec", lab.namespace("b").unwrap(), "python3"])
        .arg(work.join("server.py"))
        .args(["10.77.0.2", "9000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(server.stdout.as_mut().unwrap(), &mut ready).unwrap();
    let stop = work.join("stop");
    let ticks = work.join("ticks");
    let mut ticker = Command::new("ip")
        .args(["netns", "exec", lab.namespace("a").unwrap(), "python3"])
        .arg(work.join("ticker.py"))
        .args(["10.77.0.2", "9000"])
        .arg(&stop)
        .stdout(std::fs::File::create(&ticks).unwrap())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(new_connection(&lab, &work), "ok");

    // The GMS stops: existing and new flows go on, on cached keys, even across a restart of
    // a's daemon.
    gms.stop();
    let t = unix_ms();
    assert_eq!(new_connection(&lab, &work), "ok", "new flow with the GMS down");
    daemons = daemons.restart(&lab, "a", &opts).unwrap();
    assert_eq!(new_connection(&lab, &work), "ok", "a restarted on its cached keys");
    let log_a = std::fs::read_to_string(work.join("a.log")).unwrap_or_default();
    assert!(log_a.contains("cached keys"), "{log_a}");
    // The existing connection goes on: after the restart its TCP retransmits (with backoff, so
    // a busy machine may take a few seconds) and it carries on ticking, never reset.
    let t0 = Instant::now();
    let during = loop {
        let during = ticks_since(&ticks, t);
        if during.iter().filter(|(_, r)| r == "ok").count() >= 3 || t0.elapsed() > Duration::from_secs(15) {
            break during;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(during.iter().filter(|(_, r)| r == "ok").count() >= 3, "existing flow while the GMS is down: {during:?}");
    assert!(during.iter().all(|(_, r)| r == "ok" || r == "fail"), "the existing flow broke: {during:?}");
    eprintln!("the existing flow across a's restart: {during:?}");

    // The GMS restarts on its database: nothing lost, and the GEs follow it again.
    gms.restart().unwrap();
    let admin = gms.admin().unwrap().clone();
    assert_eq!(admin.ges().unwrap().len(), 2);
    assert_eq!(admin.groups().unwrap()[0].members, vec!["a".to_owned(), "b".to_owned()]);
    assert_eq!(new_connection(&lab, &work), "ok");
    // The daemons find the GMS again (they retry at most 5 s apart).
    let t0 = Instant::now();
    while !std::fs::read_to_string(work.join("b.log")).unwrap_or_default().contains("reachable again") {
        assert!(t0.elapsed() < Duration::from_secs(30), "b did not reconnect to the GMS");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t0 = Instant::now();
    while !std::fs::read_to_string(work.join("a.log")).unwrap_or_default().contains("reachable again") {
        assert!(t0.elapsed() < Duration::from_secs(30), "a did not reconnect to the GMS");
        std::thread::sleep(Duration::from_millis(100));
    }

    // a leaves group 1: it loses access within seconds and its existing flow ends.
    let removed_at = unix_ms();
    admin.set_groups("a", &[]).unwrap();
    let t0 = Instant::now();
    let lost_at = loop {
        let after = ticks_since(&ticks, removed_at);
        if let Some((t, _)) = after.iter().find(|(_, r)| r != "ok") {
            break *t;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "a kept access after leaving: {after:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(1500));
    let after = ticks_since(&ticks, lost_at);
    assert!(after.iter().all(|(_, r)| r != "ok"), "the existing flow went on: {after:?}");
    assert!(new_connection(&lab, &work).starts_with("ERROR"), "a new flow from a non-member");
    eprintln!(
        "a lost access {} ms after the administrator removed it from group 1",
        lost_at.saturating_sub(removed_at)
    );

    // No key material in any log: the group keys and identity seeds the GEs hold.
    let mut secrets = Vec::new();
    for ge in ["a", "b"] {
        let dir = work.join(format!("{ge}.state"));
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("state.json")).unwrap()).unwrap();
        secrets.extend(state["keys"].as_array().unwrap().iter().map(|k| k["key"].as_str().unwrap().to_owned()));
        secrets.push(std::fs::read_to_string(dir.join("identity.seed")).unwrap().trim().to_owned());
    }
    assert!(secrets.len() >= 3);
    for log in [work.join("gms/gmsd.log"), work.join("a.log"), work.join("b.log")] {
        let text = std::fs::read_to_string(&log).unwrap();
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "key material in {}", log.display());
        }
    }

    std::fs::write(&stop, "").unwrap();
    let _ = Command::new("kill").arg(ticker.id().to_string()).status();
    let _ = ticker.wait();
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    drop(daemons);
    drop(gms);
    drop(lab);
    let _ = std::fs::remove_dir_all(&work);
}

//! `make bench`, the GMS part: a `gmsd` in this process on 127.0.0.1 (SQLite in a temporary
//! directory), and over HTTPS:
//!
//! * enrollments per second (each a new TLS connection, one-time token, proof, certificate);
//! * key fetches per second (enrolled GEs over mutual TLS, kept-alive connections), against the
//!   named baseline of the same server's `/healthz` over TLS;
//! * how long a key rotation takes to reach N simulated GEs (default 1,000), each holding a
//!   long-poll open: from the administrator's call to the last GE holding the new version.
//!
//! Prints a table and writes `target/bench/gms.json` (`[{"name", "value", "unit", "baseline",
//! "baseline_value", "ratio"}]`). Environment: `BENCH_GMS_GES` (simulated GEs),
//! `BENCH_SECONDS` (seconds per rate). Needs about 2 file descriptors per simulated GE.

use gscip_gms::api::{now, router, App};
use gscip_gms::seal::MasterKey;
use gscip_gms::{Gms, GmsConfig};
use gscip_gms_client::api::NewGe;
use gscip_gms_client::client::{enroll, AdminClient, GeClient};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const PASSWORD: &str = "benchmark password 1234";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The soft limit on open files.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("Max open files")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        .unwrap_or(1024)
}

/// Runs `work` on `threads` threads for `seconds`; returns operations per second.
fn rate(threads: usize, seconds: u64, work: impl Fn(usize) -> bool + Sync) -> f64 {
    let count = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (count, stop, work) = (&count, &stop, &work);
            s.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if work(t) {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
    });
    count.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let wanted = env_u64("BENCH_GMS_GES", 1000) as usize;
    let seconds = env_u64("BENCH_SECONDS", 5);
    let limit = open_files_limit();
    let ges = wanted.min((limit.saturating_sub(200) / 2) as usize);
    if ges < wanted {
        eprintln!(
            "gms-bench: open-file limit {limit}: {ges} simulated GEs instead of {wanted} (raise it with `ulimit -n`)"
        );
    }
    let dir = std::env::temp_dir().join(format!("gms-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let db = format!("sqlite://{}?mode=rwc", dir.join("gms.db").display());

    // The server, in its own runtime.
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let gms = Gms::open(&db, MasterKey::from_bytes(&[7; 32]).expect("key"), GmsConfig::default(), now())
                .await
                .expect("gms");
            gms.create_admin("bench", "admin", PASSWORD, now()).await.expect("admin");
            let tls = gms.tls.server_config(&["127.0.0.1".into()], now()).expect("tls");
            let ca = gms.tls.ca_pem.clone();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            tx.send((listener.local_addr().expect("addr"), ca)).expect("send");
            gscip_gms::server::serve(listener, tls, router(Arc::new(App { gms })), stop_rx).await;
        });
    });
    let (addr, ca) = rx.recv().expect("server started");
    let url = format!("https://{addr}");
    let (admin, _) = AdminClient::login(&url, &ca, "admin", PASSWORD).expect("login");
    admin.create_group(Some(1), "bench").expect("group");

    // Enrollments: define GEs, issue tokens, enroll from 4 threads.
    let names: Vec<String> = (0..ges).map(|i| format!("ge{i}")).collect();
    for n in &names {
        admin
            .create_ge(&NewGe { name: n.clone(), kind: "ges".into(), mode: "closed".into(), groups: vec![1] })
            .expect("ge");
    }
    let tokens: Vec<String> = names.iter().map(|n| admin.enrollment_token(n, None).expect("token").token).collect();
    let next = AtomicU64::new(0);
    let certs: Vec<std::sync::Mutex<Option<String>>> = (0..ges).map(|_| std::sync::Mutex::new(None)).collect();
    let seed = |i: usize| -> [u8; 32] {
        let mut s = [0u8; 32];
        s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
        s
    };
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= ges {
                    return;
                }
                let pem = enroll(&url, &ca, &names[i], &tokens[i], &seed(i)).expect("enroll");
                *certs[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(pem);
            });
        }
    });
    let enroll_rate = ges as f64 / t0.elapsed().as_secs_f64();
    let clients: Vec<GeClient> = (0..ges)
        .map(|i| {
            let pem = certs[i].lock().unwrap_or_else(|e| e.into_inner()).clone().expect("enrolled");
            GeClient::new(&url, &ca, &pem, &seed(i)).expect("client")
        })
        .collect();

    // Key fetches against the same server's health check, both over kept-alive TLS.
    let threads = 4;
    let fetch_rate = rate(threads, seconds, |t| clients[t].state().is_ok());
    let tls = gscip_gms_client::client::tls_config(&ca, None).expect("tls");
    let agents: Vec<ureq::Agent> =
        (0..threads).map(|_| ureq::AgentBuilder::new().tls_config(tls.clone()).build()).collect();
    let health_rate = rate(threads, seconds, |t| agents[t].get(&format!("{url}/healthz")).call().is_ok());

    // Rotation reaching every GE: each holds a long-poll; the administrator rotates.
    let rev = clients[0].state().expect("state").revision;
    let barrier = Arc::new(Barrier::new(ges + 1));
    let start = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let mut reached: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter()
            .map(|c| {
                let (barrier, start) = (barrier.clone(), start.clone());
                std::thread::Builder::new()
                    .stack_size(256 * 1024)
                    .spawn_scoped(s, move || {
                        barrier.wait();
                        loop {
                            match c.wait_for_change(rev, 60) {
                                Ok(Some(st)) if st.keys.iter().any(|k| k.version == 2) => break,
                                Ok(_) => continue,
                                Err(e) => panic!("long-poll: {e}"),
                            }
                        }
                        let t = start.lock().unwrap_or_else(|e| e.into_inner()).expect("rotation started");
                        t.elapsed()
                    })
                    .expect("thread")
            })
            .collect();
        barrier.wait();
        // Let every long-poll reach the server.
        std::thread::sleep(Duration::from_secs(2));
        *start.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        admin.rotate_group(1).expect("rotate");
        handles.into_iter().map(|h| h.join().expect("GE thread")).collect()
    });
    reached.sort();
    let pct = |p: f64| reached[((reached.len() as f64 - 1.0) * p) as usize].as_secs_f64() * 1000.0;
    let (p50, p99, max) = (pct(0.5), pct(0.99), pct(1.0));

    let _ = stop_tx.send(true);
    let _ = server.join();
    let _ = std::fs::remove_dir_all(&dir);

    println!("GMS on 127.0.0.1 (SQLite, TLS 1.3, 2 server threads), {ges} simulated GEs");
    println!("{:<44} {:>12}", "figure", "value");
    let rows = vec![
        json!({"name": "gms enrollments", "value": enroll_rate, "unit": "per s", "baseline": null, "baseline_value": null, "ratio": null}),
        json!({"name": "gms key fetches (mutual TLS)", "value": fetch_rate, "unit": "per s", "baseline": "gms healthz over TLS", "baseline_value": health_rate, "ratio": fetch_rate / health_rate}),
        json!({"name": "gms healthz over TLS", "value": health_rate, "unit": "per s", "baseline": null, "baseline_value": null, "ratio": null}),
        json!({"name": format!("gms rotation reaches {ges} GEs, median"), "value": p50, "unit": "ms", "baseline": null, "baseline_value": null, "ratio": null}),
        json!({"name": format!("gms rotation reaches {ges} GEs, p99"), "value": p99, "unit": "ms", "baseline": null, "baseline_value": null, "ratio": null}),
        json!({"name": format!("gms rotation reaches {ges} GEs, all"), "value": max, "unit": "ms", "baseline": null, "baseline_value": null, "ratio": null}),
    ];
    for r in &rows {
        let ratio = r["ratio"]
            .as_f64()
            .map(|x| format!("  ({x:.2}x {})", r["baseline"].as_str().unwrap_or("")))
            .unwrap_or_default();
        println!(
            "{:<44} {:>9.1} {}{ratio}",
            r["name"].as_str().unwrap_or(""),
            r["value"].as_f64().unwrap_or(0.0),
            r["unit"].as_str().unwrap_or("")
        );
    }
    std::fs::create_dir_all("target/bench").expect("target/bench");
    std::fs::write("target/bench/gms.json", serde_json::to_string_pretty(&rows).expect("json"))
        .expect("write gms.json");
}

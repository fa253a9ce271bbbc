//! Scenario tests: the example networks in the simulator, the report format, the plaintext
//! detector, and negotiation under seeded loss and reordering.

use gscip_core::policy::Outcome;
use gscip_sim::report::FlowReport;
use gscip_sim::{Fault, Report, Scenario, Simulation};
use std::path::{Path, PathBuf};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples directory")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    v.sort();
    assert!(v.len() >= 4, "expected the example scenarios in {dir:?}");
    v
}

fn load(p: &Path) -> Scenario {
    Scenario::from_file(p).unwrap_or_else(|e| panic!("{e}"))
}

fn run(s: &Scenario) -> (Report, Simulation) {
    let mut sim = Simulation::new(s).unwrap_or_else(|e| panic!("{}: {e}", s.name));
    let r = sim.run();
    (r, sim)
}

fn flow<'a>(r: &'a Report, from: &str, to: &str) -> &'a FlowReport {
    r.flows.iter().find(|f| f.from == from && f.to == to).unwrap_or_else(|| panic!("no flow {from} -> {to}"))
}

fn actions(f: &FlowReport) -> Vec<(String, String)> {
    f.actions.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("?").to_owned())).collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn every_example_meets_its_expectations_without_leaks() {
    for p in examples() {
        let (r, _) = run(&load(&p));
        for f in &r.flows {
            assert!(f.as_expected, "{}: flow {:?} got {} ({:?})", p.display(), f.name, f.outcome, f);
        }
        assert_eq!(r.summary.plaintext_leaks, 0, "{}", p.display());
        assert_eq!(r.exit_code(), 0);
    }
}

#[test]
fn engines_agree_with_the_policy_reference_on_every_example() {
    for p in examples() {
        let (r, sim) = run(&load(&p));
        for ((name, reference), f) in sim.reference_outcomes().into_iter().zip(&r.flows) {
            assert_eq!(name, f.name);
            let want = match reference {
                Outcome::Protected { .. } => "protected",
                Outcome::Plaintext => "plaintext",
                Outcome::Discarded { .. } => "discarded",
            };
            assert_eq!(f.outcome, want, "{}: {name}", p.display());
        }
    }
}

/// SPEC section 3's table, row by row, with every GE's action.
#[test]
fn enterprise_gives_the_spec_table() {
    let (r, _) = run(&load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml")));
    let f = flow(&r, "ges2", "server");
    assert_eq!((f.outcome.as_str(), f.group), ("protected", Some(2)));
    assert_eq!(actions(f), pairs(&[("ges2", "encrypt"), ("gen", "relay"), ("gea", "decrypt")]));
    assert_eq!((f.encrypted_by.as_deref(), f.decrypted_by.as_deref()), (Some("ges2"), Some("gea")));
    assert_eq!(f.plaintext_on, vec!["gea:inside".to_string()], "only the server's own link is in clear");

    let f = flow(&r, "ges3", "server");
    assert_eq!((f.outcome.as_str(), f.group), ("protected", Some(3)));
    assert_eq!(actions(f), pairs(&[("ges3", "encrypt"), ("gea", "decrypt")]));

    let f = flow(&r, "ges1", "server");
    assert_eq!((f.outcome.as_str(), f.delivered, f.discarded_at.as_deref()), ("discarded", false, Some("ges1")));
    assert!(f.plaintext_on.is_empty(), "nothing leaves ges1");

    let f = flow(&r, "term", "server");
    assert_eq!((f.outcome.as_str(), f.discarded_at.as_deref()), ("discarded", Some("gen")));
    assert_eq!(f.plaintext_on, vec!["lan".to_string()], "the term's packet reaches gen and no further");

    let f = flow(&r, "ges1", "ges3");
    assert_eq!((f.outcome.as_str(), f.discarded_at.as_deref()), ("discarded", Some("ges1")));

    let f = flow(&r, "term", "ges4");
    assert_eq!((f.outcome.as_str(), f.group), ("protected", Some(1)));
    assert_eq!(actions(f), pairs(&[("gen", "encrypt"), ("ges4", "decrypt")]));
    assert_eq!(f.plaintext_on, vec!["lan".to_string()]);

    let f = flow(&r, "ges1", "term");
    assert_eq!(f.outcome, "plaintext");
    assert_eq!(actions(f), pairs(&[("ges1", "plain")]));

    let f = flow(&r, "ges2-moved", "server");
    assert_eq!((f.outcome.as_str(), f.group), ("protected", Some(2)));
    assert_eq!(actions(f), pairs(&[("ges2-moved", "encrypt"), ("gea", "decrypt")]));
}

#[test]
fn json_report_has_exactly_the_spec_fields() {
    let (r, _) = run(&load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml")));
    let v: serde_json::Value = serde_json::from_str(&r.to_json()).expect("valid JSON");
    let keys = |o: &serde_json::Value| o.as_object().expect("object").keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&v), ["scenario", "engine", "flows", "summary"]);
    assert_eq!(v["engine"], "sim");
    assert_eq!(
        keys(&v["flows"][0]),
        [
            "name",
            "from",
            "to",
            "proto",
            "port",
            "outcome",
            "delivered",
            "group",
            "encrypted_by",
            "decrypted_by",
            "discarded_at",
            "actions",
            "plaintext_on",
            "setup_us",
            "expect",
            "as_expected"
        ]
    );
    assert_eq!(keys(&v["summary"]), ["flows", "as_expected", "not_as_expected", "plaintext_leaks"]);
    let f = &v["flows"][0];
    assert_eq!(f["group"], 2);
    assert!(f["discarded_at"].is_null());
    assert!(f["setup_us"].is_u64());
    let discarded = &v["flows"][2];
    assert_eq!(discarded["outcome"], "discarded");
    assert!(discarded["group"].is_null() && discarded["setup_us"].is_null());
}

#[test]
fn a_ge_that_skips_encryption_is_reported_as_a_plaintext_leak() {
    let s = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml"));
    let mut sim = Simulation::new(&s).expect("sim");
    sim.inject(Fault::SkipEncryption { ge: "ges3".into() });
    let r = sim.run();
    assert!(r.summary.plaintext_leaks >= 1, "leak not caught: {}", r.to_table());
    let f = flow(&r, "ges3", "server");
    assert!(f.plaintext_on.contains(&"net1".to_string()), "{:?}", f.plaintext_on);
    assert_eq!(r.exit_code(), 1);
    // The decrypting GE never passes what it cannot authenticate, so the data never arrives:
    // TCP data that does not end in a trailer waits as a piece of a unit and is dropped when
    // no unit completes; a UDP datagram fails authentication at once.
    let c = sim.engine("gea").expect("gea").counters();
    assert!(c.auth_failures + c.pieces_dropped > 0, "{c:?}");
    assert_eq!(c.units_reassembled, 0);
}

#[test]
fn held_first_packets_cause_no_application_retransmission_and_discards_fail_at_once() {
    for p in examples() {
        let (r, sim) = run(&load(&p));
        for (st, f) in sim.flow_stats().iter().zip(&r.flows) {
            assert_eq!(st.retransmissions, 0, "{}: {} retransmitted", p.display(), st.name);
            if f.outcome == "discarded" {
                let from_ge_host_or_inside = f.discarded_at.is_some();
                assert!(from_ge_host_or_inside, "{}: {} discarded nowhere", p.display(), f.name);
            }
        }
    }
    // On a GE host, a discarded flow fails immediately (ICMP administratively prohibited).
    let (r, sim) = run(&load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml")));
    let idx = r.flows.iter().position(|f| f.from == "ges1" && f.to == "server").expect("flow");
    assert!(sim.flow_stats()[idx].failed_early);
    let idx = r.flows.iter().position(|f| f.from == "term" && f.to == "server").expect("flow");
    assert!(sim.flow_stats()[idx].failed_early, "a term behind a closed GEN is told too");
}

/// Lost and reordered packets (control messages included) never make a closed GE pass
/// plaintext, never produce a protection the policy does not give, and with moderate loss the
/// negotiations end in the policy's outcome.
#[test]
fn seeded_loss_and_reordering_keep_the_policy() {
    for p in examples() {
        let base = load(&p);
        for seed in 1..=6u64 {
            let mut s = base.clone();
            s.sim.seed = seed;
            s.sim.loss = 0.05;
            s.sim.reorder = 0.2;
            s.sim.jitter_us = 30;
            let (r, sim) = run(&s);
            let modes: std::collections::HashMap<&str, bool> = s
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), n.mode == Some(gscip_sim::scenario::ModeDef::Closed)))
                .collect();
            for ((_, reference), f) in sim.reference_outcomes().into_iter().zip(&r.flows) {
                let ctx = format!("{} seed {seed}: {}", p.display(), f.name);
                for (ge, a) in &f.actions {
                    if modes.get(ge.as_str()) == Some(&true) && a == "plain" {
                        // A closed GE may be "plain" only as a transit GE on a plaintext path.
                        assert_eq!(f.outcome, "plaintext", "{ctx}: closed {ge} passed plaintext");
                    }
                }
                match (reference, f.outcome.as_str()) {
                    (Outcome::Protected { group, .. }, "protected") => assert_eq!(f.group, Some(group.0), "{ctx}"),
                    (Outcome::Protected { .. }, other) => assert_eq!(other, "discarded", "{ctx}: fell open"),
                    (Outcome::Discarded { .. }, other) => assert_eq!(other, "discarded", "{ctx}"),
                    (Outcome::Plaintext, _) => {}
                }
            }
        }
    }
}

#[test]
fn reordering_and_jitter_alone_change_nothing() {
    for p in examples() {
        let mut s = load(&p);
        s.sim.reorder = 0.3;
        s.sim.jitter_us = 200;
        s.sim.seed = 7;
        let (r, _) = run(&s);
        assert_eq!(r.summary.not_as_expected, 0, "{}: {}", p.display(), r.to_table());
        assert_eq!(r.summary.plaintext_leaks, 0);
    }
}

#[test]
fn the_simulation_is_deterministic() {
    let mut s = load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml"));
    s.sim.loss = 0.1;
    s.sim.seed = 3;
    assert_eq!(run(&s).0, run(&s).0);
}

/// A GE that loses its state in the middle of a connection (between two rounds of the
/// application) leads to a fresh negotiation; the connection goes on, with at most one
/// application retransmission (the decrypting end cannot open what was sealed under the old
/// keys), and nothing leaks.
#[test]
fn a_ge_that_loses_its_state_mid_connection_recovers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/enterprise.toml");
    let s = load(&path);
    let term_to_ges4 = s.flows.iter().position(|f| f.from == "term" && f.to == "ges4").expect("flow");
    let ges2_to_server = s.flows.iter().position(|f| f.from == "ges2" && f.to == "server").expect("flow");
    // Halfway through the pause after the first round.
    let mid =
        |flow: usize| 1_000 + flow as u64 * gscip_sim::sim::FLOW_SPACING_US + gscip_sim::sim::ROUND_GAP_US / 2 + 2_000;
    for (ge, flow) in [
        ("gen", term_to_ges4),
        ("ges4", term_to_ges4),
        ("gea", ges2_to_server),
        ("gen", ges2_to_server),
        ("ges2", ges2_to_server),
    ] {
        let mut sim = Simulation::new(&s).expect("sim");
        sim.inject(Fault::RestartGe { ge: ge.into(), at_us: mid(flow) });
        let r = sim.run();
        let f = &r.flows[flow];
        assert!(f.as_expected && f.delivered, "{ge} restart broke {}: {}", f.name, r.to_table());
        assert_eq!(r.summary.plaintext_leaks, 0, "{ge}");
        let c = *sim.engine(ge).expect("engine").counters();
        assert!(
            c.packets > 0 && c.negotiations_completed + c.restarts_requested + c.restarts_answered > 0
                || c.control_sent > 0,
            "{ge}'s new state took no part: {c:?}"
        );
        assert!(sim.flow_stats()[flow].retransmissions <= 1, "{ge}: {:?}", sim.flow_stats()[flow]);
    }
}

#[test]
fn an_unroutable_flow_is_a_scenario_error() {
    let text = r#"
name = "islands"
[[subnet]]
name = "a"
prefix = "10.0.0.0/24"
[[subnet]]
name = "b"
prefix = "10.0.1.0/24"
[[node]]
name = "x"
kind = "term"
interfaces = [{ subnet = "a", address = "10.0.0.1" }]
[[node]]
name = "y"
kind = "term"
interfaces = [{ subnet = "b", address = "10.0.1.1" }]
[[flow]]
from = "x"
to = "y"
proto = "udp"
port = 53
"#;
    let s = Scenario::parse(text, "islands.toml").expect("valid file");
    let e = Simulation::new(&s).expect_err("no route");
    assert!(e.to_string().contains("no route between x"), "{e}");
}

//! Every example scenario gives in the lab (real namespaces, gscipd, sockets, captures) the
//! report the simulator gives, `engine` and `setup_us` aside, with no plaintext leak. Root
//! only; fails, never skips, when the lab cannot run.

use gscip_lab::run::{run_scenario, RunOptions};
use gscip_lab::workspace_binary;
use gscip_sim::{Scenario, Simulation};
use std::path::Path;

fn compare(example: &str, prefix: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(example);
    let s = Scenario::from_file(&path).expect("example");
    let sim = Simulation::new(&s).expect("sim").run();
    let opts = RunOptions {
        gscipd: workspace_binary("gscipd"),
        gmsd: workspace_binary("gmsd"),
        work_dir: std::env::temp_dir().join(format!("gscip-lab-test-{prefix}")),
        ..RunOptions::new(prefix)
    };
    let _ = gscip_lab::clean(prefix);
    let lab = run_scenario(&s, &opts).unwrap_or_else(|e| panic!("the lab must run here (root): {e}"));
    let _ = std::fs::remove_dir_all(&opts.work_dir);
    assert_eq!(lab.engine, "lab");
    assert_eq!(lab.summary.plaintext_leaks, 0, "{}", lab.to_table());
    let strip = |r: &gscip_sim::Report| {
        let mut v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        v["engine"] = serde_json::Value::Null;
        for f in v["flows"].as_array_mut().unwrap() {
            f["setup_us"] = serde_json::Value::Null;
        }
        v
    };
    let (a, b) = (strip(&sim), strip(&lab));
    for (fs, fl) in a["flows"].as_array().unwrap().iter().zip(b["flows"].as_array().unwrap()) {
        assert_eq!(
            fs,
            fl,
            "{example}: the lab differs from the simulator\nsim: {}\nlab: {}",
            sim.to_table(),
            lab.to_table()
        );
    }
    assert_eq!(a, b);
    assert!(gscip_lab::namespaces_with_prefix(prefix).unwrap().is_empty(), "the lab was not removed");
}

#[test]
fn enterprise_in_the_lab_matches_the_simulator() {
    compare("enterprise.toml", "cmpent");
}

#[test]
fn nested_in_the_lab_matches_the_simulator() {
    compare("nested.toml", "cmpnest");
}

#[test]
fn servers_in_the_lab_matches_the_simulator() {
    compare("servers.toml", "cmpsrv");
}

#[test]
fn ipv6_in_the_lab_matches_the_simulator() {
    compare("ipv6.toml", "cmpv6");
}

#[test]
fn dualstack_in_the_lab_matches_the_simulator() {
    compare("dualstack.toml", "cmpdual");
}

//! Seed 001 §5 on its own network (Fig. 6 = examples/enterprise.toml without the later
//! variants) and on the move and add variants built from examples/enterprise.toml.
//! docs/load-report.md explains every figure and where it differs from the seed's.

use std::path::{Path, PathBuf};

use gscip_load::{
    compare, compare_json, compare_table, count, report_json, report_table, ChangeCount, Convention, Item, LoadCount,
    SubjectChange,
};
use gscip_sim::scenario::GroupDef;
use gscip_sim::Scenario;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn enterprise() -> Scenario {
    Scenario::from_file(&root().join("examples/enterprise.toml")).expect("examples/enterprise.toml parses")
}

fn fixture(name: &str) -> Scenario {
    Scenario::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("seed001").join(name)).expect("fixture parses")
}

/// Removes nodes (and the flows that name them) from a scenario.
fn without(mut s: Scenario, names: &[&str]) -> Scenario {
    s.nodes.retain(|n| !names.contains(&n.name.as_str()));
    s.flows.retain(|f| !names.contains(&f.from.as_str()) && !names.contains(&f.to.as_str()));
    s
}

/// Seed 001 Fig. 6: GEN, Term, GES1, GES2 on the LAN; GES3 and the server behind the GEA on
/// NET1. examples/enterprise.toml also holds ges4 (seed §5.4) and ges2-moved (seed §5.3).
fn fig6() -> Scenario {
    without(enterprise(), &["ges4", "ges2-moved"])
}

/// Fig. 6 after GES2 moved to NET1: the `ges2` node takes `ges2-moved`'s interface and route.
fn fig6_moved() -> Scenario {
    let e = enterprise();
    let moved = e.node("ges2-moved").expect("ges2-moved").clone();
    let mut s = fig6();
    let ges2 = s.nodes.iter_mut().find(|n| n.name == "ges2").expect("ges2");
    ges2.interfaces = moved.interfaces;
    ges2.routes = moved.routes;
    ges2.gateway = None;
    s
}

/// Fig. 6 plus enterprise.toml's ges4 (group 1, on NET1), in the file's node order.
fn fig6_plus_ges4() -> Scenario {
    let mut s = without(enterprise(), &["ges2-moved"]);
    s.flows.clear();
    s
}

/// Seed §5.4 as written: GES4 in group 1 and allowed to reach the server, through a new
/// group (4) that the GEA holds too.
fn fig6_plus_seed_ges4() -> Scenario {
    let mut s = fig6_plus_ges4();
    s.groups.push(GroupDef { id: 4, name: Some("server-access".into()) });
    for n in &mut s.nodes {
        match n.name.as_str() {
            "ges4" => n.groups = vec![1, 4],
            "gea" => n.groups.push(4),
            _ => {}
        }
    }
    s
}

fn sum(items: &[Item], element: &str, section: &str) -> u64 {
    items.iter().filter(|i| i.element == element && i.section() == section).map(|i| i.count).sum()
}

fn element_total(items: &[Item], element: &str) -> u64 {
    items.iter().filter(|i| i.element == element).map(|i| i.count).sum()
}

fn section_total(items: &[Item], section: &str) -> u64 {
    items.iter().filter(|i| i.section() == section).map(|i| i.count).sum()
}

#[test]
fn fig6_initial_load_is_38_against_174_with_the_rows_of_table_4() {
    let c = count(&fig6());
    assert_eq!((c.gscip, c.ipsec_ike), (38, 174), "\n{}", report_table(&c));

    // GSCIP/DPRP rows of Table 4: (element, group key information, GE information).
    for (e, gk, ge) in [("ges1", 3, 3), ("ges2", 6, 4), ("ges3", 3, 3), ("gen", 3, 3), ("gea", 6, 4)] {
        assert_eq!(sum(&c.gscip_items, e, "group key information"), gk, "{e}");
        assert_eq!(sum(&c.gscip_items, e, "process information"), 0, "{e}");
        assert_eq!(sum(&c.gscip_items, e, "GE information"), ge, "{e}");
    }
    assert_eq!(section_total(&c.gscip_items, "group key information"), 21);
    assert_eq!(section_total(&c.gscip_items, "GE information"), 17);

    // IPsec/IKE rows (ST1 = ges1, ST2 = ges2, ST3 = ges3, SGW = gen, Server = gea).
    for (e, psk, sp, ike) in
        [("ges1", 2, 14, 12), ("ges2", 4, 28, 12), ("ges3", 2, 14, 12), ("gen", 2, 16, 12), ("gea", 4, 28, 12)]
    {
        assert_eq!(sum(&c.ipsec_items, e, "pre-shared key information"), psk, "{e}");
        assert_eq!(sum(&c.ipsec_items, e, "security policy"), sp, "{e}");
        assert_eq!(sum(&c.ipsec_items, e, "IKE"), ike, "{e}");
    }
    assert_eq!(section_total(&c.ipsec_items, "pre-shared key information"), 14);
    assert_eq!(section_total(&c.ipsec_items, "security policy"), 100);
    assert_eq!(section_total(&c.ipsec_items, "IKE"), 60);

    // The policies are those of seed §5.2: ST1<->ST2, ST2<->Server, ST3<->Server in transport
    // mode, and the SGW's None and Discard.
    let policies: Vec<(&str, &str)> = c
        .ipsec_items
        .iter()
        .filter(|i| i.section() == "security policy")
        .map(|i| (i.element.as_str(), i.what.as_str()))
        .collect();
    let has = |e: &str, start: &str| policies.iter().any(|(x, w)| *x == e && w.starts_with(start));
    assert!(has("ges1", "security policy: IPsec transport with ges2"));
    assert!(has("ges2", "security policy: IPsec transport with ges1"));
    assert!(has("ges2", "security policy: IPsec transport with gea"));
    assert!(has("ges3", "security policy: IPsec transport with gea"));
    assert!(has("gea", "security policy: IPsec transport with ges2"));
    assert!(has("gea", "security policy: IPsec transport with ges3"));
    assert!(has("gen", "security policy: None"));
    assert!(has("gen", "security policy: Discard"));
    assert_eq!(policies.len(), 8);
}

#[test]
fn enterprise_file_as_a_whole_holds_two_more_ges() {
    // examples/enterprise.toml = Fig. 6 + ges4{1} + ges2-moved{1,2}: 7 GEs instead of 5, so
    // not the seed's 38/174 (docs/load-report.md).
    let c = count(&enterprise());
    assert_eq!((c.gscip, c.ipsec_ike), (54, 436), "\n{}", report_table(&c));
    // The two extra GEs are exactly the difference on the GSCIP side: 2 + 4 * groups each.
    assert_eq!(element_total(&c.gscip_items, "ges4"), 6);
    assert_eq!(element_total(&c.gscip_items, "ges2-moved"), 10);
}

#[test]
fn ges2_moving_to_net1_changes_0_gscip_items_and_40_ipsec_items() {
    let (before, after) = (fig6(), fig6_moved());
    assert_eq!(before.nodes.iter().filter(|n| n.name.starts_with("ges2")).count(), 1);
    let ch = compare(&before, &after, Convention::Complete);
    let table = compare_table(&count(&before), &count(&after), &ch);
    assert_eq!((ch.gscip, ch.ipsec_ike), (0, 40), "\n{table}");
    assert!(ch.gscip_items.is_empty());

    // GES2's own share is the seed's 20: the 4 identifiers of its two policies (its address,
    // in both directions of each) and the tunnel-mode policy toward the SGW (16).
    assert_eq!(element_total(&ch.ipsec_items, "ges2"), 20, "\n{table}");
    assert_eq!(
        ch.ipsec_items
            .iter()
            .filter(|i| i.element == "ges2" && i.what.contains("transport"))
            .map(|i| i.count)
            .sum::<u64>(),
        4
    );
    assert!(ch.ipsec_items.iter().any(|i| i.element == "ges2"
        && i.count == 16
        && i.what.contains("IPsec tunnel with gen")
        && i.what.ends_with("added")));
    // What the seed leaves out: the other end of each of those policies.
    assert_eq!(element_total(&ch.ipsec_items, "ges1"), 2);
    assert_eq!(element_total(&ch.ipsec_items, "gea"), 2);
    assert_eq!(element_total(&ch.ipsec_items, "gen"), 16);
    assert!(ch.ipsec_items.iter().all(|i| i.section() == "security policy"));
}

#[test]
fn adding_enterprise_ges4_changes_6_gscip_items_and_102_ipsec_items() {
    let (before, after) = (fig6(), fig6_plus_ges4());
    assert!(before.node("ges4").is_none() && after.node("ges4").is_some());
    let ch = compare(&before, &after, Convention::Complete);
    let table = compare_table(&count(&before), &count(&after), &ch);
    assert_eq!((ch.gscip, ch.ipsec_ike), (6, 102), "\n{table}");
    // GSCIP: only GES4's own record: user ID, mode, group 1 + group 1's key information.
    assert_eq!(element_total(&ch.gscip_items, "ges4"), 6);
    // IPsec: ST4 (PSK 2, IKE 12, transport with ges1 and ges2, tunnel with the SGW for the
    // terminal) and the other end of each of its three policies.
    assert_eq!(element_total(&ch.ipsec_items, "ges4"), 2 + 12 + 14 + 14 + 16);
    assert_eq!(element_total(&ch.ipsec_items, "ges1"), 14);
    assert_eq!(element_total(&ch.ipsec_items, "ges2"), 14);
    assert_eq!(element_total(&ch.ipsec_items, "gen"), 16);
    assert_eq!(count(&after).gscip, 44);
}

#[test]
fn adding_the_seeds_ges4_with_server_access_changes_14_gscip_items_and_134_ipsec_items() {
    let (before, after) = (fig6(), fig6_plus_seed_ges4());
    let ch = compare(&before, &after, Convention::Complete);
    let table = compare_table(&count(&before), &count(&after), &ch);
    assert_eq!((ch.gscip, ch.ipsec_ike), (14, 134), "\n{table}");
    // The seed's 10 is GES4's own record (GE information 4, two group keys 6); the GEA's new
    // membership of group 4 (GE information 1, group key 3) is the difference.
    assert_eq!(element_total(&ch.gscip_items, "ges4"), 10);
    assert_eq!(element_total(&ch.gscip_items, "gea"), 4);
    // The seed's 72 are among our items: ST4's PSK (4), IKE (12) and policies with ST2 and
    // the server (28), and ST2's and the server's policies toward ST4 (28).
    let seed_items: u64 = ch
        .ipsec_items
        .iter()
        .filter(|i| {
            (i.element == "ges4"
                && (i.section() != "security policy" || i.what.contains("with ges2,") || i.what.contains("with gea,")))
                || ((i.element == "ges2" || i.element == "gea") && i.what.contains("with ges4,"))
        })
        .map(|i| i.count)
        .sum();
    assert_eq!(seed_items, 72, "\n{table}");
    // The rest: GES4's policies with GES1 (14) and the SGW (16), their other ends (30), and
    // the server's pre-shared key for the new group (2).
    assert_eq!(ch.ipsec_ike - seed_items, 62);
}

#[test]
fn seed_convention_reproduces_0_against_20_when_ges2_moves() {
    // The command's default: `gscip load-report fig6.toml --compare fig6-ges2-moved.toml`.
    let (before, after) = (fixture("fig6.toml"), fixture("fig6-ges2-moved.toml"));
    let ch = compare(&before, &after, Convention::default());
    let table = compare_table(&count(&before), &count(&after), &ch);
    assert_eq!(ch.convention, Convention::Seed);
    assert_eq!((ch.gscip, ch.ipsec_ike), (0, 20), "\n{table}");
    assert_eq!(ch.subjects.len(), 1);
    assert_eq!((ch.subjects[0].ge.as_str(), ch.subjects[0].change), ("ges2", SubjectChange::Moves));
    // Seed §5.3: ST2's identifiers (4) and its new tunnel-mode policy toward the SGW (16).
    assert!(ch.ipsec_items.iter().all(|i| i.element == "ges2"), "\n{table}");
    assert!(ch.ipsec_items.iter().any(|i| i.count == 16 && i.what.contains("IPsec tunnel with gen")));
    // The other ends are reported, not counted.
    assert_eq!(ch.every_element(), (0, 40));
    assert!(table.contains("not counted by this convention"), "\n{table}");
}

#[test]
fn seed_convention_reproduces_10_against_72_when_ges4_is_added() {
    // Seed §5.4 with the seed's own IPsec design for ST4 (fig6-ges4-seed.toml's [load] table).
    let (before, after) = (fixture("fig6.toml"), fixture("fig6-ges4-seed.toml"));
    let ch = compare(&before, &after, Convention::Seed);
    let (b, a) = (count(&before), count(&after));
    let table = compare_table(&b, &a, &ch);
    assert_eq!((ch.gscip, ch.ipsec_ike), (10, 72), "\n{table}");
    assert_eq!((ch.subjects[0].ge.as_str(), ch.subjects[0].change), ("ges4", SubjectChange::Joins));
    // GSCIP: GES4's GE information (ID, mode, groups 1 and 4) and its two group keys.
    assert_eq!(element_total(&ch.gscip_items, "ges4"), 10);
    // IPsec: ST4 (PSK 4, policies with ST2 and the server 28, IKE 12) = 44, and the policies
    // ST2 and the server add toward it (28).
    assert_eq!(element_total(&ch.ipsec_items, "ges4"), 44);
    assert_eq!(element_total(&ch.ipsec_items, "ges2"), 14);
    assert_eq!(element_total(&ch.ipsec_items, "gea"), 14);
    // Not counted by the seed: the GEA's membership of the new group (4) and its PSK (2).
    assert_eq!(ch.every_element(), (14, 74));
    // The design leaves out what SPEC section 3 would protect too, and the report says so.
    assert_eq!(a.ipsec_design_left_out.len(), 2, "{:?}", a.ipsec_design_left_out);
    assert!(report_table(&a).contains("ges1 <-> ges4"));
    // Without the seed's design, the same network costs ST4 its policies with ST1 and the SGW.
    let full = compare(&before, &fixture("fig6-ges4-server.toml"), Convention::Seed);
    assert_eq!((full.gscip, full.ipsec_ike), (10, 132));
}

#[test]
fn the_seed001_files_are_the_networks_built_here() {
    let zero = |a: &Scenario, b: &Scenario| {
        let ch = compare(a, b, Convention::Complete);
        assert_eq!((ch.gscip, ch.ipsec_ike), (0, 0), "{} vs {}:\n{:?}", a.name, b.name, ch);
        assert_eq!(count(a), count(b));
    };
    zero(&fixture("fig6.toml"), &fig6());
    zero(&fixture("fig6-ges2-moved.toml"), &fig6_moved());
    zero(&fixture("fig6-ges4.toml"), &fig6_plus_ges4());
    zero(&fixture("fig6-ges4-server.toml"), &fig6_plus_seed_ges4());
}

#[test]
fn the_seed001_files_run_as_expected_in_the_simulator() {
    // GSCIP needs no change for the move or the new member: the simulator runs the networks
    // as they are and every flow gets the SPEC section 3 outcome.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("seed001");
    for f in ["fig6.toml", "fig6-ges2-moved.toml", "fig6-ges4.toml", "fig6-ges4-server.toml", "fig6-ges4-seed.toml"] {
        let r = gscip_sim::run_file(&dir.join(f), &gscip_sim::Overrides::default()).expect("simulates");
        assert_eq!(r.summary.not_as_expected, 0, "{f}: {}", serde_json::to_string_pretty(&r).unwrap_or_default());
        assert_eq!(r.summary.plaintext_leaks, 0, "{f}");
    }
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

#[test]
fn json_shapes() {
    let before: LoadCount = count(&fig6());
    let r = report_json(&before);
    assert_eq!(keys(&r)[..2], ["gscip", "ipsec_ike"]);
    assert_eq!(r["gscip"], 38);
    assert_eq!(r["ipsec_ike"], 174);
    assert_eq!(r["items"]["gscip"].as_array().map(Vec::len), Some(before.gscip_items.len()));
    assert_eq!(r["items"]["ipsec_ike"][0]["element"], "gen");
    assert!(r["items"]["ipsec_ike"][0]["what"].is_string() && r["items"]["ipsec_ike"][0]["count"].is_u64());
    let ges2 = &r["elements"]["gscip"][2];
    assert_eq!(ges2["element"], "ges2");
    assert_eq!(ges2["group key information"], 6);
    assert_eq!(ges2["GE information"], 4);
    assert_eq!(ges2["total"], 10);
    assert_eq!(r["elements"]["ipsec_ike"][0]["security policy"], 16);

    let after = count(&fig6_moved());
    let ch: ChangeCount = compare(&fig6(), &fig6_moved(), Convention::Complete);
    let c = compare_json(&before, &after, &ch);
    assert_eq!(
        keys(&c),
        ["change", "convention", "subjects", "change_every_element", "before", "after", "items", "items_not_counted"]
    );
    assert_eq!(keys(&c["change"]), ["gscip", "ipsec_ike"]);
    assert_eq!(c["change"]["gscip"], 0);
    assert_eq!(c["change"]["ipsec_ike"], 40);
    assert_eq!(c["convention"], "complete");
    assert_eq!(c["subjects"], serde_json::json!([{ "ge": "ges2", "change": "moves" }]));
    assert_eq!(c["change_every_element"]["ipsec_ike"], 40);
    let seed = compare_json(&before, &after, &compare(&fig6(), &fig6_moved(), Convention::Seed));
    assert_eq!((seed["convention"].as_str(), seed["change"]["ipsec_ike"].as_u64()), (Some("seed"), Some(20)));
    assert_eq!(seed["change_every_element"]["ipsec_ike"], 40);
    assert_eq!(seed["items_not_counted"]["ipsec_ike"].as_array().map(Vec::len), Some(3));
    assert_eq!(c["before"], r);
    assert_eq!(c["after"]["ipsec_ike"], after.ipsec_ike);
    assert_eq!(c["items"]["ipsec_ike"].as_array().map(Vec::len), Some(ch.ipsec_items.len()));
}

#[test]
fn tables_explain_every_item() {
    let c = count(&fig6());
    let t = report_table(&c);
    assert!(t.starts_with("management load (configuration items): GSCIP/DPRP 38, IPsec/IKE 174\n"), "{t}");
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", "21", "0", "17", "38"]), "{t}");
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["total", "14", "100", "60", "174"]), "{t}");
    for i in c.gscip_items.iter().chain(&c.ipsec_items) {
        assert!(t.contains(&i.what), "{} missing", i.what);
    }
    let ch = compare(&fig6(), &fig6_moved(), Convention::Complete);
    let t = compare_table(&c, &count(&fig6_moved()), &ch);
    assert!(t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["GSCIP/DPRP", "38", "38", "0", "0"]), "{t}");
    assert!(
        t.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["IPsec/IKE", "174", "206", "40", "40"]),
        "{t}"
    );
    assert!(t.contains("GSCIP/DPRP changes:\n  (none)\n"), "{t}");
    for i in &ch.ipsec_items {
        assert!(t.contains(&i.what), "{} missing", i.what);
    }
}

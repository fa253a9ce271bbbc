//! The counting rules on small networks, and robustness on every example.

use std::path::Path;

use gscip_load::{
    compare, compare_json, compare_table, count, report_json, report_table, Convention, Item, SubjectChange,
    GE_INFO_FIXED_ITEMS, GROUP_KEY_ITEMS, IKE_ITEMS, POLICY_PLAIN_ITEMS, POLICY_TRANSPORT_ITEMS, POLICY_TUNNEL_ITEMS,
    PSK_ITEMS,
};
use gscip_sim::Scenario;

fn parse(text: &str) -> Scenario {
    match Scenario::parse(text, "test.toml") {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    }
}

fn total(items: &[Item], element: &str) -> u64 {
    items.iter().filter(|i| i.element == element).map(|i| i.count).sum()
}

fn policies(items: &[Item], element: &str) -> Vec<String> {
    items
        .iter()
        .filter(|i| i.element == element && i.section() == "security policy")
        .map(|i| format!("{} {}", i.count, i.what.trim_start_matches("security policy: ")))
        .collect()
}

const HEAD: &str = r#"
name = "t"
[[group]]
id = 1
[[group]]
id = 2
[[subnet]]
name = "net"
prefix = "10.0.0.0/24"
[[subnet]]
name = "lan"
prefix = "10.1.0.0/24"
"#;

fn ges(name: &str, mode: &str, groups: &str, subnet: &str, addr: &str, extra: &str) -> String {
    format!(
        "[[node]]\nname = \"{name}\"\nkind = \"ges\"\nmode = \"{mode}\"\ngroups = [{groups}]\n\
         interfaces = [{{ subnet = \"{subnet}\", address = \"{addr}\" }}]\n{extra}\n"
    )
}

/// Two open GESs of group 1, `a` and `b`, on one subnet.
fn two_ges() -> String {
    format!("{HEAD}{}{}", ges("a", "open", "1", "net", "10.0.0.11", ""), ges("b", "open", "1", "net", "10.0.0.12", ""))
}

fn gen(mode: &str, groups: &str) -> String {
    format!(
        "[[node]]\nname = \"gen\"\nkind = \"gen\"\nmode = \"{mode}\"\ngroups = [{groups}]\ninterfaces = [\n\
         {{ subnet = \"net\", address = \"10.0.0.1\" }},\n{{ subnet = \"lan\", address = \"10.1.0.1\", inside = true }},\n]\n"
    )
}

const TERM: &str = "[[node]]\nname = \"term\"\nkind = \"term\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.10\" }]\ngateway = \"10.1.0.1\"\n";
const VIA_GEN: &str = "routes = [{ to = \"10.1.0.0/24\", via = \"10.0.0.1\" }]";

#[test]
fn per_setting_item_counts_are_those_of_table_3() {
    assert_eq!(GROUP_KEY_ITEMS.len(), 3);
    assert_eq!(GE_INFO_FIXED_ITEMS.len() + 1, 3); // user ID, mode, one group number
    assert_eq!(PSK_ITEMS.len(), 2);
    assert_eq!(2 * POLICY_PLAIN_ITEMS.len(), 8);
    assert_eq!(2 * POLICY_TRANSPORT_ITEMS.len(), 14);
    assert_eq!(2 * POLICY_TUNNEL_ITEMS.len(), 16);
    assert_eq!(IKE_ITEMS.len(), 12);
}

#[test]
fn one_gen_and_one_ges_need_a_tunnel() {
    // term behind gen{1} CL; ges{1} OP outside: term<->ges is protected by (gen, ges).
    let s =
        parse(&format!("{HEAD}{}{TERM}{}", gen("closed", "1"), ges("ges", "open", "1", "net", "10.0.0.10", VIA_GEN)));
    let c = count(&s);
    assert_eq!(total(&c.gscip_items, "gen"), 2 + 1 + 3);
    assert_eq!(total(&c.gscip_items, "ges"), 2 + 1 + 3);
    assert_eq!(c.gscip, 12);
    // gen: PSK 2, tunnel 16, Discard 8 (closed; nothing to pass, so no None), IKE 12.
    assert_eq!(policies(&c.ipsec_items, "gen").len(), 2, "{:?}", policies(&c.ipsec_items, "gen"));
    assert_eq!(total(&c.ipsec_items, "gen"), 2 + 16 + 8 + 12);
    assert_eq!(total(&c.ipsec_items, "ges"), 2 + 16 + 12);
    assert_eq!(c.ipsec_ike, 38 + 30);
    assert_eq!(total(&c.ipsec_items, "term"), 0);
}

#[test]
fn an_open_gen_needs_no_discard_or_none_policy() {
    let s = parse(&format!("{HEAD}{}{TERM}{}", gen("open", "1"), ges("ges", "open", "1", "net", "10.0.0.10", VIA_GEN)));
    let c = count(&s);
    assert_eq!(policies(&c.ipsec_items, "gen").len(), 1);
    assert_eq!(total(&c.ipsec_items, "gen"), 2 + 16 + 12);
}

#[test]
fn a_closed_gen_passing_end_to_end_protection_needs_none_and_discard() {
    // ges-in{1} behind gen{2} CL talks to ges-out{1}: protected end to end, gen relays.
    let s = parse(&format!(
        "{HEAD}{}{}{}",
        gen("closed", "2"),
        ges("ges-in", "open", "1", "lan", "10.1.0.11", "gateway = \"10.1.0.1\""),
        ges("ges-out", "open", "1", "net", "10.0.0.10", VIA_GEN)
    ));
    let c = count(&s);
    let p = policies(&c.ipsec_items, "gen");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].starts_with("8 None") && p[1].starts_with("8 Discard"), "{p:?}");
    assert_eq!(total(&c.ipsec_items, "ges-in"), 2 + 14 + 12);
    assert_eq!(total(&c.ipsec_items, "ges-out"), 2 + 14 + 12);
}

#[test]
fn two_groups_give_one_policy_per_protecting_pair() {
    // a{1}, b{2}, c{1,2}, all open on one link: a<->c (group 1), b<->c (group 2), a<->b plain.
    let s = parse(&format!(
        "{HEAD}{}{}{}",
        ges("a", "open", "1", "net", "10.0.0.11", ""),
        ges("b", "open", "2", "net", "10.0.0.12", ""),
        ges("c", "open", "1, 2", "net", "10.0.0.13", "")
    ));
    let c = count(&s);
    assert_eq!(c.gscip, 6 + 6 + 10);
    assert_eq!(total(&c.ipsec_items, "a"), 2 + 14 + 12);
    assert_eq!(total(&c.ipsec_items, "b"), 2 + 14 + 12);
    assert_eq!(total(&c.ipsec_items, "c"), 4 + 28 + 12);
    assert_eq!(c.ipsec_ike, 100);
    assert!(policies(&c.ipsec_items, "c").iter().any(|p| p.contains("with a,") && p.contains("group 1")));
    assert!(policies(&c.ipsec_items, "c").iter().any(|p| p.contains("with b,") && p.contains("group 2")));
}

#[test]
fn no_common_group_means_no_policy() {
    let s = parse(&format!(
        "{HEAD}{}{}",
        ges("a", "closed", "1", "net", "10.0.0.11", ""),
        ges("b", "open", "2", "net", "10.0.0.12", "")
    ));
    let c = count(&s);
    assert_eq!(c.gscip, 12);
    assert_eq!(c.ipsec_ike, 2 * (2 + 12));
    assert!(policies(&c.ipsec_items, "a").is_empty());
}

#[test]
fn a_ge_without_groups_still_has_its_fixed_items() {
    let s = parse(&format!("{HEAD}{}", ges("a", "open", "", "net", "10.0.0.11", "")));
    let c = count(&s);
    assert_eq!(c.gscip, 2);
    assert_eq!(c.ipsec_ike, 12);
}

#[test]
fn an_empty_network_counts_nothing() {
    let c = count(&parse("name = \"empty\""));
    assert_eq!((c.gscip, c.ipsec_ike), (0, 0));
    assert!(report_table(&c).contains("GSCIP/DPRP 0, IPsec/IKE 0"));
    assert_eq!(report_json(&c)["gscip"], 0);
}

#[test]
fn a_gea_in_front_of_two_servers_is_one_element() {
    let s = parse(&format!(
        "{HEAD}{}{}{}{}",
        "[[node]]\nname = \"web\"\nkind = \"term\"\ninterfaces = [{ subnet = \"net\", address = \"10.0.0.80\" }]\n",
        "[[node]]\nname = \"db\"\nkind = \"term\"\ninterfaces = [{ subnet = \"net\", address = \"10.0.0.81\" }]\n",
        "[[node]]\nname = \"gea\"\nkind = \"gea\"\nmode = \"closed\"\ngroups = [1]\nprotects = [\"web\", \"db\"]\n",
        ges("a", "open", "1", "net", "10.0.0.11", "")
    ));
    let c = count(&s);
    assert_eq!(total(&c.ipsec_items, "gea"), 2 + 14 + 12, "{}", report_table(&c));
    let p = policies(&c.ipsec_items, "gea");
    assert!(p[0].contains("db<->a group 1") && p[0].contains("web<->a group 1"), "{p:?}");
}

#[test]
fn changes_are_counted_item_by_item() {
    let base = two_ges();
    let s = parse(&base);
    let same = compare(&s, &s, Convention::Complete);
    assert_eq!((same.gscip, same.ipsec_ike), (0, 0));
    assert!(same.gscip_items.is_empty() && same.ipsec_items.is_empty());

    // a changes mode: one GSCIP item; IPsec hosts have no mode item (seed: no policy for it).
    let closed = parse(&base.replacen("mode = \"open\"", "mode = \"closed\"", 1));
    let ch = compare(&s, &closed, Convention::Complete);
    assert_eq!((ch.gscip, ch.ipsec_ike), (1, 0));
    assert!(ch.gscip_items[0].what.ends_with("mode changed"), "{:?}", ch.gscip_items);

    // b joins group 2: a group number and a group key (4); IPsec: a PSK for group 2 (2).
    let joined = parse(&base.replacen(
        "groups = [1]\ninterfaces = [{ subnet = \"net\", address = \"10.0.0.12\"",
        "groups = [1, 2]\ninterfaces = [{ subnet = \"net\", address = \"10.0.0.12\"",
        1,
    ));
    let ch = compare(&s, &joined, Convention::Complete);
    assert_eq!((ch.gscip, ch.ipsec_ike), (4, 2), "{ch:?}");

    // b changes address: nothing for GSCIP; both ends' policy selectors for IPsec (2 + 2).
    let moved = parse(&base.replace("10.0.0.12", "10.0.0.99"));
    let ch = compare(&s, &moved, Convention::Complete);
    assert_eq!((ch.gscip, ch.ipsec_ike), (0, 4), "{ch:?}");

    // Removing b removes its items and a's policy toward it.
    let removed = parse(&format!("{HEAD}{}", ges("a", "open", "1", "net", "10.0.0.11", "")));
    let ch = compare(&s, &removed, Convention::Complete);
    assert_eq!((ch.gscip, ch.ipsec_ike), (6, 2 + 14 + 12 + 14), "{ch:?}");
    assert!(ch.ipsec_items.iter().all(|i| i.what.ends_with("removed")));
    // and the way back is the same amount, as additions.
    let back = compare(&removed, &s, Convention::Complete);
    assert_eq!((back.gscip, back.ipsec_ike), (ch.gscip, ch.ipsec_ike));
}

#[test]
fn the_seed_convention_counts_the_ges_that_join_leave_or_move() {
    let base = two_ges();
    let s = parse(&base);
    let seed = |x: &Scenario, y: &Scenario| compare(x, y, Convention::Seed);

    // No GE joins, leaves or moves: nothing to single out, every item counts.
    let closed = parse(&base.replacen("mode = \"open\"", "mode = \"closed\"", 1));
    let ch = seed(&s, &closed);
    assert!(ch.subjects.is_empty());
    assert_eq!((ch.gscip, ch.ipsec_ike), (1, 0));
    assert!(ch.not_counted_gscip.is_empty() && ch.not_counted_ipsec.is_empty());

    // b moves: its own items only (its address in its policy: 2); a's side is not counted.
    let moved = parse(&base.replace("10.0.0.12", "10.0.0.99"));
    let ch = seed(&s, &moved);
    assert_eq!(ch.subjects.len(), 1);
    assert_eq!((ch.subjects[0].ge.as_str(), ch.subjects[0].change), ("b", SubjectChange::Moves));
    assert_eq!((ch.gscip, ch.ipsec_ike), (0, 2), "{ch:?}");
    assert!(ch.ipsec_items.iter().all(|i| i.element == "b"));
    assert_eq!(ch.every_element(), (0, 4));
    assert_eq!(total(&ch.not_counted_ipsec, "a"), 2);

    // b leaves: its items and a's policy toward it, as with every element.
    let removed = parse(&format!("{HEAD}{}", ges("a", "open", "1", "net", "10.0.0.11", "")));
    let ch = seed(&s, &removed);
    assert_eq!(ch.subjects[0].change, SubjectChange::Leaves);
    assert_eq!((ch.gscip, ch.ipsec_ike), (6, 2 + 14 + 12 + 14), "{ch:?}");
    // b joins: the same amount, as additions; a's new policy toward b is counted.
    let ch = seed(&removed, &s);
    assert_eq!(ch.subjects[0].change, SubjectChange::Joins);
    assert_eq!((ch.gscip, ch.ipsec_ike), (6, 42), "{ch:?}");
    assert!(ch.ipsec_items.iter().any(|i| i.element == "a" && i.what.contains("with b,")));

    // A GES replaced by a plain terminal leaves.
    let term = parse(&format!(
        "{HEAD}{}[[node]]\nname = \"b\"\nkind = \"term\"\ninterfaces = [{{ subnet = \"net\", address = \"10.0.0.12\" }}]\n",
        ges("a", "open", "1", "net", "10.0.0.11", "")
    ));
    let ch = seed(&s, &term);
    assert_eq!(ch.subjects.len(), 1);
    assert_eq!((ch.subjects[0].ge.as_str(), ch.subjects[0].change), ("b", SubjectChange::Leaves));
}

#[test]
fn an_ipsec_design_leaves_pairs_out_at_both_ends_and_says_so() {
    let base = format!(
        "{HEAD}{}{}{}",
        ges("a", "open", "1", "net", "10.0.0.11", ""),
        ges("b", "open", "1", "net", "10.0.0.12", ""),
        ges("c", "open", "1", "net", "10.0.0.13", "")
    );
    let full = count(&parse(&base));
    assert_eq!(policies(&full.ipsec_items, "a").len(), 2);
    assert!(full.ipsec_design_left_out.is_empty());
    let designed = count(&parse(&format!("{base}[load]\nipsec_peers = {{ a = [\"b\"] }}\n")));
    assert_eq!(policies(&designed.ipsec_items, "a").len(), 1);
    assert_eq!(policies(&designed.ipsec_items, "c").len(), 1, "c keeps b, loses a");
    assert_eq!(full.ipsec_ike - designed.ipsec_ike, 2 * 14);
    assert_eq!(full.gscip, designed.gscip, "GSCIP needs no design");
    assert_eq!(designed.ipsec_design_left_out.len(), 1);
    assert!(designed.ipsec_design_left_out[0].starts_with("a <-> c"), "{:?}", designed.ipsec_design_left_out);
    assert!(report_table(&designed).contains("a <-> c"));
    assert_eq!(report_json(&designed)["ipsec_design_left_out"][0], designed.ipsec_design_left_out[0].as_str());
}

#[test]
fn a_ges_replaced_by_a_plain_terminal_turns_transport_into_tunnel() {
    // ges-out{1} talks to ges-in{1} behind an open gen{1} (transport, gen relays). When
    // ges-in loses its GE software, the pair becomes (gen, ges-out): a tunnel.
    let before = parse(&format!(
        "{HEAD}{}{}{}",
        gen("open", "1"),
        ges("ges-in", "open", "1", "lan", "10.1.0.11", "gateway = \"10.1.0.1\""),
        ges("ges-out", "open", "1", "net", "10.0.0.10", VIA_GEN)
    ));
    let after = parse(&format!(
        "{HEAD}{}{}{}",
        gen("open", "1"),
        "[[node]]\nname = \"ges-in\"\nkind = \"term\"\ninterfaces = [{ subnet = \"lan\", address = \"10.1.0.11\" }]\ngateway = \"10.1.0.1\"\n",
        ges("ges-out", "open", "1", "net", "10.0.0.10", VIA_GEN)
    ));
    let c = count(&before);
    assert_eq!(policies(&c.ipsec_items, "ges-out").len(), 1, "{}", report_table(&c));
    assert!(policies(&c.ipsec_items, "ges-out")[0].contains("transport with ges-in"));
    let c = count(&after);
    assert!(policies(&c.ipsec_items, "ges-out")[0].contains("tunnel with gen"));
    let ch = compare(&before, &after, Convention::Complete);
    // GSCIP: ges-in's record goes (6). IPsec: ges-in's element goes (2 + 14 + 12), ges-out
    // drops its transport policy (14) and adds a tunnel one (16), the GEN adds one (16).
    assert_eq!((ch.gscip, ch.ipsec_ike), (6, 28 + 30 + 16), "{ch:?}");
}

#[test]
fn every_example_counts_and_compares_without_panicking() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("examples/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.extend(
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("seed001"))
            .expect("seed001/")
            .filter_map(|e| e.ok().map(|e| e.path())),
    );
    files.sort();
    assert!(files.len() >= 5, "{files:?}");
    let scenarios: Vec<Scenario> = files.iter().filter_map(|p| Scenario::from_file(p).ok()).collect();
    assert_eq!(scenarios.len(), files.len(), "every example parses");
    for s in &scenarios {
        let c = count(s);
        assert!(c.gscip > 0 && c.ipsec_ike > 0, "{}", s.name);
        assert_eq!(c.gscip, c.gscip_items.iter().map(|i| i.count).sum::<u64>());
        assert_eq!(c.ipsec_ike, c.ipsec_items.iter().map(|i| i.count).sum::<u64>());
        // Every GE is in both systems, and only GEs.
        let ges: Vec<&str> = s.nodes.iter().filter(|n| n.kind.is_ge()).map(|n| n.name.as_str()).collect();
        assert!(c.gscip_items.iter().chain(&c.ipsec_items).all(|i| ges.contains(&i.element.as_str())));
        assert!(!report_table(&c).is_empty());
        assert!(report_json(&c)["items"]["gscip"].is_array());
        for t in &scenarios {
            let ch = compare(s, t, Convention::Complete);
            let _ = compare_table(&c, &count(t), &ch);
            let _ = compare_json(&c, &count(t), &ch);
            if s.name == t.name {
                assert_eq!((ch.gscip, ch.ipsec_ike), (0, 0), "{}", s.name);
            }
            // The seed's convention counts a part of the same changes.
            let seed = compare(s, t, Convention::Seed);
            assert_eq!(seed.every_element(), (ch.gscip, ch.ipsec_ike), "{} -> {}", s.name, t.name);
            assert!(seed.gscip <= ch.gscip && seed.ipsec_ike <= ch.ipsec_ike);
            let _ = compare_table(&c, &count(t), &seed);
        }
    }
}

#[test]
fn nested_gens_count_inner_and_outer_gateways() {
    let s = Scenario::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/nested.toml"))
        .expect("nested.toml");
    let c = count(&s);
    // term-b -> hq-admin is protected by (gen-b, hq-admin): a tunnel at both ends.
    assert!(policies(&c.ipsec_items, "gen-b").iter().any(|p| p.contains("IPsec tunnel with hq-admin")));
    assert!(policies(&c.ipsec_items, "hq-admin").iter().any(|p| p.contains("IPsec tunnel with gen-b")));
    // gen-div (closed) relays group 20 and passes dmz traffic: None and Discard.
    let p = policies(&c.ipsec_items, "gen-div");
    assert!(p.iter().any(|x| x.starts_with("8 None")) && p.iter().any(|x| x.starts_with("8 Discard")), "{p:?}");
    // gen-a (open): no None/Discard.
    assert!(!policies(&c.ipsec_items, "gen-a").iter().any(|x| x.contains("None") || x.contains("Discard")));
}

#[test]
fn hand_edited_scenarios_never_panic() {
    // Scenarios built in code skip validation: dangling subnets, protects and next hops.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let base = Scenario::from_file(&dir.join("enterprise.toml")).expect("enterprise.toml");
    let mut variants = Vec::new();
    let mut s = base.clone();
    s.subnets.clear();
    variants.push(s);
    let mut s = base.clone();
    for n in &mut s.nodes {
        n.protects = vec!["nobody".into()];
        n.gateway = Some("192.0.2.1".parse().expect("address"));
        n.groups.extend([1, 1, 9]);
    }
    variants.push(s);
    let mut s = base.clone();
    for n in &mut s.nodes {
        n.interfaces.clear();
    }
    variants.push(s);
    let mut s = base.clone();
    s.nodes.reverse();
    variants.push(s);
    for v in &variants {
        let c = count(v);
        let ch = compare(&base, v, Convention::Complete);
        let _ = (report_table(&c), report_json(&c), compare_table(&count(&base), &c, &ch));
    }
}

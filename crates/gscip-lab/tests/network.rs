//! Lab network tests. They need root and network namespaces (CI has both) and fail loudly,
//! never skip, when they cannot run.

use gscip_lab::{address_for, clean, namespaces_with_prefix, Lab};
use gscip_sim::Scenario;
use std::path::Path;

fn scenario(name: &str) -> Scenario {
    Scenario::from_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)).expect("example")
}

/// A TCP exchange with python3's sockets: server in one namespace, client in another.
fn tcp_reaches(lab: &Lab, s: &Scenario, from: &str, to: &str, port: u16) -> bool {
    let from_any =
        s.nodes.iter().find(|n| n.name == from).and_then(|n| n.interfaces.first()).map(|i| i.address).unwrap();
    let dst = address_for(s, to, from_any).expect("address");
    let family = if dst.is_ipv6() { "AF_INET6" } else { "AF_INET" };
    let server = format!(
        "import socket\ns=socket.socket(socket.{family})\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{dst}',{port}))\ns.listen()\ns.settimeout(5)\nc,_=s.accept()\nc.sendall(b'hello '+c.recv(64))\n"
    );
    let ns = lab.namespace(to).unwrap().to_owned();
    let mut srv = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "python3", "-c", &server])
        .spawn()
        .expect("python3 in the lab");
    let client = format!(
        "import socket,time\nfor _ in range(50):\n  try:\n    c=socket.create_connection(('{dst}',{port}),timeout=2); break\n  except OSError: time.sleep(0.05)\n\
         c.sendall(b'{from}')\nprint(c.recv(64).decode())\n"
    );
    let out = lab.exec(from, "python3", &["-c", &client]);
    let _ = srv.wait();
    matches!(out, Ok(ref o) if o.trim() == format!("hello {from}"))
}

#[test]
fn the_enterprise_network_is_built_routed_and_removed() {
    let s = scenario("enterprise.toml");
    let prefix = "gstnet1";
    let _ = clean(prefix);
    {
        let lab = Lab::build(&s, prefix).unwrap_or_else(|e| panic!("the lab must run here (root, iproute2): {e}"));
        assert_eq!(namespaces_with_prefix(prefix).unwrap().len(), s.nodes.len() + 1);
        // Across the GEN, and through the GEA's transparent bridge to the server.
        assert!(tcp_reaches(&lab, &s, "ges2", "server", 8080), "ges2 -> server");
        assert!(tcp_reaches(&lab, &s, "term", "ges4", 8081), "term -> ges4 across gen");
        assert!(tcp_reaches(&lab, &s, "ges3", "ges1", 8082), "ges3 -> ges1 (return routes)");
        // The GEA namespace bridges; it has no address of its own.
        let addrs = lab.exec("gea", "ip", &["-o", "addr", "show", "scope", "global"]).unwrap();
        assert!(addrs.trim().is_empty(), "gea has addresses: {addrs}");
    }
    assert!(namespaces_with_prefix(prefix).unwrap().is_empty(), "the lab was not removed");
}

#[test]
fn ipv6_networks_work_too() {
    let s = scenario("ipv6.toml");
    let prefix = "gstnet2";
    let _ = clean(prefix);
    let lab = Lab::build(&s, prefix).unwrap_or_else(|e| panic!("the lab must run here: {e}"));
    let f = s.flows.iter().find(|f| f.expect.is_some()).expect("a flow");
    assert!(tcp_reaches(&lab, &s, &f.from, &f.to, 8090), "{} -> {}", f.from, f.to);
    lab.teardown().unwrap();
    assert!(namespaces_with_prefix(prefix).unwrap().is_empty());
}

#[test]
fn a_taken_name_is_a_clear_error_and_leaves_nothing_behind() {
    let s = scenario("enterprise.toml");
    let prefix = "gstnet3";
    let _ = clean(prefix);
    let first = Lab::build(&s, prefix).expect("first lab");
    let err = Lab::build(&s, prefix).expect_err("the names are taken");
    assert!(err.to_string().contains("already exists") && err.to_string().contains("gscip lab clean gstnet3"), "{err}");
    drop(first);
    assert!(namespaces_with_prefix(prefix).unwrap().is_empty());
    // A build that fails half way removes what it made.
    let mut bad = s.clone();
    bad.nodes[1].routes.push(gscip_sim::scenario::RouteDef {
        to: "10.99.0.0/16".parse().unwrap(),
        via: "10.0.1.250".parse().unwrap(), // on the subnet, but nobody: still a valid route...
    });
    bad.nodes[1].routes.push(gscip_sim::scenario::RouteDef {
        to: "10.99.0.0/16".parse().unwrap(), // ...added twice: `ip route add` fails
        via: "10.0.1.250".parse().unwrap(),
    });
    let err = Lab::build(&bad, prefix).expect_err("duplicate route");
    assert!(err.to_string().contains("route add"), "{err}");
    assert!(namespaces_with_prefix(prefix).unwrap().is_empty(), "a failed build left namespaces behind");
}

//! gmsd over HTTPS against both databases: enrollment and mutual TLS, key push by long-poll,
//! leave and revoke, error answers, and keys kept out of the audit log and Debug output.

mod common;

use common::{databases, Server};
use gscip_gms::GmsConfig;
use gscip_gms_client::api::{GeStatus, NewGe};
use gscip_gms_client::client::{enroll, AdminClient, ClientError, GeClient};
use gscip_gms_client::ge::{credentials, GmsEndpoint, GmsKeySource, StateDir};
use std::time::{Duration, Instant};

fn new_ge(name: &str, kind: &str, mode: &str, groups: &[u16]) -> NewGe {
    NewGe { name: name.into(), kind: kind.into(), mode: mode.into(), groups: groups.to_vec() }
}

/// Defines a GE and enrolls it into a fresh state directory.
fn enrolled(s: &Server, admin: &AdminClient, tmp: &std::path::Path, ge: NewGe) -> (StateDir, GeClient) {
    let name = ge.name.clone();
    admin.create_ge(&ge).unwrap();
    let token = admin.enrollment_token(&name, None).unwrap();
    let dir = StateDir::new(tmp.join(format!("{name}-{}", s.addr.port())));
    let gms = GmsEndpoint { url: s.url.clone(), ca_pem: s.ca_pem.clone() };
    dir.ensure_enrolled(&gms, &name, &token.token).unwrap();
    // The private key's directory and files are the daemon user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path), 0o700);
    assert_eq!(mode(&dir.path.join("identity.seed")), 0o600);
    let client = dir.client(&gms).unwrap();
    (dir, client)
}

#[test]
fn enroll_fetch_push_leave_and_revoke_on_both_databases() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, db) in databases(tmp.path()) {
        eprintln!("database: {label}");
        let s = Server::start(&db, GmsConfig::default());
        let admin = s.admin();
        admin.create_group(Some(1), "engineering").unwrap();
        admin.create_group(None, "sales").unwrap(); // gets 2
        let (dir1, c1) = enrolled(&s, &admin, tmp.path(), new_ge("ges1", "ges", "closed", &[1, 2]));
        let (_dir2, c2) = enrolled(&s, &admin, tmp.path(), new_ge("ges2", "ges", "open", &[1]));

        // The GE's state: certificate with its groups, keys of its groups, nothing else.
        let st = c1.state().unwrap();
        assert_eq!(st.status, GeStatus::Active);
        assert_eq!(st.groups, vec![1, 2]);
        let creds = credentials(&st, &dir1.seed().unwrap(), gscip_gms::api::now()).unwrap();
        assert_eq!(creds.key_ids(), vec![(1, 1), (2, 1)]);
        assert_eq!(creds.identity.certificate().groups, vec![1, 2]);
        assert_eq!(c2.state().unwrap().keys.iter().map(|k| k.group).collect::<Vec<_>>(), vec![1]);

        // Push: a long-poll waiting on ges2 returns as soon as group 1 is rotated.
        let rev = c2.state().unwrap().revision;
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            (c2.wait_for_change(rev, 30).unwrap(), t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(300));
        let kv = admin.rotate_group(1).unwrap();
        assert_eq!(kv.version, 2);
        let (pushed, waited) = waiter.join().unwrap();
        let pushed = pushed.expect("a change");
        assert!(waited < Duration::from_secs(10), "push took {waited:?}");
        let versions: Vec<(u32, bool)> = pushed.keys.iter().map(|k| (k.version, k.expires.is_some())).collect();
        assert_eq!(versions, vec![(1, true), (2, false)], "old version kept for the grace period");

        // Leave: ges1 leaves group 1; the key it knew stops being valid at once for everyone.
        admin.set_groups("ges1", &[2]).unwrap();
        let st1 = c1.state().unwrap();
        assert_eq!(st1.groups, vec![2]);
        assert!(st1.keys.iter().all(|k| k.group == 2));
        let c2 = _dir2.client(&GmsEndpoint { url: s.url.clone(), ca_pem: s.ca_pem.clone() }).unwrap();
        let g1: Vec<u32> = c2.state().unwrap().keys.iter().filter(|k| k.group == 1).map(|k| k.version).collect();
        assert_eq!(g1, vec![3], "versions 1 and 2 were known to the leaver; only 3 remains");

        // Revoke: no keys, and the state says so.
        admin.revoke("ges2").unwrap();
        let st2 = c2.state().unwrap();
        assert_eq!(st2.status, GeStatus::Revoked);
        assert!(st2.keys.is_empty() && st2.groups.is_empty());
        assert!(credentials(&st2, &_dir2.seed().unwrap(), 0).unwrap().keys.is_empty());

        // The GMS key source: from the GMS, then from the cache when the GMS is gone.
        let endpoint = GmsEndpoint { url: s.url.clone(), ca_pem: s.ca_pem.clone() };
        let mut ks = GmsKeySource::new(dir1.clone(), endpoint);
        let fresh = ks.credentials().unwrap().key_ids();
        assert!(!ks.from_cache);
        drop(s);
        let cached = ks.credentials().unwrap().key_ids();
        assert!(ks.from_cache, "GMS stopped: cached state");
        assert_eq!(fresh, cached);

        // After a restart on the same database nothing is lost.
        let s = Server::start(&db, GmsConfig::default());
        let admin = s.admin();
        assert_eq!(admin.ges().unwrap().len(), 2);
        assert_eq!(
            admin.groups().unwrap().iter().find(|g| g.id == 1).unwrap().key_version,
            4,
            "rotated at leave and at revoke"
        );
        let c1 = dir1.client(&GmsEndpoint { url: s.url.clone(), ca_pem: s.ca_pem.clone() }).unwrap();
        assert_eq!(c1.state().unwrap().groups, vec![2], "the client certificate still works after a restart");
    }
}

#[test]
fn enrollment_is_one_time_and_needs_a_proof() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, db) in databases(tmp.path()) {
        eprintln!("database: {label}");
        let s = Server::start(&db, GmsConfig::default());
        let admin = s.admin();
        admin.create_group(Some(7), "g").unwrap();
        admin.create_ge(&new_ge("gen1", "gen", "closed", &[7])).unwrap();
        let token = admin.enrollment_token("gen1", Some(600)).unwrap();
        let seed = [3u8; 32];
        // The wrong GE name for this token.
        let e = enroll(&s.url, &s.ca_pem, "gen2", &token.token, &seed).unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        let pem = enroll(&s.url, &s.ca_pem, "gen1", &token.token, &seed).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE"));
        // Used once: never again.
        let e = enroll(&s.url, &s.ca_pem, "gen1", &token.token, &seed).unwrap_err();
        assert_eq!(e.status(), Some(401), "{e}");
        // A client certificate for another key is refused before anything is sent.
        assert!(matches!(GeClient::new(&s.url, &s.ca_pem, &pem, &[4u8; 32]), Err(ClientError::Configuration(_))));
        let c = GeClient::new(&s.url, &s.ca_pem, &pem, &seed).unwrap();
        assert_eq!(c.state().unwrap().name, "gen1");
        // Revoked GEs cannot get new tokens.
        admin.revoke("gen1").unwrap();
        assert_eq!(admin.enrollment_token("gen1", None).unwrap_err().status(), Some(409));
        // Without a client certificate the GE API refuses.
        let anon = gscip_gms_client::client::tls_config(&s.ca_pem, None).unwrap();
        let agent = ureq::AgentBuilder::new().tls_config(anon).build();
        match agent.get(&format!("{}/ge/v1/state", s.url)).call() {
            Err(ureq::Error::Status(401, _)) => {}
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn every_malformed_request_gets_a_clear_4xx() {
    let tmp = tempfile::tempdir().unwrap();
    let db = databases(tmp.path()).remove(0).1;
    let s = Server::start(&db, GmsConfig::default());
    let admin = s.admin();
    admin.create_group(Some(1), "g").unwrap();
    let token = gscip_gms_client::client::AdminClient::login(&s.url, &s.ca_pem, "admin", common::PASSWORD).unwrap().1;
    let agent =
        ureq::AgentBuilder::new().tls_config(gscip_gms_client::client::tls_config(&s.ca_pem, None).unwrap()).build();
    let auth = format!("Bearer {}", token.token);
    let cases: &[(&str, &str, Option<&str>, bool, u16)] = &[
        ("GET", "/api/v1/groups", None, false, 401),
        ("POST", "/api/v1/groups", Some("{"), true, 400),
        ("POST", "/api/v1/groups", Some("{\"name\": 5}"), true, 400),
        ("POST", "/api/v1/groups", Some("{\"name\": \"x\", \"id\": 0}"), true, 400),
        ("POST", "/api/v1/groups", Some("{\"name\": \"x\", \"id\": 70000}"), true, 400),
        ("POST", "/api/v1/groups", Some("{\"name\": \"g\"}"), true, 409),
        ("POST", "/api/v1/groups", Some("{\"name\": \"y\", \"colour\": 1}"), true, 400),
        ("GET", "/api/v1/groups/abc", None, true, 400),
        ("GET", "/api/v1/groups/99", None, true, 404),
        ("POST", "/api/v1/ges", Some("{\"name\": \"bad name\", \"kind\": \"ges\", \"mode\": \"open\"}"), true, 400),
        ("POST", "/api/v1/ges", Some("{\"name\": \"a\", \"kind\": \"router\", \"mode\": \"open\"}"), true, 400),
        ("POST", "/api/v1/ges", Some("{\"name\": \"a\", \"kind\": \"ges\", \"mode\": \"ajar\"}"), true, 400),
        (
            "POST",
            "/api/v1/ges",
            Some("{\"name\": \"a\", \"kind\": \"ges\", \"mode\": \"open\", \"groups\": [9]}"),
            true,
            400,
        ),
        ("PUT", "/api/v1/ges/nobody/groups", Some("{\"groups\": []}"), true, 404),
        ("POST", "/api/v1/ges/nobody/enrollment-token", None, true, 404),
        ("GET", "/api/v1/audit?limit=-1", None, true, 400),
        ("GET", "/api/v1/audit?colour=red", None, true, 400),
        (
            "POST",
            "/ge/v1/enroll",
            Some("{\"name\": \"a\", \"token\": \"t\", \"public_key\": \"zz\", \"proof\": \"00\"}"),
            false,
            400,
        ),
        ("POST", "/ge/v1/enroll", Some("[]"), false, 400),
        ("GET", "/no/such/thing", None, false, 404),
        (
            "POST",
            "/api/v1/nat-aces",
            Some(
                "{\"gnat\": \"x\", \"group\": 1, \"inside_address\": \"1.2.3.4\", \"protocol\": \"tcp\", \"port\": 80}",
            ),
            true,
            400,
        ),
    ];
    for (method, path, body, authed, want) in cases {
        let mut req = agent.request(method, &format!("{}{}", s.url, path));
        if *authed {
            req = req.set("Authorization", &auth);
        }
        let r = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        match r {
            Err(ureq::Error::Status(code, resp)) => {
                let text = resp.into_string().unwrap();
                assert_eq!(code, *want, "{method} {path}: {text}");
                let body: gscip_gms_client::api::ErrorBody =
                    serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                assert!(!body.error.is_empty());
            }
            other => panic!("{method} {path}: expected {want}, got {other:?}"),
        }
    }
}

#[test]
fn keys_never_reach_the_audit_log_or_debug_output() {
    let tmp = tempfile::tempdir().unwrap();
    let db = databases(tmp.path()).remove(0).1;
    let s = Server::start(&db, GmsConfig::default());
    let admin = s.admin();
    admin.create_group(Some(1), "g").unwrap();
    let (_d, c) = enrolled(&s, &admin, tmp.path(), new_ge("ges1", "ges", "closed", &[1]));
    admin.rotate_group(1).unwrap();
    let st = c.state().unwrap();
    let secrets: Vec<String> = st.keys.iter().map(|k| k.key.clone()).collect();
    assert_eq!(secrets.len(), 2);
    let audit = serde_json::to_string(&admin.audit(1000).unwrap()).unwrap();
    let debug = format!("{st:?} {:?}", admin.keys().unwrap());
    let token = admin.enrollment_token("ges1", None).unwrap();
    for secret in secrets.iter().chain([&token.token]) {
        assert!(!audit.contains(secret.as_str()), "secret in the audit log");
        assert!(!debug.contains(secret.as_str()), "secret in Debug output");
        assert!(!format!("{token:?}").contains(secret.as_str()));
    }
    assert!(audit.contains("key.rotate") && audit.contains("ge.enroll") && audit.contains("group.create"));
}

/// The OpenAPI document `gmsd` serves describes endpoints that exist: every documented path
/// and method reaches a handler (an authentication or validation answer, never "no such
/// endpoint").
#[test]
fn the_openapi_document_matches_the_router() {
    let tmp = tempfile::tempdir().unwrap();
    let db = databases(tmp.path()).remove(0).1;
    let s = Server::start(&db, GmsConfig::default());
    let agent =
        ureq::AgentBuilder::new().tls_config(gscip_gms_client::client::tls_config(&s.ca_pem, None).unwrap()).build();
    let doc: serde_json::Value = agent.get(&format!("{}/openapi.json", s.url)).call().unwrap().into_json().unwrap();
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 18);
    for (path, ops) in paths {
        let concrete = path.replace("{id}", "1").replace("{name}", "x");
        for method in ops.as_object().unwrap().keys() {
            let r = agent.request(&method.to_uppercase(), &format!("{}{}", s.url, concrete)).call();
            let text = match r {
                Ok(resp) => resp.into_string().unwrap_or_default(),
                Err(ureq::Error::Status(_, resp)) => resp.into_string().unwrap_or_default(),
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert!(!text.contains("no such endpoint"), "{method} {path} is documented but not served");
        }
    }
}

/// Administrators add administrators; passwords are checked for length; names are unique; the
/// new one can log in and its changes are audited under its name.
#[test]
fn administrators_add_administrators() {
    let tmp = tempfile::tempdir().unwrap();
    let db = databases(tmp.path()).remove(0).1;
    let s = Server::start(&db, GmsConfig::default());
    let admin = s.admin();
    assert_eq!(admin.create_admin("bob", "short").unwrap_err().status(), Some(400));
    admin.create_admin("bob", "a long enough password").unwrap();
    assert_eq!(admin.create_admin("bob", "a long enough password").unwrap_err().status(), Some(409));
    assert_eq!(admin.admins().unwrap(), vec!["admin".to_owned(), "bob".to_owned()]);
    let (bob, _) = AdminClient::login(&s.url, &s.ca_pem, "bob", "a long enough password").unwrap();
    bob.create_group(Some(5), "bobs").unwrap();
    let audit = admin.audit(10).unwrap();
    assert!(audit.iter().any(|e| e.actor == "bob" && e.action == "group.create"));
    assert!(audit.iter().any(|e| e.actor == "admin" && e.action == "admin.create" && e.object == "admin/bob"));
    assert!(!serde_json::to_string(&audit).unwrap().contains("long enough"), "no password in the audit log");
}

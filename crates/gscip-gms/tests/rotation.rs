//! Key rotation in virtual time (the service takes `now`): the daily schedule, idempotence
//! across restarts and across two GMS instances sharing one PostgreSQL database, grace periods,
//! and immediate rotation on leave and revoke.

mod common;

use common::{databases, fresh_postgres_db, master};
use gscip_gms::rotation::{DailySchedule, DAY};
use gscip_gms::{Gms, GmsConfig};
use gscip_gms_client::api::{EnrollRequest, NewGe, NewGroup};
use std::time::Duration;

const T0: u64 = 20_000 * DAY + 10 * 3600; // a day at 10:00 UTC

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn config() -> GmsConfig {
    GmsConfig { grace_seconds: 600, ..GmsConfig::default() }
}

async fn enroll(gms: &Gms, name: &str, groups: &[u16], now: u64) {
    gms.create_ge(
        "t",
        &NewGe { name: name.into(), kind: "ges".into(), mode: "closed".into(), groups: groups.to_vec() },
        now,
    )
    .await
    .unwrap();
    let token = gms.enrollment_token("t", name, None, now).await.unwrap();
    let seed = [name.len() as u8; 32];
    let kp = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
    use aws_lc_rs::signature::KeyPair;
    let pk = kp.public_key().as_ref().to_vec();
    let proof = kp.sign(&gscip_gms_client::api::enroll_message(name, &token.token, &pk));
    let req = EnrollRequest {
        name: name.into(),
        token: token.token.clone(),
        public_key: gscip_gms_client::api::hex(&pk),
        proof: gscip_gms_client::api::hex(proof.as_ref()),
    };
    gms.enroll(&req, now).await.unwrap();
}

async fn versions(gms: &Gms, ge: &str, group: u16, now: u64) -> Vec<u32> {
    gms.ge_state(ge, now).await.unwrap().keys.iter().filter(|k| k.group == group).map(|k| k.version).collect()
}

#[test]
fn daily_schedule_is_idempotent_and_survives_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, db) in databases(tmp.path()) {
        eprintln!("database: {label}");
        rt().block_on(async {
            let gms = Gms::open(&db, master(), config(), T0).await.unwrap();
            gms.create_group("t", &NewGroup { id: Some(1), name: "g".into() }, T0).await.unwrap();
            enroll(&gms, "ges1", &[1], T0).await;
            // First start counts today's 03:00 as done.
            assert_eq!(gms.run_schedule(T0).await.unwrap(), None);
            let slot = DailySchedule::default().next_slot(T0);
            assert_eq!(gms.run_schedule(slot - 1).await.unwrap(), None);
            assert_eq!(gms.run_schedule(slot).await.unwrap(), Some(slot));
            assert_eq!(gms.run_schedule(slot + 5).await.unwrap(), None, "idempotent");
            // The old version stays in its grace period, then goes.
            assert_eq!(versions(&gms, "ges1", 1, slot + 1).await, vec![1, 2]);
            assert_eq!(versions(&gms, "ges1", 1, slot + 600).await, vec![2]);
            drop(gms);
            // Down over the next 03:00: the missed slot is caught up once on restart.
            let later = slot + DAY + 5 * 3600;
            let gms = Gms::open(&db, master(), config(), later).await.unwrap();
            assert_eq!(gms.run_schedule(later).await.unwrap(), Some(slot + DAY));
            assert_eq!(gms.run_schedule(later).await.unwrap(), None);
            assert_eq!(versions(&gms, "ges1", 1, later).await, vec![2, 3]);
            let reasons: Vec<String> = gms.keys().await.unwrap().into_iter().map(|k| k.reason).collect();
            assert_eq!(reasons, vec!["initial", "scheduled", "scheduled"]);
        });
    }
}

#[test]
fn leave_and_revoke_rotate_at_once_with_no_grace() {
    let tmp = tempfile::tempdir().unwrap();
    for (label, db) in databases(tmp.path()) {
        eprintln!("database: {label}");
        rt().block_on(async {
            let gms = Gms::open(&db, master(), config(), T0).await.unwrap();
            for g in [1, 2] {
                gms.create_group("t", &NewGroup { id: Some(g), name: format!("g{g}") }, T0).await.unwrap();
            }
            enroll(&gms, "a", &[1, 2], T0).await;
            enroll(&gms, "bb", &[1, 2], T0).await;
            enroll(&gms, "ccc", &[2], T0).await;
            // A manual rotation keeps the old key for the grace period ...
            gms.rotate("t", 1, T0 + 10).await.unwrap();
            assert_eq!(versions(&gms, "a", 1, T0 + 11).await, vec![1, 2]);
            // ... but when "bb" leaves group 1, every version it knew ends at once.
            gms.set_groups("t", "bb", &[2], T0 + 20).await.unwrap();
            assert_eq!(versions(&gms, "a", 1, T0 + 20).await, vec![3]);
            assert_eq!(versions(&gms, "bb", 1, T0 + 20).await, Vec::<u32>::new());
            // Joining does not rotate.
            gms.set_groups("t", "ccc", &[1, 2], T0 + 30).await.unwrap();
            assert_eq!(versions(&gms, "ccc", 1, T0 + 30).await, vec![3]);
            // Revoking "a" rotates both its groups at once; "a" gets nothing.
            gms.revoke("t", "a", T0 + 40).await.unwrap();
            assert_eq!(versions(&gms, "ccc", 1, T0 + 40).await, vec![4]);
            assert_eq!(versions(&gms, "ccc", 2, T0 + 40).await, vec![2]);
            assert!(gms.ge_state("a", T0 + 40).await.unwrap().keys.is_empty());
            let actions: Vec<String> = gms.audit_log(100).await.unwrap().into_iter().map(|e| e.action).collect();
            assert!(actions.contains(&"ge.revoke".to_string()) && actions.contains(&"ge.groups".to_string()));
        });
    }
}

#[test]
fn two_instances_share_one_postgres_database() {
    let db = fresh_postgres_db();
    rt().block_on(async {
        let (a, b) = tokio::join!(Gms::open(&db, master(), config(), T0), Gms::open(&db, master(), config(), T0));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.gms_public_key(), b.gms_public_key(), "one set of secrets");
        assert_eq!(a.tls.ca_pem, b.tls.ca_pem);
        a.create_group("t", &NewGroup { id: Some(1), name: "g".into() }, T0).await.unwrap();
        enroll(&a, "ges1", &[1], T0).await;
        // A change through A wakes a long-poll on B.
        let rev = b.revision().await.unwrap();
        let (woke, _) = tokio::join!(b.wait_for_change(rev, Duration::from_secs(20)), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            a.rotate("t", 1, T0 + 1).await.unwrap();
        });
        assert!(woke.unwrap() > rev);
        // Both run the schedule at the same moment: one rotation.
        let slot = DailySchedule::default().next_slot(T0);
        let (x, y) = tokio::join!(a.run_schedule(slot), b.run_schedule(slot));
        let done = [x.unwrap(), y.unwrap()];
        assert_eq!(done.iter().filter(|d| d.is_some()).count(), 1, "{done:?}");
        assert_eq!(versions(&b, "ges1", 1, slot).await, vec![2, 3]);
    });
}

#[test]
fn a_wrong_master_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let db = databases(tmp.path()).remove(0).1;
    rt().block_on(async {
        drop(Gms::open(&db, master(), config(), T0).await.unwrap());
        let other = gscip_gms::seal::MasterKey::from_bytes(&[1; 32]).unwrap();
        let e = Gms::open(&db, other, config(), T0).await.unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
    });
}

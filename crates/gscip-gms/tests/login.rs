//! Password guessing is throttled per administrator name (virtual time: the service takes
//! `now`), for names that exist and names that do not, and the API answers 429 with a clear
//! message.

mod common;

use common::{master, Server, PASSWORD};
use gscip_gms::error::GmsError;
use gscip_gms::{Gms, GmsConfig};

const T0: u64 = 1_800_000_000;
const FREE_TRIES: u64 = 5;
const LOCK_SECONDS: u64 = 30;

#[test]
fn failed_logins_lock_a_name_for_a_while_and_a_success_clears_them() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", tmp.path().join("gms.db").display());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let gms = Gms::open(&db, master(), GmsConfig::default(), T0).await.unwrap();
        gms.create_admin("test", "admin", PASSWORD, T0).await.unwrap();
        fn unauthorized<T>(r: Result<T, GmsError>) -> bool {
            matches!(r, Err(GmsError::Unauthorized(_)))
        }
        fn locked<T>(r: Result<T, GmsError>) -> bool {
            matches!(r, Err(GmsError::TooManyRequests(_)))
        }

        // A success clears the count: four failures, a success, four more failures: no lock.
        for t in 0..4 {
            assert!(unauthorized(gms.login("admin", "guess", T0 + t).await));
        }
        gms.login("admin", PASSWORD, T0 + 4).await.unwrap();
        for t in 0..4 {
            assert!(unauthorized(gms.login("admin", "guess", T0 + 5 + t).await));
        }
        gms.login("admin", PASSWORD, T0 + 9).await.unwrap();

        // Five failures in a row lock the name, even for the right password.
        for _ in 0..FREE_TRIES {
            assert!(unauthorized(gms.login("admin", "guess", T0 + 10).await));
        }
        let e = gms.login("admin", PASSWORD, T0 + 11).await.unwrap_err();
        assert_eq!(e.status().as_u16(), 429);
        assert!(e.to_string().contains("try again in 29 s"), "{e}");
        assert!(locked(gms.verify_password("admin", PASSWORD, T0 + 10 + LOCK_SECONDS - 1).await));
        // Other names are not affected; unknown names are throttled alike (no hint which exist).
        for _ in 0..FREE_TRIES {
            assert!(unauthorized(gms.login("nobody", "guess", T0 + 10).await));
        }
        assert!(locked(gms.login("nobody", "guess", T0 + 11).await));

        // When the lock ends, the right password works; one more failure after five locks again.
        gms.login("admin", PASSWORD, T0 + 10 + LOCK_SECONDS).await.unwrap();
        for _ in 0..FREE_TRIES {
            assert!(unauthorized(gms.login("admin", "guess", T0 + 100).await));
        }
        assert!(unauthorized(gms.login("admin", "guess", T0 + 100 + LOCK_SECONDS).await));
        assert!(locked(gms.login("admin", PASSWORD, T0 + 101 + LOCK_SECONDS).await));
    });
}

#[test]
fn the_api_answers_429_with_a_message_after_five_wrong_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}?mode=rwc", tmp.path().join("gms.db").display());
    let s = Server::start(&db, GmsConfig::default());
    s.admin(); // creates the administrator
    let login = |password: &str| {
        gscip_gms_client::client::AdminClient::login(&s.url, &s.ca_pem, "admin", password).map(|_| ()).unwrap_err()
    };
    let errors: Vec<_> = (0..=FREE_TRIES).map(|_| login("guess")).collect();
    assert!(errors[..FREE_TRIES as usize].iter().all(|e| e.status() == Some(401)), "{errors:?}");
    assert_eq!(errors[FREE_TRIES as usize].status(), Some(429), "{errors:?}");
    assert!(errors[FREE_TRIES as usize].to_string().contains("too many failed logins"), "{errors:?}");
    assert_eq!(login(PASSWORD).status(), Some(429), "locked even for the right password");
}

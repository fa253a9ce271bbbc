//! Test helpers: a gmsd in-process on 127.0.0.1 with a fresh database (SQLite file or a new
//! PostgreSQL database on the server `scripts/with-postgres.sh` started).

#![allow(dead_code)]

use gscip_gms::api::{router, App};
use gscip_gms::seal::MasterKey;
use gscip_gms::{Gms, GmsConfig};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

pub const PASSWORD: &str = "correct horse battery staple";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The PostgreSQL server of `scripts/with-postgres.sh`; the GMS tests must run against it.
pub fn postgres_base() -> String {
    std::env::var("GSCIP_TEST_POSTGRES_URL").expect(
        "GSCIP_TEST_POSTGRES_URL is not set: the GMS tests run against PostgreSQL too; \
         run them with scripts/with-postgres.sh (make test does)",
    )
}

/// A fresh database of each kind: (label, URL).
pub fn databases(tmp: &std::path::Path) -> Vec<(&'static str, String)> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let sqlite = format!("sqlite://{}?mode=rwc", tmp.join(format!("gms{n}.db")).display());
    vec![("sqlite", sqlite), ("postgres", fresh_postgres_db())]
}

pub fn fresh_postgres_db() -> String {
    let base = postgres_base();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!(
        "gms_{}_{}_{n}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c: sqlx::AnyConnection =
            sqlx::Connection::connect(&base).await.expect("connect to the test PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut c).await.unwrap();
    });
    base.replacen("/postgres?", &format!("/{name}?"), 1)
}

pub fn master() -> MasterKey {
    MasterKey::from_bytes(&[0x5a; 32]).unwrap()
}

/// A running gmsd.
pub struct Server {
    pub url: String,
    pub ca_pem: String,
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(db: &str, config: GmsConfig) -> Server {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let db = db.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let now = gscip_gms::api::now();
                let gms = Gms::open(&db, master(), config, now).await.unwrap();
                if gms.admin_count().await.unwrap() == 0 {
                    gms.create_admin("test", "admin", PASSWORD, now).await.unwrap();
                }
                let tls = gms.tls.server_config(&["127.0.0.1".into()], now).unwrap();
                let ca = gms.tls.ca_pem.clone();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                tx.send((listener.local_addr().unwrap(), ca)).unwrap();
                gscip_gms::server::serve(listener, tls, router(Arc::new(App { gms })), stop_rx).await;
            });
        });
        let (addr, ca_pem) = rx.recv().expect("gmsd started");
        Server { url: format!("https://{addr}"), ca_pem, addr, stop, thread: Some(thread) }
    }

    pub fn admin(&self) -> gscip_gms_client::client::AdminClient {
        gscip_gms_client::client::AdminClient::login(&self.url, &self.ca_pem, "admin", PASSWORD).unwrap().0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! `gmsd`: the GSCIP group management server (see `docs/gms.md`).

use clap::Parser;
use gscip_gms::api::{now, router, App};
use gscip_gms::rotation::DailySchedule;
use gscip_gms::seal::MasterKey;
use gscip_gms::{Gms, GmsConfig, GmsError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "gmsd", version, about = "The GSCIP group management server")]
struct Args {
    /// Directory for the SQLite database, the master key, the CA certificate and the first
    /// administrator's password.
    #[arg(long, env = "GMSD_DATA_DIR", default_value = "/var/lib/gmsd")]
    data_dir: PathBuf,
    /// Database URL: sqlite://FILE (default: DATA_DIR/gms.db) or postgres://USER@HOST/DB
    /// (several gmsd instances may share one PostgreSQL database).
    #[arg(long, env = "GMSD_DATABASE")]
    database: Option<String>,
    /// The master key (64 hex digits) that seals keys at rest; keep it outside the database
    /// and its backups. Created on first start. Default: DATA_DIR/master.key.
    #[arg(long, env = "GMSD_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// Address and port to listen on (HTTPS).
    #[arg(long, env = "GMSD_LISTEN", default_value = "127.0.0.1:4399")]
    listen: std::net::SocketAddr,
    /// Names (DNS or IP) in the server certificate; default: the listen address and localhost.
    #[arg(long = "tls-name", env = "GMSD_TLS_NAMES", value_delimiter = ',')]
    tls_names: Vec<String>,
    /// Daily key rotation time, HH:MM UTC.
    #[arg(long, env = "GMSD_ROTATION_TIME", default_value = "03:00")]
    rotation_time: String,
    /// Seconds a replaced group key stays valid after a scheduled or manual rotation.
    #[arg(long, env = "GMSD_GRACE_SECONDS", default_value_t = 3600)]
    grace_seconds: u64,
    /// The first administrator's password, read from this file on first start (otherwise one
    /// is generated and written to DATA_DIR/initial-admin-password, mode 0600).
    #[arg(long, env = "GMSD_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), GmsError> {
    let cfg_err = |what: &str, e: std::io::Error| GmsError::Configuration(format!("{what}: {e}"));
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|e| cfg_err(&format!("data directory {}", args.data_dir.display()), e))?;
    let database = args
        .database
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", args.data_dir.join("gms.db").display()));
    let master_path = args.master_key_file.clone().unwrap_or_else(|| args.data_dir.join("master.key"));
    let config = GmsConfig {
        schedule: DailySchedule::parse(&args.rotation_time)?,
        grace_seconds: args.grace_seconds,
        ..GmsConfig::default()
    };
    // A new master key is right only for a database without secrets: it is written to a
    // temporary file first and kept only if the database turns out to be new.
    let gms = if master_path.exists() {
        Gms::open(&database, MasterKey::load_or_create(&master_path, false)?, config, now()).await?
    } else {
        let pending = master_path.with_extension("new");
        let _ = std::fs::remove_file(&pending);
        let master = MasterKey::load_or_create(&pending, true)?;
        match Gms::open(&database, master, config, now()).await {
            Ok(gms) if gms.created_secrets => {
                std::fs::rename(&pending, &master_path).map_err(|e| cfg_err("master key file", e))?;
                tracing::info!(path = %master_path.display(), "created the master key; back it up apart from the database");
                gms
            }
            Err(e) if !matches!(&e, GmsError::Internal(m) if m.contains("does not open")) => {
                let _ = std::fs::remove_file(&pending);
                return Err(e);
            }
            Ok(_) | Err(_) => {
                let _ = std::fs::remove_file(&pending);
                return Err(GmsError::Configuration(format!(
                    "no master key file at {} but the database already holds sealed secrets: restore the master key \
                     (--master-key-file) that goes with this database",
                    master_path.display()
                )));
            }
        }
    };
    tracing::info!(database = %gscip_gms::service::redact_url(&database), "database ready");

    let ca_path = args.data_dir.join("ca.pem");
    std::fs::write(&ca_path, &gms.tls.ca_pem).map_err(|e| cfg_err("ca.pem", e))?;
    if gms.admin_count().await? == 0 {
        let password = match &args.admin_password_file {
            Some(p) => zeroize::Zeroizing::new(
                std::fs::read_to_string(p).map_err(|e| cfg_err("admin password file", e))?.trim().to_owned(),
            ),
            None => {
                let mut b = [0u8; 18];
                aws_lc_rs::rand::fill(&mut b).map_err(|_| GmsError::Internal("no randomness".into()))?;
                use base64::Engine as _;
                let p = zeroize::Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b));
                let path = args.data_dir.join("initial-admin-password");
                gscip_gms_client::ge::write_secret(&path, p.as_bytes())
                    .map_err(|e| cfg_err("initial-admin-password", e))?;
                tracing::info!("created administrator \"admin\"; its password is in {}", path.display());
                p
            }
        };
        gms.create_admin("gmsd", "admin", &password, now()).await?;
    }

    let mut names = args.tls_names.clone();
    if names.is_empty() {
        names = vec![args.listen.ip().to_string(), "localhost".into()];
    }
    let tls = gms.tls.server_config(&names, now())?;
    let app = Arc::new(App { gms });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| GmsError::Configuration(format!("listen on {}: {e}", args.listen)))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // The rotation schedule: checked at start (a slot missed while down is caught up) and
    // every 30 s; idempotent across restarts and instances.
    let sched = app.clone();
    let mut sched_stop = stop_rx.clone();
    tokio::spawn(async move {
        loop {
            match sched.gms.run_schedule(now()).await {
                Ok(Some(slot)) => tracing::info!(slot, "scheduled key rotation done"),
                Ok(None) => {}
                Err(e) => tracing::warn!("scheduled rotation: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                _ = sched_stop.changed() => return,
            }
        }
    });

    tracing::info!(listen = %args.listen, ca = %ca_path.display(), "gmsd listening (HTTPS, TLS 1.3)");
    let server = tokio::spawn(gscip_gms::server::serve(listener, tls, router(app.clone()), stop_rx));
    shutdown_signal().await;
    tracing::info!("stopping");
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending::<()>().await,
    }
}

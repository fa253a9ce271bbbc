//! `gscipd --config FILE`: one GSCIP element on this host or router (see `docs/gscipd.md`).
#![forbid(unsafe_code)]

use clap::Parser;
use gscip_core::keysource::KeySource;
use gscipd::config::Config;
use gscipd::config::Hooks;
use gscipd::dataplane::{Dataplane, Injector, RawSender};
use gscipd::keyfile::KeyFile;
use gscipd::link::LinkSender;
use gscipd::{rules, DaemonError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Socket buffer of the MPITs' copies: thousands of MPITs in a burst of new flows.
const COPIES_RCVBUF_BYTES: i32 = 8 << 20;

#[derive(Parser, Debug)]
#[command(name = "gscipd", version, about = "The GSCIP element daemon (GES, GEN, GEA) on netfilter NFQUEUE")]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, env = "GSCIPD_CONFIG")]
    config: PathBuf,
    /// Remove this daemon's netfilter rules and exit (after a crash left a closed GE's
    /// boundary closed).
    #[arg(long)]
    remove_rules: bool,
    /// The NFQUEUE number (overrides the configuration's `queue`).
    #[arg(long, env = "GSCIPD_QUEUE")]
    queue: Option<u16>,
    /// The control socket (overrides the configuration's `control_socket`).
    #[arg(long, env = "GSCIPD_CONTROL_SOCKET")]
    control_socket: Option<PathBuf>,
    /// Benchmark floor: the same rules and queue, every packet accepted unchanged, no GSCIP.
    #[arg(long)]
    accept_only: bool,
    /// With --accept-only: ask for NFQUEUE's GSO flag, so packets the kernel would segment come
    /// up whole (up to 64 KiB): the benchmark's GSO floor.
    #[arg(long, requires = "accept_only")]
    gso: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // Logs: RUST_LOG sets the level (default info); keys and payloads are never logged.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), DaemonError> {
    let mut cfg = Config::load(&args.config)?;
    if let Some(q) = args.queue {
        cfg.queue = q;
    }
    if let Some(p) = &args.control_socket {
        cfg.control_socket = Some(p.clone());
    }
    if args.remove_rules {
        return rules::remove(&cfg);
    }
    cfg.resolve_gms()?;
    if args.accept_only {
        // The floor: one queue for everything, with NFQUEUE's GSO flag if asked.
        cfg.gso = false;
        cfg.gso_queue = None;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
            .map_err(|e| DaemonError::Configuration(format!("signal handler: {e}")))?;
        rules::install(&cfg)?;
        let result = gscipd::dataplane::run_accept_only(cfg.queue, args.gso, cfg.stay_awake_us, &stop);
        rules::remove(&cfg)?;
        return result;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (engine, gms_link) = match (&cfg.key_file, &cfg.gms) {
        (Some(path), _) => {
            let mut keys = KeyFile::new(path);
            let (identity, trust) = keys.identity()?;
            let ring = keys.group_keys()?;
            (gscip_core::Engine::new(cfg.ge_config()?, identity, trust, ring, Box::new(rand_core::OsRng))?, None)
        }
        (None, Some(settings)) => {
            let (creds, state, source) = gscipd::gms::start(settings)?;
            let engine = gscip_core::Engine::new(
                cfg.ge_config()?,
                creds.identity,
                creds.trust,
                creds.keys,
                Box::new(rand_core::OsRng),
            )?;
            (engine, Some((source, state)))
        }
        (None, None) => return Err(DaemonError::Configuration("no key_file and no [gms]".into())),
    };
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .map_err(|e| DaemonError::Configuration(format!("signal handler: {e}")))?;
    let injector = match cfg.hooks {
        Hooks::Bridge => {
            let bridges = if cfg.bridges.is_empty() { vec!["br0".to_owned()] } else { cfg.bridges.clone() };
            Injector::Link(LinkSender::new(&bridges)?)
        }
        Hooks::Host | Hooks::Router => Injector::Ip(RawSender::new()?),
    };
    let mut dp = Dataplane::new(engine, cfg.queue, cfg.gso_queue(), injector)?;
    if cfg.uses_kernel_mpit_pass() {
        // Bound before the rules that log to it are installed. A kernel without nfnetlink_log
        // costs the pass, not the daemon: the MPITs then cross the queue, as before.
        match gscipd::nflog::LogGroup::open(cfg.queue, COPIES_RCVBUF_BYTES) {
            Ok(group) => dp.take_copies_from(group),
            Err(e) => {
                tracing::warn!(group = cfg.queue, error = %e, "no NFLOG group for the MPITs' copies: MPITs cross the queue");
                cfg.kernel_mpit_pass = false;
            }
        }
    }
    if let Some(path) = &cfg.events_file {
        dp.log_events_to(path)?;
    }
    let socket = cfg.control_socket.clone().unwrap_or_else(|| gscipd::control::default_socket(dp.engine.name()));
    dp.serve_control(gscipd::control::ControlSocket::bind(&socket)?);
    if let Some((source, state)) = gms_link {
        let updates = gscipd::gms::follow(source, state, &dp.engine, stop.clone())?;
        dp.follow_gms(updates, cfg.clone());
    }
    rules::install(&cfg)?;
    if cfg.uses_kernel_dde_pass() {
        dp.pass_ddes_via(&rules::dde_pass_list_path(&cfg))?;
    }
    tracing::info!(ge = dp.engine.name(), queue = cfg.queue, gso_queue = ?cfg.gso_queue(), hooks = ?cfg.hooks, "running");
    let result = dp.run(&stop);
    // A clean stop removes the rules; a crash leaves them (closed GEs stay closed).
    rules::remove(&cfg)?;
    result
}

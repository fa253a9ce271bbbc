//! The daemon's GMS link: enroll once, start on the GMS's state (or the cached one when the GMS
//! is down), then follow changes by long-poll in a thread of its own and hand new credentials
//! to the packet loop. Keys whose grace period ends are dropped on time even while the GMS is
//! unreachable.

use crate::config::GmsSettings;
use crate::DaemonError;
use gscip_core::Engine;
use gscip_gms_client::api::GeState;
use gscip_gms_client::ge::{credentials, unix_now, Credentials, GmsEndpoint, GmsKeySource, StateDir};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// New credentials for the packet loop, and the socket that wakes it.
#[derive(Debug)]
pub struct KeyUpdates {
    rx: mpsc::Receiver<Credentials>,
    wake: UnixStream,
}

impl KeyUpdates {
    /// The descriptor the packet loop polls.
    pub fn wake_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.wake.as_raw_fd()
    }
    /// Empties the wake-up socket (after `poll` said it is readable; not on the packet path).
    pub fn drain_wake(&mut self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }

    /// The newest pending update, if any (no system call: the packet loop asks often).
    pub fn take(&mut self) -> Option<Credentials> {
        let mut last = None;
        while let Ok(c) = self.rx.try_recv() {
            last = Some(c);
        }
        last
    }
}

/// What decides whether the engine must hear of a new state: groups, mode, keys held (a mere
/// re-issue of the certificate does not, until it is due for renewal).
type Fingerprint = (Vec<u16>, String, Vec<(u16, u32)>);

fn fingerprint(state: &GeState, c: &Credentials) -> Fingerprint {
    (state.groups.clone(), state.mode.clone(), c.key_ids())
}

/// Whether a certificate expiring at `not_after` should be renewed at `now`: in the last third
/// of the GMS's 30-day validity (10 days before it ends).
pub fn needs_renewal(not_after: u64, now: u64) -> bool {
    not_after.saturating_sub(now) < 10 * 86_400
}

/// Enrolls if needed and returns the engine's first credentials and the key source.
pub fn start(settings: &GmsSettings) -> Result<(Credentials, GeState, GmsKeySource), DaemonError> {
    let ca_pem = std::fs::read_to_string(&settings.ca_file)
        .map_err(|e| DaemonError::Configuration(format!("gms.ca_file {}: {e}", settings.ca_file.display())))?;
    let endpoint = GmsEndpoint { url: settings.url.clone(), ca_pem };
    let dir = StateDir::new(&settings.state_dir);
    if !dir.is_enrolled() {
        let token_file = settings.token_file.as_ref().ok_or_else(|| {
            DaemonError::Configuration(
                "this GE has not enrolled yet: give gms.token_file (a one-time token from the GMS administrator)"
                    .into(),
            )
        })?;
        let token = zeroize::Zeroizing::new(
            std::fs::read_to_string(token_file)
                .map_err(|e| DaemonError::Configuration(format!("gms.token_file {}: {e}", token_file.display())))?,
        );
        dir.ensure_enrolled(&endpoint, &settings.name, token.trim())
            .map_err(|e| DaemonError::Configuration(format!("enrollment with the GMS failed: {e}")))?;
        tracing::info!(ge = %settings.name, "enrolled with the GMS");
    }
    let mut source = GmsKeySource::new(dir, endpoint);
    let state = source.fetch().map_err(|e| DaemonError::Configuration(e.to_string()))?;
    if source.from_cache {
        tracing::warn!("the GMS is unreachable: starting on the cached keys");
    }
    let seed = source.dir.seed().map_err(|e| DaemonError::Configuration(e.to_string()))?;
    let creds = credentials(&state, &seed, unix_now()).map_err(|e| DaemonError::Configuration(e.to_string()))?;
    Ok((creds, state, source))
}

/// Follows the GMS in a thread until `stop`.
pub fn follow(
    source: GmsKeySource,
    first: GeState,
    engine: &Engine,
    stop: Arc<AtomicBool>,
) -> Result<KeyUpdates, DaemonError> {
    let (wake_tx, wake_rx) = UnixStream::pair()?;
    wake_rx.set_nonblocking(true)?;
    let (tx, rx) = mpsc::channel();
    let name = engine.name().to_owned();
    std::thread::Builder::new()
        .name("gms".into())
        .spawn(move || follow_loop(source, first, tx, wake_tx, stop, name))?;
    Ok(KeyUpdates { rx, wake: wake_rx })
}

fn follow_loop(
    source: GmsKeySource,
    mut state: GeState,
    tx: mpsc::Sender<Credentials>,
    mut wake: UnixStream,
    stop: Arc<AtomicBool>,
    name: String,
) {
    let seed = match source.dir.seed() {
        Ok(s) => s,
        Err(e) => return tracing::error!("GMS link: {e}"),
    };
    let client = match source.dir.client(&source.gms) {
        Ok(c) => c,
        Err(e) => return tracing::error!("GMS link: {e}"),
    };
    // A state from the cache has no trustworthy revision: ask for anything newer than nothing.
    let mut revision = if source.from_cache { -1 } else { state.revision };
    let first = credentials(&state, &seed, unix_now()).ok();
    let mut sent: Option<Fingerprint> = first.as_ref().map(|c| fingerprint(&state, c));
    // The expiry of the certificate the engine holds.
    let mut engine_not_after = first.map(|c| c.identity.certificate().not_after).unwrap_or(0);
    let mut last_renewal = None;
    let mut reachable = !source.from_cache;
    let mut backoff = Duration::from_secs(1);
    while !stop.load(Ordering::Relaxed) {
        let now = unix_now();
        let next_expiry = credentials(&state, &seed, now).ok().and_then(|c| c.next_expiry);
        let until_expiry = next_expiry.map(|e| e.saturating_sub(now).max(1)).unwrap_or(u64::MAX);
        // After an error, first a plain request (no waiting) to learn at once that the GMS is
        // back; then long-polls.
        let wait = if reachable { until_expiry.min(25) } else { 0 };
        // The GMS issues a fresh certificate with every state; fetch one before ours expires
        // (nothing else may change for weeks).
        let renew = needs_renewal(engine_not_after, now)
            && last_renewal.is_none_or(|t: std::time::Instant| t.elapsed() > Duration::from_secs(60));
        if renew {
            last_renewal = Some(std::time::Instant::now());
        }
        let fetched = if renew { client.state().map(Some) } else { client.wait_for_change(revision, wait) };
        match fetched {
            Ok(Some(new)) => {
                if !reachable {
                    tracing::info!("the GMS is reachable again");
                }
                reachable = true;
                backoff = Duration::from_secs(1);
                revision = new.revision;
                if let Err(e) = source.dir.store_state(&new) {
                    tracing::warn!("caching the GMS state: {e}");
                }
                state = new;
            }
            Ok(None) => {
                if !reachable {
                    tracing::info!("the GMS is reachable again");
                }
                reachable = true;
            }
            Err(e) => {
                if reachable {
                    tracing::warn!("the GMS is unreachable, working on cached keys: {e}");
                }
                reachable = false;
                std::thread::sleep(backoff.min(Duration::from_secs(until_expiry)));
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        match credentials(&state, &seed, unix_now()) {
            Ok(c) => {
                let fp = fingerprint(&state, &c);
                let not_after = c.identity.certificate().not_after;
                let renewed = needs_renewal(engine_not_after, unix_now()) && not_after > engine_not_after;
                if sent.as_ref() != Some(&fp) || renewed {
                    tracing::info!(ge = %name, groups = ?fp.0, keys = ?fp.2, not_after, "new credentials from the GMS");
                    sent = Some(fp);
                    engine_not_after = not_after;
                    if tx.send(c).is_err() {
                        return;
                    }
                    let _ = wake.write_all(&[1]);
                }
            }
            Err(e) => tracing::error!("the GMS state is unusable: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::needs_renewal;

    #[test]
    fn certificates_are_renewed_ten_days_before_they_expire() {
        let day = 86_400;
        assert!(!needs_renewal(100 * day, 70 * day));
        assert!(!needs_renewal(100 * day, 90 * day));
        assert!(needs_renewal(100 * day, 90 * day + 1));
        assert!(needs_renewal(100 * day, 200 * day), "already expired");
    }
}

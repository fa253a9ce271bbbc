//! The local control socket: `gscip status` connects, sends `status`, and reads one JSON
//! document (PIT entries, counters, held packets). Unix socket, mode 0600, root only.

use crate::DaemonError;
use gscip_core::Engine;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Where a daemon's control socket is when its configuration does not say.
pub fn default_socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/run/gscip/{name}.sock"))
}

#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlSocket {
    pub fn bind(path: &Path) -> Result<Self, DaemonError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)
            .map_err(|e| DaemonError::Configuration(format!("control socket {}: {e}", path.display())))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(ControlSocket { listener, path: path.to_owned() })
    }

    /// The listener's descriptor, for the daemon's `poll()`.
    pub fn raw_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.listener.as_raw_fd()
    }

    /// Answers whoever is waiting (never blocks the data plane for long).
    pub fn serve(&self, engine: &Engine, awake: &StayAwakeStats) {
        while let Ok((mut conn, _)) = self.listener.accept() {
            let _ = conn.set_nonblocking(false);
            let _ = conn.set_read_timeout(Some(std::time::Duration::from_millis(100)));
            let mut req = [0u8; 64];
            let n = conn.read(&mut req).unwrap_or(0);
            let reply = if req[..n].starts_with(b"status") {
                status_json(engine, awake).to_string()
            } else {
                serde_json::json!({ "error": "unknown request; send `status`" }).to_string()
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How the daemon's loop stayed awake for new flows instead of sleeping (docs/dprp.md section
/// 16): how many looks at the queues, and how long they took in all.
#[derive(Debug, Default, Clone, Copy)]
pub struct StayAwakeStats {
    pub looks: u64,
    pub us: u64,
}

/// What `gscip status` shows.
pub fn status_json(engine: &Engine, awake: &StayAwakeStats) -> serde_json::Value {
    let c = engine.counters();
    let pit: Vec<serde_json::Value> = engine
        .pit()
        .iter()
        .map(|e| {
            serde_json::json!({
                "cid": e.cid.to_string(),
                "action": e.action.as_str(),
                "group": e.group.map(|g| g.0),
                "key_version": e.key_version,
                "state": format!("{:?}", e.state).to_lowercase(),
                "path": e.summary.path,
                "packets": e.counters.packets,
                "bytes": e.counters.bytes,
                "sealed": e.counters.sealed,
                "opened": e.counters.opened,
                "auth_failures": e.counters.auth_failures,
                "replays": e.counters.replays,
                "discarded": e.counters.discarded,
            })
        })
        .collect();
    // The counters apart: one `json!` of them all would pass the macro's recursion limit.
    let counters = serde_json::json!({
        "packets": c.packets, "sealed": c.sealed, "opened": c.opened, "held": c.held,
        "released": c.released, "hold_overflow": c.hold_overflow, "hold_expired": c.hold_expired,
        "discarded": c.discarded, "rejects_sent": c.rejects_sent, "auth_failures": c.auth_failures,
        "replays": c.replays, "malformed": c.malformed, "bad_control": c.bad_control,
        "control_sent": c.control_sent, "negotiations_started": c.negotiations_started,
        "negotiations_completed": c.negotiations_completed, "negotiations_failed": c.negotiations_failed,
        "restarts_requested": c.restarts_requested, "restarts_answered": c.restarts_answered,
        "pieces_held": c.pieces_held, "units_reassembled": c.units_reassembled,
        "pieces_dropped": c.pieces_dropped, "units_failed": c.units_failed,
        "flows_segmented": c.flows_segmented,
        "flows_back_to_units": c.flows_back_to_units,
        "signatures_verified": c.signatures_verified, "macs_verified": c.macs_verified,
        "path_keys_derived": c.path_keys_derived,
        "negotiations_marked": c.negotiations_marked,
        "agreements_ahead_used": c.agreements_ahead_used,
        "negotiations_joined_at_rgi": c.negotiations_joined_at_rgi,
        "ddes_recovered_from_icmp": c.ddes_recovered_from_icmp,
        "mpits_copied": c.mpits_copied,
    });
    serde_json::json!({
        "name": engine.name(),
        "kind": engine.kind().as_str(),
        "mode": engine.mode().as_str(),
        "held_packets": engine.held_packets(),
        "negotiations_in_progress": engine.negotiations_in_progress(),
        "negotiations_waiting": engine.negotiations_waiting(),
        "ephemeral_keys_ready": engine.ephemeral_keys_ready(),
        "path_keys": engine.path_keys(),
        "counters": counters,
        "stay_awake": {
            "dprp_round_trip_us": engine.dprp_round_trip().map(|m| m.0),
            "looks": awake.looks,
            "us": awake.us,
        },
        "pit": pit,
    })
}

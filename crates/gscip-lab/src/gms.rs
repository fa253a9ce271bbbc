//! The real GMS in the lab: `gmsd` on SQLite in its own namespace on the management network
//! ([`crate::Lab::add_management`]); the lab defines the scenario's groups and GEs through the
//! admin API, issues one enrollment token per GE, and every `gscipd` enrolls itself with it.

use crate::run::Processes;
use crate::{LabError, Management};
use gscip_gms_client::api::NewGe;
use gscip_gms_client::client::AdminClient;
use gscip_sim::scenario::{ModeDef, NodeKind, Scenario};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The port `gmsd` listens on in the lab.
pub const GMS_PORT: u16 = 4399;

/// A running `gmsd` in the lab.
#[derive(Debug)]
pub struct LabGms {
    pub management: Management,
    pub data_dir: PathBuf,
    pub ca_pem: String,
    admin: Option<AdminClient>,
    gmsd: PathBuf,
    password_file: PathBuf,
    process: Option<Processes>,
}

fn io(e: std::io::Error) -> LabError {
    LabError::Environment(e.to_string())
}

impl LabGms {
    /// Starts `gmsd` (binary `gmsd`) with its data in `work/gms` and logs in as administrator.
    pub fn start(management: &Management, gmsd: &Path, work: &Path) -> Result<LabGms, LabError> {
        if !gmsd.exists() {
            return Err(LabError::Environment(format!("gmsd not found at {} (build it: make build)", gmsd.display())));
        }
        let data_dir = work.join("gms");
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir).map_err(io)?;
        let mut pw = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut pw);
        let password: String = pw.iter().map(|b| format!("{b:02x}")).collect();
        let password_file = work.join("gms-admin-password");
        gscip_gms_client::ge::write_secret(&password_file, password.as_bytes()).map_err(io)?;
        let mut g = LabGms {
            management: management.clone(),
            data_dir,
            ca_pem: String::new(),
            admin: None,
            gmsd: gmsd.to_owned(),
            password_file,
            process: None,
        };
        g.run()?;
        Ok(g)
    }

    /// Starts the process and waits until the administrator can log in.
    fn run(&mut self) -> Result<(), LabError> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.data_dir.join("gmsd.log")).map_err(io)?;
        let names = format!("{},{}", self.management.gms_address, self.management.admin_address);
        let child = Command::new("ip")
            .args(["netns", "exec", &self.management.namespace])
            .arg(&self.gmsd)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(["--listen", &format!("0.0.0.0:{GMS_PORT}"), "--tls-name", &names])
            .arg("--admin-password-file")
            .arg(&self.password_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io)?)
            .stderr(log)
            .spawn()
            .map_err(io)?;
        self.process = Some(Processes::one("gmsd", child));
        let password = std::fs::read_to_string(&self.password_file).map_err(io)?;
        let t0 = Instant::now();
        loop {
            let ca = std::fs::read_to_string(self.data_dir.join("ca.pem")).unwrap_or_default();
            if !ca.is_empty() {
                if let Ok((admin, _)) = AdminClient::login(&self.admin_url(), &ca, "admin", password.trim()) {
                    self.ca_pem = ca;
                    self.admin = Some(admin);
                    return Ok(());
                }
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let log = std::fs::read_to_string(self.data_dir.join("gmsd.log")).unwrap_or_default();
                return Err(LabError::Environment(format!("gmsd did not start: {log}")));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The administrator's API client.
    pub fn admin(&self) -> Result<&AdminClient, LabError> {
        self.admin.as_ref().ok_or_else(|| LabError::Environment("gmsd is not running".into()))
    }

    /// Stops `gmsd` (the GEs keep working on their cached keys).
    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Starts `gmsd` again on the same database.
    pub fn restart(&mut self) -> Result<(), LabError> {
        self.stop();
        self.run()
    }

    /// The URL the administrator (this process) uses.
    pub fn admin_url(&self) -> String {
        format!("https://{}:{GMS_PORT}", self.management.admin_address)
    }

    /// The URL GEs use.
    pub fn ge_url(&self) -> String {
        format!("https://{}:{GMS_PORT}", self.management.gms_address)
    }

    /// Defines the scenario's groups and GEs, as an administrator would.
    pub fn define(&self, s: &Scenario) -> Result<(), LabError> {
        let refused = |e: gscip_gms_client::client::ClientError| LabError::Environment(format!("GMS: {e}"));
        for g in &s.groups {
            let name = g.name.clone().unwrap_or_else(|| format!("group{}", g.id));
            self.admin()?.create_group(Some(g.id), &name).map_err(refused)?;
        }
        for n in s.nodes.iter().filter(|n| n.kind.is_ge()) {
            let kind = match n.kind {
                NodeKind::Ges => "ges",
                NodeKind::Gea => "gea",
                _ => "gen",
            };
            let mode = if n.mode == Some(ModeDef::Open) { "open" } else { "closed" };
            self.admin()?
                .create_ge(&NewGe {
                    name: n.name.clone(),
                    kind: kind.into(),
                    mode: mode.into(),
                    groups: n.groups.clone(),
                })
                .map_err(refused)?;
        }
        Ok(())
    }

    /// Writes the `[gms]` table of a GE's configuration, with a fresh one-time token.
    pub fn ge_settings(&self, ge: &str, work: &Path) -> Result<String, LabError> {
        let token =
            self.admin()?.enrollment_token(ge, Some(3600)).map_err(|e| LabError::Environment(format!("GMS: {e}")))?;
        let token_file = work.join(format!("{ge}.token"));
        gscip_gms_client::ge::write_secret(&token_file, token.token.as_bytes()).map_err(io)?;
        let state_dir = work.join(format!("{ge}.state"));
        let _ = std::fs::remove_dir_all(&state_dir);
        Ok(format!(
            "[gms]\nurl = \"{}\"\nca_file = \"{}\"\nname = \"{ge}\"\nstate_dir = \"{}\"\ntoken_file = \"{}\"\n",
            self.ge_url(),
            self.data_dir.join("ca.pem").display(),
            state_dir.display(),
            token_file.display()
        ))
    }
}

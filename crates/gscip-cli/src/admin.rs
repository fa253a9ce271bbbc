//! `gscip admin …`: the GMS's REST API from the command line. Tables for people, `--json` for
//! scripts. Exit codes: 0 done; 1 the GMS refused or could not be reached; 2 bad usage or
//! local configuration.

use clap::{Args, Subcommand};
use gscip_gms_client::api::{NewGe, NewNatAce};
use gscip_gms_client::client::{AdminClient, ClientError};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The GMS URL, e.g. https://gms.example:4399.
    #[arg(long, env = "GSCIP_GMS_URL", global = true)]
    server: Option<String>,
    /// The GMS CA certificate (PEM; gmsd writes it to DATA_DIR/ca.pem).
    #[arg(long, env = "GSCIP_GMS_CA", global = true)]
    ca: Option<PathBuf>,
    /// An administrator token (from `gscip admin login`).
    #[arg(long, env = "GSCIP_GMS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// JSON output instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand, Debug)]
enum AdminCommand {
    /// Log in with a name and password; prints a token for GSCIP_GMS_TOKEN.
    Login {
        #[arg(long, default_value = "admin")]
        user: String,
        /// A file holding the password (default: read from standard input).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Administrators.
    #[command(subcommand)]
    Admins(AdminsCommand),
    /// Communication groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// GSCIP elements.
    #[command(subcommand)]
    Ges(GesCommand),
    /// Group key versions (never the keys).
    Keys,
    /// The rotation schedule.
    Rotation,
    /// The audit log, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Who can reach whom, by the policy function.
    Matrix,
    /// NAT access-control entries (for GNATs).
    #[command(subcommand)]
    NatAces(NatCommand),
}

#[derive(Subcommand, Debug)]
enum AdminsCommand {
    List,
    /// Add an administrator; the password is read from the file (or standard input).
    Create {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum GroupsCommand {
    List,
    Create {
        name: String,
        /// The group number (default: the lowest free one).
        #[arg(long)]
        id: Option<u16>,
    },
    Delete {
        id: u16,
    },
    /// Rotate the group's key now (the old one stays valid for the grace period).
    Rotate {
        id: u16,
    },
}

#[derive(Subcommand, Debug)]
enum GesCommand {
    List,
    Show {
        name: String,
    },
    /// Define a GE (it then enrolls with a token).
    Create {
        name: String,
        /// ges, gen, gea (gnat, gsra).
        #[arg(long)]
        kind: String,
        /// open or closed.
        #[arg(long)]
        mode: String,
        /// Groups, comma-separated.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<u16>,
    },
    /// Replace the GE's groups (groups it leaves are rotated at once).
    SetGroups {
        name: String,
        /// Groups, comma-separated (empty: none).
        #[arg(value_delimiter = ',')]
        groups: Vec<u16>,
    },
    /// Issue a one-time enrollment token.
    Token {
        name: String,
        #[arg(long)]
        valid_seconds: Option<u64>,
    },
    /// Revoke the GE: no more keys; its groups are rotated at once.
    Revoke {
        name: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum NatCommand {
    List,
    Create {
        #[arg(long)]
        gnat: String,
        #[arg(long)]
        group: u16,
        #[arg(long)]
        inside_address: String,
        #[arg(long, default_value = "tcp")]
        protocol: String,
        #[arg(long)]
        port: u16,
    },
    Delete {
        id: i64,
    },
}

enum Failure {
    Usage(String),
    Gms(ClientError),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Configuration(m) => Failure::Usage(m),
            other => Failure::Gms(other),
        }
    }
}

pub fn run(a: AdminArgs) -> ExitCode {
    match execute(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("gscip admin: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Gms(e)) => {
            eprintln!("gscip admin: {e}");
            ExitCode::from(1)
        }
    }
}

fn target(a: &AdminArgs) -> Result<(String, String), Failure> {
    let server = a.server.clone().ok_or_else(|| Failure::Usage("give --server URL (or GSCIP_GMS_URL)".into()))?;
    let ca =
        a.ca.clone()
            .ok_or_else(|| Failure::Usage("give --ca FILE, the GMS CA certificate (or GSCIP_GMS_CA)".into()))?;
    let pem = std::fs::read_to_string(&ca).map_err(|e| Failure::Usage(format!("{}: {e}", ca.display())))?;
    Ok((server, pem))
}

fn client(a: &AdminArgs) -> Result<AdminClient, Failure> {
    let (server, pem) = target(a)?;
    let token = a
        .token
        .clone()
        .ok_or_else(|| Failure::Usage("give --token (or GSCIP_GMS_TOKEN); get one with `gscip admin login`".into()))?;
    Ok(AdminClient::with_token(&server, &pem, &token)?)
}

/// Prints `value` as JSON or as a table of `rows` under `header`.
fn show<T: Serialize>(json: bool, value: &T, header: &[&str], rows: Vec<Vec<String>>) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
        return;
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        println!("{}", s.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r);
    }
}

fn list(v: &[u16]) -> String {
    v.iter().map(u16::to_string).collect::<Vec<_>>().join(",")
}

fn read_password(file: &Option<PathBuf>) -> Result<zeroize::Zeroizing<String>, Failure> {
    let text = match file {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Failure::Usage(format!("{}: {e}", p.display())))?,
        None => {
            let mut s = String::new();
            std::io::stdin().read_line(&mut s).map_err(|e| Failure::Usage(e.to_string()))?;
            s
        }
    };
    Ok(zeroize::Zeroizing::new(text.trim().to_owned()))
}

fn execute(a: &AdminArgs) -> Result<(), Failure> {
    let j = a.json;
    match &a.command {
        AdminCommand::Admins(c) => {
            let client = client(a)?;
            match c {
                AdminsCommand::List => {
                    let v = client.admins()?;
                    let rows = v.iter().map(|n| vec![n.clone()]).collect();
                    show(j, &v, &["name"], rows);
                }
                AdminsCommand::Create { name, password_file } => {
                    client.create_admin(name, &read_password(password_file)?)?;
                }
            }
        }
        AdminCommand::Login { user, password_file } => {
            let (server, pem) = target(a)?;
            let password = read_password(password_file)?;
            let (_, token) = AdminClient::login(&server, &pem, user, &password)?;
            if j {
                println!("{}", serde_json::json!({"token": token.token, "expires": token.expires}));
            } else {
                println!("{}", token.token);
            }
        }
        AdminCommand::Groups(g) => {
            let c = client(a)?;
            match g {
                GroupsCommand::List => {
                    let v = c.groups()?;
                    let rows = v
                        .iter()
                        .map(|g| vec![g.id.to_string(), g.name.clone(), g.key_version.to_string(), g.members.join(",")])
                        .collect();
                    show(j, &v, &["id", "name", "key", "members"], rows);
                }
                GroupsCommand::Create { name, id } => {
                    let g = c.create_group(*id, name)?;
                    show(j, &g, &["id", "name"], vec![vec![g.id.to_string(), g.name.clone()]]);
                }
                GroupsCommand::Delete { id } => c.delete_group(*id)?,
                GroupsCommand::Rotate { id } => {
                    let k = c.rotate_group(*id)?;
                    show(j, &k, &["group", "version"], vec![vec![k.group.to_string(), k.version.to_string()]]);
                }
            }
        }
        AdminCommand::Ges(g) => {
            let c = client(a)?;
            let ge_rows = |v: &[gscip_gms_client::api::Ge]| {
                v.iter()
                    .map(|g| {
                        vec![g.name.clone(), g.kind.clone(), g.mode.clone(), g.status.as_str().into(), list(&g.groups)]
                    })
                    .collect()
            };
            let head = ["name", "kind", "mode", "status", "groups"];
            match g {
                GesCommand::List => {
                    let v = c.ges()?;
                    show(j, &v, &head, ge_rows(&v));
                }
                GesCommand::Show { name } => {
                    let g = c.ge(name)?;
                    show(j, &g, &head, ge_rows(std::slice::from_ref(&g)));
                }
                GesCommand::Create { name, kind, mode, groups } => {
                    let g = c.create_ge(&NewGe {
                        name: name.clone(),
                        kind: kind.clone(),
                        mode: mode.clone(),
                        groups: groups.clone(),
                    })?;
                    show(j, &g, &head, ge_rows(std::slice::from_ref(&g)));
                }
                GesCommand::SetGroups { name, groups } => {
                    let g = c.set_groups(name, groups)?;
                    show(j, &g, &head, ge_rows(std::slice::from_ref(&g)));
                }
                GesCommand::Token { name, valid_seconds } => {
                    let t = c.enrollment_token(name, *valid_seconds)?;
                    if j {
                        println!("{}", serde_json::json!({"ge": t.ge, "token": t.token, "expires": t.expires}));
                    } else {
                        println!("{}", t.token);
                    }
                }
                GesCommand::Revoke { name } => {
                    let g = c.revoke(name)?;
                    show(j, &g, &head, ge_rows(std::slice::from_ref(&g)));
                }
                GesCommand::Delete { name } => c.delete_ge(name)?,
            }
        }
        AdminCommand::Keys => {
            let v = client(a)?.keys()?;
            let rows = v
                .iter()
                .map(|k| {
                    vec![
                        k.group.to_string(),
                        k.version.to_string(),
                        k.created.to_string(),
                        k.expires.map(|e| e.to_string()).unwrap_or_else(|| "current".into()),
                        k.reason.clone(),
                    ]
                })
                .collect();
            show(j, &v, &["group", "version", "created", "expires", "reason"], rows);
        }
        AdminCommand::Rotation => {
            let r = client(a)?.rotation()?;
            let rows = vec![vec![r.daily_at.clone(), r.grace_seconds.to_string(), r.next.to_string()]];
            show(j, &r, &["daily_at_utc", "grace_seconds", "next"], rows);
        }
        AdminCommand::Audit { limit } => {
            let v = client(a)?.audit(*limit)?;
            let s = |x: &Option<serde_json::Value>| x.as_ref().map(|v| v.to_string()).unwrap_or_default();
            let rows = v
                .iter()
                .map(|e| {
                    vec![
                        e.id.to_string(),
                        e.at.to_string(),
                        e.actor.clone(),
                        e.action.clone(),
                        e.object.clone(),
                        s(&e.before),
                        s(&e.after),
                    ]
                })
                .collect();
            show(j, &v, &["id", "at", "actor", "action", "object", "before", "after"], rows);
        }
        AdminCommand::Matrix => {
            let v = client(a)?.matrix()?;
            let rows = v
                .iter()
                .map(|m| {
                    vec![
                        m.from.clone(),
                        m.to.clone(),
                        m.outcome.clone(),
                        m.group.map(|g| g.to_string()).unwrap_or_default(),
                    ]
                })
                .collect();
            show(j, &v, &["from", "to", "outcome", "group"], rows);
        }
        AdminCommand::NatAces(n) => {
            let c = client(a)?;
            let rows = |v: &[gscip_gms_client::api::NatAce]| {
                v.iter()
                    .map(|x| {
                        vec![
                            x.id.to_string(),
                            x.gnat.clone(),
                            x.group.to_string(),
                            x.inside_address.clone(),
                            x.protocol.clone(),
                            x.port.to_string(),
                        ]
                    })
                    .collect()
            };
            let head = ["id", "gnat", "group", "inside", "proto", "port"];
            match n {
                NatCommand::List => {
                    let v = c.nat_aces()?;
                    show(j, &v, &head, rows(&v));
                }
                NatCommand::Create { gnat, group, inside_address, protocol, port } => {
                    let x = c.create_nat_ace(&NewNatAce {
                        gnat: gnat.clone(),
                        group: *group,
                        inside_address: inside_address.clone(),
                        protocol: protocol.clone(),
                        port: *port,
                    })?;
                    show(j, &x, &head, rows(std::slice::from_ref(&x)));
                }
                NatCommand::Delete { id } => c.delete_nat_ace(*id)?,
            }
        }
    }
    Ok(())
}

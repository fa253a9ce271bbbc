//! `gmsd`, the GSCIP group management server (SPEC §6): the administrator defines groups and
//! GEs once; GEs enroll with a one-time token and then get their GE information and group keys
//! over mutual TLS, with changes pushed by long-poll. Keys are generated here, sealed at rest
//! under a master key kept outside the database, versioned, rotated on a daily schedule and at
//! once when a member leaves or is revoked. SQLite by default, PostgreSQL for several instances
//! sharing one database. See `docs/gms.md`.
//!
//! * [`service`]: the operations on the database (time passed in);
//! * [`api`], [`ui`], [`server`]: HTTPS, the REST API, the web UI;
//! * [`seal`], [`tls`], [`rotation`]: secrets at rest, the TLS authority, the schedule.

pub mod api;
pub mod error;
pub mod rotation;
pub mod seal;
pub mod server;
pub mod service;
pub mod tls;
pub mod ui;

pub use error::GmsError;
pub use service::{Gms, GmsConfig};

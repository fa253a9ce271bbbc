//! The GMS API shared by `gmsd` and its clients: the JSON bodies ([`api`]), a blocking HTTPS
//! client for administrators and GEs ([`client`]), and a GE's state directory and GMS-backed
//! [`gscip_core::keysource::KeySource`] ([`ge`]). See `docs/gms.md`.

pub mod api;
pub mod client;
pub mod ge;

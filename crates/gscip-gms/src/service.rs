//! The GMS's operations on its database: groups, GEs, memberships, enrollment, group keys and
//! their rotation, administrators, the audit log, NAT access-control entries. Every change runs
//! in one transaction that also writes the audit entry and bumps the change revision GEs
//! long-poll on. Time is passed in (`now`, Unix seconds), so rotation and expiry are tested in
//! virtual time.

use crate::error::{conflict_on_unique, GmsError, Result};
use crate::rotation::DailySchedule;
use crate::seal::MasterKey;
use crate::tls::{cert_hash, TlsAuthority};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use gscip_core::group::GroupId;
use gscip_core::identity::{verify_signature, CertificateAuthority};
use gscip_core::policy::{decide, Outcome, PathGe};
use gscip_gms_client::api::*;
use gscip_wire::dprp::{GeKind, Mode, Side, MAX_GROUPS, MAX_NAME_LEN};
use serde_json::json;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use zeroize::Zeroizing;

/// Which database the GMS runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Backend::Postgres)
        } else {
            Err(GmsError::Configuration(format!("database URL {url:?}: expected sqlite://FILE or postgres://…")))
        }
    }
}

/// How the GMS behaves (gmsd's flags).
#[derive(Debug, Clone)]
pub struct GmsConfig {
    pub schedule: DailySchedule,
    /// How long a replaced key stays valid after a scheduled or manual rotation.
    pub grace_seconds: u64,
    /// Validity of the DPRP certificates the GMS issues to GEs.
    pub certificate_validity_seconds: u64,
    /// Validity of administrator tokens from a login.
    pub admin_token_seconds: u64,
}

impl Default for GmsConfig {
    fn default() -> Self {
        GmsConfig {
            schedule: DailySchedule::default(),
            grace_seconds: 3600,
            certificate_validity_seconds: 30 * 86_400,
            admin_token_seconds: 12 * 3600,
        }
    }
}

/// The group management server's state and operations.
pub struct Gms {
    pool: AnyPool,
    pub backend: Backend,
    master: MasterKey,
    ca: CertificateAuthority,
    pub tls: TlsAuthority,
    pub config: GmsConfig,
    /// Whether this start created the GMS's secrets (a new database).
    pub created_secrets: bool,
    /// The latest change revision known here: updated at once by this instance's changes and
    /// every 250 ms from the database (changes by other instances). Long-polls wait on it.
    revision: Arc<tokio::sync::watch::Sender<i64>>,
    /// Password guessing: consecutive failed password checks per administrator name.
    login_failures: std::sync::Mutex<LoginFailures>,
}

/// Consecutive failed password checks per administrator name (existing or not, so that the
/// answer does not tell which names exist), in this instance's memory. After
/// [`LoginFailures::FREE_TRIES`] failures a name is refused for [`LoginFailures::LOCK_SECONDS`]
/// seconds, each further failure starts a new lock, and a success clears the count.
#[derive(Debug, Default)]
pub(crate) struct LoginFailures {
    by_name: HashMap<String, (u32, u64)>,
}

impl LoginFailures {
    pub const FREE_TRIES: u32 = 5;
    pub const LOCK_SECONDS: u64 = 30;
    /// Names tracked at most; beyond, the names without a running lock are forgotten.
    const MAX_NAMES: usize = 10_000;

    /// Seconds the name is still locked for, if it is.
    fn locked_for(&self, name: &str, now: u64) -> Option<u64> {
        self.by_name.get(name).map(|&(_, until)| until.saturating_sub(now)).filter(|&left| left > 0)
    }

    fn failed(&mut self, name: &str, now: u64) {
        if self.by_name.len() >= Self::MAX_NAMES && !self.by_name.contains_key(name) {
            self.by_name.retain(|_, &mut (_, until)| until > now);
        }
        let entry = self.by_name.entry(name.to_owned()).or_insert((0, 0));
        entry.0 = entry.0.saturating_add(1);
        if entry.0 >= Self::FREE_TRIES {
            entry.1 = now + Self::LOCK_SECONDS;
        }
    }

    fn succeeded(&mut self, name: &str) {
        self.by_name.remove(name);
    }
}

impl std::fmt::Debug for Gms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gms").field("backend", &self.backend).field("config", &self.config).finish_non_exhaustive()
    }
}

type Tx<'a> = Transaction<'a, Any>;

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}
fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>> {
    let mut b = Zeroizing::new([0u8; N]);
    aws_lc_rs::rand::fill(&mut b[..]).map_err(|_| GmsError::Internal("no randomness".into()))?;
    Ok(b)
}
fn sha256_hex(s: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, s.as_bytes()).as_ref())
}
fn new_token(prefix: &str) -> Result<String> {
    let b = random_bytes::<32>()?;
    Ok(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&b[..])))
}
fn key_aad(group: u16, version: u32) -> String {
    format!("group-key/{group}/{version}")
}

/// Checks a GE name: what DPRP certificates allow.
pub fn check_ge_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(GmsError::BadRequest(format!("GE name must be 1 to {MAX_NAME_LEN} characters")));
    }
    if !name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) {
        return Err(GmsError::BadRequest(format!("GE name {name:?} may only use A-Z a-z 0-9 . _ -")));
    }
    Ok(())
}

fn check_label(what: &str, s: &str) -> Result<()> {
    if s.trim().is_empty() || s.chars().count() > 64 || s.chars().any(char::is_control) {
        return Err(GmsError::BadRequest(format!("{what} must be 1 to 64 printable characters")));
    }
    Ok(())
}

pub fn parse_kind(s: &str) -> Result<GeKind> {
    Ok(match s {
        "ges" => GeKind::Ges,
        "gen" => GeKind::Gen,
        "gea" => GeKind::Gea,
        "gnat" => GeKind::Gnat,
        "gsra" => GeKind::Gsra,
        _ => return Err(GmsError::BadRequest(format!("kind {s:?}: expected ges, gen, gea, gnat or gsra"))),
    })
}

pub fn parse_mode(s: &str) -> Result<Mode> {
    Ok(match s {
        "open" => Mode::Open,
        "closed" => Mode::Closed,
        _ => return Err(GmsError::BadRequest(format!("mode {s:?}: expected open or closed"))),
    })
}

fn ge_from_row(r: &AnyRow, groups: Vec<u16>) -> Result<Ge> {
    let status: String = r.try_get("status")?;
    Ok(Ge {
        name: r.try_get("name")?,
        kind: r.try_get("kind")?,
        mode: r.try_get("mode")?,
        groups,
        status: GeStatus::parse(&status).ok_or_else(|| GmsError::Internal(format!("stored status {status:?}")))?,
        public_key: r.try_get("public_key")?,
        created: u(r.try_get("created")?),
        enrolled: r.try_get::<Option<i64>, _>("enrolled")?.map(u),
    })
}

const GE_COLUMNS: &str = "name, kind, mode, status, public_key, created, enrolled";

impl Gms {
    /// Connects, migrates, and loads (or on first start creates) the GMS's secrets.
    pub async fn open(database_url: &str, master: MasterKey, config: GmsConfig, now: u64) -> Result<Gms> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(database_url)?;
        let pool = AnyPoolOptions::new()
            // SQLite has one writer: one connection serialises every statement here instead
            // of failing with "database is locked" (nothing holds it while waiting: long-polls
            // wait on a channel, argon2 runs after its query). PostgreSQL gets a pool.
            .max_connections(if backend == Backend::Sqlite { 1 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(database_url)
            .await
            .map_err(|e| GmsError::Configuration(format!("database {}: {e}", redact_url(database_url))))?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
            sqlx::query("PRAGMA busy_timeout = 5000").execute(&pool).await?;
        }
        let migrated = match backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&pool).await,
            Backend::Postgres => sqlx::migrate!("migrations/postgres").run(&pool).await,
        };
        migrated.map_err(|e| GmsError::Configuration(format!("database migration: {e}")))?;

        let (ca, tls, created_secrets) = Self::load_or_create_authorities(&pool, &master, &config, now).await?;
        let current: i64 = sqlx::query("SELECT revision FROM meta WHERE id = 1").fetch_one(&pool).await?.try_get(0)?;
        let revision = Arc::new(tokio::sync::watch::channel(current).0);
        // One poller for every waiter; it ends when the Gms is dropped.
        let (weak, poll_pool) = (Arc::downgrade(&revision), pool.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let Some(tx) = weak.upgrade() else { return };
                if let Ok(row) = sqlx::query("SELECT revision FROM meta WHERE id = 1").fetch_one(&poll_pool).await {
                    if let Ok(r) = row.try_get::<i64, _>(0) {
                        advance(&tx, r);
                    }
                }
            }
        });
        Ok(Gms {
            pool,
            backend,
            master,
            ca,
            tls,
            config,
            created_secrets,
            revision,
            login_failures: std::sync::Mutex::new(LoginFailures::default()),
        })
    }

    async fn load_or_create_authorities(
        pool: &AnyPool,
        master: &MasterKey,
        config: &GmsConfig,
        now: u64,
    ) -> Result<(CertificateAuthority, TlsAuthority, bool)> {
        let mut tx = pool.begin().await?;
        let rows = sqlx::query("SELECT name, sealed FROM secrets").fetch_all(&mut *tx).await?;
        let get = |n: &str| -> Option<Vec<u8>> {
            rows.iter()
                .find(|r| r.try_get::<String, _>("name").ok().as_deref() == Some(n))
                .and_then(|r| r.try_get("sealed").ok())
        };
        if let (Some(dprp), Some(tls_key), Some(tls_cert)) =
            (get("dprp-ca-seed"), get("tls-ca-key"), get("tls-ca-cert"))
        {
            tx.commit().await?;
            let seed_bytes = master.open("secret/dprp-ca-seed", &dprp)?;
            let mut seed = Zeroizing::new([0u8; 32]);
            if seed_bytes.len() != 32 {
                return Err(GmsError::Internal("stored DPRP CA seed has the wrong length".into()));
            }
            seed.copy_from_slice(&seed_bytes);
            let ca = CertificateAuthority::from_seed(&seed).map_err(|e| GmsError::Internal(e.to_string()))?;
            let key_pem = master.open("secret/tls-ca-key", &tls_key)?;
            let key_pem = Zeroizing::new(
                String::from_utf8(key_pem.to_vec()).map_err(|_| GmsError::Internal("TLS CA key".into()))?,
            );
            let cert_pem = String::from_utf8(tls_cert).map_err(|_| GmsError::Internal("TLS CA certificate".into()))?;
            return Ok((ca, TlsAuthority::load(&key_pem, cert_pem)?, false));
        }
        if !rows.is_empty() {
            return Err(GmsError::Internal("the database holds only some of the GMS secrets".into()));
        }
        // First start: create the authorities; the current rotation slot counts as done.
        let seed = random_bytes::<32>()?;
        let ca = CertificateAuthority::from_seed(&seed).map_err(|e| GmsError::Internal(e.to_string()))?;
        let (tls, key_pem) = TlsAuthority::generate(now)?;
        let written: Result<(), sqlx::Error> = async {
            for (name, value) in [
                (
                    "dprp-ca-seed",
                    master.seal("secret/dprp-ca-seed", &seed[..]).map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
                ),
                (
                    "tls-ca-key",
                    master
                        .seal("secret/tls-ca-key", key_pem.as_bytes())
                        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?,
                ),
                ("tls-ca-cert", tls.ca_pem.as_bytes().to_vec()),
            ] {
                sqlx::query("INSERT INTO secrets (name, sealed) VALUES ($1, $2)")
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("INSERT INTO rotation_slots (slot, done) VALUES ($1, $2)")
                .bind(i(config.schedule.latest_slot(now)))
                .bind(i(now))
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await;
        match written {
            Ok(()) => Ok((ca, tls, true)),
            // Another instance initialised the same database at the same moment: use its secrets.
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => {
                Box::pin(Self::load_or_create_authorities(pool, master, config, now)).await
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The trust anchor GEs verify DPRP certificates with.
    pub fn gms_public_key(&self) -> [u8; 32] {
        self.ca.trust_anchor().gms_public_key
    }

    // ----- bookkeeping ----------------------------------------------------------------------

    async fn audit(
        tx: &mut Tx<'_>,
        now: u64,
        actor: &str,
        action: &str,
        object: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
    ) -> Result<()> {
        sqlx::query("INSERT INTO audit (at, actor, action, object, before, after) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(i(now))
            .bind(actor)
            .bind(action)
            .bind(object)
            .bind(before.map(|v| v.to_string()))
            .bind(after.map(|v| v.to_string()))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn insert_memberships(tx: &mut Tx<'_>, ge: &str, groups: &[u16]) -> Result<()> {
        for g in groups {
            sqlx::query("INSERT INTO memberships (ge, group_id) VALUES ($1, $2)")
                .bind(ge)
                .bind(i64::from(*g))
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    async fn bump(tx: &mut Tx<'_>) -> Result<()> {
        sqlx::query("UPDATE meta SET revision = revision + 1 WHERE id = 1").execute(&mut **tx).await?;
        Ok(())
    }

    /// Commits a change and wakes the GEs waiting on this instance.
    async fn commit(&self, tx: Tx<'_>) -> Result<()> {
        tx.commit().await?;
        self.publish().await
    }

    async fn publish(&self) -> Result<()> {
        let r = self.revision().await?;
        advance(&self.revision, r);
        Ok(())
    }

    pub async fn revision(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT revision FROM meta WHERE id = 1").fetch_one(&self.pool).await?.try_get(0)?)
    }

    /// Waits until the revision passes `after` or `timeout` ends; returns the revision then.
    /// Changes made on this instance wake it at once; changes by other instances sharing the
    /// database are seen within a quarter of a second.
    pub async fn wait_for_change(&self, after: i64, timeout: Duration) -> Result<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.revision.subscribe();
        loop {
            let v = *rx.borrow_and_update();
            if v > after {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(v),
            }
        }
    }

    // ----- groups ---------------------------------------------------------------------------

    async fn members(&self, group: u16) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT ge FROM memberships WHERE group_id = $1 ORDER BY ge")
            .bind(i64::from(group))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| r.try_get("ge").map_err(Into::into)).collect()
    }

    pub async fn groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT g.id, g.name, g.created, (SELECT MAX(version) FROM group_keys k WHERE k.group_id = g.id) AS v \
             FROM groups g ORDER BY g.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::new();
        for r in rows {
            let id = r.try_get::<i64, _>("id")? as u16;
            out.push(Group {
                id,
                name: r.try_get("name")?,
                key_version: r.try_get::<Option<i64>, _>("v")?.unwrap_or(0) as u32,
                created: u(r.try_get("created")?),
                members: self.members(id).await?,
            });
        }
        Ok(out)
    }

    pub async fn group(&self, id: u16) -> Result<Group> {
        self.groups()
            .await?
            .into_iter()
            .find(|g| g.id == id)
            .ok_or_else(|| GmsError::NotFound(format!("no group {id}")))
    }

    pub async fn create_group(&self, actor: &str, new: &NewGroup, now: u64) -> Result<Group> {
        check_label("group name", &new.name)?;
        let mut tx = self.pool.begin().await?;
        let id = match new.id {
            Some(0) => return Err(GmsError::BadRequest("group 0 does not exist: use 1 to 65535".into())),
            Some(id) => id,
            None => {
                let used: BTreeSet<i64> = sqlx::query("SELECT id FROM groups")
                    .fetch_all(&mut *tx)
                    .await?
                    .iter()
                    .filter_map(|r| r.try_get(0).ok())
                    .collect();
                (1..=u16::MAX)
                    .find(|g| !used.contains(&i64::from(*g)))
                    .ok_or_else(|| GmsError::Conflict("all 65535 group numbers are in use".into()))?
            }
        };
        sqlx::query("INSERT INTO groups (id, name, created) VALUES ($1, $2, $3)")
            .bind(i64::from(id))
            .bind(&new.name)
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| {
                conflict_on_unique(e, || format!("group {id} or a group named {:?} exists already", new.name))
            })?;
        self.new_key_version(&mut tx, id, "initial", None, now).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "group.create",
            &format!("group/{id}"),
            None,
            Some(json!({"id": id, "name": new.name})),
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        self.group(id).await
    }

    pub async fn delete_group(&self, actor: &str, id: u16, now: u64) -> Result<()> {
        let before = self.group(id).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM groups WHERE id = $1").bind(i64::from(id)).execute(&mut *tx).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "group.delete",
            &format!("group/{id}"),
            Some(json!({"id": id, "name": before.name, "members": before.members})),
            None,
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await
    }

    // ----- keys -----------------------------------------------------------------------------

    /// Adds a key version. `previous_expires`: when the versions still current end (None: at
    /// `now + grace`, for scheduled and manual rotations; Some(now): at once, for leave and
    /// revoke, which also cut short earlier grace periods).
    async fn new_key_version(
        &self,
        tx: &mut Tx<'_>,
        group: u16,
        reason: &str,
        previous_expires: Option<u64>,
        now: u64,
    ) -> Result<KeyVersion> {
        let g = i64::from(group);
        let max: Option<i64> = sqlx::query("SELECT MAX(version) FROM group_keys WHERE group_id = $1")
            .bind(g)
            .fetch_one(&mut **tx)
            .await?
            .try_get(0)?;
        let version =
            u32::try_from(max.unwrap_or(0) + 1).map_err(|_| GmsError::Internal("key version overflow".into()))?;
        match previous_expires {
            None => {
                sqlx::query("UPDATE group_keys SET expires = $1 WHERE group_id = $2 AND expires IS NULL")
                    .bind(i(now + self.config.grace_seconds))
                    .bind(g)
                    .execute(&mut **tx)
                    .await?;
            }
            Some(at) => {
                sqlx::query(
                    "UPDATE group_keys SET expires = $1 WHERE group_id = $2 AND (expires IS NULL OR expires > $1)",
                )
                .bind(i(at))
                .bind(g)
                .execute(&mut **tx)
                .await?;
            }
        }
        let material = random_bytes::<32>()?;
        let sealed = self.master.seal(&key_aad(group, version), &material[..])?;
        sqlx::query("INSERT INTO group_keys (group_id, version, sealed, created, expires, reason) VALUES ($1, $2, $3, $4, NULL, $5)")
            .bind(g)
            .bind(i64::from(version))
            .bind(sealed)
            .bind(i(now))
            .bind(reason)
            .execute(&mut **tx)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("group {group} was rotated at the same moment; retry")))?;
        Ok(KeyVersion { group, version, created: now, expires: None, reason: reason.to_owned() })
    }

    async fn rotate_in(
        &self,
        tx: &mut Tx<'_>,
        actor: &str,
        group: u16,
        reason: &str,
        immediate: bool,
        now: u64,
    ) -> Result<KeyVersion> {
        let kv = self.new_key_version(tx, group, reason, immediate.then_some(now), now).await?;
        Self::audit(
            tx,
            now,
            actor,
            "key.rotate",
            &format!("group/{group}"),
            Some(json!({"version": kv.version - 1})),
            Some(json!({"version": kv.version, "reason": reason})),
        )
        .await?;
        Ok(kv)
    }

    /// A manual rotation (the previous version stays valid for the grace period).
    pub async fn rotate(&self, actor: &str, group: u16, now: u64) -> Result<KeyVersion> {
        self.group(group).await?;
        let mut tx = self.pool.begin().await?;
        let kv = self.rotate_in(&mut tx, actor, group, "manual", false, now).await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        Ok(kv)
    }

    /// Runs the scheduled rotation if its latest slot has not been done yet; returns the slot
    /// rotated for. Idempotent: a slot is recorded once, whichever instance gets there first.
    pub async fn run_schedule(&self, now: u64) -> Result<Option<u64>> {
        let slot = self.config.schedule.latest_slot(now);
        let done: Option<i64> =
            sqlx::query("SELECT MAX(slot) FROM rotation_slots").fetch_one(&self.pool).await?.try_get(0)?;
        if done.is_some_and(|d| d >= i(slot)) {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query("INSERT INTO rotation_slots (slot, done) VALUES ($1, $2)")
            .bind(i(slot))
            .bind(i(now))
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let groups: Vec<i64> = sqlx::query("SELECT id FROM groups ORDER BY id")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .filter_map(|r| r.try_get(0).ok())
            .collect();
        for g in groups {
            self.rotate_in(&mut tx, "schedule", g as u16, "scheduled", false, now).await?;
        }
        Self::bump(&mut tx).await?;
        match tx.commit().await {
            Ok(()) => {
                self.publish().await?;
                Ok(Some(slot))
            }
            Err(sqlx::Error::Database(d)) if d.is_unique_violation() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn keys(&self) -> Result<Vec<KeyVersion>> {
        let rows = sqlx::query(
            "SELECT group_id, version, created, expires, reason FROM group_keys ORDER BY group_id, version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(KeyVersion {
                    group: r.try_get::<i64, _>("group_id")? as u16,
                    version: r.try_get::<i64, _>("version")? as u32,
                    created: u(r.try_get("created")?),
                    expires: r.try_get::<Option<i64>, _>("expires")?.map(u),
                    reason: r.try_get("reason")?,
                })
            })
            .collect()
    }

    pub fn rotation_info(&self, now: u64) -> RotationInfo {
        RotationInfo {
            daily_at: self.config.schedule.display(),
            grace_seconds: self.config.grace_seconds,
            next: self.config.schedule.next_slot(now),
        }
    }

    // ----- GEs ------------------------------------------------------------------------------

    async fn ge_groups(&self, name: &str) -> Result<Vec<u16>> {
        let rows = sqlx::query("SELECT group_id FROM memberships WHERE ge = $1 ORDER BY group_id")
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().filter_map(|r| r.try_get::<i64, _>(0).ok()).map(|g| g as u16).collect())
    }

    pub async fn ges(&self) -> Result<Vec<Ge>> {
        let rows = sqlx::query(&format!("SELECT {GE_COLUMNS} FROM ges ORDER BY name")).fetch_all(&self.pool).await?;
        let mut out = Vec::new();
        for r in rows {
            let name: String = r.try_get("name")?;
            let groups = self.ge_groups(&name).await?;
            out.push(ge_from_row(&r, groups)?);
        }
        Ok(out)
    }

    pub async fn ge(&self, name: &str) -> Result<Ge> {
        let r = sqlx::query(&format!("SELECT {GE_COLUMNS} FROM ges WHERE name = $1"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| GmsError::NotFound(format!("no GE named {name:?}")))?;
        ge_from_row(&r, self.ge_groups(name).await?)
    }

    async fn check_groups(&self, groups: &[u16]) -> Result<Vec<u16>> {
        let mut gs: Vec<u16> = groups.to_vec();
        gs.sort_unstable();
        gs.dedup();
        if gs.len() > MAX_GROUPS {
            return Err(GmsError::BadRequest(format!("a GE can be in at most {MAX_GROUPS} groups")));
        }
        let known: BTreeSet<u16> = self.groups().await?.iter().map(|g| g.id).collect();
        if let Some(g) = gs.iter().find(|g| !known.contains(g)) {
            return Err(GmsError::BadRequest(format!("group {g} does not exist; create it first")));
        }
        Ok(gs)
    }

    pub async fn create_ge(&self, actor: &str, new: &NewGe, now: u64) -> Result<Ge> {
        check_ge_name(&new.name)?;
        parse_kind(&new.kind)?;
        parse_mode(&new.mode)?;
        let groups = self.check_groups(&new.groups).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO ges (name, kind, mode, status, created) VALUES ($1, $2, $3, 'pending', $4)")
            .bind(&new.name)
            .bind(&new.kind)
            .bind(&new.mode)
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("a GE named {:?} exists already", new.name)))?;
        Self::insert_memberships(&mut tx, &new.name, &groups).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "ge.create",
            &format!("ge/{}", new.name),
            None,
            Some(json!({"name": new.name, "kind": new.kind, "mode": new.mode, "groups": groups})),
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        self.ge(&new.name).await
    }

    /// Replaces a GE's memberships. Every group it leaves is rotated at once (the old key
    /// stops being accepted), so it loses access within one push.
    pub async fn set_groups(&self, actor: &str, name: &str, groups: &[u16], now: u64) -> Result<Ge> {
        let before = self.ge(name).await?;
        let groups = self.check_groups(groups).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM memberships WHERE ge = $1").bind(name).execute(&mut *tx).await?;
        Self::insert_memberships(&mut tx, name, &groups).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "ge.groups",
            &format!("ge/{name}"),
            Some(json!({"groups": before.groups})),
            Some(json!({"groups": groups})),
        )
        .await?;
        if before.status == GeStatus::Active {
            for left in before.groups.iter().filter(|g| !groups.contains(g)) {
                self.rotate_in(&mut tx, actor, *left, "leave", true, now).await?;
            }
        }
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        self.ge(name).await
    }

    /// Revokes a GE: it gets no more keys, its client certificate is refused for anything but
    /// learning that it is revoked, and every group it held is rotated at once.
    pub async fn revoke(&self, actor: &str, name: &str, now: u64) -> Result<Ge> {
        let before = self.ge(name).await?;
        if before.status == GeStatus::Revoked {
            return Ok(before);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE ges SET status = 'revoked' WHERE name = $1").bind(name).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM enrollment_tokens WHERE ge = $1").bind(name).execute(&mut *tx).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "ge.revoke",
            &format!("ge/{name}"),
            Some(json!({"status": before.status.as_str()})),
            Some(json!({"status": "revoked"})),
        )
        .await?;
        if before.status == GeStatus::Active {
            for g in &before.groups {
                self.rotate_in(&mut tx, actor, *g, "revoke", true, now).await?;
            }
        }
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        self.ge(name).await
    }

    pub async fn delete_ge(&self, actor: &str, name: &str, now: u64) -> Result<()> {
        let before = self.ge(name).await?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM ges WHERE name = $1").bind(name).execute(&mut *tx).await?;
        if before.status == GeStatus::Active {
            for g in &before.groups {
                self.rotate_in(&mut tx, actor, *g, "revoke", true, now).await?;
            }
        }
        Self::audit(
            &mut tx,
            now,
            actor,
            "ge.delete",
            &format!("ge/{name}"),
            Some(json!({"kind": before.kind, "mode": before.mode, "groups": before.groups, "status": before.status.as_str()})),
            None,
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await
    }

    // ----- enrollment -----------------------------------------------------------------------

    pub async fn enrollment_token(
        &self,
        actor: &str,
        name: &str,
        valid_seconds: Option<u64>,
        now: u64,
    ) -> Result<EnrollmentToken> {
        let ge = self.ge(name).await?;
        if ge.status == GeStatus::Revoked {
            return Err(GmsError::Conflict(format!("GE {name:?} is revoked; delete it and define it again")));
        }
        let valid = valid_seconds.unwrap_or(86_400);
        if valid == 0 || valid > 30 * 86_400 {
            return Err(GmsError::BadRequest("valid_seconds must be 1 to 2,592,000 (30 days)".into()));
        }
        let token = new_token("gse_")?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO enrollment_tokens (token_hash, ge, expires) VALUES ($1, $2, $3)")
            .bind(sha256_hex(&token))
            .bind(name)
            .bind(i(now + valid))
            .execute(&mut *tx)
            .await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "ge.token",
            &format!("ge/{name}"),
            None,
            Some(json!({"expires": now + valid})),
        )
        .await?;
        self.commit(tx).await?;
        Ok(EnrollmentToken { ge: name.to_owned(), token, expires: now + valid })
    }

    /// A GE enrolls: the one-time token and a proof of possession of its Ed25519 key give it
    /// an X.509 client certificate for that key.
    pub async fn enroll(&self, req: &EnrollRequest, now: u64) -> Result<EnrollResponse> {
        check_ge_name(&req.name)?;
        let pk = unhex(&req.public_key, 32)
            .ok_or_else(|| GmsError::BadRequest("public_key must be 64 hex digits (an Ed25519 key)".into()))?;
        let proof = unhex(&req.proof, 64)
            .ok_or_else(|| GmsError::BadRequest("proof must be 128 hex digits (an Ed25519 signature)".into()))?;
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&pk);
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&proof);
        let refused = || {
            GmsError::Unauthorized(format!(
                "enrollment token for {:?} is unknown, used or expired; ask the administrator for a new one",
                req.name
            ))
        };
        // An unknown name is refused like a bad token: callers here are not authenticated yet.
        let before =
            self.ge(&req.name).await.map_err(|e| if matches!(e, GmsError::NotFound(_)) { refused() } else { e })?;
        let mut tx = self.pool.begin().await?;
        let used = sqlx::query("UPDATE enrollment_tokens SET used = $1 WHERE token_hash = $2 AND ge = $3 AND used IS NULL AND expires > $1")
            .bind(i(now))
            .bind(sha256_hex(&req.token))
            .bind(&req.name)
            .execute(&mut *tx)
            .await?;
        if used.rows_affected() != 1 {
            return Err(refused());
        }
        if !verify_signature(&public_key, &[&enroll_message(&req.name, &req.token, &public_key)], &sig) {
            return Err(GmsError::BadRequest("the proof of possession does not verify for this public key".into()));
        }
        let (pem, der) = self.tls.issue_client(&req.name, &public_key, now)?;
        sqlx::query("UPDATE ges SET status = 'active', public_key = $1, client_cert_hash = $2, enrolled = $3 WHERE name = $4 AND status <> 'revoked'")
            .bind(hex(&public_key))
            .bind(cert_hash(&der))
            .bind(i(now))
            .bind(&req.name)
            .execute(&mut *tx)
            .await?;
        Self::audit(
            &mut tx,
            now,
            &format!("ge:{}", req.name),
            "ge.enroll",
            &format!("ge/{}", req.name),
            Some(json!({"status": before.status.as_str(), "public_key": before.public_key})),
            Some(json!({"status": "active", "public_key": hex(&public_key)})),
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        Ok(EnrollResponse { client_certificate: pem })
    }

    /// The GE a client certificate belongs to (the certificate already chained to the CA).
    pub async fn ge_by_client_cert(&self, der: &[u8]) -> Result<String> {
        let r = sqlx::query("SELECT name FROM ges WHERE client_cert_hash = $1")
            .bind(cert_hash(der))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| {
                GmsError::Unauthorized(
                    "this client certificate belongs to no enrolled GE (re-enrolled or deleted)".into(),
                )
            })?;
        Ok(r.try_get("name")?)
    }

    /// What a GE gets: its information, a fresh DPRP certificate and the keys of its groups
    /// that are current or in their grace period (none once revoked).
    pub async fn ge_state(&self, name: &str, now: u64) -> Result<GeState> {
        let revision = self.revision().await?;
        let ge = self.ge(name).await?;
        let kind = parse_kind(&ge.kind)?;
        let mode = parse_mode(&ge.mode)?;
        let pk = ge
            .public_key
            .as_deref()
            .and_then(|p| unhex(p, 32))
            .ok_or_else(|| GmsError::Forbidden(format!("GE {name:?} is not enrolled")))?;
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&pk);
        let active = ge.status == GeStatus::Active;
        let cert_groups: Vec<GroupId> =
            if active { ge.groups.iter().map(|g| GroupId(*g)).collect() } else { Vec::new() };
        let cert = self
            .ca
            .issue(kind, mode, name, &cert_groups, public_key, now + self.config.certificate_validity_seconds)
            .map_err(|e| GmsError::Internal(e.to_string()))?;
        let mut cert_bytes = Vec::new();
        cert.emit(&mut cert_bytes);
        let mut keys = Vec::new();
        if active {
            for g in &ge.groups {
                let rows = sqlx::query(
                    "SELECT version, sealed, expires FROM group_keys WHERE group_id = $1 AND (expires IS NULL OR expires > $2) ORDER BY version",
                )
                .bind(i64::from(*g))
                .bind(i(now))
                .fetch_all(&self.pool)
                .await?;
                for r in rows {
                    let version = r.try_get::<i64, _>("version")? as u32;
                    let sealed: Vec<u8> = r.try_get("sealed")?;
                    let material = self.master.open(&key_aad(*g, version), &sealed)?;
                    keys.push(GroupKeyMaterial {
                        group: *g,
                        version,
                        key: hex(&material),
                        expires: r.try_get::<Option<i64>, _>("expires")?.map(u),
                    });
                }
            }
        }
        Ok(GeState {
            revision,
            name: ge.name,
            kind: ge.kind,
            mode: ge.mode,
            status: ge.status,
            groups: if active { ge.groups } else { Vec::new() },
            certificate: hex(&cert_bytes),
            gms_public_key: hex(&self.gms_public_key()),
            keys,
        })
    }

    // ----- administrators -------------------------------------------------------------------

    pub async fn admin_count(&self) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM admins").fetch_one(&self.pool).await?.try_get(0)?)
    }

    pub async fn create_admin(&self, actor: &str, name: &str, password: &str, now: u64) -> Result<()> {
        check_ge_name(name)
            .map_err(|_| GmsError::BadRequest("administrator names use A-Z a-z 0-9 . _ - (1 to 63)".into()))?;
        if password.chars().count() < 12 {
            return Err(GmsError::BadRequest("administrator passwords must have at least 12 characters".into()));
        }
        let salt = SaltString::encode_b64(&random_bytes::<16>()?[..]).map_err(|e| GmsError::Internal(e.to_string()))?;
        let hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| GmsError::Internal(format!("argon2: {e}")))?
            .to_string();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO admins (name, password_hash, created) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(hash)
            .bind(i(now))
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict_on_unique(e, || format!("an administrator named {name:?} exists already")))?;
        Self::audit(&mut tx, now, actor, "admin.create", &format!("admin/{name}"), None, Some(json!({"name": name})))
            .await?;
        self.commit(tx).await
    }

    /// The administrators' names.
    pub async fn admins(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM admins ORDER BY name").fetch_all(&self.pool).await?;
        rows.iter().map(|r| r.try_get(0).map_err(Into::into)).collect()
    }

    /// Checks a name and password (argon2). After [`LoginFailures::FREE_TRIES`] consecutive
    /// failures for a name, refuses it for [`LoginFailures::LOCK_SECONDS`] seconds (429)
    /// without checking the password.
    pub async fn verify_password(&self, name: &str, password: &str, now: u64) -> Result<()> {
        let failures = || self.login_failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(left) = failures().locked_for(name, now) {
            return Err(GmsError::TooManyRequests(format!(
                "too many failed logins for this administrator name; try again in {left} s"
            )));
        }
        let checked = self.check_password(name, password).await;
        match &checked {
            Ok(()) => failures().succeeded(name),
            Err(GmsError::Unauthorized(_)) => {
                failures().failed(name, now);
                tracing::warn!(admin = ?name, "failed administrator password check");
            }
            Err(_) => {}
        }
        checked
    }

    async fn check_password(&self, name: &str, password: &str) -> Result<()> {
        let wrong = || GmsError::Unauthorized("wrong administrator name or password".into());
        let row = sqlx::query("SELECT password_hash FROM admins WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Err(wrong());
        };
        let stored: String = row.try_get(0)?;
        let password = Zeroizing::new(password.to_owned());
        // Argon2 takes tens of milliseconds: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || match PasswordHash::new(&stored) {
            Ok(p) => Ok(Argon2::default().verify_password(password.as_bytes(), &p).is_ok()),
            Err(e) => Err(GmsError::Internal(format!("stored password hash: {e}"))),
        })
        .await
        .map_err(|e| GmsError::Internal(e.to_string()))??;
        if ok {
            Ok(())
        } else {
            Err(wrong())
        }
    }

    pub async fn login(&self, name: &str, password: &str, now: u64) -> Result<AdminToken> {
        self.verify_password(name, password, now).await?;
        let token = new_token("gsa_")?;
        let expires = now + self.config.admin_token_seconds;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO admin_tokens (token_hash, admin, created, expires) VALUES ($1, $2, $3, $4)")
            .bind(sha256_hex(&token))
            .bind(name)
            .bind(i(now))
            .bind(i(expires))
            .execute(&mut *tx)
            .await?;
        Self::audit(
            &mut tx,
            now,
            name,
            "admin.login",
            &format!("admin/{name}"),
            None,
            Some(json!({"expires": expires})),
        )
        .await?;
        self.commit(tx).await?;
        Ok(AdminToken { token, expires })
    }

    /// The administrator an API token belongs to.
    pub async fn admin_for_token(&self, token: &str, now: u64) -> Result<String> {
        let r = sqlx::query("SELECT admin FROM admin_tokens WHERE token_hash = $1 AND expires > $2")
            .bind(sha256_hex(token))
            .bind(i(now))
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| GmsError::Unauthorized("unknown or expired token; log in again".into()))?;
        Ok(r.try_get(0)?)
    }

    // ----- audit, NAT ACEs, matrix ----------------------------------------------------------

    pub async fn audit_log(&self, limit: u32) -> Result<Vec<AuditEntry>> {
        let rows =
            sqlx::query("SELECT id, at, actor, action, object, before, after FROM audit ORDER BY id DESC LIMIT $1")
                .bind(i64::from(limit.clamp(1, 10_000)))
                .fetch_all(&self.pool)
                .await?;
        let parse = |s: Option<String>| s.and_then(|s| serde_json::from_str(&s).ok());
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: u(r.try_get("at")?),
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    object: r.try_get("object")?,
                    before: parse(r.try_get("before")?),
                    after: parse(r.try_get("after")?),
                })
            })
            .collect()
    }

    pub async fn nat_aces(&self) -> Result<Vec<NatAce>> {
        let rows = sqlx::query("SELECT id, gnat, group_id, inside_address, protocol, port FROM nat_aces ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(NatAce {
                    id: r.try_get("id")?,
                    gnat: r.try_get("gnat")?,
                    group: r.try_get::<i64, _>("group_id")? as u16,
                    inside_address: r.try_get("inside_address")?,
                    protocol: r.try_get("protocol")?,
                    port: r.try_get::<i64, _>("port")? as u16,
                })
            })
            .collect()
    }

    pub async fn create_nat_ace(&self, actor: &str, new: &NewNatAce, now: u64) -> Result<NatAce> {
        let gnat = self.ge(&new.gnat).await.map_err(|_| GmsError::BadRequest(format!("no GE named {:?}", new.gnat)))?;
        if gnat.kind != "gnat" {
            return Err(GmsError::BadRequest(format!("{:?} is a {}, not a gnat", new.gnat, gnat.kind)));
        }
        self.check_groups(&[new.group]).await?;
        let addr: std::net::IpAddr = new.inside_address.parse().map_err(|_| {
            GmsError::BadRequest(format!("inside_address {:?} is not an IP address", new.inside_address))
        })?;
        if !matches!(new.protocol.as_str(), "tcp" | "udp") {
            return Err(GmsError::BadRequest("protocol must be tcp or udp".into()));
        }
        if new.port == 0 {
            return Err(GmsError::BadRequest("port must be 1 to 65535".into()));
        }
        let mut tx = self.pool.begin().await?;
        let id: i64 = sqlx::query(
            "INSERT INTO nat_aces (gnat, group_id, inside_address, protocol, port) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        )
        .bind(&new.gnat)
        .bind(i64::from(new.group))
        .bind(addr.to_string())
        .bind(&new.protocol)
        .bind(i64::from(new.port))
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let ace = NatAce {
            id,
            gnat: new.gnat.clone(),
            group: new.group,
            inside_address: addr.to_string(),
            protocol: new.protocol.clone(),
            port: new.port,
        };
        Self::audit(
            &mut tx,
            now,
            actor,
            "nat_ace.create",
            &format!("nat-ace/{id}"),
            None,
            serde_json::to_value(&ace).ok(),
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await?;
        Ok(ace)
    }

    pub async fn delete_nat_ace(&self, actor: &str, id: i64, now: u64) -> Result<()> {
        let before = self
            .nat_aces()
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| GmsError::NotFound(format!("no NAT ACE {id}")))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM nat_aces WHERE id = $1").bind(id).execute(&mut *tx).await?;
        Self::audit(
            &mut tx,
            now,
            actor,
            "nat_ace.delete",
            &format!("nat-ace/{id}"),
            serde_json::to_value(&before).ok(),
            None,
        )
        .await?;
        Self::bump(&mut tx).await?;
        self.commit(tx).await
    }

    /// Who can reach whom: for every ordered pair of GEs that are not revoked, the policy
    /// function's outcome for a flow between them with no other GE on the path.
    pub async fn matrix(&self) -> Result<Vec<MatrixCell>> {
        let ges: Vec<Ge> = self.ges().await?.into_iter().filter(|g| g.status != GeStatus::Revoked).collect();
        let path_ge = |g: &Ge, side: Side| -> Result<PathGe> {
            Ok(PathGe {
                name: g.name.clone(),
                mode: parse_mode(&g.mode)?,
                side,
                groups: g.groups.iter().map(|x| GroupId(*x)).collect(),
            })
        };
        let mut out = Vec::new();
        for a in &ges {
            for b in &ges {
                if a.name == b.name {
                    continue;
                }
                let d = decide(&[path_ge(a, Side::Source)?, path_ge(b, Side::Destination)?]);
                let (outcome, group) = match d.outcome {
                    Outcome::Protected { group, .. } => ("protected", Some(group.0)),
                    Outcome::Plaintext => ("plaintext", None),
                    Outcome::Discarded { .. } => ("discarded", None),
                };
                out.push(MatrixCell { from: a.name.clone(), to: b.name.clone(), outcome: outcome.into(), group });
            }
        }
        Ok(out)
    }
}

/// Moves the published revision forward (never back).
fn advance(tx: &tokio::sync::watch::Sender<i64>, r: i64) {
    tx.send_if_modified(|v| {
        let newer = r > *v;
        if newer {
            *v = r;
        }
        newer
    });
}

/// A database URL with any password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

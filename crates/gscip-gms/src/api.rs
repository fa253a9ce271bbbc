//! The HTTP API (axum): `/api/v1/…` for administrators (token or password), `/ge/v1/…` for GEs
//! (enrollment with a one-time token, then mutual TLS), `/openapi.json`, `/healthz`, and the
//! web UI under `/ui/` (see [`crate::ui`]). Every error is a JSON body `{"error", "fault"}`;
//! malformed requests get a 4xx that says what is wrong.

use crate::error::{GmsError, Result};
use crate::service::Gms;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use gscip_gms_client::api::*;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The shared application state.
#[derive(Debug)]
pub struct App {
    pub gms: Gms,
}

pub type AppState = Arc<App>;

/// The wall clock, read only here at the edge: the service takes the time as an argument.
pub fn now() -> u64 {
    gscip_gms_client::ge::unix_now()
}

/// The TLS client certificate of this connection, if the peer gave one (it chained to the CA).
#[derive(Debug, Clone, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// JSON body whose rejections become clear 400s.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = GmsError;
    async fn from_request(req: Request, state: &S) -> Result<Self> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(GmsError::BadRequest(json_rejection(e))),
        }
    }
}

fn json_rejection(e: JsonRejection) -> String {
    match e {
        JsonRejection::MissingJsonContentType(_) => "expected a JSON body with Content-Type: application/json".into(),
        other => format!("request body: {}", other.body_text()),
    }
}

/// Path parameters whose rejections become clear 400s.
#[derive(Debug)]
pub struct PathArg<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathArg<T> {
    type Rejection = GmsError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathArg(v))
            .map_err(|e: PathRejection| GmsError::BadRequest(format!("path: {}", e.body_text())))
    }
}

/// Query parameters whose rejections become clear 400s.
#[derive(Debug)]
pub struct QueryArg<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for QueryArg<T> {
    type Rejection = GmsError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| QueryArg(v))
            .map_err(|e: QueryRejection| GmsError::BadRequest(format!("query: {}", e.body_text())))
    }
}

/// An authenticated administrator: `Authorization: Bearer TOKEN`, `Authorization: Basic …`
/// (name and password), or the web UI's session cookie.
#[derive(Debug, Clone)]
pub struct Admin(pub String);

pub const SESSION_COOKIE: &str = "gms_session";

/// The session cookie's token, if any.
pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(
        |c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == SESSION_COOKIE).then(|| v.to_owned())
        },
    )
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = GmsError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let t = now();
        if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
            let h = h.to_str().map_err(|_| GmsError::Unauthorized("Authorization header is not ASCII".into()))?;
            if let Some(token) = h.strip_prefix("Bearer ") {
                return Ok(Admin(app.gms.admin_for_token(token.trim(), t).await?));
            }
            if let Some(b) = h.strip_prefix("Basic ") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| {
                        GmsError::Unauthorized("Basic credentials are not base64 of name:password".into())
                    })?;
                let decoded = zeroize::Zeroizing::new(decoded);
                let (name, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| GmsError::Unauthorized("Basic credentials lack a ':'".into()))?;
                app.gms.verify_password(name, password, t).await?;
                return Ok(Admin(name.to_owned()));
            }
            return Err(GmsError::Unauthorized("Authorization must be Bearer TOKEN or Basic".into()));
        }
        if let Some(token) = session_cookie(parts) {
            return Ok(Admin(app.gms.admin_for_token(&token, t).await?));
        }
        Err(GmsError::Unauthorized("log in: POST /api/v1/login, then send Authorization: Bearer TOKEN".into()))
    }
}

/// An enrolled GE, identified by its mutual-TLS client certificate.
#[derive(Debug, Clone)]
pub struct GeIdentity(pub String);

impl FromRequestParts<AppState> for GeIdentity {
    type Rejection = GmsError;
    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self> {
        let cert = parts.extensions.get::<PeerCertificate>().and_then(|p| p.0.clone()).ok_or_else(|| {
            GmsError::Unauthorized("GE calls need mutual TLS with the client certificate from enrollment".into())
        })?;
        Ok(GeIdentity(app.gms.ge_by_client_cert(&cert).await?))
    }
}

async fn login(State(app): State<AppState>, Body(l): Body<Login>) -> Result<Json<AdminToken>> {
    Ok(Json(app.gms.login(&l.name, &l.password, now()).await?))
}

async fn create_admin(State(app): State<AppState>, Admin(a): Admin, Body(l): Body<Login>) -> Result<StatusCode> {
    app.gms.create_admin(&a, &l.name, &l.password, now()).await?;
    Ok(StatusCode::CREATED)
}

async fn list_admins(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<String>>> {
    Ok(Json(app.gms.admins().await?))
}

async fn list_groups(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<Group>>> {
    Ok(Json(app.gms.groups().await?))
}

async fn create_group(State(app): State<AppState>, Admin(a): Admin, Body(g): Body<NewGroup>) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.gms.create_group(&a, &g, now()).await?)).into_response())
}

async fn get_group(State(app): State<AppState>, _: Admin, PathArg(id): PathArg<u16>) -> Result<Json<Group>> {
    Ok(Json(app.gms.group(id).await?))
}

async fn delete_group(State(app): State<AppState>, Admin(a): Admin, PathArg(id): PathArg<u16>) -> Result<StatusCode> {
    app.gms.delete_group(&a, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn rotate_group(
    State(app): State<AppState>,
    Admin(a): Admin,
    PathArg(id): PathArg<u16>,
) -> Result<Json<KeyVersion>> {
    Ok(Json(app.gms.rotate(&a, id, now()).await?))
}

async fn list_ges(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<Ge>>> {
    Ok(Json(app.gms.ges().await?))
}

async fn create_ge(State(app): State<AppState>, Admin(a): Admin, Body(g): Body<NewGe>) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.gms.create_ge(&a, &g, now()).await?)).into_response())
}

async fn get_ge(State(app): State<AppState>, _: Admin, PathArg(name): PathArg<String>) -> Result<Json<Ge>> {
    Ok(Json(app.gms.ge(&name).await?))
}

async fn delete_ge(State(app): State<AppState>, Admin(a): Admin, PathArg(name): PathArg<String>) -> Result<StatusCode> {
    app.gms.delete_ge(&a, &name, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_groups(
    State(app): State<AppState>,
    Admin(a): Admin,
    PathArg(name): PathArg<String>,
    Body(m): Body<Memberships>,
) -> Result<Json<Ge>> {
    Ok(Json(app.gms.set_groups(&a, &name, &m.groups, now()).await?))
}

async fn token(
    State(app): State<AppState>,
    Admin(a): Admin,
    PathArg(name): PathArg<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    // The body is optional: empty means the defaults.
    let valid = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<TokenRequest>(&body)
            .map_err(|e| GmsError::BadRequest(format!("request body: {e}")))?
            .valid_seconds
    };
    Ok((StatusCode::CREATED, Json(app.gms.enrollment_token(&a, &name, valid, now()).await?)).into_response())
}

async fn revoke(State(app): State<AppState>, Admin(a): Admin, PathArg(name): PathArg<String>) -> Result<Json<Ge>> {
    Ok(Json(app.gms.revoke(&a, &name, now()).await?))
}

async fn list_keys(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<KeyVersion>>> {
    Ok(Json(app.gms.keys().await?))
}

async fn rotation(State(app): State<AppState>, _: Admin) -> Result<Json<RotationInfo>> {
    Ok(Json(app.gms.rotation_info(now())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<u32>,
}

async fn audit(
    State(app): State<AppState>,
    _: Admin,
    QueryArg(q): QueryArg<AuditQuery>,
) -> Result<Json<Vec<AuditEntry>>> {
    Ok(Json(app.gms.audit_log(q.limit.unwrap_or(100)).await?))
}

async fn matrix(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<MatrixCell>>> {
    Ok(Json(app.gms.matrix().await?))
}

async fn list_aces(State(app): State<AppState>, _: Admin) -> Result<Json<Vec<NatAce>>> {
    Ok(Json(app.gms.nat_aces().await?))
}

async fn create_ace(State(app): State<AppState>, Admin(a): Admin, Body(n): Body<NewNatAce>) -> Result<Response> {
    Ok((StatusCode::CREATED, Json(app.gms.create_nat_ace(&a, &n, now()).await?)).into_response())
}

async fn delete_ace(State(app): State<AppState>, Admin(a): Admin, PathArg(id): PathArg<i64>) -> Result<StatusCode> {
    app.gms.delete_nat_ace(&a, id, now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn enroll(State(app): State<AppState>, Body(req): Body<EnrollRequest>) -> Result<Json<EnrollResponse>> {
    Ok(Json(app.gms.enroll(&req, now()).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateQuery {
    after: Option<i64>,
    wait: Option<u64>,
}

/// The GE's state; with `after`, a long-poll: answers when the revision passes `after`, or 204
/// after `wait` seconds (at most 60) without a change.
async fn ge_state(
    State(app): State<AppState>,
    GeIdentity(name): GeIdentity,
    QueryArg(q): QueryArg<StateQuery>,
) -> Result<Response> {
    if let Some(after) = q.after {
        let wait = q.wait.unwrap_or(30);
        if wait > gscip_gms_client::client::MAX_WAIT_SECONDS {
            return Err(GmsError::BadRequest("wait must be at most 60 seconds".into()));
        }
        let rev = app.gms.wait_for_change(after, Duration::from_secs(wait)).await?;
        if rev <= after {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    Ok(Json(app.gms.ge_state(&name, now()).await?).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], include_str!("openapi.json")).into_response()
}

async fn healthz(State(app): State<AppState>) -> Result<&'static str> {
    app.gms.revision().await?;
    Ok("ok\n")
}

async fn not_found() -> GmsError {
    GmsError::NotFound("no such endpoint; see /openapi.json".into())
}

/// The whole router.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/api/v1/login", post(login))
        .route("/api/v1/admins", get(list_admins).post(create_admin))
        .route("/api/v1/groups", get(list_groups).post(create_group))
        .route("/api/v1/groups/{id}", get(get_group).delete(delete_group))
        .route("/api/v1/groups/{id}/rotate", post(rotate_group))
        .route("/api/v1/ges", get(list_ges).post(create_ge))
        .route("/api/v1/ges/{name}", get(get_ge).delete(delete_ge))
        .route("/api/v1/ges/{name}/groups", put(set_groups))
        .route("/api/v1/ges/{name}/enrollment-token", post(token))
        .route("/api/v1/ges/{name}/revoke", post(revoke))
        .route("/api/v1/keys", get(list_keys))
        .route("/api/v1/rotation", get(rotation))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/matrix", get(matrix))
        .route("/api/v1/nat-aces", get(list_aces).post(create_ace))
        .route("/api/v1/nat-aces/{id}", delete(delete_ace))
        .route("/ge/v1/enroll", post(enroll))
        .route("/ge/v1/state", get(ge_state))
        .merge(crate::ui::routes())
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(app)
}

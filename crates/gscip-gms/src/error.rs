//! gmsd's errors, by whose fault they are. Every one maps to an HTTP status and a JSON body
//! (`{"error", "fault"}`); client mistakes are 4xx with a message saying what to fix.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gscip_gms_client::api::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum GmsError {
    /// The request is malformed or asks for something impossible (the client's fault).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but not allowed (a revoked GE, a GE calling the admin API).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (a name taken, a group in use).
    #[error("{0}")]
    Conflict(String),
    /// Too many failed password checks for an administrator name: wait and retry.
    #[error("{0}")]
    TooManyRequests(String),
    /// Local configuration (master key, TLS names, database URL) is unusable.
    #[error("configuration error: {0}")]
    Configuration(String),
    /// The database failed (the server's fault).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Something inside the server failed (stored data that does not decrypt, a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = GmsError> = std::result::Result<T, E>;

impl GmsError {
    pub fn status(&self) -> StatusCode {
        match self {
            GmsError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GmsError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GmsError::Forbidden(_) => StatusCode::FORBIDDEN,
            GmsError::NotFound(_) => StatusCode::NOT_FOUND,
            GmsError::Conflict(_) => StatusCode::CONFLICT,
            GmsError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            GmsError::Configuration(_) | GmsError::Database(_) | GmsError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
    pub fn fault(&self) -> &'static str {
        match self {
            GmsError::BadRequest(_) => "client",
            GmsError::Unauthorized(_) | GmsError::Forbidden(_) | GmsError::TooManyRequests(_) => "auth",
            GmsError::NotFound(_) => "not_found",
            GmsError::Conflict(_) => "conflict",
            GmsError::Configuration(_) | GmsError::Database(_) | GmsError::Internal(_) => "server",
        }
    }
}

impl IntoResponse for GmsError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        // Server-side details stay in the log; the client gets a generic message.
        let error = if status.is_server_error() {
            "internal server error (see the GMS log)".to_owned()
        } else {
            self.to_string()
        };
        (status, axum::Json(ErrorBody { error, fault: self.fault().to_owned() })).into_response()
    }
}

/// Unique-constraint violations become conflicts.
pub fn conflict_on_unique(e: sqlx::Error, what: impl FnOnce() -> String) -> GmsError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => GmsError::Conflict(what()),
        _ => GmsError::Database(e),
    }
}

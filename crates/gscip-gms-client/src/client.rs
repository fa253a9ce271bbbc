//! A blocking HTTPS client for the GMS API: [`AdminClient`] for administrators (`gscip admin`,
//! the lab) and [`GeClient`] for GEs (enrollment, then the state over mutual TLS).

use crate::api::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to the GMS, and whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The GMS answered with an error (4xx: our request; 5xx: the server).
    #[error("GMS refused ({status}, {fault}): {message}")]
    Refused { status: u16, fault: String, message: String },
    /// The GMS could not be reached (network, TLS).
    #[error("GMS unreachable: {0}")]
    Unreachable(String),
    /// The GMS answered something this client does not understand.
    #[error("GMS sent an unusable answer: {0}")]
    BadResponse(String),
    /// Local configuration (CA file, key, URL) is unusable.
    #[error("configuration error: {0}")]
    Configuration(String),
}

impl ClientError {
    /// The HTTP status for refusals.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// TLS client configuration trusting only the GMS CA in `ca_pem`, optionally presenting a
/// client certificate for the Ed25519 key given as PKCS#8.
pub fn tls_config(ca_pem: &str, client: Option<(&str, &[u8])>) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| ClientError::Configuration(format!("GMS CA: {e}")))?;
        roots.add(cert).map_err(|e| ClientError::Configuration(format!("GMS CA: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(ClientError::Configuration("GMS CA: no certificate in the PEM file".into()));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ClientError::Configuration(e.to_string()))?
        .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert_pem, pkcs8)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| ClientError::Configuration(format!("client certificate: {e}")))?;
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.to_vec()));
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Configuration(format!("client certificate: {e}")))?
        }
    };
    Ok(Arc::new(config))
}

/// The HTTP part both clients share.
#[derive(Debug, Clone)]
struct Http {
    agent: ureq::Agent,
    base: String,
    authorization: Option<String>,
}

impl Http {
    fn new(base_url: &str, tls: Arc<rustls::ClientConfig>, read_timeout: Duration) -> Result<Self, ClientError> {
        if !base_url.starts_with("https://") {
            return Err(ClientError::Configuration(format!("GMS URL {base_url:?} must start with https://")));
        }
        let agent = ureq::AgentBuilder::new()
            .tls_config(tls)
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(read_timeout)
            .timeout_write(Duration::from_secs(10))
            .build();
        Ok(Http { agent, base: base_url.trim_end_matches('/').to_owned(), authorization: None })
    }

    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&dyn ErasedBody>,
    ) -> Result<T, ClientError> {
        let resp = self.send(method, path, body)?;
        resp.into_json::<T>().map_err(|e| ClientError::BadResponse(format!("{method} {path}: {e}")))
    }

    fn call_empty(&self, method: &str, path: &str, body: Option<&dyn ErasedBody>) -> Result<(), ClientError> {
        self.send(method, path, body).map(|_| ())
    }

    fn send(&self, method: &str, path: &str, body: Option<&dyn ErasedBody>) -> Result<ureq::Response, ClientError> {
        let mut req = self.agent.request(method, &format!("{}{}", self.base, path));
        if let Some(a) = &self.authorization {
            req = req.set("Authorization", a);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(&b.json()),
            None => req.call(),
        };
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(status, resp)) => {
                let text = resp.into_string().unwrap_or_default();
                let (fault, message) = match serde_json::from_str::<ErrorBody>(&text) {
                    Ok(b) => (b.fault, b.error),
                    Err(_) => ("unknown".to_owned(), text),
                };
                Err(ClientError::Refused { status, fault, message })
            }
            Err(ureq::Error::Transport(t)) => Err(ClientError::Unreachable(t.to_string())),
        }
    }
}

/// A request body, type-erased so `send` is not generic.
trait ErasedBody {
    fn json(&self) -> String;
}

impl<T: Serialize> ErasedBody for T {
    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Percent-encodes a path segment (names are restricted, but be safe).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The administrator's client.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: Http,
}

impl AdminClient {
    /// A client authenticating with an API token.
    pub fn with_token(base_url: &str, ca_pem: &str, token: &str) -> Result<Self, ClientError> {
        let mut http = Http::new(base_url, tls_config(ca_pem, None)?, Duration::from_secs(30))?;
        http.authorization = Some(format!("Bearer {token}"));
        Ok(AdminClient { http })
    }

    /// Logs in with a name and password and returns a client holding the new token.
    pub fn login(base_url: &str, ca_pem: &str, name: &str, password: &str) -> Result<(Self, AdminToken), ClientError> {
        let http = Http::new(base_url, tls_config(ca_pem, None)?, Duration::from_secs(30))?;
        let token: AdminToken =
            http.call("POST", "/api/v1/login", Some(&Login { name: name.into(), password: password.into() }))?;
        let client = Self::with_token(base_url, ca_pem, &token.token)?;
        Ok((client, token))
    }

    pub fn admins(&self) -> Result<Vec<String>, ClientError> {
        self.http.call("GET", "/api/v1/admins", None)
    }
    /// Adds an administrator (password: at least 12 characters).
    pub fn create_admin(&self, name: &str, password: &str) -> Result<(), ClientError> {
        self.http.call_empty("POST", "/api/v1/admins", Some(&Login { name: name.into(), password: password.into() }))
    }
    pub fn groups(&self) -> Result<Vec<Group>, ClientError> {
        self.http.call("GET", "/api/v1/groups", None)
    }
    pub fn create_group(&self, id: Option<u16>, name: &str) -> Result<Group, ClientError> {
        self.http.call("POST", "/api/v1/groups", Some(&NewGroup { id, name: name.into() }))
    }
    pub fn delete_group(&self, id: u16) -> Result<(), ClientError> {
        self.http.call_empty("DELETE", &format!("/api/v1/groups/{id}"), None)
    }
    pub fn rotate_group(&self, id: u16) -> Result<KeyVersion, ClientError> {
        self.http.call("POST", &format!("/api/v1/groups/{id}/rotate"), None)
    }
    pub fn ges(&self) -> Result<Vec<Ge>, ClientError> {
        self.http.call("GET", "/api/v1/ges", None)
    }
    pub fn ge(&self, name: &str) -> Result<Ge, ClientError> {
        self.http.call("GET", &format!("/api/v1/ges/{}", seg(name)), None)
    }
    pub fn create_ge(&self, ge: &NewGe) -> Result<Ge, ClientError> {
        self.http.call("POST", "/api/v1/ges", Some(ge))
    }
    pub fn set_groups(&self, name: &str, groups: &[u16]) -> Result<Ge, ClientError> {
        self.http.call(
            "PUT",
            &format!("/api/v1/ges/{}/groups", seg(name)),
            Some(&Memberships { groups: groups.to_vec() }),
        )
    }
    pub fn enrollment_token(&self, name: &str, valid_seconds: Option<u64>) -> Result<EnrollmentToken, ClientError> {
        self.http.call(
            "POST",
            &format!("/api/v1/ges/{}/enrollment-token", seg(name)),
            Some(&TokenRequest { valid_seconds }),
        )
    }
    pub fn revoke(&self, name: &str) -> Result<Ge, ClientError> {
        self.http.call("POST", &format!("/api/v1/ges/{}/revoke", seg(name)), None)
    }
    pub fn delete_ge(&self, name: &str) -> Result<(), ClientError> {
        self.http.call_empty("DELETE", &format!("/api/v1/ges/{}", seg(name)), None)
    }
    pub fn keys(&self) -> Result<Vec<KeyVersion>, ClientError> {
        self.http.call("GET", "/api/v1/keys", None)
    }
    pub fn rotation(&self) -> Result<RotationInfo, ClientError> {
        self.http.call("GET", "/api/v1/rotation", None)
    }
    pub fn audit(&self, limit: u32) -> Result<Vec<AuditEntry>, ClientError> {
        self.http.call("GET", &format!("/api/v1/audit?limit={limit}"), None)
    }
    pub fn matrix(&self) -> Result<Vec<MatrixCell>, ClientError> {
        self.http.call("GET", "/api/v1/matrix", None)
    }
    pub fn nat_aces(&self) -> Result<Vec<NatAce>, ClientError> {
        self.http.call("GET", "/api/v1/nat-aces", None)
    }
    pub fn create_nat_ace(&self, ace: &NewNatAce) -> Result<NatAce, ClientError> {
        self.http.call("POST", "/api/v1/nat-aces", Some(ace))
    }
    pub fn delete_nat_ace(&self, id: i64) -> Result<(), ClientError> {
        self.http.call_empty("DELETE", &format!("/api/v1/nat-aces/{id}"), None)
    }
}

/// Enrolls a GE: proves possession of the Ed25519 key `seed` with the one-time `token` and
/// returns the client certificate (PEM) for mutual TLS.
pub fn enroll(base_url: &str, ca_pem: &str, name: &str, token: &str, seed: &[u8; 32]) -> Result<String, ClientError> {
    let kp = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| ClientError::Configuration("Ed25519 seed rejected".into()))?;
    use aws_lc_rs::signature::KeyPair;
    let public_key = kp.public_key().as_ref().to_vec();
    let proof = kp.sign(&enroll_message(name, token, &public_key));
    let http = Http::new(base_url, tls_config(ca_pem, None)?, Duration::from_secs(30))?;
    let req = EnrollRequest {
        name: name.into(),
        token: token.into(),
        public_key: hex(&public_key),
        proof: hex(proof.as_ref()),
    };
    let resp: EnrollResponse = http.call("POST", "/ge/v1/enroll", Some(&req))?;
    Ok(resp.client_certificate)
}

/// PKCS#8 (v2) of an Ed25519 seed, for TLS. Zeroized on drop.
pub fn pkcs8_of_seed(seed: &[u8; 32]) -> Result<zeroize::Zeroizing<Vec<u8>>, ClientError> {
    let kp = aws_lc_rs::signature::Ed25519KeyPair::from_seed_unchecked(seed)
        .map_err(|_| ClientError::Configuration("Ed25519 seed rejected".into()))?;
    let doc = kp.to_pkcs8().map_err(|_| ClientError::Configuration("Ed25519 key: PKCS#8 encoding failed".into()))?;
    Ok(zeroize::Zeroizing::new(doc.as_ref().to_vec()))
}

/// An enrolled GE's client: fetches and long-polls its state over mutual TLS.
#[derive(Debug, Clone)]
pub struct GeClient {
    http: Http,
}

/// The longest a long-poll waits on the server.
pub const MAX_WAIT_SECONDS: u64 = 60;

impl GeClient {
    pub fn new(base_url: &str, ca_pem: &str, client_cert_pem: &str, seed: &[u8; 32]) -> Result<Self, ClientError> {
        let pkcs8 = pkcs8_of_seed(seed)?;
        let tls = tls_config(ca_pem, Some((client_cert_pem, &pkcs8)))?;
        Ok(GeClient { http: Http::new(base_url, tls, Duration::from_secs(MAX_WAIT_SECONDS + 15))? })
    }

    /// The current state at once.
    pub fn state(&self) -> Result<GeState, ClientError> {
        self.http.call("GET", "/ge/v1/state", None)
    }

    /// Waits up to `wait_seconds` for a revision after `after`; `None` if nothing changed.
    pub fn wait_for_change(&self, after: i64, wait_seconds: u64) -> Result<Option<GeState>, ClientError> {
        let resp = self.http.send("GET", &format!("/ge/v1/state?after={after}&wait={wait_seconds}"), None)?;
        if resp.status() == 204 {
            return Ok(None);
        }
        resp.into_json::<GeState>().map(Some).map_err(|e| ClientError::BadResponse(format!("state: {e}")))
    }
}

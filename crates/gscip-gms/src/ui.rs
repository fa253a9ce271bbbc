//! The web admin UI: server-rendered HTML, no JavaScript. Log in with an administrator's name
//! and password (a session cookie, HttpOnly, Secure, SameSite=Strict, holding an API token);
//! pages for groups, GEs and memberships, key versions and the rotation schedule, the audit
//! log, and the reachability matrix computed with the core's policy function. Changes are made
//! with forms that post to the same origin. CSRF defence: the SameSite=Strict cookie, and every
//! post whose browser says it comes from another site (`Sec-Fetch-Site`, `Origin`) is refused.

use crate::api::{now, Admin, AppState, SESSION_COOKIE};
use crate::error::{GmsError, Result};
use axum::extract::{Form, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use gscip_gms_client::api::{GeStatus, NewGe, NewGroup};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn time(t: u64) -> String {
    // YYYY-MM-DD HH:MM UTC without a date library: civil-from-days (Howard Hinnant).
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02} UTC", secs / 3600, secs % 3600 / 60)
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}nav a{margin-right:1em}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.3em .6em;text-align:left}\
.protected{background:#d9f2d9}.plaintext{background:#fff3c4}.discarded{background:#f6d0d0}\
.error{color:#a00}form.inline{display:inline}";

fn page(title: &str, admin: Option<&str>, body: &str) -> Html<String> {
    let nav = match admin {
        Some(a) => format!(
            "<nav><a href=\"/ui/\">Groups and GEs</a><a href=\"/ui/keys\">Keys</a><a href=\"/ui/audit\">Audit log</a>\
             <a href=\"/ui/matrix\">Matrix</a><form class=\"inline\" method=\"post\" action=\"/ui/logout\">\
             <button>Log out {}</button></form></nav>",
            esc(a)
        ),
        None => String::new(),
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · GSCIP GMS</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>{nav}{body}</body></html>",
        t = esc(title)
    ))
}

/// Pages answer "log in" rather than a JSON error when the session is missing.
struct UiAdmin(String);

impl axum::extract::FromRequestParts<AppState> for UiAdmin {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &AppState) -> Result<Self, Response> {
        match Admin::from_request_parts(parts, app).await {
            Ok(Admin(a)) => Ok(UiAdmin(a)),
            Err(_) => Err(Redirect::to("/ui/login").into_response()),
        }
    }
}

fn error_page(admin: &str, e: GmsError) -> Response {
    let status = e.status();
    let msg =
        if status.is_server_error() { "internal server error (see the GMS log)".to_owned() } else { e.to_string() };
    (
        status,
        page("Error", Some(admin), &format!("<p class=\"error\">{}</p><p><a href=\"/ui/\">Back</a></p>", esc(&msg))),
    )
        .into_response()
}

async fn login_form() -> Html<String> {
    page(
        "Log in",
        None,
        "<form method=\"post\" action=\"/ui/login\"><p><label>Administrator <input name=\"name\" autocomplete=\"username\"></label></p>\
         <p><label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label></p>\
         <p><button>Log in</button></p></form>",
    )
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    password: String,
}

async fn login(State(app): State<AppState>, Form(f): Form<LoginForm>) -> Response {
    match app.gms.login(&f.name, &f.password, now()).await {
        Ok(t) => (
            [(
                header::SET_COOKIE,
                format!(
                    "{SESSION_COOKIE}={}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
                    t.token,
                    t.expires.saturating_sub(now())
                ),
            )],
            Redirect::to("/ui/"),
        )
            .into_response(),
        Err(e) => (
            e.status(),
            page(
                "Log in",
                None,
                &format!("<p class=\"error\">{}</p><p><a href=\"/ui/login\">Try again</a></p>", esc(&e.to_string())),
            ),
        )
            .into_response(),
    }
}

async fn logout() -> Response {
    (
        [(header::SET_COOKIE, format!("{SESSION_COOKIE}=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0"))],
        Redirect::to("/ui/login"),
    )
        .into_response()
}

async fn overview(State(app): State<AppState>, UiAdmin(a): UiAdmin) -> Response {
    match overview_body(&app).await {
        Ok(body) => page("Groups and GEs", Some(&a), &body).into_response(),
        Err(e) => error_page(&a, e),
    }
}

async fn overview_body(app: &AppState) -> Result<String> {
    let groups = app.gms.groups().await?;
    let ges = app.gms.ges().await?;
    let mut b = String::from("<h2>Groups</h2><table id=\"groups\"><tr><th>Id</th><th>Name</th><th>Key version</th><th>Members</th><th></th></tr>");
    for g in &groups {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" action=\"/ui/groups/{}/rotate\"><button>Rotate key</button></form></td></tr>",
            g.id,
            esc(&g.name),
            g.key_version,
            esc(&g.members.join(", ")),
            g.id
        );
    }
    b.push_str(
        "</table><form method=\"post\" action=\"/ui/groups\"><label>New group: id <input name=\"id\" size=\"5\"></label> \
         <label>name <input name=\"name\"></label> <button>Create group</button></form>",
    );
    b.push_str("<h2>GEs</h2><table id=\"ges\"><tr><th>Name</th><th>Kind</th><th>Mode</th><th>Status</th><th>Groups</th><th></th></tr>");
    for g in &ges {
        let groups: Vec<String> = g.groups.iter().map(u16::to_string).collect();
        let _ = write!(
            b,
            "<tr><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td><form class=\"inline\" method=\"post\" action=\"/ui/ges/{n}/groups\">\
             <input name=\"groups\" value=\"{}\" size=\"12\"><button>Set groups</button></form></td><td>{}</td></tr>",
            esc(&g.kind),
            esc(&g.mode),
            g.status.as_str(),
            esc(&groups.join(",")),
            if g.status == GeStatus::Revoked {
                String::new()
            } else {
                format!("<form class=\"inline\" method=\"post\" action=\"/ui/ges/{}/revoke\"><button>Revoke</button></form>", esc(&g.name))
            },
            n = esc(&g.name),
        );
    }
    b.push_str(
        "</table><form method=\"post\" action=\"/ui/ges\"><label>New GE: name <input name=\"name\"></label> \
         <label>kind <select name=\"kind\"><option>ges</option><option>gen</option><option>gea</option></select></label> \
         <label>mode <select name=\"mode\"><option>closed</option><option>open</option></select></label> \
         <label>groups <input name=\"groups\" size=\"12\" placeholder=\"1,2\"></label> <button>Define GE</button></form>",
    );
    Ok(b)
}

fn parse_group_list(s: &str) -> Result<Vec<u16>> {
    s.split([',', ' '])
        .filter(|x| !x.is_empty())
        .map(|x| x.parse().map_err(|_| GmsError::BadRequest(format!("group {x:?} is not a number 1 to 65535"))))
        .collect()
}

#[derive(Deserialize)]
struct GroupForm {
    id: String,
    name: String,
}

async fn create_group(State(app): State<AppState>, UiAdmin(a): UiAdmin, Form(f): Form<GroupForm>) -> Response {
    let id = match f.id.trim() {
        "" => Ok(None),
        s => {
            s.parse().map(Some).map_err(|_| GmsError::BadRequest(format!("group id {s:?} is not a number 1 to 65535")))
        }
    };
    let r = match id {
        Ok(id) => app.gms.create_group(&a, &NewGroup { id, name: f.name }, now()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    done(&a, r)
}

#[derive(Deserialize)]
struct GeForm {
    name: String,
    kind: String,
    mode: String,
    groups: String,
}

async fn create_ge(State(app): State<AppState>, UiAdmin(a): UiAdmin, Form(f): Form<GeForm>) -> Response {
    let r = match parse_group_list(&f.groups) {
        Ok(groups) => {
            app.gms.create_ge(&a, &NewGe { name: f.name, kind: f.kind, mode: f.mode, groups }, now()).await.map(|_| ())
        }
        Err(e) => Err(e),
    };
    done(&a, r)
}

#[derive(Deserialize)]
struct GroupsForm {
    groups: String,
}

async fn set_groups(
    State(app): State<AppState>,
    UiAdmin(a): UiAdmin,
    axum::extract::Path(name): axum::extract::Path<String>,
    Form(f): Form<GroupsForm>,
) -> Response {
    let r = match parse_group_list(&f.groups) {
        Ok(groups) => app.gms.set_groups(&a, &name, &groups, now()).await.map(|_| ()),
        Err(e) => Err(e),
    };
    done(&a, r)
}

async fn revoke(
    State(app): State<AppState>,
    UiAdmin(a): UiAdmin,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    done(&a, app.gms.revoke(&a, &name, now()).await.map(|_| ()))
}

async fn rotate(
    State(app): State<AppState>,
    UiAdmin(a): UiAdmin,
    axum::extract::Path(id): axum::extract::Path<u16>,
) -> Response {
    done(&a, app.gms.rotate(&a, id, now()).await.map(|_| ()))
}

fn done(admin: &str, r: Result<()>) -> Response {
    match r {
        Ok(()) => Redirect::to("/ui/").into_response(),
        Err(e) => error_page(admin, e),
    }
}

async fn keys(State(app): State<AppState>, UiAdmin(a): UiAdmin) -> Response {
    let r: Result<String> = async {
        let info = app.gms.rotation_info(now());
        let mut b = format!(
            "<p id=\"schedule\">Rotation daily at {} UTC; next at {}; a replaced key stays valid {} s (at once when a member leaves or is revoked).</p>\
             <table id=\"keys\"><tr><th>Group</th><th>Version</th><th>Created</th><th>Valid until</th><th>Reason</th></tr>",
            esc(&info.daily_at),
            time(info.next),
            info.grace_seconds
        );
        for k in app.gms.keys().await? {
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                k.group,
                k.version,
                time(k.created),
                k.expires.map(time).unwrap_or_else(|| "current".into()),
                esc(&k.reason)
            );
        }
        b.push_str("</table>");
        Ok(b)
    }
    .await;
    match r {
        Ok(b) => page("Group keys", Some(&a), &b).into_response(),
        Err(e) => error_page(&a, e),
    }
}

async fn audit(State(app): State<AppState>, UiAdmin(a): UiAdmin) -> Response {
    match app.gms.audit_log(500).await {
        Ok(entries) => {
            let mut b = String::from("<table id=\"audit\"><tr><th>When</th><th>Who</th><th>What</th><th>Object</th><th>Before</th><th>After</th></tr>");
            let show = |v: &Option<serde_json::Value>| v.as_ref().map(|v| esc(&v.to_string())).unwrap_or_default();
            for e in &entries {
                let _ = write!(
                    b,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    time(e.at),
                    esc(&e.actor),
                    esc(&e.action),
                    esc(&e.object),
                    show(&e.before),
                    show(&e.after)
                );
            }
            b.push_str("</table>");
            page("Audit log", Some(&a), &b).into_response()
        }
        Err(e) => error_page(&a, e),
    }
}

async fn matrix(State(app): State<AppState>, UiAdmin(a): UiAdmin) -> Response {
    match app.gms.matrix().await {
        Ok(cells) => {
            let mut names: Vec<&str> = cells.iter().flat_map(|c| [c.from.as_str(), c.to.as_str()]).collect();
            names.sort_unstable();
            names.dedup();
            let by: BTreeMap<(&str, &str), &gscip_gms_client::api::MatrixCell> =
                cells.iter().map(|c| ((c.from.as_str(), c.to.as_str()), c)).collect();
            let mut b = String::from(
                "<p>What a flow from the row's GE to the column's GE gets, by the policy function, for the network as defined \
                 (the two GEs as the ends of the flow, no other GE between them).</p><table id=\"matrix\"><tr><th>from \\ to</th>",
            );
            for n in &names {
                let _ = write!(b, "<th>{}</th>", esc(n));
            }
            b.push_str("</tr>");
            for f in &names {
                let _ = write!(b, "<tr><th>{}</th>", esc(f));
                for t in &names {
                    match by.get(&(*f, *t)) {
                        Some(c) => {
                            let label = match c.group {
                                Some(g) => format!("protected (group {g})"),
                                None => c.outcome.clone(),
                            };
                            let _ = write!(b, "<td class=\"{}\">{}</td>", esc(&c.outcome), esc(&label));
                        }
                        None => b.push_str("<td>—</td>"),
                    }
                }
                b.push_str("</tr>");
            }
            b.push_str("</table>");
            page("Who can reach whom", Some(&a), &b).into_response()
        }
        Err(e) => error_page(&a, e),
    }
}

async fn root() -> Redirect {
    Redirect::to("/ui/")
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(root))
        .route("/ui/", get(overview))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/groups", post(create_group))
        .route("/ui/groups/{id}/rotate", post(rotate))
        .route("/ui/ges", post(create_ge))
        .route("/ui/ges/{name}/groups", post(set_groups))
        .route("/ui/ges/{name}/revoke", post(revoke))
        .route("/ui/keys", get(keys))
        .route("/ui/audit", get(audit))
        .route("/ui/matrix", get(matrix))
        .layer(axum::middleware::from_fn(same_origin_posts))
}

/// Whether a form post comes from this server's own pages, as far as the browser tells:
/// `Sec-Fetch-Site` is `same-origin` or `none` (typed by the user), and `Origin`, when sent,
/// is this server. Clients that send neither (scripts, curl) are not browsers under attack.
fn same_origin(headers: &axum::http::HeaderMap, authority: Option<&str>) -> bool {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let site_ok =
        text(header::HeaderName::from_static("sec-fetch-site")).is_none_or(|v| v == "same-origin" || v == "none");
    let host = authority.or_else(|| text(header::HOST));
    let origin_ok = match text(header::ORIGIN) {
        None => true,
        Some(origin) => host.is_some_and(|h| origin.strip_prefix("https://") == Some(h)),
    };
    site_ok && origin_ok
}

async fn same_origin_posts(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if req.method() == axum::http::Method::POST
        && !same_origin(req.headers(), req.uri().authority().map(|a| a.as_str()))
    {
        tracing::warn!(path = %req.uri().path(), "refused a cross-site form post");
        return (
            axum::http::StatusCode::FORBIDDEN,
            page("Refused", None, "<p class=\"error\">cross-site form post refused: use the GMS's own pages</p>"),
        )
            .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posts_from_other_sites_are_told_apart() {
        use axum::http::{HeaderMap, HeaderValue};
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_static(v));
            }
            h
        };
        let host = ("host", "198.18.0.1:8443");
        assert!(same_origin(&headers(&[host]), None), "no browser headers: a script");
        assert!(same_origin(
            &headers(&[host, ("origin", "https://198.18.0.1:8443"), ("sec-fetch-site", "same-origin")]),
            None
        ));
        assert!(same_origin(&headers(&[("origin", "https://gms:8443")]), Some("gms:8443")), "HTTP/2 authority");
        assert!(!same_origin(&headers(&[host, ("origin", "https://evil.example")]), None));
        assert!(!same_origin(&headers(&[host, ("origin", "http://198.18.0.1:8443")]), None), "not over TLS");
        assert!(!same_origin(&headers(&[host, ("origin", "null")]), None));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")]), None));
        assert!(!same_origin(&headers(&[host, ("sec-fetch-site", "same-site")]), None));
        assert!(!same_origin(&headers(&[("origin", "https://198.18.0.1:8443")]), None), "origin without a host");
    }

    #[test]
    fn escaping_and_time() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(time(0), "1970-01-01 00:00 UTC");
        assert_eq!(time(1_795_000_000), "2026-11-18 11:06 UTC");
    }
}

//! The admin center: a web console for the tenant, served under `/admin`.
//!
//! - **Sign-in** is the service's own OAuth 2.0 authorization code flow with PKCE
//!   ([`crate::authorize`]): the console is a public client that keeps the verifier, the tokens
//!   and the person's identity on the server. The browser holds one random session id in an
//!   `HttpOnly`, `SameSite=Lax` cookie scoped to `/admin` — never a bearer token.
//! - **Every page reads through the API**: a page calls the same route handlers as
//!   `/api/v1/...`, in process, as the signed-in person (the [`Caller`] the access token
//!   authenticates), so what a page shows is what the API answers that person, tenant scoping
//!   and 404s included.
//! - **Every change** is a form post carrying the session's CSRF token (and, when the browser
//!   sends one, an `Origin` equal to the service's own).
//!
//! Sessions live in memory: idle for at most `--session-idle-secs` (default 1 h), at most
//! `--session-max-secs` (default 8 h) in all.

pub(crate) mod charts;
mod pages;

use crate::auth::{Caller, RESOURCE};
use crate::authorize::{ADMIN_CENTER_CALLBACK, ADMIN_CENTER_CLIENT_ID};
use crate::error::ApiError;
use crate::server::{AppState, St};
use crate::util;
use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use cookie::{Cookie, SameSite};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// The session cookie.
const SESSION_COOKIE: &str = "ca_session";
/// The cookie of a sign-in in progress (PKCE verifier and state stay on the server).
const SIGNIN_COOKIE: &str = "ca_signin";
/// Sign-ins in progress kept per client address.
const PENDING_PER_ADDRESS: usize = 20;
/// How long a sign-in may take.
const SIGNIN_LIFETIME: Duration = Duration::from_secs(600);
/// Sessions and sign-ins held at most; the oldest are dropped first.
const MAX_HELD: usize = 10_000;

struct Session {
    tenant_id: String,
    upn: String,
    csrf: String,
    access_token: String,
    access_exp: i64,
    refresh_token: Option<String>,
    created: Instant,
    last_seen: Instant,
}

struct PendingSignIn {
    /// The client address that started it (a few per address are kept: one address cannot
    /// push everyone else's sign-ins out).
    addr: Option<std::net::IpAddr>,
    verifier: String,
    state: String,
    return_to: String,
    expires: Instant,
}

/// The console's sessions and sign-ins in progress (in memory).
pub(crate) struct Sessions {
    /// By the SHA-256 of the cookie's value.
    sessions: Mutex<HashMap<String, Session>>,
    pending: Mutex<HashMap<String, PendingSignIn>>,
    idle: Duration,
    max: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Self {
        Sessions {
            sessions: Mutex::default(),
            pending: Mutex::default(),
            idle,
            max,
        }
    }

    fn alive(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_seen) < self.idle && now.duration_since(s.created) < self.max
    }
}

/// The routes of the admin center.
pub(crate) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { redirect("/admin/") }))
        .route("/admin", get(|| async { redirect("/admin/") }))
        .route("/admin/", get(pages::home))
        .route("/admin/signin", get(signin))
        .route(ADMIN_CENTER_CALLBACK, get(callback))
        .route("/admin/signout", post(signout))
        .route("/admin/static/console.css", get(css))
        .route("/admin/static/console.js", get(js))
        .route("/admin/devices", get(pages::devices))
        .route("/admin/devices.csv", get(pages::devices_csv))
        .route("/admin/hierarchies/{hid}/devices/{rid}", get(pages::device))
        .route(
            "/admin/hierarchies/{hid}/devices/{rid}/actions",
            post(pages::ask_action),
        )
        .route("/admin/actions/{id}", get(pages::action_fragment))
        .route(
            "/admin/hierarchies/{hid}/offboard",
            get(pages::offboard_confirm).post(pages::offboard),
        )
        .route("/admin/endpoint-analytics", get(pages::endpoint_analytics))
        .route("/admin/antivirus", get(pages::antivirus))
        .route("/admin/comanagement", get(pages::comanagement))
        .route("/admin/tenant", get(pages::tenant_admin))
        .route("/admin/tenant/intune-rbac", post(pages::set_intune_rbac))
        .route("/admin/tenant/roles", post(pages::set_roles))
}

async fn css() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("static/console.css"),
    )
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("static/console.js"),
    )
}

fn asset(ct: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// A 303 to a path of the console.
pub(crate) fn redirect(to: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An HTML page of the console with its security headers.
pub(crate) fn html_page(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; \
             img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
             object-src 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
}

fn secure(st: &AppState) -> bool {
    st.base.starts_with("https://")
}

fn set_cookie(r: &mut Response, st: &AppState, name: &str, value: &str, max_age: Duration) {
    let c = Cookie::build((name, value))
        .path("/admin")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure(st))
        .max_age(time::Duration::seconds(max_age.as_secs() as i64))
        .build();
    if let Ok(v) = HeaderValue::from_str(&c.to_string()) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn clear_cookie(r: &mut Response, st: &AppState, name: &str) {
    set_cookie(r, st, name, "", Duration::ZERO);
}

/// Only the console's own paths are places to return to after sign-in.
fn safe_return(to: Option<&String>) -> String {
    match to {
        Some(t)
            if t.starts_with("/admin")
                && !t.starts_with("//")
                && !t.contains(['\\', '\r', '\n'])
                && !t.contains("/.")
                && !t.to_ascii_lowercase().contains("%2e")
                && !t.starts_with("/admin/signin")
                && !t.starts_with(ADMIN_CENTER_CALLBACK) =>
        {
            t.clone()
        }
        _ => "/admin/".to_string(),
    }
}

/// `GET /admin/signin[?return_to=]`: starts the authorization code flow.
async fn signin(
    axum::extract::State(st): St,
    conn: Option<axum::extract::Extension<crate::server::ConnInfo>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // The code comes back to the service's own address: start there, so the cookie is its.
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let base_host = st.base.split("://").nth(1).unwrap_or("");
    if !host.is_empty() && host != base_host {
        let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
        return redirect(&format!("{}/admin/signin?{qs}", st.base));
    }
    let verifier = util::random_token(48);
    let challenge = {
        use sha2::Digest;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
    };
    let state = util::random_token(16);
    let cookie = util::random_token(32);
    let now = Instant::now();
    let addr = conn.map(|axum::extract::Extension(c)| c.peer.ip());
    {
        let mut pending = lock(&st.sessions.pending);
        let mine: Vec<(String, Instant)> = pending
            .iter()
            .filter(|(_, p)| p.addr == addr && p.expires > now)
            .map(|(k, p)| (k.clone(), p.expires))
            .collect();
        if mine.len() >= PENDING_PER_ADDRESS
            && let Some((k, _)) = mine.iter().min_by_key(|(_, e)| *e)
        {
            pending.remove(k);
        }
        util::insert_bounded(
            &mut pending,
            MAX_HELD,
            util::sha256_hex(cookie.as_bytes()),
            PendingSignIn {
                addr,
                verifier,
                state: state.clone(),
                return_to: safe_return(q.get("return_to")),
                expires: now + SIGNIN_LIFETIME,
            },
            |s| s.expires > now,
            |s| s.expires,
        );
    }
    let params = [
        ("client_id", ADMIN_CENTER_CLIENT_ID.to_string()),
        ("response_type", "code".into()),
        (
            "redirect_uri",
            format!("{}{ADMIN_CENTER_CALLBACK}", st.base),
        ),
        (
            "scope",
            format!("openid profile offline_access {RESOURCE}/user_impersonation"),
        ),
        ("state", state),
        ("code_challenge", challenge),
        ("code_challenge_method", "S256".into()),
    ];
    let qs = serde_urlencoded::to_string(params).unwrap_or_default();
    let mut r = redirect(&format!("/organizations/oauth2/v2.0/authorize?{qs}"));
    set_cookie(&mut r, &st, SIGNIN_COOKIE, &cookie, SIGNIN_LIFETIME);
    r
}

/// `GET /admin/callback?code=&state=` (or `?error=&error_description=`)
async fn callback(
    axum::extract::State(st): St,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let pending = cookie_value(&headers, SIGNIN_COOKIE).and_then(|c| {
        lock(&st.sessions.pending)
            .remove(&util::sha256_hex(c.as_bytes()))
            .filter(|p| p.expires > Instant::now())
    });
    let fail = |status: StatusCode, msg: &str| {
        let mut r = html_page(status, pages::signed_out_page(Some(msg)));
        clear_cookie(&mut r, &st, SIGNIN_COOKIE);
        r
    };
    let Some(p) = pending else {
        return fail(
            StatusCode::BAD_REQUEST,
            "This sign-in was not started here or took too long. Sign in again.",
        );
    };
    if !q.get("state").is_some_and(|s| util::ct_eq(s, &p.state)) {
        return fail(
            StatusCode::BAD_REQUEST,
            "The sign-in answer does not belong to this sign-in (state mismatch). Sign in again.",
        );
    }
    if let Some(e) = q.get("error") {
        let d = q.get("error_description").map(String::as_str).unwrap_or("");
        return fail(StatusCode::FORBIDDEN, &format!("Sign-in ended: {e}. {d}"));
    }
    let Some(code) = q.get("code") else {
        return fail(
            StatusCode::BAD_REQUEST,
            "The sign-in answer carries no code.",
        );
    };
    let mut f = HashMap::new();
    f.insert("grant_type".to_string(), "authorization_code".to_string());
    f.insert("code".to_string(), code.clone());
    f.insert("client_id".to_string(), ADMIN_CENTER_CLIENT_ID.to_string());
    f.insert(
        "redirect_uri".to_string(),
        format!("{}{ADMIN_CENTER_CALLBACK}", st.base),
    );
    f.insert("code_verifier".to_string(), p.verifier.clone());
    let tokens = match crate::identity::token_from_form(&st, "organizations", &f).await {
        Ok(t) => t,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                &format!("The sign-in could not be completed: {}", e.description),
            );
        }
    };
    let access = tokens["access_token"].as_str().unwrap_or("").to_string();
    let caller = match caller_of_token(&st, &access).await {
        Ok(c) => c,
        Err(e) => return fail(StatusCode::UNAUTHORIZED, &e.message),
    };
    let Some((_, upn)) = caller.user() else {
        return fail(
            StatusCode::UNAUTHORIZED,
            "The sign-in did not name a person.",
        );
    };
    let id = util::random_token(32);
    let now = Instant::now();
    let session = Session {
        tenant_id: caller.tenant_id.clone(),
        upn: upn.to_string(),
        csrf: util::random_token(32),
        access_exp: util::now_unix() + tokens["expires_in"].as_i64().unwrap_or(3600),
        access_token: access,
        refresh_token: tokens["refresh_token"].as_str().map(str::to_string),
        created: now,
        last_seen: now,
    };
    {
        let (idle, max) = (st.sessions.idle, st.sessions.max);
        util::insert_bounded(
            &mut lock(&st.sessions.sessions),
            MAX_HELD,
            util::sha256_hex(id.as_bytes()),
            session,
            |x| now.duration_since(x.last_seen) < idle && now.duration_since(x.created) < max,
            |x| x.last_seen,
        );
    }
    // A new sign-in ends the session this browser had.
    if let Some(old) = cookie_value(&headers, SESSION_COOKIE) {
        lock(&st.sessions.sessions).remove(&util::sha256_hex(old.as_bytes()));
    }
    tracing::info!(upn = %upn, tenant = %caller.tenant_id, "admin center sign-in");
    let mut r = redirect(&p.return_to);
    clear_cookie(&mut r, &st, SIGNIN_COOKIE);
    set_cookie(&mut r, &st, SESSION_COOKIE, &id, st.sessions.max);
    r
}

async fn caller_of_token(st: &Arc<AppState>, token: &str) -> Result<Caller, ApiError> {
    let v = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::unauthorized("the session's token is unusable"))?;
    crate::server::caller_of(st, Some(v)).await
}

/// `POST /admin/signout`
async fn signout(
    axum::extract::State(st): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
    if let Some(id) = cookie_value(&headers, SESSION_COOKIE) {
        let key = util::sha256_hex(id.as_bytes());
        let mut s = lock(&st.sessions.sessions);
        // Only with the session's CSRF token: a foreign page cannot sign a person out. A
        // session that already ended is signed out.
        let known = s.get(&key).map(|x| x.csrf.clone());
        if let Some(csrf) = known {
            if !form.get("csrf").is_some_and(|c| util::ct_eq(c, &csrf)) {
                return html_page(
                    StatusCode::FORBIDDEN,
                    pages::message_page(
                        "Request refused",
                        "The form is missing its security token. Go back, reload the page and try again.",
                    ),
                );
            }
            s.remove(&key);
        }
    }
    let mut r = html_page(StatusCode::OK, pages::signed_out_page(None));
    clear_cookie(&mut r, &st, SESSION_COOKIE);
    r
}

/// A signed-in person on a console page: who, and the means to read the API as them.
pub(crate) struct Console {
    pub st: Arc<AppState>,
    pub caller: Caller,
    pub upn: String,
    pub csrf: String,
    /// The tenant's display name.
    pub tenant_name: String,
}

impl FromRequestParts<Arc<AppState>> for Console {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        st: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let return_to = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let to_signin = |expired: bool| {
            let qs = serde_urlencoded::to_string([("return_to", return_to.as_str())])
                .unwrap_or_default();
            if parts.method == Method::GET && !expired {
                redirect(&format!("/admin/signin?{qs}"))
            } else {
                let mut r = html_page(
                    StatusCode::UNAUTHORIZED,
                    pages::signed_out_page(Some(if expired {
                        "Your session has expired. Sign in again."
                    } else {
                        "You are not signed in."
                    })),
                );
                clear_cookie(&mut r, st, SESSION_COOKIE);
                r
            }
        };
        let Some(id) = cookie_value(&parts.headers, SESSION_COOKIE) else {
            return Err(to_signin(false));
        };
        let key = util::sha256_hex(id.as_bytes());
        let now = Instant::now();
        let (tenant_id, upn, csrf, token, exp, refresh) = {
            let mut s = lock(&st.sessions.sessions);
            let Some(x) = s.get_mut(&key) else {
                return Err(to_signin(true));
            };
            if !st.sessions.alive(x, now) {
                s.remove(&key);
                return Err(to_signin(true));
            }
            x.last_seen = now;
            (
                x.tenant_id.clone(),
                x.upn.clone(),
                x.csrf.clone(),
                x.access_token.clone(),
                x.access_exp,
                x.refresh_token.clone(),
            )
        };
        // The access token is renewed with the refresh token a minute before it expires.
        let token = if exp - 60 <= util::now_unix() {
            let Some(rt) = refresh else {
                lock(&st.sessions.sessions).remove(&key);
                return Err(to_signin(true));
            };
            let mut f = HashMap::new();
            f.insert("grant_type".to_string(), "refresh_token".to_string());
            let rt_used = rt.clone();
            f.insert("refresh_token".to_string(), rt);
            f.insert("client_id".to_string(), ADMIN_CENTER_CLIENT_ID.to_string());
            match crate::identity::token_from_form(st, &tenant_id, &f).await {
                Ok(t) => {
                    let access = t["access_token"].as_str().unwrap_or("").to_string();
                    if let Some(x) = lock(&st.sessions.sessions).get_mut(&key) {
                        x.access_token = access.clone();
                        x.access_exp = util::now_unix() + t["expires_in"].as_i64().unwrap_or(3600);
                        x.refresh_token = t["refresh_token"].as_str().map(str::to_string);
                    }
                    access
                }
                Err(_) => {
                    // Another request of this session may have renewed the tokens first (a
                    // refresh token is used once): then its new access token serves.
                    let mut sessions = lock(&st.sessions.sessions);
                    match sessions.get(&key) {
                        Some(x) if x.refresh_token != Some(rt_used.clone()) => {
                            x.access_token.clone()
                        }
                        _ => {
                            sessions.remove(&key);
                            return Err(to_signin(true));
                        }
                    }
                }
            }
        } else {
            token
        };
        let caller = match caller_of_token(st, &token).await {
            Ok(c) => c,
            Err(_) => {
                // The account was deleted, or the tenant is gone.
                lock(&st.sessions.sessions).remove(&key);
                return Err(to_signin(true));
            }
        };
        let tid = tenant_id.clone();
        let tenant_name = crate::server::db(st, move |s| s.find_tenant(&tid))
            .await
            .ok()
            .flatten()
            .map(|t| t.display_name)
            .unwrap_or(tenant_id);
        Ok(Console {
            st: st.clone(),
            caller,
            upn,
            csrf,
            tenant_name,
        })
    }
}

/// The API's routes without their authentication layer: the console hands them its caller.
fn api() -> Router<Arc<AppState>> {
    static API: OnceLock<Router<Arc<AppState>>> = OnceLock::new();
    // The query check applies as to any caller: a page asking with a parameter the route does
    // not take is an error, not an unfiltered answer.
    API.get_or_init(|| {
        crate::server::api_routes().layer(axum::middleware::from_fn(crate::query::middleware))
    })
    .clone()
}

impl Console {
    /// Calls an API route as the signed-in person; the JSON answer, or the API's error.
    pub async fn api(
        &self,
        method: Method,
        uri: &str,
        body: Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let b = body
            .map(|v| Body::from(v.to_string()))
            .unwrap_or_else(Body::empty);
        let mut req = req
            .body(b)
            .map_err(|e| ApiError::internal(format!("console request: {e}")))?;
        req.extensions_mut().insert(self.caller.clone());
        let r = api()
            .with_state(self.st.clone())
            .oneshot(req)
            .await
            .map_err(|e| ApiError::internal(format!("console request: {e}")))?;
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), 256 * 1024 * 1024)
            .await
            .map_err(|e| ApiError::internal(format!("console answer: {e}")))?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            let code = v["error"]["code"].as_str().unwrap_or("Error").to_string();
            let message = v["error"]["message"]
                .as_str()
                .unwrap_or("the request failed")
                .to_string();
            Err(ApiError::new(status, &code, message))
        }
    }

    /// GET with query parameters.
    pub async fn get(&self, path: &str, q: &[(&str, String)]) -> Result<Value, ApiError> {
        let uri = if q.is_empty() {
            path.to_string()
        } else {
            format!(
                "{path}?{}",
                serde_urlencoded::to_string(q).unwrap_or_default()
            )
        };
        self.api(Method::GET, &uri, None).await
    }

    /// Every item of a paged list, following `@odata.nextLink` (1,000 per request).
    pub async fn get_all(&self, path: &str) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut next = Some(format!("{path}?$top=1000"));
        while let Some(uri) = next.take() {
            let v = self.api(Method::GET, &uri, None).await?;
            out.extend(v["value"].as_array().cloned().unwrap_or_default());
            next = v["@odata.nextLink"].as_str().map(|l| {
                l.strip_prefix(self.st.base.as_str())
                    .unwrap_or(l)
                    .to_string()
            });
        }
        Ok(out)
    }

    /// Checks a form post: the session's CSRF token, and the `Origin` when the browser sends
    /// one. `Err` is the answer.
    pub fn check_post(
        &self,
        headers: &HeaderMap,
        form: &HashMap<String, String>,
    ) -> Result<(), Box<Response>> {
        // The whole origin (scheme, host and port) must be the service's own: sign-in always
        // happens at `st.base`, so the session cookie exists only there.
        let origin_ok = match headers.get(header::ORIGIN) {
            None => true,
            Some(o) => o
                .to_str()
                .is_ok_and(|o| o.eq_ignore_ascii_case(self.st.base.trim_end_matches('/'))),
        };
        let token_ok = form.get("csrf").is_some_and(|c| util::ct_eq(c, &self.csrf));
        if origin_ok && token_ok {
            Ok(())
        } else {
            Err(Box::new(html_page(
                StatusCode::FORBIDDEN,
                pages::message_page(
                    "Request refused",
                    "The form is missing its security token or comes from another site, so nothing was changed. Go back, reload the page and try again.",
                ),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::safe_return;

    #[test]
    fn only_the_consoles_own_paths_are_returned_to() {
        let r = |s: &str| safe_return(Some(&s.to_string()));
        assert_eq!(r("/admin/devices?q=PC"), "/admin/devices?q=PC");
        for bad in [
            "https://evil.example/",
            "//evil.example/admin",
            "/admin/../organizations/oauth2/v2.0/authorize",
            "/admin/%2E%2E/x",
            "/admin\\..\\x",
            "/admin/callback?code=x",
            "/admin/signin",
        ] {
            assert_eq!(r(bad), "/admin/", "{bad}");
        }
        assert_eq!(safe_return(None), "/admin/");
    }
}

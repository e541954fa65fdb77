//! The OAuth 2.0 authorization endpoint, as Entra ID serves it: authorization code with PKCE
//! (RFC 6749 §4.1, RFC 7636, S256 only), a sign-in page, a consent page the first time a person
//! lets an application act for them, and the `authorization_code` grant of the token endpoint.
//!
//! Two public clients may use it: the admin center (`/admin`, redirect `{base}/admin/callback`)
//! and the cloudattach command line (loopback redirects, RFC 8252). An unknown client or a
//! redirect URI that is not registered gets an error page — never a redirect — as Entra does.

use crate::auth::{PUBLIC_CLIENT_ID, RESOURCE};
use crate::error::OAuthError;
use crate::identity::{delegated_scope, issue_user_tokens, locked_message, verify_user};
use crate::lockout::Refusal;
use crate::server::{AppState, ConnInfo, St, db};
use crate::store::Tenant;
use crate::util;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The client id of the admin center (a public client of every tenant).
pub const ADMIN_CENTER_CLIENT_ID: &str = "00000000-0000-4000-8000-0000000ad4c1";
/// The path the admin center receives its authorization codes on.
pub const ADMIN_CENTER_CALLBACK: &str = "/admin/callback";
/// How long an authorization code may be redeemed (Entra: about 10 minutes).
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// How long a signed-in person has to answer the consent page.
const TICKET_LIFETIME: Duration = Duration::from_secs(300);
/// Codes and tickets held at most (all tenants); the oldest are dropped first.
const MAX_HELD: usize = 10_000;

struct AuthCode {
    tenant_id: String,
    user_id: String,
    client_id: String,
    redirect_uri: String,
    challenge: String,
    scope: String,
    expires: Instant,
    redeemed: bool,
}

struct Ticket {
    tenant_id: String,
    user_id: String,
    req: AuthRequest,
    expires: Instant,
}

/// Authorization codes, consent tickets and the consents given (in memory).
#[derive(Default)]
pub(crate) struct AuthCodes {
    /// By the SHA-256 of the code.
    codes: Mutex<HashMap<String, AuthCode>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// (tenant, user, client) that consented.
    /// (tenant, user, client) → the scopes consented to.
    consents: Mutex<HashMap<(String, String, String), HashSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The parameters of an authorization request.
#[derive(Debug, Clone, Default)]
struct AuthRequest {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    scope: String,
    state: String,
    code_challenge: String,
    code_challenge_method: String,
    login_hint: String,
}

impl AuthRequest {
    fn of(q: &HashMap<String, String>) -> AuthRequest {
        let g = |k: &str| q.get(k).cloned().unwrap_or_default();
        AuthRequest {
            client_id: g("client_id").trim().to_ascii_lowercase(),
            redirect_uri: g("redirect_uri"),
            response_type: g("response_type"),
            scope: g("scope"),
            state: g("state"),
            code_challenge: g("code_challenge"),
            code_challenge_method: g("code_challenge_method"),
            login_hint: g("login_hint"),
        }
    }

    fn hidden(&self) -> Markup {
        html! {
            @for (k, v) in [("client_id", &self.client_id), ("redirect_uri", &self.redirect_uri),
                ("response_type", &self.response_type), ("scope", &self.scope), ("state", &self.state),
                ("code_challenge", &self.code_challenge),
                ("code_challenge_method", &self.code_challenge_method)] {
                input type="hidden" name=(k) value=(v);
            }
        }
    }
}

/// The display name of a client allowed to use this endpoint.
fn client_name(client_id: &str) -> Option<&'static str> {
    match client_id {
        ADMIN_CENTER_CLIENT_ID => Some("cloudattach admin center"),
        PUBLIC_CLIENT_ID => Some("cloudattach command line"),
        _ => None,
    }
}

/// Whether `uri` is a registered redirect URI of the client: the admin center's callback on
/// this service, or, for the command line, any loopback port (RFC 8252 §7.3).
fn redirect_allowed(st: &AppState, client_id: &str, uri: &str) -> bool {
    match client_id {
        ADMIN_CENTER_CLIENT_ID => uri == format!("{}{ADMIN_CENTER_CALLBACK}", st.base),
        PUBLIC_CLIENT_ID if uri.contains('#') => false,
        PUBLIC_CLIENT_ID => ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
            .iter()
            .any(|p| {
                uri.strip_prefix(p).is_some_and(|rest| {
                    let port = rest.split('/').next().unwrap_or("");
                    !port.is_empty() && port.parse::<u16>().is_ok()
                })
            }),
        _ => false,
    }
}

/// `organizations` and `common` stand for the signed-in person's tenant.
fn is_multi_tenant(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "organizations" | "common"
    )
}

/// The tenant of an `authorization_code` grant sent to a multi-tenant authority: the code's.
/// `Ok(None)` when the request is not such a grant; an unknown, expired or replayed code is
/// `invalid_grant` (as Entra answers), not an unknown tenant `organizations`.
pub(crate) fn code_tenant(
    st: &AppState,
    path_tenant: &str,
    f: &HashMap<String, String>,
) -> Result<Option<String>, OAuthError> {
    if !is_multi_tenant(path_tenant)
        || f.get("grant_type").map(String::as_str) != Some("authorization_code")
    {
        return Ok(None);
    }
    let code = crate::identity::param(f, "code")?;
    let now = Instant::now();
    let codes = lock(&st.auth_codes.codes);
    match codes
        .get(&util::sha256_hex(code.as_bytes()))
        .filter(|c| c.expires > now)
    {
        Some(c) => Ok(Some(c.tenant_id.clone())),
        None => Err(OAuthError::new(
            "invalid_grant",
            "AADSTS70008: The provided authorization code or refresh token has expired or is not valid.",
        )),
    }
}

/// A page of the sign-in flow: no scripts, no framing, forms post here or to the client.
fn page_response(status: StatusCode, form_target: Option<&str>, body: Markup) -> Response {
    let mut r = (status, Html(body.into_string())).into_response();
    let h = r.headers_mut();
    let extra = form_target.map(origin_of).unwrap_or_default();
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {extra}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// `scheme://host[:port]` of a URL (for the form-action of a redirect after a form post).
fn origin_of(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return String::new();
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() || host.contains(['\'', ';', ' ', '"']) {
        return String::new();
    }
    format!("{scheme}://{host}")
}

const STYLE: &str = "body{font-family:'Segoe UI',system-ui,sans-serif;background:#f2f2f2;margin:0;color:#1b1b1b}\
main{background:#fff;max-width:26rem;margin:4rem auto;padding:2.2rem 2.5rem;box-shadow:0 2px 6px rgba(0,0,0,.2)}\
@media (max-width:30rem){main{margin:0;padding:1.5rem}}\
h1{font-size:1.5rem;font-weight:600;margin:.2rem 0 1rem}label{display:block;margin:.9rem 0 .2rem;font-weight:600}\
input[type=text],input[type=email],input[type=password]{width:100%;box-sizing:border-box;padding:.45rem;border:1px solid #666;font-size:1rem}\
input:focus,button:focus{outline:3px solid #0b5cad;outline-offset:2px}\
.buttons{margin-top:1.5rem;display:flex;gap:.6rem;justify-content:flex-end}\
button{font-size:1rem;padding:.45rem 1.4rem;border:1px solid #0b5cad;background:#fff;color:#0b5cad;cursor:pointer}\
button.primary{background:#0b5cad;color:#fff}.err{color:#a4262c;font-weight:600}.app{color:#444}\
ul{padding-left:1.2rem}li{margin:.4rem 0}.who{color:#444;font-size:.95rem}";

fn layout(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — cloudattach" }
                style { (maud::PreEscaped(STYLE)) }
            }
            body { main { (body) } }
        }
    }
}

fn error_page(status: StatusCode, code: &str, message: &str) -> Response {
    page_response(
        status,
        None,
        layout(
            "Sign-in error",
            html! {
                h1 { "Sorry, but we’re having trouble signing you in." }
                p.err role="alert" { (code) ": " (message) }
                p { "Close this page and start again from the application." }
            },
        ),
    )
}

/// Redirects to the client's redirect URI with `params` added (303: the browser follows with
/// a GET, also after a form post).
fn redirect_to(uri: &str, params: &[(&str, &str)]) -> Response {
    let sep = if uri.contains('?') { '&' } else { '?' };
    let q = serde_urlencoded::to_string(params).unwrap_or_default();
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{uri}{sep}{q}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn redirect_error(req: &AuthRequest, error: &str, description: &str) -> Response {
    let mut p = vec![("error", error), ("error_description", description)];
    if !req.state.is_empty() {
        p.push(("state", req.state.as_str()));
    }
    redirect_to(&req.redirect_uri, &p)
}

/// Checks a request; `Err` is the answer (an error page before the redirect URI is trusted, a
/// redirect with `error` after).
async fn validate(
    st: &Arc<AppState>,
    tenant: &str,
    req: &AuthRequest,
) -> Result<(Option<Tenant>, &'static str, String), Box<Response>> {
    let t = if is_multi_tenant(tenant) {
        None
    } else {
        match crate::identity::tenant(st, tenant).await {
            Ok(t) => Some(t),
            Err(e) => {
                return Err(Box::new(error_page(
                    StatusCode::BAD_REQUEST,
                    e.error,
                    &e.description,
                )));
            }
        }
    };
    let Some(app) = client_name(&req.client_id) else {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "AADSTS700016",
            &format!(
                "Application with identifier '{}' was not found in the directory.",
                req.client_id
            ),
        )));
    };
    if !redirect_allowed(st, &req.client_id, &req.redirect_uri) {
        return Err(Box::new(error_page(
            StatusCode::BAD_REQUEST,
            "AADSTS50011",
            &format!(
                "The redirect URI '{}' specified in the request does not match the redirect URIs configured for the application '{}'.",
                req.redirect_uri, req.client_id
            ),
        )));
    }
    if req.response_type != "code" {
        return Err(Box::new(redirect_error(
            req,
            "unsupported_response_type",
            "AADSTS700054: only response_type=code is supported (authorization code with PKCE).",
        )));
    }
    if req.code_challenge.is_empty() {
        return Err(Box::new(redirect_error(
            req,
            "invalid_request",
            "AADSTS9002325: Proof Key for Code Exchange is required: send code_challenge and code_challenge_method=S256.",
        )));
    }
    if req.code_challenge_method != "S256" {
        return Err(Box::new(redirect_error(
            req,
            "invalid_request",
            "AADSTS501491: code_challenge_method must be S256.",
        )));
    }
    let valid_challenge = req.code_challenge.len() == 43
        && req
            .code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_challenge {
        return Err(Box::new(redirect_error(
            req,
            "invalid_request",
            "AADSTS501491: code_challenge must be the base64url SHA-256 of the code verifier (43 characters).",
        )));
    }
    let scope = if req.scope.trim().is_empty() {
        format!("openid profile offline_access {RESOURCE}/user_impersonation")
    } else {
        match delegated_scope(&req.scope) {
            Ok(s) => s,
            Err(e) => return Err(Box::new(redirect_error(req, e.error, &e.description))),
        }
    };
    Ok((t, app, scope))
}

fn sign_in_page(
    tenant: &str,
    t: Option<&Tenant>,
    app: &str,
    req: &AuthRequest,
    upn: &str,
    error: Option<&str>,
) -> Markup {
    let action = format!("/{tenant}/oauth2/v2.0/authorize");
    layout(
        "Sign in",
        html! {
            p.app { (app) }
            h1 { "Sign in" }
            @if let Some(t) = t { p.who { "to " (t.display_name) } }
            @if let Some(e) = error { p.err role="alert" id="signin-error" { (e) } }
            form method="post" action=(action) {
                (req.hidden())
                input type="hidden" name="step" value="signin";
                label for="upn" { "Email, phone, or Skype" }
                input type="email" id="upn" name="upn" value=(upn) autocomplete="username" required autofocus[upn.is_empty()];
                label for="password" { "Password" }
                input type="password" id="password" name="password" autocomplete="current-password" required autofocus[!upn.is_empty()];
                div.buttons {
                    button type="submit" name="decision" value="cancel" formnovalidate { "Cancel" }
                    button.primary type="submit" name="decision" value="signin" id="signin" { "Sign in" }
                }
            }
        },
    )
}

fn consent_page(tenant: &str, app: &str, upn: &str, scope: &str, ticket: &str) -> Markup {
    let action = format!("/{tenant}/oauth2/v2.0/authorize");
    let offline = scope.split_whitespace().any(|s| s == "offline_access");
    layout(
        "Permissions requested",
        html! {
            p.who { (upn) }
            h1 { "Permissions requested" }
            p { strong { (app) } " wants to:" }
            ul {
                li { "Sign you in and read your profile" }
                li { "Act for you in cloudattach: read the devices and reports of your tenant and ask the actions your roles allow" }
                @if offline { li { "Maintain access to the data you have given it access to" } }
            }
            p { "Accepting lets this application use these permissions for you. This service remembers the answer until it restarts; it asks again when the application wants more." }
            form method="post" action=(action) {
                input type="hidden" name="step" value="consent";
                input type="hidden" name="ticket" value=(ticket);
                div.buttons {
                    button type="submit" name="decision" value="cancel" id="consent-cancel" { "Cancel" }
                    button.primary type="submit" name="decision" value="accept" id="consent-accept" { "Accept" }
                }
            }
        },
    )
}

/// `GET /{tenant}/oauth2/v2.0/authorize`
pub(crate) async fn authorize_page(
    State(st): St,
    Path(tenant): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let req = AuthRequest::of(&q);
    let (t, app, _) = match validate(&st, &tenant, &req).await {
        Ok(v) => v,
        Err(r) => return *r,
    };
    page_response(
        StatusCode::OK,
        Some(&req.redirect_uri),
        sign_in_page(&tenant, t.as_ref(), app, &req, &req.login_hint, None),
    )
}

fn issue_code(
    st: &AppState,
    tenant_id: &str,
    user_id: &str,
    req: &AuthRequest,
    scope: &str,
) -> Response {
    let code = util::random_token(32);
    let now = Instant::now();
    {
        util::insert_bounded(
            &mut lock(&st.auth_codes.codes),
            MAX_HELD,
            util::sha256_hex(code.as_bytes()),
            AuthCode {
                tenant_id: tenant_id.into(),
                user_id: user_id.into(),
                client_id: req.client_id.clone(),
                redirect_uri: req.redirect_uri.clone(),
                challenge: req.code_challenge.clone(),
                scope: scope.into(),
                expires: now + CODE_LIFETIME,
                redeemed: false,
            },
            |c| c.expires > now,
            |c| c.expires,
        );
    }
    let mut p = vec![("code", code.as_str())];
    if !req.state.is_empty() {
        p.push(("state", req.state.as_str()));
    }
    redirect_to(&req.redirect_uri, &p)
}

/// `POST /{tenant}/oauth2/v2.0/authorize` (the sign-in and consent forms)
pub(crate) async fn authorize_submit(
    State(st): St,
    Path(tenant): Path<String>,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let f = match crate::identity::form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_page(StatusCode::BAD_REQUEST, e.error, &e.description),
    };
    let decision = f.get("decision").map(String::as_str).unwrap_or("");
    if f.get("step").map(String::as_str) == Some("consent") {
        let ticket = f.get("ticket").cloned().unwrap_or_default();
        let now = Instant::now();
        let t = {
            let mut tickets = lock(&st.auth_codes.tickets);
            tickets.retain(|_, t| t.expires > now);
            tickets.remove(&util::sha256_hex(ticket.as_bytes()))
        };
        let Some(t) = t else {
            return error_page(
                StatusCode::BAD_REQUEST,
                "AADSTS50058",
                "The sign-in session has expired or was already used. Start again from the application.",
            );
        };
        if decision != "accept" {
            return redirect_error(
                &t.req,
                "access_denied",
                "AADSTS65004: User declined to consent to access the app.",
            );
        }
        let scope = match delegated_scope(&t.req.scope) {
            Ok(s) => s,
            Err(_) => format!("openid profile offline_access {RESOURCE}/user_impersonation"),
        };
        lock(&st.auth_codes.consents)
            .entry((
                t.tenant_id.clone(),
                t.user_id.clone(),
                t.req.client_id.clone(),
            ))
            .or_default()
            .extend(scope.split_whitespace().map(str::to_string));
        return issue_code(&st, &t.tenant_id, &t.user_id, &t.req, &scope);
    }
    let req = AuthRequest::of(&f);
    let (tn, app, scope) = match validate(&st, &tenant, &req).await {
        Ok(v) => v,
        Err(r) => return *r,
    };
    if decision == "cancel" {
        return redirect_error(
            &req,
            "access_denied",
            "AADSTS50126: the user canceled the sign-in.",
        );
    }
    let upn = f
        .get("upn")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let password = f.get("password").cloned().unwrap_or_default();
    let fail = |status: StatusCode, msg: &str| {
        page_response(
            status,
            Some(&req.redirect_uri),
            sign_in_page(&tenant, tn.as_ref(), app, &req, &upn, Some(msg)),
        )
    };
    let addr = conn.map(|Extension(c)| c.peer.ip());
    let now = Instant::now();
    let limits = &st.sign_in_limits;
    match limits.check(addr, &upn, now) {
        Ok(()) => {}
        Err(Refusal::AddressThrottled(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut r = fail(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many failed sign-in attempts from your network address. Try again in {secs} seconds."
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return r;
        }
        Err(Refusal::AccountLocked(wait)) => {
            return fail(StatusCode::BAD_REQUEST, &locked_message(wait));
        }
    }
    let user = match verify_user(&st, &upn, password).await {
        Ok(Some(u)) => u,
        Ok(None) => {
            limits.address_failed(addr, now);
            let msg = match limits.account_failed(&upn, now) {
                Some(lockout) => format!(
                    "Your account or password is incorrect. {}",
                    locked_message(lockout)
                ),
                None => "Your account or password is incorrect.".to_string(),
            };
            return fail(StatusCode::BAD_REQUEST, &msg);
        }
        Err(msg) => return fail(StatusCode::SERVICE_UNAVAILABLE, msg),
    };
    limits.account_succeeded(&upn);
    if let Some(t) = &tn
        && t.id != user.tenant_id
    {
        return fail(
            StatusCode::BAD_REQUEST,
            &format!(
                "AADSTS50020: User account '{}' does not exist in tenant '{}'.",
                user.upn, t.display_name
            ),
        );
    }
    // Consent covers the scopes accepted: a request for more asks again.
    let consented = lock(&st.auth_codes.consents)
        .get(&(
            user.tenant_id.clone(),
            user.id.clone(),
            req.client_id.clone(),
        ))
        .is_some_and(|given| scope.split_whitespace().all(|x| given.contains(x)));
    if consented {
        return issue_code(&st, &user.tenant_id, &user.id, &req, &scope);
    }
    let ticket = util::random_token(32);
    {
        let mut req = req.clone();
        req.scope = scope.clone();
        util::insert_bounded(
            &mut lock(&st.auth_codes.tickets),
            MAX_HELD,
            util::sha256_hex(ticket.as_bytes()),
            Ticket {
                tenant_id: user.tenant_id.clone(),
                user_id: user.id.clone(),
                req,
                expires: now + TICKET_LIFETIME,
            },
            |t| t.expires > now,
            |t| t.expires,
        );
    }
    page_response(
        StatusCode::OK,
        Some(&req.redirect_uri),
        consent_page(&tenant, app, &user.upn, &scope, &ticket),
    )
}

/// Whether a PKCE code verifier matches the challenge (S256).
pub(crate) fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    use sha2::Digest;
    let valid = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !valid {
        return false;
    }
    let digest = sha2::Sha256::digest(verifier.as_bytes());
    let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest);
    util::ct_eq(&computed, challenge)
}

/// The `authorization_code` grant of `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn redeem(
    st: &Arc<AppState>,
    t: &Tenant,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    use crate::identity::param;
    let code = param(f, "code")?;
    let client_id = param(f, "client_id")?.trim().to_ascii_lowercase();
    let redirect_uri = param(f, "redirect_uri")?;
    let verifier = param(f, "code_verifier")?;
    let key = util::sha256_hex(code.as_bytes());
    let now = Instant::now();
    let (user_id, scope) = {
        let mut codes = lock(&st.auth_codes.codes);
        codes.retain(|_, c| c.expires > now);
        let Some(c) = codes.get_mut(&key) else {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS70008: The provided authorization code or refresh token has expired or is not valid.",
            ));
        };
        if c.redeemed {
            // A replayed code: refuse it, and forget it.
            codes.remove(&key);
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code.",
            ));
        }
        if c.tenant_id != t.id || c.client_id != client_id {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS70000: the code was not issued to this client in this tenant.",
            ));
        }
        if c.redirect_uri != redirect_uri {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS50148: The redirect_uri does not match the one the authorization code was issued for.",
            ));
        }
        if !pkce_matches(verifier, &c.challenge) {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.",
            ));
        }
        c.redeemed = true;
        (c.user_id.clone(), c.scope.clone())
    };
    let (tid, uid) = (t.id.clone(), user_id.clone());
    // The account may have been deleted since the code was issued.
    if db(st, move |s| s.user_by_id(&tid, &uid)).await?.is_none() {
        return Err(OAuthError::new(
            "invalid_grant",
            "AADSTS50034: the user account does not exist",
        ));
    }
    issue_user_tokens(st, &t.id, &user_id, &client_id, &scope).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_the_rfc_example() {
        // RFC 7636, appendix B.
        assert!(pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
        assert!(!pkce_matches(
            "short",
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        ));
    }

    #[test]
    fn origins_of_redirects() {
        assert_eq!(origin_of("http://127.0.0.1:9/cb?x"), "http://127.0.0.1:9");
        assert_eq!(origin_of("http://a b/"), "");
        assert_eq!(origin_of("nonsense"), "");
    }
}

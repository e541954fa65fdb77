//! Entra ID-compatible identity endpoints: discovery, keys, device code (RFC 8628), token
//! (device_code, client_credentials, refresh_token) and the `/devicelogin` page.

use crate::auth::{self, Claims, PUBLIC_CLIENT_ID, RESOURCE};
use crate::error::OAuthError;
use crate::lockout::Refusal;
use crate::server::{AppState, ConnInfo, St, db};
use crate::store::{RefreshGrant, RefreshTake, Tenant};
use crate::util;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const REFRESH_LIFETIME: i64 = 90 * 24 * 3600;

#[derive(Debug, Clone, PartialEq)]
enum Approval {
    Pending,
    Approved(String),
    Declined,
    /// Invalidated after [`MAX_SIGN_IN_ATTEMPTS`] failed sign-ins on `/devicelogin`.
    Locked,
}

/// Failed sign-ins a user code allows on `/devicelogin` before it is invalidated.
pub(crate) const MAX_SIGN_IN_ATTEMPTS: u32 = 5;

/// An Argon2 hash that unknown user names are verified against, so that they cost as much as
/// known ones (no user-enumeration timing oracle).
fn dummy_password_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| auth::hash_password(&util::random_token(24)))
}

/// Looks a user up by UPN and verifies the password (Argon2, at most one verification per CPU
/// at a time). Unknown users are verified against a dummy hash: same cost, same answer. `None`:
/// wrong user name or password; `Err`: a message for the sign-in page.
pub(crate) async fn verify_user(
    st: &Arc<AppState>,
    upn: &str,
    password: String,
) -> Result<Option<crate::store::User>, &'static str> {
    let u = upn.to_string();
    let user = db(st, move |s| s.user_by_upn(&u))
        .await
        .map_err(|_| "The directory is unavailable; try again.")?;
    let hash = user.as_ref().map(|u| u.password_hash.clone());
    // Each verification takes ~19 MiB and a core.
    let Ok(_permit) = st.password_slots.clone().acquire_owned().await else {
        return Err("The service is stopping; try again.");
    };
    let ok = tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| dummy_password_hash());
        auth::verify_password(&password, hash)
    })
    .await
    .unwrap_or(false);
    Ok(user.filter(|_| ok))
}

#[derive(Debug, Clone)]
struct DeviceCode {
    tenant_id: String,
    client_id: String,
    scope: String,
    user_code: String,
    expires: Instant,
    interval: Duration,
    last_poll: Option<Instant>,
    approval: Approval,
    /// Sign-in attempts started on `/devicelogin` (capped at [`MAX_SIGN_IN_ATTEMPTS`]).
    attempts: u32,
}

/// Outstanding device codes (in memory: they live 15 minutes).
#[derive(Default)]
pub(crate) struct DeviceCodes {
    map: Mutex<HashMap<String, DeviceCode>>,
}

impl DeviceCodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, DeviceCode>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Device codes held in memory (unfinished ones, and ended ones kept a while to answer
    /// `expired_token`, `authorization_declined`).
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// How long an expired code is remembered (to answer `expired_token` rather than
/// `bad_verification_code`), as long as its application's bound leaves room.
const EXPIRED_MEMORY: Duration = Duration::from_secs(3600);

/// Makes room for a new device code of (`tenant_id`, `client_id`), at most `max` held: expired
/// codes of that pair are forgotten first; if `max` unexpired ones remain, the request is
/// refused with the seconds until the first of them expires. So the codes held per application
/// and tenant never exceed the bound, whatever their state.
fn make_room(
    codes: &mut HashMap<String, DeviceCode>,
    tenant_id: &str,
    client_id: &str,
    max: usize,
    now: Instant,
) -> Result<(), u64> {
    codes.retain(|_, d| d.expires + EXPIRED_MEMORY > now);
    let mine = |d: &DeviceCode| d.tenant_id == tenant_id && d.client_id == client_id;
    if codes.values().filter(|d| mine(d)).count() < max {
        return Ok(());
    }
    codes.retain(|_, d| !mine(d) || d.expires > now);
    let live: Vec<Instant> = codes
        .values()
        .filter(|d| mine(d))
        .map(|d| d.expires)
        .collect();
    if live.len() < max {
        return Ok(());
    }
    let first_end = live.into_iter().min().unwrap_or(now);
    Err(first_end.saturating_duration_since(now).as_secs().max(1))
}

pub(crate) async fn tenant(st: &Arc<AppState>, name: &str) -> Result<Tenant, OAuthError> {
    let n = name.to_string();
    db(st, move |s| s.find_tenant(&n)).await?.ok_or_else(|| {
        OAuthError::new(
            "invalid_tenant",
            format!("AADSTS90002: Tenant '{name}' not found."),
        )
    })
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`
pub(crate) async fn openid_configuration(State(st): St, Path(t): Path<String>) -> Response {
    let t = match tenant(&st, &t).await {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let b = &st.base;
    let id = &t.id;
    Json(json!({
        "issuer": st.issuer(id),
        "token_endpoint": format!("{b}/{id}/oauth2/v2.0/token"),
        "authorization_endpoint": format!("{b}/{id}/oauth2/v2.0/authorize"),
        "device_authorization_endpoint": format!("{b}/{id}/oauth2/v2.0/devicecode"),
        "jwks_uri": format!("{b}/{id}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "grant_types_supported": ["authorization_code", "urn:ietf:params:oauth:grant-type:device_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "offline_access", format!("{RESOURCE}/.default")],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "nbf", "tid", "oid", "azp", "upn", "scp", "roles"],
        "tenant_region_scope": "WW",
        "cloud_instance_name": st.env.authority_host().trim_start_matches("https://"),
        "cloud_environment": st.env.as_str(),
        "msgraph_host": st.env.graph_host().trim_start_matches("https://"),
    }))
    .into_response()
}

/// `GET /{tenant}/discovery/v2.0/keys`
pub(crate) async fn keys(State(st): St, Path(t): Path<String>) -> Response {
    match tenant(&st, &t).await {
        Ok(t) => Json(st.key.jwks(&st.issuer(&t.id))).into_response(),
        Err(e) => e.into_response(),
    }
}

pub(crate) fn form(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<HashMap<String, String>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct
        .to_ascii_lowercase()
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(OAuthError::new(
            "invalid_request",
            "AADSTS900144: the request must be application/x-www-form-urlencoded",
        ));
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|_| OAuthError::new("invalid_request", "the request body is not a valid form"))?;
    Ok(pairs.into_iter().collect())
}

pub(crate) fn param<'a>(f: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    f.get(name)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            OAuthError::new(
                "invalid_request",
                format!(
                    "AADSTS900144: The request body must contain the following parameter: '{name}'."
                ),
            )
        })
}

/// Checks a delegated scope: it must name the service's resource.
pub(crate) fn delegated_scope(scope: &str) -> Result<String, OAuthError> {
    let mut resource = false;
    for s in scope.split_whitespace() {
        match s {
            "openid" | "profile" | "email" | "offline_access" => {}
            s if s == format!("{RESOURCE}/.default")
                || s == format!("{RESOURCE}/user_impersonation") =>
            {
                resource = true
            }
            other => {
                return Err(OAuthError::new(
                    "invalid_scope",
                    format!(
                        "AADSTS70011: The provided value for the input parameter 'scope' is not valid: {other}"
                    ),
                ));
            }
        }
    }
    if !resource {
        return Err(OAuthError::new(
            "invalid_scope",
            format!("AADSTS70011: the scope must include {RESOURCE}/.default"),
        ));
    }
    Ok(scope.split_whitespace().collect::<Vec<_>>().join(" "))
}

const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ23456789";

fn new_user_code() -> String {
    let mut r = rand::rng();
    (0..9)
        .map(|_| USER_CODE_ALPHABET[r.random_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect()
}

fn normalize_user_code(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `POST /{tenant}/oauth2/v2.0/devicecode`
pub(crate) async fn devicecode(
    State(st): St,
    Path(t): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match devicecode_inner(&st, &t, &headers, &body).await {
        Ok(v) => no_store(Json(v).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn devicecode_inner(
    st: &Arc<AppState>,
    t: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, OAuthError> {
    let t = tenant(st, t).await?;
    let f = form(headers, body)?;
    let client_id = param(&f, "client_id")?.to_ascii_lowercase();
    if client_id != PUBLIC_CLIENT_ID {
        let (tid, cid) = (t.id.clone(), client_id.clone());
        let known = db(st, move |s| s.application_by_app_id(&tid, &cid))
            .await?
            .is_some();
        return Err(OAuthError::new(
            "unauthorized_client",
            if known {
                format!(
                    "AADSTS7000218: the application {client_id} is not a public client; the device code flow is refused"
                )
            } else {
                format!(
                    "AADSTS700016: Application with identifier '{client_id}' was not found in the directory"
                )
            },
        ));
    }
    let scope = delegated_scope(param(&f, "scope")?)?;
    let device_code = util::random_token(32);
    let user_code = new_user_code();
    let mut approval = Approval::Pending;
    if let Some(upn) = &st.auto_approve {
        let u = upn.clone();
        if let Some(user) = db(st, move |s| s.user_by_upn(&u)).await?
            && user.tenant_id == t.id
        {
            tracing::warn!(upn = %user.upn, "device code auto-approved (--auto-approve)");
            approval = Approval::Approved(user.id);
        }
    }
    let interval = st.interval;
    let mut codes = st.device_codes.lock();
    let now = Instant::now();
    if let Err(wait) = make_room(&mut codes, &t.id, &client_id, st.max_device_codes, now) {
        drop(codes);
        tracing::warn!(tenant = %t.id, client = %client_id, "device code refused: too many unfinished sign-ins");
        // RFC 6749's error for a temporarily overloaded server, with 400 as RFC 8628 §3.2 asks
        // of the device authorization endpoint (so clients show it instead of retrying).
        let mut e = OAuthError::new(
            "temporarily_unavailable",
            format!(
                "AADSTS90055: too many sign-ins to this tenant are in progress for this application ({} unfinished device codes); try again in {wait} s",
                st.max_device_codes
            ),
        );
        e.retry_after = Some(wait);
        return Err(e);
    }
    codes.insert(
        device_code.clone(),
        DeviceCode {
            tenant_id: t.id.clone(),
            client_id,
            scope,
            user_code: user_code.clone(),
            expires: Instant::now() + Duration::from_secs(st.code_lifetime),
            interval: Duration::from_secs(interval),
            last_poll: None,
            approval,
            attempts: 0,
        },
    );
    drop(codes);
    let uri = format!("{}/devicelogin", st.base);
    Ok(json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": uri,
        "expires_in": st.code_lifetime,
        "interval": interval,
        "message": format!("To sign in, use a web browser to open the page {uri} and enter the code {user_code} to authenticate."),
    }))
}

fn no_store(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r.headers_mut()
        .insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    r
}

/// `POST /{tenant}/oauth2/v2.0/token`
pub(crate) async fn token(
    State(st): St,
    Path(t): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match token_inner(&st, &t, &headers, &body).await {
        Ok(v) => no_store(Json(v).into_response()),
        Err(e) => e.into_response(),
    }
}

async fn token_inner(
    st: &Arc<AppState>,
    t: &str,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, OAuthError> {
    let f = form(headers, body)?;
    token_dispatch(st, t, headers, &f).await
}

/// The token endpoint for a form built in process (the admin center redeeming its code and
/// renewing its tokens).
pub(crate) async fn token_from_form(
    st: &Arc<AppState>,
    t: &str,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    token_dispatch(st, t, &HeaderMap::new(), f).await
}

async fn token_dispatch(
    st: &Arc<AppState>,
    t: &str,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let f = f.clone();
    // A code asked for at `/organizations/…/authorize` is redeemed at the same authority: its
    // tenant is the signed-in person's.
    let t = match crate::authorize::code_tenant(st, t, &f)? {
        Some(tid) => tenant(st, &tid).await?,
        None => tenant(st, t).await?,
    };
    match param(&f, "grant_type")? {
        "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => {
            device_code_grant(st, &t, &f).await
        }
        "client_credentials" => client_credentials(st, &t, headers, &f).await,
        "refresh_token" => refresh(st, &t, &f).await,
        "authorization_code" => crate::authorize::redeem(st, &t, &f).await,
        other => Err(OAuthError::new(
            "unsupported_grant_type",
            format!("AADSTS70003: the grant type {other:?} is not supported"),
        )),
    }
}

async fn device_code_grant(
    st: &Arc<AppState>,
    t: &Tenant,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let client_id = param(f, "client_id")?.to_ascii_lowercase();
    let code = param(f, "device_code")?;
    let now = Instant::now();
    let (user_id, scope) = {
        let mut map = st.device_codes.lock();
        map.retain(|_, d| d.expires + EXPIRED_MEMORY > now);
        let Some(d) = map.get_mut(code) else {
            return Err(OAuthError::new(
                "bad_verification_code",
                "AADSTS70019: the device code was not recognized",
            ));
        };
        if d.tenant_id != t.id || d.client_id != client_id {
            return Err(OAuthError::new(
                "bad_verification_code",
                "AADSTS70019: the device code was not issued to this client in this tenant",
            ));
        }
        if now >= d.expires {
            map.remove(code);
            return Err(OAuthError::new(
                "expired_token",
                "AADSTS70020: the device code has expired",
            ));
        }
        match d.approval.clone() {
            Approval::Locked => {
                map.remove(code);
                return Err(OAuthError::new(
                    "expired_token",
                    "AADSTS70020: the device code was invalidated after too many failed sign-in attempts",
                ));
            }
            Approval::Declined => {
                map.remove(code);
                return Err(OAuthError::new(
                    "authorization_declined",
                    "AADSTS70000: the user declined the sign-in request",
                ));
            }
            Approval::Pending => {
                let too_fast = d
                    .last_poll
                    .is_some_and(|p| now.duration_since(p) < d.interval);
                d.last_poll = Some(now);
                if too_fast {
                    d.interval += Duration::from_secs(5);
                    return Err(OAuthError::new(
                        "slow_down",
                        format!(
                            "polled faster than the interval; poll every {} s from now on",
                            d.interval.as_secs()
                        ),
                    ));
                }
                return Err(OAuthError::new(
                    "authorization_pending",
                    "AADSTS70016: the user has not yet finished signing in",
                ));
            }
            Approval::Approved(uid) => {
                let scope = d.scope.clone();
                map.remove(code);
                (uid, scope)
            }
        }
    };
    issue_user_tokens(st, &t.id, &user_id, &client_id, &scope).await
}

pub(crate) async fn issue_user_tokens(
    st: &Arc<AppState>,
    tenant_id: &str,
    user_id: &str,
    client_id: &str,
    scope: &str,
) -> Result<Value, OAuthError> {
    let (tid, uid) = (tenant_id.to_string(), user_id.to_string());
    let user = db(st, move |s| s.user_by_id(&tid, &uid))
        .await?
        .ok_or_else(|| {
            OAuthError::new(
                "invalid_grant",
                "AADSTS50034: the user account does not exist",
            )
        })?;
    let now = util::now_unix();
    let expires_in: i64 = rand::rng().random_range(3600..=5400);
    let claims = Claims {
        aud: RESOURCE.into(),
        iss: st.issuer(tenant_id),
        iat: now,
        nbf: now,
        exp: now + expires_in,
        tid: tenant_id.into(),
        sub: user.id.clone(),
        oid: user.id.clone(),
        azp: client_id.into(),
        idtyp: "user".into(),
        scp: Some("user_impersonation".into()),
        roles: vec![],
        upn: Some(user.upn.clone()),
        ver: "2.0".into(),
        jti: util::uuid(),
    };
    let mut v = json!({
        "token_type": "Bearer",
        "scope": scope,
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": st.key.sign(&claims),
    });
    if scope.split_whitespace().any(|s| s == "offline_access") {
        let rt = util::random_token(48);
        let grant = RefreshGrant {
            tenant_id: tenant_id.into(),
            user_id: user.id.clone(),
            client_id: client_id.into(),
            scope: scope.into(),
            expires: now + REFRESH_LIFETIME,
        };
        let h = util::sha256_hex(rt.as_bytes());
        db(st, move |s| s.put_refresh(&h, &grant)).await?;
        v["refresh_token"] = json!(rt);
        v["refresh_token_expires_in"] = json!(REFRESH_LIFETIME);
    }
    Ok(v)
}

async fn refresh(
    st: &Arc<AppState>,
    t: &Tenant,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let client_id = param(f, "client_id")?.to_ascii_lowercase();
    let rt = param(f, "refresh_token")?;
    let h = util::sha256_hex(rt.as_bytes());
    let (tid, cid) = (t.id.clone(), client_id.clone());
    // Checked before it is consumed: a token presented to the wrong tenant or client stays valid
    // for its own.
    let g = match db(st, move |s| s.take_refresh(&h, &tid, &cid)).await? {
        RefreshTake::Taken(g) => g,
        RefreshTake::Missing => {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS70008: the refresh token is invalid, expired or already used",
            ));
        }
        RefreshTake::Mismatch => {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS70000: the refresh token was not issued to this client in this tenant",
            ));
        }
        RefreshTake::Expired => {
            return Err(OAuthError::new(
                "invalid_grant",
                "AADSTS700082: the refresh token has expired",
            ));
        }
    };
    let scope = match f.get("scope").filter(|s| !s.is_empty()) {
        Some(s) => delegated_scope(s)?,
        None => g.scope.clone(),
    };
    issue_user_tokens(st, &t.id, &g.user_id, &client_id, &scope).await
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let v = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v.trim())
        .ok()?;
    let s = String::from_utf8(raw).ok()?;
    let (u, p) = s.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

async fn client_credentials(
    st: &Arc<AppState>,
    t: &Tenant,
    headers: &HeaderMap,
    f: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    let (client_id, secret) = match basic_auth(headers) {
        Some(x) => x,
        None => (
            param(f, "client_id")?.to_string(),
            param(f, "client_secret")?.to_string(),
        ),
    };
    let client_id = client_id.to_ascii_lowercase();
    let scope = param(f, "scope")?;
    let graph = format!("{}/.default", st.env.graph_host());
    if scope != format!("{RESOURCE}/.default")
        && scope != graph
        && scope != "https://graph.microsoft.com/.default"
    {
        return Err(OAuthError::new(
            "invalid_scope",
            format!(
                "AADSTS1002012: The provided value for scope {scope} is not valid. Client credential flows \
                 must have a scope value with /.default suffixed to the resource identifier ({RESOURCE}/.default)."
            ),
        ));
    }
    if client_id == PUBLIC_CLIENT_ID {
        return Err(OAuthError::new(
            "unauthorized_client",
            "AADSTS700025: the client is public so neither client_secret nor client_assertion may be presented",
        ));
    }
    let (tid, cid) = (t.id.clone(), client_id.clone());
    let (app, hashes) = db(st, move |s| {
        let app = s.application_by_app_id(&tid, &cid)?;
        let h = s.secret_hashes(&tid, &cid)?;
        Ok((app, h))
    })
    .await?;
    let app = app.ok_or_else(|| {
        OAuthError::new(
            "unauthorized_client",
            format!("AADSTS700016: Application with identifier '{client_id}' was not found in the directory '{}'", t.id),
        )
    })?;
    let now = util::now_unix();
    let matched: Vec<_> = hashes
        .iter()
        .filter(|h| auth::verify_secret(&secret, &h.hash))
        .collect();
    if matched.is_empty() {
        return Err(OAuthError::invalid_client(
            "AADSTS7000215: Invalid client secret provided.",
        ));
    }
    if matched.iter().all(|h| h.end_unix <= now) {
        return Err(OAuthError::invalid_client(
            "AADSTS7000222: The provided client secret keys are expired.",
        ));
    }
    let roles: Vec<String> = if app.admin_consent {
        let mut r: Vec<String> = app
            .required_resource_access
            .iter()
            .flat_map(|ra| ra.permissions.iter().cloned())
            .collect();
        r.sort();
        r.dedup();
        r
    } else {
        vec![]
    };
    let expires_in: i64 = rand::rng().random_range(3600..=5400);
    let claims = Claims {
        aud: RESOURCE.into(),
        iss: st.issuer(&t.id),
        iat: now,
        nbf: now,
        exp: now + expires_in,
        tid: t.id.clone(),
        sub: app.id.clone(),
        oid: app.id.clone(),
        azp: app.app_id.clone(),
        idtyp: "app".into(),
        scp: None,
        roles,
        upn: None,
        ver: "2.0".into(),
        jti: util::uuid(),
    };
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": st.key.sign(&claims),
    }))
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:32em;margin:3em auto}}label{{display:block;margin:.6em 0}}\
         input{{width:100%;padding:.3em}}.err{{color:#a00}}</style></head><body><h1>{t}</h1>{body}</body></html>",
        t = util::html_escape(title)
    )
}

fn login_form(code: &str, upn: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\">{}</p>", util::html_escape(e)))
        .unwrap_or_default();
    page(
        "Sign in to cloudattach",
        &format!(
            "{err}<p>Enter the code shown by the application, then sign in and approve or decline.</p>\
             <form method=\"post\" action=\"/devicelogin\">\
             <label>Code <input name=\"user_code\" value=\"{c}\" autocomplete=\"off\"></label>\
             <label>User name <input name=\"upn\" value=\"{u}\" autocomplete=\"username\"></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\
             <button name=\"action\" value=\"approve\">Approve</button> \
             <button name=\"action\" value=\"decline\">Decline</button></form>",
            c = util::html_escape(code),
            u = util::html_escape(upn)
        ),
    )
}

/// The security headers of the `/devicelogin` page: no framing (clickjacking), no scripts, no
/// foreign form targets.
pub(crate) fn html_response(status: StatusCode, html: String) -> Response {
    let mut r = (status, Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::X_FRAME_OPTIONS,
        header::HeaderValue::from_static("DENY"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// Entra's answer for a locked account (smart lockout).
pub(crate) fn locked_message(wait: Duration) -> String {
    format!(
        "AADSTS50053: Your account is locked because you tried to sign in too many times with an incorrect user ID or password. Try again in {} seconds.",
        wait.as_secs().max(1)
    )
}

/// `GET /devicelogin`
pub(crate) async fn devicelogin_page(Query(q): Query<HashMap<String, String>>) -> Response {
    let code = q
        .get("code")
        .or_else(|| q.get("user_code"))
        .map(String::as_str)
        .unwrap_or("");
    html_response(StatusCode::OK, login_form(code, "", None))
}

/// `POST /devicelogin` (form: user_code, upn, password, action=approve|decline)
pub(crate) async fn devicelogin_submit(
    State(st): St,
    conn: Option<Extension<ConnInfo>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let addr = conn.map(|Extension(c)| c.peer.ip());
    let f = match form(&headers, &body) {
        Ok(f) => f,
        Err(e) => {
            return html_response(
                StatusCode::BAD_REQUEST,
                login_form("", "", Some(&e.description)),
            );
        }
    };
    let get = |k: &str| {
        f.get(k)
            .map(String::as_str)
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let (code, upn, password, action) = (
        get("user_code"),
        get("upn"),
        f.get("password").cloned().unwrap_or_default(),
        get("action"),
    );
    let fail =
        |msg: &str| html_response(StatusCode::BAD_REQUEST, login_form(&code, &upn, Some(msg)));
    let approve = match action.as_str() {
        "approve" => true,
        "decline" => false,
        _ => return fail("Choose Approve or Decline."),
    };
    let norm = normalize_user_code(&code);
    let now = Instant::now();
    let limits = &st.sign_in_limits;
    match limits.check(addr, &upn, now) {
        Ok(()) => {}
        Err(Refusal::AddressThrottled(wait)) => {
            let secs = wait.as_secs().max(1);
            let mut r = html_response(
                StatusCode::TOO_MANY_REQUESTS,
                login_form(
                    &code,
                    &upn,
                    Some(&format!(
                        "Too many failed sign-in attempts from your network address. Try again in {secs} seconds."
                    )),
                ),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
            return r;
        }
        Err(Refusal::AccountLocked(wait)) => return fail(&locked_message(wait)),
    }
    // Find the code and reserve one of its sign-in attempts (under the lock, so that concurrent
    // posts can't exceed the limit).
    let found = {
        let mut map = st.device_codes.lock();
        match map
            .iter_mut()
            .find(|(_, d)| normalize_user_code(&d.user_code) == norm && d.expires > now)
        {
            None => None,
            Some((k, d)) => {
                let ok = match d.approval {
                    Approval::Pending if d.attempts < MAX_SIGN_IN_ATTEMPTS => {
                        d.attempts += 1;
                        Ok(())
                    }
                    Approval::Pending | Approval::Locked => {
                        d.approval = Approval::Locked;
                        Err(
                            "Too many failed sign-in attempts: that code is no longer valid. \
                             Start the sign-in again in the application.",
                        )
                    }
                    _ => Err("That code has already been used."),
                };
                Some((k.clone(), d.tenant_id.clone(), ok))
            }
        }
    };
    let Some((dc, tenant_id, reserved)) = found else {
        limits.address_failed(addr, now);
        return fail("That code was not recognized or has expired.");
    };
    if let Err(msg) = reserved {
        limits.address_failed(addr, now);
        return fail(msg);
    }
    let failed = |msg: &str| {
        limits.address_failed(addr, now);
        if let Some(d) = st.device_codes.lock().get_mut(&dc)
            && d.approval == Approval::Pending
            && d.attempts >= MAX_SIGN_IN_ATTEMPTS
        {
            d.approval = Approval::Locked;
        }
        fail(msg)
    };
    let user = match verify_user(&st, &upn, password).await {
        Ok(u) => u,
        Err(msg) => return fail(msg),
    };
    let user = match user {
        Some(u) => u,
        // Unknown user names count like wrong passwords: the answers reveal no account.
        _ => {
            return match limits.account_failed(&upn, now) {
                Some(lockout) => failed(&format!(
                    "Wrong user name or password. {}",
                    locked_message(lockout)
                )),
                None => failed("Wrong user name or password."),
            };
        }
    };
    limits.account_succeeded(&upn);
    if user.tenant_id != tenant_id {
        return failed("This account is not in the tenant the application signs in to.");
    }
    {
        let mut map = st.device_codes.lock();
        match map.get_mut(&dc) {
            Some(d) if d.approval == Approval::Pending => {
                d.approval = if approve {
                    Approval::Approved(user.id.clone())
                } else {
                    Approval::Declined
                };
            }
            _ => {
                drop(map);
                return fail("That code has already been used.");
            }
        }
    }
    let msg = if approve {
        "You have signed in to the cloudattach application. You may now close this window."
    } else {
        "You declined the sign-in request. You may now close this window."
    };
    html_response(
        StatusCode::OK,
        page("cloudattach", &format!("<p>{msg}</p>")),
    )
}

//! The HTTP server: shared state, routes, the accept loop, the bearer-token middleware.

use crate::auth::{Caller, CallerKind, SigningKey};
use crate::error::ApiError;
use crate::faults::Faults;
use crate::identity::DeviceCodes;
use crate::store::{Store, StoreError};
use crate::{ServeOptions, actions, faults, gateway, graph, identity, read};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use cloudattach_model::Environment;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt;

/// Shared state of the service.
pub(crate) struct AppState {
    pub store: Arc<dyn Store>,
    pub key: SigningKey,
    pub base: String,
    pub env: Environment,
    pub auto_approve: Option<String>,
    pub device_codes: DeviceCodes,
    /// Unfinished device codes per application per tenant.
    pub max_device_codes: usize,
    /// Account lockout and per-address throttling of `/devicelogin`.
    pub sign_in_limits: crate::lockout::SignInLimits,
    pub interval: u64,
    pub code_lifetime: u64,
    pub faults: Faults,
    pub max_body: usize,
    /// Time a client has to send a request's headers.
    pub header_read_timeout: std::time::Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Decoded request bytes in flight, all requests together (2 × the body limit).
    pub decode_budget: crate::body::DecodeBudget,
    /// Bounds concurrent Argon2 password verifications (one per CPU).
    pub password_slots: Arc<tokio::sync::Semaphore>,
    /// Where accepted upload bodies are kept (`--capture-uploads`), and how many so far.
    pub capture: Option<(std::path::PathBuf, std::sync::atomic::AtomicU64)>,
    /// Overrides every action's timeout (`--action-timeout-secs`, tests).
    pub action_timeout_secs: Option<u64>,
    /// Wakes the connector polls waiting on a hierarchy (by row) when an action is queued.
    pub action_wakeups: std::sync::Mutex<std::collections::HashMap<i64, Arc<Notify>>>,
    /// Authorization codes, consent tickets and consents of `/authorize`.
    pub auth_codes: crate::authorize::AuthCodes,
    /// The admin center's sessions.
    pub sessions: crate::console::Sessions,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        key: SigningKey,
        base: String,
        env: Environment,
        o: &ServeOptions,
    ) -> Self {
        AppState {
            store,
            key,
            base,
            env,
            auto_approve: o.auto_approve.clone(),
            device_codes: DeviceCodes::default(),
            max_device_codes: o.max_device_codes,
            sign_in_limits: crate::lockout::SignInLimits::new(crate::lockout::LockoutPolicy {
                threshold: o.lockout_threshold,
                duration: std::time::Duration::from_secs(o.lockout_secs),
                address_failures: o.sign_in_failures_per_address,
            }),
            interval: o.device_code_interval_secs,
            code_lifetime: o.device_code_expiry_secs,
            faults: Faults::new(o),
            max_body: o.max_body_bytes,
            header_read_timeout: std::time::Duration::from_secs(o.header_read_timeout_secs),
            max_connections: o.max_connections,
            decode_budget: crate::body::DecodeBudget::new(o.max_body_bytes.saturating_mul(2)),
            password_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            capture: o
                .capture_uploads
                .clone()
                .map(|dir| (dir, std::sync::atomic::AtomicU64::new(0))),
            action_timeout_secs: o.action_timeout_secs,
            action_wakeups: Default::default(),
            auth_codes: Default::default(),
            sessions: crate::console::Sessions::new(
                std::time::Duration::from_secs(o.session_idle_secs),
                std::time::Duration::from_secs(o.session_max_secs),
            ),
        }
    }

    /// The wake-up of the connector polls of a hierarchy.
    pub fn wakeup(&self, row: i64) -> Arc<Notify> {
        self.action_wakeups
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(row)
            .or_default()
            .clone()
    }

    /// The issuer of a tenant's tokens.
    pub fn issuer(&self, tenant_id: &str) -> String {
        format!("{}/{tenant_id}/v2.0", self.base)
    }
}

pub(crate) type St = State<Arc<AppState>>;

/// Runs a store call on the blocking pool.
pub(crate) async fn db<T, F>(st: &Arc<AppState>, f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
{
    let s = st.store.clone();
    tokio::task::spawn_blocking(move || f(&*s))
        .await
        .unwrap_or_else(|e| Err(StoreError::Corrupt(format!("store task failed: {e}"))))
}

/// The connection a request came on: its peer and a handle to close it.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub kill: Arc<Notify>,
}

pub(crate) fn base_url(addr: SocketAddr) -> String {
    let host = if addr.ip().is_unspecified() {
        match addr {
            SocketAddr::V4(_) => "127.0.0.1".to_string(),
            SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// The API's routes, without layers (the console calls them in process with its caller).
pub(crate) fn api_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1.0/me", get(graph::me))
        .route(
            "/v1.0/applications",
            get(graph::list_apps).post(graph::create_app),
        )
        .route(
            "/v1.0/applications/{id}",
            get(graph::get_app)
                .patch(graph::patch_app)
                .delete(graph::delete_app),
        )
        .route(
            "/v1.0/applications/{id}/addPassword",
            post(graph::add_password),
        )
        .route(
            "/v1.0/applications/{id}/removePassword",
            post(graph::remove_password),
        )
        .route(
            "/v1.0/applications/{id}/grantAdminConsent",
            post(graph::grant_consent),
        )
        .route(
            "/v1.0/servicePrincipals",
            get(graph::list_sps).post(graph::create_sp),
        )
        .route(
            "/api/v1/tenant/settings",
            get(gateway::get_tenant_settings).put(gateway::put_tenant_settings),
        )
        .route("/api/v1/hierarchies", get(gateway::list_hierarchies))
        .route(
            "/api/v1/hierarchies/{hid}",
            get(gateway::get_hierarchy)
                .put(gateway::put_hierarchy)
                .delete(gateway::delete_hierarchy),
        )
        .route(
            "/api/v1/hierarchies/{hid}/features",
            get(gateway::list_features),
        )
        .route(
            "/api/v1/hierarchies/{hid}/features/{fid}",
            get(gateway::get_feature)
                .put(gateway::put_feature)
                .delete(gateway::delete_feature),
        )
        .route(
            "/api/v1/hierarchies/{hid}/upload/{channel}",
            post(gateway::upload).get(gateway::channel_census),
        )
        .route(
            "/api/v1/hierarchies/{hid}/upload/{channel}/keys",
            get(gateway::channel_keys),
        )
        .route(
            "/api/v1/hierarchies/{hid}/upload/ext/{fid}",
            post(gateway::upload_ext).get(gateway::ext_census),
        )
        .route(
            "/api/v1/hierarchies/{hid}/upload/ext/{fid}/keys",
            get(gateway::ext_keys),
        )
        .route("/api/v1/hierarchies/{hid}/status", get(read::status))
        .route(
            "/api/v1/hierarchies/{hid}/ext/{fid}/records",
            get(read::ext_records),
        )
        .route("/api/v1/devices", get(read::devices))
        .route("/api/v1/hierarchies/{hid}/devices/{rid}", get(read::device))
        .route("/api/v1/overview", get(read::overview))
        .route("/api/v1/reports/endpoint-analytics", get(read::ea_report))
        .route(
            "/api/v1/reports/endpoint-analytics/apps",
            get(read::ea_apps),
        )
        .route(
            "/api/v1/reports/endpoint-analytics/devices",
            get(read::ea_devices),
        )
        .route(
            "/api/v1/reports/defender/{report}",
            get(read::defender_report),
        )
        .route(
            "/api/v1/comanagement/devices",
            get(read::comanagement_devices),
        )
        .route("/api/v1/roles", get(actions::roles))
        .route("/api/v1/roleAssignments", get(actions::role_assignments))
        .route(
            "/api/v1/users/{user}/intuneRoles",
            put(actions::put_intune_roles),
        )
        .route(
            "/api/v1/hierarchies/{hid}/features/{fid}/actions",
            get(actions::get_declared).put(actions::put_declared),
        )
        .route(
            "/api/v1/hierarchies/{hid}/actions/declared",
            get(actions::hierarchy_declared),
        )
        .route(
            "/api/v1/hierarchies/{hid}/devices/{resource_id}/actions",
            post(actions::ask_device),
        )
        .route(
            "/api/v1/hierarchies/{hid}/collections/{collection_id}/actions",
            post(actions::ask_collection),
        )
        .route("/api/v1/actions", get(actions::list_actions))
        .route("/api/v1/actions/{id}", get(actions::get_action))
        .route("/api/v1/actions/{id}/answer", post(actions::answer))
        .route(
            "/api/v1/hierarchies/{hid}/connector",
            get(actions::get_connector).put(actions::put_connector),
        )
        .route(
            "/api/v1/hierarchies/{hid}/connector/actions",
            get(actions::poll),
        )
}

pub(crate) fn router(st: Arc<AppState>) -> Router {
    let api = api_routes()
        .layer(axum::middleware::from_fn(crate::query::middleware))
        .layer(from_fn_with_state(st.clone(), faults::middleware))
        .layer(from_fn_with_state(st.clone(), authenticate));
    Router::new()
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(identity::openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(identity::keys))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(identity::devicecode),
        )
        .route("/{tenant}/oauth2/v2.0/token", post(identity::token))
        .route(
            "/{tenant}/oauth2/v2.0/authorize",
            get(crate::authorize::authorize_page).post(crate::authorize::authorize_submit),
        )
        .merge(crate::console::routes())
        .route(
            "/devicelogin",
            get(identity::devicelogin_page).post(identity::devicelogin_submit),
        )
        .route("/_emulator/stats", get(faults::stats))
        .merge(api)
        .fallback(|| async { ApiError::not_found("no such endpoint").into_response() })
        .layer(axum::middleware::from_fn(json_errors))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(st)
}

/// Whether a path is one of the OAuth endpoints (error bodies `{"error","error_description"}`).
fn is_oauth_path(path: &str) -> bool {
    path == "/devicelogin"
        || path.ends_with("/oauth2/v2.0/token")
        || path.ends_with("/oauth2/v2.0/devicecode")
}

/// Turns the bodiless or text/plain error answers of the router and of axum's extractors (405,
/// an undecodable path segment, a form body over the limit, …) into Graph-style error JSON
/// (`{"error":{"code","message"}}`), or OAuth-style on the OAuth endpoints.
async fn json_errors(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let r = next.run(req).await;
    let status = r.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return r;
    }
    let plain = match r.headers().get(header::CONTENT_TYPE) {
        None => true,
        Some(v) => v
            .to_str()
            .map(|v| v.to_ascii_lowercase().starts_with("text/plain"))
            .unwrap_or(false),
    };
    if !plain {
        return r;
    }
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status == axum::http::StatusCode::METHOD_NOT_ALLOWED {
        format!("the method {method} is not allowed on this endpoint")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let mut out = if is_oauth_path(&path) {
        let error = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request"
        };
        let mut e = crate::error::OAuthError::new(error, message);
        e.status = status;
        e.into_response()
    } else {
        let code = match status.as_u16() {
            400 => "BadRequest",
            401 => "InvalidAuthenticationToken",
            403 => "Authorization_RequestDenied",
            404 => "NotFound",
            405 => "MethodNotAllowed",
            408 => "RequestTimeout",
            411 => "LengthRequired",
            413 => "RequestEntityTooLarge",
            415 => "UnsupportedMediaType",
            422 => "BadRequest",
            429 => "TooManyRequests",
            503 => "ServiceUnavailable",
            _ if status.is_server_error() => "InternalServerError",
            _ => "BadRequest",
        };
        ApiError::new(status, code, message).into_response()
    };
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// Logs method, path (never the query, headers or body: no secret reaches the log), status and
/// duration of every request at debug level.
async fn log_request(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let t = std::time::Instant::now();
    let r = next.run(req).await;
    tracing::debug!(%method, %path, status = r.status().as_u16(), ms = t.elapsed().as_millis() as u64, "request");
    r
}

/// The bearer-token check of every API endpoint.
async fn authenticate(State(st): St, mut req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).cloned();
    match caller_of(&st, auth).await {
        Ok(c) => {
            req.extensions_mut().insert(c);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn caller_of(
    st: &Arc<AppState>,
    auth: Option<header::HeaderValue>,
) -> Result<Caller, ApiError> {
    let h = auth.ok_or_else(|| {
        ApiError::unauthorized("access token is missing: send Authorization: Bearer <token>")
    })?;
    let token = h
        .to_str()
        .ok()
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not a bearer token"))?;
    let claims = st.key.verify(token).map_err(ApiError::unauthorized)?;
    // The issuer must name the token's tenant. Its host part is not compared: the signing key is
    // per data dir, so a token signed by it was issued here, possibly before a restart on
    // another port (the embedded cloud listens on an ephemeral port).
    if !claims.iss.starts_with("http") || !claims.iss.ends_with(&format!("/{}/v2.0", claims.tid)) {
        return Err(ApiError::unauthorized(
            "the token's issuer is not this tenant's issuer",
        ));
    }
    let tid = claims.tid.clone();
    let c2 = claims.clone();
    let caller = db(st, move |s| {
        let Some(t) = s.find_tenant(&tid)? else {
            return Ok(None);
        };
        if t.id != tid {
            return Ok(None);
        }
        if c2.idtyp == "app" {
            let Some(app) = s.application_by_app_id(&tid, &c2.azp)? else {
                return Ok(None);
            };
            Ok(Some(Caller {
                tenant_id: tid,
                client_id: app.app_id,
                kind: CallerKind::App {
                    permissions: c2.roles,
                },
            }))
        } else {
            let Some(u) = s.user_by_id(&tid, &c2.oid)? else {
                return Ok(None);
            };
            Ok(Some(Caller {
                tenant_id: tid,
                client_id: c2.azp,
                kind: CallerKind::User {
                    id: u.id,
                    upn: u.upn,
                    roles: u.roles,
                    intune_license: u.intune_license,
                    intune_roles: u.intune_roles,
                },
            }))
        }
    })
    .await?;
    caller.ok_or_else(|| ApiError::unauthorized("the token's tenant, user or app does not exist"))
}

/// Accepts connections until `shutdown` fires; then closes them all. At most
/// `max_connections` are open at once (further clients wait in the listen backlog), and a
/// client that does not send a request's headers within `header_read_timeout` is disconnected.
pub(crate) async fn run(
    listener: TcpListener,
    st: Arc<AppState>,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let header_timeout = st.header_read_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(st.max_connections));
    let sweeper = tokio::spawn(actions::sweep(st.clone()));
    let app = router(st);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let info = ConnInfo {
            peer,
            kill: kill.clone(),
        };
        let app = app.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(info.clone());
                    app.clone().oneshot(req.map(axum::body::Body::new))
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = kill.notified() => {}
            }
        });
    }
    sweeper.abort();
    conns.shutdown().await;
}

//! A signed-in session with the cloud: the administrator's sign-in (device authorization grant,
//! RFC 8628), the app (registered or imported), the hierarchy's onboarding, and the gateway the
//! plugins reach through [`CloudPort`], including the delta-sync engine.

use crate::client::{Api, ApiError, Body};
use crate::config::{AppImport, Config};
use crate::host::CloudPort;
use crate::site::Site;
use crate::state::{StateError, StateStore, write_private};
use cloudattach_sdk::{HostError, Method, Record, RecordSink, SyncMode, SyncStats};
use reqwest::Method as HttpMethod;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// The public client the CLI signs in as; every tenant knows it.
pub const PUBLIC_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000c11e";
/// The cloud service's resource id.
pub const RESOURCE: &str = "api://cloudattach";
/// Permissions an imported app must have, with admin consent (DOMAIN.md §7).
pub const REQUIRED_PERMISSIONS: &[(&str, &str)] = &[
    ("api://cloudattach", "CmCollectionData.read"),
    ("api://cloudattach", "CmCollectionData.write"),
    ("https://graph.microsoft.com", "Directory.Read.All"),
];
/// Records per upload request.
pub const BATCH_RECORDS: usize = 5_000;
/// Upload requests in flight at once.
pub const IN_FLIGHT: usize = 4;

thread_local! {
    /// The plugin whose step runs on this thread: the owner of the channels it uploads to.
    /// Per thread, because plugins of one `sync` wave run side by side.
    static CURRENT_PLUGIN: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// An error of a session. `Input` errors are the user's to fix (exit 2, nothing changed).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Bad input: a secret, an imported app, an account without the rights.
    #[error("{0}")]
    Input(String),
    /// The cloud refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// Sign-in did not complete.
    #[error("sign-in failed: {0}")]
    SignIn(String),
    /// Local state failed.
    #[error(transparent)]
    State(#[from] StateError),
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedTokens {
    endpoint: String,
    tenant: String,
    access_token: String,
    refresh_token: Option<String>,
    expires_at: u64,
}

/// The app the site uses to talk to the tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppCredentials {
    /// Tenant id.
    pub tenant_id: String,
    /// Client id.
    pub client_id: String,
    /// Object id (registered apps).
    #[serde(default)]
    pub object_id: Option<String>,
    /// Display name.
    pub name: String,
    /// The secret. Never printed.
    pub secret: String,
    /// Secret expiry (YYYY-MM-DD or RFC 3339).
    pub secret_expiry: String,
    /// Whether it was imported (not registered by cloudattach).
    pub imported: bool,
}

impl std::fmt::Display for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.client_id)
    }
}

/// How the person running the command is told things (stderr), and asked to sign in.
pub trait Reporter: Send + Sync {
    /// A line for the person.
    fn say(&self, message: &str);
    /// A warning.
    fn warn(&self, message: &str);
    /// A progress bar for an upload; returns a handle updated with records sent.
    fn progress(&self, channel: &str, expected: Option<u64>) -> Box<dyn Progress>;
}

/// Progress of one upload.
pub trait Progress: Send {
    /// `n` more records sent.
    fn advance(&self, n: u64);
    /// Done.
    fn finish(&self, stats: &SyncStats);
}

/// A signed-in session.
pub struct Session {
    handle: Handle,
    api: Arc<Api>,
    tenant: String,
    app: AppCredentials,
    app_token: Mutex<Option<(String, u64)>>,
    hierarchy_id: String,
    state: Arc<Mutex<StateStore>>,
    reporter: Arc<dyn Reporter>,
    expected_records: Option<u64>,
}

fn tokens_path(config: &Config) -> std::path::PathBuf {
    config.state_dir().join("tokens.json")
}
/// The registered app of one tenant of one cloud: one file each, so pointing the site at
/// another tenant or endpoint never loses the credentials of the app that owns the hierarchy
/// in the first.
fn app_path(config: &Config, api: &Api, tenant_id: &str) -> std::path::PathBuf {
    let endpoint = xxhash_rust::xxh3::xxh3_64(endpoint_key(config, api).as_bytes());
    config
        .state_dir()
        .join(format!("app-{tenant_id}-{:08x}.json", endpoint as u32))
}

/// Reads the `tid` claim of a JWT without verifying it (the cloud verifies; we only need to know
/// which tenant we signed in to).
fn token_tenant_id(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("tid").and_then(|t| t.as_str()).map(String::from)
}

fn form(fields: &[(&str, &str)]) -> Body {
    Body::Form(
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

/// Signs the administrator in: a cached token, a refreshed one, or the device authorization
/// grant (the message with the URL and code goes to the reporter).
async fn admin_sign_in(
    api: &Api,
    config: &Config,
    reporter: &dyn Reporter,
    use_cache: bool,
) -> Result<CachedTokens, SessionError> {
    let path = tokens_path(config);
    let tenant = &config.tenant;
    // The embedded cloud listens on a new port every run but keeps its keys in the state
    // directory: its tokens stay good, so they are cached under "embedded", not the URL.
    let endpoint_key = endpoint_key(config, api);
    if use_cache
        && let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(cached) = serde_json::from_str::<CachedTokens>(&text)
        && cached.endpoint == endpoint_key
        && &cached.tenant == tenant
    {
        // The embedded cloud's tokens name the previous run's port in their issuer, so an
        // access token cached by an earlier run is refused: refresh it instead.
        let embedded = matches!(config.endpoint, crate::config::Endpoint::Embedded);
        if cached.expires_at > now_secs() + 300 && !embedded {
            return Ok(cached);
        }
        if let Some(rt) = &cached.refresh_token {
            let body = form(&[
                ("grant_type", "refresh_token"),
                ("client_id", PUBLIC_CLIENT_ID),
                ("refresh_token", rt),
                ("scope", "api://cloudattach/.default offline_access"),
            ]);
            // A refused refresh token (revoked, rotated elsewhere) falls back to a new sign-in.
            if let Ok(v) = api
                .json(
                    HttpMethod::POST,
                    &format!("/{tenant}/oauth2/v2.0/token"),
                    None,
                    &body,
                )
                .await
            {
                let t = tokens_from(&endpoint_key, tenant, &v)?;
                save_tokens(&path, &t)?;
                return Ok(t);
            }
        }
    }
    let body = form(&[
        ("client_id", PUBLIC_CLIENT_ID),
        ("scope", "api://cloudattach/.default offline_access"),
    ]);
    let dc = api
        .json(
            HttpMethod::POST,
            &format!("/{tenant}/oauth2/v2.0/devicecode"),
            None,
            &body,
        )
        .await?;
    let device_code = dc
        .get("device_code")
        .and_then(|v| v.as_str())
        .ok_or_else(|| SessionError::SignIn("no device_code in the answer".into()))?;
    let mut interval = dc
        .get("interval")
        .and_then(|v| v.as_u64())
        .unwrap_or(5)
        .max(1);
    let expires_in = dc.get("expires_in").and_then(|v| v.as_u64()).unwrap_or(900);
    if let Some(m) = dc.get("message").and_then(|v| v.as_str()) {
        reporter.say(m);
    }
    let deadline = now_secs() + expires_in;
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let body = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("device_code", device_code),
        ]);
        match api
            .json(
                HttpMethod::POST,
                &format!("/{tenant}/oauth2/v2.0/token"),
                None,
                &body,
            )
            .await
        {
            Ok(v) => {
                let t = tokens_from(&endpoint_key, tenant, &v)?;
                save_tokens(&path, &t)?;
                return Ok(t);
            }
            Err(e) => match e.code() {
                "authorization_pending" if now_secs() < deadline => continue,
                "authorization_pending" | "expired_token" => {
                    return Err(SessionError::SignIn(
                        "the code expired before anyone signed in; run the command again and sign in within 15 minutes".into(),
                    ));
                }
                "slow_down" => {
                    interval += 5;
                    continue;
                }
                "authorization_declined" => {
                    return Err(SessionError::SignIn(
                        "the sign-in was declined at the verification page".into(),
                    ));
                }
                "bad_verification_code" => {
                    return Err(SessionError::SignIn(
                        "the cloud does not know this device code; run the command again".into(),
                    ));
                }
                _ => return Err(e.into()),
            },
        }
    }
}

fn endpoint_key(config: &Config, api: &Api) -> String {
    match &config.endpoint {
        crate::config::Endpoint::Embedded => "embedded".to_string(),
        crate::config::Endpoint::Url(_) => api.base().to_string(),
    }
}

fn tokens_from(
    endpoint_key: &str,
    tenant: &str,
    v: &serde_json::Value,
) -> Result<CachedTokens, SessionError> {
    let access = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .ok_or_else(|| SessionError::SignIn("no access_token in the answer".into()))?;
    Ok(CachedTokens {
        endpoint: endpoint_key.to_string(),
        tenant: tenant.to_string(),
        access_token: access.to_string(),
        refresh_token: v
            .get("refresh_token")
            .and_then(|t| t.as_str())
            .map(String::from),
        expires_at: now_secs() + v.get("expires_in").and_then(|t| t.as_u64()).unwrap_or(3600),
    })
}

fn save_tokens(path: &std::path::Path, t: &CachedTokens) -> Result<(), SessionError> {
    let text = serde_json::to_vec(t).expect("tokens serialize");
    write_private(path, &text)?;
    Ok(())
}

/// Whether a session may register an app when none is registered for the tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppPolicy {
    /// Register one (apply).
    RegisterIfMissing,
    /// Fail with an input error that says to run apply (status, sync, disable, detach).
    ExistingOnly,
}

/// Adds a password valid for a year to an app; returns the secret and its expiry.
async fn add_password(
    api: &Api,
    admin_token: &str,
    object_id: &str,
) -> Result<(String, String), SessionError> {
    let expiry = (time::OffsetDateTime::now_utc() + time::Duration::days(365))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let pw = serde_json::json!({ "passwordCredential": { "displayName": "cloudattach", "endDateTime": expiry } });
    let answer = api
        .json(
            HttpMethod::POST,
            &format!("/v1.0/applications/{object_id}/addPassword"),
            Some(admin_token),
            &Body::Json(pw.to_string().into_bytes()),
        )
        .await?;
    let secret = answer
        .get("secretText")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if secret.is_empty() {
        return Err(SessionError::SignIn(
            "the tenant returned no secret for the app".into(),
        ));
    }
    let expiry = answer
        .get("endDateTime")
        .and_then(|v| v.as_str())
        .unwrap_or(&expiry)
        .to_string();
    Ok((secret, expiry))
}

/// Signs the administrator in and checks the account. A cached token the cloud no longer
/// accepts (its data was reset, its keys changed) leads to a fresh sign-in instead of failing
/// until someone deletes the cache.
async fn signed_in_admin(
    api: &Api,
    config: &Config,
    reporter: &dyn Reporter,
) -> Result<(CachedTokens, String), SessionError> {
    let t = admin_sign_in(api, config, reporter, true).await?;
    match require_admin(api, &t.access_token).await {
        Err(SessionError::Api(e)) if e.status() == Some(401) => {
            let _ = std::fs::remove_file(tokens_path(config));
            let t = admin_sign_in(api, config, reporter, false).await?;
            let upn = require_admin(api, &t.access_token).await?;
            Ok((t, upn))
        }
        Err(e) => Err(e),
        Ok(upn) => Ok((t, upn)),
    }
}

/// The wizard's sign-in page on its own (`cloudattach init`): signs the administrator in and
/// checks the account, caching the tokens for the commands that follow. Returns the account.
pub fn sign_in(
    handle: &Handle,
    base_url: &str,
    config: &Config,
    reporter: &dyn Reporter,
) -> Result<String, SessionError> {
    let api = Api::new(base_url, crate::client::RetryPolicy::default())?;
    handle
        .block_on(signed_in_admin(&api, config, reporter))
        .map(|(_, upn)| upn)
}

/// Checks the signed-in account is a Global Administrator with an Intune license.
async fn require_admin(api: &Api, token: &str) -> Result<String, SessionError> {
    let me = api
        .json(HttpMethod::GET, "/v1.0/me", Some(token), &Body::Empty)
        .await?;
    let upn = me
        .get("userPrincipalName")
        .and_then(|v| v.as_str())
        .unwrap_or("the signed-in account")
        .to_string();
    let roles: Vec<&str> = me
        .get("roles")
        .and_then(|r| r.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let is_ga = roles
        .iter()
        .any(|r| r.eq_ignore_ascii_case("Global Administrator"));
    let licensed = me
        .get("intuneLicense")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let mut missing = vec![];
    if !is_ga {
        missing.push("the Global Administrator role");
    }
    if !licensed {
        missing.push("an Intune license");
    }
    if !missing.is_empty() {
        return Err(SessionError::Input(format!(
            "{upn} cannot attach the site: it lacks {}; sign in with a Global Administrator that has an Intune license (delete .cloudattach/tokens.json to sign in as someone else)",
            missing.join(" and ")
        )));
    }
    Ok(upn)
}

async fn client_credentials(
    api: &Api,
    tenant: &str,
    client_id: &str,
    secret: &str,
) -> Result<(String, u64), ApiError> {
    let body = form(&[
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        ("client_secret", secret),
        ("scope", "api://cloudattach/.default"),
    ]);
    let v = api
        .json(
            HttpMethod::POST,
            &format!("/{tenant}/oauth2/v2.0/token"),
            None,
            &body,
        )
        .await?;
    let token = v
        .get("access_token")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let exp = now_secs() + v.get("expires_in").and_then(|t| t.as_u64()).unwrap_or(3600);
    Ok((token, exp))
}

/// Reads an imported app's secret from its file or environment variable.
pub fn read_import_secret(app: &AppImport) -> Result<String, SessionError> {
    let secret = match (&app.secret_file, &app.secret_env) {
        (Some(f), _) => std::fs::read_to_string(f).map_err(|e| {
            SessionError::Input(format!("[cloud.app] secret_file {}: {e}", f.display()))
        })?,
        (None, Some(var)) => std::env::var(var).map_err(|_| {
            SessionError::Input(format!(
                "[cloud.app] secret_env: the environment variable {var} is not set"
            ))
        })?,
        (None, None) => {
            return Err(SessionError::Input(
                "[cloud.app] needs secret_file or secret_env".into(),
            ));
        }
    };
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        return Err(SessionError::Input(
            "[cloud.app] the secret is empty".into(),
        ));
    }
    Ok(secret)
}

/// Checks the form of an App ID URI: `api://{tenant id}/{name}` or `https://{domain}/{name}`.
pub fn check_app_id_uri(uri: &str, tenant_id: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "[cloud.app] app_id_uri = {uri:?}: {why}; expected api://{tenant_id}/<name> or https://<verified domain>/<name>"
        ))
    };
    if let Some(rest) = uri.strip_prefix("api://") {
        let Some((tid, name)) = rest.split_once('/') else {
            return bad("no name after the tenant id");
        };
        if !tid.eq_ignore_ascii_case(tenant_id) {
            return bad("the tenant id in it is not the app's tenant_id");
        }
        if name.is_empty() || name.contains(['/', ' ', '?', '#']) {
            return bad("the name part is empty or has '/', spaces, '?' or '#'");
        }
        Ok(())
    } else if let Some(rest) = uri.strip_prefix("https://") {
        let Some((domain, name)) = rest.split_once('/') else {
            return bad("no name after the domain");
        };
        if !domain.contains('.')
            || domain.contains([' ', ':', '@'])
            || name.is_empty()
            || name.contains([' ', '?', '#'])
        {
            return bad("the domain or the name is not well formed");
        }
        Ok(())
    } else {
        bad("it must start with api:// or https://")
    }
}

/// Parses `YYYY-MM-DD` (or an RFC 3339 time) into days from today (negative = past).
pub fn days_until(expiry: &str) -> Option<i64> {
    let date = time::Date::parse(
        expiry.get(..10)?,
        &time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    let today = time::OffsetDateTime::now_utc().date();
    Some((date - today).whole_days())
}

impl Session {
    /// Signs in (cached token, refresh, or device code) as a Global Administrator with an Intune
    /// license, then imports the configured app or uses the registered one — registering it if
    /// `policy` allows: only apply registers; commands that read or turn things off use the app
    /// apply registered. Onboarding is [`Session::onboard`].
    pub fn connect(
        handle: Handle,
        base_url: &str,
        config: &Config,
        site: &Site,
        state: Arc<Mutex<StateStore>>,
        reporter: Arc<dyn Reporter>,
        policy: AppPolicy,
    ) -> Result<Session, SessionError> {
        // Validate what needs no network first: an import problem is an input error. The
        // warnings (a secret about to expire) are the caller's to show, as for every command.
        let import = match &config.app {
            Some(app) => {
                crate::config::validate_app_offline(config).map_err(SessionError::Input)?;
                Some((app.clone(), read_import_secret(app)?))
            }
            None => None,
        };
        let api = Arc::new(Api::new(base_url, crate::client::RetryPolicy::default())?);
        let tenant = config.tenant.clone();
        let (tokens, upn) = handle.block_on(signed_in_admin(&api, config, reporter.as_ref()))?;
        reporter.say(&format!("signed in as {upn}"));
        let tenant_id = token_tenant_id(&tokens.access_token).unwrap_or_else(|| tenant.clone());
        let app = match import {
            Some((app, secret)) => handle.block_on(validate_import(
                &api,
                &tenant,
                &tokens.access_token,
                &app,
                secret,
            ))?,
            None => handle.block_on(ensure_registered_app(
                &api,
                config,
                site,
                &tenant_id,
                &tokens.access_token,
                reporter.as_ref(),
                policy,
            ))?,
        };
        let session = Session {
            handle,
            api,
            tenant,
            app,
            app_token: Mutex::new(None),
            hierarchy_id: site.info.hierarchy_id.clone(),
            state,
            reporter,
            expected_records: site.device_count().ok(),
        };
        Ok(session)
    }

    /// Onboards (or updates) the hierarchy in the tenant; idempotent.
    pub fn onboard(
        &self,
        site: &Site,
        environment: cloudattach_sdk::Environment,
    ) -> Result<(), SessionError> {
        let body = serde_json::json!({
            "site_code": site.info.code,
            "site_name": site.info.name,
            "site_version": site.info.version.to_string(),
            "environment": environment.as_str(),
            "app_id": self.app.client_id,
        });
        match self.gateway_json(HttpMethod::PUT, "", Some(&body)) {
            Ok(_) => Ok(()),
            // The hierarchy belongs to another app registration of the tenant (attached from
            // another directory, or state lost): say how to get out instead of a bare 403.
            Err(SessionError::Api(e)) if e.status() == Some(403) => {
                Err(SessionError::Input(format!(
                    "hierarchy {} is attached to tenant {} with another app than {}: import that app in [cloud.app], or delete its registration in the tenant and apply again ({e})",
                    site.info.hierarchy_id, self.tenant, self.app
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the hierarchy from the tenant.
    pub fn offboard(&self) -> Result<(), SessionError> {
        match self.gateway_json(HttpMethod::DELETE, "", None) {
            Ok(_) => Ok(()),
            Err(SessionError::Api(e)) if e.status() == Some(404) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Marks the plugin whose step runs now.
    pub fn set_current_plugin(&self, id: &str) {
        CURRENT_PLUGIN.with(|c| *c.borrow_mut() = id.to_string());
    }

    /// The app in use.
    pub fn app(&self) -> &AppCredentials {
        &self.app
    }

    /// Requests sent, retries and bytes.
    pub fn client_stats(&self) -> (u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.api.stats.requests.load(Relaxed),
            self.api.stats.retries.load(Relaxed),
            self.api.stats.bytes_sent.load(Relaxed),
        )
    }

    fn app_bearer(&self) -> Result<String, SessionError> {
        let mut guard = self.app_token.lock().expect("token lock");
        if let Some((t, exp)) = guard.as_ref()
            && *exp > now_secs() + 300
        {
            return Ok(t.clone());
        }
        let (t, exp) = self.handle.block_on(client_credentials(
            &self.api,
            &self.tenant,
            &self.app.client_id,
            &self.app.secret,
        ))?;
        *guard = Some((t.clone(), exp));
        Ok(t)
    }

    fn gateway_path(&self, path: &str) -> String {
        if path.is_empty() {
            format!("/api/v1/hierarchies/{}", self.hierarchy_id)
        } else {
            format!(
                "/api/v1/hierarchies/{}/{}",
                self.hierarchy_id,
                path.trim_start_matches('/')
            )
        }
    }

    /// A gateway call for this hierarchy with the app's token.
    pub fn gateway_json(
        &self,
        method: HttpMethod,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, SessionError> {
        let token = self.app_bearer()?;
        let body = match body {
            Some(b) => Body::Json(serde_json::to_vec(b).expect("json")),
            None => Body::Empty,
        };
        let url = self.gateway_path(path);
        Ok(self
            .handle
            .block_on(self.api.json(method, &url, Some(&token), &body))?)
    }
}

async fn validate_import(
    api: &Api,
    tenant: &str,
    admin_token: &str,
    app: &AppImport,
    secret: String,
) -> Result<AppCredentials, SessionError> {
    match client_credentials(api, &app.tenant_id, &app.client_id, &secret).await {
        Ok(_) => {}
        Err(e) if e.status().is_some_and(|s| (400..500).contains(&s)) => {
            return Err(SessionError::Input(format!(
                "[cloud.app] the tenant refused the secret of app {} ({}): {}; check secret_file/secret_env and client_id",
                app.name,
                app.client_id,
                e.code()
            )));
        }
        Err(e) => return Err(e.into()),
    }
    let filter = format!(
        "/v1.0/applications?$filter=appId%20eq%20'{}'",
        app.client_id
    );
    let list = api
        .json(HttpMethod::GET, &filter, Some(admin_token), &Body::Empty)
        .await?;
    let Some(found) = list
        .get("value")
        .and_then(|v| v.as_array())
        .and_then(|a| a.first())
        .cloned()
    else {
        return Err(SessionError::Input(format!(
            "[cloud.app] tenant {tenant} has no app with client_id {}; check client_id and tenant_id",
            app.client_id
        )));
    };
    let uris: Vec<&str> = found
        .get("identifierUris")
        .and_then(|u| u.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    if !uris.iter().any(|u| *u == app.app_id_uri) {
        return Err(SessionError::Input(format!(
            "[cloud.app] app_id_uri {} is not an identifier URI of app {} (it has: {})",
            app.app_id_uri,
            app.name,
            if uris.is_empty() {
                "none".to_string()
            } else {
                uris.join(", ")
            }
        )));
    }
    let mut granted: Vec<(String, String)> = vec![];
    for r in found
        .get("requiredResourceAccess")
        .and_then(|r| r.as_array())
        .into_iter()
        .flatten()
    {
        let res = r
            .get("resource")
            .and_then(|x| x.as_str())
            .unwrap_or_default();
        for p in r
            .get("permissions")
            .and_then(|x| x.as_array())
            .into_iter()
            .flatten()
        {
            if let Some(p) = p.as_str() {
                granted.push((res.to_string(), p.to_string()));
            }
        }
    }
    let missing: Vec<String> = REQUIRED_PERMISSIONS
        .iter()
        .filter(|(r, p)| {
            !granted
                .iter()
                .any(|(gr, gp)| gr == r && gp.eq_ignore_ascii_case(p))
        })
        .map(|(r, p)| format!("{p} ({r})"))
        .collect();
    if !missing.is_empty() {
        return Err(SessionError::Input(format!(
            "[cloud.app] app {} lacks the permission(s) {}; add them to the app registration and grant admin consent",
            app.name,
            missing.join(", ")
        )));
    }
    if found.get("adminConsentGranted").and_then(|v| v.as_bool()) != Some(true) {
        return Err(SessionError::Input(format!(
            "[cloud.app] app {} has no admin consent for its permissions; a Global Administrator must grant it",
            app.name
        )));
    }
    Ok(AppCredentials {
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        object_id: found.get("id").and_then(|v| v.as_str()).map(String::from),
        name: app.name.clone(),
        secret,
        secret_expiry: app.secret_expiry.clone(),
        imported: true,
    })
}

async fn ensure_registered_app(
    api: &Api,
    config: &Config,
    site: &Site,
    tenant_id: &str,
    admin_token: &str,
    reporter: &dyn Reporter,
    policy: AppPolicy,
) -> Result<AppCredentials, SessionError> {
    let path = app_path(config, api, tenant_id);
    // State directories from before one file per tenant and endpoint kept a single `app.json`.
    let legacy = config.state_dir().join("app.json");
    if !path.exists()
        && let Ok(text) = std::fs::read_to_string(&legacy)
        && serde_json::from_str::<AppCredentials>(&text).is_ok_and(|a| a.tenant_id == tenant_id)
    {
        let _ = std::fs::rename(&legacy, &path);
    }
    // Reuse the app registered on an earlier run while it exists in the tenant; a secret that
    // expires within 30 days gets a new password on the same app, so the hierarchy keeps its
    // owner.
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(mut app) = serde_json::from_str::<AppCredentials>(&text)
        && !app.imported
        && app.tenant_id == tenant_id
    {
        let filter = format!(
            "/v1.0/applications?$filter=appId%20eq%20'{}'",
            app.client_id
        );
        let list = api
            .json(HttpMethod::GET, &filter, Some(admin_token), &Body::Empty)
            .await?;
        let found = list
            .get("value")
            .and_then(|v| v.as_array())
            .and_then(|a| a.first())
            .cloned();
        if let Some(found) = found {
            if days_until(&app.secret_expiry).is_some_and(|d| d > 30) {
                return Ok(app);
            }
            let object_id = found
                .get("id")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string();
            let (secret, expiry) = add_password(api, admin_token, &object_id).await?;
            app.secret = secret;
            app.secret_expiry = expiry;
            write_private(&path, &serde_json::to_vec(&app).expect("json"))?;
            reporter.say(&format!(
                "renewed the secret of app {app}; it expires on {}",
                app.secret_expiry
            ));
            return Ok(app);
        }
    }
    if policy == AppPolicy::ExistingOnly {
        return Err(SessionError::Input(format!(
            "this site is not attached to tenant {} from this directory (no app registered by `cloudattach apply`): run `cloudattach apply` first",
            config.tenant
        )));
    }
    let name = format!("ConfigMgrService-{}", site.info.code);
    let short = site.info.hierarchy_id.split('-').next().unwrap_or("site");
    let body = serde_json::json!({
        "displayName": name,
        "identifierUris": [format!("api://{tenant_id}/{name}-{short}")],
        "requiredResourceAccess": [
            {"resource": "api://cloudattach", "permissions": ["CmCollectionData.read", "CmCollectionData.write"]},
            {"resource": "https://graph.microsoft.com", "permissions": ["Directory.Read.All"]}
        ]
    });
    let created = api
        .json(
            HttpMethod::POST,
            "/v1.0/applications",
            Some(admin_token),
            &Body::Json(body.to_string().into_bytes()),
        )
        .await?;
    let object_id = created
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let client_id = created
        .get("appId")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let sp = serde_json::json!({ "appId": client_id });
    api.json(
        HttpMethod::POST,
        "/v1.0/servicePrincipals",
        Some(admin_token),
        &Body::Json(sp.to_string().into_bytes()),
    )
    .await?;
    let (secret, secret_expiry) = add_password(api, admin_token, &object_id).await?;
    api.json(
        HttpMethod::POST,
        &format!("/v1.0/applications/{object_id}/grantAdminConsent"),
        Some(admin_token),
        &Body::Empty,
    )
    .await?;
    let app = AppCredentials {
        tenant_id: tenant_id.to_string(),
        client_id,
        object_id: Some(object_id),
        name,
        secret,
        secret_expiry,
        imported: false,
    };
    write_private(&path, &serde_json::to_vec(&app).expect("json"))?;
    reporter.say(&format!(
        "registered app {app} in the tenant, with admin consent"
    ));
    Ok(app)
}

fn host_error(e: SessionError) -> HostError {
    match e {
        SessionError::Api(ApiError::Status {
            status,
            code,
            message,
            method,
            path,
        }) => HostError::new(
            format!("http-{status}"),
            format!("{method} {path}: {status} {code}: {message}"),
        ),
        other => HostError::new("cloud", other.to_string()),
    }
}

fn to_http(m: Method) -> HttpMethod {
    match m {
        Method::Get => HttpMethod::GET,
        Method::Put => HttpMethod::PUT,
        Method::Post => HttpMethod::POST,
        Method::Delete => HttpMethod::DELETE,
    }
}

impl CloudPort for Session {
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        self.gateway_json(to_http(method), path, body)
            .map_err(host_error)
    }

    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let owner = CURRENT_PLUGIN.with(|c| c.borrow().clone());
        let known = {
            let store = self.state.lock().expect("state lock");
            let state_err = |e: StateError| HostError::new("state", e.to_string());
            if !owner.is_empty() {
                store
                    .set_meta(&crate::apply::channel_owner_key(channel), &owner)
                    .map_err(state_err)?;
            }
            store.channel_hashes(channel).map_err(state_err)?
        };
        let expected = if channel == "devices" {
            self.expected_records
        } else {
            None
        };
        Ok(Box::new(GatewaySink {
            session: self,
            channel: channel.to_string(),
            mode,
            known,
            batch_records: 0,
            batch: Vec::with_capacity(BATCH_RECORDS),
            batch_bytes: Vec::with_capacity(BATCH_RECORDS * 400),
            in_flight: VecDeque::new(),
            stats: SyncStats::default(),
            progress: self.reporter.progress(channel, expected),
        }))
    }

    fn log(&self, message: &str) {
        self.reporter.say(message);
    }
}

/// An acknowledged batch: records sent, hashes to record, deletions, the cloud's answer.
type BatchResult = Result<(u64, serde_json::Value), HostError>;

/// The delta-sync engine for one channel: hashes each record, keeps the changed ones, sends
/// them in compressed batches with a few requests in flight, and records every acknowledged
/// batch in the state store before counting it.
struct GatewaySink<'a> {
    session: &'a Session,
    channel: String,
    mode: SyncMode,
    /// Hashes acknowledged before; what is left at the end was not pushed again: deletions.
    known: HashMap<String, u64>,
    /// Records in the batch being built.
    batch_records: u64,
    /// Hashes the batch changes (a full resend of an unchanged record changes none).
    batch: Vec<(String, u64)>,
    batch_bytes: Vec<u8>,
    in_flight: VecDeque<JoinHandle<BatchResult>>,
    stats: SyncStats,
    progress: Box<dyn Progress>,
}

impl GatewaySink<'_> {
    fn flush(&mut self, deletes: Vec<String>) -> Result<(), HostError> {
        if self.batch_records == 0 && deletes.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.batch_bytes.len() + 64);
        body.extend_from_slice(b"{\"upserts\":[");
        body.extend_from_slice(&self.batch_bytes);
        body.extend_from_slice(b"],\"deletes\":");
        body.extend_from_slice(&serde_json::to_vec(&deletes).expect("json"));
        body.push(b'}');
        self.batch_bytes.clear();
        let upserts = std::mem::take(&mut self.batch);
        let records = std::mem::take(&mut self.batch_records) + deletes.len() as u64;
        let token = self.session.app_bearer().map_err(host_error)?;
        let api = self.session.api.clone();
        let path = self
            .session
            .gateway_path(&format!("upload/{}", self.channel));
        let (state, channel) = (self.session.state.clone(), self.channel.clone());
        // Compressing, sending and recording the acknowledged batch happen off the thread that
        // reads the inventory, so it goes on producing the next batch meanwhile.
        let handle = self.session.handle.spawn(async move {
            let blocking = |e: tokio::task::JoinError| HostError::new("upload", e.to_string());
            let compressed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&body, 1))
                .await
                .map_err(blocking)?
                .map_err(|e| HostError::new("compress", e.to_string()))?;
            let answer = api
                .json(
                    HttpMethod::POST,
                    &path,
                    Some(&token),
                    &Body::JsonZstd(compressed),
                )
                .await
                .map_err(|e| host_error(e.into()))?;
            // The batch is recorded as acknowledged before it counts: a crash after this point
            // loses nothing, one before it resends the batch, which the cloud finds unchanged.
            tokio::task::spawn_blocking(move || {
                state
                    .lock()
                    .expect("state lock")
                    .ack_batch(&channel, &upserts, &deletes)
                    .map_err(|e| HostError::new("state", e.to_string()))
            })
            .await
            .map_err(blocking)??;
            Ok((records, answer))
        });
        self.in_flight.push_back(handle);
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), HostError> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (n, answer) = self
            .session
            .handle
            .block_on(h)
            .map_err(|e| HostError::new("upload", e.to_string()))??;
        self.stats.sent += n;
        let count = |k: &str| answer.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        self.stats.upserted += count("upserted");
        self.stats.deleted += count("deleted");
        self.stats.unchanged += count("unchanged");
        self.progress.advance(n);
        Ok(())
    }
}

impl RecordSink for GatewaySink<'_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        let json = serde_json::to_vec(&record.value)
            .map_err(|e| HostError::new("record", e.to_string()))?;
        let hash = xxhash_rust::xxh3::xxh3_64(&json);
        self.stats.total += 1;
        let previous = self.known.remove(&record.key);
        if self.mode == SyncMode::Delta && previous == Some(hash) {
            return Ok(());
        }
        if self.batch_records > 0 {
            self.batch_bytes.push(b',');
        }
        self.batch_bytes.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut self.batch_bytes, &record.key).expect("json");
        self.batch_bytes.extend_from_slice(b",\"record\":");
        self.batch_bytes.extend_from_slice(&json);
        self.batch_bytes.push(b'}');
        if previous != Some(hash) {
            self.batch.push((record.key, hash));
        }
        self.batch_records += 1;
        if self.batch_records as usize >= BATCH_RECORDS {
            self.flush(vec![])?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<SyncStats, HostError> {
        let mut gone: Vec<String> = self.known.drain().map(|(k, _)| k).collect();
        gone.sort_unstable();
        self.flush(vec![])?;
        for chunk in gone.chunks(BATCH_RECORDS) {
            self.flush(chunk.to_vec())?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.progress.finish(&self.stats);
        Ok(self.stats)
    }
}

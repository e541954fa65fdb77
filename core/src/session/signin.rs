//! The administrator's sign-in: the device authorization grant (RFC 8628), with a token cache
//! (mode 0600) keyed by tenant and endpoint; a cached token the cloud refuses falls back to a
//! fresh sign-in.

use super::admin::require_admin;
use super::docs::{DeviceCodeAnswer, TokenAnswer};
use super::{PUBLIC_CLIENT_ID, SessionError, now_secs};
use crate::client::{Api, ApiError, Body};
use crate::config::Config;
use crate::report::Reporter;
use crate::state::write_private;
use reqwest::Method as HttpMethod;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The cached tokens. No `Debug`: they are credentials.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct CachedTokens {
    pub(super) endpoint: String,
    pub(super) tenant: String,
    pub(super) access_token: String,
    pub(super) refresh_token: Option<String>,
    pub(super) expires_at: u64,
}

pub(super) fn tokens_path(config: &Config) -> std::path::PathBuf {
    config.state_dir().join("tokens.json")
}
/// Reads the `tid` claim of a JWT without verifying it (the cloud verifies; we only need to know
/// which tenant we signed in to).
pub(super) fn token_tenant_id(jwt: &str) -> Option<String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    #[derive(Deserialize)]
    struct Claims {
        tid: Option<String>,
    }
    serde_json::from_slice::<Claims>(&bytes).ok()?.tid
}

/// A request to the tenant's token endpoint.
pub(super) async fn token(api: &Api, tenant: &str, body: &Body) -> Result<TokenAnswer, ApiError> {
    api.doc(
        HttpMethod::POST,
        &format!("/{tenant}/oauth2/v2.0/token"),
        None,
        body,
    )
    .await
}

pub(super) fn form(fields: &[(&str, &str)]) -> Body {
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
    cached_sign_in(api, config, reporter, use_cache, &tokens_path(config)).await
}

/// The device authorization grant with the token cache at `path`: a cached token, a refreshed
/// one, or a new sign-in (the message with the URL and code goes to the reporter).
pub(super) async fn cached_sign_in(
    api: &Api,
    config: &Config,
    reporter: &dyn Reporter,
    use_cache: bool,
    path: &std::path::Path,
) -> Result<CachedTokens, SessionError> {
    let path = path.to_path_buf();
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
            if let Ok(v) = token(api, tenant, &body).await {
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
    let dc: DeviceCodeAnswer = api
        .doc(
            HttpMethod::POST,
            &format!("/{tenant}/oauth2/v2.0/devicecode"),
            None,
            &body,
        )
        .await
        .map_err(|e| match &e {
            // The cloud bounds unfinished sign-ins per application and tenant.
            ApiError::Status { code, message, .. } if code == "temporarily_unavailable" => {
                SessionError::SignIn(format!(
                    "the cloud refuses new sign-ins to {tenant} for now: {message}"
                ))
            }
            _ => e.into(),
        })?;
    let device_code = dc
        .device_code
        .as_deref()
        .ok_or_else(|| SessionError::SignIn("no device_code in the answer".into()))?;
    let mut interval = dc.interval.unwrap_or(5).max(1);
    let expires_in = dc.expires_in.unwrap_or(900);
    if let Some(m) = &dc.message {
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
        match token(api, tenant, &body).await {
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

pub(super) fn endpoint_key(config: &Config, api: &Api) -> String {
    match &config.endpoint {
        crate::config::Endpoint::Embedded => "embedded".to_string(),
        crate::config::Endpoint::Url(_) => api.base().to_string(),
    }
}

fn tokens_from(
    endpoint_key: &str,
    tenant: &str,
    v: &TokenAnswer,
) -> Result<CachedTokens, SessionError> {
    let access = v
        .access_token
        .as_deref()
        .ok_or_else(|| SessionError::SignIn("no access_token in the answer".into()))?;
    Ok(CachedTokens {
        endpoint: endpoint_key.to_string(),
        tenant: tenant.to_string(),
        access_token: access.to_string(),
        refresh_token: v.refresh_token.clone(),
        expires_at: now_secs() + v.expires_in.unwrap_or(3600),
    })
}

fn save_tokens(path: &std::path::Path, t: &CachedTokens) -> Result<(), SessionError> {
    let text = serde_json::to_vec(t).expect("tokens serialize");
    // A first sign-in (init --sign-in in a fresh directory) comes before anything else has
    // made the state directory; only its owner may list it, as only they may read the cache.
    if let Some(dir) = path.parent()
        && !dir.is_dir()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder
            .create(dir)
            .map_err(|source| crate::state::StateError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    write_private(path, &text)?;
    Ok(())
}

/// Signs the administrator in and checks the account. A cached token the cloud no longer
/// accepts (its data was reset, its keys changed) leads to a fresh sign-in instead of failing
/// until someone deletes the cache.
pub(super) async fn signed_in_admin(
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

/// What [`forget_tokens`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Forgotten {
    /// The cache file.
    pub file: std::path::PathBuf,
    /// The sign-ins removed, as `(tenant, endpoint)`.
    pub removed: Vec<(String, String)>,
    /// A sign-in kept because it is for another tenant or endpoint, as `(tenant, endpoint)`.
    pub kept: Option<(String, String)>,
}

/// Forgets the administrator's cached tokens: those of the configured tenant and endpoint, or
/// with `all` whatever the cache holds. The next command that needs the administrator signs in
/// afresh. The app's credentials (`app-*.json`) are not tokens of a person and are kept: they
/// belong to the hierarchy the tenant knows.
pub fn forget_tokens(config: &Config, all: bool) -> std::io::Result<Forgotten> {
    let file = tokens_path(config);
    let mut out = Forgotten {
        file: file.clone(),
        removed: vec![],
        kept: None,
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let endpoint = match &config.endpoint {
        crate::config::Endpoint::Embedded => "embedded".to_string(),
        crate::config::Endpoint::Url(u) => u.trim_end_matches('/').to_string(),
    };
    // A cache this version cannot read holds tokens all the same: it goes with --all only.
    let cached = serde_json::from_str::<CachedTokens>(&text)
        .ok()
        .map(|c| (c.tenant, c.endpoint));
    let ours = cached
        .as_ref()
        .is_some_and(|(t, e)| t == &config.tenant && e == &endpoint);
    if all || ours {
        std::fs::remove_file(&file)?;
        out.removed
            .push(cached.unwrap_or_else(|| ("unknown".into(), "unknown".into())));
    } else {
        out.kept = cached.or_else(|| Some(("unknown".into(), "unknown".into())));
    }
    Ok(out)
}

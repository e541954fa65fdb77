//! The app the site uses to talk to the tenant: registered by `apply` (one credentials file per
//! tenant and endpoint; a secret that expires within 30 days gets a new password on the same
//! app; a legacy `app.json` is carried over) or imported from `[cloud.app]` and validated
//! against the tenant (secret, App ID URI, permissions, consent). The offline import rules live
//! in [`crate::app_import`].

use super::docs::{Application, Applications, PasswordAnswer};
use super::signin::{endpoint_key, form, token};
use super::{AppPolicy, SessionError, now_secs};
use crate::app_import::days_until;
use crate::client::{Api, ApiError, Body};
use crate::config::{AppImport, Config, Secret};
use crate::report::Reporter;
use crate::site::Site;
use crate::state::write_private;
use reqwest::Method as HttpMethod;
use serde::{Deserialize, Serialize};

/// Permissions an imported app must have, with admin consent.
pub const REQUIRED_PERMISSIONS: &[(&str, &str)] = &[
    ("api://cloudattach", "CmCollectionData.read"),
    ("api://cloudattach", "CmCollectionData.write"),
    ("https://graph.microsoft.com", "Directory.Read.All"),
];

/// The app the site uses to talk to the tenant. Its `Debug` leaves the secret out.
#[derive(Clone, Serialize, Deserialize)]
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

impl std::fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppCredentials")
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field("name", &self.name)
            .field("secret", &"…")
            .field("secret_expiry", &self.secret_expiry)
            .field("imported", &self.imported)
            .finish()
    }
}

impl std::fmt::Display for AppCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.client_id)
    }
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
    let answer: PasswordAnswer = api
        .doc(
            HttpMethod::POST,
            &format!("/v1.0/applications/{object_id}/addPassword"),
            Some(admin_token),
            &Body::Json(pw.to_string().into_bytes()),
        )
        .await?;
    let secret = answer.secret_text.unwrap_or_default();
    if secret.is_empty() {
        return Err(SessionError::SignIn(
            "the tenant returned no secret for the app".into(),
        ));
    }
    let expiry = answer.end_date_time.unwrap_or(expiry);
    Ok((secret, expiry))
}

pub(super) async fn client_credentials(
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
    let v = token(api, tenant, &body).await?;
    let token = v.access_token.unwrap_or_default();
    let exp = now_secs() + v.expires_in.unwrap_or(3600);
    Ok((token, exp))
}

/// The tenant's app registration with this client id, if there is one.
async fn find_app(
    api: &Api,
    admin_token: &str,
    client_id: &str,
) -> Result<Option<Application>, ApiError> {
    let filter = format!("/v1.0/applications?$filter=appId%20eq%20'{client_id}'");
    let list: Applications = api
        .doc(HttpMethod::GET, &filter, Some(admin_token), &Body::Empty)
        .await?;
    Ok(list.value.into_iter().next())
}

pub(super) async fn validate_import(
    api: &Api,
    tenant: &str,
    admin_token: &str,
    app: &AppImport,
    secret: &Secret,
) -> Result<AppCredentials, SessionError> {
    match client_credentials(api, &app.tenant_id, &app.client_id, secret.expose()).await {
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
    let Some(found) = find_app(api, admin_token, &app.client_id).await? else {
        return Err(SessionError::Input(format!(
            "[cloud.app] tenant {tenant} has no app with client_id {}; check client_id and tenant_id",
            app.client_id
        )));
    };
    let uris = &found.identifier_uris;
    if !uris.contains(&app.app_id_uri) {
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
    let granted: Vec<(&str, &str)> = found
        .required_resource_access
        .iter()
        .flat_map(|r| {
            r.permissions
                .iter()
                .map(|p| (r.resource.as_str(), p.as_str()))
        })
        .collect();
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
    if found.admin_consent_granted != Some(true) {
        return Err(SessionError::Input(format!(
            "[cloud.app] app {} has no admin consent for its permissions; a Global Administrator must grant it",
            app.name
        )));
    }
    Ok(AppCredentials {
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        object_id: found.id.clone(),
        name: app.name.clone(),
        secret: secret.expose().to_string(),
        secret_expiry: app.secret_expiry.clone(),
        imported: true,
    })
}

pub(super) async fn ensure_registered_app(
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
        && let Some(found) = find_app(api, admin_token, &app.client_id).await?
    {
        if days_until(&app.secret_expiry).is_some_and(|d| d > 30) {
            return Ok(app);
        }
        let object_id = found.id.unwrap_or_default();
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
    let created: Application = api
        .doc(
            HttpMethod::POST,
            "/v1.0/applications",
            Some(admin_token),
            &Body::Json(body.to_string().into_bytes()),
        )
        .await?;
    let object_id = created.id.unwrap_or_default();
    let client_id = created.app_id.unwrap_or_default();
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

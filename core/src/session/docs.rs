//! The identity and directory documents the session reads (Entra ID's token endpoints, Graph's
//! `/me` and applications), typed. Every field is optional or defaulted: the session decides
//! what a missing one means, with the message it always gave.

use serde::Deserialize;

/// A token endpoint's answer (device code, refresh token, client credentials). No `Debug`: it
/// carries tokens.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct TokenAnswer {
    /// The access token.
    pub access_token: Option<String>,
    /// The refresh token (delegated grants with `offline_access`).
    pub refresh_token: Option<String>,
    /// Seconds until the access token expires.
    pub expires_in: Option<u64>,
}

/// The device authorization endpoint's answer (RFC 8628 §3.2). No `Debug`: the device code is a
/// credential until it expires.
#[derive(Default, Deserialize)]
#[serde(default)]
pub struct DeviceCodeAnswer {
    /// The device code to poll with.
    pub device_code: Option<String>,
    /// Seconds between polls.
    pub interval: Option<u64>,
    /// Seconds until the code expires.
    pub expires_in: Option<u64>,
    /// What to tell the person (the URL and the code).
    pub message: Option<String>,
}

/// Graph's `/v1.0/me`, with the tenant's view of the account.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Me {
    /// The account.
    pub user_principal_name: Option<String>,
    /// Directory roles.
    pub roles: Vec<String>,
    /// Whether the account has an Intune license.
    pub intune_license: bool,
}

/// A list of applications (`/v1.0/applications?$filter=…`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Applications {
    /// The applications found.
    pub value: Vec<Application>,
}

/// An application registration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Application {
    /// Object id.
    pub id: Option<String>,
    /// Client id.
    pub app_id: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// App ID URIs.
    pub identifier_uris: Vec<String>,
    /// Permissions it asks for, per resource.
    pub required_resource_access: Vec<ResourceAccess>,
    /// Whether an administrator consented to them.
    pub admin_consent_granted: Option<bool>,
    /// Its secrets' public metadata (never the secrets).
    pub password_credentials: Vec<PasswordCredential>,
}

impl Application {
    /// `name (client id)`, as messages name an app.
    pub fn label(&self) -> String {
        format!(
            "{} ({})",
            self.display_name.as_deref().unwrap_or("(no name)"),
            self.app_id.as_deref().unwrap_or_default()
        )
    }
}

/// The public metadata of one of an app's secrets.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PasswordCredential {
    /// The first characters of the secret.
    pub hint: Option<String>,
    /// When it expires (RFC 3339).
    pub end_date_time: Option<String>,
}

/// A hierarchy as the attach gateway holds it (`GET /api/v1/hierarchies/{id}`): who attached it
/// and where.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct HierarchyDoc {
    /// The client id of the app that owns it.
    pub app_id: Option<String>,
    /// The environment it is attached in.
    pub environment: Option<String>,
}

/// The tenant's settings (`GET /api/v1/tenant/settings`): the environment it is in.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct TenantSettings {
    /// `public`, `usgov` or `china`.
    pub environment: Option<String>,
}

/// The permissions an application asks of one resource.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default)]
pub struct ResourceAccess {
    /// The resource (`api://cloudattach`, `https://graph.microsoft.com`).
    pub resource: String,
    /// Permission names.
    pub permissions: Vec<String>,
}

/// `addPassword`'s answer. No `Debug`: it carries the secret.
#[derive(Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PasswordAnswer {
    /// The secret, shown once.
    pub secret_text: Option<String>,
    /// Its expiry.
    pub end_date_time: Option<String>,
}

//! The app the site uses to talk to the tenant: registered by `apply` (one credentials file per
//! tenant and endpoint; a secret that expires within 30 days gets a new password on the same
//! app; a legacy `app.json` is carried over) or imported from `[cloud.app]` and validated
//! against the tenant (secret, name, App ID URI, permissions, consent, the tenant's expiry).
//! Which app owns the hierarchy, and in which environment, is read before any app is chosen:
//! another app's hierarchy is taken over (a new secret on that app) only as the command's
//! [`AppChoice`] allows, and an app registered by an attempt that did not finish is found by
//! its App ID URI instead of registering a second one. The offline import rules live in
//! [`crate::app_import`].

use super::docs::{Application, Applications, HierarchyDoc, PasswordAnswer, TenantSettings};
use super::signin::{endpoint_key, form, token};
use super::{AppChoice, AppPolicy, SessionError, Takeover, now_secs};
use crate::app_import::days_until;
use crate::client::{Api, ApiError, Body};
use crate::config::{AppImport, Config, Secret};
use crate::report::Reporter;
use crate::site::Site;
use crate::state::write_private;
use cloudattach_sdk::Environment;
use reqwest::Method as HttpMethod;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

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
fn app_path(config: &Config, api: &Api, tenant_id: &str) -> PathBuf {
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
pub(super) async fn find_app(
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

/// A hierarchy's attachment in the tenant: the app that owns it and the environment.
pub(super) struct Attachment {
    /// The owning app's client id (lowercase).
    pub(super) app_id: Option<String>,
    /// The environment it is attached in.
    pub(super) environment: Option<String>,
}

/// Whether the hierarchy is attached to the tenant, and by which app: read with the
/// administrator's token, which may read every hierarchy of the tenant.
pub(super) async fn attachment(
    api: &Api,
    admin_token: &str,
    hierarchy_id: &str,
) -> Result<Option<Attachment>, SessionError> {
    let path = format!("/api/v1/hierarchies/{hierarchy_id}");
    match api
        .doc::<HierarchyDoc>(HttpMethod::GET, &path, Some(admin_token), &Body::Empty)
        .await
    {
        Ok(h) => Ok(Some(Attachment {
            app_id: h.app_id.map(|a| a.to_ascii_lowercase()),
            environment: h.environment,
        })),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The configured environment must be the tenant's, and the one the hierarchy is attached in:
/// checked before an app is registered or a secret added, so a mismatch changes nothing.
pub(super) async fn check_environment(
    api: &Api,
    admin_token: &str,
    config: &Config,
    hierarchy_id: &str,
    attached: Option<&Attachment>,
) -> Result<(), SessionError> {
    let want = config.environment;
    let settings: TenantSettings = api
        .doc(
            HttpMethod::GET,
            "/api/v1/tenant/settings",
            Some(admin_token),
            &Body::Empty,
        )
        .await?;
    let parse = |e: Option<&str>| e.and_then(|e| e.parse::<Environment>().ok());
    let mismatch = |what: String, env: Environment| {
        SessionError::Input(format!(
            "{what} is in {}, but [cloud] environment = \"{}\" ({}): set environment = \"{}\", or point the site at a tenant in {}; nothing was changed",
            env.display_name(),
            want.as_str(),
            want.display_name(),
            env.as_str(),
            want.display_name()
        ))
    };
    if let Some(env) = parse(settings.environment.as_deref())
        && env != want
    {
        return Err(mismatch(format!("tenant {}", config.tenant), env));
    }
    if let Some(env) = parse(attached.and_then(|a| a.environment.as_deref()))
        && env != want
    {
        return Err(mismatch(
            format!(
                "hierarchy {hierarchy_id} is attached to tenant {} and",
                config.tenant
            ),
            env,
        ));
    }
    Ok(())
}

/// The expiry of the secret as the tenant has it: among the app's password credentials whose
/// hint the secret starts with, the earliest still valid (the secret works, so its credential
/// has not expired), else the latest.
fn tenant_expiry(found: &Application, secret: &str) -> Option<String> {
    let mut ends: Vec<(i64, &str)> = found
        .password_credentials
        .iter()
        .filter(|c| c.hint.as_deref().is_none_or(|h| secret.starts_with(h)))
        .filter_map(|c| c.end_date_time.as_deref())
        .filter_map(|e| days_until(e).map(|d| (d, e)))
        .collect();
    ends.sort();
    ends.iter()
        .find(|(d, _)| *d >= 0)
        .or(ends.last())
        .map(|(_, e)| e.to_string())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn validate_import(
    api: &Api,
    tenant: &str,
    admin_token: &str,
    app: &AppImport,
    secret: &Secret,
    owner: Option<&str>,
    hierarchy_id: &str,
    reporter: &dyn Reporter,
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
    if let Some(actual) = found.display_name.as_deref()
        && actual != app.name
    {
        return Err(SessionError::Input(format!(
            "[cloud.app] name = {:?}, but app {} is named {actual:?} in tenant {tenant}: set name = {actual:?}, or check client_id",
            app.name, app.client_id
        )));
    }
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
    // attach.toml's expiry was checked offline; the tenant's may be earlier (the secret was
    // created with a shorter life than someone wrote down): the earlier one decides.
    let mut secret_expiry = app.secret_expiry.clone();
    if let Some(held) = tenant_expiry(&found, secret.expose())
        && let Some(days) = days_until(&held)
        && days_until(&app.secret_expiry).is_none_or(|d| days < d)
    {
        let date = held.get(..10).unwrap_or(&held);
        if days < 0 {
            return Err(SessionError::Input(format!(
                "[cloud.app] the secret of app {} expired on {date} as the tenant has it (secret_expiry says {}); create a new secret and update secret_expiry",
                app.name, app.secret_expiry
            )));
        }
        if days <= 30 {
            reporter.warn(&format!(
                "the secret of app {} expires in {days} day(s), on {date} as the tenant has it (secret_expiry says {}); renew it before then and update secret_expiry, or syncs will fail",
                app.name, app.secret_expiry
            ));
        }
        secret_expiry = date.to_string();
    }
    if let Some(owner) = owner
        && !owner.eq_ignore_ascii_case(&app.client_id)
        && let Some(owning) = find_app(api, admin_token, owner).await?
    {
        return Err(SessionError::Input(format!(
            "hierarchy {hierarchy_id} is attached to tenant {tenant} with app {}, not with the imported app {} ({}): import that app in [cloud.app] instead; nothing was changed",
            owning.label(),
            app.name,
            app.client_id
        )));
    }
    Ok(AppCredentials {
        tenant_id: app.tenant_id.clone(),
        client_id: app.client_id.clone(),
        object_id: found.id.clone(),
        name: app.name.clone(),
        secret: secret.expose().to_string(),
        secret_expiry,
        imported: true,
    })
}

/// The credentials file at `path`, if there is one. A file that cannot be read or is not a
/// credentials file is an error naming it: starting over would register a second app while the
/// first still owns the hierarchy.
fn read_credentials(path: &Path) -> Result<Option<AppCredentials>, SessionError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SessionError::Input(format!(
                "the app credentials file {} cannot be read ({e}); fix its permissions, then run the command again",
                path.display()
            )));
        }
    };
    serde_json::from_slice::<AppCredentials>(&text)
        .map(Some)
        .map_err(|e| {
            SessionError::Input(format!(
                "the app credentials file {} is damaged at line {}, column {} ({}): restore it from a backup, or delete it and run `cloudattach apply --takeover` to add a new secret to the app that owns the hierarchy; nothing was changed",
                path.display(),
                e.line(),
                e.column(),
                damage(&e)
            ))
        })
}

/// What is wrong with a credentials file, in words that never quote it: serde_json's own
/// message can show a value of the file (the secret), so only its category is used, and the
/// name of a missing field (one of [`AppCredentials`]'s, not the file's).
fn damage(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax => "not valid JSON".into(),
        Category::Eof => "it ends too early".into(),
        Category::Io => "it cannot be read".into(),
        Category::Data => {
            let message = e.to_string();
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.split_once('`'))
                .map(|(field, _)| field)
                .filter(|field| {
                    [
                        "tenant_id",
                        "client_id",
                        "object_id",
                        "name",
                        "secret",
                        "secret_expiry",
                        "imported",
                    ]
                    .contains(field)
                });
            match missing {
                Some(field) => format!("not an app credentials file: `{field}` is missing"),
                None => "not an app credentials file: a value is not of the kind expected".into(),
            }
        }
    }
}

/// The App ID URI cloudattach gives the app it registers for a hierarchy: the same for every
/// attempt, so an app registered by an attempt that did not finish is found again.
fn registered_uri(tenant_id: &str, site: &Site) -> (String, String) {
    let name = format!("ConfigMgrService-{}", site.info.code);
    let short = site.info.hierarchy_id.split('-').next().unwrap_or("site");
    let uri = format!("api://{tenant_id}/{name}-{short}");
    (name, uri)
}

/// The tenant's app with this App ID URI (the oldest, if several), if there is one.
async fn find_app_by_uri(
    api: &Api,
    admin_token: &str,
    uri: &str,
) -> Result<Option<Application>, ApiError> {
    let filter = format!("/v1.0/applications?$filter=identifierUris/any(x:x%20eq%20'{uri}')");
    let list: Applications = api
        .doc(HttpMethod::GET, &filter, Some(admin_token), &Body::Empty)
        .await?;
    Ok(list.value.into_iter().next())
}

async fn grant_consent(api: &Api, admin_token: &str, object_id: &str) -> Result<(), ApiError> {
    api.json(
        HttpMethod::POST,
        &format!("/v1.0/applications/{object_id}/grantAdminConsent"),
        Some(admin_token),
        &Body::Empty,
    )
    .await
    .map(|_| ())
}

/// The app the hierarchy's owner is, with the credentials this directory keeps for it under
/// another endpoint (the same tenant served by `cloud serve` after the embedded cloud), if
/// those still work.
async fn credentials_kept_elsewhere(
    api: &Api,
    config: &Config,
    tenant_id: &str,
    owner: &str,
    except: &Path,
) -> Option<AppCredentials> {
    let prefix = format!("app-{tenant_id}-");
    let entries = std::fs::read_dir(config.state_dir()).ok()?;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path == except || !name.starts_with(&prefix) || !name.ends_with(".json") {
            continue;
        }
        // Another endpoint's file is that endpoint's business: a damaged one is skipped here.
        let Ok(Some(app)) = read_credentials(&path) else {
            continue;
        };
        if app.imported || !app.client_id.eq_ignore_ascii_case(owner) {
            continue;
        }
        if client_credentials(api, tenant_id, &app.client_id, &app.secret)
            .await
            .is_ok()
        {
            return Some(app);
        }
    }
    None
}

/// Writes the credentials of an app this directory now uses.
fn save(path: &Path, app: &AppCredentials) -> Result<(), SessionError> {
    write_private(path, &serde_json::to_vec(app).expect("json"))?;
    Ok(())
}

/// Adds a password to an app the site uses without its secret (one registered by an attempt
/// that did not finish, or the owner of the hierarchy being taken over) and saves it.
async fn adopt(
    api: &Api,
    admin_token: &str,
    tenant_id: &str,
    found: &Application,
    path: &Path,
) -> Result<AppCredentials, SessionError> {
    let object_id = found.id.clone().unwrap_or_default();
    let (secret, secret_expiry) = add_password(api, admin_token, &object_id).await?;
    let app = AppCredentials {
        tenant_id: tenant_id.to_string(),
        client_id: found.app_id.clone().unwrap_or_default(),
        object_id: Some(object_id),
        name: found.display_name.clone().unwrap_or_default(),
        secret,
        secret_expiry,
        imported: false,
    };
    save(path, &app)?;
    Ok(app)
}

/// Renews a secret that expires within 30 days (a new password on the same app, so the
/// hierarchy keeps its owner) and grants the consent an interrupted registration left out.
async fn keep_up(
    api: &Api,
    admin_token: &str,
    mut app: AppCredentials,
    found: &Application,
    path: &Path,
    reporter: &dyn Reporter,
) -> Result<AppCredentials, SessionError> {
    let object_id = found.id.clone().unwrap_or_default();
    if found.admin_consent_granted != Some(true) {
        grant_consent(api, admin_token, &object_id).await?;
    }
    if days_until(&app.secret_expiry).is_some_and(|d| d > 30) {
        return Ok(app);
    }
    let (secret, expiry) = add_password(api, admin_token, &object_id).await?;
    app.secret = secret;
    app.secret_expiry = expiry;
    save(path, &app)?;
    reporter.say(&format!(
        "renewed the secret of app {app}; it expires on {}",
        app.secret_expiry
    ));
    Ok(app)
}

/// The app a session uses when none is imported: the one this directory registered, the owner
/// of the hierarchy (with credentials kept for another endpoint, or taken over as the choice
/// allows), an app an earlier attempt registered for this hierarchy, or — apply only — a new
/// one. An app is registered only once it is known that the hierarchy is not another app's.
/// With the app comes, when this run registered it, the file its credentials are kept in (so
/// that an onboarding another app won in the meantime deletes both: [`delete_registered`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn ensure_registered_app(
    api: &Api,
    config: &Config,
    site: &Site,
    tenant_id: &str,
    admin_token: &str,
    reporter: &dyn Reporter,
    choice: &AppChoice,
    owner: Option<&str>,
) -> Result<(AppCredentials, Option<PathBuf>), SessionError> {
    let path = app_path(config, api, tenant_id);
    // State directories from before one file per tenant and endpoint kept a single `app.json`.
    let legacy = config.state_dir().join("app.json");
    if !path.exists()
        && let Some(app) = read_credentials(&legacy)?
        && app.tenant_id == tenant_id
    {
        let _ = std::fs::rename(&legacy, &path);
    }
    let local = match read_credentials(&path)? {
        Some(app) if !app.imported && app.tenant_id == tenant_id => {
            find_app(api, admin_token, &app.client_id)
                .await?
                .map(|found| (app, found))
        }
        _ => None,
    };
    let hid = &site.info.hierarchy_id;
    // The hierarchy belongs to an app of the tenant that is not the one this directory has.
    if let Some(owner) = owner
        && local
            .as_ref()
            .is_none_or(|(app, _)| !app.client_id.eq_ignore_ascii_case(owner))
        && let Some(owning) = find_app(api, admin_token, owner).await?
    {
        if let Some(app) = credentials_kept_elsewhere(api, config, tenant_id, owner, &path).await {
            save(&path, &app)?;
            reporter.say(&format!(
                "using app {app}, which owns hierarchy {hid}, with the credentials this directory keeps for another endpoint"
            ));
            return keep_up(api, admin_token, app, &owning, &path, reporter)
                .await
                .map(|app| (app, None));
        }
        let hint = match choice.command {
            "apply" | "detach" => choice.command,
            _ => "apply",
        };
        let whose = format!(
            "hierarchy {hid} is attached to tenant {} with app {}, whose credentials are not in {}",
            config.tenant,
            owning.label(),
            config.state_dir().display()
        );
        let take = match &choice.takeover {
            Takeover::Allow => true,
            Takeover::Refuse => false,
            Takeover::Ask(ask) => ask(&format!(
                "{whose}.\nTake it over by adding a new secret to app {} (kept in {})?",
                owning.label(),
                path.display()
            )),
        };
        if !take {
            return Err(SessionError::Input(format!(
                "{whose}: run `cloudattach {hint} --takeover` as a Global Administrator to add a new secret to that app and use it from here, or import it in [cloud.app]; nothing was changed"
            )));
        }
        let app = adopt(api, admin_token, tenant_id, &owning, &path).await?;
        reporter.say(&format!(
            "took over app {app}, which owns hierarchy {hid}: added a secret to it, kept in {}",
            path.display()
        ));
        return Ok((app, None));
    }
    if let Some((app, found)) = local {
        return keep_up(api, admin_token, app, &found, &path, reporter)
            .await
            .map(|app| (app, None));
    }
    if choice.policy == AppPolicy::ExistingOnly {
        return Err(SessionError::Input(format!(
            "this site is not attached to tenant {} from this directory (no app registered by `cloudattach apply`): run `cloudattach apply` first",
            config.tenant
        )));
    }
    let (name, uri) = registered_uri(tenant_id, site);
    // An earlier apply registered the app and stopped before it kept its credentials (killed,
    // or the credentials file lost): that app is used, not a second one.
    if let Some(found) = find_app_by_uri(api, admin_token, &uri).await? {
        let app = adopt(api, admin_token, tenant_id, &found, &path).await?;
        if found.admin_consent_granted != Some(true) {
            grant_consent(api, admin_token, found.id.as_deref().unwrap_or_default()).await?;
        }
        reporter.say(&format!(
            "using app {app}, registered for this hierarchy by an earlier apply: added a secret to it"
        ));
        return Ok((app, None));
    }
    let body = serde_json::json!({
        "displayName": name,
        "identifierUris": [uri],
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
    let object_id = created.id.clone().unwrap_or_default();
    let client_id = created.app_id.clone().unwrap_or_default();
    let sp = serde_json::json!({ "appId": client_id });
    api.json(
        HttpMethod::POST,
        "/v1.0/servicePrincipals",
        Some(admin_token),
        &Body::Json(sp.to_string().into_bytes()),
    )
    .await?;
    let (secret, secret_expiry) = add_password(api, admin_token, &object_id).await?;
    let app = AppCredentials {
        tenant_id: tenant_id.to_string(),
        client_id,
        object_id: Some(object_id.clone()),
        name,
        secret,
        secret_expiry,
        imported: false,
    };
    // Kept before consent: from here on a run that stops finds this app again by its file.
    save(&path, &app)?;
    grant_consent(api, admin_token, &object_id).await?;
    reporter.say(&format!(
        "registered app {app} in the tenant, with admin consent"
    ));
    Ok((app, Some(path)))
}

/// Deletes the app this run registered, and the file its credentials are kept in: another app
/// attached the hierarchy first, so this one would be left in the tenant owning nothing. An app
/// already gone is fine.
pub(super) async fn delete_registered(
    api: &Api,
    admin_token: &str,
    app: &AppCredentials,
    path: &Path,
) -> Result<(), SessionError> {
    let object_id = app.object_id.as_deref().unwrap_or_default();
    match api
        .json(
            HttpMethod::DELETE,
            &format!("/v1.0/applications/{object_id}"),
            Some(admin_token),
            &Body::Empty,
        )
        .await
    {
        Ok(_) => {}
        Err(e) if e.status() == Some(404) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SessionError::Input(format!(
            "the app credentials file {} cannot be removed ({e}); the app it names was deleted from the tenant, so delete the file",
            path.display()
        ))),
        _ => Ok(()),
    }
}

/// The app that owns the hierarchy now, as messages name it (`name (client id)`), read with
/// the administrator's token; `None` when no app owns it.
pub(super) async fn owner_label(
    api: &Api,
    admin_token: &str,
    hierarchy_id: &str,
) -> Result<Option<String>, SessionError> {
    let Some(owner) = attachment(api, admin_token, hierarchy_id)
        .await?
        .and_then(|a| a.app_id)
    else {
        return Ok(None);
    };
    Ok(Some(match find_app(api, admin_token, &owner).await? {
        Some(app) => app.label(),
        None => owner,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A damaged credentials file is named, with the line and column where it is damaged, and
    /// none of its contents: serde_json's own message would quote a value (here the secret).
    #[test]
    fn a_damaged_credentials_file_is_named_without_its_contents() {
        const SECRET: &str = "Qm7~app-Secret-of-the-tenant";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app-t-0000abcd.json");
        let cases: &[(&str, String, &str)] = &[
            // The secret where another kind of value is expected (serde_json quotes it).
            (
                "a value of the wrong kind",
                format!(
                    "{{\"tenant_id\":\"t\",\"client_id\":\"c\",\"name\":\"n\",\n\"secret\":\"x\",\"secret_expiry\":\"2030-01-01\",\n\"imported\":\"{SECRET}\"}}"
                ),
                "line 3",
            ),
            (
                "a number where the secret goes",
                "{\"tenant_id\":\"t\",\"client_id\":\"c\",\"name\":\"n\",\n\"secret\": 918273645,\"secret_expiry\":\"x\",\"imported\":false}".into(),
                "line 2",
            ),
            // Cut off after the secret, and broken after it.
            (
                "cut off",
                format!("{{\"tenant_id\":\"t\",\n\"secret\":\"{SECRET}"),
                "line 2",
            ),
            (
                "broken",
                format!("{{\"tenant_id\":\"t\",\n\"secret\":\"{SECRET}\" \"client_id\"}}"),
                "line 2",
            ),
            // A field missing: named, as the struct spells it.
            (
                "a field missing",
                format!(
                    "{{\"tenant_id\":\"t\",\"client_id\":\"c\",\"secret\":\"{SECRET}\",\"secret_expiry\":\"x\",\"imported\":false}}"
                ),
                "`name` is missing",
            ),
        ];
        for (what, text, needle) in cases {
            std::fs::write(&path, text).unwrap();
            let message = match read_credentials(&path) {
                Err(SessionError::Input(m)) => m,
                other => panic!("{what}: {other:?}"),
            };
            assert!(!message.contains(SECRET), "{what}: {message}");
            assert!(!message.contains("918273645"), "{what}: {message}");
            assert!(
                message.contains(&path.display().to_string()),
                "{what}: {message}"
            );
            assert!(message.contains("damaged at line"), "{what}: {message}");
            assert!(message.contains(needle), "{what}: {needle:?} in {message}");
        }
    }
}

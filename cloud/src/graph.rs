//! Graph-compatible app registration: `/v1.0/me`, `/v1.0/applications`, `/v1.0/servicePrincipals`.

use crate::auth::{Caller, CallerKind, PERM_DIRECTORY_READ, PERM_READ, PERM_WRITE, RESOURCE};
use crate::body;
use crate::error::ApiError;
use crate::server::{AppState, St, db};
use crate::store::{Application, ResourceAccess, SecretMeta, ServicePrincipal};
use crate::util;
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type R = Result<Response, ApiError>;

/// `GET /v1.0/me`
pub(crate) async fn me(Extension(c): Extension<Caller>) -> R {
    match c.kind {
        CallerKind::User {
            id,
            upn,
            roles,
            intune_license,
            ..
        } => Ok(Json(json!({
            "id": id, "userPrincipalName": upn, "roles": roles, "intuneLicense": intune_license,
            "tenantId": c.tenant_id,
        }))
        .into_response()),
        CallerKind::App { .. } => Err(ApiError::bad_request(
            "/me request is only valid with delegated authentication flow",
        )),
    }
}

pub(crate) fn app_json(a: &Application) -> Value {
    json!({
        "id": a.id,
        "appId": a.app_id,
        "displayName": a.display_name,
        "identifierUris": a.identifier_uris,
        "requiredResourceAccess": a.required_resource_access,
        "passwordCredentials": a.secrets,
        "adminConsentGranted": a.admin_consent,
        "signInAudience": "AzureADMyOrg",
        "createdDateTime": a.created,
    })
}

fn valid_resource(st: &AppState, r: &str) -> bool {
    r == RESOURCE
        || r == st.env.graph_host()
        || r == "https://graph.microsoft.com"
        || r == "00000003-0000-0000-c000-000000000000"
}

fn validate_rra(st: &AppState, rra: &[ResourceAccess]) -> Result<(), ApiError> {
    for ra in rra {
        if !valid_resource(st, &ra.resource) {
            return Err(ApiError::bad_request(format!(
                "unknown resource {:?} in requiredResourceAccess: use {RESOURCE} or {}",
                ra.resource,
                st.env.graph_host()
            )));
        }
        let allowed: &[&str] = if ra.resource == RESOURCE {
            &[PERM_READ, PERM_WRITE]
        } else {
            &[PERM_DIRECTORY_READ]
        };
        for p in &ra.permissions {
            if !allowed.contains(&p.as_str()) {
                return Err(ApiError::bad_request(format!(
                    "unknown permission {p:?} of {}: expected one of {allowed:?}",
                    ra.resource
                )));
            }
        }
    }
    Ok(())
}

/// App ID URI rules, as Entra ID has them: `api://{tenantId}/{name}`, `api://{appId}`, or
/// `https://{verified domain}/{name}`.
fn validate_uris(
    uris: &[String],
    tenant_id: &str,
    domains: &[String],
    app_id: &str,
) -> Result<(), ApiError> {
    for u in uris {
        let ok = if let Some(rest) = u.strip_prefix("api://") {
            match rest.split_once('/') {
                Some((t, name)) => t.eq_ignore_ascii_case(tenant_id) && valid_name(name),
                None => rest.eq_ignore_ascii_case(app_id),
            }
        } else if let Some(rest) = u.strip_prefix("https://") {
            match rest.split_once('/') {
                Some((d, name)) => {
                    domains.iter().any(|x| x.eq_ignore_ascii_case(d)) && valid_name(name)
                }
                None => false,
            }
        } else {
            false
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "identifierUris: {u:?} is not api://{tenant_id}/<name>, api://<appId> or https://<verified domain>/<name>"
            )));
        }
    }
    Ok(())
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 120
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~/".contains(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewApp {
    display_name: String,
    #[serde(default)]
    identifier_uris: Vec<String>,
    #[serde(default)]
    required_resource_access: Vec<ResourceAccess>,
    #[serde(default)]
    sign_in_audience: Option<String>,
}

/// `POST /v1.0/applications` (Global Administrator)
pub(crate) async fn create_app(
    State(st): St,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_global_admin()?;
    let n: NewApp = body::json(&st, &headers, b).await?;
    if n.display_name.trim().is_empty() || n.display_name.len() > 256 {
        return Err(ApiError::bad_request(
            "displayName must be 1 to 256 characters",
        ));
    }
    if let Some(a) = &n.sign_in_audience
        && a != "AzureADMyOrg"
    {
        return Err(ApiError::bad_request(
            "signInAudience must be AzureADMyOrg (single tenant)",
        ));
    }
    validate_rra(&st, &n.required_resource_access)?;
    let tid = c.tenant_id.clone();
    let tenant = db(&st, move |s| s.find_tenant(&tid))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let app_id = util::uuid();
    validate_uris(&n.identifier_uris, &tenant.id, &tenant.domains, &app_id)?;
    let app = Application {
        id: util::uuid(),
        tenant_id: tenant.id.clone(),
        app_id,
        display_name: n.display_name,
        identifier_uris: n.identifier_uris,
        required_resource_access: n.required_resource_access,
        admin_consent: false,
        created: util::now_rfc3339(),
        secrets: vec![],
    };
    let a2 = app.clone();
    db(&st, move |s| s.create_application(&a2)).await?;
    tracing::info!(app_id = %app.app_id, tenant = %app.tenant_id, "application registered");
    Ok((StatusCode::CREATED, Json(app_json(&app))).into_response())
}

async fn load_app(st: &Arc<AppState>, c: &Caller, id: &str) -> Result<Application, ApiError> {
    let (tid, id2) = (c.tenant_id.clone(), id.to_string());
    let app = db(st, move |s| s.application(&tid, &id2)).await?;
    let app = app.ok_or_else(|| {
        ApiError::not_found(format!("application {id} does not exist in this tenant"))
    })?;
    if !c.can_read_directory() && c.app_id() != Some(app.app_id.as_str()) {
        return Err(ApiError::not_found(format!(
            "application {id} does not exist in this tenant"
        )));
    }
    Ok(app)
}

/// `GET /v1.0/applications/{id}`
pub(crate) async fn get_app(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> R {
    Ok(Json(app_json(&load_app(&st, &c, &id).await?)).into_response())
}

/// Parses `appId eq '…'` (the only supported filter).
fn parse_app_filter(f: &str) -> Result<String, ApiError> {
    parse_app_filter_value(f).map_err(|e| e.with_details(json!({"parameter": "$filter"})))
}

fn parse_app_filter_value(f: &str) -> Result<String, ApiError> {
    let f = f.trim();
    let rest = f
        .strip_prefix("appId eq ")
        .or_else(|| f.strip_prefix("appid eq "))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported $filter {f:?}: use appId eq '<client id>'"
            ))
        })?;
    let v = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or_else(|| {
            ApiError::bad_request("the appId value must be quoted: appId eq '<client id>'")
        })?;
    Ok(v.to_ascii_lowercase())
}

/// A `$filter` of the applications list.
enum AppFilter {
    /// `appId eq '…'` (lowercased).
    AppId(String),
    /// `identifierUris/any(x:x eq '…')`, as Graph writes a lambda over a collection.
    IdentifierUri(String),
}

impl AppFilter {
    fn parse(f: &str) -> Result<AppFilter, ApiError> {
        let t = f.trim();
        let Some(rest) = t
            .strip_prefix("identifierUris/any(")
            .and_then(|r| r.strip_suffix(')'))
        else {
            return parse_app_filter(f).map(AppFilter::AppId);
        };
        let uri = rest.split_once(':').and_then(|(var, cond)| {
            cond.trim()
                .strip_prefix(var.trim())?
                .trim()
                .strip_prefix("eq ")?
                .trim()
                .strip_prefix('\'')?
                .strip_suffix('\'')
                .map(str::to_string)
        });
        uri.map(AppFilter::IdentifierUri).ok_or_else(|| {
            ApiError::bad_request(format!(
                "unsupported $filter {t:?}: use identifierUris/any(x:x eq '<uri>')"
            ))
        })
    }

    fn matches(&self, a: &Application) -> bool {
        match self {
            AppFilter::AppId(id) => &a.app_id == id,
            AppFilter::IdentifierUri(u) => a.identifier_uris.iter().any(|x| x == u),
        }
    }
}

/// `GET /v1.0/applications[?$filter=appId eq '…' | identifierUris/any(x:x eq '…')]`
pub(crate) async fn list_apps(
    State(st): St,
    Extension(c): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> R {
    let filter = q.get("$filter").map(|f| AppFilter::parse(f)).transpose()?;
    let page = crate::read::Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let apps = db(&st, move |s| s.applications(&tid)).await?;
    let value: Vec<Value> = apps
        .iter()
        .filter(|a| filter.as_ref().is_none_or(|f| f.matches(a)))
        .filter(|a| c.can_read_directory() || c.app_id() == Some(a.app_id.as_str()))
        .map(app_json)
        .collect();
    let doc = page.answer(&st, "/v1.0/applications", &q, value, Default::default());
    Ok(Json(doc).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PatchApp {
    display_name: Option<String>,
    identifier_uris: Option<Vec<String>>,
    required_resource_access: Option<Vec<ResourceAccess>>,
}

/// `PATCH /v1.0/applications/{id}` (Global Administrator)
pub(crate) async fn patch_app(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_global_admin()?;
    let p: PatchApp = body::json(&st, &headers, b).await?;
    let mut app = load_app(&st, &c, &id).await?;
    if let Some(n) = p.display_name {
        if n.trim().is_empty() || n.len() > 256 {
            return Err(ApiError::bad_request(
                "displayName must be 1 to 256 characters",
            ));
        }
        app.display_name = n;
    }
    if let Some(u) = p.identifier_uris {
        let tid = c.tenant_id.clone();
        let t = db(&st, move |s| s.find_tenant(&tid))
            .await?
            .ok_or_else(|| ApiError::not_found("tenant"))?;
        validate_uris(&u, &t.id, &t.domains, &app.app_id)?;
        app.identifier_uris = u;
    }
    if let Some(r) = p.required_resource_access {
        validate_rra(&st, &r)?;
        if r != app.required_resource_access {
            app.admin_consent = false;
        }
        app.required_resource_access = r;
    }
    let a2 = app.clone();
    db(&st, move |s| s.update_application(&a2)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1.0/applications/{id}` (Global Administrator)
pub(crate) async fn delete_app(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> R {
    c.require_global_admin()?;
    let tid = c.tenant_id.clone();
    let id2 = id.clone();
    if db(&st, move |s| s.delete_application(&tid, &id2)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "application {id} does not exist in this tenant"
        )))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AddPassword {
    #[serde(default)]
    password_credential: Option<PasswordCredential>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PasswordCredential {
    display_name: Option<String>,
    end_date_time: Option<String>,
}

/// `POST /v1.0/applications/{id}/addPassword` (Global Administrator)
pub(crate) async fn add_password(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_global_admin()?;
    let raw = body::read_raw(&headers, b, st.max_body).await?;
    let req: AddPassword = if raw.is_empty() {
        AddPassword::default()
    } else {
        body::require_json_type(&headers)?;
        body::decode_parse(&st, &headers, raw).await?
    };
    let app = load_app(&st, &c, &id).await?;
    let pc = req.password_credential.unwrap_or_default();
    if pc.display_name.as_ref().is_some_and(|n| n.len() > 256) {
        return Err(ApiError::bad_request(
            "passwordCredential.displayName must be at most 256 characters",
        ));
    }
    let now = util::now_unix();
    let end = match pc.end_date_time {
        Some(e) => util::parse_rfc3339(&e).ok_or_else(|| {
            ApiError::bad_request(format!("endDateTime {e:?} is not an RFC 3339 time"))
        })?,
        None => now + 2 * 365 * 24 * 3600,
    };
    if end <= now {
        return Err(ApiError::bad_request("endDateTime must be in the future"));
    }
    let secret = format!("cas~{}", util::random_token(30));
    let meta = SecretMeta {
        key_id: util::uuid(),
        display_name: pc.display_name,
        hint: secret[..3].to_string(),
        start_date_time: util::unix_to_rfc3339(now),
        end_date_time: util::unix_to_rfc3339(end),
    };
    let hash = crate::auth::hash_secret(&secret);
    let (m2, oid) = (meta.clone(), app.id.clone());
    db(&st, move |s| s.add_secret(&oid, &m2, &hash)).await?;
    let mut v = serde_json::to_value(&meta).unwrap_or_default();
    v["secretText"] = json!(secret);
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RemovePassword {
    key_id: String,
}

/// `POST /v1.0/applications/{id}/removePassword` (Global Administrator)
pub(crate) async fn remove_password(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_global_admin()?;
    let req: RemovePassword = body::json(&st, &headers, b).await?;
    let app = load_app(&st, &c, &id).await?;
    let oid = app.id.clone();
    let k = req.key_id.clone();
    if db(&st, move |s| s.remove_secret(&oid, &k)).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::not_found(format!(
            "no password credential with keyId {}",
            req.key_id
        )))
    }
}

/// `POST /v1.0/applications/{id}/grantAdminConsent` (Global Administrator)
pub(crate) async fn grant_consent(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> R {
    c.require_global_admin()?;
    let mut app = load_app(&st, &c, &id).await?;
    let (tid, oid, app_id, name) = (
        c.tenant_id.clone(),
        app.id.clone(),
        app.app_id.clone(),
        app.display_name.clone(),
    );
    db(&st, move |s| {
        if s.service_principals(&tid, Some(&app_id))?.is_empty() {
            s.create_service_principal(
                &tid,
                &ServicePrincipal {
                    id: util::uuid(),
                    app_id,
                    display_name: name,
                },
            )?;
        }
        s.set_admin_consent(&tid, &oid, true)
    })
    .await?;
    app.admin_consent = true;
    tracing::info!(app_id = %app.app_id, "admin consent granted");
    Ok(Json(app_json(&app)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewSp {
    app_id: String,
}

/// `POST /v1.0/servicePrincipals` (Global Administrator)
pub(crate) async fn create_sp(
    State(st): St,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_global_admin()?;
    let n: NewSp = body::json(&st, &headers, b).await?;
    let (tid, aid) = (c.tenant_id.clone(), n.app_id.to_ascii_lowercase());
    let app = db(&st, move |s| s.application_by_app_id(&tid, &aid))
        .await?
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "no application with appId {} in this tenant",
                n.app_id
            ))
        })?;
    let sp = ServicePrincipal {
        id: util::uuid(),
        app_id: app.app_id.clone(),
        display_name: app.display_name.clone(),
    };
    let (tid, sp2) = (c.tenant_id.clone(), sp.clone());
    db(&st, move |s| s.create_service_principal(&tid, &sp2)).await?;
    Ok((StatusCode::CREATED, Json(sp)).into_response())
}

/// `GET /v1.0/servicePrincipals[?$filter=appId eq '…']`
pub(crate) async fn list_sps(
    State(st): St,
    Extension(c): Extension<Caller>,
    Query(q): Query<HashMap<String, String>>,
) -> R {
    let filter = q.get("$filter").map(|f| parse_app_filter(f)).transpose()?;
    let page = crate::read::Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let sps = db(&st, move |s| s.service_principals(&tid, filter.as_deref())).await?;
    let v: Vec<Value> = sps
        .into_iter()
        .filter(|s| c.can_read_directory() || c.app_id() == Some(s.app_id.as_str()))
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
        .collect();
    let doc = page.answer(&st, "/v1.0/servicePrincipals", &q, v, Default::default());
    Ok(Json(doc).into_response())
}

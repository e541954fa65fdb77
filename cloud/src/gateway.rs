//! The attach gateway (`/api/v1`): hierarchies, features, uploads, tenant settings.

use crate::auth::{Caller, CallerKind};
use crate::body;
use crate::error::ApiError;
use crate::ingest::{self, BUILTIN_FEATURES, Channel, ChannelStorage};
use crate::server::{AppState, St, db};
use crate::store::{Feature, Hierarchy, HierarchyUpsert, StoreError};
use crate::util;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cloudattach_model::gateway::{
    ChannelCensus, ChannelKeys, FeatureBody, FeatureInfo, FeatureList,
};
use cloudattach_model::{Environment, is_collection_id, validate_feature_id};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

type R = Result<Response, ApiError>;

/// Features that need tenant-attach.
pub const NEEDS_TENANT_ATTACH: [&str; 3] =
    ["endpoint-analytics", "rbac-authority", "defender-reporting"];

fn china_refusal(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "NotSupportedInEnvironment",
        format!("{what} can't be enabled for Azure China Cloud"),
    )
}

/// Longest `site_name`, in characters.
const MAX_SITE_NAME: usize = 256;

/// A ConfigMgr current-branch version `YYMM`: four digits, year 17 or later, month 01 to 12.
fn plausible_yymm(v: &str) -> bool {
    if v.len() != 4 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (yy, mm) = (&v[..2], &v[2..]);
    matches!(yy.parse::<u32>(), Ok(y) if y >= 17) && matches!(mm.parse::<u32>(), Ok(1..=12))
}

fn norm_hid(hid: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(hid)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::bad_request(format!("hierarchy id {hid:?} is not a UUID")))
}

pub(crate) fn hierarchy_json(h: &Hierarchy, features: &[Feature]) -> Value {
    let f: serde_json::Map<String, Value> = features
        .iter()
        .map(|f| (f.feature_id.clone(), f.settings.clone()))
        .collect();
    json!({
        "hierarchy_id": h.hierarchy_id,
        "site_code": h.site_code,
        "site_name": h.site_name,
        "site_version": h.site_version,
        "environment": h.environment,
        "app_id": h.app_id,
        "created": h.created,
        "updated": h.updated,
        "features": f,
    })
}

fn feature_info(f: &Feature) -> FeatureInfo {
    FeatureInfo::new(&f.feature_id, f.settings.clone())
        .with_times(&f.enabled_at, &f.updated_at)
        .with_last_sync(f.last_sync.clone())
}

/// A gateway document as the JSON the API answers: through a `Value`, so that its keys come out
/// in the order they always have (sorted).
fn document(doc: &impl serde::Serialize) -> Value {
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

fn feature_json(f: &Feature) -> Value {
    document(&feature_info(f))
}

/// Loads a hierarchy of the caller's tenant, checking an app caller is the hierarchy's app.
pub(crate) async fn load_hierarchy(
    st: &Arc<AppState>,
    c: &Caller,
    hid: &str,
) -> Result<Hierarchy, ApiError> {
    let h = find_hierarchy(st, c, hid).await?;
    if let (Some(app), Some(owner)) = (c.app_id(), h.app_id.as_deref())
        && app != owner
    {
        return Err(ApiError::forbidden(format!(
            "hierarchy {} is attached with another app; this app may not access it",
            h.hierarchy_id
        )));
    }
    Ok(h)
}

/// A hierarchy of the caller's tenant, whichever app attached it: the read API lets every
/// reader of the tenant see all its hierarchies (as `/api/v1/overview` does).
pub(crate) async fn find_hierarchy(
    st: &Arc<AppState>,
    c: &Caller,
    hid: &str,
) -> Result<Hierarchy, ApiError> {
    let hid = norm_hid(hid)?;
    let tid = c.tenant_id.clone();
    let h2 = hid.clone();
    let h = db(st, move |s| s.hierarchy(&tid, &h2))
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!("hierarchy {hid} is not attached to this tenant"))
        })?;
    Ok(h)
}

async fn features_of(st: &Arc<AppState>, row: i64) -> Result<Vec<Feature>, ApiError> {
    Ok(db(st, move |s| s.features(row)).await?)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HierarchyBody {
    site_code: String,
    #[serde(default)]
    site_name: Option<String>,
    site_version: Value,
    environment: String,
    #[serde(default)]
    app_id: Option<String>,
}

/// `PUT /api/v1/hierarchies/{hid}`: onboard or update (idempotent).
pub(crate) async fn put_hierarchy(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_write()?;
    if let CallerKind::User {
        intune_license: false,
        ..
    } = c.kind
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "IntuneLicenseRequired",
            "onboarding needs an administrator with an Intune license",
        ));
    }
    let hid = norm_hid(&hid)?;
    let req: HierarchyBody = body::json(&st, &headers, b).await?;
    let code = req.site_code.trim().to_ascii_uppercase();
    if code.len() != 3 || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(format!(
            "site_code {:?} must be 3 letters or digits",
            req.site_code
        )));
    }
    let version = match &req.site_version {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    if !plausible_yymm(&version) {
        return Err(ApiError::bad_request(format!(
            "site_version {} must be a YYMM version such as \"2303\" (year 17 or later, month 01 to 12)",
            req.site_version
        )));
    }
    if let Some(n) = &req.site_name
        && n.chars().count() > MAX_SITE_NAME
    {
        return Err(ApiError::bad_request(format!(
            "site_name must be at most {MAX_SITE_NAME} characters"
        )));
    }
    let env: Environment = req.environment.parse().map_err(
        |e: cloudattach_model::environment::UnknownEnvironment| {
            ApiError::bad_request(e.to_string())
        },
    )?;
    if env != st.env {
        return Err(ApiError::conflict(
            "EnvironmentMismatch",
            format!(
                "the hierarchy targets {} but this tenant is in {}",
                env.display_name(),
                st.env.display_name()
            ),
        ));
    }
    let app_id = req.app_id.map(|a| a.to_ascii_lowercase());
    if let Some(a) = &app_id {
        if let Some(me) = c.app_id()
            && me != a
        {
            return Err(ApiError::forbidden(
                "an app may only onboard a hierarchy for itself",
            ));
        }
        let (tid, a2) = (c.tenant_id.clone(), a.clone());
        if db(&st, move |s| s.application_by_app_id(&tid, &a2))
            .await?
            .is_none()
        {
            return Err(ApiError::bad_request(format!(
                "app_id {a} is not an application of this tenant"
            )));
        }
    }
    // Omitted `app_id` and `site_name` keep the stored ones; an app token onboards for itself
    // and may not take over a hierarchy of another (existing) app: checked in the store's
    // transaction, so that concurrent PUTs can't race it.
    let h = HierarchyUpsert {
        tenant_id: c.tenant_id.clone(),
        hierarchy_id: hid,
        site_code: code,
        site_name: req.site_name,
        site_version: version,
        environment: env.as_str().into(),
        app_id: app_id.or_else(|| c.app_id().map(str::to_string)),
        caller_app: c.app_id().map(str::to_string),
        now: util::now_rfc3339(),
    };
    let (h, created) = db(&st, move |s| s.upsert_hierarchy(&h)).await?;
    let f = features_of(&st, h.row).await?;
    tracing::info!(hierarchy = %h.hierarchy_id, created, "hierarchy onboarded");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(hierarchy_json(&h, &f))).into_response())
}

/// `GET /api/v1/hierarchies/{hid}`
pub(crate) async fn get_hierarchy(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    c.require_read()?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let f = features_of(&st, h.row).await?;
    Ok(Json(hierarchy_json(&h, &f)).into_response())
}

/// `GET /api/v1/hierarchies`
pub(crate) async fn list_hierarchies(
    State(st): St,
    Extension(c): Extension<Caller>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> R {
    c.require_read()?;
    let page = crate::read::Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let v = db(&st, move |s| {
        let mut v = Vec::new();
        for h in s.hierarchies(&tid)? {
            let f = s.features(h.row)?;
            v.push(hierarchy_json(&h, &f));
        }
        Ok::<_, StoreError>(v)
    })
    .await?;
    let doc = page.answer(&st, "/api/v1/hierarchies", &q, v, Default::default());
    Ok(Json(doc).into_response())
}

/// `DELETE /api/v1/hierarchies/{hid}`: offboard.
pub(crate) async fn delete_hierarchy(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    c.require_write()?;
    let h = load_hierarchy(&st, &c, &hid).await?;
    let row = h.row;
    db(&st, move |s| s.delete_hierarchy(row)).await?;
    tracing::info!(hierarchy = %h.hierarchy_id, "hierarchy offboarded");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /api/v1/hierarchies/{hid}/features`
pub(crate) async fn list_features(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    c.require_read()?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let f = features_of(&st, h.row).await?;
    let list = FeatureList::new(f.iter().map(feature_info).collect());
    Ok(Json(document(&list)).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/features/{fid}`
pub(crate) async fn get_feature(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
) -> R {
    c.require_read()?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let f = features_of(&st, h.row).await?;
    match f.iter().find(|f| f.feature_id == fid) {
        Some(f) => Ok(Json(feature_json(f)).into_response()),
        None => Err(ApiError::not_found(format!(
            "feature {fid} is not enabled on hierarchy {}",
            h.hierarchy_id
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantAttachSettings {
    #[serde(default = "all")]
    upload: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RbacSettings {
    #[serde(default = "yes")]
    enforce_configmgr_rbac: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CoMgmtSettings {
    #[serde(default = "all")]
    enrollment: String,
    #[serde(default)]
    pilot_collection: Option<String>,
}

fn all() -> String {
    "all".into()
}
fn yes() -> bool {
    true
}

fn settings_of<T: serde::de::DeserializeOwned>(fid: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v)
        .map_err(|e| ApiError::bad_request(format!("invalid settings of {fid}: {e}")))
}

/// Validates and normalizes a feature's settings for the environment.
fn validate_settings(env: Environment, fid: &str, settings: Value) -> Result<Value, ApiError> {
    if !settings.is_object() {
        return Err(ApiError::bad_request(format!(
            "settings of {fid} must be a JSON object"
        )));
    }
    match fid {
        "tenant-attach" | "endpoint-analytics" | "rbac-authority" | "defender-reporting"
            if env == Environment::China =>
        {
            Err(china_refusal(match fid {
                "tenant-attach" => "Device upload (tenant-attach)",
                "endpoint-analytics" => "Endpoint analytics",
                "rbac-authority" => "The RBAC authority setting (it depends on device upload)",
                _ => "Defender reporting (it depends on device upload)",
            }))
        }
        "tenant-attach" => {
            let s: TenantAttachSettings = settings_of(fid, settings)?;
            if s.upload != "all" && !is_collection_id(&s.upload) {
                return Err(ApiError::bad_request(format!(
                    "tenant-attach upload {:?} must be \"all\" or a collection id such as \"PS100012\"",
                    s.upload
                )));
            }
            Ok(json!({"upload": s.upload}))
        }
        "endpoint-analytics" | "defender-reporting" => {
            let _: Empty = settings_of(fid, settings)?;
            Ok(json!({}))
        }
        "rbac-authority" => {
            let s: RbacSettings = settings_of(fid, settings)?;
            Ok(json!({"enforce_configmgr_rbac": s.enforce_configmgr_rbac}))
        }
        "co-management" => {
            let s: CoMgmtSettings = settings_of(fid, settings)?;
            match s.enrollment.as_str() {
                "all" | "none" | "pilot" => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                        "co-management enrollment {other:?} must be all, pilot or none"
                    )));
                }
            }
            if env == Environment::China && s.enrollment != "all" {
                return Err(china_refusal(&format!(
                    "Co-management enrollment {:?} (only automatic enrollment of all eligible devices)",
                    s.enrollment
                )));
            }
            if s.enrollment == "pilot" {
                match &s.pilot_collection {
                    Some(p) if is_collection_id(p) => {}
                    Some(p) => {
                        return Err(ApiError::bad_request(format!(
                            "pilot_collection {p:?} is not a collection id"
                        )));
                    }
                    None => {
                        return Err(ApiError::bad_request(
                            "enrollment pilot needs pilot_collection",
                        ));
                    }
                }
                Ok(json!({"enrollment": "pilot", "pilot_collection": s.pilot_collection}))
            } else {
                Ok(json!({"enrollment": s.enrollment}))
            }
        }
        _ => Ok(settings),
    }
}

/// `PUT /api/v1/hierarchies/{hid}/features/{fid}`: enable or update (idempotent).
pub(crate) async fn put_feature(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_write()?;
    if let Err(e) = validate_feature_id(&fid) {
        return Err(ApiError::bad_request(format!("feature id {fid:?} {e}")));
    }
    let h = load_hierarchy(&st, &c, &hid).await?;
    let raw = body::read_raw(&headers, b, st.max_body).await?;
    let req: FeatureBody = if raw.is_empty() {
        FeatureBody::default()
    } else {
        body::require_json_type(&headers)?;
        body::decode_parse(&st, &headers, raw).await?
    };
    let settings = validate_settings(st.env, &fid, req.settings.unwrap_or_else(|| json!({})))?;
    let features = features_of(&st, h.row).await?;
    if NEEDS_TENANT_ATTACH.contains(&fid.as_str())
        && !features.iter().any(|f| f.feature_id == "tenant-attach")
    {
        return Err(ApiError::conflict(
            "DependencyNotEnabled",
            format!(
                "{fid} depends on tenant-attach, which is not enabled for hierarchy {}",
                h.hierarchy_id
            ),
        ));
    }
    let (row, f2, s2, now) = (h.row, fid.clone(), settings, util::now_rfc3339());
    let created = db(&st, move |s| s.put_feature(row, &f2, &s2, &now)).await?;
    let f = features_of(&st, h.row).await?;
    let f = f
        .iter()
        .find(|x| x.feature_id == fid)
        .ok_or_else(|| ApiError::internal("feature vanished"))?;
    tracing::info!(hierarchy = %h.hierarchy_id, feature = %fid, created, "feature enabled");
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(feature_json(f))).into_response())
}

/// `DELETE /api/v1/hierarchies/{hid}/features/{fid}`: disable and remove the feature's records.
pub(crate) async fn delete_feature(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
) -> R {
    c.require_write()?;
    let h = load_hierarchy(&st, &c, &hid).await?;
    let features = features_of(&st, h.row).await?;
    if fid == "tenant-attach" {
        let deps: Vec<&str> = features
            .iter()
            .map(|f| f.feature_id.as_str())
            .filter(|f| NEEDS_TENANT_ATTACH.contains(f))
            .collect();
        if !deps.is_empty() {
            return Err(ApiError::conflict(
                "DependentFeaturesEnabled",
                format!("disable {} before tenant-attach", deps.join(", ")),
            ));
        }
    }
    if !features.iter().any(|f| f.feature_id == fid) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let (row, f2, ch) = (h.row, fid.clone(), ingest::feature_channels(&fid));
    db(&st, move |s| s.delete_feature(row, &f2, &ch)).await?;
    tracing::info!(hierarchy = %h.hierarchy_id, feature = %fid, "feature disabled");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/hierarchies/{hid}/upload/{channel}`
pub(crate) async fn upload(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, channel)): Path<(String, String)>,
    headers: HeaderMap,
    b: Body,
) -> R {
    do_upload(st, c, hid, builtin_channel(&channel)?, headers, b).await
}

fn builtin_channel(channel: &str) -> Result<Channel, ApiError> {
    Channel::builtin(channel).ok_or_else(|| {
        ApiError::not_found(format!(
            "unknown upload channel {channel:?}: use devices, analytics, defender, comanagement or ext/<feature id>"
        ))
    })
}

fn ext_channel(fid: String) -> Result<Channel, ApiError> {
    if !cloudattach_model::is_valid_feature_id(&fid) || BUILTIN_FEATURES.contains(&fid.as_str()) {
        return Err(ApiError::bad_request(format!(
            "{fid:?} is not an extension feature id"
        )));
    }
    Ok(Channel::Ext(fid))
}

/// The hierarchy row of a channel the caller may read: the hierarchy's app (or a user of the
/// tenant), with the channel's feature enabled.
async fn readable_channel(
    st: &Arc<AppState>,
    c: &Caller,
    hid: &str,
    ch: &Channel,
) -> Result<i64, ApiError> {
    let h = load_hierarchy(st, c, hid).await?;
    let fid = ch.feature_id().to_string();
    if !features_of(st, h.row)
        .await?
        .iter()
        .any(|f| f.feature_id == fid)
    {
        return Err(ApiError::conflict(
            "FeatureNotEnabled",
            format!(
                "feature {fid} is not enabled for hierarchy {}",
                h.hierarchy_id
            ),
        ));
    }
    Ok(h.row)
}

async fn census(st: Arc<AppState>, c: Caller, hid: String, ch: Channel) -> R {
    let row = readable_channel(&st, &c, &hid, &ch).await?;
    let chan = ch.storage_name();
    let digest = db(&st, move |s| s.channel_digest(row, &chan)).await?;
    Ok(Json(ChannelCensus::new(ch.name(), digest)).into_response())
}

/// Keys per page of `upload/{channel}/keys`.
pub const KEYS_PAGE: usize = 10_000;

async fn keys(
    st: Arc<AppState>,
    c: Caller,
    hid: String,
    ch: Channel,
    q: HashMap<String, String>,
) -> R {
    // The query middleware refuses any parameter but `after`.
    let row = readable_channel(&st, &c, &hid, &ch).await?;
    let (chan, after) = (ch.storage_name(), q.get("after").cloned());
    let mut value = db(&st, move |s| {
        s.channel_keys(row, &chan, after.as_deref(), KEYS_PAGE + 1)
    })
    .await?;
    let next_after = if value.len() > KEYS_PAGE {
        value.truncate(KEYS_PAGE);
        value.last().map(|r| r.key.clone())
    } else {
        None
    };
    Ok(Json(ChannelKeys::new(value, next_after)).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/upload/{channel}`: how many records the channel holds and
/// the digest of their keys.
pub(crate) async fn channel_census(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, channel)): Path<(String, String)>,
) -> R {
    census(st, c, hid, builtin_channel(&channel)?).await
}

/// `GET /api/v1/hierarchies/{hid}/upload/ext/{fid}`
pub(crate) async fn ext_census(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
) -> R {
    census(st, c, hid, ext_channel(fid)?).await
}

/// `GET /api/v1/hierarchies/{hid}/upload/{channel}/keys[?after=KEY]`: the keys the channel
/// holds, a page at a time.
pub(crate) async fn channel_keys(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, channel)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> R {
    keys(st, c, hid, builtin_channel(&channel)?, q).await
}

/// `GET /api/v1/hierarchies/{hid}/upload/ext/{fid}/keys[?after=KEY]`
pub(crate) async fn ext_keys(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> R {
    keys(st, c, hid, ext_channel(fid)?, q).await
}

/// `POST /api/v1/hierarchies/{hid}/upload/ext/{fid}`
pub(crate) async fn upload_ext(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
    headers: HeaderMap,
    b: Body,
) -> R {
    do_upload(st, c, hid, ext_channel(fid)?, headers, b).await
}

async fn do_upload(
    st: Arc<AppState>,
    c: Caller,
    hid: String,
    ch: Channel,
    headers: HeaderMap,
    b: Body,
) -> R {
    c.require_write()?;
    let h = load_hierarchy(&st, &c, &hid).await?;
    if st.env == Environment::China {
        match ch {
            Channel::Devices => return Err(china_refusal("Device upload")),
            Channel::Analytics => return Err(china_refusal("Endpoint analytics")),
            Channel::Defender => return Err(china_refusal("Defender reporting")),
            _ => {}
        }
    }
    let features = features_of(&st, h.row).await?;
    let fid = ch.feature_id().to_string();
    if !features.iter().any(|f| f.feature_id == fid) {
        return Err(ApiError::conflict(
            "FeatureNotEnabled",
            format!(
                "feature {fid} is not enabled for hierarchy {}; enable it before uploading",
                h.hierarchy_id
            ),
        ));
    }
    body::require_json_type(&headers)?;
    let enc = body::encoding(&headers)?;
    let raw = body::read_raw(&headers, b, st.max_body).await?;
    let captured = st.capture.is_some().then(|| raw.clone());
    let ch2 = ch.clone();
    let st2 = st.clone();
    let (ups, dels) = tokio::task::spawn_blocking(move || {
        let bytes = body::decode(enc, raw, st2.max_body, &st2.decode_budget)?;
        ingest::prepare_batch(&ch2, &bytes)
    })
    .await
    .map_err(|_| ApiError::internal("batch preparation failed"))??;
    let require_devices = match ch {
        Channel::Analytics | Channel::Defender => true,
        // Co-management does not depend on device upload: its records cover every eligible
        // device of the site (all or the pilot collection), uploaded or not.
        _ => false,
    };
    // Deleting an uploaded device removes what only exists because it was uploaded (its
    // analytics and Defender records), never its co-management state, which does not depend on
    // the upload scope.
    let cascade: &'static [&'static str] = if ch == Channel::Devices {
        &["analytics", "defender"]
    } else {
        &[]
    };
    let (row, chan, now) = (h.row, ch.storage_name(), util::now_rfc3339());
    let tid = c.tenant_id.clone();
    let res = db(&st, move |s| {
        s.apply_batch(
            &tid,
            row,
            &chan,
            &fid,
            &ups,
            &dels,
            require_devices,
            cascade,
            &now,
        )
    })
    .await;
    match res {
        Ok(r) => {
            tracing::debug!(hierarchy = %h.hierarchy_id, channel = %ch.storage_name(), ?r, "batch applied");
            if let Some(raw) = captured {
                capture_upload(&st, &ch, enc, raw).await;
            }
            Ok(Json(r).into_response())
        }
        Err(StoreError::MissingDevices(keys)) => {
            let n = keys.len();
            Err(ApiError::bad_request(format!(
                "{n} record(s) reference devices not uploaded to hierarchy {}; nothing was changed",
                h.hierarchy_id
            ))
            .with_details(json!({"missing_keys": keys.into_iter().take(100).collect::<Vec<_>>(), "missing_count": n})))
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps an accepted upload's body as received (`--capture-uploads`), in a file named by the
/// order it was answered in, its channel's URL path and its encoding:
/// `00000042.devices.zstd`, `00000043.ext~contoso-inventory.identity`; readable by the owner
/// only (it holds the tenant's records). The batch is stored whatever happens here: a file that
/// cannot be written is logged, and the upload still answered as done.
async fn capture_upload(st: &Arc<AppState>, ch: &Channel, enc: body::Encoding, raw: Bytes) {
    let Some((dir, count)) = &st.capture else {
        return;
    };
    let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let channel = match ch {
        Channel::Ext(fid) => format!("ext~{fid}"),
        builtin => builtin.name(),
    };
    let enc = match enc {
        body::Encoding::Identity => "identity",
        body::Encoding::Gzip => "gzip",
        body::Encoding::Zstd => "zstd",
    };
    let path = dir.join(format!("{n:08}.{channel}.{enc}"));
    let written = tokio::task::spawn_blocking(move || {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, &raw))
            .map_err(|e| format!("{}: {e}", path.display()))
    })
    .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "an accepted upload could not be captured"),
        Err(e) => tracing::error!(error = %e, "an accepted upload could not be captured"),
    }
}

/// `GET /api/v1/tenant/settings`
pub(crate) async fn get_tenant_settings(State(st): St, Extension(c): Extension<Caller>) -> R {
    c.require_read()?;
    let tid = c.tenant_id.clone();
    let t = db(&st, move |s| s.find_tenant(&tid))
        .await?
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    Ok(Json(json!({
        "tenant_id": t.id, "domains": t.domains, "environment": st.env.as_str(), "use_intune_rbac": t.use_intune_rbac,
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantSettingsBody {
    use_intune_rbac: bool,
}

/// `PUT /api/v1/tenant/settings` (Global or Intune Administrator)
pub(crate) async fn put_tenant_settings(
    State(st): St,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    b: Body,
) -> R {
    if !c.is_intune_role_admin() {
        return Err(ApiError::forbidden(
            "changing \"Use Intune RBAC\" needs a signed-in Global Administrator or Intune Administrator (Intune Roles/Update)",
        ));
    }
    if st.env == Environment::China {
        return Err(china_refusal("Intune RBAC for cloud-attached devices"));
    }
    let req: TenantSettingsBody = body::json(&st, &headers, b).await?;
    let tid = c.tenant_id.clone();
    db(&st, move |s| {
        s.set_use_intune_rbac(&tid, req.use_intune_rbac)
    })
    .await?;
    get_tenant_settings(State(st), Extension(c)).await
}

//! Cloud actions (`/api/v1`): Intune roles, the actions features declare, asking for an
//! action, the queue the site's connector polls and answers, the connector's heartbeat and
//! health, and the timeouts. See docs/cloud-api.md, "Cloud actions".

use crate::auth::{Caller, CallerKind};
use crate::body;
use crate::error::ApiError;
use crate::gateway::{find_hierarchy, load_hierarchy};
use crate::read::{Page, effective_authority};
use crate::server::{AppState, St, db};
use crate::store::{
    ActionFilter, AnswerOutcome, ConnectorRow, Hierarchy, NewAction, StoreError, StoredAction,
};
use crate::util;
use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudattach_model::actions::{
    AUTHORITY_BOTH, AUTHORITY_INTUNE, ActionAnswer, ActionDecl, ActionDoc, ActionError,
    ActionQueue, ActionRequest, ActionStatus, ActionTarget, ConnectorBeat, ConnectorHealth,
    DeclaredActions, INTUNE_INITIATE, INTUNE_ROLES, MAX_ACTIONS_PER_FEATURE,
    intune_role_permissions, links,
};
use cloudattach_model::{is_collection_id, validate_feature_id};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

type R = Result<Response, ApiError>;
type Q = Query<HashMap<String, String>>;

/// A connector is healthy while it was seen (heartbeat or poll) within this many seconds.
pub const HEALTHY_WITHIN_SECS: i64 = 300;
/// The longest `wait` of a poll, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;
/// The most actions one poll hands out.
pub const MAX_PER_POLL: usize = 100;
/// The longest connector id.
const MAX_CONNECTOR_ID: usize = 128;

fn doc_json(a: &StoredAction) -> Value {
    let mut v = serde_json::to_value(&a.doc).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.insert("connector_id".into(), json!(a.connector_id));
        m.insert("taken".into(), json!(a.taken));
    }
    v
}

fn delegated(c: &Caller, what: &str) -> Result<(String, String), ApiError> {
    c.user()
        .map(|(id, upn)| (id.to_string(), upn.to_string()))
        .ok_or_else(|| ApiError::forbidden(format!("{what} needs a signed-in user of the tenant")))
}

/// A signed-in user of the tenant, or an app with read permission.
fn require_tenant_reader(c: &Caller) -> Result<(), ApiError> {
    match c.kind {
        CallerKind::User { .. } => Ok(()),
        CallerKind::App { .. } => c.require_read(),
    }
}

/// The caller is the app that owns the hierarchy (its connector).
fn require_owner(c: &Caller, h: &Hierarchy) -> Result<(), ApiError> {
    match (c.app_id(), h.app_id.as_deref()) {
        (Some(me), Some(owner)) if me.eq_ignore_ascii_case(owner) => Ok(()),
        (Some(_), _) => Err(ApiError::forbidden(format!(
            "only the app hierarchy {} is attached with may serve its connector",
            h.hierarchy_id
        ))),
        (None, _) => Err(ApiError::forbidden(
            "the connector's endpoints are for the app the hierarchy is attached with (client \
             credentials), not for a signed-in user",
        )),
    }
}

/// A signed-in user of the tenant, or the app that owns `owner_app`'s hierarchy.
fn require_user_or_owner(c: &Caller, owner_app: Option<&str>) -> Result<(), ApiError> {
    match (&c.kind, c.app_id()) {
        (CallerKind::User { .. }, _) => Ok(()),
        (_, Some(me)) if owner_app.is_some_and(|o| o.eq_ignore_ascii_case(me)) => Ok(()),
        _ => Err(ApiError::forbidden(
            "readable by signed-in users of the tenant and by the app the hierarchy is attached with",
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Intune roles

/// `GET /api/v1/roles`: the built-in Intune roles and their permissions.
pub(crate) async fn roles(Extension(c): Extension<Caller>) -> R {
    delegated(&c, "reading Intune roles")?;
    let value: Vec<Value> = INTUNE_ROLES
        .iter()
        .map(|r| json!({"name": r, "permissions": intune_role_permissions(r).unwrap_or(&[])}))
        .collect();
    Ok(Json(json!({ "value": value })).into_response())
}

/// `GET /api/v1/roleAssignments`: the users holding at least one Intune role, paged.
pub(crate) async fn role_assignments(
    State(st): St,
    Extension(c): Extension<Caller>,
    Query(q): Q,
) -> R {
    delegated(&c, "reading Intune role assignments")?;
    let page = Page::of(&q)?;
    let tid = c.tenant_id.clone();
    let users = db(&st, move |s| s.users(&tid)).await?;
    let items: Vec<Value> = users
        .into_iter()
        .filter(|u| !u.intune_roles.is_empty())
        .map(|u| json!({"user_id": u.id, "upn": u.upn, "roles": u.intune_roles}))
        .collect();
    Ok(Json(page.answer(&st, "/api/v1/roleAssignments", &q, items, Map::new())).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesBody {
    roles: Vec<String>,
}

/// `PUT /api/v1/users/{user}/intuneRoles`: replaces a user's Intune roles (Global or Intune
/// Administrator).
pub(crate) async fn put_intune_roles(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(user): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    if !c.is_intune_role_admin() {
        return Err(ApiError::forbidden(
            "assigning Intune roles needs a signed-in Global Administrator or Intune Administrator",
        ));
    }
    let req: RolesBody = body::json(&st, &headers, b).await?;
    let mut roles: Vec<String> = Vec::new();
    for r in req.roles {
        if intune_role_permissions(&r).is_none() {
            return Err(ApiError::bad_request(format!(
                "unknown Intune role {r:?}: the known roles are {}",
                INTUNE_ROLES.join(", ")
            )));
        }
        if !roles.contains(&r) {
            roles.push(r);
        }
    }
    let tid = c.tenant_id.clone();
    let u = db(&st, move |s| {
        let u = if user.contains('@') {
            s.user_by_upn(&user)?.filter(|u| u.tenant_id == tid)
        } else {
            s.user_by_id(&tid, &user.to_ascii_lowercase())?
        };
        let Some(mut u) = u else { return Ok(None) };
        s.set_intune_roles(&tid, &u.id, &roles)?;
        u.intune_roles = roles;
        Ok::<_, StoreError>(Some(u))
    })
    .await?
    .ok_or_else(|| ApiError::not_found("no such user in this tenant"))?;
    tracing::info!(user = %u.upn, roles = ?u.intune_roles, "Intune roles assigned");
    Ok(Json(json!({"user_id": u.id, "upn": u.upn, "roles": u.intune_roles})).into_response())
}

// ---------------------------------------------------------------------------------------------
// Declared actions

fn feature_not_enabled(fid: &str, h: &Hierarchy) -> ApiError {
    ApiError::not_found(format!(
        "feature {fid} is not enabled on hierarchy {}",
        h.hierarchy_id
    ))
}

async fn feature_enabled(st: &Arc<AppState>, h: &Hierarchy, fid: &str) -> Result<bool, ApiError> {
    let (row, f) = (h.row, fid.to_string());
    Ok(db(st, move |s| s.features(row))
        .await?
        .iter()
        .any(|x| x.feature_id == f))
}

/// `PUT /api/v1/hierarchies/{hid}/features/{fid}/actions`: replaces what the feature declares.
pub(crate) async fn put_declared(
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
    let req: DeclaredActions = body::json(&st, &headers, b).await?;
    if !feature_enabled(&st, &h, &fid).await? {
        return Err(feature_not_enabled(&fid, &h));
    }
    if req.value.len() > MAX_ACTIONS_PER_FEATURE {
        return Err(ApiError::bad_request(format!(
            "feature {fid} declares {} actions (at most {MAX_ACTIONS_PER_FEATURE})",
            req.value.len()
        )));
    }
    let mut seen = std::collections::HashSet::new();
    for d in &req.value {
        d.validate().map_err(ApiError::bad_request)?;
        if !seen.insert(d.id.as_str()) {
            return Err(ApiError::bad_request(format!(
                "action \"{}\" is declared twice",
                d.id
            )));
        }
    }
    let (row, f2, decls) = (h.row, fid.clone(), req.value.clone());
    match db(&st, move |s| s.put_declared_actions(row, &f2, &decls)).await {
        Ok(()) => {}
        Err(StoreError::Conflict(m)) => return Err(ApiError::conflict("ActionConflict", m)),
        Err(StoreError::FeatureNotEnabled(_)) => return Err(feature_not_enabled(&fid, &h)),
        Err(e) => return Err(e.into()),
    }
    tracing::info!(hierarchy = %h.hierarchy_id, feature = %fid, actions = req.value.len(), "actions declared");
    get_declared_of(&st, &h, &fid).await
}

async fn get_declared_of(st: &Arc<AppState>, h: &Hierarchy, fid: &str) -> R {
    let row = h.row;
    let all = db(st, move |s| s.declared_actions(row)).await?;
    let value: Vec<ActionDecl> = all
        .into_iter()
        .filter(|(f, _)| f == fid)
        .map(|(_, d)| d)
        .collect();
    Ok(Json(DeclaredActions::new(value)).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/features/{fid}/actions`
pub(crate) async fn get_declared(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, fid)): Path<(String, String)>,
) -> R {
    require_tenant_reader(&c)?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    if !feature_enabled(&st, &h, &fid).await? {
        return Err(feature_not_enabled(&fid, &h));
    }
    get_declared_of(&st, &h, &fid).await
}

/// `GET /api/v1/hierarchies/{hid}/actions/declared`: every declared action with its feature.
pub(crate) async fn hierarchy_declared(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    require_tenant_reader(&c)?;
    let h = find_hierarchy(&st, &c, &hid).await?;
    let row = h.row;
    let all = db(&st, move |s| s.declared_actions(row)).await?;
    let value: Vec<Value> = all
        .into_iter()
        .map(|(f, d)| {
            let mut v = serde_json::to_value(d).unwrap_or(Value::Null);
            v["feature"] = json!(f);
            v
        })
        .collect();
    Ok(Json(json!({ "value": value })).into_response())
}

// ---------------------------------------------------------------------------------------------
// Asking

enum Target {
    Device(String),
    Collection(String),
}

/// `POST /api/v1/hierarchies/{hid}/devices/{resource_id}/actions`
pub(crate) async fn ask_device(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, rid)): Path<(String, String)>,
    headers: HeaderMap,
    b: Body,
) -> R {
    ask(st, c, hid, Target::Device(rid), headers, b).await
}

/// `POST /api/v1/hierarchies/{hid}/collections/{collection_id}/actions`
pub(crate) async fn ask_collection(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path((hid, cid)): Path<(String, String)>,
    headers: HeaderMap,
    b: Body,
) -> R {
    ask(st, c, hid, Target::Collection(cid), headers, b).await
}

fn unknown_action(action: &str, declared: &[(String, ActionDecl)]) -> ApiError {
    let ids: Vec<&str> = declared.iter().map(|(_, d)| d.id.as_str()).collect();
    ApiError::bad_request(format!(
        "no enabled feature of this hierarchy declares the action {action:?} (declared: {})",
        if ids.is_empty() {
            "none".to_string()
        } else {
            ids.join(", ")
        }
    ))
    .with_details(json!({ "declared": ids }))
    .with_code("UnknownAction")
}

async fn ask(
    st: Arc<AppState>,
    c: Caller,
    hid: String,
    target: Target,
    headers: HeaderMap,
    b: Body,
) -> R {
    let Some((user_id, upn)) = c.user().map(|(i, u)| (i.to_string(), u.to_string())) else {
        return Err(ApiError::forbidden(
            "cloud actions are asked by a signed-in person (a delegated token), not by an app",
        ));
    };
    let h = find_hierarchy(&st, &c, &hid).await?;
    let req: ActionRequest = body::json(&st, &headers, b).await?;
    let (row, tid) = (h.row, c.tenant_id.clone());
    let (declared, features, use_intune_rbac) = db(&st, move |s| {
        let t = s.find_tenant(&tid)?.is_some_and(|t| t.use_intune_rbac);
        Ok::<_, StoreError>((s.declared_actions(row)?, s.features(row)?, t))
    })
    .await?;
    let Some((feature, decl)) = declared.iter().find(|(_, d)| d.id == req.action).cloned() else {
        return Err(unknown_action(&req.action, &declared));
    };
    let (kind, how) = match &target {
        Target::Device(_) => (ActionTarget::Device, "devices/{resource_id}"),
        Target::Collection(_) => (ActionTarget::Collection, "collections/{collection_id}"),
    };
    if decl.target != kind {
        let path = match decl.target {
            ActionTarget::Device => "devices/{resource_id}",
            ActionTarget::Collection => "collections/{collection_id}",
        };
        return Err(ApiError::bad_request(format!(
            "the action \"{}\" runs on a {}, not on a {} (ask it at …/{path}/actions, not …/{how}/actions)",
            decl.id,
            decl.target.as_str(),
            kind.as_str()
        )));
    }
    let (resource_id, collection_id) = match target {
        Target::Device(rid) => {
            let id = rid
                .parse::<i64>()
                .ok()
                .filter(|i| *i > 0 && i.to_string() == rid)
                .ok_or_else(|| {
                    ApiError::bad_request(format!("resource id {rid:?} is not a positive integer"))
                })?;
            let key = id.to_string();
            if !db(&st, move |s| s.has_record(row, "devices", &key)).await? {
                return Err(ApiError::not_found(format!(
                    "device {id} not uploaded to this hierarchy ({})",
                    h.hierarchy_id
                )));
            }
            (Some(id), None)
        }
        Target::Collection(cid) => {
            if !is_collection_id(&cid) {
                return Err(ApiError::bad_request(format!(
                    "{cid:?} is not a collection id (a site code and 5 hexadecimal digits, such as PS100012)"
                )));
            }
            (None, Some(cid))
        }
    };
    decl.check_parameters(&req.parameters)
        .map_err(ApiError::bad_request)?;

    // The Intune half of authorization: stored either way, as the audit trail.
    let held = c.intune_permissions();
    let missing: Vec<&str> = std::iter::once(INTUNE_INITIATE)
        .chain(decl.intune_permissions.iter().map(String::as_str))
        .filter(|p| !held.contains(p))
        .fold(Vec::new(), |mut v, p| {
            if !v.contains(&p) {
                v.push(p);
            }
            v
        });
    let now_ms = util::now_ms();
    let created = util::unix_to_rfc3339(now_ms.div_euclid(1000));
    let status = if missing.is_empty() {
        ActionStatus::Pending
    } else {
        ActionStatus::Unauthorized
    };
    let mut doc = ActionDoc::new(
        util::uuid(),
        &decl.id,
        &h.hierarchy_id,
        &upn,
        status,
        &created,
    );
    doc.feature = feature;
    doc.resource_id = resource_id;
    doc.collection_id = collection_id;
    doc.parameters = req.parameters;
    doc.requested_by_id = user_id;
    doc.tenant_id = c.tenant_id.clone();
    doc.authority = Some(effective_authority(&features, use_intune_rbac).to_string());
    doc.use_intune_rbac = use_intune_rbac;
    doc.timeout_secs = st.action_timeout_secs.unwrap_or(decl.timeout_secs);
    if !missing.is_empty() {
        let roles = match &c.kind {
            CallerKind::User { intune_roles, .. } if !intune_roles.is_empty() => {
                format!("Intune roles: {}", intune_roles.join(", "))
            }
            _ => "no Intune role".to_string(),
        };
        doc.error = Some(ActionError::new(
            links::INTUNE_ROLE,
            format!(
                "{upn} lacks the Intune permission{} {} that the action \"{}\" needs ({roles})",
                if missing.len() == 1 { "" } else { "s" },
                missing.join(", "),
                decl.id
            ),
        ));
        doc.completed = Some(created.clone());
    }
    let deadline_ms = now_ms.saturating_add((doc.timeout_secs as i64).saturating_mul(1000));
    let new = NewAction {
        doc: doc.clone(),
        hrow: row,
        deadline_ms,
    };
    db(&st, move |s| s.insert_action(&new)).await?;
    if status == ActionStatus::Pending {
        st.wakeup(row).notify_waiters();
    }
    tracing::info!(hierarchy = %h.hierarchy_id, action = %doc.action, id = %doc.id, status = status.as_str(), "action asked");
    let mut r = (
        StatusCode::ACCEPTED,
        Json(json!({"id": doc.id, "status": status.as_str()})),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/actions/{}", doc.id)) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    Ok(r)
}

// ---------------------------------------------------------------------------------------------
// Reading actions

/// `GET /api/v1/actions/{id}`
pub(crate) async fn get_action(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> R {
    let tid = c.tenant_id.clone();
    let a = db(&st, move |s| s.action(&tid, &id))
        .await?
        .ok_or_else(|| ApiError::not_found("no such action in this tenant"))?;
    require_user_or_owner(&c, a.owner_app.as_deref())?;
    // What an action answered is device data: a person reads it with the read right, or reads
    // the actions they asked themselves.
    if let Some((me, _)) = c.user()
        && me != a.doc.requested_by_id
    {
        c.require_read()?;
    }
    Ok(Json(doc_json(&a)).into_response())
}

/// `GET /api/v1/actions?hierarchy=&resource_id=&status=`: newest first, paged.
pub(crate) async fn list_actions(State(st): St, Extension(c): Extension<Caller>, Query(q): Q) -> R {
    let page = Page::of(&q)?;
    let mut f = ActionFilter::default();
    match &c.kind {
        // The actions' answers are device data: the read right, as for the read API.
        CallerKind::User { .. } => c.require_read()?,
        CallerKind::App { .. } => f.owner_app = c.app_id().map(str::to_string),
    }
    if let Some(h) = q.get("hierarchy") {
        f.hierarchy_id = Some(h.to_ascii_lowercase());
    }
    if let Some(r) = q.get("resource_id") {
        f.resource_id =
            Some(r.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("resource_id {r:?} is not an integer"))
            })?);
    }
    if let Some(s) = q.get("status") {
        let known = [
            ActionStatus::Pending,
            ActionStatus::Running,
            ActionStatus::Succeeded,
            ActionStatus::Failed,
            ActionStatus::Unauthorized,
            ActionStatus::TimedOut,
        ];
        if !known.iter().any(|k| k.as_str() == s) {
            return Err(ApiError::bad_request(format!(
                "status {s:?} must be one of {}",
                known.map(|k| k.as_str()).join(", ")
            )));
        }
        f.status = Some(s.clone());
    }
    let tid = c.tenant_id.clone();
    let v = db(&st, move |s| s.actions(&tid, &f)).await?;
    let items: Vec<Value> = v.iter().map(doc_json).collect();
    Ok(Json(page.answer(&st, "/api/v1/actions", &q, items, Map::new())).into_response())
}

// ---------------------------------------------------------------------------------------------
// The connector

/// The connector's health as of `now` (unix seconds).
pub(crate) fn health(hierarchy_id: &str, row: Option<ConnectorRow>, now: i64) -> ConnectorHealth {
    let Some(r) = row else {
        return ConnectorHealth::never_connected(hierarchy_id);
    };
    let mut h = ConnectorHealth::never_connected(hierarchy_id);
    h.connector_id = r.connector_id;
    h.version = r.version;
    h.last_heartbeat = r.last_heartbeat.map(util::unix_to_rfc3339);
    h.last_upload = r.last_upload;
    h.interval_secs = r.interval_secs;
    h.reason = match (r.last_heartbeat, &r.last_error) {
        (None, _) => Some("the connector has never connected".to_string()),
        (Some(t), _) if now - t > HEALTHY_WITHIN_SECS => {
            Some(format!("no heartbeat since {}", util::unix_to_rfc3339(t)))
        }
        (_, Some(e)) => Some(format!("last delta upload failed: {e}")),
        _ => None,
    };
    h.healthy = h.reason.is_none();
    h
}

fn check_connector_id(id: &str) -> Result<(), ApiError> {
    if id.trim().is_empty() || id.chars().count() > MAX_CONNECTOR_ID {
        return Err(ApiError::bad_request(format!(
            "connector_id must be 1 to {MAX_CONNECTOR_ID} characters"
        )));
    }
    Ok(())
}

async fn connector_health(st: &Arc<AppState>, h: &Hierarchy) -> Result<ConnectorHealth, ApiError> {
    let row = h.row;
    let r = db(st, move |s| s.connector(row)).await?;
    Ok(health(&h.hierarchy_id, r, util::now_unix()))
}

/// `PUT /api/v1/hierarchies/{hid}/connector`: the connector's heartbeat.
pub(crate) async fn put_connector(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    let h = find_hierarchy(&st, &c, &hid).await?;
    require_owner(&c, &h)?;
    let beat: ConnectorBeat = body::json(&st, &headers, b).await?;
    check_connector_id(&beat.connector_id)?;
    let row = h.row;
    db(&st, move |s| {
        s.put_connector_beat(row, &beat, util::now_unix())
    })
    .await?;
    Ok(Json(connector_health(&st, &h).await?).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/connector`: the connector's health.
pub(crate) async fn get_connector(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
) -> R {
    let h = find_hierarchy(&st, &c, &hid).await?;
    require_user_or_owner(&c, h.app_id.as_deref())?;
    Ok(Json(connector_health(&st, &h).await?).into_response())
}

/// `GET /api/v1/hierarchies/{hid}/connector/actions?connector_id=&wait=`: the long poll.
pub(crate) async fn poll(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(hid): Path<String>,
    Query(q): Q,
) -> R {
    let h = find_hierarchy(&st, &c, &hid).await?;
    require_owner(&c, &h)?;
    let connector_id = q
        .get("connector_id")
        .cloned()
        .ok_or_else(|| ApiError::bad_request("connector_id is missing"))?;
    check_connector_id(&connector_id)?;
    let wait = match q.get("wait") {
        None => 0,
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_WAIT_SECS)
            .ok_or_else(|| {
                ApiError::bad_request(format!("wait {w:?} must be 0 to {MAX_WAIT_SECS} seconds"))
            })?,
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(wait);
    let wakeup = st.wakeup(h.row);
    loop {
        // Registered before the store is read, so that an action queued meanwhile wakes it.
        let notified = wakeup.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (row, cid) = (h.row, connector_id.clone());
        let taken = db(&st, move |s| {
            s.take_actions(row, &cid, util::now_ms(), MAX_PER_POLL)
        })
        .await?;
        let now = tokio::time::Instant::now();
        if !taken.is_empty() || now >= until {
            let queue = ActionQueue::new(taken.into_iter().map(|a| a.doc).collect());
            let mut v = serde_json::to_value(&queue).unwrap_or(Value::Null);
            if let Value::Array(items) = &mut v["value"] {
                for i in items.iter_mut() {
                    i["connector_id"] = json!(connector_id);
                }
            }
            return Ok(Json(v).into_response());
        }
        // Another instance sharing the database may queue an action: look again every second.
        let nap = (until - now).min(Duration::from_secs(1));
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(nap) => {}
        }
    }
}

/// `POST /api/v1/actions/{id}/answer`: the connector's answer; the first one wins.
pub(crate) async fn answer(
    State(st): St,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
    b: Body,
) -> R {
    let tid = c.tenant_id.clone();
    let id2 = id.clone();
    let a = db(&st, move |s| s.action(&tid, &id2))
        .await?
        .ok_or_else(|| ApiError::not_found("no such action in this tenant"))?;
    match (c.app_id(), a.owner_app.as_deref()) {
        (Some(me), Some(owner)) if me.eq_ignore_ascii_case(owner) => {}
        _ => {
            return Err(ApiError::forbidden(format!(
                "only the app hierarchy {} is attached with may answer its actions",
                a.doc.hierarchy_id
            )));
        }
    }
    let ans: ActionAnswer = body::json(&st, &headers, b).await?;
    check_connector_id(&ans.connector_id)?;
    match ans.status {
        ActionStatus::Succeeded => {}
        ActionStatus::Failed | ActionStatus::Unauthorized if ans.error.is_none() => {
            return Err(ApiError::bad_request(format!(
                "a {} answer needs an error {{\"code\",\"message\"}}",
                ans.status.as_str()
            )));
        }
        ActionStatus::Failed => {}
        ActionStatus::Unauthorized => {
            let code = ans.error.as_ref().map(|e| e.code.as_str()).unwrap_or("");
            let known = [
                links::INTUNE_ROLE,
                links::SITE_USER,
                links::SITE_ROLE,
                links::COLLECTION_SCOPE,
            ];
            if !known.contains(&code) {
                return Err(ApiError::bad_request(format!(
                    "an unauthorized answer's error code {code:?} must name a link of the \
                     authorization chain: {}",
                    known.join(", ")
                )));
            }
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "an answer's status must be succeeded, failed or unauthorized (not {})",
                other.as_str()
            )));
        }
    }
    if ans.authority != AUTHORITY_BOTH && ans.authority != AUTHORITY_INTUNE {
        return Err(ApiError::bad_request(format!(
            "authority {:?} must be {AUTHORITY_BOTH} or {AUTHORITY_INTUNE}",
            ans.authority
        )));
    }
    let tid = c.tenant_id.clone();
    let answering = ans.connector_id.clone();
    let out = db(&st, move |s| {
        s.answer_action(&tid, &id, &ans, util::now_ms())
    })
    .await?;
    match out {
        AnswerOutcome::Recorded(a) => {
            tracing::info!(action = %a.doc.id, status = a.doc.status.as_str(), "action answered");
            Ok(Json(doc_json(&a)).into_response())
        }
        AnswerOutcome::Final(a) => Err(ApiError::conflict(
            "ActionCompleted",
            format!(
                "the action is {} already: the first answer wins, and a timed-out action takes none",
                a.doc.status.as_str()
            ),
        )
        .with_details(json!({ "action": doc_json(&a) }))),
        AnswerOutcome::Missing => Err(ApiError::not_found("no such action in this tenant")),
        AnswerOutcome::NotTaken(a) => Err(ApiError::conflict(
            "ActionNotTaken",
            format!(
                "the action is {} and was never handed to connector {}: a connector answers the \
                 actions its poll gave it",
                a.doc.status.as_str(),
                answering
            ),
        )
        .with_details(json!({ "action": doc_json(&a) }))),
    }
}

/// Times out overdue actions about every second, until the server stops.
pub(crate) async fn sweep(st: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match db(&st, |s| s.expire_actions(util::now_ms())).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(actions = n, "actions timed out"),
            Err(e) => tracing::warn!(error = %e, "the action sweeper failed"),
        }
    }
}

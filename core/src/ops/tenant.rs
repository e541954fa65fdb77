//! `tenant …`: the tenant side from the terminal, signed in as a person of the tenant — the
//! uploaded devices (which Graph does not return), one device with everything the cloud holds,
//! cloud actions asked and waited for, the reports, the "Use Intune RBAC" toggle and the Intune
//! role assignments. Every call is the cloud's HTTP API with the person's own token, so the
//! cloud's authorization decides what they may do.

use super::{OpError, input, runtime};
use crate::client::ApiError;
use crate::session::SessionError;
use crate::session::person::Person;
use cloudattach_sdk::actions::{ActionDoc, ActionRequest};
use reqwest::Method;
use serde_json::{Map, Value, json};
use std::time::{Duration, Instant};

/// A cloud error as the person should see it: a refusal (4xx) is theirs to fix (exit 2), the
/// rest failed while running (exit 1).
fn cloud_error(e: SessionError) -> OpError {
    match e {
        SessionError::Api(ApiError::Status {
            status,
            code,
            message,
            ..
        }) if (400..500).contains(&status) => {
            input(format!("the cloud refused ({status} {code}): {message}"))
        }
        other => runtime(other),
    }
}

fn get(p: &Person, path: &str) -> Result<Value, OpError> {
    p.json(Method::GET, path, None).map_err(cloud_error)
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Uploaded devices: a page of `top` (1–1000), or every page with `all`, filtered by hierarchy
/// and name prefix. `{"@odata.count", "value": [...]}`.
pub fn devices(
    p: &Person,
    hierarchy: Option<&str>,
    name: Option<&str>,
    top: u32,
    all: bool,
) -> Result<Value, OpError> {
    let mut q = vec![format!("$top={}", top.clamp(1, 1000))];
    if let Some(h) = hierarchy {
        q.push(format!("hierarchy={}", enc(h)));
    }
    if let Some(n) = name {
        q.push(format!("name={}", enc(n)));
    }
    let mut answer = get(p, &format!("/api/v1/devices?{}", q.join("&")))?;
    while all
        && let Some(next) = answer
            .get("@odata.nextLink")
            .and_then(Value::as_str)
            .and_then(|l| l.find("/api/").map(|i| l[i..].to_string()))
    {
        let page = get(p, &next)?;
        let more = page["value"].as_array().cloned().unwrap_or_default();
        if more.is_empty() {
            break;
        }
        if let Some(v) = answer["value"].as_array_mut() {
            v.extend(more);
        }
        answer["@odata.nextLink"] = page["@odata.nextLink"].clone();
    }
    if let Some(o) = answer.as_object_mut()
        && all
    {
        o.remove("@odata.nextLink");
    }
    Ok(answer)
}

/// Everything the cloud holds for one uploaded device.
pub fn device(p: &Person, hierarchy: &str, resource_id: i64) -> Result<Value, OpError> {
    get(
        p,
        &format!("/api/v1/hierarchies/{hierarchy}/devices/{resource_id}"),
    )
}

/// What an action runs on.
#[derive(Debug, Clone)]
pub enum Subject {
    /// A device.
    Device(i64),
    /// A collection.
    Collection(String),
}

/// Asks for an action and, unless `wait` is zero, waits for it to end (polling once a second)
/// up to `wait`; returns the action as the cloud last showed it.
pub fn run_action(
    p: &Person,
    hierarchy: &str,
    subject: &Subject,
    action: &str,
    parameters: Map<String, Value>,
    wait: Duration,
) -> Result<ActionDoc, OpError> {
    let path = match subject {
        Subject::Device(id) => format!("/api/v1/hierarchies/{hierarchy}/devices/{id}/actions"),
        Subject::Collection(c) => {
            format!(
                "/api/v1/hierarchies/{hierarchy}/collections/{}/actions",
                enc(c)
            )
        }
    };
    let body = serde_json::to_value(ActionRequest::new(action, parameters)).map_err(runtime)?;
    let asked = p
        .json(Method::POST, &path, Some(&body))
        .map_err(cloud_error)?;
    let id = asked["id"]
        .as_str()
        .ok_or_else(|| runtime(format!("the cloud's answer names no action id: {asked}")))?
        .to_string();
    let deadline = Instant::now() + wait;
    loop {
        let doc: ActionDoc = serde_json::from_value(get(p, &format!("/api/v1/actions/{id}"))?)
            .map_err(|e| runtime(format!("the cloud's action {id} is not readable: {e}")))?;
        if doc.status.is_final() || Instant::now() >= deadline {
            return Ok(doc);
        }
        std::thread::sleep(Duration::from_millis(500).min(deadline - Instant::now()));
    }
}

/// One action, by id.
pub fn action(p: &Person, id: &str) -> Result<ActionDoc, OpError> {
    serde_json::from_value(get(p, &format!("/api/v1/actions/{}", enc(id)))?)
        .map_err(|e| runtime(format!("the cloud's action {id} is not readable: {e}")))
}

/// The reports a person may read, by name.
pub const REPORTS: [(&str, &str); 7] = [
    ("endpoint-analytics", "/api/v1/reports/endpoint-analytics"),
    (
        "endpoint-analytics-apps",
        "/api/v1/reports/endpoint-analytics/apps",
    ),
    (
        "unhealthy-endpoints",
        "/api/v1/reports/defender/unhealthy-endpoints",
    ),
    ("active-malware", "/api/v1/reports/defender/active-malware"),
    (
        "antivirus-agent-status",
        "/api/v1/reports/defender/antivirus-agent-status",
    ),
    (
        "detected-malware",
        "/api/v1/reports/defender/detected-malware",
    ),
    ("co-management", "/api/v1/comanagement/devices"),
];

/// A report, by name ([`REPORTS`]), for one hierarchy or all.
pub fn report(p: &Person, name: &str, hierarchy: Option<&str>) -> Result<Value, OpError> {
    let Some((_, path)) = REPORTS.iter().find(|(n, _)| *n == name) else {
        let known: Vec<&str> = REPORTS.iter().map(|(n, _)| *n).collect();
        return Err(input(format!(
            "no report is named \"{name}\" (reports: {})",
            known.join(", ")
        )));
    };
    let path = match hierarchy {
        Some(h) => format!("{path}?hierarchy={}", enc(h)),
        None => path.to_string(),
    };
    get(p, &path)
}

/// The tenant's settings; with `use_intune_rbac`, sets the "Use Intune RBAC" toggle first.
pub fn rbac(p: &Person, use_intune_rbac: Option<bool>) -> Result<Value, OpError> {
    if let Some(on) = use_intune_rbac {
        p.json(
            Method::PUT,
            "/api/v1/tenant/settings",
            Some(&json!({ "use_intune_rbac": on })),
        )
        .map_err(cloud_error)?;
    }
    get(p, "/api/v1/tenant/settings")
}

/// The Intune roles and who holds them: `{"roles": [...], "assignments": [...]}`.
pub fn roles(p: &Person) -> Result<Value, OpError> {
    let roles = get(p, "/api/v1/roles")?;
    let mut assignments = get(p, "/api/v1/roleAssignments?$top=1000")?;
    while let Some(next) = assignments
        .get("@odata.nextLink")
        .and_then(Value::as_str)
        .and_then(|l| l.find("/api/").map(|i| l[i..].to_string()))
    {
        let page = get(p, &next)?;
        let more = page["value"].as_array().cloned().unwrap_or_default();
        if more.is_empty() {
            break;
        }
        if let Some(v) = assignments["value"].as_array_mut() {
            v.extend(more);
        }
        assignments["@odata.nextLink"] = page["@odata.nextLink"].clone();
    }
    Ok(json!({ "roles": roles["value"], "assignments": assignments["value"] }))
}

/// Replaces a user's Intune roles.
pub fn assign(p: &Person, user: &str, roles: &[String]) -> Result<Value, OpError> {
    p.json(
        Method::PUT,
        &format!("/api/v1/users/{}/intuneRoles", enc(user)),
        Some(&json!({ "roles": roles })),
    )
    .map_err(cloud_error)
}

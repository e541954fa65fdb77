//! `explain`: why, for one device — uploaded or not, co-management class, Endpoint analytics,
//! Defender — and who may run a cloud action on it, link by link. Offline, from the site and
//! `attach.toml`; each feature explains its own decision through its plugin.

use super::{OpError, Workspace, input};
use crate::access::{self, AuthorityInputs, Caller, Decision, SiteRbac, Target};
use crate::selection::{self, Selection};
use cloudattach_sdk::{ActionDecl, Device, DeviceParts, OptionsExt};
use serde::Serialize;
use serde_json::{Map, Value};

/// The id of the feature that defines the upload scope.
const TENANT_ATTACH: &str = "tenant-attach";
/// The id of the feature that holds the RBAC checkbox.
const RBAC_AUTHORITY: &str = "rbac-authority";

/// Keys of the explanation the core writes; a plugin's section may not take them.
const RESERVED: [&str; 4] = ["resource_id", "name", "uploaded", "cloud"];

/// `explain device`: `{"resource_id", "name", "uploaded": {"value", "reason"}, <a section per
/// feature that explains devices>…}`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceExplanation {
    /// The device's resource id.
    pub resource_id: i64,
    /// Its name.
    pub name: String,
    /// Whether tenant attach uploads it, and why.
    pub uploaded: Uploaded,
    /// Each feature's section (`co_management`, `endpoint_analytics`, `defender`, …).
    #[serde(flatten)]
    pub sections: Map<String, Value>,
    /// What the cloud holds for the device (`explain device --cloud`): the cloud's document, or
    /// `{"held": false, "reason"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud: Option<Value>,
}

/// What the cloud holds for one device of this site's hierarchy, read by a signed-in person:
/// `{"held": true, …the cloud's document}` or `{"held": false, "reason"}`.
pub fn cloud_device(
    p: &crate::session::person::Person,
    ws: &Workspace,
    resource_id: i64,
) -> Result<Value, OpError> {
    let hid = &ws.site.info.hierarchy_id;
    match p.json(
        reqwest::Method::GET,
        &format!("/api/v1/hierarchies/{hid}/devices/{resource_id}"),
        None,
    ) {
        Ok(mut v) => {
            if let Value::Object(m) = &mut v {
                m.insert("held".into(), true.into());
            }
            Ok(v)
        }
        Err(crate::session::SessionError::Api(e)) if e.status() == Some(404) => Ok(
            serde_json::json!({"held": false, "reason": format!("the cloud holds no record of device {resource_id} for hierarchy {hid}: {e}")}),
        ),
        Err(e) => Err(super::runtime(e)),
    }
}

/// Whether tenant attach uploads the device, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Uploaded {
    /// Uploaded or not.
    pub value: bool,
    /// The rule that decided.
    pub reason: String,
}

/// Reads the device `resource_id` from the site (one streamed pass) — `None` when no valid line
/// carries it.
fn find_device(ws: &Workspace, resource_id: i64) -> Result<Option<Device>, OpError> {
    let mut found = None;
    ws.site
        .for_each_device_parts(DeviceParts::ALL, &mut |d| {
            if found.is_none() && d.resource_id == resource_id {
                found = Some(d);
            }
        })
        .map_err(super::runtime)?;
    Ok(found)
}

fn unknown_device(ws: &Workspace, resource_id: i64) -> OpError {
    input(format!(
        "no device has the resource id {resource_id} in {} (a line that is not valid is not a \
         device: `check` lists the lines it skipped)",
        ws.site.dir.join("devices.jsonl").display()
    ))
}

/// Whether tenant attach uploads `device`, with the rule: a client, and in the upload
/// collection (with how it is or is not a member) unless every client is uploaded.
fn uploaded(ws: &Workspace, selection: &Selection, device: &Device) -> Uploaded {
    let not = |reason: String| Uploaded {
        value: false,
        reason,
    };
    match selection.decision(TENANT_ATTACH) {
        Some(selection::Decision::Selected(options)) => {
            if !device.client {
                return not(
                    "no Configuration Manager client: tenant attach uploads client devices only"
                        .into(),
                );
            }
            match options.text("upload") {
                None | Some("all") => Uploaded {
                    value: true,
                    reason: "a client device, and tenant attach uploads every client device \
                             (upload = \"all\")"
                        .into(),
                },
                Some(id) => {
                    let name = ws.site.collection(id).map(|c| c.name).unwrap_or_default();
                    match ws.site.membership(id, device.resource_id) {
                        Some(how) if how.is_member() => Uploaded {
                            value: true,
                            reason: format!("in the upload collection {id} ({name}): {how}"),
                        },
                        Some(how) => {
                            not(format!("not in the upload collection {id} ({name}): {how}"))
                        }
                        None => not(format!("the upload collection {id} does not exist")),
                    }
                }
            }
        }
        Some(selection::Decision::Skipped(why)) => {
            not(format!("tenant attach cannot run here: {why}"))
        }
        Some(selection::Decision::NotSelected { reason, .. }) => {
            not(format!("tenant attach is not enabled ({reason})"))
        }
        None => not("tenant attach is not installed".into()),
    }
}

/// `explain device RESOURCE_ID`.
pub fn device(ws: &Workspace, resource_id: i64) -> Result<DeviceExplanation, OpError> {
    let selection = ws.select()?;
    let device = find_device(ws, resource_id)?.ok_or_else(|| unknown_device(ws, resource_id))?;
    let host = selection::host_for(&ws.site, &ws.config, &selection);
    let uploaded = uploaded(ws, &selection, &device);
    let mut sections = Map::new();
    for p in ws.registry.iter() {
        let id = p.manifest.id.as_str();
        let (enabled, options, why_not) = match selection.decision(id) {
            Some(selection::Decision::Selected(o)) => (true, o.clone(), None),
            other => {
                let raw = ws
                    .config
                    .features
                    .get(id)
                    .map(|t| t.options.clone())
                    .unwrap_or_default();
                let why = match other {
                    Some(selection::Decision::Skipped(r)) => r.clone(),
                    Some(selection::Decision::NotSelected { reason, .. }) => reason.clone(),
                    _ => "not selected".into(),
                };
                (
                    false,
                    p.manifest.resolve_options(&raw).unwrap_or_default(),
                    Some(why),
                )
            }
        };
        let Some(explanation) = p.runner().explain_device(&host, &options, enabled, &device) else {
            continue;
        };
        let mut value = explanation.value;
        if let Value::Object(map) = &mut value {
            map.insert("feature".into(), id.into());
            map.insert("feature_enabled".into(), enabled.into());
            if let Some(why) = why_not {
                map.insert("feature_reason".into(), why.into());
            }
        }
        let mut key = explanation.section;
        if RESERVED.contains(&key.as_str()) || sections.contains_key(&key) || key.is_empty() {
            key = id.replace('-', "_");
        }
        sections.insert(key, value);
    }
    Ok(DeviceExplanation {
        resource_id,
        name: device.name,
        uploaded,
        sections,
        cloud: None,
    })
}

/// What `explain access` asks about.
#[derive(Debug, Clone)]
pub struct AccessQuery {
    /// The person's UPN.
    pub user: String,
    /// The target device.
    pub resource_id: i64,
    /// The action's id.
    pub action: String,
    /// The person's Intune and directory roles, as the cloud reports them (`None`: unknown).
    pub roles: Option<Vec<String>>,
    /// The person's object id and tenant id, as the cloud reports them.
    pub identity: Option<(String, String)>,
    /// The tenant's "Use Intune RBAC" toggle (`None`: unknown).
    pub use_intune_rbac: Option<bool>,
    /// The connector's health as the cloud shows it: healthy, and why not (`None`: unknown).
    pub connector: Option<(bool, String)>,
}

/// What the cloud says of one person, the tenant and the hierarchy's connector, read with a
/// signed-in person's token, for [`access`].
pub fn cloud_facts(
    p: &crate::session::person::Person,
    hierarchy: &str,
    user: &str,
) -> Result<CloudFacts, OpError> {
    use reqwest::Method;
    let read = |path: &str| {
        p.json(Method::GET, path, None)
            .map_err(|e| super::runtime(format!("reading {path} from the cloud: {e}")))
    };
    let settings = read("/api/v1/tenant/settings")?;
    let tenant_id = settings["tenant_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut roles = Vec::new();
    let mut object_id = None;
    let mut path = "/api/v1/roleAssignments?$top=1000".to_string();
    loop {
        let page = read(&path)?;
        for a in page["value"].as_array().into_iter().flatten() {
            if a["upn"]
                .as_str()
                .is_some_and(|u| u.eq_ignore_ascii_case(user))
            {
                object_id = a["user_id"].as_str().map(String::from);
                roles.extend(
                    a["roles"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(String::from)),
                );
            }
        }
        match page["@odata.nextLink"]
            .as_str()
            .and_then(|l| l.find("/api/").map(|i| l[i..].to_string()))
        {
            Some(next) if !page["value"].as_array().is_none_or(Vec::is_empty) => path = next,
            _ => break,
        }
    }
    let connector = read(&format!("/api/v1/hierarchies/{hierarchy}/connector"))
        .ok()
        .map(|h| {
            let healthy = h["healthy"].as_bool().unwrap_or(false);
            let detail = if healthy {
                format!(
                    "healthy: last heard {}",
                    h["last_heartbeat"].as_str().unwrap_or("?")
                )
            } else {
                format!(
                    "unhealthy: {} — the action would wait and time out",
                    h["reason"].as_str().unwrap_or("no reason given")
                )
            };
            (healthy, detail)
        });
    Ok(CloudFacts {
        roles,
        identity: object_id.map(|o| (o, tenant_id)),
        use_intune_rbac: settings["use_intune_rbac"].as_bool(),
        connector,
    })
}

/// What [`cloud_facts`] read.
#[derive(Debug, Clone)]
pub struct CloudFacts {
    /// The person's Intune roles (those the role assignments list).
    pub roles: Vec<String>,
    /// Their object id and tenant id, when the role assignments list them.
    pub identity: Option<(String, String)>,
    /// The tenant's toggle.
    pub use_intune_rbac: Option<bool>,
    /// The connector's health.
    pub connector: Option<(bool, String)>,
}

/// `explain access`: the decision with its chain, and the action's declaration.
#[derive(Debug, Clone, Serialize)]
pub struct AccessExplanation {
    /// The decision.
    #[serde(flatten)]
    pub decision: Decision,
    /// The action.
    pub action: String,
    /// The feature that declares it.
    pub feature: String,
    /// Whether every link could be checked (`false` offline: the Intune role and the tenant's
    /// toggle are the cloud's).
    pub complete: bool,
}

/// The effective authority's inputs as this site applies them: the rbac-authority feature's
/// checkbox (`true` when the feature is not selected) and the tenant's toggle.
pub fn authority_inputs(selection: &Selection, use_intune_rbac: Option<bool>) -> AuthorityInputs {
    let enforce = match selection.decision(RBAC_AUTHORITY) {
        Some(selection::Decision::Selected(o)) => o
            .get("enforce_configmgr_rbac")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        _ => true,
    };
    AuthorityInputs {
        enforce_configmgr_rbac: enforce,
        use_intune_rbac,
    }
}

/// The declaration of `action` among the selected features' manifests, with its feature.
pub fn declared_action<'a>(
    ws: &'a Workspace,
    selection: &Selection,
    action: &str,
) -> Result<(&'a str, &'a ActionDecl), OpError> {
    let mut known = Vec::new();
    for p in ws.registry.iter() {
        for a in &p.manifest.actions {
            if a.id == action {
                if matches!(
                    selection.decision(&p.manifest.id),
                    Some(selection::Decision::Selected(_))
                ) {
                    return Ok((p.manifest.id.as_str(), a));
                }
                return Err(input(format!(
                    "the action \"{action}\" is declared by {}, which is not enabled here",
                    p.manifest.id
                )));
            }
            known.push(a.id.as_str());
        }
    }
    Err(input(format!(
        "no feature declares the action \"{action}\" (declared: {})",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// `explain access --user UPN --device ID --action ACTION`.
pub fn access(ws: &Workspace, q: &AccessQuery) -> Result<AccessExplanation, OpError> {
    let selection = ws.select()?;
    let (feature, decl) = declared_action(ws, &selection, &q.action)?;
    if find_device(ws, q.resource_id)?.is_none() {
        return Err(unknown_device(ws, q.resource_id));
    }
    let rbac = SiteRbac::load(&ws.site).map_err(input)?;
    let caller = Caller {
        upn: q.user.clone(),
        object_id: q.identity.as_ref().map(|(o, _)| o.clone()),
        tenant_id: q.identity.as_ref().map(|(_, t)| t.clone()),
        roles: q.roles.clone(),
    };
    let decision = access::decide(
        &ws.site,
        &rbac,
        authority_inputs(&selection, q.use_intune_rbac),
        &caller,
        decl,
        &Target::Device(q.resource_id),
    );
    let complete = q.roles.is_some() && q.use_intune_rbac.is_some() && q.identity.is_some();
    let mut decision = decision;
    if let Some((healthy, detail)) = &q.connector {
        decision.chain.push(access::Link {
            link: access::LINK_CONNECTOR,
            ok: Some(*healthy),
            detail: detail.clone(),
        });
    }
    Ok(AccessExplanation {
        decision,
        action: decl.id.clone(),
        feature: feature.to_string(),
        complete,
    })
}

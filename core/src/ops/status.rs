//! `status`: what the cloud reports now, per plugin — each read on its own, so one that fails
//! (or panics) is reported with its failure and the others still are.

use super::connect::Connection;
use super::{OpError, Workspace, input};
use crate::host::SiteHost;
use crate::registry::Registry;
use crate::selection::host_for;
use cloudattach_sdk::StatusReport;
use serde::Serialize;

/// What `status` read: the loaded plugins in execution order, then the features the cloud has
/// enabled whose plugin is not loaded (with a `note` saying what to load).
#[derive(Debug, Clone, Serialize)]
pub struct StatusOutcome {
    /// One entry per plugin, in execution order.
    pub plugins: Vec<PluginStatus>,
}

impl StatusOutcome {
    /// Whether a plugin's status could not be read (exit 1).
    pub fn failed(&self) -> bool {
        self.plugins.iter().any(|p| p.error.is_some())
    }
    /// The failure to repeat as an error line: a site the cloud does not know.
    pub fn not_attached(&self) -> Option<&str> {
        self.plugins
            .iter()
            .find_map(|p| p.error.as_deref())
            .filter(|e| e.starts_with("site not attached"))
    }
}

/// The selection status reads with: the one validation every command runs, so a
/// configuration plan refuses is refused here too.
pub fn selection(ws: &Workspace) -> Result<crate::selection::Selection, OpError> {
    ws.select()
}

/// Reads every plugin's status.
pub fn run(
    ws: &Workspace,
    selection: &crate::selection::Selection,
    conn: &Connection,
) -> Result<StatusOutcome, OpError> {
    let host = host_for(&ws.site, &ws.config, selection).with_cloud(conn.session.clone());
    let order = ws.registry.execution_order().map_err(input)?;
    let mut plugins: Vec<PluginStatus> = statuses(&ws.registry, &order, &host)
        .into_iter()
        .map(|mut p| {
            p.error = p.failure.as_ref().map(|e| status_error(ws, e));
            p
        })
        .collect();
    // A hierarchy the cloud does not know has already been reported by every plugin.
    if let Ok(answer) = conn
        .session
        .gateway_json(reqwest::Method::GET, "status", None)
    {
        plugins.extend(not_loaded(&ws.registry, &answer));
    }
    Ok(StatusOutcome { plugins })
}

/// The features the cloud has enabled for the hierarchy that no loaded plugin provides, from
/// the hierarchy's status document: shown with what the cloud counts, and what to load.
fn not_loaded(registry: &Registry, answer: &serde_json::Value) -> Vec<PluginStatus> {
    let entries = answer
        .get("plugins")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    entries
        .into_iter()
        .filter_map(|e| {
            let id = e.get("id")?.as_str()?.to_string();
            let enabled = e.get("enabled").and_then(|v| v.as_bool()) == Some(true);
            if !enabled || registry.get(&id).is_some() {
                return None;
            }
            let mut extra = serde_json::Map::new();
            extra.insert("note".into(), super::plan::NOT_LOADED.into());
            Some(PluginStatus {
                id,
                enabled,
                counts: e
                    .get("counts")
                    .and_then(|c| c.as_object())
                    .cloned()
                    .unwrap_or_default(),
                last_sync: e
                    .get("last_sync")
                    .and_then(|v| v.as_str())
                    .map(String::from),
                extra,
                failure: None,
                error: None,
            })
        })
        .collect()
}

/// The message for a plugin whose status could not be read: a hierarchy the cloud does not
/// know (offboarded by `detach`, or never attached) says what to run instead of a raw 404.
fn status_error(ws: &Workspace, e: &cloudattach_sdk::HostError) -> String {
    if e.code == "http-404" && e.message.contains("not attached") {
        format!(
            "site not attached to {}: run `cloudattach apply`",
            ws.config.tenant
        )
    } else {
        e.message.clone()
    }
}

/// One plugin's status as the cloud reports it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// Plugin id.
    pub id: String,
    /// Whether the cloud has it enabled.
    pub enabled: bool,
    /// Counts.
    pub counts: serde_json::Map<String, serde_json::Value>,
    /// Last upload.
    pub last_sync: Option<String>,
    /// Extra keys (rbac-authority's `effective_authority`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// Why the status could not be read (the caller words it for its users).
    #[serde(skip)]
    pub failure: Option<cloudattach_sdk::HostError>,
    /// The failure, worded for the person (`error` in JSON).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads every plugin's status back from the cloud, each on its own: one that fails (or
/// panics) is reported with its failure, the others still are.
pub fn statuses(registry: &Registry, order: &[String], host: &SiteHost) -> Vec<PluginStatus> {
    order
        .iter()
        .map(|id| {
            let p = registry.get(id).expect("registered");
            let result: Result<StatusReport, _> = p.runner().status(host);
            match result {
                Ok(s) => PluginStatus {
                    id: id.clone(),
                    enabled: s.enabled,
                    counts: s.counts,
                    last_sync: s.last_sync,
                    extra: s.extra,
                    failure: None,
                    error: None,
                },
                Err(e) => PluginStatus {
                    id: id.clone(),
                    enabled: false,
                    counts: Default::default(),
                    last_sync: None,
                    extra: Default::default(),
                    failure: Some(e),
                    error: None,
                },
            }
        })
        .collect()
}

//! Cloud actions: what a feature declares it can serve, what the cloud queues for a hierarchy's
//! connector, and what the connector answers — one shape shared by the SDK (manifests), the
//! core (the connector) and the cloud (the queue).
//!
//! An administrator in the cloud console asks for an action on a device (or a collection); the
//! cloud checks the caller's Intune role, queues the action for the hierarchy, and the site's
//! connector picks it up, checks the site's own RBAC when Configuration Manager RBAC is
//! enforced, runs it through the plugin that declared it and answers.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The built-in action "resource explorer": the device's whole inventory record, its
/// collections and how it is in each, and its client details.
pub const RESOURCE_EXPLORER: &str = "resource-explorer";
/// The built-in action "CMPivot": a query over the site's inventory (parameter `query`).
pub const CMPIVOT: &str = "cmpivot";
/// The built-in action "timeline": the events the site knows of one device.
pub const TIMELINE: &str = "timeline";

/// How long the cloud waits for an answer when a declaration does not say (CMPivot's 10
/// minutes).
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;
/// The longest timeout an action may declare.
pub const MAX_TIMEOUT_SECS: u64 = 3600;
/// The most actions one feature may declare.
pub const MAX_ACTIONS_PER_FEATURE: usize = 32;
/// The most parameters one action may declare.
pub const MAX_PARAMETERS: usize = 16;
/// The longest text parameter value, in characters.
pub const MAX_PARAMETER_LEN: usize = 8192;

/// The Intune permission every cloud action needs besides its own ("Initiate Configuration
/// Manager action").
pub const INTUNE_INITIATE: &str = "CloudAttachedDevices/InitiateConfigMgrAction";
/// Intune permission: view resource explorer.
pub const INTUNE_VIEW_RESOURCE_EXPLORER: &str = "CloudAttachedDevices/ViewResourceExplorer";
/// Intune permission: run a CMPivot query.
pub const INTUNE_RUN_CMPIVOT: &str = "CloudAttachedDevices/RunCMPivotQuery";
/// Intune permission: view the timeline.
pub const INTUNE_VIEW_TIMELINE: &str = "CloudAttachedDevices/ViewTimeline";
/// Intune permission: view the device's collections and client details.
pub const INTUNE_VIEW_CLIENT_DETAILS: &str = "CloudAttachedDevices/ViewClientDetails";

/// The built-in Intune role that may run every cloud-attached action.
pub const ROLE_HELP_DESK_OPERATOR: &str = "Help Desk Operator";
/// The built-in Intune role that may view but run no action.
pub const ROLE_READ_ONLY_OPERATOR: &str = "Read Only Operator";

/// The Intune permissions of a built-in Intune role (`None` for an unknown role).
pub fn intune_role_permissions(role: &str) -> Option<&'static [&'static str]> {
    match role {
        ROLE_HELP_DESK_OPERATOR => Some(&[
            INTUNE_INITIATE,
            INTUNE_VIEW_RESOURCE_EXPLORER,
            INTUNE_RUN_CMPIVOT,
            INTUNE_VIEW_TIMELINE,
            INTUNE_VIEW_CLIENT_DETAILS,
        ]),
        ROLE_READ_ONLY_OPERATOR => Some(&[INTUNE_VIEW_CLIENT_DETAILS]),
        _ => None,
    }
}

/// The built-in Intune roles, in the order the cloud lists them.
pub const INTUNE_ROLES: [&str; 2] = [ROLE_HELP_DESK_OPERATOR, ROLE_READ_ONLY_OPERATOR];

/// Every Intune permission of cloud-attached devices (what a Global or Intune Administrator
/// holds).
pub const ALL_INTUNE_PERMISSIONS: [&str; 5] = [
    INTUNE_INITIATE,
    INTUNE_VIEW_RESOURCE_EXPLORER,
    INTUNE_RUN_CMPIVOT,
    INTUNE_VIEW_TIMELINE,
    INTUNE_VIEW_CLIENT_DETAILS,
];

/// The union of the Intune permissions of `roles` (unknown roles grant nothing), in the order
/// of [`ALL_INTUNE_PERMISSIONS`].
pub fn intune_permissions_of<S: AsRef<str>>(roles: &[S]) -> Vec<&'static str> {
    ALL_INTUNE_PERMISSIONS
        .iter()
        .copied()
        .filter(|p| {
            roles
                .iter()
                .any(|r| intune_role_permissions(r.as_ref()).is_some_and(|perms| perms.contains(p)))
        })
        .collect()
}

/// Site permission: read the collection (every action needs it).
pub const SITE_READ: &str = "Read";
/// Site permission: read the resources of the collection (inventory).
pub const SITE_READ_RESOURCE: &str = "Read Resource";
/// Site permission: run CMPivot.
pub const SITE_RUN_CMPIVOT: &str = "Run CMPivot";
/// Site permission: notify the resources of the collection (timeline).
pub const SITE_NOTIFY_RESOURCE: &str = "Notify Resource";

/// The links of the authorization chain that can refuse an action, as `error.code` names them.
pub mod links {
    /// The caller's Intune role lacks the action's Intune permission.
    pub const INTUNE_ROLE: &str = "intune-role";
    /// The caller is not a discovered user of the site (or user discovery is off).
    pub const SITE_USER: &str = "site-user";
    /// The caller is no administrative user of the site whose roles grant the site permission.
    pub const SITE_ROLE: &str = "site-role";
    /// The target is in none of the collections assigned to the caller.
    pub const COLLECTION_SCOPE: &str = "collection-scope";
}

/// The effective RBAC authority when Configuration Manager RBAC is enforced as well.
pub const AUTHORITY_BOTH: &str = "configmgr+intune";
/// The effective RBAC authority when Intune alone authorizes.
pub const AUTHORITY_INTUNE: &str = "intune";

/// What an action runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionTarget {
    /// One device: `…/devices/{resource_id}/actions`.
    Device,
    /// One collection: `…/collections/{collection_id}/actions`.
    Collection,
}

impl ActionTarget {
    /// `device` or `collection`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionTarget::Device => "device",
            ActionTarget::Collection => "collection",
        }
    }
}

/// The type of an action parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParameterKind {
    /// A JSON string of at most [`MAX_PARAMETER_LEN`] characters.
    String,
    /// A JSON integer.
    Integer,
    /// A JSON boolean.
    Boolean,
}

impl ParameterKind {
    fn accepts(self, v: &Value) -> bool {
        match self {
            ParameterKind::String => v
                .as_str()
                .is_some_and(|s| s.chars().count() <= MAX_PARAMETER_LEN),
            ParameterKind::Integer => v.is_i64() || v.is_u64(),
            ParameterKind::Boolean => v.is_boolean(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            ParameterKind::String => "string",
            ParameterKind::Integer => "integer",
            ParameterKind::Boolean => "boolean",
        }
    }
}

/// One declared parameter of an action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ActionParameter {
    /// The name, in `parameters`.
    pub name: String,
    /// The type of its value.
    #[serde(rename = "type")]
    pub kind: ParameterKind,
    /// Whether a request must carry it.
    #[serde(default)]
    pub required: bool,
    /// One line for the console and `--help`.
    #[serde(default)]
    pub description: String,
}

impl ActionParameter {
    /// A parameter.
    pub fn new(
        name: impl Into<String>,
        kind: ParameterKind,
        required: bool,
        description: impl Into<String>,
    ) -> Self {
        ActionParameter {
            name: name.into(),
            kind,
            required,
            description: description.into(),
        }
    }
}

/// An action a feature declares: the cloud accepts a request for it only while a feature of
/// the hierarchy that declared it is enabled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ActionDecl {
    /// The id, kebab-case like a feature id (`cmpivot`, `collection-report`).
    pub id: String,
    /// The display name.
    pub name: String,
    /// What it runs on.
    pub target: ActionTarget,
    /// Its parameters; a request may carry no other.
    #[serde(default)]
    pub parameters: Vec<ActionParameter>,
    /// The site permissions the caller's security roles must grant on a collection that holds
    /// the target (when Configuration Manager RBAC is enforced).
    pub site_permissions: Vec<String>,
    /// The Intune permissions the caller's Intune roles must grant (besides
    /// [`INTUNE_INITIATE`], which every action needs).
    pub intune_permissions: Vec<String>,
    /// How long the cloud waits for the answer before the action is `timedOut`.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_timeout() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

impl ActionDecl {
    /// A declaration with no parameters, the [`DEFAULT_TIMEOUT_SECS`] and the given permissions.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        target: ActionTarget,
        site_permissions: &[&str],
        intune_permissions: &[&str],
    ) -> Self {
        ActionDecl {
            id: id.into(),
            name: name.into(),
            target,
            parameters: Vec::new(),
            site_permissions: site_permissions.iter().map(|s| s.to_string()).collect(),
            intune_permissions: intune_permissions.iter().map(|s| s.to_string()).collect(),
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }

    /// Adds a parameter.
    pub fn parameter(mut self, p: ActionParameter) -> Self {
        self.parameters.push(p);
        self
    }

    /// Sets the timeout.
    pub fn timeout_secs(mut self, secs: u64) -> Self {
        self.timeout_secs = secs;
        self
    }

    /// Checks the declaration itself: the id's rule, a name, at most [`MAX_PARAMETERS`]
    /// parameters with distinct non-empty names, a timeout between 1 and [`MAX_TIMEOUT_SECS`],
    /// and non-empty permission names. The message names the first problem.
    pub fn validate(&self) -> Result<(), String> {
        crate::ids::validate_feature_id(&self.id)
            .map_err(|e| format!("action id \"{}\" {e}", self.id))?;
        if self.name.trim().is_empty() {
            return Err(format!("action \"{}\" has no name", self.id));
        }
        if self.parameters.len() > MAX_PARAMETERS {
            return Err(format!(
                "action \"{}\" declares {} parameters (at most {MAX_PARAMETERS})",
                self.id,
                self.parameters.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.parameters {
            if p.name.is_empty() || !seen.insert(p.name.as_str()) {
                return Err(format!(
                    "action \"{}\": parameter names must be non-empty and distinct (\"{}\")",
                    self.id, p.name
                ));
            }
        }
        if !(1..=MAX_TIMEOUT_SECS).contains(&self.timeout_secs) {
            return Err(format!(
                "action \"{}\": timeout_secs must be 1 to {MAX_TIMEOUT_SECS} (got {})",
                self.id, self.timeout_secs
            ));
        }
        if self
            .site_permissions
            .iter()
            .chain(&self.intune_permissions)
            .any(|p| p.trim().is_empty())
        {
            return Err(format!("action \"{}\": an empty permission name", self.id));
        }
        Ok(())
    }

    /// Checks a request's parameters against the declaration: every required one present,
    /// every one declared, each of its type. The message names the parameter.
    pub fn check_parameters(&self, parameters: &Map<String, Value>) -> Result<(), String> {
        for (name, value) in parameters {
            let Some(p) = self.parameters.iter().find(|p| &p.name == name) else {
                let known: Vec<&str> = self.parameters.iter().map(|p| p.name.as_str()).collect();
                return Err(format!(
                    "action \"{}\" takes no parameter \"{name}\" (it takes: {})",
                    self.id,
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
            };
            if !p.kind.accepts(value) {
                return Err(format!(
                    "parameter \"{name}\" of action \"{}\" must be a {}{}",
                    self.id,
                    p.kind.as_str(),
                    if p.kind == ParameterKind::String {
                        format!(" of at most {MAX_PARAMETER_LEN} characters")
                    } else {
                        String::new()
                    }
                ));
            }
        }
        if let Some(p) = self
            .parameters
            .iter()
            .find(|p| p.required && !parameters.contains_key(&p.name))
        {
            return Err(format!(
                "action \"{}\" needs the parameter \"{}\"",
                self.id, p.name
            ));
        }
        Ok(())
    }
}

/// The body of `PUT …/features/{feature_id}/actions` and its answer: the actions the feature
/// declares (replacing what it declared before).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeclaredActions {
    /// The declarations.
    pub value: Vec<ActionDecl>,
}

impl DeclaredActions {
    /// A body.
    pub fn new(value: Vec<ActionDecl>) -> Self {
        DeclaredActions { value }
    }
}

/// Where an action is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ActionStatus {
    /// Queued, not yet taken by the connector.
    Pending,
    /// Taken by the connector, not yet answered.
    Running,
    /// Answered with a result.
    Succeeded,
    /// Answered with a failure.
    Failed,
    /// Refused by a link of the authorization chain (`error.code` names it).
    Unauthorized,
    /// No answer within the action's timeout.
    TimedOut,
}

impl ActionStatus {
    /// Whether the action is over (no answer is accepted any more).
    pub fn is_final(self) -> bool {
        !matches!(self, ActionStatus::Pending | ActionStatus::Running)
    }

    /// The name in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Pending => "pending",
            ActionStatus::Running => "running",
            ActionStatus::Succeeded => "succeeded",
            ActionStatus::Failed => "failed",
            ActionStatus::Unauthorized => "unauthorized",
            ActionStatus::TimedOut => "timedOut",
        }
    }
}

/// What an action answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum ActionResult {
    /// Rows and columns.
    Table {
        /// Column names.
        columns: Vec<String>,
        /// Rows, each as long as `columns`.
        rows: Vec<Vec<Value>>,
        /// Whether rows were left out (a result limit).
        #[serde(default)]
        truncated: bool,
    },
    /// A document.
    Document {
        /// The document.
        document: Value,
    },
}

/// Why an action failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionError {
    /// A stable code: one of [`links`] for `unauthorized`, `timedOut`, or the plugin's
    /// diagnostic code for `failed`.
    pub code: String,
    /// What happened, for a person.
    pub message: String,
}

impl ActionError {
    /// An error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ActionError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// An action as the cloud keeps it: `GET /api/v1/actions/{id}`, and each entry the connector
/// receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionDoc {
    /// The action's id.
    pub id: String,
    /// The declared action's id.
    pub action: String,
    /// The feature that declared it.
    #[serde(default)]
    pub feature: String,
    /// The hierarchy.
    pub hierarchy_id: String,
    /// The target device (device actions).
    #[serde(default)]
    pub resource_id: Option<i64>,
    /// The target collection (collection actions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection_id: Option<String>,
    /// The request's parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// The caller's UPN.
    pub requested_by: String,
    /// The caller's Entra object id.
    #[serde(default)]
    pub requested_by_id: String,
    /// The caller's tenant id.
    #[serde(default)]
    pub tenant_id: String,
    /// Where the action is.
    pub status: ActionStatus,
    /// The effective RBAC authority that decided (`configmgr+intune` or `intune`); while the
    /// action waits, the authority the cloud sees (the tenant's toggle and the feature's
    /// setting), which the site checks again against its own setting.
    #[serde(default)]
    pub authority: Option<String>,
    /// The tenant's "Use Intune RBAC" toggle when the action was asked.
    #[serde(default)]
    pub use_intune_rbac: bool,
    /// The result (`succeeded`).
    #[serde(default)]
    pub result: Option<ActionResult>,
    /// The failure or refusal (`failed`, `unauthorized`, `timedOut`).
    #[serde(default)]
    pub error: Option<ActionError>,
    /// When it was asked (RFC 3339).
    pub created: String,
    /// When it was answered or timed out (RFC 3339).
    #[serde(default)]
    pub completed: Option<String>,
    /// The timeout it was asked with, in seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

impl ActionDoc {
    /// A document with the given identity and status; every other field empty (`timeout_secs`
    /// the [`DEFAULT_TIMEOUT_SECS`]).
    pub fn new(
        id: impl Into<String>,
        action: impl Into<String>,
        hierarchy_id: impl Into<String>,
        requested_by: impl Into<String>,
        status: ActionStatus,
        created: impl Into<String>,
    ) -> Self {
        ActionDoc {
            id: id.into(),
            action: action.into(),
            feature: String::new(),
            hierarchy_id: hierarchy_id.into(),
            resource_id: None,
            collection_id: None,
            parameters: Map::new(),
            requested_by: requested_by.into(),
            requested_by_id: String::new(),
            tenant_id: String::new(),
            status,
            authority: None,
            use_intune_rbac: false,
            result: None,
            error: None,
            created: created.into(),
            completed: None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
        }
    }
}

/// The body of `POST /api/v1/hierarchies/{hid}/devices/{resource_id}/actions` (and
/// `…/collections/{collection_id}/actions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ActionRequest {
    /// The declared action's id.
    pub action: String,
    /// Its parameters.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

impl ActionRequest {
    /// A request.
    pub fn new(action: impl Into<String>, parameters: Map<String, Value>) -> Self {
        ActionRequest {
            action: action.into(),
            parameters,
        }
    }
}

/// The connector's answer: `POST /api/v1/actions/{id}/answer`. The first answer wins; a later
/// one is refused with `409` and the recorded status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ActionAnswer {
    /// The connector process that ran it.
    pub connector_id: String,
    /// `succeeded`, `failed` or `unauthorized`.
    pub status: ActionStatus,
    /// The effective authority the site applied.
    pub authority: String,
    /// The result (`succeeded`).
    #[serde(default)]
    pub result: Option<ActionResult>,
    /// The failure or refusal.
    #[serde(default)]
    pub error: Option<ActionError>,
}

impl ActionAnswer {
    /// A successful answer.
    pub fn succeeded(connector_id: &str, authority: &str, result: ActionResult) -> Self {
        ActionAnswer {
            connector_id: connector_id.into(),
            status: ActionStatus::Succeeded,
            authority: authority.into(),
            result: Some(result),
            error: None,
        }
    }

    /// A failure (`failed`) or a refusal (`unauthorized`).
    pub fn refused(
        connector_id: &str,
        status: ActionStatus,
        authority: &str,
        error: ActionError,
    ) -> Self {
        ActionAnswer {
            connector_id: connector_id.into(),
            status,
            authority: authority.into(),
            result: None,
            error: Some(error),
        }
    }
}

/// The connector's heartbeat: `PUT /api/v1/hierarchies/{hid}/connector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConnectorBeat {
    /// A random id per connector process.
    pub connector_id: String,
    /// The product version.
    pub version: String,
    /// The delta upload interval, in seconds.
    pub interval_secs: u64,
    /// When its last delta upload finished (RFC 3339), if it made one.
    #[serde(default)]
    pub last_upload: Option<String>,
    /// Whether its last delta upload failed, and why.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl ConnectorBeat {
    /// A heartbeat with no delta upload yet.
    pub fn new(
        connector_id: impl Into<String>,
        version: impl Into<String>,
        interval_secs: u64,
    ) -> Self {
        ConnectorBeat {
            connector_id: connector_id.into(),
            version: version.into(),
            interval_secs,
            last_upload: None,
            last_error: None,
        }
    }
}

/// The connector's health as the cloud sees it: `GET /api/v1/hierarchies/{hid}/connector`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ConnectorHealth {
    /// The hierarchy.
    pub hierarchy_id: String,
    /// The last connector process seen.
    #[serde(default)]
    pub connector_id: Option<String>,
    /// Its version.
    #[serde(default)]
    pub version: Option<String>,
    /// Its last heartbeat or poll (RFC 3339).
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    /// Its last delta upload (RFC 3339).
    #[serde(default)]
    pub last_upload: Option<String>,
    /// Its delta upload interval, in seconds.
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// Whether it is healthy.
    pub healthy: bool,
    /// Why not (or `null`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl ConnectorHealth {
    /// The health of a hierarchy whose connector never connected.
    pub fn never_connected(hierarchy_id: impl Into<String>) -> Self {
        ConnectorHealth {
            hierarchy_id: hierarchy_id.into(),
            connector_id: None,
            version: None,
            last_heartbeat: None,
            last_upload: None,
            interval_secs: None,
            healthy: false,
            reason: Some("the connector has never connected".into()),
        }
    }
}

/// The answer of the connector's poll: `GET /api/v1/hierarchies/{hid}/connector/actions`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ActionQueue {
    /// The actions to run, oldest first.
    pub value: Vec<ActionDoc>,
}

impl ActionQueue {
    /// A poll's answer.
    pub fn new(value: Vec<ActionDoc>) -> Self {
        ActionQueue { value }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cmpivot() -> ActionDecl {
        ActionDecl::new(
            CMPIVOT,
            "CMPivot",
            ActionTarget::Device,
            &[SITE_READ, SITE_RUN_CMPIVOT],
            &[INTUNE_RUN_CMPIVOT],
        )
        .parameter(ActionParameter::new(
            "query",
            ParameterKind::String,
            true,
            "a query",
        ))
    }

    #[test]
    fn parameters_are_checked_against_the_declaration() {
        let d = cmpivot();
        assert_eq!(d.validate(), Ok(()));
        let ok = json!({"query": "Device"});
        assert_eq!(d.check_parameters(ok.as_object().unwrap()), Ok(()));
        let missing = Map::new();
        assert!(
            d.check_parameters(&missing)
                .unwrap_err()
                .contains("needs the parameter \"query\"")
        );
        let wrong = json!({"query": 5});
        assert!(
            d.check_parameters(wrong.as_object().unwrap())
                .unwrap_err()
                .contains("must be a string")
        );
        let extra = json!({"query": "Device", "x": 1});
        assert!(
            d.check_parameters(extra.as_object().unwrap())
                .unwrap_err()
                .contains("takes no parameter \"x\" (it takes: query)")
        );
    }

    #[test]
    fn a_declaration_is_refused_with_the_first_problem() {
        assert!(
            cmpivot()
                .timeout_secs(0)
                .validate()
                .unwrap_err()
                .contains("timeout_secs")
        );
        let mut bad = cmpivot();
        bad.id = "Bad".into();
        assert!(bad.validate().unwrap_err().contains("action id \"Bad\""));
    }

    #[test]
    fn documents_keep_the_pinned_names() {
        let v = serde_json::to_value(ActionStatus::TimedOut).unwrap();
        assert_eq!(v, json!("timedOut"));
        let r = ActionResult::Table {
            columns: vec!["a".into()],
            rows: vec![vec![json!(1)]],
            truncated: false,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"kind":"table","columns":["a"],"rows":[[1]],"truncated":false})
        );
        assert!(
            intune_role_permissions(ROLE_READ_ONLY_OPERATOR)
                .is_some_and(|p| !p.contains(&INTUNE_INITIATE))
        );
    }
}

//! The plugin contract and static registration.

use crate::diag::{ApplyOutcome, CheckReport, Finding, PlanAction, PlanDecision, StatusReport};
use crate::environment::Environment;
use crate::host::{Host, HostError, Method, Record, SyncMode, SyncStats};
use crate::manifest::{Manifest, Options};
use crate::version::SiteVersion;
use cloudattach_model::gateway::{FeatureBody, HierarchyStatus};

/// What `validate` knows: only the selection, never the site's data.
///
/// `#[non_exhaustive]`: build it with [`ValidateContext::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ValidateContext {
    /// The target environment.
    pub environment: Environment,
    /// The site's version.
    pub site_version: SiteVersion,
    /// Whether the wizard's default settings are in use.
    pub default_settings: bool,
}

impl ValidateContext {
    /// The context of one selection.
    pub fn new(
        environment: Environment,
        site_version: SiteVersion,
        default_settings: bool,
    ) -> Self {
        ValidateContext {
            environment,
            site_version,
            default_settings,
        }
    }
}

/// What a cloud action runs on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionSubject {
    /// A device, by resource id.
    Device(i64),
    /// A collection, by id.
    Collection(String),
}

/// A request for one of the plugin's declared actions, as [`Plugin::serve_action`] gets it:
/// already authorized by the cloud (Intune role) and, when Configuration Manager RBAC is
/// enforced, by the site.
///
/// `#[non_exhaustive]`: build it with [`ActionCall::new`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct ActionCall {
    /// The declared action's id.
    pub action: String,
    /// What it runs on.
    pub subject: ActionSubject,
    /// Its parameters, checked against the declaration.
    #[serde(default)]
    pub parameters: serde_json::Map<String, serde_json::Value>,
    /// Who asked (UPN).
    pub requested_by: String,
}

impl ActionCall {
    /// A request.
    pub fn new(
        action: impl Into<String>,
        subject: ActionSubject,
        parameters: serde_json::Map<String, serde_json::Value>,
        requested_by: impl Into<String>,
    ) -> Self {
        ActionCall {
            action: action.into(),
            subject,
            parameters,
            requested_by: requested_by.into(),
        }
    }
}

/// One feature's answer to "why" for one device (`cloudattach explain device`): a section of
/// the explanation, named by the feature (`co_management`, …), holding what it decided for the
/// device and the rule that decided.
///
/// `#[non_exhaustive]`: build it with [`Explanation::new`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Explanation {
    /// The section's key in the explanation document (snake_case).
    pub section: String,
    /// What the feature decided for the device, with a `reason`.
    pub value: serde_json::Value,
}

impl Explanation {
    /// A section.
    pub fn new(section: impl Into<String>, value: serde_json::Value) -> Self {
        Explanation {
            section: section.into(),
            value,
        }
    }
}

/// A cloud feature.
///
/// The lifecycle, Terraform-style: [`Plugin::validate`] (pure) → [`Plugin::check`] (read-only)
/// → [`Plugin::plan`] (pure) → [`Plugin::apply`] → [`Plugin::status`] / [`Plugin::sync`] /
/// [`Plugin::disable`]. Environment and site-version gates and dependency order are the core's
/// job and come from the [`Manifest`]; a plugin only decides what is its own.
///
/// The cloud steps have defaults that talk to the generic feature endpoints of the gateway, so
/// a plugin that only stores settings implements `manifest` and `check`.
///
/// ```
/// use cloudattach_sdk::*;
/// struct Hello;
/// impl Plugin for Hello {
///     fn manifest(&self) -> Manifest { Manifest::new("hello", "Hello", "0.1.0") }
///     fn check(&self, host: &dyn Host, _options: &Options) -> CheckReport {
///         let mut r = CheckReport::default();
///         r.push(Finding::info("site", format!("site {}", host.site().code)));
///         r
///     }
/// }
/// ```
pub trait Plugin: Send + Sync {
    /// The plugin's declaration.
    fn manifest(&self) -> Manifest;

    /// Cross-field validation of resolved options (types and unknown keys are already checked
    /// against the manifest). Pure. Each error finding is a configuration error.
    fn validate(&self, options: &Options, ctx: &ValidateContext) -> Vec<Finding> {
        let _ = (options, ctx);
        vec![]
    }

    /// Read-only prerequisite checks on the site.
    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport;

    /// The settings the cloud stores for this feature. Applying the same settings again is a
    /// no-op. Defaults to the options.
    fn settings(&self, options: &Options) -> serde_json::Value {
        serde_json::Value::Object(options.clone())
    }

    /// What applying would do, given the settings last applied (`None` if never). Pure.
    fn plan(
        &self,
        host: &dyn Host,
        options: &Options,
        applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        let _ = host;
        PlanDecision::new(settings_action(&self.settings(options), applied))
    }

    /// Turns the feature on (or updates it) in the cloud and performs its first upload.
    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        let id = self.manifest().id;
        match put_feature(host, &id, &self.settings(options)) {
            Ok(()) => ApplyOutcome::ok(),
            Err(e) => ApplyOutcome::failed(e.code, e.message),
        }
    }

    /// One upload of what changed (or everything with [`SyncMode::Full`]). `Ok(None)` for a
    /// feature that uploads nothing.
    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let _ = (host, options, mode);
        Ok(None)
    }

    /// What the cloud holds now for this feature.
    fn status(&self, host: &dyn Host) -> Result<StatusReport, HostError> {
        feature_status(host, &self.manifest().id)
    }

    /// Runs one of the cloud actions the manifest declares, for a request that has passed the
    /// authorization chain (the plugin never sees a refused one), and returns its result: rows
    /// and columns or a document. It reads the site through `host` only, never what was
    /// uploaded. A failure carries a stable code and a message for the person who asked.
    fn serve_action(
        &self,
        host: &dyn Host,
        options: &Options,
        call: &ActionCall,
    ) -> Result<crate::ActionResult, crate::ActionError> {
        let _ = (host, options);
        Err(crate::ActionError::new(
            "action-not-served",
            format!(
                "the plugin {} declares no action \"{}\"",
                self.manifest().id,
                call.action
            ),
        ))
    }

    /// Why the feature does (or does not) do what it does for one device, offline, from the
    /// site: `None` when it has nothing to say per device. `enabled` says whether the feature
    /// is selected; `options` are its resolved options (the defaults when it is not).
    fn explain_device(
        &self,
        host: &dyn Host,
        options: &Options,
        enabled: bool,
        device: &crate::Device,
    ) -> Option<Explanation> {
        let _ = (host, options, enabled, device);
        None
    }

    /// Turns the feature off in the cloud.
    fn disable(&self, host: &dyn Host) -> ApplyOutcome {
        match host.cloud(
            Method::Delete,
            &format!("features/{}", self.manifest().id),
            None,
        ) {
            Ok(_) => ApplyOutcome::ok(),
            Err(e) => ApplyOutcome::failed(e.code, e.message),
        }
    }
}

/// The action that takes a feature from the settings last applied (`None`: never) to `wanted`:
/// enable, update or noop. The default [`Plugin::plan`] is this; a plugin that overrides `plan`
/// to add a detail calls it too.
///
/// ```
/// use cloudattach_sdk::{settings_action, PlanAction};
/// let wanted = serde_json::json!({"upload": "all"});
/// assert_eq!(settings_action(&wanted, None), PlanAction::Enable);
/// assert_eq!(settings_action(&wanted, Some(&wanted)), PlanAction::Noop);
/// assert_eq!(settings_action(&wanted, Some(&serde_json::json!({}))), PlanAction::Update);
/// ```
pub fn settings_action(
    wanted: &serde_json::Value,
    applied: Option<&serde_json::Value>,
) -> PlanAction {
    match applied {
        None => PlanAction::Enable,
        Some(prev) if prev == wanted => PlanAction::Noop,
        Some(_) => PlanAction::Update,
    }
}

/// Streams the records `produce` makes from the site's devices into an upload channel, so memory
/// stays flat however large the site is: [`Host::upload_devices`], whose default opens the
/// upload ([`Host::open_sync`]), pushes each record from inside [`Host::for_each_device_with`]
/// (the devices carry the blocks in `parts`) and finishes it. The first failed push ends the
/// upload. `produce` makes a device's record from that device, the options and the collections
/// alone: in a delta the core calls it only for devices whose inventory line changed.
pub fn upload_from_devices(
    host: &dyn Host,
    channel: &str,
    mode: SyncMode,
    parts: crate::DeviceParts,
    produce: &mut dyn FnMut(&crate::Device) -> Option<Record>,
) -> Result<SyncStats, HostError> {
    host.upload_devices(channel, mode, parts, produce)
}

/// The `apply` of a feature that uploads: enable it with its settings (idempotent), then one
/// delta upload through its [`Plugin::sync`]. The outcome counts the records in scope under
/// `count_key` and the records sent under `sent`, with `describe`'s line as an info finding;
/// any error fails the step with the host's code and message.
pub fn enable_and_upload(
    plugin: &dyn Plugin,
    host: &dyn Host,
    options: &Options,
    count_key: &str,
    describe: &dyn Fn(&SyncStats) -> String,
) -> ApplyOutcome {
    let id = plugin.manifest().id;
    if let Err(e) = put_feature(host, &id, &plugin.settings(options)) {
        return ApplyOutcome::failed(e.code, e.message);
    }
    match plugin.sync(host, options, SyncMode::Delta) {
        Ok(Some(stats)) => {
            let mut outcome = ApplyOutcome::ok()
                .count(count_key, stats.total)
                .count("sent", stats.sent);
            outcome
                .findings
                .push(Finding::info(count_key.replace('_', "-"), describe(&stats)));
            outcome
        }
        Ok(None) => ApplyOutcome::ok(),
        Err(e) => ApplyOutcome::failed(e.code, e.message),
    }
}

/// Enables or updates a feature's settings in the cloud (idempotent).
pub fn put_feature(
    host: &dyn Host,
    id: &str,
    settings: &serde_json::Value,
) -> Result<(), HostError> {
    // A struct of one `Value` always serializes.
    let body = serde_json::to_value(FeatureBody::new(settings.clone())).unwrap_or_default();
    host.cloud(Method::Put, &format!("features/{id}"), Some(&body))
        .map(|_| ())
}

/// Reads one feature's status from the cloud's hierarchy status (`GET status`, a
/// [`HierarchyStatus`]): its `enabled`, `counts` and `last_sync`, and every other key of its
/// entry (`settings`, rbac-authority's `effective_authority`, …) as [`StatusReport::extra`]. A
/// feature the answer does not list, or an answer of another shape, is not enabled.
pub fn feature_status(host: &dyn Host, id: &str) -> Result<StatusReport, HostError> {
    let all = host.cloud(Method::Get, "status", None)?;
    let Some(entry) = HierarchyStatus::entry_of(&all, id) else {
        return Ok(StatusReport::default());
    };
    let mut extra = entry.extra.clone();
    if let Some(settings) = &entry.settings {
        extra.insert("settings".into(), settings.clone());
    }
    let mut report = StatusReport::new(entry.enabled).with_last_sync(entry.last_sync.clone());
    report.counts = entry.counts.clone();
    report.extra = extra;
    Ok(report)
}

/// A plugin registered into the binary at link time (see [`crate::register_plugin!`]).
pub struct PluginRegistration {
    /// Creates the plugin.
    pub create: fn() -> Box<dyn Plugin>,
}

inventory::collect!(PluginRegistration);

/// Every plugin registered statically in this binary, in no particular order.
pub fn registered_plugins() -> impl Iterator<Item = Box<dyn Plugin>> {
    inventory::iter::<PluginRegistration>
        .into_iter()
        .map(|r| (r.create)())
}

/// Registers a plugin statically.
///
/// ```ignore
/// cloudattach_sdk::register_plugin!(MyPlugin);
/// ```
/// The binary must name the plugin's crate (`use my_plugin as _;`), or the linker drops it.
#[macro_export]
macro_rules! register_plugin {
    ($ctor:expr) => {
        $crate::inventory::submit! {
            $crate::PluginRegistration { create: || ::std::boxed::Box::new($ctor) }
        }
    };
}

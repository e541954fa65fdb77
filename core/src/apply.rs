//! Apply, sync, status and disable: the plan's steps run in order through the host services,
//! with the state persisted after every step and every acknowledged upload batch.

use crate::config::Config;
use crate::host::{CloudPort, PassHost, SiteHost, shared_pass};
use crate::orchestrator::{AppliedState, Decision, Plan, Selection, host_for};
use crate::registry::Registry;
use crate::session::Session;
use crate::site::Site;
use crate::state::StateStore;
use cloudattach_sdk::{ApplyOutcome, Finding, PlanAction, StatusReport, SyncMode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Done.
    Done,
    /// Nothing to do.
    Noop,
    /// Not run, with a reason.
    Skipped,
    /// Failed; its dependents are skipped.
    Failed,
}

/// One step of an apply, as it ended.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Plugin id.
    pub plugin: String,
    /// The planned action.
    pub action: PlanAction,
    /// How it ended.
    pub status: StepStatus,
    /// Why it was skipped or failed.
    pub reason: Option<String>,
    /// What the plugin counted (devices uploaded, records sent, …).
    pub counts: serde_json::Map<String, serde_json::Value>,
    /// What the plugin said.
    pub findings: Vec<Finding>,
}

/// The message of a caught panic.
pub fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Runs a plugin call, turning a panic into a failed outcome: one plugin never takes the run
/// down.
fn guarded(id: &str, f: impl FnOnce() -> ApplyOutcome) -> ApplyOutcome {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(o) => o,
        Err(p) => ApplyOutcome::failed(
            "plugin-panic",
            format!("plugin {id} panicked: {}", panic_message(p)),
        ),
    }
}

/// The key of the state's meta table that records which plugin owns an upload channel.
pub fn channel_owner_key(channel: &str) -> String {
    format!("channel-owner/{channel}")
}

/// Applies a plan. Steps run in order; a failed step skips its dependents; independent steps
/// go on. Every successful step is recorded before the next one starts.
pub fn apply(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    plan: &Plan,
    session: Arc<Session>,
    state: &Arc<Mutex<StateStore>>,
) -> Vec<StepReport> {
    let host = host_for(site, config, selection).with_cloud(session.clone());
    let options = selection.selected_options();
    let mut reports: Vec<StepReport> = vec![];
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let drifted = match reconcile(&session, state) {
        Ok(d) => d,
        Err(e) => {
            // Without the cloud's view the plan still holds; say so and go on.
            session.log(&format!(
                "warning: could not compare the local state with the cloud: {e}"
            ));
            BTreeMap::new()
        }
    };
    for step in &plan.steps {
        let p = registry
            .get(&step.plugin)
            .expect("planned plugins are registered");
        let mut report = StepReport {
            plugin: step.plugin.clone(),
            action: step.action,
            status: StepStatus::Done,
            reason: step.reason.clone(),
            counts: Default::default(),
            findings: vec![],
        };
        let mut step = step.clone();
        if let (PlanAction::Noop, Some(why)) = (step.action, drifted.get(&step.plugin)) {
            let opts = options.get(&step.plugin).cloned().unwrap_or_default();
            let applied = state
                .lock()
                .expect("state lock")
                .applied_settings(&step.plugin);
            step.action =
                cloudattach_sdk::settings_action(&p.plugin.settings(&opts), applied.as_ref());
            report.action = step.action;
            report
                .findings
                .push(Finding::warning("cloud-drift", why.clone()));
        }
        let step = &step;
        let blocked = p
            .manifest
            .depends_on
            .iter()
            .find_map(|d| failed.get(d).map(|why| (d.clone(), why.clone())));
        match step.action {
            PlanAction::Skip => report.status = StepStatus::Skipped,
            PlanAction::Noop => report.status = StepStatus::Noop,
            PlanAction::Enable | PlanAction::Update if blocked.is_some() => {
                let (dep, why) = blocked.expect("checked");
                report.status = StepStatus::Skipped;
                report.reason = Some(format!("depends on {dep}, which {why}"));
                failed.insert(step.plugin.clone(), "was skipped".into());
            }
            PlanAction::Enable | PlanAction::Update => {
                let opts = options.get(&step.plugin).cloned().unwrap_or_default();
                session.set_current_plugin(&step.plugin);
                let outcome = guarded(&step.plugin, || p.plugin.apply(&host, &opts));
                let outcome = record(outcome, || {
                    state
                        .lock()
                        .expect("state lock")
                        .set_feature(&step.plugin, &p.plugin.settings(&opts))
                });
                finish(&mut report, outcome, &mut failed);
            }
            PlanAction::Disable => {
                session.set_current_plugin(&step.plugin);
                let outcome = guarded(&step.plugin, || p.plugin.disable(&host));
                let outcome = record(outcome, || forget_feature(state, &step.plugin));
                finish(&mut report, outcome, &mut failed);
            }
        }
        reports.push(report);
    }
    reports
}

fn record(
    outcome: ApplyOutcome,
    save: impl FnOnce() -> Result<(), crate::state::StateError>,
) -> ApplyOutcome {
    if !outcome.ok {
        return outcome;
    }
    match save() {
        Ok(()) => outcome,
        Err(e) => ApplyOutcome::failed("state", e.to_string()),
    }
}

fn finish(report: &mut StepReport, outcome: ApplyOutcome, failed: &mut BTreeMap<String, String>) {
    report.counts = outcome.counts;
    report.findings.extend(outcome.findings);
    if !outcome.ok {
        report.status = StepStatus::Failed;
        let why = report
            .findings
            .iter()
            .rev()
            .find(|f| f.severity == cloudattach_sdk::Severity::Error)
            .map(|f| f.message.clone())
            .unwrap_or_else(|| "failed".into());
        report.reason = Some(why);
        failed.insert(report.plugin.clone(), "failed".into());
    }
}

/// Brings the local state in line with what the cloud holds for the hierarchy. A feature the
/// state records as applied but the cloud does not have enabled (the site was attached to
/// another tenant or endpoint since, the cloud was reset, someone disabled it there) is
/// forgotten, so its step enables it again and its channels upload everything; a setting the
/// cloud holds differently is recorded as the cloud has it, so its step updates it. Returns the
/// features that drifted, with why.
pub fn reconcile(
    session: &Session,
    state: &Arc<Mutex<StateStore>>,
) -> Result<BTreeMap<String, String>, String> {
    let answer = session
        .gateway_json(reqwest::Method::GET, "features", None)
        .map_err(|e| e.to_string())?;
    let cloud: BTreeMap<String, serde_json::Value> = answer
        .get("value")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter(|f| f.get("enabled").and_then(|e| e.as_bool()) != Some(false))
        .filter_map(|f| {
            let id = f.get("id")?.as_str()?.to_string();
            Some((id, f.get("settings").cloned().unwrap_or_default()))
        })
        .collect();
    let applied = state
        .lock()
        .expect("state lock")
        .features()
        .map_err(|e| e.to_string())?;
    let mut drifted = BTreeMap::new();
    for (id, settings) in applied {
        match cloud.get(&id) {
            None => {
                forget_feature(state, &id).map_err(|e| e.to_string())?;
                let why = "the cloud does not have this feature enabled: enabling it again";
                drifted.insert(id, why.to_string());
            }
            Some(held) => {
                let differs = settings
                    .as_object()
                    .is_some_and(|local| local.iter().any(|(k, v)| held.get(k) != Some(v)));
                if differs {
                    let mut recorded = settings.clone();
                    if let (Some(r), Some(h)) = (recorded.as_object_mut(), held.as_object()) {
                        for (k, v) in r.iter_mut() {
                            *v = h.get(k).cloned().unwrap_or(serde_json::Value::Null);
                        }
                    }
                    state
                        .lock()
                        .expect("state lock")
                        .set_feature(&id, &recorded)
                        .map_err(|e| e.to_string())?;
                    let why = format!("the cloud holds other settings ({held}): updating them");
                    drifted.insert(id, why);
                }
            }
        }
    }
    Ok(drifted)
}

/// Forgets a disabled feature: its settings and the hashes of the channels it uploaded.
pub fn forget_feature(
    state: &Arc<Mutex<StateStore>>,
    plugin_id: &str,
) -> Result<(), crate::state::StateError> {
    let store = state.lock().expect("state lock");
    let channels = store.channels_owned_by(plugin_id)?;
    for c in &channels {
        store.delete_meta(&channel_owner_key(c))?;
    }
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    store.remove_feature(plugin_id, &refs)
}

/// What one plugin's sync sent.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Plugin id.
    pub id: String,
    /// Records added, changed or removed that were sent.
    pub sent: u64,
    /// Records in scope.
    pub total: u64,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One upload for every enabled feature that uploads. Features run in waves: each wave holds
/// the features whose dependencies ran in earlier waves (tenant-attach and co-management, then
/// the features that need uploaded devices), and the features of a wave run side by side over
/// one shared pass of the inventory.
pub fn sync(
    registry: &Registry,
    selection: &Selection,
    host: &SiteHost,
    session: &Session,
    state: &Arc<Mutex<StateStore>>,
    mode: SyncMode,
) -> Vec<SyncReport> {
    let enabled: Vec<String> = state
        .lock()
        .expect("state lock")
        .features()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Execution order already puts dependencies first: a feature's wave is one past the latest
    // wave of the features it depends on.
    let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
    let mut waves: Vec<Vec<(&str, &cloudattach_sdk::Options)>> = vec![];
    for (id, decision) in &selection.entries {
        let Decision::Selected(options) = decision else {
            continue;
        };
        if !enabled.contains(id) {
            continue;
        }
        let p = registry.get(id).expect("registered");
        let wave = p
            .manifest
            .depends_on
            .iter()
            .filter_map(|d| wave_of.get(d.as_str()).map(|w| w + 1))
            .max()
            .unwrap_or(0);
        wave_of.insert(id, wave);
        if waves.len() <= wave {
            waves.resize_with(wave + 1, Vec::new);
        }
        waves[wave].push((id, options));
    }
    let sync_one =
        |id: &str, options: &cloudattach_sdk::Options, host: &dyn cloudattach_sdk::Host| {
            let p = registry.get(id).expect("registered");
            session.set_current_plugin(id);
            let result = catch_unwind(AssertUnwindSafe(|| p.plugin.sync(host, options, mode)))
                .unwrap_or_else(|panic| {
                    Err(cloudattach_sdk::HostError::new(
                        "plugin-panic",
                        format!("plugin {id} panicked: {}", panic_message(panic)),
                    ))
                });
            match result {
                Ok(Some(stats)) => Some(SyncReport {
                    id: id.to_string(),
                    sent: stats.sent,
                    total: stats.total,
                    error: None,
                }),
                Ok(None) => None,
                Err(e) => Some(SyncReport {
                    id: id.to_string(),
                    sent: 0,
                    total: 0,
                    error: Some(e.message),
                }),
            }
        };
    let mut out = vec![];
    for wave in waves {
        if wave.len() == 1 {
            // Alone, a feature streams the inventory itself and may skip blocks it does not read.
            out.extend(sync_one(wave[0].0, wave[0].1, host));
            continue;
        }
        let reports: Vec<Option<SyncReport>> = std::thread::scope(|scope| {
            let passes = shared_pass(scope, host.site_ref().clone(), wave.len());
            let handles: Vec<_> = wave
                .iter()
                .zip(passes)
                .map(|(&(id, options), pass)| {
                    let sync_one = &sync_one;
                    scope.spawn(move || sync_one(id, options, &PassHost::new(host, pass)))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("panics are caught in sync_one"))
                .collect()
        });
        out.extend(reports.into_iter().flatten());
    }
    out
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
}

/// Reads every plugin's status back from the cloud, each on its own: one that fails (or
/// panics) is reported with its failure, the others still are.
pub fn status(registry: &Registry, order: &[String], host: &SiteHost) -> Vec<PluginStatus> {
    order
        .iter()
        .map(|id| {
            let p = registry.get(id).expect("registered");
            let result: Result<StatusReport, _> =
                catch_unwind(AssertUnwindSafe(|| p.plugin.status(host))).unwrap_or_else(|panic| {
                    Err(cloudattach_sdk::HostError::new(
                        "plugin-panic",
                        format!("plugin {id} panicked: {}", panic_message(panic)),
                    ))
                });
            match result {
                Ok(s) => PluginStatus {
                    id: id.clone(),
                    enabled: s.enabled,
                    counts: s.counts,
                    last_sync: s.last_sync,
                    extra: s.extra,
                    failure: None,
                },
                Err(e) => PluginStatus {
                    id: id.clone(),
                    enabled: false,
                    counts: Default::default(),
                    last_sync: None,
                    extra: Default::default(),
                    failure: Some(e),
                },
            }
        })
        .collect()
}

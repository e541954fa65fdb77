//! `apply`: sign in, read what the cloud holds for the hierarchy (read-only), reconcile the
//! local state with it in memory, plan against that — so the Summary says what will really
//! happen —, and only once the person confirmed: record the reconciliation, register or import
//! the app, onboard the hierarchy and run the plan's steps in order through the plugin runner.
//! Every successful step is recorded before the next one starts; a failed or panicking plugin,
//! or a failed prerequisite check, skips its dependents.

use super::connect::{CloudTarget, Connection, session_error};
use super::plan::{Plan, PlanOptions, Planned, make_plan, select_for_plan};
use super::{OpError, Workspace, runtime};
use crate::config::Config;
use crate::host::LineRound;
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::{Selection, host_for};
use crate::session::Session;
use crate::session::view::{CloudView, read_cloud_view};
use crate::site::Site;
use crate::state::{AppliedState, StateError, StateStore};
use cloudattach_sdk::{ApplyOutcome, Finding, PlanAction};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The selection apply runs with; a configuration with problems is refused here, before anyone
/// signs in or any state is created.
pub fn select(ws: &Workspace, reporter: &dyn Reporter) -> Result<Selection, OpError> {
    select_for_plan(ws, reporter)
}

/// Signs the administrator in and reads what the cloud holds for the site's hierarchy. Reads
/// only: no app is registered, nothing onboarded.
pub fn read_cloud(
    ws: &Workspace,
    target: &CloudTarget,
    reporter: &dyn Reporter,
) -> Result<CloudView, OpError> {
    read_cloud_view(
        &target.handle,
        &target.base_url,
        &ws.config,
        &ws.site.info.hierarchy_id,
        reporter,
    )
    .map_err(|e| session_error(ws, e))
}

/// A plan made against the local state reconciled with the cloud, and that reconciliation, to
/// be recorded once the plan is confirmed.
pub struct Prepared {
    /// The selection and the plan.
    pub planned: Planned,
    /// The state as the cloud has it.
    pub reconciled: Reconciled,
}

/// Plans an apply against the local state (created if missing) reconciled with `view`: a
/// feature the cloud lost is planned `enable`, one it holds with other settings `update`.
/// Nothing is written but the state's creation.
pub fn prepare(
    ws: &Workspace,
    selection: Selection,
    view: &CloudView,
    options: &PlanOptions,
) -> Result<Prepared, OpError> {
    let store = StateStore::open(&ws.config.state_dir())?;
    let reconciled = reconcile(view, &store).map_err(runtime)?;
    let mut plan = make_plan(
        &ws.registry,
        &ws.config,
        &selection,
        &ws.site,
        &reconciled,
        options,
    )?;
    for step in &mut plan.steps {
        if let Some(why) = reconciled.drift.get(&step.plugin)
            && matches!(step.action, PlanAction::Enable | PlanAction::Update)
        {
            step.detail = Some(match &step.detail {
                Some(d) => format!("{why}; {d}"),
                None => why.clone(),
            });
        }
    }
    Ok(Prepared {
        planned: Planned { selection, plan },
        reconciled,
    })
}

/// How many steps of a plan change something (and so need confirming).
pub fn changes(plan: &Plan) -> usize {
    plan.steps
        .iter()
        .filter(|s| !matches!(s.action, PlanAction::Noop | PlanAction::Skip))
        .count()
}

/// What an apply did.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// The steps, as they ended.
    pub steps: Vec<StepReport>,
    /// HTTP requests sent.
    pub requests: u64,
    /// Of which retried.
    pub retries: u64,
    /// Bytes sent.
    #[serde(skip)]
    pub bytes_sent: u64,
}

impl ApplyReport {
    /// Whether a step failed (exit 1).
    pub fn failed(&self) -> bool {
        self.steps.iter().any(|r| r.status == StepStatus::Failed)
    }
}

/// Applies a confirmed plan: records the reconciliation in the state, onboards the hierarchy
/// (with the app the connection registered or imported) and runs the steps.
pub fn execute(
    ws: &Workspace,
    prepared: &Prepared,
    conn: &Connection,
) -> Result<ApplyReport, OpError> {
    prepared
        .reconciled
        .record(&conn.state.lock().expect("state lock"))
        .map_err(runtime)?;
    let planned = &prepared.planned;
    conn.session
        .onboard(&ws.site, planned.selection.environment)
        .map_err(|e| session_error(ws, e))?;
    // The uploads of the steps read every line: like a sync round, they leave the line index
    // for the next delta when every step succeeded (see `sync::run`).
    // An index left by an earlier sync is void from here: a step that uploads and then fails
    // leaves the ledger ahead of it.
    crate::lines::forget(conn.state.lock().expect("state lock").dir());
    let round = Arc::new(LineRound::new(None));
    let steps = run_steps(
        &ws.registry,
        &ws.config,
        &planned.selection,
        &ws.site,
        &planned.plan,
        &prepared.reconciled.drift,
        conn.session.clone(),
        &conn.state,
        Some(round.clone()),
    );
    if steps.iter().all(|s| s.status != StepStatus::Failed)
        && let Ok(round) = Arc::try_unwrap(round)
    {
        super::sync::leave_index(ws, &planned.selection, conn, round);
    }
    let (requests, retries, bytes_sent) = conn.session.client_stats();
    Ok(ApplyReport {
        steps,
        requests,
        retries,
        bytes_sent,
    })
}

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

/// Applies a plan. Steps run in order; a failed step skips its dependents; independent steps
/// go on. Every successful step is recorded before the next one starts. `drift` says, per
/// feature, how the cloud differed from the local state (a `cloud-drift` warning).
#[allow(clippy::too_many_arguments)]
pub fn run_steps(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    plan: &Plan,
    drift: &BTreeMap<String, String>,
    session: Arc<Session>,
    state: &Arc<Mutex<StateStore>>,
    round: Option<Arc<LineRound>>,
) -> Vec<StepReport> {
    let host = host_for(site, config, selection).with_cloud(session.clone());
    let host = match round {
        Some(round) => host.with_round(round),
        None => host,
    };
    let options = selection.selected_options();
    let mut reports: Vec<StepReport> = vec![];
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    for step in &plan.steps {
        let mut report = StepReport {
            plugin: step.plugin.clone(),
            action: step.action,
            status: StepStatus::Done,
            reason: step.reason.clone(),
            counts: Default::default(),
            findings: vec![],
        };
        // A feature no loaded plugin provides is left alone (its step is a skip).
        let Some(p) = registry.get(&step.plugin) else {
            report.status = StepStatus::Skipped;
            reports.push(report);
            continue;
        };
        if let Some(why) = drift.get(&step.plugin) {
            report
                .findings
                .push(Finding::warning("cloud-drift", why.clone()));
        }
        let blocked = p
            .manifest
            .depends_on
            .iter()
            .find_map(|d| failed.get(d).map(|why| (d.clone(), why.clone())));
        match step.action {
            PlanAction::Skip => report.status = StepStatus::Skipped,
            PlanAction::Noop => {
                report.status = StepStatus::Noop;
                declare_actions(&host, &step.actions, p, &mut report);
            }
            PlanAction::Enable | PlanAction::Update if blocked.is_some() => {
                let (dep, why) = blocked.expect("checked");
                report.status = StepStatus::Skipped;
                report.reason = Some(format!("depends on {dep}, which {why}"));
                failed.insert(step.plugin.clone(), "was skipped".into());
            }
            PlanAction::Enable | PlanAction::Update => {
                let opts = options.get(&step.plugin).cloned().unwrap_or_default();
                let runner = p.runner();
                let outcome = match runner.settings(&opts) {
                    Ok(settings) => {
                        let outcome = runner.apply(&host, &opts);
                        record(outcome, || {
                            state
                                .lock()
                                .expect("state lock")
                                .set_feature(&step.plugin, &settings)
                        })
                    }
                    Err(finding) => ApplyOutcome::failed(finding.code, finding.message),
                };
                finish(&mut report, outcome, &mut failed);
                if report.status == StepStatus::Done {
                    declare_actions(&host, &step.actions, p, &mut report);
                }
            }
            PlanAction::Disable => {
                let outcome = p.runner().disable(&host);
                let outcome = record(outcome, || {
                    state
                        .lock()
                        .expect("state lock")
                        .forget_feature(&step.plugin)
                });
                finish(&mut report, outcome, &mut failed);
            }
        }
        reports.push(report);
    }
    reports
}

/// Declares the feature's cloud actions the plan listed for its step
/// (`PUT features/{id}/actions`, idempotent), so the cloud accepts requests for them. A cloud
/// that refuses is a warning: the feature is applied, its actions are not offered.
fn declare_actions(
    host: &crate::host::SiteHost,
    listed: &[String],
    plugin: &crate::registry::RegisteredPlugin,
    report: &mut StepReport,
) {
    if listed.is_empty() {
        return;
    }
    let decls: Vec<_> = plugin
        .manifest
        .actions
        .iter()
        .filter(|a| listed.contains(&a.id))
        .cloned()
        .collect();
    let body = serde_json::to_value(cloudattach_sdk::actions::DeclaredActions::new(decls))
        .unwrap_or_default();
    let path = format!("features/{}/actions", plugin.manifest.id);
    match cloudattach_sdk::Host::cloud(host, cloudattach_sdk::Method::Put, &path, Some(&body)) {
        Ok(_) => report.findings.push(Finding::info(
            "cloud-actions",
            format!("cloud actions declared: {}", listed.join(", ")),
        )),
        Err(e) => report.findings.push(Finding::warning(
            "cloud-actions-not-declared",
            format!(
                "the cloud did not take the feature's cloud actions ({}): {}; run apply again \
                 to offer them",
                listed.join(", "),
                e.message
            ),
        )),
    }
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

/// The local state reconciled with what the cloud holds, in memory until [`Reconciled::record`].
/// A feature the state records as applied but the cloud does not have enabled (the site was
/// attached to another tenant or endpoint since, the cloud was reset, someone disabled it
/// there) is forgotten, so its step enables it again and its channels upload everything; a
/// setting the cloud holds differently is taken as the cloud has it, so its step updates it.
#[derive(Debug, Clone, Default)]
pub struct Reconciled {
    applied: BTreeMap<String, serde_json::Value>,
    cloud_enabled: Vec<String>,
    /// Features the state records as uploading (they own a channel).
    uploading: Vec<String>,
    forget: Vec<String>,
    record: Vec<(String, serde_json::Value)>,
    /// The features that drifted, with why.
    pub drift: BTreeMap<String, String>,
}

impl AppliedState for Reconciled {
    fn applied_settings(&self, plugin_id: &str) -> Option<serde_json::Value> {
        self.applied.get(plugin_id).cloned()
    }
    fn applied_ids(&self) -> Vec<String> {
        self.cloud_enabled.clone()
    }
    fn uploads(&self, plugin_id: &str) -> bool {
        self.uploading.iter().any(|p| p == plugin_id)
    }
}

impl Reconciled {
    /// Records the reconciliation in the state (once the plan is confirmed).
    pub fn record(&self, state: &StateStore) -> Result<(), StateError> {
        for id in &self.forget {
            state.forget_feature(id)?;
        }
        for (id, settings) in &self.record {
            state.set_feature(id, settings)?;
        }
        Ok(())
    }
}

/// Compares the state's applied features with what the cloud holds; writes nothing.
pub fn reconcile(view: &CloudView, state: &StateStore) -> Result<Reconciled, StateError> {
    let mut out = Reconciled {
        cloud_enabled: view.enabled.keys().cloned().collect(),
        ..Reconciled::default()
    };
    for (id, settings) in state.features()? {
        if state.uploads(&id) {
            out.uploading.push(id.clone());
        }
        match view.enabled.get(&id) {
            None => {
                let why = "the cloud does not have this feature enabled: enabling it again";
                out.drift.insert(id.clone(), why.to_string());
                out.forget.push(id);
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
                    let why = format!("the cloud holds other settings ({held}): updating them");
                    out.drift.insert(id.clone(), why);
                    out.applied.insert(id.clone(), recorded.clone());
                    out.record.push((id, recorded));
                } else {
                    out.applied.insert(id, settings);
                }
            }
        }
    }
    Ok(out)
}

//! `apply`: plan against the state, then — once the person confirmed — sign in, onboard the
//! hierarchy, reconcile the state with what the cloud holds, and run the plan's steps in order
//! through the plugin runner. Every successful step is recorded before the next one starts; a
//! failed or panicking plugin skips its dependents.

use super::connect::{Connection, session_error};
use super::plan::{Plan, Planned, make_plan, select_for_plan};
use super::{OpError, Workspace};
use crate::config::Config;
use crate::host::CloudPort;
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::{Selection, host_for};
use crate::session::Session;
use crate::site::Site;
use crate::state::{AppliedState, StateStore};
use cloudattach_sdk::gateway::FeatureList;
use cloudattach_sdk::{ApplyOutcome, Finding, PlanAction};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Plans an apply: the selection (strict) and the plan against the state (created if missing).
pub fn prepare(ws: &Workspace, reporter: &dyn Reporter) -> Result<Planned, OpError> {
    // The selection first: a configuration with problems creates no state.
    let selection = select_for_plan(ws, reporter)?;
    let store = StateStore::open(&ws.config.state_dir())?;
    let plan = make_plan(&ws.registry, &ws.config, &selection, &ws.site, &store)?;
    Ok(Planned { selection, plan })
}

/// Whether a plan changes anything (and so needs confirming).
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

/// Onboards the hierarchy and applies a confirmed plan.
pub fn execute(
    ws: &Workspace,
    planned: &Planned,
    conn: &Connection,
) -> Result<ApplyReport, OpError> {
    conn.session
        .onboard(&ws.site, planned.selection.environment)
        .map_err(|e| session_error(ws, e))?;
    let steps = run_steps(
        &ws.registry,
        &ws.config,
        &planned.selection,
        &ws.site,
        &planned.plan,
        conn.session.clone(),
        &conn.state,
    );
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
/// go on. Every successful step is recorded before the next one starts.
pub fn run_steps(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    plan: &Plan,
    session: Arc<Session>,
    state: &Arc<Mutex<StateStore>>,
) -> Vec<StepReport> {
    let host = host_for(site, config, selection).with_cloud(session.clone());
    let session: &Session = &session;
    let options = selection.selected_options();
    let mut reports: Vec<StepReport> = vec![];
    let mut failed: BTreeMap<String, String> = BTreeMap::new();
    let drifted = match reconcile(session, state) {
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
            if let Ok(settings) = p.runner().settings(&opts) {
                step.action = cloudattach_sdk::settings_action(&settings, applied.as_ref());
            }
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

/// Why the state could not be compared with what the cloud holds.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// The gateway did not answer.
    #[error(transparent)]
    Cloud(#[from] crate::session::SessionError),
    /// Its feature list is not what the gateway answers.
    #[error("the cloud's feature list is not what the gateway answers: {0}")]
    Answer(serde_json::Error),
    /// The state could not be read or written.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
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
) -> Result<BTreeMap<String, String>, ReconcileError> {
    let answer = session.gateway_json(reqwest::Method::GET, "features", None)?;
    let list: FeatureList = serde_json::from_value(answer).map_err(ReconcileError::Answer)?;
    let cloud: BTreeMap<String, serde_json::Value> = list
        .value
        .into_iter()
        .filter(|f| f.enabled)
        .map(|f| (f.id, f.settings))
        .collect();
    let applied = state.lock().expect("state lock").features()?;
    let mut drifted = BTreeMap::new();
    for (id, settings) in applied {
        match cloud.get(&id) {
            None => {
                state.lock().expect("state lock").forget_feature(&id)?;
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
                        .set_feature(&id, &recorded)?;
                    let why = format!("the cloud holds other settings ({held}): updating them");
                    drifted.insert(id, why);
                }
            }
        }
    }
    Ok(drifted)
}

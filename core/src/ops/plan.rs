//! `plan`: what apply would do — the wizard's Summary page. Pure apart from the plugins' reads
//! of the inventory for their details; it opens the state when there is one, never creates it.

use super::{OpError, Workspace};
use crate::config::Config;
use crate::host::{PassHost, shared_pass};
use crate::problem::{Problem, ProblemKind, SelectionError};
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::{
    Decision, Selection, check_collection_references, host_for, require_wizard_version,
};
use crate::site::Site;
use crate::state::{AppliedState, NothingApplied, StateStore};
use cloudattach_sdk::{CheckReport, Environment, PlanAction, PlanDecision, Severity, SiteVersion};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A plan with the selection it was made from.
pub struct Planned {
    /// The selection.
    pub selection: Selection,
    /// The plan.
    pub plan: Plan,
}

/// What the person asked for beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Codes of failing check findings to go ahead despite (`--ignore-check CODE`), one finding
    /// code each: overriding one does not override another.
    pub ignore_checks: Vec<String>,
}

/// The reason of a step for a feature the tenant (or the state) has enabled but no loaded
/// plugin provides: apply cannot plan, update or disable it, so it leaves it alone.
pub const NOT_LOADED: &str =
    "enabled in the tenant; its plugin is not loaded here: load it with --plugin-dir";

/// The selection plan and apply use: the site at the wizard's version or later, and the one
/// validation every command runs; its warnings go to `reporter`.
pub fn select_for_plan(ws: &Workspace, reporter: &dyn Reporter) -> Result<Selection, OpError> {
    require_wizard_version(ws.site.info.version)?;
    let selection = ws.select()?;
    for w in &selection.warnings {
        reporter.warn(w);
    }
    Ok(selection)
}

/// Selects and plans against `applied`; the selection's warnings go to `reporter`.
pub fn plan_with(
    ws: &Workspace,
    applied: &dyn AppliedState,
    options: &PlanOptions,
    reporter: &dyn Reporter,
) -> Result<Planned, OpError> {
    let selection = select_for_plan(ws, reporter)?;
    let plan = make_plan(
        &ws.registry,
        &ws.config,
        &selection,
        &ws.site,
        applied,
        options,
    )?;
    Ok(Planned { selection, plan })
}

/// `plan`: against the state's applied settings when there is a state, else against nothing.
pub fn run(
    ws: &Workspace,
    options: &PlanOptions,
    reporter: &dyn Reporter,
) -> Result<Planned, OpError> {
    // The selection first: a configuration with problems touches no state.
    let selection = select_for_plan(ws, reporter)?;
    let state_dir = ws.config.state_dir();
    let store = if state_dir.join("state.db").is_file() {
        Some(StateStore::open(&state_dir)?)
    } else {
        None
    };
    let applied: &dyn AppliedState = match &store {
        Some(s) => s,
        None => &NothingApplied,
    };
    let plan = make_plan(
        &ws.registry,
        &ws.config,
        &selection,
        &ws.site,
        applied,
        options,
    )?;
    Ok(Planned { selection, plan })
}

/// One step of the plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStep {
    /// Plugin id.
    pub plugin: String,
    /// enable | update | noop | skip | disable.
    pub action: PlanAction,
    /// Why (set for skip).
    pub reason: Option<String>,
    /// What the step will do, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Codes of failing check findings the person chose to go ahead despite.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_checks: Vec<String>,
    /// The cloud actions the feature declares to the cloud with this step (enable, update,
    /// noop): the cloud then accepts requests for them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// Skipped because its check, or the check of a feature it depends on, failed (exit 1).
    #[serde(skip)]
    pub check_failed: bool,
}

impl PlanStep {
    fn new(plugin: &str, action: PlanAction, reason: Option<String>) -> PlanStep {
        PlanStep {
            plugin: plugin.to_string(),
            action,
            reason,
            detail: None,
            ignored_checks: vec![],
            actions: vec![],
            check_failed: false,
        }
    }
}

/// The Summary page.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Environment.
    pub environment: Environment,
    /// "default" | "custom".
    pub settings: &'static str,
    /// Site version.
    pub site_version: SiteVersion,
    /// Steps in execution order (disables first, dependents before what they depend on), then
    /// the features enabled whose plugin is not loaded.
    pub steps: Vec<PlanStep>,
}

impl Plan {
    /// Whether a feature is skipped because a prerequisite check failed (exit 1).
    pub fn check_failed(&self) -> bool {
        self.steps.iter().any(|s| s.check_failed)
    }
}

/// A feature that uploads and whose own settings did not change still has work to do when a feature it depends
/// on changes: what it uploads is scoped by the dependency (tenant-attach's upload scope decides
/// which devices' Endpoint analytics and Defender records the cloud keeps), so its step becomes
/// an `update` that says why, and the Summary shows it before anything changes. Steps are in
/// dependency order, so a change propagates down the whole chain.
fn follow_changed_dependencies(
    registry: &Registry,
    applied: &dyn AppliedState,
    steps: &mut [PlanStep],
) {
    let mut changed: Vec<String> = vec![];
    for step in steps.iter_mut() {
        if step.action == PlanAction::Noop
            && applied.uploads(&step.plugin)
            && let Some(p) = registry.get(&step.plugin)
            && let Some(dep) = p.manifest.depends_on.iter().find(|d| changed.contains(d))
        {
            step.action = PlanAction::Update;
            step.reason = Some(format!(
                "{dep} changes: its records follow {dep}'s settings and are brought in line"
            ));
        }
        if matches!(step.action, PlanAction::Update | PlanAction::Enable) {
            changed.push(step.plugin.clone());
        }
    }
}

/// Plans a selection against what was applied before. Pure apart from the plugins' reads of
/// the inventory for their details and checks.
///
/// Every selected feature's prerequisite check runs beside its plan, over the same pass of the
/// inventory: a feature whose check fails (an error finding whose code `options` does not
/// ignore) is skipped with the failing findings as its reason, and so are its dependents. An
/// ignored code that no failing finding has is a problem, so a typo does not pass silently.
pub fn make_plan(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    applied: &dyn AppliedState,
    options: &PlanOptions,
) -> Result<Plan, SelectionError> {
    require_wizard_version(selection.site_version)?;
    check_collection_references(registry, selection, site)?;
    let host = host_for(site, config, selection);
    let previously: Vec<Option<serde_json::Value>> = selection
        .entries
        .iter()
        .map(|(id, _)| applied.applied_settings(id))
        .collect();
    let selected: Vec<usize> = (0..selection.entries.len())
        .filter(|i| matches!(selection.entries[*i].1, Decision::Selected(_)))
        .collect();
    // The selected plugins plan and check concurrently over one shared pass of the inventory.
    let (mut decisions, mut checks): (Vec<Option<PlanDecision>>, Vec<Option<CheckReport>>) =
        std::thread::scope(|scope| {
            let mut passes =
                shared_pass(scope, site.clone(), 2 * selected.len(), false).into_iter();
            let mut handles = vec![];
            for &i in &selected {
                let (id, decision) = &selection.entries[i];
                let Decision::Selected(options) = decision else {
                    unreachable!("filtered")
                };
                let p = registry.get(id).expect("registered");
                let (base, previous) = (&host, previously[i].as_ref());
                let (plan_pass, check_pass) = (
                    passes.next().expect("a pass each"),
                    passes.next().expect("a pass each"),
                );
                let plan = scope.spawn(move || {
                    p.runner()
                        .plan(&PassHost::new(base, plan_pass), options, previous)
                });
                let check = scope
                    .spawn(move || p.runner().check(&PassHost::new(base, check_pass), options));
                handles.push((i, plan, check));
            }
            let mut decisions = vec![None; selection.entries.len()];
            let mut checks = vec![None; selection.entries.len()];
            for (i, plan, check) in handles {
                decisions[i] = Some(plan.join().expect("the runner catches a plugin's panic"));
                checks[i] = Some(check.join().expect("the runner catches a plugin's panic"));
            }
            (decisions, checks)
        });
    let ignored: BTreeSet<&str> = options.ignore_checks.iter().map(String::as_str).collect();
    let mut ignore_used: BTreeSet<&str> = BTreeSet::new();
    let mut failing_codes: BTreeSet<String> = BTreeSet::new();
    // Features skipped because of a failed check, with why: their dependents are skipped too.
    let mut blocked: BTreeMap<String, String> = BTreeMap::new();
    let mut disables = vec![];
    let mut steps = vec![];
    for (i, (id, decision)) in selection.entries.iter().enumerate() {
        let previously = previously[i].clone();
        let step = match decision {
            Decision::Selected(_) => {
                let d = decisions[i].take().expect("every selected plugin planned");
                let report = checks[i].take().unwrap_or_default();
                let mut failing = vec![];
                let mut ignored_here = vec![];
                for f in report
                    .findings
                    .iter()
                    .filter(|f| f.severity == Severity::Error)
                {
                    failing_codes.insert(f.code.clone());
                    if let Some(code) = ignored.get(f.code.as_str()) {
                        ignore_used.insert(code);
                        ignored_here.push(f.code.clone());
                    } else {
                        failing.push(format!("{}: {}", f.code, f.message));
                    }
                }
                let dependency = registry
                    .get(id)
                    .expect("registered")
                    .manifest
                    .depends_on
                    .iter()
                    .find(|d| blocked.contains_key(*d))
                    .cloned();
                if !failing.is_empty() {
                    let why = format!("check failed: {}", failing.join("; "));
                    blocked.insert(id.clone(), why.clone());
                    PlanStep {
                        ignored_checks: ignored_here,
                        check_failed: true,
                        ..PlanStep::new(id, PlanAction::Skip, Some(why))
                    }
                } else if let Some(dep) = dependency {
                    let why = format!("depends on {dep}, which is skipped: its check failed");
                    blocked.insert(id.clone(), why.clone());
                    PlanStep {
                        ignored_checks: ignored_here,
                        check_failed: true,
                        ..PlanStep::new(id, PlanAction::Skip, Some(why))
                    }
                } else {
                    let actions = match d.action {
                        PlanAction::Enable | PlanAction::Update | PlanAction::Noop => registry
                            .get(id)
                            .map(|p| p.manifest.actions.iter().map(|a| a.id.clone()).collect())
                            .unwrap_or_default(),
                        _ => vec![],
                    };
                    PlanStep {
                        detail: d.detail,
                        ignored_checks: ignored_here,
                        actions,
                        ..PlanStep::new(id, d.action, d.reason)
                    }
                }
            }
            Decision::Skipped(reason) | Decision::NotSelected { reason, .. } => {
                let action = if previously.is_some() {
                    PlanAction::Disable
                } else {
                    PlanAction::Skip
                };
                PlanStep::new(id, action, Some(reason.clone()))
            }
        };
        if step.action == PlanAction::Disable {
            disables.push(step);
        } else {
            steps.push(step);
        }
    }
    let unused: Vec<&str> = ignored.difference(&ignore_used).copied().collect();
    if !unused.is_empty() {
        let failing = if failing_codes.is_empty() {
            "no check of the selected features fails".to_string()
        } else {
            let codes: Vec<&str> = failing_codes.iter().map(String::as_str).collect();
            format!("the failing findings are {}", codes.join(", "))
        };
        return Err(SelectionError {
            problems: unused
                .into_iter()
                .map(|code| {
                    Problem::new(
                        ProblemKind::IgnoreCheck,
                        format!("--ignore-check {code}: no failing check finding has this code"),
                    )
                    .hint(failing.clone())
                })
                .collect(),
        });
    }
    // Enabled, but no loaded plugin provides it: left alone, and said so.
    let mut elsewhere: Vec<String> = applied
        .applied_ids()
        .into_iter()
        .filter(|id| registry.get(id).is_none())
        .collect();
    elsewhere.sort();
    elsewhere.dedup();
    follow_changed_dependencies(registry, applied, &mut steps);
    disables.reverse();
    disables.extend(steps);
    disables.extend(
        elsewhere
            .iter()
            .map(|id| PlanStep::new(id, PlanAction::Skip, Some(NOT_LOADED.to_string()))),
    );
    Ok(Plan {
        environment: selection.environment,
        settings: selection.settings.as_str(),
        site_version: selection.site_version,
        steps: disables,
    })
}

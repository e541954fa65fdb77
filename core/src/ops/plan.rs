//! `plan`: what apply would do — the wizard's Summary page. Pure apart from the plugins' reads
//! of the inventory for their details; it opens the state when there is one, never creates it.

use super::{OpError, Workspace, runtime};
use crate::config::Config;
use crate::host::{PassHost, shared_pass};
use crate::problem::SelectionError;
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::{
    Decision, Selection, Strictness, check_collection_references, host_for, require_wizard_version,
};
use crate::site::Site;
use crate::state::{AppliedState, NothingApplied, StateStore};
use cloudattach_sdk::{Environment, PlanAction, PlanDecision, SiteVersion};
use serde::Serialize;
use std::sync::Arc;

/// A plan with the selection it was made from.
pub struct Planned {
    /// The selection.
    pub selection: Selection,
    /// The plan.
    pub plan: Plan,
}

/// The selection plan and apply use: the site at the wizard's version or later, every
/// conflict a problem; its warnings go to `reporter`.
pub fn select_for_plan(ws: &Workspace, reporter: &dyn Reporter) -> Result<Selection, OpError> {
    require_wizard_version(ws.site.info.version)?;
    let selection = ws.select(Strictness::Strict)?;
    for w in &selection.warnings {
        reporter.warn(w);
    }
    Ok(selection)
}

/// Selects (strictly) and plans against `applied`; the selection's warnings go to `reporter`.
pub fn plan_with(
    ws: &Workspace,
    applied: &dyn AppliedState,
    reporter: &dyn Reporter,
) -> Result<Planned, OpError> {
    let selection = select_for_plan(ws, reporter)?;
    let plan = make_plan(&ws.registry, &ws.config, &selection, &ws.site, applied)?;
    Ok(Planned { selection, plan })
}

/// `plan`: against the state's applied settings when there is a state, else against nothing.
pub fn run(ws: &Workspace, reporter: &dyn Reporter) -> Result<Planned, OpError> {
    // The selection first: a configuration with problems touches no state.
    let selection = select_for_plan(ws, reporter)?;
    let state_dir = ws.config.state_dir();
    let store = if state_dir.join("state.db").is_file() {
        Some(StateStore::open(&state_dir).map_err(runtime)?)
    } else {
        None
    };
    let applied: &dyn AppliedState = match &store {
        Some(s) => s,
        None => &NothingApplied,
    };
    let plan = make_plan(&ws.registry, &ws.config, &selection, &ws.site, applied)?;
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
    /// Steps in execution order (disables first, dependents before what they depend on).
    pub steps: Vec<PlanStep>,
}

/// Plans a selection against what was applied before. Pure apart from the plugins' reads of
/// the inventory for their details.
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

pub fn make_plan(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    applied: &dyn AppliedState,
) -> Result<Plan, SelectionError> {
    require_wizard_version(selection.site_version)?;
    check_collection_references(registry, selection, site)?;
    let host = host_for(site, config, selection);
    let previously: Vec<Option<serde_json::Value>> = selection
        .entries
        .iter()
        .map(|(id, _)| applied.applied_settings(id))
        .collect();
    // The selected plugins plan concurrently over one shared pass of the inventory.
    let mut decisions: Vec<Option<PlanDecision>> = std::thread::scope(|scope| {
        let selected: Vec<usize> = (0..selection.entries.len())
            .filter(|i| matches!(selection.entries[*i].1, Decision::Selected(_)))
            .collect();
        let passes = shared_pass(scope, site.clone(), selected.len());
        let handles: Vec<_> = selected
            .iter()
            .zip(passes)
            .map(|(&i, pass)| {
                let (id, decision) = &selection.entries[i];
                let Decision::Selected(options) = decision else {
                    unreachable!("filtered")
                };
                let p = registry.get(id).expect("registered");
                let (base, previous) = (&host, previously[i].as_ref());
                (
                    i,
                    scope.spawn(move || {
                        p.runner()
                            .plan(&PassHost::new(base, pass), options, previous)
                    }),
                )
            })
            .collect();
        let mut out = vec![None; selection.entries.len()];
        for (i, h) in handles {
            out[i] = Some(h.join().expect("the runner catches a plugin's panic"));
        }
        out
    });
    let mut disables = vec![];
    let mut steps = vec![];
    for (i, (id, decision)) in selection.entries.iter().enumerate() {
        let previously = previously[i].clone();
        let step = match decision {
            Decision::Selected(_) => {
                let d = decisions[i].take().expect("every selected plugin planned");
                PlanStep {
                    plugin: id.clone(),
                    action: d.action,
                    reason: d.reason,
                    detail: d.detail,
                }
            }
            Decision::Skipped(reason) if previously.is_some() => PlanStep {
                plugin: id.clone(),
                action: PlanAction::Disable,
                reason: Some(reason.clone()),
                detail: None,
            },
            Decision::Skipped(reason) => PlanStep {
                plugin: id.clone(),
                action: PlanAction::Skip,
                reason: Some(reason.clone()),
                detail: None,
            },
            Decision::NotSelected { reason, .. } if previously.is_some() => PlanStep {
                plugin: id.clone(),
                action: PlanAction::Disable,
                reason: Some(reason.clone()),
                detail: None,
            },
            Decision::NotSelected { reason, .. } => PlanStep {
                plugin: id.clone(),
                action: PlanAction::Skip,
                reason: Some(reason.clone()),
                detail: None,
            },
        };
        if step.action == PlanAction::Disable {
            disables.push(step);
        } else {
            steps.push(step);
        }
    }
    follow_changed_dependencies(registry, applied, &mut steps);
    disables.reverse();
    disables.extend(steps);
    Ok(Plan {
        environment: selection.environment,
        settings: selection.settings.as_str(),
        site_version: selection.site_version,
        steps: disables,
    })
}

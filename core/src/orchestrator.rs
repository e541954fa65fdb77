//! Selection → validation → dependency order → check / plan (the wizard's Summary page).

use crate::config::{Config, Settings};
use crate::host::{PassHost, SiteHost, shared_pass};
use crate::registry::{Registry, RegistryError};
use crate::site::Site;
use cloudattach_sdk::{
    CheckReport, CheckStatus, Environment, Finding, Manifest, OptionKind, Options, PlanAction,
    PlanDecision, SiteVersion, ValidateContext, is_collection_id,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Why the selection cannot be used: every problem at once. Exit code 2; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct SelectionError {
    /// One line per problem, naming the feature (and key) and what to do.
    pub problems: Vec<String>,
}

impl From<RegistryError> for SelectionError {
    fn from(e: RegistryError) -> Self {
        SelectionError {
            problems: vec![e.to_string()],
        }
    }
}

/// What the selection decided for one plugin.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// It runs with these resolved options.
    Selected(Options),
    /// It would run, but cannot here (environment, site version, or a skipped dependency).
    Skipped(String),
    /// The configuration does not turn it on.
    NotSelected {
        /// Why ("not enabled in attach.toml").
        reason: String,
        /// `enabled = false` was written (so an enabled feature is disabled).
        explicitly_off: bool,
    },
}

/// The selection: a decision per plugin, in execution order.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The environment.
    pub environment: Environment,
    /// Default or custom.
    pub settings: Settings,
    /// The site's version.
    pub site_version: SiteVersion,
    /// Plugin ids with their decision, in execution order.
    pub entries: Vec<(String, Decision)>,
    /// Things worth saying that are not errors (ignored tables under default settings).
    pub warnings: Vec<String>,
}

impl Selection {
    /// The resolved options of the selected plugins.
    pub fn selected_options(&self) -> BTreeMap<String, Options> {
        self.entries
            .iter()
            .filter_map(|(id, d)| match d {
                Decision::Selected(o) => Some((id.clone(), o.clone())),
                _ => None,
            })
            .collect()
    }

    /// The decision for one plugin.
    pub fn decision(&self, id: &str) -> Option<&Decision> {
        self.entries.iter().find(|(i, _)| i == id).map(|(_, d)| d)
    }
}

/// Why a manifest's plugin cannot run in this environment at this site version, if it cannot.
pub fn unsupported_reason(
    m: &Manifest,
    env: Environment,
    site_version: SiteVersion,
) -> Option<String> {
    if !m.environments.contains(&env) {
        let supported: Vec<&str> = m.environments.iter().map(|e| e.as_str()).collect();
        return Some(format!(
            "{} can't be enabled for {} ({}); it is available in {}",
            m.name,
            env.display_name(),
            env,
            supported.join(", ")
        ));
    }
    let min = m.min_site_version_for(env);
    if site_version < min {
        let in_env = if min != m.min_site_version {
            format!(" in {}", env.display_name())
        } else {
            String::new()
        };
        return Some(format!(
            "{} needs site version {min} or later{in_env}; the site is {site_version}",
            m.name
        ));
    }
    None
}

/// Decides, validates and orders the features of a configuration.
pub fn select(
    config: &Config,
    registry: &Registry,
    site_version: SiteVersion,
) -> Result<Selection, SelectionError> {
    let order = registry.execution_order()?;
    let env = config.environment;
    let mut problems = vec![];
    let mut warnings = vec![];
    for id in config.features.keys() {
        if registry.get(id).is_none() {
            let known: Vec<&str> = registry.iter().map(|p| p.manifest.id.as_str()).collect();
            problems.push(format!(
                "[features.{id}]: no plugin has the id `{id}`; known plugins: {} (load others with --plugin-dir)",
                known.join(", ")
            ));
        }
    }
    let ctx = ValidateContext::new(env, site_version, config.settings == Settings::Default);
    let mut entries: Vec<(String, Decision)> = vec![];
    // Features whose own table is in error: their dependents' "depends on … which is not
    // enabled" would only repeat it, so it is not reported.
    let mut in_error: Vec<String> = vec![];
    for id in &order {
        let p = registry.get(id).expect("ordered ids are registered");
        let m = &p.manifest;
        let table = config.features.get(id);
        let raw = table.map(|t| t.options.clone()).unwrap_or_default();
        let options = match m.resolve_options(&raw) {
            Ok(o) => o,
            Err(errs) => {
                problems.extend(errs.into_iter().map(|f| f.message));
                in_error.push(id.clone());
                continue;
            }
        };
        let wanted = match config.settings {
            Settings::Default => {
                if m.in_default_settings {
                    if table.is_some_and(|t| t.enabled == Some(false)) {
                        warnings.push(format!(
                            "[features.{id}] enabled = false is ignored: settings = \"default\" enables the wizard's default features; use settings = \"custom\" to choose"
                        ));
                    }
                    if !raw.is_empty() {
                        let defaults = m.resolve_options(&Options::new()).unwrap_or_default();
                        if options != defaults {
                            warnings.push(format!(
                                "[features.{id}] settings are ignored: settings = \"default\" uses the wizard's defaults; use settings = \"custom\" to apply them"
                            ));
                        }
                    }
                    true
                } else {
                    table.is_some_and(|t| t.enabled == Some(true))
                }
            }
            Settings::Custom => table.is_some_and(|t| t.enabled != Some(false)),
        };
        if !wanted {
            let explicitly_off = table.is_some_and(|t| t.enabled == Some(false));
            let reason = if explicitly_off {
                "turned off in attach.toml"
            } else {
                "not enabled in attach.toml"
            };
            entries.push((
                id.clone(),
                Decision::NotSelected {
                    reason: reason.into(),
                    explicitly_off,
                },
            ));
            continue;
        }
        let options = if config.settings == Settings::Default && m.in_default_settings {
            m.resolve_options(&Options::new()).unwrap_or_default()
        } else {
            options
        };
        if let Some(reason) = unsupported_reason(m, env, site_version) {
            match config.settings {
                Settings::Default => entries.push((id.clone(), Decision::Skipped(reason))),
                Settings::Custom => {
                    let fix = if m.environments.contains(&env) {
                        format!("update the site to {}", m.min_site_version_for(env))
                    } else {
                        "change the environment".to_string()
                    };
                    problems.push(format!(
                        "[features.{id}]: {reason}; turn it off (enabled = false) or {fix}"
                    ));
                    entries.push((id.clone(), Decision::Skipped(reason)));
                }
            }
            continue;
        }
        let mut dep_problem = None;
        for dep in &m.depends_on {
            match entries.iter().find(|(i, _)| i == dep).map(|(_, d)| d) {
                Some(Decision::Selected(_)) => {}
                Some(Decision::Skipped(why)) => {
                    dep_problem = Some(format!("depends on {dep}, which is skipped: {why}"));
                    break;
                }
                _ => {
                    dep_problem = Some(format!("depends on {dep}, which is not enabled"));
                    break;
                }
            }
        }
        if let Some(reason) = dep_problem {
            let dep_in_error = m.depends_on.iter().any(|d| in_error.contains(d));
            if dep_in_error {
                in_error.push(id.clone());
            } else if config.settings == Settings::Custom && !reason.contains("which is skipped") {
                problems.push(format!(
                    "[features.{id}]: {reason}; enable [features.{}] too",
                    m.depends_on.join("], [features.")
                ));
            }
            entries.push((id.clone(), Decision::Skipped(reason)));
            continue;
        }
        let errors: Vec<Finding> = p
            .plugin
            .validate(&options, &ctx)
            .into_iter()
            .filter(|f| f.severity == cloudattach_sdk::Severity::Error)
            .collect();
        if !errors.is_empty() {
            // A plugin's message may already name its table; don't name it twice.
            let table = format!("[features.{id}]");
            problems.extend(errors.into_iter().map(|f| {
                if f.message.starts_with(&table) {
                    f.message
                } else {
                    format!("{table}: {}", f.message)
                }
            }));
            in_error.push(id.clone());
            continue;
        }
        entries.push((id.clone(), Decision::Selected(options)));
    }
    if !problems.is_empty() {
        return Err(SelectionError { problems });
    }
    Ok(Selection {
        environment: env,
        settings: config.settings,
        site_version,
        entries,
        warnings,
    })
}

/// The error plan and apply give below the wizard's version.
pub fn require_wizard_version(site_version: SiteVersion) -> Result<(), SelectionError> {
    if site_version < SiteVersion::CLOUD_ATTACH_WIZARD {
        return Err(SelectionError {
            problems: vec![format!(
                "the site is version {site_version}: cloud attach needs Configuration Manager {} or later; update the site first (check still runs)",
                SiteVersion::CLOUD_ATTACH_WIZARD
            )],
        });
    }
    Ok(())
}

/// One plugin's check result (`check --output json`).
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Plugin id.
    pub id: String,
    /// pass | warn | fail | unsupported.
    pub status: CheckStatus,
    /// Findings.
    pub findings: Vec<Finding>,
    /// Extra data (co-management's `eligibility`, counts).
    #[serde(flatten)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// Builds the host for a selection: its options, and the upload scope of tenant-attach.
pub fn host_for(site: &Arc<Site>, config: &Config, selection: &Selection) -> SiteHost {
    let options = selection.selected_options();
    let scope = options.get("tenant-attach").cloned().or_else(|| {
        config
            .features
            .get("tenant-attach")
            .map(|t| t.options.clone())
    });
    SiteHost::new(site.clone(), selection.environment, options, scope.as_ref())
}

/// Runs the checks of the named plugins (all when `ids` is empty), in execution order. Checks
/// run concurrently; each streams the inventory.
pub fn check(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    ids: &[String],
) -> Result<Vec<CheckResult>, SelectionError> {
    for id in ids {
        if registry.get(id).is_none() {
            let known: Vec<&str> = registry.iter().map(|p| p.manifest.id.as_str()).collect();
            return Err(SelectionError {
                problems: vec![format!(
                    "no plugin has the id `{id}`; known plugins: {}",
                    known.join(", ")
                )],
            });
        }
    }
    let host = host_for(site, config, selection);
    let env = selection.environment;
    let version = selection.site_version;
    let wanted: Vec<&(String, Decision)> = selection
        .entries
        .iter()
        .filter(|(id, _)| ids.is_empty() || ids.contains(id))
        .collect();
    let results: Vec<CheckResult> = std::thread::scope(|scope| {
        let passes = shared_pass(scope, site.clone(), wanted.len());
        let handles: Vec<_> = wanted
            .iter()
            .zip(passes)
            .map(|((id, decision), pass)| {
                let p = registry.get(id).expect("registered");
                let base = &host;
                scope.spawn(move || {
                    let host = &PassHost::new(base, pass);
                    if let Some(reason) = unsupported_reason(&p.manifest, env, version) {
                        return CheckResult {
                            id: id.clone(),
                            status: CheckStatus::Unsupported,
                            findings: vec![Finding::info("unsupported", reason)],
                            data: Default::default(),
                        };
                    }
                    let options = match decision {
                        Decision::Selected(o) => o.clone(),
                        _ => {
                            let raw = config.features.get(id.as_str()).map(|t| t.options.clone()).unwrap_or_default();
                            p.manifest.resolve_options(&raw).unwrap_or_default()
                        }
                    };
                    // A panicking plugin fails its own check; the others still report.
                    let mut report: CheckReport = std::panic::catch_unwind(
                        std::panic::AssertUnwindSafe(|| p.plugin.check(host, &options)),
                    )
                    .unwrap_or_else(|panic| {
                        let message = crate::apply::panic_message(panic);
                        let mut r = CheckReport::default();
                        r.push(Finding::error("plugin-panic", format!("plugin {id} panicked: {message}")));
                        r
                    });
                    if version < SiteVersion::CLOUD_ATTACH_WIZARD {
                        report.findings.insert(
                            0,
                            Finding::error(
                                "site-version",
                                format!(
                                    "the site is version {version}: the cloud attach wizard needs {}; plan and apply refuse until the site is updated",
                                    SiteVersion::CLOUD_ATTACH_WIZARD
                                ),
                            ),
                        );
                    }
                    CheckResult { id: id.clone(), status: report.status(), findings: report.findings, data: report.data }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a plugin check panicked"))
            .collect()
    });
    Ok(results)
}

/// Options that name a collection ([`OptionKind::Collection`], or a collection id given to
/// [`OptionKind::ChoiceOrCollection`]) must name one the site has: a typo would otherwise upload
/// nothing, or withdraw what was uploaded. Every unknown reference is reported at once.
pub fn check_collection_references(
    registry: &Registry,
    selection: &Selection,
    site: &Site,
) -> Result<(), SelectionError> {
    let mut problems = vec![];
    for (id, decision) in &selection.entries {
        let Decision::Selected(options) = decision else {
            continue;
        };
        let Some(p) = registry.get(id) else { continue };
        for spec in &p.manifest.options {
            if !matches!(
                spec.kind,
                OptionKind::Collection | OptionKind::ChoiceOrCollection(_)
            ) {
                continue;
            }
            let Some(value) = options.get(&spec.key).and_then(|v| v.as_str()) else {
                continue;
            };
            if is_collection_id(value) && site.collection(value).is_none() {
                let known: Vec<&str> = site.collection_ids().take(12).collect();
                problems.push(format!(
                    "[features.{id}] {} = \"{value}\": site {} has no collection {value}; it has {}",
                    spec.key,
                    site.info.code,
                    known.join(", ")
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectionError { problems })
    }
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

/// What was applied before, as the state store remembers it.
pub trait AppliedState {
    /// The settings last applied for a plugin, if it is enabled.
    fn applied_settings(&self, plugin_id: &str) -> Option<serde_json::Value>;
}

/// Nothing applied yet.
pub struct NothingApplied;

impl AppliedState for NothingApplied {
    fn applied_settings(&self, _plugin_id: &str) -> Option<serde_json::Value> {
        None
    }
}

/// Plans a selection against what was applied before. Pure apart from the plugins' reads of
/// the inventory for their details.
pub fn plan(
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
                        p.plugin.plan(&PassHost::new(base, pass), options, previous)
                    }),
                )
            })
            .collect();
        let mut out = vec![None; selection.entries.len()];
        for (i, h) in handles {
            let id = &selection.entries[i].0;
            out[i] = Some(h.join().unwrap_or_else(|_| {
                PlanDecision::skip(format!(
                    "plugin {id} panicked while planning; see the log above"
                ))
            }));
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
    disables.reverse();
    disables.extend(steps);
    Ok(Plan {
        environment: selection.environment,
        settings: selection.settings.as_str(),
        site_version: selection.site_version,
        steps: disables,
    })
}

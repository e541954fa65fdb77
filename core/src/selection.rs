//! Selection: which features run, with which options, or why not — the wizard's default or
//! custom settings, environment and site-version gates, the China rules, dependencies — every
//! problem at once, as typed [`Problem`]s.

use crate::config::{Config, Settings};
use crate::host::SiteHost;
use crate::problem::{Problem, ProblemKind, SelectionError};
use crate::registry::Registry;
use crate::site::Site;
use cloudattach_sdk::{
    Environment, Finding, Manifest, OptionKind, Options, SiteVersion, ValidateContext,
    is_collection_id,
};
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Decides, validates and orders the features of a configuration for a site of
/// `site_version`: every conflict at once. Option values that name a site's collections are
/// checked by [`validate`], which every command uses.
pub fn select(
    config: &Config,
    registry: &Registry,
    site_version: SiteVersion,
) -> Result<Selection, SelectionError> {
    let (selection, problems) = decide(config, registry, site_version)?;
    if problems.is_empty() {
        Ok(selection)
    } else {
        Err(SelectionError { problems })
    }
}

/// The one validation every command runs on a configuration: [`select`] against the site's
/// version, and, in the same pass, every option that names a collection checked against the
/// site — so one run lists every conflict, and a configuration one command refuses, every
/// command refuses.
pub fn validate(
    config: &Config,
    registry: &Registry,
    site: &Site,
) -> Result<Selection, SelectionError> {
    let (selection, mut problems) = decide(config, registry, site.info.version)?;
    problems.extend(collection_reference_problems(registry, &selection, site));
    if problems.is_empty() {
        Ok(selection)
    } else {
        Err(SelectionError { problems })
    }
}

/// The selection with every problem found (empty when it can be used); `Err` only when the
/// registry itself cannot be ordered.
fn decide(
    config: &Config,
    registry: &Registry,
    site_version: SiteVersion,
) -> Result<(Selection, Vec<Problem>), SelectionError> {
    let order = registry.execution_order()?;
    let env = config.environment;
    let mut problems: Vec<Problem> = vec![];
    let mut warnings = vec![];
    for id in config.features.keys() {
        if registry.get(id).is_none() {
            let known: Vec<&str> = registry.iter().map(|p| p.manifest.id.as_str()).collect();
            problems.push(
                Problem::new(
                    ProblemKind::UnknownPlugin,
                    format!("[features.{id}]: no plugin has the id `{id}`"),
                )
                .feature(id.clone())
                .hint(unknown_plugin_hint(registry, &known)),
            );
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
                problems.extend(errs.into_iter().map(|f| option_problem(id, f)));
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
                    problems.push(
                        Problem::new(
                            ProblemKind::Unsupported,
                            format!("[features.{id}]: {reason}"),
                        )
                        .feature(id.clone())
                        .hint(format!("turn it off (enabled = false) or {fix}")),
                    );
                    entries.push((id.clone(), Decision::Skipped(reason)));
                }
            }
            continue;
        }
        let mut dep_problem = None;
        let mut dep_skipped = false;
        for dep in &m.depends_on {
            match entries.iter().find(|(i, _)| i == dep).map(|(_, d)| d) {
                Some(Decision::Selected(_)) => {}
                Some(Decision::Skipped(why)) => {
                    dep_problem = Some(format!("depends on {dep}, which is skipped: {why}"));
                    dep_skipped = true;
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
            } else if config.settings == Settings::Custom && !dep_skipped {
                problems.push(
                    Problem::new(
                        ProblemKind::Dependency,
                        format!("[features.{id}]: {reason}"),
                    )
                    .feature(id.clone())
                    .hint(format!(
                        "enable [features.{}] too",
                        m.depends_on.join("], [features.")
                    )),
                );
            }
            entries.push((id.clone(), Decision::Skipped(reason)));
            continue;
        }
        let errors: Vec<Finding> = p
            .runner()
            .validate(&options, &ctx)
            .into_iter()
            .filter(|f| f.severity == cloudattach_sdk::Severity::Error)
            .collect();
        if !errors.is_empty() {
            // A plugin's message may already name its table; don't name it twice.
            let table = format!("[features.{id}]");
            problems.extend(errors.into_iter().map(|f| {
                let message = if f.message.starts_with(&table) {
                    f.message
                } else {
                    format!("{table}: {}", f.message)
                };
                Problem::new(ProblemKind::Validation, message).feature(id.clone())
            }));
            in_error.push(id.clone());
            continue;
        }
        entries.push((id.clone(), Decision::Selected(options)));
    }
    let selection = Selection {
        environment: env,
        settings: config.settings,
        site_version,
        entries,
        warnings,
    };
    Ok((selection, problems))
}

/// What to do about an id no plugin has: the known ones, and — when plugin libraries failed
/// to load — that the plugin may be one of them.
fn unknown_plugin_hint(registry: &Registry, known: &[&str]) -> String {
    let mut hint = format!(
        "known plugins: {} (load others with --plugin-dir)",
        known.join(", ")
    );
    if !registry.load_failures.is_empty() {
        let files: Vec<String> = registry
            .load_failures
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        hint.push_str(&format!(
            "; {} plugin librar{} failed to load ({}): it may be there, see the warnings above",
            files.len(),
            if files.len() == 1 { "y" } else { "ies" },
            files.join(", ")
        ));
    }
    hint
}

/// The error plan and apply give below the wizard's version.
pub fn require_wizard_version(site_version: SiteVersion) -> Result<(), SelectionError> {
    if site_version < SiteVersion::CLOUD_ATTACH_WIZARD {
        return Err(SelectionError::one(
            Problem::new(
                ProblemKind::SiteVersion,
                format!(
                    "the site is version {site_version}: cloud attach needs Configuration Manager {} or later",
                    SiteVersion::CLOUD_ATTACH_WIZARD
                ),
            )
            .hint("update the site first (check still runs)"),
        ));
    }
    Ok(())
}

/// A manifest's finding about a feature's options as a problem.
fn option_problem(id: &str, f: Finding) -> Problem {
    Problem::new(ProblemKind::InvalidOption, f.message).feature(id)
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

/// Options that name a collection ([`OptionKind::Collection`], or a collection id given to
/// [`OptionKind::ChoiceOrCollection`]) must name one the site has: a typo would otherwise upload
/// nothing, or withdraw what was uploaded. Every unknown reference is reported at once.
pub fn check_collection_references(
    registry: &Registry,
    selection: &Selection,
    site: &Site,
) -> Result<(), SelectionError> {
    let problems = collection_reference_problems(registry, selection, site);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SelectionError { problems })
    }
}

/// The unknown collection references of a selection's selected features, in order.
fn collection_reference_problems(
    registry: &Registry,
    selection: &Selection,
    site: &Site,
) -> Vec<Problem> {
    let mut problems: Vec<Problem> = vec![];
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
                problems.push(
                    Problem::new(
                        ProblemKind::CollectionReference,
                        format!(
                            "[features.{id}] {} = \"{value}\": site {} has no collection {value}",
                            spec.key, site.info.code
                        ),
                    )
                    .feature(id.clone())
                    .key(spec.key.clone())
                    .hint(format!("it has {}", known.join(", "))),
                );
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::LoadFailure;
    use std::path::Path;

    #[test]
    fn an_unknown_feature_points_at_the_libraries_that_failed_to_load() {
        let config = Config::parse(
            "[attach]\nsettings = \"custom\"\n[features.bitlocker]\nenabled = true\n",
            Path::new("attach.toml"),
            Path::new("/x"),
        )
        .unwrap();
        let mut registry = Registry::new();
        let plain = select(&config, &registry, "2303".parse::<SiteVersion>().unwrap())
            .unwrap_err()
            .problems;
        assert_eq!(plain[0].kind, ProblemKind::UnknownPlugin);
        assert_eq!(plain[0].feature.as_deref(), Some("bitlocker"));
        assert!(
            !plain[0].to_string().contains("failed to load"),
            "{}",
            plain[0]
        );
        registry.load_failures.push(LoadFailure {
            path: "/plugins/libbitlocker.so".into(),
            message: "libbitlocker.so: built against cloudattach-sdk 0.0.9".into(),
        });
        let e = select(&config, &registry, "2303".parse::<SiteVersion>().unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "[features.bitlocker]: no plugin has the id `bitlocker`; known plugins:  (load others with --plugin-dir); 1 plugin library failed to load (/plugins/libbitlocker.so): it may be there, see the warnings above"
        );
    }
}

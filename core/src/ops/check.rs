//! `check`: the prerequisite checks of every feature (or the ones named), read-only and without
//! a cloud connection. The plugins run concurrently over one shared pass of the inventory.

use super::{OpError, Workspace};
use crate::config::Config;
use crate::host::{PassHost, shared_pass};
use crate::problem::{Problem, ProblemKind, SelectionError};
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::{Decision, Selection, host_for, unsupported_reason};
use crate::site::Site;
use cloudattach_sdk::{CheckReport, CheckStatus, Finding, SiteVersion};
use serde::Serialize;
use std::sync::Arc;

/// What `check` found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckOutcome {
    /// One result per plugin, in execution order.
    pub plugins: Vec<CheckResult>,
}

impl CheckOutcome {
    /// Whether any check failed (exit 1).
    pub fn failed(&self) -> bool {
        self.plugins.iter().any(|r| r.status == CheckStatus::Fail)
    }
}

/// Runs `check` for the plugins named in `ids` (all when empty). The configuration goes
/// through the same validation as every other command, so a configuration plan refuses is
/// refused here too (every problem at once, exit 2); features that default settings skip here
/// (environment, site version) are reported as `unsupported`.
pub fn run(
    ws: &Workspace,
    ids: &[String],
    reporter: &dyn Reporter,
) -> Result<CheckOutcome, OpError> {
    let selection = ws.select()?;
    for w in &selection.warnings {
        reporter.warn(w);
    }
    let plugins = run_checks(&ws.registry, &ws.config, &selection, &ws.site, ids)?;
    Ok(CheckOutcome { plugins })
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

/// Runs the checks of the named plugins (all when `ids` is empty), in execution order. Checks
/// run concurrently; each streams the inventory.
pub fn run_checks(
    registry: &Registry,
    config: &Config,
    selection: &Selection,
    site: &Arc<Site>,
    ids: &[String],
) -> Result<Vec<CheckResult>, SelectionError> {
    for id in ids {
        if registry.get(id).is_none() {
            let known: Vec<&str> = registry.iter().map(|p| p.manifest.id.as_str()).collect();
            return Err(SelectionError::one(
                Problem::new(
                    ProblemKind::UnknownPlugin,
                    format!("no plugin has the id `{id}`"),
                )
                .hint(format!("known plugins: {}", known.join(", "))),
            ));
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
        let passes = shared_pass(scope, site.clone(), wanted.len(), false);
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
                    let mut report: CheckReport = p.runner().check(host, &options);
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
            .map(|h| h.join().expect("the runner catches a plugin's panic"))
            .collect()
    });
    Ok(results)
}

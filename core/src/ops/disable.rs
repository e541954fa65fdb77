//! `disable`: turns features off in the cloud, dependents first. A feature another enabled
//! feature depends on is refused unless that one is named too.

use super::connect::Connection;
use super::{OpError, Workspace, input};
use crate::selection::{Selection, host_for};
use crate::state::StateStore;
use cloudattach_sdk::{ApplyOutcome, Severity};
use serde::Serialize;

/// How disabling one feature ended.
#[derive(Debug, Clone, Serialize)]
pub struct Disabled {
    /// Plugin id.
    pub id: String,
    /// Whether it is off in the cloud and forgotten by the state.
    pub disabled: bool,
    /// Why not.
    pub error: Option<String>,
}

/// Checks the ids before anything connects: every one names a plugin, and no enabled feature
/// depends on one that is not named. Returns them in the order `disable` runs them
/// (dependents first).
pub fn validate(ws: &Workspace, ids: &[String]) -> Result<Vec<String>, OpError> {
    let registry = &ws.registry;
    let unknown: Vec<&String> = ids.iter().filter(|id| registry.get(id).is_none()).collect();
    if !unknown.is_empty() {
        let known: Vec<&str> = registry.iter().map(|p| p.manifest.id.as_str()).collect();
        let names: Vec<String> = unknown.iter().map(|id| format!("`{id}`")).collect();
        return Err(OpError::Input(format!(
            "no plugin has the id {}; known plugins: {} (load others with --plugin-dir)",
            names.join(", "),
            known.join(", ")
        )));
    }
    let enabled: Vec<String> = StateStore::open(&ws.config.state_dir())
        .and_then(|s| s.features())
        .map_err(OpError::from)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let order = registry.execution_order().map_err(input)?;
    // Every enabled feature that depends (directly or not) on a named one and is not named.
    let mut blocking: Vec<String> = vec![];
    for id in ids {
        for dependent in registry.dependents_of(id) {
            if enabled.contains(&dependent)
                && !ids.contains(&dependent)
                && !blocking.contains(&dependent)
            {
                blocking.push(dependent);
            }
        }
    }
    if !blocking.is_empty() {
        blocking.sort();
        // The whole command, in the order disable runs it: dependents first.
        let all: Vec<&str> = order
            .iter()
            .rev()
            .filter(|id| ids.contains(id) || blocking.contains(id))
            .map(String::as_str)
            .collect();
        let named: Vec<&str> = order
            .iter()
            .filter(|id| ids.contains(id))
            .map(String::as_str)
            .collect();
        return Err(OpError::Input(format!(
            "{} can't be disabled while features that depend on it are enabled: {}; disable them too: cloudattach disable {}",
            named.join(", "),
            blocking.join(", "),
            all.join(" ")
        )));
    }
    Ok(order
        .into_iter()
        .rev()
        .filter(|id| ids.contains(id))
        .collect())
}

/// The selection disable runs with: the one validation every command runs, so a
/// configuration plan refuses is refused here too.
pub fn selection(ws: &Workspace) -> Result<Selection, OpError> {
    ws.select()
}

/// Disables the features `validate` ordered, one at a time; `each` hears how each ended.
pub fn run(
    ws: &Workspace,
    selection: &Selection,
    conn: &Connection,
    ordered: &[String],
    each: &mut dyn FnMut(&Disabled),
) -> Vec<Disabled> {
    let host = host_for(&ws.site, &ws.config, selection).with_cloud(conn.session.clone());
    let mut results = vec![];
    for id in ordered {
        let p = ws.registry.get(id).expect("validated");
        let outcome = p.runner().disable(&host);
        let outcome = if outcome.ok {
            match conn.state.lock().expect("state lock").forget_feature(id) {
                Ok(()) => outcome,
                Err(e) => ApplyOutcome::failed("state", e.to_string()),
            }
        } else {
            outcome
        };
        let error = outcome
            .findings
            .iter()
            .find(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone());
        let d = Disabled {
            id: id.clone(),
            disabled: outcome.ok,
            error,
        };
        each(&d);
        results.push(d);
    }
    results
}

//! `sync`: one upload for every enabled feature that uploads — only what changed, or everything
//! with `--full`. Features run in dependency waves, side by side over one shared pass.

use super::connect::Connection;
use super::{OpError, Workspace};
use crate::host::{OwnedHost, PassHost, SiteHost, shared_pass};
use crate::registry::Registry;
use crate::selection::{Decision, Selection, host_for};
use crate::state::StateStore;
use cloudattach_sdk::SyncMode;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The selection a sync runs with (a configuration plan refuses is refused here too).
pub fn selection(ws: &Workspace) -> Result<Selection, OpError> {
    ws.select()
}

/// One sync round.
pub fn run(
    ws: &Workspace,
    selection: &Selection,
    conn: &Connection,
    mode: SyncMode,
) -> Vec<SyncReport> {
    let host = host_for(&ws.site, &ws.config, selection).with_cloud(conn.session.clone());
    sync_waves(&ws.registry, selection, &host, &conn.state, mode)
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
pub fn sync_waves(
    registry: &Registry,
    selection: &Selection,
    host: &SiteHost,
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
    let sync_one = |id: &str, options: &cloudattach_sdk::Options, host: &dyn OwnedHost| {
        let p = registry.get(id).expect("registered");
        let result = p.runner().sync(host, options, mode);
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
                .map(|h| h.join().expect("the runner catches a plugin's panic"))
                .collect()
        });
        out.extend(reports.into_iter().flatten());
    }
    out
}

//! `sync`: one upload for every enabled feature that uploads — only what changed, or everything
//! with `--full`. Features run in dependency waves, side by side over one shared pass.

use super::connect::Connection;
use super::{OpError, Workspace};
use crate::host::{LineRound, OwnedHost, PassHost, SiteHost, shared_pass};
use crate::lines::LineIndex;
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

/// One sync round. A round that succeeds for every feature leaves an index of the inventory's
/// lines beside the state; the next delta leaves the lines it holds unread when nothing else its
/// records depend on changed (see [`crate::lines`]).
pub fn run(
    ws: &Workspace,
    selection: &Selection,
    conn: &Connection,
    mode: SyncMode,
) -> Vec<SyncReport> {
    let dir = conn.state.lock().expect("state lock").dir().to_path_buf();
    let enabled = enabled_features(&conn.state);
    let fingerprint = fingerprint(ws, selection, &enabled);
    // Taken, not read: a round that does not finish leaves no index behind.
    let index = LineIndex::take(&dir).filter(|i| i.fingerprint == fingerprint);
    let round = Arc::new(LineRound::new(index));
    if let Some(n) = round.indexed() {
        conn.session.expect_records(n);
    }
    let host = host_for(&ws.site, &ws.config, selection)
        .with_cloud(conn.session.clone())
        .with_round(round.clone());
    let ahead = mode == SyncMode::Delta && round.indexed().is_some();
    if ahead {
        // The cloud counts each channel while this side reads the inventory.
        conn.session.prefetch_census(round.indexed_channels());
    }
    let reports = std::thread::scope(|scope| {
        if ahead {
            let (round, site) = (&round, &ws.site);
            scope.spawn(move || round.scan_ahead(site));
        }
        sync_waves(&ws.registry, selection, &host, &enabled, mode, &round)
    });
    conn.session.forget_prefetched();
    drop(host);
    let (unread, read) = round.counts();
    if unread > 0 {
        conn.session.say(&format!(
            "inventory: {} new or changed line(s) read, {} unchanged not read again",
            cloudattach_sdk::thousands(read),
            cloudattach_sdk::thousands(unread)
        ));
    }
    if reports.iter().all(|r| r.error.is_none())
        && let Ok(round) = Arc::try_unwrap(round)
    {
        save_index(&dir, round, fingerprint);
    }
    reports
}

/// Leaves the line index of a round that read every line and succeeded for every feature
/// (`apply`'s steps), for the next delta.
pub fn leave_index(ws: &Workspace, selection: &Selection, conn: &Connection, round: LineRound) {
    let dir = conn.state.lock().expect("state lock").dir().to_path_buf();
    let enabled = enabled_features(&conn.state);
    save_index(&dir, round, fingerprint(ws, selection, &enabled));
}

fn save_index(dir: &std::path::Path, round: LineRound, fingerprint: u64) {
    if let Some(index) = round.into_index(fingerprint)
        && let Err(e) = index.save(dir)
    {
        // Only speed is lost: the next delta reads every line.
        tracing::warn!(
            "could not write {}: {e}",
            crate::lines::path_in(dir).display()
        );
    }
}

/// The features the state says are enabled.
fn enabled_features(state: &Arc<Mutex<StateStore>>) -> Vec<String> {
    state
        .lock()
        .expect("state lock")
        .features()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// What a round's records depend on besides the inventory's lines: this program's version, the
/// site, the enabled features with their versions and options, and the collections (upload
/// scope, pilot collections).
fn fingerprint(ws: &Workspace, selection: &Selection, enabled: &[String]) -> u64 {
    let mut bytes: Vec<u8> = Vec::new();
    bytes.extend_from_slice(env!("CARGO_PKG_VERSION").as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(ws.site.info.hierarchy_id.as_bytes());
    bytes.push(0);
    for file in ["site.toml", "collections.json"] {
        let content = std::fs::read(ws.site.dir.join(file)).unwrap_or_default();
        bytes.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&content).to_le_bytes());
    }
    for (id, decision) in &selection.entries {
        let Decision::Selected(options) = decision else {
            continue;
        };
        if !enabled.contains(id) {
            continue;
        }
        bytes.extend_from_slice(id.as_bytes());
        bytes.push(0);
        if let Some(p) = ws.registry.get(id) {
            bytes.extend_from_slice(p.manifest.version.as_bytes());
        }
        bytes.push(0);
        bytes.extend_from_slice(&serde_json::to_vec(options).unwrap_or_default());
        bytes.push(0);
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
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
    enabled: &[String],
    mode: SyncMode,
    round: &LineRound,
) -> Vec<SyncReport> {
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
        if round.indexed().is_some() {
            // Lines left unread: each feature's pass reads only the lines that changed for its
            // channel, side by side.
            let reports: Vec<Option<SyncReport>> = std::thread::scope(|scope| {
                let handles: Vec<_> = wave
                    .iter()
                    .map(|&(id, options)| {
                        let sync_one = &sync_one;
                        scope.spawn(move || sync_one(id, options, host))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("the runner catches a plugin's panic"))
                    .collect()
            });
            out.extend(reports.into_iter().flatten());
            continue;
        }
        let reports: Vec<Option<SyncReport>> = std::thread::scope(|scope| {
            let passes = shared_pass(scope, host.site_ref().clone(), wave.len(), true);
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

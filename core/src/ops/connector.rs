//! `connect`: the site's side of the attachment as a long-running process, like the service
//! connection point. It uploads what changed at an interval, beats a heartbeat the cloud shows
//! as the connector's health, and picks up the cloud actions addressed to the hierarchy as they
//! arrive (long polling: nothing listens on the site), authorizes each with the site's own RBAC
//! when Configuration Manager RBAC is enforced, runs it through the plugin that declared it and
//! answers.
//!
//! It holds the state lock only while a sync round writes, so `status`, `plan` and `explain`
//! keep working beside it. An action taken and not answered (the process was killed) is handed
//! to the next connector process by the cloud, which keeps the first answer only: an action is
//! answered once, or times out.

use super::connect::Connection;
use super::explain::authority_inputs;
use super::sync::SyncReport;
use super::{OpError, Workspace};
use crate::access::{self, Caller, SiteRbac, Target};
use crate::report::Reporter;
use crate::selection::{self, Selection};
use crate::state::StateLock;
use cloudattach_sdk::actions::{
    ActionAnswer, ActionDoc, ActionError, ActionQueue, ActionStatus, ConnectorBeat,
};
use cloudattach_sdk::{ActionCall, ActionSubject, SyncMode};
use reqwest::Method as HttpMethod;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The longest a poll waits for an action before it asks again.
pub const MAX_POLL_WAIT: Duration = Duration::from_secs(30);

/// How the connector runs.
#[derive(Debug, Clone)]
pub struct ConnectorOptions {
    /// The delta upload interval.
    pub interval: Duration,
    /// Serve what is waiting, sync once, and stop.
    pub once: bool,
    /// How long one poll waits for an action (at most [`MAX_POLL_WAIT`]).
    pub poll_wait: Duration,
}

/// One action the connector answered.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// The action's id in the cloud.
    pub id: String,
    /// The declared action.
    pub action: String,
    /// Who asked.
    pub requested_by: String,
    /// The target device, or collection.
    pub target: String,
    /// What the answer said.
    pub status: ActionStatus,
    /// The authority the site applied.
    pub authority: String,
    /// The refusing link or the failure's code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the cloud took the answer (`false`: another connector answered first, or it
    /// timed out).
    pub accepted: bool,
}

/// What one `connect` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectorReport {
    /// The connector process's id.
    pub connector_id: String,
    /// The actions answered.
    pub served: Vec<Served>,
    /// Each sync round's reports.
    pub syncs: Vec<Vec<SyncReport>>,
    /// Sync rounds skipped because another command held the state lock.
    pub skipped_syncs: u64,
}

/// Authorizes one action against the site's RBAC (when the effective authority is
/// `configmgr+intune`) and runs it through the plugin that declared it. The answer carries no
/// data unless every link held.
pub fn answer(
    ws: &Workspace,
    selection: &Selection,
    host: &crate::host::SiteHost,
    connector_id: &str,
    doc: &ActionDoc,
) -> ActionAnswer {
    let authority = authority_inputs(selection, Some(doc.use_intune_rbac));
    let effective = authority.effective();
    let failed = |code: &str, message: String| {
        ActionAnswer::refused(
            connector_id,
            ActionStatus::Failed,
            effective,
            ActionError::new(code, message),
        )
    };
    // The plugin that declared it, among the selected features.
    // The feature the cloud authorized the action for, when it names one.
    let declared = ws.registry.iter().find_map(|p| {
        if !doc.feature.is_empty() && p.manifest.id != doc.feature {
            return None;
        }
        let decl = p.manifest.actions.iter().find(|a| a.id == doc.action)?;
        match selection.decision(&p.manifest.id) {
            Some(selection::Decision::Selected(o)) => Some((p, decl, o.clone())),
            _ => None,
        }
    });
    let Some((plugin, decl, options)) = declared else {
        return failed(
            "action-not-served",
            format!(
                "no feature selected on site {} serves the action \"{}\"",
                ws.site.info.code, doc.action
            ),
        );
    };
    let (target, subject) = match (&doc.resource_id, &doc.collection_id) {
        (_, Some(c)) => (
            Target::Collection(c.clone()),
            ActionSubject::Collection(c.clone()),
        ),
        (Some(id), None) => (Target::Device(*id), ActionSubject::Device(*id)),
        (None, None) => return failed("bad-request", "the action names no target".into()),
    };
    if let Err(e) = decl.check_parameters(&doc.parameters) {
        return failed("bad-parameters", e);
    }
    let rbac = match SiteRbac::load(&ws.site) {
        Ok(r) => r,
        Err(e) => return failed("site-rbac-unreadable", e.to_string()),
    };
    let caller = Caller {
        upn: doc.requested_by.clone(),
        object_id: Some(doc.requested_by_id.clone()),
        tenant_id: Some(doc.tenant_id.clone()),
        // The cloud checked the Intune role before it queued the action.
        roles: None,
    };
    let decision = access::decide(&ws.site, &rbac, authority, &caller, decl, &target);
    let Some(proof) = decision.authorized() else {
        let link = decision.refused_by.unwrap_or(access::LINK_AUTHORITY);
        let detail = decision
            .chain
            .iter()
            .find(|l| l.ok == Some(false))
            .map(|l| l.detail.clone())
            .unwrap_or_default();
        return ActionAnswer::refused(
            connector_id,
            ActionStatus::Unauthorized,
            effective,
            ActionError::new(link, detail),
        );
    };
    let call = ActionCall::new(
        doc.action.clone(),
        subject,
        doc.parameters.clone(),
        doc.requested_by.clone(),
    );
    match plugin.runner().serve_action(host, &options, &call, &proof) {
        Ok(result) => ActionAnswer::succeeded(connector_id, proof.authority(), result),
        Err(e) => ActionAnswer::refused(connector_id, ActionStatus::Failed, proof.authority(), e),
    }
}

/// Runs the connector until `stop` is set (or once).
pub fn run(
    ws: &Workspace,
    conn: &Connection,
    options: &ConnectorOptions,
    stop: &AtomicBool,
    reporter: &dyn Reporter,
    on_served: &mut dyn FnMut(&Served),
) -> Result<ConnectorReport, OpError> {
    let selection = ws.select()?;
    let connector_id = uuid::Uuid::new_v4().to_string();
    let mut report = ConnectorReport {
        connector_id: connector_id.clone(),
        ..Default::default()
    };
    let state_dir = ws.config.state_dir();
    let mut beat = ConnectorBeat::new(
        &connector_id,
        env!("CARGO_PKG_VERSION"),
        options.interval.as_secs(),
    );
    heartbeat(conn, &beat).map_err(OpError::Runtime)?;
    reporter.say(&format!(
        "connector {connector_id} for hierarchy {}: delta upload every {}, actions as they arrive",
        ws.site.info.hierarchy_id,
        humantime_secs(options.interval)
    ));
    let mut next_sync = Instant::now();
    loop {
        // Actions first: `--once` serves what is waiting before it syncs.
        let wait = if options.once {
            Duration::ZERO
        } else {
            options
                .poll_wait
                .min(MAX_POLL_WAIT)
                .min(next_sync.saturating_duration_since(Instant::now()))
        };
        match poll(conn, &connector_id, wait) {
            Ok(queue) => {
                let host = selection::host_for(&ws.site, &ws.config, &selection)
                    .with_cloud(conn.session.clone())
                    .with_timeline(conn.state.clone());
                for doc in &queue.value {
                    let answer = answer(ws, &selection, &host, &connector_id, doc);
                    let served = post_answer(conn, doc, answer);
                    if let Err(e) = record_on_timeline(conn, doc, &served) {
                        reporter.warn(&format!(
                            "action {} is not on the device's timeline: {e}",
                            doc.id
                        ));
                    }
                    on_served(&served);
                    report.served.push(served);
                }
            }
            Err(e) => {
                reporter.warn(&format!("could not ask the cloud for actions: {e}"));
                if !options.once {
                    sleep_unless(stop, Duration::from_secs(5));
                }
            }
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if Instant::now() >= next_sync || options.once {
            match StateLock::acquire(&state_dir, "connect") {
                Ok(lock) => {
                    let reports = super::sync::run(ws, &selection, conn, SyncMode::Delta);
                    drop(lock);
                    let failed: Vec<String> = reports
                        .iter()
                        .filter_map(|r| r.error.as_ref().map(|e| format!("{}: {e}", r.id)))
                        .collect();
                    beat.last_upload = Some(crate::state::now_rfc3339());
                    beat.last_error = (!failed.is_empty()).then(|| failed.join("; "));
                    report.syncs.push(reports);
                }
                Err(e) => {
                    // Another command (apply, sync) holds the state: this round waits for the
                    // next interval.
                    reporter.warn(&format!("delta upload skipped this round: {e}"));
                    report.skipped_syncs += 1;
                }
            }
            next_sync = Instant::now() + options.interval;
            if let Err(e) = heartbeat(conn, &beat) {
                reporter.warn(&format!("heartbeat failed: {e}"));
            }
        }
        if options.once || stop.load(Ordering::Relaxed) {
            break;
        }
    }
    Ok(report)
}

fn humantime_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{} h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} min", s / 60)
    } else {
        format!("{s} s")
    }
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn heartbeat(conn: &Connection, beat: &ConnectorBeat) -> Result<(), String> {
    let body = serde_json::to_value(beat).map_err(|e| e.to_string())?;
    conn.session
        .gateway_json(HttpMethod::PUT, "connector", Some(&body))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn poll(conn: &Connection, connector_id: &str, wait: Duration) -> Result<ActionQueue, String> {
    let path = format!(
        "connector/actions?connector_id={connector_id}&wait={}",
        wait.as_secs()
    );
    let v = conn
        .session
        .gateway_json(HttpMethod::GET, &path, None)
        .map_err(|e| e.to_string())?;
    serde_json::from_value(v).map_err(|e| format!("the cloud's action queue is not readable: {e}"))
}

/// Records an action run on a device on its timeline, once answered: who asked, what, the
/// outcome. One short write through the connection's state, which SQLite's own locking
/// serializes with any other process writing the state (the state lock is not taken: a sync
/// round of another command may hold it). A collection's action is on no device's timeline.
fn record_on_timeline(
    conn: &Connection,
    doc: &ActionDoc,
    served: &Served,
) -> Result<(), crate::state::StateError> {
    let (Some(resource_id), None) = (doc.resource_id, &doc.collection_id) else {
        return Ok(());
    };
    let detail = serde_json::json!({
        "id": doc.id,
        "action": doc.action,
        "requested_by": doc.requested_by,
        "status": served.status.as_str(),
        "error": served.error,
        "authority": served.authority,
        "accepted": served.accepted,
    });
    conn.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .record_action(resource_id, &detail)
}

fn post_answer(conn: &Connection, doc: &ActionDoc, answer: ActionAnswer) -> Served {
    let body = serde_json::to_value(&answer).unwrap_or_default();
    let accepted = match conn.session.gateway_json(
        HttpMethod::POST,
        &format!("/api/v1/actions/{}/answer", doc.id),
        Some(&body),
    ) {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(
                "the cloud did not take the answer to action {}: {e}",
                doc.id
            );
            false
        }
    };
    Served {
        id: doc.id.clone(),
        action: doc.action.clone(),
        requested_by: doc.requested_by.clone(),
        target: match (&doc.resource_id, &doc.collection_id) {
            (_, Some(c)) => format!("collection {c}"),
            (Some(id), None) => format!("device {id}"),
            _ => "nothing".into(),
        },
        status: answer.status,
        authority: answer.authority.clone(),
        error: answer.error.as_ref().map(|e| e.code.clone()),
        accepted,
    }
}

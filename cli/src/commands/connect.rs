//! `connect`: the site's connector, until Ctrl-C or SIGTERM (or once).

use crate::cloud::Connected;
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops::connect::Command;
use cloudattach_core::ops::connector::{self, ConnectorOptions, Served};
use cloudattach_sdk::thousands;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub fn run(cli: &Cli, interval: Duration, once: bool, poll_wait: Duration) -> Outcome {
    let ws = super::workspace(cli)?;
    let connected = Connected::open(&ws, Command::Connect)?;
    let stop = Arc::new(AtomicBool::new(false));
    if !once {
        // Ctrl-C and SIGTERM end the connector after the request in flight: it answers what it
        // took, then stops.
        let flag = stop.clone();
        connected.handle().spawn(async move {
            #[cfg(unix)]
            {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term => {},
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            flag.store(true, Ordering::Relaxed);
            eprintln!(
                "stopping: the connector ends after the request in flight (again to stop at once)"
            );
            // A second signal does not wait: the plugin processes are stopped, and so is this.
            let _ = tokio::signal::ctrl_c().await;
            cloudattach_core::dynamic::stop_plugin_processes();
            std::process::exit(130);
        });
    }
    let options = ConnectorOptions {
        interval,
        once,
        poll_wait,
    };
    let json = cli.output == Output::Json;
    let mut on_served = |s: &Served| {
        if !json {
            let mut line = format!(
                "{} {} for {} on {}: {}",
                s.action,
                s.id,
                s.requested_by,
                s.target,
                s.status.as_str()
            );
            if let Some(code) = &s.error {
                line.push_str(&format!(" ({code})"));
            }
            if !s.accepted {
                line.push_str(" — the cloud had already closed it");
            }
            println!("{line}");
        }
    };
    let reporter = CliReporter::new();
    let result = connector::run(
        &ws,
        &connected.conn,
        &options,
        &stop,
        &reporter,
        &mut on_served,
    );
    super::report_skipped_lines(&ws);
    connected.close();
    let report = result?;
    if json {
        print_json(&report)?;
    } else {
        let sent: u64 = report.syncs.iter().flatten().map(|r| r.sent).sum();
        eprintln!(
            "connector {}: {} action(s) answered, {} sync round(s) ({} record(s) sent), {} skipped",
            report.connector_id,
            report.served.len(),
            report.syncs.len(),
            thousands(sent),
            report.skipped_syncs
        );
    }
    let failed_sync = report.syncs.iter().flatten().any(|r| r.error.is_some());
    if failed_sync {
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

//! `sync`: one delta (or full) upload, or one every interval with `--watch`.

use crate::cloud::Connected;
use crate::render::{Table, Tone, colour_enabled};
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops::connect::Command;
use cloudattach_core::ops::{self, Workspace};
use cloudattach_sdk::{SyncMode, thousands};
use std::io::Write;
use std::time::Duration;

/// Parses an interval: seconds, or a number with s, m or h.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not an interval: expected e.g. 90, 90s, 15m or 1h"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => {
            return Err(format!(
                "{s:?} is not an interval: expected e.g. 90, 90s, 15m or 1h"
            ));
        }
    };
    if secs == 0 {
        return Err("the interval must be at least one second".into());
    }
    Ok(Duration::from_secs(secs))
}

pub fn run(cli: &Cli, full: bool, watch: Option<Duration>) -> Outcome {
    let ws = super::workspace(cli)?;
    let result = sync(&ws, cli.output, full, watch);
    super::report_skipped_lines(&ws);
    result
}

fn sync(ws: &Workspace, output: Output, full: bool, watch: Option<Duration>) -> Outcome {
    let selection = ops::sync::selection(ws)?;
    let connected = Connected::open(ws, Command::Sync)?;
    let mode = if full {
        SyncMode::Full
    } else {
        SyncMode::Delta
    };
    let mut any_failed = false;
    loop {
        let reports = ops::sync::run(ws, &selection, &connected.conn, mode);
        any_failed |= reports.iter().any(|r| r.error.is_some());
        if output == Output::Json && watch.is_some() {
            // JSON Lines: one compact document per round, flushed, so a reader sees each now.
            let line = serde_json::to_string(&serde_json::json!({ "plugins": reports }))
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}")
                .and_then(|()| out.flush())
                .map_err(|e| Failure::Runtime(e.to_string()))?;
            crate::document_printed();
        } else if output == Output::Json {
            print_json(&serde_json::json!({ "plugins": reports }))?;
        } else {
            let mut t = Table::new(&["plugin", "sent", "in scope", "error"]);
            for r in &reports {
                t.row(vec![
                    (r.id.clone(), Tone::Plain),
                    (thousands(r.sent), Tone::Plain),
                    (thousands(r.total), Tone::Dim),
                    (r.error.clone().unwrap_or_default(), Tone::Bad),
                ]);
            }
            print!("{}", t.render(colour_enabled()));
            if reports.is_empty() {
                eprintln!("no enabled feature uploads anything: run `cloudattach apply` first");
            }
        }
        let Some(every) = watch else { break };
        eprintln!("next sync in {}s (Ctrl-C to stop)", every.as_secs());
        std::thread::sleep(every);
    }
    connected.close();
    if any_failed {
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

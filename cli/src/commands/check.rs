//! `check`: prerequisite checks, without signing in.

use crate::render::{self, Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops;
use cloudattach_sdk::{CheckStatus, Severity};

pub fn run(cli: &Cli, ids: &[String]) -> Outcome {
    let ws = super::workspace(cli)?;
    let outcome = ops::check::run(&ws, ids, &CliReporter::new())?;
    super::report_skipped_lines(&ws);
    let failed = outcome.failed();
    let results = &outcome.plugins;
    if cli.output == Output::Json {
        // Through a `Value`: keys sorted, as this document always had them.
        print_json(&serde_json::to_value(&outcome).map_err(|e| Failure::Runtime(e.to_string()))?)?;
    } else {
        let colour = colour_enabled();
        let id_width = results
            .iter()
            .map(|r| r.id.chars().count())
            .max()
            .unwrap_or(0);
        for r in results {
            let (word, tone) = match r.status {
                CheckStatus::Pass => ("pass", Tone::Good),
                CheckStatus::Warn => ("warn", Tone::Warn),
                CheckStatus::Fail => ("fail", Tone::Bad),
                CheckStatus::Unsupported => ("unsupported", Tone::Dim),
            };
            println!("{:<id_width$}  {}", r.id, render::paint(word, tone, colour));
            for f in &r.findings {
                let (mark, tone) = match f.severity {
                    Severity::Info => ("info ", Tone::Dim),
                    Severity::Warning => ("warn ", Tone::Warn),
                    Severity::Error => ("error", Tone::Bad),
                };
                println!("  {} {}", render::paint(mark, tone, colour), f.message);
            }
            if let Some(e) = r.data.get("eligibility").and_then(|v| v.as_object()) {
                let mut t = Table::new(&["  eligibility", "devices"]);
                for (class, n) in e {
                    t.row(vec![
                        (format!("  {class}"), Tone::Plain),
                        (n.to_string(), Tone::Plain),
                    ]);
                }
                print!("{}", t.render(colour));
            }
        }
    }
    if failed { Err(Failure::Failed) } else { Ok(()) }
}

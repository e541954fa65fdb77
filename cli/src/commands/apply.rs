//! `apply`: the Summary, a confirmation, then the plan's steps against the cloud.

use crate::cloud::Connected;
use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops::apply::StepStatus;
use cloudattach_core::ops::connect::Command;
use cloudattach_core::ops::{self, Workspace};
use cloudattach_core::session::Takeover;
use std::time::Instant;

pub fn run(cli: &Cli, yes: bool, takeover: bool) -> Outcome {
    let ws = super::workspace(cli)?;
    let result = apply(&ws, cli.output, yes, takeover_choice("apply", takeover));
    super::report_skipped_lines(&ws);
    result
}

/// What `command` does about a hierarchy attached with another app of the tenant: take it over
/// with `--takeover`; otherwise ask on a terminal (even with `--yes`: it adds a secret to an app
/// this directory did not register), and off one refuse, naming the app and the flag.
pub(crate) fn takeover_choice(command: &'static str, takeover: bool) -> Takeover {
    use std::io::IsTerminal;
    if takeover {
        Takeover::Allow
    } else if std::io::stdin().is_terminal() {
        Takeover::Ask(std::sync::Arc::new(move |question: &str| {
            super::confirm(command, question).unwrap_or(false)
        }))
    } else {
        Takeover::Refuse
    }
}

fn apply(ws: &Workspace, output: Output, yes: bool, takeover: Takeover) -> Outcome {
    let planned = ops::apply::prepare(ws, &CliReporter::new())?;
    let plan = &planned.plan;
    if output == Output::Text {
        super::plan::print_plan(ws, plan, true);
    }
    let changes = ops::apply::changes(plan);
    if !yes && changes > 0 {
        let app_note = if ws.config.app.is_none() {
            "\nA Global Administrator signs in, and cloudattach registers an app in the tenant for this hierarchy."
        } else {
            ""
        };
        eprintln!("{app_note}");
        if !super::confirm("apply", "Apply these changes?")? {
            eprintln!("nothing changed");
            return Err(Failure::Failed);
        }
    }
    let started = Instant::now();
    let connected = Connected::open_with(ws, Command::Apply, takeover)?;
    let session = &connected.conn.session;
    let report = ops::apply::execute(ws, &planned, &connected.conn)?;
    let (reports, requests, retries, bytes) = (
        &report.steps,
        report.requests,
        report.retries,
        report.bytes_sent,
    );
    let failed = report.failed();
    if output == Output::Json {
        print_json(&serde_json::json!({
            "environment": plan.environment,
            "settings": plan.settings,
            "site_version": plan.site_version,
            "app": { "client_id": session.app().client_id, "name": session.app().name },
            "steps": reports,
            "requests": requests,
            "retries": retries,
        }))?;
    } else {
        let colour = colour_enabled();
        let mut t = Table::new(&["plugin", "result", "details"]);
        for r in reports {
            let (word, tone) = match r.status {
                StepStatus::Done => (r.action.as_str(), Tone::Good),
                StepStatus::Noop => ("noop", Tone::Dim),
                StepStatus::Skipped => ("skipped", Tone::Dim),
                StepStatus::Failed => ("failed", Tone::Bad),
            };
            let mut details = crate::render::counts(&r.counts);
            if let Some(reason) = &r.reason {
                details.push(reason.clone());
            }
            t.row(vec![
                (r.plugin.clone(), Tone::Plain),
                (word.to_string(), tone),
                (details.join(", "), Tone::Plain),
            ]);
        }
        println!();
        print!("{}", t.render(colour));
        for r in reports {
            for f in r
                .findings
                .iter()
                .filter(|f| f.severity != cloudattach_sdk::Severity::Info)
            {
                eprintln!("{}: {}", r.plugin, f.message);
            }
        }
        eprintln!(
            "{} in {:.1}s: {requests} requests ({retries} retried), {} KiB sent",
            if failed {
                "finished with failures"
            } else {
                "attached"
            },
            started.elapsed().as_secs_f64(),
            bytes / 1024
        );
    }
    connected.close();
    if failed { Err(Failure::Failed) } else { Ok(()) }
}

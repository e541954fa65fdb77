//! `apply`: sign in and read what the cloud holds (read-only), the Summary planned against it,
//! a confirmation, then the plan's steps against the cloud.

use crate::cloud::Started;
use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops::apply::StepStatus;
use cloudattach_core::ops::connect::Command;
use cloudattach_core::ops::plan::PlanOptions;
use cloudattach_core::ops::{self, Workspace};
use cloudattach_core::session::Takeover;
use std::time::Instant;

pub fn run(cli: &Cli, yes: bool, takeover: bool, ignore_checks: &[String]) -> Outcome {
    // Off a terminal it could not ask: refuse before anything, sign-in included.
    if !yes {
        super::require_terminal("apply")?;
    }
    let ws = super::workspace(cli)?;
    let options = PlanOptions {
        ignore_checks: ignore_checks.to_vec(),
    };
    let result = apply(
        &ws,
        cli.output,
        yes,
        &options,
        takeover_choice("apply", takeover),
    );
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

fn apply(
    ws: &Workspace,
    output: Output,
    yes: bool,
    options: &PlanOptions,
    takeover: Takeover,
) -> Outcome {
    let reporter = CliReporter::new();
    // A configuration with problems is refused before anyone signs in.
    let selection = ops::apply::select(ws, &reporter)?;
    let started = Started::start(ws, Command::Apply)?;
    let prepared = ops::apply::read_cloud(ws, &started.target(), &reporter)
        .and_then(|view| ops::apply::prepare(ws, selection, &view, options));
    let prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            started.close();
            return Err(e.into());
        }
    };
    let plan = &prepared.planned.plan;
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
        let confirmed = super::confirm("apply", "Apply these changes?");
        if !matches!(confirmed, Ok(true)) {
            started.close();
            confirmed?;
            eprintln!("nothing changed");
            return Err(Failure::Failed);
        }
    }
    let started_at = Instant::now();
    let connected = started.connect(ws, Command::Apply, takeover)?;
    let session = &connected.conn.session;
    let report = ops::apply::execute(ws, &prepared, &connected.conn)?;
    let (reports, requests, retries, bytes) = (
        &report.steps,
        report.requests,
        report.retries,
        report.bytes_sent,
    );
    let failed = report.failed() || plan.check_failed();
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
            started_at.elapsed().as_secs_f64(),
            bytes / 1024
        );
    }
    connected.close();
    if plan.check_failed() {
        super::plan::check_failures(plan)
    } else if failed {
        Err(Failure::Failed)
    } else {
        Ok(())
    }
}

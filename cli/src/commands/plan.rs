//! `plan`: the wizard's Summary page.

use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Failure, Outcome, Output, print_json};
use cloudattach_core::ops::plan::PlanOptions;
use cloudattach_core::ops::{self, Workspace};
use cloudattach_sdk::PlanAction;

pub fn run(cli: &Cli, ignore_checks: &[String]) -> Outcome {
    let ws = super::workspace(cli)?;
    let options = PlanOptions {
        ignore_checks: ignore_checks.to_vec(),
    };
    let planned = ops::plan::run(&ws, &options, &CliReporter::new())?;
    super::report_skipped_lines(&ws);
    if cli.output == Output::Json {
        print_json(&planned.plan)?;
    } else {
        print_plan(&ws, &planned.plan, false);
    }
    check_failures(&planned.plan)
}

/// Exit 1 when a feature is skipped because a prerequisite check failed, saying how to go
/// ahead anyway.
pub fn check_failures(plan: &cloudattach_core::Plan) -> Outcome {
    if !plan.check_failed() {
        return Ok(());
    }
    eprintln!(
        "a prerequisite check failed: its feature and the features that depend on it are skipped; fix what the check reports (cloudattach check), or go ahead despite one finding with --ignore-check CODE"
    );
    Err(Failure::Failed)
}

/// Prints the Summary page (on stderr when it precedes an apply).
pub fn print_plan(ws: &Workspace, plan: &cloudattach_core::Plan, to_stderr: bool) {
    let colour = colour_enabled() && !to_stderr;
    let mut out = String::new();
    out.push_str("Summary\n");
    out.push_str(&format!(
        "  Azure environment  {} ({})\n",
        plan.environment.display_name(),
        plan.environment
    ));
    out.push_str(&format!("  Settings           {}\n", plan.settings));
    out.push_str(&format!(
        "  Site               {} {} (version {})\n\n",
        ws.site.info.code, ws.site.info.name, plan.site_version
    ));
    let mut t = Table::new(&["#", "plugin", "action", "details"]);
    for (i, s) in plan.steps.iter().enumerate() {
        let tone = match s.action {
            PlanAction::Enable | PlanAction::Update => Tone::Good,
            PlanAction::Disable => Tone::Warn,
            PlanAction::Skip | PlanAction::Noop => Tone::Dim,
        };
        let mut details = s
            .reason
            .clone()
            .or_else(|| s.detail.clone())
            .unwrap_or_default();
        if !s.actions.is_empty() {
            let actions = format!("cloud actions: {}", s.actions.join(", "));
            details = if details.is_empty() {
                actions
            } else {
                format!("{details}; {actions}")
            };
        }
        if !s.ignored_checks.is_empty() {
            let ignored = format!("check ignored: {}", s.ignored_checks.join(", "));
            details = if details.is_empty() {
                ignored
            } else {
                format!("{details} ({ignored})")
            };
        }
        t.row(vec![
            ((i + 1).to_string(), Tone::Dim),
            (s.plugin.clone(), Tone::Plain),
            (s.action.as_str().to_string(), tone),
            (details, Tone::Plain),
        ]);
    }
    out.push_str(&t.render(colour));
    if to_stderr {
        eprint!("{out}");
    } else {
        print!("{out}");
    }
}

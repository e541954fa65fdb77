//! `plan`: the wizard's Summary page.

use crate::render::{Table, Tone, colour_enabled};
use crate::reporter::CliReporter;
use crate::{Cli, Outcome, Output, print_json};
use cloudattach_core::ops::{self, Workspace};
use cloudattach_sdk::PlanAction;

pub fn run(cli: &Cli) -> Outcome {
    let ws = super::workspace(cli)?;
    let planned = ops::plan::run(&ws, &CliReporter::new())?;
    super::report_skipped_lines(&ws);
    if cli.output == Output::Json {
        return print_json(&planned.plan);
    }
    print_plan(&ws, &planned.plan, false);
    Ok(())
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
        let details = s
            .reason
            .clone()
            .or_else(|| s.detail.clone())
            .unwrap_or_default();
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

//! One file per command: parse → call the use case in `cloudattach_core::ops` → render.

pub mod apply;
pub mod check;
pub mod cloud;
pub mod completions;
pub mod connect;
pub mod detach;
pub mod disable;
pub mod explain;
pub mod init;
pub mod logout;
pub mod plan;
pub mod plugins;
pub mod site;
pub mod status;
pub mod sync;
pub mod tenant;

use crate::reporter::CliReporter;
use crate::{Cli, CloudCommand, Command, ExplainCommand, Outcome, PluginsCommand, SiteCommand};
use cloudattach_core::ops::{LoadOptions, Workspace};

/// Where the workspace comes from, as the global flags say.
pub fn load_options(cli: &Cli) -> LoadOptions {
    LoadOptions {
        config: cli.config.clone(),
        plugin_dirs: cli.plugin_dir.clone(),
    }
}

/// Loads the workspace of a command.
pub fn workspace(cli: &Cli) -> Result<Workspace, crate::Failure> {
    Ok(Workspace::load(&load_options(cli), &CliReporter::new())?)
}

/// Reports the inventory lines the command's passes skipped, on stderr.
pub fn report_skipped_lines(ws: &Workspace) {
    for line in ws.skipped_lines() {
        eprintln!("warning: {line}");
    }
}

/// Runs the command the arguments name.
pub fn run(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::Plugins(PluginsCommand::List { include_failures }) => {
            plugins::list(cli, *include_failures)
        }
        Command::Plugins(PluginsCommand::Inspect { file }) => plugins::inspect(cli, file),
        Command::Plugins(PluginsCommand::New {
            id,
            out,
            sdk_path,
            sdk_git,
            name,
        }) => plugins::new(
            cli,
            id,
            out.as_deref(),
            sdk_path.as_deref(),
            sdk_git.as_deref(),
            name.as_deref(),
        ),
        Command::Check { ids } => check::run(cli, ids),
        Command::Plan { ignore_checks } => plan::run(cli, ignore_checks),
        Command::Apply {
            yes,
            takeover,
            ignore_checks,
        } => apply::run(cli, *yes, *takeover, ignore_checks),
        Command::Status => status::run(cli),
        Command::Sync { full, watch } => sync::run(cli, *full, *watch),
        Command::Disable { ids, yes } => disable::run(cli, ids, *yes),
        Command::Logout { all } => logout::run(cli, *all),
        Command::Completions { shell } => completions::completions(*shell),
        Command::Man { out } => completions::man(out.as_deref()),
        Command::Detach { yes, takeover } => detach::run(cli, *yes, *takeover),
        Command::Cloud(CloudCommand::Serve(opts)) => cloud::serve(opts.clone()),
        Command::Init(args) => init::run(cli, args),
        Command::PluginHost { library } => {
            let code = cloudattach_core::dynamic::serve_library(library);
            std::process::exit(code)
        }
        Command::Tenant(command) => tenant::run(cli, command),
        Command::Connect {
            interval,
            once,
            poll_wait,
        } => connect::run(cli, *interval, *once, *poll_wait),
        Command::Explain(ExplainCommand::Device { resource_id, cloud }) => {
            explain::device(cli, *resource_id, *cloud)
        }
        Command::Explain(ExplainCommand::Access {
            user,
            device,
            action,
            intune_roles,
            use_intune_rbac,
            cloud,
        }) => explain::access(
            cli,
            user,
            *device,
            action,
            intune_roles,
            *use_intune_rbac,
            *cloud,
        ),
        Command::Site(SiteCommand::Generate {
            devices,
            seed,
            out,
            site_version,
            force,
        }) => site::generate(cli, *devices, *seed, out, *site_version, *force),
    }
}

/// Refuses `command` (apply or detach) without `--yes` when standard input is not a terminal:
/// it could not ask, so it does nothing at all — no sign-in, no app registration.
pub fn require_terminal(command: &str) -> Result<(), crate::Failure> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Ok(());
    }
    let review = match command {
        "apply" => "review `cloudattach plan`, then run",
        "disable" => "review what it deletes, then run",
        _ => "run",
    };
    Err(crate::Failure::Input(format!(
        "standard input is not a terminal, so {command} cannot ask for confirmation: {review} `cloudattach {command} --yes`"
    )))
}

/// Asks on the terminal; without one, `command` (apply or detach) cannot ask, and the message
/// says to run it with `--yes`.
pub fn confirm(command: &str, question: &str) -> Result<bool, crate::Failure> {
    use std::io::{BufRead, Write};
    require_terminal(command)?;
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| crate::Failure::Runtime(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}

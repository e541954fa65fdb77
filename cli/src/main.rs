//! `cloudattach`: attach a Configuration Manager site to a cloud tenant.
//!
//! This crate parses arguments and renders results; the domain lives in `cloudattach-core`.

mod attach;
mod init;
mod render;

// Name every built-in plugin crate: a crate the binary never names is not linked, and its
// static registration silently disappears.
use cloudattach_plugin_co_management as _;
use cloudattach_plugin_defender_reporting as _;
use cloudattach_plugin_endpoint_analytics as _;
use cloudattach_plugin_rbac_authority as _;
use cloudattach_plugin_tenant_attach as _;

// Parsing and uploading millions of JSON records is allocation-bound; mimalloc is markedly
// faster than the system allocator at it (see docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand, ValueEnum};
use cloudattach_core::generate::{GenerateError, GenerateOptions, generate_site};
use cloudattach_core::state::StateStore;
use cloudattach_core::{Config, Registry, Site};
use cloudattach_sdk::{CheckStatus, PlanAction, Severity, SiteVersion, thousands};
use render::{Table, Tone, colour_enabled};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

/// Attach a Configuration Manager site to a cloud tenant: choose cloud features, check their
/// prerequisites, see the plan, apply it.
#[derive(Parser, Debug)]
#[command(
    name = "cloudattach",
    version,
    about = "Attach a Configuration Manager site to a cloud tenant: choose cloud features, check their prerequisites, see the plan, apply it, keep it in sync",
    long_about = None
)]
struct Cli {
    /// The configuration file [default: ./attach.toml; without one, the built-in demo]
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format: text for people, json for scripts (one JSON document on stdout)
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Load every dynamic plugin in this directory (repeatable)
    #[arg(long = "plugin-dir", global = true, value_name = "DIR")]
    plugin_dir: Vec<PathBuf>,
    /// More log output on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The cloud feature plugins
    #[command(subcommand)]
    Plugins(PluginsCommand),
    /// Run prerequisite checks (all plugins, or the ones named); needs no sign-in
    Check {
        /// Plugin ids
        #[arg(value_name = "PLUGIN_ID")]
        ids: Vec<String>,
    },
    /// Show what apply would do (the wizard's Summary page)
    Plan,
    /// Sign in, register or import the app, and apply the plan in order
    Apply {
        /// Apply without asking (also the "Yes" to registering an app)
        #[arg(long)]
        yes: bool,
    },
    /// What the cloud reports now, per plugin
    Status,
    /// One delta upload for every enabled plugin that uploads
    Sync {
        /// Resend everything, not only what changed
        #[arg(long)]
        full: bool,
        /// Keep syncing at this interval (e.g. 15m), like the site's connector does
        #[arg(long, value_name = "INTERVAL", value_parser = attach::parse_interval)]
        watch: Option<std::time::Duration>,
    },
    /// Turn features off in the cloud (dependents first)
    Disable {
        /// Plugin ids
        #[arg(value_name = "PLUGIN_ID", required = true)]
        ids: Vec<String>,
    },
    /// Offboard the hierarchy from the tenant
    Detach {
        /// Detach without asking
        #[arg(long)]
        yes: bool,
    },
    /// Write attach.toml: the cloud attach wizard's pages as prompts (or flags)
    Init(init::InitArgs),
    /// Sample sites
    #[command(subcommand)]
    Site(SiteCommand),
    /// The local cloud tenant service
    #[command(subcommand)]
    Cloud(CloudCommand),
}

#[derive(Subcommand, Debug)]
enum CloudCommand {
    /// Run the local cloud tenant service (Entra ID-style sign-in, Graph-style API, the attach gateway)
    Serve(cloudattach_cloud::ServeOptions),
}

#[derive(Subcommand, Debug)]
enum PluginsCommand {
    /// List the registered plugins (and the plugin libraries that failed to load, on stderr)
    List,
    /// Check a plugin library and print its manifest, without enabling anything
    Inspect {
        /// The library (.so, .dylib or .dll)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum SiteCommand {
    /// Write a realistic sample site in the inventory format (deterministic for a seed)
    Generate {
        /// Number of devices
        #[arg(long)]
        devices: u64,
        /// Random seed
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Output directory
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Site version written to site.toml
        #[arg(long, default_value = "2303")]
        site_version: SiteVersion,
        /// Replace an existing site in DIR
        #[arg(long)]
        force: bool,
    },
}

/// How a command ends when it does not succeed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad configuration, usage or input; nothing changed (exit 2).
    Input(String),
    /// A check or an apply step failed (exit 1), already reported.
    Failed,
    /// Something went wrong while running (exit 1).
    Runtime(String),
}

pub(crate) type Outcome = Result<(), Failure>;

pub(crate) fn input<E: std::fmt::Display>(e: E) -> Failure {
    Failure::Input(e.to_string())
}

/// The demo site's size and seed: a few thousand devices, always the same.
const DEMO_DEVICES: u64 = 3_000;
const DEMO_SEED: u64 = 2111;

pub(crate) struct Context {
    pub config: Config,
    pub registry: Registry,
    pub site: Arc<Site>,
}

impl Context {
    fn load(cli: &Cli) -> Result<Context, Failure> {
        let config = match &cli.config {
            Some(path) => Config::load(path).map_err(input)?,
            None if Path::new("attach.toml").is_file() => {
                Config::load(Path::new("attach.toml")).map_err(input)?
            }
            None => {
                let cwd = std::env::current_dir().map_err(|e| Failure::Runtime(e.to_string()))?;
                let config = Config::demo(&cwd);
                if !config.site_dir.join("site.toml").is_file() {
                    let opts = GenerateOptions {
                        devices: DEMO_DEVICES,
                        seed: DEMO_SEED,
                        ..Default::default()
                    };
                    generate_site(&opts, &config.site_dir, true)
                        .map_err(|e| Failure::Runtime(e.to_string()))?;
                }
                eprintln!(
                    "no attach.toml here: using the built-in demo ({} devices in {}, Azure Public Cloud, default settings, the embedded local cloud)",
                    thousands(DEMO_DEVICES),
                    config.site_dir.display()
                );
                config
            }
        };
        // An imported app that apply would refuse is refused here first, by every command, and
        // every command warns about a secret that expires soon.
        for w in cloudattach_core::config::validate_app_offline(&config).map_err(Failure::Input)? {
            eprintln!("warning: {w}");
        }
        let registry = registry_for(cli, Some(&config))?;
        let site = Site::open(&config.site_dir).map_err(input)?;
        Ok(Context {
            config,
            registry,
            site: Arc::new(site),
        })
    }

    /// Reports skipped inventory lines on stderr, once per command.
    fn report_skipped_lines(&self) {
        if let Some(scan) = self.site.scan_summary()
            && scan.skipped > 0
        {
            let file = self.site.dir.join("devices.jsonl");
            for bad in &scan.bad_lines {
                eprintln!(
                    "warning: {}:{}: skipped: {}",
                    file.display(),
                    bad.line,
                    bad.message
                );
            }
            if scan.skipped as usize > scan.bad_lines.len() {
                eprintln!(
                    "warning: … and {} more",
                    scan.skipped as usize - scan.bad_lines.len()
                );
            }
            eprintln!(
                "warning: {} line(s) of {} skipped; {} devices read",
                scan.skipped,
                file.display(),
                thousands(scan.devices)
            );
        }
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// The built-in plugins and every library in `--plugin-dir` and `[plugins] dirs`. A library
/// that fails to load is one line on stderr; the others still load and the command goes on.
fn registry_for(cli: &Cli, config: Option<&Config>) -> Result<Registry, Failure> {
    let mut registry = Registry::with_static_plugins().map_err(input)?;
    let mut dirs = cli.plugin_dir.clone();
    dirs.extend(config.map(|c| c.plugin_dirs.clone()).unwrap_or_default());
    cloudattach_core::dynamic::load_plugin_dirs(&mut registry, &dirs);
    for failure in &registry.load_failures {
        eprintln!("warning: {}", failure.message);
    }
    Ok(registry)
}

fn plugins_list(cli: &Cli) -> Outcome {
    let config = match &cli.config {
        Some(path) => Some(Config::load(path).map_err(input)?),
        None if Path::new("attach.toml").is_file() => {
            Some(Config::load(Path::new("attach.toml")).map_err(input)?)
        }
        None => None,
    };
    let registry = registry_for(cli, config.as_ref())?;
    let rows: Vec<serde_json::Value> = registry
        .iter()
        .map(|p| {
            let m = &p.manifest;
            serde_json::json!({
                "id": m.id,
                "name": m.name,
                "version": m.version,
                "origin": p.origin.kind(),
                "depends_on": m.depends_on,
                "environments": m.environments,
                "min_site_version": m.min_site_version.to_string(),
            })
        })
        .collect();
    if cli.output == Output::Json {
        return print_json(&rows);
    }
    let mut t = Table::new(&[
        "id",
        "name",
        "version",
        "origin",
        "depends on",
        "environments",
        "min site",
    ]);
    for p in registry.iter() {
        let m = &p.manifest;
        let envs: Vec<String> = m
            .environments
            .iter()
            .map(|e| {
                let v = m.min_site_version_for(*e);
                if v != m.min_site_version {
                    format!("{e} ({v})")
                } else {
                    e.to_string()
                }
            })
            .collect();
        t.row(vec![
            (m.id.clone(), Tone::Plain),
            (m.name.clone(), Tone::Plain),
            (m.version.clone(), Tone::Plain),
            (p.origin.kind().to_string(), Tone::Dim),
            (
                if m.depends_on.is_empty() {
                    "-".into()
                } else {
                    m.depends_on.join(", ")
                },
                Tone::Plain,
            ),
            (envs.join(", "), Tone::Plain),
            (m.min_site_version.to_string(), Tone::Plain),
        ]);
    }
    print!("{}", t.render(colour_enabled()));
    Ok(())
}

fn plugins_inspect(cli: &Cli, file: &Path) -> Outcome {
    let m = cloudattach_core::dynamic::inspect(file).map_err(input)?;
    if cli.output == Output::Json {
        return print_json(&m);
    }
    let envs: Vec<String> = m
        .environments
        .iter()
        .map(|e| {
            let v = m.min_site_version_for(*e);
            if v != m.min_site_version {
                format!("{e} ({v})")
            } else {
                e.to_string()
            }
        })
        .collect();
    println!("{} {} ({})", m.id, m.version, m.name);
    if !m.description.is_empty() {
        println!("  {}", m.description);
    }
    println!(
        "  depends on        {}",
        if m.depends_on.is_empty() {
            "-".into()
        } else {
            m.depends_on.join(", ")
        }
    );
    println!("  environments      {}", envs.join(", "));
    println!("  min site version  {}", m.min_site_version);
    for o in &m.options {
        let default = o
            .default
            .as_ref()
            .map(|d| format!(" = {d}"))
            .unwrap_or_default();
        println!(
            "  [features.{}] {}{default}  {}",
            m.id, o.key, o.description
        );
    }
    eprintln!(
        "{}: a valid cloudattach plugin (nothing was enabled)",
        file.display()
    );
    Ok(())
}

fn check(cli: &Cli, ids: &[String]) -> Outcome {
    let ctx = Context::load(cli)?;
    let selection = selection_for_reading(&ctx)?;
    for w in &selection.warnings {
        eprintln!("warning: {w}");
    }
    let results = cloudattach_core::check(&ctx.registry, &ctx.config, &selection, &ctx.site, ids)
        .map_err(input)?;
    ctx.report_skipped_lines();
    let failed = results.iter().any(|r| r.status == CheckStatus::Fail);
    if cli.output == Output::Json {
        print_json(&serde_json::json!({ "plugins": results }))?;
    } else {
        let colour = colour_enabled();
        let id_width = results
            .iter()
            .map(|r| r.id.chars().count())
            .max()
            .unwrap_or(0);
        for r in &results {
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

/// The selection for commands that only read (check, status): the configuration's; when it has
/// environment, version or dependency conflicts, the same with those features left out, so
/// they show as `unsupported` instead of refusing. Malformed options are still input errors.
pub(crate) fn selection_for_reading(ctx: &Context) -> Result<cloudattach_core::Selection, Failure> {
    match cloudattach_core::select(&ctx.config, &ctx.registry, ctx.site.info.version) {
        Ok(s) => Ok(s),
        Err(e)
            if e.problems.iter().all(|p| {
                p.contains("can't be enabled")
                    || p.contains("needs site version")
                    || p.contains("depends on")
            }) =>
        {
            lenient_selection(ctx)
        }
        Err(e) => Err(input(e)),
    }
}

fn lenient_selection(ctx: &Context) -> Result<cloudattach_core::Selection, Failure> {
    let mut config = ctx.config.clone();
    let env = config.environment;
    let version = ctx.site.info.version;
    let registry = &ctx.registry;
    config.features.retain(|id, _| {
        registry.get(id).is_some_and(|p| {
            cloudattach_core::orchestrator::unsupported_reason(&p.manifest, env, version).is_none()
        })
    });
    loop {
        match cloudattach_core::select(&config, registry, version) {
            Ok(s) => return Ok(s),
            Err(e) => {
                // Drop features whose dependency is off, one round at a time.
                let before = config.features.len();
                config.features.retain(|id, _| {
                    !e.problems
                        .iter()
                        .any(|p| p.starts_with(&format!("[features.{id}]")))
                });
                if config.features.len() == before {
                    return Err(input(e));
                }
            }
        }
    }
}

fn plan(cli: &Cli) -> Outcome {
    let ctx = Context::load(cli)?;
    cloudattach_core::orchestrator::require_wizard_version(ctx.site.info.version).map_err(input)?;
    let selection = cloudattach_core::select(&ctx.config, &ctx.registry, ctx.site.info.version)
        .map_err(input)?;
    for w in &selection.warnings {
        eprintln!("warning: {w}");
    }
    // plan only reads: the state is opened when there is one, never created.
    let state_dir = ctx.config.state_dir();
    let store = if state_dir.join("state.db").is_file() {
        Some(StateStore::open(&state_dir).map_err(|e| Failure::Runtime(e.to_string()))?)
    } else {
        None
    };
    let applied: &dyn cloudattach_core::orchestrator::AppliedState = match &store {
        Some(s) => s,
        None => &cloudattach_core::orchestrator::NothingApplied,
    };
    let plan = cloudattach_core::plan(&ctx.registry, &ctx.config, &selection, &ctx.site, applied)
        .map_err(input)?;
    ctx.report_skipped_lines();
    if cli.output == Output::Json {
        return print_json(&plan);
    }
    print_plan(&ctx, &plan, false);
    Ok(())
}

/// Prints the Summary page (on stderr when it precedes an apply).
pub(crate) fn print_plan(ctx: &Context, plan: &cloudattach_core::Plan, to_stderr: bool) {
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
        ctx.site.info.code, ctx.site.info.name, plan.site_version
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

fn site_generate(
    cli: &Cli,
    devices: u64,
    seed: u64,
    out: &Path,
    site_version: SiteVersion,
    force: bool,
) -> Outcome {
    let opts = GenerateOptions {
        devices,
        seed,
        site_version,
        ..Default::default()
    };
    let summary = generate_site(&opts, out, force).map_err(|e| match e {
        // The library names its own parameter; this command's flag is --force.
        GenerateError::WouldOverwrite { dir, files } => Failure::Input(format!(
            "{} already contains {files}; nothing was written. Choose an empty or new output directory, or pass --force to replace the existing site",
            dir.display()
        )),
        other => input(other),
    })?;
    if cli.output == Output::Json {
        return print_json(&serde_json::json!({
            "out": out,
            "devices": summary.devices,
            "clients": summary.clients,
            "collections": summary.collections,
            "bytes_written": summary.bytes_written,
        }));
    }
    eprintln!(
        "wrote a sample site to {}: {} devices ({} with a client), {} collections",
        out.display(),
        thousands(summary.devices),
        thousands(summary.clients),
        summary.collections
    );
    Ok(())
}

fn init_logging(verbose: u8, serving: bool) {
    // The embedded cloud's own warnings (auto-approve is on) are for people running
    // `cloud serve`; in other commands it is an implementation detail.
    let default = match verbose {
        0 if serving => "info",
        0 => "warn,cloudattach_cloud=error",
        1 => "info,cloudattach_cloud=warn",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLOUDATTACH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            std::env::var_os("NO_COLOR").is_none()
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .without_time()
        .try_init();
}

/// `cloudattach … | head`: a reader that closes stdout early ends the command quietly, as
/// SIGPIPE ends a C tool, instead of with a panic message about printing to stdout.
fn quiet_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        default(info)
    }));
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let cli = Cli::parse();
    init_logging(cli.verbose, matches!(cli.command, Command::Cloud(_)));
    let result = match &cli.command {
        Command::Plugins(PluginsCommand::List) => plugins_list(&cli),
        Command::Plugins(PluginsCommand::Inspect { file }) => plugins_inspect(&cli, file),
        Command::Check { ids } => check(&cli, ids),
        Command::Plan => plan(&cli),
        Command::Apply { yes } => Context::load(&cli).and_then(|ctx| {
            let r = attach::apply(&ctx, cli.output, *yes);
            ctx.report_skipped_lines();
            r
        }),
        Command::Status => Context::load(&cli).and_then(|ctx| attach::status(&ctx, cli.output)),
        Command::Sync { full, watch } => Context::load(&cli).and_then(|ctx| {
            let r = attach::sync(&ctx, cli.output, *full, *watch);
            ctx.report_skipped_lines();
            r
        }),
        Command::Disable { ids } => {
            Context::load(&cli).and_then(|ctx| attach::disable(&ctx, cli.output, ids))
        }
        Command::Detach { yes } => {
            Context::load(&cli).and_then(|ctx| attach::detach(&ctx, cli.output, *yes))
        }
        Command::Cloud(CloudCommand::Serve(opts)) => attach::cloud_serve(opts.clone()),
        Command::Init(args) => Registry::with_static_plugins()
            .map_err(input)
            .and_then(|r| init::init(args, &r, cli.output)),
        Command::Site(SiteCommand::Generate {
            devices,
            seed,
            out,
            site_version,
            force,
        }) => site_generate(&cli, *devices, *seed, out, *site_version, *force),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Failed) => ExitCode::from(1),
        Err(Failure::Input(msg)) => {
            for line in msg.lines() {
                eprintln!("error: {line}");
            }
            ExitCode::from(2)
        }
        Err(Failure::Runtime(msg)) => {
            eprintln!("error: {msg}");
            ExitCode::from(1)
        }
    }
}

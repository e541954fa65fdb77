//! `cloudattach`: attach a Configuration Manager site to a cloud tenant.
//!
//! This crate parses arguments, calls one use case of `cloudattach_core::ops` per command
//! (`commands/`, a file each) and renders what it returns; the domain lives in `cloudattach-core`.

mod cloud;
mod commands;
mod render;
mod reporter;

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
use cloudattach_core::ops::OpError;
use cloudattach_sdk::SiteVersion;
use std::path::PathBuf;
use std::process::ExitCode;

/// Attach a Configuration Manager site to a cloud tenant: choose cloud features, check their
/// prerequisites, see the plan, apply it.
#[derive(Parser, Debug)]
#[command(
    name = "cloudattach",
    version,
    about = "Attach a Configuration Manager site to a cloud tenant: choose cloud features, check their prerequisites, see the plan, apply it, keep it in sync",
    long_about = None
)]
pub(crate) struct Cli {
    /// The configuration file [default: ./attach.toml; without one, the built-in demo]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format: text for people, json for scripts (one JSON document on stdout)
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Load every dynamic plugin in this directory (repeatable)
    #[arg(long = "plugin-dir", global = true, value_name = "DIR")]
    pub plugin_dir: Vec<PathBuf>,
    /// With the embedded cloud: keep it serving after the command — its admin center at
    /// /admin — until Ctrl-C
    #[arg(long = "stay-up", global = true)]
    pub stay_up: bool,
    /// More log output on stderr (-v info, -vv debug)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    Plan {
        /// Go ahead despite the failing check finding with this code (repeatable, one code each)
        #[arg(long = "ignore-check", value_name = "CODE")]
        ignore_checks: Vec<String>,
    },
    /// Sign in, register or import the app, and apply the plan in order
    Apply {
        /// Apply without asking (also the "Yes" to registering an app)
        #[arg(long)]
        yes: bool,
        /// When another app of the tenant owns the hierarchy, add a new secret to that app and
        /// use it (asked on a terminal otherwise)
        #[arg(long)]
        takeover: bool,
        /// Go ahead despite the failing check finding with this code (repeatable, one code each)
        #[arg(long = "ignore-check", value_name = "CODE")]
        ignore_checks: Vec<String>,
    },
    /// What the cloud reports now, per plugin
    Status,
    /// One delta upload for every enabled plugin that uploads
    Sync {
        /// Resend everything, not only what changed
        #[arg(long)]
        full: bool,
        /// Keep syncing at this interval (e.g. 15m), like the site's connector does
        #[arg(long, value_name = "INTERVAL", value_parser = commands::sync::parse_interval)]
        watch: Option<std::time::Duration>,
    },
    /// Turn features off in the cloud (dependents first); their uploaded data is deleted from the tenant
    Disable {
        /// Plugin ids
        #[arg(value_name = "PLUGIN_ID", required = true)]
        ids: Vec<String>,
        /// Disable without asking (needed when standard input is not a terminal)
        #[arg(long)]
        yes: bool,
    },
    /// Forget the cached sign-in tokens, so the next command signs in afresh (the app's credentials are kept)
    Logout {
        /// Every cached sign-in of this state directory, whatever its tenant and endpoint
        #[arg(long)]
        all: bool,
    },
    /// Print a shell completion script on stdout
    Completions {
        /// The shell
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write one page per command into a directory
    Man {
        /// Write cloudattach.1 and cloudattach-<command>.1 for every command into DIR
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Offboard the hierarchy from the tenant
    Detach {
        /// Detach without asking
        #[arg(long)]
        yes: bool,
        /// When another app of the tenant owns the hierarchy, add a new secret to that app and
        /// use it (asked on a terminal otherwise)
        #[arg(long)]
        takeover: bool,
    },
    /// Run the site's connector: delta uploads at an interval, a heartbeat, and the cloud
    /// actions addressed to the hierarchy, each authorized, run and answered (Ctrl-C stops it)
    Connect {
        /// The delta upload interval (e.g. 900, 15m, 1h)
        #[arg(long, value_name = "INTERVAL", default_value = "15m", value_parser = commands::sync::parse_interval)]
        interval: std::time::Duration,
        /// Serve the actions waiting now, sync once, and exit
        #[arg(long)]
        once: bool,
        /// How long one poll for actions waits (e.g. 25s; at most 30s)
        #[arg(long, value_name = "INTERVAL", default_value = "25s", value_parser = commands::sync::parse_interval, hide = true)]
        poll_wait: std::time::Duration,
    },
    /// The tenant side, signed in as a person of the tenant: uploaded devices, cloud actions,
    /// reports, the "Use Intune RBAC" toggle and Intune roles
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Runs one plugin library in this process for its parent, over standard input and output
    /// (the plugin process protocol); started by cloudattach itself
    #[command(hide = true)]
    PluginHost {
        /// The plugin library
        #[arg(long, value_name = "FILE")]
        library: PathBuf,
    },
    /// Why, for one device: uploaded or not, co-management, Endpoint analytics, Defender; and
    /// who may run a cloud action on it, link by link (offline, from the site)
    #[command(subcommand)]
    Explain(ExplainCommand),
    /// Write attach.toml: the cloud attach wizard's pages as prompts (or flags)
    Init(commands::init::InitArgs),
    /// Sample sites
    #[command(subcommand)]
    Site(SiteCommand),
    /// The local cloud tenant service
    #[command(subcommand)]
    Cloud(CloudCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum TenantCommand {
    /// Sign in as a person of the tenant (device code) and say who; later tenant commands use
    /// this sign-in
    Login {
        /// Forget the cached sign-in first (to sign in as someone else)
        #[arg(long)]
        fresh: bool,
    },
    /// The uploaded devices (Graph does not list tenant-attached devices)
    Devices {
        /// Only the devices whose name starts with this (case-insensitive)
        #[arg(long, value_name = "PREFIX")]
        name: Option<String>,
        /// Only this hierarchy's devices [default: every hierarchy of the tenant]
        #[arg(long, value_name = "ID")]
        hierarchy: Option<String>,
        /// Devices per page (1-1000)
        #[arg(long, default_value_t = 100)]
        top: u32,
        /// Every page
        #[arg(long)]
        all: bool,
    },
    /// Everything the cloud holds for one uploaded device
    Device {
        /// The device's resource id
        #[arg(value_name = "RESOURCE_ID")]
        resource_id: i64,
        /// Its hierarchy [default: the configured site's]
        #[arg(long, value_name = "ID")]
        hierarchy: Option<String>,
    },
    /// Ask for a cloud action and wait for its answer (exit 1 unless it succeeded)
    Action {
        /// The action's id (resource-explorer, cmpivot, cmpivot-collection, or one a plugin declares)
        #[arg(value_name = "ACTION")]
        action: String,
        /// The target device
        #[arg(
            long,
            value_name = "RESOURCE_ID",
            required_unless_present = "collection",
            conflicts_with = "collection"
        )]
        device: Option<i64>,
        /// The target collection
        #[arg(long, value_name = "COLLECTION_ID")]
        collection: Option<String>,
        /// A parameter, NAME=VALUE (repeatable); a value that reads as JSON (a number, true) is
        /// taken as such
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// The hierarchy [default: the configured site's]
        #[arg(long, value_name = "ID")]
        hierarchy: Option<String>,
        /// How long to wait for the answer (0: ask and return)
        #[arg(long, value_name = "INTERVAL", default_value = "10m", value_parser = parse_wait)]
        wait: std::time::Duration,
    },
    /// One action as the cloud records it (who asked, the authority that decided, the outcome)
    Show {
        /// The action's id
        #[arg(value_name = "ACTION_ID")]
        id: String,
    },
    /// A report: endpoint-analytics, endpoint-analytics-apps, unhealthy-endpoints,
    /// active-malware, antivirus-agent-status, detected-malware, co-management
    Report {
        /// The report
        #[arg(value_name = "REPORT")]
        name: String,
        /// Only this hierarchy
        #[arg(long, value_name = "ID")]
        hierarchy: Option<String>,
    },
    /// The tenant's "Use Intune RBAC" toggle (shows it; --set changes it)
    Rbac {
        /// Turn it on or off (Global or Intune Administrator)
        #[arg(long, value_name = "on|off", value_parser = parse_toggle)]
        set: Option<bool>,
    },
    /// The Intune roles and who holds them
    Roles,
    /// Replace a user's Intune roles (Global or Intune Administrator)
    Assign {
        /// The user (UPN or object id)
        #[arg(value_name = "USER")]
        user: String,
        /// The roles (none: remove every Intune role)
        #[arg(value_name = "ROLE")]
        roles: Vec<String>,
    },
}

fn parse_wait(s: &str) -> Result<std::time::Duration, String> {
    if s.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    commands::sync::parse_interval(s)
}

#[derive(Subcommand, Debug)]
pub(crate) enum ExplainCommand {
    /// Why a device is (not) uploaded, (not) eligible for co-management, (not) in Endpoint
    /// analytics, and whether its Defender data goes up
    Device {
        /// The device's resource id
        #[arg(value_name = "RESOURCE_ID")]
        resource_id: i64,
        /// Also show what the cloud holds for it, signed in as in `tenant login`
        #[arg(long)]
        cloud: bool,
    },
    /// The authorization chain of one cloud action for one person on one device: Intune role,
    /// RBAC authority, site user, site role, collection scope
    Access {
        /// The person's user principal name
        #[arg(long, value_name = "UPN")]
        user: String,
        /// The device's resource id
        #[arg(long, value_name = "RESOURCE_ID")]
        device: i64,
        /// The action's id (resource-explorer, cmpivot, timeline, or one a plugin declares)
        #[arg(long, value_name = "ACTION")]
        action: String,
        /// The person's Intune or directory roles, as the cloud's role assignments list them
        /// (repeatable); without it the Intune link is not checked
        #[arg(long = "intune-role", value_name = "ROLE")]
        intune_roles: Vec<String>,
        /// The tenant's "Use Intune RBAC" toggle; without it, taken as off (the stricter)
        #[arg(long, value_name = "on|off", value_parser = parse_toggle)]
        use_intune_rbac: Option<bool>,
        /// Read the person's Intune roles and identity, the tenant's toggle and the connector's
        /// health from the cloud, signed in as in `tenant login`
        #[arg(long)]
        cloud: bool,
    },
}

fn parse_toggle(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum CloudCommand {
    /// Run the local cloud tenant service (Entra ID-style sign-in, Graph-style API, the attach gateway)
    Serve(cloudattach_cloud::ServeOptions),
}

#[derive(Subcommand, Debug)]
pub(crate) enum PluginsCommand {
    /// List the registered plugins (and the plugin libraries that failed to load, on stderr)
    List {
        /// With --output json: print {"plugins": [...], "load_failures": [{"path", "message"}]}
        /// so a script sees the libraries that failed to load too
        #[arg(long)]
        include_failures: bool,
    },
    /// Write a new plugin crate: manifest, check, apply, sync, a test, pinned to this SDK
    New {
        /// The plugin id (kebab-case): its [features.<id>] table and upload channel ext/<id>
        #[arg(value_name = "ID")]
        id: String,
        /// The crate's directory [default: ./ID]
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Take cloudattach-sdk and cloudattach-testkit from this cloudattach checkout
        #[arg(
            long,
            value_name = "DIR",
            conflicts_with = "sdk_git",
            required_unless_present = "sdk_git"
        )]
        sdk_path: Option<PathBuf>,
        /// Take them from this git repository, at this version's tag
        #[arg(long, value_name = "URL")]
        sdk_git: Option<String>,
        /// The feature's display name [default: from the id]
        #[arg(long)]
        name: Option<String>,
    },
    /// Check a plugin library and print its manifest, without enabling anything
    Inspect {
        /// The library (.so, .dylib or .dll)
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SiteCommand {
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
    /// An error with its machine-readable code and, where there is one, what to do.
    Coded(Box<ErrorReport>),
}

/// An error as `--output json` prints it: `{"error": {"code", "message", "hint"}}` (and, for a
/// selection, its `problems`), with the exit code it ends the command with.
#[derive(Debug)]
pub(crate) struct ErrorReport {
    /// 2: bad configuration, usage or input; 1: a failure while running.
    pub exit: u8,
    /// `usage`, `config`, `plugin-dir`, `selection`, `input`, `runtime` or `failed`.
    pub code: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The text people read on stderr (the message, with its hints in place).
    pub text: String,
    /// A selection's problems, each with kind, feature, key, message and hint.
    pub problems: Option<serde_json::Value>,
}

impl ErrorReport {
    /// A report of `text`; its `hint: …` lines, if any, are the hint.
    fn new(exit: u8, code: &'static str, text: String) -> Self {
        let (hints, lines): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("hint: "));
        let hints: Vec<&str> = hints
            .into_iter()
            .map(|l| l.trim_start_matches("hint: "))
            .collect();
        ErrorReport {
            exit,
            code,
            message: lines.join("\n"),
            hint: (!hints.is_empty()).then(|| hints.join("\n")),
            text,
            problems: None,
        }
    }
}

impl Failure {
    /// The failure as an error report (`None`: a failure the command already reported).
    fn report(self) -> Option<ErrorReport> {
        match self {
            Failure::Input(m) => Some(ErrorReport::new(2, "input", m)),
            Failure::Runtime(m) => Some(ErrorReport::new(1, "runtime", m)),
            Failure::Coded(r) => Some(*r),
            Failure::Failed => None,
        }
    }
}

pub(crate) type Outcome = Result<(), Failure>;

pub(crate) fn input<E: std::fmt::Display>(e: E) -> Failure {
    Failure::Input(e.to_string())
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        let text = e.to_string();
        let report = match e {
            OpError::Problems(sel) => {
                let join = |parts: Vec<String>| (!parts.is_empty()).then(|| parts.join("\n"));
                ErrorReport {
                    exit: 2,
                    code: "selection",
                    message: sel
                        .problems
                        .iter()
                        .map(|p| p.message.clone())
                        .collect::<Vec<_>>()
                        .join("\n"),
                    hint: join(sel.problems.iter().filter_map(|p| p.hint.clone()).collect()),
                    problems: serde_json::to_value(&sel.problems).ok(),
                    text,
                }
            }
            OpError::Config(_) => ErrorReport::new(2, "config", text),
            OpError::PluginDir(_) => ErrorReport::new(2, "plugin-dir", text),
            OpError::Input(_) => ErrorReport::new(2, "input", text),
            OpError::Runtime(_) => ErrorReport::new(1, "runtime", text),
        };
        Failure::Coded(Box::new(report))
    }
}

/// Whether the command has printed its JSON document: an error after it prints no second one.
static DOCUMENT_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Notes that a JSON document went to stdout (for commands that print theirs themselves).
pub(crate) fn document_printed() {
    DOCUMENT_PRINTED.store(true, std::sync::atomic::Ordering::SeqCst);
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{text}");
    document_printed();
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

/// Whether the raw arguments ask for JSON output: clap's own errors come before the parsed
/// flags exist, and a script that asked for JSON gets its error as JSON too.
fn json_requested(args: &[std::ffi::OsString]) -> bool {
    let mut json = false;
    let mut iter = args.iter().skip(1).map(|a| a.to_string_lossy());
    while let Some(arg) = iter.next() {
        if arg == "--" {
            break;
        }
        if arg == "--output" {
            json = iter.next().is_some_and(|v| v == "json");
        } else if let Some(v) = arg.strip_prefix("--output=") {
            json = v == "json";
        }
    }
    json
}

/// A usage error as an error report: clap's first line is the message, the rest (usage, a
/// suggestion, `--help`) the hint.
fn usage_report(e: &clap::Error) -> ErrorReport {
    let rendered = e.render().to_string();
    let (first, rest) = rendered.split_once("\n\n").unwrap_or((&rendered, ""));
    // The first paragraph, one line ("the following required arguments were not provided:
    // <PLUGIN_ID>...").
    let message = first
        .trim_start_matches("error: ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let rest: Vec<&str> = rest
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    ErrorReport {
        exit: 2,
        code: "usage",
        hint: (!rest.is_empty()).then(|| rest.join("\n")),
        text: message.clone(),
        message,
        problems: None,
    }
}

/// Prints `{"error": {...}}` on stdout.
fn print_error_document(r: &ErrorReport) {
    let mut error = serde_json::json!({
        "code": r.code,
        "message": r.message,
        "hint": r.hint,
    });
    if let Some(p) = &r.problems {
        error["problems"] = p.clone();
    }
    if let Ok(text) = serde_json::to_string_pretty(&serde_json::json!({ "error": error })) {
        println!("{text}");
    }
}

/// The configuration text the command read, for redacting its secrets from an error.
fn config_text(cli: &Cli) -> String {
    let path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from("attach.toml"));
    std::fs::read_to_string(path).unwrap_or_default()
}

/// On Ctrl-C or SIGTERM: stop the plugin processes, then exit as the signal would (130 / 143).
fn stop_plugins_on_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        let code = rt.block_on(async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return None;
                };
                tokio::select! {
                    _ = int.recv() => Some(130),
                    _ = term.recv() => Some(143),
                }
            }
            #[cfg(not(unix))]
            {
                tokio::signal::ctrl_c().await.ok().map(|()| 130)
            }
        });
        if let Some(code) = code {
            cloudattach_core::dynamic::stop_plugin_processes();
            // An embedded cloud kept up with --stay-up is stopped, not interrupted: the
            // command had finished.
            if cloud::SERVING.load(std::sync::atomic::Ordering::SeqCst) {
                eprintln!("the embedded cloud stopped");
                std::process::exit(0);
            }
            std::process::exit(code);
        }
    });
}

fn main() -> ExitCode {
    quiet_broken_pipe();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let json = json_requested(&args);
    let cli = match Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let is_usage_error =
                !matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
            if json && is_usage_error {
                print_error_document(&usage_report(&e));
            }
            e.exit()
        }
    };
    init_logging(cli.verbose, matches!(cli.command, Command::Cloud(_)));
    // Ctrl-C and SIGTERM stop the plugin processes too (each runs in its own process group);
    // `connect` stops on its own terms, and the plugin host is stopped by its parent.
    if !matches!(
        cli.command,
        Command::Connect { once: false, .. } | Command::PluginHost { .. }
    ) {
        stop_plugins_on_signals();
    }
    cloud::STAY_UP.store(cli.stay_up, std::sync::atomic::Ordering::SeqCst);
    let result = commands::run(&cli);
    let Err(failure) = result else {
        return ExitCode::SUCCESS;
    };
    let json = cli.output == Output::Json;
    let Some(mut report) = failure.report() else {
        // Already reported; a script that got no document yet gets one.
        if json && !DOCUMENT_PRINTED.load(std::sync::atomic::Ordering::SeqCst) {
            print_error_document(&ErrorReport::new(
                1,
                "failed",
                "the command failed; the messages on stderr say why".into(),
            ));
        }
        return ExitCode::from(1);
    };
    // Every error is rendered here, once: no value of a secret-like key of attach.toml is
    // ever shown, whichever part of the program wrote the message.
    let config = config_text(&cli);
    let redact = |s: &str| cloudattach_core::config::redact_secrets(s, &config);
    report.text = redact(&report.text);
    report.message = redact(&report.message);
    report.hint = report.hint.as_deref().map(redact);
    if let Some(p) = &report.problems {
        report.problems = Some(cloudattach_core::config::redact_secrets_in_json(p, &config));
    }
    for line in report.text.lines() {
        eprintln!("error: {line}");
    }
    if json && !DOCUMENT_PRINTED.load(std::sync::atomic::Ordering::SeqCst) {
        print_error_document(&report);
    }
    ExitCode::from(report.exit)
}

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
        /// When another app of the tenant owns the hierarchy, add a new secret to that app and
        /// use it (asked on a terminal otherwise)
        #[arg(long)]
        takeover: bool,
    },
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
}

pub(crate) type Outcome = Result<(), Failure>;

pub(crate) fn input<E: std::fmt::Display>(e: E) -> Failure {
    Failure::Input(e.to_string())
}

impl From<OpError> for Failure {
    fn from(e: OpError) -> Self {
        if e.is_input() {
            Failure::Input(e.to_string())
        } else {
            Failure::Runtime(e.to_string())
        }
    }
}

pub(crate) fn print_json(value: &impl serde::Serialize) -> Outcome {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure::Runtime(e.to_string()))?;
    println!("{text}");
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
    let result = commands::run(&cli);
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

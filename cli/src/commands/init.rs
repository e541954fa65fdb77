//! `cloudattach init`: the wizard's pages as prompts on a terminal, or flags without one; writes
//! `attach.toml` after showing the Summary page of what it would apply.

use crate::{Cli, Failure, Outcome, Output, input, print_json};
use clap::Args;
use cloudattach_core::ops::OpError;
use cloudattach_core::ops::init::{self as wizard, Front, InitFlags, settings_of};
use cloudattach_core::{Config, Registry};
use cloudattach_sdk::Environment;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Answers to the wizard's pages; each has a flag, so init runs without a terminal.
#[derive(Args, Debug, Clone, Default)]
pub struct InitArgs {
    /// Where to write the configuration
    #[arg(long, value_name = "FILE", default_value = "attach.toml")]
    pub out: PathBuf,
    /// Replace an existing file
    #[arg(long)]
    pub force: bool,
    /// Sign in now (the wizard's sign-in page) to check the account; the tokens are kept for apply
    #[arg(long)]
    pub sign_in: bool,
    /// Never prompt; use the flags and the defaults
    #[arg(long)]
    pub no_input: bool,
    /// The site directory (relative to the configuration file)
    #[arg(long, value_name = "DIR")]
    pub site: Option<String>,
    /// Azure environment: public, usgov or china
    #[arg(long)]
    pub environment: Option<Environment>,
    /// The tenant (name or id)
    #[arg(long)]
    pub tenant: Option<String>,
    /// The cloud endpoint: "embedded" or a URL
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The wizard's settings: default or custom
    #[arg(long, value_parser = ["default", "custom"])]
    pub settings: Option<String>,
    /// Upload devices: "all", a collection id, or "none" (custom)
    #[arg(long)]
    pub upload: Option<String>,
    /// Enable Endpoint analytics (custom)
    #[arg(long, value_name = "BOOL")]
    pub endpoint_analytics: Option<bool>,
    /// Enable RBAC authority (custom; site 2207 or later)
    #[arg(long, value_name = "BOOL")]
    pub rbac_authority: Option<bool>,
    /// Enforce Configuration Manager RBAC for cloud console requests (custom; turns RBAC authority on); false = Intune RBAC alone
    #[arg(long, value_name = "BOOL")]
    pub enforce_configmgr_rbac: Option<bool>,
    /// Upload Microsoft Defender data (custom; site 2303 or later)
    #[arg(long, value_name = "BOOL")]
    pub defender_reporting: Option<bool>,
    /// Co-management automatic enrollment: all, pilot or none; off turns co-management off
    #[arg(long, value_parser = ["all", "pilot", "none", "off"])]
    pub co_management: Option<String>,
    /// The pilot collection (with --co-management pilot)
    #[arg(long, value_name = "COLLECTION_ID")]
    pub pilot_collection: Option<String>,
    /// The app: register a new one (apply does it) or import an existing one
    #[arg(long, value_parser = ["register", "import"])]
    pub app: Option<String>,
    /// The imported app's tenant id
    #[arg(long, value_name = "ID")]
    pub app_tenant_id: Option<String>,
    /// The imported app's client (application) id
    #[arg(long, value_name = "ID")]
    pub app_client_id: Option<String>,
    /// The imported app's name
    #[arg(long, value_name = "NAME")]
    pub app_name: Option<String>,
    /// The imported app's App ID URI (api://TENANT_ID/NAME or https://DOMAIN/NAME)
    #[arg(long, value_name = "URI")]
    pub app_id_uri: Option<String>,
    /// A file holding the imported app's secret (relative to the configuration); never the secret itself
    #[arg(long, value_name = "FILE")]
    pub app_secret_file: Option<String>,
    /// An environment variable holding the imported app's secret
    #[arg(long, value_name = "VARIABLE")]
    pub app_secret_env: Option<String>,
    /// When the imported app's secret expires (YYYY-MM-DD)
    #[arg(long, value_name = "DATE")]
    pub app_secret_expiry: Option<String>,
}

impl InitArgs {
    fn flags(&self) -> InitFlags {
        InitFlags {
            site: self.site.clone(),
            environment: self.environment,
            tenant: self.tenant.clone(),
            endpoint: self.endpoint.clone(),
            sign_in: self.sign_in,
            app: self.app.clone(),
            app_tenant_id: self.app_tenant_id.clone(),
            app_client_id: self.app_client_id.clone(),
            app_name: self.app_name.clone(),
            app_id_uri: self.app_id_uri.clone(),
            app_secret_file: self.app_secret_file.clone(),
            app_secret_env: self.app_secret_env.clone(),
            app_secret_expiry: self.app_secret_expiry.clone(),
            settings: self.settings.clone(),
            upload: self.upload.clone(),
            endpoint_analytics: self.endpoint_analytics,
            rbac_authority: self.rbac_authority,
            enforce_configmgr_rbac: self.enforce_configmgr_rbac,
            defender_reporting: self.defender_reporting,
            co_management: self.co_management.clone(),
            pilot_collection: self.pilot_collection.clone(),
        }
    }
}

/// The wizard's front end on stdin and stderr.
struct Terminal {
    interactive: bool,
}

impl Terminal {
    fn read_line(&self, question: &str, default: &str) -> Result<String, OpError> {
        if default.is_empty() {
            eprint!("{question}: ");
        } else {
            eprint!("{question} [{default}]: ");
        }
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| OpError::Runtime(e.to_string()))?;
        if n == 0 {
            return Err(OpError::Input(
                "init: input ended before the wizard finished; nothing written".into(),
            ));
        }
        Ok(line.trim().to_string())
    }
}

impl Front for Terminal {
    fn interactive(&self) -> bool {
        self.interactive
    }

    fn ask(&mut self, question: &str, default: &str) -> Result<String, OpError> {
        self.read_line(question, default)
    }

    fn say(&mut self, line: &str) {
        eprintln!("{line}");
    }

    fn warn(&mut self, message: &str) {
        eprintln!("warning: {message}");
    }

    fn sign_in(&mut self, config: &Config) -> Result<String, OpError> {
        crate::cloud::sign_in_check(config).map_err(|f| match f {
            Failure::Input(m) => OpError::Input(m),
            Failure::Runtime(m) => OpError::Runtime(m),
            Failure::Coded(r) if r.exit == 2 => OpError::Input(r.text),
            Failure::Coded(r) => OpError::Runtime(r.text),
            Failure::Failed => OpError::Runtime("the sign-in failed".into()),
        })
    }
}

pub fn run(cli: &Cli, args: &InitArgs) -> Outcome {
    let registry = Registry::with_static_plugins().map_err(input)?;
    init(args, &registry, cli.output)
}

fn init(args: &InitArgs, registry: &Registry, output: Output) -> Outcome {
    if args.out.exists() && !args.force {
        return Err(Failure::Input(format!(
            "{} exists; pass --force to replace it",
            args.out.display()
        )));
    }
    let mut front = Terminal {
        interactive: !args.no_input && std::io::stdin().is_terminal(),
    };
    if front.interactive {
        eprintln!(
            "cloudattach init: the cloud attach wizard. Press Enter to keep [the default].\n"
        );
    }
    let made = wizard::wizard(&args.flags(), &args.out, registry, &mut front)?;
    // Summary: what plan will show for this configuration, before anything is written.
    eprintln!("\nSummary");
    // A feature this site or cloud cannot run is written off; say why rather than "turned off".
    let unavailable = made
        .answers
        .custom
        .as_ref()
        .map(|c| c.unavailable.clone())
        .unwrap_or_default();
    for step in &made.plan.steps {
        let why = unavailable
            .iter()
            .find(|(id, _)| *id == step.plugin)
            .map(|(_, why)| why.as_str())
            .or(step.reason.as_deref())
            .or(step.detail.as_deref())
            .map(|r| format!(" {r}"))
            .unwrap_or_default();
        eprintln!("  {:<20} {:<6}{why}", step.plugin, step.action.as_str());
    }
    if front.interactive {
        let write = front
            .read_line(&format!("Write {} (y/n)", args.out.display()), "y")
            .map_err(Failure::from)?;
        if !(write.is_empty()
            || write.eq_ignore_ascii_case("y")
            || write.eq_ignore_ascii_case("yes"))
        {
            eprintln!("nothing written");
            return Err(Failure::Failed);
        }
    }
    std::fs::write(&args.out, &made.text)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", args.out.display())))?;
    eprintln!(
        "wrote {}; next: cloudattach plan, then cloudattach apply",
        args.out.display()
    );
    if output == Output::Json {
        let environment: Environment = made.answers.environment;
        return print_json(&serde_json::json!({
            "written": args.out,
            "settings": settings_of(&made.answers).as_str(),
            "environment": environment,
        }));
    }
    Ok(())
}

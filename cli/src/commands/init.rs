//! `cloudattach init`: the wizard's pages as prompts on a terminal, or flags without one; writes
//! `attach.toml` after showing the Summary page of what it would apply.

use crate::{Cli, Failure, Outcome, Output, input, print_json};
use clap::Args;
use cloudattach_core::ops::init as wizard;
use cloudattach_core::ops::init::{CustomUpload, InitAnswers};
use cloudattach_core::{Config, Registry, Site};
use cloudattach_sdk::Environment;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

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
    /// Enforce Configuration Manager RBAC for cloud console requests (custom); false = Intune RBAC alone
    #[arg(long, value_name = "BOOL")]
    pub enforce_configmgr_rbac: Option<bool>,
    /// Upload Microsoft Defender data (custom)
    #[arg(long, value_name = "BOOL")]
    pub defender_reporting: Option<bool>,
    /// Co-management automatic enrollment: all, pilot or none
    #[arg(long, value_parser = ["all", "pilot", "none"])]
    pub co_management: Option<String>,
    /// The pilot collection (with --co-management pilot)
    #[arg(long, value_name = "COLLECTION_ID")]
    pub pilot_collection: Option<String>,
}

struct Prompter {
    interactive: bool,
}

impl Prompter {
    fn ask(&self, question: &str, default: &str) -> Result<String, Failure> {
        if !self.interactive {
            return Ok(default.to_string());
        }
        eprint!("{question} [{default}]: ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        let n = std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::Runtime(e.to_string()))?;
        if n == 0 {
            return Err(Failure::Input(
                "init: input ended before the wizard finished; nothing written".into(),
            ));
        }
        let line = line.trim();
        Ok(if line.is_empty() {
            default.to_string()
        } else {
            line.to_string()
        })
    }

    fn choose(&self, question: &str, choices: &[&str], default: &str) -> Result<String, Failure> {
        loop {
            let a = self.ask(&format!("{question} ({})", choices.join("/")), default)?;
            if choices.contains(&a.as_str()) {
                return Ok(a);
            }
            if !self.interactive {
                return Err(Failure::Input(format!(
                    "{question}: {a:?} is not one of {}",
                    choices.join(", ")
                )));
            }
            eprintln!("  please answer one of: {}", choices.join(", "));
        }
    }

    fn yes_no(&self, question: &str, default: bool) -> Result<bool, Failure> {
        let a = self.choose(question, &["y", "n"], if default { "y" } else { "n" })?;
        Ok(a == "y")
    }

    /// A collection picker: lists the site's collections with their sizes.
    fn collection(
        &self,
        site: Option<&Site>,
        question: &str,
        default: &str,
    ) -> Result<String, Failure> {
        let ids: Vec<String> = site
            .map(|s| s.collection_ids().map(String::from).collect())
            .unwrap_or_default();
        if self.interactive
            && let Some(site) = site
        {
            eprintln!("  collections of site {}:", site.info.code);
            for (i, id) in ids.iter().enumerate() {
                if let Some(c) = site.collection(id) {
                    eprintln!(
                        "  {:>3}. {}  {} ({} devices)",
                        i + 1,
                        c.id,
                        c.name,
                        c.member_count
                    );
                }
            }
        }
        loop {
            let a = self.ask(question, default)?;
            let picked = a
                .parse::<usize>()
                .ok()
                .and_then(|n| ids.get(n.wrapping_sub(1)).cloned())
                .unwrap_or(a.clone());
            if ids.is_empty() || ids.contains(&picked) {
                return Ok(picked);
            }
            if !self.interactive {
                return Err(Failure::Input(format!(
                    "{question}: the site has no collection {picked}"
                )));
            }
            eprintln!(
                "  the site has no collection {picked}; pick a number or an id from the list"
            );
        }
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
    let p = Prompter {
        interactive: !args.no_input && std::io::stdin().is_terminal(),
    };
    if p.interactive {
        eprintln!(
            "cloudattach init: the cloud attach wizard. Press Enter to keep [the default].\n"
        );
    }
    let base = args
        .out
        .parent()
        .map(Path::to_path_buf)
        .filter(|b| !b.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    // Page: the site.
    let site_path = match &args.site {
        Some(s) => s.clone(),
        None => p.ask("Site directory", "site")?,
    };
    let site = Site::open(&base.join(&site_path)).ok();
    if site.is_none() {
        eprintln!(
            "warning: no readable site at {}: collections cannot be listed",
            base.join(&site_path).display()
        );
    }
    // Page: Azure environment.
    let environment: Environment = match args.environment {
        Some(e) => e,
        None => p
            .choose("Azure environment", &["public", "usgov", "china"], "public")?
            .parse()
            .map_err(input)?,
    };
    // Page: sign in (the tenant; apply signs in).
    let tenant = match &args.tenant {
        Some(t) => t.clone(),
        None => p.ask("Tenant", "contoso.example")?,
    };
    let endpoint = match &args.endpoint {
        Some(e) => e.clone(),
        None => p.ask("Cloud endpoint (\"embedded\" or a URL)", "embedded")?,
    };
    // Sign in now, if asked: checks the account early and caches the tokens apply will use.
    let sign_in =
        args.sign_in || (p.interactive && p.yes_no("Sign in now to check the account", false)?);
    if sign_in {
        let text = wizard::cloud_table(environment, &endpoint, &tenant);
        let config = Config::parse(&text, &args.out, &base).map_err(input)?;
        let upn = crate::cloud::sign_in_check(&config)?;
        eprintln!("{upn} is a Global Administrator with an Intune license");
    }
    // Page: default or custom settings.
    let settings = match &args.settings {
        Some(s) => s.clone(),
        None => p.choose(
            "Use default settings (recommended) or custom",
            &["default", "custom"],
            "default",
        )?,
    };
    // Flags of the custom pages mean nothing under default settings, and device upload (with
    // the features that build on it) is not available in China: say so rather than drop them.
    let custom_flags: Vec<&str> = [
        ("--upload", args.upload.is_some()),
        ("--endpoint-analytics", args.endpoint_analytics.is_some()),
        (
            "--enforce-configmgr-rbac",
            args.enforce_configmgr_rbac.is_some(),
        ),
        ("--defender-reporting", args.defender_reporting.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if let Some(w) = wizard::ignored_flags(&settings, environment, &custom_flags) {
        eprintln!("warning: {w}");
    }
    let mut upload = None;
    if settings == "custom" {
        // Page: Configure upload (not in China).
        let chosen = if !wizard::uploads_possible(environment) {
            "none".to_string()
        } else {
            match &args.upload {
                Some(u) => u.clone(),
                None => {
                    let a = p.choose(
                        "Upload devices to the tenant: all, a collection, or none",
                        &["all", "collection", "none"],
                        "all",
                    )?;
                    if a == "collection" {
                        p.collection(site.as_ref(), "Collection to upload", "SMS00001")?
                    } else {
                        a
                    }
                }
            }
        };
        if chosen != "none" {
            let endpoint_analytics = match args.endpoint_analytics {
                Some(b) => b,
                None => p.yes_no("Enable Endpoint analytics for the uploaded devices", true)?,
            };
            let enforce_configmgr_rbac = match args.enforce_configmgr_rbac {
                Some(b) => b,
                None => p.yes_no(
                    "Enforce Configuration Manager RBAC for cloud console requests",
                    true,
                )?,
            };
            let defender_reporting = match args.defender_reporting {
                Some(b) => b,
                None => p.yes_no(
                    "Upload Microsoft Defender for Endpoint data for reports",
                    true,
                )?,
            };
            upload = Some(CustomUpload {
                upload: chosen,
                endpoint_analytics,
                enforce_configmgr_rbac,
                defender_reporting,
            });
        }
    }
    // Page: Enablement (co-management).
    let enrollment = match (&args.co_management, wizard::enrollment_choices(environment)) {
        (Some(c), _) => c.clone(),
        (None, None) => wizard::DEFAULT_ENROLLMENT.to_string(),
        (None, Some(choices)) => p.choose(
            "Co-management automatic enrollment",
            choices,
            wizard::DEFAULT_ENROLLMENT,
        )?,
    };
    let pilot_collection = if wizard::needs_pilot_collection(&enrollment) {
        Some(match &args.pilot_collection {
            Some(c) => c.clone(),
            None => p.collection(site.as_ref(), "Pilot collection", "PS100020")?,
        })
    } else {
        None
    };
    let draft = wizard::render(&InitAnswers {
        site_path: site_path.clone(),
        environment,
        tenant,
        endpoint,
        settings,
        upload,
        enrollment,
        pilot_collection,
    });
    // Summary: the same checks plan makes, before anything is written.
    let summary = wizard::summary(&draft, &args.out, &base, registry, site.as_ref())?;
    if site.is_some() {
        eprintln!("\nSummary");
        for (id, what) in &summary {
            eprintln!("  {id:<20} {what}");
        }
    }
    let (text, settings) = (draft.text, draft.settings);
    if p.interactive && !p.yes_no(&format!("Write {}", args.out.display()), true)? {
        eprintln!("nothing written");
        return Err(Failure::Failed);
    }
    std::fs::write(&args.out, text)
        .map_err(|e| Failure::Runtime(format!("{}: {e}", args.out.display())))?;
    eprintln!(
        "wrote {}; next: cloudattach plan, then cloudattach apply",
        args.out.display()
    );
    if output == Output::Json {
        return print_json(&serde_json::json!({
            "written": args.out,
            "settings": settings,
            "environment": environment,
        }));
    }
    Ok(())
}

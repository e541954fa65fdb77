//! The loaded workspace every command starts from: the configuration (a file, or the built-in
//! demo), the plugin registry (built-ins and the libraries of the plugin directories) and the
//! site.

use super::{OpError, input, runtime};
use crate::config::{Config, OfflineApp, Secret};
use crate::registry::Registry;
use crate::report::Reporter;
use crate::selection::Selection;
use crate::site::Site;
use cloudattach_sdk::thousands;
use cloudattach_sitegen::{GenerateOptions, generate_site};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The demo site's size and seed: a few thousand devices, always the same.
pub const DEMO_DEVICES: u64 = 3_000;
/// The demo site's seed.
pub const DEMO_SEED: u64 = 2111;

/// Where a workspace comes from.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--config`; without it `./attach.toml`, and without that the built-in demo.
    pub config: Option<PathBuf>,
    /// `--plugin-dir`s (the configuration's `[plugins] dirs` are added).
    pub plugin_dirs: Vec<PathBuf>,
}

/// The configuration, the registry and the site of one command.
pub struct Workspace {
    /// The configuration.
    pub config: Config,
    /// The plugins.
    pub registry: Registry,
    /// The site.
    pub site: Arc<Site>,
    app: OfflineApp,
}

/// The configuration `--config` names, or `./attach.toml` when there is one.
pub fn find_config(options: &LoadOptions) -> Result<Option<Config>, OpError> {
    match &options.config {
        Some(path) => Ok(Some(Config::load(path)?)),
        None if Path::new("attach.toml").is_file() => {
            Ok(Some(Config::load(Path::new("attach.toml"))?))
        }
        None => Ok(None),
    }
}

/// The built-in plugins and every library in the plugin directories. A plugin directory that
/// is not there is a configuration error naming it and where it was given (a typo would
/// otherwise silently leave its features out); a library that fails to load is a warning, and
/// the others still load.
pub fn registry_for(
    options: &LoadOptions,
    config: Option<&Config>,
    reporter: &dyn Reporter,
) -> Result<Registry, OpError> {
    let mut missing = vec![];
    for dir in &options.plugin_dirs {
        if !dir.is_dir() {
            missing.push(format!(
                "--plugin-dir {}: {}",
                dir.display(),
                not_a_directory(dir)
            ));
        }
    }
    if let Some(c) = config {
        for dir in &c.plugin_dirs {
            if !dir.is_dir() {
                let file = c.file.as_deref().unwrap_or(Path::new("attach.toml"));
                missing.push(format!(
                    "{}: [plugins] dirs entry {}: {} (relative entries are relative to the file's directory)",
                    file.display(),
                    dir.display(),
                    not_a_directory(dir)
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Err(OpError::PluginDir(missing.join("\n")));
    }
    let mut registry = Registry::with_static_plugins().map_err(input)?;
    let mut dirs = options.plugin_dirs.clone();
    dirs.extend(config.map(|c| c.plugin_dirs.clone()).unwrap_or_default());
    let isolation = config
        .map(|c| isolation(&c.plugin_processes))
        .unwrap_or_default();
    crate::dynamic::load_plugin_dirs_with(&mut registry, &dirs, &isolation);
    for failure in &registry.load_failures {
        reporter.warn(&failure.message);
    }
    Ok(registry)
}

/// `[plugins]` as the loader's isolation settings.
fn isolation(p: &crate::config::PluginProcesses) -> crate::dynamic::Isolation {
    let mut limits = crate::dynamic::Limits::default();
    if let Some(mb) = p.memory_limit_mb {
        limits.memory_bytes = (mb > 0).then(|| mb.saturating_mul(1 << 20));
    }
    limits.timeouts = p
        .timeouts
        .iter()
        .map(|(k, v)| (k.clone(), std::time::Duration::from_secs(*v)))
        .collect();
    crate::dynamic::Isolation {
        limits,
        in_process: p.in_process.clone(),
    }
}

/// Why a plugin directory cannot be used, and what to do.
fn not_a_directory(dir: &Path) -> &'static str {
    if dir.exists() {
        "not a directory; give the directory that holds the plugin libraries"
    } else {
        "no such directory; fix the path or remove it"
    }
}

impl Workspace {
    /// Loads the configuration (writing the demo site on first use), checks `[cloud.app]`
    /// offline (every command refuses an imported app apply would refuse, and warns about a
    /// secret that expires soon), loads the plugins and opens the site.
    pub fn load(options: &LoadOptions, reporter: &dyn Reporter) -> Result<Workspace, OpError> {
        let config = match find_config(options)? {
            Some(c) => c,
            None => {
                let cwd = std::env::current_dir().map_err(runtime)?;
                let config = Config::demo(&cwd);
                if !config.site_dir.join("site.toml").is_file() {
                    let opts = GenerateOptions {
                        devices: DEMO_DEVICES,
                        seed: DEMO_SEED,
                        ..Default::default()
                    };
                    generate_site(&opts, &config.site_dir, true).map_err(runtime)?;
                }
                reporter.say(&format!(
                    "no attach.toml here: using the built-in demo ({} devices in {}, Azure Public Cloud, default settings, the embedded local cloud)",
                    thousands(DEMO_DEVICES),
                    config.site_dir.display()
                ));
                config
            }
        };
        let app = crate::config::validate_app_offline(&config).map_err(OpError::Input)?;
        for w in &app.warnings {
            reporter.warn(w);
        }
        let registry = registry_for(options, Some(&config), reporter)?;
        let site = Site::open(&config.site_dir).map_err(input)?;
        Ok(Workspace {
            config,
            registry,
            site: Arc::new(site),
            app,
        })
    }

    /// A workspace from parts (tests, library callers).
    pub fn new(config: Config, registry: Registry, site: Arc<Site>) -> Result<Workspace, OpError> {
        let app = crate::config::validate_app_offline(&config).map_err(OpError::Input)?;
        Ok(Workspace {
            config,
            registry,
            site,
            app,
        })
    }

    /// The selection of this workspace's configuration for its site: the one validation every
    /// command runs ([`crate::selection::validate`]), so they agree on what is valid.
    pub fn select(&self) -> Result<Selection, OpError> {
        Ok(crate::selection::validate(
            &self.config,
            &self.registry,
            &self.site,
        )?)
    }

    /// The imported app's secret, read once when the workspace was loaded.
    pub fn import_secret(&self) -> Option<&Secret> {
        self.app.secret.as_ref()
    }

    /// The lines of `devices.jsonl` the passes so far skipped, and the fields its devices carry
    /// that the model does not (one line per field, with the number of devices), as warnings
    /// (empty when none).
    pub fn skipped_lines(&self) -> Vec<String> {
        let mut out = vec![];
        let Some(scan) = self.site.scan_summary() else {
            return out;
        };
        let file = self.site.dir.join("devices.jsonl");
        for (field, n) in &scan.unknown_fields {
            out.push(format!(
                "{}: {} {} the field \"{field}\" that cloudattach does not model; kept as extension data",
                file.display(),
                thousands(*n),
                if *n == 1 { "device carries" } else { "devices carry" },
            ));
        }
        for (field, n) in &scan.long_lists {
            out.push(format!(
                "{}: {} {} \"{field}\" with more than {} entries; the newest {} are used, the whole list kept as extension data",
                file.display(),
                thousands(*n),
                if *n == 1 { "device carries" } else { "devices carry" },
                cloudattach_sdk::device::MAX_CRASH_DAYS,
                cloudattach_sdk::device::MAX_CRASH_DAYS,
            ));
        }
        for (field, n) in &scan.unusable_fields {
            out.push(format!(
                "{}: {} {} \"{field}\" with a value cloudattach cannot use (a wrong type, or longer than {} characters); the device is kept without it, the value kept as extension data",
                file.display(),
                thousands(*n),
                if *n == 1 { "device carries" } else { "devices carry" },
                cloudattach_sdk::device::MAX_TEXT_LEN,
            ));
        }
        if scan.skipped > 0 {
            for bad in &scan.bad_lines {
                out.push(format!(
                    "{}:{}: skipped: {}",
                    file.display(),
                    bad.line,
                    bad.message
                ));
            }
            if scan.skipped as usize > scan.bad_lines.len() {
                out.push(format!(
                    "… and {} more",
                    scan.skipped as usize - scan.bad_lines.len()
                ));
            }
            out.push(format!(
                "{} line(s) of {} skipped; {} devices read",
                scan.skipped,
                file.display(),
                thousands(scan.devices)
            ));
        }
        out
    }
}

//! `plugins list`, `plugins inspect` and `plugins new`: the registered plugins, the libraries
//! that failed to load, a library's manifest checked without enabling anything, and a new
//! plugin crate.

use super::workspace::{LoadOptions, find_config, registry_for};
use super::{OpError, input};
use crate::registry::Registry;
use crate::report::Reporter;
use cloudattach_sdk::Manifest;
use std::path::Path;

/// The registry `plugins list` shows: the built-ins and the libraries of the plugin
/// directories (the configuration's too, when there is one).
pub fn list(options: &LoadOptions, reporter: &dyn Reporter) -> Result<Registry, OpError> {
    let config = find_config(options)?;
    registry_for(options, config.as_ref(), reporter)
}

/// A plugin library's manifest.
pub fn inspect(file: &Path) -> Result<Manifest, OpError> {
    crate::dynamic::inspect_isolated(file).map_err(input)
}

/// Where a new plugin crate takes the SDK from. The crates are not on crates.io.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A checkout of the cloudattach repository (its `sdk/` and `testkit/`).
    Path(std::path::PathBuf),
    /// The cloudattach repository by git URL, at this version's tag.
    Git(String),
}

/// What `plugins new` writes.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NewPlugin {
    /// The crate's directory.
    pub dir: std::path::PathBuf,
    /// The files written, in order.
    pub files: Vec<std::path::PathBuf>,
    /// The library cloudattach loads once it is built (`target/release/<this>`).
    pub library: String,
}

/// The crate skeleton: (path in the crate, template).
const TEMPLATES: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/plugin/Cargo.toml.in"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/plugin/lib.rs.in"),
    ),
    (
        "tests/plugin.rs",
        include_str!("../../templates/plugin/plugin.rs.in"),
    ),
    (
        "README.md",
        include_str!("../../templates/plugin/README.md.in"),
    ),
];

/// The type name of a plugin id: `inventory-report` → `InventoryReport`.
fn type_name(id: &str) -> String {
    id.split('-')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// Writes a plugin crate for `id` into `dir`: a manifest, check, apply and sync that upload
/// one record per device model to `ext/<id>`, a test against the test kit, and a README —
/// the plugin of `docs/plugin-authors.md`, pinned to this cloudattach's SDK version. `dir`
/// must not exist or be empty; nothing is written when anything is wrong.
pub fn new_plugin(
    id: &str,
    dir: &Path,
    sdk: &SdkSource,
    name: Option<&str>,
) -> Result<NewPlugin, OpError> {
    if let Err(e) = cloudattach_sdk::validate_feature_id(id) {
        return Err(OpError::Input(format!("plugin id {id:?}: {e}")));
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(OpError::Input(format!(
            "{} exists and is not empty; nothing was written. Choose a new directory (--out)",
            dir.display()
        )));
    }
    if let Some(name) = name
        && (name.trim().is_empty()
            || name.contains(['"', '\\'])
            || name.chars().any(char::is_control))
    {
        return Err(OpError::Input(format!(
            "--name {name:?}: a display name is text without quotes, backslashes or control characters"
        )));
    }
    let version = cloudattach_sdk::dynamic::SDK_VERSION;
    let (sdk_dep, testkit_dep) = match sdk {
        SdkSource::Path(root) => {
            let root = std::path::absolute(root).map_err(input)?;
            for krate in ["sdk", "testkit"] {
                if !root.join(krate).join("Cargo.toml").is_file() {
                    return Err(OpError::Input(format!(
                        "--sdk-path {}: no {krate}/Cargo.toml there; give the directory of a cloudattach checkout",
                        root.display()
                    )));
                }
            }
            let path = |k: &str| {
                format!(
                    "path = {}, version = \"{version}\"",
                    toml_string(&root.join(k).display().to_string())
                )
            };
            (path("sdk"), path("testkit"))
        }
        SdkSource::Git(url) => {
            let git = format!("git = {}, tag = \"v{version}\"", toml_string(url));
            (git.clone(), git)
        }
    };
    let name = name.map(String::from).unwrap_or_else(|| {
        let words = id.replace('-', " ");
        let mut c = words.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    });
    let library = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        id.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let env = minijinja::Environment::new();
    let context = minijinja::context! {
        id => id,
        name => name,
        type => type_name(id),
        crate => id.replace('-', "_"),
        version => version,
        sdk => sdk_dep,
        testkit => testkit_dep,
        lib => &library,
    };
    // Render everything first, so a template error writes nothing.
    let mut rendered = vec![];
    for (path, template) in TEMPLATES {
        let mut text = env
            .render_str(template, &context)
            .map_err(|e| OpError::Runtime(format!("template {path}: {e}")))?;
        // Like Jinja, MiniJinja drops a template's final newline; a source file keeps it.
        if template.ends_with('\n') && !text.ends_with('\n') {
            text.push('\n');
        }
        rendered.push((dir.join(path), text));
    }
    let mut files = vec![];
    for (path, text) in rendered {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| OpError::Runtime(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| OpError::Runtime(format!("{}: {e}", path.display())))?;
        files.push(path);
    }
    Ok(NewPlugin {
        dir: dir.to_path_buf(),
        files,
        library,
    })
}

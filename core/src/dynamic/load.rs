//! Loading: a library by its absolute path through `abi_stable`'s per-file loading, the
//! protocol version and layout checks, and the plugin directories.

use super::elf::precheck_object_file;
use super::plugin::DynamicPlugin;
use crate::registry::{LoadFailure, Origin, Registry, RegistryError};
use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::{RErr, ROk};
use cloudattach_plugin_protocol::{PROTOCOL_VERSION, PluginModuleRef, ROOT_MODULE_NAME};
use cloudattach_sdk::Manifest;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Why a library could not be loaded. `Display` is one line: the file, what is wrong, what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The file cannot be read.
    #[error("{}: cannot read it: {detail}", .path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
    /// The system cannot load it as a dynamic library (not a library, truncated, wrong
    /// architecture).
    #[error("{}: not a plugin library: the system cannot load it as a dynamic library ({detail}); remove it from the plugin directory or rebuild the plugin", .path.display())]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        detail: String,
    },
    /// A library file that is cut short or damaged: the system loader would crash on it.
    #[error("{}: not a plugin library: the file is truncated or damaged ({detail}); copy the library again or rebuild the plugin", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A dynamic library that exports no plugin.
    #[error("{}: not a plugin library: it exports no cloudattach plugin; build it with `cloudattach_sdk::export_plugin!` (cargo feature `dynamic`) or remove it from the plugin directory", .path.display())]
    NoPlugin {
        /// The file.
        path: PathBuf,
    },
    /// An `abi_stable` library of another program.
    #[error("{}: not a plugin library: it is an abi_stable library for `{name}`, not a cloudattach plugin; remove it from the plugin directory", .path.display())]
    OtherProgram {
        /// The file.
        path: PathBuf,
        /// Its root module's name.
        name: String,
    },
    /// Built against an SDK whose ABI this binary does not speak.
    #[error("{}: built against cloudattach-sdk {found}; this cloudattach needs {needs}: rebuild the plugin against cloudattach-sdk {needs}", .path.display())]
    IncompatibleSdk {
        /// The file.
        path: PathBuf,
        /// The SDK version the library was built against.
        found: String,
        /// What this binary accepts ("0.2.x").
        needs: String,
    },
    /// Built with an incompatible `abi_stable`.
    #[error("{}: built with an incompatible abi_stable ({detail}); rebuild the plugin against cloudattach-sdk {needs}", .path.display())]
    IncompatibleAbiStable {
        /// The file.
        path: PathBuf,
        /// The loader's message.
        detail: String,
        /// What this binary accepts.
        needs: String,
    },
    /// The plugin interface in the library does not have the expected layout.
    #[error("{}: layout mismatch: the library's plugin interface does not match this cloudattach's (cloudattach-sdk {needs}); rebuild the plugin against the released cloudattach-sdk {needs} (run with -vv for abi_stable's full report)", .path.display())]
    LayoutMismatch {
        /// The file.
        path: PathBuf,
        /// What this binary accepts.
        needs: String,
        /// `abi_stable`'s full report (logged at debug level).
        report: String,
    },
    /// The library's initialization or manifest failed.
    #[error("{}: the plugin failed while loading: {detail}; fix the plugin or remove it from the plugin directory", .path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// A plugin directory cannot be read.
    #[error("{}: cannot read the plugin directory: {detail}", .path.display())]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The cause.
        detail: String,
    },
    /// Loaded, but cannot be registered (a duplicate id, an invalid manifest).
    #[error("{}: {source}", .path.display())]
    Registry {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RegistryError,
    },
}

impl LoadError {
    /// The file (or directory) concerned.
    pub fn path(&self) -> &Path {
        match self {
            LoadError::Unreadable { path, .. }
            | LoadError::NotALibrary { path, .. }
            | LoadError::Damaged { path, .. }
            | LoadError::NoPlugin { path }
            | LoadError::OtherProgram { path, .. }
            | LoadError::IncompatibleSdk { path, .. }
            | LoadError::IncompatibleAbiStable { path, .. }
            | LoadError::LayoutMismatch { path, .. }
            | LoadError::Broken { path, .. }
            | LoadError::Directory { path, .. }
            | LoadError::Registry { path, .. } => path,
        }
    }

    /// The failure as `plugins list` shows it.
    pub fn to_failure(&self) -> LoadFailure {
        LoadFailure {
            path: self.path().to_path_buf(),
            message: self.to_string(),
        }
    }
}

/// The SDK versions this binary accepts, as people read them ("0.2.x"): the versions whose
/// plugin protocol it speaks. The SDK and the protocol are released in lockstep (the same
/// version number), so a library records the protocol version of the SDK it was built against.
pub fn accepted_sdk_versions() -> String {
    let (major, minor) = major_minor(PROTOCOL_VERSION).unwrap_or((0, 0));
    if major == 0 {
        format!("0.{minor}.x")
    } else {
        format!("{major}.x")
    }
}

fn major_minor(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether a library built against protocol (SDK) version `found` can be loaded by a host on
/// `host`: the same major version, and for 0.x the same minor version (semver's rule for
/// breaking changes), and not newer than the host.
pub fn sdk_compatible(found: &str, host: &str) -> bool {
    match (major_minor(found), major_minor(host)) {
        (Some((fm, fi)), Some((hm, hi))) => fm == hm && if hm == 0 { fi == hi } else { fi <= hi },
        _ => false,
    }
}

/// A plugin library, loaded and checked.
pub struct LoadedLibrary {
    /// The absolute path.
    pub path: PathBuf,
    /// The plugin.
    pub plugin: DynamicPlugin,
}

/// Loads one library by its absolute path and checks it. The library stays loaded for the rest
/// of the process (as `abi_stable` does on purpose), even when the check fails.
pub fn load_library(path: &Path) -> Result<LoadedLibrary, LoadError> {
    let started = Instant::now();
    let path = std::fs::canonicalize(path).map_err(|e| LoadError::Unreadable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let needs = accepted_sdk_versions();
    // The system loader maps a truncated library and dies of SIGBUS touching the missing
    // pages: check the object file's own bounds before handing it over.
    precheck_object_file(&path)?;
    let header = lib_header_from_path(&path).map_err(|e| match e {
        LibraryError::OpenError { err, .. } => LoadError::NotALibrary {
            path: path.clone(),
            detail: one_line(&err.to_string()),
        },
        LibraryError::GetSymbolError { .. } => LoadError::NoPlugin { path: path.clone() },
        LibraryError::InvalidAbiHeader(h) => LoadError::IncompatibleAbiStable {
            path: path.clone(),
            detail: format!("abi_stable header {h:?}"),
            needs: needs.clone(),
        },
        other => LoadError::Broken {
            path: path.clone(),
            detail: one_line(&other.to_string()),
        },
    })?;
    let consts = header.root_mod_consts();
    let name = consts.name().as_str();
    if name != ROOT_MODULE_NAME {
        return Err(LoadError::OtherProgram {
            path,
            name: name.to_string(),
        });
    }
    let found = consts.version_strings().version.as_str().to_string();
    if !sdk_compatible(&found, PROTOCOL_VERSION) {
        return Err(LoadError::IncompatibleSdk { path, found, needs });
    }
    let module = header.init_root_module::<PluginModuleRef>().map_err(|e| match e {
        LibraryError::AbiInstability(report) => {
            let report = report.to_string();
            tracing::debug!("{}: abi_stable's layout report:\n{report}", path.display());
            LoadError::LayoutMismatch { path: path.clone(), needs: needs.clone(), report }
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            LoadError::IncompatibleSdk { path: path.clone(), found: actual_version.to_string(), needs: needs.clone() }
        }
        LibraryError::InvalidCAbi { .. } => LoadError::IncompatibleAbiStable {
            path: path.clone(),
            detail: "the library's C ABI differs from this binary's (another Rust compiler or target?)".into(),
            needs: needs.clone(),
        },
        other => LoadError::Broken { path: path.clone(), detail: one_line(&other.to_string()) },
    })?;
    let manifest_json = match (module.manifest())() {
        ROk(json) => json,
        RErr(e) => {
            return Err(LoadError::Broken {
                path,
                detail: format!("reading its manifest: {e}"),
            });
        }
    };
    let manifest: Manifest =
        serde_json::from_str(manifest_json.as_str()).map_err(|e| LoadError::Broken {
            path: path.clone(),
            detail: format!("its manifest is not readable: {e}"),
        })?;
    tracing::debug!(
        "{}: loaded plugin `{}` {} in {:.1} ms",
        path.display(),
        manifest.id,
        manifest.version,
        started.elapsed().as_secs_f64() * 1000.0
    );
    let protocol_version = module.protocol_version().as_str().to_string();
    Ok(LoadedLibrary {
        path: path.clone(),
        plugin: DynamicPlugin::new(module, manifest, path, protocol_version),
    })
}

/// Validates a library without registering anything (`cloudattach plugins inspect FILE`).
pub fn inspect(path: &Path) -> Result<Manifest, LoadError> {
    let lib = load_library(path)?;
    let manifest = lib.plugin.manifest_ref().clone();
    // The checks of registration (id, environments, options), in a registry of its own.
    Registry::new()
        .add(Box::new(lib.plugin), Origin::Dynamic(lib.path.clone()))
        .map_err(|source| LoadError::Registry {
            path: lib.path,
            source,
        })?;
    Ok(manifest)
}

/// [`inspect`] in the plugin's own process, as the plugin directories load it: a library (by
/// its extension) through the plugin host, any other file as an executable plugin. A plugin
/// that crashes while it is read fails with one line; this process goes on.
pub fn inspect_isolated(path: &Path) -> Result<Manifest, String> {
    let path = std::fs::canonicalize(path).map_err(|e| {
        LoadError::Unreadable {
            path: path.to_path_buf(),
            detail: e.to_string(),
        }
        .to_string()
    })?;
    let launch = if path
        .extension()
        .is_some_and(|x| x == std::env::consts::DLL_EXTENSION)
    {
        super::Launch::Library(path.clone())
    } else {
        super::Launch::Executable(path.clone())
    };
    let plugin = super::start_process_plugin(launch, super::Limits::default())?;
    let manifest = plugin.manifest_ref().clone();
    Registry::new()
        .add(Box::new(plugin), Origin::Dynamic(path.clone()))
        .map_err(|source| LoadError::Registry { path, source }.to_string())?;
    Ok(manifest)
}

/// Every library file in a directory (by the platform's extension: `.so`, `.dylib`, `.dll`),
/// sorted by name.
pub fn libraries_in(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError::Directory {
        path: dir.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|x| x == std::env::consts::DLL_EXTENSION)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// How plugins from the plugin directories run: each in its own process (the default), with
/// these limits, except the ids listed to run inside this process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    /// The limits of each plugin's process.
    pub limits: super::Limits,
    /// Plugin ids (of libraries) that run inside this process, trusted and fastest.
    pub in_process: Vec<String>,
}

/// Every plugin executable in a directory: a file with an execute permission that is not a
/// library (it speaks the process protocol itself), sorted by name.
pub fn executables_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_none_or(|x| x != std::env::consts::DLL_EXTENSION)
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
                && is_executable(p)
        })
        .collect();
    files.sort();
    files
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_: &Path) -> bool {
    false
}

/// Loads every plugin in each directory into the registry, each in its own process with the
/// default limits. See [`load_plugin_dirs_with`].
pub fn load_plugin_dirs(registry: &mut Registry, dirs: &[PathBuf]) {
    load_plugin_dirs_with(registry, dirs, &Isolation::default())
}

/// Loads every plugin library and plugin executable in each directory into the registry: each
/// runs in its own process, unless its id is listed to run in this one. Never fails: each
/// failure (a bad file, a plugin whose process dies, a duplicate id, an unreadable directory)
/// is recorded in `registry.load_failures`, and the others still load. A file named twice (the
/// same directory given twice) loads once.
pub fn load_plugin_dirs_with(registry: &mut Registry, dirs: &[PathBuf], isolation: &Isolation) {
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let libraries = match libraries_in(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("{e}");
                registry.load_failures.push(e.to_failure());
                continue;
            }
        };
        let files = libraries.into_iter().map(super::Launch::Library).chain(
            executables_in(dir)
                .into_iter()
                .map(super::Launch::Executable),
        );
        for launch in files {
            let file = match &launch {
                super::Launch::Library(p) | super::Launch::Executable(p) => p.clone(),
            };
            let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !seen.insert(key.clone()) {
                continue;
            }
            let launch = match launch {
                super::Launch::Library(_) => super::Launch::Library(key.clone()),
                super::Launch::Executable(_) => super::Launch::Executable(key.clone()),
            };
            let library = matches!(launch, super::Launch::Library(_));
            let result = match super::start_process_plugin(launch, isolation.limits.clone()) {
                Ok(p) if library && isolation.in_process.contains(&p.manifest_ref().id) => {
                    drop(p);
                    load_library(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|lib| {
                            let path = lib.path.clone();
                            registry
                                .add(Box::new(lib.plugin), Origin::Dynamic(path.clone()))
                                .map_err(|source| LoadError::Registry { path, source }.to_string())
                        })
                }
                Ok(p) => registry
                    .add(Box::new(p), Origin::Dynamic(key.clone()))
                    .map_err(|source| {
                        LoadError::Registry {
                            path: key.clone(),
                            source,
                        }
                        .to_string()
                    }),
                Err(message) => Err(message),
            };
            if let Err(message) = result {
                tracing::debug!("{message}");
                registry
                    .load_failures
                    .push(crate::registry::LoadFailure { path: key, message });
            }
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

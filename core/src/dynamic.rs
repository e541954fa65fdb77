//! Plugins from dynamic libraries: every library in the plugin directories is loaded by its
//! absolute path through `abi_stable`'s per-file loading, checked (a cloudattach plugin, a
//! compatible SDK version, the expected layout) and registered as a [`DynamicPlugin`], which
//! implements [`Plugin`] over the library's root module — the orchestrator does not know the
//! difference. Libraries are never unloaded.
//!
//! Failures never stop the run: each is one line naming the file and what to do, recorded in
//! [`Registry::load_failures`]; the other plugins still load.

use crate::registry::{LoadFailure, Origin, Registry, RegistryError};
use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RStr, RString};
use cloudattach_sdk::dynamic::{
    DeviceSink_TO, FfiHost, FfiHost_TO, Op, OptionsRequest, PlanRequest, PluginModuleRef, RMut,
    ROOT_MODULE_NAME, RRef, SDK_VERSION, SyncRequest, TD_Opaque, ValidateRequest, failed_finding,
    failed_step, host_error_from_json, panic_message,
};
use cloudattach_sdk::{
    ApplyOutcome, CheckReport, Device, Finding, Host, HostError, Manifest, Method, Options,
    PlanDecision, Plugin, Record, RecordSink, StatusReport, SyncMode, SyncStats, ValidateContext,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
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
        /// What this binary accepts ("0.1.x").
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

/// The SDK versions this binary accepts, as people read them ("0.1.x").
pub fn accepted_sdk_versions() -> String {
    let (major, minor) = major_minor(SDK_VERSION).unwrap_or((0, 0));
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

/// Whether a library built against SDK `found` can be loaded by a host on SDK `host`: the same
/// major version, and for 0.x the same minor version (semver's rule for breaking changes), and
/// not newer than the host.
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
    if !sdk_compatible(&found, SDK_VERSION) {
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
    let sdk_version = module.sdk_version().as_str().to_string();
    Ok(LoadedLibrary {
        path: path.clone(),
        plugin: DynamicPlugin {
            module,
            manifest,
            path,
            sdk_version,
        },
    })
}

/// Validates a library without registering anything (`cloudattach plugins inspect FILE`).
pub fn inspect(path: &Path) -> Result<Manifest, LoadError> {
    load_library(path).map(|lib| lib.plugin.manifest)
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

/// Loads every library in each directory into the registry. Never fails: each failure (a bad
/// file, a duplicate id, an unreadable directory) is recorded in `registry.load_failures`, and
/// the others still load. A file named twice (the same directory given twice) loads once.
pub fn load_plugin_dirs(registry: &mut Registry, dirs: &[PathBuf]) {
    let mut seen = BTreeSet::new();
    for dir in dirs {
        let files = match libraries_in(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("{e}");
                registry.load_failures.push(e.to_failure());
                continue;
            }
        };
        for file in files {
            let key = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
            if !seen.insert(key) {
                continue;
            }
            let result = load_library(&file).and_then(|lib| {
                let path = lib.path.clone();
                registry
                    .add(Box::new(lib.plugin), Origin::Dynamic(path.clone()))
                    .map_err(|source| LoadError::Registry { path, source })
            });
            if let Err(e) = result {
                tracing::debug!("{e}");
                registry.load_failures.push(e.to_failure());
            }
        }
    }
}

/// Checks that an ELF file is a shared object whose headers, segments and section table all lie
/// inside the file (Linux). Other platforms' loaders report such files as errors themselves.
fn precheck_object_file(path: &Path) -> Result<(), LoadError> {
    if !cfg!(target_os = "linux") {
        return Ok(());
    }
    let damaged = |detail: String| LoadError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    let not_a_library = |detail: &str| LoadError::NotALibrary {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let bytes = read_prefix(path, 64).map_err(|e| LoadError::Unreadable {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(not_a_library("not an ELF shared object"));
    }
    let elf =
        ElfHeader::parse(&bytes).ok_or_else(|| damaged("the ELF header is cut short".into()))?;
    if elf.kind != 3 {
        return Err(not_a_library("an ELF file, but not a shared object"));
    }
    let table_end = |off: u64, size: u64, n: u64| off.checked_add(size.checked_mul(n)?);
    let ph_end = table_end(elf.phoff, elf.phentsize, elf.phnum).unwrap_or(u64::MAX);
    if ph_end > len {
        return Err(damaged(format!(
            "its program headers end at byte {ph_end} of a {len}-byte file"
        )));
    }
    let sh_end = table_end(elf.shoff, elf.shentsize, elf.shnum).unwrap_or(u64::MAX);
    if sh_end > len {
        return Err(damaged(format!(
            "its section headers end at byte {sh_end} of a {len}-byte file"
        )));
    }
    let min_entry = if elf.wide { 56 } else { 32 };
    if elf.phnum > 0 && elf.phentsize < min_entry {
        return Err(damaged(format!(
            "program header entries of {} bytes",
            elf.phentsize
        )));
    }
    let table = read_prefix(path, ph_end as usize).map_err(|e| damaged(e.to_string()))?;
    for i in 0..elf.phnum {
        let at = (elf.phoff + i * elf.phentsize) as usize;
        let (kind, offset, filesz) = elf.program_header(&table[at..at + elf.phentsize as usize]);
        // PT_LOAD and PT_DYNAMIC are what the loader reads.
        if matches!(kind, 1 | 2) && offset.saturating_add(filesz) > len {
            return Err(damaged(format!(
                "a segment ends at byte {} of a {len}-byte file",
                offset.saturating_add(filesz)
            )));
        }
    }
    Ok(())
}

fn read_prefix(path: &Path, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(n);
    std::fs::File::open(path)?
        .take(n as u64)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The fields of an ELF header the bounds check needs.
struct ElfHeader {
    wide: bool,
    little: bool,
    kind: u16,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
    shoff: u64,
    shentsize: u64,
    shnum: u64,
}

impl ElfHeader {
    fn parse(b: &[u8]) -> Option<ElfHeader> {
        let wide = match b.get(4)? {
            1 => false,
            2 => true,
            _ => return None,
        };
        let little = *b.get(5)? == 1;
        let h = ElfHeader {
            wide,
            little,
            kind: 0,
            phoff: 0,
            phentsize: 0,
            phnum: 0,
            shoff: 0,
            shentsize: 0,
            shnum: 0,
        };
        let need = if wide { 64 } else { 52 };
        if b.len() < need {
            return None;
        }
        let (phoff, shoff, rest) = if wide {
            (h.uint(&b[32..40]), h.uint(&b[40..48]), 52)
        } else {
            (h.uint(&b[28..32]), h.uint(&b[32..36]), 40)
        };
        Some(ElfHeader {
            kind: h.uint(&b[16..18]) as u16,
            phoff,
            phentsize: h.uint(&b[rest + 2..rest + 4]),
            phnum: h.uint(&b[rest + 4..rest + 6]),
            shoff,
            shentsize: h.uint(&b[rest + 6..rest + 8]),
            shnum: h.uint(&b[rest + 8..rest + 10]),
            ..h
        })
    }

    fn uint(&self, b: &[u8]) -> u64 {
        let mut v = 0u64;
        for i in 0..b.len() {
            let byte = if self.little {
                b[b.len() - 1 - i]
            } else {
                b[i]
            };
            v = (v << 8) | u64::from(byte);
        }
        v
    }

    /// (type, file offset, size in the file) of one program header.
    fn program_header(&self, b: &[u8]) -> (u64, u64, u64) {
        if self.wide {
            (
                self.uint(&b[0..4]),
                self.uint(&b[8..16]),
                self.uint(&b[32..40]),
            )
        } else {
            (
                self.uint(&b[0..4]),
                self.uint(&b[4..8]),
                self.uint(&b[16..20]),
            )
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A plugin in a dynamic library: [`Plugin`] over its root module. Every step crosses the
/// boundary as JSON; a step the library cannot run (it panicked, or answered something
/// unreadable) becomes a failed step with the message.
pub struct DynamicPlugin {
    module: PluginModuleRef,
    manifest: Manifest,
    path: PathBuf,
    sdk_version: String,
}

impl DynamicPlugin {
    /// The library's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SDK version the library was built against.
    pub fn sdk_version(&self) -> &str {
        &self.sdk_version
    }

    /// Runs one step in the library and reads its answer.
    fn call<T: DeserializeOwned>(
        &self,
        op: Op,
        request: &impl Serialize,
        host: Option<&dyn Host>,
    ) -> Result<T, String> {
        let request =
            serde_json::to_string(request).map_err(|e| format!("cannot write the request: {e}"))?;
        let bridge = HostBridge {
            host,
            streams: RefCell::default(),
            next_stream: Cell::new(0),
            sinks: RefCell::default(),
            next_sink: Cell::new(0),
        };
        let ffi_host = FfiHost_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let answer = (self.module.call())(
            RStr::from_str(op.as_str()),
            RStr::from_str(&request),
            ffi_host,
        );
        match answer {
            ROk(json) => serde_json::from_str(json.as_str())
                .map_err(|e| format!("its `{}` answer is not readable: {e}", op.as_str())),
            RErr(message) => Err(message.into()),
        }
    }

    fn id(&self) -> &str {
        &self.manifest.id
    }
}

impl Plugin for DynamicPlugin {
    fn manifest(&self) -> Manifest {
        self.manifest.clone()
    }

    fn validate(&self, options: &Options, ctx: &ValidateContext) -> Vec<Finding> {
        let request = ValidateRequest {
            options: options.clone(),
            environment: ctx.environment,
            site_version: ctx.site_version,
            default_settings: ctx.default_settings,
        };
        self.call(Op::Validate, &request, None)
            .unwrap_or_else(|e| vec![failed_finding(self.id(), &e)])
    }

    fn check(&self, host: &dyn Host, options: &Options) -> CheckReport {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Check, &request, Some(host))
            .unwrap_or_else(|e| {
                let mut report = CheckReport::default();
                report.push(failed_finding(self.id(), &e));
                report
            })
    }

    fn settings(&self, options: &Options) -> serde_json::Value {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Settings, &request, None).unwrap_or_else(|e| {
            tracing::error!(
                "plugin `{}` ({}): settings: {e}",
                self.id(),
                self.path.display()
            );
            serde_json::Value::Null
        })
    }

    fn plan(
        &self,
        host: &dyn Host,
        options: &Options,
        applied: Option<&serde_json::Value>,
    ) -> PlanDecision {
        let request = PlanRequest {
            options: options.clone(),
            applied: applied.cloned(),
        };
        self.call(Op::Plan, &request, Some(host))
            .unwrap_or_else(|e| PlanDecision::skip(format!("plugin `{}` failed: {e}", self.id())))
    }

    fn apply(&self, host: &dyn Host, options: &Options) -> ApplyOutcome {
        let request = OptionsRequest {
            options: options.clone(),
        };
        self.call(Op::Apply, &request, Some(host))
            .unwrap_or_else(|e| failed_step(self.id(), &e))
    }

    fn sync(
        &self,
        host: &dyn Host,
        options: &Options,
        mode: SyncMode,
    ) -> Result<Option<SyncStats>, HostError> {
        let request = SyncRequest {
            options: options.clone(),
            mode,
        };
        self.call::<Result<Option<SyncStats>, HostError>>(Op::Sync, &request, Some(host))
            .unwrap_or_else(|e| {
                Err(HostError::new(
                    "plugin-failed",
                    format!("plugin `{}`: {e}", self.id()),
                ))
            })
    }

    fn status(&self, host: &dyn Host) -> Result<StatusReport, HostError> {
        self.call::<Result<StatusReport, HostError>>(
            Op::Status,
            &OptionsRequest::default(),
            Some(host),
        )
        .unwrap_or_else(|e| {
            Err(HostError::new(
                "plugin-failed",
                format!("plugin `{}`: {e}", self.id()),
            ))
        })
    }

    fn disable(&self, host: &dyn Host) -> ApplyOutcome {
        self.call(Op::Disable, &OptionsRequest::default(), Some(host))
            .unwrap_or_else(|e| failed_step(self.id(), &e))
    }
}

/// The host's side of [`FfiHost`]: the real [`Host`] behind JSON. Every method catches panics
/// of the host's own code, which must not unwind through the library.
struct HostBridge<'h> {
    /// `None` for the pure steps (validate, settings), which get no host.
    host: Option<&'h dyn Host>,
    /// The batch each running `for_each_device` stream sent last (see
    /// [`FfiHost::is_uploaded`]); a stream's entry goes when the stream ends.
    streams: RefCell<HashMap<u64, Vec<(i64, bool)>>>,
    next_stream: Cell<u64>,
    /// Uploads the library has open, by handle. Dropped unfinished with the bridge.
    sinks: RefCell<HashMap<u64, Box<dyn RecordSink + 'h>>>,
    next_sink: Cell<u64>,
}

fn no_host() -> HostError {
    HostError::new("plugin-boundary", "this step gets no host services")
}

fn guarded<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        tracing::error!(
            "host service panicked while serving a plugin: {}",
            panic_message(payload.as_ref())
        );
        fallback
    })
}

fn guarded_result<T>(f: impl FnOnce() -> Result<T, HostError>) -> Result<T, HostError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        Err(HostError::new(
            "host-panicked",
            format!("the host failed: {}", panic_message(payload.as_ref())),
        ))
    })
}

fn err_json(e: &HostError) -> RString {
    RString::from(serde_json::to_string(e).unwrap_or_default())
}

fn ropt(v: Option<String>) -> ROption<RString> {
    v.map(RString::from).into()
}

impl FfiHost for HostBridge<'_> {
    fn site(&self) -> RString {
        guarded(RString::from("null"), || {
            self.host
                .map(|h| serde_json::to_string(h.site()).unwrap_or_default())
                .unwrap_or_else(|| "null".into())
                .into()
        })
    }

    fn environment(&self) -> RString {
        guarded(RString::new(), || {
            self.host
                .map(|h| h.environment().as_str())
                .unwrap_or_default()
                .into()
        })
    }

    fn for_each_device(
        &self,
        batch: u32,
        mut sink: DeviceSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<(), RString> {
        let Some(host) = self.host else {
            return RErr(err_json(&no_host()));
        };
        let size = batch.clamp(1, 100_000) as usize;
        let stream = self.next_stream.get() + 1;
        self.next_stream.set(stream);
        let result = guarded_result(|| {
            // Each device is written straight into the batch's JSON; its `is_uploaded` answer is
            // kept beside it, so the library asking about the device it is visiting costs a
            // lookup instead of a copy of the device.
            let mut json: Vec<u8> = Vec::with_capacity(size * 512);
            let mut sent: Vec<(i64, bool)> = Vec::with_capacity(size);
            let mut stopped = false;
            let mut failure: Option<HostError> = None;
            let mut flush =
                |json: &mut Vec<u8>, sent: &mut Vec<(i64, bool)>, stopped: &mut bool| {
                    if !*stopped && !sent.is_empty() {
                        json.push(b']');
                        // Kept (not borrowed) while the library visits: it may call back.
                        self.streams
                            .borrow_mut()
                            .insert(stream, std::mem::take(sent));
                        let text = std::str::from_utf8(json).unwrap_or("[]");
                        if !sink.accept(stream, RStr::from_str(text)) {
                            *stopped = true;
                        }
                    }
                    json.clear();
                    sent.clear();
                };
            host.for_each_device(&mut |d| {
                if stopped {
                    return;
                }
                json.push(if sent.is_empty() { b'[' } else { b',' });
                if let Err(e) = serde_json::to_writer(&mut json, d) {
                    failure = Some(HostError::new(
                        "plugin-boundary",
                        format!("cannot send device {}: {e}", d.resource_id),
                    ));
                    stopped = true;
                    return;
                }
                sent.push((d.resource_id, host.is_uploaded(d)));
                if sent.len() >= size {
                    flush(&mut json, &mut sent, &mut stopped);
                }
            })?;
            flush(&mut json, &mut sent, &mut stopped);
            failure.map_or(Ok(()), Err)
        });
        self.streams.borrow_mut().remove(&stream);
        match result {
            Ok(()) => ROk(()),
            Err(e) => RErr(err_json(&e)),
        }
    }

    fn collection(&self, id: RStr<'_>) -> ROption<RString> {
        guarded(ROption::RNone, || {
            ropt(
                self.host
                    .and_then(|h| h.collection(id.as_str()))
                    .and_then(|c| serde_json::to_string(&c).ok()),
            )
        })
    }

    fn is_member(&self, collection_id: RStr<'_>, resource_id: i64) -> bool {
        guarded(false, || {
            self.host
                .is_some_and(|h| h.is_member(collection_id.as_str(), resource_id))
        })
    }

    fn feature_options(&self, plugin_id: RStr<'_>) -> ROption<RString> {
        guarded(ROption::RNone, || {
            ropt(
                self.host
                    .and_then(|h| h.feature_options(plugin_id.as_str()))
                    .and_then(|o| serde_json::to_string(&o).ok()),
            )
        })
    }

    fn is_uploaded(&self, stream: u64, index: u32, resource_id: i64, device: RStr<'_>) -> u8 {
        guarded(0, || {
            let Some(host) = self.host else { return 0 };
            if device.is_empty() {
                let streams = self.streams.borrow();
                let sent = streams.get(&stream).and_then(|b| b.get(index as usize));
                return match sent {
                    Some(&(id, uploaded)) if id == resource_id => u8::from(uploaded),
                    _ => 2,
                };
            }
            match serde_json::from_str::<Device>(device.as_str()) {
                Ok(d) => u8::from(host.is_uploaded(&d)),
                Err(_) => 0,
            }
        })
    }

    fn cloud(&self, method: RStr<'_>, path: RStr<'_>, body: RStr<'_>) -> RResult<RString, RString> {
        let result = guarded_result(|| {
            let host = self.host.ok_or_else(no_host)?;
            let method: Method = serde_json::from_str(method.as_str()).map_err(|e| {
                HostError::new("plugin-boundary", format!("unknown method {method}: {e}"))
            })?;
            let body: Option<serde_json::Value> = if body.is_empty() {
                None
            } else {
                Some(serde_json::from_str(body.as_str()).map_err(|e| {
                    HostError::new("plugin-boundary", format!("unreadable body: {e}"))
                })?)
            };
            let answer = host.cloud(method, path.as_str(), body.as_ref())?;
            serde_json::to_string(&answer)
                .map_err(|e| HostError::new("plugin-boundary", e.to_string()))
        });
        match result {
            Ok(json) => ROk(json.into()),
            Err(e) => RErr(err_json(&e)),
        }
    }

    fn collections(&self) -> RString {
        guarded(RString::from("[]"), || {
            let list = self.host.map(|h| h.collections()).unwrap_or_default();
            serde_json::to_string(&list)
                .unwrap_or_else(|_| "[]".into())
                .into()
        })
    }

    fn open_sync(&self, channel: RStr<'_>, mode: RStr<'_>) -> RResult<u64, RString> {
        let result = guarded_result(|| {
            let host = self.host.ok_or_else(no_host)?;
            let mode: SyncMode = serde_json::from_str(mode.as_str()).map_err(|e| {
                HostError::new("plugin-boundary", format!("unknown sync mode {mode}: {e}"))
            })?;
            let sink = host.open_sync(channel.as_str(), mode)?;
            let handle = self.next_sink.get() + 1;
            self.next_sink.set(handle);
            self.sinks.borrow_mut().insert(handle, sink);
            Ok(handle)
        });
        match result {
            Ok(handle) => ROk(handle),
            Err(e) => RErr(err_json(&e)),
        }
    }

    fn sync_push(&self, handle: u64, records: RStr<'_>) -> RResult<(), RString> {
        let result = guarded_result(|| {
            let records: Vec<Record> = serde_json::from_str(records.as_str()).map_err(|e| {
                HostError::new(
                    "plugin-boundary",
                    format!("the plugin sent unreadable records: {e}"),
                )
            })?;
            let mut sinks = self.sinks.borrow_mut();
            let sink = sinks
                .get_mut(&handle)
                .ok_or_else(|| unknown_upload(handle))?;
            records.into_iter().try_for_each(|r| sink.push(r))
        });
        match result {
            Ok(()) => ROk(()),
            Err(e) => RErr(err_json(&e)),
        }
    }

    fn sync_finish(&self, handle: u64) -> RResult<RString, RString> {
        let result = guarded_result(|| {
            let sink = self
                .sinks
                .borrow_mut()
                .remove(&handle)
                .ok_or_else(|| unknown_upload(handle))?;
            let stats = sink.finish()?;
            serde_json::to_string(&stats)
                .map_err(|e| HostError::new("plugin-boundary", e.to_string()))
        });
        match result {
            Ok(json) => ROk(json.into()),
            Err(e) => RErr(err_json(&e)),
        }
    }

    fn sync_abort(&self, handle: u64) {
        // Dropping an unfinished upload sends no deletions: a stream cut short by a failing
        // plugin never removes records from the cloud.
        let sink = self.sinks.borrow_mut().remove(&handle);
        guarded((), || drop(sink));
    }

    fn log(&self, message: RStr<'_>) {
        guarded((), || {
            if let Some(h) = self.host {
                h.log(message.as_str());
            }
        })
    }
}

fn unknown_upload(handle: u64) -> HostError {
    HostError::new(
        "plugin-boundary",
        format!("the plugin used upload {handle}, which is not open"),
    )
}

/// A [`HostError`] from a library's error JSON (for callers outside this module).
pub fn host_error(json: &str) -> HostError {
    host_error_from_json(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_compatibility_table() {
        let cases = [
            ("0.1.0", "0.1.0", true),
            ("0.1.7", "0.1.0", true),
            ("0.1.0", "0.1.9", true),
            ("0.0.9", "0.1.0", false),
            ("0.2.0", "0.1.0", false),
            ("1.2.0", "1.3.0", true),
            ("1.4.0", "1.3.0", false),
            ("2.0.0", "1.3.0", false),
            ("x", "0.1.0", false),
        ];
        for (found, host, ok) in cases {
            assert_eq!(sdk_compatible(found, host), ok, "{found} on {host}");
        }
    }

    #[test]
    fn a_missing_directory_is_one_failure_and_nothing_else() {
        let mut r = Registry::new();
        load_plugin_dirs(&mut r, &[PathBuf::from("/nonexistent/cloudattach-plugins")]);
        assert_eq!(r.load_failures.len(), 1);
        assert!(
            r.load_failures[0]
                .message
                .contains("cannot read the plugin directory"),
            "{:?}",
            r.load_failures
        );
        assert!(r.is_empty());
    }

    #[test]
    fn a_text_file_is_not_a_plugin_library() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir
            .path()
            .join(format!("notes.{}", std::env::consts::DLL_EXTENSION));
        std::fs::write(&file, "not a library\n").unwrap();
        std::fs::write(
            dir.path().join("README.txt"),
            "ignored: not a library extension\n",
        )
        .unwrap();
        let mut r = Registry::new();
        load_plugin_dirs(&mut r, &[dir.path().to_path_buf()]);
        assert_eq!(r.load_failures.len(), 1, "{:?}", r.load_failures);
        let message = &r.load_failures[0].message;
        assert!(
            message.contains("notes.") && message.contains("not a plugin library"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }
}

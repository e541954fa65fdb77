//! Dynamic plugins (cargo feature `dynamic`): export a [`Plugin`] from a `cdylib` with
//! [`export_plugin!`](crate::export_plugin), and the boundary the host loads it through.
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! cloudattach-sdk = { version = "0.1", features = ["dynamic"] }
//! ```
//!
//! ```ignore
//! pub struct CollectionSummary;
//! impl cloudattach_sdk::Plugin for CollectionSummary { /* … */ }
//! cloudattach_sdk::export_plugin!(CollectionSummary);
//! ```
//!
//! # The boundary
//!
//! Only plain data crosses it, and it is synchronous:
//!
//! - the library exports one `abi_stable` root module, [`PluginModule`]: the SDK version it was
//!   built against, `manifest()` and `call(op, request, host)`. Requests and results are JSON
//!   strings of this crate's serde types ([`CheckReport`](crate::CheckReport),
//!   [`PlanDecision`](crate::PlanDecision), …), so the types can grow in a minor version
//!   without changing the module's layout;
//! - the host crosses it as an [`FfiHost`] trait object (`#[sabi_trait]`); the library wraps it
//!   in an adapter that implements [`Host`], so plugin code is identical for static and
//!   dynamic builds. Devices come in JSON batches ([`DEVICE_BATCH`] per call) pushed into a
//!   [`DeviceSink`]; upload records go out in batches of [`RECORD_BATCH`] into an upload the
//!   host keeps open by handle ([`FfiHost::open_sync`]);
//! - every function the library exports catches panics on the library's side and returns an
//!   error value: a panic never unwinds into the host.

// abi_stable's derives and the exported root module need `unsafe` (layout declarations, the
// `no_mangle` header); everything else in this module is safe code.
#![allow(unsafe_code)]
// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use crate::device::Device;
use crate::diag::{ApplyOutcome, Finding};
use crate::environment::Environment;
use crate::host::{
    CollectionInfo, Host, HostError, Method, Record, RecordSink, SiteInfo, SyncMode, SyncStats,
};
use crate::manifest::Options;
use crate::plugin::{Plugin, ValidateContext};
use crate::version::SiteVersion;
use abi_stable::library::{CheckTypeLayout, LibHeader, RootModule, RootModuleResult};
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{RErr, ROk, ROption, RResult, RStr, RString};
use abi_stable::{StableAbi, declare_root_module_statics, sabi_trait};
use serde::{Deserialize, Serialize};
use std::any::Any;
use std::cell::Cell;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Once;

#[doc(hidden)]
pub use abi_stable;

pub use abi_stable::sabi_trait::TD_Opaque;
pub use abi_stable::sabi_types::{RMut, RRef};

/// The version of this crate, which a library records in its root module. The host accepts a
/// library built against the same `major.minor` (for 0.x, the same `0.minor`).
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The name of the root module (`abi_stable`'s library name): a library whose root module has
/// another name is not a cloudattach plugin.
pub const ROOT_MODULE_NAME: &str = "cloudattach_plugin";

/// Devices per batch when the host streams the inventory across the boundary.
pub const DEVICE_BATCH: u32 = 512;

/// Records per batch when a library pushes upload records across the boundary.
pub const RECORD_BATCH: u32 = 512;

/// The root module a plugin library exports.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModuleRef)))]
// Fields added after the prefix in a later SDK read as `None` from an older library.
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// The `cloudattach-sdk` version the library was built against.
    pub sdk_version: RStr<'static>,
    /// The plugin's [`crate::Manifest`] as JSON; `Err` with a message if the plugin panicked.
    pub manifest: extern "C" fn() -> RResult<RString, RString>,
    /// Runs one lifecycle step ([`Op`]): `request` and the result are JSON. `Err` carries a
    /// message: the plugin panicked, or the request was not understood.
    #[sabi(last_prefix_field)]
    pub call: for<'a> extern "C" fn(RStr<'a>, RStr<'a>, HostRef<'a>) -> RResult<RString, RString>,
}

impl RootModule for PluginModuleRef {
    declare_root_module_statics! {PluginModuleRef}
    const BASE_NAME: &'static str = ROOT_MODULE_NAME;
    const NAME: &'static str = ROOT_MODULE_NAME;
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(SDK_VERSION);
}

/// The host as a library sees it: an `abi_stable` trait object. JSON in and out.
#[sabi_trait]
pub trait FfiHost {
    /// The site ([`SiteInfo`] as JSON).
    fn site(&self) -> RString;
    /// The environment (`"public"`, …).
    fn environment(&self) -> RString;
    /// Streams every device to `sink` in JSON arrays of at most `batch` devices. `Err` is a
    /// [`HostError`] as JSON.
    fn for_each_device(
        &self,
        batch: u32,
        sink: DeviceSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<(), RString>;
    /// A collection ([`CollectionInfo`] as JSON).
    fn collection(&self, id: RStr<'_>) -> ROption<RString>;
    /// See [`Host::is_member`].
    fn is_member(&self, collection_id: RStr<'_>, resource_id: i64) -> bool;
    /// A selected feature's options (JSON object).
    fn feature_options(&self, plugin_id: RStr<'_>) -> ROption<RString>;
    /// See [`Host::is_uploaded`]: `0` no, `1` yes. With an empty `device`, the device is number
    /// `index` of the batch the host is streaming as `stream` (checked against `resource_id`);
    /// `2` means "that batch is gone: send the device".
    fn is_uploaded(&self, stream: u64, index: u32, resource_id: i64, device: RStr<'_>) -> u8;
    /// See [`Host::cloud`]: method as JSON (`"Get"`), body JSON or empty; `Err` is a
    /// [`HostError`] as JSON.
    fn cloud(&self, method: RStr<'_>, path: RStr<'_>, body: RStr<'_>) -> RResult<RString, RString>;
    /// Every collection (a JSON array of [`CollectionInfo`]).
    fn collections(&self) -> RString;
    /// See [`Host::open_sync`]: mode as JSON (`"Delta"`); returns a handle for the upload.
    fn open_sync(&self, channel: RStr<'_>, mode: RStr<'_>) -> RResult<u64, RString>;
    /// Pushes a JSON array of [`Record`]s into an open upload.
    fn sync_push(&self, handle: u64, records: RStr<'_>) -> RResult<(), RString>;
    /// Finishes an upload: [`SyncStats`] as JSON.
    fn sync_finish(&self, handle: u64) -> RResult<RString, RString>;
    /// Drops an upload without finishing it (nothing is deleted in the cloud).
    fn sync_abort(&self, handle: u64);
    /// See [`Host::log`].
    #[sabi(last_prefix_field)]
    fn log(&self, message: RStr<'_>);
}

/// The host as it crosses the boundary.
pub type HostRef<'a> = FfiHost_TO<'a, RRef<'a, ()>>;

/// Where the host pushes device batches (implemented by the library).
#[sabi_trait]
pub trait DeviceSink {
    /// One JSON array of devices of stream `stream` (one per `for_each_device` call). `false`
    /// asks the host to stop sending.
    #[sabi(last_prefix_field)]
    fn accept(&mut self, stream: u64, batch: RStr<'_>) -> bool;
}

/// The lifecycle steps `call` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// [`Plugin::validate`]: [`ValidateRequest`] → `Vec<Finding>`.
    Validate,
    /// [`Plugin::check`]: [`OptionsRequest`] → `CheckReport`.
    Check,
    /// [`Plugin::settings`]: [`OptionsRequest`] → JSON value.
    Settings,
    /// [`Plugin::plan`]: [`PlanRequest`] → `PlanDecision`.
    Plan,
    /// [`Plugin::apply`]: [`OptionsRequest`] → `ApplyOutcome`.
    Apply,
    /// [`Plugin::sync`]: [`SyncRequest`] → `Result<Option<SyncStats>, HostError>`.
    Sync,
    /// [`Plugin::status`]: `{}` → `Result<StatusReport, HostError>`.
    Status,
    /// [`Plugin::disable`]: `{}` → `ApplyOutcome`.
    Disable,
}

impl Op {
    /// The name that crosses the boundary.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Validate => "validate",
            Op::Check => "check",
            Op::Settings => "settings",
            Op::Plan => "plan",
            Op::Apply => "apply",
            Op::Sync => "sync",
            Op::Status => "status",
            Op::Disable => "disable",
        }
    }

    fn parse(s: &str) -> Option<Op> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }

    /// Whether the step gets the host (validate and settings are pure).
    pub fn uses_host(self) -> bool {
        !matches!(self, Op::Validate | Op::Settings)
    }
}

/// The request of [`Op::Validate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidateRequest {
    /// Resolved options.
    pub options: Options,
    /// The environment.
    pub environment: Environment,
    /// The site's version.
    pub site_version: SiteVersion,
    /// Whether default settings are in use.
    pub default_settings: bool,
}

/// The request of the steps that only take options.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OptionsRequest {
    /// Resolved options.
    #[serde(default)]
    pub options: Options,
}

/// The request of [`Op::Plan`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRequest {
    /// Resolved options.
    pub options: Options,
    /// The settings last applied.
    pub applied: Option<serde_json::Value>,
}

/// The request of [`Op::Sync`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Resolved options.
    pub options: Options,
    /// Delta or full.
    pub mode: SyncMode,
}

/// The text of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unserializable: {e}\""))
}

/// A [`HostError`] from the JSON the other side sent (or a plain message).
pub fn host_error_from_json(s: &str) -> HostError {
    serde_json::from_str(s).unwrap_or_else(|_| HostError::new("plugin-boundary", s.to_string()))
}

// ---------------------------------------------------------------------------------------------
// The library's side.

/// Gives the exported functions the plugin (generated by [`export_plugin!`](crate::export_plugin)).
#[doc(hidden)]
pub trait PluginSource: 'static {
    /// The plugin, created once.
    fn plugin() -> &'static dyn Plugin;
}

#[doc(hidden)]
pub const fn __lib_header<S: PluginSource>() -> LibHeader {
    // SAFETY: the constructor returns `PluginModuleRef`, the module type the header is built
    // for, and the layout is checked by the loader (`CheckTypeLayout::Yes`).
    unsafe {
        LibHeader::from_constructor::<PluginModuleRef>(
            root_module_constructor::<S>,
            CheckTypeLayout::Yes,
        )
    }
}

extern "C" fn root_module_constructor<S: PluginSource>() -> RootModuleResult {
    abi_stable::library::__call_root_module_loader(root_module::<S>)
}

fn root_module<S: PluginSource>() -> PluginModuleRef {
    use abi_stable::prefix_type::PrefixTypeTrait;
    PluginModule {
        sdk_version: RStr::from_str(SDK_VERSION),
        manifest: manifest_fn::<S>,
        call: call_fn::<S>,
    }
    .leak_into_prefix()
}

thread_local! {
    /// Whether this thread is inside a call into the library (the panic hook stays quiet).
    static IN_PLUGIN_CALL: Cell<bool> = const { Cell::new(false) };
    /// Where the last panic inside a call happened.
    static PANIC_LOCATION: Cell<Option<(&'static str, u32)>> = const { Cell::new(None) };
}

/// Runs `f` on the library's side of the boundary: a panic is caught and becomes the message
/// "the plugin panicked at FILE:LINE: MESSAGE". The default hook's report on stderr is replaced
/// by that message, which the host shows as a failed step.
fn plugin_side<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if IN_PLUGIN_CALL.with(Cell::get) {
                let file: Option<(&'static str, u32)> =
                    info.location().map(|l| (leak_file(l.file()), l.line()));
                PANIC_LOCATION.with(|p| p.set(file));
            } else {
                previous(info);
            }
        }));
    });
    let outer = IN_PLUGIN_CALL.with(|c| c.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_PLUGIN_CALL.with(|c| c.set(outer));
    result.map_err(|payload| {
        let at = PANIC_LOCATION
            .with(Cell::take)
            .map(|(f, l)| format!(" at {f}:{l}"))
            .unwrap_or_default();
        format!(
            "the plugin panicked{at}: {}",
            panic_message(payload.as_ref())
        )
    })
}

/// File names of panic locations are `'static` in practice (they come from `file!()`); keep a
/// copy so the location outlives the hook's borrow.
fn leak_file(file: &str) -> &'static str {
    use std::sync::Mutex;
    static FILES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut files = FILES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = files.iter().find(|f| **f == file) {
        return known;
    }
    let leaked: &'static str = Box::leak(file.to_string().into_boxed_str());
    files.push(leaked);
    leaked
}

extern "C" fn manifest_fn<S: PluginSource>() -> RResult<RString, RString> {
    match plugin_side(|| to_json(&S::plugin().manifest())) {
        Ok(json) => ROk(json.into()),
        Err(message) => RErr(message.into()),
    }
}

extern "C" fn call_fn<'a, S: PluginSource>(
    op: RStr<'a>,
    request: RStr<'a>,
    host: HostRef<'a>,
) -> RResult<RString, RString> {
    match plugin_side(|| dispatch(S::plugin(), op.as_str(), request.as_str(), &host)) {
        Ok(Ok(json)) => ROk(json.into()),
        Ok(Err(message)) | Err(message) => RErr(message.into()),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(op: &str, request: &str) -> Result<T, String> {
    serde_json::from_str(request).map_err(|e| format!("cannot read the host's `{op}` request: {e}"))
}

/// Runs one step on the library's side (panics are caught by the caller).
fn dispatch(
    plugin: &dyn Plugin,
    op: &str,
    request: &str,
    host: &HostRef<'_>,
) -> Result<String, String> {
    let Some(parsed) = Op::parse(op) else {
        return Err(format!(
            "the plugin does not know the step `{op}`: it was built against cloudattach-sdk {SDK_VERSION}; rebuild it against this cloudattach's SDK"
        ));
    };
    if !parsed.uses_host() {
        return Ok(match parsed {
            Op::Validate => {
                let r: ValidateRequest = parse(op, request)?;
                let ctx = ValidateContext {
                    environment: r.environment,
                    site_version: r.site_version,
                    default_settings: r.default_settings,
                };
                to_json(&plugin.validate(&r.options, &ctx))
            }
            _ => {
                let r: OptionsRequest = parse(op, request)?;
                to_json(&plugin.settings(&r.options))
            }
        });
    }
    let adapter = HostAdapter::new(host)?;
    Ok(match parsed {
        Op::Check => {
            let r: OptionsRequest = parse(op, request)?;
            to_json(&plugin.check(&adapter, &r.options))
        }
        Op::Plan => {
            let r: PlanRequest = parse(op, request)?;
            to_json(&plugin.plan(&adapter, &r.options, r.applied.as_ref()))
        }
        Op::Apply => {
            let r: OptionsRequest = parse(op, request)?;
            to_json(&plugin.apply(&adapter, &r.options))
        }
        Op::Sync => {
            let r: SyncRequest = parse(op, request)?;
            to_json(&plugin.sync(&adapter, &r.options, r.mode))
        }
        Op::Status => to_json(&plugin.status(&adapter)),
        Op::Disable => to_json(&plugin.disable(&adapter)),
        Op::Validate | Op::Settings => unreachable!("pure steps are handled above"),
    })
}

/// [`Host`] over the FFI host, on the library's side.
struct HostAdapter<'h, 'a> {
    ffi: &'h HostRef<'a>,
    site: SiteInfo,
    environment: Environment,
    /// The device being visited, if any: `is_uploaded` for it sends only its position in the
    /// host's batch instead of the whole device.
    visiting: Cell<Option<Visiting>>,
}

impl<'h, 'a> HostAdapter<'h, 'a> {
    fn new(ffi: &'h HostRef<'a>) -> Result<Self, String> {
        let site: SiteInfo = serde_json::from_str(ffi.site().as_str())
            .map_err(|e| format!("cannot read the site the host sent: {e}"))?;
        let env = ffi.environment();
        let environment: Environment = env
            .as_str()
            .parse()
            .map_err(|e| format!("cannot read the environment the host sent: {e}"))?;
        Ok(HostAdapter {
            ffi,
            site,
            environment,
            visiting: Cell::new(None),
        })
    }
}

/// Where a device being visited sits in the host's stream.
#[derive(Clone, Copy)]
struct Visiting {
    device: *const Device,
    stream: u64,
    index: u32,
}

/// Receives device batches and hands each device to the plugin's visitor.
struct VisitorSink<'v, 'c> {
    visit: &'v mut dyn FnMut(&Device),
    visiting: &'c Cell<Option<Visiting>>,
    failure: Option<String>,
    panic: Option<Box<dyn Any + Send>>,
}

impl DeviceSink for VisitorSink<'_, '_> {
    fn accept(&mut self, stream: u64, batch: RStr<'_>) -> bool {
        let devices: Vec<Device> = match serde_json::from_str(batch.as_str()) {
            Ok(d) => d,
            Err(e) => {
                self.failure = Some(format!("cannot read a device batch from the host: {e}"));
                return false;
            }
        };
        let (visit, visiting) = (&mut self.visit, self.visiting);
        let result = catch_unwind(AssertUnwindSafe(|| {
            for (index, d) in devices.iter().enumerate() {
                visiting.set(Some(Visiting {
                    device: d,
                    stream,
                    index: index as u32,
                }));
                visit(d);
                // A nested `for_each_device` in `visit` has reset it; either way, nothing is
                // being visited once `visit` returns.
                visiting.set(None);
            }
        }));
        visiting.set(None);
        match result {
            Ok(()) => true,
            Err(payload) => {
                self.panic = Some(payload);
                false
            }
        }
    }
}

/// An upload open in the host, fed in batches of [`RECORD_BATCH`] records.
struct FfiRecordSink<'h, 'a> {
    ffi: &'h HostRef<'a>,
    handle: u64,
    buffer: Vec<Record>,
    finished: bool,
}

impl FfiRecordSink<'_, '_> {
    fn flush(&mut self) -> Result<(), HostError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let json = to_json(&self.buffer);
        self.buffer.clear();
        self.ffi
            .sync_push(self.handle, json.as_str().into())
            .into_result()
            .map_err(|e| host_error_from_json(e.as_str()))
    }
}

impl RecordSink for FfiRecordSink<'_, '_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        self.buffer.push(record);
        if self.buffer.len() >= RECORD_BATCH as usize {
            self.flush()
        } else {
            Ok(())
        }
    }

    fn finish(mut self: Box<Self>) -> Result<SyncStats, HostError> {
        self.flush()?;
        self.finished = true;
        match self.ffi.sync_finish(self.handle) {
            ROk(json) => serde_json::from_str(json.as_str()).map_err(|e| {
                HostError::new(
                    "plugin-boundary",
                    format!("cannot read the upload's result: {e}"),
                )
            }),
            RErr(e) => Err(host_error_from_json(e.as_str())),
        }
    }
}

impl Drop for FfiRecordSink<'_, '_> {
    fn drop(&mut self) {
        if !self.finished {
            self.ffi.sync_abort(self.handle);
        }
    }
}

impl Host for HostAdapter<'_, '_> {
    fn site(&self) -> &SiteInfo {
        &self.site
    }

    fn environment(&self) -> Environment {
        self.environment
    }

    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        let mut sink = VisitorSink {
            visit,
            visiting: &self.visiting,
            failure: None,
            panic: None,
        };
        let result = self.ffi.for_each_device(
            DEVICE_BATCH,
            DeviceSink_TO::from_ptr(RMut::new(&mut sink), TD_Opaque),
        );
        if let Some(payload) = sink.panic {
            // Back on the library's side of the boundary: `call` catches it.
            resume_unwind(payload);
        }
        if let Some(message) = sink.failure {
            return Err(HostError::new("plugin-boundary", message));
        }
        result
            .into_result()
            .map_err(|e| host_error_from_json(e.as_str()))
    }

    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        self.ffi
            .collection(id.into())
            .into_option()
            .and_then(|json| serde_json::from_str(json.as_str()).ok())
    }

    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.ffi.is_member(collection_id.into(), resource_id)
    }

    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        self.ffi
            .feature_options(plugin_id.into())
            .into_option()
            .and_then(|json| serde_json::from_str(json.as_str()).ok())
    }

    fn is_uploaded(&self, device: &Device) -> bool {
        // The device being visited (the common case: a check counting uploaded devices) is
        // named by its place in the host's batch; any other device crosses whole.
        if let Some(v) = self
            .visiting
            .get()
            .filter(|v| std::ptr::eq(v.device, device))
        {
            match self
                .ffi
                .is_uploaded(v.stream, v.index, device.resource_id, RStr::from_str(""))
            {
                0 => return false,
                1 => return true,
                _ => {}
            }
        }
        self.ffi
            .is_uploaded(0, 0, device.resource_id, to_json(device).as_str().into())
            == 1
    }

    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        let body = body.map(to_json).unwrap_or_default();
        match self.ffi.cloud(
            to_json(&method).as_str().into(),
            path.into(),
            body.as_str().into(),
        ) {
            ROk(json) => serde_json::from_str(json.as_str()).map_err(|e| {
                HostError::new(
                    "plugin-boundary",
                    format!("cannot read the cloud's answer: {e}"),
                )
            }),
            RErr(e) => Err(host_error_from_json(e.as_str())),
        }
    }

    fn collections(&self) -> Vec<CollectionInfo> {
        serde_json::from_str(self.ffi.collections().as_str()).unwrap_or_default()
    }

    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        match self
            .ffi
            .open_sync(channel.into(), to_json(&mode).as_str().into())
        {
            ROk(handle) => Ok(Box::new(FfiRecordSink {
                ffi: self.ffi,
                handle,
                buffer: Vec::new(),
                finished: false,
            })),
            RErr(e) => Err(host_error_from_json(e.as_str())),
        }
    }

    fn log(&self, message: &str) {
        self.ffi.log(message.into());
    }
}

// ---------------------------------------------------------------------------------------------
// The host's side: helpers the loader uses to answer the library.

/// The failed [`ApplyOutcome`] a host reports when a step could not run in the library.
pub fn failed_step(plugin_id: &str, message: &str) -> ApplyOutcome {
    ApplyOutcome {
        ok: false,
        findings: vec![failed_finding(plugin_id, message)],
        ..Default::default()
    }
}

/// The error [`Finding`] a host reports when a step could not run in the library.
pub fn failed_finding(plugin_id: &str, message: &str) -> Finding {
    Finding::error("plugin-failed", format!("plugin `{plugin_id}`: {message}"))
}

/// Exports a plugin from a `cdylib` as the library's `abi_stable` root module, so that
/// `cloudattach --plugin-dir DIR` loads it. One plugin per library; `$ctor` builds it once, on
/// first use.
///
/// ```ignore
/// cloudattach_sdk::export_plugin!(MyPlugin);
/// cloudattach_sdk::export_plugin!(MyPlugin::new("x"));
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($ctor:expr) => {
        #[doc(hidden)]
        pub struct __CloudattachExportedPlugin;

        impl $crate::dynamic::PluginSource for __CloudattachExportedPlugin {
            fn plugin() -> &'static dyn $crate::Plugin {
                static PLUGIN: ::std::sync::OnceLock<::std::boxed::Box<dyn $crate::Plugin>> =
                    ::std::sync::OnceLock::new();
                PLUGIN
                    .get_or_init(|| ::std::boxed::Box::new($ctor))
                    .as_ref()
            }
        }

        /// The library's root module header (`abi_stable`), which the loader looks up by name.
        #[doc(hidden)]
        #[allow(unsafe_code, non_upper_case_globals)]
        #[unsafe(no_mangle)]
        pub static _1as_0lib_1header_0root_bmodule_bloader:
            $crate::dynamic::abi_stable::library::LibHeader =
            $crate::dynamic::__lib_header::<__CloudattachExportedPlugin>();
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exported_header_has_the_name_abi_stable_looks_up() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }
}

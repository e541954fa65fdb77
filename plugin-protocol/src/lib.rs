//! # cloudattach-plugin-protocol
//!
//! What crosses the boundary between cloudattach (the host) and a plugin library: the wire
//! format, nothing else. Plugin authors do not depend on this crate: `cloudattach-sdk`'s
//! `export_plugin!` (feature `dynamic`) builds the library's side from it, and the core's
//! loader the host's side.
//!
//! Only plain data crosses, synchronously:
//!
//! - the library exports one `abi_stable` root module, [`PluginModule`], named
//!   [`ROOT_MODULE_NAME`]: the [`PROTOCOL_VERSION`] it was built against, `manifest()` and
//!   `call(op, request, host)`. Requests ([`ValidateRequest`], [`OptionsRequest`], …) and results
//!   are JSON of the model's and the SDK's serde types, so those types can grow in a minor
//!   version without changing the module's layout;
//! - the host crosses as an [`FfiHost`] trait object (`#[sabi_trait]`), which the SDK wraps back
//!   into its `Host` trait. Devices come in JSON batches ([`DEVICE_BATCH`] per call) pushed into
//!   a [`DeviceSink`], with the device parts the plugin asked for ([`DeviceStreamRequest`]) and
//!   their extension data ([`DeviceBatch`]);
//!   upload records go out in batches of [`RECORD_BATCH`] into an upload the host keeps open by
//!   handle ([`FfiHost::open_sync`]);
//! - every function either side exports catches its own panics and returns an error value: a
//!   panic never unwinds across the boundary.
//!
//! # Versions
//!
//! The protocol is versioned with this crate ([`PROTOCOL_VERSION`]), which is released in
//! lockstep with `cloudattach-sdk` (the same version number). The host loads a library whose
//! protocol version has the same `major.minor` (for 0.x, the same `0.minor`) and not a newer
//! minor; `abi_stable` then checks the layout of everything in this crate.

// abi_stable's derives declare layouts with `unsafe impl`s; no other unsafe code is here.
#![allow(unsafe_code)]
// `#[sabi_trait]` expands to impls inside a const block.
#![allow(non_local_definitions)]

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use abi_stable::std_types::{ROption, RResult, RStr, RString};
use abi_stable::{StableAbi, declare_root_module_statics, sabi_trait};
use cloudattach_model::{
    Device, DeviceParts, Environment, HostError, Options, SiteVersion, SyncMode,
};
use serde::{Deserialize, Serialize};

pub mod wire;

#[doc(hidden)]
pub use abi_stable;

pub use abi_stable::sabi_trait::TD_Opaque;
pub use abi_stable::sabi_types::{RMut, RRef};

/// The version of this crate: the protocol version a library records in its root module. The
/// host accepts a library built against the same `major.minor` (for 0.x, the same `0.minor`).
pub const PROTOCOL_VERSION: &str = env!("CARGO_PKG_VERSION");

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
// Fields added after the prefix in a later protocol read as `None` from an older library.
#[sabi(missing_field(option))]
pub struct PluginModule {
    /// The [`PROTOCOL_VERSION`] the library was built against.
    pub protocol_version: RStr<'static>,
    /// The plugin's manifest as JSON; `Err` with a message if the plugin panicked.
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
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(PROTOCOL_VERSION);
}

/// The host as a library sees it: an `abi_stable` trait object, one method per method of the
/// SDK's `Host` trait (`sync_records` crosses as `open_sync`, `sync_push` and `sync_finish`).
/// JSON in and out.
#[sabi_trait]
pub trait FfiHost {
    /// The site (`SiteInfo` as JSON).
    fn site(&self) -> RString;
    /// The environment (`"public"`, …).
    fn environment(&self) -> RString;
    /// Streams every device to `sink` as the [`DeviceStreamRequest`] in `request` (JSON) asks:
    /// JSON arrays of at most `batch` devices, whole or with the parts asked for. `Err` is a
    /// [`HostError`] as JSON.
    fn for_each_device(
        &self,
        request: RStr<'_>,
        sink: DeviceSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<(), RString>;
    /// A collection (`CollectionInfo` as JSON).
    fn collection(&self, id: RStr<'_>) -> ROption<RString>;
    /// Whether a device is in a collection's effective membership.
    fn is_member(&self, collection_id: RStr<'_>, resource_id: i64) -> bool;
    /// A selected feature's options (JSON object).
    fn feature_options(&self, plugin_id: RStr<'_>) -> ROption<RString>;
    /// Whether tenant attach uploads a device: `0` no, `1` yes. With an empty `device`, the
    /// device is number `index` of the batch the host is streaming as `stream` (checked against
    /// `resource_id`); `2` means "that batch is gone: send the device".
    fn is_uploaded(&self, stream: u64, index: u32, resource_id: i64, device: RStr<'_>) -> u8;
    /// A call to the cloud's gateway: method as JSON (`"Get"`), body JSON or empty; `Err` is a
    /// [`HostError`] as JSON.
    fn cloud(&self, method: RStr<'_>, path: RStr<'_>, body: RStr<'_>) -> RResult<RString, RString>;
    /// Every collection (a JSON array of `CollectionInfo`).
    fn collections(&self) -> RString;
    /// A device's memberships (a JSON array of `DeviceMembership`).
    fn memberships(&self, resource_id: i64) -> RString;
    /// A device's timeline events since `since` (RFC 3339; empty: all the host keeps), a JSON
    /// array of `TimelineEvent`; `Err` is a [`HostError`] as JSON.
    fn device_events(&self, resource_id: i64, since: RStr<'_>) -> RResult<RString, RString>;
    /// Opens an upload: mode as JSON (`"Delta"`); returns a handle for the upload.
    fn open_sync(&self, channel: RStr<'_>, mode: RStr<'_>) -> RResult<u64, RString>;
    /// Pushes a JSON array of `Record`s into an open upload.
    fn sync_push(&self, handle: u64, records: RStr<'_>) -> RResult<(), RString>;
    /// Finishes an upload: `SyncStats` as JSON.
    fn sync_finish(&self, handle: u64) -> RResult<RString, RString>;
    /// Drops an upload without finishing it (nothing is deleted in the cloud).
    fn sync_abort(&self, handle: u64);
    /// A message for the person running the command.
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

/// What a library asks for when it streams the inventory ([`FfiHost::for_each_device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStreamRequest {
    /// Devices per batch (the host keeps it between 1 and 100,000).
    pub batch: u32,
    /// `None`: every device whole (`Host::for_each_device`); `Some`: devices carrying at least
    /// these parts (`Host::for_each_device_with`).
    #[serde(default)]
    pub parts: Option<DeviceParts>,
    /// The library reads each batch as a [`DeviceBatch`] object, which carries the devices'
    /// extension data. Without it (a library built before the field existed) the host sends a
    /// plain JSON array of devices, without their extension data; the SDK reads either, so
    /// either side may be the older and the protocol's `0.minor` stays.
    #[serde(default)]
    pub extension: bool,
}

/// One batch of a device stream, for a library that asked for it with
/// [`DeviceStreamRequest::extension`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceBatch {
    /// The devices, as the model writes them (without their extension data).
    pub devices: Vec<Device>,
    /// The extension data of the devices that carry any, by index in `devices`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<(u32, serde_json::Map<String, serde_json::Value>)>,
}

impl DeviceBatch {
    /// Reads a batch as the host sent it: a [`DeviceBatch`] object, or the plain array of
    /// devices of a host that predates it. The extension data is put back on its device.
    pub fn read(json: &str) -> Result<Vec<Device>, serde_json::Error> {
        if json.trim_start().starts_with('[') {
            return serde_json::from_str(json);
        }
        let batch: DeviceBatch = serde_json::from_str(json)?;
        let mut devices = batch.devices;
        for (index, extension) in batch.extensions {
            if let Some(d) = devices.get_mut(index as usize) {
                d.extension = extension;
            }
        }
        Ok(devices)
    }
}

/// The lifecycle steps `call` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// `Plugin::validate`: [`ValidateRequest`] → `Vec<Finding>`.
    Validate,
    /// `Plugin::check`: [`OptionsRequest`] → `CheckReport`.
    Check,
    /// `Plugin::settings`: [`OptionsRequest`] → JSON value.
    Settings,
    /// `Plugin::plan`: [`PlanRequest`] → `PlanDecision`.
    Plan,
    /// `Plugin::apply`: [`OptionsRequest`] → `ApplyOutcome`.
    Apply,
    /// `Plugin::sync`: [`SyncRequest`] → `Result<Option<SyncStats>, HostError>`.
    Sync,
    /// `Plugin::status`: `{}` → `Result<StatusReport, HostError>`.
    Status,
    /// `Plugin::disable`: `{}` → `ApplyOutcome`.
    Disable,
    /// `Plugin::serve_action`: [`ActionRequest`] → `Result<ActionResult, ActionError>`.
    Action,
    /// `Plugin::explain_device`: [`ExplainRequest`] → `Option<Explanation>`.
    Explain,
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
            Op::Action => "action",
            Op::Explain => "explain",
        }
    }

    /// The step a name crossing the boundary names; `None` for a step of another protocol.
    pub fn from_name(name: &str) -> Option<Op> {
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()
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

/// The request of [`Op::Action`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRequest {
    /// Resolved options.
    pub options: Options,
    /// The authorized request (the SDK's `ActionCall`, as JSON).
    pub call: serde_json::Value,
}

/// The request of [`Op::Explain`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainRequest {
    /// Resolved options.
    pub options: Options,
    /// Whether the feature is selected.
    pub enabled: bool,
    /// The device.
    pub device: Device,
}

/// `value` as JSON; a value serde cannot write becomes a JSON string saying so.
#[doc(hidden)]
pub fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| format!("\"unserializable: {e}\""))
}

/// A [`HostError`] as the JSON that crosses the boundary.
pub fn host_error_to_json(error: &HostError) -> RString {
    RString::from(serde_json::to_string(error).unwrap_or_default())
}

/// A [`HostError`] from the JSON the other side sent (or a plain message).
pub fn host_error_from_json(s: &str) -> HostError {
    serde_json::from_str(s).unwrap_or_else(|_| HostError::new("plugin-boundary", s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_cross_by_name() {
        for op in [
            Op::Validate,
            Op::Check,
            Op::Settings,
            Op::Plan,
            Op::Apply,
            Op::Sync,
            Op::Status,
            Op::Disable,
            Op::Action,
            Op::Explain,
        ] {
            assert_eq!(Op::from_name(op.as_str()), Some(op));
        }
        assert_eq!(Op::from_name("launch"), None);
    }

    #[test]
    fn a_device_stream_request_without_parts_asks_for_whole_devices() {
        let r: DeviceStreamRequest = serde_json::from_str(r#"{"batch":512}"#).unwrap();
        assert_eq!(r.parts, None);
        assert!(!r.extension, "a library of 0.2.0 reads plain arrays");
        let with: DeviceStreamRequest =
            serde_json::from_str(r#"{"batch":1,"parts":{"defender":true}}"#).unwrap();
        assert_eq!(with.parts, Some(DeviceParts::DEFENDER));
    }

    #[test]
    fn a_device_batch_carries_extension_data_and_plain_arrays_still_read() {
        let mut with = Device::new(2, "PC-2");
        with.extension
            .insert("bitlocker".into(), serde_json::json!({ "on": true }));
        let batch = DeviceBatch {
            devices: vec![Device::new(1, "PC-1"), with.with_parts(DeviceParts::NONE)],
            extensions: vec![(1, with.extension.clone())],
        };
        let json = serde_json::to_string(&batch).unwrap();
        assert_eq!(
            DeviceBatch::read(&json).unwrap(),
            [Device::new(1, "PC-1"), with]
        );
        let plain = serde_json::to_string(&[Device::new(3, "PC-3")]).unwrap();
        assert_eq!(DeviceBatch::read(&plain).unwrap(), [Device::new(3, "PC-3")]);
    }

    #[test]
    fn host_errors_cross_as_json_or_plain_text() {
        let e = HostError::new("http-409", "conflict");
        assert_eq!(host_error_from_json(host_error_to_json(&e).as_str()), e);
        assert_eq!(
            host_error_from_json("boom"),
            HostError::new("plugin-boundary", "boom")
        );
    }
}

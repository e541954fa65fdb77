//! The services the host offers a plugin. Plugins never open files or sockets themselves: the
//! site inventory, the cloud and the state all come through [`Host`].

use crate::device::Device;
use crate::environment::Environment;
use crate::manifest::Options;
use crate::version::SiteVersion;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The state of the site's service connection point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConnectionPoint {
    /// Online: connected to the cloud.
    Online,
    /// Offline: updates are imported by hand.
    Offline,
    /// Not installed.
    None,
}

/// The site as `site.toml` describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteInfo {
    /// Site code, 3 characters (e.g. "PS1").
    pub code: String,
    /// Site name.
    pub name: String,
    /// Configuration Manager version.
    pub version: SiteVersion,
    /// The hierarchy id (a UUID).
    pub hierarchy_id: String,
    /// Service connection point state.
    pub service_connection_point: ConnectionPoint,
    /// Whether the administration service (SMS Provider REST API) works.
    pub administration_service: bool,
    /// Whether Entra ID user discovery is enabled.
    pub entra_user_discovery: bool,
    /// Whether Active Directory user discovery is enabled.
    pub ad_user_discovery: bool,
}

/// A collection of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionInfo {
    /// Collection id, e.g. "PS100012".
    pub id: String,
    /// Collection name.
    pub name: String,
    /// Number of devices in its effective membership.
    pub member_count: u64,
}

/// An error from a host service, with a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostError {
    /// A stable, kebab-case code (e.g. "cloud-unavailable", "http-409").
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl HostError {
    /// An error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        HostError {
            code: code.into(),
            message: message.into(),
        }
    }
    /// The error an offline host gives for cloud requests.
    pub fn offline() -> Self {
        HostError::new(
            "offline",
            "this command runs without a cloud connection (check and plan never sign in)",
        )
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for HostError {}

/// An HTTP method for [`Host::cloud`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Method {
    /// GET
    Get,
    /// PUT
    Put,
    /// POST
    Post,
    /// DELETE
    Delete,
}

/// The optional blocks of a [`Device`] a pass over the inventory needs. A host may leave out
/// (as `None`) the blocks not asked for, which saves parsing them: the Defender and analytics
/// blocks are most of an inventory line.
///
/// ```
/// use cloudattach_sdk::DeviceParts;
/// assert!(DeviceParts::ALL.defender && DeviceParts::ALL.analytics);
/// assert_eq!(DeviceParts::default(), DeviceParts::NONE);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceParts {
    /// The `defender` block.
    pub defender: bool,
    /// The `analytics` block.
    pub analytics: bool,
}

impl DeviceParts {
    /// Every block.
    pub const ALL: DeviceParts = DeviceParts {
        defender: true,
        analytics: true,
    };
    /// Neither block: the inventory fields only.
    pub const NONE: DeviceParts = DeviceParts {
        defender: false,
        analytics: false,
    };
    /// The Defender block only.
    pub const DEFENDER: DeviceParts = DeviceParts {
        defender: true,
        analytics: false,
    };
    /// The analytics block only.
    pub const ANALYTICS: DeviceParts = DeviceParts {
        defender: false,
        analytics: true,
    };
}

/// One record to upload: a stable key (the device's resource id for device records) and the
/// JSON the cloud stores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The key; the same key on a later sync replaces the record.
    pub key: String,
    /// The record.
    pub value: serde_json::Value,
}

/// Whether a sync sends only what changed or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMode {
    /// Records added, changed or removed since the last acknowledged upload.
    Delta,
    /// Every record, and deletions of keys the site no longer has.
    Full,
}

/// What a sync sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SyncStats {
    /// Records sent: upserts plus deletions.
    pub sent: u64,
    /// Records the cloud added or changed.
    pub upserted: u64,
    /// Records the cloud removed.
    pub deleted: u64,
    /// Records the cloud already had as sent.
    pub unchanged: u64,
    /// Records in scope after the sync.
    pub total: u64,
}

/// The receiving end of an upload (see [`Host::open_sync`]).
pub trait RecordSink {
    /// Adds a record. An error means the upload failed; stop pushing.
    fn push(&mut self, record: Record) -> Result<(), HostError>;
    /// Sends what is left, the deletions, and waits for the cloud to acknowledge everything.
    fn finish(self: Box<Self>) -> Result<SyncStats, HostError>;
}

/// Host services. The core implements this; a test kit implements it in memory.
///
/// The cloud methods have default implementations that answer [`HostError::offline`], which is
/// what `check` and `plan` get: they never sign in.
pub trait Host {
    /// The site.
    fn site(&self) -> &SiteInfo;
    /// The environment the site attaches to.
    fn environment(&self) -> Environment;
    /// Streams every device of the site (valid lines of `devices.jsonl`) to `visit`.
    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError>;
    /// [`Host::for_each_device`], where the devices carry at least the blocks in `parts` and may
    /// lack the others. The same devices are visited either way.
    fn for_each_device_with(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(&Device),
    ) -> Result<(), HostError> {
        let _ = parts;
        self.for_each_device(visit)
    }
    /// A collection by id, with its effective member count.
    fn collection(&self, id: &str) -> Option<CollectionInfo>;
    /// Every collection of the site (including `SMS00001`, All Systems) with its effective
    /// member count, sorted by id. Added in 0.1 with a default (no collections) so existing
    /// hosts keep compiling; the core's host and the test kit list them all.
    fn collections(&self) -> Vec<CollectionInfo> {
        Vec::new()
    }
    /// Whether a device is in a collection's effective membership.
    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool;
    /// The resolved options of a selected feature (`None` when it is not selected).
    fn feature_options(&self, plugin_id: &str) -> Option<Options>;
    /// Whether tenant attach uploads this device: it has a client and is in the upload scope
    /// (all devices, or the configured collection's effective membership).
    fn is_uploaded(&self, device: &Device) -> bool;

    /// Calls the cloud's attach gateway for this hierarchy: `path` is relative to
    /// `/api/v1/hierarchies/{hierarchy id}/` (e.g. `features/tenant-attach`). Retries and
    /// authentication are the host's business.
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        let _ = (method, path, body);
        Err(HostError::offline())
    }

    /// Opens an upload to a channel (`devices`, `analytics`, `defender`, `comanagement`, or
    /// `ext/<plugin id>`). Push every record in scope, then [`RecordSink::finish`]: the host
    /// batches, compresses and retries, and — in [`SyncMode::Delta`] — sends only the records
    /// that changed since the last acknowledged upload of this channel, plus deletions of the
    /// keys no longer pushed. Pushing from inside [`Host::for_each_device`] keeps memory flat.
    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let _ = (channel, mode);
        Err(HostError::offline())
    }

    /// [`Host::open_sync`] for records already at hand as an iterator.
    fn sync_records(
        &self,
        channel: &str,
        records: &mut dyn Iterator<Item = Record>,
        mode: SyncMode,
    ) -> Result<SyncStats, HostError> {
        let mut sink = self.open_sync(channel, mode)?;
        for r in records {
            sink.push(r)?;
        }
        sink.finish()
    }

    /// A progress or information message for the person running the command (stderr).
    fn log(&self, message: &str) {
        let _ = message;
    }
}

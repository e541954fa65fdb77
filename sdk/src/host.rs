//! The services the host offers a plugin. Plugins never open files or sockets themselves: the
//! site inventory, the cloud and the state all come through [`Host`].

use crate::manifest::Options;
use cloudattach_model::{Device, Environment};

// Defined in `cloudattach-model`; re-exported where they were defined before 0.2.
pub use cloudattach_model::{
    CollectionInfo, ConnectionPoint, DeviceParts, HostError, Method, Record, SiteInfo, SyncMode,
    SyncStats, TimelineEvent,
};

/// The receiving end of an upload (see [`Host::open_sync`]).
pub trait RecordSink {
    /// Adds a record. An error means the upload failed; stop pushing.
    fn push(&mut self, record: Record) -> Result<(), HostError>;
    /// Sends what is left, the deletions, and waits for the cloud to acknowledge everything.
    fn finish(self: Box<Self>) -> Result<SyncStats, HostError>;
}

/// Host services. The core implements this; the test kit (`cloudattach-testkit`) implements it
/// in memory.
///
/// The cloud methods have default implementations that answer [`HostError::offline`], which is
/// what `check` and `plan` get: they never sign in.
///
/// Every wrapper of a host (the core's shared-pass host, the dynamic boundary's adapter) must
/// forward every method, the provided ones included: a method left to its default quietly
/// loses what the wrapped host does better (e.g. `for_each_device_with` skipping blocks).
pub trait Host {
    /// The site.
    fn site(&self) -> &SiteInfo;
    /// The environment the site attaches to.
    fn environment(&self) -> Environment;
    /// Streams every device of the site (valid lines of `devices.jsonl`) to `visit`, whole: with
    /// its blocks and its extension data (what its line carries beyond the model,
    /// [`Device::extension`]).
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
    /// Every collection a device is in — and every one that would hold it but for its limiting
    /// collection — with how, sorted by collection id. The default lists the collections whose
    /// effective membership holds it, without how; the core's host says how.
    fn memberships(&self, resource_id: i64) -> Vec<crate::DeviceMembership> {
        self.collections()
            .into_iter()
            .filter(|c| self.is_member(&c.id, resource_id))
            .map(|c| crate::DeviceMembership::new(c.id, c.name, true, "member", "a member"))
            .collect()
    }
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

    /// Streams the records `produce` makes from the site's devices into an upload channel (what
    /// [`upload_from_devices`](crate::upload_from_devices) calls): the devices carry the blocks
    /// in `parts`, each record is pushed as it is made, and the upload is finished.
    ///
    /// `produce` must make a device's record from that device, the features' options and the
    /// site's collections alone (no state carried from one device to the next): in a
    /// [`SyncMode::Delta`], the core's host then calls it only for the devices whose inventory
    /// line changed since the channel's last acknowledged upload, and keeps the records of the
    /// others as they are. A feature whose records summarize several devices opens the upload
    /// itself ([`Host::open_sync`]). The default streams every device through `open_sync`.
    fn upload_devices(
        &self,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        let mut sink = self.open_sync(channel, mode)?;
        let mut failed: Option<HostError> = None;
        self.for_each_device_with(parts, &mut |d| {
            if failed.is_none()
                && let Some(record) = produce(d)
            {
                failed = sink.push(record).err();
            }
        })?;
        match failed {
            Some(e) => Err(e),
            None => sink.finish(),
        }
    }

    /// The events the site keeps of a device (its timeline: uploads that changed its records,
    /// with the fields that changed; its channels' first uploads; the cloud actions run on it),
    /// since `since` (RFC 3339; `None`: all it keeps, 30 days), newest first. Added in 0.2 with a
    /// default that answers `no-timeline`: a host that keeps no timeline; the core's host keeps
    /// one where the connector serves actions.
    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<TimelineEvent>, HostError> {
        let _ = (resource_id, since);
        Err(HostError::new(
            "no-timeline",
            "this host keeps no device timeline",
        ))
    }

    /// A progress or information message for the person running the command (stderr).
    fn log(&self, message: &str) {
        let _ = message;
    }
}

//! An in-memory [`Host`] for plugin tests (cargo feature `testkit`).
//!
//! [`MemoryHost`] holds a site, its devices and collections and the selected features' options,
//! entirely in memory. By default it is *offline*, like the host `check` and `plan` get: every
//! cloud call answers [`HostError::offline`]. With [`MemoryHost::with_cloud`] it also plays a
//! small recording cloud: it stores feature settings, keeps every upload channel with delta
//! semantics, answers `status`, and records every [`Host::cloud`] call and every finished upload
//! ([`Host::open_sync`] … [`RecordSink::finish`], or [`Host::sync_records`]) so a test can
//! assert what `apply` or `sync` would send — without a network.
//!
//! Add it to a plugin crate's dev-dependencies:
//!
//! ```toml
//! [dev-dependencies]
//! cloudattach-sdk = { version = "…", features = ["testkit"] }
//! ```
//!
//! ```
//! use cloudattach_sdk::testkit::{MemoryHost, device, options};
//! use cloudattach_sdk::*;
//!
//! struct Inventory;
//! impl Plugin for Inventory {
//!     fn manifest(&self) -> Manifest { Manifest::new("inventory", "Inventory", "0.1.0") }
//!     fn check(&self, _host: &dyn Host, _options: &Options) -> CheckReport { CheckReport::default() }
//!     fn sync(&self, host: &dyn Host, _o: &Options, mode: SyncMode) -> Result<Option<SyncStats>, HostError> {
//!         let mut sink = host.open_sync("ext/inventory", mode)?;
//!         let mut failed = None;
//!         host.for_each_device(&mut |d| {
//!             let record = Record {
//!                 key: d.resource_id.to_string(),
//!                 value: serde_json::json!({ "name": d.name }),
//!             };
//!             if failed.is_none() {
//!                 failed = sink.push(record).err();
//!             }
//!         })?;
//!         match failed {
//!             Some(e) => Err(e),
//!             None => sink.finish().map(Some),
//!         }
//!     }
//! }
//!
//! let host = MemoryHost::new(MemoryHost::sample_site())
//!     .with_devices([device(1), device(2)])
//!     .with_collection("PS100012", "Pilot", [2])
//!     .with_feature("inventory", options(serde_json::json!({})))
//!     .with_cloud();
//! assert!(host.is_member("PS100012", 2));
//!
//! let stats = Inventory.sync(&host, &Options::new(), SyncMode::Delta).unwrap().unwrap();
//! assert_eq!(stats.sent, 2);
//! // Nothing changed: a second delta sends nothing.
//! let again = Inventory.sync(&host, &Options::new(), SyncMode::Delta).unwrap().unwrap();
//! assert_eq!(again.sent, 0);
//! assert_eq!(host.sync_calls().len(), 2);
//! assert_eq!(host.channel("ext/inventory")["1"]["name"], "PC-1");
//! ```

use crate::device::{Device, JoinType};
use crate::environment::Environment;
use crate::host::{
    CollectionInfo, ConnectionPoint, Host, HostError, Method, Record, RecordSink, SiteInfo,
    SyncMode, SyncStats,
};
use crate::manifest::Options;
use crate::version::SiteVersion;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The id of the built-in "All Systems" collection: every device of the site.
pub const ALL_SYSTEMS: &str = "SMS00001";

/// A valid device for table tests: a hybrid-joined Windows 10 22H2 workstation (build
/// 10.0.19045) with an active client 5.00.9106.1000, not MDM-enrolled, named `PC-{resource_id}`.
/// It is co-management `eligible`, Endpoint analytics eligible (with app reliability) and has no
/// `defender` or `analytics` block. Change fields with struct update syntax:
///
/// ```
/// use cloudattach_sdk::{Device, JoinType, testkit::device};
/// let d = Device { join_type: JoinType::Domain, ..device(7) };
/// assert_eq!(d.name, "PC-7");
/// ```
pub fn device(resource_id: i64) -> Device {
    Device {
        resource_id,
        name: format!("PC-{resource_id}"),
        client: true,
        client_version: Some("5.00.9106.1000".into()),
        client_active: true,
        os: "Microsoft Windows NT Workstation 10.0".into(),
        os_build: "10.0.19045".into(),
        join_type: JoinType::Hybrid,
        mdm_enrolled: false,
        entra_device_id: None,
        primary_user: None,
        model: None,
        manufacturer: None,
        serial_number: None,
        domain: None,
        sku: None,
        last_active: None,
        defender: None,
        analytics: None,
    }
}

/// Turns a JSON object literal into [`Options`]; anything but an object gives empty options.
///
/// ```
/// use cloudattach_sdk::testkit::options;
/// let o = options(serde_json::json!({ "upload": "PS100012" }));
/// assert_eq!(o["upload"], "PS100012");
/// ```
pub fn options(value: Value) -> Options {
    match value {
        Value::Object(map) => map,
        _ => Options::new(),
    }
}

/// One recorded [`Host::cloud`] call.
#[derive(Debug, Clone, PartialEq)]
pub struct CloudCall {
    /// The HTTP method.
    pub method: Method,
    /// The path relative to `/api/v1/hierarchies/{hid}/`.
    pub path: String,
    /// The request body, if any.
    pub body: Option<Value>,
}

/// One recorded upload: a [`Host::open_sync`] finished with [`RecordSink::finish`] (or a
/// [`Host::sync_records`] call). An upload dropped without `finish` is not recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncCall {
    /// The upload channel (`devices`, `analytics`, …).
    pub channel: String,
    /// Delta or full.
    pub mode: SyncMode,
    /// Every record the plugin pushed, in order (sent or not).
    pub records: Vec<Record>,
    /// Keys of the records actually sent as upserts.
    pub upserted_keys: Vec<String>,
    /// Keys sent as deletions (stored before, no longer produced).
    pub deleted_keys: Vec<String>,
    /// What the call returned.
    pub stats: SyncStats,
}

/// The state of the in-memory cloud.
#[derive(Debug, Default)]
struct CloudState {
    /// Settings of every enabled feature, by plugin id.
    features: BTreeMap<String, Value>,
    /// Per channel: key → the record's serialized JSON (what delta compares against).
    channels: HashMap<String, HashMap<String, String>>,
    /// Completed syncs of every channel: the in-memory cloud's clock.
    sync_sequence: u64,
    /// Per channel: the clock at its last completed sync, for `last_sync`.
    channel_syncs: HashMap<String, u64>,
    cloud_calls: Vec<CloudCall>,
    sync_calls: Vec<SyncCall>,
}

/// An in-memory [`Host`] for tests. Build it with the `with_*` methods; see the
/// [module documentation](self) for an example.
#[derive(Debug)]
pub struct MemoryHost {
    site: SiteInfo,
    environment: Environment,
    /// Behind a lock so a test can change the inventory between two syncs (delta tests).
    devices: Mutex<Vec<Device>>,
    /// Collection id → (name, effective members). `SMS00001` is computed unless given.
    collections: BTreeMap<String, (String, BTreeSet<i64>)>,
    /// Selected features' options; behind a lock so a test can change them between steps.
    features: Mutex<BTreeMap<String, Options>>,
    /// `None`: offline (the `check`/`plan` host).
    cloud: Option<Mutex<CloudState>>,
    /// When set, every cloud call and sync fails with it (after being recorded).
    cloud_error: Option<HostError>,
    /// When set, every upload fails with it at `finish`; other cloud calls still work.
    upload_error: Option<HostError>,
    /// The tenant-wide "Use Intune RBAC" toggle (DOMAIN.md §3), for rbac-authority's status.
    tenant_intune_rbac: bool,
    /// Canned answers that take precedence over the in-memory cloud, by (method, path).
    responses: Vec<(Method, String, Value)>,
    logs: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the assertions that follow.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryHost {
    /// A healthy site: code "PS1", version 2303, service connection point online,
    /// administration service working, Entra ID and AD user discovery both enabled.
    pub fn sample_site() -> SiteInfo {
        SiteInfo {
            code: "PS1".into(),
            name: "Primary site".into(),
            version: SiteVersion(2303),
            hierarchy_id: "6f1c1a52-3a1e-4b9c-9d33-0c2f5d7a9e10".into(),
            service_connection_point: ConnectionPoint::Online,
            administration_service: true,
            entra_user_discovery: true,
            ad_user_discovery: true,
        }
    }

    /// An offline host for `site` in the public cloud, with no devices, collections or features.
    pub fn new(site: SiteInfo) -> Self {
        MemoryHost {
            site,
            environment: Environment::Public,
            devices: Mutex::new(vec![]),
            collections: BTreeMap::new(),
            features: Mutex::new(BTreeMap::new()),
            cloud: None,
            cloud_error: None,
            upload_error: None,
            tenant_intune_rbac: false,
            responses: vec![],
            logs: Mutex::new(vec![]),
        }
    }

    /// Sets the environment.
    pub fn with_environment(mut self, environment: Environment) -> Self {
        self.environment = environment;
        self
    }

    /// Adds devices.
    pub fn with_devices(self, devices: impl IntoIterator<Item = Device>) -> Self {
        lock(&self.devices).extend(devices);
        self
    }

    /// Adds one device.
    pub fn with_device(self, device: Device) -> Self {
        lock(&self.devices).push(device);
        self
    }

    /// Adds (or replaces) a collection with its *effective* membership given explicitly.
    /// Giving [`ALL_SYSTEMS`] overrides the built-in "every device".
    pub fn with_collection(
        mut self,
        id: &str,
        name: &str,
        members: impl IntoIterator<Item = i64>,
    ) -> Self {
        self.collections.insert(
            id.to_string(),
            (name.to_string(), members.into_iter().collect()),
        );
        self
    }

    /// Selects a feature with its resolved options (what [`Host::feature_options`] returns).
    pub fn with_feature(self, plugin_id: &str, options: Options) -> Self {
        self.set_feature(plugin_id, options);
        self
    }

    /// Selects a feature, or changes its options, on a built host — for a test that changes
    /// the configuration between two steps (e.g. narrowing tenant attach's `upload` scope
    /// between `apply` and `sync`).
    pub fn set_feature(&self, plugin_id: &str, options: Options) {
        lock(&self.features).insert(plugin_id.to_string(), options);
    }

    /// Turns on the in-memory recording cloud (the host `apply`, `sync`, `status` and `disable`
    /// get). It understands `PUT`/`GET`/`DELETE features/{id}` and `GET status`; any other path
    /// answers an `http-404` error unless given with [`MemoryHost::with_response`].
    ///
    /// `status` reports the counts SPEC.md §3 pins from what the channels hold, and a
    /// deterministic `last_sync`: the n-th sync of the host happened at 2026-01-01T00:00:00Z
    /// plus n seconds.
    pub fn with_cloud(mut self) -> Self {
        self.cloud = Some(Mutex::new(CloudState::default()));
        self
    }

    /// Sets the tenant-wide "Use Intune RBAC" toggle (off by default), which decides
    /// rbac-authority's `effective_authority` in `status` (DOMAIN.md §3).
    pub fn with_tenant_intune_rbac(mut self, on: bool) -> Self {
        self.tenant_intune_rbac = on;
        self
    }

    /// Makes every cloud call fail with `error`, and every upload at [`RecordSink::finish`]
    /// (as a failed transfer would); calls and uploads are still recorded.
    pub fn with_cloud_error(mut self, error: HostError) -> Self {
        self.cloud_error = Some(error);
        self
    }

    /// Makes every upload fail with `error` at [`RecordSink::finish`] while the other cloud calls
    /// succeed: a feature that was enabled but whose first upload failed.
    pub fn with_upload_error(mut self, error: HostError) -> Self {
        self.upload_error = Some(error);
        self
    }

    /// A canned answer for `method path`, taking precedence over the in-memory cloud (for
    /// paths it does not know, e.g. a third-party plugin's own endpoints). Implies
    /// [`MemoryHost::with_cloud`].
    pub fn with_response(mut self, method: Method, path: &str, response: Value) -> Self {
        if self.cloud.is_none() {
            self = self.with_cloud();
        }
        self.responses.push((method, path.to_string(), response));
        self
    }

    /// The site's devices.
    pub fn devices(&self) -> Vec<Device> {
        lock(&self.devices).clone()
    }

    /// Replaces the device with the same `resource_id`, or adds it: the inventory changed
    /// between two syncs.
    pub fn upsert_device(&self, device: Device) {
        let mut devices = lock(&self.devices);
        match devices
            .iter_mut()
            .find(|d| d.resource_id == device.resource_id)
        {
            Some(slot) => *slot = device,
            None => devices.push(device),
        }
    }

    /// Removes a device from the inventory (it left the site); `false` if there was none.
    pub fn remove_device(&self, resource_id: i64) -> bool {
        let mut devices = lock(&self.devices);
        let before = devices.len();
        devices.retain(|d| d.resource_id != resource_id);
        devices.len() != before
    }

    /// Every [`Host::cloud`] call so far, in order (empty when offline).
    pub fn cloud_calls(&self) -> Vec<CloudCall> {
        self.cloud
            .as_ref()
            .map(|c| lock(c).cloud_calls.clone())
            .unwrap_or_default()
    }

    /// Every finished upload so far, in order (empty when offline).
    pub fn sync_calls(&self) -> Vec<SyncCall> {
        self.cloud
            .as_ref()
            .map(|c| lock(c).sync_calls.clone())
            .unwrap_or_default()
    }

    /// The finished uploads to one channel, in order.
    pub fn sync_calls_to(&self, channel: &str) -> Vec<SyncCall> {
        self.sync_calls()
            .into_iter()
            .filter(|c| c.channel == channel)
            .collect()
    }

    /// What the cloud holds in a channel now: key → record.
    pub fn channel(&self, channel: &str) -> BTreeMap<String, Value> {
        let Some(cloud) = &self.cloud else {
            return BTreeMap::new();
        };
        let state = lock(cloud);
        state
            .channels
            .get(channel)
            .map(|records| {
                records
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or(Value::Null)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The settings the cloud stores for a feature (`None` when not enabled).
    pub fn feature_settings(&self, plugin_id: &str) -> Option<Value> {
        self.cloud
            .as_ref()
            .and_then(|c| lock(c).features.get(plugin_id).cloned())
    }

    /// Every message passed to [`Host::log`].
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    fn all_device_ids(&self) -> BTreeSet<i64> {
        lock(&self.devices).iter().map(|d| d.resource_id).collect()
    }

    /// The cloud's `status` document, shaped like the gateway's (`{"plugins": [...]}`).
    fn status_document(&self, state: &CloudState) -> Value {
        let size = |channel: &str| state.channels.get(channel).map_or(0, |c| c.len() as u64);
        let count_state = |wanted: &str| {
            state.channels.get("comanagement").map_or(0, |c| {
                c.values()
                    .filter(|v| {
                        serde_json::from_str::<Value>(v)
                            .ok()
                            .and_then(|r| r.get("state").cloned())
                            == Some(Value::from(wanted))
                    })
                    .count() as u64
            })
        };
        let last_sync = |channel: &str| {
            state.channel_syncs.get(channel).map_or(Value::Null, |n| {
                Value::from(format!(
                    "2026-01-01T{:02}:{:02}:{:02}Z",
                    n / 3600 % 24,
                    n / 60 % 60,
                    n % 60
                ))
            })
        };
        let mut plugins = vec![];
        for (id, settings) in &state.features {
            let mut entry = json!({ "id": id, "enabled": true, "counts": {}, "last_sync": null });
            match id.as_str() {
                "tenant-attach" => {
                    entry["counts"] = json!({ "devices_uploaded": size("devices") });
                    entry["last_sync"] = last_sync("devices");
                }
                "endpoint-analytics" => {
                    entry["counts"] = json!({ "devices_enrolled": size("analytics") });
                    entry["last_sync"] = last_sync("analytics");
                }
                "defender-reporting" => {
                    entry["counts"] = json!({ "devices_reported": size("defender") });
                    entry["last_sync"] = last_sync("defender");
                }
                "co-management" => {
                    entry["counts"] = json!({
                        "devices_scheduled": count_state("scheduledForEnrollment"),
                        "devices_enrolled": count_state("comanaged"),
                    });
                    entry["last_sync"] = last_sync("comanagement");
                }
                "rbac-authority" => {
                    let cleared =
                        settings.get("enforce_configmgr_rbac") == Some(&Value::Bool(false));
                    let intune_only = cleared && self.tenant_intune_rbac;
                    entry["effective_authority"] = Value::from(if intune_only {
                        "intune"
                    } else {
                        "configmgr+intune"
                    });
                }
                _ => {}
            }
            plugins.push(entry);
        }
        json!({ "plugins": plugins })
    }
}

fn not_found(method: Method, path: &str) -> HostError {
    HostError::new(
        "http-404",
        format!("{method:?} {path}: the in-memory cloud has no such resource"),
    )
}

/// The in-memory cloud's end of one upload: collects the pushed records, then applies them
/// with delta semantics at `finish`.
struct MemorySink<'a> {
    cloud: &'a Mutex<CloudState>,
    error: Option<HostError>,
    channel: String,
    mode: SyncMode,
    produced: Vec<Record>,
}

impl RecordSink for MemorySink<'_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        self.produced.push(record);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SyncStats, HostError> {
        let MemorySink {
            cloud,
            error,
            channel,
            mode,
            produced,
        } = *self;
        let mut state = lock(cloud);
        if let Some(e) = error {
            state.sync_calls.push(SyncCall {
                channel,
                mode,
                records: produced,
                upserted_keys: vec![],
                deleted_keys: vec![],
                stats: SyncStats::default(),
            });
            return Err(e);
        }
        let stored = state.channels.entry(channel.clone()).or_default();
        let mut stats = SyncStats::default();
        let mut upserted_keys = vec![];
        let mut seen = BTreeSet::new();
        for record in &produced {
            let serialized = record.value.to_string();
            seen.insert(record.key.clone());
            let changed = stored.get(&record.key) != Some(&serialized);
            if changed {
                stats.upserted += 1;
            } else {
                stats.unchanged += 1;
            }
            // A full sync sends every record; the cloud still only counts real changes.
            if changed || mode == SyncMode::Full {
                stats.sent += 1;
                upserted_keys.push(record.key.clone());
            }
            stored.insert(record.key.clone(), serialized);
        }
        let mut deleted_keys: Vec<String> = stored
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        deleted_keys.sort();
        for key in &deleted_keys {
            stored.remove(key);
        }
        stats.deleted = deleted_keys.len() as u64;
        stats.sent += stats.deleted;
        stats.total = stored.len() as u64;
        state.sync_sequence += 1;
        let now = state.sync_sequence;
        state.channel_syncs.insert(channel.clone(), now);
        state.sync_calls.push(SyncCall {
            channel,
            mode,
            records: produced,
            upserted_keys,
            deleted_keys,
            stats,
        });
        Ok(stats)
    }
}

impl Host for MemoryHost {
    fn site(&self) -> &SiteInfo {
        &self.site
    }

    fn environment(&self) -> Environment {
        self.environment
    }

    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        // A snapshot: `visit` may call back into the host (`is_uploaded`, `is_member`).
        let snapshot = self.devices();
        snapshot.iter().for_each(visit);
        Ok(())
    }

    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        if let Some((name, members)) = self.collections.get(id) {
            return Some(CollectionInfo {
                id: id.to_string(),
                name: name.clone(),
                member_count: members.len() as u64,
            });
        }
        (id == ALL_SYSTEMS).then(|| CollectionInfo {
            id: id.to_string(),
            name: "All Systems".into(),
            member_count: self.all_device_ids().len() as u64,
        })
    }

    fn collections(&self) -> Vec<CollectionInfo> {
        let mut ids: BTreeSet<&str> = self.collections.keys().map(String::as_str).collect();
        ids.insert(ALL_SYSTEMS);
        ids.into_iter()
            .filter_map(|id| self.collection(id))
            .collect()
    }

    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        match self.collections.get(collection_id) {
            Some((_, members)) => members.contains(&resource_id),
            None => {
                collection_id == ALL_SYSTEMS
                    && lock(&self.devices)
                        .iter()
                        .any(|d| d.resource_id == resource_id)
            }
        }
    }

    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        lock(&self.features).get(plugin_id).cloned()
    }

    fn is_uploaded(&self, device: &Device) -> bool {
        if !device.client {
            return false;
        }
        let scope = lock(&self.features)
            .get("tenant-attach")
            .and_then(|o| o.get("upload"))
            .and_then(Value::as_str)
            .map(String::from);
        match scope.as_deref() {
            None | Some("all") => true,
            Some(collection_id) => self.is_member(collection_id, device.resource_id),
        }
    }

    fn cloud(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, HostError> {
        let Some(cloud) = &self.cloud else {
            return Err(HostError::offline());
        };
        let mut state = lock(cloud);
        state.cloud_calls.push(CloudCall {
            method,
            path: path.to_string(),
            body: body.cloned(),
        });
        if let Some(e) = &self.cloud_error {
            return Err(e.clone());
        }
        if let Some((_, _, answer)) = self
            .responses
            .iter()
            .rev()
            .find(|(m, p, _)| *m == method && p == path)
        {
            return Ok(answer.clone());
        }
        if path == "status" && method == Method::Get {
            return Ok(self.status_document(&state));
        }
        let Some(id) = path
            .strip_prefix("features/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
        else {
            return Err(not_found(method, path));
        };
        match method {
            Method::Put => {
                let settings = body
                    .and_then(|b| b.get("settings"))
                    .cloned()
                    .ok_or_else(|| {
                        HostError::new(
                            "http-400",
                            format!("PUT {path}: the body must be {{\"settings\": ...}}"),
                        )
                    })?;
                state.features.insert(id.to_string(), settings.clone());
                Ok(json!({ "id": id, "enabled": true, "settings": settings }))
            }
            Method::Get => match state.features.get(id) {
                Some(settings) => Ok(json!({ "id": id, "enabled": true, "settings": settings })),
                None => Err(not_found(method, path)),
            },
            // Turning a feature off keeps its uploaded records: what a real tenant does with
            // them is its business, and tests of `disable` only look at the call.
            Method::Delete => match state.features.remove(id) {
                Some(_) => Ok(Value::Null),
                None => Err(not_found(method, path)),
            },
            Method::Post => Err(not_found(method, path)),
        }
    }

    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let Some(cloud) = &self.cloud else {
            return Err(HostError::offline());
        };
        Ok(Box::new(MemorySink {
            cloud,
            // An injected error surfaces at `finish`, as a failed upload would.
            error: self
                .cloud_error
                .clone()
                .or_else(|| self.upload_error.clone()),
            channel: channel.to_string(),
            mode,
            produced: vec![],
        }))
    }

    fn log(&self, message: &str) {
        lock(&self.logs).push(message.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, v: i64) -> Record {
        Record {
            key: key.into(),
            value: json!({ "v": v }),
        }
    }

    #[test]
    fn offline_by_default() {
        let host = MemoryHost::new(MemoryHost::sample_site());
        assert_eq!(
            host.cloud(Method::Get, "status", None).unwrap_err().code,
            "offline"
        );
        let err = host
            .sync_records("devices", &mut std::iter::empty(), SyncMode::Delta)
            .unwrap_err();
        assert_eq!(err.code, "offline");
    }

    #[test]
    fn delta_sends_changes_and_deletions_only() {
        let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud();
        let first = host
            .sync_records(
                "c",
                &mut vec![rec("1", 1), rec("2", 2)].into_iter(),
                SyncMode::Delta,
            )
            .unwrap();
        assert_eq!(
            (first.sent, first.upserted, first.unchanged, first.total),
            (2, 2, 0, 2)
        );
        let second = host
            .sync_records(
                "c",
                &mut vec![rec("1", 1), rec("3", 3)].into_iter(),
                SyncMode::Delta,
            )
            .unwrap();
        assert_eq!(
            (
                second.sent,
                second.upserted,
                second.deleted,
                second.unchanged,
                second.total
            ),
            (2, 1, 1, 1, 2)
        );
        let calls = host.sync_calls_to("c");
        assert_eq!(calls[1].upserted_keys, vec!["3"]);
        assert_eq!(calls[1].deleted_keys, vec!["2"]);
        let full = host
            .sync_records(
                "c",
                &mut vec![rec("1", 1), rec("3", 4)].into_iter(),
                SyncMode::Full,
            )
            .unwrap();
        assert_eq!((full.sent, full.upserted, full.unchanged), (2, 1, 1));
        assert_eq!(host.channel("c")["3"], json!({ "v": 4 }));
    }

    #[test]
    fn collections_and_upload_scope() {
        let host = MemoryHost::new(MemoryHost::sample_site())
            .with_devices([
                device(1),
                device(2),
                Device {
                    client: false,
                    ..device(3)
                },
            ])
            .with_collection("PS100012", "Pilot", [2, 3])
            .with_feature("tenant-attach", options(json!({ "upload": "PS100012" })));
        assert_eq!(host.collection(ALL_SYSTEMS).unwrap().member_count, 3);
        assert!(host.is_member(ALL_SYSTEMS, 3));
        assert!(!host.is_member(ALL_SYSTEMS, 4));
        assert_eq!(host.collection("PS100012").unwrap().member_count, 2);
        assert!(host.collection("PS1000FF").is_none());
        let uploaded: Vec<i64> = host
            .devices()
            .iter()
            .filter(|d| host.is_uploaded(d))
            .map(|d| d.resource_id)
            .collect();
        assert_eq!(uploaded, vec![2]);
    }

    #[test]
    fn the_inventory_can_change_between_steps() {
        let host = MemoryHost::new(MemoryHost::sample_site()).with_devices([device(1), device(2)]);
        host.upsert_device(Device {
            name: "RENAMED".into(),
            ..device(2)
        });
        host.upsert_device(device(3));
        assert!(host.remove_device(1));
        assert!(!host.remove_device(1));
        let mut seen = vec![];
        host.for_each_device(&mut |d| seen.push((d.resource_id, d.name.clone())))
            .unwrap();
        assert_eq!(seen, [(2, "RENAMED".to_string()), (3, "PC-3".to_string())]);
        assert!(!host.is_member(ALL_SYSTEMS, 1));
    }

    #[test]
    fn features_and_status() {
        let host = MemoryHost::new(MemoryHost::sample_site())
            .with_cloud()
            .with_tenant_intune_rbac(true);
        let body = json!({ "settings": { "enforce_configmgr_rbac": false } });
        host.cloud(Method::Put, "features/rbac-authority", Some(&body))
            .unwrap();
        let status = host.cloud(Method::Get, "status", None).unwrap();
        assert_eq!(status["plugins"][0]["effective_authority"], "intune");
        assert_eq!(
            host.feature_settings("rbac-authority").unwrap()["enforce_configmgr_rbac"],
            false
        );
        host.cloud(Method::Delete, "features/rbac-authority", None)
            .unwrap();
        assert!(host.feature_settings("rbac-authority").is_none());
        assert_eq!(
            host.cloud(Method::Get, "nowhere", None).unwrap_err().code,
            "http-404"
        );
        assert_eq!(host.cloud_calls().len(), 4);
    }

    #[test]
    fn injected_errors_are_returned_and_recorded() {
        let host = MemoryHost::new(MemoryHost::sample_site())
            .with_cloud()
            .with_cloud_error(HostError::new("http-503", "unavailable"));
        assert_eq!(
            host.cloud(Method::Put, "features/x", None)
                .unwrap_err()
                .code,
            "http-503"
        );
        assert!(
            host.sync_records("c", &mut vec![rec("1", 1)].into_iter(), SyncMode::Delta)
                .is_err()
        );
        assert_eq!(host.cloud_calls().len(), 1);
        assert_eq!(host.sync_calls()[0].records.len(), 1);
    }
}

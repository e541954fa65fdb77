//! # cloudattach-testkit
//!
//! An in-memory [`Host`] for plugin tests: a plain `cargo test`, with no cloud, no site on disk
//! and no network.
//!
//! [`MemoryHost`] holds a site, its devices and collections and the selected features' options,
//! entirely in memory. By default it is *offline*, like the host `check` and `plan` get: every
//! cloud call answers [`HostError::offline`]. With [`MemoryHost::with_cloud`] it also plays a
//! small recording cloud shaped like the real one: it stores feature settings, keeps every
//! upload channel with delta semantics and checks each record against the cloud's own rules
//! ([`cloudattach_sdk::rules`]), answers `status` for the features the test declares
//! ([`CloudFeature`]), serves `features` and `ext/<id>/records`, and records every
//! [`Host::cloud`] call and every finished upload ([`Host::open_sync`] …
//! [`RecordSink::finish`], or [`Host::sync_records`]) so a test can assert what `apply` or
//! `sync` would send.
//!
//! Add it to a plugin crate's dev-dependencies (next to `cloudattach-sdk` in `[dependencies]`):
//!
//! ```toml
//! [dev-dependencies]
//! cloudattach-testkit = { path = "../cloudattach/testkit" }
//! ```
//!
//! ```
//! use cloudattach_testkit::{MemoryHost, device, resolved_options};
//! use cloudattach_sdk::*;
//!
//! struct Inventory;
//! impl Plugin for Inventory {
//!     fn manifest(&self) -> Manifest {
//!         Manifest::new("inventory", "Inventory", "0.1.0")
//!             .option(OptionSpec::boolean("servers", false, "Also servers"))
//!     }
//!     fn check(&self, _host: &dyn Host, _options: &Options) -> CheckReport { CheckReport::default() }
//!     fn sync(&self, host: &dyn Host, _o: &Options, mode: SyncMode) -> Result<Option<SyncStats>, HostError> {
//!         upload_from_devices(host, "ext/inventory", mode, DeviceParts::NONE, &mut |d| {
//!             Some(Record::new(d.resource_id.to_string(), serde_json::json!({ "name": d.name })))
//!         })
//!         .map(Some)
//!     }
//! }
//!
//! // The options as the core resolves them: the manifest's defaults filled in.
//! let options = resolved_options(&Inventory.manifest(), serde_json::json!({}));
//! assert_eq!(options["servers"], false);
//!
//! let host = MemoryHost::new(MemoryHost::sample_site())
//!     .with_devices([device(1), device(2)])
//!     .with_collection("PS100012", "Pilot", [2])
//!     .with_feature("inventory", options.clone())
//!     .with_cloud();
//! assert!(host.is_member("PS100012", 2));
//!
//! let stats = Inventory.sync(&host, &options, SyncMode::Delta).unwrap().unwrap();
//! assert_eq!(stats.sent, 2);
//! // Nothing changed: a second delta sends nothing.
//! let again = Inventory.sync(&host, &options, SyncMode::Delta).unwrap().unwrap();
//! assert_eq!(again.sent, 0);
//! assert_eq!(host.sync_calls().len(), 2);
//! assert_eq!(host.channel("ext/inventory")["1"]["name"], "PC-1");
//! // What the cloud's read API answers for the extension channel.
//! let records = host.cloud(Method::Get, "ext/inventory/records", None).unwrap();
//! assert_eq!(records["@odata.count"], 2);
//! ```

use cloudattach_sdk::gateway::{
    ExtRecord, ExtRecords, FeatureBody, FeatureInfo, FeatureList, HierarchyStatus, PluginStatus,
};
use cloudattach_sdk::rules::{Channel, validate_batch_keys, validate_record};
use cloudattach_sdk::{
    CollectionInfo, ConnectionPoint, Device, DeviceParts, Environment, Host, HostError, JoinType,
    Manifest, Method, Options, Record, RecordSink, SiteInfo, SiteVersion, SyncMode, SyncStats,
    validate_feature_id,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use cloudattach_sdk::ALL_SYSTEMS;

/// A valid device for table tests: a hybrid-joined Windows 10 22H2 workstation (build
/// 10.0.19045) with an active client 5.00.9106.1000, not MDM-enrolled, named `PC-{resource_id}`.
/// It is co-management `eligible`, Endpoint analytics eligible (with app reliability) and has no
/// `defender` or `analytics` block. Change fields with [`with`]:
///
/// ```
/// use cloudattach_sdk::JoinType;
/// use cloudattach_testkit::{device, with};
/// let d = with(device(7), |d| d.join_type = JoinType::Domain);
/// assert_eq!(d.name, "PC-7");
/// ```
pub fn device(resource_id: i64) -> Device {
    let mut d = Device::new(resource_id, format!("PC-{resource_id}"));
    d.client = true;
    d.client_version = Some("5.00.9106.1000".into());
    d.client_active = true;
    d.os = "Microsoft Windows NT Workstation 10.0".into();
    d.os_build = "10.0.19045".into();
    d.join_type = JoinType::Hybrid;
    d
}

/// `value` after `edit`: the struct update syntax (`Device { client: false, ..device(3) }`)
/// for the SDK's `#[non_exhaustive]` structs, which other crates cannot build with a literal.
///
/// ```
/// use cloudattach_testkit::{MemoryHost, device, with};
/// let server = with(device(4), |d| {
///     d.os = "Microsoft Windows NT Server 10.0".into();
///     d.client = false;
/// });
/// let offline = with(MemoryHost::sample_site(), |s| s.administration_service = false);
/// assert!(server.is_server() && !offline.administration_service);
/// ```
pub fn with<T>(mut value: T, edit: impl FnOnce(&mut T)) -> T {
    edit(&mut value);
    value
}

/// Turns a JSON object literal into [`Options`] as given; anything but an object gives empty
/// options. The manifest's defaults are *not* filled in: see [`resolved_options`].
///
/// ```
/// use cloudattach_testkit::options;
/// let o = options(serde_json::json!({ "upload": "PS100012" }));
/// assert_eq!(o["upload"], "PS100012");
/// ```
pub fn options(value: Value) -> Options {
    match value {
        Value::Object(map) => map,
        _ => Options::new(),
    }
}

/// The options a plugin gets for the `[features.<id>]` table `value`, as the core resolves
/// them against the plugin's manifest ([`Manifest::resolve_options`]): types checked and the
/// defaults filled in.
///
/// # Panics
///
/// If the manifest refuses the options (an unknown key, a wrong type): the core would refuse the
/// configuration before the plugin runs, so such a test has nothing to test. Test refusals with
/// [`Manifest::resolve_options`] itself.
///
/// ```
/// use cloudattach_sdk::{Manifest, OptionSpec};
/// use cloudattach_testkit::resolved_options;
/// let m = Manifest::new("x-feature", "X", "1.0.0").option(OptionSpec::integer("max", 5, "At most"));
/// assert_eq!(resolved_options(&m, serde_json::json!({}))["max"], 5);
/// assert_eq!(resolved_options(&m, serde_json::json!({ "max": 2 }))["max"], 2);
/// ```
pub fn resolved_options(manifest: &Manifest, value: Value) -> Options {
    match manifest.resolve_options(&options(value)) {
        Ok(resolved) => resolved,
        Err(findings) => panic!(
            "the manifest of `{}` refuses these options: {findings:?}",
            manifest.id
        ),
    }
}

/// One recorded [`Host::cloud`] call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CloudCall {
    /// The HTTP method.
    pub method: Method,
    /// The path relative to `/api/v1/hierarchies/{hid}/`.
    pub path: String,
    /// The request body, if any.
    pub body: Option<Value>,
}

/// One recorded upload: a [`Host::open_sync`] finished with [`RecordSink::finish`] (or a
/// [`Host::sync_records`] call). An upload dropped without `finish`, or refused by the cloud's
/// record rules, is not recorded.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

/// How one feature appears in the in-memory cloud's `status`, declared by the test with
/// [`MemoryHost::with_cloud_feature`]: which upload channel its `last_sync` follows, its counts
/// and its extra keys. A declared feature is listed whether enabled or not, as the real cloud
/// lists its built-in features; an undeclared feature is listed once enabled, as the real cloud
/// lists extension features (`counts: {"records": n}` of channel `ext/<id>`).
///
/// ```
/// use cloudattach_testkit::CloudFeature;
/// let tenant_attach = CloudFeature::new("tenant-attach")
///     .channel("devices")
///     .count_records("devices_uploaded", "devices");
/// let co_management = CloudFeature::new("co-management")
///     .channel("comanagement")
///     .count_where("devices_enrolled", "comanagement", "state", "comanaged");
/// let rbac = CloudFeature::new("rbac-authority").extra("effective_authority", |settings| {
///     serde_json::Value::from(if settings["enforce_configmgr_rbac"] == false { "intune" } else { "configmgr+intune" })
/// });
/// # let _ = (tenant_attach, co_management, rbac);
/// ```
pub struct CloudFeature {
    id: String,
    channel: Option<String>,
    counts: Vec<(String, Count)>,
    extras: Vec<(String, Extra)>,
}

type Extra = Box<dyn Fn(&Value) -> Value + Send + Sync>;

#[derive(Debug, Clone)]
enum Count {
    Records(String),
    Where {
        channel: String,
        field: String,
        value: Value,
    },
}

impl CloudFeature {
    /// A feature with no counts, no extra keys and no `last_sync`.
    pub fn new(id: &str) -> Self {
        CloudFeature {
            id: id.to_string(),
            channel: None,
            counts: vec![],
            extras: vec![],
        }
    }

    /// The feature's `last_sync` is the time of the last upload to `channel`.
    pub fn channel(mut self, channel: &str) -> Self {
        self.channel = Some(channel.to_string());
        self
    }

    /// A count `key`: the number of records `channel` holds.
    pub fn count_records(mut self, key: &str, channel: &str) -> Self {
        self.counts
            .push((key.to_string(), Count::Records(channel.to_string())));
        self
    }

    /// A count `key`: the number of records of `channel` whose top-level `field` is `value`.
    pub fn count_where(
        mut self,
        key: &str,
        channel: &str,
        field: &str,
        value: impl Into<Value>,
    ) -> Self {
        self.counts.push((
            key.to_string(),
            Count::Where {
                channel: channel.to_string(),
                field: field.to_string(),
                value: value.into(),
            },
        ));
        self
    }

    /// An extra key of the entry, computed from the settings the cloud holds for the feature
    /// (`null` when it is not enabled).
    pub fn extra(
        mut self,
        key: &str,
        compute: impl Fn(&Value) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.extras.push((key.to_string(), Box::new(compute)));
        self
    }
}

impl fmt::Debug for CloudFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudFeature")
            .field("id", &self.id)
            .field("channel", &self.channel)
            .field("counts", &self.counts)
            .field(
                "extras",
                &self.extras.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A stored record: its JSON (what delta compares against) and when it last changed.
#[derive(Debug, Clone)]
struct StoredRecord {
    json: String,
    updated: u64,
}

/// An enabled feature: its settings and when they were set.
#[derive(Debug, Clone)]
struct StoredFeature {
    settings: Value,
    enabled_at: u64,
    updated_at: u64,
}

/// The state of the in-memory cloud.
#[derive(Debug, Default)]
struct CloudState {
    /// Every enabled feature, by id.
    features: BTreeMap<String, StoredFeature>,
    /// Per channel: key → the stored record.
    channels: HashMap<String, BTreeMap<String, StoredRecord>>,
    /// Completed syncs of every channel: the in-memory cloud's clock.
    sync_sequence: u64,
    /// Per channel: the clock at its last completed sync, for `last_sync`.
    channel_syncs: HashMap<String, u64>,
    cloud_calls: Vec<CloudCall>,
    sync_calls: Vec<SyncCall>,
}

/// The in-memory cloud's time at tick `n`: 2026-01-01T00:00:00Z plus `n` seconds.
fn clock(n: u64) -> String {
    format!(
        "2026-01-01T{:02}:{:02}:{:02}Z",
        n / 3600 % 24,
        n / 60 % 60,
        n % 60
    )
}

/// An in-memory [`Host`] for tests. Build it with the `with_*` methods; see the
/// [crate documentation](crate) for an example.
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
    /// How the declared features appear in `status`, in the order declared.
    cloud_features: Vec<CloudFeature>,
    /// When set, every cloud call and sync fails with it (after being recorded).
    cloud_error: Option<HostError>,
    /// When set, every upload fails with it at `finish`; other cloud calls still work.
    upload_error: Option<HostError>,
    /// Canned answers that take precedence over the in-memory cloud, by (method, path).
    responses: Vec<(Method, String, Value)>,
    logs: Mutex<Vec<String>>,
    /// Timeline events by device (`None`: the host keeps no timeline).
    timeline: Option<BTreeMap<i64, Vec<cloudattach_sdk::TimelineEvent>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not hide the state from the assertions that follow.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryHost {
    /// A healthy site: code "PS1", version 2303, service connection point online,
    /// administration service working, Entra ID and AD user discovery both enabled.
    pub fn sample_site() -> SiteInfo {
        SiteInfo::new(
            "PS1",
            "Primary site",
            SiteVersion(2303),
            "6f1c1a52-3a1e-4b9c-9d33-0c2f5d7a9e10",
        )
        .with_service_connection_point(ConnectionPoint::Online)
        .with_administration_service(true)
        .with_user_discovery(true, true)
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
            cloud_features: vec![],
            cloud_error: None,
            upload_error: None,
            responses: vec![],
            logs: Mutex::new(vec![]),
            timeline: None,
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
    /// The options are taken as given; [`MemoryHost::with_resolved_feature`] fills in a
    /// manifest's defaults.
    pub fn with_feature(self, plugin_id: &str, options: Options) -> Self {
        self.set_feature(plugin_id, options);
        self
    }

    /// Selects the feature of `manifest` with the `[features.<id>]` table `value`, resolved
    /// against the manifest as the core does ([`resolved_options`]; panics if refused).
    pub fn with_resolved_feature(self, manifest: &Manifest, value: Value) -> Self {
        self.set_feature(&manifest.id, resolved_options(manifest, value));
        self
    }

    /// Selects a feature, or changes its options, on a built host — for a test that changes
    /// the configuration between two steps (e.g. narrowing tenant attach's `upload` scope
    /// between `apply` and `sync`).
    pub fn set_feature(&self, plugin_id: &str, options: Options) {
        lock(&self.features).insert(plugin_id.to_string(), options);
    }

    /// Turns on the in-memory recording cloud (the host `apply`, `sync`, `status` and `disable`
    /// get). It answers, relative to `/api/v1/hierarchies/{hierarchy id}/`:
    ///
    /// - `PUT`, `GET` and `DELETE features/{id}` and `GET features`: the feature settings it
    ///   holds (a `PUT` needs the body `{"settings": …}` and a valid feature id);
    /// - `GET status`: the features declared with [`MemoryHost::with_cloud_feature`], then
    ///   every other enabled feature, with a deterministic `last_sync` (the n-th upload of the
    ///   host happened at 2026-01-01T00:00:00Z plus n seconds);
    /// - `GET ext/{id}/records`: what the extension channel holds, as the cloud's read API;
    /// - uploads ([`Host::open_sync`]) with delta semantics, refusing (`http-400`, with the
    ///   cloud's message) a record or key the real cloud refuses in the channels it knows
    ///   ([`cloudattach_sdk::rules`]). The rules that depend on what the cloud holds — the
    ///   channel's feature enabled, analytics and Defender records of uploaded devices — are not
    ///   applied.
    ///
    /// Any other path answers an `http-404` error unless given with
    /// [`MemoryHost::with_response`].
    pub fn with_cloud(mut self) -> Self {
        if self.cloud.is_none() {
            self.cloud = Some(Mutex::new(CloudState::default()));
        }
        self
    }

    /// Declares how a feature appears in `status` (see [`CloudFeature`]); implies
    /// [`MemoryHost::with_cloud`]. Declaring an id again replaces the declaration.
    pub fn with_cloud_feature(mut self, feature: CloudFeature) -> Self {
        self.cloud_features.retain(|f| f.id != feature.id);
        self.cloud_features.push(feature);
        self.with_cloud()
    }

    /// Makes every cloud call fail with `error`, and every upload at [`RecordSink::finish`]
    /// (as a failed transfer would); calls and uploads are still recorded. Implies
    /// [`MemoryHost::with_cloud`].
    pub fn with_cloud_error(mut self, error: HostError) -> Self {
        self.cloud_error = Some(error);
        self.with_cloud()
    }

    /// Makes every upload fail with `error` at [`RecordSink::finish`] while the other cloud calls
    /// succeed: a feature that was enabled but whose first upload failed. Implies
    /// [`MemoryHost::with_cloud`].
    pub fn with_upload_error(mut self, error: HostError) -> Self {
        self.upload_error = Some(error);
        self.with_cloud()
    }

    /// A canned answer for `method path`, taking precedence over the in-memory cloud (for
    /// paths it does not know, e.g. a third-party plugin's own endpoints). Implies
    /// [`MemoryHost::with_cloud`].
    pub fn with_response(mut self, method: Method, path: &str, response: Value) -> Self {
        self.responses.push((method, path.to_string(), response));
        self.with_cloud()
    }

    /// A device's timeline event ([`Host::device_events`] answers with the events of the
    /// device given this way, newest first); without any, the host keeps no timeline and
    /// answers `no-timeline`, as the trait's default does.
    pub fn with_event(mut self, resource_id: i64, event: cloudattach_sdk::TimelineEvent) -> Self {
        self.timeline
            .get_or_insert_with(BTreeMap::new)
            .entry(resource_id)
            .or_default()
            .push(event);
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
                    .map(|(k, r)| (k.clone(), parse(&r.json)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The settings the cloud stores for a feature (`None` when not enabled).
    pub fn feature_settings(&self, plugin_id: &str) -> Option<Value> {
        self.cloud
            .as_ref()
            .and_then(|c| lock(c).features.get(plugin_id).map(|f| f.settings.clone()))
    }

    /// Every message passed to [`Host::log`].
    pub fn logs(&self) -> Vec<String> {
        lock(&self.logs).clone()
    }

    fn all_device_ids(&self) -> BTreeSet<i64> {
        lock(&self.devices).iter().map(|d| d.resource_id).collect()
    }

    /// The cloud's `status` document, shaped like the gateway's.
    fn status_document(&self, state: &CloudState) -> HierarchyStatus {
        let size = |channel: &str| state.channels.get(channel).map_or(0, |c| c.len() as u64);
        let matching = |channel: &str, field: &str, wanted: &Value| {
            state.channels.get(channel).map_or(0, |c| {
                c.values()
                    .filter(|r| parse(&r.json).get(field) == Some(wanted))
                    .count() as u64
            })
        };
        let last_sync = |channel: &str| state.channel_syncs.get(channel).map(|n| clock(*n));
        let mut plugins = vec![];
        for declared in &self.cloud_features {
            let stored = state.features.get(&declared.id);
            let settings = stored.map_or(Value::Null, |f| f.settings.clone());
            let mut entry = PluginStatus::new(&declared.id, stored.is_some())
                .with_settings(settings.clone())
                .with_last_sync(stored.and(declared.channel.as_deref()).and_then(last_sync));
            for (key, count) in &declared.counts {
                let n = match count {
                    Count::Records(channel) => size(channel),
                    Count::Where {
                        channel,
                        field,
                        value,
                    } => matching(channel, field, value),
                };
                entry = entry.with_count(key, n);
            }
            for (key, compute) in &declared.extras {
                entry = entry.with_extra(key, compute(&settings));
            }
            plugins.push(entry);
        }
        for (id, stored) in &state.features {
            if self.cloud_features.iter().any(|f| f.id == *id) {
                continue;
            }
            let channel = format!("ext/{id}");
            plugins.push(
                PluginStatus::new(id, true)
                    .with_count("records", size(&channel))
                    .with_settings(stored.settings.clone())
                    .with_last_sync(last_sync(&channel)),
            );
        }
        HierarchyStatus::new(&self.site.hierarchy_id, plugins)
    }

    /// One enabled feature as the gateway answers it; its `last_sync` is its declared channel's
    /// (an undeclared feature's channel is `ext/<id>`).
    fn feature_info(&self, id: &str, f: &StoredFeature, state: &CloudState) -> FeatureInfo {
        let channel = self
            .cloud_features
            .iter()
            .find(|d| d.id == id)
            .map_or_else(|| Some(format!("ext/{id}")), |d| d.channel.clone());
        FeatureInfo::new(id, f.settings.clone())
            .with_times(clock(f.enabled_at), clock(f.updated_at))
            .with_last_sync(
                channel
                    .and_then(|c| state.channel_syncs.get(&c))
                    .map(|n| clock(*n)),
            )
    }

    /// The cloud's read API for an extension channel.
    fn ext_records(state: &CloudState, id: &str) -> ExtRecords {
        let records = state
            .channels
            .get(&format!("ext/{id}"))
            .map(|c| {
                c.iter()
                    .map(|(k, r)| ExtRecord::new(k, parse(&r.json), clock(r.updated)))
                    .collect()
            })
            .unwrap_or_default();
        ExtRecords::new(records)
    }
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or(Value::Null)
}

/// A gateway document as the JSON the cloud answers (plain data: serializing cannot fail).
fn json(doc: &impl serde::Serialize) -> Value {
    serde_json::to_value(doc).unwrap_or(Value::Null)
}

fn not_found(method: Method, path: &str) -> HostError {
    HostError::new(
        "http-404",
        format!("{method:?} {path}: the in-memory cloud has no such resource"),
    )
}

/// The error the host gives for a request the real cloud answers `400`.
fn bad_request(method: Method, path: &str, message: impl fmt::Display) -> HostError {
    HostError::new(
        "http-400",
        format!(
            "{} {path}: 400 BadRequest: {message}",
            format!("{method:?}").to_uppercase()
        ),
    )
}

/// The in-memory cloud's end of one upload: checks each pushed record against the cloud's
/// rules, collects them, then applies them with delta semantics at `finish`.
struct MemorySink<'a> {
    cloud: &'a Mutex<CloudState>,
    error: Option<HostError>,
    channel: String,
    /// The channel as the cloud knows it, whose rules apply (`None`: a name it does not know).
    rules: Option<Channel>,
    mode: SyncMode,
    produced: Vec<Record>,
}

impl MemorySink<'_> {
    fn refused(&self, message: impl fmt::Display) -> HostError {
        bad_request(Method::Post, &format!("upload/{}", self.channel), message)
    }
}

impl RecordSink for MemorySink<'_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        if let Some(channel) = &self.rules {
            validate_record(channel, &record.key, &record.value.to_string())
                .map_err(|e| self.refused(e))?;
        }
        self.produced.push(record);
        Ok(())
    }

    fn finish(self: Box<Self>) -> Result<SyncStats, HostError> {
        if self.error.is_none() && self.rules.is_some() {
            validate_batch_keys(self.produced.iter().map(|r| r.key.as_str()), &[])
                .map_err(|e| self.refused(e))?;
        }
        let MemorySink {
            cloud,
            error,
            channel,
            mode,
            produced,
            ..
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
        let now = state.sync_sequence + 1;
        let stored = state.channels.entry(channel.clone()).or_default();
        let mut stats = SyncStats::default();
        let mut upserted_keys = vec![];
        let mut seen = BTreeSet::new();
        for record in &produced {
            let serialized = record.value.to_string();
            seen.insert(record.key.clone());
            let changed = stored.get(&record.key).map(|r| &r.json) != Some(&serialized);
            if changed {
                stats.upserted += 1;
                stored.insert(
                    record.key.clone(),
                    StoredRecord {
                        json: serialized,
                        updated: now,
                    },
                );
            } else {
                stats.unchanged += 1;
            }
            // A full sync sends every record; the cloud still only counts real changes.
            if changed || mode == SyncMode::Full {
                stats.sent += 1;
                upserted_keys.push(record.key.clone());
            }
        }
        let deleted_keys: Vec<String> = stored
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in &deleted_keys {
            stored.remove(key);
        }
        stats.deleted = deleted_keys.len() as u64;
        stats.sent += stats.deleted;
        stats.total = stored.len() as u64;
        state.sync_sequence = now;
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

    fn for_each_device_with(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(&Device),
    ) -> Result<(), HostError> {
        // Like the core's host, the blocks not asked for are left out: a plugin that reads a
        // block it did not ask for fails here as it would on a real site.
        let snapshot = self.devices();
        for d in &snapshot {
            visit(&d.with_parts(parts));
        }
        Ok(())
    }

    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        if let Some((name, members)) = self.collections.get(id) {
            return Some(CollectionInfo::new(id, name.clone(), members.len() as u64));
        }
        (id == ALL_SYSTEMS)
            .then(|| CollectionInfo::new(id, "All Systems", self.all_device_ids().len() as u64))
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

    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<cloudattach_sdk::TimelineEvent>, HostError> {
        let Some(timeline) = &self.timeline else {
            return Err(HostError::new(
                "no-timeline",
                "this host keeps no device timeline",
            ));
        };
        // RFC 3339 dates in UTC with the same precision compare as text.
        let mut events: Vec<_> = timeline
            .get(&resource_id)
            .into_iter()
            .flatten()
            .filter(|e| since.is_none_or(|s| e.at.as_str() >= s))
            .cloned()
            .collect();
        events.sort_by(|a, b| b.at.cmp(&a.at));
        Ok(events)
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
        match (method, path) {
            (Method::Get, "status") => return Ok(json(&self.status_document(&state))),
            (Method::Get, "features") => {
                let list = state
                    .features
                    .iter()
                    .map(|(id, f)| self.feature_info(id, f, &state))
                    .collect();
                return Ok(json(&FeatureList::new(list)));
            }
            _ => {}
        }
        if let Some(id) = path
            .strip_prefix("ext/")
            .and_then(|rest| rest.strip_suffix("/records"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
        {
            return match method {
                Method::Get => Ok(json(&Self::ext_records(&state, id))),
                _ => Err(not_found(method, path)),
            };
        }
        let Some(id) = path
            .strip_prefix("features/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
        else {
            return Err(not_found(method, path));
        };
        match method {
            Method::Put => {
                validate_feature_id(id)
                    .map_err(|e| bad_request(method, path, format!("feature id {id:?} {e}")))?;
                let settings = body
                    .and_then(|b| serde_json::from_value::<FeatureBody>(b.clone()).ok())
                    .and_then(|b| b.settings)
                    .ok_or_else(|| {
                        HostError::new(
                            "http-400",
                            format!("PUT {path}: the body must be {{\"settings\": ...}}"),
                        )
                    })?;
                let now = state.sync_sequence;
                let enabled_at = state.features.get(id).map_or(now, |f| f.enabled_at);
                let stored = StoredFeature {
                    settings,
                    enabled_at,
                    updated_at: now,
                };
                let answer = json(&self.feature_info(id, &stored, &state));
                state.features.insert(id.to_string(), stored);
                Ok(answer)
            }
            Method::Get => match state.features.get(id) {
                Some(f) => Ok(json(&self.feature_info(id, f, &state))),
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
            rules: Channel::parse(channel),
            mode,
            produced: vec![],
        }))
    }

    fn log(&self, message: &str) {
        lock(&self.logs).push(message.to_string());
    }
}

#[cfg(test)]
mod tests;

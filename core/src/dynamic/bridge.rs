//! The host bridge: the host's side of the protocol's `FfiHost`, the real [`Host`] behind JSON.

use abi_stable::std_types::{RErr, ROk, ROption, RResult, RStr, RString};
use cloudattach_plugin_protocol::{
    DeviceSink_TO, DeviceStreamRequest, FfiHost, RMut, host_error_to_json as err_json,
};
use cloudattach_sdk::{
    Device, Host, HostError, Method, Record, RecordSink, SyncMode, panic_message,
};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

/// The host's side of [`FfiHost`]: the real [`Host`] behind JSON. Every method catches panics
/// of the host's own code, which must not unwind through the library; every method of [`Host`]
/// reaches the real host (the boundary test below checks each one, through the SDK's adapter).
pub(super) struct HostBridge<'h> {
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

impl<'h> HostBridge<'h> {
    /// A bridge to `host` (`None` for the pure steps).
    pub(super) fn new(host: Option<&'h dyn Host>) -> Self {
        HostBridge {
            host,
            streams: RefCell::default(),
            next_stream: Cell::new(0),
            sinks: RefCell::default(),
            next_sink: Cell::new(0),
        }
    }
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
        request: RStr<'_>,
        mut sink: DeviceSink_TO<'_, RMut<'_, ()>>,
    ) -> RResult<(), RString> {
        let Some(host) = self.host else {
            return RErr(err_json(&no_host()));
        };
        let request: DeviceStreamRequest = match serde_json::from_str(request.as_str()) {
            Ok(r) => r,
            Err(e) => {
                return RErr(err_json(&HostError::new(
                    "plugin-boundary",
                    format!("unreadable device stream request {request}: {e}"),
                )));
            }
        };
        let size = request.batch.clamp(1, 100_000) as usize;
        let stream = self.next_stream.get() + 1;
        self.next_stream.set(stream);
        let result = guarded_result(|| {
            // Each device is written straight into the batch's JSON; its `is_uploaded` answer is
            // kept beside it, so the library asking about the device it is visiting costs a
            // lookup instead of a copy of the device.
            let mut json: Vec<u8> = Vec::with_capacity(size * 512);
            let mut sent: Vec<(i64, bool)> = Vec::with_capacity(size);
            // The extension data of the batch's devices that carry any (a device's own JSON never
            // holds it), for a library that reads `DeviceBatch` objects.
            let mut extensions: Vec<(u32, serde_json::Map<String, serde_json::Value>)> = vec![];
            let object = request.extension;
            let mut stopped = false;
            let mut failure: Option<HostError> = None;
            let mut flush = |json: &mut Vec<u8>,
                             sent: &mut Vec<(i64, bool)>,
                             extensions: &mut Vec<_>,
                             stopped: &mut bool| {
                if !*stopped && !sent.is_empty() {
                    json.push(b']');
                    if object {
                        if !extensions.is_empty() {
                            json.extend_from_slice(b",\"extensions\":");
                            let _ = serde_json::to_writer(&mut *json, &*extensions);
                        }
                        json.push(b'}');
                    }
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
                extensions.clear();
            };
            let mut visit = |d: &Device| {
                if stopped {
                    return;
                }
                if sent.is_empty() {
                    json.extend_from_slice(if object { b"{\"devices\":[" } else { b"[" });
                } else {
                    json.push(b',');
                }
                if let Err(e) = serde_json::to_writer(&mut json, d) {
                    failure = Some(HostError::new(
                        "plugin-boundary",
                        format!("cannot send device {}: {e}", d.resource_id),
                    ));
                    stopped = true;
                    return;
                }
                if object && !d.extension.is_empty() {
                    extensions.push((sent.len() as u32, d.extension.clone()));
                }
                sent.push((d.resource_id, host.is_uploaded(d)));
                if sent.len() >= size {
                    flush(&mut json, &mut sent, &mut extensions, &mut stopped);
                }
            };
            // The parts asked for travel with the request: a plugin that needs no Defender or
            // analytics block gets the host's cheaper pass, as a linked plugin does.
            match request.parts {
                None => host.for_each_device(&mut visit),
                Some(parts) => host.for_each_device_with(parts, &mut visit),
            }?;
            flush(&mut json, &mut sent, &mut extensions, &mut stopped);
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

    fn memberships(&self, resource_id: i64) -> RString {
        guarded(RString::from("[]"), || {
            let list = self
                .host
                .map(|h| h.memberships(resource_id))
                .unwrap_or_default();
            serde_json::to_string(&list)
                .unwrap_or_else(|_| "[]".into())
                .into()
        })
    }

    fn device_events(&self, resource_id: i64, since: RStr<'_>) -> RResult<RString, RString> {
        let result = guarded_result(|| {
            let host = self.host.ok_or_else(no_host)?;
            let since = (!since.is_empty()).then_some(since.as_str());
            let events = host.device_events(resource_id, since)?;
            serde_json::to_string(&events)
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

#[cfg(test)]
mod tests {
    //! The boundary forwards every `Host` method: a recording host behind the bridge, the SDK's
    //! library-side adapter in front of it, every method called through the adapter, and each
    //! call checked to reach the recording host with its arguments. The list of methods is
    //! checked against the `Host` trait's own source, so a method added to `Host` without
    //! forwarding (and without a case here) fails this test; clippy's `missing_trait_methods`
    //! on the adapter and on the recorder refuses a method left to its default.

    use super::*;
    use cloudattach_plugin_protocol::{FfiHost_TO, RRef, TD_Opaque};
    use cloudattach_sdk::dynamic::HostAdapter;
    use cloudattach_sdk::{
        CollectionInfo, ConnectionPoint, DefenderState, DeviceParts, Environment, Options,
        SiteInfo, SiteVersion, SyncStats,
    };
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    /// A call that reached the recording host, with its arguments.
    #[derive(Debug, Clone, PartialEq)]
    enum Call {
        Site,
        Environment,
        ForEachDevice,
        ForEachDeviceWith(DeviceParts),
        Collection(String),
        Collections,
        IsMember(String, i64),
        Memberships(i64),
        DeviceEvents(i64, Option<String>),
        FeatureOptions(String),
        IsUploaded(i64),
        Cloud(Method, String, Option<Value>),
        OpenSync(String, SyncMode),
        SyncRecords(String, SyncMode),
        Push(String),
        Finish,
        Log(String),
    }

    struct Recorder {
        calls: RefCell<Vec<Call>>,
        site: SiteInfo,
        devices: Vec<Device>,
    }

    impl Recorder {
        fn new() -> Self {
            let mut with_blocks = Device::new(2, "PC-2");
            with_blocks.client = true;
            with_blocks.defender = Some(DefenderState::default());
            with_blocks.analytics = Some(cloudattach_sdk::Analytics::default());
            with_blocks
                .extension
                .insert("bitlocker".into(), json!({ "recovery_key_escrowed": true }));
            Recorder {
                calls: RefCell::default(),
                site: SiteInfo::new("RC1", "Recorder", SiteVersion(2403), "hid")
                    .with_service_connection_point(ConnectionPoint::Offline),
                devices: vec![Device::new(1, "PC-1"), with_blocks],
            }
        }

        fn record(&self, call: Call) {
            self.calls.borrow_mut().push(call);
        }

        fn take(&self) -> Vec<Call> {
            std::mem::take(&mut self.calls.borrow_mut())
        }
    }

    struct RecordingSink<'a> {
        host: &'a Recorder,
    }

    impl RecordSink for RecordingSink<'_> {
        fn push(&mut self, record: Record) -> Result<(), HostError> {
            self.host.record(Call::Push(record.key));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<SyncStats, HostError> {
            self.host.record(Call::Finish);
            let mut stats = SyncStats::default();
            stats.total = 42;
            Ok(stats)
        }
    }

    // Every method, the provided ones included: a default here would answer for the host.
    #[deny(clippy::missing_trait_methods)]
    impl Host for Recorder {
        fn site(&self) -> &SiteInfo {
            self.record(Call::Site);
            &self.site
        }
        fn environment(&self) -> Environment {
            self.record(Call::Environment);
            Environment::Usgov
        }
        fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
            self.record(Call::ForEachDevice);
            self.devices.iter().for_each(visit);
            Ok(())
        }
        fn for_each_device_with(
            &self,
            parts: DeviceParts,
            visit: &mut dyn FnMut(&Device),
        ) -> Result<(), HostError> {
            self.record(Call::ForEachDeviceWith(parts));
            for d in &self.devices {
                visit(&d.with_parts(parts));
            }
            Ok(())
        }
        fn collection(&self, id: &str) -> Option<CollectionInfo> {
            self.record(Call::Collection(id.into()));
            Some(CollectionInfo::new(id, "Pilot", 7))
        }
        fn collections(&self) -> Vec<CollectionInfo> {
            self.record(Call::Collections);
            vec![CollectionInfo::new("SMS00001", "All Systems", 2)]
        }
        fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
            self.record(Call::IsMember(collection_id.into(), resource_id));
            true
        }
        fn memberships(&self, resource_id: i64) -> Vec<cloudattach_sdk::DeviceMembership> {
            self.record(Call::Memberships(resource_id));
            vec![cloudattach_sdk::DeviceMembership::new(
                "PS100012", "Pilot", false, "limited", "cut",
            )]
        }
        fn device_events(
            &self,
            resource_id: i64,
            since: Option<&str>,
        ) -> Result<Vec<cloudattach_sdk::TimelineEvent>, HostError> {
            self.record(Call::DeviceEvents(resource_id, since.map(String::from)));
            if resource_id == 0 {
                return Err(HostError::new("no-timeline", "none kept"));
            }
            Ok(vec![cloudattach_sdk::TimelineEvent::new(
                "2026-01-02T03:04:05Z",
                "action",
                json!({ "action": "resource-explorer" }),
            )])
        }
        fn feature_options(&self, plugin_id: &str) -> Option<Options> {
            self.record(Call::FeatureOptions(plugin_id.into()));
            json!({ "upload": "PS100012" }).as_object().cloned()
        }
        fn is_uploaded(&self, device: &Device) -> bool {
            self.record(Call::IsUploaded(device.resource_id));
            device.resource_id == 7
        }
        fn cloud(
            &self,
            method: Method,
            path: &str,
            body: Option<&Value>,
        ) -> Result<Value, HostError> {
            self.record(Call::Cloud(method, path.into(), body.cloned()));
            Ok(json!({ "answered": path }))
        }
        fn open_sync(
            &self,
            channel: &str,
            mode: SyncMode,
        ) -> Result<Box<dyn RecordSink + '_>, HostError> {
            self.record(Call::OpenSync(channel.into(), mode));
            Ok(Box::new(RecordingSink { host: self }))
        }
        fn sync_records(
            &self,
            channel: &str,
            records: &mut dyn Iterator<Item = Record>,
            mode: SyncMode,
        ) -> Result<SyncStats, HostError> {
            self.record(Call::SyncRecords(channel.into(), mode));
            let mut sink = self.open_sync(channel, mode)?;
            for r in records {
                sink.push(r)?;
            }
            sink.finish()
        }
        fn upload_devices(
            &self,
            channel: &str,
            mode: SyncMode,
            parts: DeviceParts,
            produce: &mut dyn FnMut(&Device) -> Option<Record>,
        ) -> Result<SyncStats, HostError> {
            // What the library's side does: the upload fed from the device stream.
            let mut sink = self.open_sync(channel, mode)?;
            self.for_each_device_with(parts, &mut |d| {
                if let Some(r) = produce(d) {
                    sink.push(r).expect("recording sink");
                }
            })?;
            sink.finish()
        }
        fn log(&self, message: &str) {
            self.record(Call::Log(message.into()));
        }
    }

    /// Batches as the library's side received them.
    struct Batches(Vec<String>);

    impl cloudattach_plugin_protocol::DeviceSink for Batches {
        fn accept(&mut self, _stream: u64, batch: RStr<'_>) -> bool {
            self.0.push(batch.to_string());
            true
        }
    }

    #[test]
    fn a_library_that_predates_extension_data_gets_the_plain_batches_it_reads() {
        let inner = Recorder::new();
        let bridge = HostBridge::new(Some(&inner));
        let stream = |request: &str| {
            let mut batches = Batches(vec![]);
            let sink = DeviceSink_TO::from_ptr(RMut::new(&mut batches), TD_Opaque);
            assert!(
                FfiHost::for_each_device(&bridge, RStr::from_str(request), sink)
                    .into_result()
                    .is_ok()
            );
            batches.0
        };
        // As a library built before `extension` existed asks: a JSON array of devices, which
        // its strict `Vec<Device>` reads.
        let old = stream(r#"{"batch":512}"#);
        assert_eq!(old.len(), 1);
        let devices: Vec<Device> = serde_json::from_str(&old[0]).unwrap();
        assert_eq!(devices.len(), 2);
        assert!(devices[1].extension.is_empty());
        // As this SDK asks: the same devices, with their extension data.
        let new = stream(r#"{"batch":512,"extension":true}"#);
        let devices = cloudattach_plugin_protocol::DeviceBatch::read(&new[0]).unwrap();
        assert_eq!(devices[1].extension, inner.devices[1].extension);
    }

    /// The methods of the `Host` trait, read from its source.
    fn host_methods() -> BTreeSet<String> {
        let source = include_str!("../../../sdk/src/host.rs");
        let start = source
            .find("pub trait Host {")
            .expect("the Host trait in sdk/src/host.rs");
        let body = &source[start..];
        let end = body.find("\n}\n").expect("the end of the Host trait");
        body[..end]
            .lines()
            .filter_map(|l| l.strip_prefix("    fn "))
            .map(|l| l.split(['(', '<']).next().unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn every_host_method_crosses_the_boundary_with_its_arguments() {
        let inner = Recorder::new();
        let bridge = HostBridge::new(Some(&inner));
        let ffi = FfiHost_TO::from_ptr(RRef::new(&bridge), TD_Opaque);
        let adapter = HostAdapter::new(&ffi).expect("the adapter reads the site");
        let host: &dyn Host = &adapter;
        // The site and the environment are read once, when the adapter is built.
        assert_eq!(inner.take(), [Call::Site, Call::Environment]);

        let record = |key: &str| Record::new(key, json!({ "k": key }));
        type Case<'a> = (&'static str, Box<dyn Fn() + 'a>, Vec<Call>);
        let cases: Vec<Case<'_>> = vec![
            (
                "site",
                Box::new(|| assert_eq!(host.site(), &inner.site)),
                vec![],
            ),
            (
                "environment",
                Box::new(|| assert_eq!(host.environment(), Environment::Usgov)),
                vec![],
            ),
            (
                "for_each_device",
                Box::new(|| {
                    let mut seen = vec![];
                    host.for_each_device(&mut |d| {
                        seen.push((
                            d.resource_id,
                            d.defender.is_some(),
                            d.extension_at("/bitlocker/recovery_key_escrowed").cloned(),
                        ))
                    })
                    .unwrap();
                    // The extension data crosses with its device.
                    assert_eq!(seen, [(1, false, None), (2, true, Some(json!(true)))]);
                }),
                // The bridge asks `is_uploaded` of each device it streams, once.
                vec![
                    Call::ForEachDevice,
                    Call::IsUploaded(1),
                    Call::IsUploaded(2),
                ],
            ),
            (
                "for_each_device_with",
                Box::new(|| {
                    let mut seen = vec![];
                    host.for_each_device_with(DeviceParts::ANALYTICS, &mut |d| {
                        seen.push((d.resource_id, d.defender.is_some(), d.analytics.is_some()))
                    })
                    .unwrap();
                    assert_eq!(seen, [(1, false, false), (2, false, true)]);
                    let mut extension = vec![];
                    host.for_each_device_with(DeviceParts::EXTENSION, &mut |d| {
                        extension.push((d.analytics.is_some(), d.extension.len()))
                    })
                    .unwrap();
                    assert_eq!(extension, [(false, 0), (false, 1)]);
                }),
                vec![
                    Call::ForEachDeviceWith(DeviceParts::ANALYTICS),
                    Call::IsUploaded(1),
                    Call::IsUploaded(2),
                    Call::ForEachDeviceWith(DeviceParts::EXTENSION),
                    Call::IsUploaded(1),
                    Call::IsUploaded(2),
                ],
            ),
            (
                "collection",
                Box::new(|| {
                    assert_eq!(
                        host.collection("PS100012"),
                        Some(CollectionInfo::new("PS100012", "Pilot", 7))
                    )
                }),
                vec![Call::Collection("PS100012".into())],
            ),
            (
                "collections",
                Box::new(|| assert_eq!(host.collections().len(), 1)),
                vec![Call::Collections],
            ),
            (
                "is_member",
                Box::new(|| assert!(host.is_member("PS100012", 7))),
                vec![Call::IsMember("PS100012".into(), 7)],
            ),
            (
                "memberships",
                Box::new(|| {
                    let m = host.memberships(7);
                    assert_eq!(
                        (m.len(), m[0].how.as_str(), m[0].member),
                        (1, "limited", false)
                    );
                }),
                vec![Call::Memberships(7)],
            ),
            (
                "device_events",
                Box::new(|| {
                    let events = host.device_events(7, Some("2026-01-01T00:00:00Z")).unwrap();
                    assert_eq!(
                        (
                            events.len(),
                            events[0].kind.as_str(),
                            &events[0].detail["action"]
                        ),
                        (1, "action", &json!("resource-explorer"))
                    );
                    assert_eq!(host.device_events(0, None).unwrap_err().code, "no-timeline");
                }),
                vec![
                    Call::DeviceEvents(7, Some("2026-01-01T00:00:00Z".into())),
                    Call::DeviceEvents(0, None),
                ],
            ),
            (
                "feature_options",
                Box::new(|| {
                    assert_eq!(
                        host.feature_options("tenant-attach").unwrap()["upload"],
                        "PS100012"
                    )
                }),
                vec![Call::FeatureOptions("tenant-attach".into())],
            ),
            (
                "is_uploaded",
                Box::new(|| {
                    let mut d = Device::new(7, "PC-7");
                    d.client = true;
                    assert!(host.is_uploaded(&d));
                }),
                vec![Call::IsUploaded(7)],
            ),
            (
                "cloud",
                Box::new(|| {
                    let body = json!({ "settings": { "upload": "all" } });
                    let answer = host
                        .cloud(Method::Put, "features/tenant-attach", Some(&body))
                        .unwrap();
                    assert_eq!(answer, json!({ "answered": "features/tenant-attach" }));
                }),
                vec![Call::Cloud(
                    Method::Put,
                    "features/tenant-attach".into(),
                    Some(json!({ "settings": { "upload": "all" } })),
                )],
            ),
            (
                "open_sync",
                Box::new(|| {
                    let mut sink = host.open_sync("ext/acme", SyncMode::Delta).unwrap();
                    sink.push(record("a")).unwrap();
                    assert_eq!(sink.finish().unwrap().total, 42);
                }),
                vec![
                    Call::OpenSync("ext/acme".into(), SyncMode::Delta),
                    Call::Push("a".into()),
                    Call::Finish,
                ],
            ),
            (
                "sync_records",
                Box::new(|| {
                    let stats = host
                        .sync_records(
                            "ext/acme",
                            &mut vec![record("a"), record("b")].into_iter(),
                            SyncMode::Full,
                        )
                        .unwrap();
                    assert_eq!(stats.total, 42);
                }),
                // The library's iterator cannot cross: the records come as the upload they make.
                vec![
                    Call::OpenSync("ext/acme".into(), SyncMode::Full),
                    Call::Push("a".into()),
                    Call::Push("b".into()),
                    Call::Finish,
                ],
            ),
            (
                "upload_devices",
                Box::new(|| {
                    let stats = host
                        .upload_devices("ext/acme", SyncMode::Delta, DeviceParts::NONE, &mut |d| {
                            Some(record(&d.resource_id.to_string()))
                        })
                        .unwrap();
                    assert_eq!(stats.total, 42);
                }),
                // The library's `produce` cannot cross: the devices come to the library and its
                // records go back as the upload they make.
                vec![
                    Call::OpenSync("ext/acme".into(), SyncMode::Delta),
                    Call::ForEachDeviceWith(DeviceParts::NONE),
                    Call::IsUploaded(1),
                    Call::IsUploaded(2),
                    Call::Push("1".into()),
                    Call::Push("2".into()),
                    Call::Finish,
                ],
            ),
            (
                "log",
                Box::new(|| host.log("hello")),
                vec![Call::Log("hello".into())],
            ),
        ];

        let exercised: BTreeSet<String> = cases.iter().map(|(m, _, _)| m.to_string()).collect();
        let declared = host_methods();
        assert_eq!(
            exercised, declared,
            "every `Host` method must cross the boundary: forward the missing ones in the SDK's \
             `HostAdapter` and the core's `HostBridge`, and add a case here"
        );
        for (method, call, expected) in &cases {
            call();
            assert_eq!(&inner.take(), expected, "Host::{method}");
        }

        // A device being visited is named by its place in the batch: `is_uploaded` is answered
        // from what the bridge asked while streaming, not asked again.
        host.for_each_device(&mut |d| {
            assert!(!host.is_uploaded(d), "{}", d.resource_id);
        })
        .unwrap();
        assert_eq!(
            inner.take(),
            [
                Call::ForEachDevice,
                Call::IsUploaded(1),
                Call::IsUploaded(2)
            ]
        );
    }
}

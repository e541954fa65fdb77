//! The host services the core offers plugins (`cloudattach_sdk::Host`) over an opened site.
//! The cloud half is plugged in by apply (a [`CloudPort`]); check and plan have none. A plugin
//! never gets these directly: the runner wraps them in the plugin's own view.

use crate::site::Site;
use cloudattach_sdk::{
    CollectionInfo, Device, DeviceParts, Environment, Host, HostError, Method, Options, RecordSink,
    SiteInfo, SyncMode,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The cloud side of the host: the attach gateway for one hierarchy.
pub trait CloudPort: Send + Sync {
    /// See [`Host::cloud`].
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError>;
    /// See [`Host::open_sync`]; `owner` is the plugin that uploads (empty when unknown), which
    /// the state records so that disabling the plugin forgets the channel.
    fn open_sync(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError>;
    /// See [`Host::log`].
    fn log(&self, message: &str);
}

/// A [`Host`] that can open an upload on behalf of a named plugin: what the plugin runner wraps
/// into each plugin's own view (the runner's `PluginHost`).
pub trait OwnedHost: Host + Sync {
    /// [`Host::open_sync`] for the plugin `owner`.
    fn open_sync_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError>;
}

/// Host services over a site, for one environment and selection.
pub struct SiteHost {
    site: Arc<Site>,
    environment: Environment,
    options: BTreeMap<String, Options>,
    upload_collection: Option<String>,
    cloud: Option<Arc<dyn CloudPort>>,
}

impl SiteHost {
    /// A host without a cloud connection (check, plan).
    ///
    /// `options` are the resolved options of the selected features; the upload scope comes
    /// from tenant-attach's `upload` in `scope_options` (defaults to all devices).
    pub fn new(
        site: Arc<Site>,
        environment: Environment,
        options: BTreeMap<String, Options>,
        scope_options: Option<&Options>,
    ) -> SiteHost {
        let upload_collection = scope_options
            .and_then(|o| o.get("upload"))
            .and_then(|v| v.as_str())
            .filter(|s| *s != "all")
            .map(String::from);
        SiteHost {
            site,
            environment,
            options,
            upload_collection,
            cloud: None,
        }
    }

    /// Connects the cloud half.
    pub fn with_cloud(mut self, cloud: Arc<dyn CloudPort>) -> SiteHost {
        self.cloud = Some(cloud);
        self
    }

    /// The site.
    pub fn site_ref(&self) -> &Arc<Site> {
        &self.site
    }
}

impl Host for SiteHost {
    fn site(&self) -> &SiteInfo {
        &self.site.info
    }
    fn environment(&self) -> Environment {
        self.environment
    }
    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        let mut read = crate::report::DeviceCounter::new();
        self.site
            .for_each_device(&mut |d| {
                visit(d);
                read.one();
            })
            .map_err(|e| HostError::new("site-unreadable", e.to_string()))
    }
    fn for_each_device_with(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(&Device),
    ) -> Result<(), HostError> {
        let mut read = crate::report::DeviceCounter::new();
        self.site
            .for_each_device_parts(parts, &mut |d| {
                visit(&d);
                read.one();
            })
            .map_err(|e| HostError::new("site-unreadable", e.to_string()))
    }
    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        self.site.collection(id)
    }
    fn collections(&self) -> Vec<CollectionInfo> {
        self.site
            .collection_ids()
            .filter_map(|id| self.site.collection(id))
            .collect()
    }
    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.site.is_member(collection_id, resource_id)
    }
    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        self.options.get(plugin_id).cloned()
    }
    fn is_uploaded(&self, device: &Device) -> bool {
        device.client
            && match &self.upload_collection {
                None => true,
                Some(c) => self.site.is_member(c, device.resource_id),
            }
    }
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        match &self.cloud {
            Some(c) => c.cloud(method, path, body),
            None => Err(HostError::offline()),
        }
    }
    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        self.open_sync_as("", channel, mode)
    }
    fn log(&self, message: &str) {
        match &self.cloud {
            Some(c) => c.log(message),
            None => tracing::info!("{message}"),
        }
    }
}

impl OwnedHost for SiteHost {
    fn open_sync_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        match &self.cloud {
            Some(c) => c.open_sync(owner, channel, mode),
            None => Err(HostError::offline()),
        }
    }
}

/// Devices per chunk of a shared pass.
const SHARED_PASS_CHUNK: usize = 2048;
/// Chunks buffered per consumer: bounds a shared pass's memory.
const SHARED_PASS_DEPTH: usize = 4;

type Chunk = Result<Arc<Vec<Device>>, HostError>;

/// One pass over the inventory feeding several plugins that run concurrently (check, plan): the
/// file is read and parsed once, and each consumer's first [`Host::for_each_device`] takes its
/// devices from the pass. A consumer that streams again, or never, costs nothing extra: a second
/// call reads the file itself, and a consumer that drops its host leaves the pass.
pub fn shared_pass<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    site: Arc<Site>,
    consumers: usize,
) -> Vec<std::sync::mpsc::Receiver<Chunk>> {
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..consumers)
        .map(|_| std::sync::mpsc::sync_channel::<Chunk>(SHARED_PASS_DEPTH))
        .unzip();
    scope.spawn(move || {
        let mut senders: Vec<Option<std::sync::mpsc::SyncSender<Chunk>>> =
            senders.into_iter().map(Some).collect();
        let broadcast =
            |chunk: Chunk, senders: &mut Vec<Option<std::sync::mpsc::SyncSender<Chunk>>>| {
                for slot in senders.iter_mut() {
                    if let Some(tx) = slot
                        && tx.send(chunk.clone()).is_err()
                    {
                        *slot = None;
                    }
                }
            };
        let mut chunk = Vec::with_capacity(SHARED_PASS_CHUNK);
        let result = site.for_each_device_owned(&mut |d| {
            chunk.push(d);
            if chunk.len() == SHARED_PASS_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SHARED_PASS_CHUNK));
                broadcast(Ok(Arc::new(full)), &mut senders);
            }
        });
        match result {
            Ok(()) if !chunk.is_empty() => broadcast(Ok(Arc::new(chunk)), &mut senders),
            Ok(()) => {}
            Err(e) => broadcast(
                Err(HostError::new("site-unreadable", e.to_string())),
                &mut senders,
            ),
        }
    });
    receivers
}

/// A [`SiteHost`] whose first device stream comes from a [`shared_pass`].
pub struct PassHost<'a> {
    inner: &'a SiteHost,
    pass: std::sync::Mutex<Option<std::sync::mpsc::Receiver<Chunk>>>,
}

impl<'a> PassHost<'a> {
    /// Wraps `inner`, taking devices from `pass` on the first stream.
    pub fn new(inner: &'a SiteHost, pass: std::sync::mpsc::Receiver<Chunk>) -> Self {
        PassHost {
            inner,
            pass: std::sync::Mutex::new(Some(pass)),
        }
    }
}

impl Host for PassHost<'_> {
    fn site(&self) -> &SiteInfo {
        self.inner.site()
    }
    fn environment(&self) -> Environment {
        self.inner.environment()
    }
    fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), HostError> {
        let pass = self.pass.lock().ok().and_then(|mut p| p.take());
        let Some(rx) = pass else {
            return self.inner.for_each_device(visit);
        };
        for chunk in rx {
            let chunk = chunk?;
            for d in chunk.iter() {
                visit(d);
            }
            crate::report::devices_read(chunk.len() as u64);
        }
        Ok(())
    }
    fn collection(&self, id: &str) -> Option<CollectionInfo> {
        self.inner.collection(id)
    }
    fn collections(&self) -> Vec<CollectionInfo> {
        self.inner.collections()
    }
    fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.inner.is_member(collection_id, resource_id)
    }
    fn feature_options(&self, plugin_id: &str) -> Option<Options> {
        self.inner.feature_options(plugin_id)
    }
    fn is_uploaded(&self, device: &Device) -> bool {
        self.inner.is_uploaded(device)
    }
    fn cloud(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value, HostError> {
        self.inner.cloud(method, path, body)
    }
    fn open_sync(
        &self,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        self.inner.open_sync(channel, mode)
    }
    fn log(&self, message: &str) {
        self.inner.log(message)
    }
}

impl OwnedHost for PassHost<'_> {
    fn open_sync_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        self.inner.open_sync_as(owner, channel, mode)
    }
}

//! The host services the core offers plugins (`cloudattach_sdk::Host`) over an opened site.
//! The cloud half is plugged in by apply (a [`CloudPort`]); check and plan have none. A plugin
//! never gets these directly: the runner wraps them in the plugin's own view.

use crate::lines::LineIndex;
use crate::site::{ChangedLines, Site, SiteError};
use crate::state::StateStore;
use cloudattach_sdk::{
    CollectionInfo, Device, DeviceMembership, DeviceParts, Environment, Host, HostError, Method,
    Options, Record, RecordSink, SiteInfo, SyncMode, SyncStats, TimelineEvent,
};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// An upload whose records are made from inventory lines (what the sync engine opens for
/// [`Host::upload_devices`]): each record comes with the hash of its line, and a delta may
/// leave the lines the ledger already reflects unread.
pub trait LineSink {
    /// Adds a record made from the line whose hash is `line`.
    fn push_line(&mut self, line: u64, record: Record) -> Result<(), HostError>;
    /// In a delta that may leave lines unread, the lines to read anyway (their records the
    /// cloud lost or holds otherwise); `None` when every line must be read.
    fn must_read(&self) -> Option<&HashSet<u64>>;
    /// Sends what is left and deletes every key acknowledged before and not pushed again,
    /// except those made from a line `kept` says was left unread; `gone` lists the lines of the
    /// line index no longer in the file (`(line hash, resource_id)`; empty when the pass read
    /// every line).
    fn finish_lines(
        self: Box<Self>,
        kept: &dyn Fn(u64) -> bool,
        gone: &[(u64, i64)],
    ) -> Result<SyncStats, HostError>;
}

/// A plain upload as a [`LineSink`] that reads every line.
struct EveryLine<'a>(Box<dyn RecordSink + 'a>);

impl LineSink for EveryLine<'_> {
    fn push_line(&mut self, _line: u64, record: Record) -> Result<(), HostError> {
        self.0.push(record)
    }
    fn must_read(&self) -> Option<&HashSet<u64>> {
        None
    }
    fn finish_lines(
        self: Box<Self>,
        _kept: &dyn Fn(u64) -> bool,
        _gone: &[(u64, i64)],
    ) -> Result<SyncStats, HostError> {
        self.0.finish()
    }
}

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
    /// [`CloudPort::open_sync`] for records made from inventory lines; `indexed`: the caller
    /// holds a line index covering the channel. The default reads every line.
    fn open_line_sync(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        _indexed: bool,
    ) -> Result<Box<dyn LineSink + '_>, HostError> {
        Ok(Box::new(EveryLine(self.open_sync(owner, channel, mode)?)))
    }
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
    /// [`Host::upload_devices`] for the plugin `owner`.
    fn upload_devices_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError>;
}

/// What one sync round knows of the inventory's lines: the index the last complete round left
/// (when its fingerprint matches this round's), and what this round's passes find, from which
/// the next index is made.
#[derive(Debug, Default)]
pub struct LineRound {
    index: Option<LineIndex>,
    claimed: AtomicBool,
    /// `(line hash, resource_id)` of every valid line, from the first complete pass.
    collected: Mutex<Option<Collected>>,
    /// `(lines, wrapping sum of their hashes)` of each complete pass: all must agree (the file
    /// did not change during the round) for the round to leave an index.
    passes: Mutex<Vec<(u64, u64)>>,
    /// Channels that uploaded from lines this round.
    channels: Mutex<Vec<String>>,
    /// A device id on two lines was seen in a pass that left lines unread.
    doubtful: AtomicBool,
    /// The most lines a pass left unread.
    unread: AtomicU64,
    /// The most lines a pass read.
    read: AtomicU64,
    /// The round's one read of the file for the index: made by the first channel that needs it
    /// (the others wait for it), `None` inside when the file cannot be read that way.
    scan: Mutex<Option<Option<Arc<RoundScan>>>>,
}

/// The lines a round's first complete pass saw, for the next index.
#[derive(Debug)]
enum Collected {
    /// Every line, `(hash, resource_id)`, as read.
    All(Vec<(u64, i64)>),
    /// By position, whether each of the index's lines is still in the file; and the lines
    /// read.
    Indexed {
        seen: Vec<bool>,
        read: Vec<(u64, i64)>,
    },
}

/// What the round's one read of the file found: the lines the index does not hold, and which of
/// the index's lines are still there.
#[derive(Debug)]
struct RoundScan {
    changed: ChangedLines,
    /// By position in the index: the line is still in the file.
    seen: Vec<bool>,
}

impl LineRound {
    /// A round that may leave the lines of `index` unread.
    pub fn new(index: Option<LineIndex>) -> LineRound {
        LineRound {
            index,
            ..LineRound::default()
        }
    }

    /// Lines the previous round left, if its index is used.
    pub fn indexed(&self) -> Option<u64> {
        self.index.as_ref().map(|i| i.len() as u64)
    }

    /// The most lines a pass of the round left unread, and the most it read.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.unread.load(Ordering::Relaxed),
            self.read.load(Ordering::Relaxed),
        )
    }

    /// The index the next round may use: `None` unless every pass saw the same lines and no
    /// device id was in doubt.
    pub fn into_index(self, fingerprint: u64) -> Option<LineIndex> {
        if self.doubtful.into_inner() {
            return None;
        }
        let passes = self.passes.into_inner().ok()?;
        let first = *passes.first()?;
        if passes.iter().any(|p| *p != first) {
            return None;
        }
        let lines = match self.collected.into_inner().ok()?? {
            Collected::All(lines) => lines,
            // The index's own entries, less the lines gone, and the lines read: the next index
            // is built in the memory of this one.
            Collected::Indexed { seen, read } => {
                let mut lines = self.index?.into_entries();
                let mut at = 0;
                lines.retain(|_| {
                    at += 1;
                    seen[at - 1]
                });
                lines.extend(read);
                lines
            }
        };
        let mut channels = self.channels.into_inner().ok()?;
        channels.sort();
        channels.dedup();
        Some(LineIndex::new(fingerprint, channels, lines))
    }
}

/// Host services over a site, for one environment and selection.
pub struct SiteHost {
    site: Arc<Site>,
    environment: Environment,
    options: BTreeMap<String, Options>,
    upload_collection: Option<String>,
    cloud: Option<Arc<dyn CloudPort>>,
    round: Option<Arc<LineRound>>,
    timeline: Option<Arc<Mutex<StateStore>>>,
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
            round: None,
            timeline: None,
        }
    }

    /// Serves the device timeline ([`Host::device_events`]) from this state.
    pub fn with_timeline(mut self, state: Arc<Mutex<StateStore>>) -> SiteHost {
        self.timeline = Some(state);
        self
    }

    /// Uploads made from lines take part in `round` (a sync round's line index).
    pub fn with_round(mut self, round: Arc<LineRound>) -> SiteHost {
        self.round = Some(round);
        self
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
    fn memberships(&self, resource_id: i64) -> Vec<DeviceMembership> {
        self.site.device_memberships(resource_id)
    }
    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<TimelineEvent>, HostError> {
        let Some(state) = &self.timeline else {
            return Err(HostError::new(
                "no-timeline",
                "the device timeline is served by the connector (`cloudattach connect`), which reads the state",
            ));
        };
        let since = match since {
            Some(s) => Some(crate::state::parse_rfc3339_ms(s).ok_or_else(|| {
                HostError::new("bad-since", format!("\"{s}\" is not an RFC 3339 date"))
            })?),
            None => None,
        };
        state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .device_events(resource_id, since)
            .map_err(|e| HostError::new("state", e.to_string()))
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
    fn upload_devices(
        &self,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        self.upload_devices_as("", channel, mode, parts, produce)
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

    /// One pass of the inventory for one channel. In a delta whose round holds the last
    /// complete round's line index, a line the index holds is left unparsed (its records are
    /// in the ledger already) unless the ledger says its records must be sent again; the
    /// upload keeps the records of the lines left unread and deletes those of lines gone.
    fn upload_devices_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        let Some(cloud) = &self.cloud else {
            return Err(HostError::offline());
        };
        let round = self.round.as_deref();
        let index = round
            .and_then(|r| r.index.as_ref())
            .filter(|i| i.covers(channel));
        let mut sink = cloud.open_line_sync(owner, channel, mode, index.is_some())?;
        let skipping = match (index, sink.must_read()) {
            (Some(index), Some(must_read)) => Some((index, must_read.clone())),
            _ => None,
        };
        // Without lines to read again for this channel, the round's one read of the file says
        // which lines changed: the channel reads those where they are.
        let listed =
            match (&skipping, round) {
                (Some((_, must_read)), Some(round)) if must_read.is_empty() => round
                    .scan(&self.site)
                    .map_err(|e| HostError::new("site-unreadable", e.to_string()))?,
                _ => None,
            };
        let mut seen = match &listed {
            Some(scan) => scan.seen.clone(),
            None => vec![false; skipping.as_ref().map_or(0, |(i, _)| i.len())],
        };
        let unread = AtomicU64::new(listed.as_ref().map_or(0, |l| l.changed.unchanged()));
        let collect = round.is_some_and(LineRound::claim);
        let mut lines: Vec<(u64, i64)> = Vec::new();
        let (mut count, mut sum) = (0u64, 0u64);
        let mut parsed_ids: HashSet<i64> = HashSet::new();
        let mut doubtful = false;
        let mut failed: Option<HostError> = None;
        let mut read = crate::report::DeviceCounter::new();
        let mut reported_unread = 0u64;
        let mut visit = |h: u64, d: Device| {
            read.one();
            let now = unread.load(Ordering::Relaxed);
            crate::report::devices_read(now - reported_unread);
            reported_unread = now;
            if skipping.is_some() && !parsed_ids.insert(d.resource_id) {
                // Two changed lines with one device id: the first is the device, as in a
                // pass that reads everything.
                doubtful = true;
                return;
            }
            count += 1;
            sum = sum.wrapping_add(h);
            if collect {
                lines.push((h, d.resource_id));
            }
            if failed.is_none()
                && let Some(record) = produce(&d)
            {
                failed = sink.push_line(h, record).err();
            }
        };
        let listed_read = match &listed {
            Some(scan) => self
                .site
                .for_each_listed_device(parts, &scan.changed, &mut visit),
            None => Ok(false),
        };
        let result = match listed_read {
            Ok(true) => Ok(()),
            Ok(false) => {
                // No scan, or the file changed since it: read every line of it as it is now.
                if listed.is_some() {
                    seen.fill(false);
                    unread.store(0, Ordering::Relaxed);
                }
                let mut unparsed = |h: u64| -> bool {
                    let Some((index, must_read)) = &skipping else {
                        return false;
                    };
                    match index.find(h) {
                        Some(at) if !must_read.contains(&h) => {
                            seen[at] = true;
                            unread.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        _ => false,
                    }
                };
                self.site.for_each_line_device(
                    parts,
                    skipping
                        .is_some()
                        .then_some(&mut unparsed as &mut (dyn FnMut(u64) -> bool + Send)),
                    &mut visit,
                )
            }
            Err(e) => Err(e),
        };
        let now = unread.load(Ordering::Relaxed);
        crate::report::devices_read(now - reported_unread);
        drop(read);
        result.map_err(|e| HostError::new("site-unreadable", e.to_string()))?;
        if let Some(e) = failed {
            return Err(e);
        }
        // The lines left unread: their entries, and whether a changed line took the id of one.
        if let Some((index, _)) = &skipping {
            for (at, _) in seen.iter().enumerate().filter(|(_, s)| **s) {
                let (h, rid) = index.entry(at);
                count += 1;
                sum = sum.wrapping_add(h);
                doubtful |= parsed_ids.contains(&rid);
            }
        }
        let kept = |line: u64| {
            skipping
                .as_ref()
                .and_then(|(index, _)| index.find(line))
                .is_some_and(|at| seen[at])
        };
        // The index's lines no longer in the file: the records made from them go.
        let gone: Vec<(u64, i64)> = match &skipping {
            Some((index, _)) => seen
                .iter()
                .enumerate()
                .filter(|(_, s)| !**s)
                .map(|(at, _)| index.entry(at))
                .collect(),
            None => Vec::new(),
        };
        let stats = sink.finish_lines(&kept, &gone)?;
        if let Some(round) = round {
            if doubtful {
                self.log(&format!(
                    "{channel}: a device id appears on more than one line of devices.jsonl; the next sync reads every line"
                ));
            }
            let collected = match &skipping {
                Some(_) => Collected::Indexed {
                    seen: seen.clone(),
                    read: lines,
                },
                None => Collected::All(lines),
            };
            round.passed(
                channel,
                doubtful,
                now,
                count,
                sum,
                collect.then_some(collected),
            );
        }
        Ok(stats)
    }
}

impl LineRound {
    /// Records a complete pass of one channel's upload.
    fn passed(
        &self,
        channel: &str,
        doubtful: bool,
        unread: u64,
        lines: u64,
        sum: u64,
        collected: Option<Collected>,
    ) {
        if doubtful {
            self.doubtful.store(true, Ordering::SeqCst);
        }
        self.unread.fetch_max(unread, Ordering::Relaxed);
        self.read
            .fetch_max(lines - unread.min(lines), Ordering::Relaxed);
        if let Ok(mut p) = self.passes.lock() {
            p.push((lines, sum));
        }
        if let Some(c) = collected
            && let Ok(mut slot) = self.collected.lock()
        {
            *slot = Some(c);
        }
        if let Ok(mut c) = self.channels.lock() {
            c.push(channel.to_string());
        }
    }

    /// Whether this pass collects the lines (the first to ask does).
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::SeqCst)
    }

    /// The channels the index covers (those that uploaded from its lines).
    pub fn indexed_channels(&self) -> &[String] {
        self.index.as_ref().map_or(&[], |i| &i.channels)
    }

    /// Makes the round's one read of the file now (what the first channel that needs it would
    /// do), so it overlaps with the uploads opening; errors are left for that channel to meet.
    pub fn scan_ahead(&self, site: &Site) {
        let _ = self.scan(site);
    }

    /// The round's read of the file against the index (made once, by the first to ask).
    fn scan(&self, site: &Site) -> Result<Option<Arc<RoundScan>>, SiteError> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let mut slot = self
            .scan
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(done) = &*slot {
            return Ok(done.clone());
        }
        let mut seen = vec![false; index.len()];
        let changed = site.changed_lines(&mut |h| match index.find(h) {
            Some(at) => {
                seen[at] = true;
                true
            }
            None => false,
        })?;
        let done = changed.map(|changed| Arc::new(RoundScan { changed, seen }));
        *slot = Some(done.clone());
        Ok(done)
    }
}

/// Devices per chunk of a shared pass.
const SHARED_PASS_CHUNK: usize = 2048;
/// Chunks buffered per consumer: bounds a shared pass's memory.
const SHARED_PASS_DEPTH: usize = 4;

/// Devices of a shared pass with the hashes of their lines (0 when the pass does not hash).
type Chunk = Result<Arc<Vec<(u64, Device)>>, HostError>;

/// One pass over the inventory feeding several plugins that run concurrently (check, plan): the
/// file is read and parsed once, and each consumer's first [`Host::for_each_device`] takes its
/// devices from the pass. A consumer that streams again, or never, costs nothing extra: a second
/// call reads the file itself, and a consumer that drops its host leaves the pass.
pub fn shared_pass<'scope, 'env>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    site: Arc<Site>,
    consumers: usize,
    hash_lines: bool,
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
        let mut each = |h: u64, d: Device| {
            chunk.push((h, d));
            if chunk.len() == SHARED_PASS_CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SHARED_PASS_CHUNK));
                broadcast(Ok(Arc::new(full)), &mut senders);
            }
        };
        let result = if hash_lines {
            site.for_each_line_device(DeviceParts::ALL, None, &mut each)
        } else {
            site.for_each_device_owned(&mut |d| each(0, d))
        };
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
            for (_, d) in chunk.iter() {
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
    fn memberships(&self, resource_id: i64) -> Vec<DeviceMembership> {
        self.inner.memberships(resource_id)
    }
    fn device_events(
        &self,
        resource_id: i64,
        since: Option<&str>,
    ) -> Result<Vec<TimelineEvent>, HostError> {
        self.inner.device_events(resource_id, since)
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
    fn upload_devices(
        &self,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        self.upload_devices_as("", channel, mode, parts, produce)
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

    /// From the shared pass, every line read (a round that leaves lines unread gives each
    /// upload its own pass); a second upload reads the file itself.
    fn upload_devices_as(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        parts: DeviceParts,
        produce: &mut dyn FnMut(&Device) -> Option<Record>,
    ) -> Result<SyncStats, HostError> {
        let pass = self.pass.lock().ok().and_then(|mut p| p.take());
        let (Some(rx), Some(cloud)) = (pass, &self.inner.cloud) else {
            return self
                .inner
                .upload_devices_as(owner, channel, mode, parts, produce);
        };
        let mut sink = cloud.open_line_sync(owner, channel, mode, false)?;
        let round = self.inner.round.as_deref();
        let collect = round.is_some_and(LineRound::claim);
        let mut lines: Vec<(u64, i64)> = Vec::new();
        let (mut count, mut sum) = (0u64, 0u64);
        let mut failed: Option<HostError> = None;
        for chunk in rx {
            let chunk = chunk?;
            for (h, d) in chunk.iter() {
                count += 1;
                sum = sum.wrapping_add(*h);
                if collect {
                    lines.push((*h, d.resource_id));
                }
                if failed.is_none()
                    && let Some(record) = produce(d)
                {
                    failed = sink.push_line(*h, record).err();
                }
            }
            crate::report::devices_read(chunk.len() as u64);
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let stats = sink.finish_lines(&|_| false, &[])?;
        if let Some(round) = round {
            round.passed(
                channel,
                false,
                0,
                count,
                sum,
                collect.then_some(Collected::All(lines)),
            );
        }
        Ok(stats)
    }
}

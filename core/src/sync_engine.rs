//! The delta-sync engine: for one channel, hashes each record (xxh3 of its JSON), keeps the
//! changed ones, sends them in compressed batches with a few requests in flight, and records
//! every acknowledged batch in the hash ledger before counting it. Keys acknowledged before but
//! not pushed this time are sent as deletions.
//!
//! Before a channel's delta, the engine compares the cloud's census of the channel (how many
//! records, a digest of their keys and of the hash of each record's JSON bytes as they were
//! sent) with its ledger. When they differ — the cloud dropped dependent records with their
//! devices, someone deleted or changed records in the tenant, the state is another directory's
//! or was lost — it reads the keys and hashes the cloud holds and reconciles the ledger with
//! them first: a key the cloud lost is sent again, a record whose hash the cloud records
//! differently (someone else wrote it) is sent again, a key the cloud holds that the ledger
//! does not know is sent again or deleted. So every sync converges on what the site says the
//! cloud should hold, whatever happened to the cloud since the last one.
//!
//! It knows neither HTTP nor SQLite: batches go to an [`UploadTarget`] (the session's gateway in
//! the product) and acknowledged hashes to a [`HashLedger`] (the state store), so it is tested
//! with an in-memory target and ledger.

use crate::report::{DevicesRead, Progress, count_devices_read};
use crate::state::{StateError, StateStore};
use cloudattach_sdk::gateway::{ChannelCensus, KeyDigest, UNKNOWN_SENT_HASH, UploadAnswer};
use cloudattach_sdk::{HostError, Record, RecordSink, SyncMode, SyncStats};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Records per upload request.
pub const BATCH_RECORDS: usize = 5_000;
/// Upload requests in flight at once.
pub const IN_FLIGHT: usize = 4;

/// A batch on its way: the future that sends it and yields the cloud's answer.
pub type Sending = Pin<Box<dyn Future<Output = Result<UploadAnswer, HostError>> + Send>>;

/// Sends one zstd-compressed JSON body `{"upserts": [...], "deletes": [...]}`.
pub type SendBatch = Box<dyn FnOnce(Vec<u8>) -> Sending + Send>;

/// Where batches go. `prepare` runs on the thread that produces the records (it may block, e.g.
/// to renew a token); the engine compresses the batch and sends it off that thread.
pub trait UploadTarget: Send + Sync {
    /// Prepares the request that uploads one batch to `channel`.
    fn prepare(&self, channel: &str) -> Result<SendBatch, HostError>;
    /// What the cloud holds on `channel` now (nothing, when its feature is not enabled).
    fn census(&self, channel: &str) -> Result<ChannelCensus, HostError>;
    /// Calls `each` with every key the cloud holds on `channel` and the hash of the record's
    /// JSON bytes as they were sent.
    fn held_keys(&self, channel: &str, each: &mut dyn FnMut(String, u64)) -> Result<(), HostError>;
}

/// The ledger's hash for a key the cloud holds but the ledger did not know, or holds with
/// another content than the ledger recorded: matches no record, so the record is sent again
/// (or, if the site no longer has it, deleted). The cloud's own "unknown" is the same number.
const UNKNOWN_HASH: u64 = UNKNOWN_SENT_HASH;

/// The hashes of what the cloud has acknowledged, per channel.
pub trait HashLedger: Send {
    /// Records that `owner` uploads to `channel` (empty: unknown).
    fn claim(&mut self, channel: &str, owner: &str) -> Result<(), StateError>;
    /// The hash of every record last acknowledged on `channel`.
    fn known(&mut self, channel: &str) -> Result<HashMap<String, u64>, StateError>;
    /// Records one acknowledged batch.
    fn ack(
        &mut self,
        channel: &str,
        upserts: &[(String, u64)],
        deletes: &[String],
    ) -> Result<(), StateError>;
    /// Replaces what the ledger holds for `channel`.
    fn replace(&mut self, channel: &str, hashes: &HashMap<String, u64>) -> Result<(), StateError>;
}

impl HashLedger for StateStore {
    fn claim(&mut self, channel: &str, owner: &str) -> Result<(), StateError> {
        if owner.is_empty() {
            return Ok(());
        }
        self.set_channel_owner(channel, owner)
    }
    fn known(&mut self, channel: &str) -> Result<HashMap<String, u64>, StateError> {
        self.channel_hashes(channel)
    }
    fn ack(
        &mut self,
        channel: &str,
        upserts: &[(String, u64)],
        deletes: &[String],
    ) -> Result<(), StateError> {
        self.ack_batch(channel, upserts, deletes)
    }
    fn replace(&mut self, channel: &str, hashes: &HashMap<String, u64>) -> Result<(), StateError> {
        self.replace_channel(channel, hashes)
    }
}

fn state_error(e: StateError) -> HostError {
    HostError::new("state", e.to_string())
}

/// The engine: where batches go and where acknowledgements are recorded.
pub struct SyncEngine {
    handle: Handle,
    target: Arc<dyn UploadTarget>,
    ledger: Arc<Mutex<dyn HashLedger>>,
}

impl SyncEngine {
    /// An engine that runs its requests on `handle`.
    pub fn new(
        handle: Handle,
        target: Arc<dyn UploadTarget>,
        ledger: Arc<Mutex<dyn HashLedger>>,
    ) -> SyncEngine {
        SyncEngine {
            handle,
            target,
            ledger,
        }
    }

    /// Opens an upload of `channel` for the plugin `owner`; `progress` makes its progress
    /// display once the channel is open (an upload that cannot open shows none), `notice`
    /// tells the person when the ledger had to be reconciled with the cloud.
    pub fn open(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        progress: &dyn Fn() -> Box<dyn Progress>,
        notice: &dyn Fn(&str),
    ) -> Result<Box<dyn RecordSink + '_>, HostError> {
        let mut known = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            ledger.claim(channel, owner).map_err(state_error)?;
            ledger.known(channel).map_err(state_error)?
        };
        let census = self.target.census(channel)?;
        if !census.matches(&KeyDigest::of(known.iter().map(|(k, h)| (k.as_str(), *h)))) {
            known = self.reconcile(channel, known, &census, notice)?;
        }
        let progress: Arc<dyn Progress> = Arc::from(progress());
        let _reading = count_devices_read(progress.clone());
        Ok(Box::new(Upload {
            engine: self,
            channel: channel.to_string(),
            mode,
            known,
            batch_records: 0,
            batch: Vec::with_capacity(BATCH_RECORDS),
            batch_bytes: Vec::with_capacity(BATCH_RECORDS * 400),
            in_flight: VecDeque::new(),
            stats: SyncStats::default(),
            progress,
            _reading,
        }))
    }
}

impl SyncEngine {
    /// The ledger of `channel` brought in line with what the cloud holds: kept where the cloud
    /// has the key with the hash the ledger recorded, dropped where it lost the key (so the
    /// record is sent again), unknown where the cloud holds the record with another hash
    /// (someone else wrote it: sent again) or a key the ledger did not record (sent again, or
    /// deleted if gone).
    fn reconcile(
        &self,
        channel: &str,
        known: HashMap<String, u64>,
        census: &ChannelCensus,
        notice: &dyn Fn(&str),
    ) -> Result<HashMap<String, u64>, HostError> {
        let mut held = HashMap::with_capacity(census.records as usize);
        let (mut lost, mut changed, mut foreign) = (known.len() as u64, 0u64, 0u64);
        self.target.held_keys(channel, &mut |key, cloud_hash| {
            let hash = match known.get(&key) {
                Some(h) if *h == cloud_hash && cloud_hash != UNKNOWN_HASH => {
                    lost -= 1;
                    *h
                }
                Some(_) => {
                    lost -= 1;
                    changed += 1;
                    UNKNOWN_HASH
                }
                None => {
                    foreign += 1;
                    UNKNOWN_HASH
                }
            };
            held.insert(key, hash);
        })?;
        let mut also = String::new();
        if changed > 0 {
            also.push_str(&format!(
                ", {changed} it holds with other contents than this site sent will be sent again"
            ));
        }
        if foreign > 0 {
            also.push_str(&format!(
                ", {foreign} it holds that the ledger did not record will be checked"
            ));
        }
        notice(&format!(
            "{channel}: the cloud holds {} record(s), this site's ledger recorded {}: {lost} the cloud no longer has will be sent again{also}",
            census.records,
            known.len(),
        ));
        self.ledger
            .lock()
            .expect("ledger lock")
            .replace(channel, &held)
            .map_err(state_error)?;
        Ok(held)
    }
}

/// An acknowledged batch: records sent and the cloud's answer.
type BatchResult = Result<(u64, UploadAnswer), HostError>;

/// One channel's upload in progress.
struct Upload<'a> {
    engine: &'a SyncEngine,
    channel: String,
    mode: SyncMode,
    /// Hashes acknowledged before; what is left at the end was not pushed again: deletions.
    known: HashMap<String, u64>,
    /// Records in the batch being built.
    batch_records: u64,
    /// Hashes the batch changes (a full resend of an unchanged record changes none).
    batch: Vec<(String, u64)>,
    batch_bytes: Vec<u8>,
    in_flight: VecDeque<JoinHandle<BatchResult>>,
    stats: SyncStats,
    progress: Arc<dyn Progress>,
    /// The devices read on this thread while the upload is open advance its progress.
    _reading: DevicesRead,
}

impl Upload<'_> {
    fn flush(&mut self, deletes: Vec<String>) -> Result<(), HostError> {
        if self.batch_records == 0 && deletes.is_empty() {
            return Ok(());
        }
        let mut body = Vec::with_capacity(self.batch_bytes.len() + 64);
        body.extend_from_slice(b"{\"upserts\":[");
        body.extend_from_slice(&self.batch_bytes);
        body.extend_from_slice(b"],\"deletes\":");
        body.extend_from_slice(&serde_json::to_vec(&deletes).expect("json"));
        body.push(b'}');
        self.batch_bytes.clear();
        let upserts = std::mem::take(&mut self.batch);
        let records = std::mem::take(&mut self.batch_records) + deletes.len() as u64;
        let send = self.engine.target.prepare(&self.channel)?;
        let ledger = self.engine.ledger.clone();
        let channel = self.channel.clone();
        // Compressing, sending and recording the acknowledged batch happen off the thread that
        // reads the inventory, so it goes on producing the next batch meanwhile.
        let handle = self.engine.handle.spawn(async move {
            let blocking = |e: tokio::task::JoinError| HostError::new("upload", e.to_string());
            let compressed = tokio::task::spawn_blocking(move || zstd::bulk::compress(&body, 1))
                .await
                .map_err(blocking)?
                .map_err(|e| HostError::new("compress", e.to_string()))?;
            let answer = send(compressed).await?;
            // The batch is recorded as acknowledged before it counts: a crash after this point
            // loses nothing, one before it resends the batch, which the cloud finds unchanged.
            tokio::task::spawn_blocking(move || {
                ledger
                    .lock()
                    .expect("ledger lock")
                    .ack(&channel, &upserts, &deletes)
                    .map_err(state_error)
            })
            .await
            .map_err(blocking)??;
            Ok((records, answer))
        });
        self.in_flight.push_back(handle);
        while self.in_flight.len() >= IN_FLIGHT {
            self.wait_oldest()?;
        }
        Ok(())
    }

    fn wait_oldest(&mut self) -> Result<(), HostError> {
        let Some(h) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (n, answer) = self
            .engine
            .handle
            .block_on(h)
            .map_err(|e| HostError::new("upload", e.to_string()))??;
        self.stats.sent += n;
        self.stats.upserted += answer.upserted;
        self.stats.deleted += answer.deleted;
        self.stats.unchanged += answer.unchanged;
        self.progress.sent(n);
        Ok(())
    }
}

impl RecordSink for Upload<'_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        let json = serde_json::to_vec(&record.value)
            .map_err(|e| HostError::new("record", e.to_string()))?;
        let hash = xxhash_rust::xxh3::xxh3_64(&json);
        self.stats.total += 1;
        let previous = self.known.remove(&record.key);
        if self.mode == SyncMode::Delta && previous == Some(hash) {
            return Ok(());
        }
        if self.batch_records > 0 {
            self.batch_bytes.push(b',');
        }
        self.batch_bytes.extend_from_slice(b"{\"key\":");
        serde_json::to_writer(&mut self.batch_bytes, &record.key).expect("json");
        self.batch_bytes.extend_from_slice(b",\"record\":");
        self.batch_bytes.extend_from_slice(&json);
        self.batch_bytes.push(b'}');
        if previous != Some(hash) {
            self.batch.push((record.key, hash));
        }
        self.batch_records += 1;
        if self.batch_records as usize >= BATCH_RECORDS {
            self.flush(vec![])?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<SyncStats, HostError> {
        let mut gone: Vec<String> = self.known.drain().map(|(k, _)| k).collect();
        gone.sort_unstable();
        self.flush(vec![])?;
        for chunk in gone.chunks(BATCH_RECORDS) {
            self.flush(chunk.to_vec())?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        self.progress.finish(&self.stats);
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Silent;
    use std::collections::BTreeMap;

    /// A cloud channel in memory: applies every batch it is sent.
    #[derive(Default)]
    struct MemoryTarget {
        records: Mutex<BTreeMap<String, BTreeMap<String, serde_json::Value>>>,
        requests: Mutex<u64>,
        fail: Mutex<bool>,
    }

    type Batch = cloudattach_sdk::gateway::UploadBody;

    impl MemoryTarget {
        fn apply(&self, channel: &str, compressed: &[u8]) -> Result<UploadAnswer, HostError> {
            *self.requests.lock().unwrap() += 1;
            if *self.fail.lock().unwrap() {
                return Err(HostError::new("http-503", "unavailable"));
            }
            let body = zstd::bulk::decompress(compressed, 1 << 24).unwrap();
            let batch: Batch = serde_json::from_slice(&body).unwrap();
            let mut all = self.records.lock().unwrap();
            let ch = all.entry(channel.to_string()).or_default();
            let (mut upserted, mut deleted, mut unchanged) = (0, 0, 0);
            for u in batch.upserts {
                match ch.insert(u.key, u.record.clone()) {
                    Some(old) if old == u.record => unchanged += 1,
                    _ => upserted += 1,
                }
            }
            for k in batch.deletes {
                if ch.remove(&k).is_some() {
                    deleted += 1;
                }
            }
            Ok(UploadAnswer::new(upserted, deleted, unchanged))
        }
    }

    /// The hash of a record's JSON bytes as the engine sends them.
    fn sent_hash(v: &serde_json::Value) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(v).unwrap())
    }

    struct Shared(Arc<MemoryTarget>);
    impl UploadTarget for Shared {
        fn prepare(&self, channel: &str) -> Result<SendBatch, HostError> {
            let (target, channel) = (self.0.clone(), channel.to_string());
            Ok(Box::new(move |compressed: Vec<u8>| -> Sending {
                Box::pin(async move { target.apply(&channel, &compressed) })
            }))
        }
        fn census(&self, channel: &str) -> Result<ChannelCensus, HostError> {
            let all = self.0.records.lock().unwrap();
            let held = all.get(channel).into_iter().flatten();
            Ok(ChannelCensus::new(
                channel,
                KeyDigest::of(held.map(|(k, v)| (k.as_str(), sent_hash(v)))),
            ))
        }
        fn held_keys(
            &self,
            channel: &str,
            each: &mut dyn FnMut(String, u64),
        ) -> Result<(), HostError> {
            let all = self.0.records.lock().unwrap();
            all.get(channel)
                .into_iter()
                .flatten()
                .for_each(|(k, v)| each(k.clone(), sent_hash(v)));
            Ok(())
        }
    }

    /// Acknowledged hashes in memory.
    #[derive(Default)]
    struct MemoryLedger {
        hashes: BTreeMap<String, HashMap<String, u64>>,
        owners: BTreeMap<String, String>,
    }

    impl HashLedger for MemoryLedger {
        fn claim(&mut self, channel: &str, owner: &str) -> Result<(), StateError> {
            self.owners.insert(channel.into(), owner.into());
            Ok(())
        }
        fn known(&mut self, channel: &str) -> Result<HashMap<String, u64>, StateError> {
            Ok(self.hashes.get(channel).cloned().unwrap_or_default())
        }
        fn ack(
            &mut self,
            channel: &str,
            upserts: &[(String, u64)],
            deletes: &[String],
        ) -> Result<(), StateError> {
            let h = self.hashes.entry(channel.into()).or_default();
            for (k, v) in upserts {
                h.insert(k.clone(), *v);
            }
            for k in deletes {
                h.remove(k);
            }
            Ok(())
        }
        fn replace(
            &mut self,
            channel: &str,
            hashes: &HashMap<String, u64>,
        ) -> Result<(), StateError> {
            self.hashes.insert(channel.into(), hashes.clone());
            Ok(())
        }
    }

    fn push_all(
        engine: &SyncEngine,
        mode: SyncMode,
        records: impl IntoIterator<Item = (i64, &'static str)>,
    ) -> Result<SyncStats, HostError> {
        let mut sink = engine.open(
            "tenant-attach",
            "devices",
            mode,
            &|| Box::new(Silent),
            &|_| {},
        )?;
        for (k, v) in records {
            sink.push(Record {
                key: k.to_string(),
                value: serde_json::json!({ "name": v }),
            })?;
        }
        sink.finish()
    }

    /// A runtime, an in-memory cloud channel and ledger, and an engine between them.
    fn setup() -> (
        tokio::runtime::Runtime,
        Arc<MemoryTarget>,
        Arc<Mutex<MemoryLedger>>,
        SyncEngine,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let target = Arc::new(MemoryTarget::default());
        let ledger = Arc::new(Mutex::new(MemoryLedger::default()));
        let engine = SyncEngine::new(
            rt.handle().clone(),
            Arc::new(Shared(target.clone())),
            ledger.clone(),
        );
        (rt, target, ledger, engine)
    }

    /// Counts what an upload's progress hears.
    #[derive(Default)]
    struct Counted {
        devices: std::sync::atomic::AtomicU64,
        sent: std::sync::atomic::AtomicU64,
        finished: std::sync::atomic::AtomicBool,
    }
    struct CountedProgress(Arc<Counted>);
    impl Progress for CountedProgress {
        fn advance(&self, n: u64) {
            self.0
                .devices
                .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
        fn sent(&self, n: u64) {
            self.0
                .sent
                .fetch_add(n, std::sync::atomic::Ordering::SeqCst);
        }
        fn finish(&self, _stats: &SyncStats) {
            self.0
                .finished
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// An upload's progress counts the devices read on its thread while it is open (the bar's
    /// total is the site's devices), and the records acknowledged; a finished upload, or one on
    /// another thread, hears nothing more.
    #[test]
    fn progress_counts_devices_read_while_the_upload_is_open_and_records_sent() {
        use std::sync::atomic::Ordering::SeqCst;
        let (_rt, _target, _ledger, engine) = setup();
        let (a, b) = (Arc::new(Counted::default()), Arc::new(Counted::default()));
        let mut first = engine
            .open(
                "p",
                "devices",
                SyncMode::Delta,
                &|| Box::new(CountedProgress(a.clone())),
                &|_| {},
            )
            .unwrap();
        let second = engine
            .open(
                "q",
                "analytics",
                SyncMode::Delta,
                &|| Box::new(CountedProgress(b.clone())),
                &|_| {},
            )
            .unwrap();
        {
            let mut read = crate::report::DeviceCounter::new();
            for i in 0..2_500 {
                read.one();
                if i % 2 == 0 {
                    first
                        .push(Record {
                            key: i.to_string(),
                            value: serde_json::json!(i),
                        })
                        .unwrap();
                }
            }
        }
        std::thread::scope(|s| {
            s.spawn(|| crate::report::devices_read(1_000));
        });
        first.finish().unwrap();
        second.finish().unwrap();
        crate::report::devices_read(10);
        assert_eq!(a.devices.load(SeqCst), 2_500);
        assert_eq!(b.devices.load(SeqCst), 2_500);
        assert_eq!(a.sent.load(SeqCst), 1_250);
        assert_eq!(b.sent.load(SeqCst), 0);
        assert!(a.finished.load(SeqCst) && b.finished.load(SeqCst));
    }

    #[test]
    fn a_delta_sends_what_changed_and_deletes_what_is_gone() {
        let (_rt, target, ledger, engine) = setup();
        let many: Vec<(i64, &str)> = (0..(BATCH_RECORDS as i64 * 2 + 7))
            .map(|i| (i, "a"))
            .collect();
        let first = push_all(&engine, SyncMode::Delta, many.clone()).unwrap();
        assert_eq!(
            (first.sent, first.upserted, first.total),
            (many.len() as u64, many.len() as u64, many.len() as u64)
        );
        assert_eq!(
            *target.requests.lock().unwrap(),
            3,
            "three batches of at most 5,000"
        );
        assert_eq!(ledger.lock().unwrap().owners["devices"], "tenant-attach");

        // Unchanged: nothing is sent.
        let again = push_all(&engine, SyncMode::Delta, many.clone()).unwrap();
        assert_eq!((again.sent, again.total), (0, many.len() as u64));

        // One changed, one gone, one added.
        let mut next = many.clone();
        next[0].1 = "b";
        next.pop();
        next.push((1_000_000, "new"));
        let delta = push_all(&engine, SyncMode::Delta, next.clone()).unwrap();
        assert_eq!((delta.sent, delta.upserted, delta.deleted), (3, 2, 1));
        let cloud = target.records.lock().unwrap();
        assert_eq!(cloud["devices"].len(), next.len());
        assert_eq!(cloud["devices"]["0"]["name"], "b");
        drop(cloud);

        // A full resend sends everything; the cloud finds it unchanged.
        let full = push_all(&engine, SyncMode::Full, next.clone()).unwrap();
        assert_eq!(
            (full.sent, full.unchanged),
            (next.len() as u64, next.len() as u64)
        );
    }

    #[test]
    fn a_failed_batch_is_not_recorded() {
        let (_rt, target, ledger, engine) = setup();
        *target.fail.lock().unwrap() = true;
        let err = push_all(&engine, SyncMode::Delta, [(1, "a"), (2, "b")]).unwrap_err();
        assert_eq!(err.code, "http-503");
        assert!(ledger.lock().unwrap().known("devices").unwrap().is_empty());
        *target.fail.lock().unwrap() = false;
        let retry = push_all(&engine, SyncMode::Delta, [(1, "a"), (2, "b")]).unwrap();
        assert_eq!(
            retry.sent, 2,
            "nothing was recorded, so everything is sent again"
        );
    }

    #[test]
    fn a_delta_converges_whatever_happened_to_the_cloud_since() {
        let (_rt, target, ledger, engine) = setup();
        let site: Vec<(i64, &str)> = (1..=50).map(|i| (i, "a")).collect();
        push_all(&engine, SyncMode::Delta, site.clone()).unwrap();

        // The cloud lost records the ledger says it acknowledged (a cascade, a deletion in the
        // tenant): the next delta sends exactly those again.
        {
            let mut cloud = target.records.lock().unwrap();
            let ch = cloud.get_mut("devices").unwrap();
            for k in ["3", "17", "42"] {
                ch.remove(k);
            }
        }
        let delta = push_all(&engine, SyncMode::Delta, site.clone()).unwrap();
        assert_eq!((delta.sent, delta.upserted), (3, 3));
        assert_eq!(target.records.lock().unwrap()["devices"].len(), 50);

        // The cloud holds records the ledger never recorded (another state directory attached
        // it, or the state was lost): they are checked — deleted when the site no longer has
        // them, found unchanged when it does.
        {
            let mut cloud = target.records.lock().unwrap();
            let ch = cloud.get_mut("devices").unwrap();
            ch.insert("999".into(), serde_json::json!({"name": "stale"}));
        }
        ledger.lock().unwrap().hashes.clear();
        let delta = push_all(&engine, SyncMode::Delta, site.clone()).unwrap();
        assert_eq!((delta.deleted, delta.unchanged), (1, 50));
        let cloud = target.records.lock().unwrap();
        assert_eq!(cloud["devices"].len(), 50);
        assert!(!cloud["devices"].contains_key("999"));
        drop(cloud);

        // Someone else changed the contents of records the site uploaded (same keys): the next
        // delta sends exactly those again, and the cloud holds the site's contents.
        {
            let mut cloud = target.records.lock().unwrap();
            let ch = cloud.get_mut("devices").unwrap();
            for k in ["5", "23"] {
                ch.insert(
                    k.into(),
                    serde_json::json!({"name": "changed in the tenant"}),
                );
            }
        }
        let notices = Mutex::new(Vec::<String>::new());
        let mut sink = engine
            .open(
                "tenant-attach",
                "devices",
                SyncMode::Delta,
                &|| Box::new(Silent),
                &|m| notices.lock().unwrap().push(m.to_string()),
            )
            .unwrap();
        for (k, v) in site.clone() {
            sink.push(Record {
                key: k.to_string(),
                value: serde_json::json!({ "name": v }),
            })
            .unwrap();
        }
        let delta = sink.finish().unwrap();
        assert_eq!((delta.sent, delta.upserted), (2, 2));
        let cloud = target.records.lock().unwrap();
        assert_eq!(cloud["devices"]["5"]["name"], "a");
        assert_eq!(cloud["devices"]["23"]["name"], "a");
        drop(cloud);
        let notices = notices.into_inner().unwrap();
        assert!(
            notices
                .iter()
                .any(|n| n.contains("2 it holds with other contents")),
            "{notices:?}"
        );

        // In line again: the next delta sends nothing.
        let quiet = push_all(&engine, SyncMode::Delta, site).unwrap();
        assert_eq!(quiet.sent, 0);
    }
}

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

use crate::host::LineSink;
use crate::report::{DevicesRead, Progress, count_devices_read};
use crate::state::{Acked, BatchTimeline, Change, RecordEvent, StateError, StateStore};
use cloudattach_sdk::gateway::{ChannelCensus, KeyDigest, UNKNOWN_SENT_HASH, UploadAnswer};
use cloudattach_sdk::{HostError, Record, RecordSink, SyncMode, SyncStats};
use std::collections::{HashMap, HashSet, VecDeque};
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
    /// The hash (and line) of every record last acknowledged on `channel`.
    fn known(&mut self, channel: &str) -> Result<HashMap<String, Acked>, StateError>;
    /// What the ledger holds for one key of `channel`.
    fn acked(&mut self, channel: &str, key: &str) -> Result<Option<Acked>, StateError>;
    /// Calls `each` with every key of `channel` and what the ledger holds for it, streamed.
    fn each(&mut self, channel: &str, each: &mut dyn FnMut(&str, Acked)) -> Result<(), StateError>;
    /// The digest of what the ledger holds for `channel` (count, and the sum over keys and
    /// hashes the cloud's census carries).
    fn digest(&mut self, channel: &str) -> Result<KeyDigest, StateError>;
    /// Records one acknowledged batch (or records made from another line, unchanged); with
    /// `keep_digest`, the channel's digest follows (a delta writing key by key). The device
    /// timeline's events of the batch are recorded with it, in the same transaction.
    fn ack(
        &mut self,
        channel: &str,
        upserts: &[(String, Acked)],
        deletes: &[String],
        keep_digest: bool,
        timeline: &BatchTimeline,
    ) -> Result<(), StateError>;
    /// Whether `channel`'s first upload began and did not finish: the upload that resumes it is
    /// still a first upload for the device timeline.
    fn first_upload_pending(&mut self, channel: &str) -> Result<bool, StateError> {
        let _ = channel;
        Ok(false)
    }
    /// Records that `channel`'s first upload finished, the channel holding `records` records.
    fn first_upload_done(&mut self, channel: &str, records: u64) -> Result<(), StateError> {
        let _ = (channel, records);
        Ok(())
    }
    /// Records unchanged records (same key and hash) as made from other lines.
    fn reline(&mut self, channel: &str, moved: &[(String, Acked)]) -> Result<(), StateError>;
    /// Replaces what the ledger holds for `channel`.
    fn replace(&mut self, channel: &str, hashes: &HashMap<String, Acked>)
    -> Result<(), StateError>;
}

impl HashLedger for StateStore {
    fn claim(&mut self, channel: &str, owner: &str) -> Result<(), StateError> {
        if owner.is_empty() {
            return Ok(());
        }
        self.set_channel_owner(channel, owner)
    }
    fn known(&mut self, channel: &str) -> Result<HashMap<String, Acked>, StateError> {
        self.channel_hashes(channel)
    }
    fn acked(&mut self, channel: &str, key: &str) -> Result<Option<Acked>, StateError> {
        StateStore::acked(self, channel, key)
    }
    fn each(&mut self, channel: &str, each: &mut dyn FnMut(&str, Acked)) -> Result<(), StateError> {
        self.each_acked(channel, each)
    }
    fn digest(&mut self, channel: &str) -> Result<KeyDigest, StateError> {
        self.channel_digest(channel)
    }
    fn ack(
        &mut self,
        channel: &str,
        upserts: &[(String, Acked)],
        deletes: &[String],
        keep_digest: bool,
        timeline: &BatchTimeline,
    ) -> Result<(), StateError> {
        self.ack_batch(channel, upserts, deletes, keep_digest, timeline)
    }
    fn first_upload_pending(&mut self, channel: &str) -> Result<bool, StateError> {
        StateStore::first_upload_pending(self, channel)
    }
    fn first_upload_done(&mut self, channel: &str, records: u64) -> Result<(), StateError> {
        StateStore::first_upload_done(self, channel, records)
    }
    fn reline(&mut self, channel: &str, moved: &[(String, Acked)]) -> Result<(), StateError> {
        StateStore::reline(self, channel, moved)
    }
    fn replace(
        &mut self,
        channel: &str,
        hashes: &HashMap<String, Acked>,
    ) -> Result<(), StateError> {
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
        Ok(Box::new(
            self.upload(owner, channel, mode, progress, notice)?,
        ))
    }

    /// [`SyncEngine::open`] for records made from inventory lines: the ledger records each
    /// record's line, and a delta may leave the lines it knows unread (see [`LineSink`]).
    /// `indexed`: the caller holds a line index covering the channel, so a delta reads only the
    /// lines that changed; the ledger is then looked up key by key rather than loaded, when its
    /// digest matches the cloud's census.
    pub fn open_lines(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        indexed: bool,
        progress: &dyn Fn() -> Box<dyn Progress>,
        notice: &dyn Fn(&str),
    ) -> Result<Box<dyn LineSink + '_>, HostError> {
        let streamed = indexed && mode == SyncMode::Delta;
        Ok(Box::new(self.upload_with(
            owner, channel, mode, streamed, progress, notice,
        )?))
    }

    fn upload(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        progress: &dyn Fn() -> Box<dyn Progress>,
        notice: &dyn Fn(&str),
    ) -> Result<Upload<'_>, HostError> {
        self.upload_with(owner, channel, mode, false, progress, notice)
    }

    /// Opens an upload; `streamed`: a delta that reads only the changed lines, whose ledger is
    /// looked up key by key when its digest matches the cloud's census (memory and time then
    /// follow the change, not the site).
    fn upload_with(
        &self,
        owner: &str,
        channel: &str,
        mode: SyncMode,
        streamed: bool,
        progress: &dyn Fn() -> Box<dyn Progress>,
        notice: &dyn Fn(&str),
    ) -> Result<Upload<'_>, HostError> {
        self.ledger
            .lock()
            .expect("ledger lock")
            .claim(channel, owner)
            .map_err(state_error)?;
        let mut census = None;
        if streamed {
            let digest = self
                .ledger
                .lock()
                .expect("ledger lock")
                .digest(channel)
                .map_err(state_error)?;
            let held = self.target.census(channel)?;
            if held.matches(&digest) {
                let known = Known::Streamed {
                    pushed: HashSet::new(),
                    records: digest.count,
                    added: 0,
                };
                let timeline = self.timeline_mode(channel, digest.count == 0)?;
                return Ok(self.start(
                    channel,
                    mode,
                    known,
                    Some(HashSet::new()),
                    timeline,
                    progress,
                ));
            }
            census = Some(held);
        }
        // The ledger by key hash (a third of the memory of the keys themselves), read once with
        // its digest; the keys themselves only when the cloud differs or two keys share a hash.
        let (compact, digest) = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let mut digest = KeyDigest::default();
            let mut entries = Vec::new();
            ledger
                .each(channel, &mut |k, a| {
                    digest.add(k, a.hash);
                    entries.push(CompactEntry::new(k, a));
                })
                .map_err(state_error)?;
            (CompactLedger::new(entries), digest)
        };
        let census = match census {
            Some(c) => c,
            None => self.target.census(channel)?,
        };
        // Whether the ledger held nothing for the channel when the round started (before any
        // reconciliation): its first upload, which the timeline records as one round event.
        let timeline = self.timeline_mode(channel, digest.count == 0)?;
        let matches = census.matches(&digest);
        let must_read = (mode == SyncMode::Delta).then(HashSet::new);
        if matches && let Some(compact) = compact {
            return Ok(self.start(
                channel,
                mode,
                Known::Compact(compact),
                must_read,
                timeline,
                progress,
            ));
        }
        drop(compact);
        let mut known = self
            .ledger
            .lock()
            .expect("ledger lock")
            .known(channel)
            .map_err(state_error)?;
        // Lines left unread keep their records; those whose records the cloud lost or holds
        // otherwise must be read again.
        let mut must_read = must_read;
        if !matches {
            let (held, lines) = self.reconcile(channel, known, &census, notice)?;
            known = held;
            must_read = lines;
        }
        if mode != SyncMode::Delta {
            must_read = None;
        }
        Ok(self.start(
            channel,
            mode,
            Known::Loaded(known),
            must_read,
            timeline,
            progress,
        ))
    }

    /// What the device timeline records of an upload of `channel`: nothing for a channel not
    /// keyed by resource id; one round event for its first upload (the ledger held nothing,
    /// or the first upload did not finish); otherwise one event per record that changed.
    fn timeline_mode(&self, channel: &str, ledger_empty: bool) -> Result<TimelineMode, HostError> {
        if cloudattach_sdk::rules::Channel::builtin(channel).is_none() {
            return Ok(TimelineMode::Off);
        }
        let pending = self
            .ledger
            .lock()
            .expect("ledger lock")
            .first_upload_pending(channel)
            .map_err(state_error)?;
        Ok(if ledger_empty || pending {
            TimelineMode::First
        } else {
            TimelineMode::Changes
        })
    }

    fn start(
        &self,
        channel: &str,
        mode: SyncMode,
        known: Known,
        must_read: Option<HashSet<u64>>,
        timeline: TimelineMode,
        progress: &dyn Fn() -> Box<dyn Progress>,
    ) -> Upload<'_> {
        let progress: Arc<dyn Progress> = Arc::from(progress());
        let _reading = count_devices_read(progress.clone());
        Upload {
            engine: self,
            channel: channel.to_string(),
            mode,
            keep_digest: matches!(known, Known::Streamed { .. }),
            known,
            must_read,
            timeline,
            kept: cloudattach_sdk::rules::Channel::builtin(channel)
                .map_or(&[][..], |c| c.timeline_kept_fields()),
            events: Vec::new(),
            batch_records: 0,
            batch: Vec::with_capacity(BATCH_RECORDS),
            batch_bytes: Vec::with_capacity(BATCH_RECORDS * 400),
            relines: Vec::new(),
            in_flight: VecDeque::new(),
            stats: SyncStats::default(),
            progress,
            _reading,
        }
    }
}

impl SyncEngine {
    /// The ledger of `channel` brought in line with what the cloud holds: kept where the cloud
    /// has the key with the hash the ledger recorded, dropped where it lost the key (so the
    /// record is sent again), unknown where the cloud holds the record with another hash
    /// (someone else wrote it: sent again) or a key the ledger did not record (sent again, or
    /// deleted if gone).
    ///
    /// Also returns the lines whose records must be read again (lost or held otherwise), or
    /// `None` when some cannot be traced to a line (a key the ledger did not record, a record
    /// not made from a line): then every line is read.
    fn reconcile(
        &self,
        channel: &str,
        known: HashMap<String, Acked>,
        census: &ChannelCensus,
        notice: &dyn Fn(&str),
    ) -> Result<ReconciledLedger, HostError> {
        let mut held: HashMap<String, Acked> = HashMap::with_capacity(census.records as usize);
        let (mut changed, mut foreign) = (0u64, 0u64);
        let mut lines = Some(HashSet::new());
        let mut must_read = |line: u64| match line {
            0 => lines = None,
            l => {
                if let Some(s) = lines.as_mut() {
                    s.insert(l);
                }
            }
        };
        self.target.held_keys(channel, &mut |key, cloud_hash| {
            let acked = match known.get(&key) {
                Some(a) if a.hash == cloud_hash && cloud_hash != UNKNOWN_HASH => *a,
                Some(a) => {
                    changed += 1;
                    must_read(a.line);
                    Acked {
                        hash: UNKNOWN_HASH,
                        line: a.line,
                    }
                }
                None => {
                    foreign += 1;
                    must_read(0);
                    Acked::hash(UNKNOWN_HASH)
                }
            };
            held.insert(key, acked);
        })?;
        let mut lost = 0u64;
        for (k, a) in &known {
            if !held.contains_key(k) {
                lost += 1;
                must_read(a.line);
            }
        }
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
        Ok((held, lines))
    }
}

/// A ledger reconciled with the cloud, and the lines to read again (`None`: every line).
type ReconciledLedger = (HashMap<String, Acked>, Option<HashSet<u64>>);

/// An acknowledged batch: records sent and the cloud's answer.
type BatchResult = Result<(u64, UploadAnswer), HostError>;

/// One record of a [`CompactLedger`]: its key's hash (and a second, independent one, so two
/// keys are never taken for one) and what the ledger holds.
#[derive(Debug, Clone, Copy)]
struct CompactEntry {
    key: u64,
    check: u32,
    acked: Acked,
}

impl CompactEntry {
    fn new(key: &str, acked: Acked) -> CompactEntry {
        let (key, check) = key_hashes(key);
        CompactEntry { key, check, acked }
    }
}

/// The two hashes of a key a [`CompactLedger`] knows it by.
fn key_hashes(key: &str) -> (u64, u32) {
    (
        xxhash_rust::xxh3::xxh3_64(key.as_bytes()),
        xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), 0x6c65_6467_6572) as u32,
    )
}

/// A channel's ledger in memory without its keys: sorted by key hash, with a table of where
/// each hash prefix starts (about one record a prefix), and which records a pass took.
struct CompactLedger {
    entries: Vec<CompactEntry>,
    starts: Vec<u32>,
    bits: u32,
    taken: Vec<bool>,
}

impl CompactLedger {
    /// `None` when two keys share a hash (then the keys themselves are loaded).
    fn new(mut entries: Vec<CompactEntry>) -> Option<CompactLedger> {
        entries.sort_unstable_by_key(|e| e.key);
        if entries.windows(2).any(|w| w[0].key == w[1].key) {
            return None;
        }
        let bits = entries.len().max(1).ilog2().clamp(8, 24);
        let mut starts = vec![0u32; (1 << bits) + 1];
        for e in &entries {
            starts[(e.key >> (64 - bits)) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let taken = vec![false; entries.len()];
        Some(CompactLedger {
            entries,
            starts,
            bits,
            taken,
        })
    }

    /// What the ledger holds for `key`, taken (a key is taken once).
    fn take(&mut self, key: &str) -> Option<Acked> {
        let (hash, check) = key_hashes(key);
        let p = (hash >> (64 - self.bits)) as usize;
        let (lo, hi) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        let at = lo
            + self.entries[lo..hi]
                .binary_search_by_key(&hash, |e| e.key)
                .ok()?;
        let e = self.entries[at];
        if e.check != check || self.taken[at] {
            return None;
        }
        self.taken[at] = true;
        Some(e.acked)
    }

    /// The records not taken: their key's hashes and what the ledger holds.
    fn left(&self) -> impl Iterator<Item = ((u64, u32), Acked)> + '_ {
        self.entries
            .iter()
            .zip(&self.taken)
            .filter(|(_, t)| !**t)
            .map(|(e, _)| ((e.key, e.check), e.acked))
    }
}

/// What an upload knows of the ledger.
enum Known {
    /// The whole ledger, by key hash: what is left at the end was not pushed again (deletions,
    /// except the records of lines left unread); the keys of those are read then.
    Compact(CompactLedger),
    /// The whole ledger, loaded: what is left at the end was not pushed again (deletions,
    /// except the records of lines left unread).
    Loaded(HashMap<String, Acked>),
    /// Looked up key by key (a delta that reads only the changed lines): the keys pushed, how
    /// many records the ledger held, and how many pushed keys it did not hold.
    Streamed {
        pushed: HashSet<String>,
        records: u64,
        added: u64,
    },
}

/// What the device timeline records of one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimelineMode {
    /// Nothing (a channel not keyed by resource id).
    Off,
    /// The channel's first upload: one round event, no row per device.
    First,
    /// One event per record that changed, new or deleted.
    Changes,
}

/// One channel's upload in progress.
struct Upload<'a> {
    engine: &'a SyncEngine,
    channel: String,
    mode: SyncMode,
    /// The ledger as this upload knows it.
    known: Known,
    /// Acknowledgements keep the channel's digest (a streamed ledger).
    keep_digest: bool,
    /// In a delta, the lines that must be read whatever the line index says (`None`: every
    /// line must be read).
    must_read: Option<HashSet<u64>>,
    /// What the device timeline records of this upload.
    timeline: TimelineMode,
    /// The fields whose values the timeline keeps for this channel.
    kept: &'static [&'static str],
    /// The timeline's events of the batch being built (records that changed).
    events: Vec<RecordEvent>,
    /// Records in the batch being built.
    batch_records: u64,
    /// Hashes the batch changes (a full resend of an unchanged record changes none).
    batch: Vec<(String, Acked)>,
    batch_bytes: Vec<u8>,
    /// Unchanged records now made from another line: recorded without being sent.
    relines: Vec<(String, Acked)>,
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
        let timeline = match self.timeline {
            TimelineMode::Off => BatchTimeline::Off,
            TimelineMode::First => BatchTimeline::FirstUpload,
            TimelineMode::Changes => BatchTimeline::Records(std::mem::take(&mut self.events)),
        };
        let records = std::mem::take(&mut self.batch_records) + deletes.len() as u64;
        let send = self.engine.target.prepare(&self.channel)?;
        let ledger = self.engine.ledger.clone();
        let channel = self.channel.clone();
        let keep_digest = self.keep_digest;
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
            // Its timeline events are written in the same transaction.
            tokio::task::spawn_blocking(move || {
                ledger
                    .lock()
                    .expect("ledger lock")
                    .ack(&channel, &upserts, &deletes, keep_digest, &timeline)
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

impl Upload<'_> {
    fn push_from(&mut self, line: u64, record: Record) -> Result<(), HostError> {
        let json = serde_json::to_vec(&record.value)
            .map_err(|e| HostError::new("record", e.to_string()))?;
        let acked = Acked {
            hash: xxhash_rust::xxh3::xxh3_64(&json),
            line,
        };
        self.stats.total += 1;
        let previous = match &mut self.known {
            Known::Loaded(known) => known.remove(&record.key),
            Known::Compact(known) => known.take(&record.key),
            Known::Streamed { pushed, added, .. } => {
                let previous = self
                    .engine
                    .ledger
                    .lock()
                    .expect("ledger lock")
                    .acked(&self.channel, &record.key)
                    .map_err(state_error)?;
                if pushed.insert(record.key.clone()) && previous.is_none() {
                    *added += 1;
                }
                previous
            }
        };
        if self.mode == SyncMode::Delta && previous.is_some_and(|p| p.hash == acked.hash) {
            if previous != Some(acked) {
                self.relines.push((record.key, acked));
                if self.relines.len() >= BATCH_RECORDS {
                    self.record_relines()?;
                }
            }
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
        if previous != Some(acked) {
            // A record whose content changed (not only its line) is an event of its device.
            if self.timeline == TimelineMode::Changes
                && previous.is_none_or(|p| p.hash != acked.hash)
            {
                let change = if previous.is_some() {
                    Change::Changed
                } else {
                    Change::Added
                };
                self.events.push(RecordEvent::of(
                    &record.key,
                    change,
                    &record.value,
                    self.kept,
                ));
            }
            self.batch.push((record.key, acked));
        }
        self.batch_records += 1;
        if self.batch_records as usize >= BATCH_RECORDS {
            self.flush(vec![])?;
        }
        Ok(())
    }

    /// Records unchanged records made from another line than the ledger says: nothing is sent,
    /// so nothing waits for the cloud.
    fn record_relines(&mut self) -> Result<(), HostError> {
        if self.relines.is_empty() {
            return Ok(());
        }
        let relines = std::mem::take(&mut self.relines);
        self.engine
            .ledger
            .lock()
            .expect("ledger lock")
            .reline(&self.channel, &relines)
            .map_err(state_error)
    }

    /// Sends what is left and the deletions: every key acknowledged before and not pushed
    /// again, except those made from a line `kept` says was left unread. A streamed ledger
    /// finds them from the lines `gone_lines` lists (`(line hash, resource_id)` of the lines the
    /// index held that are no longer in the file): a built-in channel's key is the device's
    /// `resource_id`, looked up; another channel's records are read once, streamed.
    fn finish_keeping(
        mut self: Box<Self>,
        kept: &dyn Fn(u64) -> bool,
        gone_lines: &[(u64, i64)],
    ) -> Result<SyncStats, HostError> {
        let mut gone: Vec<String> = Vec::new();
        match std::mem::replace(&mut self.known, Known::Loaded(HashMap::new())) {
            Known::Compact(known) => {
                let mut gone_keys: HashSet<(u64, u32)> = HashSet::new();
                for (key, a) in known.left() {
                    if a.line != 0 && kept(a.line) {
                        self.stats.total += 1;
                    } else {
                        gone_keys.insert(key);
                    }
                }
                drop(known);
                if !gone_keys.is_empty() {
                    // The keys of the records to delete: one read of the ledger.
                    self.engine
                        .ledger
                        .lock()
                        .expect("ledger lock")
                        .each(&self.channel, &mut |k, _| {
                            if gone_keys.contains(&key_hashes(k)) {
                                gone.push(k.to_string());
                            }
                        })
                        .map_err(state_error)?;
                }
            }
            Known::Loaded(mut known) => {
                for (k, a) in known.drain() {
                    if a.line != 0 && kept(a.line) {
                        self.stats.total += 1;
                    } else {
                        gone.push(k);
                    }
                }
            }
            Known::Streamed {
                pushed,
                records,
                added,
            } => {
                let mut ledger = self.engine.ledger.lock().expect("ledger lock");
                if cloudattach_sdk::rules::Channel::builtin(&self.channel).is_some() {
                    for &(line, rid) in gone_lines {
                        let key = rid.to_string();
                        if !pushed.contains(&key)
                            && ledger
                                .acked(&self.channel, &key)
                                .map_err(state_error)?
                                .is_some_and(|a| a.line == line)
                        {
                            gone.push(key);
                        }
                    }
                } else if !gone_lines.is_empty() {
                    let lines: HashSet<u64> = gone_lines.iter().map(|g| g.0).collect();
                    ledger
                        .each(&self.channel, &mut |k, a| {
                            if a.line != 0 && lines.contains(&a.line) && !pushed.contains(k) {
                                gone.push(k.to_string());
                            }
                        })
                        .map_err(state_error)?;
                }
                // Kept: the records held before, less those pushed again and those gone.
                let pushed_again = pushed.len() as u64 - added;
                self.stats.total += records
                    .saturating_sub(pushed_again)
                    .saturating_sub(gone.len() as u64);
            }
        }
        gone.sort_unstable();
        self.record_relines()?;
        self.flush(vec![])?;
        for chunk in gone.chunks(BATCH_RECORDS) {
            self.flush(chunk.to_vec())?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest()?;
        }
        if self.timeline == TimelineMode::First {
            self.engine
                .ledger
                .lock()
                .expect("ledger lock")
                .first_upload_done(&self.channel, self.stats.total)
                .map_err(state_error)?;
        }
        self.progress.finish(&self.stats);
        Ok(self.stats)
    }
}

impl RecordSink for Upload<'_> {
    fn push(&mut self, record: Record) -> Result<(), HostError> {
        self.push_from(0, record)
    }

    fn finish(self: Box<Self>) -> Result<SyncStats, HostError> {
        self.finish_keeping(&|_| false, &[])
    }
}

impl LineSink for Upload<'_> {
    fn push_line(&mut self, line: u64, record: Record) -> Result<(), HostError> {
        self.push_from(line, record)
    }

    fn must_read(&self) -> Option<&HashSet<u64>> {
        self.must_read.as_ref()
    }

    fn finish_lines(
        self: Box<Self>,
        kept: &dyn Fn(u64) -> bool,
        gone: &[(u64, i64)],
    ) -> Result<SyncStats, HostError> {
        self.finish_keeping(kept, gone)
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
        hashes: BTreeMap<String, HashMap<String, Acked>>,
        owners: BTreeMap<String, String>,
    }

    impl HashLedger for MemoryLedger {
        fn claim(&mut self, channel: &str, owner: &str) -> Result<(), StateError> {
            self.owners.insert(channel.into(), owner.into());
            Ok(())
        }
        fn known(&mut self, channel: &str) -> Result<HashMap<String, Acked>, StateError> {
            Ok(self.hashes.get(channel).cloned().unwrap_or_default())
        }
        fn acked(&mut self, channel: &str, key: &str) -> Result<Option<Acked>, StateError> {
            Ok(self.hashes.get(channel).and_then(|h| h.get(key)).copied())
        }
        fn each(
            &mut self,
            channel: &str,
            each: &mut dyn FnMut(&str, Acked),
        ) -> Result<(), StateError> {
            for (k, a) in self.hashes.get(channel).into_iter().flatten() {
                each(k, *a);
            }
            Ok(())
        }
        fn digest(&mut self, channel: &str) -> Result<KeyDigest, StateError> {
            Ok(KeyDigest::of(
                self.hashes
                    .get(channel)
                    .into_iter()
                    .flatten()
                    .map(|(k, a)| (k.as_str(), a.hash)),
            ))
        }
        fn ack(
            &mut self,
            channel: &str,
            upserts: &[(String, Acked)],
            deletes: &[String],
            _keep_digest: bool,
            _timeline: &BatchTimeline,
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
        fn reline(&mut self, channel: &str, moved: &[(String, Acked)]) -> Result<(), StateError> {
            let h = self.hashes.entry(channel.into()).or_default();
            for (k, a) in moved {
                if let Some(held) = h.get_mut(k) {
                    held.line = a.line;
                }
            }
            Ok(())
        }
        fn replace(
            &mut self,
            channel: &str,
            hashes: &HashMap<String, Acked>,
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

    /// Pushes `(key, name, line)` records as made from inventory lines, and finishes keeping
    /// the records of the lines in `kept`.
    fn push_lines(
        engine: &SyncEngine,
        records: &[(i64, &str, u64)],
        kept: &[u64],
    ) -> (Option<HashSet<u64>>, SyncStats) {
        push_indexed(engine, "devices", false, records, kept, &[])
    }

    /// [`push_lines`] to `channel`, saying whether a line index covers it, with the index's
    /// lines gone from the file (`(line, resource_id)`).
    fn push_indexed(
        engine: &SyncEngine,
        channel: &str,
        indexed: bool,
        records: &[(i64, &str, u64)],
        kept: &[u64],
        gone: &[(u64, i64)],
    ) -> (Option<HashSet<u64>>, SyncStats) {
        let mut sink = engine
            .open_lines(
                "tenant-attach",
                channel,
                SyncMode::Delta,
                indexed,
                &|| Box::new(Silent),
                &|_| {},
            )
            .unwrap();
        let must_read = sink.must_read().cloned();
        for (k, v, line) in records {
            let record = Record {
                key: k.to_string(),
                value: serde_json::json!({ "name": v }),
            };
            sink.push_line(*line, record).unwrap();
        }
        (
            must_read,
            sink.finish_lines(&|l| kept.contains(&l), gone).unwrap(),
        )
    }

    #[test]
    fn a_compact_ledger_gives_each_key_once_and_never_one_key_for_another() {
        let a = |hash| Acked { hash, line: 0 };
        let entries: Vec<CompactEntry> = (0..5_000)
            .map(|i| CompactEntry::new(&i.to_string(), a(i)))
            .collect();
        let mut ledger = CompactLedger::new(entries.clone()).expect("no two keys share a hash");
        assert_eq!(ledger.take("42"), Some(a(42)));
        assert_eq!(ledger.take("42"), None, "taken once");
        assert_eq!(ledger.take("5000"), None);
        assert_eq!(ledger.left().count(), 4_999);
        // A key with another's 64-bit hash but not its second hash is not that key.
        let mut twin = entries[7];
        twin.check ^= 1;
        let mut one = CompactLedger::new(vec![twin]).unwrap();
        assert_eq!(one.take("7"), None);
        // Two keys sharing a hash: the keys themselves are needed.
        assert!(CompactLedger::new(vec![entries[7], twin]).is_none());
    }

    #[test]
    fn a_delta_over_a_line_index_looks_the_ledger_up_key_by_key() {
        for channel in ["devices", "ext/inventory"] {
            let (_rt, target, ledger, engine) = setup();
            // The first round reads every line.
            push_indexed(
                &engine,
                channel,
                false,
                &[(1, "a", 11), (2, "b", 12), (3, "c", 13)],
                &[],
                &[],
            );
            // Line 11 unread; line 12 changed into 22 (device 2, new content); line 13 gone
            // (device 3 removed); device 4 new on line 14.
            let (must_read, stats) = push_indexed(
                &engine,
                channel,
                true,
                &[(2, "B", 22), (4, "d", 14)],
                &[11],
                &[(12, 2), (13, 3)],
            );
            assert_eq!(must_read, Some(HashSet::new()), "{channel}");
            assert_eq!(
                (stats.sent, stats.deleted, stats.total),
                (3, 1, 3),
                "{channel}"
            );
            let held = target.records.lock().unwrap()[channel].clone();
            assert_eq!(
                held.keys().collect::<Vec<_>>(),
                ["1", "2", "4"],
                "{channel}"
            );
            assert_eq!(held["2"]["name"], "B");
            let ledger = ledger.lock().unwrap();
            assert_eq!(ledger.hashes[channel]["2"].line, 22, "{channel}");
            assert!(!ledger.hashes[channel].contains_key("3"), "{channel}");
        }
    }

    #[test]
    fn lines_left_unread_keep_their_records_and_lost_records_name_their_lines() {
        let (_rt, target, ledger, engine) = setup();
        let (must_read, stats) =
            push_lines(&engine, &[(1, "a", 11), (2, "b", 12), (3, "c", 13)], &[]);
        assert_eq!(must_read, Some(HashSet::new()));
        assert_eq!(stats.sent, 3);
        assert_eq!(ledger.lock().unwrap().hashes["devices"]["2"].line, 12);
        // Line 12 unread (kept), line 13 gone, line 11 changed into line 21 with the same
        // record: one deletion, nothing else sent, and the ledger follows the new line.
        let (_, stats) = push_lines(&engine, &[(1, "a", 21)], &[12]);
        assert_eq!((stats.sent, stats.deleted, stats.total), (1, 1, 2));
        let held = target.records.lock().unwrap()["devices"].clone();
        assert_eq!(held.keys().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(ledger.lock().unwrap().hashes["devices"]["1"].line, 21);
        // The cloud loses key 2: its line must be read again, and its record is sent.
        target
            .records
            .lock()
            .unwrap()
            .get_mut("devices")
            .unwrap()
            .remove("2");
        let (must_read, stats) = push_lines(&engine, &[(2, "b", 12)], &[21]);
        assert_eq!(must_read, Some(HashSet::from([12])));
        assert_eq!((stats.sent, stats.total), (1, 2));
        // A key the ledger never recorded: no line can be trusted, every line is read.
        target
            .records
            .lock()
            .unwrap()
            .get_mut("devices")
            .unwrap()
            .insert("9".into(), serde_json::json!({"name": "x"}));
        let (must_read, stats) = push_lines(&engine, &[(1, "a", 21), (2, "b", 12)], &[]);
        assert_eq!(must_read, None);
        assert_eq!(stats.deleted, 1);
        // A full resend reads every line.
        let mut sink = engine
            .open_lines(
                "tenant-attach",
                "devices",
                SyncMode::Full,
                false,
                &|| Box::new(Silent),
                &|_| {},
            )
            .unwrap();
        assert!(sink.must_read().is_none());
        sink.push_line(21, Record::new("1", serde_json::json!({"name": "a"})))
            .unwrap();
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

    /// [`setup`] with the state store as the ledger.
    fn setup_state() -> (
        tokio::runtime::Runtime,
        tempfile::TempDir,
        Arc<Mutex<StateStore>>,
        SyncEngine,
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = Arc::new(Mutex::new(StateStore::open(dir.path()).unwrap()));
        let target = Arc::new(MemoryTarget::default());
        let engine = SyncEngine::new(rt.handle().clone(), Arc::new(Shared(target)), state.clone());
        (rt, dir, state, engine)
    }

    fn push_to(
        engine: &SyncEngine,
        channel: &str,
        records: &[(i64, serde_json::Value)],
    ) -> SyncStats {
        let mut sink = engine
            .open("p", channel, SyncMode::Delta, &|| Box::new(Silent), &|_| {})
            .unwrap();
        for (k, v) in records {
            sink.push(Record::new(k.to_string(), v.clone())).unwrap();
        }
        sink.finish().unwrap()
    }

    #[test]
    fn a_first_upload_writes_one_round_event_and_no_row_per_device() {
        let (_rt, _dir, state, engine) = setup_state();
        let site: Vec<(i64, serde_json::Value)> = (1..=(BATCH_RECORDS as i64 * 2 + 7))
            .map(|i| {
                (
                    i,
                    serde_json::json!({"name": format!("PC-{i}"), "os": "Windows 11"}),
                )
            })
            .collect();
        let stats = push_to(&engine, "devices", &site);
        assert_eq!(stats.sent, site.len() as u64);
        let s = state.lock().unwrap();
        assert_eq!(
            s.timeline_counts(),
            (0, 1),
            "three batches, one round event"
        );
        let events = s.device_events(42, None).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "first-upload");
        assert_eq!(events[0].detail["records"], site.len() as u64);
        assert_eq!(events[0].detail["finished"], true);
        drop(s);
        // Nothing changed: nothing written.
        push_to(&engine, "devices", &site);
        assert_eq!(state.lock().unwrap().timeline_counts(), (0, 1));
        // An extension channel is not keyed by device: no event at all.
        push_to(&engine, "ext/acme", &site[..3]);
        push_to(&engine, "ext/acme", &site[..2]);
        assert_eq!(state.lock().unwrap().timeline_counts(), (0, 1));
    }

    #[test]
    fn a_delta_writes_one_row_per_record_changed_added_or_removed() {
        let (_rt, _dir, state, engine) = setup_state();
        let record = |name: &str, os: &str| serde_json::json!({"name": name, "os": os});
        let mut site: Vec<(i64, serde_json::Value)> = (1..=50)
            .map(|i| (i, record(&format!("PC-{i}"), "Windows 10")))
            .collect();
        push_to(&engine, "devices", &site);
        site[4].1 = record("PC-5", "Windows 11");
        site.pop();
        site.push((77, record("PC-77", "Windows 11")));
        let stats = push_to(&engine, "devices", &site);
        assert_eq!((stats.upserted, stats.deleted), (2, 1));
        let s = state.lock().unwrap();
        assert_eq!(s.timeline_counts(), (3, 1), "one row per change");
        let kind = |rid: i64| -> Vec<(String, String, serde_json::Value)> {
            s.device_events(rid, None)
                .unwrap()
                .into_iter()
                .map(|e| {
                    (
                        e.kind,
                        e.detail["change"].as_str().unwrap_or("").to_string(),
                        e.detail["fields"].clone(),
                    )
                })
                .collect()
        };
        assert_eq!(
            kind(5),
            [
                ("uploaded".into(), "changed".into(), serde_json::Value::Null),
                (
                    "first-upload".into(),
                    String::new(),
                    serde_json::Value::Null
                ),
            ],
            "no earlier state per device after a first upload"
        );
        assert_eq!(
            kind(77),
            [(
                "uploaded".into(),
                "added".into(),
                serde_json::json!(["name", "os"])
            )]
        );
        assert_eq!(kind(50)[0].1, "removed");
        assert!(kind(6).iter().all(|(k, _, _)| k == "first-upload"));
        drop(s);
        // The next change of device 5 is diffed with the one before.
        site[4].1 = record("PC-5b", "Windows 11");
        push_to(&engine, "devices", &site);
        let s = state.lock().unwrap();
        let latest = &s.device_events(5, None).unwrap()[0];
        assert_eq!(latest.detail["fields"], serde_json::json!(["name"]));
    }

    #[test]
    fn a_first_upload_that_did_not_finish_is_resumed_as_one() {
        let (_rt, _dir, state, engine) = setup_state();
        // The first batch of a first upload was acknowledged, then the process died.
        state
            .lock()
            .unwrap()
            .ack_batch(
                "defender",
                &[("1".into(), Acked::hash(1))],
                &[],
                false,
                &BatchTimeline::FirstUpload,
            )
            .unwrap();
        let site: Vec<(i64, serde_json::Value)> =
            (1..=20).map(|i| (i, serde_json::json!({"n": i}))).collect();
        push_to(&engine, "defender", &site);
        let s = state.lock().unwrap();
        assert_eq!(s.timeline_counts(), (0, 1), "still the first upload");
        assert!(!s.first_upload_pending("defender").unwrap());
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

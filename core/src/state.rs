//! The state store: `.cloudattach/state.db` (SQLite) next to attach.toml. It remembers the
//! hierarchy's registration, each feature's applied settings, and per-record content hashes for
//! delta sync. Every write is its own transaction, so a process killed at any moment leaves the
//! last acknowledged step or batch recorded and nothing half-written.
//!
//! A lock file (`.cloudattach/lock`) makes a second concurrent `apply` or `sync` refuse and name
//! the holder.

use cloudattach_sdk::TimelineEvent;
use cloudattach_sdk::gateway::KeyDigest;
use cloudattach_sdk::timeline::RETENTION_DAYS;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An error of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// SQLite failed.
    #[error("state store {path}: {source}")]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// A file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database was written by a newer cloudattach, whose schema this build does not know.
    #[error(
        "state store {path} has schema version {found}, newer than {newest}, the newest this cloudattach knows: it was written by a newer cloudattach; run that version, or move the state directory away to start over (nothing was changed)"
    )]
    TooNew {
        /// The database.
        path: PathBuf,
        /// Its schema version.
        found: i64,
        /// The newest version this build knows.
        newest: i64,
    },
    /// Another process holds the lock.
    #[error(
        "another cloudattach is running on this state ({holder}); wait for it to finish, or stop it (lock file {path})"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as it wrote itself down.
        holder: String,
    },
}

const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE features (plugin_id TEXT PRIMARY KEY, settings TEXT NOT NULL, applied_at TEXT NOT NULL);
     CREATE TABLE sync_hashes (channel TEXT NOT NULL, key TEXT NOT NULL, hash INTEGER NOT NULL,
                               PRIMARY KEY (channel, key)) WITHOUT ROWID;
     CREATE TABLE sync_channels (channel TEXT PRIMARY KEY, last_sync TEXT NOT NULL);",
    // 2: the hash of the inventory line each record was made from (0: not made from one), so
    // a delta can leave the unchanged lines unread.
    "ALTER TABLE sync_hashes ADD COLUMN line INTEGER NOT NULL DEFAULT 0;",
    // 3: each channel's digest (record count and `KeyDigest` sum over key and hash), kept while
    // a delta writes the channel key by key, so the next delta compares it with the cloud's
    // census without reading the channel's records. No row: not known, computed when needed.
    "CREATE TABLE sync_digests (channel TEXT PRIMARY KEY, records INTEGER NOT NULL, sum INTEGER NOT NULL);",
    // 4: the device timeline, kept 30 days (`at`: Unix milliseconds). `timeline`: one row per
    // event of one device — kind 0, an acknowledged upload that changed its record on a
    // built-in channel (`change` 0 added, 1 changed, 2 removed; `shape` names the record's
    // top-level fields, `hashes` holds a 32-bit hash of each field's value in that order, so
    // the fields that changed are found by diffing two events without keeping the site's data;
    // `detail` the values kept for the channel), kind 1, a cloud action run on it (`detail`:
    // who, what, outcome). `timeline_rounds`: events of a whole round, such as a channel's
    // first upload, which writes no row per device.
    "CREATE TABLE timeline (id INTEGER PRIMARY KEY, resource_id INTEGER NOT NULL, at INTEGER NOT NULL,
                            kind INTEGER NOT NULL, channel TEXT, change INTEGER, shape INTEGER,
                            hashes BLOB, detail TEXT);
     CREATE INDEX timeline_device ON timeline (resource_id, at);
     CREATE INDEX timeline_at ON timeline (at);
     CREATE TABLE timeline_shapes (id INTEGER PRIMARY KEY, names TEXT NOT NULL UNIQUE);
     CREATE TABLE timeline_rounds (id INTEGER PRIMARY KEY, channel TEXT NOT NULL, kind TEXT NOT NULL,
                                   at INTEGER NOT NULL, records INTEGER NOT NULL,
                                   finished INTEGER NOT NULL DEFAULT 0);
     CREATE INDEX timeline_rounds_at ON timeline_rounds (at);",
];

/// What the ledger holds for one acknowledged record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    /// xxh3 of the record's JSON as sent.
    pub hash: u64,
    /// xxh3 of the inventory line the record was made from; 0 when it was not made from one.
    pub line: u64,
}

impl Acked {
    /// A record not made from an inventory line.
    pub fn hash(hash: u64) -> Acked {
        Acked { hash, line: 0 }
    }
}

/// What was applied before, as the state store remembers it.
pub trait AppliedState {
    /// The settings last applied for a plugin, if it is enabled.
    fn applied_settings(&self, plugin_id: &str) -> Option<serde_json::Value>;
    /// Every feature enabled, by id — plan names the ones whose plugin is not loaded.
    fn applied_ids(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the plugin has uploaded records to a channel it owns (its records then follow
    /// what it depends on, such as the upload scope).
    fn uploads(&self, _plugin_id: &str) -> bool {
        false
    }
}

/// Nothing applied yet (a site without state).
pub struct NothingApplied;

impl AppliedState for NothingApplied {
    fn applied_settings(&self, _plugin_id: &str) -> Option<serde_json::Value> {
        None
    }
}

/// The key of the meta table that records which plugin owns an upload channel.
pub fn channel_owner_key(channel: &str) -> String {
    format!("channel-owner/{channel}")
}

/// The state of one attached site.
pub struct StateStore {
    conn: Connection,
    path: PathBuf,
    /// When the timeline's old events were last deleted (Unix ms; 0: not yet).
    pruned_at: std::cell::Cell<i64>,
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The schema version of the store at `path`, refused ([`StateError::TooNew`]) when it is above
/// the newest this build knows.
/// The digest `sync_digests` keeps for a channel, if it keeps one.
fn kept_digest(conn: &Connection, channel: &str) -> rusqlite::Result<Option<KeyDigest>> {
    conn.query_row(
        "SELECT records, sum FROM sync_digests WHERE channel = ?1",
        [channel],
        |r| {
            Ok(KeyDigest {
                count: r.get::<_, i64>(0)? as u64,
                sum: r.get::<_, i64>(1)? as u64,
            })
        },
    )
    .optional()
}

fn known_version(conn: &Connection, path: &Path) -> Result<i64, StateError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|source| StateError::Sqlite {
            path: path.to_path_buf(),
            source,
        })?;
    let newest = MIGRATIONS.len() as i64;
    if version > newest {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found: version,
            newest,
        });
    }
    Ok(version)
}

impl StateStore {
    /// Refuses a store in `dir` written by a newer cloudattach ([`StateError::TooNew`]) without
    /// creating or changing anything: no store is fine (it will be created). Commands that
    /// change things call it before they take the lock, start a cloud or sign anyone in.
    pub fn check_version(dir: &Path) -> Result<(), StateError> {
        let path = dir.join("state.db");
        if !path.is_file() {
            return Ok(());
        }
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        // Read and write, but never create: reading the version writes nothing.
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        known_version(&conn, &path).map(|_| ())
    }

    /// Opens (creating and migrating) the store in `dir`.
    pub fn open(dir: &Path) -> Result<StateStore, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("state.db");
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        // The version is checked before anything is written (switching to WAL writes the file
        // header): a newer build's schema is refused untouched, not used as if it were ours.
        let version = known_version(&conn, &path)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(err)?;
            tx.execute_batch(m).map_err(err)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(err)?;
            tx.commit().map_err(err)?;
        }
        Ok(StateStore {
            conn,
            path,
            pruned_at: std::cell::Cell::new(0),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> StateError + '_ {
        |source| StateError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// A value of the meta table.
    pub fn meta(&self, key: &str) -> Result<Option<String>, StateError> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(self.err())
    }

    /// Sets a value of the meta table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.conn
            .execute("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value", [key, value])
            .map(|_| ())
            .map_err(self.err())
    }

    /// Removes a value of the meta table.
    pub fn delete_meta(&self, key: &str) -> Result<(), StateError> {
        self.conn
            .execute("DELETE FROM meta WHERE key = ?1", [key])
            .map(|_| ())
            .map_err(self.err())
    }

    /// The upload channels a plugin last synced (recorded under `channel-owner/<channel>`).
    pub fn channels_owned_by(&self, plugin_id: &str) -> Result<Vec<String>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT substr(key, 15) FROM meta WHERE key LIKE 'channel-owner/%' AND value = ?1 ORDER BY key")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([plugin_id], |r| r.get::<_, String>(0))
            .map_err(self.err())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.err())
    }

    /// Records that `plugin_id` uploads to `channel`, so disabling it forgets the channel.
    pub fn set_channel_owner(&self, channel: &str, plugin_id: &str) -> Result<(), StateError> {
        self.set_meta(&channel_owner_key(channel), plugin_id)
    }

    /// Forgets a disabled feature: its settings and the hashes of the channels it uploaded.
    pub fn forget_feature(&self, plugin_id: &str) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        let channels = self.channels_owned_by(plugin_id)?;
        for c in &channels {
            self.delete_meta(&channel_owner_key(c))?;
        }
        let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
        self.remove_feature(plugin_id, &refs)
    }

    /// Records a feature as applied with these settings.
    pub fn set_feature(
        &self,
        plugin_id: &str,
        settings: &serde_json::Value,
    ) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        self.conn
            .execute(
                "INSERT INTO features (plugin_id, settings, applied_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(plugin_id) DO UPDATE SET settings = excluded.settings, applied_at = excluded.applied_at",
                params![plugin_id, settings.to_string(), now_rfc3339()],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Forgets a feature (disabled) and its sync hashes.
    pub fn remove_feature(&self, plugin_id: &str, channels: &[&str]) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        self.conn
            .execute("DELETE FROM features WHERE plugin_id = ?1", [plugin_id])
            .map_err(self.err())?;
        for c in channels {
            self.clear_channel(c)?;
        }
        Ok(())
    }

    /// Every applied feature with its settings.
    pub fn features(&self) -> Result<Vec<(String, serde_json::Value)>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT plugin_id, settings FROM features ORDER BY plugin_id")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.err())?;
        let mut out = vec![];
        for row in rows {
            let (id, s) = row.map_err(self.err())?;
            out.push((
                id,
                serde_json::from_str(&s).unwrap_or(serde_json::Value::Null),
            ));
        }
        Ok(out)
    }

    /// The hashes of every record last acknowledged on a channel.
    pub fn channel_hashes(&self, channel: &str) -> Result<HashMap<String, Acked>, StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, hash, line FROM sync_hashes WHERE channel = ?1")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([channel], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    Acked {
                        hash: r.get::<_, i64>(1)? as u64,
                        line: r.get::<_, i64>(2)? as u64,
                    },
                ))
            })
            .map_err(self.err())?;
        let mut out = HashMap::new();
        for row in rows {
            let (k, a) = row.map_err(self.err())?;
            out.insert(k, a);
        }
        Ok(out)
    }

    /// What the ledger holds for one key of a channel.
    pub fn acked(&self, channel: &str, key: &str) -> Result<Option<Acked>, StateError> {
        self.conn
            .prepare_cached("SELECT hash, line FROM sync_hashes WHERE channel = ?1 AND key = ?2")
            .and_then(|mut s| {
                s.query_row(params![channel, key], |r| {
                    Ok(Acked {
                        hash: r.get::<_, i64>(0)? as u64,
                        line: r.get::<_, i64>(1)? as u64,
                    })
                })
                .optional()
            })
            .map_err(self.err())
    }

    /// Calls `each` with every key of a channel and what the ledger holds for it, streamed.
    pub fn each_acked(
        &self,
        channel: &str,
        each: &mut dyn FnMut(&str, Acked),
    ) -> Result<(), StateError> {
        let mut stmt = self
            .conn
            .prepare("SELECT key, hash, line FROM sync_hashes WHERE channel = ?1")
            .map_err(self.err())?;
        let mut rows = stmt.query([channel]).map_err(self.err())?;
        while let Some(r) = rows.next().map_err(self.err())? {
            let key = r
                .get_ref(0)
                .and_then(|v| Ok(v.as_str()?))
                .map_err(self.err())?;
            let acked = Acked {
                hash: r.get::<_, i64>(1).map_err(self.err())? as u64,
                line: r.get::<_, i64>(2).map_err(self.err())? as u64,
            };
            each(key, acked);
        }
        Ok(())
    }

    /// The digest of a channel's records (count, and the sum over key and hash the cloud's census
    /// carries): the one kept, or computed from the records (streamed) and kept.
    pub fn channel_digest(&mut self, channel: &str) -> Result<KeyDigest, StateError> {
        let kept = kept_digest(&self.conn, channel).map_err(self.err())?;
        if let Some(d) = kept {
            return Ok(d);
        }
        let mut digest = KeyDigest::default();
        self.each_acked(channel, &mut |k, a| digest.add(k, a.hash))?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO sync_digests (channel, records, sum) VALUES (?1, ?2, ?3)",
                params![channel, digest.count as i64, digest.sum as i64],
            )
            .map_err(self.err())?;
        Ok(digest)
    }

    /// Records one acknowledged batch: upserted keys with their hashes and lines, deleted keys.
    /// With `keep_digest`, the channel's kept digest follows the change (each key's previous
    /// hash is read: for deltas, which write few keys); without, it is dropped (computed again
    /// when next needed). The device timeline's events of the batch (`timeline`) are written in
    /// the same transaction: a batch is recorded with its events or not at all.
    pub fn ack_batch(
        &mut self,
        channel: &str,
        upserts: &[(String, Acked)],
        deletes: &[String],
        keep_digest: bool,
        timeline: &BatchTimeline,
    ) -> Result<(), StateError> {
        let now = now_ms();
        let prune = self.prune_due(now) && *timeline != BatchTimeline::Off;
        let path = self.path.clone();
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut digest = if keep_digest {
                kept_digest(&tx, channel).map_err(err)?
            } else {
                None
            };
            let mut previous = tx
                .prepare_cached("SELECT hash FROM sync_hashes WHERE channel = ?1 AND key = ?2")
                .map_err(err)?;
            let mut before = |k: &str| {
                previous
                    .query_row(params![channel, k], |r| r.get::<_, i64>(0))
                    .optional()
                    .map(|h| h.map(|h| h as u64))
            };
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO sync_hashes (channel, key, hash, line) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT(channel, key) DO UPDATE SET hash = excluded.hash, line = excluded.line",
                )
                .map_err(err)?;
            let mut del = tx
                .prepare_cached("DELETE FROM sync_hashes WHERE channel = ?1 AND key = ?2")
                .map_err(err)?;
            // Key by key in the order written, each previous hash read after the writes before
            // it: a key twice in one batch counts once.
            for (k, a) in upserts {
                if let Some(d) = digest.as_mut() {
                    if let Some(h) = before(k).map_err(err)? {
                        d.remove(k, h);
                    }
                    d.add(k, a.hash);
                }
                up.execute(params![channel, k, a.hash as i64, a.line as i64])
                    .map_err(err)?;
            }
            for k in deletes {
                if let Some(d) = digest.as_mut()
                    && let Some(h) = before(k).map_err(err)?
                {
                    d.remove(k, h);
                }
                del.execute(params![channel, k]).map_err(err)?;
            }
            match digest {
                Some(d) => tx.execute(
                    "UPDATE sync_digests SET records = ?2, sum = ?3 WHERE channel = ?1",
                    params![channel, d.count as i64, d.sum as i64],
                ),
                None => tx.execute("DELETE FROM sync_digests WHERE channel = ?1", [channel]),
            }
            .map_err(err)?;
            tx.execute(
                "INSERT INTO sync_channels (channel, last_sync) VALUES (?1, ?2)
                 ON CONFLICT(channel) DO UPDATE SET last_sync = excluded.last_sync",
                params![channel, now_rfc3339()],
            )
            .map_err(err)?;
            write_batch_events(&tx, channel, upserts.len(), deletes, timeline, now).map_err(err)?;
            if prune {
                prune_timeline(&tx, now).map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        if prune {
            self.pruned_at.set(now);
        }
        Ok(())
    }

    /// Records that unchanged records (same key, same hash) are now made from other lines: the
    /// lines change, the hashes and the channel's digest do not.
    pub fn reline(&mut self, channel: &str, moved: &[(String, Acked)]) -> Result<(), StateError> {
        let path = self.path.clone();
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        {
            let mut up = tx
                .prepare_cached("UPDATE sync_hashes SET line = ?3 WHERE channel = ?1 AND key = ?2")
                .map_err(err)?;
            for (k, a) in moved {
                up.execute(params![channel, k, a.line as i64])
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Replaces a channel's acknowledged hashes with `hashes` (after reconciling the ledger with
    /// the keys the cloud actually holds), in one transaction.
    pub fn replace_channel(
        &mut self,
        channel: &str,
        hashes: &HashMap<String, Acked>,
    ) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        let path = self.path.clone();
        let err = |source| StateError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute("DELETE FROM sync_hashes WHERE channel = ?1", [channel])
            .map_err(err)?;
        {
            let mut up = tx
                .prepare_cached(
                    "INSERT INTO sync_hashes (channel, key, hash, line) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            for (k, a) in hashes {
                up.execute(params![channel, k, a.hash as i64, a.line as i64])
                    .map_err(err)?;
            }
        }
        let digest = KeyDigest::of(hashes.iter().map(|(k, a)| (k.as_str(), a.hash)));
        tx.execute(
            "INSERT OR REPLACE INTO sync_digests (channel, records, sum) VALUES (?1, ?2, ?3)",
            params![channel, digest.count as i64, digest.sum as i64],
        )
        .map_err(err)?;
        tx.commit().map_err(err)
    }

    /// The directory the store is in (`.cloudattach`).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// Forgets a channel's hashes (after a disable, or before a full resend).
    pub fn clear_channel(&self, channel: &str) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        self.conn
            .execute("DELETE FROM sync_hashes WHERE channel = ?1", [channel])
            .map_err(self.err())?;
        self.conn
            .execute("DELETE FROM sync_digests WHERE channel = ?1", [channel])
            .map_err(self.err())?;
        self.conn
            .execute("DELETE FROM sync_channels WHERE channel = ?1", [channel])
            .map(|_| ())
            .map_err(self.err())
    }

    /// Forgets everything (after detach), the device timeline included.
    pub fn reset(&self) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        self.conn
            .execute_batch("DELETE FROM features; DELETE FROM sync_hashes; DELETE FROM sync_digests; DELETE FROM sync_channels; DELETE FROM meta;
                            DELETE FROM timeline; DELETE FROM timeline_rounds; DELETE FROM timeline_shapes;")
            .map_err(self.err())
    }

    // The device timeline. Its writes are not ledger changes: none of them touches the line
    // index.

    /// Whether the timeline's old events are due for deletion (at most once a minute: once per
    /// round).
    fn prune_due(&self, now: i64) -> bool {
        now - self.pruned_at.get() >= 60_000
    }

    /// Whether `channel`'s first upload began and did not finish (its round event is open): the
    /// upload that resumes it is still a first upload, which writes no row per device.
    pub fn first_upload_pending(&self, channel: &str) -> Result<bool, StateError> {
        self.conn
            .query_row(
                "SELECT 1 FROM timeline_rounds WHERE channel = ?1 AND kind = 'first-upload' AND finished = 0",
                [channel],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.err())
    }

    /// Records that `channel`'s first upload finished, with the records the channel holds.
    pub fn first_upload_done(&self, channel: &str, records: u64) -> Result<(), StateError> {
        self.conn
            .execute(
                "UPDATE timeline_rounds SET finished = 1, records = ?2
                 WHERE channel = ?1 AND kind = 'first-upload' AND finished = 0",
                params![channel, records as i64],
            )
            .map(|_| ())
            .map_err(self.err())
    }

    /// Records a cloud action run on a device (`detail`: who asked, what, the outcome), in one
    /// short write that SQLite's own locking serializes with other processes' (no state lock).
    pub fn record_action(
        &self,
        resource_id: i64,
        detail: &serde_json::Value,
    ) -> Result<(), StateError> {
        let now = now_ms();
        self.conn
            .execute(
                "INSERT INTO timeline (resource_id, at, kind, detail) VALUES (?1, ?2, 1, ?3)",
                params![resource_id, now, detail.to_string()],
            )
            .map_err(self.err())?;
        if self.prune_due(now) {
            prune_timeline(&self.conn, now).map_err(self.err())?;
            self.pruned_at.set(now);
        }
        Ok(())
    }

    /// A device's timeline events since `since` (Unix ms; at most the retention), newest first:
    /// its uploads (the fields that changed found by diffing each event with the one before it
    /// on the same channel), the actions run on it, and the round events of the channels that
    /// hold its record.
    pub fn device_events(
        &self,
        resource_id: i64,
        since: Option<i64>,
    ) -> Result<Vec<TimelineEvent>, StateError> {
        let now = now_ms();
        let cutoff = now - TIMELINE_RETENTION_MS;
        let since = since.unwrap_or(cutoff).max(cutoff);
        let mut events: Vec<(i64, i64, TimelineEvent)> = Vec::new();
        // Per channel, the device's first event kept (when, and how it changed the record).
        let mut channels: HashMap<String, (i64, Change)> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare(
                    "SELECT t.id, t.at, t.kind, t.channel, t.change, s.names, t.hashes, t.detail
                     FROM timeline t LEFT JOIN timeline_shapes s ON s.id = t.shape
                     WHERE t.resource_id = ?1 AND t.at >= ?2 ORDER BY t.at, t.id",
                )
                .map_err(self.err())?;
            let mut rows = stmt
                .query(params![resource_id, cutoff])
                .map_err(self.err())?;
            // Per channel, the fields of the event before (`None`: not known).
            let mut before: HashMap<String, Option<FieldState>> = HashMap::new();
            while let Some(r) = rows.next().map_err(self.err())? {
                let row = (|| -> rusqlite::Result<_> {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                        r.get::<_, Option<String>>(5)?,
                        r.get::<_, Option<Vec<u8>>>(6)?,
                        r.get::<_, Option<String>>(7)?,
                    ))
                })()
                .map_err(self.err())?;
                let (id, at, kind, channel, change, names, hashes, detail) = row;
                let detail: serde_json::Value = detail
                    .and_then(|d| serde_json::from_str(&d).ok())
                    .unwrap_or(serde_json::Value::Null);
                let event = match (kind, channel) {
                    (0, Some(channel)) => {
                        let change = Change::from_code(change.unwrap_or(1));
                        if !channels.contains_key(&channel) {
                            channels.insert(channel.clone(), (at, change));
                        }
                        let now_fields = match (&names, &hashes) {
                            (Some(n), Some(h)) => FieldState::read(n, h, &detail),
                            _ => None,
                        };
                        let previous = before.remove(&channel).flatten();
                        let e = uploaded_event(
                            &channel,
                            change,
                            previous.as_ref(),
                            now_fields.as_ref(),
                            &detail,
                        );
                        before.insert(channel, now_fields);
                        TimelineEvent::new(rfc3339_ms(at), "uploaded", e)
                    }
                    _ => TimelineEvent::new(rfc3339_ms(at), "action", detail),
                };
                if at >= since {
                    events.push((at, id, event));
                }
            }
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, channel, kind, at, records, finished FROM timeline_rounds
                 WHERE at >= ?1 ORDER BY at, id",
            )
            .map_err(self.err())?;
        let rounds = stmt
            .query_map([since], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)? != 0,
                ))
            })
            .map_err(self.err())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.err())?;
        let key = resource_id.to_string();
        for (id, channel, kind, at, records, finished) in rounds {
            // A round event concerns the device when the channel holds its record (or did),
            // unless the record was added after the round.
            let holds = match channels.get(&channel) {
                Some(&(first, Change::Added)) if first >= at => false,
                Some(_) => true,
                None => self.acked(&channel, &key)?.is_some(),
            };
            if holds {
                let detail = serde_json::json!({
                    "channel": channel,
                    "records": records,
                    "finished": finished,
                });
                // A round event is older than the device's events of the same instant.
                events.push((
                    at,
                    i64::MIN + id,
                    TimelineEvent::new(rfc3339_ms(at), kind, detail),
                ));
            }
        }
        events.sort_by_key(|e| std::cmp::Reverse((e.0, e.1)));
        Ok(events.into_iter().map(|(_, _, e)| e).collect())
    }
}

#[cfg(test)]
impl StateStore {
    /// The timeline's rows per device and round events.
    pub(crate) fn timeline_counts(&self) -> (i64, i64) {
        self.conn
            .query_row(
                "SELECT (SELECT count(*) FROM timeline), (SELECT count(*) FROM timeline_rounds)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }
}

/// How long the device timeline keeps events, in milliseconds.
pub const TIMELINE_RETENTION_MS: i64 = RETENTION_DAYS as i64 * 24 * 3600 * 1000;

/// Milliseconds since the Unix epoch, now.
pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Unix milliseconds as RFC 3339 (UTC) with exactly three fraction digits, so that the texts
/// sort as the times do.
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .map(|secs| format!("{}.{:03}Z", secs.trim_end_matches('Z'), ms.rem_euclid(1000)))
        .unwrap_or_default()
}

#[cfg(test)]
mod time_text {
    #[test]
    fn milliseconds_always_have_three_digits() {
        assert_eq!(
            super::rfc3339_ms(1_764_872_962_180),
            "2025-12-04T18:29:22.180Z"
        );
        assert_eq!(
            super::rfc3339_ms(1_764_872_962_005),
            "2025-12-04T18:29:22.005Z"
        );
        assert_eq!(
            super::parse_rfc3339_ms("2025-12-04T18:29:22.180Z"),
            Some(1_764_872_962_180)
        );
    }
}

/// An RFC 3339 date as Unix milliseconds.
pub(crate) fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Deletes the timeline's events older than the retention.
fn prune_timeline(conn: &Connection, now: i64) -> rusqlite::Result<()> {
    let cutoff = now - TIMELINE_RETENTION_MS;
    conn.execute("DELETE FROM timeline WHERE at < ?1", [cutoff])?;
    conn.execute("DELETE FROM timeline_rounds WHERE at < ?1", [cutoff])?;
    Ok(())
}

/// Writes the timeline's events of one acknowledged batch of `channel` (in its transaction).
fn write_batch_events(
    conn: &Connection,
    channel: &str,
    upserts: usize,
    deletes: &[String],
    timeline: &BatchTimeline,
    now: i64,
) -> rusqlite::Result<()> {
    match timeline {
        BatchTimeline::Off => Ok(()),
        BatchTimeline::FirstUpload => {
            let counted = conn.execute(
                "UPDATE timeline_rounds SET records = records + ?2
                 WHERE channel = ?1 AND kind = 'first-upload' AND finished = 0",
                params![channel, upserts as i64],
            )?;
            if counted == 0 {
                conn.execute(
                    "INSERT INTO timeline_rounds (channel, kind, at, records) VALUES (?1, 'first-upload', ?2, ?3)",
                    params![channel, now, upserts as i64],
                )?;
            }
            Ok(())
        }
        BatchTimeline::Records(events) => {
            let mut insert = conn.prepare_cached(
                "INSERT INTO timeline (resource_id, at, kind, channel, change, shape, hashes, detail)
                 VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut shapes: HashMap<&str, i64> = HashMap::new();
            for e in events {
                let Ok(rid) = e.key.parse::<i64>() else {
                    continue;
                };
                let shape = match shapes.get(e.shape.as_str()) {
                    Some(id) => *id,
                    None => {
                        conn.prepare_cached(
                            "INSERT OR IGNORE INTO timeline_shapes (names) VALUES (?1)",
                        )?
                        .execute([&e.shape])?;
                        let id: i64 = conn
                            .prepare_cached("SELECT id FROM timeline_shapes WHERE names = ?1")?
                            .query_row([&e.shape], |r| r.get(0))?;
                        shapes.insert(&e.shape, id);
                        id
                    }
                };
                insert.execute(params![
                    rid,
                    now,
                    channel,
                    e.change.code(),
                    shape,
                    e.hashes,
                    e.kept
                ])?;
            }
            for k in deletes {
                if let Ok(rid) = k.parse::<i64>() {
                    insert.execute(params![
                        rid,
                        now,
                        channel,
                        Change::Removed.code(),
                        None::<i64>,
                        None::<Vec<u8>>,
                        None::<String>
                    ])?;
                }
            }
            Ok(())
        }
    }
}

/// How an upload changed a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The ledger did not hold it.
    Added,
    /// The ledger held it with another hash.
    Changed,
    /// Deleted.
    Removed,
}

impl Change {
    fn code(self) -> i64 {
        match self {
            Change::Added => 0,
            Change::Changed => 1,
            Change::Removed => 2,
        }
    }
    fn from_code(code: i64) -> Change {
        match code {
            0 => Change::Added,
            2 => Change::Removed,
            _ => Change::Changed,
        }
    }
    /// The name in the timeline's answer.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Changed => "changed",
            Change::Removed => "removed",
        }
    }
}

/// The timeline's event of one record an upload sends (added or changed): its top-level field
/// names and a 32-bit hash of each field's JSON value — enough to name the fields that changed
/// between two events, without keeping the site's data —, and the values the channel keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordEvent {
    /// The record's key (a device's resource id).
    pub key: String,
    /// Added or changed.
    pub change: Change,
    /// The record's top-level field names, as a JSON array.
    pub shape: String,
    /// A 32-bit hash (xxh3, truncated) of each field's JSON value, in the shape's order, little
    /// endian.
    pub hashes: Vec<u8>,
    /// The kept fields' values, as a JSON object (`None`: none kept).
    pub kept: Option<String>,
}

impl RecordEvent {
    /// The event of `value` (the record as sent) under `key`; `kept` names the fields whose
    /// values are kept ([`Channel::timeline_kept_fields`](cloudattach_sdk::rules::Channel)).
    pub fn of(key: &str, change: Change, value: &serde_json::Value, kept: &[&str]) -> RecordEvent {
        let empty = serde_json::Map::new();
        let fields = value.as_object().unwrap_or(&empty);
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let mut hashes = Vec::with_capacity(fields.len() * 4);
        for v in fields.values() {
            let json = serde_json::to_vec(v).unwrap_or_default();
            hashes.extend_from_slice(&(xxhash_rust::xxh3::xxh3_64(&json) as u32).to_le_bytes());
        }
        let kept_values: serde_json::Map<String, serde_json::Value> = kept
            .iter()
            .filter_map(|k| fields.get(*k).map(|v| (k.to_string(), v.clone())))
            .collect();
        RecordEvent {
            key: key.to_string(),
            change,
            shape: serde_json::to_string(&names).unwrap_or_default(),
            hashes,
            kept: (!kept_values.is_empty())
                .then(|| serde_json::Value::Object(kept_values).to_string()),
        }
    }
}

/// What the device timeline records with one acknowledged batch.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum BatchTimeline {
    /// Nothing: a channel whose keys are not devices' resource ids.
    #[default]
    Off,
    /// Part of the channel's first upload: the round's one event counts the batch; no row per
    /// device.
    FirstUpload,
    /// One row per record: the events of the upserts that changed the ledger, and one
    /// `removed` per deleted key.
    Records(Vec<RecordEvent>),
}

/// The fields of one uploaded event as stored: name → hash, and the kept values.
struct FieldState {
    hashes: Vec<(String, u32)>,
    kept: serde_json::Value,
}

impl FieldState {
    fn read(names: &str, hashes: &[u8], kept: &serde_json::Value) -> Option<FieldState> {
        let names: Vec<String> = serde_json::from_str(names).ok()?;
        if names.len() * 4 != hashes.len() {
            return None;
        }
        let hashes = names
            .into_iter()
            .zip(hashes.chunks_exact(4))
            .map(|(n, h)| (n, u32::from_le_bytes([h[0], h[1], h[2], h[3]])))
            .collect();
        Some(FieldState {
            hashes,
            kept: kept.clone(),
        })
    }
}

/// The detail of an `uploaded` event: the fields that changed since `previous` (all of them
/// for a record added; `null` when the earlier state is not known), and the kept values.
fn uploaded_event(
    channel: &str,
    change: Change,
    previous: Option<&FieldState>,
    now: Option<&FieldState>,
    kept: &serde_json::Value,
) -> serde_json::Value {
    let fields: Option<Vec<String>> = match (change, previous, now) {
        (Change::Removed, _, _) => None,
        (Change::Added, _, Some(now)) => Some(now.hashes.iter().map(|(n, _)| n.clone()).collect()),
        (Change::Changed, Some(before), Some(now)) => {
            let old: HashMap<&str, u32> = before
                .hashes
                .iter()
                .map(|(n, h)| (n.as_str(), *h))
                .collect();
            let new: HashMap<&str, u32> =
                now.hashes.iter().map(|(n, h)| (n.as_str(), *h)).collect();
            let mut changed: Vec<String> = now
                .hashes
                .iter()
                .filter(|(n, h)| old.get(n.as_str()) != Some(h))
                .map(|(n, _)| n.clone())
                .chain(
                    before
                        .hashes
                        .iter()
                        .filter(|(n, _)| !new.contains_key(n.as_str()))
                        .map(|(n, _)| n.clone()),
                )
                .collect();
            changed.sort();
            Some(changed)
        }
        _ => None,
    };
    let mut detail = serde_json::json!({
        "channel": channel,
        "change": change.as_str(),
        "fields": fields,
    });
    if change == Change::Changed && fields.is_none() {
        detail["note"] = "the earlier state is not known: no earlier upload of this record is kept (the channel's first upload keeps none per device, and events are kept 30 days)".into();
    }
    if let serde_json::Value::Object(values) = kept {
        for (k, v) in values {
            detail[k] = v.clone();
            if let Some(was) = previous.and_then(|p| p.kept.get(k))
                && was != v
            {
                detail[format!("previous_{k}")] = was.clone();
            }
        }
    }
    detail
}

impl AppliedState for StateStore {
    fn uploads(&self, plugin_id: &str) -> bool {
        self.channels_owned_by(plugin_id)
            .is_ok_and(|channels| !channels.is_empty())
    }
    fn applied_settings(&self, plugin_id: &str) -> Option<serde_json::Value> {
        self.conn
            .query_row(
                "SELECT settings FROM features WHERE plugin_id = ?1",
                [plugin_id],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .ok()
            .flatten()
            .and_then(|s| serde_json::from_str(&s).ok())
    }
    fn applied_ids(&self) -> Vec<String> {
        self.features()
            .map(|f| f.into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default()
    }
}

/// The lock on a state directory, held until dropped.
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock or says who holds it.
    pub fn acquire(dir: &Path, command: &str) -> Result<StateLock, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("lock");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                let holder = if holder.is_empty() {
                    "unknown process".to_string()
                } else {
                    holder
                };
                return Err(StateError::Locked { path, holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        write!(
            file,
            "pid {}: cloudattach {command}, since {}",
            std::process::id(),
            now_rfc3339()
        )
        .map_err(io)?;
        file.flush().map_err(io)?;
        Ok(StateLock { _file: file })
    }
}

/// Writes a file readable only by its owner (mode 0600 on Unix), replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.create(true).write(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io)?;
        f.write_all(contents).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn features_and_hashes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = StateStore::open(dir.path()).unwrap();
            s.set_feature("tenant-attach", &serde_json::json!({"upload": "all"}))
                .unwrap();
            s.ack_batch(
                "devices",
                &[("1".into(), Acked::hash(11)), ("2".into(), Acked::hash(22))],
                &[],
                false,
                &BatchTimeline::Off,
            )
            .unwrap();
            s.ack_batch(
                "devices",
                &[("2".into(), Acked::hash(23))],
                &["1".into()],
                false,
                &BatchTimeline::Off,
            )
            .unwrap();
        }
        let s = StateStore::open(dir.path()).unwrap();
        assert_eq!(
            s.applied_settings("tenant-attach"),
            Some(serde_json::json!({"upload": "all"}))
        );
        assert_eq!(s.applied_settings("co-management"), None);
        let h = s.channel_hashes("devices").unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h["2"], Acked::hash(23));
        s.remove_feature("tenant-attach", &["devices"]).unwrap();
        assert!(s.channel_hashes("devices").unwrap().is_empty());
        assert_eq!(s.applied_settings("tenant-attach"), None);
    }

    #[test]
    fn a_channels_digest_is_kept_through_the_deltas_that_write_it_and_dropped_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let a = |hash, line| Acked { hash, line };
        let kept = |s: &StateStore| -> Option<(i64, i64)> {
            s.conn
                .query_row(
                    "SELECT records, sum FROM sync_digests WHERE channel = 'devices'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .unwrap()
        };
        s.ack_batch(
            "devices",
            &[
                ("1".into(), a(10, 1)),
                ("2".into(), a(20, 2)),
                ("3".into(), a(30, 3)),
            ],
            &[],
            false,
            &BatchTimeline::Off,
        )
        .unwrap();
        assert_eq!(kept(&s), None, "a full write keeps no digest");
        let all = KeyDigest::of([("1", 10), ("2", 20), ("3", 30)]);
        assert_eq!(s.channel_digest("devices").unwrap(), all);
        assert_eq!(
            kept(&s),
            Some((3, all.sum as i64)),
            "computed once, then kept"
        );
        // A delta: one changed, one gone, one new, one deleted that was never there.
        s.ack_batch(
            "devices",
            &[("2".into(), a(21, 4)), ("4".into(), a(40, 5))],
            &["3".into(), "9".into()],
            true,
            &BatchTimeline::Off,
        )
        .unwrap();
        let now = KeyDigest::of([("1", 10), ("2", 21), ("4", 40)]);
        assert_eq!(kept(&s), Some((3, now.sum as i64)), "followed key by key");
        assert_eq!(s.channel_digest("devices").unwrap(), now);
        // One key twice in a batch, and a key written then deleted: counted as written.
        s.ack_batch(
            "devices",
            &[("6".into(), a(60, 8)), ("6".into(), a(61, 9))],
            &["6".into()],
            true,
            &BatchTimeline::Off,
        )
        .unwrap();
        assert_eq!(kept(&s), Some((3, now.sum as i64)), "{:?}", kept(&s));
        // A line moved, same record: the digest does not move.
        s.ack_batch(
            "devices",
            &[("1".into(), a(10, 6))],
            &[],
            true,
            &BatchTimeline::Off,
        )
        .unwrap();
        assert_eq!(kept(&s), Some((3, now.sum as i64)));
        // Any other write drops it; it is computed again, right.
        s.ack_batch(
            "devices",
            &[("5".into(), a(50, 7))],
            &[],
            false,
            &BatchTimeline::Off,
        )
        .unwrap();
        assert_eq!(kept(&s), None);
        let five = KeyDigest::of([("1", 10), ("2", 21), ("4", 40), ("5", 50)]);
        assert_eq!(s.channel_digest("devices").unwrap(), five);
        let replaced: HashMap<String, Acked> = [("7".to_string(), a(70, 0))].into();
        s.replace_channel("devices", &replaced).unwrap();
        assert_eq!(
            kept(&s),
            Some((1, KeyDigest::of([("7", 70)]).sum as i64)),
            "a reconciled ledger keeps its digest"
        );
        s.clear_channel("devices").unwrap();
        assert_eq!(kept(&s), None);
        assert_eq!(s.channel_digest("devices").unwrap(), KeyDigest::default());
    }

    /// The events of records as the sync engine makes them.
    fn changed(key: &str, change: Change, value: serde_json::Value) -> RecordEvent {
        RecordEvent::of(key, change, &value, &["state"])
    }

    fn timeline_rows(s: &StateStore) -> i64 {
        s.conn
            .query_row("SELECT count(*) FROM timeline", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn an_older_state_opens_and_migrates() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A state written by the build before the timeline: schema 3, a ledger row.
            let c = Connection::open(dir.path().join("state.db")).unwrap();
            for m in &MIGRATIONS[..3] {
                c.execute_batch(m).unwrap();
            }
            c.execute_batch(
                "INSERT INTO sync_hashes (channel, key, hash, line) VALUES ('devices', '7', 70, 700);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        StateStore::check_version(dir.path()).expect("an older schema is accepted");
        let s = StateStore::open(dir.path()).unwrap();
        let version: i64 = s
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert_eq!(
            s.acked("devices", "7").unwrap(),
            Some(Acked {
                hash: 70,
                line: 700
            })
        );
        assert_eq!(timeline_rows(&s), 0);
        assert!(s.device_events(7, None).unwrap().is_empty());
    }

    #[test]
    fn the_fields_an_upload_changed_are_found_by_diffing_with_the_event_before() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let ack = |s: &mut StateStore, events: Vec<RecordEvent>, deletes: &[String]| {
            let upserts: Vec<(String, Acked)> = events
                .iter()
                .map(|e| (e.key.clone(), Acked::hash(1)))
                .collect();
            s.ack_batch(
                "comanagement",
                &upserts,
                deletes,
                true,
                &BatchTimeline::Records(events),
            )
            .unwrap();
        };
        let record =
            |name: &str, state: &str| json!({"resource_id": 7, "name": name, "state": state});
        // Device 8 changed, but nothing earlier is kept for it.
        ack(
            &mut s,
            vec![
                changed("7", Change::Added, record("PC-7", "scheduledForEnrollment")),
                changed("8", Change::Changed, record("PC-8", "comanaged")),
            ],
            &[],
        );
        ack(
            &mut s,
            vec![changed("7", Change::Changed, record("PC-7", "comanaged"))],
            &[],
        );
        ack(
            &mut s,
            vec![changed("7", Change::Changed, record("PC-7b", "comanaged"))],
            &[],
        );
        ack(&mut s, vec![], &["7".to_string()]);
        assert_eq!(timeline_rows(&s), 5, "one row per record and event");
        let events = s.device_events(7, None).unwrap();
        let got: Vec<(String, serde_json::Value, serde_json::Value)> = events
            .iter()
            .map(|e| {
                assert_eq!(e.kind, "uploaded");
                assert_eq!(e.detail["channel"], "comanagement");
                (
                    e.detail["change"].as_str().unwrap().to_string(),
                    e.detail["fields"].clone(),
                    e.detail["state"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("removed".into(), json!(null), json!(null)),
                ("changed".into(), json!(["name"]), json!("comanaged")),
                ("changed".into(), json!(["state"]), json!("comanaged")),
                (
                    "added".into(),
                    json!(["name", "resource_id", "state"]),
                    json!("scheduledForEnrollment")
                ),
            ],
            "newest first"
        );
        assert_eq!(events[2].detail["previous_state"], "scheduledForEnrollment");
        assert!(
            events[1].detail.get("previous_state").is_none(),
            "{}",
            events[1].detail
        );
        let unknown = s.device_events(8, None).unwrap();
        assert_eq!(unknown[0].detail["fields"], json!(null));
        assert!(
            unknown[0].detail["note"]
                .as_str()
                .unwrap()
                .contains("earlier state is not known"),
            "{}",
            unknown[0].detail
        );
        // A window: only what is newer than `since`.
        assert!(
            s.device_events(7, Some(now_ms() + 60_000))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_first_upload_is_one_round_event_for_every_device_it_sent() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        let batch: Vec<(String, Acked)> =
            (1..=3).map(|i| (i.to_string(), Acked::hash(i))).collect();
        s.ack_batch("devices", &batch, &[], false, &BatchTimeline::FirstUpload)
            .unwrap();
        assert!(
            s.first_upload_pending("devices").unwrap(),
            "not finished yet"
        );
        s.ack_batch(
            "devices",
            &[("4".into(), Acked::hash(4))],
            &[],
            false,
            &BatchTimeline::FirstUpload,
        )
        .unwrap();
        s.first_upload_done("devices", 4).unwrap();
        assert!(!s.first_upload_pending("devices").unwrap());
        assert_eq!(timeline_rows(&s), 0, "no row per device");
        let events = s.device_events(2, None).unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].kind, "first-upload");
        assert_eq!(
            events[0].detail,
            json!({"channel": "devices", "records": 4, "finished": true})
        );
        // A device the channel does not hold is not concerned.
        assert!(s.device_events(9, None).unwrap().is_empty());
    }

    #[test]
    fn actions_are_recorded_and_events_older_than_the_retention_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path()).unwrap();
        let old = now_ms() - TIMELINE_RETENTION_MS - 1_000;
        s.conn
            .execute_batch(&format!(
                "INSERT INTO timeline (resource_id, at, kind, detail) VALUES (7, {old}, 1, '{{}}');
                 INSERT INTO timeline_rounds (channel, kind, at, records, finished)
                 VALUES ('devices', 'first-upload', {old}, 3, 1);"
            ))
            .unwrap();
        s.record_action(7, &json!({"action": "resource-explorer", "requested_by": "helpdesk@contoso.example", "status": "succeeded"}))
            .unwrap();
        assert_eq!(
            timeline_rows(&s),
            1,
            "the old row is gone, the new one kept"
        );
        let rounds: i64 = s
            .conn
            .query_row("SELECT count(*) FROM timeline_rounds", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rounds, 0);
        let events = s.device_events(7, None).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "action");
        assert_eq!(events[0].detail["requested_by"], "helpdesk@contoso.example");
        assert!(
            parse_rfc3339_ms(&events[0].at).is_some(),
            "{}",
            events[0].at
        );
    }

    #[test]
    fn timeline_writes_leave_the_line_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = StateStore::open(dir.path()).unwrap();
        crate::lines::LineIndex::new(1, vec!["devices".into()], vec![(11, 1)])
            .save(dir.path())
            .unwrap();
        let index = crate::lines::path_in(dir.path());
        s.ack_batch(
            "devices",
            &[("1".into(), Acked { hash: 5, line: 11 })],
            &[],
            true,
            &BatchTimeline::FirstUpload,
        )
        .unwrap();
        s.first_upload_done("devices", 1).unwrap();
        s.ack_batch(
            "devices",
            &[("1".into(), Acked { hash: 6, line: 11 })],
            &["2".into()],
            true,
            &BatchTimeline::Records(vec![changed("1", Change::Changed, json!({"a": 1}))]),
        )
        .unwrap();
        s.record_action(1, &json!({"action": "timeline"})).unwrap();
        assert!(s.first_upload_pending("devices").is_ok());
        assert!(index.is_file(), "a timeline write voided the line index");
        // A change of the state that is not an acknowledged upload does void it.
        s.set_meta("x", "y").unwrap();
        s.set_feature("tenant-attach", &json!({})).unwrap();
        assert!(!index.is_file());
    }

    #[test]
    fn a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch("CREATE TABLE future (x TEXT); PRAGMA user_version = 7;")
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let err = StateStore::open(dir.path()).err().expect("refused");
        assert!(matches!(err, StateError::TooNew { found: 7, .. }), "{err}");
        let msg = err.to_string();
        let newest = MIGRATIONS.len().to_string();
        for part in [path.display().to_string(), "7".into(), newest] {
            assert!(msg.contains(&part), "{part:?} in {msg}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file changed");
    }

    #[test]
    fn a_second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _held = StateLock::acquire(dir.path(), "apply").unwrap();
        let err = StateLock::acquire(dir.path(), "sync")
            .err()
            .expect("second lock refused")
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("cloudattach apply"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.json");
        write_private(&p, b"{}").unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}

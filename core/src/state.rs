//! The state store: `.cloudattach/state.db` (SQLite) next to attach.toml. It remembers the
//! hierarchy's registration, each feature's applied settings, and per-record content hashes for
//! delta sync. Every write is its own transaction, so a process killed at any moment leaves the
//! last acknowledged step or batch recorded and nothing half-written.
//!
//! A lock file (`.cloudattach/lock`) makes a second concurrent `apply` or `sync` refuse and name
//! the holder.

use cloudattach_sdk::gateway::KeyDigest;
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
        Ok(StateStore { conn, path })
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
    /// when next needed).
    pub fn ack_batch(
        &mut self,
        channel: &str,
        upserts: &[(String, Acked)],
        deletes: &[String],
        keep_digest: bool,
    ) -> Result<(), StateError> {
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
        }
        tx.commit().map_err(err)
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

    /// Forgets everything (after detach).
    pub fn reset(&self) -> Result<(), StateError> {
        // Any change of the state but an acknowledged upload voids the line index.
        crate::lines::forget(self.dir());
        self.conn
            .execute_batch("DELETE FROM features; DELETE FROM sync_hashes; DELETE FROM sync_digests; DELETE FROM sync_channels; DELETE FROM meta;")
            .map_err(self.err())
    }
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
            )
            .unwrap();
            s.ack_batch(
                "devices",
                &[("2".into(), Acked::hash(23))],
                &["1".into()],
                false,
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
        )
        .unwrap();
        assert_eq!(kept(&s), Some((3, now.sum as i64)), "{:?}", kept(&s));
        // A line moved, same record: the digest does not move.
        s.ack_batch("devices", &[("1".into(), a(10, 6))], &[], true)
            .unwrap();
        assert_eq!(kept(&s), Some((3, now.sum as i64)));
        // Any other write drops it; it is computed again, right.
        s.ack_batch("devices", &[("5".into(), a(50, 7))], &[], false)
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

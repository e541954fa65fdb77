//! The line index: which inventory lines the last complete sync round read, so the next delta
//! can leave them unread.
//!
//! A sync round that succeeded for every channel writes `lines.bin` beside `state.db`: the hash
//! (xxh3) of every valid line of `devices.jsonl` with the device's `resource_id`, the channels
//! that uploaded from those lines, and a fingerprint of everything else a record depends on
//! (the program's version, the features with their options, the site's collections). The next
//! round takes the file (reads and deletes it, so a round that does not finish leaves none) and,
//! when the fingerprint is unchanged, each of those channels leaves a line whose hash the index
//! holds unparsed: its records are in the channel's ledger already. Every other change to the
//! state (apply, disable, detach, a full resend, a reconciled ledger) deletes the file.
//!
//! In memory the index is the sorted `(hash, resource_id)` pairs (16 bytes a line) and a table
//! of where each hash prefix starts, with about one line per prefix (8 to 22 bits: 4 bytes a
//! line at most), so a lookup reads about two cache lines.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"CALINES1";
const FILE: &str = "lines.bin";

/// The lines of the last complete round.
#[derive(Debug)]
pub struct LineIndex {
    /// What the round's records depended on besides the lines.
    pub fingerprint: u64,
    /// The channels that uploaded from these lines.
    pub channels: Vec<String>,
    /// `(line hash, resource_id)`, sorted by hash.
    entries: Vec<(u64, i64)>,
    /// `starts[p]`: the first entry whose hash has the prefix `p`; one more for the end.
    starts: Vec<u32>,
    /// Bits of a hash's prefix.
    bits: u32,
}

impl LineIndex {
    /// An index of `entries` (any order; duplicates of a hash are kept once).
    pub fn new(fingerprint: u64, channels: Vec<String>, mut entries: Vec<(u64, i64)>) -> Self {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.0);
        let bits = entries.len().max(1).ilog2().clamp(8, 22);
        let mut starts = vec![0u32; (1 << bits) + 1];
        for &(h, _) in &entries {
            starts[prefix(h, bits) + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        LineIndex {
            fingerprint,
            channels,
            entries,
            starts,
            bits,
        }
    }

    /// Lines indexed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it indexes no line.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The position of the line whose hash is `hash`, if the index holds it.
    pub fn find(&self, hash: u64) -> Option<usize> {
        let p = prefix(hash, self.bits);
        let (lo, hi) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        self.entries[lo..hi]
            .binary_search_by_key(&hash, |e| e.0)
            .ok()
            .map(|i| lo + i)
    }

    /// The entry at a position [`LineIndex::find`] gave.
    pub fn entry(&self, at: usize) -> (u64, i64) {
        self.entries[at]
    }

    /// Every entry, sorted by hash.
    pub fn entries(&self) -> &[(u64, i64)] {
        &self.entries
    }

    /// The entries, sorted by hash, without the lookup table.
    pub fn into_entries(self) -> Vec<(u64, i64)> {
        self.entries
    }

    /// Whether `channel` uploaded from these lines.
    pub fn covers(&self, channel: &str) -> bool {
        self.channels.iter().any(|c| c == channel)
    }

    /// Reads and deletes the index in the state directory `dir`: `None` when there is none or it
    /// cannot be read (the round then reads every line).
    pub fn take(dir: &Path) -> Option<LineIndex> {
        let path = dir.join(FILE);
        let read = read(&path);
        forget(dir);
        read
    }

    /// Writes the index into the state directory `dir` (a temporary file renamed into place).
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!("{FILE}.tmp"));
        {
            let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
            w.write_all(MAGIC)?;
            w.write_all(&self.fingerprint.to_le_bytes())?;
            w.write_all(&(self.channels.len() as u32).to_le_bytes())?;
            for c in &self.channels {
                w.write_all(&(c.len() as u32).to_le_bytes())?;
                w.write_all(c.as_bytes())?;
            }
            w.write_all(&(self.entries.len() as u64).to_le_bytes())?;
            for &(h, r) in &self.entries {
                w.write_all(&h.to_le_bytes())?;
                w.write_all(&r.to_le_bytes())?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(FILE))
    }
}

/// Deletes the index in the state directory `dir`, if there is one.
pub fn forget(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}

/// Where the index of the state directory `dir` is.
pub fn path_in(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn prefix(hash: u64, bits: u32) -> usize {
    (hash >> (64 - bits)) as usize
}

fn read(path: &Path) -> Option<LineIndex> {
    // Read as it is parsed: the entries are the only copy held.
    let mut r = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(path).ok()?);
    let u64_of = |r: &mut std::io::BufReader<std::fs::File>| -> Option<u64> {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).ok()?;
    if &magic != MAGIC {
        return None;
    }
    let fingerprint = u64_of(&mut r)?;
    let mut four = [0u8; 4];
    r.read_exact(&mut four).ok()?;
    let n_channels = u32::from_le_bytes(four) as usize;
    let mut channels = Vec::with_capacity(n_channels.min(64));
    for _ in 0..n_channels {
        r.read_exact(&mut four).ok()?;
        let len = u32::from_le_bytes(four) as usize;
        if len > 4096 {
            return None;
        }
        let mut name = vec![0u8; len];
        r.read_exact(&mut name).ok()?;
        channels.push(String::from_utf8(name).ok()?);
    }
    let n = u64_of(&mut r)? as usize;
    // No more entries than the file holds: a damaged count is no reason to allocate.
    let len = r.get_ref().metadata().ok()?.len() as usize;
    if n.checked_mul(16)? > len {
        return None;
    }
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let h = u64_of(&mut r)?;
        let id = u64_of(&mut r)? as i64;
        entries.push((h, id));
    }
    Some(LineIndex::new(fingerprint, channels, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_index_finds_its_lines_and_survives_a_round_trip_once() {
        let entries: Vec<(u64, i64)> = (0..10_000u64)
            .map(|i| (xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()), i as i64))
            .collect();
        let index = LineIndex::new(7, vec!["devices".into()], entries.clone());
        for &(h, r) in &entries {
            let at = index.find(h).expect("indexed");
            assert_eq!(index.entry(at), (h, r));
        }
        assert_eq!(index.find(12345), None);
        let dir = tempfile::tempdir().unwrap();
        index.save(dir.path()).unwrap();
        let back = LineIndex::take(dir.path()).expect("saved");
        assert_eq!(back.fingerprint, 7);
        assert!(back.covers("devices") && !back.covers("defender"));
        assert_eq!(back.entries(), index.entries());
        // Taking it deletes it: a round that does not finish leaves none behind.
        assert!(LineIndex::take(dir.path()).is_none());
        // A damaged file is no index.
        std::fs::write(path_in(dir.path()), b"CALINES1\x01\x02").unwrap();
        assert!(LineIndex::take(dir.path()).is_none());
    }
}

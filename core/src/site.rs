//! The site inventory (docs/domain.md#site-inventory): `site.toml`, `devices.jsonl` (streamed, never held in
//! memory) and `collections.json` with effective memberships.

use cloudattach_sdk::device::MAX_CRASH_DAYS;
use cloudattach_sdk::{CollectionInfo, Device, DeviceMembership, DeviceParts, SiteInfo};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The built-in "All Systems" collection: every device.
pub const ALL_SYSTEMS: &str = "SMS00001";

/// An error reading the site. Each says which file, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `site.toml` is not valid.
    #[error("{path}: {message}")]
    SiteToml {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// `collections.json` is not valid.
    #[error("{path}: {message}")]
    Collections {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file of the site is not in an encoding it may be written in.
    #[error("{path}: {message}")]
    Encoding {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        message: String,
    },
    /// Collections include or limit each other in a cycle.
    #[error("{path}: collections form a cycle through includes/limiting: {}; remove one of these references", cycle.join(" -> "))]
    Cycle {
        /// The file.
        path: PathBuf,
        /// The collections in the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
}

/// A collection as `collections.json` writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionDef {
    /// Collection id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Direct members (resource ids).
    #[serde(default)]
    pub members: Vec<i64>,
    /// Included collections (the "subcollections").
    #[serde(default)]
    pub includes: Vec<String>,
    /// The limiting collection.
    #[serde(default)]
    pub limiting: Option<String>,
}

/// An effective membership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// Every device of the site (All Systems, or anything limited only by it and including it).
    All,
    /// These resource ids.
    Set(HashSet<i64>),
}

impl Members {
    /// Whether a device is a member.
    pub fn contains(&self, id: i64) -> bool {
        match self {
            Members::All => true,
            Members::Set(s) => s.contains(&id),
        }
    }
    fn union(self, other: &Members) -> Members {
        match (self, other) {
            (Members::All, _) | (_, Members::All) => Members::All,
            (Members::Set(mut a), Members::Set(b)) => {
                a.extend(b.iter().copied());
                Members::Set(a)
            }
        }
    }
    fn intersect(self, other: &Members) -> Members {
        match (self, other) {
            (m, Members::All) => m,
            (Members::All, Members::Set(b)) => Members::Set(b.clone()),
            (Members::Set(mut a), Members::Set(b)) => {
                a.retain(|id| b.contains(id));
                Members::Set(a)
            }
        }
    }
}

/// Computes the effective membership of every collection: direct members ∪ the effective
/// membership of every included collection, ∩ that of the limiting collection. References to
/// unknown collections and cycles are errors.
pub fn effective_memberships(
    defs: &[CollectionDef],
) -> Result<BTreeMap<String, Members>, MembershipError> {
    let by_id: HashMap<&str, &CollectionDef> = defs.iter().map(|d| (d.id.as_str(), d)).collect();
    for d in defs {
        for r in d.includes.iter().chain(d.limiting.iter()) {
            if r != ALL_SYSTEMS && !by_id.contains_key(r.as_str()) {
                return Err(MembershipError::Unknown {
                    collection: d.id.clone(),
                    reference: r.clone(),
                });
            }
        }
    }
    let mut done: BTreeMap<String, Members> = BTreeMap::new();
    done.insert(ALL_SYSTEMS.to_string(), Members::All);
    let mut ids: Vec<&str> = by_id.keys().copied().collect();
    ids.sort_unstable();
    for id in ids {
        let mut path: Vec<&str> = vec![];
        resolve(id, &by_id, &mut done, &mut path)?;
    }
    Ok(done)
}

fn resolve<'a>(
    id: &'a str,
    by_id: &HashMap<&'a str, &'a CollectionDef>,
    done: &mut BTreeMap<String, Members>,
    path: &mut Vec<&'a str>,
) -> Result<(), MembershipError> {
    if done.contains_key(id) {
        return Ok(());
    }
    if let Some(pos) = path.iter().position(|p| *p == id) {
        let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
        cycle.push(id.to_string());
        return Err(MembershipError::Cycle(cycle));
    }
    let def = by_id[id];
    path.push(id);
    for r in def.includes.iter().chain(def.limiting.iter()) {
        resolve(r, by_id, done, path)?;
    }
    path.pop();
    let mut m = Members::Set(def.members.iter().copied().collect());
    for inc in &def.includes {
        m = m.union(&done[inc.as_str()]);
    }
    if let Some(lim) = &def.limiting {
        m = m.intersect(&done[lim.as_str()]);
    }
    done.insert(id.to_string(), m);
    Ok(())
}

/// An error computing memberships.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// A collection names one that does not exist.
    #[error("collection {collection} references {reference}, which does not exist")]
    Unknown {
        /// The referencing collection.
        collection: String,
        /// The missing id.
        reference: String,
    },
    /// A cycle among includes/limiting.
    #[error("collections form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// A `devices.jsonl` line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// 1-based line number.
    pub line: u64,
    /// Why.
    pub message: String,
}

/// What a full pass over `devices.jsonl` found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScanSummary {
    /// Valid devices.
    pub devices: u64,
    /// Skipped lines (at most [`MAX_BAD_LINES_KEPT`] kept; `skipped` counts all).
    pub bad_lines: Vec<BadLine>,
    /// Number of skipped lines.
    pub skipped: u64,
    /// Fields of valid devices that the model does not know, by path (`bitlocker`,
    /// `defender.asr_mode`, `defender.detections[].remediation`), with the number of devices
    /// carrying each: kept as the devices' extension data.
    pub unknown_fields: BTreeMap<String, u64>,
    /// Lists longer than the model keeps (`analytics.apps[].daily_crashes`), with the number of
    /// devices carrying one: the model keeps the newest entries, the extension data all.
    pub long_lists: BTreeMap<String, u64>,
    /// Optional fields of the model whose value it cannot use (a wrong type, a string over the
    /// cloud's length limit), with the number of devices carrying one: the device is kept
    /// without the field, the value kept as its extension data.
    pub unusable_fields: BTreeMap<String, u64>,
}

/// Which version of `devices.jsonl` a pass read: its length and modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileIdentity {
    len: u64,
    modified: std::time::SystemTime,
}

impl FileIdentity {
    fn of(file: &File) -> Option<FileIdentity> {
        let m = file.metadata().ok()?;
        Some(FileIdentity {
            len: m.len(),
            modified: m.modified().ok()?,
        })
    }
}

/// The lines of `devices.jsonl` a delta must read: what one [`Site::changed_lines`] read found.
#[derive(Debug)]
pub struct ChangedLines {
    identity: FileIdentity,
    /// The lines not known, in file order.
    lines: Vec<ListedLine>,
    /// How many (non-blank) lines were known.
    unchanged: u64,
}

impl ChangedLines {
    /// How many lines are listed.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether no line is listed.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// How many (non-blank) lines were known, and so are not listed.
    pub fn unchanged(&self) -> u64 {
        self.unchanged
    }
}

/// Where a listed line is: its number, and its bytes without the line break and blanks.
#[derive(Debug, Clone, Copy)]
struct ListedLine {
    number: u64,
    offset: u64,
    len: usize,
    hash: u64,
}

/// Which lines a pass reads.
enum Source<'a> {
    /// Every line, hashed when `hash` is set (0 otherwise); `unparsed` sees the hash of each
    /// non-blank line first and leaves out unparsed those it answers `true` for.
    Every {
        hash: bool,
        unparsed: Option<&'a mut (dyn FnMut(u64) -> bool + Send)>,
    },
    /// The lines a [`Site::changed_lines`] scan listed.
    Listed(&'a ChangedLines),
}

/// The lines of a pass, as they are read.
enum Lines<'a> {
    Every {
        reader: BufReader<Box<dyn Read + Send>>,
        number: u64,
    },
    /// Each listed line read where it is, alone: a buffered reader would read the whole file
    /// around lines far apart (a 1% delta lists every hundredth line).
    Listed {
        file: File,
        lines: std::slice::Iter<'a, ListedLine>,
    },
}

impl Lines<'_> {
    /// Appends the next line to `buf`: its number and, for a listed line, its hash.
    fn next(&mut self, buf: &mut Vec<u8>) -> std::io::Result<Option<(u64, Option<u64>)>> {
        match self {
            Lines::Every { reader, number } => {
                if reader.read_until(b'\n', buf)? == 0 {
                    return Ok(None);
                }
                *number += 1;
                Ok(Some((*number, None)))
            }
            Lines::Listed { file, lines } => {
                let Some(l) = lines.next() else {
                    return Ok(None);
                };
                let start = buf.len();
                buf.resize(start + l.len, 0);
                read_exact_at(file, &mut buf[start..], l.offset)?;
                Ok(Some((l.number, Some(l.hash))))
            }
        }
    }
}

/// Reads `buf.len()` bytes of `file` at `offset`, without moving any cursor.
fn read_exact_at(file: &mut File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        file.seek(std::io::SeekFrom::Start(offset))?;
        file.read_exact(buf)
    }
}

/// Lines handed to a parsing worker at once.
const PARSE_BATCH_LINES: usize = 256;

/// Lines to parse, in file order: their bytes one after the other.
struct LineBatch {
    bytes: Vec<u8>,
    /// Each line's number, where its bytes are (without the line break and surrounding blanks)
    /// and its hash (0 when the pass does not hash).
    lines: Vec<(u64, std::ops::Range<usize>, u64)>,
}

impl LineBatch {
    /// Bytes a batch's buffer starts with: room for its lines as the generator writes them.
    const CAPACITY: usize = PARSE_BATCH_LINES * 2048;

    fn new() -> LineBatch {
        LineBatch {
            bytes: Vec::with_capacity(Self::CAPACITY),
            lines: Vec::with_capacity(PARSE_BATCH_LINES),
        }
    }
}

/// A batch to parse, where its parsed lines go, and where the parsed batch goes back to be
/// filled again (reusing buffers spares the page faults of fresh ones).
type ParseJob = (
    LineBatch,
    std::sync::mpsc::SyncSender<Vec<ParsedLine>>,
    std::sync::mpsc::SyncSender<LineBatch>,
);

/// A line as a worker parsed it.
struct ParsedLine {
    number: u64,
    hash: u64,
    parsed: Result<(Device, Option<Unmodelled>), String>,
    /// Whether the line holds NUL bytes (told with its problem).
    has_nul: bool,
}

/// What a pass's reader left out without handing it to the workers.
struct LinesLeftOut {
    /// Lines `unparsed` knew: valid devices, as they were when they were last read.
    unparsed: u64,
    /// Lines the last complete pass found bad.
    skipped: u64,
}

/// The part of a pass that runs in file order before parsing: reads each line, hashes it, and
/// leaves out blank lines, lines known bad and lines `unparsed` knows.
struct LineReader<'a> {
    lines: Lines<'a>,
    hash: bool,
    unparsed: Option<&'a mut (dyn FnMut(u64) -> bool + Send)>,
    known_skipped: Option<LineSet>,
}

impl LineReader<'_> {
    /// Hands the lines to parse to `dispatch` in batches (`empty` gives each batch's buffers),
    /// until it returns false.
    fn run(
        mut self,
        empty: &mut dyn FnMut() -> LineBatch,
        dispatch: &mut dyn FnMut(LineBatch) -> bool,
    ) -> std::io::Result<LinesLeftOut> {
        let mut left_out = LinesLeftOut {
            unparsed: 0,
            skipped: 0,
        };
        let mut batch = empty();
        loop {
            let start = batch.bytes.len();
            let Some((n, listed_hash)) = self.lines.next(&mut batch.bytes)? else {
                break;
            };
            let mut bytes = &batch.bytes[start..];
            let mut from = start;
            // A listed line is read without its byte order mark already.
            if n == 1
                && listed_hash.is_none()
                && let Some(rest) = bytes.strip_prefix(UTF8_BOM)
            {
                bytes = rest;
                from += UTF8_BOM.len();
            }
            let trimmed = bytes.trim_ascii_start();
            from += bytes.len() - trimmed.len();
            let bytes = trimmed.trim_ascii_end();
            let range = from..from + bytes.len();
            let keep = if bytes.is_empty() {
                false
            } else if self.known_skipped.as_ref().is_some_and(|s| s.contains(&n)) {
                left_out.skipped += 1;
                false
            } else {
                let line_hash = match listed_hash {
                    Some(h) => h,
                    None if self.hash || self.unparsed.is_some() => {
                        xxhash_rust::xxh3::xxh3_64(bytes)
                    }
                    None => 0,
                };
                if let Some(unparsed) = self.unparsed.as_mut()
                    && unparsed(line_hash)
                {
                    left_out.unparsed += 1;
                    false
                } else {
                    batch.lines.push((n, range, line_hash));
                    true
                }
            };
            if !keep {
                batch.bytes.truncate(start);
            } else if batch.lines.len() == PARSE_BATCH_LINES
                && !dispatch(std::mem::replace(&mut batch, empty()))
            {
                return Ok(left_out);
            }
        }
        if !batch.lines.is_empty() {
            dispatch(batch);
        }
        Ok(left_out)
    }
}

/// Parses a batch of lines: what a worker does. Every defect of a line (bytes that are not
/// UTF-8, invalid JSON, a missing or invalid required field) is that line's problem.
fn parse_batch(
    batch: &LineBatch,
    parts: DeviceParts,
    known_extended: Option<&HashSet<u64>>,
) -> Vec<ParsedLine> {
    // An export's lines are alike: after a line with fields beyond the model, the next is
    // read leniently first rather than after a strict parse that would fail too.
    let mut lenient_first = false;
    let mut out = Vec::with_capacity(batch.lines.len());
    for (n, range, hash) in &batch.lines {
        let bytes = &batch.bytes[range.clone()];
        let parsed = parse_line(bytes, *n, parts, known_extended, lenient_first);
        if let Ok((_, u)) = &parsed {
            lenient_first = u.is_some();
        }
        out.push(ParsedLine {
            number: *n,
            hash: *hash,
            has_nul: parsed.is_err() && bytes.contains(&0),
            parsed,
        });
    }
    out
}

/// One line's device, with the blocks in `parts`, and what it carries beyond the model.
fn parse_line(
    bytes: &[u8],
    n: u64,
    parts: DeviceParts,
    known_extended: Option<&HashSet<u64>>,
    lenient_first: bool,
) -> Result<(Device, Option<Unmodelled>), String> {
    let text = std::str::from_utf8(bytes).map_err(|e| not_utf8(bytes, &e))?;
    let extended = known_extended.is_some_and(|e| e.contains(&n));
    let parsed = if extended && parts != DeviceParts::NONE {
        // A line the first pass found carrying more than the model, and a pass that needs a
        // block or the extension data: read it as the first did.
        read_lenient(text).map(|(d, _)| (d.with_parts(parts), None))
    } else if parts == DeviceParts::ALL {
        read_device(text, lenient_first)
    } else {
        let lean = serde_json::from_str::<LeanDevice>(text)
            .and_then(|d| d.into_device(parts))
            .map_err(|e| e.to_string());
        match lean {
            Ok(d) => Ok((d, None)),
            // An optional field the model cannot use (set aside by the first pass): read the
            // line as the first pass did.
            Err(_) if extended => read_lenient(text).map(|(d, _)| (d.with_parts(parts), None)),
            Err(e) => Err(e),
        }
    }?;
    match parsed.0.validate() {
        Ok(()) => Ok(parsed),
        // Too long an optional text on a line the first pass kept without it.
        Err(_) if extended => read_lenient(text).map(|(d, _)| (d.with_parts(parts), None)),
        Err(e) => Err(e),
    }
}

/// The last complete pass over `devices.jsonl`.
#[derive(Debug)]
struct Scan {
    identity: FileIdentity,
    summary: ScanSummary,
    /// Lines it skipped (bad or duplicate): later passes over the same file skip them without
    /// parsing, so every pass visits the same devices.
    skipped_lines: Arc<HashSet<u64>>,
    /// Valid lines carrying more than the model: later passes read them leniently.
    extended_lines: Arc<HashSet<u64>>,
}

/// Line numbers of `devices.jsonl`, shared by the passes over one version of it.
type LineSet = Arc<HashSet<u64>>;

/// How many bad lines are kept for the report; all are counted.
pub const MAX_BAD_LINES_KEPT: usize = 20;

/// An opened site: `site.toml` and the collections are read; devices are streamed on demand.
#[derive(Debug)]
pub struct Site {
    /// The site directory.
    pub dir: PathBuf,
    /// `site.toml`.
    pub info: SiteInfo,
    names: BTreeMap<String, String>,
    members: BTreeMap<String, Members>,
    /// The definitions of `collections.json`, by id (for [`Site::membership`]).
    defs: BTreeMap<String, CollectionDef>,
    /// What the last complete pass found, for the file as it was then.
    scan: Mutex<Option<Scan>>,
    /// What the last pass that left lines unread found in the lines it read (bad lines only).
    partial: Mutex<Option<ScanSummary>>,
}

impl Site {
    /// Opens a site directory.
    pub fn open(dir: &Path) -> Result<Site, SiteError> {
        let site_toml = dir.join("site.toml");
        let text = read_text(&site_toml)?.ok_or_else(|| SiteError::Io {
            path: site_toml.clone(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no site.toml"),
        })?;
        let info: SiteInfo = toml::from_str(&text).map_err(|e| SiteError::SiteToml {
            path: site_toml.clone(),
            message: e.to_string().trim_end().to_string(),
        })?;
        if info.code.len() != 3 || !info.code.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(SiteError::SiteToml {
                path: site_toml,
                message: format!(
                    "code = {:?}: a site code is 3 letters or digits, e.g. \"PS1\"",
                    info.code
                ),
            });
        }
        if uuid::Uuid::parse_str(&info.hierarchy_id).is_err() {
            return Err(SiteError::SiteToml {
                path: site_toml,
                message: format!("hierarchy_id = {:?}: expected a UUID", info.hierarchy_id),
            });
        }
        let coll_path = dir.join("collections.json");
        let defs: Vec<CollectionDef> = match read_text(&coll_path)? {
            Some(text) => serde_json::from_str(&text).map_err(|e| SiteError::Collections {
                path: coll_path.clone(),
                message: e.to_string(),
            })?,
            None => vec![],
        };
        let mut names = BTreeMap::new();
        names.insert(ALL_SYSTEMS.to_string(), "All Systems".to_string());
        for d in &defs {
            if d.id == ALL_SYSTEMS {
                return Err(SiteError::Collections {
                    path: coll_path,
                    message: format!(
                        "{ALL_SYSTEMS} (All Systems) is built in and cannot be redefined"
                    ),
                });
            }
            if names.insert(d.id.clone(), d.name.clone()).is_some() {
                return Err(SiteError::Collections {
                    path: coll_path,
                    message: format!("collection id {} appears twice", d.id),
                });
            }
        }
        let members = effective_memberships(&defs).map_err(|e| match e {
            MembershipError::Cycle(cycle) => SiteError::Cycle {
                path: coll_path.clone(),
                cycle,
            },
            other => SiteError::Collections {
                path: coll_path.clone(),
                message: other.to_string(),
            },
        })?;
        let devices = dir.join("devices.jsonl");
        if !devices.is_file() {
            return Err(SiteError::Io {
                path: devices,
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no devices.jsonl in the site directory",
                ),
            });
        }
        Ok(Site {
            dir: dir.to_path_buf(),
            info,
            names,
            members,
            defs: defs.into_iter().map(|d| (d.id.clone(), d)).collect(),
            scan: Mutex::new(None),
            partial: Mutex::new(None),
        })
    }

    /// Streams every valid device to `visit`. Bad lines are skipped and remembered (the first
    /// complete pass records the [`ScanSummary`]).
    pub fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), SiteError> {
        self.for_each_device_owned(&mut |d| visit(&d))
    }

    /// [`Site::for_each_device`], handing over each device. Lines are read on one thread and
    /// parsed on as many as there are cores, in batches through bounded channels, so parsing
    /// overlaps with what the caller does with each device while memory stays flat; the caller
    /// sees them in file order.
    pub fn for_each_device_owned(&self, visit: &mut dyn FnMut(Device)) -> Result<(), SiteError> {
        self.for_each_device_parts(DeviceParts::ALL, visit)
    }

    /// [`Site::for_each_device_owned`] where the devices need only the blocks in `parts`: the
    /// others are skipped unparsed (they are most of a line). The first pass always parses
    /// everything, so it can tell which lines are valid; later passes skip exactly those lines.
    pub fn for_each_device_parts(
        &self,
        parts: DeviceParts,
        visit: &mut dyn FnMut(Device),
    ) -> Result<(), SiteError> {
        self.stream(
            parts,
            Source::Every {
                hash: false,
                unparsed: None,
            },
            &mut |_, d| visit(d),
        )
    }

    /// [`Site::for_each_device_parts`], handing each device with the hash of its line (xxh3 of
    /// the line's bytes, without the line break and surrounding blanks). `unparsed`, when given,
    /// sees the hash of every non-blank line first: a line it answers `true` for is left out
    /// unparsed, its device not visited — what a delta does with the lines it already knows.
    /// Such a pass does not count as the file's first complete pass.
    pub fn for_each_line_device(
        &self,
        parts: DeviceParts,
        unparsed: Option<&mut (dyn FnMut(u64) -> bool + Send)>,
        visit: &mut dyn FnMut(u64, Device),
    ) -> Result<(), SiteError> {
        self.stream(
            parts,
            Source::Every {
                hash: true,
                unparsed,
            },
            visit,
        )
    }

    /// One read of `devices.jsonl` that hashes every line (as [`Site::for_each_line_device`]
    /// does) and keeps where the lines `known` does not answer `true` for are: what a delta's
    /// channels then read with [`Site::for_each_listed_device`], without reading the file again.
    /// `None` when the file cannot be read that way (UTF-16, whose lines are transcoded).
    pub fn changed_lines(
        &self,
        known: &mut dyn FnMut(u64) -> bool,
    ) -> Result<Option<ChangedLines>, SiteError> {
        let path = self.dir.join("devices.jsonl");
        let io = |source| SiteError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        let Some(identity) = FileIdentity::of(&file) else {
            return Ok(None);
        };
        let mut head = [0u8; 2];
        let got = file.read(&mut head).map_err(io)?;
        if matches!(&head[..got], [0xFF, 0xFE] | [0xFE, 0xFF]) {
            return Ok(None);
        }
        file.rewind().map_err(io)?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = Vec::new();
        let (mut n, mut at, mut unchanged) = (0u64, 0u64, 0u64);
        let mut lines = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io)?;
            if read == 0 {
                break;
            }
            n += 1;
            let mut offset = at;
            at += read as u64;
            let mut bytes = &line[..];
            if n == 1
                && let Some(rest) = bytes.strip_prefix(UTF8_BOM)
            {
                bytes = rest;
                offset += UTF8_BOM.len() as u64;
            }
            let trimmed = bytes.trim_ascii_start();
            offset += (bytes.len() - trimmed.len()) as u64;
            let bytes = trimmed.trim_ascii_end();
            if bytes.is_empty() {
                continue;
            }
            let hash = xxhash_rust::xxh3::xxh3_64(bytes);
            if known(hash) {
                unchanged += 1;
                continue;
            }
            lines.push(ListedLine {
                number: n,
                offset,
                len: bytes.len(),
                hash,
            });
        }
        Ok(Some(ChangedLines {
            identity,
            lines,
            unchanged,
        }))
    }

    /// [`Site::for_each_line_device`] over the lines a [`Site::changed_lines`] scan listed: the
    /// unchanged lines are left unread, the listed ones read where they are. `false`, with no
    /// device visited, when the file changed since the scan (read it all instead).
    pub fn for_each_listed_device(
        &self,
        parts: DeviceParts,
        listed: &ChangedLines,
        visit: &mut dyn FnMut(u64, Device),
    ) -> Result<bool, SiteError> {
        let current = File::open(self.dir.join("devices.jsonl"))
            .ok()
            .and_then(|f| FileIdentity::of(&f));
        if current != Some(listed.identity) {
            return Ok(false);
        }
        self.stream(parts, Source::Listed(listed), visit)?;
        Ok(true)
    }

    /// Reads and parses the lines of `source`, handing each valid device to `emit` in file
    /// order; the lines are parsed on other threads, so parsing overlaps with what `emit` does
    /// while memory stays flat. Every defect of a line (bytes that are not UTF-8, invalid JSON,
    /// a missing or invalid required field) is that line's problem: it is counted and skipped,
    /// never the pass's. Only an I/O error ends a pass.
    fn stream(
        &self,
        parts: DeviceParts,
        source: Source<'_>,
        emit: &mut dyn FnMut(u64, Device),
    ) -> Result<(), SiteError> {
        let path = self.dir.join("devices.jsonl");
        let io = |source| SiteError::Io {
            path: path.clone(),
            source,
        };
        let mut file = File::open(&path).map_err(io)?;
        // A pass over the file as the last complete pass saw it skips the lines that pass
        // found bad without parsing them; a changed file (`sync --watch`) is read afresh.
        let identity = FileIdentity::of(&file);
        let mut summary = ScanSummary::default();
        let source_identity = match &source {
            Source::Listed(listed) => Some(listed.identity),
            Source::Every { .. } => None,
        };
        let (hash, unparsed, lines) = match source {
            Source::Every { hash, unparsed } => (
                hash,
                unparsed,
                Lines::Every {
                    reader: BufReader::with_capacity(256 * 1024, decoded(&mut file).map_err(io)?),
                    number: 0,
                },
            ),
            Source::Listed(listed) => {
                // The lines left out: valid devices, as they were when they were last read.
                summary.devices = listed.unchanged;
                (
                    true,
                    None,
                    Lines::Listed {
                        file,
                        lines: listed.lines.iter(),
                    },
                )
            }
        };
        // A listing of every non-blank line (none was known) reads the file as a full pass
        // does, and counts as one, if the file is still the one listed.
        let listing = match &source_identity {
            Some(listed) => summary.devices > 0 || identity != Some(*listed),
            None => false,
        };
        let leaves_lines_out = unparsed.is_some() || listing;
        let mut seen = rustc_hash::FxHashSet::default();
        let mut skipped_lines = HashSet::new();
        let mut extended_lines = HashSet::new();
        let known: Option<(LineSet, LineSet)> = self.scan.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|s| Some(s.identity) == identity)
                .map(|s| (s.skipped_lines.clone(), s.extended_lines.clone()))
        });
        // A pass that leaves lines out cannot tell which lines are valid or duplicates.
        let record = known.is_none() && !leaves_lines_out;
        let known_skipped = known.as_ref().map(|k| k.0.clone());
        let known_extended = known
            .as_ref()
            .map(|k| k.1.clone())
            .filter(|e| !e.is_empty());
        // Only a pass that knows which lines are bad may leave blocks unparsed.
        let parts = if known_skipped.is_some() {
            parts
        } else {
            DeviceParts::ALL
        };
        let reader = LineReader {
            lines,
            hash,
            unparsed,
            known_skipped,
        };
        // The lines are read and hashed in order on one thread, parsed in batches by as many
        // workers as there are cores, and taken back in order here, where everything that
        // depends on the lines before (duplicates, the summary, `emit`) happens.
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        let read = std::thread::scope(|scope| {
            let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel::<ParseJob>(workers * 2);
            let (order_tx, order_rx) = std::sync::mpsc::sync_channel(workers * 2);
            let jobs_rx = Arc::new(Mutex::new(jobs_rx));
            for _ in 0..workers {
                let jobs = jobs_rx.clone();
                let extended = known_extended.clone();
                scope.spawn(move || {
                    loop {
                        // The lock is held while waiting: the next job goes to one worker.
                        let job = jobs
                            .lock()
                            .map_err(|_| ())
                            .and_then(|j| j.recv().map_err(|_| ()));
                        let Ok((mut batch, answer, reuse)) = job else {
                            break;
                        };
                        // The one waiting for the answer is gone when the pass ended early (the
                        // consumer panicked).
                        let _ = answer.send(parse_batch(&batch, parts, extended.as_deref()));
                        batch.bytes.clear();
                        batch.lines.clear();
                        let _ = reuse.try_send(batch);
                    }
                });
            }
            // Dropped with the last worker: a reader whose workers are gone stops.
            drop(jobs_rx);
            let reader = scope.spawn(move || {
                let (reuse, reused) = std::sync::mpsc::sync_channel(workers * 4);
                reader.run(
                    &mut || reused.try_recv().unwrap_or_else(|_| LineBatch::new()),
                    &mut |batch| {
                        let (answer, parsed) = std::sync::mpsc::sync_channel(1);
                        jobs_tx.send((batch, answer, reuse.clone())).is_ok()
                            && order_tx.send(parsed).is_ok()
                    },
                )
            });
            for parsed in order_rx.iter() {
                // No answer: the worker panicked (the scope passes the panic on).
                let Ok(parsed) = parsed.recv() else { break };
                for line in parsed {
                    let n = line.number;
                    let bad = match line.parsed {
                        Ok((d, unmodelled)) => {
                            if record && !seen.insert(d.resource_id) {
                                Some(format!(
                                    "resource_id {} appears on an earlier line",
                                    d.resource_id
                                ))
                            } else {
                                summary.devices += 1;
                                if let Some(u) = unmodelled.filter(|_| record) {
                                    extended_lines.insert(n);
                                    for f in u.unknown_fields {
                                        *summary.unknown_fields.entry(f).or_default() += 1;
                                    }
                                    for f in u.long_lists {
                                        *summary.long_lists.entry(f).or_default() += 1;
                                    }
                                    for f in u.unusable_fields {
                                        *summary.unusable_fields.entry(f).or_default() += 1;
                                    }
                                }
                                emit(line.hash, d);
                                None
                            }
                        }
                        Err(e) => Some(e),
                    };
                    if let Some(mut message) = bad {
                        if line.has_nul {
                            message.push_str(
                                "; the line holds NUL bytes: if the file is UTF-16 without a byte order mark, re-save it as UTF-8",
                            );
                        }
                        skipped_lines.insert(n);
                        summary.skipped += 1;
                        if summary.bad_lines.len() < MAX_BAD_LINES_KEPT {
                            summary.bad_lines.push(BadLine { line: n, message });
                        }
                    }
                }
            }
            // The reader's next send fails: it stops, and the workers with it.
            drop(order_rx);
            reader
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        });
        let read = read.map_err(io)?;
        summary.devices += read.unparsed;
        summary.skipped += read.skipped;
        if leaves_lines_out && let Ok(mut p) = self.partial.lock() {
            // The fields beyond the model were reported by the pass that read those lines.
            summary.unknown_fields.clear();
            summary.long_lists.clear();
            summary.unusable_fields.clear();
            *p = Some(summary);
            return Ok(());
        }
        if let (true, Some(identity)) = (record, identity)
            && let Ok(mut s) = self.scan.lock()
        {
            *s = Some(Scan {
                identity,
                summary,
                skipped_lines: Arc::new(skipped_lines),
                extended_lines: Arc::new(extended_lines),
            });
        }
        Ok(())
    }

    /// What the first complete pass over the devices found (`None` before one); without one,
    /// what the last pass that left lines unread found in the lines it read.
    pub fn scan_summary(&self) -> Option<ScanSummary> {
        self.scan
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.summary.clone()))
            .or_else(|| self.partial.lock().ok().and_then(|p| p.clone()))
    }

    /// The number of valid devices, if a complete pass over the file as it is now was made.
    pub fn known_device_count(&self) -> Option<u64> {
        let current = File::open(self.dir.join("devices.jsonl"))
            .ok()
            .and_then(|f| FileIdentity::of(&f))?;
        let s = self.scan.lock().ok()?;
        s.as_ref()
            .filter(|s| s.identity == current)
            .map(|s| s.summary.devices)
    }

    /// The number of valid devices (streams the file once if no pass was made yet).
    pub fn device_count(&self) -> Result<u64, SiteError> {
        let current = File::open(self.dir.join("devices.jsonl"))
            .ok()
            .and_then(|f| FileIdentity::of(&f));
        if let Ok(s) = self.scan.lock()
            && let Some(s) = s.as_ref()
            && Some(s.identity) == current
        {
            return Ok(s.summary.devices);
        }
        let mut n = 0u64;
        self.for_each_device_parts(DeviceParts::NONE, &mut |_| n += 1)?;
        Ok(n)
    }

    /// A collection with its effective member count.
    pub fn collection(&self, id: &str) -> Option<CollectionInfo> {
        let name = self.names.get(id)?;
        let member_count = match &self.members[id] {
            Members::All => self.device_count().unwrap_or(0),
            Members::Set(s) => s.len() as u64,
        };
        Some(CollectionInfo::new(id, name.clone(), member_count))
    }

    /// Every collection id, sorted.
    pub fn collection_ids(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The effective membership of a collection.
    pub fn members(&self, id: &str) -> Option<&Members> {
        self.members.get(id)
    }

    /// Whether a device is in a collection's effective membership (false for unknown ids).
    pub fn is_member(&self, collection_id: &str, resource_id: i64) -> bool {
        self.members
            .get(collection_id)
            .is_some_and(|m| m.contains(resource_id))
    }

    /// How a device is (or is not) in a collection: directly, through an included collection,
    /// as one of All Systems, or cut by the limiting collection; `None` for an unknown
    /// collection.
    pub fn membership(&self, collection_id: &str, resource_id: i64) -> Option<Membership> {
        if collection_id == ALL_SYSTEMS {
            return Some(Membership::AllSystems);
        }
        let def = self.defs.get(collection_id)?;
        let way = if def.members.contains(&resource_id) {
            Some(Membership::Direct)
        } else {
            def.includes
                .iter()
                .find(|inc| self.is_member(inc, resource_id))
                .map(|inc| Membership::Included {
                    via: inc.clone(),
                    via_name: self.names.get(inc).cloned().unwrap_or_default(),
                })
        };
        Some(match (way, &def.limiting) {
            (None, _) => Membership::NotMember,
            (Some(way), Some(lim)) if !self.is_member(lim, resource_id) => Membership::Limited {
                limiting: lim.clone(),
                limiting_name: self.names.get(lim).cloned().unwrap_or_default(),
                would_be: Box::new(way),
            },
            (Some(way), _) => way,
        })
    }

    /// Every collection a device is in, or that would hold it but for its limiting collection,
    /// with how, sorted by collection id.
    pub fn memberships_of(&self, resource_id: i64) -> Vec<(CollectionInfo, Membership)> {
        self.collection_ids()
            .filter_map(|id| {
                let how = self.membership(id, resource_id)?;
                if how == Membership::NotMember {
                    return None;
                }
                let info = CollectionInfo::new(id, self.names[id].clone(), self.member_count(id));
                Some((info, how))
            })
            .collect()
    }

    /// [`Site::memberships_of`] as the SDK's [`DeviceMembership`]s.
    pub fn device_memberships(&self, resource_id: i64) -> Vec<DeviceMembership> {
        self.memberships_of(resource_id)
            .into_iter()
            .map(|(c, how)| {
                let kind = match &how {
                    Membership::AllSystems => "all_systems",
                    Membership::Direct => "direct",
                    Membership::Included { .. } => "included",
                    Membership::Limited { .. } => "limited",
                    Membership::NotMember => "not_member",
                };
                DeviceMembership::new(c.id, c.name, how.is_member(), kind, how.to_string())
            })
            .collect()
    }

    fn member_count(&self, id: &str) -> u64 {
        match &self.members[id] {
            Members::All => self.known_device_count().unwrap_or(0),
            Members::Set(s) => s.len() as u64,
        }
    }
}

/// How a device is in a collection ([`Site::membership`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "how", rename_all = "snake_case")]
pub enum Membership {
    /// All Systems holds every device of the site.
    AllSystems,
    /// A direct member.
    Direct,
    /// A member of an included collection.
    Included {
        /// The included collection.
        via: String,
        /// Its name.
        via_name: String,
    },
    /// It would be a member, but the limiting collection does not hold it.
    Limited {
        /// The limiting collection.
        limiting: String,
        /// Its name.
        limiting_name: String,
        /// How it would be a member.
        would_be: Box<Membership>,
    },
    /// Not a member by any rule.
    NotMember,
}

impl Membership {
    /// Whether the device is in the effective membership.
    pub fn is_member(&self) -> bool {
        !matches!(self, Membership::Limited { .. } | Membership::NotMember)
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Membership::AllSystems => f.write_str("All Systems holds every device"),
            Membership::Direct => f.write_str("a direct member"),
            Membership::Included { via, via_name } => {
                write!(f, "through the included collection {via} ({via_name})")
            }
            Membership::Limited {
                limiting,
                limiting_name,
                would_be,
            } => write!(
                f,
                "{would_be}, but cut by the limiting collection {limiting} ({limiting_name}), \
                 which does not hold it"
            ),
            Membership::NotMember => {
                f.write_str("not a member (no direct rule or include holds it)")
            }
        }
    }
}

/// The UTF-8 byte order mark, which Windows tools write at the start of a "UTF-8" file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// `file` as UTF-8 bytes: a UTF-16 file with a byte order mark (what Windows PowerShell 5's
/// `Out-File` and `>` write) is transcoded as it is read; anything else is read as it is, so a
/// plain file costs nothing extra.
fn decoded(file: &mut File) -> std::io::Result<Box<dyn Read + Send>> {
    let mut head = [0u8; 2];
    let got = file.read(&mut head)?;
    file.rewind()?;
    let file = file.try_clone()?;
    Ok(match &head[..got] {
        [0xFF, 0xFE] | [0xFE, 0xFF] => {
            Box::new(encoding_rs_io::DecodeReaderBytesBuilder::new().build(file))
        }
        _ => Box::new(file),
    })
}

/// The message for a line that is not UTF-8: where, and what to do.
fn not_utf8(bytes: &[u8], e: &std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    let bad: Vec<String> = bytes[at..]
        .iter()
        .take(e.error_len().unwrap_or(1))
        .map(|b| format!("0x{b:02X}"))
        .collect();
    format!(
        "not valid UTF-8 (byte {} at column {}; e.g. a Windows-1252 character): re-save the file as UTF-8",
        bad.join(" "),
        at + 1
    )
}

/// A text file of the site (`site.toml`, `collections.json`): UTF-8, with or without a byte
/// order mark, or UTF-16 with one.
fn read_text(path: &Path) -> Result<Option<String>, SiteError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SiteError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let encoding = encoding_rs::Encoding::for_bom(&bytes);
    if let Some((enc, bom)) = encoding
        && enc != encoding_rs::UTF_8
    {
        let (text, malformed) = enc.decode_without_bom_handling(&bytes[bom..]);
        if malformed {
            return Err(SiteError::Encoding {
                path: path.to_path_buf(),
                message: format!("not valid {}: re-save the file as UTF-8", enc.name()),
            });
        }
        return Ok(Some(text.into_owned()));
    }
    let body = &bytes[encoding.map_or(0, |(_, bom)| bom)..];
    match std::str::from_utf8(body) {
        Ok(text) => Ok(Some(text.to_string())),
        Err(e) => {
            let line = body[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            Err(SiteError::Encoding {
                path: path.to_path_buf(),
                message: format!(
                    "line {line}: not valid UTF-8 (e.g. a Windows-1252 character): re-save the file as UTF-8"
                ),
            })
        }
    }
}

/// What a valid device line carries beyond the model, as paths (`bitlocker`,
/// `defender.detections[].remediation`), each once.
#[derive(Debug, Default, PartialEq, Eq)]
struct Unmodelled {
    unknown_fields: Vec<String>,
    long_lists: Vec<String>,
    unusable_fields: Vec<String>,
}

/// A device line: the strict parse first (what a plain line costs), the lenient one only for a
/// line the strict one refuses or one with a list longer than the model keeps — or first, when
/// `lenient_first` (the previous line carried more than the model): both give the same device.
fn read_device(text: &str, lenient_first: bool) -> Result<(Device, Option<Unmodelled>), String> {
    if lenient_first && let Ok((d, u)) = read_lenient(text) {
        return Ok((d, (u != Unmodelled::default()).then_some(u)));
    }
    if let Ok(d) = serde_json::from_str::<Device>(text)
        && d.analytics.as_ref().is_none_or(|a| {
            a.apps
                .iter()
                .all(|app| app.daily_crashes.len() <= MAX_CRASH_DAYS)
        })
        && d.validate().is_ok()
    {
        return Ok((d, None));
    }
    read_lenient(text).map(|(d, u)| {
        let u = (u != Unmodelled::default()).then_some(u);
        (d, u)
    })
}

/// The field names a derived `Deserialize` of `T` knows: what it passes to
/// `deserialize_struct`, so the lists never drift from the model.
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{Error as _, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> serde::Deserializer<'de> for Probe<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(Self::Error::custom("a probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(Self::Error::custom("a probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

/// The fields of each part of the model, read once.
struct Known {
    device: &'static [&'static str],
    defender: &'static [&'static str],
    detection: &'static [&'static str],
    analytics: &'static [&'static str],
    app: &'static [&'static str],
}

fn known() -> &'static Known {
    static KNOWN: std::sync::OnceLock<Known> = std::sync::OnceLock::new();
    KNOWN.get_or_init(|| Known {
        device: fields_of::<Device>(),
        defender: fields_of::<cloudattach_sdk::DefenderState>(),
        detection: fields_of::<cloudattach_sdk::Detection>(),
        analytics: fields_of::<cloudattach_sdk::Analytics>(),
        app: fields_of::<cloudattach_sdk::AppUsage>(),
    })
}

/// Moves the members of `object` that `fields` does not name into `extension`, noting their
/// paths (`prefix` + name).
fn split_unknown(
    object: &mut Map<String, Value>,
    fields: &[&str],
    prefix: &str,
    extension: &mut Map<String, Value>,
    paths: &mut Vec<String>,
) {
    let unknown: Vec<String> = object
        .keys()
        .filter(|k| !fields.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in unknown {
        if let Some(v) = object.remove(&k) {
            paths.push(format!("{prefix}{k}"));
            extension.insert(k, v);
        }
    }
}

/// [`split_unknown`] for each object of the list `object[list]`: the extension data gets the
/// list, one object per entry (`{}` for the entries without unknown fields), when any entry has
/// one. `each` handles what else an entry may carry beyond the model.
fn split_list(
    object: &mut Map<String, Value>,
    list: &str,
    fields: &[&str],
    prefix: &str,
    extension: &mut Map<String, Value>,
    paths: &mut Vec<String>,
    mut each: impl FnMut(&mut Map<String, Value>, &mut Map<String, Value>),
) {
    let Some(Value::Array(entries)) = object.get_mut(list) else {
        return;
    };
    let mut any = false;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries.iter_mut() {
        let mut ext = Map::new();
        if let Value::Object(o) = entry {
            split_unknown(o, fields, prefix, &mut ext, paths);
            each(o, &mut ext);
        }
        any |= !ext.is_empty();
        out.push(Value::Object(ext));
    }
    if any {
        extension.insert(list.to_string(), Value::Array(out));
    }
}

/// The common case of [`read_lenient`], without building the whole line as a JSON tree: fields
/// beyond the model at the top level only. The model's fields, as written, make a line the
/// strict parse reads; only the extra fields' values are parsed into extension data. `None`
/// when the line is not that case (or not valid), for the full lenient read to decide.
fn read_top_level_extras(text: &str) -> Option<(Device, Unmodelled)> {
    // Borrowed keys: a key with an escape sequence fails here and takes the full read.
    let fields: Vec<(&str, &serde_json::value::RawValue)> =
        serde_json::from_str::<BTreeMap<&str, &serde_json::value::RawValue>>(text)
            .ok()?
            .into_iter()
            .collect();
    let known = known();
    let mut model = String::with_capacity(text.len());
    let mut extension = Map::new();
    let mut unknown = Vec::new();
    model.push('{');
    for (key, value) in fields {
        if known.device.contains(&key) {
            if model.len() > 1 {
                model.push(',');
            }
            model.push('"');
            model.push_str(key);
            model.push_str("\":");
            model.push_str(value.get());
        } else {
            extension.insert(key.to_string(), serde_json::from_str(value.get()).ok()?);
            unknown.push(key.to_string());
        }
    }
    model.push('}');
    let mut device: Device = serde_json::from_str(&model).ok()?;
    let long = device.analytics.as_ref().is_some_and(|a| {
        a.apps
            .iter()
            .any(|app| app.daily_crashes.len() > MAX_CRASH_DAYS)
    });
    // A list longer than the model keeps, or a field the cloud would refuse: the full read
    // decides (it keeps the newest days, sets an unusable optional field aside).
    if long || device.validate().is_err() {
        return None;
    }
    device.extension = extension;
    Some((
        device,
        Unmodelled {
            unknown_fields: unknown,
            long_lists: vec![],
            unusable_fields: vec![],
        },
    ))
}

/// A device line read leniently: whatever the model does not know (unknown fields at any level,
/// the oldest days of a `daily_crashes` longer than [`MAX_CRASH_DAYS`]) becomes the device's
/// extension data, and only invalid JSON or a missing or invalid field of the model refuses the
/// line.
fn read_lenient(text: &str) -> Result<(Device, Unmodelled), String> {
    if let Some(read) = read_top_level_extras(text) {
        return Ok(read);
    }
    let known = known();
    let mut line: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut extension = Map::new();
    let mut unknown = Vec::new();
    let mut long = Vec::new();
    split_unknown(&mut line, known.device, "", &mut extension, &mut unknown);
    if let Some(Value::Object(defender)) = line.get_mut("defender") {
        let mut ext = Map::new();
        split_unknown(
            defender,
            known.defender,
            "defender.",
            &mut ext,
            &mut unknown,
        );
        split_list(
            defender,
            "detections",
            known.detection,
            "defender.detections[].",
            &mut ext,
            &mut unknown,
            |_, _| {},
        );
        if !ext.is_empty() {
            extension.insert("defender".into(), Value::Object(ext));
        }
    }
    if let Some(Value::Object(analytics)) = line.get_mut("analytics") {
        let mut ext = Map::new();
        split_unknown(
            analytics,
            known.analytics,
            "analytics.",
            &mut ext,
            &mut unknown,
        );
        split_list(
            analytics,
            "apps",
            known.app,
            "analytics.apps[].",
            &mut ext,
            &mut unknown,
            |app, app_ext| {
                // Oldest first: the model keeps the newest days, the extension data all of them.
                if let Some(Value::Array(days)) = app.get_mut("daily_crashes")
                    && days.len() > MAX_CRASH_DAYS
                {
                    app_ext.insert("daily_crashes".into(), Value::Array(days.clone()));
                    days.drain(..days.len() - MAX_CRASH_DAYS);
                    long.push("analytics.apps[].daily_crashes".to_string());
                }
            },
        );
        if !ext.is_empty() {
            extension.insert("analytics".into(), Value::Object(ext));
        }
    }
    let mut unusable = Vec::new();
    let mut device = match usable_device(&line) {
        Ok(d) => d,
        Err(e) => {
            set_aside_unusable_optional_fields(&mut line, &mut extension, &mut unusable);
            if unusable.is_empty() {
                return Err(e);
            }
            usable_device(&line)?
        }
    };
    device.extension = extension;
    for paths in [&mut unknown, &mut long] {
        paths.sort_unstable();
        paths.dedup();
    }
    Ok((
        device,
        Unmodelled {
            unknown_fields: unknown,
            long_lists: long,
            unusable_fields: unusable,
        },
    ))
}

/// The fields of a device line the model may do without: everything but what identifies and
/// classifies the device. A line whose required field is missing or unusable is refused; an
/// optional one that is unusable is set aside.
const OPTIONAL_FIELDS: [&str; 10] = [
    "entra_device_id",
    "primary_user",
    "model",
    "manufacturer",
    "serial_number",
    "domain",
    "sku",
    "last_active",
    "defender",
    "analytics",
];

/// The device a line (already cleared of fields the model does not know) describes, if the
/// model can use every field of it: it parses and the cloud's rule (`Device::validate`) holds.
fn usable_device(line: &Map<String, Value>) -> Result<Device, String> {
    let device: Device =
        serde_json::from_value(Value::Object(line.clone())).map_err(|e| e.to_string())?;
    device.validate()?;
    Ok(device)
}

/// Moves each optional field whose value the model cannot use (a wrong type, a string over the
/// length limit, a Defender or analytics block that does not parse) into `extension`, noting
/// its name: the line without it is then judged on its required fields alone. Only lines the
/// model refuses get here, so trying the fields one by one costs nothing on a plain export.
fn set_aside_unusable_optional_fields(
    line: &mut Map<String, Value>,
    extension: &mut Map<String, Value>,
    unusable: &mut Vec<String>,
) {
    let mut required = line.clone();
    for field in OPTIONAL_FIELDS {
        required.remove(field);
    }
    if usable_device(&required).is_err() {
        // A required field is missing or unusable: the line is refused for that.
        return;
    }
    for field in OPTIONAL_FIELDS {
        let Some(value) = line.get(field) else {
            continue;
        };
        let mut alone = required.clone();
        alone.insert(field.to_string(), value.clone());
        if usable_device(&alone).is_err()
            && let Some(value) = line.remove(field)
        {
            unusable.push(field.to_string());
            // Beside what the line carries beyond the model in that block, if anything.
            match (extension.get_mut(field), value) {
                (Some(Value::Object(ext)), Value::Object(v)) => {
                    for (k, x) in v {
                        ext.entry(k).or_insert(x);
                    }
                }
                (_, value) => {
                    extension.insert(field.to_string(), value);
                }
            }
        }
    }
}

/// A device line with its Defender and analytics blocks kept as raw JSON, parsed only when a
/// pass asks for them. It mirrors [`Device`] field for field (a test checks they agree). It
/// reads only lines a first pass found valid, so it skips unparsed what a line carries beyond the
/// model, as it skips the blocks: a pass that needs neither costs the same on such a line.
#[derive(Deserialize)]
struct LeanDevice<'a> {
    resource_id: i64,
    name: String,
    client: bool,
    #[serde(default)]
    client_version: Option<String>,
    client_active: bool,
    os: String,
    os_build: String,
    join_type: cloudattach_sdk::JoinType,
    mdm_enrolled: bool,
    #[serde(default)]
    entra_device_id: Option<String>,
    #[serde(default)]
    primary_user: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    manufacturer: Option<String>,
    #[serde(default)]
    serial_number: Option<String>,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    last_active: Option<String>,
    #[serde(default, borrow)]
    defender: Option<&'a serde_json::value::RawValue>,
    #[serde(default, borrow)]
    analytics: Option<&'a serde_json::value::RawValue>,
}

impl LeanDevice<'_> {
    fn into_device(self, parts: DeviceParts) -> Result<Device, serde_json::Error> {
        fn block<T: serde::de::DeserializeOwned>(
            raw: Option<&serde_json::value::RawValue>,
            wanted: bool,
        ) -> Result<Option<T>, serde_json::Error> {
            match raw {
                Some(r) if wanted => serde_json::from_str(r.get()),
                _ => Ok(None),
            }
        }
        let defender = block(self.defender, parts.defender)?;
        let analytics = block(self.analytics, parts.analytics)?;
        let mut d = Device::new(self.resource_id, self.name);
        d.client = self.client;
        d.client_version = self.client_version;
        d.client_active = self.client_active;
        d.os = self.os;
        d.os_build = self.os_build;
        d.join_type = self.join_type;
        d.mdm_enrolled = self.mdm_enrolled;
        d.entra_device_id = self.entra_device_id;
        d.primary_user = self.primary_user;
        d.model = self.model;
        d.manufacturer = self.manufacturer;
        d.serial_number = self.serial_number;
        d.domain = self.domain;
        d.sku = self.sku;
        d.last_active = self.last_active;
        d.defender = defender;
        d.analytics = analytics;
        Ok(d)
    }
}

/// A shared, opened site.
pub type SharedSite = Arc<Site>;

#[cfg(test)]
mod tests {
    use super::*;

    fn def(id: &str, members: &[i64], includes: &[&str], limiting: Option<&str>) -> CollectionDef {
        CollectionDef {
            id: id.into(),
            name: id.into(),
            members: members.to_vec(),
            includes: includes.iter().map(|s| s.to_string()).collect(),
            limiting: limiting.map(Into::into),
        }
    }

    fn set(ids: &[i64]) -> Members {
        Members::Set(ids.iter().copied().collect())
    }

    fn device_line(id: i64, name: &str) -> String {
        format!(
            r#"{{"resource_id":{id},"name":"{name}","client":true,"client_version":"5.00.9106.1000","client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045","join_type":"hybrid","mdm_enrolled":false}}"#
        )
    }

    fn site_with(lines: &[String]) -> (tempfile::TempDir, Site) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("site.toml"),
            "code = \"PS1\"\nname = \"S\"\nversion = \"2303\"\nhierarchy_id = \"6f1c2a52-6a4e-4f39-9c1b-3a8e2d6b7c10\"\nservice_connection_point = \"online\"\nadministration_service = true\nentra_user_discovery = true\nad_user_discovery = true\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("devices.jsonl"), lines.join("\n") + "\n").unwrap();
        let site = Site::open(dir.path()).unwrap();
        (dir, site)
    }

    fn visited(site: &Site, parts: DeviceParts) -> Vec<i64> {
        let mut ids = vec![];
        site.for_each_device_parts(parts, &mut |d| ids.push(d.resource_id))
            .unwrap();
        ids
    }

    #[test]
    fn a_changed_inventory_is_read_afresh() {
        let (dir, site) = site_with(&[device_line(1, "A"), "{broken".into(), device_line(2, "B")]);
        assert_eq!(visited(&site, DeviceParts::ALL), vec![1, 2]);
        assert_eq!(visited(&site, DeviceParts::NONE), vec![1, 2]);
        assert_eq!(site.scan_summary().unwrap().skipped, 1);
        // The bad line is fixed while the process runs (sync --watch): line 2 is a device now.
        std::fs::write(
            dir.path().join("devices.jsonl"),
            [
                device_line(1, "A"),
                device_line(3, "C"),
                device_line(2, "B"),
            ]
            .join("\n")
                + "\n",
        )
        .unwrap();
        assert_eq!(visited(&site, DeviceParts::NONE), vec![1, 3, 2]);
        assert_eq!(site.scan_summary().unwrap().skipped, 0);
        assert_eq!(site.device_count().unwrap(), 3);
    }

    fn site_with_bytes(devices: &[u8]) -> (tempfile::TempDir, Site) {
        let (dir, _) = site_with(&[]);
        std::fs::write(dir.path().join("devices.jsonl"), devices).unwrap();
        let site = Site::open(dir.path()).unwrap();
        (dir, site)
    }

    fn bad_lines(site: &Site) -> Vec<(u64, String)> {
        let scan = site.scan_summary().unwrap();
        scan.bad_lines
            .into_iter()
            .map(|b| (b.line, b.message))
            .collect()
    }

    /// A delta's one read lists the lines it does not know; reading just those gives what a pass
    /// that leaves the known lines unparsed gives — the same devices with the same line hashes,
    /// the same bad lines by number, the same device count — through a byte order mark, CRLF
    /// line ends, blank lines and blanks around a line. A file changed since that read is not
    /// read from the list, and a UTF-16 file is not listed at all.
    #[test]
    fn the_lines_a_delta_lists_read_as_a_pass_that_skips_the_known_ones() {
        let mut text = UTF8_BOM.to_vec();
        text.extend_from_slice(device_line(1, "KNOWN-1").as_bytes());
        text.extend_from_slice(b"\r\n  ");
        text.extend_from_slice(device_line(2, "CHANGED-2").as_bytes());
        text.extend_from_slice(b" \r\n\r\n{not json\n");
        text.extend_from_slice(device_line(3, "KNOWN-3").as_bytes());
        text.extend_from_slice(b"\n\t");
        text.extend_from_slice(device_line(4, "CHANGED-4").as_bytes());
        let (dir, site) = site_with_bytes(&text);
        let mut every = Vec::new();
        site.for_each_line_device(DeviceParts::ALL, None, &mut |h, d| {
            every.push((h, d.resource_id))
        })
        .unwrap();
        assert_eq!(every.iter().map(|e| e.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
        let known: HashSet<u64> = every.iter().filter(|e| e.1 % 2 == 1).map(|e| e.0).collect();

        let skipping = Site::open(dir.path()).unwrap();
        let mut reference = Vec::new();
        skipping
            .for_each_line_device(
                DeviceParts::ALL,
                Some(&mut |h| known.contains(&h)),
                &mut |h, d| reference.push((h, d.resource_id, d.name)),
            )
            .unwrap();

        let listing = Site::open(dir.path()).unwrap();
        let listed = listing
            .changed_lines(&mut |h| known.contains(&h))
            .unwrap()
            .expect("a UTF-8 file is listed");
        assert_eq!((listed.len(), listed.unchanged()), (3, 2));
        let mut got = Vec::new();
        assert!(
            listing
                .for_each_listed_device(DeviceParts::ALL, &listed, &mut |h, d| {
                    got.push((h, d.resource_id, d.name))
                })
                .unwrap()
        );
        assert_eq!(got, reference);
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), [2, 4]);
        assert_eq!(bad_lines(&listing), bad_lines(&skipping));
        assert_eq!(bad_lines(&listing)[0].0, 4, "{:?}", bad_lines(&listing));
        assert_eq!(
            listing.scan_summary().unwrap().devices,
            skipping.scan_summary().unwrap().devices
        );

        // The file changed since the read: nothing is read from the list.
        text.extend_from_slice(b"\n");
        text.extend_from_slice(device_line(5, "NEW-5").as_bytes());
        std::fs::write(dir.path().join("devices.jsonl"), &text).unwrap();
        let mut after = 0;
        assert!(
            !listing
                .for_each_listed_device(DeviceParts::ALL, &listed, &mut |_, _| after += 1)
                .unwrap()
        );
        assert_eq!(after, 0);

        // UTF-16 is transcoded as it is read: its lines have no place in the file to list.
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in device_line(1, "UTF16").encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(dir.path().join("devices.jsonl"), &utf16).unwrap();
        assert!(listing.changed_lines(&mut |_| false).unwrap().is_none());
    }

    #[test]
    fn every_encoding_defect_is_one_lines_problem() {
        let mut file = Vec::new();
        file.extend_from_slice(device_line(1, "A").as_bytes());
        file.push(b'\n');
        // A Windows-1252 "é" (0xE9) in a name.
        file.extend_from_slice(
            device_line(2, "Caf\u{1}")
                .replace('\u{1}', "\u{0}")
                .as_bytes(),
        );
        let at = file.len() - file.iter().rev().position(|b| *b == 0).unwrap() - 1;
        file[at] = 0xE9;
        file.push(b'\n');
        // CRLF, blank lines, a NUL byte, a line without its newline (truncated).
        file.extend_from_slice(format!("{}\r\n\r\n\n", device_line(3, "C")).as_bytes());
        file.extend_from_slice(b"{\"resource_id\":4,\0}\n");
        file.extend_from_slice(format!("{}\n", device_line(5, "E")).as_bytes());
        file.extend_from_slice(&device_line(6, "F").as_bytes()[..40]);
        let (_dir, site) = site_with_bytes(&file);
        assert_eq!(visited(&site, DeviceParts::ALL), vec![1, 3, 5]);
        assert_eq!(visited(&site, DeviceParts::NONE), vec![1, 3, 5]);
        let bad = bad_lines(&site);
        assert_eq!(
            bad.iter().map(|b| b.0).collect::<Vec<_>>(),
            vec![2, 6, 8],
            "{bad:?}"
        );
        assert!(bad[0].1.contains("not valid UTF-8 (byte 0xE9"), "{bad:?}");
        assert!(bad[0].1.contains("re-save the file as UTF-8"), "{bad:?}");
        assert!(bad[1].1.contains("NUL bytes"), "{bad:?}");
        assert!(bad[2].1.contains("EOF while parsing"), "{bad:?}");
        assert_eq!(site.scan_summary().unwrap().skipped, 3);
    }

    #[test]
    fn byte_order_marks_and_utf16_files_are_read() {
        let lines = format!("{}\r\n{}\r\n", device_line(1, "Café"), device_line(2, "B"));
        let mut utf8_bom = UTF8_BOM.to_vec();
        utf8_bom.extend_from_slice(lines.as_bytes());
        let utf16 = |le: bool| {
            let mut out = if le {
                vec![0xFF, 0xFE]
            } else {
                vec![0xFE, 0xFF]
            };
            for unit in lines.encode_utf16() {
                out.extend_from_slice(&if le {
                    unit.to_le_bytes()
                } else {
                    unit.to_be_bytes()
                });
            }
            out
        };
        for (what, bytes) in [
            ("UTF-8 with BOM", utf8_bom),
            ("UTF-16 LE", utf16(true)),
            ("UTF-16 BE", utf16(false)),
        ] {
            let (_dir, site) = site_with_bytes(&bytes);
            let mut names = vec![];
            site.for_each_device(&mut |d| names.push(d.name.clone()))
                .unwrap();
            assert_eq!(names, ["Café", "B"], "{what}");
            assert_eq!(site.scan_summary().unwrap().skipped, 0, "{what}");
        }

        // site.toml and collections.json with a BOM (UTF-8 or UTF-16) read the same.
        let (dir, _) = site_with(&[device_line(1, "A")]);
        let toml = std::fs::read(dir.path().join("site.toml")).unwrap();
        let collections = r#"[{"id":"PS100001","name":"Pilot","members":[1]}]"#;
        let mut bom_toml = UTF8_BOM.to_vec();
        bom_toml.extend_from_slice(&toml);
        std::fs::write(dir.path().join("site.toml"), &bom_toml).unwrap();
        let mut utf16_collections = vec![0xFF, 0xFE];
        for unit in collections.encode_utf16() {
            utf16_collections.extend_from_slice(&unit.to_le_bytes());
        }
        std::fs::write(dir.path().join("collections.json"), &utf16_collections).unwrap();
        let site = Site::open(dir.path()).unwrap();
        assert_eq!(site.info.code, "PS1");
        assert!(site.is_member("PS100001", 1));
        let mut bom_collections = UTF8_BOM.to_vec();
        bom_collections.extend_from_slice(collections.as_bytes());
        std::fs::write(dir.path().join("collections.json"), &bom_collections).unwrap();
        assert!(Site::open(dir.path()).unwrap().is_member("PS100001", 1));

        // Bytes that are not UTF-8 in site.toml: the file, the line, what to do.
        let mut bad = toml.clone();
        bad.extend_from_slice(b"# caf\xE9\n");
        std::fs::write(dir.path().join("site.toml"), &bad).unwrap();
        let err = Site::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("site.toml: line 9: not valid UTF-8"), "{err}");
    }

    #[test]
    fn devices_carrying_more_than_the_model_are_kept_with_it_as_extension_data() {
        let plain = r#"{"resource_id":7,"name":"PC-7","client":true,"client_version":"5.00.9106.1000","client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045","join_type":"hybrid","mdm_enrolled":false,"defender":{"rtp_enabled":true,"detections":[{"threat_id":1,"threat_name":"t","category":"c","severity":"high","current_status":"active","initial_detection_time":"2024-10-01T00:00:00Z","number_of_detections":2},{"threat_id":2,"threat_name":"u","category":"c","severity":"low","current_status":"removed","initial_detection_time":"2024-10-01T00:00:00Z","number_of_detections":1}]},"analytics":{"core_boot_ms":1,"total_boot_ms":2,"gp_logon_ms":3,"desktop_usable_ms":4,"apps":[{"name":"Teams","usage_minutes":5,"daily_crashes":[0,1,2,3,4,5,6,7,8,9,10,11,12,13]}]}}"#;
        let days: Vec<u32> = (0..20).collect();
        let mut extended: Value = serde_json::from_str(plain).unwrap();
        extended["resource_id"] = 8.into();
        extended["bitlocker"] = serde_json::json!({ "recovery_key_escrowed": true });
        extended["defender"]["asr_mode"] = "block".into();
        extended["defender"]["detections"][1]["remediation"] = "quarantine".into();
        extended["analytics"]["battery_health"] = 93.into();
        extended["analytics"]["apps"][0]["publisher"] = "Microsoft".into();
        extended["analytics"]["apps"][0]["daily_crashes"] = serde_json::json!(days);
        let lines = [
            plain.to_string(),
            extended.to_string(),
            // Read leniently first after a line with extras: the same device as read strictly.
            plain.replace("\"resource_id\":7", "\"resource_id\":10"),
            // Unknown fields do not excuse a missing one: still a bad line.
            r#"{"resource_id":9,"bitlocker":{}}"#.to_string(),
        ];
        let (_dir, site) = site_with(&lines);
        let mut devices = vec![];
        site.for_each_device_owned(&mut |d| devices.push(d))
            .unwrap();
        assert_eq!(devices.len(), 3);
        assert_eq!(
            devices[2],
            serde_json::from_str::<Device>(&lines[2]).unwrap()
        );
        let (a, b) = (&devices[0], &devices[1]);
        assert!(a.extension.is_empty());
        assert_eq!(
            Value::Object(b.extension.clone()),
            serde_json::json!({
                "bitlocker": { "recovery_key_escrowed": true },
                "defender": {
                    "asr_mode": "block",
                    "detections": [{}, { "remediation": "quarantine" }],
                },
                "analytics": {
                    "battery_health": 93,
                    "apps": [{ "publisher": "Microsoft", "daily_crashes": days }],
                },
            })
        );
        assert_eq!(
            b.extension_at("/bitlocker/recovery_key_escrowed"),
            Some(&Value::Bool(true))
        );
        // What the model keeps is what the same line without the extras gives: the newest 14
        // days of crashes, and the same JSON for every record made of it.
        let mut b_model = b.clone();
        b_model.extension = Map::new();
        b_model.resource_id = 7;
        let mut a_days = a.clone();
        a_days.analytics.as_mut().unwrap().apps[0].daily_crashes = (6..20).collect();
        assert_eq!(
            serde_json::to_string(&b_model).unwrap(),
            serde_json::to_string(&a_days).unwrap()
        );
        let scan = site.scan_summary().unwrap();
        assert_eq!((scan.devices, scan.skipped), (3, 1));
        let fields: Vec<(&str, u64)> = scan
            .unknown_fields
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(
            fields,
            [
                ("analytics.apps[].publisher", 1),
                ("analytics.battery_health", 1),
                ("bitlocker", 1),
                ("defender.asr_mode", 1),
                ("defender.detections[].remediation", 1),
            ]
        );
        assert_eq!(
            scan.long_lists.into_iter().collect::<Vec<_>>(),
            [("analytics.apps[].daily_crashes".to_string(), 1)]
        );
        // Later passes visit the same devices, with the extension data when asked for it.
        for parts in [DeviceParts::NONE, DeviceParts::DEFENDER, DeviceParts::ALL] {
            let mut seen = vec![];
            site.for_each_device_parts(parts, &mut |d| seen.push(d))
                .unwrap();
            assert_eq!(seen.len(), 3, "{parts:?}");
            assert_eq!(seen[1], devices[1].with_parts(parts), "{parts:?}");
        }
        let mut only_ext = vec![];
        site.for_each_device_parts(DeviceParts::EXTENSION, &mut |d| only_ext.push(d))
            .unwrap();
        assert_eq!(only_ext[1].extension, b.extension);
        assert!(only_ext[1].defender.is_none());
    }

    #[test]
    fn the_fast_lenient_read_agrees_with_the_full_one() {
        let plain = device_line(1, "A");
        let top = plain.replace(
            "{\"resource_id\"",
            "{\"bitlocker\":{\"on\":true},\"tpm\":\"2.0\",\"resource_id\"",
        );
        let (d, u) = read_top_level_extras(&top).expect("top-level extras only");
        assert_eq!(u.unknown_fields, ["bitlocker", "tpm"]);
        assert_eq!(d.extension_at("/bitlocker/on"), Some(&Value::Bool(true)));
        assert_eq!(
            d.with_parts(DeviceParts::NONE),
            serde_json::from_str::<Device>(&plain).unwrap()
        );
        assert_eq!(read_lenient(&top).unwrap(), (d.clone(), u));
        // An escaped key, or extras inside a block: the full read, same result.
        let escaped = top.replace("\"tpm\"", "\"t\\u0070m\"");
        assert!(read_top_level_extras(&escaped).is_none());
        assert_eq!(read_lenient(&escaped).unwrap().0, d);
        let nested = plain.replace(
            "{\"resource_id\"",
            "{\"defender\":{\"asr\":1},\"resource_id\"",
        );
        assert!(read_top_level_extras(&nested).is_none());
        assert_eq!(
            read_lenient(&nested).unwrap().1.unknown_fields,
            ["defender.asr"]
        );
    }

    #[test]
    fn the_lenient_reader_knows_every_field_of_the_model() {
        let k = known();
        assert!(k.device.contains(&"resource_id") && k.device.contains(&"analytics"));
        assert!(!k.device.contains(&"extension"));
        assert!(k.defender.contains(&"detections"));
        assert!(k.detection.contains(&"number_of_detections"));
        assert!(k.analytics.contains(&"apps"));
        assert_eq!(k.app, ["name", "usage_minutes", "daily_crashes"]);
    }

    #[test]
    fn devices_the_cloud_would_refuse_are_skipped_with_their_line() {
        let (_dir, site) = site_with(&[
            device_line(1, " "),
            device_line(0, "Zero"),
            device_line(2, "Fine"),
        ]);
        assert_eq!(visited(&site, DeviceParts::ALL), vec![2]);
        let scan = site.scan_summary().unwrap();
        assert_eq!(scan.skipped, 2);
        assert_eq!(scan.bad_lines[0].line, 1);
        assert!(
            scan.bad_lines[0].message.contains("`name` is empty"),
            "{:?}",
            scan.bad_lines
        );
        assert!(
            scan.bad_lines[1].message.contains("not positive"),
            "{:?}",
            scan.bad_lines
        );
    }

    #[test]
    fn an_unusable_optional_field_is_set_aside_and_the_device_kept() {
        let base = r#"{"resource_id":1,"name":"PC-1","client":true,"client_version":"5.00.9106.1000","client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045","join_type":"hybrid","mdm_enrolled":false"#;
        let long = "x".repeat(cloudattach_sdk::device::MAX_TEXT_LEN + 1);
        let lines = [
            // A number where the model has a string.
            format!(r#"{base},"model":5,"manufacturer":"Contoso"}}"#)
                .replace("\"resource_id\":1", "\"resource_id\":1"),
            // A string over the cloud's limit.
            format!(r#"{base},"serial_number":"{long}"}}"#)
                .replace("\"resource_id\":1", "\"resource_id\":2"),
            // A Defender block that does not parse, beside a field the model does not know.
            format!(r#"{base},"defender":{{"rtp_enabled":"yes","asr_mode":"block"}}}}"#)
                .replace("\"resource_id\":1", "\"resource_id\":3"),
            // A required field unusable: still a bad line.
            format!(r#"{base},"model":5}}"#)
                .replace("\"resource_id\":1", "\"resource_id\":4")
                .replace("\"client\":true", "\"client\":\"yes\""),
        ];
        let (_dir, site) = site_with(&lines);
        let mut devices = vec![];
        site.for_each_device_owned(&mut |d| devices.push(d))
            .unwrap();
        let ids: Vec<i64> = devices.iter().map(|d| d.resource_id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        assert_eq!(devices[0].model, None);
        assert_eq!(devices[0].manufacturer.as_deref(), Some("Contoso"));
        assert_eq!(
            devices[0].extension_at("/model"),
            Some(&serde_json::json!(5))
        );
        assert_eq!(devices[1].serial_number, None);
        assert_eq!(
            devices[1]
                .extension_at("/serial_number")
                .and_then(Value::as_str),
            Some(long.as_str())
        );
        assert!(devices[2].defender.is_none());
        assert_eq!(
            devices[2].extension_at("/defender/rtp_enabled"),
            Some(&serde_json::json!("yes"))
        );
        assert_eq!(
            devices[2].extension_at("/defender/asr_mode"),
            Some(&serde_json::json!("block"))
        );
        let scan = site.scan_summary().unwrap();
        assert_eq!(scan.skipped, 1);
        assert_eq!(scan.bad_lines[0].line, 4);
        let unusable: Vec<(&str, u64)> = scan
            .unusable_fields
            .iter()
            .map(|(k, n)| (k.as_str(), *n))
            .collect();
        assert_eq!(
            unusable,
            vec![("defender", 1), ("model", 1), ("serial_number", 1)]
        );
        // A second pass (lean or not) reads the same devices.
        assert_eq!(visited(&site, DeviceParts::NONE), vec![1, 2, 3]);
        assert_eq!(visited(&site, DeviceParts::DEFENDER), vec![1, 2, 3]);
    }

    #[test]
    fn lean_parsing_agrees_with_full_parsing() {
        let line = r#"{"resource_id":7,"name":"PC-7","client":true,"client_version":"5.00.9106.1000",
            "client_active":true,"os":"Microsoft Windows NT Workstation 10.0","os_build":"10.0.19045",
            "join_type":"hybrid","mdm_enrolled":false,"entra_device_id":"e","primary_user":"u@x",
            "model":"m","manufacturer":"f","serial_number":"s","domain":"d","sku":"Enterprise",
            "last_active":"2024-10-01T00:00:00Z",
            "defender":{"rtp_enabled":true,"detections":[{"threat_id":1,"threat_name":"t","category":"c",
              "severity":"high","current_status":"active","initial_detection_time":"2024-10-01T00:00:00Z",
              "number_of_detections":2}]},
            "analytics":{"core_boot_ms":1,"total_boot_ms":2,"gp_logon_ms":3,"desktop_usable_ms":4}}"#;
        let full: Device = serde_json::from_str(line).unwrap();
        let lean = |parts| {
            serde_json::from_str::<LeanDevice>(line)
                .unwrap()
                .into_device(parts)
                .unwrap()
        };
        assert_eq!(lean(DeviceParts::ALL), full);
        let none = lean(DeviceParts::NONE);
        let mut with_blocks = none.clone();
        with_blocks.defender = full.defender.clone();
        with_blocks.analytics = full.analytics.clone();
        assert_eq!(with_blocks, full);
        assert!(none.defender.is_none() && none.analytics.is_none());
        assert_eq!(lean(DeviceParts::DEFENDER).defender, full.defender);
        assert_eq!(lean(DeviceParts::ANALYTICS).analytics, full.analytics);
        // A line missing a field is invalid either way; a field beyond the model is skipped.
        let bad = r#"{"resource_id":1}"#;
        assert!(serde_json::from_str::<Device>(bad).is_err());
        assert!(serde_json::from_str::<LeanDevice>(bad).is_err(), "{bad}");
        let more = line.replace("\"sku\"", "\"bitlocker\":{\"on\":true},\"sku\"");
        assert_eq!(
            serde_json::from_str::<LeanDevice>(&more)
                .unwrap()
                .into_device(DeviceParts::NONE)
                .unwrap(),
            none
        );
    }

    #[test]
    fn membership_table() {
        struct Case {
            name: &'static str,
            defs: Vec<CollectionDef>,
            target: &'static str,
            expect: Members,
        }
        let cases = vec![
            Case {
                name: "direct members only",
                defs: vec![def("A", &[1, 2], &[], None)],
                target: "A",
                expect: set(&[1, 2]),
            },
            Case {
                name: "includes add subcollection members",
                defs: vec![def("A", &[1], &["B"], None), def("B", &[2, 3], &[], None)],
                target: "A",
                expect: set(&[1, 2, 3]),
            },
            Case {
                name: "nested includes are recursive",
                defs: vec![
                    def("A", &[], &["B"], None),
                    def("B", &[2], &["C"], None),
                    def("C", &[3], &[], None),
                ],
                target: "A",
                expect: set(&[2, 3]),
            },
            Case {
                name: "limiting intersects the whole union",
                defs: vec![
                    def("A", &[1, 2], &["B"], Some("L")),
                    def("B", &[3, 4], &[], None),
                    def("L", &[2, 3, 9], &[], None),
                ],
                target: "A",
                expect: set(&[2, 3]),
            },
            Case {
                name: "limiting by All Systems changes nothing",
                defs: vec![def("A", &[5], &[], Some(ALL_SYSTEMS))],
                target: "A",
                expect: set(&[5]),
            },
            Case {
                name: "including All Systems is everything",
                defs: vec![def("A", &[], &[ALL_SYSTEMS], None)],
                target: "A",
                expect: Members::All,
            },
            Case {
                name: "everything limited by a set is that set",
                defs: vec![
                    def("A", &[], &[ALL_SYSTEMS], Some("L")),
                    def("L", &[7, 8], &[], None),
                ],
                target: "A",
                expect: set(&[7, 8]),
            },
            Case {
                name: "limiting of an included collection applies inside it",
                defs: vec![
                    def("A", &[1], &["B"], None),
                    def("B", &[2, 3], &[], Some("L")),
                    def("L", &[3], &[], None),
                ],
                target: "A",
                expect: set(&[1, 3]),
            },
            Case {
                name: "diamond includes count once",
                defs: vec![
                    def("A", &[], &["B", "C"], None),
                    def("B", &[], &["D"], None),
                    def("C", &[], &["D"], None),
                    def("D", &[4], &[], None),
                ],
                target: "A",
                expect: set(&[4]),
            },
        ];
        for c in cases {
            let got = effective_memberships(&c.defs).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert_eq!(got[c.target], c.expect, "{}", c.name);
        }
    }

    #[test]
    fn cycles_name_every_collection_in_them() {
        let defs = vec![
            def("A", &[], &["B"], None),
            def("B", &[], &["C"], None),
            def("C", &[], &[], Some("A")),
            def("D", &[1], &[], None),
        ];
        let err = effective_memberships(&defs).unwrap_err();
        assert_eq!(
            err,
            MembershipError::Cycle(vec!["A".into(), "B".into(), "C".into(), "A".into()])
        );
        let self_loop = vec![def("A", &[], &["A"], None)];
        assert_eq!(
            effective_memberships(&self_loop).unwrap_err(),
            MembershipError::Cycle(vec!["A".into(), "A".into()])
        );
    }

    #[test]
    fn unknown_references_are_named() {
        let defs = vec![def("A", &[], &["NOPE0001"], None)];
        assert_eq!(
            effective_memberships(&defs).unwrap_err().to_string(),
            "collection A references NOPE0001, which does not exist"
        );
    }
}

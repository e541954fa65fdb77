//! The site inventory (docs/domain.md#site-inventory): `site.toml`, `devices.jsonl` (streamed, never held in
//! memory) and `collections.json` with effective memberships.

use cloudattach_sdk::{CollectionInfo, Device, DeviceParts, SiteInfo};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader};
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

/// The last complete pass over `devices.jsonl`.
#[derive(Debug)]
struct Scan {
    identity: FileIdentity,
    summary: ScanSummary,
    /// Lines it skipped (bad or duplicate): later passes over the same file skip them without
    /// parsing, so every pass visits the same devices.
    skipped_lines: Arc<HashSet<u64>>,
}

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
    /// What the last complete pass found, for the file as it was then.
    scan: Mutex<Option<Scan>>,
}

impl Site {
    /// Opens a site directory.
    pub fn open(dir: &Path) -> Result<Site, SiteError> {
        let site_toml = dir.join("site.toml");
        let text = std::fs::read_to_string(&site_toml).map_err(|source| SiteError::Io {
            path: site_toml.clone(),
            source,
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
        let defs: Vec<CollectionDef> = match std::fs::read(&coll_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| SiteError::Collections {
                path: coll_path.clone(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
            Err(source) => {
                return Err(SiteError::Io {
                    path: coll_path,
                    source,
                });
            }
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
            scan: Mutex::new(None),
        })
    }

    /// Streams every valid device to `visit`. Bad lines are skipped and remembered (the first
    /// complete pass records the [`ScanSummary`]).
    pub fn for_each_device(&self, visit: &mut dyn FnMut(&Device)) -> Result<(), SiteError> {
        self.for_each_device_owned(&mut |d| visit(&d))
    }

    /// [`Site::for_each_device`], handing over each device. Lines are read and parsed on a
    /// second thread, in chunks through a bounded channel, so parsing overlaps with what the
    /// caller does with each device while memory stays flat.
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
        const CHUNK: usize = 1024;
        std::thread::scope(|scope| {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Device>>(4);
            let parser = scope.spawn(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                let result = self.parse_devices(parts, &mut |d| {
                    chunk.push(d);
                    if chunk.len() < CHUNK {
                        return true;
                    }
                    // A failed send means the caller is gone (it panicked): stop reading.
                    tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))
                        .is_ok()
                });
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
                result
            });
            for chunk in rx {
                for d in chunk {
                    visit(d);
                }
            }
            parser
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// Reads and parses `devices.jsonl`, handing each valid device to `emit` until it returns
    /// false.
    fn parse_devices(
        &self,
        parts: DeviceParts,
        emit: &mut dyn FnMut(Device) -> bool,
    ) -> Result<(), SiteError> {
        let path = self.dir.join("devices.jsonl");
        let file = File::open(&path).map_err(|source| SiteError::Io {
            path: path.clone(),
            source,
        })?;
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        let mut line = String::new();
        let mut n = 0u64;
        let mut summary = ScanSummary::default();
        let mut seen = HashSet::new();
        let mut skipped_lines = HashSet::new();
        // A pass over the file as the last complete pass saw it skips the lines that pass
        // found bad without parsing them; a changed file (`sync --watch`) is read afresh.
        let identity = FileIdentity::of(reader.get_ref());
        let known_skipped: Option<Arc<HashSet<u64>>> = self.scan.lock().ok().and_then(|s| {
            s.as_ref()
                .filter(|s| Some(s.identity) == identity)
                .map(|s| s.skipped_lines.clone())
        });
        let record = known_skipped.is_none();
        let known_skipped = known_skipped.as_deref();
        // Only a pass that knows which lines are bad may leave blocks unparsed.
        let parts = if known_skipped.is_some() {
            parts
        } else {
            DeviceParts::ALL
        };
        loop {
            line.clear();
            let read = reader
                .read_line(&mut line)
                .map_err(|source| SiteError::Io {
                    path: path.clone(),
                    source,
                })?;
            if read == 0 {
                break;
            }
            n += 1;
            let text = line.trim();
            if text.is_empty() {
                continue;
            }
            if known_skipped.is_some_and(|skip| skip.contains(&n)) {
                summary.skipped += 1;
                continue;
            }
            let parsed = if parts == DeviceParts::ALL {
                serde_json::from_str::<Device>(text)
            } else {
                serde_json::from_str::<LeanDevice>(text).and_then(|d| d.into_device(parts))
            };
            let parsed = parsed
                .map_err(|e| e.to_string())
                .and_then(|d| d.validate().map(|()| d));
            let bad = match parsed {
                Ok(d) => {
                    if record && !seen.insert(d.resource_id) {
                        Some(format!(
                            "resource_id {} appears on an earlier line",
                            d.resource_id
                        ))
                    } else {
                        summary.devices += 1;
                        if !emit(d) {
                            return Ok(());
                        }
                        None
                    }
                }
                Err(e) => Some(e),
            };
            if let Some(message) = bad {
                skipped_lines.insert(n);
                summary.skipped += 1;
                if summary.bad_lines.len() < MAX_BAD_LINES_KEPT {
                    summary.bad_lines.push(BadLine { line: n, message });
                }
            }
        }
        if let (true, Some(identity)) = (record, identity)
            && let Ok(mut s) = self.scan.lock()
        {
            *s = Some(Scan {
                identity,
                summary,
                skipped_lines: Arc::new(skipped_lines),
            });
        }
        Ok(())
    }

    /// What the first complete pass over the devices found (`None` before one).
    pub fn scan_summary(&self) -> Option<ScanSummary> {
        self.scan
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.summary.clone()))
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
}

/// A device line with its Defender and analytics blocks kept as raw JSON, parsed only when a
/// pass asks for them. It mirrors [`Device`] field for field (a test checks they agree).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
        // The same lines are invalid either way.
        for bad in [r#"{"resource_id":1}"#, &line.replace("\"sku\"", "\"skew\"")] {
            assert!(serde_json::from_str::<Device>(bad).is_err());
            assert!(serde_json::from_str::<LeanDevice>(bad).is_err(), "{bad}");
        }
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

//! # cloudattach-sitegen
//!
//! Sample site generation (`cloudattach site generate`, and the built-in demo).
//!
//! [`generate_site`] writes a realistic sample site in the inventory format (docs/domain.md, "Site inventory"):
//! `site.toml`, `devices.jsonl` and `collections.json`. The output depends only on the
//! [`GenerateOptions`]: the same options give byte-identical files (every random choice comes
//! from one `ChaCha8Rng` seeded with [`GenerateOptions::seed`], and every timestamp is relative
//! to the fixed [`REFERENCE_TIME`], never to the clock).
//!
//! What a site contains, roughly (per 1,000 devices):
//! - 880 Windows 10/11 workstations (Windows 10 1607/1703 below the co-management minimum,
//!   1809, 1909, 21H2, 22H2; Windows 11 22H2, 23H2, 24H2; a third with a 4-part build such as
//!   "10.0.19045.3693"), 10 Windows 7/8.1 stragglers, 65 servers (2012 R2 to 2025), 30 Macs,
//!   15 Linux machines;
//! - about 5% without a client, the rest on client versions from 1606 to the site's own version
//!   (60% on the current one; a client is never newer than its site); about 8% co-managed;
//! - every join type (mostly hybrid);
//! - Defender state on most Windows devices with a client: mostly healthy, about 14% unhealthy
//!   (real-time protection off, signatures out of date, scans overdue, reboot required, ...),
//!   about 4.5% with detections (some still active);
//! - Endpoint analytics telemetry on Windows 10/11 devices whose client collects it (5.00.8968+),
//!   with app usage and daily crashes from 5.00.9012.
//!
//! Memory stays flat however many devices are asked for: devices are generated and written one
//! at a time; only collection memberships (4 bytes per member) are kept until the end.

use cloudattach_sdk::{
    Analytics, AppUsage, ConnectionPoint, DefenderState, Detection, Device, JoinType, SiteInfo,
    SiteVersion,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde::ser::{SerializeSeq, Serializer};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The resource id of the first generated device; the others follow in ascending order.
pub const FIRST_RESOURCE_ID: i64 = 16_777_220;

/// The fixed "now" of a generated site: `last_active`, scan, update and detection times lie in
/// the 30 days before it. (Mid-October 2024 matches the software versions generated: Windows 11
/// 24H2, Defender platform 4.18.24090.)
pub const REFERENCE_TIME: &str = "2024-10-15T12:00:00Z";
const REFERENCE_UNIX: i64 = 1_728_993_600;

/// The seed [`GenerateOptions::default`] uses.
pub const DEFAULT_SEED: u64 = 42;

/// The name written to `site.toml`.
pub const SITE_NAME: &str = "Contoso Primary Site";

/// The Active Directory domain of domain-joined and hybrid-joined devices.
pub const AD_DOMAIN: &str = "corp.contoso.com";

/// The most devices one site can hold (collection memberships are kept as 32-bit offsets).
pub const MAX_DEVICES: u64 = u32::MAX as u64;

/// The files a site directory consists of.
pub const SITE_FILES: [&str; 3] = ["site.toml", "devices.jsonl", "collections.json"];

const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateOptions {
    /// The number of devices.
    pub devices: u64,
    /// The seed of the random generator: the same seed gives the same site.
    pub seed: u64,
    /// The site code, 3 upper-case letters or digits (default "PS1").
    pub site_code: String,
    /// The Configuration Manager version of the site (default 2303). No client is newer.
    pub site_version: SiteVersion,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            devices: 1_000,
            seed: DEFAULT_SEED,
            site_code: "PS1".to_string(),
            site_version: SiteVersion(2303),
        }
    }
}

/// What [`generate_site`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GenerateSummary {
    /// Devices written to `devices.jsonl`.
    pub devices: u64,
    /// Devices with a client (`client = true`).
    pub clients: u64,
    /// Collections written to `collections.json`.
    pub collections: usize,
    /// Bytes written, all three files together.
    pub bytes_written: u64,
}

/// Why a site could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The site code is not 3 upper-case letters or digits.
    #[error(
        "invalid site code {code:?}: a site code is 3 upper-case letters or digits, e.g. \"PS1\" \
         (\"SMS\" is reserved)"
    )]
    InvalidSiteCode {
        /// The code given.
        code: String,
    },
    /// More devices than the generator supports.
    #[error("cannot generate {devices} devices: a site holds at most {MAX_DEVICES}")]
    TooManyDevices {
        /// The number asked for.
        devices: u64,
    },
    /// The output directory already holds a site and overwriting was not asked for.
    #[error(
        "{} already contains {files}; nothing was written. Choose an empty or new output \
         directory, or pass --overwrite to replace the existing site",
        dir.display()
    )]
    WouldOverwrite {
        /// The output directory.
        dir: PathBuf,
        /// The site files found there, comma separated.
        files: String,
    },
    /// The output path exists but is not a directory.
    #[error("{} exists and is not a directory; the output must be a directory (it is created if missing)", path.display())]
    NotADirectory {
        /// The output path.
        path: PathBuf,
    },
    /// The output directory could not be created.
    #[error("cannot create the output directory {}: {error}; check the path and its permissions", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A file could not be written.
    #[error(
        "cannot write {}: {error}; check free disk space and permissions (no site file was replaced)",
        path.display()
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// A finished file could not be moved into place.
    #[error("cannot rename {} to {}: {error}; check the directory's permissions", from.display(), to.display())]
    Rename {
        /// The temporary file.
        from: PathBuf,
        /// The site file.
        to: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
}

/// Writes `site.toml`, `devices.jsonl` and `collections.json` into `out` (created if missing).
///
/// Refuses with [`GenerateError::WouldOverwrite`] if `out` already contains one of the site
/// files, unless `overwrite` is true. Writes to temporary files in `out` and renames them at the
/// end, so a failed run leaves no half-written site file behind (and the temporary files are
/// removed).
pub fn generate_site(
    opts: &GenerateOptions,
    out: &Path,
    overwrite: bool,
) -> Result<GenerateSummary, GenerateError> {
    validate_site_code(&opts.site_code)?;
    if opts.devices > MAX_DEVICES {
        return Err(GenerateError::TooManyDevices {
            devices: opts.devices,
        });
    }
    prepare_dir(out)?;
    if !overwrite {
        refuse_existing(out)?;
    }

    let mut staged = Staged::new(out);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let hierarchy_id = random_uuid(&mut rng);
    let mut generator = Generator::new(opts, rng);
    let mut collections = Memberships::default();

    // devices.jsonl, streamed: one device in memory at a time.
    let mut clients = 0u64;
    let devices_bytes = staged.write("devices.jsonl", |w| {
        for index in 0..opts.devices {
            let (device, traits) = generator.device(index);
            clients += u64::from(device.client);
            collections.observe(index as u32, &device, &traits);
            serde_json::to_writer(&mut *w, &device)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })?;

    let collections_bytes = staged.write("collections.json", |w| {
        collections.write_json(&opts.site_code, w)
    })?;

    let site = SiteInfo::new(
        opts.site_code.clone(),
        SITE_NAME,
        opts.site_version,
        hierarchy_id,
    )
    .with_service_connection_point(ConnectionPoint::Online)
    .with_administration_service(true)
    .with_user_discovery(true, true);
    let site_bytes = staged.write("site.toml", |w| {
        let body = toml::to_string(&site).map_err(io::Error::other)?;
        writeln!(
            w,
            "# A sample site written by `cloudattach site generate` ({} devices, seed {}).",
            opts.devices, opts.seed
        )?;
        w.write_all(body.as_bytes())
    })?;

    if !overwrite {
        // Someone may have written a site there while we were generating.
        refuse_existing(out)?;
    }
    staged.commit()?;

    Ok(GenerateSummary {
        devices: opts.devices,
        clients,
        collections: COLLECTIONS.len(),
        bytes_written: devices_bytes + collections_bytes + site_bytes,
    })
}

fn validate_site_code(code: &str) -> Result<(), GenerateError> {
    let ok = code.len() == 3
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && code != "SMS";
    if ok {
        Ok(())
    } else {
        Err(GenerateError::InvalidSiteCode {
            code: code.to_string(),
        })
    }
}

fn prepare_dir(out: &Path) -> Result<(), GenerateError> {
    match fs::metadata(out) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(GenerateError::NotADirectory {
            path: out.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(out).map_err(|error| GenerateError::CreateDir {
                path: out.to_path_buf(),
                error,
            })
        }
        Err(error) => Err(GenerateError::CreateDir {
            path: out.to_path_buf(),
            error,
        }),
    }
}

fn refuse_existing(out: &Path) -> Result<(), GenerateError> {
    let found: Vec<&str> = SITE_FILES
        .iter()
        .copied()
        .filter(|f| fs::symlink_metadata(out.join(f)).is_ok())
        .collect();
    if found.is_empty() {
        Ok(())
    } else {
        Err(GenerateError::WouldOverwrite {
            dir: out.to_path_buf(),
            files: found.join(", "),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Staged writing: temporary files in the output directory, renamed into place at the end.

/// Counts the bytes that reach the file.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

type Out = BufWriter<Counting<File>>;

struct Staged {
    dir: PathBuf,
    /// (temporary file, site file name), in the order they were written.
    files: Vec<(PathBuf, &'static str)>,
}

impl Staged {
    fn new(dir: &Path) -> Staged {
        Staged {
            dir: dir.to_path_buf(),
            files: Vec::new(),
        }
    }

    /// Writes a temporary file for the site file `name`; returns the bytes written.
    fn write(
        &mut self,
        name: &'static str,
        body: impl FnOnce(&mut Out) -> io::Result<()>,
    ) -> Result<u64, GenerateError> {
        // Unique per process and per run, so concurrent runs never share a temporary file.
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let run = RUNS.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{name}.{}-{run}.tmp", std::process::id()));
        let fail = |error: io::Error| GenerateError::Write {
            path: tmp.clone(),
            error,
        };
        let file = File::create(&tmp).map_err(fail)?;
        self.files.push((tmp.clone(), name));
        let mut w = BufWriter::with_capacity(
            256 * 1024,
            Counting {
                inner: file,
                written: 0,
            },
        );
        body(&mut w).map_err(fail)?;
        let counting = w.into_inner().map_err(|e| fail(e.into_error()))?;
        Ok(counting.written)
    }

    /// Renames every temporary file into place, `site.toml` last.
    fn commit(mut self) -> Result<(), GenerateError> {
        self.files.sort_by_key(|(_, name)| *name == "site.toml");
        self.files.reverse();
        // Popped one at a time, so that on an error `drop` removes the files not yet renamed.
        while let Some((tmp, name)) = self.files.pop() {
            let to = self.dir.join(name);
            if let Err(error) = fs::rename(&tmp, &to) {
                let _ = fs::remove_file(&tmp);
                return Err(GenerateError::Rename {
                    from: tmp,
                    to,
                    error,
                });
            }
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = fs::remove_file(tmp);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// A weighted choice.
fn pick<'a, T>(rng: &mut ChaCha8Rng, table: &'a [(u32, T)]) -> &'a T {
    let total: u32 = table.iter().map(|(w, _)| w).sum();
    let mut x = rng.random_range(0..total);
    for (w, v) in table {
        if x < *w {
            return v;
        }
        x -= w;
    }
    &table[table.len() - 1].1
}

/// True with a probability of `per_mille` / 1000.
fn chance(rng: &mut ChaCha8Rng, per_mille: u32) -> bool {
    rng.random_range(0..1000u32) < per_mille
}

fn random_uuid(rng: &mut ChaCha8Rng) -> String {
    let mut bytes = [0u8; 16];
    rng.fill_bytes(&mut bytes);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `secs` seconds before [`REFERENCE_TIME`], as RFC 3339 in UTC.
fn ago(secs: i64) -> String {
    rfc3339(REFERENCE_UNIX - secs)
}

/// A Unix time as RFC 3339 in UTC ("2024-10-15T12:00:00Z").
fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / HOUR,
        secs % HOUR / 60,
        secs % 60
    )
}

const SERIAL_CHARS: &[u8] = b"0123456789BCDFGHJKLMNPQRSTVWXYZ";
const DIGITS: &[u8] = b"0123456789";

fn push_random(rng: &mut ChaCha8Rng, s: &mut String, charset: &[u8], n: usize) {
    for _ in 0..n {
        s.push(charset[rng.random_range(0..charset.len())] as char);
    }
}

// ---------------------------------------------------------------------------------------------
// The catalogue: what real sites are made of.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    Windows,
    LegacyWindows,
    Server,
    Mac,
    Linux,
}

const PLATFORMS: &[(u32, Platform)] = &[
    (880, Platform::Windows),
    (10, Platform::LegacyWindows),
    (65, Platform::Server),
    (30, Platform::Mac),
    (15, Platform::Linux),
];

/// Form factor of a device; decides its name prefix and collection memberships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Laptop,
    Desktop,
    Virtual,
    Server,
}

#[derive(Debug, Clone, Copy)]
enum SerialKind {
    Dell,
    Hp,
    HpDesktop,
    Hpe,
    Lenovo,
    Surface,
    VMware,
    HyperV,
    Apple,
}

#[derive(Debug, Clone, Copy)]
struct Hardware {
    manufacturer: &'static str,
    model: &'static str,
    form: Form,
    serial: SerialKind,
}

const fn hw(
    manufacturer: &'static str,
    model: &'static str,
    form: Form,
    serial: SerialKind,
) -> Hardware {
    Hardware {
        manufacturer,
        model,
        form,
        serial,
    }
}

use SerialKind as S;

#[rustfmt::skip]
const WORKSTATION_HARDWARE: &[(u32, Hardware)] = &[
    (14, hw("Dell Inc.", "Latitude 7440", Form::Laptop, S::Dell)),
    (9, hw("Dell Inc.", "Latitude 5540", Form::Laptop, S::Dell)),
    (12, hw("HP", "HP EliteBook 840 G10", Form::Laptop, S::Hp)),
    (5, hw("HP", "HP ProBook 450 G9", Form::Laptop, S::Hp)),
    (10, hw("LENOVO", "ThinkPad T14 Gen 4", Form::Laptop, S::Lenovo)),
    (5, hw("LENOVO", "ThinkPad X1 Carbon Gen 11", Form::Laptop, S::Lenovo)),
    (7, hw("Microsoft Corporation", "Surface Laptop 5", Form::Laptop, S::Surface)),
    (3, hw("Microsoft Corporation", "Surface Pro 9", Form::Laptop, S::Surface)),
    (11, hw("Dell Inc.", "OptiPlex 7010", Form::Desktop, S::Dell)),
    (8, hw("HP", "HP EliteDesk 800 G6 Small Form Factor PC", Form::Desktop, S::HpDesktop)),
    (6, hw("LENOVO", "ThinkCentre M70q Gen 3", Form::Desktop, S::Lenovo)),
    (2, hw("HP", "HP Z2 Tower G9 Workstation Desktop PC", Form::Desktop, S::HpDesktop)),
    (2, hw("VMware, Inc.", "VMware Virtual Platform", Form::Virtual, S::VMware)),
    (2, hw("Microsoft Corporation", "Virtual Machine", Form::Virtual, S::HyperV)),
];

#[rustfmt::skip]
const SERVER_HARDWARE: &[(u32, Hardware)] = &[
    (30, hw("Dell Inc.", "PowerEdge R750", Form::Server, S::Dell)),
    (20, hw("HPE", "ProLiant DL380 Gen10", Form::Server, S::Hpe)),
    (30, hw("VMware, Inc.", "VMware Virtual Platform", Form::Virtual, S::VMware)),
    (20, hw("Microsoft Corporation", "Virtual Machine", Form::Virtual, S::HyperV)),
];

#[rustfmt::skip]
const MAC_HARDWARE: &[(u32, Hardware)] = &[
    (5, hw("Apple Inc.", "MacBook Pro (14-inch, 2023)", Form::Laptop, S::Apple)),
    (4, hw("Apple Inc.", "MacBook Air (13-inch, M2, 2022)", Form::Laptop, S::Apple)),
    (1, hw("Apple Inc.", "iMac (24-inch, 2023)", Form::Desktop, S::Apple)),
];

#[rustfmt::skip]
const LINUX_HARDWARE: &[(u32, Hardware)] = &[
    (5, hw("Dell Inc.", "Precision 5570", Form::Laptop, S::Dell)),
    (3, hw("LENOVO", "ThinkStation P360 Tower", Form::Desktop, S::Lenovo)),
    (2, hw("VMware, Inc.", "VMware Virtual Platform", Form::Virtual, S::VMware)),
];

const WORKSTATION_OS: &str = "Microsoft Windows NT Workstation 10.0";
const SERVER_OS: &str = "Microsoft Windows NT Server 10.0";

/// Windows 10/11 builds with the update build revisions (UBR) devices report.
const WINDOWS_BUILDS: &[(u32, (u32, &[u32]))] = &[
    (8, (14393, &[6351, 7259, 7428])),         // 1607 (LTSB 2016)
    (6, (15063, &[2614, 2679])),               // 1703
    (25, (17763, &[5936, 6293, 6414])),        // 1809 (LTSC 2019)
    (8, (18363, &[2212, 2274])),               // 1909
    (100, (19044, &[4291, 4894, 5011])),       // 21H2 (LTSC 2021)
    (330, (19045, &[3693, 4291, 4894, 5011])), // 22H2
    (90, (22621, &[3880, 4249, 4317])),        // 11 22H2
    (230, (22631, &[4169, 4249, 4317])),       // 11 23H2
    (110, (26100, &[1742, 2033])),             // 11 24H2
];

const LEGACY_WINDOWS: &[(u32, (&str, &str))] = &[
    (6, ("Microsoft Windows NT Workstation 6.1", "6.1.7601")),
    (4, ("Microsoft Windows NT Workstation 6.3", "6.3.9600")),
];

/// (DeviceOS caption, build number, update build revisions).
type ServerBuild = (&'static str, u32, &'static [u32]);

const SERVER_BUILDS: &[(u32, ServerBuild)] = &[
    (6, ("Microsoft Windows NT Server 6.3", 9600, &[])), // 2012 R2
    (20, (SERVER_OS, 14393, &[6351, 7428])),             // 2016
    (45, (SERVER_OS, 17763, &[5936, 6414])),             // 2019
    (30, (SERVER_OS, 20348, &[2527, 2762])),             // 2022
    (4, (SERVER_OS, 26100, &[1742, 2033])),              // 2025
];

const MAC_OS: &[(u32, (&str, &str))] = &[
    (3, ("Mac OS X 13.6", "13.6")),
    (6, ("Mac OS X 14.4", "14.4")),
    (2, ("Mac OS X 15.0", "15.0")),
];

const LINUX_OS: &[(u32, (&str, &str))] = &[(6, ("Linux", "5.15.0")), (4, ("Linux", "4.18.0"))];

/// Configuration Manager client versions by the release (`YYMM`) that shipped them.
const CLIENT_RELEASES: &[(u32, &str)] = &[
    (1606, "5.00.8412"),
    (1610, "5.00.8458"),
    (1702, "5.00.8498"),
    (1706, "5.00.8540"),
    (1710, "5.00.8577"),
    (1802, "5.00.8634"),
    (1806, "5.00.8692"),
    (1810, "5.00.8740"),
    (1902, "5.00.8790"),
    (1906, "5.00.8853"),
    (1910, "5.00.8913"),
    (2002, "5.00.8968"),
    (2006, "5.00.9012"),
    (2010, "5.00.9040"),
    (2103, "5.00.9049"),
    (2107, "5.00.9058"),
    (2111, "5.00.9068"),
    (2203, "5.00.9078"),
    (2207, "5.00.9088"),
    (2211, "5.00.9096"),
    (2303, "5.00.9106"),
    (2309, "5.00.9122"),
    (2403, "5.00.9128"),
    (2409, "5.00.9132"),
    (2503, "5.00.9135"),
];

/// The releases of the client versions that gate features (`version::client` in the SDK).
const CO_MANAGEMENT_RELEASE: u32 = 1710;
const ENDPOINT_ANALYTICS_RELEASE: u32 = 2002;
const APP_RELIABILITY_RELEASE: u32 = 2006;

/// Client version weights (per mille of clients) by eligibility band; the site's own version
/// gets 600.
fn client_band_weight(release: u32) -> u32 {
    match release {
        ..1710 => 25,     // below co-management's 5.00.8577
        1710..2002 => 70, // below Endpoint analytics' 5.00.8968
        2002..2006 => 40, // below app reliability's 5.00.9012
        _ => 265,         // older than the site, but recent
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dept {
    Finance,
    Engineering,
    Sales,
    Hr,
    Marketing,
    It,
    Operations,
    Legal,
    Support,
    Research,
}

const DEPARTMENTS: &[(u32, Dept)] = &[
    (8, Dept::Finance),
    (18, Dept::Engineering),
    (14, Dept::Sales),
    (4, Dept::Hr),
    (7, Dept::Marketing),
    (6, Dept::It),
    (15, Dept::Operations),
    (3, Dept::Legal),
    (12, Dept::Support),
    (8, Dept::Research),
];

/// Defender platform/engine builds (4.18.X and 1.1.X).
const DEFENDER_BUILDS: &[(u32, &str)] = &[(70, "24090.11"), (25, "24080.9"), (5, "24070.5")];

#[derive(Debug, Clone, Copy)]
enum DefenderIssue {
    RealtimeOff,
    SignaturesOutOfDate,
    QuickScanOverdue,
    FullScanOverdue,
    RebootRequired,
    FullScanRequired,
    DefenderDisabled,
    PlatformOutOfDate,
}

const DEFENDER_ISSUES: &[(u32, DefenderIssue)] = &[
    (22, DefenderIssue::RealtimeOff),
    (25, DefenderIssue::SignaturesOutOfDate),
    (20, DefenderIssue::QuickScanOverdue),
    (10, DefenderIssue::FullScanOverdue),
    (12, DefenderIssue::RebootRequired),
    (6, DefenderIssue::FullScanRequired),
    (5, DefenderIssue::DefenderDisabled),
    (7, DefenderIssue::PlatformOutOfDate),
];

/// Intune's `windowsDefenderProductStatus` flags.
mod product_status {
    pub const SERVICE_NOT_RUNNING: u32 = 1;
    pub const PENDING_FULL_SCAN_DUE_TO_THREAT_ACTION: u32 = 4;
    pub const PENDING_REBOOT_DUE_TO_THREAT_ACTION: u32 = 8;
    pub const PENDING_MANUAL_STEPS_DUE_TO_THREAT_ACTION: u32 = 16;
    pub const AV_SIGNATURES_OUT_OF_DATE: u32 = 32;
    pub const AS_SIGNATURES_OUT_OF_DATE: u32 = 64;
    pub const NO_QUICK_SCAN_FOR_SPECIFIED_PERIOD: u32 = 128;
    pub const NO_FULL_SCAN_FOR_SPECIFIED_PERIOD: u32 = 256;
    pub const PLATFORM_OUT_OF_DATE: u32 = 1_048_576;
}

/// ComputerState flags.
mod computer_state {
    pub const PENDING_FULL_SCAN: u32 = 1;
    pub const PENDING_REBOOT: u32 = 2;
    pub const PENDING_MANUAL_STEPS: u32 = 4;
}

/// A malware family Defender reports.
#[derive(Debug, Clone, Copy)]
struct Threat {
    id: i64,
    name: &'static str,
    category: &'static str,
    severity: &'static str,
}

const fn threat(
    id: i64,
    name: &'static str,
    category: &'static str,
    severity: &'static str,
) -> Threat {
    Threat {
        id,
        name,
        category,
        severity,
    }
}

#[rustfmt::skip]
const THREATS: &[(u32, Threat)] = &[
    (14, threat(2_147_519_003, "Virus:DOS/EICAR_Test_File", "Virus", "severe")),
    (16, threat(2_147_722_906, "PUA:Win32/Presenoker", "PotentiallyUnwantedSoftware", "low")),
    (10, threat(2_147_755_390, "PUADlManager:Win32/OfferCore", "PotentiallyUnwantedSoftware", "low")),
    (6, threat(2_147_734_094, "PUA:Win32/CoinMiner", "PotentiallyUnwantedSoftware", "low")),
    (10, threat(2_147_735_503, "Trojan:Win32/Wacatac.B!ml", "Trojan", "severe")),
    (6, threat(2_147_780_199, "Trojan:Script/Wacatac.H!ml", "Trojan", "severe")),
    (8, threat(2_147_685_180, "HackTool:Win32/AutoKMS", "Tool", "high")),
    (2, threat(2_147_729_891, "HackTool:Win32/Mimikatz.D", "Tool", "high")),
    (3, threat(2_147_726_914, "Backdoor:Win32/Bladabindi!ml", "Backdoor", "severe")),
    (1, threat(2_147_720_175, "Ransom:Win32/WannaCrypt.H", "Ransom", "severe")),
    (2, threat(2_147_597_781, "Worm:Win32/Conficker.B", "Worm", "severe")),
    (4, threat(2_147_726_426, "TrojanDownloader:O97M/Donoff.SS", "TrojanDownloader", "severe")),
    (3, threat(2_147_727_394, "Exploit:O97M/CVE-2017-11882.RV", "Exploit", "severe")),
    (5, threat(2_147_700_342, "Adware:Win32/Hotbar", "Adware", "moderate")),
];

const DETECTION_STATUSES: &[(u32, &str)] = &[
    (40, "quarantined"),
    (25, "removed"),
    (12, "cleaned"),
    (15, "active"),
    (8, "allowed"),
];

struct AppSpec {
    name: &'static str,
    /// Per mille of devices that use it.
    adoption: u32,
    /// Usage minutes over 14 days.
    minutes: (u32, u32),
    /// Crashes per 10,000 device-days.
    crash_rate: u32,
}

const fn app(name: &'static str, adoption: u32, minutes: (u32, u32), crash_rate: u32) -> AppSpec {
    AppSpec {
        name,
        adoption,
        minutes,
        crash_rate,
    }
}

const APPS: &[AppSpec] = &[
    app("Microsoft Teams", 950, (900, 4800), 150),
    app("Microsoft Outlook", 920, (600, 4200), 100),
    app("Microsoft Edge", 850, (300, 3600), 40),
    app("Google Chrome", 550, (300, 3800), 60),
    app("Microsoft Word", 750, (60, 1500), 40),
    app("Microsoft Excel", 700, (60, 2400), 50),
    app("Microsoft PowerPoint", 400, (30, 900), 30),
    app("Adobe Acrobat", 450, (20, 600), 50),
    app("Zoom Workplace", 150, (60, 900), 80),
    app("Visual Studio Code", 50, (300, 4000), 30),
    app("Slack", 100, (400, 3000), 50),
    app("SAP Logon", 30, (100, 2000), 60),
];

// ---------------------------------------------------------------------------------------------
// The device generator.

/// What the generator knows about a device beyond its record (for collection memberships).
#[derive(Debug, Clone, Copy)]
struct Traits {
    /// Windows 10/11 workstation ([`Device::is_windows_client_os`]).
    windows: bool,
    /// A server OS ([`Device::is_server`]).
    server: bool,
    /// The release (YYMM) of the client, 0 without one.
    release: u32,
    /// Form factor, as the client's hardware inventory reports it.
    form: Option<Form>,
    dept: Option<Dept>,
    pilot: bool,
}

struct Generator {
    rng: ChaCha8Rng,
    prefix: String,
    /// (weight, (release, client version without its last part)).
    client_versions: Vec<(u32, (u32, &'static str))>,
    users: u64,
}

impl Generator {
    fn new(opts: &GenerateOptions, rng: ChaCha8Rng) -> Generator {
        let site = opts.site_version.0;
        let available: Vec<(u32, &'static str)> = CLIENT_RELEASES
            .iter()
            .copied()
            .filter(|(release, _)| *release <= site)
            .collect();
        let client_versions = if available.is_empty() {
            vec![(1, CLIENT_RELEASES[0])]
        } else {
            let current = available.len() - 1;
            let band_size = |band: u32| {
                available[..current]
                    .iter()
                    .filter(|(r, _)| client_band_weight(*r) == band)
                    .count() as u32
            };
            available
                .iter()
                .enumerate()
                .map(|(i, (release, version))| {
                    let weight = if i == current {
                        6_000
                    } else {
                        let band = client_band_weight(*release);
                        (band * 10 / band_size(band).max(1)).max(1)
                    };
                    (weight, (*release, *version))
                })
                .collect()
        };
        Generator {
            rng,
            prefix: format!("{}-", opts.site_code),
            client_versions,
            users: (opts.devices * 9 / 10).max(1),
        }
    }

    fn device(&mut self, index: u64) -> (Device, Traits) {
        let platform = *pick(&mut self.rng, PLATFORMS);
        let rng = &mut self.rng;

        // Operating system.
        // The Windows 10/11 build number; 0 on other systems.
        let mut windows_build_number = 0;
        let (os, os_build): (&str, String) = match platform {
            Platform::Windows => {
                let (build, ubrs) = *pick(rng, WINDOWS_BUILDS);
                windows_build_number = build;
                (WORKSTATION_OS, windows_build(rng, build, ubrs, 350))
            }
            Platform::LegacyWindows => {
                let (os, build) = *pick(rng, LEGACY_WINDOWS);
                (os, build.to_string())
            }
            Platform::Server => {
                let (os, build, ubrs) = *pick(rng, SERVER_BUILDS);
                let build = if build == 9600 {
                    "6.3.9600".to_string()
                } else {
                    windows_build(rng, build, ubrs, 300)
                };
                (os, build)
            }
            Platform::Mac => {
                let (os, build) = *pick(rng, MAC_OS);
                (os, build.to_string())
            }
            Platform::Linux => {
                let (os, build) = *pick(rng, LINUX_OS);
                (os, build.to_string())
            }
        };

        // Client.
        let client_per_mille = match platform {
            Platform::Windows => 975,
            Platform::LegacyWindows => 850,
            Platform::Server => 950,
            Platform::Mac => 500,
            Platform::Linux => 500,
        };
        let client = chance(rng, client_per_mille);
        // The release (YYMM) of the client, 0 without one.
        let mut release = 0;
        let client_version = client.then(|| {
            let (r, base) = *pick(rng, &self.client_versions);
            release = r;
            let revision = if chance(rng, 850) {
                1000
            } else {
                1000 + rng.random_range(1..=40)
            };
            format!("{base}.{revision}")
        });
        let client_active = client && chance(rng, 920);

        // Join type.
        let join_type = *match platform {
            Platform::Windows => pick(
                rng,
                &[
                    (620, JoinType::Hybrid),
                    (180, JoinType::Entra),
                    (120, JoinType::Domain),
                    (30, JoinType::Workgroup),
                    (50, JoinType::Registered),
                ],
            ),
            Platform::LegacyWindows => {
                pick(rng, &[(80, JoinType::Domain), (20, JoinType::Workgroup)])
            }
            Platform::Server => pick(
                rng,
                &[
                    (88, JoinType::Domain),
                    (10, JoinType::Workgroup),
                    (2, JoinType::Hybrid),
                ],
            ),
            Platform::Mac => pick(
                rng,
                &[(60, JoinType::Registered), (40, JoinType::Workgroup)],
            ),
            Platform::Linux => pick(rng, &[(70, JoinType::Workgroup), (30, JoinType::Domain)]),
        };

        let mut device = Device::new(FIRST_RESOURCE_ID + index as i64, String::new());
        device.client = client;
        device.client_version = client_version;
        device.client_active = client_active;
        device.os = os.to_string();
        device.os_build = os_build;
        device.join_type = join_type;

        // Co-management: about 1 in 8 devices that qualify is already co-managed; devices
        // without a client may be Intune-only.
        let qualifies = client
            && matches!(join_type, JoinType::Hybrid | JoinType::Entra)
            && windows_build_number >= 16299
            && release >= CO_MANAGEMENT_RELEASE;
        device.mdm_enrolled = if qualifies {
            chance(rng, 125)
        } else if !client {
            match join_type {
                JoinType::Entra => chance(rng, 700),
                JoinType::Registered => chance(rng, 300),
                _ => false,
            }
        } else {
            false
        };

        if matches!(
            join_type,
            JoinType::Hybrid | JoinType::Entra | JoinType::Registered
        ) {
            device.entra_device_id = Some(random_uuid(rng));
        }
        device.domain = match join_type {
            JoinType::Hybrid | JoinType::Domain => Some(AD_DOMAIN.to_string()),
            JoinType::Workgroup => Some("WORKGROUP".to_string()),
            JoinType::Entra | JoinType::Registered => None,
        };

        // Hardware inventory comes from the client; discovery alone knows none of it.
        let hardware = *match platform {
            Platform::Windows | Platform::LegacyWindows => pick(rng, WORKSTATION_HARDWARE),
            Platform::Server => pick(rng, SERVER_HARDWARE),
            Platform::Mac => pick(rng, MAC_HARDWARE),
            Platform::Linux => pick(rng, LINUX_HARDWARE),
        };
        let kind = match platform {
            Platform::Server => "SRV",
            Platform::Mac => "MAC",
            Platform::Linux => "LNX",
            _ => match hardware.form {
                Form::Laptop => "LT",
                Form::Desktop => "DT",
                Form::Virtual => "VM",
                Form::Server => "SRV",
            },
        };
        let _ = write!(device.name, "{}{kind}-{:06}", self.prefix, index + 1);

        let dept = (platform != Platform::Server).then(|| *pick(rng, DEPARTMENTS));
        if client {
            device.manufacturer = Some(hardware.manufacturer.to_string());
            device.model = Some(hardware.model.to_string());
            device.serial_number = Some(serial_number(rng, hardware.serial));
            device.sku = match platform {
                Platform::Windows | Platform::LegacyWindows => Some(
                    pick(
                        rng,
                        &[(75, "Enterprise"), (5, "Education"), (20, "Professional")],
                    )
                    .to_string(),
                ),
                Platform::Server => {
                    Some(pick(rng, &[(40, "Standard"), (60, "Datacenter")]).to_string())
                }
                Platform::Mac | Platform::Linux => None,
            };
            let with_user = match platform {
                Platform::Server => false,
                Platform::Linux => chance(rng, 500),
                _ => chance(rng, 880),
            };
            if with_user {
                let user = rng.random_range(1..=self.users);
                device.primary_user = Some(format!("user{user}@contoso.example"));
            }
        }

        let seen = if client_active {
            rng.random_range(0..10 * DAY)
        } else if client {
            rng.random_range(14 * DAY..30 * DAY)
        } else {
            rng.random_range(0..30 * DAY)
        };
        device.last_active = Some(ago(seen));

        let windows = platform == Platform::Windows;
        let windows_10_or_server = windows || (platform == Platform::Server && os == SERVER_OS);
        if client && windows_10_or_server && chance(rng, 920) {
            device.defender = Some(defender(rng, hardware.form == Form::Virtual));
        }

        if windows && release >= ENDPOINT_ANALYTICS_RELEASE && chance(rng, 900) {
            let apps = release >= APP_RELIABILITY_RELEASE;
            device.analytics = Some(analytics(rng, hardware.form, join_type, dept, apps));
        }

        let pilot = windows
            && client
            && matches!(join_type, JoinType::Hybrid | JoinType::Entra)
            && chance(rng, 15);

        let form = client.then_some(hardware.form);
        let server = platform == Platform::Server;
        (
            device,
            Traits {
                windows,
                server,
                release,
                form,
                dept,
                pilot,
            },
        )
    }
}

/// "10.0.{build}", with a UBR ("10.0.19045.3693") for `ubr_per_mille` of devices.
fn windows_build(rng: &mut ChaCha8Rng, build: u32, ubrs: &[u32], ubr_per_mille: u32) -> String {
    if !ubrs.is_empty() && chance(rng, ubr_per_mille) {
        format!("10.0.{build}.{}", ubrs[rng.random_range(0..ubrs.len())])
    } else {
        format!("10.0.{build}")
    }
}

fn serial_number(rng: &mut ChaCha8Rng, kind: SerialKind) -> String {
    let mut s = String::with_capacity(48);
    match kind {
        SerialKind::Dell => push_random(rng, &mut s, SERIAL_CHARS, 7),
        SerialKind::Hp | SerialKind::HpDesktop => {
            s.push_str(if matches!(kind, SerialKind::Hp) {
                "5CG"
            } else {
                "MXL"
            });
            let _ = write!(
                s,
                "{}{:02}",
                rng.random_range(1..=4),
                rng.random_range(1..=52)
            );
            push_random(rng, &mut s, SERIAL_CHARS, 3);
        }
        SerialKind::Hpe => {
            s.push_str("CZ2");
            push_random(rng, &mut s, SERIAL_CHARS, 7);
        }
        SerialKind::Lenovo => {
            s.push_str(if chance(rng, 500) { "PF" } else { "PW" });
            push_random(rng, &mut s, SERIAL_CHARS, 6);
        }
        SerialKind::Surface => push_random(rng, &mut s, DIGITS, 12),
        SerialKind::VMware => {
            s.push_str("VMware-");
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            for (i, b) in bytes.iter().enumerate() {
                let sep = match i {
                    0 => "",
                    8 => "-",
                    _ => " ",
                };
                let _ = write!(s, "{sep}{b:02x}");
            }
        }
        SerialKind::HyperV => {
            for (i, n) in [4usize, 4, 4, 4, 4, 4, 2].iter().enumerate() {
                if i > 0 {
                    s.push('-');
                }
                push_random(rng, &mut s, DIGITS, *n);
            }
        }
        SerialKind::Apple => push_random(rng, &mut s, SERIAL_CHARS, 10),
    }
    s
}

fn defender(rng: &mut ChaCha8Rng, virtual_machine: bool) -> DefenderState {
    let build = *pick(rng, DEFENDER_BUILDS);
    let updated = rng.random_range(10 * 60..30 * HOUR);
    let onboarded = chance(rng, 820);
    // Field by field, in the order the random numbers are drawn.
    let mut d = DefenderState::default();
    d.defender_enabled = true;
    d.rtp_enabled = true;
    d.nis_enabled = true;
    d.engine_version = Some(format!("1.1.{build}"));
    d.signature_version = Some(format!("1.419.{}.0", 200 - updated / (6 * HOUR)));
    d.defender_version = Some(format!("4.18.{build}"));
    d.quick_scan_time = Some(ago(rng.random_range(HOUR..7 * DAY)));
    d.full_scan_time = chance(rng, 700).then(|| ago(rng.random_range(DAY..30 * DAY)));
    d.tamper_protection_enabled = chance(rng, 930);
    d.is_mde_sense_running = onboarded;
    d.mde_onboarding_state = Some(
        if onboarded {
            "onboarded"
        } else {
            "notOnboarded"
        }
        .to_string(),
    );
    d.is_virtual_machine = virtual_machine;
    d.last_update_time = Some(ago(updated));

    if chance(rng, 130) {
        let issues = if chance(rng, 250) { 2 } else { 1 };
        for _ in 0..issues {
            match *pick(rng, DEFENDER_ISSUES) {
                DefenderIssue::RealtimeOff => d.rtp_enabled = false,
                DefenderIssue::SignaturesOutOfDate => {
                    let days = rng.random_range(8..45);
                    d.signature_out_of_date = true;
                    d.signature_version = Some(format!(
                        "1.{}.{}.0",
                        if days > 30 { 415 } else { 417 },
                        rng.random_range(10..300)
                    ));
                    d.last_update_time = Some(ago(days * DAY + rng.random_range(0..DAY)));
                    d.product_status |= product_status::AV_SIGNATURES_OUT_OF_DATE
                        | product_status::AS_SIGNATURES_OUT_OF_DATE;
                }
                DefenderIssue::QuickScanOverdue => {
                    d.quick_scan_overdue = true;
                    d.quick_scan_time = Some(ago(rng.random_range(15 * DAY..60 * DAY)));
                    d.product_status |= product_status::NO_QUICK_SCAN_FOR_SPECIFIED_PERIOD;
                }
                DefenderIssue::FullScanOverdue => {
                    d.full_scan_overdue = true;
                    d.full_scan_time =
                        chance(rng, 500).then(|| ago(rng.random_range(60 * DAY..120 * DAY)));
                    d.product_status |= product_status::NO_FULL_SCAN_FOR_SPECIFIED_PERIOD;
                }
                DefenderIssue::RebootRequired => {
                    d.reboot_required = true;
                    d.computer_state |= computer_state::PENDING_REBOOT;
                    d.product_status |= product_status::PENDING_REBOOT_DUE_TO_THREAT_ACTION;
                }
                DefenderIssue::FullScanRequired => {
                    d.full_scan_required = true;
                    d.computer_state |= computer_state::PENDING_FULL_SCAN;
                    d.product_status |= product_status::PENDING_FULL_SCAN_DUE_TO_THREAT_ACTION;
                }
                DefenderIssue::DefenderDisabled => {
                    // Another antivirus product took over.
                    d.defender_enabled = false;
                    d.rtp_enabled = false;
                    d.nis_enabled = false;
                    d.quick_scan_time = None;
                    d.full_scan_time = None;
                    d.product_status |= product_status::SERVICE_NOT_RUNNING;
                }
                DefenderIssue::PlatformOutOfDate => {
                    d.defender_version = Some("4.18.23110.3".to_string());
                    d.engine_version = Some("1.1.23110.2".to_string());
                    d.product_status |= product_status::PLATFORM_OUT_OF_DATE;
                }
            }
        }
    }

    if chance(rng, 45) {
        let n = *pick(rng, &[(75, 1), (20, 2), (5, 3)]);
        for _ in 0..n {
            let threat = *pick(rng, THREATS);
            let status = *pick(rng, DETECTION_STATUSES);
            if status == "active" {
                d.computer_state |= computer_state::PENDING_MANUAL_STEPS;
                d.product_status |= product_status::PENDING_MANUAL_STEPS_DUE_TO_THREAT_ACTION;
            }
            d.detections.push(Detection::new(
                threat.id,
                threat.name,
                threat.category,
                threat.severity,
                status,
                ago(rng.random_range(HOUR..30 * DAY)),
                *pick(rng, &[(70, 1), (20, 2), (7, 3), (3, 7)]),
            ));
        }
    }
    d
}

fn analytics(
    rng: &mut ChaCha8Rng,
    form: Form,
    join_type: JoinType,
    dept: Option<Dept>,
    with_apps: bool,
) -> Analytics {
    // Skewed towards fast: u·v has most of its mass near 0 and a tail up to 1.
    let mut skewed = |lo: f64, span: f64| -> u32 {
        let u: f64 = rng.random();
        let v: f64 = rng.random();
        (lo + u * v * span).round() as u32
    };
    let core_boot_ms = if form == Form::Virtual {
        skewed(6_000.0, 14_000.0)
    } else {
        skewed(8_000.0, 22_000.0)
    };
    let total_boot_ms = core_boot_ms + skewed(6_000.0, 40_000.0);
    // Group Policy runs at sign-in on domain-joined devices only.
    let gp_logon_ms = match join_type {
        JoinType::Hybrid | JoinType::Domain => skewed(1_500.0, 24_000.0),
        _ => 0,
    };
    let desktop_usable_ms = skewed(2_500.0, 28_000.0) + gp_logon_ms / 3;

    let mut apps = Vec::new();
    if with_apps {
        // Most devices reported all 14 days; recently enrolled ones fewer.
        let days = if chance(rng, 900) {
            14
        } else {
            rng.random_range(3..14)
        };
        let flaky = chance(rng, 40);
        for spec in APPS {
            let adoption = match (spec.name, dept) {
                ("Visual Studio Code", Some(Dept::Engineering | Dept::Research | Dept::It)) => 650,
                ("SAP Logon", Some(Dept::Finance | Dept::Operations)) => 600,
                ("Slack", Some(Dept::Engineering)) => 400,
                _ => spec.adoption,
            };
            if !chance(rng, adoption) {
                continue;
            }
            let minutes = rng.random_range(spec.minutes.0..=spec.minutes.1) * days / 14;
            let rate = spec.crash_rate * if flaky { 8 } else { 1 };
            let daily_crashes = (0..days)
                .map(|_| {
                    if rng.random_range(0..10_000) >= rate {
                        0
                    } else if chance(rng, 20) {
                        rng.random_range(11..=16) // a crash loop: more than the 10 a day counted
                    } else if chance(rng, 250) {
                        rng.random_range(2..=4)
                    } else {
                        1
                    }
                })
                .collect();
            apps.push(AppUsage::new(spec.name, minutes, daily_crashes));
        }
    }
    Analytics::new(core_boot_ms, total_boot_ms, gp_logon_ms, desktop_usable_ms).with_apps(apps)
}

// ---------------------------------------------------------------------------------------------
// Collections.

#[derive(Debug, Clone, Copy)]
enum Limit {
    None,
    AllSystems,
    Collection(u32),
}

struct CollectionDef {
    /// The number after the site code: `0x10` → "PS100010".
    number: u32,
    name: &'static str,
    includes: &'static [u32],
    limiting: Limit,
}

const ALL_WORKSTATIONS: u32 = 0x10;
const ALL_SERVERS: u32 = 0x11;
const UPLOAD: u32 = 0x12;
const FINANCE_LAPTOPS: u32 = 0x13;
const ENGINEERING_DESKTOPS: u32 = 0x14;
const SALES_LAPTOPS: u32 = 0x15;
const HR_WORKSTATIONS: u32 = 0x16;
const IT_WORKSTATIONS: u32 = 0x17;
const ALL_DEPARTMENTS: u32 = 0x18;
const VIRTUAL_MACHINES: u32 = 0x19;
const CLIENT_UPGRADE: u32 = 0x1A;
const PILOT: u32 = 0x20;

const fn coll(
    number: u32,
    name: &'static str,
    includes: &'static [u32],
    limiting: Limit,
) -> CollectionDef {
    CollectionDef {
        number,
        name,
        includes,
        limiting,
    }
}

/// The collections of a generated site. Department collections hold a few percent of the
/// devices each; only "All Windows 10/11 Workstations" holds most of them.
const COLLECTIONS: &[CollectionDef] = &[
    coll(
        ALL_WORKSTATIONS,
        "All Windows 10/11 Workstations",
        &[],
        Limit::AllSystems,
    ),
    coll(ALL_SERVERS, "All Servers", &[], Limit::AllSystems),
    coll(
        UPLOAD,
        "Tenant Attach Upload",
        &[FINANCE_LAPTOPS, ENGINEERING_DESKTOPS, SALES_LAPTOPS],
        Limit::Collection(ALL_WORKSTATIONS),
    ),
    coll(FINANCE_LAPTOPS, "Finance Laptops", &[], Limit::AllSystems),
    coll(
        ENGINEERING_DESKTOPS,
        "Engineering Desktops",
        &[],
        Limit::AllSystems,
    ),
    coll(SALES_LAPTOPS, "Sales Laptops", &[], Limit::AllSystems),
    coll(HR_WORKSTATIONS, "HR Workstations", &[], Limit::AllSystems),
    coll(
        IT_WORKSTATIONS,
        "IT Operations Workstations",
        &[],
        Limit::AllSystems,
    ),
    coll(
        ALL_DEPARTMENTS,
        "All Departments",
        &[
            FINANCE_LAPTOPS,
            ENGINEERING_DESKTOPS,
            SALES_LAPTOPS,
            HR_WORKSTATIONS,
            IT_WORKSTATIONS,
        ],
        Limit::None,
    ),
    coll(VIRTUAL_MACHINES, "Virtual Machines", &[], Limit::AllSystems),
    coll(
        CLIENT_UPGRADE,
        "Clients Older Than 2006",
        &[],
        Limit::AllSystems,
    ),
    coll(
        PILOT,
        "Co-management Pilot",
        &[IT_WORKSTATIONS],
        Limit::Collection(ALL_WORKSTATIONS),
    ),
];

/// Direct memberships, as offsets from [`FIRST_RESOURCE_ID`], per entry of [`COLLECTIONS`].
struct Memberships {
    members: Vec<Vec<u32>>,
}

impl Default for Memberships {
    fn default() -> Self {
        Memberships {
            members: vec![Vec::new(); COLLECTIONS.len()],
        }
    }
}

impl Memberships {
    fn add(&mut self, number: u32, offset: u32) {
        if let Some(i) = COLLECTIONS.iter().position(|c| c.number == number) {
            self.members[i].push(offset);
        }
    }

    fn observe(&mut self, offset: u32, device: &Device, traits: &Traits) {
        if traits.windows {
            self.add(ALL_WORKSTATIONS, offset);
        }
        if traits.server {
            self.add(ALL_SERVERS, offset);
        }
        let form = traits.form;
        match (traits.dept, form) {
            (Some(Dept::Finance), Some(Form::Laptop)) => self.add(FINANCE_LAPTOPS, offset),
            (Some(Dept::Engineering), Some(Form::Desktop)) => {
                self.add(ENGINEERING_DESKTOPS, offset)
            }
            (Some(Dept::Sales), Some(Form::Laptop)) => self.add(SALES_LAPTOPS, offset),
            (Some(Dept::Hr), Some(_)) => self.add(HR_WORKSTATIONS, offset),
            (Some(Dept::It), Some(_)) => self.add(IT_WORKSTATIONS, offset),
            _ => {}
        }
        if form == Some(Form::Virtual) {
            self.add(VIRTUAL_MACHINES, offset);
        }
        if device.client && traits.release < APP_RELIABILITY_RELEASE {
            self.add(CLIENT_UPGRADE, offset);
        }
        if traits.pilot {
            self.add(PILOT, offset);
        }
    }

    /// Writes `collections.json`: an array with one collection per line.
    fn write_json(&self, code: &str, w: &mut impl Write) -> io::Result<()> {
        let id = |number: u32| format!("{code}{number:05X}");
        w.write_all(b"[\n")?;
        for (i, (def, members)) in COLLECTIONS.iter().zip(&self.members).enumerate() {
            let out = CollectionOut {
                id: id(def.number),
                name: def.name,
                members: Members(members),
                includes: def.includes.iter().map(|n| id(*n)).collect(),
                limiting: match def.limiting {
                    Limit::None => None,
                    Limit::AllSystems => Some("SMS00001".to_string()),
                    Limit::Collection(n) => Some(id(n)),
                },
            };
            if i > 0 {
                w.write_all(b",\n")?;
            }
            serde_json::to_writer(&mut *w, &out)?;
        }
        w.write_all(b"\n]\n")
    }
}

#[derive(Serialize)]
struct CollectionOut<'a> {
    id: String,
    name: &'a str,
    members: Members<'a>,
    includes: Vec<String>,
    limiting: Option<String>,
}

struct Members<'a>(&'a [u32]);

impl Serialize for Members<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for offset in self.0 {
            seq.serialize_element(&(FIRST_RESOURCE_ID + i64::from(*offset)))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_time_matches_its_unix_time() {
        assert_eq!(rfc3339(REFERENCE_UNIX), REFERENCE_TIME);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(REFERENCE_UNIX - 30 * DAY), "2024-09-15T12:00:00Z");
    }

    #[test]
    fn client_versions_never_newer_than_the_site() {
        let opts = GenerateOptions {
            site_version: SiteVersion(2111),
            ..Default::default()
        };
        let g = Generator::new(&opts, ChaCha8Rng::seed_from_u64(1));
        assert!(
            g.client_versions
                .iter()
                .all(|(_, (r, v))| *v <= "5.00.9068" && *r <= 2111)
        );
        assert_eq!(g.client_versions.last().map(|(w, _)| *w), Some(6_000));
        let old = GenerateOptions {
            site_version: SiteVersion(1502),
            ..Default::default()
        };
        assert_eq!(
            Generator::new(&old, ChaCha8Rng::seed_from_u64(1))
                .client_versions
                .len(),
            1
        );
    }

    #[test]
    fn release_thresholds_match_the_sdk_versions() {
        use cloudattach_sdk::DottedVersion;
        use cloudattach_sdk::version::client;
        for (release, version) in CLIENT_RELEASES {
            let v = DottedVersion::parse(version).unwrap();
            assert_eq!(
                *release >= CO_MANAGEMENT_RELEASE,
                client::at_least(&v, client::CO_MANAGEMENT)
            );
            assert_eq!(
                *release >= ENDPOINT_ANALYTICS_RELEASE,
                client::at_least(&v, client::ENDPOINT_ANALYTICS)
            );
            assert_eq!(
                *release >= APP_RELIABILITY_RELEASE,
                client::at_least(&v, client::APP_RELIABILITY)
            );
        }
        assert!(CLIENT_RELEASES.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn site_codes_are_checked() {
        assert!(validate_site_code("PS1").is_ok());
        for bad in ["ps1", "PS", "PS12", "SMS", "P-1"] {
            assert!(validate_site_code(bad).is_err(), "{bad}");
        }
    }
}

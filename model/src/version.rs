//! Version numbers of the domain: site versions (`YYMM`) and dotted versions (client versions,
//! OS builds) that compare numerically part by part.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// A Configuration Manager version, `YYMM` (e.g. 2303).
///
/// ```
/// use cloudattach_model::SiteVersion;
/// let v: SiteVersion = "2207".parse().unwrap();
/// assert!(v >= SiteVersion(2111));
/// assert!("22.07".parse::<SiteVersion>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct SiteVersion(pub u32);

impl SiteVersion {
    /// The version that shipped the cloud attach wizard; `plan` and `apply` need it.
    pub const CLOUD_ATTACH_WIZARD: SiteVersion = SiteVersion(2111);
}

impl fmt::Display for SiteVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}", self.0)
    }
}

impl std::str::FromStr for SiteVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("{s:?} is not a site version: expected YYMM, e.g. \"2303\"");
        if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u32 = s.parse().map_err(|_| bad())?;
        let month = n % 100;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(SiteVersion(n))
    }
}

impl From<SiteVersion> for String {
    fn from(v: SiteVersion) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for SiteVersion {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// A dotted version such as a client version (`5.00.9106.1000`) or an OS build (`10.0.19045`).
/// Parts compare numerically one by one; a missing part counts as 0, so `10.0.16299` equals
/// `10.0.16299.0`.
///
/// ```
/// use cloudattach_model::DottedVersion;
/// let a = DottedVersion::parse("5.00.8577").unwrap();
/// let b = DottedVersion::parse("5.00.10000.1000").unwrap();
/// assert!(a < b);
/// assert_eq!(DottedVersion::parse("10.0.16299").unwrap(), DottedVersion::parse("10.0.16299.0").unwrap());
/// assert!(DottedVersion::parse("10.x").is_none());
/// ```
#[derive(Debug, Clone, Eq)]
pub struct DottedVersion {
    parts: [u32; 4],
    len: u8,
}

impl DottedVersion {
    /// Parses 1 to 4 numeric parts separated by dots; `None` for anything else.
    pub fn parse(s: &str) -> Option<DottedVersion> {
        let mut parts = [0u32; 4];
        let mut len = 0u8;
        for piece in s.trim().split('.') {
            if len == 4 || piece.is_empty() || !piece.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            parts[len as usize] = piece.parse().ok()?;
            len += 1;
        }
        Some(DottedVersion { parts, len })
    }

    /// A version from its numeric parts (at most 4 are used).
    pub fn from_parts(p: &[u32]) -> DottedVersion {
        let mut parts = [0u32; 4];
        for (slot, v) in parts.iter_mut().zip(p) {
            *slot = *v;
        }
        DottedVersion {
            parts,
            len: p.len().min(4) as u8,
        }
    }

    /// The numeric parts as written.
    pub fn parts(&self) -> &[u32] {
        &self.parts[..self.len as usize]
    }

    /// Part `i` (0-based), 0 when absent.
    pub fn part(&self, i: usize) -> u32 {
        self.parts.get(i).copied().unwrap_or(0)
    }
}

impl PartialEq for DottedVersion {
    fn eq(&self, other: &Self) -> bool {
        self.parts == other.parts
    }
}

impl Ord for DottedVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.parts.cmp(&other.parts)
    }
}

impl PartialOrd for DottedVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for DottedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.parts().iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Client versions and OS builds that gate features.
pub mod client {
    use super::DottedVersion;
    /// Configuration Manager 1710 client: the minimum for co-management.
    pub const CO_MANAGEMENT: [u32; 3] = [5, 0, 8577];
    /// Configuration Manager 2002 client: the minimum for Endpoint analytics.
    pub const ENDPOINT_ANALYTICS: [u32; 3] = [5, 0, 8968];
    /// Configuration Manager 2006 client: the minimum for app reliability data.
    pub const APP_RELIABILITY: [u32; 3] = [5, 0, 9012];
    /// Windows 10 1709: the minimum OS build for co-management.
    pub const WINDOWS_1709_BUILD: [u32; 3] = [10, 0, 16299];
    /// Windows 11's first build.
    pub const WINDOWS_11_BUILD: [u32; 3] = [10, 0, 22000];

    /// `v >= min`, where `min` is one of the constants above.
    pub fn at_least(v: &DottedVersion, min: [u32; 3]) -> bool {
        *v >= DottedVersion::from_parts(&min)
    }
}

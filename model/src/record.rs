//! What an upload carries: records, the sync mode, what a sync sent, and the parts of a device a
//! pass over the inventory needs.

use serde::{Deserialize, Serialize};

/// One record to upload: a stable key (the device's resource id for device records) and the
/// JSON the cloud stores. The cloud's rules for keys and records are in [`crate::rules`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The key; the same key on a later sync replaces the record.
    pub key: String,
    /// The record.
    pub value: serde_json::Value,
}

impl Record {
    /// A record.
    pub fn new(key: impl Into<String>, value: serde_json::Value) -> Self {
        Record {
            key: key.into(),
            value,
        }
    }
}

/// Whether a sync sends only what changed or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMode {
    /// Records added, changed or removed since the last acknowledged upload.
    Delta,
    /// Every record, and deletions of keys the site no longer has.
    Full,
}

/// What a sync sent.
///
/// `#[non_exhaustive]`: start from [`SyncStats::default`] (all zero) and set fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SyncStats {
    /// Records sent: upserts plus deletions.
    pub sent: u64,
    /// Records the cloud added or changed.
    pub upserted: u64,
    /// Records the cloud removed.
    pub deleted: u64,
    /// Records the cloud already had as sent.
    pub unchanged: u64,
    /// Records in scope after the sync.
    pub total: u64,
}

/// The optional blocks of a [`Device`](crate::Device) a pass over the inventory needs. A host
/// may leave out (as `None`, or empty extension data) the blocks not asked for, which saves
/// parsing them: the Defender and analytics blocks are most of an inventory line.
///
/// `#[non_exhaustive]` (a later device block gets a flag here): use the constants, or
/// [`DeviceParts::union`] them.
///
/// ```
/// use cloudattach_model::DeviceParts;
/// assert!(DeviceParts::ALL.defender && DeviceParts::ALL.analytics);
/// assert_eq!(DeviceParts::default(), DeviceParts::NONE);
/// let blocks = DeviceParts::DEFENDER.union(DeviceParts::ANALYTICS);
/// assert_eq!(blocks.union(DeviceParts::EXTENSION), DeviceParts::ALL);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct DeviceParts {
    /// The `defender` block.
    pub defender: bool,
    /// The `analytics` block.
    pub analytics: bool,
    /// The extension data: what the inventory line carries beyond the model
    /// ([`Device::extension`](crate::Device::extension)).
    pub extension: bool,
}

impl DeviceParts {
    /// Every block.
    pub const ALL: DeviceParts = DeviceParts {
        defender: true,
        analytics: true,
        extension: true,
    };
    /// Neither block: the inventory fields only.
    pub const NONE: DeviceParts = DeviceParts {
        defender: false,
        analytics: false,
        extension: false,
    };
    /// The Defender block only.
    pub const DEFENDER: DeviceParts = DeviceParts {
        defender: true,
        analytics: false,
        extension: false,
    };
    /// The analytics block only.
    pub const ANALYTICS: DeviceParts = DeviceParts {
        defender: false,
        analytics: true,
        extension: false,
    };
    /// The extension data only.
    pub const EXTENSION: DeviceParts = DeviceParts {
        defender: false,
        analytics: false,
        extension: true,
    };

    /// The blocks either asks for.
    pub const fn union(self, other: DeviceParts) -> DeviceParts {
        DeviceParts {
            defender: self.defender || other.defender,
            analytics: self.analytics || other.analytics,
            extension: self.extension || other.extension,
        }
    }
}

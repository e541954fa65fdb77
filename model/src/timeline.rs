//! The device timeline: the events a site keeps of each device (`Host::device_events` in the
//! SDK) and the `timeline` cloud action answers with.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a site keeps a device's events, in days.
pub const RETENTION_DAYS: u32 = 30;

/// One event of a device's timeline.
///
/// The kinds the core's host gives: `uploaded` (an upload changed the device's record on a
/// built-in channel; `detail`: `channel`, `change` — `added`, `changed` or `removed` —, `fields`,
/// the names of the record's top-level fields that changed, or `null` when the earlier state is
/// not known, and the values kept for the channel, such as co-management's `state`),
/// `first-upload` (a channel's first upload, which sent every device's record; `detail`:
/// `channel`, `records`) and `action` (a cloud action run on the device; `detail`: `id`,
/// `action`, `requested_by`, `status`, `error`, `authority`, `accepted`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TimelineEvent {
    /// When (RFC 3339, UTC).
    pub at: String,
    /// What happened (`uploaded`, `first-upload`, `action`, …).
    pub kind: String,
    /// The event's details, by kind.
    #[serde(default)]
    pub detail: Value,
}

impl TimelineEvent {
    /// An event.
    pub fn new(at: impl Into<String>, kind: impl Into<String>, detail: Value) -> Self {
        TimelineEvent {
            at: at.into(),
            kind: kind.into(),
            detail,
        }
    }
}

//! # cloudattach-model
//!
//! The data model every part of cloudattach shares: the site ([`SiteInfo`], [`CollectionInfo`])
//! and its devices ([`Device`] and its blocks), versions ([`SiteVersion`], [`DottedVersion`]),
//! environments, what an upload carries ([`Record`], [`SyncMode`], [`SyncStats`],
//! [`DeviceParts`]), a device's timeline ([`TimelineEvent`]), the cloud's rules for records,
//! keys and ids ([`rules`], [`ids`]) and the documents of its attach gateway ([`gateway`]).
//!
//! Plugin authors get all of it through `cloudattach-sdk`, which re-exports it at the same
//! paths; the cloud depends on this crate alone, so that the site reader, the plugins, the test
//! kit and the cloud apply one rule, written once.
//!
//! Plain data and pure functions: no I/O, no async runtime.

pub mod actions;
pub mod comanagement;
pub mod dev;
pub mod device;
pub mod environment;
pub mod error;
pub mod gateway;
pub mod ids;
pub mod record;
pub mod rules;
pub mod site;
pub mod timeline;
pub mod version;

pub use device::{Analytics, AppUsage, DefenderState, Detection, Device, JoinType};
pub use environment::Environment;
pub use error::HostError;
pub use gateway::Method;
pub use ids::{FeatureIdError, is_collection_id, is_valid_feature_id, validate_feature_id};
pub use record::{DeviceParts, Record, SyncMode, SyncStats};
pub use site::{ALL_SYSTEMS, CollectionInfo, ConnectionPoint, DeviceMembership, SiteInfo};
pub use timeline::TimelineEvent;
pub use version::{DottedVersion, SiteVersion};

/// The options of a feature: its `[features.<id>]` table as JSON, without `enabled`.
pub type Options = serde_json::Map<String, serde_json::Value>;

/// Formats a count with thousands separators ("4,213"), for messages.
///
/// ```
/// assert_eq!(cloudattach_model::thousands(4213), "4,213");
/// assert_eq!(cloudattach_model::thousands(999), "999");
/// ```
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text of a panic payload: the `&str` or `String` a panic carries, or a placeholder.
///
/// Not part of the model: the one copy the SDK's dynamic boundary and the core share.
#[doc(hidden)]
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_string()
    }
}

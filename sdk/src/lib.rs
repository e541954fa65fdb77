//! # cloudattach-sdk
//!
//! The only crate a cloudattach plugin author depends on. It defines the plugin contract
//! ([`Plugin`]), the services the host offers a plugin ([`Host`]), the site model ([`Device`],
//! [`SiteInfo`]) and the structured results every lifecycle step returns.
//!
//! It deliberately pulls in no async runtime, HTTP client or database: the host does all I/O.

pub mod device;
pub mod diag;
#[cfg(feature = "dynamic")]
pub mod dynamic;
pub mod environment;
pub mod host;
pub mod manifest;
pub mod plugin;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod version;

pub use device::{Analytics, AppUsage, DefenderState, Detection, Device, JoinType};
pub use diag::{
    ApplyOutcome, CheckReport, CheckStatus, Finding, PlanAction, PlanDecision, Severity,
    StatusReport,
};
pub use environment::Environment;
pub use host::{
    CollectionInfo, ConnectionPoint, DeviceParts, Host, HostError, Method, Record, RecordSink,
    SiteInfo, SyncMode, SyncStats,
};
pub use manifest::{Manifest, OptionKind, OptionSpec, Options, is_collection_id};
pub use plugin::{
    Plugin, PluginRegistration, ValidateContext, enable_and_upload, feature_status, put_feature,
    registered_plugins, settings_action, upload_from_devices,
};
pub use version::{DottedVersion, SiteVersion};

#[doc(hidden)]
pub use inventory;

/// Formats a count with thousands separators ("4,213"), for messages.
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

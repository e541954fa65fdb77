//! # cloudattach-sdk
//!
//! The only crate a cloudattach plugin author depends on. It defines the plugin contract
//! ([`Plugin`]), the services the host offers a plugin ([`Host`]), the options a plugin
//! declares ([`Manifest`]) and the structured results every lifecycle step returns
//! ([`CheckReport`], [`PlanDecision`], [`ApplyOutcome`], [`StatusReport`]). The site model
//! ([`Device`], [`SiteInfo`], …) comes from `cloudattach-model` and is re-exported here at the
//! same paths, so a plugin needs this crate alone.
//!
//! - [`register_plugin!`] registers a plugin linked into the binary;
//! - feature `dynamic`: [`export_plugin!`] exports one from a `cdylib` (see [`dynamic`]);
//! - plugin tests use `cloudattach-testkit`, an in-memory [`Host`] (a dev-dependency).
//!
//! It deliberately pulls in no async runtime, HTTP client or database: the host does all I/O.
//!
//! # Compatibility
//!
//! Until 1.0, a `0.minor` release may break; a patch release (`0.2.x`) does not. Structs that
//! will grow are `#[non_exhaustive]`: read their fields, but build them with their
//! constructors (`Finding::error`, `Device::new`, …), never with a struct literal.

pub mod diag;
#[cfg(feature = "dynamic")]
pub mod dynamic;
pub mod host;
pub mod manifest;
pub mod plugin;

pub use cloudattach_model::{
    actions, device, environment, gateway, ids, record, rules, site, timeline, version,
};

pub use cloudattach_model::actions::{
    ActionDecl, ActionError, ActionParameter, ActionResult, ActionTarget, ParameterKind,
};
pub use cloudattach_model::{
    ALL_SYSTEMS, Analytics, AppUsage, CollectionInfo, ConnectionPoint, DefenderState, Detection,
    Device, DeviceMembership, DeviceParts, DottedVersion, Environment, FeatureIdError, HostError,
    JoinType, Method, Record, SiteInfo, SiteVersion, SyncMode, SyncStats, TimelineEvent,
    is_collection_id, is_valid_feature_id, thousands, validate_feature_id,
};
pub use diag::{
    ApplyOutcome, CheckReport, CheckStatus, Finding, PlanAction, PlanDecision, Severity,
    StatusReport,
};
pub use host::{Host, RecordSink};
pub use manifest::{Manifest, OptionKind, OptionSpec, Options, OptionsExt};
pub use plugin::{
    ActionCall, ActionSubject, Explanation, Plugin, PluginRegistration, ValidateContext,
    enable_and_upload, feature_status, put_feature, registered_plugins, settings_action,
    upload_from_devices,
};

#[doc(hidden)]
pub use cloudattach_model::panic_message;
#[doc(hidden)]
pub use inventory;

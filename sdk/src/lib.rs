//! # cloudattach-sdk
//!
//! The only crate a cloudattach plugin author depends on. It defines the plugin contract
//! ([`Plugin`]), the services the host offers a plugin ([`Host`]), the site model ([`Device`],
//! [`SiteInfo`]) and the structured results every lifecycle step returns.
//!
//! It deliberately pulls in no async runtime, HTTP client or database: the host does all I/O.

pub mod device;
pub mod environment;
pub mod version;

pub use device::{Analytics, AppUsage, DefenderState, Detection, Device, JoinType};
pub use environment::Environment;
pub use version::{DottedVersion, SiteVersion};

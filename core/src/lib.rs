//! # cloudattach-core
//!
//! The orchestrator: reads `attach.toml` and the site inventory, holds the plugin registry,
//! validates a selection, orders plugins by their dependencies, checks, plans and applies.

pub mod config;
pub mod generate;
pub mod host;
pub mod orchestrator;
pub mod registry;
pub mod site;

pub use config::{Config, ConfigError, Endpoint, Settings};
pub use orchestrator::{CheckResult, Decision, Plan, PlanStep, Selection, SelectionError, check, plan, select};
pub use registry::{Origin, Registry, RegistryError};
pub use site::{Site, SiteError};

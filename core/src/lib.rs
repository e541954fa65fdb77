//! # cloudattach-core
//!
//! The orchestrator: reads `attach.toml` and the site inventory, holds the plugin registry,
//! validates a selection, orders plugins by their dependencies, checks, plans and applies.

pub mod apply;
pub mod client;
pub mod config;
pub mod dynamic;
pub mod generate;
pub mod host;
pub mod orchestrator;
pub mod registry;
pub mod session;
pub mod site;
pub mod state;

pub use config::{Config, ConfigError, Endpoint, Settings};
pub use orchestrator::{
    CheckResult, Decision, Plan, PlanStep, Selection, SelectionError, check, plan, select,
};
pub use registry::{Origin, Registry, RegistryError};
pub use site::{Site, SiteError};

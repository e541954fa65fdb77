//! # cloudattach-core
//!
//! The orchestrator: reads `attach.toml` and the site inventory, holds the plugin registry,
//! validates a selection, orders plugins by their dependencies, checks, plans and applies.
//!
//! The use cases — one per command — are in [`ops`]; every call into a plugin goes through the
//! [`runner`]. See `docs/ARCHITECTURE.md` for the module map.

pub mod access;
pub mod app_import;
pub mod client;
pub mod config;
pub mod dynamic;
pub mod host;
pub mod lines;
pub mod ops;
pub mod problem;
pub mod registry;
pub mod report;
pub mod runner;
pub mod selection;
pub mod session;
pub mod site;
pub mod state;
pub mod sync_engine;

pub use config::{Config, ConfigError, Endpoint, Settings};
pub use ops::plan::{Plan, PlanStep};
pub use problem::{Problem, ProblemKind, SelectionError};
pub use registry::{Origin, Registry, RegistryError};
pub use selection::{Decision, Selection, select, validate};
pub use site::{Site, SiteError};

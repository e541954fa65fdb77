//! The use cases: one module per command, in the manner of cargo's `ops`. Each takes the loaded
//! [`Workspace`] (configuration, plugin registry, site) and, where it needs one, a cloud
//! [`Connection`], and returns a typed report that the front end renders. The front end parses
//! arguments, calls one of these, and renders what it returns; it holds no rules of its own.

pub mod apply;
pub mod check;
pub mod connect;
pub mod connector;
pub mod detach;
pub mod disable;
pub mod explain;
pub mod init;
pub mod logout;
pub mod plan;
pub mod plugins;
pub mod status;
pub mod sync;
pub mod tenant;
pub mod workspace;

pub use connect::{CloudTarget, Connection};
pub use workspace::{LoadOptions, Workspace};

use crate::problem::SelectionError;

/// Why a use case did not run. Nothing changed in the tenant unless the report said so.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The configuration or the selection has problems (exit 2).
    #[error(transparent)]
    Problems(#[from] SelectionError),
    /// `attach.toml` cannot be read or is not valid (exit 2).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A plugin directory, from `--plugin-dir` or `[plugins] dirs`, that is not there (exit 2).
    #[error("{0}")]
    PluginDir(String),
    /// Other bad input: a file, a flag, an account without the rights (exit 2).
    #[error("{0}")]
    Input(String),
    /// Something failed while running (exit 1).
    #[error("{0}")]
    Runtime(String),
}

impl OpError {
    /// Whether the person has to fix their input (exit 2) rather than retry (exit 1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            OpError::Problems(_) | OpError::Config(_) | OpError::PluginDir(_) | OpError::Input(_)
        )
    }
}

/// A state error: one written by a newer cloudattach is the person's to resolve (exit 2,
/// nothing changed); the others failed while running.
impl From<crate::state::StateError> for OpError {
    fn from(e: crate::state::StateError) -> OpError {
        match e {
            e @ crate::state::StateError::TooNew { .. } => OpError::Input(e.to_string()),
            e => OpError::Runtime(e.to_string()),
        }
    }
}

pub(crate) fn runtime(e: impl std::fmt::Display) -> OpError {
    OpError::Runtime(e.to_string())
}

pub(crate) fn input(e: impl std::fmt::Display) -> OpError {
    OpError::Input(e.to_string())
}

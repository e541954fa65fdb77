//! The error of a host service.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An error from a host service, with a stable code and a message for people.
///
/// `#[non_exhaustive]`: build it with [`HostError::new`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HostError {
    /// A stable, kebab-case code (e.g. "cloud-unavailable", "http-409").
    pub code: String,
    /// What went wrong and what to do.
    pub message: String,
}

impl HostError {
    /// An error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        HostError {
            code: code.into(),
            message: message.into(),
        }
    }
    /// The error an offline host gives for cloud requests.
    pub fn offline() -> Self {
        HostError::new(
            "offline",
            "this command runs without a cloud connection (check and plan never sign in)",
        )
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for HostError {}

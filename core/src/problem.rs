//! Typed problems: what is wrong with a selection or a configuration, as values a caller can
//! inspect (which feature, which key, what kind) instead of text to match.

use std::fmt;

/// What kind of problem a [`Problem`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ProblemKind {
    /// A feature table or a command names a plugin no one registered.
    UnknownPlugin,
    /// An option has the wrong type, an unknown key or a value outside its choices.
    InvalidOption,
    /// The feature is not available in the environment, or needs a newer site.
    Unsupported,
    /// The feature depends on one that is not enabled.
    Dependency,
    /// The plugin's own cross-field validation refused the options.
    Validation,
    /// An option names a collection the site does not have.
    CollectionReference,
    /// The site is older than the cloud attach wizard needs.
    SiteVersion,
    /// Plugins claim one id, or their dependencies form a cycle.
    Registry,
    /// `--ignore-check` names a code no failing check finding has (a typo must not pass).
    IgnoreCheck,
}

/// One problem: what is wrong, where, and what to do.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// The feature (plugin id) it is about, if any.
    pub feature: Option<String>,
    /// The option key it is about, if any.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Problem {
    /// A problem of `kind` with a message.
    pub fn new(kind: ProblemKind, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            feature: None,
            key: None,
            message: message.into(),
            hint: None,
        }
    }

    /// About this feature.
    pub fn feature(mut self, id: impl Into<String>) -> Problem {
        self.feature = Some(id.into());
        self
    }

    /// About this option key.
    pub fn key(mut self, key: impl Into<String>) -> Problem {
        self.key = Some(key.into());
        self
    }

    /// With what to do.
    pub fn hint(mut self, hint: impl Into<String>) -> Problem {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hint {
            Some(h) => write!(f, "{}; {h}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Why a selection or a command's input cannot be used: every problem at once. Exit code 2;
/// nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct SelectionError {
    /// Every problem found, in the order found.
    pub problems: Vec<Problem>,
}

impl SelectionError {
    /// One problem.
    pub fn one(problem: Problem) -> SelectionError {
        SelectionError {
            problems: vec![problem],
        }
    }
}

impl From<crate::registry::RegistryError> for SelectionError {
    fn from(e: crate::registry::RegistryError) -> Self {
        SelectionError::one(Problem::new(ProblemKind::Registry, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_reads_as_message_then_hint() {
        let p = Problem::new(ProblemKind::Dependency, "[features.x]: depends on y")
            .feature("x")
            .hint("enable [features.y] too");
        assert_eq!(
            p.to_string(),
            "[features.x]: depends on y; enable [features.y] too"
        );
        let e = SelectionError {
            problems: vec![p, Problem::new(ProblemKind::SiteVersion, "old")],
        };
        assert_eq!(
            e.to_string(),
            "[features.x]: depends on y; enable [features.y] too\nold"
        );
    }
}

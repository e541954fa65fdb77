//! Structured results: findings of a check, the status they add up to, and plan steps.

use serde::{Deserialize, Serialize};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information: counts, explanations.
    Info,
    /// Something works but deserves attention.
    Warning,
    /// A prerequisite is not met.
    Error,
}

/// One thing a check found.
///
/// ```
/// use cloudattach_sdk::{Finding, Severity};
/// let f = Finding::warning("no-user-discovery", "neither Entra ID nor AD user discovery is enabled");
/// assert_eq!(f.severity, Severity::Warning);
/// ```
///
/// `#[non_exhaustive]`: build it with [`Finding::new`], [`Finding::info`],
/// [`Finding::warning`] or [`Finding::error`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// A stable, kebab-case code scripts can match on.
    pub code: String,
    /// What was found and, for problems, what to do.
    pub message: String,
}

impl Finding {
    /// A finding of any severity.
    pub fn new(severity: Severity, code: impl Into<String>, message: impl Into<String>) -> Self {
        Finding {
            severity,
            code: code.into(),
            message: message.into(),
        }
    }
    /// An informational finding.
    pub fn info(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Info, code, message)
    }
    /// A warning.
    pub fn warning(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }
    /// An error.
    pub fn error(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }
}

/// The overall result of a plugin's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Every prerequisite is met.
    Pass,
    /// Prerequisites are met with warnings.
    Warn,
    /// A prerequisite is not met.
    Fail,
    /// The feature is not available for this environment or site version.
    Unsupported,
}

/// What a plugin's `check` returns.
///
/// `#[non_exhaustive]`: start from [`CheckReport::default`] and [`push`](CheckReport::push)
/// findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct CheckReport {
    /// Findings in the order found.
    pub findings: Vec<Finding>,
    /// Extra structured data for the JSON output (for example co-management's `eligibility`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}

impl CheckReport {
    /// Adds a finding.
    pub fn push(&mut self, f: Finding) -> &mut Self {
        self.findings.push(f);
        self
    }
    /// The status the findings add up to: `fail` with any error, `warn` with any warning.
    pub fn status(&self) -> CheckStatus {
        match self.findings.iter().map(|f| f.severity).max() {
            Some(Severity::Error) => CheckStatus::Fail,
            Some(Severity::Warning) => CheckStatus::Warn,
            _ => CheckStatus::Pass,
        }
    }
}

/// What a plan step will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlanAction {
    /// Turn the feature on.
    Enable,
    /// Change the settings of an enabled feature.
    Update,
    /// Nothing to do.
    Noop,
    /// Not run, with a reason.
    Skip,
    /// Turn the feature off.
    Disable,
}

impl PlanAction {
    /// The identifier used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PlanAction::Enable => "enable",
            PlanAction::Update => "update",
            PlanAction::Noop => "noop",
            PlanAction::Skip => "skip",
            PlanAction::Disable => "disable",
        }
    }
}

/// A plugin's own view of what applying it would do.
///
/// `#[non_exhaustive]`: build it with [`PlanDecision::new`] or [`PlanDecision::skip`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PlanDecision {
    /// The action.
    pub action: PlanAction,
    /// Why (required for `skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A one-line description of the effect, for the Summary page ("upload 4,213 devices").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl PlanDecision {
    /// A decision without reason or detail.
    pub fn new(action: PlanAction) -> Self {
        PlanDecision {
            action,
            reason: None,
            detail: None,
        }
    }
    /// A skip with its reason.
    pub fn skip(reason: impl Into<String>) -> Self {
        PlanDecision {
            action: PlanAction::Skip,
            reason: Some(reason.into()),
            detail: None,
        }
    }
    /// Adds a detail line.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    /// Sets the reason (any action may give one; a skip must).
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// What `apply` and `disable` return: always, even on failure.
///
/// `#[non_exhaustive]`: build it with [`ApplyOutcome::ok`] or [`ApplyOutcome::failed`], then
/// add counts and findings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct ApplyOutcome {
    /// `true` when the step completed.
    pub ok: bool,
    /// What happened, in order; an error finding explains a failure.
    pub findings: Vec<Finding>,
    /// Counts of what was done (e.g. `devices_uploaded`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub counts: serde_json::Map<String, serde_json::Value>,
}

impl ApplyOutcome {
    /// A successful outcome.
    pub fn ok() -> Self {
        ApplyOutcome {
            ok: true,
            ..Default::default()
        }
    }
    /// A failed outcome with its error.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApplyOutcome {
            ok: false,
            findings: vec![Finding::error(code, message)],
            ..Default::default()
        }
    }
    /// Records a count.
    pub fn count(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.counts.insert(key.to_string(), value.into());
        self
    }
    /// Adds a finding (after the ones already there).
    pub fn with_finding(mut self, finding: Finding) -> Self {
        self.findings.push(finding);
        self
    }
}

/// What `status` returns: what the cloud holds now.
///
/// `#[non_exhaustive]`: build it with [`StatusReport::new`] (or start from
/// [`StatusReport::default`], a feature the cloud does not have) and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[non_exhaustive]
pub struct StatusReport {
    /// Whether the cloud has the feature enabled.
    pub enabled: bool,
    /// Counts the cloud reports.
    pub counts: serde_json::Map<String, serde_json::Value>,
    /// Extra top-level keys (e.g. rbac-authority's `effective_authority`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339 time of the last upload, if any.
    pub last_sync: Option<String>,
}

impl StatusReport {
    /// A report without counts, extra keys or last upload.
    pub fn new(enabled: bool) -> Self {
        StatusReport {
            enabled,
            ..Default::default()
        }
    }
    /// Adds a count.
    pub fn with_count(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.counts.insert(key.to_string(), value.into());
        self
    }
    /// Adds an extra top-level key.
    pub fn with_extra(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_string(), value.into());
        self
    }
    /// Sets the time of the last upload.
    pub fn with_last_sync(mut self, last_sync: Option<String>) -> Self {
        self.last_sync = last_sync;
        self
    }
}

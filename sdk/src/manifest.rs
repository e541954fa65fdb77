//! What a plugin declares about itself, and the options of its `[features.<id>]` table.

use crate::diag::Finding;
use crate::environment::Environment;
use crate::version::SiteVersion;
use serde::{Deserialize, Serialize};

pub use cloudattach_model::{Options, is_collection_id};

/// A plugin's declaration.
///
/// ```
/// use cloudattach_sdk::{Manifest, Environment, SiteVersion, OptionSpec};
/// let m = Manifest::new("collection-summary", "Collection summary", "1.0.0")
///     .depends_on(&["tenant-attach"])
///     .environments(&[Environment::Public, Environment::Usgov])
///     .min_site_version(SiteVersion(2111))
///     .option(OptionSpec::boolean("include_empty", false, "Also upload empty collections"));
/// assert_eq!(m.min_site_version_for(Environment::Usgov), SiteVersion(2111));
/// ```
///
/// `#[non_exhaustive]`: build it with [`Manifest::new`] and the builder methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Unique id, kebab-case, 2 to 64 characters, not ending with `-`
    /// ([`validate_feature_id`](crate::validate_feature_id)): the `[features.<id>]` key, the
    /// cloud's feature id and the upload channel `ext/<id>`.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The plugin's own version (semver).
    pub version: String,
    /// One line on what enabling it does.
    #[serde(default)]
    pub description: String,
    /// Ids of the plugins that must run (and succeed) first.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Environments the feature is available in.
    pub environments: Vec<Environment>,
    /// The first site version that shipped the feature.
    pub min_site_version: SiteVersion,
    /// Environments where the minimum is higher.
    #[serde(default)]
    pub min_site_version_overrides: Vec<(Environment, SiteVersion)>,
    /// Whether `settings = "default"` enables it.
    #[serde(default)]
    pub in_default_settings: bool,
    /// The options of its `[features.<id>]` table.
    #[serde(default)]
    pub options: Vec<OptionSpec>,
    /// The cloud actions it serves ([`Plugin::serve_action`](crate::Plugin::serve_action)):
    /// declared to the cloud when the feature is enabled, which then accepts requests for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<crate::ActionDecl>,
    /// Time limits the plugin needs for its steps when it runs in its own process, in seconds
    /// by step (`check`, `sync`, …), where the defaults are too short; the host caps them at 4
    /// hours, and the administrator's `[plugins] timeouts` win.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub timeouts: std::collections::BTreeMap<String, u64>,
}

impl Manifest {
    /// A manifest for all environments, site version 2111, no dependencies, no options.
    pub fn new(id: &str, name: &str, version: &str) -> Self {
        Manifest {
            id: id.into(),
            name: name.into(),
            version: version.into(),
            description: String::new(),
            depends_on: vec![],
            environments: Environment::ALL.to_vec(),
            min_site_version: SiteVersion::CLOUD_ATTACH_WIZARD,
            min_site_version_overrides: vec![],
            in_default_settings: false,
            options: vec![],
            actions: vec![],
            timeouts: Default::default(),
        }
    }

    /// Declares the time limit a step needs in its own process, in seconds (see
    /// [`Manifest::timeouts`]).
    pub fn timeout(mut self, step: &str, secs: u64) -> Self {
        self.timeouts.insert(step.to_string(), secs);
        self
    }

    /// Declares a cloud action the plugin serves.
    pub fn action(mut self, decl: crate::ActionDecl) -> Self {
        self.actions.push(decl);
        self
    }
    /// Sets the description.
    pub fn description(mut self, d: &str) -> Self {
        self.description = d.into();
        self
    }
    /// Sets the dependencies.
    pub fn depends_on(mut self, ids: &[&str]) -> Self {
        self.depends_on = ids.iter().map(|s| s.to_string()).collect();
        self
    }
    /// Sets the supported environments.
    pub fn environments(mut self, envs: &[Environment]) -> Self {
        self.environments = envs.to_vec();
        self
    }
    /// Sets the minimum site version.
    pub fn min_site_version(mut self, v: SiteVersion) -> Self {
        self.min_site_version = v;
        self
    }
    /// A higher minimum in one environment.
    pub fn min_site_version_in(mut self, env: Environment, v: SiteVersion) -> Self {
        self.min_site_version_overrides.push((env, v));
        self
    }
    /// Enabled by `settings = "default"`.
    pub fn in_default_settings(mut self) -> Self {
        self.in_default_settings = true;
        self
    }
    /// Adds an option.
    pub fn option(mut self, spec: OptionSpec) -> Self {
        self.options.push(spec);
        self
    }
    /// The minimum site version in `env`.
    pub fn min_site_version_for(&self, env: Environment) -> SiteVersion {
        self.min_site_version_overrides
            .iter()
            .find(|(e, _)| *e == env)
            .map(|(_, v)| *v)
            .unwrap_or(self.min_site_version)
    }

    /// Checks the declaration itself: option keys are unique and not `enabled`, every
    /// default fits its option's kind, and each action is well formed
    /// ([`ActionDecl::validate`](crate::ActionDecl::validate)) with an id of its own. The core
    /// registers no plugin whose manifest fails this.
    pub fn check_options(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        if self.actions.len() > cloudattach_model::actions::MAX_ACTIONS_PER_FEATURE {
            return Err(format!(
                "{} actions declared (at most {})",
                self.actions.len(),
                cloudattach_model::actions::MAX_ACTIONS_PER_FEATURE
            ));
        }
        for a in &self.actions {
            a.validate()?;
            if !ids.insert(a.id.as_str()) {
                return Err(format!("action `{}` is declared twice", a.id));
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for spec in &self.options {
            if spec.key == "enabled" {
                return Err("option `enabled` is the core's: choose another key".into());
            }
            if !seen.insert(spec.key.as_str()) {
                return Err(format!("option `{}` is declared twice", spec.key));
            }
            if let Some(d) = &spec.default
                && let Err(expected) = spec.kind.check(d)
            {
                return Err(format!(
                    "option `{}` defaults to {d}, which is not {expected}",
                    spec.key
                ));
            }
        }
        Ok(())
    }

    /// Checks `options` against the declared [`OptionSpec`]s: unknown keys, wrong types and
    /// values outside a choice are errors naming the key. Fills in defaults.
    pub fn resolve_options(&self, raw: &Options) -> Result<Options, Vec<Finding>> {
        let mut errors = vec![];
        let mut out = Options::new();
        for (key, value) in raw {
            match self.options.iter().find(|o| &o.key == key) {
                None => {
                    let known: Vec<&str> = self.options.iter().map(|o| o.key.as_str()).collect();
                    let hint = if known.is_empty() {
                        "it takes no options besides `enabled`".to_string()
                    } else {
                        format!("known keys: enabled, {}", known.join(", "))
                    };
                    errors.push(Finding::error(
                        "unknown-option",
                        format!("unknown key `{key}` in [features.{}]: {hint}", self.id),
                    ));
                }
                Some(spec) => match spec.kind.check(value) {
                    Ok(()) => {
                        out.insert(key.clone(), value.clone());
                    }
                    Err(expected) => errors.push(Finding::error(
                        "invalid-option",
                        format!(
                            "[features.{}] {key} = {value}: expected {expected}",
                            self.id
                        ),
                    )),
                },
            }
        }
        for spec in &self.options {
            if let (false, Some(d)) = (out.contains_key(&spec.key), &spec.default) {
                out.insert(spec.key.clone(), d.clone());
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// The type of an option's value. `#[non_exhaustive]`: kinds may be added in a minor version,
/// so a `match` outside this crate needs a `_` arm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "values")]
#[non_exhaustive]
pub enum OptionKind {
    /// `true` or `false`.
    Bool,
    /// Any string.
    String,
    /// One of the listed strings.
    Choice(Vec<String>),
    /// One of the listed strings, or a collection id (e.g. "all" or "PS100012").
    ChoiceOrCollection(Vec<String>),
    /// A non-negative integer.
    Integer,
    /// An integer from `min` to `max`, both included.
    IntegerIn {
        /// The smallest value allowed.
        min: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// A collection id of the site (e.g. "PS100020"); the core checks that it exists.
    Collection,
}

impl OptionKind {
    /// `Ok` when `v` fits; otherwise what was expected.
    pub fn check(&self, v: &serde_json::Value) -> Result<(), String> {
        use serde_json::Value;
        match (self, v) {
            (OptionKind::Bool, Value::Bool(_)) => Ok(()),
            (OptionKind::String, Value::String(_)) => Ok(()),
            (OptionKind::Integer, Value::Number(n)) if n.is_u64() => Ok(()),
            (OptionKind::IntegerIn { min, max }, Value::Number(n))
                if n.as_u64().is_some_and(|n| (*min..=*max).contains(&n)) =>
            {
                Ok(())
            }
            (OptionKind::Collection, Value::String(s)) if is_collection_id(s) => Ok(()),
            (OptionKind::Choice(c), Value::String(s)) if c.contains(s) => Ok(()),
            (OptionKind::ChoiceOrCollection(c), Value::String(s))
                if c.contains(s) || is_collection_id(s) =>
            {
                Ok(())
            }
            (OptionKind::Bool, _) => Err("true or false".into()),
            (OptionKind::String, _) => Err("a string".into()),
            (OptionKind::Integer, _) => Err("a non-negative integer".into()),
            (OptionKind::IntegerIn { min, max }, _) => {
                Err(format!("an integer from {min} to {max}"))
            }
            (OptionKind::Collection, _) => Err("a collection id such as \"PS100020\"".into()),
            (OptionKind::Choice(c), _) => Err(format!("one of {}", quote_list(c))),
            (OptionKind::ChoiceOrCollection(c), _) => Err(format!(
                "{} or a collection id such as \"PS100012\"",
                quote_list(c)
            )),
        }
    }
}

fn quote_list(c: &[String]) -> String {
    c.iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One option of a feature's table.
///
/// `#[non_exhaustive]`: build it with one of its constructors ([`OptionSpec::boolean`], …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct OptionSpec {
    /// The key.
    pub key: String,
    /// Its type.
    pub kind: OptionKind,
    /// The value when absent.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

impl OptionSpec {
    /// A boolean option with a default.
    pub fn boolean(key: &str, default: bool, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::Bool,
            default: Some(default.into()),
            description: description.into(),
        }
    }
    /// A choice among fixed strings.
    pub fn choice(key: &str, choices: &[&str], default: Option<&str>, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::Choice(choices.iter().map(|s| s.to_string()).collect()),
            default: default.map(Into::into),
            description: description.into(),
        }
    }
    /// A choice among fixed strings, or a collection id.
    pub fn choice_or_collection(
        key: &str,
        choices: &[&str],
        default: Option<&str>,
        description: &str,
    ) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::ChoiceOrCollection(choices.iter().map(|s| s.to_string()).collect()),
            default: default.map(Into::into),
            description: description.into(),
        }
    }
    /// A free string, optional.
    pub fn string(key: &str, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::String,
            default: None,
            description: description.into(),
        }
    }
    /// A collection id of the site, optional.
    pub fn collection(key: &str, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::Collection,
            default: None,
            description: description.into(),
        }
    }
    /// An integer from `min` to `max` (both included) with a default.
    pub fn integer_in(key: &str, min: u64, max: u64, default: u64, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::IntegerIn { min, max },
            default: Some(default.into()),
            description: description.into(),
        }
    }
    /// The value the option takes when the table does not set it, for any kind
    /// (`OptionSpec::string("owner", "…").with_default("help desk")`). The core refuses to
    /// register a plugin whose default does not fit its option's kind.
    pub fn with_default(mut self, value: impl Into<serde_json::Value>) -> Self {
        self.default = Some(value.into());
        self
    }
    /// A non-negative integer with a default.
    pub fn integer(key: &str, default: u64, description: &str) -> Self {
        OptionSpec {
            key: key.into(),
            kind: OptionKind::Integer,
            default: Some(default.into()),
            description: description.into(),
        }
    }
}

/// Typed access to a feature's resolved options ([`Manifest::resolve_options`] has checked
/// them and filled in the defaults, so a declared option with a default is always there).
///
/// ```
/// use cloudattach_sdk::{Manifest, OptionSpec, Options, OptionsExt};
/// #[derive(serde::Deserialize)]
/// struct Settings { include_empty: bool, max_os_entries: u64, owner: Option<String> }
///
/// let m = Manifest::new("collection-summary", "Collection summary", "1.0.0")
///     .option(OptionSpec::boolean("include_empty", false, "Also upload empty collections"))
///     .option(OptionSpec::integer_in("max_os_entries", 1, 50, 5, "OS families per collection"))
///     .option(OptionSpec::string("owner", "Who to ask").with_default("help desk"));
/// let raw: Options = serde_json::from_str(r#"{"max_os_entries": 7}"#).unwrap();
/// let o = m.resolve_options(&raw).unwrap();
/// assert!(!o.flag("include_empty"));
/// assert_eq!(o.integer("max_os_entries"), Some(7));
/// assert_eq!(o.text("owner"), Some("help desk"));
/// let s: Settings = o.parse().unwrap();
/// assert_eq!((s.max_os_entries, s.owner.as_deref()), (7, Some("help desk")));
///
/// let too_many: Options = serde_json::from_str(r#"{"max_os_entries": 99}"#).unwrap();
/// let errors = m.resolve_options(&too_many).unwrap_err();
/// assert!(errors[0].message.ends_with("expected an integer from 1 to 50"), "{}", errors[0].message);
/// ```
pub trait OptionsExt {
    /// A boolean option; `false` when absent or not a boolean.
    fn flag(&self, key: &str) -> bool;
    /// A string option (string, choice or collection kinds).
    fn text(&self, key: &str) -> Option<&str>;
    /// An integer option.
    fn integer(&self, key: &str) -> Option<u64>;
    /// All options into a type of the plugin's (`#[derive(serde::Deserialize)]`); an option
    /// that does not fit the type is an `invalid-option` error finding naming it.
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Finding>;
}

impl OptionsExt for Options {
    fn flag(&self, key: &str) -> bool {
        self.get(key)
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false)
    }
    fn text(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(serde_json::Value::as_str)
    }
    fn integer(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(serde_json::Value::as_u64)
    }
    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, Finding> {
        serde_json::from_value(serde_json::Value::Object(self.clone()))
            .map_err(|e| Finding::error("invalid-option", format!("options: {e}")))
    }
}

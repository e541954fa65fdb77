//! The plugin registry: built-in plugins registered statically (inventory) and, later, plugins
//! loaded from dynamic libraries; dependency order.

use cloudattach_sdk::{Manifest, Plugin};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// Where a plugin comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Linked into the binary.
    Static,
    /// Loaded from this dynamic library.
    Dynamic(PathBuf),
}

impl Origin {
    /// `"static"` or `"dynamic"`, as `plugins list` prints it.
    pub fn kind(&self) -> &'static str {
        match self {
            Origin::Static => "static",
            Origin::Dynamic(_) => "dynamic",
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Static => f.write_str("the binary (built in)"),
            Origin::Dynamic(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A plugin with its manifest (read once) and origin.
pub struct RegisteredPlugin {
    /// The plugin.
    pub plugin: Box<dyn Plugin>,
    /// Its manifest.
    pub manifest: Manifest,
    /// Where it comes from.
    pub origin: Origin,
}

impl RegisteredPlugin {
    /// The runner every call into this plugin goes through.
    pub fn runner(&self) -> crate::runner::Runner<'_> {
        crate::runner::Runner::new(&self.manifest.id, self.plugin.as_ref())
    }
}

/// A plugin library that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadFailure {
    /// The file.
    pub path: PathBuf,
    /// What is wrong and what to do.
    pub message: String,
}

/// An error registering or ordering plugins.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Two plugins claim one id.
    #[error("plugin id `{id}` is registered twice: by {first} and by {second}; remove one of them")]
    Duplicate {
        /// The id.
        id: String,
        /// The first origin.
        first: String,
        /// The second origin.
        second: String,
    },
    /// A manifest is not valid.
    #[error("plugin from {origin} has an invalid manifest: {message}")]
    InvalidManifest {
        /// Where it comes from.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A plugin depends on one that is not registered.
    #[error(
        "plugin `{plugin}` depends on `{dependency}`, which is not registered; add the plugin that provides it (--plugin-dir) or remove `{plugin}`"
    )]
    MissingDependency {
        /// The plugin.
        plugin: String,
        /// The missing id.
        dependency: String,
    },
    /// Dependencies form a cycle.
    #[error("plugin dependencies form a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// The registered plugins, by id.
#[derive(Default)]
pub struct Registry {
    plugins: BTreeMap<String, RegisteredPlugin>,
    /// Dynamic libraries that failed to load (shown by `plugins list`).
    pub load_failures: Vec<LoadFailure>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Registry::default()
    }

    /// Every plugin registered statically in this binary.
    pub fn with_static_plugins() -> Result<Self, RegistryError> {
        let mut r = Registry::new();
        for p in cloudattach_sdk::registered_plugins() {
            r.add(p, Origin::Static)?;
        }
        Ok(r)
    }

    /// Registers a plugin.
    pub fn add(&mut self, plugin: Box<dyn Plugin>, origin: Origin) -> Result<(), RegistryError> {
        let manifest = crate::runner::manifest_of(plugin.as_ref()).map_err(|message| {
            RegistryError::InvalidManifest {
                origin: origin.to_string(),
                message,
            }
        })?;
        if !cloudattach_sdk::is_valid_feature_id(&manifest.id) {
            return Err(RegistryError::InvalidManifest {
                origin: origin.to_string(),
                message: format!(
                    "id {:?} must be kebab-case (a-z, 0-9, '-'), 2 to 64 characters",
                    manifest.id
                ),
            });
        }
        if let Err(message) = manifest.check_options() {
            return Err(RegistryError::InvalidManifest {
                origin: origin.to_string(),
                message: format!("plugin `{}`: {message}", manifest.id),
            });
        }
        if manifest.environments.is_empty() {
            return Err(RegistryError::InvalidManifest {
                origin: origin.to_string(),
                message: format!("plugin `{}` declares no environment", manifest.id),
            });
        }
        if let Some(existing) = self.plugins.get(&manifest.id) {
            return Err(RegistryError::Duplicate {
                id: manifest.id.clone(),
                first: existing.origin.to_string(),
                second: origin.to_string(),
            });
        }
        self.plugins.insert(
            manifest.id.clone(),
            RegisteredPlugin {
                plugin,
                manifest,
                origin,
            },
        );
        Ok(())
    }

    /// A plugin by id.
    pub fn get(&self, id: &str) -> Option<&RegisteredPlugin> {
        self.plugins.get(id)
    }

    /// Every plugin, by id.
    pub fn iter(&self) -> impl Iterator<Item = &RegisteredPlugin> {
        self.plugins.values()
    }

    /// Number of plugins.
    pub fn len(&self) -> usize {
        self.plugins.len()
    }

    /// Whether there is no plugin.
    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Every id in execution order: dependencies first, ties broken by id.
    pub fn execution_order(&self) -> Result<Vec<String>, RegistryError> {
        let deps: BTreeMap<&str, Vec<&str>> = self
            .plugins
            .values()
            .map(|p| {
                (
                    p.manifest.id.as_str(),
                    p.manifest.depends_on.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        topological_order(&deps)
    }

    /// The ids that depend on `id`, directly or not.
    pub fn dependents_of(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut frontier = vec![id.to_string()];
        while let Some(cur) = frontier.pop() {
            for p in self.plugins.values() {
                if p.manifest.depends_on.contains(&cur) && out.insert(p.manifest.id.clone()) {
                    frontier.push(p.manifest.id.clone());
                }
            }
        }
        out
    }
}

/// Kahn's algorithm with a sorted ready set, so the order is reproducible.
pub fn topological_order(deps: &BTreeMap<&str, Vec<&str>>) -> Result<Vec<String>, RegistryError> {
    for (id, ds) in deps {
        for d in ds {
            if !deps.contains_key(d) {
                return Err(RegistryError::MissingDependency {
                    plugin: id.to_string(),
                    dependency: d.to_string(),
                });
            }
        }
    }
    let mut remaining: BTreeMap<&str, BTreeSet<&str>> = deps
        .iter()
        .map(|(id, ds)| (*id, ds.iter().copied().collect()))
        .collect();
    let mut order = Vec::with_capacity(deps.len());
    loop {
        let ready: Option<&str> = remaining
            .iter()
            .find(|(_, ds)| ds.is_empty())
            .map(|(id, _)| *id);
        let Some(next) = ready else { break };
        remaining.remove(next);
        for ds in remaining.values_mut() {
            ds.remove(next);
        }
        order.push(next.to_string());
    }
    if remaining.is_empty() {
        return Ok(order);
    }
    // Walk dependencies from the smallest remaining id until one repeats: that is a cycle.
    let mut path: Vec<&str> = vec![];
    let mut cur = *remaining.keys().next().expect("non-empty");
    while !path.contains(&cur) {
        path.push(cur);
        cur = *remaining[cur]
            .iter()
            .next()
            .expect("a blocked plugin has a remaining dependency");
    }
    let start = path.iter().position(|p| *p == cur).expect("in path");
    let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
    cycle.push(cur.to_string());
    Err(RegistryError::Cycle(cycle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudattach_sdk::{CheckReport, Host, OptionSpec, Options};

    /// A plugin whose manifest is whatever the test says.
    struct Declares(Manifest);
    impl Plugin for Declares {
        fn manifest(&self) -> Manifest {
            self.0.clone()
        }
        fn check(&self, _host: &dyn Host, _options: &Options) -> CheckReport {
            CheckReport::default()
        }
    }
    struct PanicsInManifest;
    impl Plugin for PanicsInManifest {
        fn manifest(&self) -> Manifest {
            panic!("no manifest today")
        }
        fn check(&self, _host: &dyn Host, _options: &Options) -> CheckReport {
            CheckReport::default()
        }
    }

    #[test]
    fn manifests_that_cannot_work_are_refused_with_the_reason() {
        let base = || Manifest::new("x-feature", "X", "1.0.0");
        let cases: Vec<(&str, Box<dyn Plugin>, &str)> = vec![
            (
                "a default outside its range",
                Box::new(Declares(
                    base().option(OptionSpec::integer_in("n", 1, 9, 10, "")),
                )),
                "plugin `x-feature`: option `n` defaults to 10, which is not an integer from 1 to 9",
            ),
            (
                "a string default for a boolean",
                Box::new(Declares(
                    base().option(OptionSpec::boolean("b", false, "").with_default("yes")),
                )),
                "plugin `x-feature`: option `b` defaults to \"yes\", which is not true or false",
            ),
            (
                "a key declared twice",
                Box::new(Declares(
                    base()
                        .option(OptionSpec::string("k", ""))
                        .option(OptionSpec::string("k", "")),
                )),
                "plugin `x-feature`: option `k` is declared twice",
            ),
            (
                "the core's own key",
                Box::new(Declares(
                    base().option(OptionSpec::boolean("enabled", true, "")),
                )),
                "plugin `x-feature`: option `enabled` is the core's: choose another key",
            ),
            (
                "a panicking manifest",
                Box::new(PanicsInManifest),
                "its manifest() panicked: no manifest today",
            ),
        ];
        for (name, plugin, expected) in cases {
            let err = Registry::new()
                .add(plugin, Origin::Static)
                .expect_err(name)
                .to_string();
            assert!(err.ends_with(expected), "{name}: {err}");
        }
        let fine = base().option(OptionSpec::string("owner", "").with_default("help desk"));
        Registry::new()
            .add(Box::new(Declares(fine)), Origin::Static)
            .expect("a default that fits is fine");
    }

    fn order(pairs: &[(&'static str, &[&'static str])]) -> Result<Vec<String>, RegistryError> {
        let deps: BTreeMap<&str, Vec<&str>> =
            pairs.iter().map(|(id, ds)| (*id, ds.to_vec())).collect();
        topological_order(&deps)
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn ordering_table() {
        let cases: &[(&str, &[(&str, &[&str])], Result<&[&str], &str>)] = &[
            (
                "no deps: by id",
                &[("b", &[]), ("a", &[]), ("c", &[])],
                Ok(&["a", "b", "c"]),
            ),
            (
                "the five built-ins",
                &[
                    ("tenant-attach", &[]),
                    ("endpoint-analytics", &["tenant-attach"]),
                    ("rbac-authority", &["tenant-attach"]),
                    ("defender-reporting", &["tenant-attach"]),
                    ("co-management", &[]),
                ],
                Ok(&[
                    "co-management",
                    "tenant-attach",
                    "defender-reporting",
                    "endpoint-analytics",
                    "rbac-authority",
                ]),
            ),
            (
                "chain against id order",
                &[("a", &["b"]), ("b", &["c"]), ("c", &[])],
                Ok(&["c", "b", "a"]),
            ),
            (
                "diamond",
                &[("d", &["b", "c"]), ("b", &["a"]), ("c", &["a"]), ("a", &[])],
                Ok(&["a", "b", "c", "d"]),
            ),
            (
                "missing dependency",
                &[("a", &["zz"])],
                Err("plugin `a` depends on `zz`, which is not registered"),
            ),
            (
                "cycle",
                &[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])],
                Err("cycle: a -> b -> c -> a"),
            ),
            ("self cycle", &[("a", &["a"])], Err("cycle: a -> a")),
        ];
        for (name, deps, expect) in cases {
            match (order(deps), expect) {
                (Ok(got), Ok(want)) => assert_eq!(got, *want, "{name}"),
                (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{name}: {e}"),
                (got, want) => panic!("{name}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn plugin_ids_are_kebab_case() {
        for ok in ["tenant-attach", "co-management", "x1", "collection-summary"] {
            assert!(cloudattach_sdk::is_valid_feature_id(ok), "{ok}");
        }
        for bad in ["", "a", "Tenant", "tenant_attach", "-a", "a-", "1a", "a b"] {
            assert!(!cloudattach_sdk::is_valid_feature_id(bad), "{bad}");
        }
    }
}

//! `attach.toml` (docs/user-guide.md#attachtoml). Fixed sections are checked by serde (unknown keys are errors
//! that carry line and column); `[features.<id>]` tables are checked against the plugins'
//! manifests by the selection.

use cloudattach_sdk::Environment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// An error in the configuration: exit code 2, nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has a bad key or value.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, where, and what is allowed.
        message: String,
    },
}

/// `[attach] settings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Settings {
    /// The wizard's "Use default settings (recommended)".
    Default,
    /// Exactly the features the configuration turns on.
    Custom,
}

impl Settings {
    /// The identifier used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Settings::Default => "default",
            Settings::Custom => "custom",
        }
    }
}

/// Where the cloud tenant service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// The in-process local cloud, with its data under the state directory.
    Embedded,
    /// A cloud tenant service at this base URL.
    Url(String),
}

/// `[cloud.app]`: an existing app to import instead of registering one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppImport {
    /// Tenant id.
    pub tenant_id: String,
    /// Client (application) id.
    pub client_id: String,
    /// App name.
    pub name: String,
    /// App ID URI.
    pub app_id_uri: String,
    /// File holding the secret (relative to attach.toml).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Environment variable holding the secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Secret expiry date (YYYY-MM-DD).
    pub secret_expiry: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    site: RawSite,
    #[serde(default)]
    cloud: RawCloud,
    #[serde(default)]
    attach: RawAttach,
    #[serde(default)]
    features: BTreeMap<String, toml::Table>,
    #[serde(default)]
    plugins: RawPlugins,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    #[serde(default = "default_site_path")]
    path: PathBuf,
}
impl Default for RawSite {
    fn default() -> Self {
        RawSite {
            path: default_site_path(),
        }
    }
}
fn default_site_path() -> PathBuf {
    PathBuf::from("site")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloud {
    #[serde(default = "default_environment")]
    environment: Environment,
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default = "default_tenant")]
    tenant: String,
    #[serde(default)]
    app: Option<AppImport>,
}
impl Default for RawCloud {
    fn default() -> Self {
        RawCloud {
            environment: default_environment(),
            endpoint: default_endpoint(),
            tenant: default_tenant(),
            app: None,
        }
    }
}
fn default_environment() -> Environment {
    Environment::Public
}
fn default_endpoint() -> String {
    "embedded".into()
}
fn default_tenant() -> String {
    "contoso.example".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttach {
    #[serde(default = "default_settings")]
    settings: Settings,
}
impl Default for RawAttach {
    fn default() -> Self {
        RawAttach {
            settings: default_settings(),
        }
    }
}
fn default_settings() -> Settings {
    Settings::Default
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    #[serde(default)]
    dirs: Vec<PathBuf>,
    #[serde(default)]
    in_process: Vec<String>,
    #[serde(default)]
    memory_limit_mb: Option<u64>,
    #[serde(default)]
    timeouts: BTreeMap<String, u64>,
}

/// The steps whose time limit `[plugins] timeouts` may set.
pub const PLUGIN_STEPS: [&str; 11] = [
    "manifest", "validate", "check", "settings", "plan", "apply", "sync", "status", "disable",
    "action", "explain",
];

/// `[plugins]` beyond `dirs`: how plugins from the plugin directories run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginProcesses {
    /// Plugin ids that run inside this process (trusted, fastest); every other runs in its own.
    pub in_process: Vec<String>,
    /// Each plugin process's memory limit in MiB (`Some(0)`: none; `None`: the default).
    pub memory_limit_mb: Option<u64>,
    /// Time limits per step, in seconds.
    pub timeouts: BTreeMap<String, u64>,
}

/// One `[features.<id>]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureTable {
    /// `enabled`, if written.
    pub enabled: Option<bool>,
    /// Every other key, as JSON.
    pub options: cloudattach_sdk::Options,
}

/// A loaded configuration, paths resolved against the file's directory.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file, or `None` for the built-in demo.
    pub file: Option<PathBuf>,
    /// The directory relative paths are resolved against; the state lives in its
    /// `.cloudattach/`.
    pub base_dir: PathBuf,
    /// The site directory.
    pub site_dir: PathBuf,
    /// The environment.
    pub environment: Environment,
    /// The cloud endpoint.
    pub endpoint: Endpoint,
    /// Tenant name or id.
    pub tenant: String,
    /// An app to import.
    pub app: Option<AppImport>,
    /// Default or custom settings.
    pub settings: Settings,
    /// The `[features.*]` tables by plugin id.
    pub features: BTreeMap<String, FeatureTable>,
    /// `[plugins] dirs`, resolved.
    pub plugin_dirs: Vec<PathBuf>,
    /// The rest of `[plugins]`.
    pub plugin_processes: PluginProcesses,
}

impl Config {
    /// Reads and checks `attach.toml`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        Config::parse(&text, path, &base)
    }

    /// Parses configuration text; `path` is only used in messages. No message shows the value
    /// of a secret-like key ([`is_secret_key`]), whatever is wrong with the file.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::parse_unredacted(text, path, base_dir).map_err(|e| match e {
            ConfigError::Invalid { path, message } => ConfigError::Invalid {
                path,
                message: redact_secrets(&message, text),
            },
            other => other,
        })
    }

    fn parse_unredacted(text: &str, path: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| invalid(toml_message(&e)))?;
        let endpoint = match raw.cloud.endpoint.as_str() {
            "embedded" => Endpoint::Embedded,
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Endpoint::Url(url.trim_end_matches('/').to_string())
            }
            other => {
                return Err(invalid(format!(
                    "[cloud] endpoint = {other:?}: expected \"embedded\" or an http(s) URL such as \"http://127.0.0.1:8750\""
                )));
            }
        };
        if let Some(app) = &raw.cloud.app {
            match (&app.secret_file, &app.secret_env) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        "[cloud.app] has both secret_file and secret_env: keep one".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        "[cloud.app] needs secret_file or secret_env (secrets are never read from the command line)".into(),
                    ));
                }
                _ => {}
            }
        }
        for (step, secs) in &raw.plugins.timeouts {
            if !PLUGIN_STEPS.contains(&step.as_str()) {
                return Err(invalid(format!(
                    "[plugins] timeouts: no plugin step is named {step:?}; the steps are {}",
                    PLUGIN_STEPS.join(", ")
                )));
            }
            if *secs == 0 || *secs > 4 * 3600 {
                return Err(invalid(format!(
                    "[plugins] timeouts.{step} = {secs}: expected 1 to 14400 seconds"
                )));
            }
        }
        if raw.plugins.memory_limit_mb.is_some_and(|mb| mb > 1 << 20) {
            return Err(invalid(format!(
                "[plugins] memory_limit_mb = {}: at most 1048576 (1 TiB); 0 means no limit",
                raw.plugins.memory_limit_mb.unwrap_or_default()
            )));
        }
        let mut features = BTreeMap::new();
        for (id, table) in raw.features {
            let mut options = cloudattach_sdk::Options::new();
            let mut enabled = None;
            for (key, value) in table {
                if key == "enabled" {
                    match value {
                        toml::Value::Boolean(b) => enabled = Some(b),
                        other => {
                            return Err(invalid(format!(
                                "[features.{id}] enabled = {other}: expected true or false"
                            )));
                        }
                    }
                } else {
                    let json = serde_json::to_value(&value)
                        .map_err(|e| invalid(format!("[features.{id}] {key}: {e}")))?;
                    options.insert(key, json);
                }
            }
            features.insert(id, FeatureTable { enabled, options });
        }
        let app = raw.cloud.app.map(|mut a| {
            a.secret_file = a.secret_file.map(|f| base_dir.join(f));
            a
        });
        Ok(Config {
            file: Some(path.to_path_buf()),
            base_dir: base_dir.to_path_buf(),
            site_dir: base_dir.join(raw.site.path),
            environment: raw.cloud.environment,
            endpoint,
            tenant: raw.cloud.tenant,
            app,
            settings: raw.attach.settings,
            features,
            plugin_dirs: raw
                .plugins
                .dirs
                .into_iter()
                .map(|d| base_dir.join(d))
                .collect(),
            plugin_processes: PluginProcesses {
                in_process: raw.plugins.in_process,
                memory_limit_mb: raw.plugins.memory_limit_mb,
                timeouts: raw.plugins.timeouts,
            },
        })
    }

    /// The built-in demo: the sample site under `base_dir/.cloudattach/demo-site`, public
    /// environment, default settings, the embedded cloud.
    pub fn demo(base_dir: &Path) -> Config {
        Config {
            file: None,
            base_dir: base_dir.to_path_buf(),
            site_dir: base_dir.join(".cloudattach").join("demo-site"),
            environment: Environment::Public,
            endpoint: Endpoint::Embedded,
            tenant: default_tenant(),
            app: None,
            settings: Settings::Default,
            features: BTreeMap::new(),
            plugin_dirs: vec![],
            plugin_processes: PluginProcesses::default(),
        }
    }

    /// The state directory: `.cloudattach/` next to attach.toml.
    pub fn state_dir(&self) -> PathBuf {
        self.base_dir.join(".cloudattach")
    }
}

/// The message of a TOML or schema error, with a hint when the key is secret-like: a secret is
/// never written in attach.toml, only where it is kept.
fn toml_message(e: &toml::de::Error) -> String {
    let mut message = e.to_string().trim_end().to_string();
    let unknown = e
        .message()
        .strip_prefix("unknown field `")
        .and_then(|rest| rest.split_once('`'))
        .map(|(key, _)| key);
    if let Some(key) = unknown
        && is_secret_key(key)
    {
        message.push_str(
            "\nhint: secrets are never written in attach.toml: put the app's secret in a file named by [cloud.app] secret_file, or in an environment variable named by secret_env",
        );
    }
    message
}

/// The keys that name where the app's secret is kept or when it expires: a path, a variable
/// name, a date — never the secret itself, so errors may show them.
const SECRET_REFERENCES: &[&str] = &["secret_file", "secret_env", "secret_expiry"];

/// Whether a key of the configuration can hold a secret: its name contains `secret`,
/// `password`, `passwd`, `passphrase`, `pwd`, `token`, `credential`, `apikey`, `api_key` or
/// `private_key` (case and `-`/`_` ignored), except [cloud.app]'s `secret_file`, `secret_env`
/// and `secret_expiry`. No error ever shows the value of such a key.
pub fn is_secret_key(key: &str) -> bool {
    const WORDS: &[&str] = &[
        "secret",
        "password",
        "passwd",
        "passphrase",
        "pwd",
        "token",
        "credential",
        "apikey",
        "api_key",
        "private_key",
    ];
    let key = key
        .trim_matches(|c| c == '"' || c == '\'')
        .to_ascii_lowercase()
        .replace('-', "_");
    !SECRET_REFERENCES.contains(&key.as_str()) && WORDS.iter().any(|w| key.contains(w))
}

/// The values of the secret-like keys in configuration text, as written and as parsed, whether
/// or not the text is valid TOML (a syntax error must not leak the line above it either); every
/// value, however short, longest first.
pub fn secret_values(text: &str) -> Vec<String> {
    let mut values: Vec<String> = scan_secrets(text).values.into_iter().collect();
    // Longest first, so a value inside another does not leave the rest of the longer one.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// What configuration text holds of secrets: the values of its secret-like keys, and the lines
/// they are written on — per line (0-based), the byte column from which the rest of the line is
/// such a value (0 for a line inside a value that spans lines).
struct Secrets {
    values: std::collections::BTreeSet<String>,
    lines: BTreeMap<usize, usize>,
}

fn scan_secrets(text: &str) -> Secrets {
    fn walk(table: &toml::Table, out: &mut std::collections::BTreeSet<String>) {
        for (key, value) in table {
            if is_secret_key(key) {
                leaves(value, out);
            } else if let toml::Value::Table(t) = value {
                walk(t, out);
            } else if let toml::Value::Array(items) = value {
                for item in items {
                    if let toml::Value::Table(t) = item {
                        walk(t, out);
                    }
                }
            }
        }
    }
    fn leaves(value: &toml::Value, out: &mut std::collections::BTreeSet<String>) {
        match value {
            toml::Value::String(s) => {
                out.insert(s.clone());
            }
            toml::Value::Array(items) => items.iter().for_each(|v| leaves(v, out)),
            toml::Value::Table(t) => t.values().for_each(|v| leaves(v, out)),
            other => {
                out.insert(other.to_string());
            }
        }
    }
    let mut secrets = Secrets {
        values: Default::default(),
        lines: BTreeMap::new(),
    };
    if let Ok(table) = text.parse::<toml::Table>() {
        walk(&table, &mut secrets.values);
    }
    // The text as written, line by line: wherever a secret-like key is assigned (inline tables
    // too), or any key of a table whose name is secret-like, the rest of the line — and the
    // lines a multi-line string, array or inline table goes on to — is its value.
    let lines: Vec<&str> = text.lines().collect();
    let mut secret_table = false;
    let mut n = 0;
    while n < lines.len() {
        let line = lines[n];
        let trimmed = line.trim_start();
        let mut last = n;
        if trimmed.starts_with('[') {
            let header = trimmed.trim_start_matches('[');
            let header = header.split(']').next().unwrap_or("");
            secret_table = header
                .split('.')
                .any(|segment| is_secret_key(segment.trim()));
        } else if !trimmed.starts_with('#') {
            let mut first = true;
            for (eq, _) in line.match_indices('=') {
                let before = line[..eq].trim_end();
                let key_start = before
                    .rfind(|c: char| !(c.is_alphanumeric() || "_-.\"'".contains(c)))
                    .map_or(0, |i| i + 1);
                let key = before[key_start..].rsplit('.').next().unwrap_or("");
                if is_secret_key(key) || (first && secret_table) {
                    last = last.max(secret_value(&lines, n, eq, &mut secrets));
                }
                first = false;
            }
        }
        n = last + 1;
    }
    secrets.values = secrets
        .values
        .into_iter()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    secrets
}

/// Records the value assigned at `lines[n][eq]` (the `=`): its text and the lines it is
/// written on. Returns the index of its last line.
fn secret_value(lines: &[&str], n: usize, eq: usize, secrets: &mut Secrets) -> usize {
    let line = lines[n];
    let value = line[eq + 1..].trim_start();
    let col = line.len() - value.len();
    let col = secrets.lines.get(&n).map_or(col, |c| (*c).min(col));
    secrets.lines.insert(n, col);
    let out = &mut secrets.values;
    for quote in ["\"\"\"", "'''"] {
        if let Some(rest) = value.strip_prefix(quote) {
            if let Some(end) = rest.find(quote) {
                out.insert(rest[..end].to_string());
                return n;
            }
            out.insert(rest.to_string());
            // A multi-line string: the lines that follow, up to the closing quotes.
            for (i, next) in lines.iter().enumerate().skip(n + 1) {
                secrets.lines.insert(i, 0);
                match next.find(quote) {
                    Some(end) => {
                        out.insert(next[..end].to_string());
                        return i;
                    }
                    None => {
                        out.insert(next.to_string());
                    }
                }
            }
            return lines.len().saturating_sub(1);
        }
    }
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            // One line: a string left open ends with the line.
            let end = rest.find(quote).unwrap_or(rest.len());
            out.insert(rest[..end].to_string());
            return n;
        }
    }
    if value.starts_with(['[', '{']) {
        // An array or an inline table: its strings, up to where its brackets close.
        let mut depth = 0i64;
        for (i, l) in lines.iter().enumerate().skip(n) {
            let part = if i == n { value } else { l };
            if i > n {
                secrets.lines.insert(i, 0);
            }
            depth += bracket_depth(part, out);
            if depth <= 0 {
                return i;
            }
        }
        return lines.len().saturating_sub(1);
    }
    out.insert(
        value
            .split([',', '}', '#'])
            .next()
            .unwrap_or("")
            .to_string(),
    );
    n
}

/// How many more brackets (`[`, `{`) `part` opens than it closes, outside strings; each quoted
/// string in it is recorded.
fn bracket_depth(part: &str, out: &mut std::collections::BTreeSet<String>) -> i64 {
    let mut depth = 0;
    let mut chars = part.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            '#' => break,
            '"' | '\'' => {
                let rest = &part[i + 1..];
                let end = rest.find(c).unwrap_or(rest.len());
                out.insert(rest[..end].to_string());
                // Past the string and its closing quote.
                let skip = rest[..end].chars().count() + usize::from(end < rest.len());
                for _ in 0..skip {
                    chars.next();
                }
            }
            _ => {}
        }
    }
    depth
}

/// `message` without any value of a secret-like key of the configuration `text`, however short:
/// the one rule behind every configuration error the CLI prints.
///
/// - A line of the file that the message quotes (TOML's `N | text` snippet) and that holds such
///   a value keeps its key and shows `<redacted>` for everything after the `=` (a line inside a
///   value that spans lines shows only `<redacted>`): found by its line number, not by looking
///   for the value.
/// - Elsewhere a value is `<redacted>` where messages show values: quoted (`"v"`, `'v'`,
///   `` `v` ``, as serde and TOML quote them) or right after `key = `; and, at 4 characters
///   or more, wherever it appears.
pub fn redact_secrets(message: &str, text: &str) -> String {
    let secrets = scan_secrets(text);
    if secrets.lines.is_empty() && secrets.values.is_empty() {
        return message.to_string();
    }
    let source: Vec<&str> = text.lines().collect();
    let mut out: String = message
        .split_inclusive('\n')
        .map(|l| redact_quoted_line(l, &source, &secrets.lines))
        .collect();
    let mut values: Vec<&String> = secrets.values.iter().collect();
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for value in values {
        let quoted = [
            format!("\"{}\"", value.escape_debug()),
            serde_json::to_string(value).unwrap_or_default(),
            format!("\"{value}\""),
            format!("'{value}'"),
            format!("`{value}`"),
        ];
        for q in quoted {
            out = out.replace(&q, "<redacted>");
        }
        out = replace_assigned(&out, value);
        // Too short to look for on its own: replacing it would mangle line numbers and words.
        if value.chars().count() >= 4 {
            out = out.replace(value.as_str(), "<redacted>");
            out = out.replace(&value.escape_debug().to_string(), "<redacted>");
        }
    }
    out
}

/// `= value` (the value ending there: at the end, or before a space or punctuation) as
/// `= <redacted>`.
fn replace_assigned(message: &str, value: &str) -> String {
    let needle = format!("= {value}");
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find(&needle) {
        let after = &rest[i + needle.len()..];
        let ends = after
            .chars()
            .next()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '-'));
        out.push_str(&rest[..i]);
        out.push_str(if ends { "= <redacted>" } else { &needle });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// One line of a message: when it quotes line N of the file (`N | text`, as TOML's errors do)
/// and that line holds a secret value, the value is replaced.
fn redact_quoted_line(
    line: &str,
    source: &[&str],
    secret_lines: &BTreeMap<usize, usize>,
) -> String {
    let body = line.strip_suffix('\n').unwrap_or(line);
    let body = body.strip_suffix('\r').unwrap_or(body);
    let end = &line[body.len()..];
    let trimmed = body.trim_start();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let Some(n) = trimmed[..digits].parse::<usize>().ok().filter(|n| *n > 0) else {
        return line.to_string();
    };
    let Some(content) = trimmed[digits..].strip_prefix(" |") else {
        return line.to_string();
    };
    let content = content.strip_prefix(' ').unwrap_or(content);
    let Some(&col) = secret_lines.get(&(n - 1)) else {
        return line.to_string();
    };
    let prefix = &body[..body.len() - content.len()];
    let src = source.get(n - 1).copied().unwrap_or("");
    let kept = match (content.get(..col), src.get(..col)) {
        (Some(a), Some(b)) if col > 0 && a == b => a,
        _ => "",
    };
    format!("{prefix}{kept}<redacted>{end}")
}

/// A JSON document (an error's `problems`) with [`redact_secrets`] applied to every string in
/// it.
pub fn redact_secrets_in_json(value: &serde_json::Value, text: &str) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) => Value::String(redact_secrets(s, text)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| redact_secrets_in_json(v, text))
                .collect(),
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), redact_secrets_in_json(v, text)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Checks `[cloud.app]` without the network, the way `apply` does before signing in: the secret
/// can be read, the App ID URI is well formed, the expiry is a date that has not passed. `Ok`
/// holds warnings (a secret that expires within 30 days) and the secret, read once (it is never
/// printed: [`Secret`] has no `Display` and a redacted `Debug`); `Err` is the message `apply`
/// gives (exit 2). Without `[cloud.app]`, nothing to check.
pub fn validate_app_offline(config: &Config) -> Result<OfflineApp, String> {
    let Some(app) = &config.app else {
        return Ok(OfflineApp::default());
    };
    let secret =
        crate::app_import::read_secret(app.secret_file.as_deref(), app.secret_env.as_deref())?;
    crate::app_import::check_app_id_uri(&app.app_id_uri, &app.tenant_id)?;
    let warnings = match crate::app_import::days_until(&app.secret_expiry) {
        None => {
            return Err(format!(
                "[cloud.app] secret_expiry = {:?}: expected a date YYYY-MM-DD",
                app.secret_expiry
            ));
        }
        Some(d) if d < 0 => {
            return Err(format!(
                "[cloud.app] the secret of {} expired on {}; create a new secret and update secret_expiry",
                app.name, app.secret_expiry
            ));
        }
        Some(d) if d <= 30 => vec![format!(
            "the secret of app {} expires in {d} day(s), on {}; renew it before then or syncs will fail",
            app.name, app.secret_expiry
        )],
        Some(_) => vec![],
    };
    Ok(OfflineApp {
        warnings,
        secret: Some(Secret(secret)),
    })
}

/// What [`validate_app_offline`] found.
#[derive(Debug, Default, Clone)]
pub struct OfflineApp {
    /// Things to tell the person (a secret that expires soon).
    pub warnings: Vec<String>,
    /// The imported app's secret, when `[cloud.app]` is set.
    pub secret: Option<Secret>,
}

/// A secret read from a file or the environment. It cannot be printed by accident: no
/// `Display`, and `Debug` shows `Secret(…)`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one request that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("attach.toml"), Path::new("/x"))
    }

    #[test]
    fn the_spec_example_parses() {
        let c = parse(
            r#"
[site]
path = "site"
[cloud]
environment = "usgov"
endpoint = "http://127.0.0.1:8750/"
tenant = "contoso.example"
[cloud.app]
tenant_id = "t"
client_id = "c"
name = "ConfigMgrService"
app_id_uri = "api://t/ConfigMgrService"
secret_file = "app-secret.txt"
secret_expiry = "2027-06-30"
[attach]
settings = "custom"
[features.tenant-attach]
enabled = true
upload = "PS100012"
[features.co-management]
enrollment = "pilot"
pilot_collection = "PS100020"
"#,
        )
        .unwrap();
        assert_eq!(c.environment, Environment::Usgov);
        assert_eq!(c.endpoint, Endpoint::Url("http://127.0.0.1:8750".into()));
        assert_eq!(c.site_dir, PathBuf::from("/x/site"));
        assert_eq!(c.settings, Settings::Custom);
        assert_eq!(c.features["tenant-attach"].enabled, Some(true));
        assert_eq!(c.features["tenant-attach"].options["upload"], "PS100012");
        assert_eq!(c.features["co-management"].enabled, None);
        assert_eq!(
            c.app.unwrap().secret_file,
            Some(PathBuf::from("/x/app-secret.txt"))
        );
    }

    #[test]
    fn errors_name_the_key_and_where() {
        let cases: &[(&str, &[&str])] = &[
            (
                "[cloud]\nenvironment = \"mars\"\n",
                &["line 2", "mars", "public", "usgov", "china"],
            ),
            (
                "[cloud]\nregion = \"x\"\n",
                &["line 2", "region", "environment"],
            ),
            (
                "[attach]\nsettings = \"fast\"\n",
                &["fast", "default", "custom"],
            ),
            (
                "[cloud]\nendpoint = \"ftp://x\"\n",
                &["endpoint", "ftp://x", "embedded"],
            ),
            (
                "[features.tenant-attach]\nenabled = \"yes\"\n",
                &["[features.tenant-attach] enabled", "true or false"],
            ),
            ("[sitee]\npath = \"x\"\n", &["sitee"]),
            (
                "[cloud.app]\ntenant_id=\"t\"\nclient_id=\"c\"\nname=\"n\"\napp_id_uri=\"u\"\nsecret_expiry=\"2027-01-01\"\n",
                &["secret_file or secret_env"],
            ),
            ("[site\n", &["line 1"]),
        ];
        for (text, needles) in cases {
            let msg = parse(text).unwrap_err().to_string();
            for n in *needles {
                assert!(msg.contains(n), "{text:?}: message {msg:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn secret_like_keys() {
        for key in [
            "secret",
            "client_secret",
            "Client-Secret",
            "password",
            "db_passwd",
            "token",
            "API_TOKEN",
            "refresh-token",
            "credentials",
            "apikey",
            "private_key",
            "\"password\"",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "secret_file",
            "secret_env",
            "secret_expiry",
            "tenant",
            "upload",
            "enabled",
            "app_id_uri",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    /// A secret of 3 characters is no less secret: wherever the error is, the line the message
    /// quotes shows its key and `<redacted>`, and no other part of the message shows the value;
    /// the line number and the key are still there.
    #[test]
    fn no_error_shows_a_short_secret() {
        let s = "k~9";
        let cases: Vec<(String, &[&str])> = vec![
            // A syntax error on the secret's own line.
            (
                format!("[cloud.app]\nclient_secret = \"{s}\n"),
                &["line 2", "client_secret = <redacted>"],
            ),
            // A syntax error on the line after it.
            (
                format!("[cloud]\ntoken = \"{s}\"\ntenant = \n"),
                &["line 3", "tenant"],
            ),
            // An unknown key beside it, and the secret's own key unknown.
            (
                format!("[cloud]\nregion = 1\npassword = \"{s}\"\n"),
                &["line 3", "password = <redacted>"],
            ),
            (
                format!("[cloud]\nregion = {{ token = \"{s}\" }}\n"),
                &[
                    "line 2",
                    "region = { token = <redacted>",
                    "unknown field `region`",
                ],
            ),
            (
                format!("[cloud]\ntenant = \"x\"\nclient_secret = \"{s}\"\n"),
                &["line 3", "client_secret = <redacted>", "secret_file"],
            ),
            // The wrong type for the secret's key itself (serde quotes the value).
            (
                format!("[features]\ntoken = \"{s}\"\n"),
                &["line 2", "token = <redacted>", "expected a map"],
            ),
            (
                "[features]\napi_key = 987\n".into(),
                &["line 2", "api_key = <redacted>"],
            ),
            // A bare value, an inline table, a multi-line string.
            (
                format!("[cloud]\npassword = {s}\n"),
                &["line 2", "password = <redacted>"],
            ),
            (
                format!("[cloud]\nx = {{ api_key = \"{s}\" }}\n"),
                &["line 2", "api_key = <redacted>"],
            ),
            (
                format!("[cloud]\nprivate_key = \"\"\"\n{s}\n\"\"\"\nregion = 1\n"),
                &["line 2", "private_key"],
            ),
        ];
        for (text, needles) in &cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(!msg.contains(s), "{text:?}: {msg}");
            assert!(!msg.contains("987"), "{text:?}: {msg}");
            for n in *needles {
                assert!(msg.contains(n), "{text:?}: message {msg:?} lacks {n:?}");
            }
        }
        // A message from elsewhere (a plugin's check of its options) and a quoted line of a
        // value that spans lines.
        let text = format!("[features.x]\napi_token = \"{s}\"\nlong_secret = [\n  \"{s}\",\n]\n");
        let msg = format!(
            "[features.x] api_token = \"{s}\": expected an integer; line 4 quoted:\n4 |   \"{s}\",\n"
        );
        let out = redact_secrets(&msg, &text);
        assert!(!out.contains(s), "{out}");
        assert!(out.contains("api_token = <redacted>: expected"), "{out}");
        assert!(out.contains("line 4 quoted:\n4 | <redacted>\n"), "{out}");
        // A value that is part of a word or a number elsewhere is left alone there.
        let text = "[cloud]\ntoken = \"12\"\n";
        assert_eq!(
            redact_secrets("line 12, column 3: a 12-byte key", text),
            "line 12, column 3: a 12-byte key"
        );
    }

    #[test]
    fn no_error_shows_a_secret_value() {
        let s = "s3cr3t-Value-42";
        let cases = [
            format!("[cloud.app]\nclient_secret = \"{s}\"\n"),
            format!("[cloud]\ntoken = '{s}'\n"),
            format!("[cloud]\npassword = \"{s}\n"),
            format!("[cloud]\npassword = \"{s}\"\ntenant = [\n"),
            format!("[cloud]\nx = {{ api_key = \"{s}\" }}\n"),
            format!("[cloud]\nprivate_key = \"\"\"\n{s}\n\"\"\"\nregion = 1\n"),
            format!("[attach]\nsettings = \"fast\"\npassword = \"{s}\"\n"),
        ];
        for text in &cases {
            let msg = parse(text).unwrap_err().to_string();
            assert!(!msg.contains(s), "{text:?}: {msg}");
        }
    }
}

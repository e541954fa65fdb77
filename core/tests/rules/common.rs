//! Shared helpers of core's table tests (`selection.rs`, `planning.rs`, `checking.rs`): the
//! registry of the five built-in plugins, configurations parsed from text, copies of the
//! hand-written `small-site` fixture, a reporter that records, compact renderings of problems,
//! and the table runner that compares each case's rendering with its expected text.
#![allow(dead_code)]

// Link the built-in plugins so that `Registry::with_static_plugins` finds their registrations.
use cloudattach_plugin_co_management as _;
use cloudattach_plugin_defender_reporting as _;
use cloudattach_plugin_endpoint_analytics as _;
use cloudattach_plugin_rbac_authority as _;
use cloudattach_plugin_tenant_attach as _;

use cloudattach_core::report::{Progress, Reporter};
use cloudattach_core::{Config, Problem, Registry, SelectionError};
use cloudattach_sdk::{Options, SyncStats};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The five built-in plugins.
pub fn registry() -> Registry {
    Registry::with_static_plugins().expect("the built-in plugins register")
}

/// `attach.toml` text parsed as if it were `base_dir/attach.toml`.
pub fn parse_config(text: &str, base_dir: &Path) -> Result<Config, String> {
    Config::parse(text, &base_dir.join("attach.toml"), base_dir).map_err(|e| e.to_string())
}

/// The hand-written site of the CLI's tests (`cli/tests/fixtures/small-site`, its counts worked
/// out in its README): 16 devices, 14 with a client, collections PS100100–PS100104.
pub fn small_site_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/fixtures/small-site")
}

/// A copy of `small-site` in `dir/site` with `site.toml` keys replaced by the `key = value`
/// lines of `overrides` (e.g. `version = "2107"`).
pub fn small_site(dir: &Path, overrides: &str) -> PathBuf {
    let to = dir.join("site");
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(small_site_fixture()).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    let path = to.join("site.toml");
    let mut text = fs::read_to_string(&path).unwrap();
    for line in overrides.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let key = line.split('=').next().unwrap().trim();
        let mut found = false;
        text = text
            .lines()
            .map(|l| {
                if l.split('=').next().is_some_and(|k| k.trim() == key) {
                    found = true;
                    line.to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n";
        assert!(found, "site.toml has no `{key}`");
    }
    fs::write(&path, text).unwrap();
    to
}

/// Every file and directory under `dir`, relative, with the files' contents (`None` for a
/// directory, so that an empty directory created counts as a change too).
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// A reporter that keeps the warnings and messages it is given, as `warning: …` / `say: …`.
#[derive(Default)]
pub struct Recorder(Mutex<Vec<String>>);

impl Recorder {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Reporter for Recorder {
    fn say(&self, message: &str) {
        self.0.lock().unwrap().push(format!("say: {message}"));
    }
    fn warn(&self, message: &str) {
        self.0.lock().unwrap().push(format!("warning: {message}"));
    }
    fn progress(&self, _channel: &str, _expected: Option<u64>) -> Box<dyn Progress> {
        Box::new(NoProgress)
    }
}

struct NoProgress;

impl Progress for NoProgress {
    fn advance(&self, _n: u64) {}
    fn finish(&self, _stats: &SyncStats) {}
}

/// A serde enum as the identifier it serializes to (`"invalid-option"`, `"pass"`).
pub fn ident(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v).unwrap() {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// One problem as `error[kind] feature.key: <message; hint>` — the text after `error[…] …: ` is
/// exactly what the CLI prints after `error: `.
pub fn render_problem(p: &Problem) -> String {
    let mut out = format!("error[{}]", ident(p.kind));
    if let Some(f) = &p.feature {
        out.push(' ');
        out.push_str(f);
        if let Some(k) = &p.key {
            out.push('.');
            out.push_str(k);
        }
    }
    out.push_str(": ");
    out.push_str(&p.to_string());
    out
}

/// Every problem, one line each, in the order found. Also asserts what every problem line the
/// CLI prints must hold: one line, naming its `[features.x]` table once.
pub fn render_problems(e: &SelectionError) -> Vec<String> {
    assert_eq!(
        e.to_string().lines().count(),
        e.problems.len(),
        "one line per problem: {e}"
    );
    for p in &e.problems {
        assert_names_its_table_once(&p.to_string());
    }
    e.problems.iter().map(render_problem).collect()
}

/// A message names the `[features.x]` table it is about once ("[features.x]: [features.x] …"
/// reads badly).
pub fn assert_names_its_table_once(line: &str) {
    if let Some(start) = line.find("[features.") {
        let end = line[start..]
            .find(']')
            .map_or(line.len(), |j| start + j + 1);
        let table = &line[start..end];
        assert_eq!(
            line.matches(table).count(),
            1,
            "{table} named twice: {line}"
        );
    }
}

/// Options as `{key=value, …}`: strings bare, other values as JSON; empty as nothing.
pub fn render_options(o: &Options) -> String {
    if o.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = o
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!(" {{{}}}", parts.join(", "))
}

/// Removes the common leading indentation and the first and last blank lines, as expect-test's
/// `expect![[…]]` does, so expected text can be indented with the code.
pub fn trim_indent(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let end = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    let lines = &lines[start..end.max(start)];
    let indent = lines
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            if l.len() >= indent {
                &l[indent..]
            } else {
                l.trim()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a table: renders every case, prints every mismatch (expected, then actual) to stderr,
/// then fails on the first one with `assert_eq!`. `name` and `expected` pick a case's fields.
pub fn check_table<C>(
    cases: &[C],
    name: impl Fn(&C) -> &str,
    expected: impl Fn(&C) -> &str,
    render: impl Fn(&C) -> String,
) {
    let mut names = std::collections::BTreeSet::new();
    let mut first: Option<(String, String, String)> = None;
    let mut failed = 0;
    for case in cases {
        let n = name(case);
        assert!(names.insert(n.to_string()), "two cases are named {n:?}");
        let want = trim_indent(expected(case));
        let got = render(case);
        if got != want {
            failed += 1;
            eprintln!("---- case `{n}`\n-- expected:\n{want}\n-- actual:\n{got}\n");
            first.get_or_insert((n.to_string(), want, got));
        }
    }
    if let Some((n, want, got)) = first {
        assert_eq!(
            got,
            want,
            "case `{n}` ({failed} of {} cases differ; each is printed above)",
            cases.len()
        );
    }
}

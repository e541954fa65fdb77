//! End-to-end tests of the commands that need no cloud: `plugins list`, `check`, `plan` and
//! `site generate` (docs/domain.md, docs/user-guide.md#commands). Every test runs the real binary in its own temporary
//! directory and asserts what a user or a script would see: exit codes, stdout documents,
//! stderr messages, and the files left behind.
//!
//! The rules behind what the commands decide — selection (settings, environment and version
//! gates, the China rules, dependencies, options), the plan's steps and `check`'s results — are
//! table tests in core (`core/tests/rules/selection.rs`, `planning.rs`, `checking.rs`); here is only
//! what the binary itself adds: exit codes, rendering, JSON documents, flags, colour, the demo,
//! init, site generate and the plugin listing.
//!
//! Co-management eligibility is recomputed here from `devices.jsonl` with an independent
//! implementation of the rules of docs/domain.md#co-management-eligibility ([`classify`]), never with the product's code.

use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// What one run of the binary did.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The whole of stdout as exactly one JSON document (trailing text is an error).
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    fn stderr_has(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// The binary, run in `cwd`, with no colour or log settings inherited from the caller.
fn cli(cwd: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::cargo::cargo_bin_cmd!("cloudattach");
    cmd.current_dir(cwd)
        .env_remove("NO_COLOR")
        .env_remove("CLOUDATTACH_LOG")
        .env_remove("RUST_LOG")
        .timeout(std::time::Duration::from_secs(60));
    cmd
}

fn run_cmd(mut cmd: assert_cmd::Command, args: &[&str]) -> Run {
    let out = cmd.args(args).output().expect("run cloudattach");
    Run {
        code: out.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(out.stdout).expect("utf-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("utf-8 stderr"),
    }
}

fn run(cwd: &Path, args: &[&str]) -> Run {
    run_cmd(cli(cwd), args)
}

// ---------------------------------------------------------------------------------------------
// Sites and configurations
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A copy of a fixture site in `dir/site`, so a test may edit it.
fn copy_fixture(name: &str, dir: &Path) -> PathBuf {
    let to = dir.join("site");
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// `site generate --devices 300 --seed 7 --out dir/site`, then `version` set in site.toml.
fn generated_site(dir: &Path, version: &str) -> PathBuf {
    let r = run(
        dir,
        &[
            "site",
            "generate",
            "--devices",
            "300",
            "--seed",
            "7",
            "--out",
            "site",
        ],
    );
    r.expect_code(0);
    let site = dir.join("site");
    set_site_key(&site, "version", &format!("\"{version}\""));
    site
}

/// Replaces `key = ...` in site.toml.
fn set_site_key(site: &Path, key: &str, value: &str) {
    let path = site.join("site.toml");
    let text = fs::read_to_string(&path).unwrap();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.split('=').next().is_some_and(|k| k.trim() == key) {
                found = true;
                format!("{key} = {value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(found, "site.toml has no `{key}`:\n{text}");
    fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// Writes `dir/attach.toml` and returns its path as a string.
fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("attach.toml");
    fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

/// A generated site at `version` in a fresh directory with `attach.toml` = `config`.
fn setup(version: &str, config: &str) -> (TempDir, String) {
    let dir = TempDir::new().unwrap();
    generated_site(dir.path(), version);
    let cfg = write_config(dir.path(), config);
    (dir, cfg)
}

fn plan_json(dir: &Path, cfg: &str) -> Value {
    let r = run(dir, &["--config", cfg, "plan", "--output", "json"]);
    r.expect_code(0);
    r.json()
}

fn check_json(dir: &Path, cfg: &str, ids: &[&str], code: i32) -> Value {
    let mut args = vec!["--config", cfg, "check", "--output", "json"];
    args.extend_from_slice(ids);
    let r = run(dir, &args);
    r.expect_code(code);
    r.json()
}

fn step<'a>(plan: &'a Value, plugin: &str) -> &'a Value {
    plan["steps"]
        .as_array()
        .expect("steps is an array")
        .iter()
        .find(|s| s["plugin"] == plugin)
        .unwrap_or_else(|| panic!("no step for {plugin} in {plan:#}"))
}

fn plugin_result<'a>(check: &'a Value, id: &str) -> &'a Value {
    check["plugins"]
        .as_array()
        .expect("plugins is an array")
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("no result for {id} in {check:#}"))
}

/// Every file under `dir`, relative, with its contents.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// An independent implementation of co-management eligibility (docs/domain.md#co-management-eligibility)
// ---------------------------------------------------------------------------------------------

const CLASSES: [&str; 5] = [
    "comanaged",
    "eligible",
    "eligibleButNotAzureAdJoined",
    "needsOsUpdate",
    "ineligible",
];

/// "10.0.19045.3693" → [10, 0, 19045, 3693].
fn dotted(s: &str) -> Option<Vec<u64>> {
    s.split('.').map(|p| p.parse().ok()).collect()
}

/// Numeric, part by part; missing parts are 0.
fn cmp_dotted(a: &[u64], b: &[u64]) -> Ordering {
    (0..a.len().max(b.len()))
        .map(|i| {
            a.get(i)
                .copied()
                .unwrap_or(0)
                .cmp(&b.get(i).copied().unwrap_or(0))
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

fn classify(d: &Value) -> &'static str {
    let client = d["client"].as_bool().unwrap();
    if client && d["mdm_enrolled"].as_bool().unwrap() {
        return "comanaged";
    }
    let os = d["os"].as_str().unwrap();
    let build = dotted(d["os_build"].as_str().unwrap());
    let windows_10_or_11 = os == "Microsoft Windows NT Workstation 10.0"
        && build
            .as_deref()
            .is_some_and(|b| b.len() >= 3 && b[0] == 10 && b[1] == 0);
    let client_ok = client
        && d["client_version"]
            .as_str()
            .and_then(dotted)
            .is_some_and(|v| cmp_dotted(&v, &[5, 0, 8577]).is_ge());
    let join = d["join_type"].as_str().unwrap();
    if !client_ok
        || os.contains("Server")
        || !windows_10_or_11
        || join == "registered"
        || join == "workgroup"
    {
        return "ineligible";
    }
    if cmp_dotted(build.as_deref().unwrap(), &[10, 0, 16299]).is_lt() {
        return "needsOsUpdate";
    }
    if join == "domain" {
        return "eligibleButNotAzureAdJoined";
    }
    "eligible"
}

/// Whether a parsed line has every required field with the right type.
fn is_valid_device(d: &Value) -> bool {
    d["resource_id"].is_i64()
        && d["name"].is_string()
        && d["client"].is_boolean()
        && d["client_active"].is_boolean()
        && d["os"].is_string()
        && d["os_build"].is_string()
        && d["join_type"].is_string()
        && d["mdm_enrolled"].is_boolean()
}

/// The valid devices of a devices.jsonl (bad lines skipped, as docs/domain.md#skipped-device-lines says).
fn read_devices(site: &Path) -> Vec<Value> {
    fs::read_to_string(site.join("devices.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(is_valid_device)
        .collect()
}

/// Counts per class (every class present).
fn expected_eligibility(site: &Path) -> BTreeMap<String, u64> {
    let mut counts: BTreeMap<String, u64> = CLASSES.iter().map(|c| (c.to_string(), 0)).collect();
    for d in read_devices(site) {
        *counts.get_mut(classify(&d)).unwrap() += 1;
    }
    counts
}

fn eligibility_of(check: &Value) -> BTreeMap<String, u64> {
    let e = plugin_result(check, "co-management")["eligibility"]
        .as_object()
        .unwrap_or_else(|| panic!("co-management has no eligibility object: {check:#}"));
    e.iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap()))
        .collect()
}

#[test]
fn the_independent_classifier_agrees_with_spec_examples() {
    // Guards the oracle itself: a wrong classifier would make every eligibility test vacuous.
    let d = |client: bool, ver: &str, os: &str, build: &str, join: &str, mdm: bool| {
        serde_json::json!({"client": client, "client_version": ver, "os": os, "os_build": build,
                           "join_type": join, "mdm_enrolled": mdm})
    };
    let ws = "Microsoft Windows NT Workstation 10.0";
    assert_eq!(
        classify(&d(true, "5.00.9106", ws, "10.0.19045", "hybrid", true)),
        "comanaged"
    );
    assert_eq!(
        classify(&d(false, "5.00.9106", ws, "10.0.19045", "hybrid", true)),
        "ineligible"
    );
    assert_eq!(
        classify(&d(true, "5.00.8577", ws, "10.0.16299", "entra", false)),
        "eligible"
    );
    assert_eq!(
        classify(&d(
            true,
            "5.00.8576.9999",
            ws,
            "10.0.19045",
            "hybrid",
            false
        )),
        "ineligible"
    );
    assert_eq!(
        classify(&d(true, "5.00.10000", ws, "10.0.19045", "hybrid", false)),
        "eligible"
    );
    assert_eq!(
        classify(&d(true, "5.00.9106", ws, "10.0.16298.999", "domain", false)),
        "needsOsUpdate"
    );
    assert_eq!(
        classify(&d(
            true,
            "5.00.9106",
            ws,
            "10.0.22631.4317",
            "domain",
            false
        )),
        "eligibleButNotAzureAdJoined"
    );
    assert_eq!(
        classify(&d(
            true,
            "5.00.9106",
            "Microsoft Windows NT Server 10.0",
            "10.0.20348",
            "hybrid",
            false
        )),
        "ineligible"
    );
    assert_eq!(
        classify(&d(true, "5.00.9106", ws, "10.0.19045", "workgroup", false)),
        "ineligible"
    );
    // It agrees with the hand count of fixtures/small-site/README.md (the counts core's
    // `checking` table expects of co-management's check on that site).
    let want: BTreeMap<String, u64> = [
        ("comanaged", 1),
        ("eligible", 5),
        ("eligibleButNotAzureAdJoined", 1),
        ("needsOsUpdate", 2),
        ("ineligible", 7),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(expected_eligibility(&fixture("small-site")), want);
}

// ---------------------------------------------------------------------------------------------
// plugins list
// ---------------------------------------------------------------------------------------------

#[test]
fn plugins_list_json_has_the_spec_keys_and_the_five_built_ins() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["plugins", "list", "--output", "json"]);
    r.expect_code(0);
    let list = r.json();
    let rows = list.as_array().expect("an array");
    let keys: BTreeSet<&str> = [
        "id",
        "name",
        "version",
        "origin",
        "depends_on",
        "environments",
        "min_site_version",
    ]
    .into();
    let mut by_id = BTreeMap::new();
    for row in rows {
        let obj = row.as_object().expect("an object");
        assert_eq!(
            obj.keys().map(String::as_str).collect::<BTreeSet<_>>(),
            keys,
            "keys of {row}"
        );
        assert!(row["name"].as_str().is_some_and(|s| !s.is_empty()), "{row}");
        assert!(
            row["version"].as_str().is_some_and(|s| !s.is_empty()),
            "{row}"
        );
        assert!(
            row["min_site_version"].is_string(),
            "min_site_version is a string: {row}"
        );
        assert!(
            by_id
                .insert(row["id"].as_str().unwrap().to_string(), row.clone())
                .is_none(),
            "duplicate {row}"
        );
    }
    // The table of docs/domain.md#cloud-features: id, depends on, environments, min site version.
    let table: [(&str, &[&str], &[&str], &str); 5] = [
        ("tenant-attach", &[], &["public", "usgov"], "2002"),
        (
            "endpoint-analytics",
            &["tenant-attach"],
            &["public", "usgov"],
            "2002",
        ),
        (
            "rbac-authority",
            &["tenant-attach"],
            &["public", "usgov"],
            "2207",
        ),
        (
            "defender-reporting",
            &["tenant-attach"],
            &["public", "usgov"],
            "2303",
        ),
        ("co-management", &[], &["public", "usgov", "china"], "1710"),
    ];
    for (id, deps, envs, min) in table {
        let row = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} is not registered: {list:#}"));
        assert_eq!(row["origin"], "static", "{id}");
        let got_deps: BTreeSet<&str> = row["depends_on"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(got_deps, deps.iter().copied().collect(), "{id} depends_on");
        let got_envs: BTreeSet<&str> = row["environments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            got_envs,
            envs.iter().copied().collect(),
            "{id} environments"
        );
        assert_eq!(row["min_site_version"], min, "{id} min_site_version");
    }
}

// ---------------------------------------------------------------------------------------------
// plan (its rules: core/tests/rules/planning.rs)
// ---------------------------------------------------------------------------------------------

#[test]
fn plan_json_has_the_spec_shape_and_dependency_order() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let plan = plan_json(dir.path(), &cfg);
    let keys: BTreeSet<&str> = plan
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["environment", "settings", "site_version", "steps"].into()
    );
    assert_eq!(plan["environment"], "public");
    assert_eq!(plan["settings"], "default");
    assert_eq!(plan["site_version"], "2303");
    let steps = plan["steps"].as_array().unwrap();
    let order: Vec<&str> = steps
        .iter()
        .map(|s| s["plugin"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        [
            "co-management",
            "tenant-attach",
            "defender-reporting",
            "endpoint-analytics",
            "rbac-authority"
        ]
    );
    for s in steps {
        let obj = s.as_object().unwrap();
        for k in ["plugin", "action", "reason"] {
            assert!(obj.contains_key(k), "step lacks {k}: {s}");
        }
        assert_eq!(
            s["action"], "enable",
            "default settings at 2303 enable everything: {s}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// check (its rules: core/tests/rules/checking.rs)
// ---------------------------------------------------------------------------------------------

#[test]
fn check_json_shape_and_eligibility_match_an_independent_count() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let check = check_json(dir.path(), &cfg, &[], 0);
    let top: BTreeSet<&str> = check
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(top, ["plugins"].into());
    let plugins = check["plugins"].as_array().unwrap();
    let ids: BTreeSet<&str> = plugins.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "co-management",
            "defender-reporting",
            "endpoint-analytics",
            "rbac-authority",
            "tenant-attach"
        ]
        .into()
    );
    for p in plugins {
        assert!(
            ["pass", "warn", "fail", "unsupported"].contains(&p["status"].as_str().unwrap()),
            "{p}"
        );
        for f in p["findings"].as_array().expect("findings array") {
            let keys: BTreeSet<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
            assert_eq!(keys, ["code", "message", "severity"].into(), "{f}");
            assert!(
                ["info", "warning", "error"].contains(&f["severity"].as_str().unwrap()),
                "{f}"
            );
        }
    }
    let site = dir.path().join("site");
    let got = eligibility_of(&check);
    let want = expected_eligibility(&site);
    assert_eq!(
        got.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        CLASSES.into()
    );
    assert_eq!(got, want);
    assert_eq!(got.values().sum::<u64>(), read_devices(&site).len() as u64);
    assert_eq!(read_devices(&site).len(), 300);
}

// ---------------------------------------------------------------------------------------------
// Configuration errors (the messages of each: core/tests/rules/selection.rs)
// ---------------------------------------------------------------------------------------------

/// Both kinds of configuration error — one in attach.toml itself, one the selection finds —
/// exit 2 from plan and check with every line on stderr as `error: …`, nothing on stdout and
/// no state.
#[test]
fn config_errors_exit_2_and_name_the_key_and_what_is_allowed() {
    let site = format!("[site]\npath = '{}'\n", fixture("small-site").display());
    // (what, attach.toml, the stderr must contain all of these)
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "unknown key in [cloud]",
            format!("[cloud]\nregion = \"x\"\n{site}"),
            vec!["error: ", "region", "line 2", "environment"],
        ),
        (
            "unknown option key",
            format!(
                "{site}[attach]\nsettings = \"custom\"\n[features.tenant-attach]\nuploads = \"all\"\n"
            ),
            vec!["error: ", "uploads", "[features.tenant-attach]", "upload"],
        ),
    ];
    for (what, text, needles) in cases {
        let dir = TempDir::new().unwrap();
        let cfg = write_config(dir.path(), &text);
        for cmd in ["plan", "check"] {
            let r = run(dir.path(), &["--config", &cfg, cmd]);
            assert_eq!(
                r.code, 2,
                "{what} ({cmd}): exit code; stderr:\n{}",
                r.stderr
            );
            for n in &needles {
                assert!(
                    r.stderr.contains(n),
                    "{what} ({cmd}): stderr lacks {n:?}:\n{}",
                    r.stderr
                );
            }
            assert!(r.stdout.is_empty(), "{what} ({cmd}): stdout:\n{}", r.stdout);
        }
        assert!(
            !dir.path().join(".cloudattach").exists(),
            "{what}: state was written"
        );
        // Each message names its table once ("[features.x]: [features.x] ..." reads badly).
        for line in run(dir.path(), &["--config", &cfg, "plan"]).stderr.lines() {
            if let Some(start) = line.find("[features.") {
                let end = line[start..]
                    .find(']')
                    .map_or(line.len(), |j| start + j + 1);
                let table = &line[start..end];
                assert_eq!(
                    line.matches(table).count(),
                    1,
                    "{what}: {table} named twice: {line}"
                );
            }
        }
    }
}

#[test]
fn a_missing_config_file_is_exit_2_naming_it() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["--config", "missing-attach.toml", "plan"]);
    r.expect_code(2).stderr_has(&["missing-attach.toml"]);
    assert!(r.stdout.is_empty());
    assert!(
        fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written (no demo fallback)"
    );
}

// ---------------------------------------------------------------------------------------------
// Inventory errors
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_device_lines_are_reported_with_line_numbers_and_skipped() {
    let dir = TempDir::new().unwrap();
    let site = generated_site(dir.path(), "2303");
    let path = site.join("devices.jsonl");
    let mut lines: Vec<String> = fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[4] = "{not json".into(); // line 5
    let mut d: Value = serde_json::from_str(&lines[8]).unwrap(); // line 9
    d.as_object_mut().unwrap().remove("os");
    lines[8] = d.to_string();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");

    let r = run(dir.path(), &["--config", &cfg, "check", "--output", "json"]);
    r.expect_code(0);
    for n in [5, 9] {
        let reported = r.stderr.lines().any(|l| {
            l.contains(&format!("devices.jsonl:{n}:")) || l.contains(&format!("line {n}"))
        });
        assert!(reported, "line {n} is not reported:\n{}", r.stderr);
    }
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("missing field `os`") || (l.contains(":9:") && l.contains("os"))),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("skipped")
                && l.split(|c: char| !c.is_ascii_digit()).any(|w| w == "2")),
        "the count of skipped lines (2) is shown:\n{}",
        r.stderr
    );
    let check = r.json();
    let got = eligibility_of(&check);
    assert_eq!(got.values().sum::<u64>(), 298);
    assert_eq!(got, expected_eligibility(&site));
}

/// Fields the model does not know, at every level, keep their device: check and plan count
/// the same devices as without them, and each field is one warning with its count.
#[test]
fn devices_with_fields_the_model_does_not_know_are_kept_and_each_field_reported_once() {
    let dir = TempDir::new().unwrap();
    let site = generated_site(dir.path(), "2303");
    let path = site.join("devices.jsonl");
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    let plain_check = check_json(dir.path(), &cfg, &[], 0);
    let plain_plan = plan_json(dir.path(), &cfg);
    let text = fs::read_to_string(&path).unwrap();
    let mut with_defender = 0;
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut d: Value = serde_json::from_str(l).unwrap();
            if i % 3 == 0 {
                d["bitlocker"] = serde_json::json!({ "recovery_key_escrowed": i % 2 == 0 });
            }
            if let Some(def) = d.get_mut("defender").and_then(Value::as_object_mut) {
                def.insert("asr_mode".into(), "audit".into());
                with_defender += 1;
            }
            if let Some(apps) = d
                .pointer_mut("/analytics/apps")
                .and_then(Value::as_array_mut)
            {
                for app in apps {
                    let days = app["daily_crashes"].as_array().cloned().unwrap_or_default();
                    app["daily_crashes"] = Value::Array([vec![0.into(); 16], days].concat());
                }
            }
            d.to_string()
        })
        .collect();
    assert!(with_defender > 0);
    fs::write(&path, lines.join("\n") + "\n").unwrap();

    let r = run(dir.path(), &["--config", &cfg, "check", "--output", "json"]);
    r.expect_code(0);
    assert_eq!(eligibility_of(&r.json()), eligibility_of(&plain_check));
    let bitlocker: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.contains("\"bitlocker\""))
        .collect();
    assert_eq!(
        bitlocker.len(),
        1,
        "one warning for the field:\n{}",
        r.stderr
    );
    assert!(
        bitlocker[0].ends_with(
            "devices.jsonl: 100 devices carry the field \"bitlocker\" that cloudattach does not model; kept as extension data"
        ),
        "{}",
        r.stderr
    );
    r.stderr_has(&[
        &format!("{with_defender} devices carry the field \"defender.asr_mode\""),
        "\"analytics.apps[].daily_crashes\" with more than 14 entries",
    ]);
    assert!(!r.stderr.contains("skipped"), "{}", r.stderr);

    let r = run(dir.path(), &["--config", &cfg, "plan", "--output", "json"]);
    r.expect_code(0);
    assert_eq!(r.json(), plain_plan);
    r.stderr_has(&["100 devices carry the field \"bitlocker\""]);
}

/// Encodings a real export produces: one byte that is not UTF-8 is that line's problem only,
/// and a UTF-16 file (PowerShell 5's `Out-File`) with CRLF reads like the UTF-8 one.
#[test]
fn encoding_defects_skip_their_line_only_and_utf16_files_are_read() {
    let dir = TempDir::new().unwrap();
    let site = generated_site(dir.path(), "2303");
    let path = site.join("devices.jsonl");
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    let plain = eligibility_of(&check_json(dir.path(), &cfg, &[], 0));
    let text = fs::read_to_string(&path).unwrap();

    // A Windows-1252 "é" in the name of line 5's device.
    let mut lines: Vec<Vec<u8>> = text.lines().map(|l| l.as_bytes().to_vec()).collect();
    let removed: Value = serde_json::from_slice(&lines[4]).unwrap();
    let name = removed["name"].as_str().unwrap();
    let with_e = String::from_utf8(lines[4].clone())
        .unwrap()
        .replace(&format!("\"{name}\""), &format!("\"{name}-\u{1}\""));
    lines[4] = with_e
        .bytes()
        .map(|b| if b == 1 { 0xE9 } else { b })
        .collect();
    let mut bytes = lines.join(&b'\n');
    bytes.push(b'\n');
    fs::write(&path, bytes).unwrap();
    let r = run(dir.path(), &["--config", &cfg, "check", "--output", "json"]);
    r.expect_code(0);
    r.stderr_has(&["devices.jsonl:5: skipped: not valid UTF-8 (byte 0xE9"]);
    let got = eligibility_of(&r.json());
    assert_eq!(got.values().sum::<u64>(), plain.values().sum::<u64>() - 1);
    assert_eq!(got[classify(&removed)], plain[classify(&removed)] - 1);

    // UTF-16 LE with a byte order mark and CRLF line ends.
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in text.replace('\n', "\r\n").encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    fs::write(&path, utf16).unwrap();
    let r = run(dir.path(), &["--config", &cfg, "check", "--output", "json"]);
    r.expect_code(0);
    assert_eq!(eligibility_of(&r.json()), plain);
    assert!(!r.stderr.contains("skipped"), "{}", r.stderr);
}

#[test]
fn a_duplicate_resource_id_is_skipped_for_every_plugin_alike() {
    let dir = TempDir::new().unwrap();
    let site = copy_fixture("small-site", dir.path());
    let path = site.join("devices.jsonl");
    let mut text = fs::read_to_string(&path).unwrap();
    let first = text
        .lines()
        .next()
        .unwrap()
        .replace("HYBRID-OK", "DUPLICATE");
    text.push_str(&first);
    text.push('\n'); // line 17 repeats resource_id 100
    fs::write(&path, text).unwrap();
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");

    // plan runs the plugins one after another over the inventory: each must see 16 devices,
    // 14 of them with a client.
    let r = run(dir.path(), &["--config", &cfg, "plan", "--output", "json"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains(":17:") || r.stderr.contains("line 17"),
        "line 17 is reported:\n{}",
        r.stderr
    );
    let plan = r.json();
    let ta = step(&plan, "tenant-attach")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ta.contains("14") && !ta.contains("15"),
        "tenant-attach uploads the 14 distinct client devices: {ta}"
    );

    let check = check_json(dir.path(), &cfg, &[], 0);
    assert_eq!(eligibility_of(&check).values().sum::<u64>(), 16);
    assert_eq!(
        plugin_result(&check, "tenant-attach")["devices_in_scope"],
        14,
        "{check:#}"
    );
}

#[test]
fn a_collection_cycle_is_exit_2_naming_the_collections() {
    let dir = TempDir::new().unwrap();
    let site = copy_fixture("small-site", dir.path());
    fs::write(
        site.join("collections.json"),
        r#"[
  {"id": "PS100100", "name": "A", "members": [100], "includes": ["PS100101"], "limiting": null},
  {"id": "PS100101", "name": "B", "members": [101], "includes": [], "limiting": "PS100102"},
  {"id": "PS100102", "name": "C", "members": [102], "includes": ["PS100100"], "limiting": null},
  {"id": "PS100103", "name": "Bystander", "members": [103], "includes": [], "limiting": null}
]"#,
    )
    .unwrap();
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    for cmd in ["check", "plan"] {
        let r = run(dir.path(), &["--config", &cfg, cmd]);
        r.expect_code(2)
            .stderr_has(&["cycle", "PS100100", "PS100101", "PS100102"]);
        assert!(
            !r.stderr.contains("PS100103"),
            "the bystander is not in the cycle:\n{}",
            r.stderr
        );
    }
}

#[test]
fn an_include_of_an_unknown_collection_is_exit_2_naming_it() {
    let dir = TempDir::new().unwrap();
    let site = copy_fixture("small-site", dir.path());
    fs::write(
        site.join("collections.json"),
        r#"[{"id": "PS100100", "name": "A", "members": [100], "includes": ["PS1000FF"], "limiting": null}]"#,
    )
    .unwrap();
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    run(dir.path(), &["--config", &cfg, "check"])
        .expect_code(2)
        .stderr_has(&["PS1000FF"]);
}

// ---------------------------------------------------------------------------------------------
// site generate
// ---------------------------------------------------------------------------------------------

#[test]
fn site_generate_is_deterministic_per_seed() {
    let dir = TempDir::new().unwrap();
    for (out, seed) in [("a", "7"), ("b", "7"), ("c", "8")] {
        run(
            dir.path(),
            &[
                "site",
                "generate",
                "--devices",
                "300",
                "--seed",
                seed,
                "--out",
                out,
            ],
        )
        .expect_code(0);
    }
    let a = snapshot(&dir.path().join("a"));
    let names: BTreeSet<&str> = a.keys().map(|p| p.to_str().unwrap()).collect();
    assert_eq!(
        names,
        ["collections.json", "devices.jsonl", "site.toml"].into()
    );
    assert_eq!(a, snapshot(&dir.path().join("b")), "same seed, same files");
    let c = snapshot(&dir.path().join("c"));
    assert_ne!(
        a[Path::new("devices.jsonl")],
        c[Path::new("devices.jsonl")],
        "another seed, other devices"
    );
    // What was written is a usable site of 300 valid devices.
    assert_eq!(read_devices(&dir.path().join("a")).len(), 300);
}

#[test]
fn site_generate_refuses_to_overwrite_without_force() {
    let dir = TempDir::new().unwrap();
    run(
        dir.path(),
        &[
            "site",
            "generate",
            "--devices",
            "50",
            "--seed",
            "1",
            "--out",
            "s",
        ],
    )
    .expect_code(0);
    let before = snapshot(&dir.path().join("s"));
    let r = run(
        dir.path(),
        &[
            "site",
            "generate",
            "--devices",
            "60",
            "--seed",
            "2",
            "--out",
            "s",
        ],
    );
    r.expect_code(2);
    assert!(
        r.stderr.contains("--force"),
        "the error says how to overwrite:\n{}",
        r.stderr
    );
    assert_eq!(
        snapshot(&dir.path().join("s")),
        before,
        "the existing site is untouched"
    );
    run(
        dir.path(),
        &[
            "site",
            "generate",
            "--devices",
            "60",
            "--seed",
            "2",
            "--out",
            "s",
            "--force",
        ],
    )
    .expect_code(0);
    assert_eq!(read_devices(&dir.path().join("s")).len(), 60);
}

#[test]
fn site_generate_json_reports_what_was_written() {
    let dir = TempDir::new().unwrap();
    let r = run(
        dir.path(),
        &[
            "site",
            "generate",
            "--devices",
            "120",
            "--seed",
            "3",
            "--out",
            "s",
            "--output",
            "json",
        ],
    );
    r.expect_code(0);
    let v = r.json();
    let site = dir.path().join("s");
    let devices = read_devices(&site);
    let collections: Vec<Value> =
        serde_json::from_slice(&fs::read(site.join("collections.json")).unwrap()).unwrap();
    let bytes: u64 = snapshot(&site).values().map(|b| b.len() as u64).sum();
    assert_eq!(v["devices"], 120, "{v}");
    assert_eq!(
        v["clients"],
        devices.iter().filter(|d| d["client"] == true).count() as u64,
        "{v}"
    );
    assert_eq!(v["collections"], collections.len() as u64, "{v}");
    assert_eq!(v["bytes_written"], bytes, "{v}");
    assert!(v["out"].as_str().is_some_and(|o| o.ends_with('s')), "{v}");
}

// ---------------------------------------------------------------------------------------------
// The built-in demo, text output and JSON output
// ---------------------------------------------------------------------------------------------

#[test]
fn without_a_config_plan_uses_the_built_in_demo_and_says_so() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["plan"]);
    r.expect_code(0);
    assert!(
        r.stderr.to_lowercase().contains("demo"),
        "stderr says the demo is used:\n{}",
        r.stderr
    );
    assert!(
        r.stdout.contains("Summary"),
        "stdout has the Summary page:\n{}",
        r.stdout
    );
    for id in [
        "co-management",
        "tenant-attach",
        "defender-reporting",
        "endpoint-analytics",
        "rbac-authority",
    ] {
        assert!(
            r.stdout.contains(id),
            "the Summary lists {id}:\n{}",
            r.stdout
        );
    }
    assert!(
        !r.stdout.contains("demo"),
        "the demo notice is on stderr, not stdout:\n{}",
        r.stdout
    );
}

#[test]
fn text_output_has_no_ansi_escapes_on_a_pipe() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    for args in [&["plan"][..], &["check"], &["plugins", "list"]] {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        let r = run(dir.path(), &all);
        r.expect_code(0);
        assert!(!r.stdout.is_empty(), "{args:?}: no output");
        assert!(
            !r.stdout.contains('\x1b'),
            "{args:?}: ANSI escape in stdout:\n{}",
            r.stdout
        );
        assert!(
            !r.stderr.contains('\x1b'),
            "{args:?}: ANSI escape in stderr:\n{}",
            r.stderr
        );
    }
}

/// On a terminal (a pty from util-linux `script`) text output is coloured, and NO_COLOR turns
/// the colour off. Skipped where `script` is not available.
#[test]
fn text_output_on_a_terminal_is_coloured_unless_no_color() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: util-linux `script` is not available to provide a terminal");
        return;
    }
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let bin = env!("CARGO_BIN_EXE_cloudattach");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    for args in [&["plan"][..], &["check"], &["plugins", "list"]] {
        let mut line = format!("{} --config {}", quote(bin), quote(&cfg));
        for a in args {
            line.push(' ');
            line.push_str(a);
        }
        for no_color in [false, true] {
            let mut cmd = std::process::Command::new("script");
            cmd.args(["-qec", &line, "/dev/null"])
                .current_dir(dir.path())
                .env_remove("NO_COLOR")
                .env_remove("CLOUDATTACH_LOG")
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::null());
            if no_color {
                cmd.env("NO_COLOR", "1");
            }
            let out = cmd.output().expect("run script");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{args:?}: {text}");
            assert!(
                text.contains("tenant-attach"),
                "{args:?}: no output: {text}"
            );
            assert_eq!(
                text.contains("\x1b["),
                !no_color,
                "{args:?} NO_COLOR={no_color}: colour on a terminal must follow NO_COLOR:\n{text}"
            );
        }
    }
}

#[test]
fn json_output_is_exactly_one_document_with_messages_on_stderr() {
    let dir = TempDir::new().unwrap();
    let site = generated_site(dir.path(), "2303");
    // A bad line makes the commands print warnings: they must go to stderr.
    let mut text = fs::read_to_string(site.join("devices.jsonl")).unwrap();
    text.push_str("garbage\n");
    fs::write(site.join("devices.jsonl"), text).unwrap();
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    for args in [
        &["plan"][..],
        &["check"],
        &["check", "co-management"],
        &["plugins", "list"],
    ] {
        let mut all = vec!["--config", cfg.as_str(), "--output", "json"];
        all.extend_from_slice(args);
        let r = run(dir.path(), &all);
        r.expect_code(0);
        let v = r.json(); // panics unless the whole stdout is one JSON document
        assert!(v.is_object() || v.is_array(), "{args:?}: {v}");
        if args[0] != "plugins" {
            assert!(
                r.stderr.contains("skipped"),
                "{args:?}: the skipped line is reported on stderr:\n{}",
                r.stderr
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// [cloud.app] is checked offline by check and plan
// ---------------------------------------------------------------------------------------------

/// The UTC date `days` from today, as YYYY-MM-DD (civil-from-days, H. Hinnant).
fn date_in(days: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let z = now / 86_400 + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

const APP_TENANT_ID: &str = "c0257050-0000-4000-8000-000000000001";
const APP_SECRET: &str = "s3cret-never-printed";

fn app_config(secret: &str, uri: &str, expiry: &str) -> String {
    format!(
        "[site]\npath = \"site\"\n[cloud.app]\ntenant_id = \"{APP_TENANT_ID}\"\n\
         client_id = \"00000000-0000-4000-8000-0000000000aa\"\nname = \"ConfigMgrService\"\n\
         app_id_uri = \"{uri}\"\n{secret}\nsecret_expiry = \"{expiry}\"\n"
    )
}

#[test]
fn check_and_plan_refuse_a_broken_imported_app_like_apply_and_warn_of_expiry() {
    let good_uri = format!("api://{APP_TENANT_ID}/ConfigMgrService");
    let far = date_in(400);
    let cases: Vec<(String, &str)> = vec![
        (
            app_config("secret_file = \"app-secret.txt\"", &good_uri, "2027-13-45"),
            "secret_expiry = \"2027-13-45\"",
        ),
        (
            app_config("secret_file = \"no-such-secret.txt\"", &good_uri, &far),
            "secret_file",
        ),
        (
            app_config(
                "secret_env = \"CLOUDATTACH_TEST_UNSET_SECRET\"",
                &good_uri,
                &far,
            ),
            "CLOUDATTACH_TEST_UNSET_SECRET is not set",
        ),
        (
            app_config("secret_file = \"app-secret.txt\"", &good_uri, "2020-01-01"),
            "expired on 2020-01-01",
        ),
        (
            app_config("secret_file = \"app-secret.txt\"", "ftp://x", &far),
            "app_id_uri = \"ftp://x\"",
        ),
    ];
    for (text, needle) in &cases {
        let (dir, cfg) = setup("2303", text);
        fs::write(dir.path().join("app-secret.txt"), APP_SECRET).unwrap();
        for cmd in ["check", "plan"] {
            let r = run(dir.path(), &["--config", &cfg, cmd]);
            r.expect_code(2).stderr_has(&["error: ", needle]);
            assert!(r.stdout.is_empty(), "{cmd}: stdout {:?}", r.stdout);
            assert!(!r.stderr.contains(APP_SECRET), "{cmd} printed the secret");
            assert!(
                !dir.path().join(".cloudattach").exists(),
                "{cmd} left state behind"
            );
        }
    }
    // A secret that expires within 30 days is a warning of check; check still passes.
    let soon = date_in(10);
    let (dir, cfg) = setup(
        "2303",
        &app_config("secret_file = \"app-secret.txt\"", &good_uri, &soon),
    );
    fs::write(dir.path().join("app-secret.txt"), APP_SECRET).unwrap();
    let r = run(dir.path(), &["--config", &cfg, "check"]);
    r.expect_code(0)
        .stderr_has(&["warning: ", "expires in 10 day(s)", &soon]);
    assert!(!r.stderr.contains(APP_SECRET));
}

#[test]
fn detach_without_a_terminal_names_detach_yes() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let r = run(dir.path(), &["--config", &cfg, "detach"]);
    r.expect_code(2)
        .stderr_has(&["detach cannot ask", "`cloudattach detach --yes`"]);
    assert!(!r.stderr.contains("apply"), "{}", r.stderr);
}

#[test]
fn plan_never_creates_state() {
    for (config, code) in [
        ("[site]\npath = \"site\"\n", 0),
        (
            "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n\
             [features.tenant-attach]\nupload = \"PS1NOPE1\"\n",
            2,
        ),
    ] {
        let (dir, cfg) = setup("2303", config);
        let r = run(dir.path(), &["--config", &cfg, "plan"]);
        r.expect_code(code);
        assert!(
            !dir.path().join(".cloudattach/state.db").exists(),
            "plan (exit {}) created .cloudattach/state.db",
            r.code
        );
    }
}

// ---------------------------------------------------------------------------------------------
// init
// ---------------------------------------------------------------------------------------------

#[test]
fn init_warns_of_custom_flags_it_ignores_and_reports_json() {
    let dir = TempDir::new().unwrap();
    generated_site(dir.path(), "2303");
    // Custom-only flags under default settings are ignored, with a warning naming them.
    let r = run(
        dir.path(),
        &[
            "--output",
            "json",
            "init",
            "--no-input",
            "--settings",
            "default",
            "--upload",
            "PS100012",
            "--defender-reporting",
            "false",
        ],
    );
    r.expect_code(0)
        .stderr_has(&["warning: ", "--upload, --defender-reporting", "ignored"]);
    let v = r.json();
    assert_eq!(v["written"], "attach.toml", "{v}");
    assert_eq!(v["settings"], "default", "{v}");
    assert_eq!(v["environment"], "public", "{v}");
    let text = fs::read_to_string(dir.path().join("attach.toml")).unwrap();
    assert!(!text.contains("PS100012"), "{text}");

    // China with custom settings: device upload isn't available, so asking for it is refused
    // at once, as plan would refuse the file, and nothing is written.
    let before = fs::read_to_string(dir.path().join("attach.toml")).unwrap();
    let r = run(
        dir.path(),
        &[
            "--output",
            "json",
            "init",
            "--no-input",
            "--force",
            "--environment",
            "china",
            "--settings",
            "custom",
            "--upload",
            "all",
        ],
    );
    r.expect_code(2).stderr_has(&[
        "error: ",
        "--upload all",
        "can't be enabled for Azure China Cloud",
    ]);
    // With --output json the error is also the one document on stdout.
    assert_eq!(r.json()["error"]["code"], "input", "{}", r.stdout);
    assert_eq!(
        fs::read_to_string(dir.path().join("attach.toml")).unwrap(),
        before
    );

    // Without --output json, stdout stays empty.
    let r = run(dir.path(), &["init", "--no-input", "--force"]);
    r.expect_code(0);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
}

#[test]
fn disable_of_an_unknown_id_lists_the_known_ones() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let r = run(dir.path(), &["--config", &cfg, "disable", "nosuch"]);
    r.expect_code(2).stderr_has(&["`nosuch`", "known plugins:"]);
    for id in [
        "co-management",
        "defender-reporting",
        "endpoint-analytics",
        "rbac-authority",
        "tenant-attach",
    ] {
        assert!(r.stderr.contains(id), "{id} not listed:\n{}", r.stderr);
    }
}

#[test]
fn help_describes_the_tool_for_users() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["--help"]);
    r.expect_code(0);
    assert!(
        r.stdout
            .starts_with("Attach a Configuration Manager site to a cloud tenant"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("no domain logic"), "{}", r.stdout);
}

#[test]
fn text_tables_have_no_trailing_spaces_and_check_pads_to_the_longest_id() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    for args in [&["plan"][..], &["check"], &["plugins", "list"]] {
        let mut all = vec!["--config", cfg.as_str()];
        all.extend_from_slice(args);
        let r = run(dir.path(), &all);
        r.expect_code(0);
        for line in r.stdout.lines() {
            assert_eq!(line, line.trim_end(), "{args:?}: trailing spaces: {line:?}");
        }
    }
    let r = run(dir.path(), &["--config", &cfg, "check"]);
    let longest = "defender-reporting".len();
    let heads: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.is_empty())
        .collect();
    assert_eq!(heads.len(), 5, "{}", r.stdout);
    for l in heads {
        // The status word starts two columns after the longest id.
        let status = &l[longest + 2..];
        assert!(
            ["pass", "warn", "fail", "unsupported"].contains(&status),
            "{l:?} in:\n{}",
            r.stdout
        );
    }
}

/// `init --sign-in`: the wizard's sign-in page against the embedded cloud checks the account
/// and caches the tokens, so the apply that follows asks no one to sign in; a tenant the
/// embedded cloud does not have is an input error naming the ones it has.
#[test]
fn init_signs_in_to_check_the_account() {
    let dir = TempDir::new().unwrap();
    generated_site(dir.path(), "2303");
    let r = run(dir.path(), &["init", "--no-input", "--sign-in"]);
    r.expect_code(0)
        .stderr_has(&["admin@contoso.example is a Global Administrator with an Intune license"]);
    assert!(dir.path().join(".cloudattach/tokens.json").is_file());
    let r = run(dir.path(), &["apply", "--yes"]);
    r.expect_code(0);
    assert!(
        !r.stderr.contains("devicelogin"),
        "apply asked to sign in again:\n{}",
        r.stderr
    );

    let r = run(
        dir.path(),
        &[
            "init",
            "--no-input",
            "--sign-in",
            "--force",
            "--tenant",
            "nowhere.example",
        ],
    );
    r.expect_code(2)
        .stderr_has(&["nowhere.example", "contoso.example and fabrikam.example"]);
}

/// `check` and `plan` agree on what is valid, and one run lists every conflict: version
/// conflicts, an upload collection and a pilot collection the site does not have, at once, and
/// the same in both (exit 2, nothing written).
#[test]
fn check_and_plan_refuse_the_same_configuration_with_every_conflict_at_once() {
    let (dir, cfg) = setup(
        "2207",
        "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n\
         [features.tenant-attach]\nupload = \"PS1FFFFF\"\n\
         [features.defender-reporting]\n\
         [features.co-management]\nenrollment = \"pilot\"\npilot_collection = \"PS1000FF\"\n",
    );
    let before = snapshot(dir.path());
    let check = run(dir.path(), &["--config", &cfg, "check"]);
    check.expect_code(2);
    let plan = run(dir.path(), &["--config", &cfg, "plan"]);
    plan.expect_code(2);
    for needle in [
        "[features.defender-reporting]",
        "upload = \"PS1FFFFF\"",
        "pilot_collection = \"PS1000FF\"",
    ] {
        assert!(
            check.stderr.contains(needle),
            "check: {needle}:\n{}",
            check.stderr
        );
    }
    assert_eq!(check.stderr, plan.stderr);
    assert_eq!(snapshot(dir.path()), before, "something was written");
}

/// A failing prerequisite check: `plan` shows the feature and its dependents as `skip` with
/// the failing finding and exits 1; `--ignore-check` with its code plans it (exit 0); a code no
/// failing finding has is refused (exit 2).
#[test]
fn plan_skips_a_feature_whose_check_fails_until_its_code_is_ignored() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    set_site_key(
        &dir.path().join("site"),
        "service_connection_point",
        "\"offline\"",
    );
    let r = run(dir.path(), &["--config", &cfg, "--output", "json", "plan"]);
    r.expect_code(1);
    let plan = r.json();
    assert_eq!(step(&plan, "tenant-attach")["action"], "skip");
    assert!(
        step(&plan, "tenant-attach")["reason"]
            .as_str()
            .is_some_and(|s| s.contains("service-connection-point-offline")),
        "{plan:#}"
    );
    assert_eq!(step(&plan, "endpoint-analytics")["action"], "skip");
    assert_eq!(step(&plan, "co-management")["action"], "enable");
    assert!(r.stderr.contains("--ignore-check"), "{}", r.stderr);

    let typo = run(
        dir.path(),
        &[
            "--config",
            &cfg,
            "plan",
            "--ignore-check",
            "service-connection-point",
        ],
    );
    typo.expect_code(2);
    assert!(
        typo.stderr.contains("service-connection-point-offline"),
        "{}",
        typo.stderr
    );
    let r = run(
        dir.path(),
        &[
            "--config",
            &cfg,
            "--output",
            "json",
            "plan",
            "--ignore-check",
            "service-connection-point-offline",
        ],
    );
    r.expect_code(0);
    assert_eq!(step(&r.json(), "tenant-attach")["action"], "enable");
}

/// `apply` without `--yes` and without a terminal refuses before anything: not even the demo
/// site is written.
#[test]
fn apply_without_yes_off_a_terminal_refuses_before_anything() {
    let dir = TempDir::new().unwrap();
    // assert_cmd gives the child a standard input that is not a terminal.
    let r = run(dir.path(), &["apply"]);
    r.expect_code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert!(
        fs::read_dir(dir.path()).unwrap().next().is_none(),
        "apply wrote files before refusing"
    );
}

/// A state database written by a newer cloudattach (its schema version above the newest this
/// build knows) is refused by every command that opens it: exit 2, the message names the file,
/// its version and the newest known one, and nothing in the directory changes.
#[test]
fn a_state_database_from_a_newer_version_is_refused_untouched() {
    let (dir, cfg) = setup(
        "2303",
        "[site]\npath = \"site\"\n[cloud]\nendpoint = \"http://127.0.0.1:9\"\ntenant = \"contoso.example\"\n[attach]\nsettings = \"default\"\n",
    );
    let state = dir.path().join(".cloudattach");
    drop(cloudattach_core::state::StateStore::open(&state).unwrap());
    let db = state.join("state.db");
    // A newer build's migration: `user_version` is the big-endian integer at offset 60 of the
    // SQLite header.
    let mut bytes = fs::read(&db).unwrap();
    bytes[60..64].copy_from_slice(&99u32.to_be_bytes());
    fs::write(&db, bytes).unwrap();
    let before = snapshot(dir.path());
    for args in [
        &["plan"][..],
        &["status"],
        &["sync"],
        &["disable", "co-management"],
    ] {
        let r = run(dir.path(), &[&["--config", &cfg][..], args].concat());
        r.expect_code(2);
        for part in [db.display().to_string(), "99".into(), "newest".into()] {
            assert!(
                r.stderr.contains(&part),
                "{args:?}: {part:?} in {}",
                r.stderr
            );
        }
        let newest = r
            .stderr
            .split("newer than ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_default();
        assert!(newest.parse::<u32>().is_ok_and(|n| n < 99), "{}", r.stderr);
        let after = snapshot(dir.path());
        let changed: Vec<_> = after
            .iter()
            .filter(|(p, c)| before.get(*p) != Some(c) && !p.ends_with("lock"))
            .map(|(p, _)| p.clone())
            .collect();
        assert!(changed.is_empty(), "{args:?} changed {changed:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// init: the pages each site and cloud support, and only what plan accepts (every combination
// of answers against plan: core/tests/rules/init.rs; here a sample through the binary)
// ---------------------------------------------------------------------------------------------

/// A sample of the wizard's flags through the binary, on sites around each version gate: what
/// it writes, plan accepts (exit 0); what plan would refuse, it refuses (exit 2, nothing
/// written) at once, naming the flag and why.
#[test]
fn init_writes_only_what_plan_accepts_and_refuses_the_rest_at_once() {
    let cases: &[(&str, &[&str], i32, &[&str])] = &[
        // Custom settings below RBAC authority's 2207: written with it off (it used to be on).
        ("2206", &["--settings", "custom"], 0, &[]),
        (
            "2111",
            &["--settings", "custom", "--upload", "PS100012"],
            0,
            &[],
        ),
        (
            "2207",
            &["--settings", "custom", "--enforce-configmgr-rbac", "false"],
            0,
            &[],
        ),
        (
            "2303",
            &[
                "--settings",
                "custom",
                "--upload",
                "none",
                "--co-management",
                "pilot",
                "--pilot-collection",
                "PS100020",
            ],
            0,
            &[],
        ),
        (
            "2303",
            &["--environment", "china", "--settings", "custom"],
            0,
            &[],
        ),
        ("2302", &["--co-management", "none"], 0, &[]),
        // Refused at their page.
        (
            "2302",
            &["--settings", "custom", "--defender-reporting", "true"],
            2,
            &["--defender-reporting true", "2303", "2302"],
        ),
        (
            "2206",
            &["--settings", "custom", "--enforce-configmgr-rbac", "true"],
            2,
            &["--enforce-configmgr-rbac true", "2207"],
        ),
        (
            "2303",
            &[
                "--settings",
                "custom",
                "--upload",
                "none",
                "--endpoint-analytics",
                "true",
            ],
            2,
            &["--endpoint-analytics true", "device upload"],
        ),
        (
            "2303",
            &["--settings", "custom", "--upload", "PS1FFFFF"],
            2,
            &["--upload PS1FFFFF", "no collection PS1FFFFF"],
        ),
        (
            "2303",
            &["--co-management", "pilot", "--pilot-collection", "PS1FFFFF"],
            2,
            &["--pilot-collection PS1FFFFF", "no collection PS1FFFFF"],
        ),
        (
            "2303",
            &["--environment", "china", "--co-management", "pilot"],
            2,
            &["--co-management pilot", "Azure China Cloud"],
        ),
        ("2107", &[], 2, &["2107", "2111"]),
    ];
    for (version, args, code, needles) in cases {
        let dir = TempDir::new().unwrap();
        generated_site(dir.path(), version);
        let mut all = vec!["init", "--no-input"];
        all.extend_from_slice(args);
        let r = run(dir.path(), &all);
        r.expect_code(*code).stderr_has(needles);
        let written = dir.path().join("attach.toml");
        if *code == 0 {
            let cfg = written.to_str().unwrap().to_string();
            let p = run(dir.path(), &["--config", &cfg, "plan", "--output", "json"]);
            assert_eq!(
                p.code,
                0,
                "{version} {args:?}: plan refuses what init wrote:\n{}\n{}",
                fs::read_to_string(&written).unwrap(),
                p.stderr
            );
        } else {
            assert!(
                !written.exists(),
                "{version} {args:?}: init wrote a file it refused"
            );
        }
    }
}

/// An unreadable site (missing, or a malformed site.toml) is an error naming the file, not a
/// warning: exit 2 and nothing written.
#[test]
fn init_refuses_an_unreadable_site_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["init", "--no-input", "--site", "nowhere"]);
    r.expect_code(2).stderr_has(&["nowhere/site.toml"]);
    fs::create_dir_all(dir.path().join("bad")).unwrap();
    fs::write(dir.path().join("bad/site.toml"), "code = [\n").unwrap();
    let r = run(dir.path(), &["init", "--no-input", "--site", "bad"]);
    r.expect_code(2).stderr_has(&["bad/site.toml"]);
    assert!(!dir.path().join("attach.toml").exists());
}

/// An imported app through the flags: checked offline as plan checks it, written with where
/// its secret is (never the secret), and plan accepts the file.
#[test]
fn init_imports_an_app_through_its_flags() {
    let dir = TempDir::new().unwrap();
    generated_site(dir.path(), "2303");
    fs::write(dir.path().join("app-secret.txt"), "init-test-secret\n").unwrap();
    let tid = "c0257050-0000-4000-8000-000000000001";
    let base = [
        "init",
        "--no-input",
        "--app",
        "import",
        "--app-tenant-id",
        tid,
        "--app-client-id",
        "11111111-0000-4000-8000-000000000001",
        "--app-secret-file",
        "app-secret.txt",
        "--app-secret-expiry",
    ];
    let mut args = base.to_vec();
    args.push("2001-01-01");
    run(dir.path(), &args)
        .expect_code(2)
        .stderr_has(&["--app-secret-expiry", "expired"]);
    assert!(!dir.path().join("attach.toml").exists());
    let mut args = base.to_vec();
    args.extend([
        "2999-01-01",
        "--app-id-uri",
        "api://another/ConfigMgrService",
    ]);
    run(dir.path(), &args)
        .expect_code(2)
        .stderr_has(&["--app-id-uri", "tenant id"]);
    let mut args = base.to_vec();
    args.push("2999-01-01");
    let r = run(dir.path(), &args);
    r.expect_code(0);
    assert!(!r.stderr.contains("init-test-secret"), "{}", r.stderr);
    let text = fs::read_to_string(dir.path().join("attach.toml")).unwrap();
    assert!(text.contains("[cloud.app]"), "{text}");
    assert!(
        text.contains(&format!("app_id_uri = \"api://{tid}/ConfigMgrService\"")),
        "{text}"
    );
    assert!(text.contains("secret_file = \"app-secret.txt\""), "{text}");
    assert!(!text.contains("init-test-secret"), "{text}");
    run(dir.path(), &["plan"]).expect_code(0);
}

/// On a terminal (a pty from util-linux `script`) the wizard shows each page with its
/// consequence, leaves out the pages a 2206 site cannot run (RBAC authority, Defender), asks
/// again for a site that cannot be read and a collection the site does not have, and writes
/// what plan accepts. Skipped where `script` is not available.
#[test]
fn init_on_a_terminal_offers_only_the_pages_the_site_supports() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: util-linux `script` is not available to provide a terminal");
        return;
    }
    let dir = TempDir::new().unwrap();
    generated_site(dir.path(), "2206");
    let bin = env!("CARGO_BIN_EXE_cloudattach");
    let answers = "nowhere\nsite\npublic\n\n\nn\n\ncustom\ncollection\nPS1FFFFF\nPS100012\ny\npilot\nPS100020\ny\n";
    let mut child = std::process::Command::new("script")
        .args(["-qec", &format!("'{bin}' init"), "/dev/null"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run script");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for n in [
        "nowhere/site.toml",
        "Device upload — Uploads the site's client devices",
        "site PS1 has no collection PS1FFFFF",
        "Endpoint analytics — Enrolls uploaded devices",
        "RBAC authority — not offered: RBAC authority needs site version 2207 or later; the site is 2206",
        "Microsoft Defender reporting — not offered",
        "Co-management — Enrolls eligible devices",
        "wrote attach.toml",
    ] {
        assert!(text.contains(n), "not shown {n:?}:\n{text}");
    }
    assert!(
        !text.contains("Enforce Configuration Manager RBAC"),
        "{text}"
    );
    let cfg = dir.path().join("attach.toml");
    let written = fs::read_to_string(&cfg).unwrap();
    for n in ["upload = \"PS100012\"", "pilot_collection = \"PS100020\""] {
        assert!(written.contains(n), "{written}");
    }
    run(dir.path(), &["--config", cfg.to_str().unwrap(), "plan"]).expect_code(0);
}

// ---------------------------------------------------------------------------------------------
// Secrets in attach.toml never appear in an error
// ---------------------------------------------------------------------------------------------

/// A secret pasted into attach.toml — under any secret-like key, in any table, whatever is
/// wrong with the file (syntax on its line or the next, unknown key, wrong type, a bad option
/// in a feature table) — is refused with exit 2 and never printed, in text or in JSON.
#[test]
fn no_configuration_error_echoes_a_secret() {
    no_configuration_error_echoes("Xq8~pasted-Secret-9f2e");
}

/// The same for a secret of 3 characters: too short to be looked for in the message, it is
/// still never shown — the file's line the error quotes shows its key and `<redacted>`, serde's
/// own message does not quote it — while the line number and the key are still there.
#[test]
fn no_configuration_error_echoes_a_short_secret() {
    no_configuration_error_echoes("k~9");
}

fn no_configuration_error_echoes(secret: &str) {
    let app = format!(
        "[cloud.app]\ntenant_id = \"{APP_TENANT_ID}\"\nclient_id = \"00000000-0000-4000-8000-0000000000aa\"\n\
         name = \"ConfigMgrService\"\napp_id_uri = \"api://{APP_TENANT_ID}/ConfigMgrService\"\n\
         secret_expiry = \"2099-01-01\"\n"
    );
    let site = "[site]\npath = \"site\"\n";
    let custom = "[attach]\nsettings = \"custom\"\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "secret under [cloud.app]",
            format!("{site}{app}secret = \"{secret}\"\n"),
        ),
        (
            "client_secret under [cloud.app]",
            format!("{site}{app}client_secret = \"{secret}\"\n"),
        ),
        (
            "client_secret, literal string",
            format!("{site}{app}client_secret = '{secret}'\n"),
        ),
        (
            "password in [cloud]",
            format!("{site}[cloud]\npassword = \"{secret}\"\n"),
        ),
        (
            "syntax error on the secret's line",
            format!("{site}{app}client_secret = \"{secret}\n"),
        ),
        (
            "syntax error on the line after",
            format!("{site}[cloud]\ntoken = \"{secret}\"\ntenant = \n"),
        ),
        (
            "syntax error on the line before",
            format!("{site}[cloud\napi_token = \"{secret}\"\n"),
        ),
        (
            "wrong type next to a secret",
            format!("{site}[cloud]\ntenant = 5\nclient-secret = \"{secret}\"\n"),
        ),
        (
            "a secret in an inline table",
            format!("{site}[cloud]\nauth = {{ token = \"{secret}\" }}\n"),
        ),
        (
            "a multi-line secret",
            format!("{site}[cloud]\nprivate_key = \"\"\"\n{secret}\n\"\"\"\n"),
        ),
        (
            "secret in a feature table",
            format!(
                "{site}{custom}[features.tenant-attach]\nenabled = true\nclient_secret = \"{secret}\"\n"
            ),
        ),
        (
            "token in a feature table",
            format!("{site}{custom}[features.endpoint-analytics]\nAPI_TOKEN = \"{secret}\"\n"),
        ),
        (
            "secret in an unknown feature",
            format!("{site}[features.no-such-plugin]\npassword = \"{secret}\"\n"),
        ),
        (
            "the secret's key of the wrong type",
            format!("{site}[features]\ntoken = \"{secret}\"\n"),
        ),
        (
            "an unknown key beside it",
            format!("{site}[cloud]\nregion = {{ token = \"{secret}\" }}\n"),
        ),
        (
            "secret pasted into secret_file",
            format!("{site}{app}secret_file = \"{secret}\"\nsecret = \"{secret}\"\n"),
        ),
    ];
    for (what, text) in &cases {
        let (dir, cfg) = setup("2303", text);
        for args in [
            vec!["--config", cfg.as_str(), "plan"],
            vec!["--config", cfg.as_str(), "check"],
            vec!["--config", cfg.as_str(), "plan", "--output", "json"],
            vec!["--config", cfg.as_str(), "status", "--output", "json"],
        ] {
            let r = run(dir.path(), &args);
            assert_eq!(
                r.code, 2,
                "{what} {args:?}: exit code; stderr:\n{}",
                r.stderr
            );
            assert!(r.stderr.contains("error: "), "{what}: {}", r.stderr);
            for (stream, out) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
                assert!(
                    !out.contains(secret),
                    "{what} {args:?}: the secret is on {stream}:\n{out}"
                );
            }
        }
    }
    // The message still says where and what: the line and the key, and where secrets go.
    let (dir, cfg) = setup("2303", &cases[1].1);
    let r = run(dir.path(), &["--config", &cfg, "plan"]);
    r.expect_code(2)
        .stderr_has(&["line 9", "client_secret", "<redacted>", "secret_file"]);
    let r = run(dir.path(), &["--config", &cfg, "plan", "--output", "json"]);
    let doc = r.json();
    assert!(
        doc["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("secret_file")),
        "{doc:#}"
    );
    // In the JSON error document too: the line and the key are there, the value is not.
    let case = |what: &str| &cases.iter().find(|(w, _)| *w == what).unwrap().1;
    for (what, needles) in [
        (
            "syntax error on the secret's line",
            &["line 9", "client_secret = <redacted>"][..],
        ),
        ("syntax error on the line after", &["line 5", "tenant"]),
        (
            "the secret's key of the wrong type",
            &["line 4", "token = <redacted>"],
        ),
        (
            "an unknown key beside it",
            &["line 4", "region = { token = <redacted>", "`region`"],
        ),
    ] {
        let (dir, cfg) = setup("2303", case(what));
        let r = run(dir.path(), &["--config", &cfg, "plan", "--output", "json"]);
        r.expect_code(2);
        let doc = r.json();
        assert_eq!(doc["error"]["code"], "config", "{what}: {doc:#}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        for n in needles {
            assert!(message.contains(n), "{what}: {n:?} in {message}");
        }
        assert!(!doc.to_string().contains(secret), "{what}: {doc:#}");
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin directories
// ---------------------------------------------------------------------------------------------

/// A plugin directory that does not exist is a configuration error (exit 2, nothing written)
/// naming the path and where it was given: the flag, or the configuration's key.
#[test]
fn a_missing_plugin_dir_is_a_configuration_error_naming_where_it_came_from() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    for cmd in [&["plan"][..], &["check"], &["plugins", "list"]] {
        let mut args = vec!["--config", cfg.as_str(), "--plugin-dir", "no-such-plugins"];
        args.extend_from_slice(cmd);
        let r = run(dir.path(), &args);
        r.expect_code(2).stderr_has(&[
            "error: ",
            "--plugin-dir no-such-plugins",
            "no such directory",
        ]);
        assert!(r.stdout.is_empty(), "{cmd:?}: {}", r.stdout);
    }
    let cfg = write_config(
        dir.path(),
        "[site]\npath = \"site\"\n[plugins]\ndirs = [\"typo-plugins\"]\n",
    );
    for cmd in [&["plan"][..], &["plugins", "list"]] {
        let mut args = vec!["--config", cfg.as_str()];
        args.extend_from_slice(cmd);
        let r = run(dir.path(), &args);
        r.expect_code(2).stderr_has(&[
            "attach.toml",
            "[plugins] dirs",
            "typo-plugins",
            "no such directory",
        ]);
    }
    // A file where a directory should be is refused the same way.
    fs::write(dir.path().join("a-file"), "x").unwrap();
    let r = run(
        dir.path(),
        &[
            "--config",
            &cfg,
            "--plugin-dir",
            "a-file",
            "plan",
            "--output",
            "json",
        ],
    );
    r.expect_code(2);
    assert_eq!(r.json()["error"]["code"], "plugin-dir");
    assert!(
        !dir.path().join(".cloudattach").exists(),
        "state was written"
    );
}

// ---------------------------------------------------------------------------------------------
// Errors as JSON
// ---------------------------------------------------------------------------------------------

/// With `--output json`, every failure prints exactly one document `{"error": {"code",
/// "message", "hint"}}` on stdout and keeps its exit code: usage, configuration, plugin
/// directory, selection, other input and runtime errors. `check`'s own failure keeps its own
/// document.
#[test]
fn with_output_json_every_error_is_one_json_document() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let bad_toml = dir.path().join("bad.toml");
    fs::write(&bad_toml, "[cloud]\nregion = \"x\"\n").unwrap();
    let selection = dir.path().join("selection.toml");
    fs::write(
        &selection,
        "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n[features.tenant-attach]\nuploads = \"all\"\n",
    )
    .unwrap();
    let unreachable = dir.path().join("unreachable.toml");
    fs::write(
        &unreachable,
        "[site]\npath = \"site\"\n[cloud]\nendpoint = \"http://127.0.0.1:9\"\n",
    )
    .unwrap();
    let (bad, sel, unr) = (
        bad_toml.to_str().unwrap(),
        selection.to_str().unwrap(),
        unreachable.to_str().unwrap(),
    );
    // (what, arguments, exit code, code, the message contains)
    let cases: Vec<(&str, Vec<&str>, i32, &str, &str)> = vec![
        (
            "unknown command",
            vec!["--output", "json", "plann"],
            2,
            "usage",
            "plann",
        ),
        (
            "unknown flag",
            vec!["check", "--bogus", "--output=json"],
            2,
            "usage",
            "--bogus",
        ),
        (
            "bad flag value",
            vec!["--output", "json", "sync", "--watch", "soon"],
            2,
            "usage",
            "soon",
        ),
        (
            "missing argument",
            vec!["--output", "json", "disable"],
            2,
            "usage",
            "PLUGIN_ID",
        ),
        (
            "missing config",
            vec!["--config", "nope.toml", "--output", "json", "plan"],
            2,
            "config",
            "nope.toml",
        ),
        (
            "bad config",
            vec!["--config", bad, "--output", "json", "status"],
            2,
            "config",
            "region",
        ),
        (
            "selection",
            vec!["--config", sel, "--output", "json", "plan"],
            2,
            "selection",
            "uploads",
        ),
        (
            "unknown plugin",
            vec![
                "--config", &cfg, "--output", "json", "disable", "nosuch", "--yes",
            ],
            2,
            "input",
            "nosuch",
        ),
        (
            "no terminal",
            vec!["--config", &cfg, "--output", "json", "apply"],
            2,
            "input",
            "--yes",
        ),
        (
            "cloud unreachable",
            vec!["--config", unr, "--output", "json", "status"],
            1,
            "runtime",
            "127.0.0.1:9",
        ),
    ];
    for (what, args, exit, code, needle) in cases {
        let r = run(dir.path(), &args);
        assert_eq!(r.code, exit, "{what}: exit code; stderr:\n{}", r.stderr);
        let doc = r.json();
        let error = &doc["error"];
        assert_eq!(error["code"], code, "{what}: {doc:#}");
        let message = error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {doc:#}"));
        assert!(
            message.contains(needle),
            "{what}: {message:?} lacks {needle:?}"
        );
        assert!(
            error
                .get("hint")
                .is_some_and(|h| h.is_null() || h.is_string()),
            "{what}: hint: {doc:#}"
        );
        assert!(
            !r.stderr.is_empty(),
            "{what}: the human text stays on stderr"
        );
    }
    // What to do is the hint, not part of the message.
    let doc = run(dir.path(), &["--config", unr, "--output", "json", "status"]).json();
    assert!(
        doc["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("[cloud] endpoint")),
        "{doc:#}"
    );
    assert!(!doc["error"]["message"].as_str().unwrap().contains("hint"));
    // A selection error's hint and problems are there for scripts.
    let doc = run(dir.path(), &["--config", sel, "--output", "json", "plan"]).json();
    assert_eq!(
        doc["error"]["problems"][0]["feature"], "tenant-attach",
        "{doc:#}"
    );
    // check's failure is its own document, not an error document.
    let r = run(dir.path(), &["--help"]);
    r.expect_code(0);
    assert!(r.stdout.contains("Usage:"));
}

// ---------------------------------------------------------------------------------------------
// Completions, manual pages, logout, disable's confirmation
// ---------------------------------------------------------------------------------------------

#[test]
fn completions_name_every_command_for_each_shell() {
    let dir = TempDir::new().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let r = run(dir.path(), &["completions", shell]);
        r.expect_code(0);
        for sub in [
            "apply",
            "plan",
            "check",
            "sync",
            "disable",
            "logout",
            "completions",
            "man",
        ] {
            assert!(r.stdout.contains(sub), "{shell}: no {sub}");
        }
        assert!(r.stdout.contains("plugin-dir"), "{shell}: no --plugin-dir");
    }
    // bash can load the script and registers the completion function.
    let script = dir.path().join("cloudattach.bash");
    fs::write(&script, run(dir.path(), &["completions", "bash"]).stdout).unwrap();
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {} && complete -p cloudattach",
            script.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("cloudattach"));
    let r = run(dir.path(), &["completions", "tcsh"]);
    r.expect_code(2);
}

#[test]
fn man_prints_a_roff_page_and_writes_one_per_command() {
    let dir = TempDir::new().unwrap();
    let r = run(dir.path(), &["man"]);
    r.expect_code(0);
    assert!(r.stdout.contains(".TH cloudattach 1"), "{}", r.stdout);
    assert!(r.stdout.contains("disable") && r.stdout.contains("logout"));
    let r = run(dir.path(), &["man", "--out", "pages"]);
    r.expect_code(0);
    for page in [
        "cloudattach.1",
        "cloudattach-apply.1",
        "cloudattach-disable.1",
        "cloudattach-logout.1",
        "cloudattach-plugins-list.1",
        "cloudattach-cloud-serve.1",
    ] {
        let text = fs::read_to_string(dir.path().join("pages").join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH "), "{page}: {text}");
    }
    let disable = fs::read_to_string(dir.path().join("pages/cloudattach-disable.1")).unwrap();
    assert!(disable.contains("\\-\\-yes"), "{disable}");
}

/// Off a terminal, disable refuses without `--yes` (exit 2), after saying what it would
/// delete; nothing is signed in to or changed.
#[test]
fn disable_without_a_terminal_refuses_without_yes() {
    let (dir, cfg) = setup("2303", "[site]\npath = \"site\"\n");
    let r = run(
        dir.path(),
        &["--config", &cfg, "disable", "endpoint-analytics"],
    );
    r.expect_code(2).stderr_has(&[
        "endpoint-analytics",
        "deletes the data they uploaded",
        "`cloudattach disable --yes`",
    ]);
    assert!(
        !dir.path().join(".cloudattach/tokens.json").exists(),
        "signed in"
    );
}

/// logout removes the cached sign-in of the configured tenant and endpoint, keeps another's
/// unless --all, and never touches the app's credentials.
#[test]
fn logout_forgets_cached_tokens_and_keeps_the_app() {
    let (dir, cfg) = setup(
        "2303",
        "[site]\npath = \"site\"\n[cloud]\nendpoint = \"http://127.0.0.1:8750/\"\n",
    );
    let state = dir.path().join(".cloudattach");
    fs::create_dir_all(&state).unwrap();
    let tokens = state.join("tokens.json");
    let app = state.join("app-c0257050-0000-4000-8000-000000000001-0000abcd.json");
    fs::write(&app, "{}").unwrap();
    let cache = |tenant: &str, endpoint: &str| {
        serde_json::json!({"endpoint": endpoint, "tenant": tenant, "access_token": "at-never-printed",
            "refresh_token": "rt-never-printed", "expires_at": 4_000_000_000u64})
        .to_string()
    };
    fs::write(&tokens, cache("contoso.example", "http://127.0.0.1:8750")).unwrap();
    let r = run(dir.path(), &["--config", &cfg, "logout"]);
    r.expect_code(0)
        .stderr_has(&["signed out", "contoso.example", "http://127.0.0.1:8750"]);
    assert!(!tokens.exists(), "tokens.json is still there");
    assert!(app.exists(), "the app's credentials were removed");
    assert!(!r.stderr.contains("never-printed"));
    // Nothing cached: says so, succeeds.
    run(dir.path(), &["--config", &cfg, "logout"])
        .expect_code(0)
        .stderr_has(&["not signed in"]);
    // Another tenant's sign-in stays without --all.
    fs::write(&tokens, cache("fabrikam.example", "http://127.0.0.1:8750")).unwrap();
    run(dir.path(), &["--config", &cfg, "logout"])
        .expect_code(0)
        .stderr_has(&["kept", "fabrikam.example", "--all"]);
    assert!(tokens.exists());
    let r = run(
        dir.path(),
        &["--config", &cfg, "--output", "json", "logout", "--all"],
    );
    r.expect_code(0);
    assert_eq!(r.json()["removed"][0]["tenant"], "fabrikam.example");
    assert!(!tokens.exists());
    assert!(app.exists());
}

/// An optional field the model cannot use — a number where it has a string, a string over the
/// cloud's 1,024-character limit, a Defender block that does not parse — costs the device that
/// field only: the device is kept and counted, the field reported once with a count.
#[test]
fn an_unusable_optional_field_costs_the_field_not_the_device() {
    let dir = TempDir::new().unwrap();
    let site = generated_site(dir.path(), "2303");
    let path = site.join("devices.jsonl");
    let cfg = write_config(dir.path(), "[site]\npath = \"site\"\n");
    let plain = check_json(dir.path(), &cfg, &[], 0);
    let text = fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            let mut d: Value = serde_json::from_str(l).unwrap();
            match i % 10 {
                0 => d["model"] = 5.into(),
                1 => d["serial_number"] = "S".repeat(1_100).into(),
                _ => {}
            }
            d.to_string()
        })
        .collect();
    fs::write(&path, lines.join("\n") + "\n").unwrap();
    let r = run(dir.path(), &["--config", &cfg, "check", "--output", "json"]);
    r.expect_code(0);
    assert_eq!(eligibility_of(&r.json()), eligibility_of(&plain));
    assert!(!r.stderr.contains("skipped"), "{}", r.stderr);
    r.stderr_has(&[
        "30 devices carry \"model\" with a value cloudattach cannot use",
        "30 devices carry \"serial_number\" with a value cloudattach cannot use",
    ]);
}

// ---------------------------------------------------------------------------------------------
// explain
// ---------------------------------------------------------------------------------------------

#[test]
fn explain_device_prints_the_pinned_document_and_refuses_an_unknown_id_with_exit_2() {
    let dir = TempDir::new().unwrap();
    copy_fixture("small-site", dir.path());
    let cfg = write_config(
        dir.path(),
        "[site]\npath = 'site'\n[cloud]\ntenant = 'contoso.example'\n[attach]\nsettings = 'default'\n",
    );
    let r = run(
        dir.path(),
        &[
            "--config", &cfg, "--output", "json", "explain", "device", "102",
        ],
    );
    r.expect_code(0);
    let v = r.json();
    assert_eq!(v["resource_id"], 102);
    assert_eq!(v["name"], "BUILD-16298");
    assert_eq!(v["uploaded"]["value"], true);
    assert_eq!(v["co_management"]["class"], "needsOsUpdate");
    assert_eq!(v["co_management"]["scheduled"], false);
    assert_eq!(v["endpoint_analytics"]["eligible"], true);
    assert_eq!(v["defender"]["uploaded"], false);
    let text = run(dir.path(), &["--config", &cfg, "explain", "device", "109"]);
    text.expect_code(0);
    assert!(
        text.stdout
            .contains("no Configuration Manager client: tenant attach uploads client devices only"),
        "{}",
        text.stdout
    );
    let r = run(dir.path(), &["--config", &cfg, "explain", "device", "4242"]);
    r.expect_code(2);
    assert!(
        r.stderr.contains("no device has the resource id 4242"),
        "{}",
        r.stderr
    );
}

#[test]
fn check_lists_the_ineligible_devices_by_reason() {
    let dir = TempDir::new().unwrap();
    copy_fixture("small-site", dir.path());
    let cfg = write_config(
        dir.path(),
        "[site]\npath = 'site'\n[cloud]\ntenant = 'contoso.example'\n[attach]\nsettings = 'default'\n",
    );
    let r = run(dir.path(), &["--config", &cfg, "check", "co-management"]);
    r.expect_code(0);
    for line in [
        "2 ineligible devices: no Configuration Manager client",
        "1 ineligible devices: a server OS",
        "2 ineligible devices: only registered in Entra ID or in a workgroup",
    ] {
        assert!(r.stdout.contains(line), "{line} in\n{}", r.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// Plugin processes
// ---------------------------------------------------------------------------------------------

#[cfg(unix)]
#[test]
fn ctrl_c_stops_the_plugin_processes_too() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    copy_fixture("small-site", dir.path());
    let plugins = dir.path().join("plugins");
    fs::create_dir_all(&plugins).unwrap();
    let pid_file = dir.path().join("plugin.pid");
    let manifest = r#"{"id":"stuck","name":"Stuck","version":"0.1.0","environments":["public"],"min_site_version":"2111","timeouts":{"check":600}}"#;
    let script = plugins.join("stuck");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nread hello\necho '{{\"type\":\"hello\",\"protocol\":1,\"manifest\":{manifest}}}'\nread call\necho $$ > {}\nsleep 600\n",
            pid_file.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = write_config(
        dir.path(),
        "[site]\npath = 'site'\n[cloud]\ntenant = 'contoso.example'\n[attach]\nsettings = 'default'\n[features.stuck]\nenabled = true\n[plugins]\ndirs = ['plugins']\n",
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudattach"))
        .args(["--config", &cfg, "check", "stuck"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !pid_file.is_file() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "the plugin never started its check"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let plugin_pid = fs::read_to_string(&pid_file).unwrap().trim().to_string();
    std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exits as interrupted");
    let gone = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        !Path::new(&format!("/proc/{plugin_pid}")).exists()
            || fs::read_to_string(format!("/proc/{plugin_pid}/stat"))
                .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
    });
    assert!(gone, "the plugin process {plugin_pid} is still running");
}

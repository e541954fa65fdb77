//! Plugins that cannot take the host down: a hostile plugin in its own process aborts,
//! segfaults, exits, overflows its stack, allocates past its memory limit, loops, sleeps or
//! panics twice in each lifecycle step it can reach — and each time only that step fails, with
//! a message naming the plugin's process, the step and what happened, while this process goes
//! on and the next call starts a new child. Executables that break the protocol are refused at
//! load with one line. The built-in features' results are exact beside a failing plugin.

use cloudattach_plugin_co_management as _;
use cloudattach_plugin_defender_reporting as _;
use cloudattach_plugin_endpoint_analytics as _;
use cloudattach_plugin_rbac_authority as _;
use cloudattach_plugin_tenant_attach as _;

use cloudattach_core::dynamic::{Isolation, Limits, load_plugin_dirs_with};
use cloudattach_core::{Config, Registry, Site};
use cloudattach_dynamic_plugins::built;
use cloudattach_sdk::{
    ActionCall, ActionSubject, CheckStatus, Environment, Options, Plugin, SiteVersion, SyncMode,
    ValidateContext,
};
use cloudattach_testkit::{MemoryHost, device};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const STEPS: [&str; 9] = [
    "manifest", "validate", "check", "plan", "apply", "sync", "status", "disable", "action",
];

/// What each kind of hostility must be reported as.
const HOW: [(&str, &str); 8] = [
    ("abort", "killed by signal SIGABRT"),
    ("segfault", "killed by signal SIGSEGV"),
    ("exit", "exited with code 77"),
    ("stack", "killed by signal SIG"),
    ("alloc", "its memory limit is 256 MiB"),
    ("loop", "exceeded 3 s in"),
    ("sleep", "exceeded 3 s in"),
    ("doublepanic", "killed by signal SIGABRT"),
];

fn hostile_lib() -> PathBuf {
    built().join("examples").join(format!(
        "{}hostile{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

fn isolation() -> Isolation {
    let mut limits = Limits {
        memory_bytes: Some(256 << 20),
        ..Limits::default()
    };
    for step in STEPS.iter().chain(&["settings", "explain"]) {
        limits
            .timeouts
            .insert(step.to_string(), Duration::from_secs(3));
    }
    Isolation {
        limits,
        in_process: vec![],
    }
}

/// A registry holding the hostile library copied as `hostile__<how>__<step>`.
fn load(how: &str, step: &str) -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("hostile__{how}__{step}.{}", std::env::consts::DLL_EXTENSION);
    std::fs::copy(hostile_lib(), dir.path().join(name)).unwrap();
    let mut registry = Registry::new();
    load_plugin_dirs_with(&mut registry, &[dir.path().to_path_buf()], &isolation());
    (dir, registry)
}

/// Runs `step` of `plugin` against `host`; the failure's message, or `None` when it succeeded.
fn run(plugin: &dyn Plugin, step: &str, host: &MemoryHost) -> Option<String> {
    let ctx = ValidateContext::new(Environment::Public, SiteVersion(2303), false);
    let opts = Options::new();
    match step {
        "validate" => plugin
            .validate(&opts, &ctx)
            .first()
            .map(|f| f.message.clone()),
        "check" => {
            let r = plugin.check(host, &opts);
            (r.status() == CheckStatus::Fail).then(|| r.findings[0].message.clone())
        }
        "plan" => {
            let d = plugin.plan(host, &opts, None);
            d.reason
                .clone()
                .filter(|_| d.action == cloudattach_sdk::PlanAction::Skip)
        }
        "apply" => {
            let o = plugin.apply(host, &opts);
            (!o.ok).then(|| {
                o.findings
                    .last()
                    .map(|f| f.message.clone())
                    .unwrap_or_default()
            })
        }
        "sync" => plugin
            .sync(host, &opts, SyncMode::Full)
            .err()
            .map(|e| e.message),
        "status" => plugin.status(host).err().map(|e| e.message),
        "disable" => {
            let o = plugin.disable(host);
            (!o.ok).then(|| {
                o.findings
                    .last()
                    .map(|f| f.message.clone())
                    .unwrap_or_default()
            })
        }
        "action" => plugin
            .serve_action(
                host,
                &opts,
                &ActionCall::new(
                    "poke",
                    ActionSubject::Device(1),
                    Default::default(),
                    "someone@contoso.example",
                ),
            )
            .err()
            .map(|e| e.message),
        other => panic!("no step {other}"),
    }
}

fn host() -> MemoryHost {
    MemoryHost::new(MemoryHost::sample_site())
        .with_devices((1..=20).map(device))
        .with_cloud()
}

/// One case: the hostile step fails with the expected words, and the plugin answers again
/// afterwards (a new child) — or, in `manifest`, the load fails with one line.
fn case(how: &str, expected: &str, step: &str) -> Result<(), String> {
    let (dir, registry) = load(how, step);
    if step == "manifest" {
        let f = registry
            .load_failures
            .first()
            .ok_or_else(|| format!("{how} in manifest: it loaded"))?;
        let ok = f.message.contains(expected)
            && f.message.contains("manifest")
            && f.message.contains(&dir.path().display().to_string())
            && !f.message.contains('\n');
        return if ok && registry.get("hostile").is_none() {
            Ok(())
        } else {
            Err(format!("{how} in manifest: {:?}", registry.load_failures))
        };
    }
    let plugin = &registry
        .get("hostile")
        .ok_or_else(|| format!("{how} in {step}: not loaded: {:?}", registry.load_failures))?
        .plugin;
    let host = host();
    let message = run(plugin.as_ref(), step, &host)
        .ok_or_else(|| format!("{how} in {step}: the step succeeded"))?;
    if !(message.contains(expected) && message.contains(step)) {
        return Err(format!("{how} in {step}: {message:?} lacks {expected:?}"));
    }
    if step == "sync" && !host.channel("ext/hostile").is_empty() {
        return Err(format!("{how} in sync: a half upload was recorded"));
    }
    // A new child answers the next call.
    let again = if step == "validate" {
        "status"
    } else {
        "validate"
    };
    if let Some(m) = run(plugin.as_ref(), again, &host) {
        return Err(format!(
            "{how} in {step}: the next call ({again}) failed: {m}"
        ));
    }
    Ok(())
}

#[test]
fn every_hostile_act_in_every_step_fails_only_that_step() {
    let _ = built();
    let mut cases = vec![];
    for (how, expected) in HOW {
        for step in STEPS {
            cases.push((how, expected, step));
        }
    }
    // Side by side: the loops and sleeps wait out their limit.
    let failures: Vec<String> = std::thread::scope(|s| {
        let chunks: Vec<_> = cases
            .chunks(cases.len().div_ceil(8))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .filter_map(|(how, expected, step)| case(how, expected, step).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        chunks
            .into_iter()
            .flat_map(|h| h.join().expect("a case thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn a_plugin_that_prints_on_standard_output_does_not_break_the_protocol() {
    for step in ["check", "status", "sync"] {
        let (_dir, registry) = load("print", step);
        let plugin = &registry.get("hostile").expect("loaded").plugin;
        let host = host();
        assert_eq!(run(plugin.as_ref(), step, &host), None, "print in {step}");
    }
}

/// An executable plugin written as a shell script.
fn script(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn executables_that_break_the_protocol_are_one_line_each_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    script(dir.path(), "garbage", "echo this is not json");
    script(
        dir.path(),
        "wrong-version",
        r#"read hello; echo '{"type":"hello","protocol":99,"manifest":{}}'"#,
    );
    script(
        dir.path(),
        "refuses",
        r#"read hello; echo '{"type":"hello","protocol":1,"error":"needs a newer python"}'"#,
    );
    script(dir.path(), "dies", "exit 3");
    script(
        dir.path(),
        "huge",
        "head -c 70000000 /dev/zero | tr '\\0' 'x'; echo",
    );
    std::fs::copy(
        hostile_lib(),
        dir.path().join(format!(
            "hostile__none__none.{}",
            std::env::consts::DLL_EXTENSION
        )),
    )
    .unwrap();
    let mut registry = Registry::with_static_plugins().unwrap();
    load_plugin_dirs_with(&mut registry, &[dir.path().to_path_buf()], &isolation());
    assert!(registry.get("hostile").is_some(), "the good library loads");
    let message = |file: &str| {
        let path = std::fs::canonicalize(dir.path().join(file)).unwrap();
        let m: Vec<&str> = registry
            .load_failures
            .iter()
            .filter(|f| f.path == path)
            .map(|f| f.message.as_str())
            .collect();
        assert_eq!(m.len(), 1, "{file}: {:?}", registry.load_failures);
        assert!(!m[0].contains('\n'), "{}", m[0]);
        m[0].to_string()
    };
    assert!(message("garbage").contains("broke the plugin protocol"));
    assert!(message("wrong-version").contains("protocol 99"));
    assert!(message("refuses").contains("needs a newer python"));
    assert!(message("dies").contains("exited with code 3"));
    assert!(
        message("huge").contains("longer than"),
        "{}",
        message("huge")
    );
}

#[test]
fn a_plugin_declares_the_time_limit_a_step_needs_and_the_administrators_wins() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"{"id":"slow","name":"Slow","version":"0.1.0","environments":["public"],"min_site_version":"2111","timeouts":{"check":1}}"#;
    script(
        dir.path(),
        "slow",
        &format!(
            "read hello\necho '{{\"type\":\"hello\",\"protocol\":1,\"manifest\":{manifest}}}'\nread call\nsleep 30"
        ),
    );
    // The plugin's own limit: 1 s in check.
    let mut registry = Registry::new();
    load_plugin_dirs_with(
        &mut registry,
        &[dir.path().to_path_buf()],
        &Isolation::default(),
    );
    let plugin = &registry.get("slow").expect("loaded").plugin;
    let started = std::time::Instant::now();
    let message = run(plugin.as_ref(), "check", &host()).expect("the check fails");
    assert!(message.contains("exceeded 1 s in check"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // The administrator's limit wins.
    let mut registry = Registry::new();
    load_plugin_dirs_with(&mut registry, &[dir.path().to_path_buf()], &isolation());
    let plugin = &registry.get("slow").expect("loaded").plugin;
    let message = run(plugin.as_ref(), "check", &host()).expect("the check fails");
    assert!(message.contains("exceeded 3 s in check"), "{message}");
}

#[test]
fn garbage_or_an_oversized_message_in_a_call_fails_that_call_only() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |id: &str| {
        format!(
            r#"{{"id":"{id}","name":"N","version":"0.1.0","environments":["public"],"min_site_version":"2111"}}"#
        )
    };
    let hello = |id: &str| {
        format!(
            "read hello\necho '{{\"type\":\"hello\",\"protocol\":1,\"manifest\":{}}}'\nread call\n",
            manifest(id)
        )
    };
    script(
        dir.path(),
        "garbled",
        &format!("{}echo 'not a message'\nsleep 30", hello("garbled")),
    );
    script(
        dir.path(),
        "oversized",
        &format!(
            "{}head -c 70000000 /dev/zero | tr '\\0' 'x'\necho\nsleep 30",
            hello("oversized")
        ),
    );
    let mut registry = Registry::new();
    load_plugin_dirs_with(&mut registry, &[dir.path().to_path_buf()], &isolation());
    for (id, words) in [
        ("garbled", "broke the plugin protocol in check"),
        ("oversized", "longer than"),
    ] {
        let plugin = &registry.get(id).expect("loaded").plugin;
        let started = std::time::Instant::now();
        let message = run(plugin.as_ref(), "check", &host()).expect("the check fails");
        assert!(message.contains(words), "{id}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{id} stopped at once"
        );
    }
}

#[test]
fn a_helper_that_keeps_the_plugins_output_open_does_not_hold_the_host_past_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"{"id":"detached","name":"N","version":"0.1.0","environments":["public"],"min_site_version":"2111"}"#;
    // In check, it starts a helper in a session of its own (beyond its process group), which
    // inherits its standard output, then hangs.
    script(
        dir.path(),
        "detached",
        &format!(
            "read hello\necho '{{\"type\":\"hello\",\"protocol\":1,\"manifest\":{manifest}}}'\nread call\nsetsid sleep 40 &\nsleep 40"
        ),
    );
    let mut registry = Registry::new();
    load_plugin_dirs_with(&mut registry, &[dir.path().to_path_buf()], &isolation());
    let plugin = &registry.get("detached").expect("loaded").plugin;
    let started = std::time::Instant::now();
    let message = run(plugin.as_ref(), "check", &host()).expect("the check fails");
    assert!(message.contains("exceeded 3 s in check"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the host waited {:?}",
        started.elapsed()
    );
}

#[test]
fn the_builtins_results_are_exact_beside_a_failing_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let opts = cloudattach_sitegen::GenerateOptions {
        devices: 300,
        seed: 7,
        ..Default::default()
    };
    cloudattach_sitegen::generate_site(&opts, &dir.path().join("site"), false).unwrap();
    let config = |extra: &str| {
        let path = dir.path().join("attach.toml");
        std::fs::write(
            &path,
            format!("[site]\npath = \"site\"\n[attach]\nsettings = \"default\"\n{extra}"),
        )
        .unwrap();
        Config::load(&path).unwrap()
    };
    let checks = |registry: &Registry, config: &Config| {
        let site = Arc::new(Site::open(&config.site_dir).unwrap());
        let selection = cloudattach_core::select(config, registry, site.info.version).unwrap();
        cloudattach_core::ops::check::run_checks(registry, config, &selection, &site, &[]).unwrap()
    };
    let lib_dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        hostile_lib(),
        lib_dir.path().join(format!(
            "hostile__abort__check.{}",
            std::env::consts::DLL_EXTENSION
        )),
    )
    .unwrap();
    let mut both = Registry::with_static_plugins().unwrap();
    load_plugin_dirs_with(&mut both, &[lib_dir.path().to_path_buf()], &isolation());
    let with = checks(&both, &config("[features.hostile]\nenabled = true\n"));
    let without = checks(&Registry::with_static_plugins().unwrap(), &config(""));
    let hostile = with.iter().find(|c| c.id == "hostile").expect("checked");
    assert_eq!(hostile.status, CheckStatus::Fail);
    assert!(
        hostile.findings[0].message.contains("SIGABRT"),
        "{:?}",
        hostile.findings
    );
    let builtins = |v: &[cloudattach_core::ops::check::CheckResult]| {
        v.iter()
            .filter(|c| c.id != "hostile")
            .map(|c| serde_json::to_string(c).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(builtins(&with), builtins(&without));
}

//! End to end: `status`, the state lock, `disable`, and the built-in demo.

use super::common::*;
use serde_json::Value;
use std::collections::BTreeMap;

const DEFAULT: &str = "[attach]\nsettings = \"default\"\n";

fn status_by_id(v: &Value) -> BTreeMap<String, Value> {
    v["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_string(), p.clone()))
        .collect()
}

fn authority(p: &Value) -> Option<&Value> {
    // docs/cloud-api.md#read-api-and-reports: a top-level key of the rbac-authority entry.
    p.get("effective_authority")
}

/// `status` after apply shows the counts the apply summary showed, which are the site's.
#[test]
fn status_after_apply_shows_the_apply_counts() {
    let w = World::start();
    let site = w.generate(1_500, 2303);
    w.config("public", DEFAULT);
    let applied = steps(&w.apply_ok());
    let r = w.cli(&["--output", "json", "status"]);
    r.ok();
    let status = status_by_id(&r.json());
    let e = site.expected(None, None);
    let want = [
        ("tenant-attach", "devices_uploaded", e.devices),
        ("endpoint-analytics", "devices_enrolled", e.ea_enrolled),
        ("defender-reporting", "devices_reported", e.defender),
        ("co-management", "devices_scheduled", e.scheduled),
        ("co-management", "devices_enrolled", e.comanaged),
    ];
    for (id, key, n) in want {
        assert_eq!(
            status[id]["counts"][key], n,
            "status {id} {key}: {}",
            status[id]
        );
        assert_eq!(
            applied[id]["counts"][key], n,
            "apply {id} {key}: {}",
            applied[id]
        );
    }
    for p in status.values() {
        assert_eq!(p["enabled"], true, "{p}");
        assert!(
            p["last_sync"].is_string() || p["id"] == "rbac-authority",
            "{p}"
        );
    }
    assert_eq!(
        authority(&status["rbac-authority"]),
        Some(&Value::from("configmgr+intune"))
    );
}

/// A second apply while one holds the state lock refuses, names the holder, and changes
/// nothing.
#[test]
fn concurrent_apply_refuses_and_names_the_holder() {
    let w = World::start();
    w.generate(200, 2303);
    w.config("public", DEFAULT);
    let lock = cloudattach_core::state::StateLock::acquire(&w.state_dir(), "apply").expect("lock");
    let r = w.cli(&["apply", "--yes"]);
    assert_ne!(r.code, 0, "apply ran while the state was locked");
    assert!(
        r.stderr.contains("another cloudattach is running"),
        "{}",
        r.stderr
    );
    let holder = format!("pid {}", std::process::id());
    assert!(
        r.stderr.contains(&holder) && r.stderr.contains("apply"),
        "holder not named: {}",
        r.stderr
    );
    assert!(w.hierarchies().is_empty(), "something was attached");
    drop(lock);
    w.apply_ok();
    assert_eq!(w.hierarchies().len(), 1);
}

/// `disable endpoint-analytics` turns it off in the cloud; `disable tenant-attach` while its
/// dependents are enabled is refused (exit 2) and names them.
#[test]
fn disable_features_and_refuse_while_dependents_are_enabled() {
    let w = World::start();
    let site = w.generate(800, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();

    let r = w.cli(&["disable", "--yes", "endpoint-analytics"]);
    r.ok();
    let c = w.counts(&site.hid);
    assert!(!c.enabled.contains("endpoint-analytics"), "{:?}", c.enabled);
    assert_eq!(c.ea_enrolled, 0);
    let st = w.cli(&["--output", "json", "status"]);
    st.ok();
    assert_eq!(
        status_by_id(&st.json())["endpoint-analytics"]["enabled"],
        false
    );

    let r = w.cli(&["disable", "--yes", "tenant-attach"]);
    r.code(2);
    let errors: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error naming them all:\n{}", r.stderr);
    assert!(
        errors[0].contains("cloudattach disable rbac-authority defender-reporting tenant-attach"),
        "the full command to run:\n{}",
        r.stderr
    );
    for dependent in ["defender-reporting", "rbac-authority"] {
        assert!(
            r.stderr.contains(dependent),
            "{dependent} not named: {}",
            r.stderr
        );
    }
    assert!(
        !r.stderr.contains("endpoint-analytics"),
        "a disabled dependent named: {}",
        r.stderr
    );
    let c = w.counts(&site.hid);
    assert!(c.enabled.contains("tenant-attach"), "{:?}", c.enabled);
    assert_eq!(c.devices, site.expected(None, None).devices);
}

/// The built-in demo on the embedded cloud: `apply --yes` in an empty directory, then
/// `status` (a new embedded cloud on a new port) reads the same counts back.
#[test]
fn embedded_demo_apply_then_status() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cloudattach"))
            .args(args)
            .current_dir(dir.path())
            .env_remove("CLOUDATTACH_LOG")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let a = run(&["--output", "json", "apply", "--yes"]);
    a.ok();
    let applied = steps(&a.json());
    let s = run(&["--output", "json", "status"]);
    s.ok();
    let status = status_by_id(&s.json());
    let site = SiteModel::load(&dir.path().join(".cloudattach/demo-site"));
    let e = site.expected(None, None);
    assert_eq!(
        status["tenant-attach"]["counts"]["devices_uploaded"],
        e.devices
    );
    assert_eq!(
        applied["tenant-attach"]["counts"]["devices_uploaded"],
        e.devices
    );
    assert_eq!(
        status["co-management"]["counts"]["devices_scheduled"],
        e.scheduled
    );
    assert_eq!(
        status["endpoint-analytics"]["counts"]["devices_enrolled"],
        e.ea_enrolled
    );
    assert_eq!(
        status["defender-reporting"]["counts"]["devices_reported"],
        e.defender
    );

    // `--stay-up`: after the command, the embedded cloud serves on with its admin center,
    // until Ctrl-C, which ends it with exit 0.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cloudattach"))
        .args(["status", "--stay-up"])
        .current_dir(dir.path())
        .env_remove("CLOUDATTACH_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let base = loop {
        let line = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the embedded cloud says it stays up");
        if let Some(rest) = line.split("stays up at ").nth(1) {
            break rest.split(':').take(3).collect::<Vec<_>>().join(":");
        }
    };
    let base = base.trim_end_matches(':').to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, location) = rt.block_on(async {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = http.get(format!("{base}/admin/")).send().await.unwrap();
        let loc = r
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_string());
        (r.status().as_u16(), loc)
    });
    assert_eq!(status, 303, "the admin center answers at {base}");
    assert!(location.unwrap_or_default().starts_with("/admin/signin"));
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let code = child.wait().unwrap();
    assert_eq!(
        code.code(),
        Some(0),
        "Ctrl-C stops the embedded cloud with exit 0"
    );
}

/// After `detach`, the cloud no longer knows the hierarchy: `status` says to run apply instead
/// of a raw 404, per plugin, and exits 1.
#[test]
fn status_after_detach_says_the_site_is_not_attached() {
    let w = World::start();
    w.generate(300, 2303);
    w.config("public", "[attach]\nsettings = \"default\"\n");
    w.apply_ok();
    w.cli(&["detach", "--yes"]).ok();
    let r = w.cli(&["--output", "json", "status"]);
    r.code(1);
    let want = format!("site not attached to {TENANT}: run `cloudattach apply`");
    let v = r.json();
    let plugins = v["plugins"].as_array().expect("plugins");
    assert_eq!(plugins.len(), 5, "{v}");
    for p in plugins {
        assert_eq!(p["enabled"], false, "{p}");
        assert_eq!(p["error"], want.as_str(), "{p}");
    }
    assert!(!r.stderr.contains("404"), "{}", r.stderr);
    let text = w.cli(&["status"]);
    text.code(1);
    assert!(text.stdout.contains(&want), "{}", text.stdout);
}

/// Off a terminal, `disable` without `--yes` refuses (exit 2) after naming what it would
/// delete, and the tenant still has the feature and every record it uploaded.
#[test]
fn disable_without_yes_off_a_terminal_changes_nothing() {
    let w = World::start();
    let site = w.generate(600, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let before = w.counts(&site.hid);
    assert!(before.ea_enrolled > 0, "nothing to lose: {before:?}");
    let r = w.cli(&["disable", "endpoint-analytics"]);
    r.code(2);
    assert!(
        r.stderr.contains("endpoint-analytics")
            && r.stderr.contains("deletes the data they uploaded")
            && r.stderr.contains("`cloudattach disable --yes`"),
        "{}",
        r.stderr
    );
    let after = w.counts(&site.hid);
    assert!(after.enabled.contains("endpoint-analytics"), "{after:?}");
    assert_eq!(after.ea_enrolled, before.ea_enrolled);
    assert_eq!(after.devices, before.devices);
}

/// `logout` forgets the administrator's cached tokens: the next command signs in afresh (the
/// device code is shown again), and the app registered by apply is kept and still used.
#[test]
fn logout_makes_the_next_command_sign_in_again() {
    let w = World::start();
    w.generate(300, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let tokens = w.state_dir().join("tokens.json");
    assert!(tokens.exists());
    let apps = || -> Vec<String> {
        std::fs::read_dir(w.state_dir())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("app-"))
            .collect()
    };
    let apps_before = apps();
    assert!(!apps_before.is_empty());
    let cached = w.cli(&["status"]);
    cached.ok();
    assert!(
        !cached.stderr.contains("devicelogin"),
        "a cached sign-in asked again:\n{}",
        cached.stderr
    );
    let r = w.cli(&["logout"]);
    r.ok();
    assert!(r.stderr.contains("signed out"), "{}", r.stderr);
    assert!(!tokens.exists(), "tokens.json is still there");
    assert_eq!(apps(), apps_before, "the app's credentials changed");
    let fresh = w.cli(&["status"]);
    fresh.ok();
    assert!(
        fresh.stderr.contains("devicelogin"),
        "no fresh sign-in after logout:\n{}",
        fresh.stderr
    );
    assert_eq!(w.hierarchies().len(), 1, "a second hierarchy or app");
}

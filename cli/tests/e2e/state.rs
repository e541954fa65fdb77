//! End to end: the local state follows the cloud — read-only commands never register an app,
//! and re-pointing a site at another cloud attaches it there in full while the first cloud
//! keeps its attachment.

use super::common::*;

const DEFAULT: &str = "[attach]\nsettings = \"default\"\n";

/// `status`, `sync` and `detach` on a site never applied say to run apply and leave no app in
/// the tenant; only `apply` registers one.
#[test]
fn read_only_commands_never_register_an_app() {
    let w = World::start();
    w.generate(200, 2303);
    w.config("public", DEFAULT);
    for args in [&["status"][..], &["sync"], &["detach", "--yes"]] {
        let r = w.cli(args);
        r.code(2);
        assert!(
            r.stderr.contains("run `cloudattach apply` first"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let admin = w.admin_token();
    let apps = w.rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/v1.0/applications", w.base))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("list applications")
            .json::<serde_json::Value>()
            .await
            .expect("json")
    });
    let registered: Vec<&str> = apps["value"]
        .as_array()
        .expect("value")
        .iter()
        .filter_map(|a| a["displayName"].as_str())
        .filter(|n| n.starts_with("ConfigMgrService"))
        .collect();
    assert!(registered.is_empty(), "apps registered: {registered:?}");
    w.apply_ok();
    assert_eq!(w.hierarchies().len(), 1);
}

/// The same site and state directory pointed at a second cloud: apply finds that cloud has
/// nothing, enables every feature and uploads everything there; pointed back, the first cloud
/// still holds the attachment and every step is a noop.
#[test]
fn a_site_pointed_at_another_cloud_is_attached_there_in_full() {
    let first = World::start();
    let second = World::start();
    let site = first.generate(400, 2303);
    let expected = site.expected(None, None);
    let point_at = |base: &str| {
        let text = format!(
            "[site]\npath = \"site\"\n\n[cloud]\nendpoint = \"{base}\"\ntenant = \"contoso.example\"\n\n{DEFAULT}"
        );
        std::fs::write(first.work.path().join("attach.toml"), text).expect("write attach.toml");
    };
    point_at(&first.base);
    first.apply_ok();

    point_at(&second.base);
    let out = first.apply_ok();
    for (id, s) in steps(&out) {
        assert_eq!(s["status"], "done", "{id}: {s}");
        assert_eq!(s["action"], "enable", "{id}: {s}");
    }
    let there = second.counts(&site.hid);
    assert_eq!(there.devices, expected.devices);
    assert_eq!(there.ea_enrolled, expected.ea_enrolled);
    assert_eq!(there.defender, expected.defender);
    assert_eq!(there.scheduled, expected.scheduled);

    point_at(&first.base);
    let out = first.apply_ok();
    for (id, s) in steps(&out) {
        assert_eq!(s["status"], "noop", "{id}: {s}");
    }
    let here = first.counts(&site.hid);
    assert_eq!(here.devices, expected.devices);
    assert_eq!(here.scheduled, expected.scheduled);
}

/// A `state.db` written by a newer cloudattach is refused by `apply`, `sync`, `detach` and
/// `disable` before anything else: exit 2 with both schema versions named, and no sign-in, no
/// request to the cloud, no device code, no lock file and no token cache.
#[test]
fn a_newer_state_database_is_refused_before_sign_in_and_the_lock() {
    let w = World::start();
    w.generate(50, 2303);
    w.config("public", DEFAULT);
    let state = w.state_dir();
    drop(cloudattach_core::state::StateStore::open(&state).expect("state"));
    let db = state.join("state.db");
    {
        let c = rusqlite::Connection::open(&db).expect("open state.db");
        c.execute_batch("PRAGMA user_version = 42;")
            .expect("a newer build's schema version");
    }
    let listing = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&state)
            .expect("state dir")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before_files = listing();
    let before = w.stats();
    for args in [
        &["apply", "--yes"][..],
        &["sync"],
        &["detach", "--yes"],
        &["disable", "--yes", "co-management"],
    ] {
        let r = w.cli(args);
        r.code(2);
        for part in ["schema version 42", "state.db"] {
            assert!(
                r.stderr.contains(part),
                "{args:?}: {part:?} in {}",
                r.stderr
            );
        }
        // And the newest this build knows.
        let newest = r
            .stderr
            .split("newer than ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|n| n.parse::<u32>().ok());
        assert!(newest.is_some_and(|n| n < 42), "{args:?}: {}", r.stderr);
        assert!(
            !r.stderr.contains("devicelogin") && !r.stderr.contains("signed in"),
            "{args:?} signed in: {}",
            r.stderr
        );
        let after = w.stats();
        for counter in ["requests", "device_codes"] {
            assert_eq!(after[counter], before[counter], "{args:?}: {after}");
        }
        assert_eq!(listing(), before_files, "{args:?} left files behind");
    }
}

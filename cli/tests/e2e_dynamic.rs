//! End to end with dynamic plugins: the third-party example loaded from a plugin directory is
//! checked, planned, applied, synced, reported and disabled by the real binary against a cloud
//! tenant service started in-process, and its data is readable through the cloud's API; broken
//! and hostile libraries next to it do not stop the run.
//!
//! The libraries are built by the test with a nested `cargo build --target-dir
//! target/dynamic-plugins` (the same command as `core/tests/dynamic.rs`, so they are built once).

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli is in the workspace")
        .to_path_buf()
}

/// Builds the plugin libraries once per test process; returns their directory.
fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let target = workspace().join("target").join("dynamic-plugins");
        let status = Command::new(env!("CARGO"))
            .current_dir(workspace())
            .args([
                "build",
                "--quiet",
                "-p",
                "cloudattach-dynamic-plugins",
                "--examples",
            ])
            .args(["--features", "cloudattach-dynamic-plugins/fixtures"])
            .args(["-p", "cloudattach-example-collection-summary", "--lib"])
            // The libraries are built in the profile of the test that loads them.
            .args(if cfg!(debug_assertions) {
                &[][..]
            } else {
                &["--release"][..]
            })
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo to build the plugin libraries");
        assert!(status.success(), "building the plugin libraries failed");
        target.join(if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        })
    })
}

fn lib_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(
        "{}{name}{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ))
}

/// Copies libraries into `<work>/plugins` under the given names.
fn install(w: &World, libs: &[(PathBuf, &str)]) -> PathBuf {
    let dir = w.dir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    for (src, name) in libs {
        std::fs::copy(
            src,
            dir.join(format!("{name}.{}", std::env::consts::DLL_EXTENSION)),
        )
        .unwrap();
    }
    dir
}

fn plugin<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {list}"))
}

const SUMMARY: &str = "[attach]\nsettings = \"custom\"\n\n[plugins]\ndirs = [\"plugins\"]\n\n\
    [features.tenant-attach]\nupload = \"all\"\n\n[features.collection-summary]\nmax_os_entries = 3\n";

#[test]
fn a_third_party_plugin_from_a_plugin_dir_runs_like_a_builtin_and_its_data_is_in_the_cloud() {
    let w = World::start();
    let site = w.generate(1_500, 2303);
    w.config("public", SUMMARY);
    install(
        &w,
        &[(
            lib_file(built(), "cloudattach_example_collection_summary"),
            "collection-summary",
        )],
    );

    let list = w.cli(&["--output", "json", "plugins", "list"]);
    list.ok();
    let listed = list.json();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "collection-summary")
        .expect("listed");
    assert_eq!(entry["origin"], "dynamic");
    assert_eq!(entry["depends_on"], serde_json::json!(["tenant-attach"]));

    let check = w.cli(&["--output", "json", "check", "collection-summary"]);
    check.ok();
    assert_eq!(
        plugin(&check.json(), "collection-summary")["status"],
        "pass",
        "{}",
        check.stdout
    );

    let plan = w.cli(&["--output", "json", "plan"]);
    plan.ok();
    let plan = plan.json();
    let order: Vec<&str> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["plugin"].as_str().unwrap())
        .collect();
    let at = |id| order.iter().position(|p| *p == id).unwrap();
    assert!(at("tenant-attach") < at("collection-summary"), "{order:?}");
    assert_eq!(plan["steps"][at("collection-summary")]["action"], "enable");

    let applied = w.apply_ok();
    let step = &steps(&applied)["collection-summary"];
    assert_eq!(step["status"], "done", "{step}");

    // The data, read back through the cloud's API.
    let records = w.get(&format!(
        "/api/v1/hierarchies/{}/ext/collection-summary/records",
        site.hid
    ));
    let by_key: std::collections::BTreeMap<&str, &Value> = records["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), &r["record"]))
        .collect();
    let all = by_key["SMS00001"];
    assert_eq!(all["devices"], site.devices.len());
    assert_eq!(all["clients"], site.clients().len());
    assert_eq!(all["uploaded"], site.clients().len());
    assert!(
        all["os"].as_object().unwrap().len() <= 3,
        "max_os_entries = 3: {all}"
    );
    for (id, record) in &by_key {
        if *id != "SMS00001" {
            assert_eq!(
                record["devices"],
                site.effective(id).len(),
                "collection {id}"
            );
        }
    }

    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    let summary = plugin(&status.json(), "collection-summary").clone();
    assert_eq!(summary["enabled"], true, "{summary}");
    assert_eq!(summary["counts"]["collections_reported"], by_key.len());

    let sync = w.cli(&["--output", "json", "sync"]);
    sync.ok();
    assert_eq!(
        plugin(&sync.json(), "collection-summary")["sent"],
        0,
        "nothing changed"
    );

    w.cli(&["--output", "json", "disable", "collection-summary"])
        .ok();
    let status = w.cli(&["--output", "json", "status"]);
    assert_eq!(
        plugin(&status.json(), "collection-summary")["enabled"],
        false
    );
}

#[test]
fn broken_and_hostile_libraries_do_not_stop_the_run() {
    let w = World::start();
    let site = w.generate(500, 2303);
    w.config(
        "public",
        &format!("{SUMMARY}\n[features.panicky]\npanic_in = \"apply-and-after\"\n"),
    );
    let examples = built().join("examples");
    let dir = install(
        &w,
        &[
            (
                lib_file(built(), "cloudattach_example_collection_summary"),
                "collection-summary",
            ),
            (lib_file(&examples, "panicking"), "panicky"),
            (lib_file(&examples, "old_sdk"), "old-sdk"),
            (lib_file(&examples, "bad_layout"), "bad-layout"),
            (
                lib_file(&examples, "builtin_tenant_attach"),
                "tenant-attach-copy",
            ),
        ],
    );
    std::fs::write(
        dir.join(format!("junk.{}", std::env::consts::DLL_EXTENSION)),
        "junk",
    )
    .unwrap();

    let list = w.cli(&["--output", "json", "plugins", "list"]);
    list.ok();
    assert_eq!(
        list.json().as_array().unwrap().len(),
        7,
        "5 built-ins + 2 loaded"
    );
    for expected in [
        "old-sdk.so: built against cloudattach-sdk 0.0.9; this cloudattach needs 0.2.x: rebuild the plugin",
        "bad-layout.so: layout mismatch",
        "junk.so: not a plugin library",
        "tenant-attach-copy.so: plugin id `tenant-attach` is registered twice",
    ] {
        let expected = expected.replace(".so", &format!(".{}", std::env::consts::DLL_EXTENSION));
        assert!(
            list.stderr.contains(&expected),
            "{expected:?} in:\n{}",
            list.stderr
        );
    }
    assert_eq!(
        list.stderr.lines().count(),
        4,
        "one line per failure:\n{}",
        list.stderr
    );
    // A script sees the failures too, when it asks.
    let with = w.cli(&["--output", "json", "plugins", "list", "--include-failures"]);
    with.ok();
    let with = with.json();
    assert_eq!(with["plugins"].as_array().unwrap().len(), 7);
    let failures = with["load_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 4, "{with}");
    assert!(
        failures
            .iter()
            .any(|f| f["path"].as_str().unwrap().contains("junk.")
                && f["message"]
                    .as_str()
                    .unwrap()
                    .contains("not a plugin library")),
        "{with}"
    );

    w.cli(&["--output", "json", "check"]).ok();
    let r = w.cli(&["--output", "json", "apply", "--yes"]);
    r.code(1);
    let steps = steps(&r.json());
    assert_eq!(steps["panicky"]["status"], "failed", "{}", steps["panicky"]);
    assert!(
        steps["panicky"]
            .to_string()
            .contains("boom in apply, mid-upload"),
        "{}",
        steps["panicky"]
    );
    assert_eq!(steps["tenant-attach"]["status"], "done");
    assert_eq!(steps["collection-summary"]["status"], "done");
    // The panicking plugin's unfinished upload left nothing in the cloud.
    let records = w.get(&format!(
        "/api/v1/hierarchies/{}/ext/panicky/records",
        site.hid
    ));
    assert_eq!(records["@odata.count"], 0, "{records}");

    // status reports each plugin on its own: the panicking one as an error, the rest as usual.
    let st = w.cli(&["--output", "json", "status"]);
    st.code(1);
    let v = st.json();
    let panicky = plugin(&v, "panicky");
    assert_eq!(panicky["enabled"], false, "{panicky}");
    assert!(
        panicky["error"]
            .as_str()
            .is_some_and(|e| e.contains("panicked")),
        "{panicky}"
    );
    assert_eq!(plugin(&v, "tenant-attach")["enabled"], true, "{v}");
    assert!(plugin(&v, "tenant-attach").get("error").is_none(), "{v}");
    let text = w.cli(&["status"]);
    text.code(1);
    assert!(text.stdout.contains("tenant-attach"), "{}", text.stdout);
    assert!(text.stdout.contains("panicked"), "{}", text.stdout);
}

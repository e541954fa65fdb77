//! End to end with dynamic plugins: the third-party example loaded from a plugin directory is
//! checked, planned, applied, synced, reported and disabled by the real binary against a cloud
//! tenant service started in-process, and its data is readable through the cloud's API; broken
//! and hostile libraries next to it do not stop the run.
//!
//! The libraries are built by the test with a nested `cargo build` into the workspace's target
//! dir (the same command as `core/tests/dynamic.rs`, so they are built once, on the
//! dependencies the test build compiled).

use super::common::*;
use cloudattach_dynamic_plugins::{built, target_dir, workspace};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

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
    let mut site = w.generate(1_500, 2303);
    // BitLocker, which cloudattach does not model: the plugin reads it from the extension data,
    // which crosses into the library with each device.
    let (mut reported, mut escrowed) = (0, 0);
    for (i, d) in site
        .devices
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| i % 3 != 0)
    {
        d["bitlocker"] = serde_json::json!({ "recovery_key_escrowed": i % 2 == 0 });
        reported += 1;
        escrowed += usize::from(i % 2 == 0);
    }
    site.save_devices();
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
    let records = w.get_all(&format!(
        "/api/v1/hierarchies/{}/ext/collection-summary/records",
        site.hid
    ));
    let by_key: std::collections::BTreeMap<&str, &Value> = records
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), &r["record"]))
        .collect();
    let all = by_key["SMS00001"];
    assert_eq!(all["devices"], site.devices.len());
    assert_eq!(all["clients"], site.clients().len());
    assert_eq!(all["uploaded"], site.clients().len());
    assert_eq!(
        all["bitlocker"],
        serde_json::json!({ "reported": reported, "recovery_key_escrowed": escrowed })
    );
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

    w.cli(&["--output", "json", "disable", "--yes", "collection-summary"])
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

/// The Rust block of the plugin guide that follows `marker`.
fn guide_block(marker: &str) -> String {
    let guide = std::fs::read_to_string(workspace().join("docs/plugin-authors.md")).unwrap();
    let from = guide
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in the guide"));
    let rest = &guide[from..];
    let fence = rest.find("```rust\n").expect("a rust block");
    // The block's indentation is its fence's (a block inside a list item is indented).
    let indent = fence - rest[..fence].rfind('\n').map_or(0, |i| i + 1);
    let start = fence + "```rust\n".len();
    let end = rest[start..].find("```").expect("the block ends") + start;
    rest[start..end]
        .lines()
        .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_new_plugin_crate_builds_tests_loads_and_applies_against_the_cloud() {
    let w = World::start();
    let site = w.generate(800, 2303);
    let krate = w.dir().join("inventory-report");
    let ws = workspace();
    let ws_arg = ws.to_str().unwrap();

    // Bad input writes nothing.
    let bad = w.cli(&["plugins", "new", "Inventory-", "--sdk-path", ws_arg]);
    bad.code(2);
    assert!(
        bad.stderr.contains("plugin id \"Inventory-\""),
        "{}",
        bad.stderr
    );
    let nowhere = w.cli(&[
        "plugins",
        "new",
        "inventory-report",
        "--sdk-path",
        "/nonexistent",
    ]);
    nowhere.code(2);
    assert!(
        nowhere.stderr.contains("no sdk/Cargo.toml"),
        "{}",
        nowhere.stderr
    );
    assert!(!krate.exists());

    let made = w.cli(&[
        "--output",
        "json",
        "plugins",
        "new",
        "inventory-report",
        "--sdk-path",
        ws_arg,
    ]);
    made.ok();
    let made = made.json();
    assert_eq!(made["files"].as_array().unwrap().len(), 4, "{made}");
    let cargo_toml = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
    assert!(
        cargo_toml.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
        "pinned to this SDK:\n{cargo_toml}"
    );
    // What the guide shows is what the command writes, and so what this test builds and runs.
    let lib = std::fs::read_to_string(krate.join("src/lib.rs")).unwrap();
    assert_eq!(guide_block("2. **The plugin**").trim(), lib.trim());
    let test = std::fs::read_to_string(krate.join("tests/plugin.rs")).unwrap();
    assert_eq!(guide_block("## Testing").trim(), test.trim());
    let again = w.cli(&["plugins", "new", "inventory-report", "--sdk-path", ws_arg]);
    again.code(2);
    assert!(again.stderr.contains("is not empty"), "{}", again.stderr);

    // Its own tests pass, and its library builds, against this checkout's SDK. The lock file of
    // the workspace keeps dependency versions (and the cache) the same; the target dir is the
    // workspace's, where the other plugin libraries were built first.
    built();
    std::fs::copy(ws.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let target = target_dir();
    // The workspace's dev profile for dependencies, so the libraries compiled for the other
    // plugins are reused rather than compiled again.
    let cargo = |command: &str| {
        Command::new(env!("CARGO"))
            .current_dir(&krate)
            .args(["--config", "profile.dev.package.\"*\".opt-level=1"])
            .args([command, "--quiet", "--target-dir"])
            .arg(&target)
            .status()
            .unwrap_or_else(|e| panic!("run cargo {command} on the new crate: {e}"))
    };
    assert!(cargo("test").success(), "the new crate's tests failed");
    let status = cargo("build");
    assert!(status.success(), "the new crate's library did not build");
    let lib_path = lib_file(&target.join("debug"), "inventory_report");
    assert!(lib_path.is_file(), "{}", lib_path.display());

    install(&w, &[(lib_path, "inventory-report")]);
    w.config(
        "public",
        "[attach]\nsettings = \"custom\"\n\n[plugins]\ndirs = [\"plugins\"]\n\n\
         [features.tenant-attach]\nupload = \"all\"\n\n[features.inventory-report]\nenabled = true\n",
    );
    let check = w.cli(&["--output", "json", "check", "inventory-report"]);
    check.ok();
    assert_eq!(plugin(&check.json(), "inventory-report")["status"], "pass");
    let applied = w.apply_ok();
    assert_eq!(
        steps(&applied)["inventory-report"]["status"],
        "done",
        "{applied}"
    );

    // One record per model of the uploaded workstations, computed from the site files.
    let mut expected: std::collections::BTreeMap<String, u64> = Default::default();
    for d in &site.devices {
        let os = d["os"].as_str().unwrap_or_default();
        if d["client"] == true && !os.contains("Server") {
            let model = d["model"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or("(no model)");
            *expected.entry(model.to_string()).or_default() += 1;
        }
    }
    let records = w.get_all(&format!(
        "/api/v1/hierarchies/{}/ext/inventory-report/records",
        site.hid
    ));
    let held: std::collections::BTreeMap<String, u64> = records
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["record"]["devices"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(held, expected);
    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    assert_eq!(
        plugin(&status.json(), "inventory-report")["counts"]["records"],
        expected.len()
    );
}

/// A feature enabled in the tenant whose plugin is not loaded here (the library is not in a
/// plugin directory this run): status lists it with what to load, plan and apply show it as a
/// skip saying so, and apply leaves it and its data alone.
#[test]
fn a_feature_enabled_in_the_tenant_whose_plugin_is_not_loaded_is_shown_and_left_alone() {
    let w = World::start();
    let site = w.generate(400, 2303);
    w.config("public", SUMMARY);
    install(
        &w,
        &[(
            lib_file(built(), "cloudattach_example_collection_summary"),
            "collection-summary",
        )],
    );
    let applied = w.apply_ok();
    assert_eq!(steps(&applied)["collection-summary"]["status"], "done");
    let records = |w: &World| {
        w.get(&format!(
            "/api/v1/hierarchies/{}/ext/collection-summary/records",
            site.hid
        ))["@odata.count"]
            .clone()
    };
    let before = records(&w);
    assert!(before.as_u64().is_some_and(|n| n > 0), "{before}");

    // The same site without the plugin directory and without the feature's table.
    w.config(
        "public",
        "[attach]\nsettings = \"custom\"\n\n[features.tenant-attach]\nupload = \"all\"\n",
    );
    let st = w.cli(&["--output", "json", "status"]);
    st.ok();
    let v = st.json();
    let entry = plugin(&v, "collection-summary");
    assert_eq!(entry["enabled"], true, "{entry}");
    assert!(
        entry["note"]
            .as_str()
            .is_some_and(|n| n.contains("not loaded") && n.contains("--plugin-dir")),
        "{entry}"
    );
    let text = w.cli(&["status"]);
    text.ok();
    assert!(
        text.stderr
            .lines()
            .any(|l| l.starts_with("collection-summary:") && l.contains("--plugin-dir")),
        "{}",
        text.stderr
    );

    let plan = w.cli(&["--output", "json", "plan"]);
    plan.ok();
    let planned = steps(&plan.json());
    let step = &planned["collection-summary"];
    assert_eq!(step["action"], "skip", "{step}");
    assert!(
        step["reason"]
            .as_str()
            .is_some_and(|r| r.contains("--plugin-dir")),
        "{step}"
    );

    let r = w.cli(&["--output", "json", "apply", "--yes"]);
    r.ok();
    let done = steps(&r.json());
    assert_eq!(
        done["collection-summary"]["status"], "skipped",
        "{}",
        r.stdout
    );
    assert!(
        w.counts(&site.hid).enabled.contains("collection-summary"),
        "apply disabled it"
    );
    assert_eq!(records(&w), before, "apply touched its records");
}

/// The OS family the example plugin counts a device under, restated from the site file's
/// fields: a server caption, Windows 11 (10.0 from build 22000), Windows 10 (10.0), else the
/// caption itself ("Unknown" when empty).
fn os_family(d: &Value) -> String {
    let os = d["os"].as_str().unwrap_or_default();
    let build = d["os_build"].as_str().unwrap_or_default();
    if os.contains("Server") {
        "Windows Server".into()
    } else if os == "Microsoft Windows NT Workstation 10.0" && build.starts_with("10.0.") {
        if version_lt(build, "10.0.22000") {
            "Windows 10".into()
        } else {
            "Windows 11".into()
        }
    } else if os.trim().is_empty() {
        "Unknown".into()
    } else {
        os.to_string()
    }
}

/// The rows `collection-report` should answer for `collection` with `top`, computed from the
/// site files (tenant attach uploads every device with a client here): one row per OS family,
/// the most devices first, the families after the first `top - 1` folded into "Other" when
/// there are more than `top`.
fn expected_report(site: &SiteModel, collection: &str, top: usize) -> Value {
    let members = site.effective(collection);
    let mut by_os: std::collections::BTreeMap<String, [u64; 3]> = Default::default();
    for d in &site.devices {
        if !members.contains(&d["resource_id"].as_i64().unwrap()) {
            continue;
        }
        let client = u64::from(d["client"] == true);
        let row = by_os.entry(os_family(d)).or_default();
        row[0] += 1;
        row[1] += client;
        row[2] += client;
    }
    let mut rows: Vec<(String, [u64; 3])> = by_os.into_iter().collect();
    rows.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    if rows.len() > top {
        let keep = top.saturating_sub(1).max(1);
        let mut other = [0u64; 3];
        for (_, r) in rows.drain(keep..) {
            for i in 0..3 {
                other[i] += r[i];
            }
        }
        rows.push(("Other".into(), other));
    }
    Value::from(
        rows.into_iter()
            .map(|(os, [n, c, u])| serde_json::json!([os, n, c, u]))
            .collect::<Vec<_>>(),
    )
}

fn ask_collection(w: &World, token: &str, hid: &str, collection: &str, body: Value) -> Value {
    let (s, v) = w.request(
        reqwest::Method::POST,
        &format!("/api/v1/hierarchies/{hid}/collections/{collection}/actions"),
        token,
        Some(&body),
    );
    assert_eq!(s, 202, "ask {body} on {collection}: {v}");
    v
}

fn action_doc(w: &World, token: &str, asked: &Value) -> Value {
    let (s, v) = w.request(
        reqwest::Method::GET,
        &format!("/api/v1/actions/{}", asked["id"].as_str().unwrap()),
        token,
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

/// A third party's cloud action through the dynamic boundary: the example's `collection-report`
/// is declared by apply, asked by a help-desk person on a collection, authorized by the site's
/// RBAC (a role granting only Read suffices for it, not for resource explorer) and answered by
/// the library through the connector, from the site as it is when asked; a collection outside
/// the person's assigned collections is refused by the collection scope, with no data.
#[test]
fn a_third_party_plugins_cloud_action_is_declared_authorized_and_answered_from_the_site() {
    let mut w = World::start();
    let mut site = w.generate(1_200, 2303);
    w.config("public", SUMMARY);
    install(
        &w,
        &[(
            lib_file(built(), "cloudattach_example_collection_summary"),
            "collection-summary",
        )],
    );
    // The generated collection with the most members is the person's; another is not.
    let mut generated: Vec<(usize, String)> = site
        .collections
        .keys()
        .filter(|id| id.as_str() != "SMS00001")
        .map(|id| (site.effective(id).len(), id.clone()))
        .collect();
    generated.sort();
    let (size, assigned) = generated.pop().expect("a generated collection");
    assert!(size > 0, "{assigned} has members");
    let (_, outside) = generated.pop().expect("a second collection");

    let plan = w.cli(&["plan"]);
    plan.ok();
    let shown = format!("{}{}", plan.stdout, plan.stderr);
    assert!(
        shown
            .lines()
            .any(|l| l.contains("collection-summary")
                && l.contains("cloud actions: collection-report")),
        "{shown}"
    );
    let applied = w.apply_ok();
    let step = &steps(&applied)["collection-summary"];
    assert_eq!(step["status"], "done", "{step}");
    assert!(
        step["findings"]
            .to_string()
            .contains("cloud actions declared: collection-report"),
        "{step}"
    );

    // The site after the upload: some of the collection's devices lose their client. The
    // report is computed from the site when asked, never from what was uploaded.
    let members = site.effective(&assigned);
    let clients_before = members
        .iter()
        .filter(|id| site.clients().contains(id))
        .count() as u64;
    let mut changed = 0;
    for d in site.devices.iter_mut() {
        let id = d["resource_id"].as_i64().unwrap();
        if members.contains(&id) && d["client"] == true && changed < 5 {
            d["client"] = Value::Bool(false);
            d["client_version"] = Value::Null;
            changed += 1;
        }
    }
    site.save_devices();

    people_sign_in_themselves(&mut w, None);
    let rbac = serde_json::json!({
        "discovered_users": [{
            "upn": "helpdesk@contoso.example",
            "object_id": cloudattach_cloud::seed::seeded_user_object_id(
                cloudattach_cloud::seed::CONTOSO_TENANT_ID,
                "helpdesk",
            )
            .unwrap(),
            "tenant_id": cloudattach_cloud::seed::CONTOSO_TENANT_ID,
        }],
        "security_roles": [{"name": "Collection Reader", "permissions": ["Read"]}],
        "administrative_users": [{
            "upn": "helpdesk@contoso.example",
            "roles": ["Collection Reader"],
            "collections": [assigned],
        }],
    });
    std::fs::write(
        w.site_dir().join("rbac.json"),
        serde_json::to_string_pretty(&rbac).unwrap(),
    )
    .unwrap();
    let helpdesk = user_token(&w, "helpdesk@contoso.example");
    let readonly = user_token(&w, "readonly@contoso.example");
    let hid = site.hid.clone();
    let report = |top: Option<u64>| match top {
        Some(n) => serde_json::json!({"action": "collection-report", "parameters": {"top": n}}),
        None => serde_json::json!({"action": "collection-report", "parameters": {}}),
    };
    let top2 = ask_collection(&w, &helpdesk, &hid, &assigned, report(Some(2)));
    assert_eq!(top2["status"], "pending", "{top2}");
    let default_top = ask_collection(&w, &helpdesk, &hid, &assigned, report(None));
    let scoped = ask_collection(&w, &helpdesk, &hid, &outside, report(None));
    let read_only = ask_collection(&w, &readonly, &hid, &assigned, report(None));
    assert_eq!(read_only["status"], "unauthorized", "{read_only}");
    let refused = action_doc(&w, &readonly, &read_only);
    assert_eq!(refused["error"]["code"], "intune-role", "{refused}");
    let member = *members.iter().next().unwrap();
    let (s, explorer) = w.request(
        reqwest::Method::POST,
        &format!("/api/v1/hierarchies/{hid}/devices/{member}/actions"),
        &helpdesk,
        Some(&serde_json::json!({"action": "resource-explorer", "parameters": {}})),
    );
    assert_eq!(s, 202, "{explorer}");

    let r = w.cli(&["--output", "json", "connect", "--once"]);
    r.ok();
    let served = r.json();
    assert_eq!(served["served"].as_array().unwrap().len(), 4, "{served}");

    let now = SiteModel::load(&w.site_dir());
    let done = action_doc(&w, &helpdesk, &top2);
    assert_eq!(
        (done["status"].clone(), done["authority"].clone()),
        (Value::from("succeeded"), Value::from("configmgr+intune")),
        "{done}"
    );
    assert_eq!(done["feature"], "collection-summary", "{done}");
    assert_eq!(
        done["result"]["columns"],
        serde_json::json!(["os", "devices", "clients", "uploaded"])
    );
    assert_eq!(done["result"]["rows"], expected_report(&now, &assigned, 2));
    let done = action_doc(&w, &helpdesk, &default_top);
    assert_eq!(done["status"], "succeeded", "{done}");
    // max_os_entries = 3 in attach.toml: the default of `top`.
    let rows = expected_report(&now, &assigned, 3);
    assert_eq!(done["result"]["rows"], rows);
    let total: u64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[1].as_u64().unwrap())
        .sum();
    assert_eq!(total, members.len() as u64);
    let clients: u64 = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[2].as_u64().unwrap())
        .sum();
    assert_eq!(clients, clients_before - changed, "the site as it is now");

    let done = action_doc(&w, &helpdesk, &scoped);
    assert_eq!(done["status"], "unauthorized", "{done}");
    assert_eq!(done["error"]["code"], "collection-scope", "{done}");
    assert!(done["result"].is_null(), "a refused action carries no data");
    // The same role does not grant resource explorer (Read Resource).
    let done = action_doc(&w, &helpdesk, &explorer);
    assert_eq!(done["error"]["code"], "site-role", "{done}");
    assert!(done["result"].is_null());
}

//! End to end: `cloudattach apply` against a cloud tenant service started in-process, checked
//! through the cloud's read API against counts computed from the site's files.

use super::common::*;

const DEFAULT: &str = "[attach]\nsettings = \"default\"\n";

/// Default settings: every feature on, the cloud holds exactly the site's client devices and
/// what follows from them; a second apply changes nothing and uploads nothing.
#[test]
fn default_settings_attach_everything_and_reapply_is_noop() {
    let w = World::start();
    let site = w.generate(2_000, 2303);
    w.config("public", DEFAULT);
    let run = w.cli(&["--output", "json", "apply", "--yes"]);
    run.ok();
    let first = run.json();
    for (id, s) in steps(&first) {
        assert_eq!(s["status"], "done", "{id}: {s}");
    }

    let expected = site.expected(None, None);
    assert_eq!(expected.devices as usize, site.clients().len());
    assert!(expected.devices > 0 && expected.scheduled > 0 && expected.comanaged > 0);
    let c = w.counts(&site.hid);
    assert_counts(&c, &expected);
    assert_eq!(c.authority, "configmgr+intune");
    assert_eq!(
        c.enabled,
        [
            "co-management",
            "defender-reporting",
            "endpoint-analytics",
            "rbac-authority",
            "tenant-attach"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    // The device list agrees with the status counts, and holds exactly the client devices.
    let devices = w.cloud_devices(&site.hid);
    assert_eq!(
        devices
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        site.clients()
    );
    assert_eq!(w.device_count(), expected.devices);
    // The overview shows the hierarchy with its five features.
    let hs = w.hierarchies();
    assert_eq!(hs.len(), 1, "{hs:?}");
    assert_eq!(hs[0]["counts"]["devices"], expected.devices);
    assert_eq!(hs[0]["effective_authority"], "configmgr+intune");
    // Defender reports are populated.
    let rows = w.get_all("/api/v1/reports/defender/antivirus-agent-status");
    assert_eq!(rows.len(), expected.defender as usize, "defender report");
    // Endpoint analytics computed scores from the enrolled devices.
    let ea = w.get("/api/v1/reports/endpoint-analytics");
    assert_eq!(ea["enrolled_devices"], expected.ea_enrolled);
    assert_eq!(ea["status"], "ok", "{ea}");

    // The app's secret and the cached tokens never show in the output.
    let app: serde_json::Value = serde_json::from_str(
        &std::fs::read_dir(w.state_dir())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("app-c0257050-0000-4000-8000-000000000001-")
            })
            .map(|p| std::fs::read_to_string(p).unwrap())
            .expect("the registered app's file"),
    )
    .unwrap();
    let secret = app["secret"].as_str().expect("the registered app's secret");
    let tokens = std::fs::read_to_string(w.state_dir().join("tokens.json")).unwrap();
    let tokens: serde_json::Value = serde_json::from_str(&tokens).unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let printed = format!("{}{}", run.stdout, run.stderr);
    assert!(
        !printed.contains(secret) && !printed.contains(access),
        "a secret in the apply output"
    );

    // Applying again: every step noop, and not one upload request.
    let before = w.stats()["requests"].as_u64().unwrap();
    let second = w.apply_ok();
    for (id, s) in steps(&second) {
        assert_eq!(s["action"], "noop", "{id}: {s}");
        assert_eq!(s["status"], "noop", "{id}: {s}");
    }
    let after = w.stats()["requests"].as_u64().unwrap();
    // An idempotent apply reads (me, app lookup, onboard) but uploads nothing: a handful of
    // requests, far fewer than the upload batches of the first run would be.
    assert!(
        after - before <= 10,
        "{} API requests on a no-op apply",
        after - before
    );
    assert_counts(&w.counts(&site.hid), &expected);
}

/// Custom settings: the upload is one collection with its subcollections and limiting
/// collection, co-management is a pilot: the cloud holds exactly those.
#[test]
fn custom_collection_upload_and_pilot_comanagement() {
    let w = World::start();
    let site = w.generate(2_000, 2303);
    w.config(
        "public",
        r#"[attach]
settings = "custom"

[features.tenant-attach]
enabled = true
upload = "PS100012"

[features.endpoint-analytics]
enabled = true

[features.defender-reporting]
enabled = true

[features.co-management]
enabled = true
enrollment = "pilot"
pilot_collection = "PS100020"
"#,
    );
    let out = w.apply_ok();
    let st = steps(&out);
    for (id, s) in &st {
        let want = if id == "rbac-authority" {
            "skipped"
        } else {
            "done"
        };
        assert_eq!(s["status"], want, "{id}: {s}");
    }

    let upload = site.effective("PS100012");
    let pilot = site.effective("PS100020");
    // The collection is built from includes and a limiting collection: make sure the scope is
    // a real subset, so the test would notice "all devices" being uploaded.
    let scope: std::collections::BTreeSet<i64> =
        upload.intersection(&site.clients()).copied().collect();
    assert!(!scope.is_empty() && scope.len() < site.clients().len());
    let expected = site.expected(Some(&upload), Some(&pilot));
    assert_eq!(expected.devices as usize, scope.len());
    assert!(expected.scheduled > 0, "the pilot must schedule someone");
    let c = w.counts(&site.hid);
    assert_counts(&c, &expected);
    assert_eq!(
        w.cloud_devices(&site.hid)
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>(),
        scope
    );
    assert!(!c.enabled.contains("rbac-authority"), "{:?}", c.enabled);
}

/// rbac-authority with `enforce_configmgr_rbac = false`: while the tenant's "Use Intune RBAC"
/// toggle is off the authority stays `configmgr+intune` with a warning; once the toggle is on,
/// it is `intune`.
#[test]
fn rbac_intune_only_follows_the_tenant_toggle() {
    let w = World::start();
    let site = w.generate(300, 2303);
    w.config(
        "public",
        r#"[attach]
settings = "custom"

[features.tenant-attach]
enabled = true

[features.rbac-authority]
enabled = true
enforce_configmgr_rbac = false
"#,
    );
    let out = w.apply_ok();
    let rbac = &steps(&out)["rbac-authority"];
    assert_eq!(rbac["status"], "done", "{rbac}");
    let warned = rbac["findings"].as_array().unwrap().iter().any(|f| {
        f["severity"] == "warning" && f["message"].as_str().unwrap().contains("Intune RBAC")
    });
    assert!(warned, "no warning about the tenant toggle: {rbac}");
    assert_eq!(w.counts(&site.hid).authority, "configmgr+intune");

    // The administrator turns the toggle on (with the token apply cached).
    let tokens: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.state_dir().join("tokens.json")).unwrap())
            .unwrap();
    let admin = tokens["access_token"]
        .as_str()
        .expect("cached access token");
    let (s, v) = w.request(
        reqwest::Method::PUT,
        "/api/v1/tenant/settings",
        admin,
        Some(&serde_json::json!({"use_intune_rbac": true})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(w.counts(&site.hid).authority, "intune");
    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    let rbac = status.json()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "rbac-authority")
        .cloned()
        .expect("rbac-authority in status");
    let authority = rbac.get("effective_authority");
    assert_eq!(authority, Some(&serde_json::json!("intune")), "{rbac}");
}

/// Azure China Cloud with default settings: only co-management, the others skipped with their
/// reason; the cloud holds no devices.
#[test]
fn china_default_enables_only_comanagement() {
    let w = World::start_with(cloudattach_cloud::ServeOptions {
        environment: "china".into(),
        ..cloud_opts()
    });
    let site = w.generate(500, 2303);
    w.config("china", DEFAULT);
    let out = w.apply_ok();
    assert_eq!(out["environment"], "china");
    for (id, s) in steps(&out) {
        if id == "co-management" {
            assert_eq!(s["status"], "done", "{s}");
        } else {
            assert_eq!(s["status"], "skipped", "{id}: {s}");
            let reason = s["reason"].as_str().unwrap_or_default();
            assert!(!reason.is_empty(), "{id} skipped without a reason");
            assert!(
                reason.contains("China") || reason.contains("china"),
                "{id}: {reason}"
            );
        }
    }
    let mut expected = site.expected(None, None);
    (expected.devices, expected.ea_enrolled, expected.defender) = (0, 0, 0);
    let c = w.counts(&site.hid);
    assert_counts(&c, &expected);
    assert_eq!(
        c.enabled,
        ["co-management".to_string()].into_iter().collect()
    );
    assert_eq!(w.device_count(), 0);
}

/// Site version 2203: rbac-authority (2207) and defender-reporting (2303) are skipped with
/// reasons naming the versions; the rest is attached.
#[test]
fn site_2203_skips_rbac_and_defender() {
    let w = World::start();
    let site = w.generate(500, 2203);
    w.config("public", DEFAULT);
    let out = w.apply_ok();
    for (id, s) in steps(&out) {
        match id.as_str() {
            "rbac-authority" | "defender-reporting" => {
                assert_eq!(s["status"], "skipped", "{id}: {s}");
                let want = if id == "rbac-authority" {
                    "2207"
                } else {
                    "2303"
                };
                let reason = s["reason"].as_str().unwrap_or_default();
                assert!(reason.contains(want), "{id}: {reason}");
            }
            _ => assert_eq!(s["status"], "done", "{id}: {s}"),
        }
    }
    let mut expected = site.expected(None, None);
    expected.defender = 0;
    let c = w.counts(&site.hid);
    assert_counts(&c, &expected);
    assert!(!c.enabled.contains("rbac-authority") && !c.enabled.contains("defender-reporting"));
}

/// Custom settings that turn on features the environment does not support: a configuration
/// error naming every conflict at once (exit 2), and nothing changes.
#[test]
fn custom_conflicts_are_reported_at_once_and_change_nothing() {
    let w = World::start_with(cloudattach_cloud::ServeOptions {
        environment: "china".into(),
        ..cloud_opts()
    });
    w.generate(200, 2303);
    w.config(
        "china",
        r#"[attach]
settings = "custom"

[features.tenant-attach]
enabled = true

[features.endpoint-analytics]
enabled = true

[features.co-management]
enabled = true
enrollment = "all"
"#,
    );
    let r = w.cli(&["apply", "--yes"]);
    r.code(2);
    for id in ["tenant-attach", "endpoint-analytics"] {
        assert!(r.stderr.contains(id), "{id} not named:\n{}", r.stderr);
    }
    assert!(w.hierarchies().is_empty());
    assert!(
        !w.state_dir().join("tokens.json").exists(),
        "it signed in before refusing"
    );
}

/// Below 2111 (the wizard's version) apply refuses, naming 2111; without `--yes` and without
/// a terminal it refuses too. Nothing changes either way.
#[test]
fn apply_refuses_old_sites_and_unconfirmed_runs() {
    let w = World::start();
    w.generate(100, 2107);
    w.config("public", DEFAULT);
    let r = w.cli(&["apply", "--yes"]);
    r.code(2);
    assert!(r.stderr.contains("2111"), "{}", r.stderr);

    w.generate(100, 2303);
    let r = w.cli(&["apply"]);
    r.code(2);
    assert!(r.stderr.contains("--yes"), "{}", r.stderr);
    assert!(w.hierarchies().is_empty());
}

/// The text summary of apply and status formats counts with thousands separators and has no
/// trailing spaces; status text shows no settings JSON.
#[test]
fn text_summaries_format_counts_for_people() {
    let w = World::start();
    w.generate(2_500, 2303);
    w.config("public", DEFAULT);
    let r = w.cli(&["apply", "--yes"]);
    r.ok();
    let st = w.cli(&["status"]);
    st.ok();
    for (what, out) in [("apply", &r.stdout), ("status", &st.stdout)] {
        assert!(
            out.contains("devices_uploaded=2,"),
            "{what}: no separator:\n{out}"
        );
        // Every `key=N` count: at most 3 digits before a separator.
        let unseparated = out
            .split('=')
            .skip(1)
            .any(|rest| rest.chars().take_while(char::is_ascii_digit).count() > 3);
        assert!(!unseparated, "{what}: an unseparated count:\n{out}");
        for line in out.lines() {
            assert_eq!(line, line.trim_end(), "{what}: trailing spaces: {line:?}");
        }
    }
    assert!(!st.stdout.contains("settings="), "{}", st.stdout);
    assert!(!st.stdout.contains('{'), "{}", st.stdout);
}

const FEATURES: [&str; 5] = [
    "co-management",
    "tenant-attach",
    "defender-reporting",
    "endpoint-analytics",
    "rbac-authority",
];

/// Without `--yes` and without a terminal, apply refuses before anything — even when the
/// plan against the local state is all noops while the tenant has lost everything: no sign-in,
/// no app registration, no hierarchy, no records. With `--yes`, the Summary it prints before
/// changing anything is made against what the cloud holds: `enable` for everything it lost.
#[test]
fn apply_off_a_terminal_refuses_before_anything_and_its_summary_is_the_clouds() {
    let w = World::start();
    let site = w.generate(300, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    // The same directory pointed at a fresh tenant: the local state says everything is applied.
    let fresh = World::start();
    let config = std::fs::read_to_string(w.dir().join("attach.toml"))
        .unwrap()
        .replace(&w.base, &fresh.base);
    std::fs::write(w.dir().join("attach.toml"), config).unwrap();
    let plan = w.cli(&["plan"]);
    plan.ok();
    assert_eq!(summary_action(&plan.stdout, "tenant-attach"), "noop");

    let admin = fresh.admin_token();
    let apps = || {
        let (s, v) = fresh.request(reqwest::Method::GET, "/v1.0/applications", &admin, None);
        assert_eq!(s, 200, "{v}");
        v["value"].as_array().map(Vec::len).unwrap_or(0)
    };
    let apps_before = apps();
    let tokens = w.state_dir().join("tokens.json");
    let tokens_before = std::fs::read(&tokens).ok();
    let r = w.cli(&["apply"]);
    r.code(2);
    assert!(
        r.stderr.contains("not a terminal") && r.stderr.contains("--yes"),
        "{}",
        r.stderr
    );
    assert!(fresh.hierarchies().is_empty(), "a hierarchy was onboarded");
    assert_eq!(fresh.device_count(), 0, "records were uploaded");
    assert_eq!(apps(), apps_before, "an app was registered");
    assert_eq!(std::fs::read(&tokens).ok(), tokens_before, "it signed in");

    let r = w.cli(&["apply", "--yes"]);
    r.ok();
    for id in FEATURES {
        assert_eq!(
            summary_action(&r.stderr, id),
            "enable",
            "{id}:\n{}",
            r.stderr
        );
    }
    let c = fresh.counts(&site.hid);
    assert_eq!(c.devices, site.expected(None, None).devices);
    assert_eq!(c.enabled.len(), 5, "{:?}", c.enabled);
}

/// A feature disabled in the tenant behind the site's back is `enable` in the Summary apply
/// shows before it changes anything (the others `noop`), and apply enables it again.
#[test]
fn the_summary_shows_a_feature_the_cloud_disabled_as_enable() {
    let w = World::start();
    let site = w.generate(300, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let admin = w.admin_token();
    let (s, v) = w.request(
        reqwest::Method::DELETE,
        &format!(
            "/api/v1/hierarchies/{}/features/defender-reporting",
            site.hid
        ),
        &admin,
        None,
    );
    assert_eq!(s, 204, "{v}");
    assert!(!w.counts(&site.hid).enabled.contains("defender-reporting"));
    let r = w.cli(&["apply", "--yes"]);
    r.ok();
    for id in FEATURES {
        let want = if id == "defender-reporting" {
            "enable"
        } else {
            "noop"
        };
        assert_eq!(summary_action(&r.stderr, id), want, "{id}:\n{}", r.stderr);
    }
    let c = w.counts(&site.hid);
    assert!(c.enabled.contains("defender-reporting"), "{:?}", c.enabled);
    assert_eq!(c.defender, site.expected(None, None).defender);
}

/// A failing prerequisite check: plan shows its feature and the features that depend on it as
/// `skip` with the failing finding, and exits 1; apply uploads nothing for them (independent
/// features still run) and exits 1. `--ignore-check CODE` overrides one finding at a time; a
/// code no failing finding has is refused.
#[test]
fn a_failing_check_skips_its_feature_and_dependents_until_each_finding_is_overridden() {
    let w = World::start();
    let site = w.generate(300, 2303);
    set_site_keys(
        &w.site_dir(),
        &[
            ("service_connection_point", "\"offline\""),
            ("administration_service", "false"),
        ],
    );
    w.config("public", DEFAULT);
    w.cli(&["check", "tenant-attach"]).code(1);

    let p = w.cli(&["--output", "json", "plan"]);
    p.code(1);
    let plan = steps(&p.json());
    let reason = plan["tenant-attach"]["reason"].as_str().unwrap_or_default();
    assert_eq!(plan["tenant-attach"]["action"], "skip");
    assert!(
        reason.contains("service-connection-point-offline")
            && reason.contains("administration-service-missing"),
        "{reason}"
    );
    for id in ["defender-reporting", "endpoint-analytics", "rbac-authority"] {
        assert_eq!(plan[id]["action"], "skip", "{id}: {}", plan[id]);
    }
    assert_eq!(plan["co-management"]["action"], "enable");

    let typo = w.cli(&["plan", "--ignore-check", "service-connection-point-ofline"]);
    typo.code(2);
    assert!(
        typo.stderr
            .contains("no failing check finding has this code"),
        "{}",
        typo.stderr
    );

    let r = w.cli(&["--output", "json", "apply", "--yes"]);
    r.code(1);
    let done = steps(&r.json());
    assert_eq!(done["tenant-attach"]["status"], "skipped");
    assert_eq!(done["co-management"]["status"], "done");
    let c = w.counts(&site.hid);
    assert_eq!(c.devices, 0, "devices uploaded despite the failed check");
    assert_eq!(c.defender, 0);
    assert_eq!(c.ea_enrolled, 0);
    assert_eq!(
        c.enabled,
        ["co-management".to_string()].into_iter().collect(),
        "{:?}",
        c.enabled
    );

    // One finding overridden: the other still skips tenant-attach.
    let r = w.cli(&[
        "apply",
        "--yes",
        "--ignore-check",
        "service-connection-point-offline",
    ]);
    r.code(1);
    assert_eq!(w.counts(&site.hid).devices, 0);

    // Both overridden: it goes ahead.
    let r = w.cli(&[
        "apply",
        "--yes",
        "--ignore-check",
        "service-connection-point-offline",
        "--ignore-check",
        "administration-service-missing",
    ]);
    r.ok();
    let c = w.counts(&site.hid);
    assert_eq!(c.devices, site.expected(None, None).devices);
    assert_eq!(c.enabled.len(), 5, "{:?}", c.enabled);
}

/// The apps cloudattach registered in the tenant (named `ConfigMgrService-<site code>`).
fn registered_apps(w: &World, admin: &str) -> Vec<serde_json::Value> {
    let (s, apps) = w.request(reqwest::Method::GET, "/v1.0/applications", admin, None);
    assert_eq!(s, 200, "{apps}");
    apps["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["displayName"]
                .as_str()
                .is_some_and(|n| n.starts_with("ConfigMgrService"))
        })
        .cloned()
        .collect()
}

/// The client id of the app that owns the hierarchy, as the cloud holds it.
fn owner_of(w: &World, hid: &str) -> String {
    w.get(&format!("/api/v1/hierarchies/{hid}"))["app_id"]
        .as_str()
        .expect("app_id")
        .to_string()
}

/// The state directory the first apply used is put aside, so the next command runs from a
/// fresh one (another machine, or the local state lost).
fn fresh_state_dir(w: &World, keep_as: &str) {
    std::fs::rename(w.state_dir(), w.dir().join(keep_as)).unwrap();
}

/// Applying from a state directory that does not have the credentials of the app that owns the
/// hierarchy: without `--takeover` it names the owning app and the flag and registers nothing
/// (apply and detach alike; status and sync point to apply's flag); with `--yes --takeover` it adds a secret to that app and attaches
/// with it — still exactly one app registration — and detach from there works.
#[test]
fn another_state_directory_takes_over_the_owning_app_only_when_asked() {
    let w = World::start();
    let site = w.generate(200, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let admin = w.admin_token();
    let apps = registered_apps(&w, &admin);
    assert_eq!(apps.len(), 1, "{apps:?}");
    let (name, client_id) = (
        apps[0]["displayName"].as_str().unwrap().to_string(),
        apps[0]["appId"].as_str().unwrap().to_string(),
    );
    assert_eq!(apps[0]["passwordCredentials"].as_array().unwrap().len(), 1);
    assert_eq!(owner_of(&w, &site.hid), client_id);

    fresh_state_dir(&w, ".cloudattach-a");
    for (args, flag) in [
        (&["apply", "--yes"][..], "cloudattach apply --takeover"),
        (&["detach", "--yes"][..], "cloudattach detach --takeover"),
        (&["status"][..], "cloudattach apply --takeover"),
        (&["sync"][..], "cloudattach apply --takeover"),
    ] {
        let r = w.cli(args);
        r.code(2);
        for part in [name.as_str(), client_id.as_str(), flag] {
            assert!(
                r.stderr.contains(part),
                "{args:?}: {part:?} in {}",
                r.stderr
            );
        }
        let now = registered_apps(&w, &admin);
        assert_eq!(now.len(), 1, "{args:?} registered an app: {now:?}");
        assert_eq!(now[0]["passwordCredentials"].as_array().unwrap().len(), 1);
        assert_eq!(owner_of(&w, &site.hid), client_id);
    }

    let r = w.cli(&["--output", "json", "apply", "--yes", "--takeover"]);
    r.ok();
    assert_eq!(r.json()["app"]["client_id"], client_id.as_str());
    assert!(r.stderr.contains("took over app"), "{}", r.stderr);
    let apps = registered_apps(&w, &admin);
    assert_eq!(apps.len(), 1, "{apps:?}");
    assert_eq!(
        apps[0]["passwordCredentials"].as_array().unwrap().len(),
        2,
        "the owning app gained a secret"
    );
    assert_eq!(owner_of(&w, &site.hid), client_id);
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));

    w.cli(&["detach", "--yes"]).ok();
    assert!(w.hierarchies().is_empty());
    assert_eq!(registered_apps(&w, &admin).len(), 1);
}

/// The README's flow: the demo applied against the embedded cloud, then the same data served
/// with `cloud serve` and applied against: the app this directory registered for the embedded
/// endpoint owns the hierarchy, so its credentials are used — no second app, no 403 — and
/// detach works.
#[test]
fn the_embedded_cloud_then_the_same_data_served() {
    let w = World::start();
    let site = w.generate(100, 2303);
    let write = |endpoint: &str| {
        let text = format!(
            "[site]\npath = \"site\"\n\n[cloud]\nendpoint = \"{endpoint}\"\ntenant = \"{TENANT}\"\n\n{DEFAULT}"
        );
        std::fs::write(w.dir().join("attach.toml"), text).unwrap();
    };
    write("embedded");
    let first = w.apply_ok()["app"]["client_id"].clone();
    let served =
        w.rt.block_on(cloudattach_cloud::start(cloudattach_cloud::ServeOptions {
            data: Some(w.state_dir().join("cloud")),
            ..cloud_opts()
        }))
        .expect("serve the embedded cloud's data");
    write(&served.base_url());
    let r = w.cli(&["--output", "json", "apply", "--yes"]);
    r.ok();
    assert_eq!(r.json()["app"]["client_id"], first, "another app was used");
    for step in steps(&r.json()).values() {
        assert_eq!(step["status"], "noop", "{step}");
    }
    w.cli(&["detach", "--yes"]).ok();
    let hierarchies = w.rt.block_on(async {
        let http = reqwest::Client::new();
        let token: serde_json::Value = http
            .post(format!("{}/{TENANT}/oauth2/v2.0/token", served.base_url()))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", cloudattach_cloud::seed::CONTOSO_READER_APP_ID),
                ("client_secret", cloudattach_cloud::seed::DEV_SECRET),
                ("scope", "api://cloudattach/.default"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let overview: serde_json::Value = http
            .get(format!("{}/api/v1/overview", served.base_url()))
            .bearer_auth(token["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        overview["hierarchies"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    });
    assert!(
        !hierarchies
            .iter()
            .any(|h| h["hierarchy_id"] == site.hid.as_str()),
        "{hierarchies:?}"
    );
    w.rt.block_on(served.shutdown());
}

/// A damaged credentials file is an error naming it (exit 2) for every command that uses the
/// app, never a reason to register a second app.
#[test]
fn a_damaged_credentials_file_is_an_error_naming_it() {
    let w = World::start();
    let site = w.generate(100, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let admin = w.admin_token();
    let file = std::fs::read_dir(w.state_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("app-"))
        .expect("the app credentials file");
    std::fs::write(&file, b"{\"tenant_id\": \"c0257050-").unwrap();
    for args in [
        &["apply", "--yes"][..],
        &["sync"],
        &["status"],
        &["detach", "--yes"],
    ] {
        let r = w.cli(args);
        r.code(2);
        assert!(
            r.stderr.contains(&file.display().to_string()),
            "{args:?}: {}",
            r.stderr
        );
        assert_eq!(registered_apps(&w, &admin).len(), 1, "{args:?}");
        assert_eq!(w.hierarchies().len(), 1, "{args:?}");
    }
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

/// A configured environment that is not the tenant's is refused before anything is
/// registered: no app, no hierarchy.
#[test]
fn an_environment_mismatch_registers_nothing() {
    let w = World::start_with(cloudattach_cloud::ServeOptions {
        environment: "usgov".into(),
        ..cloud_opts()
    });
    w.generate(100, 2303);
    w.config("public", DEFAULT);
    let r = w.cli(&["apply", "--yes"]);
    r.code(2);
    assert!(
        r.stderr.contains("Azure US Government") && r.stderr.contains("environment"),
        "{}",
        r.stderr
    );
    let admin = w.admin_token();
    assert!(registered_apps(&w, &admin).is_empty());
    assert!(w.hierarchies().is_empty());
}

/// An apply killed after it registered the app and before it kept its credentials or onboarded
/// leaves that app in the tenant: the next apply finds it by the App ID URI it gave it and uses
/// it, instead of registering a second one.
#[test]
fn an_app_left_by_an_interrupted_apply_is_reused() {
    let w = World::start();
    let site = w.generate(100, 2303);
    w.config("public", DEFAULT);
    let admin = w.admin_token();
    let toml = std::fs::read_to_string(site.dir.join("site.toml")).unwrap();
    let code = toml
        .lines()
        .find_map(|l| l.strip_prefix("code = "))
        .unwrap()
        .trim_matches('"');
    let short = site.hid.split('-').next().unwrap();
    let tenant_id = cloudattach_cloud::seed::CONTOSO_TENANT_ID;
    // What the interrupted apply registered: the app, without secret, consent or local file.
    let (s, left) = w.request(
        reqwest::Method::POST,
        "/v1.0/applications",
        &admin,
        Some(&serde_json::json!({
            "displayName": format!("ConfigMgrService-{code}"),
            "identifierUris": [format!("api://{tenant_id}/ConfigMgrService-{code}-{short}")],
            "requiredResourceAccess": required_permissions(),
        })),
    );
    assert_eq!(s, 201, "{left}");
    let out = w.apply_ok();
    assert_eq!(out["app"]["client_id"], left["appId"]);
    assert_eq!(registered_apps(&w, &admin).len(), 1);
    assert_eq!(owner_of(&w, &site.hid), left["appId"].as_str().unwrap());
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

/// On a terminal, apply asks before taking over the app that owns the hierarchy (even with
/// `--yes`): "n" changes nothing, "y" adds a secret to the owning app and attaches with it.
#[test]
fn a_terminal_is_asked_before_a_takeover() {
    let has_script = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_script {
        eprintln!("skipped: util-linux `script` is not available to provide a terminal");
        return;
    }
    let w = World::start();
    let site = w.generate(100, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let admin = w.admin_token();
    let client_id = owner_of(&w, &site.hid);
    fresh_state_dir(&w, ".cloudattach-a");
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let line = format!(
        "{} --config {} apply --yes",
        quote(env!("CARGO_BIN_EXE_cloudattach")),
        quote(&w.dir().join("attach.toml").display().to_string())
    );
    let on_a_terminal = |answer: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(w.dir())
            .env("NO_COLOR", "1")
            .env_remove("CLOUDATTACH_LOG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run script");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{answer}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = on_a_terminal("n");
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("Take it over") && text.contains(&client_id),
        "{text}"
    );
    let apps = registered_apps(&w, &admin);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["passwordCredentials"].as_array().unwrap().len(), 1);

    let (code, text) = on_a_terminal("y");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("took over app"), "{text}");
    let apps = registered_apps(&w, &admin);
    assert_eq!(apps.len(), 1);
    assert_eq!(apps[0]["passwordCredentials"].as_array().unwrap().len(), 2);
    assert_eq!(owner_of(&w, &site.hid), client_id);
}

/// Another app attaches the hierarchy between apply's owner check and its onboarding (the race
/// is played out between the session's two steps: the session registered its app, then a rival
/// app onboards the hierarchy for itself): the onboarding is refused, the error names the app
/// that owns the hierarchy now, and the app this run registered is deleted again — the tenant
/// holds no app of the losing run, and this directory keeps no credentials for one.
#[test]
fn an_apply_that_loses_the_race_for_the_hierarchy_leaves_no_app_behind() {
    use cloudattach_cloud::seed::CONTOSO_TENANT_ID;
    use cloudattach_core::session::{AppChoice, AppPolicy, Session, Takeover};
    use cloudattach_core::state::StateStore;
    use cloudattach_core::{Config, Site};
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    let w = World::start();
    let model = w.generate(50, 2303);
    w.config("public", DEFAULT);
    let config = Config::load(&w.dir().join("attach.toml")).expect("attach.toml");
    let site = Site::open(&config.site_dir).expect("site");
    let state = Arc::new(Mutex::new(
        StateStore::open(&config.state_dir()).expect("state"),
    ));
    let session_rt = tokio::runtime::Runtime::new().expect("runtime");
    let session = Session::connect(
        session_rt.handle().clone(),
        &w.base,
        &config,
        None,
        &site,
        state,
        Arc::new(cloudattach_core::report::Silent),
        &AppChoice {
            policy: AppPolicy::RegisterIfMissing,
            takeover: Takeover::Refuse,
            command: "apply",
        },
    )
    .expect("connect");
    let ours = session.app().client_id.clone();
    let admin = w.admin_token();
    let client_ids = || -> Vec<String> {
        let (s, apps) = w.request(reqwest::Method::GET, "/v1.0/applications", &admin, None);
        assert_eq!(s, 200, "{apps}");
        apps["value"]
            .as_array()
            .expect("value")
            .iter()
            .filter_map(|a| a["appId"].as_str().map(str::to_ascii_lowercase))
            .collect()
    };
    assert!(
        client_ids().contains(&ours),
        "the session registered its app"
    );

    // The rival: another app of the tenant onboards the hierarchy for itself.
    let (rival, _, secret) = w.register_app(
        &admin,
        "RivalConfigMgr",
        &format!("api://{CONTOSO_TENANT_ID}/RivalConfigMgr"),
        required_permissions(),
        true,
    );
    let token = w.token_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", &rival),
        ("client_secret", &secret),
        ("scope", "api://cloudattach/.default"),
    ]);
    let token = token["access_token"].as_str().expect("rival token");
    let (s, v) = w.request(
        reqwest::Method::PUT,
        &format!("/api/v1/hierarchies/{}", model.hid),
        token,
        Some(&json!({"site_code": site.info.code, "site_version": "2303",
                     "environment": "public", "app_id": rival})),
    );
    assert_eq!(s, 201, "the rival onboards: {v}");

    let err = session
        .onboard(&site, cloudattach_sdk::Environment::Public)
        .expect_err("the onboarding the rival won")
        .to_string();
    assert!(
        err.contains("RivalConfigMgr") && err.contains(&rival),
        "names the owner: {err}"
    );
    assert!(err.contains("--takeover"), "{err}");
    let ids = client_ids();
    assert!(
        !ids.contains(&ours),
        "the losing run's app is left: {ids:?}"
    );
    assert!(ids.contains(&rival.to_ascii_lowercase()), "{ids:?}");
    let kept: Vec<_> = std::fs::read_dir(w.state_dir())
        .expect("state dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("app-"))
        .collect();
    assert!(kept.is_empty(), "credentials of a deleted app: {kept:?}");
    // The hierarchy is the rival's still.
    assert_eq!(
        w.hierarchies()[0]["app_id"]
            .as_str()
            .map(str::to_ascii_lowercase),
        Some(rival.to_ascii_lowercase())
    );
    drop(session);
    session_rt.shutdown_background();
}

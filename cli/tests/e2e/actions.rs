//! The way back: cloud actions asked by people in the tenant, served by the site's connector
//! under both halves of RBAC, against a real cloud.

use crate::common::*;
use cloudattach_cloud::seed::{CONTOSO_TENANT_ID, seeded_user_object_id};
use serde_json::{Value, json};
use std::time::Duration;

const CONTOSO_ID: &str = CONTOSO_TENANT_ID;

/// The site's RBAC: helpdesk@ is a discovered user and an administrative user whose role
/// grants what every built-in action needs, on the collections named.
pub(crate) fn write_rbac(w: &World, collections: &[&str]) {
    let rbac = json!({
        "discovered_users": [{
            "upn": "helpdesk@contoso.example",
            "object_id": seeded_user_object_id(CONTOSO_ID, "helpdesk").unwrap(),
            "tenant_id": CONTOSO_ID,
        }],
        "security_roles": [{
            "name": "Help Desk",
            "permissions": ["Read", "Read Resource", "Run CMPivot", "Notify Resource"],
        }],
        "administrative_users": [{
            "upn": "helpdesk@contoso.example",
            "roles": ["Help Desk"],
            "collections": collections,
        }],
    });
    std::fs::write(
        w.site_dir().join("rbac.json"),
        serde_json::to_string_pretty(&rbac).unwrap(),
    )
    .unwrap();
}

fn ask(w: &World, token: &str, hid: &str, device: i64, action: &str, params: Value) -> Value {
    let (s, v) = w.request(
        reqwest::Method::POST,
        &format!("/api/v1/hierarchies/{hid}/devices/{device}/actions"),
        token,
        Some(&json!({"action": action, "parameters": params})),
    );
    assert_eq!(s, 202, "ask {action}: {v}");
    v
}

fn action(w: &World, token: &str, id: &str) -> Value {
    let (s, v) = w.request(
        reqwest::Method::GET,
        &format!("/api/v1/actions/{id}"),
        token,
        None,
    );
    assert_eq!(s, 200, "{v}");
    v
}

fn custom_config(w: &World, enforce: bool) {
    w.config(
        "public",
        &format!(
            "[attach]\nsettings = \"custom\"\n\n[features.tenant-attach]\nupload = \"all\"\n\n\
             [features.rbac-authority]\nenforce_configmgr_rbac = {enforce}\n"
        ),
    );
}

#[test]
fn the_connector_serves_actions_under_both_halves_of_rbac_and_explain_access_agrees() {
    let mut w = World::start();
    let site = w.generate(120, 2303);
    custom_config(&w, false);
    let applied = w.apply_ok();
    people_sign_in_themselves(&mut w, None);
    let ta = &steps(&applied)["tenant-attach"];
    assert!(
        ta["findings"]
            .to_string()
            .contains("cloud actions declared: resource-explorer, cmpivot, cmpivot-collection"),
        "{ta}"
    );
    let hid = site.hid.clone();
    let client = *site.clients().iter().next().expect("a client device");
    let name = site
        .devices
        .iter()
        .find(|d| d["resource_id"] == client)
        .and_then(|d| d["name"].as_str())
        .unwrap()
        .to_string();
    write_rbac(&w, &["SMS00001"]);

    let helpdesk = user_token(&w, "helpdesk@contoso.example");
    let readonly = user_token(&w, "readonly@contoso.example");
    let cloudonly = user_token(&w, "cloudonly@contoso.example");

    let explorer = ask(&w, &helpdesk, &hid, client, "resource-explorer", json!({}));
    assert_eq!(explorer["status"], "pending");
    let refused = ask(&w, &readonly, &hid, client, "resource-explorer", json!({}));
    assert_eq!(refused["status"], "unauthorized");
    let query = format!("Device | where resource_id == {client} | project name, client");
    let pivot = ask(
        &w,
        &helpdesk,
        &hid,
        client,
        "cmpivot",
        json!({"query": query}),
    );
    let bad = ask(
        &w,
        &helpdesk,
        &hid,
        client,
        "cmpivot",
        json!({"query": "Device | where nmae == 'x'"}),
    );
    // The checkbox is cleared but the tenant's toggle is off: the site's RBAC still applies.
    let cloud_only = ask(&w, &cloudonly, &hid, client, "resource-explorer", json!({}));

    let r = w.cli(&["--output", "json", "connect", "--once"]);
    r.ok();
    let report = r.json();
    assert_eq!(report["served"].as_array().unwrap().len(), 4, "{report}");

    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let done = action(&w, &helpdesk, &id(&explorer));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["authority"], "configmgr+intune");
    let doc = &done["result"]["document"];
    assert_eq!(doc["name"], name.as_str());
    assert_eq!(doc["inventory"]["resource_id"], client);
    assert!(
        doc["collections"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["collection_id"] == "SMS00001" && c["how"] == "all_systems"),
        "{doc}"
    );
    let done = action(&w, &helpdesk, &id(&pivot));
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["result"]["columns"], json!(["name", "client"]));
    assert_eq!(done["result"]["rows"], json!([[name, true]]));
    let done = action(&w, &helpdesk, &id(&bad));
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "query-error");
    assert!(
        done["error"]["message"].as_str().unwrap().contains("nmae"),
        "{done}"
    );
    let done = action(&w, &readonly, &id(&refused));
    assert_eq!(done["error"]["code"], "intune-role");
    assert!(done["result"].is_null());
    let done = action(&w, &cloudonly, &id(&cloud_only));
    assert_eq!(done["status"], "unauthorized", "{done}");
    assert_eq!(done["error"]["code"], "site-user");
    assert!(done["result"].is_null(), "a refused action carries no data");

    // explain access takes the same decision.
    let explained = explain_access(&w, "cloudonly@contoso.example", client, "off");
    explained.ok();
    let e = explained.json();
    assert_eq!(
        (e["refused_by"].clone(), e["authority"].clone()),
        (json!("site-user"), json!("configmgr+intune"))
    );

    // The tenant's toggle on: with the checkbox cleared, Intune alone authorizes, and the
    // cloud-only account is served.
    let admin = user_token(&w, "admin@contoso.example");
    let (s, v) = w.request(
        reqwest::Method::PUT,
        "/api/v1/tenant/settings",
        &admin,
        Some(&json!({"use_intune_rbac": true})),
    );
    assert_eq!(s, 200, "{v}");
    let served = ask(&w, &cloudonly, &hid, client, "resource-explorer", json!({}));
    w.cli(&["connect", "--once"]).ok();
    let done = action(&w, &cloudonly, &id(&served));
    assert_eq!(
        (done["status"].clone(), done["authority"].clone()),
        (json!("succeeded"), json!("intune")),
        "{done}"
    );
    let explained = explain_access(&w, "cloudonly@contoso.example", client, "on");
    explained.ok();
    assert_eq!(explained.json()["allowed"], true);

    // A device outside the assigned collections: refused by the collection scope, and the
    // connector's health is what the cloud shows.
    let (s, v) = w.request(
        reqwest::Method::PUT,
        "/api/v1/tenant/settings",
        &admin,
        Some(&json!({"use_intune_rbac": false})),
    );
    assert_eq!(s, 200, "{v}");
    write_rbac(&w, &[]);
    let scoped = ask(
        &w,
        &helpdesk,
        &hid,
        client,
        "cmpivot",
        json!({"query": "Device"}),
    );
    w.cli(&["connect", "--once"]).ok();
    let done = action(&w, &helpdesk, &id(&scoped));
    assert_eq!(done["error"]["code"], "collection-scope", "{done}");
    let (s, health) = w.request(
        reqwest::Method::GET,
        &format!("/api/v1/hierarchies/{hid}/connector"),
        &helpdesk,
        None,
    );
    assert_eq!(s, 200, "{health}");
    assert_eq!(health["healthy"], true, "{health}");
    assert!(health["last_upload"].is_string(), "{health}");
}

#[test]
fn an_action_nobody_answers_times_out_and_one_taken_by_a_dead_connector_is_answered_once() {
    let mut w = World::start();
    let site = w.generate(40, 2303);
    w.config("public", "[attach]\nsettings = \"default\"\n");
    w.apply_ok();
    people_sign_in_themselves(&mut w, Some(3));
    write_rbac(&w, &["SMS00001"]);
    let hid = site.hid.clone();
    let client = *site.clients().iter().next().unwrap();
    let helpdesk = user_token(&w, "helpdesk@contoso.example");

    // No connector: the action times out.
    let lost = ask(&w, &helpdesk, &hid, client, "resource-explorer", json!({}));
    let id = lost["id"].as_str().unwrap().to_string();
    wait_for(20, "the action to time out", || {
        action(&w, &helpdesk, &id)["status"] == "timedOut"
    });
    let done = action(&w, &helpdesk, &id);
    assert_eq!(done["error"]["code"], "timedOut");
    // A connector that comes late does not get it.
    let r = w.cli(&["--output", "json", "connect", "--once"]);
    r.ok();
    assert_eq!(r.json()["served"], json!([]));

    // A connector that took an action and died (its id never answers): the next one gets it
    // and answers it, once (the default timeout again, so a slow machine cannot time it out).
    people_sign_in_themselves(&mut w, None);
    let helpdesk = user_token(&w, "helpdesk@contoso.example");
    let app = app_token(&w);
    let taken = ask(&w, &helpdesk, &hid, client, "resource-explorer", json!({}));
    let (s, q) = w.request(
        reqwest::Method::GET,
        &format!("/api/v1/hierarchies/{hid}/connector/actions?connector_id=dead-one&wait=0"),
        &app,
        None,
    );
    assert_eq!(s, 200, "{q}");
    assert_eq!(q["value"].as_array().unwrap().len(), 1, "{q}");
    let r = w.cli(&["--output", "json", "connect", "--once"]);
    r.ok();
    let served = r.json()["served"].clone();
    assert_eq!(served.as_array().unwrap().len(), 1, "{served}");
    assert_eq!(served[0]["id"], taken["id"]);
    let r = w.cli(&["--output", "json", "connect", "--once"]);
    assert_eq!(r.json()["served"], json!([]), "answered once");
    let done = action(&w, &helpdesk, taken["id"].as_str().unwrap());
    assert_eq!(done["status"], "succeeded", "{done}");
}

#[test]
fn the_long_running_connector_answers_as_actions_arrive_and_stops_cleanly_on_sigterm() {
    let mut w = World::start();
    let site = w.generate(40, 2303);
    w.config("public", "[attach]\nsettings = \"default\"\n");
    w.apply_ok();
    people_sign_in_themselves(&mut w, None);
    write_rbac(&w, &["SMS00001"]);
    let hid = site.hid.clone();
    let client = *site.clients().iter().next().unwrap();
    let helpdesk = user_token(&w, "helpdesk@contoso.example");
    let mut child = w
        .command(&["connect", "--interval", "1h", "--poll-wait", "2s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the connector");
    // It syncs first, then waits for actions; the status beside it works (no lock held).
    wait_for(60, "the connector's first heartbeat", || {
        let (s, h) = w.request(
            reqwest::Method::GET,
            &format!("/api/v1/hierarchies/{hid}/connector"),
            &helpdesk,
            None,
        );
        s == 200 && h["last_upload"].is_string()
    });
    w.cli(&["status"]).ok();
    let asked = ask(&w, &helpdesk, &hid, client, "resource-explorer", json!({}));
    let id = asked["id"].as_str().unwrap().to_string();
    wait_for(30, "the connector to answer", || {
        action(&w, &helpdesk, &id)["status"] == "succeeded"
    });
    // SIGTERM: it stops after the poll in flight, with exit 0.
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let mut status = None;
    for _ in 0..100 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("the connector did not stop on SIGTERM")
    });
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "{status}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "resource-explorer {id} for helpdesk@contoso.example"
        )),
        "{stdout}"
    );
}

/// `explain access` for `user` on `device`'s resource explorer, with the Help Desk Operator
/// role and the tenant's toggle `on` or `off`.
fn explain_access(w: &World, user: &str, device: i64, toggle: &str) -> Run {
    w.cli(&[
        "--output",
        "json",
        "explain",
        "access",
        "--user",
        user,
        "--device",
        &device.to_string(),
        "--action",
        "resource-explorer",
        "--intune-role",
        "Help Desk Operator",
        "--use-intune-rbac",
        toggle,
    ])
}

/// A token of the app apply registered (its credentials file in the state directory).
fn app_token(w: &World) -> String {
    let file = std::fs::read_dir(w.state_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("app-") && n.ends_with(".json"))
        })
        .expect("the app's credentials");
    let app: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let v = w.token_form(&[
        ("grant_type", "client_credentials"),
        ("client_id", app["client_id"].as_str().unwrap()),
        ("client_secret", app["secret"].as_str().unwrap()),
        ("scope", "api://cloudattach/.default"),
    ]);
    v["access_token"].as_str().expect("app token").to_string()
}

/// Sets one field of one device's line in `devices.jsonl`, leaving every other line as it is.
fn set_device_field(w: &World, resource_id: i64, field: &str, value: Value) {
    let path = w.site_dir().join("devices.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut found = false;
    let lines: Vec<String> = text
        .lines()
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(mut d) if d["resource_id"] == resource_id => {
                found = true;
                d[field] = value.clone();
                serde_json::to_string(&d).unwrap()
            }
            _ => l.to_string(),
        })
        .collect();
    assert!(found, "device {resource_id} in devices.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// The rows of a succeeded `timeline` action: `(time, kind, detail)`, newest first.
fn timeline_rows(w: &World, token: &str, id: &str) -> Vec<(String, String, Value)> {
    let done = action(w, token, id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"]["columns"],
        json!(["time", "kind", "detail"]),
        "{done}"
    );
    done["result"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r[0].as_str().unwrap().to_string(),
                r[1].as_str().unwrap().to_string(),
                r[2].clone(),
            )
        })
        .collect()
}

#[test]
fn the_timeline_shows_what_changed_who_acted_and_a_first_upload_once() {
    let mut w = World::start();
    let site = w.generate(40, 2303);
    w.config("public", "[attach]\nsettings = \"default\"\n");
    let applied = w.apply_ok();
    assert!(
        steps(&applied)["tenant-attach"]["findings"]
            .to_string()
            .contains(
                "cloud actions declared: resource-explorer, cmpivot, cmpivot-collection, timeline"
            ),
        "{applied}"
    );
    people_sign_in_themselves(&mut w, None);
    write_rbac(&w, &["SMS00001"]);
    let hid = site.hid.clone();
    let clients: Vec<i64> = site.clients().into_iter().collect();
    let (changed, untouched) = (clients[0], clients[1]);
    let helpdesk = user_token(&w, "helpdesk@contoso.example");
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let on_devices = |rows: &[(String, String, Value)]| -> Vec<Value> {
        rows.iter()
            .filter(|(_, k, d)| k == "uploaded" && d["channel"] == "devices")
            .map(|(_, _, d)| d.clone())
            .collect()
    };

    // A change after the first upload, synced by the connector: the site kept no earlier state
    // of the device (the first upload writes no row per device), so its fields are not known.
    set_device_field(&w, changed, "client_version", json!("5.00.9999.1000"));
    w.cli(&["connect", "--once"]).ok();
    let first = ask(&w, &helpdesk, &hid, changed, "timeline", json!({}));
    let explorer = ask(&w, &helpdesk, &hid, changed, "resource-explorer", json!({}));
    // The next change is diffed with that one.
    set_device_field(&w, changed, "client_version", json!("5.00.9999.2000"));
    let r = w.cli(&["--output", "json", "connect", "--once"]);
    r.ok();
    assert_eq!(
        r.json()["served"].as_array().unwrap().len(),
        2,
        "{}",
        r.json()
    );
    let second = ask(
        &w,
        &helpdesk,
        &hid,
        changed,
        "timeline",
        json!({"hours": 48}),
    );
    let quiet = ask(&w, &helpdesk, &hid, untouched, "timeline", json!({}));
    w.cli(&["connect", "--once"]).ok();

    let rows = timeline_rows(&w, &helpdesk, &id(&first));
    let uploads = on_devices(&rows);
    assert_eq!(uploads.len(), 1, "{rows:?}");
    assert_eq!(uploads[0]["change"], "changed");
    assert_eq!(uploads[0]["fields"], Value::Null);
    assert!(
        uploads[0]["note"]
            .as_str()
            .unwrap()
            .contains("earlier state is not known"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|(_, k, d)| k == "first-upload" && d["channel"] == "devices"),
        "{rows:?}"
    );

    let rows = timeline_rows(&w, &helpdesk, &id(&second));
    let uploads = on_devices(&rows);
    assert_eq!(uploads.len(), 2, "{rows:?}");
    assert_eq!(uploads[0]["fields"], json!(["client_version"]), "{rows:?}");
    let times: Vec<&str> = rows.iter().map(|(t, _, _)| t.as_str()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
    let actions: Vec<&Value> = rows
        .iter()
        .filter(|(_, k, _)| k == "action")
        .map(|(_, _, d)| d)
        .collect();
    assert_eq!(actions.len(), 2, "{rows:?}");
    let explored = actions
        .iter()
        .find(|d| d["action"] == "resource-explorer")
        .expect("the resource explorer on the timeline");
    assert_eq!(
        (
            explored["id"].clone(),
            explored["requested_by"].clone(),
            explored["status"].clone(),
            explored["error"].clone()
        ),
        (
            json!(id(&explorer)),
            json!("helpdesk@contoso.example"),
            json!("succeeded"),
            Value::Null
        )
    );
    assert!(
        actions
            .iter()
            .any(|d| d["action"] == "timeline" && d["id"] == json!(id(&first)))
    );

    // Nobody touched that one: its channels' first uploads, nothing else.
    let rows = timeline_rows(&w, &helpdesk, &id(&quiet));
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|(_, k, _)| k == "first-upload"), "{rows:?}");
    assert!(rows.iter().any(|(_, _, d)| d["channel"] == "devices"));
}

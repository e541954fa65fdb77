//! The tenant side from the terminal: a person of the tenant signs in and lists the uploaded
//! devices, reads one, runs a cloud action and waits for its answer, reads a report, and an
//! administrator sets Intune roles.

use crate::actions::write_rbac;
use crate::common::*;
use cloudattach_cloud::seed::DEV_PASSWORD;
use serde_json::Value;
use std::io::{BufRead, BufReader};

/// `tenant login [--fresh]` as `upn`: the command waits on its device code while the test
/// approves it on `/devicelogin` with the development password.
fn tenant_login(w: &World, upn: &str, fresh: bool) {
    let mut args = vec!["tenant", "login"];
    if fresh {
        args.push("--fresh");
    }
    let mut child = w
        .command(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start tenant login");
    let stderr = child.stderr.take().unwrap();
    let mut code = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        if let Some(i) = line.find("enter the code ") {
            code = line[i + 15..].split_whitespace().next().map(String::from);
            break;
        }
    }
    let code = code.expect("tenant login shows a device code");
    let (s, v) = w.form(
        "/devicelogin",
        &[
            ("user_code", code.as_str()),
            ("upn", upn),
            ("password", DEV_PASSWORD),
            ("action", "approve"),
        ],
    );
    assert!(s == 200 || v.is_null(), "devicelogin {s}: {v}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "tenant login failed");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("signed in as {upn}")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_person_of_the_tenant_lists_devices_runs_an_action_and_an_administrator_assigns_roles() {
    let mut w = World::start();
    let site = w.generate(60, 2303);
    w.config("public", "[attach]\nsettings = \"default\"\n");
    w.apply_ok();
    people_sign_in_themselves(&mut w, None);
    write_rbac(&w, &["SMS00001"]);
    tenant_login(&w, "helpdesk@contoso.example", false);

    // Every uploaded device (the site's client devices), across pages.
    let r = w.cli(&[
        "--output", "json", "tenant", "devices", "--all", "--top", "7",
    ]);
    r.ok();
    let listed: Vec<i64> = r.json()["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["resource_id"].as_i64().unwrap())
        .collect();
    let clients: Vec<i64> = site.clients().into_iter().collect();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, clients);
    let id = clients[0];
    let name = site
        .devices
        .iter()
        .find(|d| d["resource_id"] == id)
        .and_then(|d| d["name"].as_str())
        .unwrap()
        .to_string();
    let r = w.cli(&["--output", "json", "tenant", "device", &id.to_string()]);
    r.ok();
    assert_eq!(r.json()["device"]["name"], name.as_str());

    // explain device with what the cloud holds: an uploaded client, and a device without a
    // client the cloud never received.
    let r = w.cli(&[
        "--output",
        "json",
        "explain",
        "device",
        &id.to_string(),
        "--cloud",
    ]);
    r.ok();
    let v = r.json();
    assert_eq!(v["uploaded"]["value"], true);
    assert_eq!(
        (
            v["cloud"]["held"].clone(),
            v["cloud"]["device"]["name"].clone()
        ),
        (true.into(), name.as_str().into()),
        "{v}"
    );
    let no_client = site
        .devices
        .iter()
        .find(|d| d["client"] == false)
        .and_then(|d| d["resource_id"].as_i64())
        .expect("a device without a client");
    let r = w.cli(&[
        "--output",
        "json",
        "explain",
        "device",
        &no_client.to_string(),
        "--cloud",
    ]);
    r.ok();
    let v = r.json();
    assert_eq!(
        (v["uploaded"]["value"].clone(), v["cloud"]["held"].clone()),
        (false.into(), false.into()),
        "{v}"
    );

    // An action, answered by a connector running beside it, waited for.
    let mut connector = w
        .command(&["connect", "--interval", "1h", "--poll-wait", "1s"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let query = format!("query=Device | where resource_id == {id} | project name");
    let r = w.cli(&[
        "tenant",
        "action",
        "cmpivot",
        "--device",
        &id.to_string(),
        "--param",
        &query,
        "--wait",
        "60s",
    ]);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &connector.id().to_string()])
        .status();
    let _ = connector.wait();
    r.ok();
    assert!(r.stdout.contains(&name), "{}", r.stdout);
    assert!(r.stderr.contains("succeeded"), "{}", r.stderr);

    // explain access with what the cloud says: the roles, the identity, the toggle and the
    // connector's health, and the decision the connector took.
    let explain = |user: &str| {
        let r = w.cli(&[
            "--output",
            "json",
            "explain",
            "access",
            "--cloud",
            "--user",
            user,
            "--device",
            &id.to_string(),
            "--action",
            "cmpivot",
        ]);
        r.ok();
        r.json()
    };
    let e = explain("helpdesk@contoso.example");
    assert_eq!(
        (e["allowed"].clone(), e["complete"].clone()),
        (true.into(), true.into()),
        "{e}"
    );
    let links: Vec<&str> = e["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["link"].as_str().unwrap())
        .collect();
    assert_eq!(links.last(), Some(&"connector"), "{e}");
    assert_eq!(
        explain("readonly@contoso.example")["refused_by"],
        "intune-role"
    );

    // A report.
    let r = w.cli(&["--output", "json", "tenant", "report", "co-management"]);
    r.ok();
    assert!(r.json()["summary"].is_object(), "{}", r.stdout);

    // The help desk may not flip the toggle or assign roles: the cloud says so (exit 2).
    let r = w.cli(&["tenant", "rbac", "--set", "on"]);
    r.code(2);
    assert!(r.stderr.contains("403"), "{}", r.stderr);

    // An administrator may.
    tenant_login(&w, "admin@contoso.example", true);
    let r = w.cli(&[
        "--output",
        "json",
        "tenant",
        "assign",
        "readonly@contoso.example",
        "Help Desk Operator",
    ]);
    r.ok();
    let r = w.cli(&["--output", "json", "tenant", "roles"]);
    r.ok();
    let v = r.json();
    let readonly: &Value = v["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["upn"] == "readonly@contoso.example")
        .expect("readonly is assigned");
    assert_eq!(readonly["roles"], serde_json::json!(["Help Desk Operator"]));
    let r = w.cli(&["--output", "json", "tenant", "rbac", "--set", "on"]);
    r.ok();
    assert_eq!(r.json()["use_intune_rbac"], true);
}

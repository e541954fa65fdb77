//! End to end with a plugin written in Python (`examples/python-os-census/os-census`, one
//! executable file, standard library only): copied into a plugin directory, it is listed,
//! checked, planned, applied, synced, reported and disabled by the real binary against a cloud
//! tenant service started in-process, speaking the process protocol of
//! `docs/plugin-protocol.md` — and what it uploads is read back through the cloud's API and
//! compared with counts computed here from the site's files.
//!
//! The tests need `python3` on `PATH`; without it they say so loudly and pass.

use super::common::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The plugin as the repository ships it.
fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python-os-census/os-census")
}

/// Whether `python3` runs; if not, says loudly that the test is skipped.
fn python3_or_skip(test: &str) -> bool {
    let found = Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("\n*** SKIPPED: python3 not found on PATH: {test} did not run ***\n");
    }
    found
}

/// Copies the script into `<work>/plugins` as an executable, as a user installs it.
fn install(w: &World) -> PathBuf {
    let dir = w.dir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let to = dir.join("os-census");
    std::fs::copy(script(), &to).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

const CONFIG: &str = "[attach]\nsettings = \"custom\"\n\n[plugins]\ndirs = [\"plugins\"]\n\n\
    [features.tenant-attach]\nupload = \"all\"\n\n[features.os-census]\ntop = 3\n";

/// The plugin's entry of a document listing plugins under `plugins`.
fn entry<'a>(v: &'a Value, id: &str) -> &'a Value {
    v["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("plugins in {v}"))
        .iter()
        .find(|p| p["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {v}"))
}

/// Uploaded devices per OS caption, from the site's files: with `upload = "all"` tenant attach
/// uploads every device with a client.
fn expected_census(site: &SiteModel) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for d in site.devices.iter().filter(|d| d["client"] == true) {
        let os = d["os"]
            .as_str()
            .filter(|s| !s.is_empty())
            .unwrap_or("(no os)");
        *out.entry(os.to_string()).or_default() += 1;
    }
    out
}

/// What the cloud holds in `ext/os-census`, as OS → devices; every record's `os` is its key.
fn held(w: &World, hid: &str) -> BTreeMap<String, u64> {
    w.get_all(&format!("/api/v1/hierarchies/{hid}/ext/os-census/records"))
        .iter()
        .map(|r| {
            let key = r["key"].as_str().unwrap().to_string();
            assert_eq!(r["record"]["os"], key.as_str(), "{r}");
            (key, r["record"]["devices"].as_u64().unwrap())
        })
        .collect()
}

fn as_json(m: &BTreeMap<String, u64>) -> Value {
    serde_json::to_value(m).unwrap()
}

#[test]
fn a_python_plugin_in_a_plugin_dir_checks_applies_syncs_and_disables_against_the_cloud() {
    if !python3_or_skip("a_python_plugin_in_a_plugin_dir_checks_applies_syncs_and_disables") {
        return;
    }
    let w = World::start();
    let mut site = w.generate(1_200, 2303);
    w.config("public", CONFIG);
    install(&w);
    let expected = expected_census(&site);
    assert!(
        expected.len() > 3,
        "the site has several OSes: {expected:?}"
    );

    // Listed like any plugin, from its process.
    let list = w.cli(&["--output", "json", "plugins", "list"]);
    list.ok();
    let listed = list.json();
    let listed = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "os-census")
        .unwrap_or_else(|| panic!("os-census listed: {}\n{}", list.stdout, list.stderr));
    assert_eq!(listed["origin"], "dynamic");
    assert_eq!(listed["depends_on"], json!(["tenant-attach"]));
    assert_eq!(listed["environments"], json!(["public", "usgov"]));

    // check streams the inventory through the protocol and counts the uploaded devices.
    let check = w.cli(&["--output", "json", "check", "os-census"]);
    check.ok();
    let checked = check.json();
    let census = entry(&checked, "os-census");
    assert_eq!(census["status"], "pass", "{census}");
    assert_eq!(census["os_census"], as_json(&expected), "{census}");
    assert_eq!(census["devices_uploaded"], site.clients().len(), "{census}");
    let finding = census["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "os-census")
        .unwrap_or_else(|| panic!("an os-census finding: {census}"));
    assert_eq!(finding["severity"], "info");
    let message = finding["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "{} uploaded devices on {} operating systems",
            site.clients().len(),
            expected.len()
        )),
        "{message}"
    );
    assert!(
        message.ends_with(&format!("and {} more", expected.len() - 3)),
        "top = 3: {message}"
    );
    // The text output shows the finding too.
    let text = w.cli(&["check", "os-census"]);
    text.ok();
    assert!(text.stdout.contains("operating systems"), "{}", text.stdout);

    let plan = w.cli(&["--output", "json", "plan"]);
    plan.ok();
    let planned = plan.json();
    let order: Vec<&str> = planned["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["plugin"].as_str().unwrap())
        .collect();
    let at = |id| order.iter().position(|p| *p == id).unwrap();
    assert!(at("tenant-attach") < at("os-census"), "{order:?}");
    assert_eq!(
        steps(&planned)["os-census"]["action"],
        "enable",
        "{planned}"
    );

    let applied = w.apply_ok();
    let step = &steps(&applied)["os-census"];
    assert_eq!(step["status"], "done", "{step}");
    assert_eq!(held(&w, &site.hid), expected, "one record per OS");

    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    let st = status.json();
    let mine = entry(&st, "os-census");
    assert_eq!(mine["enabled"], true, "{mine}");
    assert_eq!(mine["counts"]["records"], expected.len(), "{mine}");

    // A plan after apply has nothing to do; a sync with nothing changed sends nothing.
    let again = w.cli(&["--output", "json", "plan"]);
    again.ok();
    assert_eq!(steps(&again.json())["os-census"]["action"], "noop");
    let sync = w.cli(&["--output", "json", "sync"]);
    sync.ok();
    let synced = sync.json();
    assert_eq!(entry(&synced, "os-census")["sent"], 0, "{synced}");
    assert_eq!(entry(&synced, "os-census")["total"], expected.len());

    // One device moves to an OS no other device runs: its old OS's count and the new OS are
    // the only records sent.
    let (most, _) = expected.iter().max_by_key(|(_, n)| **n).unwrap();
    let moved = site
        .devices
        .iter_mut()
        .find(|d| d["client"] == true && d["os"] == most.as_str())
        .unwrap();
    moved["os"] = json!("Contoso OS 1.0");
    site.save_devices();
    let after = expected_census(&site);
    let changed = after
        .keys()
        .chain(expected.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|k| after.get(*k) != expected.get(*k))
        .count();
    assert_eq!(changed, 2);
    let sync = w.cli(&["--output", "json", "sync"]);
    sync.ok();
    let synced = sync.json();
    assert_eq!(entry(&synced, "os-census")["sent"], changed, "{synced}");
    assert_eq!(
        entry(&synced, "os-census")["total"],
        after.len(),
        "{synced}"
    );
    assert_eq!(held(&w, &site.hid), after);

    // disable turns it off and its records leave the tenant.
    w.cli(&["--output", "json", "disable", "--yes", "os-census"])
        .ok();
    let records = w.get(&format!(
        "/api/v1/hierarchies/{}/ext/os-census/records",
        site.hid
    ));
    assert_eq!(records["@odata.count"], 0, "{records}");
    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    assert_eq!(entry(&status.json(), "os-census")["enabled"], false);
    assert!(
        w.counts(&site.hid).enabled.contains("tenant-attach"),
        "its dependency stays"
    );
}

/// The script on its own, over pipes: what the protocol document promises of a plugin besides
/// the steps — it exits 0 when its input closes, refuses another protocol version in its
/// hello, and fails an unknown step with an error result while it goes on serving.
#[test]
fn the_python_plugin_handles_eof_another_protocol_and_unknown_steps() {
    if !python3_or_skip("the_python_plugin_handles_eof_another_protocol_and_unknown_steps") {
        return;
    }
    let run = |input: &str| {
        let mut child = Command::new("python3")
            .arg(script())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python3");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect();
        (out.status.code(), lines)
    };

    // Standard input closed at once, or after the hello: exit 0.
    assert_eq!(run(""), (Some(0), vec![]));
    let (code, lines) = run("{\"type\":\"hello\",\"protocol\":1,\"host\":\"test\"}\n");
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "hello");
    assert_eq!(lines[0]["protocol"], 1);
    assert_eq!(lines[0]["manifest"]["id"], "os-census");
    assert_eq!(
        lines[0]["manifest"]["options"][0]["kind"],
        json!({"type": "integer_in", "values": {"min": 1, "max": 100}})
    );

    // Another protocol version: an error hello, no manifest.
    let (code, lines) = run("{\"type\":\"hello\",\"protocol\":2,\"host\":\"test\"}\n");
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].get("manifest").is_none(), "{}", lines[0]);
    assert!(
        lines[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("protocol 1") && e.contains('2')),
        "{}",
        lines[0]
    );

    // An unknown step is an error result; the next call is served.
    let (code, lines) = run(concat!(
        "{\"type\":\"hello\",\"protocol\":1,\"host\":\"test\"}\n",
        "{\"type\":\"call\",\"id\":1,\"op\":\"launch\",\"request\":{}}\n",
        "{\"type\":\"call\",\"id\":2,\"op\":\"plan\",\"request\":{\"options\":{\"top\":3},\"applied\":{\"top\":3}}}\n",
    ));
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[1]["type"], "result");
    assert_eq!(lines[1]["id"], 1);
    assert!(lines[1].get("ok").is_none(), "{}", lines[1]);
    assert!(
        lines[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("launch")),
        "{}",
        lines[1]
    );
    assert_eq!(
        lines[2],
        json!({"type": "result", "id": 2, "ok": {"action": "noop"}})
    );

    // A host request answered with an error fails only its step: a status whose `GET status`
    // the host refuses is an `Err` result.
    let mut child = Command::new("python3")
        .arg(script())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python3");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut recv = || {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    writeln!(
        stdin,
        "{}",
        json!({"type": "hello", "protocol": 1, "host": "test"})
    )
    .unwrap();
    assert_eq!(recv()["type"], "hello");
    writeln!(
        stdin,
        "{}",
        json!({"type": "call", "id": 7, "op": "status", "request": {"options": {}}})
    )
    .unwrap();
    let ask = recv();
    assert_eq!(
        (
            &ask["type"],
            &ask["method"],
            &ask["args"]["method"],
            &ask["args"]["path"]
        ),
        (
            &json!("host"),
            &json!("cloud"),
            &json!("Get"),
            &json!("status")
        ),
        "{ask}"
    );
    writeln!(
        stdin,
        "{}",
        json!({"type": "reply", "id": ask["id"], "error": {"code": "cloud-unavailable", "message": "down"}})
    )
    .unwrap();
    assert_eq!(
        recv(),
        json!({"type": "result", "id": 7, "ok": {"Err": {"code": "cloud-unavailable", "message": "down"}}})
    );
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// The Python block of `docs/plugin-protocol.md` that follows `marker`.
fn protocol_doc_block(marker: &str) -> String {
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/plugin-protocol.md"),
    )
    .unwrap();
    let from = doc
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in the protocol document"));
    let rest = &doc[from..];
    let start = rest.find("```python\n").expect("a python block") + "```python\n".len();
    let end = rest[start..].find("```").expect("the block ends") + start;
    rest[start..end].to_string()
}

/// The minimal plugin the protocol document shows is a whole plugin, as written: installed
/// from the document, it checks, applies, reports and disables against the cloud.
#[test]
fn the_minimal_plugin_of_the_protocol_document_runs_as_written() {
    if !python3_or_skip("the_minimal_plugin_of_the_protocol_document_runs_as_written") {
        return;
    }
    let w = World::start();
    let site = w.generate(300, 2303);
    let dir = w.dir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hello-py");
    std::fs::write(&file, protocol_doc_block("## A minimal plugin")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    w.config(
        "public",
        "[attach]\nsettings = \"custom\"\n\n[plugins]\ndirs = [\"plugins\"]\n\n\
         [features.tenant-attach]\nupload = \"all\"\n\n[features.hello-py]\nenabled = true\n",
    );

    let check = w.cli(&["--output", "json", "check", "hello-py"]);
    check.ok();
    let checked = check.json();
    let hello = entry(&checked, "hello-py");
    assert_eq!(hello["status"], "pass", "{hello}");
    assert!(
        hello["findings"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("hello from site ")),
        "{hello}"
    );

    let applied = w.apply_ok();
    assert_eq!(steps(&applied)["hello-py"]["status"], "done", "{applied}");
    assert!(w.counts(&site.hid).enabled.contains("hello-py"));
    let status = w.cli(&["--output", "json", "status"]);
    status.ok();
    assert_eq!(entry(&status.json(), "hello-py")["enabled"], true);
    let plan = w.cli(&["--output", "json", "plan"]);
    plan.ok();
    assert_eq!(steps(&plan.json())["hello-py"]["action"], "noop");

    w.cli(&["--output", "json", "disable", "--yes", "hello-py"])
        .ok();
    assert!(!w.counts(&site.hid).enabled.contains("hello-py"));
}

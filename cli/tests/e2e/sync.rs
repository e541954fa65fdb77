//! End to end: delta sync, a throttling and flaky cloud, and an apply killed mid-upload.

use super::common::*;
use cloudattach_cloud::ServeOptions;
use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;

const DEFAULT: &str = "[attach]\nsettings = \"default\"\n";

/// The cloud holds exactly the site's devices with a client.
fn cloud_holds_the_clients(w: &World, site: &SiteModel) {
    assert_eq!(
        w.cloud_devices(&site.hid)
            .keys()
            .copied()
            .collect::<BTreeSet<_>>(),
        site.clients()
    );
}

/// Changes the model of 25 client devices, adds 10 (copies under new ids, names and
/// identities) and removes 5 others, and saves the site: 40 device records to send. Returns the
/// client devices' positions (the first 25 changed).
fn change_add_and_remove(site: &mut SiteModel) -> Vec<usize> {
    let client_idx: Vec<usize> = (0..site.devices.len())
        .filter(|&i| site.devices[i]["client"] == true)
        .collect();
    for &i in &client_idx[..25] {
        site.devices[i]["model"] = json!(format!("Changed Model {i}"));
    }
    let max_id = site.all_ids().into_iter().max().unwrap();
    for k in 0..10usize {
        let mut d = site.devices[client_idx[100 + k]].clone();
        d["resource_id"] = json!(max_id + 1 + k as i64);
        d["name"] = json!(format!("PS1-NEW-{k:04}"));
        if d.get("entra_device_id").is_some_and(|v| !v.is_null()) {
            d["entra_device_id"] = json!(format!("0000aaaa-0000-4000-8000-{:012}", k));
        }
        if d.get("serial_number").is_some_and(|v| !v.is_null()) {
            d["serial_number"] = json!(format!("NEWSER{k:04}"));
        }
        site.devices.push(d);
    }
    let removed: BTreeSet<i64> = client_idx[200..205]
        .iter()
        .map(|&i| site.devices[i]["resource_id"].as_i64().unwrap())
        .collect();
    site.devices
        .retain(|d| !removed.contains(&d["resource_id"].as_i64().unwrap()));
    site.save_devices();
    client_idx
}

/// Change 25 devices, remove 5, add 10: `sync` sends exactly those 40 device records and the
/// cloud matches the site afterwards.
/// A `sync` that reads no line (all `unchanged`, as the progress line writes the number) and
/// sends nothing.
fn nothing_read_nor_sent(w: &World, unchanged: &str) {
    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "inventory: 0 new or changed line(s) read, {unchanged} unchanged not read again"
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.json()["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["sent"] == 0)
    );
}

#[test]
fn the_first_sync_after_apply_reads_no_line_apply_uploaded() {
    let w = World::start();
    let mut site = w.generate(600, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    nothing_read_nor_sent(&w, &format!("{}", site.devices.len()));
    // And the delta after it sends what changed.
    site.save_devices();
    change_add_and_remove(&mut site);
    let r = w.cli(&["sync"]);
    r.ok();
    cloud_holds_the_clients(&w, &site);
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

#[test]
fn a_delta_reads_only_the_lines_that_changed_since_the_last_sync() {
    let w = World::start();
    let mut site = w.generate(1_000, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    // Lines are compared as bytes: written the way the test writes them from now on.
    site.save_devices();
    // The first sync reads every line and leaves the index of them beside the state.
    let r = w.cli(&["sync"]);
    r.ok();
    assert!(!r.stderr.contains("not read again"), "{}", r.stderr);
    nothing_read_nor_sent(&w, &format!("1,{:03}", site.devices.len() - 1000));

    change_add_and_remove(&mut site);

    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "inventory: 35 new or changed line(s) read, {} unchanged not read again",
            site.devices.len() - 35
        )),
        "{}",
        r.stderr
    );
    let ta = r.json()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "tenant-attach")
        .cloned()
        .unwrap();
    assert_eq!(ta["sent"], 40, "{ta}");
    cloud_holds_the_clients(&w, &site);
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));

    // A full resend reads every line, and leaves the index for the next delta.
    let r = w.cli(&["sync", "--full"]);
    r.ok();
    assert!(!r.stderr.contains("not read again"), "{}", r.stderr);
    let r = w.cli(&["sync"]);
    r.ok();
    assert!(
        r.stderr.contains("inventory: 0 new or changed"),
        "{}",
        r.stderr
    );
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
}

#[test]
fn sync_sends_exactly_the_changes() {
    let w = World::start();
    let mut site = w.generate(1_000, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));

    let client_idx = change_add_and_remove(&mut site);

    let r = w.cli(&["--output", "json", "sync"]);
    assert_eq!(r.code, 0, "sync failed:\n{}\n{}", r.stdout, r.stderr);
    let v = r.json();
    let ta = v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "tenant-attach")
        .cloned()
        .unwrap_or_else(|| panic!("no tenant-attach in {v}"));
    assert_eq!(ta["sent"], 40, "{ta}");

    let cloud = w.cloud_devices(&site.hid);
    assert_eq!(
        cloud.keys().copied().collect::<BTreeSet<_>>(),
        site.clients()
    );
    for &i in &client_idx[..25] {
        let id = site.devices[i]["resource_id"].as_i64().unwrap();
        assert_eq!(cloud[&id]["model"], site.devices[i]["model"], "device {id}");
    }
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));

    // Nothing changed since: the next sync sends nothing.
    let again = w.cli(&["--output", "json", "sync"]);
    again.ok();
    for p in again.json()["plugins"].as_array().unwrap() {
        assert_eq!(p["sent"], 0, "{p}");
    }
}

/// Real exports carry more than the model and come in the encodings Windows tools write. Fields
/// the model does not know, at every level, keep their device and change no uploaded record (a
/// delta sync sends nothing: every record hashes as before); a UTF-8 byte order mark and CRLF
/// change nothing; one byte that is not UTF-8 costs its own device only.
#[test]
fn unknown_fields_and_encodings_change_no_record_and_a_bad_byte_costs_one_device() {
    let w = World::start();
    let mut site = w.generate(400, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let before = w.cloud_devices(&site.hid);
    assert_eq!(before.len(), site.clients().len());

    let mut with_defender = 0;
    for (i, d) in site.devices.iter_mut().enumerate() {
        d["bitlocker"] = json!({ "recovery_key_escrowed": i % 2 == 0 });
        if let Some(def) = d.get_mut("defender").and_then(|v| v.as_object_mut()) {
            with_defender += 1;
            def.insert("asr_mode".into(), json!("block"));
            if let Some(dets) = def.get_mut("detections").and_then(|v| v.as_array_mut()) {
                for det in dets {
                    det["remediation"] = json!("quarantine");
                }
            }
        }
        if let Some(a) = d.get_mut("analytics").and_then(|v| v.as_object_mut()) {
            a.insert("battery_health".into(), json!(97));
            if let Some(apps) = a.get_mut("apps").and_then(|v| v.as_array_mut()) {
                for app in apps {
                    app["publisher"] = json!("Contoso");
                }
            }
        }
    }
    assert!(with_defender > 0);
    // As Windows PowerShell's `Out-File -Encoding utf8` writes it: a BOM and CRLF.
    let mut text = String::from("\u{feff}");
    for d in &site.devices {
        text.push_str(&d.to_string());
        text.push_str("\r\n");
    }
    let path = site.dir.join("devices.jsonl");
    std::fs::write(&path, &text).unwrap();

    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    for p in r.json()["plugins"].as_array().unwrap() {
        assert_eq!(p["sent"], 0, "the same records: {p}");
    }
    let n = site.devices.len();
    for warning in [
        format!(
            "{n} devices carry the field \"bitlocker\" that cloudattach does not model; kept as extension data"
        ),
        format!("{with_defender} devices carry the field \"defender.asr_mode\""),
        "the field \"analytics.battery_health\"".to_string(),
    ] {
        assert_eq!(
            r.stderr.lines().filter(|l| l.contains(&warning)).count(),
            1,
            "{warning}:\n{}",
            r.stderr
        );
    }
    assert_eq!(w.cloud_devices(&site.hid), before);
    let applied = w.cli(&["--output", "json", "apply", "--yes"]);
    applied.ok();
    assert!(
        applied
            .stderr
            .contains("devices carry the field \"bitlocker\""),
        "{}",
        applied.stderr
    );

    // A Windows-1252 "é" (0xE9) in one client's name, on line 3.
    let line = site
        .devices
        .iter()
        .position(|d| d["client"] == true)
        .unwrap();
    let id = site.devices[line]["resource_id"].as_i64().unwrap();
    let mut bytes = Vec::new();
    for (i, l) in text.split_inclusive("\r\n").enumerate() {
        if i == line {
            let name = site.devices[line]["name"].as_str().unwrap();
            let at = l.find(&format!("\"{name}\"")).unwrap() + 1 + name.len();
            bytes.extend_from_slice(&l.as_bytes()[..at]);
            bytes.push(0xE9);
            bytes.extend_from_slice(&l.as_bytes()[at..]);
        } else {
            bytes.extend_from_slice(l.as_bytes());
        }
    }
    std::fs::write(&path, bytes).unwrap();
    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    assert!(
        r.stderr.contains(&format!(
            "devices.jsonl:{}: skipped: not valid UTF-8",
            line + 1
        )),
        "{}",
        r.stderr
    );
    let plugins = r.json()["plugins"].as_array().unwrap().clone();
    let ta = plugins.iter().find(|p| p["id"] == "tenant-attach").unwrap();
    assert_eq!(ta["sent"], 1, "only that device's record is deleted: {ta}");
    let mut expected = before.clone();
    expected.remove(&id);
    assert_eq!(w.cloud_devices(&site.hid), expected);
}

/// A cloud that answers 30% of API requests with 429 (with and without Retry-After) or 5xx and
/// drops connections: the same final counts, and no request retried before its Retry-After.
#[test]
fn concurrent_uploads_under_throttling_never_retry_early() {
    // Several batches of 5,000 in flight while 30% of requests are throttled: a Retry-After
    // must hold back the retry of the throttled request, and the cloud must see no early retry.
    let w = World::start_with(ServeOptions {
        fault_429: 0.3,
        fault_seed: Some(7),
        ..cloud_opts()
    });
    let site = w.generate(12_000, 2303);
    w.config("public", DEFAULT);
    let out = w.apply_ok();
    for (id, s) in steps(&out) {
        assert_eq!(s["status"], "done", "{id}: {s}");
    }
    let stats = w.stats();
    assert!(stats["faults"]["429"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["early_retries"], 0, "{stats}");
    let e = site.expected(None, None);
    let c = w.counts(&site.hid);
    assert_eq!(
        (c.devices, c.ea_enrolled, c.defender, c.scheduled),
        (e.devices, e.ea_enrolled, e.defender, e.scheduled)
    );
}

#[test]
fn faults_give_the_same_counts_and_no_early_retries() {
    let w = World::start_with(ServeOptions {
        fault_429: 0.1,
        fault_429_bare: 0.1,
        fault_5xx: 0.12,
        fault_drop: 0.08,
        fault_seed: Some(20_260_127),
        ..cloud_opts()
    });
    let site = w.generate(2_000, 2303);
    w.config("public", DEFAULT);
    let out = w.apply_ok();
    for (id, s) in steps(&out) {
        assert_eq!(s["status"], "done", "{id}: {s}");
    }
    assert!(
        out["retries"].as_u64().unwrap() > 0,
        "no retries under faults: {out}"
    );
    // More traffic under the same faults: a full resend and a status read.
    let full = w.cli(&["--output", "json", "sync", "--full"]);
    assert_eq!(
        full.code, 0,
        "sync --full failed:\n{}\n{}",
        full.stdout, full.stderr
    );
    let ta = full.json()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == "tenant-attach")
        .cloned()
        .unwrap();
    assert_eq!(
        ta["sent"].as_u64(),
        Some(site.clients().len() as u64),
        "{ta}"
    );
    w.cli(&["--output", "json", "status"]).ok();
    let c = w.counts(&site.hid);
    assert_counts(&c, &site.expected(None, None));
    assert_eq!(c.authority, "configmgr+intune");
    cloud_holds_the_clients(&w, &site);
    let stats = w.stats();
    for kind in ["429", "429_bare", "5xx", "drop"] {
        assert!(
            stats["faults"][kind].as_u64().unwrap() > 0,
            "no {kind} fault injected: {stats}"
        );
    }
    assert_eq!(stats["early_retries"], 0, "{stats}");
}

/// `apply` killed with SIGKILL in the middle of the device upload; the next apply ends with
/// exact counts.
#[test]
fn apply_killed_mid_upload_then_applied_again_is_exact() {
    let slow = ServeOptions {
        fault_latency_ms: 1_500,
        ..cloud_opts()
    };
    let mut w = World::start_with(slow);
    let site = w.generate(30_000, 2303);
    w.config("public", DEFAULT);
    let total = site.clients().len() as u64;

    let mut child = w
        .command(&["--output", "json", "apply", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn apply");
    // Sample the device count every 100 ms (each read waits out the latency too).
    let token = w.reader_token();
    let hid = site.hid.clone();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u64>::new()));
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut killed_at = None;
    let http = reqwest::Client::new();
    while std::time::Instant::now() < deadline {
        let (http, sink, base, token, hid) = (
            http.clone(),
            seen.clone(),
            w.base.clone(),
            token.clone(),
            hid.clone(),
        );
        w.rt.spawn(async move {
            let url = format!("{base}/api/v1/hierarchies/{hid}/status");
            if let Ok(r) = http.get(url).bearer_auth(token).send().await
                && r.status().is_success()
                && let Ok(v) = r.json::<serde_json::Value>().await
                && let Some(n) = v["plugins"]
                    .as_array()
                    .and_then(|a| a.iter().find(|p| p["id"] == "tenant-attach"))
                    .and_then(|p| p["counts"]["devices_uploaded"].as_u64())
            {
                sink.lock().unwrap().push(n);
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        if seen.lock().unwrap().iter().any(|&n| n > 0 && n < total) {
            child.kill().expect("SIGKILL apply");
            killed_at = Some(seen.lock().unwrap().clone());
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "apply ended ({status}) before it could be killed mid-upload; seen {:?}",
                seen.lock().unwrap()
            );
        }
    }
    let _ = child.wait();
    let killed_at = killed_at.expect("the upload never showed a partial device count");
    let partial = w.counts(&site.hid).devices;
    assert!(
        partial > 0 && partial < total,
        "partial {partial} of {total} (seen {killed_at:?})"
    );

    // Again, on a cloud without the latency.
    w.restart_with(cloud_opts());
    let out = w.apply_ok();
    for (id, s) in steps(&out) {
        // Steps that finished before the kill were recorded: they are no-ops now. The upload
        // that was killed is done again.
        let want: &[&str] = if id == "co-management" {
            &["done", "noop"]
        } else {
            &["done"]
        };
        assert!(want.contains(&s["status"].as_str().unwrap()), "{id}: {s}");
    }
    assert_counts(&w.counts(&site.hid), &site.expected(None, None));
    assert_eq!(w.device_count(), total);
    cloud_holds_the_clients(&w, &site);
}

/// `sync --watch --output json` prints JSON Lines: one compact document per round.
#[test]
fn sync_watch_json_prints_one_compact_document_per_line() {
    use std::io::BufRead;
    let w = World::start();
    w.generate(200, 2303);
    w.config("public", DEFAULT);
    w.apply_ok();
    let mut child = w
        .command(&["--output", "json", "sync", "--watch", "1s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sync --watch");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = vec![];
    while lines.len() < 2 {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => lines.push(line.expect("utf-8 line")),
            Err(e) => {
                let _ = child.kill();
                panic!("fewer than 2 lines from sync --watch ({e}): {lines:?}");
            }
        }
    }
    child.kill().expect("stop sync --watch");
    let _ = child.wait();
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON document per line ({e}): {line:?}"));
        assert!(v["plugins"].is_array(), "{v}");
    }
}

/// Off a terminal, every channel an upload touches ends with one summary line on stderr —
/// also when nothing changed (a delta with nothing to send) — naming what it sent, changed,
/// deleted and left unchanged; after apply and after sync alike.
#[test]
fn every_channel_ends_with_one_summary_line_on_stderr() {
    let w = World::start();
    w.generate(800, 2303);
    w.config("public", DEFAULT);
    let applied = w.cli(&["apply", "--yes"]);
    applied.ok();
    let synced = w.cli(&["sync"]);
    synced.ok();
    for (what, stderr) in [("apply", &applied.stderr), ("sync", &synced.stderr)] {
        for channel in ["devices", "analytics", "defender", "comanagement"] {
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with(&format!("{channel}: ")) && l.contains(" in scope, in "))
                .collect();
            assert_eq!(lines.len(), 1, "{what}: {channel}: {lines:?}\n{stderr}");
            assert!(
                lines[0].contains(" sent (") && lines[0].contains("deleted), "),
                "{what}: {}",
                lines[0]
            );
        }
    }
    // The delta after apply sent nothing, and says so.
    assert!(
        synced
            .stderr
            .contains("devices: 0 sent (0 added or changed, 0 deleted)"),
        "{}",
        synced.stderr
    );
}

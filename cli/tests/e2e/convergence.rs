//! Property: whatever happens between two syncs — the upload scope or the co-management
//! settings change, devices are edited, added or removed, collections change, a feature is
//! turned off or on again, records disappear from the cloud or someone else changes their
//! contents — one `sync` afterwards leaves the cloud holding exactly what the site's files say
//! it should, computed independently of the
//! product (`common::SiteModel`). Random sequences, seeded and bounded.

use super::common::*;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// What the configuration says now.
#[derive(Debug, Clone)]
struct Settings {
    /// `None`: all devices; else the collection uploaded.
    upload: Option<String>,
    analytics: bool,
    defender: bool,
    /// `all`, `none` or a pilot collection.
    enrollment: Enrollment,
}

#[derive(Debug, Clone)]
enum Enrollment {
    All,
    None,
    Pilot(String),
}

impl Settings {
    fn toml(&self) -> String {
        let upload = self.upload.as_deref().unwrap_or("all");
        let enrollment = match &self.enrollment {
            Enrollment::All => "enrollment = \"all\"".to_string(),
            Enrollment::None => "enrollment = \"none\"".to_string(),
            Enrollment::Pilot(c) => {
                format!("enrollment = \"pilot\"\npilot_collection = \"{c}\"")
            }
        };
        format!(
            "[attach]\nsettings = \"custom\"\n\n\
             [features.tenant-attach]\nenabled = true\nupload = \"{upload}\"\n\n\
             [features.endpoint-analytics]\nenabled = {}\n\n\
             [features.rbac-authority]\nenabled = true\n\n\
             [features.defender-reporting]\nenabled = {}\n\n\
             [features.co-management]\nenabled = true\n{enrollment}\n",
            self.analytics, self.defender
        )
    }
}

/// One step of a sequence.
#[derive(Debug)]
enum Step {
    Scope(Option<String>),
    Enrollment(Enrollment),
    EditDevices(usize),
    EditCollection,
    ToggleAnalytics,
    ToggleDefender,
    /// Records deleted in the tenant, not by this site: device records (their analytics and
    /// Defender records go with them) or Defender records alone.
    CloudDeletes {
        devices: usize,
        defender: usize,
    },
    /// Records whose contents another actor in the tenant (the administrator) changed, keys
    /// kept: device records or Defender records.
    CloudChanges {
        devices: usize,
        defender: usize,
    },
}

fn id_of(d: &Value) -> i64 {
    d["resource_id"].as_i64().expect("resource_id")
}

/// Edits `n` random devices the way inventory changes between two uploads.
fn edit_devices(site: &mut SiteModel, rng: &mut ChaCha8Rng, n: usize) {
    let with_defender: Vec<Value> = site
        .devices
        .iter()
        .filter(|d| d["defender"].is_object())
        .map(|d| d["defender"].clone())
        .collect();
    for _ in 0..n {
        let i = rng.random_range(0..site.devices.len());
        match rng.random_range(0..9) {
            0 => site.devices[i]["model"] = json!(format!("Edited {}", rng.random::<u32>())),
            1 => {
                site.devices[i]["os_build"] = json!(
                    *["10.0.15063", "10.0.19045", "10.0.22631"]
                        .choose(rng)
                        .unwrap()
                )
            }
            2 => {
                site.devices[i]["join_type"] = json!(
                    *["hybrid", "entra", "domain", "workgroup", "registered"]
                        .choose(rng)
                        .unwrap()
                )
            }
            3 => {
                let d = site.devices[i].as_object_mut().unwrap();
                if d.remove("defender").is_none()
                    && let Some(state) = with_defender.choose(rng)
                {
                    d.insert("defender".into(), state.clone());
                }
            }
            4 => {
                site.devices.remove(i);
            }
            5 => {
                // A new device: a copy of this one under a new id and name.
                let mut d = site.devices[i].clone();
                let id = site.all_ids().into_iter().max().unwrap() + 1;
                d["resource_id"] = json!(id);
                d["name"] = json!(format!("PS1-NEW-{id}"));
                for unique in ["entra_device_id", "serial_number"] {
                    if let Some(o) = d.as_object_mut() {
                        o.remove(unique);
                    }
                }
                site.devices.push(d);
            }
            6 => site.devices[i]["client"] = json!(false),
            _ => {
                let enrolled = site.devices[i]["mdm_enrolled"] == true;
                site.devices[i]["mdm_enrolled"] = json!(!enrolled);
            }
        }
    }
    site.save_devices();
}

/// Adds a random device to, or removes one from, a random collection's direct members.
fn edit_collection(site: &mut SiteModel, rng: &mut ChaCha8Rng) {
    let ids: Vec<String> = site.collections.keys().cloned().collect();
    let cid = ids.choose(rng).unwrap().clone();
    let device = id_of(site.devices.choose(rng).unwrap());
    let members = site.collections.get_mut(&cid).unwrap()["members"]
        .as_array_mut()
        .unwrap();
    if let Some(pos) = members.iter().position(|m| m.as_i64() == Some(device)) {
        members.remove(pos);
    } else {
        members.push(json!(device));
    }
    let mut all: Vec<&Value> = site.collections.values().collect();
    all.sort_by_key(|c| c["id"].as_str().unwrap_or_default().to_string());
    std::fs::write(
        site.dir.join("collections.json"),
        serde_json::to_string_pretty(&all).unwrap(),
    )
    .unwrap();
}

/// Posts deletions to a channel as another actor in the tenant (the administrator).
fn cloud_delete(w: &World, admin: &str, hid: &str, channel: &str, keys: &[String]) {
    if keys.is_empty() {
        return;
    }
    let (s, v) = w.request(
        reqwest::Method::POST,
        &format!("/api/v1/hierarchies/{hid}/upload/{channel}"),
        admin,
        Some(&json!({"upserts": [], "deletes": keys})),
    );
    assert_eq!(s, 200, "delete from {channel}: {v}");
}

/// Posts upserts to a channel as another actor in the tenant (the administrator).
fn cloud_upsert(w: &World, admin: &str, hid: &str, channel: &str, records: &[(String, Value)]) {
    if records.is_empty() {
        return;
    }
    let upserts: Vec<Value> = records
        .iter()
        .map(|(k, r)| json!({"key": k, "record": r}))
        .collect();
    let (s, v) = w.request(
        reqwest::Method::POST,
        &format!("/api/v1/hierarchies/{hid}/upload/{channel}"),
        admin,
        Some(&json!({"upserts": upserts, "deletes": []})),
    );
    assert_eq!(s, 200, "upsert to {channel}: {v}");
    assert_eq!(v["upserted"], records.len(), "upsert to {channel}: {v}");
}

/// What the cloud holds of a hierarchy's records, as its read APIs show them: each uploaded
/// device (without its upload time) and each device's Defender state, by resource id.
#[derive(Debug, PartialEq)]
struct Contents {
    devices: BTreeMap<i64, Value>,
    defender: BTreeMap<i64, Value>,
}

fn cloud_contents(w: &World, hid: &str) -> Contents {
    let mut devices = w.cloud_devices(hid);
    // What the list adds to each record (when, and what the cloud derives from it) is not
    // part of the record.
    for d in devices.values_mut() {
        let o = d.as_object_mut().unwrap();
        for k in [
            "last_uploaded",
            "eligibility",
            "comanagement_state",
            "defender_health",
        ] {
            o.remove(k);
        }
    }
    let defender = w
        .get_all("/api/v1/reports/defender/antivirus-agent-status")
        .into_iter()
        .filter(|r| r["hierarchy_id"] == hid)
        .map(|r| (id_of(&r), r))
        .collect();
    Contents { devices, defender }
}

/// Changes the contents of `devices` uploaded device records and `defender` Defender records
/// in the tenant, as the administrator, keys kept; returns the keys changed per channel.
fn cloud_change(
    w: &World,
    admin: &str,
    hid: &str,
    rng: &mut ChaCha8Rng,
    devices: usize,
    defender: usize,
) -> (Vec<String>, Vec<String>) {
    let now = cloud_contents(w, hid);
    let ids: Vec<i64> = now.devices.keys().copied().collect();
    let changed: Vec<(String, Value)> = ids
        .choose_multiple(rng, devices)
        .map(|id| {
            let mut d = now.devices[id].clone();
            d.as_object_mut().unwrap().remove("hierarchy_id");
            d["model"] = json!(format!("Changed in the tenant {}", rng.random::<u32>()));
            (id.to_string(), d)
        })
        .collect();
    cloud_upsert(w, admin, hid, "devices", &changed);
    let ids: Vec<i64> = now.defender.keys().copied().collect();
    let changed_defender: Vec<(String, Value)> = ids
        .choose_multiple(rng, defender)
        .map(|id| {
            let mut state = now.defender[id].clone();
            let o = state.as_object_mut().unwrap();
            for k in ["hierarchy_id", "resource_id", "device_name"] {
                o.remove(k);
            }
            o.insert(
                "engine_version".into(),
                json!(format!("0.0.{}", rng.random::<u16>())),
            );
            (
                id.to_string(),
                json!({"resource_id": id, "defender": state}),
            )
        })
        .collect();
    cloud_upsert(w, admin, hid, "defender", &changed_defender);
    (
        changed.into_iter().map(|(k, _)| k).collect(),
        changed_defender.into_iter().map(|(k, _)| k).collect(),
    )
}

/// The records a sync's JSON report says one plugin sent.
fn sent_by(r: &Run, plugin: &str) -> u64 {
    r.json()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == plugin)
        .map(|p| p["sent"].as_u64().unwrap())
        .sum()
}

/// The cloud's counts and uploaded devices against the site's, computed from its files.
#[track_caller]
fn assert_converged(w: &World, site: &SiteModel, s: &Settings, after: &str) {
    let site = SiteModel::load(&site.dir);
    let scope = s.upload.as_ref().map(|c| site.effective(c));
    let pilot = match &s.enrollment {
        Enrollment::Pilot(c) => Some(site.effective(c)),
        _ => None,
    };
    let mut e = site.expected(scope.as_ref(), pilot.as_ref());
    if !s.analytics {
        e.ea_enrolled = 0;
    }
    if !s.defender {
        e.defender = 0;
    }
    if matches!(s.enrollment, Enrollment::None) {
        e.scheduled = 0;
    }
    let c = w.counts(&site.hid);
    assert_eq!(
        (
            c.devices,
            c.ea_enrolled,
            c.defender,
            c.scheduled,
            c.comanaged
        ),
        (
            e.devices,
            e.ea_enrolled,
            e.defender,
            e.scheduled,
            e.comanaged
        ),
        "after {after}: cloud (devices, EA enrolled, defender, scheduled, comanaged) vs the site's ({s:?})"
    );
    let uploaded: BTreeSet<i64> = w.cloud_devices(&site.hid).into_keys().collect();
    let want: BTreeSet<i64> = site
        .clients()
        .into_iter()
        .filter(|id| scope.as_ref().is_none_or(|sc| sc.contains(id)))
        .collect();
    assert_eq!(uploaded, want, "after {after}: the uploaded devices");
}

fn random_step(rng: &mut ChaCha8Rng, collections: &[String]) -> Step {
    match rng.random_range(0..9) {
        0 | 1 => Step::Scope(if rng.random_bool(0.4) {
            None
        } else {
            Some(collections.choose(rng).unwrap().clone())
        }),
        2 => Step::Enrollment(match rng.random_range(0..3) {
            0 => Enrollment::All,
            1 => Enrollment::None,
            _ => Enrollment::Pilot(collections.choose(rng).unwrap().clone()),
        }),
        3 => Step::EditDevices(rng.random_range(1..25)),
        4 => Step::EditCollection,
        5 => Step::ToggleAnalytics,
        6 => Step::ToggleDefender,
        7 => Step::CloudDeletes {
            devices: rng.random_range(0..20),
            defender: rng.random_range(0..20),
        },
        _ => Step::CloudChanges {
            devices: rng.random_range(0..20),
            defender: rng.random_range(0..20),
        },
    }
}

fn run_sequence(seed: u64, steps: usize) {
    // Syncs that left the unchanged lines unread (the line index of the previous sync): the
    // sequence must exercise them, or it does not test the delta users run most.
    let mut rounds_leaving_lines_unread = 0;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let w = World::start();
    let mut site = w.generate(400, 2303);
    let collections: Vec<String> = {
        let mut ids: Vec<String> = site.collections.keys().cloned().collect();
        ids.sort();
        ids
    };
    let mut s = Settings {
        upload: None,
        analytics: true,
        defender: true,
        enrollment: Enrollment::All,
    };
    w.config("public", &s.toml());
    w.apply_ok();
    assert_converged(&w, &site, &s, "the first apply");
    let admin = w.admin_token();
    let mut history = vec![];
    for n in 0..steps {
        let step = random_step(&mut rng, &collections);
        // A change in the tenant alone: the sync must bring back exactly what the cloud held.
        let mut before = None;
        history.push(format!("{step:?}"));
        let applies = match &step {
            Step::Scope(scope) => {
                s.upload = scope.clone();
                true
            }
            Step::Enrollment(e) => {
                s.enrollment = e.clone();
                true
            }
            Step::ToggleAnalytics => {
                s.analytics = !s.analytics;
                true
            }
            Step::ToggleDefender => {
                s.defender = !s.defender;
                true
            }
            Step::EditDevices(k) => {
                edit_devices(&mut site, &mut rng, *k);
                false
            }
            Step::EditCollection => {
                edit_collection(&mut site, &mut rng);
                false
            }
            Step::CloudDeletes { devices, defender } => {
                let uploaded: Vec<String> = w
                    .cloud_devices(&site.hid)
                    .into_keys()
                    .map(|k| k.to_string())
                    .collect();
                let pick = |rng: &mut ChaCha8Rng, k: usize| -> Vec<String> {
                    uploaded.choose_multiple(rng, k).cloned().collect()
                };
                let gone = pick(&mut rng, *devices);
                cloud_delete(&w, &admin, &site.hid, "devices", &gone);
                if s.defender {
                    let gone = pick(&mut rng, *defender);
                    cloud_delete(&w, &admin, &site.hid, "defender", &gone);
                }
                false
            }
            Step::CloudChanges { devices, defender } => {
                before = Some(cloud_contents(&w, &site.hid));
                let defender = if s.defender { *defender } else { 0 };
                cloud_change(&w, &admin, &site.hid, &mut rng, *devices, defender);
                false
            }
        };
        let what = format!("seed {seed}, step {n}: {}", history.join(" → "));
        if applies {
            w.config("public", &s.toml());
            let r = w.cli(&["--output", "json", "apply", "--yes"]);
            assert_eq!(r.code, 0, "{what}: apply failed:\n{}", r.stderr);
            assert_converged(&w, &site, &s, &format!("{what} (apply)"));
        }
        let r = w.cli(&["--output", "json", "sync"]);
        assert_eq!(r.code, 0, "{what}: sync failed:\n{}", r.stderr);
        assert_converged(&w, &site, &s, &format!("{what} (sync)"));
        if r.stderr.contains("not read again") {
            rounds_leaving_lines_unread += 1;
        }
        if let Some(before) = before {
            let after = cloud_contents(&w, &site.hid);
            assert!(
                after == before,
                "{what}: the records changed in the tenant are not the site's again after the sync"
            );
        }
        site = SiteModel::load(&site.dir);
    }
    assert!(
        rounds_leaving_lines_unread > 0,
        "seed {seed}: no sync of the sequence left unchanged lines unread"
    );
}

/// Narrowing the upload scope to a collection and widening it again: the Defender and
/// Endpoint analytics records of the devices that left and came back are in the cloud again,
/// after the apply itself and after a plain sync.
#[test]
fn narrowing_then_widening_the_scope_keeps_every_dependent_record() {
    let w = World::start();
    let site = w.generate(600, 2303);
    let mut collections: Vec<String> = site.collections.keys().cloned().collect();
    collections.sort();
    let narrow = collections
        .iter()
        .find(|c| {
            let n = site.effective(c).len();
            n > 10 && n < 300
        })
        .expect("a collection of a few devices")
        .clone();
    let mut s = Settings {
        upload: None,
        analytics: true,
        defender: true,
        enrollment: Enrollment::All,
    };
    w.config("public", &s.toml());
    w.apply_ok();
    assert_converged(&w, &site, &s, "apply with all devices");
    for scope in [Some(narrow), None] {
        s.upload = scope;
        w.config("public", &s.toml());
        w.apply_ok();
        assert_converged(&w, &site, &s, &format!("apply with upload {:?}", s.upload));
    }
    w.cli(&["sync"]).ok();
    assert_converged(&w, &site, &s, "a plain sync");
}

/// Records deleted in the tenant by someone else come back with the next sync, and only them.
#[test]
fn records_deleted_in_the_tenant_are_sent_again_by_the_next_sync() {
    let w = World::start();
    let site = w.generate(500, 2303);
    let s = Settings {
        upload: None,
        analytics: true,
        defender: true,
        enrollment: Enrollment::All,
    };
    w.config("public", &s.toml());
    w.apply_ok();
    let admin = w.admin_token();
    let uploaded: Vec<String> = w
        .cloud_devices(&site.hid)
        .into_keys()
        .take(30)
        .map(|k| k.to_string())
        .collect();
    cloud_delete(&w, &admin, &site.hid, "devices", &uploaded[..20]);
    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    let sent: u64 = r.json()["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["id"] == "tenant-attach")
        .map(|p| p["sent"].as_u64().unwrap())
        .sum();
    assert_eq!(
        sent, 20,
        "exactly the deleted device records are sent again"
    );
    assert!(
        r.stderr.contains("the cloud holds"),
        "the sync says it reconciled: {}",
        r.stderr
    );
    assert_converged(&w, &site, &s, "the sync after deletions in the tenant");
}

/// Records whose contents someone else changed in the tenant (same keys) are sent again by the
/// next sync, and only them: the cloud holds the site's contents again.
#[test]
fn a_record_changed_in_the_tenant_is_sent_again_by_the_next_sync() {
    let w = World::start();
    let site = w.generate(300, 2303);
    let s = Settings {
        upload: None,
        analytics: true,
        defender: true,
        enrollment: Enrollment::All,
    };
    w.config("public", &s.toml());
    w.apply_ok();
    let before = cloud_contents(&w, &site.hid);
    assert!(before.defender.len() >= 5, "the site has Defender records");
    let admin = w.admin_token();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (devices, defender) = cloud_change(&w, &admin, &site.hid, &mut rng, 7, 5);
    let changed = cloud_contents(&w, &site.hid);
    for k in &devices {
        let id: i64 = k.parse().unwrap();
        assert_ne!(
            changed.devices[&id], before.devices[&id],
            "device {id} changed"
        );
    }
    for k in &defender {
        let id: i64 = k.parse().unwrap();
        assert_ne!(
            changed.defender[&id], before.defender[&id],
            "Defender {id} changed"
        );
    }
    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    assert_eq!(
        (
            sent_by(&r, "tenant-attach"),
            sent_by(&r, "defender-reporting")
        ),
        (7, 5),
        "exactly the changed records are sent again:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("other contents than this site sent"),
        "the sync says why it resends: {}",
        r.stderr
    );
    let after = cloud_contents(&w, &site.hid);
    assert!(after == before, "the cloud holds the site's records again");
    assert_converged(&w, &site, &s, "the sync after changes in the tenant");
    // In line again: nothing more to send.
    let r = w.cli(&["--output", "json", "sync"]);
    r.ok();
    assert_eq!(
        (
            sent_by(&r, "tenant-attach"),
            sent_by(&r, "defender-reporting")
        ),
        (0, 0)
    );
}

#[test]
fn random_sequences_of_changes_each_converge_after_one_sync() {
    for seed in [11, 29] {
        run_sequence(seed, 10);
    }
}

/// A feature turned off in the tenant behind the site's back: the sync of its records fails
/// with a message that names the feature and says what to do, the other features sync, and
/// after `apply` turns it on again a sync converges.
#[test]
fn a_sync_of_a_feature_turned_off_in_the_tenant_says_to_apply() {
    let w = World::start();
    let site = w.generate(300, 2303);
    let s = Settings {
        upload: None,
        analytics: true,
        defender: true,
        enrollment: Enrollment::All,
    };
    w.config("public", &s.toml());
    w.apply_ok();
    let admin = w.admin_token();
    let (st, v) = w.request(
        reqwest::Method::DELETE,
        &format!(
            "/api/v1/hierarchies/{}/features/defender-reporting",
            site.hid
        ),
        &admin,
        None,
    );
    assert_eq!(st, 204, "{v}");
    let r = w.cli(&["--output", "json", "sync"]);
    assert_ne!(r.code, 0, "{}", r.stderr);
    let plugins = r.json()["plugins"].as_array().unwrap().clone();
    let defender = plugins
        .iter()
        .find(|p| p["id"] == "defender-reporting")
        .unwrap();
    let error = defender["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("defender-reporting is not enabled")
            && error.contains("turned off")
            && error.contains("run `cloudattach apply`"),
        "the error names the feature and what to do: {defender}"
    );
    assert!(!error.contains("/keys"), "{error}");
    for p in plugins.iter().filter(|p| p["id"] != "defender-reporting") {
        assert!(p["error"].is_null(), "{p}");
    }
    w.apply_ok();
    w.cli(&["sync"]).ok();
    assert_converged(&w, &site, &s, "apply and sync after the feature came back");
}

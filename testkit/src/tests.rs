//! The test kit's own tests: the in-memory cloud's semantics.

use super::*;
use serde_json::json;

fn rec(key: &str, v: i64) -> Record {
    Record {
        key: key.into(),
        value: json!({ "v": v }),
    }
}

#[test]
fn offline_by_default() {
    let host = MemoryHost::new(MemoryHost::sample_site());
    assert_eq!(
        host.cloud(Method::Get, "status", None).unwrap_err().code,
        "offline"
    );
    let err = host
        .sync_records("devices", &mut std::iter::empty(), SyncMode::Delta)
        .unwrap_err();
    assert_eq!(err.code, "offline");
}

#[test]
fn delta_sends_changes_and_deletions_only() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud();
    let first = host
        .sync_records(
            "c",
            &mut vec![rec("1", 1), rec("2", 2)].into_iter(),
            SyncMode::Delta,
        )
        .unwrap();
    assert_eq!(
        (first.sent, first.upserted, first.unchanged, first.total),
        (2, 2, 0, 2)
    );
    let second = host
        .sync_records(
            "c",
            &mut vec![rec("1", 1), rec("3", 3)].into_iter(),
            SyncMode::Delta,
        )
        .unwrap();
    assert_eq!(
        (
            second.sent,
            second.upserted,
            second.deleted,
            second.unchanged,
            second.total
        ),
        (2, 1, 1, 1, 2)
    );
    let calls = host.sync_calls_to("c");
    assert_eq!(calls[1].upserted_keys, vec!["3"]);
    assert_eq!(calls[1].deleted_keys, vec!["2"]);
    let full = host
        .sync_records(
            "c",
            &mut vec![rec("1", 1), rec("3", 4)].into_iter(),
            SyncMode::Full,
        )
        .unwrap();
    assert_eq!((full.sent, full.upserted, full.unchanged), (2, 1, 1));
    assert_eq!(host.channel("c")["3"], json!({ "v": 4 }));
}

#[test]
fn collections_and_upload_scope() {
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_devices([device(1), device(2), with(device(3), |d| d.client = false)])
        .with_collection("PS100012", "Pilot", [2, 3])
        .with_feature("tenant-attach", options(json!({ "upload": "PS100012" })));
    assert_eq!(host.collection(ALL_SYSTEMS).unwrap().member_count, 3);
    assert!(host.is_member(ALL_SYSTEMS, 3));
    assert!(!host.is_member(ALL_SYSTEMS, 4));
    assert_eq!(host.collection("PS100012").unwrap().member_count, 2);
    assert!(host.collection("PS1000FF").is_none());
    let uploaded: Vec<i64> = host
        .devices()
        .iter()
        .filter(|d| host.is_uploaded(d))
        .map(|d| d.resource_id)
        .collect();
    assert_eq!(uploaded, vec![2]);
}

#[test]
fn the_inventory_can_change_between_steps() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_devices([device(1), device(2)]);
    host.upsert_device(with(device(2), |d| d.name = "RENAMED".into()));
    host.upsert_device(device(3));
    assert!(host.remove_device(1));
    assert!(!host.remove_device(1));
    let mut seen = vec![];
    host.for_each_device(&mut |d| seen.push((d.resource_id, d.name.clone())))
        .unwrap();
    assert_eq!(seen, [(2, "RENAMED".to_string()), (3, "PC-3".to_string())]);
    assert!(!host.is_member(ALL_SYSTEMS, 1));
}

#[test]
fn features_and_status() {
    // The tenant's "Use Intune RBAC" toggle is on: clearing the checkbox leaves Intune alone.
    let intune_rbac = true;
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud_feature(
        CloudFeature::new("rbac-authority").extra("effective_authority", move |settings| {
            let cleared = settings.get("enforce_configmgr_rbac") == Some(&Value::Bool(false));
            Value::from(if cleared && intune_rbac {
                "intune"
            } else {
                "configmgr+intune"
            })
        }),
    );
    let body = json!({ "settings": { "enforce_configmgr_rbac": false } });
    host.cloud(Method::Put, "features/rbac-authority", Some(&body))
        .unwrap();
    let status = host.cloud(Method::Get, "status", None).unwrap();
    assert_eq!(status["plugins"][0]["effective_authority"], "intune");
    assert_eq!(
        host.feature_settings("rbac-authority").unwrap()["enforce_configmgr_rbac"],
        false
    );
    host.cloud(Method::Delete, "features/rbac-authority", None)
        .unwrap();
    assert!(host.feature_settings("rbac-authority").is_none());
    assert_eq!(
        host.cloud(Method::Get, "nowhere", None).unwrap_err().code,
        "http-404"
    );
    assert_eq!(host.cloud_calls().len(), 4);
}

#[test]
fn injected_errors_are_returned_and_recorded() {
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_cloud()
        .with_cloud_error(HostError::new("http-503", "unavailable"));
    assert_eq!(
        host.cloud(Method::Put, "features/x", None)
            .unwrap_err()
            .code,
        "http-503"
    );
    assert!(
        host.sync_records("c", &mut vec![rec("1", 1)].into_iter(), SyncMode::Delta)
            .is_err()
    );
    assert_eq!(host.cloud_calls().len(), 1);
    assert_eq!(host.sync_calls()[0].records.len(), 1);
}

#[test]
fn an_injected_cloud_error_works_without_with_cloud() {
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_cloud_error(HostError::new("http-503", "unavailable"));
    assert_eq!(
        host.cloud(Method::Get, "status", None).unwrap_err().code,
        "http-503"
    );
    let err = host
        .sync_records("c", &mut vec![rec("1", 1)].into_iter(), SyncMode::Delta)
        .unwrap_err();
    assert_eq!(err.code, "http-503");
    assert_eq!(host.sync_calls().len(), 1);
    let upload = MemoryHost::new(MemoryHost::sample_site())
        .with_upload_error(HostError::new("http-500", "lost"));
    assert!(
        upload
            .cloud(
                Method::Put,
                "features/ext-x",
                Some(&json!({"settings": {}}))
            )
            .is_ok()
    );
    assert_eq!(
        upload
            .sync_records("ext/ext-x", &mut std::iter::empty(), SyncMode::Delta)
            .unwrap_err()
            .code,
        "http-500"
    );
}

#[test]
fn the_extension_records_are_served_as_the_read_api_answers_them() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud();
    let none = host
        .cloud(Method::Get, "ext/inventory/records", None)
        .unwrap();
    assert_eq!(none, json!({ "@odata.count": 0, "value": [] }));
    host.sync_records(
        "ext/inventory",
        &mut vec![rec("b", 1), rec("a", 2)].into_iter(),
        SyncMode::Delta,
    )
    .unwrap();
    host.sync_records(
        "ext/inventory",
        &mut vec![rec("b", 1), rec("a", 3)].into_iter(),
        SyncMode::Delta,
    )
    .unwrap();
    let answer = host
        .cloud(Method::Get, "ext/inventory/records", None)
        .unwrap();
    let records: ExtRecords = serde_json::from_value(answer).unwrap();
    assert_eq!(records.count, 2);
    let keys: Vec<&str> = records.value.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"], "ordered by key");
    assert_eq!(records.value[0].record, json!({ "v": 3 }));
    assert_eq!(records.value[0].updated, "2026-01-01T00:00:02Z", "changed");
    assert_eq!(
        records.value[1].updated, "2026-01-01T00:00:01Z",
        "unchanged"
    );
    assert_eq!(
        host.cloud(Method::Put, "ext/inventory/records", None)
            .unwrap_err()
            .code,
        "http-404"
    );
}

#[test]
fn records_the_cloud_refuses_are_refused_with_its_message() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud();
    let long_key = "k".repeat(257);
    let err = host
        .sync_records(
            "ext/inventory",
            &mut vec![rec(&long_key, 1)].into_iter(),
            SyncMode::Delta,
        )
        .unwrap_err();
    assert_eq!(err.code, "http-400");
    assert!(
        err.message
            .ends_with("400 BadRequest: record keys must be 1 to 256 characters"),
        "{err:?}"
    );
    let not_an_object = Record::new("a", json!([1]));
    let err = host
        .sync_records(
            "ext/inventory",
            &mut vec![not_an_object].into_iter(),
            SyncMode::Delta,
        )
        .unwrap_err();
    assert!(err.message.contains("must be a JSON object"), "{err:?}");
    let twice = host
        .sync_records(
            "ext/inventory",
            &mut vec![rec("a", 1), rec("a", 2)].into_iter(),
            SyncMode::Delta,
        )
        .unwrap_err();
    assert!(
        twice.message.contains("appears more than once"),
        "{twice:?}"
    );
    let no_client = with(device(5), |d| d.client = false);
    let err = host
        .sync_records(
            "devices",
            &mut vec![Record::new("5", serde_json::to_value(&no_client).unwrap())].into_iter(),
            SyncMode::Delta,
        )
        .unwrap_err();
    assert!(
        err.message.contains("only devices with a client"),
        "{err:?}"
    );
    let wrong_key = Record::new("05", serde_json::to_value(device(5)).unwrap());
    assert!(
        host.sync_records("devices", &mut vec![wrong_key].into_iter(), SyncMode::Delta)
            .is_err()
    );
    assert!(
        host.sync_calls().is_empty(),
        "refused uploads change nothing"
    );
    assert!(host.channel("ext/inventory").is_empty());
    let fine = Record::new("5", serde_json::to_value(device(5)).unwrap());
    assert!(
        host.sync_records("devices", &mut vec![fine].into_iter(), SyncMode::Delta)
            .is_ok()
    );
}

#[test]
fn declared_features_are_listed_like_the_cloud_lists_its_built_ins() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud_feature(
        CloudFeature::new("tenant-attach")
            .channel("devices")
            .count_records("devices_uploaded", "devices"),
    );
    let status: HierarchyStatus =
        serde_json::from_value(host.cloud(Method::Get, "status", None).unwrap()).unwrap();
    assert_eq!(status.hierarchy_id, host.site().hierarchy_id);
    let off = status.plugin("tenant-attach").unwrap();
    assert!(!off.enabled);
    assert_eq!(off.settings, Some(Value::Null));
    assert_eq!(off.counts["devices_uploaded"], 0);
    host.cloud(
        Method::Put,
        "features/tenant-attach",
        Some(&json!({ "settings": { "upload": "all" } })),
    )
    .unwrap();
    host.cloud(
        Method::Put,
        "features/acme-inventory",
        Some(&json!({ "settings": {} })),
    )
    .unwrap();
    let fine = Record::new("5", serde_json::to_value(device(5)).unwrap());
    host.sync_records("devices", &mut vec![fine].into_iter(), SyncMode::Delta)
        .unwrap();
    let status: HierarchyStatus =
        serde_json::from_value(host.cloud(Method::Get, "status", None).unwrap()).unwrap();
    let ids: Vec<&str> = status.plugins.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["tenant-attach", "acme-inventory"]);
    let on = status.plugin("tenant-attach").unwrap();
    assert!(on.enabled);
    assert_eq!(on.counts["devices_uploaded"], 1);
    assert_eq!(on.last_sync.as_deref(), Some("2026-01-01T00:00:01Z"));
    let ext = status.plugin("acme-inventory").unwrap();
    assert_eq!(ext.counts["records"], 0);
    let list: FeatureList =
        serde_json::from_value(host.cloud(Method::Get, "features", None).unwrap()).unwrap();
    assert_eq!(list.value.len(), 2);
    assert_eq!(list.value[1].id, "tenant-attach");
    assert_eq!(
        list.value[1].last_sync.as_deref(),
        Some("2026-01-01T00:00:01Z")
    );
    assert_eq!(
        host.cloud(
            Method::Put,
            "features/bad-",
            Some(&json!({ "settings": {} }))
        )
        .unwrap_err()
        .code,
        "http-400"
    );
}

#[test]
fn options_resolved_against_a_manifest_get_its_defaults() {
    let manifest = Manifest::new("acme-inventory", "Inventory", "1.0.0").option(
        cloudattach_sdk::OptionSpec::boolean("servers", true, "Servers too"),
    );
    let host =
        MemoryHost::new(MemoryHost::sample_site()).with_resolved_feature(&manifest, json!({}));
    assert_eq!(
        host.feature_options("acme-inventory").unwrap()["servers"],
        true
    );
    let refused = std::panic::catch_unwind(|| resolved_options(&manifest, json!({ "x": 1 })));
    assert!(refused.is_err(), "an unknown key is refused");
}

#[test]
fn a_pass_with_parts_leaves_out_the_blocks_not_asked_for() {
    let full = with(device(1), |d| {
        d.defender = Some(cloudattach_sdk::DefenderState::default());
        d.analytics = Some(cloudattach_sdk::Analytics::default());
    });
    let host = MemoryHost::new(MemoryHost::sample_site()).with_device(full);
    let mut seen = vec![];
    host.for_each_device_with(DeviceParts::DEFENDER, &mut |d| {
        seen.push((d.defender.is_some(), d.analytics.is_some()))
    })
    .unwrap();
    assert_eq!(seen, [(true, false)]);
}

//! The defender-reporting plugin against the in-memory host.

use cloudattach_plugin_defender_reporting::{CHANNEL, DefenderReporting, ID, defender_record};
use cloudattach_sdk::{
    CheckStatus, DefenderState, Detection, Environment, HostError, Method, PlanAction, Plugin,
    Severity, SiteVersion, SyncMode,
};
use cloudattach_testkit::{CloudFeature, MemoryHost, device, options, with};
use serde_json::json;

fn defender(active: bool) -> DefenderState {
    with(DefenderState::default(), |def| {
        def.defender_enabled = true;
        def.rtp_enabled = true;
        def.engine_version = Some("1.1.23110.2".into());
        def.detections = if active {
            vec![Detection::new(
                2147735505,
                "Trojan:Win32/Wacatac.B!ml",
                "Trojan",
                "severe",
                "active",
                "2026-01-05T10:00:00Z",
                2,
            )]
        } else {
            vec![]
        };
    })
}

/// 1 and 2 with Defender data (2 with active malware), 3 without, 4 with data but no client,
/// 5 with data but outside the upload collection PS100012 = {1, 2, 3, 4}.
fn site() -> MemoryHost {
    MemoryHost::new(MemoryHost::sample_site())
        .with_devices([
            with(device(1), |d| d.defender = Some(defender(false))),
            with(device(2), |d| d.defender = Some(defender(true))),
            device(3),
            with(device(4), |d| {
                d.client = false;
                d.client_version = None;
                d.defender = Some(defender(false));
            }),
            with(device(5), |d| d.defender = Some(defender(false))),
        ])
        .with_collection("PS100012", "Uploaded", [1, 2, 3, 4])
        .with_feature("tenant-attach", options(json!({ "upload": "PS100012" })))
}

#[test]
fn manifest_matches_the_spec_table() {
    assert!(
        cloudattach_sdk::registered_plugins().any(|p| p.manifest().id == ID),
        "register_plugin! registers it"
    );
    let m = DefenderReporting.manifest();
    assert_eq!(m.id, ID);
    assert_eq!(m.depends_on, ["tenant-attach"]);
    assert_eq!(m.environments, [Environment::Public, Environment::Usgov]);
    assert_eq!(
        m.min_site_version_for(Environment::Public),
        SiteVersion(2303)
    );
    assert_eq!(
        m.min_site_version_for(Environment::Usgov),
        SiteVersion(2303)
    );
    assert!(m.in_default_settings);
    assert!(m.options.is_empty());
}

#[test]
fn check_counts_uploaded_devices_with_defender_data() {
    let report = DefenderReporting.check(&site(), &options(json!({})));
    assert_eq!(report.status(), CheckStatus::Pass, "{:?}", report.findings);
    assert_eq!(report.data["uploaded_devices"], 3);
    assert_eq!(report.data["devices_with_defender"], 2);
    assert_eq!(report.data["devices_with_active_malware"], 1);
    assert_eq!(
        report.findings[0].message,
        "2 of 3 uploaded devices carry Microsoft Defender data (1 with active malware)"
    );
}

#[test]
fn no_defender_data_warns() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_devices([device(1), device(2)]);
    let report = DefenderReporting.check(&host, &options(json!({})));
    assert_eq!(report.status(), CheckStatus::Warn);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.code == "no-defender-data")
    );
}

#[test]
fn plan_details_the_report() {
    let plan = DefenderReporting.plan(&site(), &options(json!({})), None);
    assert_eq!(
        (plan.action, plan.detail.as_deref()),
        (
            PlanAction::Enable,
            Some("report Defender state of 2 devices")
        )
    );
}

#[test]
fn apply_uploads_the_defender_block_of_uploaded_devices() {
    let in_the_cloud = CloudFeature::new(ID)
        .channel(CHANNEL)
        .count_records("devices_reported", CHANNEL);
    let host = site().with_cloud_feature(in_the_cloud);
    let outcome = DefenderReporting.apply(&host, &options(json!({})));
    assert!(outcome.ok, "{:?}", outcome.findings);
    assert_eq!(outcome.counts["devices_reported"], 2);
    assert_eq!(outcome.counts["sent"], 2);
    let put = &host.cloud_calls()[0];
    assert_eq!(
        (put.method, put.path.as_str()),
        (Method::Put, "features/defender-reporting")
    );
    assert_eq!(put.body, Some(json!({ "settings": {} })));

    let sync = &host.sync_calls_to(CHANNEL)[0];
    assert_eq!(sync.mode, SyncMode::Delta);
    let keys: Vec<&str> = sync.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["1", "2"]);
    let two = &host.channel(CHANNEL)["2"];
    assert_eq!(two["resource_id"], 2);
    assert_eq!(
        two["defender"]["detections"][0]["threat_name"],
        "Trojan:Win32/Wacatac.B!ml"
    );
    assert_eq!(two["defender"]["engine_version"], "1.1.23110.2");
    assert_eq!(
        two.as_object().unwrap().len(),
        2,
        "only resource_id and defender: {two}"
    );
    assert_eq!(
        DefenderReporting.status(&host).unwrap().counts["devices_reported"],
        2
    );
}

#[test]
fn record_shape() {
    assert!(defender_record(&device(3)).is_none());
    let r = defender_record(&with(device(3), |d| {
        d.defender = Some(DefenderState::default())
    }))
    .unwrap();
    assert_eq!(r.key, "3");
    assert_eq!(r.value["defender"]["defender_enabled"], false);
}

#[test]
fn delta_sends_only_devices_whose_defender_state_changed() {
    let host = site().with_cloud();
    assert!(DefenderReporting.apply(&host, &options(json!({}))).ok);
    let stats = DefenderReporting
        .sync(&host, &options(json!({})), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!((stats.sent, stats.unchanged), (0, 2));
    // Device 2 is cleaned, device 1 loses its Defender block, device 3 gains one.
    host.upsert_device(with(device(2), |d| d.defender = Some(defender(false))));
    host.upsert_device(device(1));
    host.upsert_device(with(device(3), |d| d.defender = Some(defender(true))));
    let stats = DefenderReporting
        .sync(&host, &options(json!({})), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!(
        (stats.sent, stats.upserted, stats.deleted, stats.total),
        (3, 2, 1, 2)
    );
    let last = host.sync_calls().pop().unwrap();
    assert_eq!(
        (last.upserted_keys, last.deleted_keys),
        (
            vec!["2".to_string(), "3".to_string()],
            vec!["1".to_string()]
        )
    );
    assert!(
        host.channel(CHANNEL)["2"]["defender"]
            .get("detections")
            .is_none()
    );
}

#[test]
fn offline_apply_fails() {
    let outcome = DefenderReporting.apply(&site(), &options(json!({})));
    assert_eq!(
        (outcome.ok, outcome.findings[0].code.as_str()),
        (false, "offline")
    );
}

#[test]
fn a_failed_upload_fails_apply_after_enabling() {
    let host = site()
        .with_cloud()
        .with_upload_error(HostError::new("http-429", "throttled"));
    let outcome = DefenderReporting.apply(&host, &options(json!({})));
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "http-429");
    assert!(
        host.feature_settings(ID).is_some(),
        "the feature was enabled first"
    );
    let upload = &host.sync_calls()[0];
    assert_eq!((upload.records.len(), upload.stats.sent), (2, 0));
    assert!(host.channel(CHANNEL).is_empty());
}

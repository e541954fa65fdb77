//! The endpoint-analytics plugin: eligibility boundaries, the check, and what apply uploads.

use cloudattach_plugin_endpoint_analytics::{
    CHANNEL, EndpointAnalytics, Exclusion, ID, analytics_record, exclusion, reports_app_reliability,
};
use cloudattach_sdk::{
    Analytics, AppUsage, CheckStatus, Device, Environment, HostError, Method, PlanAction, Plugin,
    Severity, SiteVersion, SyncMode,
};
use cloudattach_testkit::{CloudFeature, MemoryHost, device, options, with};
use serde_json::json;

fn with_client(version: &str) -> Device {
    with(device(1), |d| d.client_version = Some(version.into()))
}

fn telemetry() -> Analytics {
    Analytics::new(12000, 30000, 4000, 9000).with_apps(vec![AppUsage::new(
        "Microsoft Teams",
        600,
        vec![0, 1],
    )])
}

#[test]
fn manifest_matches_the_spec_table() {
    assert!(
        cloudattach_sdk::registered_plugins().any(|p| p.manifest().id == ID),
        "register_plugin! registers it"
    );
    let m = EndpointAnalytics.manifest();
    assert_eq!(m.id, ID);
    assert_eq!(m.depends_on, ["tenant-attach"]);
    assert_eq!(m.environments, [Environment::Public, Environment::Usgov]);
    assert_eq!(
        m.min_site_version_for(Environment::Public),
        SiteVersion(2002)
    );
    assert_eq!(
        m.min_site_version_for(Environment::Usgov),
        SiteVersion(2002)
    );
    assert!(m.in_default_settings);
    assert!(m.options.is_empty());
}

#[test]
fn eligibility_table() {
    let cases: Vec<(&str, Device, bool, Option<Exclusion>)> = vec![
        ("testkit device", device(1), true, None),
        (
            "client 5.00.8968 exactly",
            with_client("5.00.8968"),
            true,
            None,
        ),
        (
            "client 5.00.8968.1000",
            with_client("5.00.8968.1000"),
            true,
            None,
        ),
        (
            "client 5.00.8967",
            with_client("5.00.8967"),
            true,
            Some(Exclusion::ClientTooOld),
        ),
        (
            "client 5.00.8967.1010",
            with_client("5.00.8967.1010"),
            true,
            Some(Exclusion::ClientTooOld),
        ),
        (
            "client unreadable",
            with_client("n/a"),
            true,
            Some(Exclusion::ClientTooOld),
        ),
        (
            "not uploaded",
            device(1),
            false,
            Some(Exclusion::NotUploaded),
        ),
        (
            "server",
            with(device(1), |d| {
                d.os = "Microsoft Windows NT Server 10.0".into()
            }),
            true,
            Some(Exclusion::ServerOs),
        ),
        (
            "Windows 8.1",
            with(device(1), |d| {
                d.os = "Microsoft Windows NT Workstation 6.3".into();
                d.os_build = "6.3.9600".into();
            }),
            true,
            Some(Exclusion::OtherOs),
        ),
        (
            "Windows 11",
            with(device(1), |d| d.os_build = "10.0.22621.2715".into()),
            true,
            None,
        ),
        (
            "old Windows 10 build is fine",
            with(device(1), |d| d.os_build = "10.0.15063".into()),
            true,
            None,
        ),
    ];
    for (name, d, uploaded, expected) in cases {
        assert_eq!(exclusion(&d, uploaded), expected, "{name}");
    }
}

#[test]
fn app_reliability_boundary() {
    assert!(reports_app_reliability(&with_client("5.00.9012")));
    assert!(reports_app_reliability(&with_client("5.00.9012.1015")));
    assert!(!reports_app_reliability(&with_client("5.00.9011")));
    assert!(!reports_app_reliability(&with_client("5.00.9011.1023")));
    assert!(!reports_app_reliability(
        &with(device(1), |d| d.client = false)
    ));
}

/// 1–5 eligible (1 and 2 with telemetry; 3 and 4 on 5.00.8968, so no app reliability),
/// 6 client 5.00.8967, 7 server, 8 no client, 9 outside the upload collection.
fn site() -> MemoryHost {
    MemoryHost::new(MemoryHost::sample_site())
        .with_devices([
            with(device(1), |d| d.analytics = Some(telemetry())),
            with(with_client_id(2, "5.00.8968.1000"), |d| {
                d.analytics = Some(telemetry())
            }),
            with_client_id(3, "5.00.8968"),
            with_client_id(4, "5.00.9011"),
            device(5),
            with_client_id(6, "5.00.8967"),
            with(device(7), |d| {
                d.os = "Microsoft Windows NT Server 10.0".into()
            }),
            with(device(8), |d| {
                d.client = false;
                d.client_version = None;
            }),
            device(9),
        ])
        .with_collection("PS100012", "Uploaded", 1..=8)
        .with_feature("tenant-attach", options(json!({ "upload": "PS100012" })))
}

fn with_client_id(id: i64, version: &str) -> Device {
    with(device(id), |d| d.client_version = Some(version.into()))
}

#[test]
fn check_counts_eligible_and_app_reliability_devices() {
    let report = EndpointAnalytics.check(&site(), &options(json!({})));
    assert_eq!(report.status(), CheckStatus::Pass, "{:?}", report.findings);
    assert_eq!(report.data["eligible_devices"], 5);
    assert_eq!(report.data["app_reliability_devices"], 2);
    assert_eq!(report.data["devices_with_telemetry"], 2);
    assert_eq!(
        report.data["excluded"],
        json!({ "not_uploaded": 2, "server_os": 1, "other_os": 0, "client_too_old": 1 })
    );
}

#[test]
fn fewer_than_five_eligible_devices_warn_of_insufficient_data() {
    for (devices, expected) in [
        (4, CheckStatus::Warn),
        (5, CheckStatus::Pass),
        (0, CheckStatus::Warn),
    ] {
        let host =
            MemoryHost::new(MemoryHost::sample_site()).with_devices((1..=devices).map(device));
        let report = EndpointAnalytics.check(&host, &options(json!({})));
        assert_eq!(report.status(), expected, "{devices} devices");
        let warned = report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Warning && f.code == "insufficient-data");
        assert_eq!(warned, expected == CheckStatus::Warn, "{devices} devices");
    }
}

#[test]
fn plan_details_the_enrollment() {
    let plan = EndpointAnalytics.plan(&site(), &options(json!({})), None);
    assert_eq!(
        (plan.action, plan.detail.as_deref()),
        (
            PlanAction::Enable,
            Some("enroll 5 devices in Endpoint analytics")
        )
    );
    assert_eq!(
        EndpointAnalytics
            .plan(&site(), &options(json!({})), Some(&json!({})))
            .action,
        PlanAction::Noop
    );
}

#[test]
fn apply_enrolls_eligible_devices_with_their_telemetry() {
    // As the test kit's cloud counted it before 0.2: the analytics records it holds.
    let in_the_cloud = CloudFeature::new(ID)
        .channel(CHANNEL)
        .count_records("devices_enrolled", CHANNEL);
    let host = site().with_cloud_feature(in_the_cloud);
    let outcome = EndpointAnalytics.apply(&host, &options(json!({})));
    assert!(outcome.ok, "{:?}", outcome.findings);
    assert_eq!(outcome.counts["devices_enrolled"], 5);
    assert_eq!(outcome.counts["sent"], 5);
    let put = &host.cloud_calls()[0];
    assert_eq!(
        (put.method, put.path.as_str()),
        (Method::Put, "features/endpoint-analytics")
    );
    assert_eq!(put.body, Some(json!({ "settings": {} })));

    let sync = &host.sync_calls_to(CHANNEL)[0];
    assert_eq!(sync.mode, SyncMode::Delta);
    let keys: Vec<&str> = sync.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["1", "2", "3", "4", "5"]);
    let cloud = host.channel(CHANNEL);
    assert_eq!(cloud["1"]["client_version"], "5.00.9106.1000");
    assert_eq!(cloud["1"]["analytics"]["core_boot_ms"], 12000);
    assert_eq!(
        cloud["1"]["analytics"]["apps"][0]["name"],
        "Microsoft Teams"
    );
    // Client 5.00.8968 cannot report app reliability: its apps are dropped, boot data kept.
    assert_eq!(cloud["2"]["analytics"]["total_boot_ms"], 30000);
    assert!(
        cloud["2"]["analytics"].get("apps").is_none(),
        "{}",
        cloud["2"]
    );
    // No telemetry yet: enrolled with null analytics.
    assert_eq!(
        cloud["5"],
        json!({ "resource_id": 5, "client_version": "5.00.9106.1000", "analytics": null })
    );
    assert_eq!(
        EndpointAnalytics.status(&host).unwrap().counts["devices_enrolled"],
        5
    );
}

#[test]
fn the_record_shape_is_pinned() {
    let r = analytics_record(&device(42));
    assert_eq!(r.key, "42");
    assert_eq!(
        r.value,
        json!({ "resource_id": 42, "client_version": "5.00.9106.1000", "analytics": null })
    );
}

#[test]
fn sync_is_a_delta() {
    let host = site().with_cloud();
    assert!(EndpointAnalytics.apply(&host, &options(json!({}))).ok);
    let again = EndpointAnalytics
        .sync(&host, &options(json!({})), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!((again.sent, again.total), (0, 5));
}

#[test]
fn apply_offline_fails() {
    let outcome = EndpointAnalytics.apply(&site(), &options(json!({})));
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
    let outcome = EndpointAnalytics.apply(&host, &options(json!({})));
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "http-429");
    assert!(
        host.feature_settings(ID).is_some(),
        "the feature was enabled first"
    );
    let upload = &host.sync_calls()[0];
    assert_eq!((upload.records.len(), upload.stats.sent), (5, 0));
    assert!(host.channel(CHANNEL).is_empty());
}

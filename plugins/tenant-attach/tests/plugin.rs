//! The tenant-attach plugin against the in-memory host.

use cloudattach_plugin_tenant_attach::{CHANNEL, ID, TenantAttach, device_record};
use cloudattach_sdk::{
    Analytics, CheckReport, CheckStatus, ConnectionPoint, DefenderState, Environment, HostError,
    Method, Options, PlanAction, Plugin, Severity, SiteInfo, SiteVersion, SyncMode,
};
use cloudattach_testkit::{CloudFeature, MemoryHost, device, options, with};
use serde_json::json;

/// Five devices: 1–3 with a client, 4 without, 5 with a client and Defender/analytics data.
/// Collection PS100012 = {2, 4, 5}.
fn host_with(site: SiteInfo) -> MemoryHost {
    MemoryHost::new(site)
        .with_devices([
            device(1),
            device(2),
            device(3),
            with(device(4), |d| {
                d.client = false;
                d.client_version = None;
            }),
            with(device(5), |d| {
                d.defender = Some(with(DefenderState::default(), |def| {
                    def.defender_enabled = true
                }));
                d.analytics = Some(with(Analytics::default(), |a| a.core_boot_ms = 9000));
            }),
        ])
        .with_collection("PS100012", "Upload pilot", [2, 4, 5])
}

fn host() -> MemoryHost {
    host_with(MemoryHost::sample_site())
}

fn codes(report: &CheckReport, severity: Severity) -> Vec<&str> {
    report
        .findings
        .iter()
        .filter(|f| f.severity == severity)
        .map(|f| f.code.as_str())
        .collect()
}

fn all() -> Options {
    options(json!({ "upload": "all" }))
}

#[test]
fn manifest_matches_the_spec_table() {
    assert!(
        cloudattach_sdk::registered_plugins().any(|p| p.manifest().id == ID),
        "register_plugin! registers it"
    );
    let m = TenantAttach.manifest();
    assert_eq!(
        (m.id.as_str(), m.name.as_str()),
        (ID, "Tenant attach (device upload)")
    );
    assert!(m.depends_on.is_empty());
    assert_eq!(m.environments, [Environment::Public, Environment::Usgov]);
    assert_eq!(
        m.min_site_version_for(Environment::Public),
        SiteVersion(2002)
    );
    assert_eq!(
        m.min_site_version_for(Environment::Usgov),
        SiteVersion(2107)
    );
    assert!(m.in_default_settings);
    assert_eq!(m.resolve_options(&Options::new()).unwrap()["upload"], "all");
    assert!(
        m.resolve_options(&options(json!({ "upload": "PS100012" })))
            .is_ok()
    );
    assert!(
        m.resolve_options(&options(json!({ "upload": "some" })))
            .is_err()
    );
}

#[test]
fn a_healthy_site_passes_and_counts_client_devices() {
    let report = TenantAttach.check(&host(), &all());
    assert_eq!(report.status(), CheckStatus::Pass, "{:?}", report.findings);
    assert_eq!(report.data["devices_in_scope"], 4);
    assert_eq!(report.data["devices_total"], 5);
    let info = report
        .findings
        .iter()
        .find(|f| f.code == "devices-in-scope")
        .unwrap();
    assert!(
        info.message
            .starts_with("4 client devices in scope (all devices with a client)"),
        "{}",
        info.message
    );
}

#[test]
fn prerequisite_table() {
    let base = MemoryHost::sample_site();
    let cases: Vec<(&str, SiteInfo, Vec<&str>, Vec<&str>)> = vec![
        ("healthy", base.clone(), vec![], vec![]),
        (
            "SCP offline",
            with(base.clone(), |s| {
                s.service_connection_point = ConnectionPoint::Offline
            }),
            vec!["service-connection-point-offline"],
            vec![],
        ),
        (
            "no SCP",
            with(base.clone(), |s| {
                s.service_connection_point = ConnectionPoint::None
            }),
            vec!["service-connection-point-missing"],
            vec![],
        ),
        (
            "no administration service",
            with(base.clone(), |s| s.administration_service = false),
            vec!["administration-service-missing"],
            vec![],
        ),
        (
            "no user discovery",
            with(base.clone(), |s| {
                s.entra_user_discovery = false;
                s.ad_user_discovery = false;
            }),
            vec![],
            vec!["no-user-discovery"],
        ),
        (
            "AD discovery only",
            with(base.clone(), |s| s.entra_user_discovery = false),
            vec![],
            vec![],
        ),
        (
            "Entra discovery only",
            with(base.clone(), |s| s.ad_user_discovery = false),
            vec![],
            vec![],
        ),
        (
            "everything wrong",
            with(base.clone(), |s| {
                s.service_connection_point = ConnectionPoint::Offline;
                s.administration_service = false;
                s.entra_user_discovery = false;
                s.ad_user_discovery = false;
            }),
            vec![
                "service-connection-point-offline",
                "administration-service-missing",
            ],
            vec!["no-user-discovery"],
        ),
    ];
    for (name, site, errors, warnings) in cases {
        let report = TenantAttach.check(&host_with(site), &all());
        assert_eq!(codes(&report, Severity::Error), errors, "{name}");
        assert_eq!(codes(&report, Severity::Warning), warnings, "{name}");
        let expected = if !errors.is_empty() {
            CheckStatus::Fail
        } else if !warnings.is_empty() {
            CheckStatus::Warn
        } else {
            CheckStatus::Pass
        };
        assert_eq!(report.status(), expected, "{name}");
    }
}

#[test]
fn collection_scope_counts_its_client_members() {
    let host = host().with_feature(ID, options(json!({ "upload": "PS100012" })));
    let report = TenantAttach.check(&host, &options(json!({ "upload": "PS100012" })));
    assert_eq!(report.status(), CheckStatus::Pass, "{:?}", report.findings);
    // 4 is a member without a client.
    assert_eq!(report.data["devices_in_scope"], 2);
    assert_eq!(report.data["upload"], "PS100012");
    let info = report
        .findings
        .iter()
        .find(|f| f.code == "devices-in-scope")
        .unwrap();
    assert!(
        info.message.contains("PS100012 \"Upload pilot\""),
        "{}",
        info.message
    );
}

#[test]
fn a_missing_upload_collection_fails() {
    let opts = options(json!({ "upload": "PS1000FF" }));
    let host = host().with_feature(ID, opts.clone());
    let report = TenantAttach.check(&host, &opts);
    assert_eq!(report.status(), CheckStatus::Fail);
    assert_eq!(
        codes(&report, Severity::Error),
        ["upload-collection-missing"]
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.message.contains("PS1000FF"))
    );
}

#[test]
fn plan_details_the_upload() {
    let plan = TenantAttach.plan(&host(), &all(), None);
    assert_eq!(plan.action, PlanAction::Enable);
    assert_eq!(plan.detail.as_deref(), Some("upload 4 devices"));
    assert_eq!(
        TenantAttach
            .plan(&host(), &all(), Some(&json!({ "upload": "all" })))
            .action,
        PlanAction::Noop
    );
    assert_eq!(
        TenantAttach
            .plan(&host(), &all(), Some(&json!({ "upload": "PS100012" })))
            .action,
        PlanAction::Update
    );
}

#[test]
fn apply_enables_and_uploads_client_devices_without_defender_and_analytics() {
    let in_the_cloud = CloudFeature::new(ID)
        .channel(CHANNEL)
        .count_records("devices_uploaded", CHANNEL);
    let host = host().with_cloud_feature(in_the_cloud);
    let outcome = TenantAttach.apply(&host, &all());
    assert!(outcome.ok, "{:?}", outcome.findings);
    assert_eq!(outcome.counts["devices_uploaded"], 4);
    assert_eq!(outcome.counts["sent"], 4);

    let calls = host.cloud_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].method, calls[0].path.as_str()),
        (Method::Put, "features/tenant-attach")
    );
    assert_eq!(
        calls[0].body,
        Some(json!({ "settings": { "upload": "all" } }))
    );

    let sync = &host.sync_calls()[0];
    assert_eq!(
        (sync.channel.as_str(), sync.mode),
        (CHANNEL, SyncMode::Delta)
    );
    let keys: Vec<&str> = sync.records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["1", "2", "3", "5"]);
    let five = &sync.records[3].value;
    assert!(
        five.get("defender").is_none() && five.get("analytics").is_none(),
        "{five}"
    );
    assert_eq!(five["resource_id"], 5);
    assert_eq!(five["client_version"], "5.00.9106.1000");
    assert_eq!(five["join_type"], "hybrid");
    // The record is exactly the stripped inventory record.
    assert_eq!(sync.records[0], device_record(&device(1)));
    assert_eq!(
        host.logs(),
        ["devices: 4 records sent (4 devices in the tenant)"]
    );

    let status = TenantAttach.status(&host).unwrap();
    assert_eq!(status.counts["devices_uploaded"], 4);
    assert_eq!(status.last_sync.as_deref(), Some("2026-01-01T00:00:01Z"));
}

#[test]
fn delta_sends_changes_only_and_full_resends() {
    let host = host().with_cloud();
    assert!(TenantAttach.apply(&host, &all()).ok);
    let delta = TenantAttach
        .sync(&host, &all(), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!((delta.sent, delta.unchanged, delta.total), (0, 4, 4));
    let full = TenantAttach
        .sync(&host, &all(), SyncMode::Full)
        .unwrap()
        .unwrap();
    assert_eq!(full.sent, 4);
}

#[test]
fn a_changed_device_is_sent_again_and_a_removed_one_deleted() {
    let host = host().with_cloud();
    assert!(TenantAttach.apply(&host, &all()).ok);
    host.upsert_device(with(device(2), |d| d.os_build = "10.0.22631".into()));
    host.remove_device(3);
    // A new Defender state is not tenant attach's business: no upload for it.
    host.upsert_device(with(device(1), |d| {
        d.defender = Some(DefenderState::default())
    }));
    let stats = TenantAttach
        .sync(&host, &all(), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            stats.sent,
            stats.upserted,
            stats.deleted,
            stats.unchanged,
            stats.total
        ),
        (2, 1, 1, 2, 3)
    );
    let last = host.sync_calls().pop().unwrap();
    assert_eq!(
        (last.upserted_keys, last.deleted_keys),
        (vec!["2".to_string()], vec!["3".to_string()])
    );
    assert_eq!(host.channel(CHANNEL)["2"]["os_build"], "10.0.22631");
}

#[test]
fn narrowing_the_scope_deletes_devices_that_left_it() {
    let host = host().with_feature(ID, all()).with_cloud();
    assert!(TenantAttach.apply(&host, &all()).ok);
    let narrow = options(json!({ "upload": "PS100012" }));
    // The host's scope comes from the selected feature's options, as in the core.
    host.set_feature(ID, narrow.clone());
    let stats = TenantAttach
        .sync(&host, &narrow, SyncMode::Delta)
        .unwrap()
        .unwrap();
    // 2 and 5 stay unchanged; 1 and 3 are deleted.
    assert_eq!(
        (stats.sent, stats.deleted, stats.unchanged, stats.total),
        (2, 2, 2, 2)
    );
    assert_eq!(host.sync_calls().last().unwrap().deleted_keys, ["1", "3"]);
    let kept: Vec<String> = host.channel(CHANNEL).into_keys().collect();
    assert_eq!(kept, ["2", "5"]);
}

#[test]
fn sync_refuses_a_missing_collection_instead_of_deleting_everything() {
    let opts = options(json!({ "upload": "PS1000FF" }));
    let host = host().with_feature(ID, opts.clone()).with_cloud();
    let err = TenantAttach
        .sync(&host, &opts, SyncMode::Delta)
        .unwrap_err();
    assert_eq!(err.code, "upload-collection-missing");
    assert!(host.sync_calls().is_empty());
    let outcome = TenantAttach.apply(&host, &opts);
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "upload-collection-missing");
}

#[test]
fn offline_apply_fails_with_the_host_error() {
    let outcome = TenantAttach.apply(&host(), &all());
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "offline");
}

#[test]
fn a_failed_upload_fails_apply_after_enabling() {
    let host = host()
        .with_cloud()
        .with_upload_error(HostError::new("http-429", "throttled"));
    let outcome = TenantAttach.apply(&host, &all());
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "http-429");
    assert!(
        host.feature_settings(ID).is_some(),
        "the feature was enabled first"
    );
    let upload = &host.sync_calls()[0];
    assert_eq!((upload.records.len(), upload.stats.sent), (4, 0));
    assert!(host.channel(CHANNEL).is_empty());
}

#[test]
fn the_timeline_answers_newest_first_in_its_window_with_co_management_changes() {
    use cloudattach_plugin_tenant_attach::{TIMELINE_MAX_HOURS, timeline_table};
    use cloudattach_sdk::{ActionResult, Host, TimelineEvent};
    let now = time::macros::datetime!(2026-06-02 12:00 UTC);
    let event = |at: &str, kind: &str, detail| TimelineEvent::new(at, kind, detail);
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_device(with(device(1), |d| {
            d.last_active = Some("2026-06-02T09:30:00Z".into())
        }))
        .with_device(device(2))
        .with_event(
            1,
            event(
                "2026-06-02T08:00:00Z",
                "first-upload",
                json!({"channel": "devices", "records": 2}),
            ),
        )
        .with_event(
            1,
            event(
                "2026-06-02T10:00:00Z",
                "uploaded",
                json!({"channel": "comanagement", "change": "changed", "fields": ["state"], "state": "comanaged"}),
            ),
        )
        .with_event(
            1,
            event(
                "2026-06-02T11:00:00Z",
                "uploaded",
                json!({"channel": "devices", "change": "changed", "fields": ["client_version"]}),
            ),
        )
        .with_event(
            1,
            event(
                "2026-05-20T11:00:00Z",
                "action",
                json!({"action": "resource-explorer"}),
            ),
        );
    let ActionResult::Table { columns, rows, .. } = timeline_table(&host, 1, 24, now).unwrap()
    else {
        panic!("a table")
    };
    assert_eq!(columns, ["time", "kind", "detail"]);
    let kinds: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| (r[0].as_str().unwrap(), r[1].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("2026-06-02T11:00:00Z", "uploaded"),
            ("2026-06-02T10:00:00Z", "co-management"),
            ("2026-06-02T09:30:00Z", "last-active"),
            ("2026-06-02T08:00:00Z", "first-upload"),
        ],
        "newest first, the last 24 hours"
    );
    assert_eq!(rows[1][2]["state"], "comanaged");
    // 30 days back: the older action too.
    let ActionResult::Table { rows, .. } =
        timeline_table(&host, 1, TIMELINE_MAX_HOURS, now).unwrap()
    else {
        panic!("a table")
    };
    assert_eq!(rows.last().unwrap()[1], "action");
    // A device without events has none; a window beyond what the site keeps is refused.
    let ActionResult::Table { rows, .. } = timeline_table(&host, 2, 24, now).unwrap() else {
        panic!("a table")
    };
    assert!(rows.is_empty());
    for hours in [0, TIMELINE_MAX_HOURS + 1] {
        assert_eq!(
            timeline_table(&host, 1, hours, now).unwrap_err().code,
            "bad-parameters"
        );
    }
    assert_eq!(
        timeline_table(&host, 99, 24, now).unwrap_err().code,
        "device-not-found"
    );
    // A host that keeps no timeline says so.
    let bare = MemoryHost::new(MemoryHost::sample_site()).with_device(device(1));
    assert_eq!(bare.device_events(1, None).unwrap_err().code, "no-timeline");
    assert_eq!(
        timeline_table(&bare, 1, 24, now).unwrap_err().code,
        "no-timeline"
    );
    assert!(
        TenantAttach
            .manifest()
            .actions
            .iter()
            .any(|a| a.id == "timeline"),
        "declared"
    );
}

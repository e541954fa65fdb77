//! The plugin against the test kit's in-memory host (`cloudattach-testkit`): no cloud, no site on
//! disk, a plain `cargo test`.

use cloudattach_example_collection_summary::{
    CHANNEL, CollectionSummary, ID, OTHER_OS, REPORT_ACTION, SummaryOptions, summarize,
};
use cloudattach_sdk::{
    ActionCall, ActionResult, ActionSubject, ActionTarget, CheckStatus, ConnectionPoint,
    Environment, HostError, Manifest, Method, PlanAction, Plugin, SiteInfo, SiteVersion, SyncMode,
    ValidateContext, actions,
};
use cloudattach_testkit::{MemoryHost, device, options, resolved_options, with};
use serde_json::json;

/// Devices 1–4: Windows 10 (1, 2), Windows 11 (3), a server without a client (4).
/// PS100010 = {1, 3}; PS100020 = {} (empty).
fn host_with(site: SiteInfo) -> MemoryHost {
    MemoryHost::new(site)
        .with_devices([
            device(1),
            device(2),
            with(device(3), |d| d.os_build = "10.0.22631".into()),
            with(device(4), |d| {
                d.os = "Microsoft Windows NT Server 10.0".into();
                d.client = false;
                d.client_version = None;
            }),
        ])
        .with_collection("PS100010", "Pilot", [1, 3])
        .with_collection("PS100020", "Empty", [])
        .with_feature("tenant-attach", options(json!({ "upload": "all" })))
}

fn host() -> MemoryHost {
    host_with(MemoryHost::sample_site())
}

/// The options of an empty `[features.collection-summary]` table, as the core resolves them.
fn defaults() -> cloudattach_sdk::Options {
    resolved_options(&CollectionSummary.manifest(), json!({}))
}

#[test]
fn the_manifest_declares_what_the_core_enforces() {
    let m: Manifest = CollectionSummary.manifest();
    assert_eq!(m.id, ID);
    assert_eq!(m.depends_on, ["tenant-attach"]);
    assert_eq!(m.environments, [Environment::Public, Environment::Usgov]);
    assert_eq!(m.min_site_version, SiteVersion(2111));
    assert_eq!(
        defaults(),
        options(json!({ "include_empty": false, "max_os_entries": 5 }))
    );
    let unknown = m
        .resolve_options(&options(json!({ "colour": "blue" })))
        .unwrap_err();
    assert!(
        unknown[0].message.contains("unknown key `colour`"),
        "{unknown:?}"
    );
}

#[test]
fn validate_is_pure_and_checks_the_range() {
    let ctx = ValidateContext::new(Environment::Public, SiteVersion(2303), false);
    for (n, ok) in [(0, false), (1, true), (5, true), (50, true), (51, false)] {
        let findings = CollectionSummary.validate(&options(json!({ "max_os_entries": n })), &ctx);
        assert_eq!(
            findings.is_empty(),
            ok,
            "max_os_entries = {n}: {findings:?}"
        );
    }
}

#[test]
fn summaries_count_members_clients_uploads_and_os_mix() {
    let all = summarize(
        &host(),
        &SummaryOptions {
            include_empty: false,
            max_os_entries: 5,
        },
    )
    .unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.collection_id.as_str()).collect();
    assert_eq!(
        ids,
        ["PS100010", "SMS00001"],
        "the empty collection is left out"
    );
    let everything = &all[1];
    assert_eq!(
        (everything.devices, everything.clients, everything.uploaded),
        (4, 3, 3)
    );
    assert_eq!(everything.os["Windows 10"], 2);
    assert_eq!(everything.os["Windows 11"], 1);
    assert_eq!(everything.os["Windows Server"], 1);
    let pilot = &all[0];
    assert_eq!((pilot.devices, pilot.clients), (2, 2));

    let with_empty = summarize(
        &host(),
        &SummaryOptions {
            include_empty: true,
            max_os_entries: 5,
        },
    )
    .unwrap();
    assert_eq!(with_empty.len(), 3);

    let capped = summarize(
        &host(),
        &SummaryOptions {
            include_empty: false,
            max_os_entries: 2,
        },
    )
    .unwrap();
    let os = &capped[1].os;
    assert_eq!(os.len(), 2, "{os:?}");
    assert_eq!(os["Windows 10"], 2);
    assert_eq!(os[OTHER_OS], 2);
}

#[test]
fn check_passes_on_a_healthy_site_and_fails_without_the_connection_point() {
    let report = CollectionSummary.check(&host(), &defaults());
    assert_eq!(report.status(), CheckStatus::Pass, "{report:?}");
    assert_eq!(report.data["collections"], 2);

    let offline = with(MemoryHost::sample_site(), |s| {
        s.service_connection_point = ConnectionPoint::Offline
    });
    let report = CollectionSummary.check(&host_with(offline), &defaults());
    assert_eq!(report.status(), CheckStatus::Fail);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.code == "service-connection-point")
    );
}

#[test]
fn plan_enables_then_does_nothing_until_the_settings_change() {
    let host = host();
    let first = CollectionSummary.plan(&host, &defaults(), None);
    assert_eq!(first.action, PlanAction::Enable);
    assert_eq!(
        first.detail.as_deref(),
        Some("upload summaries of 2 collections to ext/collection-summary")
    );
    let applied = CollectionSummary.settings(&defaults());
    assert_eq!(
        CollectionSummary
            .plan(&host, &defaults(), Some(&applied))
            .action,
        PlanAction::Noop
    );
    let changed = options(json!({ "include_empty": true, "max_os_entries": 5 }));
    assert_eq!(
        CollectionSummary
            .plan(&host, &changed, Some(&applied))
            .action,
        PlanAction::Update
    );
    assert!(
        host.cloud_calls().is_empty() && host.sync_calls().is_empty(),
        "plan has no side effects"
    );
}

#[test]
fn apply_enables_the_feature_and_uploads_one_record_per_collection() {
    let host = host().with_cloud();
    let outcome = CollectionSummary.apply(&host, &defaults());
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.counts["collections_uploaded"], 2);
    assert_eq!(
        host.feature_settings(ID),
        Some(json!({ "include_empty": false, "max_os_entries": 5 }))
    );
    let records = host.channel(CHANNEL);
    assert_eq!(records["SMS00001"]["devices"], 4);
    assert_eq!(
        records["PS100010"]["os"],
        json!({ "Windows 10": 1, "Windows 11": 1 })
    );

    // Nothing changed: a delta sync sends nothing.
    let again = CollectionSummary
        .sync(&host, &defaults(), SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!(again.sent, 0);
}

/// BitLocker is not in cloudattach's model: an export's `bitlocker` block is the device's
/// extension data, which the plugin counts and uploads.
#[test]
fn bitlocker_recovery_keys_are_counted_from_the_extension_data() {
    let bitlocker = |escrowed: bool| {
        move |d: &mut cloudattach_sdk::Device| {
            d.extension.insert(
                "bitlocker".into(),
                json!({ "protection_status": "on", "recovery_key_escrowed": escrowed }),
            );
        }
    };
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_devices([
            with(device(1), bitlocker(true)),
            with(device(2), bitlocker(false)),
            with(device(3), bitlocker(true)),
            device(4),
        ])
        .with_collection("PS100010", "Pilot", [1, 2])
        .with_feature("tenant-attach", options(json!({ "upload": "all" })))
        .with_cloud();
    let outcome = CollectionSummary.apply(&host, &defaults());
    assert!(outcome.ok, "{outcome:?}");
    let records = host.channel(CHANNEL);
    assert_eq!(
        records["SMS00001"]["bitlocker"],
        json!({ "reported": 3, "recovery_key_escrowed": 2 })
    );
    assert_eq!(
        records["PS100010"]["bitlocker"],
        json!({ "reported": 2, "recovery_key_escrowed": 1 })
    );
}

#[test]
fn apply_reports_a_failure_with_its_reason() {
    let host = host()
        .with_cloud()
        .with_cloud_error(HostError::new("http-503", "the cloud is down"));
    let outcome = CollectionSummary.apply(&host, &defaults());
    assert!(!outcome.ok);
    assert!(
        outcome
            .findings
            .iter()
            .any(|f| f.message.contains("the cloud is down")),
        "{outcome:?}"
    );
}

#[test]
fn disable_turns_the_feature_off() {
    let host = host().with_cloud();
    assert!(CollectionSummary.apply(&host, &defaults()).ok);
    assert!(CollectionSummary.disable(&host).ok);
    assert_eq!(host.feature_settings(ID), None);
}

#[test]
fn status_reports_what_the_cloud_holds_not_what_was_sent() {
    let host = host().with_cloud();
    let before = CollectionSummary.status(&host).unwrap();
    assert!(!before.enabled, "not enabled yet");
    assert_eq!(before.counts["collections_reported"], 0);

    assert!(CollectionSummary.apply(&host, &defaults()).ok);
    let status = CollectionSummary.status(&host).unwrap();
    assert!(status.enabled);
    assert_eq!(status.counts["collections_reported"], 2);
    // The cloud's own count of an extension feature's records, and its settings.
    assert_eq!(status.counts["records"], 2);
    assert_eq!(
        status.extra["settings"],
        json!({ "include_empty": false, "max_os_entries": 5 })
    );
    assert_eq!(status.last_sync.as_deref(), Some("2026-01-01T00:00:01Z"));
    // The calls after apply's (two reads before it, then its PUT).
    let reads: Vec<(Method, String)> = host
        .cloud_calls()
        .into_iter()
        .skip(3)
        .map(|c| (c.method, c.path))
        .collect();
    assert_eq!(
        reads,
        [
            (Method::Get, "status".to_string()),
            (Method::Get, format!("ext/{ID}/records")),
        ]
    );

    // The empty collection joins: the count follows what the cloud holds.
    let with_empty = resolved_options(
        &CollectionSummary.manifest(),
        json!({ "include_empty": true }),
    );
    CollectionSummary
        .sync(&host, &with_empty, SyncMode::Delta)
        .unwrap();
    let status = CollectionSummary.status(&host).unwrap();
    assert_eq!(status.counts["collections_reported"], 3);
    assert_eq!(status.last_sync.as_deref(), Some("2026-01-01T00:00:02Z"));
}

#[test]
fn status_fails_with_the_cloud_and_offline() {
    let host = host().with_cloud_error(HostError::new("http-503", "the cloud is down"));
    assert_eq!(
        CollectionSummary.status(&host).unwrap_err().code,
        "http-503"
    );
    assert_eq!(
        CollectionSummary.status(&self::host()).unwrap_err().code,
        "offline",
        "status needs the cloud"
    );
}

/// The declared action: a collection's report from the site now, one row per OS family.
#[test]
fn the_collection_report_action_answers_from_the_site_with_one_row_per_os_family() {
    let m = CollectionSummary.manifest();
    let decl = m
        .actions
        .iter()
        .find(|a| a.id == REPORT_ACTION)
        .expect("declared");
    assert_eq!(decl.target, ActionTarget::Collection);
    assert_eq!(decl.site_permissions, [actions::SITE_READ]);
    assert_eq!(
        decl.intune_permissions,
        [actions::INTUNE_VIEW_CLIENT_DETAILS]
    );
    assert_eq!(decl.validate(), Ok(()));

    let call = |collection: &str, params: serde_json::Value| {
        ActionCall::new(
            REPORT_ACTION,
            ActionSubject::Collection(collection.into()),
            params.as_object().unwrap().clone(),
            "helpdesk@contoso.example",
        )
    };
    let rows = |r: ActionResult| match r {
        ActionResult::Table { columns, rows, .. } => {
            assert_eq!(columns, ["os", "devices", "clients", "uploaded"]);
            rows
        }
        other => panic!("a table, not {other:?}"),
    };
    let host = host();
    let all = CollectionSummary
        .serve_action(&host, &defaults(), &call("SMS00001", json!({})))
        .unwrap();
    assert_eq!(
        rows(all),
        [
            json!(["Windows 10", 2, 2, 2]),
            json!(["Windows 11", 1, 1, 1]),
            json!(["Windows Server", 1, 0, 0]),
        ]
        .map(|r| r.as_array().unwrap().clone())
    );
    let capped = CollectionSummary
        .serve_action(&host, &defaults(), &call("SMS00001", json!({"top": 2})))
        .unwrap();
    assert_eq!(
        rows(capped),
        [json!(["Windows 10", 2, 2, 2]), json!([OTHER_OS, 2, 1, 1])]
            .map(|r| r.as_array().unwrap().clone())
    );
    let pilot = CollectionSummary
        .serve_action(&host, &defaults(), &call("PS100010", json!({})))
        .unwrap();
    assert_eq!(rows(pilot).len(), 2);
    let empty = CollectionSummary
        .serve_action(&host, &defaults(), &call("PS100020", json!({})))
        .unwrap();
    assert!(rows(empty).is_empty());

    for (collection, params, code) in [
        ("PS199999", json!({}), "collection-not-found"),
        ("SMS00001", json!({"top": 0}), "bad-top"),
        ("SMS00001", json!({"top": 51}), "bad-top"),
    ] {
        let e = CollectionSummary
            .serve_action(&host, &defaults(), &call(collection, params))
            .unwrap_err();
        assert_eq!(e.code, code, "{collection}: {e:?}");
    }
    let on_a_device = ActionCall::new(
        REPORT_ACTION,
        ActionSubject::Device(1),
        Default::default(),
        "helpdesk@contoso.example",
    );
    assert_eq!(
        CollectionSummary
            .serve_action(&host, &defaults(), &on_a_device)
            .unwrap_err()
            .code,
        "action-not-served"
    );
    assert!(host.cloud_calls().is_empty(), "read from the site only");
}

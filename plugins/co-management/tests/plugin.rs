//! The co-management plugin against the in-memory host: manifest, validate, check, plan, apply
//! and sync.

use cloudattach_plugin_co_management::{CHANNEL, CoManagement, ID};
use cloudattach_sdk::{
    CheckStatus, Environment, HostError, JoinType, Method, Options, PlanAction, Plugin, Severity,
    SiteVersion, SyncMode, ValidateContext,
};
use cloudattach_testkit::{CloudFeature, MemoryHost, device, options, with};
use serde_json::json;

/// co-management as the cloud's `status` reports it: the records of its channel by state.
fn in_the_cloud() -> CloudFeature {
    CloudFeature::new(ID)
        .channel(CHANNEL)
        .count_where(
            "devices_scheduled",
            CHANNEL,
            "state",
            "scheduledForEnrollment",
        )
        .count_where("devices_enrolled", CHANNEL, "state", "comanaged")
}

/// Ten devices: 1–4 eligible, 5 domain-only, 6 old Windows 10, 7 server, 8 co-managed,
/// 9 no client, 10 eligible. Pilot collection PS100020 = {2, 3, 5, 8, 9}.
fn site() -> MemoryHost {
    let devices = vec![
        device(1),
        device(2),
        with(device(3), |d| d.join_type = JoinType::Entra),
        device(4),
        with(device(5), |d| d.join_type = JoinType::Domain),
        with(device(6), |d| d.os_build = "10.0.15063".into()),
        with(device(7), |d| {
            d.os = "Microsoft Windows NT Server 10.0".into()
        }),
        with(device(8), |d| d.mdm_enrolled = true),
        with(device(9), |d| {
            d.client = false;
            d.client_version = None;
        }),
        device(10),
    ];
    MemoryHost::new(MemoryHost::sample_site())
        .with_devices(devices)
        .with_collection("PS100020", "Co-management pilot", [2, 3, 5, 8, 9])
}

fn ctx(environment: Environment) -> ValidateContext {
    ValidateContext::new(environment, SiteVersion(2303), false)
}

fn error_codes(findings: &[cloudattach_sdk::Finding]) -> Vec<&str> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| f.code.as_str())
        .collect()
}

#[test]
fn manifest_matches_the_spec_table() {
    assert!(
        cloudattach_sdk::registered_plugins().any(|p| p.manifest().id == ID),
        "register_plugin! registers it"
    );
    let m = CoManagement.manifest();
    assert_eq!(m.id, ID);
    assert!(m.depends_on.is_empty());
    assert_eq!(m.environments, Environment::ALL.to_vec());
    assert_eq!(
        m.min_site_version_for(Environment::Public),
        SiteVersion(1710)
    );
    assert_eq!(
        m.min_site_version_for(Environment::Usgov),
        SiteVersion(1710)
    );
    assert_eq!(
        m.min_site_version_for(Environment::China),
        SiteVersion(2006)
    );
    assert!(m.in_default_settings);
    let resolved = m.resolve_options(&Options::new()).unwrap();
    assert_eq!(resolved["enrollment"], "all");
    assert!(!resolved.contains_key("pilot_collection"));
    assert!(
        m.resolve_options(&options(json!({ "enrollment": "some" })))
            .is_err()
    );
}

#[test]
fn validate_table() {
    let cases: Vec<(serde_json::Value, Environment, Vec<&str>)> = vec![
        (json!({ "enrollment": "all" }), Environment::Public, vec![]),
        (
            json!({ "enrollment": "pilot", "pilot_collection": "PS100020" }),
            Environment::Public,
            vec![],
        ),
        (
            json!({ "enrollment": "pilot" }),
            Environment::Public,
            vec!["pilot-collection-required"],
        ),
        (
            json!({ "enrollment": "pilot", "pilot_collection": "pilot" }),
            Environment::Usgov,
            vec!["invalid-pilot-collection"],
        ),
        (
            json!({ "enrollment": "all", "pilot_collection": "PS1000ZZ" }),
            Environment::Public,
            vec!["invalid-pilot-collection"],
        ),
        (json!({ "enrollment": "none" }), Environment::Public, vec![]),
        (json!({ "enrollment": "all" }), Environment::China, vec![]),
        (json!({}), Environment::China, vec![]),
        (
            json!({ "enrollment": "none" }),
            Environment::China,
            vec!["china-enrollment-all-only"],
        ),
        (
            json!({ "enrollment": "pilot" }),
            Environment::China,
            vec!["pilot-collection-required", "china-enrollment-all-only"],
        ),
    ];
    for (opts, env, expected) in cases {
        let findings = CoManagement.validate(&options(opts.clone()), &ctx(env));
        assert_eq!(error_codes(&findings), expected, "{opts} in {env}");
    }
}

#[test]
fn validate_messages_name_the_key_and_the_china_rule() {
    let findings = CoManagement.validate(
        &options(json!({ "enrollment": "pilot" })),
        &ctx(Environment::Public),
    );
    assert!(
        findings[0].message.contains("pilot_collection"),
        "{}",
        findings[0].message
    );
    let findings = CoManagement.validate(
        &options(json!({ "enrollment": "none" })),
        &ctx(Environment::China),
    );
    assert!(
        findings[0].message.contains(
            "automatic enrollment of all eligible devices is the only option in Azure China Cloud"
        ),
        "{}",
        findings[0].message
    );
}

#[test]
fn check_reports_every_class_and_what_each_setting_schedules() {
    let opts = options(json!({ "enrollment": "pilot", "pilot_collection": "PS100020" }));
    let report = CoManagement.check(&site(), &opts);
    assert_eq!(report.status(), CheckStatus::Pass, "{:?}", report.findings);
    assert_eq!(
        report.data["eligibility"],
        json!({ "comanaged": 1, "eligible": 5, "eligibleButNotAzureAdJoined": 1, "needsOsUpdate": 1, "ineligible": 2 })
    );
    // Pilot: eligible members of PS100020 are 2 and 3 (5 is domain-only, 8 co-managed, 9 no client).
    assert_eq!(
        report.data["would_schedule"],
        json!({ "all": 5, "pilot": 2, "none": 0 })
    );
    let scheduled = report
        .findings
        .iter()
        .find(|f| f.code == "would-schedule")
        .unwrap();
    assert!(
        scheduled.message.contains("pilot") && scheduled.message.contains(" 2 "),
        "{}",
        scheduled.message
    );
}

#[test]
fn eligibility_has_every_key_even_when_empty() {
    let host = MemoryHost::new(MemoryHost::sample_site());
    let report = CoManagement.check(&host, &options(json!({ "enrollment": "all" })));
    let eligibility = report.data["eligibility"].as_object().unwrap();
    let mut keys: Vec<&str> = eligibility.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "comanaged",
            "eligible",
            "eligibleButNotAzureAdJoined",
            "ineligible",
            "needsOsUpdate"
        ]
    );
    assert!(eligibility.values().all(|v| v == 0));
    assert_eq!(
        report.data["would_schedule"],
        json!({ "all": 0, "pilot": null, "none": 0 })
    );
}

#[test]
fn a_missing_pilot_collection_fails_the_check() {
    let opts = options(json!({ "enrollment": "pilot", "pilot_collection": "PS1000AA" }));
    let report = CoManagement.check(&site(), &opts);
    assert_eq!(report.status(), CheckStatus::Fail);
    assert_eq!(error_codes(&report.findings), ["pilot-collection-missing"]);
    assert!(report.findings[0].message.contains("PS1000AA"));
    assert_eq!(
        report.data["would_schedule"]["pilot"],
        serde_json::Value::Null
    );
    // Unused by enrollment "all": only a warning.
    let opts = options(json!({ "enrollment": "all", "pilot_collection": "PS1000AA" }));
    assert_eq!(
        CoManagement.check(&site(), &opts).status(),
        CheckStatus::Warn
    );
}

#[test]
fn settings_and_plan() {
    let pilot = options(json!({ "enrollment": "pilot", "pilot_collection": "PS100020" }));
    assert_eq!(
        CoManagement.settings(&pilot),
        json!({ "enrollment": "pilot", "pilot_collection": "PS100020" })
    );
    let all = options(json!({ "enrollment": "all", "pilot_collection": "PS100020" }));
    assert_eq!(CoManagement.settings(&all), json!({ "enrollment": "all" }));

    let host = site();
    let plan = CoManagement.plan(&host, &pilot, None);
    assert_eq!(plan.action, PlanAction::Enable);
    assert_eq!(
        plan.detail.as_deref(),
        Some("schedule 2 eligible devices for enrollment (pilot)")
    );
    let applied = json!({ "enrollment": "all" });
    assert_eq!(
        CoManagement.plan(&host, &all, Some(&applied)).action,
        PlanAction::Noop
    );
    assert_eq!(
        CoManagement.plan(&host, &pilot, Some(&applied)).action,
        PlanAction::Update
    );
}

#[test]
fn apply_enables_the_feature_and_uploads_scheduled_and_comanaged_devices() {
    let host = site().with_cloud_feature(in_the_cloud());
    let outcome = CoManagement.apply(&host, &options(json!({ "enrollment": "all" })));
    assert!(outcome.ok, "{:?}", outcome.findings);
    assert_eq!(outcome.counts["devices_scheduled"], 5);
    assert_eq!(outcome.counts["devices_enrolled"], 1);
    assert_eq!(outcome.counts["sent"], 6);

    let calls = host.cloud_calls();
    assert_eq!(calls[0].method, Method::Put);
    assert_eq!(calls[0].path, "features/co-management");
    assert_eq!(
        calls[0].body,
        Some(json!({ "settings": { "enrollment": "all" } }))
    );

    let syncs = host.sync_calls();
    assert_eq!(syncs.len(), 1);
    assert_eq!(syncs[0].channel, CHANNEL);
    assert_eq!(syncs[0].mode, SyncMode::Delta);
    let cloud = host.channel(CHANNEL);
    let keys: Vec<&str> = cloud.keys().map(String::as_str).collect();
    assert_eq!(keys, ["1", "10", "2", "3", "4", "8"]);
    assert_eq!(
        cloud["3"],
        json!({ "resource_id": 3, "name": "PC-3", "state": "scheduledForEnrollment" })
    );
    assert_eq!(
        cloud["8"],
        json!({ "resource_id": 8, "name": "PC-8", "state": "comanaged" })
    );

    let status = CoManagement.status(&host).unwrap();
    assert!(status.enabled);
    assert_eq!(status.counts["devices_scheduled"], 5);
    assert_eq!(status.counts["devices_enrolled"], 1);
}

#[test]
fn switching_to_pilot_withdraws_devices_outside_the_pilot() {
    let host = site().with_cloud();
    assert!(
        CoManagement
            .apply(&host, &options(json!({ "enrollment": "all" })))
            .ok
    );
    let pilot = options(json!({ "enrollment": "pilot", "pilot_collection": "PS100020" }));
    let stats = CoManagement
        .sync(&host, &pilot, SyncMode::Delta)
        .unwrap()
        .unwrap();
    // 1, 4 and 10 leave; 2, 3 and 8 are unchanged.
    assert_eq!(
        (stats.sent, stats.deleted, stats.unchanged, stats.total),
        (3, 3, 3, 3)
    );
    let last = host.sync_calls().pop().unwrap();
    assert_eq!(last.deleted_keys, ["1", "10", "4"]);
    let none = options(json!({ "enrollment": "none" }));
    let stats = CoManagement
        .sync(&host, &none, SyncMode::Delta)
        .unwrap()
        .unwrap();
    assert_eq!(stats.total, 1, "only the co-managed device stays");
}

#[test]
fn apply_refuses_a_missing_pilot_collection_before_uploading() {
    let host = site().with_cloud();
    let outcome = CoManagement.apply(
        &host,
        &options(json!({ "enrollment": "pilot", "pilot_collection": "PS1000AA" })),
    );
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "pilot-collection-missing");
    assert!(host.sync_calls().is_empty());
}

#[test]
fn cloud_errors_fail_apply_with_their_code() {
    // An injected error is enough on its own: it turns the in-memory cloud on (before 0.2 the
    // host stayed offline and the step failed with `offline`).
    let host = site().with_cloud_error(HostError::new("http-503", "the cloud is unavailable"));
    let outcome = CoManagement.apply(&host, &options(json!({ "enrollment": "all" })));
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "http-503");
    let host = site()
        .with_cloud()
        .with_cloud_error(HostError::new("http-503", "the cloud is unavailable"));
    let outcome = CoManagement.apply(&host, &options(json!({ "enrollment": "all" })));
    assert_eq!(
        (outcome.ok, outcome.findings[0].code.as_str()),
        (false, "http-503")
    );
}

#[test]
fn disable_deletes_the_feature() {
    let host = site().with_cloud();
    assert!(CoManagement.apply(&host, &options(json!({}))).ok);
    assert!(CoManagement.disable(&host).ok);
    let last = host.cloud_calls().pop().unwrap();
    assert_eq!(
        (last.method, last.path.as_str()),
        (Method::Delete, "features/co-management")
    );
    assert!(host.feature_settings(ID).is_none());
}

#[test]
fn a_failed_upload_fails_apply_after_enabling() {
    let host = site()
        .with_cloud()
        .with_upload_error(HostError::new("http-429", "throttled"));
    let outcome = CoManagement.apply(&host, &options(json!({ "enrollment": "all" })));
    assert!(!outcome.ok);
    assert_eq!(outcome.findings[0].code, "http-429");
    assert!(
        host.feature_settings(ID).is_some(),
        "the feature was enabled first"
    );
    let upload = &host.sync_calls()[0];
    assert_eq!((upload.records.len(), upload.stats.sent), (6, 0));
    assert!(host.channel(CHANNEL).is_empty());
}

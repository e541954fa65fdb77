//! The rbac-authority plugin: the authority rule, the check, and apply reading it back.

use cloudattach_plugin_rbac_authority::{
    AUTHORITY_BOTH, AUTHORITY_INTUNE, ID, RbacAuthority, effective_authority,
};
use cloudattach_sdk::{
    CheckStatus, Environment, HostError, Method, Options, PlanAction, Plugin, Severity,
    SiteVersion, SyncMode,
};
use cloudattach_testkit::{CloudFeature, MemoryHost, options};
use serde_json::json;

/// rbac-authority as the cloud reports it: the cloud's own rule for `effective_authority`
/// (Intune alone when the checkbox is cleared and the tenant's "Use Intune RBAC" is on), with the
/// tenant's toggle set to `intune_rbac`.
fn in_the_cloud(intune_rbac: bool) -> CloudFeature {
    CloudFeature::new(ID).extra("effective_authority", move |settings| {
        let cleared = settings.get("enforce_configmgr_rbac") == Some(&json!(false));
        json!(if cleared && intune_rbac {
            "intune"
        } else {
            "configmgr+intune"
        })
    })
}

fn enforce(on: bool) -> Options {
    options(json!({ "enforce_configmgr_rbac": on }))
}

fn warnings(findings: &[cloudattach_sdk::Finding]) -> Vec<&str> {
    findings
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.code.as_str())
        .collect()
}

#[test]
fn manifest_matches_the_spec_table() {
    assert!(
        cloudattach_sdk::registered_plugins().any(|p| p.manifest().id == ID),
        "register_plugin! registers it"
    );
    let m = RbacAuthority.manifest();
    assert_eq!(m.id, ID);
    assert_eq!(m.depends_on, ["tenant-attach"]);
    assert_eq!(m.environments, [Environment::Public, Environment::Usgov]);
    assert_eq!(
        m.min_site_version_for(Environment::Public),
        SiteVersion(2207)
    );
    assert_eq!(
        m.min_site_version_for(Environment::Usgov),
        SiteVersion(2207)
    );
    assert!(m.in_default_settings);
    assert_eq!(
        m.resolve_options(&Options::new()).unwrap()["enforce_configmgr_rbac"],
        true
    );
    assert!(
        m.resolve_options(&options(json!({ "enforce_configmgr_rbac": "no" })))
            .is_err()
    );
}

#[test]
fn authority_truth_table() {
    assert_eq!(effective_authority(true, false), AUTHORITY_BOTH);
    assert_eq!(effective_authority(true, true), AUTHORITY_BOTH);
    assert_eq!(effective_authority(false, false), AUTHORITY_BOTH);
    assert_eq!(effective_authority(false, true), AUTHORITY_INTUNE);
}

#[test]
fn check_explains_the_rule_and_warns_when_the_checkbox_is_cleared() {
    let host = MemoryHost::new(MemoryHost::sample_site());
    let report = RbacAuthority.check(&host, &enforce(true));
    assert_eq!(report.status(), CheckStatus::Pass);
    assert!(report.findings.iter().any(|f| f.code == "authority-rule"));
    let report = RbacAuthority.check(&host, &enforce(false));
    assert_eq!(report.status(), CheckStatus::Warn);
    assert_eq!(warnings(&report.findings), ["intune-rbac-toggle-required"]);
    assert!(report.findings[1].message.contains("Use Intune RBAC"));
    // Absent means checked.
    assert_eq!(
        RbacAuthority.check(&host, &Options::new()).status(),
        CheckStatus::Pass
    );
}

#[test]
fn settings_and_plan() {
    assert_eq!(
        RbacAuthority.settings(&Options::new()),
        json!({ "enforce_configmgr_rbac": true })
    );
    assert_eq!(
        RbacAuthority.settings(&enforce(false)),
        json!({ "enforce_configmgr_rbac": false })
    );
    let host = MemoryHost::new(MemoryHost::sample_site());
    let applied = json!({ "enforce_configmgr_rbac": true });
    assert_eq!(
        RbacAuthority
            .plan(&host, &enforce(true), Some(&applied))
            .action,
        PlanAction::Noop
    );
    assert_eq!(
        RbacAuthority
            .plan(&host, &enforce(false), Some(&applied))
            .action,
        PlanAction::Update
    );
    assert_eq!(
        RbacAuthority.plan(&host, &enforce(false), None).action,
        PlanAction::Enable
    );
}

#[test]
fn apply_table_reads_the_effective_authority_back() {
    // (checkbox, tenant toggle, expected authority, expected warnings)
    let cases = [
        (true, false, AUTHORITY_BOTH, vec![]),
        (true, true, AUTHORITY_BOTH, vec![]),
        (false, false, AUTHORITY_BOTH, vec!["intune-rbac-toggle-off"]),
        (false, true, AUTHORITY_INTUNE, vec![]),
    ];
    for (checkbox, toggle, authority, expected_warnings) in cases {
        let host =
            MemoryHost::new(MemoryHost::sample_site()).with_cloud_feature(in_the_cloud(toggle));
        let outcome = RbacAuthority.apply(&host, &enforce(checkbox));
        assert!(outcome.ok, "{checkbox}/{toggle}: {:?}", outcome.findings);
        assert_eq!(
            warnings(&outcome.findings),
            expected_warnings,
            "{checkbox}/{toggle}"
        );
        let info = outcome
            .findings
            .iter()
            .find(|f| f.code == "effective-authority")
            .unwrap();
        assert_eq!(info.message, format!("effective authority: {authority}"));

        let calls = host.cloud_calls();
        assert_eq!(
            (calls[0].method, calls[0].path.as_str()),
            (Method::Put, "features/rbac-authority")
        );
        assert_eq!(
            calls[0].body,
            Some(json!({ "settings": { "enforce_configmgr_rbac": checkbox } }))
        );
        assert_eq!(
            (calls[1].method, calls[1].path.as_str()),
            (Method::Get, "status")
        );

        let status = RbacAuthority.status(&host).unwrap();
        assert!(status.enabled);
        assert_eq!(status.extra["effective_authority"], authority);
    }
}

#[test]
fn an_unreadable_status_is_only_a_warning() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_response(
        Method::Get,
        "status",
        json!({ "plugins": [] }),
    );
    let outcome = RbacAuthority.apply(&host, &enforce(false));
    assert!(outcome.ok);
    assert_eq!(warnings(&outcome.findings), ["effective-authority-unknown"]);
}

#[test]
fn a_failed_put_fails_apply() {
    let host = MemoryHost::new(MemoryHost::sample_site())
        .with_cloud()
        .with_cloud_error(HostError::new("http-403", "forbidden"));
    let outcome = RbacAuthority.apply(&host, &enforce(true));
    assert_eq!(
        (outcome.ok, outcome.findings[0].code.as_str()),
        (false, "http-403")
    );
}

#[test]
fn it_uploads_nothing() {
    let host = MemoryHost::new(MemoryHost::sample_site()).with_cloud();
    assert_eq!(
        RbacAuthority.sync(&host, &enforce(true), SyncMode::Full),
        Ok(None)
    );
    assert!(host.sync_calls().is_empty());
}

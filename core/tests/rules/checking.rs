//! `check` as tables: for each case, the `small-site` fixture (its `site.toml` keys
//! overridden), `attach.toml` text and the plugin ids asked for, and what `ops::check::run`
//! reports — per plugin in execution order its status, findings (`severity code: message`) and
//! data, then whether the check failed (exit 1) and the warnings reported; or one line per
//! problem (`error[kind] feature: text`, exit 2). Every case also asserts that check changed no
//! file.
//!
//! The fixture's counts are worked out by hand in `cli/tests/fixtures/small-site/README.md`:
//! 16 devices, 14 with a client; co-management eligibility comanaged 1, eligible 5,
//! eligibleButNotAzureAdJoined 1, needsOsUpdate 2, ineligible 7; `PS100102` has 7 members, 6
//! with a client, 4 of them eligible.

use super::common;

use cloudattach_core::Site;
use cloudattach_core::ops::{self, OpError, Workspace};
use common::{
    Recorder, check_table, ident, parse_config, registry, render_problems, small_site, snapshot,
};
use std::sync::Arc;

struct Case {
    name: &'static str,
    /// `site.toml` lines that replace the fixture's (`version = "2107"`).
    site: &'static str,
    /// `attach.toml`.
    config: &'static str,
    /// The plugins to check (all when empty).
    ids: &'static [&'static str],
    expected: &'static str,
}

fn render(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    small_site(dir.path(), case.site);
    let config = parse_config(&common::trim_indent(case.config), dir.path()).expect("parses");
    let site = Site::open(&config.site_dir).expect("the site opens");
    let ws = Workspace::new(config, registry(), Arc::new(site)).expect("a workspace");
    let recorder = Recorder::default();
    let ids: Vec<String> = case.ids.iter().map(|s| s.to_string()).collect();
    let before = snapshot(dir.path());
    let result = ops::check::run(&ws, &ids, &recorder);
    assert_eq!(snapshot(dir.path()), before, "check changed files");
    let mut out = vec![];
    match result {
        Ok(outcome) => {
            for r in &outcome.plugins {
                out.push(format!("{} {}", r.id, ident(r.status)));
                for f in &r.findings {
                    out.push(format!("  {} {}: {}", ident(f.severity), f.code, f.message));
                }
                for (k, v) in &r.data {
                    out.push(format!("  data {k} = {v}"));
                }
            }
            out.push(if outcome.failed() {
                "=> failed (exit 1)".to_string()
            } else {
                "=> passed".to_string()
            });
        }
        Err(OpError::Problems(e)) => out.extend(render_problems(&e)),
        Err(e) => out.push(format!("error (not a problem list): {e}")),
    }
    out.extend(recorder.lines());
    out.join("\n")
}

#[test]
fn checking() {
    check_table(CASES, |c| c.name, |c| c.expected, render);
}

const CASES: &[Case] = &[
    // ---- which plugins run ----
    Case {
        name: "check of one plugin runs only it",
        site: "",
        config: "",
        ids: &["co-management"],
        expected: r#"
            co-management pass
              info eligibility: 16 devices: comanaged 1, ineligible 7, needsOsUpdate 2, eligibleButNotAzureAdJoined 1, eligible 5
              info ineligible-no-client: 2 ineligible devices: no Configuration Manager client: install the client (1710 or later)
              info ineligible-client-too-old: 1 ineligible devices: the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade the client
              info ineligible-server-os: 1 ineligible devices: a server OS: servers cannot be co-managed
              info ineligible-not-windows-client: 1 ineligible devices: not Windows 10 or 11: only Windows 10 and 11 can be co-managed
              info ineligible-not-joined: 2 ineligible devices: only registered in Entra ID or in a workgroup: join it to Active Directory with hybrid Entra ID join, or to Entra ID
              info would-schedule: enrollment "all" would schedule 5 eligible devices
              info not-entra-joined: 1 devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible
              info needs-os-update: 2 devices run Windows 10 older than 1709 (build 16299): update them to make them eligible
              data devices_total = 16
              data eligibility = {"comanaged":1,"eligible":5,"eligibleButNotAzureAdJoined":1,"ineligible":7,"needsOsUpdate":2}
              data ineligible_reasons = {"client_too_old":1,"no_client":2,"not_joined":2,"not_windows_client":1,"server_os":1}
              data would_schedule = {"all":5,"none":0,"pilot":null}
            => passed
        "#,
    },
    Case {
        name: "an unknown id is a problem naming the known plugins",
        site: "",
        config: "",
        ids: &["nope"],
        expected: r#"
            error[unknown-plugin]: no plugin has the id `nope`; known plugins: co-management, defender-reporting, endpoint-analytics, rbac-authority, tenant-attach
        "#,
    },
    // ---- environment and site-version gates: reported, not refused ----
    Case {
        name: "China default: the cloud-only features are unsupported, naming China; co-management passes",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
        "#,
        ids: &[],
        expected: r#"
            co-management pass
              info eligibility: 16 devices: comanaged 1, ineligible 7, needsOsUpdate 2, eligibleButNotAzureAdJoined 1, eligible 5
              info ineligible-no-client: 2 ineligible devices: no Configuration Manager client: install the client (1710 or later)
              info ineligible-client-too-old: 1 ineligible devices: the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade the client
              info ineligible-server-os: 1 ineligible devices: a server OS: servers cannot be co-managed
              info ineligible-not-windows-client: 1 ineligible devices: not Windows 10 or 11: only Windows 10 and 11 can be co-managed
              info ineligible-not-joined: 2 ineligible devices: only registered in Entra ID or in a workgroup: join it to Active Directory with hybrid Entra ID join, or to Entra ID
              info would-schedule: enrollment "all" would schedule 5 eligible devices
              info not-entra-joined: 1 devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible
              info needs-os-update: 2 devices run Windows 10 older than 1709 (build 16299): update them to make them eligible
              data devices_total = 16
              data eligibility = {"comanaged":1,"eligible":5,"eligibleButNotAzureAdJoined":1,"ineligible":7,"needsOsUpdate":2}
              data ineligible_reasons = {"client_too_old":1,"no_client":2,"not_joined":2,"not_windows_client":1,"server_os":1}
              data would_schedule = {"all":5,"none":0,"pilot":null}
            tenant-attach unsupported
              info unsupported: Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov
            defender-reporting unsupported
              info unsupported: Microsoft Defender reporting can't be enabled for Azure China Cloud (china); it is available in public, usgov
            endpoint-analytics unsupported
              info unsupported: Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov
            rbac-authority unsupported
              info unsupported: RBAC authority can't be enabled for Azure China Cloud (china); it is available in public, usgov
            => passed
        "#,
    },
    Case {
        name: "below 2111 every check fails naming 2111, and the checks still run",
        site: r#"version = "2107""#,
        config: r#"
            [site]
            path = "site"
        "#,
        ids: &[],
        expected: r#"
            co-management fail
              error site-version: the site is version 2107: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info eligibility: 16 devices: comanaged 1, ineligible 7, needsOsUpdate 2, eligibleButNotAzureAdJoined 1, eligible 5
              info ineligible-no-client: 2 ineligible devices: no Configuration Manager client: install the client (1710 or later)
              info ineligible-client-too-old: 1 ineligible devices: the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade the client
              info ineligible-server-os: 1 ineligible devices: a server OS: servers cannot be co-managed
              info ineligible-not-windows-client: 1 ineligible devices: not Windows 10 or 11: only Windows 10 and 11 can be co-managed
              info ineligible-not-joined: 2 ineligible devices: only registered in Entra ID or in a workgroup: join it to Active Directory with hybrid Entra ID join, or to Entra ID
              info would-schedule: enrollment "all" would schedule 5 eligible devices
              info not-entra-joined: 1 devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible
              info needs-os-update: 2 devices run Windows 10 older than 1709 (build 16299): update them to make them eligible
              data devices_total = 16
              data eligibility = {"comanaged":1,"eligible":5,"eligibleButNotAzureAdJoined":1,"ineligible":7,"needsOsUpdate":2}
              data ineligible_reasons = {"client_too_old":1,"no_client":2,"not_joined":2,"not_windows_client":1,"server_os":1}
              data would_schedule = {"all":5,"none":0,"pilot":null}
            tenant-attach fail
              error site-version: the site is version 2107: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info service-connection-point: the service connection point is online
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            defender-reporting unsupported
              info unsupported: Microsoft Defender reporting needs site version 2303 or later; the site is 2107
            endpoint-analytics fail
              error site-version: the site is version 2107: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info eligible-devices: 9 uploaded Windows 10/11 devices with client 5.00.8968 or later are eligible; 9 of them report app reliability data (client 5.00.9012 or later)
              info servers-excluded: 1 uploaded servers are left out: Endpoint analytics gives no insights for Windows Server
              info clients-too-old: 3 uploaded Windows 10/11 devices have a client older than 5.00.8968 (2002): update the client to include them
              data app_reliability_devices = 9
              data devices_with_telemetry = 0
              data eligible_devices = 9
              data excluded = {"client_too_old":3,"not_uploaded":2,"other_os":1,"server_os":1}
            rbac-authority unsupported
              info unsupported: RBAC authority needs site version 2207 or later; the site is 2107
            => failed (exit 1)
        "#,
    },
    Case {
        name: "usgov at 2105: tenant-attach is unsupported naming 2107 there",
        site: r#"version = "2105""#,
        config: r#"
            [cloud]
            environment = "usgov"
        "#,
        ids: &[],
        expected: r#"
            co-management fail
              error site-version: the site is version 2105: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info eligibility: 16 devices: comanaged 1, ineligible 7, needsOsUpdate 2, eligibleButNotAzureAdJoined 1, eligible 5
              info ineligible-no-client: 2 ineligible devices: no Configuration Manager client: install the client (1710 or later)
              info ineligible-client-too-old: 1 ineligible devices: the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade the client
              info ineligible-server-os: 1 ineligible devices: a server OS: servers cannot be co-managed
              info ineligible-not-windows-client: 1 ineligible devices: not Windows 10 or 11: only Windows 10 and 11 can be co-managed
              info ineligible-not-joined: 2 ineligible devices: only registered in Entra ID or in a workgroup: join it to Active Directory with hybrid Entra ID join, or to Entra ID
              info would-schedule: enrollment "all" would schedule 5 eligible devices
              info not-entra-joined: 1 devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible
              info needs-os-update: 2 devices run Windows 10 older than 1709 (build 16299): update them to make them eligible
              data devices_total = 16
              data eligibility = {"comanaged":1,"eligible":5,"eligibleButNotAzureAdJoined":1,"ineligible":7,"needsOsUpdate":2}
              data ineligible_reasons = {"client_too_old":1,"no_client":2,"not_joined":2,"not_windows_client":1,"server_os":1}
              data would_schedule = {"all":5,"none":0,"pilot":null}
            tenant-attach unsupported
              info unsupported: Tenant attach (device upload) needs site version 2107 or later in Azure US Government Cloud; the site is 2105
            defender-reporting unsupported
              info unsupported: Microsoft Defender reporting needs site version 2303 or later; the site is 2105
            endpoint-analytics fail
              error site-version: the site is version 2105: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info eligible-devices: 9 uploaded Windows 10/11 devices with client 5.00.8968 or later are eligible; 9 of them report app reliability data (client 5.00.9012 or later)
              info servers-excluded: 1 uploaded servers are left out: Endpoint analytics gives no insights for Windows Server
              info clients-too-old: 3 uploaded Windows 10/11 devices have a client older than 5.00.8968 (2002): update the client to include them
              data app_reliability_devices = 9
              data devices_with_telemetry = 0
              data eligible_devices = 9
              data excluded = {"client_too_old":3,"not_uploaded":2,"other_os":1,"server_os":1}
            rbac-authority unsupported
              info unsupported: RBAC authority needs site version 2207 or later; the site is 2105
            => failed (exit 1)
        "#,
    },
    Case {
        name: "public at 2105: tenant-attach is supported and fails only for the wizard's 2111",
        site: r#"version = "2105""#,
        config: r#"
            [cloud]
            environment = "public"
        "#,
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach fail
              error site-version: the site is version 2105: the cloud attach wizard needs 2111; plan and apply refuse until the site is updated
              info service-connection-point: the service connection point is online
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => failed (exit 1)
        "#,
    },
    Case {
        name: "a custom version conflict is refused by check as by plan",
        site: r#"version = "2207""#,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            [features.defender-reporting]
        "#,
        ids: &["tenant-attach", "defender-reporting"],
        expected: r#"
            error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2207; turn it off (enabled = false) or update the site to 2303
        "#,
    },
    Case {
        name: "a dependent whose dependency is not enabled is refused by check as by plan",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.rbac-authority]
            enforce_configmgr_rbac = false
        "#,
        ids: &["tenant-attach", "rbac-authority"],
        expected: r#"
            error[dependency] rbac-authority: [features.rbac-authority]: depends on tenant-attach, which is not enabled; enable [features.tenant-attach] too
        "#,
    },
    Case {
        name: "malformed options refuse check too",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
        "#,
        ids: &[],
        expected: r#"
            error[validation] co-management: [features.co-management] enrollment = "pilot" needs `pilot_collection`, the id of the pilot collection (e.g. "PS100020")
        "#,
    },
    Case {
        name: "an unknown plugin, a value outside the choices and an unknown key refuse check at once",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.nope]
            enabled = true
            [features.co-management]
            enrollment = "some"
            [features.tenant-attach]
            uploads = "all"
        "#,
        ids: &[],
        expected: r#"
            error[unknown-plugin] nope: [features.nope]: no plugin has the id `nope`; known plugins: co-management, defender-reporting, endpoint-analytics, rbac-authority, tenant-attach (load others with --plugin-dir)
            error[invalid-option] co-management: [features.co-management] enrollment = "some": expected one of "all", "pilot", "none"
            error[invalid-option] tenant-attach: unknown key `uploads` in [features.tenant-attach]: known keys: enabled, upload

        "#,
    },
    Case {
        name: "check reports the selection's warnings",
        site: "",
        config: r#"
            [features.rbac-authority]
            enforce_configmgr_rbac = false
        "#,
        ids: &["rbac-authority"],
        expected: r#"
            rbac-authority pass
              info authority-rule: cloud console requests are authorized by Intune RBAC alone only when enforce_configmgr_rbac is false and the tenant's "Use Intune RBAC" toggle is on; otherwise Configuration Manager RBAC is enforced as well
              info configmgr-rbac-enforced: Configuration Manager RBAC will be enforced in addition to Intune RBAC: cloud users need Configuration Manager permissions on the devices' collections
              data enforce_configmgr_rbac = true
              data expected_authority = "configmgr+intune"
            => passed
            warning: [features.rbac-authority] settings are ignored: settings = "default" uses the wizard's defaults; use settings = "custom" to apply them
        "#,
    },
    // ---- tenant-attach's prerequisites ----
    Case {
        name: "an offline service connection point fails tenant-attach",
        site: r#"service_connection_point = "offline""#,
        config: "",
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach fail
              error service-connection-point-offline: the service connection point of site PS1 is offline: tenant attach needs it online to reach the cloud
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => failed (exit 1)
        "#,
    },
    Case {
        name: "no service connection point fails tenant-attach",
        site: r#"service_connection_point = "none""#,
        config: "",
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach fail
              error service-connection-point-missing: site PS1 has no service connection point: install one at the top-tier site, in online mode
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => failed (exit 1)
        "#,
    },
    Case {
        name: "no administration service fails tenant-attach",
        site: "administration_service = false",
        config: "",
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach fail
              info service-connection-point: the service connection point is online
              error administration-service-missing: the administration service (SMS Provider REST API) of site PS1 does not work: tenant attach needs it
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => failed (exit 1)
        "#,
    },
    Case {
        name: "both user discoveries off is a warning",
        site: "
            entra_user_discovery = false
            ad_user_discovery = false
        ",
        config: "",
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach warn
              info service-connection-point: the service connection point is online
              warning no-user-discovery: neither Entra ID user discovery nor Active Directory user discovery is enabled: users who act on devices from the cloud must be discovered hybrid identities
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => passed
        "#,
    },
    Case {
        name: "one user discovery off still passes",
        site: "ad_user_discovery = false",
        config: "",
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach pass
              info service-connection-point: the service connection point is online
              info devices-in-scope: 14 client devices in scope (all devices with a client) of 16 devices on the site
              data devices_in_scope = 14
              data devices_total = 16
              data devices_with_client = 14
              data upload = "all"
            => passed
        "#,
    },
    Case {
        name: "a missing upload collection is refused by check as by plan, naming it",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1FFFFF"
        "#,
        ids: &["tenant-attach"],
        expected: r#"
            error[collection-reference] tenant-attach.upload: [features.tenant-attach] upload = "PS1FFFFF": site PS1 has no collection PS1FFFFF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
    // ---- counts on the fixture's boundaries ----
    Case {
        name: "an upload collection's scope is its effective membership's clients",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
        "#,
        ids: &["tenant-attach"],
        expected: r#"
            tenant-attach pass
              info service-connection-point: the service connection point is online
              info devices-in-scope: 6 client devices in scope (collection PS100102 "Tenant Attach Upload" and its subcollections) of 16 devices on the site
              data devices_in_scope = 6
              data devices_total = 16
              data devices_with_client = 14
              data upload = "PS100102"
            => passed
        "#,
    },
    Case {
        name: "a pilot collection's members and the eligible ones it would schedule",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = "PS100102"
        "#,
        ids: &["co-management"],
        expected: r#"
            co-management pass
              info pilot-collection: pilot collection PS100102 "Tenant Attach Upload" has 7 members
              info eligibility: 16 devices: comanaged 1, ineligible 7, needsOsUpdate 2, eligibleButNotAzureAdJoined 1, eligible 5
              info ineligible-no-client: 2 ineligible devices: no Configuration Manager client: install the client (1710 or later)
              info ineligible-client-too-old: 1 ineligible devices: the client is older than 5.00.8577 (1710) or its version is unreadable: upgrade the client
              info ineligible-server-os: 1 ineligible devices: a server OS: servers cannot be co-managed
              info ineligible-not-windows-client: 1 ineligible devices: not Windows 10 or 11: only Windows 10 and 11 can be co-managed
              info ineligible-not-joined: 2 ineligible devices: only registered in Entra ID or in a workgroup: join it to Active Directory with hybrid Entra ID join, or to Entra ID
              info would-schedule: enrollment "pilot" would schedule 4 eligible devices of collection PS100102
              info not-entra-joined: 1 devices are joined to Active Directory only: configure hybrid Entra ID join to make them eligible
              info needs-os-update: 2 devices run Windows 10 older than 1709 (build 16299): update them to make them eligible
              data devices_total = 16
              data eligibility = {"comanaged":1,"eligible":5,"eligibleButNotAzureAdJoined":1,"ineligible":7,"needsOsUpdate":2}
              data ineligible_reasons = {"client_too_old":1,"no_client":2,"not_joined":2,"not_windows_client":1,"server_os":1}
              data would_schedule = {"all":5,"none":0,"pilot":4}
            => passed
        "#,
    },
    Case {
        name: "a missing pilot collection is refused by check as by plan even with enrollment all",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "all"
            pilot_collection = "PS1000FF"
        "#,
        ids: &["co-management"],
        expected: r#"
            error[collection-reference] co-management.pilot_collection: [features.co-management] pilot_collection = "PS1000FF": site PS1 has no collection PS1000FF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
];

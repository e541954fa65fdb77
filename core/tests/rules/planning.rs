//! Planning as tables: for each case, the `small-site` fixture (its `site.toml` keys
//! overridden), `attach.toml` text and the settings applied before, and the plan — a header
//! (`environment settings site-version`), then one line per step in execution order
//! (`plugin action (reason): detail`), then the warnings reported; or one line per problem
//! (`error[kind] feature: text`, the text being what the CLI prints after `error: `).
//!
//! Steps run disables first (dependents before what they depend on), then the rest in
//! dependency order. A case with nothing applied runs `ops::plan::run` in a directory of its
//! own and asserts that planning changed no file there, whatever the outcome; a case with
//! applied settings plans against them with `ops::plan::plan_with`.

use super::common;

use cloudattach_core::ops::plan::PlanOptions;
use cloudattach_core::ops::{self, OpError, Workspace};
use cloudattach_core::session::view::CloudView;
use cloudattach_core::state::AppliedState;
use cloudattach_core::{Plan, Site};
use common::{
    Recorder, check_table, parse_config, registry, render_problems, small_site, snapshot,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

struct Case {
    name: &'static str,
    /// `site.toml` lines that replace the fixture's (`version = "2107"`).
    site: &'static str,
    /// `attach.toml`.
    config: &'static str,
    /// (plugin id, JSON settings) applied before.
    applied: &'static [(&'static str, &'static str)],
    /// `--ignore-check` codes.
    ignore: &'static [&'static str],
    expected: &'static str,
}

/// Settings applied before, as the state store would hold them.
struct Applied(BTreeMap<String, Value>);

impl AppliedState for Applied {
    fn applied_settings(&self, plugin_id: &str) -> Option<Value> {
        self.0.get(plugin_id).cloned()
    }
    fn applied_ids(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }

    /// Every built-in feature but rbac-authority owns an upload channel once applied.
    fn uploads(&self, plugin_id: &str) -> bool {
        plugin_id != "rbac-authority" && self.0.contains_key(plugin_id)
    }
}

fn render_plan(plan: &Plan) -> Vec<String> {
    let mut out = vec![format!(
        "{} {} {}",
        plan.environment, plan.settings, plan.site_version
    )];
    for s in &plan.steps {
        let mut line = format!("{} {}", s.plugin, s.action.as_str());
        if let Some(r) = &s.reason {
            line.push_str(&format!(" ({r})"));
        }
        if let Some(d) = &s.detail {
            line.push_str(&format!(": {d}"));
        }
        if !s.ignored_checks.is_empty() {
            line.push_str(&format!(
                " [check ignored: {}]",
                s.ignored_checks.join(", ")
            ));
        }
        out.push(line);
    }
    out
}

fn render(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    small_site(dir.path(), case.site);
    let config = parse_config(&common::trim_indent(case.config), dir.path()).expect("parses");
    let site = Site::open(&config.site_dir).expect("the site opens");
    let ws = Workspace::new(config, registry(), Arc::new(site)).expect("a workspace");
    let recorder = Recorder::default();
    let options = PlanOptions {
        ignore_checks: case.ignore.iter().map(|c| c.to_string()).collect(),
    };
    let result = if case.applied.is_empty() {
        let before = snapshot(dir.path());
        let result = ops::plan::run(&ws, &options, &recorder);
        assert_eq!(
            snapshot(dir.path()),
            before,
            "plan changed files ({})",
            if result.is_ok() { "planned" } else { "refused" }
        );
        result
    } else {
        let applied = Applied(
            case.applied
                .iter()
                .map(|(id, json)| (id.to_string(), serde_json::from_str(json).unwrap()))
                .collect(),
        );
        ops::plan::plan_with(&ws, &applied, &options, &recorder)
    };
    let mut out = match result {
        Ok(planned) => {
            let mut lines = render_plan(&planned.plan);
            if planned.plan.check_failed() {
                lines.push("=> a check failed (exit 1)".to_string());
            }
            lines
        }
        Err(OpError::Problems(e)) => render_problems(&e),
        Err(e) => vec![format!(
            "error (not a problem list, exit {}): {e}",
            exit(&e)
        )],
    };
    out.extend(recorder.lines());
    out.join("\n")
}

fn exit(e: &OpError) -> u8 {
    if e.is_input() { 2 } else { 1 }
}

#[test]
fn planning() {
    check_table(CASES, |c| c.name, |c| c.expected, render);
}

const CASES: &[Case] = &[
    // ---- nothing applied yet: enable or skip ----
    Case {
        name: "default settings at 2303 enable every feature, each after what it depends on",
        site: "",
        config: r#"
            [site]
            path = "site"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach enable: upload 14 devices
            defender-reporting enable: report Defender state of 0 devices
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority enable: enforce Configuration Manager RBAC with Intune RBAC
        "#,
    },
    Case {
        name: "default settings in China enable co-management and skip the rest, naming China",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            china default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            defender-reporting skip (Microsoft Defender reporting can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            endpoint-analytics skip (Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            rbac-authority skip (RBAC authority can't be enabled for Azure China Cloud (china); it is available in public, usgov)
        "#,
    },
    Case {
        name: "default settings at 2203 skip rbac-authority and defender-reporting, naming their versions",
        site: r#"version = "2203""#,
        config: r#"
            [attach]
            settings = "default"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public default 2203
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach enable: upload 14 devices
            defender-reporting skip (Microsoft Defender reporting needs site version 2303 or later; the site is 2203)
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority skip (RBAC authority needs site version 2207 or later; the site is 2203)
        "#,
    },
    Case {
        name: "default settings at exactly 2111 plan",
        site: r#"version = "2111""#,
        config: "",
        applied: &[],
        ignore: &[],
        expected: r#"
            public default 2111
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach enable: upload 14 devices
            defender-reporting skip (Microsoft Defender reporting needs site version 2303 or later; the site is 2111)
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority skip (RBAC authority needs site version 2207 or later; the site is 2111)
        "#,
    },
    Case {
        name: "custom settings enable exactly what the config turns on and skip the rest with reasons",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            upload = "all"
            [features.defender-reporting]
            enabled = true
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management skip (not enabled in attach.toml)
            tenant-attach enable: upload 14 devices
            defender-reporting enable: report Defender state of 0 devices
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "China with custom settings enables co-management with enrollment all",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "all"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            china custom 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (not enabled in attach.toml)
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "an upload collection uploads its effective membership's clients",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management skip (not enabled in attach.toml)
            tenant-attach enable: upload 6 devices
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "a pilot collection schedules its eligible members",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = "PS100102"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management enable: schedule 4 eligible devices for enrollment (pilot)
            tenant-attach skip (not enabled in attach.toml)
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "plan reports the selection's warnings",
        site: "",
        config: r#"
            [features.tenant-attach]
            upload = "PS100102"
            [features.endpoint-analytics]
            enabled = false
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach enable: upload 14 devices
            defender-reporting enable: report Defender state of 0 devices
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority enable: enforce Configuration Manager RBAC with Intune RBAC
            warning: [features.tenant-attach] settings are ignored: settings = "default" uses the wizard's defaults; use settings = "custom" to apply them
            warning: [features.endpoint-analytics] enabled = false is ignored: settings = "default" enables the wizard's default features; use settings = "custom" to choose
        "#,
    },
    Case {
        name: "a new upload scope updates the features that upload for uploaded devices",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
            [features.endpoint-analytics]
            enabled = true
            [features.defender-reporting]
            enabled = true
            [features.rbac-authority]
            enabled = true
            [features.co-management]
            enabled = false
        "#,
        applied: &[
            ("tenant-attach", r#"{"upload":"all"}"#),
            ("endpoint-analytics", "{}"),
            ("defender-reporting", "{}"),
            ("rbac-authority", r#"{"enforce_configmgr_rbac":true}"#),
        ],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management skip (turned off in attach.toml)
            tenant-attach update: upload 6 devices
            defender-reporting update (tenant-attach changes: its records follow tenant-attach's settings and are brought in line): report Defender state of 0 devices
            endpoint-analytics update (tenant-attach changes: its records follow tenant-attach's settings and are brought in line): enroll 3 devices in Endpoint analytics
            rbac-authority noop: enforce Configuration Manager RBAC with Intune RBAC
        "#,
    },
    // ---- refusals ----
    Case {
        name: "below 2111 plan refuses, naming 2111",
        site: r#"version = "2107""#,
        config: r#"
            [site]
            path = "site"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[site-version]: the site is version 2107: cloud attach needs Configuration Manager 2111 or later; update the site first (check still runs)
        "#,
    },
    Case {
        name: "usgov at 2105 plan refuses, naming 2111",
        site: r#"version = "2105""#,
        config: r#"
            [cloud]
            environment = "usgov"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[site-version]: the site is version 2105: cloud attach needs Configuration Manager 2111 or later; update the site first (check still runs)
        "#,
    },
    Case {
        name: "below 2111 the version is the one problem, before the selection's",
        site: r#"version = "2107""#,
        config: r#"
            [attach]
            settings = "custom"
            [features.nope]
            [features.endpoint-analytics]
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[site-version]: the site is version 2107: cloud attach needs Configuration Manager 2111 or later; update the site first (check still runs)
        "#,
    },
    Case {
        name: "China with custom device upload refuses, naming China",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            [features.co-management]
            enrollment = "all"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[unsupported] tenant-attach: [features.tenant-attach]: Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov; turn it off (enabled = false) or change the environment
        "#,
    },
    Case {
        name: "China co-management with enrollment none refuses the plan",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "none"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[validation] co-management: [features.co-management] enrollment = "none": automatic enrollment of all eligible devices is the only option in Azure China Cloud; set enrollment = "all"
        "#,
    },
    Case {
        name: "custom defender-reporting below 2303 refuses",
        site: r#"version = "2207""#,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            [features.defender-reporting]
            enabled = true
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2207; turn it off (enabled = false) or update the site to 2303
        "#,
    },
    Case {
        name: "an invalid option refuses the plan",
        site: "",
        config: r#"
            [site]
            path = "site"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1NOPE1"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = "PS1NOPE1": expected "all" or a collection id such as "PS100012"
        "#,
    },
    Case {
        name: "an unknown plugin, a value outside the choices and an unknown key refuse the plan at once",
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
        applied: &[],
        ignore: &[],
        expected: r#"
            error[unknown-plugin] nope: [features.nope]: no plugin has the id `nope`; known plugins: co-management, defender-reporting, endpoint-analytics, rbac-authority, tenant-attach (load others with --plugin-dir)
            error[invalid-option] co-management: [features.co-management] enrollment = "some": expected one of "all", "pilot", "none"
            error[invalid-option] tenant-attach: unknown key `uploads` in [features.tenant-attach]: known keys: enabled, upload
        "#,
    },
    Case {
        name: "pilot enrollment without pilot_collection refuses the plan",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[validation] co-management: [features.co-management] enrollment = "pilot" needs `pilot_collection`, the id of the pilot collection (e.g. "PS100020")

        "#,
    },
    Case {
        name: "a missing upload collection refuses the plan",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1FFFFF"
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            error[collection-reference] tenant-attach.upload: [features.tenant-attach] upload = "PS1FFFFF": site PS1 has no collection PS1FFFFF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
    // ---- against what was applied: noop, update, disable ----
    Case {
        name: "the same settings as applied are noops",
        site: "",
        config: "",
        applied: &[
            ("tenant-attach", r#"{"upload": "all"}"#),
            ("co-management", r#"{"enrollment": "all"}"#),
            ("defender-reporting", "{}"),
            ("endpoint-analytics", "{}"),
            ("rbac-authority", r#"{"enforce_configmgr_rbac": true}"#),
        ],
        ignore: &[],
        expected: r#"
            public default 2303
            co-management noop: schedule 5 eligible devices for enrollment (all)
            tenant-attach noop: upload 14 devices
            defender-reporting noop: report Defender state of 0 devices
            endpoint-analytics noop: enroll 9 devices in Endpoint analytics
            rbac-authority noop: enforce Configuration Manager RBAC with Intune RBAC
        "#,
    },
    Case {
        name: "changed settings are updates, unchanged ones noops, new ones enables",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "all"
            [features.co-management]
            enrollment = "all"
            [features.rbac-authority]
            enforce_configmgr_rbac = false
            [features.endpoint-analytics]
        "#,
        applied: &[
            ("tenant-attach", r#"{"upload": "PS100102"}"#),
            (
                "co-management",
                r#"{"enrollment": "pilot", "pilot_collection": "PS100102"}"#,
            ),
            ("rbac-authority", r#"{"enforce_configmgr_rbac": false}"#),
        ],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management update: schedule 5 eligible devices for enrollment (all)
            tenant-attach update: upload 14 devices
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority noop: Intune RBAC only (once the tenant's "Use Intune RBAC" toggle is on)
        "#,
    },
    Case {
        name: "a pilot collection left over with enrollment all is not a change",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "all"
            pilot_collection = "PS100102"
        "#,
        applied: &[("co-management", r#"{"enrollment": "all"}"#)],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management noop: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (not enabled in attach.toml)
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "features applied but no longer wanted are disabled first, dependents before their dependency",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            [features.tenant-attach]
            enabled = false
        "#,
        applied: &[
            ("tenant-attach", r#"{"upload": "all"}"#),
            ("endpoint-analytics", "{}"),
            ("rbac-authority", r#"{"enforce_configmgr_rbac": true}"#),
            ("co-management", r#"{"enrollment": "all"}"#),
        ],
        ignore: &[],
        expected: r#"
            public custom 2303
            rbac-authority disable (not enabled in attach.toml)
            endpoint-analytics disable (not enabled in attach.toml)
            tenant-attach disable (turned off in attach.toml)
            co-management noop: schedule 5 eligible devices for enrollment (all)
            defender-reporting skip (not enabled in attach.toml)
        "#,
    },
    Case {
        name: "a feature the site's version now rules out is disabled, with the reason",
        site: r#"version = "2207""#,
        config: "",
        applied: &[
            ("tenant-attach", r#"{"upload": "all"}"#),
            ("defender-reporting", "{}"),
        ],
        ignore: &[],
        expected: r#"
            public default 2207
            defender-reporting disable (Microsoft Defender reporting needs site version 2303 or later; the site is 2207)
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach noop: upload 14 devices
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority enable: enforce Configuration Manager RBAC with Intune RBAC
        "#,
    },
    Case {
        name: "in China the cloud-only features applied before are disabled",
        site: "",
        config: r#"
            [cloud]
            environment = "china"
        "#,
        applied: &[
            ("tenant-attach", r#"{"upload": "all"}"#),
            ("defender-reporting", "{}"),
            ("co-management", r#"{"enrollment": "all"}"#),
        ],
        ignore: &[],
        expected: r#"
            china default 2303
            defender-reporting disable (Microsoft Defender reporting can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            tenant-attach disable (Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            co-management noop: schedule 5 eligible devices for enrollment (all)
            endpoint-analytics skip (Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov)
            rbac-authority skip (RBAC authority can't be enabled for Azure China Cloud (china); it is available in public, usgov)
        "#,
    },
    Case {
        name: "applied settings do not lift the refusal below 2111",
        site: r#"version = "2107""#,
        config: "",
        applied: &[("tenant-attach", r#"{"upload": "all"}"#)],
        ignore: &[],
        expected: r#"
            error[site-version]: the site is version 2107: cloud attach needs Configuration Manager 2111 or later; update the site first (check still runs)

        "#,
    },
    // ---- prerequisite checks: a failing one skips its feature and its dependents ----
    Case {
        name: "a failing check skips its feature and its dependents; independent features go on",
        site: r#"service_connection_point = "offline""#,
        config: "",
        applied: &[],
        ignore: &[],
        expected: r#"
            public default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (check failed: service-connection-point-offline: the service connection point of site PS1 is offline: tenant attach needs it online to reach the cloud)
            defender-reporting skip (depends on tenant-attach, which is skipped: its check failed)
            endpoint-analytics skip (depends on tenant-attach, which is skipped: its check failed)
            rbac-authority skip (depends on tenant-attach, which is skipped: its check failed)
            => a check failed (exit 1)
        "#,
    },
    Case {
        name: "every failing finding of a check is its skip's reason",
        site: r#"
            service_connection_point = "offline"
            administration_service = false
        "#,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
        "#,
        applied: &[],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management skip (not enabled in attach.toml)
            tenant-attach skip (check failed: service-connection-point-offline: the service connection point of site PS1 is offline: tenant attach needs it online to reach the cloud; administration-service-missing: the administration service (SMS Provider REST API) of site PS1 does not work: tenant attach needs it)
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
            => a check failed (exit 1)
        "#,
    },
    Case {
        name: "--ignore-check with the failing code enables the feature and its dependents",
        site: r#"service_connection_point = "offline""#,
        config: "",
        applied: &[],
        ignore: &["service-connection-point-offline"],
        expected: r#"
            public default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach enable: upload 14 devices [check ignored: service-connection-point-offline]
            defender-reporting enable: report Defender state of 0 devices
            endpoint-analytics enable: enroll 9 devices in Endpoint analytics
            rbac-authority enable: enforce Configuration Manager RBAC with Intune RBAC
        "#,
    },
    Case {
        name: "ignoring one failing code does not ignore another",
        site: r#"
            service_connection_point = "offline"
            administration_service = false
        "#,
        config: "",
        applied: &[],
        ignore: &["service-connection-point-offline"],
        expected: r#"
            public default 2303
            co-management enable: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (check failed: administration-service-missing: the administration service (SMS Provider REST API) of site PS1 does not work: tenant attach needs it) [check ignored: service-connection-point-offline]
            defender-reporting skip (depends on tenant-attach, which is skipped: its check failed)
            endpoint-analytics skip (depends on tenant-attach, which is skipped: its check failed)
            rbac-authority skip (depends on tenant-attach, which is skipped: its check failed)
            => a check failed (exit 1)
        "#,
    },
    Case {
        name: "an ignored code no failing finding has is refused, naming the failing ones",
        site: r#"service_connection_point = "offline""#,
        config: "",
        applied: &[],
        ignore: &["service-conection-point-offline"],
        expected: r#"
            error[ignore-check]: --ignore-check service-conection-point-offline: no failing check finding has this code; the failing findings are service-connection-point-offline
        "#,
    },
    Case {
        name: "an ignored code when no check fails is refused",
        site: "",
        config: "",
        applied: &[],
        ignore: &["administration-service-missing"],
        expected: r#"
            error[ignore-check]: --ignore-check administration-service-missing: no failing check finding has this code; no check of the selected features fails
        "#,
    },
    Case {
        name: "a failing check of a feature applied before skips it instead of a noop",
        site: "administration_service = false",
        config: "",
        applied: &[
            ("co-management", r#"{"enrollment": "all"}"#),
            ("tenant-attach", r#"{"upload": "all"}"#),
        ],
        ignore: &[],
        expected: r#"
            public default 2303
            co-management noop: schedule 5 eligible devices for enrollment (all)
            tenant-attach skip (check failed: administration-service-missing: the administration service (SMS Provider REST API) of site PS1 does not work: tenant attach needs it)
            defender-reporting skip (depends on tenant-attach, which is skipped: its check failed)
            endpoint-analytics skip (depends on tenant-attach, which is skipped: its check failed)
            rbac-authority skip (depends on tenant-attach, which is skipped: its check failed)
            => a check failed (exit 1)
        "#,
    },
    // ---- features enabled whose plugin is not loaded ----
    Case {
        name: "a feature applied before whose plugin is not loaded is a skip saying what to load",
        site: "",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
        "#,
        applied: &[
            ("tenant-attach", r#"{"upload": "all"}"#),
            ("collection-summary", r#"{}"#),
        ],
        ignore: &[],
        expected: r#"
            public custom 2303
            co-management skip (not enabled in attach.toml)
            tenant-attach noop: upload 14 devices
            defender-reporting skip (not enabled in attach.toml)
            endpoint-analytics skip (not enabled in attach.toml)
            rbac-authority skip (not enabled in attach.toml)
            collection-summary skip (enabled in the tenant; its plugin is not loaded here: load it with --plugin-dir)
        "#,
    },
];

/// `apply`'s planning half refuses a configuration with problems before it creates the state,
/// and creates it for one without.
#[test]
fn apply_creates_no_state_for_a_configuration_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    small_site(dir.path(), "");
    let refused = parse_config(
        "[site]\npath = \"site\"\n[attach]\nsettings = \"custom\"\n[features.endpoint-analytics]\nenabled = true\n",
        dir.path(),
    )
    .unwrap();
    let site = Arc::new(Site::open(&dir.path().join("site")).unwrap());
    let ws = Workspace::new(refused, registry(), site.clone()).unwrap();
    let before = snapshot(dir.path());
    let err = ops::apply::select(&ws, &Recorder::default())
        .map(|_| ())
        .expect_err("a dependent without its dependency is refused");
    assert!(err.is_input(), "{err}");
    assert_eq!(snapshot(dir.path()), before, "nothing written");

    let fine = parse_config("[site]\npath = \"site\"\n", dir.path()).unwrap();
    let ws = Workspace::new(fine, registry(), site).unwrap();
    let selection = ops::apply::select(&ws, &Recorder::default()).unwrap();
    let prepared = ops::apply::prepare(
        &ws,
        selection,
        &CloudView::default(),
        &PlanOptions::default(),
    )
    .unwrap();
    assert!(ops::apply::changes(&prepared.planned.plan) > 0);
    assert!(dir.path().join(".cloudattach/state.db").is_file());
}

/// Apply plans against the local state reconciled with what the cloud holds: a feature the
/// state records but the cloud lost is an `enable`, one the cloud holds with other settings an
/// `update` — in the Summary shown before confirming — and the state is only changed when the
/// reconciliation is recorded (after confirming).
#[test]
fn apply_plans_against_what_the_cloud_holds() {
    let dir = tempfile::tempdir().unwrap();
    small_site(dir.path(), "");
    let config = parse_config("[site]\npath = \"site\"\n", dir.path()).unwrap();
    let site = Arc::new(Site::open(&dir.path().join("site")).unwrap());
    let ws = Workspace::new(config, registry(), site).unwrap();
    let state =
        cloudattach_core::state::StateStore::open(&dir.path().join(".cloudattach")).unwrap();
    let applied = [
        ("co-management", serde_json::json!({"enrollment": "all"})),
        ("defender-reporting", serde_json::json!({})),
        ("endpoint-analytics", serde_json::json!({})),
        (
            "rbac-authority",
            serde_json::json!({"enforce_configmgr_rbac": true}),
        ),
        ("tenant-attach", serde_json::json!({"upload": "all"})),
    ];
    for (id, settings) in &applied {
        state.set_feature(id, settings).unwrap();
    }
    let plan_against = |view: &CloudView| {
        let selection = ops::apply::select(&ws, &Recorder::default()).unwrap();
        ops::apply::prepare(&ws, selection, view, &PlanOptions::default()).unwrap()
    };
    let actions = |p: &ops::apply::Prepared| -> Vec<String> {
        p.planned
            .plan
            .steps
            .iter()
            .map(|s| format!("{} {}", s.plugin, s.action.as_str()))
            .collect()
    };

    // The cloud holds everything the state does: nothing to change.
    let all = CloudView {
        attached: true,
        enabled: applied
            .iter()
            .map(|(id, s)| (id.to_string(), s.clone()))
            .collect(),
    };
    let same = plan_against(&all);
    assert_eq!(
        ops::apply::changes(&same.planned.plan),
        0,
        "{:?}",
        actions(&same)
    );

    // A fresh cloud: every feature is enabled again, though the state says applied.
    let fresh = plan_against(&CloudView::default());
    assert_eq!(
        actions(&fresh),
        [
            "co-management enable",
            "tenant-attach enable",
            "defender-reporting enable",
            "endpoint-analytics enable",
            "rbac-authority enable"
        ]
    );
    let detail = fresh.planned.plan.steps[1]
        .detail
        .clone()
        .unwrap_or_default();
    assert!(
        detail.contains("the cloud does not have this feature enabled"),
        "{detail}"
    );

    // Defender reporting disabled cloud-side, co-management's enrollment changed there.
    let mut drifted = all.clone();
    drifted.enabled.remove("defender-reporting");
    drifted.enabled.insert(
        "co-management".into(),
        serde_json::json!({"enrollment": "none"}),
    );
    let p = plan_against(&drifted);
    assert_eq!(
        actions(&p),
        [
            "co-management update",
            "tenant-attach noop",
            "defender-reporting enable",
            "endpoint-analytics noop",
            "rbac-authority noop"
        ]
    );
    // Planning wrote nothing; recording the reconciliation does.
    use cloudattach_core::state::AppliedState;
    assert!(state.applied_settings("defender-reporting").is_some());
    p.reconciled.record(&state).unwrap();
    assert_eq!(state.applied_settings("defender-reporting"), None);
    assert_eq!(
        state.applied_settings("co-management"),
        Some(serde_json::json!({"enrollment": "none"}))
    );
}

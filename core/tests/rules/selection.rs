//! Selection as tables: for each case, `attach.toml` text and a site version, and what
//! [`select`] decides — one line per plugin in execution order (`id selected {options}`,
//! `id skipped: why`, `id not selected: why`) and the warnings, or one line per problem
//! (`error[kind] feature: text`, the text being what the CLI prints after `error: `).
//!
//! Every command validates a configuration the same way (`selection::validate`: this selection
//! and, in the same pass, the collections options name); `every_command_agrees_on_validity`
//! runs each case through every command's use case and compares what they refuse.

use super::common;

use cloudattach_core::{Decision, Registry, Selection, SelectionError, Site, select, validate};
use cloudattach_sdk::SiteVersion;
use common::{check_table, parse_config, registry, render_options, render_problems, trim_indent};
use std::path::Path;

struct Case {
    name: &'static str,
    /// The site's version.
    site: u32,
    /// `attach.toml`.
    config: &'static str,
    expected: &'static str,
}

fn render_selection(result: Result<Selection, SelectionError>) -> Vec<String> {
    let selection = match result {
        Ok(s) => s,
        Err(e) => return render_problems(&e),
    };
    let mut out: Vec<String> = selection
        .entries
        .iter()
        .map(|(id, decision)| match decision {
            Decision::Selected(options) => format!("{id} selected{}", render_options(options)),
            Decision::Skipped(why) => format!("{id} skipped: {why}"),
            Decision::NotSelected {
                reason,
                explicitly_off,
            } => {
                // The reason says which; check that the flag agrees.
                assert_eq!(
                    *explicitly_off,
                    reason == "turned off in attach.toml",
                    "{id}: {reason}"
                );
                format!("{id} not selected: {reason}")
            }
        })
        .collect();
    out.extend(selection.warnings.iter().map(|w| format!("warning: {w}")));
    out
}

fn render(registry: &Registry, case: &Case) -> String {
    let config = match parse_config(&trim_indent(case.config), Path::new("")) {
        Ok(c) => c,
        Err(e) => {
            e.lines().for_each(common::assert_names_its_table_once);
            return format!("config error: {e}");
        }
    };
    let version = SiteVersion(case.site);
    render_selection(select(&config, registry, version)).join("\n")
}

#[test]
fn selection() {
    let registry = registry();
    check_table(CASES, |c| c.name, |c| c.expected, |c| render(&registry, c));
}

const CASES: &[Case] = &[
    // ---- default settings: the wizard's defaults, gated by environment and site version ----
    Case {
        name: "default settings at 2303 in public select every feature in dependency order",
        site: 2303,
        config: r#"
            [site]
            path = "site"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting selected
            endpoint-analytics selected
            rbac-authority selected {enforce_configmgr_rbac=true}
        "#,
    },
    Case {
        name: "default settings in China select co-management alone and skip the cloud-only features",
        site: 2303,
        config: r#"
            [cloud]
            environment = "china"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach skipped: Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov
            defender-reporting skipped: Microsoft Defender reporting can't be enabled for Azure China Cloud (china); it is available in public, usgov
            endpoint-analytics skipped: Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov
            rbac-authority skipped: RBAC authority can't be enabled for Azure China Cloud (china); it is available in public, usgov
        "#,
    },
    Case {
        name: "default settings at 2203 skip rbac-authority (2207) and defender-reporting (2303)",
        site: 2203,
        config: r#"
            [attach]
            settings = "default"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting skipped: Microsoft Defender reporting needs site version 2303 or later; the site is 2203
            endpoint-analytics selected
            rbac-authority skipped: RBAC authority needs site version 2207 or later; the site is 2203
        "#,
    },
    Case {
        name: "default settings in usgov at 2105 skip tenant-attach (2107 there) and its dependents",
        site: 2105,
        config: r#"
            [cloud]
            environment = "usgov"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach skipped: Tenant attach (device upload) needs site version 2107 or later in Azure US Government Cloud; the site is 2105
            defender-reporting skipped: Microsoft Defender reporting needs site version 2303 or later; the site is 2105
            endpoint-analytics skipped: depends on tenant-attach, which is skipped: Tenant attach (device upload) needs site version 2107 or later in Azure US Government Cloud; the site is 2105
            rbac-authority skipped: RBAC authority needs site version 2207 or later; the site is 2105
        "#,
    },
    Case {
        name: "default settings in usgov at 2107 select tenant-attach",
        site: 2107,
        config: r#"
            [cloud]
            environment = "usgov"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting skipped: Microsoft Defender reporting needs site version 2303 or later; the site is 2107
            endpoint-analytics selected
            rbac-authority skipped: RBAC authority needs site version 2207 or later; the site is 2107
        "#,
    },
    Case {
        name: "default settings at 2002 keep only what that version has",
        site: 2002,
        config: "",
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting skipped: Microsoft Defender reporting needs site version 2303 or later; the site is 2002
            endpoint-analytics selected
            rbac-authority skipped: RBAC authority needs site version 2207 or later; the site is 2002
        "#,
    },
    Case {
        name: "default settings ignore enabled = false, with a warning",
        site: 2303,
        config: r#"
            [features.defender-reporting]
            enabled = false
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting selected
            endpoint-analytics selected
            rbac-authority selected {enforce_configmgr_rbac=true}
            warning: [features.defender-reporting] enabled = false is ignored: settings = "default" enables the wizard's default features; use settings = "custom" to choose
        "#,
    },
    Case {
        name: "default settings ignore options that differ from the defaults, with a warning",
        site: 2303,
        config: r#"
            [features.tenant-attach]
            upload = "PS100102"
            [features.rbac-authority]
            enforce_configmgr_rbac = false
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting selected
            endpoint-analytics selected
            rbac-authority selected {enforce_configmgr_rbac=true}
            warning: [features.tenant-attach] settings are ignored: settings = "default" uses the wizard's defaults; use settings = "custom" to apply them
            warning: [features.rbac-authority] settings are ignored: settings = "default" uses the wizard's defaults; use settings = "custom" to apply them
        "#,
    },
    Case {
        name: "default settings say nothing of options equal to the defaults",
        site: 2303,
        config: r#"
            [features.tenant-attach]
            enabled = true
            upload = "all"
            [features.co-management]
            enrollment = "all"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach selected {upload=all}
            defender-reporting selected
            endpoint-analytics selected
            rbac-authority selected {enforce_configmgr_rbac=true}
        "#,
    },
    Case {
        name: "default settings in China ignore enrollment = none instead of refusing it",
        site: 2303,
        config: r#"
            [cloud]
            environment = "china"
            [features.co-management]
            enrollment = "none"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach skipped: Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov
            defender-reporting skipped: Microsoft Defender reporting can't be enabled for Azure China Cloud (china); it is available in public, usgov
            endpoint-analytics skipped: Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov
            rbac-authority skipped: RBAC authority can't be enabled for Azure China Cloud (china); it is available in public, usgov
            warning: [features.co-management] settings are ignored: settings = "default" uses the wizard's defaults; use settings = "custom" to apply them
        "#,
    },
    Case {
        name: "default settings still refuse an option of the wrong type",
        site: 2303,
        config: r#"
            [features.tenant-attach]
            upload = 5
        "#,
        expected: r#"
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = 5: expected "all" or a collection id such as "PS100012"
        "#,
    },
    Case {
        name: "default settings refuse a table of an unknown plugin, naming the known ones",
        site: 2303,
        config: r#"
            [site]
            path = "site"
            [features.nope]
            enabled = true
        "#,
        expected: r#"
            error[unknown-plugin] nope: [features.nope]: no plugin has the id `nope`; known plugins: co-management, defender-reporting, endpoint-analytics, rbac-authority, tenant-attach (load others with --plugin-dir)
        "#,
    },
    // ---- custom settings: exactly the tables present, every conflict at once ----
    Case {
        name: "custom settings without feature tables select nothing",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
        "#,
        expected: r#"
            co-management not selected: not enabled in attach.toml
            tenant-attach not selected: not enabled in attach.toml
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority not selected: not enabled in attach.toml
        "#,
    },
    Case {
        name: "custom settings select exactly what the config turns on",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            upload = "all"
            [features.defender-reporting]
            enabled = true
        "#,
        expected: r#"
            co-management not selected: not enabled in attach.toml
            tenant-attach selected {upload=all}
            defender-reporting selected
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority not selected: not enabled in attach.toml
        "#,
    },
    Case {
        name: "custom settings: a table without enabled is on, enabled = false is off",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
            [features.rbac-authority]
            enforce_configmgr_rbac = false
            [features.co-management]
            enabled = false
            enrollment = "pilot"
            pilot_collection = "PS100102"
        "#,
        expected: r#"
            co-management not selected: turned off in attach.toml
            tenant-attach selected {upload=PS100102}
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority selected {enforce_configmgr_rbac=false}
        "#,
    },
    Case {
        name: "custom settings: a dependent without its dependency names the dependency",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.endpoint-analytics]
            enabled = true
        "#,
        expected: r#"
            error[dependency] endpoint-analytics: [features.endpoint-analytics]: depends on tenant-attach, which is not enabled; enable [features.tenant-attach] too
        "#,
    },
    Case {
        name: "custom settings: a dependent of a feature turned off",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = false
            [features.endpoint-analytics]
            [features.rbac-authority]
        "#,
        expected: r#"
            error[dependency] endpoint-analytics: [features.endpoint-analytics]: depends on tenant-attach, which is not enabled; enable [features.tenant-attach] too
            error[dependency] rbac-authority: [features.rbac-authority]: depends on tenant-attach, which is not enabled; enable [features.tenant-attach] too
        "#,
    },
    Case {
        name: "custom settings: defender-reporting below 2303 says to update the site, not to change the environment",
        site: 2207,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            [features.defender-reporting]
            enabled = true
        "#,
        expected: r#"
            error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2207; turn it off (enabled = false) or update the site to 2303
        "#,
    },
    Case {
        name: "custom settings: rbac-authority at exactly 2207 is selected",
        site: 2207,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            [features.rbac-authority]
        "#,
        expected: r#"
            co-management not selected: not enabled in attach.toml
            tenant-attach selected {upload=all}
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority selected {enforce_configmgr_rbac=true}
        "#,
    },
    Case {
        name: "custom settings: an environment conflict says to change the environment",
        site: 2303,
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.endpoint-analytics]
            enabled = true
        "#,
        expected: r#"
            error[unsupported] endpoint-analytics: [features.endpoint-analytics]: Endpoint analytics can't be enabled for Azure China Cloud (china); it is available in public, usgov; turn it off (enabled = false) or change the environment
        "#,
    },
    Case {
        name: "custom settings: every conflict is reported at once",
        site: 2203,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = true
            [features.rbac-authority]
            enabled = true
            [features.defender-reporting]
            enabled = true
        "#,
        expected: r#"
            error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2203; turn it off (enabled = false) or update the site to 2303
            error[unsupported] rbac-authority: [features.rbac-authority]: RBAC authority needs site version 2207 or later; the site is 2203; turn it off (enabled = false) or update the site to 2207
        "#,
    },
    Case {
        name: "a malformed option is reported with every other conflict",
        site: 2203,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = 7
            [features.defender-reporting]
            enabled = true
        "#,
        expected: r#"
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = 7: expected "all" or a collection id such as "PS100012"
            error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2203; turn it off (enabled = false) or update the site to 2303
        "#,
    },
    Case {
        name: "custom settings: a dependent of an unsupported feature is skipped, not a second problem",
        site: 2105,
        config: r#"
            [cloud]
            environment = "usgov"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            [features.endpoint-analytics]
        "#,
        expected: r#"
            error[unsupported] tenant-attach: [features.tenant-attach]: Tenant attach (device upload) needs site version 2107 or later in Azure US Government Cloud; the site is 2105; turn it off (enabled = false) or update the site to 2107
        "#,
    },
    // ---- the China rules ----
    Case {
        name: "China with device upload is a conflict naming China",
        site: 2303,
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
        expected: r#"
            error[unsupported] tenant-attach: [features.tenant-attach]: Tenant attach (device upload) can't be enabled for Azure China Cloud (china); it is available in public, usgov; turn it off (enabled = false) or change the environment
        "#,
    },
    Case {
        name: "China co-management refuses enrollment other than all",
        site: 2303,
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "none"
        "#,
        expected: r#"
            error[validation] co-management: [features.co-management] enrollment = "none": automatic enrollment of all eligible devices is the only option in Azure China Cloud; set enrollment = "all"
        "#,
    },
    Case {
        name: "China co-management with enrollment all is selected",
        site: 2303,
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "all"
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach not selected: not enabled in attach.toml
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority not selected: not enabled in attach.toml
        "#,
    },
    Case {
        name: "China co-management needs 2006 there",
        site: 2005,
        config: r#"
            [cloud]
            environment = "china"
            [attach]
            settings = "custom"
            [features.co-management]
        "#,
        expected: r#"
            error[unsupported] co-management: [features.co-management]: Co-management needs site version 2006 or later in Azure China Cloud; the site is 2005; turn it off (enabled = false) or update the site to 2006
        "#,
    },
    Case {
        name: "co-management at 2005 outside China is selected",
        site: 2005,
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
        "#,
        expected: r#"
            co-management selected {enrollment=all}
            tenant-attach not selected: not enabled in attach.toml
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority not selected: not enabled in attach.toml
        "#,
    },
    // ---- options: unknown keys, types, choices, cross-field rules ----
    Case {
        name: "an invalid option is not repeated as its dependents' dependency errors",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = 5
            [features.endpoint-analytics]
            [features.rbac-authority]
            [features.defender-reporting]
        "#,
        expected: r#"
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = 5: expected "all" or a collection id such as "PS100012"
        "#,
    },
    Case {
        name: "an unknown option key names the known keys",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            uploads = "all"
        "#,
        expected: r#"
            error[invalid-option] tenant-attach: unknown key `uploads` in [features.tenant-attach]: known keys: enabled, upload
        "#,
    },
    Case {
        name: "an option of a plugin that takes none",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            [features.defender-reporting]
            level = 1
        "#,
        expected: r#"
            error[invalid-option] defender-reporting: unknown key `level` in [features.defender-reporting]: it takes no options besides `enabled`
        "#,
    },
    Case {
        name: "a value outside the choices names them",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "some"
        "#,
        expected: r#"
            error[invalid-option] co-management: [features.co-management] enrollment = "some": expected one of "all", "pilot", "none"
        "#,
    },
    Case {
        name: "options of the wrong type, every one at once",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1NOPE1"
            extra = 1
            [features.rbac-authority]
            enforce_configmgr_rbac = "yes"
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = 20
        "#,
        expected: r#"
            error[invalid-option] co-management: [features.co-management] pilot_collection = 20: expected a collection id such as "PS100020"
            error[invalid-option] tenant-attach: unknown key `extra` in [features.tenant-attach]: known keys: enabled, upload
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = "PS1NOPE1": expected "all" or a collection id such as "PS100012"
            error[invalid-option] rbac-authority: [features.rbac-authority] enforce_configmgr_rbac = "yes": expected true or false
        "#,
    },
    Case {
        name: "pilot enrollment without pilot_collection",
        site: 2303,
        config: r#"
            [site]
            path = "site"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
        "#,
        expected: r#"
            error[validation] co-management: [features.co-management] enrollment = "pilot" needs `pilot_collection`, the id of the pilot collection (e.g. "PS100020")
        "#,
    },
    Case {
        name: "pilot enrollment with a pilot collection",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = "PS100102"
        "#,
        expected: r#"
            co-management selected {enrollment=pilot, pilot_collection=PS100102}
            tenant-attach not selected: not enabled in attach.toml
            defender-reporting not selected: not enabled in attach.toml
            endpoint-analytics not selected: not enabled in attach.toml
            rbac-authority not selected: not enabled in attach.toml
        "#,
    },
    Case {
        name: "an unknown plugin and bad options are reported together",
        site: 2303,
        config: r#"
            [attach]
            settings = "custom"
            [features.nope]
            [features.tenant-attach]
            upload = true
        "#,
        expected: r#"
            error[unknown-plugin] nope: [features.nope]: no plugin has the id `nope`; known plugins: co-management, defender-reporting, endpoint-analytics, rbac-authority, tenant-attach (load others with --plugin-dir)
            error[invalid-option] tenant-attach: [features.tenant-attach] upload = true: expected "all" or a collection id such as "PS100012"
        "#,
    },
    // ---- attach.toml itself: serde's checks, before any selection ----
    Case {
        name: "an unknown key in [cloud] names the line and the allowed keys",
        site: 2303,
        config: r#"
            [cloud]
            region = "x"
            [site]
            path = "site"
        "#,
        expected: r#"
            config error: attach.toml: TOML parse error at line 2, column 1
              |
            2 | region = "x"
              | ^^^^^^
            unknown field `region`, expected one of `environment`, `endpoint`, `tenant`, `app`
        "#,
    },
    Case {
        name: "enabled of the wrong type",
        site: 2303,
        config: r#"
            [site]
            path = "site"
            [features.tenant-attach]
            enabled = "yes"
        "#,
        expected: r#"
            config error: attach.toml: [features.tenant-attach] enabled = "yes": expected true or false
        "#,
    },
    Case {
        name: "an unknown environment names the line and the environments",
        site: 2303,
        config: r#"
            [cloud]
            environment = "mars"
            [site]
            path = "site"
        "#,
        expected: r#"
            config error: attach.toml: TOML parse error at line 2, column 15
              |
            2 | environment = "mars"
              |               ^^^^^^
            unknown variant `mars`, expected one of `public`, `usgov`, `china`

        "#,
    },
];

/// Collection references checked against the `small-site` fixture (site PS1, collections
/// PS100100–PS100104) by the one validation: every option that names a collection must name
/// one the site has, reported with the selection's own problems.
struct RefCase {
    name: &'static str,
    config: &'static str,
    expected: &'static str,
}

fn render_references(registry: &Registry, site: &Site, case: &RefCase) -> String {
    let config = parse_config(&trim_indent(case.config), Path::new("")).expect("parses");
    match validate(&config, registry, site) {
        Ok(_) => "ok".to_string(),
        Err(e) => render_problems(&e).join("\n"),
    }
}

#[test]
fn collection_references() {
    let registry = registry();
    let site = Site::open(&common::small_site_fixture()).expect("small-site opens");
    check_table(
        REF_CASES,
        |c| c.name,
        |c| c.expected,
        |c| render_references(&registry, &site, c),
    );
}

const REF_CASES: &[RefCase] = &[
    RefCase {
        name: "an existing upload collection",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
        "#,
        expected: r#"
            ok
        "#,
    },
    RefCase {
        name: "the built-in All Systems collection",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "SMS00001"
        "#,
        expected: r#"
            ok
        "#,
    },
    RefCase {
        name: "a missing upload collection names the site and the ones it has",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1FFFFF"
        "#,
        expected: r#"
            error[collection-reference] tenant-attach.upload: [features.tenant-attach] upload = "PS1FFFFF": site PS1 has no collection PS1FFFFF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
    RefCase {
        name: "every missing collection at once",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1FFFFF"
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = "PS1000FF"
        "#,
        expected: r#"
            error[collection-reference] co-management.pilot_collection: [features.co-management] pilot_collection = "PS1000FF": site PS1 has no collection PS1000FF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
            error[collection-reference] tenant-attach.upload: [features.tenant-attach] upload = "PS1FFFFF": site PS1 has no collection PS1FFFFF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
    RefCase {
        name: "a missing pilot collection is refused even when enrollment is all",
        config: r#"
            [attach]
            settings = "custom"
            [features.co-management]
            enrollment = "all"
            pilot_collection = "PS1000FF"
        "#,
        expected: r#"
            error[collection-reference] co-management.pilot_collection: [features.co-management] pilot_collection = "PS1000FF": site PS1 has no collection PS1000FF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001
        "#,
    },
    RefCase {
        name: "a missing collection of a feature not selected is not checked",
        config: r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            enabled = false
            upload = "PS1FFFFF"
        "#,
        expected: r#"
            ok
        "#,
    },
    RefCase {
        name: "default settings ignore the upload option, so its collection is not checked",
        config: r#"
            [features.tenant-attach]
            upload = "PS1FFFFF"
        "#,
        expected: r#"
            ok

        "#,
    },
];

/// One run lists every conflict: version conflicts, a pilot collection and an upload
/// collection the site does not have, all at once (not one after the other is fixed).
#[test]
fn version_conflicts_and_missing_collections_are_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let site_dir = common::small_site(dir.path(), r#"version = "2203""#);
    let site = Site::open(&site_dir).unwrap();
    let config = parse_config(
        &trim_indent(
            r#"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS1FFFFF"
            [features.rbac-authority]
            [features.defender-reporting]
            [features.co-management]
            enrollment = "pilot"
            pilot_collection = "PS1000FF"
        "#,
        ),
        dir.path(),
    )
    .unwrap();
    let e = validate(&config, &registry(), &site).unwrap_err();
    assert_eq!(
        render_problems(&e),
        [
            "error[unsupported] defender-reporting: [features.defender-reporting]: Microsoft Defender reporting needs site version 2303 or later; the site is 2203; turn it off (enabled = false) or update the site to 2303",
            "error[unsupported] rbac-authority: [features.rbac-authority]: RBAC authority needs site version 2207 or later; the site is 2203; turn it off (enabled = false) or update the site to 2207",
            "error[collection-reference] co-management.pilot_collection: [features.co-management] pilot_collection = \"PS1000FF\": site PS1 has no collection PS1000FF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001",
            "error[collection-reference] tenant-attach.upload: [features.tenant-attach] upload = \"PS1FFFFF\": site PS1 has no collection PS1FFFFF; it has PS100100, PS100101, PS100102, PS100103, PS100104, SMS00001",
        ]
    );
}

/// Every command agrees on what is valid: each case of the selection table and of the
/// collection table, on a copy of `small-site` at the case's version, goes through the use
/// case of check, plan, apply, status, disable and sync, and each refuses it with the same
/// problems or accepts it. (Plan and apply also refuse a site below the wizard's 2111, which
/// check still checks; that gate is not the configuration's, so those cases leave them out.)
#[test]
fn every_command_agrees_on_validity() {
    use cloudattach_core::ops::{self, OpError, Workspace};
    use std::sync::Arc;
    let mut cases: Vec<(&str, u32, &str)> =
        CASES.iter().map(|c| (c.name, c.site, c.config)).collect();
    cases.extend(REF_CASES.iter().map(|c| (c.name, 2303, c.config)));
    let mut compared = 0;
    for (name, version, text) in cases {
        let dir = tempfile::tempdir().unwrap();
        let site_dir = common::small_site(dir.path(), &format!("version = \"{version}\""));
        let Ok(config) = parse_config(&trim_indent(text), dir.path()) else {
            continue; // a file that does not parse is refused before any command runs
        };
        let site = Arc::new(Site::open(&site_dir).unwrap());
        let ws = Workspace::new(config, registry(), site).unwrap();
        let verdict = |r: Result<(), OpError>| match r {
            Ok(()) => "valid".to_string(),
            Err(OpError::Problems(e)) => render_problems(&e).join("\n"),
            Err(e) => format!("not a problem list: {e}"),
        };
        let rec = common::Recorder::default();
        let mut verdicts = vec![
            (
                "check",
                verdict(ops::check::run(&ws, &[], &rec).map(|_| ())),
            ),
            ("status", verdict(ops::status::selection(&ws).map(|_| ()))),
            ("disable", verdict(ops::disable::selection(&ws).map(|_| ()))),
            ("sync", verdict(ops::sync::selection(&ws).map(|_| ()))),
        ];
        if version >= 2111 {
            let options = ops::plan::PlanOptions::default();
            verdicts.push((
                "plan",
                verdict(ops::plan::run(&ws, &options, &rec).map(|_| ())),
            ));
            verdicts.push(("apply", verdict(ops::apply::select(&ws, &rec).map(|_| ()))));
        }
        for (command, v) in &verdicts[1..] {
            assert_eq!(
                v, &verdicts[0].1,
                "case `{name}`: {command} and check disagree"
            );
        }
        compared += 1;
    }
    assert!(compared > 40, "{compared} cases compared");
}

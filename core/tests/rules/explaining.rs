//! `explain` as tables: every device of the `small-site` fixture under a configuration, one
//! line each (uploaded, co-management class and scheduling, Endpoint analytics, Defender),
//! worked out by hand from the fixture's README; and the authorization chain over its whole
//! matrix (RBAC authority × Intune role × site user × site role × collection scope), each cell's
//! decision and refusing link computed by an independent restatement of the rule.

use super::common;

use cloudattach_core::Site;
use cloudattach_core::access::{
    AdminUser, AuthorityInputs, Caller, DiscoveredUser, SecurityRole, SiteRbac, Target, decide,
};
use cloudattach_core::ops::explain::{self, AccessQuery};
use cloudattach_core::ops::{OpError, Workspace};
use cloudattach_sdk::actions::{CMPIVOT, ROLE_HELP_DESK_OPERATOR, ROLE_READ_ONLY_OPERATOR};
use common::{check_table, parse_config, registry, small_site, snapshot};
use serde_json::Value;
use std::sync::Arc;

fn workspace(dir: &std::path::Path, site: &str, config: &str) -> Workspace {
    small_site(dir, site);
    let config = parse_config(&common::trim_indent(config), dir).expect("parses");
    let site = Site::open(&config.site_dir).expect("the site opens");
    Workspace::new(config, registry(), Arc::new(site)).expect("a workspace")
}

struct Case {
    name: &'static str,
    config: &'static str,
    expected: &'static str,
}

fn yes(v: &Value, key: &str) -> &'static str {
    if v[key].as_bool() == Some(true) {
        "yes"
    } else {
        "no"
    }
}

fn render(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(dir.path(), "", case.config);
    let before = snapshot(dir.path());
    let mut out = vec![];
    for id in 100..=115 {
        let e = explain::device(&ws, id).expect("every fixture device explains");
        let v = serde_json::to_value(&e).unwrap();
        out.push(format!(
            "{id} up={} cm={} sched={} ea={} def={}",
            yes(&v["uploaded"], "value"),
            v["co_management"]["class"].as_str().unwrap(),
            yes(&v["co_management"], "scheduled"),
            yes(&v["endpoint_analytics"], "eligible"),
            yes(&v["defender"], "uploaded"),
        ));
    }
    assert_eq!(snapshot(dir.path()), before, "explain changed files");
    out.join("\n")
}

#[test]
fn explain_device() {
    let cases = [
        Case {
            name: "default settings: every client uploaded, enrollment all",
            config: r#"
                [site]
                path = "site"
                [cloud]
                tenant = "contoso.example"
                [attach]
                settings = "default"
            "#,
            expected: "
                100 up=yes cm=eligible sched=yes ea=yes def=no
                101 up=yes cm=eligible sched=yes ea=yes def=no
                102 up=yes cm=needsOsUpdate sched=no ea=yes def=no
                103 up=yes cm=eligible sched=yes ea=no def=no
                104 up=yes cm=ineligible sched=no ea=no def=no
                105 up=yes cm=ineligible sched=no ea=no def=no
                106 up=yes cm=ineligible sched=no ea=yes def=no
                107 up=yes cm=eligibleButNotAzureAdJoined sched=no ea=yes def=no
                108 up=yes cm=comanaged sched=no ea=yes def=no
                109 up=no cm=ineligible sched=no ea=no def=no
                110 up=yes cm=ineligible sched=no ea=yes def=no
                111 up=yes cm=ineligible sched=no ea=no def=no
                112 up=no cm=ineligible sched=no ea=no def=no
                113 up=yes cm=eligible sched=yes ea=no def=no
                114 up=yes cm=eligible sched=yes ea=yes def=no
                115 up=yes cm=needsOsUpdate sched=no ea=yes def=no
            ",
        },
        Case {
            name: "upload collection PS100102 and pilot PS100100: the limiting collection cuts 105",
            config: r#"
                [site]
                path = "site"
                [cloud]
                tenant = "contoso.example"
                [attach]
                settings = "custom"
                [features.tenant-attach]
                upload = "PS100102"
                [features.endpoint-analytics]
                [features.co-management]
                enrollment = "pilot"
                pilot_collection = "PS100100"
            "#,
            expected: "
                100 up=yes cm=eligible sched=yes ea=yes def=no
                101 up=yes cm=eligible sched=yes ea=yes def=no
                102 up=yes cm=needsOsUpdate sched=no ea=yes def=no
                103 up=yes cm=eligible sched=no ea=no def=no
                104 up=yes cm=ineligible sched=no ea=no def=no
                105 up=no cm=ineligible sched=no ea=no def=no
                106 up=no cm=ineligible sched=no ea=no def=no
                107 up=no cm=eligibleButNotAzureAdJoined sched=no ea=no def=no
                108 up=no cm=comanaged sched=no ea=no def=no
                109 up=no cm=ineligible sched=no ea=no def=no
                110 up=no cm=ineligible sched=no ea=no def=no
                111 up=no cm=ineligible sched=no ea=no def=no
                112 up=no cm=ineligible sched=no ea=no def=no
                113 up=yes cm=eligible sched=yes ea=no def=no
                114 up=no cm=eligible sched=no ea=no def=no
                115 up=no cm=needsOsUpdate sched=no ea=no def=no
            ",
        },
    ];
    check_table(&cases, |c| c.name, |c| c.expected, render);
}

#[test]
fn a_device_explains_its_rules_with_the_collection_path_and_an_unknown_id_is_input() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(
        dir.path(),
        "",
        r#"
            [site]
            path = "site"
            [cloud]
            tenant = "contoso.example"
            [attach]
            settings = "custom"
            [features.tenant-attach]
            upload = "PS100102"
            [features.co-management]
        "#,
    );
    let v = serde_json::to_value(explain::device(&ws, 105).unwrap()).unwrap();
    assert_eq!(v["name"], "SERVER");
    assert_eq!(
        v["uploaded"]["reason"],
        "not in the upload collection PS100102 (Tenant Attach Upload): through the included \
         collection PS100100 (Finance), but cut by the limiting collection PS100103 (All \
         Workstations), which does not hold it"
    );
    assert_eq!(v["co_management"]["class"], "ineligible");
    assert_eq!(
        v["co_management"]["reason"],
        "a server OS: servers cannot be co-managed"
    );
    assert_eq!(v["endpoint_analytics"]["feature_enabled"], false);
    for key in ["value", "reason"] {
        assert!(v["uploaded"].get(key).is_some(), "uploaded.{key}");
    }
    for key in ["eligible", "reason"] {
        assert!(v["endpoint_analytics"].get(key).is_some(), "{key}");
    }
    for key in ["uploaded", "reason"] {
        assert!(v["defender"].get(key).is_some(), "{key}");
    }
    let v = serde_json::to_value(explain::device(&ws, 104).unwrap()).unwrap();
    assert_eq!(
        v["uploaded"]["reason"],
        "in the upload collection PS100102 (Tenant Attach Upload): a direct member"
    );
    match explain::device(&ws, 999) {
        Err(e @ OpError::Input(_)) => {
            assert!(
                e.to_string().contains("no device has the resource id 999"),
                "{e}"
            )
        }
        other => panic!("expected an input error, got {other:?}"),
    }
}

/// The dimensions of one cell of the authorization matrix.
#[derive(Debug, Clone, Copy)]
struct Cell {
    enforce: bool,
    toggle: bool,
    /// 0: Help Desk Operator, 1: Read Only Operator, 2: no Intune role.
    intune: usize,
    /// 0: discovered, 1: not discovered, 2: discovered with another object id, 3: discovery off.
    mapping: usize,
    /// Whether the site role grants Run CMPivot.
    site_role: bool,
    /// Whether the device is in the assigned collection.
    in_scope: bool,
}

/// The rule, restated: Intune first; then, unless Intune alone is the authority (checkbox
/// cleared and toggle on), the site user, the site role, the collection scope.
fn oracle(c: Cell) -> (&'static str, Option<&'static str>) {
    let authority = if !c.enforce && c.toggle {
        "intune"
    } else {
        "configmgr+intune"
    };
    let refused = if c.intune != 0 {
        Some("intune-role")
    } else if authority == "intune" {
        None
    } else if c.mapping != 0 {
        Some("site-user")
    } else if !c.site_role {
        Some("site-role")
    } else if !c.in_scope {
        Some("collection-scope")
    } else {
        None
    };
    (authority, refused)
}

const OBJECT_ID: &str = "c0257050-0000-4000-9000-000000000004";
const TENANT_ID: &str = "c0257050-0000-4000-8000-000000000001";

fn rbac(c: Cell) -> SiteRbac {
    let mut users = vec![];
    if c.mapping != 1 {
        users.push(DiscoveredUser {
            upn: "helpdesk@contoso.example".into(),
            object_id: if c.mapping == 2 {
                "c0257050-0000-4000-9000-00000000ffff".into()
            } else {
                OBJECT_ID.into()
            },
            tenant_id: TENANT_ID.into(),
            source: "entra".into(),
        });
    }
    SiteRbac {
        discovered_users: users,
        security_roles: vec![SecurityRole {
            name: "Help Desk".into(),
            permissions: if c.site_role {
                vec!["Read".into(), "Run CMPivot".into()]
            } else {
                vec!["Read".into(), "Read Resource".into()]
            },
        }],
        administrative_users: vec![AdminUser {
            upn: "helpdesk@contoso.example".into(),
            roles: vec!["Help Desk".into()],
            // Device 100 is in PS100100 (Finance); 102 is not.
            collections: vec!["PS100100".into()],
        }],
    }
}

#[test]
fn the_authorization_matrix_refuses_at_the_first_broken_link() {
    let dir = tempfile::tempdir().unwrap();
    let on = Site::open(&small_site(&dir.path().join("on"), "")).unwrap();
    let off = Site::open(&small_site(
        &dir.path().join("off"),
        "entra_user_discovery = false\nad_user_discovery = false",
    ))
    .unwrap();
    let decl = cloudattach_plugin_tenant_attach::cmpivot();
    let mut cells = 0;
    for enforce in [true, false] {
        for toggle in [true, false] {
            for intune in 0..3 {
                for mapping in 0..4 {
                    for site_role in [true, false] {
                        for in_scope in [true, false] {
                            let c = Cell {
                                enforce,
                                toggle,
                                intune,
                                mapping,
                                site_role,
                                in_scope,
                            };
                            let roles = match intune {
                                0 => vec![ROLE_HELP_DESK_OPERATOR.to_string()],
                                1 => vec![ROLE_READ_ONLY_OPERATOR.to_string()],
                                _ => vec![],
                            };
                            let caller = Caller {
                                upn: "HelpDesk@contoso.example".into(),
                                object_id: Some(OBJECT_ID.into()),
                                tenant_id: Some(TENANT_ID.into()),
                                roles: Some(roles),
                            };
                            let site = if mapping == 3 { &off } else { &on };
                            let d = decide(
                                site,
                                &rbac(c),
                                AuthorityInputs {
                                    enforce_configmgr_rbac: enforce,
                                    use_intune_rbac: Some(toggle),
                                },
                                &caller,
                                &decl,
                                &Target::Device(if in_scope { 100 } else { 102 }),
                            );
                            let (authority, refused) = oracle(c);
                            assert_eq!(
                                (d.authority, d.refused_by, d.allowed),
                                (authority, refused, refused.is_none()),
                                "{c:?}: {:#?}",
                                d.chain
                            );
                            assert_eq!(d.authorized().is_some(), d.allowed);
                            let names: Vec<&str> = d.chain.iter().map(|l| l.link).collect();
                            assert_eq!(
                                names,
                                [
                                    "intune-role",
                                    "rbac-authority",
                                    "site-user",
                                    "site-role",
                                    "collection-scope"
                                ]
                            );
                            cells += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(cells, 192);
}

#[test]
fn explain_access_reads_the_sites_rbac_file_and_names_the_refusing_link() {
    let dir = tempfile::tempdir().unwrap();
    let ws = workspace(
        dir.path(),
        "",
        r#"
            [site]
            path = "site"
            [cloud]
            tenant = "contoso.example"
            [attach]
            settings = "default"
        "#,
    );
    let rbac = serde_json::to_string(&rbac(Cell {
        enforce: true,
        toggle: false,
        intune: 0,
        mapping: 0,
        site_role: true,
        in_scope: true,
    }))
    .unwrap();
    std::fs::write(ws.site.dir.join("rbac.json"), rbac).unwrap();
    let q = |user: &str, device: i64, roles: Option<&str>| AccessQuery {
        user: user.into(),
        resource_id: device,
        action: CMPIVOT.into(),
        roles: roles.map(|r| vec![r.to_string()]),
        identity: None,
        use_intune_rbac: None,
        connector: None,
    };
    let allowed = explain::access(
        &ws,
        &q(
            "helpdesk@contoso.example",
            100,
            Some(ROLE_HELP_DESK_OPERATOR),
        ),
    )
    .unwrap();
    assert!(allowed.decision.allowed && allowed.feature == "tenant-attach");
    let out = explain::access(&ws, &q("helpdesk@contoso.example", 102, None)).unwrap();
    assert_eq!(out.decision.refused_by, Some("collection-scope"));
    assert!(!out.complete);
    let cloud_only = explain::access(&ws, &q("cloudonly@contoso.example", 100, None)).unwrap();
    assert_eq!(cloud_only.decision.refused_by, Some("site-user"));
    let v = serde_json::to_value(&cloud_only).unwrap();
    for key in ["allowed", "authority", "refused_by", "chain"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    // A broken rbac.json is input naming the file; an undeclared action too.
    std::fs::write(
        ws.site.dir.join("rbac.json"),
        r#"{"administrative_users":[{"upn":"x@y","roles":["Nobody"],"collections":[]}]}"#,
    )
    .unwrap();
    let e = explain::access(&ws, &q("x@y", 100, None)).unwrap_err();
    assert!(
        e.is_input() && e.to_string().contains("rbac.json") && e.to_string().contains("Nobody"),
        "{e}"
    );
    let mut bad = q("x@y", 100, None);
    bad.action = "launch".into();
    let e = explain::access(&ws, &bad).unwrap_err();
    assert!(
        e.is_input()
            && e.to_string()
                .contains("resource-explorer, cmpivot, cmpivot-collection, timeline")
    );
}

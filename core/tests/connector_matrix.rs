//! The authorization matrix at the site's connector: for every cell of RBAC authority (the
//! rbac-authority checkbox × the tenant's toggle) × site user (discovered / not discovered /
//! another object id / user discovery off) × site role (grants the action's site permissions or
//! not) × collection scope (the device in an assigned collection or not) × action
//! (`resource-explorer`, `cmpivot`), the connector's answer (`ops::connector::answer`, the very
//! function `connect` runs for each action it takes) and `explain access` take the same
//! decision: `succeeded` exactly when explain allows, otherwise `unauthorized` with the link
//! explain names and no data. Each cell is also checked against the rule restated.
//!
//! The Intune role is the cloud's link: a request it refuses never reaches the site, so here
//! only explain's side of it is asserted (Read Only Operator: refused by `intune-role` in every
//! cell).

// Link the built-in plugins so that `Registry::with_static_plugins` finds their registrations.
use cloudattach_plugin_co_management as _;
use cloudattach_plugin_defender_reporting as _;
use cloudattach_plugin_endpoint_analytics as _;
use cloudattach_plugin_rbac_authority as _;
use cloudattach_plugin_tenant_attach as _;

use cloudattach_core::ops::explain::{self, AccessQuery};
use cloudattach_core::ops::{Workspace, connector};
use cloudattach_core::{Config, Registry, Site, selection};
use cloudattach_sdk::ActionResult;
use cloudattach_sdk::actions::{
    ActionDoc, ActionStatus, CMPIVOT, RESOURCE_EXPLORER, ROLE_HELP_DESK_OPERATOR,
    ROLE_READ_ONLY_OPERATOR,
};
use serde_json::{Map, Value, json};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const UPN: &str = "helpdesk@contoso.example";
const OBJECT_ID: &str = "c0257050-0000-4000-9000-000000000004";
const OTHER_OBJECT_ID: &str = "c0257050-0000-4000-9000-00000000ffff";
const TENANT_ID: &str = "c0257050-0000-4000-8000-000000000001";
/// In PS100100 (Finance), the collection assigned to the person.
const IN_SCOPE: i64 = 100;
/// In no collection PS100100 holds.
const OUT_OF_SCOPE: i64 = 102;

/// How the person maps to a site user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    Discovered,
    NotDiscovered,
    AnotherObjectId,
    DiscoveryOff,
}

#[derive(Debug, Clone, Copy)]
struct Cell {
    enforce: bool,
    toggle: bool,
    mapping: Mapping,
    site_role: bool,
    in_scope: bool,
    action: &'static str,
}

/// The rule, restated: unless Intune alone is the authority (checkbox cleared and toggle on),
/// the site user, the site role, the collection scope, in order.
fn oracle(c: Cell) -> (&'static str, Option<&'static str>) {
    if !c.enforce && c.toggle {
        return ("intune", None);
    }
    let refused = if c.mapping != Mapping::Discovered {
        Some("site-user")
    } else if !c.site_role {
        Some("site-role")
    } else if !c.in_scope {
        Some("collection-scope")
    } else {
        None
    };
    ("configmgr+intune", refused)
}

/// A copy of the hand-written `small-site` fixture in `dir/site`, user discovery on or off.
fn small_site(dir: &Path, discovery: bool) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/fixtures/small-site");
    let to = dir.join("site");
    fs::create_dir_all(&to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    if !discovery {
        let path = to.join("site.toml");
        let text = fs::read_to_string(&path)
            .unwrap()
            .replace(
                "entra_user_discovery = true",
                "entra_user_discovery = false",
            )
            .replace("ad_user_discovery = true", "ad_user_discovery = false");
        assert!(text.contains("ad_user_discovery = false"), "{text}");
        fs::write(&path, text).unwrap();
    }
    to
}

/// A workspace over its own copy of the site, with the rbac-authority checkbox as given.
fn workspace(dir: &Path, enforce: bool, discovery: bool) -> Workspace {
    small_site(dir, discovery);
    let text = format!(
        "[site]\npath = \"site\"\n\n[cloud]\ntenant = \"contoso.example\"\n\n\
         [attach]\nsettings = \"custom\"\n\n[features.tenant-attach]\nupload = \"all\"\n\n\
         [features.rbac-authority]\nenforce_configmgr_rbac = {enforce}\n"
    );
    let config = Config::parse(&text, &dir.join("attach.toml"), dir).expect("attach.toml parses");
    let site = Site::open(&config.site_dir).expect("the site opens");
    let registry = Registry::with_static_plugins().expect("the built-in plugins register");
    Workspace::new(config, registry, Arc::new(site)).expect("a workspace")
}

/// The site's `rbac.json` for a cell: the person discovered (or not, or under another object
/// id), an administrative user on PS100100 whose role grants the action's site permissions,
/// or only `Read`.
fn rbac_json(c: Cell, site_permissions: &[String]) -> Value {
    let users = match c.mapping {
        Mapping::NotDiscovered => json!([]),
        Mapping::AnotherObjectId => json!([{
            "upn": UPN, "object_id": OTHER_OBJECT_ID, "tenant_id": TENANT_ID, "source": "entra"
        }]),
        Mapping::Discovered | Mapping::DiscoveryOff => json!([{
            "upn": UPN, "object_id": OBJECT_ID, "tenant_id": TENANT_ID, "source": "entra"
        }]),
    };
    let permissions: Vec<String> = if c.site_role {
        site_permissions.to_vec()
    } else {
        vec!["Read".into()]
    };
    json!({
        "discovered_users": users,
        "security_roles": [{"name": "Help Desk", "permissions": permissions}],
        "administrative_users": [{
            "upn": UPN, "roles": ["Help Desk"], "collections": ["PS100100"]
        }],
    })
}

/// The action as the cloud hands it to the connector.
fn action_doc(c: Cell, hierarchy_id: &str, device: i64) -> ActionDoc {
    let mut doc = ActionDoc::new(
        format!("act-{}", c.action),
        c.action,
        hierarchy_id,
        UPN,
        ActionStatus::Running,
        "2026-01-01T00:00:00Z",
    );
    doc.feature = "tenant-attach".into();
    doc.resource_id = Some(device);
    doc.requested_by_id = OBJECT_ID.into();
    doc.tenant_id = TENANT_ID.into();
    doc.use_intune_rbac = c.toggle;
    let mut parameters = Map::new();
    if c.action == CMPIVOT {
        parameters.insert("query".into(), json!("Device | project name, client"));
    }
    doc.parameters = parameters;
    doc
}

#[test]
fn the_connector_and_explain_access_take_the_same_decision_in_every_cell() {
    let dir = tempfile::tempdir().unwrap();
    let mut cells = 0;
    for enforce in [true, false] {
        for discovery in [true, false] {
            let ws = workspace(
                &dir.path().join(format!("{enforce}-{discovery}")),
                enforce,
                discovery,
            );
            let selection = ws.select().expect("the configuration is valid");
            let host = selection::host_for(&ws.site, &ws.config, &selection);
            let hierarchy_id = ws.site.info.hierarchy_id.clone();
            let mappings: &[Mapping] = if discovery {
                &[
                    Mapping::Discovered,
                    Mapping::NotDiscovered,
                    Mapping::AnotherObjectId,
                ]
            } else {
                &[Mapping::DiscoveryOff]
            };
            for toggle in [true, false] {
                for &mapping in mappings {
                    for site_role in [true, false] {
                        for in_scope in [true, false] {
                            for action in [RESOURCE_EXPLORER, CMPIVOT] {
                                let c = Cell {
                                    enforce,
                                    toggle,
                                    mapping,
                                    site_role,
                                    in_scope,
                                    action,
                                };
                                let decl = ws
                                    .registry
                                    .iter()
                                    .flat_map(|p| &p.manifest.actions)
                                    .find(|a| a.id == action)
                                    .expect("tenant-attach declares it")
                                    .clone();
                                fs::write(
                                    ws.site.dir.join("rbac.json"),
                                    rbac_json(c, &decl.site_permissions).to_string(),
                                )
                                .unwrap();
                                let device = if in_scope { IN_SCOPE } else { OUT_OF_SCOPE };

                                let answer = connector::answer(
                                    &ws,
                                    &selection,
                                    &host,
                                    "test",
                                    &action_doc(c, &hierarchy_id, device),
                                );
                                let query = |role: &str| AccessQuery {
                                    user: UPN.into(),
                                    resource_id: device,
                                    action: action.into(),
                                    roles: Some(vec![role.into()]),
                                    identity: Some((OBJECT_ID.into(), TENANT_ID.into())),
                                    use_intune_rbac: Some(toggle),
                                    connector: None,
                                };
                                let explained =
                                    explain::access(&ws, &query(ROLE_HELP_DESK_OPERATOR))
                                        .expect("explain access");
                                let d = &explained.decision;
                                assert!(explained.complete, "{c:?}");

                                // The connector agrees with explain.
                                let code = answer.error.as_ref().map(|e| e.code.as_str());
                                if d.allowed {
                                    assert_eq!(
                                        (answer.status, code),
                                        (ActionStatus::Succeeded, None),
                                        "{c:?}: {answer:?}"
                                    );
                                    match (&answer.result, action) {
                                        (
                                            Some(ActionResult::Document { document }),
                                            RESOURCE_EXPLORER,
                                        ) => {
                                            assert_eq!(
                                                document["inventory"]["resource_id"], device,
                                                "{c:?}"
                                            );
                                        }
                                        (Some(ActionResult::Table { rows, .. }), CMPIVOT) => {
                                            assert_eq!(rows.len(), 1, "{c:?}: {rows:?}");
                                        }
                                        other => panic!("{c:?}: {other:?}"),
                                    }
                                } else {
                                    assert_eq!(
                                        (answer.status, code),
                                        (ActionStatus::Unauthorized, d.refused_by),
                                        "{c:?}: {answer:?}"
                                    );
                                    assert!(
                                        answer.result.is_none(),
                                        "{c:?}: a refusal carries data"
                                    );
                                }
                                assert_eq!(answer.authority, d.authority, "{c:?}");

                                // Both agree with the rule.
                                assert_eq!(
                                    (d.authority, d.refused_by),
                                    oracle(c),
                                    "{c:?}: {:#?}",
                                    d.chain
                                );

                                // The Intune role is the cloud's link; explain names it first.
                                let read_only =
                                    explain::access(&ws, &query(ROLE_READ_ONLY_OPERATOR))
                                        .expect("explain access");
                                assert_eq!(
                                    (read_only.decision.allowed, read_only.decision.refused_by),
                                    (false, Some("intune-role")),
                                    "{c:?}"
                                );
                                cells += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    // 2 checkbox × 2 toggle × 4 site users × 2 site roles × 2 scopes × 2 actions.
    assert_eq!(cells, 128);
}

#[test]
fn the_connector_serves_an_action_only_through_the_feature_the_cloud_authorized_it_for() {
    let dir = tempfile::tempdir().unwrap();
    // Intune alone decides (checkbox cleared, toggle on): the site's RBAC is not in the way.
    let ws = workspace(dir.path(), false, true);
    let selection = ws.select().expect("the configuration is valid");
    let host = selection::host_for(&ws.site, &ws.config, &selection);
    let c = Cell {
        enforce: false,
        toggle: true,
        mapping: Mapping::Discovered,
        site_role: true,
        in_scope: true,
        action: RESOURCE_EXPLORER,
    };
    let mut doc = action_doc(c, &ws.site.info.hierarchy_id, IN_SCOPE);
    let served = connector::answer(&ws, &selection, &host, "test", &doc);
    assert_eq!(served.status, ActionStatus::Succeeded, "{served:?}");
    // The cloud authorized it for another feature: this site's tenant-attach does not serve it.
    doc.feature = "some-other-feature".into();
    let refused = connector::answer(&ws, &selection, &host, "test", &doc);
    assert_eq!(refused.status, ActionStatus::Failed);
    assert_eq!(
        refused.error.as_ref().map(|e| e.code.as_str()),
        Some("action-not-served")
    );
    assert!(refused.result.is_none());
}

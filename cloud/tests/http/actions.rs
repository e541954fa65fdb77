//! Cloud actions: Intune roles and the seeded users, declared actions, asking, the connector's
//! poll, answers, timeouts and health.

use crate::common::*;
use cloudattach_cloud::ServeOptions;
use cloudattach_cloud::seed::*;
use cloudattach_model::actions::*;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn hpath(rest: &str) -> String {
    format!("/api/v1/hierarchies/{HID}{rest}")
}

/// The extension feature that declares a collection action in these tests.
const EXT: &str = "collection-summary";

/// A started cloud (no auto-approve: every user signs in with the development password), its
/// admin, and the consented read/write app the hierarchy is attached with.
struct Env {
    c: Cloud,
    admin: String,
    app: String,
}

fn decls() -> (Value, Value) {
    let ta = DeclaredActions::new(vec![
        ActionDecl::new(
            RESOURCE_EXPLORER,
            "Resource explorer",
            ActionTarget::Device,
            &[SITE_READ, SITE_READ_RESOURCE],
            &[INTUNE_VIEW_RESOURCE_EXPLORER],
        ),
        ActionDecl::new(
            CMPIVOT,
            "CMPivot",
            ActionTarget::Device,
            &[SITE_READ, SITE_RUN_CMPIVOT],
            &[INTUNE_RUN_CMPIVOT],
        )
        .parameter(ActionParameter::new(
            "query",
            ParameterKind::String,
            true,
            "a query",
        )),
    ]);
    let ext = DeclaredActions::new(vec![ActionDecl::new(
        "collection-report",
        "Collection report",
        ActionTarget::Collection,
        &[SITE_READ],
        &[],
    )]);
    (
        serde_json::to_value(ta).unwrap(),
        serde_json::to_value(ext).unwrap(),
    )
}

async fn env_with(mut o: ServeOptions) -> Env {
    o.auto_approve = None;
    let c = start_with(o).await;
    let admin = c.sign_in(CONTOSO, "admin@contoso.example").await;
    let (_, app) = write_app(&c, &admin, "ConfigMgr").await;
    c.onboard(&app, &["tenant-attach", EXT]).await;
    let (s, v) = c
        .post(&app, &hpath("/upload/devices"), device_batch(1..4))
        .await;
    assert_eq!(s, 200, "{v}");
    let (ta, ext) = decls();
    let (s, v) = c
        .put(&app, &hpath("/features/tenant-attach/actions"), ta)
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = c
        .put(&app, &hpath(&format!("/features/{EXT}/actions")), ext)
        .await;
    assert_eq!(s, 200, "{v}");
    Env { c, admin, app }
}

async fn env() -> Env {
    env_with(opts()).await
}

impl Env {
    async fn user(&self, local: &str) -> String {
        self.c
            .sign_in(CONTOSO, &format!("{local}@contoso.example"))
            .await
    }

    /// Asks for `action` on device `rid`; returns (status, answer).
    async fn ask(&self, tok: &str, rid: i64, action: &str, params: Value) -> (u16, Value) {
        self.c
            .post(
                tok,
                &hpath(&format!("/devices/{rid}/actions")),
                json!({"action": action, "parameters": params}),
            )
            .await
    }

    async fn ask_ok(&self, tok: &str) -> String {
        let (s, v) = self.ask(tok, 1, RESOURCE_EXPLORER, json!({})).await;
        assert_eq!((s, v["status"].as_str()), (202, Some("pending")), "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn poll(&self, tok: &str, connector: &str, wait: u64) -> (u16, Value) {
        self.c
            .get(
                tok,
                &hpath(&format!(
                    "/connector/actions?connector_id={connector}&wait={wait}"
                )),
            )
            .await
    }

    async fn action(&self, id: &str) -> Value {
        let (s, v) = self
            .c
            .get(&self.admin, &format!("/api/v1/actions/{id}"))
            .await;
        assert_eq!(s, 200, "{v}");
        v
    }

    /// The authority recorded for an action the admin asks now.
    async fn authority(&self) -> Value {
        let id = self.ask_ok(&self.admin).await;
        self.action(&id).await["authority"].clone()
    }

    async fn answer(&self, tok: &str, id: &str, body: Value) -> (u16, Value) {
        self.c
            .post(tok, &format!("/api/v1/actions/{id}/answer"), body)
            .await
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

fn message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

fn table() -> Value {
    serde_json::to_value(ActionAnswer::succeeded(
        "conn-a",
        AUTHORITY_BOTH,
        serde_json::from_value(json!({"kind":"table","columns":["a"],"rows":[[1]]})).unwrap(),
    ))
    .unwrap()
}

#[tokio::test]
async fn seeded_users_have_deterministic_ids_and_intune_roles() {
    let mut o = opts();
    o.auto_approve = None;
    let c = start_with(o).await;
    for (tenant, tid, domain) in [
        (CONTOSO, CONTOSO_TENANT_ID, CONTOSO_DOMAIN),
        (FABRIKAM, FABRIKAM_TENANT_ID, FABRIKAM_DOMAIN),
    ] {
        let tok = c.sign_in(tenant, &format!("helpdesk@{domain}")).await;
        let (s, me) = c.get(&tok, "/v1.0/me").await;
        assert_eq!(s, 200, "{me}");
        assert_eq!(
            me["id"].as_str(),
            seeded_user_object_id(tid, "helpdesk").as_deref()
        );
        let (s, v) = c.get(&tok, "/api/v1/roleAssignments").await;
        assert_eq!(s, 200, "{v}");
        let got: Vec<(String, String, Value)> = v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["upn"].as_str().unwrap().to_string(),
                    a["user_id"].as_str().unwrap().to_string(),
                    a["roles"].clone(),
                )
            })
            .collect();
        let want: Vec<(String, String, Value)> = [
            ("cloudonly", ROLE_HELP_DESK_OPERATOR),
            ("helpdesk", ROLE_HELP_DESK_OPERATOR),
            ("readonly", ROLE_READ_ONLY_OPERATOR),
        ]
        .iter()
        .map(|(l, r)| {
            (
                format!("{l}@{domain}"),
                seeded_user_object_id(tid, l).unwrap(),
                json!([r]),
            )
        })
        .collect();
        assert_eq!(got, want);
    }
    assert_eq!(
        seeded_user_object_id(CONTOSO_TENANT_ID, "admin").as_deref(),
        Some("c0257050-0000-4000-9000-000000000001")
    );
    let banner = describe(c.running.seeded_tenants());
    for u in [
        "helpdesk@contoso.example",
        "readonly@",
        "cloudonly@",
        "Help Desk Operator",
    ] {
        assert!(banner.contains(u), "{u}: {banner}");
    }
    c.running.shutdown().await;
}

#[tokio::test]
async fn intune_roles_are_listed_and_assigned_by_administrators_only() {
    let mut o = opts();
    o.auto_approve = None;
    let c = start_with(o).await;
    let admin = c.sign_in(CONTOSO, "admin@contoso.example").await;
    let helpdesk = c.sign_in(CONTOSO, "helpdesk@contoso.example").await;
    let (s, v) = c.get(&helpdesk, "/api/v1/roles").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["value"][0]["name"], ROLE_HELP_DESK_OPERATOR);
    assert!(
        v["value"][0]["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!(INTUNE_INITIATE))
    );
    assert_eq!(v["value"][1]["name"], ROLE_READ_ONLY_OPERATOR);
    assert_eq!(c.get(&c.reader().await, "/api/v1/roles").await.0, 403);

    let path = "/api/v1/users/user@contoso.example/intuneRoles";
    let (s, v) = c
        .put(&helpdesk, path, json!({"roles": [ROLE_HELP_DESK_OPERATOR]}))
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(message(&v).contains("Intune Administrator"), "{v}");
    let (s, v) = c.put(&admin, path, json!({"roles": ["Root"]})).await;
    assert_eq!(s, 400, "{v}");
    assert!(
        message(&v).contains(ROLE_HELP_DESK_OPERATOR) && message(&v).contains("\"Root\""),
        "{v}"
    );
    let (s, v) = c
        .put(&admin, path, json!({"roles": [ROLE_READ_ONLY_OPERATOR]}))
        .await;
    assert_eq!(s, 200, "{v}");
    let user_id = seeded_user_object_id(CONTOSO_TENANT_ID, "user").unwrap();
    assert_eq!(
        v,
        json!({"user_id": user_id, "upn": "user@contoso.example", "roles": [ROLE_READ_ONLY_OPERATOR]})
    );
    // By object id as well; an empty list takes every role away.
    let (s, v) = c
        .put(
            &admin,
            &format!("/api/v1/users/{user_id}/intuneRoles"),
            json!({"roles": []}),
        )
        .await;
    assert_eq!((s, &v["roles"]), (200, &json!([])), "{v}");
    // Another tenant's user is not found, by UPN or by object id.
    for u in [
        "user@fabrikam.example".to_string(),
        seeded_user_object_id(FABRIKAM_TENANT_ID, "user").unwrap(),
    ] {
        let (s, v) = c
            .put(
                &admin,
                &format!("/api/v1/users/{u}/intuneRoles"),
                json!({"roles": []}),
            )
            .await;
        assert_eq!(s, 404, "{u}: {v}");
    }
    // The assignments list pages like every list.
    let (s, v) = c.get(&admin, "/api/v1/roleAssignments?$top=2").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["@odata.count"], 3, "{v}");
    assert_eq!(v["value"].as_array().unwrap().len(), 2, "{v}");
    assert!(v["@odata.nextLink"].as_str().is_some(), "{v}");
    c.running.shutdown().await;
}

#[tokio::test]
async fn declared_actions_are_validated_and_belong_to_one_feature() {
    let e = env().await;
    let c = &e.c;
    let (ta, _) = decls();
    // Idempotent: the same declarations again answer the stored list.
    let (s, v) = c
        .put(
            &e.app,
            &hpath("/features/tenant-attach/actions"),
            ta.clone(),
        )
        .await;
    assert_eq!((s, &v), (200, &ta));
    assert_eq!(
        c.get(&e.admin, &hpath("/features/tenant-attach/actions"))
            .await,
        (200, ta.clone())
    );
    let (s, v) = c.get(&e.admin, &hpath("/actions/declared")).await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<(&str, &str)> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["feature"].as_str().unwrap(), d["id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            (EXT, "collection-report"),
            ("tenant-attach", RESOURCE_EXPLORER),
            ("tenant-attach", CMPIVOT)
        ]
    );
    // A feature that is not enabled declares nothing.
    let (s, v) = c
        .put(
            &e.app,
            &hpath("/features/co-management/actions"),
            json!({"value": []}),
        )
        .await;
    assert_eq!(s, 404, "{v}");
    // Each declaration is checked; the message names it.
    let mut bad = ta.clone();
    bad["value"][1]["timeout_secs"] = json!(0);
    let (s, v) = c
        .put(&e.app, &hpath("/features/tenant-attach/actions"), bad)
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("cmpivot"), "{v}");
    let many: Vec<Value> = (0..=MAX_ACTIONS_PER_FEATURE)
        .map(|i| {
            serde_json::to_value(ActionDecl::new(
                format!("a{i}"),
                "A",
                ActionTarget::Device,
                &[],
                &[],
            ))
            .unwrap()
        })
        .collect();
    let (s, v) = c
        .put(
            &e.app,
            &hpath("/features/tenant-attach/actions"),
            json!({ "value": many }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // An id another enabled feature declares: 409 naming that feature; nothing changed.
    let (s, v) = c
        .put(
            &e.app,
            &hpath(&format!("/features/{EXT}/actions")),
            ta.clone(),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert!(message(&v).contains("tenant-attach"), "{v}");
    let (_, v) = c
        .get(&e.admin, &hpath(&format!("/features/{EXT}/actions")))
        .await;
    assert_eq!(v["value"][0]["id"], "collection-report", "{v}");
    // Another app of the tenant may not declare for this hierarchy.
    let (_, other) = write_app(c, &e.admin, "Other").await;
    let (s, v) = c
        .put(&other, &hpath("/features/tenant-attach/actions"), ta)
        .await;
    assert_eq!(s, 403, "{v}");
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn disabling_a_feature_drops_its_declarations_and_fails_its_open_actions() {
    let e = env().await;
    let c = &e.c;
    let helpdesk = e.user("helpdesk").await;
    let (s, v) = c
        .post(
            &helpdesk,
            &hpath("/collections/PS100012/actions"),
            json!({"action": "collection-report"}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (202, Some("pending")), "{v}");
    let pending = v["id"].as_str().unwrap().to_string();
    let running = e.ask_ok(&helpdesk).await;
    let (s, q) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(s, 200, "{q}");
    // The device action belongs to tenant-attach; only the extension feature is disabled.
    assert_eq!(
        c.delete(&e.app, &hpath(&format!("/features/{EXT}")))
            .await
            .0,
        204
    );
    let v = e.action(&pending).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "feature-disabled", "{v}");
    assert!(v["completed"].is_string(), "{v}");
    assert_eq!(e.action(&running).await["status"], "running");
    let (_, v) = c.get(&e.admin, &hpath("/actions/declared")).await;
    assert_eq!(v["value"].as_array().unwrap().len(), 2, "{v}");
    let (s, v) = c
        .post(
            &helpdesk,
            &hpath("/collections/PS100012/actions"),
            json!({"action": "collection-report"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("UnknownAction")),
        "{v}"
    );
    // Enabled again, the feature declares nothing until it says so.
    c.onboard(&e.app, &[EXT]).await;
    let (_, v) = c
        .get(&e.admin, &hpath(&format!("/features/{EXT}/actions")))
        .await;
    assert_eq!(v, json!({"value": []}));
    // Offboarding removes the hierarchy's actions with it.
    assert_eq!(c.delete(&e.app, &hpath("")).await.0, 204);
    let (s, _) = c.get(&e.admin, &format!("/api/v1/actions/{running}")).await;
    assert_eq!(s, 404);
    let (_, v) = c.get(&e.admin, "/api/v1/actions").await;
    assert_eq!(v["@odata.count"], 0, "{v}");
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn asking_is_checked_in_order_and_intune_refusals_are_stored() {
    let e = env().await;
    let c = &e.c;
    let helpdesk = e.user("helpdesk").await;
    // An app may not ask.
    let (s, v) = e.ask(&e.app, 1, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(s, 403, "{v}");
    assert!(message(&v).contains("signed-in person"), "{v}");
    // Another tenant's hierarchy is not found.
    let fabrikam = c.sign_in(FABRIKAM, "helpdesk@fabrikam.example").await;
    let (s, v) = e.ask(&fabrikam, 1, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(s, 404, "{v}");
    // An action no enabled feature declares.
    let (s, v) = e.ask(&helpdesk, 1, "reboot", json!({})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (400, Some("UnknownAction")),
        "{v}"
    );
    assert!(
        message(&v).contains(RESOURCE_EXPLORER) && message(&v).contains("collection-report"),
        "{v}"
    );
    // A collection action asked on a device, and the other way round.
    let (s, v) = e.ask(&helpdesk, 1, "collection-report", json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("collection"), "{v}");
    let (s, v) = c
        .post(
            &helpdesk,
            &hpath("/collections/PS100012/actions"),
            json!({"action": RESOURCE_EXPLORER}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // A device that was not uploaded to the hierarchy.
    let (s, v) = e.ask(&helpdesk, 99, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(s, 404, "{v}");
    assert!(
        message(&v).contains("not uploaded to this hierarchy"),
        "{v}"
    );
    // Not a collection id.
    let (s, v) = c
        .post(
            &helpdesk,
            &hpath("/collections/SMS00001x/actions"),
            json!({"action": "collection-report"}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    // Parameters.
    let (s, v) = e.ask(&helpdesk, 1, CMPIVOT, json!({})).await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains("needs the parameter \"query\""), "{v}");
    let (s, v) = e.ask(&helpdesk, 1, CMPIVOT, json!({"query": 5})).await;
    assert_eq!(s, 400, "{v}");
    // None of those was stored.
    let (_, v) = c.get(&e.admin, "/api/v1/actions").await;
    assert_eq!(v["@odata.count"], 0, "{v}");

    // The Intune half: refusals are stored, with the missing permission named.
    let readonly = e.user("readonly").await;
    let (s, v) = e
        .ask(&readonly, 2, CMPIVOT, json!({"query": "Device"}))
        .await;
    assert_eq!(
        (s, v["status"].as_str()),
        (202, Some("unauthorized")),
        "{v}"
    );
    let refused = e.action(v["id"].as_str().unwrap()).await;
    assert_eq!(refused["status"], "unauthorized");
    assert_eq!(refused["error"]["code"], links::INTUNE_ROLE);
    let m = refused["error"]["message"].as_str().unwrap();
    assert!(
        m.contains(INTUNE_INITIATE)
            && m.contains(INTUNE_RUN_CMPIVOT)
            && m.contains(ROLE_READ_ONLY_OPERATOR),
        "{m}"
    );
    assert!(refused["completed"].is_string(), "{refused}");
    let plain = e.user("user").await;
    let (s, v) = e.ask(&plain, 2, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(
        (s, v["status"].as_str()),
        (202, Some("unauthorized")),
        "{v}"
    );
    let m = e.action(v["id"].as_str().unwrap()).await["error"]["message"].clone();
    assert!(m.as_str().unwrap().contains("no Intune role"), "{m}");
    // Help desk operators and administrators are queued.
    let r = c
        .http
        .post(c.url(&hpath("/devices/1/actions")))
        .bearer_auth(&helpdesk)
        .json(&json!({"action": CMPIVOT, "parameters": {"query": "Device"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "pending");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(location, format!("/api/v1/actions/{id}"));
    let doc = e.action(&id).await;
    let helpdesk_id = seeded_user_object_id(CONTOSO_TENANT_ID, "helpdesk").unwrap();
    let picked: serde_json::Map<String, Value> = [
        "action",
        "feature",
        "hierarchy_id",
        "resource_id",
        "parameters",
        "requested_by",
        "requested_by_id",
        "tenant_id",
        "authority",
        "result",
        "error",
        "completed",
        "timeout_secs",
    ]
    .iter()
    .map(|k| (k.to_string(), doc[*k].clone()))
    .collect();
    assert_eq!(
        Value::Object(picked),
        json!({
            "action": CMPIVOT,
            "feature": "tenant-attach",
            "hierarchy_id": HID,
            "resource_id": 1,
            "parameters": {"query": "Device"},
            "requested_by": "helpdesk@contoso.example",
            "requested_by_id": helpdesk_id,
            "tenant_id": CONTOSO_TENANT_ID,
            "authority": AUTHORITY_BOTH,
            "result": null,
            "error": null,
            "completed": null,
            "timeout_secs": DEFAULT_TIMEOUT_SECS,
        })
    );
    let admin_id = e.ask_ok(&e.admin).await;
    // The audit trail: newest first, filtered.
    let (_, all) = c.get(&e.admin, "/api/v1/actions").await;
    assert_eq!(all["@odata.count"], 4, "{all}");
    assert_eq!(ids(&all)[0], admin_id);
    assert_eq!(ids(&all)[1], id);
    let (_, v) = c
        .get(&helpdesk, "/api/v1/actions?status=unauthorized")
        .await;
    assert_eq!(v["@odata.count"], 2, "{v}");
    let (_, v) = c
        .get(
            &e.admin,
            &format!("/api/v1/actions?resource_id=1&hierarchy={HID}&status=pending"),
        )
        .await;
    assert_eq!(ids(&v), [admin_id.clone(), id.clone()]);
    let (s, _) = c.get(&e.admin, "/api/v1/actions?status=done").await;
    assert_eq!(s, 400);
    let (s, _) = c.get(&e.admin, "/api/v1/actions?device=1").await;
    assert_eq!(s, 400);
    // The owning app reads them too; another tenant does not see them.
    assert_eq!(c.get(&e.app, &format!("/api/v1/actions/{id}")).await.0, 200);
    assert_eq!(
        c.get(&fabrikam, &format!("/api/v1/actions/{id}")).await.0,
        404
    );
    let (_, v) = c.get(&fabrikam, "/api/v1/actions").await;
    assert_eq!(v["@odata.count"], 0, "{v}");
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn only_the_owning_app_serves_the_connector() {
    let e = env().await;
    let c = &e.c;
    let id = e.ask_ok(&e.admin).await;
    let (_, other) = write_app(c, &e.admin, "Other").await;
    let (s, fabrikam) = c
        .app_token(FABRIKAM, FABRIKAM_READER_APP_ID, DEV_SECRET)
        .await;
    assert_eq!(s, 200);
    let fabrikam = fabrikam["access_token"].as_str().unwrap().to_string();
    let beat = serde_json::to_value(ConnectorBeat::new("conn-x", "0.2.0", 900)).unwrap();
    for (who, tok, status) in [
        ("another app", &other, 403),
        ("a user", &e.admin, 403),
        ("another tenant", &fabrikam, 404),
    ] {
        assert_eq!(e.poll(tok, "conn-x", 0).await.0, status, "{who}: poll");
        assert_eq!(
            c.put(tok, &hpath("/connector"), beat.clone()).await.0,
            status,
            "{who}: heartbeat"
        );
        assert_eq!(e.answer(tok, &id, table()).await.0, status, "{who}: answer");
    }
    assert_eq!(c.get(&other, &format!("/api/v1/actions/{id}")).await.0, 403);
    // Nothing was taken or answered.
    assert_eq!(e.action(&id).await["status"], "pending");
    // The owner polls; the poll takes only its own parameters.
    let (s, v) = c
        .get(
            &e.app,
            &hpath("/connector/actions?connector_id=a&wait=0&x=1"),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = e.poll(&e.app, "conn-a", 61).await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(ids(&v), [id]);
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn a_long_poll_wakes_up_when_an_action_is_queued() {
    let e = env().await;
    let c = &e.c;
    let helpdesk = e.user("helpdesk").await;
    // Nothing queued: a poll without wait answers at once, empty.
    let (s, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!((s, v), (200, json!({"value": []})));
    let wait = 30;
    let url = c.url(&hpath(&format!(
        "/connector/actions?connector_id=conn-a&wait={wait}"
    )));
    let (http, app) = (c.http.clone(), e.app.clone());
    let started = Instant::now();
    let poll = tokio::spawn(async move {
        let r = http.get(url).bearer_auth(app).send().await.unwrap();
        assert_eq!(r.status(), 200);
        (r.json::<Value>().await.unwrap(), Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = e.ask_ok(&helpdesk).await;
    let (v, answered) = poll.await.unwrap();
    assert!(
        answered.duration_since(started) < Duration::from_secs(wait),
        "the poll waited out its {wait} s"
    );
    assert_eq!(ids(&v), [id.as_str()]);
    assert_eq!(v["value"][0]["status"], "running");
    let doc = e.action(&id).await;
    assert_eq!(doc["status"], "running");
    assert_eq!(doc["connector_id"], "conn-a");
    assert!(doc["taken"].is_string(), "{doc}");
    // The poll counted as a heartbeat.
    let (_, h) = c.get(&e.admin, &hpath("/connector")).await;
    assert_eq!(h["connector_id"], "conn-a", "{h}");
    assert!(h["last_heartbeat"].is_string(), "{h}");
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn running_actions_go_to_a_new_connector_but_never_twice_to_the_same() {
    let e = env().await;
    let id = e.ask_ok(&e.admin).await;
    let (_, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(ids(&v), [id.as_str()]);
    let (_, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // A connector that restarted after a crash (a new id) gets it again, once.
    let (_, v) = e.poll(&e.app, "conn-b", 0).await;
    assert_eq!(ids(&v), [id.as_str()]);
    assert_eq!(e.action(&id).await["connector_id"], "conn-b");
    let (_, v) = e.poll(&e.app, "conn-b", 0).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    let (_, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    // Answered, it goes to nobody.
    assert_eq!(e.answer(&e.app, &id, table()).await.0, 200);
    let (_, v) = e.poll(&e.app, "conn-c", 0).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn the_first_answer_wins() {
    let e = env().await;
    let id = e.ask_ok(&e.admin).await;
    e.poll(&e.app, "conn-a", 0).await;
    // Answers that are not answers.
    let mut running = table();
    running["status"] = json!("running");
    assert_eq!(e.answer(&e.app, &id, running).await.0, 400);
    let refusal = |code: &str| {
        serde_json::to_value(ActionAnswer::refused(
            "conn-a",
            ActionStatus::Unauthorized,
            AUTHORITY_BOTH,
            ActionError::new(code, "no"),
        ))
        .unwrap()
    };
    let (s, v) = e.answer(&e.app, &id, refusal("nope")).await;
    assert_eq!(s, 400, "{v}");
    assert!(message(&v).contains(links::SITE_ROLE), "{v}");
    let mut odd = table();
    odd["authority"] = json!("root");
    assert_eq!(e.answer(&e.app, &id, odd).await.0, 400);
    assert_eq!(e.action(&id).await["status"], "running");
    // The first answer is recorded.
    let (s, v) = e.answer(&e.app, &id, table()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["result"]["rows"], json!([[1]]));
    let recorded = e.action(&id).await;
    assert!(recorded["completed"].is_string(), "{recorded}");
    // A later one is refused with the recorded document; nothing changes.
    let (s, v) = e.answer(&e.app, &id, refusal(links::SITE_ROLE)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("ActionCompleted")),
        "{v}"
    );
    assert_eq!(v["error"]["action"], recorded);
    assert_eq!(e.action(&id).await, recorded);
    // An unknown action.
    let (s, _) = e
        .answer(&e.app, "00000000-0000-4000-8000-000000000000", table())
        .await;
    assert_eq!(s, 404);
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn actions_time_out_and_late_answers_are_refused() {
    let mut o = opts();
    o.action_timeout_secs = Some(1);
    o.max_body_bytes = 16 * 1024;
    let e = env_with(o).await;
    let c = &e.c;
    let taken = e.ask_ok(&e.admin).await;
    let (_, v) = e.poll(&e.app, "conn-a", 0).await;
    assert_eq!(ids(&v), [taken.as_str()]);
    // A result past the body limit is 413.
    let mut big = table();
    big["result"]["rows"] = json!([["x".repeat(32 * 1024)]]);
    assert_eq!(e.answer(&e.app, &taken, big).await.0, 413);
    let waiting = e.ask_ok(&e.admin).await;
    assert_eq!(e.action(&waiting).await["timeout_secs"], 1);
    // Both time out, the one the connector took and the one it never took.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = c.get(&e.admin, "/api/v1/actions?status=timedOut").await;
        if v["@odata.count"] == 2 {
            break;
        }
        assert!(Instant::now() < until, "no timeout: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in [&taken, &waiting] {
        let v = e.action(id).await;
        assert_eq!(v["status"], "timedOut", "{v}");
        assert_eq!(v["error"]["code"], "timedOut", "{v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("within 1 s") && m.contains("connector last seen"),
            "{m}"
        );
        assert!(v["completed"].is_string(), "{v}");
    }
    // A timed-out action is never handed out, and takes no answer.
    let (_, v) = e.poll(&e.app, "conn-b", 0).await;
    assert_eq!(ids(&v), Vec::<String>::new());
    let (s, v) = e.answer(&e.app, &taken, table()).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"]["action"]["status"], "timedOut");
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn connector_health_follows_heartbeats_and_upload_errors() {
    let e = env().await;
    let c = &e.c;
    let (s, h) = c.get(&e.admin, &hpath("/connector")).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["healthy"], false);
    assert_eq!(h["reason"], "the connector has never connected");
    let mut beat = ConnectorBeat::new("conn-a", "0.2.0", 900);
    let (s, h) = c
        .put(
            &e.app,
            &hpath("/connector"),
            serde_json::to_value(&beat).unwrap(),
        )
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(
        (
            &h["healthy"],
            &h["reason"],
            &h["version"],
            &h["interval_secs"]
        ),
        (&json!(true), &Value::Null, &json!("0.2.0"), &json!(900)),
        "{h}"
    );
    let (_, ov) = c.get(&e.admin, "/api/v1/overview").await;
    assert_eq!(ov["hierarchies"][0]["connector"], h);
    assert_eq!(c.get(&e.app, &hpath("/connector")).await, (200, h));
    beat.last_error = Some("HTTP 503 from the cloud".into());
    let (s, h) = c
        .put(
            &e.app,
            &hpath("/connector"),
            serde_json::to_value(&beat).unwrap(),
        )
        .await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["healthy"], false);
    assert_eq!(
        h["reason"],
        "last delta upload failed: HTTP 503 from the cloud"
    );
    let fabrikam = c.sign_in(FABRIKAM, "admin@fabrikam.example").await;
    assert_eq!(c.get(&fabrikam, &hpath("/connector")).await.0, 404);
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn the_recorded_authority_follows_the_rbac_setting_and_the_tenant_toggle() {
    let e = env().await;
    let c = &e.c;
    assert_eq!(e.authority().await, AUTHORITY_BOTH);
    let rbac = |enforce: bool| json!({"settings": {"enforce_configmgr_rbac": enforce}});
    let (s, v) = c
        .put(&e.app, &hpath("/features/rbac-authority"), rbac(false))
        .await;
    assert_eq!(s, 201, "{v}");
    // The feature alone, or the toggle alone, leaves Configuration Manager RBAC enforced.
    assert_eq!(e.authority().await, AUTHORITY_BOTH);
    let (s, v) = c
        .put(
            &e.admin,
            "/api/v1/tenant/settings",
            json!({"use_intune_rbac": true}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let id = e.ask_ok(&e.admin).await;
    assert_eq!(e.action(&id).await["use_intune_rbac"], true);
    assert_eq!(e.action(&id).await["authority"], AUTHORITY_INTUNE);
    c.put(&e.app, &hpath("/features/rbac-authority"), rbac(true))
        .await;
    assert_eq!(e.authority().await, AUTHORITY_BOTH);
    e.c.running.shutdown().await;
}

#[tokio::test]
async fn people_with_an_intune_role_read_devices_and_one_device_has_all_the_cloud_holds() {
    let e = env().await;
    let helpdesk = e.user("helpdesk").await;
    let readonly = e.user("readonly").await;
    let nobody = e.user("user").await;
    for tok in [&helpdesk, &readonly] {
        let (s, v) = e.c.get(tok, "/api/v1/devices").await;
        assert_eq!((s, v["@odata.count"].clone()), (200, json!(3)), "{v}");
    }
    let (s, v) = e.c.get(&nobody, "/api/v1/devices").await;
    assert_eq!(s, 403, "{v}");
    assert!(v.to_string().contains("Intune role"), "{v}");
    let (s, v) = e.c.get(&helpdesk, &hpath("/devices/2")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["resource_id"], 2);
    assert_eq!(v["device"]["resource_id"], 2);
    assert!(v["last_uploaded"].is_string(), "{v}");
    for ch in ["analytics", "defender", "comanagement"] {
        assert!(v[ch].is_null(), "{ch} holds nothing: {v}");
    }
    let (s, _) = e.c.get(&helpdesk, &hpath("/devices/99")).await;
    assert_eq!(s, 404);
    let (s, _) = e.c.get(&helpdesk, &hpath("/devices/x")).await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn what_an_action_answered_is_read_with_the_read_right_or_by_who_asked() {
    let e = env().await;
    let helpdesk = e.user("helpdesk").await;
    let nobody = e.user("user").await;
    let (s, theirs) = e.ask(&helpdesk, 2, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(s, 202, "{theirs}");
    let (s, mine) = e.ask(&nobody, 2, RESOURCE_EXPLORER, json!({})).await;
    assert_eq!(
        (s, mine["status"].clone()),
        (202, json!("unauthorized")),
        "{mine}"
    );
    let (s, v) =
        e.c.get(
            &nobody,
            &format!("/api/v1/actions/{}", mine["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, 200, "their own: {v}");
    let (s, v) =
        e.c.get(
            &nobody,
            &format!("/api/v1/actions/{}", theirs["id"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, 403, "another's: {v}");
    let (s, v) = e.c.get(&nobody, "/api/v1/actions").await;
    assert_eq!(s, 403, "the list: {v}");
    let (s, _) = e.c.get(&helpdesk, "/api/v1/actions").await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn only_a_connector_the_action_was_handed_to_answers_it() {
    let e = env().await;
    let id = e.ask_ok(&e.admin).await;
    // Not taken yet: nobody answers it.
    let (s, v) = e.answer(&e.app, &id, table()).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("ActionNotTaken")),
        "{v}"
    );
    assert_eq!(e.action(&id).await["status"], "pending");
    e.poll(&e.app, "conn-a", 0).await;
    // Taken by conn-a: conn-b's answer is refused, conn-a's recorded.
    let mut other = table();
    other["connector_id"] = json!("conn-b");
    let (s, v) = e.answer(&e.app, &id, other).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("ActionNotTaken")),
        "{v}"
    );
    let (s, v) = e.answer(&e.app, &id, table()).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("succeeded")), "{v}");
}

use crate::common::*;
use cloudattach_cloud::auth::{Claims, PUBLIC_CLIENT_ID, SigningKey};
use cloudattach_cloud::seed::*;
use cloudattach_cloud::{CloudError, ServeOptions};
use serde_json::{Value, json};

const DC: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[tokio::test]
async fn discovery_and_keys() {
    let c = start().await;
    for t in [CONTOSO, CONTOSO_TENANT_ID] {
        let v: Value = c
            .http
            .get(c.url(&format!("/{t}/v2.0/.well-known/openid-configuration")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["issuer"], format!("{}/{CONTOSO_TENANT_ID}/v2.0", c.base));
        assert!(
            v["device_authorization_endpoint"]
                .as_str()
                .unwrap()
                .ends_with("/oauth2/v2.0/devicecode")
        );
        let k: Value = c
            .http
            .get(v["jwks_uri"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(k["keys"][0]["kty"], "RSA");
        assert_eq!(k["keys"][0]["alg"], "RS256");
    }
    let r = c
        .http
        .get(c.url("/nowhere.example/v2.0/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    c.running.shutdown().await;
}

#[tokio::test]
async fn device_code_rfc8628_answers_and_refresh_rotation() {
    let mut o = opts();
    o.auto_approve = None;
    let c = start_with(o).await;
    let path = format!("/{CONTOSO}/oauth2/v2.0/devicecode");
    let scope = "api://cloudattach/.default offline_access";
    // Non-public clients may not use the device code flow.
    let (s, v) = c
        .form(
            &path,
            &[("client_id", CONTOSO_READER_APP_ID), ("scope", scope)],
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")));
    let (s, v) = c
        .form(
            &path,
            &[("client_id", PUBLIC_CLIENT_ID), ("scope", "bogus")],
        )
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_scope")));
    let (s, dc) = c
        .form(&path, &[("client_id", PUBLIC_CLIENT_ID), ("scope", scope)])
        .await;
    assert_eq!(s, 200);
    assert_eq!(dc["interval"], 1);
    assert_eq!(dc["verification_uri"], c.url("/devicelogin"));
    let code = dc["device_code"].as_str().unwrap();
    let user_code = dc["user_code"].as_str().unwrap();
    let tok = format!("/{CONTOSO}/oauth2/v2.0/token");
    let poll = [
        ("grant_type", DC),
        ("client_id", PUBLIC_CLIENT_ID),
        ("device_code", code),
    ];
    let (s, v) = c.form(&tok, &poll).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (_, v) = c.form(&tok, &poll).await;
    assert_eq!(v["error"], "slow_down");
    let (_, v) = c
        .form(
            &tok,
            &[
                ("grant_type", DC),
                ("client_id", PUBLIC_CLIENT_ID),
                ("device_code", "nope"),
            ],
        )
        .await;
    assert_eq!(v["error"], "bad_verification_code");
    // The sign-in page: wrong password, then approve.
    let page = c
        .http
        .get(c.url("/devicelogin"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("user_code"));
    let r = c
        .http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", user_code),
            ("upn", "admin@contoso.example"),
            ("password", "wrong"),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("Wrong user name or password") && !body.contains("wrong\""));
    // A user of another tenant can't approve a contoso code.
    let r = c
        .http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", user_code),
            ("upn", "admin@fabrikam.example"),
            ("password", DEV_PASSWORD),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", user_code),
            ("upn", "admin@contoso.example"),
            ("password", DEV_PASSWORD),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, t) = c.form(&tok, &poll).await;
    assert_eq!(s, 200, "{t}");
    let e = t["expires_in"].as_i64().unwrap();
    assert!((3600..=5400).contains(&e));
    assert_eq!(t["token_type"], "Bearer");
    // The code is single use.
    let (_, v) = c.form(&tok, &poll).await;
    assert_eq!(v["error"], "bad_verification_code");
    // /me with the delegated token.
    let at = t["access_token"].as_str().unwrap();
    let (s, me) = c.get(at, "/v1.0/me").await;
    assert_eq!(s, 200);
    assert_eq!(me["userPrincipalName"], "admin@contoso.example");
    assert_eq!(me["intuneLicense"], true);
    assert_eq!(me["roles"], json!(["Global Administrator"]));
    // Refresh tokens rotate.
    let rt = t["refresh_token"].as_str().unwrap();
    let refresh = [
        ("grant_type", "refresh_token"),
        ("client_id", PUBLIC_CLIENT_ID),
        ("refresh_token", rt),
    ];
    let (s, t2) = c.form(&tok, &refresh).await;
    assert_eq!(s, 200, "{t2}");
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    let (s, v) = c.form(&tok, &refresh).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("invalid_grant")));

    // Declined.
    let (_, dc) = c
        .form(&path, &[("client_id", PUBLIC_CLIENT_ID), ("scope", scope)])
        .await;
    c.http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", dc["user_code"].as_str().unwrap()),
            ("upn", "user@contoso.example"),
            ("password", DEV_PASSWORD),
            ("action", "decline"),
        ])
        .send()
        .await
        .unwrap();
    let (_, v) = c
        .form(
            &tok,
            &[
                ("grant_type", DC),
                ("client_id", PUBLIC_CLIENT_ID),
                ("device_code", dc["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(v["error"], "authorization_declined");
    c.running.shutdown().await;
}

#[tokio::test]
async fn device_code_expires() {
    let mut o = opts();
    o.auto_approve = None;
    o.device_code_expiry_secs = 1;
    let c = start_with(o).await;
    let (_, dc) = c
        .form(
            &format!("/{CONTOSO}/oauth2/v2.0/devicecode"),
            &[
                ("client_id", PUBLIC_CLIENT_ID),
                ("scope", "api://cloudattach/.default"),
            ],
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (_, v) = c
        .form(
            &format!("/{CONTOSO}/oauth2/v2.0/token"),
            &[
                ("grant_type", DC),
                ("client_id", PUBLIC_CLIENT_ID),
                ("device_code", dc["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(v["error"], "expired_token");
}

#[tokio::test]
async fn client_credentials_and_reader_app() {
    let c = start().await;
    let (s, v) = c.app_token(CONTOSO, CONTOSO_READER_APP_ID, "wrong").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(!v.to_string().contains("wrong\""));
    let (s, v) = c
        .app_token(CONTOSO, FABRIKAM_READER_APP_ID, DEV_SECRET)
        .await;
    assert_eq!((s, v["error"].as_str()), (400, Some("unauthorized_client")));
    let (s, v) = c
        .app_token(FABRIKAM, FABRIKAM_READER_APP_ID, DEV_SECRET)
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("refresh_token").is_none());
    let reader = c.reader().await;
    let (s, _) = c.get(&reader, "/api/v1/devices").await;
    assert_eq!(s, 200);
    let (s, v) = c
        .put(
            &reader,
            &format!("/api/v1/hierarchies/{HID}"),
            json!({"site_code":"PS1","site_version":"2303","environment":"public"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string());
    let (s, _) = c.get(&reader, "/v1.0/me").await;
    assert_eq!(s, 400);
}

fn claims(c: &Cloud, tid: &str, iss_tid: &str, aud: &str, exp_delta: i64) -> Claims {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        aud: aud.into(),
        iss: format!("{}/{iss_tid}/v2.0", c.base),
        iat: now,
        nbf: now - 10,
        exp: now + exp_delta,
        tid: tid.into(),
        sub: "x".into(),
        oid: "x".into(),
        azp: CONTOSO_READER_APP_ID.into(),
        idtyp: "app".into(),
        scp: None,
        roles: vec!["CmCollectionData.read".into()],
        upn: None,
        ver: "2.0".into(),
        jti: "j".into(),
    }
}

#[tokio::test]
async fn token_checks() {
    let c = start().await;
    let key = SigningKey::from_pem(key_pem()).unwrap();
    let good = key.sign(&claims(
        &c,
        CONTOSO_TENANT_ID,
        CONTOSO_TENANT_ID,
        "api://cloudattach",
        600,
    ));
    assert_eq!(c.get(&good, "/api/v1/overview").await.0, 200);
    let r = c.http.get(c.url("/api/v1/overview")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let cases = [
        (
            "expired",
            key.sign(&claims(
                &c,
                CONTOSO_TENANT_ID,
                CONTOSO_TENANT_ID,
                "api://cloudattach",
                -60,
            )),
        ),
        (
            "audience",
            key.sign(&claims(
                &c,
                CONTOSO_TENANT_ID,
                CONTOSO_TENANT_ID,
                "api://other",
                600,
            )),
        ),
        (
            "issuer of another tenant",
            key.sign(&claims(
                &c,
                CONTOSO_TENANT_ID,
                FABRIKAM_TENANT_ID,
                "api://cloudattach",
                600,
            )),
        ),
        (
            "unknown tenant",
            key.sign(&claims(
                &c,
                "00000000-0000-4000-8000-000000000999",
                "00000000-0000-4000-8000-000000000999",
                "api://cloudattach",
                600,
            )),
        ),
        // An app of contoso presented as fabrikam's: no such app there.
        (
            "wrong tenant",
            key.sign(&claims(
                &c,
                FABRIKAM_TENANT_ID,
                FABRIKAM_TENANT_ID,
                "api://cloudattach",
                600,
            )),
        ),
        ("bad signature", {
            let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
            let sig = parts[2].clone();
            let first = if sig.starts_with('A') { "B" } else { "A" };
            parts[2] = format!("{first}{}", &sig[1..]);
            parts.join(".")
        }),
        ("garbage", "not.a.token".to_string()),
    ];
    for (what, tok) in cases {
        let (s, v) = c.get(&tok, "/api/v1/overview").await;
        assert_eq!(s, 401, "{what}: {v}");
        assert_eq!(v["error"]["code"], "InvalidAuthenticationToken", "{what}");
    }
}

#[tokio::test]
async fn app_registration_graph() {
    let c = start().await;
    let admin = c.admin().await;
    let rra = json!([{"resource":"api://cloudattach","permissions":["CmCollectionData.read","CmCollectionData.write"]},
                     {"resource":"https://graph.microsoft.com","permissions":["Directory.Read.All"]}]);
    let (s, v) = c.post(&admin, "/v1.0/applications", json!({"displayName":"ConfigMgrService",
        "identifierUris":[format!("api://{CONTOSO_TENANT_ID}/ConfigMgrService")], "requiredResourceAccess": rra})).await;
    assert_eq!(s, 201, "{v}");
    let (id, app_id) = (
        v["id"].as_str().unwrap().to_string(),
        v["appId"].as_str().unwrap().to_string(),
    );
    assert_eq!(v["adminConsentGranted"], false);
    let (s, v) = c
        .post(
            &admin,
            "/v1.0/applications",
            json!({"displayName":"x","identifierUris":["api://other-tenant/x"]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = c
        .post(
            &admin,
            "/v1.0/applications",
            json!({"displayName":"x","bogus":1}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains("bogus"));
    let (s, _) = c
        .post(&admin, "/v1.0/servicePrincipals", json!({"appId": app_id}))
        .await;
    assert_eq!(s, 201);
    let (s, _) = c
        .post(&admin, "/v1.0/servicePrincipals", json!({"appId": app_id}))
        .await;
    assert_eq!(s, 409);
    let (s, pw) = c.post(&admin, &format!("/v1.0/applications/{id}/addPassword"),
        json!({"passwordCredential":{"displayName":"cli","endDateTime":"2030-01-01T00:00:00Z"}})).await;
    assert_eq!(s, 200, "{pw}");
    let secret = pw["secretText"].as_str().unwrap().to_string();
    assert_eq!(pw["endDateTime"], "2030-01-01T00:00:00Z");
    // Before consent: a token without permissions, which can't read.
    let (_, t) = c.app_token(CONTOSO, &app_id, &secret).await;
    let at = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(c.get(&at, "/api/v1/overview").await.0, 403);
    // Only a Global Administrator grants consent; user@ can't (sign in through the page).
    let (s, _) = c
        .post(
            &admin,
            &format!("/v1.0/applications/{id}/grantAdminConsent"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, list) = c
        .get(
            &admin,
            &format!("/v1.0/applications?$filter=appId eq '{app_id}'"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["value"].as_array().unwrap().len(), 1);
    let a = &list["value"][0];
    assert_eq!(a["adminConsentGranted"], true);
    assert_eq!(a["requiredResourceAccess"], rra);
    assert!(!a.to_string().contains(&secret));
    assert_eq!(a["passwordCredentials"][0]["hint"], &secret[..3]);
    let (_, t) = c.app_token(CONTOSO, &app_id, &secret).await;
    let at = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(c.get(&at, "/api/v1/overview").await.0, 200);
    // The app can read its own registration (validation of an imported app).
    let (s, own) = c
        .get(
            &at,
            &format!("/v1.0/applications?$filter=appId eq '{app_id}'"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(own["value"][0]["adminConsentGranted"], true);
    // ... and write through the gateway for its own hierarchy.
    let (s, v) = c.put(&at, &format!("/api/v1/hierarchies/{HID}"),
        json!({"site_code":"PS1","site_version":"2303","environment":"public","app_id": app_id})).await;
    assert_eq!(s, 201, "{v}");
    // Expired secret.
    let (_, pw2) = c
        .post(
            &admin,
            &format!("/v1.0/applications/{id}/addPassword"),
            json!({}),
        )
        .await;
    assert!(pw2["secretText"].is_string());
    // Non-admins can't register apps.
    let reader = c.reader().await;
    assert_eq!(
        c.post(&reader, "/v1.0/applications", json!({"displayName":"x"}))
            .await
            .0,
        403
    );
}

#[tokio::test]
async fn option_validation() {
    for o in [
        ServeOptions {
            environment: "mars".into(),
            ..ServeOptions::default()
        },
        ServeOptions {
            fault_429: 1.5,
            ..ServeOptions::default()
        },
        ServeOptions {
            addr: "nonsense".into(),
            ..ServeOptions::default()
        },
    ] {
        let e = cloudattach_cloud::start(o).await.err().expect("must fail");
        assert!(matches!(e, CloudError::InvalidOption(_)), "{e}");
        assert!(e.is_invalid_option());
    }
}

#[tokio::test]
async fn no_seed_and_restart_keeps_data() {
    let mut o = opts();
    o.no_seed = true;
    o.auto_approve = None;
    let c = start_with(o).await;
    let r = c
        .http
        .get(c.url(&format!("/{CONTOSO}/v2.0/.well-known/openid-configuration")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(c.running.seeded_tenants().is_empty());
    c.running.shutdown().await;
    // Restart on a seeded dir keeps the data and the key.
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &[]).await;
    let dir = c.dir;
    c.running.shutdown().await;
    let o = ServeOptions {
        data: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let running = cloudattach_cloud::start(o).await.unwrap();
    let base = running.base_url();
    let c2 = Cloud {
        running,
        dir,
        base,
        http: reqwest::Client::new(),
    };
    // A token issued before the restart (another port) is still good: same key, same tenant.
    assert_eq!(c2.get(&admin, "/api/v1/overview").await.0, 200);
    let admin = c2.admin().await;
    let (_, v) = c2.get(&admin, "/api/v1/overview").await;
    assert_eq!(v["hierarchies"].as_array().unwrap().len(), 1, "{v}");
    c2.running.shutdown().await;
}

#[tokio::test]
async fn roles_licenses_and_more_graph() {
    let mut o = opts();
    o.auto_approve = None;
    let c = start_with(o).await;
    let admin = c.sign_in(CONTOSO, "admin@contoso.example").await;
    let nolicense = c.sign_in(CONTOSO, "nolicense@contoso.example").await;
    let user = c.sign_in(CONTOSO, "user@contoso.example").await;
    let (_, me) = c.get(&nolicense, "/v1.0/me").await;
    assert_eq!(me["intuneLicense"], false);
    let (_, me) = c.get(&user, "/v1.0/me").await;
    assert_eq!(me["roles"], json!([]));
    let body = json!({"site_code":"PS1","site_version":"2303","environment":"public"});
    let (s, v) = c
        .put(
            &nolicense,
            &format!("/api/v1/hierarchies/{HID}"),
            body.clone(),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("IntuneLicenseRequired"))
    );
    assert_eq!(
        c.put(&user, &format!("/api/v1/hierarchies/{HID}"), body.clone())
            .await
            .0,
        403
    );
    assert_eq!(c.get(&user, "/api/v1/overview").await.0, 403);
    assert_eq!(
        c.post(&user, "/v1.0/applications", json!({"displayName":"x"}))
            .await
            .0,
        403
    );
    assert_eq!(
        c.put(
            &user,
            "/api/v1/tenant/settings",
            json!({"use_intune_rbac": true})
        )
        .await
        .0,
        403
    );
    // Hierarchy list and single feature.
    assert_eq!(
        c.put(&admin, &format!("/api/v1/hierarchies/{HID}"), body)
            .await
            .0,
        201
    );
    let (_, l) = c.get(&admin, "/api/v1/hierarchies").await;
    assert_eq!(l["value"][0]["hierarchy_id"], HID);
    c.put(
        &admin,
        &format!("/api/v1/hierarchies/{HID}/features/co-management"),
        json!({"settings":{"enrollment":"pilot","pilot_collection":"PS100020"}}),
    )
    .await;
    let (s, f) = c
        .get(
            &admin,
            &format!("/api/v1/hierarchies/{HID}/features/co-management"),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        f["settings"],
        json!({"enrollment":"pilot","pilot_collection":"PS100020"})
    );
    assert_eq!(
        c.get(
            &admin,
            &format!("/api/v1/hierarchies/{HID}/features/tenant-attach")
        )
        .await
        .0,
        404
    );
    let (_, fl) = c
        .get(&admin, &format!("/api/v1/hierarchies/{HID}/features"))
        .await;
    assert_eq!(fl["value"].as_array().unwrap().len(), 1);

    // PATCH, removePassword, service principals, DELETE.
    let (_, app) = c
        .post(&admin, "/v1.0/applications", json!({"displayName":"A"}))
        .await;
    let (id, app_id) = (
        app["id"].as_str().unwrap().to_string(),
        app["appId"].as_str().unwrap().to_string(),
    );
    let (s, _) = c
        .send(
            reqwest::Method::PATCH,
            &admin,
            &format!("/v1.0/applications/{id}"),
            Some(json!({"identifierUris":[format!("api://{app_id}")], "displayName":"B"})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, a) = c.get(&admin, &format!("/v1.0/applications/{id}")).await;
    assert_eq!(a["displayName"], "B");
    assert_eq!(a["identifierUris"], json!([format!("api://{app_id}")]));
    let (s, _) = c
        .send(
            reqwest::Method::PATCH,
            &admin,
            &format!("/v1.0/applications/{id}"),
            Some(json!({"identifierUris":["https://evil.example/x"]})),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .send(
            reqwest::Method::PATCH,
            &admin,
            &format!("/v1.0/applications/{id}"),
            Some(json!({"identifierUris":["https://contoso.example/ConfigMgrService"]})),
        )
        .await;
    assert_eq!(s, 204);
    let (_, pw) = c
        .post(
            &admin,
            &format!("/v1.0/applications/{id}/addPassword"),
            json!({}),
        )
        .await;
    let secret = pw["secretText"].as_str().unwrap().to_string();
    assert_eq!(c.app_token(CONTOSO, &app_id, &secret).await.0, 200);
    let (s, _) = c
        .post(
            &admin,
            &format!("/v1.0/applications/{id}/removePassword"),
            json!({"keyId": pw["keyId"]}),
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(c.app_token(CONTOSO, &app_id, &secret).await.0, 401);
    assert_eq!(
        c.post(
            &admin,
            &format!("/v1.0/applications/{id}/addPassword"),
            json!({"passwordCredential":{"endDateTime":"2001-01-01T00:00:00Z"}})
        )
        .await
        .0,
        400
    );
    c.post(
        &admin,
        &format!("/v1.0/applications/{id}/grantAdminConsent"),
        json!({}),
    )
    .await;
    let (_, sps) = c
        .get(
            &admin,
            &format!("/v1.0/servicePrincipals?$filter=appId eq '{app_id}'"),
        )
        .await;
    assert_eq!(sps["value"].as_array().unwrap().len(), 1);
    assert_eq!(
        c.get(&admin, "/v1.0/applications?$filter=displayName eq 'B'")
            .await
            .0,
        400
    );
    // Graph's lambda filter over the App ID URIs finds the app by one of them, and only it.
    let (_, a) = c.get(&admin, &format!("/v1.0/applications/{id}")).await;
    let uri = a["identifierUris"][0].as_str().unwrap().to_string();
    let (s, found) = c
        .get(
            &admin,
            &format!("/v1.0/applications?$filter=identifierUris/any(x:x eq '{uri}')"),
        )
        .await;
    assert_eq!(s, 200, "{found}");
    let ids: Vec<&Value> = found["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["appId"])
        .collect();
    assert_eq!(ids, [&json!(app_id)]);
    let (_, none) = c
        .get(
            &admin,
            "/v1.0/applications?$filter=identifierUris/any(x:x eq 'api://nothing/here')",
        )
        .await;
    assert_eq!(none["value"], json!([]));
    assert_eq!(
        c.get(
            &admin,
            "/v1.0/applications?$filter=identifierUris/any(x:x ne 'a')"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.delete(&admin, &format!("/v1.0/applications/{id}"))
            .await
            .0,
        204
    );
    assert_eq!(
        c.get(&admin, &format!("/v1.0/applications/{id}")).await.0,
        404
    );
    let (_, sps) = c
        .get(
            &admin,
            &format!("/v1.0/servicePrincipals?$filter=appId eq '{app_id}'"),
        )
        .await;
    assert_eq!(sps["value"], json!([]));
}

#[tokio::test]
async fn expired_secret_is_refused() {
    let c = start().await;
    let admin = c.admin().await;
    let (_, app) = c
        .post(&admin, "/v1.0/applications", json!({"displayName":"Old"}))
        .await;
    let (id, app_id) = (
        app["id"].as_str().unwrap().to_string(),
        app["appId"].as_str().unwrap().to_string(),
    );
    // Plant an expired secret through a second connection to the data dir.
    let store = cloudattach_cloud::SqliteStore::open(c.dir.path()).unwrap();
    use cloudattach_cloud::Store;
    store
        .add_secret(
            &id,
            &cloudattach_cloud::store::SecretMeta {
                key_id: "k".into(),
                display_name: None,
                hint: "old".into(),
                start_date_time: "2020-01-01T00:00:00Z".into(),
                end_date_time: "2021-01-01T00:00:00Z".into(),
            },
            &cloudattach_cloud::auth::hash_secret("old-secret"),
        )
        .unwrap();
    let (s, v) = c.app_token(CONTOSO, &app_id, "old-secret").await;
    assert_eq!((s, v["error"].as_str()), (401, Some("invalid_client")));
    assert!(
        v["error_description"]
            .as_str()
            .unwrap()
            .contains("AADSTS7000222"),
        "{v}"
    );
}

/// A data dir written by a newer version (schema version above the newest this build knows) is
/// refused at start with both versions named, and left exactly as it was.
#[tokio::test]
async fn a_database_from_a_newer_version_is_refused_and_left_alone() {
    let c = start().await;
    let dir = c.dir;
    c.running.shutdown().await;
    let db = dir.path().join("cloud.db");
    let known: i64 = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        conn.execute_batch(&format!(
            "PRAGMA user_version={}; PRAGMA wal_checkpoint(TRUNCATE);",
            v + 1
        ))
        .unwrap();
        v
    };
    let before = snapshot(dir.path());
    let o = ServeOptions {
        data: Some(dir.path().to_path_buf()),
        ..opts()
    };
    let e = cloudattach_cloud::start(o)
        .await
        .err()
        .expect("must refuse");
    assert!(matches!(e, CloudError::UnsupportedData(_)), "{e}");
    assert!(e.is_input(), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("schema version {}", known + 1))
            && msg.contains(&format!("up to {known}"))
            && msg.contains("newer"),
        "{msg}"
    );
    assert_eq!(snapshot(dir.path()), before, "the data dir changed");
}

/// Every file of a directory with a hash of its bytes and its permissions.
fn snapshot(dir: &std::path::Path) -> Vec<(String, u64, u32)> {
    use std::hash::{Hash, Hasher};
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            #[cfg(unix)]
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
            #[cfg(not(unix))]
            let mode = 0;
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap_or_default().hash(&mut h);
            (
                e.file_name().to_string_lossy().into_owned(),
                h.finish(),
                mode,
            )
        })
        .collect();
    out.sort();
    out
}

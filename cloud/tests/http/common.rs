//! Shared helpers of the HTTP-level tests.
#![allow(dead_code)]

use cloudattach_cloud::auth::{self, SIGNING_KEY_FILE};
use cloudattach_cloud::seed::{CONTOSO_READER_APP_ID, DEV_SECRET};
use cloudattach_cloud::{RunningCloud, ServeOptions};
use serde_json::{Value, json};
use std::sync::OnceLock;
use tempfile::TempDir;

pub const CONTOSO: &str = "contoso.example";
pub const FABRIKAM: &str = "fabrikam.example";
pub const HID: &str = "5a1e0000-0000-4000-8000-000000000001";

/// One RSA key for the whole test binary (key generation is slow in debug builds).
pub fn key_pem() -> &'static str {
    static K: OnceLock<String> = OnceLock::new();
    K.get_or_init(|| auth::generate_key_pem().expect("key"))
}

pub struct Cloud {
    pub running: RunningCloud,
    pub dir: TempDir,
    pub base: String,
    pub http: reqwest::Client,
}

pub fn opts() -> ServeOptions {
    ServeOptions {
        addr: "127.0.0.1:0".into(),
        device_code_interval_secs: 1,
        auto_approve: Some("admin@contoso.example".into()),
        ..ServeOptions::default()
    }
}

pub async fn start_with(mut o: ServeOptions) -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(SIGNING_KEY_FILE), key_pem()).unwrap();
    o.data = Some(dir.path().to_path_buf());
    let running = cloudattach_cloud::start(o).await.expect("start");
    let base = running.base_url();
    Cloud {
        running,
        dir,
        base,
        http: reqwest::Client::new(),
    }
}

pub async fn start() -> Cloud {
    start_with(opts()).await
}

impl Cloud {
    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    pub async fn form(&self, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(self.url(path))
            .form(form)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// A delegated token from the device code flow (the user must be auto-approved).
    pub async fn user_token(&self, tenant: &str) -> (String, Value) {
        let (s, dc) = self
            .form(
                &format!("/{tenant}/oauth2/v2.0/devicecode"),
                &[
                    ("client_id", auth::PUBLIC_CLIENT_ID),
                    ("scope", "api://cloudattach/.default offline_access"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{dc}");
        let (s, tok) = self
            .form(
                &format!("/{tenant}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("client_id", auth::PUBLIC_CLIENT_ID),
                    ("device_code", dc["device_code"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(s, 200, "{tok}");
        (tok["access_token"].as_str().unwrap().to_string(), tok)
    }

    pub async fn admin(&self) -> String {
        self.user_token(CONTOSO).await.0
    }

    pub async fn app_token(&self, tenant: &str, client_id: &str, secret: &str) -> (u16, Value) {
        self.form(
            &format!("/{tenant}/oauth2/v2.0/token"),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", secret),
                ("scope", "api://cloudattach/.default"),
            ],
        )
        .await
    }

    pub async fn reader(&self) -> String {
        let (s, v) = self
            .app_token(CONTOSO, CONTOSO_READER_APP_ID, DEV_SECRET)
            .await;
        assert_eq!(s, 200, "{v}");
        v["access_token"].as_str().unwrap().to_string()
    }

    pub async fn get(&self, tok: &str, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(tok)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        tok: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self.http.request(method, self.url(path)).bearer_auth(tok);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn put(&self, tok: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::PUT, tok, path, Some(body)).await
    }

    pub async fn post(&self, tok: &str, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, tok, path, Some(body))
            .await
    }

    pub async fn delete(&self, tok: &str, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::DELETE, tok, path, None).await
    }

    pub async fn stats(&self) -> Value {
        self.http
            .get(self.url("/_emulator/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Onboards `HID` and enables `features` (with empty/default settings).
    pub async fn onboard(&self, tok: &str, features: &[&str]) {
        let (s, v) = self
            .put(
                tok,
                &format!("/api/v1/hierarchies/{HID}"),
                json!({"site_code":"PS1","site_name":"Primary","site_version":"2303","environment":"public"}),
            )
            .await;
        assert!(s == 201 || s == 200, "{s} {v}");
        for f in features {
            let (s, v) = self
                .put(
                    tok,
                    &format!("/api/v1/hierarchies/{HID}/features/{f}"),
                    json!({"settings":{}}),
                )
                .await;
            assert!(s == 201 || s == 200, "{f}: {s} {v}");
        }
    }
}

pub fn device(id: i64, name: &str) -> Value {
    json!({"resource_id": id, "name": name, "client": true, "client_version": "5.00.9106.1000",
           "client_active": true, "os": "Microsoft Windows NT Workstation 10.0", "os_build": "10.0.19045",
           "join_type": "hybrid", "mdm_enrolled": false})
}

pub fn device_batch(ids: std::ops::Range<i64>) -> Value {
    let ups: Vec<Value> = ids
        .map(|i| json!({"key": i.to_string(), "record": device(i, &format!("PC-{i:05}"))}))
        .collect();
    json!({"upserts": ups, "deletes": []})
}

impl Cloud {
    /// Signs `upn` in through the device code flow and the `/devicelogin` page.
    pub async fn sign_in(&self, tenant: &str, upn: &str) -> String {
        let (s, dc) = self
            .form(
                &format!("/{tenant}/oauth2/v2.0/devicecode"),
                &[
                    ("client_id", auth::PUBLIC_CLIENT_ID),
                    ("scope", "api://cloudattach/.default offline_access"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{dc}");
        let r = self
            .http
            .post(self.url("/devicelogin"))
            .form(&[
                ("user_code", dc["user_code"].as_str().unwrap()),
                ("upn", upn),
                ("password", cloudattach_cloud::seed::DEV_PASSWORD),
                ("action", "approve"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (s, tok) = self
            .form(
                &format!("/{tenant}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                    ("client_id", auth::PUBLIC_CLIENT_ID),
                    ("device_code", dc["device_code"].as_str().unwrap()),
                ],
            )
            .await;
        assert_eq!(s, 200, "{tok}");
        tok["access_token"].as_str().unwrap().to_string()
    }
}

/// Registers a consented read/write app in contoso; returns (client id, app token).
pub async fn write_app(c: &Cloud, admin: &str, name: &str) -> (String, String) {
    let (s, a) = c
        .post(
            admin,
            "/v1.0/applications",
            json!({"displayName": name, "requiredResourceAccess": [{"resource": "api://cloudattach",
                   "permissions": ["CmCollectionData.read", "CmCollectionData.write"]}]}),
        )
        .await;
    assert_eq!(s, 201, "{a}");
    let id = a["id"].as_str().unwrap();
    let app_id = a["appId"].as_str().unwrap().to_string();
    let (s, v) = c
        .send(
            reqwest::Method::POST,
            admin,
            &format!("/v1.0/applications/{id}/grantAdminConsent"),
            None,
        )
        .await;
    assert!(s == 200 || s == 204, "{s} {v}");
    let (s, pw) = c
        .post(
            admin,
            &format!("/v1.0/applications/{id}/addPassword"),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{pw}");
    let (s, t) = c
        .app_token(CONTOSO, &app_id, pw["secretText"].as_str().unwrap())
        .await;
    assert_eq!(s, 200, "{t}");
    (app_id, t["access_token"].as_str().unwrap().to_string())
}

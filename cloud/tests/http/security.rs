//! Regression tests of the security review's findings.

use crate::common::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn hpath(rest: &str) -> String {
    format!("/api/v1/hierarchies/{HID}{rest}")
}

/// Sends a request over a raw connection: the headers and the first `split` bytes of `body`,
/// then (after `between` ran) the rest. Returns the status and the JSON body.
async fn split_request<F, Fut>(
    c: &Cloud,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    split: usize,
    between: F,
) -> (u16, Value)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut s = tokio::net::TcpStream::connect(c.running.addr)
        .await
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        c.running.addr,
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body[..split]).await.unwrap();
    s.flush().await.unwrap();
    between().await;
    s.write_all(&body[split..]).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    parse_response(&out)
}

fn parse_response(out: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn upload_racing_an_offboard_leaves_no_records_for_the_next_tenant() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    let body = serde_json::to_vec(&device_batch(1..201)).unwrap();
    let auth = format!("Bearer {admin}");
    let (s, v) = split_request(
        &c,
        "POST",
        &hpath("/upload/devices"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
        10,
        || async {
            // The handler has loaded the hierarchy and waits for the body: offboard now.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(c.delete(&admin, &hpath("")).await.0, 204);
        },
    )
    .await;
    assert_eq!(s, 404, "{v}");
    // Fabrikam onboards a hierarchy of its own: it must not see contoso's devices.
    let fab = c.sign_in(FABRIKAM, "admin@fabrikam.example").await;
    let fab_hid = "fab00000-0000-4000-8000-000000000009";
    let (s, v) = c
        .put(
            &fab,
            &format!("/api/v1/hierarchies/{fab_hid}"),
            json!({"site_code":"FB1","site_version":"2303","environment":"public"}),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, d) = c.get(&fab, "/api/v1/devices").await;
    assert_eq!((s, &d["@odata.count"]), (200, &json!(0)), "{d}");
    // Nor does contoso's re-onboarded hierarchy resurrect anything.
    c.onboard(&admin, &["tenant-attach"]).await;
    let (_, d) = c.get(&admin, "/api/v1/devices").await;
    assert_eq!(d["@odata.count"], 0, "{d}");
}

#[tokio::test]
async fn ext_upload_racing_a_feature_delete_writes_nothing() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["acme-inventory"]).await;
    let body = serde_json::to_vec(&json!({"upserts":[{"key":"a","record":{"x":1}}]})).unwrap();
    let auth = format!("Bearer {admin}");
    let (s, v) = split_request(
        &c,
        "POST",
        &hpath("/upload/ext/acme-inventory"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        &body,
        5,
        || async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                c.delete(&admin, &hpath("/features/acme-inventory")).await.0,
                204
            );
        },
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("FeatureNotEnabled")),
        "{v}"
    );
    c.onboard(&admin, &["acme-inventory"]).await;
    let (s, v) = c.get(&admin, &hpath("/ext/acme-inventory/records")).await;
    assert_eq!((s, &v["@odata.count"]), (200, &json!(0)), "{v}");
}

async fn fabrikam_code(c: &Cloud) -> Value {
    // Fabrikam codes are not auto-approved (the test server auto-approves a contoso user).
    let (s, dc) = c
        .form(
            &format!("/{FABRIKAM}/oauth2/v2.0/devicecode"),
            &[
                ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
                ("scope", "api://cloudattach/.default"),
            ],
        )
        .await;
    assert_eq!(s, 200, "{dc}");
    dc
}

async fn poll(c: &Cloud, dc: &Value) -> (u16, Value) {
    c.form(
        &format!("/{FABRIKAM}/oauth2/v2.0/token"),
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
            ("device_code", dc["device_code"].as_str().unwrap()),
        ],
    )
    .await
}

async fn devicelogin(c: &Cloud, code: &str, upn: &str, pw: &str, action: &str) -> u16 {
    c.http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", code),
            ("upn", upn),
            ("password", pw),
            ("action", action),
        ])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn devicelogin_invalidates_a_code_after_five_failed_attempts() {
    let c = start().await;
    let dc = fabrikam_code(&c).await;
    let code = dc["user_code"].as_str().unwrap();
    // Unknown users and wrong passwords both count.
    for i in 0..5 {
        let upn = if i % 2 == 0 {
            "nobody@fabrikam.example"
        } else {
            "admin@fabrikam.example"
        };
        assert_eq!(devicelogin(&c, code, upn, "wrong", "approve").await, 400);
    }
    let pw = cloudattach_cloud::seed::DEV_PASSWORD;
    assert_eq!(
        devicelogin(&c, code, "admin@fabrikam.example", pw, "approve").await,
        400
    );
    let (s, v) = poll(&c, &dc).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("expired_token")),
        "{v}"
    );
}

#[tokio::test]
async fn devicelogin_approves_only_on_action_approve_and_forbids_framing() {
    let c = start().await;
    let dc = fabrikam_code(&c).await;
    let code = dc["user_code"].as_str().unwrap();
    let pw = cloudattach_cloud::seed::DEV_PASSWORD;
    for action in ["bogus", ""] {
        assert_eq!(
            devicelogin(&c, code, "admin@fabrikam.example", pw, action).await,
            400
        );
    }
    let (s, v) = poll(&c, &dc).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_pending")),
        "{v}"
    );
    assert_eq!(
        devicelogin(&c, code, "admin@fabrikam.example", pw, "approve").await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(poll(&c, &dc).await.0, 200);
    let r = c.http.get(c.url("/devicelogin")).send().await.unwrap();
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
}

#[tokio::test]
async fn zstd_frames_with_a_huge_window_are_refused() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    let json = serde_json::to_vec(&device_batch(1..3)).unwrap();
    let encode = |wlog: u32| {
        let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        e.window_log(wlog).unwrap();
        e.long_distance_matching(true).unwrap();
        std::io::Write::write_all(&mut e, &json).unwrap();
        e.finish().unwrap()
    };
    let send = |b: Vec<u8>| {
        c.http
            .post(c.url(&hpath("/upload/devices")))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .header("content-encoding", "zstd")
            .body(b)
            .send()
    };
    // A 128 MiB window (what a zstd --long=27 stream declares) is refused…
    let r = send(encode(27)).await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "BadRequest", "{v}");
    // …a 16 MiB one is decoded.
    let r = send(encode(24)).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["upserted"], 2, "{v}");
}

#[tokio::test]
async fn huge_or_odd_skiptokens_are_refused_with_400() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    c.post(&admin, &hpath("/upload/devices"), device_batch(1..4))
        .await;
    for t in [
        "18446744073709551615",
        "9223372036854775808",
        "18446744073709551616",
        "-1",
        "+1",
        "1e3",
        "",
    ] {
        let (s, v) = c
            .get(&admin, &format!("/api/v1/devices?$top=1&$skiptoken={t}"))
            .await;
        assert_eq!(s, 400, "{t}: {v}");
        assert_eq!(v["error"]["message"], "invalid $skiptoken", "{t}");
    }
    let (s, v) = c.get(&admin, "/api/v1/devices?$top=1&$skiptoken=1").await;
    assert_eq!(
        (s, v["value"][0]["resource_id"].as_i64()),
        (200, Some(2)),
        "{v}"
    );
    assert!(
        v["@odata.nextLink"]
            .as_str()
            .unwrap()
            .contains("skiptoken=2")
    );
    let (s, v) = c.get(&admin, "/api/v1/devices?$skiptoken=1000000").await;
    assert_eq!((s, &v["value"]), (200, &json!([])), "{v}");
}

#[tokio::test]
async fn non_canonical_record_keys_are_refused() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach", "co-management"]).await;
    let (s, v) = c
        .post(&admin, &hpath("/upload/devices"), device_batch(1..2))
        .await;
    assert_eq!(s, 200, "{v}");
    for key in ["01", "+1", " 1", "1 ", "001"] {
        let b = json!({"upserts":[{"key": key, "record": device(1, "PC-DUP")}]});
        let (s, v) = c.post(&admin, &hpath("/upload/devices"), b).await;
        assert_eq!(s, 400, "{key:?}: {v}");
        let b =
            json!({"upserts":[{"key": key, "record": {"resource_id": 1, "state": "comanaged"}}]});
        let (s, v) = c.post(&admin, &hpath("/upload/comanagement"), b).await;
        assert_eq!(s, 400, "{key:?}: {v}");
    }
    let (_, d) = c.get(&admin, "/api/v1/devices").await;
    assert_eq!(d["@odata.count"], 1, "{d}");
}

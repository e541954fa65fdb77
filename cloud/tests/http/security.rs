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

#[tokio::test]
async fn hierarchy_update_keeps_owner_and_site_name_and_blocks_takeover() {
    let c = start().await;
    let admin = c.admin().await;
    let (a_id, a) = write_app(&c, &admin, "A").await;
    let (_, b) = write_app(&c, &admin, "B").await;
    let body = json!({"site_code":"PS1","site_name":"Primary","site_version":"2303","environment":"public"});
    let (s, v) = c.put(&a, &hpath(""), body).await;
    assert_eq!((s, v["app_id"].as_str()), (201, Some(a_id.as_str())), "{v}");
    // A user's update without app_id or site_name keeps both.
    let (s, v) = c
        .put(
            &admin,
            &hpath(""),
            json!({"site_code":"PS1","site_version":"2309","environment":"public"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["app_id"], json!(a_id), "{v}");
    assert_eq!(v["site_name"], "Primary", "{v}");
    assert_eq!(v["site_version"], "2309", "{v}");
    // So app B still can't take the hierarchy over, nor write to it.
    let (s, v) = c
        .put(
            &b,
            &hpath(""),
            json!({"site_code":"PS1","site_version":"2309","environment":"public"}),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    let (s, v) = c.get(&admin, &hpath("")).await;
    assert_eq!((s, &v["app_id"]), (200, &json!(a_id)), "{v}");
    // The owner itself still updates it; an explicit site_name replaces the stored one.
    let (s, v) = c
        .put(
            &a,
            &hpath(""),
            json!({"site_code":"PS1","site_name":"Renamed","site_version":"2309","environment":"public"}),
        )
        .await;
    assert_eq!((s, v["site_name"].as_str()), (200, Some("Renamed")), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_a_new_hierarchy_never_fail() {
    let c = start().await;
    let admin = c.admin().await;
    for round in 0..4 {
        let url = c.url(&format!(
            "/api/v1/hierarchies/5a1e0000-0000-4000-8000-00000000010{round}"
        ));
        let body = json!({"site_code":"PS1","site_version":"2303","environment":"public"});
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..24 {
            let (http, url, body, tok) = (c.http.clone(), url.clone(), body.clone(), admin.clone());
            set.spawn(async move {
                let r = http
                    .put(url)
                    .bearer_auth(tok)
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                let s = r.status().as_u16();
                (s, r.text().await.unwrap_or_default())
            });
        }
        let res = set.join_all().await;
        for (s, v) in &res {
            assert!(*s == 200 || *s == 201, "{s} {v}");
        }
        assert_eq!(res.iter().filter(|(s, _)| *s == 201).count(), 1, "{res:?}");
    }
}

#[tokio::test]
async fn slow_headers_are_cut_off_and_connections_are_capped() {
    let c = start_with(cloudattach_cloud::ServeOptions {
        header_read_timeout_secs: 1,
        max_connections: 2,
        ..opts()
    })
    .await;
    // Slowloris: a client that never finishes its headers is disconnected.
    let mut slow = tokio::net::TcpStream::connect(c.running.addr)
        .await
        .unwrap();
    slow.write_all(b"GET /devicelogin HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(r.is_ok(), "the connection was not closed");
    // Two idle connections take both slots: a third client waits until one closes.
    let idle1 = tokio::net::TcpStream::connect(c.running.addr)
        .await
        .unwrap();
    let _idle2 = tokio::net::TcpStream::connect(c.running.addr)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let http = reqwest::Client::new();
    let t = std::time::Instant::now();
    let waiting = http.get(c.url("/devicelogin")).send();
    let r = tokio::time::timeout(Duration::from_millis(300), waiting).await;
    assert!(r.is_err(), "a third connection was served");
    drop(idle1);
    let r = http.get(c.url("/devicelogin")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn router_and_extractor_errors_are_json() {
    let c = start().await;
    let admin = c.admin().await;
    // 405, with the Allow header kept.
    let r = c
        .http
        .patch(c.url("/api/v1/devices"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.headers().contains_key("allow"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "MethodNotAllowed", "{v}");
    let r = c
        .http
        .get(c.url(&format!("/{CONTOSO}/oauth2/v2.0/token")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_request", "{v}");
    // An invalid UTF-8 path segment.
    let r = c
        .http
        .get(c.url("/api/v1/hierarchies/%FF%FE"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "BadRequest", "{v}");
    assert!(v["error"]["message"].is_string(), "{v}");
    // Form bodies over the limit on the OAuth endpoints.
    let big = format!("grant_type=client_credentials&pad={}", "x".repeat(3 << 20));
    for path in [
        format!("/{CONTOSO}/oauth2/v2.0/token"),
        "/devicelogin".into(),
    ] {
        let r = c
            .http
            .post(c.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_request", "{path}: {v}");
        assert!(v["error_description"].is_string(), "{path}: {v}");
    }
}

#[tokio::test]
async fn array_bodies_are_not_envelopes() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    for body in [
        "[]",
        " [[], []]",
        "[[{\"key\":\"1\",\"record\":{}}]]",
        "null",
        "\"x\"",
    ] {
        let r = c
            .http
            .post(c.url(&hpath("/upload/devices")))
            .bearer_auth(&admin)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "BadRequest", "{body}: {v}");
    }
    // The other JSON endpoints want objects too.
    let r = c
        .http
        .put(c.url(&hpath("")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(r#"["PS1", "Primary", "2303", "public", null]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (s, v) = c.post(&admin, &hpath("/upload/devices"), json!({})).await;
    assert_eq!(s, 200, "{v}");
}

#[tokio::test]
async fn refresh_token_at_the_wrong_tenant_or_client_is_not_consumed() {
    let c = start().await;
    let (_, tok) = c.user_token(CONTOSO).await;
    let rt = tok["refresh_token"].as_str().unwrap();
    let public = cloudattach_cloud::auth::PUBLIC_CLIENT_ID;
    for (tenant, client) in [
        (FABRIKAM, public),
        (CONTOSO, cloudattach_cloud::seed::CONTOSO_READER_APP_ID),
    ] {
        let (s, v) = c
            .form(
                &format!("/{tenant}/oauth2/v2.0/token"),
                &[
                    ("grant_type", "refresh_token"),
                    ("client_id", client),
                    ("refresh_token", rt),
                ],
            )
            .await;
        assert_eq!(
            (s, v["error"].as_str()),
            (400, Some("invalid_grant")),
            "{v}"
        );
    }
    let refresh = [
        ("grant_type", "refresh_token"),
        ("client_id", public),
        ("refresh_token", rt),
    ];
    let path = format!("/{CONTOSO}/oauth2/v2.0/token");
    let (s, v) = c.form(&path, &refresh).await;
    assert_eq!(s, 200, "{v}");
    // Rotation: it is consumed now.
    let (s, v) = c.form(&path, &refresh).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("invalid_grant")),
        "{v}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn data_dir_and_database_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let parent = tempfile::tempdir().unwrap();
    let data = parent.path().join("a").join("cloud");
    let running = cloudattach_cloud::start(cloudattach_cloud::ServeOptions {
        data: Some(data.clone()),
        ..opts()
    })
    .await
    .unwrap();
    // Write something so that the WAL files exist.
    let c = reqwest::Client::new();
    let r = c
        .post(format!(
            "{}/{CONTOSO}/oauth2/v2.0/devicecode",
            running.base_url()
        ))
        .form(&[
            ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
            ("scope", "api://cloudattach/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700, "data dir");
    for f in ["cloud.db", "cloud.db-wal", "cloud.db-shm"] {
        let p = data.join(f);
        if p.exists() || f == "cloud.db" {
            assert_eq!(mode(&p), 0o600, "{f}");
        }
    }
    assert!(data.join("cloud.db-wal").exists());
    running.shutdown().await;
}

#[tokio::test]
async fn lengths_resource_ids_and_site_versions_are_checked() {
    let c = start().await;
    let admin = c.admin().await;
    let hp = hpath("");
    let put = |b: Value| c.put(&admin, &hp, b);
    for v in ["2313", "2300", "1612", "0001", "23A3", "230"] {
        let (s, r) = put(json!({"site_code":"PS1","site_version":v,"environment":"public"})).await;
        assert_eq!(s, 400, "{v}: {r}");
    }
    let long = "n".repeat(257);
    let (s, r) = put(
        json!({"site_code":"PS1","site_name":long,"site_version":"2303","environment":"public"}),
    )
    .await;
    assert_eq!(s, 400, "{r}");
    let (s, r) = put(json!({"site_code":"PS1","site_name":"é".repeat(256),"site_version":"1701","environment":"public"})).await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = c
        .put(
            &admin,
            &hpath("/features/tenant-attach"),
            json!({"settings":{}}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    // Device strings and resource ids.
    let upath = hpath("/upload/devices");
    let up = |b: Value| c.post(&admin, &upath, b);
    let (s, r) = up(json!({"upserts":[{"key":"1","record":device(1, &"N".repeat(1025))}]})).await;
    assert_eq!(s, 400, "{r}");
    let mut d = device(2, "PC-2");
    d["os"] = json!("x".repeat(5000));
    let (s, r) = up(json!({"upserts":[{"key":"2","record":d}]})).await;
    assert_eq!(s, 400, "{r}");
    let (s, r) = up(json!({"upserts":[{"key":"-5","record":device(-5, "NEG")}]})).await;
    assert_eq!(s, 400, "{r}");
    let (s, r) = up(json!({"upserts":[{"key":"0","record":device(0, "ZERO")}]})).await;
    assert_eq!(s, 400, "{r}");
    let (s, r) = up(json!({"upserts":[{"key":"3","record":device(3, &"é".repeat(1024))}]})).await;
    assert_eq!(s, 200, "{r}");
    let (_, d) = c.get(&admin, "/api/v1/devices").await;
    assert_eq!(d["@odata.count"], 1, "{d}");
    // Graph displayName on PATCH is capped like on create.
    let (s, a) = c
        .post(&admin, "/v1.0/applications", json!({"displayName": "X"}))
        .await;
    assert_eq!(s, 201, "{a}");
    let path = format!("/v1.0/applications/{}", a["id"].as_str().unwrap());
    let (s, r) = c
        .send(
            reqwest::Method::PATCH,
            &admin,
            &path,
            Some(json!({"displayName": "d".repeat(257)})),
        )
        .await;
    assert_eq!(s, 400, "{r}");
    let (_, a) = c.get(&admin, &path).await;
    assert_eq!(a["displayName"], "X", "{a}");
}

async fn contoso_code(c: &Cloud) -> reqwest::Response {
    c.http
        .post(c.url(&format!("/{CONTOSO}/oauth2/v2.0/devicecode")))
        .form(&[
            ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
            ("scope", "api://cloudattach/.default"),
        ])
        .send()
        .await
        .unwrap()
}

async fn held_device_codes(c: &Cloud) -> u64 {
    c.stats().await["device_codes"]
        .as_u64()
        .expect("device_codes")
}

/// Unauthenticated device code requests can't grow the service: once an application has as many
/// unfinished codes in a tenant as the bound allows, further requests are refused with an OAuth
/// error (and `Retry-After`), the codes held stay within the bound, other tenants are not
/// affected, and a finished sign-in or an expired code makes room again.
#[tokio::test]
async fn device_codes_are_bounded_per_application_and_tenant() {
    let mut o = opts();
    o.auto_approve = None;
    o.max_device_codes = 5;
    let c = start_with(o).await;
    let mut codes = Vec::new();
    for _ in 0..5 {
        let r = contoso_code(&c).await;
        assert_eq!(r.status(), 200);
        codes.push(r.json::<Value>().await.unwrap());
    }
    for _ in 0..50 {
        let r = contoso_code(&c).await;
        assert_eq!(r.status(), 400);
        assert!(r.headers().contains_key("retry-after"));
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "temporarily_unavailable", "{v}");
        let d = v["error_description"].as_str().unwrap();
        assert!(
            d.contains("too many sign-ins") && d.contains("try again in"),
            "{d}"
        );
    }
    assert_eq!(held_device_codes(&c).await, 5);
    // Another tenant has its own bound.
    let fab = fabrikam_code(&c).await;
    assert!(fab["device_code"].is_string());
    // A finished sign-in makes room.
    let pw = cloudattach_cloud::seed::DEV_PASSWORD;
    let code = codes[0]["user_code"].as_str().unwrap();
    assert_eq!(
        devicelogin(&c, code, "admin@contoso.example", pw, "approve").await,
        200
    );
    let (s, v) = c
        .form(
            &format!("/{CONTOSO}/oauth2/v2.0/token"),
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
                ("device_code", codes[0]["device_code"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(contoso_code(&c).await.status(), 200);
    assert_eq!(contoso_code(&c).await.status(), 400);
    assert!(held_device_codes(&c).await <= 6);
    c.running.shutdown().await;

    // Expired codes are purged: they neither block new codes nor pile up.
    let mut o = opts();
    o.auto_approve = None;
    o.max_device_codes = 3;
    o.device_code_expiry_secs = 1;
    let c = start_with(o).await;
    for round in 0..3 {
        for _ in 0..3 {
            assert_eq!(contoso_code(&c).await.status(), 200, "round {round}");
        }
        assert_eq!(contoso_code(&c).await.status(), 400, "round {round}");
        assert!(held_device_codes(&c).await <= 3);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    c.running.shutdown().await;
}

async fn devicelogin_text(c: &Cloud, code: &str, upn: &str, pw: &str) -> (u16, String) {
    let r = c
        .http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", code),
            ("upn", upn),
            ("password", pw),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Smart lockout: 10 wrong passwords in a row lock the account; while it is locked even the
/// right password is refused with a message saying so (other accounts still sign in), and
/// after the lockout the right password works.
#[tokio::test]
async fn ten_wrong_passwords_lock_the_account_for_a_while() {
    let mut o = opts();
    o.auto_approve = None;
    o.lockout_secs = 2;
    let c = start_with(o).await;
    let pw = cloudattach_cloud::seed::DEV_PASSWORD;
    // A code allows 5 failed sign-ins, so the 10 take two codes.
    for n in 0..2 {
        let dc = fabrikam_code(&c).await;
        let code = dc["user_code"].as_str().unwrap();
        for i in 0..5 {
            let (s, page) = devicelogin_text(&c, code, "admin@fabrikam.example", "wrong").await;
            assert_eq!(s, 400);
            assert!(page.contains("Wrong user name or password"), "{page}");
            let last = n == 1 && i == 4;
            assert_eq!(
                page.contains("locked"),
                last,
                "attempt {}: {page}",
                n * 5 + i + 1
            );
        }
    }
    let dc = fabrikam_code(&c).await;
    let code = dc["user_code"].as_str().unwrap();
    let (s, page) = devicelogin_text(&c, code, "admin@fabrikam.example", pw).await;
    assert_eq!(s, 400);
    assert!(
        page.contains("AADSTS50053") && page.contains("Your account is locked"),
        "{page}"
    );
    // The lockout is the account's, not the code's or the address's.
    let other = fabrikam_code(&c).await;
    let (s, page) = devicelogin_text(
        &c,
        other["user_code"].as_str().unwrap(),
        "user@fabrikam.example",
        pw,
    )
    .await;
    assert_eq!(s, 200, "{page}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (s, page) = devicelogin_text(&c, code, "admin@fabrikam.example", pw).await;
    assert_eq!(s, 200, "{page}");
    let (s, v) = poll(&c, &dc).await;
    assert_eq!(s, 200, "{v}");
    c.running.shutdown().await;
}

/// A flood of wrong user codes from one address is throttled (`429` with `Retry-After`), so
/// codes can't be guessed at speed; the throttled address is refused even with a valid code.
#[tokio::test]
async fn a_flood_of_wrong_user_codes_is_throttled() {
    let mut o = opts();
    o.auto_approve = None;
    let limit = o.sign_in_failures_per_address;
    let c = start_with(o).await;
    let pw = cloudattach_cloud::seed::DEV_PASSWORD;
    for i in 0..limit {
        let code = format!("WRONG{i:04}");
        assert_eq!(
            devicelogin(&c, &code, "admin@fabrikam.example", pw, "approve").await,
            400
        );
    }
    let dc = fabrikam_code(&c).await;
    let r = c
        .http
        .post(c.url("/devicelogin"))
        .form(&[
            ("user_code", dc["user_code"].as_str().unwrap()),
            ("upn", "admin@fabrikam.example"),
            ("password", pw),
            ("action", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let page = r.text().await.unwrap();
    assert!(page.contains("Too many failed sign-in attempts"), "{page}");
    let (s, v) = poll(&c, &dc).await;
    assert_eq!(v["error"], "authorization_pending", "{s} {v}");
    c.running.shutdown().await;
}

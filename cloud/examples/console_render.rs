//! Times the admin center's pages on a large tenant: Home, and Devices (first page, a search, a
//! deep page, sorted, filtered), plus the report pages, as a signed-in administrator sees them.
//!
//! ```text
//! cargo run --release -p cloudattach-cloud --example console_render -- [DEVICES] [--data DIR]
//! ```
//!
//! Starts the cloud in process on `127.0.0.1:0`, attaches one hierarchy with every feature and
//! uploads DEVICES devices (default 1,000,000; a third of them with a co-management record, half
//! with Defender data) through the gateway, unless `--data DIR` already holds them from an
//! earlier run. Then signs in to the admin center through its authorization code flow, as a
//! browser does, and prints the median of 5 renders of each page (server time to the last byte
//! of HTML, over loopback), one line per page, then one JSON line with every figure.

use serde_json::{Value, json};
use std::time::{Duration, Instant};

const HID: &str = "5a1e0000-0000-4000-8000-0000000000be";
const TENANT: &str = "contoso.example";

fn device(i: i64) -> Value {
    let os_build = ["10.0.19045", "10.0.22631", "10.0.14393", "10.0.17763"][(i % 4) as usize];
    let os = if i % 4 == 3 {
        "Microsoft Windows NT Server 10.0"
    } else {
        "Microsoft Windows NT Workstation 10.0"
    };
    let join = ["hybrid", "domain", "entra"][(i % 3) as usize];
    json!({"resource_id": i, "name": format!("PC-{i:07}"), "client": true,
           "client_version": if i % 10 == 0 { "5.00.8412.1000" } else { "5.00.9106.1000" }, "client_active": true, "os": os,
           "os_build": os_build, "join_type": join, "mdm_enrolled": i % 9 == 0})
}

async fn upload(http: &reqwest::Client, base: &str, tok: &str, channel: &str, body: Value) {
    let r = http
        .post(format!("{base}/api/v1/hierarchies/{HID}/upload/{channel}"))
        .bearer_auth(tok)
        .json(&body)
        .send()
        .await
        .expect("upload");
    let status = r.status();
    if !status.is_success() {
        panic!(
            "upload {channel}: {status} {}",
            r.text().await.unwrap_or_default()
        );
    }
}

async fn fill(http: &reqwest::Client, base: &str, tok: &str, n: i64) {
    let put = |path: String, body: Value| {
        let http = http.clone();
        let tok = tok.to_string();
        async move {
            let r = http
                .put(path)
                .bearer_auth(tok)
                .json(&body)
                .send()
                .await
                .expect("put");
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    put(
        format!("{base}/api/v1/hierarchies/{HID}"),
        json!({"site_code":"PS1","site_name":"Benchmark","site_version":"2303","environment":"public"}),
    )
    .await;
    for f in [
        "tenant-attach",
        "endpoint-analytics",
        "defender-reporting",
        "co-management",
    ] {
        put(
            format!("{base}/api/v1/hierarchies/{HID}/features/{f}"),
            json!({"settings": {}}),
        )
        .await;
    }
    let started = Instant::now();
    let batch = 5000;
    let mut i = 1;
    while i <= n {
        let end = (i + batch).min(n + 1);
        let ups: Vec<Value> = (i..end)
            .map(|k| json!({"key": k.to_string(), "record": device(k)}))
            .collect();
        upload(http, base, tok, "devices", json!({"upserts": ups})).await;
        let cm: Vec<Value> = (i..end)
            .filter(|k| k % 3 == 0)
            .map(|k| {
                let states = ["eligible", "scheduledForEnrollment", "comanaged"];
                let state = states[(k % 9 / 3) as usize];
                json!({"key": k.to_string(), "record": {"resource_id": k, "state": state}})
            })
            .collect();
        upload(http, base, tok, "comanagement", json!({"upserts": cm})).await;
        let def: Vec<Value> = (i..end)
            .filter(|k| k % 2 == 0)
            .map(|k| {
                json!({"key": k.to_string(), "record": {"resource_id": k, "defender": {
                    "defender_enabled": k % 20 != 0, "rtp_enabled": true, "signature_out_of_date": k % 7 == 0,
                    "quick_scan_overdue": false, "full_scan_overdue": false, "reboot_required": false,
                    "full_scan_required": false, "computer_state": 0, "product_status": 0,
                    "tamper_protection_enabled": true}}})
            })
            .collect();
        upload(http, base, tok, "defender", json!({"upserts": def})).await;
        i = end;
        if (i - 1) % 100_000 == 0 {
            eprintln!(
                "  uploaded {} devices ({:.0} s)",
                i - 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
}

fn cookie_of(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn hidden_fields(html: &str) -> Vec<(String, String)> {
    // The sign-in page's hidden inputs: `<input type="hidden" name="…" value="…">`.
    html.split("<input type=\"hidden\" ")
        .skip(1)
        .filter_map(|rest| {
            let name = rest.split("name=\"").nth(1)?.split('"').next()?;
            let value = rest.split("value=\"").nth(1)?.split('"').next()?;
            Some((
                name.to_string(),
                value.replace("&amp;", "&").replace("&quot;", "\""),
            ))
        })
        .collect()
}

/// Signs the administrator in to the admin center as a browser does; the session cookie.
async fn console_session(base: &str) -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = http
        .get(format!("{base}/admin/signin"))
        .send()
        .await
        .unwrap();
    let signin = cookie_of(&r, "ca_signin").expect("sign-in cookie");
    let auth = location(&r);
    let page = http
        .get(format!("{base}{auth}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut form = hidden_fields(&page);
    form.push(("upn".into(), format!("admin@{TENANT}")));
    form.push((
        "password".into(),
        cloudattach_cloud::seed::DEV_PASSWORD.into(),
    ));
    form.push(("decision".into(), "signin".into()));
    let r = http
        .post(format!("{base}/organizations/oauth2/v2.0/authorize"))
        .form(&form)
        .send()
        .await
        .unwrap();
    let r = if r.status().is_redirection() {
        r
    } else {
        let consent = hidden_fields(&r.text().await.unwrap());
        let mut f: Vec<(String, String)> = consent;
        f.push(("decision".into(), "accept".into()));
        http.post(format!("{base}/organizations/oauth2/v2.0/authorize"))
            .form(&f)
            .send()
            .await
            .unwrap()
    };
    let callback = location(&r);
    let r = http
        .get(callback)
        .header("cookie", signin)
        .send()
        .await
        .unwrap();
    cookie_of(&r, "ca_session").expect("session cookie")
}

async fn time_page(http: &reqwest::Client, base: &str, cookie: &str, path: &str) -> f64 {
    let mut v = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let r = http
            .get(format!("{base}{path}"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let body = r.text().await.unwrap();
        assert!(body.contains("</html>"), "{path}: a whole page");
        v.push(t.elapsed().as_secs_f64());
    }
    v.sort_by(f64::total_cmp);
    v[2]
}

#[tokio::main]
async fn main() {
    let mut n: i64 = 1_000_000;
    let mut data: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(Into::into),
            x => n = x.replace('_', "").parse().expect("DEVICES is a number"),
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = data.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).expect("data dir");
    let opts = cloudattach_cloud::ServeOptions {
        addr: "127.0.0.1:0".into(),
        data: Some(dir.clone()),
        auto_approve: Some(format!("admin@{TENANT}")),
        device_code_interval_secs: 1,
        ..Default::default()
    };
    let cloud = cloudattach_cloud::start(opts)
        .await
        .expect("start the cloud");
    let base = cloud.base_url();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    // An administrator's token (device code, auto-approved).
    let dc: Value = http
        .post(format!("{base}/{TENANT}/oauth2/v2.0/devicecode"))
        .form(&[
            ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
            ("scope", "api://cloudattach/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let v: Value = http
            .post(format!("{base}/{TENANT}/oauth2/v2.0/token"))
            .form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("client_id", cloudattach_cloud::auth::PUBLIC_CLIENT_ID),
                ("device_code", dc["device_code"].as_str().unwrap()),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(t) = v["access_token"].as_str() {
            break t.to_string();
        }
    };
    let held: Value = http
        .get(format!("{base}/api/v1/devices?$top=1"))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let have = held["@odata.count"].as_i64().unwrap_or(0);
    if have < n {
        eprintln!("uploading {n} devices into {} …", dir.display());
        let t = Instant::now();
        fill(&http, &base, &tok, n).await;
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
    } else {
        eprintln!("{have} devices already in {}", dir.display());
        n = have;
    }
    let cookie = console_session(&base).await;
    let deep = (n as u64).div_ceil(50) * 9 / 10;
    let pages: Vec<(&str, String)> = vec![
        ("home", "/admin/".into()),
        ("devices_first_page", "/admin/devices".into()),
        ("devices_search", "/admin/devices?q=PC-00123".into()),
        ("devices_deep_page", format!("/admin/devices?page={deep}")),
        (
            "devices_sorted_by_name_desc",
            "/admin/devices?sort=-name".into(),
        ),
        (
            "devices_filter_comanaged",
            "/admin/devices?comanagement=comanaged".into(),
        ),
        (
            "devices_filter_defender_unhealthy",
            "/admin/devices?defender=unhealthy".into(),
        ),
        ("device", format!("/admin/hierarchies/{HID}/devices/123")),
        ("comanagement", "/admin/comanagement".into()),
        ("antivirus", "/admin/antivirus".into()),
        ("endpoint_analytics", "/admin/endpoint-analytics".into()),
    ];
    let mut out = serde_json::Map::new();
    out.insert("devices".into(), json!(n));
    println!("admin center render times, {n} devices (median of 5, seconds):");
    for (name, path) in &pages {
        let s = time_page(&http, &base, &cookie, path).await;
        println!("  {name:<36} {s:>8.3}  {path}");
        out.insert(name.to_string(), json!((s * 1000.0).round() / 1000.0));
    }
    println!("{}", Value::Object(out));
    cloud.shutdown().await;
}

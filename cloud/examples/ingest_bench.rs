//! Device ingest benchmark: batches of 5,000 devices.
//!
//! `cargo run --release -p cloudattach-cloud --example ingest_bench [TOTAL_DEVICES]`
//!
//! Prints devices/s for (1) the store path the upload endpoint runs (parse + validate + hash,
//! then one SQLite transaction per batch with prepared statements), new and unchanged; and (2)
//! the whole HTTP path (zstd-compressed JSON over loopback to a running service).

use cloudattach_cloud::store::{HierarchyUpsert, Store, Tenant};
use cloudattach_cloud::{Channel, ServeOptions, SqliteStore, prepare_batch};
use serde_json::{Value, json};
use std::time::Instant;

const BATCH: usize = 5_000;

fn device(i: usize) -> Value {
    json!({"resource_id": 16_777_216 + i, "name": format!("PC-{i:07}"), "client": true,
           "client_version": "5.00.9106.1000", "client_active": true,
           "os": "Microsoft Windows NT Workstation 10.0", "os_build": "10.0.19045",
           "join_type": if i.is_multiple_of(3) { "entra" } else { "hybrid" }, "mdm_enrolled": i.is_multiple_of(7),
           "entra_device_id": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
           "primary_user": format!("user{i}@contoso.example"), "model": "Latitude 7440",
           "manufacturer": "Dell Inc.", "serial_number": format!("SN{i:09}"),
           "domain": "corp.contoso.example", "sku": "Enterprise", "last_active": "2026-11-20T08:00:00Z"})
}

fn batch(start: usize, rev: u32) -> Vec<u8> {
    let ups: Vec<Value> = (start..start + BATCH)
        .map(|i| {
            let mut d = device(i);
            if rev > 0 {
                d["last_active"] = json!(format!("2026-11-2{rev}T08:00:00Z"));
            }
            json!({"key": (16_777_216 + i).to_string(), "record": d})
        })
        .collect();
    serde_json::to_vec(&json!({"upserts": ups})).unwrap()
}

fn report(what: &str, n: usize, secs: f64) {
    println!(
        "{what:<46} {n:>8} devices in {secs:>7.3} s = {:>9.0} devices/s",
        n as f64 / secs
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let total = total.div_ceil(BATCH) * BATCH;
    let dir = tempfile::tempdir().unwrap();
    let store = if std::env::var("BENCH_MEM").is_ok() {
        SqliteStore::open_in_memory().unwrap()
    } else {
        SqliteStore::open(dir.path()).unwrap()
    };
    store
        .create_tenant(&Tenant {
            id: "t".into(),
            display_name: "bench".into(),
            domains: vec!["bench.example".into()],
            use_intune_rbac: false,
        })
        .unwrap();
    let (h, _) = store
        .upsert_hierarchy(&HierarchyUpsert {
            tenant_id: "t".into(),
            hierarchy_id: "h".into(),
            site_code: "PS1".into(),
            site_name: None,
            site_version: "2303".into(),
            environment: "public".into(),
            app_id: None,
            caller_app: None,
            now: String::new(),
        })
        .unwrap();
    store
        .put_feature(h.row, "tenant-attach", &json!({"upload":"all"}), "now")
        .unwrap();
    let bodies: Vec<Vec<u8>> = (0..total / BATCH).map(|b| batch(b * BATCH, 0)).collect();
    let bodies2: Vec<Vec<u8>> = (0..total / BATCH).map(|b| batch(b * BATCH, 1)).collect();
    let mb = bodies.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    println!("{total} devices in batches of {BATCH} ({mb:.1} MB of JSON)");

    for (label, set) in [
        ("store: new devices", &bodies),
        ("store: same batches again (unchanged)", &bodies),
        ("store: every device changed", &bodies2),
    ] {
        let t = Instant::now();
        let mut prep = 0.0;
        for b in set {
            let t0 = Instant::now();
            let (ups, dels) = prepare_batch(&Channel::Devices, b).unwrap();
            prep += t0.elapsed().as_secs_f64();
            store
                .apply_batch(
                    "t",
                    h.row,
                    "devices",
                    "tenant-attach",
                    &ups,
                    &dels,
                    false,
                    &[],
                    "now",
                )
                .unwrap();
        }
        let secs = t.elapsed().as_secs_f64();
        report(label, total, secs);
        println!(
            "{:<46} (parse+validate {:.0}%, SQLite transaction {:.0}%)",
            "",
            100.0 * prep / secs,
            100.0 * (secs - prep) / secs
        );
    }
    // HTTP path.
    let hdir = tempfile::tempdir().unwrap();
    let running = cloudattach_cloud::start(ServeOptions {
        addr: "127.0.0.1:0".into(),
        data: Some(hdir.path().to_path_buf()),
        auto_approve: Some("admin@contoso.example".into()),
        ..ServeOptions::default()
    })
    .await
    .unwrap();
    let base = running.base_url();
    let http = reqwest::Client::new();
    let dc: Value = http
        .post(format!("{base}/contoso.example/oauth2/v2.0/devicecode"))
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
    let tok: Value = http
        .post(format!("{base}/contoso.example/oauth2/v2.0/token"))
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
    let at = tok["access_token"].as_str().unwrap().to_string();
    let zipped: Vec<Vec<u8>> = bodies
        .iter()
        .map(|b| zstd::encode_all(&b[..], 3).unwrap())
        .collect();
    for (concurrency, hid) in [
        (1usize, "5a1e0000-0000-4000-8000-0000000000b1"),
        (2, "5a1e0000-0000-4000-8000-0000000000b2"),
    ] {
        http.put(format!("{base}/api/v1/hierarchies/{hid}"))
            .bearer_auth(&at)
            .json(&json!({"site_code":"PS1","site_version":"2303","environment":"public"}))
            .send()
            .await
            .unwrap();
        http.put(format!(
            "{base}/api/v1/hierarchies/{hid}/features/tenant-attach"
        ))
        .bearer_auth(&at)
        .json(&json!({"settings":{}}))
        .send()
        .await
        .unwrap();
        let t = Instant::now();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let zipped = std::sync::Arc::new(zipped.clone());
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let (http, base, at, next, zipped) = (
                http.clone(),
                base.clone(),
                at.clone(),
                next.clone(),
                zipped.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(z) = zipped.get(i) else { break };
                    let r = http
                        .post(format!("{base}/api/v1/hierarchies/{hid}/upload/devices"))
                        .bearer_auth(&at)
                        .header("content-type", "application/json")
                        .header("content-encoding", "zstd")
                        .body(z.clone())
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "{}", r.status());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        report(
            &format!("http: new devices, zstd, {concurrency} request(s) at a time"),
            total,
            t.elapsed().as_secs_f64(),
        );
    }
    running.shutdown().await;
}

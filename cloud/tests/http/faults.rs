use crate::common::*;
use serde_json::json;
use std::time::{Duration, Instant};

fn fault_opts() -> cloudattach_cloud::ServeOptions {
    cloudattach_cloud::ServeOptions {
        fault_seed: Some(42),
        ..opts()
    }
}

#[tokio::test]
async fn fault_429_with_retry_after_and_early_retry_counter() {
    let mut o = fault_opts();
    o.fault_429 = 1.0;
    let c = start_with(o).await;
    let reader = c.reader().await; // identity endpoints are never faulted
    let r = c
        .http
        .get(c.url("/api/v1/overview"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    // Retrying at once is an early retry; waiting is not.
    c.http
        .get(c.url("/api/v1/overview"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let s = c.stats().await;
    assert_eq!(s["early_retries"], 1, "{s}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.http
        .get(c.url("/api/v1/overview"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    let s = c.stats().await;
    assert_eq!(s["early_retries"], 1, "{s}");
    assert_eq!(s["faults"]["429"], 3);
    assert_eq!(s["requests"], 3);
}

#[tokio::test]
async fn fault_429_bare_5xx_latency() {
    let mut o = fault_opts();
    o.fault_429_bare = 1.0;
    let c = start_with(o).await;
    let reader = c.reader().await;
    let r = c
        .http
        .get(c.url("/api/v1/overview"))
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_none());
    assert_eq!(c.stats().await["faults"]["429_bare"], 1);

    let mut o = fault_opts();
    o.fault_5xx = 1.0;
    o.fault_latency_ms = 150;
    let c = start_with(o).await;
    let admin = c.admin().await;
    let t = Instant::now();
    let mut codes = vec![];
    for _ in 0..6 {
        let r = c
            .http
            .put(c.url(&format!("/api/v1/hierarchies/{HID}")))
            .bearer_auth(&admin)
            .json(&json!({"site_code":"PS1","site_version":"2303","environment":"public"}))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert!(t.elapsed() >= Duration::from_millis(6 * 150));
    assert!(codes.iter().all(|c| *c == 500 || *c == 503), "{codes:?}");
    assert_eq!(c.stats().await["faults"]["5xx"], 6);
    // With the same seed, the same sequence of 500/503.
    let mut o = fault_opts();
    o.fault_5xx = 1.0;
    let c2 = start_with(o).await;
    let admin2 = c2.admin().await;
    let mut codes2 = vec![];
    for _ in 0..6 {
        let r = c2
            .http
            .put(c2.url(&format!("/api/v1/hierarchies/{HID}")))
            .bearer_auth(&admin2)
            .json(&json!({"site_code":"PS1","site_version":"2303","environment":"public"}))
            .send()
            .await
            .unwrap();
        codes2.push(r.status().as_u16());
    }
    assert_eq!(codes, codes2);
}

#[tokio::test]
async fn fault_drop_closes_the_connection() {
    let mut o = fault_opts();
    o.fault_drop = 1.0;
    let c = start_with(o).await;
    let reader = c.reader().await;
    let r = c
        .http
        .get(c.url("/api/v1/overview"))
        .bearer_auth(&reader)
        .send()
        .await;
    let e = r.expect_err("a connection error");
    assert!(!e.is_status(), "{e}");
    assert_eq!(c.stats().await["faults"]["drop"], 1);
    // Identity endpoints are not faulted.
    assert_eq!(
        c.app_token(
            CONTOSO,
            cloudattach_cloud::seed::CONTOSO_READER_APP_ID,
            cloudattach_cloud::seed::DEV_SECRET
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn fault_probability_is_reproducible_with_a_seed() {
    let run = || async {
        let mut o = fault_opts();
        o.fault_429 = 0.5;
        let c = start_with(o).await;
        let reader = c.reader().await;
        let mut v = vec![];
        for i in 0..20 {
            let r = c
                .http
                .get(c.url(&format!("/api/v1/devices?name=x{i}")))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            v.push(r.status().as_u16());
        }
        v
    };
    let a = run().await;
    let b = run().await;
    assert_eq!(a, b);
    assert!(a.contains(&429) && a.contains(&200), "{a:?}");
}

#[tokio::test]
async fn write_rate_window() {
    let mut o = fault_opts();
    o.rate_limit_writes = Some(2);
    let c = start_with(o).await;
    let admin = c.admin().await;
    let put = || {
        c.http
            .put(c.url(&format!("/api/v1/hierarchies/{HID}")))
            .bearer_auth(&admin)
            .json(&json!({"site_code":"PS1","site_version":"2303","environment":"public"}))
            .send()
    };
    assert!(put().await.unwrap().status().is_success());
    assert!(put().await.unwrap().status().is_success());
    let r = put().await.unwrap();
    assert_eq!(r.status(), 429);
    let secs: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&secs), "{secs}");
    // Reads are not limited.
    assert_eq!(c.get(&admin, "/api/v1/overview").await.0, 200);
    let s = c.stats().await;
    assert_eq!(s["rate_limited"], 1);
    // Retrying the write at once counts as an early retry.
    assert_eq!(put().await.unwrap().status(), 429);
    assert_eq!(c.stats().await["early_retries"], 1);
}

#[tokio::test]
async fn fault_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("faults.toml");
    std::fs::write(&f, "fault-429-bare = 1.0\nfault-seed = 7\n").unwrap();
    let mut o = opts();
    o.fault_config = Some(f.clone());
    let c = start_with(o).await;
    let reader = c.reader().await;
    assert_eq!(c.get(&reader, "/api/v1/overview").await.0, 429);
    std::fs::write(&f, "fault-429 = 2.0\n").unwrap();
    let mut o = opts();
    o.fault_config = Some(f.clone());
    let e = cloudattach_cloud::start(o).await.err().expect("invalid");
    assert!(e.is_invalid_option(), "{e}");
    std::fs::write(&f, "bogus = 1\n").unwrap();
    let mut o = opts();
    o.fault_config = Some(f);
    let e = cloudattach_cloud::start(o).await.err().expect("invalid");
    assert!(e.to_string().contains("bogus"), "{e}");
}

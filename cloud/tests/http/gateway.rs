use crate::common::*;
use cloudattach_cloud::seed::*;
use serde_json::{Value, json};
use std::io::Write;

fn hpath(rest: &str) -> String {
    format!("/api/v1/hierarchies/{HID}{rest}")
}

async fn upload_raw(
    c: &Cloud,
    tok: &str,
    channel: &str,
    body: Vec<u8>,
    enc: Option<&str>,
    ct: &str,
) -> (u16, Value) {
    let mut rb = c
        .http
        .post(c.url(&hpath(&format!("/upload/{channel}"))))
        .bearer_auth(tok)
        .header("content-type", ct)
        .body(body);
    if let Some(e) = enc {
        rb = rb.header("content-encoding", e);
    }
    let r = rb.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn zstd_bytes(v: &Value) -> Vec<u8> {
    zstd::encode_all(&serde_json::to_vec(v).unwrap()[..], 3).unwrap()
}

fn gzip_bytes(v: &Value) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&serde_json::to_vec(v).unwrap()).unwrap();
    e.finish().unwrap()
}

fn plugin<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap()
}

#[tokio::test]
async fn onboarding_features_uploads_status() {
    let c = start().await;
    let admin = c.admin().await;
    let body = json!({"site_code":"PS1","site_name":"Primary","site_version":"2303","environment":"public"});
    let (s, v) = c.put(&admin, &hpath(""), body.clone()).await;
    assert_eq!(s, 201, "{v}");
    // Onboarding again is idempotent.
    let (s, v) = c.put(&admin, &hpath(""), body).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["site_code"], "PS1");
    let (s, v) = c
        .put(
            &admin,
            &hpath(""),
            json!({"site_code":"PS1","site_version":"2303","environment":"usgov"}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("EnvironmentMismatch"))
    );
    // Dependencies.
    let (s, v) = c
        .put(
            &admin,
            &hpath("/features/endpoint-analytics"),
            json!({"settings":{}}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("DependencyNotEnabled"))
    );
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/tenant-attach"),
            json!({"settings":{"upload":"all"}}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/tenant-attach"),
            json!({"settings":{"upload":"all"}}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v) = c
        .put(
            &admin,
            &hpath("/features/tenant-attach"),
            json!({"settings":{"upload":"all","x":1}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["error"]["message"].as_str().unwrap().contains('x'));
    for f in ["endpoint-analytics", "defender-reporting", "co-management"] {
        assert_eq!(
            c.put(
                &admin,
                &hpath(&format!("/features/{f}")),
                json!({"settings":{}})
            )
            .await
            .0,
            201,
            "{f}"
        );
    }
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/rbac-authority"),
            json!({"settings":{"enforce_configmgr_rbac":true}}),
        )
        .await;
    assert_eq!(s, 201);
    // Upload to a disabled extension feature: 409.
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/ext/acme-inventory"),
            json!({"upserts":[]}),
        )
        .await;
    assert_eq!(s, 409);

    // Devices: zstd, then the same batch gzip'd changes nothing.
    let batch = device_batch(1..1201);
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        zstd_bytes(&batch),
        Some("zstd"),
        "application/json",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"upserted":1200,"deleted":0,"unchanged":0}));
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        gzip_bytes(&batch),
        Some("gzip"),
        "application/json",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(v, json!({"upserted":0,"deleted":0,"unchanged":1200}));
    // A change and a delete.
    let mut d = device(5, "PC-renamed");
    d["mdm_enrolled"] = json!(true);
    let (_, v) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts":[{"key":"5","record":d}],"deletes":["1200","99999"]}),
        )
        .await;
    assert_eq!(v, json!({"upserted":1,"deleted":1,"unchanged":1}));

    // Analytics for 6 devices (scores), one for a missing device rejects the batch.
    let an = |i: i64| {
        json!({"key": i.to_string(), "record": {"resource_id": i, "client_version": "5.00.9106.1000",
        "analytics": {"core_boot_ms": 20000, "total_boot_ms": 40000, "gp_logon_ms": 5000, "desktop_usable_ms": 10000,
        "apps": [{"name":"Teams","usage_minutes": 600, "daily_crashes":[1,0,0]}]}}})
    };
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/analytics"),
            json!({"upserts":[an(1), an(2), an(1200)]}),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"]["missing_keys"], json!(["1200"]));
    let (_, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(rep["reporting_devices"], 0, "nothing changed: {rep}");
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/analytics"),
            json!({"upserts":[an(1), an(2), an(3), an(4)]}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(rep["status"], "insufficient data", "{rep}");
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/analytics"),
            json!({"upserts":[an(5), an(6)]}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(rep["status"], "ok", "{rep}");
    // boot: 20 s → 100*(75-20)/60 = 91.7; sign-in: 15 s → 100*(70-15)/60 = 91.7
    assert_eq!(rep["startup_performance"]["score"], 91.7, "{rep}");
    assert_eq!(rep["app_reliability"]["app_count"], 1, "{rep}");
    let (_, apps) = c
        .get(&admin, "/api/v1/reports/endpoint-analytics/apps")
        .await;
    assert_eq!(apps["value"][0]["name"], "Teams", "{apps}");
    assert_eq!(apps["value"][0]["mttf_minutes"], 600.0, "{apps}");
    // An enrolled device without telemetry yet: enrolled, not reporting.
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/analytics"),
            json!({"upserts":[{"key":"7","record":{"resource_id":7,"client_version":"5.00.9106.1000","analytics":null}}]}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(rep["reporting_devices"], 6, "{rep}");

    // Defender.
    let def = |i: i64, status: &str| {
        json!({"key": i.to_string(), "record": {"resource_id": i, "defender": {
        "defender_enabled": true, "rtp_enabled": status != "active", "tamper_protection_enabled": true,
        "detections": [{"threat_id": 7, "threat_name": "Trojan:Win32/Wacatac.B!ml", "category": "Trojan",
        "severity": "severe", "current_status": status, "initial_detection_time": "2026-01-01T00:00:00Z",
        "number_of_detections": 2}]}}})
    };
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/defender"),
            json!({"upserts":[def(1,"active"), def(2,"quarantined")]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, am) = c
        .get(&admin, "/api/v1/reports/defender/active-malware")
        .await;
    assert_eq!(am["value"].as_array().unwrap().len(), 1);
    assert_eq!(am["value"][0]["device_name"], "PC-00001");
    let (_, dm) = c
        .get(&admin, "/api/v1/reports/defender/detected-malware")
        .await;
    assert_eq!(dm["value"][0]["device_count"], 2);
    assert_eq!(dm["value"][0]["detection_count"], 4);
    let (_, ue) = c
        .get(&admin, "/api/v1/reports/defender/unhealthy-endpoints")
        .await;
    assert_eq!(ue["value"].as_array().unwrap().len(), 1, "{ue}");
    let (_, ag) = c
        .get(&admin, "/api/v1/reports/defender/antivirus-agent-status")
        .await;
    assert_eq!(ag["value"].as_array().unwrap().len(), 2);
    assert_eq!(c.get(&admin, "/api/v1/reports/defender/nope").await.0, 404);

    // Co-management.
    let cm =
        |i: i64, st: &str| json!({"key": i.to_string(), "record": {"resource_id": i, "state": st}});
    let (s, _) = c.post(&admin, &hpath("/upload/comanagement"), json!({"upserts":[cm(1,"scheduledForEnrollment"), cm(2,"scheduledForEnrollment"), cm(3,"comanaged"), cm(4, "eligible")]})).await;
    assert_eq!(s, 200);
    let (_, cmd) = c.get(&admin, "/api/v1/comanagement/devices").await;
    assert_eq!(cmd["summary"]["scheduledForEnrollment"], 2);
    assert_eq!(cmd["value"][2]["monitoring_state"], "Enrolled");

    // Status with the documented count keys.
    let (s, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(s, 200);
    assert_eq!(
        plugin(&st, "tenant-attach")["counts"]["devices_uploaded"],
        1199
    );
    assert_eq!(
        plugin(&st, "endpoint-analytics")["counts"]["devices_enrolled"],
        1199
    );
    assert_eq!(
        plugin(&st, "defender-reporting")["counts"]["devices_reported"],
        2
    );
    assert_eq!(
        plugin(&st, "co-management")["counts"]["devices_scheduled"],
        2
    );
    assert_eq!(
        plugin(&st, "co-management")["counts"]["devices_enrolled"],
        1
    );
    assert_eq!(
        plugin(&st, "rbac-authority")["effective_authority"],
        "configmgr+intune"
    );
    assert!(plugin(&st, "tenant-attach")["last_sync"].is_string());

    // Deleting an uploaded device takes its Defender record along but keeps its co-management
    // state, which does not depend on the upload scope.
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts": [], "deletes": ["2", "3"]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(
        plugin(&st, "tenant-attach")["counts"]["devices_uploaded"],
        1197
    );
    assert_eq!(
        plugin(&st, "defender-reporting")["counts"]["devices_reported"],
        1
    );
    assert_eq!(
        plugin(&st, "co-management")["counts"]["devices_enrolled"],
        1
    );
    assert_eq!(
        plugin(&st, "co-management")["counts"]["devices_scheduled"],
        2
    );
    let back = json!({"upserts": [
        {"key": "2", "record": device(2, "PC-00002")},
        {"key": "3", "record": device(3, "PC-00003")}
    ]});
    let (s, v) = c.post(&admin, &hpath("/upload/devices"), back).await;
    assert_eq!(s, 200, "{v}");

    // RBAC authority: the checkbox cleared AND the tenant toggle on.
    c.put(
        &admin,
        &hpath("/features/rbac-authority"),
        json!({"settings":{"enforce_configmgr_rbac":false}}),
    )
    .await;
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(
        plugin(&st, "rbac-authority")["effective_authority"],
        "configmgr+intune"
    );
    let (s, t) = c
        .put(
            &admin,
            "/api/v1/tenant/settings",
            json!({"use_intune_rbac": true}),
        )
        .await;
    assert_eq!((s, &t["use_intune_rbac"]), (200, &json!(true)));
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(
        plugin(&st, "rbac-authority")["effective_authority"],
        "intune"
    );
    let reader = c.reader().await;
    assert_eq!(
        c.put(
            &reader,
            "/api/v1/tenant/settings",
            json!({"use_intune_rbac": false})
        )
        .await
        .0,
        403
    );

    // Extension channel.
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/acme-inventory"),
            json!({"settings":{"anything":[1,2]}}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/ext/acme-inventory"),
            json!({"upserts":[{"key":"a","record":{"x":1}},{"key":"b","record":{"y":2}}]}),
        )
        .await;
    assert_eq!((s, &v["upserted"]), (200, &json!(2)));
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(plugin(&st, "acme-inventory")["counts"]["records"], 2);
    let (_, recs) = c.get(&reader, &hpath("/ext/acme-inventory/records")).await;
    assert_eq!(recs["value"][0]["record"], json!({"x":1}));

    // Read API: paging and filters.
    let (s, p1) = c.get(&reader, "/api/v1/devices?$top=500").await;
    assert_eq!(s, 200);
    assert_eq!(p1["@odata.count"], 1199);
    assert_eq!(p1["value"].as_array().unwrap().len(), 500);
    let next = p1["@odata.nextLink"].as_str().unwrap().to_string();
    let r: Value = c
        .http
        .get(&next)
        .bearer_auth(&reader)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"].as_array().unwrap().len(), 500);
    assert_ne!(r["value"][0]["resource_id"], p1["value"][0]["resource_id"]);
    let (_, f) = c.get(&reader, "/api/v1/devices?name=PC-0001").await;
    assert_eq!(f["@odata.count"], 10, "PC-00010..PC-00019");
    let (_, f) = c
        .get(
            &reader,
            &format!("/api/v1/devices?hierarchy={HID}&name=PC-renamed"),
        )
        .await;
    assert_eq!(f["value"][0]["resource_id"], 5);
    assert_eq!(c.get(&reader, "/api/v1/devices?$top=5000").await.0, 400);
    let (_, ov) = c.get(&reader, "/api/v1/overview").await;
    let h = &ov["hierarchies"][0];
    assert_eq!(h["site_code"], "PS1");
    assert_eq!(h["features"]["tenant-attach"], json!({"upload":"all"}));
    assert_eq!(h["counts"]["devices"], 1199);

    // Disabling: tenant-attach needs its dependents off first; then its records go.
    assert_eq!(
        c.delete(&admin, &hpath("/features/tenant-attach")).await.0,
        409
    );
    for f in [
        "endpoint-analytics",
        "defender-reporting",
        "rbac-authority",
        "tenant-attach",
    ] {
        assert_eq!(
            c.delete(&admin, &hpath(&format!("/features/{f}"))).await.0,
            204,
            "{f}"
        );
    }
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(
        plugin(&st, "tenant-attach")["counts"]["devices_uploaded"],
        0
    );
    assert_eq!(plugin(&st, "tenant-attach")["enabled"], false);
    // Offboard.
    assert_eq!(c.delete(&admin, &hpath("")).await.0, 204);
    assert_eq!(c.get(&admin, &hpath("")).await.0, 404);
    c.running.shutdown().await;
}

#[tokio::test]
async fn tenant_isolation() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    c.post(&admin, &hpath("/upload/devices"), device_batch(1..11))
        .await;
    let (s, v) = c
        .app_token(FABRIKAM, FABRIKAM_READER_APP_ID, DEV_SECRET)
        .await;
    assert_eq!(s, 200);
    let fab = v["access_token"].as_str().unwrap();
    let (s, d) = c.get(fab, "/api/v1/devices").await;
    assert_eq!((s, &d["@odata.count"]), (200, &json!(0)));
    assert_eq!(c.get(fab, &hpath("")).await.0, 404);
    assert_eq!(c.get(fab, &hpath("/status")).await.0, 404);
    let (_, ov) = c.get(fab, "/api/v1/overview").await;
    assert_eq!(ov["hierarchies"], json!([]));
    assert_eq!(ov["tenant_id"], FABRIKAM_TENANT_ID);
    // A fabrikam token can't write to contoso's hierarchy either (and the reader can't write at all).
    assert_eq!(
        c.post(fab, &hpath("/upload/devices"), device_batch(1..2))
            .await
            .0,
        403
    );
    let (_, d) = c.get(&admin, "/api/v1/devices").await;
    assert_eq!(d["@odata.count"], 10);
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let mut o = opts();
    o.max_body_bytes = 64 * 1024;
    let c = start_with(o).await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    let base = device_batch(1..3);
    assert_eq!(
        c.post(&admin, &hpath("/upload/devices"), base.clone())
            .await
            .0,
        200
    );
    // Unknown field in a record, named in the message.
    let mut bad = device(3, "PC-3");
    bad["colour"] = json!("red");
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts":[{"key":"3","record":bad}]}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("colour"),
        "{v}"
    );
    // Unknown envelope field.
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts":[],"extra":1}),
        )
        .await;
    assert_eq!(s, 400);
    // Key that does not match the resource id; duplicate key; malformed JSON.
    assert_eq!(
        c.post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts":[{"key":"9","record":device(3,"x")}]})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts":[{"key":"3","record":device(3,"x")}],"deletes":["3"]})
        )
        .await
        .0,
        400
    );
    let (s, _) = upload_raw(
        &c,
        &admin,
        "devices",
        b"{not json".to_vec(),
        None,
        "application/json",
    )
    .await;
    assert_eq!(s, 400);
    // Wrong content type, unknown encoding.
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        serde_json::to_vec(&base).unwrap(),
        None,
        "text/plain",
    )
    .await;
    assert_eq!(s, 415, "{v}");
    let (s, _) = upload_raw(
        &c,
        &admin,
        "devices",
        serde_json::to_vec(&base).unwrap(),
        Some("br"),
        "application/json",
    )
    .await;
    assert_eq!(s, 415);
    // Oversized, raw and after decompression.
    let big = device_batch(100..1100);
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        serde_json::to_vec(&big).unwrap(),
        None,
        "application/json",
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["error"]["code"], "RequestEntityTooLarge");
    let (s, _) = upload_raw(
        &c,
        &admin,
        "devices",
        zstd_bytes(&big),
        Some("zstd"),
        "application/json",
    )
    .await;
    assert_eq!(s, 413);
    // Unknown channel, invalid hierarchy id, unknown hierarchy.
    assert_eq!(
        c.post(&admin, &hpath("/upload/nope"), json!({})).await.0,
        404
    );
    assert_eq!(
        c.post(
            &admin,
            "/api/v1/hierarchies/not-a-uuid/upload/devices",
            json!({})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.post(
            &admin,
            "/api/v1/hierarchies/5a1e0000-0000-4000-8000-000000000002/upload/devices",
            json!({})
        )
        .await
        .0,
        404
    );
    // A feature not enabled.
    let (s, v) = c
        .post(&admin, &hpath("/upload/defender"), json!({"upserts":[]}))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("FeatureNotEnabled"))
    );
    // Invalid feature settings and ids.
    assert_eq!(
        c.put(
            &admin,
            &hpath("/features/co-management"),
            json!({"settings":{"enrollment":"pilot"}})
        )
        .await
        .0,
        400
    );
    assert_eq!(
        c.put(&admin, &hpath("/features/Bad_Id"), json!({"settings":{}}))
            .await
            .0,
        400
    );
    // Nothing changed.
    let (_, d) = c.get(&admin, "/api/v1/devices").await;
    assert_eq!(d["@odata.count"], 2);
    assert_eq!(d["value"][0]["name"], "PC-00001");
    // Unknown endpoint: Graph-style 404.
    let (s, v) = c.get(&admin, "/api/v1/nothing").await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("NotFound")));
}

#[tokio::test]
async fn china_refuses_upload_analytics_defender_rbac() {
    let mut o = opts();
    o.environment = "china".into();
    let c = start_with(o).await;
    let admin = c.admin().await;
    let (s, _) = c
        .put(
            &admin,
            &hpath(""),
            json!({"site_code":"PS1","site_version":"2303","environment":"china"}),
        )
        .await;
    assert_eq!(s, 201);
    for f in [
        "tenant-attach",
        "endpoint-analytics",
        "rbac-authority",
        "defender-reporting",
    ] {
        let (s, v) = c
            .put(
                &admin,
                &hpath(&format!("/features/{f}")),
                json!({"settings":{}}),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("NotSupportedInEnvironment")),
            "{f}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("Azure China Cloud")
        );
    }
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/co-management"),
            json!({"settings":{"enrollment":"pilot","pilot_collection":"PS100020"}}),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = c
        .put(
            &admin,
            &hpath("/features/co-management"),
            json!({"settings":{"enrollment":"all"}}),
        )
        .await;
    assert_eq!(s, 201);
    for ch in ["devices", "analytics", "defender"] {
        let (s, v) = c
            .post(
                &admin,
                &hpath(&format!("/upload/{ch}")),
                json!({"upserts":[]}),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("NotSupportedInEnvironment")),
            "{ch}"
        );
    }
    let (s, _) = c
        .put(
            &admin,
            "/api/v1/tenant/settings",
            json!({"use_intune_rbac": true}),
        )
        .await;
    assert_eq!(s, 400);
    // Co-management records work without device upload in China.
    let (s, v) = c.post(&admin, &hpath("/upload/comanagement"), json!({"upserts":[{"key":"1","record":{"resource_id":1,"state":"scheduledForEnrollment","name":"PC-1"}}]})).await;
    assert_eq!(s, 200, "{v}");
    let (_, st) = c.get(&admin, &hpath("/status")).await;
    assert_eq!(
        plugin(&st, "co-management")["counts"]["devices_scheduled"],
        1
    );
}

#[tokio::test]
async fn large_uncompressed_batch_over_2_mb() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach"]).await;
    let body = serde_json::to_vec(&device_batch(1..10001)).unwrap();
    assert!(body.len() > 2 * 1024 * 1024, "{}", body.len());
    let (s, v) = upload_raw(&c, &admin, "devices", body, None, "application/json").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["upserted"], 10000);
}

/// The Endpoint analytics score is the mean of the unrounded startup and app reliability scores,
/// rounded once: worked by hand, 5 devices with core boot 10 s (boot score 100) and group policy
/// + desktop usable 33.448 s (sign-in score 100 × (70 − 33.448) / 60 = 60.92) give a startup
/// score of 80.46 (shown 80.5); no crashes give app reliability 100; the overall score is
/// (80.46 + 100) / 2 = 90.23 → 90.2, where the mean of the rounded parts would give 90.3.
#[tokio::test]
async fn the_endpoint_analytics_score_is_rounded_once() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach", "endpoint-analytics"])
        .await;
    let (s, v) = c
        .post(&admin, &hpath("/upload/devices"), device_batch(1..6))
        .await;
    assert_eq!(s, 200, "{v}");
    let ups: Vec<Value> = (1..6)
        .map(|i| {
            json!({"key": i.to_string(), "record": {"resource_id": i, "client_version": "5.00.9106.1000",
            "analytics": {"core_boot_ms": 10000, "total_boot_ms": 30000, "gp_logon_ms": 13448,
            "desktop_usable_ms": 20000,
            "apps": [{"name": "Teams", "usage_minutes": 600, "daily_crashes": [0, 0, 0]}]}}})
        })
        .collect();
    let (s, v) = c
        .post(&admin, &hpath("/upload/analytics"), json!({"upserts": ups}))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(s, 200, "{rep}");
    assert_eq!(rep["startup_performance"]["boot_score"], 100.0, "{rep}");
    assert_eq!(rep["startup_performance"]["sign_in_score"], 60.9, "{rep}");
    assert_eq!(rep["startup_performance"]["score"], 80.5, "{rep}");
    assert_eq!(rep["app_reliability"]["score"], 100.0, "{rep}");
    assert_eq!(rep["endpoint_analytics_score"], 90.2, "{rep}");
    c.running.shutdown().await;
}

/// The Endpoint analytics report's rows per app are a list like every other: with more app
/// names than one page, the first page holds a page and a `nextLink`, following it gives the
/// rest, `@odata.count` and the report's `app_count` are the number of app names, and the
/// report itself carries no unbounded array.
#[tokio::test]
async fn the_endpoint_analytics_apps_are_paged() {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach", "endpoint-analytics"])
        .await;
    let (s, v) = c
        .post(&admin, &hpath("/upload/devices"), device_batch(1..7))
        .await;
    assert_eq!(s, 200, "{v}");
    // 6 devices, 40 apps of their own each and one they share: 241 app names.
    let ups: Vec<Value> = (1..7)
        .map(|i| {
            let mut apps: Vec<Value> = (0..40)
                .map(|a| json!({"name": format!("App-{i}-{a:02}"), "usage_minutes": 60, "daily_crashes": [1]}))
                .collect();
            apps.push(json!({"name": "Teams", "usage_minutes": 600, "daily_crashes": [0]}));
            json!({"key": i.to_string(), "record": {"resource_id": i, "client_version": "5.00.9106.1000",
            "analytics": {"core_boot_ms": 20000, "total_boot_ms": 40000, "gp_logon_ms": 5000,
            "desktop_usable_ms": 10000, "apps": apps}}})
        })
        .collect();
    let (s, v) = c
        .post(&admin, &hpath("/upload/analytics"), json!({"upserts": ups}))
        .await;
    assert_eq!(s, 200, "{v}");
    let names = 6 * 40 + 1;

    let (s, rep) = c.get(&admin, "/api/v1/reports/endpoint-analytics").await;
    assert_eq!(s, 200, "{rep}");
    assert_eq!(rep["app_reliability"]["app_count"], names, "{rep}");
    assert!(rep["app_reliability"].get("apps").is_none(), "{rep}");

    let first = "/api/v1/reports/endpoint-analytics/apps";
    let (s, page) = c.get(&admin, first).await;
    assert_eq!(s, 200, "{page}");
    assert_eq!(page["@odata.count"], names, "{page}");
    assert_eq!(
        page["value"].as_array().unwrap().len(),
        100,
        "the default page"
    );
    let next = page["@odata.nextLink"].as_str().expect("a nextLink");
    assert!(next.contains("skiptoken=100"), "{next}");
    let all = walk(&c, &admin, first, 100).await;
    assert_eq!(all.len(), names);
    let mut seen: Vec<&str> = all.iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert!(seen.is_sorted(), "ordered by name");
    seen.dedup();
    assert_eq!(seen.len(), names, "each app once");
    let teams = all.iter().find(|a| a["name"] == "Teams").unwrap();
    assert_eq!(teams["devices"], 6, "{teams}");
    // `hierarchy` narrows it and rides along in the links; `$top` pages it smaller.
    let walked = walk(&c, &admin, &format!("{first}?hierarchy={HID}&$top=50"), 50).await;
    assert_eq!(walked, all);
    let (_, other) = c
        .get(
            &admin,
            &format!("{first}?hierarchy=5a1e0000-0000-4000-8000-000000000002"),
        )
        .await;
    assert_eq!(other["@odata.count"], 0, "{other}");
    c.running.shutdown().await;
}

const N: i64 = 25;

/// A hierarchy with every feature, an extension feature, and `N` devices with Defender
/// (every other one unhealthy, one active detection each of its own threat), co-management and
/// extension records; two more hierarchies.
async fn populated(c: &Cloud, admin: &str) {
    c.onboard(
        admin,
        &[
            "tenant-attach",
            "endpoint-analytics",
            "defender-reporting",
            "co-management",
            "acme-inventory",
        ],
    )
    .await;
    let ok = |(s, v): (u16, Value)| assert_eq!(s, 200, "{v}");
    ok(
        c.post(admin, &hpath("/upload/devices"), device_batch(1..N + 1))
            .await,
    );
    let def: Vec<Value> = (1..=N)
        .map(|i| {
            json!({"key": i.to_string(), "record": {"resource_id": i, "defender": {
            "defender_enabled": true, "rtp_enabled": i % 2 == 0, "tamper_protection_enabled": true,
            "detections": [{"threat_id": 1000 + i, "threat_name": format!("Threat{i}"), "category": "Trojan",
            "severity": "severe", "current_status": "active", "initial_detection_time": "2026-01-01T00:00:00Z",
            "number_of_detections": 1}]}}})
        })
        .collect();
    ok(
        c.post(admin, &hpath("/upload/defender"), json!({"upserts": def}))
            .await,
    );
    let com: Vec<Value> = (1..=N)
        .map(|i| json!({"key": i.to_string(), "record": {"resource_id": i, "state": "eligible"}}))
        .collect();
    ok(c.post(
        admin,
        &hpath("/upload/comanagement"),
        json!({"upserts": com}),
    )
    .await);
    let ext: Vec<Value> = (1..=N)
        .map(|i| json!({"key": format!("k{i:03}"), "record": {"i": i}}))
        .collect();
    ok(c.post(
        admin,
        &hpath("/upload/ext/acme-inventory"),
        json!({"upserts": ext}),
    )
    .await);
    for n in 2..4 {
        let (s, v) = c
            .put(
                admin,
                &format!("/api/v1/hierarchies/5a1e0000-0000-4000-8000-00000000000{n}"),
                json!({"site_code": format!("PS{n}"), "site_version": "2303", "environment": "public"}),
            )
            .await;
        assert_eq!(s, 201, "{v}");
    }
}

/// Every read route refuses a query parameter it does not take with `400` naming it (a
/// `$filter` the route does not support must not return everything), and so does a write.
#[tokio::test]
async fn every_route_refuses_unknown_query_parameters() {
    let c = start().await;
    let admin = c.admin().await;
    populated(&c, &admin).await;
    let (_, apps) = c
        .get(
            &admin,
            "/v1.0/applications?$filter=appId eq '00000000-0000-4000-8000-00000000c0de'",
        )
        .await;
    let app = apps["value"][0]["id"].as_str().unwrap().to_string();
    let reads = [
        "/v1.0/me".to_string(),
        "/v1.0/applications".into(),
        format!("/v1.0/applications/{app}"),
        "/v1.0/servicePrincipals".into(),
        "/api/v1/tenant/settings".into(),
        "/api/v1/hierarchies".into(),
        hpath(""),
        hpath("/features"),
        hpath("/features/tenant-attach"),
        hpath("/status"),
        hpath("/ext/acme-inventory/records"),
        hpath("/upload/devices"),
        hpath("/upload/devices/keys"),
        hpath("/upload/ext/acme-inventory"),
        hpath("/upload/ext/acme-inventory/keys"),
        "/api/v1/devices".into(),
        "/api/v1/overview".into(),
        "/api/v1/reports/endpoint-analytics".into(),
        "/api/v1/reports/endpoint-analytics/apps".into(),
        "/api/v1/reports/defender/unhealthy-endpoints".into(),
        "/api/v1/reports/defender/active-malware".into(),
        "/api/v1/reports/defender/antivirus-agent-status".into(),
        "/api/v1/reports/defender/detected-malware".into(),
        "/api/v1/comanagement/devices".into(),
    ];
    for path in &reads {
        let (s, v) = c.get(&admin, path).await;
        assert_eq!(s, 200, "{path}: {v}");
        for param in ["$filter", "$orderby", "hierarchyy", "$count"] {
            let (s, v) = c.get(&admin, &format!("{path}?{param}=x")).await;
            assert_eq!(s, 400, "{path}?{param}: {v}");
            assert_eq!(v["error"]["parameter"], param, "{path}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(param), "{path}: {msg}");
        }
    }
    // The parameters a route does take still work, once each.
    let (s, v) = c
        .get(&admin, &format!("/api/v1/devices?$top=2&hierarchy={HID}"))
        .await;
    assert_eq!(
        (s, v["value"].as_array().map(Vec::len)),
        (200, Some(2)),
        "{v}"
    );
    let (s, v) = c.get(&admin, "/api/v1/devices?$top=2&$top=3").await;
    assert_eq!(s, 400, "{v}");
    // Writes take no query parameters: nothing changes.
    let (s, v) = c
        .send(
            reqwest::Method::DELETE,
            &admin,
            &format!("{}?force=true", hpath("")),
            None,
        )
        .await;
    assert_eq!((s, &v["error"]["parameter"]), (400, &json!("force")), "{v}");
    assert_eq!(c.get(&admin, &hpath("")).await.0, 200);
    c.running.shutdown().await;
}

/// Follows `@odata.nextLink` from `first` and returns every page's `value` in order, checking
/// that each page has `@odata.count` = the whole list and at most `top` items.
async fn walk(c: &Cloud, tok: &str, first: &str, top: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut next = Some(c.url(first));
    let mut pages = 0;
    let mut count = None;
    while let Some(url) = next {
        let r = c.http.get(&url).bearer_auth(tok).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let v: Value = r.json().await.unwrap();
        let page = v["value"].as_array().unwrap();
        assert!(page.len() <= top, "{url}: {} items", page.len());
        let n = v["@odata.count"].as_u64().unwrap();
        assert_eq!(*count.get_or_insert(n), n, "{url}");
        out.extend(page.iter().cloned());
        next = v["@odata.nextLink"].as_str().map(String::from);
        pages += 1;
        assert!(pages < 1000, "{first}: endless");
    }
    assert_eq!(count, Some(out.len() as u64), "{first}");
    out
}

/// Every list pages like `/api/v1/devices`: walking the pages of each (`$top` smaller than the
/// list, `nextLink` keeping the other parameters) gives exactly the full list, and the number of
/// rows is the one the uploaded data implies.
#[tokio::test]
async fn every_list_pages_and_its_pages_make_the_whole_list() {
    let c = start().await;
    let admin = c.admin().await;
    populated(&c, &admin).await;
    let n = N as usize;
    let lists: [(String, usize); 10] = [
        ("/api/v1/devices".into(), n),
        (hpath("/ext/acme-inventory/records"), n),
        (
            "/api/v1/reports/defender/unhealthy-endpoints".into(),
            n - n / 2,
        ),
        ("/api/v1/reports/defender/active-malware".into(), n),
        ("/api/v1/reports/defender/antivirus-agent-status".into(), n),
        ("/api/v1/reports/defender/detected-malware".into(), n),
        ("/api/v1/comanagement/devices".into(), n),
        ("/api/v1/hierarchies".into(), 3),
        ("/v1.0/applications".into(), 1),
        ("/v1.0/servicePrincipals".into(), 1),
    ];
    for (path, expected) in &lists {
        let (s, whole) = c.get(&admin, &format!("{path}?$top=1000")).await;
        assert_eq!(s, 200, "{path}: {whole}");
        assert!(whole.get("@odata.nextLink").is_none(), "{path}: {whole}");
        let whole = whole["value"].as_array().unwrap().clone();
        assert_eq!(whole.len(), *expected, "{path}");
        let top = if *expected > 3 { 4 } else { 1 };
        let walked = walk(&c, &admin, &format!("{path}?$top={top}"), top).await;
        assert_eq!(walked, whole, "{path}");
        // The default page is 100, so these (smaller) lists come whole.
        let (_, v) = c.get(&admin, path).await;
        assert_eq!(v["value"].as_array().unwrap().len(), *expected, "{path}");
    }
    // The reports' other parameters ride along in the nextLink.
    let walked = walk(
        &c,
        &admin,
        &format!("/api/v1/comanagement/devices?hierarchy={HID}&$top=7"),
        7,
    )
    .await;
    assert_eq!(walked.len(), n);
    let (_, other) = c
        .get(
            &admin,
            "/api/v1/comanagement/devices?hierarchy=5a1e0000-0000-4000-8000-000000000002",
        )
        .await;
    assert_eq!(other["@odata.count"], 0, "{other}");
    c.running.shutdown().await;
}

/// A channel's census counts its records and digests their keys and the hashes of their JSON
/// bytes as sent, the way the client's ledger does; its keys come a page at a time, in byte
/// order, each with that hash; a cascade and a change of contents by another writer show in
/// both.
#[tokio::test]
async fn a_channel_census_and_its_keys_follow_what_the_channel_holds() {
    use cloudattach_model::gateway::{ChannelCensus, ChannelKeys, HeldRecord, KeyDigest};
    // What the client's ledger holds for a record: the hash of its JSON bytes as sent.
    let sent = |r: &Value| xxhash_rust::xxh3::xxh3_64(&serde_json::to_vec(r).unwrap());
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(
        &admin,
        &["tenant-attach", "defender-reporting", "acme-inventory"],
    )
    .await;
    let (s, v) = c.get(&admin, &hpath("/upload/devices")).await;
    assert_eq!(s, 200, "{v}");
    let empty: ChannelCensus = serde_json::from_value(v).unwrap();
    assert!(empty.matches(&KeyDigest::default()));

    let (s, v) = c
        .post(&admin, &hpath("/upload/devices"), device_batch(1..31))
        .await;
    assert_eq!(s, 200, "{v}");
    let defender_record = |i: i64| json!({"resource_id": i, "defender": {}});
    let defender: Vec<Value> = (1..31)
        .map(|i| json!({"key": i.to_string(), "record": defender_record(i)}))
        .collect();
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/defender"),
            json!({"upserts": defender}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut held: std::collections::BTreeMap<String, u64> = (1..31)
        .map(|i: i64| (i.to_string(), sent(&defender_record(i))))
        .collect();
    let digest = |held: &std::collections::BTreeMap<String, u64>| {
        KeyDigest::of(held.iter().map(|(k, h)| (k.as_str(), *h)))
    };
    let census = |v: Value| serde_json::from_value::<ChannelCensus>(v).unwrap();
    let (_, v) = c.get(&admin, &hpath("/upload/defender")).await;
    assert!(census(v).matches(&digest(&held)));

    // Deleting devices removes their Defender records: the census says so.
    let (s, _) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"deletes": ["3", "4"]}),
        )
        .await;
    assert_eq!(s, 200);
    held.remove("3");
    held.remove("4");
    let (_, v) = c.get(&admin, &hpath("/upload/defender")).await;
    let after = census(v);
    assert_eq!(after.records, 28);
    assert!(after.matches(&digest(&held)));

    // Another writer changes a record's contents, key kept: the census no longer matches what
    // the first uploader's ledger holds, and the keys name the new hash.
    let changed = json!({"resource_id": 5, "defender": {"rtp_enabled": true}});
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/defender"),
            json!({"upserts": [{"key": "5", "record": changed}]}),
        )
        .await;
    assert_eq!((s, v["upserted"].clone()), (200, json!(1)));
    let (_, v) = c.get(&admin, &hpath("/upload/defender")).await;
    assert!(!census(v.clone()).matches(&digest(&held)), "{v}");
    held.insert("5".into(), sent(&changed));
    assert!(census(v).matches(&digest(&held)));
    let (_, v) = c.get(&admin, &hpath("/upload/defender/keys")).await;
    let page: ChannelKeys = serde_json::from_value(v).unwrap();
    let listed: std::collections::BTreeMap<String, u64> =
        page.value.into_iter().map(|r| (r.key, r.hash)).collect();
    assert_eq!(listed, held);

    // The same contents sent as other bytes: unchanged, but the hash is of the bytes sent.
    let spaced = br#"{"upserts": [ {"key": "5", "record": { "defender" : {"rtp_enabled":true}, "resource_id": 5 } } ]}"#;
    let (s, v) = upload_raw(
        &c,
        &admin,
        "defender",
        spaced.to_vec(),
        None,
        "application/json",
    )
    .await;
    assert_eq!((s, v["unchanged"].clone()), (200, json!(1)), "{v}");
    held.insert(
        "5".into(),
        xxhash_rust::xxh3::xxh3_64(br#"{ "defender" : {"rtp_enabled":true}, "resource_id": 5 }"#),
    );
    let (_, v) = c.get(&admin, &hpath("/upload/defender")).await;
    assert!(census(v).matches(&digest(&held)));

    // Keys page by page, in byte order, on a built-in and an extension channel.
    let ext: Vec<Value> = (0..10_005)
        .map(|i| json!({"key": format!("k{i:05}"), "record": {}}))
        .collect();
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/ext/acme-inventory"),
            json!({"upserts": ext}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mut seen = vec![];
    let mut next = hpath("/upload/ext/acme-inventory/keys");
    loop {
        let (s, v) = c.get(&admin, &next).await;
        assert_eq!(s, 200, "{v}");
        let page: ChannelKeys = serde_json::from_value(v).unwrap();
        seen.extend(page.value);
        match page.next_after {
            Some(a) => next = hpath(&format!("/upload/ext/acme-inventory/keys?after={a}")),
            None => break,
        }
    }
    let want: Vec<HeldRecord> = (0..10_005)
        .map(|i| HeldRecord::new(format!("k{i:05}"), sent(&json!({}))))
        .collect();
    assert!(
        seen == want,
        "the extension channel's keys, in order, with their hashes"
    );
    let (_, v) = c.get(&admin, &hpath("/upload/devices/keys")).await;
    let page: ChannelKeys = serde_json::from_value(v.clone()).unwrap();
    let keys: Vec<&str> = page.value.iter().map(|r| r.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), 28);
    assert!(
        v["value"][0]["hash"]
            .as_str()
            .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit())),
        "a hash is 16 hexadecimal digits: {v}"
    );

    // An unknown parameter, a channel whose feature is off, another app: refused.
    let (s, _) = c.get(&admin, &hpath("/upload/devices/keys?skip=3")).await;
    assert_eq!(s, 400);
    let (s, _) = c.get(&admin, &hpath("/upload/analytics")).await;
    assert_eq!(s, 409);
    c.running.shutdown().await;
}

#[tokio::test]
async fn accepted_uploads_are_kept_as_received_in_order_for_replay() {
    let root = tempfile::tempdir().unwrap();
    let capture = root.path().join("captured");
    let c = start_with(cloudattach_cloud::ServeOptions {
        capture_uploads: Some(capture.clone()),
        ..opts()
    })
    .await;
    let admin = c.admin().await;
    c.onboard(&admin, &["tenant-attach", "defender-reporting"])
        .await;
    let devices = zstd_bytes(&device_batch(1..4));
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        devices.clone(),
        Some("zstd"),
        "application/json",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Refused (a record of a device not uploaded): not kept.
    let missing = json!({"upserts": [{"key": "9", "record": {"resource_id": 9, "defender": {}}}], "deletes": []});
    let (s, _) = upload_raw(
        &c,
        &admin,
        "defender",
        serde_json::to_vec(&missing).unwrap(),
        None,
        "application/json",
    )
    .await;
    assert_eq!(s, 400);
    let deletes = serde_json::to_vec(&json!({"upserts": [], "deletes": ["2"]})).unwrap();
    let (s, v) = upload_raw(
        &c,
        &admin,
        "devices",
        deletes.clone(),
        None,
        "application/json",
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut kept: Vec<(String, Vec<u8>)> = std::fs::read_dir(&capture)
        .expect("the capture directory is created")
        .map(|e| e.unwrap().path())
        .inspect(|p| {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
                assert_eq!(
                    mode,
                    0o600,
                    "{}: the tenant's records, for the owner only",
                    p.display()
                );
            }
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    kept.sort();
    assert_eq!(
        kept,
        vec![
            ("00000000.devices.zstd".to_string(), devices),
            ("00000001.devices.identity".to_string(), deletes),
        ],
        "the accepted batches, byte for byte, numbered in the order they were accepted"
    );
    c.running.shutdown().await;
}

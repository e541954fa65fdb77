//! `GET /api/v1/devices`: filters, orders, the eligibility and health of each device, paging.

use crate::common::*;
use cloudattach_cloud::seed::*;
use serde_json::{Value, json};

fn hpath(rest: &str) -> String {
    format!("/api/v1/hierarchies/{HID}{rest}")
}

/// Devices 1–12: 1 co-managed, 2 joined to AD only, 3 on Windows 10 1703, 4 a server, 5–12
/// eligible. Co-management records: 1 comanaged, 5 scheduled, 6 eligible. Defender: 1 healthy,
/// 2 and 5 unhealthy, the others unreported. Device 3 is uploaded again a second later.
async fn fleet() -> (Cloud, String) {
    let c = start().await;
    let admin = c.admin().await;
    c.onboard(
        &admin,
        &["tenant-attach", "defender-reporting", "co-management"],
    )
    .await;
    let mk = |i: i64| {
        let name = match i {
            1 => "alpha-1".to_string(),
            2 => "Alpha-2".to_string(),
            3 => "BETA-3".to_string(),
            4 => "beta-4".to_string(),
            _ => format!("gamma-{i:02}"),
        };
        let mut d = device(i, &name);
        match i {
            1 => d["mdm_enrolled"] = json!(true),
            2 => d["join_type"] = json!("domain"),
            3 => d["os_build"] = json!("10.0.15063"),
            4 => d["os"] = json!("Microsoft Windows NT Server 10.0"),
            _ => {}
        }
        json!({"key": i.to_string(), "record": d})
    };
    let ups: Vec<Value> = (1..=12).map(mk).collect();
    let (s, v) = c
        .post(&admin, &hpath("/upload/devices"), json!({"upserts": ups}))
        .await;
    assert_eq!(s, 200, "{v}");
    let cm = |i: i64, state: &str| json!({"key": i.to_string(), "record": {"resource_id": i, "state": state}});
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/comanagement"),
            json!({"upserts": [cm(1, "comanaged"), cm(5, "scheduledForEnrollment"), cm(6, "eligible")]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let def = |i: i64, healthy: bool| {
        json!({"key": i.to_string(), "record": {"resource_id": i, "defender": {
            "defender_enabled": true, "rtp_enabled": healthy, "tamper_protection_enabled": true}}})
    };
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/defender"),
            json!({"upserts": [def(1, true), def(2, false), def(5, false)]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut again = mk(3);
    again["record"]["client_version"] = json!("5.00.9106.1001");
    let (s, v) = c
        .post(
            &admin,
            &hpath("/upload/devices"),
            json!({"upserts": [again]}),
        )
        .await;
    assert_eq!((s, &v["upserted"]), (200, &json!(1)), "{v}");
    (c, admin)
}

fn ids(v: &Value) -> Vec<i64> {
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .iter()
        .map(|d| d["resource_id"].as_i64().unwrap())
        .collect()
}

async fn list(c: &Cloud, tok: &str, query: &str) -> (Vec<i64>, Value) {
    let (s, v) = c.get(tok, &format!("/api/v1/devices?{query}")).await;
    assert_eq!(s, 200, "{query}: {v}");
    (ids(&v), v)
}

#[tokio::test]
async fn every_filter_selects_its_devices() {
    let (c, admin) = fleet().await;
    let reader = c.reader().await;
    let cases: &[(&str, &[i64])] = &[
        ("comanagement=comanaged", &[1]),
        ("comanagement=scheduledForEnrollment", &[5]),
        ("comanagement=eligible", &[6]),
        ("comanagement=none", &[10, 11, 12, 2, 3, 4, 7, 8, 9]),
        ("eligibility=comanaged", &[1]),
        ("eligibility=eligibleButNotAzureAdJoined", &[2]),
        ("eligibility=needsOsUpdate", &[3]),
        ("eligibility=ineligible", &[4]),
        ("eligibility=eligible", &[10, 11, 12, 5, 6, 7, 8, 9]),
        ("defender=healthy", &[1]),
        ("defender=unhealthy", &[2, 5]),
        ("defender=unreported", &[10, 11, 12, 3, 4, 6, 7, 8, 9]),
        // The name prefix ignores case.
        ("name=ALPHA", &[1, 2]),
        ("name=beta-", &[3, 4]),
    ];
    for (query, want) in cases {
        let (got, v) = list(&c, &reader, query).await;
        assert_eq!(&got, want, "{query}");
        assert_eq!(v["@odata.count"], json!(want.len()), "{query}");
    }
    // Without a filter: every device, by hierarchy then key (keys are text: "10" before "2").
    let (got, v) = list(&c, &admin, "").await;
    assert_eq!(got, [1, 10, 11, 12, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert_eq!(v["@odata.count"], 12);
}

#[tokio::test]
async fn filters_combine() {
    let (c, admin) = fleet().await;
    let cases: &[(&str, &[i64])] = &[
        (
            "comanagement=none&eligibility=eligible",
            &[10, 11, 12, 7, 8, 9],
        ),
        (
            "defender=unreported&name=gamma&$orderby=resource_id",
            &[6, 7, 8, 9, 10, 11, 12],
        ),
        ("defender=unhealthy&eligibility=eligible", &[5]),
        (
            "defender=unhealthy&comanagement=scheduledForEnrollment&name=GAMMA",
            &[5],
        ),
        ("defender=healthy&eligibility=eligible", &[]),
        (
            &*format!("hierarchy={}&comanagement=comanaged", HID.to_uppercase()),
            &[1],
        ),
        (
            "hierarchy=5a1e0000-0000-4000-8000-00000000ffff&comanagement=none",
            &[],
        ),
    ];
    for (query, want) in cases {
        let (got, v) = list(&c, &admin, query).await;
        assert_eq!(&got, want, "{query}");
        assert_eq!(v["@odata.count"], json!(want.len()), "{query}");
    }
}

#[tokio::test]
async fn every_order() {
    let (c, admin) = fleet().await;
    let by_name = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
    let (got, _) = list(&c, &admin, "$orderby=name").await;
    assert_eq!(
        got, by_name,
        "alpha-1, Alpha-2, BETA-3, beta-4, gamma-05…: case ignored"
    );
    let (got, _) = list(&c, &admin, "$orderby=name%20desc").await;
    assert_eq!(got, by_name.iter().rev().copied().collect::<Vec<_>>());
    let (got, _) = list(&c, &admin, "$orderby=resource_id").await;
    assert_eq!(got, (1..=12).collect::<Vec<_>>(), "numeric");
    let (got, _) = list(&c, &admin, "$orderby=resource_id%20desc").await;
    assert_eq!(got, (1..=12).rev().collect::<Vec<_>>());
    let (got, v) = list(&c, &admin, "$orderby=last_uploaded").await;
    assert_eq!(got.last(), Some(&3), "uploaded last: {v}");
    let times: Vec<&str> = v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["last_uploaded"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let (got, _) = list(&c, &admin, "$orderby=last_uploaded%20desc").await;
    assert_eq!(got.first(), Some(&3));
    // An order with a filter.
    let (got, _) = list(&c, &admin, "$orderby=name%20desc&eligibility=eligible").await;
    assert_eq!(got, [12, 11, 10, 9, 8, 7, 6, 5]);
}

#[tokio::test]
async fn each_device_carries_its_eligibility_comanagement_and_defender_health() {
    let (c, admin) = fleet().await;
    let (_, v) = list(&c, &admin, "$orderby=resource_id&$top=6").await;
    let d = &v["value"];
    // The fields of before stay.
    assert_eq!(d[0]["name"], "alpha-1");
    assert_eq!(d[0]["hierarchy_id"], HID);
    assert!(
        d[0]["last_uploaded"].as_str().unwrap().ends_with('Z'),
        "{}",
        d[0]
    );
    assert_eq!(d[0]["mdm_enrolled"], true);
    assert_eq!(
        d[0]["eligibility"],
        json!({"class": "comanaged", "reason": "a client enrolled in MDM: already co-managed"})
    );
    assert_eq!(d[0]["comanagement_state"], "comanaged");
    assert_eq!(d[0]["defender_health"], "healthy");
    assert_eq!(d[1]["eligibility"]["class"], "eligibleButNotAzureAdJoined");
    assert_eq!(d[1]["defender_health"], "unhealthy");
    assert_eq!(d[1]["comanagement_state"], Value::Null);
    assert_eq!(d[2]["eligibility"]["class"], "needsOsUpdate");
    assert!(
        d[2]["eligibility"]["reason"]
            .as_str()
            .unwrap()
            .contains("10.0.15063"),
        "{}",
        d[2]
    );
    assert_eq!(d[2]["defender_health"], "unreported");
    assert_eq!(d[3]["eligibility"]["class"], "ineligible");
    assert!(
        d[3]["eligibility"]["reason"]
            .as_str()
            .unwrap()
            .contains("server"),
        "{}",
        d[3]
    );
    assert_eq!(d[4]["eligibility"]["class"], "eligible");
    assert_eq!(d[4]["comanagement_state"], "scheduledForEnrollment");
    assert_eq!(d[5]["comanagement_state"], "eligible");
    // The device document agrees.
    let (_, one) = c.get(&admin, &hpath("/devices/1")).await;
    assert_eq!(one["comanagement"]["record"]["state"], "comanaged");
}

#[tokio::test]
async fn a_bad_value_names_its_parameter_and_the_allowed_values() {
    let (c, admin) = fleet().await;
    let cases = [
        (
            "comanagement=Comanaged",
            "comanagement",
            "eligible, scheduledForEnrollment, comanaged, none",
        ),
        (
            "eligibility=x",
            "eligibility",
            "comanaged, eligible, eligibleButNotAzureAdJoined, needsOsUpdate, ineligible",
        ),
        (
            "defender=sick",
            "defender",
            "healthy, unhealthy, unreported",
        ),
        (
            "$orderby=name%20asc",
            "$orderby",
            "name, name desc, last_uploaded, last_uploaded desc, resource_id, resource_id desc",
        ),
        ("$orderby=", "$orderby", "resource_id desc"),
    ];
    for (query, param, allowed) in cases {
        let (s, v) = c.get(&admin, &format!("/api/v1/devices?{query}")).await;
        assert_eq!(s, 400, "{query}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.starts_with(param) && m.contains(allowed), "{query}: {m}");
        assert_eq!(v["error"]["parameter"], param, "{query}: {v}");
    }
    // Still refused: what the route does not take.
    let (s, v) = c.get(&admin, "/api/v1/devices?$filter=x").await;
    assert_eq!((s, &v["error"]["parameter"]), (400, &json!("$filter")));
}

#[tokio::test]
async fn next_links_keep_the_filters_and_the_order() {
    let (c, admin) = fleet().await;
    let mut url = c.url("/api/v1/devices?eligibility=eligible&$orderby=name%20desc&$top=3");
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let v: Value = c
            .http
            .get(&url)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["@odata.count"], 8, "{v}");
        seen.extend(ids(&v));
        pages += 1;
        match v["@odata.nextLink"].as_str() {
            Some(next) => {
                assert!(
                    next.contains("eligibility=eligible") && next.contains("%24orderby=name+desc"),
                    "{next}"
                );
                url = next.to_string();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, [12, 11, 10, 9, 8, 7, 6, 5]);
}

#[tokio::test]
async fn another_tenants_devices_never_appear() {
    let (c, _) = fleet().await;
    let (s, v) = c
        .app_token(FABRIKAM, FABRIKAM_READER_APP_ID, DEV_SECRET)
        .await;
    assert_eq!(s, 200);
    let fab = v["access_token"].as_str().unwrap();
    for query in [
        "",
        "comanagement=none",
        "comanagement=comanaged",
        "eligibility=eligible",
        "defender=unreported",
        "defender=unhealthy",
        "name=a",
        "$orderby=name",
        "$orderby=resource_id%20desc",
        &format!("hierarchy={HID}"),
        &format!("hierarchy={HID}&$orderby=last_uploaded&defender=healthy"),
    ] {
        let (got, v) = list(&c, fab, query).await;
        assert!(got.is_empty(), "{query}: {v}");
        assert_eq!(v["@odata.count"], 0, "{query}");
    }
}
